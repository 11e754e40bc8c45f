//! The audit chain's operator side on PostgreSQL: export (with what verifies it offline),
//! pruning to hashes behind a signed checkpoint with legal holds, holds, and entries as
//! values. Reads run in one repeatable-read snapshot, so appends by other nodes meanwhile
//! never show half-way through an export.

use std::io::Write;

use crate::error::StoreError;
use crate::postgres::connection::{pg, snapshot};
use crate::postgres::PgStore;
use crate::store::audit::{AuditEntry, Checkpoint, GENESIS_SHA256};
use crate::store::to_sql;

/// Entries read per page by export and listing.
const PAGE: i64 = 4096;

fn corrupt(seq: i64, err: &serde_json::Error) -> StoreError {
    StoreError::Corrupt { table: "audit_log", key: seq.to_string(), reason: err.to_string() }
}

fn checkpoint_of(bytes: &[u8], key: &str) -> Result<Checkpoint, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt {
        table: "audit_checkpoints",
        key: key.to_string(),
        reason: err.to_string(),
    })
}

impl PgStore {
    /// Writes entries from `since_ms` as JSON lines with the checkpoints that verify them
    /// offline (the format of the SQLite store's export, `verify_export` reads both). The
    /// export ends at the newest signed checkpoint found when it starts: entries appended
    /// after it, by any node, belong to the next export; pages are read one round trip at a
    /// time, so memory stays bounded by a page.
    ///
    /// # Errors
    /// The database's or write errors.
    pub fn export_audit(&self, since_ms: i64, out: &mut dyn Write) -> Result<u64, StoreError> {
        let io = |source| StoreError::Io { operation: "write audit export", source };
        let (first, signed_through, anchor, previous, checkpoints) = self.conn.block_on(async {
            let mut client = self.conn.client("export audit").await?;
            let tx = snapshot(&mut client, "begin audit export").await?;
            // The newest signed checkpoint bounds the export: entries after it could not be
            // verified offline and belong to the next one.
            let signed_through: i64 = tx
                .query_one("SELECT coalesce(max(entry_count), 0) FROM audit_checkpoints", &[])
                .await
                .map_err(pg("export audit"))?
                .get(0);
            let first: i64 = tx
                .query_one("SELECT coalesce(min(seq), 9223372036854775807) FROM audit_log WHERE time_ms >= $1", &[&since_ms])
                .await
                .map_err(pg("export audit"))?
                .get(0);
            let anchor: Option<String> = match first.checked_sub(1).filter(|seq| *seq > 0) {
                Some(before) => tx
                    .query_opt("SELECT entry_sha256 FROM audit_log WHERE seq = $1", &[&before])
                    .await
                    .map_err(pg("export audit"))?
                    .map(|row| row.get(0)),
                None => None,
            };
            let previous: Option<Vec<u8>> = tx
                .query_opt(
                    "SELECT checkpoint_json FROM audit_checkpoints WHERE entry_count < $1 ORDER BY entry_count DESC LIMIT 1",
                    &[&first],
                )
                .await
                .map_err(pg("export audit"))?
                .map(|row| row.get(0));
            let checkpoints: Vec<(i64, Vec<u8>)> = tx
                .query(
                    "SELECT entry_count, checkpoint_json FROM audit_checkpoints
                     WHERE entry_count >= $1 AND entry_count <= $2 ORDER BY entry_count",
                    &[&first, &signed_through],
                )
                .await
                .map_err(pg("export audit"))?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            tx.commit().await.map_err(pg("end audit export"))?;
            Ok::<_, StoreError>((first, signed_through, anchor, previous, checkpoints))
        })?;
        let anchor = anchor.unwrap_or_else(|| GENESIS_SHA256.to_string());
        let header = serde_json::json!({"type": "header", "format": "dg-audit-export-v1", "instance_id": self.instance_id(),
                                        "first_seq": first.min(i64::MAX - 1), "anchor_sha256": anchor, "since_ms": since_ms});
        writeln!(out, "{header}").map_err(io)?;
        let mut count = 0u64;
        let mut after = first - 1;
        loop {
            let rows = self.query(
                "export audit",
                "SELECT seq, entry_json, entry_sha256 FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                &[&after, &signed_through, &PAGE],
            )?;
            for row in &rows {
                let seq: i64 = row.get(0);
                let json: Option<Vec<u8>> = row.get(1);
                let entry: serde_json::Value = match json {
                    Some(bytes) => serde_json::from_slice(&bytes).map_err(|err| corrupt(seq, &err))?,
                    None => serde_json::Value::Null,
                };
                let sha: String = row.get(2);
                writeln!(out, "{}", serde_json::json!({"type": "entry", "seq": seq, "sha256": sha, "entry": entry}))
                    .map_err(io)?;
                count += 1;
                after = seq;
            }
            if i64::try_from(rows.len()).unwrap_or(i64::MAX) < PAGE {
                break;
            }
        }
        if let Some(bytes) = previous {
            let checkpoint = checkpoint_of(&bytes, "previous")?;
            writeln!(out, "{}", serde_json::json!({"type": "previous_checkpoint", "checkpoint": checkpoint}))
                .map_err(io)?;
        }
        for (count_key, bytes) in checkpoints {
            let checkpoint = checkpoint_of(&bytes, &count_key.to_string())?;
            writeln!(out, "{}", serde_json::json!({"type": "checkpoint", "checkpoint": checkpoint})).map_err(io)?;
        }
        Ok(count)
    }

    /// Prunes entries older than `before_ms` to their hashes, up to the newest signed
    /// checkpoint older than that, sparing tenants under legal hold. Returns how many.
    ///
    /// # Errors
    /// The database's errors.
    pub fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        let rows = self.execute(
            "prune audit",
            "WITH bound AS (
                 SELECT max(entry_count) AS seq FROM audit_checkpoints
                 WHERE entry_count <= (SELECT max(seq) FROM audit_log WHERE time_ms < $1))
             UPDATE audit_log SET entry_json = NULL FROM bound
             WHERE audit_log.seq <= bound.seq AND entry_json IS NOT NULL
               AND (tenant_id IS NULL OR tenant_id NOT IN (SELECT tenant_id FROM audit_holds))",
            &[&before_ms],
        )?;
        Ok(rows)
    }

    /// Puts a tenant's audit entries under legal hold (never pruned) or releases them.
    ///
    /// # Errors
    /// The database's errors.
    pub fn set_legal_hold(&self, tenant_id: u64, reason: Option<&str>) -> Result<(), StoreError> {
        match reason {
            Some(reason) => self.execute(
                "set legal hold",
                "INSERT INTO audit_holds (tenant_id, reason, created_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant_id) DO UPDATE SET reason = $2",
                &[&to_sql(tenant_id), &reason, &crate::clock::now_ms()],
            ),
            None => {
                self.execute("set legal hold", "DELETE FROM audit_holds WHERE tenant_id = $1", &[&to_sql(tenant_id)])
            }
        }?;
        Ok(())
    }

    /// Audit entries from `since_seq` as parsed values (pruned ones skipped).
    ///
    /// # Errors
    /// The database's errors, or an entry that does not parse.
    pub fn audit_entries(&self, since_seq: u64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self.query(
            "read audit entries",
            "SELECT seq, entry_json FROM audit_log WHERE seq >= $1 AND entry_json IS NOT NULL ORDER BY seq",
            &[&to_sql(since_seq)],
        )?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.get(0);
                serde_json::from_slice(&row.get::<_, Vec<u8>>(1)).map_err(|err| corrupt(seq, &err))
            })
            .collect()
    }
}
