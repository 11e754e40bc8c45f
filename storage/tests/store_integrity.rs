#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! SQLite's own storage forms: run states stored compact (rows written as JSON by earlier
//! releases still read), migrations forward only with a backup, newer databases refused.
//! The behaviours both backends share (tampering, tenant scoping, idempotence, kept totals)
//! are in `conformance.rs`.

#[allow(dead_code)]
mod support;

use support::started_run;

use dg_engine::hashing::hash_bytes;
use dg_storage::{Scope, Store, StoreError, StoreLimits};
use rusqlite::Connection;

fn by_status(store: &Store) -> Vec<(&'static str, u64)> {
    let counts = store.count_runs_by_status().unwrap();
    ["active", "completed", "failed"]
        .into_iter()
        .map(|status| (status, counts.iter().find(|(s, _)| s == status).map_or(u64::MAX, |(_, n)| *n)))
        .collect()
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("state.db"), StoreLimits::default()).unwrap()
}

#[test]
fn run_states_are_stored_compact_and_states_stored_as_json_before_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let state = started_run(1, 2, "r1");
    store.create_run(&state, dg_storage::audit::AuditBatch::none()).unwrap();
    let canonical = dg_engine::canonical_json_bytes(&state).unwrap();
    let raw = Connection::open(dir.path().join("state.db")).unwrap();
    let (stored, sha): (Vec<u8>, String) =
        raw.query_row("SELECT state_json, state_sha256 FROM runs", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    // Compact (tagged, smaller), with the hash of the canonical JSON.
    assert_ne!(stored.first(), Some(&b'{'));
    assert!(stored.len() < canonical.len(), "{} of {}", stored.len(), canonical.len());
    assert_eq!(sha, hash_bytes(&canonical).value);
    // A row as an earlier release wrote it (the canonical JSON itself) reads the same.
    raw.execute("UPDATE runs SET state_json = ?1", [&canonical]).unwrap();
    assert_eq!(store.get_run(Scope::new(1, 2), "r1").unwrap().unwrap().0, state);
    assert!(store.check().unwrap().failures.is_empty());
}

#[test]
fn newer_databases_are_refused_and_old_ones_migrate_with_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        // A database as the first schema version left it.
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch(
            "CREATE TABLE store_meta (version INTEGER NOT NULL, instance_id TEXT NOT NULL);
             INSERT INTO store_meta VALUES (1, 'old');
             CREATE TABLE runs (tenant_id INTEGER NOT NULL, namespace_id INTEGER NOT NULL, run_id TEXT NOT NULL,
                scenario_id TEXT NOT NULL, status TEXT NOT NULL, version INTEGER NOT NULL, state_json BLOB NOT NULL,
                state_sha256 TEXT NOT NULL, saved_at_ms INTEGER NOT NULL, PRIMARY KEY (tenant_id, namespace_id, run_id)) WITHOUT ROWID;
             CREATE TABLE scenarios (tenant_id INTEGER NOT NULL, namespace_id INTEGER NOT NULL, scenario_id TEXT NOT NULL,
                spec_json BLOB NOT NULL, spec_sha256 TEXT NOT NULL, created_at_ms INTEGER NOT NULL,
                PRIMARY KEY (tenant_id, namespace_id, scenario_id)) WITHOUT ROWID;
             CREATE TABLE data_shapes (tenant_id INTEGER NOT NULL, namespace_id INTEGER NOT NULL, schema_id TEXT NOT NULL,
                version TEXT NOT NULL, record_json BLOB NOT NULL, record_sha256 TEXT NOT NULL,
                PRIMARY KEY (tenant_id, namespace_id, schema_id, version)) WITHOUT ROWID;",
        )
        .unwrap();
        // A run written by this build, copied into the old table as its documents are stored.
        let other = tempfile::tempdir().unwrap();
        let donor = open(&other);
        donor.create_run(&started_run(1, 1, "before-migration"), dg_storage::audit::AuditBatch::none()).unwrap();
        drop(donor);
        let donor = Connection::open(other.path().join("state.db")).unwrap();
        let (doc, sha): (Vec<u8>, String) =
            donor.query_row("SELECT state_json, state_sha256 FROM runs", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        raw.execute(
            "INSERT INTO runs VALUES (1, 1, 'before-migration', 'sc', 'active', 1, ?1, ?2, 5)",
            rusqlite::params![doc, sha],
        )
        .unwrap();
    }
    let store = Store::open(&path, StoreLimits::default()).unwrap();
    assert_eq!(store.instance_id(), "old");
    let (migrated, version) = store.get_run(Scope::new(1, 1), "before-migration").unwrap().expect("run kept");
    assert_eq!((migrated, version), (started_run(1, 1, "before-migration"), 1));
    store.create_run(&started_run(1, 1, "after-migration"), dg_storage::audit::AuditBatch::none()).unwrap();
    assert!(matches!(
        store.create_run(&started_run(1, 1, "after-migration"), dg_storage::audit::AuditBatch::none()).unwrap_err(),
        StoreError::Conflict(_)
    ));
    let report = store.check().unwrap();
    assert!(report.ok() && report.documents_checked >= 2, "{report:?}");
    drop(store);
    // v5: documents live in rowid tables, searched through a small unique key index.
    let raw = Connection::open(&path).unwrap();
    for table in ["runs", "scenarios", "data_shapes"] {
        let sql: String =
            raw.query_row("SELECT sql FROM sqlite_master WHERE name = ?1", [table], |r| r.get(0)).unwrap();
        assert!(!sql.contains("WITHOUT ROWID") && sql.contains("UNIQUE"), "{table}: {sql}");
    }
    let time_indexes: i64 = raw
        .query_row("SELECT count(*) FROM sqlite_master WHERE name IN ('audit_by_time', 'usage_by_time')", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(time_indexes, 0, "no per-request index writes for rare time-range reads");
    assert_eq!(
        raw.query_row("SELECT version FROM store_meta", [], |r| r.get::<_, i64>(0)).unwrap(),
        dg_storage::SCHEMA_VERSION
    );
    drop(raw);
    // v6: the runs by status were counted from the runs there (one before, one after).
    let store = Store::open(&path, StoreLimits::default()).unwrap();
    assert_eq!(by_status(&store), [("active", 2), ("completed", 0), ("failed", 0)]);
    drop(store);
    let backups: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("pre-migration"))
        .collect();
    assert_eq!(backups.len(), 1, "a backup copy is taken before migrating");

    Connection::open(&path).unwrap().execute("UPDATE store_meta SET version = 99", []).unwrap();
    let err = Store::open(&path, StoreLimits::default()).err().expect("newer schema must be refused");
    assert!(matches!(err, StoreError::NewerSchema { found: 99, .. }));
    assert!(err.to_string().contains("newer than this appliance supports"));
}
