#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! What only the PostgreSQL backend has: migrations shared by nodes starting together, its
//! connection rules, and a database that goes away and comes back. Against a throwaway
//! cluster (skipped outside CI when PostgreSQL is not installed).

#[path = "../../tests/support/postgres.rs"]
mod cluster;
mod support;

use std::sync::Arc;
use std::time::Duration;

use dg_storage::audit::AuditBatch;
use dg_storage::postgres::PgStore;
use dg_storage::{Scope, StoreError, StoreLimits};

#[test]
fn nodes_starting_together_migrate_once_and_share_one_deployment_id() {
    let Some(cluster) = cluster::Postgres::start() else { return };
    let db = cluster.create_database("together");
    let settings = Arc::new(cluster.settings(&db, 2));
    let barrier = Arc::new(std::sync::Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (settings, barrier) = (settings.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PgStore::open(&settings, StoreLimits::default()).unwrap().instance_id().to_string()
            })
        })
        .collect();
    let ids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    assert_eq!(cluster.psql(&db, "SELECT count(*), min(version) FROM dg_meta").trim(), "1|4");
    assert_eq!(PgStore::migrate(&settings).unwrap(), (4, 4));
}

/// A database of schema 1 (the tables, without the write functions of v2 to v4) with a chain
/// in it moves to the current schema when a node opens it, and the chain goes on from where
/// it was: entries appended before and after verify as one chain, checkpoints included.
#[test]
fn a_schema_1_database_migrates_and_its_chain_goes_on() {
    let Some(cluster) = cluster::Postgres::start() else { return };
    let db = cluster.create_database("upgrade");
    let settings = cluster.settings(&db, 2);
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(dg_storage::signing::KeyStore::open(&keys_dir.path().join("keys")).unwrap());
    let signer: Arc<dyn dg_storage::audit::AuditSigner> = keys.clone();
    let append = |store: &PgStore, from: u64| {
        store.set_audit_signer(signer.clone(), 3);
        for n in from..from + 5 {
            store.append_audit(vec![support::tool_call_event(n, 1)], vec![]).unwrap();
        }
    };
    append(&PgStore::open(&settings, StoreLimits::default()).unwrap(), 1);
    cluster.psql(&db, "DROP FUNCTION dg_write_group; DROP FUNCTION dg_take_write_lock; DROP FUNCTION dg_write_runs; DROP FUNCTION dg_save_runs; DROP FUNCTION dg_save_run; DROP FUNCTION dg_move_tenant_totals; DROP FUNCTION dg_append; UPDATE dg_meta SET version = 1");
    assert_eq!(PgStore::migrate(&settings).unwrap(), (1, 4));
    let store = PgStore::open(&settings, StoreLimits::default()).unwrap();
    append(&store, 6);
    let batch = AuditBatch { events: vec![support::tool_call_event(11, 1)], usage: vec![] };
    assert_eq!(store.create_run(&support::started_run(1, 1, "after"), batch).unwrap(), 1);
    let report = store.verify_audit(&keys.ring().unwrap()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, 11);
    assert!(report.checkpoints >= 3, "{report:?}");
}

/// While an upgrade rolls through a deployment, nodes of schema v2 still write runs with
/// v2's `dg_save_runs` (kept in v3 over the new group write): one create and one conflict.
#[test]
fn a_node_of_schema_2_still_writes_runs_during_an_upgrade() {
    let Some(cluster) = cluster::Postgres::start() else { return };
    let db = cluster.create_database("rolling");
    drop(PgStore::open(&cluster.settings(&db, 1), StoreLimits::default()).unwrap());
    let v2_write = "SELECT versions, errors FROM dg_save_runs(ARRAY[1, 1]::bigint[], ARRAY[1, 1]::bigint[], \
         ARRAY['v2-run', 'v2-run'], ARRAY['sc', 'sc'], ARRAY['active', 'active'], ARRAY[NULL, NULL]::bigint[], \
         ARRAY['\\x7b7d'::bytea, '\\x7b7d'::bytea], ARRAY['sha', 'sha'], ARRAY[0, 0]::bigint[], \
         ARRAY['active', 'completed', 'failed'], 1000000, 0, '{}'::bytea[], '{}'::bigint[], ARRAY[0, 0], \
         '{}'::bigint[], '{}'::text[], '{}'::text[], '{}'::text[], '{}'::bigint[], ARRAY[0, 0], 0)";
    assert_eq!(cluster.psql(&db, v2_write).trim(), "{1,NULL}|{NULL,\"run already exists: v2-run\"}");
    assert_eq!(cluster.psql(&db, "SELECT runs_active, run_bytes FROM tenant_usage").trim(), "1|2");
}

