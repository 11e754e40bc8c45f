//! `runpack_export` and `runpack_verify`. Runpacks are written beneath the appliance's
//! runpack directory only: a client-supplied `output_dir` or `runpack_dir` is a path
//! relative to it, checked segment by segment (no absolute paths, no `..`, no links).

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use dg_engine::runpack::{
    build_runpack, is_safe_relative_path, verify_runpack, ExportOptions, RunpackSecurity, VerificationStatus,
};
use dg_engine::time::Timestamp;
use dg_storage::Scope;
use serde::Deserialize;
use serde_json::{json, Value};

use super::scenario::load_scenario;
use super::{authorize, parse_args, to_output};
use crate::app::App;
use crate::auth::Principal;
use crate::wire::{code, WireError};

/// Largest file read back during verification.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Most files read from one runpack directory.
const MAX_FILES: usize = 64;

fn runpack_error(message: impl Into<String>) -> WireError {
    WireError::new(code::RUNPACK, message)
}

/// Resolves a client path beneath the runpack root, refusing escapes and links.
fn confined(root: &Path, relative: &str) -> Result<PathBuf, WireError> {
    if !is_safe_relative_path(relative) || relative.split('/').any(|s| s.len() > 255) {
        return Err(WireError::invalid_params(format!(
            "path {relative:?} must be relative to the appliance runpack store (no absolute paths, no '..')"
        )));
    }
    let mut path = root.to_path_buf();
    for segment in relative.split('/') {
        path.push(segment);
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if meta.file_type().is_symlink() {
                return Err(WireError::invalid_params(format!("path {relative:?} crosses a symbolic link")));
            }
        }
    }
    Ok(path)
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

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), WireError> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|err| runpack_error(format!("runpack write failed for {}: {err}", path.display())))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|err| runpack_error(format!("runpack write failed: {err}")))
}

pub(super) fn export(app: &App, principal: &Principal, args: Value) -> Result<Value, WireError> {
    let args: ExportArgs = parse_args(args)?;
    let (tenant, namespace) = (args.tenant_id.get(), args.namespace_id.get());
    authorize(principal, Some(tenant), Some(namespace), false)?;
    let spec = load_scenario(app, tenant, namespace, &args.scenario_id)?
        .ok_or_else(|| WireError::new(code::NOT_FOUND, "scenario not defined"))?;
    let (state, _) = app
        .store
        .get_run(Scope::new(tenant, namespace), &args.run_id)?
        .ok_or_else(|| WireError::new(code::NOT_FOUND, "run not found"))?;
    let manifest_name = args.manifest_name.unwrap_or_else(|| "manifest.json".to_string());
    if !is_safe_relative_path(&manifest_name) || manifest_name.contains('/') {
        return Err(WireError::invalid_params("manifest_name must be a plain file name"));
    }
    // Every runpack lives under its tenant and namespace, whatever the client asked for.
    let relative = match args.output_dir {
        Some(dir) => format!("{tenant}/{namespace}/{}", dir.trim_end_matches('/')),
        None => format!("{tenant}/{namespace}/{}", args.run_id),
    };
    let target = confined(&app.runpack_root, &relative)?;
    let options = ExportOptions {
        generated_at: args.generated_at,
        include_verification: args.include_verification,
        anchor_policy: None,
        security: Some(RunpackSecurity { dev_permissive: false, namespace_authority: "dg_registry".to_string() }),
    };
    let runpack = build_runpack(&spec, &state, &options).map_err(|err| runpack_error(err.to_string()))?;
    // Write into a fresh staging directory beside the target, then rename into place.
    let parent = target.parent().ok_or_else(|| runpack_error("runpack target has no parent"))?;
    std::fs::create_dir_all(parent).map_err(|err| runpack_error(format!("cannot create runpack directory: {err}")))?;
    let staging = parent.join(format!(".staging-{}", rand::random::<u64>()));
    std::fs::create_dir(&staging).map_err(|err| runpack_error(format!("cannot create staging directory: {err}")))?;
    let result = (|| {
        std::fs::create_dir(staging.join("artifacts")).map_err(|err| runpack_error(err.to_string()))?;
        for (path, bytes) in &runpack.files {
            write_file(&staging.join(path), bytes)?;
        }
        write_file(&staging.join(&manifest_name), &runpack.manifest_bytes)?;
        if target.exists() {
            std::fs::remove_dir_all(&target)
                .map_err(|err| runpack_error(format!("cannot replace previous runpack: {err}")))?;
        }
        std::fs::rename(&staging, &target)
            .map_err(|err| runpack_error(format!("cannot move runpack into place: {err}")))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result?;
    Ok(json!({
        "manifest": to_output(&runpack.manifest)?,
        "report": runpack.report.as_ref().map(to_output).transpose()?,
        "storage_uri": format!("dg+runpack://{relative}/"),
    }))
}

#[derive(Deserialize)]
struct VerifyArgs {
    runpack_dir: String,
    manifest_path: String,
}

/// Reads every regular file below `dir` (relative posix paths), refusing links and
/// special files, within size and count limits.
fn read_runpack_dir(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, WireError> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let entries = std::fs::read_dir(&current)
            .map_err(|err| runpack_error(format!("cannot read runpack directory: {err}")))?;
        for entry in entries {
            let entry = entry.map_err(|err| runpack_error(err.to_string()))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|err| runpack_error(err.to_string()))?;
            let relative =
                path.strip_prefix(dir).map_err(|err| runpack_error(err.to_string()))?.to_string_lossy().to_string();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let len = entry.metadata().map_err(|err| runpack_error(err.to_string()))?.len();
                if len > MAX_FILE_BYTES || files.len() >= MAX_FILES {
                    return Err(runpack_error(format!("runpack file {relative} exceeds limits")));
                }
                files.insert(relative, std::fs::read(&path).map_err(|err| runpack_error(err.to_string()))?);
            } else {
                return Err(runpack_error(format!("runpack contains a link or special file: {relative}")));
            }
        }
    }
    Ok(files)
}

pub(super) fn verify(app: &App, principal: &Principal, args: Value) -> Result<Value, WireError> {
    let args: VerifyArgs = parse_args(args)?;
    let dir = confined(&app.runpack_root, &args.runpack_dir)?;
    // Runpack directories start with `<tenant>/<namespace>/`: only those the caller may read.
    let mut segments = args.runpack_dir.split('/').map(str::parse::<u64>);
    match (segments.next(), segments.next()) {
        (Some(Ok(tenant)), Some(Ok(namespace))) => authorize(principal, Some(tenant), Some(namespace), false)?,
        _ => return Err(WireError::invalid_params("runpack_dir must start with <tenant_id>/<namespace_id>/")),
    }
    if !is_safe_relative_path(&args.manifest_path) {
        return Err(WireError::invalid_params("manifest_path must be relative to runpack_dir"));
    }
    let mut files = read_runpack_dir(&dir)?;
    let manifest = files
        .remove(&args.manifest_path)
        .ok_or_else(|| runpack_error(format!("invalid manifest: {} not found", args.manifest_path)))?;
    let report = verify_runpack(&manifest, &files).map_err(|err| runpack_error(err.to_string()))?;
    let status = if report.status == VerificationStatus::Pass { "pass" } else { "fail" };
    Ok(json!({"report": to_output(&report)?, "status": status}))
}
