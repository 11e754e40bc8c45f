//! The scenario definition: stages, gates, conditions and entry packets, with the exact
//! JSON spellings of the Decision Gate contract and its define-time invariants.

use std::collections::HashSet;
use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::evidence::{Comparator, EvidenceQuery, TrustRequirement};
use crate::hashing::{hash_canonical_json, HashDigest, HashError};
use crate::ret::Requirement;
use crate::time::Timestamp;

/// Tenant identifier: a JSON integer >= 1.
pub type TenantId = NonZeroU64;
/// Namespace identifier: a JSON integer >= 1.
pub type NamespaceId = NonZeroU64;

/// A whole scenario as clients define it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    /// Registry key of the scenario.
    pub scenario_id: String,
    /// Namespace every run of this scenario must use.
    pub namespace_id: NamespaceId,
    /// Opaque version label.
    pub spec_version: String,
    /// Stages in order; the first is the initial stage.
    pub stages: Vec<StageSpec>,
    /// Conditions referenced by gates.
    pub conditions: Vec<ConditionSpec>,
    /// Informational policy references.
    pub policies: Vec<PolicyRef>,
    /// Informational schema references.
    pub schemas: Vec<SchemaRef>,
    /// Tenant used for define-time checks and list filtering.
    #[serde(default)]
    pub default_tenant_id: Option<TenantId>,
}

/// Informational reference to a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRef {
    /// Policy identifier.
    pub policy_id: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// Informational reference to a schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRef {
    /// Schema identifier.
    pub schema_id: String,
    /// Schema version.
    #[serde(default)]
    pub version: Option<String>,
    /// Where the schema lives.
    #[serde(default)]
    pub uri: Option<String>,
}

/// One stage of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Stage identifier, unique in the scenario.
    pub stage_id: String,
    /// Packets disclosed when the stage is entered.
    pub entry_packets: Vec<PacketSpec>,
    /// Gates that must all be True to leave the stage.
    pub gates: Vec<GateSpec>,
    /// Where to go once the gates pass.
    pub advance_to: AdvanceTo,
    /// Optional stage timeout, checked on `tick` triggers.
    #[serde(default)]
    pub timeout: Option<TimeoutSpec>,
    /// What an expired timeout does.
    pub on_timeout: TimeoutPolicy,
}

/// Successor rule of a stage (tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdvanceTo {
    /// The next stage in array order; completes after the last.
    Linear,
    /// A named stage.
    Fixed {
        /// Target stage.
        stage_id: String,
    },
    /// First matching rule, else `default`.
    Branch {
        /// Rules in priority order.
        branches: Vec<BranchRule>,
        /// Fallback stage.
        #[serde(default)]
        default: Option<String>,
    },
    /// Passing the gates completes the run.
    Terminal,
}

/// One branch rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchRule {
    /// Gate whose outcome is tested.
    pub gate_id: String,
    /// Outcome that selects this rule.
    pub outcome: GateOutcome,
    /// Stage chosen.
    pub next_stage_id: String,
}

/// Gate outcome as spelled in branch rules (lowercase, unlike [`crate::ret::TriState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateOutcome {
    /// Gate was True.
    True,
    /// Gate was False.
    False,
    /// Gate was Unknown.
    Unknown,
}

/// Stage timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSpec {
    /// Milliseconds (or logical units) after stage entry.
    pub timeout_ms: u64,
    /// Informational tags.
    pub policy_tags: Vec<String>,
}

/// What an expired stage timeout does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutPolicy {
    /// The run fails with reason `timeout`.
    Fail,
    /// Gates count as True and the run advances with `timeout: true`.
    AdvanceWithFlag,
    /// Gates count as Unknown and branch rules pick the target.
    AlternateBranch,
}

/// A gate: one requirement tree over conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// Gate identifier, unique across the scenario.
    pub gate_id: String,
    /// The requirement tree.
    pub requirement: Requirement,
    /// Optional tightening of the trust lane for this gate's evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustRequirement>,
}

