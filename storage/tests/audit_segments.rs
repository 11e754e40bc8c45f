#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The audit chain's older entries are sealed many to a row (`store/audit_segments.rs`)
//! and every reader still sees one chain: verification (whole, with checkpoints), export
//! from a time inside the sealed part (verified offline), browsing and forwarding across
//! the boundary, pruning with legal holds; an edited sealed entry is reported with its
//! number and a damaged segment as a break and an integrity error.

mod support;

use std::sync::Arc;

use dg_storage::audit::{verify_export, AuditEntry, AuditSigner};
use dg_storage::browse::AuditFilter;
use dg_storage::signing::KeyStore;
use dg_storage::{Store, StoreError, StoreLimits};
use rusqlite::Connection;

/// Entries in the fixture's chain: well past the 4,096 kept as rows.
const ENTRIES: u64 = 6_000;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    keys: Arc<KeyStore>,
    db: std::path::PathBuf,
}

/// 6,000 entries for tenants 1 and 2 in batches of 50, a few milliseconds apart, with a
/// checkpoint every 256 entries (the default).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let store = Store::open(&db, StoreLimits::default()).unwrap();
    let keys = Arc::new(KeyStore::open(&dir.path().join("keys")).unwrap());
    store.set_audit_signer(keys.clone(), 256);
    for batch in 0..ENTRIES / 50 {
        let events = (1..=50).map(|i| support::tool_call_event(batch * 50 + i, tenant_of(batch * 50 + i))).collect();
        store.append_audit(events, Vec::new()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let signer: Arc<dyn AuditSigner> = keys.clone();
    store.audit_checkpoint_now(&signer).unwrap();
    Fixture { _dir: dir, store, keys, db }
}

/// The fixture's tenant of entry `n`: odd entries of a batch are tenant 2's.
fn tenant_of(n: u64) -> u64 {
    1 + ((n - 1) % 50 + 1) % 2
}

impl Fixture {
    fn raw(&self) -> Connection {
        Connection::open(&self.db).unwrap()
    }

    fn entries(&self) -> Vec<AuditEntry> {
        self.store.audit_entries(1).unwrap()
    }
}

/// (segments, their frames' bytes, rows left, oldest row).
fn layout(conn: &Connection) -> (i64, i64, i64, i64) {
    conn.query_row(
        "SELECT (SELECT count(*) FROM audit_segments), (SELECT sum(length(frame)) FROM audit_segments),
                (SELECT count(*) FROM audit_log), (SELECT min(seq) FROM audit_log)",
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
    )
    .unwrap()
}

#[test]
fn older_entries_are_sealed_and_the_chain_reads_and_verifies_whole() {
    let fixture = fixture();
    let conn = fixture.raw();
    let (segments, frame_bytes, rows, oldest_row) = layout(&conn);
    // Sealed up to 4,096 entries behind the newest checkpoint, 256 to a segment.
    assert!(segments >= 6, "{segments} segments");
    assert_eq!(oldest_row, segments * 256 + 1);
    assert_eq!(rows + segments * 256, i64::try_from(ENTRIES).unwrap());
    assert!(rows <= 4096 + 256 + 50, "{rows} rows");
    let row_bytes: i64 =
        conn.query_row("SELECT CAST(avg(length(entry_json)) AS INTEGER) FROM audit_log", [], |r| r.get(0)).unwrap();
    let sealed_per_entry = frame_bytes / (segments * 256);
    assert!(sealed_per_entry * 4 < row_bytes, "{sealed_per_entry} B sealed against {row_bytes} B a row");

    let report = fixture.store.verify_audit(&fixture.keys.ring().unwrap()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.entries, report.signed_through), (ENTRIES, ENTRIES));
    let entries = fixture.entries();
    assert_eq!(entries.len(), usize::try_from(ENTRIES).unwrap());
    for (n, entry) in (1..).zip(&entries) {
        assert_eq!(entry.seq, n);
        assert_eq!(entry.event, support::tool_call_event(n, tenant_of(n)), "entry {n}");
    }
    // A store opened again finds the head among the rows and appends after it.
    drop(fixture.store);
    let store = Store::open(&fixture.db, StoreLimits::default()).unwrap();
    assert_eq!(store.append_audit(vec![support::tool_call_event(1, 1)], Vec::new()).unwrap(), ENTRIES + 1);
}

