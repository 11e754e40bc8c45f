#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance 3: the contract's examples parse, validate and hash as the contract's
//! canonicalisation says; every input the contract schema rejects is rejected by the
//! engine's parser with an error that names the field path.

mod support;

use dg_engine::hashing::{canonical_json_bytes, hash_bytes};
use dg_engine::spec::parse_scenario_spec;
use dg_engine::state::RunConfig;
use serde_json::{json, Value};

fn load(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn contract_examples_parse_validate_and_hash() {
    let Some(shared) = support::shared_dir() else { return };
    let contract = shared.join("contract");
    let schema = load(&contract.join("schemas/scenario.schema.json"));
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let example = load(&contract.join("examples/scenario.json"));
    assert!(validator.is_valid(&example), "example must satisfy the contract schema");
    let spec = parse_scenario_spec(&example).unwrap();
    // The example is written in the contract's output spelling (nulls present, optional
    // keys omitted), so its own canonical form must hash to the spec_hash.
    let expected = hash_bytes(&canonical_json_bytes(&example).unwrap());
    assert_eq!(spec.canonical_hash().unwrap(), expected);
    let run_config: RunConfig = serde_json::from_value(load(&contract.join("examples/run-config.json"))).unwrap();
    assert_eq!(run_config.scenario_id, spec.scenario_id);
}

/// Applies `f` to a copy of the example.
fn mutate(example: &Value, f: impl Fn(&mut Value)) -> Value {
    let mut copy = example.clone();
    f(&mut copy);
    copy
}

#[test]
fn schema_rejections_are_rejected_with_the_field_path() {
    let Some(shared) = support::shared_dir() else { return };
    let contract = shared.join("contract");
    let schema = load(&contract.join("schemas/scenario.schema.json"));
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let example = load(&contract.join("examples/scenario.json"));
    type Mutation = (&'static str, Box<dyn Fn(&mut Value)>);
    let cases: Vec<Mutation> = vec![
        ("stages", Box::new(|v| drop(v.as_object_mut().unwrap().remove("stages")))),
        ("stages", Box::new(|v| v["stages"] = json!([]))),
        ("namespace_id", Box::new(|v| v["namespace_id"] = json!(0))),
        ("namespace_id", Box::new(|v| v["namespace_id"] = json!("1"))),
        ("default_tenant_id", Box::new(|v| v["default_tenant_id"] = json!(-5))),
        ("surprise", Box::new(|v| v["surprise"] = json!(true))),
        ("stages[0].on_timeout", Box::new(|v| v["stages"][0]["on_timeout"] = json!("explode"))),
        ("stages[0].advance_to", Box::new(|v| v["stages"][0]["advance_to"] = json!({"kind": "fixed"}))),
        (
            "stages[0].gates[0].requirement",
            Box::new(|v| v["stages"][0]["gates"][0]["requirement"] = json!({"Xor": []})),
        ),
        (
            "stages[0].gates[0].requirement.RequireGroup.min",
            Box::new(|v| v["stages"][0]["gates"][0]["requirement"] = json!({"RequireGroup": {"min": 300, "reqs": []}})),
        ),
        (
            "stages[0].entry_packets[0].payload",
            Box::new(|v| v["stages"][0]["entry_packets"][0]["payload"] = json!({"kind": "yaml", "value": 1})),
        ),
        (
            "stages[0].entry_packets[0].payload: invalid value: integer `256`",
            Box::new(|v| v["stages"][0]["entry_packets"][0]["payload"] = json!({"kind": "bytes", "bytes": [256]})),
        ),
        ("conditions[0].comparator", Box::new(|v| v["conditions"][0]["comparator"] = json!("approximately"))),
        ("policy_tags", Box::new(|v| drop(v["conditions"][1].as_object_mut().unwrap().remove("policy_tags")))),
        ("conditions[1].query.provider_id", Box::new(|v| v["conditions"][1]["query"]["provider_id"] = json!(7))),
        (
            "stages[0].gates[0].trust.min_lane",
            Box::new(|v| v["stages"][0]["gates"][0]["trust"] = json!({"min_lane": "gold"})),
        ),
    ];
    for (path, mutation) in cases {
        let input = mutate(&example, mutation);
        assert!(!validator.is_valid(&input), "test case for {path} must be one the contract schema rejects");
        let err = parse_scenario_spec(&input).expect_err(path);
        let text = err.to_string();
        assert!(text.contains(path), "error for {path} does not name it: {text}");
    }
}
