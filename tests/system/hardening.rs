#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Availability and hygiene under attack (hardening issue), one named test per attack:
//! - stalled request bodies, unauthenticated and authenticated, over HTTPS and plain HTTP,
//!   twice `max_inflight` of them: authenticated clients keep being served, unauthenticated
//!   ones are answered from their headers and closed, stalled bodies are closed within
//!   `server.body_read_timeout_ms`, and `/metrics` counts both;
//! - hostile JSON-RPC method and tool names: `/metrics`, read with a Prometheus text-format
//!   parser, holds exactly the documented families, with label values from a fixed set.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{self, Daemon, DaemonOptions};

const MAX_INFLIGHT: usize = 8;
const BODY_TIMEOUT_MS: u64 = 1500;

fn daemon(plaintext: bool) -> Daemon {
    let default = std::process::Command::new(support::binary()).args(["config", "default"]).output().unwrap().stdout;
    let config = String::from_utf8(default)
        .unwrap()
        .replace("max_inflight = 256", &format!("max_inflight = {MAX_INFLIGHT}"))
        .replace("body_read_timeout_ms = 10000", &format!("body_read_timeout_ms = {BODY_TIMEOUT_MS}"));
    assert!(config.contains(&format!("body_read_timeout_ms = {BODY_TIMEOUT_MS}")));
    Daemon::start_with(DaemonOptions { config: Some(config), plaintext, ..Default::default() })
}

