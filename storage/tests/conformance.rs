#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The storage conformance suite: one source, two backends (every storage test about
//! behaviour; what is SQLite's own, its compact forms, migrations, sealed segments, WAL
//! checkpoints, crash and disk-full recovery, stays in the other files). Every test here takes a
//! [`Backend`] and runs against SQLite (`sqlite::…`) and against a throwaway PostgreSQL cluster
//! (`postgres::…`, skipped outside CI when PostgreSQL is not installed). "Nodes" are stores
//! over the same data: on PostgreSQL separate stores (separate pools, as separate daemons),
//! on SQLite the one store (a single box).

#[path = "../../tests/support/postgres.rs"]
mod cluster;
mod support;

use support::{scenario_spec, started_run};

use std::sync::Arc;

use dg_engine::state::DispatchTarget;
use std::collections::BTreeMap;

use dg_engine::data_shape::DataShapeRecord;
use dg_storage::audit::{AuditBatch, AuditSigner};
use dg_storage::postgres::PgStore;
use dg_storage::signing::KeyStore;
use dg_storage::subjects::OidcSubjectRecord;
use dg_storage::tenancy::Status;
use dg_storage::usage::UsageRecord;
use dg_storage::{ApiKeyRecord, Scope, StateStore, Store, StoreError, StoreLimits};
use serde_json::json;

/// Limits small enough to meet in a test.
fn limits() -> StoreLimits {
    StoreLimits { max_run_state_bytes: 64 * 1024, ..StoreLimits::default() }
}

enum Kind {
    Sqlite(tempfile::TempDir),
    Postgres(cluster::Postgres),
}

struct Backend {
    kind: Kind,
    store: Arc<dyn StateStore>,
    keys: Arc<KeyStore>,
    _keys_dir: tempfile::TempDir,
}

const DB: &str = "conformance";

impl Backend {
    fn keys() -> (Arc<KeyStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (Arc::new(KeyStore::open(&dir.path().join("keys")).unwrap()), dir)
    }

    fn sqlite() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("state.db"), limits()).unwrap());
        let (keys, keys_dir) = Self::keys();
        Some(Self { kind: Kind::Sqlite(dir), store, keys, _keys_dir: keys_dir })
    }

    fn postgres() -> Option<Self> {
        let cluster = cluster::Postgres::start()?;
        cluster.create_database(DB);
        let store = Arc::new(PgStore::open(&cluster.settings(DB, 4), limits()).unwrap());
        let (keys, keys_dir) = Self::keys();
        Some(Self { kind: Kind::Postgres(cluster), store, keys, _keys_dir: keys_dir })
    }

    /// Another node over the same data.
    fn node(&self) -> Arc<dyn StateStore> {
        match &self.kind {
            Kind::Sqlite(_) => self.store.clone(),
            Kind::Postgres(cluster) => Arc::new(PgStore::open(&cluster.settings(DB, 4), limits()).unwrap()),
        }
    }

    fn signer(&self) -> Arc<dyn AuditSigner> {
        self.keys.clone()
    }

    /// Changes one byte of `column` in the row of `table` matching `key_sql`, outside the
    /// appliance (SQLite: a raw connection; PostgreSQL: psql).
    fn flip_byte(&self, table: &str, column: &str, key_sql: &str, at: usize) {
        match &self.kind {
            Kind::Sqlite(dir) => {
                let raw = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
                let sql = format!("SELECT {column} FROM {table} WHERE {key_sql}");
                let mut bytes: Vec<u8> = raw.query_row(&sql, [], |row| row.get(0)).unwrap();
                bytes[at] ^= 0x01;
                let sql = format!("UPDATE {table} SET {column} = ?1 WHERE {key_sql}");
                assert_eq!(raw.execute(&sql, [bytes]).unwrap(), 1);
            }
            Kind::Postgres(cluster) => {
                let sql = format!(
                    "UPDATE {table} SET {column} = set_byte({column}, {at}, get_byte({column}, {at}) # 1) WHERE {key_sql}"
                );
                assert_eq!(cluster.psql(DB, &sql).trim(), "UPDATE 1");
            }
        }
    }

    /// A second store over the same data with its own limits and caches, as a node started
    /// later (SQLite: a second `Store` on the same file; PostgreSQL: another pool).
    fn fresh_node(&self, limits: StoreLimits) -> Arc<dyn StateStore> {
        match &self.kind {
            Kind::Sqlite(dir) => Arc::new(Store::open(&dir.path().join("state.db"), limits).unwrap()),
            Kind::Postgres(cluster) => Arc::new(PgStore::open(&cluster.settings(DB, 2), limits).unwrap()),
        }
    }

    /// Runs the statement written for this backend (for what differs: trigger names, meta tables).
    fn sql_for(&self, sqlite: &str, postgres: &str) {
        self.sql(match self.kind {
            Kind::Sqlite(_) => sqlite,
            Kind::Postgres(_) => postgres,
        });
    }

    /// The registry generation, read outside the appliance.
    fn registry_generation(&self) -> i64 {
        match &self.kind {
            Kind::Sqlite(dir) => rusqlite::Connection::open(dir.path().join("state.db"))
                .unwrap()
                .query_row("SELECT registry_generation FROM store_meta", [], |row| row.get(0))
                .unwrap(),
            Kind::Postgres(cluster) => {
                cluster.psql(DB, "SELECT registry_generation FROM dg_meta").trim().parse().unwrap()
            }
        }
    }

    /// Runs SQL outside the appliance (SQLite: a raw connection; PostgreSQL: psql).
    fn sql(&self, statement: &str) {
        match &self.kind {
            Kind::Sqlite(dir) => {
                rusqlite::Connection::open(dir.path().join("state.db")).unwrap().execute_batch(statement).unwrap();
            }
            Kind::Postgres(cluster) => {
                cluster.psql(DB, statement);
            }
        }
    }

    /// The one bytes value `query` selects, read outside the appliance.
    fn bytes(&self, query: &str) -> Vec<u8> {
        match &self.kind {
            Kind::Sqlite(dir) => rusqlite::Connection::open(dir.path().join("state.db"))
                .unwrap()
                .query_row(query, [], |row| row.get(0))
                .unwrap(),
            Kind::Postgres(cluster) => {
                hex::decode(cluster.psql(DB, &format!("SELECT encode(q.v, 'hex') FROM ({query}) AS q(v)")).trim())
                    .unwrap()
            }
        }
    }

    /// `bytes` as a literal in this backend's SQL.
    fn literal(&self, bytes: &[u8]) -> String {
        match &self.kind {
            Kind::Sqlite(_) => format!("X'{}'", hex::encode(bytes)),
            Kind::Postgres(_) => format!("'\\x{}'::bytea", hex::encode(bytes)),
        }
    }
}

fn batch(n: u64, tenant: u64) -> AuditBatch {
    AuditBatch { events: vec![support::tool_call_event(n, tenant)], usage: vec![] }
}

fn usage(tenant: u64, request: &str) -> UsageRecord {
    UsageRecord {
        tenant_id: tenant,
        key_id: "k".into(),
        request_id: request.into(),
        counter: "tool_calls".into(),
        amount: 1,
    }
}

// ----- the tests, each written once -----

fn runs_round_trip_with_versions_and_conflicts(backend: &Backend) {
    let store = &backend.store;
    let state = started_run(1, 2, "r1");
    assert_eq!(store.create_run(&state, batch(1, 1)).unwrap(), 1);
    assert!(matches!(store.create_run(&state, AuditBatch::none()).unwrap_err(), StoreError::Conflict(_)));
    let (loaded, version) = store.get_run(Scope::new(1, 2), "r1").unwrap().unwrap();
    assert_eq!((loaded, version), (state.clone(), 1));
    assert_eq!(store.update_run(&state, 1, batch(2, 1)).unwrap(), 2);
    assert!(matches!(store.update_run(&state, 1, AuditBatch::none()).unwrap_err(), StoreError::Conflict(_)));
    // Tenant scoping: the same run id in another scope is another run (absent here).
    assert!(store.get_run(Scope::new(2, 2), "r1").unwrap().is_none());
    assert!(store.get_run(Scope::new(1, 3), "r1").unwrap().is_none());
    store.create_run(&started_run(2, 2, "r1"), AuditBatch::none()).unwrap();
    let listed = store.list_runs(Some(Scope::new(1, 2))).unwrap();
    assert_eq!(listed.iter().map(|r| (r.run_id.as_str(), r.version)).collect::<Vec<_>>(), [("r1", 2)]);
    assert_eq!(store.list_runs(None).unwrap().len(), 2);
    let counts = store.count_runs_by_status().unwrap();
    assert_eq!(counts.iter().find(|(s, _)| s == "active").map(|(_, n)| *n), Some(2));
    assert_eq!(counts.len(), 3, "every status is listed: {counts:?}");
}

