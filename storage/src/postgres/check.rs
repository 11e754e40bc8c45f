//! `store check` on PostgreSQL: every stored document against its sha256 and its row's key
//! (`document::names_its_row`; read through
//! portals, a thousand rows at a time, so memory stays bounded whatever the table's size),
//! and each tenant's kept run bytes and counts against a recount of its runs.

use crate::document::{decode, names_its_row};
use crate::error::StoreError;
use crate::postgres::connection::{pg, snapshot};
use crate::postgres::PgStore;
use crate::store::CheckReport;

/// Rows fetched per round trip.
const BATCH: i32 = 1000;

/// (table, key expression, document column, hash column).
const DOCUMENTS: [(&str, &str, &str, &str); 5] = [
    ("runs", "tenant_id || '/' || namespace_id || '/' || run_id", "state_json", "state_sha256"),
    ("scenarios", "tenant_id || '/' || namespace_id || '/' || scenario_id", "spec_json", "spec_sha256"),
    (
        "data_shapes",
        "tenant_id || '/' || namespace_id || '/' || schema_id || '@' || version",
        "record_json",
        "record_sha256",
    ),
    ("api_keys", "key_id", "record_json", "record_sha256"),
    ("oidc_subjects", "subject", "record_json", "record_sha256"),
];

impl PgStore {
    /// Checks every document and the kept run totals. `integrity_check` is `ok` when every
    /// table was read to its end without an error from the server (PostgreSQL checks its own
    /// pages as it reads them; there is no separate integrity pragma).
    ///
    /// # Errors
    /// The database's errors while reading.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        self.conn.block_on(async {
            let mut client = self.conn.client("check").await?;
            let tx = snapshot(&mut client, "begin check").await?;
            let mut report = CheckReport {
                integrity_check: vec!["ok".to_string()],
                documents_checked: 0,
                failures: Vec::new(),
                usage_drift: Vec::new(),
            };
            for (table, key, document, hash) in DOCUMENTS {
                let sql = format!("SELECT ({key})::text, {document}, {hash} FROM {table}");
                let portal = tx.bind(sql.as_str(), &[]).await.map_err(pg("check documents"))?;
                loop {
                    let rows = tx.query_portal(&portal, BATCH).await.map_err(pg("check documents"))?;
                    for row in &rows {
                        let key: String = row.get(0);
                        report.documents_checked += 1;
                        let bytes: Vec<u8> = row.get(1);
                        let named = decode::<serde_json::Value>(&bytes, row.get::<_, &str>(2), "check", || key.clone())
                            .is_ok_and(|document| names_its_row(table, &key, &document));
                        if !named {
                            report.failures.push(format!("{table} {key}"));
                        }
                    }
                    if rows.len() < usize::try_from(BATCH).unwrap_or(usize::MAX) {
                        break;
                    }
                }
            }
            let drift = tx
                .query(
                    "SELECT tenant_id, kept, actual FROM (
                        SELECT u.tenant_id,
                               u.run_bytes || '/' || u.runs_active || '/' || u.runs_completed || '/' || u.runs_failed AS kept,
                               coalesce(r.bytes, 0) || '/' || coalesce(r.active, 0) || '/' || coalesce(r.completed, 0) || '/' || coalesce(r.failed, 0) AS actual
                        FROM tenant_usage u LEFT JOIN (
                            SELECT tenant_id, sum(length(state_json)) AS bytes,
                                   count(*) FILTER (WHERE status = 'active') AS active,
                                   count(*) FILTER (WHERE status = 'completed') AS completed,
                                   count(*) FILTER (WHERE status = 'failed') AS failed
                            FROM runs GROUP BY tenant_id) r ON r.tenant_id = u.tenant_id
                        UNION ALL
                        SELECT DISTINCT tenant_id, 'nothing', 'runs' FROM runs WHERE tenant_id NOT IN (SELECT tenant_id FROM tenant_usage)
                    ) d WHERE kept != actual ORDER BY tenant_id",
                    &[],
                )
                .await
                .map_err(pg("check run counts"))?;
            report.usage_drift = drift
                .iter()
                .map(|row| {
                    format!(
                        "tenant_usage {}: kept bytes/active/completed/failed {}, the runs hold {}",
                        row.get::<_, i64>(0),
                        row.get::<_, String>(1),
                        row.get::<_, String>(2)
                    )
                })
                .collect();
            tx.commit().await.map_err(pg("end check"))?;
            Ok(report)
        })
    }
}
