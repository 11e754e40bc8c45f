//! Several daemons over one PostgreSQL, under load, while nodes are killed (SIGKILL) and
//! restarted and while the database itself stops and comes back. Clients retry what was not
//! acknowledged with the same request id and trigger id (the contract's idempotency), so
//! afterwards every acknowledged decision must be in its run, each run's decisions numbered
//! without gap or repeat, one audit chain must verify, every document must check, the usage
//! ledger must hold each acknowledged request once, and a quota of N across the nodes must
//! have admitted exactly N runs.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::postgres::{Postgres, USER};
use crate::support::{binary, Daemon, DaemonOptions};

/// Runs whose gate never passes: every trigger is one recorded `hold` decision.
fn hold_spec(tenant: u64) -> Value {
    json!({
        "scenario_id": "hold", "namespace_id": 3, "spec_version": "1", "default_tenant_id": tenant,
        "policies": [], "schemas": [],
        "conditions": [{"condition_id": "never", "query": {"provider_id": "time", "check_id": "after",
                        "params": {"timestamp": 9_000_000_000_000_i64}}, "comparator": "equals", "expected": true, "policy_tags": []}],
        "stages": [{"stage_id": "wait", "entry_packets": [], "gates": [{"gate_id": "g", "requirement": {"Condition": "never"}}],
                    "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"}]
    })
}

