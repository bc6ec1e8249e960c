//! Time as a replaceable input, so that every time-dependent decision can be
//! tested in simulated time.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    #[must_use]
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }

    /// A shared system clock, as components take it.
    #[must_use]
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(SystemClock::new())
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
