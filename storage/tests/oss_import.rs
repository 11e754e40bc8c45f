#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Import of an open-source Decision Gate SQLite database (schema version 4, as the
//! contract's section 9 describes it), built here by the test, into SQLite and into
//! PostgreSQL.

#[path = "../../tests/support/postgres.rs"]
mod cluster;

use std::num::NonZeroU64;

use dg_engine::hashing::{canonical_json_bytes, hash_bytes};
use dg_engine::spec::ScenarioSpec;
use dg_engine::state::RunConfig;
use dg_engine::time::Timestamp;
use dg_engine::{ControlPlane, EngineConfig};
use dg_providers::time::TimeProviderConfig;
use dg_providers::BuiltinProviders;
use dg_storage::import::import_oss_database;
use dg_storage::{Scope, StateStore, Store, StoreLimits};
use rusqlite::{params, Connection};
use serde_json::json;

fn oss_state(run_id: &str, started: u64) -> dg_engine::RunState {
    let spec: ScenarioSpec = serde_json::from_value(json!({
        "scenario_id": "legacy", "namespace_id": 5, "spec_version": "1", "policies": [], "schemas": [], "conditions": [],
        "stages": [{"stage_id": "s", "entry_packets": [], "gates": [], "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"}]
    }))
    .unwrap();
    let providers = BuiltinProviders::default().with_time(TimeProviderConfig::default());
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &providers).unwrap();
    let run_config = RunConfig {
        tenant_id: NonZeroU64::new(9).unwrap(),
        namespace_id: NonZeroU64::new(5).unwrap(),
        run_id: run_id.into(),
        scenario_id: "legacy".into(),
        dispatch_targets: vec![],
        policy_tags: vec![],
    };
    engine.start_run(run_config, Timestamp::Logical(started), true).unwrap()
}

fn build_oss_db(path: &std::path::Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE store_meta (version INTEGER NOT NULL); INSERT INTO store_meta VALUES (4);
         CREATE TABLE runs (tenant_id TEXT NOT NULL, namespace_id TEXT NOT NULL, run_id TEXT NOT NULL, latest_version INTEGER NOT NULL,
             PRIMARY KEY (tenant_id, namespace_id, run_id));
         CREATE TABLE run_state_versions (tenant_id TEXT NOT NULL, namespace_id TEXT NOT NULL, run_id TEXT NOT NULL, version INTEGER NOT NULL,
             state_json BLOB NOT NULL, state_hash TEXT NOT NULL, hash_algorithm TEXT NOT NULL, saved_at INTEGER NOT NULL,
             PRIMARY KEY (tenant_id, namespace_id, run_id, version));
         CREATE TABLE data_shapes (tenant_id TEXT NOT NULL, namespace_id TEXT NOT NULL, schema_id TEXT NOT NULL, version TEXT NOT NULL,
             schema_json BLOB NOT NULL, schema_hash TEXT NOT NULL, hash_algorithm TEXT NOT NULL, description TEXT NULL,
             signing_key_id TEXT NULL, signing_signature TEXT NULL, signing_algorithm TEXT NULL, created_at_json TEXT NOT NULL,
             PRIMARY KEY (tenant_id, namespace_id, schema_id, version));",
    )
    .unwrap();
    let put = |run_id: &str, version: i64, state: &dg_engine::RunState, tamper: bool| {
        let bytes = canonical_json_bytes(state).unwrap();
        let mut hash = hash_bytes(&bytes).value;
        if tamper {
            hash = "0".repeat(64);
        }
        conn.execute("INSERT OR REPLACE INTO runs VALUES ('9', '5', ?1, ?2)", params![run_id, version]).unwrap();
        conn.execute(
            "INSERT INTO run_state_versions VALUES ('9', '5', ?1, ?2, ?3, ?4, 'sha256', 0)",
            params![run_id, version, bytes, hash],
        )
        .unwrap();
    };
    put("old-1", 1, &oss_state("old-1", 1), false);
    put("old-1", 2, &oss_state("old-1", 2), false);
    put("old-2", 1, &oss_state("old-2", 3), false);
    put("tampered", 1, &oss_state("tampered", 4), true);
    let schema = json!({"type": "object"});
    let schema_bytes = canonical_json_bytes(&schema).unwrap();
    conn.execute(
        "INSERT INTO data_shapes VALUES ('9', '5', 'shape', 'v1', ?1, ?2, 'sha256', 'legacy shape', NULL, NULL, NULL, ?3)",
        params![schema_bytes, hash_bytes(&schema_bytes).value, r#"{"kind":"unix_millis","value":5}"#],
    )
    .unwrap();
    // Another tenant's data must not come along.
    conn.execute("INSERT INTO runs VALUES ('8', '5', 'foreign', 1)", []).unwrap();
}

/// The import's promises, on either backend.
fn imports_into_a_tenant_and_namespace(store: &dyn StateStore) {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("oss.db");
    build_oss_db(&source);
    let report = import_oss_database(store, &source, Scope::new(9, 5), Scope::new(2, 3)).unwrap();
    assert_eq!(report.runs_imported, 2);
    assert_eq!(report.shapes_imported, 1);
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert!(report.refused[0].contains("tampered"));
    let (state, _) = store.get_run(Scope::new(2, 3), "old-1").unwrap().unwrap();
    assert_eq!(state.stage_entered_at, Timestamp::Logical(2), "the latest version is imported");
    assert_eq!(state.tenant_id.get(), 2);
    assert!(store.get_run(Scope::new(2, 3), "foreign").unwrap().is_none());
    assert!(store.get_shape(Scope::new(2, 3), "shape", "v1").unwrap().is_some());
    let again = import_oss_database(store, &source, Scope::new(9, 5), Scope::new(2, 3)).unwrap();
    assert_eq!((again.runs_imported, again.runs_already_present), (0, 2), "re-import is harmless");
    assert_eq!((again.shapes_imported, again.shapes_already_present), (0, 1));
    assert!(store.check().unwrap().ok());
}

#[test]
fn open_source_database_imports_into_a_tenant_and_namespace() {
    let dir = tempfile::tempdir().unwrap();
    imports_into_a_tenant_and_namespace(&Store::open(&dir.path().join("state.db"), StoreLimits::default()).unwrap());
}

#[test]
fn open_source_database_imports_into_postgres_too() {
    let Some(cluster) = cluster::Postgres::start() else { return };
    cluster.create_database("imported");
    let store = dg_storage::postgres::PgStore::open(&cluster.settings("imported", 2), StoreLimits::default()).unwrap();
    imports_into_a_tenant_and_namespace(&store);
    store.close();
}

#[test]
fn unsupported_source_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("oss.db");
    Connection::open(&source)
        .unwrap()
        .execute_batch("CREATE TABLE store_meta (version INTEGER); INSERT INTO store_meta VALUES (2);")
        .unwrap();
    let store = Store::open(&dir.path().join("state.db"), StoreLimits::default()).unwrap();
    let err = import_oss_database(&store, &source, Scope::new(1, 1), Scope::new(1, 1)).unwrap_err();
    assert!(err.to_string().contains("unsupported open-source schema version 2"), "{err}");
}
