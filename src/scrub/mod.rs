//! Background scrubbing: read every page of the store at a configured rate,
//! verify it through the [`CorruptionDetector`], and report each corrupt page
//! once.
//!
//! # Shape
//!
//! * [`Pacer`] is a pure token bucket: fed `now_ns` and how many pages the
//!   scrubber would like to scan, it answers "scan `n` now" or "wait until
//!   `t`". Over any window the pages it grants never exceed
//!   `rate × elapsed + burst`, and the burst is one batch.
//! * [`Scrubber`] is the synchronous core: a state machine driven by
//!   [`Scrubber::step`] with the current time. Each step scans at most one
//!   batch (default: 256 pages or 1 MiB, whichever is smaller) through
//!   [`PageStore::scan_pages`](crate::PageStore::scan_pages) and
//!   [`CorruptionDetector::check_scanned`], so the hot path is one large read
//!   and one CRC per page. Tests drive it directly with a
//!   [`ManualClock`](crate::ManualClock); [`Scrubber::scan_range`] scans
//!   without pacing.
//! * [`ScrubHandle`] owns the thread `selfheal-scrub`, which only calls
//!   `step` and waits, with `crossbeam_channel::select!`, for either the
//!   pacing deadline or a command (pause, resume, error-only rescan, stop).
//!
//! A page whose batch read fails (an `EIO` in the middle of a batch) is
//! re-read on its own with [`CorruptionDetector::check_page`]; a read error
//! that persists is recorded as a page that needs repair. A page that fails
//! verification once and verifies on the re-read (a transient fault on the
//! path) is counted as transient and never reported. Whether a corrupt page is
//! reported is the detector's decision (its suspect registry), so a page is
//! reported once however many passes see it.
//!
//! The store may grow: the page count is read at the start of each pass.
//! It may shrink ([`CorruptionDetector::resize`]), also in the middle of a
//! pass: the pass then ends where the store now ends, the position is
//! clamped to it, no error is returned and nothing is reported about the
//! pages that were dropped (the detector records nothing about a page past
//! the end, even one whose bytes were read before it was dropped).
//!
//! Pages that fail verification but that the host says are unallocated (see
//! [`free`](crate::corruption::free)) are skipped: counted in
//! [`ScanSummary::unallocated`], never reported.
//!
//! # Throughput
//!
//! Unpaced, a scrub costs one read and one CRC32 per page. Over a
//! [`FileStore`](crate::FileStore) whose file is in the page cache, the
//! memory-map scan path ([`FileStore::with_mmap_scan`](crate::FileStore::with_mmap_scan))
//! is the faster one: it checksums the mapped pages without copying them,
//! and on the reference machine it outran even a plain sequential `read` of
//! the file with no checksums (`benches/scrub.rs`), while the batched `pread`
//! path (1 MiB per read) ran at about three quarters of that baseline. Enable
//! the map for a store that is scrubbed; the `pread` path is the store's
//! default because it needs no `unsafe` mapping of a file the host may resize.
//!
//! # Error-only mode
//!
//! With [`ScrubMode::ErrorOnly`], a pass rescans only the pages the detector
//! knows to be bad (`Suspect` and `Irreparable`) with
//! [`CorruptionDetector::recheck`], which lifts the fence of a page that now
//! verifies (it was repaired behind the detector's back, or the fault was
//! transient). [`Scrubber::rescan_bad`] and [`ScrubHandle::rescan_bad`] run one
//! such pass on demand in either mode.
//!
//! # Cursor file
//!
//! With [`ScrubConfig::cursor_path`], a full-mode scrubber persists where it
//! is, so that a restarted process continues the pass instead of starting
//! over. The file is written with the crate's crash-safe replace (temporary
//! file, fsync, rename, fsync of the directory) inside the crate's frame (see
//! `fsutil`: magic `SHSC`, version 1, payload length, payload CRC32, header
//! CRC32). The payload (little-endian):
//!
//! | offset | size | field                                                   |
//! |-------:|-----:|---------------------------------------------------------|
//! | 0      | 8    | next page to scan in the current pass                   |
//! | 8      | 8    | pages in the current pass when the cursor was written   |
//! | 16     | 8    | passes completed                                        |
//!
//! The cursor is written every [`ScrubConfig::persist_every`], at the end of
//! each pass (next page 0), on pause and on stop. A crash before the rename
//! leaves the previous cursor, so at worst a restarted scrubber rescans the
//! pages since the last write; rescanning is harmless (a known corrupt page
//! is not reported again within the same process, and a restarted process
//! starts with an empty registry, so reporting it once more is correct). A
//! cursor file that is missing starts at page 0; one that is truncated,
//! garbled, zeroed or of a newer version is ignored with a `tracing` warning
//! and the scrub starts at page 0. A cursor past the end of the store (the
//! store shrank since it was written) is clamped to the end: the interrupted
//! pass is over, and the next one starts at page 0.
//! A cursor only ever decides where a pass starts: a wrong one can make one
//! pass skip or repeat pages, never make a bad page verify.
//!
//! Error-only mode neither reads nor writes the cursor.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use parking_lot::{Condvar, Mutex};

use crate::corruption::{CorruptionDetector, Observer, PageState, Verdict};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::types::PageId;

const NS_PER_S: u128 = 1_000_000_000;
const CURSOR_MAGIC: [u8; 4] = *b"SHSC";
const CURSOR_VERSION: u32 = 1;
const CURSOR_PAYLOAD_LEN: usize = 24;
/// Largest batch accepted; bounds the scan buffer and the burst.
pub const MAX_BATCH_PAGES: u64 = 65_536;
/// The longest the scrub thread waits before re-reading its clock while it
/// waits for a pacing deadline. A replaced clock (simulated time) is noticed
/// within this long; with the system clock the deadline itself is the wait.
const MAX_WAIT: Duration = Duration::from_millis(100);
const COMMAND_CAPACITY: usize = 16;
const COMPONENT: &str = "scrubber";

// ---------------------------------------------------------------------------
// Pacing
// ---------------------------------------------------------------------------

/// How fast a scrub may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrubRate {
    /// At most this many pages per second.
    PagesPerSec(u64),
    /// At most this many bytes per second (pages count `page_size` bytes each).
    BytesPerSec(u64),
    /// As fast as the store delivers.
    Unlimited,
}

impl ScrubRate {
    /// The rate in pages per second for a store of `page_size`-byte pages
    /// (`None` when unlimited). May be fractional for a byte rate below one
    /// page per second.
    #[must_use]
    pub fn pages_per_s(self, page_size: usize) -> Option<f64> {
        match self {
            ScrubRate::PagesPerSec(r) => Some(r as f64),
            ScrubRate::BytesPerSec(r) => Some(r as f64 / page_size.max(1) as f64),
            ScrubRate::Unlimited => None,
        }
    }
}

/// What [`Pacer::poll`] allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Scan this many pages now (at least one, at most the number asked for).
    Go(u64),
    /// Nothing may be scanned before this time (clock nanoseconds).
    WaitUntil(u64),
}