/// A condition: an evidence query compared against an expected value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// Condition identifier.
    pub condition_id: String,
    /// The evidence to fetch.
    pub query: EvidenceQuery,
    /// How to compare it.
    pub comparator: Comparator,
    /// Expected value (`null` on input means absent).
    #[serde(default)]
    pub expected: Option<Value>,
    /// Informational tags.
    pub policy_tags: Vec<String>,
    /// Optional tightening of the trust lane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustRequirement>,
}

/// A packet disclosed on stage entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketSpec {
    /// Packet identifier, unique across the scenario.
    pub packet_id: String,
    /// Schema of the payload.
    pub schema_id: String,
    /// MIME type.
    pub content_type: String,
    /// Visibility labels.
    pub visibility_labels: Vec<String>,
    /// Policy tags.
    pub policy_tags: Vec<String>,
    /// Optional expiry.
    #[serde(default)]
    pub expiry: Option<Timestamp>,
    /// The payload.
    pub payload: PacketPayload,
}

/// Packet or submission payload (tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PacketPayload {
    /// Inline JSON.
    Json {
        /// The value.
        value: Value,
    },
    /// Inline bytes, as an array of integers.
    Bytes {
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A reference to content held elsewhere.
    External {
        /// Where and what.
        content_ref: ContentRef,
    },
}

/// Reference to external content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentRef {
    /// Location.
    pub uri: String,
    /// Digest of the content.
    pub content_hash: HashDigest,
    /// Encryption scheme, if any.
    #[serde(default)]
    pub encryption: Option<String>,
}

/// A define-time invariant the scenario breaks. Messages are the contract's.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// No stages.
    #[error("scenario spec must define at least one stage")]
    NoStages,
    /// Two stages share an id.
    #[error("duplicate stage identifier: {0}")]
    DuplicateStage(String),
    /// Two gates share an id.
    #[error("duplicate gate identifier: {0}")]
    DuplicateGate(String),
    /// Two packets share an id.
    #[error("duplicate packet identifier: {0}")]
    DuplicatePacket(String),
    /// Two conditions share an id.
    #[error("duplicate condition id: {0}")]
    DuplicateCondition(String),
    /// A condition's query names no provider or check.
    #[error("invalid evidence query for condition {condition_id}: {field} is empty")]
    BlankQuery {
        /// Offending condition.
        condition_id: String,
        /// `provider_id` or `check_id`.
        field: &'static str,
    },
    /// A gate leaf names no defined condition.
    #[error("gate references undefined condition: {0}")]
    UndefinedCondition(String),
    /// A stage target does not exist.
    #[error("branch target refers to unknown stage: {0}")]
    UnknownStage(String),
}

