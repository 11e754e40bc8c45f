//! The PostgreSQL side of `store copy` (`copy.rs`): every row read as a [`CopyRecord`]
//! through portals of one repeatable-read snapshot (a page at a time, so memory stays
//! bounded), and rows written into an empty database a batch per transaction, with the chain
//! head and the kept totals set from what was loaded at the end.

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::copy_record::CopyRecord;
use crate::error::StoreError;
use crate::postgres::connection::{pg, snapshot};
use crate::postgres::PgStore;

/// Rows per page read.
const PAGE: i32 = 500;

type Visit<'a> = &'a mut dyn FnMut(CopyRecord) -> Result<(), StoreError>;

/// (query, mapping) of every table, in load order.
type Table = (&'static str, fn(&Row) -> CopyRecord);

const TABLES: [Table; 13] = [
    ("SELECT tenant_id, name, status, quotas_json, created_at_ms FROM tenants ORDER BY tenant_id", |r| {
        CopyRecord::Tenant { tenant_id: r.get(0), name: r.get(1), status: r.get(2), quotas_json: r.get(3), created_at_ms: r.get(4) }
    }),
    ("SELECT tenant_id, namespace_id, name, status, created_at_ms FROM namespaces ORDER BY tenant_id, namespace_id", |r| {
        CopyRecord::Namespace { tenant_id: r.get(0), namespace_id: r.get(1), name: r.get(2), status: r.get(3), created_at_ms: r.get(4) }
    }),
    ("SELECT key_id, record_json, record_sha256, secret_sha256 FROM api_keys ORDER BY key_id", |r| {
        CopyRecord::ApiKey { key_id: r.get(0), record_json: r.get(1), record_sha256: r.get(2), secret_sha256: r.get(3) }
    }),
    ("SELECT subject, tenant_id, record_json, record_sha256 FROM oidc_subjects ORDER BY subject", |r| {
        CopyRecord::OidcSubject { subject: r.get(0), tenant_id: r.get(1), record_json: r.get(2), record_sha256: r.get(3) }
    }),
    ("SELECT tenant_id, namespace_id, scenario_id, spec_json, spec_sha256, created_at_ms FROM scenarios ORDER BY 1, 2, 3", |r| {
        CopyRecord::Scenario {
            tenant_id: r.get(0),
            namespace_id: r.get(1),
            scenario_id: r.get(2),
            spec_json: r.get(3),
            spec_sha256: r.get(4),
            created_at_ms: r.get(5),
        }
    }),
    ("SELECT tenant_id, namespace_id, schema_id, version, record_json, record_sha256 FROM data_shapes ORDER BY 1, 2, 3, 4", |r| {
        CopyRecord::Shape {
            tenant_id: r.get(0),
            namespace_id: r.get(1),
            schema_id: r.get(2),
            version: r.get(3),
            record_json: r.get(4),
            record_sha256: r.get(5),
        }
    }),
    (
        "SELECT tenant_id, namespace_id, run_id, scenario_id, status, version, state_json, state_sha256, saved_at_ms FROM runs ORDER BY 1, 2, 3",
        |r| CopyRecord::Run {
            tenant_id: r.get(0),
            namespace_id: r.get(1),
            run_id: r.get(2),
            scenario_id: r.get(3),
            status: r.get(4),
            version: r.get(5),
            state_json: r.get(6),
            state_sha256: r.get(7),
            saved_at_ms: r.get(8),
        },
    ),
    ("SELECT seq, entry_json, entry_sha256, tenant_id, time_ms FROM audit_log ORDER BY seq", |r| CopyRecord::AuditEntry {
        seq: r.get(0),
        entry_json: r.get(1),
        entry_sha256: r.get(2),
        tenant_id: r.get(3),
        time_ms: r.get(4),
    }),
    ("SELECT entry_count, checkpoint_json FROM audit_checkpoints ORDER BY entry_count", |r| CopyRecord::Checkpoint {
        entry_count: r.get(0),
        checkpoint_json: r.get(1),
    }),
    ("SELECT tenant_id, reason, created_at_ms FROM audit_holds ORDER BY tenant_id", |r| CopyRecord::Hold {
        tenant_id: r.get(0),
        reason: r.get(1),
        created_at_ms: r.get(2),
    }),
    ("SELECT tenant_id, request_id, counter, key_id, amount, at_ms FROM usage_ledger ORDER BY 1, 2, 3", |r| CopyRecord::Usage {
        tenant_id: r.get(0),
        request_id: r.get(1),
        counter: r.get(2),
        key_id: r.get(3),
        amount: r.get(4),
        at_ms: r.get(5),
    }),
    ("SELECT tenant_id, counter, period, total FROM usage_periods ORDER BY 1, 2, 3", |r| CopyRecord::Period {
        tenant_id: r.get(0),
        counter: r.get(1),
        period: r.get(2),
        total: r.get(3),
    }),
    ("SELECT last_backup_at_ms, forward_cursor_seq FROM dg_meta", |r| CopyRecord::Meta {
        last_backup_at_ms: r.get(0),
        forward_cursor_seq: r.get(1),
    }),
];

impl PgStore {
    /// Whether the database holds no state a copy could overwrite.
    ///
    /// # Errors
    /// The database's errors.
    pub fn is_empty_store(&self) -> Result<bool, StoreError> {
        let rows = self.query(
            "count rows",
            "SELECT (SELECT count(*) FROM api_keys) + (SELECT count(*) FROM runs) + (SELECT count(*) FROM scenarios)
                  + (SELECT count(*) FROM data_shapes) + (SELECT count(*) FROM audit_log)",
            &[],
        )?;
        Ok(rows.first().is_some_and(|row| row.get::<_, i64>(0) == 0))
    }

    /// Every row, in load order, from one snapshot.
    ///
    /// # Errors
    /// The database's errors.
    pub fn dump(&self, visit: Visit<'_>) -> Result<(), StoreError> {
        let mut client = self.conn.block_on(self.conn.client("read for copy"))?;
        let tx = self.conn.block_on(snapshot(&mut client, "begin copy snapshot"))?;
        for (sql, map) in TABLES {
            let portal = self.conn.block_on(tx.bind(sql, &[])).map_err(pg("read for copy"))?;
            loop {
                let rows = self.conn.block_on(tx.query_portal(&portal, PAGE)).map_err(pg("read for copy"))?;
                for row in &rows {
                    visit(map(row))?;
                }
                if rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
                    break;
                }
            }
        }
        self.conn.block_on(tx.commit()).map_err(pg("end copy snapshot"))
    }

    /// Writes a batch of rows (one transaction).
    ///
    /// # Errors
    /// The database's errors (a row that exists already included).
    pub fn load(&self, batch: Vec<CopyRecord>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.conn.block_on(async {
            let mut client = self.conn.client("write copied rows").await?;
            let tx = client.transaction().await.map_err(pg("begin copy batch"))?;
            for record in &batch {
                let (sql, params) = insert_of(record);
                tx.execute(sql, &params).await.map_err(pg("write copied row"))?;
            }
            tx.commit().await.map_err(pg("commit copy batch"))
        })
    }

    /// After the last batch: the chain head from the newest entry, the kept totals recounted.
    ///
    /// # Errors
    /// The database's errors.
    pub fn finish_load(&self) -> Result<(), StoreError> {
        self.conn.block_on(async {
            let client = self.conn.client("finish copy").await?;
            client
                .batch_execute(
                    "BEGIN;
                     UPDATE audit_head SET (seq, sha256, time_ms) =
                       (SELECT seq, entry_sha256, time_ms FROM audit_log ORDER BY seq DESC LIMIT 1)
                       WHERE EXISTS (SELECT 1 FROM audit_log);
                     DELETE FROM tenant_usage;
                     INSERT INTO tenant_usage (tenant_id, run_bytes, runs_active, runs_completed, runs_failed)
                       SELECT tenant_id, sum(length(state_json)), count(*) FILTER (WHERE status = 'active'),
                              count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed')
                       FROM runs GROUP BY tenant_id;
                     DELETE FROM usage_totals;
                     INSERT INTO usage_totals (tenant_id, counter, total)
                       SELECT tenant_id, counter, sum(amount) FROM usage_ledger GROUP BY tenant_id, counter;
                     COMMIT;",
                )
                .await
                .map_err(pg("finish copy"))
        })
    }
}

