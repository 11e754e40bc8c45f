#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance (issue 8): `audit verify` on a tampered database reports the entry; an
//! exported JSONL verifies offline and fails after an edit; a full disk fails mutating
//! requests (health stays up, writes resume when space returns, nothing acknowledged
//! lacks its audit entry); quotas hold under racing clients and replays count once;
//! per-key and per-tenant rate limits hold within 10% on loopback.

use crate::support;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{binary, Daemon, DaemonOptions};

fn cli(args: &[&str], data: &std::path::Path) -> std::process::Output {
    Command::new(binary()).args(args).arg("--data-dir").arg(data).output().unwrap()
}

fn start_args(run_id: &str, tenant: u64, namespace: u64) -> Value {
    json!({"scenario_id": "s", "run_config": {"tenant_id": tenant, "namespace_id": namespace, "run_id": run_id,
           "scenario_id": "s", "dispatch_targets": [], "policy_tags": []},
           "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false})
}

fn define_for(daemon: &Daemon, tenant: u64, namespace: u64) {
    let mut spec = support::sample_spec("s");
    spec["default_tenant_id"] = json!(tenant);
    spec["namespace_id"] = json!(namespace);
    daemon.tool("scenario_define", json!({"spec": spec})).unwrap();
}

/// The parts of a daemon a client thread needs.
#[derive(Clone)]
struct Endpoint {
    agent: ureq::Agent,
    base: String,
}

impl Endpoint {
    fn of(daemon: &Daemon) -> Self {
        Self { agent: daemon.agent.clone(), base: daemon.base.clone() }
    }
}

/// Calls a tool with a token and correlation id; returns status, body and headers.
fn call_at(at: &Endpoint, token: &str, correlation: &str, name: &str, args: &Value) -> (u16, Value, Vec<String>) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}});
    let response = at
        .agent
        .post(&format!("{}/rpc", at.base))
        .set("content-type", "application/json")
        .set("authorization", &format!("Bearer {token}"))
        .set("x-correlation-id", correlation)
        .send_string(&body.to_string());
    let response = match response {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(err) => panic!("transport error: {err}"),
    };
    let status = response.status();
    let headers = response.headers_names();
    (status, serde_json::from_str(&response.into_string().unwrap()).unwrap(), headers)
}

fn call(daemon: &Daemon, token: &str, correlation: &str, name: &str, args: &Value) -> (u16, Value, Vec<String>) {
    call_at(&Endpoint::of(daemon), token, correlation, name, args)
}

#[test]
fn audit_verify_reports_tampering_and_exports_verify_offline() {
    let mut daemon = Daemon::start();
    define_for(&daemon, 2, 3);
    for n in 0..30 {
        daemon.tool("scenario_start", start_args(&format!("r{n}"), 2, 3)).unwrap();
    }
    let data = daemon.data_dir();
    daemon.terminate(Duration::from_secs(10)).expect("clean stop");
    let verified = cli(&["audit", "verify"], &data);
    let text = String::from_utf8_lossy(&verified.stdout).to_string();
    assert!(verified.status.success(), "{text}");
    assert!(text.contains("VERIFIED"), "{text}");

    // Offline: an export and the public ring, on "another machine" (no data directory).
    let out = tempfile::tempdir().unwrap();
    let export = out.path().join("audit.jsonl");
    let exported = Command::new(binary())
        .args(["audit", "export", "--out"])
        .arg(&export)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let ring = out.path().join("ring.json");
    std::fs::write(&ring, cli(&["keys", "show-public"], &data).stdout).unwrap();
    let offline = |file: &std::path::Path| {
        Command::new(binary())
            .args(["audit", "verify", "--export"])
            .arg(file)
            .arg("--pubkey")
            .arg(&ring)
            .env_clear()
            .output()
            .unwrap()
    };
    let good = offline(&export);
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stdout));
    let edited = std::fs::read_to_string(&export).unwrap().replacen("\"outcome\":\"ok\"", "\"outcome\":\"error\"", 1);
    let tampered = out.path().join("tampered.jsonl");
    std::fs::write(&tampered, edited).unwrap();
    let bad = offline(&tampered);
    assert_eq!(bad.status.code(), Some(1), "{}", String::from_utf8_lossy(&bad.stdout));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("BROKEN at entry"));

    // Tamper in the database through a raw connection: the entry number is reported.
    let conn = rusqlite::Connection::open(data.join("state.db")).unwrap();
    let bytes: Vec<u8> = conn.query_row("SELECT entry_json FROM audit_log WHERE seq = 12", [], |r| r.get(0)).unwrap();
    let forged = String::from_utf8(bytes).unwrap().replacen("\"principal\":\"", "\"principal\":\"x", 1);
    conn.execute("UPDATE audit_log SET entry_json = ?1 WHERE seq = 12", [forged.as_bytes()]).unwrap();
    drop(conn);
    let broken = cli(&["audit", "verify", "--json"], &data);
    assert_eq!(broken.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&broken.stdout).unwrap();
    assert_eq!(report["first_break"]["entry"], 12, "{report}");
}

