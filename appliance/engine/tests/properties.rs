#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance 4: property tests. Kleene laws of the RET algebra, canonical JSON is
//! idempotent and independent of key order, and replaying the same triggers always
//! yields the same decisions and hashes.

use std::num::NonZeroU64;

use dg_engine::hashing::canonical_json_bytes;
use dg_engine::ret::{Requirement, TriState};
use dg_engine::runpack::{build_runpack, ExportOptions};
use dg_engine::spec::ScenarioSpec;
use dg_engine::state::{RunConfig, TriggerEvent, TriggerKind};
use dg_engine::time::Timestamp;
use dg_engine::{ControlPlane, EngineConfig};
use dg_providers::time::TimeProviderConfig;
use dg_providers::BuiltinProviders;
use proptest::prelude::*;
use serde_json::{json, Value};

fn tri() -> impl Strategy<Value = TriState> {
    prop_oneof![Just(TriState::True), Just(TriState::False), Just(TriState::Unknown)]
}

fn leaf(name: &str) -> Requirement {
    Requirement::Condition(name.to_string())
}

fn eval(req: &Requirement, a: TriState, b: TriState, c: TriState) -> TriState {
    req.evaluate(&mut |id| match id {
        "a" => a,
        "b" => b,
        _ => c,
    })
}

