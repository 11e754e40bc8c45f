#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The run state machine against the contract: idempotency, submissions, timeouts and
//! their policies, branching, trust lanes, precheck, and failure atomicity.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::num::NonZeroU64;

use dg_engine::evidence::{
    EvidenceContext, EvidenceProvider, EvidenceQuery, EvidenceResult, EvidenceValue, ProviderCallError, TrustLane,
    TrustRequirement,
};
use dg_engine::ret::TriState;
use dg_engine::spec::{PacketPayload, ScenarioSpec};
use dg_engine::state::{DecisionOutcome, RunConfig, RunState, RunStatus, SubmitRequest, TriggerEvent, TriggerKind};
use dg_engine::time::Timestamp;
use dg_engine::{ControlPlane, EngineConfig, EngineError};
use serde_json::{json, Value};

/// Answers each check id with a value set by the test (`check_id` = key), lane chosen too.
#[derive(Default)]
struct ScriptedEvidence {
    values: RefCell<BTreeMap<String, (Value, TrustLane)>>,
    calls: RefCell<usize>,
}

impl ScriptedEvidence {
    fn set(&self, check: &str, value: Value, lane: TrustLane) {
        self.values.borrow_mut().insert(check.to_string(), (value, lane));
    }
}

impl EvidenceProvider for ScriptedEvidence {
    fn query(&self, query: &EvidenceQuery, _: &EvidenceContext) -> Result<EvidenceResult, ProviderCallError> {
        *self.calls.borrow_mut() += 1;
        let values = self.values.borrow();
        let (value, lane) = values.get(&query.check_id).ok_or_else(|| ProviderCallError("no such check".into()))?;
        let mut result = EvidenceResult::empty(*lane);
        result.value = Some(EvidenceValue::Json(value.clone()));
        Ok(result)
    }
}

fn spec(on_timeout: &str, advance: Value) -> ScenarioSpec {
    serde_json::from_value(json!({
        "scenario_id": "s", "namespace_id": 2, "spec_version": "1", "policies": [], "schemas": [],
        "conditions": [
            {"condition_id": "ready", "query": {"provider_id": "p", "check_id": "ready"}, "comparator": "equals",
             "expected": true, "policy_tags": []},
            {"condition_id": "score", "query": {"provider_id": "p", "check_id": "score"}, "comparator": "greater_than_or_equal",
             "expected": 10, "policy_tags": []}
        ],
        "stages": [
            {"stage_id": "a", "entry_packets": [], "gates": [
                {"gate_id": "g-ready", "requirement": {"Condition": "ready"}},
                {"gate_id": "g-score", "requirement": {"RequireGroup": {"min": 1, "reqs": [{"Condition": "score"}, {"Condition": "ready"}]}}}],
             "advance_to": advance, "timeout": {"timeout_ms": 100, "policy_tags": []}, "on_timeout": on_timeout},
            {"stage_id": "b", "entry_packets": [{"packet_id": "pk", "schema_id": "x", "content_type": "application/json",
              "visibility_labels": [], "policy_tags": [], "expiry": null, "payload": {"kind": "json", "value": 1}}],
             "gates": [], "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"},
            {"stage_id": "c", "entry_packets": [], "gates": [], "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"}
        ]
    }))
    .unwrap()
}

fn run_config() -> RunConfig {
    RunConfig {
        tenant_id: NonZeroU64::new(4).unwrap(),
        namespace_id: NonZeroU64::new(2).unwrap(),
        run_id: "run".into(),
        scenario_id: "s".into(),
        dispatch_targets: vec![],
        policy_tags: vec![],
    }
}

fn trigger(id: &str, kind: TriggerKind, time: Timestamp) -> TriggerEvent {
    TriggerEvent {
        trigger_id: id.into(),
        tenant_id: NonZeroU64::new(4).unwrap(),
        namespace_id: NonZeroU64::new(2).unwrap(),
        run_id: "run".into(),
        kind,
        time,
        source_id: "test".into(),
        payload: None,
        correlation_id: Some("corr".into()),
    }
}