/// A token bucket over pages, in integer arithmetic.
///
/// Tokens are kept in unit-nanoseconds (a unit is a page or a byte, as the
/// [`ScrubRate`] says), so refilling is `elapsed_ns × rate` with no rounding,
/// in `u128`, which cannot overflow for any `u64` rate and time. The bucket
/// holds at most `burst_pages` pages' worth and starts full.
///
/// [`poll`](Self::poll) grants only when `min(want, burst_pages)` pages are
/// available, so the scrubber scans in whole batches instead of trickling one
/// page at a time, and otherwise returns the exact time at which they will be.
///
/// ```
/// use selfheal::{Pace, Pacer, ScrubRate};
///
/// // 100 pages/s, bursts of 10 pages.
/// let mut p = Pacer::new(ScrubRate::PagesPerSec(100), 4096, 10, 0).unwrap();
/// assert_eq!(p.poll(0, 10), Pace::Go(10));            // the bucket starts full
/// assert_eq!(p.poll(0, 10), Pace::WaitUntil(100_000_000)); // 10 pages take 100 ms
/// assert_eq!(p.poll(100_000_000, 10), Pace::Go(10));
/// ```
#[derive(Clone, Debug)]
pub struct Pacer {
    /// Units per second; `None` = unlimited.
    rate: Option<u64>,
    /// Units per page.
    unit_cost: u64,
    burst_pages: u64,
    /// Unit-nanoseconds available.
    tokens: u128,
    last_ns: u64,
}

impl Pacer {
    /// A full bucket at `now_ns`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero rate, a zero page size or a zero
    /// burst.
    pub fn new(rate: ScrubRate, page_size: usize, burst_pages: u64, now_ns: u64) -> Result<Self> {
        if page_size == 0 {
            return Err(Error::config("page_size", "is 0; it must be at least 1"));
        }
        if burst_pages == 0 {
            return Err(Error::config("burst_pages", "is 0; it must be at least 1"));
        }
        let (rate, unit_cost) = match rate {
            ScrubRate::PagesPerSec(0) | ScrubRate::BytesPerSec(0) => {
                return Err(Error::config(
                    "rate",
                    "is 0; give a positive pages/s or bytes/s rate, or `unlimited()`",
                ))
            }
            ScrubRate::PagesPerSec(r) => (Some(r), 1),
            ScrubRate::BytesPerSec(r) => (Some(r), page_size as u64),
            ScrubRate::Unlimited => (None, 1),
        };
        let mut p = Pacer {
            rate,
            unit_cost,
            burst_pages,
            tokens: 0,
            last_ns: now_ns,
        };
        p.tokens = p.capacity();
        Ok(p)
    }

    fn per_page(&self) -> u128 {
        u128::from(self.unit_cost) * NS_PER_S
    }

    fn capacity(&self) -> u128 {
        self.per_page().saturating_mul(u128::from(self.burst_pages))
    }

    /// The largest number of pages granted at once.
    #[must_use]
    pub fn burst_pages(&self) -> u64 {
        self.burst_pages
    }

    fn refill(&mut self, now_ns: u64) {
        let Some(rate) = self.rate else { return };
        // A clock that went backwards (it must not) adds nothing and does not
        // move the reference point back.
        if now_ns > self.last_ns {
            let earned = u128::from(now_ns - self.last_ns) * u128::from(rate);
            self.tokens = self.tokens.saturating_add(earned).min(self.capacity());
            self.last_ns = now_ns;
        }
    }

    /// Asks to scan up to `want_pages` pages at `now_ns`.
    ///
    /// Returns [`Pace::Go`] with how many may be scanned now (the tokens are
    /// taken), or [`Pace::WaitUntil`] with the earliest time at which
    /// `min(want_pages, burst_pages)` pages will be available; polling at that
    /// time grants them. `want_pages == 0` grants `Go(0)`.
    pub fn poll(&mut self, now_ns: u64, want_pages: u64) -> Pace {
        let Some(rate) = self.rate else {
            return Pace::Go(want_pages);
        };
        if want_pages == 0 {
            return Pace::Go(0);
        }
        self.refill(now_ns);
        let per_page = self.per_page();
        let need = want_pages.min(self.burst_pages);
        let available = self.tokens / per_page;
        if available >= u128::from(need) {
            let n = u64::try_from(available.min(u128::from(want_pages))).unwrap_or(want_pages);
            self.tokens -= u128::from(n) * per_page;
            return Pace::Go(n);
        }
        let deficit = u128::from(need) * per_page - self.tokens;
        let wait_ns = deficit.div_ceil(u128::from(rate));
        // The bucket was refilled up to `now_ns` or later; wait from there.
        let from = self.last_ns.max(now_ns);
        Pace::WaitUntil(from.saturating_add(u64::try_from(wait_ns).unwrap_or(u64::MAX)))
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// Which pages a pass visits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
            .finish_non_exhaustive()
    }
}

impl Default for ScrubConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The least time between two passes that had nothing to scan (1 s).
pub const EMPTY_PASS_WAIT_NS: u64 = 1_000_000_000;

impl ScrubConfig {
    /// Defaults: 16 MiB/s, batches of 256 pages or 1 MiB (whichever is
    /// fewer pages), no cursor file, cursor persisted every 10 s, continuous
    /// passes with no pause between them, [`ScrubMode::Full`], the detector's
    /// clock.
    pub fn new() -> Self {
        ScrubConfig {
            rate: ScrubRate::BytesPerSec(16 << 20),
            batch_pages: None,
            cursor_path: None,
            persist_every: Duration::from_secs(10),
            pass_interval: Some(Duration::ZERO),
            mode: ScrubMode::Full,
            clock: None,
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
    /// begins at page 0). See the module docs for the format.
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

    /// Validates the configuration and builds a scrubber over `detector`,
    /// positioned where the cursor file says (page 0 without one).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero rate, a batch of 0 or more than
    /// [`MAX_BATCH_PAGES`] pages, a zero `persist_every`, or a cursor path
    /// without a file name. A damaged cursor file is not an error (see the
    /// module docs).
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
        if self.persist_every.is_zero() {
            return Err(Error::config(
                "persist_every",
                "is zero; give a positive interval",
            ));
        }
        if let Some(p) = &self.cursor_path {
            if p.file_name().is_none() {
                return Err(Error::config(
                    "cursor_path",
                    format!("{} does not name a file", p.display()),
                ));
            }
        }
        let mut batch = self
            .batch_pages
            .unwrap_or_else(|| 256.min(((1usize << 20) / page_size.max(1)).max(1) as u64));
        if let Some(per_s) = self.rate.pages_per_s(page_size) {
            // A tenth of a second's worth, so that a slow rate is spread out
            // instead of arriving as one large burst every few seconds.
            batch = batch.min(((per_s / 10.0) as u64).max(1));
        }
        let clock = self.clock.unwrap_or_else(|| detector.clock().clone());
        let now = clock.now_ns();
        let pacer = Pacer::new(self.rate, page_size, batch, now)?;
        let mut s = Scrubber {
            detector,
            clock,
            mode: self.mode,
            rate: self.rate,
            batch_pages: batch,
            cursor_path: self.cursor_path,
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
        };
        if s.mode == ScrubMode::Full {
            s.resume_from_cursor(now);
        }
        Ok(s)
    }

    /// [`build`](Self::build) and [`Scrubber::spawn`] in one call.
    ///
    /// # Errors
    /// As `build`; [`Error::Io`] when the thread cannot be spawned.
    pub fn start(self, detector: Arc<CorruptionDetector>) -> Result<ScrubHandle> {
        self.build(detector)?.spawn()
    }
}

// ---------------------------------------------------------------------------
// The synchronous core
// ---------------------------------------------------------------------------

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
    /// skipped, not reported (see [`Verdict::Unallocated`]).
    pub unallocated: u64,
}

impl ScanSummary {
    fn add(&mut self, o: ScanSummary) {
        self.pages += o.pages;
        self.clean += o.clean;
        self.transient += o.transient;
        self.newly_corrupt += o.newly_corrupt;
        self.known_corrupt += o.known_corrupt;
        self.fences_lifted += o.fences_lifted;
        self.unallocated += o.unallocated;
    }

