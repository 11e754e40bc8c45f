#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance (issue 8, points 1 and 3 at the storage level): editing, deleting,
//! reordering or inserting an audit entry, truncating the tail or tampering with a
//! checkpoint through a raw SQLite connection is reported with the entry number; an
//! export verifies offline and fails after any edit; pruning and legal holds keep the
//! chain verifiable; concurrent quota charges never pass the quota and a replayed
//! request id counts once.

mod support;

use std::sync::Arc;

use dg_storage::audit::{verify_export, AuditEvent, AuditReport, AuditSigner};
use dg_storage::signing::{KeyStore, PublicKeyRing};
use dg_storage::usage::UsageRecord;
use dg_storage::{Store, StoreError, StoreLimits};
use rusqlite::Connection;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    keys: Arc<KeyStore>,
    db: std::path::PathBuf,
}

fn event(n: u64, tenant: u64) -> AuditEvent {
    support::tool_call_event(n, tenant)
}

/// A log of 20 entries with checkpoints every 4 and a final one at the head.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let store = Store::open(&db, StoreLimits::default()).unwrap();
    let keys = Arc::new(KeyStore::open(&dir.path().join("keys")).unwrap());
    store.set_audit_signer(keys.clone(), 4);
    for n in 1..=20 {
        store.append_audit(vec![event(n, 1 + n % 2)], Vec::new()).unwrap();
    }
    let signer: Arc<dyn AuditSigner> = keys.clone();
    store.audit_checkpoint_now(&signer).unwrap();
    Fixture { _dir: dir, store, keys, db }
}

impl Fixture {
    fn verify(&self) -> AuditReport {
        self.store.verify_audit(&self.keys.ring().unwrap()).unwrap()
    }

    fn raw(&self) -> Connection {
        Connection::open(&self.db).unwrap()
    }

    fn broken_at(&self) -> (u64, String) {
        let report = self.verify();
        let Some(broken) = report.first_break.clone() else { panic!("tampering not detected: {report:?}") };
        (broken.entry, broken.reason)
    }
}

fn entry_json(conn: &Connection, seq: i64) -> Vec<u8> {
    conn.query_row("SELECT entry_json FROM audit_log WHERE seq = ?1", [seq], |row| row.get(0)).unwrap()
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn an_untouched_chain_verifies_with_every_checkpoint() {
    let fixture = fixture();
    let report = fixture.verify();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, 20);
    assert_eq!(report.signed_through, 20);
    assert!(report.checkpoints >= 5, "{report:?}");
}

#[test]
fn an_edited_entry_is_reported_with_its_number() {
    let fixture = fixture();
    let conn = fixture.raw();
    let edited = String::from_utf8(entry_json(&conn, 7)).unwrap().replace("\"ok\"", "\"error\"");
    conn.execute("UPDATE audit_log SET entry_json = ?1 WHERE seq = 7", [edited.as_bytes()]).unwrap();
    let (entry, reason) = fixture.broken_at();
    assert_eq!(entry, 7, "{reason}");
    assert!(reason.contains("edited"), "{reason}");
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let fixture = fixture();
    let conn = fixture.raw();
    let edited = String::from_utf8(entry_json(&conn, 7)).unwrap().replace("\"ok\"", "\"error\"");
    conn.execute(
        "UPDATE audit_log SET entry_json = ?1, entry_sha256 = ?2 WHERE seq = 7",
        rusqlite::params![edited.as_bytes(), sha(edited.as_bytes())],
    )
    .unwrap();
    let (entry, reason) = fixture.broken_at();
    assert_eq!(entry, 8, "{reason}");
}

