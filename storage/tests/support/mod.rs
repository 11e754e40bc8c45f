//! Helpers shared by the storage integration tests.

use std::num::NonZeroU64;

use dg_engine::spec::ScenarioSpec;
use dg_engine::state::{RunConfig, RunState};
use dg_engine::time::Timestamp;
use dg_engine::{ControlPlane, EngineConfig};
use dg_providers::time::TimeProviderConfig;
use dg_providers::BuiltinProviders;
use dg_storage::audit::AuditEvent;
use serde_json::json;

/// The audit entry of a service key's `scenario_next` call number `n`, for `tenant`.
pub fn tool_call_event(n: u64, tenant: u64) -> AuditEvent {
    AuditEvent {
        principal: format!("key-{n}"),
        role: Some("service".into()),
        tenant_id: Some(tenant),
        namespace_id: Some(1),
        action: "tool_call".into(),
        target: "scenario_next".into(),
        outcome: "ok".into(),
        reason: String::new(),
        request_id: format!("req-{n}"),
        request_sha256: Some("ab".repeat(32)),
        response_sha256: None,
    }
}

/// A one-stage scenario `id` in `namespace` over the time provider, at `spec_version`.
#[allow(dead_code)] // not every test crate that includes this module builds scenarios
pub fn scenario_spec(id: &str, namespace: u64, spec_version: &str) -> ScenarioSpec {
    serde_json::from_value(json!({
        "scenario_id": id, "namespace_id": namespace, "spec_version": spec_version, "policies": [], "schemas": [],
        "conditions": [{"condition_id": "c", "query": {"provider_id": "time", "check_id": "now"}, "comparator": "exists",
                        "expected": null, "policy_tags": []}],
        "stages": [{"stage_id": "s", "entry_packets": [], "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}],
                    "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"}]
    }))
    .unwrap()
}

/// Run `run_id` of scenario `sc` ([`scenario_spec`]) just started in `tenant`/`namespace`.
#[allow(dead_code)]
pub fn started_run(tenant: u64, namespace: u64, run_id: &str) -> RunState {
    let spec = scenario_spec("sc", namespace, "1");
    let providers = BuiltinProviders::default().with_time(TimeProviderConfig::default());
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &providers).unwrap();
    let run_config = RunConfig {
        tenant_id: NonZeroU64::new(tenant).unwrap(),
        namespace_id: NonZeroU64::new(namespace).unwrap(),
        run_id: run_id.into(),
        scenario_id: "sc".into(),
        dispatch_targets: vec![],
        policy_tags: vec![],
    };
    engine.start_run(run_config, Timestamp::Logical(1), true).unwrap()
}
