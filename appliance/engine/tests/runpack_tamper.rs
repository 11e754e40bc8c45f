#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance 5: the verifier rejects every tampering of a runpack: a changed byte in any
//! artifact, a missing or extra file, an edited manifest field. Untouched runpacks pass.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use dg_engine::runpack::{build_runpack, verify_runpack, ExportOptions, RunpackSecurity, VerificationStatus};
use dg_engine::spec::ScenarioSpec;
use dg_engine::state::{DispatchTarget, RunConfig, TriggerEvent, TriggerKind};
use dg_engine::time::Timestamp;
use dg_engine::{ControlPlane, EngineConfig};
use dg_providers::time::TimeProviderConfig;
use dg_providers::BuiltinProviders;
use serde_json::{json, Value};

fn sample_runpack() -> (Vec<u8>, BTreeMap<String, Vec<u8>>) {
    let spec: ScenarioSpec = serde_json::from_value(json!({
        "scenario_id": "tamper", "namespace_id": 5, "spec_version": "1", "default_tenant_id": 3,
        "policies": [], "schemas": [],
        "conditions": [{"condition_id": "after", "query": {"provider_id": "time", "check_id": "after", "params": {"timestamp": 0}},
                        "comparator": "equals", "expected": true, "policy_tags": []}],
        "stages": [
            {"stage_id": "s1", "entry_packets": [{"packet_id": "p", "schema_id": "x", "content_type": "application/json",
              "visibility_labels": [], "policy_tags": [], "expiry": null, "payload": {"kind": "json", "value": {"k": 1}}}],
             "gates": [{"gate_id": "g", "requirement": {"Condition": "after"}}],
             "advance_to": {"kind": "linear"}, "timeout": null, "on_timeout": "fail"},
            {"stage_id": "s2", "entry_packets": [], "gates": [], "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"}
        ]
    }))
    .unwrap();
    let providers = BuiltinProviders::default().with_time(TimeProviderConfig::default());
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &providers).unwrap();
    let run_config = RunConfig {
        tenant_id: NonZeroU64::new(3).unwrap(),
        namespace_id: NonZeroU64::new(5).unwrap(),
        run_id: "run-t".into(),
        scenario_id: "tamper".into(),
        dispatch_targets: vec![DispatchTarget::Channel { channel: "ops".into() }],
        policy_tags: vec![],
    };
    let mut state = engine.start_run(run_config, Timestamp::Logical(1), true).unwrap();
    let event = TriggerEvent {
        trigger_id: "t1".into(),
        tenant_id: state.tenant_id,
        namespace_id: state.namespace_id,
        run_id: "run-t".into(),
        kind: TriggerKind::ExternalEvent,
        time: Timestamp::Logical(2),
        source_id: "x".into(),
        payload: None,
        correlation_id: None,
    };
    engine.trigger(&mut state, &event).unwrap();
    let options = ExportOptions {
        generated_at: Timestamp::Logical(10),
        include_verification: true,
        anchor_policy: None,
        security: Some(RunpackSecurity { dev_permissive: false, namespace_authority: "dg_registry".into() }),
    };
    let runpack = build_runpack(&spec, &state, &options).unwrap();
    (runpack.manifest_bytes, runpack.files.into_iter().collect())
}

fn assert_rejected(manifest: &[u8], files: &BTreeMap<String, Vec<u8>>, what: &str) {
    match verify_runpack(manifest, files) {
        Err(_) => {}
        Ok(report) => {
            assert_eq!(report.status, VerificationStatus::Fail, "{what} was accepted");
            assert!(!report.errors.is_empty(), "{what}: failing report without errors");
        }
    }
}

#[test]
fn untouched_runpack_verifies() {
    let (manifest, files) = sample_runpack();
    let report = verify_runpack(&manifest, &files).unwrap();
    assert_eq!(report.status, VerificationStatus::Pass, "{:?}", report.errors);
    assert_eq!(report.checked_files, 8);
}

#[test]
fn every_changed_byte_of_every_artifact_is_detected() {
    let (manifest, files) = sample_runpack();
    for (path, bytes) in &files {
        for index in 0..bytes.len() {
            let mut tampered = files.clone();
            tampered.get_mut(path).unwrap()[index] ^= 0x01;
            let report = verify_runpack(&manifest, &tampered).unwrap();
            assert!(report.errors.contains(&format!("hash mismatch for {path}")), "{path}[{index}] not detected");
        }
    }
}

#[test]
fn missing_and_extra_files_are_detected() {
    let (manifest, files) = sample_runpack();
    for path in files.keys() {
        let mut fewer = files.clone();
        fewer.remove(path);
        assert_rejected(&manifest, &fewer, &format!("missing {path}"));
    }
    let mut extra = files.clone();
    extra.insert("artifacts/evil.json".into(), b"{}".to_vec());
    let report = verify_runpack(&manifest, &extra).unwrap();
    assert!(report.errors.iter().any(|e| e.contains("unexpected file")), "{:?}", report.errors);
}

/// Every manifest field that an artifact determines, edited one at a time.
#[test]
fn every_edited_manifest_field_is_detected() {
    let (manifest, files) = sample_runpack();
    let original: Value = serde_json::from_slice(&manifest).unwrap();
    type Edit = (&'static str, Box<dyn Fn(&mut Value)>);
    let edits: Vec<Edit> = vec![
        ("run_id", Box::new(|m| m["run_id"] = json!("run-other"))),
        ("tenant_id", Box::new(|m| m["tenant_id"] = json!(4))),
        ("namespace_id", Box::new(|m| m["namespace_id"] = json!(6))),
        ("scenario_id", Box::new(|m| m["scenario_id"] = json!("other"))),
        ("spec_hash", Box::new(|m| m["spec_hash"]["value"] = json!("0".repeat(64)))),
        ("hash_algorithm", Box::new(|m| m["hash_algorithm"] = json!("md5"))),
        ("manifest_version", Box::new(|m| m["manifest_version"] = json!("v2"))),
        ("verifier_mode", Box::new(|m| m["verifier_mode"] = json!("trust_me"))),
        ("root_hash", Box::new(|m| m["integrity"]["root_hash"]["value"] = json!("f".repeat(64)))),
        ("file_hash", Box::new(|m| m["integrity"]["file_hashes"][1]["hash"]["value"] = json!("e".repeat(64)))),
        ("file_path", Box::new(|m| m["integrity"]["file_hashes"][1]["path"] = json!("../../etc/passwd"))),
        ("dropped_file_hash", Box::new(|m| drop(m["integrity"]["file_hashes"].as_array_mut().unwrap().remove(2)))),
        ("artifact_hash", Box::new(|m| m["artifacts"][0]["hash"]["value"] = json!("d".repeat(64)))),
        ("artifact_kind", Box::new(|m| m["artifacts"][3]["kind"] = json!("packet_log"))),
        ("artifact_path", Box::new(|m| m["artifacts"][2]["path"] = json!("artifacts/other.json"))),
        ("dropped_artifact", Box::new(|m| drop(m["artifacts"].as_array_mut().unwrap().pop()))),
    ];
    for (name, edit) in edits {
        let mut edited = original.clone();
        edit(&mut edited);
        let bytes = serde_json::to_vec(&edited).unwrap();
        assert_rejected(&bytes, &files, name);
    }
}