/// Writes waiting at the same time on one node go as groups, and a group that meets a
/// tenant's storage bound is written again one by one: each write gets its own answer (its
/// version, or the bound), and the tenant's kept total is exactly the runs stored.
#[test]
fn concurrent_writes_of_one_node_go_in_groups_and_a_bound_in_a_group_is_each_writes_own() {
    let Some(cluster) = cluster::Postgres::start() else { return };
    let db = cluster.create_database("groups");
    let state = support::started_run(1, 1, "size-probe");
    let one_run = serde_json::to_vec(&state).unwrap().len() as u64;
    // Room for about 40 of the 64 runs the threads try to store.
    let limits = StoreLimits { max_tenant_run_bytes: one_run * 40 + one_run / 2, ..StoreLimits::default() };
    let store = Arc::new(PgStore::open(&cluster.settings(&db, 4), limits).unwrap());
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..8)
                    .map(|i| {
                        let run = support::started_run(1, 1, &format!("r-{t}-{i}"));
                        let batch =
                            AuditBatch { events: vec![support::tool_call_event(t * 100 + i, 1)], usage: vec![] };
                        match store.create_run(&run, batch) {
                            Ok(version) => {
                                assert_eq!(version, 1);
                                true
                            }
                            Err(StoreError::TooLarge { what: "tenant run state storage", .. }) => false,
                            Err(err) => panic!("{err}"),
                        }
                    })
                    .filter(|stored| *stored)
                    .count()
            })
        })
        .collect();
    let stored: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let (groups, grouped) = store.write_groups_sent();
    assert!(groups > 0 && grouped >= 2 * groups, "no write was grouped: {groups} groups, {grouped} writes");
    assert!((30..=41).contains(&stored), "{stored} runs stored");
    assert_eq!(store.list_runs(None).unwrap().len(), stored);
    let kept: u64 = cluster.psql(&db, "SELECT run_bytes FROM tenant_usage WHERE tenant_id = 1").trim().parse().unwrap();
    assert!(kept <= limits.max_tenant_run_bytes, "{kept} bytes kept");
    let report = store.verify_audit(&dg_storage::signing::PublicKeyRing::default()).unwrap();
    assert_eq!(report.entries, stored as u64, "{report:?}");
}

/// A group in which one write conflicts: the others are written with their own audit
/// entries and usage rows, the conflicting one leaves nothing, and the chain verifies
/// (`dg_save_runs` records a conflict without a subtransaction and passes on only the
/// written runs' entries). The group is made by holding the chain head from another
/// session while the writes queue.
#[test]
fn a_conflict_inside_a_group_is_that_writes_alone() {
    let Some(cluster) = cluster::Postgres::start() else { return };
    let db = cluster.create_database("conflict");
    let store = Arc::new(PgStore::open(&cluster.settings(&db, 4), StoreLimits::default()).unwrap());
    let charged = |n: u64, request: &str| AuditBatch {
        events: vec![support::tool_call_event(n, 1)],
        usage: vec![dg_storage::usage::UsageRecord {
            tenant_id: 1,
            key_id: "k".into(),
            request_id: request.into(),
            counter: "tool_calls".into(),
            amount: 1,
        }],
    };
    store.create_run(&support::started_run(1, 1, "taken"), charged(1, "req-taken")).unwrap();
    let holder =
        cluster.psql_in_background(&db, "BEGIN; SELECT seq FROM audit_head FOR UPDATE; SELECT pg_sleep(3); COMMIT");
    cluster.wait_for_sleeper(&db);
    let write = |run: &'static str, n: u64| {
        let store = store.clone();
        std::thread::spawn(move || {
            store.create_run(&support::started_run(1, 1, run), charged(n, &format!("req-{run}")))
        })
    };
    // The first write waits on the head in the database; the next three queue behind it in
    // the node and go as one group once it returns.
    let first = write("first", 2);
    cluster.wait_for_sessions(&db, "wait_event_type = 'Lock'", 1);
    let (groups_before, _) = store.write_groups_sent();
    let queued = [write("b", 3), write("taken", 4), write("c", 5)];
    assert!(holder.wait_with_output().unwrap().status.success());
    assert_eq!(first.join().unwrap().unwrap(), 1);
    let answers: Vec<_> = queued.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(answers[0].as_ref().unwrap(), &1);
    assert!(matches!(answers[1], Err(StoreError::Conflict(_))), "{:?}", answers[1]);
    assert_eq!(answers[2].as_ref().unwrap(), &1);
    let (groups, grouped) = store.write_groups_sent();
    assert_eq!((groups - groups_before, grouped), (1, 3), "the three queued writes went as one group");
    let report = store.verify_audit(&dg_storage::signing::PublicKeyRing::default()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, 4, "taken, first, b and c: the conflicting write left no entry");
    assert_eq!(store.usage_total(1, "tool_calls").unwrap(), 4);
    let ledger = cluster.psql(&db, "SELECT string_agg(request_id, ',' ORDER BY request_id) FROM usage_ledger");
    assert_eq!(ledger.trim(), "req-b,req-c,req-first,req-taken");
    let kept = cluster
        .psql(&db, "SELECT runs_active, run_bytes = (SELECT sum(length(state_json)) FROM runs) FROM tenant_usage");
    assert_eq!(kept.trim(), "4|t");
}

