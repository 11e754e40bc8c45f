//! Restoring into a stopped appliance: unpack and verify into a staging directory beside
//! the data directory, then swap the two atomically (`renameat2(RENAME_EXCHANGE)`). Until
//! the swap the data directory is untouched; after it the new directory is complete and
//! verified, and the previous one is kept until the new database opens.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, RenameFlags, CWD};

use super::verify::{check, write_private, BackupReport};
use super::{write_error, BackupError};
use crate::copy::{copy_store, CopyReport};
use crate::error::StoreError;
use crate::seam::StateStore;
use crate::signing::PublicKeyRing;
use crate::store::{Store, StoreLimits};

/// Name of the lock file a serving appliance holds in its data directory.
pub const LOCK_NAME: &str = "serve.lock";

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Replace an existing data directory.
    pub force: bool,
    /// Opens the encrypted private keys (without it they are not restored and the
    /// appliance makes a new signing key; old public keys stay in the ring).
    pub passphrase: Option<String>,
    /// Test hook for the crash tests: stop (sleep) at this step
    /// (`extracting`, `staged`, `exchanged`) so the test can SIGKILL the process there.
    pub pause_at: Option<String>,
}

/// Takes the data directory's exclusive lock (held by `serve` while it runs).
///
/// # Errors
/// [`BackupError::Refused`] when another process holds it.
pub fn lock_data_dir(dir: &Path) -> Result<File, BackupError> {
    let path = dir.join(LOCK_NAME);
    let file =
        fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(write_error(&path))?;
    rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        BackupError::Refused(format!("{} is in use by a running appliance; stop it first", dir.display()))
    })?;
    Ok(file)
}

fn sync_dir(path: &Path) -> Result<(), BackupError> {
    File::open(path).and_then(|d| d.sync_all()).map_err(write_error(path))
}

/// fsyncs every directory of a tree (files were synced as they were written).
fn sync_tree(path: &Path) -> Result<(), BackupError> {
    for entry in fs::read_dir(path).map_err(write_error(path))? {
        let entry = entry.map_err(write_error(path))?;
        if entry.file_type().map_err(write_error(path))?.is_dir() {
            sync_tree(&entry.path())?;
        }
    }
    sync_dir(path)
}

fn pause(options: &RestoreOptions, step: &str) {
    if options.pause_at.as_deref() == Some(step) {
        eprintln!("restore: paused at {step}");
        std::thread::sleep(std::time::Duration::from_secs(120));
    }
}

/// Restores `backup` into `data_dir` (which the appliance must not be serving).
///
/// # Errors
/// Every verification error of [`super::verify`], [`BackupError::Refused`] for a running
/// appliance or an existing directory without `force`, and write errors. In every case
/// the existing data directory is left as it was.
pub fn restore(
    backup: &Path,
    ring: &PublicKeyRing,
    data_dir: &Path,
    options: &RestoreOptions,
) -> Result<BackupReport, BackupError> {
    let parent = data_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| BackupError::Refused(format!("{} is not a directory path", data_dir.display())))?;
    // A link as the target would be replaced by the restored directory (the link itself,
    // not where it points): refuse it, and say what to pass instead.
    if fs::symlink_metadata(data_dir).is_ok_and(|meta| meta.file_type().is_symlink()) {
        let real = fs::canonicalize(data_dir).map(|p| p.display().to_string()).unwrap_or_else(|_| "?".into());
        return Err(BackupError::Refused(format!(
            "{} is a symbolic link (to {real}); restore into the real directory: --data-dir {real}",
            data_dir.display()
        )));
    }
    let exists = data_dir.exists();
    let _lock = if exists {
        if !options.force {
            return Err(BackupError::Refused(format!("{} exists; pass --force to replace it", data_dir.display())));
        }
        Some(lock_data_dir(data_dir)?)
    } else {
        fs::create_dir_all(&parent).map_err(write_error(&parent))?;
        None
    };
    recover_leftovers(&parent, &name)?;
    let staging = parent.join(format!(".{name}.restore-{:016x}", dg_crypto::random_u64()));
    fs::create_dir(&staging).map_err(write_error(&staging))?;
    write_private(&staging.join(STAGING_MARKER), b"an unfinished restore; safe to delete\n")?;
    let report = match check(backup, ring, options.passphrase.as_deref(), Some(&staging), &|step| pause(options, step))
    {
        Ok(report) => report,
        Err(err) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(err);
        }
    };
    for private in ["keys", "tls"] {
        let dir = staging.join(private);
        if dir.exists() {
            fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(write_error(&dir))?;
        }
    }
    fs::set_permissions(&staging, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(write_error(&staging))?;
    sync_tree(&staging)?;
    pause(options, "staged");

    if !exists {
        fs::rename(&staging, data_dir).map_err(write_error(data_dir))?;
        sync_dir(&parent)?;
        remove_marker(data_dir)?;
        open_check(data_dir)?;
        return Ok(report);
    }
    // The commit point: one atomic exchange of the two directories.
    rustix::fs::renameat_with(CWD, &staging, CWD, data_dir, RenameFlags::EXCHANGE)
        .map_err(|err| BackupError::Write { path: data_dir.to_path_buf(), source: err.into() })?;
    sync_dir(&parent)?;
    remove_marker(data_dir)?;
    pause(options, "exchanged");
    let previous: PathBuf = parent.join(format!(".{name}.pre-restore-{}", crate::clock::now_ms()));
    fs::rename(&staging, &previous).map_err(write_error(&previous))?;
    sync_dir(&parent)?;
    if let Err(err) = open_check(data_dir) {
        // Put the previous directory back.
        let failed = parent.join(format!(".{name}.restore-failed-{:016x}", dg_crypto::random_u64()));
        rustix::fs::renameat_with(CWD, &previous, CWD, data_dir, RenameFlags::EXCHANGE)
            .map_err(|e| BackupError::Write { path: data_dir.to_path_buf(), source: e.into() })?;
        let _ = fs::rename(&previous, &failed);
        sync_dir(&parent)?;
        return Err(err);
    }
    fs::remove_dir_all(&previous).map_err(write_error(&previous))?;
    sync_dir(&parent)?;
    Ok(report)
}

