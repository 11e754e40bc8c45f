//! The usage ledger: one row per (tenant, request id, counter), so a replayed request is
//! counted once, with running totals per tenant for quota checks. Quotas are checked and
//! charged in one write transaction, so concurrent requests can never pass a quota.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::store::{exec, query_one, to_sql, Store};

/// The canonical usage counters.
pub const COUNTERS: [&str; 7] = [
    "tool_calls",
    "runs_started",
    "evidence_queries",
    "runpack_exports",
    "schemas_written",
    "registry_entries",
    "storage_bytes",
];

/// One usage increment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Tenant charged.
    pub tenant_id: u64,
    /// Key (principal) that made the request.
    pub key_id: String,
    /// Request id: the idempotency key.
    pub request_id: String,
    /// Counter name.
    pub counter: String,
    /// Amount.
    pub amount: u64,
}

/// The quota rule, for both backends' charges (here and `postgres/usage.rs`), applied
/// inside the charge's transaction after the totals were read under its locks: `Ok` when
/// `record` keeps the total `used` within `limit`, else the quota error that names the
/// tenant, the counter, the total the charge would reach and the limit.
pub(crate) fn admit(record: &UsageRecord, used: u64, limit: u64) -> Result<(), StoreError> {
    let after = used.saturating_add(record.amount);
    if after > limit {
        return Err(StoreError::QuotaExceeded {
            tenant_id: record.tenant_id,
            counter: record.counter.clone(),
            requested: after,
            limit,
        });
    }
    Ok(())
}

/// One row of a usage report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// Tenant.
    pub tenant_id: u64,
    /// Key.
    pub key_id: String,
    /// Counter.
    pub counter: String,
    /// Sum over the period.
    pub total: u64,
    /// Distinct requests.
    pub requests: u64,
}

/// Records one increment unless its request id was already counted; returns whether it
/// was new.
pub(crate) fn record_usage(conn: &Connection, record: &UsageRecord, at_ms: i64) -> Result<bool, StoreError> {
    let amount = i64::try_from(record.amount).unwrap_or(i64::MAX);
    let inserted = exec(
        conn,
        "INSERT INTO usage_ledger (tenant_id, request_id, counter, key_id, amount, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT DO NOTHING",
        params![to_sql(record.tenant_id), record.request_id, record.counter, record.key_id, amount, at_ms],
    )
    .map_err(StoreError::sqlite("record usage"))?;
    if inserted == 0 {
        return Ok(false);
    }
    exec(
        conn,
        "INSERT INTO usage_totals (tenant_id, counter, total) VALUES (?1, ?2, ?3)
         ON CONFLICT (tenant_id, counter) DO UPDATE SET total = total + ?3",
        params![to_sql(record.tenant_id), record.counter, amount],
    )
    .map_err(StoreError::sqlite("update usage totals"))?;
    crate::store::periods::add(conn, record.tenant_id, &record.counter, at_ms, amount)?;
    Ok(true)
}

fn total(conn: &Connection, tenant_id: u64, counter: &str) -> Result<u64, StoreError> {
    let total: Option<i64> = query_one(
        conn,
        "SELECT total FROM usage_totals WHERE tenant_id = ?1 AND counter = ?2",
        params![to_sql(tenant_id), counter],
        |row| row.get(0),
    )
    .optional()
    .map_err(StoreError::sqlite("read usage total"))?;
    Ok(total.map_or(0, |t| u64::try_from(t).unwrap_or(0)))
}

impl Store {
    /// Checks quotas and charges usage in one transaction, before the work it pays for.
    /// Each record comes with its limit (`None` = unlimited). A request id already
    /// charged is not charged again (returns `false`: a replay).
    ///
    /// # Errors
    /// [`StoreError::QuotaExceeded`] (nothing charged), storage errors.
    pub fn charge_usage(&self, records: Vec<(UsageRecord, Option<u64>)>) -> Result<bool, StoreError> {
        self.charge_usage_in_period(records.into_iter().map(|(record, limit)| (record, limit, None)).collect())
    }

    /// As [`Self::charge_usage`], each record also with a limit on its billing period's
    /// total (a plan's `block` entitlement; `periods.rs`).
    ///
    /// # Errors
    /// [`StoreError::QuotaExceeded`] (nothing charged), storage errors.
    pub fn charge_usage_in_period(
        &self,
        records: Vec<(UsageRecord, Option<u64>, Option<u64>)>,
    ) -> Result<bool, StoreError> {
        let charged = self.writer.submit(Box::new(move |conn| {
            let at = crate::clock::record_time_ms();
            let mut any_new = false;
            for (record, limit, period_limit) in &records {
                let seen: Option<i64> = query_one(
                    conn,
                    "SELECT amount FROM usage_ledger WHERE tenant_id = ?1 AND request_id = ?2 AND counter = ?3",
                    params![to_sql(record.tenant_id), record.request_id, record.counter],
                    |row| row.get(0),
                )
                .optional()
                .map_err(StoreError::sqlite("read usage ledger"))?;
                if seen.is_some() {
                    continue;
                }
                // The all-time quota, then the plan's monthly `block` entitlement.
                let checks = [
                    limit.map(|limit| (total(conn, record.tenant_id, &record.counter), limit)),
                    period_limit.map(|limit| {
                        (crate::store::periods::total(conn, record.tenant_id, &record.counter, at), limit)
                    }),
                ];
                for (used, limit) in checks.into_iter().flatten() {
                    admit(record, used?, limit)?;
                }
                any_new |= record_usage(conn, record, at)?;
            }
            Ok(i64::from(any_new))
        }))?;
        Ok(charged == 1)
    }