impl ScenarioSpec {
    /// Checks the contract's define-time invariants, in the contract's order.
    ///
    /// # Errors
    /// The first broken invariant.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.stages.is_empty() {
            return Err(SpecError::NoStages);
        }
        let mut stages = HashSet::new();
        for stage in &self.stages {
            if !stages.insert(stage.stage_id.as_str()) {
                return Err(SpecError::DuplicateStage(stage.stage_id.clone()));
            }
        }
        let mut gates = HashSet::new();
        for gate in self.stages.iter().flat_map(|stage| &stage.gates) {
            if !gates.insert(gate.gate_id.as_str()) {
                return Err(SpecError::DuplicateGate(gate.gate_id.clone()));
            }
        }
        let mut packets = HashSet::new();
        for packet in self.stages.iter().flat_map(|stage| &stage.entry_packets) {
            if !packets.insert(packet.packet_id.as_str()) {
                return Err(SpecError::DuplicatePacket(packet.packet_id.clone()));
            }
        }
        let mut conditions = HashSet::new();
        for condition in &self.conditions {
            if !conditions.insert(condition.condition_id.as_str()) {
                return Err(SpecError::DuplicateCondition(condition.condition_id.clone()));
            }
            for (field, value) in
                [("provider_id", &condition.query.provider_id), ("check_id", &condition.query.check_id)]
            {
                if value.trim().is_empty() {
                    return Err(SpecError::BlankQuery { condition_id: condition.condition_id.clone(), field });
                }
            }
        }
        for gate in self.stages.iter().flat_map(|stage| &stage.gates) {
            for leaf in gate.requirement.condition_leaves() {
                if !conditions.contains(leaf) {
                    return Err(SpecError::UndefinedCondition(leaf.to_string()));
                }
            }
        }
        for stage in &self.stages {
            let targets: Vec<&String> = match &stage.advance_to {
                AdvanceTo::Fixed { stage_id } => vec![stage_id],
                AdvanceTo::Branch { branches, default } => {
                    branches.iter().map(|rule| &rule.next_stage_id).chain(default.iter()).collect()
                }
                AdvanceTo::Linear | AdvanceTo::Terminal => Vec::new(),
            };
            for target in targets {
                if !stages.contains(target.as_str()) {
                    return Err(SpecError::UnknownStage(target.clone()));
                }
            }
        }
        Ok(())
    }

    /// `spec_hash`: sha256 of the canonical JSON of the re-serialized spec.
    ///
    /// # Errors
    /// A canonicalisation error.
    pub fn canonical_hash(&self) -> Result<HashDigest, HashError> {
        hash_canonical_json(self)
    }

    /// The stage with this id.
    #[must_use]
    pub fn stage(&self, stage_id: &str) -> Option<&StageSpec> {
        self.stages.iter().find(|stage| stage.stage_id == stage_id)
    }

    /// The condition with this id.
    #[must_use]
    pub fn condition(&self, condition_id: &str) -> Option<&ConditionSpec> {
        self.conditions.iter().find(|condition| condition.condition_id == condition_id)
    }
}

/// A scenario spec that could not be parsed, with the JSON path of the offending field.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid scenario spec at {path}: {message}")]
pub struct SpecParseError {
    /// Path of the field (`stages[0].gates[1].requirement`), `.` for the root.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// Parses a scenario spec strictly: unknown keys, wrong types, missing required keys and
/// zero ids are refused with the path of the field; then the define-time invariants run.
///
/// # Errors
/// [`SpecParseError`] naming the field.
pub fn parse_scenario_spec(value: &Value) -> Result<ScenarioSpec, SpecParseError> {
    let spec: ScenarioSpec = serde_path_to_error::deserialize(value)
        .map_err(|err| SpecParseError { path: err.path().to_string(), message: err.inner().to_string() })?;
    spec.validate().map_err(|err| SpecParseError { path: err.field_path(&spec), message: err.to_string() })?;
    Ok(spec)
}

impl SpecError {
    /// Best path of the field an invariant failure is about.
    #[must_use]
    pub fn field_path(&self, spec: &ScenarioSpec) -> String {
        match self {
            Self::NoStages => "stages".to_string(),
            Self::DuplicateStage(id) => {
                let index = spec.stages.iter().rposition(|s| &s.stage_id == id).unwrap_or(0);
                format!("stages[{index}].stage_id")
            }
            Self::DuplicateGate(_) | Self::DuplicatePacket(_) | Self::UnknownStage(_) => "stages".to_string(),
            Self::DuplicateCondition(id) => {
                let index = spec.conditions.iter().rposition(|c| &c.condition_id == id).unwrap_or(0);
                format!("conditions[{index}].condition_id")
            }
            Self::BlankQuery { condition_id, field } => {
                let index = spec.conditions.iter().position(|c| &c.condition_id == condition_id).unwrap_or(0);
                format!("conditions[{index}].query.{field}")
            }
            Self::UndefinedCondition(id) => spec
                .stages
                .iter()
                .enumerate()
                .find_map(|(si, stage)| {
                    stage
                        .gates
                        .iter()
                        .position(|g| g.requirement.condition_leaves().contains(&id.as_str()))
                        .map(|gi| format!("stages[{si}].gates[{gi}].requirement"))
                })
                .unwrap_or_else(|| "stages".to_string()),
        }
    }
}
