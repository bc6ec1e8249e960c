//! `CrashDetector`: notice quickly that a component or process stopped
//! answering, without false alarms during ordinary pauses, and tell a clean
//! shutdown from a crash at the next start.
//!
//! - Components register and beat through a [`HeartbeatHandle`] whose
//!   [`beat`](HeartbeatHandle::beat) is a relaxed atomic load (plus a store
//!   once per tick) and reads no clock.
//! - The watchdog thread `selfheal-watchdog` ticks the pure
//!   heartbeat state machine (phi accrual next to a plain timeout;
//!   `crash/heartbeat.rs`), samples watched processes
//!   (`crash/process.rs`) and refreshes the [`RunMarker`]'s last-seen time.
//! - Every state change is delivered once: to the callback
//!   ([`CrashConfig::on_event`]), on the event channel
//!   ([`CrashDetector::events`]), and — for suspect, dead and exited — as a
//!   [`Failure`] on the failure bus. The event channel and callback carry
//!   state changes only (recoveries included), while every failure the
//!   detector sees — a suspect, dead or exited watchee, an unclean previous
//!   run, a run marker it cannot refresh, a panicking callback, its own
//!   thread's death — goes on the one bus ([`CrashDetector::failures`]), so
//!   a consumer of failures needs only the bus. Both channels are bounded;
//!   when a consumer falls behind, new messages are counted as dropped
//!   rather than stalling the watchdog.
//! - A panic in the callback does not stop the watchdog: it is caught,
//!   counted ([`CrashStats::callback_panics`]) and reported on the bus as
//!   [`FailureKind::WorkerDied`] of the `"crash detector callback"` from
//!   [`Source::CrashDetector`], once per episode (the episode ends when the
//!   callback returns normally again); the event is still sent on the
//!   channel and the bus, and the watchdog goes on watching.
//!
//! # Threads and shutdown
//!
//! One thread on the crate's worker lifecycle: [`CrashConfig::build`]
//! constructs the detector (and reports an unclean previous run), and
//! [`CrashDetector::start`] starts the watchdog; until then components may
//! register but nothing is judged. [`CrashDetector::stop`] (through `&self`,
//! so a detector shared behind an `Arc` stops too) asks the thread to record a
//! clean stop in the run marker (if it has one) and waits for it at most a
//! fixed bound (10 s); a thread that does not end in time is left detached
//! and the error says so. Dropping the detector stops the thread too but does
//! **not** record a clean stop, so that a drop while the host unwinds from a
//! panic is reported as a crash at the next start. A panic on the watchdog
//! thread outside the event callback (for example in the bus's own
//! [`FailureCallback`](crate::FailureCallback)) stops the detector: it is
//! reported as [`FailureKind::WorkerDied`] of the `"crash detector"` on the
//! failure bus, and later calls return [`Error::Stopped`] with the panic
//! message.

// What only `testing` reaches (fuzz targets, corpus tests) is unused without it.
#[cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]
pub(crate) mod heartbeat;
mod phi;
pub(crate) mod process;
pub(crate) mod run_marker;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::types::{Failure, FailureKind, FailureSink, Source, DEFAULT_FAILURE_CAPACITY};
use crate::worker::{panic_message, Flow, Job, Stop, Worker};

use heartbeat::HeartbeatMonitor;
pub use heartbeat::{
    ComponentState, ComponentStatus, HeartbeatConfig, HeartbeatHandle, Transition,
};
use process::ProcessMonitor;
pub use process::{ProcessSample, ProcessState, ProcessTransition};
pub use run_marker::{RunMarker, RunVerdict};

use heartbeat::ns;

const COMPONENT: &str = "crash detector";

/// The component a panic in the host's event callback is reported as.
const CALLBACK: &str = "crash detector callback";

/// How long a stop waits for the watchdog (a host callback that hangs).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One state change seen by the watchdog: a watched component or process
/// changed state (recoveries included). An event is not a failure: the
/// failures among them (suspect, dead, exited — see
/// [`failure`](Self::failure)) also go on the failure bus, with every other
/// failure the detector reports.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum CrashEvent {
    /// A component changed state.
    Component(Transition),
    /// A watched process changed state.
    Process(ProcessTransition),
}

