#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The default daemon changes nothing machine-wide and does not spin (architecture issue,
//! point 4). Against the real binary on its embedded default configuration:
//! - it never opens `/dev/cpu_dma_latency` (no file descriptor of the process points at
//!   it, checked from `/proc` while clients keep it busy), and where this process may
//!   read the device (root, as in CI) the kernel's effective CPU latency target is the
//!   same before, during and after the load;
//! - it does not busy-poll: with a keep-alive connection open and idle for two seconds
//!   after a burst of requests, the process uses almost no CPU time (read from
//!   `/proc/PID/stat`), where polling that connection would burn one core;
//! - `/metrics` carries no series of the removed tuning (`dg_busy_poll_*`,
//!   `dg_cpu_wake_latency_*`).

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;
use support::Daemon;

const DEVICE: &str = "/dev/cpu_dma_latency";

/// The kernel's effective CPU latency target, when this process may read it.
fn effective_target() -> Option<i32> {
    let mut bytes = [0u8; 4];
    std::fs::File::open(DEVICE).ok()?.read_exact(&mut bytes).ok()?;
    Some(i32::from_ne_bytes(bytes))
}

/// Whether any open file of process `pid` is the latency device.
fn holds_device(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .any(|target| target == std::path::Path::new(DEVICE))
}

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> u64 {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(100)
}

/// One keep-alive plain-HTTP request on `stream`; returns the status line.
fn keep_alive_call(stream: &mut TcpStream, port: u16, key: &str, body: &str) -> String {
    let request = format!(
        "POST /rpc HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    // Read until the headers and the announced body are in.
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the daemon closed the keep-alive connection");
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if rest.len() >= length {
                return head.lines().next().unwrap_or_default().to_string();
            }
        }
    }
}

#[test]
fn the_default_daemon_leaves_cpu_latency_alone_and_does_not_spin() {
    let before = effective_target();
    let daemon = Daemon::start_with(support::DaemonOptions { plaintext: true, ..Default::default() });
    let pid = daemon.child.id();
    let port = daemon.port();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    daemon.tool("scenario_define", json!({"spec": support::sample_spec("idle")})).unwrap();
    // A burst of requests from one keep-alive client: what the removed tuning reacted to.
    for i in 0..200 {
        let body = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": "scenarios_list", "arguments": {"tenant_id": 2, "namespace_id": 3}}})
        .to_string();
        let status = keep_alive_call(&mut stream, port, &daemon.key, &body);
        assert!(status.contains(" 200 "), "{status}");
        if i == 100 {
            assert!(!holds_device(pid), "the daemon opened {DEVICE} while serving");
            if let Some(before) = before {
                assert_eq!(effective_target(), Some(before), "the CPU latency target changed while serving");
            }
        }
    }
    // The connection stays open and idle: a busy-polling daemon would spin on it now.
    let idle_start = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let idle_ticks = cpu_ticks(pid) - idle_start;
    let hz = ticks_per_second();
    // Two idle seconds of a spinning thread are 2 * hz ticks; a sleeping daemon uses
    // (almost) none. A tenth of a second over two allows for timers and the checkpointer.
    assert!(idle_ticks * 10 <= hz, "the idle daemon used {idle_ticks} ticks ({hz}/s) in 2 s: it spins");
    assert!(!holds_device(pid), "the daemon opened {DEVICE}");
    if let Some(before) = before {
        assert_eq!(effective_target(), Some(before), "the CPU latency target changed");
    } else {
        eprintln!("{DEVICE} is not readable here (not root): checked only the daemon's open files");
    }
    let (_, metrics) = daemon.get_authed("/metrics");
    for removed in ["dg_busy_poll", "dg_cpu_wake_latency"] {
        assert!(!metrics.contains(removed), "/metrics still has {removed} series");
    }
    drop(stream);
}