fn start(engine: &ControlPlane<'_>, at: Timestamp) -> RunState {
    engine.start_run(run_config(), at, true).unwrap()
}

#[test]
fn hold_then_advance_and_trigger_replay_is_idempotent() {
    let spec = spec("fail", json!({"kind": "linear"}));
    let evidence = ScriptedEvidence::default();
    evidence.set("ready", json!(false), TrustLane::Verified);
    evidence.set("score", json!(3), TrustLane::Verified);
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &evidence).unwrap();
    let mut state = start(&engine, Timestamp::UnixMillis(1_000));
    assert_eq!(state.decisions[0].outcome, DecisionOutcome::Start { stage_id: "a".into() });

    let held =
        engine.trigger(&mut state, &trigger("t1", TriggerKind::ExternalEvent, Timestamp::UnixMillis(1_010))).unwrap();
    match &held.decision.outcome {
        DecisionOutcome::Hold { summary } => assert_eq!(summary.unmet_gates, ["g-ready", "g-score"]),
        other => panic!("expected hold, got {other:?}"),
    }
    assert_eq!(state.gate_evals.len(), 2);

    evidence.set("ready", json!(true), TrustLane::Verified);
    let calls_before = *evidence.calls.borrow();
    let replay =
        engine.trigger(&mut state, &trigger("t1", TriggerKind::ExternalEvent, Timestamp::UnixMillis(1_020))).unwrap();
    assert_eq!(replay.decision, held.decision, "replay returns the stored decision");
    assert_eq!(*evidence.calls.borrow(), calls_before, "replay queries nothing");
    assert_eq!(state.triggers.len(), 2, "replay records no trigger");
    assert_eq!(state.tool_calls.len(), 2, "replay still records the tool call");

    let advanced =
        engine.trigger(&mut state, &trigger("t2", TriggerKind::ExternalEvent, Timestamp::UnixMillis(1_030))).unwrap();
    assert_eq!(
        advanced.decision.outcome,
        DecisionOutcome::Advance { from_stage: "a".into(), to_stage: "b".into(), timeout: false }
    );
    assert_eq!(advanced.packets.len(), 1);
    assert_eq!(advanced.packets[0].envelope.correlation_id.as_deref(), Some("corr"));
    assert_eq!(state.current_stage_id, "b");
    assert_eq!(state.stage_entered_at, Timestamp::UnixMillis(1_030));

    let done = engine.trigger(&mut state, &trigger("t3", TriggerKind::Tick, Timestamp::UnixMillis(1_040))).unwrap();
    assert_eq!(done.decision.outcome, DecisionOutcome::Complete { stage_id: "b".into() });
    assert_eq!(state.status, RunStatus::Completed);
    let after = engine.trigger(&mut state, &trigger("t4", TriggerKind::Tick, Timestamp::UnixMillis(1_050))).unwrap();
    assert_eq!(after.decision, done.decision, "inactive runs answer with the last decision");
    assert_eq!(state.decisions.len(), 4);
}

