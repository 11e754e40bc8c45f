//! Load benchmark against the real daemon on its default configuration (no tuning: the
//! daemon changes nothing machine-wide and does not busy-poll), over TLS on loopback:
//! scenario_start + scenario_next cycles per second, p50/p99 latency and the daemon's CPU
//! time per cycle with 1, 8 and 32 keep-alive clients; one client again over plain HTTP
//! on loopback (the transport of the reference figure); the daemon's RSS after 10,000,
//! 50,000 and 100,000 runs; the database's bytes on disk per cycle; and, once the database
//! holds 500,000 runs, 8-client rounds on it and on a second daemon holding 10,000 in turn,
//! to show whether cost depends on how many runs came before.
//! Ends with the performance goals (docs/performance.md), each stated as met or not.
//! Bounded: each phase stops at its run count or its time budget. Prints figures only.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{sample_spec, Client, Daemon};

/// One line of `/proc/<pid>/status` in KiB (`VmRSS`, `RssAnon`, `RssFile`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Bytes of the database on disk: the file, its WAL and the WAL index.
fn database_bytes(daemon: &Daemon) -> u64 {
    ["state.db", "state.db-wal", "state.db-shm"]
        .iter()
        .filter_map(|name| std::fs::metadata(daemon.data_dir().join(name)).ok())
        .map(|meta| meta.len())
        .sum()
}

/// One goal: its figure against its bound, stated as met or not.
fn goal(name: &str, figure: String, met: bool) {
    println!("daemon/load goal: {name}: {figure}: {}", if met { "met" } else { "NOT met" });
}

/// The process's (user, system) CPU time in clock ticks (1/100 s), from one read of
/// `/proc/<pid>/stat`.
fn cpu_times(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |index: usize| fields.get(index).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11), ticks(12))
}

/// The process's user + system CPU time in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let (user, system) = cpu_times(pid);
    user + system
}