/// The insert of one row and its parameters.
fn insert_of(record: &CopyRecord) -> (&'static str, Vec<&(dyn ToSql + Sync)>) {
    match record {
        CopyRecord::Tenant { tenant_id, name, status, quotas_json, created_at_ms } => (
            "INSERT INTO tenants (tenant_id, name, status, quotas_json, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
            vec![tenant_id, name, status, quotas_json, created_at_ms],
        ),
        CopyRecord::Namespace { tenant_id, namespace_id, name, status, created_at_ms } => (
            "INSERT INTO namespaces (tenant_id, namespace_id, name, status, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
            vec![tenant_id, namespace_id, name, status, created_at_ms],
        ),
        CopyRecord::ApiKey { key_id, record_json, record_sha256, secret_sha256 } => (
            "INSERT INTO api_keys (key_id, record_json, record_sha256, secret_sha256) VALUES ($1, $2, $3, $4)",
            vec![key_id, record_json, record_sha256, secret_sha256],
        ),
        CopyRecord::OidcSubject { subject, tenant_id, record_json, record_sha256 } => (
            "INSERT INTO oidc_subjects (subject, tenant_id, record_json, record_sha256) VALUES ($1, $2, $3, $4)",
            vec![subject, tenant_id, record_json, record_sha256],
        ),
        CopyRecord::Scenario { tenant_id, namespace_id, scenario_id, spec_json, spec_sha256, created_at_ms } => (
            "INSERT INTO scenarios (tenant_id, namespace_id, scenario_id, spec_json, spec_sha256, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            vec![tenant_id, namespace_id, scenario_id, spec_json, spec_sha256, created_at_ms],
        ),
        CopyRecord::Shape { tenant_id, namespace_id, schema_id, version, record_json, record_sha256 } => (
            "INSERT INTO data_shapes (tenant_id, namespace_id, schema_id, version, record_json, record_sha256) VALUES ($1, $2, $3, $4, $5, $6)",
            vec![tenant_id, namespace_id, schema_id, version, record_json, record_sha256],
        ),
        CopyRecord::Run { tenant_id, namespace_id, run_id, scenario_id, status, version, state_json, state_sha256, saved_at_ms } => (
            "INSERT INTO runs (tenant_id, namespace_id, run_id, scenario_id, status, version, state_json, state_sha256, saved_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            vec![tenant_id, namespace_id, run_id, scenario_id, status, version, state_json, state_sha256, saved_at_ms],
        ),
        CopyRecord::AuditEntry { seq, entry_json, entry_sha256, tenant_id, time_ms } => (
            "INSERT INTO audit_log (seq, entry_json, entry_sha256, tenant_id, time_ms) VALUES ($1, $2, $3, $4, $5)",
            vec![seq, entry_json, entry_sha256, tenant_id, time_ms],
        ),
        CopyRecord::Checkpoint { entry_count, checkpoint_json } => {
            ("INSERT INTO audit_checkpoints (entry_count, checkpoint_json) VALUES ($1, $2)", vec![entry_count, checkpoint_json])
        }
        CopyRecord::Hold { tenant_id, reason, created_at_ms } => (
            "INSERT INTO audit_holds (tenant_id, reason, created_at_ms) VALUES ($1, $2, $3)",
            vec![tenant_id, reason, created_at_ms],
        ),
        CopyRecord::Usage { tenant_id, request_id, counter, key_id, amount, at_ms } => (
            "INSERT INTO usage_ledger (tenant_id, request_id, counter, key_id, amount, at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            vec![tenant_id, request_id, counter, key_id, amount, at_ms],
        ),
        CopyRecord::Period { tenant_id, counter, period, total } => (
            "INSERT INTO usage_periods (tenant_id, counter, period, total) VALUES ($1, $2, $3, $4)",
            vec![tenant_id, counter, period, total],
        ),
        CopyRecord::Meta { last_backup_at_ms, forward_cursor_seq } => (
            "UPDATE dg_meta SET last_backup_at_ms = $1, forward_cursor_seq = $2",
            vec![last_backup_at_ms, forward_cursor_seq],
        ),
    }
}
