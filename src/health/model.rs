//! `HealthModel`: the pure core. Fed with a time and one value per metric,
//! it returns scores, bands, trends and the failures to report; it does no
//! I/O and reads no clock, so every decision can be replayed in a test.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::types::{Failure, FailureKind, Source};

use super::history::HistoryRing;
use super::predict::{least_squares, Ewma, Fit, TrendRule};
use super::score::{weighted_score, Band, Thresholds};
use super::HealthConfig;

/// The standard deviation floor of the anomaly z-score, as a fraction of
/// `critical - best`: a metric that sat perfectly still is not anomalous
/// for moving by less than `anomaly_z` percent of its scale.
const ANOMALY_MIN_STD_FRACTION: f64 = 0.01;

/// One round of samples as kept in the history.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// When it was taken, in nanoseconds of the monitor's clock.
    pub at_ns: u64,
    /// One value per metric, in configuration order; `None` where the probe
    /// failed or gave a non-finite value.
    pub values: Box<[Option<f64>]>,
}

/// A metric changed band.
#[derive(Clone, Debug, PartialEq)]
pub struct BandChange {
    /// The metric.
    pub metric: Arc<str>,
    /// The band before.
    pub from: Band,
    /// The band after.
    pub to: Band,
    /// The value that moved it.
    pub value: f64,
}

/// The state of one metric after a sample.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricStatus {
    /// The metric's name.
    pub name: Arc<str>,
    /// This sample's value, if there was one.
    pub value: Option<f64>,
    /// Its score (0–100), if there was a value.
    pub score: Option<f64>,
    /// The band (with hysteresis); unchanged when there was no value.
    pub band: Band,
    /// The least-squares line over the prediction window (slope per second,
    /// intercept at this sample), when there were at least 3 points.
    pub trend: Option<Fit>,
    /// Time until the critical threshold, when the trend is significant (see
    /// [`TrendRule`]); it may lie beyond the horizon.
    pub eta: Option<Duration>,
    /// Whether a predicted failure episode is open.
    pub predicted: bool,
    /// The EWMA z-score of this value against the ones before it.
    pub z: Option<f64>,
    /// Whether an anomaly episode is open.
    pub anomalous: bool,
}

/// What one sample produced.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleOutcome {
    /// When it was taken, in nanoseconds of the clock.
    pub at_ns: u64,
    /// The weighted mean of the scores of the metrics that had a value, or
    /// `None` when those weigh nothing.
    pub score: Option<f64>,
    /// The worst band of any metric.
    pub band: Band,
    /// Every metric, in configuration order.
    pub metrics: Vec<MetricStatus>,
    /// Band changes in this sample.
    pub transitions: Vec<BandChange>,
    /// Conditions that began in this sample, each reported once per episode.
    pub failures: Vec<Failure>,
}

impl SampleOutcome {
    /// The status of the metric called `name`.
    #[must_use]
    pub fn metric(&self, name: &str) -> Option<&MetricStatus> {
        self.metrics.iter().find(|m| &*m.name == name)
    }
}

#[derive(Clone, Debug)]
struct MetricState {
    name: Arc<str>,
    t: Thresholds,
    min_std: f64,
    band: Band,
    ewma: Ewma,
    anomalous: bool,
    predicting: bool,
    hits: usize,
    misses: usize,
}

/// The health model: bands with hysteresis, scores, a bounded history, trend
/// prediction and anomaly flags, driven by [`sample`](Self::sample).
///
/// ```
/// use selfheal::HealthConfig;
/// use selfheal::health::{Band, Thresholds};
///
/// let mut model = selfheal::testing::health_model(
///     &HealthConfig::new().metric("disk", Thresholds::percent(80.0, 90.0)),
/// )?;
/// let out = model.sample(0, &[Some(85.0)])?;
/// assert_eq!(out.band, Band::Degraded);
/// assert_eq!(out.failures.len(), 1); // HealthDegraded, once
/// let out = model.sample(1_000_000_000, &[Some(86.0)])?;
/// assert!(out.failures.is_empty());
/// # Ok::<(), selfheal::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct HealthModel {
    metrics: Vec<MetricState>,
    history: HistoryRing<Sample>,
    rule: TrendRule,
    window: usize,
    confirm: usize,
    anomaly_z: f64,
    anomaly_warmup: u64,
    last_ns: Option<u64>,
    scratch: Vec<(f64, f64)>,
}

