//! Backups an operator carries on a USB stick: a consistent online snapshot of the
//! database, the runpacks, the public key ring, the audit witness and the config (private
//! keys only on request, encrypted with a passphrase), packed as `.tar.zst` split into
//! parts below 4 GiB (FAT32), described by a signed index (`backup.json`) that lists
//! every part and every member with its size and sha256.
//!
//! - [`create`]: snapshot, pack, sign, then verify again from the target before success;
//! - [`verify`]: every part, every member, the signature, and an integrity check of the
//!   embedded database, with nothing but the backup and a public key ring;
//! - [`restore`]: unpack into a staging directory beside the data directory, verify
//!   everything, then swap it in atomically (the previous directory survives any crash).

mod create;
mod restore;
mod verify;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use create::{create, BackupSources, CreateOptions, StateSource};
pub use restore::{lock_data_dir, restore, restore_into, RestoreOptions, LOCK_NAME};
pub use verify::{verify, BackupReport};

/// Format name of the index.
pub const BACKUP_FORMAT: &str = "dg-backup-v1";
/// The signed index file in every backup directory.
pub const INDEX_NAME: &str = "backup.json";
/// Domain separator of index signatures.
const SIGNATURE_CONTEXT: &[u8] = b"dg-backup-v1\n";
/// Largest part by default: below FAT32's 4 GiB file limit.
pub const DEFAULT_PART_SIZE: u64 = 4 * 1024 * 1024 * 1024 - 64 * 1024 * 1024;
/// Member holding the encrypted private keys.
pub const SECRETS_MEMBER: &str = "secrets.tar.sealed";
/// The secrets member of backups made before the crypto seam (age, scrypt): read by the
/// standard build only.
pub const LEGACY_SECRETS_MEMBER: &str = "secrets.tar.age";

/// One member of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Path inside the archive.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256, hex.
    pub sha256: String,
}

/// One part file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// File name beside the index.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256, hex.
    pub sha256: String,
}

/// What the index signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexBody {
    /// [`BACKUP_FORMAT`].
    pub format: String,
    /// Random id of this backup.
    pub backup_id: String,
    /// The source appliance's database instance id.
    pub instance_id: String,
    /// The database schema version.
    pub schema_version: i64,
    /// Creation time (unix ms).
    pub created_at_ms: i64,
    /// Every member, in archive order.
    pub members: Vec<Member>,
    /// Every part, in order.
    pub parts: Vec<Part>,
    /// Whether private keys are included (encrypted).
    pub includes_secrets: bool,
    /// Signing key id.
    pub key_id: String,
    /// The backend the state was snapshotted from when it was not the SQLite database
    /// (`postgres`); absent in backups of a SQLite data directory, whose index is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_backend: Option<String>,
}

/// The signed index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// What is signed.
    #[serde(flatten)]
    pub body: IndexBody,
    /// Hex Ed25519 signature over the context and the body's canonical JSON.
    pub signature: String,
}

impl IndexBody {
    /// The signed message.
    ///
    /// # Errors
    /// Canonicalization errors.
    pub fn message(&self) -> Result<Vec<u8>, BackupError> {
        let mut message = SIGNATURE_CONTEXT.to_vec();
        message.extend(dg_engine::canonical_json_bytes(self).map_err(|err| BackupError::Corrupt(err.to_string()))?);
        Ok(message)
    }

    /// Signs the body.
    ///
    /// # Errors
    /// Canonicalization errors; the key's token failed.
    pub fn sign(self, key: &crate::signing::ActiveKey) -> Result<Index, BackupError> {
        let signature = key.sign_hex(&self.message()?).map_err(|err| BackupError::Signing(err.to_string()))?;
        Ok(Index { body: self, signature })
    }
}

/// Why a backup could not be made, verified or restored. Each verification failure class
/// has its own exit code in the CLI.
#[derive(Debug, Error)]
pub enum BackupError {
    /// Bytes differ from what the signed index says, or the signature does not verify.
    #[error("backup is corrupt: {0}")]
    Corrupt(String),
    /// Signed by a key that is not in the given key ring.
    #[error("backup is signed by key {0}, which is not in the given public key ring")]
    WrongKey(String),
    /// Parts are missing.
    #[error("backup set is incomplete: {0}")]
    Incomplete(String),
    /// A file could not be read at all (not a backup, permissions, I/O).
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// File.
        path: PathBuf,
        /// Cause.
        reason: String,
    },
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot of the database failed.
    #[error("database snapshot failed: {0}")]
    Snapshot(String),
    /// The signing key could not sign (its token failed).
    #[error("cannot sign the backup: {0}")]
    Signing(String),
    /// The passphrase does not open the secrets, or none was given.
    #[error("secrets: {0}")]
    Secrets(String),
    /// The restore target is in use or would be overwritten.
    #[error("refusing to restore: {0}")]
    Refused(String),
    /// The restored state could not be written into the configured database.
    #[error("the target database: {0}")]
    Target(String),
}

impl BackupError {
    /// The CLI exit code for this failure class.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Corrupt(_) => 10,
            Self::WrongKey(_) => 11,
            Self::Incomplete(_) => 12,
            Self::Unreadable { .. } => 13,
            Self::Secrets(_) => 14,
            Self::Refused(_) => 15,
            Self::Write { .. } | Self::Snapshot(_) | Self::Signing(_) | Self::Target(_) => 16,
        }
    }
}

pub(crate) fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Write { path: path.to_path_buf(), source }
}

pub(crate) fn unreadable(path: &Path, reason: impl std::fmt::Display) -> BackupError {
    BackupError::Unreadable { path: path.to_path_buf(), reason: reason.to_string() }
}

/// The backup directory for a path given by the operator: the directory itself or the
/// directory of its `backup.json`.
#[must_use]
pub fn backup_dir(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }
}

/// Deletes all but the newest `keep` backups in `dir` (by their signed creation time);
/// returns the removed directories. Unfinished (`.partial`) backups are removed too.
///
/// # Errors
/// Filesystem errors.
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, BackupError> {
    let mut found = Vec::new();
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|err| unreadable(dir, err))? {
        let path = entry.map_err(|err| unreadable(dir, err))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if !name.starts_with("dg-backup-") || !path.is_dir() {
            continue;
        }
        if name.ends_with(".partial") {
            std::fs::remove_dir_all(&path).map_err(write_error(&path))?;
            removed.push(path);
            continue;
        }
        let index: Option<Index> =
            crate::fsutil::read_bounded(&path.join(INDEX_NAME), 16 * 1024 * 1024, crate::fsutil::Links::Refuse)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if let Some(index) = index {
            found.push((index.body.created_at_ms, path));
        }
    }
    found.sort();
    let excess = found.len().saturating_sub(keep);
    for (_, path) in found.into_iter().take(excess) {
        std::fs::remove_dir_all(&path).map_err(write_error(&path))?;
        removed.push(path);
    }
    Ok(removed)
}
