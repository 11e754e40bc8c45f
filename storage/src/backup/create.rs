//! Making a backup while the appliance serves: snapshot, pack, sign, re-verify.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use dg_crypto::Sha256;
use rusqlite::{Connection, OpenFlags};

use super::verify::{verify, BackupReport};
use super::{unreadable, write_error, BackupError, IndexBody, Member, Part, BACKUP_FORMAT, INDEX_NAME, SECRETS_MEMBER};
use crate::seam::StateStore;
use crate::signing::{ActiveKey, PublicKeyRing};
use crate::store::{Store, StoreLimits};

/// Where the backup's state comes from.
#[derive(Clone, Copy)]
pub enum StateSource<'a> {
    /// The live SQLite database file (snapshotted online with `VACUUM INTO`).
    Sqlite(&'a Path),
    /// Any other backend (PostgreSQL): one consistent snapshot of it copied into a new
    /// SQLite database (`copy::snapshot_store`), so that every backup holds the same portable
    /// `state.db`, verifiable offline and restorable into either backend.
    Store(&'a dyn StateStore),
}

impl std::fmt::Debug for StateSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Store(store) => f.debug_tuple("Store").field(&store.instance_id()).finish(),
        }
    }
}

/// What goes into a backup, read from the data directory.
#[derive(Debug, Clone)]
pub struct BackupSources<'a> {
    /// The state: the SQLite database or a snapshot of another backend.
    pub database: StateSource<'a>,
    /// The runpack tree (may not exist yet).
    pub runpacks: PathBuf,
    /// The public key ring.
    pub keyring: PathBuf,
    /// The audit witness file, when it exists.
    pub witness: Option<PathBuf>,
    /// The configuration in force (TOML text).
    pub config: Vec<u8>,
    /// Private files (archive name, source) packed only with a passphrase.
    pub secrets: Vec<(String, PathBuf)>,
}

/// How to make it.
pub struct CreateOptions<'a> {
    /// Largest part file.
    pub part_size: u64,
    /// Encrypts and includes the private files when set.
    pub passphrase: Option<String>,
    /// Called with the bytes read from the sources so far (progress bars).
    pub progress: Option<&'a dyn Fn(u64)>,
}

/// Splits the compressed stream into part files of at most `part_size` bytes, hashing
/// each and fsyncing it when it is full.
struct PartWriter {
    dir: PathBuf,
    part_size: u64,
    current: Option<(File, Sha256, u64, String)>,
    done: Vec<Part>,
}

impl PartWriter {
    fn finish_current(&mut self) -> std::io::Result<()> {
        if let Some((file, hasher, size, name)) = self.current.take() {
            file.sync_all()?;
            self.done.push(Part { name, size, sha256: hex::encode(hasher.finalize()) });
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<Vec<Part>> {
        if self.current.is_none() && self.done.is_empty() {
            self.open_next()?;
        }
        self.finish_current()?;
        Ok(self.done)
    }

    fn open_next(&mut self) -> std::io::Result<()> {
        let name = format!("part-{:03}.tar.zst", self.done.len());
        let file = File::create(self.dir.join(&name))?;
        self.current = Some((file, Sha256::new(), 0, name));
        Ok(())
    }
}

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.current.as_ref().is_some_and(|(_, _, size, _)| *size >= self.part_size) {
            self.finish_current()?;
        }
        if self.current.is_none() {
            self.open_next()?;
        }
        let Some((file, hasher, size, _)) = self.current.as_mut() else { return Ok(0) };
        let room = usize::try_from(self.part_size - *size).unwrap_or(usize::MAX);
        let written = file.write(&buf[..buf.len().min(room)])?;
        hasher.update(&buf[..written]);
        *size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.current.as_mut() {
            Some((file, ..)) => file.flush(),
            None => Ok(()),
        }
    }
}

/// Hashes and counts what passes through.
struct HashingReader<'a, R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    progress: Option<&'a dyn Fn(u64)>,
    base: u64,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if let Some(progress) = self.progress {
            progress(self.base + self.count);
        }
        Ok(n)
    }
}

/// A member's source.
enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// Takes a consistent snapshot of the live database beside the backup and checks it.
fn snapshot(database: &Path, target: &Path) -> Result<(String, i64), BackupError> {
    let snap = |err: rusqlite::Error| BackupError::Snapshot(err.to_string());
    let conn = Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(snap)?;
    conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(snap)?;
    let escaped = target.to_string_lossy().replace('\'', "''");
    conn.execute_batch(&format!("VACUUM INTO '{escaped}'")).map_err(snap)?;
    drop(conn);
    File::open(target).and_then(|f| f.sync_all()).map_err(write_error(target))?;
    check_snapshot(target)
}

