//! Caller-supplied timestamps. The engine never reads a clock: every time it records
//! comes from the request, which is what makes replay deterministic.

use serde::{Deserialize, Serialize};

/// `{"kind":"unix_millis","value":i64}` or `{"kind":"logical","value":u64}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Timestamp {
    /// Milliseconds since the Unix epoch.
    UnixMillis(i64),
    /// A logical clock value chosen by the caller.
    Logical(u64),
}

impl Timestamp {
    /// Name of the kind, for error messages.
    #[must_use]
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::UnixMillis(_) => "unix_millis",
            Self::Logical(_) => "logical",
        }
    }
}