#[test]
fn an_export_from_inside_the_sealed_part_verifies_offline() {
    let fixture = fixture();
    let entries = fixture.entries();
    let since_ms = entries[700].time_ms;
    let first = entries.iter().find(|e| e.time_ms >= since_ms).unwrap().seq;
    assert!(first > 1 && first < 1000, "{first}");
    let mut out = Vec::new();
    let count = fixture.store.export_audit(since_ms, &mut out).unwrap();
    assert_eq!(count, ENTRIES - first + 1);
    let ring = fixture.keys.ring().unwrap();
    let report = verify_export(out.as_slice(), &ring).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.signed_through, ENTRIES);
    // From a time after every sealed entry: the rows alone, anchored on the entry before.
    let since_ms = entries[5_900].time_ms;
    let first = entries.iter().find(|e| e.time_ms >= since_ms).unwrap().seq;
    let mut recent = Vec::new();
    assert_eq!(fixture.store.export_audit(since_ms, &mut recent).unwrap(), ENTRIES - first + 1);
    assert!(verify_export(recent.as_slice(), &ring).unwrap().ok());
    // An edit anywhere in the export still fails it.
    let text = String::from_utf8(out).unwrap().replacen("\"outcome\":\"ok\"", "\"outcome\":\"no\"", 1);
    assert!(!verify_export(text.as_bytes(), &ring).unwrap().ok());
}

#[test]
fn browsing_and_forwarding_cross_into_the_sealed_part() {
    let fixture = fixture();
    let page = fixture.store.audit_recent(&AuditFilter::default(), Some(1_000), 50).unwrap();
    let seqs: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (950..1_000).rev().collect::<Vec<_>>());
    assert_eq!(page.next_before_seq, Some(950));
    // Across the boundary between the rows and the newest segment, newest first.
    let oldest_row = u64::try_from(layout(&fixture.raw()).3).unwrap();
    let page = fixture.store.audit_recent(&AuditFilter::default(), Some(oldest_row + 2), 4).unwrap();
    let seqs: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [oldest_row + 1, oldest_row, oldest_row - 1, oldest_row - 2]);
    let tenant = AuditFilter { tenant: Some(2), ..AuditFilter::default() };
    let page = fixture.store.audit_recent(&tenant, Some(oldest_row + 2), 3).unwrap();
    assert!(page.entries.iter().all(|e| e.event.tenant_id == Some(2)), "{page:?}");
    assert_eq!(page.entries.len(), 3);

    // A tenant with no entries: the search walks the whole chain, each entry counted
    // towards the scan bound (AUDIT_SCAN_LIMIT), sealed ones included.
    let nobody = AuditFilter { tenant: Some(99), ..AuditFilter::default() };
    let page = fixture.store.audit_recent(&nobody, None, 10).unwrap();
    assert_eq!((page.entries.len(), page.scanned, page.next_before_seq), (0, ENTRIES, None));
    assert!(usize::try_from(ENTRIES).unwrap() < dg_storage::browse::AUDIT_SCAN_LIMIT);

    let forwarded = fixture.store.audit_page(oldest_row - 3, 6).unwrap();
    assert_eq!(
        forwarded.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (oldest_row - 2..oldest_row + 4).collect::<Vec<_>>()
    );
    let entries = fixture.entries();
    for stored in &forwarded {
        let entry: AuditEntry = serde_json::from_slice(&stored.json).unwrap();
        assert_eq!(&entry, &entries[usize::try_from(stored.seq - 1).unwrap()]);
        assert_eq!(stored.sha256, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored.json)));
    }
    assert_eq!(fixture.store.audit_head().unwrap().0, ENTRIES);
}

