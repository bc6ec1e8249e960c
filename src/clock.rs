//! Time as a replaceable input, so that every time-dependent decision can be
//! tested in simulated time.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A monotonic clock measured in nanoseconds from an arbitrary origin.
///
/// Components take an `Arc<dyn Clock>`; production code uses [`SystemClock`],
/// tests use [`ManualClock`] and move time by hand.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Nanoseconds since the clock's origin. Never decreases.
    fn now_ns(&self) -> u64;

    /// Sleeps until `now_ns() >= deadline_ns` or returns early; callers must
    /// re-check the time. [`ManualClock`] returns at once, so that background
    /// threads in simulated time do not stall.
    fn sleep_until(&self, deadline_ns: u64) {
        let now = self.now_ns();
        if deadline_ns > now {
            std::thread::sleep(Duration::from_nanos(deadline_ns - now));
        }
    }
}

/// The real monotonic clock ([`Instant`]).
///
/// Every `SystemClock` in a process measures from one origin (the first time
/// any of them was made), so timestamps taken by different components — each
/// defaulting to its own `SystemClock` — can be compared and ordered.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

/// The one origin of every [`SystemClock`] in the process.
static ORIGIN: OnceLock<Instant> = OnceLock::new();

impl SystemClock {
    /// The system clock, measuring from the process-wide origin.
    #[must_use]
    pub fn new() -> Self {
        SystemClock {
            origin: *ORIGIN.get_or_init(Instant::now),
        }
    }

    /// The system clock as components take it: every call returns the same
    /// shared clock.
    #[must_use]
    pub fn shared() -> Arc<dyn Clock> {
        static SHARED: OnceLock<Arc<dyn Clock>> = OnceLock::new();
        Arc::clone(SHARED.get_or_init(|| Arc::new(SystemClock::new())))
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to. Cloning shares the time.
///
/// ```
/// use selfheal::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_millis(5));
/// assert_eq!(clock.now_ns(), 5_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now_ns: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at time zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.now_ns.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the time; a value earlier than now is ignored (the clock is monotonic).
    pub fn set_ns(&self, ns: u64) {
        self.now_ns.fetch_max(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now_ns.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, _deadline_ns: u64) {
        // Simulated time does not pass by sleeping; yield so a test driving
        // the clock gets to run.
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clocks_share_one_origin() {
        let a = SystemClock::new();
        std::thread::sleep(Duration::from_millis(2));
        let b = SystemClock::new();
        // Made later, `b` reads no less than `a` read before it: one origin.
        let ta = a.now_ns();
        let tb = b.now_ns();
        assert!(tb >= ta && tb - ta < 1_000_000_000, "{ta} vs {tb}");
        assert!(Arc::ptr_eq(&SystemClock::shared(), &SystemClock::shared()));
    }

    #[test]
    fn manual_clock_is_monotonic_and_shared() {
        let c = ManualClock::new();
        let c2 = c.clone();
        c.advance(Duration::from_secs(1));
        c2.set_ns(10);
        assert_eq!(c.now_ns(), 1_000_000_000);
    }

    #[test]
    fn system_clock_moves_forward() {
        let c = SystemClock::new();
        let a = c.now_ns();
        std::thread::sleep(Duration::from_millis(1));
        assert!(c.now_ns() > a);
    }
}
