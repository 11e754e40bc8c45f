//! Trusted time: the wall clock is compared, once a second, with the monotonic clock and
//! with the high-water mark of record times (`dg_storage::floor_ms`: the newest audit
//! entry's time, kept across restarts). A step back or a jump forward is logged, audited
//! (`clock_step`) and counted (`dg_clock_steps_total`); while the wall clock is behind the
//! high-water mark by more than `[time] readiness_bound_s`, `/readyz` answers degraded.
//! Records never sort before earlier ones whatever the clock does (`record_time_ms`).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A step smaller than this (wall clock against the monotonic clock) is drift, not a step.
pub const STEP_TOLERANCE_MS: i64 = 2000;

/// Which way the wall clock moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Back (an earlier time than before).
    Backward,
    /// Forward, further than the time that passed.
    Forward,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Self::Backward => "backward",
            Self::Forward => "forward",
        }
    }
}

/// One step seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockStep {
    /// Which way.
    pub direction: Direction,
    /// By how much, in milliseconds.
    pub amount_ms: i64,
    /// What the operator reads in the log and the audit entry.
    pub message: String,
}

/// The watch.
pub struct ClockWatch {
    last: Mutex<Option<(Instant, i64)>>,
    steps: [AtomicU64; 2],
    behind_ms: AtomicI64,
    readiness_bound_ms: i64,
}

impl ClockWatch {
    /// A watch that calls the appliance degraded while the wall clock is behind the
    /// high-water mark by more than `readiness_bound_s`.
    #[must_use]
    pub fn new(readiness_bound_s: u64) -> Self {
        Self {
            last: Mutex::new(None),
            steps: Default::default(),
            behind_ms: AtomicI64::new(0),
            readiness_bound_ms: i64::try_from(readiness_bound_s.saturating_mul(1000)).unwrap_or(i64::MAX),
        }
    }

    /// Compares the clocks now (`wall_ms` from `dg_storage::now_ms`, `high_water_ms` from
    /// `dg_storage::floor_ms`); returns the step seen since the last check, if any. The
    /// first check compares against the high-water mark only (a step across a restart).
    pub fn check(&self, wall_ms: i64, monotonic: Instant, high_water_ms: i64) -> Option<ClockStep> {
        let behind = high_water_ms.saturating_sub(wall_ms).max(0);
        self.behind_ms.store(behind, Ordering::Release);
        let Ok(mut last) = self.last.lock() else { return None };
        let previous = last.replace((monotonic, wall_ms));
        let step = match previous {
            Some((then, then_wall)) => {
                let elapsed = i64::try_from(monotonic.saturating_duration_since(then).as_millis()).unwrap_or(i64::MAX);
                let moved = wall_ms.saturating_sub(then_wall);
                let drift = moved.saturating_sub(elapsed);
                if drift < -STEP_TOLERANCE_MS {
                    Some((Direction::Backward, -drift))
                } else if drift > STEP_TOLERANCE_MS {
                    Some((Direction::Forward, drift))
                } else {
                    None
                }
            }
            // At start: behind the newest record means the clock went back while stopped.
            None if behind > STEP_TOLERANCE_MS => Some((Direction::Backward, behind)),
            None => None,
        };
        let (direction, amount_ms) = step?;
        self.steps[direction as usize].fetch_add(1, Ordering::Relaxed);
        let mut message = format!("the wall clock stepped {} by {:.1} s", direction.label(), amount_ms as f64 / 1000.0);
        if behind > 0 {
            let _ = write!(
                message,
                "; it is {:.1} s behind the newest audit record, whose time is kept until it catches up",
                behind as f64 / 1000.0
            );
        }
        Some(ClockStep { direction, amount_ms, message })
    }

    /// One check against the process's clocks; a step is logged and audited.
    pub fn watch_once(&self, store: &dyn dg_storage::StateStore) -> Option<ClockStep> {
        let step = self.check(dg_storage::now_ms(), Instant::now(), dg_storage::floor_ms())?;
        tracing::warn!(direction = step.direction.label(), amount_ms = step.amount_ms, "{}", step.message);
        let event = dg_storage::audit::AuditEvent {
            principal: "system".into(),
            action: "clock_step".into(),
            target: "wall_clock".into(),
            outcome: "warn".into(),
            reason: step.message.clone(),
            request_id: format!("clock-step-{:016x}", dg_crypto::random_u64()),
            ..Default::default()
        };
        if let Err(err) = store.append_audit(vec![event], Vec::new()) {
            tracing::error!(error = %err, "the clock step could not be audited");
        }
        Some(step)
    }

    /// Whether `/readyz` should say ready: not behind the high-water mark beyond the bound.
    ///
    /// # Errors
    /// Why not, for the answer.
    pub fn ready(&self) -> Result<(), String> {
        let behind = self.behind_ms.load(Ordering::Acquire);
        if behind > self.readiness_bound_ms {
            return Err(format!(
                "the wall clock is {:.0} s behind the newest audit record (bound {} s): check the time source",
                behind as f64 / 1000.0,
                self.readiness_bound_ms / 1000
            ));
        }
        Ok(())
    }

    /// The exposition text of the clock's series.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP dg_clock_steps_total Steps of the wall clock seen (against the monotonic clock or the newest record), by direction.");
        let _ = writeln!(out, "# TYPE dg_clock_steps_total counter");
        for direction in [Direction::Backward, Direction::Forward] {
            let count = self.steps[direction as usize].load(Ordering::Relaxed);
            let _ = writeln!(out, "dg_clock_steps_total{{direction=\"{}\"}} {count}", direction.label());
        }
        let _ = writeln!(
            out,
            "# HELP dg_clock_behind_seconds How far the wall clock is behind the newest audit record's time."
        );
        let _ = writeln!(out, "# TYPE dg_clock_behind_seconds gauge");
        let _ = writeln!(out, "dg_clock_behind_seconds {}", self.behind_ms.load(Ordering::Acquire) as f64 / 1000.0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn steps_are_told_from_drift_and_readiness_follows_the_bound() {
        let watch = ClockWatch::new(60);
        let t0 = Instant::now();
        assert_eq!(watch.check(1_000_000, t0, 1_000_000), None);
        assert_eq!(watch.check(1_001_500, t0 + Duration::from_millis(1000), 1_001_500), None, "drift within tolerance");
        let back = watch.check(1_002_000 - 3_600_000, t0 + Duration::from_millis(2000), 1_001_500).unwrap();
        assert_eq!(back.direction, Direction::Backward);
        assert!(watch.ready().is_err(), "an hour behind the newest record");
        let forward = watch.check(1_003_000, t0 + Duration::from_millis(3000), 1_001_500).unwrap();
        assert_eq!(forward.direction, Direction::Forward);
        assert!(watch.ready().is_ok());
        assert!(watch.render().contains("dg_clock_steps_total{direction=\"backward\"} 1"));
    }
}
