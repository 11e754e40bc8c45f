//! What audit forwarding reads and keeps: pages of stored entries as they are (canonical
//! JSON and hash), the chain's head, and the forwarding cursor (the last entry the
//! collector is known to have), kept in the database beside the chain it points into.

use std::ops::ControlFlow;

use crate::error::StoreError;
use crate::store::audit_segments::{self, each_entry, Walk};
use crate::store::{exec, query_one, to_sql, Store};

/// One stored audit entry, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditEntry {
    /// Its position.
    pub seq: u64,
    /// Its canonical JSON.
    pub json: Vec<u8>,
    /// sha256 of `json`.
    pub sha256: String,
    /// Its time (unix ms).
    pub time_ms: i64,
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Store {
    /// At most `limit` entries after `after_seq`, in order (pruned ones skipped).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn audit_page(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredAuditEntry>, StoreError> {
        self.read(|conn| {
            let mut page = Vec::new();
            if limit == 0 {
                return Ok(page);
            }
            each_entry(conn, Walk::From(after_seq.saturating_add(1)), &mut |stored| {
                if let Some(json) = stored.json {
                    page.push(StoredAuditEntry {
                        seq: stored.seq,
                        json,
                        sha256: stored.sha256,
                        time_ms: stored.time_ms,
                    });
                }
                Ok(if page.len() >= limit { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
            })?;
            Ok(page)
        })
    }

    /// The newest entry's position and time (0, 0 for an empty chain).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn audit_head(&self) -> Result<(u64, i64), StoreError> {
        self.read(|conn| Ok(audit_segments::newest(conn)?.map_or((0, 0), |(seq, _, time_ms)| (seq, time_ms))))
    }

    /// The forwarding cursor: the last entry the collector is known to have.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn forward_cursor(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            query_one(conn, "SELECT coalesce(forward_cursor_seq, 0) FROM store_meta", [], |row| row.get::<_, i64>(0))
                .map(to_u64)
                .map_err(StoreError::sqlite("read forward cursor"))
        })
    }

    /// Moves the forwarding cursor forward (never back).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_forward_cursor(&self, seq: u64) -> Result<(), StoreError> {
        self.writer.submit(Box::new(move |conn| {
            exec(
                conn,
                "UPDATE store_meta SET forward_cursor_seq = max(coalesce(forward_cursor_seq, 0), ?1)",
                [to_sql(seq)],
            )
            .map_err(StoreError::sqlite("write forward cursor"))?;
            Ok(1)
        }))?;
        Ok(())
    }
}