proptest! {
    #[test]
    fn kleene_laws_hold(a in tri(), b in tri(), c in tri()) {
        prop_assert_eq!(a.and(b), b.and(a));
        prop_assert_eq!(a.or(b), b.or(a));
        prop_assert_eq!(a.and(b).and(c), a.and(b.and(c)));
        prop_assert_eq!(a.or(b).or(c), a.or(b.or(c)));
        prop_assert_eq!(a.and(b).negate(), a.negate().or(b.negate()));
        prop_assert_eq!(a.or(b).negate(), a.negate().and(b.negate()));
        prop_assert_eq!(a.negate().negate(), a);
        prop_assert_eq!(a.and(TriState::True), a);
        prop_assert_eq!(a.or(TriState::False), a);
        prop_assert_eq!(a.and(TriState::False), TriState::False);
        prop_assert_eq!(a.or(TriState::True), TriState::True);
        prop_assert_eq!(a.and(b.or(c)), a.and(b).or(a.and(c)));
    }

    #[test]
    fn tree_evaluation_matches_the_algebra(a in tri(), b in tri(), c in tri()) {
        let and = Requirement::And(vec![leaf("a"), leaf("b"), leaf("c")]);
        prop_assert_eq!(eval(&and, a, b, c), a.and(b).and(c));
        let or = Requirement::Or(vec![leaf("a"), leaf("b"), leaf("c")]);
        prop_assert_eq!(eval(&or, a, b, c), a.or(b).or(c));
        let not = Requirement::Not(Box::new(leaf("a")));
        prop_assert_eq!(eval(&not, a, b, c), a.negate());
        let all = Requirement::RequireGroup { min: 3, reqs: vec![leaf("a"), leaf("b"), leaf("c")] };
        prop_assert_eq!(eval(&all, a, b, c), eval(&and, a, b, c));
        let any = Requirement::RequireGroup { min: 1, reqs: vec![leaf("a"), leaf("b"), leaf("c")] };
        prop_assert_eq!(eval(&any, a, b, c), eval(&or, a, b, c));
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1.0e12f64..1.0e12).prop_map(|f| json!(f)),
        "[ -~\\u{e9}\\u{1F600}\\n\\t\"\\\\]{0,12}".prop_map(Value::String),
    ];
    scalar.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z0-9_\\u{e9}]{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Writes JSON with object members in reverse order and some whitespace, to check that
/// canonical bytes do not depend on the input's key order or layout.
fn write_reordered(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            out.push_str("{ ");
            for (i, (key, item)) in map.iter().rev().enumerate() {
                if i > 0 {
                    out.push_str(" ,\n");
                }
                out.push_str(&serde_json::to_string(key).unwrap());
                out.push_str(" : ");
                write_reordered(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_reordered(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap()),
    }
}

proptest! {
    #[test]
    fn canonical_json_is_idempotent(value in json_value()) {
        let once = canonical_json_bytes(&value).unwrap();
        let reparsed: Value = serde_json::from_slice(&once).unwrap();
        prop_assert_eq!(canonical_json_bytes(&reparsed).unwrap(), once);
    }

    #[test]
    fn canonical_json_ignores_key_order(value in json_value()) {
        let mut text = String::new();
        write_reordered(&value, &mut text);
        let reordered: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(canonical_json_bytes(&reordered).unwrap(), canonical_json_bytes(&value).unwrap());
    }
}

fn replay_spec() -> ScenarioSpec {
    serde_json::from_value(json!({
        "scenario_id": "replay", "namespace_id": 3, "spec_version": "1", "default_tenant_id": null,
        "policies": [], "schemas": [],
        "conditions": [
            {"condition_id": "late", "query": {"provider_id": "time", "check_id": "after", "params": {"timestamp": 5}},
             "comparator": "equals", "expected": true, "policy_tags": []},
            {"condition_id": "now", "query": {"provider_id": "time", "check_id": "now"},
             "comparator": "less_than", "expected": 40, "policy_tags": []}
        ],
        "stages": [
            {"stage_id": "one", "entry_packets": [
                {"packet_id": "p1", "schema_id": "s", "content_type": "application/json", "visibility_labels": [],
                 "policy_tags": [], "expiry": null, "payload": {"kind": "json", "value": {"n": 1}}}],
             "gates": [{"gate_id": "g1", "requirement": {"And": [{"Condition": "late"}, {"Condition": "now"}]}}],
             "advance_to": {"kind": "linear"}, "timeout": {"timeout_ms": 30, "policy_tags": []}, "on_timeout": "advance_with_flag"},
            {"stage_id": "two", "entry_packets": [
                {"packet_id": "p2", "schema_id": "s", "content_type": "text/plain", "visibility_labels": ["x"],
                 "policy_tags": [], "expiry": null, "payload": {"kind": "bytes", "bytes": [1, 2, 3]}}],
             "gates": [{"gate_id": "g2", "requirement": {"Or": [{"Not": {"Condition": "now"}}, {"Condition": "late"}]}}],
             "advance_to": {"kind": "terminal"}, "timeout": {"timeout_ms": 10, "policy_tags": []}, "on_timeout": "fail"}
        ]
    }))
    .unwrap()
}

fn trigger_kind() -> impl Strategy<Value = TriggerKind> {
    prop_oneof![
        Just(TriggerKind::Tick),
        Just(TriggerKind::AgentRequestNext),
        Just(TriggerKind::ExternalEvent),
        Just(TriggerKind::BackendEvent)
    ]
}

fn run_once(triggers: &[(u8, TriggerKind, u64)]) -> (Vec<Value>, String, Vec<u8>) {
    let spec = replay_spec();
    let providers = BuiltinProviders::default().with_time(TimeProviderConfig::default());
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &providers).unwrap();
    let run_config = RunConfig {
        tenant_id: NonZeroU64::new(9).unwrap(),
        namespace_id: NonZeroU64::new(3).unwrap(),
        run_id: "r".into(),
        scenario_id: "replay".into(),
        dispatch_targets: vec![dg_engine::state::DispatchTarget::Agent { agent_id: "a".into() }],
        policy_tags: vec![],
    };
    let mut state = engine.start_run(run_config, Timestamp::Logical(0), true).unwrap();
    let mut outcomes = Vec::new();
    for (id, kind, time) in triggers {
        let event = TriggerEvent {
            trigger_id: format!("t{id}"),
            tenant_id: state.tenant_id,
            namespace_id: state.namespace_id,
            run_id: "r".into(),
            kind: *kind,
            time: Timestamp::Logical(*time),
            source_id: "prop".into(),
            payload: None,
            correlation_id: None,
        };
        outcomes.push(serde_json::to_value(engine.trigger(&mut state, &event).unwrap()).unwrap());
    }
    let options = ExportOptions {
        generated_at: Timestamp::Logical(99),
        include_verification: true,
        anchor_policy: None,
        security: None,
    };
    let runpack = build_runpack(&spec, &state, &options).unwrap();
    let canonical = canonical_json_bytes(&state).unwrap();
    // The direct canonical writer must equal the open-source path through serde_json::Value.
    assert_eq!(canonical, serde_jcs::to_vec(&serde_json::to_value(&state).unwrap()).unwrap());
    (outcomes, runpack.manifest.integrity.root_hash.value, canonical)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn replaying_the_same_triggers_gives_the_same_decisions_and_hashes(
        triggers in prop::collection::vec((0u8..6, trigger_kind(), 0u64..60), 0..12)
    ) {
        let first = run_once(&triggers);
        let second = run_once(&triggers);
        prop_assert_eq!(first, second);
    }
}
