//! `dg-appliance runpack export|verify|inspect` and `dg-appliance keys show-public|rotate`.
//! `runpack verify` needs nothing but the bundle and a public key file.

use std::path::Path;
use std::process::ExitCode;

use dg_engine::runpack::{build_runpack, ExportOptions, RunpackSecurity, VerificationStatus};
use dg_engine::time::Timestamp;
use dg_storage::bundle::{build_bundle, inspect_unverified, read_bundle, BundleLimits};
use dg_storage::signing::PublicKeyRing;
use dg_storage::Scope;
use serde_json::json;

use crate::cli::RunpackCommand;
use crate::datadir;

/// Exit code for a bundle that failed verification.
const EXIT_FAILED: u8 = 1;
/// Exit code for input that could not be used at all.
const EXIT_UNUSABLE: u8 = 2;

/// Reads a runpack directory (unsigned) without following links.
/// Manifest bytes and the other files of a runpack directory.
type DirRunpack = (Vec<u8>, std::collections::BTreeMap<String, Vec<u8>>);

fn read_dir_runpack(dir: &Path) -> Result<DirRunpack, String> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).map_err(|err| format!("{}: {err}", current.display()))? {
            let entry = entry.map_err(|err| err.to_string())?;
            let kind = entry.file_type().map_err(|err| err.to_string())?;
            let path = entry.path();
            let relative = path.strip_prefix(dir).map_err(|err| err.to_string())?.to_string_lossy().to_string();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                if files.len() > 64 {
                    return Err("too many files for a runpack".into());
                }
                let bytes = dg_storage::read_bounded(&path, 64 * 1024 * 1024, dg_storage::Links::Refuse)
                    .map_err(|err| format!("{relative}: {err}"))?;
                files.insert(relative, bytes);
            } else {
                return Err(format!("{relative}: links and special files are not allowed"));
            }
        }
    }
    let manifest = files.remove("manifest.json").ok_or("no manifest.json in the runpack directory")?;
    Ok((manifest, files))
}

fn verify(bundle: &Path, pubkey: Option<&Path>, as_json: bool) -> ExitCode {
    let report = |ok: bool, signed: bool, key: Option<String>, details: serde_json::Value, errors: Vec<String>| {
        if as_json {
            println!(
                "{}",
                json!({"status": if ok {"pass"} else {"fail"}, "signed": signed, "key_id": key, "details": details, "errors": errors})
            );
        } else {
            println!("bundle: {}", bundle.display());
            println!(
                "signature: {}",
                if signed && ok {
                    format!("valid (key {})", key.unwrap_or_default())
                } else if signed {
                    "NOT verified".into()
                } else {
                    "UNSIGNED (directory runpack: integrity only)".into()
                }
            );
            if let Some(run) = details.get("run_id") {
                println!(
                    "run: {} / tenant {} / namespace {} / scenario {}",
                    run, details["tenant_id"], details["namespace_id"], details["scenario_id"]
                );
            }
            if let Some(root) = details.get("root_hash") {
                println!("root hash: {root}");
            }
            for error in &errors {
                println!("ERROR: {error}");
            }
            println!("result: {}", if ok { "VERIFIED" } else { "FAILED" });
        }
        ExitCode::from(if ok { 0 } else { EXIT_FAILED })
    };
    if bundle.is_dir() {
        let (manifest, files) = match read_dir_runpack(bundle) {
            Ok(read) => read,
            Err(err) => return report(false, false, None, json!({}), vec![err]),
        };
        return match dg_engine::runpack::verify_runpack(&manifest, &files) {
            Ok(result) => {
                let details: serde_json::Value = serde_json::from_slice(&manifest).unwrap_or_default();
                let details = json!({"run_id": details["run_id"], "tenant_id": details["tenant_id"], "namespace_id": details["namespace_id"],
                    "scenario_id": details["scenario_id"], "root_hash": details["integrity"]["root_hash"]["value"], "checked_files": result.checked_files});
                report(result.status == VerificationStatus::Pass, false, None, details, result.errors)
            }
            Err(err) => report(false, false, None, json!({}), vec![err.to_string()]),
        };
    }
    let Some(pubkey) = pubkey else {
        eprintln!("dg-appliance: a signed bundle needs --pubkey FILE (from `dg-appliance keys show-public`)");
        return ExitCode::from(EXIT_UNUSABLE);
    };
    let ring = match PublicKeyRing::load(pubkey) {
        Ok(ring) => ring,
        Err(err) => {
            eprintln!("dg-appliance: cannot use public key file {}: {err}", pubkey.display());
            return ExitCode::from(EXIT_UNUSABLE);
        }
    };
    let file = match dg_storage::open_regular(bundle, dg_storage::Links::Follow) {
        Ok(file) => file,
        Err(err) => {
            eprintln!("dg-appliance: cannot open {}: {err}", bundle.display());
            return ExitCode::from(EXIT_UNUSABLE);
        }
    };
    match read_bundle(std::io::BufReader::new(file), &ring, BundleLimits::default()) {
        Ok(verified) => {
            let d = &verified.signed.descriptor;
            let details = json!({"run_id": d.run_id, "tenant_id": d.tenant_id, "namespace_id": d.namespace_id, "scenario_id": d.scenario_id,
                "root_hash": d.manifest["integrity"]["root_hash"]["value"], "files": d.files.len()});
            report(true, true, Some(verified.signed.signature.key_id.clone()), details, vec![])
        }
        Err(err) => report(false, true, None, json!({}), vec![err.to_string()]),
    }
}

