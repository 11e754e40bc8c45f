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

use dg_identity::Operation;

use crate::ops::request::RequestCtx;
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

/// One tool's handler: names its target through [`RequestCtx::authorize`] before it
/// touches storage, and writes through [`RequestCtx::commit`].
pub(crate) type Handler = fn(&RequestCtx<'_>, Value) -> Result<Value, WireError>;

/// The handler of a tool operation: each family file lists its own tools. `None` for an
/// operation that is not a tool (and, if the table gained a tool without a handler, for
/// that one: a unit test checks every tool of the table has one).
#[must_use]
pub(crate) fn handler(operation: Operation) -> Option<Handler> {
    scenario::handler(operation)
        .or_else(|| evidence::handler(operation))
        .or_else(|| runpack::handler(operation))
        .or_else(|| providers::handler(operation))
        .or_else(|| registry::handler(operation))
        .or_else(|| precheck::handler(operation))
        .or_else(|| docs::handler(operation))
}

/// The tool catalogue in the operation table's order: names, descriptions and input
/// schemas of the Decision Gate contract (`catalog.json`, checked against the reference
/// by a test; a unit test checks it holds exactly the table's tools).
#[must_use]
pub fn catalog() -> &'static [ToolInfo] {
    static CATALOG: OnceLock<Vec<ToolInfo>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let described: Vec<ToolInfo> = serde_json::from_str(include_str!("catalog.json")).unwrap_or_default();
        Operation::tools()
            .filter_map(|operation| described.iter().find(|tool| tool.name == operation.name()).cloned())
            .collect()
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

/// Runs the tool named by `ctx.operation`. Blocking: call from a blocking-capable thread.
///
/// # Errors
/// The tool's wire error; `-32601` when the operation is not a tool.
pub fn call_tool(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args = if args.is_null() { Value::Object(serde_json::Map::new()) } else { args };
    match handler(ctx.operation) {
        Some(run) => run(ctx, args),
        None => Err(WireError::new(code::METHOD_NOT_FOUND, "unknown tool")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_the_policy_and_the_dispatch_derive_from_one_table_and_agree() {
        let table: Vec<&str> = Operation::tools().map(Operation::name).collect();
        let listed: Vec<&str> = catalog().iter().map(|tool| tool.name.as_str()).collect();
        assert_eq!(listed, table, "tools/list is the table's tools in the table's order");
        let described: Vec<ToolInfo> = serde_json::from_str(include_str!("catalog.json")).unwrap();
        assert_eq!(described.len(), table.len(), "catalog.json describes exactly the table's tools");
        for operation in Operation::tools() {
            assert!(handler(operation).is_some(), "{} has no handler", operation.name());
            assert!(
                operation.row().roles.contains(&dg_identity::Role::OrgAdmin),
                "{} has a policy row",
                operation.name()
            );
            assert_eq!(Operation::tool(operation.name()), Some(operation));
        }
        for row in dg_identity::POLICY.iter().filter(|row| !row.operation.is_tool()) {
            assert!(handler(row.operation).is_none(), "{} is not a tool but has a tool handler", row.name);
            assert_eq!(Operation::tool(row.name), None);
        }
        // Every counter a tool adds to is one the ledger knows.
        for operation in Operation::tools() {
            if let Some(counter) = operation.counter() {
                assert!(dg_storage::usage::COUNTERS.contains(&counter.as_str()), "{}", counter.as_str());
            }
        }
    }
}
