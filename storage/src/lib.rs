//! Durable appliance state. The chosen public API is what this page re-exports; every
//! other module is private.
//!
//! - [`Store`]: run state, the scenario registry, the data-shape (schema) registry, API
//!   keys, tenants and namespaces, the hash-chained audit log and the usage ledger, in one
//!   SQLite file (`store/`, the first implementation of the storage seam). Every row is
//!   keyed by tenant and namespace and every query is scoped by them; every stored
//!   document is canonical JSON with its sha256 stored beside it and checked on every
//!   read. Writes go through one writer that commits in groups (WAL,
//!   `synchronous=FULL`), so an acknowledged write is durable without paying one fsync
//!   per request. A mutation takes its audit entries and usage rows as a value
//!   ([`audit::AuditBatch`]) and commits them in the same transaction.
//! - [`audit`], [`usage`], [`tenancy`]: the record types of the audit chain (with offline
//!   verification of an export), of the usage ledger and of the tenant registry.
//! - [`runpack_backend`]: the runpack store seam (filesystem here, S3 in the daemon).
//! - [`runpack_store`], [`bundle`], [`signing`], [`backup`], [`import`]: the hardened
//!   runpack directory store, signed runpack bundles, the signing key ring, USB backups,
//!   and the import of an open-source Decision Gate database.
//! - [`now_ms`] is the one wall clock, [`write_atomic`] the one durable small-file write,
//!   [`read_bounded`] / [`open_regular`] the one way to read a file a caller names (regular
//!   files only, checked on the descriptor; a size bound; never blocks on a FIFO).

pub mod backup;
pub mod bundle;
mod clock;
mod compact;
pub mod copy;
mod copy_record;
mod document;
mod error;
mod fsutil;
pub mod import;
pub mod postgres;
pub mod runpack_backend;
pub mod runpack_store;
mod seam;
pub mod signing;
mod store;

#[doc(hidden)]
pub use clock::shift_wall_clock_for_tests;
pub use clock::{floor_ms, now_ms, record_time_ms};
pub use error::StoreError;
pub use fsutil::{open_regular, read_bounded, read_text_bounded, write_atomic, Links};
pub use seam::StateStore;
pub use store::checkpointer::CheckpointCounts;
/// The database schema version this build writes (a newer one is refused).
pub use store::migrations::CURRENT_VERSION as SCHEMA_VERSION;
pub use store::temp_files::directory as sqlite_temp_directory;
pub use store::{ApiKeyRecord, CheckReport, RegistrySnapshot, RunSummary, ScenarioRecord, Scope, Store, StoreLimits};

/// The audit chain's records: events, entries, batches handed to a mutation, signed
/// checkpoints, verification reports, and verification of an exported chain offline.
pub mod audit {
    pub use crate::store::audit::{
        verify_export, AuditBatch, AuditEntry, AuditEvent, AuditReport, AuditSigner, Checkpoint, CheckpointBody,
        DEFAULT_CHECKPOINT_EVERY,
    };
    pub use crate::store::forwarding::StoredAuditEntry;
}

/// Reads for browsing: runs filtered, sorted and paged; audit entries searched newest first.
pub mod browse {
    pub use crate::store::browse::{AuditFilter, AuditPage, RunPage, RunQuery, RunSort, AUDIT_SCAN_LIMIT, MAX_PAGE};
}

/// The usage ledger's records and counters.
pub mod usage {
    pub use crate::store::periods::{period_of, valid_period};
    pub use crate::store::usage::{UsageRecord, UsageRow, COUNTERS};
}

/// The OIDC subject mapping's records.
pub mod subjects {
    pub use crate::store::subjects::{OidcSubjectRecord, MAX_SUBJECT_ID_BYTES};
}

/// The tenant and namespace registry's records.
pub mod tenancy {
    pub use crate::store::tenancy::{NamespaceRecord, Status, TenantRecord};
}