    fn count(&mut self, v: &Verdict) {
        self.pages += 1;
        match v {
            Verdict::Clean => self.clean += 1,
            Verdict::Transient => {
                self.clean += 1;
                self.transient += 1;
            }
            Verdict::Corrupt { reported: true, .. } => self.newly_corrupt += 1,
            Verdict::Corrupt {
                reported: false, ..
            } => self.known_corrupt += 1,
            Verdict::Unallocated => self.unallocated += 1,
        }
    }
}

/// What one [`Scrubber::step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
pub enum ScrubState {
    /// Scanning, or waiting for pacing or for the next pass.
    Running,
    /// Paused by the caller.
    Paused,
    /// A single-pass scrub has finished its pass.
    Finished,
    /// Stopped by the caller.
    Stopped,
    /// The worker thread failed; see [`ScrubHandle::progress`] for why.
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

/// The scrub state machine. See the [module docs](self) for the design.
///
/// Drive it yourself with [`step`](Self::step) (tests do, with a
/// [`ManualClock`](crate::ManualClock)), scan without pacing with
/// [`scan_range`](Self::scan_range), or hand it to its own thread with
/// [`spawn`](Self::spawn).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use selfheal::{ChecksumPlacement, DetectorConfig, MemStore, PageId, PageStore, ScrubConfig, ScrubState};
///
/// let raw = Arc::new(MemStore::new(4096, 64)?);
/// let detector = Arc::new(DetectorConfig::new(ChecksumPlacement::Trailer).build(raw.clone())?);
/// for p in 0..64 {
///     detector.write_sealed(PageId(p), &mut vec![p as u8; 4096])?;
/// }
/// raw.write_page(PageId(9), &[0xFF; 4096])?;      // damage behind the detector's back
///
/// // Synchronously, without pacing:
/// let mut scrubber = ScrubConfig::new().unlimited().build(detector.clone())?;
/// let found = scrubber.scan_range(PageId(0), 64)?;
/// assert_eq!(found.newly_corrupt, 1);
/// assert!(detector.failures().try_recv().unwrap().evidence.contains("page 9"));
///
/// // In the background, 10 000 pages/s, one pass:
/// let mut handle = ScrubConfig::new().pages_per_s(10_000).single_pass().start(detector.clone())?;
/// let done = handle.wait_for_passes(1, Duration::from_secs(10))?.expect("a pass in 10 s");
/// assert_eq!(done.state, ScrubState::Finished);
/// assert_eq!(done.corrupt_found, 0);                 // page 9 was already reported
/// handle.stop()?;
/// # Ok::<(), selfheal::Error>(())
/// ```
pub struct Scrubber {
    detector: Arc<CorruptionDetector>,
    clock: Arc<dyn Clock>,
    mode: ScrubMode,
    rate: ScrubRate,
    batch_pages: u64,
    cursor_path: Option<PathBuf>,
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
    /// The (position, total, passes) last written to the cursor file.
    persisted: Option<(u64, u64, u64)>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("mode", &self.mode)
            .field("rate", &self.rate)
            .field("batch_pages", &self.batch_pages)
            .field("phase", &self.phase)
            .field("position", &self.position)
            .field("pass_total", &self.pass_total)
            .field("passes", &self.passes)
            .finish_non_exhaustive()
    }
}

/// Encodes a cursor file (frame included).
fn encode_cursor(next: u64, total: u64, passes: u64) -> Vec<u8> {
    let mut payload = Vec::with_capacity(CURSOR_PAYLOAD_LEN);
    payload.extend_from_slice(&next.to_le_bytes());
    payload.extend_from_slice(&total.to_le_bytes());
    payload.extend_from_slice(&passes.to_le_bytes());
    fsutil::encode_framed(CURSOR_MAGIC, CURSOR_VERSION, &payload)
}

/// Decodes a cursor file into (next page, pages in pass, passes completed).
fn decode_cursor(path: &Path, bytes: &[u8]) -> Result<(u64, u64, u64)> {
    let (_, payload) = fsutil::decode_framed(path, bytes, CURSOR_MAGIC, CURSOR_VERSION)?;
    if payload.len() != CURSOR_PAYLOAD_LEN {
        return Err(Error::corrupt_file(
            path,
            fsutil::FRAME_HEADER_LEN as u64,
            format!(
                "cursor payload is {} bytes, expected {CURSOR_PAYLOAD_LEN}",
                payload.len()
            ),
        ));
    }
    let word = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
    let (next, total, passes) = (word(0), word(8), word(16));
    if next > total {
        return Err(Error::corrupt_file(
            path,
            fsutil::FRAME_HEADER_LEN as u64,
            format!("next page {next} is past the pass's {total} pages"),
        ));
    }
    Ok((next, total, passes))
}

impl Scrubber {
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

    fn resume_from_cursor(&mut self, now: u64) {
        let Some(path) = self.cursor_path.clone() else {
            return;
        };
        let loaded = match fsutil::read_optional(&path) {
            Ok(None) => return,
            Ok(Some(bytes)) => decode_cursor(&path, &bytes),
            Err(e) => Err(e),
        };
        let page_count = self.detector.store().page_count();
        match loaded {
            Ok((next, _, passes)) => {
                // The store may have shrunk since the cursor was written: the
                // interrupted pass then ends where the store ends now.
                let next = next.min(page_count);
                self.passes = passes;
                self.persisted = Some((next, page_count, passes));
                if next > 0 {
                    // Continue the interrupted pass over the store as it is now.
                    self.phase = Phase::Scanning;
                    self.position = next;
                    self.pass_total = page_count;
                    self.pass_started_ns = now;
                    tracing::info!(next, page_count, "scrub resumes from its cursor");
                }
            }
            Err(error) => tracing::warn!(
                path = %path.display(),
                %error,
                "scrub cursor unreadable; starting at page 0"
            ),
        }
    }

    fn begin_pass(&mut self, now: u64) {
        self.position = 0;
        match self.mode {
            ScrubMode::Full => {
                self.bad_pages.clear();
                self.pass_total = self.detector.store().page_count();
            }
            ScrubMode::ErrorOnly => {
                self.bad_pages = self.known_bad();
                self.pass_total = self.bad_pages.len() as u64;
            }
        }
        self.phase = Phase::Scanning;
        self.pass_started_ns = now;
        self.run_pages = 0;
        self.paused_ns = 0;
    }

    fn known_bad(&self) -> Vec<PageId> {
        let mut v = self.detector.pages_in(PageState::Suspect);
        v.extend(self.detector.pages_in(PageState::Irreparable));
        v.sort_unstable();
        v
    }

