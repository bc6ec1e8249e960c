//! `HealthMonitor`: see trouble coming before it becomes an outage.
//!
//! Probes ([`HealthProbe`]: built-in CPU, memory, disk space and process
//! probes, plus host probes) are sampled at a fixed interval on a thread named
//! `selfheal-health`. Each round goes through the health model, a pure
//! state machine fed with the time and the values, which
//!
//! - scores each metric 0–100 and the host as a weighted mean
//!   ([`score`]);
//! - keeps each metric in a band (healthy / degraded / critical) with
//!   hysteresis, so that a value hovering at a threshold does not flap;
//! - keeps a bounded history of rounds;
//! - fits a least-squares line to each metric over a window and predicts when
//!   it will cross its critical threshold, reporting a
//!   [`PredictedFailure`](crate::FailureKind::PredictedFailure) only for a
//!   trend that passes a significance test ([`predict`] documents the rule);
//! - flags sudden jumps with an EWMA z-score: a value is anomalous when
//!   `|value - mean| / max(std dev, floor) >= anomaly_z` against the
//!   exponentially weighted mean and variance of the values before it, after
//!   `anomaly_warmup` values; the floor is 1 % of `critical - best`, so a
//!   metric that sat perfectly still is not anomalous for a tiny step. The
//!   episode ends when |z| falls below half the threshold. Measured on steady
//!   Gaussian noise with the defaults: 1 flag in 500 000 samples (a genuine
//!   4.5-sigma draw); `tests/health.rs` asserts a rate below 1e-5.
//!
//! Each condition (degraded, critical, predicted failure, anomaly) is
//! reported once per episode to a [`FailureSink`] channel and an optional
//! callback, like every other detector.
//!
//! # Invariants
//! - Scores are always within `0..=100`; the history never holds more than
//!   `history_capacity` rounds; the report channel is bounded.
//! - A metric without a value in a round (probe error, panic, NaN) keeps its
//!   band and episodes; nothing is inferred from a missing value.
//! - Nothing is written to disk.

// What only `testing` reaches (fuzz targets, corpus tests) is unused without it.
#[cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]
mod history;
// What only `testing` reaches (fuzz targets, corpus tests) is unused without it.
#[cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]
pub(crate) mod model;
pub mod predict;
pub mod probe;
pub mod score;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use parking_lot::Mutex;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::types::{Failure, FailureKind, FailureSink, Source, DEFAULT_FAILURE_CAPACITY};
use crate::worker::{Flow, Job, Stop, TimedCaller, Worker};

use model::HealthModel;
pub use model::{BandChange, MetricStatus, Sample, SampleOutcome};
pub use predict::Fit;
pub use probe::{
    CpuProbe, DiskProbe, FnProbe, HealthProbe, MemoryProbe, ProcessRssProbe, ProcessThreadsProbe,
};
pub use score::{Band, Thresholds};

const COMPONENT: &str = "HealthMonitor";

#[derive(Clone)]
pub(crate) struct MetricEntry {
    pub(crate) name: Arc<str>,
    pub(crate) thresholds: Thresholds,
    pub(crate) probe: Option<Arc<dyn HealthProbe>>,
}

