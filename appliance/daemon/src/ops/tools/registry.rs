//! `schemas_register`, `schemas_list`, `schemas_get`, `scenarios_list`.

use dg_engine::data_shape::DataShapeRecord;
use dg_storage::{Scope, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{parse_args, to_output};
use crate::ops::request::RequestCtx;
use crate::wire::{code, WireError};
use dg_identity::Target;

/// Largest registered schema (canonical bytes).
const MAX_SCHEMA_BYTES: usize = 1024 * 1024;

#[derive(Deserialize)]
struct RegisterArgs {
    record: DataShapeRecord,
}

pub(super) fn schemas_register(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let app = ctx.app;
    let args: RegisterArgs = parse_args(args)?;
    let record = args.record;
    ctx.authorize(Target { tenant: Some(record.tenant_id.get()), namespace: Some(record.namespace_id.get()) })?;
    let size = dg_engine::canonical_json_bytes(&record.schema).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > MAX_SCHEMA_BYTES {
        return Err(WireError::invalid_params(format!("schema exceeds size limit ({size} > {MAX_SCHEMA_BYTES})")));
    }
    jsonschema::draft202012::new(&record.schema)
        .map_err(|err| WireError::invalid_params(format!("invalid schema: {err}")))?;
    let output = json!({"record": to_output(&record)?});
    ctx.commit(Some(&output), |audit| match app.store.put_shape(&record, audit) {
        Ok(()) => Ok(()),
        Err(StoreError::Conflict(_)) => Err(WireError::new(code::CONFLICT, "schema already registered")),
        Err(err) => Err(err.into()),
    })?;
    Ok(output)
}

#[derive(Deserialize)]
struct ListArgs {
    tenant_id: std::num::NonZeroU64,
    namespace_id: std::num::NonZeroU64,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
}

fn page_limit(limit: Option<u64>) -> Result<usize, WireError> {
    match limit.unwrap_or(50) {
        n @ 1..=1000 => Ok(usize::try_from(n).unwrap_or(1000)),
        _ => Err(WireError::invalid_params("limit must be between 1 and 1000")),
    }
}

#[derive(Serialize, Deserialize)]
struct ShapeCursor {
    schema_id: String,
    version: String,
}

pub(super) fn schemas_list(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let app = ctx.app;
    let args: ListArgs = parse_args(args)?;
    ctx.authorize(Target { tenant: Some(args.tenant_id.get()), namespace: Some(args.namespace_id.get()) })?;
    let limit = page_limit(args.limit)?;
    let cursor: Option<ShapeCursor> = args
        .cursor
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|err| WireError::invalid_params(format!("invalid cursor: {err}")))?;
    let scope = Scope::new(args.tenant_id.get(), args.namespace_id.get());
    let items =
        app.store.list_shapes(scope, cursor.as_ref().map(|c| (c.schema_id.as_str(), c.version.as_str())), limit)?;
    let next_token = items
        .last()
        .map(|last| {
            serde_json::to_string(&ShapeCursor { schema_id: last.schema_id.clone(), version: last.version.clone() })
        })
        .transpose()
        .map_err(|err| WireError::new(code::SERIALIZATION, err.to_string()))?;
    Ok(json!({"items": to_output(&items)?, "next_token": next_token}))
}

#[derive(Deserialize)]
struct GetArgs {
    tenant_id: std::num::NonZeroU64,
    namespace_id: std::num::NonZeroU64,
    schema_id: String,
    version: String,
}

pub(super) fn schemas_get(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let app = ctx.app;
    let args: GetArgs = parse_args(args)?;
    ctx.authorize(Target { tenant: Some(args.tenant_id.get()), namespace: Some(args.namespace_id.get()) })?;
    let scope = Scope::new(args.tenant_id.get(), args.namespace_id.get());
    let record = app
        .store
        .get_shape(scope, &args.schema_id, &args.version)?
        .ok_or_else(|| WireError::new(code::NOT_FOUND, "schema not found"))?;
    Ok(json!({"record": to_output(&record)?}))
}

pub(super) fn scenarios_list(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let app = ctx.app;
    let args: ListArgs = parse_args(args)?;
    ctx.authorize(Target { tenant: Some(args.tenant_id.get()), namespace: Some(args.namespace_id.get()) })?;
    let limit = page_limit(args.limit)?;
    let records =
        app.store.list_scenarios(args.tenant_id.get(), args.namespace_id.get(), args.cursor.as_deref(), limit)?;
    let items: Vec<Value> = records
        .iter()
        .map(|record| {
            json!({
                "scenario_id": record.spec.scenario_id,
                "namespace_id": record.spec.namespace_id,
                "spec_hash": {"algorithm": "sha256", "value": record.spec_sha256},
            })
        })
        .collect();
    let next_token = records.last().map(|record| record.spec.scenario_id.clone());
    Ok(json!({"items": items, "next_token": next_token}))
}

/// This family's handler of `operation`, when it is one of its tools (`super::handler`).
pub(super) fn handler(operation: dg_identity::Operation) -> Option<super::Handler> {
    Some(match operation {
        dg_identity::Operation::SchemasRegister => schemas_register,
        dg_identity::Operation::SchemasList => schemas_list,
        dg_identity::Operation::SchemasGet => schemas_get,
        dg_identity::Operation::ScenariosList => scenarios_list,
        _ => return None,
    })
}
