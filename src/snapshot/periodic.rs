//! Periodic snapshots: a [`Worker`] thread (`selfheal-snapshot`) that takes
//! a snapshot every interval of the manager's clock.
//!
//! # Contract
//!
//! - Each snapshot pauses the host's writes through its [`WriteGate`], reads
//!   the LSN from the host's function, and snapshots the store; retention
//!   follows (by the manager). Intervals are measured on the manager's
//!   [`Clock`](crate::Clock): the thread wakes at most every 100 ms of real time to
//!   read it, so a simulated clock moved by a test is seen within that.
//! - A snapshot that fails is counted ([`PeriodicStats::failed`]) and
//!   reported as
//!   [`FailureKind::SnapshotFailed`]; the
//!   thread goes on with the next interval — or sooner after a retryable
//!   I/O error (a full disk, `EIO`): after the n-th such failure in a row
//!   it tries again after a wait drawn uniformly from
//!   `[0, PERIODIC_RETRY_BASE · 2ⁿ⁻¹]`, capped at the interval (full
//!   jitter), so a fault that clears is followed by a snapshot soon,
//!   without a burst of retries while it lasts. A manager found poisoned is
//!   reported once, not at every tick, until a snapshot succeeds again. A
//!   retention that fails after a snapshot committed (the snapshot is
//!   listed; older ones are kept) is reported as a failed snapshot too, its
//!   evidence naming the retention.
//! - A panic on the thread (in the host's store or LSN function) ends it:
//!   it is counted, reported as [`FailureKind::WorkerDied`] on the manager's
//!   failure bus, and every later call returns [`Error::Stopped`]. The
//!   manager itself stays usable.
//! - Built by [`PeriodicConfig::build`], it takes nothing until
//!   [`PeriodicSnapshots::start`]; the first snapshot is due one interval
//!   after the start.
//! - [`PeriodicSnapshots::stop`] waits at most
//!   [`PeriodicConfig::stop_timeout`] for a snapshot in progress; a thread
//!   that does not end by then is left detached (it ends when its snapshot
//!   returns) and reported in the error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use super::inner::Inner;
use super::{
    is_reported, Consistency, SnapshotKind, SnapshotReport, SnapshotRequest, StateSnapshotManager,
    WriteGate,
};
use crate::error::{Error, Result};
use crate::host::PageStore;
use crate::types::{FailureKind, Lsn, Source};
use crate::worker::{wake_for, Flow, Job, Stop, Worker};

const COMPONENT: &str = "periodic snapshots";

/// The longest wait before the periodic thread first retries a snapshot
/// that failed on a retryable I/O error; it doubles with each further
/// failure in a row, up to the interval.
pub const PERIODIC_RETRY_BASE: Duration = Duration::from_secs(1);

/// Configuration of [`PeriodicSnapshots`].
#[derive(Clone, Copy, Debug)]
pub struct PeriodicConfig {
    interval: Duration,
    kind: SnapshotKind,
    stop_timeout: Duration,
}

impl PeriodicConfig {
    /// A snapshot every `interval` of the manager's clock (must be nonzero;
    /// checked by [`build`](Self::build)).
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        PeriodicConfig {
            interval,
            kind: SnapshotKind::Auto,
            stop_timeout: Duration::from_secs(60),
        }
    }

    /// Which kind of snapshot each tick takes. Default [`SnapshotKind::Auto`].
    #[must_use]
    pub fn kind(mut self, kind: SnapshotKind) -> Self {
        self.kind = kind;
        self
    }

    /// How long [`PeriodicSnapshots::stop`] waits for a snapshot in
    /// progress. Default 60 s; must be nonzero. Size it to the longest
    /// snapshot of the store.
    #[must_use]
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }
}

/// Counters of the periodic thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeriodicStats {
    /// Snapshots taken.
    pub taken: u64,
    /// Snapshot attempts that failed (a panic included).
    pub failed: u64,
    /// The last failure's message.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    taken: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn failed(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(why);
    }
}

enum Command {
    Now(Sender<Result<SnapshotReport>>),
}

/// The `selfheal-snapshot` job: one snapshot per interval of the clock.
struct Ticker {
    manager: StateSnapshotManager,
    store: Arc<dyn PageStore>,
    gate: Arc<WriteGate>,
    lsn: Arc<dyn Fn() -> Lsn + Send + Sync>,
    kind: SnapshotKind,
    interval_ns: u64,
    /// When the next snapshot is due, on the manager's clock.
    due_ns: u64,
    counters: Arc<Counters>,
    /// The manager was found poisoned and that was reported; cleared by a
    /// snapshot that succeeds.
    poison_reported: bool,
    /// Snapshots failed in a row on a retryable I/O error.
    retryable_failures: u32,
}

impl Ticker {
    fn inner(&self) -> &Inner {
        &self.manager.inner
    }

