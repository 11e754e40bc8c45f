#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Storage promises: tampered documents fail closed, tenants never see each other's data,
//! migrations go forward only and refuse newer databases, writes are idempotent where
//! the contract says so.

#[allow(dead_code)]
mod support;

use support::{scenario_spec, started_run};

use dg_engine::hashing::hash_bytes;
use dg_engine::state::RunStatus;
use dg_storage::{Scope, Store, StoreError, StoreLimits};
use proptest::prelude::*;
use rusqlite::Connection;
use serde_json::json;

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("state.db"), StoreLimits::default()).unwrap()
}

#[test]
fn flipping_any_byte_of_a_stored_document_is_an_integrity_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let state = started_run(1, 2, "r1");
    store.create_run(&state, dg_storage::audit::AuditBatch::none()).unwrap();
    store.put_scenario(Scope::new(1, 2), &scenario_spec("sc", 2, "1"), dg_storage::audit::AuditBatch::none()).unwrap();
    let len: usize = {
        let raw = Connection::open(dir.path().join("state.db")).unwrap();
        raw.query_row("SELECT length(state_json) FROM runs", [], |r| r.get(0)).unwrap()
    };
    for index in (0..len).step_by(7) {
        let raw = Connection::open(dir.path().join("state.db")).unwrap();
        let mut bytes: Vec<u8> = raw.query_row("SELECT state_json FROM runs", [], |r| r.get(0)).unwrap();
        let original = bytes.clone();
        bytes[index] ^= 0x20;
        raw.execute("UPDATE runs SET state_json = ?1", [&bytes]).unwrap();
        let err = store.get_run(Scope::new(1, 2), "r1").unwrap_err();
        assert!(matches!(err, StoreError::Integrity { table: "runs", .. }), "byte {index}: {err}");
        raw.execute("UPDATE runs SET state_json = ?1", [&original]).unwrap();
    }
    assert!(store.integrity_failures() > 0);
    assert_eq!(store.get_run(Scope::new(1, 2), "r1").unwrap().unwrap().0, state);

    let raw = Connection::open(dir.path().join("state.db")).unwrap();
    raw.execute("UPDATE scenarios SET spec_json = CAST(replace(spec_json, 'terminal', 'linear!!') AS BLOB)", [])
        .unwrap();
    assert!(matches!(store.get_scenario(Scope::new(1, 2), "sc").unwrap_err(), StoreError::Integrity { .. }));
    let report = store.check().unwrap();
    assert!(!report.ok());
    assert_eq!(report.failures, vec!["scenarios 1/2/sc".to_string()]);
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
fn a_document_and_hash_rewritten_together_for_another_run_is_refused() {
    // An attacker with raw access who recomputes the hash can still not move a run into
    // another tenant's key: the payload's own ids must match the row key.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create_run(&started_run(1, 2, "mine"), dg_storage::audit::AuditBatch::none()).unwrap();
    let foreign = started_run(9, 2, "mine");
    let bytes = dg_engine::canonical_json_bytes(&foreign).unwrap();
    let raw = Connection::open(dir.path().join("state.db")).unwrap();
    raw.execute(
        "UPDATE runs SET state_json = ?1, state_sha256 = ?2",
        rusqlite::params![bytes, hash_bytes(&bytes).value],
    )
    .unwrap();
    assert!(matches!(store.get_run(Scope::new(1, 2), "mine").unwrap_err(), StoreError::Integrity { .. }));
}

#[test]
fn scenario_define_is_idempotent_and_conflicts_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert!(store
        .put_scenario(Scope::new(1, 2), &scenario_spec("sc", 2, "1"), dg_storage::audit::AuditBatch::none())
        .unwrap());
    assert!(!store
        .put_scenario(Scope::new(1, 2), &scenario_spec("sc", 2, "1"), dg_storage::audit::AuditBatch::none())
        .unwrap());
    let mut changed = scenario_spec("sc", 2, "1");
    changed.spec_version = "2".into();
    assert!(matches!(
        store.put_scenario(Scope::new(1, 2), &changed, dg_storage::audit::AuditBatch::none()).unwrap_err(),
        StoreError::Conflict(_)
    ));
}

