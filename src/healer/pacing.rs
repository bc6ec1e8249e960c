//! Its contract is documented on [`Backoff`] (this module is private; its
//! items are re-exported by its parent).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use rand::Rng;

use crate::error::{Error, Result};

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Exponential backoff with full jitter: before attempt `n` (counting from
/// 0), wait a uniformly random time in `0 ..= min(cap, base · 2ⁿ)`. Full
/// jitter spreads retries of many targets that failed together instead of
/// waking them in lockstep.
///
/// How often the healer may act: exponential backoff with full jitter
/// between attempts on one target, a cooldown per target after an action,
/// and a restart intensity per component (at most N restarts in a period,
/// as OTP supervisors allow), beyond which it escalates instead of storming.
///
/// All three are pure: they take the clock's `now_ns` (and, for jitter, a
/// seeded random source), so tests run in simulated time and replay exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// A backoff starting at `base` and never above `cap`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero `base` or a `cap` below it.
    pub fn new(base: Duration, cap: Duration) -> Result<Self> {
        if base.is_zero() {
            return Err(Error::config("backoff_base", "is 0; it must be positive"));
        }
        if cap < base {
            return Err(Error::config(
                "backoff_cap",
                format!("is {cap:?}, below the base {base:?}; it must be at least the base"),
            ));
        }
        Ok(Backoff { base, cap })
    }

    /// The most attempt `attempt` may wait: `min(cap, base · 2^attempt)`.
    #[must_use]
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(0);
        if factor == 0 {
            return self.cap;
        }
        self.base
            .checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The wait before attempt `attempt`: uniform in `0 ..= ceiling(attempt)`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let top = nanos(self.ceiling(attempt));
        Duration::from_nanos(rng.random_range(0..=top))
    }
}

/// Restarts a [`RestartIntensity`] may be configured to allow per period at
/// most.
pub const MAX_RESTARTS: u32 = 10_000;

/// At most `max_restarts` restarts of one component within `period`; the
/// next one is refused, and the healer escalates instead of restarting a
/// component that keeps dying.
#[derive(Clone, Debug)]
pub struct RestartIntensity {
    max_restarts: u32,
    period_ns: u64,
    recent: VecDeque<u64>,
}

impl RestartIntensity {
    /// At most `max_restarts` in `period`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for zero restarts, more than
    /// [`MAX_RESTARTS`], or a zero period.
    pub fn new(max_restarts: u32, period: Duration) -> Result<Self> {
        if max_restarts == 0 {
            return Err(Error::config(
                "max_restarts",
                "is 0; allow at least one restart (or do not configure the restart remedy)",
            ));
        }
        if max_restarts > MAX_RESTARTS {
            return Err(Error::config(
                "max_restarts",
                format!("is {max_restarts}; allow 1 to {MAX_RESTARTS} restarts per period"),
            ));
        }
        if period.is_zero() {
            return Err(Error::config("restart_period", "is 0; it must be positive"));
        }
        Ok(RestartIntensity {
            max_restarts,
            period_ns: nanos(period),
            // Grows with the restarts made, never preallocated from the
            // configuration.
            recent: VecDeque::new(),
        })
    }

    /// Restarts counted within the period ending at `now_ns`.
    pub fn recent(&mut self, now_ns: u64) -> usize {
        while self
            .recent
            .front()
            .is_some_and(|&t| now_ns.saturating_sub(t) >= self.period_ns)
        {
            self.recent.pop_front();
        }
        self.recent.len()
    }

    /// Whether a restart may happen now, without counting one.
    pub fn would_permit(&mut self, now_ns: u64) -> bool {
        self.recent(now_ns) < self.max_restarts as usize
    }

    /// Whether a restart may happen now; if so it is counted.
    pub fn permit(&mut self, now_ns: u64) -> bool {
        if self.recent(now_ns) >= self.max_restarts as usize {
            return false;
        }
        self.recent.push_back(now_ns);
        debug_assert!(self.recent.len() <= self.max_restarts as usize);
        true
    }
}

/// The last action per key, to keep a quiet time after acting on a target.
/// Bounded: beyond `capacity` keys, the oldest entry is forgotten (which can
/// only shorten a cooldown, never lengthen one).
#[derive(Clone, Debug)]
pub struct Cooldowns<K: Eq + Hash + Clone> {
    quiet_ns: u64,
    capacity: usize,
    last: HashMap<K, u64>,
}

