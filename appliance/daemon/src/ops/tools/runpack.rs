//! `runpack_export` and `runpack_verify`. Runpacks live in the hardened runpack store
//! under `<tenant>/<namespace>/`: a client-supplied `output_dir` or `runpack_dir` names a
//! place beneath that, never a server path (no absolute paths, no `..`, no links).

use std::num::NonZeroU64;

use dg_engine::runpack::{build_runpack, verify_runpack, ExportOptions, RunpackSecurity, VerificationStatus};
use dg_engine::time::Timestamp;
use dg_storage::runpack_store::RunpackStoreError;
use dg_storage::Scope;
use serde::Deserialize;
use serde_json::{json, Value};

use super::scenario::load_scenario;
use super::{parse_args, to_output};
use crate::ops::request::RequestCtx;
use crate::wire::{code, WireError};
use dg_identity::Target;

fn store_error(err: RunpackStoreError) -> WireError {
    match err {
        RunpackStoreError::InvalidPath { .. } | RunpackStoreError::Symlink { .. } => {
            WireError::invalid_params(err.to_string())
        }
        other => WireError::new(code::RUNPACK, other.to_string()),
    }
}

#[derive(Deserialize)]
struct ExportArgs {
    scenario_id: String,
    tenant_id: NonZeroU64,
    namespace_id: NonZeroU64,
    run_id: String,
    #[serde(default)]
    output_dir: Option<String>,
    #[serde(default)]
    manifest_name: Option<String>,
    generated_at: Timestamp,
    include_verification: bool,
}

pub(super) fn export(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let app = ctx.app;
    let args: ExportArgs = parse_args(args)?;
    let (tenant, namespace) = (args.tenant_id.get(), args.namespace_id.get());
    ctx.authorize(Target { tenant: Some(tenant), namespace: Some(namespace) })?;
    let spec = load_scenario(app, tenant, namespace, &args.scenario_id)?
        .ok_or_else(|| WireError::new(code::NOT_FOUND, "scenario not defined"))?;
    let (state, _) = app
        .store
        .get_run(Scope::new(tenant, namespace), &args.run_id)?
        .ok_or_else(|| WireError::new(code::NOT_FOUND, "run not found"))?;
    let manifest_name = args.manifest_name.unwrap_or_else(|| "manifest.json".to_string());
    dg_storage::runpack_store::validate_segment(&manifest_name, &manifest_name).map_err(store_error)?;
    let name = args.output_dir.map(|dir| dir.trim_end_matches('/').to_string()).unwrap_or_else(|| args.run_id.clone());
    let options = ExportOptions {
        generated_at: args.generated_at,
        include_verification: args.include_verification,
        anchor_policy: None,
        security: Some(RunpackSecurity { dev_permissive: false, namespace_authority: "dg_registry".to_string() }),
    };
    let runpack =
        build_runpack(&spec, &state, &options).map_err(|err| WireError::new(code::RUNPACK, err.to_string()))?;
    let mut files = runpack.files.clone();
    files.push((manifest_name, runpack.manifest_bytes.clone()));
    app.runpacks.write(Scope::new(tenant, namespace), &name, &files).map_err(store_error)?;
    Ok(json!({
        "manifest": to_output(&runpack.manifest)?,
        "report": runpack.report.as_ref().map(to_output).transpose()?,
        "storage_uri": format!("dg+runpack://{tenant}/{namespace}/{name}/"),
    }))
}

#[derive(Deserialize)]
struct VerifyArgs {
    runpack_dir: String,
    manifest_path: String,
}

/// Splits `<tenant>/<namespace>/<name>` into its scope and name.
fn parse_runpack_dir(dir: &str) -> Result<(Scope, String), WireError> {
    let mut parts = dir.trim_end_matches('/').splitn(3, '/');
    match (parts.next().map(str::parse::<u64>), parts.next().map(str::parse::<u64>), parts.next()) {
        (Some(Ok(tenant)), Some(Ok(namespace)), Some(name)) if tenant > 0 && namespace > 0 => {
            Ok((Scope::new(tenant, namespace), name.to_string()))
        }
        _ => Err(WireError::invalid_params(
            "runpack_dir must be <tenant_id>/<namespace_id>/<runpack name> in the runpack store",
        )),
    }
}

pub(super) fn verify(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let app = ctx.app;
    let args: VerifyArgs = parse_args(args)?;
    let (scope, name) = parse_runpack_dir(&args.runpack_dir)?;
    ctx.authorize(Target { tenant: Some(scope.tenant_id), namespace: Some(scope.namespace_id) })?;
    let mut files = app.runpacks.read(scope, &name).map_err(store_error)?;
    let manifest = files
        .remove(&args.manifest_path)
        .ok_or_else(|| WireError::new(code::RUNPACK, format!("invalid manifest: {} not found", args.manifest_path)))?;
    let report = verify_runpack(&manifest, &files).map_err(|err| WireError::new(code::RUNPACK, err.to_string()))?;
    let status = if report.status == VerificationStatus::Pass { "pass" } else { "fail" };
    Ok(json!({"report": to_output(&report)?, "status": status}))
}

/// Builds the signed bundle of a stored runpack, for `GET /runpacks/...`.
///
/// # Errors
/// Not found, refusals, signing failures.
pub fn bundle_for_download(
    ctx: &RequestCtx<'_>,
    tenant: u64,
    namespace: u64,
    run_id: &str,
) -> Result<Vec<u8>, WireError> {
    ctx.authorize(Target { tenant: Some(tenant), namespace: Some(namespace) })?;
    let app = ctx.app;
    let mut files = app.runpacks.read(Scope::new(tenant, namespace), run_id).map_err(|err| match err {
        RunpackStoreError::NotFound(_) => WireError::new(code::NOT_FOUND, "runpack not found (export it first)"),
        other => store_error(other),
    })?;
    let manifest =
        files.remove("manifest.json").ok_or_else(|| WireError::new(code::RUNPACK, "runpack has no manifest.json"))?;
    let key = app.keys.active().map_err(|err| WireError::new(code::INTERNAL, err.to_string()))?;
    let files: Vec<(String, Vec<u8>)> = files.into_iter().collect();
    dg_storage::bundle::build_bundle("manifest.json", &manifest, &files, &key)
        .map_err(|err| WireError::new(code::RUNPACK, err.to_string()))
}

/// This family's handler of `operation`, when it is one of its tools (`super::handler`).
pub(super) fn handler(operation: dg_identity::Operation) -> Option<super::Handler> {
    Some(match operation {
        dg_identity::Operation::RunpackExport => export,
        dg_identity::Operation::RunpackVerify => verify,
        _ => return None,
    })
}