/// The snapshot's integrity check, instance id and schema version.
fn check_snapshot(target: &Path) -> Result<(String, i64), BackupError> {
    let snap = |err: rusqlite::Error| BackupError::Snapshot(err.to_string());
    let copy = Connection::open_with_flags(target, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(snap)?;
    let check: String = copy.query_row("PRAGMA integrity_check", [], |row| row.get(0)).map_err(snap)?;
    if check != "ok" {
        return Err(BackupError::Snapshot(format!("integrity_check of the snapshot: {check}")));
    }
    copy.query_row("SELECT instance_id, version FROM store_meta", [], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(snap)
}

/// Copies one consistent snapshot of `store` into a new SQLite database at `target`, checked
/// on arrival, with the source's instance id; then as [`snapshot`].
fn snapshot_of_store(
    store: &dyn StateStore,
    target: &Path,
    ring: &PublicKeyRing,
) -> Result<(String, i64), BackupError> {
    let snap = |err: crate::error::StoreError| BackupError::Snapshot(err.to_string());
    let copy = Store::open(target, StoreLimits::default()).map_err(snap)?;
    let copied = crate::copy::snapshot_store(store, &copy, ring);
    copy.close();
    drop(copy);
    copied.map_err(snap)?;
    let conn = Connection::open(target).map_err(|err| BackupError::Snapshot(err.to_string()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(|err| BackupError::Snapshot(err.to_string()))?;
    conn.execute("UPDATE store_meta SET instance_id = ?1", [store.instance_id()])
        .map_err(|err| BackupError::Snapshot(err.to_string()))?;
    // One file: the write-ahead log folded in and removed, as `VACUUM INTO` leaves it.
    conn.pragma_update(None, "journal_mode", "DELETE").map_err(|err| BackupError::Snapshot(err.to_string()))?;
    drop(conn);
    File::open(target).and_then(|f| f.sync_all()).map_err(write_error(target))?;
    check_snapshot(target)
}

/// Every regular file under `root`, sorted, as (archive path, source); anything else is
/// refused (the runpack store never writes links or special files).
fn walk(root: &Path, prefix: &str, out: &mut Vec<(String, Source)>) -> Result<(), BackupError> {
    if !root.exists() {
        return Ok(());
    }
    let mut entries: Vec<_> = fs::read_dir(root)
        .map_err(|err| unreadable(root, err))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|err| unreadable(root, err))?;
    entries.sort();
    for path in entries {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if crate::runpack_store::is_write_leftover(&name) {
            // An interrupted export's staging or replaced copy: never part of a runpack.
            continue;
        }
        let meta = fs::symlink_metadata(&path).map_err(|err| unreadable(&path, err))?;
        let member = format!("{prefix}/{name}");
        if meta.is_dir() {
            walk(&path, &member, out)?;
        } else if meta.is_file() {
            out.push((member, Source::File(path)));
        } else {
            return Err(unreadable(&path, "not a regular file or directory; refusing to back it up"));
        }
    }
    Ok(())
}

/// Packs the private files into a tar sealed with the passphrase (AES-256-GCM, PBKDF2:
/// [`dg_crypto::seal`], the same format in the standard and the FIPS build).
fn encrypted_secrets(secrets: &[(String, PathBuf)], passphrase: &str) -> Result<Vec<u8>, BackupError> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, path) in secrets {
        let bytes = fs::read(path).map_err(|err| unreadable(path, err))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .map_err(|err| BackupError::Secrets(err.to_string()))?;
    }
    let plain = builder.into_inner().map_err(|err| BackupError::Secrets(err.to_string()))?;
    dg_crypto::seal(passphrase.as_bytes(), &plain, dg_crypto::DEFAULT_ITERATIONS)
        .map_err(|err| BackupError::Secrets(err.to_string()))
}

/// Makes a backup under `to` while the appliance may keep writing, verifies it from the
/// target, and returns its directory and report.
///
/// # Errors
/// [`BackupError`] for snapshot, read, write or verification failures. A failed backup
/// leaves nothing behind; a backup killed mid-write leaves a `.partial` directory, which
/// `prune` removes.
pub fn create(
    sources: &BackupSources<'_>,
    to: &Path,
    key: &ActiveKey,
    ring: &PublicKeyRing,
    options: &CreateOptions<'_>,
) -> Result<(PathBuf, BackupReport), BackupError> {
    fs::create_dir_all(to).map_err(write_error(to))?;
    let created_at_ms = crate::clock::now_ms();
    let backup_id = format!("{:016x}", dg_crypto::random_u64());
    let partial = to.join(format!("dg-backup-{created_at_ms}-{backup_id}.partial"));
    fs::create_dir(&partial).map_err(write_error(&partial))?;
    match fill(sources, &partial, key, ring, options, created_at_ms, &backup_id) {
        Ok(report) => {
            let done = to.join(format!("dg-backup-{created_at_ms}-{backup_id}"));
            fs::rename(&partial, &done).map_err(write_error(&done))?;
            File::open(to).and_then(|d| d.sync_all()).map_err(write_error(to))?;
            Ok((done, report))
        }
        Err(err) => {
            // A failed backup leaves nothing behind (prune would remove it, but an operator
            // should not find a half-written backup beside the good ones).
            let _ = fs::remove_dir_all(&partial);
            Err(err)
        }
    }
}

/// Writes the parts and the signed index into `partial` and verifies them from there.
fn fill(
    sources: &BackupSources<'_>,
    partial: &Path,
    key: &ActiveKey,
    ring: &PublicKeyRing,
    options: &CreateOptions<'_>,
    created_at_ms: i64,
    backup_id: &str,
) -> Result<BackupReport, BackupError> {
    let snapshot_path = partial.join(".snapshot.db");
    let (instance_id, schema_version) = match sources.database {
        StateSource::Sqlite(path) => snapshot(path, &snapshot_path)?,
        StateSource::Store(store) => snapshot_of_store(store, &snapshot_path, ring)?,
    };
    let source_backend = match sources.database {
        StateSource::Sqlite(_) => None,
        StateSource::Store(store) => Some(if store.as_sqlite().is_some() { "sqlite" } else { "postgres" }.to_string()),
    };

    let mut members: Vec<(String, Source)> = vec![("state.db".into(), Source::File(snapshot_path.clone()))];
    walk(&sources.runpacks, "runpacks", &mut members)?;
    if sources.keyring.exists() {
        members.push(("keys/keyring.json".into(), Source::File(sources.keyring.clone())));
    }
    if let Some(witness) = sources.witness.as_ref().filter(|w| w.exists()) {
        members.push(("state.db.audit-head.json".into(), Source::File(witness.clone())));
    }
    members.push(("config.toml".into(), Source::Bytes(sources.config.clone())));
    if let Some(passphrase) = &options.passphrase {
        members.push((SECRETS_MEMBER.into(), Source::Bytes(encrypted_secrets(&sources.secrets, passphrase)?)));
    }

    let parts = PartWriter {
        dir: partial.to_path_buf(),
        part_size: options.part_size.max(4096),
        current: None,
        done: Vec::new(),
    };
    let encoder = zstd::Encoder::new(parts, 3).map_err(write_error(partial))?;
    let mut builder = tar::Builder::new(encoder);
    let mut listed = Vec::with_capacity(members.len());
    let mut total = 0u64;
    for (name, source) in members {
        let (size, reader): (u64, Box<dyn Read>) = match source {
            Source::File(path) => {
                let file = File::open(&path).map_err(|err| unreadable(&path, err))?;
                let size = file.metadata().map_err(|err| unreadable(&path, err))?.len();
                (size, Box::new(file.take(size)))
            }
            Source::Bytes(bytes) => (bytes.len() as u64, Box::new(std::io::Cursor::new(bytes))),
        };
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o600);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut hashing =
            HashingReader { inner: reader, hasher: Sha256::new(), count: 0, progress: options.progress, base: total };
        builder.append_data(&mut header, &name, &mut hashing).map_err(write_error(partial))?;
        if hashing.count != size {
            return Err(unreadable(Path::new(&name), "the file changed size while it was backed up"));
        }
        total += size;
        listed.push(Member { path: name, size, sha256: hex::encode(hashing.hasher.finalize()) });
    }
    let encoder = builder.into_inner().map_err(write_error(partial))?;
    let parts = encoder.finish().map_err(write_error(partial))?.finish().map_err(write_error(partial))?;
    fs::remove_file(&snapshot_path).map_err(write_error(&snapshot_path))?;

    let body = IndexBody {
        format: BACKUP_FORMAT.into(),
        backup_id: backup_id.to_string(),
        instance_id,
        schema_version,
        created_at_ms,
        members: listed,
        parts,
        includes_secrets: options.passphrase.is_some(),
        key_id: key.key_id.clone(),
        source_backend,
    };
    let index = body.sign(key)?;
    let json = serde_json::to_vec_pretty(&index).map_err(|err| BackupError::Corrupt(err.to_string()))?;
    let index_path = partial.join(INDEX_NAME);
    crate::fsutil::write_atomic(&index_path, &json, 0o600).map_err(write_error(&index_path))?;

    // Re-read everything from the target before calling it a backup.
    verify(partial, ring, options.passphrase.as_deref())
}
