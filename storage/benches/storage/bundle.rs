//! Bundle benchmark: create and verify throughput (MB/s) for a ~100 MB runpack, next to
//! the floor of sha256 + zstd alone on the same bytes in the same run (target: within
//! 1.5x of that floor). Each figure is the best of five interleaved rounds. Prints figures.

use std::num::NonZeroU64;
use std::time::Instant;

use dg_engine::runpack::{build_runpack, ExportOptions};
use dg_engine::spec::{PacketPayload, ScenarioSpec};
use dg_engine::state::{RunConfig, SubmissionRecord, TriggerEvent, TriggerKind, TriggerRecord};
use dg_engine::time::Timestamp;
use dg_engine::{hash_bytes, ControlPlane, EngineConfig};
use dg_providers::time::TimeProviderConfig;
use dg_providers::BuiltinProviders;
use dg_storage::bundle::{build_bundle, read_bundle, BundleLimits};
use dg_storage::signing::KeyStore;
use serde_json::json;

/// A run whose artifacts add up to about 100 MB (each under the 16 MiB artifact limit).
fn big_runpack() -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let spec: ScenarioSpec = serde_json::from_value(json!({
        "scenario_id": "big", "namespace_id": 1, "spec_version": "1", "policies": [], "schemas": [],
        "conditions": [{"condition_id": "c", "query": {"provider_id": "time", "check_id": "after", "params": {"timestamp": 0}},
                        "comparator": "equals", "expected": true, "policy_tags": []}],
        "stages": [{"stage_id": "s", "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}],
                    "entry_packets": [{"packet_id": "p", "schema_id": "x", "content_type": "application/json", "visibility_labels": ["a"],
                        "policy_tags": [], "expiry": null, "payload": {"kind": "json", "value": {"text": "p".repeat(600)}}}],
                    "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"}]
    }))
    .unwrap();
    let providers = BuiltinProviders::default().with_time(TimeProviderConfig::default());
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &providers).unwrap();
    let run_config = RunConfig {
        tenant_id: NonZeroU64::MIN,
        namespace_id: NonZeroU64::MIN,
        run_id: "big".into(),
        scenario_id: "big".into(),
        dispatch_targets: vec![],
        policy_tags: vec![],
    };
    let state_config = || run_config.clone();
    let mut state = engine.start_run(run_config.clone(), Timestamp::Logical(0), false).unwrap();
    // Evidence-like payloads: varied text so compression is realistic, not trivial.
    let payload = |n: usize| {
        let text: String = (0..600).map(|i| char::from(b'a' + ((n * 31 + i * 7) % 26) as u8)).collect();
        json!({"n": n, "text": text, "values": [n, n * 3, n * 7]})
    };
    // Fill each log to about 14 MB (the open-source artifact limit is 16 MiB per file).
    const TARGET: usize = 14_000_000;
    let size_of = |v: &serde_json::Value| v.to_string().len();
    let mut n = 0usize;
    let trigger = |n: usize| TriggerRecord {
        seq: n as u64 + 1,
        event: TriggerEvent {
            trigger_id: format!("t{n}"),
            tenant_id: NonZeroU64::MIN,
            namespace_id: NonZeroU64::MIN,
            run_id: "big".into(),
            kind: TriggerKind::ExternalEvent,
            time: Timestamp::Logical(n as u64),
            source_id: "bench".into(),
            payload: Some(PacketPayload::Json { value: payload(n) }),
            correlation_id: None,
        },
    };
    let per_trigger = size_of(&serde_json::to_value(trigger(0)).unwrap());
    while n * per_trigger < TARGET {
        state.triggers.push(trigger(n));
        n += 1;
    }
    let submission = |n: usize| SubmissionRecord {
        submission_id: format!("s{n}"),
        run_id: "big".into(),
        payload: PacketPayload::Json { value: payload(n + 1) },
        content_type: "application/json".into(),
        content_hash: hash_bytes(&n.to_le_bytes()),
        submitted_at: Timestamp::Logical(n as u64),
        correlation_id: None,
    };
    let per_submission = size_of(&serde_json::to_value(submission(0)).unwrap());
    for n in 0..TARGET / per_submission {
        state.submissions.push(submission(n));
    }
    // Gate evaluations, decisions, packets and tool calls from real triggers of the same run.
    let mut evaluated = engine.start_run(state_config(), Timestamp::Logical(0), true).unwrap();
    for n in 0..2 {
        let event = trigger(n).event;
        engine.trigger(&mut evaluated, &event).unwrap();
    }
    let decision = evaluated.decisions[0].clone();
    let tool_call = evaluated.tool_calls[0].clone();
    let per_decision = size_of(&serde_json::to_value(&decision).unwrap());
    for n in 0..TARGET / per_decision {
        let mut d = decision.clone();
        d.seq = n as u64 + 1;
        d.decision_id = format!("decision-{}", n + 1);
        d.trigger_id = format!("t{n}");
        state.decisions.push(d);
    }
    let gate_eval = evaluated.gate_evals.first().cloned();
    if let Some(gate_eval) = gate_eval {
        let per_eval = size_of(&serde_json::to_value(&gate_eval).unwrap());
        for n in 0..TARGET / per_eval {
            let mut g = gate_eval.clone();
            g.trigger_id = format!("t{n}");
            state.gate_evals.push(g);
        }
    }
    let packet = evaluated.packets[0].clone();
    let per_packet = size_of(&serde_json::to_value(&packet).unwrap());
    for n in 0..TARGET / per_packet {
        let mut p = packet.clone();
        p.envelope.packet_id = format!("p{n}");
        state.packets.push(p);
    }
    let per_call = size_of(&serde_json::to_value(&tool_call).unwrap());
    for n in 0..TARGET / per_call {
        let mut c = tool_call.clone();
        c.call_id = format!("call-{}", n + 1);
        state.tool_calls.push(c);
    }
    let options = ExportOptions {
        generated_at: Timestamp::Logical(1),
        include_verification: false,
        anchor_policy: None,
        security: None,
    };
    let pack = build_runpack(&spec, &state, &options).unwrap();
    (pack.manifest_bytes, pack.files)
}