#[test]
fn scenario_specs_are_served_once_verified_and_later_definitions_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let scope = Scope::new(1, 2);
    assert!(store.scenario_spec(scope, "sc").unwrap().is_none());
    // Defined by another process after a miss: a miss is never remembered.
    let other = open(&dir);
    other.put_scenario(scope, &scenario_spec("sc", 2, "1"), dg_storage::audit::AuditBatch::none()).unwrap();
    let first = store.scenario_spec(scope, "sc").unwrap().expect("defined later, found");
    assert_eq!(*first, scenario_spec("sc", 2, "1"));
    // Tampering after the first verified read: this store keeps serving the verified
    // spec; a store that has not read it yet refuses the tampered bytes.
    let raw = Connection::open(dir.path().join("state.db")).unwrap();
    raw.execute(
        "UPDATE scenarios SET spec_json = CAST(replace(CAST(spec_json AS TEXT), '\"1\"', '\"9\"') AS BLOB)",
        [],
    )
    .unwrap();
    assert_eq!(*store.scenario_spec(scope, "sc").unwrap().unwrap(), scenario_spec("sc", 2, "1"));
    let fresh = open(&dir);
    assert!(matches!(fresh.scenario_spec(scope, "sc").unwrap_err(), StoreError::Integrity { .. }));
    assert!(store.scenario_spec(Scope::new(3, 2), "sc").unwrap().is_none(), "scoped by tenant");
}

#[test]
fn concurrent_update_of_the_same_version_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let state = started_run(1, 2, "r");
    assert_eq!(store.create_run(&state, dg_storage::audit::AuditBatch::none()).unwrap(), 1);
    assert!(matches!(
        store.create_run(&state, dg_storage::audit::AuditBatch::none()).unwrap_err(),
        StoreError::Conflict(_)
    ));
    assert_eq!(store.update_run(&state, 1, dg_storage::audit::AuditBatch::none()).unwrap(), 2);
    assert!(matches!(
        store.update_run(&state, 1, dg_storage::audit::AuditBatch::none()).unwrap_err(),
        StoreError::Conflict(_)
    ));
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

fn by_status(store: &Store) -> Vec<(&'static str, u64)> {
    let counts = store.count_runs_by_status().unwrap();
    ["active", "completed", "failed"]
        .into_iter()
        .map(|status| (status, counts.iter().find(|(s, _)| s == status).map_or(u64::MAX, |(_, n)| *n)))
        .collect()
}

#[test]
fn runs_by_status_are_kept_by_every_write_and_checked_against_a_recount() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(by_status(&store), [("active", 0), ("completed", 0), ("failed", 0)]);
    for (tenant, n) in [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1)] {
        store.create_run(&started_run(tenant, 3, &format!("r{n}")), dg_storage::audit::AuditBatch::none()).unwrap();
    }
    // A second create of the same run and a stale update both fail and count nothing.
    assert!(matches!(
        store.create_run(&started_run(1, 3, "r0"), dg_storage::audit::AuditBatch::none()).unwrap_err(),
        StoreError::Conflict(_)
    ));
    let (mut state, version) = store.get_run(Scope::new(1, 3), "r0").unwrap().unwrap();
    state.status = RunStatus::Completed;
    store.update_run(&state, version, dg_storage::audit::AuditBatch::none()).unwrap();
    assert!(matches!(
        store.update_run(&state, version, dg_storage::audit::AuditBatch::none()).unwrap_err(),
        StoreError::Conflict(_)
    ));
    let (mut state, version) = store.get_run(Scope::new(2, 3), "r1").unwrap().unwrap();
    state.status = RunStatus::Failed;
    store.update_run(&state, version, dg_storage::audit::AuditBatch::none()).unwrap();
    // Rewriting a run in the status it has moves nothing.
    let (state, version) = store.get_run(Scope::new(1, 3), "r1").unwrap().unwrap();
    store.update_run(&state, version, dg_storage::audit::AuditBatch::none()).unwrap();
    assert_eq!(by_status(&store), [("active", 3), ("completed", 1), ("failed", 1)]);
    let raw = Connection::open(dir.path().join("state.db")).unwrap();
    let recount: Vec<(String, u64)> = raw
        .prepare("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(recount, [("active".to_string(), 3), ("completed".to_string(), 1), ("failed".to_string(), 1)]);
    assert!(store.check().unwrap().ok());
    // Totals that no longer match the runs are reported by the operator's check.
    raw.execute("UPDATE tenant_usage SET runs_failed = runs_failed + 1 WHERE tenant_id = 1", []).unwrap();
    let report = store.check().unwrap();
    assert!(!report.ok());
    assert!(report.failures.is_empty(), "no document changed: {report:?}");
    assert_eq!(report.usage_drift.len(), 1, "{report:?}");
    assert!(report.usage_drift[0].starts_with("tenant_usage 1:") && report.usage_drift[0].contains("/1"), "{report:?}");
}