/// Runs a `runpack` subcommand.
///
/// # Errors
/// Message for the operator.
pub fn run_runpack(command: RunpackCommand) -> Result<ExitCode, String> {
    match command {
        RunpackCommand::Verify { bundle, pubkey, json } => Ok(verify(&bundle, pubkey.as_deref(), json)),
        RunpackCommand::Inspect { bundle } => {
            let file = dg_storage::open_regular(&bundle, dg_storage::Links::Follow)
                .map_err(|err| format!("{}: {err}", bundle.display()))?;
            let (signed, members) = inspect_unverified(std::io::BufReader::new(file), BundleLimits::default())
                .map_err(|err| err.to_string())?;
            println!("signature NOT verified (use `runpack verify --pubkey`): key {}", signed.signature.key_id);
            println!("{}", serde_json::to_string_pretty(&signed.descriptor).map_err(|err| err.to_string())?);
            println!("members: {}", members.keys().cloned().collect::<Vec<_>>().join(", "));
            Ok(ExitCode::SUCCESS)
        }
        RunpackCommand::Export { data, tenant, namespace, run_id, out } => {
            let (config, data, store) =
                crate::cli::bootstrap::open_existing_store(data.data_dir, data.config.as_deref())?;
            let (state, _) = store
                .get_run(Scope::new(tenant, namespace), &run_id)
                .map_err(|err| err.to_string())?
                .ok_or_else(|| format!("run not found: {tenant}/{namespace}/{run_id}"))?;
            let spec = store
                .get_scenario(Scope::new(tenant, namespace), &state.scenario_id)
                .map_err(|err| err.to_string())?
                .or(store.get_scenario(Scope::new(0, namespace), &state.scenario_id).map_err(|err| err.to_string())?)
                .ok_or_else(|| format!("scenario {} is not defined", state.scenario_id))?
                .spec;
            let options = ExportOptions {
                generated_at: Timestamp::UnixMillis(dg_storage::now_ms()),
                include_verification: true,
                anchor_policy: None,
                security: Some(RunpackSecurity { dev_permissive: false, namespace_authority: "dg_registry".into() }),
            };
            let pack = build_runpack(&spec, &state, &options).map_err(|err| err.to_string())?;
            // The keys `[signing]` names (the key file, or the token's key through the
            // helper), found, never made: the CLI mints no key.
            let keys =
                crate::cli::bootstrap::open_keys(&config, &data, crate::cli::bootstrap::KeyOpening::ExistingOnly)?;
            let bytes = build_bundle(
                "manifest.json",
                &pack.manifest_bytes,
                &pack.files,
                &keys.active().map_err(|err| err.to_string())?,
            )
            .map_err(|err| err.to_string())?;
            datadir::write_private(&out, &bytes).map_err(|err| err.to_string())?;
            println!(
                "wrote {} ({} bytes, root hash {})",
                out.display(),
                bytes.len(),
                pack.manifest.integrity.root_hash.value
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `keys show-public`: the public key ring.
///
/// # Errors
/// A message for the operator.
pub fn show_public(dir: Option<std::path::PathBuf>) -> Result<ExitCode, String> {
    // Read only: the ring is published whatever holds the private keys, and whichever
    // backend holds the state (a PostgreSQL node's data directory has no state.db).
    let root = dir.unwrap_or_else(datadir::default_root);
    let path = root.join("keys/keyring.json");
    if !path.exists() {
        return Err(format!("no appliance key ring at {}", path.display()));
    }
    let ring = dg_storage::signing::PublicKeyRing::load(&path).map_err(|err| err.to_string())?;
    println!("{}", serde_json::to_string_pretty(&ring).map_err(|err| err.to_string())?);
    Ok(ExitCode::SUCCESS)
}