impl CrashEvent {
    /// The failure report for this event, if it is one (suspect, dead,
    /// process exited).
    #[must_use]
    pub fn failure(&self) -> Option<Failure> {
        match self {
            CrashEvent::Component(t) => t.failure(),
            CrashEvent::Process(t) => t.failure(),
        }
    }
}

impl fmt::Display for CrashEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashEvent::Component(t) => t.fmt(f),
            CrashEvent::Process(t) => t.fmt(f),
        }
    }
}

/// Called on the watchdog thread with every event, once each. A panic in it
/// is caught and reported (see [`CrashConfig::on_event`]).
pub type CrashCallback = Arc<dyn Fn(&CrashEvent) + Send + Sync>;

/// Configuration of a [`CrashDetector`].
#[must_use]
pub struct CrashConfig {
    heartbeat: HeartbeatConfig,
    process_interval: Duration,
    max_processes: usize,
    marker_refresh_interval: Duration,
    event_capacity: usize,
    failures: Option<FailureSink>,
    clock: Arc<dyn Clock>,
    on_event: Option<CrashCallback>,
    run_marker: Option<RunMarker>,
}

impl fmt::Debug for CrashConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashConfig")
            .field("heartbeat", &self.heartbeat)
            .field("process_interval", &self.process_interval)
            .field("max_processes", &self.max_processes)
            .field("marker_refresh_interval", &self.marker_refresh_interval)
            .field("event_capacity", &self.event_capacity)
            .field("run_marker", &self.run_marker)
            .finish_non_exhaustive()
    }
}

impl Default for CrashConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl CrashConfig {
    /// Defaults: [`HeartbeatConfig::default`], processes sampled every 1 s (at
    /// most 256), marker refreshed every 1 s, 1 024 unread events, a failure
    /// bus of its own, the system clock, no callback, no run marker.
    pub fn new() -> Self {
        CrashConfig {
            heartbeat: HeartbeatConfig::default(),
            process_interval: Duration::from_secs(1),
            max_processes: 256,
            marker_refresh_interval: Duration::from_secs(1),
            event_capacity: 1024,
            failures: None,
            clock: SystemClock::shared(),
            on_event: None,
            run_marker: None,
        }
    }

    /// Component liveness settings (tick, timeout, phi; see [`HeartbeatConfig`]).
    pub fn heartbeat(mut self, c: HeartbeatConfig) -> Self {
        self.heartbeat = c;
        self
    }

    /// How often watched processes are sampled (default 1 s). Sampling reads
    /// the OS process table, so it runs less often than the heartbeat tick;
    /// it happens on the first tick at or after each interval.
    pub fn process_interval(mut self, d: Duration) -> Self {
        self.process_interval = d;
        self
    }

    /// How many processes may be watched at once (default 256).
    pub fn max_processes(mut self, n: usize) -> Self {
        self.max_processes = n;
        self
    }

    /// How often the run marker's last-seen time is rewritten (default 1 s;
    /// each rewrite is two fsyncs).
    pub fn marker_refresh_interval(mut self, d: Duration) -> Self {
        self.marker_refresh_interval = d;
        self
    }

