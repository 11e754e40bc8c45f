//! `time` provider: compares the trigger's own timestamp with a threshold. It never reads
//! a clock, so replays give the same answers.

use dg_engine::evidence::{
    EvidenceAnchor, EvidenceContext, EvidenceQuery, EvidenceResult, EvidenceValue, ProviderCallError, TrustLane,
};
use dg_engine::time::Timestamp;
use serde::Deserialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `[providers.config]` of the time provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeProviderConfig {
    /// Whether logical trigger times are accepted.
    pub allow_logical: bool,
}

impl Default for TimeProviderConfig {
    fn default() -> Self {
        Self { allow_logical: true }
    }
}

/// The time provider.
#[derive(Debug, Clone, Default)]
pub struct TimeProvider {
    config: TimeProviderConfig,
}

fn provider_error(message: &str) -> ProviderCallError {
    ProviderCallError(message.to_string())
}

impl TimeProvider {
    /// Builds the provider.
    #[must_use]
    pub fn new(config: TimeProviderConfig) -> Self {
        Self { config }
    }

    /// Answers `now`, `after` and `before`.
    ///
    /// # Errors
    /// Unsupported check, bad threshold, or a logical time when those are disabled.
    pub fn query(&self, query: &EvidenceQuery, context: &EvidenceContext) -> Result<EvidenceResult, ProviderCallError> {
        let (trigger_value, anchor_type) = match context.trigger_time {
            Timestamp::UnixMillis(ms) => (i128::from(ms), "trigger_time_unix_millis"),
            Timestamp::Logical(value) => {
                if !self.config.allow_logical {
                    return Err(provider_error("logical timestamps are not allowed"));
                }
                (i128::from(value), "trigger_time_logical")
            }
        };
        let value = match query.check_id.as_str() {
            "now" => Value::Number(match context.trigger_time {
                Timestamp::UnixMillis(ms) => ms.into(),
                Timestamp::Logical(value) => value.into(),
            }),
            "after" | "before" => {
                let threshold = threshold(query.params.as_ref(), context.trigger_time)?;
                let result =
                    if query.check_id == "after" { trigger_value > threshold } else { trigger_value < threshold };
                Value::Bool(result)
            }
            _ => return Err(provider_error("unsupported time check")),
        };
        Ok(EvidenceResult {
            value: Some(EvidenceValue::Json(value)),
            lane: TrustLane::Verified,
            error: None,
            evidence_hash: None,
            evidence_ref: None,
            evidence_anchor: Some(EvidenceAnchor {
                anchor_type: anchor_type.to_string(),
                anchor_value: trigger_value.to_string(),
            }),
            signature: None,
            content_type: Some("application/json".to_string()),
        })
    }
}

fn threshold(params: Option<&Value>, trigger: Timestamp) -> Result<i128, ProviderCallError> {
    let params = params.ok_or_else(|| provider_error("time check requires params"))?;
    let Value::Object(map) = params else {
        return Err(provider_error("time params must be an object"));
    };
    let raw = map.get("timestamp").ok_or_else(|| provider_error("missing timestamp param"))?;
    match (raw, trigger) {
        (Value::Number(number), Timestamp::UnixMillis(_)) => {
            number.as_i64().map(i128::from).ok_or_else(|| provider_error("timestamp must be an integer"))
        }
        (Value::String(text), Timestamp::UnixMillis(_)) => {
            let parsed =
                OffsetDateTime::parse(text, &Rfc3339).map_err(|_| provider_error("invalid rfc3339 timestamp"))?;
            Ok(parsed.unix_timestamp_nanos() / 1_000_000)
        }
        (Value::Number(number), Timestamp::Logical(_)) => number
            .as_u64()
            .map(i128::from)
            .ok_or_else(|| provider_error("logical timestamp must be a non-negative integer")),
        (Value::String(_), Timestamp::Logical(_)) => {
            Err(provider_error("logical trigger requires an integer timestamp"))
        }
        _ => Err(provider_error("timestamp must be an integer or rfc3339 string")),
    }
}