#[test]
fn timeout_policies() {
    let evidence = ScriptedEvidence::default();
    evidence.set("ready", json!(false), TrustLane::Verified);
    evidence.set("score", json!(0), TrustLane::Verified);
    let config = EngineConfig::default();

    let fail = spec("fail", json!({"kind": "linear"}));
    let engine = ControlPlane::new(&fail, &config, &evidence).unwrap();
    let mut state = start(&engine, Timestamp::Logical(0));
    let early = engine.trigger(&mut state, &trigger("t", TriggerKind::Tick, Timestamp::Logical(99))).unwrap();
    assert!(matches!(early.decision.outcome, DecisionOutcome::Hold { .. }), "not yet expired");
    let not_tick =
        engine.trigger(&mut state, &trigger("e", TriggerKind::ExternalEvent, Timestamp::Logical(500))).unwrap();
    assert!(matches!(not_tick.decision.outcome, DecisionOutcome::Hold { .. }), "only ticks check timeouts");
    let expired = engine.trigger(&mut state, &trigger("t2", TriggerKind::Tick, Timestamp::Logical(100))).unwrap();
    assert_eq!(expired.decision.outcome, DecisionOutcome::Fail { reason: "timeout".into() });
    assert_eq!(state.status, RunStatus::Failed);

    let flag = spec("advance_with_flag", json!({"kind": "fixed", "stage_id": "c"}));
    let engine = ControlPlane::new(&flag, &config, &evidence).unwrap();
    let mut state = start(&engine, Timestamp::Logical(0));
    let gate_evals_before = state.gate_evals.len();
    let result = engine.trigger(&mut state, &trigger("t", TriggerKind::Tick, Timestamp::Logical(150))).unwrap();
    assert_eq!(
        result.decision.outcome,
        DecisionOutcome::Advance { from_stage: "a".into(), to_stage: "c".into(), timeout: true }
    );
    assert_eq!(state.gate_evals.len(), gate_evals_before, "expired stages evaluate no gates");

    let branch = spec(
        "alternate_branch",
        json!({"kind": "branch", "default": null, "branches": [
            {"gate_id": "g-ready", "outcome": "true", "next_stage_id": "b"},
            {"gate_id": "g-ready", "outcome": "unknown", "next_stage_id": "c"}]}),
    );
    let engine = ControlPlane::new(&branch, &config, &evidence).unwrap();
    let mut state = start(&engine, Timestamp::Logical(0));
    let result = engine.trigger(&mut state, &trigger("t", TriggerKind::Tick, Timestamp::Logical(100))).unwrap();
    assert_eq!(
        result.decision.outcome,
        DecisionOutcome::Advance { from_stage: "a".into(), to_stage: "c".into(), timeout: true }
    );
}

#[test]
fn failures_after_recording_leave_the_state_untouched() {
    let evidence = ScriptedEvidence::default();
    evidence.set("ready", json!(true), TrustLane::Verified);
    evidence.set("score", json!(50), TrustLane::Verified);
    let config = EngineConfig::default();
    let no_match = spec(
        "fail",
        json!({"kind": "branch", "default": null, "branches": [
        {"gate_id": "g-ready", "outcome": "false", "next_stage_id": "b"}]}),
    );
    let engine = ControlPlane::new(&no_match, &config, &evidence).unwrap();
    let mut state = start(&engine, Timestamp::Logical(0));
    let before = state.clone();
    let err = engine.trigger(&mut state, &trigger("t", TriggerKind::ExternalEvent, Timestamp::Logical(5))).unwrap_err();
    assert_eq!(err.to_string(), "gate resolution failed: no branch matched");
    assert_eq!(state, before);

    let err = engine.trigger(&mut state, &trigger("t", TriggerKind::Tick, Timestamp::UnixMillis(5))).unwrap_err();
    assert!(matches!(err, EngineError::TriggerTimeMismatch(_)));
    assert_eq!(state, before);

    evidence.set("ready", json!("x".repeat(1024 * 1024 + 1)), TrustLane::Verified);
    let err = engine.trigger(&mut state, &trigger("t", TriggerKind::ExternalEvent, Timestamp::Logical(5))).unwrap_err();
    assert!(err.to_string().starts_with("evidence payload exceeds size limit"), "{err}");
    assert_eq!(state, before);
}

#[test]
fn asserted_evidence_does_not_satisfy_the_verified_default() {
    let spec = spec("fail", json!({"kind": "linear"}));
    let evidence = ScriptedEvidence::default();
    evidence.set("ready", json!(true), TrustLane::Asserted);
    evidence.set("score", json!(50), TrustLane::Verified);
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &evidence).unwrap();
    let mut state = start(&engine, Timestamp::Logical(0));
    let result = engine.trigger(&mut state, &trigger("t", TriggerKind::ExternalEvent, Timestamp::Logical(1))).unwrap();
    assert!(matches!(result.decision.outcome, DecisionOutcome::Hold { .. }));
    let ready = &state.gate_evals[0].evidence[0];
    assert_eq!(ready.status, TriState::Unknown);
    let error = ready.result.error.as_ref().unwrap();
    assert_eq!(error.code, "trust_lane");
    assert_eq!(error.message, "evidence lane Asserted does not satisfy Verified");
    assert_eq!(state.gate_evals[1].evaluation.status, TriState::True, "score alone satisfies the group");

    let permissive = EngineConfig {
        trust_requirement: TrustRequirement { min_lane: TrustLane::Asserted },
        ..EngineConfig::default()
    };
    let engine = ControlPlane::new(&spec, &permissive, &evidence).unwrap();
    let mut state = start(&engine, Timestamp::Logical(0));
    let result = engine.trigger(&mut state, &trigger("t", TriggerKind::ExternalEvent, Timestamp::Logical(1))).unwrap();
    assert!(matches!(result.decision.outcome, DecisionOutcome::Advance { .. }));
}

