//! Its contract is documented on [`Thresholds`] (this module is private; its
//! items are re-exported by its parent).

use std::fmt;

use crate::error::{Error, Result};

/// How healthy a metric (or the whole host) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Band {
    /// Below the degraded threshold.
    #[default]
    Healthy,
    /// At or above the degraded threshold (with hysteresis).
    Degraded,
    /// At or above the critical threshold (with hysteresis).
    Critical,
}

impl Band {
    /// `"healthy"`, `"degraded"` or `"critical"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Healthy => "healthy",
            Band::Degraded => "degraded",
            Band::Critical => "critical",
        }
    }
}

impl fmt::Display for Band {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Thresholds, range, hysteresis margin and weight of one metric, in the
/// metric's own unit (percent, seconds, connections, ...).
///
/// ```
/// use selfheal::health::Thresholds;
/// // Memory use in percent: degraded at 85 %, critical at 95 %, 2-point margin.
/// let t = Thresholds::percent(85.0, 95.0).margin(2.0).weight(2.0);
/// assert_eq!(t.score(0.0), 100.0);
/// assert_eq!(t.score(85.0), 50.0);
/// assert_eq!(t.score(99.0), 0.0);
/// ```
///
/// Scores, bands and hysteresis.
///
/// Every metric is oriented so that **higher is worse** (CPU use, memory use,
/// replication lag, error rate). A host whose metric is better when higher
/// (free connections) reports its complement (pool use).
///
/// # Score
/// Piecewise linear in the value: 100 at or below `best`, 50 at the
/// `degraded` threshold, 0 at or above the `critical` threshold. The overall
/// score is the weighted mean of the scores of the metrics sampled.
///
/// # Bands and hysteresis
/// A metric enters a worse band as soon as its value reaches that band's
/// threshold, and leaves it only when the value falls below the threshold
/// minus the margin:
///
/// | from       | to         | when                           |
/// |------------|------------|--------------------------------|
/// | healthy    | degraded   | `value >= degraded`            |
/// | any        | critical   | `value >= critical`            |
/// | critical   | degraded   | `value < critical - margin`    |
/// | degraded or critical | healthy | `value < degraded - margin` |
///
/// So a value hovering within the margin below a threshold does not flap.
/// The overall band is the worst band of any metric: a weighted mean would
/// let one full disk hide behind nine idle metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
#[must_use]
pub struct Thresholds {
    best: f64,
    worst: f64,
    degraded: f64,
    critical: f64,
    margin: Option<f64>,
    weight: f64,
}

impl Thresholds {
    /// A metric in `[0, +inf)` (lag, queue length, error rate), degraded at
    /// `degraded` and critical at `critical`. Defaults: best value 0, margin
    /// a quarter of the smaller of `critical - degraded` and
    /// `degraded - best`, weight 1.
    pub fn new(degraded: f64, critical: f64) -> Self {
        Thresholds {
            best: 0.0,
            worst: f64::INFINITY,
            degraded,
            critical,
            margin: None,
            weight: 1.0,
        }
    }

    /// A percentage in `[0, 100]`, degraded at `degraded` and critical at
    /// `critical` (for example memory 85 / 95).
    pub fn percent(degraded: f64, critical: f64) -> Self {
        Thresholds {
            worst: 100.0,
            ..Thresholds::new(degraded, critical)
        }
    }

    /// The range the metric's values live in: `best` scores 100; thresholds
    /// must lie above `best` and at most `worst` (default `[0, +inf)`, or
    /// `[0, 100]` for [`percent`](Self::percent)).
    pub fn range(mut self, best: f64, worst: f64) -> Self {
        self.best = best;
        self.worst = worst;
        self
    }

    /// The hysteresis margin in the metric's unit (default a quarter of
    /// the smaller of `critical - degraded` and `degraded - best`). Must be
    /// smaller than both.
    pub fn margin(mut self, margin: f64) -> Self {
        self.margin = Some(margin);
        self
    }

    /// The metric's weight in the overall score (default 1; 0 leaves it out
    /// of the score but not out of the bands).
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// The degraded threshold.
    #[must_use]
    pub fn degraded_at(&self) -> f64 {
        self.degraded
    }

    /// The critical threshold: the line that predictions aim at.
    #[must_use]
    pub fn critical_at(&self) -> f64 {
        self.critical
    }

    /// The hysteresis margin in effect.
    #[must_use]
    pub fn margin_value(&self) -> f64 {
        self.margin
            .unwrap_or((self.critical - self.degraded).min(self.degraded - self.best) / 4.0)
    }

    /// The weight.
    #[must_use]
    pub fn weight_value(&self) -> f64 {
        self.weight
    }

