//! The PostgreSQL backend: the same typed, tenant-scoped operations as the SQLite store, over
//! one database that several stateless appliance nodes share (docs/scale-out.md).
//!
//! - `connection.rs` what the operator configured, the pool, TLS and the error mapping;
//! - `migrations.rs` forward-only versions under an advisory lock;
//! - `runs.rs` run state (optimistic concurrency on `version`), `scenarios.rs` the scenario
//!   registry; `audit.rs` the one hash-chained audit log of the deployment (appends serialized
//!   by the row lock on `audit_head`, in the mutation's own transaction); `usage.rs` the usage
//!   ledger and quotas (checked and charged under a per-tenant-and-counter advisory lock);
//!   `registry.rs` tenants, namespaces, API keys and OIDC subjects (the registry generation
//!   read per request, as on SQLite); `shapes.rs` the data-shape registry; `write_group.rs`
//!   run writes waiting at the same time sent as one statement (one head lock, one commit).
//!
//! Documents are the canonical JSON exactly (`bytea`), their sha256 beside them, checked on
//! every read; a mismatch is [`StoreError::Integrity`] and counted ([`PgStore::integrity_failures`]).

mod audit;
mod audit_admin;
mod browse;
mod check;
pub(crate) mod connection;
mod copy_rows;
mod meta;
pub(crate) mod migrations;
mod registry;
mod runs;
mod scenarios;
mod shapes;
mod usage;
mod write_group;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::error::StoreError;
use crate::store::audit::AuditSigner;
use crate::store::registry_cache::RegistryCache;
use crate::store::scenario_cache::ScenarioCache;
use crate::store::StoreLimits;
use connection::{cached, pg, Connections};
pub use connection::{local_only, PgSettings};

/// The store over PostgreSQL.
pub struct PgStore {
    conn: Connections,
    limits: StoreLimits,
    instance_id: String,
    integrity_failures: AtomicU64,
    audit_signer: RwLock<Option<(Arc<dyn AuditSigner>, u64)>>,
    registry: RegistryCache,
    scenarios: ScenarioCache,
    write_groups: write_group::WriteGroups,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("instance_id", &self.instance_id).finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects and brings the schema to this build's version (under the migration lock, so
    /// nodes may start together); a newer schema is refused.
    ///
    /// # Errors
    /// Configuration, connection, [`StoreError::NewerSchema`] or the database's errors.
    pub fn open(settings: &PgSettings, limits: StoreLimits) -> Result<Self, StoreError> {
        let conn = Connections::new(settings)?;
        let instance = format!("{:032x}", dg_crypto::random_u128());
        let instance_id = conn.block_on(async {
            let mut client = conn.client("open").await?;
            migrations::migrate(&mut client, &instance).await?;
            let row = cached::query_one(&client, "SELECT instance_id FROM dg_meta", &[])
                .await
                .map_err(pg("read instance id"))?;
            Ok::<String, StoreError>(row.get(0))
        })?;
        Ok(Self {
            conn,
            limits,
            instance_id,
            integrity_failures: AtomicU64::new(0),
            audit_signer: RwLock::new(None),
            registry: RegistryCache::default(),
            scenarios: ScenarioCache::default(),
            write_groups: write_group::WriteGroups::default(),
        })
    }

    /// Brings the schema to this build's version and returns (version before, version now),
    /// without opening a store (`dg-appliance store migrate`).
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn migrate(settings: &PgSettings) -> Result<(i64, i64), StoreError> {
        let conn = Connections::new(settings)?;
        let instance = format!("{:032x}", dg_crypto::random_u128());
        conn.block_on(async {
            let mut client = conn.client("migrate").await?;
            let before = migrations::migrate(&mut client, &instance).await?;
            Ok((before, migrations::version(&client).await?))
        })
    }

    /// The deployment's id (made by the first migration; the same on every node).
    #[must_use]
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Whether the database answers (for `/readyz`).
    ///
    /// # Errors
    /// Unavailable when it does not.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn.block_on(async {
            let client = self.conn.client("ping").await?;
            client.simple_query("SELECT 1").await.map_err(pg("ping"))?;
            Ok(())
        })
    }

    /// How many integrity failures reads have met since start (for /metrics).
    #[must_use]
    pub fn integrity_failures(&self) -> u64 {
        self.integrity_failures.load(Ordering::Relaxed)
    }

    /// Counts an integrity failure and passes the error on.
    fn integrity_failed(&self, err: StoreError) -> StoreError {
        if matches!(err, StoreError::Integrity { .. }) {
            self.integrity_failures.fetch_add(1, Ordering::Relaxed);
        }
        err
    }

    /// Groups of two run writes or more this node sent as one statement, and the writes they
    /// carried, since start (`write_group.rs`).
    #[must_use]
    pub fn write_groups_sent(&self) -> (u64, u64) {
        self.write_groups.sent()
    }

    /// Whether this node's groups wait for the deployment's write lock before they are formed
    /// (another node's groups were met lately: `write_group.rs`).
    #[must_use]
    pub fn meeting_other_nodes(&self) -> bool {
        self.write_groups.meeting_others()
    }

    /// Sets the key that signs checkpoints and how many entries may pass between two.
    pub fn set_audit_signer(&self, signer: Arc<dyn AuditSigner>, checkpoint_every: u64) {
        if let Ok(mut slot) = self.audit_signer.write() {
            *slot = Some((signer, checkpoint_every.max(1)));
        }
    }

    /// Rows of one statement on a pooled connection (its own implicit transaction).
    fn query(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.conn.block_on(async {
            let client = self.conn.client(operation).await?;
            client.query(sql, params).await.map_err(pg(operation))
        })
    }

    /// Rows changed by one statement on a pooled connection (its own implicit transaction).
    fn execute(&self, operation: &'static str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.conn.block_on(async {
            let client = self.conn.client(operation).await?;
            client.execute(sql, params).await.map_err(pg(operation))
        })
    }

    fn signer(&self) -> Option<(Arc<dyn AuditSigner>, u64)> {
        self.audit_signer.read().ok().and_then(|slot| slot.clone())
    }
}
