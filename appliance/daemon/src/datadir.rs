//! The data directory: created on first start (mode 0700) with the state database, a
//! self-signed TLS certificate for 127.0.0.1 and a first admin API key printed once.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use dg_storage::{ApiKeyRecord, Store, StoreError, StoreLimits};
use thiserror::Error;

use dg_identity::keys;

/// Layout of a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// Root.
    pub root: PathBuf,
}

/// Why the data directory could not be prepared.
#[derive(Debug, Error)]
pub enum DataDirError {
    /// Filesystem error.
    #[error("data directory {path}: {source}")]
    Io {
        /// Path concerned.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("cannot generate the TLS certificate: {0}")]
    Certificate(String),
    /// The state database failed to open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file or directory others could change or read, or a link where none belongs: the
    /// daemon refuses to start on it, as OpenSSH refuses a readable private key.
    #[error("unsafe data directory: {path} {problem}; {fix}")]
    Unsafe {
        /// Path concerned.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// What the operator should do.
        fix: String,
    },
}

/// The checks [`DataDir::check_safety`] makes, one per path: directories must not be
/// writable by group or others, secrets must not be readable by them, and none may be a
/// symbolic link (a link lets whoever can change it redirect the daemon's writes).
fn unsafe_entry(path: &Path, secret: bool) -> Option<DataDirError> {
    let meta = fs::symlink_metadata(path).ok()?;
    let unsafe_at =
        |problem: String, fix: String| Some(DataDirError::Unsafe { path: path.to_path_buf(), problem, fix });
    if meta.file_type().is_symlink() {
        let real = fs::canonicalize(path).map(|p| p.display().to_string()).unwrap_or_else(|_| "nowhere".into());
        return unsafe_at(
            format!("is a symbolic link (to {real})"),
            "use the real path (pass --data-dir with the real directory; a file inside it must not be a link)".into(),
        );
    }
    let mode = meta.permissions().mode() & 0o7777;
    if meta.is_dir() && mode & 0o022 != 0 {
        return unsafe_at(
            format!("is writable by group or others (mode {mode:04o})"),
            format!("run: chmod go-w {}", path.display()),
        );
    }
    if secret && mode & 0o077 != 0 {
        return unsafe_at(
            format!("holds a secret and is readable or writable by group or others (mode {mode:04o})"),
            format!("run: chmod 600 {}", path.display()),
        );
    }
    if !secret && !meta.is_dir() && mode & 0o022 != 0 {
        return unsafe_at(
            format!("is writable by group or others (mode {mode:04o})"),
            format!("run: chmod go-w {}", path.display()),
        );
    }
    None
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io { path: path.to_path_buf(), source }
}

/// Default location: `$STATE_DIRECTORY` under systemd, else `./dg-data`.
#[must_use]
pub fn default_root() -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("dg-data"),
    }
}

/// Writes a file that only the owner may read, atomically (temp + fsync + rename).
///
/// # Errors
/// Filesystem errors.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), DataDirError> {
    dg_storage::write_atomic(path, contents, 0o600).map_err(io(path))
}

impl DataDir {
    /// Creates the directory tree if needed (0700).
    ///
    /// # Errors
    /// Filesystem errors.
    pub fn prepare(root: PathBuf) -> Result<Self, DataDirError> {
        for dir in [root.clone(), root.join("tls"), root.join("runpacks")] {
            // symlink_metadata: a dangling link is not "missing" (creating through it
            // would follow it); the safety check below names it.
            if fs::symlink_metadata(&dir).is_err() {
                fs::create_dir_all(&dir).map_err(io(&dir))?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
            }
        }
        let data = Self { root };
        data.check_safety()?;
        Ok(data)
    }