fn oversized_run_states_are_refused_and_nothing_is_written(backend: &Backend) {
    let mut state = started_run(1, 2, "big");
    state.dispatch_targets = (0..4000).map(|i| DispatchTarget::Agent { agent_id: format!("agent-{i:05}") }).collect();
    let err = backend.store.create_run(&state, batch(1, 1)).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { what: "run state", .. }), "{err}");
    assert!(backend.store.get_run(Scope::new(1, 2), "big").unwrap().is_none());
    // Its audit entry was not written either.
    let report = backend.store.verify_audit(&backend.keys.ring().unwrap()).unwrap();
    assert_eq!(report.entries, 0);
}

fn a_byte_changed_in_a_stored_document_is_an_integrity_error(backend: &Backend) {
    let store = &backend.store;
    store.create_run(&started_run(1, 2, "r1"), AuditBatch::none()).unwrap();
    store.put_scenario(Scope::new(1, 2), &scenario_spec("sc", 2, "1"), AuditBatch::none()).unwrap();
    assert_eq!(store.integrity_failures(), 0);
    backend.flip_byte("runs", "state_json", "run_id = 'r1'", 12);
    let err = store.get_run(Scope::new(1, 2), "r1").unwrap_err();
    assert!(matches!(err, StoreError::Integrity { table: "runs", .. }), "{err}");
    assert_eq!(store.integrity_failures(), 1);
    backend.flip_byte("scenarios", "spec_json", "scenario_id = 'sc'", 20);
    // Read through another node (on SQLite the same store).
    let node = backend.node();
    let err = node.get_scenario(Scope::new(1, 2), "sc").unwrap_err();
    assert!(matches!(err, StoreError::Integrity { table: "scenarios", .. }), "{err}");
    assert_eq!(node.integrity_failures(), if Arc::ptr_eq(&node, store) { 2 } else { 1 });
}

fn scenarios_are_idempotent_conflict_on_change_and_seen_by_every_node(backend: &Backend) {
    let node = backend.node();
    let scope = Scope::new(1, 2);
    assert!(backend.store.put_scenario(scope, &scenario_spec("sc", 2, "1"), batch(1, 1)).unwrap());
    // Usable on another node at once.
    let seen = node.get_scenario(scope, "sc").unwrap().unwrap();
    assert_eq!(seen.spec, scenario_spec("sc", 2, "1"));
    assert!(!node.put_scenario(scope, &scenario_spec("sc", 2, "1"), AuditBatch::none()).unwrap());
    let err = node.put_scenario(scope, &scenario_spec("sc", 2, "2"), AuditBatch::none()).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(node.get_scenario(Scope::new(2, 2), "sc").unwrap().is_none());
    assert_eq!(backend.store.get_scenario(scope, "sc").unwrap().unwrap().spec_sha256, seen.spec_sha256);
}

/// Many threads of one node write at once: runs of their own (created, created again, moved
/// on) and one run they all advance. On PostgreSQL the writes waiting together go as one
/// statement (`write_group.rs`); each still gets its own answer: its version, or its own
/// conflict, and the chain and the usage totals hold exactly the writes that succeeded.
fn writes_from_many_threads_of_one_node_each_get_their_own_answer(backend: &Backend) {
    const THREADS: u64 = 8;
    const EACH: u64 = 12;
    let scope = Scope::new(1, 3);
    let node = backend.node();
    node.set_audit_signer(backend.signer(), 7);
    node.create_run(&started_run(1, 3, "together"), batch(1, 1)).unwrap();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let node = node.clone();
            std::thread::spawn(move || {
                let mut wins = 0u64;
                for i in 0..EACH {
                    let run_id = format!("own-{t}-{i}");
                    let first = AuditBatch {
                        events: vec![support::tool_call_event(10_000 + t * 100 + i, 1)],
                        usage: vec![usage(1, &format!("req-{t}-{i}"))],
                    };
                    assert_eq!(node.create_run(&started_run(1, 3, &run_id), first).unwrap(), 1);
                    let again = node.create_run(&started_run(1, 3, &run_id), batch(2, 1)).unwrap_err();
                    assert!(matches!(again, StoreError::Conflict(_)), "{again}");
                    let (mut state, version) = node.get_run(scope, &run_id).unwrap().unwrap();
                    state.dispatch_targets.push(DispatchTarget::Agent { agent_id: format!("own-{t}-{i}") });
                    assert_eq!(node.update_run(&state, version, batch(20_000 + t * 100 + i, 1)).unwrap(), 2);
                    let (mut state, version) = node.get_run(scope, "together").unwrap().unwrap();
                    state.dispatch_targets.push(DispatchTarget::Agent { agent_id: format!("t{t}-{i}") });
                    match node.update_run(&state, version, batch(30_000 + t * 100 + i, 1)) {
                        Ok(new) => {
                            assert_eq!(new, version + 1);
                            wins += 1;
                        }
                        Err(StoreError::Conflict(_) | StoreError::Contended { .. }) => {}
                        Err(err) => panic!("thread {t}: {err}"),
                    }
                }
                wins
            })
        })
        .collect();
    let wins: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    for t in 0..THREADS {
        for i in 0..EACH {
            let (state, version) = node.get_run(scope, &format!("own-{t}-{i}")).unwrap().unwrap();
            assert_eq!(version, 2);
            assert_eq!(state.dispatch_targets.len(), 1);
        }
    }
    let (state, version) = node.get_run(scope, "together").unwrap().unwrap();
    assert_eq!((version, state.dispatch_targets.len() as u64), (1 + wins, wins));
    let report = node.verify_audit(&backend.keys.ring().unwrap()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, 1 + THREADS * EACH * 2 + wins);
    assert_eq!(node.usage_total(1, "tool_calls").unwrap(), THREADS * EACH);
}

fn concurrent_writers_of_one_run_never_lose_a_decision(backend: &Backend) {
    const WRITERS: u64 = 4;
    const EACH: u64 = 15;
    let scope = Scope::new(1, 2);
    backend.store.create_run(&started_run(1, 2, "shared"), AuditBatch::none()).unwrap();
    let mut handles = Vec::new();
    for writer in 0..WRITERS {
        let node = backend.node();
        handles.push(std::thread::spawn(move || {
            let mut conflicts = 0u64;
            for i in 0..EACH {
                // Each write records this writer's decision in the state and the audit batch.
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts < 1000, "writer {writer} never got through");
                    let (mut state, version) = node.get_run(scope, "shared").unwrap().unwrap();
                    state.dispatch_targets.push(DispatchTarget::Agent { agent_id: format!("w{writer}-{i}") });
                    match node.update_run(&state, version, batch(writer * 1000 + i, 1)) {
                        Ok(new) => {
                            assert_eq!(new, version + 1);
                            break;
                        }
                        Err(StoreError::Conflict(_) | StoreError::Contended { .. }) => conflicts += 1,
                        Err(err) => panic!("writer {writer}: {err}"),
                    }
                }
            }
            conflicts
        }));
    }
    for handle in handles {
        handle.join().unwrap();
    }
    let (state, version) = backend.store.get_run(scope, "shared").unwrap().unwrap();
    assert_eq!(version, 1 + WRITERS * EACH);
    let decisions: Vec<String> = state
        .dispatch_targets
        .iter()
        .map(|target| match target {
            DispatchTarget::Agent { agent_id } => agent_id.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(decisions.len(), usize::try_from(WRITERS * EACH).unwrap());
    for writer in 0..WRITERS {
        let mine: Vec<_> = decisions.iter().filter(|t| t.starts_with(&format!("w{writer}-"))).collect();
        let expected: Vec<_> = (0..EACH).map(|i| format!("w{writer}-{i}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>(), "writer {writer}'s decisions, in order, once each");
    }
    // One audit entry per acknowledged write, in one verifiable chain.
    let report = backend.store.verify_audit(&backend.keys.ring().unwrap()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, WRITERS * EACH);
}

fn appends_from_every_node_form_one_signed_chain(backend: &Backend) {
    const NODES: u64 = 3;
    const EACH: u64 = 40;
    let signer = backend.signer();
    let nodes: Vec<_> = (0..NODES).map(|_| backend.node()).collect();
    for node in &nodes {
        node.set_audit_signer(signer.clone(), 16);
    }
    let mut handles = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let node = node.clone();
        let n = u64::try_from(n).unwrap();
        handles.push(std::thread::spawn(move || {
            for i in 0..EACH {
                node.append_audit(vec![support::tool_call_event(n * 1000 + i, 1 + n)], vec![]).unwrap();
            }
        }));
    }
    for handle in handles {
        handle.join().unwrap();
    }
    let ring = backend.keys.ring().unwrap();
    let report = backend.store.verify_audit(&ring).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, NODES * EACH);
    assert!(report.checkpoints >= (NODES * EACH) / 16 - 1, "{report:?}");
    let last = nodes[1].audit_checkpoint_now(&signer).unwrap().unwrap();
    assert_eq!(last.body.entry_count, NODES * EACH);
    let report = backend.store.verify_audit(&ring).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.signed_through, NODES * EACH);
    // An entry changed outside the appliance breaks the chain at that entry.
    backend.flip_byte("audit_log", "entry_json", "seq = 7", 30);
    let report = backend.store.verify_audit(&ring).unwrap();
    assert_eq!(report.first_break.map(|b| b.entry), Some(7));
}