    /// One snapshot, and its report on the bus: a failed snapshot is
    /// reported (a bad request aside); a poisoned manager only once until a
    /// snapshot succeeds again, not at every tick; a retention that failed
    /// after the snapshot committed, as a failed snapshot too.
    fn once(&mut self) -> Result<SnapshotReport> {
        let pause = self.gate.pause();
        let lsn = (self.lsn)();
        let r = self.inner().take_snapshot(
            Consistency::Paused {
                store: &*self.store,
                pause: &pause,
                lsn,
            },
            SnapshotRequest::new(self.kind),
        );
        drop(pause);
        match &r {
            Ok(report) => {
                self.counters.taken.fetch_add(1, Ordering::Relaxed);
                self.poison_reported = false;
                if let Some(why) = &report.retention_error {
                    let inner = self.inner();
                    inner.sink.report(
                        Source::StateSnapshotManager,
                        FailureKind::SnapshotFailed,
                        format!(
                            "retention after the periodic snapshot {} in {} failed: {why}; older snapshots are kept until it next runs",
                            report.info.id,
                            inner.dir.display()
                        ),
                        inner.clock.now_ns(),
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "periodic snapshot failed");
                self.counters.failed(e.to_string());
                let poisoned = matches!(e, Error::Poisoned { .. });
                if is_reported(e) && !(poisoned && self.poison_reported) {
                    self.inner()
                        .report_snapshot_failed("a periodic snapshot", e);
                }
                self.poison_reported |= poisoned;
            }
        }
        r
    }
}

impl Job for Ticker {
    type Command = Command;

    fn next_tick(&mut self) -> Option<Instant> {
        Some(wake_for(&*self.inner().clock, self.due_ns))
    }

    fn tick(&mut self) -> Flow {
        let started = self.inner().clock.now_ns();
        if started >= self.due_ns {
            let result = self.once();
            if let Err(e) = &result {
                if crate::retry::retryable(e).is_some() {
                    self.retryable_failures = self.retryable_failures.saturating_add(1);
                    let interval = Duration::from_nanos(self.interval_ns);
                    let wait = crate::retry::full_jitter(crate::retry::backoff(
                        self.retryable_failures,
                        PERIODIC_RETRY_BASE.min(interval),
                        interval,
                    ));
                    let wait = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
                    self.due_ns = started.saturating_add(wait.max(1));
                    return Flow::Continue;
                }
            }
            self.retryable_failures = 0;
            // On the period's grid; after a snapshot that took longer than
            // the interval (or a clock that jumped), one interval from this
            // one's start: a missed period is never made up with a burst.
            let next = self.due_ns.saturating_add(self.interval_ns);
            self.due_ns = if next <= started {
                started.saturating_add(self.interval_ns)
            } else {
                next
            };
        }
        Flow::Continue
    }

    fn command(&mut self, command: Command) -> Flow {
        match command {
            Command::Now(reply) => {
                let _ = reply.send(self.once());
            }
        }
        Flow::Continue
    }

    fn died(&mut self, reason: &str) {
        self.counters.failed(reason.to_owned());
        let inner = self.inner();
        inner.sink.report(
            Source::StateSnapshotManager,
            FailureKind::WorkerDied {
                component: Arc::from(COMPONENT),
            },
            format!(
                "the periodic snapshots of {} stopped: {reason}",
                inner.dir.display()
            ),
            inner.clock.now_ns(),
        );
    }
}

/// A thread that takes a snapshot at every interval of the manager's clock,
/// pausing the host's writes through its [`WriteGate`] for the duration.
/// Retention is applied after each snapshot (by the manager). A failed
/// snapshot is counted and reported as
/// [`FailureKind::SnapshotFailed`]; a
/// panic on the thread (in the host's store or LSN function) ends it,
/// reported as [`FailureKind::WorkerDied`], and later calls return
/// [`Error::Stopped`]; the manager stays usable. Intervals are measured on
/// the manager's [clock](super::SnapshotConfig::clock), read at least every
/// 100 ms of real time.
///
/// Dropping it stops the thread (bounded as [`stop`](Self::stop) is); `stop`
/// also reports a thread that died.
pub struct PeriodicSnapshots {
    /// The job until [`start`](Self::start) hands it to the thread.
    job: Mutex<Option<Ticker>>,
    worker: Mutex<Option<Worker<Command>>>,
    counters: Arc<Counters>,
    stop_timeout: Duration,
    /// Set by the first [`stop`](Self::stop).
    stopped: AtomicBool,
}

impl std::fmt::Debug for PeriodicSnapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeriodicSnapshots")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PeriodicConfig {
    /// Builds the periodic snapshots of `manager`: each snapshot pauses
    /// `gate`, reads the LSN from `lsn`, and snapshots `store`. Nothing runs
    /// until [`PeriodicSnapshots::start`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero interval or stop timeout.
    pub fn build(
        self,
        manager: &StateSnapshotManager,
        store: Arc<dyn PageStore>,
        gate: Arc<WriteGate>,
        lsn: Arc<dyn Fn() -> Lsn + Send + Sync>,
    ) -> Result<PeriodicSnapshots> {
        if self.interval.is_zero() {
            return Err(Error::config(
                "interval",
                "is 0; give a nonzero snapshot interval",
            ));
        }
        if self.stop_timeout.is_zero() {
            return Err(Error::config(
                "stop_timeout",
                "is 0; give the time the longest snapshot may take, e.g. 60 s",
            ));
        }
        let interval_ns = u64::try_from(self.interval.as_nanos()).unwrap_or(u64::MAX);
        let counters = Arc::new(Counters::default());
        let job = Ticker {
            manager: manager.shared(),
            store,
            gate,
            lsn,
            kind: self.kind,
            interval_ns,
            // Set by `start`.
            due_ns: u64::MAX,
            counters: counters.clone(),
            poison_reported: false,
            retryable_failures: 0,
        };
        Ok(PeriodicSnapshots {
            job: Mutex::new(Some(job)),
            worker: Mutex::new(None),
            counters,
            stop_timeout: self.stop_timeout,
            stopped: AtomicBool::new(false),
        })
    }
}

