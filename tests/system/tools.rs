#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance (issue 3, point 1): a black-box session drives every one of the 18 tools
//! over HTTPS against the real binary and validates each request and each response
//! against the contract's `tooling.json` schemas.

use crate::support;

use std::collections::BTreeMap;

use serde_json::{json, Value};
use support::{sample_spec, Daemon};

struct Contract {
    inputs: BTreeMap<String, jsonschema::Validator>,
    outputs: BTreeMap<String, jsonschema::Validator>,
}

fn load_contract(shared: &std::path::Path) -> Contract {
    let tooling: Vec<Value> =
        serde_json::from_slice(&std::fs::read(shared.join("contract/tooling.json")).unwrap()).unwrap();
    let scenario_schema: Value =
        serde_json::from_slice(&std::fs::read(shared.join("contract/schemas/scenario.schema.json")).unwrap()).unwrap();
    let build = |schema: &Value| {
        jsonschema::options()
            .with_resource(
                "decision-gate://contract/schemas/scenario.schema.json",
                jsonschema::Resource::from_contents(scenario_schema.clone()).unwrap(),
            )
            .build(schema)
            .unwrap()
    };
    let mut inputs = BTreeMap::new();
    let mut outputs = BTreeMap::new();
    for tool in tooling {
        let name = tool["name"].as_str().unwrap().to_string();
        inputs.insert(name.clone(), build(&tool["input_schema"]));
        outputs.insert(name, build(&tool["output_schema"]));
    }
    Contract { inputs, outputs }
}

fn errors(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path)).collect()
}

/// Calls a tool after checking the request against its input schema, then checks the
/// output against its output schema.
fn checked(daemon: &Daemon, contract: &Contract, called: &mut Vec<String>, name: &str, args: Value) -> Value {
    let input_errors = errors(&contract.inputs[name], &args);
    assert!(input_errors.is_empty(), "request for {name} violates the contract: {input_errors:?}");
    let output = daemon.tool(name, args).unwrap_or_else(|err| panic!("{name} failed: {err}"));
    let output_errors = errors(&contract.outputs[name], &output);
    assert!(output_errors.is_empty(), "response of {name} violates the contract: {output_errors:?}\n{output}");
    called.push(name.to_string());
    output
}

