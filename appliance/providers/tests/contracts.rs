#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The built-in provider contracts served by the appliance equal the reference contracts.

use std::path::Path;

use dg_providers::contracts::{builtin_contracts, validate_capability};
use serde_json::{json, Value};

fn shared() -> Option<std::path::PathBuf> {
    let dir = std::env::var("DG_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    if dir.join("contract/providers.json").is_file() {
        return Some(dir);
    }
    assert!(std::env::var("CI").is_err(), "CI run without ../shared");
    eprintln!("skipping: ../shared not found");
    None
}

#[test]
fn builtin_contracts_match_the_reference() {
    let Some(shared) = shared() else { return };
    let reference: Value =
        serde_json::from_slice(&std::fs::read(shared.join("contract/providers.json")).unwrap()).unwrap();
    let ours = serde_json::to_value(builtin_contracts()).unwrap();
    assert_eq!(ours, reference);
    assert_eq!(builtin_contracts().len(), 4);
}

#[test]
fn capability_validation_uses_the_contract_codes() {
    let condition = |v: Value| serde_json::from_value(v).unwrap();
    let all = |_: &str| true;
    let none = |_: &str| false;
    let ok = condition(
        json!({"condition_id": "c", "query": {"provider_id": "time", "check_id": "after", "params": {"timestamp": 5}},
        "comparator": "equals", "expected": true, "policy_tags": []}),
    );
    validate_capability(&ok, &all).unwrap();
    assert!(validate_capability(&ok, &none).unwrap_err().starts_with("provider_missing:"));
    let cases = [
        (json!({"provider_id": "time", "check_id": "later", "params": {}}), "equals", json!(true), "check_missing:"),
        (json!({"provider_id": "time", "check_id": "after"}), "equals", json!(true), "params_missing:"),
        (
            json!({"provider_id": "time", "check_id": "after", "params": {"timestamp": []}}),
            "equals",
            json!(true),
            "params_invalid:",
        ),
        (
            json!({"provider_id": "time", "check_id": "after", "params": {"timestamp": 1}}),
            "equals",
            json!("yes"),
            "expected_invalid:",
        ),
        (
            json!({"provider_id": "time", "check_id": "after", "params": {"timestamp": 1}}),
            "greater_than",
            json!(true),
            "comparator_not_allowed:",
        ),
    ];
    for (query, comparator, expected, code) in cases {
        let c = condition(
            json!({"condition_id": "c", "query": query, "comparator": comparator, "expected": expected, "policy_tags": []}),
        );
        let err = validate_capability(&c, &all).unwrap_err();
        assert!(err.starts_with(code), "{err}");
    }
}
