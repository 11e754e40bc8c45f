//! The store: typed, tenant-scoped operations over the SQLite schema.

pub(crate) mod audit;
pub(crate) mod audit_segments;
pub(crate) mod browse;
pub(crate) mod checkpointer;
mod copy_rows;
pub(crate) mod forwarding;
pub(crate) mod meta;
pub(crate) mod migrations;
pub(crate) mod periods;
pub(crate) mod registry_cache;
pub(crate) mod run_counts;
pub(crate) mod scenario_cache;
pub(crate) mod subjects;
pub(crate) mod temp_files;
pub(crate) mod tenancy;
pub(crate) mod usage;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dg_engine::data_shape::DataShapeRecord;
use dg_engine::spec::ScenarioSpec;
use dg_engine::state::RunState;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::document::{decode, encode};
use crate::error::StoreError;
use crate::store::audit::AuditBatch;
use crate::store::checkpointer::{CheckpointCounts, Checkpointer};
use crate::store::registry_cache::RegistryCache;
pub use crate::store::registry_cache::RegistrySnapshot;
use crate::store::scenario_cache::ScenarioCache;
use crate::store::writer::Writer;

/// Whether a new run's write checks that its namespace is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NewRun {
    /// A request's start: the namespace must be registered when the write commits.
    InRegisteredNamespace,
    /// A store-level write: no registry check.
    Unchecked,
}

/// Tenant and namespace of a row. Every query takes one; none crosses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Scope {
    /// Tenant id (>= 1 for runs and shapes; 0 marks a scenario usable by every tenant).
    pub tenant_id: u64,
    /// Namespace id.
    pub namespace_id: u64,
}

impl Scope {
    /// Builds a scope.
    #[must_use]
    pub fn new(tenant_id: u64, namespace_id: u64) -> Self {
        Self { tenant_id, namespace_id }
    }
}

pub(crate) fn to_sql(id: u64) -> i64 {
    // Ids come from NonZeroU64 values; anything above i64::MAX is stored saturated and
    // would then never match, which fails closed rather than aliasing another id.
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// Size limits enforced on writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Largest canonical run state.
    pub max_run_state_bytes: usize,
    /// Largest scenario spec.
    pub max_spec_bytes: usize,
    /// Largest data-shape record.
    pub max_shape_bytes: usize,
    /// Largest database file (a quota below the disk's own size); `None` = the disk's.
    pub max_database_bytes: Option<u64>,
    /// Largest total of one tenant's run states.
    pub max_tenant_run_bytes: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_run_state_bytes: 16 * 1024 * 1024,
            max_spec_bytes: 4 * 1024 * 1024,
            max_shape_bytes: 2 * 1024 * 1024,
            max_database_bytes: None,
            max_tenant_run_bytes: 64 * 1024 * 1024 * 1024,
        }
    }
}

/// One row of `store list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// Scope.
    pub scope: Scope,
    /// Run id.
    pub run_id: String,
    /// Scenario id.
    pub scenario_id: String,
    /// Status.
    pub status: String,
    /// Write version.
    pub version: u64,
    /// Wall-clock save time (ms).
    pub saved_at_ms: i64,
}

impl RunSummary {
    /// A row of `SELECT tenant_id, namespace_id, run_id, scenario_id, status, version,
    /// saved_at_ms FROM runs`.
    pub(crate) fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            scope: Scope::new(row.get::<_, i64>(0)?.unsigned_abs(), row.get::<_, i64>(1)?.unsigned_abs()),
            run_id: row.get(2)?,
            scenario_id: row.get(3)?,
            status: row.get(4)?,
            version: row.get::<_, i64>(5)?.unsigned_abs(),
            saved_at_ms: row.get(6)?,
        })
    }
}

/// A stored scenario definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioRecord {
    /// Owning scope (tenant 0 = every tenant).
    pub scope: Scope,
    /// The spec.
    pub spec: ScenarioSpec,
    /// Hex sha256 of its canonical JSON (the contract's spec_hash).
    pub spec_sha256: String,
}

/// An API key as stored: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Public key id.
    pub key_id: String,
    /// Human label.
    pub label: String,
    /// Role name.
    pub role: String,
    /// Tenant the key is bound to (none for org-wide roles).
    pub tenant_id: Option<u64>,
    /// Namespaces the key may use (empty = all of its tenant's).
    pub namespaces: Vec<u64>,
    /// Creation time (unix ms).
    pub created_at_ms: i64,
    /// Expiry (unix ms).
    pub expires_at_ms: Option<i64>,
    /// Revocation time (unix ms).
    pub revoked_at_ms: Option<i64>,
}

