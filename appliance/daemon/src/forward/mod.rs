//! Audit forwarding: the chain streamed to the site's syslog collector (SIEM) from a thread
//! of its own, so a collector that is down or slow never blocks or fails a request (the
//! chain in the database is the source of truth).
//!
//! Delivery is at-least-once and in order. Entries are sent in sequence; an entry counts
//! as delivered (the cursor, kept in the database, moves past it) once it was written at
//! least [`DELIVERY_GRACE`] ago on a connection that is still open. After a reconnect or a
//! restart, sending resumes after the cursor: entries sent but not yet counted are sent
//! again (duplicates only across a reconnect, each marked by its sequence number).

mod connection;
pub mod settings;
pub mod syslog;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dg_storage::StateStore;

pub use settings::ForwardSettings;

/// How long a sent entry must have been on an open connection to count as delivered.
pub const DELIVERY_GRACE: Duration = Duration::from_secs(1);
/// Entries read and sent per round.
const PAGE: usize = 256;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often an idle forwarder looks for new entries.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ForwardMetrics {
    connected: AtomicBool,
    sent: AtomicU64,
    reconnects: AtomicU64,
    lag_entries: AtomicU64,
    lag_ms: AtomicU64,
}

impl ForwardMetrics {
    /// The exposition text.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP dg_audit_forward_connected Whether the syslog collector is connected.");
        let _ = writeln!(out, "# TYPE dg_audit_forward_connected gauge");
        let _ = writeln!(out, "dg_audit_forward_connected {}", u8::from(self.connected.load(Ordering::Relaxed)));
        let _ = writeln!(
            out,
            "# HELP dg_audit_forward_sent_total Audit entries written to the collector (resends included)."
        );
        let _ = writeln!(out, "# TYPE dg_audit_forward_sent_total counter");
        let _ = writeln!(out, "dg_audit_forward_sent_total {}", self.sent.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP dg_audit_forward_reconnects_total Connections to the collector lost or refused.");
        let _ = writeln!(out, "# TYPE dg_audit_forward_reconnects_total counter");
        let _ = writeln!(out, "dg_audit_forward_reconnects_total {}", self.reconnects.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP dg_audit_forward_lag_entries Audit entries not yet delivered to the collector.");
        let _ = writeln!(out, "# TYPE dg_audit_forward_lag_entries gauge");
        let _ = writeln!(out, "dg_audit_forward_lag_entries {}", self.lag_entries.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP dg_audit_forward_lag_seconds Age of the oldest audit entry not yet delivered.");
        let _ = writeln!(out, "# TYPE dg_audit_forward_lag_seconds gauge");
        let _ = writeln!(out, "dg_audit_forward_lag_seconds {}", self.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0);
        out
    }
}

/// The running forwarder.
pub struct Forwarder {
    /// Its counters.
    pub metrics: Arc<ForwardMetrics>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Starts forwarding from the stored cursor.
    ///
    /// # Errors
    /// The TLS material cannot be read.
    pub fn start(settings: &ForwardSettings, store: Arc<dyn StateStore>) -> Result<Self, String> {
        let connector = connection::Connector::new(settings)?;
        let hostname = syslog::hostname_field(
            &settings
                .hostname
                .clone()
                .unwrap_or_else(|| rustix::system::uname().nodename().to_string_lossy().to_string()),
        );
        let metrics = Arc::new(ForwardMetrics::default());
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker { store, connector, hostname, metrics: metrics.clone(), stop: stop.clone() };
        let thread = std::thread::Builder::new()
            .name("audit-forward".into())
            .spawn(move || worker.run())
            .map_err(|err| format!("cannot start the audit forwarder: {err}"))?;
        Ok(Self { metrics, stop, thread: Some(thread) })
    }

    /// Stops the thread (it keeps the cursor it has; what was sent since is sent again
    /// at the next start).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

struct Worker {
    store: Arc<dyn StateStore>,
    connector: connection::Connector,
    hostname: String,
    metrics: Arc<ForwardMetrics>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn pause(&self, how_long: Duration) {
        let until = Instant::now() + how_long;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::park_timeout(left);
        }
    }

    fn run(self) {
        let mut delivered = match self.store.forward_cursor() {
            Ok(cursor) => cursor,
            Err(err) => {
                tracing::error!(error = %err, "audit forwarding cannot read its cursor; not started");
                return;
            }
        };
        let pid = std::process::id();
        let mut backoff = Duration::from_secs(1);
        let mut connection: Option<connection::Stream> = None;
        let mut sent = delivered;
        let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::new();
        let mut saved = delivered;
        let mut last_save = Instant::now();
        let mut reported_down = false;
        while !self.stopping() {
            self.update_lag(delivered);
            let Some(stream) = connection.as_mut() else {
                match self.connector.connect() {
                    Ok(stream) => {
                        tracing::info!(collector = %self.connector.describe(), from_seq = delivered + 1, "audit forwarding connected");
                        connection = Some(stream);
                        self.metrics.connected.store(true, Ordering::Relaxed);
                        sent = delivered;
                        in_flight.clear();
                        backoff = Duration::from_secs(1);
                        reported_down = false;
                    }
                    Err(err) => {
                        if !reported_down {
                            tracing::warn!(collector = %self.connector.describe(), error = %err,
                                "audit forwarding cannot reach the collector; retrying (requests are not affected)");
                            reported_down = true;
                        }
                        self.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
                        self.pause(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            };
            // Entries on an open connection for the grace time count as delivered.
            if stream.is_open() {
                let now = Instant::now();
                while let Some((seq, at)) = in_flight.front().copied() {
                    if now.duration_since(at) < DELIVERY_GRACE {
                        break;
                    }
                    delivered = seq;
                    in_flight.pop_front();
                }
            } else {
                tracing::warn!(collector = %self.connector.describe(), "the collector closed the connection; resending from the cursor");
                self.lost(&mut connection);
                continue;
            }
            if delivered > saved && (last_save.elapsed() >= Duration::from_secs(1) || in_flight.is_empty()) {
                match self.store.set_forward_cursor(delivered) {
                    Ok(()) => saved = delivered,
                    Err(err) => tracing::warn!(error = %err, "audit forwarding cursor not saved"),
                }
                last_save = Instant::now();
            }
            let page = match self.store.audit_page(sent, PAGE) {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(error = %err, "audit forwarding cannot read the chain");
                    self.pause(Duration::from_secs(1));
                    continue;
                }
            };
            if page.is_empty() {
                self.pause(if in_flight.is_empty() { IDLE_POLL } else { Duration::from_millis(100) });
                continue;
            }
            let mut batch = Vec::with_capacity(page.len() * 512);
            for entry in &page {
                batch.extend_from_slice(&syslog::framed(entry, &self.hostname, pid));
            }
            match stream.write_all(&batch).and_then(|()| stream.flush()) {
                Ok(()) => {
                    let now = Instant::now();
                    for entry in &page {
                        in_flight.push_back((entry.seq, now));
                    }
                    sent = page.last().map_or(sent, |entry| entry.seq);
                    self.metrics.sent.fetch_add(page.len() as u64, Ordering::Relaxed);
                }
                Err(err) => {
                    tracing::warn!(collector = %self.connector.describe(), error = %err, "audit forwarding write failed; resending from the cursor");
                    self.lost(&mut connection);
                }
            }
        }
        if delivered > saved {
            let _ = self.store.set_forward_cursor(delivered);
        }
    }

    fn lost(&self, connection: &mut Option<connection::Stream>) {
        *connection = None;
        self.metrics.connected.store(false, Ordering::Relaxed);
        self.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    fn update_lag(&self, delivered: u64) {
        let Ok((head, _)) = self.store.audit_head() else { return };
        self.metrics.lag_entries.store(head.saturating_sub(delivered), Ordering::Relaxed);
        let oldest = self.store.audit_page(delivered, 1).ok().and_then(|page| page.first().map(|e| e.time_ms));
        let lag = oldest.map_or(0, |time| dg_storage::now_ms().saturating_sub(time).max(0));
        self.metrics.lag_ms.store(u64::try_from(lag).unwrap_or(0), Ordering::Relaxed);
    }
}
