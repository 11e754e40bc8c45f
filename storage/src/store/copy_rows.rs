//! The SQLite side of `store copy` (`copy.rs`): every row read as a [`CopyRecord`] (run
//! states unpacked to their canonical JSON, audit entries walked through the sealed
//! segments too), and rows written into an empty store in batches, with the kept totals
//! recounted at the end.

use std::ops::ControlFlow;

use rusqlite::{params, Connection};

use crate::copy_record::CopyRecord;
use crate::error::StoreError;
use crate::store::audit_segments::{each_entry, Walk};
use crate::store::{exec, to_sql, Store};

type Visit<'a> = &'a mut dyn FnMut(CopyRecord) -> Result<(), StoreError>;

/// Runs `sql` and hands each row, mapped, to `visit`.
fn each_row(
    conn: &Connection,
    sql: &str,
    map: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<CopyRecord>,
    visit: Visit<'_>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(sql).map_err(StoreError::sqlite("read for copy"))?;
    let mut rows = stmt.query([]).map_err(StoreError::sqlite("read for copy"))?;
    while let Some(row) = rows.next().map_err(StoreError::sqlite("read for copy"))? {
        visit(map(row).map_err(StoreError::sqlite("read for copy"))?)?;
    }
    Ok(())
}

impl Store {
    /// Whether the store holds no state a copy could overwrite (keys, runs, scenarios,
    /// shapes, audit entries).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn is_empty_store(&self) -> Result<bool, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT (SELECT count(*) FROM api_keys) + (SELECT count(*) FROM runs) + (SELECT count(*) FROM scenarios)
                      + (SELECT count(*) FROM data_shapes) + (SELECT count(*) FROM audit_log)
                      + (SELECT count(*) FROM audit_segments)",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|count| count == 0)
            .map_err(StoreError::sqlite("count rows"))
        })
    }

    /// Every row, in an order a target can load (registry, documents, chain, ledger).
    ///
    /// # Errors
    /// SQLite errors, a damaged stored form.
    pub fn dump(&self, visit: Visit<'_>) -> Result<(), StoreError> {
        self.read(|conn| {
            each_row(conn, "SELECT tenant_id, name, status, quotas_json, created_at_ms FROM tenants ORDER BY tenant_id", |r| {
                Ok(CopyRecord::Tenant { tenant_id: r.get(0)?, name: r.get(1)?, status: r.get(2)?, quotas_json: r.get(3)?, created_at_ms: r.get(4)? })
            }, visit)?;
            each_row(conn, "SELECT tenant_id, namespace_id, name, status, created_at_ms FROM namespaces ORDER BY tenant_id, namespace_id", |r| {
                Ok(CopyRecord::Namespace { tenant_id: r.get(0)?, namespace_id: r.get(1)?, name: r.get(2)?, status: r.get(3)?, created_at_ms: r.get(4)? })
            }, visit)?;
            each_row(conn, "SELECT key_id, record_json, record_sha256, secret_sha256 FROM api_keys ORDER BY key_id", |r| {
                Ok(CopyRecord::ApiKey { key_id: r.get(0)?, record_json: r.get(1)?, record_sha256: r.get(2)?, secret_sha256: r.get(3)? })
            }, visit)?;
            each_row(conn, "SELECT subject, tenant_id, record_json, record_sha256 FROM oidc_subjects ORDER BY subject", |r| {
                Ok(CopyRecord::OidcSubject { subject: r.get(0)?, tenant_id: r.get(1)?, record_json: r.get(2)?, record_sha256: r.get(3)? })
            }, visit)?;
            each_row(conn, "SELECT tenant_id, namespace_id, scenario_id, spec_json, spec_sha256, created_at_ms FROM scenarios ORDER BY tenant_id, namespace_id, scenario_id", |r| {
                Ok(CopyRecord::Scenario { tenant_id: r.get(0)?, namespace_id: r.get(1)?, scenario_id: r.get(2)?, spec_json: r.get(3)?, spec_sha256: r.get(4)?, created_at_ms: r.get(5)? })
            }, visit)?;
            each_row(conn, "SELECT tenant_id, namespace_id, schema_id, version, record_json, record_sha256 FROM data_shapes ORDER BY tenant_id, namespace_id, schema_id, version", |r| {
                Ok(CopyRecord::Shape { tenant_id: r.get(0)?, namespace_id: r.get(1)?, schema_id: r.get(2)?, version: r.get(3)?, record_json: r.get(4)?, record_sha256: r.get(5)? })
            }, visit)?;
            // Run states leave in their canonical JSON, whatever form they are kept in here.
            let mut runs = Vec::new();
            each_row(conn, "SELECT tenant_id, namespace_id, run_id, scenario_id, status, version, state_json, state_sha256, saved_at_ms FROM runs ORDER BY tenant_id, namespace_id, run_id", |r| {
                Ok(CopyRecord::Run { tenant_id: r.get(0)?, namespace_id: r.get(1)?, run_id: r.get(2)?, scenario_id: r.get(3)?, status: r.get(4)?, version: r.get(5)?, state_json: r.get(6)?, state_sha256: r.get(7)?, saved_at_ms: r.get(8)? })
            }, &mut |record| {
                runs.push(record);
                Ok(())
            })?;
            for mut record in runs {
                if let CopyRecord::Run { state_json, run_id, .. } = &mut record {
                    let key = run_id.clone();
                    *state_json = crate::compact::unpack(state_json, "runs", || key.clone())?.into_owned();
                }
                visit(record)?;
            }
            each_entry(conn, Walk::From(1), &mut |entry| {
                visit(CopyRecord::AuditEntry {
                    seq: to_sql(entry.seq),
                    entry_json: entry.json,
                    entry_sha256: entry.sha256,
                    tenant_id: entry.tenant_id.map(to_sql),
                    time_ms: entry.time_ms,
                })?;
                Ok(ControlFlow::Continue(()))
            })?;
            each_row(conn, "SELECT entry_count, checkpoint_json FROM audit_checkpoints ORDER BY entry_count", |r| {
                Ok(CopyRecord::Checkpoint { entry_count: r.get(0)?, checkpoint_json: r.get(1)? })
            }, visit)?;
            each_row(conn, "SELECT tenant_id, reason, created_at_ms FROM audit_holds ORDER BY tenant_id", |r| {
                Ok(CopyRecord::Hold { tenant_id: r.get(0)?, reason: r.get(1)?, created_at_ms: r.get(2)? })
            }, visit)?;
            each_row(conn, "SELECT tenant_id, request_id, counter, key_id, amount, at_ms FROM usage_ledger ORDER BY tenant_id, request_id, counter", |r| {
                Ok(CopyRecord::Usage { tenant_id: r.get(0)?, request_id: r.get(1)?, counter: r.get(2)?, key_id: r.get(3)?, amount: r.get(4)?, at_ms: r.get(5)? })
            }, visit)?;
            each_row(conn, "SELECT tenant_id, counter, period, total FROM usage_periods ORDER BY tenant_id, counter, period", |r| {
                Ok(CopyRecord::Period { tenant_id: r.get(0)?, counter: r.get(1)?, period: r.get(2)?, total: r.get(3)? })
            }, visit)?;
            each_row(conn, "SELECT last_backup_at_ms, forward_cursor_seq FROM store_meta", |r| {
                Ok(CopyRecord::Meta { last_backup_at_ms: r.get(0)?, forward_cursor_seq: r.get(1)? })
            }, visit)
        })
    }

    /// Writes a batch of rows (one transaction).
    ///
    /// # Errors
    /// SQLite errors (a row that exists already included).
    pub fn load(&self, batch: Vec<CopyRecord>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.writer.submit(Box::new(move |conn| {
            for record in batch {
                load_one(conn, record)?;
            }
            Ok(1)
        }))?;
        Ok(())
    }

    /// After the last batch: the kept totals recounted from what was loaded.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn finish_load(&self) -> Result<(), StoreError> {
        self.writer.submit(Box::new(|conn| {
            conn.execute_batch(
                "DELETE FROM tenant_usage;
                 INSERT INTO tenant_usage (tenant_id, run_bytes, runs_active, runs_completed, runs_failed)
                   SELECT tenant_id, sum(length(state_json)), sum(status = 'active'), sum(status = 'completed'), sum(status = 'failed')
                   FROM runs GROUP BY tenant_id;
                 DELETE FROM usage_totals;
                 INSERT INTO usage_totals (tenant_id, counter, total)
                   SELECT tenant_id, counter, sum(amount) FROM usage_ledger GROUP BY tenant_id, counter;",
            )
            .map_err(StoreError::sqlite("recount after copy"))?;
            Ok(1)
        }))?;
        Ok(())
    }
}