    /// Does the next piece of work due at `now_ns`: at most one batch, or
    /// the end of a pass, or nothing (and says until when).
    ///
    /// # Errors
    /// Only a store error that is not about a page (a page that cannot be
    /// read is recorded, not returned). Failing to persist the cursor is
    /// logged, not returned.
    pub fn step(&mut self, now_ns: u64) -> Result<ScrubStep> {
        if self.paused_since.is_some() {
            return Ok(ScrubStep::Paused);
        }
        match self.phase {
            Phase::Finished => return Ok(ScrubStep::Done),
            Phase::Between { until_ns } if now_ns < until_ns => {
                return Ok(ScrubStep::Wait { until_ns });
            }
            Phase::Between { .. } => self.begin_pass(now_ns),
            Phase::Scanning => {}
        }
        if self.position >= self.pass_total {
            return Ok(self.end_pass(now_ns));
        }
        let want = self.batch_pages.min(self.pass_total - self.position);
        let n = match self.pacer.poll(now_ns, want) {
            Pace::WaitUntil(until_ns) => return Ok(ScrubStep::Wait { until_ns }),
            Pace::Go(n) => n,
        };
        let summary = match self.mode {
            ScrubMode::Full => {
                let s = match self.scan_range(PageId(self.position), n) {
                    // The store ends before the position: nothing left to scan.
                    Err(Error::PageOutOfRange { .. }) => ScanSummary::default(),
                    other => other?,
                };
                if s.pages < n {
                    // The store shrank under the pass: end it where the store ends.
                    self.pass_total = self.position + s.pages;
                }
                s
            }
            ScrubMode::ErrorOnly => {
                let from = self.position as usize;
                let pages: Vec<PageId> = self.bad_pages[from..from + n as usize].to_vec();
                self.recheck_pages(&pages)
            }
        };
        self.position += summary.pages;
        self.run_pages += summary.pages;
        if self.mode == ScrubMode::Full
            && now_ns.saturating_sub(self.last_persist_ns) >= self.persist_every_ns
        {
            self.persist_logged(now_ns);
        }
        Ok(ScrubStep::Scanned(summary))
    }

    fn end_pass(&mut self, now: u64) -> ScrubStep {
        self.passes += 1;
        // A pass with nothing to scan (an empty store, or error-only mode with
        // no known-bad pages) would otherwise start again at once, forever.
        let floor = if self.pass_total == 0 {
            EMPTY_PASS_WAIT_NS
        } else {
            0
        };
        self.position = 0;
        self.pass_total = 0;
        self.bad_pages = Vec::new();
        self.phase = match self.pass_interval_ns {
            None => Phase::Finished,
            Some(i) => Phase::Between {
                until_ns: now.saturating_add(i.max(floor)),
            },
        };
        if self.mode == ScrubMode::Full {
            self.persist_logged(now);
        }
        tracing::debug!(passes = self.passes, "scrub pass complete");
        ScrubStep::PassComplete {
            passes_completed: self.passes,
        }
    }

    fn persist_logged(&mut self, now: u64) {
        if let Err(error) = self.persist_cursor_at(now) {
            tracing::warn!(%error, "could not persist the scrub cursor; will retry");
        }
    }

    fn persist_cursor_at(&mut self, now: u64) -> Result<()> {
        self.last_persist_ns = now;
        if self.mode != ScrubMode::Full {
            return Ok(());
        }
        let Some(path) = &self.cursor_path else {
            return Ok(());
        };
        let state = (self.position, self.pass_total, self.passes);
        if self.persisted == Some(state) {
            return Ok(());
        }
        fsutil::atomic_write(path, &encode_cursor(state.0, state.1, state.2))?;
        self.persisted = Some(state);
        Ok(())
    }

    /// Writes the cursor file now (when one is configured, in full mode).
    ///
    /// # Errors
    /// [`Error::Io`] naming the step of the crash-safe write that failed; the
    /// previous cursor file is then intact.
    pub fn persist_cursor(&mut self) -> Result<()> {
        let now = self.clock.now_ns();
        self.persist_cursor_at(now)
    }

    /// Scans `count` pages from `first` now, without pacing, and returns what
    /// it found. Corrupt pages are recorded and reported by the detector.
    /// This is what each step does with its batch; it is public for hosts
    /// that schedule scans themselves (and for benchmarks).
    ///
    /// Fewer than `count` pages are examined only when the store ends first
    /// (`pages` in the summary says how many).
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] when `first` is past the end of the store.
    pub fn scan_range(&mut self, first: PageId, count: u64) -> Result<ScanSummary> {
        let page_count = self.detector.store().page_count();
        if count > 0 && first.0 >= page_count {
            return Err(Error::PageOutOfRange {
                page: first,
                page_count,
            });
        }
        let end = first.0.saturating_add(count).min(page_count);
        let mut total = ScanSummary::default();
        let mut next = first.0;
        while next < end {
            let chunk = (end - next).min(self.batch_pages);
            let (s, reached) = self.scan_batch(next, chunk);
            total.add(s);
            if reached < next + chunk {
                // The store ended early (it shrank).
                break;
            }
            next = reached;
        }
        self.corrupt_found += total.newly_corrupt;
        Ok(total)
    }

    /// Scans `first .. first + count` and returns the summary and the first
    /// page not examined.
    fn scan_batch(&self, first: u64, count: u64) -> (ScanSummary, u64) {
        let det = &self.detector;
        let mut s = ScanSummary::default();
        let mut next = first;
        let end = first + count;
        while next < end {
            let res = det
                .store()
                .scan_pages(PageId(next), end - next, &mut |page, bytes| {
                    let v = det.check_scanned(page, bytes, Observer::Scrub)?;
                    s.count(&v);
                    next = page.0 + 1;
                    Ok(())
                });
            match res {
                Ok(()) => break,
                Err(error) => {
                    // The batch failed at or after `next` (a read error, or
                    // the store shrank). Find the page it was about by
                    // reading page by page; an unreadable page is recorded by
                    // the detector like a corrupt one.
                    tracing::debug!(%error, first = next, "scrub batch read failed; checking its pages one by one");
                    let retry_end = end.min(next.saturating_add(self.batch_pages));
                    while next < retry_end {
                        match det.check_page(PageId(next), Observer::Scrub) {
                            Ok(v) => s.count(&v),
                            Err(Error::PageOutOfRange { .. }) => return (s, next),
                            Err(e) => {
                                tracing::warn!(error = %e, page = next, "scrub could not check a page");
                                return (s, next);
                            }
                        }
                        next += 1;
                    }
                }
            }
        }
        (s, next)
    }

    fn recheck_pages(&mut self, pages: &[PageId]) -> ScanSummary {
        let mut s = ScanSummary::default();
        for &p in pages {
            s.pages += 1;
            if !self
                .detector
                .page_state(p)
                .is_some_and(PageState::is_fenced)
            {
                // Rewritten or repaired since the list was taken: nothing to lift.
                s.clean += 1;
                continue;
            }
            match self.detector.recheck(p) {
                Ok(Verdict::Clean) => {
                    s.clean += 1;
                    if self.detector.page_state(p) == Some(PageState::Repaired) {
                        s.fences_lifted += 1;
                    }
                }
                Ok(Verdict::Unallocated) => s.unallocated += 1,
                Ok(_) => s.known_corrupt += 1,
                Err(error) => {
                    tracing::debug!(%error, page = %p, "recheck read failed; page stays fenced");
                    s.known_corrupt += 1;
                }
            }
        }
        s
    }

    /// Rechecks every page the detector knows to be bad (`Suspect` or
    /// `Irreparable`) now, without pacing, and lifts the fence of those that
    /// verify. Does not move the full-scan position.
    pub fn rescan_bad(&mut self) -> ScanSummary {
        let pages = self.known_bad();
        self.recheck_pages(&pages)
    }

    /// Pauses at `now_ns`: `step` does nothing until [`resume`](Self::resume),
    /// and paused time does not count in the measured rate. The cursor is
    /// persisted (failures are logged).
    pub fn pause(&mut self, now_ns: u64) {
        if self.paused_since.is_none() {
            self.paused_since = Some(now_ns);
            self.persist_logged(now_ns);
        }
    }

    /// Resumes after [`pause`](Self::pause).
    pub fn resume(&mut self, now_ns: u64) {
        if let Some(since) = self.paused_since.take() {
            self.paused_ns += now_ns.saturating_sub(since);
        }
    }

    /// Whether it is paused.
    #[must_use]
    pub fn is_paused(&self) -> bool {
        self.paused_since.is_some()
    }

    /// Where the scrub is at `now_ns`.
    #[must_use]
    pub fn progress(&self, now_ns: u64) -> ScrubProgress {
        let state = if self.paused_since.is_some() {
            ScrubState::Paused
        } else if self.phase == Phase::Finished {
            ScrubState::Finished
        } else {
            ScrubState::Running
        };
        let paused_now = self
            .paused_since
            .map_or(0, |since| now_ns.saturating_sub(since));
        let active_ns = now_ns
            .saturating_sub(self.pass_started_ns)
            .saturating_sub(self.paused_ns + paused_now);
        let rate = if self.run_pages == 0 || active_ns == 0 || self.phase != Phase::Scanning {
            0.0
        } else {
            self.run_pages as f64 * 1e9 / active_ns as f64
        };
        let remaining = self.pass_total.saturating_sub(self.position);
        let eta = (rate > 0.0)
            .then(|| Duration::try_from_secs_f64(remaining as f64 / rate).ok())
            .flatten();
        ScrubProgress {
            state,
            mode: self.mode,
            position: self.position,
            pages_done: self.position,
            total: self.pass_total,
            passes_completed: self.passes,
            corrupt_found: self.corrupt_found,
            rate_pages_per_s: rate,
            eta,
        }
    }

    /// Moves the scrubber to its own thread, `selfheal-scrub`, and returns
    /// the handle that controls it.
    ///
    /// # Errors
    /// [`Error::Io`] when the thread cannot be spawned.
    pub fn spawn(self) -> Result<ScrubHandle> {
        let (tx, rx) = crossbeam_channel::bounded(COMMAND_CAPACITY);
        let now = self.clock.now_ns();
        let shared = Arc::new(Shared {
            status: Mutex::new(Status {
                progress: self.progress(now),
                failure: None,
            }),
            changed: Condvar::new(),
        });
        let worker_shared = shared.clone();
        // Never sent on: dropped when the worker ends (however it ends), which
        // wakes a caller waiting for a reply that will not come.
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("selfheal-scrub".into())
            .spawn(move || {
                let _done = done_tx;
                run_worker(self, &rx, &worker_shared);
            })
            .map_err(|e| Error::io("spawning the selfheal-scrub thread", e))?;
        Ok(ScrubHandle {
            tx,
            done: done_rx,
            shared,
            thread: Some(thread),
        })
    }
}