impl<K: Eq + Hash + Clone> Cooldowns<K> {
    /// A quiet time of `quiet` per key, for at most `capacity` keys.
    #[must_use]
    pub fn new(quiet: Duration, capacity: usize) -> Self {
        Cooldowns {
            quiet_ns: nanos(quiet),
            capacity: capacity.max(1),
            last: HashMap::new(),
        }
    }

    /// When `key` may be acted on again (`None`: now).
    #[must_use]
    pub fn ready_at(&self, key: &K, now_ns: u64) -> Option<u64> {
        let at = self.last.get(key)?.saturating_add(self.quiet_ns);
        (at > now_ns).then_some(at)
    }

    /// Records an action on `key` at `now_ns`.
    pub fn acted(&mut self, key: K, now_ns: u64) {
        if !self.last.contains_key(&key) && self.last.len() >= self.capacity {
            if let Some(oldest) = self
                .last
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
            {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(key, now_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    const S: u64 = 1_000_000_000;

    #[test]
    fn backoff_doubles_to_the_cap_and_jitters_below_it() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).unwrap();
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(5), Duration::from_secs(2));
        assert_eq!(b.ceiling(200), Duration::from_secs(2));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(4, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(1600)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 150, "full jitter spreads retries");
        assert!(Backoff::new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn intensity_allows_n_in_t_then_refuses_until_the_period_passes() {
        let mut r = RestartIntensity::new(3, Duration::from_secs(60)).unwrap();
        assert!(r.permit(0));
        assert!(r.permit(10 * S));
        assert!(r.permit(20 * S));
        assert!(!r.permit(30 * S), "fourth within 60 s");
        assert!(!r.permit(59 * S));
        assert!(r.permit(61 * S), "the first has aged out");
        assert!(RestartIntensity::new(0, Duration::from_secs(1)).is_err());
        assert!(RestartIntensity::new(1, Duration::ZERO).is_err());
    }

    #[test]
    fn a_restart_bound_past_the_limit_is_a_typed_error_not_an_allocation() {
        for max in [MAX_RESTARTS + 1, u32::MAX] {
            match RestartIntensity::new(max, Duration::from_secs(1)) {
                Err(Error::InvalidConfig { field, reason }) => {
                    assert_eq!(field, "max_restarts");
                    assert!(reason.contains(&max.to_string()), "{reason}");
                    assert!(reason.contains(&MAX_RESTARTS.to_string()), "{reason}");
                }
                other => panic!("max_restarts {max}: {other:?}"),
            }
        }
        let mut r = RestartIntensity::new(MAX_RESTARTS, Duration::from_secs(1)).unwrap();
        assert_eq!(r.recent.capacity(), 0, "nothing is allocated up front");
        assert!(r.permit(0));
    }

    #[test]
    fn cooldown_is_per_key_and_bounded() {
        let mut c = Cooldowns::new(Duration::from_secs(5), 2);
        c.acted("a", 0);
        assert_eq!(c.ready_at(&"a", S), Some(5 * S));
        assert_eq!(c.ready_at(&"a", 5 * S), None);
        assert_eq!(c.ready_at(&"b", 0), None);
        c.acted("b", 1);
        c.acted("c", 2); // forgets "a", the oldest
        assert_eq!(c.ready_at(&"a", 3), None);
        assert!(c.ready_at(&"c", 3).is_some());
    }

    proptest! {
        /// Over any sequence of requests, no window of `period` ever holds
        /// more than `max` permitted restarts.
        #[test]
        fn intensity_never_exceeds_its_bound(max in 1u32..5, period_s in 1u64..30, steps in proptest::collection::vec(0u64..10, 1..200)) {
            let mut r = RestartIntensity::new(max, Duration::from_secs(period_s)).unwrap();
            let mut now = 0;
            let mut permitted = Vec::new();
            for step in steps {
                now += step * S;
                if r.permit(now) {
                    permitted.push(now);
                }
            }
            for (i, &t) in permitted.iter().enumerate() {
                let within = permitted[i..].iter().take_while(|&&u| u < t + period_s * S).count();
                prop_assert!(within <= max as usize, "{} restarts within {} s from {}", within, period_s, t);
            }
        }

        #[test]
        fn delay_never_exceeds_the_ceiling(attempt in 0u32..80, seed in any::<u64>()) {
            let b = Backoff::new(Duration::from_millis(3), Duration::from_secs(30)).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            prop_assert!(b.delay(attempt, &mut rng) <= b.ceiling(attempt));
            prop_assert!(b.ceiling(attempt) <= Duration::from_secs(30));
        }
    }
}