fn a_quota_admits_exactly_its_limit_across_nodes(backend: &Backend) {
    // Rounds of simultaneous charges (a barrier lines the threads up), each round for a
    // tenant of its own with a quota smaller than the number of requests.
    const THREADS: usize = 8;
    const ROUNDS: u64 = 25;
    const LIMIT: u64 = 3;
    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    let nodes: Vec<_> = (0..4).map(|_| backend.node()).collect();
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let node = nodes[t % nodes.len()].clone();
        let barrier = barrier.clone();
        handles.push(std::thread::spawn(move || {
            let mut admitted = vec![0u64; usize::try_from(ROUNDS).unwrap()];
            for round in 0..ROUNDS {
                barrier.wait();
                let tenant = 100 + round;
                match node.charge_usage_in_period(vec![(usage(tenant, &format!("req-{t}")), Some(LIMIT), None)]) {
                    Ok(true) => admitted[usize::try_from(round).unwrap()] += 1,
                    Ok(false) => panic!("a new request id counted as a replay"),
                    Err(StoreError::QuotaExceeded { limit, .. }) => assert_eq!(limit, LIMIT),
                    Err(err) => panic!("{err}"),
                }
            }
            admitted
        }));
    }
    let per_thread: Vec<Vec<u64>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for round in 0..ROUNDS {
        let index = usize::try_from(round).unwrap();
        let admitted: u64 = per_thread.iter().map(|rounds| rounds[index]).sum();
        assert_eq!(admitted, LIMIT, "round {round}: a quota of {LIMIT} admitted {admitted}");
        assert_eq!(backend.store.usage_total(100 + round, "tool_calls").unwrap(), LIMIT);
    }
    // A replay of an admitted request is not charged again (and not refused).
    let replay = (0..THREADS)
        .map(|t| format!("req-{t}"))
        .find(|id| backend.store.charge_usage_in_period(vec![(usage(100, id), Some(LIMIT), None)]).is_ok())
        .expect("an admitted request id");
    assert!(!backend.store.charge_usage_in_period(vec![(usage(100, &replay), Some(LIMIT), None)]).unwrap());
    assert_eq!(backend.store.usage_total(100, "tool_calls").unwrap(), LIMIT);
    // Usage recorded with a mutation counts once per request id too.
    backend.store.append_audit(vec![], vec![usage(6, "m1"), usage(6, "m1")]).unwrap();
    backend.store.append_audit(vec![], vec![usage(6, "m1")]).unwrap();
    assert_eq!(backend.store.usage_total(6, "tool_calls").unwrap(), 1);
}

fn key(id: &str, tenant: u64) -> ApiKeyRecord {
    ApiKeyRecord {
        key_id: id.into(),
        label: "l".into(),
        role: "service".into(),
        tenant_id: Some(tenant),
        namespaces: vec![2],
        created_at_ms: 1,
        expires_at_ms: None,
        revoked_at_ms: None,
    }
}

fn shape(tenant: u64, namespace: u64, id: &str, version: &str) -> DataShapeRecord {
    serde_json::from_value(json!({
        "tenant_id": tenant, "namespace_id": namespace, "schema_id": id, "version": version,
        "schema": {"type": "object"}, "description": null, "created_at": {"kind": "logical", "value": 1}}))
    .unwrap()
}

fn tenants_and_namespaces_are_registered_disabled_and_deleted_only_when_empty(backend: &Backend) {
    let store = &backend.store;
    let quotas: BTreeMap<String, u64> = [("tool_calls".to_string(), 7)].into();
    store.create_tenant(1, "acme", &quotas).unwrap();
    assert!(matches!(store.create_tenant(1, "other", &BTreeMap::new()).unwrap_err(), StoreError::Conflict(_)));
    assert!(matches!(store.create_tenant(2, "acme", &BTreeMap::new()).unwrap_err(), StoreError::Conflict(_)));
    assert!(matches!(store.create_tenant(0, "zero", &BTreeMap::new()).unwrap_err(), StoreError::Conflict(_)));
    store.create_tenant(2, "globex", &BTreeMap::new()).unwrap();
    store.create_namespace(1, 2, "prod").unwrap();
    assert!(matches!(store.create_namespace(1, 2, "again").unwrap_err(), StoreError::Conflict(_)));
    assert!(matches!(store.create_namespace(9, 1, "orphan").unwrap_err(), StoreError::Missing(_)));
    assert_eq!(store.list_tenants().unwrap().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["acme", "globex"]);
    assert_eq!(store.get_tenant(1).unwrap().unwrap().quotas, quotas);
    assert_eq!(store.list_namespaces(1).unwrap().len(), 1);
    let node = backend.node();
    let _snapshot = node.registry_snapshot().unwrap();
    assert_eq!(node.active_tenant_quotas(1, Some(2)).unwrap(), Some(quotas.clone()));
    assert_eq!(node.active_tenant_quotas(1, Some(3)).unwrap(), None, "unregistered namespace");
    drop(_snapshot);
    // Disabled through one node: refused on every node by the next request.
    store.set_namespace_status(1, 2, Status::Disabled).unwrap();
    let _snapshot = node.registry_snapshot().unwrap();
    assert_eq!(node.active_tenant_quotas(1, Some(2)).unwrap(), None);
    assert_eq!(node.active_tenant_quotas(1, None).unwrap(), Some(quotas.clone()));
    drop(_snapshot);
    store.set_tenant_status(1, Status::Disabled).unwrap();
    let _snapshot = node.registry_snapshot().unwrap();
    assert_eq!(node.active_tenant_quotas(1, None).unwrap(), None);
    drop(_snapshot);
    assert!(matches!(store.set_tenant_status(9, Status::Active).unwrap_err(), StoreError::Missing(_)));
    // Not empty: refused; emptied: deleted.
    store.create_run(&started_run(1, 2, "r"), AuditBatch::none()).unwrap();
    assert!(matches!(store.delete_namespace(1, 2).unwrap_err(), StoreError::Conflict(_)));
    assert!(matches!(store.delete_tenant(1).unwrap_err(), StoreError::Conflict(_)));
    store.delete_namespace(2, 9).unwrap_err();
    store.delete_tenant(2).unwrap();
    assert!(matches!(store.delete_tenant(2).unwrap_err(), StoreError::Missing(_)));
}

/// A request's start writes its run only into a namespace still registered when the write
/// commits: one deleted after the request's authorization refuses it (nothing stored: no
/// run, no audit entry, no usage), and a namespace holding a started run cannot be deleted.
/// Store-level writes (imports) are not checked.
fn a_start_in_a_namespace_deleted_meanwhile_is_refused_and_leaves_nothing(backend: &Backend) {
    let store = &backend.store;
    let node = backend.node();
    store.create_tenant(1, "t1", &BTreeMap::new()).unwrap();
    store.create_namespace(1, 5, "kept").unwrap();
    let charged = |n: u64, request: &str| AuditBatch {
        events: vec![support::tool_call_event(n, 1)],
        usage: vec![usage(1, request)],
    };
    assert_eq!(node.start_run(&started_run(1, 5, "s1"), charged(1, "req-1")).unwrap(), 1);
    assert!(matches!(store.delete_namespace(1, 5).unwrap_err(), StoreError::Conflict(_)));
    store.create_namespace(1, 6, "going").unwrap();
    store.delete_namespace(1, 6).unwrap();
    let err = node.start_run(&started_run(1, 6, "s2"), charged(2, "req-2")).unwrap_err();
    assert!(matches!(&err, StoreError::Missing(what) if what.contains("1/6")), "{err}");
    assert!(node.get_run(Scope::new(1, 6), "s2").unwrap().is_none());
    let report = node.verify_audit(&backend.keys.ring().unwrap()).unwrap();
    assert_eq!(report.entries, 1, "the refused start left no audit entry: {report:?}");
    assert_eq!(node.usage_total(1, "tool_calls").unwrap(), 1);
    // A namespace never registered is refused as well; a store-level write is not checked.
    assert!(matches!(node.start_run(&started_run(1, 7, "s3"), AuditBatch::none()), Err(StoreError::Missing(_))));
    assert_eq!(node.create_run(&started_run(1, 7, "imported"), AuditBatch::none()).unwrap(), 1);
}