fn start_args(tenant: u64, run: &str) -> Value {
    json!({"scenario_id": "hold", "run_config": {"tenant_id": tenant, "namespace_id": 3, "run_id": run,
        "scenario_id": "hold", "dispatch_targets": [], "policy_tags": []},
        "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false})
}

fn next_args(run: &str, trigger: &str) -> Value {
    json!({"scenario_id": "hold", "request": {"run_id": run, "tenant_id": 2, "namespace_id": 3, "trigger_id": trigger,
        "agent_id": "a", "time": {"kind": "logical", "value": 2}, "correlation_id": null}})
}

/// What a call came to after its retries.
enum Answer {
    Ok,
    Refused(Value),
}

/// A client of one node: calls a tool with a request id, retrying (same id) what was not
/// acknowledged or was refused as retryable, until `give_up`.
struct NodeClient {
    agent: ureq::Agent,
    base: String,
    auth: String,
}

impl NodeClient {
    fn new(port: u16, key: &str) -> Self {
        Self {
            agent: ureq::AgentBuilder::new().timeout(Duration::from_secs(15)).build(),
            base: format!("http://127.0.0.1:{port}"),
            auth: format!("Bearer {key}"),
        }
    }

    fn call(&self, name: &str, arguments: &Value, request_id: &str, give_up: Instant) -> Option<Answer> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments}});
        while Instant::now() < give_up {
            let sent = self
                .agent
                .post(&format!("{}/rpc", self.base))
                .set("authorization", &self.auth)
                .set("x-correlation-id", request_id)
                .send_string(&body.to_string());
            let response = match sent {
                Ok(response) | Err(ureq::Error::Status(_, response)) => response,
                Err(_) => {
                    // Not acknowledged (the node is down or restarting): again, same id.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let Some(body) = response.into_string().ok().and_then(|text| serde_json::from_str::<Value>(&text).ok())
            else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            match body.get("error") {
                None => return Some(Answer::Ok),
                Some(error) => {
                    let retry = error["data"]["retryable"] == true || error["code"] == -32009 /* conflict */;
                    if !retry {
                        return Some(Answer::Refused(error.clone()));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        None
    }
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    /// (run, trigger) of every acknowledged decision.
    decisions: BTreeSet<(String, String)>,
    /// Runs whose start was acknowledged (or answered "already exists" on a retry).
    started: BTreeSet<String>,
    /// Request ids answered OK, and every request id sent.
    ok_ids: BTreeSet<String>,
    sent_ids: BTreeSet<String>,
    /// Starts in the quota tenant that were admitted and refused.
    quota_admitted: u64,
    quota_refused: u64,
}

fn config_for(cluster: &Postgres, db: &str) -> String {
    let default = Command::new(binary()).args(["config", "default"]).output().unwrap();
    format!(
        "{}\n[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://{USER}@127.0.0.1:{}/{db}\"\ntls = \"disable\"\npassword_file = \"{}\"\npool_size = 4\nconnect_timeout_ms = 2000\n",
        String::from_utf8(default.stdout).unwrap(),
        cluster.port,
        cluster.password_file().display()
    )
}

/// A node's directory holding the deployment's keys and admin key (copied from the first).
fn node_dir(first: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("keys")).unwrap();
    for file in ["keys/active.key", "keys/keyring.json", "admin.key"] {
        std::fs::copy(first.join(file), data.join(file)).unwrap();
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn start_node(config: &str, dir: tempfile::TempDir, port: Option<u16>) -> Daemon {
    Daemon::start_with(DaemonOptions {
        config: Some(config.to_string()),
        plaintext: true,
        dir: Some(dir),
        port,
        bare: true,
        ..Default::default()
    })
}

/// One call of a client: tool, arguments, request id, the decision it makes (run, trigger)
/// and the run it starts.
type Call = (&'static str, Value, String, Option<(String, String)>, Option<String>);

/// One client's loop until `stop`: own runs (start, then a trigger), triggers on the shared
/// runs, and starts in the quota tenant.
fn client_loop(client: usize, node: &NodeClient, stop: &AtomicBool, seen: &Mutex<Seen>, give_up: Instant) {
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let mut calls: Vec<Call> = Vec::new();
        match client % 4 {
            0 => {
                let run = format!("shared-{}", k % 4);
                let trigger = format!("c{client}-k{k}");
                calls.push(("scenario_next", next_args(&run, &trigger), trigger.clone(), Some((run, trigger)), None));
            }
            1 if k <= 12 => {
                let run = format!("q-c{client}-k{k}");
                calls.push(("scenario_start", start_args(5, &run), format!("start-{run}"), None, Some(run)));
            }
            _ => {
                let run = format!("own-c{client}-k{k}");
                let trigger = format!("{run}-t1");
                calls.push(("scenario_start", start_args(2, &run), format!("start-{run}"), None, Some(run.clone())));
                calls.push(("scenario_next", next_args(&run, &trigger), trigger.clone(), Some((run, trigger)), None));
            }
        }
        for (tool, args, request_id, decision, start) in calls {
            seen.lock().unwrap().sent_ids.insert(request_id.clone());
            let answer = node.call(tool, &args, &request_id, give_up);
            let mut seen = seen.lock().unwrap();
            let quota = start.as_ref().is_some_and(|run| run.starts_with("q-"));
            match answer {
                Some(Answer::Ok) => {
                    seen.ok_ids.insert(request_id);
                    if let Some(decision) = decision {
                        seen.decisions.insert(decision);
                    }
                    if let Some(run) = start {
                        seen.started.insert(run);
                        if quota {
                            seen.quota_admitted += 1;
                        }
                    }
                }
                Some(Answer::Refused(error)) => {
                    let message = error["message"].as_str().unwrap_or_default().to_string();
                    if quota && message == "unauthorized" {
                        seen.quota_refused += 1;
                    } else if message.contains("already exists") {
                        // A start committed before its node was killed, retried: it exists.
                        let run = start.expect("only starts answer 'already exists'");
                        if quota {
                            seen.quota_admitted += 1;
                        }
                        seen.started.insert(run);
                    } else {
                        panic!("{tool} {request_id}: {error}");
                    }
                }
                None => panic!("{tool} {request_id} was never acknowledged"),
            }
        }
    }
}

/// Every decision stored, by run: (seq, trigger id), from the database itself.
fn stored_decisions(cluster: &Postgres, db: &str) -> BTreeMap<String, Vec<(u64, String)>> {
    let text = cluster.psql(
        db,
        "SELECT run_id || ' ' || (d->>'seq') || ' ' || (d->>'trigger_id') FROM runs,
                jsonb_array_elements(convert_from(state_json, 'UTF8')::jsonb->'decisions') d
         ORDER BY run_id, (d->>'seq')::bigint",
    );
    let mut runs: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        let (run, seq, trigger) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        runs.entry(run.to_string()).or_default().push((seq.parse().unwrap(), trigger.to_string()));
    }
    runs
}

/// The checks after the load: decisions, runs, chain, documents, usage, quota.
fn check_after(cluster: &Postgres, db: &str, config: &Path, data: &Path, seen: &Seen, quota: u64) {
    let stored = stored_decisions(cluster, db);
    for (run, decisions) in &stored {
        let seqs: Vec<u64> = decisions.iter().map(|(seq, _)| *seq).collect();
        let expected: Vec<u64> = (1..=u64::try_from(seqs.len()).unwrap()).collect();
        assert_eq!(seqs, expected, "run {run}: decision numbers with a gap or a repeat");
        let triggers: BTreeSet<&String> = decisions.iter().map(|(_, trigger)| trigger).collect();
        assert_eq!(triggers.len(), decisions.len(), "run {run}: a trigger decided twice");
    }
    for (run, trigger) in &seen.decisions {
        let found = stored.get(run).is_some_and(|decisions| decisions.iter().any(|(_, t)| t == trigger));
        assert!(found, "acknowledged decision {run}/{trigger} is missing");
    }
    let runs: BTreeSet<String> = cluster.psql(db, "SELECT run_id FROM runs").lines().map(str::to_string).collect();
    for run in &seen.started {
        assert!(runs.contains(run), "acknowledged run {run} is missing");
    }
    let cli = |args: &[&str]| {
        let out =
            Command::new(binary()).args(args).arg("--config").arg(config).arg("--data-dir").arg(data).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, said) = cli(&["audit", "verify"]);
    assert!(ok && said.contains("VERIFIED"), "{said}");
    let (ok, said) = cli(&["store", "check"]);
    assert!(ok && said.contains("store check: ok"), "{said}");
    // The usage ledger: every acknowledged request once, nothing never sent.
    let ledger: BTreeSet<String> = cluster
        .psql(db, "SELECT request_id FROM usage_ledger WHERE counter = 'tool_calls' AND tenant_id IN (2, 5)")
        .lines()
        .map(str::to_string)
        .collect();
    for id in &seen.ok_ids {
        assert!(ledger.contains(id), "acknowledged request {id} is not in the usage ledger");
    }
    // The set-up's calls carried no client id (the server named them `dg-…`): six of them.
    let setup = ledger.iter().filter(|id| id.starts_with("dg-")).count();
    assert_eq!(setup, SETUP_TOOL_CALLS, "{ledger:?}");
    for id in ledger.iter().filter(|id| !id.starts_with("dg-")) {
        assert!(seen.sent_ids.contains(id), "the ledger holds request {id}, never sent");
    }
    let total: u64 = cluster
        .psql(
            db,
            "SELECT coalesce(sum(total), 0) FROM usage_totals WHERE counter = 'tool_calls' AND tenant_id IN (2, 5)",
        )
        .trim()
        .parse()
        .unwrap();
    assert_eq!(total, u64::try_from(ledger.len()).unwrap(), "usage totals count each request once");
    // The quota: exactly N runs in the quota tenant, whichever nodes admitted them.
    let quota_runs: u64 = cluster.psql(db, "SELECT count(*) FROM runs WHERE tenant_id = 5").trim().parse().unwrap();
    assert!(seen.quota_refused > 0, "the quota was never reached: the test proves nothing");
    assert_eq!(quota_runs, quota, "a quota of {quota} admitted {quota_runs} runs");
    assert_eq!(seen.quota_admitted, quota);
}

/// Tool calls `deploy` makes: two scenario definitions and four shared runs.
const SETUP_TOOL_CALLS: usize = 6;

/// The deployment: `count` nodes over one database, tenant 2 and tenant 5 (with a quota of
/// `quota` runs), the scenario in both, the shared runs started.
fn deploy(cluster: &Postgres, db: &str, count: usize, quota: u64) -> (String, Vec<Daemon>, String) {
    let config = config_for(cluster, db);
    let first =
        Daemon::start_with(DaemonOptions { config: Some(config.clone()), plaintext: true, ..Default::default() });
    first
        .admin("tenant_create", json!({"tenant_id": 5, "name": "quota-tenant", "quotas": {"runs_started": quota}}))
        .unwrap();
    first.admin("namespace_create", json!({"tenant_id": 5, "namespace_id": 3, "name": "ns"})).unwrap();
    for tenant in [2, 5] {
        first.tool("scenario_define", json!({"spec": hold_spec(tenant)})).unwrap();
    }
    for shared in 0..4 {
        first.tool("scenario_start", start_args(2, &format!("shared-{shared}"))).unwrap();
    }
    let key = first.key.clone();
    let mut nodes = vec![first];
    while nodes.len() < count {
        let dir = node_dir(&nodes[0].data_dir());
        nodes.push(start_node(&config, dir, None));
    }
    (config, nodes, key)
}

#[test]
fn three_nodes_under_load_lose_nothing_while_two_are_killed_and_restarted() {
    const QUOTA: u64 = 20;
    let Some(cluster) = Postgres::start() else { return };
    let db = cluster.create_database("scale");
    let (config, nodes, key) = deploy(&cluster, &db, 3, QUOTA);
    let ports: Vec<u16> = nodes.iter().map(Daemon::port).collect();
    let nodes = Arc::new(Mutex::new(nodes.into_iter().map(Some).collect::<Vec<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let started = Instant::now();
    let give_up = started + Duration::from_secs(120);
    let clients: Vec<_> = (0..16)
        .map(|client| {
            let (stop, seen, key) = (stop.clone(), seen.clone(), key.clone());
            let port = ports[client % ports.len()];
            std::thread::spawn(move || client_loop(client, &NodeClient::new(port, &key), &stop, &seen, give_up))
        })
        .collect();
    // Two nodes are killed mid-load and started again on their ports.
    for (at, victim) in [(8, 1usize), (18, 2usize)] {
        std::thread::sleep((started + Duration::from_secs(at)).saturating_duration_since(Instant::now()));
        let node = nodes.lock().unwrap()[victim].take().unwrap();
        let dir = node.into_dir(); // SIGKILL
        std::thread::sleep(Duration::from_millis(500));
        let restarted = start_node(&config, dir, Some(ports[victim]));
        nodes.lock().unwrap()[victim] = Some(restarted);
    }
    std::thread::sleep((started + Duration::from_secs(32)).saturating_duration_since(Instant::now()));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let elapsed = started.elapsed();
    let mut nodes = std::mem::take(&mut *nodes.lock().unwrap());
    let first = nodes.remove(0).unwrap();
    drop(nodes);
    let dir = first.into_dir();
    let seen = seen.lock().unwrap();
    eprintln!(
        "postgres scale test: {} decisions and {} runs acknowledged in {:.1} s over 3 nodes (two killed and restarted)",
        seen.decisions.len(),
        seen.started.len(),
        elapsed.as_secs_f64()
    );
    assert!(seen.decisions.len() > 100, "too little load to mean anything: {}", seen.decisions.len());
    let config_path = dir.path().join("config.toml");
    check_after(&cluster, &db, &config_path, &dir.path().join("data"), &seen, QUOTA);
}

#[test]
fn a_database_that_stops_under_load_is_a_retryable_error_and_nothing_acknowledged_is_lost() {
    const QUOTA: u64 = 10;
    let Some(mut cluster) = Postgres::start() else { return };
    let db = cluster.create_database("outage");
    let (_, nodes, key) = deploy(&cluster, &db, 2, QUOTA);
    let ports: Vec<u16> = nodes.iter().map(Daemon::port).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let started = Instant::now();
    let give_up = started + Duration::from_secs(90);
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (stop, seen, key) = (stop.clone(), seen.clone(), key.clone());
            let port = ports[client % ports.len()];
            std::thread::spawn(move || client_loop(client, &NodeClient::new(port, &key), &stop, &seen, give_up))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    cluster.stop_immediate();
    // While it is down: a clear retryable error, and not ready.
    let probe = &nodes[1];
    let (status, _) = probe.get("/readyz");
    assert_eq!(status, 503, "/readyz while the database is down");
    let (_, body) = probe.rpc(
        "/rpc",
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "scenario_start", "arguments": start_args(2, "during-outage")}}),
    );
    assert_eq!(body["error"]["data"]["retryable"], true, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("unreachable"), "{body}");
    std::thread::sleep(Duration::from_secs(3));
    cluster.restart();
    // Service resumes by itself.
    let mut ready = false;
    for _ in 0..100 {
        if probe.get("/readyz").0 == 200 {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ready, "/readyz did not come back after the database did");
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let mut nodes = nodes;
    let first = nodes.remove(0);
    drop(nodes);
    let dir = first.into_dir();
    let seen = seen.lock().unwrap();
    assert!(seen.decisions.len() > 20, "too little load: {}", seen.decisions.len());
    check_after(&cluster, &db, &dir.path().join("config.toml"), &dir.path().join("data"), &seen, QUOTA);
}
