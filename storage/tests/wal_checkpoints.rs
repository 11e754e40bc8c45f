#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! WAL checkpoints run off the request path (`checkpointer.rs`): a background thread copies
//! the WAL into the database file, the writer finishes each checkpoint between two of its
//! transactions, and so the WAL keeps starting over instead of growing to SQLite's
//! fallback threshold. What was written stays readable and verified.

mod support;

use dg_storage::audit::AuditEvent;
use dg_storage::{Store, StoreLimits};

/// An entry of about 3 KB, so each write adds at least one page to the WAL.
fn event(n: u64) -> AuditEvent {
    AuditEvent { reason: "x".repeat(3000), ..support::tool_call_event(n, 1) }
}

const WRITES: u64 = 1_500;

#[test]
fn background_checkpoints_keep_the_wal_starting_over() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let wal = dir.path().join("state.db-wal");
    let store = Store::open(&db, StoreLimits::default()).unwrap();
    let mut largest_wal = 0;
    for n in 1..=WRITES {
        store.append_audit(vec![event(n)], Vec::new()).unwrap();
        largest_wal = largest_wal.max(std::fs::metadata(&wal).unwrap().len());
    }
    // The writes come back to back, so a background pass never reaches the WAL's end by
    // itself. Each write adds at least one 4 KiB page (its entry is 3 KB): without the
    // writer finishing the checkpoints, the WAL would pass 6 MB (SQLite's fallback
    // checkpoint would let it reach 32 MB); with them it starts over every few hundred
    // writes.
    assert!(largest_wal < 5_000_000, "the WAL grew to {largest_wal} bytes: it did not start over");
    let counts = store.checkpoint_counts();
    assert_eq!(counts.failures, 0, "{counts:?}");
    // Passes requested while one runs fold into one: fewer than one per 128 writes.
    assert!(counts.background_passes >= 3, "{counts:?}");
    assert!(counts.writer_finishes >= 3, "{counts:?}");

    // Everything written is there, in order, through a fresh open.
    drop(store);
    let store = Store::open(&db, StoreLimits::default()).unwrap();
    let entries = store.audit_entries(0).unwrap();
    assert_eq!(entries.len() as u64, WRITES);
    assert!(store.check().unwrap().ok());
}

#[test]
fn closing_the_store_stops_the_checkpoint_thread_and_leaves_no_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let store = Store::open(&db, StoreLimits::default()).unwrap();
    for n in 1..=300 {
        store.append_audit(vec![event(n)], Vec::new()).unwrap();
    }
    store.close();
    drop(store);
    let wal_len = std::fs::metadata(dir.path().join("state.db-wal")).map(|meta| meta.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "the final checkpoint truncates the WAL");
    let store = Store::open(&db, StoreLimits::default()).unwrap();
    assert_eq!(store.audit_entries(0).unwrap().len(), 300);
}