fn api_keys_are_found_by_secret_and_a_revocation_reaches_every_node(backend: &Backend) {
    let store = &backend.store;
    store.put_api_key(&key("k1", 1), &"a".repeat(64)).unwrap();
    assert!(matches!(store.put_api_key(&key("k1", 1), &"b".repeat(64)).unwrap_err(), StoreError::Conflict(_)));
    assert!(matches!(store.put_api_key(&key("k2", 1), &"a".repeat(64)).unwrap_err(), StoreError::Conflict(_)));
    let node = backend.node();
    {
        let _snapshot = node.registry_snapshot().unwrap();
        assert_eq!(node.find_api_key(&"a".repeat(64)).unwrap(), Some(key("k1", 1)));
        assert_eq!(node.find_api_key(&"c".repeat(64)).unwrap(), None);
    }
    let mut revoked = key("k1", 1);
    revoked.revoked_at_ms = Some(5);
    store.update_api_key(&revoked).unwrap();
    {
        // The other node read the key before: its next request sees the revocation.
        let _snapshot = node.registry_snapshot().unwrap();
        assert_eq!(node.find_api_key(&"a".repeat(64)).unwrap(), Some(revoked.clone()));
    }
    assert!(matches!(store.update_api_key(&key("nope", 1)).unwrap_err(), StoreError::Missing(_)));
    store.put_api_key(&key("k0", 2), &"d".repeat(64)).unwrap();
    assert_eq!(store.list_api_keys().unwrap().iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(), ["k0", "k1"]);
    backend.flip_byte("api_keys", "record_json", "key_id = 'k0'", 3);
    let err = store.find_api_key(&"d".repeat(64)).unwrap_err();
    assert!(matches!(err, StoreError::Integrity { table: "api_keys", .. }), "{err}");
}

fn oidc_subjects_are_set_listed_by_tenant_and_removed(backend: &Backend) {
    let store = &backend.store;
    let subject = |name: &str, tenant: Option<u64>| OidcSubjectRecord {
        subject: format!("oidc:https://idp.example#{name}"),
        role: "service".into(),
        tenant_id: tenant,
        namespaces: vec![],
        label: name.into(),
        updated_at_ms: 1,
    };
    store.put_oidc_subject(&subject("alice", Some(1))).unwrap();
    store.put_oidc_subject(&subject("bob", Some(2))).unwrap();
    store.put_oidc_subject(&subject("root", None)).unwrap();
    let mut moved = subject("alice", Some(2));
    moved.label = "moved".into();
    store.put_oidc_subject(&moved).unwrap();
    assert_eq!(store.find_oidc_subject(&moved.subject).unwrap(), Some(moved.clone()));
    assert_eq!(store.list_oidc_subjects(Some(2)).unwrap().len(), 2);
    assert_eq!(store.list_oidc_subjects(Some(1)).unwrap().len(), 0);
    assert_eq!(store.list_oidc_subjects(None).unwrap().len(), 3);
    let mut huge = subject("x", None);
    huge.subject = format!("oidc:{}", "x".repeat(2000));
    assert!(matches!(store.put_oidc_subject(&huge).unwrap_err(), StoreError::TooLarge { .. }));
    store.delete_oidc_subject(&moved.subject).unwrap();
    assert!(matches!(store.delete_oidc_subject(&moved.subject).unwrap_err(), StoreError::Missing(_)));
    assert_eq!(store.find_oidc_subject(&moved.subject).unwrap(), None);
}

fn data_shapes_are_immutable_scoped_and_paged(backend: &Backend) {
    let store = &backend.store;
    for (id, version) in [("b", "1"), ("a", "2"), ("a", "1"), ("B", "1")] {
        store.put_shape(&shape(1, 2, id, version), batch(1, 1)).unwrap();
    }
    assert!(matches!(
        store.put_shape(&shape(1, 2, "a", "1"), AuditBatch::none()).unwrap_err(),
        StoreError::Conflict(_)
    ));
    store.put_shape(&shape(2, 2, "a", "1"), AuditBatch::none()).unwrap();
    assert_eq!(store.get_shape(Scope::new(1, 2), "a", "2").unwrap(), Some(shape(1, 2, "a", "2")));
    assert_eq!(store.get_shape(Scope::new(1, 3), "a", "2").unwrap(), None);
    let ids = |page: Vec<DataShapeRecord>| {
        page.into_iter().map(|s| format!("{}@{}", s.schema_id, s.version)).collect::<Vec<_>>()
    };
    // Byte order, as SQLite compares text ("B" before "a"), whatever the database's locale.
    assert_eq!(ids(store.list_shapes(Scope::new(1, 2), None, 3).unwrap()), ["B@1", "a@1", "a@2"]);
    assert_eq!(ids(store.list_shapes(Scope::new(1, 2), Some(("a", "2")), 3).unwrap()), ["b@1"]);
    backend.flip_byte("data_shapes", "record_json", "schema_id = 'b'", 5);
    let err = store.get_shape(Scope::new(1, 2), "b", "1").unwrap_err();
    assert!(matches!(err, StoreError::Integrity { table: "data_shapes", .. }), "{err}");
}

fn the_chain_exports_verifies_offline_prunes_with_holds_and_forwards_in_pages(backend: &Backend) {
    let store = &backend.store;
    let signer = backend.signer();
    store.set_audit_signer(signer.clone(), 4);
    for n in 0..20u64 {
        store.append_audit(vec![support::tool_call_event(n, 1 + n % 2)], vec![]).unwrap();
    }
    store.audit_checkpoint_now(&signer).unwrap();
    let ring = backend.keys.ring().unwrap();
    let export = |since: i64| {
        let mut out = Vec::new();
        let count = store.export_audit(since, &mut out).unwrap();
        (count, dg_storage::audit::verify_export(out.as_slice(), &ring).unwrap())
    };
    let (count, report) = export(0);
    assert_eq!(count, 20);
    assert!(report.ok(), "{report:?}");
    // Forwarding reads pages as written, and a cursor that only moves forward.
    let page = store.audit_page(5, 4).unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7, 8, 9]);
    assert_eq!(store.audit_head().unwrap().0, 20);
    store.set_forward_cursor(9).unwrap();
    store.set_forward_cursor(3).unwrap();
    assert_eq!(store.forward_cursor().unwrap(), 9);
    // The newest entries of one tenant, newest first, bounded.
    let filter = dg_storage::browse::AuditFilter { tenant: Some(2), ..Default::default() };
    let recent = store.audit_recent(&filter, None, 3).unwrap();
    assert_eq!(recent.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [20, 18, 16]);
    assert_eq!(recent.next_before_seq, Some(16));
    let older = store.audit_recent(&filter, recent.next_before_seq, 200).unwrap();
    assert_eq!(older.entries.len(), 7);
    // Pruned to hashes behind the checkpoint, tenant 2 under hold, and still verifiable.
    store.set_legal_hold(2, Some("case 42")).unwrap();
    assert_eq!(store.prune_audit(i64::MAX).unwrap(), 10);
    let report = store.verify_audit(&ring).unwrap();
    assert!(report.ok() && report.pruned == 10, "{report:?}");
    assert!(store.audit_entries(1).unwrap().iter().all(|e| e.event.tenant_id == Some(2)));
    assert!(export(0).1.ok());
}

fn usage_is_refunded_reported_and_kept_by_period(backend: &Backend) {
    let store = &backend.store;
    let charge = |id: &str| store.charge_usage(vec![(usage(1, id), Some(10))]).unwrap();
    assert!(charge("a") && charge("b") && charge("c"));
    store.refund_usage(1, "b", vec!["tool_calls".into()]).unwrap();
    store.refund_usage(1, "never", vec!["tool_calls".into()]).unwrap();
    assert_eq!(store.usage_total(1, "tool_calls").unwrap(), 2);
    store.create_run(&started_run(1, 2, "r"), AuditBatch::none()).unwrap();
    let report = store.usage_report(Some(1), 0).unwrap();
    let calls = report.iter().find(|r| r.counter == "tool_calls").unwrap();
    assert_eq!((calls.total, calls.requests), (2, 2));
    let bytes = report.iter().find(|r| r.counter == "storage_bytes").unwrap().total;
    assert!(bytes > 0);
    store.sample_storage_usage().unwrap();
    let period = dg_storage::usage::period_of(dg_storage::now_ms());
    let totals = store.usage_for_period(&period).unwrap();
    assert!(totals.contains(&(1, "tool_calls".to_string(), 2)), "{totals:?}");
    assert!(totals.contains(&(1, "storage_bytes".to_string(), bytes)), "{totals:?}");
    assert_eq!(store.last_backup_at_ms().unwrap(), None);
    store.record_backup().unwrap();
    assert!(store.last_backup_at_ms().unwrap().is_some());
}