/// Runs the benchmark and prints its figures.
pub fn run() {
    let (manifest, files) = big_runpack();
    let total: usize = files.iter().map(|(_, b)| b.len()).sum::<usize>() + manifest.len();
    let mb = total as f64 / 1e6;
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(keys_dir.path()).unwrap();
    let key = keys.active().unwrap();
    let ring = keys.ring().unwrap();

    // The floor: sha256 of every byte plus zstd (same level) alone, and decode + sha256.
    let mut all = manifest.clone();
    for (_, bytes) in &files {
        all.extend_from_slice(bytes);
    }
    // Best of ROUNDS for each side, the four measurements interleaved in every round, so
    // a slow moment of a shared machine does not land on one side only.
    const ROUNDS: usize = 5;
    let (mut create, mut verify, mut floor_create, mut floor_verify) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    let mut bundle = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        bundle = build_bundle("manifest.json", &manifest, &files, &key).unwrap();
        create = create.min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        std::hint::black_box(hash_bytes(&all));
        let compressed = zstd::encode_all(all.as_slice(), 3).unwrap();
        floor_create = floor_create.min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let verified = read_bundle(bundle.as_slice(), &ring, BundleLimits::default()).unwrap();
        verify = verify.min(started.elapsed().as_secs_f64());
        assert_eq!(verified.files.len(), files.len());
        drop(verified);
        let started = Instant::now();
        let decoded = zstd::decode_all(compressed.as_slice()).unwrap();
        std::hint::black_box(hash_bytes(&decoded));
        floor_verify = floor_verify.min(started.elapsed().as_secs_f64());
    }
    println!(
        "bundle/create: {:.0} MB/s for a {mb:.1} MB runpack (sha256+zstd floor {:.0} MB/s, ratio {:.2}x)",
        mb / create,
        mb / floor_create,
        create / floor_create
    );
    println!(
        "bundle/verify: {:.0} MB/s (zstd-decode+sha256 floor {:.0} MB/s, ratio {:.2}x); bundle is {:.1} MB",
        mb / verify,
        mb / floor_verify,
        verify / floor_verify,
        bundle.len() as f64 / 1e6
    );
}
