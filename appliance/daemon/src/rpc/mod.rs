//! JSON-RPC dispatch for both dialects: the Decision Gate surface (`/rpc`, stdio) and
//! standard MCP (`/mcp`, stdio with `--protocol mcp`). Parsing and error shapes are here;
//! tool behaviour is in `tools`.

pub mod stdio;

use serde_json::{json, Value};

use crate::app::App;
use crate::ops::auth::Principal;
use crate::ops::tools;
use crate::wire::{code, WireError};
use dg_identity::Operation;

/// MCP protocol revisions this server speaks, newest first.
pub const MCP_PROTOCOL_VERSIONS: [&str; 2] = ["2025-06-18", "2025-03-26"];

/// Which dialect a request arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Decision Gate: `content[0].json`, `input_schema`, no initialize.
    DecisionGate,
    /// Standard MCP.
    Mcp,
}

/// A parsed JSON-RPC request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Request id (`None` for notifications).
    pub id: Option<Value>,
    /// Method.
    pub method: String,
    /// Params.
    pub params: Value,
}

/// The answer to one message: a response body, or nothing for a notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A JSON-RPC response and the HTTP status to send it with.
    Response {
        /// HTTP status.
        status: u16,
        /// Body.
        body: Value,
        /// Error code, for metrics.
        error_code: Option<i64>,
    },
    /// A notification was accepted (HTTP 202, no body).
    Accepted,
}

impl Reply {
    /// An error reply.
    #[must_use]
    pub fn error(err: &WireError, id: Option<&Value>) -> Self {
        Self::Response { status: err.http_status(), body: err.response(id), error_code: Some(err.code) }
    }

    fn result(id: &Value, result: Value) -> Self {
        let body = object([("jsonrpc", Value::from("2.0")), ("id", id.clone()), ("result", result)]);
        Self::Response { status: 200, body, error_code: None }
    }
}

/// A JSON object from owned members. `json!` copies each interpolated value through
/// `to_value`: for a tool's output (a whole run state) that is a second tree built and
/// dropped per response, twice over with the envelope.
fn object<const N: usize>(members: [(&str, Value); N]) -> Value {
    Value::Object(members.into_iter().map(|(key, value)| (key.to_string(), value)).collect())
}

/// Parses a message body into a request. Notifications (no `id`) are allowed in MCP and
/// refused in the Decision Gate dialect, as there.
///
/// # Errors
/// `-32600` with the reason.
pub fn parse(body: &[u8], dialect: Dialect) -> Result<Request, WireError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| WireError::new(code::INVALID_REQUEST, "invalid json-rpc request"))?;
    let Value::Object(map) = value else {
        let message = if value.is_array() { "batch requests are not supported" } else { "invalid json-rpc request" };
        return Err(WireError::new(code::INVALID_REQUEST, message));
    };
    if map.get("jsonrpc") != Some(&Value::String("2.0".to_string())) {
        return Err(WireError::new(code::INVALID_REQUEST, "invalid json-rpc version"));
    }
    let id = map.get("id").cloned();
    if dialect == Dialect::DecisionGate && id.is_none() {
        return Err(WireError::new(code::INVALID_REQUEST, "invalid json-rpc request"));
    }
    if let Some(id) = &id {
        if !(id.is_string() || id.is_number() || id.is_null()) {
            return Err(WireError::new(
                code::INVALID_REQUEST,
                "invalid json-rpc request: id must be a string or number",
            ));
        }
    }
    let Some(Value::String(method)) = map.get("method") else {
        return Err(WireError::new(code::INVALID_REQUEST, "invalid json-rpc request: missing method"));
    };
    Ok(Request { id, method: method.clone(), params: map.get("params").cloned().unwrap_or(Value::Null) })
}

fn tool_list(dialect: Dialect) -> Value {
    let key = if dialect == Dialect::Mcp { "inputSchema" } else { "input_schema" };
    let tools: Vec<Value> = tools::catalog()
        .iter()
        .map(|tool| json!({"name": tool.name, "description": tool.description, key: tool.input_schema}))
        .collect();
    json!({"tools": tools})
}