    /// Refuses a data directory that others could change or read: the directory and its
    /// subdirectories not writable by group or others, the secrets (signing key, TLS key,
    /// admin key) readable by the owner only, and no symbolic link among them or as the
    /// state database.
    ///
    /// # Errors
    /// [`DataDirError::Unsafe`] naming the path, the problem and the fix.
    pub fn check_safety(&self) -> Result<(), DataDirError> {
        let root = &self.root;
        let entries: [(PathBuf, bool); 11] = [
            (root.clone(), false),
            (root.join("tls"), false),
            (root.join("runpacks"), false),
            (root.join("keys"), false),
            (root.join("state.db"), false),
            (root.join("state.db-wal"), false),
            (root.join("state.db-shm"), false),
            (root.join("keys/active.key"), true),
            (root.join("tls/key.pem"), true),
            (root.join("admin.key"), true),
            (root.join("state.db.audit-head.json"), false),
        ];
        match entries.iter().find_map(|(path, secret)| unsafe_entry(path, *secret)) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// The SQLite state database.
    #[must_use]
    pub fn database(&self) -> PathBuf {
        self.root.join("state.db")
    }

    /// Where runpacks are written.
    #[must_use]
    pub fn runpacks(&self) -> PathBuf {
        self.root.join("runpacks")
    }

    /// Default certificate path.
    #[must_use]
    pub fn cert_path(&self) -> PathBuf {
        self.root.join("tls/cert.pem")
    }

    /// Default private key path.
    #[must_use]
    pub fn key_path(&self) -> PathBuf {
        self.root.join("tls/key.pem")
    }

    /// Opens the state database.
    ///
    /// # Errors
    /// Store errors.
    pub fn open_store(&self) -> Result<Store, DataDirError> {
        Ok(Store::open(&self.database(), StoreLimits::default())?)
    }

    /// Generates a self-signed certificate for 127.0.0.1 / ::1 / localhost unless one exists.
    ///
    /// # Errors
    /// Generation or filesystem errors.
    pub fn ensure_self_signed_cert(&self) -> Result<bool, DataDirError> {
        if self.cert_path().exists() && self.key_path().exists() {
            return Ok(false);
        }
        let names = vec!["127.0.0.1".to_string(), "::1".to_string(), "localhost".to_string()];
        let certified =
            rcgen::generate_simple_self_signed(names).map_err(|err| DataDirError::Certificate(err.to_string()))?;
        write_private(&self.key_path(), certified.key_pair.serialize_pem().as_bytes())?;
        write_private(&self.cert_path(), certified.cert.pem().as_bytes())?;
        Ok(true)
    }

    /// On a store with no tenants (a fresh data directory), registers tenant 1 and its
    /// namespace 1, "default", where Decision Gate clients work unless told otherwise.
    ///
    /// # Errors
    /// Store errors.
    pub fn ensure_default_tenant(&self, store: &dyn dg_storage::StateStore) -> Result<bool, DataDirError> {
        if !store.list_tenants()?.is_empty() {
            return Ok(false);
        }
        match store.create_tenant(1, "default", &std::collections::BTreeMap::new()) {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(err) => return Err(err.into()),
        }
        match store.create_namespace(1, 1, "default") {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(err) => return Err(err.into()),
        }
        Ok(true)
    }

    /// On a store with no keys, issues the first admin key, writes it to `admin.key`
    /// (0600) and returns it so the caller can print it once.
    ///
    /// # Errors
    /// Store or filesystem errors.
    pub fn ensure_admin_key(&self, store: &dyn dg_storage::StateStore) -> Result<Option<String>, DataDirError> {
        if !store.list_api_keys()?.is_empty() {
            return Ok(None);
        }
        let issued = keys::issue();
        let record = ApiKeyRecord {
            key_id: issued.key_id.clone(),
            label: "first admin key".to_string(),
            role: "org_admin".to_string(),
            tenant_id: None,
            namespaces: Vec::new(),
            created_at_ms: dg_storage::now_ms(),
            expires_at_ms: None,
            revoked_at_ms: None,
        };
        store.put_api_key(&record, &keys::token_hash(&issued.token))?;
        write_private(&self.root.join("admin.key"), format!("{}\n", issued.token).as_bytes())?;
        Ok(Some(issued.token))
    }
}
