#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance (issue 4, point 4): when the disk fills, writes fail with a clear error, the
//! database stays consistent, and writes succeed again once space returns. Exercised on a
//! real size-limited tmpfs (when this process may mount one) and with SQLite's own page
//! limit (always).

use std::num::NonZeroU64;
use std::process::Command;

use dg_engine::spec::ScenarioSpec;
use dg_engine::state::RunConfig;
use dg_engine::time::Timestamp;
use dg_engine::{ControlPlane, EngineConfig};
use dg_providers::time::TimeProviderConfig;
use dg_providers::BuiltinProviders;
use dg_storage::{Scope, Store, StoreError, StoreLimits};
use serde_json::json;

fn state(run_id: &str, padding: usize) -> dg_engine::RunState {
    let spec: ScenarioSpec = serde_json::from_value(json!({
        "scenario_id": "full", "namespace_id": 1, "spec_version": "x".repeat(padding), "policies": [], "schemas": [],
        "conditions": [], "stages": [{"stage_id": "s", "entry_packets": [], "gates": [], "advance_to": {"kind": "terminal"},
                                      "timeout": null, "on_timeout": "fail"}]
    }))
    .unwrap();
    let providers = BuiltinProviders::default().with_time(TimeProviderConfig::default());
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &providers).unwrap();
    let run_config = RunConfig {
        tenant_id: NonZeroU64::MIN,
        namespace_id: NonZeroU64::MIN,
        run_id: run_id.into(),
        scenario_id: "full".into(),
        dispatch_targets: vec![],
        policy_tags: vec![],
    };
    let mut state = engine.start_run(run_config, Timestamp::Logical(0), false).unwrap();
    // Padding in a free-form slot makes each document big enough to fill space quickly.
    state.dispatch_targets =
        (0..padding / 64).map(|i| dg_engine::state::DispatchTarget::Channel { channel: format!("{i:0>60}") }).collect();
    state
}

/// Writes until a write fails; returns the ids that were acknowledged and the error.
fn fill(store: &Store, prefix: &str) -> (Vec<String>, StoreError) {
    let mut written = Vec::new();
    for n in 0..100_000 {
        let id = format!("{prefix}-{n}");
        match store.create_run(&state(&id, 16 * 1024), dg_storage::audit::AuditBatch::none()) {
            Ok(_) => written.push(id),
            Err(err) => return (written, err),
        }
    }
    panic!("the limit was never reached");
}

fn assert_consistent(store: &Store, written: &[String]) {
    for id in written {
        assert!(store.get_run(Scope::new(1, 1), id).unwrap().is_some(), "acknowledged {id} lost");
    }
    assert!(store.check().unwrap().ok());
}

#[test]
fn page_limit_full_fails_cleanly_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let limits = StoreLimits { max_database_bytes: Some(1024 * 1024), ..StoreLimits::default() };
    let store = Store::open(&dir.path().join("state.db"), limits).unwrap();
    let (written, err) = fill(&store, "a");
    assert!(err.is_disk_full(), "a full database is reported as such: {err}");
    assert!(err.to_string().contains("full"), "{err}");
    assert!(!written.is_empty());
    assert_consistent(&store, &written);
    store.set_max_database_bytes(Some(64 * 1024 * 1024)).unwrap();
    store.create_run(&state("after-space-returned", 16 * 1024), dg_storage::audit::AuditBatch::none()).unwrap();
    assert_consistent(&store, &written);
}

#[test]
fn real_full_filesystem_fails_cleanly_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&mount).status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("skipping the tmpfs variant: this process may not mount (the page-limit variant still runs)");
        return;
    }
    let result = std::panic::catch_unwind(|| {
        let store = Store::open(&mount.join("state.db"), StoreLimits::default()).unwrap();
        let (written, err) = fill(&store, "b");
        assert!(err.is_disk_full(), "ENOSPC is reported as a full disk: {err}");
        assert_consistent(&store, &written);
        let grown = Command::new("mount").args(["-o", "remount,size=16m"]).arg(&mount).status().unwrap();
        assert!(grown.success());
        store.create_run(&state("after-space-returned", 16 * 1024), dg_storage::audit::AuditBatch::none()).unwrap();
        assert_consistent(&store, &written);
        drop(store);
    });
    let _ = Command::new("umount").arg(&mount).status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
