//! The Decision Gate tool surface: the 18 tools, one file per family, dispatched by name.
//! Transports (`/rpc`, `/mcp`, stdio) only frame requests and responses; every tool's
//! behaviour lives here once.

mod docs;
mod evidence;
mod precheck;
mod providers;
mod registry;
pub mod runpack;
mod scenario;

use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::request::RequestCtx;
use crate::wire::{code, WireError};

/// One entry of `tools/list`.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolInfo {
    /// Tool name.
    pub name: String,
    /// Description.
    pub description: String,
    /// JSON Schema of the arguments.
    pub input_schema: Value,
}

/// The tool catalogue in canonical order: names, descriptions and input schemas of the
/// Decision Gate contract (`catalog.json`, checked against the reference by a test).
#[must_use]
pub fn catalog() -> &'static [ToolInfo] {
    static CATALOG: OnceLock<Vec<ToolInfo>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut tools: Vec<ToolInfo> = serde_json::from_str(include_str!("catalog.json")).unwrap_or_default();
        let order = [
            "scenario_define",
            "scenario_start",
            "scenario_status",
            "scenario_next",
            "scenario_submit",
            "scenario_trigger",
            "evidence_query",
            "runpack_export",
            "runpack_verify",
            "providers_list",
            "provider_contract_get",
            "provider_check_schema_get",
            "schemas_register",
            "schemas_list",
            "schemas_get",
            "scenarios_list",
            "precheck",
            "decision_gate_docs_search",
        ];
        tools.sort_by_key(|tool| order.iter().position(|name| *name == tool.name).unwrap_or(order.len()));
        tools
    })
}

/// Parses tool arguments, naming the offending field on failure.
pub(crate) fn parse_args<T: DeserializeOwned>(args: Value) -> Result<T, WireError> {
    serde_path_to_error::deserialize(args).map_err(|err| {
        let path = err.path().to_string();
        if path == "." {
            WireError::invalid_params(format!("invalid arguments: {}", err.inner()))
        } else {
            WireError::invalid_params(format!("invalid arguments at {path}: {}", err.inner()))
        }
    })
}

/// Serializes a tool output.
pub(crate) fn to_output<T: serde::Serialize>(value: &T) -> Result<Value, WireError> {
    serde_json::to_value(value).map_err(|err| WireError::new(code::SERIALIZATION, err.to_string()))
}

/// Runs one tool. Blocking: call from a blocking-capable thread. Each tool names its
/// target through [`RequestCtx::authorize`] before it touches storage.
///
/// # Errors
/// The tool's wire error.
pub fn call_tool(ctx: &RequestCtx<'_>, name: &str, args: Value) -> Result<Value, WireError> {
    let args = if args.is_null() { Value::Object(serde_json::Map::new()) } else { args };
    let app = ctx.app;
    match name {
        "scenario_define" => scenario::define(ctx, args),
        "scenario_start" => scenario::start(ctx, args),
        "scenario_status" => scenario::status(ctx, args),
        "scenario_next" => scenario::next(ctx, args),
        "scenario_submit" => scenario::submit(ctx, args),
        "scenario_trigger" => scenario::trigger(ctx, args),
        "evidence_query" => evidence::query(ctx, args),
        "runpack_export" => runpack::export(ctx, args),
        "runpack_verify" => runpack::verify(ctx, args),
        "providers_list" => providers::list(app, args),
        "provider_contract_get" => providers::contract_get(app, args),
        "provider_check_schema_get" => providers::check_schema_get(app, args),
        "schemas_register" => registry::schemas_register(ctx, args),
        "schemas_list" => registry::schemas_list(ctx, args),
        "schemas_get" => registry::schemas_get(ctx, args),
        "scenarios_list" => registry::scenarios_list(ctx, args),
        "precheck" => precheck::precheck(ctx, args),
        "decision_gate_docs_search" => docs::search(args),
        _ => Err(WireError::new(code::METHOD_NOT_FOUND, "unknown tool")),
    }
}

/// Whether `name` is one of the 18 tools of the catalogue.
#[must_use]
pub fn is_known_tool(name: &str) -> bool {
    catalog().iter().any(|tool| tool.name == name)
}
