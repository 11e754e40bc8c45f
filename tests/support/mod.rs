//! Shared helpers for the black-box system tests: start the real `dg-appliance` binary
//! on a free loopback port with a fresh data directory, and talk to it over HTTPS.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

pub mod browser;
pub mod postgres;
pub mod seaweed;

/// Path of the binary under test.
pub fn binary() -> PathBuf {
    // DG_APPLIANCE_BIN lets a benchmark compare two builds in one run (A/B).
    std::env::var_os("DG_APPLIANCE_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dg-appliance")), PathBuf::from)
}

/// The shared reference material, or `None` (skip) outside CI.
pub fn shared_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("DG_SHARED") {
        return Some(PathBuf::from(dir));
    }
    let candidate = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    if candidate.join("contract").is_dir() {
        return candidate.canonicalize().ok();
    }
    assert!(std::env::var("CI").is_err(), "CI run without ../shared");
    eprintln!("skipping: ../shared not found; set DG_SHARED");
    None
}

/// A free loopback port (bind to 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running daemon.
pub struct Daemon {
    /// The child process.
    pub child: Child,
    /// Its data directory (kept alive for the test).
    pub dir: tempfile::TempDir,
    /// `https://127.0.0.1:PORT` (or http with plaintext).
    pub base: String,
    /// The first admin key.
    pub key: String,
    /// HTTP client trusting the daemon's self-signed certificate.
    pub agent: ureq::Agent,
    /// Lines the daemon printed on stderr after start.
    pub stderr: mpsc::Receiver<String>,
    /// Lines it printed on stderr before it listened (its start-up log).
    pub startup_log: Vec<String>,
}

/// Options for [`Daemon::start_with`].
#[derive(Default)]
pub struct DaemonOptions {
    /// Extra config TOML (replaces the embedded default when set).
    pub config: Option<String>,
    /// Serve plain HTTP on loopback.
    pub plaintext: bool,
    /// Reuse this data directory.
    pub dir: Option<tempfile::TempDir>,
    /// Skip registering tenant 2 / namespace 3 after start.
    pub bare: bool,
    /// Trust this CA file instead of the data directory's self-signed certificate.
    pub server_ca: Option<PathBuf>,
    /// Listen on this loopback port (else a free one).
    pub port: Option<u16>,
    /// A command that runs the daemon (`exec`s it with the arguments that follow), e.g.
    /// `unshare` into a private mount namespace; the daemon's arguments are appended.
    pub launcher: Option<Vec<String>>,
    /// Run this binary instead of [`binary`] (the FIPS tests start both builds).
    pub binary: Option<PathBuf>,
    /// Extra environment for the daemon (e.g. `SOFTHSM2_CONF`).
    pub env: Vec<(String, String)>,
}

/// The value of one series in a `/metrics` text (see [`Daemon::metric`]).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    let prefix = format!("{series} ");
    text.lines().find_map(|line| line.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok())
}

/// A TLS client configuration trusting the certificates in `cert` (PEM).
pub fn tls_config(cert: &Path) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// An HTTPS client trusting the certificates in `cert` (PEM).
pub fn tls_agent(cert: &Path) -> ureq::Agent {
    ureq::AgentBuilder::new().tls_config(tls_config(cert)).timeout(Duration::from_secs(30)).build()
}

impl Daemon {
    /// Starts the daemon on the embedded default.
    pub fn start() -> Self {
        Self::start_with(DaemonOptions::default())
    }

