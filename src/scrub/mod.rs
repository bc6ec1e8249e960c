//! The scrubber: reads every page of the store at a configured rate,
//! verifies it through the [`CorruptionDetector`], and so finds the damage
//! no host read would touch before it is needed. Corrupt pages are reported
//! once (by the detector, on its failure bus); the scrubber reports its own
//! failures (a thread that died, a cursor file it could not write) on its
//! own [`FailureSink`], by default the detector's.
//!
//! # Contract
//!
//! - **Paced.** Over any window the pages read never exceed
//!   `rate × elapsed + one batch` of the scrubber's [`Clock`] (the pacer is a
//!   token bucket in integer arithmetic: `pacer.rs`). A batch is at most 256
//!   pages or 1 MiB by default, and a tenth of a second's worth at a paced
//!   rate.
//! - **One read, one CRC per page.** Each [`Scrubber::step`] scans at most
//!   one batch (16 per thread with [`ScrubConfig::threads`] above 1) through
//!   [`PageStore::scan_pages`](crate::PageStore::scan_pages) and
//!   [`CorruptionDetector::check_scanned`] (`core.rs`). A page whose batch
//!   read fails (an `EIO` in the middle of a batch) is re-read on its own
//!   with [`CorruptionDetector::check_page`]; a read error that persists is
//!   recorded as a page that needs repair. A page that fails verification
//!   once and verifies on the re-read (a transient fault on the path) is
//!   counted as transient and never reported.
//! - **Reported once.** Whether a corrupt page is reported is the
//!   detector's decision (its suspect registry), so a page is reported once
//!   however many passes see it. Pages that fail verification but that the
//!   host says are unallocated (see [`free`](crate::corruption::free)) are
//!   skipped: counted in [`ScanSummary::unallocated`], never reported.
//! - **A store that changes size.** The page count is read at the start of
//!   each pass. A store that shrinks ([`CorruptionDetector::resize`]), also
//!   in the middle of a pass, ends the pass where the store now ends: the
//!   position is clamped to it, no error is returned and nothing is reported
//!   about the pages that were dropped.
//! - **Resumable.** With [`ScrubConfig::cursor_path`], a full-mode scrubber
//!   persists where it is, so that a restarted process continues the pass
//!   instead of starting over (`cursor.rs` documents the file byte by byte,
//!   with its crash analysis). A cursor only ever decides where a pass
//!   starts: a wrong one can make one pass skip or repeat pages, never make
//!   a bad page verify. A damaged cursor means page 0.
//! - **One owner per cursor file.** A scrubber holds `<cursor>.lock` beside
//!   its cursor file (the crate's directory-owner lock) from `build` until
//!   it, or its thread, is gone; a second scrubber on the same file, in this
//!   process or another, is refused with [`Error::DirectoryLocked`], so two
//!   scrubbers never overwrite each other's position.
//! - **Its own failures on the bus.** A scrub thread that dies (a panic in
//!   the host's store, say) is reported as [`FailureKind::WorkerDied`] from
//!   [`Source::Scrubber`]; a cursor that could not be read at start, or
//!   written while scrubbing (once per episode), as
//!   [`FailureKind::ScrubCursorFailed`]. Timestamps come from the
//!   scrubber's clock (by default the detector's), so they compare with the
//!   detector's own reports.
//! - **A bounded thread.** [`Scrubber::start`] runs the scrubber on the
//!   thread `selfheal-scrub` (the crate's one worker lifecycle: `thread.rs`).
//!   Its commands are answered or refused with [`Error::Stopped`], never left
//!   waiting, and [`Scrubber::stop`] waits at most
//!   [`ScrubConfig::stop_timeout`].
//!
//! # Driving it
//!
//! Tests and hosts that schedule scans themselves drive a [`Scrubber`]
//! directly: [`Scrubber::step`] with the current time (a
//! [`ManualClock`](crate::ManualClock) makes pacing exact), or
//! [`Scrubber::scan_range`] without pacing. [`Scrubber::start`] hands it to
//! its thread, which only steps it and
//! waits for the pacing deadline or a command (pause, resume, error-only
//! rescan, stop).
//!
//! # Throughput
//!
//! Unpaced, a scrub costs one read and one CRC32 per page. Over a
//! [`FileStore`](crate::FileStore) whose file is in the page cache, the
//! memory-map scan path ([`FileStore::with_mmap_scan`](crate::FileStore::with_mmap_scan))
//! is the faster one: it checksums the mapped pages without copying them,
//! and outruns a plain sequential `read` of the file with no checksums
//! (`benches/scrub.rs`). The batched `pread` path (1 MiB per read, into a
//! buffer each scanning thread keeps, so no batch allocates) needs no
//! `unsafe` mapping of a file the host may resize, and is the store's
//! default; `benches/scrub.rs` measures it against the same plain `read`.
//! No lock of the detector is taken per page, and the detector's counters
//! are updated once per batch. An unpaced scrub may use several cores with
//! [`ScrubConfig::threads`]; the pages are split among the threads and the
//! findings are the same as on one (`tests/scrub_threads.rs`).
//!
//! # Error-only mode
//!
//! With [`ScrubMode::ErrorOnly`], a pass rescans only the pages the detector
//! knows to be bad (`Suspect` and `Irreparable`) with
//! [`CorruptionDetector::recheck`], which lifts the fence of a page that now
//! verifies (it was repaired behind the detector's back, or the fault was
//! transient). [`Scrubber::rescan_bad`] runs one
//! such pass on demand in either mode. Error-only mode neither reads nor
//! writes the cursor.

