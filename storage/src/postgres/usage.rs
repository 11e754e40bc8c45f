//! The usage ledger and quotas on PostgreSQL. A quota is exact across nodes: the check and the
//! charge run in one transaction holding a transaction-scoped advisory lock on the tenant and
//! counter, so two nodes charging the last unit of a quota at once admit exactly one.

use deadpool_postgres::Transaction;

use crate::error::StoreError;
use crate::postgres::connection::{cached, pg};
use crate::postgres::PgStore;
use crate::store::periods::period_of;
use crate::store::to_sql;
use crate::store::usage::{UsageRecord, UsageRow};

/// Serializes every charge of one tenant's counter (key: the tenant id's low 32 bits and the
/// counter's hash; two keys that collide only wait for each other).
async fn lock_counter(tx: &Transaction<'_>, tenant_id: u64, counter: &str) -> Result<(), StoreError> {
    let tenant_key = i32::from_ne_bytes(u32::try_from(tenant_id & 0xffff_ffff).unwrap_or(0).to_ne_bytes());
    cached::execute(tx, "SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&tenant_key, &counter])
        .await
        .map_err(pg("lock usage counter"))?;
    Ok(())
}

/// Records one increment unless its request id was already counted; returns whether it was
/// new. The ledger row, the running total and the period's total move in one statement (the
/// totals only when the ledger row is new).
pub(crate) async fn record(
    tx: &Transaction<'_>,
    record: &UsageRecord,
    at_ms: i64,
) -> Result<bool, tokio_postgres::Error> {
    let amount = i64::try_from(record.amount).unwrap_or(i64::MAX);
    let row = cached::query_one(
        tx,
        "WITH new AS (
             INSERT INTO usage_ledger (tenant_id, request_id, counter, key_id, amount, at_ms)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING tenant_id, counter, amount),
         totals AS (
             INSERT INTO usage_totals (tenant_id, counter, total) SELECT tenant_id, counter, amount FROM new
             ON CONFLICT (tenant_id, counter) DO UPDATE SET total = usage_totals.total + EXCLUDED.total),
         periods AS (
             INSERT INTO usage_periods (tenant_id, counter, period, total) SELECT tenant_id, counter, $7, amount FROM new
             ON CONFLICT (tenant_id, counter, period) DO UPDATE SET total = usage_periods.total + EXCLUDED.total)
         SELECT count(*) FROM new",
        &[&to_sql(record.tenant_id), &record.request_id, &record.counter, &record.key_id, &amount, &at_ms, &period_of(at_ms)],
    )
    .await?;
    Ok(row.get::<_, i64>(0) > 0)
}

