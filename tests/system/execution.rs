#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Where a request's work runs (issue 3, point 6): a request alone in flight runs on its
//! connection's thread, concurrent requests go to the blocking pool and still all
//! commit, an idle keep-alive connection does not stop a lone client's requests running
//! inline, and a daemon with a provider that waits on the network never runs tool work
//! on a connection thread. Checked through `dg_request_executions_total` on /metrics.
//! Also that `dg_runs` (runs by
//! status, kept by every write) matches every run's status read back, and that WAL
//! checkpoints run in the background (`dg_wal_checkpoints_total`). And that every metric
//! family the daemon exports is in the operators' reference (`docs/metrics.md`), and only
//! those. And that the http provider's own resolver works on the daemon's pool threads.

use crate::support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use support::{binary, sample_spec, Client, Daemon, DaemonOptions};

/// `dg_request_executions_total{executor="..."}` from the daemon's metrics.
fn executions(daemon: &Daemon, executor: &str) -> u64 {
    counter(daemon, &format!("dg_request_executions_total{{executor=\"{executor}\"}}"))
}

/// One counter series from the daemon's metrics; its absence fails the test.
fn counter(daemon: &Daemon, series: &str) -> u64 {
    daemon.metric(series).unwrap_or_else(|| panic!("no {series} in metrics")) as u64
}

