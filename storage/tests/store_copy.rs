#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! `store copy`: a populated SQLite store (runs, scenarios, shapes, keys, subjects, an audit
//! chain long enough to have sealed segments, pruned entries under a legal hold, signed
//! checkpoints, usage and billing periods) copied to PostgreSQL and back arrives row for row
//! identical, with every hash and the chain verified on arrival; a non-empty target is refused.

#[path = "../../tests/support/postgres.rs"]
mod cluster;
mod support;

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use dg_engine::state::RunConfig;
use dg_engine::time::Timestamp;
use dg_engine::{ControlPlane, EngineConfig};
use dg_providers::time::TimeProviderConfig;
use dg_providers::BuiltinProviders;
use dg_storage::audit::{AuditBatch, AuditSigner};
use dg_storage::copy::{copy_store, CopyRecord};
use dg_storage::postgres::PgStore;
use dg_storage::signing::KeyStore;
use dg_storage::usage::UsageRecord;
use dg_storage::{ApiKeyRecord, Scope, StateStore, Store, StoreError, StoreLimits};
use serde_json::json;

fn dump(store: &dyn StateStore) -> Vec<CopyRecord> {
    let mut rows = Vec::new();
    store
        .dump(&mut |record| {
            rows.push(record);
            Ok(())
        })
        .unwrap();
    rows
}

fn populate(store: &Store, keys: &Arc<KeyStore>) {
    let signer: Arc<dyn AuditSigner> = keys.clone();
    store.set_audit_signer(signer.clone(), 64);
    store.create_tenant(1, "acme", &BTreeMap::from([("runs_started".to_string(), 100)])).unwrap();
    store.create_namespace(1, 2, "prod").unwrap();
    store.create_tenant(2, "globex", &BTreeMap::new()).unwrap();
    let spec: dg_engine::spec::ScenarioSpec = serde_json::from_value(json!({
        "scenario_id": "sc", "namespace_id": 2, "spec_version": "1", "policies": [], "schemas": [],
        "conditions": [{"condition_id": "c", "query": {"provider_id": "time", "check_id": "now"}, "comparator": "exists",
                        "expected": null, "policy_tags": []}],
        "stages": [{"stage_id": "s", "entry_packets": [], "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}],
                    "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"}]
    }))
    .unwrap();
    store.put_scenario(Scope::new(1, 2), &spec, AuditBatch::none()).unwrap();
    let providers = BuiltinProviders::default().with_time(TimeProviderConfig::default());
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &providers).unwrap();
    for i in 0..30 {
        let run_config = RunConfig {
            tenant_id: NonZeroU64::new(1).unwrap(),
            namespace_id: NonZeroU64::new(2).unwrap(),
            run_id: format!("run-{i:02}"),
            scenario_id: "sc".into(),
            dispatch_targets: vec![],
            policy_tags: vec![],
        };
        let state = engine.start_run(run_config, Timestamp::Logical(1), true).unwrap();
        let usage = vec![UsageRecord {
            tenant_id: 1,
            key_id: "k1".into(),
            request_id: format!("start-{i}"),
            counter: "runs_started".into(),
            amount: 1,
        }];
        store.create_run(&state, AuditBatch { events: vec![support::tool_call_event(i, 1)], usage }).unwrap();
    }
    let shape: dg_engine::data_shape::DataShapeRecord = serde_json::from_value(json!({
        "tenant_id": 1, "namespace_id": 2, "schema_id": "s", "version": "1", "schema": {"type": "object"},
        "description": null, "created_at": {"kind": "logical", "value": 1}}))
    .unwrap();
    store.put_shape(&shape, AuditBatch::none()).unwrap();
    let key = ApiKeyRecord {
        key_id: "k1".into(),
        label: "l".into(),
        role: "service".into(),
        tenant_id: Some(1),
        namespaces: vec![2],
        created_at_ms: 1,
        expires_at_ms: None,
        revoked_at_ms: None,
    };
    store.put_api_key(&key, &"a".repeat(64)).unwrap();
    store
        .put_oidc_subject(&dg_storage::subjects::OidcSubjectRecord {
            subject: "oidc:https://idp#alice".into(),
            role: "service".into(),
            tenant_id: Some(1),
            namespaces: vec![],
            label: "alice".into(),
            updated_at_ms: 1,
        })
        .unwrap();
    // A chain long enough for sealed segments, some pruned to hashes, tenant 2 held.
    for round in 0..48u64 {
        let events = (0..100).map(|n| support::tool_call_event(round * 100 + n, 1 + n % 2)).collect();
        store.append_audit(events, vec![]).unwrap();
    }
    store.audit_checkpoint_now(&signer).unwrap();
    store.set_legal_hold(2, Some("case 7")).unwrap();
    store.prune_audit(i64::MAX).unwrap();
    store.sample_storage_usage().unwrap();
    store.record_backup().unwrap();
    store.set_forward_cursor(17).unwrap();
}

/// A populated SQLite store, with its key directory and data directory.
fn populated_source() -> (tempfile::TempDir, Arc<KeyStore>, tempfile::TempDir, Store) {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(KeyStore::open(&keys_dir.path().join("keys")).unwrap());
    let a_dir = tempfile::tempdir().unwrap();
    let source = Store::open(&a_dir.path().join("state.db"), StoreLimits::default()).unwrap();
    populate(&source, &keys);
    (keys_dir, keys, a_dir, source)
}