    /// How many unread events the event channel holds (default 1 024);
    /// beyond that, new ones are counted as dropped.
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n;
        self
    }

    /// The failure bus it reports on (default: a bus of its own holding
    /// 4 096 unread reports). Give every component the same sink to see one
    /// ordered stream.
    pub fn failure_sink(mut self, sink: FailureSink) -> Self {
        self.failures = Some(sink);
        self
    }

    /// The clock (default: the system clock). The watchdog still wakes on
    /// real time every tick interval; it reads `now` from this clock, and
    /// [`CrashDetector::check_now`] runs a tick on demand for simulated time.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A callback run on the watchdog thread with every [`CrashEvent`] — each
    /// state change of a watched component or process, not only failures
    /// (default none). It must not block for long: it delays the next tick.
    /// A panic in it is caught: it is counted
    /// ([`CrashStats::callback_panics`]) and reported on the failure bus
    /// once per episode as [`FailureKind::WorkerDied`] of the
    /// `"crash detector callback"` from [`Source::CrashDetector`], with the
    /// panic message as evidence; the watchdog goes on watching.
    pub fn on_event(mut self, f: CrashCallback) -> Self {
        self.on_event = Some(f);
        self
    }

    /// A run marker for the watchdog to keep fresh and to mark a clean stop
    /// on [`CrashDetector::stop`] (default none). When its
    /// [verdict](RunMarker::verdict) says the previous run did not stop
    /// cleanly, [`build`](Self::build) reports
    /// [`FailureKind::UncleanShutdown`] on the failure sink, with the verdict
    /// as evidence: startup recovery is due.
    pub fn run_marker(mut self, marker: RunMarker) -> Self {
        self.run_marker = Some(marker);
        self
    }

    /// Validates the configuration and builds the detector; the watchdog
    /// thread runs from [`CrashDetector::start`]. Components may register
    /// before it starts (they are judged from the first tick).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for any zero interval, timeout, window or
    /// capacity (see [`HeartbeatConfig::validate`]).
    pub fn build(self) -> Result<CrashDetector> {
        if self.process_interval.is_zero() {
            return Err(Error::config(
                "process_interval",
                "is zero; it must be positive",
            ));
        }
        if self.marker_refresh_interval.is_zero() {
            return Err(Error::config(
                "marker_refresh_interval",
                "is zero; it must be positive",
            ));
        }
        if self.event_capacity == 0 {
            return Err(Error::config(
                "event_capacity",
                "is 0; it must be at least 1",
            ));
        }
        let now = self.clock.now_ns();
        let shared = Arc::new(Shared {
            heartbeats: Mutex::new(HeartbeatMonitor::new(self.heartbeat, now)?),
            processes: Mutex::new(ProcessMonitor::new(self.max_processes)?),
            events_dropped: AtomicU64::new(0),
            marker_errors: AtomicU64::new(0),
            callback_panics: AtomicU64::new(0),
        });
        let sink = self
            .failures
            .unwrap_or_else(|| FailureSink::new(DEFAULT_FAILURE_CAPACITY));
        if let Some(verdict) = self.run_marker.as_ref().map(RunMarker::verdict) {
            if verdict.is_crash() {
                sink.report(
                    Source::CrashDetector,
                    FailureKind::UncleanShutdown,
                    verdict.to_string(),
                    now,
                );
            }
        }
        let (event_tx, events) = bounded(self.event_capacity);
        let watchdog = Watchdog {
            shared: shared.clone(),
            clock: self.clock.clone(),
            sink: sink.clone(),
            event_tx,
            on_event: self.on_event,
            callback_failing: false,
            marker_failing: false,
            marker: self.run_marker,
            process_interval_ns: ns(self.process_interval),
            marker_interval_ns: ns(self.marker_refresh_interval),
            next_process_ns: now,
            next_marker_ns: now.saturating_add(ns(self.marker_refresh_interval)),
            tick_every: self.heartbeat.tick(),
            next_tick: Instant::now(),
        };
        Ok(CrashDetector {
            shared,
            clock: self.clock,
            pending: Mutex::new(Some(watchdog)),
            worker: OnceLock::new(),
            sink,
            events,
        })
    }
}

struct Shared {
    heartbeats: Mutex<HeartbeatMonitor>,
    processes: Mutex<ProcessMonitor>,
    events_dropped: AtomicU64,
    marker_errors: AtomicU64,
    callback_panics: AtomicU64,
}

enum Command {
    CheckNow(Sender<Vec<CrashEvent>>),
}

/// The watchdog's job: tick the heartbeat and process monitors, refresh the
/// marker, deliver events.
struct Watchdog {
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    sink: FailureSink,
    event_tx: Sender<CrashEvent>,
    on_event: Option<CrashCallback>,
    /// The callback panicked and has not returned normally since: its
    /// panic was reported once for this episode.
    callback_failing: bool,
    /// A refresh of the run marker failed and was reported; cleared by one
    /// that succeeds.
    marker_failing: bool,
    marker: Option<RunMarker>,
    process_interval_ns: u64,
    marker_interval_ns: u64,
    next_process_ns: u64,
    next_marker_ns: u64,
    tick_every: Duration,
    next_tick: Instant,
}

impl Job for Watchdog {
    type Command = Command;

    fn next_tick(&mut self) -> Option<Instant> {
        Some(self.next_tick)
    }