/// Configuration of a [`HealthMonitor`] (or of the bare model that the
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
    failures: Option<FailureSink>,
    clock: Arc<dyn Clock>,
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
    /// reported once as [`FailureKind::ProbeFailed`], and is not asked again
    /// until its late call has returned — a probe that hangs never holds up
    /// sampling or [`HealthMonitor::stop`].
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

    /// Builds the pure model (no probes, no thread, no clock); tests reach
    /// it through `testing::health_model`.
    ///
    /// # Errors
    /// As [`validate`](Self::validate).
    pub(crate) fn build_model(&self) -> Result<HealthModel> {
        HealthModel::from_config(self)
    }

    /// Builds the monitor. It samples only when asked
    /// ([`HealthMonitor::sample_now`]) until [`HealthMonitor::start`].
    ///
    /// # Errors
    /// As [`validate`](Self::validate), and [`Error::InvalidConfig`]
    /// (`metrics`) for a metric added without a probe.
    pub fn build(self) -> Result<HealthMonitor> {
        let model = self.build_model()?;
        let probes = self
            .metrics
            .iter()
            .map(|m| {
                m.probe.clone().ok_or_else(|| {
                    Error::config(
                        "metrics",
                        format!(
                            "metric `{}` has no probe: add it with `probe()`, or feed values to \
                             a model from `build_model()`",
                            m.name
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let sink = self
            .failures
            .clone()
            .unwrap_or_else(|| FailureSink::new(DEFAULT_FAILURE_CAPACITY));
        let probes = probes
            .into_iter()
            .map(|probe| ProbeSlot {
                caller: TimedCaller::new("selfheal-probe"),
                failing: AtomicBool::new(false),
                probe,
            })
            .collect();
        Ok(HealthMonitor {
            shared: Arc::new(Shared {
                model: Mutex::new(model),
                probes,
                probe_timeout: self.probe_timeout,
                clock: self.clock,
                sink,
                latest: Mutex::new(None),
                samples: AtomicU64::new(0),
                probe_errors: AtomicU64::new(0),
                stopped: AtomicBool::new(false),
                round: Mutex::new(()),
            }),
            interval: self.sample_interval,
            worker: Mutex::new(None),
        })
    }
}

/// Counters of a [`HealthMonitor`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorStats {
    /// Rounds sampled.
    pub samples: u64,
    /// Probe samples that gave no value (error, panic, non-finite value).
    pub probe_errors: u64,
    /// Reports dropped because the channel was full.
    pub reports_dropped: u64,
}

/// One probe and the helper thread that calls it with a deadline.
#[derive(Debug)]
struct ProbeSlot {
    probe: Arc<dyn HealthProbe>,
    caller: TimedCaller,
    /// Whether the probe is in a failing episode (reported once).
    failing: AtomicBool,
}

struct Shared {
    model: Mutex<HealthModel>,
    probes: Vec<ProbeSlot>,
    probe_timeout: Duration,
    clock: Arc<dyn Clock>,
    sink: FailureSink,
    latest: Mutex<Option<SampleOutcome>>,
    samples: AtomicU64,
    probe_errors: AtomicU64,
    stopped: AtomicBool,
    /// Held while a round asks its probes, so that a round asked for by
    /// [`HealthMonitor::sample_now`] never finds a probe busy with the
    /// sampler's round (and calls a healthy probe failing). Not held while
    /// reports go out: a failure callback may sample.
    round: Mutex<()>,
}

impl Shared {
    fn check_usable(&self) -> Result<()> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(Error::Stopped {
                component: COMPONENT,
                reason: "stop() was called".into(),
            });
        }
        Ok(())
    }

    /// Asks every probe at once, each on its helper thread, and collects the
    /// answers under one deadline.
    fn read_probes(&self) -> Vec<Option<f64>> {
        let pending: Vec<_> = self
            .probes
            .iter()
            .map(|slot| {
                let probe = slot.probe.clone();
                slot.caller.start(move || probe.sample())
            })
            .collect();
        let deadline = Instant::now() + self.probe_timeout;
        self.probes
            .iter()
            .zip(pending)
            .map(|(slot, started)| {
                let why = match started.and_then(|p| p.wait_until(deadline)) {
                    Ok(Ok(v)) if v.is_finite() => {
                        slot.failing.store(false, Ordering::Release);
                        return Some(v);
                    }
                    Ok(Ok(v)) => format!("non-finite value {v}"),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => format!("the probe {e}"),
                };
                self.probe_errors.fetch_add(1, Ordering::Relaxed);
                let name = slot.probe.name();
                tracing::warn!(probe = name, reason = %why, "health probe gave no value");
                if !slot.failing.swap(true, Ordering::AcqRel) {
                    self.report(&Failure::new(
                        Source::HealthMonitor,
                        FailureKind::ProbeFailed {
                            metric: Arc::from(name),
                        },
                        format!("health probe `{name}` gave no value: {why}"),
                        self.clock.now_ns(),
                    ));
                }
                None
            })
            .collect()
    }

    fn report(&self, f: &Failure) {
        tracing::warn!(failure = %f, "health");
        self.sink.send(f.clone());
    }

    /// Reads every probe, feeds the model at the clock's time, reports.
    fn sample_once(&self) -> Result<SampleOutcome> {
        let values = {
            let _round = self.round.lock();
            self.read_probes()
        };
        let outcome = {
            let mut model = self.model.lock();
            // Read under the lock so that concurrent samplers stay in order.
            let now = self.clock.now_ns();
            model.sample(now, &values)?
        };
        self.samples.fetch_add(1, Ordering::Relaxed);
        *self.latest.lock() = Some(outcome.clone());
        for f in &outcome.failures {
            self.report(f);
        }
        Ok(outcome)
    }
}

/// The sampling thread has no commands: it is only ticked and stopped.
enum Command {}

/// The `selfheal-health` job: one round per interval.
struct Sampler {
    shared: Arc<Shared>,
    interval: Duration,
    next: Instant,
}

impl Job for Sampler {
    type Command = Command;

    fn next_tick(&mut self) -> Option<Instant> {
        Some(self.next)
    }

    fn tick(&mut self) -> Flow {
        self.next = Instant::now() + self.interval;
        if let Err(e) = self.shared.sample_once() {
            tracing::warn!(error = %e, "health sample refused");
        }
        Flow::Continue
    }

    fn command(&mut self, command: Command) -> Flow {
        match command {}
    }

    /// Queued on the bus before the sink's callback runs: if that callback is
    /// what panicked and panics again, the worker catches it and the report
    /// stays queued.
    fn died(&mut self, reason: &str) {
        self.shared.sink.send(Failure::new(
            Source::HealthMonitor,
            FailureKind::WorkerDied {
                component: Arc::from(COMPONENT),
            },
            reason.to_owned(),
            self.shared.clock.now_ns(),
        ));
    }
}

/// Samples probes, scores and predicts; reports trouble before it becomes an
/// outage.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
/// use selfheal::{FailureKind, HealthConfig, ManualClock};
/// use selfheal::health::{Band, Thresholds};
///
/// // A host metric: replication lag in seconds, scripted here.
/// let lag = Arc::new(AtomicU64::new(1));
/// let l = lag.clone();
/// let clock = ManualClock::new();
/// let monitor = HealthConfig::new()
///     .probe_fn("repl_lag_s", Thresholds::new(10.0, 30.0), move || {
///         Ok(l.load(Ordering::Relaxed) as f64)
///     })
///     .clock(Arc::new(clock.clone()))
///     .build()?;
///
/// assert_eq!(monitor.sample_now()?.band, Band::Healthy);
/// lag.store(35, Ordering::Relaxed);
/// clock.advance(Duration::from_secs(1));
/// let out = monitor.sample_now()?;
/// assert_eq!(out.band, Band::Critical);
/// let report = monitor.failures().try_recv().unwrap();
/// assert!(matches!(report.kind, FailureKind::HealthCritical { .. }));
///
/// // In production: monitor.start()? samples on the `selfheal-health` thread.
/// monitor.stop()?;
/// # Ok::<(), selfheal::Error>(())
/// ```
pub struct HealthMonitor {
    shared: Arc<Shared>,
    interval: Duration,
    worker: Mutex<Option<Worker<Command>>>,
}

impl fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("probes", &self.shared.probes)
            .field("interval", &self.interval)
            .field("running", &self.is_running())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl HealthMonitor {
    /// Starts the `selfheal-health` thread, which samples every
    /// `sample_interval` until [`stop`](Self::stop) or drop.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it is already running;
    /// [`Error::Stopped`] after `stop()` or a failure; [`Error::Io`] when the
    /// thread cannot be spawned.
    pub fn start(&self) -> Result<()> {
        self.shared.check_usable()?;
        let mut worker = self.worker.lock();
        if let Some(w) = worker.as_ref() {
            w.check_running()?;
            return Err(Error::InvalidArgument {
                what: "start",
                reason: "the sampling thread is already running".into(),
            });
        }
        let job = Sampler {
            shared: self.shared.clone(),
            interval: self.interval,
            next: Instant::now() + self.interval,
        };
        *worker = Some(Worker::spawn(COMPONENT, "selfheal-health", job)?);
        Ok(())
    }

    /// Whether the sampling thread is running.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.worker.lock().as_ref().is_some_and(Worker::is_running)
    }

    /// Samples every probe now (each on its helper thread, the caller waiting
    /// at most the probe deadline), feeds the model at
    /// the clock's time, and reports what began. The sampling thread does
    /// exactly this on each tick.
    ///
    /// # Errors
    /// [`Error::Stopped`] after `stop()` or when the sampling thread died;
    /// [`Error::InvalidArgument`] when the clock went back.
    pub fn sample_now(&self) -> Result<SampleOutcome> {
        self.shared.check_usable()?;
        if let Some(w) = self.worker.lock().as_ref() {
            w.check_running()?;
        }
        self.shared.sample_once()
    }

    /// Stops and joins the sampling thread (if running); later sampling
    /// fails with [`Error::Stopped`]. Idempotent.
    ///
    /// # Errors
    /// [`Error::Stopped`] with the reason when the sampling thread had died
    /// (a panicking failure callback).
    pub fn stop(&self) -> Result<()> {
        self.shared.stopped.store(true, Ordering::Release);
        let worker = self.worker.lock().take();
        match worker {
            // A round waits at most one probe deadline; the stop waits for
            // that round, and a little more for the host's callback.
            Some(mut w) => w.stop(
                Stop::Finish,
                self.shared.probe_timeout + Duration::from_secs(5),
            ),
            None => Ok(()),
        }
    }

    /// The receiving end of the failure reports (cloning shares the queue).
    #[must_use]
    pub fn failures(&self) -> Receiver<Failure> {
        self.shared.sink.failures()
    }

    /// The failure bus it reports on.
    #[must_use]
    pub fn failure_sink(&self) -> &FailureSink {
        &self.shared.sink
    }

    /// The outcome of the newest sample.
    #[must_use]
    pub fn latest(&self) -> Option<SampleOutcome> {
        self.shared.latest.lock().clone()
    }

    /// A copy of the history, oldest first.
    #[must_use]
    pub fn history(&self) -> Vec<Sample> {
        self.shared.model.lock().history().iter().cloned().collect()
    }

    /// The metric names, in configuration order.
    #[must_use]
    pub fn metric_names(&self) -> Vec<Arc<str>> {
        self.shared.model.lock().metric_names().cloned().collect()
    }

    /// Current counters.
    #[must_use]
    pub fn stats(&self) -> MonitorStats {
        MonitorStats {
            samples: self.shared.samples.load(Ordering::Relaxed),
            probe_errors: self.shared.probe_errors.load(Ordering::Relaxed),
            reports_dropped: self.shared.sink.dropped(),
        }
    }
}

impl Drop for HealthMonitor {
    /// Stops and joins the sampling thread; use [`HealthMonitor::stop`] to
    /// see whether it had failed.
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(cfg: HealthConfig) -> &'static str {
        match cfg.validate() {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    fn one() -> HealthConfig {
        HealthConfig::new().metric("m", Thresholds::percent(80.0, 90.0))
    }

    #[test]
    fn bad_config_is_typed() {
        assert_eq!(field(HealthConfig::new()), "metrics");
        assert_eq!(
            field(one().sample_interval(Duration::ZERO)),
            "sample_interval"
        );
        assert_eq!(
            field(one().prediction_horizon(Duration::ZERO)),
            "prediction_horizon"
        );
        for w in [0, 1, 2] {
            assert_eq!(field(one().prediction_window(w)), "prediction_window");
        }
        assert_eq!(
            field(
                HealthConfig::new()
                    .metric("a", Thresholds::percent(80.0, 90.0).weight(0.0))
                    .metric("b", Thresholds::percent(80.0, 90.0).weight(0.0))
            ),
            "thresholds.weight"
        );
        assert_eq!(
            field(HealthConfig::new().metric("a", Thresholds::percent(80.0, 101.0))),
            "thresholds.critical"
        );
        assert_eq!(
            field(one().metric("m", Thresholds::percent(80.0, 90.0))),
            "metrics"
        );
        assert_eq!(field(one().history_capacity(10)), "history_capacity");
        assert_eq!(
            field(one().prediction_min_samples(2)),
            "prediction_min_samples"
        );
        assert_eq!(
            field(one().prediction_min_samples(61)),
            "prediction_min_samples"
        );
        assert_eq!(field(one().prediction_min_t(0.0)), "prediction_min_t");
        assert_eq!(field(one().prediction_min_r2(1.5)), "prediction_min_r2");
        assert_eq!(field(one().prediction_confirm(0)), "prediction_confirm");
        assert_eq!(field(one().anomaly_alpha(1.0)), "anomaly_alpha");
        assert_eq!(field(one().anomaly_z(f64::NAN)), "anomaly_z");
        assert!(matches!(
            one().build(),
            Err(Error::InvalidConfig {
                field: "metrics",
                ..
            })
        ));
        one().validate().unwrap();
    }

    #[test]
    fn probe_errors_and_panics_leave_the_value_missing() {
        let monitor = HealthConfig::new()
            .probe_fn("bad", Thresholds::new(1.0, 2.0), || {
                Err(Error::Unsupported { action: "x" })
            })
            .probe_fn("nan", Thresholds::new(1.0, 2.0), || Ok(f64::NAN))
            .probe_fn("boom", Thresholds::new(1.0, 2.0), || panic!("probe bug"))
            .probe_fn("ok", Thresholds::new(1.0, 2.0), || Ok(0.5))
            .clock(Arc::new(crate::ManualClock::new()))
            .build()
            .unwrap();
        let out = monitor.sample_now().unwrap();
        let values: Vec<_> = out.metrics.iter().map(|m| m.value).collect();
        assert_eq!(values, [None, None, None, Some(0.5)]);
        assert_eq!(monitor.stats().probe_errors, 3);
        assert_eq!(out.score, Some(75.0));
    }

    #[test]
    fn start_twice_and_use_after_stop() {
        let monitor = one_probe_monitor();
        monitor.start().unwrap();
        assert!(matches!(
            monitor.start(),
            Err(Error::InvalidArgument { what: "start", .. })
        ));
        monitor.stop().unwrap();
        monitor.stop().unwrap();
        assert!(matches!(monitor.sample_now(), Err(Error::Stopped { .. })));
        assert!(matches!(monitor.start(), Err(Error::Stopped { .. })));
    }

    #[test]
    fn a_round_asked_for_while_the_sampler_runs_never_finds_a_healthy_probe_busy() {
        let monitor = HealthConfig::new()
            .probe_fn("slow", Thresholds::percent(80.0, 90.0), || {
                std::thread::sleep(Duration::from_millis(3));
                Ok(1.0)
            })
            .sample_interval(Duration::from_millis(1))
            .probe_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        monitor.start().unwrap();
        for _ in 0..40 {
            let out = monitor.sample_now().unwrap();
            assert_eq!(out.metrics[0].value, Some(1.0));
        }
        monitor.stop().unwrap();
        assert_eq!(monitor.stats().probe_errors, 0);
        assert_eq!(monitor.failures().try_iter().count(), 0);
    }

    fn one_probe_monitor() -> HealthMonitor {
        HealthConfig::new()
            .probe_fn("m", Thresholds::percent(80.0, 90.0), || Ok(1.0))
            .sample_interval(Duration::from_millis(5))
            .build()
            .unwrap()
    }
}