/// The disk's own floor for one durable commit, measured in the daemon's data directory:
/// the median of 300 rounds of writing 8 WAL-sized frames (33 KB, as a start or next
/// commit writes) over a preallocated file and `fdatasync`. A cycle is two commits, so
/// one client can never beat `1 / (2 * floor)` cycles per second on this disk.
fn commit_floor_us(dir: &std::path::Path) -> f64 {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let path = dir.join("bench-commit-floor.bin");
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
    file.write_all(&vec![0u8; 4 << 20]).unwrap();
    file.sync_all().unwrap();
    let frames = vec![7u8; 8 * 4120];
    let mut rounds: Vec<f64> = (0..300u64)
        .map(|n| {
            let t0 = Instant::now();
            file.write_all_at(&frames, (n * frames.len() as u64) % (4 << 20)).unwrap();
            file.sync_data().unwrap();
            t0.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    drop(file);
    let _ = std::fs::remove_file(&path);
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

/// The daemon's own request time: (sum of seconds, count) from its latency histogram.
fn served_seconds(daemon: &Daemon) -> (f64, f64) {
    let (_, text) = daemon.get_authed("/metrics");
    let value = |series: &str| support::metric_value(&text, series).unwrap_or(0.0);
    (value("dg_request_duration_seconds_sum"), value("dg_request_duration_seconds_count"))
}

/// Runs `runs` cycles split over `clients` threads (or until `budget`); returns cycles/s
/// and sorted per-cycle latencies.
fn phase(daemon: &Daemon, prefix: &str, clients: usize, runs: usize, budget: Duration) -> (f64, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let cert = daemon.data_dir().join("tls/cert.pem");
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (next, base, key, cert, prefix) = (next.clone(), daemon.base.clone(), daemon.key.clone(), cert.clone(), prefix.to_string());
            std::thread::spawn(move || {
                let client = Client::new(&base, &key, &cert);
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= runs || started.elapsed() > budget {
                        return latencies;
                    }
                    let run_id = format!("{prefix}-{n}");
                    let t0 = Instant::now();
                    let start = json!({"scenario_id": "bench", "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": run_id,
                        "scenario_id": "bench", "dispatch_targets": [], "policy_tags": []},
                        "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false});
                    client.tool("scenario_start", start).unwrap().unwrap();
                    let next_req = json!({"scenario_id": "bench", "request": {"run_id": run_id, "tenant_id": 2, "namespace_id": 3,
                        "trigger_id": "t", "agent_id": "a", "time": {"kind": "logical", "value": 9}, "correlation_id": null}});
                    client.tool("scenario_next", next_req).unwrap().unwrap();
                    latencies.push(t0.elapsed());
                }
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    (latencies.len() as f64 / elapsed, latencies)
}

/// `n` with a comma every three digits, as the fixed run counts are printed.
fn with_separators(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// A daemon on loopback (HTTPS, or plain HTTP with `plaintext`) on the default
/// configuration, with only the per-key rate limit lifted: one admin key drives every
/// client here.
fn start_daemon(plaintext: bool) -> Daemon {
    let default = std::process::Command::new(support::binary()).args(["config", "default"]).output().unwrap().stdout;
    let config = String::from_utf8(default)
        .unwrap()
        .replace("requests_per_second = 500", "requests_per_second = 1000000")
        .replace("burst = 1000", "burst = 1000000");
    Daemon::start_with(support::DaemonOptions { config: Some(config), plaintext, ..Default::default() })
}

/// A phase as [`phase`], with the daemon's CPU time per cycle in milliseconds.
fn measured_phase(daemon: &Daemon, prefix: &str, clients: usize, runs: usize, budget: Duration) -> Measured {
    let before = cpu_ticks(daemon.child.id());
    let (rate, latencies) = phase(daemon, prefix, clients, runs, budget);
    let ticks = cpu_ticks(daemon.child.id()) - before;
    let cpu_ms = ticks as f64 * 10.0 / latencies.len().max(1) as f64;
    (rate, latencies, cpu_ms)
}

/// Two measured phases as one: their cycles, time, latencies (sorted) and CPU together.
fn combine(a: Measured, b: Measured) -> Measured {
    let (cycles_a, cycles_b) = (a.1.len() as f64, b.1.len() as f64);
    let seconds = cycles_a / a.0.max(1e-9) + cycles_b / b.0.max(1e-9);
    let cpu_ms = (a.2 * cycles_a + b.2 * cycles_b) / (cycles_a + cycles_b).max(1.0);
    let mut latencies = a.1;
    latencies.extend(b.1);
    latencies.sort();
    ((cycles_a + cycles_b) / seconds.max(1e-9), latencies, cpu_ms)
}

/// One-client cycles on each daemon (the first 5,000 runs on the TLS daemon),
/// in rounds of 1,000. Five rounds, not three: single rounds of one build on this machine
/// range over a third of their median (the disk's and the scheduler's phases), and the
/// median of five moves less with one unlucky round.
const ONE_CLIENT_RUNS: usize = 5_000;
/// Cycles of the 8-client phase, from 5,000 to 15,000 runs (around 10,000). 10,000 cycles
/// (about 4 s): with 3,000 (1.5 s) two runs of one build moved by 10–25% on this two-core
/// machine, as much as the effect being judged.
const EIGHT_CLIENT_RUNS: usize = 10_000;
/// Runs in the database before the side-by-side comparison with a small one.
const LARGE_RUNS: usize = 500_000;

/// [`LARGE_RUNS`], or `DG_LOAD_LARGE_RUNS` to try the bench's last phases quickly (the
/// goal is then stated as not met: it is about 500,000 runs).
fn large_runs() -> usize {
    std::env::var("DG_LOAD_LARGE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(LARGE_RUNS)
}

const ONE_CLIENT_ROUNDS: usize = 5;
/// Runs in the small daemon before the side-by-side comparison with the large one.
const SMALL_RUNS: usize = 10_000;
/// Rounds of the side-by-side comparison, and the cycles of each daemon's turn in a round
/// (about 2.5 s each; 16,000 cycles a side in all).
const SIDE_BY_SIDE_ROUNDS: usize = 4;
const SIDE_BY_SIDE_RUNS: usize = 4_000;

/// A measured phase: cycles/s, the sorted latencies, the daemon's CPU ms per cycle.
type Measured = (f64, Vec<Duration>, f64);

/// Rounds of one phase: the rate of each, and every cycle's latency.
#[derive(Default)]
struct Rounds {
    rates: Vec<f64>,
    latencies: Vec<Duration>,
}

impl Rounds {
    fn add(&mut self, (rate, latencies): (f64, Vec<Duration>)) {
        self.rates.push(rate);
        self.latencies.extend(latencies);
    }

    /// Prints the median round's rate, every round's, and latency over all cycles.
    fn report(mut self, label: &str) {
        self.latencies.sort();
        let rounds: Vec<String> = self.rates.iter().map(|rate| format!("{rate:.0}")).collect();
        self.rates.sort_by(f64::total_cmp);
        let median = self.rates[self.rates.len() / 2];
        report(label, median, &format!(" (median of rounds {})", rounds.join(", ")), &self.latencies);
    }
}

/// Prints one phase's throughput (with `rate_note` after it) and latency figures.
fn report(label: &str, rate: f64, rate_note: &str, latencies: &[Duration]) {
    println!(
        "daemon/load {label}: {rate:.0} start+next cycles/s{rate_note}, p50 {:.2} ms, p99 {:.2} ms per cycle ({} cycles)",
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        latencies.len()
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("load bench: skipped outside `cargo bench`");
        return;
    }
    // Every cycle waits for fsync: write back what earlier steps (the build, other
    // benches) left dirty first, so the figures are the daemon's, not the page cache's.
    let _ = std::process::Command::new("sync").status();
    let plaintext = std::env::var("DG_LOAD_PLAINTEXT").is_ok();
    let daemon = start_daemon(plaintext);
    daemon.tool("scenario_define", json!({"spec": sample_spec("bench")})).unwrap();
    let pid = daemon.child.id();
    // DG_LOAD_PROFILE=N runs only one phase of N cycles, after a warm-up, for profiling
    // and A/B runs (DG_LOAD_CLIENTS clients, default 1).
    if let Some(runs) = std::env::var("DG_LOAD_PROFILE").ok().and_then(|v| v.parse::<usize>().ok()) {
        // DG_LOAD_PREFILL=N first runs N cycles at 32 clients, unmeasured (cost at scale).
        if let Some(prefill) = std::env::var("DG_LOAD_PREFILL").ok().and_then(|v| v.parse::<usize>().ok()) {
            let t0 = Instant::now();
            let (_, done) = phase(&daemon, "prefill", 32, prefill, Duration::from_secs(900));
            println!("prefill: {} runs in {:.0} s", done.len(), t0.elapsed().as_secs_f64());
        }
        let t0 = Instant::now();
        for _ in 0..2000 {
            daemon.agent.get(&format!("{}/healthz", daemon.base)).call().unwrap().into_string().unwrap();
        }
        println!("healthz round trip {:.1} us", t0.elapsed().as_secs_f64() * 1e6 / 2000.0);
        let client = Client::new(&daemon.base, &daemon.key, &daemon.data_dir().join("tls/cert.pem"));
        let t0 = Instant::now();
        for _ in 0..1000 {
            client.tool("providers_list", json!({})).unwrap().unwrap();
        }
        println!("providers_list round trip {:.1} us", t0.elapsed().as_secs_f64() * 1e6 / 1000.0);
        let served_before = served_seconds(&daemon);
        // That scrape came from another connection: let the daemon see the client alone.
        std::thread::sleep(Duration::from_millis(200));
        let (daemon_before, own_before) = (cpu_times(daemon.child.id()), cpu_ticks(std::process::id()));
        let clients = std::env::var("DG_LOAD_CLIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
        let (rate, latencies) = phase(&daemon, "profile", clients, runs, Duration::from_secs(120));
        let per_cycle = |ticks: u64| ticks as f64 * 10_000.0 / latencies.len() as f64;
        let daemon_after = cpu_times(daemon.child.id());
        let system_us = per_cycle(daemon_after.1 - daemon_before.1);
        let cpu_us = per_cycle(daemon_after.0 - daemon_before.0) + system_us;
        let client_us = per_cycle(cpu_ticks(std::process::id()) - own_before);
        let served = served_seconds(&daemon);
        let in_daemon_us = (served.0 - served_before.0) * 1e6 / (served.1 - served_before.1).max(1.0) * 2.0;
        println!(
            "daemon/load profile: {rate:.0} cycles/s, p50 {:.2} ms, p99 {:.2} ms, CPU per cycle: daemon {cpu_us:.0} us ({system_us:.0} us in the kernel), client {client_us:.0} us; \
             time in the daemon's handler per cycle {in_daemon_us:.0} us",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
        println!(
            "daemon/load profile: RSS {} KiB ({} KiB anonymous, {} KiB file-mapped); database {} bytes",
            rss_kib(pid),
            status_kib(pid, "RssAnon"),
            status_kib(pid, "RssFile"),
            database_bytes(&daemon)
        );
        return;
    }
    let floor = commit_floor_us(&daemon.data_dir());
    println!(
        "daemon/load disk floor: write + fdatasync of one commit's frames {floor:.0} us (median); two per cycle cap one client at {:.0} cycles/s on this disk",
        1e6 / (2.0 * floor)
    );
    // One client, over TLS and over plain HTTP on loopback, in interleaved rounds so both
    // meet the same machine state; each line gives the median round and the spread.
    // The open-source server serves HTTP without TLS unless `[server.tls]` is set: the
    // plain phase (`--plaintext-loopback`, bearer auth still on, its own daemon so the
    // memory phase's run counts stay as they are) is like for like with the reference.
    let plain = start_daemon(true);
    plain.tool("scenario_define", json!({"spec": sample_spec("bench")})).unwrap();
    let (mut tls_rounds, mut plain_rounds) = (Rounds::default(), Rounds::default());
    for round in 0..ONE_CLIENT_ROUNDS {
        let floor = commit_floor_us(&daemon.data_dir());
        for (target, prefix, rounds) in [(&daemon, "c1", &mut tls_rounds), (&plain, "plain", &mut plain_rounds)] {
            let runs = ONE_CLIENT_RUNS / ONE_CLIENT_ROUNDS;
            rounds.add(phase(target, &format!("{prefix}-{round}"), 1, runs, Duration::from_secs(20)));
        }
        println!(
            "daemon/load round {}: one client {:.0} cycles/s TLS, {:.0} plain; disk floor just before it {floor:.0} us",
            round + 1,
            tls_rounds.rates[round],
            plain_rounds.rates[round],
        );
    }
    drop(plain);
    let one_client_runs = tls_rounds.latencies.len();
    tls_rounds.report("clients=1");
    plain_rounds.report("clients=1 plain-http-loopback");
    // Concurrency, each phase with the daemon's CPU time per cycle (all of it: TLS, HTTP,
    // the engine, the store and its audit and usage rows).
    // The 8-client phase in two halves, the RSS read between them (at 10,000 runs).
    let mut runs = one_client_runs;
    let half = measured_phase(&daemon, "c8-a", 8, EIGHT_CLIENT_RUNS / 2, Duration::from_secs(60));
    runs += half.1.len();
    let (rss_10k, runs_at_rss_10k) = (rss_kib(pid), runs);
    let other = measured_phase(&daemon, "c8-b", 8, EIGHT_CLIENT_RUNS / 2, Duration::from_secs(60));
    runs += other.1.len();
    let (rate, latencies, cpu_8) = combine(half, other);
    report("clients=8", rate, "", &latencies);
    let at_8 = (rate, cpu_8, percentile(&latencies, 0.99));
    let (rate, latencies, cpu_32) = measured_phase(&daemon, "c32", 32, 2_000, Duration::from_secs(60));
    runs += latencies.len();
    report("clients=32", rate, "", &latencies);
    println!("daemon/load server CPU per start+next cycle: {cpu_8:.3} ms at 8 clients, {cpu_32:.3} ms at 32 clients");
    // The bulk runs in two halves with a reading between them: after 10,000 runs the
    // daemon's caches and allocator are still filling (that reading varied from 120 to
    // 149 MiB between runs of the same build), so growth is judged from 50,000 runs on.
    let bulk_started = Instant::now();
    let disk_before = database_bytes(&daemon);
    let (_, first_half) = phase(&daemon, "bulk-a", 32, 50_000usize.saturating_sub(runs), Duration::from_secs(120));
    let (rss_50k, runs_at_rss_50k) = (rss_kib(pid), runs + first_half.len());
    let (_, second_half) = phase(&daemon, "bulk-b", 32, 50_000, Duration::from_secs(150));
    let (rss_100k, anon_100k, file_100k) = (rss_kib(pid), status_kib(pid, "RssAnon"), status_kib(pid, "RssFile"));
    let bulk_runs = first_half.len() + second_half.len();
    let runs_after_bulk = runs + bulk_runs;
    let disk_per_cycle = database_bytes(&daemon).saturating_sub(disk_before) as f64 / bulk_runs.max(1) as f64;
    println!(
        "daemon/memory: RSS {rss_10k} KiB after {} runs, {rss_50k} KiB after {}, {rss_100k} KiB after {} \
         (ratio {:.2} from 10,000; {:.2} from 50,000); bulk phase {:.0} cycles/s",
        with_separators(runs_at_rss_10k),
        with_separators(runs_at_rss_50k),
        with_separators(runs_after_bulk),
        rss_100k as f64 / rss_10k.max(1) as f64,
        rss_100k as f64 / rss_50k.max(1) as f64,
        bulk_runs as f64 / bulk_started.elapsed().as_secs_f64()
    );
    println!(
        "daemon/memory: after {} runs {anon_100k} KiB anonymous, {file_100k} KiB mapped from the binary and files",
        with_separators(runs_after_bulk)
    );
    println!(
        "daemon/disk: {disk_per_cycle:.0} bytes per start+next cycle (state.db with its WAL, over {} cycles: run state, \
         audit entries, usage rows)",
        with_separators(bulk_runs)
    );
    // Cost as data grows: fill to 500,000 runs, then compare side by side (below).
    let fill_started = Instant::now();
    let (_, fill) =
        phase(&daemon, "bulk-c", 32, large_runs().saturating_sub(runs_after_bulk), Duration::from_secs(420));
    let total_runs = runs_after_bulk + fill.len();
    println!(
        "daemon/load fill to {} runs: {:.0} s ({:.0} cycles/s)",
        with_separators(total_runs),
        fill_started.elapsed().as_secs_f64(),
        fill.len() as f64 / fill_started.elapsed().as_secs_f64()
    );
    // The comparison with a small database is made side by side, not with the 8-client
    // phase of ten minutes earlier: that pair of readings moved by 20% either way between
    // runs of one build (1136 → 1368 cycles/s in one run, 1604 → 1276 in the next), as the
    // disk's own commit time does over minutes on this machine. A second daemon, filled to
    // 10,000 runs, and the large one take turns, round by round, so both meet the same
    // machine; each side's figures pool its rounds.
    let small = start_daemon(false);
    small.tool("scenario_define", json!({"spec": sample_spec("bench")})).unwrap();
    let (_, small_fill) = phase(&small, "small-fill", 32, SMALL_RUNS, Duration::from_secs(120));
    let mut small_runs = small_fill.len();
    let (mut small_rounds, mut large_rounds) = (Vec::new(), Vec::new());
    for round in 0..SIDE_BY_SIDE_ROUNDS {
        let small_round =
            measured_phase(&small, &format!("side-small-{round}"), 8, SIDE_BY_SIDE_RUNS, Duration::from_secs(30));
        let large_round =
            measured_phase(&daemon, &format!("side-large-{round}"), 8, SIDE_BY_SIDE_RUNS, Duration::from_secs(30));
        println!(
            "daemon/load side by side, round {}: {:.0} cycles/s and {:.3} ms CPU per cycle with {} runs; {:.0} and {:.3} with {}",
            round + 1,
            small_round.0,
            small_round.2,
            with_separators(small_runs),
            large_round.0,
            large_round.2,
            with_separators(total_runs)
        );
        small_runs += small_round.1.len();
        small_rounds.push(small_round);
        large_rounds.push(large_round);
    }
    drop(small);
    let pooled = |rounds: Vec<Measured>| rounds.into_iter().reduce(combine).unwrap();
    let ((rate_small, _, cpu_small), (rate_large, latencies, cpu_large)) = (pooled(small_rounds), pooled(large_rounds));
    report(&format!("clients=8 at {} runs (side by side)", with_separators(total_runs)), rate_large, "", &latencies);
    let (rate_ratio, cpu_ratio) = (rate_large / rate_small.max(1e-9), cpu_large / cpu_small.max(1e-9));
    println!(
        "daemon/load cost as data grows (8 clients, {SIDE_BY_SIDE_ROUNDS} rounds of {} cycles on each daemon in turn): \
         {rate_small:.0} cycles/s and {cpu_small:.3} ms CPU per cycle from {} to {} runs; \
         {rate_large:.0} cycles/s and {cpu_large:.3} ms at {} (ratios {:.2} and {:.2})",
        with_separators(SIDE_BY_SIDE_RUNS),
        with_separators(SMALL_RUNS),
        with_separators(small_runs),
        with_separators(total_runs),
        rate_ratio,
        cpu_ratio
    );
    goal("server CPU per cycle at 8 clients <= 0.4 ms", format!("{:.3} ms", at_8.1), at_8.1 <= 0.4);
    goal("p99 per cycle at 8 clients <= 10 ms", format!("{:.2} ms", at_8.2), at_8.2 <= 10.0);
    let flat = (rate_ratio - 1.0).abs() <= 0.10 && (cpu_ratio - 1.0).abs() <= 0.10;
    goal(
        &format!(
            "cycles/s and CPU per cycle at {} runs within 10% of those at 10,000 (side by side)",
            with_separators(total_runs)
        ),
        format!("ratios {rate_ratio:.2} and {cpu_ratio:.2}"),
        flat && total_runs >= LARGE_RUNS,
    );
    goal("disk per cycle <= 2,500 bytes", format!("{disk_per_cycle:.0} bytes"), disk_per_cycle <= 2_500.0);
    goal("RSS after 100,000 runs <= 40 MiB", format!("{rss_100k} KiB"), rss_100k <= 40 * 1024);
    goal(
        "RSS flat from 10,000 to 100,000 runs (within 10%)",
        format!("ratio {:.2}", rss_100k as f64 / rss_10k.max(1) as f64),
        rss_100k as f64 <= rss_10k as f64 * 1.10,
    );
    println!(
        "daemon/load reference: the open-source server's SQLite store does about 460 cycles/s from one keep-alive client \
         on this machine (plain HTTP on loopback); the target is 2x that"
    );
}
