#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The open-source clients' runpack flow (issue: runpack names): whatever `output_dir` a
//! caller gives `runpack_export` is accepted unchanged as `runpack_dir` by `runpack_verify`
//! and as the name in the download path, for each role and across tenants; absolute paths
//! are honoured only beneath an operator's `[runpacks] client_export_roots`, with the
//! hardened writer, and refused otherwise with a message that names the setting.

use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};

use crate::support::{self, Client, Daemon, DaemonOptions};

fn spec_for(tenant: u64, scenario: &str) -> Value {
    let mut spec = support::sample_spec(scenario);
    spec["default_tenant_id"] = json!(tenant);
    spec
}

fn start_args(tenant: u64, scenario: &str, run: &str) -> Value {
    json!({"scenario_id": scenario, "run_config": {"tenant_id": tenant, "namespace_id": 3, "run_id": run,
        "scenario_id": scenario, "dispatch_targets": [], "policy_tags": []},
        "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false})
}

fn export_args(tenant: u64, scenario: &str, run: &str, output_dir: &str) -> Value {
    json!({"scenario_id": scenario, "tenant_id": tenant, "namespace_id": 3, "run_id": run, "output_dir": output_dir,
        "generated_at": {"kind": "logical", "value": 10}, "include_verification": false})
}

fn issue(daemon: &Daemon, role: &str, tenant: u64) -> String {
    let mut args = json!({"role": role, "label": format!("{role}-{tenant}")});
    if role != "org_admin" {
        args["tenant_id"] = json!(tenant);
    }
    if role == "service" {
        args["namespaces"] = json!([3]);
    }
    daemon.admin("key_issue", args).unwrap()["token"].as_str().unwrap().to_string()
}

/// GETs a download: status, body, and the `x-dg-run-id` and `content-disposition` headers.
fn download_with_headers(daemon: &Daemon, token: &str, path: &str) -> (u16, Vec<u8>, String, String) {
    let response =
        daemon.agent.get(&format!("{}{path}", daemon.base)).set("authorization", &format!("Bearer {token}")).call();
    match response {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            let run = r.header("x-dg-run-id").unwrap_or_default().to_string();
            let disposition = r.header("content-disposition").unwrap_or_default().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes).unwrap();
            (status, bytes, run, disposition)
        }
        Err(err) => panic!("{err}"),
    }
}

fn download(daemon: &Daemon, token: &str, path: &str) -> (u16, Vec<u8>) {
    let (status, bytes, _, _) = download_with_headers(daemon, token, path);
    (status, bytes)
}

#[test]
fn export_verify_and_download_take_the_same_relative_name_for_every_role_and_tenant() {
    let daemon = Daemon::start();
    daemon.register(4, 3);
    let cert = daemon.data_dir().join("tls/cert.pem");
    let ring = daemon.dir.path().join("ring.json");
    let shown = std::process::Command::new(support::binary())
        .args(["keys", "show-public", "--data-dir"])
        .arg(daemon.data_dir())
        .output()
        .unwrap();
    std::fs::write(&ring, &shown.stdout).unwrap();
    for tenant in [2u64, 4] {
        daemon.tool("scenario_define", json!({"spec": spec_for(tenant, &format!("names-{tenant}"))})).unwrap();
    }
    for role in ["org_admin", "tenant_admin", "auditor", "service"] {
        for tenant in [2u64, 4] {
            let scenario = format!("names-{tenant}");
            let run = format!("{role}-run");
            daemon.tool("scenario_start", start_args(tenant, &scenario, &run)).unwrap();
            let token = issue(&daemon, role, tenant);
            let client = Client::new(&daemon.base, &token, &cert);
            // The same name in both tenants: each tenant's runpack is its own.
            let name = format!("exports/{role}");
            let args = export_args(tenant, &scenario, &run, &name);
            let exported = if role == "auditor" {
                // Auditors read: the policy table gives them verify and download, not export
                // (which writes into the store). A writer exports; the auditor uses the name.
                let refused = client.tool("runpack_export", args.clone()).unwrap().unwrap_err();
                assert_eq!(refused["code"], -32003, "{refused}");
                let writer = Client::new(&daemon.base, &issue(&daemon, "service", tenant), &cert);
                writer.tool("runpack_export", args).unwrap()
            } else {
                client.tool("runpack_export", args).unwrap()
            };
            let exported = exported.unwrap_or_else(|err| panic!("{role} in tenant {tenant}: export: {err}"));
            assert_eq!(exported["manifest"]["tenant_id"], tenant);
            assert_eq!(exported["storage_uri"], format!("dg+runpack://{tenant}/3/{name}/"));
            // The org admin reaches both tenants: it names the scope (an appliance extension);
            // every other role verifies with the identical string alone.
            let mut verify = json!({"runpack_dir": name, "manifest_path": "manifest.json"});
            if role == "org_admin" {
                let ambiguous = client.tool("runpack_verify", verify.clone()).unwrap();
                if tenant == 4 {
                    let err = ambiguous.expect_err("the same name in two reachable tenants is ambiguous");
                    assert_eq!(err["code"], -32602, "{err}");
                    assert!(err["message"].as_str().unwrap().contains("tenant_id and namespace_id"), "{err}");
                }
                verify["tenant_id"] = json!(tenant);
                verify["namespace_id"] = json!(3);
            }
            let verified = client.tool("runpack_verify", verify).unwrap();
            let verified = verified.unwrap_or_else(|err| panic!("{role} in tenant {tenant}: verify: {err}"));
            assert_eq!(verified["status"], "pass", "{role} in tenant {tenant}: {verified}");
            let (status, bundle, bundle_run, disposition) =
                download_with_headers(&daemon, &token, &format!("/runpacks/{tenant}/3/{name}.tar.zst"));
            assert_eq!(status, 200, "{role} in tenant {tenant}: {}", String::from_utf8_lossy(&bundle));
            // The URL names the runpack as exported; the file is named after its run.
            assert_eq!(bundle_run, run);
            assert_eq!(disposition, format!("attachment; filename=\"{run}.tar.zst\""));
            let file = daemon.dir.path().join(format!("{role}-{tenant}.tar.zst"));
            std::fs::write(&file, &bundle).unwrap();
            let offline = std::process::Command::new(support::binary())
                .args(["runpack", "verify"])
                .arg(&file)
                .arg("--pubkey")
                .arg(&ring)
                .output()
                .unwrap();
            assert!(offline.status.success(), "{}", String::from_utf8_lossy(&offline.stderr));
        }
    }
    // Tenant 2's service key cannot reach tenant 4's runpack of the same name.
    let token = issue(&daemon, "service", 2);
    let (status, _) = download(&daemon, &token, "/runpacks/4/3/exports/service.tar.zst");
    assert_eq!(status, 403);
}