/// Mounts a small tmpfs (root only: CI runs as root); `None` outside CI when not allowed.
fn small_tmpfs(dir: &std::path::Path, size: &str) -> Option<std::path::PathBuf> {
    let mount = dir.join("small");
    std::fs::create_dir(&mount).unwrap();
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&mount).status();
    if ok.is_ok_and(|s| s.success()) {
        return Some(mount);
    }
    assert!(std::env::var("CI").is_err(), "CI must be able to mount a tmpfs for the full-disk test");
    eprintln!("skipping: this process may not mount a tmpfs");
    None
}

#[test]
fn a_full_disk_fails_mutations_keeps_health_and_loses_no_audit_entry() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = small_tmpfs(dir.path(), "4m") else { return };
    let result = std::panic::catch_unwind(|| {
        let holder = tempfile::tempdir_in(&mount).unwrap();
        let daemon = Daemon::start_with(DaemonOptions { dir: Some(holder), ..Default::default() });
        define_for(&daemon, 2, 3);
        let mut acknowledged = Vec::new();
        let mut failure = None;
        for n in 0..20_000 {
            let correlation = format!("full-{n}");
            let (status, reply, _) =
                call(&daemon, &daemon.key, &correlation, "scenario_start", &start_args(&correlation, 2, 3));
            if reply.get("error").is_none() {
                acknowledged.push(correlation);
                continue;
            }
            failure = Some((status, reply));
            break;
        }
        let (status, reply) = failure.expect("the disk never filled");
        let message = reply["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains("full") || message.contains("audit"), "a clear error: {message}");
        assert_eq!(reply["error"]["data"]["retryable"], true, "a full disk clears when space returns: {reply}");
        assert_eq!(status, 200, "tool errors keep the contract's status");
        // Health stays up while the disk is full, and reads still answer.
        assert_eq!(daemon.get("/healthz").0, 200);
        assert_eq!(daemon.get("/readyz").0, 200);
        // Space returns: writes resume.
        let grown = Command::new("mount").args(["-o", "remount,size=64m"]).arg(&mount).status().unwrap();
        assert!(grown.success());
        let (_, reply, _) =
            call(&daemon, &daemon.key, "after-space", "scenario_start", &start_args("after-space", 2, 3));
        assert!(reply.get("error").is_none(), "{reply}");
        acknowledged.push("after-space".to_string());
        // Every acknowledged request has its audit entry.
        let export = daemon.admin("audit_export", json!({"since_ms": 0})).unwrap();
        let audited: HashSet<String> = export["jsonl"]
            .as_str()
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l["type"] == "entry" && l["entry"]["action"] == "tool_call" && l["entry"]["outcome"] == "ok")
            .map(|l| l["entry"]["request_id"].as_str().unwrap().to_string())
            .collect();
        for id in &acknowledged {
            assert!(audited.contains(id), "acknowledged {id} has no audit entry");
        }
        assert!(acknowledged.len() > 10);
        let (_, metrics) = daemon.get_authed("/metrics");
        assert!(metrics.contains("dg_audit_write_failures_total"), "{metrics}");
    });
    let _ = Command::new("umount").arg("-l").arg(&mount).status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn issue(daemon: &Daemon, tenant: u64) -> String {
    daemon.admin("key_issue", json!({"role": "service", "tenant_id": tenant})).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn quotas_hold_under_racing_clients_and_replays_count_once() {
    let daemon = Daemon::start();
    daemon.admin("tenant_create", json!({"tenant_id": 5, "name": "metered", "quotas": {"runs_started": 20}})).unwrap();
    daemon.register(5, 1);
    define_for(&daemon, 5, 1);
    let tokens: Vec<String> = (0..4).map(|_| issue(&daemon, 5)).collect();
    let granted = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for (t, token) in tokens.iter().enumerate() {
            for worker in 0..2 {
                let (at, granted) = (Endpoint::of(&daemon), granted.clone());
                scope.spawn(move || {
                    for n in 0..10 {
                        let id = format!("q-{t}-{worker}-{n}");
                        let (status, reply, _) = call_at(&at, token, &id, "scenario_start", &start_args(&id, 5, 1));
                        match reply["error"]["code"].as_i64() {
                            None => granted.lock().unwrap().push(id),
                            Some(-32003) => assert_eq!(status, 403),
                            Some(other) => panic!("unexpected {other}: {reply}"),
                        }
                    }
                });
            }
        }
    });
    let granted = granted.lock().unwrap().clone();
    assert_eq!(granted.len(), 20, "exactly the quota, never one more");
    let runs = daemon.tool(
        "scenario_status",
        json!({"scenario_id": "s", "request": {"run_id": granted[0], "tenant_id": 5,
        "namespace_id": 1, "requested_at": {"kind": "logical", "value": 2}, "correlation_id": null}}),
    );
    assert!(runs.is_ok());
    // A replayed request id is counted once (the call itself now fails as a duplicate).
    let (_, replay, _) = call(&daemon, &tokens[0], &granted[0], "scenario_start", &start_args(&granted[0], 5, 1));
    assert_ne!(replay["error"]["code"], -32003, "a replay is not charged again: {replay}");
    // The same read replayed twice is one tool call in the ledger.
    for _ in 0..2 {
        call(&daemon, &tokens[1], "replayed-read", "scenarios_list", &json!({"tenant_id": 5, "namespace_id": 1}));
    }
    let report = Command::new(binary())
        .args(["usage", "report", "--tenant", "5", "--json", "--data-dir"])
        .arg(daemon.data_dir())
        .output()
        .unwrap();
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&report.stdout).unwrap();
    let total = |counter: &str| {
        rows.iter().filter(|r| r["counter"] == counter).map(|r| r["total"].as_u64().unwrap()).sum::<u64>()
    };
    assert_eq!(total("runs_started"), 20);
    let reads = rows.iter().find(|r| r["counter"] == "tool_calls" && r["requests"].as_u64().unwrap() > 0);
    assert!(reads.is_some());
    // The admin key made two tool calls here (scenario_define, scenario_status); its admin
    // operations (namespace_create) are audited but not metered.
    let admin_id = daemon.key.split('_').nth(1).unwrap();
    let admin_calls: u64 = rows
        .iter()
        .filter(|r| r["key_id"] == admin_id && r["counter"] == "tool_calls")
        .map(|r| r["total"].as_u64().unwrap())
        .sum();
    assert_eq!(admin_calls, 2, "{rows:?}");
    let table = Command::new(binary())
        .args(["usage", "report", "--tenant", "5", "--data-dir"])
        .arg(daemon.data_dir())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains("runs_started"));
    // Ledger rows are per request id: "replayed-read" appears once for tool_calls.
    let conn = rusqlite::Connection::open(daemon.data_dir().join("state.db")).unwrap();
    let count: i64 = conn
        .query_row(
            "SELECT count(*) FROM usage_ledger WHERE request_id = 'replayed-read' AND counter = 'tool_calls'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(count, 1);
}

