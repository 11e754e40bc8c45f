//! Keeps the CPUs from halting while the daemon serves requests, and lets them halt again
//! once it is idle.
//!
//! Why: every request waits twice for something outside the daemon (the disk's `fdatasync`
//! and the client's next bytes). On a virtual machine an idle vCPU halts, and the wake-up
//! that ends the wait costs tens of microseconds per event, several times per request:
//! on the project's 2-core VM a lone client's start+next cycles went from 880 to 1,317 per
//! second (plain HTTP, medians of five rounds, A/B in one run of the load bench).
//! Linux offers this through PM QoS: while a process holds `/dev/cpu_dma_latency` open with
//! a written target of 0 µs, the cpuidle governor uses only the polling idle state. Closing
//! the file (or exiting, even by SIGKILL) drops the request.
//!
//! The cost is CPU time spent polling while idle, so the hold is taken on a request and
//! given back `server.wake_latency_hold_ms` after the last one (a tick thread checks);
//! an idle appliance lets its CPUs sleep. Health and metrics probes do not take it; a
//! `stdio` session takes its own for its messages.
//! Without write access to the device (an unprivileged user, a container, the packaged
//! systemd unit with `PrivateDevices=yes`) the daemon runs as before and `/metrics` says
//! `unavailable`: this is a speed setting, never a reason to refuse to start.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The kernel's PM QoS interface for CPU wake-up latency.
pub const DEVICE: &str = "/dev/cpu_dma_latency";

/// The target written while busy: no wake-up latency, so idle CPUs poll.
pub const HOLD_TARGET_US: i32 = 0;

/// The target written when idle again: the kernel's default, no constraint
/// (`PM_QOS_CPU_LATENCY_DEFAULT_VALUE`).
pub const RELEASED_TARGET_US: i32 = 2_000_000_000;

/// Where the hold stands, for `/metrics` and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    /// Turned off in the configuration (`server.wake_latency_hold_ms = 0`).
    Off,
    /// Wanted, but the device could not be opened or written.
    Unavailable,
    /// Open, CPUs allowed to halt (idle).
    Released,
    /// Open, CPUs kept polling (busy).
    Held,
}

impl HoldState {
    /// The label on `/metrics`.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Unavailable => "unavailable",
            Self::Released => "released",
            Self::Held => "held",
        }
    }

    /// Every state, in the order `/metrics` lists them.
    pub const ALL: [Self; 4] = [Self::Off, Self::Unavailable, Self::Released, Self::Held];
}

/// The hold: one open PM QoS request whose target follows whether requests arrive.
pub struct WakeLatencyHold {
    /// The open device (or a test's stand-in); `None` when off or unavailable.
    target: Mutex<Option<Box<dyn Write + Send>>>,
    /// Off in the configuration: never touches a device.
    configured_off: bool,
    /// Whether the last written target was [`HOLD_TARGET_US`].
    held: AtomicBool,
    /// Set once a write failed or the device never opened.
    unavailable: AtomicBool,
    /// Milliseconds from `epoch` of the newest request activity.
    last_busy_ms: AtomicU64,
    epoch: Instant,
    release_after: Duration,
    /// How many times the hold was taken (each release-to-held change).
    engagements: AtomicU64,
}

impl WakeLatencyHold {
    /// A hold that never does anything (`server.wake_latency_hold_ms = 0`).
    #[must_use]
    pub fn off() -> Self {
        Self::build(None, true, Duration::ZERO)
    }

