//! `dg-appliance backup create|verify|restore|prune`: the operator's USB runbook
//! (docs/backup-and-restore.md). Creation and restore are recorded in the audit log.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use dg_storage::backup::{self, BackupError, BackupSources, CreateOptions, RestoreOptions, StateSource};
use dg_storage::signing::PublicKeyRing;

use crate::cli::{BackupCommand, DataDirArgs, PassphraseArgs};

fn read_passphrase(args: &PassphraseArgs) -> Result<Option<String>, String> {
    if let Some(path) = &args.passphrase_file {
        let text = dg_storage::read_text_bounded(path, 64 * 1024, dg_storage::Links::Follow)
            .map_err(|err| format!("{}: {err}", path.display()))?;
        let line = text.lines().next().unwrap_or_default().to_string();
        if line.is_empty() {
            return Err(format!("{}: the passphrase is empty", path.display()));
        }
        return Ok(Some(line));
    }
    Ok(std::env::var("DG_BACKUP_PASSPHRASE").ok().filter(|p| !p.is_empty()))
}

fn read_ring(path: &Path) -> Result<PublicKeyRing, BackupError> {
    PublicKeyRing::load(path)
        .map_err(|err| BackupError::Unreadable { path: path.to_path_buf(), reason: err.to_string() })
}

/// Prints a failure with its class and returns its exit code.
fn failed(err: &BackupError) -> ExitCode {
    eprintln!("dg-appliance backup: {err}");
    ExitCode::from(err.exit_code())
}

/// Records a backup or restore in the store's audit log.
fn audit(store: &dyn dg_storage::StateStore, action: &str, outcome: &str, reason: String) -> Result<(), String> {
    let event = crate::cli::bootstrap::cli_event(action, "data_directory", outcome, reason);
    store.append_audit(vec![event], Vec::new()).map(|_| ()).map_err(|err| format!("audit log: {err}"))
}