    fn tick(&mut self) -> Flow {
        self.next_tick = Instant::now() + self.tick_every;
        self.step();
        Flow::Continue
    }

    fn command(&mut self, command: Command) -> Flow {
        match command {
            Command::CheckNow(reply) => {
                let _ = reply.send(self.step());
            }
        }
        Flow::Continue
    }

    /// A clean shutdown: the marker records it.
    fn finish(&mut self) -> Result<()> {
        self.marker.take().map_or(Ok(()), RunMarker::stop)
    }

    /// Queued on the bus before the sink's callback runs: if that callback is
    /// what panicked and panics again, the worker catches it and the report
    /// stays queued. (A panic in the host's event callback is caught in
    /// [`Watchdog::step`] and does not end the thread.)
    fn died(&mut self, reason: &str) {
        self.sink.send(Failure::new(
            Source::CrashDetector,
            FailureKind::WorkerDied {
                component: Arc::from(COMPONENT),
            },
            reason.to_owned(),
            self.clock.now_ns(),
        ));
    }
}

impl Watchdog {
    /// One watchdog step: heartbeats, processes when due, marker when due;
    /// then delivery of every event.
    fn step(&mut self) -> Vec<CrashEvent> {
        let now = self.clock.now_ns();
        let mut events: Vec<CrashEvent> = self
            .shared
            .heartbeats
            .lock()
            .tick(now)
            .into_iter()
            .map(CrashEvent::Component)
            .collect();
        if now >= self.next_process_ns {
            self.next_process_ns = now.saturating_add(self.process_interval_ns);
            events.extend(
                self.shared
                    .processes
                    .lock()
                    .sample(now)
                    .into_iter()
                    .map(CrashEvent::Process),
            );
        }
        if now >= self.next_marker_ns {
            self.next_marker_ns = now.saturating_add(self.marker_interval_ns);
            if let Some(m) = &mut self.marker {
                match m.refresh() {
                    Ok(()) => self.marker_failing = false,
                    Err(e) => {
                        // Detection goes on; the next start will see an older
                        // last-seen time, which errs on the safe side.
                        self.shared.marker_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "could not refresh the run marker");
                        if !self.marker_failing {
                            self.marker_failing = true;
                            self.sink.send(Failure::new(
                                Source::CrashDetector,
                                FailureKind::RunMarkerFailed,
                                format!(
                                    "the run marker could not be refreshed ({e}); detection goes \
                                     on, and a crash of this run is dated from the last refresh \
                                     that succeeded: make its directory writable again"
                                ),
                                now,
                            ));
                        }
                    }
                }
            }
        }
        for ev in &events {
            tracing::info!(event = %ev, "crash detector");
            if let Some(cb) = &self.on_event {
                match catch_unwind(AssertUnwindSafe(|| cb(ev))) {
                    Ok(()) => self.callback_failing = false,
                    Err(payload) => {
                        self.shared.callback_panics.fetch_add(1, Ordering::Relaxed);
                        let reason = panic_message(payload.as_ref());
                        tracing::warn!(event = %ev, panic = %reason, "the crash detector's on_event callback panicked");
                        if !self.callback_failing {
                            self.callback_failing = true;
                            self.sink.send(Failure::new(
                                Source::CrashDetector,
                                FailureKind::WorkerDied {
                                    component: Arc::from(CALLBACK),
                                },
                                format!(
                                    "the crash detector's on_event callback panicked on `{ev}`: \
                                     {reason}; the watchdog goes on watching and calls it \
                                     again with the next event"
                                ),
                                now,
                            ));
                        }
                    }
                }
            }
            if let Some(f) = ev.failure() {
                self.sink.send(f);
            }
            if self.event_tx.try_send(ev.clone()).is_err() {
                self.shared.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        events
    }
}

/// Counters of a [`CrashDetector`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashStats {
    /// Its own failure reports dropped because the failure bus was full (on
    /// a shared bus, other components' drops are not counted here; the
    /// whole bus's are [`FailureSink::dropped`]).
    pub failures_dropped: u64,
    /// Events dropped because the event channel was full.
    pub events_dropped: u64,
    /// Run-marker refreshes that failed.
    pub marker_errors: u64,
    /// Calls of the event callback that panicked (each was caught; the
    /// first of an episode was reported on the failure bus).
    pub callback_panics: u64,
}

