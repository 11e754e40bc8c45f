//! `scenario_define`, `scenario_start`, `scenario_status`, `scenario_next`,
//! `scenario_submit`, `scenario_trigger`.
//!
//! Scenarios are persisted (unlike the open-source server) and keyed by namespace and
//! owner tenant (`default_tenant_id`, or every tenant when it is absent). Runs are keyed
//! by tenant, namespace and run id and updated with optimistic concurrency: a run
//! changed by a concurrent call is reloaded and the step re-evaluated (which a replayed
//! trigger id then answers idempotently).

use dg_engine::control_plane::ControlPlane;
use dg_engine::control_plane::ProviderAvailability;
use dg_engine::spec::ScenarioSpec;
use dg_engine::state::{GateEvalRecord, NextRequest, RunConfig, RunState, StatusRequest, SubmitRequest, TriggerEvent};
use dg_engine::time::Timestamp;
use dg_engine::validation::validate_condition;
use dg_engine::EngineError;
use dg_providers::contracts::{builtin_contract, validate_capability};
use dg_storage::{Scope, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

use super::{parse_args, to_output};
use crate::app::App;
use crate::ops::request::RequestCtx;
use crate::wire::{code, WireError};
use dg_identity::Target;

/// Maps engine errors to the contract's codes.
pub(crate) fn engine_error(err: EngineError) -> WireError {
    match err {
        EngineError::SubmissionConflict(_) => WireError::new(code::CONFLICT, err.to_string()),
        other => WireError::new(code::CONTROL_PLANE, other.to_string()),
    }
}

/// Define-time checks shared by `scenario_define` and inline-spec `precheck`:
/// capabilities, strict comparator validation, then the spec's own invariants.
pub(crate) fn validate_spec(app: &App, spec: &ScenarioSpec) -> Result<(), WireError> {
    let available = |id: &str| app.providers.is_available(id);
    for condition in &spec.conditions {
        validate_capability(condition, &available).map_err(WireError::invalid_params)?;
        if let Some(strict) = app.strict {
            let schema = builtin_contract(&condition.query.provider_id)
                .and_then(|contract| contract.check(&condition.query.check_id))
                .map(|check| &check.result_schema);
            if let Some(schema) = schema {
                validate_condition(condition, schema, strict).map_err(WireError::invalid_params)?;
            }
        }
    }
    spec.validate().map_err(|err| WireError::new(code::CONTROL_PLANE, EngineError::InvalidSpec(err).to_string()))
}

fn parse_spec(value: Value) -> Result<ScenarioSpec, WireError> {
    serde_path_to_error::deserialize(value)
        .map_err(|err| WireError::invalid_params(format!("invalid arguments at spec.{}: {}", err.path(), err.inner())))
}

#[derive(Deserialize)]
struct DefineArgs {
    spec: Value,
}

pub(super) fn define(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let app = ctx.app;
    let args: DefineArgs = parse_args(args)?;
    let spec = parse_spec(args.spec)?;
    let tenant = spec.default_tenant_id.map(|t| t.get());
    ctx.authorize(Target { tenant, namespace: Some(spec.namespace_id.get()) })?;
    validate_spec(app, &spec)?;
    let scope = Scope::new(tenant.unwrap_or(0), spec.namespace_id.get());
    let hash = spec.canonical_hash().map_err(|err| WireError::new(code::INTERNAL, err.to_string()))?;
    let output = json!({"scenario_id": spec.scenario_id, "spec_hash": hash});
    ctx.commit(Some(&output), |audit| match app.store.put_scenario(scope, &spec, audit) {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict(_)) => {
            Err(WireError::new(code::CONFLICT, format!("scenario already defined: {}", spec.scenario_id)))
        }
        Err(err) => Err(err.into()),
    })?;
    Ok(output)
}

/// Finds the scenario a tenant's run uses: the tenant's own, else an every-tenant one.
pub(crate) fn load_scenario(
    app: &App,
    tenant: u64,
    namespace: u64,
    scenario_id: &str,
) -> Result<Option<Arc<ScenarioSpec>>, WireError> {
    if let Some(spec) = app.store.scenario_spec(Scope::new(tenant, namespace), scenario_id)? {
        return Ok(Some(spec));
    }
    Ok(app.store.scenario_spec(Scope::new(0, namespace), scenario_id)?)
}

