//! Admin operations for browsing (`run_list`, `run_get`, `scenario_get`, `audit_list`):
//! what the admin UI's pages show, reachable as `admin/<name>` like every other admin
//! operation. All read; all bounded (a page is at most `dg_storage::browse::MAX_PAGE`
//! rows).

use dg_identity::Target;
use dg_storage::browse::{AuditFilter, RunQuery, RunSort, MAX_PAGE};
use dg_storage::Scope;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::ops::request::RequestCtx;
use crate::ops::tools::{parse_args, to_output};
use crate::wire::{code, WireError};

/// The longest filter text accepted (ids and principals are far shorter).
const MAX_FILTER_BYTES: usize = 256;
/// Rows per page when the caller names none.
const DEFAULT_PAGE: u32 = 50;

fn bounded(field: &str, value: Option<String>) -> Result<Option<String>, WireError> {
    match value {
        Some(text) if text.len() > MAX_FILTER_BYTES => {
            Err(WireError::invalid_params(format!("invalid arguments at {field}: at most {MAX_FILTER_BYTES} bytes")))
        }
        Some(text) if text.is_empty() => Ok(None),
        other => Ok(other),
    }
}

fn page_size(limit: Option<u32>) -> Result<u32, WireError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(WireError::invalid_params(format!("invalid arguments at limit: 1 to {MAX_PAGE}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunListArgs {
    tenant_id: Option<u64>,
    namespace_id: Option<u64>,
    scenario_id: Option<String>,
    status: Option<String>,
    /// `saved` (default), `run_id`, `scenario`, `status`.
    sort: Option<String>,
    /// `desc` (default) or `asc`.
    order: Option<String>,
    #[serde(default)]
    offset: u64,
    limit: Option<u32>,
}

/// `run_list`: runs filtered by tenant, namespace, scenario and status, sorted, one page
/// and the total. A caller bound to namespaces sees runs in those only.
///
/// # Errors
/// Bad arguments, refusals, storage errors.
pub fn run_list(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args: RunListArgs = parse_args(args)?;
    ctx.authorize(Target { tenant: args.tenant_id, namespace: None })?;
    let sort = match args.sort.as_deref() {
        None | Some("") => RunSort::default(),
        Some(name) => RunSort::parse(name).ok_or_else(|| {
            WireError::invalid_params("invalid arguments at sort: one of saved, run_id, scenario, status")
        })?,
    };
    let ascending = match args.order.as_deref() {
        None | Some("" | "desc") => false,
        Some("asc") => true,
        Some(_) => return Err(WireError::invalid_params("invalid arguments at order: asc or desc")),
    };
    let query = RunQuery {
        tenant: args.tenant_id,
        namespace: args.namespace_id,
        within_namespaces: ctx.principal.namespaces.clone(),
        scenario_id: bounded("scenario_id", args.scenario_id)?,
        status: bounded("status", args.status)?,
        sort,
        ascending,
        offset: args.offset,
        limit: page_size(args.limit)?,
    };
    to_output(&ctx.app.store.runs_page(&query)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunGetArgs {
    tenant_id: u64,
    namespace_id: u64,
    run_id: String,
}

/// `run_get`: one run's whole state (stages entered, gate evaluations, decisions,
/// packets, submissions) and its write version.
///
/// # Errors
/// `-32004` for an unknown run; refusals, storage errors.
pub fn run_get(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args: RunGetArgs = parse_args(args)?;
    ctx.authorize(Target::namespace(args.tenant_id, args.namespace_id))?;
    let scope = Scope::new(args.tenant_id, args.namespace_id);
    let (state, version) = ctx
        .app
        .store
        .get_run(scope, &args.run_id)?
        .ok_or_else(|| WireError::new(code::NOT_FOUND, format!("run {} not found", args.run_id)))?;
    Ok(json!({"state": to_output(&state)?, "version": version}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioGetArgs {
    tenant_id: u64,
    namespace_id: u64,
    scenario_id: String,
}

/// `scenario_get`: a scenario's canonical spec and its sha256 (the tenant's own, else the
/// every-tenant one of that namespace).
///
/// # Errors
/// `-32004` for an unknown scenario; refusals, storage errors.
pub fn scenario_get(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args: ScenarioGetArgs = parse_args(args)?;
    ctx.authorize(Target::namespace(args.tenant_id, args.namespace_id))?;
    let store = &ctx.app.store;
    let record = match store.get_scenario(Scope::new(args.tenant_id, args.namespace_id), &args.scenario_id)? {
        Some(record) => Some(record),
        None => store.get_scenario(Scope::new(0, args.namespace_id), &args.scenario_id)?,
    };
    let record =
        record.ok_or_else(|| WireError::new(code::NOT_FOUND, format!("scenario {} not found", args.scenario_id)))?;
    let canonical = dg_engine::hashing::canonical_json_bytes(&record.spec)
        .map_err(|err| WireError::new(code::SERIALIZATION, err.to_string()))?;
    let canonical = String::from_utf8_lossy(&canonical);
    Ok(json!({
        "tenant_id": record.scope.tenant_id,
        "namespace_id": record.scope.namespace_id,
        "scenario_id": record.spec.scenario_id,
        "spec_hash": {"algorithm": "sha256", "value": record.spec_sha256},
        "canonical_json": canonical,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditListArgs {
    tenant_id: Option<u64>,
    action: Option<String>,
    outcome: Option<String>,
    principal: Option<String>,
    target: Option<String>,
    before_seq: Option<u64>,
    limit: Option<u32>,
}

/// `audit_list`: the newest audit entries matching a filter (each one's hash checked as
/// it is read), and where the next older page starts.
///
/// # Errors
/// Bad arguments, refusals, storage errors.
pub fn audit_list(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let args: AuditListArgs = parse_args(args)?;
    ctx.authorize(Target::default())?;
    let filter = AuditFilter {
        tenant: args.tenant_id,
        action: bounded("action", args.action)?,
        outcome: bounded("outcome", args.outcome)?,
        principal: bounded("principal", args.principal)?,
        target: bounded("target", args.target)?,
    };
    to_output(&ctx.app.store.audit_recent(&filter, args.before_seq, page_size(args.limit)?)?)
}
