//! Wall-clock time, used only outside the logical record (row timestamps, key creation
//! and expiry, audit entry times, file names). The engine never reads a clock.
//!
//! Record times (audit entries, checkpoints, usage rows) come from [`record_time_ms`]:
//! never earlier than one given out before in this process, nor than the newest audit
//! entry when the store was opened ([`raise_floor`]), so a clock stepped back never makes
//! a record sort before an earlier one. The wall clock itself is watched by the daemon
//! (`clock_watch.rs`), which reports steps.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A shift of the wall clock, for tests that fake a clock step in-process.
static SHIFT_MS: AtomicI64 = AtomicI64::new(0);
/// The latest record time given out (or raised to at open).
static FLOOR_MS: AtomicI64 = AtomicI64::new(0);

/// Milliseconds since the Unix epoch (0 before it, saturating far after it).
#[must_use]
pub fn now_ms() -> i64 {
    let system =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    system.saturating_add(SHIFT_MS.load(Ordering::Relaxed))
}

/// The time for a new record: the wall clock, held at the latest record time while the
/// wall clock is behind it.
#[must_use]
pub fn record_time_ms() -> i64 {
    let now = now_ms();
    let previous = FLOOR_MS.fetch_max(now, Ordering::AcqRel);
    previous.max(now)
}

/// Raises the record-time floor (the newest audit entry's time, when a store opens).
pub fn raise_floor(ms: i64) {
    FLOOR_MS.fetch_max(ms, Ordering::AcqRel);
}

/// The latest record time given out: the high-water mark of wall time.
#[must_use]
pub fn floor_ms() -> i64 {
    FLOOR_MS.load(Ordering::Acquire)
}

/// Shifts this process's wall clock by `ms` (negative: back). For tests only: it fakes a
/// clock step without touching the machine's clock.
#[doc(hidden)]
pub fn shift_wall_clock_for_tests(ms: i64) {
    SHIFT_MS.fetch_add(ms, Ordering::AcqRel);
}