    /// Opens [`DEVICE`] for a hold released `release_after` after the last request, and
    /// starts the thread that releases it; `release_after` of zero is [`Self::off`].
    /// A device that cannot be opened leaves the hold unavailable (logged, not an error).
    #[must_use]
    pub fn open(release_after: Duration) -> Arc<Self> {
        if release_after.is_zero() {
            tracing::info!("CPU wake-up latency hold is off (server.wake_latency_hold_ms = 0)");
            return Arc::new(Self::off());
        }
        match OpenOptions::new().write(true).open(DEVICE) {
            Ok(file) => {
                tracing::info!(
                    device = DEVICE,
                    release_ms = release_after.as_millis() as u64,
                    "CPU wake-up latency hold available"
                );
                let hold = Arc::new(Self::build(Some(Box::new(file)), false, release_after));
                spawn_release_ticks(&hold);
                hold
            }
            Err(err) => {
                tracing::info!(device = DEVICE, error = %err, "CPU wake-up latency hold unavailable; CPUs may halt between the steps of a request");
                Arc::new(Self::build(None, false, release_after))
            }
        }
    }

    /// A hold writing to `target` instead of the device (tests); no release thread: the
    /// caller drives [`Self::release_if_idle`].
    #[must_use]
    pub fn with_target(target: Box<dyn Write + Send>, release_after: Duration) -> Self {
        Self::build(Some(target), false, release_after)
    }

    fn build(target: Option<Box<dyn Write + Send>>, configured_off: bool, release_after: Duration) -> Self {
        let unavailable = target.is_none() && !configured_off;
        Self {
            target: Mutex::new(target),
            configured_off,
            held: AtomicBool::new(false),
            unavailable: AtomicBool::new(unavailable),
            last_busy_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            release_after,
            engagements: AtomicU64::new(0),
        }
    }

    /// Marks request activity at `now`; takes the hold if it is not held. Called when a
    /// request begins and when it ends, so a long request is not released under itself.
    pub fn busy(&self, now: Instant) {
        self.last_busy_ms.store(self.millis(now), Ordering::Relaxed);
        if self.held.load(Ordering::Acquire) || self.configured_off || self.unavailable.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut target) = self.target.lock() else { return };
        if self.held.load(Ordering::Acquire) {
            return;
        }
        if self.write(&mut target, HOLD_TARGET_US) {
            self.engagements.fetch_add(1, Ordering::Relaxed);
            self.held.store(true, Ordering::Release);
        }
    }

    /// Gives the hold back when no request was active for the release time before `now`;
    /// returns whether it did.
    pub fn release_if_idle(&self, now: Instant) -> bool {
        if !self.held.load(Ordering::Acquire) {
            return false;
        }
        let Ok(mut target) = self.target.lock() else { return false };
        let idle_ms = self.millis(now).saturating_sub(self.last_busy_ms.load(Ordering::Relaxed));
        if !self.held.load(Ordering::Acquire) || u128::from(idle_ms) < self.release_after.as_millis() {
            return false;
        }
        // Whether or not the write lands, the next request tries to take the hold again.
        self.held.store(false, Ordering::Release);
        self.write(&mut target, RELEASED_TARGET_US)
    }

    /// Where the hold stands now.
    #[must_use]
    pub fn state(&self) -> HoldState {
        if self.configured_off {
            HoldState::Off
        } else if self.unavailable.load(Ordering::Relaxed) {
            HoldState::Unavailable
        } else if self.held.load(Ordering::Acquire) {
            HoldState::Held
        } else {
            HoldState::Released
        }
    }

    /// How many times the hold was taken since start.
    #[must_use]
    pub fn engagements(&self) -> u64 {
        self.engagements.load(Ordering::Relaxed)
    }

    /// Writes one target (the device takes a native-endian `s32`); a failure makes the
    /// hold unavailable for good and closes the device, which drops the kernel request.
    fn write(&self, target: &mut Option<Box<dyn Write + Send>>, value: i32) -> bool {
        let Some(writer) = target.as_mut() else { return false };
        match writer.write_all(&value.to_ne_bytes()).and_then(|()| writer.flush()) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(device = DEVICE, error = %err, "CPU wake-up latency hold failed; turning it off");
                *target = None;
                self.held.store(false, Ordering::Release);
                self.unavailable.store(true, Ordering::Relaxed);
                false
            }
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }
}