/// Another node's group holding the deployment's write lock (here a session that takes it
/// as `dg_take_write_lock` does): the node's group that met it waited, so the node's next
/// groups wait for the lock before they are formed, and the writes that queue meanwhile go
/// out with the one that waited, as one group (formed first, the waiting write would have
/// gone alone and the others after it). Sixteen groups in a row that find the lock free put
/// the node back to taking it inside the group's statement. The chain verifies.
#[test]
fn a_node_that_meets_another_nodes_group_forms_its_groups_after_the_write_lock() {
    let Some(cluster) = cluster::Postgres::start() else { return };
    let db = cluster.create_database("write_lock");
    let store = Arc::new(PgStore::open(&cluster.settings(&db, 4), StoreLimits::default()).unwrap());
    let hold = |seconds: u32| {
        cluster.psql_in_background(
            &db,
            &format!("BEGIN; SELECT pg_advisory_xact_lock(7234801317437863013); SELECT pg_sleep({seconds}); COMMIT"),
        )
    };
    let write = |run: String, n: u64| {
        let store = store.clone();
        std::thread::spawn(move || {
            let batch = AuditBatch { events: vec![support::tool_call_event(n, 1)], usage: vec![] };
            store.create_run(&support::started_run(1, 1, &run), batch)
        })
    };
    store.create_run(&support::started_run(1, 1, "alone"), AuditBatch::default()).unwrap();
    assert!(!store.meeting_other_nodes(), "a node alone takes the lock inside its statement");

    let holder = hold(2);
    cluster.wait_for_sleeper(&db);
    assert_eq!(write("met".into(), 1).join().unwrap().unwrap(), 1);
    assert!(holder.wait_with_output().unwrap().status.success());
    assert!(store.meeting_other_nodes(), "the group waited for another holder of the write lock");

    let holder = hold(3);
    cluster.wait_for_sleeper(&db);
    let (groups_before, grouped_before) = store.write_groups_sent();
    let first = write("first".into(), 2);
    // The first write waits for the lock before its group is formed...
    cluster.wait_for_sessions(&db, "wait_event_type = 'Lock'", 1);
    // ...while three more queue in the node behind it.
    let queued: Vec<_> = (0..3).map(|i| write(format!("queued-{i}"), 3 + i)).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(holder.wait_with_output().unwrap().status.success());
    assert_eq!(first.join().unwrap().unwrap(), 1);
    for handle in queued {
        assert_eq!(handle.join().unwrap().unwrap(), 1);
    }
    let (groups, grouped) = store.write_groups_sent();
    assert_eq!(
        (groups - groups_before, grouped - grouped_before),
        (1, 4),
        "the write that waited for the lock and the three queued meanwhile went as one group"
    );
    assert!(store.meeting_other_nodes());

    for i in 0..16 {
        assert!(store.meeting_other_nodes(), "still meeting others after {i} free groups");
        store.create_run(&support::started_run(1, 1, &format!("calm-{i}")), AuditBatch::default()).unwrap();
    }
    assert!(!store.meeting_other_nodes(), "sixteen free groups in a row: back to the one statement");
    let report = store.verify_audit(&dg_storage::signing::PublicKeyRing::default()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, 5);
    let open = cluster.psql(&db, "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'");
    assert_eq!(open.trim(), "0", "no connection was left inside a transaction");
}