fn runs_are_browsed_in_pages_and_check_finds_a_changed_document(backend: &Backend) {
    let store = &backend.store;
    for i in 0..7 {
        store.create_run(&started_run(1 + i % 2, 2, &format!("r{i}")), AuditBatch::none()).unwrap();
    }
    let query = dg_storage::browse::RunQuery {
        tenant: Some(1),
        sort: dg_storage::browse::RunSort::RunId,
        ascending: true,
        limit: 3,
        offset: 1,
        ..Default::default()
    };
    let page = store.runs_page(&query).unwrap();
    assert_eq!(page.total, 4);
    assert_eq!(page.runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), ["r2", "r4", "r6"]);
    let scoped = dg_storage::browse::RunQuery { within_namespaces: vec![3], ..query };
    assert_eq!(store.runs_page(&scoped).unwrap().total, 0);
    store.put_scenario(Scope::new(1, 2), &scenario_spec("sc", 2, "1"), AuditBatch::none()).unwrap();
    store.put_scenario(Scope::new(0, 2), &scenario_spec("shared", 2, "1"), AuditBatch::none()).unwrap();
    let listed = store.list_scenarios(1, 2, None, 10).unwrap();
    assert_eq!(listed.iter().map(|s| s.spec.scenario_id.as_str()).collect::<Vec<_>>(), ["sc", "shared"]);
    assert_eq!(store.list_scenarios(2, 2, None, 10).unwrap().len(), 1);
    assert!(store.scenario_spec(Scope::new(1, 2), "sc").unwrap().is_some());
    let report = store.check().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.documents_checked, 9);
    backend.flip_byte("runs", "state_json", "run_id = 'r3'", 9);
    let report = store.check().unwrap();
    assert!(!report.ok());
    assert_eq!(report.failures, ["runs 2/2/r3"]);
}

// ----- the audit chain against tampering outside the appliance (issue 8) -----

/// A chain of 20 entries, checkpoints every 4 and a final one at the head.
fn chain_of_twenty(backend: &Backend) -> dg_storage::signing::PublicKeyRing {
    let signer = backend.signer();
    backend.store.set_audit_signer(signer.clone(), 4);
    for n in 1..=20u64 {
        backend.store.append_audit(vec![support::tool_call_event(n, 1 + n % 2)], vec![]).unwrap();
    }
    backend.store.audit_checkpoint_now(&signer).unwrap();
    let ring = backend.keys.ring().unwrap();
    let report = backend.store.verify_audit(&ring).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.entries, report.signed_through), (20, 20));
    assert!(report.checkpoints >= 5, "{report:?}");
    ring
}

/// Where verification finds the first break, and why.
fn broken_at(backend: &Backend, ring: &dg_storage::signing::PublicKeyRing) -> (u64, String) {
    let report = backend.store.verify_audit(ring).unwrap();
    let Some(broken) = report.first_break else { panic!("tampering not detected: {report:?}") };
    (broken.entry, broken.reason)
}

/// Verification breaks first at entry `at`, for a reason that says `word`.
fn assert_break(backend: &Backend, ring: &dg_storage::signing::PublicKeyRing, at: u64, word: &str) {
    let (entry, reason) = broken_at(backend, ring);
    assert_eq!(entry, at, "{reason}");
    assert!(reason.contains(word), "{reason}");
}

fn entry(backend: &Backend, seq: u64) -> Vec<u8> {
    backend.bytes(&format!("SELECT entry_json FROM audit_log WHERE seq = {seq}"))
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn an_edited_entry_is_reported_with_its_number_and_a_recomputed_hash_breaks_the_next_link(backend: &Backend) {
    let ring = chain_of_twenty(backend);
    let original = entry(backend, 7);
    let edited = String::from_utf8(original.clone()).unwrap().replace("\"ok\"", "\"error\"").into_bytes();
    assert_ne!(edited, original);
    backend.sql(&format!("UPDATE audit_log SET entry_json = {} WHERE seq = 7", backend.literal(&edited)));
    assert_break(backend, &ring, 7, "edited");
    // Put back, it verifies again; edited with its hash recomputed, the next link breaks.
    backend.sql(&format!("UPDATE audit_log SET entry_json = {} WHERE seq = 7", backend.literal(&original)));
    assert!(backend.store.verify_audit(&ring).unwrap().ok());
    backend.sql(&format!(
        "UPDATE audit_log SET entry_json = {}, entry_sha256 = '{}' WHERE seq = 7",
        backend.literal(&edited),
        sha(&edited)
    ));
    assert_eq!(broken_at(backend, &ring).0, 8);
}

fn a_deleted_entry_is_reported(backend: &Backend) {
    let ring = chain_of_twenty(backend);
    backend.sql("DELETE FROM audit_log WHERE seq = 5");
    assert_break(backend, &ring, 5, "missing");
}

fn reordered_entries_are_reported(backend: &Backend) {
    let ring = chain_of_twenty(backend);
    let (a, b) = (entry(backend, 3), entry(backend, 4));
    backend.sql(&format!(
        "UPDATE audit_log SET entry_json = {}, entry_sha256 = '{}' WHERE seq = 3;
         UPDATE audit_log SET entry_json = {}, entry_sha256 = '{}' WHERE seq = 4",
        backend.literal(&b),
        sha(&b),
        backend.literal(&a),
        sha(&a)
    ));
    let (at, reason) = broken_at(backend, &ring);
    assert_eq!(at, 3, "{reason}");
    assert!(reason.contains("position") || reason.contains("link"), "{reason}");
}

fn an_inserted_entry_is_reported(backend: &Backend) {
    let ring = chain_of_twenty(backend);
    // Room at 10 (the rows after it renumbered), then a forged entry linking to entry 9.
    for seq in (10..=20).rev() {
        backend.sql(&format!("UPDATE audit_log SET seq = seq + 1 WHERE seq = {seq}"));
    }
    let prev = sha(&entry(backend, 9));
    let forged = json!({"seq": 10, "prev_sha256": prev, "time_ms": 1, "principal": "intruder", "role": null,
        "tenant_id": null, "namespace_id": null, "action": "tool_call", "target": "x", "outcome": "ok", "reason": "",
        "request_id": "forged", "request_sha256": null, "response_sha256": null});
    let bytes = dg_engine::canonical_json_bytes(&forged).unwrap();
    backend.sql(&format!(
        "INSERT INTO audit_log (seq, entry_json, entry_sha256, tenant_id, time_ms) VALUES (10, {}, '{}', NULL, 1)",
        backend.literal(&bytes),
        sha(&bytes)
    ));
    let (at, reason) = broken_at(backend, &ring);
    assert_eq!(at, 11, "{reason}");
}

fn a_truncated_tail_is_reported_with_or_without_its_checkpoints(backend: &Backend) {
    let ring = chain_of_twenty(backend);
    backend.sql("DELETE FROM audit_log WHERE seq > 15");
    assert_break(backend, &ring, 16, "truncated");
    // The checkpoints past the cut deleted too: the chain head (SQLite: its witness file;
    // PostgreSQL: the head row) still says how far the chain went.
    backend.sql("DELETE FROM audit_checkpoints WHERE entry_count > 15");
    let (at, reason) = broken_at(backend, &ring);
    assert!(at >= 16, "{at}: {reason}");
    assert!(reason.contains("truncated") || reason.contains("witness"), "{reason}");
}

fn a_tampered_or_deleted_checkpoint_is_reported(backend: &Backend) {
    let ring = chain_of_twenty(backend);
    let original = backend.bytes("SELECT checkpoint_json FROM audit_checkpoints WHERE entry_count = 8");
    let forged = String::from_utf8(original.clone()).unwrap().replace("\"entry_count\":8", "\"entry_count\":7");
    backend.sql(&format!(
        "UPDATE audit_checkpoints SET checkpoint_json = {} WHERE entry_count = 8",
        backend.literal(forged.as_bytes())
    ));
    assert_break(backend, &ring, 7, "signature");
    backend.sql("DELETE FROM audit_checkpoints WHERE entry_count = 8");
    assert_break(backend, &ring, 12, "deleted");
}

fn an_export_verifies_offline_and_fails_after_any_edit(backend: &Backend) {
    let ring = chain_of_twenty(backend);
    let export = |since: i64| {
        let mut out = Vec::new();
        backend.store.export_audit(since, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let verify = |text: &str, ring: &dg_storage::signing::PublicKeyRing| {
        dg_storage::audit::verify_export(std::io::BufReader::new(text.as_bytes()), ring).unwrap()
    };
    let text = export(0);
    let report = verify(&text, &ring);
    assert!(report.ok() && report.entries == 20, "{report:?}");
    let lines: Vec<&str> = text.lines().collect();
    for index in 1..=20 {
        let mut edited = lines.clone();
        let changed = edited[index].replace("\"outcome\":\"ok\"", "\"outcome\":\"error\"");
        assert_ne!(changed, edited[index]);
        edited[index] = &changed;
        assert!(!verify(&edited.join("\n"), &ring).ok(), "edit of line {index} not detected");
    }
    for drop in [5usize, 20, lines.len() - 1] {
        let mut cut = lines.clone();
        cut.remove(drop);
        assert!(!verify(&cut.join("\n"), &ring).ok(), "dropping line {drop} not detected");
    }
    let other = Backend::keys().0.ring().unwrap();
    assert!(!verify(&text, &other).ok(), "a ring without the signing key does not verify it");
    // Exports from a time inside and after the chain verify from their anchors.
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
    assert!(verify(&export(now - 3_600_000), &ring).ok());
    assert!(verify(&export(now + 3_600_000), &ring).ok());
    // A pruned entry's recorded hash changed is still caught by the next link (entry 5,
    // tenant 2's, kept whole under a legal hold).
    backend.store.set_legal_hold(2, Some("case 42")).unwrap();
    assert_eq!(backend.store.prune_audit(i64::MAX).unwrap(), 10);
    assert!(backend.store.verify_audit(&ring).unwrap().ok());
    backend.sql(&format!("UPDATE audit_log SET entry_sha256 = '{}' WHERE seq = 4", "00".repeat(32)));
    assert_eq!(broken_at(backend, &ring).0, 5);
}

/// An entry appended after the newest checkpoint (a timer's summary between the checkpoint
/// an export signs and the export itself) is left to the next export: the export still
/// verifies offline, and once a checkpoint covers the entry it is exported too.
fn an_export_ends_at_the_newest_signed_checkpoint(backend: &Backend) {
    let ring = chain_of_twenty(backend);
    let signer = backend.signer();
    backend.store.append_audit(vec![support::tool_call_event(21, 1)], vec![]).unwrap();
    let export = || {
        let mut out = Vec::new();
        let count = backend.store.export_audit(0, &mut out).unwrap();
        (count, dg_storage::audit::verify_export(out.as_slice(), &ring).unwrap(), String::from_utf8(out).unwrap())
    };
    let (count, report, text) = export();
    assert_eq!(count, 20);
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.entries, report.signed_through), (20, 20));
    assert!(!text.contains("\"seq\":21"), "the uncovered entry is not exported");
    backend.store.audit_checkpoint_now(&signer).unwrap();
    let (count, report, _) = export();
    assert_eq!(count, 21);
    assert!(report.ok() && report.signed_through == 21, "{report:?}");
    // Another append after it: the export is the same, not an unverifiable one.
    backend.store.append_audit(vec![support::tool_call_event(22, 1)], vec![]).unwrap();
    let (count, report, _) = export();
    assert!(count == 21 && report.ok(), "{count} {report:?}");
}

/// One `runs_started` charge under a quota of 50.
fn charge_one(store: &dyn StateStore, request: &str) -> Result<bool, StoreError> {
    let record = UsageRecord {
        tenant_id: 1,
        key_id: "k".into(),
        request_id: request.into(),
        counter: "runs_started".into(),
        amount: 1,
    };
    store.charge_usage(vec![(record, Some(50))])
}

fn concurrent_charges_never_pass_a_quota_and_replays_count_once(backend: &Backend) {
    let charge = charge_one;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let node = backend.node();
            std::thread::spawn(move || {
                (0..20).filter(|n| charge_one(node.as_ref(), &format!("r-{t}-{n}")).is_ok()).count()
            })
        })
        .collect();
    let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let store = backend.store.as_ref();
    assert_eq!(granted, 50);
    assert_eq!(store.usage_total(1, "runs_started").unwrap(), 50);
    assert!(matches!(charge(store, "one-more"), Err(StoreError::QuotaExceeded { .. })));
    // A replayed request id is neither charged nor refused again.
    let granted_id = (0..20).map(|n| format!("r-0-{n}")).find(|id| charge(store, id).is_ok()).unwrap();
    assert!(!charge(store, &granted_id).unwrap(), "a replay is not a new charge");
    assert_eq!(store.usage_total(1, "runs_started").unwrap(), 50);
    // Refunds give the slot back, once.
    store.refund_usage(1, &granted_id, vec!["runs_started".into()]).unwrap();
    store.refund_usage(1, &granted_id, vec!["runs_started".into()]).unwrap();
    assert_eq!(store.usage_total(1, "runs_started").unwrap(), 49);
    assert!(charge(store, "after-refund").unwrap());
}