mod core;
pub(crate) mod cursor;
mod pacer;
mod resume;
mod scrubber;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cursor;
mod thread;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::corruption::CorruptionDetector;
use crate::dirlock::DirLock;
use crate::error::{Error, Result};
#[cfg(doc)]
use crate::types::{FailureKind, Source};
use crate::types::{FailureSink, PageId};
use pacer::Pacer;
pub use pacer::ScrubRate;
pub use scrubber::Scrubber;

/// Largest batch accepted; bounds the scan buffer and the burst.
pub const MAX_BATCH_PAGES: u64 = 65_536;

/// The least time between two passes that had nothing to scan (1 s).
pub const EMPTY_PASS_WAIT_NS: u64 = 1_000_000_000;

/// Most threads one unpaced scan may use ([`ScrubConfig::threads`]).
pub const MAX_SCRUB_THREADS: usize = 64;

/// How long [`Scrubber::stop`] waits for the thread by default (10 s).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The component's name in errors and failures.
const COMPONENT: &str = "scrubber";

/// Which pages a pass visits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScrubMode {
    /// Every page of the store, from page 0 to the page count read at the
    /// start of the pass.
    Full,
    /// Only the pages the detector knows to be bad (`Suspect` and
    /// `Irreparable`), rechecked and unfenced if they now verify.
    ErrorOnly,
}

/// Configuration of a [`Scrubber`].
///
/// ```
/// use std::time::Duration;
/// use selfheal::ScrubConfig;
///
/// let cfg = ScrubConfig::new()
///     .bytes_per_s(32 << 20)                   // 32 MiB/s
///     .pass_interval(Duration::from_secs(3600)) // a pass an hour at most
///     .cursor_path("/tmp/scrub.cursor");
/// # let _ = cfg;
/// ```
#[must_use]
pub struct ScrubConfig {
    rate: ScrubRate,
    batch_pages: Option<u64>,
    cursor_path: Option<PathBuf>,
    persist_every: Duration,
    pass_interval: Option<Duration>,
    mode: ScrubMode,
    clock: Option<Arc<dyn Clock>>,
    failure_sink: Option<FailureSink>,
    stop_timeout: Duration,
    threads: usize,
}

