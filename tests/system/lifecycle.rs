#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Daemon lifecycle: SIGTERM under load drains and loses nothing acknowledged (issue 3,
//! point 5), state survives a restart (issue 4, point 6), the CLI documents itself and
//! checks configs with key paths.

use crate::support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::{binary, sample_spec, Daemon, DaemonOptions};

fn start_args(run_id: &str) -> Value {
    json!({"scenario_id": "load", "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": run_id, "scenario_id": "load",
           "dispatch_targets": [], "policy_tags": []}, "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false})
}

fn next_args(run_id: &str, trigger: &str, time: u64) -> Value {
    json!({"scenario_id": "load", "request": {"run_id": run_id, "tenant_id": 2, "namespace_id": 3, "trigger_id": trigger,
           "agent_id": "a", "time": {"kind": "logical", "value": time}, "correlation_id": null}})
}

#[test]
fn sigterm_under_load_exits_cleanly_and_keeps_every_acknowledged_write() {
    let mut daemon = Daemon::start();
    daemon.tool("scenario_define", json!({"spec": sample_spec("load")})).unwrap();
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let base = daemon.base.clone();
    let key = daemon.key.clone();
    let cert = daemon.data_dir().join("tls/cert.pem");
    let mut workers = Vec::new();
    for worker in 0..8 {
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        let (base, key, cert) = (base.clone(), key.clone(), cert.clone());
        workers.push(std::thread::spawn(move || {
            let client = support::Client::new(&base, &key, &cert);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 10_000 {
                let run_id = format!("w{worker}-r{n}");
                match client.tool("scenario_start", start_args(&run_id)) {
                    Some(Ok(_)) => acknowledged.lock().unwrap().push((run_id.clone(), String::new())),
                    Some(Err(_)) | None => break,
                }
                match client.tool("scenario_next", next_args(&run_id, "t1", 9)) {
                    Some(Ok(_)) => acknowledged.lock().unwrap().push((run_id.clone(), "t1".into())),
                    Some(Err(_)) | None => break,
                }
                n += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let status = daemon.terminate(Duration::from_secs(10)).expect("daemon must exit within 10 s of SIGTERM");
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    assert!(status.success(), "exit status {status:?}");
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 20, "the load produced acknowledged writes ({})", acknowledged.len());

    let check = Command::new(binary()).args(["store", "check", "--data-dir"]).arg(daemon.data_dir()).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    for (run_id, trigger) in &acknowledged {
        let shown = Command::new(binary())
            .args(["store", "show", "--json", "--tenant", "2", "--namespace", "3", "--data-dir"])
            .arg(daemon.data_dir())
            .arg(run_id)
            .output()
            .unwrap();
        assert!(shown.status.success(), "acknowledged run {run_id} is missing");
        if !trigger.is_empty() {
            let state: Value = serde_json::from_slice(&shown.stdout).unwrap();
            let triggers: Vec<&str> = state["triggers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["event"]["trigger_id"].as_str().unwrap())
                .collect();
            assert!(triggers.contains(&trigger.as_str()), "acknowledged trigger {trigger} of {run_id} is missing");
        }
    }
}

#[test]
fn state_survives_a_restart_and_the_run_continues() {
    let daemon = Daemon::start();
    daemon.tool("scenario_define", json!({"spec": sample_spec("load")})).unwrap();
    daemon.tool("scenario_start", start_args("keep")).unwrap();
    let held = daemon.tool("scenario_next", next_args("keep", "early", 2)).unwrap();
    assert_eq!(held["decision"]["outcome"]["kind"], "hold");
    daemon
        .tool(
            "schemas_register",
            json!({"record": {"tenant_id": 2, "namespace_id": 3, "schema_id": "s", "version": "1",
            "schema": {"type": "object"}, "description": null, "created_at": {"kind": "logical", "value": 1}}}),
        )
        .unwrap();
    let key = daemon.key.clone();
    let mut daemon = daemon;
    assert!(daemon.terminate(Duration::from_secs(10)).unwrap().success());
    let dir = std::mem::replace(&mut daemon.dir, tempfile::tempdir().unwrap());
    drop(daemon);

    let restarted = Daemon::start_with(DaemonOptions { dir: Some(dir), ..Default::default() });
    assert_eq!(restarted.key, key, "the admin key is kept, not re-issued");
    let advanced = restarted.tool("scenario_next", next_args("keep", "late", 9)).unwrap();
    assert_eq!(advanced["decision"]["outcome"]["kind"], "advance");
    assert_eq!(advanced["decision"]["decision_id"], "decision-2");
    let scenarios = restarted.tool("scenarios_list", json!({"tenant_id": 2, "namespace_id": 3})).unwrap();
    assert_eq!(scenarios["items"][0]["scenario_id"], "load");
    restarted
        .tool("schemas_get", json!({"tenant_id": 2, "namespace_id": 3, "schema_id": "s", "version": "1"}))
        .unwrap();
}

#[test]
fn every_subcommand_has_help_and_config_check_reports_key_paths() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["stdio", "--help"],
        vec!["config", "--help"],
        vec!["config", "check", "--help"],
        vec!["store", "--help"],
        vec!["store", "check", "--help"],
    ] {
        let output = Command::new(binary()).args(&args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("Usage"), "{args:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:1\"\nmax_body_bytes = 1048576\nmax_inflight = 4\nrequest_timeout_ms = 10\nheader_read_timeout_ms = 10\ncolour = \"blue\"\n[server.rate_limit]\nrequests_per_second = 1\nburst = 1\n[validation]\nstrict = true\nenable_lexicographic = false\nenable_deep_equals = false\nmystery = 1\n",
    )
    .unwrap();
    let output = Command::new(binary()).args(["config", "check"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1));
    assert!(text.contains("server.colour: unknown key"), "{text}");
    assert!(text.contains("validation.mystery: unknown key"), "{text}");
    let ok = Command::new(binary()).args(["config", "default"]).output().unwrap();
    std::fs::write(&path, ok.stdout).unwrap();
    assert!(Command::new(binary()).args(["config", "check"]).arg(&path).status().unwrap().success());
}

#[test]
fn a_closed_output_pipe_ends_a_command_quietly() {
    // A 4 KiB pipe and 5 KiB of output: the command must block, then meet a closed pipe.
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    rustix::pipe::fcntl_setpipe_size(&write, 4096).unwrap();
    let child = std::process::Command::new(support::binary())
        .args(["policy", "--json"])
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(read);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(141), "{:?} {stderr}", output.status);
}
