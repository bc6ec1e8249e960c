//! The phi-accrual suspicion level, as pure arithmetic over a bounded window of
//! heartbeat inter-arrival times.
//!
//! Following Hayashibara et al. and the Akka/Cassandra implementations, the
//! suspicion level after `elapsed` nanoseconds without a heartbeat is
//!
//! ```text
//! phi(elapsed) = -log10(1 - F(elapsed))
//! ```
//!
//! where `F` is the cumulative distribution of a normal distribution with the
//! window's mean inter-arrival time **plus the acceptable pause** and the
//! window's standard deviation, **floored at the minimum standard deviation**.
//! Like Akka, `F` uses the logistic approximation of the normal CDF
//! (`1 / (1 + e^(-y(1.5976 + 0.070566 y²)))`, error below 1.4·10⁻⁴), which
//! has a closed-form complement and so can be evaluated in log space:
//! `phi = softplus(z) / ln 10` with `z = y(1.5976 + 0.070566 y²)`,
//! `y = (elapsed - mean) / std`. That form is finite for every finite input
//! (no `log10(0)`), never NaN, and monotone non-decreasing in `elapsed`.
//!
//! A phi of 1 means about a 10 % chance that the heartbeat is merely late, 2
//! about 1 %, 8 about 10⁻⁸ %. Only the *shape* of the history matters, so a
//! component that beats every millisecond and one that beats every ten seconds
//! are judged by the same threshold.

use std::collections::VecDeque;

/// Largest inter-arrival time kept in a window, in nanoseconds (about 3.3
/// days). Longer intervals are clamped so that the exact integer sums below
/// cannot overflow (`2^48` squared times [`MAX_WINDOW`] fits in `u128`).
pub const MAX_INTERVAL_NS: u64 = 1 << 48;

/// Largest window size accepted by the configuration.
pub const MAX_WINDOW: usize = 1 << 16;

/// `|y|` is clamped here so that `z = y(1.5976 + 0.070566 y²)` stays finite.
/// Clamping keeps phi monotone (constant beyond the clamp) and finite.
const Y_LIMIT: f64 = 1e6;

/// A bounded window of inter-arrival times with exact running sums.
///
/// The sums are kept in integers (`u128`), so that a long-running window never
/// drifts the way floating-point running sums do.
#[derive(Clone, Debug)]
pub struct ArrivalWindow {
    capacity: usize,
    intervals_ns: VecDeque<u64>,
    sum_ns: u128,
    sum_sq_ns2: u128,
}

impl ArrivalWindow {
    /// An empty window keeping the last `capacity` intervals (clamped to
    /// `1..=MAX_WINDOW`; the configuration rejects values outside it).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_WINDOW);
        ArrivalWindow {
            capacity,
            intervals_ns: VecDeque::with_capacity(capacity.min(1024)),
            sum_ns: 0,
            sum_sq_ns2: 0,
        }
    }

    /// Adds one inter-arrival time, evicting the oldest when full. Values above
    /// [`MAX_INTERVAL_NS`] are clamped to it.
    pub fn push(&mut self, interval_ns: u64) {
        let v = interval_ns.min(MAX_INTERVAL_NS);
        if self.intervals_ns.len() == self.capacity {
            if let Some(old) = self.intervals_ns.pop_front() {
                self.sum_ns -= u128::from(old);
                self.sum_sq_ns2 -= u128::from(old) * u128::from(old);
            }
        }
        self.intervals_ns.push_back(v);
        self.sum_ns += u128::from(v);
        self.sum_sq_ns2 += u128::from(v) * u128::from(v);
    }

    /// How many intervals the window holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.intervals_ns.len()
    }

    /// Whether the window holds no interval yet.
    #[cfg(test)]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.intervals_ns.is_empty()
    }

    /// Mean and (population) standard deviation in nanoseconds, or `None` when
    /// empty. Both are finite and non-negative.
    #[must_use]
    pub fn mean_std_ns(&self) -> Option<(f64, f64)> {
        let n = self.intervals_ns.len();
        if n == 0 {
            return None;
        }
        let n = n as f64;
        let mean = self.sum_ns as f64 / n;
        // Cancellation can make this slightly negative when all intervals are
        // equal; the floor keeps the square root real.
        let var = (self.sum_sq_ns2 as f64 / n - mean * mean).max(0.0);
        Some((mean, var.sqrt()))
    }
}

/// The parameters of the suspicion function, all in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhiParams {
    /// Added to the window's mean: a pause this long is not suspicious.
    pub acceptable_pause_ns: u64,
    /// Floor of the standard deviation; must be positive.
    pub min_std_dev_ns: u64,
    /// Mean assumed while the window is empty; its quarter is the assumed
    /// standard deviation (as in Akka).
    pub first_estimate_ns: u64,
}

/// The suspicion level of a component whose last heartbeat was `elapsed_ns`
/// ago, given its inter-arrival `window`.
///
/// Always finite and `>= 0`, and monotone non-decreasing in `elapsed_ns` for a
/// fixed window and parameters.
#[must_use]
pub fn phi(elapsed_ns: u64, window: &ArrivalWindow, params: &PhiParams) -> f64 {
    let (mean, std) = window.mean_std_ns().unwrap_or_else(|| {
        let m = params.first_estimate_ns as f64;
        (m, m / 4.0)
    });
    phi_of(
        elapsed_ns as f64,
        mean + params.acceptable_pause_ns as f64,
        std.max(params.min_std_dev_ns.max(1) as f64),
    )
}