/// A connection that sends a request's headers and one byte of its declared body, then
/// nothing: plain TCP, or TLS to the daemon's certificate.
enum Stalled {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stalled {
    fn open(daemon: &Daemon, token: Option<&str>) -> Self {
        let tcp = TcpStream::connect(("127.0.0.1", daemon.port())).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
        let head = format!(
            "POST /rpc HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{auth}content-length: 100000\r\n\r\n{{"
        );
        let mut stalled = if daemon.base.starts_with("https") {
            let pem = std::fs::read(daemon.data_dir().join("tls/cert.pem")).unwrap();
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap().to_owned();
            let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            Self::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
        } else {
            Self::Plain(tcp)
        };
        stalled.stream().write_all(head.as_bytes()).unwrap();
        stalled.stream().flush().unwrap();
        stalled
    }

    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.as_mut(),
        }
    }

    /// Reads until the daemon closes the connection; returns what it sent and when it closed.
    fn answer(mut self) -> (String, Instant) {
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.stream().read(&mut buf) {
                Ok(0) | Err(_) => return (String::from_utf8_lossy(&text).to_string(), Instant::now()),
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn served(daemon: &Daemon) -> usize {
    (0..20).filter(|_| daemon.tool("providers_list", json!({})).is_ok()).count()
}

fn stalled_bodies_do_not_starve_authenticated_clients(plaintext: bool) {
    let daemon = daemon(plaintext);
    // Twice max_inflight connections without credentials, each stalled in its body.
    let anonymous: Vec<Stalled> = (0..2 * MAX_INFLIGHT).map(|_| Stalled::open(&daemon, None)).collect();
    assert_eq!(served(&daemon), 20, "an authenticated client is served while anonymous bodies stall");
    for stalled in anonymous {
        let started = Instant::now();
        let (text, closed) = stalled.answer();
        assert!(text.starts_with("HTTP/1.1 401"), "{text}");
        assert!(closed - started < Duration::from_secs(5), "answered from the headers and closed");
    }
    // Stalled bodies with a valid key hold slots only until the body-read timeout.
    let opened = Instant::now();
    let keyed: Vec<Stalled> = (0..2 * MAX_INFLIGHT).map(|_| Stalled::open(&daemon, Some(&daemon.key))).collect();
    let mut answers: Vec<String> = Vec::new();
    for stalled in keyed {
        let (text, closed) = stalled.answer();
        assert!(
            closed - opened < Duration::from_millis(BODY_TIMEOUT_MS) + Duration::from_secs(5),
            "closed within the body-read timeout: {text}"
        );
        answers.push(text);
    }
    let timed_out = answers.iter().filter(|t| t.contains("not received within")).count();
    let overloaded = answers.iter().filter(|t| t.starts_with("HTTP/1.1 503")).count();
    assert_eq!(timed_out + overloaded, 2 * MAX_INFLIGHT, "{answers:?}");
    assert!((1..=MAX_INFLIGHT).contains(&timed_out), "{timed_out} timed out");
    assert_eq!(served(&daemon), 20, "served again once the stalled bodies were closed");
    let metric = |name: &str| daemon.metric(name).unwrap();
    assert!(metric("dg_http_refused_before_body_total") >= (2 * MAX_INFLIGHT) as f64);
    assert_eq!(metric("dg_http_body_read_timeouts_total"), timed_out as f64);
    assert_eq!(metric("dg_requests_in_flight"), 0.0, "no slot is left held");
}

#[test]
fn stalled_request_bodies_over_https_do_not_starve_authenticated_clients() {
    stalled_bodies_do_not_starve_authenticated_clients(false);
}

#[test]
fn stalled_request_bodies_over_plain_http_do_not_starve_authenticated_clients() {
    stalled_bodies_do_not_starve_authenticated_clients(true);
}

/// The metric families `docs/metrics.md` documents.
fn documented_families() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md")).unwrap();
    doc.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.starts_with("dg_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn hostile_method_and_tool_names_never_reach_metrics() {
    let daemon = Daemon::start();
    let injected = "tools/list\"} 12345\ndg_runs{status=\"active\"} 999999\n#";
    let long = "m".repeat(500 * 1024);
    for method in [injected, long.as_str(), "admin/\u{202e}evil", "admin/tenant_list\n", "notifications/x\"}"] {
        let (status, _) = daemon.rpc("/rpc", &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}));
        assert!(status < 500, "{status}");
        daemon.rpc("/mcp", &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}));
        let err = daemon.tool(method, json!({})).unwrap_err();
        assert_eq!(err["code"], -32601, "unknown tool: {err}");
    }
    let (status, text) = daemon.get_authed("/metrics");
    assert_eq!(status, 200);
    assert!(text.len() < 64 * 1024, "/metrics stays small: {} bytes", text.len());
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let samples_in_text = lines.iter().filter(|l| !l.is_empty() && !l.starts_with('#')).count();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).unwrap();
    let parsed: usize = scrape
        .samples
        .iter()
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => buckets.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(parsed, samples_in_text, "every sample line parses");
    let families: BTreeSet<String> = scrape
        .samples
        .iter()
        .map(|s| s.metric.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count").to_string())
        .collect();
    assert_eq!(families, documented_families(), "exactly the documented families");
    let allowed_methods: BTreeSet<&str> = [
        "tools/list",
        "tools/call",
        "initialize",
        "ping",
        "notification",
        "admin",
        "other",
        "unauthenticated",
        "rejected",
        "invalid",
        "body_timeout",
        "timeout",
        "failed",
        "GET",
        "metrics",
        "download",
    ]
    .into_iter()
    .collect();
    let mut seen = BTreeSet::new();
    for sample in &scrape.samples {
        let key = format!("{}{:?}", sample.metric, sample.labels);
        assert!(seen.insert(key.clone()), "a series appears twice: {key}");
        if sample.metric == "dg_requests_total" {
            let method = sample.labels.get("method").unwrap();
            assert!(allowed_methods.contains(method), "method label {method:?}");
        }
        if sample.metric == "dg_runs" {
            if let prometheus_parse::Value::Gauge(value) = sample.value {
                assert!(value < 999_999.0, "an injected dg_runs series");
            }
        }
    }
}

#[test]
fn an_oversized_body_announced_with_expect_continue_is_refused_without_100_continue() {
    let daemon = daemon(true);
    let mut tcp = TcpStream::connect(("127.0.0.1", daemon.port())).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /rpc HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 104857600\r\nexpect: 100-continue\r\n\r\n",
        daemon.key
    );
    tcp.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(started.elapsed() < Duration::from_millis(BODY_TIMEOUT_MS), "answered at once, nothing drained");
    // Without a key the same request is refused from its headers too.
    let mut tcp = TcpStream::connect(("127.0.0.1", daemon.port())).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"POST /rpc HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\nexpect: 100-continue\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401") && !answer.contains("100 Continue"), "{answer}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// The documented ceiling (`docs/limits.md`) for the daemon's RSS under abusive but
