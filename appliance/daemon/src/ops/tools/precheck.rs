//! `precheck`: evaluates a stage over a caller's payload (asserted evidence) without a
//! run: nothing is queried, nothing recorded.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use dg_engine::control_plane::ControlPlane;
use dg_engine::evidence::{EvidenceResult, EvidenceValue, TrustLane};
use dg_engine::spec::ScenarioSpec;
use dg_engine::validation::validate_condition;
use dg_storage::Scope;
use serde::Deserialize;
use std::sync::Arc;

use serde_json::Value;

use super::scenario::{engine_error, load_scenario, validate_spec};
use super::{parse_args, to_output};
use crate::ops::request::RequestCtx;
use crate::wire::{code, WireError};
use dg_identity::Target;

#[derive(Deserialize)]
struct DataShapeRef {
    schema_id: String,
    version: String,
}

#[derive(Deserialize)]
struct PrecheckArgs {
    tenant_id: NonZeroU64,
    namespace_id: NonZeroU64,
    #[serde(default)]
    scenario_id: Option<String>,
    #[serde(default)]
    spec: Option<Value>,
    #[serde(default)]
    stage_id: Option<String>,
    data_shape: DataShapeRef,
    payload: Value,
}

/// The part of a data shape that describes one condition's value.
fn condition_schema<'a>(
    shape: &'a Value,
    condition_id: &str,
    single_condition: bool,
) -> Result<Option<&'a Value>, String> {
    let is_object = shape.get("type").and_then(Value::as_str) == Some("object") || shape.get("properties").is_some();
    if !is_object {
        return if single_condition {
            Ok(Some(shape))
        } else {
            Err("a non-object data shape needs a single-condition spec".into())
        };
    }
    if let Some(schema) = shape.get("properties").and_then(|p| p.get(condition_id)) {
        return Ok(Some(schema));
    }
    match shape.get("additionalProperties") {
        Some(Value::Bool(true)) => {
            Err(format!("condition {condition_id}: additionalProperties: true gives no type to validate against"))
        }
        Some(schema @ Value::Object(_)) => Ok(Some(schema)),
        _ => Ok(None),
    }
}

pub(super) fn precheck(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let app = ctx.app;
    let args: PrecheckArgs = parse_args(args)?;
    let (tenant, namespace) = (args.tenant_id.get(), args.namespace_id.get());
    ctx.authorize(Target { tenant: Some(tenant), namespace: Some(namespace) })?;
    let shape = app
        .store
        .get_shape(Scope::new(tenant, namespace), &args.data_shape.schema_id, &args.data_shape.version)?
        .ok_or_else(|| WireError::new(code::NOT_FOUND, "schema not found"))?;
    let validator = jsonschema::draft202012::new(&shape.schema)
        .map_err(|err| WireError::invalid_params(format!("invalid schema: {err}")))?;
    let errors: Vec<String> = validator.iter_errors(&args.payload).map(|e| e.to_string()).collect();
    if !errors.is_empty() {
        return Err(WireError::invalid_params(format!("payload does not match schema: {}", errors.join("; "))));
    }
    let spec: Arc<ScenarioSpec> = match (args.scenario_id, args.spec) {
        (None, None) => return Err(WireError::invalid_params("precheck needs scenario_id or spec")),
        (Some(id), None) => load_scenario(app, tenant, namespace, &id)?
            .ok_or_else(|| WireError::new(code::NOT_FOUND, "scenario not in namespace"))?,
        (id, Some(value)) => {
            let spec: ScenarioSpec = serde_path_to_error::deserialize(value).map_err(|err| {
                WireError::invalid_params(format!("invalid arguments at spec.{}: {}", err.path(), err.inner()))
            })?;
            if id.is_some_and(|id| id != spec.scenario_id) {
                return Err(WireError::invalid_params("scenario_id does not match spec.scenario_id"));
            }
            if spec.namespace_id.get() != namespace {
                return Err(WireError::invalid_params("spec namespace_id does not match namespace_id"));
            }
            validate_spec(app, &spec)?;
            Arc::new(spec)
        }
    };
    if spec.default_tenant_id.is_some_and(|t| t.get() != tenant) {
        return Err(WireError::new(code::UNAUTHORIZED, "unauthorized"));
    }
    let single = spec.conditions.len() == 1;
    if let Some(strict) = app.strict {
        for condition in &spec.conditions {
            match condition_schema(&shape.schema, &condition.condition_id, single) {
                Err(message) => return Err(WireError::invalid_params(message)),
                Ok(Some(schema)) => validate_condition(condition, schema, strict).map_err(WireError::invalid_params)?,
                Ok(None) => {}
            }
        }
    }
    let mut evidence = BTreeMap::new();
    let asserted = |value: Value| {
        let mut result = EvidenceResult::empty(TrustLane::Asserted);
        result.value = Some(EvidenceValue::Json(value));
        result
    };
    match &args.payload {
        Value::Object(map) => {
            for condition in &spec.conditions {
                if let Some(value) = map.get(&condition.condition_id) {
                    evidence.insert(condition.condition_id.clone(), asserted(value.clone()));
                }
            }
        }
        other if single => {
            evidence.insert(spec.conditions[0].condition_id.clone(), asserted(other.clone()));
        }
        _ => return Err(WireError::invalid_params("a non-object payload needs a single-condition spec")),
    }
    let engine = ControlPlane::new(&spec, &app.engine, &app.providers).map_err(engine_error)?;
    let result = engine.precheck(args.stage_id.as_deref(), &evidence).map_err(engine_error)?;
    to_output(&result)
}

/// This family's handler of `operation`, when it is one of its tools (`super::handler`).
pub(super) fn handler(operation: dg_identity::Operation) -> Option<super::Handler> {
    Some(match operation {
        dg_identity::Operation::Precheck => precheck,
        _ => return None,
    })
}