    /// The best value (score 100).
    #[must_use]
    pub fn best(&self) -> f64 {
        self.best
    }

    /// Checks the thresholds of metric `metric`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field when a value is not finite,
    /// the thresholds are not ordered `best < degraded < critical <= worst`,
    /// the margin is negative or too wide, or the weight is negative.
    pub fn validate(&self, metric: &str) -> Result<()> {
        for (field, v) in [
            ("thresholds.best", self.best),
            ("thresholds.degraded", self.degraded),
            ("thresholds.critical", self.critical),
            ("thresholds.weight", self.weight),
        ] {
            if !v.is_finite() {
                return Err(Error::config(
                    field,
                    format!("of metric `{metric}` is {v}; it must be a finite number"),
                ));
            }
        }
        if self.worst.is_nan() || self.worst <= self.best {
            return Err(Error::config(
                "thresholds.range",
                format!(
                    "of metric `{metric}` is [{}, {}]; the worst value must be above the best",
                    self.best, self.worst
                ),
            ));
        }
        for (field, v) in [
            ("thresholds.degraded", self.degraded),
            ("thresholds.critical", self.critical),
        ] {
            if v <= self.best || v > self.worst {
                return Err(Error::config(
                    field,
                    format!(
                        "of metric `{metric}` is {v}, outside its range ({}, {}]",
                        self.best, self.worst
                    ),
                ));
            }
        }
        if self.degraded >= self.critical {
            return Err(Error::config(
                "thresholds.degraded",
                format!(
                    "of metric `{metric}` is {}, not below the critical threshold {}",
                    self.degraded, self.critical
                ),
            ));
        }
        let m = self.margin_value();
        if !m.is_finite()
            || m < 0.0
            || m >= self.critical - self.degraded
            || m >= self.degraded - self.best
        {
            return Err(Error::config(
                "thresholds.margin",
                format!(
                    "of metric `{metric}` is {m}; it must be at least 0 and below both \
                     critical - degraded ({}) and degraded - best ({})",
                    self.critical - self.degraded,
                    self.degraded - self.best
                ),
            ));
        }
        if self.weight < 0.0 {
            return Err(Error::config(
                "thresholds.weight",
                format!("of metric `{metric}` is {}; it must be >= 0", self.weight),
            ));
        }
        Ok(())
    }

    /// The score of `value`: 100 at or below `best`, 50 at `degraded`, 0 at
    /// or above `critical`, linear in between. Always within `0..=100`
    /// (a NaN scores 0).
    #[must_use]
    pub fn score(&self, value: f64) -> f64 {
        let s = if value.is_nan() || value >= self.critical {
            0.0
        } else if value <= self.best {
            100.0
        } else if value <= self.degraded {
            100.0 - 50.0 * (value - self.best) / (self.degraded - self.best)
        } else {
            50.0 - 50.0 * (value - self.degraded) / (self.critical - self.degraded)
        };
        s.clamp(0.0, 100.0)
    }

    /// The band of `value` without hysteresis.
    #[must_use]
    pub fn raw_band(&self, value: f64) -> Band {
        if value >= self.critical {
            Band::Critical
        } else if value >= self.degraded {
            Band::Degraded
        } else {
            Band::Healthy
        }
    }

