//! Engine benchmark: prints gate evaluations per second for a 100-condition scenario and
//! the time to build (and verify) the runpack of a run with 10,000 decisions, next to the
//! cost of sha256 alone over the same bytes so the figures read as ratios from one run.
//! Bounded in time; run with `cargo bench -p dg-engine`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use dg_engine::evidence::{
    EvidenceContext, EvidenceProvider, EvidenceQuery, EvidenceResult, EvidenceValue, ProviderCallError, TrustLane,
};
use dg_engine::runpack::{build_runpack, files_map, verify_runpack, ExportOptions};
use dg_engine::spec::ScenarioSpec;
use dg_engine::state::{RunConfig, TriggerEvent, TriggerKind};
use dg_engine::time::Timestamp;
use dg_engine::{hash_bytes, ControlPlane, EngineConfig};
use serde_json::json;

/// Answers every query with the integer in its params, instantly (measures the engine).
struct ConstantEvidence;

impl EvidenceProvider for ConstantEvidence {
    fn query(&self, query: &EvidenceQuery, _: &EvidenceContext) -> Result<EvidenceResult, ProviderCallError> {
        let mut result = EvidenceResult::empty(TrustLane::Verified);
        result.value = Some(EvidenceValue::Json(query.params.clone().unwrap_or_default()["v"].clone()));
        Ok(result)
    }
}

fn spec_with(conditions: usize, expected: i64) -> ScenarioSpec {
    let conds: Vec<_> = (0..conditions)
        .map(|i| json!({"condition_id": format!("c{i:03}"), "query": {"provider_id": "p", "check_id": "v", "params": {"v": i}},
                         "comparator": "greater_than_or_equal", "expected": expected, "policy_tags": []}))
        .collect();
    let leaves: Vec<_> = (0..conditions).map(|i| json!({"Condition": format!("c{i:03}")})).collect();
    serde_json::from_value(json!({
        "scenario_id": "bench", "namespace_id": 1, "spec_version": "1", "default_tenant_id": 1, "policies": [], "schemas": [],
        "conditions": conds,
        "stages": [{"stage_id": "s", "entry_packets": [], "gates": [{"gate_id": "g", "requirement": {"And": leaves}}],
                    "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"}]
    }))
    .unwrap()
}

fn run_config() -> RunConfig {
    RunConfig {
        tenant_id: NonZeroU64::MIN,
        namespace_id: NonZeroU64::MIN,
        run_id: "r".into(),
        scenario_id: "bench".into(),
        dispatch_targets: vec![],
        policy_tags: vec![],
    }
}

fn trigger(n: u64) -> TriggerEvent {
    TriggerEvent {
        trigger_id: format!("t{n}"),
        tenant_id: NonZeroU64::MIN,
        namespace_id: NonZeroU64::MIN,
        run_id: "r".into(),
        kind: TriggerKind::ExternalEvent,
        time: Timestamp::Logical(n),
        source_id: "bench".into(),
        payload: None,
        correlation_id: None,
    }
}

fn bench_evaluations() {
    let spec = spec_with(100, 0);
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &ConstantEvidence).unwrap();
    let fresh = engine.start_run(run_config(), Timestamp::Logical(0), false).unwrap();
    let budget = Duration::from_secs(3);
    let started = Instant::now();
    let mut evaluations = 0u64;
    while started.elapsed() < budget {
        let mut state = fresh.clone();
        engine.trigger(&mut state, &trigger(1)).unwrap();
        evaluations += 1;
    }
    let per_second = evaluations as f64 / started.elapsed().as_secs_f64();
    println!("engine/eval_100_conditions: {per_second:.0} trigger evaluations/s (100 conditions, 1 gate, each a full trigger incl. hashing)");
}

fn bench_runpack() {
    let spec = spec_with(3, 1_000_000);
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &ConstantEvidence).unwrap();
    let mut state = engine.start_run(run_config(), Timestamp::Logical(0), false).unwrap();
    let started = Instant::now();
    for n in 1..=10_000 {
        engine.trigger(&mut state, &trigger(n)).unwrap();
    }
    let record_time = started.elapsed();
    assert_eq!(state.decisions.len(), 10_000);
    let options = ExportOptions {
        generated_at: Timestamp::Logical(1),
        include_verification: false,
        anchor_policy: None,
        security: None,
    };
    let started = Instant::now();
    let runpack = build_runpack(&spec, &state, &options).unwrap();
    let build_time = started.elapsed();
    let total_bytes: usize = runpack.files.iter().map(|(_, b)| b.len()).sum();
    let started = Instant::now();
    let report = verify_runpack(&runpack.manifest_bytes, &files_map(&runpack)).unwrap();
    let verify_time = started.elapsed();
    assert!(report.errors.is_empty());
    let started = Instant::now();
    for (_, bytes) in &runpack.files {
        std::hint::black_box(hash_bytes(bytes));
    }
    let hash_time = started.elapsed();
    println!(
        "engine/runpack_10000_decisions: build {:.1} ms, verify {:.1} ms for {:.1} MB (sha256 alone {:.1} ms; build/sha256 = {:.1}x); recording 10,000 triggers took {:.0} ms",
        build_time.as_secs_f64() * 1e3,
        verify_time.as_secs_f64() * 1e3,
        total_bytes as f64 / 1e6,
        hash_time.as_secs_f64() * 1e3,
        build_time.as_secs_f64() / hash_time.as_secs_f64().max(1e-9),
        record_time.as_secs_f64() * 1e3,
    );
}

/// The canonical JSON writer against `serde_jcs 0.1.0` (whose bytes it reproduces) on a
/// run state with 20 decisions, the shape the daemon encodes on every write.
fn bench_canonical() {
    let spec = spec_with(3, 1_000_000);
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &ConstantEvidence).unwrap();
    let mut state = engine.start_run(run_config(), Timestamp::Logical(0), false).unwrap();
    for n in 1..=20 {
        engine.trigger(&mut state, &trigger(n)).unwrap();
    }
    assert_eq!(dg_engine::canonical_json_bytes(&state).unwrap(), serde_jcs::to_vec(&state).unwrap());
    let time = |encode: &dyn Fn() -> usize| {
        let started = Instant::now();
        let mut bytes = 0;
        for _ in 0..2_000 {
            bytes += std::hint::black_box(encode());
        }
        (started.elapsed().as_secs_f64() / 2_000.0, bytes / 2_000)
    };
    // Interleaved rounds, best of each: both meet the same machine state.
    let (mut ours, mut reference, mut size) = (f64::MAX, f64::MAX, 0);
    for _ in 0..5 {
        let (seconds, bytes) = time(&|| dg_engine::canonical_json_bytes(&state).unwrap().len());
        ours = ours.min(seconds);
        size = bytes;
        reference = reference.min(time(&|| serde_jcs::to_vec(&state).unwrap().len()).0);
    }
    println!(
        "engine/canonical_json: run state of {size} bytes in {:.1} us, serde_jcs 0.1.0 {:.1} us (ratio {:.2}, same bytes)",
        ours * 1e6,
        reference * 1e6,
        ours / reference
    );
}

fn main() {
    // `cargo test --all-targets` runs benches with `--bench` absent: keep that pass short.
    if !std::env::args().any(|a| a == "--bench") {
        println!("engine bench: skipped outside `cargo bench`");
        return;
    }
    bench_canonical();
    bench_evaluations();
    bench_runpack();
}