#[derive(Debug, Clone)]
enum Op {
    PutRun { tenant: u64, run: u8 },
    GetRun { tenant: u64, run: u8 },
    PutScenario { tenant: u64, id: u8 },
    ListScenarios { tenant: u64 },
    ListRuns { tenant: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let tenant = prop_oneof![Just(1u64), Just(2u64)];
    prop_oneof![
        (tenant.clone(), 0u8..4).prop_map(|(tenant, run)| Op::PutRun { tenant, run }),
        (tenant.clone(), 0u8..4).prop_map(|(tenant, run)| Op::GetRun { tenant, run }),
        (tenant.clone(), 0u8..3).prop_map(|(tenant, id)| Op::PutScenario { tenant, id }),
        tenant.clone().prop_map(|tenant| Op::ListScenarios { tenant }),
        tenant.prop_map(|tenant| Op::ListRuns { tenant }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn no_read_by_one_tenant_returns_the_others_data(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        for op in ops {
            match op {
                Op::PutRun { tenant, run: n } => {
                    let _ = store.create_run(&started_run(tenant, 3, &format!("run-{n}")), dg_storage::audit::AuditBatch::none());
                }
                Op::GetRun { tenant, run: n } => {
                    if let Some((state, _)) = store.get_run(Scope::new(tenant, 3), &format!("run-{n}")).unwrap() {
                        prop_assert_eq!(state.tenant_id.get(), tenant);
                    }
                }
                Op::PutScenario { tenant, id } => {
                    let mut s = scenario_spec(&format!("s{id}-t{tenant}"), 3, "1");
                    s.default_tenant_id = std::num::NonZeroU64::new(tenant);
                    store.put_scenario(Scope::new(tenant, 3), &s, dg_storage::audit::AuditBatch::none()).unwrap();
                }
                Op::ListScenarios { tenant } => {
                    for record in store.list_scenarios(tenant, 3, None, 100).unwrap() {
                        prop_assert_eq!(record.scope.tenant_id, tenant);
                        let suffix = format!("-t{}", tenant);
                        prop_assert!(record.spec.scenario_id.ends_with(&suffix));
                    }
                }
                Op::ListRuns { tenant } => {
                    for summary in store.list_runs(Some(Scope::new(tenant, 3))).unwrap() {
                        prop_assert_eq!(summary.scope.tenant_id, tenant);
                    }
                }
            }
        }
    }
}

#[test]
fn tenant_run_storage_is_bounded_and_other_tenants_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    // The bound counts the bytes stored (run states are stored compact): a probe run's.
    let size: u64 = {
        let scratch = tempfile::tempdir().unwrap();
        let store = open(&scratch);
        store.create_run(&started_run(1, 2, "probe"), dg_storage::audit::AuditBatch::none()).unwrap();
        let raw = Connection::open(scratch.path().join("state.db")).unwrap();
        raw.query_row("SELECT length(state_json) FROM runs", [], |r| r.get(0)).unwrap()
    };
    let limits = StoreLimits { max_tenant_run_bytes: size * 3 + size / 2, ..StoreLimits::default() };
    let store = Store::open(&dir.path().join("state.db"), limits).unwrap();
    for n in 0..3 {
        store.create_run(&started_run(1, 2, &format!("r{n}")), dg_storage::audit::AuditBatch::none()).unwrap();
    }
    let err = store.create_run(&started_run(1, 2, "r3"), dg_storage::audit::AuditBatch::none()).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { what: "tenant run state storage", .. }), "{err}");
    store.create_run(&started_run(2, 2, "other-tenant"), dg_storage::audit::AuditBatch::none()).unwrap();
    // Rewriting an existing run at the same size stays allowed at the limit.
    let (state, version) = store.get_run(Scope::new(1, 2), "r0").unwrap().unwrap();
    store.update_run(&state, version, dg_storage::audit::AuditBatch::none()).unwrap();
}

#[test]
fn tampering_with_shapes_and_keys_is_detected_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let record: dg_engine::data_shape::DataShapeRecord = serde_json::from_value(json!({
        "tenant_id": 1, "namespace_id": 2, "schema_id": "s", "version": "1", "schema": {"type": "object"},
        "description": null, "created_at": {"kind": "logical", "value": 1}}))
    .unwrap();
    store.put_shape(&record, dg_storage::audit::AuditBatch::none()).unwrap();
    let key = dg_storage::ApiKeyRecord {
        key_id: "k1".into(),
        label: "l".into(),
        role: "service".into(),
        tenant_id: Some(1),
        namespaces: vec![2],
        created_at_ms: 0,
        expires_at_ms: None,
        revoked_at_ms: None,
    };
    store.put_api_key(&key, "secret-hash").unwrap();
    let raw = Connection::open(dir.path().join("state.db")).unwrap();
    raw.execute("UPDATE data_shapes SET record_json = CAST(replace(record_json, 'object', 'string') AS BLOB)", [])
        .unwrap();
    raw.execute("UPDATE api_keys SET record_json = CAST(replace(record_json, 'service', 'org_admin') AS BLOB)", [])
        .unwrap();
    assert!(matches!(store.get_shape(Scope::new(1, 2), "s", "1").unwrap_err(), StoreError::Integrity { .. }));
    assert!(
        matches!(store.find_api_key("secret-hash").unwrap_err(), StoreError::Integrity { .. }),
        "a key's role cannot be raised by editing the row"
    );
    assert_eq!(store.check().unwrap().failures.len(), 2);
}