impl HealthConfig {
    /// Builds the pure model (no probes, no thread, no clock); tests reach
    /// it through `testing::health_model`.
    ///
    /// # Errors
    /// As [`validate`](Self::validate).
    pub(crate) fn build_model(&self) -> Result<HealthModel> {
        HealthModel::from_config(self)
    }
}

impl HealthModel {
    /// Builds the model of a validated configuration.
    pub(crate) fn from_config(cfg: &HealthConfig) -> Result<Self> {
        cfg.validate()?;
        let metrics = cfg
            .metrics
            .iter()
            .map(|m| MetricState {
                name: m.name.clone(),
                t: m.thresholds,
                min_std: ANOMALY_MIN_STD_FRACTION
                    * (m.thresholds.critical_at() - m.thresholds.best()),
                band: Band::Healthy,
                ewma: Ewma::new(cfg.anomaly_alpha),
                anomalous: false,
                predicting: false,
                hits: 0,
                misses: 0,
            })
            .collect();
        Ok(HealthModel {
            metrics,
            history: HistoryRing::new(cfg.history_capacity)?,
            rule: TrendRule {
                min_samples: cfg.prediction_min_samples,
                min_t: cfg.prediction_min_t,
                min_r2: cfg.prediction_min_r2,
                horizon: cfg.prediction_horizon,
            },
            window: cfg.prediction_window,
            confirm: cfg.prediction_confirm,
            anomaly_z: cfg.anomaly_z,
            anomaly_warmup: cfg.anomaly_warmup,
            last_ns: None,
            scratch: Vec::with_capacity(cfg.prediction_window),
        })
    }

