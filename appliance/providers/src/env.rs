//! `env` provider: reads one environment variable (or a configured override map) under
//! an allowlist/denylist and size limits.

use std::collections::{BTreeMap, BTreeSet};

use dg_engine::evidence::{
    EvidenceAnchor, EvidenceContext, EvidenceQuery, EvidenceResult, EvidenceValue, ProviderCallError, TrustLane,
};
use serde::Deserialize;
use serde_json::Value;

/// `[providers.config]` of the env provider (every non-optional field required, as in
/// the open-source config).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvProviderConfig {
    /// Only these keys may be read, when set.
    #[serde(default)]
    pub allowlist: Option<BTreeSet<String>>,
    /// These keys may never be read.
    pub denylist: BTreeSet<String>,
    /// Largest value returned.
    pub max_value_bytes: usize,
    /// Longest key accepted.
    pub max_key_bytes: usize,
    /// When set, the only source of values (the process environment is not read).
    #[serde(default)]
    pub overrides: Option<BTreeMap<String, String>>,
}

impl Default for EnvProviderConfig {
    fn default() -> Self {
        Self {
            allowlist: None,
            denylist: BTreeSet::new(),
            max_value_bytes: 64 * 1024,
            max_key_bytes: 255,
            overrides: None,
        }
    }
}

/// The env provider.
#[derive(Debug, Clone, Default)]
pub struct EnvProvider {
    config: EnvProviderConfig,
}

fn provider_error(message: &str) -> ProviderCallError {
    ProviderCallError(message.to_string())
}

impl EnvProvider {
    /// Builds the provider.
    #[must_use]
    pub fn new(config: EnvProviderConfig) -> Self {
        Self { config }
    }

    /// Answers `get`.
    ///
    /// # Errors
    /// Bad params, a blocked or oversized key, or an oversized value.
    pub fn query(
        &self,
        query: &EvidenceQuery,
        _context: &EvidenceContext,
    ) -> Result<EvidenceResult, ProviderCallError> {
        if query.check_id != "get" {
            return Err(provider_error("unsupported env check"));
        }
        let params = query.params.as_ref().ok_or_else(|| provider_error("env check requires params"))?;
        let Value::Object(map) = params else {
            return Err(provider_error("env params must be an object"));
        };
        let Value::String(key) = map.get("key").ok_or_else(|| provider_error("missing env key"))? else {
            return Err(provider_error("env key must be a string"));
        };
        if key.len() > self.config.max_key_bytes {
            return Err(provider_error("env key exceeds limit"));
        }
        let allowed = !self.config.denylist.contains(key)
            && self.config.allowlist.as_ref().is_none_or(|allowlist| allowlist.contains(key));
        if !allowed {
            return Err(provider_error("env key blocked by policy"));
        }
        let value = match &self.config.overrides {
            Some(overrides) => overrides.get(key).cloned(),
            None => std::env::var(key).ok(),
        };
        let anchor = EvidenceAnchor { anchor_type: "env".to_string(), anchor_value: key.clone() };
        let mut result = EvidenceResult::empty(TrustLane::Verified);
        result.evidence_anchor = Some(anchor);
        if let Some(value) = value {
            if value.len() > self.config.max_value_bytes {
                return Err(provider_error("env value exceeds limit"));
            }
            result.value = Some(EvidenceValue::Json(Value::String(value)));
            result.content_type = Some("text/plain".to_string());
        }
        Ok(result)
    }
}