fn start_args(run_id: &str) -> Value {
    json!({"scenario_id": "exec", "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": run_id, "scenario_id": "exec",
           "dispatch_targets": [], "policy_tags": []}, "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false})
}

#[test]
fn lone_requests_run_on_the_connection_thread_and_concurrent_ones_on_the_pool() {
    let daemon = Daemon::start();
    daemon.tool("scenario_define", json!({"spec": sample_spec("exec")})).unwrap();
    let (inline_before, pooled_before) =
        (executions(&daemon, "connection_thread"), executions(&daemon, "blocking_pool"));
    for n in 0..10 {
        daemon.tool("scenario_start", start_args(&format!("seq-{n}"))).unwrap();
    }
    assert_eq!(executions(&daemon, "connection_thread"), inline_before + 10, "sequential requests run inline");
    assert_eq!(executions(&daemon, "blocking_pool"), pooled_before, "no sequential request went to the pool");

    // Eight clients at once: requests overlap, so most of them go to the pool; every one
    // of them is answered and stored whichever way it ran.
    let cert = daemon.data_dir().join("tls/cert.pem");
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let (base, key, cert) = (daemon.base.clone(), daemon.key.clone(), cert.clone());
            std::thread::spawn(move || {
                let client = Client::new(&base, &key, &cert);
                (0..25)
                    .map(|n| {
                        let run_id = format!("par-{worker}-{n}");
                        client.tool("scenario_start", start_args(&run_id)).unwrap().unwrap();
                        run_id
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let started: BTreeSet<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert_eq!(started.len(), 200);
    let inline = executions(&daemon, "connection_thread") - inline_before - 10;
    let pooled = executions(&daemon, "blocking_pool") - pooled_before;
    assert_eq!(inline + pooled, 200, "every request counted once");
    assert!(pooled > 0, "overlapping requests must use the pool (inline {inline}, pooled {pooled})");
    // Five runs are completed (two steps each); `dg_runs` (kept by every write, not a
    // scan) must match the status of every run read back one by one.
    for (run_id, trigger) in started.iter().take(5).flat_map(|run_id| [(run_id, "t1"), (run_id, "t2")]) {
        daemon
            .tool(
                "scenario_next",
                json!({"scenario_id": "exec", "request": {"run_id": run_id, "tenant_id": 2, "namespace_id": 3,
                       "trigger_id": trigger, "agent_id": "a", "time": {"kind": "logical", "value": 9}, "correlation_id": null}}),
            )
            .unwrap();
    }
    let mut by_status = std::collections::BTreeMap::from([("active", 0u64), ("completed", 0), ("failed", 0)]);
    let every_run: Vec<String> = started.iter().cloned().chain((0..10).map(|n| format!("seq-{n}"))).collect();
    for run_id in &every_run {
        let status = daemon
            .tool(
                "scenario_status",
                json!({"scenario_id": "exec", "request": {"run_id": run_id, "tenant_id": 2, "namespace_id": 3,
                       "requested_at": {"kind": "logical", "value": 2}, "correlation_id": null}}),
            )
            .unwrap();
        let status = status["status"].as_str().unwrap_or_else(|| panic!("{run_id}: {status}")).to_string();
        *by_status.get_mut(status.as_str()).unwrap_or_else(|| panic!("{run_id}: unknown status {status}")) += 1;
    }
    assert_eq!((by_status["active"], by_status["completed"]), (205, 5), "two steps complete a run: {by_status:?}");
    for (status, runs) in by_status {
        assert_eq!(counter(&daemon, &format!("dg_runs{{status=\"{status}\"}}")), runs, "dg_runs for {status}");
    }

    // An idle keep-alive connection of another client does not count once a whole
    // activity window (100 ms) has passed since its last request.
    let other = Client::new(&daemon.base, &daemon.key, &cert);
    other.tool("providers_list", json!({})).unwrap().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let inline_before = executions(&daemon, "connection_thread");
    for n in 0..3 {
        daemon.tool("scenario_start", start_args(&format!("after-{n}"))).unwrap();
    }
    assert_eq!(executions(&daemon, "connection_thread"), inline_before + 3);
    drop(other);

    // Those hundreds of commits crossed the background checkpoint's cadence (every 128
    // writes): it ran, and the writer finished it, which /metrics shows.
    let checkpoints = |stage: &str| counter(&daemon, &format!("dg_wal_checkpoints_total{{stage=\"{stage}\"}}"));
    assert!(checkpoints("background") >= 1 && checkpoints("finish") >= 1, "WAL checkpoints ran off the request path");
    assert_eq!(checkpoints("failed"), 0);
}

#[test]
fn a_network_provider_keeps_all_tool_work_on_the_pool() {
    let default = std::process::Command::new(binary()).args(["config", "default"]).output().unwrap().stdout;
    let config = format!("{}\n[[providers]]\nname = \"http\"\n", String::from_utf8(default).unwrap());
    let daemon = Daemon::start_with(DaemonOptions { config: Some(config), ..Default::default() });
    for _ in 0..5 {
        daemon.tool("providers_list", json!({})).unwrap();
    }
    assert_eq!(executions(&daemon, "connection_thread"), 0);
    assert!(executions(&daemon, "blocking_pool") >= 5);
}

/// A loopback HTTP server for `seconds`: it accepts connections and, when `answer`, replies
/// `200 ok` to each; otherwise it holds them and never answers.
fn loopback_server(seconds: u64, answer: bool) -> u16 {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        let mut held = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Ok((mut stream, _)) = listener.accept() {
                if answer {
                    stream.set_nonblocking(false).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                } else {
                    held.push(stream);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    port
}

/// A daemon whose http provider allows plain http to `allowed_host`, with the default
/// config's request timeout replaced by `request_timeout_ms`.
fn daemon_with_http_provider(allowed_host: &str, provider_timeout_ms: u64, request_timeout_ms: u64) -> Daemon {
    let default = std::process::Command::new(binary()).args(["config", "default"]).output().unwrap().stdout;
    let default = String::from_utf8(default).unwrap();
    assert!(default.contains("request_timeout_ms = 30000"));
    let config = format!(
        "{}\n[[providers]]\nname = \"http\"\n[providers.config]\nallow_http = true\ntimeout_ms = {provider_timeout_ms}\n\
         max_response_bytes = 1024\nallowed_hosts = [\"{allowed_host}\"]\nuser_agent = \"dg-test\"\nhash_algorithm = \"sha256\"\n",
        default.replace("request_timeout_ms = 30000", &format!("request_timeout_ms = {request_timeout_ms}"))
    );
    let daemon = Daemon::start_with(DaemonOptions { config: Some(config), ..Default::default() });
    daemon.register(2, 3);
    daemon
}

/// evidence_query arguments for the http provider's `status` of `url`.
fn http_status_query(url: &str) -> Value {
    json!({
        "query": {"provider_id": "http", "check_id": "status", "params": {"url": url}},
        "context": {"tenant_id": 2, "namespace_id": 3, "run_id": "r", "scenario_id": "s", "stage_id": "st",
                    "trigger_id": "t", "trigger_time": {"kind": "logical", "value": 1}, "correlation_id": null}})
}

#[test]
fn the_http_provider_resolves_a_host_name_inside_the_daemon() {
    // A name, not an address: the lookup runs in the provider's own resolver, on the
    // daemon's blocking pool (a runtime inside the daemon's runtime must not panic there).
    let port = loopback_server(15, true);
    let mut daemon = daemon_with_http_provider("localhost", 4000, 30000);
    let url = format!("http://localhost:{port}/");
    let result = daemon.tool("evidence_query", http_status_query(&url)).unwrap();
    assert!(result["result"]["error"].is_null(), "{result}");
    assert_eq!(result["result"]["evidence_ref"]["uri"], url.as_str(), "{result}");
    assert!(result["result"]["evidence_hash"].is_object(), "{result}");
    let (status, _) = daemon.get("/readyz");
    assert_eq!(status, 200);
    // Shutting down drops the provider inside the server's async task: still a clean exit.
    let exit = daemon.terminate(std::time::Duration::from_secs(10)).expect("exits within 10 s after SIGTERM");
    let stderr: Vec<String> = daemon.stderr.try_iter().collect();
    assert!(exit.success(), "exit {exit:?}; stderr: {stderr:#?}");
    assert!(!stderr.iter().any(|line| line.contains("panicked")), "{stderr:#?}");
}

#[test]
fn a_request_past_the_request_timeout_is_answered_and_the_daemon_keeps_serving() {
    let port = loopback_server(15, false);
    let daemon = daemon_with_http_provider("127.0.0.1", 8000, 400);
    let query = http_status_query(&format!("http://127.0.0.1:{port}/"));
    let started = std::time::Instant::now();
    let error = daemon.tool("evidence_query", query).unwrap_err();
    let waited = started.elapsed();
    assert_eq!(error["code"], -32050, "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("request timed out after 400 ms"), "{message}");
    assert!(message.contains("may still complete"), "{message}");
    assert!(
        waited < std::time::Duration::from_secs(4),
        "answered at the request timeout, not the provider's: {waited:?}"
    );
    // The daemon still answers, and the timeout is counted.
    daemon.tool("providers_list", json!({})).unwrap();
    let (status, _) = daemon.get("/readyz");
    assert_eq!(status, 200);
    assert_eq!(counter(&daemon, "dg_requests_total{endpoint=\"/rpc\",method=\"timeout\"}"), 1);
}

/// Metric family names (`# TYPE <name> <kind>` lines) of a Prometheus text page.
fn metric_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_metric_family_is_documented_for_operators_and_every_documented_one_exists() {
    let daemon = Daemon::start_with(DaemonOptions::default());
    let (status, text) = daemon.get_authed("/metrics");
    assert_eq!(status, 200);
    let exported = metric_families(&text);
    assert!(exported.len() >= 10, "{exported:?}");
    let doc_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/metrics.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    // The reference table's first column: | `dg_name` | type | ...
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.starts_with("dg_"))
        .map(str::to_string)
        .collect();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&exported).collect();
    assert!(undocumented.is_empty(), "exported but not in docs/metrics.md: {undocumented:?}");
    assert!(missing.is_empty(), "in docs/metrics.md but not exported: {missing:?}");
}
