//! The scenario registry on PostgreSQL: a scenario defined through any node is in the shared
//! database at its commit, so every node can use it at once (no node keeps a copy it has not
//! read from the database).

use std::sync::Arc;

use dg_engine::spec::ScenarioSpec;

use crate::document::{decode_scenario, encode};
use crate::error::StoreError;
use crate::postgres::connection::{cached, pg};
use crate::postgres::{audit, PgStore};
use crate::store::audit::AuditBatch;
use crate::store::to_sql;
use crate::store::{ScenarioRecord, Scope};

impl PgStore {
    /// Registers a scenario; the identical spec again is accepted (idempotent), a different
    /// spec under the same id is a [`StoreError::Conflict`]. Returns whether it was new.
    ///
    /// # Errors
    /// Conflict, size limit, the database's errors.
    pub fn put_scenario(&self, scope: Scope, spec: &ScenarioSpec, batch: AuditBatch) -> Result<bool, StoreError> {
        let doc = encode(spec, "scenario spec", self.limits.max_spec_bytes)?;
        let created = crate::clock::now_ms();
        let signer = self.signer();
        self.conn.block_on(async {
            let mut client = self.conn.client("put scenario").await?;
            let tx = client.transaction().await.map_err(pg("begin scenario write"))?;
            let (tenant, namespace) = (to_sql(scope.tenant_id), to_sql(scope.namespace_id));
            let inserted = cached::execute(
                &tx,
                "INSERT INTO scenarios (tenant_id, namespace_id, scenario_id, spec_json, spec_sha256, created_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[&tenant, &namespace, &spec.scenario_id, &doc.bytes, &doc.sha256, &created],
            )
            .await
            .map_err(pg("insert scenario"))?;
            if inserted == 0 {
                let row = cached::query_one(
                    &tx,
                    "SELECT spec_sha256 FROM scenarios WHERE tenant_id = $1 AND namespace_id = $2 AND scenario_id = $3",
                    &[&tenant, &namespace, &spec.scenario_id],
                )
                .await
                .map_err(pg("read scenario"))?;
                if row.get::<_, String>(0) != doc.sha256 {
                    return Err(StoreError::Conflict(format!(
                        "scenario already defined with a different spec: {}",
                        spec.scenario_id
                    )));
                }
            }
            if !batch.is_empty() {
                audit::append_in(&tx, batch.events, &batch.usage, signer.as_ref()).await?;
            }
            tx.commit().await.map_err(pg("commit scenario write"))?;
            Ok(inserted == 1)
        })
    }

    /// Loads a scenario from exactly this scope, checked against its sha256.
    ///
    /// # Errors
    /// [`StoreError::Integrity`] (counted), the database's errors.
    pub fn get_scenario(&self, scope: Scope, scenario_id: &str) -> Result<Option<ScenarioRecord>, StoreError> {
        Ok(self.get_scenario_sized(scope, scenario_id)?.map(|(record, _)| record))
    }

    /// [`Self::get_scenario`] with the stored document's size (what the spec cache counts).
    fn get_scenario_sized(
        &self,
        scope: Scope,
        scenario_id: &str,
    ) -> Result<Option<(ScenarioRecord, usize)>, StoreError> {
        let row = self.conn.block_on(async {
            let client = self.conn.client("load scenario").await?;

                cached::query_opt(&client, "SELECT spec_json, spec_sha256 FROM scenarios WHERE tenant_id = $1 AND namespace_id = $2 AND scenario_id = $3",
                    &[&to_sql(scope.tenant_id), &to_sql(scope.namespace_id), &scenario_id],
                )
                .await
                .map_err(pg("load scenario"))
        })?;
        let Some(row) = row else { return Ok(None) };
        let (bytes, sha): (Vec<u8>, String) = (row.get(0), row.get(1));
        let spec = decode_scenario(&bytes, &sha, (scope.tenant_id, scope.namespace_id), scenario_id)
            .map_err(|err| self.integrity_failed(err))?;
        Ok(Some((ScenarioRecord { scope, spec, spec_sha256: sha }, bytes.len())))
    }

    /// The spec stored under exactly this scope, verified on its first read and then served
    /// from this node's memory: stored scenarios never change (a different spec under an id
    /// is refused), so a copy can never be stale on any node.
    ///
    /// # Errors
    /// Integrity or the database's errors.
    pub fn scenario_spec(&self, scope: Scope, scenario_id: &str) -> Result<Option<Arc<ScenarioSpec>>, StoreError> {
        if let Some(spec) = self.scenarios.get(scope, scenario_id) {
            return Ok(Some(spec));
        }
        let Some((record, size)) = self.get_scenario_sized(scope, scenario_id)? else { return Ok(None) };
        let spec = Arc::new(record.spec);
        self.scenarios.insert(scope, spec.clone(), size);
        Ok(Some(spec))
    }

    /// Scenarios of a namespace visible to `tenant_id` (its own and the every-tenant ones),
    /// sorted by id, after `cursor`, at most `limit`.
    ///
    /// # Errors
    /// Integrity or the database's errors.
    pub fn list_scenarios(
        &self,
        tenant_id: u64,
        namespace_id: u64,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ScenarioRecord>, StoreError> {
        let rows = self.query(
            "list scenarios",
            "SELECT tenant_id, scenario_id, spec_json, spec_sha256 FROM scenarios
             WHERE tenant_id IN (0, $1) AND namespace_id = $2 AND scenario_id > $3
             ORDER BY scenario_id, tenant_id LIMIT $4",
            &[
                &to_sql(tenant_id),
                &to_sql(namespace_id),
                &cursor.unwrap_or(""),
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
        )?;
        rows.iter()
            .map(|row| {
                let (tenant, id): (i64, String) = (row.get(0), row.get(1));
                let sha: String = row.get(3);
                let spec = decode_scenario(&row.get::<_, Vec<u8>>(2), &sha, (tenant.unsigned_abs(), namespace_id), &id)
                    .map_err(|err| self.integrity_failed(err))?;
                Ok(ScenarioRecord { scope: Scope::new(tenant.unsigned_abs(), namespace_id), spec, spec_sha256: sha })
            })
            .collect()
    }
}
