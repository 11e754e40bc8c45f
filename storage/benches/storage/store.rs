//! Storage benchmark: durable trigger writes per second (one writer, and many writers
//! sharing group commits) and hash-verified reads per second, on a real SQLite file
//! with WAL + synchronous=FULL. Prints figures; bounded in time.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dg_engine::spec::ScenarioSpec;
use dg_engine::state::{RunConfig, TriggerEvent, TriggerKind};
use dg_engine::time::Timestamp;
use dg_engine::{ControlPlane, EngineConfig, RunState};
use dg_providers::time::TimeProviderConfig;
use dg_providers::BuiltinProviders;
use dg_storage::{Scope, Store, StoreLimits};
use serde_json::json;

fn spec() -> ScenarioSpec {
    serde_json::from_value(json!({
        "scenario_id": "bench", "namespace_id": 1, "spec_version": "1", "policies": [], "schemas": [],
        "conditions": [{"condition_id": "c", "query": {"provider_id": "time", "check_id": "after", "params": {"timestamp": 1000000}},
                        "comparator": "equals", "expected": true, "policy_tags": []}],
        "stages": [{"stage_id": "s", "entry_packets": [], "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}],
                    "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"}]
    }))
    .unwrap()
}

/// A run with one trigger recorded: the document a trigger write persists.
fn triggered_state(run_id: &str) -> RunState {
    let spec = spec();
    let providers = BuiltinProviders::default().with_time(TimeProviderConfig::default());
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &providers).unwrap();
    let run_config = RunConfig {
        tenant_id: NonZeroU64::MIN,
        namespace_id: NonZeroU64::MIN,
        run_id: run_id.into(),
        scenario_id: "bench".into(),
        dispatch_targets: vec![],
        policy_tags: vec![],
    };
    let mut state = engine.start_run(run_config, Timestamp::Logical(0), false).unwrap();
    let trigger = TriggerEvent {
        trigger_id: "t".into(),
        tenant_id: NonZeroU64::MIN,
        namespace_id: NonZeroU64::MIN,
        run_id: run_id.into(),
        kind: TriggerKind::Tick,
        time: Timestamp::Logical(1),
        source_id: "bench".into(),
        payload: None,
        correlation_id: None,
    };
    engine.trigger(&mut state, &trigger).unwrap();
    state
}

fn writes(store: &Arc<Store>, threads: usize, budget: Duration, prefix: &str) -> f64 {
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, counter, prefix) = (store.clone(), counter.clone(), prefix.to_string());
            std::thread::spawn(move || {
                let template = triggered_state("x");
                let mut n = 0;
                while started.elapsed() < budget {
                    let mut state = template.clone();
                    state.run_id = format!("{prefix}-{t}-{n}");
                    store.create_run(&state, dg_storage::audit::AuditBatch::none()).unwrap();
                    counter.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    counter.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Runs the benchmark and prints its figures.
pub fn run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("state.db"), StoreLimits::default()).unwrap());
    let single = writes(&store, 1, Duration::from_secs(3), "single");
    let grouped = writes(&store, 32, Duration::from_secs(5), "group");
    println!("store/durable_writes: {single:.0} trigger-state writes/s with 1 writer; {grouped:.0}/s with 32 writers sharing group commits (target 5000/s)");
    let ids: Vec<String> = (0..1000).map(|n| format!("single-0-{n}")).collect();
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (store, counter, ids) = (store.clone(), counter.clone(), ids.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while started.elapsed() < Duration::from_secs(3) {
                    let found = store.get_run(Scope::new(1, 1), &ids[i % ids.len()]).unwrap();
                    assert!(found.is_some());
                    counter.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    let reads = counter.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("store/reads: {reads:.0} hash-verified run reads/s with 4 readers");
}