#[test]
fn submissions_are_idempotent_and_conflicts_are_recorded() {
    let spec = spec("fail", json!({"kind": "linear"}));
    let evidence = ScriptedEvidence::default();
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &evidence).unwrap();
    let mut state = start(&engine, Timestamp::Logical(0));
    let request = SubmitRequest {
        run_id: "run".into(),
        tenant_id: NonZeroU64::new(4).unwrap(),
        namespace_id: NonZeroU64::new(2).unwrap(),
        submission_id: "sub".into(),
        payload: PacketPayload::Json { value: json!({"a": 1}) },
        content_type: "application/json".into(),
        submitted_at: Timestamp::Logical(3),
        correlation_id: None,
    };
    let first = engine.submit(&mut state, &request).unwrap();
    let again = engine.submit(&mut state, &request).unwrap();
    assert_eq!(first, again);
    assert_eq!(state.submissions.len(), 1);
    let conflicting = SubmitRequest { payload: PacketPayload::Json { value: json!({"a": 2}) }, ..request };
    let err = engine.submit(&mut state, &conflicting).unwrap_err();
    assert_eq!(err.to_string(), "submission_id conflict: sub");
    assert!(err.state_changed());
    assert_eq!(state.tool_calls.len(), 3);
    assert_eq!(state.tool_calls[2].error.as_ref().unwrap().code, "submission_conflict");
}

#[test]
fn precheck_is_read_only_and_respects_trust() {
    let spec = spec("fail", json!({"kind": "linear"}));
    let evidence = ScriptedEvidence::default();
    let mut asserted = BTreeMap::new();
    for (id, value) in [("ready", json!(true)), ("score", json!(11))] {
        let mut result = EvidenceResult::empty(TrustLane::Asserted);
        result.value = Some(EvidenceValue::Json(value));
        asserted.insert(id.to_string(), result);
    }
    let strict = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &strict, &evidence).unwrap();
    let held = engine.precheck(None, &asserted).unwrap();
    assert!(matches!(held.decision, DecisionOutcome::Hold { .. }));
    let permissive = EngineConfig {
        trust_requirement: TrustRequirement { min_lane: TrustLane::Asserted },
        ..EngineConfig::default()
    };
    let engine = ControlPlane::new(&spec, &permissive, &evidence).unwrap();
    let passed = engine.precheck(None, &asserted).unwrap();
    assert_eq!(
        passed.decision,
        DecisionOutcome::Advance { from_stage: "a".into(), to_stage: "b".into(), timeout: false }
    );
    assert_eq!(*evidence.calls.borrow(), 0, "precheck calls no provider");
}

#[test]
fn start_checks_scenario_and_namespace() {
    let spec = spec("fail", json!({"kind": "linear"}));
    let evidence = ScriptedEvidence::default();
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &evidence).unwrap();
    let wrong_ns = RunConfig { namespace_id: NonZeroU64::new(9).unwrap(), ..run_config() };
    assert_eq!(
        engine.start_run(wrong_ns, Timestamp::Logical(0), false).unwrap_err().to_string(),
        "namespace mismatch for run: 9"
    );
    let without_packets = engine.start_run(run_config(), Timestamp::Logical(0), false).unwrap();
    assert!(without_packets.decisions.is_empty() && without_packets.triggers.is_empty());
}
