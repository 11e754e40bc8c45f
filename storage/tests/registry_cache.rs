#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The in-memory copy of API keys and the tenant registry never outlives a change:
//! whoever changes a key, a tenant or a namespace (this store, another process's store,
//! raw SQL), every request snapshot opened after the commit sees the change.

use std::collections::BTreeMap;

use dg_storage::tenancy::Status;
use dg_storage::{ApiKeyRecord, Store, StoreLimits};
use rusqlite::Connection;

fn key(id: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        key_id: id.into(),
        label: "test".into(),
        role: "tenant_admin".into(),
        tenant_id: Some(7),
        namespaces: vec![],
        created_at_ms: 1,
        expires_at_ms: None,
        revoked_at_ms: None,
    }
}

fn generation(path: &std::path::Path) -> i64 {
    Connection::open(path).unwrap().query_row("SELECT registry_generation FROM store_meta", [], |r| r.get(0)).unwrap()
}

#[test]
fn every_registry_change_bumps_the_generation_whoever_makes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path, StoreLimits::default()).unwrap();
    let mut last = generation(&path);
    let mut changed = |what: &str| {
        let now = generation(&path);
        assert!(now > last, "{what} must bump the registry generation ({last} -> {now})");
        last = now;
    };
    store.put_api_key(&key("k1"), "secret-1").unwrap();
    changed("a new key");
    store.update_api_key(&ApiKeyRecord { revoked_at_ms: Some(5), ..key("k1") }).unwrap();
    changed("a revoked key");
    store.create_tenant(7, "seven", &BTreeMap::new()).unwrap();
    changed("a new tenant");
    store.create_namespace(7, 1, "one").unwrap();
    changed("a new namespace");
    store.set_namespace_status(7, 1, Status::Disabled).unwrap();
    changed("a disabled namespace");
    store.set_tenant_status(7, Status::Disabled).unwrap();
    changed("a disabled tenant");
    let raw = Connection::open(&path).unwrap();
    raw.execute("UPDATE tenants SET quotas_json = '{\"tool_calls\":1}' WHERE tenant_id = 7", []).unwrap();
    changed("raw SQL on tenants");
    raw.execute("DELETE FROM api_keys WHERE key_id = 'k1'", []).unwrap();
    changed("raw SQL on api_keys");
    store.delete_namespace(7, 1).unwrap();
    changed("a deleted namespace");
}

#[test]
fn a_change_by_another_process_is_seen_by_the_next_request_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let daemon = Store::open(&path, StoreLimits::default()).unwrap();
    daemon.put_api_key(&key("k1"), "secret-1").unwrap();
    daemon.create_tenant(7, "seven", &BTreeMap::new()).unwrap();
    daemon.create_namespace(7, 1, "one").unwrap();

    // A request reads (and caches) the key and the tenancy answer.
    {
        let _request = daemon.registry_snapshot().unwrap();
        assert_eq!(daemon.find_api_key("secret-1").unwrap().unwrap().revoked_at_ms, None);
        assert_eq!(daemon.active_tenant_quotas(7, Some(1)).unwrap(), Some(BTreeMap::new()));
    }
    // The CLI, in another process, revokes the key and disables the namespace.
    let cli = Store::open(&path, StoreLimits::default()).unwrap();
    cli.update_api_key(&ApiKeyRecord { revoked_at_ms: Some(5), ..key("k1") }).unwrap();
    cli.set_namespace_status(7, 1, Status::Disabled).unwrap();
    cli.close();

    let _next = daemon.registry_snapshot().unwrap();
    assert_eq!(daemon.find_api_key("secret-1").unwrap().unwrap().revoked_at_ms, Some(5));
    assert_eq!(daemon.active_tenant_quotas(7, Some(1)).unwrap(), None, "a disabled namespace is refused at once");
    assert_eq!(daemon.active_tenant_quotas(7, None).unwrap(), Some(BTreeMap::new()));
}

#[test]
fn within_one_snapshot_lookups_come_from_memory_and_unknown_keys_are_always_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path, StoreLimits::default()).unwrap();
    store.put_api_key(&key("k1"), "secret-1").unwrap();
    let snapshot = store.registry_snapshot().unwrap();
    assert!(store.find_api_key("secret-1").unwrap().is_some());
    assert!(store.find_api_key("secret-2").unwrap().is_none());
    // Raw SQL that bypasses the triggers (they are dropped first) is not seen while the
    // snapshot lives: proof that the second lookup is answered from memory...
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch("DROP TRIGGER api_keys_deleted; DROP TRIGGER api_keys_inserted;").unwrap();
    raw.execute("DELETE FROM api_keys", []).unwrap();
    assert!(store.find_api_key("secret-1").unwrap().is_some());
    // ...while a key that was not found is read again, and found once it exists.
    // A stored document is its canonical JSON and that JSON's sha256.
    let bytes = dg_engine::canonical_json_bytes(&key("k2")).unwrap();
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    raw.execute(
        "INSERT INTO api_keys (key_id, record_json, record_sha256, secret_sha256) VALUES ('k2', ?1, ?2, 'secret-2')",
        rusqlite::params![bytes, sha256],
    )
    .unwrap();
    assert_eq!(store.find_api_key("secret-2").unwrap().unwrap().key_id, "k2");
    drop(snapshot);
    // Without a snapshot every lookup reads the database.
    assert!(store.find_api_key("secret-1").unwrap().is_none());
}