/// One request of a hammer: when it was sent (seconds after the start, all tokens on one
/// clock) and whether it was accepted.
type Attempt = (f64, bool);

/// Hammers `providers_list` with each token for `seconds`; returns each token's attempts
/// and whether 429s carried Retry-After.
fn hammer(daemon: &Daemon, tokens: &[String], seconds: f64) -> (Vec<Vec<Attempt>>, bool) {
    let started = Instant::now();
    let retry_after = Arc::new(Mutex::new(true));
    let at = Endpoint::of(daemon);
    let attempts = std::thread::scope(|scope| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|token| {
                let (retry_after, at) = (retry_after.clone(), at.clone());
                scope.spawn(move || {
                    let mut attempts = Vec::new();
                    let mut n = 0;
                    while started.elapsed().as_secs_f64() < seconds {
                        n += 1;
                        let sent = started.elapsed().as_secs_f64();
                        let (status, _, headers) =
                            call_at(&at, token, &format!("rl-{n}"), "providers_list", &json!({}));
                        match status {
                            200 => attempts.push((sent, true)),
                            429 => {
                                attempts.push((sent, false));
                                if !headers.iter().any(|k| k.eq_ignore_ascii_case("retry-after")) {
                                    *retry_after.lock().unwrap() = false;
                                }
                            }
                            other => panic!("status {other}"),
                        }
                    }
                    attempts
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = *retry_after.lock().unwrap();
    (attempts, ok)
}

/// A token bucket (`rate` per second, `burst` deep, full at the start), replayed over
/// request times.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: f64,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst, tokens: burst, at: 0.0 }
    }

    fn refill(&mut self, at: f64) {
        self.tokens = (self.tokens + (at - self.at).max(0.0) * self.rate).min(self.burst);
        self.at = self.at.max(at);
    }
}

/// How many of `attempts` (per key, each `(sent, _)`) the per-key buckets and the tenant's
/// bucket admit, replayed in the order they were sent: what a correct limiter accepts from
/// the load this client managed to offer. (Comparing with `burst + rate * elapsed` instead
/// assumes the client keeps every bucket drained; a starved client, as on a busy machine,
/// offers less, and its stalls let a full bucket's refill go to waste.)
fn admissible(attempts: &[Vec<Attempt>], key: (f64, f64), tenant: Option<(f64, f64)>) -> (Vec<u64>, u64) {
    let mut sends: Vec<(f64, usize)> =
        attempts.iter().enumerate().flat_map(|(k, list)| list.iter().map(move |(at, _)| (*at, k))).collect();
    sends.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut keys: Vec<Bucket> = attempts.iter().map(|_| Bucket::new(key.0, key.1)).collect();
    let mut shared = tenant.map(|(rate, burst)| Bucket::new(rate, burst));
    let mut admitted = vec![0u64; attempts.len()];
    for (at, k) in sends {
        keys[k].refill(at);
        if let Some(bucket) = shared.as_mut() {
            bucket.refill(at);
        }
        let tenant_has = shared.as_ref().is_none_or(|bucket| bucket.tokens >= 1.0);
        if keys[k].tokens >= 1.0 && tenant_has {
            keys[k].tokens -= 1.0;
            if let Some(bucket) = shared.as_mut() {
                bucket.tokens -= 1.0;
            }
            admitted[k] += 1;
        }
    }
    let total = admitted.iter().sum();
    (admitted, total)
}

fn accepted(attempts: &[Attempt]) -> u64 {
    attempts.iter().filter(|(_, ok)| *ok).count() as u64
}

#[test]
fn per_key_and_per_tenant_rate_limits_hold_within_ten_percent() {
    let default =
        String::from_utf8(Command::new(binary()).args(["config", "default"]).output().unwrap().stdout).unwrap();
    let config = default
        .replace("requests_per_second = 500\nburst = 1000", "requests_per_second = 40\nburst = 20")
        .replace("requests_per_second = 2000\nburst = 4000", "requests_per_second = 80\nburst = 40");
    assert_ne!(config, default);
    let daemon = Daemon::start_with(DaemonOptions { config: Some(config), ..Default::default() });
    daemon.register(5, 1);
    daemon.register(6, 1);
    // One key alone: the per-key bucket binds (40/s after a burst of 20). The tenant's
    // bucket (80/s, 40 deep) never binds one key's 40/s.
    let solo = vec![issue(&daemon, 6)];
    let (attempts, retry_after) = hammer(&daemon, &solo, 2.0);
    let (_, expected) = admissible(&attempts, (40.0, 20.0), None);
    let got = accepted(&attempts[0]);
    let sent = attempts[0].len();
    println!("per key: {got} of {sent} accepted, {expected} admissible");
    assert!(got < sent as u64, "the limit was reached: {got} of {sent} accepted");
    let (got, expected) = (got as f64, expected as f64);
    assert!((got - expected).abs() <= expected * 0.10, "per-key: {got} vs {expected:.0}");
    assert!(retry_after, "429 answers carry Retry-After");
    // Four keys of one tenant: each could pass 40/s, the tenant's bucket binds (80/s).
    let keys: Vec<String> = (0..4).map(|_| issue(&daemon, 5)).collect();
    let (attempts, _) = hammer(&daemon, &keys, 2.0);
    let (per_key, expected) = admissible(&attempts, (40.0, 20.0), Some((80.0, 40.0)));
    let counts: Vec<u64> = attempts.iter().map(|list| accepted(list)).collect();
    let got = counts.iter().sum::<u64>() as f64;
    let sent: usize = attempts.iter().map(Vec::len).sum();
    println!("per tenant: {got} of {sent} accepted over {counts:?}, {expected} admissible ({per_key:?})");
    assert!((got as usize) < sent, "the limit was reached: {got} of {sent} accepted");
    let expected = expected as f64;
    assert!((got - expected).abs() <= expected * 0.10, "per-tenant: {got} vs {expected:.0}");
    let elapsed = attempts.iter().flatten().map(|(at, _)| *at).fold(0.0, f64::max);
    for count in counts {
        assert!((count as f64) <= (20.0 + 40.0 * elapsed) * 1.1, "no key exceeds its own bucket");
    }
}

fn canonical_sha(value: &Value) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(dg_engine::canonical_json_bytes(value).unwrap()))
}

