//! Scale-out benchmark (docs/scale-out.md): scenario_start + scenario_next cycles per second
//! at 1, 8 and 32 clients for one node on SQLite, one node on PostgreSQL and three nodes on
//! PostgreSQL, with p99 latency, the nodes' CPU milliseconds per cycle and PostgreSQL's
//! (every process of the throwaway cluster), printed as one table, then the goals,
//! each stated as met or not. Everything shares this machine's cores, so the figures show
//! cost and serialization, not how separate machines would scale. Plain HTTP on loopback.
//! At 32 clients the setups take turns (rounds pooled), as the goals compare those rows.
//! Bounded: each phase stops at its cycle count or its time budget. Prints figures only.
//! `DG_SCALE_OUT_PROFILE=N` measures one node on PostgreSQL only, at 8 and 32 clients, N
//! cycles each, and prints what each statement cost PostgreSQL per cycle (the statements
//! inside the write functions too: `pg_stat_statements`), for A/B runs of two builds
//! (`DG_APPLIANCE_BIN`); `DG_SCALE_OUT_NODES=N` profiles N nodes over the one database
//! instead. `DG_SCALE_OUT_POOL=N` sets the nodes' `pool_size`,
//! `DG_SCALE_OUT_WORK_THREADS=N` their `work_threads`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::postgres::{Postgres, USER};
use support::{sample_spec, Client, Daemon, DaemonOptions};

/// Clock ticks (user + system) of one process, from `/proc/<pid>/stat`.
fn ticks_of(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    let Some((_, after)) = stat.rsplit_once(')') else { return 0 };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// Ticks of the postmaster and every process it started (its backends and workers).
fn cluster_ticks(postmaster: u32) -> u64 {
    let mut total = ticks_of(postmaster);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if parent == Some(postmaster) {
            total += ticks_of(pid);
        }
    }
    total
}

/// Cycles over the nodes' bases, clients spread round-robin; returns each cycle's latency,
/// the failed cycles (each failure printed: a benchmark reports, it does not stop), the
/// phase's time, and what `at_start` read when every client had connected and the clock
/// started (the CPU counters).
fn phase<T>(
    bases: &[String],
    key: &str,
    prefix: &str,
    (clients, cycles): (usize, usize),
    budget: Duration,
    at_start: impl FnOnce() -> T,
) -> (Vec<Duration>, usize, Duration, T) {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    // Every client opens its connection with one untimed read before the phase begins, all
    // at once: the cycles measure sustained load over kept-alive connections, as clients
    // run it, not 32 connections opened in the same millisecond at each round's start.
    let ready = Arc::new(std::sync::Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (next, failed, ready, base, key, prefix) = (
                next.clone(),
                failed.clone(),
                ready.clone(),
                bases[i % bases.len()].clone(),
                key.to_string(),
                prefix.to_string(),
            );
            std::thread::spawn(move || {
                let client = Client::new(&base, &key, std::path::Path::new("/nonexistent"));
                let opened = client.tool("providers_list", json!({}));
                ready.wait();
                let started = Instant::now();
                if !matches!(opened, Some(Ok(_))) {
                    failed.fetch_add(1, Ordering::Relaxed);
                    println!("scale_out: opening a connection to {base} failed: {opened:?}");
                    return Vec::new();
                }
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= cycles || started.elapsed() > budget {
                        return latencies;
                    }
                    let run_id = format!("{prefix}-{n}");
                    let t0 = Instant::now();
                    let start = json!({"scenario_id": "bench", "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": run_id,
                        "scenario_id": "bench", "dispatch_targets": [], "policy_tags": []},
                        "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false});
                    let next_req = json!({"scenario_id": "bench", "request": {"run_id": run_id, "tenant_id": 2, "namespace_id": 3,
                        "trigger_id": "t", "agent_id": "a", "time": {"kind": "logical", "value": 9}, "correlation_id": null}});
                    let answers = [("scenario_start", start), ("scenario_next", next_req)]
                        .into_iter()
                        .map(|(tool, args)| (tool, client.tool(tool, args)))
                        .find(|(_, answer)| !matches!(answer, Some(Ok(_))));
                    match answers {
                        None => latencies.push(t0.elapsed()),
                        Some((tool, answer)) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            println!("scale_out: {tool} {run_id} failed: {answer:?}");
                        }
                    }
                }
            })
        })
        .collect();
    ready.wait();
    let (mark, started) = (at_start(), Instant::now());
    let latencies: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    (latencies, failed.load(Ordering::Relaxed), started.elapsed(), mark)
}

