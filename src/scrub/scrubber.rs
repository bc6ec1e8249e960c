//! The scrubber as a component: the state machine ([`ScrubCore`]) held
//! while it is driven by hand, handed to its thread by [`Scrubber::start`].
//!
//! # Contract
//!
//! - Built by [`ScrubConfig::build`](super::ScrubConfig::build), it does
//!   nothing until it is stepped or started.
//! - [`Scrubber::start`] moves the state machine to `selfheal-scrub`; from
//!   then on the thread alone advances it, and the calls that would advance
//!   it by hand are refused with [`Error::InvalidArgument`].
//! - [`Scrubber::stop`] is bounded (the configured stop timeout) and final:
//!   later calls return [`Error::Stopped`], a second stop does nothing.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::thread::ScrubHandle;
#[cfg(doc)]
use super::ScrubConfig;
use super::{ScanSummary, ScrubCore, ScrubProgress, ScrubState, ScrubStep, COMPONENT};
use crate::clock::Clock;
use crate::corruption::CorruptionDetector;
use crate::error::{Error, Result};
use crate::types::{Failure, FailureSink, PageId};

/// The scrubber. See the [module docs](super) for the design.
///
/// Drive it yourself with [`step`](Self::step) (tests do, with a
/// [`ManualClock`](crate::ManualClock)), scan without pacing with
/// [`scan_range`](Self::scan_range), or hand it to its own thread,
/// `selfheal-scrub`, with [`start`](Self::start); [`stop`](Self::stop)
/// (bounded by [`ScrubConfig::stop_timeout`]) persists the cursor and ends
/// it. Dropping the scrubber stops it too, logging what `stop` would return.
///
/// While the thread runs it, [`pause`](Self::pause),
/// [`resume`](Self::resume) and [`rescan_bad`](Self::rescan_bad) go to the
/// thread, and [`step`](Self::step), [`scan_range`](Self::scan_range) and
/// [`persist_cursor`](Self::persist_cursor) are refused (the thread drives
/// it).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use selfheal::{ChecksumPlacement, CorruptionConfig, MemStore, PageId, PageStore, ScrubConfig};
/// use selfheal::scrub::ScrubState;
///
/// let raw = Arc::new(MemStore::new(4096, 64)?);
/// let detector = Arc::new(CorruptionConfig::new(ChecksumPlacement::Trailer).build(raw.clone())?);
/// for p in 0..64 {
///     detector.write_sealed(PageId(p), &mut vec![p as u8; 4096])?;
/// }
/// raw.write_page(PageId(9), &[0xFF; 4096])?;      // damage behind the detector's back
///
/// // Synchronously, without pacing:
/// let scrubber = ScrubConfig::new().unlimited().build(detector.clone())?;
/// let found = scrubber.scan_range(PageId(0), 64)?;
/// assert_eq!(found.newly_corrupt, 1);
/// assert!(detector.failures().try_recv().unwrap().evidence.contains("page 9"));
///
/// // In the background, 10 000 pages/s, one pass:
/// let background = ScrubConfig::new().pages_per_s(10_000).single_pass().build(detector.clone())?;
/// background.start()?;
/// let done = background.wait_for_passes(1, Duration::from_secs(10))?.expect("a pass in 10 s");
/// assert_eq!(done.state, ScrubState::Finished);
/// assert_eq!(done.corrupt_found, 0);                 // page 9 was already reported
/// background.stop()?;
/// # Ok::<(), selfheal::Error>(())
/// ```
pub struct Scrubber {
    /// The state machine while it is driven by hand; `None` once started.
    core: Mutex<Option<ScrubCore>>,
    /// The thread's handle once started (kept after a stop, for its state).
    running: Mutex<Option<Arc<ScrubHandle>>>,
    detector: Arc<CorruptionDetector>,
    clock: Arc<dyn Clock>,
    sink: FailureSink,
    batch_pages: u64,
    threads: usize,
    /// Set by the first [`stop`](Self::stop).
    stopped: AtomicBool,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("state", &self.state())
            .field("batch_pages", &self.batch_pages)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl Scrubber {
    pub(super) fn new(core: ScrubCore) -> Scrubber {
        Scrubber {
            detector: core.detector.clone(),
            clock: core.clock.clone(),
            sink: core.sink.clone(),
            batch_pages: core.batch_pages,
            threads: core.threads,
            core: Mutex::new(Some(core)),
            running: Mutex::new(None),
            stopped: AtomicBool::new(false),
        }
    }

    /// The detector it verifies through.
    #[must_use]
    pub fn detector(&self) -> &Arc<CorruptionDetector> {
        &self.detector
    }

    /// Pages per batch (after the limits described at
    /// [`ScrubConfig::batch_pages`]).
    #[must_use]
    pub fn batch_pages(&self) -> u64 {
        self.batch_pages
    }

    /// Threads an unpaced scan uses (see [`ScrubConfig::threads`]).
    #[must_use]
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The failure bus it reports its own failures on (see
    /// [`ScrubConfig::failure_sink`]).
    #[must_use]
    pub fn failure_sink(&self) -> &FailureSink {
        &self.sink
    }

    /// The receiving end of its failure bus (cloning shares the queue).
    #[must_use]
    pub fn failures(&self) -> crossbeam_channel::Receiver<Failure> {
        self.sink.failures()
    }

    fn stopped_error() -> Error {
        Error::Stopped {
            component: COMPONENT,
            reason: "stop() was called".into(),
        }
    }

    fn handle(&self) -> Option<Arc<ScrubHandle>> {
        self.running.lock().clone()
    }

    /// Runs `f` on the state machine driven by hand.
    fn by_hand<T>(&self, what: &'static str, f: impl FnOnce(&mut ScrubCore) -> T) -> Result<T> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(Self::stopped_error());
        }
        let mut core = self.core.lock();
        let Some(core) = core.as_mut() else {
            return Err(Error::InvalidArgument {
                what,
                reason: "the scrubber runs on its thread (start() was called), which alone \
                         advances it; use pause, resume and rescan_bad, or build another \
                         scrubber to drive by hand"
                    .into(),
            });
        };
        Ok(f(core))
    }

    /// Does the next piece of work due at `now_ns`: at most one batch, or
    /// the end of a pass, or nothing (and says until when). For a scrubber
    /// driven by hand.
    ///
    /// # Errors
    /// A store error that is not about a page (a page that cannot be read is
    /// recorded, not returned; failing to persist the cursor is logged, not
    /// returned); [`Error::InvalidArgument`] once started;
    /// [`Error::Stopped`] after [`stop`](Self::stop).
    pub fn step(&self, now_ns: u64) -> Result<ScrubStep> {
        self.by_hand("step", |c| c.step(now_ns))?
    }

    /// Verifies `count` pages from `first` now, without pacing and without
    /// moving the pass. For a scrubber driven by hand.
    ///
    /// # Errors
    /// As [`step`](Self::step).
    pub fn scan_range(&self, first: PageId, count: u64) -> Result<ScanSummary> {
        self.by_hand("scan_range", |c| c.scan_range(first, count))?
    }

    /// Writes the cursor file now (when one is configured, in full mode). A
    /// failure is also reported on the failure bus, once until a write
    /// succeeds again. For a scrubber driven by hand (the thread persists
    /// its own, and at stop).
    ///
    /// # Errors
    /// [`Error::Io`] naming the step of the crash-safe write that failed (or
    /// [`Error::NotRegularFile`] when something else is at the path); the
    /// previous cursor file is then intact. [`Error::InvalidArgument`] once
    /// started; [`Error::Stopped`] after [`stop`](Self::stop).
    pub fn persist_cursor(&self) -> Result<()> {
        self.by_hand("persist_cursor", ScrubCore::persist_cursor)?
    }

    /// Rescans the known-bad pages now (an error-only pass, whatever the
    /// mode), lifting the fence of those that verify, and returns what it
    /// found. Runs on the thread once started.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the scrubber was stopped or its thread died.
    pub fn rescan_bad(&self) -> Result<ScanSummary> {
        match self.handle() {
            Some(h) => h.rescan_bad(),
            None => self.by_hand("rescan_bad", ScrubCore::rescan_bad),
        }
    }

    /// Pauses scanning (paused time is not counted in the rate); once
    /// started, returns when the thread has paused.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the scrubber was stopped or its thread died.
    pub fn pause(&self) -> Result<()> {
        match self.handle() {
            Some(h) => h.pause(),
            None => {
                let now = self.clock.now_ns();
                self.by_hand("pause", |c| c.pause(now))
            }
        }
    }

    /// Resumes after [`pause`](Self::pause).
    ///
    /// # Errors
    /// [`Error::Stopped`] when the scrubber was stopped or its thread died.
    pub fn resume(&self) -> Result<()> {
        match self.handle() {
            Some(h) => h.resume(),
            None => {
                let now = self.clock.now_ns();
                self.by_hand("resume", |c| c.resume(now))
            }
        }
    }

    /// Whether it is paused.
    #[must_use]
    pub fn is_paused(&self) -> bool {
        self.state() == ScrubState::Paused
    }

    /// What the scrubber is doing (never fails; `Failed` after the thread
    /// died, `Stopped` after a stop).
    #[must_use]
    pub fn state(&self) -> ScrubState {
        if let Some(h) = self.handle() {
            return h.state();
        }
        if self.stopped.load(Ordering::Acquire) {
            return ScrubState::Stopped;
        }
        let now = self.clock.now_ns();
        self.core
            .lock()
            .as_ref()
            .map_or(ScrubState::Stopped, |c| c.progress(now).state)
    }

    /// Where the scrub is, at its clock's time. Once started it is what the
    /// thread published last: reading it never waits for the thread.
    ///
    /// # Errors
    /// [`Error::Stopped`] with the reason when the thread died, or after a
    /// stop of a scrubber never started.
    pub fn progress(&self) -> Result<ScrubProgress> {
        if let Some(h) = self.handle() {
            return h.progress();
        }
        let now = self.clock.now_ns();
        self.by_hand("progress", |c| c.progress(now))
    }

    /// Blocks until at least `passes` passes are complete or `timeout` has
    /// passed; returns the progress then, or `None` on timeout (or at once
    /// when a single-pass scrub finished with fewer passes).
    ///
    /// # Errors
    /// [`Error::Stopped`] when the thread died or was stopped before the
    /// passes were complete; [`Error::InvalidArgument`] when it was never
    /// started (a scrubber driven by hand advances only with
    /// [`step`](Self::step)).
    pub fn wait_for_passes(&self, passes: u64, timeout: Duration) -> Result<Option<ScrubProgress>> {
        match self.handle() {
            Some(h) => h.wait_for_passes(passes, timeout),
            None if self.stopped.load(Ordering::Acquire) => Err(Self::stopped_error()),
            None => Err(Error::InvalidArgument {
                what: "wait_for_passes",
                reason: "the scrubber was not started; call start() first, or step it by hand"
                    .into(),
            }),
        }
    }

    /// Moves the scrubber to its own thread, `selfheal-scrub`, which paces
    /// its passes on the scrubber's clock until [`stop`](Self::stop).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it is already started;
    /// [`Error::Stopped`] after a stop; [`Error::Io`] when the thread cannot
    /// be spawned (the scrubber is then stopped: build another).
    pub fn start(&self) -> Result<()> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(Self::stopped_error());
        }
        let mut running = self.running.lock();
        if running.is_some() {
            return Err(Error::InvalidArgument {
                what: "start",
                reason: "the scrub thread is already running".into(),
            });
        }
        let Some(core) = self.core.lock().take() else {
            return Err(Self::stopped_error());
        };
        match ScrubHandle::spawn(core) {
            Ok(h) => {
                *running = Some(Arc::new(h));
                Ok(())
            }
            Err(e) => {
                self.stopped.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Whether its thread is running (started, not stopped, not dead).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.handle().is_some_and(|h| h.worker.is_running())
    }

    /// Stops the scrubber: its thread (if started) persists the cursor and
    /// ends, waited for at most [`ScrubConfig::stop_timeout`]; a scrubber
    /// driven by hand persists its cursor. Later calls return
    /// [`Error::Stopped`]; calling it again does nothing.
    ///
    /// # Errors
    /// The cursor write's error; [`Error::Stopped`] with the reason when the
    /// thread had died, or when it did not stop in time (it is then left
    /// running detached, and ends when the store call it is in returns).
    pub fn stop(&self) -> Result<()> {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(h) = self.handle() {
            return h.stop();
        }
        match self.core.lock().take() {
            Some(mut core) => core.persist_cursor(),
            None => Ok(()),
        }
    }

    /// The thread's handle (tests reach its worker).
    #[cfg(test)]
    pub(super) fn running(&self) -> Option<Arc<ScrubHandle>> {
        self.handle()
    }
}

impl Drop for Scrubber {
    /// Stops as [`Scrubber::stop`] does, logging its error; call `stop` to
    /// see it.
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::warn!(%error, "scrubber stopped with an error on drop");
        }
    }
}