#[test]
fn tool_calls_are_audited_once_with_request_and_response_hashes() {
    let daemon = Daemon::start();
    define_for(&daemon, 2, 3);
    let args = start_args("hashed", 2, 3);
    let (_, reply, _) = call(&daemon, &daemon.key, "hash-1", "scenario_start", &args);
    let output = reply["result"]["content"][0]["json"].clone();
    assert!(output.is_object(), "{reply}");
    let (_, reply, _) =
        call(&daemon, &daemon.key, "hash-2", "scenarios_list", &json!({"tenant_id": 2, "namespace_id": 3}));
    let listed = reply["result"]["content"][0]["json"].clone();
    let export = daemon.admin("audit_export", json!({"since_ms": 0})).unwrap();
    let entries: Vec<Value> = export["jsonl"]
        .as_str()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["type"] == "entry")
        .map(|l| l["entry"].clone())
        .collect();
    for (id, request, response) in
        [("hash-1", &args, &output), ("hash-2", &json!({"tenant_id": 2, "namespace_id": 3}), &listed)]
    {
        let calls: Vec<&Value> =
            entries.iter().filter(|e| e["request_id"] == id && e["action"] == "tool_call").collect();
        assert_eq!(calls.len(), 1, "{id}: {calls:?}");
        assert_eq!(calls[0]["outcome"], "ok");
        assert_eq!(calls[0]["request_sha256"], canonical_sha(request), "{id}");
        assert_eq!(calls[0]["response_sha256"], canonical_sha(response), "{id}");
        let decisions = entries.iter().filter(|e| e["request_id"] == id && e["action"] == "authz").count();
        assert_eq!(decisions, 1, "{id}");
    }
    // Daemon start is audited with the hash of the configuration in force.
    let startup = entries.iter().find(|e| e["action"] == "startup").expect("a startup entry");
    assert!(startup["reason"].as_str().unwrap().contains("config sha256 "), "{startup}");
    // Tenant lifecycle (the harness registered tenant 2) is audited as admin operations.
    assert!(entries
        .iter()
        .any(|e| e["action"] == "admin" && e["target"] == "namespace_create" && e["outcome"] == "ok"));
}
