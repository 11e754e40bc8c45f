//! The wire error model: JSON-RPC error codes, their `data.kind`, HTTP statuses and
//! retryability, mapped in one place exactly as the Decision Gate contract lists them.

use serde_json::{json, Value};

/// A tool or transport failure as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WireError {
    /// JSON-RPC code.
    pub code: i64,
    /// Message (fixed text for -32001/-32003).
    pub message: String,
    /// Milliseconds to wait before retrying (rate limits).
    pub retry_after_ms: Option<u64>,
    /// A condition that clears by itself (a full disk once space returns), so the same
    /// request may succeed later, beside the codes that always are (rate and in-flight
    /// limits).
    pub transient: bool,
}

/// JSON-RPC / Decision Gate error codes.
pub mod code {
    /// Bad JSON, missing id, wrong version.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method or tool.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Bad arguments.
    pub const INVALID_PARAMS: i64 = -32602;
    /// No or bad credentials.
    pub const UNAUTHENTICATED: i64 = -32001;
    /// Not allowed.
    pub const UNAUTHORIZED: i64 = -32003;
    /// Not found.
    pub const NOT_FOUND: i64 = -32004;
    /// Conflict.
    pub const CONFLICT: i64 = -32009;
    /// Engine errors, and store errors (the contract's table, section 7: "run state store
    /// ..." messages).
    pub const CONTROL_PLANE: i64 = -32030;
    /// Runpack errors.
    pub const RUNPACK: i64 = -32040;
    /// Internal errors (not storage: store errors are [`CONTROL_PLANE`], as the contract
    /// says).
    pub const INTERNAL: i64 = -32050;
    /// Serialization errors.
    pub const SERIALIZATION: i64 = -32060;
    /// Body too large.
    pub const REQUEST_TOO_LARGE: i64 = -32070;
    /// Rate limited.
    pub const RATE_LIMITED: i64 = -32071;
    /// Too many requests in flight.
    pub const INFLIGHT_LIMIT: i64 = -32072;
    /// Bad `x-correlation-id`.
    pub const INVALID_CORRELATION_ID: i64 = -32073;
}

impl WireError {
    /// Builds an error.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        let message = match code {
            code::UNAUTHENTICATED => "unauthenticated".to_string(),
            code::UNAUTHORIZED => "unauthorized".to_string(),
            _ => message.into(),
        };
        Self { code, message, retry_after_ms: None, transient: false }
    }

    /// Marks the error as one that clears by itself: `data.retryable` is true.
    #[must_use]
    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    /// `-32602` with a message.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_PARAMS, message)
    }

    /// `data.kind` for the code.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self.code {
            code::INVALID_REQUEST => "invalid_request",
            code::METHOD_NOT_FOUND => "method_not_found",
            code::INVALID_PARAMS => "invalid_params",
            code::UNAUTHENTICATED => "unauthenticated",
            code::UNAUTHORIZED => "unauthorized",
            code::NOT_FOUND => "not_found",
            code::CONFLICT => "conflict",
            code::CONTROL_PLANE => "control_plane",
            code::RUNPACK => "runpack",
            code::SERIALIZATION => "serialization",
            code::REQUEST_TOO_LARGE => "request_too_large",
            code::RATE_LIMITED => "rate_limited",
            code::INFLIGHT_LIMIT => "inflight_limit",
            code::INVALID_CORRELATION_ID => "invalid_correlation_id",
            _ => "internal",
        }
    }

    /// HTTP status of a response carrying this error.
    #[must_use]
    pub fn http_status(&self) -> u16 {
        match self.code {
            code::INVALID_REQUEST | code::METHOD_NOT_FOUND | code::INVALID_PARAMS | code::INVALID_CORRELATION_ID => 400,
            code::UNAUTHENTICATED => 401,
            code::UNAUTHORIZED => 403,
            code::REQUEST_TOO_LARGE => 413,
            code::RATE_LIMITED => 429,
            code::INFLIGHT_LIMIT => 503,
            _ => 200,
        }
    }

    /// The JSON-RPC `error` object.
    #[must_use]
    pub fn to_json(&self, request_id: Option<&Value>) -> Value {
        let mut data = json!({
            "kind": self.kind(),
            "retryable": self.transient || matches!(self.code, code::RATE_LIMITED | code::INFLIGHT_LIMIT),
            "request_id": request_id.map(|id| Value::String(id.to_string())).unwrap_or(Value::Null),
        });
        if let Some(ms) = self.retry_after_ms {
            data["retry_after_ms"] = json!(ms);
        }
        json!({"code": self.code, "message": self.message, "data": data})
    }

    /// A whole JSON-RPC error response.
    #[must_use]
    pub fn response(&self, id: Option<&Value>) -> Value {
        json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": self.to_json(id)})
    }
}

impl From<dg_storage::StoreError> for WireError {
    fn from(err: dg_storage::StoreError) -> Self {
        match err {
            dg_storage::StoreError::Conflict(message) => Self::new(code::CONFLICT, message),
            contended @ dg_storage::StoreError::Contended { .. } => {
                Self::new(code::CONFLICT, contended.to_string()).transient()
            }
            dg_storage::StoreError::TooLarge { .. } => Self::invalid_params(err.to_string()),
            other if other.is_unavailable() => {
                tracing::error!(error = %other, "the database is unreachable");
                Self::new(
                    code::CONTROL_PLANE,
                    format!("run state store error: the database is unreachable ({other}); nothing was changed, retry"),
                )
                .transient()
            }
            other if other.is_disk_full() => {
                tracing::error!(error = %other, "storage is full");
                Self::new(
                    code::CONTROL_PLANE,
                    format!("run state store error: storage is full ({other}); retry once space is freed"),
                )
                .transient()
            }
            other => {
                tracing::error!(error = %other, "storage failure");
                Self::new(code::CONTROL_PLANE, format!("run state store error: {other}"))
            }
        }
    }
}