// ---------------------------------------------------------------------------
// The thread
// ---------------------------------------------------------------------------

enum Command {
    Pause(Sender<()>),
    Resume(Sender<()>),
    RescanBad(Sender<ScanSummary>),
    Stop(Sender<Result<()>>),
}

struct Status {
    progress: ScrubProgress,
    failure: Option<String>,
}

struct Shared {
    status: Mutex<Status>,
    changed: Condvar,
}

impl Shared {
    fn publish(&self, progress: ScrubProgress) {
        self.status.lock().progress = progress;
        self.changed.notify_all();
    }

    fn fail(&self, reason: String) {
        tracing::error!(%reason, "the scrub thread failed");
        let mut st = self.status.lock();
        st.progress.state = ScrubState::Failed;
        st.failure = Some(reason);
        drop(st);
        self.changed.notify_all();
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

fn run_worker(scrubber: Scrubber, rx: &Receiver<Command>, shared: &Shared) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        worker_loop(scrubber, rx, shared)
    }));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => shared.fail(format!("the scrub thread stopped on an error: {e}")),
        Err(payload) => shared.fail(format!(
            "the scrub thread panicked: {}",
            panic_message(payload.as_ref())
        )),
    }
}

fn worker_loop(mut s: Scrubber, rx: &Receiver<Command>, shared: &Shared) -> Result<()> {
    let clock = s.clock.clone();
    loop {
        let now = clock.now_ns();
        let step = s.step(now)?;
        shared.publish(s.progress(now));
        let cmd = match step {
            ScrubStep::Scanned(_) | ScrubStep::PassComplete { .. } => match rx.try_recv() {
                Ok(c) => Some(c),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return Ok(()),
            },
            ScrubStep::Wait { until_ns } => {
                let wait = Duration::from_nanos(until_ns.saturating_sub(now)).min(MAX_WAIT);
                crossbeam_channel::select! {
                    recv(rx) -> c => match c {
                        Ok(c) => Some(c),
                        Err(_) => return Ok(()),
                    },
                    recv(crossbeam_channel::after(wait)) -> _ => None,
                }
            }
            ScrubStep::Paused | ScrubStep::Done => match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => return Ok(()),
            },
        };
        let Some(cmd) = cmd else { continue };
        let now = clock.now_ns();
        match cmd {
            Command::Pause(reply) => {
                s.pause(now);
                shared.publish(s.progress(now));
                let _ = reply.send(());
            }
            Command::Resume(reply) => {
                s.resume(now);
                shared.publish(s.progress(now));
                let _ = reply.send(());
            }
            Command::RescanBad(reply) => {
                let summary = s.rescan_bad();
                let _ = reply.send(summary);
            }
            Command::Stop(reply) => {
                let persisted = s.persist_cursor_at(now);
                let mut p = s.progress(now);
                p.state = ScrubState::Stopped;
                shared.publish(p);
                let _ = reply.send(persisted);
                return Ok(());
            }
        }
    }
}

/// Controls a scrubber running on its thread (`selfheal-scrub`).
///
/// Dropping the handle stops the thread and joins it (persisting the cursor,
/// ignoring errors); call [`stop`](Self::stop) to see them. See [`Scrubber`]
/// for an example.
pub struct ScrubHandle {
    tx: Sender<Command>,
    /// Disconnected when the worker has ended.
    done: Receiver<()>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for ScrubHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrubHandle")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl ScrubHandle {
    fn failed(&self) -> Option<Error> {
        let st = self.shared.status.lock();
        st.failure.as_ref().map(|reason| Error::Stopped {
            component: COMPONENT,
            reason: reason.clone(),
        })
    }

    fn gone(&self) -> Error {
        self.failed().unwrap_or_else(|| Error::Stopped {
            component: COMPONENT,
            reason: "it was stopped".into(),
        })
    }

    fn request<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        if self.thread.is_none() {
            return Err(self.gone());
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.tx.send(make(reply)).map_err(|_| self.gone())?;
        self.await_reply(&answer).ok_or_else(|| self.gone())
    }

    /// Waits for the worker's reply, or for the worker to end without one (a
    /// command can be left in the channel by a worker that failed just after
    /// it was sent).
    fn await_reply<T>(&self, answer: &Receiver<T>) -> Option<T> {
        crossbeam_channel::select! {
            recv(answer) -> r => r.ok(),
            // The worker replies before it ends, so a reply is never missed.
            recv(self.done) -> _ => answer.try_recv().ok(),
        }
    }

    /// What the scrubber is doing (never fails; `Failed` after a worker failure).
    #[must_use]
    pub fn state(&self) -> ScrubState {
        self.shared.status.lock().progress.state
    }

    /// Where the scrub is.
    ///
    /// # Errors
    /// [`Error::Stopped`] with the reason when the worker thread failed.
    pub fn progress(&self) -> Result<ScrubProgress> {
        let st = self.shared.status.lock();
        match &st.failure {
            Some(reason) => Err(Error::Stopped {
                component: COMPONENT,
                reason: reason.clone(),
            }),
            None => Ok(st.progress.clone()),
        }
    }

