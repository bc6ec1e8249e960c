//! The scrubber's background job: [`Scrubber::step`](super::Scrubber::step)
//! on the thread `selfheal-scrub`, run by the crate's one worker lifecycle
//! ([`crate::worker`]), and the handle that commands it, held by a started
//! [`Scrubber`](super::Scrubber).
//!
//! # Contract
//!
//! - The thread only steps the scrubber and waits (for the pacing deadline,
//!   at most `worker::CLOCK_POLL_MAX` (100 ms) of real time so that a simulated clock moved by a
//!   test is noticed, or for a command). A batch just scanned is followed
//!   at once by the next, commands taking turns with it.
//! - Progress is published after every step and command; readers
//!   (`progress`, `wait_for_passes`) never
//!   wait for the thread.
//! - A command (pause, resume, rescan) is answered, or refused with
//!   [`Error::Stopped`] when the thread has stopped or died, never left
//!   waiting (the worker's guarantee).
//! - A thread that dies (a panic in the host's store, or a store error that
//!   is not about a page) reports [`FailureKind::WorkerDied`] from
//!   [`Source::Scrubber`] on the scrubber's failure bus, at its clock's
//!   time, *then* marks the handle `Failed`: whoever sees `Failed` finds the
//!   report already sent.
//! - `stop` persists the cursor on the thread and waits at
//!   most the configured stop timeout; a thread that does not stop in time
//!   is left detached and the stop returns [`Error::Stopped`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use super::{ScanSummary, ScrubCore, ScrubProgress, ScrubState, ScrubStep, COMPONENT};
use crate::clock::Clock;
use crate::error::{Error, Result};
#[cfg(doc)]
use crate::types::Failure;
use crate::types::{FailureKind, FailureSink, Source};
use crate::worker::{wake_for, Flow, Job, Stop, Worker};

/// The thread's name.
const THREAD_NAME: &str = "selfheal-scrub";

/// What the handle asks of the thread.
pub(super) enum Command {
    Pause(Sender<()>),
    Resume(Sender<()>),
    RescanBad(Sender<ScanSummary>),
}

struct Status {
    progress: ScrubProgress,
    failure: Option<String>,
}

/// What the thread publishes and the handle reads.
pub(super) struct Shared {
    status: Mutex<Status>,
    changed: Condvar,
    sink: FailureSink,
    clock: Arc<dyn Clock>,
    /// Set by the first report of the thread's death.
    dying: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn publish(&self, progress: ScrubProgress) {
        self.status.lock().progress = progress;
        self.changed.notify_all();
    }

    /// Reports the thread's death as a [`Failure`] and marks it failed —
    /// once, however many paths get here (an error on the thread, then the
    /// worker's panic hook), and even when the failure sink's callback
    /// panics (the state is set whatever the report does).
    fn died(&self, reason: &str) {
        if self.dying.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        tracing::error!(%reason, "the scrub thread failed");
        let reported = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.sink.report(
                Source::Scrubber,
                FailureKind::WorkerDied {
                    component: Arc::from(COMPONENT),
                },
                reason.to_owned(),
                self.clock.now_ns(),
            );
        }));
        if reported.is_err() {
            tracing::error!(
                "the failure sink's callback panicked while the scrub thread's death was reported"
            );
        }
        let mut st = self.status.lock();
        st.progress.state = ScrubState::Failed;
        st.failure = Some(reason.to_owned());
        drop(st);
        self.changed.notify_all();
    }

    fn failure(&self) -> Option<Error> {
        self.status
            .lock()
            .failure
            .as_ref()
            .map(|reason| stopped(reason.clone()))
    }
}

fn stopped(reason: String) -> Error {
    Error::Stopped {
        component: COMPONENT,
        reason,
    }
}

/// The scrubber as a worker [`Job`].
struct ScrubJob {
    scrubber: ScrubCore,
    shared: Arc<Shared>,
    /// When to step next; `None` while paused or done.
    next: Option<Instant>,
}

impl ScrubJob {
    fn now_ns(&self) -> u64 {
        self.scrubber.clock.now_ns()
    }
}

impl Job for ScrubJob {
    type Command = Command;

    fn next_tick(&mut self) -> Option<Instant> {
        self.next
    }

    fn tick(&mut self) -> Flow {
        let now = self.now_ns();
        let step = match self.scrubber.step(now) {
            Ok(step) => step,
            Err(e) => {
                self.shared
                    .died(&format!("the scrub thread stopped on an error: {e}"));
                return Flow::Exit;
            }
        };
        self.shared.publish(self.scrubber.progress(now));
        self.next = match step {
            ScrubStep::Scanned(_) | ScrubStep::PassComplete { .. } => Some(Instant::now()),
            ScrubStep::Wait { until_ns } => Some(wake_for(&*self.scrubber.clock, until_ns)),
            ScrubStep::Paused | ScrubStep::Done => None,
        };
        Flow::Continue
    }

    fn command(&mut self, command: Command) -> Flow {
        let now = self.now_ns();
        match command {
            Command::Pause(reply) => {
                self.scrubber.pause(now);
                self.shared.publish(self.scrubber.progress(now));
                let _ = reply.send(());
            }
            Command::Resume(reply) => {
                self.scrubber.resume(now);
                self.shared.publish(self.scrubber.progress(now));
                let _ = reply.send(());
            }
            Command::RescanBad(reply) => {
                let _ = reply.send(self.scrubber.rescan_bad());
            }
        }
        // The next step says what to wait for now.
        self.next = Some(Instant::now());
        Flow::Continue
    }

