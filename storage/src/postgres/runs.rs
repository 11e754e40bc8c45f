//! Run state on PostgreSQL: one row per run, written with its audit batch in one transaction.
//! Optimistic concurrency on `version`: an update names the version it read, and a row moved
//! on by another node meanwhile (any node: the `WHERE version = $n` is re-checked on the
//! committed row) makes it a [`StoreError::Conflict`]: one writer wins, nothing is lost.

use dg_engine::state::RunState;

use crate::document::{decode, encode};
use crate::error::StoreError;
use crate::postgres::audit::AppendArgs;
use crate::postgres::connection::{cached, pg};
use crate::postgres::write_group::{RunWrite, Shared};
use crate::postgres::PgStore;
use crate::store::audit::AuditBatch;
use crate::store::run_counts;
use crate::store::to_sql;
use crate::store::{NewRun, RunSummary, Scope};

impl PgStore {
    /// Stores a new run (version 1) with its audit batch.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the run exists; size limits; the database's errors.
    pub fn create_run(&self, state: &RunState, audit: AuditBatch) -> Result<u64, StoreError> {
        self.save_run(state, None, audit, NewRun::Unchecked)
    }

    /// Stores a new run a request started: as [`Self::create_run`], and refused when its
    /// namespace is no longer registered as the write commits. The write holds the
    /// namespace's row (`FOR KEY SHARE`) until it commits, and a namespace delete locks that
    /// row before it checks for runs, so one of the two sees the other.
    ///
    /// # Errors
    /// [`StoreError::Missing`] when the namespace is gone; as [`Self::create_run`].
    pub fn start_run(&self, state: &RunState, audit: AuditBatch) -> Result<u64, StoreError> {
        self.save_run(state, None, audit, NewRun::InRegisteredNamespace)
    }

    /// Saves a run whose stored version is `expected_version`; returns the new version.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when another writer moved it on; size limits; the database's errors.
    pub fn update_run(&self, state: &RunState, expected_version: u64, audit: AuditBatch) -> Result<u64, StoreError> {
        self.save_run(state, Some(expected_version), audit, NewRun::Unchecked)
    }

    /// One statement in its own transaction (`dg_write_runs`, with the other writes of this
    /// node waiting at the same time: `write_group.rs`): the run's row
    /// (inserted, or moved on from `expected`), the tenant's kept totals with the storage
    /// bound, then the audit batch. A checkpoint that falls due is signed right after, at the
    /// committed head, by one write of the group (`audit.rs`: it holds no lock appends wait for).
    fn save_run(
        &self,
        state: &RunState,
        expected: Option<u64>,
        batch: AuditBatch,
        rule: NewRun,
    ) -> Result<u64, StoreError> {
        let doc = encode(state, "run state", self.limits.max_run_state_bytes)?;
        let signer = self.signer();
        let write = RunWrite {
            tenant: to_sql(state.tenant_id.get()),
            namespace: to_sql(state.namespace_id.get()),
            run_id: state.run_id.as_str().to_string(),
            scenario_id: state.scenario_id.clone(),
            status: state.status.as_str().to_string(),
            expected: expected.map(to_sql),
            doc: doc.bytes,
            sha256: doc.sha256,
            saved_at: crate::clock::now_ms(),
            append: AppendArgs::new(batch.events, &batch.usage, signer.as_ref())?,
            need_namespace: rule == NewRun::InRegisteredNamespace,
        };
        let statuses: Vec<&str> = run_counts::STATUSES.iter().map(|s| s.as_str()).collect();
        let shared = Shared { conn: &self.conn, statuses: &statuses, limit: to_sql(self.limits.max_tenant_run_bytes) };
        let (version, checkpoint_due) = self.conn.block_on(self.write_groups.write(&shared, write))?;
        if let (true, Some((signer, _))) = (checkpoint_due, signer) {
            self.checkpoint_after_write(&signer);
        }
        Ok(version.unsigned_abs())
    }

    /// Loads a run and its version; the document is checked against its sha256 and scope.
    ///
    /// # Errors
    /// [`StoreError::Integrity`] (counted) if the stored document was altered; the database's errors.
    pub fn get_run(&self, scope: Scope, run_id: &str) -> Result<Option<(RunState, u64)>, StoreError> {
        let row = self.conn.block_on(async {
            let client = self.conn.client("load run").await?;

                cached::query_opt(&client, "SELECT state_json, state_sha256, version FROM runs WHERE tenant_id = $1 AND namespace_id = $2 AND run_id = $3",
                    &[&to_sql(scope.tenant_id), &to_sql(scope.namespace_id), &run_id],
                )
                .await
                .map_err(pg("load run"))
        })?;
        let Some(row) = row else { return Ok(None) };
        let (bytes, sha, version): (Vec<u8>, String, i64) = (row.get(0), row.get(1), row.get(2));
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
        Ok(Some((state, version.unsigned_abs())))
    }

    /// Runs in a scope, newest first (every scope when `None`: operators only).
    ///
    /// # Errors
    /// The database's errors.
    pub fn list_runs(&self, scope: Option<Scope>) -> Result<Vec<RunSummary>, StoreError> {
        let rows = self.conn.block_on(async {
            let client = self.conn.client("list runs").await?;
            let columns = "SELECT tenant_id, namespace_id, run_id, scenario_id, status, version, saved_at_ms FROM runs";
            match scope {
                Some(s) => {
                    client
                        .query(
                            &format!(
                            "{columns} WHERE tenant_id = $1 AND namespace_id = $2 ORDER BY saved_at_ms DESC, run_id"
                        ),
                            &[&to_sql(s.tenant_id), &to_sql(s.namespace_id)],
                        )
                        .await
                }
                None => {
                    client
                        .query(&format!("{columns} ORDER BY tenant_id, namespace_id, saved_at_ms DESC, run_id"), &[])
                        .await
                }
            }
            .map_err(pg("list runs"))
        })?;
        Ok(rows.iter().map(run_summary).collect())
    }

    /// Runs by status over every tenant (for /metrics), from the totals every write keeps.
    ///
    /// # Errors
    /// The database's errors.
    pub fn count_runs_by_status(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let row = self.conn.block_on(async {
            let client = self.conn.client("count runs").await?;

            cached::query_one(
                &client,
                "SELECT coalesce(sum(runs_active), 0)::bigint, coalesce(sum(runs_completed), 0)::bigint,
                            coalesce(sum(runs_failed), 0)::bigint FROM tenant_usage",
                &[],
            )
            .await
            .map_err(pg("count runs"))
        })?;
        let sums: [i64; 3] = [row.get(0), row.get(1), row.get(2)];
        Ok(run_counts::STATUSES
            .iter()
            .zip(sums)
            .map(|(status, count)| (status.as_str().to_string(), count.unsigned_abs()))
            .collect())
    }
}

/// A row of `SELECT tenant_id, namespace_id, run_id, scenario_id, status, version,
/// saved_at_ms FROM runs`.
pub(crate) fn run_summary(row: &tokio_postgres::Row) -> RunSummary {
    RunSummary {
        scope: Scope::new(row.get::<_, i64>(0).unsigned_abs(), row.get::<_, i64>(1).unsigned_abs()),
        run_id: row.get(2),
        scenario_id: row.get(3),
        status: row.get(4),
        version: row.get::<_, i64>(5).unsigned_abs(),
        saved_at_ms: row.get(6),
    }
}