    /// Pauses scanning; returns once the thread has paused (and persisted
    /// its cursor).
    ///
    /// # Errors
    /// [`Error::Stopped`] when the scrubber was stopped or its thread failed.
    pub fn pause(&self) -> Result<()> {
        self.request(Command::Pause)
    }

    /// Resumes after [`pause`](Self::pause).
    ///
    /// # Errors
    /// [`Error::Stopped`] when the scrubber was stopped or its thread failed.
    pub fn resume(&self) -> Result<()> {
        self.request(Command::Resume)
    }

    /// Runs an error-only pass on the scrub thread now (see
    /// [`Scrubber::rescan_bad`]) and returns what it found.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the scrubber was stopped or its thread failed.
    pub fn rescan_bad(&self) -> Result<ScanSummary> {
        self.request(Command::RescanBad)
    }

    /// Blocks until at least `passes` passes are complete or `timeout` has
    /// passed; returns the progress then, or `None` on timeout (or at once
    /// when a single-pass scrub finished with fewer passes).
    ///
    /// # Errors
    /// [`Error::Stopped`] when the worker failed or was stopped before the
    /// passes were complete.
    pub fn wait_for_passes(&self, passes: u64, timeout: Duration) -> Result<Option<ScrubProgress>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut st = self.shared.status.lock();
        loop {
            if let Some(reason) = &st.failure {
                return Err(Error::Stopped {
                    component: COMPONENT,
                    reason: reason.clone(),
                });
            }
            if st.progress.passes_completed >= passes {
                return Ok(Some(st.progress.clone()));
            }
            if st.progress.state == ScrubState::Finished {
                // A single pass is done and no other will follow.
                return Ok(None);
            }
            if st.progress.state == ScrubState::Stopped {
                return Err(Error::Stopped {
                    component: COMPONENT,
                    reason: "it was stopped".into(),
                });
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

    /// Stops the thread: persists the cursor, then joins. Calling it again
    /// does nothing.
    ///
    /// # Errors
    /// The cursor write's [`Error::Io`]; [`Error::Stopped`] with the reason
    /// when the worker had failed.
    pub fn stop(&mut self) -> Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let (reply, answer) = crossbeam_channel::bounded(1);
        let persisted = match self.tx.send(Command::Stop(reply)) {
            Ok(()) => self.await_reply(&answer),
            Err(_) => None,
        };
        // The worker catches its own panics, so a join error is not expected;
        // report one as a failure all the same.
        if thread.join().is_err() {
            self.shared
                .fail("the scrub thread panicked outside its loop".into());
        }
        if let Some(e) = self.failed() {
            return Err(e);
        }
        persisted.unwrap_or(Ok(()))
    }
}

impl Drop for ScrubHandle {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::warn!(%error, "scrubber stopped with an error on drop");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::ChecksumPlacement;
    use crate::clock::ManualClock;
    use crate::corruption::DetectorConfig;
    use crate::host::PageStore;
    use crate::store::MemStore;
    use crate::testing::{Damage, FaultyStore, ReadFault};
    use proptest::prelude::*;

    const PS: usize = 256;

    fn setup(pages: u64) -> (Arc<FaultyStore>, Arc<CorruptionDetector>, ManualClock) {
        let clock = ManualClock::new();
        let raw = Arc::new(FaultyStore::new(Arc::new(
            MemStore::new(PS, pages).unwrap(),
        )));
        let det = Arc::new(
            DetectorConfig::new(ChecksumPlacement::Trailer)
                .clock(Arc::new(clock.clone()))
                .build(raw.clone())
                .unwrap(),
        );
        for p in 0..pages {
            det.write_sealed(PageId(p), &mut vec![p as u8; PS]).unwrap();
        }
        (raw, det, clock)
    }

    /// Drives `s` with simulated time until `step` reports a completed pass
    /// (or `Done`), jumping the clock to each deadline. Returns the number of
    /// steps.
    fn run_until_pass(s: &mut Scrubber, clock: &ManualClock) -> u64 {
        for i in 0..1_000_000 {
            match s.step(clock.now_ns()).unwrap() {
                ScrubStep::PassComplete { .. } | ScrubStep::Done => return i,
                ScrubStep::Wait { until_ns } => clock.set_ns(until_ns),
                ScrubStep::Scanned(_) => {}
                ScrubStep::Paused => panic!("paused"),
            }
        }
        panic!("no pass completed");
    }

    #[test]
    fn pacing_limits_pages_in_simulated_time() {
        let (_raw, det, clock) = setup(1000);
        let mut s = ScrubConfig::new()
            .pages_per_s(100)
            .single_pass()
            .build(det)
            .unwrap();
        assert_eq!(s.batch_pages(), 10, "a tenth of a second's worth");
        let start = clock.now_ns();
        run_until_pass(&mut s, &clock);
        let elapsed = clock.now_ns() - start;
        // 1000 pages at 100/s with a 10-page burst: 9.9 s of simulated time.
        assert_eq!(elapsed, 9_900_000_000);
        assert_eq!(s.progress(clock.now_ns()).passes_completed, 1);
        assert_eq!(s.step(clock.now_ns()).unwrap(), ScrubStep::Done);
    }

    #[test]
    fn finds_damage_and_reports_once_over_passes() {
        let (raw, det, clock) = setup(300);
        raw.damage(PageId(17), Damage::Zero).unwrap();
        raw.damage(PageId(250), Damage::BitFlip { byte: 3, bit: 2 })
            .unwrap();
        let mut s = ScrubConfig::new()
            .unlimited()
            .pass_interval(Duration::from_secs(60))
            .build(det.clone())
            .unwrap();
        for _ in 0..3 {
            run_until_pass(&mut s, &clock);
        }
        let p = s.progress(clock.now_ns());
        assert_eq!(p.passes_completed, 3);
        assert_eq!(p.corrupt_found, 2);
        let reports: Vec<_> = det.failures().try_iter().collect();
        assert_eq!(reports.len(), 2, "{reports:?}");
        // The interval between passes is honoured.
        assert_eq!(clock.now_ns(), 120_000_000_000);
    }

    #[test]
    fn eio_in_a_batch_is_checked_page_by_page() {
        let (raw, det, _clock) = setup(64);
        raw.fail_reads(Some(PageId(40)), ReadFault::Eio, u32::MAX);
        let mut s = ScrubConfig::new().unlimited().build(det.clone()).unwrap();
        let sum = s.scan_range(PageId(0), 64).unwrap();
        assert_eq!(sum.pages, 64);
        assert_eq!(sum.newly_corrupt, 1);
        assert_eq!(sum.clean, 63);
        assert_eq!(det.page_state(PageId(40)), Some(PageState::Suspect));
        let again = s.scan_range(PageId(0), 64).unwrap();
        assert_eq!(again.known_corrupt, 1);
        assert_eq!(again.newly_corrupt, 0);
    }

    #[test]
    fn store_growth_is_seen_at_the_next_pass() {
        let clock = ManualClock::new();
        let raw = Arc::new(MemStore::new(PS, 10).unwrap());
        let det = Arc::new(
            DetectorConfig::new(ChecksumPlacement::Trailer)
                .clock(Arc::new(clock.clone()))
                .build(raw.clone())
                .unwrap(),
        );
        for p in 0..10 {
            det.write_sealed(PageId(p), &mut vec![1; PS]).unwrap();
        }
        let mut s = ScrubConfig::new().unlimited().build(det.clone()).unwrap();
        run_until_pass(&mut s, &clock);
        raw.grow(5).unwrap();
        for p in 10..15 {
            det.write_sealed(PageId(p), &mut vec![1; PS]).unwrap();
        }
        // Next pass begins and covers 15 pages.
        assert!(matches!(
            s.step(clock.now_ns()).unwrap(),
            ScrubStep::Scanned(_)
        ));
        assert_eq!(s.progress(clock.now_ns()).total, 15);
    }