#[test]
fn every_tool_over_https_matches_the_contract() {
    let Some(shared) = support::shared_dir() else { return };
    let contract = load_contract(&shared);
    let daemon = Daemon::start();
    let mut called = Vec::new();

    let (status, listed) = daemon.rpc("/rpc", &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    assert_eq!(status, 200);
    let names: Vec<&str> =
        listed["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 18);
    assert_eq!(
        names.iter().copied().collect::<std::collections::BTreeSet<_>>(),
        contract.inputs.keys().map(String::as_str).collect()
    );
    assert!(listed["result"]["tools"][0]["input_schema"].is_object());

    let spec = sample_spec("tools-tour");
    let defined = checked(&daemon, &contract, &mut called, "scenario_define", json!({"spec": spec}));
    assert_eq!(defined["scenario_id"], "tools-tour");
    let run_config = json!({"tenant_id": 2, "namespace_id": 3, "run_id": "run-1", "scenario_id": "tools-tour",
                            "dispatch_targets": [{"kind": "agent", "agent_id": "a1"}], "policy_tags": []});
    checked(
        &daemon,
        &contract,
        &mut called,
        "scenario_start",
        json!({"scenario_id": "tools-tour", "run_config": run_config,
        "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": true}),
    );
    let held = checked(
        &daemon,
        &contract,
        &mut called,
        "scenario_next",
        json!({"scenario_id": "tools-tour",
        "request": {"run_id": "run-1", "tenant_id": 2, "namespace_id": 3, "trigger_id": "n1", "agent_id": "a1",
                    "time": {"kind": "logical", "value": 3}, "correlation_id": "c-1"}, "feedback": "trace"}),
    );
    assert_eq!(held["decision"]["outcome"]["kind"], "hold");
    assert_eq!(held["feedback"]["level"], "trace");
    checked(
        &daemon,
        &contract,
        &mut called,
        "scenario_submit",
        json!({"scenario_id": "tools-tour",
        "request": {"run_id": "run-1", "tenant_id": 2, "namespace_id": 3, "submission_id": "s1",
                    "payload": {"kind": "json", "value": {"note": "hi"}}, "content_type": "application/json",
                    "submitted_at": {"kind": "logical", "value": 4}, "correlation_id": null}}),
    );
    let advanced = checked(
        &daemon,
        &contract,
        &mut called,
        "scenario_trigger",
        json!({"scenario_id": "tools-tour",
        "trigger": {"trigger_id": "t2", "tenant_id": 2, "namespace_id": 3, "run_id": "run-1", "kind": "tick",
                    "time": {"kind": "logical", "value": 9}, "source_id": "clock", "payload": null, "correlation_id": null}}),
    );
    assert_eq!(advanced["decision"]["outcome"]["kind"], "advance");
    assert_eq!(advanced["packets"][0]["receipts"][0]["dispatcher"], "mcp");
    let status = checked(
        &daemon,
        &contract,
        &mut called,
        "scenario_status",
        json!({"scenario_id": "tools-tour",
        "request": {"run_id": "run-1", "tenant_id": 2, "namespace_id": 3, "requested_at": {"kind": "logical", "value": 10},
                    "correlation_id": null}}),
    );
    assert_eq!(status["current_stage_id"], "done");
    let evidence = checked(
        &daemon,
        &contract,
        &mut called,
        "evidence_query",
        json!({
        "query": {"provider_id": "time", "check_id": "now"},
        "context": {"tenant_id": 2, "namespace_id": 3, "run_id": "run-1", "scenario_id": "tools-tour", "stage_id": "wait",
                    "trigger_id": "q", "trigger_time": {"kind": "logical", "value": 42}, "correlation_id": null}}),
    );
    assert!(evidence["result"]["value"].is_null(), "values are redacted by default");
    assert!(evidence["result"]["evidence_hash"].is_object());
    let exported = checked(
        &daemon,
        &contract,
        &mut called,
        "runpack_export",
        json!({"scenario_id": "tools-tour",
        "tenant_id": 2, "namespace_id": 3, "run_id": "run-1", "generated_at": {"kind": "logical", "value": 11},
        "include_verification": true}),
    );
    assert_eq!(exported["report"]["status"], "pass");
    let verified = checked(
        &daemon,
        &contract,
        &mut called,
        "runpack_verify",
        json!({"runpack_dir": "2/3/run-1", "manifest_path": "manifest.json"}),
    );
    assert_eq!(verified["status"], "pass");
    let providers = checked(&daemon, &contract, &mut called, "providers_list", json!({}));
    assert_eq!(providers["providers"][0]["provider_id"], "time");
    checked(&daemon, &contract, &mut called, "provider_contract_get", json!({"provider_id": "time"}));
    checked(
        &daemon,
        &contract,
        &mut called,
        "provider_check_schema_get",
        json!({"provider_id": "time", "check_id": "after"}),
    );
    let record = json!({"tenant_id": 2, "namespace_id": 3, "schema_id": "late-shape", "version": "v1",
        "schema": {"type": "object", "properties": {"late": {"type": "boolean"}}, "additionalProperties": false},
        "description": "asserted lateness", "created_at": {"kind": "unix_millis", "value": 1700000000000i64}});
    checked(&daemon, &contract, &mut called, "schemas_register", json!({"record": record}));
    let list = checked(
        &daemon,
        &contract,
        &mut called,
        "schemas_list",
        json!({"tenant_id": 2, "namespace_id": 3, "limit": 10}),
    );
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    checked(
        &daemon,
        &contract,
        &mut called,
        "schemas_get",
        json!({"tenant_id": 2, "namespace_id": 3, "schema_id": "late-shape", "version": "v1"}),
    );
    let scenarios =
        checked(&daemon, &contract, &mut called, "scenarios_list", json!({"tenant_id": 2, "namespace_id": 3}));
    assert_eq!(scenarios["items"][0]["spec_hash"], defined["spec_hash"]);
    let precheck = checked(
        &daemon,
        &contract,
        &mut called,
        "precheck",
        json!({"tenant_id": 2, "namespace_id": 3,
        "scenario_id": "tools-tour", "data_shape": {"schema_id": "late-shape", "version": "v1"}, "payload": {"late": true}}),
    );
    assert_eq!(precheck["decision"]["kind"], "hold", "asserted evidence does not meet the verified default");
    let docs = checked(
        &daemon,
        &contract,
        &mut called,
        "decision_gate_docs_search",
        json!({"query": "trust lanes", "max_sections": 2}),
    );
    assert_eq!(docs["sections"].as_array().unwrap().len(), 2);

    called.sort();
    called.dedup();
    assert_eq!(called.len(), 18, "every tool was exercised: {called:?}");
}

#[test]
fn contract_errors_keep_their_codes() {
    let daemon = Daemon::start();
    let spec = sample_spec("errs");
    daemon.tool("scenario_define", json!({"spec": spec})).unwrap();
    let mut changed = spec.clone();
    changed["spec_version"] = json!("2");
    assert_eq!(daemon.tool("scenario_define", json!({"spec": changed})).unwrap_err()["code"], -32009);
    let missing = daemon.tool("scenario_start", json!({"scenario_id": "nope", "run_config": {"tenant_id": 2, "namespace_id": 3,
        "run_id": "r", "scenario_id": "nope", "dispatch_targets": [], "policy_tags": []}, "started_at": {"kind": "logical", "value": 1},
        "issue_entry_packets": false}));
    assert_eq!(missing.unwrap_err()["code"], -32004);
    let no_run = daemon.tool(
        "scenario_status",
        json!({"scenario_id": "errs", "request": {"run_id": "ghost", "tenant_id": 2,
        "namespace_id": 3, "requested_at": {"kind": "logical", "value": 1}, "correlation_id": null}}),
    );
    let err = no_run.unwrap_err();
    assert_eq!(err["code"], -32030);
    assert_eq!(err["message"], "run not found: ghost");
    let mut bad = sample_spec("bad");
    bad["conditions"][0]["comparator"] = json!("greater_than");
    let err = daemon.tool("scenario_define", json!({"spec": bad})).unwrap_err();
    assert_eq!(err["code"], -32602);
    assert!(err["message"].as_str().unwrap().starts_with("comparator_not_allowed:"), "{err}");
}