/// The first segment's records, expanded.
fn first_segment(conn: &Connection) -> Vec<u8> {
    let frame: Vec<u8> =
        conn.query_row("SELECT frame FROM audit_segments WHERE first_seq = 1", [], |row| row.get(0)).unwrap();
    zstd::decode_all(frame.as_slice()).unwrap()
}

#[test]
fn an_edited_sealed_entry_is_reported_with_its_number() {
    let fixture = fixture();
    let conn = fixture.raw();
    let mut records = first_segment(&conn);
    // Entry 7's outcome, edited in place (same length), the frame compressed again.
    let at = records.windows(8).position(|w| w == b"\"seq\":7,").unwrap();
    let outcome = records[..at].windows(13).rposition(|w| w == b"\"outcome\":\"ok").unwrap();
    records[outcome + 11..outcome + 13].copy_from_slice(b"no");
    let frame = zstd::bulk::compress(&records, 3).unwrap();
    conn.execute("UPDATE audit_segments SET frame = ?1 WHERE first_seq = 1", [frame]).unwrap();
    let report = fixture.store.verify_audit(&fixture.keys.ring().unwrap()).unwrap();
    let broken = report.first_break.expect("edit not detected");
    assert_eq!(broken.entry, 7, "{}", broken.reason);
    assert!(broken.reason.contains("edited"), "{}", broken.reason);
}

#[test]
fn a_damaged_segment_is_a_break_and_an_integrity_error() {
    let fixture = fixture();
    let conn = fixture.raw();
    let frame: Vec<u8> =
        conn.query_row("SELECT frame FROM audit_segments WHERE first_seq = 257", [], |row| row.get(0)).unwrap();
    let mut damaged = frame.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x5a;
    damaged.truncate(damaged.len() - 8);
    conn.execute("UPDATE audit_segments SET frame = ?1 WHERE first_seq = 257", [damaged]).unwrap();
    let report = fixture.store.verify_audit(&fixture.keys.ring().unwrap()).unwrap();
    let broken = report.first_break.expect("damage not detected");
    assert_eq!(broken.entry, 257, "{}", broken.reason);
    assert!(broken.reason.contains("damaged"), "{}", broken.reason);
    let before = fixture.store.integrity_failures();
    let found = fixture.store.audit_recent(&AuditFilter::default(), Some(600), 200);
    assert!(matches!(found, Err(StoreError::Integrity { .. })), "{found:?}");
    assert_eq!(fixture.store.integrity_failures(), before + 1);
    // Entries before the damage still read.
    assert_eq!(fixture.store.audit_page(0, 10).unwrap().len(), 10);
}

#[test]
fn pruning_reaches_sealed_entries_and_spares_held_tenants() {
    let fixture = fixture();
    fixture.store.set_legal_hold(2, Some("case 42")).unwrap();
    let pruned = fixture.store.prune_audit(i64::MAX).unwrap();
    // Tenant 1's entries up to the newest checkpoint (the head): half the chain.
    assert_eq!(pruned, ENTRIES / 2);
    let report = fixture.store.verify_audit(&fixture.keys.ring().unwrap()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.entries, report.pruned), (ENTRIES, ENTRIES / 2));
    let kept = fixture.entries();
    assert_eq!(kept.len(), usize::try_from(ENTRIES / 2).unwrap());
    assert!(kept.iter().all(|e| e.event.tenant_id == Some(2)));
    assert_eq!(kept[0].seq, 1);
    let bodies: i64 = fixture.raw().query_row("SELECT sum(bodies) FROM audit_segments", [], |row| row.get(0)).unwrap();
    let segments = layout(&fixture.raw()).0;
    assert_eq!(bodies, segments * 128);
    // Pruning again finds nothing more to prune.
    assert_eq!(fixture.store.prune_audit(i64::MAX).unwrap(), 0);
}