fn require_scenario(app: &App, tenant: u64, namespace: u64, scenario_id: &str) -> Result<Arc<ScenarioSpec>, WireError> {
    load_scenario(app, tenant, namespace, scenario_id)?
        .ok_or_else(|| WireError::new(code::NOT_FOUND, "scenario not defined"))
}

#[derive(Deserialize)]
struct StartArgs {
    scenario_id: String,
    run_config: RunConfig,
    started_at: Timestamp,
    issue_entry_packets: bool,
}

pub(super) fn start(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let app = ctx.app;
    let args: StartArgs = parse_args(args)?;
    let tenant = args.run_config.tenant_id.get();
    let namespace = args.run_config.namespace_id.get();
    ctx.authorize(Target { tenant: Some(tenant), namespace: Some(namespace) })?;
    let spec = require_scenario(app, tenant, namespace, &args.scenario_id)?;
    let engine =
        ControlPlane::new(&spec, &app.engine, &app.providers).map_err(engine_error)?.with_availability(&app.providers);
    let state = engine.start_run(args.run_config, args.started_at, args.issue_entry_packets).map_err(engine_error)?;
    let output = to_output(&state)?;
    ctx.commit(Some(&output), |audit| match app.store.start_run(&state, audit) {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict(_)) => {
            Err(WireError::new(code::CONTROL_PLANE, format!("run already exists: {}", state.run_id)))
        }
        // Deleted between this request's authorization and its write: nothing was stored.
        Err(StoreError::Missing(what)) => {
            Err(WireError::new(code::NOT_FOUND, format!("not found: {what}; the run was not started")))
        }
        Err(err) => Err(err.into()),
    })?;
    app.metrics.run_started();
    Ok(output)
}