/// `-log10(1 - F(elapsed))` for a logistic-approximated normal with `mean` and
/// `std` (`std > 0`). See the module docs for the derivation.
#[must_use]
pub fn phi_of(elapsed: f64, mean: f64, std: f64) -> f64 {
    let std = if std.is_finite() && std > 0.0 {
        std
    } else {
        1.0
    };
    let y = ((elapsed - mean) / std).clamp(-Y_LIMIT, Y_LIMIT);
    // NaN only if an input was NaN; treat it as "no evidence".
    if y.is_nan() {
        return 0.0;
    }
    let z = y * (1.5976 + 0.070566 * y * y);
    softplus(z) / std::f64::consts::LN_10
}

/// `ln(1 + e^z)` without overflow or loss of precision at either end.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn params() -> PhiParams {
        PhiParams {
            acceptable_pause_ns: 0,
            min_std_dev_ns: 10 * MS,
            first_estimate_ns: 500 * MS,
        }
    }

    #[test]
    fn matches_akka_reference_values() {
        // Akka's PhiAccrualFailureDetectorSpec: mean 1000, std 100.
        let p = |t: f64| phi_of(t, 1000.0, 100.0);
        assert!((p(1000.0) - 0.3).abs() < 0.01, "{}", p(1000.0));
        assert!((p(1100.0) - 0.8).abs() < 0.05, "{}", p(1100.0));
        assert!((p(1200.0) - 1.64).abs() < 0.05, "{}", p(1200.0));
        assert!(p(2000.0) > 10.0);
        // The complementary normal CDF at mean + 3σ is about 1.35e-3.
        assert!((p(1300.0) - 2.87).abs() < 0.1, "{}", p(1300.0));
    }

    #[test]
    fn window_mean_and_std_are_exact() {
        let mut w = ArrivalWindow::new(3);
        assert!(w.is_empty());
        for v in [10, 20, 30, 40] {
            w.push(v);
        }
        assert_eq!(w.len(), 3);
        let (m, s) = w.mean_std_ns().unwrap();
        assert!((m - 30.0).abs() < 1e-9);
        assert!((s - (200.0f64 / 3.0).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn acceptable_pause_shifts_the_curve() {
        let mut w = ArrivalWindow::new(10);
        for _ in 0..10 {
            w.push(100 * MS);
        }
        let mut p = params();
        let strict = phi(900 * MS, &w, &p);
        p.acceptable_pause_ns = 1000 * MS;
        let lenient = phi(900 * MS, &w, &p);
        assert!(strict > 8.0, "{strict}");
        assert!(lenient < 0.5, "{lenient}");
    }

    #[test]
    fn empty_window_uses_first_estimate() {
        let w = ArrivalWindow::new(4);
        let p = params();
        assert!(phi(100 * MS, &w, &p) < 0.1);
        assert!(phi(2000 * MS, &w, &p) > 8.0);
    }

    proptest! {
        #[test]
        fn phi_is_monotone_in_elapsed(intervals in proptest::collection::vec(0u64..u64::MAX, 0..40),
                                      a in any::<u64>(), b in any::<u64>(),
                                      pause in 0u64..u64::MAX / 2, min_std in 1u64..u64::MAX / 2,
                                      first in 0u64..u64::MAX / 2) {
            let mut w = ArrivalWindow::new(16);
            for i in intervals { w.push(i); }
            let p = PhiParams { acceptable_pause_ns: pause, min_std_dev_ns: min_std, first_estimate_ns: first };
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let (pl, ph) = (phi(lo, &w, &p), phi(hi, &w, &p));
            prop_assert!(pl.is_finite() && ph.is_finite());
            prop_assert!(pl >= 0.0);
            prop_assert!(pl <= ph, "phi({lo})={pl} > phi({hi})={ph}");
        }

        #[test]
        fn degenerate_inputs_never_give_nan(elapsed in any::<f64>(), mean in any::<f64>(), std in any::<f64>()) {
            let v = phi_of(elapsed, mean, std);
            prop_assert!(!v.is_nan());
            prop_assert!(v >= 0.0);
        }

        #[test]
        fn window_sums_match_a_recomputation(intervals in proptest::collection::vec(0u64..(1u64 << 40), 1..200), cap in 1usize..50) {
            let mut w = ArrivalWindow::new(cap);
            for &i in &intervals { w.push(i); }
            let tail: Vec<f64> = intervals.iter().rev().take(cap).map(|&v| v as f64).collect();
            let n = tail.len() as f64;
            let mean = tail.iter().sum::<f64>() / n;
            let var = tail.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            let (m, s) = w.mean_std_ns().unwrap();
            prop_assert!((m - mean).abs() <= mean * 1e-9 + 1e-6);
            // Population variance from sums loses relative precision only
            // against mean²; compare on that scale.
            prop_assert!((s * s - var).abs() <= mean * mean * 1e-9 + 1.0);
        }
    }
}