    /// Takes back a charge whose work failed (only what `request_id` charged).
    ///
    /// # Errors
    /// Storage errors.
    pub fn refund_usage(&self, tenant_id: u64, request_id: &str, counters: Vec<String>) -> Result<(), StoreError> {
        let request_id = request_id.to_string();
        self.writer.submit(Box::new(move |conn| {
            for counter in &counters {
                let refunded: Option<(i64, i64)> = query_one(
                    conn,
                    "DELETE FROM usage_ledger WHERE tenant_id = ?1 AND request_id = ?2 AND counter = ?3 RETURNING amount, at_ms",
                    params![to_sql(tenant_id), request_id, counter],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(StoreError::sqlite("refund usage"))?;
                if let Some((amount, at_ms)) = refunded {
                    crate::store::periods::add(conn, tenant_id, counter, at_ms, -amount)?;
                    exec(
                        conn,
                        "UPDATE usage_totals SET total = max(0, total - ?3) WHERE tenant_id = ?1 AND counter = ?2",
                        params![to_sql(tenant_id), counter, amount],
                    )
                    .map_err(StoreError::sqlite("refund usage"))?;
                }
            }
            Ok(1)
        }))?;
        Ok(())
    }

    /// A tenant's running total of one counter.
    ///
    /// # Errors
    /// Storage errors.
    pub fn usage_total(&self, tenant_id: u64, counter: &str) -> Result<u64, StoreError> {
        self.read(|conn| total(conn, tenant_id, counter))
    }

    /// Usage per tenant, key and counter since `since_ms` (all tenants when `None`),
    /// plus each tenant's current `storage_bytes`.
    ///
    /// # Errors
    /// Storage errors.
    pub fn usage_report(&self, tenant_id: Option<u64>, since_ms: i64) -> Result<Vec<UsageRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT tenant_id, key_id, counter, sum(amount), count(*) FROM usage_ledger
                     WHERE at_ms >= ?1 AND (?2 IS NULL OR tenant_id = ?2)
                     GROUP BY tenant_id, key_id, counter ORDER BY tenant_id, key_id, counter",
                )
                .map_err(StoreError::sqlite("usage report"))?;
            let tenant = tenant_id.map(to_sql);
            let rows = stmt
                .query_map(params![since_ms, tenant], |row| {
                    Ok(UsageRow {
                        tenant_id: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                        key_id: row.get(1)?,
                        counter: row.get(2)?,
                        total: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                        requests: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
                    })
                })
                .map_err(StoreError::sqlite("usage report"))?;
            let mut out = rows.collect::<Result<Vec<_>, _>>().map_err(StoreError::sqlite("usage report"))?;
            let mut stmt = conn
                .prepare("SELECT tenant_id, run_bytes FROM tenant_usage WHERE (?1 IS NULL OR tenant_id = ?1) ORDER BY tenant_id")
                .map_err(StoreError::sqlite("usage report"))?;
            let rows = stmt
                .query_map(params![tenant], |row| {
                    Ok(UsageRow {
                        tenant_id: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                        key_id: "*".to_string(),
                        counter: "storage_bytes".to_string(),
                        total: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                        requests: 0,
                    })
                })
                .map_err(StoreError::sqlite("usage report"))?;
            out.extend(rows.collect::<Result<Vec<_>, _>>().map_err(StoreError::sqlite("usage report"))?);
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(amount: u64) -> UsageRecord {
        UsageRecord { tenant_id: 7, request_id: "r".into(), counter: "runs".into(), amount, key_id: "k".into() }
    }

    #[test]
    fn a_charge_up_to_the_limit_is_admitted_and_one_past_it_is_refused_with_its_figures() {
        assert!(admit(&record(3), 7, 10).is_ok());
        match admit(&record(4), 7, 10) {
            Err(StoreError::QuotaExceeded { tenant_id: 7, counter, requested: 11, limit: 10 }) => {
                assert_eq!(counter, "runs");
            }
            other => panic!("{other:?}"),
        }
        assert!(admit(&record(1), u64::MAX, u64::MAX).is_ok(), "saturates instead of wrapping");
    }
}