#[test]
fn a_deleted_entry_is_reported() {
    let fixture = fixture();
    fixture.raw().execute("DELETE FROM audit_log WHERE seq = 5", []).unwrap();
    let (entry, reason) = fixture.broken_at();
    assert_eq!(entry, 5, "{reason}");
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn reordered_entries_are_reported() {
    let fixture = fixture();
    let conn = fixture.raw();
    let (a, b) = (entry_json(&conn, 3), entry_json(&conn, 4));
    let (sa, sb) = (sha(&a), sha(&b));
    conn.execute("UPDATE audit_log SET entry_json = ?1, entry_sha256 = ?2 WHERE seq = 3", rusqlite::params![b, sb])
        .unwrap();
    conn.execute("UPDATE audit_log SET entry_json = ?1, entry_sha256 = ?2 WHERE seq = 4", rusqlite::params![a, sa])
        .unwrap();
    let (entry, reason) = fixture.broken_at();
    assert_eq!(entry, 3, "{reason}");
    assert!(reason.contains("position") || reason.contains("link"), "{reason}");
}

#[test]
fn an_inserted_entry_is_reported() {
    let fixture = fixture();
    let conn = fixture.raw();
    // Make room at 10 by renumbering the rows after it, then insert a forged entry that
    // links correctly to entry 9.
    for seq in (10..=20).rev() {
        conn.execute("UPDATE audit_log SET seq = seq + 1 WHERE seq = ?1", [seq]).unwrap();
    }
    let prev: String =
        conn.query_row("SELECT entry_sha256 FROM audit_log WHERE seq = 9", [], |row| row.get(0)).unwrap();
    let forged = serde_json::json!({"seq": 10, "prev_sha256": prev, "time_ms": 1, "principal": "intruder", "role": null,
        "tenant_id": null, "namespace_id": null, "action": "tool_call", "target": "x", "outcome": "ok", "reason": "",
        "request_id": "forged", "request_sha256": null, "response_sha256": null});
    let bytes = dg_engine::canonical_json_bytes(&forged).unwrap();
    conn.execute(
        "INSERT INTO audit_log (seq, entry_json, entry_sha256, tenant_id, time_ms) VALUES (10, ?1, ?2, NULL, 1)",
        rusqlite::params![bytes, sha(&bytes)],
    )
    .unwrap();
    let (entry, reason) = fixture.broken_at();
    assert_eq!(entry, 11, "{reason}");
}

#[test]
fn a_truncated_tail_is_reported_by_the_signed_checkpoints() {
    let fixture = fixture();
    fixture.raw().execute("DELETE FROM audit_log WHERE seq > 15", []).unwrap();
    let (entry, reason) = fixture.broken_at();
    assert_eq!(entry, 16, "{reason}");
    assert!(reason.contains("truncated"), "{reason}");
}

#[test]
fn a_truncated_tail_with_its_checkpoints_is_reported_by_the_witness() {
    let fixture = fixture();
    let conn = fixture.raw();
    conn.execute("DELETE FROM audit_log WHERE seq > 15", []).unwrap();
    conn.execute("DELETE FROM audit_checkpoints WHERE entry_count > 15", []).unwrap();
    let (entry, reason) = fixture.broken_at();
    assert!(entry >= 16, "{entry}: {reason}");
    assert!(reason.contains("truncated") || reason.contains("witness"), "{reason}");
}

#[test]
fn a_tampered_or_deleted_checkpoint_is_reported() {
    let fixture = fixture();
    let conn = fixture.raw();
    let json: Vec<u8> = conn
        .query_row("SELECT checkpoint_json FROM audit_checkpoints WHERE entry_count = 8", [], |row| row.get(0))
        .unwrap();
    let forged = String::from_utf8(json).unwrap().replace("\"entry_count\":8", "\"entry_count\":7");
    conn.execute("UPDATE audit_checkpoints SET checkpoint_json = ?1 WHERE entry_count = 8", [forged.as_bytes()])
        .unwrap();
    let (entry, reason) = fixture.broken_at();
    assert_eq!(entry, 7, "{reason}");
    assert!(reason.contains("signature"), "{reason}");

    let fixture = self::fixture();
    fixture.raw().execute("DELETE FROM audit_checkpoints WHERE entry_count = 8", []).unwrap();
    let (entry, reason) = fixture.broken_at();
    assert_eq!(entry, 12, "{reason}");
    assert!(reason.contains("deleted"), "{reason}");
}

fn export(fixture: &Fixture, since_ms: i64) -> String {
    let mut out = Vec::new();
    fixture.store.export_audit(since_ms, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn verify_text(text: &str, ring: &PublicKeyRing) -> AuditReport {
    verify_export(std::io::BufReader::new(text.as_bytes()), ring).unwrap()
}

#[test]
fn an_export_verifies_offline_and_fails_after_any_edit() {
    let fixture = fixture();
    let ring: PublicKeyRing =
        PublicKeyRing::parse(&serde_json::to_string(&fixture.keys.ring().unwrap()).unwrap()).unwrap();
    let text = export(&fixture, 0);
    let report = verify_text(&text, &ring);
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, 20);

    let lines: Vec<&str> = text.lines().collect();
    // Edit the content of every entry in turn.
    for index in 1..=20 {
        let mut edited = lines.clone();
        let changed = edited[index].replace("\"outcome\":\"ok\"", "\"outcome\":\"error\"");
        assert_ne!(changed, edited[index]);
        edited[index] = &changed;
        let report = verify_text(&edited.join("\n"), &ring);
        assert!(!report.ok(), "edit of line {index} not detected");
    }
    // Drop an entry, drop the last entry, drop the final checkpoint.
    for drop in [5usize, 20, lines.len() - 1] {
        let mut cut = lines.clone();
        cut.remove(drop);
        assert!(!verify_text(&cut.join("\n"), &ring).ok(), "dropping line {drop} not detected");
    }
    // A ring without the signing key cannot verify it.
    let other = KeyStore::open(&tempfile::tempdir().unwrap().path().join("k")).unwrap().ring().unwrap();
    assert!(!verify_text(&text, &other).ok());
}

#[test]
fn a_partial_export_verifies_from_its_anchor() {
    let fixture = fixture();
    let ring = fixture.keys.ring().unwrap();
    // Everything in the fixture has (nearly) the same timestamp; export from "now - 1h"
    // and from the future both produce verifiable files.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(verify_text(&export(&fixture, now - 3_600_000), &ring).ok());
    let empty = export(&fixture, now + 3_600_000);
    assert!(verify_text(&empty, &ring).ok(), "{empty}");
}

#[test]
fn pruning_keeps_the_chain_verifiable_and_held_tenants_whole() {
    let fixture = fixture();
    fixture.store.set_legal_hold(2, Some("case 42")).unwrap();
    let pruned = fixture.store.prune_audit(i64::MAX).unwrap();
    assert_eq!(pruned, 10, "tenant 1's ten entries go; tenant 2's stay under hold");
    let report = fixture.verify();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.pruned, 10);
    let kept = fixture.store.audit_entries(1).unwrap();
    assert_eq!(kept.len(), 10);
    assert!(kept.iter().all(|entry| entry.event.tenant_id == Some(2)));
    // The export of a pruned log still verifies offline.
    assert!(verify_text(&export(&fixture, 0), &fixture.keys.ring().unwrap()).ok());
    // Editing a pruned entry's recorded hash is still caught by the next link.
    fixture.raw().execute("UPDATE audit_log SET entry_sha256 = ?1 WHERE seq = 4", [&"00".repeat(32)]).unwrap();
    assert_eq!(fixture.broken_at().0, 5);
}

fn charge(store: &Store, request: &str, limit: u64) -> Result<bool, StoreError> {
    store.charge_usage(vec![(
        UsageRecord {
            tenant_id: 1,
            key_id: "k".into(),
            request_id: request.into(),
            counter: "runs_started".into(),
            amount: 1,
        },
        Some(limit),
    )])
}

#[test]
fn concurrent_charges_never_pass_a_quota_and_replays_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("state.db"), StoreLimits::default()).unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || (0..20).filter(|n| charge(&store, &format!("r-{t}-{n}"), 50).is_ok()).count())
        })
        .collect();
    let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(granted, 50);
    assert_eq!(store.usage_total(1, "runs_started").unwrap(), 50);
    assert!(matches!(charge(&store, "one-more", 50), Err(StoreError::QuotaExceeded { .. })));
    // A replayed request id is neither charged nor refused again.
    let granted_id = (0..20).map(|n| format!("r-0-{n}")).find(|id| charge(&store, id, 50).is_ok()).unwrap();
    assert!(!charge(&store, &granted_id, 50).unwrap(), "a replay is not a new charge");
    assert_eq!(store.usage_total(1, "runs_started").unwrap(), 50);
    // Refunds give the slot back, once.
    store.refund_usage(1, &granted_id, vec!["runs_started".into()]).unwrap();
    store.refund_usage(1, &granted_id, vec!["runs_started".into()]).unwrap();
    assert_eq!(store.usage_total(1, "runs_started").unwrap(), 49);
    assert!(charge(&store, "after-refund", 50).unwrap());
}