/// Result of `store check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// `PRAGMA integrity_check` lines (`ok` when healthy).
    pub integrity_check: Vec<String>,
    /// Documents whose hash was checked.
    pub documents_checked: u64,
    /// Documents that failed (table and key).
    pub failures: Vec<String>,
    /// Tenants whose kept run bytes or runs by status differ from a recount of their runs
    /// (`run_counts.rs`): what was kept and what the runs hold.
    pub usage_drift: Vec<String>,
}

impl CheckReport {
    /// Whether everything passed.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.integrity_check == ["ok"] && self.failures.is_empty() && self.usage_drift.is_empty()
    }
}

/// The appliance's durable store.
pub struct Store {
    path: PathBuf,
    pub(crate) writer: Writer,
    readers: Mutex<Vec<Connection>>,
    scenarios: ScenarioCache,
    pub(crate) registry: RegistryCache,
    limits: StoreLimits,
    integrity_failures: AtomicU64,
    instance_id: String,
    pub(crate) audit_signer: std::sync::RwLock<Option<(std::sync::Arc<dyn crate::store::audit::AuditSigner>, u64)>>,
}

use crate::clock::now_ms;

/// `execute` through the connection's statement cache (no SQL re-parse per call).
pub(crate) fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// `query_row` through the statement cache.
pub(crate) fn query_one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// Sets `max_page_count` from a byte quota (SQLite refuses to grow past it: SQLITE_FULL).
fn apply_size_limit(conn: &Connection, limit: Option<u64>) -> Result<(), StoreError> {
    let page_size: u64 =
        conn.query_row("PRAGMA page_size", [], |row| row.get(0)).map_err(StoreError::sqlite("read page size"))?;
    let pages = limit.map_or(4_294_967_294, |bytes| (bytes / page_size.max(1)).max(1));
    conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
        .map_err(StoreError::sqlite("set size limit"))
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
    )
    .map_err(StoreError::sqlite("configure connection"))
}