#[test]
fn an_absolute_output_dir_without_export_roots_is_refused_with_what_to_do() {
    let daemon = Daemon::start();
    daemon.tool("scenario_define", json!({"spec": support::sample_spec("abs")})).unwrap();
    daemon.tool("scenario_start", start_args(2, "abs", "r")).unwrap();
    let target = daemon.dir.path().join("somewhere");
    let err = daemon.tool("runpack_export", export_args(2, "abs", "r", target.to_str().unwrap())).unwrap_err();
    assert_eq!(err["code"], -32602, "{err}");
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("client_export_roots") && message.contains("relative name"), "{message}");
    assert!(!target.exists(), "nothing was written");
}

/// A daemon with one shared export root and one root limited to tenant 4.
fn daemon_with_roots(dir: &tempfile::TempDir) -> (Daemon, std::path::PathBuf, std::path::PathBuf) {
    let shared = dir.path().join("exports");
    let only4 = dir.path().join("exports-t4");
    for root in [&shared, &only4] {
        std::fs::create_dir_all(root).unwrap();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let default = std::process::Command::new(support::binary()).args(["config", "default"]).output().unwrap().stdout;
    let config = format!(
        "{}\n[runpacks]\nclient_export_roots = [\"{}\", {{ path = \"{}\", tenant_id = 4 }}]\n",
        String::from_utf8(default).unwrap(),
        shared.display(),
        only4.display()
    );
    let daemon = Daemon::start_with(DaemonOptions { config: Some(config), ..Default::default() });
    daemon.register(4, 3);
    (daemon, shared, only4)
}

#[test]
fn with_export_roots_an_absolute_output_dir_is_written_there_and_verified_offline() {
    let roots = tempfile::tempdir().unwrap();
    let (daemon, shared, only4) = daemon_with_roots(&roots);
    daemon.tool("scenario_define", json!({"spec": support::sample_spec("co")})).unwrap();
    daemon.tool("scenario_start", start_args(2, "co", "r")).unwrap();
    // As the open-source examples do: a fresh temporary directory under the root.
    let out = tempfile::Builder::new().prefix("decision-gate-runpack-").tempdir_in(&shared).unwrap();
    let out_str = out.path().to_str().unwrap().to_string();
    let exported = daemon.tool("runpack_export", export_args(2, "co", "r", &out_str)).unwrap();
    assert_eq!(exported["storage_uri"], format!("file://{out_str}/"));
    // A tool on the same host reads the files there.
    let manifest: Value = serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["run_id"], "r");
    let mode = std::fs::metadata(out.path().join("manifest.json")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "written by the hardened writer (0600), not world-readable: {mode:o}");
    let verified =
        daemon.tool("runpack_verify", json!({"runpack_dir": out_str, "manifest_path": "manifest.json"})).unwrap();
    assert_eq!(verified["status"], "pass", "{verified}");
    let offline =
        std::process::Command::new(support::binary()).args(["runpack", "verify"]).arg(out.path()).output().unwrap();
    assert!(
        offline.status.success(),
        "offline: {}{}",
        String::from_utf8_lossy(&offline.stdout),
        String::from_utf8_lossy(&offline.stderr)
    );

    // Refused, each before anything is written: outside every root, `..`, a root reached
    // through a symbolic link, a link beneath a root, and a tenant root for another tenant.
    let outside = roots.path().join("elsewhere");
    let link = roots.path().join("link-to-exports");
    std::os::unix::fs::symlink(&shared, &link).unwrap();
    std::os::unix::fs::symlink(roots.path(), shared.join("escape")).unwrap();
    let refused = [
        outside.join("x").display().to_string(),
        format!("{}/../elsewhere/y", shared.display()),
        link.join("z").display().to_string(),
        shared.join("escape/w").display().to_string(),
        only4.join("t2").display().to_string(),
    ];
    for path in &refused {
        let err = daemon.tool("runpack_export", export_args(2, "co", "r", path)).unwrap_err();
        assert!(err["code"] == -32602 || err["code"] == -32040, "{path}: {err}");
    }
    assert!(!outside.exists() && !roots.path().join("elsewhere/y").exists() && !only4.join("t2").exists());
    assert!(!roots.path().join("w").exists(), "the link beneath the root was not followed");
}

#[test]
fn a_root_that_is_a_symbolic_link_fails_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let default = std::process::Command::new(support::binary()).args(["config", "default"]).output().unwrap().stdout;
    let config = format!(
        "{}\n[runpacks]\nclient_export_roots = [\"{}\"]\n",
        String::from_utf8(default).unwrap(),
        link.display()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(support::binary()).args(["config", "check"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("runpacks.client_export_roots[0]") && text.contains("symbolic link"), "{text}");
}
