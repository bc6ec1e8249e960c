//! The health monitor: probes sampled with a deadline each, on the
//! `selfheal-health` worker or on demand, fed to the model, and what began
//! reported on the failure bus.
//!
//! # Contract
//! - Rounds are due by the monitor's [`Clock`]: one every `sample_interval`
//!   of it, the first one interval after [`HealthMonitor::start`]; real time
//!   only bounds how long the thread waits before it reads the clock again.
//! - A round asks every probe at once, each on its own helper thread, and
//!   waits at most the probe deadline: a probe that misses it gives no value
//!   and is reported once per failing episode, never waited on.
//! - [`HealthMonitor::stop`] is bounded: one probe deadline for the round in
//!   progress, and a little more for the host's callback.
//! - A panic on the sampling thread is reported as
//!   [`FailureKind::WorkerDied`] and later calls return [`Error::Stopped`].

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use parking_lot::Mutex;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::types::{Failure, FailureKind, FailureSink, Source, DEFAULT_FAILURE_CAPACITY};
use crate::worker::{wake_for, Flow, Job, Stop, TimedCaller, Worker};

use super::model::HealthModel;
use super::{HealthConfig, HealthProbe, Sample, SampleOutcome};

const COMPONENT: &str = "health monitor";

/// Counters of a [`HealthMonitor`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorStats {
    /// Rounds sampled.
    pub samples: u64,
    /// Probe samples that gave no value (error, panic, non-finite value).
    pub probe_errors: u64,
    /// Its own reports dropped because the failure bus was full (on a
    /// shared bus, other components' drops are not counted here; the whole
    /// bus's are [`FailureSink::dropped`]).
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
                let why = match started.and_then(|mut p| p.wait_until(deadline)) {
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

/// The `selfheal-health` job: one round per interval of the monitor's clock.
struct Sampler {
    shared: Arc<Shared>,
    interval_ns: u64,
    /// When the next round is due, on the monitor's clock.
    due_ns: u64,
}

impl Job for Sampler {
    type Command = Command;

    fn next_tick(&mut self) -> Option<Instant> {
        Some(wake_for(&*self.shared.clock, self.due_ns))
    }

    fn tick(&mut self) -> Flow {
        let now = self.shared.clock.now_ns();
        if now < self.due_ns {
            return Flow::Continue;
        }
        // On the interval's grid; a round that overran (or a clock that
        // jumped) is not made up with a burst.
        let next = self.due_ns.saturating_add(self.interval_ns);
        self.due_ns = if next <= now {
            now.saturating_add(self.interval_ns)
        } else {
            next
        };
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

impl HealthConfig {
    /// Builds the monitor. It samples only when asked
    /// ([`HealthMonitor::sample_now`]) until [`HealthMonitor::start`].
    ///
    /// # Errors
    /// As [`validate`](HealthConfig::validate), and [`Error::InvalidConfig`]
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
                            "metric `{}` has no probe: add it with `probe()` (a metric \
                             without one only feeds the bare model of `testing::health_model`)",
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
        Ok(HealthMonitor::new(
            model,
            probes,
            sink,
            self.probe_timeout,
            self.clock,
            self.sample_interval,
        ))
    }
}

impl HealthMonitor {
    /// The monitor over `model`, sampling `probes` (in the model's metric
    /// order); nothing runs until [`start`](Self::start).
    pub(super) fn new(
        model: HealthModel,
        probes: Vec<Arc<dyn HealthProbe>>,
        sink: FailureSink,
        probe_timeout: Duration,
        clock: Arc<dyn Clock>,
        interval: Duration,
    ) -> HealthMonitor {
        let probes = probes
            .into_iter()
            .map(|probe| ProbeSlot {
                caller: TimedCaller::new("selfheal-probe"),
                failing: AtomicBool::new(false),
                probe,
            })
            .collect();
        HealthMonitor {
            shared: Arc::new(Shared {
                model: Mutex::new(model),
                probes,
                probe_timeout,
                clock,
                sink,
                latest: Mutex::new(None),
                samples: AtomicU64::new(0),
                probe_errors: AtomicU64::new(0),
                stopped: AtomicBool::new(false),
                round: Mutex::new(()),
            }),
            interval,
            worker: Mutex::new(None),
        }
    }

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
        let interval_ns = u64::try_from(self.interval.as_nanos()).unwrap_or(u64::MAX);
        let job = Sampler {
            shared: self.shared.clone(),
            interval_ns,
            due_ns: self.shared.clock.now_ns().saturating_add(interval_ns),
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
            Some(w) => w.stop(
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
            reports_dropped: self.shared.sink.dropped_from(Source::HealthMonitor),
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