/// Loads a run, applies `step` with the scenario's engine and saves it, retrying when a
/// concurrent call changed the run first.
fn with_run<R>(
    ctx: &RequestCtx<'_>,
    scenario_id: &str,
    tenant: u64,
    namespace: u64,
    run_id: &str,
    step: impl Fn(&ControlPlane<'_>, &mut RunState) -> Result<R, EngineError>,
    render: impl Fn(&R) -> Result<Value, WireError>,
) -> Result<Value, WireError> {
    let app = ctx.app;
    let spec = require_scenario(app, tenant, namespace, scenario_id)?;
    let engine =
        ControlPlane::new(&spec, &app.engine, &app.providers).map_err(engine_error)?.with_availability(&app.providers);
    let scope = Scope::new(tenant, namespace);
    for _attempt in 0..8 {
        let (mut state, version) = app
            .store
            .get_run(scope, run_id)?
            .ok_or_else(|| WireError::new(code::CONTROL_PLANE, format!("run not found: {run_id}")))?;
        if state.scenario_id != spec.scenario_id {
            return Err(WireError::new(code::CONTROL_PLANE, format!("scenario mismatch for run: {scenario_id}")));
        }
        let outcome = step(&engine, &mut state).map_err(|err| (err.state_changed(), engine_error(err)));
        let outcome = match outcome {
            Ok(result) => render(&result).map_err(|err| (false, err)),
            Err(failed) => Err(failed),
        };
        let must_save = match &outcome {
            Ok(_) => true,
            Err((state_changed, _)) => *state_changed,
        };
        if must_save {
            // A failed step's changed state is saved too, with the decisions only: the
            // call's own entry (an error) follows from the request path.
            let response = outcome.as_ref().ok();
            let saved = ctx.commit(response, |audit| match app.store.update_run(&state, version, audit) {
                Ok(_) => Ok(true),
                Err(StoreError::Conflict(_) | StoreError::Contended { .. }) => Ok(false),
                Err(err) => Err(err.into()),
            })?;
            if !saved {
                continue;
            }
        }
        return outcome.map_err(|(_, err)| err);
    }
    Err(WireError::new(code::CONTROL_PLANE, format!("run {run_id} is too busy: concurrent updates kept conflicting")))
}

#[derive(Deserialize)]
struct StatusArgs {
    scenario_id: String,
    request: StatusRequest,
}

pub(super) fn status(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args: StatusArgs = parse_args(args)?;
    let r = &args.request;
    ctx.authorize(Target { tenant: Some(r.tenant_id.get()), namespace: Some(r.namespace_id.get()) })?;
    with_run(
        ctx,
        &args.scenario_id,
        r.tenant_id.get(),
        r.namespace_id.get(),
        &r.run_id,
        |engine, state| engine.status(state, r),
        to_output,
    )
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum FeedbackLevel {
    Summary,
    Trace,
    Evidence,
}

#[derive(Deserialize)]
struct NextArgs {
    scenario_id: String,
    request: NextRequest,
    #[serde(default)]
    feedback: Option<FeedbackLevel>,
}

pub(super) fn next(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let app = ctx.app;
    let args: NextArgs = parse_args(args)?;
    let r = &args.request;
    ctx.authorize(Target { tenant: Some(r.tenant_id.get()), namespace: Some(r.namespace_id.get()) })?;
    let render = |(result, evals): &(_, Vec<GateEvalRecord>)| render_next(app, result, evals, args.feedback);
    with_run(
        ctx,
        &args.scenario_id,
        r.tenant_id.get(),
        r.namespace_id.get(),
        &r.run_id,
        |engine, state| {
            let result = engine.next(state, r)?;
            let evals: Vec<GateEvalRecord> =
                state.gate_evals.iter().filter(|record| record.trigger_id == r.trigger_id).cloned().collect();
            Ok((result, evals))
        },
        render,
    )
}

/// `scenario_next`'s answer: the step result plus the feedback asked for.
fn render_next<T: serde::Serialize>(
    app: &crate::app::App,
    result: &T,
    evals: &[GateEvalRecord],
    feedback: Option<FeedbackLevel>,
) -> Result<Value, WireError> {
    let mut output = to_output(result)?;
    if let Some(level) = feedback {
        output["feedback"] = match level {
            FeedbackLevel::Summary => json!({"level": "summary"}),
            FeedbackLevel::Trace => json!({
                "level": "trace",
                "gate_evaluations": evals.iter().map(|record| &record.evaluation).collect::<Vec<_>>(),
            }),
            FeedbackLevel::Evidence => {
                let mut records = to_output(&evals)?;
                if !app.config.evidence.allow_raw_values {
                    redact_gate_records(&mut records);
                }
                json!({"level": "evidence", "gate_records": records})
            }
        };
    }
    Ok(output)
}

/// Strips raw values from gate records (hashes, anchors, refs and errors remain).
fn redact_gate_records(records: &mut Value) {
    if let Some(list) = records.as_array_mut() {
        for record in list {
            if let Some(evidence) = record.get_mut("evidence").and_then(Value::as_array_mut) {
                for item in evidence {
                    if let Some(result) = item.get_mut("result") {
                        result["value"] = Value::Null;
                        result["content_type"] = Value::Null;
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct SubmitArgs {
    scenario_id: String,
    request: SubmitRequest,
}

pub(super) fn submit(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args: SubmitArgs = parse_args(args)?;
    let r = &args.request;
    ctx.authorize(Target { tenant: Some(r.tenant_id.get()), namespace: Some(r.namespace_id.get()) })?;
    with_run(
        ctx,
        &args.scenario_id,
        r.tenant_id.get(),
        r.namespace_id.get(),
        &r.run_id,
        |engine, state| engine.submit(state, r),
        to_output,
    )
}

#[derive(Deserialize)]
struct TriggerArgs {
    scenario_id: String,
    trigger: TriggerEvent,
}

pub(super) fn trigger(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args: TriggerArgs = parse_args(args)?;
    let t = &args.trigger;
    ctx.authorize(Target { tenant: Some(t.tenant_id.get()), namespace: Some(t.namespace_id.get()) })?;
    with_run(
        ctx,
        &args.scenario_id,
        t.tenant_id.get(),
        t.namespace_id.get(),
        &t.run_id,
        |engine, state| engine.trigger(state, t),
        to_output,
    )
}

/// This family's handler of `operation`, when it is one of its tools (`super::handler`).
pub(super) fn handler(operation: dg_identity::Operation) -> Option<super::Handler> {
    Some(match operation {
        dg_identity::Operation::ScenarioDefine => define,
        dg_identity::Operation::ScenarioStart => start,
        dg_identity::Operation::ScenarioStatus => status,
        dg_identity::Operation::ScenarioNext => next,
        dg_identity::Operation::ScenarioSubmit => submit,
        dg_identity::Operation::ScenarioTrigger => trigger,
        _ => return None,
    })
}