fn p99_ms(sorted: &[Duration]) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * 0.99).round() as usize].as_secs_f64() * 1000.0
}

/// The default configuration with the per-key rate limit lifted (one key drives every
/// client) and `storage` appended.
fn config_with(storage: &str) -> String {
    let default = std::process::Command::new(support::binary()).args(["config", "default"]).output().unwrap().stdout;
    let config = String::from_utf8(default)
        .unwrap()
        .replace("requests_per_second = 500", "requests_per_second = 1000000")
        .replace("burst = 1000", "burst = 1000000");
    // `DG_SCALE_OUT_WORK_THREADS=N` sets every node's `[server] work_threads` (A/B runs).
    let config = match std::env::var("DG_SCALE_OUT_WORK_THREADS").ok().and_then(|n| n.parse::<usize>().ok()) {
        Some(threads) => {
            // A changed default would otherwise make the knob a silent no-op.
            assert!(config.contains("work_threads = 8"), "the default config no longer says work_threads = 8");
            config.replace("work_threads = 8", &format!("work_threads = {threads}"))
        }
        None => config,
    };
    format!("{config}\n{storage}\n")
}

/// What one or more phases of a setup measured, pooled.
#[derive(Default)]
struct Sample {
    latencies: Vec<Duration>,
    seconds: f64,
    node_ticks: u64,
    db_ticks: Option<u64>,
    failed: usize,
}

impl Sample {
    fn add(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.seconds += other.seconds;
        self.node_ticks += other.node_ticks;
        self.db_ticks = match (self.db_ticks, other.db_ticks) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.failed += other.failed;
    }
}

/// A setup under test: its nodes and, on PostgreSQL, the cluster's postmaster.
struct Setup {
    name: &'static str,
    nodes: Vec<Daemon>,
    postmaster: Option<u32>,
}

impl Setup {
    /// One phase of `cycles` cycles (or the time budget) at `clients` clients.
    fn phase(&self, clients: usize, cycles: usize, round: usize) -> Sample {
        let bases: Vec<String> = self.nodes.iter().map(|node| node.base.clone()).collect();
        let node_ticks = || self.nodes.iter().map(|node| ticks_of(node.child.id())).sum::<u64>();
        let prefix = format!("{}-{clients}-{round}", self.name);
        let (latencies, failed, elapsed, (node_before, db_before)) =
            phase(&bases, &self.nodes[0].key, &prefix, (clients, cycles), Duration::from_secs(20), || {
                (node_ticks(), self.postmaster.map(cluster_ticks))
            });
        Sample {
            latencies,
            seconds: elapsed.as_secs_f64(),
            node_ticks: node_ticks() - node_before,
            db_ticks: self.postmaster.zip(db_before).map(|(pm, before)| cluster_ticks(pm) - before),
            failed,
        }
    }
}

/// One row of the table.
struct Row {
    setup: &'static str,
    clients: usize,
    rate: f64,
    p99: f64,
    node_cpu_ms: f64,
    db_cpu_ms: Option<f64>,
    failed: usize,
}

impl Row {
    fn of(setup: &'static str, clients: usize, mut sample: Sample) -> Self {
        sample.latencies.sort();
        let done = sample.latencies.len().max(1) as f64;
        Row {
            setup,
            clients,
            rate: sample.latencies.len() as f64 / sample.seconds.max(f64::MIN_POSITIVE),
            p99: p99_ms(&sample.latencies),
            node_cpu_ms: sample.node_ticks as f64 * 10.0 / done,
            db_cpu_ms: sample.db_ticks.map(|ticks| ticks as f64 * 10.0 / done),
            failed: sample.failed,
        }
    }
}

/// Cycles per phase at 1 and 8 clients (one phase per setup), and per round at 32 clients.
const ONE_CLIENT_CYCLES: usize = 1_000;
const EIGHT_CLIENT_CYCLES: usize = 6_000;
const ROUND_CYCLES: usize = 3_000;
/// Rounds at 32 clients: the setups take turns, so each meets the same machine (phases
/// of a few seconds moved by 20% and more between runs of one build when measured one
/// setup after the other).
const ROUNDS: usize = 3;