/// The race a namespace delete and a request's start run on two nodes: the delete locks the
/// namespace's row, finds it empty and deletes it; a start that reaches its write meanwhile
/// waits for that row and is then refused, rather than storing a run in a namespace that no
/// longer exists (without the row lock it would see the row not yet deleted and store it).
#[test]
fn a_start_racing_a_namespace_delete_waits_for_it_and_is_refused() {
    let Some(cluster) = cluster::Postgres::start() else { return };
    let db = cluster.create_database("race");
    let store = PgStore::open(&cluster.settings(&db, 2), StoreLimits::default()).unwrap();
    store.create_tenant(1, "t1", &std::collections::BTreeMap::new()).unwrap();
    store.create_namespace(1, 7, "going").unwrap();
    let deleter = cluster.psql_in_background(
        &db,
        "BEGIN; SELECT 1 FROM namespaces WHERE tenant_id = 1 AND namespace_id = 7 FOR UPDATE; \
         SELECT count(*) FROM runs WHERE tenant_id = 1 AND namespace_id = 7; SELECT pg_sleep(2); \
         DELETE FROM namespaces WHERE tenant_id = 1 AND namespace_id = 7; COMMIT",
    );
    cluster.wait_for_sleeper(&db);
    let started = std::time::Instant::now();
    let batch = AuditBatch { events: vec![support::tool_call_event(1, 1)], usage: vec![] };
    let err = store.start_run(&support::started_run(1, 7, "late"), batch).unwrap_err();
    assert!(matches!(err, StoreError::Missing(_)), "{err}");
    assert!(started.elapsed() > Duration::from_millis(500), "the start did not wait for the delete");
    assert!(deleter.wait_with_output().unwrap().status.success());
    assert_eq!(cluster.psql(&db, "SELECT count(*) FROM runs").trim(), "0");
    assert_eq!(cluster.psql(&db, "SELECT count(*) FROM audit_log").trim(), "0");
}

/// A signer that works until told to fail (an HSM that went away, say).
struct FlakySigner {
    keys: Arc<dg_storage::signing::KeyStore>,
    failing: std::sync::atomic::AtomicBool,
}

impl dg_storage::audit::AuditSigner for FlakySigner {
    fn key_id(&self) -> Result<String, String> {
        self.keys.key_id()
    }

    fn sign(&self, message: &[u8]) -> Result<(String, String), String> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("the token is gone".into());
        }
        self.keys.sign(message)
    }
}

