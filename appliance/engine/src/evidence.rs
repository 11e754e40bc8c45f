//! Evidence: what a condition asks for, what a provider answers, and the provider
//! interface the engine calls. Providers are plugged in by the caller; the engine does
//! no IO itself.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::hashing::HashDigest;
use crate::spec::{NamespaceId, TenantId};
use crate::time::Timestamp;

/// What a condition asks a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceQuery {
    /// Provider to ask.
    pub provider_id: String,
    /// Check of that provider.
    pub check_id: String,
    /// Check parameters; omitted on output when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

/// The 16 comparators, in the contract's canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparator {
    /// Equal (numbers as decimals).
    Equals,
    /// Not equal.
    NotEquals,
    /// Numeric or temporal >.
    GreaterThan,
    /// Numeric or temporal >=.
    GreaterThanOrEqual,
    /// Numeric or temporal <.
    LessThan,
    /// Numeric or temporal <=.
    LessThanOrEqual,
    /// Byte-wise string >.
    LexGreaterThan,
    /// Byte-wise string >=.
    LexGreaterThanOrEqual,
    /// Byte-wise string <.
    LexLessThan,
    /// Byte-wise string <=.
    LexLessThanOrEqual,
    /// Substring or array superset.
    Contains,
    /// Scalar is an element of the expected array.
    InSet,
    /// Structural equality of arrays/objects.
    DeepEquals,
    /// Structural inequality of arrays/objects.
    DeepNotEquals,
    /// A value is present.
    Exists,
    /// No value is present.
    NotExists,
}

impl Comparator {
    /// All comparators in canonical order.
    pub const ALL: [Comparator; 16] = [
        Self::Equals,
        Self::NotEquals,
        Self::GreaterThan,
        Self::GreaterThanOrEqual,
        Self::LessThan,
        Self::LessThanOrEqual,
        Self::LexGreaterThan,
        Self::LexGreaterThanOrEqual,
        Self::LexLessThan,
        Self::LexLessThanOrEqual,
        Self::Contains,
        Self::InSet,
        Self::DeepEquals,
        Self::DeepNotEquals,
        Self::Exists,
        Self::NotExists,
    ];

    /// The wire spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equals => "equals",
            Self::NotEquals => "not_equals",
            Self::GreaterThan => "greater_than",
            Self::GreaterThanOrEqual => "greater_than_or_equal",
            Self::LessThan => "less_than",
            Self::LessThanOrEqual => "less_than_or_equal",
            Self::LexGreaterThan => "lex_greater_than",
            Self::LexGreaterThanOrEqual => "lex_greater_than_or_equal",
            Self::LexLessThan => "lex_less_than",
            Self::LexLessThanOrEqual => "lex_less_than_or_equal",
            Self::Contains => "contains",
            Self::InSet => "in_set",
            Self::DeepEquals => "deep_equals",
            Self::DeepNotEquals => "deep_not_equals",
            Self::Exists => "exists",
            Self::NotExists => "not_exists",
        }
    }

    /// True for `exists`/`not_exists`, which ignore `expected`.
    #[must_use]
    pub fn is_presence(self) -> bool {
        matches!(self, Self::Exists | Self::NotExists)
    }
}

/// Trust lane of a piece of evidence: verified (fetched by a provider) or asserted
/// (claimed by a caller). Verified ranks higher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TrustLane {
    /// Fetched by a provider.
    #[default]
    Verified,
    /// Claimed by a caller.
    Asserted,
}

impl TrustLane {
    fn rank(self) -> u8 {
        match self {
            Self::Verified => 1,
            Self::Asserted => 0,
        }
    }

    /// Whether this lane meets a requirement.
    #[must_use]
    pub fn satisfies(self, requirement: TrustRequirement) -> bool {
        self.rank() >= requirement.min_lane.rank()
    }

    /// Debug spelling used in the `trust_lane` error message.
    #[must_use]
    pub fn debug_name(self) -> &'static str {
        match self {
            Self::Verified => "Verified",
            Self::Asserted => "Asserted",
        }
    }
}

/// A minimum trust lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TrustRequirement {
    /// Lowest acceptable lane.
    #[serde(default)]
    pub min_lane: TrustLane,
}

impl TrustRequirement {
    /// The stricter of two requirements.
    #[must_use]
    pub fn stricter(self, other: Self) -> Self {
        if other.min_lane.rank() > self.min_lane.rank() {
            other
        } else {
            self
        }
    }
}

/// An evidence value (`{"kind":"json","value":..}` or `{"kind":"bytes","value":[..]}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum EvidenceValue {
    /// A JSON value.
    Json(Value),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// A provider's answer as stored in gate evaluation logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceResult {
    /// The value, if any.
    #[serde(default)]
    pub value: Option<EvidenceValue>,
    /// Trust lane; verified when missing on input.
    #[serde(default)]
    pub lane: TrustLane,
    /// Error reported by or about the provider.
    #[serde(default)]
    pub error: Option<EvidenceProviderError>,
    /// sha256 of the value, recomputed by the engine.
    #[serde(default)]
    pub evidence_hash: Option<HashDigest>,
    /// Where the evidence came from.
    #[serde(default)]
    pub evidence_ref: Option<EvidenceRef>,
    /// Anchor binding the evidence to a source.
    #[serde(default)]
    pub evidence_anchor: Option<EvidenceAnchor>,
    /// Provider signature.
    #[serde(default)]
    pub signature: Option<EvidenceSignature>,
    /// MIME type of the value.
    #[serde(default)]
    pub content_type: Option<String>,
}