impl fmt::Debug for ScrubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrubConfig")
            .field("rate", &self.rate)
            .field("batch_pages", &self.batch_pages)
            .field("cursor_path", &self.cursor_path)
            .field("persist_every", &self.persist_every)
            .field("pass_interval", &self.pass_interval)
            .field("mode", &self.mode)
            .field("failure_sink", &self.failure_sink)
            .field("stop_timeout", &self.stop_timeout)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl Default for ScrubConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ScrubConfig {
    /// Defaults: 16 MiB/s, batches of 256 pages or 1 MiB (whichever is
    /// fewer pages), no cursor file, cursor persisted every 10 s, continuous
    /// passes with no pause between them, [`ScrubMode::Full`], the detector's
    /// clock and failure bus, a stop that waits at most
    /// [`DEFAULT_STOP_TIMEOUT`], one thread.
    pub fn new() -> Self {
        ScrubConfig {
            rate: ScrubRate::BytesPerSec(16 << 20),
            batch_pages: None,
            cursor_path: None,
            persist_every: Duration::from_secs(10),
            pass_interval: Some(Duration::ZERO),
            mode: ScrubMode::Full,
            clock: None,
            failure_sink: None,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            threads: 1,
        }
    }

    /// Rate limit in pages per second (default: 16 MiB/s as a byte rate).
    /// Zero is refused by `build`.
    pub fn pages_per_s(mut self, pages: u64) -> Self {
        self.rate = ScrubRate::PagesPerSec(pages);
        self
    }

    /// Rate limit in bytes per second (default 16 MiB/s). Zero is refused by
    /// `build`.
    pub fn bytes_per_s(mut self, bytes: u64) -> Self {
        self.rate = ScrubRate::BytesPerSec(bytes);
        self
    }

    /// No rate limit: scan as fast as the store delivers.
    pub fn unlimited(mut self) -> Self {
        self.rate = ScrubRate::Unlimited;
        self
    }

    /// Pages per batch, 1 ..= [`MAX_BATCH_PAGES`] (default: 256 pages or
    /// 1 MiB, whichever is fewer). A batch is also the largest burst: with a
    /// paced rate the batch is further limited to a tenth of a second's
    /// worth of pages, so that pacing stays smooth at low rates.
    pub fn batch_pages(mut self, pages: u64) -> Self {
        self.batch_pages = Some(pages);
        self
    }

    /// Where to persist the scrub position (default: nowhere; a restart
    /// begins at page 0). The file is written crash-safely; `cursor.rs`
    /// documents its format byte by byte. The file has one owner: the
    /// scrubber holds `<file name>.lock` in the same directory (which must
    /// exist) from [`build`](Self::build) until it, or its thread, is gone,
    /// and a second scrubber on the same file is refused with
    /// [`Error::DirectoryLocked`].
    pub fn cursor_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.cursor_path = Some(path.into());
        self
    }

    /// How often the cursor is written while scanning, in clock time
    /// (default 10 s; must be positive). It is also written at the end of
    /// each pass, on pause and on stop.
    pub fn persist_every(mut self, every: Duration) -> Self {
        self.persist_every = every;
        self
    }

    /// Scan continuously, waiting `interval` between the end of one pass and
    /// the start of the next (default: continuous, zero interval). After a
    /// pass that had nothing to scan the wait is at least
    /// [`EMPTY_PASS_WAIT_NS`].
    pub fn pass_interval(mut self, interval: Duration) -> Self {
        self.pass_interval = Some(interval);
        self
    }

    /// Scan once and stop scanning (the thread then only answers commands).
    pub fn single_pass(mut self) -> Self {
        self.pass_interval = None;
        self
    }

    /// Which pages a pass visits (default [`ScrubMode::Full`]).
    pub fn mode(mut self, mode: ScrubMode) -> Self {
        self.mode = mode;
        self
    }

    /// The clock pacing and progress are measured with (default: the
    /// detector's clock). On its thread the scrubber waits for a pacing
    /// deadline at most 100 ms of real time before it reads the clock again,
    /// so a simulated clock moved by a test is noticed within that.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The failure bus the scrubber reports its own failures on (default:
    /// the detector's, [`CorruptionDetector::failure_sink`]). Corrupt pages
    /// are reported by the detector, on the detector's bus, whatever this
    /// says.
    pub fn failure_sink(mut self, sink: FailureSink) -> Self {
        self.failure_sink = Some(sink);
        self
    }

    /// How long [`Scrubber::stop`] (and dropping the scrubber) waits for
    /// the thread to finish its batch and persist its cursor (default
    /// [`DEFAULT_STOP_TIMEOUT`]; must be positive). A thread that does not
    /// stop in time (a store read that hangs) is left running detached and
    /// the stop returns [`Error::Stopped`].
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Threads an unpaced scan uses, 1 ..= [`MAX_SCRUB_THREADS`] (default
    /// 1). With more than one, [`Scrubber::scan_range`] and each step cut
    /// their pages into that many runs of whole batches and scan them at
    /// once (a step then takes 16 batches per thread), so that a scrub with
    /// no rate limit can use every core: `std::thread::available_parallelism`
    /// is a good value. A paced scrub runs on one thread (its rate, not the
    /// cores, bounds it): `build` refuses more than 1 with a rate limit.
    /// What a scan finds does not depend on the thread count.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Validates the configuration and builds a scrubber over `detector`,
    /// positioned where the cursor file says (page 0 without one).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero rate, a batch of 0 or more than
    /// [`MAX_BATCH_PAGES`] pages, a thread count of 0 or more than
    /// [`MAX_SCRUB_THREADS`] (or more than 1 with a rate limit), a zero
    /// `persist_every` or `stop_timeout`,
    /// or a cursor path without a file name; [`Error::DirectoryLocked`]
    /// when another scrubber owns the cursor file; [`Error::Io`] when its
    /// lock file cannot be opened (a missing directory). A damaged cursor
    /// file is not an error: it is reported on the failure bus and the scrub
    /// starts at page 0 (see the module docs).
    pub fn build(self, detector: Arc<CorruptionDetector>) -> Result<Scrubber> {
        let page_size = detector.store().page_size();
        if let Some(b) = self.batch_pages {
            if b == 0 || b > MAX_BATCH_PAGES {
                return Err(Error::config(
                    "batch_pages",
                    format!("is {b}; it must be between 1 and {MAX_BATCH_PAGES}"),
                ));
            }
        }
        if self.threads == 0 || self.threads > MAX_SCRUB_THREADS {
            return Err(Error::config(
                "threads",
                format!(
                    "is {}; it must be between 1 and {MAX_SCRUB_THREADS}",
                    self.threads
                ),
            ));
        }
        if self.threads > 1 && self.rate != ScrubRate::Unlimited {
            return Err(Error::config(
                "threads",
                format!(
                    "is {} with a rate limit; a paced scrub runs on one thread: give `unlimited()` or `threads(1)`",
                    self.threads
                ),
            ));
        }
        if self.persist_every.is_zero() {
            return Err(Error::config(
                "persist_every",
                "is zero; give a positive interval",
            ));
        }
        if self.stop_timeout.is_zero() {
            return Err(Error::config(
                "stop_timeout",
                "is zero; give a positive time to wait for the thread",
            ));
        }
        let cursor_owner = match &self.cursor_path {
            Some(p) => {
                let Some(name) = p.file_name() else {
                    return Err(Error::config(
                        "cursor_path",
                        format!("{} does not name a file", p.display()),
                    ));
                };
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => std::path::Path::new("."),
                };
                Some(DirLock::acquire(
                    dir,
                    &format!("{}.lock", name.to_string_lossy()),
                    "scrubber",
                    &format!(
                        "stop or drop the other scrubber on the cursor file {} first, or give this one another cursor_path",
                        p.display()
                    ),
                )?)
            }
            None => None,
        };
        let mut batch = self
            .batch_pages
            .unwrap_or_else(|| 256.min(((1usize << 20) / page_size.max(1)).max(1) as u64));
        if let Some(per_s) = self.rate.pages_per_s(page_size) {
            // A tenth of a second's worth, so that a slow rate is spread out
            // instead of arriving as one large burst every few seconds.
            batch = batch.min(((per_s / 10.0) as u64).max(1));
        }
        let clock = self.clock.unwrap_or_else(|| detector.clock().clone());
        let sink = self
            .failure_sink
            .unwrap_or_else(|| detector.failure_sink().clone());
        let now = clock.now_ns();
        let pacer = Pacer::new(self.rate, page_size, batch, now)?;
        let mut s = ScrubCore {
            detector,
            clock,
            sink,
            stop_timeout: self.stop_timeout,
            mode: self.mode,
            rate: self.rate,
            batch_pages: batch,
            threads: self.threads,
            cursor_path: self.cursor_path,
            _cursor_owner: cursor_owner,
            persist_every_ns: u64::try_from(self.persist_every.as_nanos()).unwrap_or(u64::MAX),
            pass_interval_ns: self
                .pass_interval
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            pacer,
            phase: Phase::Between { until_ns: now },
            position: 0,
            pass_total: 0,
            bad_pages: Vec::new(),
            passes: 0,
            corrupt_found: 0,
            pass_started_ns: now,
            run_pages: 0,
            paused_since: None,
            paused_ns: 0,
            last_persist_ns: now,
            persisted: None,
            cursor_failing: false,
        };
        if s.mode == ScrubMode::Full {
            s.resume_from_cursor(now);
        }
        Ok(Scrubber::new(s))
    }
}