#[test]
fn sqlite_to_postgres_and_back_arrives_identical_and_verified() {
    let Some(cluster) = cluster::Postgres::start() else { return };
    cluster.create_database("target");
    let (_keys_dir, keys, a_dir, source) = populated_source();
    let ring = keys.ring().unwrap();
    let report = source.verify_audit(&ring).unwrap();
    assert!(report.ok() && report.pruned > 0, "{report:?}");
    let sealed: i64 = rusqlite::Connection::open(a_dir.path().join("state.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM audit_segments", [], |row| row.get(0))
        .unwrap();
    assert!(sealed > 0, "the source has sealed segments");
    let postgres = PgStore::open(&cluster.settings("target", 4), StoreLimits::default()).unwrap();
    let copied = copy_store(&source, &postgres, &ring).unwrap();
    assert_eq!(copied.rows["runs"], 30);
    assert_eq!(copied.rows["audit_entries"], 30 + 4800);
    assert!(copied.audit.ok() && copied.audit.pruned == report.pruned, "{:?}", copied.audit);
    assert_eq!(dump(&source), dump(&postgres), "PostgreSQL holds what SQLite held, row for row");
    // A target that is not empty is refused, and nothing is written to it.
    let err = copy_store(&source, &postgres, &ring).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    // And back into a new SQLite store.
    let c_dir = tempfile::tempdir().unwrap();
    let back = Store::open(&c_dir.path().join("state.db"), StoreLimits::default()).unwrap();
    copy_store(&postgres, &back, &ring).unwrap();
    assert_eq!(dump(&source), dump(&back), "the round trip changed nothing");
    // The copies work as stores: a run reads back and the chain goes on.
    assert!(back.get_run(Scope::new(1, 2), "run-07").unwrap().is_some());
    assert!(postgres.find_api_key(&"a".repeat(64)).unwrap().is_some());
    back.append_audit(vec![support::tool_call_event(9999, 1)], vec![]).unwrap();
    assert!(back.verify_audit(&ring).unwrap().ok());
}

#[test]
fn a_postgres_deployment_backs_up_while_written_and_restores_into_either_backend() {
    use dg_storage::backup::{self, BackupSources, CreateOptions, RestoreOptions, StateSource};
    let Some(cluster) = cluster::Postgres::start() else { return };
    cluster.create_database("live");
    cluster.create_database("restored");
    let (keys_dir, keys, _a_dir, source) = populated_source();
    let ring = keys.ring().unwrap();
    let live = Arc::new(PgStore::open(&cluster.settings("live", 4), StoreLimits::default()).unwrap());
    copy_store(&source, live.as_ref(), &ring).unwrap();
    let signer: Arc<dyn AuditSigner> = keys.clone();
    live.set_audit_signer(signer, 64);

    // The deployment keeps serving while the backup reads it: the backup holds one snapshot.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (live, stop) = (live.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut written = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && written < 5_000 {
                let events = (0..10).map(|n| support::tool_call_event(100_000 + written * 10 + n, 1)).collect();
                live.append_audit(events, vec![]).unwrap();
                written += 1;
            }
            written
        })
    };
    let out = tempfile::tempdir().unwrap();
    let sources = BackupSources {
        database: StateSource::Store(live.as_ref()),
        runpacks: keys_dir.path().join("runpacks"),
        keyring: keys_dir.path().join("keys/keyring.json"),
        witness: None,
        config: b"[storage]\nbackend = \"postgres\"\n".to_vec(),
        secrets: Vec::new(),
    };
    let options = CreateOptions { part_size: backup::DEFAULT_PART_SIZE, passphrase: None, progress: None };
    let (made, report) = backup::create(&sources, out.path(), &keys.active().unwrap(), &ring, &options).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0, "the deployment was written during the backup");
    assert_eq!(report.source_backend, "postgres");
    assert_eq!(report.instance_id, live.instance_id(), "the backup names the deployment it came from");
    assert_eq!(backup::verify(&made, &ring, None).unwrap(), report, "verified offline again");

    // Into SQLite: a node's data directory, state and all.
    let sqlite_dir = tempfile::tempdir().unwrap();
    let restored_dir = sqlite_dir.path().join("data");
    backup::restore(&made, &ring, &restored_dir, &RestoreOptions::default()).unwrap();
    let restored = Store::open(&restored_dir.join("state.db"), StoreLimits::default()).unwrap();
    let restored_rows = dump(&restored);
    assert!(restored.verify_audit(&ring).unwrap().ok());
    let entries = restored.verify_audit(&ring).unwrap().entries;
    assert!(entries >= 4830, "the snapshot holds the chain as it was: {entries}");
    restored.close();

    // Into PostgreSQL: a new, migrated database; the same rows arrive, and no state.db stays.
    let target = PgStore::open(&cluster.settings("restored", 2), StoreLimits::default()).unwrap();
    let pg_dir = tempfile::tempdir().unwrap();
    let node_dir = pg_dir.path().join("node");
    let (again, copied) = backup::restore_into(&made, &ring, &node_dir, &RestoreOptions::default(), &target).unwrap();
    assert_eq!(again.backup_id, report.backup_id);
    assert_eq!(copied.audit.entries, entries);
    assert_eq!(dump(&target), restored_rows, "both backends hold the same state from one backup");
    assert!(!node_dir.join("state.db").exists(), "the node keeps no second copy of the state");
    assert!(node_dir.join("keys/keyring.json").exists());
    // A database that is not empty is refused before the data directory is touched.
    let other = pg_dir.path().join("other");
    let err = backup::restore_into(&made, &ring, &other, &RestoreOptions::default(), &target).unwrap_err();
    assert!(matches!(err, backup::BackupError::Refused(_)), "{err}");
    assert!(!other.exists());
    target.close();
    live.close();
}