    /// Starts the daemon with options and waits until it listens.
    pub fn start_with(options: DaemonOptions) -> Self {
        let dir = options.dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let port = options.port.unwrap_or_else(free_port);
        let mut command = match &options.launcher {
            Some(launcher) => {
                let mut command = Command::new(&launcher[0]);
                command.args(&launcher[1..]).arg(options.binary.clone().unwrap_or_else(binary));
                command
            }
            None => Command::new(options.binary.clone().unwrap_or_else(binary)),
        };
        for (name, value) in &options.env {
            command.env(name, value);
        }
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if options.plaintext {
            command.arg("--plaintext-loopback");
        }
        if let Some(config) = &options.config {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, config).unwrap();
            command.arg("--config").arg(path);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let line = match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(line) => line,
                Err(err) => panic!("daemon did not start ({err}); it said:\n{}", seen.join("\n")),
            };
            if line.contains("dg-appliance listening on") {
                break;
            }
            seen.push(line);
        }
        let data = dir.path().join("data");
        let key = std::fs::read_to_string(data.join("admin.key")).unwrap().trim().to_string();
        let scheme = if options.plaintext { "http" } else { "https" };
        let agent = if options.plaintext {
            ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build()
        } else {
            tls_agent(options.server_ca.as_deref().unwrap_or(&data.join("tls/cert.pem")))
        };
        let daemon = Self {
            child,
            dir,
            base: format!("{scheme}://127.0.0.1:{port}"),
            key,
            agent,
            stderr: rx,
            startup_log: seen,
        };
        if !options.bare {
            // sample_spec and most tests work in tenant 2, namespace 3.
            daemon.register(2, 3);
        }
        daemon
    }

    /// Stops the daemon and hands over its directory (to start another daemon on it).
    pub fn into_dir(mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// The daemon's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The listen port.
    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// POSTs raw bytes; returns status, content type and body text.
    pub fn post_raw(
        &self,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, String, String, Vec<(String, String)>) {
        let mut request = self.agent.post(&format!("{}{path}", self.base)).set("content-type", "application/json");
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let response = match request.send_bytes(body) {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(err) => panic!("transport error: {err}"),
        };
        let status = response.status();
        let content_type = response.header("content-type").unwrap_or_default().to_string();
        let header_list = response
            .headers_names()
            .into_iter()
            .map(|name| {
                let value = response.header(&name).unwrap_or_default().to_string();
                (name, value)
            })
            .collect();
        (status, content_type, response.into_string().unwrap(), header_list)
    }

    /// POSTs a JSON-RPC body with the admin key; returns status and parsed body.
    pub fn rpc(&self, path: &str, body: &Value) -> (u16, Value) {
        let auth = format!("Bearer {}", self.key);
        let (status, _, text, _) = self.post_raw(path, body.to_string().as_bytes(), &[("authorization", &auth)]);
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Calls a Decision Gate tool over /rpc; returns the tool output or the error object.
    pub fn tool(&self, name: &str, arguments: Value) -> Result<Value, Value> {
        let (_, body) = self.rpc("/rpc", &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": arguments}}));
        match body.get("error") {
            Some(error) => Err(error.clone()),
            None => Ok(body["result"]["content"][0]["json"].clone()),
        }
    }

    /// Calls an admin operation (`admin/<name>`) with the admin key.
    pub fn admin(&self, name: &str, params: Value) -> Result<Value, Value> {
        let (_, body) =
            self.rpc("/rpc", &json!({"jsonrpc": "2.0", "id": 9, "method": format!("admin/{name}"), "params": params}));
        match body.get("error") {
            Some(error) => Err(error.clone()),
            None => Ok(body["result"].clone()),
        }
    }

    /// Registers a tenant (if new) and one of its namespaces: every tenant and
    /// namespace a request names must be in the registry.
    pub fn register(&self, tenant: u64, namespace: u64) {
        let _ = self.admin("tenant_create", json!({"tenant_id": tenant, "name": format!("tenant-{tenant}")}));
        let created = self.admin(
            "namespace_create",
            json!({"tenant_id": tenant, "namespace_id": namespace, "name": format!("ns-{namespace}")}),
        );
        if let Err(err) = created {
            assert_eq!(err["code"], -32009, "namespace_create: {err}");
        }
    }

    /// GET with no auth.
    pub fn get(&self, path: &str) -> (u16, String) {
        match self.agent.get(&format!("{}{path}", self.base)).call() {
            Ok(response) | Err(ureq::Error::Status(_, response)) => {
                (response.status(), response.into_string().unwrap())
            }
            Err(err) => panic!("transport error: {err}"),
        }
    }

    /// GET with the admin key.
    pub fn get_authed(&self, path: &str) -> (u16, String) {
        match self
            .agent
            .get(&format!("{}{path}", self.base))
            .set("authorization", &format!("Bearer {}", self.key))
            .call()
        {
            Ok(response) | Err(ureq::Error::Status(_, response)) => {
                (response.status(), response.into_string().unwrap())
            }
            Err(err) => panic!("transport error: {err}"),
        }
    }

    /// The value of one series on `/metrics` (its full name with labels, e.g.
    /// `dg_request_duration_seconds_count`); `None` when the daemon does not print it.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (status, text) = self.get_authed("/metrics");
        assert_eq!(status, 200, "{text}");
        metric_value(&text, series)
    }

    /// Sends SIGTERM and waits up to `limit` for exit; returns the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::Term);
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small scenario over the time provider: stage one passes once the trigger's logical
/// time is after 5, then a terminal stage with an entry packet.
pub fn sample_spec(scenario_id: &str) -> Value {
    json!({
        "scenario_id": scenario_id, "namespace_id": 3, "spec_version": "1", "default_tenant_id": 2,
        "policies": [], "schemas": [],
        "conditions": [{"condition_id": "late", "query": {"provider_id": "time", "check_id": "after", "params": {"timestamp": 5}},
                        "comparator": "equals", "expected": true, "policy_tags": []}],
        "stages": [
            {"stage_id": "wait", "entry_packets": [], "gates": [{"gate_id": "g", "requirement": {"Condition": "late"}}],
             "advance_to": {"kind": "linear"}, "timeout": null, "on_timeout": "fail"},
            {"stage_id": "done", "entry_packets": [{"packet_id": "p", "schema_id": "s", "content_type": "application/json",
              "visibility_labels": ["public"], "policy_tags": [], "expiry": null, "payload": {"kind": "json", "value": {"ok": true}}}],
             "gates": [], "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"}
        ]
    })
}

/// A thread-safe client for load tests (one connection pool per thread).
pub struct Client {
    agent: ureq::Agent,
    base: String,
    auth: String,
}

impl Client {
    /// Builds a client trusting `cert` (unused for an `http://` base: plaintext loopback).
    pub fn new(base: &str, key: &str, cert: &Path) -> Self {
        let agent = if base.starts_with("http://") { ureq::AgentBuilder::new().build() } else { tls_agent(cert) };
        Self { agent, base: base.to_string(), auth: format!("Bearer {key}") }
    }

    /// Calls a tool: `None` on a transport failure (server gone).
    pub fn tool(&self, name: &str, arguments: Value) -> Option<Result<Value, Value>> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments}});
        let response = match self
            .agent
            .post(&format!("{}/rpc", self.base))
            .set("authorization", &self.auth)
            .send_string(&body.to_string())
        {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(_) => return None,
        };
        let body: Value = serde_json::from_str(&response.into_string().ok()?).ok()?;
        Some(match body.get("error") {
            Some(error) => Err(error.clone()),
            None => Ok(body["result"]["content"][0]["json"].clone()),
        })
    }
}

/// Stops a test peer (a provider, a collector) by its PID: SIGTERM, then SIGKILL if it has
/// not exited within `limit`; always reaped.
pub fn stop_by_pid(child: &mut Child, limit: Duration) {
    let _ = rustix::process::kill_process(rustix::process::Pid::from_child(child), rustix::process::Signal::Term);
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
