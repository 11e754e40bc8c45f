//! Facts kept beside the state, one row for the deployment (`dg_meta`): the last verified
//! backup and the audit forwarding cursor; and what forwarding reads of the chain (pages of
//! stored entries as written, the head).

use crate::error::StoreError;
use crate::postgres::PgStore;
use crate::store::forwarding::StoredAuditEntry;
use crate::store::to_sql;

impl PgStore {
    /// Records a verified backup (at `now`; the time only moves forward).
    ///
    /// # Errors
    /// The database's errors.
    pub fn record_backup(&self) -> Result<(), StoreError> {
        self.execute(
            "record backup",
            "UPDATE dg_meta SET last_backup_at_ms = greatest(coalesce(last_backup_at_ms, 0), $1)",
            &[&crate::clock::now_ms()],
        )?;
        Ok(())
    }

    /// When the last verified backup was made (unix ms), if ever.
    ///
    /// # Errors
    /// The database's errors.
    pub fn last_backup_at_ms(&self) -> Result<Option<i64>, StoreError> {
        let rows = self.query("read last backup", "SELECT last_backup_at_ms FROM dg_meta", &[])?;
        Ok(rows.first().and_then(|row| row.get(0)))
    }

    /// The forwarding cursor: the last entry the collector is known to have.
    ///
    /// # Errors
    /// The database's errors.
    pub fn forward_cursor(&self) -> Result<u64, StoreError> {
        let rows = self.query("read forward cursor", "SELECT coalesce(forward_cursor_seq, 0) FROM dg_meta", &[])?;
        Ok(rows.first().map_or(0, |row| row.get::<_, i64>(0).unsigned_abs()))
    }

    /// Moves the forwarding cursor forward (never back, whichever node forwards).
    ///
    /// # Errors
    /// The database's errors.
    pub fn set_forward_cursor(&self, seq: u64) -> Result<(), StoreError> {
        self.execute(
            "write forward cursor",
            "UPDATE dg_meta SET forward_cursor_seq = greatest(coalesce(forward_cursor_seq, 0), $1)",
            &[&to_sql(seq)],
        )?;
        Ok(())
    }

    /// At most `limit` entries after `after_seq`, in order (pruned ones skipped).
    ///
    /// # Errors
    /// The database's errors.
    pub fn audit_page(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredAuditEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = self.query(
            "read audit page",
            "SELECT seq, entry_json, entry_sha256, time_ms FROM audit_log
             WHERE seq > $1 AND entry_json IS NOT NULL ORDER BY seq LIMIT $2",
            &[&to_sql(after_seq), &i64::try_from(limit).unwrap_or(i64::MAX)],
        )?;
        Ok(rows
            .iter()
            .map(|row| StoredAuditEntry {
                seq: row.get::<_, i64>(0).unsigned_abs(),
                json: row.get(1),
                sha256: row.get(2),
                time_ms: row.get(3),
            })
            .collect())
    }

    /// The newest entry's position and time (0, 0 for an empty chain).
    ///
    /// # Errors
    /// The database's errors.
    pub fn audit_head(&self) -> Result<(u64, i64), StoreError> {
        let rows = self.query("read audit head", "SELECT seq, time_ms FROM audit_head", &[])?;
        Ok(rows.first().map_or((0, 0), |row| (row.get::<_, i64>(0).unsigned_abs(), row.get(1))))
    }
}