    #[test]
    fn pause_excludes_time_and_stops_steps() {
        let (_raw, det, clock) = setup(100);
        let mut s = ScrubConfig::new().pages_per_s(100).build(det).unwrap();
        assert!(matches!(s.step(0).unwrap(), ScrubStep::Scanned(_)));
        s.pause(0);
        clock.advance(Duration::from_secs(100));
        assert_eq!(s.step(clock.now_ns()).unwrap(), ScrubStep::Paused);
        assert_eq!(s.progress(clock.now_ns()).state, ScrubState::Paused);
        s.resume(clock.now_ns());
        // The bucket is bounded: resuming after a long pause grants one burst.
        assert_eq!(
            s.step(clock.now_ns()).unwrap(),
            ScrubStep::Scanned(ScanSummary {
                pages: 10,
                clean: 10,
                ..Default::default()
            })
        );
        assert!(matches!(
            s.step(clock.now_ns()).unwrap(),
            ScrubStep::Wait { .. }
        ));
        clock.advance(Duration::from_millis(100));
        s.step(clock.now_ns()).unwrap();
        let p = s.progress(clock.now_ns());
        assert_eq!(p.pages_done, 30);
        // 30 pages over 100 ms of unpaused time.
        assert!((p.rate_pages_per_s - 300.0).abs() < 1e-6, "{p:?}");
        assert_eq!(p.eta, Some(Duration::from_secs_f64(70.0 / 300.0)));
    }

    #[test]
    fn cursor_round_trip_and_damage_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        let (_raw, det, clock) = setup(100);
        let mut s = ScrubConfig::new()
            .pages_per_s(100)
            .cursor_path(&path)
            .build(det.clone())
            .unwrap();
        s.step(0).unwrap();
        for _ in 0..3 {
            // The bucket holds one batch (10 pages = 100 ms at this rate).
            clock.advance(Duration::from_millis(100));
            assert!(matches!(
                s.step(clock.now_ns()).unwrap(),
                ScrubStep::Scanned(_)
            ));
        }
        s.persist_cursor().unwrap();
        assert_eq!(
            decode_cursor(&path, &std::fs::read(&path).unwrap()).unwrap(),
            (40, 100, 0)
        );
        let s2 = ScrubConfig::new()
            .cursor_path(&path)
            .build(det.clone())
            .unwrap();
        assert_eq!(s2.progress(0).position, 40);
        std::fs::write(&path, b"garbage").unwrap();
        let s3 = ScrubConfig::new().cursor_path(&path).build(det).unwrap();
        assert_eq!(s3.progress(0).position, 0);
    }

