#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The browsing reads behind the admin UI (`admin/audit_list`): audit entries searched newest
//! first by tenant and other filters, paged with `before_seq`, each entry's hash checked.

mod support;

use dg_storage::browse::AuditFilter;
use dg_storage::{Store, StoreError, StoreLimits};

#[test]
fn audit_search_filters_by_tenant_and_action_pages_and_detects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let store = Store::open(&db, StoreLimits::default()).unwrap();
    for n in 1..=30 {
        let mut event = support::tool_call_event(n, 1 + n % 3);
        if n % 5 == 0 {
            event.action = "admin".into();
        }
        store.append_audit(vec![event], Vec::new()).unwrap();
    }
    let seqs = |filter: &AuditFilter, before: Option<u64>, limit: u32| -> (Vec<u64>, Option<u64>) {
        let page = store.audit_recent(filter, before, limit).unwrap();
        (page.entries.iter().map(|e| e.seq).collect(), page.next_before_seq)
    };
    // Every entry, newest first.
    let (all, next) = seqs(&AuditFilter::default(), None, 200);
    assert_eq!(all, (1..=30).rev().collect::<Vec<u64>>());
    assert_eq!(next, None, "the search reached the chain's start");
    // Tenant 2 (n % 3 == 1), newest first, in pages of 4.
    let tenant_two = AuditFilter { tenant: Some(2), ..AuditFilter::default() };
    let (first, next) = seqs(&tenant_two, None, 4);
    assert_eq!(first, [28, 25, 22, 19]);
    let (second, _) = seqs(&tenant_two, next, 4);
    assert_eq!(second, [16, 13, 10, 7]);
    // Tenant and action together.
    let admin_in_one = AuditFilter { tenant: Some(1), action: Some("admin".into()), ..AuditFilter::default() };
    assert_eq!(seqs(&admin_in_one, None, 200).0, [30, 15]);
    // A changed entry is an integrity error, not a silently wrong page.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let changed = conn
        .execute(
            "UPDATE audit_log SET entry_json = CAST(replace(entry_json, 'key-29', 'key-XX') AS BLOB) WHERE seq = 29",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let found = store.audit_recent(&AuditFilter::default(), None, 5);
    assert!(matches!(found, Err(StoreError::Integrity { .. })), "{found:?}");
}