/// Every row: 1 and 8 clients setup by setup, then 32 clients in turns.
fn measure(setups: &[Setup]) -> Vec<Row> {
    let mut rows: Vec<Vec<Row>> = Vec::new();
    for setup in setups {
        // Warm-up: connections, caches, the scenario's first read on every node.
        let _ = setup.phase(setup.nodes.len() * 2, 60, 0);
        rows.push(
            [(1usize, ONE_CLIENT_CYCLES), (8, EIGHT_CLIENT_CYCLES)]
                .into_iter()
                .map(|(clients, cycles)| Row::of(setup.name, clients, setup.phase(clients, cycles, 0)))
                .collect(),
        );
    }
    let mut pooled: Vec<Sample> = setups.iter().map(|_| Sample::default()).collect();
    for round in 0..ROUNDS {
        for (setup, sample) in setups.iter().zip(pooled.iter_mut()) {
            sample.add(setup.phase(32, ROUND_CYCLES, round));
        }
    }
    for ((setup, sample), setup_rows) in setups.iter().zip(pooled).zip(rows.iter_mut()) {
        setup_rows.push(Row::of(setup.name, 32, sample));
    }
    rows.into_iter().flatten().collect()
}

/// `count` nodes over `db`, the first registering tenant 2 and the scenario; the others with
/// its keys and admin key.
fn postgres_nodes(cluster: &Postgres, db: &str, count: usize) -> Vec<Daemon> {
    // `DG_SCALE_OUT_POOL=N` sets the nodes' `pool_size` (A/B runs; the default otherwise).
    let pool = std::env::var("DG_SCALE_OUT_POOL").ok().and_then(|n| n.parse::<usize>().ok());
    let storage = format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://{USER}@127.0.0.1:{}/{db}\"\ntls = \"disable\"\npassword_file = \"{}\"\n{}",
        cluster.port,
        cluster.password_file().display(),
        pool.map(|n| format!("pool_size = {n}\n")).unwrap_or_default()
    );
    let config = config_with(&storage);
    let first =
        Daemon::start_with(DaemonOptions { config: Some(config.clone()), plaintext: true, ..Default::default() });
    first.tool("scenario_define", json!({"spec": sample_spec("bench")})).unwrap();
    let mut nodes = vec![first];
    while nodes.len() < count {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("keys")).unwrap();
        for file in ["keys/active.key", "keys/keyring.json", "admin.key"] {
            std::fs::copy(nodes[0].data_dir().join(file), data.join(file)).unwrap();
        }
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        nodes.push(Daemon::start_with(DaemonOptions {
            config: Some(config.clone()),
            plaintext: true,
            dir: Some(dir),
            bare: true,
            ..Default::default()
        }));
    }
    nodes
}

