//! Which connections sent requests lately. A request may run on its connection's own
//! thread only when no other connection is active: with one async thread, a request
//! running there makes every other connection's request wait until it ends, so under
//! concurrent load requests must go to the blocking pool (where they also share group
//! commits). Idle keep-alive connections (a metrics scraper, a pooled client) do not
//! count, only requests begun within the window.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after its last request a connection still counts as active.
pub const ACTIVE_WINDOW: Duration = Duration::from_millis(100);

/// The most recent request start, and the most recent one by any other connection.
#[derive(Default)]
struct Starts {
    last_connection: u64,
    last_at: Option<Instant>,
    /// Newest start by a connection other than `last_connection`.
    other_at: Option<Instant>,
}

/// Request starts by connection, reduced to what the decision needs.
pub struct RecentActivity {
    starts: Mutex<Starts>,
    window: Duration,
}

impl RecentActivity {
    /// Connections count as active for `window` after their last request began.
    #[must_use]
    pub fn new(window: Duration) -> Self {
        Self { starts: Mutex::new(Starts::default()), window }
    }

    /// Records that `connection` (ids start at 1) begins a request at `now`; returns
    /// whether another connection began one within the window before it. A poisoned
    /// lock answers `true`, the safe side (the pool).
    pub fn begin(&self, connection: u64, now: Instant) -> bool {
        let Ok(mut starts) = self.starts.lock() else { return true };
        let other_at = if starts.last_connection == connection { starts.other_at } else { starts.last_at };
        if starts.last_connection != connection {
            starts.other_at = starts.last_at;
            starts.last_connection = connection;
        }
        starts.last_at = Some(now);
        other_at.is_some_and(|at| now.saturating_duration_since(at) < self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_lone_connection_is_never_busy() {
        let (activity, t) = (RecentActivity::new(ACTIVE_WINDOW), Instant::now());
        for ms in 0..50 {
            assert!(!activity.begin(1, at(t, ms)));
        }
    }

    #[test]
    fn alternating_connections_are_busy() {
        let (activity, t) = (RecentActivity::new(ACTIVE_WINDOW), Instant::now());
        assert!(!activity.begin(1, at(t, 0)));
        assert!(activity.begin(2, at(t, 1)));
        assert!(activity.begin(1, at(t, 2)));
        assert!(activity.begin(3, at(t, 3)));
        assert!(activity.begin(1, at(t, 4)));
    }

    #[test]
    fn another_connection_counts_for_the_window_after_its_last_request() {
        let (activity, t) = (RecentActivity::new(ACTIVE_WINDOW), Instant::now());
        assert!(!activity.begin(1, at(t, 0)));
        assert!(activity.begin(2, at(t, 10)), "connection 1 was active 10 ms before");
        assert!(activity.begin(1, at(t, 20)), "connection 2 was active 10 ms before");
        assert!(activity.begin(1, at(t, 60)), "connection 2 still within the window");
        assert!(activity.begin(1, at(t, 109)));
        assert!(!activity.begin(1, at(t, 110)), "connection 2 idle for a whole window");
        assert!(!activity.begin(1, at(t, 500)));
        assert!(!activity.begin(2, at(t, 700)), "connection 1 idle for 200 ms");
    }
}