/// A run write is committed before the checkpoint it makes due is signed: a signer failing
/// then does not turn the committed write into an error (the client would retry a decision
/// that was taken), the chain stays verifiable, and the next write past the interval signs
/// the checkpoint that was missed. The checkpoint is signed without the chain head's lock:
/// a write goes through while another session holds the checkpoint lock.
#[test]
fn a_checkpoint_after_a_run_write_neither_fails_the_write_nor_holds_the_head() {
    let Some(cluster) = cluster::Postgres::start() else { return };
    let db = cluster.create_database("checkpoints");
    let store = PgStore::open(&cluster.settings(&db, 4), StoreLimits::default()).unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(dg_storage::signing::KeyStore::open(&keys_dir.path().join("keys")).unwrap());
    let signer = Arc::new(FlakySigner { keys: keys.clone(), failing: true.into() });
    store.set_audit_signer(signer.clone(), 2);
    let write = |run: &str, n: u64| {
        let batch = AuditBatch { events: vec![support::tool_call_event(n, 1)], usage: vec![] };
        store.create_run(&support::started_run(1, 1, run), batch)
    };
    assert_eq!(write("a", 1).unwrap(), 1);
    assert_eq!(write("b", 2).unwrap(), 1, "the checkpoint due after b failed to sign: b is still written");
    assert_eq!(cluster.psql(&db, "SELECT count(*) FROM audit_checkpoints").trim(), "0");
    signer.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(write("c", 3).unwrap(), 1);
    assert_eq!(cluster.psql(&db, "SELECT string_agg(entry_count::text, ',') FROM audit_checkpoints").trim(), "3");
    // Another signer holding the checkpoint lock does not hold up writes.
    let holder = cluster.psql_in_background(
        &db,
        &format!("BEGIN; SELECT pg_advisory_xact_lock({}); SELECT pg_sleep(5); COMMIT", 0x6467_2d63_686b_7074_i64),
    );
    cluster.wait_for_sleeper(&db);
    let started = std::time::Instant::now();
    assert_eq!(write("d", 4).unwrap(), 1);
    assert_eq!(write("e", 5).unwrap(), 1, "due again: the signer finds the lock taken and leaves it");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "writes waited for the checkpoint lock: {:?}",
        started.elapsed()
    );
    assert!(holder.wait_with_output().unwrap().status.success());
    let report = store.verify_audit(&keys.ring().unwrap()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.entries, report.signed_through), (5, 3));
    assert_eq!(
        store
            .audit_checkpoint_now(&(signer as Arc<dyn dg_storage::audit::AuditSigner>))
            .unwrap()
            .unwrap()
            .body
            .entry_count,
        5
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let Some(cluster) = cluster::Postgres::start() else { return };
    let db = cluster.create_database("newer");
    let settings = cluster.settings(&db, 2);
    drop(PgStore::open(&settings, StoreLimits::default()).unwrap());
    cluster.psql(&db, "UPDATE dg_meta SET version = 99");
    let err = PgStore::open(&settings, StoreLimits::default()).unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema { found: 99, supported: 4 }), "{err}");
    assert!(matches!(PgStore::migrate(&settings).unwrap_err(), StoreError::NewerSchema { .. }));
}

#[test]
fn plain_connections_leave_the_machine_never_and_passwords_stay_out_of_the_settings() {
    let mut config = tokio_postgres::Config::new();
    config.host("192.0.2.10").port(5432).user("dg").dbname("dg");
    let mut settings = dg_storage::postgres::PgSettings {
        config,
        tls: None,
        password: None,
        pool_size: 1,
        statement_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
    };
    let err = PgStore::open(&settings, StoreLimits::default()).unwrap_err().to_string();
    assert!(err.contains("only to a Unix socket or a loopback host"), "{err}");
    settings.config.host("127.0.0.1").password("inline");
    let err = PgStore::open(&settings, StoreLimits::default()).unwrap_err().to_string();
    assert!(err.contains("password_file"), "{err}");
}

#[test]
fn a_database_that_goes_away_is_a_retryable_error_and_service_resumes_by_itself() {
    let Some(mut cluster) = cluster::Postgres::start() else { return };
    let db = cluster.create_database("away");
    let store = PgStore::open(&cluster.settings(&db, 2), StoreLimits::default()).unwrap();
    let scope = Scope::new(1, 1);
    let spec: dg_engine::spec::ScenarioSpec = serde_json::from_value(serde_json::json!({
        "scenario_id": "before", "namespace_id": 1, "spec_version": "1", "policies": [], "schemas": [],
        "conditions": [], "stages": [{"stage_id": "s", "entry_packets": [], "gates": [],
                    "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"}]
    }))
    .unwrap();
    store.put_scenario(scope, &spec, AuditBatch::none()).unwrap();
    cluster.stop_immediate();
    let err = store.ping().unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let mut other = spec.clone();
    other.scenario_id = "during".into();
    let err = store.put_scenario(scope, &other, AuditBatch::none()).unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    cluster.restart();
    // The pool drops the dead connections and makes new ones; bounded wait.
    let mut back = false;
    for _ in 0..50 {
        if store.ping().is_ok() {
            back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(back, "the store did not reconnect: {}", cluster.log());
    assert!(store.get_scenario(scope, "before").unwrap().is_some(), "acknowledged before the crash, kept");
    assert!(store.get_scenario(scope, "during").unwrap().is_none(), "refused while down, not half-written");
    assert!(store.put_scenario(scope, &other, AuditBatch::none()).unwrap());
}