fn postmaster_pid(cluster: &Postgres) -> u32 {
    let text = std::fs::read_to_string(cluster.dir.path().join("data/postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// Profile mode: `nodes` nodes on PostgreSQL at 8 and 32 clients, then each statement's
/// share of PostgreSQL's execution time per cycle (nested statements counted on their own
/// lines and inside their caller's), the costliest first.
fn profile_statements(cluster: &Postgres, cycles: usize, nodes: usize) {
    cluster.create_database("one");
    cluster.psql("one", "CREATE EXTENSION pg_stat_statements");
    let name = if nodes == 1 { "1 node, PostgreSQL".to_string() } else { format!("{nodes} nodes, PostgreSQL") };
    let setup = Setup {
        name: Box::leak(name.into_boxed_str()),
        nodes: postgres_nodes(cluster, "one", nodes),
        postmaster: Some(postmaster_pid(cluster)),
    };
    let _ = setup.phase(2, 60, 0);
    cluster.psql("one", "SELECT pg_stat_statements_reset()");
    println!(
        "{:<22} {:>7} {:>10} {:>9} {:>14} {:>16}",
        "setup", "clients", "cycles/s", "p99 ms", "nodes CPU ms", "postgres CPU ms"
    );
    for clients in [8, 32] {
        let row = Row::of(setup.name, clients, setup.phase(clients, cycles, 0));
        let db = row.db_cpu_ms.map_or_else(|| "-".to_string(), |ms| format!("{ms:.3}"));
        println!(
            "{:<22} {:>7} {:>10.0} {:>9.2} {:>14.3} {:>16}",
            row.setup, row.clients, row.rate, row.p99, row.node_cpu_ms, db
        );
    }
    println!("calls | rows | exec µs per cycle | statement");
    let per_cycle = 1000.0 / (2 * cycles) as f64;
    print!(
        "{}",
        cluster.psql(
            "one",
            &format!(
                "SELECT calls, rows, round((total_exec_time * {per_cycle})::numeric, 1), \
                 left(regexp_replace(query, '\\s+', ' ', 'g'), 140) \
                 FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 30"
            )
        )
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale_out bench: skipped outside `cargo bench`");
        return;
    }
    let profile = std::env::var("DG_SCALE_OUT_PROFILE").ok().and_then(|n| n.parse::<usize>().ok());
    let settings = if profile.is_some() {
        "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
    } else {
        ""
    };
    let Some(cluster) = Postgres::start_with_settings(settings) else {
        println!("scale_out: PostgreSQL is not installed; nothing measured");
        return;
    };
    if let Some(cycles) = profile {
        let nodes = std::env::var("DG_SCALE_OUT_NODES").ok().and_then(|n| n.parse::<usize>().ok()).unwrap_or(1);
        profile_statements(&cluster, cycles, nodes.clamp(1, 8));
        return;
    }
    let postmaster = postmaster_pid(&cluster);
    let sqlite =
        Daemon::start_with(DaemonOptions { config: Some(config_with("")), plaintext: true, ..Default::default() });
    sqlite.tool("scenario_define", json!({"spec": sample_spec("bench")})).unwrap();
    cluster.create_database("one");
    cluster.create_database("three");
    let setups = [
        Setup { name: "1 node, SQLite", nodes: vec![sqlite], postmaster: None },
        Setup { name: "1 node, PostgreSQL", nodes: postgres_nodes(&cluster, "one", 1), postmaster: Some(postmaster) },
        Setup {
            name: "3 nodes, PostgreSQL",
            nodes: postgres_nodes(&cluster, "three", 3),
            postmaster: Some(postmaster),
        },
    ];
    let rows = measure(&setups);
    println!("scale_out: start+next cycles, plain HTTP on loopback, one machine (2 cores shared by nodes, PostgreSQL and clients)");
    println!(
        "scale_out: 1 client {ONE_CLIENT_CYCLES} cycles, 8 clients {EIGHT_CLIENT_CYCLES}, 32 clients {ROUNDS} rounds of {ROUND_CYCLES} with the setups in turns (pooled)"
    );
    println!(
        "{:<22} {:>7} {:>10} {:>9} {:>14} {:>16} {:>7}",
        "setup", "clients", "cycles/s", "p99 ms", "nodes CPU ms", "postgres CPU ms", "failed"
    );
    for row in &rows {
        let db = row.db_cpu_ms.map_or_else(|| "-".to_string(), |ms| format!("{ms:.3}"));
        println!(
            "{:<22} {:>7} {:>10.0} {:>9.2} {:>14.3} {:>16} {:>7}",
            row.setup, row.clients, row.rate, row.p99, row.node_cpu_ms, db, row.failed
        );
    }
    let failed: usize = rows.iter().map(|row| row.failed).sum();
    println!("scale_out: {failed} cycles failed in all");
    let find = |setup: &str, clients: usize| rows.iter().find(|r| r.setup == setup && r.clients == clients).unwrap();
    let (sqlite8, pg8) = (find("1 node, SQLite", 8), find("1 node, PostgreSQL", 8));
    let ratio = pg8.node_cpu_ms / sqlite8.node_cpu_ms.max(f64::MIN_POSITIVE);
    let goal = |name: &str, figure: String, met: bool| {
        println!("scale_out goal: {name}: {figure}: {}", if met { "met" } else { "NOT met" });
    };
    goal("nodes' CPU per cycle on PostgreSQL <= 1.5x SQLite (8 clients)", format!("ratio {ratio:.2}"), ratio <= 1.5);
    let (one32, three32) = (find("1 node, PostgreSQL", 32), find("3 nodes, PostgreSQL", 32));
    goal(
        "3 nodes at 32 clients not slower than 1 node",
        format!("{:.0} against {:.0} cycles/s", three32.rate, one32.rate),
        three32.rate >= one32.rate,
    );
    let worst = rows.iter().filter(|r| r.clients == 32).map(|r| r.p99).fold(0.0, f64::max);
    goal("p99 at 32 clients < 50 ms", format!("worst {worst:.2} ms"), worst < 50.0);
}
