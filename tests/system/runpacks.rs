#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Issue 5 end to end: export over MCP, download the signed bundle over HTTPS, verify it
//! offline with only the public key (no daemon, no data directory, empty environment),
//! again after a key rotation; reference runpacks still verify (reported unsigned);
//! client paths cannot leave the store.

use crate::support;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use support::{binary, sample_spec, Daemon};

/// Runs `dg-appliance runpack verify` with nothing but the bundle and key: empty
/// environment, an empty working directory.
pub(crate) fn offline_verify(bundle: &Path, pubkey: Option<&Path>) -> (i32, String) {
    let empty = tempfile::tempdir().unwrap();
    let mut command = Command::new(binary());
    command.env_clear().current_dir(empty.path()).arg("runpack").arg("verify").arg(bundle).arg("--json");
    if let Some(pubkey) = pubkey {
        command.arg("--pubkey").arg(pubkey);
    }
    let output = command.output().unwrap();
    (output.status.code().unwrap(), String::from_utf8_lossy(&output.stdout).to_string())
}

pub(crate) fn download(daemon: &Daemon, path: &str) -> (u16, Vec<u8>) {
    let response = match daemon
        .agent
        .get(&format!("{}{path}", daemon.base))
        .set("authorization", &format!("Bearer {}", daemon.key))
        .call()
    {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(err) => panic!("{err}"),
    };
    let status = response.status();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).unwrap();
    (status, bytes)
}

pub(crate) fn show_public(daemon: &Daemon, into: &Path) {
    let output =
        Command::new(binary()).args(["keys", "show-public", "--data-dir"]).arg(daemon.data_dir()).output().unwrap();
    assert!(output.status.success());
    std::fs::write(into, output.stdout).unwrap();
}

#[test]
fn signed_bundles_verify_offline_before_and_after_rotation() {
    let daemon = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    daemon.tool("scenario_define", json!({"spec": sample_spec("bundle")})).unwrap();
    daemon.tool("scenario_start", json!({"scenario_id": "bundle", "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": "r1",
        "scenario_id": "bundle", "dispatch_targets": [], "policy_tags": []}, "started_at": {"kind": "logical", "value": 1},
        "issue_entry_packets": true})).unwrap();
    daemon.tool("scenario_trigger", json!({"scenario_id": "bundle", "trigger": {"trigger_id": "t", "tenant_id": 2, "namespace_id": 3,
        "run_id": "r1", "kind": "tick", "time": {"kind": "logical", "value": 9}, "source_id": "x", "payload": null, "correlation_id": null}})).unwrap();
    let exported = daemon
        .tool(
            "runpack_export",
            json!({"scenario_id": "bundle", "tenant_id": 2, "namespace_id": 3, "run_id": "r1",
        "generated_at": {"kind": "logical", "value": 10}, "include_verification": true}),
        )
        .unwrap();
    let root = exported["manifest"]["integrity"]["root_hash"]["value"].as_str().unwrap().to_string();

    let (status, bundle) = download(&daemon, "/runpacks/2/3/r1.tar.zst");
    assert_eq!(status, 200);
    let first = work.path().join("first.tar.zst");
    std::fs::write(&first, &bundle).unwrap();
    let ring_v1 = work.path().join("ring-v1.json");
    show_public(&daemon, &ring_v1);

    let (code, out) = offline_verify(&first, Some(&ring_v1));
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["status"], "pass");
    assert_eq!(report["signed"], true);
    assert_eq!(report["details"]["root_hash"], root);

    let rotated =
        Command::new(binary()).args(["keys", "rotate", "--data-dir"]).arg(daemon.data_dir()).output().unwrap();
    assert!(rotated.status.success());
    let ring_v2 = work.path().join("ring-v2.json");
    show_public(&daemon, &ring_v2);
    let (_, bundle2) = download(&daemon, "/runpacks/2/3/r1.tar.zst");
    let second = work.path().join("second.tar.zst");
    std::fs::write(&second, &bundle2).unwrap();
    assert_eq!(offline_verify(&second, Some(&ring_v2)).0, 0, "new bundles verify with the new ring");
    assert_eq!(offline_verify(&first, Some(&ring_v2)).0, 0, "old bundles still verify after rotation");
    let (code, out) = offline_verify(&second, Some(&ring_v1));
    assert_eq!(code, 1, "the old ring does not know the new key: {out}");
    assert!(out.contains("unknown key"), "{out}");

    let mut tampered = bundle.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    let bad = work.path().join("bad.tar.zst");
    std::fs::write(&bad, &tampered).unwrap();
    assert_eq!(offline_verify(&bad, Some(&ring_v2)).0, 1, "a damaged bundle fails");
    let garbage_key = work.path().join("garbage.json");
    std::fs::write(&garbage_key, "not a key").unwrap();
    assert_eq!(offline_verify(&first, Some(&garbage_key)).0, 2, "an unusable key file is a distinct exit code");
    assert_eq!(offline_verify(&first, None).0, 2);

    // The stored, unsigned directory runpack verifies with the open-source manifest rules.
    let (code, out) = offline_verify(&daemon.data_dir().join("runpacks/2/3/r1"), None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"signed\":false"), "{out}");

    let (status, _) = download(&daemon, "/runpacks/2/3/missing.tar.zst");
    assert_eq!(status, 404);
    let anonymous = match daemon.agent.get(&format!("{}/runpacks/2/3/r1.tar.zst", daemon.base)).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r.status(),
        Err(err) => panic!("{err}"),
    };
    assert_eq!(anonymous, 401);
}

#[test]
fn reference_runpacks_still_verify_and_are_reported_unsigned() {
    let Some(shared) = support::shared_dir() else { return };
    for dir in ["golden/golden_time_after_pass", "golden/golden_visibility_packet", "backcompat/v1"] {
        let (code, out) = offline_verify(&shared.join("fixtures/runpacks").join(dir), None);
        assert_eq!(code, 0, "{dir}: {out}");
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["signed"], false);
        assert_eq!(report["status"], "pass");
    }
}

#[test]
fn client_paths_cannot_leave_the_runpack_store() {
    let daemon = Daemon::start();
    daemon.tool("scenario_define", json!({"spec": sample_spec("paths")})).unwrap();
    daemon.tool("scenario_start", json!({"scenario_id": "paths", "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": "r",
        "scenario_id": "paths", "dispatch_targets": [], "policy_tags": []}, "started_at": {"kind": "logical", "value": 1},
        "issue_entry_packets": false})).unwrap();
    for output_dir in ["../../escape", "/tmp/escape", "a/../../b", ""] {
        let err = daemon
            .tool("runpack_export", json!({"scenario_id": "paths", "tenant_id": 2, "namespace_id": 3, "run_id": "r",
                "output_dir": output_dir, "generated_at": {"kind": "logical", "value": 2}, "include_verification": false}))
            .unwrap_err();
        assert_eq!(err["code"], -32602, "{output_dir}: {err}");
    }
    for runpack_dir in ["/etc", "2/3/../../../etc", "../x", "a//b", ""] {
        let err = daemon
            .tool("runpack_verify", json!({"runpack_dir": runpack_dir, "manifest_path": "manifest.json"}))
            .unwrap_err();
        assert_eq!(err["code"], -32602, "{runpack_dir}: {err}");
    }
    // A well-formed name that was never exported (runpack names may have several segments).
    let err =
        daemon.tool("runpack_verify", json!({"runpack_dir": "2/3", "manifest_path": "manifest.json"})).unwrap_err();
    assert_eq!(err["code"], -32004, "{err}");
    assert!(!Path::new("/tmp/escape").exists());
}
