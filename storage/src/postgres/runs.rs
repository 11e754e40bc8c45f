//! Run state on PostgreSQL: one row per run, written with its audit batch in one transaction.
//! Optimistic concurrency on `version`: an update names the version it read, and a row moved
//! on by another node meanwhile (any node: the `WHERE version = $n` is re-checked on the
//! committed row) makes it a [`StoreError::Conflict`]: one writer wins, nothing is lost.

use dg_engine::state::RunState;

use crate::document::{decode, encode};
use crate::error::StoreError;
use crate::postgres::connection::{cached, pg};
use crate::postgres::{audit, PgStore};
use crate::store::audit::AuditBatch;
use crate::store::run_counts;
use crate::store::to_sql;
use crate::store::{RunSummary, Scope};

impl PgStore {
    /// Stores a new run (version 1) with its audit batch.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the run exists; size limits; the database's errors.
    pub fn create_run(&self, state: &RunState, audit: AuditBatch) -> Result<u64, StoreError> {
        self.save_run(state, None, audit)
    }

    /// Saves a run whose stored version is `expected_version`; returns the new version.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when another writer moved it on; size limits; the database's errors.
    pub fn update_run(&self, state: &RunState, expected_version: u64, audit: AuditBatch) -> Result<u64, StoreError> {
        self.save_run(state, Some(expected_version), audit)
    }

    fn save_run(&self, state: &RunState, expected: Option<u64>, batch: AuditBatch) -> Result<u64, StoreError> {
        let doc = encode(state, "run state", self.limits.max_run_state_bytes)?;
        let (tenant, namespace) = (to_sql(state.tenant_id.get()), to_sql(state.namespace_id.get()));
        let run_id = state.run_id.as_str();
        let status = state.status.as_str();
        let saved_at = crate::clock::now_ms();
        let new_len = i64::try_from(doc.bytes.len()).unwrap_or(i64::MAX);
        let signer = self.signer();
        self.conn.block_on(async {
            let mut client = self.conn.client("save run").await?;
            let tx = client.transaction().await.map_err(pg("begin run write"))?;
            let (version, old) = match expected {
                None => {
                    let inserted =
                        cached::execute(&tx, "INSERT INTO runs (tenant_id, namespace_id, run_id, scenario_id, status, version, state_json, state_sha256, saved_at_ms)
                             VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8) ON CONFLICT DO NOTHING",
                            &[&tenant, &namespace, &run_id, &state.scenario_id, &status, &doc.bytes, &doc.sha256, &saved_at],
                        )
                        .await
                        .map_err(pg("insert run"))?;
                    if inserted == 0 {
                        return Err(StoreError::Conflict(format!("run already exists: {run_id}")));
                    }
                    (1, None)
                }
                Some(version) => {
                    // The old row's size and status come back from the same statement that
                    // moves it on (a CTE reads the row as it was before the update).
                    let row =
                        cached::query_opt(&tx, "WITH old AS (SELECT length(state_json) AS len, status FROM runs
                                          WHERE tenant_id = $1 AND namespace_id = $2 AND run_id = $3 AND version = $4 FOR UPDATE)
                             UPDATE runs SET status = $5, version = version + 1, state_json = $6, state_sha256 = $7, saved_at_ms = $8
                             FROM old WHERE tenant_id = $1 AND namespace_id = $2 AND run_id = $3 AND version = $4
                             RETURNING runs.version, old.len, old.status",
                            &[&tenant, &namespace, &run_id, &to_sql(version), &status, &doc.bytes, &doc.sha256, &saved_at],
                        )
                        .await
                        .map_err(pg("update run"))?;
                    let Some(row) = row else {
                        return Err(StoreError::Conflict(format!("run {run_id} was changed concurrently")));
                    };
                    (row.get::<_, i64>(0), Some((row.get::<_, i32>(1), row.get::<_, String>(2))))
                }
            };
            let moved = run_counts::deltas(run_id, old.as_ref().map(|(_, s)| s.as_str()), state.status)?;
            let delta = new_len - old.as_ref().map_or(0, |(len, _)| i64::from(*len));
            // The tenant's kept totals, then the audit append: always in this order (rows of
            // the run, the tenant, then the chain head), in every transaction of every node, so
            // two writers never wait on each other in a circle.
            let row = cached::query_one(
                &tx,
                "INSERT INTO tenant_usage (tenant_id, run_bytes, runs_active, runs_completed, runs_failed) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant_id) DO UPDATE SET run_bytes = tenant_usage.run_bytes + $2,
                     runs_active = tenant_usage.runs_active + $3, runs_completed = tenant_usage.runs_completed + $4,
                     runs_failed = tenant_usage.runs_failed + $5
                 RETURNING run_bytes",
                &[&tenant, &delta, &moved[0], &moved[1], &moved[2]],
            )
            .await
            .map_err(pg("update tenant usage"))?;
            if !batch.is_empty() {
                audit::append_in(&tx, batch.events, &batch.usage, signer.as_ref()).await?;
            }
            let after: i64 = row.get(0);
            let limit = self.limits.max_tenant_run_bytes;
            if delta > 0 && u64::try_from(after).unwrap_or(u64::MAX) > limit {
                // Dropping the transaction rolls all of it back.
                return Err(StoreError::TooLarge {
                    what: "tenant run state storage",
                    actual: usize::try_from(after).unwrap_or(usize::MAX),
                    limit: usize::try_from(limit).unwrap_or(usize::MAX),
                });
            }
            tx.commit().await.map_err(pg("commit run write"))?;
            Ok(version.unsigned_abs())
        })
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
