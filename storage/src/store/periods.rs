//! Usage by billing period (a calendar month, UTC): every ledger increment also adds to its
//! tenant's total for the month of its record time, in the same transaction, so a plan's
//! entitlement is checked with one row read and a closed month's figures never change
//! (`dg-appliance usage export` is reproducible). `storage_bytes` is a level, not a flow:
//! its period figure is the highest level sampled in the month.

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::StoreError;
use crate::store::{exec, query_one, to_sql, Store};

/// The billing period (`YYYY-MM`, UTC) of a record time.
#[must_use]
pub fn period_of(at_ms: i64) -> String {
    let nanos = i128::from(at_ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(at) => format!("{:04}-{:02}", at.year(), u8::from(at.month())),
        Err(_) => "0000-00".to_string(),
    }
}

/// Whether `period` is spelled `YYYY-MM` with a real month.
#[must_use]
pub fn valid_period(period: &str) -> bool {
    let bytes = period.as_bytes();
    bytes.len() == 7
        && bytes[4] == b'-'
        && bytes.iter().enumerate().all(|(i, b)| i == 4 || b.is_ascii_digit())
        && matches!(period[5..].parse::<u8>(), Ok(1..=12))
}

/// Adds `amount` (negative: a refund) to a tenant's counter for the period of `at_ms`.
pub(crate) fn add(conn: &Connection, tenant_id: u64, counter: &str, at_ms: i64, amount: i64) -> Result<(), StoreError> {
    exec(
        conn,
        "INSERT INTO usage_periods (tenant_id, counter, period, total) VALUES (?1, ?2, ?3, max(0, ?4))
         ON CONFLICT (tenant_id, counter, period) DO UPDATE SET total = max(0, total + ?4)",
        params![to_sql(tenant_id), counter, period_of(at_ms), amount],
    )
    .map_err(StoreError::sqlite("update usage period"))?;
    Ok(())
}

/// A tenant's total of one counter in the period of `at_ms`.
pub(crate) fn total(conn: &Connection, tenant_id: u64, counter: &str, at_ms: i64) -> Result<u64, StoreError> {
    let total: Option<i64> = query_one(
        conn,
        "SELECT total FROM usage_periods WHERE tenant_id = ?1 AND counter = ?2 AND period = ?3",
        params![to_sql(tenant_id), counter, period_of(at_ms)],
        |row| row.get(0),
    )
    .optional()
    .map_err(StoreError::sqlite("read usage period"))?;
    Ok(total.map_or(0, |t| u64::try_from(t).unwrap_or(0)))
}

impl Store {
    /// Samples every tenant's stored bytes into the current period (keeping the highest).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn sample_storage_usage(&self) -> Result<(), StoreError> {
        let period = period_of(crate::clock::record_time_ms());
        self.writer.submit(Box::new(move |conn| {
            exec(
                conn,
                "INSERT INTO usage_periods (tenant_id, counter, period, total)
                   SELECT tenant_id, 'storage_bytes', ?1, run_bytes FROM tenant_usage WHERE true
                 ON CONFLICT (tenant_id, counter, period) DO UPDATE SET total = max(total, excluded.total)",
                [period.as_str()],
            )
            .map_err(StoreError::sqlite("sample storage usage"))?;
            Ok(1)
        }))?;
        Ok(())
    }

    /// Every tenant's totals for one period: (tenant, counter, total), sorted.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn usage_for_period(&self, period: &str) -> Result<Vec<(u64, String, u64)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT tenant_id, counter, total FROM usage_periods WHERE period = ?1 ORDER BY tenant_id, counter",
                )
                .map_err(StoreError::sqlite("read usage periods"))?;
            let rows = stmt
                .query_map([period], |row| {
                    Ok((
                        u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                        row.get::<_, String>(1)?,
                        u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                    ))
                })
                .map_err(StoreError::sqlite("read usage periods"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(StoreError::sqlite("read usage periods"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_utc_calendar_months() {
        assert_eq!(period_of(0), "1970-01");
        assert_eq!(period_of(1_793_491_199_999), "2026-10"); // 2026-10-31T23:59:59.999Z
        assert_eq!(period_of(1_793_491_200_000), "2026-11");
        assert!(
            valid_period("2026-11") && !valid_period("2026-13") && !valid_period("2026-1") && !valid_period("26-11-01")
        );
    }
}