/// Restores `backup` as [`restore`] does (the node's data directory: keys, runpacks,
/// configuration), then moves its state into `target`, another backend such as the
/// PostgreSQL database of a scale-out deployment: copied with every document hash, the audit
/// chain and the counts verified on arrival (`copy::copy_store`). The restored `state.db` is
/// then removed from the data directory, so that the node holds no second, stale copy of the
/// state.
///
/// # Errors
/// [`BackupError::Refused`] before anything is touched when `target` is not empty (restore
/// only into a new, migrated database); every error of [`restore`]; [`BackupError::Target`]
/// when the copy fails (the data directory is restored, `state.db` kept in it; drop the
/// target database, make a new one, and restore again).
pub fn restore_into(
    backup: &Path,
    ring: &PublicKeyRing,
    data_dir: &Path,
    options: &RestoreOptions,
    target: &dyn StateStore,
) -> Result<(BackupReport, CopyReport), BackupError> {
    let target_error = |err: StoreError| BackupError::Target(err.to_string());
    if !target.is_empty_store().map_err(target_error)? {
        return Err(BackupError::Refused(
            "the target database is not empty: restore only into a new database (`store migrate` on it, and no node \
             started)"
                .into(),
        ));
    }
    let report = restore(backup, ring, data_dir, options)?;
    let database = data_dir.join("state.db");
    let restored = Store::open(&database, StoreLimits::default())
        .map_err(|err| BackupError::Corrupt(format!("restored database does not open: {err}")))?;
    let witness = restored.audit_witness_path();
    let copied = copy_store(&restored, target, ring);
    restored.close();
    let copied = copied.map_err(target_error)?;
    let beside = |suffix: &str| PathBuf::from(format!("{}{suffix}", database.display()));
    for leftover in [beside("-wal"), beside("-shm"), witness, database.clone()] {
        match fs::remove_file(&leftover) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(write_error(&leftover)(err)),
            _ => {}
        }
    }
    sync_dir(data_dir)?;
    Ok((report, copied))
}

/// Marks a staging directory; it leaves with the exchange, so a `.restore-*` directory
/// without it holds a previous data directory.
const STAGING_MARKER: &str = ".dg-restore-staging";

fn remove_marker(dir: &Path) -> Result<(), BackupError> {
    let marker = dir.join(STAGING_MARKER);
    if marker.exists() {
        fs::remove_file(&marker).map_err(write_error(&marker))?;
        sync_dir(dir)?;
    }
    Ok(())
}

/// Deals with what an interrupted restore left beside the data directory: an unfinished
/// staging directory (marked) is deleted; a previous data directory moved aside at the
/// exchange (unmarked) is kept under a `.pre-restore-` name for the operator.
fn recover_leftovers(parent: &Path, name: &str) -> Result<(), BackupError> {
    for entry in fs::read_dir(parent).map_err(write_error(parent))?.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&format!(".{name}.restore-")) {
            continue;
        }
        let path = entry.path();
        if path.join(STAGING_MARKER).exists() {
            fs::remove_dir_all(&path).map_err(write_error(&path))?;
        } else {
            let kept = parent.join(format!(".{name}.pre-restore-{}", crate::clock::now_ms()));
            fs::rename(&path, &kept).map_err(write_error(&kept))?;
            eprintln!("restore: kept the previous data directory of an interrupted restore at {}", kept.display());
        }
    }
    sync_dir(parent)
}

/// Opens the restored database and checks every document.
fn open_check(data_dir: &Path) -> Result<(), BackupError> {
    let store = Store::open(&data_dir.join("state.db"), StoreLimits::default())
        .map_err(|err| BackupError::Corrupt(format!("restored database does not open: {err}")))?;
    let report = store.check().map_err(|err| BackupError::Corrupt(err.to_string()))?;
    store.close();
    if !report.ok() {
        return Err(BackupError::Corrupt(format!("restored database fails store check: {:?}", report.failures)));
    }
    Ok(())
}