/// What a scan of some pages found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanSummary {
    /// Pages examined.
    pub pages: u64,
    /// Pages that verified (including `transient` ones).
    pub clean: u64,
    /// Pages that failed once and verified when re-read: not corruption.
    pub transient: u64,
    /// Corrupt or unreadable pages reported now (seen for the first time).
    pub newly_corrupt: u64,
    /// Corrupt or unreadable pages already known (not reported again).
    pub known_corrupt: u64,
    /// Fenced pages that verified on a recheck and were unfenced.
    pub fences_lifted: u64,
    /// Pages that did not verify but that the host says are unallocated:
    /// skipped, not reported (see [`Verdict::Unallocated`](crate::corruption::Verdict::Unallocated)).
    pub unallocated: u64,
}

/// What one [`Scrubber::step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScrubStep {
    /// A batch was scanned.
    Scanned(ScanSummary),
    /// A pass ended; `passes_completed` now counts it.
    PassComplete {
        /// Passes completed so far (this one included).
        passes_completed: u64,
    },
    /// Nothing to do before this time (pacing, or the interval between
    /// passes): call `step` again then.
    Wait {
        /// Clock nanoseconds.
        until_ns: u64,
    },
    /// Paused: `step` does nothing until [`Scrubber::resume`].
    Paused,
    /// The single pass is complete; `step` has nothing more to do.
    Done,
}