impl Store {
    /// Opens (creating or migrating) the database at `path`.
    ///
    /// # Errors
    /// [`StoreError::NewerSchema`] for a database from a newer appliance, or SQLite errors.
    pub fn open(path: &Path, limits: StoreLimits) -> Result<Self, StoreError> {
        // SQLite's temporary files (large statements' journals, big sorts, migrations' copies)
        // in the data directory, with the data (`temp_files.rs`).
        temp_files::keep_beside(path);
        let mut conn = Connection::open(path).map_err(StoreError::sqlite("open database"))?;
        configure(&conn)?;
        let instance = format!("{:032x}", dg_crypto::random_u128());
        let backup = path.with_extension(format!("pre-migration-{}.db", now_ms()));
        migrations::migrate(&mut conn, Some(&backup), &instance)?;
        let instance_id: String = query_one(&conn, "SELECT instance_id FROM store_meta", [], |row| row.get(0))
            .map_err(StoreError::sqlite("read instance id"))?;
        apply_size_limit(&conn, limits.max_database_bytes)?;
        // SQLite's memory is bounded connection by connection: this writer's page cache
        // (SQLite's default, 2,000 KiB), at most eight pooled readers of 512 KiB each (`read`)
        // and their cached statements. No process-wide soft heap limit: the bundled SQLite is
        // built without memory accounting (`.cargo/config.toml`), without which SQLite ignores
        // one; turning accounting on and routing SQLite to mimalloc cost CPU and saved nothing.
        // Record times never go back past the newest audit entry, even across a restart
        // on a clock that was stepped back (`clock.rs`).
        let newest = crate::store::audit_segments::newest(&conn)?;
        crate::clock::raise_floor(newest.map_or(0, |(_, _, time_ms)| time_ms));
        // The writer also serves hot point reads (`read_point`): room for every cached
        // statement of both, so none is evicted and prepared again on the request path.
        conn.set_prepared_statement_cache_capacity(128);
        // Checkpoints run off the request path (see `checkpointer.rs`).
        let checkpointer = Checkpointer::start(path, &conn)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Writer::start(conn, Some(checkpointer))?,
            readers: Mutex::new(Vec::new()),
            scenarios: ScenarioCache::default(),
            registry: RegistryCache::default(),
            limits,
            integrity_failures: AtomicU64::new(0),
            instance_id,
            audit_signer: std::sync::RwLock::new(None),
        })
    }

    /// Database file path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Random id of this database, fixed at creation.
    #[must_use]
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// How many integrity failures reads have met since start (for /metrics).
    #[must_use]
    pub fn integrity_failures(&self) -> u64 {
        self.integrity_failures.load(Ordering::Relaxed)
    }

    /// How WAL checkpoints went since the store opened (for /metrics).
    #[must_use]
    pub fn checkpoint_counts(&self) -> CheckpointCounts {
        self.writer.checkpoint_counts()
    }

    /// Changes the database size quota (writes past it fail as a full disk).
    ///
    /// # Errors
    /// SQLite errors or a stopped writer.
    pub fn set_max_database_bytes(&self, limit: Option<u64>) -> Result<(), StoreError> {
        self.writer.with_connection(|conn| apply_size_limit(conn, limit))
    }

    /// Stops the writer after queued writes commit.
    pub fn close(&self) {
        self.writer.shutdown();
    }

    /// A point read on the hot request path (one indexed row, no parsing): on the write
    /// connection when it is idle (its warm cache: see `Writer::idle_connection`), else on
    /// a reader. Keep `f` short, it holds writers off; decode what it returns outside.
    pub(crate) fn read_point<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if let Some(writer) = self.writer.idle_connection() {
            if let Some(conn) = writer.as_ref() {
                return f(conn).map_err(|err| self.integrity_failed(err));
            }
        }
        self.read(f)
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = match self.readers.lock().ok().and_then(|mut pool| pool.pop()) {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(StoreError::sqlite("open reader"))?;
                // A reader serves the point reads the idle writer could not take: a small
                // page cache each (the writer keeps SQLite's default 2 MiB, the hot pages).
                conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -512;")
                    .map_err(StoreError::sqlite("configure reader"))?;
                conn
            }
        };
        let result = f(&conn);
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < 8 {
                pool.push(conn);
            }
        }
        result.map_err(|err| self.integrity_failed(err))
    }

    /// Counts an integrity failure for /metrics; passes any error through.
    fn integrity_failed(&self, err: StoreError) -> StoreError {
        if matches!(err, StoreError::Integrity { .. }) {
            self.integrity_failures.fetch_add(1, Ordering::Relaxed);
        }
        err
    }

    /// Whether the database answers (readiness).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| {
            query_one(conn, "SELECT version FROM store_meta", [], |row| row.get::<_, i64>(0))
                .map(|_| ())
                .map_err(StoreError::sqlite("ping"))
        })
    }

    // ----- runs -----

    /// Inserts a new run; fails with [`StoreError::Conflict`] if it exists. No registry
    /// check: store-level writes (imports, copies) place runs where they are told.
    ///
    /// # Errors
    /// Conflict, size limit, SQLite errors.
    pub fn create_run(&self, state: &RunState, audit: AuditBatch) -> Result<u64, StoreError> {
        self.save_run(state, None, audit, NewRun::Unchecked)
    }

    /// Inserts a new run a request started: as [`Self::create_run`], and its namespace must
    /// still be registered when the write commits, so a namespace deleted after the
    /// request's authorization refuses the run rather than keeping it in a namespace that
    /// no longer exists (writes are serialized: the delete's own emptiness check and this
    /// one never interleave).
    ///
    /// # Errors
    /// [`StoreError::Missing`] when the namespace is gone; as [`Self::create_run`].
    pub fn start_run(&self, state: &RunState, audit: AuditBatch) -> Result<u64, StoreError> {
        self.save_run(state, None, audit, NewRun::InRegisteredNamespace)
    }

    /// Saves a run whose stored version is `expected_version` (optimistic concurrency:
    /// a concurrent writer makes this a [`StoreError::Conflict`]). Returns the new version.
    ///
    /// # Errors
    /// Conflict, size limit, SQLite errors.
    pub fn update_run(&self, state: &RunState, expected_version: u64, audit: AuditBatch) -> Result<u64, StoreError> {
        self.save_run(state, Some(expected_version), audit, NewRun::Unchecked)
    }

    fn save_run(
        &self,
        state: &RunState,
        expected: Option<u64>,
        audit: AuditBatch,
        rule: NewRun,
    ) -> Result<u64, StoreError> {
        let doc = encode(state, "run state", self.limits.max_run_state_bytes)?;
        let tenant = to_sql(state.tenant_id.get());
        let namespace = to_sql(state.namespace_id.get());
        let run_id = state.run_id.clone();
        let scenario_id = state.scenario_id.clone();
        let new_status = state.status;
        let status = new_status.as_str();
        let saved_at = now_ms();
        let tenant_limit = self.limits.max_tenant_run_bytes;
        // Stored compact (`compact.rs`); the tenant's bound counts the bytes stored.
        let stored = crate::compact::pack_run_state(&doc.bytes);
        let new_len = i64::try_from(stored.len()).unwrap_or(i64::MAX);
        let version = self.submit_with_audit(audit, move |conn| {
            if rule == NewRun::InRegisteredNamespace {
                let registered = query_one(
                    conn,
                    "SELECT 1 FROM namespaces WHERE tenant_id = ?1 AND namespace_id = ?2",
                    params![tenant, namespace],
                    |_| Ok(()),
                )
                .optional()
                .map_err(StoreError::sqlite("check the run's namespace"))?;
                if registered.is_none() {
                    return Err(StoreError::Missing(format!("namespace {tenant}/{namespace} (deleted)")));
                }
            }
            // Per-tenant bound and runs by status, kept exact in the same transaction as the write.
            let old: Option<(i64, String)> = query_one(
                conn,
                "SELECT length(state_json), status FROM runs WHERE tenant_id = ?1 AND namespace_id = ?2 AND run_id = ?3",
                params![tenant, namespace, run_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(StoreError::sqlite("read run size"))?;
            let old_len = old.as_ref().map_or(0, |(len, _)| *len);
            // An insert that meets an existing row fails below; its counts never land.
            let moved = run_counts::deltas(&run_id, old.as_ref().filter(|_| expected.is_some()).map(|(_, s)| s.as_str()), new_status)?;
            let used: i64 = query_one(conn, "SELECT run_bytes FROM tenant_usage WHERE tenant_id = ?1", [tenant], |row| row.get(0))
                .optional()
                .map_err(StoreError::sqlite("read tenant usage"))?
                .unwrap_or(0);
            let after = used.saturating_add(new_len).saturating_sub(if expected.is_some() { old_len } else { 0 });
            if u64::try_from(after).unwrap_or(u64::MAX) > tenant_limit && new_len > old_len {
                return Err(StoreError::TooLarge {
                    what: "tenant run state storage",
                    actual: usize::try_from(after).unwrap_or(usize::MAX),
                    limit: usize::try_from(tenant_limit).unwrap_or(usize::MAX),
                });
            }
            let rows = match expected {
                None => exec(conn,
                        "INSERT INTO runs (tenant_id, namespace_id, run_id, scenario_id, status, version, state_json, state_sha256, saved_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                        params![tenant, namespace, run_id, scenario_id, status, stored, doc.sha256, saved_at],
                    )
                    .map_err(StoreError::sqlite("insert run"))?,
                Some(version) => exec(conn,
                        "UPDATE runs SET status = ?5, version = version + 1, state_json = ?6, state_sha256 = ?7, saved_at_ms = ?8
                         WHERE tenant_id = ?1 AND namespace_id = ?2 AND run_id = ?3 AND version = ?4",
                        params![tenant, namespace, run_id, i64::try_from(version).unwrap_or(i64::MAX), status, stored, doc.sha256, saved_at],
                    )
                    .map_err(StoreError::sqlite("update run"))?,
            };
            if rows == 0 {
                return Err(StoreError::Conflict(match expected {
                    None => format!("run already exists: {run_id}"),
                    Some(_) => format!("run {run_id} was changed concurrently"),
                }));
            }
            exec(
                conn,
                "INSERT INTO tenant_usage (tenant_id, run_bytes, runs_active, runs_completed, runs_failed) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant_id) DO UPDATE SET run_bytes = ?2, runs_active = runs_active + ?3,
                     runs_completed = runs_completed + ?4, runs_failed = runs_failed + ?5",
                params![tenant, after, moved[0], moved[1], moved[2]],
            )
            .map_err(StoreError::sqlite("update tenant usage"))?;
            Ok(expected.map_or(1, |v| i64::try_from(v).unwrap_or(i64::MAX) + 1))
        })?;
        Ok(u64::try_from(version).unwrap_or(0))
    }

    /// Loads a run and its version.
    ///
    /// # Errors
    /// [`StoreError::Integrity`] if the stored document was altered; SQLite errors.
    pub fn get_run(&self, scope: Scope, run_id: &str) -> Result<Option<(RunState, u64)>, StoreError> {
        let row: Option<(Vec<u8>, String, i64)> = self.read_point(|conn| {
            query_one(
                conn,
                "SELECT state_json, state_sha256, version FROM runs WHERE tenant_id = ?1 AND namespace_id = ?2 AND run_id = ?3",
                params![to_sql(scope.tenant_id), to_sql(scope.namespace_id), run_id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(StoreError::sqlite("load run"))
        })?;
        let Some((bytes, sha, version)) = row else { return Ok(None) };
        let key = || format!("{}/{}/{run_id}", scope.tenant_id, scope.namespace_id);
        let state = decode(&bytes, &sha, "runs", key)
            .and_then(|state: RunState| {
                let in_scope = state.tenant_id.get() == scope.tenant_id
                    && state.namespace_id.get() == scope.namespace_id
                    && state.run_id == run_id;
                if in_scope {
                    Ok(state)
                } else {
                    Err(StoreError::Integrity { table: "runs", key: key() })
                }
            })
            .map_err(|err| self.integrity_failed(err))?;
        Ok(Some((state, u64::try_from(version).unwrap_or(0))))
    }

    /// Runs in a scope, newest first (or all scopes when `scope` is `None`: operators only).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn list_runs(&self, scope: Option<Scope>) -> Result<Vec<RunSummary>, StoreError> {
        self.read(|conn| {
            let (sql, args): (&str, Vec<i64>) = match scope {
                Some(s) => (
                    "SELECT tenant_id, namespace_id, run_id, scenario_id, status, version, saved_at_ms FROM runs
                     WHERE tenant_id = ?1 AND namespace_id = ?2 ORDER BY saved_at_ms DESC, run_id",
                    vec![to_sql(s.tenant_id), to_sql(s.namespace_id)],
                ),
                None => (
                    "SELECT tenant_id, namespace_id, run_id, scenario_id, status, version, saved_at_ms FROM runs
                     ORDER BY tenant_id, namespace_id, saved_at_ms DESC, run_id",
                    vec![],
                ),
            };
            let mut stmt = conn.prepare(sql).map_err(StoreError::sqlite("list runs"))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), RunSummary::from_row)
                .map_err(StoreError::sqlite("list runs"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(StoreError::sqlite("list runs"))
        })
    }

    /// Runs by status (for /metrics), every status listed: the totals each run write
    /// keeps (`run_counts.rs`), not a scan of the runs.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn count_runs_by_status(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(run_counts::totals)
    }

    // ----- scenarios -----

    /// Registers a scenario; an identical spec is accepted again (idempotent), a
    /// different spec under the same id is a [`StoreError::Conflict`]. Returns whether it
    /// was newly inserted.
    ///
    /// # Errors
    /// Conflict, size limit, SQLite errors.
    pub fn put_scenario(&self, scope: Scope, spec: &ScenarioSpec, audit: AuditBatch) -> Result<bool, StoreError> {
        let doc = encode(spec, "scenario spec", self.limits.max_spec_bytes)?;
        let scenario_id = spec.scenario_id.clone();
        let created = now_ms();
        let inserted = self.submit_with_audit(audit, move |conn| {
            let existing: Option<String> = query_one(conn,
                    "SELECT spec_sha256 FROM scenarios WHERE tenant_id = ?1 AND namespace_id = ?2 AND scenario_id = ?3",
                    params![to_sql(scope.tenant_id), to_sql(scope.namespace_id), scenario_id],
                    |row| row.get(0),
                )
                .optional()
                .map_err(StoreError::sqlite("read scenario"))?;
            match existing {
                Some(hash) if hash == doc.sha256 => Ok(0),
                Some(_) => Err(StoreError::Conflict(format!("scenario already defined with a different spec: {scenario_id}"))),
                None => {
                    exec(conn,
                        "INSERT INTO scenarios (tenant_id, namespace_id, scenario_id, spec_json, spec_sha256, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![to_sql(scope.tenant_id), to_sql(scope.namespace_id), scenario_id, doc.bytes, doc.sha256, created],
                    )
                    .map_err(StoreError::sqlite("insert scenario"))?;
                    Ok(1)
                }
            }
        })?;
        Ok(inserted == 1)
    }

    /// Loads a scenario from exactly this scope.
    ///
    /// # Errors
    /// Integrity or SQLite errors.
    pub fn get_scenario(&self, scope: Scope, scenario_id: &str) -> Result<Option<ScenarioRecord>, StoreError> {
        Ok(self.get_scenario_sized(scope, scenario_id)?.map(|(record, _)| record))
    }

    /// [`Self::get_scenario`] with the stored document's size in bytes.
    fn get_scenario_sized(
        &self,
        scope: Scope,
        scenario_id: &str,
    ) -> Result<Option<(ScenarioRecord, usize)>, StoreError> {
        self.read(|conn| {
            let row: Option<(Vec<u8>, String)> = query_one(conn,
                    "SELECT spec_json, spec_sha256 FROM scenarios WHERE tenant_id = ?1 AND namespace_id = ?2 AND scenario_id = ?3",
                    params![to_sql(scope.tenant_id), to_sql(scope.namespace_id), scenario_id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(StoreError::sqlite("load scenario"))?;
            let Some((bytes, sha)) = row else { return Ok(None) };
            let spec = crate::document::decode_scenario(&bytes, &sha, (scope.tenant_id, scope.namespace_id), scenario_id)?;
            Ok(Some((ScenarioRecord { scope, spec, spec_sha256: sha }, bytes.len())))
        })
    }

    /// The spec stored under exactly this scope, verified on its first read and then
    /// served from memory (stored scenarios never change; see `scenario_cache`).
    ///
    /// # Errors
    /// Integrity or SQLite errors.
    pub fn scenario_spec(&self, scope: Scope, scenario_id: &str) -> Result<Option<Arc<ScenarioSpec>>, StoreError> {
        if let Some(spec) = self.scenarios.get(scope, scenario_id) {
            return Ok(Some(spec));
        }
        let Some((record, size)) = self.get_scenario_sized(scope, scenario_id)? else { return Ok(None) };
        let spec = Arc::new(record.spec);
        self.scenarios.insert(scope, spec.clone(), size);
        Ok(Some(spec))
    }

    /// Scenarios of a namespace visible to `tenant_id` (its own and the every-tenant
    /// ones), sorted by id, after `cursor`, at most `limit`.
    ///
    /// # Errors
    /// Integrity or SQLite errors.
    pub fn list_scenarios(
        &self,
        tenant_id: u64,
        namespace_id: u64,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ScenarioRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT tenant_id, scenario_id, spec_json, spec_sha256 FROM scenarios
                     WHERE tenant_id IN (0, ?1) AND namespace_id = ?2 AND scenario_id > ?3
                     ORDER BY scenario_id, tenant_id LIMIT ?4",
                )
                .map_err(StoreError::sqlite("list scenarios"))?;
            let rows = stmt
                .query_map(
                    params![
                        to_sql(tenant_id),
                        to_sql(namespace_id),
                        cursor.unwrap_or(""),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, Vec<u8>>(2)?,
                            row.get::<_, String>(3)?,
                        ))
                    },
                )
                .map_err(StoreError::sqlite("list scenarios"))?;
            let mut out = Vec::new();
            for row in rows {
                let (tenant, id, bytes, sha) = row.map_err(StoreError::sqlite("list scenarios"))?;
                let scope = Scope::new(tenant.unsigned_abs(), namespace_id);
                let spec = crate::document::decode_scenario(&bytes, &sha, (scope.tenant_id, namespace_id), &id)?;
                out.push(ScenarioRecord { scope, spec, spec_sha256: sha });
            }
            Ok(out)
        })
    }

    // ----- data shapes -----

    /// Registers a data shape; records are immutable ([`StoreError::Conflict`] on reuse).
    ///
    /// # Errors
    /// Conflict, size limit, SQLite errors.
    pub fn put_shape(&self, record: &DataShapeRecord, audit: AuditBatch) -> Result<(), StoreError> {
        let doc = encode(record, "data shape", self.limits.max_shape_bytes)?;
        let scope = Scope::new(record.tenant_id.get(), record.namespace_id.get());
        let (schema_id, version) = (record.schema_id.clone(), record.version.clone());
        self.submit_with_audit(audit, move |conn| {
            let rows = exec(
                conn,
                "INSERT INTO data_shapes (tenant_id, namespace_id, schema_id, version, record_json, record_sha256)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                params![to_sql(scope.tenant_id), to_sql(scope.namespace_id), schema_id, version, doc.bytes, doc.sha256],
            )
            .map_err(StoreError::sqlite("insert data shape"))?;
            if rows == 0 {
                return Err(StoreError::Conflict("schema already registered".to_string()));
            }
            Ok(1)
        })?;
        Ok(())
    }

    /// Loads a data shape.
    ///
    /// # Errors
    /// Integrity or SQLite errors.
    pub fn get_shape(
        &self,
        scope: Scope,
        schema_id: &str,
        version: &str,
    ) -> Result<Option<DataShapeRecord>, StoreError> {
        self.read(|conn| {
            let row: Option<(Vec<u8>, String)> = query_one(conn,
                    "SELECT record_json, record_sha256 FROM data_shapes WHERE tenant_id = ?1 AND namespace_id = ?2 AND schema_id = ?3 AND version = ?4",
                    params![to_sql(scope.tenant_id), to_sql(scope.namespace_id), schema_id, version],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(StoreError::sqlite("load data shape"))?;
            let Some((bytes, sha)) = row else { return Ok(None) };
            crate::document::decode_shape(&bytes, &sha, (scope.tenant_id, scope.namespace_id), schema_id, version).map(Some)
        })
    }

    /// Data shapes of a scope sorted by (schema_id, version), after the cursor.
    ///
    /// # Errors
    /// Integrity or SQLite errors.
    pub fn list_shapes(
        &self,
        scope: Scope,
        cursor: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<DataShapeRecord>, StoreError> {
        self.read(|conn| {
            let (cursor_id, cursor_version) = cursor.unwrap_or(("", ""));
            let mut stmt = conn
                .prepare(
                    "SELECT schema_id, version, record_json, record_sha256 FROM data_shapes
                     WHERE tenant_id = ?1 AND namespace_id = ?2 AND (schema_id > ?3 OR (schema_id = ?3 AND version > ?4))
                     ORDER BY schema_id, version LIMIT ?5",
                )
                .map_err(StoreError::sqlite("list data shapes"))?;
            let rows = stmt
                .query_map(
                    params![
                        to_sql(scope.tenant_id),
                        to_sql(scope.namespace_id),
                        cursor_id,
                        cursor_version,
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, Vec<u8>>(2)?, row.get::<_, String>(3)?)),
                )
                .map_err(StoreError::sqlite("list data shapes"))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, version, bytes, sha) = row.map_err(StoreError::sqlite("list data shapes"))?;
                out.push(crate::document::decode_shape(&bytes, &sha, (scope.tenant_id, scope.namespace_id), &id, &version)?);
            }
            Ok(out)
        })
    }

    // ----- API keys -----

    /// Stores a new API key record with the sha256 of its secret.
    ///
    /// # Errors
    /// Conflict on a duplicate id or secret; SQLite errors.
    pub fn put_api_key(&self, record: &ApiKeyRecord, secret_sha256: &str) -> Result<(), StoreError> {
        let doc = encode(record, "api key", 64 * 1024)?;
        let key_id = record.key_id.clone();
        let secret = secret_sha256.to_string();
        self.writer.submit(Box::new(move |conn| {
            let rows = exec(conn,
                    "INSERT INTO api_keys (key_id, record_json, record_sha256, secret_sha256) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    params![key_id, doc.bytes, doc.sha256, secret],
                )
                .map_err(StoreError::sqlite("insert api key"))?;
            if rows == 0 {
                return Err(StoreError::Conflict(format!("api key already exists: {key_id}")));
            }
            Ok(1)
        }))?;
        Ok(())
    }

    /// Replaces a key's record (revocation, expiry for a rotation overlap); the secret
    /// hash is unchanged.
    ///
    /// # Errors
    /// [`StoreError::Missing`] for an unknown key; SQLite errors.
    pub fn update_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        let doc = encode(record, "api key", 64 * 1024)?;
        let key_id = record.key_id.clone();
        self.writer.submit(Box::new(move |conn| {
            let rows = exec(
                conn,
                "UPDATE api_keys SET record_json = ?2, record_sha256 = ?3 WHERE key_id = ?1",
                params![key_id, doc.bytes, doc.sha256],
            )
            .map_err(StoreError::sqlite("update api key"))?;
            if rows == 0 {
                return Err(StoreError::Missing(format!("api key {key_id}")));
            }
            Ok(1)
        }))?;
        Ok(())
    }

    /// Finds the key whose secret hashes to `secret_sha256`.
    ///
    /// # Errors
    /// Integrity or SQLite errors.
    pub fn find_api_key(&self, secret_sha256: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        if let Some(record) = self.registry.key(secret_sha256) {
            return Ok(Some(record));
        }
        let found = self.read(|conn| {
            let row: Option<(String, Vec<u8>, String)> = query_one(
                conn,
                "SELECT key_id, record_json, record_sha256 FROM api_keys WHERE secret_sha256 = ?1",
                [secret_sha256],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(StoreError::sqlite("find api key"))?;
            let Some((key_id, bytes, sha)) = row else { return Ok(None) };
            let record: ApiKeyRecord = decode(&bytes, &sha, "api_keys", || key_id.clone())?;
            if record.key_id != key_id {
                return Err(StoreError::Integrity { table: "api_keys", key: key_id });
            }
            Ok(Some(record))
        })?;
        if let Some(record) = &found {
            self.registry.keep_key(secret_sha256, record);
        }
        Ok(found)
    }

    /// Opens this thread's registry snapshot for one request: one read of the registry
    /// generation, after which key and tenancy lookups on this thread are served from
    /// memory when nothing changed since they were read (see `registry_cache`).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn registry_snapshot(&self) -> Result<RegistrySnapshot, StoreError> {
        let generation = self.read_point(|conn| {
            query_one(conn, "SELECT registry_generation FROM store_meta", [], |row| row.get::<_, i64>(0))
                .map_err(StoreError::sqlite("read registry generation"))
        })?;
        Ok(self.registry.open(generation))
    }

    /// Reopens a request's snapshot on this thread at the generation it already read (see
    /// [`RegistrySnapshot::generation`]).
    pub fn registry_snapshot_at(&self, generation: i64) -> RegistrySnapshot {
        self.registry.open(generation)
    }

    /// Every key record, by id.
    ///
    /// # Errors
    /// Integrity or SQLite errors.
    pub fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare("SELECT key_id, record_json, record_sha256 FROM api_keys ORDER BY key_id")
                .map_err(StoreError::sqlite("list api keys"))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?, row.get::<_, String>(2)?))
                })
                .map_err(StoreError::sqlite("list api keys"))?;
            let mut out = Vec::new();
            for row in rows {
                let (key_id, bytes, sha) = row.map_err(StoreError::sqlite("list api keys"))?;
                out.push(decode(&bytes, &sha, "api_keys", || key_id.clone())?);
            }
            Ok(out)
        })
    }

    // ----- operator checks -----

    /// `integrity_check`, the hash of every stored document, and each tenant's kept run
    /// bytes and counts against a recount of its runs.
    ///
    /// # Errors
    /// SQLite errors while reading.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(StoreError::sqlite("integrity_check"))?;
            let integrity_check = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(StoreError::sqlite("integrity_check"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::sqlite("integrity_check"))?;
            let mut report =
                CheckReport { integrity_check, documents_checked: 0, failures: Vec::new(), usage_drift: Vec::new() };
            let tables: [(&str, &str); 5] = [
                ("runs", "SELECT tenant_id || '/' || namespace_id || '/' || run_id, state_json, state_sha256 FROM runs"),
                ("scenarios", "SELECT tenant_id || '/' || namespace_id || '/' || scenario_id, spec_json, spec_sha256 FROM scenarios"),
                ("data_shapes", "SELECT tenant_id || '/' || namespace_id || '/' || schema_id || '@' || version, record_json, record_sha256 FROM data_shapes"),
                ("api_keys", "SELECT key_id, record_json, record_sha256 FROM api_keys"),
                ("oidc_subjects", "SELECT subject, record_json, record_sha256 FROM oidc_subjects"),
            ];
            for (table, sql) in tables {
                let mut stmt = conn.prepare(sql).map_err(StoreError::sqlite("check documents"))?;
                let rows = stmt
                    .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?, row.get::<_, String>(2)?)))
                    .map_err(StoreError::sqlite("check documents"))?;
                for row in rows {
                    let (key, bytes, sha) = row.map_err(StoreError::sqlite("check documents"))?;
                    report.documents_checked += 1;
                    let named = decode::<serde_json::Value>(&bytes, &sha, "check", || key.clone())
                        .is_ok_and(|document| crate::document::names_its_row(table, &key, &document));
                    if !named {
                        report.failures.push(format!("{table} {key}"));
                    }
                }
            }
            report.usage_drift = run_counts::drift(conn)?;
            Ok(report)
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.writer.shutdown();
    }
}