fn audit_search_filters_by_tenant_and_action_pages_and_detects_tampering(backend: &Backend) {
    use dg_storage::browse::AuditFilter;
    let store = &backend.store;
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
    let (all, next) = seqs(&AuditFilter::default(), None, 200);
    assert_eq!(all, (1..=30).rev().collect::<Vec<u64>>());
    assert_eq!(next, None, "the search reached the chain's start");
    let tenant_two = AuditFilter { tenant: Some(2), ..AuditFilter::default() };
    let (first, next) = seqs(&tenant_two, None, 4);
    assert_eq!(first, [28, 25, 22, 19]);
    assert_eq!(seqs(&tenant_two, next, 4).0, [16, 13, 10, 7]);
    let admin_in_one = AuditFilter { tenant: Some(1), action: Some("admin".into()), ..AuditFilter::default() };
    assert_eq!(seqs(&admin_in_one, None, 200).0, [30, 15]);
    // A changed entry is an integrity error, not a silently wrong page.
    let changed = String::from_utf8(entry(backend, 29)).unwrap().replace("key-29", "key-XX");
    backend.sql(&format!("UPDATE audit_log SET entry_json = {} WHERE seq = 29", backend.literal(changed.as_bytes())));
    let found = store.audit_recent(&AuditFilter::default(), None, 5);
    assert!(matches!(found, Err(StoreError::Integrity { .. })), "{found:?}");
}

// ----- stored documents against tampering, tenant scoping, kept totals -----

fn flipping_any_byte_of_a_stored_run_or_scenario_is_an_integrity_error(backend: &Backend) {
    let store = &backend.store;
    let state = started_run(1, 2, "r1");
    store.create_run(&state, AuditBatch::none()).unwrap();
    store.put_scenario(Scope::new(1, 2), &scenario_spec("sc", 2, "1"), AuditBatch::none()).unwrap();
    let original = backend.bytes("SELECT state_json FROM runs WHERE run_id = 'r1'");
    for index in (0..original.len()).step_by(11) {
        let mut bytes = original.clone();
        bytes[index] ^= 0x20;
        backend.sql(&format!("UPDATE runs SET state_json = {} WHERE run_id = 'r1'", backend.literal(&bytes)));
        let err = store.get_run(Scope::new(1, 2), "r1").unwrap_err();
        assert!(matches!(err, StoreError::Integrity { table: "runs", .. }), "byte {index}: {err}");
    }
    backend.sql(&format!("UPDATE runs SET state_json = {} WHERE run_id = 'r1'", backend.literal(&original)));
    assert!(store.integrity_failures() > 0);
    assert_eq!(store.get_run(Scope::new(1, 2), "r1").unwrap().unwrap().0, state);
    let spec =
        String::from_utf8(backend.bytes("SELECT spec_json FROM scenarios")).unwrap().replace("terminal", "linear!!");
    backend.sql(&format!("UPDATE scenarios SET spec_json = {}", backend.literal(spec.as_bytes())));
    assert!(matches!(store.get_scenario(Scope::new(1, 2), "sc").unwrap_err(), StoreError::Integrity { .. }));
    let report = store.check().unwrap();
    assert_eq!(report.failures, ["scenarios 1/2/sc"]);
}

fn a_document_and_hash_rewritten_together_for_another_run_is_refused(backend: &Backend) {
    // Raw access that recomputes the hash still cannot move a run into another tenant's
    // key: the payload's own ids must match the row's.
    backend.store.create_run(&started_run(1, 2, "mine"), AuditBatch::none()).unwrap();
    let bytes = dg_engine::canonical_json_bytes(&started_run(9, 2, "mine")).unwrap();
    backend.sql(&format!(
        "UPDATE runs SET state_json = {}, state_sha256 = '{}'",
        backend.literal(&bytes),
        dg_engine::hashing::hash_bytes(&bytes).value
    ));
    let err = backend.store.get_run(Scope::new(1, 2), "mine").unwrap_err();
    assert!(matches!(err, StoreError::Integrity { .. }), "{err}");
    // `store check` finds it too: the hash matches, the key does not.
    assert_eq!(backend.store.check().unwrap().failures, vec!["runs 1/2/mine".to_string()]);
}

fn a_scenario_rewritten_with_its_hash_for_another_namespace_is_refused(backend: &Backend) {
    // Raw access that recomputes the hash still cannot serve a spec under a namespace the
    // spec itself does not name.
    backend.store.put_scenario(Scope::new(1, 2), &scenario_spec("sc", 2, "1"), AuditBatch::none()).unwrap();
    let bytes = dg_engine::canonical_json_bytes(&scenario_spec("sc", 9, "1")).unwrap();
    backend.sql(&format!(
        "UPDATE scenarios SET spec_json = {}, spec_sha256 = '{}'",
        backend.literal(&bytes),
        dg_engine::hashing::hash_bytes(&bytes).value
    ));
    let err = backend.fresh_node(limits()).scenario_spec(Scope::new(1, 2), "sc").unwrap_err();
    assert!(matches!(err, StoreError::Integrity { table: "scenarios", .. }), "{err}");
    let err = backend.store.get_scenario(Scope::new(1, 2), "sc").unwrap_err();
    assert!(matches!(err, StoreError::Integrity { table: "scenarios", .. }), "{err}");
    let err = backend.store.list_scenarios(1, 2, None, 10).unwrap_err();
    assert!(matches!(err, StoreError::Integrity { table: "scenarios", .. }), "listed too: {err}");
    assert_eq!(backend.store.check().unwrap().failures, vec!["scenarios 1/2/sc".to_string()]);
}