/// authenticated load on the default configuration.
const RSS_CEILING_MIB: u64 = 192;

#[test]
fn abusive_authenticated_load_keeps_memory_under_its_ceiling() {
    let daemon = Daemon::start();
    let pid = daemon.child.id();
    // Scenarios of about 900 KB each (a large entry packet), each started once so its
    // spec is read into the scenario cache: the cache's byte budget is 8 MiB.
    let pad = "x".repeat(900 * 1024);
    let batch = |from: usize| {
        for i in from..from + 40 {
            let id = format!("big-{i}");
            let mut spec = support::sample_spec(&id);
            spec["stages"][1]["entry_packets"][0]["payload"]["value"] = json!({"pad": pad});
            daemon.tool("scenario_define", json!({"spec": spec})).unwrap();
            daemon
                .tool(
                    "scenario_start",
                    json!({"scenario_id": id, "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": format!("r-{i}"),
                        "scenario_id": id, "dispatch_targets": [], "policy_tags": []},
                        "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false}),
                )
                .unwrap();
        }
        rss_kib(pid)
    };
    let start = rss_kib(pid);
    let first = batch(0);
    // Hostile method names and unknown keys too: neither may leave anything behind.
    for i in 0..200 {
        daemon.rpc("/rpc", &json!({"jsonrpc": "2.0", "id": 1, "method": format!("m-{i}-{}", "y".repeat(4096))}));
        let bogus = format!("Bearer dgk_{:016x}_00_00", i);
        daemon.post_raw("/rpc", b"{}", &[("authorization", bogus.as_str())]);
    }
    let second = batch(40);
    eprintln!("RSS: {start} KiB at start, {first} KiB after 40 large scenarios, {second} KiB after 80");
    assert!(second < RSS_CEILING_MIB * 1024, "RSS {second} KiB over the {RSS_CEILING_MIB} MiB ceiling");
    // Without the cache's byte budget it grew 39 MiB per batch of 40; with it, 2–17 MiB
    // from run to run (SQLite's page caches and the allocator settling), so 24 MiB tells
    // the two apart without flaking.
    assert!(
        second < first + 24 * 1024,
        "memory kept growing with the number of scenarios: {first} KiB after 40, {second} KiB after 80"
    );
}

#[test]
fn failed_authentications_are_throttled_per_source_and_audited_as_bounded_summaries() {
    let daemon = Daemon::start();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    let mut statuses = Vec::new();
    for i in 0..30 {
        let bogus = format!("Bearer dgk_{i:016x}_{}_00000000", "0".repeat(64));
        let (status, _, _, _) = daemon.post_raw("/rpc", body.as_bytes(), &[("authorization", bogus.as_str())]);
        statuses.push(status);
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "past 20 failures from one address: {statuses:?}");
    // A valid key from the same address is served all the same.
    assert!(daemon.tool("providers_list", json!({})).is_ok());
    assert_eq!(daemon.metric("dg_auth_failures_total{answer=\"throttled\"}"), Some(10.0));
    assert_eq!(daemon.metric("dg_auth_failures_total{answer=\"unauthenticated\"}"), Some(20.0));
    // Audited as summaries (one per 5 s at most), which add up to every failure.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let export = daemon.admin("audit_export", json!({"since_ms": 0})).unwrap();
        let summaries: Vec<serde_json::Value> = export["jsonl"]
            .as_str()
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["type"] == "entry" && l["entry"]["action"] == "auth_failures")
            .collect();
        let counted: u64 = summaries
            .iter()
            .map(|l| l["entry"]["reason"].as_str().unwrap().split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        if counted == 30 {
            assert!(summaries.len() <= 3, "bounded: {} summaries", summaries.len());
            assert!(summaries[0]["entry"]["reason"].as_str().unwrap().contains("127.0.0.1="), "{:?}", summaries[0]);
            break;
        }
        assert!(counted < 30 && Instant::now() < deadline, "summaries counted {counted} of 30 failures");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn key_issue_refuses_unregistered_namespaces_and_keys_expired_at_birth() {
    let daemon = Daemon::start();
    let err = daemon
        .admin("key_issue", json!({"role": "service", "tenant_id": 2, "namespaces": [99], "label": "x"}))
        .unwrap_err();
    assert_eq!(err["code"], -32602, "{err}");
    assert!(err["message"].as_str().unwrap().contains("namespace 99"), "{err}");
    let err = daemon
        .admin("key_issue", json!({"role": "service", "tenant_id": 2, "namespaces": [3], "expires_in_ms": 0}))
        .unwrap_err();
    assert_eq!(err["code"], -32602, "{err}");
    let out = std::process::Command::new(support::binary())
        .args(["keys", "issue", "--role", "service", "--tenant", "2", "--expires-in", "0s", "--data-dir"])
        .arg(daemon.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success(), "--expires-in 0s issued a key");
    assert!(daemon.admin("key_issue", json!({"role": "service", "tenant_id": 2, "namespaces": [3]})).is_ok());
}

#[test]
fn config_check_refuses_a_certificate_principal_that_keys_issue_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let default = std::process::Command::new(support::binary()).args(["config", "default"]).output().unwrap().stdout;
    let config = format!(
        "{}\n[tls]\ncert_path = \"/nonexistent/cert.pem\"\nkey_path = \"/nonexistent/key.pem\"\n\n[tls.client_auth]\nca_path = \"/nonexistent/ca.pem\"\nrequired = false\n\n[[tls.client_auth.principals]]\ncommon_name = \"ops\"\nrole = \"org_admin\"\ntenant_id = 3\n",
        String::from_utf8(default).unwrap()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(support::binary()).args(["config", "check"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("tls.client_auth.principals[0].tenant_id") && text.contains("org_admin"), "{text}");
}

#[test]
fn silent_and_idle_connections_are_closed_and_open_connections_are_capped() {
    let default = std::process::Command::new(support::binary()).args(["config", "default"]).output().unwrap().stdout;
    let config = String::from_utf8(default)
        .unwrap()
        .replace("max_connections = 1024", "max_connections = 16")
        .replace("header_read_timeout_ms = 5000", "header_read_timeout_ms = 1000");
    assert!(config.contains("max_connections = 16"));
    let daemon = Daemon::start_with(DaemonOptions { config: Some(config), plaintext: true, ..Default::default() });
    let closes_within = |mut tcp: TcpStream, limit: Duration| {
        tcp.set_read_timeout(Some(limit + Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf) {
                Ok(0) => return started.elapsed() <= limit + Duration::from_secs(2),
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    };
    // A connection that never sends a byte, and one idle after its request.
    let silent = TcpStream::connect(("127.0.0.1", daemon.port())).unwrap();
    assert!(closes_within(silent, Duration::from_secs(1)), "a silent connection is closed");
    let mut idle = TcpStream::connect(("127.0.0.1", daemon.port())).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    assert!(closes_within(idle, Duration::from_secs(1)), "an idle keep-alive connection is closed");
    // Past max_connections, new connections are closed at accept, and counted.
    let held: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(("127.0.0.1", daemon.port())).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let extra = TcpStream::connect(("127.0.0.1", daemon.port())).unwrap();
    assert!(closes_within(extra, Duration::from_millis(200)), "the 17th connection is closed at once");
    drop(held);
    // Once they are gone, clients are served again.
    let healthy = || {
        let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", daemon.port())) else { return false };
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !healthy() {
        assert!(Instant::now() < deadline, "not served again");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(daemon.metric("dg_connections_refused_total").unwrap() >= 1.0);
}

#[test]
fn config_check_lists_every_type_error_not_just_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let default = std::process::Command::new(support::binary()).args(["config", "default"]).output().unwrap().stdout;
    let config = String::from_utf8(default)
        .unwrap()
        .replace("max_inflight = 256", "max_inflight = \"many\"")
        .replace("body_read_timeout_ms = 10000", "body_read_timeout_ms = -3")
        .replace("strict = true", "strict = \"yes\"");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(support::binary()).args(["config", "check"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    for key in ["server.max_inflight", "server.body_read_timeout_ms", "validation.strict"] {
        assert!(text.contains(key), "{key} not reported: {text}");
    }
}

/// Exporting onto a link planted where the runpack goes: the link is replaced (never
/// followed), nothing of the writer's is left behind, and `backup create` still works. A
/// backup that fails (a FIFO planted in the store) says why and leaves no `.partial`.
#[test]
fn an_export_onto_a_planted_link_leaves_nothing_behind_and_backups_still_work() {
    let daemon = Daemon::start();
    let outside = daemon.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep.txt"), b"not the appliance's").unwrap();
    let scope_dir = daemon.data_dir().join("runpacks/2/3");
    std::fs::create_dir_all(&scope_dir).unwrap();
    std::os::unix::fs::symlink(&outside, scope_dir.join("planted")).unwrap();
    daemon.tool("scenario_define", json!({"spec": support::sample_spec("plant")})).unwrap();
    daemon
        .tool(
            "scenario_start",
            json!({"scenario_id": "plant", "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": "p1",
                "scenario_id": "plant", "dispatch_targets": [], "policy_tags": []},
                "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false}),
        )
        .unwrap();
    daemon
        .tool(
            "runpack_export",
            json!({"scenario_id": "plant", "tenant_id": 2, "namespace_id": 3, "run_id": "p1", "output_dir": "planted",
                "generated_at": {"kind": "logical", "value": 10}, "include_verification": false}),
        )
        .unwrap();
    let entries: Vec<String> = std::fs::read_dir(&scope_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(entries, vec!["planted".to_string()], "only the runpack is left");
    assert!(std::fs::symlink_metadata(scope_dir.join("planted")).unwrap().is_dir(), "a real directory now");
    let outside_entries: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    assert_eq!(outside_entries.len(), 1, "nothing written through the link");

    let backups = daemon.dir.path().join("backups");
    let backup = |backups: &std::path::Path| {
        std::process::Command::new(support::binary())
            .args(["backup", "create", "--to"])
            .arg(backups)
            .arg("--data-dir")
            .arg(daemon.data_dir())
            .output()
            .unwrap()
    };
    let out = backup(&backups);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let fifo = scope_dir.join("a-fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let failed_to = daemon.dir.path().join("failed-backups");
    let out = backup(&failed_to);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && text.contains("a-fifo"), "{text}");
    let left: Vec<_> = std::fs::read_dir(&failed_to).unwrap().collect();
    assert!(left.is_empty(), "a failed backup left {left:?}");
}

/// Failures since the last summary are audited when the daemon stops, not lost.
#[test]
fn failed_authentications_just_before_shutdown_are_still_audited() {
    let mut daemon = Daemon::start();
    // The summary ticker fires at start and then every 5 s: these land in between.
    std::thread::sleep(Duration::from_millis(300));
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    for i in 0..3 {
        let bogus = format!("Bearer dgk_{i:016x}_{}_00000000", "0".repeat(64));
        let (status, _, _, _) = daemon.post_raw("/rpc", body.as_bytes(), &[("authorization", bogus.as_str())]);
        assert_eq!(status, 401);
    }
    assert!(daemon.terminate(Duration::from_secs(15)).is_some_and(|s| s.success()), "stopped cleanly");
    let export = daemon.dir.path().join("audit.jsonl");
    let out = std::process::Command::new(support::binary())
        .args(["audit", "export", "--out"])
        .arg(&export)
        .arg("--data-dir")
        .arg(daemon.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&export).unwrap();
    let counted: u64 = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["type"] == "entry" && l["entry"]["action"] == "auth_failures")
        .map(|l| l["entry"]["reason"].as_str().unwrap().split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, 3, "every failure is in a summary");
}
