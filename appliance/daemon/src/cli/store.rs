//! `dg-appliance store check|list|show`: operator access to the state database.

use std::process::ExitCode;

use dg_storage::Scope;

use crate::cli::{StoreArgs, StoreCommand};
use crate::datadir::{self, DataDir};

fn open(args: &StoreArgs) -> Result<std::sync::Arc<dyn dg_storage::StateStore>, String> {
    let (_, _, store) = crate::cli::bootstrap::open_existing_store(args.data_dir.clone(), args.config.as_deref())?;
    Ok(store)
}

/// Runs a store subcommand.
///
/// # Errors
/// Message for the operator.
pub fn run(command: StoreCommand) -> Result<ExitCode, String> {
    match command {
        StoreCommand::Check(args) => {
            let store = open(&args)?;
            let report = store.check().map_err(|err| err.to_string())?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report).map_err(|err| err.to_string())?);
            } else {
                println!("integrity_check: {}", report.integrity_check.join("; "));
                println!("documents checked: {}", report.documents_checked);
                for failure in &report.failures {
                    println!("HASH MISMATCH: {failure}");
                }
                for drift in &report.usage_drift {
                    println!("USAGE DRIFT: {drift}");
                }
                println!("{}", if report.ok() { "store check: ok" } else { "store check: FAILED" });
            }
            Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        StoreCommand::Migrate(args) => migrate(&args),
        StoreCommand::Copy { from, to, pubkey, json } => copy(&from, &to, pubkey, json),
        StoreCommand::List(args) => {
            let store = open(&args)?;
            let runs = store.list_runs(None).map_err(|err| err.to_string())?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&runs).map_err(|err| err.to_string())?);
            } else {
                println!(
                    "{:<8} {:<10} {:<32} {:<24} {:<10} {:>7}",
                    "TENANT", "NAMESPACE", "RUN", "SCENARIO", "STATUS", "VERSION"
                );
                for run in runs {
                    println!(
                        "{:<8} {:<10} {:<32} {:<24} {:<10} {:>7}",
                        run.scope.tenant_id,
                        run.scope.namespace_id,
                        run.run_id,
                        run.scenario_id,
                        run.status,
                        run.version
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Import { store: args, from, source_tenant, source_namespace, tenant, namespace } => {
            if tenant == 0 || namespace == 0 {
                return Err("--tenant and --namespace must be at least 1".to_string());
            }
            // Into the configured backend: the data directory's SQLite store (made when new)
            // or the shared PostgreSQL database.
            let config = crate::config::load(args.config.as_deref()).map_err(|err| err.to_string())?;
            let root = args.data_dir.clone().unwrap_or_else(datadir::default_root);
            let data = DataDir::prepare(root).map_err(|err| err.to_string())?;
            let store = crate::cli::bootstrap::open_store(&config, &data)?;
            let report = dg_storage::import::import_oss_database(
                store.as_ref(),
                &from,
                Scope::new(source_tenant, source_namespace),
                Scope::new(tenant, namespace),
            );
            store.close();
            let report = report.map_err(|err| err.to_string())?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report).map_err(|err| err.to_string())?);
            } else {
                println!(
                    "imported {} runs ({} already present), {} data shapes ({} already present)",
                    report.runs_imported,
                    report.runs_already_present,
                    report.shapes_imported,
                    report.shapes_already_present
                );
                for refused in &report.refused {
                    println!("REFUSED: {refused}");
                }
                println!("scenarios are not part of an open-source database: define them again before advancing imported runs");
            }
            Ok(if report.refused.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        StoreCommand::Show { store: args, tenant, namespace, run_id } => {
            let store = open(&args)?;
            match store.get_run(Scope::new(tenant, namespace), &run_id).map_err(|err| err.to_string())? {
                Some((state, version)) => {
                    let text = serde_json::to_string_pretty(&state).map_err(|err| err.to_string())?;
                    if !args.json {
                        println!("version {version}");
                    }
                    println!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("run not found: {tenant}/{namespace}/{run_id}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// `store migrate`: the configured backend's schema brought to this build's version.
fn migrate(args: &crate::cli::DataDirArgs) -> Result<ExitCode, String> {
    use crate::storage_settings::StorageBackendKind;
    let config = crate::config::load(args.config.as_deref()).map_err(|err| err.to_string())?;
    match (config.storage.backend, &config.storage.postgres) {
        (StorageBackendKind::Postgres, Some(postgres)) => {
            let settings = postgres.connect_settings()?;
            let (before, now) = dg_storage::postgres::PgStore::migrate(&settings).map_err(|err| err.to_string())?;
            if before == now {
                println!("postgres schema: version {now}, current");
            } else {
                println!("postgres schema: version {before} -> {now}");
            }
        }
        _ => {
            let root = args.data_dir.clone().unwrap_or_else(datadir::default_root);
            let data = DataDir::prepare(root).map_err(|err| err.to_string())?;
            drop(data.open_store().map_err(|err| err.to_string())?);
            println!("sqlite schema: version {}, current", dg_storage::SCHEMA_VERSION);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A store named on the command line: `sqlite:DATA_DIR` or `postgres:CONFIG`; with the data
/// directory of a SQLite side (where its key ring is).
fn open_spec(spec: &str) -> Result<(std::sync::Arc<dyn dg_storage::StateStore>, Option<std::path::PathBuf>), String> {
    if let Some(dir) = spec.strip_prefix("sqlite:") {
        let root = std::path::PathBuf::from(dir);
        let data = DataDir::prepare(root.clone()).map_err(|err| err.to_string())?;
        return Ok((std::sync::Arc::new(data.open_store().map_err(|err| err.to_string())?), Some(root)));
    }
    if let Some(file) = spec.strip_prefix("postgres:") {
        let config = crate::config::load(Some(std::path::Path::new(file))).map_err(|err| err.to_string())?;
        let Some(postgres) = config.storage.postgres.as_ref() else {
            return Err(format!("{file} has no [storage.postgres] section"));
        };
        let settings = postgres.connect_settings()?;
        let store = dg_storage::postgres::PgStore::open(&settings, dg_storage::StoreLimits::default())
            .map_err(|err| format!("{file}: {err}"))?;
        return Ok((std::sync::Arc::new(store), None));
    }
    Err(format!("{spec}: say sqlite:DATA_DIR or postgres:CONFIG_FILE"))
}

/// `store copy`.
fn copy(from: &str, to: &str, pubkey: Option<std::path::PathBuf>, json: bool) -> Result<ExitCode, String> {
    let (source, source_dir) = open_spec(from)?;
    let (target, target_dir) = open_spec(to)?;
    let ring_path = pubkey
        .or_else(|| source_dir.or(target_dir).map(|dir| dir.join("keys/keyring.json")))
        .ok_or("--pubkey is needed when neither side is a data directory")?;
    let ring = dg_storage::signing::PublicKeyRing::load(&ring_path)
        .map_err(|err| format!("{}: {err}", ring_path.display()))?;
    let report = dg_storage::copy::copy_store(source.as_ref(), target.as_ref(), &ring);
    source.close();
    target.close();
    let report = report.map_err(|err| format!("store copy: {err}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|err| err.to_string())?);
    } else {
        for (kind, count) in &report.rows {
            println!("{kind}: {count}");
        }
        println!("documents checked on arrival: {}", report.documents_checked);
        println!(
            "audit chain on arrival: {} entries ({} pruned), {} signed checkpoints: VERIFIED",
            report.audit.entries, report.audit.pruned, report.audit.checkpoints
        );
        println!("store copy: ok");
    }
    Ok(ExitCode::SUCCESS)
}
