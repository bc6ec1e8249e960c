//! The health monitor's configuration: metrics with their thresholds and
//! probes, sampling, history, prediction and anomaly settings.
//!
//! # Contract
//! - [`HealthConfig::validate`] refuses every setting that would make the
//!   model meaningless (no metric, a zero interval or capacity, thresholds
//!   out of order) with [`Error::InvalidConfig`] naming the field.
//! - [`HealthConfig::build`] only constructs: no thread runs until
//!   [`HealthMonitor::start`](super::HealthMonitor::start).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{FnProbe, HealthProbe, Thresholds};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::types::FailureSink;

#[derive(Clone)]
pub(crate) struct MetricEntry {
    pub(crate) name: Arc<str>,
    pub(crate) thresholds: Thresholds,
    pub(crate) probe: Option<Arc<dyn HealthProbe>>,
}

/// Configuration of a [`HealthMonitor`](super::HealthMonitor) (or of the bare model that the
/// `testing` feature's `health_model` builds).
#[must_use]
pub struct HealthConfig {
    pub(crate) metrics: Vec<MetricEntry>,
    pub(crate) sample_interval: Duration,
    pub(crate) probe_timeout: Duration,
    pub(crate) history_capacity: usize,
    pub(crate) prediction_window: usize,
    pub(crate) prediction_min_samples: usize,
    pub(crate) prediction_min_t: f64,
    pub(crate) prediction_min_r2: f64,
    pub(crate) prediction_confirm: usize,
    pub(crate) prediction_horizon: Duration,
    pub(crate) anomaly_alpha: f64,
    pub(crate) anomaly_z: f64,
    pub(crate) anomaly_warmup: u64,
    pub(crate) failures: Option<FailureSink>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl fmt::Debug for HealthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.metrics.iter().map(|m| &*m.name).collect();
        f.debug_struct("HealthConfig")
            .field("metrics", &names)
            .field("sample_interval", &self.sample_interval)
            .field("history_capacity", &self.history_capacity)
            .field("prediction_window", &self.prediction_window)
            .field("prediction_horizon", &self.prediction_horizon)
            .finish_non_exhaustive()
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthConfig {
    /// No metrics; a 1 s interval, 1 000 rounds of history, prediction over
    /// 60 samples (at least 20, t ≥ 8, R² ≥ 0.5, confirmed over 3 samples,
    /// horizon 1 h), anomalies at |z| ≥ 6 after 30 samples with EWMA weight
    /// 0.05, a failure bus of its own, the system clock, and a 2 s
    /// deadline for each probe.
    pub fn new() -> Self {
        HealthConfig {
            metrics: Vec::new(),
            sample_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
            history_capacity: 1_000,
            prediction_window: 60,
            prediction_min_samples: 20,
            prediction_min_t: 8.0,
            prediction_min_r2: 0.5,
            prediction_confirm: 3,
            prediction_horizon: Duration::from_secs(3_600),
            anomaly_alpha: 0.05,
            anomaly_z: 6.0,
            anomaly_warmup: 30,
            failures: None,
            clock: SystemClock::shared(),
        }
    }

    /// Adds a probe; its metric is named [`probe.name()`](HealthProbe::name)
    /// and judged by `thresholds` (in the probe's unit).
    pub fn probe(mut self, probe: Arc<dyn HealthProbe>, thresholds: Thresholds) -> Self {
        self.metrics.push(MetricEntry {
            name: Arc::from(probe.name()),
            thresholds,
            probe: Some(probe),
        });
        self
    }

    /// Adds a host probe made of a name and a closure (see [`FnProbe`]).
    pub fn probe_fn(
        self,
        name: impl Into<String>,
        thresholds: Thresholds,
        f: impl Fn() -> Result<f64> + Send + Sync + 'static,
    ) -> Self {
        self.probe(Arc::new(FnProbe::new(name, f)), thresholds)
    }

    /// Adds a metric without a probe, for the bare model whose values the
    /// caller supplies (`testing::health_model`; [`build`](Self::build)
    /// refuses it).
    pub fn metric(mut self, name: impl AsRef<str>, thresholds: Thresholds) -> Self {
        self.metrics.push(MetricEntry {
            name: Arc::from(name.as_ref()),
            thresholds,
            probe: None,
        });
        self
    }

    /// Time between samples of the sampling thread (default 1 s; not zero).
    pub fn sample_interval(mut self, interval: Duration) -> Self {
        self.sample_interval = interval;
        self
    }

    /// How long a probe may take to answer (default 2 s; not zero). Probes
    /// run in parallel, each on its own helper thread (`selfheal-probe`);
    /// one that misses the deadline gives no value for the round, is
    /// reported once as [`FailureKind::ProbeFailed`](crate::FailureKind::ProbeFailed), and is not asked again
    /// until its late call has returned — a probe that hangs never holds up
    /// sampling or [`HealthMonitor::stop`](super::HealthMonitor::stop).
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Rounds of samples kept (default 1 000; at least the prediction window).
    pub fn history_capacity(mut self, rounds: usize) -> Self {
        self.history_capacity = rounds;
        self
    }

    /// Rounds the trend is fitted over (default 60; at least 3).
    pub fn prediction_window(mut self, rounds: usize) -> Self {
        self.prediction_window = rounds;
        self
    }

    /// Fewest values in the window for a prediction (default 20; 3 to the
    /// window).
    pub fn prediction_min_samples(mut self, values: usize) -> Self {
        self.prediction_min_samples = values;
        self
    }

    /// Least t-statistic of the slope for a prediction (default 8; > 0).
    pub fn prediction_min_t(mut self, t: f64) -> Self {
        self.prediction_min_t = t;
        self
    }

    /// Least R² of the fit for a prediction (default 0.5; in `[0, 1]`).
    pub fn prediction_min_r2(mut self, r2: f64) -> Self {
        self.prediction_min_r2 = r2;
        self
    }

    /// Consecutive samples a prediction must hold before it is reported, and
    /// must fail before its episode ends (default 3; at least 1).
    pub fn prediction_confirm(mut self, samples: usize) -> Self {
        self.prediction_confirm = samples;
        self
    }

    /// Longest estimated time to failure that is reported (default 1 h; not
    /// zero).
    pub fn prediction_horizon(mut self, horizon: Duration) -> Self {
        self.prediction_horizon = horizon;
        self
    }

    /// Weight of each new value in the anomaly EWMA (default 0.05; in `(0, 1)`).
    pub fn anomaly_alpha(mut self, alpha: f64) -> Self {
        self.anomaly_alpha = alpha;
        self
    }

    /// |z| at which a value is anomalous (default 6; > 0). The episode ends
    /// when |z| falls below half of it.
    pub fn anomaly_z(mut self, z: f64) -> Self {
        self.anomaly_z = z;
        self
    }

    /// Values seen before anomalies are flagged (default 30).
    pub fn anomaly_warmup(mut self, values: u64) -> Self {
        self.anomaly_warmup = values;
        self
    }

    /// The failure bus it reports on (default: a bus of its own holding
    /// 4 096 unread reports). Give every component the same sink to see one
    /// ordered stream. The sink's callback, if any, runs on the sampling
    /// thread: one that panics stops the sampling thread and marks the
    /// monitor failed (its death is still reported on the bus).
    pub fn failure_sink(mut self, sink: FailureSink) -> Self {
        self.failures = Some(sink);
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field: no metrics, a duplicate or
    /// empty metric name, bad [`Thresholds`], weights that sum to 0, a zero
    /// interval or horizon, a window below 3 or above the history capacity,
    /// min samples outside `3..=window`, a non-positive t, an R² outside
    /// `[0, 1]`, zero confirmations, an EWMA weight outside `(0, 1)`, a
    /// non-positive z, a zero report capacity.
    pub fn validate(&self) -> Result<()> {
        if self.metrics.is_empty() {
            return Err(Error::config(
                "metrics",
                "is empty; add at least one probe or metric",
            ));
        }
        for (i, m) in self.metrics.iter().enumerate() {
            if m.name.is_empty() {
                return Err(Error::config("metrics", "has a metric with an empty name"));
            }
            if self.metrics[..i].iter().any(|o| o.name == m.name) {
                return Err(Error::config(
                    "metrics",
                    format!("has two metrics named `{}`; names must be unique", m.name),
                ));
            }
            m.thresholds.validate(&m.name)?;
        }
        let weights: f64 = self
            .metrics
            .iter()
            .map(|m| m.thresholds.weight_value())
            .sum();
        if weights <= 0.0 {
            return Err(Error::config(
                "thresholds.weight",
                "sums to 0 over all metrics; give at least one metric a positive weight",
            ));
        }
        if self.sample_interval.is_zero() {
            return Err(Error::config(
                "sample_interval",
                "is 0; it must be positive",
            ));
        }
        if self.probe_timeout.is_zero() {
            return Err(Error::config("probe_timeout", "is 0; it must be positive"));
        }
        if self.prediction_horizon.is_zero() {
            return Err(Error::config(
                "prediction_horizon",
                "is 0; it must be positive",
            ));
        }
        if self.prediction_window < 3 {
            return Err(Error::config(
                "prediction_window",
                format!(
                    "is {}; a trend needs at least 3 samples (2 to draw a line, 1 more to judge it)",
                    self.prediction_window
                ),
            ));
        }
        if self.history_capacity < self.prediction_window {
            return Err(Error::config(
                "history_capacity",
                format!(
                    "is {}, below the prediction window of {}",
                    self.history_capacity, self.prediction_window
                ),
            ));
        }
        if !(3..=self.prediction_window).contains(&self.prediction_min_samples) {
            return Err(Error::config(
                "prediction_min_samples",
                format!(
                    "is {}; it must be in 3..={} (the window)",
                    self.prediction_min_samples, self.prediction_window
                ),
            ));
        }
        if !(self.prediction_min_t.is_finite() && self.prediction_min_t > 0.0) {
            return Err(Error::config(
                "prediction_min_t",
                format!("is {}; it must be a positive number", self.prediction_min_t),
            ));
        }
        if !(0.0..=1.0).contains(&self.prediction_min_r2) {
            return Err(Error::config(
                "prediction_min_r2",
                format!("is {}; it must be in [0, 1]", self.prediction_min_r2),
            ));
        }
        if self.prediction_confirm == 0 {
            return Err(Error::config(
                "prediction_confirm",
                "is 0; it must be at least 1",
            ));
        }
        if !(self.anomaly_alpha > 0.0 && self.anomaly_alpha < 1.0) {
            return Err(Error::config(
                "anomaly_alpha",
                format!("is {}; it must be in (0, 1)", self.anomaly_alpha),
            ));
        }
        if !(self.anomaly_z.is_finite() && self.anomaly_z > 0.0) {
            return Err(Error::config(
                "anomaly_z",
                format!("is {}; it must be a positive number", self.anomaly_z),
            ));
        }
        Ok(())
    }
}