    /// The metric names, in configuration order (the order of `values`).
    pub fn metric_names(&self) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.metrics.iter().map(|m| &m.name)
    }

    /// The history, oldest first.
    #[must_use]
    pub fn history(&self) -> &HistoryRing<Sample> {
        &self.history
    }

    /// The current band of each metric, in configuration order.
    #[must_use]
    pub fn bands(&self) -> Vec<Band> {
        self.metrics.iter().map(|m| m.band).collect()
    }

    /// Takes one sample: `values` has one entry per metric in configuration
    /// order (`None` for a metric without a value; NaN and infinities count
    /// as `None`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `values` has the wrong length or
    /// `now_ns` is earlier than the previous sample; the model is unchanged.
    pub fn sample(&mut self, now_ns: u64, values: &[Option<f64>]) -> Result<SampleOutcome> {
        if values.len() != self.metrics.len() {
            return Err(Error::InvalidArgument {
                what: "values",
                reason: format!(
                    "{} values for {} metrics; pass one per metric, in configuration order",
                    values.len(),
                    self.metrics.len()
                ),
            });
        }
        if let Some(last) = self.last_ns.filter(|&l| now_ns < l) {
            return Err(Error::InvalidArgument {
                what: "now_ns",
                reason: format!(
                    "{now_ns} is before the previous sample at {last}; time must not go back"
                ),
            });
        }
        self.last_ns = Some(now_ns);
        let values: Box<[Option<f64>]> =
            values.iter().map(|v| v.filter(|x| x.is_finite())).collect();
        self.history.push(Sample {
            at_ns: now_ns,
            values: values.clone(),
        });

        let mut out = SampleOutcome {
            at_ns: now_ns,
            score: None,
            band: Band::Healthy,
            metrics: Vec::with_capacity(self.metrics.len()),
            transitions: Vec::new(),
            failures: Vec::new(),
        };
        for i in 0..self.metrics.len() {
            let status = match values[i] {
                Some(v) => self.observe(i, now_ns, v, &mut out),
                None => {
                    let m = &self.metrics[i];
                    MetricStatus {
                        name: m.name.clone(),
                        value: None,
                        score: None,
                        band: m.band,
                        trend: None,
                        eta: None,
                        predicted: m.predicting,
                        z: None,
                        anomalous: m.anomalous,
                    }
                }
            };
            out.metrics.push(status);
        }
        out.band = self
            .metrics
            .iter()
            .map(|m| m.band)
            .max()
            .unwrap_or_default();
        out.score = weighted_score(
            out.metrics
                .iter()
                .zip(&self.metrics)
                .filter_map(|(s, m)| Some((s.score?, m.t.weight_value()))),
        );
        Ok(out)
    }

    fn observe(&mut self, i: usize, now_ns: u64, v: f64, out: &mut SampleOutcome) -> MetricStatus {
        let fit = self.fit(i, now_ns);
        let (rule, confirm, zthr, warmup) =
            (self.rule, self.confirm, self.anomaly_z, self.anomaly_warmup);
        let m = &mut self.metrics[i];
        let name = m.name.clone();
        let score = m.t.score(v);

        // Bands.
        let from = m.band;
        let to = m.t.next_band(from, v);
        if to != from {
            m.band = to;
            out.transitions.push(BandChange {
                metric: name.clone(),
                from,
                to,
                value: v,
            });
            let kind = match (from, to) {
                (_, Band::Critical) => Some(FailureKind::HealthCritical {
                    metric: name.clone(),
                }),
                (Band::Healthy, Band::Degraded) => Some(FailureKind::HealthDegraded {
                    metric: name.clone(),
                }),
                _ => None,
            };
            if let Some(kind) = kind {
                let line = if to == Band::Critical {
                    m.t.critical_at()
                } else {
                    m.t.degraded_at()
                };
                out.failures.push(Failure::new(
                    Source::HealthMonitor,
                    kind,
                    format!(
                        "{name} = {v:.2}, at or above the {to} threshold {line} \
                         (degraded at {}, critical at {}); score {score:.0}",
                        m.t.degraded_at(),
                        m.t.critical_at()
                    ),
                    now_ns,
                ));
            }
        }

        // Anomaly: judged against the values before this one.
        let seen = m.ewma.count();
        let (mean, sd) = (m.ewma.mean(), m.ewma.std_dev());
        let z = m.ewma.observe(v, m.min_std);
        if seen >= warmup && z.abs() >= zthr && !m.anomalous {
            m.anomalous = true;
            out.failures.push(Failure::new(
                Source::HealthMonitor,
                FailureKind::Anomaly {
                    metric: name.clone(),
                },
                format!(
                    "{name} jumped to {v:.2}: z = {z:.1} against the recent mean {mean:.2} \
                     (std dev {sd:.3}, floor {:.3})",
                    m.min_std
                ),
                now_ns,
            ));
        } else if m.anomalous && z.abs() < zthr / 2.0 {
            m.anomalous = false;
        }

        // Prediction, debounced over `confirm` samples in both directions.
        let eta = fit.and_then(|f| rule.eta(&f, m.t.critical_at()));
        let within = eta.filter(|e| *e <= rule.horizon);
        if within.is_some() {
            m.hits += 1;
            m.misses = 0;
        } else {
            m.misses += 1;
            m.hits = 0;
        }
        if !m.predicting && m.hits >= confirm {
            m.predicting = true;
            if let (Some(eta), Some(f)) = (within, fit) {
                out.failures.push(Failure::new(
                    Source::HealthMonitor,
                    FailureKind::PredictedFailure {
                        metric: name.clone(),
                        eta,
                    },
                    format!(
                        "{name} rising {:.4}/s (t = {:.1}, R² = {:.3} over {} samples): \
                         fitted {:.2} now, critical {} in about {:.0} s",
                        f.slope,
                        f.t_stat,
                        f.r_squared,
                        f.n,
                        f.intercept,
                        m.t.critical_at(),
                        eta.as_secs_f64()
                    ),
                    now_ns,
                ));
            }
        } else if m.predicting && m.misses >= confirm {
            m.predicting = false;
        }

        MetricStatus {
            name,
            value: Some(v),
            score: Some(score),
            band: m.band,
            trend: fit,
            eta,
            predicted: m.predicting,
            z: Some(z),
            anomalous: m.anomalous,
        }
    }

    /// Least squares over metric `i`'s values in the last `window` samples,
    /// with `x` in seconds before `now_ns`.
    fn fit(&mut self, i: usize, now_ns: u64) -> Option<Fit> {
        self.scratch.clear();
        for s in self.history.iter().rev().take(self.window) {
            if let Some(y) = s.values[i] {
                let x = -((now_ns - s.at_ns) as f64 / 1e9);
                self.scratch.push((x, y));
            }
        }
        least_squares(&self.scratch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Target;
    use proptest::prelude::*;

    proptest! {
        /// Through the whole model, for any values (including NaN and
        /// infinities) and weights: every score is within 0..=100, the history
        /// never exceeds its capacity, and the overall band is the worst band.
        #[test]
        fn model_scores_in_range_and_history_bounded(
            cap in 3usize..40,
            weights in (0.0f64..5.0, 0.01f64..5.0),
            values in proptest::collection::vec(
                (proptest::option::of(proptest::num::f64::ANY), -50.0f64..150.0),
                1..120,
            ),
        ) {
            let mut m = HealthConfig::new()
                .metric("a", Thresholds::percent(80.0, 90.0).weight(weights.0))
                .metric("b", Thresholds::new(5.0, 30.0).weight(weights.1))
                .history_capacity(cap)
                .prediction_window(3)
                .prediction_min_samples(3)
                .build_model()
                .unwrap();
            for (i, (a, b)) in values.into_iter().enumerate() {
                let out = m.sample(i as u64 * S, &[a, Some(b)]).unwrap();
                prop_assert!(m.history().len() <= cap);
                let s = out.score.unwrap();
                prop_assert!((0.0..=100.0).contains(&s), "overall {}", s);
                for st in &out.metrics {
                    if let Some(s) = st.score {
                        prop_assert!((0.0..=100.0).contains(&s));
                    }
                }
                prop_assert_eq!(out.band, out.metrics.iter().map(|x| x.band).max().unwrap());
            }
        }
    }

    const S: u64 = 1_000_000_000;

    fn model(cfg: HealthConfig) -> HealthModel {
        cfg.build_model().unwrap()
    }

    #[test]
    fn bad_samples_are_refused_without_change() {
        let mut m = model(HealthConfig::new().metric("a", Thresholds::percent(50.0, 90.0)));
        assert!(matches!(
            m.sample(0, &[Some(1.0), Some(2.0)]),
            Err(Error::InvalidArgument { what: "values", .. })
        ));
        m.sample(10, &[Some(1.0)]).unwrap();
        assert!(matches!(
            m.sample(5, &[Some(1.0)]),
            Err(Error::InvalidArgument { what: "now_ns", .. })
        ));
        assert_eq!(m.history().len(), 1);
        let out = m.sample(10, &[Some(f64::NAN)]).unwrap();
        assert_eq!(out.metrics[0].value, None);
        assert_eq!(out.score, None);
    }

    #[test]
    fn degraded_then_critical_reported_once_each() {
        let mut m =
            model(HealthConfig::new().metric("mem", Thresholds::percent(80.0, 90.0).margin(2.0)));
        let mut kinds = Vec::new();
        for (i, v) in [50.0, 81.0, 85.0, 91.0, 95.0, 89.0, 91.0, 70.0, 81.0]
            .iter()
            .enumerate()
        {
            let out = m.sample(i as u64 * S, &[Some(*v)]).unwrap();
            kinds.extend(out.failures.into_iter().map(|f| f.kind));
        }
        let mem: Arc<str> = Arc::from("mem");
        assert_eq!(
            kinds,
            [
                FailureKind::HealthDegraded {
                    metric: mem.clone()
                },
                FailureKind::HealthCritical {
                    metric: mem.clone()
                },
                FailureKind::HealthDegraded {
                    metric: mem.clone()
                },
            ],
            "89 stays critical (margin 2), 70 ends the episode, 81 starts a new one"
        );
        assert_eq!(kinds[0].target(), Target::Metric(mem));
    }

    #[test]
    fn overall_score_is_weighted_and_band_is_worst() {
        let mut m = model(
            HealthConfig::new()
                .metric("a", Thresholds::percent(80.0, 90.0).weight(3.0))
                .metric("b", Thresholds::percent(80.0, 90.0).weight(1.0)),
        );
        let out = m.sample(0, &[Some(0.0), Some(95.0)]).unwrap();
        assert_eq!(out.score, Some(75.0));
        assert_eq!(out.band, Band::Critical);
        let out = m.sample(1, &[Some(0.0), None]).unwrap();
        assert_eq!(out.score, Some(100.0));
        assert_eq!(out.band, Band::Critical, "b keeps its band without a value");
    }

    #[test]
    fn linear_rise_predicted_once() {
        let mut m = model(
            HealthConfig::new()
                .metric("disk", Thresholds::percent(80.0, 90.0))
                .prediction_window(30)
                .prediction_min_samples(10)
                .prediction_horizon(Duration::from_secs(100)),
        );
        let mut reports = Vec::new();
        for i in 0..60u64 {
            let out = m.sample(i * S, &[Some(20.0 + i as f64)]).unwrap();
            reports.extend(
                out.failures
                    .into_iter()
                    .filter(|f| matches!(f.kind, FailureKind::PredictedFailure { .. }))
                    .map(|f| (i, f)),
            );
        }
        assert_eq!(reports.len(), 1, "{reports:?}");
        let (i, f) = &reports[0];
        // Predicted from the 10th sample (min samples) + 2 confirmations; at
        // i = 11 the value is 31, so 59 s to 90.
        assert_eq!(*i, 11);
        let FailureKind::PredictedFailure { eta, .. } = f.kind else {
            unreachable!()
        };
        assert!((eta.as_secs_f64() - 59.0).abs() < 1e-6, "{eta:?}");
    }
}