fn load_one(conn: &Connection, record: CopyRecord) -> Result<(), StoreError> {
    let failed = StoreError::sqlite("write copied row");
    match record {
        CopyRecord::Tenant { tenant_id, name, status, quotas_json, created_at_ms } => exec(conn,
            "INSERT INTO tenants (tenant_id, name, status, quotas_json, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![tenant_id, name, status, quotas_json, created_at_ms]),
        CopyRecord::Namespace { tenant_id, namespace_id, name, status, created_at_ms } => exec(conn,
            "INSERT INTO namespaces (tenant_id, namespace_id, name, status, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![tenant_id, namespace_id, name, status, created_at_ms]),
        CopyRecord::ApiKey { key_id, record_json, record_sha256, secret_sha256 } => exec(conn,
            "INSERT INTO api_keys (key_id, record_json, record_sha256, secret_sha256) VALUES (?1, ?2, ?3, ?4)",
            params![key_id, record_json, record_sha256, secret_sha256]),
        CopyRecord::OidcSubject { subject, tenant_id, record_json, record_sha256 } => exec(conn,
            "INSERT INTO oidc_subjects (subject, tenant_id, record_json, record_sha256) VALUES (?1, ?2, ?3, ?4)",
            params![subject, tenant_id, record_json, record_sha256]),
        CopyRecord::Scenario { tenant_id, namespace_id, scenario_id, spec_json, spec_sha256, created_at_ms } => exec(conn,
            "INSERT INTO scenarios (tenant_id, namespace_id, scenario_id, spec_json, spec_sha256, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![tenant_id, namespace_id, scenario_id, spec_json, spec_sha256, created_at_ms]),
        CopyRecord::Shape { tenant_id, namespace_id, schema_id, version, record_json, record_sha256 } => exec(conn,
            "INSERT INTO data_shapes (tenant_id, namespace_id, schema_id, version, record_json, record_sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![tenant_id, namespace_id, schema_id, version, record_json, record_sha256]),
        CopyRecord::Run { tenant_id, namespace_id, run_id, scenario_id, status, version, state_json, state_sha256, saved_at_ms } => {
            // Kept compact here, as every run this store writes.
            let stored = crate::compact::pack_run_state(&state_json);
            exec(conn,
                "INSERT INTO runs (tenant_id, namespace_id, run_id, scenario_id, status, version, state_json, state_sha256, saved_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![tenant_id, namespace_id, run_id, scenario_id, status, version, stored, state_sha256, saved_at_ms])
        }
        CopyRecord::AuditEntry { seq, entry_json, entry_sha256, tenant_id, time_ms } => exec(conn,
            "INSERT INTO audit_log (seq, entry_json, entry_sha256, tenant_id, time_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![seq, entry_json, entry_sha256, tenant_id, time_ms]),
        CopyRecord::Checkpoint { entry_count, checkpoint_json } => exec(conn,
            "INSERT INTO audit_checkpoints (entry_count, checkpoint_json) VALUES (?1, ?2)",
            params![entry_count, checkpoint_json]),
        CopyRecord::Hold { tenant_id, reason, created_at_ms } => exec(conn,
            "INSERT INTO audit_holds (tenant_id, reason, created_at_ms) VALUES (?1, ?2, ?3)",
            params![tenant_id, reason, created_at_ms]),
        CopyRecord::Usage { tenant_id, request_id, counter, key_id, amount, at_ms } => exec(conn,
            "INSERT INTO usage_ledger (tenant_id, request_id, counter, key_id, amount, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![tenant_id, request_id, counter, key_id, amount, at_ms]),
        CopyRecord::Period { tenant_id, counter, period, total } => exec(conn,
            "INSERT INTO usage_periods (tenant_id, counter, period, total) VALUES (?1, ?2, ?3, ?4)",
            params![tenant_id, counter, period, total]),
        CopyRecord::Meta { last_backup_at_ms, forward_cursor_seq } => exec(conn,
            "UPDATE store_meta SET last_backup_at_ms = ?1, forward_cursor_seq = ?2",
            params![last_backup_at_ms, forward_cursor_seq]),
    }
    .map_err(failed)?;
    Ok(())
}
