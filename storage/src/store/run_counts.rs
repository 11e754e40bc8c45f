//! Runs stored, by status: kept exact beside each tenant's run bytes in `tenant_usage`
//! by every run write, in the row that write already updates (no extra page per commit).
//! `/metrics` reads these few rows instead of scanning every run, which grew with the
//! store (0.15 s per scrape at 100,000 runs, all of their pages read).

use dg_engine::state::RunStatus;
use rusqlite::Connection;

use crate::error::StoreError;

/// Every status, in the order of `tenant_usage`'s count columns.
pub const STATUSES: [RunStatus; 3] = [RunStatus::Active, RunStatus::Completed, RunStatus::Failed];

/// The count column of `status`. Exhaustive on purpose: a new status does not compile
/// until it has a column (and a migration filling it).
fn slot(status: RunStatus) -> usize {
    match status {
        RunStatus::Active => 0,
        RunStatus::Completed => 1,
        RunStatus::Failed => 2,
    }
}

/// How one write of run `run_id` moves the counts: `new` gains the run, `old` (its
/// stored status before an update, as spelled in the row) loses it.
///
/// # Errors
/// [`StoreError::Corrupt`] when the stored status is not one this build knows.
pub fn deltas(run_id: &str, old: Option<&str>, new: RunStatus) -> Result<[i64; 3], StoreError> {
    let mut moved = [0i64; 3];
    moved[slot(new)] += 1;
    if let Some(old) = old {
        let old =
            STATUSES.iter().copied().find(|status| status.as_str() == old).ok_or_else(|| StoreError::Corrupt {
                table: "runs",
                key: run_id.to_string(),
                reason: format!("unknown stored status {old:?}"),
            })?;
        moved[slot(old)] -= 1;
    }
    Ok(moved)
}

/// The kept counts over every tenant, one entry per status (zeros included, so every
/// series is always there).
///
/// # Errors
/// SQLite errors.
pub fn totals(conn: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    let sums: [i64; 3] = conn
        .query_row(
            "SELECT coalesce(sum(runs_active), 0), coalesce(sum(runs_completed), 0), coalesce(sum(runs_failed), 0) FROM tenant_usage",
            [],
            |row| Ok([row.get(0)?, row.get(1)?, row.get(2)?]),
        )
        .map_err(StoreError::sqlite("count runs"))?;
    Ok(STATUSES.iter().map(|status| (status.as_str().to_string(), sums[slot(*status)].unsigned_abs())).collect())
}

/// Tenants whose kept bytes or counts differ from a recount of their runs, each naming
/// what was kept and what the runs hold (`CheckReport::usage_drift`).
///
/// # Errors
/// SQLite errors.
pub fn drift(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT tenant_id, kept, actual FROM (
                SELECT u.tenant_id AS tenant_id,
                       u.run_bytes || '/' || u.runs_active || '/' || u.runs_completed || '/' || u.runs_failed AS kept,
                       coalesce(r.bytes, 0) || '/' || coalesce(r.active, 0) || '/' || coalesce(r.completed, 0) || '/' || coalesce(r.failed, 0) AS actual
                FROM tenant_usage u LEFT JOIN (
                    SELECT tenant_id, sum(length(state_json)) AS bytes, sum(status = 'active') AS active,
                           sum(status = 'completed') AS completed, sum(status = 'failed') AS failed
                    FROM runs GROUP BY tenant_id) r ON r.tenant_id = u.tenant_id
                UNION ALL
                SELECT tenant_id, 'nothing', 'runs' FROM runs WHERE tenant_id NOT IN (SELECT tenant_id FROM tenant_usage)
            ) WHERE kept != actual GROUP BY tenant_id ORDER BY tenant_id",
        )
        .map_err(StoreError::sqlite("check run counts"))?;
    let rows = stmt
        .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?)))
        .map_err(StoreError::sqlite("check run counts"))?;
    rows.map(|row| {
        let (tenant, kept, actual) = row.map_err(StoreError::sqlite("check run counts"))?;
        Ok(format!("tenant_usage {tenant}: kept bytes/active/completed/failed {kept}, the runs hold {actual}"))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_moves_one_run_into_its_new_status_and_out_of_its_old_one() {
        assert_eq!(deltas("r", None, RunStatus::Active).unwrap(), [1, 0, 0]);
        assert_eq!(deltas("r", Some("active"), RunStatus::Completed).unwrap(), [-1, 1, 0]);
        assert_eq!(deltas("r", Some("active"), RunStatus::Active).unwrap(), [0, 0, 0]);
        assert_eq!(deltas("r", Some("completed"), RunStatus::Failed).unwrap(), [0, -1, 1]);
        assert!(matches!(deltas("r", Some("paused"), RunStatus::Active), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn every_status_has_its_own_column() {
        let mut slots: Vec<usize> = STATUSES.iter().map(|status| slot(*status)).collect();
        slots.sort_unstable();
        assert_eq!(slots, vec![0, 1, 2]);
    }
}