/// Heartbeats, process liveness and the run marker, watched by one thread.
/// See the module docs.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use selfheal::crash::{ComponentState, CrashConfig, CrashEvent, HeartbeatConfig};
/// use selfheal::{Clock, FailureKind, ManualClock};
///
/// let clock = ManualClock::new();
/// let detector = CrashConfig::new()
///     .clock(Arc::new(clock.clone()))
///     .heartbeat(HeartbeatConfig::new().timeout(Duration::from_secs(2)))
///     .build()?;
/// detector.start()?;
/// let wal = detector.register("wal-writer")?;
///
/// // The component beats; the watchdog sees it alive.
/// for _ in 0..20 {
///     wal.beat();
///     clock.advance(Duration::from_millis(100));
///     assert!(detector.check_now()?.is_empty());
/// }
/// // It stops beating: suspect first, then dead at the timeout.
/// let mut states = Vec::new();
/// for _ in 0..25 {
///     clock.advance(Duration::from_millis(100));
///     for ev in detector.check_now()? {
///         if let CrashEvent::Component(t) = ev { states.push(t.to) }
///     }
/// }
/// assert_eq!(states, [ComponentState::Suspect, ComponentState::Dead]);
/// let failure = detector.failures().try_iter().last().unwrap();
/// assert!(matches!(failure.kind, FailureKind::ComponentDead { .. }));
/// detector.stop()?;
/// # Ok::<(), selfheal::Error>(())
/// ```
pub struct CrashDetector {
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    /// The watchdog's job until [`start`](CrashDetector::start) (or a stop
    /// before it) takes it.
    pending: Mutex<Option<Watchdog>>,
    /// Set once by `start`.
    worker: OnceLock<Worker<Command>>,
    sink: FailureSink,
    events: Receiver<CrashEvent>,
}

impl fmt::Debug for CrashDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashDetector")
            .field("watchdog", &self.worker.get())
            .finish_non_exhaustive()
    }
}

impl CrashDetector {
    /// Starts the watchdog thread, `selfheal-watchdog`: from now on it ticks
    /// the heartbeats, samples processes and refreshes the run marker.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it is already running;
    /// [`Error::Stopped`] after [`stop`](Self::stop); [`Error::Io`] when the
    /// thread cannot be spawned.
    pub fn start(&self) -> Result<()> {
        let mut pending = self.pending.lock();
        let Some(job) = pending.take() else {
            return Err(match self.worker.get() {
                Some(w) if w.is_running() => Error::InvalidArgument {
                    what: "start",
                    reason: "the watchdog is already running".into(),
                },
                Some(w) => w.stopped_error(),
                None => Error::Stopped {
                    component: COMPONENT,
                    reason: "stop() was called before start()".into(),
                },
            });
        };
        let worker = Worker::spawn(COMPONENT, "selfheal-watchdog", job)?;
        let _ = self.worker.set(worker);
        Ok(())
    }