/// The method's name as a `/metrics` label: one of a fixed set, whatever the client sent
/// (a method name is client input: it must neither inject series nor grow the label set).
#[must_use]
pub fn method_label(method: &str) -> &'static str {
    match method {
        "tools/list" => "tools/list",
        "tools/call" => "tools/call",
        "initialize" => "initialize",
        "ping" => "ping",
        m if m.starts_with("notifications/") => "notification",
        m => match m.strip_prefix("admin/").and_then(Operation::admin) {
            Some(_) => "admin",
            None => "other",
        },
    }
}

/// Handles one request for an authenticated principal. Blocking (tools touch storage).
#[must_use]
pub fn handle(app: &App, principal: &Principal, request_id: &str, request: Request, dialect: Dialect) -> Reply {
    let Some(id) = request.id.clone() else {
        // MCP notifications (initialized, cancelled, ...) need no answer.
        return Reply::Accepted;
    };
    match (request.method.as_str(), dialect) {
        ("tools/list", _) => Reply::result(&id, tool_list(dialect)),
        ("tools/call", _) => {
            let Some(params) = request.params.as_object() else {
                return Reply::error(&WireError::invalid_params("invalid tool params"), Some(&id));
            };
            let Some(Value::String(name)) = params.get("name") else {
                return Reply::error(&WireError::invalid_params("invalid tool params"), Some(&id));
            };
            let arguments = params.get("arguments").cloned().unwrap_or(Value::Null);
            if dialect == Dialect::DecisionGate && !params.contains_key("arguments") {
                return Reply::error(&WireError::invalid_params("invalid tool params"), Some(&id));
            }
            let Some(operation) = Operation::tool(name) else {
                return Reply::error(&WireError::new(code::METHOD_NOT_FOUND, "unknown tool"), Some(&id));
            };
            let outcome = crate::ops::request::call(
                app,
                principal,
                request_id.to_string(),
                operation,
                arguments,
                tools::call_tool,
            );
            match (outcome, dialect) {
                (Ok(output), Dialect::DecisionGate) => {
                    let content = object([("type", Value::from("json")), ("json", output)]);
                    Reply::result(&id, object([("content", Value::Array(vec![content]))]))
                }
                (Ok(output), Dialect::Mcp) => {
                    let content = object([("type", Value::from("text")), ("text", Value::String(output.to_string()))]);
                    Reply::result(
                        &id,
                        object([
                            ("content", Value::Array(vec![content])),
                            ("structuredContent", output),
                            ("isError", Value::Bool(false)),
                        ]),
                    )
                }
                (Err(err), Dialect::DecisionGate) => Reply::error(&err, Some(&id)),
                (Err(err), Dialect::Mcp) if err.http_status() == 200 || err.code == code::INVALID_PARAMS => {
                    // Tool failures are results with isError in MCP, so the model sees them.
                    Reply::result(
                        &id,
                        json!({
                            "content": [{"type": "text", "text": err.message}],
                            "structuredContent": {"error": err.to_json(Some(&id))},
                            "isError": true,
                        }),
                    )
                }
                (Err(err), Dialect::Mcp) => Reply::error(&err, Some(&id)),
            }
        }
        ("initialize", Dialect::Mcp) => {
            let requested = request.params.get("protocolVersion").and_then(Value::as_str);
            let version = requested.filter(|v| MCP_PROTOCOL_VERSIONS.contains(v)).unwrap_or(MCP_PROTOCOL_VERSIONS[0]);
            Reply::result(
                &id,
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "dg-appliance", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": "Decision Gate Appliance: define scenarios, start runs, advance them, export runpacks.",
                }),
            )
        }
        ("ping", Dialect::Mcp) => Reply::result(&id, json!({})),
        (method, _) if method.starts_with("admin/") => {
            let Some(operation) = Operation::admin(&method["admin/".len()..]) else {
                return Reply::error(&WireError::new(code::METHOD_NOT_FOUND, "method not found"), Some(&id));
            };
            match crate::ops::request::call(
                app,
                principal,
                request_id.to_string(),
                operation,
                request.params,
                crate::ops::admin::call,
            ) {
                Ok(result) => Reply::result(&id, result),
                Err(err) => Reply::error(&err, Some(&id)),
            }
        }
        _ => Reply::error(&WireError::new(code::METHOD_NOT_FOUND, "method not found"), Some(&id)),
    }
}
