//! `runpack_export` and `runpack_verify`. Runpacks live in the hardened runpack store
//! under `<tenant>/<namespace>/`: a relative `output_dir` names a place beneath the caller's
//! scope, and `runpack_verify` and the download (`GET /runpacks/<t>/<ns>/<name>.tar.zst`)
//! accept the same name unchanged (`runpack_verify` finds the scope among those the caller
//! may use; `tenant_id` and `namespace_id` may name it). An absolute path is honoured only
//! beneath an operator's client export root (`export_roots.rs`), as the open-source server
//! does; never `..`, never a link.

use std::num::NonZeroU64;

use dg_engine::runpack::{build_runpack, verify_runpack, ExportOptions, RunpackSecurity, VerificationStatus};
use dg_engine::time::Timestamp;
use dg_storage::runpack_store::RunpackStoreError;
use dg_storage::Scope;
use serde::Deserialize;
use serde_json::{json, Value};

use super::scenario::load_scenario;
use super::{parse_args, to_output};
use crate::export_roots::Refusal;
use crate::ops::request::RequestCtx;
use crate::wire::{code, WireError};
use dg_identity::{decide, Target};

fn store_error(err: RunpackStoreError) -> WireError {
    match err {
        RunpackStoreError::InvalidPath { .. } | RunpackStoreError::Symlink { .. } => {
            WireError::invalid_params(err.to_string())
        }
        RunpackStoreError::NotFound(_) => WireError::new(code::NOT_FOUND, "runpack not found (export it first)"),
        // The object store was away or slow: nothing was stored, the same call may be retried.
        RunpackStoreError::Unavailable(_) => WireError::new(code::RUNPACK, err.to_string()).transient(),
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
    let output_dir = args.output_dir.as_deref().map(|dir| dir.trim_end_matches('/'));
    // Checked before the runpack is built: a refused place costs nothing.
    let placement = match output_dir {
        Some(dir) if dir.starts_with('/') => Some(app.export_roots.place(dir, tenant).map_err(|r| refused(r, dir))?),
        _ => None,
    };
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
    let storage_uri = match (placement, output_dir) {
        (Some(placement), Some(dir)) => {
            placement.store.write_loose(&placement.name, &files).map_err(store_error)?;
            format!("file://{dir}/")
        }
        (_, name) => {
            let name = name.map_or_else(|| args.run_id.clone(), str::to_string);
            let manifest_name = files.last().map(|(path, _)| path.clone()).unwrap_or_default();
            let stored =
                app.runpacks.put(Scope::new(tenant, namespace), &name, &manifest_name, &files).map_err(store_error)?;
            // Where the object went (bucket, key, version, retention) is the export's audit record.
            ctx.note(stored.detail);
            format!("dg+runpack://{tenant}/{namespace}/{name}/")
        }
    };
    Ok(json!({
        "manifest": to_output(&runpack.manifest)?,
        "report": runpack.report.as_ref().map(to_output).transpose()?,
        "storage_uri": storage_uri,
    }))
}

/// The answer to an absolute path the export roots do not take.
fn refused(refusal: Refusal, dir: &str) -> WireError {
    match refusal {
        Refusal::NoRoots => WireError::invalid_params(format!(
            "{dir} is an absolute path, and this appliance keeps runpacks in its own store: pass a relative name \
             (for example \"run-1\"; runpack_verify and GET /runpacks/<tenant_id>/<namespace_id>/<name>.tar.zst take \
             the same name), or ask the operator to allow the directory in [runpacks] client_export_roots"
        )),
        Refusal::Outside => WireError::invalid_params(format!(
            "{dir} is not beneath any directory in [runpacks] client_export_roots that this tenant may use"
        )),
        Refusal::Invalid(err) => store_error(err),
    }
}

#[derive(Deserialize)]
struct VerifyArgs {
    runpack_dir: String,
    manifest_path: String,
    /// Appliance extension (open-source clients never send it): the scope of a relative
    /// `runpack_dir` when the caller may reach several that hold the name.
    #[serde(default)]
    tenant_id: Option<NonZeroU64>,
    #[serde(default)]
    namespace_id: Option<NonZeroU64>,
}

/// Splits the older `<tenant>/<namespace>/<name>` form into its scope and name.
fn parse_scoped_dir(dir: &str) -> Option<(Scope, String)> {
    let mut parts = dir.trim_end_matches('/').splitn(3, '/');
    match (parts.next().map(str::parse::<u64>), parts.next().map(str::parse::<u64>), parts.next()) {
        (Some(Ok(tenant)), Some(Ok(namespace)), Some(name)) if tenant > 0 && namespace > 0 => {
            Some((Scope::new(tenant, namespace), name.to_string()))
        }
        _ => None,
    }
}

/// The scopes the caller may verify in, by the policy table (no registry lookups beyond
/// listing tenants and namespaces, which the caller's own reach bounds).
fn reachable_scopes(ctx: &RequestCtx<'_>) -> Result<Vec<Scope>, WireError> {
    let principal = ctx.principal;
    let tenants: Vec<u64> = match principal.tenant {
        Some(tenant) => vec![tenant],
        None => ctx.app.store.list_tenants()?.into_iter().map(|tenant| tenant.tenant_id).collect(),
    };
    let mut scopes = Vec::new();
    for tenant in tenants {
        let namespaces: Vec<u64> = if principal.tenant.is_some() && !principal.namespaces.is_empty() {
            principal.namespaces.clone()
        } else {
            ctx.app.store.list_namespaces(tenant)?.into_iter().map(|ns| ns.namespace_id).collect()
        };
        for namespace in namespaces {
            if decide(principal, ctx.operation, Target::namespace(tenant, namespace)).allowed {
                scopes.push(Scope::new(tenant, namespace));
            }
        }
    }
    Ok(scopes)
}

/// Where a relative `runpack_dir` is: the named scope, else the one scope the caller may
/// reach that holds the name, else the older `<tenant>/<namespace>/<name>` form.
fn locate(ctx: &RequestCtx<'_>, args: &VerifyArgs) -> Result<(Scope, String), WireError> {
    let name = args.runpack_dir.trim_end_matches('/').to_string();
    dg_storage::runpack_store::validate_relative(&name).map_err(store_error)?;
    if let (Some(tenant), Some(namespace)) = (args.tenant_id, args.namespace_id) {
        return Ok((Scope::new(tenant.get(), namespace.get()), name));
    }
    let holding: Vec<Scope> = reachable_scopes(ctx)?
        .into_iter()
        .map(|scope| ctx.app.runpacks.contains(scope, &name).map(|held| held.then_some(scope)))
        .filter_map(Result::transpose)
        .collect::<Result<_, _>>()
        .map_err(store_error)?;
    match holding.as_slice() {
        [scope] => Ok((*scope, name)),
        [] => match parse_scoped_dir(&name) {
            Some(found) => Ok(found),
            None => Err(WireError::new(code::NOT_FOUND, format!("runpack not found: {name} (export it first)"))),
        },
        several => Err(WireError::invalid_params(format!(
            "runpack {name} exists in {} namespaces you can reach: pass tenant_id and namespace_id with runpack_dir",
            several.len()
        ))),
    }
}

pub(super) fn verify(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let app = ctx.app;
    let args: VerifyArgs = parse_args(args)?;
    let mut files = if args.runpack_dir.starts_with('/') {
        verify_files_at_root(ctx, &args)?
    } else {
        let (scope, name) = locate(ctx, &args)?;
        ctx.authorize(Target { tenant: Some(scope.tenant_id), namespace: Some(scope.namespace_id) })?;
        app.runpacks.get(scope, &name).map_err(store_error)?
    };
    let manifest = files
        .remove(&args.manifest_path)
        .ok_or_else(|| WireError::new(code::RUNPACK, format!("invalid manifest: {} not found", args.manifest_path)))?;
    let report = verify_runpack(&manifest, &files).map_err(|err| WireError::new(code::RUNPACK, err.to_string()))?;
    let status = if report.status == VerificationStatus::Pass { "pass" } else { "fail" };
    Ok(json!({"report": to_output(&report)?, "status": status}))
}

/// The files of a runpack at an absolute path beneath a client export root. The caller is
/// authorized for the tenant and namespace the manifest names, and a tenant root serves its
/// own tenant only.
fn verify_files_at_root(
    ctx: &RequestCtx<'_>,
    args: &VerifyArgs,
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, WireError> {
    let dir = args.runpack_dir.trim_end_matches('/');
    let root_tenant = ctx.app.export_roots.tenant_of(dir);
    let Some(root_tenant) = root_tenant else {
        let refusal = if ctx.app.export_roots.is_empty() { Refusal::NoRoots } else { Refusal::Outside };
        return Err(refused(refusal, dir));
    };
    let placement_tenant = root_tenant.or(ctx.principal.tenant).unwrap_or(0);
    let placement = ctx.app.export_roots.place(dir, placement_tenant).map_err(|r| refused(r, dir))?;
    let files = placement.store.read_loose(&placement.name).map_err(store_error)?;
    #[derive(Deserialize)]
    struct Owner {
        tenant_id: u64,
        namespace_id: u64,
    }
    let owner = files
        .get(&args.manifest_path)
        .and_then(|bytes| serde_json::from_slice::<Owner>(bytes).ok())
        .map(|owner| (owner.tenant_id, owner.namespace_id));
    // The manifest names its owner; that, not the caller's word, is what is authorized.
    let Some((tenant, namespace)) = owner else {
        return Err(WireError::new(
            code::RUNPACK,
            format!("invalid manifest: {} not found or names no tenant", args.manifest_path),
        ));
    };
    if root_tenant.is_some_and(|only| only != tenant) {
        return Err(refused(Refusal::Outside, dir));
    }
    ctx.authorize(Target::namespace(tenant, namespace))?;
    Ok(files)
}

/// Builds the signed bundle of a stored runpack, for `GET /runpacks/...`, with the run id
/// its manifest names (the URL's name may be a client's `output_dir` instead).
///
/// # Errors
/// Not found, refusals, signing failures.
pub fn bundle_for_download(
    ctx: &RequestCtx<'_>,
    tenant: u64,
    namespace: u64,
    run_id: &str,
) -> Result<(Vec<u8>, String), WireError> {
    ctx.authorize(Target { tenant: Some(tenant), namespace: Some(namespace) })?;
    let app = ctx.app;
    let (bytes, bundle_run) =
        app.runpacks.bundle(Scope::new(tenant, namespace), run_id, &app.keys).map_err(store_error)?;
    Ok((bytes, bundle_run))
}

/// The runpack download operation (`runpack_download`) for `principal`, through the request
/// path: the signed bundle of the runpack stored under `name` and the run id it holds. The
/// one path behind `GET /runpacks/...` and the admin UI's download.
///
/// # Errors
/// Not found, refusals, signing failures.
pub fn download(
    app: &crate::app::App,
    principal: &crate::ops::auth::Principal,
    request_id: String,
    tenant: u64,
    namespace: u64,
    name: &str,
) -> Result<(Vec<u8>, String), WireError> {
    let bundle = std::cell::RefCell::new((Vec::new(), String::new()));
    crate::ops::request::call(
        app,
        principal,
        request_id,
        dg_identity::Operation::RunpackDownload,
        Value::Null,
        |ctx, _| {
            let (bytes, bundle_run) = bundle_for_download(ctx, tenant, namespace, name)?;
            let summary = json!({"tenant_id": tenant, "namespace_id": namespace, "name": name,
            "run_id": bundle_run, "bytes": bytes.len()});
            *bundle.borrow_mut() = (bytes, bundle_run);
            Ok(summary)
        },
    )?;
    Ok(bundle.into_inner())
}

/// The file name a downloaded bundle is saved under: the run it holds, when that id is a safe
/// file name (what a browser saves and what the bundle says then agree), else
/// `runpack.tar.zst`.
#[must_use]
pub fn download_file_name(bundle_run: &str) -> String {
    let safe = !bundle_run.is_empty()
        && bundle_run.len() <= 128
        && bundle_run.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if safe {
        format!("{bundle_run}.tar.zst")
    } else {
        "runpack.tar.zst".to_string()
    }
}

/// This family's handler of `operation`, when it is one of its tools (`super::handler`).
pub(super) fn handler(operation: dg_identity::Operation) -> Option<super::Handler> {
    Some(match operation {
        dg_identity::Operation::RunpackExport => export,
        dg_identity::Operation::RunpackVerify => verify,
        _ => return None,
    })
}
