#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The open-source Decision Gate clients and the contract's own examples, unchanged,
//! against the real daemon:
//! - the Python SDK (`../shared/oss-clients/python-sdk`, installed into a virtual
//!   environment the test makes) and its four examples, configured only through the
//!   appliance's config file (the env provider allowing `DEPLOY_ENV`, as the open-source
//!   recommended config, and a client export root for `ci_gate.py`'s `mkdtemp` directory,
//!   whose `manifest.json` is then read on this host and verified offline);
//! - the contract's `runpack_export` and `runpack_verify` examples (`tooling.json`), whose
//!   absolute `output_dir` is `/var/lib/decision-gate/runpacks/…`: the daemon runs in a
//!   private mount namespace with a tmpfs there (root only, as in CI), listed as its root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::support::{self, Daemon, DaemonOptions};

/// A virtual environment with the open-source SDK installed, made once per test run and
/// kept in the target directory (reinstalled when the SDK's files change).
fn venv_python(sdk: &Path) -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oss-clients-venv");
            let python = venv.join("bin/python");
            let stamp = venv.join("installed-from");
            let wanted = fingerprint(sdk);
            if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && python.exists() {
                return python;
            }
            let _ = std::fs::remove_dir_all(&venv);
            let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().unwrap();
            assert!(made.success(), "python3 -m venv failed");
            // A copy, so the build leaves nothing in ../shared (which may be read-only).
            let copy = venv.join("sdk-src");
            copy_tree(sdk, &copy);
            let out = Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .arg(&copy)
                .output()
                .unwrap();
            assert!(out.status.success(), "pip install of the SDK failed: {}", String::from_utf8_lossy(&out.stderr));
            std::fs::write(&stamp, wanted).unwrap();
            python
        })
        .clone()
}

/// Names, sizes and modification times of the SDK's files.
fn fingerprint(dir: &Path) -> String {
    let mut lines = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                lines.push(format!("{} {} {:?}", entry.path().display(), meta.len(), meta.modified().ok()));
            }
        }
    }
    lines.sort();
    lines.join("\n")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().map(Result::unwrap) {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn default_config() -> String {
    let out = Command::new(support::binary()).args(["config", "default"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_open_source_python_sdk_and_its_four_examples_run_unchanged() {
    let Some(shared) = support::shared_dir() else { return };
    let clients = shared.join("oss-clients");
    let python = venv_python(&clients.join("python-sdk"));
    let work = tempfile::tempdir().unwrap();
    // ci_gate.py exports to tempfile.mkdtemp(): the directory its TMPDIR names, which the
    // operator lists as a client export root.
    let exports = work.path().join("exports");
    std::fs::create_dir(&exports).unwrap();
    let config = format!(
        "{}\n[[providers]]\nname = \"env\"\nconfig = {{ allowlist = [\"DEPLOY_ENV\"], denylist = [], max_value_bytes = 65536, max_key_bytes = 255 }}\n\n[runpacks]\nclient_export_roots = [\"{}\"]\n",
        default_config(),
        exports.display()
    );
    let daemon = Daemon::start_with(DaemonOptions { config: Some(config), plaintext: true, ..Default::default() });
    for example in ["basic_lifecycle.py", "agent_loop.py", "precheck.py", "ci_gate.py"] {
        let out = Command::new(&python)
            .arg(clients.join("python-examples").join(example))
            .env("DG_ENDPOINT", format!("{}/rpc", daemon.base))
            .env("DG_TOKEN", &daemon.key)
            .env("TMPDIR", &exports)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{example}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        let printed: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("null"))
            .unwrap_or_else(|err| panic!("{example} printed no JSON ({err}): {stdout}"));
        assert_ne!(printed["status"], "fatal_error", "{example}: {printed}");
        if example == "ci_gate.py" {
            // The runpack is in the mkdtemp directory: read on this host, verified offline.
            let uri = printed["runpack"]["storage_uri"].as_str().unwrap().to_string();
            let dir = PathBuf::from(uri.strip_prefix("file://").unwrap().trim_end_matches('/'));
            assert!(dir.starts_with(&exports), "{}", dir.display());
            let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
            assert_eq!(manifest["run_id"], "run-ci-1");
            let verified = Command::new(support::binary()).args(["runpack", "verify"]).arg(&dir).output().unwrap();
            assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
        }
    }
}

/// The contract's example of `tool` (its first).
fn contract_example(shared: &Path, tool: &str) -> Value {
    let tools: Vec<Value> =
        serde_json::from_slice(&std::fs::read(shared.join("contract/tooling.json")).unwrap()).unwrap();
    let entry = tools.into_iter().find(|entry| entry["name"] == tool).unwrap();
    entry["examples"][0]["input"].clone()
}

#[test]
fn the_contracts_runpack_examples_run_unchanged() {
    let Some(shared) = support::shared_dir() else { return };
    let export = contract_example(&shared, "runpack_export");
    let verify = contract_example(&shared, "runpack_verify");
    let root = "/var/lib/decision-gate/runpacks";
    assert!(export["output_dir"].as_str().unwrap().starts_with(root), "{export}");
    if !rustix::process::geteuid().is_root() {
        assert!(std::env::var("CI").is_err(), "CI runs as root");
        eprintln!("skipping: a private mount namespace needs root");
        return;
    }
    let host_had_it = Path::new("/var/lib/decision-gate").exists();
    // The daemon sees a tmpfs at /var/lib in its own mount namespace: the host's /var/lib
    // is untouched, and the example's absolute path exists only for it.
    let setup = format!("mount -t tmpfs -o mode=0755 dg-test /var/lib && mkdir -p {root} && exec \"$0\" \"$@\"");
    let launcher = ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup.as_str()];
    let config = format!(
        "{}\n[[providers]]\nname = \"env\"\n\n[runpacks]\nclient_export_roots = [\"{root}\"]\n",
        default_config()
    );
    let daemon = Daemon::start_with(DaemonOptions {
        config: Some(config),
        launcher: Some(launcher.iter().map(|s| (*s).to_string()).collect()),
        bare: true,
        ..Default::default()
    });
    // The scenario and run the examples name: the contract's example scenario, started
    // with the example run config's ids under the example's run id.
    let mut spec: Value =
        serde_json::from_slice(&std::fs::read(shared.join("contract/examples/scenario.json")).unwrap()).unwrap();
    spec["scenario_id"] = export["scenario_id"].clone();
    spec["namespace_id"] = export["namespace_id"].clone();
    spec["default_tenant_id"] = export["tenant_id"].clone();
    let defined = daemon.tool("scenario_define", json!({"spec": spec}));
    assert!(defined.is_ok(), "{defined:?}");
    let started = daemon.tool(
        "scenario_start",
        json!({"scenario_id": export["scenario_id"], "run_config": {"tenant_id": export["tenant_id"],
            "namespace_id": export["namespace_id"], "run_id": export["run_id"], "scenario_id": export["scenario_id"],
            "dispatch_targets": [], "policy_tags": []}, "started_at": {"kind": "logical", "value": 1},
            "issue_entry_packets": false}),
    );
    assert!(started.is_ok(), "{started:?}");
    let exported = daemon.tool("runpack_export", export.clone()).unwrap();
    assert_eq!(exported["manifest"]["run_id"], export["run_id"]);
    let verified = daemon.tool("runpack_verify", verify).unwrap();
    assert_eq!(verified["status"], "pass", "{verified}");
    assert_eq!(Path::new("/var/lib/decision-gate").exists(), host_had_it, "the host's /var/lib is untouched");
}