    /// The band after observing `value` in band `current` (see the module
    /// docs for the rule).
    #[must_use]
    pub fn next_band(&self, current: Band, value: f64) -> Band {
        let m = self.margin_value();
        if value >= self.critical {
            return Band::Critical;
        }
        let below_degraded = value < self.degraded - m;
        match current {
            Band::Healthy if value >= self.degraded => Band::Degraded,
            Band::Healthy => Band::Healthy,
            Band::Degraded | Band::Critical if below_degraded => Band::Healthy,
            Band::Critical if value < self.critical - m => Band::Degraded,
            other => other,
        }
    }
}

/// The weighted mean of `(score, weight)` pairs, or `None` when the weights
/// sum to 0 (nothing to score).
#[must_use]
pub fn weighted_score(pairs: impl IntoIterator<Item = (f64, f64)>) -> Option<f64> {
    let (mut sum, mut weights) = (0.0, 0.0);
    for (s, w) in pairs {
        sum += s * w;
        weights += w;
    }
    (weights > 0.0).then(|| (sum / weights).clamp(0.0, 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validation_names_the_field() {
        let field = |t: Thresholds| match t.validate("m") {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        };
        assert_eq!(
            field(Thresholds::percent(85.0, 120.0)),
            "thresholds.critical"
        );
        assert_eq!(
            field(Thresholds::percent(-5.0, 90.0)),
            "thresholds.degraded"
        );
        assert_eq!(
            field(Thresholds::percent(95.0, 90.0)),
            "thresholds.degraded"
        );
        assert_eq!(
            field(Thresholds::percent(f64::NAN, 90.0)),
            "thresholds.degraded"
        );
        assert_eq!(
            field(Thresholds::percent(80.0, 90.0).margin(10.0)),
            "thresholds.margin"
        );
        assert_eq!(
            field(Thresholds::percent(80.0, 90.0).margin(-1.0)),
            "thresholds.margin"
        );
        assert_eq!(
            field(Thresholds::percent(80.0, 90.0).weight(-1.0)),
            "thresholds.weight"
        );
        assert_eq!(
            field(Thresholds::new(1.0, 2.0).range(5.0, 5.0)),
            "thresholds.range"
        );
        Thresholds::percent(85.0, 95.0).validate("m").unwrap();
        Thresholds::new(5.0, 30.0).validate("lag").unwrap();
    }

    #[test]
    fn score_anchors() {
        let t = Thresholds::percent(80.0, 90.0);
        assert_eq!(t.score(-3.0), 100.0);
        assert_eq!(t.score(40.0), 75.0);
        assert_eq!(t.score(80.0), 50.0);
        assert_eq!(t.score(85.0), 25.0);
        assert_eq!(t.score(90.0), 0.0);
        assert_eq!(t.score(f64::NAN), 0.0);
        assert_eq!(weighted_score([(100.0, 1.0), (0.0, 3.0)]), Some(25.0));
        assert_eq!(weighted_score([(100.0, 0.0)]), None);
    }

    #[test]
    fn hysteresis_table() {
        let t = Thresholds::percent(80.0, 90.0).margin(2.0);
        use Band::*;
        assert_eq!(t.next_band(Healthy, 79.9), Healthy);
        assert_eq!(t.next_band(Healthy, 80.0), Degraded);
        assert_eq!(t.next_band(Degraded, 78.5), Degraded);
        assert_eq!(t.next_band(Degraded, 77.9), Healthy);
        assert_eq!(t.next_band(Degraded, 90.0), Critical);
        assert_eq!(t.next_band(Critical, 88.5), Critical);
        assert_eq!(t.next_band(Critical, 87.9), Degraded);
        assert_eq!(t.next_band(Critical, 10.0), Healthy);
        assert_eq!(t.next_band(Healthy, 95.0), Critical);
    }

    fn thresholds() -> impl Strategy<Value = Thresholds> {
        (1.0f64..50.0, 1.0f64..50.0, 0.0f64..0.99, 0.0f64..10.0).prop_map(|(d, gap, mfrac, w)| {
            let margin = mfrac * gap.min(d);
            Thresholds::new(d, d + gap).margin(margin).weight(w)
        })
    }

    proptest! {
        #[test]
        fn score_always_in_range(t in thresholds(), v in proptest::num::f64::ANY) {
            prop_assert!(t.validate("m").is_ok());
            let s = t.score(v);
            prop_assert!((0.0..=100.0).contains(&s), "score {} for {}", s, v);
        }

        #[test]
        fn overall_score_in_range(pairs in proptest::collection::vec((0.0f64..=100.0, 0.0f64..100.0), 0..20)) {
            if let Some(s) = weighted_score(pairs) {
                prop_assert!((0.0..=100.0).contains(&s));
            }
        }

        /// For any sequence, the band changes only when the value crosses a
        /// threshold (upwards) or a threshold minus the margin (downwards),
        /// and is always between the raw band of the value and the raw band
        /// of the value plus the margin.
        #[test]
        fn band_changes_only_across_threshold_and_margin(
            t in thresholds(),
            values in proptest::collection::vec(-10.0f64..120.0, 1..200),
        ) {
            let m = t.margin_value();
            let mut band = Band::Healthy;
            for v in values {
                let next = t.next_band(band, v);
                if next > band {
                    let line = if next == Band::Critical { t.critical_at() } else { t.degraded_at() };
                    prop_assert!(v >= line, "{:?}->{:?} at {} below {}", band, next, v, line);
                }
                if next < band {
                    let line = if band == Band::Critical && next == Band::Degraded {
                        t.critical_at()
                    } else {
                        t.degraded_at()
                    };
                    prop_assert!(v < line - m, "{:?}->{:?} at {} not below {} - {}", band, next, v, line, m);
                }
                prop_assert!(next >= t.raw_band(v));
                prop_assert!(next <= t.raw_band(v + m + 1e-9));
                band = next;
            }
        }
    }
}