impl EvidenceResult {
    /// An empty verified result, the base of error results.
    #[must_use]
    pub fn empty(lane: TrustLane) -> Self {
        Self {
            value: None,
            lane,
            error: None,
            evidence_hash: None,
            evidence_ref: None,
            evidence_anchor: None,
            signature: None,
            content_type: None,
        }
    }

    /// A verified result carrying only an error.
    #[must_use]
    pub fn from_error(code: &str, message: impl Into<String>) -> Self {
        let mut result = Self::empty(TrustLane::Verified);
        result.error = Some(EvidenceProviderError { code: code.to_string(), message: message.into(), details: None });
        result
    }
}

/// Error attached to an evidence result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceProviderError {
    /// Machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Extra detail.
    #[serde(default)]
    pub details: Option<Value>,
}

/// Reference to the evidence source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRef {
    /// Location.
    pub uri: String,
}

/// Anchor binding evidence to a source; `anchor_value` is always a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceAnchor {
    /// Anchor kind.
    pub anchor_type: String,
    /// Anchor value.
    pub anchor_value: String,
}

/// Provider signature over the evidence hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceSignature {
    /// Signature scheme.
    pub scheme: String,
    /// Key identifier.
    pub key_id: String,
    /// Signature bytes.
    pub signature: Vec<u8>,
}

/// What a provider is told about the query's surroundings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceContext {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Namespace.
    pub namespace_id: NamespaceId,
    /// Run.
    pub run_id: String,
    /// Scenario.
    pub scenario_id: String,
    /// Current stage.
    pub stage_id: String,
    /// Trigger being evaluated.
    pub trigger_id: String,
    /// Trigger time; the only clock providers may look at.
    pub trigger_time: Timestamp,
    /// Correlation id of the trigger.
    #[serde(default)]
    pub correlation_id: Option<String>,
}

/// A provider call that failed outright (as opposed to a result with `error` set).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct ProviderCallError(pub String);

/// Something that answers evidence queries. Implementations may do IO; the engine only
/// calls them.
pub trait EvidenceProvider {
    /// Answers one query.
    ///
    /// # Errors
    /// A transport, policy or parameter failure; the engine records it as Unknown.
    fn query(&self, query: &EvidenceQuery, context: &EvidenceContext) -> Result<EvidenceResult, ProviderCallError>;
}

/// Required anchor fields for a provider's results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorRequirement {
    /// Required anchor kind.
    pub anchor_type: String,
    /// Fields the anchor object must carry as strings or numbers.
    pub required_fields: Vec<String>,
}

/// Anchor requirement bound to one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderAnchorPolicy {
    /// Provider concerned.
    pub provider_id: String,
    /// Its requirement.
    pub requirement: AnchorRequirement,
}

/// Anchor policy over all providers (`providers` omitted when empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EvidenceAnchorPolicy {
    /// Per-provider requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderAnchorPolicy>,
}

impl EvidenceAnchorPolicy {
    /// The requirement for a provider, if any.
    #[must_use]
    pub fn requirement_for(&self, provider_id: &str) -> Option<&AnchorRequirement> {
        self.providers.iter().find(|entry| entry.provider_id == provider_id).map(|entry| &entry.requirement)
    }

    /// Checks a result's anchor against a requirement.
    ///
    /// # Errors
    /// The contract's message for the first violation.
    pub fn check(requirement: &AnchorRequirement, result: &EvidenceResult) -> Result<(), String> {
        let anchor = result.evidence_anchor.as_ref().ok_or_else(|| "missing evidence_anchor".to_string())?;
        if anchor.anchor_type != requirement.anchor_type {
            return Err(format!(
                "anchor_type mismatch: expected {} got {}",
                requirement.anchor_type, anchor.anchor_type
            ));
        }
        let value: Value = serde_json::from_str(&anchor.anchor_value)
            .map_err(|_| "anchor_value must be canonical JSON".to_string())?;
        let object = value.as_object().ok_or_else(|| "anchor_value must be a JSON object".to_string())?;
        for field in &requirement.required_fields {
            match object.get(field) {
                Some(Value::String(_) | Value::Number(_)) => {}
                Some(Value::Bool(_)) => return Err(format!("anchor field {field} must be string or number")),
                Some(Value::Null) => return Err(format!("anchor field {field} must be set")),
                Some(Value::Array(_) | Value::Object(_)) => return Err(format!("anchor field {field} must be scalar")),
                None => return Err(format!("anchor field {field} missing")),
            }
        }
        Ok(())
    }
}