    fn finish(&mut self) -> Result<()> {
        let now = self.now_ns();
        let persisted = self.scrubber.persist_cursor_at(now);
        let mut p = self.scrubber.progress(now);
        p.state = ScrubState::Stopped;
        self.shared.publish(p);
        persisted
    }

    fn died(&mut self, reason: &str) {
        self.shared.died(reason);
    }
}

/// Commands a scrubber running on its thread (`selfheal-scrub`); held by
/// a started [`Scrubber`](super::Scrubber), which forwards to it.
pub(super) struct ScrubHandle {
    pub(super) worker: Worker<Command>,
    /// Set by the first [`stop`](Self::stop).
    stopped: std::sync::atomic::AtomicBool,
    shared: Arc<Shared>,
    stop_timeout: Duration,
}

impl fmt::Debug for ScrubHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrubHandle")
            .field("state", &self.state())
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl ScrubHandle {
    /// Moves `core` to its own thread, `selfheal-scrub`.
    ///
    /// # Errors
    /// [`Error::Io`] when the thread cannot be spawned.
    pub(super) fn spawn(core: ScrubCore) -> Result<ScrubHandle> {
        let now = core.clock.now_ns();
        let shared = Arc::new(Shared {
            status: Mutex::new(Status {
                progress: core.progress(now),
                failure: None,
            }),
            changed: Condvar::new(),
            sink: core.sink.clone(),
            clock: core.clock.clone(),
            dying: std::sync::atomic::AtomicBool::new(false),
        });
        let stop_timeout = core.stop_timeout;
        let job = ScrubJob {
            scrubber: core,
            shared: shared.clone(),
            next: Some(Instant::now()),
        };
        let worker = Worker::spawn(COMPONENT, THREAD_NAME, job)?;
        Ok(ScrubHandle {
            worker,
            stopped: std::sync::atomic::AtomicBool::new(false),
            shared,
            stop_timeout,
        })
    }

    fn gone(&self) -> Error {
        self.shared
            .failure()
            .unwrap_or_else(|| stopped("it was stopped".into()))
    }

    fn request<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T> {
        if let Some(e) = self.shared.failure() {
            return Err(e);
        }
        if self.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return Err(self.gone());
        }
        self.worker.request(make).map_err(|e| match e {
            Error::Stopped { .. } => self.shared.failure().unwrap_or(e),
            other => other,
        })
    }

    /// What the scrubber is doing (never fails; `Failed` after the thread died).
    #[must_use]
    pub(super) fn state(&self) -> ScrubState {
        self.shared.status.lock().progress.state
    }

    /// Where the scrub is.
    ///
    /// # Errors
    /// [`Error::Stopped`] with the reason when the thread died.
    pub(super) fn progress(&self) -> Result<ScrubProgress> {
        let st = self.shared.status.lock();
        match &st.failure {
            Some(reason) => Err(stopped(reason.clone())),
            None => Ok(st.progress.clone()),
        }
    }

    /// Pauses scanning; returns once the thread has paused (and persisted
    /// its cursor).
    ///
    /// # Errors
    /// [`Error::Stopped`] when the scrubber was stopped or its thread died.
    pub(super) fn pause(&self) -> Result<()> {
        self.request(Command::Pause)
    }

    /// Resumes after [`pause`](Self::pause).
    ///
    /// # Errors
    /// [`Error::Stopped`] when the scrubber was stopped or its thread died.
    pub(super) fn resume(&self) -> Result<()> {
        self.request(Command::Resume)
    }

    /// Runs an error-only pass on the scrub thread now (see
    /// `Scrubber::rescan_bad`) and returns what it found.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the scrubber was stopped or its thread died.
    pub(super) fn rescan_bad(&self) -> Result<ScanSummary> {
        self.request(Command::RescanBad)
    }

    /// Blocks until at least `passes` passes are complete or `timeout` has
    /// passed; returns the progress then, or `None` on timeout (or at once
    /// when a single-pass scrub finished with fewer passes).
    ///
    /// # Errors
    /// [`Error::Stopped`] when the thread died or was stopped before the
    /// passes were complete.
    pub(super) fn wait_for_passes(
        &self,
        passes: u64,
        timeout: Duration,
    ) -> Result<Option<ScrubProgress>> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.status.lock();
        loop {
            if let Some(reason) = &st.failure {
                return Err(stopped(reason.clone()));
            }
            if st.progress.passes_completed >= passes {
                return Ok(Some(st.progress.clone()));
            }
            if st.progress.state == ScrubState::Finished {
                // A single pass is done and no other will follow.
                return Ok(None);
            }
            if st.progress.state == ScrubState::Stopped {
                return Err(stopped("it was stopped".into()));
            }
            if self
                .shared
                .changed
                .wait_until(&mut st, deadline)
                .timed_out()
            {
                return Ok(None);
            }
        }
    }

    /// Stops the thread: it persists the cursor and ends; waits at most
    /// `ScrubConfig::stop_timeout`.
    /// Calling it again does nothing.
    ///
    /// # Errors
    /// The cursor write's error; [`Error::Stopped`] with the reason when
    /// the thread had died, or when it did not stop in time (it is then
    /// left running detached, and ends when the store call it is in
    /// returns).
    pub(super) fn stop(&self) -> Result<()> {
        if self.stopped.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        let stopped = self.worker.stop(Stop::Finish, self.stop_timeout);
        if let Some(e) = self.shared.failure() {
            return Err(e);
        }
        stopped
    }
}

impl Drop for ScrubHandle {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::warn!(%error, "scrubber stopped with an error on drop");
        }
    }
}