async fn total(tx: &Transaction<'_>, tenant_id: u64, counter: &str) -> Result<u64, StoreError> {
    let row = cached::query_opt(
        tx,
        "SELECT total FROM usage_totals WHERE tenant_id = $1 AND counter = $2",
        &[&to_sql(tenant_id), &counter],
    )
    .await
    .map_err(pg("read usage total"))?;
    Ok(row.map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
}

async fn period_total(tx: &Transaction<'_>, tenant_id: u64, counter: &str, at_ms: i64) -> Result<u64, StoreError> {
    let row = cached::query_opt(
        tx,
        "SELECT total FROM usage_periods WHERE tenant_id = $1 AND counter = $2 AND period = $3",
        &[&to_sql(tenant_id), &counter, &period_of(at_ms)],
    )
    .await
    .map_err(pg("read usage period"))?;
    Ok(row.map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
}

impl PgStore {
    /// Charges usage against quotas (all-time `limit`, and the billing period's when given):
    /// every record or none. A request id already charged is not charged again. Returns
    /// whether anything new was charged.
    ///
    /// # Errors
    /// [`StoreError::QuotaExceeded`] (nothing charged), the database's errors.
    pub fn charge_usage_in_period(
        &self,
        records: Vec<(UsageRecord, Option<u64>, Option<u64>)>,
    ) -> Result<bool, StoreError> {
        self.conn.block_on(async {
            let mut client = self.conn.client("charge usage").await?;
            let tx = client.transaction().await.map_err(pg("begin usage charge"))?;
            // Locks in one order (tenant, counter) whatever the request's order.
            let mut keys: Vec<(u64, &str)> =
                records.iter().map(|(r, _, _)| (r.tenant_id, r.counter.as_str())).collect();
            keys.sort_unstable();
            keys.dedup();
            for (tenant, counter) in keys {
                lock_counter(&tx, tenant, counter).await?;
            }
            let at = crate::clock::record_time_ms();
            let mut any_new = false;
            for (record, limit, period_limit) in &records {
                let seen = cached::query_opt(
                    &tx,
                    "SELECT amount FROM usage_ledger WHERE tenant_id = $1 AND request_id = $2 AND counter = $3",
                    &[&to_sql(record.tenant_id), &record.request_id, &record.counter],
                )
                .await
                .map_err(pg("read usage ledger"))?;
                if seen.is_some() {
                    continue;
                }
                let mut checks = Vec::with_capacity(2);
                if let Some(limit) = limit {
                    checks.push((total(&tx, record.tenant_id, &record.counter).await?, *limit));
                }
                if let Some(limit) = period_limit {
                    checks.push((period_total(&tx, record.tenant_id, &record.counter, at).await?, *limit));
                }
                for (used, limit) in checks {
                    crate::store::usage::admit(record, used, limit)?;
                }
                any_new |= self::record(&tx, record, at).await.map_err(pg("record usage"))?;
            }
            tx.commit().await.map_err(pg("commit usage charge"))?;
            Ok(any_new)
        })
    }

    /// A tenant's running total of one counter.
    ///
    /// # Errors
    /// The database's errors.
    pub fn usage_total(&self, tenant_id: u64, counter: &str) -> Result<u64, StoreError> {
        self.conn.block_on(async {
            let mut client = self.conn.client("read usage").await?;
            let tx = client.transaction().await.map_err(pg("begin usage read"))?;
            let total = total(&tx, tenant_id, counter).await?;
            tx.commit().await.map_err(pg("end usage read"))?;
            Ok(total)
        })
    }
}

impl PgStore {
    /// [`Self::charge_usage_in_period`] without period limits.
    ///
    /// # Errors
    /// As that.
    pub fn charge_usage(&self, records: Vec<(UsageRecord, Option<u64>)>) -> Result<bool, StoreError> {
        self.charge_usage_in_period(records.into_iter().map(|(record, limit)| (record, limit, None)).collect())
    }

    /// Takes back a charge whose work failed (only what `request_id` charged).
    ///
    /// # Errors
    /// The database's errors.
    pub fn refund_usage(&self, tenant_id: u64, request_id: &str, counters: Vec<String>) -> Result<(), StoreError> {
        self.conn.block_on(async {
            let mut client = self.conn.client("refund usage").await?;
            let tx = client.transaction().await.map_err(pg("begin usage refund"))?;
            for counter in &counters {
                lock_counter(&tx, tenant_id, counter).await?;
                let refunded =
                    cached::query_opt(&tx, "DELETE FROM usage_ledger WHERE tenant_id = $1 AND request_id = $2 AND counter = $3 RETURNING amount, at_ms",
                        &[&to_sql(tenant_id), &request_id, counter],
                    )
                    .await
                    .map_err(pg("refund usage"))?;
                if let Some(row) = refunded {
                    let (amount, at_ms): (i64, i64) = (row.get(0), row.get(1));
                    cached::execute(&tx, "UPDATE usage_periods SET total = greatest(0, total - $4) WHERE tenant_id = $1 AND counter = $2 AND period = $3",
                        &[&to_sql(tenant_id), counter, &period_of(at_ms), &amount],
                    )
                    .await
                    .map_err(pg("refund usage"))?;
                    cached::execute(&tx, "UPDATE usage_totals SET total = greatest(0, total - $3) WHERE tenant_id = $1 AND counter = $2",
                        &[&to_sql(tenant_id), counter, &amount],
                    )
                    .await
                    .map_err(pg("refund usage"))?;
                }
            }
            tx.commit().await.map_err(pg("commit usage refund"))
        })
    }

    /// Usage per tenant, key and counter since `since_ms` (all tenants when `None`), plus
    /// each tenant's current `storage_bytes`.
    ///
    /// # Errors
    /// The database's errors.
    pub fn usage_report(&self, tenant_id: Option<u64>, since_ms: i64) -> Result<Vec<UsageRow>, StoreError> {
        let tenant = tenant_id.map(to_sql);
        let rows = self.query(
            "usage report",
            "SELECT tenant_id, key_id, counter, sum(amount)::bigint, count(*) FROM usage_ledger
             WHERE at_ms >= $1 AND ($2::bigint IS NULL OR tenant_id = $2)
             GROUP BY tenant_id, key_id, counter ORDER BY tenant_id, key_id, counter",
            &[&since_ms, &tenant],
        )?;
        let mut out: Vec<UsageRow> = rows
            .iter()
            .map(|row| UsageRow {
                tenant_id: row.get::<_, i64>(0).unsigned_abs(),
                key_id: row.get(1),
                counter: row.get(2),
                total: row.get::<_, i64>(3).unsigned_abs(),
                requests: row.get::<_, i64>(4).unsigned_abs(),
            })
            .collect();
        let rows = self.query(
            "usage report",
            "SELECT tenant_id, run_bytes FROM tenant_usage WHERE ($1::bigint IS NULL OR tenant_id = $1) ORDER BY tenant_id",
            &[&tenant],
        )?;
        out.extend(rows.iter().map(|row| UsageRow {
            tenant_id: row.get::<_, i64>(0).unsigned_abs(),
            key_id: "*".to_string(),
            counter: "storage_bytes".to_string(),
            total: row.get::<_, i64>(1).unsigned_abs(),
            requests: 0,
        }));
        Ok(out)
    }

    /// Samples every tenant's stored bytes into the current period (keeping the highest).
    ///
    /// # Errors
    /// The database's errors.
    pub fn sample_storage_usage(&self) -> Result<(), StoreError> {
        let period = period_of(crate::clock::record_time_ms());
        self.execute(
            "sample storage usage",
            "INSERT INTO usage_periods (tenant_id, counter, period, total)
               SELECT tenant_id, 'storage_bytes', $1, run_bytes FROM tenant_usage
             ON CONFLICT (tenant_id, counter, period) DO UPDATE SET total = greatest(usage_periods.total, EXCLUDED.total)",
            &[&period],
        )?;
        Ok(())
    }

    /// Every tenant's totals for one period: (tenant, counter, total), sorted.
    ///
    /// # Errors
    /// The database's errors.
    pub fn usage_for_period(&self, period: &str) -> Result<Vec<(u64, String, u64)>, StoreError> {
        let rows = self.query(
            "read usage periods",
            "SELECT tenant_id, counter, total FROM usage_periods WHERE period = $1 ORDER BY tenant_id, counter",
            &[&period],
        )?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<_, i64>(0).unsigned_abs(), row.get(1), row.get::<_, i64>(2).unsigned_abs()))
            .collect())
    }
}
