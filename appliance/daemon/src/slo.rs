//! The series the service level objectives and their alerts need (`docs/slo.md`,
//! `packaging/prometheus/dg-appliance.rules.yml`) beyond the request counters: decision
//! latency (start, next, submit, trigger), the TLS certificate's expiry, the last
//! successful backup, and the data directory's disk headroom.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use dg_identity::Operation;
use dg_storage::StateStore;

/// Decision latency bucket bounds, in seconds (the SLO's threshold, 25 ms, is one).
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// The decisions measured: the tools that move a run.
const DECISIONS: [Operation; 4] =
    [Operation::ScenarioStart, Operation::ScenarioNext, Operation::ScenarioSubmit, Operation::ScenarioTrigger];

#[derive(Default, Clone, Copy)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The SLO series' state.
#[derive(Default)]
pub struct SloSeries {
    decisions: Mutex<[Histogram; DECISIONS.len()]>,
    /// The served certificate's notAfter (unix seconds); 0 when serving plain HTTP.
    certificate_expiry_s: AtomicI64,
    data_root: OnceLock<PathBuf>,
}

impl SloSeries {
    /// Counts one finished operation (only decisions are kept).
    pub fn record(&self, operation: Operation, elapsed: Duration) {
        let Some(index) = DECISIONS.iter().position(|d| *d == operation) else { return };
        let Ok(mut decisions) = self.decisions.lock() else { return };
        let histogram = &mut decisions[index];
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in histogram.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// The data directory whose filesystem headroom is reported.
    pub fn watch_data_dir(&self, root: &Path) {
        let _ = self.data_root.set(root.to_path_buf());
    }

    /// Reads the served certificate's expiry from its PEM file.
    ///
    /// # Errors
    /// The file cannot be read or holds no certificate.
    pub fn watch_certificate(&self, cert_pem: &Path) -> Result<(), String> {
        let pem = dg_storage::read_bounded(cert_pem, 1024 * 1024, dg_storage::Links::Follow)
            .map_err(|err| format!("{}: {err}", cert_pem.display()))?;
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(&pem).map_err(|err| format!("{}: {err}", cert_pem.display()))?;
        let cert = pem.parse_x509().map_err(|err| format!("{}: {err}", cert_pem.display()))?;
        self.certificate_expiry_s.store(cert.validity().not_after.timestamp(), Ordering::Relaxed);
        Ok(())
    }

    /// The exposition text of these series.
    #[must_use]
    pub fn render(&self, store: &dyn StateStore) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP dg_decision_duration_seconds Time to answer a decision (start, next, submit, trigger), by tool."
        );
        let _ = writeln!(out, "# TYPE dg_decision_duration_seconds histogram");
        let decisions = self.decisions.lock().map(|d| *d).unwrap_or_default();
        for (operation, histogram) in DECISIONS.iter().zip(decisions) {
            let tool = operation.name();
            for (bound, count) in BUCKETS.iter().zip(histogram.buckets) {
                let _ = writeln!(out, "dg_decision_duration_seconds_bucket{{tool=\"{tool}\",le=\"{bound}\"}} {count}");
            }
            let _ =
                writeln!(out, "dg_decision_duration_seconds_bucket{{tool=\"{tool}\",le=\"+Inf\"}} {}", histogram.count);
            let _ = writeln!(out, "dg_decision_duration_seconds_sum{{tool=\"{tool}\"}} {}", histogram.sum);
            let _ = writeln!(out, "dg_decision_duration_seconds_count{{tool=\"{tool}\"}} {}", histogram.count);
        }
        let _ = writeln!(out, "# HELP dg_tls_certificate_expiry_timestamp_seconds When the served TLS certificate expires (0: plain HTTP).");
        let _ = writeln!(out, "# TYPE dg_tls_certificate_expiry_timestamp_seconds gauge");
        let _ = writeln!(
            out,
            "dg_tls_certificate_expiry_timestamp_seconds {}",
            self.certificate_expiry_s.load(Ordering::Relaxed)
        );
        let last_backup_s = store.last_backup_at_ms().ok().flatten().map_or(0, |ms| ms / 1000);
        let _ = writeln!(out, "# HELP dg_backup_last_success_timestamp_seconds When the last backup of this data directory was verified (0: never).");
        let _ = writeln!(out, "# TYPE dg_backup_last_success_timestamp_seconds gauge");
        let _ = writeln!(out, "dg_backup_last_success_timestamp_seconds {last_backup_s}");
        let (free, capacity) = self.data_root.get().and_then(|root| headroom(root)).unwrap_or((0, 0));
        let _ = writeln!(
            out,
            "# HELP dg_data_dir_free_bytes Bytes available to the appliance on the data directory's filesystem."
        );
        let _ = writeln!(out, "# TYPE dg_data_dir_free_bytes gauge");
        let _ = writeln!(out, "dg_data_dir_free_bytes {free}");
        let _ = writeln!(out, "# HELP dg_data_dir_capacity_bytes Size of the data directory's filesystem.");
        let _ = writeln!(out, "# TYPE dg_data_dir_capacity_bytes gauge");
        let _ = writeln!(out, "dg_data_dir_capacity_bytes {capacity}");
        out
    }
}

/// (available, total) bytes of the filesystem holding `root`.
fn headroom(root: &Path) -> Option<(u64, u64)> {
    let stat = rustix::fs::statvfs(root).ok()?;
    Some((stat.f_bavail.saturating_mul(stat.f_frsize), stat.f_blocks.saturating_mul(stat.f_frsize)))
}