    #[test]
    fn an_empty_pass_waits_before_the_next() {
        let (_raw, det, clock) = setup(8);
        let mut s = ScrubConfig::new()
            .unlimited()
            .mode(ScrubMode::ErrorOnly)
            .build(det)
            .unwrap();
        let mut passes = 0;
        for _ in 0..100 {
            if let ScrubStep::PassComplete { .. } = s.step(clock.now_ns()).unwrap() {
                passes += 1;
            }
        }
        assert_eq!(passes, 1, "no known-bad pages: one empty pass, then a wait");
        match s.step(clock.now_ns()).unwrap() {
            ScrubStep::Wait { until_ns } => {
                assert!(until_ns >= clock.now_ns() + EMPTY_PASS_WAIT_NS - 1);
            }
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    #[test]
    fn error_only_mode_rechecks_known_bad() {
        let (raw, det, clock) = setup(50);
        let mut good = vec![0u8; PS];
        raw.read_page(PageId(7), &mut good).unwrap();
        raw.damage(PageId(7), Damage::Junk { seed: 1 }).unwrap();
        raw.damage(PageId(8), Damage::Zero).unwrap();
        let mut full = ScrubConfig::new().unlimited().build(det.clone()).unwrap();
        assert_eq!(full.scan_range(PageId(0), 50).unwrap().newly_corrupt, 2);
        raw.inner().write_page(PageId(7), &good).unwrap();
        let mut eo = ScrubConfig::new()
            .unlimited()
            .mode(ScrubMode::ErrorOnly)
            .single_pass()
            .build(det.clone())
            .unwrap();
        let mut lifted = 0;
        loop {
            match eo.step(clock.now_ns()).unwrap() {
                ScrubStep::Scanned(s) => {
                    assert_eq!(s.pages, 2);
                    lifted += s.fences_lifted;
                }
                ScrubStep::PassComplete { .. } => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(lifted, 1);
        assert_eq!(det.page_state(PageId(7)), Some(PageState::Repaired));
        assert_eq!(det.page_state(PageId(8)), Some(PageState::Suspect));
    }

    #[test]
    fn bad_config_is_typed() {
        let (_raw, det, _clock) = setup(4);
        for cfg in [
            ScrubConfig::new().pages_per_s(0),
            ScrubConfig::new().bytes_per_s(0),
            ScrubConfig::new().batch_pages(0),
            ScrubConfig::new().batch_pages(MAX_BATCH_PAGES + 1),
            ScrubConfig::new().persist_every(Duration::ZERO),
            ScrubConfig::new().cursor_path("/"),
        ] {
            assert!(matches!(
                cfg.build(det.clone()),
                Err(Error::InvalidConfig { .. })
            ));
        }
    }

    #[derive(Debug)]
    struct PanickingStore;

    impl PageStore for PanickingStore {
        fn page_size(&self) -> usize {
            PS
        }
        fn page_count(&self) -> u64 {
            4
        }
        fn read_page(&self, _: PageId, _: &mut [u8]) -> Result<()> {
            panic!("disk controller on fire");
        }
        fn write_page(&self, _: PageId, _: &[u8]) -> Result<()> {
            Ok(())
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn worker_panic_marks_failed() {
        let det = Arc::new(
            DetectorConfig::new(ChecksumPlacement::Trailer)
                .build(Arc::new(PanickingStore))
                .unwrap(),
        );
        let mut h = ScrubConfig::new().unlimited().start(det).unwrap();
        let err = h.wait_for_passes(1, Duration::from_secs(10)).unwrap_err();
        assert!(err.to_string().contains("disk controller on fire"), "{err}");
        assert_eq!(h.state(), ScrubState::Failed);
        assert!(matches!(h.progress(), Err(Error::Stopped { .. })));
        assert!(matches!(h.pause(), Err(Error::Stopped { .. })));
        assert!(matches!(h.stop(), Err(Error::Stopped { .. })));
    }

    /// A store whose first read waits for a gate and then panics.
    #[derive(Debug)]
    struct GatedPanicStore {
        gate: Receiver<()>,
    }

    impl PageStore for GatedPanicStore {
        fn page_size(&self) -> usize {
            PS
        }
        fn page_count(&self) -> u64 {
            4
        }
        fn read_page(&self, _: PageId, _: &mut [u8]) -> Result<()> {
            let _ = self.gate.recv();
            panic!("failed while a command was queued");
        }
        fn write_page(&self, _: PageId, _: &[u8]) -> Result<()> {
            Ok(())
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn command_queued_when_the_worker_dies_gets_an_error() {
        let (open, gate) = crossbeam_channel::bounded(1);
        let det = Arc::new(
            DetectorConfig::new(ChecksumPlacement::Trailer)
                .build(Arc::new(GatedPanicStore { gate }))
                .unwrap(),
        );
        let h = Arc::new(ScrubConfig::new().unlimited().start(det).unwrap());
        let (result_tx, result) = crossbeam_channel::bounded(1);
        let caller = {
            let h = h.clone();
            std::thread::spawn(move || result_tx.send(h.pause()).unwrap())
        };
        // The worker is stuck in its read; wait for the command to be queued.
        while h.tx.is_empty() {
            std::thread::yield_now();
        }
        open.send(()).unwrap();
        let err = result
            .recv_timeout(Duration::from_secs(10))
            .expect("pause must not wait forever for a dead worker")
            .unwrap_err();
        assert!(matches!(err, Error::Stopped { .. }), "{err}");
        caller.join().unwrap();
        let mut h = Arc::try_unwrap(h).expect("sole owner");
        assert!(h
            .stop()
            .unwrap_err()
            .to_string()
            .contains("command was queued"));
    }

    #[test]
    fn thread_scrubs_pauses_and_stops() {
        let (raw, det, _clock) = setup(200);
        raw.damage(PageId(123), Damage::Junk { seed: 9 }).unwrap();
        // The system clock: a real thread at a high rate.
        let mut h = ScrubConfig::new()
            .pages_per_s(1_000_000)
            .clock(crate::clock::SystemClock::shared())
            .start(det.clone())
            .unwrap();
        let p = h
            .wait_for_passes(3, Duration::from_secs(20))
            .unwrap()
            .unwrap();
        assert!(p.passes_completed >= 3);
        assert_eq!(p.corrupt_found, 1);
        h.pause().unwrap();
        let paused = h.progress().unwrap();
        assert_eq!(paused.state, ScrubState::Paused);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(h.progress().unwrap().position, paused.position);
        h.resume().unwrap();
        assert_eq!(h.rescan_bad().unwrap().known_corrupt, 1);
        h.stop().unwrap();
        assert_eq!(h.state(), ScrubState::Stopped);
        assert!(matches!(h.pause(), Err(Error::Stopped { .. })));
        h.stop().unwrap();
        assert_eq!(det.failures().try_iter().count(), 1);
    }

    #[test]
    fn cursor_persisted_periodically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        let (_raw, det, clock) = setup(1000);
        let mut s = ScrubConfig::new()
            .pages_per_s(100)
            .persist_every(Duration::from_secs(1))
            .cursor_path(&path)
            .build(det)
            .unwrap();
        while clock.now_ns() < 1_000_000_000 {
            if let ScrubStep::Wait { until_ns } = s.step(clock.now_ns()).unwrap() {
                clock.set_ns(until_ns);
            }
        }
        assert!(!path.exists(), "not yet: less than 1 s of scanning");
        s.step(clock.now_ns()).unwrap();
        let (next, total, passes) = decode_cursor(&path, &std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            (next, total, passes),
            (s.progress(clock.now_ns()).position, 1000, 0)
        );
        assert!(next >= 100);
    }

    #[test]
    fn thread_follows_a_manual_clock() {
        let (_raw, det, clock) = setup(2);
        let mut h = ScrubConfig::new()
            .pages_per_s(1)
            .single_pass()
            .start(det)
            .unwrap();
        // Page 0 is scanned at once; page 1 only when a simulated second has passed.
        assert_eq!(
            h.wait_for_passes(1, Duration::from_millis(300)).unwrap(),
            None
        );
        assert_eq!(h.progress().unwrap().position, 1);
        clock.advance(Duration::from_secs(1));
        let p = h
            .wait_for_passes(1, Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(p.state, ScrubState::Finished);
        h.stop().unwrap();
    }

    fn rate_strategy() -> impl Strategy<Value = ScrubRate> {
        prop_oneof![
            (1u64..=u64::MAX).prop_map(ScrubRate::PagesPerSec),
            (1u64..1000).prop_map(ScrubRate::PagesPerSec),
            (1u64..=u64::MAX).prop_map(ScrubRate::BytesPerSec),
            (1u64..100_000).prop_map(ScrubRate::BytesPerSec),
        ]
    }

    proptest! {
        /// Over any window of polls, granted pages never exceed
        /// rate × elapsed + burst; polling at a returned deadline always
        /// grants; nothing overflows for extreme rates and times.
        #[test]
        fn pacer_never_exceeds_rate_plus_burst(
            rate in rate_strategy(),
            page_size in 64usize..=65_536,
            burst in 1u64..=4096,
            start in 0u64..=u64::MAX / 2,
            steps in proptest::collection::vec((0u64..=2_000_000_000, 1u64..=5000, any::<bool>()), 1..60),
        ) {
            let mut p = Pacer::new(rate, page_size, burst, start).unwrap();
            let (r, cost) = match rate {
                ScrubRate::PagesPerSec(r) => (r, 1u128),
                ScrubRate::BytesPerSec(r) => (r, page_size as u128),
                ScrubRate::Unlimited => unreachable!(),
            };
            let mut now = start;
            let mut log: Vec<(u64, u64)> = Vec::new();
            for (delta, want, jump) in steps {
                now = now.saturating_add(delta);
                match p.poll(now, want) {
                    Pace::Go(n) => {
                        prop_assert!(n >= 1 && n <= want);
                        prop_assert!(n >= want.min(burst));
                        log.push((now, n));
                    }
                    Pace::WaitUntil(t) => {
                        prop_assert!(t > now);
                        if jump && t < u64::MAX {
                            // Never stalls: at the deadline the pages are there.
                            now = t;
                            match p.poll(now, want) {
                                Pace::Go(n) => log.push((now, n)),
                                Pace::WaitUntil(t2) => prop_assert!(false, "stalled: {} then {}", t, t2),
                            }
                        }
                    }
                }
            }
            let per_page = cost * NS_PER_S;
            for i in 0..log.len() {
                let mut pages: u128 = 0;
                for j in i..log.len() {
                    pages += u128::from(log[j].1);
                    let elapsed = u128::from(log[j].0 - log[i].0);
                    let allowed = elapsed * u128::from(r) + u128::from(burst) * per_page;
                    prop_assert!(pages * per_page <= allowed,
                        "window {}..{}: {} pages > allowed", i, j, pages);
                }
            }
        }

        #[test]
        fn unlimited_grants_everything(want in 0u64..=u64::MAX, now in any::<u64>()) {
            let mut p = Pacer::new(ScrubRate::Unlimited, 4096, 1, 0).unwrap();
            prop_assert_eq!(p.poll(now, want), Pace::Go(want));
        }

        #[test]
        fn cursor_round_trips(next in any::<u64>(), extra in any::<u64>(), passes in any::<u64>()) {
            let total = next.saturating_add(extra);
            let b = encode_cursor(next, total, passes);
            prop_assert_eq!(decode_cursor(Path::new("c"), &b).unwrap(), (next, total, passes));
        }

        #[test]
        fn damaged_cursor_is_a_typed_error(next in 0u64..1000, flip in any::<usize>(), cut in any::<usize>()) {
            let mut b = encode_cursor(next, 1000, 3);
            let i = flip % b.len();
            b[i] ^= 1 << (flip % 8);
            prop_assert!(decode_cursor(Path::new("c"), &b).is_err());
            let b = encode_cursor(next, 1000, 3);
            prop_assert!(decode_cursor(Path::new("c"), &b[..cut % b.len()]).is_err());
            prop_assert!(decode_cursor(Path::new("c"), &vec![0u8; b.len()]).is_err());
        }
    }
}