fn scenario_specs_are_served_once_verified_and_later_definitions_are_found(backend: &Backend) {
    let store = &backend.store;
    let scope = Scope::new(1, 2);
    assert!(store.scenario_spec(scope, "sc").unwrap().is_none());
    // Defined through another node after a miss: a miss is never remembered.
    backend.fresh_node(limits()).put_scenario(scope, &scenario_spec("sc", 2, "1"), AuditBatch::none()).unwrap();
    assert_eq!(*store.scenario_spec(scope, "sc").unwrap().expect("defined later, found"), scenario_spec("sc", 2, "1"));
    // Changed outside after the first verified read: this node keeps serving what it
    // verified; a node that has not read it yet refuses the changed bytes.
    let spec = String::from_utf8(backend.bytes("SELECT spec_json FROM scenarios")).unwrap().replace("\"1\"", "\"9\"");
    backend.sql(&format!("UPDATE scenarios SET spec_json = {}", backend.literal(spec.as_bytes())));
    assert_eq!(*store.scenario_spec(scope, "sc").unwrap().unwrap(), scenario_spec("sc", 2, "1"));
    let fresh = backend.fresh_node(limits());
    assert!(matches!(fresh.scenario_spec(scope, "sc").unwrap_err(), StoreError::Integrity { .. }));
    assert!(store.scenario_spec(Scope::new(3, 2), "sc").unwrap().is_none(), "scoped by tenant");
}

fn runs_by_status_are_kept_by_every_write_and_drift_is_reported(backend: &Backend) {
    use dg_engine::state::RunStatus;
    let store = &backend.store;
    let by_status = || {
        let counts = store.count_runs_by_status().unwrap();
        ["active", "completed", "failed"]
            .map(|status| (status, counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n)))
    };
    for (tenant, n) in [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1)] {
        store.create_run(&started_run(tenant, 3, &format!("r{n}")), AuditBatch::none()).unwrap();
    }
    // A second create of the same run and a stale update both fail and count nothing.
    let err = store.create_run(&started_run(1, 3, "r0"), AuditBatch::none()).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let (mut state, version) = store.get_run(Scope::new(1, 3), "r0").unwrap().unwrap();
    state.status = RunStatus::Completed;
    store.update_run(&state, version, AuditBatch::none()).unwrap();
    assert!(matches!(store.update_run(&state, version, AuditBatch::none()).unwrap_err(), StoreError::Conflict(_)));
    let (mut state, version) = store.get_run(Scope::new(2, 3), "r1").unwrap().unwrap();
    state.status = RunStatus::Failed;
    store.update_run(&state, version, AuditBatch::none()).unwrap();
    let (state, version) = store.get_run(Scope::new(1, 3), "r1").unwrap().unwrap();
    store.update_run(&state, version, AuditBatch::none()).unwrap();
    assert_eq!(by_status(), [("active", 3), ("completed", 1), ("failed", 1)]);
    let listed = store.list_runs(None).unwrap();
    assert_eq!(listed.iter().filter(|run| run.status == "active").count(), 3, "the totals match a recount");
    assert!(store.check().unwrap().ok());
    // Totals that no longer match the runs are reported by the operator's check.
    backend.sql("UPDATE tenant_usage SET runs_failed = runs_failed + 1 WHERE tenant_id = 1");
    let report = store.check().unwrap();
    assert!(!report.ok() && report.failures.is_empty(), "no document changed: {report:?}");
    assert_eq!(report.usage_drift.len(), 1, "{report:?}");
    assert!(report.usage_drift[0].starts_with("tenant_usage 1:") && report.usage_drift[0].contains("/1"), "{report:?}");
}