impl PeriodicSnapshots {
    fn stopped_error() -> Error {
        Error::Stopped {
            component: COMPONENT,
            reason: "stop() was called".into(),
        }
    }

    /// Starts the thread, `selfheal-snapshot`; the first snapshot is due one
    /// interval of the manager's clock from now.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it is already started;
    /// [`Error::Stopped`] after [`stop`](Self::stop); [`Error::Io`] when the
    /// thread cannot be spawned (it is then stopped: build another).
    pub fn start(&self) -> Result<()> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(Self::stopped_error());
        }
        let mut worker = self.worker.lock();
        if worker.is_some() {
            return Err(Error::InvalidArgument {
                what: "start",
                reason: "the periodic snapshot thread is already running".into(),
            });
        }
        let Some(mut job) = self.job.lock().take() else {
            return Err(Self::stopped_error());
        };
        job.due_ns = job.inner().clock.now_ns().saturating_add(job.interval_ns);
        match Worker::spawn(COMPONENT, "selfheal-snapshot", job) {
            Ok(w) => {
                *worker = Some(w);
                Ok(())
            }
            Err(e) => {
                self.stopped.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// The thread's counters.
    #[must_use]
    pub fn stats(&self) -> PeriodicStats {
        PeriodicStats {
            taken: self.counters.taken.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            last_error: self.counters.last_error.lock().clone(),
        }
    }

    /// Whether the thread is running (not stopped, not dead).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.worker
            .try_lock()
            .is_none_or(|w| w.as_ref().is_some_and(Worker::is_running))
    }

    /// Takes a snapshot now, on the thread, and returns its result.
    ///
    /// Do not call it while holding a [`WriteTicket`](super::WriteTicket) of
    /// the gate the thread pauses: the snapshot waits for the pause, which
    /// waits for every ticket to be dropped, so the call would never return.
    ///
    /// # Errors
    /// The snapshot's error; [`Error::Stopped`] when the thread is stopped
    /// or died; [`Error::InvalidArgument`] when it was never started.
    pub fn snapshot_now(&self) -> Result<SnapshotReport> {
        let worker = self.worker.lock();
        let Some(w) = worker.as_ref() else {
            if self.stopped.load(Ordering::Acquire) {
                return Err(Self::stopped_error());
            }
            return Err(Error::InvalidArgument {
                what: "snapshot_now",
                reason: "the periodic snapshots were not started; call start() first, or take \
                         a snapshot through the manager"
                    .into(),
            });
        };
        w.request(Command::Now)?
    }

    /// Stops the thread and joins it, waiting at most the configured
    /// [`stop_timeout`](PeriodicConfig::stop_timeout) (for a running
    /// `snapshot_now` and the snapshot in progress together). Later calls
    /// do nothing.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the thread had died (the panic's message), or
    /// did not stop in time (it is then left to end on its own).
    pub fn stop(&self) -> Result<()> {
        self.stopped.store(true, Ordering::Release);
        drop(self.job.lock().take());
        let deadline = Instant::now() + self.stop_timeout;
        let Some(mut slot) = self.worker.try_lock_until(deadline) else {
            return Err(Error::Stopped {
                component: COMPONENT,
                reason: format!(
                    "a snapshot_now call did not return within {:?}; the thread was not stopped",
                    self.stop_timeout
                ),
            });
        };
        match slot.take() {
            Some(w) => w.stop(
                Stop::Finish,
                deadline.saturating_duration_since(Instant::now()),
            ),
            None => Ok(()),
        }
    }
}

impl Drop for PeriodicSnapshots {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "periodic snapshots ended badly");
        }
    }
}
