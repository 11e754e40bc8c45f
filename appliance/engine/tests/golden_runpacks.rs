#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance 1: replaying each golden/backcompat reference runpack reproduces it byte
//! for byte, root hash included; and the verifier accepts the untouched originals.

mod support;

use std::num::NonZeroU64;
use std::path::Path;

use dg_engine::runpack::{build_runpack, verify_runpack, ExportOptions, RunpackSecurity, VerificationStatus};
use dg_engine::spec::ScenarioSpec;
use dg_engine::state::{RunConfig, TriggerRecord};
use dg_engine::time::Timestamp;
use dg_engine::{ControlPlane, EngineConfig};
use dg_providers::time::TimeProviderConfig;
use dg_providers::BuiltinProviders;

fn reference_runpacks(shared: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs = Vec::new();
    for group in ["golden", "backcompat"] {
        let base = shared.join("fixtures/runpacks").join(group);
        for entry in std::fs::read_dir(&base).unwrap() {
            let path = entry.unwrap().path();
            if path.join("manifest.json").is_file() {
                dirs.push(path);
            }
        }
    }
    dirs.sort();
    dirs
}

fn replay(dir: &Path) -> dg_engine::runpack::Runpack {
    let spec: ScenarioSpec =
        serde_json::from_slice(&std::fs::read(dir.join("artifacts/scenario_spec.json")).unwrap()).unwrap();
    let triggers: Vec<TriggerRecord> =
        serde_json::from_slice(&std::fs::read(dir.join("artifacts/triggers.json")).unwrap()).unwrap();
    let last = triggers.last().expect("fixture has a trigger").event.clone();
    let issue_entry_packets = triggers.first().is_some_and(|t| t.event.trigger_id == "init");
    let providers = BuiltinProviders::default().with_time(TimeProviderConfig::default());
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &providers).unwrap().with_availability(&providers);
    let one = NonZeroU64::MIN;
    let run_config = RunConfig {
        tenant_id: one,
        namespace_id: one,
        run_id: last.run_id.clone(),
        scenario_id: spec.scenario_id.clone(),
        dispatch_targets: vec![],
        policy_tags: vec![],
    };
    let mut state = engine.start_run(run_config, Timestamp::Logical(1), issue_entry_packets).unwrap();
    engine.trigger(&mut state, &last).unwrap();
    let options = ExportOptions {
        generated_at: Timestamp::Logical(10),
        include_verification: true,
        anchor_policy: None,
        security: Some(RunpackSecurity { dev_permissive: false, namespace_authority: "dg_registry".into() }),
    };
    build_runpack(&spec, &state, &options).unwrap()
}

#[test]
fn replaying_reference_runpacks_reproduces_every_byte() {
    let Some(shared) = support::shared_dir() else { return };
    let dirs = reference_runpacks(&shared);
    assert!(dirs.len() >= 3, "expected golden and backcompat fixtures, found {dirs:?}");
    for dir in dirs {
        let runpack = replay(&dir);
        let expected_manifest = std::fs::read(dir.join("manifest.json")).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&runpack.manifest_bytes),
            String::from_utf8_lossy(&expected_manifest),
            "manifest differs for {}",
            dir.display()
        );
        let expected_files = support::read_tree(&dir, "manifest.json");
        let produced: std::collections::BTreeMap<_, _> = runpack.files.iter().cloned().collect();
        assert_eq!(produced.keys().collect::<Vec<_>>(), expected_files.keys().collect::<Vec<_>>());
        for (path, bytes) in &expected_files {
            assert_eq!(
                String::from_utf8_lossy(&produced[path]),
                String::from_utf8_lossy(bytes),
                "{path} differs for {}",
                dir.display()
            );
        }
    }
}

#[test]
fn appliance_verifier_accepts_untouched_reference_runpacks() {
    let Some(shared) = support::shared_dir() else { return };
    for dir in reference_runpacks(&shared) {
        let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
        let files = support::read_tree(&dir, "manifest.json");
        let report = verify_runpack(&manifest, &files).unwrap();
        assert_eq!(report.status, VerificationStatus::Pass, "{}: {:?}", dir.display(), report.errors);
        assert_eq!(report.checked_files, 8);
    }
}