/// What the scrubber is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScrubState {
    /// Scanning, or waiting for pacing or for the next pass.
    Running,
    /// Paused by the caller.
    Paused,
    /// A single-pass scrub has finished its pass.
    Finished,
    /// Stopped by the caller.
    Stopped,
    /// The worker thread failed (it was reported on the failure bus); see
    /// [`Scrubber::progress`] for why.
    Failed,
}

/// Where a scrub is, readable at any time.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrubProgress {
    /// What the scrubber is doing.
    pub state: ScrubState,
    /// Which pages the passes visit.
    pub mode: ScrubMode,
    /// The next page to scan in this pass (in error-only mode: the index
    /// into the list of bad pages taken at the start of the pass).
    pub position: u64,
    /// Pages of this pass done, including those done before a restart.
    pub pages_done: u64,
    /// Pages in this pass.
    pub total: u64,
    /// Passes completed (persisted with the cursor across restarts).
    pub passes_completed: u64,
    /// Corrupt or unreadable pages this scrubber reported (first seen by it)
    /// since it was built.
    pub corrupt_found: u64,
    /// Measured pages per second over this pass, excluding paused time
    /// (0 before anything was scanned).
    pub rate_pages_per_s: f64,
    /// Time left in this pass at the measured rate (`None` before a rate is
    /// known, or when not scanning).
    pub eta: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Scanning,
    Between { until_ns: u64 },
    Finished,
}

/// The scrub state machine, driven by hand or by its thread (the public
/// [`Scrubber`] holds it). See the [module docs](self) for the design.
pub(super) struct ScrubCore {
    detector: Arc<CorruptionDetector>,
    clock: Arc<dyn Clock>,
    /// Where the scrubber's own failures go.
    sink: FailureSink,
    stop_timeout: Duration,
    mode: ScrubMode,
    rate: ScrubRate,
    batch_pages: u64,
    /// Threads an unpaced scan uses.
    threads: usize,
    cursor_path: Option<PathBuf>,
    /// The cursor file's one owner: `<cursor file name>.lock` beside it,
    /// held for as long as the scrubber (or its thread) lives.
    _cursor_owner: Option<DirLock>,
    persist_every_ns: u64,
    /// `None` = single pass.
    pass_interval_ns: Option<u64>,
    pacer: Pacer,
    phase: Phase,
    /// Next page (full mode) or next index into `bad_pages` (error-only).
    position: u64,
    pass_total: u64,
    bad_pages: Vec<PageId>,
    passes: u64,
    corrupt_found: u64,
    pass_started_ns: u64,
    /// Pages scanned in this pass by this process (for the measured rate).
    run_pages: u64,
    paused_since: Option<u64>,
    paused_ns: u64,
    last_persist_ns: u64,
    /// What was last written to the cursor file.
    persisted: Option<cursor::Cursor>,
    /// A cursor write failed and was reported; cleared by one that succeeds.
    cursor_failing: bool,
}

impl fmt::Debug for ScrubCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrubCore")
            .field("mode", &self.mode)
            .field("rate", &self.rate)
            .field("batch_pages", &self.batch_pages)
            .field("threads", &self.threads)
            .field("phase", &self.phase)
            .field("position", &self.position)
            .field("pass_total", &self.pass_total)
            .field("passes", &self.passes)
            .finish_non_exhaustive()
    }
}