/// Checks four times per release period whether the hold can be given back; ends when
/// the hold is dropped.
fn spawn_release_ticks(hold: &Arc<WakeLatencyHold>) {
    let weak: Weak<WakeLatencyHold> = Arc::downgrade(hold);
    let tick = (hold.release_after / 4).max(Duration::from_millis(10));
    let spawned = std::thread::Builder::new().name("dg-wake-latency".into()).spawn(move || loop {
        std::thread::sleep(tick);
        let Some(hold) = weak.upgrade() else { return };
        hold.release_if_idle(Instant::now());
    });
    if let Err(err) = spawned {
        // Without the thread the hold would never be released: do not take it at all.
        tracing::warn!(error = %err, "cannot start the wake-up latency release thread; hold turned off");
        if let Ok(mut target) = hold.target.lock() {
            *target = None;
        }
        hold.unavailable.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Records every target written, as the device would receive them.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<i32>>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let bytes: [u8; 4] = buf.try_into().map_err(|_| std::io::Error::other("not one s32"))?;
            self.0.lock().unwrap().push(i32::from_ne_bytes(bytes));
            Ok(4)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A device that refuses every write (as after a revoked permission).
    struct Refusing;

    impl Write for Refusing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn taken_on_the_first_request_kept_while_busy_and_released_after_the_idle_time() {
        let recorder = Recorder::default();
        let hold = WakeLatencyHold::with_target(Box::new(recorder.clone()), Duration::from_millis(100));
        let t0 = Instant::now();
        assert_eq!(hold.state(), HoldState::Released);
        hold.busy(t0);
        hold.busy(t0 + Duration::from_millis(50));
        assert_eq!(hold.state(), HoldState::Held);
        assert_eq!(*recorder.0.lock().unwrap(), vec![HOLD_TARGET_US], "one write for a run of requests");
        // 99 ms after the last request: still held.
        assert!(!hold.release_if_idle(t0 + Duration::from_millis(149)));
        assert_eq!(hold.state(), HoldState::Held);
        assert!(hold.release_if_idle(t0 + Duration::from_millis(150)));
        assert_eq!(hold.state(), HoldState::Released);
        assert!(!hold.release_if_idle(t0 + Duration::from_millis(400)), "released once");
        hold.busy(t0 + Duration::from_millis(500));
        assert_eq!(*recorder.0.lock().unwrap(), vec![HOLD_TARGET_US, RELEASED_TARGET_US, HOLD_TARGET_US]);
        assert_eq!(hold.engagements(), 2);
    }

    #[test]
    fn a_failed_write_turns_the_hold_off_for_good_without_failing_requests() {
        let hold = WakeLatencyHold::with_target(Box::new(Refusing), Duration::from_millis(100));
        hold.busy(Instant::now());
        assert_eq!(hold.state(), HoldState::Unavailable);
        hold.busy(Instant::now());
        assert_eq!(hold.engagements(), 0);
    }

    #[test]
    fn off_never_writes() {
        let hold = WakeLatencyHold::off();
        hold.busy(Instant::now());
        assert_eq!(hold.state(), HoldState::Off);
        assert!(!hold.release_if_idle(Instant::now() + Duration::from_secs(10)));
    }

    #[test]
    fn the_release_thread_gives_the_hold_back_and_ends_with_the_hold() {
        let recorder = Recorder::default();
        let hold = Arc::new(WakeLatencyHold::with_target(Box::new(recorder.clone()), Duration::from_millis(40)));
        spawn_release_ticks(&hold);
        hold.busy(Instant::now());
        let deadline = Instant::now() + Duration::from_secs(5);
        while hold.state() == HoldState::Held && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(hold.state(), HoldState::Released);
        assert_eq!(*recorder.0.lock().unwrap(), vec![HOLD_TARGET_US, RELEASED_TARGET_US]);
        let weak = Arc::downgrade(&hold);
        drop(hold);
        assert!(weak.upgrade().is_none());
    }
}
