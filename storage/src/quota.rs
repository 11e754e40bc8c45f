//! The quota rule both backends apply inside a charge's transaction, after reading the
//! totals under their own locks: one place decides whether a record fits.

use crate::error::StoreError;
use crate::store::usage::UsageRecord;

/// `Ok` when `record` keeps the total `used` within `limit`, else the quota error that
/// names the tenant, the counter, the total the charge would reach and the limit.
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