fn create(
    data: &DataDirArgs,
    to: &Path,
    include_secrets: bool,
    passphrase: &PassphraseArgs,
    part_size: Option<u64>,
) -> Result<ExitCode, String> {
    let passphrase = read_passphrase(passphrase)?;
    if include_secrets && passphrase.is_none() {
        return Err("--include-secrets needs --passphrase-file or DG_BACKUP_PASSPHRASE".into());
    }
    let (app, dir, _) = crate::cli::bootstrap::build_app(data)?;
    let root = dir.root.clone();
    let config = match &data.config {
        Some(path) => dg_storage::read_bounded(path, crate::config::MAX_CONFIG_BYTES, dg_storage::Links::Follow)
            .map_err(|err| format!("{}: {err}", path.display()))?,
        None => crate::config::DEFAULT_CONFIG.as_bytes().to_vec(),
    };
    let secrets = if include_secrets {
        ["keys/active.key", "tls/cert.pem", "tls/key.pem", "admin.key"]
            .iter()
            .map(|name| (name.to_string(), root.join(name)))
            .filter(|(_, path)| path.exists())
            .collect()
    } else {
        Vec::new()
    };
    let (database, witness) = match app.store.as_sqlite() {
        Some(sqlite) => (StateSource::Sqlite(sqlite.path()), Some(sqlite.audit_witness_path())),
        // The shared database: one consistent snapshot of it, as a portable SQLite state.db.
        None => (StateSource::Store(app.store.as_ref()), None),
    };
    let sources = BackupSources {
        database,
        runpacks: root.join("runpacks"),
        keyring: root.join("keys/keyring.json"),
        witness,
        config,
        secrets,
    };
    let key = app.keys.active().map_err(|err| err.to_string())?;
    let ring = app.keys.ring().map_err(|err| err.to_string())?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {bytes} backed up ({bytes_per_sec})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    });
    let progress = |bytes: u64| {
        if let Some(bar) = &bar {
            bar.set_position(bytes);
        }
    };
    let options = CreateOptions {
        part_size: part_size.unwrap_or(backup::DEFAULT_PART_SIZE),
        passphrase: include_secrets.then_some(passphrase).flatten(),
        progress: Some(&progress),
    };
    let outcome = backup::create(&sources, to, &key, &ring, &options);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let event = match &outcome {
        Ok((path, report)) => ("ok", format!("backup {} at {}", report.backup_id, path.display())),
        Err(err) => ("error", err.to_string()),
    };
    let audited = audit(app.store.as_ref(), "backup", event.0, event.1);
    // For the backup-age alert (dg_backup_last_success_timestamp_seconds).
    let recorded = if outcome.is_ok() { app.store.record_backup().map_err(|err| err.to_string()) } else { Ok(()) };
    app.store.close();
    recorded?;
    audited?;
    match outcome {
        Ok((path, report)) => {
            println!("{}", path.display());
            eprintln!(
                "backup verified: {} parts, {} members, {} bytes, database integrity {}",
                report.parts, report.members, report.bytes, report.database_integrity
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => Ok(failed(&err)),
    }
}

/// `backup restore`: into the data directory, and with a PostgreSQL configuration the state
/// on into that database.
fn restore(
    backup: &Path,
    data_dir: &Path,
    pubkey: &Path,
    config: Option<std::path::PathBuf>,
    options: &RestoreOptions,
) -> Result<ExitCode, String> {
    let settings = crate::config::load(config.as_deref()).map_err(|err| err.to_string())?;
    let target = match (&settings.storage.backend, &settings.storage.postgres) {
        (crate::storage_settings::StorageBackendKind::Postgres, Some(postgres)) => {
            let connect = postgres.connect_settings()?;
            let store = dg_storage::postgres::PgStore::open(&connect, dg_storage::StoreLimits::default())
                .map_err(|err| format!("[storage.postgres]: {err}"))?;
            Some(store)
        }
        _ => None,
    };
    let result = read_ring(pubkey).and_then(|ring| match &target {
        Some(store) => backup::restore_into(backup, &ring, data_dir, options, store).map(|(report, copied)| {
            eprintln!(
                "state copied into the configured PostgreSQL database: {} documents and {} audit entries verified on arrival",
                copied.documents_checked, copied.audit.entries
            );
            report
        }),
        None => backup::restore(backup, &ring, data_dir, options),
    });
    if let Some(store) = &target {
        dg_storage::StateStore::close(store);
    }
    match result {
        Ok(report) => {
            let data = DataDirArgs { data_dir: Some(data_dir.to_path_buf()), config };
            let (app, _, _) = crate::cli::bootstrap::build_app(&data)?;
            let reason = format!("restored backup {} of instance {}", report.backup_id, report.instance_id);
            let audited = audit(app.store.as_ref(), "restore", "ok", reason);
            app.store.close();
            audited?;
            println!("restored backup {} into {}", report.backup_id, data_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => Ok(failed(&err)),
    }
}

/// Runs a `backup` subcommand.
///
/// # Errors
/// A message for the operator (usage problems); verification failures are exit codes.
pub fn run(command: BackupCommand) -> Result<ExitCode, String> {
    match command {
        BackupCommand::Create { data, to, include_secrets, passphrase, part_size } => {
            create(&data, &to, include_secrets, &passphrase, part_size)
        }
        BackupCommand::Verify { backup, pubkey, passphrase, json } => {
            let passphrase = read_passphrase(&passphrase)?;
            let result = read_ring(&pubkey).and_then(|ring| backup::verify(&backup, &ring, passphrase.as_deref()));
            match result {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report).map_err(|err| err.to_string())?);
                    } else {
                        println!(
                            "backup {} of instance {}: VERIFIED ({} parts, {} members, {} bytes, signed by {}, database {})",
                            report.backup_id, report.instance_id, report.parts, report.members, report.bytes, report.key_id,
                            report.database_integrity
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    if json {
                        let kind = format!("{err:?}").split(['(', ' ', '{']).next().unwrap_or_default().to_lowercase();
                        println!(
                            "{}",
                            serde_json::json!({"verified": false, "error": kind, "message": err.to_string()})
                        );
                    }
                    Ok(failed(&err))
                }
            }
        }
        BackupCommand::Restore { backup, data_dir, pubkey, force, config, passphrase } => {
            let passphrase = read_passphrase(&passphrase)?;
            let pause_at = std::env::var("DG_RESTORE_PAUSE_AT").ok();
            let options = RestoreOptions { force, passphrase, pause_at };
            restore(&backup, &data_dir, &pubkey, config, &options)
        }
        BackupCommand::Prune { dir, keep } => match backup::prune(&dir, keep) {
            Ok(removed) => {
                for path in &removed {
                    println!("removed {}", path.display());
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => Ok(failed(&err)),
        },
    }
}
