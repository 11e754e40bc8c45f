#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Audit forwarding to a real syslog collector (operations issue, point 1): Debian's
//! rsyslog with rsyslog-gnutls, started here with its own config and pid file on a loopback
//! port over TLS and stopped by PID. Under load, the collector is stopped for 20 s and
//! started again, and the daemon is restarted once; afterwards the collector holds every
//! audit entry, in sequence order, each message's hash matching its entry (resends only
//! across reconnects), while no client request failed or waited on the collector.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{self, Client, Daemon, DaemonOptions};

struct Rsyslog {
    child: Option<Child>,
    config: PathBuf,
    port: u16,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16, cert: &Path, key: &Path) -> Option<Self> {
        if Command::new("rsyslogd").arg("-v").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "rsyslogd (Debian rsyslog, rsyslog-gnutls) is required in CI");
            return None;
        }
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let config = dir.join("rsyslog.conf");
        std::fs::write(
            &config,
            format!(
                r#"global(workDirectory="{dir}/work" maxMessageSize="64k"
  DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{cert}"
  DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="raw" type="string" string="%rawmsg%\n")
action(type="omfile" file="{dir}/received.log" template="raw" asyncWriting="off" flushOnTXEnd="on")
"#,
                dir = dir.display(),
                cert = cert.display(),
                key = key.display()
            ),
        )
        .unwrap();
        let mut collector = Self { child: None, config, port };
        collector.restart();
        Some(collector)
    }

    fn restart(&mut self) {
        let pid_file = self.config.with_extension("pid");
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&self.config)
            .arg("-i")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            support::stop_by_pid(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Requests at a steady pace until stopped: (failures, slowest answer).
fn load(client: &Client, running: &AtomicBool, outcome: &Mutex<(Vec<String>, Duration)>) {
    while running.load(Ordering::Acquire) {
        let started = Instant::now();
        let result = client.tool("providers_list", json!({}));
        let took = started.elapsed();
        let mut outcome = outcome.lock().unwrap();
        match result {
            Some(Ok(_)) => {}
            Some(Err(err)) => outcome.0.push(err.to_string()),
            None => outcome.0.push("transport failure".into()),
        }
        outcome.1 = outcome.1.max(took);
        drop(outcome);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until_delivered(daemon: &Daemon, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if daemon.metric("dg_audit_forward_lag_entries") == Some(0.0)
            && daemon.metric("dg_audit_forward_connected") == Some(1.0)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "forwarding did not catch up: lag {:?}",
            daemon.metric("dg_audit_forward_lag_entries")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops the load when dropped, so a failed assertion ends the test instead of leaving
/// the load running.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Connected again and catching up under load (the lag cannot reach 0 while entries keep
/// coming: each waits the delivery grace).
fn wait_until_catching_up(daemon: &Daemon, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let lag = daemon.metric("dg_audit_forward_lag_entries").unwrap_or(f64::MAX);
        if daemon.metric("dg_audit_forward_connected") == Some(1.0) && lag < 500.0 {
            return;
        }
        assert!(Instant::now() < deadline, "forwarding did not reconnect and catch up: lag {lag}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn with_load<T>(daemon: &Daemon, during: impl FnOnce() -> T) -> (T, Vec<String>, Duration) {
    let running = AtomicBool::new(true);
    let outcome = Mutex::new((Vec::new(), Duration::ZERO));
    let client = Client::new(&daemon.base, &daemon.key, &daemon.data_dir().join("tls/cert.pem"));
    let value = std::thread::scope(|scope| {
        let stop = StopOnDrop(&running);
        scope.spawn(|| load(&client, &running, &outcome));
        let value = during();
        drop(stop);
        value
    });
    let (failures, slowest) = outcome.into_inner().unwrap();
    (value, failures, slowest)
}

#[test]
fn every_audit_entry_reaches_the_collector_in_order_across_its_outage_and_a_daemon_restart() {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("collector.pem"), dir.path().join("collector.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    let port = support::free_port();
    let Some(mut collector) = Rsyslog::start(dir.path(), port, &cert, &key) else {
        eprintln!("rsyslogd not installed: skipped (CI installs Debian's rsyslog and rsyslog-gnutls)");
        return;
    };
    let default = Command::new(support::binary()).args(["config", "default"]).output().unwrap().stdout;
    let config = String::from_utf8(default).unwrap().replace(
        "[audit]\n",
        &format!("[audit.forward]\naddress = \"127.0.0.1:{port}\"\nca_file = \"{}\"\n\n[audit]\n", cert.display()),
    );
    // The section must follow [audit]'s own keys: move it after them.
    let config = {
        let (head, rest) = config.split_once("[audit.forward]").unwrap();
        let (forward, tail) = rest.split_once("\n\n[audit]\n").unwrap();
        let (audit_keys, after) = tail.split_once("\n\n").unwrap();
        format!("{head}[audit]\n{audit_keys}\n\n[audit.forward]{forward}\n\n{after}")
    };
    let daemon = Daemon::start_with(DaemonOptions { config: Some(config.clone()), ..Default::default() });
    wait_until_delivered(&daemon, Duration::from_secs(20));

    // Under load: the collector stops for 20 s, then comes back.
    let ((), failures, slowest) = with_load(&daemon, || {
        std::thread::sleep(Duration::from_secs(2));
        collector.stop();
        std::thread::sleep(Duration::from_secs(20));
        assert_eq!(daemon.metric("dg_audit_forward_connected"), Some(0.0));
        assert!(daemon.metric("dg_audit_forward_lag_entries").unwrap() > 100.0, "entries waited for the collector");
        collector.restart();
        wait_until_catching_up(&daemon, Duration::from_secs(60));
    });
    wait_until_delivered(&daemon, Duration::from_secs(30));
    assert!(failures.is_empty(), "requests failed while the collector was away: {failures:?}");
    assert!(slowest < Duration::from_secs(2), "a request waited on the collector: {slowest:?}");

    // The daemon restarts once (SIGTERM), under load again afterwards.
    let mut daemon = daemon;
    assert!(daemon.terminate(Duration::from_secs(20)).is_some_and(|s| s.success()));
    let daemon = Daemon::start_with(DaemonOptions {
        config: Some(config),
        dir: Some(daemon.into_dir()),
        bare: true,
        ..Default::default()
    });
    let ((), failures, _) = with_load(&daemon, || {
        std::thread::sleep(Duration::from_secs(3));
        wait_until_catching_up(&daemon, Duration::from_secs(30));
    });
    assert!(failures.is_empty(), "{failures:?}");
    wait_until_delivered(&daemon, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));

    // What the collector holds against the chain itself.
    let export = daemon.admin("audit_export", json!({"since_ms": 0})).unwrap();
    let chain: BTreeMap<u64, Value> = export["jsonl"]
        .as_str()
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["type"] == "entry")
        .map(|line| (line["entry"]["seq"].as_u64().unwrap(), line["entry"].clone()))
        .collect();
    let received = std::fs::read_to_string(dir.path().join("received.log")).unwrap();
    let mut order = Vec::new();
    for line in received.lines().filter(|l| l.contains("dgAudit@32473")) {
        let seq: u64 = line.split("seq=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        let sha = line.split("sha256=\"").nth(1).unwrap().split('"').next().unwrap();
        let payload = line.split_once("\"] ").unwrap().1;
        assert_eq!(
            hex::encode(Sha256::digest(payload.as_bytes())),
            sha,
            "entry {seq}: the message is the entry as hashed"
        );
        let entry: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(entry["seq"], seq);
        if let Some(stored) = chain.get(&seq) {
            assert_eq!(&entry, stored, "entry {seq} as stored");
        }
        order.push(seq);
    }
    let head = *chain.keys().max().unwrap();
    let delivered: std::collections::BTreeSet<u64> = order.iter().copied().collect();
    let first = *chain.keys().min().unwrap();
    let missing: Vec<u64> = (first..=head).filter(|seq| chain.contains_key(seq) && !delivered.contains(seq)).collect();
    assert!(missing.is_empty(), "{} entries never reached the collector, first {:?}", missing.len(), missing.first());
    // In order; going back only where a reconnect resent from the cursor.
    let rewinds = order.windows(2).filter(|pair| pair[1] <= pair[0]).count();
    let mut seen = std::collections::BTreeSet::new();
    let mut expected_next = order.first().copied().unwrap_or(1);
    for seq in &order {
        if seen.insert(*seq) {
            assert_eq!(*seq, expected_next, "new entries arrive in sequence order");
            expected_next = seq + 1;
        }
    }
    let reconnects = daemon.metric("dg_audit_forward_reconnects_total").unwrap_or(0.0);
    assert!(rewinds <= 3, "resends happen only across the collector's outage and the restart: {rewinds} rewinds ({reconnects} reconnects in the new daemon)");
    eprintln!("{} entries delivered ({} messages, {rewinds} resend points)", delivered.len(), order.len());
}

#[test]
fn audit_follow_appends_every_entry_once_in_order_and_resumes_from_its_cursor() {
    let daemon = Daemon::start();
    let out = daemon.dir.path().join("siem/audit.jsonl");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let follow = || {
        let done = Command::new(support::binary())
            .args(["audit", "follow", "--once", "--out"])
            .arg(&out)
            .arg("--data-dir")
            .arg(daemon.data_dir())
            .output()
            .unwrap();
        assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    };
    follow();
    for _ in 0..5 {
        daemon.tool("providers_list", json!({})).unwrap();
    }
    follow();
    follow();
    let seqs: Vec<u64> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.len() >= 6, "{seqs:?}");
    assert!(seqs.windows(2).all(|pair| pair[1] == pair[0] + 1), "every entry once, in order: {seqs:?}");
    let cursor = std::fs::read_to_string(format!("{}.cursor", out.display())).unwrap();
    assert_eq!(cursor.trim().parse::<u64>().unwrap(), *seqs.last().unwrap());
}
