//! Failed authentications: counted per source address, throttled past a limit, and
//! audited as a summary. A wrong or missing key is answered `401` as before; once one
//! source has failed [`LIMIT`] times within a [`WINDOW`], its further failures are
//! answered `429` (with `Retry-After`) until the window ends — valid keys from the same
//! address are never affected. Every [`SUMMARY_EVERY`] at most one audit entry records how
//! many failures there were and from which sources (at most [`MAX_LISTED`] named), so a
//! flood of bad keys cannot fill the audit log. The per-source table is bounded too.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures one source may make per window before it is throttled.
pub const LIMIT: u32 = 20;
/// The counting window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How often at most a summary is audited.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(5);
/// Sources named in one summary.
pub const MAX_LISTED: usize = 8;
/// Sources tracked at once; past it the table starts over (a flood from many addresses
/// is then throttled a window later, never unbounded).
const MAX_SOURCES: usize = 4096;

#[derive(Default)]
struct State {
    window_start: Option<Instant>,
    per_source: HashMap<IpAddr, u32>,
    /// Failures since the last summary, by source (bounded by `per_source`).
    pending: BTreeMap<IpAddr, u64>,
    pending_throttled: u64,
    total: u64,
    throttled: u64,
}

/// One audited summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Failures since the previous summary.
    pub failures: u64,
    /// Of those, answered `429`.
    pub throttled: u64,
    /// Distinct sources.
    pub sources: usize,
    /// The sources with the most failures, at most [`MAX_LISTED`].
    pub top: Vec<(IpAddr, u64)>,
}

/// The tracker (one per HTTP front end).
#[derive(Default)]
pub struct AuthFailures {
    state: Mutex<State>,
}

impl AuthFailures {
    /// Records a failed authentication from `source`; returns how long to wait when the
    /// source is now throttled (answer `429`), `None` to answer `401`.
    pub fn record(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        let Ok(mut state) = self.state.lock() else { return None };
        let start = *state.window_start.get_or_insert(now);
        if now.duration_since(start) >= WINDOW {
            state.window_start = Some(now);
            state.per_source.clear();
        }
        if state.per_source.len() >= MAX_SOURCES && !state.per_source.contains_key(&source) {
            state.per_source.clear();
        }
        let count = state.per_source.entry(source).or_insert(0);
        *count += 1;
        let throttled = *count > LIMIT;
        state.total += 1;
        if state.pending.len() < MAX_SOURCES || state.pending.contains_key(&source) {
            *state.pending.entry(source).or_insert(0) += 1;
        }
        if throttled {
            state.throttled += 1;
            state.pending_throttled += 1;
            let start = state.window_start.unwrap_or(now);
            return Some(WINDOW.saturating_sub(now.duration_since(start)).max(Duration::from_secs(1)));
        }
        None
    }

    /// The failures since the last call, if any.
    pub fn take_summary(&self) -> Option<Summary> {
        let Ok(mut state) = self.state.lock() else { return None };
        if state.pending.is_empty() {
            return None;
        }
        let pending = std::mem::take(&mut state.pending);
        let throttled = std::mem::take(&mut state.pending_throttled);
        let mut top: Vec<(IpAddr, u64)> = pending.iter().map(|(ip, n)| (*ip, *n)).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(MAX_LISTED);
        Some(Summary { failures: pending.values().sum(), throttled, sources: pending.len(), top })
    }

    /// (failures, of which throttled) since the daemon started.
    pub fn totals(&self) -> (u64, u64) {
        self.state.lock().map(|s| (s.total, s.throttled)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_past_the_limit_is_throttled_until_the_window_ends_and_summaries_are_bounded() {
        let failures = AuthFailures::default();
        let now = Instant::now();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..LIMIT {
            assert_eq!(failures.record(a, now), None);
        }
        assert!(failures.record(a, now).is_some(), "the 21st failure is throttled");
        assert_eq!(failures.record(b, now), None, "another source is not");
        assert!(failures.record(a, now + WINDOW).is_none(), "a new window starts over");
        let summary = failures.take_summary().unwrap();
        assert_eq!(summary.failures, u64::from(LIMIT) + 3);
        assert_eq!(summary.throttled, 1);
        assert_eq!(summary.sources, 2);
        assert_eq!(summary.top[0], (a, u64::from(LIMIT) + 2));
        assert_eq!(failures.take_summary(), None, "nothing new since");
        for i in 0..100u8 {
            failures.record([10, 1, 0, i].into(), now);
        }
        assert_eq!(failures.take_summary().unwrap().top.len(), MAX_LISTED);
    }
}