fn no_read_by_one_tenant_returns_the_others_data(backend: &Backend) {
    use proptest::prelude::*;
    #[derive(Debug, Clone)]
    enum Op {
        PutRun { tenant: u64, run: u8 },
        GetRun { tenant: u64, run: u8 },
        PutScenario { tenant: u64, id: u8 },
        ListScenarios { tenant: u64 },
        ListRuns { tenant: u64 },
    }
    let tenant = || prop_oneof![Just(1u64), Just(2u64)];
    let op = prop_oneof![
        (tenant(), 0u8..4).prop_map(|(tenant, run)| Op::PutRun { tenant, run }),
        (tenant(), 0u8..4).prop_map(|(tenant, run)| Op::GetRun { tenant, run }),
        (tenant(), 0u8..3).prop_map(|(tenant, id)| Op::PutScenario { tenant, id }),
        tenant().prop_map(|tenant| Op::ListScenarios { tenant }),
        tenant().prop_map(|tenant| Op::ListRuns { tenant }),
    ];
    let store = &backend.store;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(16));
    // One database for every case: what earlier cases stored is there to be leaked.
    runner
        .run(&prop::collection::vec(op, 1..40), |ops| {
            for op in ops {
                match op {
                    Op::PutRun { tenant, run } => {
                        let _ = store.create_run(&started_run(tenant, 3, &format!("run-{run}")), AuditBatch::none());
                    }
                    Op::GetRun { tenant, run } => {
                        if let Some((state, _)) = store.get_run(Scope::new(tenant, 3), &format!("run-{run}")).unwrap() {
                            prop_assert_eq!(state.tenant_id.get(), tenant);
                        }
                    }
                    Op::PutScenario { tenant, id } => {
                        let mut spec = scenario_spec(&format!("s{id}-t{tenant}"), 3, "1");
                        spec.default_tenant_id = std::num::NonZeroU64::new(tenant);
                        store.put_scenario(Scope::new(tenant, 3), &spec, AuditBatch::none()).unwrap();
                    }
                    Op::ListScenarios { tenant } => {
                        for record in store.list_scenarios(tenant, 3, None, 100).unwrap() {
                            prop_assert_eq!(record.scope.tenant_id, tenant);
                            let suffix = format!("-t{tenant}");
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
            Ok(())
        })
        .unwrap();
}

fn tenant_run_storage_is_bounded_and_other_tenants_are_unaffected(backend: &Backend) {
    // The bound counts the bytes stored: a probe run's, as this backend stores it.
    backend.store.create_run(&started_run(7, 2, "probe"), AuditBatch::none()).unwrap();
    let size = u64::try_from(backend.bytes("SELECT state_json FROM runs WHERE run_id = 'probe'").len()).unwrap();
    let store = backend.fresh_node(StoreLimits { max_tenant_run_bytes: size * 3 + size / 2, ..limits() });
    for n in 0..3 {
        store.create_run(&started_run(1, 2, &format!("r{n}")), AuditBatch::none()).unwrap();
    }
    let err = store.create_run(&started_run(1, 2, "r3"), AuditBatch::none()).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { what: "tenant run state storage", .. }), "{err}");
    assert!(store.get_run(Scope::new(1, 2), "r3").unwrap().is_none(), "nothing of the refused run is stored");
    store.create_run(&started_run(2, 2, "other-tenant"), AuditBatch::none()).unwrap();
    // Rewriting an existing run at the same size stays allowed at the limit.
    let (state, version) = store.get_run(Scope::new(1, 2), "r0").unwrap().unwrap();
    store.update_run(&state, version, AuditBatch::none()).unwrap();
}

fn tampering_with_shapes_and_keys_is_detected_too(backend: &Backend) {
    let store = &backend.store;
    store.put_shape(&shape(1, 2, "s", "1"), AuditBatch::none()).unwrap();
    store.put_api_key(&key("k1", 1), "secret-hash").unwrap();
    let edit = |table: &str, from: &str, to: &str| {
        let text = String::from_utf8(backend.bytes(&format!("SELECT record_json FROM {table}"))).unwrap();
        assert!(text.contains(from), "{text}");
        backend
            .sql(&format!("UPDATE {table} SET record_json = {}", backend.literal(text.replace(from, to).as_bytes())));
    };
    // A shape's record and hash rewritten together to name another schema: refused where
    // it is read and where it is listed.
    let moved = serde_json::to_vec(&shape(1, 2, "other", "1")).unwrap();
    let moved = dg_engine::canonical_json_bytes(&serde_json::from_slice::<serde_json::Value>(&moved).unwrap()).unwrap();
    backend.sql(&format!(
        "UPDATE data_shapes SET record_json = {}, record_sha256 = '{}'",
        backend.literal(&moved),
        dg_engine::hashing::hash_bytes(&moved).value
    ));
    assert!(matches!(store.get_shape(Scope::new(1, 2), "s", "1").unwrap_err(), StoreError::Integrity { .. }));
    let err = store.list_shapes(Scope::new(1, 2), None, 10).unwrap_err();
    assert!(matches!(err, StoreError::Integrity { table: "data_shapes", .. }), "{err}");
    let original = dg_engine::canonical_json_bytes(&shape(1, 2, "s", "1")).unwrap();
    backend.sql(&format!(
        "UPDATE data_shapes SET record_json = {}, record_sha256 = '{}'",
        backend.literal(&original),
        dg_engine::hashing::hash_bytes(&original).value
    ));
    assert_eq!(store.list_shapes(Scope::new(1, 2), None, 10).unwrap().len(), 1);
    edit("data_shapes", "object", "string");
    edit("api_keys", "service", "org_admin");
    assert!(matches!(store.get_shape(Scope::new(1, 2), "s", "1").unwrap_err(), StoreError::Integrity { .. }));
    assert!(
        matches!(backend.fresh_node(limits()).find_api_key("secret-hash").unwrap_err(), StoreError::Integrity { .. }),
        "a key's role cannot be raised by editing the row"
    );
    assert_eq!(store.check().unwrap().failures.len(), 2);
}

// ----- the registry cache never outlives a change -----

fn admin_key(id: &str) -> ApiKeyRecord {
    ApiKeyRecord { role: "tenant_admin".into(), namespaces: vec![], ..key(id, 7) }
}

fn every_registry_change_bumps_the_generation_whoever_makes_it(backend: &Backend) {
    let store = &backend.store;
    let mut last = backend.registry_generation();
    let mut changed = |what: &str| {
        let now = backend.registry_generation();
        assert!(now > last, "{what} must bump the registry generation ({last} -> {now})");
        last = now;
    };
    store.put_api_key(&admin_key("k1"), "secret-1").unwrap();
    changed("a new key");
    store.update_api_key(&ApiKeyRecord { revoked_at_ms: Some(5), ..admin_key("k1") }).unwrap();
    changed("a revoked key");
    store.create_tenant(7, "seven", &BTreeMap::new()).unwrap();
    changed("a new tenant");
    store.create_namespace(7, 1, "one").unwrap();
    changed("a new namespace");
    store.set_namespace_status(7, 1, Status::Disabled).unwrap();
    changed("a disabled namespace");
    store.set_tenant_status(7, Status::Disabled).unwrap();
    changed("a disabled tenant");
    backend.sql("UPDATE tenants SET quotas_json = '{\"tool_calls\":1}' WHERE tenant_id = 7");
    changed("raw SQL on tenants");
    backend.sql("DELETE FROM api_keys WHERE key_id = 'k1'");
    changed("raw SQL on api_keys");
    store.delete_namespace(7, 1).unwrap();
    changed("a deleted namespace");
}

fn a_registry_change_through_another_node_is_seen_by_the_next_request_snapshot(backend: &Backend) {
    let daemon = backend.store.as_ref();
    daemon.put_api_key(&admin_key("k1"), "secret-1").unwrap();
    daemon.create_tenant(7, "seven", &BTreeMap::new()).unwrap();
    daemon.create_namespace(7, 1, "one").unwrap();
    {
        // A request reads (and caches) the key and the tenancy answer.
        let _request = daemon.registry_snapshot().unwrap();
        assert_eq!(daemon.find_api_key("secret-1").unwrap().unwrap().revoked_at_ms, None);
        assert_eq!(daemon.active_tenant_quotas(7, Some(1)).unwrap(), Some(BTreeMap::new()));
    }
    // The CLI (or another node) revokes the key and disables the namespace.
    let cli = backend.fresh_node(limits());
    cli.update_api_key(&ApiKeyRecord { revoked_at_ms: Some(5), ..admin_key("k1") }).unwrap();
    cli.set_namespace_status(7, 1, Status::Disabled).unwrap();
    cli.close();
    let _next = daemon.registry_snapshot().unwrap();
    assert_eq!(daemon.find_api_key("secret-1").unwrap().unwrap().revoked_at_ms, Some(5));
    assert_eq!(daemon.active_tenant_quotas(7, Some(1)).unwrap(), None, "a disabled namespace is refused at once");
    assert_eq!(daemon.active_tenant_quotas(7, None).unwrap(), Some(BTreeMap::new()));
}

fn within_one_snapshot_lookups_come_from_memory_and_unknown_keys_are_always_read(backend: &Backend) {
    let store = &backend.store;
    store.put_api_key(&admin_key("k1"), "secret-1").unwrap();
    let snapshot = store.registry_snapshot().unwrap();
    assert!(store.find_api_key("secret-1").unwrap().is_some());
    assert!(store.find_api_key("secret-2").unwrap().is_none());
    // Raw SQL that bypasses the triggers (dropped first) is not seen while the snapshot
    // lives: proof that the second lookup is answered from memory...
    backend.sql_for(
        "DROP TRIGGER api_keys_deleted; DROP TRIGGER api_keys_inserted;",
        "DROP TRIGGER api_keys_changed ON api_keys",
    );
    backend.sql("DELETE FROM api_keys");
    assert!(store.find_api_key("secret-1").unwrap().is_some());
    // ...while a key that was not found is read again, and found once it exists.
    let bytes = dg_engine::canonical_json_bytes(&admin_key("k2")).unwrap();
    backend.sql(&format!(
        "INSERT INTO api_keys (key_id, record_json, record_sha256, secret_sha256) VALUES ('k2', {}, '{}', 'secret-2')",
        backend.literal(&bytes),
        sha(&bytes)
    ));
    assert_eq!(store.find_api_key("secret-2").unwrap().unwrap().key_id, "k2");
    drop(snapshot);
    // Without a snapshot every lookup reads the database.
    assert!(store.find_api_key("secret-1").unwrap().is_none());
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $test() { if let Some(backend) = super::Backend::sqlite() { super::$test(&backend) } })*
        }
        mod postgres {
            $(#[test] fn $test() { if let Some(backend) = super::Backend::postgres() { super::$test(&backend) } })*
        }
    };
}

conformance!(
    runs_round_trip_with_versions_and_conflicts,
    oversized_run_states_are_refused_and_nothing_is_written,
    a_byte_changed_in_a_stored_document_is_an_integrity_error,
    scenarios_are_idempotent_conflict_on_change_and_seen_by_every_node,
    concurrent_writers_of_one_run_never_lose_a_decision,
    writes_from_many_threads_of_one_node_each_get_their_own_answer,
    appends_from_every_node_form_one_signed_chain,
    a_quota_admits_exactly_its_limit_across_nodes,
    tenants_and_namespaces_are_registered_disabled_and_deleted_only_when_empty,
    a_start_in_a_namespace_deleted_meanwhile_is_refused_and_leaves_nothing,
    api_keys_are_found_by_secret_and_a_revocation_reaches_every_node,
    oidc_subjects_are_set_listed_by_tenant_and_removed,
    data_shapes_are_immutable_scoped_and_paged,
    the_chain_exports_verifies_offline_prunes_with_holds_and_forwards_in_pages,
    usage_is_refunded_reported_and_kept_by_period,
    runs_are_browsed_in_pages_and_check_finds_a_changed_document,
    an_edited_entry_is_reported_with_its_number_and_a_recomputed_hash_breaks_the_next_link,
    a_deleted_entry_is_reported,
    reordered_entries_are_reported,
    an_inserted_entry_is_reported,
    a_truncated_tail_is_reported_with_or_without_its_checkpoints,
    a_tampered_or_deleted_checkpoint_is_reported,
    an_export_verifies_offline_and_fails_after_any_edit,
    an_export_ends_at_the_newest_signed_checkpoint,
    concurrent_charges_never_pass_a_quota_and_replays_count_once,
    audit_search_filters_by_tenant_and_action_pages_and_detects_tampering,
    flipping_any_byte_of_a_stored_run_or_scenario_is_an_integrity_error,
    a_document_and_hash_rewritten_together_for_another_run_is_refused,
    scenario_specs_are_served_once_verified_and_later_definitions_are_found,
    a_scenario_rewritten_with_its_hash_for_another_namespace_is_refused,
    runs_by_status_are_kept_by_every_write_and_drift_is_reported,
    no_read_by_one_tenant_returns_the_others_data,
    tenant_run_storage_is_bounded_and_other_tenants_are_unaffected,
    tampering_with_shapes_and_keys_is_detected_too,
    every_registry_change_bumps_the_generation_whoever_makes_it,
    a_registry_change_through_another_node_is_seen_by_the_next_request_snapshot,
    within_one_snapshot_lookups_come_from_memory_and_unknown_keys_are_always_read,
);
