//! Facts about the data directory kept beside its data: when it was last backed up.

use crate::clock::now_ms;
use crate::error::StoreError;
use crate::store::{exec, query_one, Store};

impl Store {
    /// Records a verified backup of this data directory (at `now`).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn record_backup(&self) -> Result<(), StoreError> {
        let at = now_ms();
        self.writer.submit(Box::new(move |conn| {
            exec(conn, "UPDATE store_meta SET last_backup_at_ms = max(coalesce(last_backup_at_ms, 0), ?1)", [at])
                .map_err(StoreError::sqlite("record backup"))?;
            Ok(1)
        }))?;
        Ok(())
    }

    /// When the last verified backup was made (unix ms), if ever.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn last_backup_at_ms(&self) -> Result<Option<i64>, StoreError> {
        self.read(|conn| {
            query_one(conn, "SELECT last_backup_at_ms FROM store_meta", [], |row| row.get(0))
                .map_err(StoreError::sqlite("read last backup"))
        })
    }
}
