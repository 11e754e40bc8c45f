//! Prometheus metrics: request counts by endpoint and outcome, latency histogram, errors
//! by code, runs by status, storage integrity failures. Text exposition format 0.0.4.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use dg_storage::CheckpointCounts;

/// Latency bucket bounds in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String), u64>,
    errors: BTreeMap<i64, u64>,
    latency_buckets: [u64; BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
    runs_started: u64,
    audit_failures: u64,
    executed: [u64; 2],
    refused_before_body: u64,
    body_read_timeouts: u64,
    connections_refused: u64,
}

/// Where a JSON-RPC request's work ran: the connection's own thread (alone in flight)
/// or the blocking pool. Exposed so an operator can see which path the load takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    /// On the connection's async thread, without a hand-off.
    ConnectionThread,
    /// On tokio's blocking pool.
    BlockingPool,
}

impl Executor {
    fn label(self) -> &'static str {
        match self {
            Self::ConnectionThread => "connection_thread",
            Self::BlockingPool => "blocking_pool",
        }
    }
}

/// Counters shared by every request.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Records one answered request.
    pub fn record_request(&self, endpoint: &str, method: &str, error_code: Option<i64>, elapsed: Duration) {
        let Ok(mut inner) = self.inner.lock() else { return };
        *inner.requests.entry((endpoint.to_string(), method.to_string())).or_default() += 1;
        if let Some(code) = error_code {
            *inner.errors.entry(code).or_default() += 1;
        }
        let seconds = elapsed.as_secs_f64();
        for (index, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                inner.latency_buckets[index] += 1;
            }
        }
        inner.latency_count += 1;
        inner.latency_sum += seconds;
    }

    /// Counts where one JSON-RPC request's work ran.
    pub fn request_executed(&self, executor: Executor) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.executed[executor as usize] += 1;
        }
    }

    /// Counts a JSON-RPC request answered from its headers alone (unauthenticated, rate
    /// limited, or no in-flight slot): its body was never read.
    pub fn refused_before_body(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.refused_before_body += 1;
        }
    }

    /// Counts a connection closed at accept because `server.max_connections` were open.
    pub fn connection_refused(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.connections_refused += 1;
        }
    }

    /// Counts a request whose body did not arrive within `server.body_read_timeout_ms`.
    pub fn body_read_timeout(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.body_read_timeouts += 1;
        }
    }

    /// Counts a started run.
    pub fn run_started(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.runs_started += 1;
        }
    }

    /// Counts a request failed because its audit entry could not be written.
    pub fn audit_failure(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.audit_failures += 1;
        }
    }

    /// Renders the exposition text; `runs_by_status` and `integrity_failures` come from storage.
    #[must_use]
    pub fn render(
        &self,
        runs_by_status: &[(String, u64)],
        integrity_failures: u64,
        checkpoints: &CheckpointCounts,
        inflight: usize,
        auth_failures: (u64, u64),
        connections_open: usize,
    ) -> String {
        let mut out = String::new();
        let Ok(inner) = self.inner.lock() else { return out };
        let _ = writeln!(out, "# HELP dg_requests_total Requests answered, by endpoint and JSON-RPC method.");
        let _ = writeln!(out, "# TYPE dg_requests_total counter");
        for ((endpoint, method), count) in &inner.requests {
            let _ = writeln!(out, "dg_requests_total{{endpoint=\"{endpoint}\",method=\"{method}\"}} {count}");
        }
        let _ = writeln!(out, "# HELP dg_request_errors_total Error responses, by JSON-RPC error code.");
        let _ = writeln!(out, "# TYPE dg_request_errors_total counter");
        for (code, count) in &inner.errors {
            let _ = writeln!(out, "dg_request_errors_total{{code=\"{code}\"}} {count}");
        }
        let _ = writeln!(out, "# HELP dg_request_duration_seconds Request latency.");
        let _ = writeln!(out, "# TYPE dg_request_duration_seconds histogram");
        for (index, bound) in BUCKETS.iter().enumerate() {
            let _ =
                writeln!(out, "dg_request_duration_seconds_bucket{{le=\"{bound}\"}} {}", inner.latency_buckets[index]);
        }
        let _ = writeln!(out, "dg_request_duration_seconds_bucket{{le=\"+Inf\"}} {}", inner.latency_count);
        let _ = writeln!(out, "dg_request_duration_seconds_sum {}", inner.latency_sum);
        let _ = writeln!(out, "dg_request_duration_seconds_count {}", inner.latency_count);
        let _ = writeln!(out, "# HELP dg_runs Runs stored, by status.");
        let _ = writeln!(out, "# TYPE dg_runs gauge");
        for (status, count) in runs_by_status {
            let _ = writeln!(out, "dg_runs{{status=\"{status}\"}} {count}");
        }
        let module = crypto_module();
        let _ = writeln!(out, "# HELP dg_fips_mode 1 when the crypto provider is the FIPS module in FIPS mode.");
        let _ = writeln!(out, "# TYPE dg_fips_mode gauge");
        let _ = writeln!(out, "dg_fips_mode {}", u8::from(module.fips_mode));
        let _ = writeln!(out, "# HELP dg_crypto_provider_info The crypto provider this build runs (standard or fips).");
        let _ = writeln!(out, "# TYPE dg_crypto_provider_info gauge");
        let _ = writeln!(out, "dg_crypto_provider_info{{provider=\"{}\"}} 1", module.provider);
        let _ = writeln!(out, "# HELP dg_runs_started_total Runs started since the daemon started.");
        let _ = writeln!(out, "# TYPE dg_runs_started_total counter");
        let _ = writeln!(out, "dg_runs_started_total {}", inner.runs_started);
        let _ =
            writeln!(out, "# HELP dg_storage_integrity_failures_total Stored documents that failed their hash check.");
        let _ = writeln!(out, "# TYPE dg_storage_integrity_failures_total counter");
        let _ = writeln!(out, "dg_storage_integrity_failures_total {integrity_failures}");
        let _ = writeln!(
            out,
            "# HELP dg_audit_write_failures_total Requests failed because their audit entry could not be written."
        );
        let _ = writeln!(out, "# TYPE dg_audit_write_failures_total counter");
        let _ = writeln!(out, "dg_audit_write_failures_total {}", inner.audit_failures);
        let _ = writeln!(out, "# HELP dg_request_executions_total JSON-RPC requests by where their work ran.");
        let _ = writeln!(out, "# TYPE dg_request_executions_total counter");
        for executor in [Executor::ConnectionThread, Executor::BlockingPool] {
            let count = inner.executed[executor as usize];
            let _ = writeln!(out, "dg_request_executions_total{{executor=\"{}\"}} {count}", executor.label());
        }
        let _ = writeln!(out, "# HELP dg_connections_open Connections open now (at most server.max_connections).");
        let _ = writeln!(out, "# TYPE dg_connections_open gauge");
        let _ = writeln!(out, "dg_connections_open {connections_open}");
        let _ = writeln!(
            out,
            "# HELP dg_connections_refused_total Connections closed at accept because server.max_connections were open."
        );
        let _ = writeln!(out, "# TYPE dg_connections_refused_total counter");
        let _ = writeln!(out, "dg_connections_refused_total {}", inner.connections_refused);
        let _ = writeln!(
            out,
            "# HELP dg_auth_failures_total Failed authentications (wrong, expired, revoked or missing keys), by how they were answered."
        );
        let _ = writeln!(out, "# TYPE dg_auth_failures_total counter");
        let (failures, throttled) = auth_failures;
        let _ = writeln!(out, "dg_auth_failures_total{{answer=\"unauthenticated\"}} {}", failures - throttled);
        let _ = writeln!(out, "dg_auth_failures_total{{answer=\"throttled\"}} {throttled}");
        let _ = writeln!(
            out,
            "# HELP dg_http_refused_before_body_total JSON-RPC requests answered from their headers alone (unauthenticated, rate limited, no in-flight slot); their bodies were never read."
        );
        let _ = writeln!(out, "# TYPE dg_http_refused_before_body_total counter");
        let _ = writeln!(out, "dg_http_refused_before_body_total {}", inner.refused_before_body);
        let _ = writeln!(
            out,
            "# HELP dg_http_body_read_timeouts_total Requests whose body did not arrive within server.body_read_timeout_ms (the connection was closed)."
        );
        let _ = writeln!(out, "# TYPE dg_http_body_read_timeouts_total counter");
        let _ = writeln!(out, "dg_http_body_read_timeouts_total {}", inner.body_read_timeouts);
        let _ = writeln!(
            out,
            "# HELP dg_wal_checkpoints_total WAL checkpoints: background passes, the writer's finishing steps, failures."
        );
        let _ = writeln!(out, "# TYPE dg_wal_checkpoints_total counter");
        let _ = writeln!(out, "dg_wal_checkpoints_total{{stage=\"background\"}} {}", checkpoints.background_passes);
        let _ = writeln!(out, "dg_wal_checkpoints_total{{stage=\"finish\"}} {}", checkpoints.writer_finishes);
        let _ = writeln!(out, "dg_wal_checkpoints_total{{stage=\"failed\"}} {}", checkpoints.failures);
        let _ = writeln!(out, "# HELP dg_requests_in_flight Requests being handled now.");
        let _ = writeln!(out, "# TYPE dg_requests_in_flight gauge");
        let _ = writeln!(out, "dg_requests_in_flight {inflight}");
        out
    }
}

/// The build's crypto provider, read once (it cannot change while the process runs).
fn crypto_module() -> &'static dg_crypto::Module {
    static MODULE: std::sync::OnceLock<dg_crypto::Module> = std::sync::OnceLock::new();
    MODULE.get_or_init(dg_crypto::module)
}
