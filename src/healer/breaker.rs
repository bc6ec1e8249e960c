//! Its contract is documented on [`Breaker`] (this module is private; its
//! items are re-exported by its parent).

use std::collections::VecDeque;
use std::time::Duration;

use crate::error::{Error, Result};

/// Attempts a breaker's sliding window may be configured to hold at most.
pub const MAX_WINDOW_SIZE: usize = 10_000;

/// Configuration of a [`Breaker`]. The defaults are resilience4j's.
#[derive(Clone, Copy, Debug, PartialEq)]
#[must_use]
pub struct BreakerConfig {
    failure_rate_threshold: f64,
    window_size: usize,
    minimum_calls: usize,
    open_wait: Duration,
    half_open_calls: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl BreakerConfig {
    /// Defaults: opens at a 50 % failure rate over the last 100 attempts,
    /// once at least 100 were recorded; stays open 60 s; then allows 10
    /// trial attempts.
    pub fn new() -> Self {
        BreakerConfig {
            failure_rate_threshold: 0.5,
            window_size: 100,
            minimum_calls: 100,
            open_wait: Duration::from_secs(60),
            half_open_calls: 10,
        }
    }

    /// Failure rate (0 < rate ≤ 1) at or above which the breaker opens
    /// (default 0.5).
    pub fn failure_rate_threshold(mut self, rate: f64) -> Self {
        self.failure_rate_threshold = rate;
        self
    }

    /// Attempts in the sliding window (default 100; 1 to
    /// [`MAX_WINDOW_SIZE`]).
    pub fn window_size(mut self, attempts: usize) -> Self {
        self.window_size = attempts;
        self
    }

    /// Attempts the window must hold before the rate is judged (default
    /// 100; 1 ..= `window_size`).
    pub fn minimum_calls(mut self, attempts: usize) -> Self {
        self.minimum_calls = attempts;
        self
    }

    /// How long the breaker stays open (default 60 s; not zero).
    pub fn open_wait(mut self, wait: Duration) -> Self {
        self.open_wait = wait;
        self
    }

    /// Trial attempts allowed when half-open (default 10; at least 1).
    pub fn half_open_calls(mut self, attempts: usize) -> Self {
        self.half_open_calls = attempts;
        self
    }

    /// Checks the values.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field that is out of range.
    pub fn validate(&self) -> Result<()> {
        let r = self.failure_rate_threshold;
        if !(r > 0.0 && r <= 1.0) {
            return Err(Error::config(
                "failure_rate_threshold",
                format!("is {r}; it must be in (0, 1]"),
            ));
        }
        if self.window_size == 0 || self.window_size > MAX_WINDOW_SIZE {
            return Err(Error::config(
                "window_size",
                format!(
                    "is {}; it must be 1 to {MAX_WINDOW_SIZE} attempts",
                    self.window_size
                ),
            ));
        }
        if self.minimum_calls == 0 || self.minimum_calls > self.window_size {
            return Err(Error::config(
                "minimum_calls",
                format!(
                    "is {}; it must be between 1 and window_size ({})",
                    self.minimum_calls, self.window_size
                ),
            ));
        }
        if self.open_wait.is_zero() {
            return Err(Error::config("open_wait", "is 0; it must be positive"));
        }
        if self.half_open_calls == 0 {
            return Err(Error::config(
                "half_open_calls",
                "is 0; it must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Where a breaker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Attempts are allowed and counted.
    Closed,
    /// No attempt is allowed until `until_ns` (clock nanoseconds).
    Open {
        /// When it may half-open.
        until_ns: u64,
    },
    /// A few trial attempts are allowed.
    HalfOpen {
        /// Trials not yet handed out.
        permits_left: usize,
        /// Trials that reported success.
        successes: usize,
        /// Trials that reported failure.
        failures: usize,
    },
}

impl BreakerState {
    /// The state's name, as used in reports.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half-open",
        }
    }
}

/// One remedy's breaker.
///
/// A circuit breaker per remedy: closed → open → half-open, by failure rate
/// over a sliding window of recent attempts (the state machine of
/// resilience4j's `CircuitBreaker`, with its defaults).
///
/// A remedy whose breaker is open is not tried; the healer goes on to the
/// next remedy or escalates. The breaker is a pure state machine fed with the
/// clock's `now_ns`: it does no I/O and keeps no thread.
///
/// # Contract
/// - **Closed**: every attempt is allowed; outcomes go into a window of the
///   last `window_size` attempts. Once the window holds at least
///   `minimum_calls` outcomes and the failure rate is at or above
///   `failure_rate_threshold`, the breaker opens.
/// - **Open**: nothing is allowed until `open_wait` has passed; the first
///   request after that moves it to half-open.
/// - **Half-open**: `half_open_calls` trial attempts are allowed; when all
///   have reported, a failure rate at or above the threshold opens it again,
///   anything below closes it with an empty window.
#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    /// Outcomes of the closed state's window, oldest first (`true` = failed).
    window: VecDeque<bool>,
    failures: usize,
}

impl Breaker {
    /// A closed breaker.
    ///
    /// # Errors
    /// As [`BreakerConfig::validate`].
    pub fn new(config: BreakerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Breaker {
            config,
            state: BreakerState::Closed,
            // Grows with the attempts made, never preallocated from the
            // configuration.
            window: VecDeque::new(),
            failures: 0,
        })
    }

    /// The current state (as of the last call; an open breaker whose wait
    /// is over shows as open until the next [`allow`](Self::allow)).
    #[must_use]
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// The failure rate of the closed state's window, if it holds anything.
    #[must_use]
    pub fn failure_rate(&self) -> Option<f64> {
        (!self.window.is_empty()).then(|| self.failures as f64 / self.window.len() as f64)
    }

    /// Whether an attempt may be made now; a half-open trial is handed out
    /// by this call.
    pub fn allow(&mut self, now_ns: u64) -> bool {
        match &mut self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until_ns } => {
                if now_ns < *until_ns {
                    return false;
                }
                self.state = BreakerState::HalfOpen {
                    permits_left: self.config.half_open_calls - 1,
                    successes: 0,
                    failures: 0,
                };
                true
            }
            BreakerState::HalfOpen { permits_left, .. } => {
                if *permits_left == 0 {
                    return false;
                }
                *permits_left -= 1;
                true
            }
        }
    }

    /// Gives back an attempt allowed by [`allow`](Self::allow) that was not
    /// made after all (a half-open trial returns to the pool; a closed or
    /// open breaker has nothing to give back).
    pub fn release(&mut self) {
        if let BreakerState::HalfOpen { permits_left, .. } = &mut self.state {
            *permits_left = (*permits_left + 1).min(self.config.half_open_calls);
        }
    }

    /// Records the outcome of an allowed attempt.
    pub fn record(&mut self, succeeded: bool, now_ns: u64) {
        let threshold = self.config.failure_rate_threshold;
        match &mut self.state {
            BreakerState::Closed => {
                if self.window.len() == self.config.window_size
                    && self.window.pop_front() == Some(true)
                {
                    self.failures -= 1;
                }
                self.window.push_back(!succeeded);
                if !succeeded {
                    self.failures += 1;
                }
                debug_assert!(self.failures <= self.window.len());
                if self.window.len() >= self.config.minimum_calls
                    && self.failures as f64 / self.window.len() as f64 >= threshold
                {
                    self.open(now_ns);
                }
            }
            BreakerState::HalfOpen {
                permits_left,
                successes,
                failures,
            } => {
                if succeeded {
                    *successes += 1;
                } else {
                    *failures += 1;
                }
                let reported = *successes + *failures;
                // Every trial handed out has reported (reports never exceed
                // the trials, so this also means no permit is left).
                if reported >= self.config.half_open_calls {
                    debug_assert_eq!(*permits_left, 0);
                    if *failures as f64 / reported as f64 >= threshold {
                        self.open(now_ns);
                    } else {
                        self.state = BreakerState::Closed;
                        self.window.clear();
                        self.failures = 0;
                    }
                }
            }
            // An outcome of an attempt allowed before the breaker opened:
            // the breaker is already open; nothing to learn.
            BreakerState::Open { .. } => {}
        }
    }

    fn open(&mut self, now_ns: u64) {
        let wait = u64::try_from(self.config.open_wait.as_nanos()).unwrap_or(u64::MAX);
        self.state = BreakerState::Open {
            until_ns: now_ns.saturating_add(wait),
        };
        self.window.clear();
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    fn small() -> Breaker {
        Breaker::new(
            BreakerConfig::new()
                .window_size(4)
                .minimum_calls(4)
                .open_wait(Duration::from_secs(10))
                .half_open_calls(2),
        )
        .unwrap()
    }

    #[test]
    fn opens_at_the_rate_waits_half_opens_and_closes() {
        let mut b = small();
        for ok in [true, false, true] {
            assert!(b.allow(0));
            b.record(ok, 0);
        }
        assert_eq!(b.state(), BreakerState::Closed, "below minimum_calls");
        assert!(b.allow(0));
        b.record(false, 0); // 2 of 4 failed: 50 %
        assert_eq!(b.state(), BreakerState::Open { until_ns: 10 * S });
        assert!(!b.allow(9 * S));
        assert!(b.allow(10 * S), "first trial");
        assert!(b.allow(10 * S), "second trial");
        assert!(!b.allow(10 * S), "only two trials");
        b.record(true, 10 * S);
        b.record(true, 10 * S);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.failure_rate(), None);
    }

    #[test]
    fn a_failed_trial_reopens() {
        let mut b = small();
        for _ in 0..4 {
            b.allow(0);
            b.record(false, 0);
        }
        assert!(b.allow(10 * S));
        assert!(b.allow(10 * S));
        b.record(false, 11 * S);
        b.record(true, 11 * S);
        assert_eq!(b.state(), BreakerState::Open { until_ns: 21 * S });
    }

    #[test]
    fn defaults_are_resilience4j_and_bad_values_are_typed() {
        let c = BreakerConfig::new();
        assert_eq!(c.failure_rate_threshold, 0.5);
        assert_eq!(
            (c.window_size, c.minimum_calls, c.half_open_calls),
            (100, 100, 10)
        );
        assert_eq!(c.open_wait, Duration::from_secs(60));
        for (cfg, field) in [
            (
                BreakerConfig::new().failure_rate_threshold(0.0),
                "failure_rate_threshold",
            ),
            (
                BreakerConfig::new().failure_rate_threshold(f64::NAN),
                "failure_rate_threshold",
            ),
            (BreakerConfig::new().window_size(0), "window_size"),
            (BreakerConfig::new().window_size(usize::MAX), "window_size"),
            (
                BreakerConfig::new().window_size(MAX_WINDOW_SIZE + 1),
                "window_size",
            ),
            (BreakerConfig::new().minimum_calls(101), "minimum_calls"),
            (BreakerConfig::new().open_wait(Duration::ZERO), "open_wait"),
            (BreakerConfig::new().half_open_calls(0), "half_open_calls"),
        ] {
            match Breaker::new(cfg) {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    proptest! {
        /// Whatever the outcomes, the window never holds more than its size,
        /// the failure count matches it, and an open breaker allows nothing
        /// before its wait is over.
        #[test]
        fn invariants_hold(outcomes in proptest::collection::vec((any::<bool>(), 0u64..5), 0..300)) {
            let mut b = Breaker::new(BreakerConfig::new().window_size(8).minimum_calls(3).half_open_calls(3).open_wait(Duration::from_secs(2))).unwrap();
            let mut now = 0u64;
            for (ok, step) in outcomes {
                now += step * S;
                let state = b.state();
                let allowed = b.allow(now);
                if let BreakerState::Open { until_ns } = state {
                    prop_assert_eq!(allowed, now >= until_ns);
                }
                if allowed {
                    b.record(ok, now);
                }
                prop_assert!(b.window.len() <= 8);
                prop_assert_eq!(b.failures, b.window.iter().filter(|f| **f).count());
            }
        }
    }
}
