//! `dg-appliance store check|list|show`: operator access to the state database.

use std::process::ExitCode;

use dg_storage::Scope;

use crate::cli::{StoreArgs, StoreCommand};
use crate::datadir::{self, DataDir};

fn open(args: &StoreArgs) -> Result<dg_storage::Store, String> {
    let root = args.data_dir.clone().unwrap_or_else(datadir::default_root);
    if !root.join("state.db").exists() {
        return Err(format!("no state database in {}", root.display()));
    }
    DataDir::prepare(root).and_then(|data| data.open_store()).map_err(|err| err.to_string())
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
            let root = args.data_dir.clone().unwrap_or_else(datadir::default_root);
            let store = DataDir::prepare(root).and_then(|data| data.open_store()).map_err(|err| err.to_string())?;
            let report = dg_storage::import::import_oss_database(
                &store,
                &from,
                Scope::new(source_tenant, source_namespace),
                Scope::new(tenant, namespace),
            )
            .map_err(|err| err.to_string())?;
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