    /// Whether the watchdog thread is running (started, not stopped, not
    /// dead).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.worker.get().is_some_and(Worker::is_running)
    }

    /// Calls are refused only after a stop or a watchdog panic; before
    /// `start` they are accepted.
    fn check_running(&self) -> Result<()> {
        // Locked first: `start` sets the worker while it holds the lock.
        let pending = self.pending.lock();
        if let Some(w) = self.worker.get() {
            return w.check_running();
        }
        if pending.is_some() {
            return Ok(());
        }
        Err(Error::Stopped {
            component: COMPONENT,
            reason: "stop() was called".into(),
        })
    }

    /// Registers a component, alive as of now; beat through the handle.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty name;
    /// [`Error::AlreadyWatched`] for a name already registered;
    /// [`Error::WatchLimit`] when `max_components` are registered;
    /// [`Error::Stopped`] after shutdown
    /// or a watchdog panic.
    pub fn register(&self, name: &str) -> Result<HeartbeatHandle> {
        self.check_running()?;
        let now = self.clock.now_ns();
        self.shared.heartbeats.lock().register(name, now)
    }

    /// Stops watching a component; returns whether it was registered.
    pub fn unregister(&self, name: &str) -> bool {
        self.shared.heartbeats.lock().unregister(name)
    }

    /// Starts watching process `pid` under `name`; it is sampled at the next
    /// process interval.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for pid 0; [`Error::AlreadyWatched`] for a
    /// pid already watched; [`Error::WatchLimit`] when `max_processes` are
    /// watched; [`Error::Stopped`] after shutdown or a
    /// watchdog panic.
    pub fn watch_process(&self, pid: u32, name: &str) -> Result<()> {
        self.check_running()?;
        self.shared.processes.lock().watch(pid, name)
    }

    /// Stops watching `pid`; returns whether it was watched.
    pub fn unwatch_process(&self, pid: u32) -> bool {
        self.shared.processes.lock().unwatch(pid)
    }

    /// The status of every component after the last tick.
    #[must_use]
    pub fn components(&self) -> Vec<ComponentStatus> {
        self.shared.heartbeats.lock().statuses()
    }

    /// The last sample of a watched process.
    #[must_use]
    pub fn process(&self, pid: u32) -> Option<ProcessSample> {
        self.shared.processes.lock().last_sample(pid)
    }

    /// Runs one watchdog tick now, on the watchdog thread, and returns its
    /// events (which are also delivered as usual). Processes are sampled if
    /// their interval has passed. Useful with a manual clock.
    ///
    /// # Errors
    /// [`Error::Stopped`] before [`start`](Self::start), after shutdown or
    /// a watchdog panic; [`Error::InvalidArgument`] when called from the
    /// event callback.
    pub fn check_now(&self) -> Result<Vec<CrashEvent>> {
        match self.worker.get() {
            Some(w) => w.request(Command::CheckNow),
            None => Err(Error::Stopped {
                component: COMPONENT,
                reason: "the watchdog is not running: call start() first".into(),
            }),
        }
    }

    /// The receiving end of its failure bus (component suspect or dead,
    /// process exited, an unclean previous run, the event callback panicked,
    /// the watchdog itself died): every failure it reports.
    #[must_use]
    pub fn failures(&self) -> Receiver<Failure> {
        self.sink.failures()
    }

    /// The receiving end of every [`CrashEvent`]: each state change of a
    /// watched component or process, recoveries included (cloning shares the
    /// queue). Events are not failures; the failures among them also go on
    /// the bus ([`failures`](Self::failures)).
    #[must_use]
    pub fn events(&self) -> Receiver<CrashEvent> {
        self.events.clone()
    }

    /// The failure bus it reports on.
    #[must_use]
    pub fn failure_sink(&self) -> &FailureSink {
        &self.sink
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> CrashStats {
        CrashStats {
            failures_dropped: self.sink.dropped_from(Source::CrashDetector),
            events_dropped: self.shared.events_dropped.load(Ordering::Relaxed),
            marker_errors: self.shared.marker_errors.load(Ordering::Relaxed),
            callback_panics: self.shared.callback_panics.load(Ordering::Relaxed),
        }
    }

    /// Stops the watchdog, records a clean shutdown in the run marker (if
    /// any) and joins the thread, waiting at most 10 s. A detector that was
    /// never started records the clean shutdown itself. Later calls do
    /// nothing and return `Ok`.
    ///
    /// # Errors
    /// [`Error::Io`] when the marker could not be written (the next start
    /// then reports a crash); [`Error::Stopped`] when the watchdog had
    /// panicked (nothing is recorded: the run did not end cleanly);
    /// [`Error::InvalidArgument`] when called from the event callback (the
    /// watchdog then stops after the callback, without a clean record).
    pub fn stop(&self) -> Result<()> {
        if let Some(mut job) = self.pending.lock().take() {
            return job.finish();
        }
        match self.worker.get() {
            Some(w) => w.stop(Stop::Finish, STOP_TIMEOUT),
            None => Ok(()),
        }
    }
}

impl Drop for CrashDetector {
    /// Stops and joins the watchdog without recording a clean shutdown; use
    /// [`CrashDetector::stop`] for that.
    fn drop(&mut self) {
        if let Some(w) = self.worker.get() {
            let _ = w.stop(Stop::Abandon, STOP_TIMEOUT);
        }
    }
}

#[cfg(test)]
mod tests;
