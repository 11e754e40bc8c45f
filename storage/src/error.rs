//! Storage errors, one enum for the crate boundary, each carrying what was being touched.

use thiserror::Error;

/// Why a storage operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite reported an error (full disk, I/O error, busy, constraint...).
    #[error("sqlite error during {operation}: {source}")]
    Sqlite {
        /// What was being done.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// PostgreSQL reported an error, or could not be reached. `unavailable` says the database
    /// was not reachable (connection refused or lost, pool wait timed out, shutting down):
    /// nothing was committed and the request may be retried once it is back.
    #[error("postgres error during {operation}: {message}")]
    Postgres {
        /// What was being done.
        operation: &'static str,
        /// The database's or the client's message (with its SQLSTATE when it has one).
        message: String,
        /// The database could not be reached; retry later.
        unavailable: bool,
    },
    /// A stored document does not match its stored hash: the row was altered outside
    /// the appliance. Fails closed; the data is never returned.
    #[error("integrity error: {table} row {key} does not match its stored sha256")]
    Integrity {
        /// Table.
        table: &'static str,
        /// Row key.
        key: String,
    },
    /// A stored document is not valid JSON of its type.
    #[error("corrupt document in {table} row {key}: {reason}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// Row key.
        key: String,
        /// Parser message.
        reason: String,
    },
    /// A document is larger than its limit.
    #[error("{what} is {actual} bytes, over the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        actual: usize,
        /// The limit.
        limit: usize,
    },
    /// The row already exists (or changed under a concurrent writer).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database gave up the transaction for a concurrent one (a deadlock or a
    /// serialization failure): nothing was written; the same request may be retried.
    #[error("contended during {operation}: {message}; nothing was written, retry")]
    Contended {
        /// What was being done.
        operation: &'static str,
        /// The database's message.
        message: String,
    },
    /// A checkpoint could not be signed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The named object does not exist.
    #[error("not found: {0}")]
    Missing(String),
    /// A usage quota would be exceeded.
    #[error("quota exceeded: tenant {tenant_id} {counter} would reach {requested} of {limit}")]
    QuotaExceeded {
        /// Tenant.
        tenant_id: u64,
        /// Usage counter.
        counter: String,
        /// Total after this request.
        requested: u64,
        /// The quota.
        limit: u64,
    },
    /// The database was written by a newer appliance.
    #[error("database schema version {found} is newer than this appliance supports ({supported}); refusing to open")]
    NewerSchema {
        /// Version found.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// Filesystem error outside SQLite (backup copy before migration, directories).
    #[error("i/o error during {operation}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Canonicalisation failed.
    #[error("canonical json failed: {0}")]
    Canonical(String),
    /// A whole write group failed to begin or commit; every write in it was rolled back.
    #[error("write group failed during {operation}: {message}")]
    WriteGroup {
        /// `begin` or `commit`.
        operation: &'static str,
        /// SQLite's message.
        message: String,
        /// Whether the disk (or a size limit) was full.
        disk_full: bool,
    },
    /// The writer thread is gone (the store is shutting down).
    #[error("store writer is not running")]
    WriterGone,
    /// A write job panicked (a bug): its changes were rolled back and the writer goes on
    /// serving the other jobs.
    #[error("internal error: the write panicked and was rolled back")]
    WritePanicked,
}

impl StoreError {
    /// Wraps a SQLite error with the operation name.
    pub(crate) fn sqlite(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| Self::Sqlite { operation, source }
    }

    /// True when the database could not be reached (PostgreSQL down or unreachable): the
    /// request changed nothing and may be retried.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Postgres { unavailable: true, .. })
    }

    /// True when the error means the disk (or quota) is full.
    #[must_use]
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Sqlite { source: rusqlite::Error::SqliteFailure(err, _), .. } => {
                err.code == rusqlite::ErrorCode::DiskFull
            }
            Self::WriteGroup { disk_full, .. } => *disk_full,
            _ => false,
        }
    }
}
