//! `CorruptionDetector`: verify pages on read, seal them on write, fence the
//! ones that fail, and report each corruption once.
//!
//! The detector wraps the host's raw [`PageStore`]. Everything that writes
//! pages of a protected store (the host, rollback, repair, restore) goes
//! through it, because it keeps the checksums current and because it is what
//! lets a repair know that a host write raced with it (see
//! [`registry`] for the epoch protocol). A host write that
//! bypasses the detector is invisible to it: its checksum goes stale and the
//! next verification reports the page. A host that needs to know of every
//! page write — its own and the library's — gives the detector a
//! [write observer](DetectorConfig::on_write) (incremental snapshots that
//! rely on dirty-page notices need one).
//!
//! # What a write promises
//!
//! With a [page-LSN reader](DetectorConfig::page_lsn), a page must not be
//! older than the last write through the detector, whatever LSN that write
//! carried (see the [`lsn`] module). Nothing the library writes is sealed
//! without having been verified: rollback reads verified, repair writes only
//! copies it verified, adoption never seals a page the registry knows to be
//! bad, and a restore checks pages that a snapshot did not read through a
//! verifying store ([`PageStore::check_unverified`]).
//!
//! # Pages the library did not write
//!
//! A store that existed before the library (a host's database file) is
//! taken under protection with [`CorruptionDetector::adopt`] (see the
//! [`adopt`] module): it seals what is on disk, after the host's own
//! integrity check. Pages the host's metadata calls unallocated (a free
//! list) are not damage: a host names them with
//! [`DetectorConfig::free_pages`] or [`CorruptionDetector::forget`], and
//! scrubs skip them (see the [`free`] module for the whole contract).
//!
//! # Resizing
//!
//! [`CorruptionDetector::resize`] changes the store's size and forgets the
//! checksums, fences, unallocated marks and LSNs of pages past the new end.
//! Every operation that writes or records something about one page
//! (a host write, the re-read that confirms a corruption, a repair commit)
//! holds that page's lock and checks the page against the store's size under
//! it; a shrink first shrinks the store and then forgets with every page lock
//! held, so an operation on a dropped page either finished before (and its
//! traces are forgotten) or sees [`Error::PageOutOfRange`] and records
//! nothing. With a durable sidecar table the store is synced (no page lock
//! held) before the table forgets, durably, so that no crash leaves pages
//! whose checksums are gone. Adoption batches and resizes exclude each other.
//!
//! Locks, in the order they are taken: the resize gate (adoption batches
//! shared, a resize exclusive); the store's own locks; page stripes (one,
//! or several in ascending stripe order); a durable sidecar table's locks
//! (its files, then its unsettled versions, then its log state, then its
//! entries); the registry.

pub mod adopt;
pub mod free;
pub mod lsn;
pub mod registry;
pub mod scrub;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::checksum::{ChecksumPlacement, ChecksumTable, MIN_PAGE_SIZE};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::host::{check_page_args, PageStore};
use crate::types::{Failure, FailureKind, FailureSink, Lsn, PageId};
use free::PageBits;

pub use adopt::{AdoptOptions, AdoptProgress, AdoptReport};
pub use free::FreePageFn;
pub use lsn::LsnExpectation;
pub use registry::{Observation, Observer, PageState, SuspectEntry, SuspectRegistry};
pub use scrub::{
    Pace, Pacer, ScanSummary, ScrubConfig, ScrubHandle, ScrubMode, ScrubProgress, ScrubRate,
    ScrubState, ScrubStep, Scrubber,
};

/// Reads a page's LSN from its bytes (most engines keep one in the page
/// header). Lets repair refuse copies older than what the store last wrote.
pub type PageLsnFn = Arc<dyn Fn(&[u8]) -> Option<Lsn> + Send + Sync>;

/// Answers the LSN a page must carry at least, from the host's own records
/// (its WAL, its page map): see [`DetectorConfig::expected_page_lsn`].
pub type ExpectedLsnFn = Arc<dyn Fn(PageId) -> Option<Lsn> + Send + Sync>;

/// Told of every page write the detector issues to its store, whoever asked
/// for it: see [`DetectorConfig::on_write`].
pub type WriteObserverFn = Arc<dyn Fn(PageId) + Send + Sync>;

pub use crate::types::FailureCallback;

const LOCK_STRIPES: usize = 256;

/// Most consecutive pages a batch commit re-reads with one read: their
/// stripe locks are all held for it (so it stays well below
/// [`LOCK_STRIPES`], and host writes to other pages are rarely held up).
const REREAD_RUN_PAGES: usize = 32;

/// Configuration of a [`CorruptionDetector`].
#[must_use]
pub struct DetectorConfig {
    placement: ChecksumPlacement,
    suspect_capacity: usize,
    report_capacity: usize,
    clock: Arc<dyn Clock>,
    page_lsn: Option<PageLsnFn>,
    expected_lsn: Option<ExpectedLsnFn>,
    on_failure: Option<FailureCallback>,
    free_pages: Option<FreePageFn>,
    on_write: Option<WriteObserverFn>,
}

impl fmt::Debug for DetectorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetectorConfig")
            .field("placement", &self.placement)
            .field("suspect_capacity", &self.suspect_capacity)
            .field("report_capacity", &self.report_capacity)
            .field("page_lsn", &self.page_lsn.is_some())
            .field("expected_page_lsn", &self.expected_lsn.is_some())
            .field("on_write", &self.on_write.is_some())
            .finish_non_exhaustive()
    }
}

impl DetectorConfig {
    /// Defaults: checksums in a trailer, 65 536 suspect pages, 4 096 unread
    /// reports, the system clock, no page-LSN reader, no callback, no
    /// free-page answer (every page is in use unless
    /// [`forget`](CorruptionDetector::forget) says otherwise), no write
    /// observer.
    pub fn new(placement: ChecksumPlacement) -> Self {
        DetectorConfig {
            placement,
            suspect_capacity: 65_536,
            report_capacity: 4_096,
            clock: SystemClock::shared(),
            page_lsn: None,
            expected_lsn: None,
            on_failure: None,
            free_pages: None,
            on_write: None,
        }
    }

    /// How many pages the suspect registry holds at most (default 65 536).
    pub fn suspect_capacity(mut self, pages: usize) -> Self {
        self.suspect_capacity = pages;
        self
    }

    /// How many unread failure reports the channel holds (default 4 096);
    /// beyond that reports are counted as dropped, never blocking detection.
    pub fn report_capacity(mut self, reports: usize) -> Self {
        self.report_capacity = reports;
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How to read a page's LSN from its bytes (default: none known).
    pub fn page_lsn(mut self, f: PageLsnFn) -> Self {
        self.page_lsn = Some(f);
        self
    }

    /// The host's answer to "which LSN must this page carry at least?"
    /// (default: none). Needs a [page-LSN reader](Self::page_lsn).
    ///
    /// The detector remembers the LSN of the last write of every page
    /// through it, and refuses bytes older than that (a lost write, a stale
    /// repair copy); see the [`lsn`] module for the rule. That memory is
    /// empty after a restart; this hook refills it from the host's own
    /// durable records, so that after a restart a stale replica copy still
    /// fails verification as [`Error::StalePage`] and a repair still refuses
    /// it, even when every replica holds the same stale version. The library
    /// keeps no file of its own for this: the host's WAL or page map already
    /// knows each page's LSN durably, and a second record would cost a write
    /// (and an fsync) per page write to be as trustworthy.
    ///
    /// The answer is a *floor*, used only for a page not written through the
    /// detector in this process: once a write (the host's, a rollback's, a
    /// restore's, a repair's) went through the detector, the LSN it carried
    /// is the truth, even when it is older than what the hook would say (a
    /// rollback puts a before-image back). So the hook must answer from
    /// durable state that a rollback or restore also updates, or answer no
    /// more than the page's LSN after them.
    ///
    /// It is called only for a page whose LSN the detector does not know yet
    /// (once per page and run when it answers `Some`; its answer is then
    /// remembered until the next write), during verification — from host
    /// reads, scrubs and repairs, possibly with a page lock held. It must be
    /// cheap, must not call back into the detector, and must not answer an
    /// LSN the page has not durably reached (that would fence a good page as
    /// stale). `None` or `Lsn(0)` means "not known".
    pub fn expected_page_lsn(mut self, f: ExpectedLsnFn) -> Self {
        self.expected_lsn = Some(f);
        self
    }

    /// A callback run with every failure reported (default: none).
    pub fn on_failure(mut self, f: FailureCallback) -> Self {
        self.on_failure = Some(f);
        self
    }

    /// The host's answer to "is this page unallocated now?", from its own
    /// metadata (a free list), so that free pages are not reported as damage
    /// (default: none). Asked only when a page fails verification, never on
    /// the path of a page that verifies; see the [`free`] module for what an
    /// unallocated page means to reads, scrubs and repairs.
    ///
    /// **The answer must come from the host's current metadata, every
    /// time.** It is asked only after a page failed verification, so an
    /// answer from a stale copy of the free list (one read once at startup
    /// or at adoption) calls a page that was reused since "free", and the
    /// damage of a page in use is then never reported. A host that knows its
    /// free pages only at one moment (adoption) calls
    /// [`forget`](CorruptionDetector::forget) for each instead: a later
    /// write through the detector puts the page back in use by itself.
    pub fn free_pages(mut self, f: FreePageFn) -> Self {
        self.free_pages = Some(f);
        self
    }

    /// A function told of every page write the detector issues to its store,
    /// whoever asked for it (default: none): host writes and batches, and
    /// the writes the library makes itself — a rollback or recovery through
    /// the detector, a restore into it, a repair commit,
    /// [`replace_if_unchanged`](CorruptionDetector::replace_if_unchanged),
    /// a trailer written by adoption. It is called after the write, once
    /// per page, with no lock of the detector held, before the call that
    /// wrote returns; also for a write that failed (the page's bytes are
    /// unknown then). It must be cheap and must not block on the detector's
    /// writers. A [resize](CorruptionDetector::resize) is not a page write:
    /// a host that relies on notices reports it with
    /// [`note_resized`](crate::StateSnapshotManager::note_resized).
    ///
    /// A host whose incremental snapshots rely on dirty-page notices wires
    /// it to [`StateSnapshotManager::note_dirty`](crate::StateSnapshotManager::note_dirty):
    /// otherwise the writes the library makes are missing from the notices,
    /// and a restore of the next incremental snapshot brings back what a
    /// rollback undid (see the [`snapshot`](crate::snapshot#consistency)
    /// module docs).
    pub fn on_write(mut self, f: WriteObserverFn) -> Self {
        self.on_write = Some(f);
        self
    }

    /// Builds the detector over `store`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero capacity, a page size below 64, or
    /// an [expected-LSN hook](Self::expected_page_lsn) without a page-LSN
    /// reader; [`Error::PageSizeMismatch`] when a sidecar table was made for
    /// another page size; [`Error::Poisoned`] for a durable sidecar table
    /// whose log failed.
    pub fn build(self, store: Arc<dyn PageStore>) -> Result<CorruptionDetector> {
        if self.expected_lsn.is_some() && self.page_lsn.is_none() {
            return Err(Error::config(
                "expected_page_lsn",
                "is set without a page-LSN reader: an expected LSN can only be compared with a \
                 page's own LSN; set `page_lsn` as well",
            ));
        }
        if self.suspect_capacity == 0 {
            return Err(Error::config(
                "suspect_capacity",
                "is 0; it must be at least 1",
            ));
        }
        if self.report_capacity == 0 {
            return Err(Error::config(
                "report_capacity",
                "is 0; it must be at least 1",
            ));
        }
        let ps = store.page_size();
        if ps < MIN_PAGE_SIZE {
            return Err(Error::config(
                "page_size",
                format!("the store's page size is {ps}; it must be at least {MIN_PAGE_SIZE}"),
            ));
        }
        if let ChecksumPlacement::Sidecar(t) = &self.placement {
            if t.page_size() != ps {
                return Err(Error::PageSizeMismatch {
                    what: "sidecar checksum table".into(),
                    expected: ps,
                    actual: t.page_size(),
                });
            }
        }
        if let ChecksumPlacement::Sidecar(t) = &self.placement {
            // Writes a crash left unsettled: find which bytes each page holds.
            t.resolve(store.page_count(), &mut |p, buf| store.read_page(p, buf))?;
        }
        let (sink, reports) = FailureSink::bounded(self.report_capacity);
        Ok(CorruptionDetector {
            store,
            placement: self.placement,
            registry: Mutex::new(SuspectRegistry::new(self.suspect_capacity)),
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            written_lsn: lsn::LsnSlots::default(),
            freed: PageBits::default(),
            sealed_here: PageBits::default(),
            free_pages: self.free_pages,
            resize_gate: RwLock::new(()),
            page_lsn: self.page_lsn,
            expected_lsn: self.expected_lsn,
            on_failure: self.on_failure,
            on_write: self.on_write,
            sink,
            reports,
            clock: self.clock,
            stats: Counters::default(),
        })
    }
}

#[derive(Debug, Default)]
struct Counters {
    verified: AtomicU64,
    transient: AtomicU64,
    corrupt: AtomicU64,
    fenced_reads: AtomicU64,
    unrecorded: AtomicU64,
    unallocated: AtomicU64,
}

/// Counters of a [`CorruptionDetector`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectorStats {
    /// Pages that verified (reads and scans).
    pub verified: u64,
    /// Mismatches that cleared on the retry read (transient faults, races).
    pub transient: u64,
    /// Corruptions reported (each page once per episode).
    pub corrupt_reported: u64,
    /// Verified reads refused because the page was fenced.
    pub fenced_reads: u64,
    /// Corruptions that could not be recorded because the registry was full.
    pub unrecorded: u64,
    /// Reports dropped because the channel was full.
    pub reports_dropped: u64,
    /// Pages that failed verification but that the host says are
    /// unallocated: not reported, not fenced (reads, scans and rechecks).
    pub unallocated: u64,
}

/// The outcome of verifying one page.
#[derive(Debug)]
pub enum Verdict {
    /// The page verified.
    Clean,
    /// The first look failed but the re-read verified: a transient fault or a
    /// concurrent write, not corruption.
    Transient,
    /// The page is corrupt.
    Corrupt {
        /// Whether this observation produced a report (first time seen).
        reported: bool,
        /// The verification error.
        error: Error,
    },
    /// The page did not verify, but the host says it is unallocated: there
    /// is nothing to verify or repair. Not recorded, not reported.
    Unallocated,
}

/// A repair in progress, from [`CorruptionDetector::begin_repair`].
///
/// It borrows the detector that issued it, so it cannot outlive it. It ends
/// in one of three ways: [`commit_repair`](CorruptionDetector::commit_repair)
/// (or [`commit_repairs`](CorruptionDetector::commit_repairs)) writes a copy,
/// [`abandon_repair`](CorruptionDetector::abandon_repair) declares the page
/// irreparable, or the ticket is dropped — also while unwinding from a panic
/// — which releases the page back to `Suspect` so that the next repair tries
/// it (it is not reported again: it already was). A page therefore never
/// stays `Repairing` after its repair is gone.
#[must_use = "a dropped ticket ends the repair without a verdict: the page goes back to `Suspect`"]
pub struct RepairTicket<'d> {
    detector: &'d CorruptionDetector,
    page: PageId,
    epoch: u64,
    open: bool,
}

impl RepairTicket<'_> {
    /// The page being repaired.
    #[must_use]
    pub fn page(&self) -> PageId {
        self.page
    }

    /// Marks the ticket as ended (its verdict was recorded), so that dropping
    /// it releases nothing.
    fn close(mut self) {
        self.open = false;
    }
}

impl fmt::Debug for RepairTicket<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepairTicket")
            .field("page", &self.page)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Drop for RepairTicket<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        if self
            .detector
            .registry
            .lock()
            .release_repair(self.page, self.epoch)
        {
            tracing::warn!(page = %self.page, "a repair ended without a verdict; the page waits for repair again");
        }
    }
}

/// What one page of [`CorruptionDetector::commit_repairs`] came to: as for
/// [`commit_repair`](CorruptionDetector::commit_repair), the ticket comes
/// back with the error so that the caller can try another copy.
pub type CommitResult<'d> = std::result::Result<Commit, (RepairTicket<'d>, Error)>;

/// What [`CorruptionDetector::commit_repair`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The copy was written, synced, re-read and verified.
    Written,
    /// The host rewrote the page after the repair began; nothing was written
    /// (the host's newer page stands).
    Superseded,
}

/// Verifies pages on read, seals them on write, and keeps the suspect-page
/// registry.
///
/// ```
/// use std::sync::Arc;
/// use selfheal::{ChecksumPlacement, CorruptionDetector, DetectorConfig, MemStore, PageId, PageStore};
///
/// let raw = Arc::new(MemStore::new(4096, 8)?);
/// let det = DetectorConfig::new(ChecksumPlacement::Trailer).build(raw.clone())?;
/// let mut page = vec![7u8; 4096];
/// det.write_sealed(PageId(2), &mut page)?;       // trailer written into the last 16 bytes
///
/// let mut junk = vec![0u8; 4096];
/// raw.write_page(PageId(2), &junk)?;             // damage behind the detector's back
/// let err = det.read_verified(PageId(2), &mut junk).unwrap_err();
/// assert!(err.is_corruption());
/// assert_eq!(det.failures().try_recv().unwrap().evidence, err.to_string());
/// # Ok::<(), selfheal::Error>(())
/// ```
pub struct CorruptionDetector {
    store: Arc<dyn PageStore>,
    placement: ChecksumPlacement,
    registry: Mutex<SuspectRegistry>,
    stripes: Box<[Mutex<()>]>,
    written_lsn: lsn::LsnSlots,
    /// Pages the host forgot, in the trailer placement (the sidecar table
    /// keeps its own marks).
    freed: PageBits,
    /// Pages this detector wrote a trailer into in this process (trailer
    /// placement): a failure of such a page is damage, never a page that is
    /// merely not adopted yet.
    sealed_here: PageBits,
    free_pages: Option<FreePageFn>,
    /// Held shared by an adoption batch, exclusively by a resize.
    resize_gate: RwLock<()>,
    page_lsn: Option<PageLsnFn>,
    expected_lsn: Option<ExpectedLsnFn>,
    on_failure: Option<FailureCallback>,
    on_write: Option<WriteObserverFn>,
    sink: FailureSink,
    reports: Receiver<Failure>,
    clock: Arc<dyn Clock>,
    stats: Counters,
}

impl fmt::Debug for CorruptionDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CorruptionDetector")
            .field("store", &self.store)
            .field("placement", &self.placement)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl CorruptionDetector {
    /// The raw store underneath (reads from it are not verified).
    #[must_use]
    pub fn store(&self) -> &Arc<dyn PageStore> {
        &self.store
    }

    /// Where checksums live.
    #[must_use]
    pub fn placement(&self) -> &ChecksumPlacement {
        &self.placement
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The receiving end of the failure reports (cloning shares the queue).
    #[must_use]
    pub fn failures(&self) -> Receiver<Failure> {
        self.reports.clone()
    }

    /// The sink reports go to; other components that report page failures
    /// (the repairer) send through the same one.
    #[must_use]
    pub fn sink(&self) -> &FailureSink {
        &self.sink
    }

    /// Current counters.
    #[must_use]
    pub fn stats(&self) -> DetectorStats {
        let s = &self.stats;
        DetectorStats {
            verified: s.verified.load(Ordering::Relaxed),
            transient: s.transient.load(Ordering::Relaxed),
            corrupt_reported: s.corrupt.load(Ordering::Relaxed),
            fenced_reads: s.fenced_reads.load(Ordering::Relaxed),
            unrecorded: s.unrecorded.load(Ordering::Relaxed),
            reports_dropped: self.sink.dropped(),
            unallocated: s.unallocated.load(Ordering::Relaxed),
        }
    }

    /// Checksum verification plus, when a page-LSN reader is configured, the
    /// lost-write check: bytes older than the last write to the page fail.
    fn verify_bytes(&self, page: PageId, bytes: &[u8]) -> Result<()> {
        self.placement.verify(page, bytes)?;
        let Some(found) = self.page_lsn_of(bytes) else {
            return Ok(());
        };
        if let Some(expected) = self.last_written_lsn(page) {
            if found < expected {
                return Err(Error::StalePage {
                    page,
                    found,
                    expected,
                });
            }
        }
        Ok(())
    }

    fn stripe(&self, page: PageId) -> MutexGuard<'_, ()> {
        self.stripes[(page.0 % LOCK_STRIPES as u64) as usize].lock()
    }

    /// The write locks of every page of a batch, taken in stripe order so
    /// that two batches never wait on each other in a cycle.
    fn stripes_of(&self, pages: impl Iterator<Item = PageId>) -> Vec<MutexGuard<'_, ()>> {
        let mut wanted = [false; LOCK_STRIPES];
        for p in pages {
            wanted[(p.0 % LOCK_STRIPES as u64) as usize] = true;
        }
        (0..LOCK_STRIPES)
            .filter(|&i| wanted[i])
            .map(|i| self.stripes[i].lock())
            .collect()
    }

    /// Reads `page` into `buf` and verifies it. A page that fails is re-read
    /// once (with writers to it excluded) before it is declared corrupt.
    ///
    /// # Errors
    /// [`Error::PageFenced`] for a page known to be corrupt and not yet
    /// repaired; [`Error::PageUnallocated`] for a page that does not verify
    /// and that the host says is free (not recorded, not reported); a
    /// corruption error ([`Error::is_corruption`]) or the store's read error
    /// for a page that failed both reads (it is then fenced and reported).
    /// The corrupt bytes are never returned as valid: on error `buf` holds
    /// whatever was read and must not be used.
    pub fn read_verified(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        check_page_args(
            page,
            self.store.page_count(),
            buf.len(),
            self.store.page_size(),
        )?;
        let fenced = self.registry.lock().state(page).filter(|s| s.is_fenced());
        if let Some(state) = fenced {
            self.stats.fenced_reads.fetch_add(1, Ordering::Relaxed);
            let err = Error::PageFenced {
                page,
                state: state.as_str(),
            };
            // A host read of an irreparable page is its "next error": the
            // page goes back to suspect and is reported, so repair is tried
            // again (a replica may have come back). Suspect and repairing
            // pages are already waiting for repair and are not re-reported.
            if state == PageState::Irreparable {
                let failure = {
                    let _g = self.stripe(page);
                    // Dropped by a resize meanwhile: nothing to renew.
                    (page.0 < self.store.page_count())
                        .then(|| self.note_corrupt(page, &err, Observer::HostRead).1)
                        .flatten()
                };
                self.emit(failure);
            }
            return Err(err);
        }
        if self.store.read_page(page, buf).is_ok() && self.verify_bytes(page, buf).is_ok() {
            self.stats.verified.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        match self.confirm(page, Observer::HostRead, Some(buf))? {
            Verdict::Clean | Verdict::Transient => Ok(()),
            Verdict::Corrupt { error, .. } => Err(error),
            Verdict::Unallocated => Err(Error::PageUnallocated { page }),
        }
    }

    /// Verifies bytes that were read (by a scan) as the contents of `page`,
    /// re-reading once before declaring corruption. Used by the scrubber.
    /// A page that fails and that the host says is unallocated is
    /// [`Verdict::Unallocated`].
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] when the store shrank below the page since
    /// it was read (nothing is recorded about it).
    pub fn check_scanned(&self, page: PageId, bytes: &[u8], by: Observer) -> Result<Verdict> {
        if self.verify_bytes(page, bytes).is_ok() {
            self.stats.verified.fetch_add(1, Ordering::Relaxed);
            return Ok(Verdict::Clean);
        }
        self.confirm(page, by, None)
    }

    /// Reads `page` and verifies it like a scan would: re-reads once before
    /// declaring corruption, and counts a persistent read error as a page
    /// that needs repair. Used by the scrubber for pages a batch read could
    /// not deliver.
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] for a page past the end (also when the
    /// store shrinks below it during the check; nothing is recorded then).
    pub fn check_page(&self, page: PageId, by: Observer) -> Result<Verdict> {
        let page_count = self.store.page_count();
        if page.0 >= page_count {
            return Err(Error::PageOutOfRange { page, page_count });
        }
        let mut buf = vec![0u8; self.store.page_size()];
        if self.store.read_page(page, &mut buf).is_ok() && self.verify_bytes(page, &buf).is_ok() {
            self.stats.verified.fetch_add(1, Ordering::Relaxed);
            return Ok(Verdict::Clean);
        }
        self.confirm(page, by, None)
    }

    /// After a failed verification: asks whether the page is unallocated,
    /// then re-reads `page` with writers to it excluded and verifies again;
    /// records the corruption if it fails twice (and reports it, after the
    /// page's lock is released). When `out` is given, the re-read bytes are
    /// copied there on success.
    fn confirm(&self, page: PageId, by: Observer, out: Option<&mut [u8]>) -> Result<Verdict> {
        // The host's answer is asked with no lock held: it may read pages.
        if self.is_unallocated(page) {
            self.stats.unallocated.fetch_add(1, Ordering::Relaxed);
            return Ok(Verdict::Unallocated);
        }
        let mut again = vec![0u8; self.store.page_size()];
        let (verdict, failure) = {
            let _g = self.stripe(page);
            // A resize that dropped the page since it was read: nothing about
            // it may be recorded (a shrink forgets with every page lock held).
            let page_count = self.store.page_count();
            if page.0 >= page_count {
                return Err(Error::PageOutOfRange { page, page_count });
            }
            // A read that fails twice is recorded like corruption: an
            // unreadable page needs a repair as much as a garbled one
            // (rewriting a bad sector usually remaps it).
            let retry = self
                .store
                .read_page(page, &mut again)
                .and_then(|()| self.verify_bytes(page, &again));
            match retry {
                Ok(()) => {
                    self.stats.transient.fetch_add(1, Ordering::Relaxed);
                    self.stats.verified.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%page, "verification failed once, re-read verified");
                    if let Some(out) = out {
                        out.copy_from_slice(&again);
                    }
                    (Verdict::Transient, None)
                }
                Err(e @ Error::PageOutOfRange { .. }) => return Err(e),
                // Forgotten while we waited for the lock.
                Err(_) if self.marked_free(page) => {
                    self.stats.unallocated.fetch_add(1, Ordering::Relaxed);
                    (Verdict::Unallocated, None)
                }
                Err(error) => {
                    let (reported, failure) = self.note_corrupt(page, &error, by);
                    (Verdict::Corrupt { reported, error }, failure)
                }
            }
        };
        self.emit(failure);
        Ok(verdict)
    }

    /// Records a corruption of `page` in the registry and counts it; returns
    /// whether it is reported and the report to send. The caller holds the
    /// page's lock (so a resize cannot drop the page in between) and sends
    /// the report with [`emit`](Self::emit) after releasing it, because a
    /// host's failure callback may read pages.
    fn note_corrupt(&self, page: PageId, error: &Error, by: Observer) -> (bool, Option<Failure>) {
        let now = self.clock.now_ns();
        let evidence = error.to_string();
        let obs = if self.looks_unsealed(page, error) {
            self.registry.lock().on_unsealed(page, &evidence, now, by)
        } else {
            self.registry.lock().on_corrupt(page, &evidence, now, by)
        };
        match obs {
            Observation::Report { .. } => {
                self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%page, %evidence, "corrupt page");
                let f = Failure::new(FailureKind::CorruptPage { page }, evidence, now);
                (true, Some(f))
            }
            Observation::Known => (false, None),
            Observation::Full => {
                self.stats.unrecorded.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%page, "suspect registry full; corruption not recorded");
                let f = Failure::new(
                    FailureKind::CorruptPage { page },
                    format!(
                        "{evidence} (not fenced: {})",
                        Error::RegistryFull {
                            capacity: self.registry.lock().capacity()
                        }
                    ),
                    now,
                );
                (true, Some(f))
            }
        }
    }

    /// Whether `error` says only that `page` carries no seal at all, as a
    /// page that is not adopted yet does: no checksum in the sidecar table
    /// (which remembers every page it sealed), or no trailer on a page this
    /// detector has not sealed in this process. Adoption may seal a page
    /// fenced only for that, and never one fenced for anything else.
    fn looks_unsealed(&self, page: PageId, error: &Error) -> bool {
        match (&self.placement, error) {
            (ChecksumPlacement::Sidecar(_), Error::MissingChecksum { .. }) => true,
            (ChecksumPlacement::Trailer, Error::InvalidTrailer { .. }) => {
                !self.sealed_here.get(page)
            }
            _ => false,
        }
    }

    fn emit(&self, failure: Option<Failure>) {
        if let Some(f) = failure {
            self.report(f);
        }
    }

    /// Tells the [write observer](DetectorConfig::on_write) of page writes
    /// that were issued. Called with no lock of the detector held.
    fn notify_written(&self, pages: impl IntoIterator<Item = PageId>) {
        if let Some(f) = &self.on_write {
            for page in pages {
                f(page);
            }
        }
    }

    /// Sends a report to the channel and the callback.
    pub(crate) fn report(&self, failure: Failure) {
        if let Some(cb) = &self.on_failure {
            cb(&failure);
        }
        self.sink.send(failure);
    }

    /// Seals `buf` as `page` (writes the trailer, or records the checksum in
    /// the sidecar table) and writes it. A fenced page is unfenced: the host's
    /// new contents replace whatever was corrupt, and any repair in flight for
    /// it will not overwrite them. A page marked unallocated is in use again.
    ///
    /// An all-zero page is accepted in both placements: the trailer makes it
    /// nonzero, and the sidecar table records the checksum of the zeros the
    /// host wrote (SQLite with `secure_delete` zeroes the pages it frees, and
    /// may read them back), through the same path as any other write (a
    /// durable table logs its intent first). Such a page verifies only as long as it holds
    /// those zeros; a page sealed with other contents that comes back zeroed
    /// is still [`Error::ZeroedPage`].
    ///
    /// With a durable sidecar table the new checksum is logged and fsynced
    /// before the page is written (see [`checksum::durable`](crate::checksum::durable));
    /// concurrent writers share that fsync, and
    /// [`write_sealed_batch`](Self::write_sealed_batch) shares it across a
    /// batch.
    ///
    /// # Errors
    /// [`Error::BufferSize`], [`Error::PageOutOfRange`] (also when a resize
    /// dropped the page while the write waited for its lock), the sealing
    /// error, the table's log error, or the store's write error.
    pub fn write_sealed(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.write_sealed_batch(&mut [(page, buf)])
    }

    /// Seals and writes a batch of pages: [`write_sealed`](Self::write_sealed)
    /// for each, in order, but with one fsync of a durable sidecar table's
    /// log for the whole batch. Every page is checked and sealed before any
    /// is written; the writes stop at the first that fails, and the pages
    /// before it stay written (a page may appear twice; its last bytes win).
    ///
    /// # Errors
    /// As [`write_sealed`](Self::write_sealed), for the first page that fails.
    pub fn write_sealed_batch(&self, pages: &mut [(PageId, &mut [u8])]) -> Result<()> {
        let (page_count, page_size) = (self.store.page_count(), self.store.page_size());
        for (page, buf) in pages.iter() {
            check_page_args(*page, page_count, buf.len(), page_size)?;
        }
        let mut issued = 0;
        let result = self.write_batch_locked(pages, &mut issued);
        self.notify_written(pages[..issued].iter().map(|(p, _)| *p));
        result
    }

    /// The body of [`write_sealed_batch`](Self::write_sealed_batch), with
    /// the pages' locks held; counts in `issued` the page writes issued to
    /// the store (the last may have failed).
    fn write_batch_locked(
        &self,
        pages: &mut [(PageId, &mut [u8])],
        issued: &mut usize,
    ) -> Result<()> {
        let _g = self.stripes_of(pages.iter().map(|(p, _)| *p));
        // A resize may have dropped a page while the batch waited for its
        // locks: nothing may be written or recorded for it.
        let page_count = self.store.page_count();
        if let Some((page, _)) = pages.iter().find(|(p, _)| p.0 >= page_count) {
            return Err(Error::PageOutOfRange {
                page: *page,
                page_count,
            });
        }
        let (written, result) = match &self.placement {
            ChecksumPlacement::Trailer => {
                for (page, buf) in pages.iter_mut() {
                    crate::checksum::trailer::seal(*page, buf)?;
                }
                let mut written = 0;
                let mut result = Ok(());
                for (page, buf) in pages.iter() {
                    *issued += 1;
                    result = self.store.write_page(*page, buf);
                    if result.is_err() {
                        break;
                    }
                    self.freed.clear(*page);
                    self.note_sealed_here(*page);
                    written += 1;
                }
                (written, result)
            }
            ChecksumPlacement::Sidecar(table) => self.write_sidecar(table, pages, issued)?,
        };
        let mut registry = self.registry.lock();
        for (page, _) in &pages[..written] {
            registry.on_host_write(*page);
        }
        drop(registry);
        // In order: the last write of a page that appears twice defines it.
        for (page, buf) in &pages[..written] {
            self.record_write_lsn(*page, buf);
        }
        result
    }

    /// Trailer placement: remembers that the detector wrote a trailer into
    /// `page` (see [`looks_unsealed`](Self::looks_unsealed)).
    fn note_sealed_here(&self, page: PageId) {
        if matches!(self.placement, ChecksumPlacement::Trailer) && !self.sealed_here.get(page) {
            // Only pages below the page count get here: the set stays bounded.
            let _ = self.sealed_here.set(page);
        }
    }

    /// The sidecar branch of a batch write: the table's entries change only
    /// around writes that were issued — an in-memory table records a
    /// checksum once its write succeeded (a failed write leaves the old
    /// bytes and checksum), a durable one logs the new checksum durably
    /// before the write and keeps the old one accepted until a sync.
    /// Returns how many pages were written and the first write error, and
    /// counts in `issued` the page writes issued.
    fn write_sidecar(
        &self,
        table: &ChecksumTable,
        pages: &[(PageId, &mut [u8])],
        issued: &mut usize,
    ) -> Result<(usize, Result<()>)> {
        let changes = pages
            .iter()
            .map(|(page, buf)| Ok((*page, table.sealable(*page, buf, true)?)))
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<PageId> = changes.iter().map(|(p, _)| *p).collect();
        if table.needs_sync(&ids) {
            // Too many changes since the last sync: settle them first.
            self.sync()?;
        }
        let intents = table.intend(&changes)?;
        let mut written = 0;
        let mut result = Ok(());
        for (page, buf) in pages {
            *issued += 1;
            result = self.store.write_page(*page, buf);
            if result.is_err() {
                break;
            }
            written += 1;
        }
        table.complete(&intents, written)?;
        Ok((written, result))
    }

    /// Makes every completed write durable: syncs the store and then, for a
    /// durable sidecar table, settles the checksums of the pages the sync
    /// covered (their old checksums stop being accepted) and compacts the
    /// table's log when it has grown large. This is the detector's
    /// [`PageStore::sync`]; a host syncs through it, not through the raw
    /// store, or its pages keep accepting their older checksums (safe, but
    /// weaker, and the table keeps growing until the detector syncs on its
    /// own).
    ///
    /// # Errors
    /// The store's sync error (nothing is settled); the table's log or
    /// compaction error.
    pub fn sync(&self) -> Result<()> {
        let table = match &self.placement {
            ChecksumPlacement::Sidecar(t) if t.is_durable() => Some(t),
            _ => None,
        };
        let barrier = table.map(|t| t.sync_barrier());
        self.store.sync()?;
        if let (Some(t), Some(b)) = (table, barrier) {
            t.settle(b)?;
        }
        Ok(())
    }

    /// Resizes the store to `page_count` pages (see [`PageStore::resize`]).
    /// The checksums, fences, unallocated marks and last-written LSNs of
    /// pages past the new end are dropped with them, so a page that comes
    /// back later is a new page. With a durable sidecar table the store is
    /// synced before the table forgets anything (durably, with a `drop`
    /// record), so that no crash can leave pages whose checksums are gone.
    ///
    /// Safe to call while reads, writes, scrubs and repairs run: see the
    /// [module docs](self#resizing). One resize runs at a time, and none
    /// runs during an adoption batch. It must not be called from a failure
    /// callback or a free-page answer (they may run under a scan that the
    /// store's resize waits for).
    ///
    /// # Errors
    /// The store's error ([`Error::Unsupported`] when it cannot change size);
    /// nothing is forgotten then. The sync's error (the store has its new
    /// size, nothing is forgotten: a later resize forgets it), or the
    /// table's log error (the table is then poisoned; everything else about
    /// the dropped pages is forgotten).
    pub fn resize(&self, page_count: u64) -> Result<()> {
        let _gate = self.resize_gate.write();
        let old = self.store.page_count();
        if page_count > old {
            // Pages `old..` do not exist yet, so nothing is in flight on them:
            // forget anything left about them before they appear.
            self.forget_past(old)?;
            self.store.resize(page_count)
        } else {
            // Shrink the store first (it may wait for a scan whose visits
            // take page locks, so no page lock is held here), then forget
            // with every page lock held: an operation on a dropped page has
            // either finished (its traces go now) or will find the page gone.
            self.store.resize(page_count)?;
            self.forget_past(page_count)
        }
    }

    /// Forgets everything about pages at and past `page_count`, with every
    /// page lock held.
    fn forget_past(&self, page_count: u64) -> Result<()> {
        if let ChecksumPlacement::Sidecar(table) = &self.placement {
            if table.is_durable() && table.has_pages_from(page_count) {
                // The store's new size is made durable before the table's
                // drop record is (with no page lock held, as for the resize).
                self.sync()?;
            }
        }
        let _all: Vec<MutexGuard<'_, ()>> = self.stripes.iter().map(|m| m.lock()).collect();
        let truncated = match &self.placement {
            ChecksumPlacement::Sidecar(table) => table.truncate(page_count),
            ChecksumPlacement::Trailer => Ok(()),
        };
        self.freed.truncate(page_count);
        self.sealed_here.truncate(page_count);
        self.registry.lock().forget_from(page_count);
        self.written_lsn.truncate(page_count);
        truncated
    }

    /// The LSN recorded in `bytes`, when a page-LSN reader is configured.
    #[must_use]
    pub fn page_lsn_of(&self, bytes: &[u8]) -> Option<Lsn> {
        self.page_lsn.as_ref().and_then(|f| f(bytes))
    }

    /// Whether a [page-LSN reader](DetectorConfig::page_lsn) is configured,
    /// so that [`page_lsn_of`](Self::page_lsn_of) can tell which of two
    /// copies of a page is newer.
    #[must_use]
    pub fn reads_page_lsns(&self) -> bool {
        self.page_lsn.is_some()
    }

    /// Verifies `bytes` as `page` (checksum, and staleness when a page-LSN
    /// reader is configured) without reading or recording anything.
    ///
    /// # Errors
    /// The verification error.
    pub fn verify(&self, page: PageId, bytes: &[u8]) -> Result<()> {
        self.verify_bytes(page, bytes)
    }

    /// The registry state of `page`, if it is known.
    #[must_use]
    pub fn page_state(&self, page: PageId) -> Option<PageState> {
        self.registry.lock().state(page)
    }

    /// Every registry entry, sorted by page.
    #[must_use]
    pub fn suspects(&self) -> Vec<(PageId, SuspectEntry)> {
        self.registry.lock().entries()
    }

    /// Pages in `state`, sorted.
    #[must_use]
    pub fn pages_in(&self, state: PageState) -> Vec<PageId> {
        self.registry.lock().pages_in(state)
    }

    /// Starts a repair of a fenced page. `None` when the page is not waiting
    /// for repair (not known corrupt, already repaired, or being repaired).
    pub fn begin_repair(&self, page: PageId) -> Option<RepairTicket<'_>> {
        let epoch = self.registry.lock().begin_repair(page)?;
        Some(RepairTicket {
            detector: self,
            page,
            epoch,
            open: true,
        })
    }

    /// Writes a repair copy: verifies it, and — unless the host rewrote the
    /// page since the repair began — writes it, syncs, re-reads and
    /// re-verifies, all with host writes to the page excluded.
    ///
    /// On `Ok` the ticket is finished (the page is `Repaired`, or the host's
    /// newer page stands). On `Err` the ticket is handed back so that the
    /// caller can try another copy or [`abandon_repair`](Self::abandon_repair).
    ///
    /// # Errors
    /// The copy's verification error (nothing was written); the store's error;
    /// a verification error of the re-read page (the write did not stick);
    /// [`Error::InvalidArgument`] for a ticket of another detector.
    pub fn commit_repair<'d>(&'d self, ticket: RepairTicket<'d>, copy: &[u8]) -> CommitResult<'d> {
        if let Err(e) = self.owns(&ticket) {
            return Err((ticket, e));
        }
        let page = ticket.page;
        let mut issued = false;
        let result = {
            let _g = self.stripe(page);
            if self.ticket_current(&ticket) {
                let written = self
                    .write_copy(page, copy, &mut issued)
                    .and_then(|()| self.store.sync())
                    .and_then(|()| self.check_written(page, copy));
                match written {
                    Ok(()) => Ok(self.finish_written(ticket)),
                    Err(e) => Err((ticket, e)),
                }
            } else {
                ticket.close();
                Ok(Commit::Superseded)
            }
        };
        if issued {
            self.notify_written([page]);
        }
        result
    }

    /// Writes the repair copies of a batch of pages and makes them durable
    /// with one [`sync`](PageStore::sync) of the store, with the promises of
    /// [`commit_repair`](Self::commit_repair) for each page:
    ///
    /// 1. Per page, with host writes to it excluded and its epoch current:
    ///    the copy is verified and written (not synced). A page the host
    ///    rewrote since its repair began is `Superseded` and not written.
    /// 2. One sync for every page written in step 1.
    /// 3. Per page, with host writes to it excluded: if its epoch is still
    ///    current (no host write since step 1), it is re-read and re-verified
    ///    (it must hold exactly the copy) and only then marked `Repaired`. A
    ///    host write between its repair write and the sync changed its epoch:
    ///    the host's bytes stand and the page is `Superseded`. Consecutive
    ///    pages are re-read together, up to 32 at a time with the write locks
    ///    of all of them held, with one [`read_pages`](PageStore::read_pages).
    ///
    /// No page is marked repaired before the sync that covers it returned.
    /// When the sync fails, every page written in step 1 fails with it (its
    /// ticket comes back with the sync error; none is marked repaired).
    ///
    /// Returns one result per entry of `batch`, in its order.
    pub fn commit_repairs<'d>(
        &'d self,
        batch: Vec<(RepairTicket<'d>, &[u8])>,
    ) -> Vec<CommitResult<'d>> {
        let mut results: Vec<Option<CommitResult<'d>>> = Vec::with_capacity(batch.len());
        let mut written: Vec<(usize, RepairTicket<'d>, &[u8])> = Vec::new();
        let mut issued_pages: Vec<PageId> = Vec::new();
        for (ticket, copy) in batch {
            let i = results.len();
            if let Err(e) = self.owns(&ticket) {
                results.push(Some(Err((ticket, e))));
                continue;
            }
            let _g = self.stripe(ticket.page);
            if !self.ticket_current(&ticket) {
                ticket.close();
                results.push(Some(Ok(Commit::Superseded)));
                continue;
            }
            let mut issued = false;
            let r = self.write_copy(ticket.page, copy, &mut issued);
            if issued {
                issued_pages.push(ticket.page);
            }
            match r {
                Ok(()) => {
                    results.push(None);
                    written.push((i, ticket, copy));
                }
                Err(e) => results.push(Some(Err((ticket, e)))),
            }
        }
        // Told before the sync and re-read: the bytes changed already.
        self.notify_written(issued_pages);
        if !written.is_empty() {
            let pages = written.len();
            match self.store.sync() {
                Err(e) => {
                    for (i, ticket, _) in written {
                        results[i] = Some(Err((ticket, batch_sync_error(&e, pages))));
                    }
                }
                Ok(()) => {
                    let mut run = Vec::new();
                    for item in written {
                        let follows = run.last().is_none_or(
                            |(_, t, _): &(usize, RepairTicket<'d>, &[u8])| {
                                t.page.0.checked_add(1) == Some(item.1.page.0)
                            },
                        );
                        if !follows || run.len() == REREAD_RUN_PAGES {
                            self.confirm_run(std::mem::take(&mut run), &mut results);
                        }
                        run.push(item);
                    }
                    self.confirm_run(run, &mut results);
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every entry of the batch has a result"))
            .collect()
    }

    /// Step 3 of a batch commit for a run of consecutive written pages: with
    /// the stripe locks of all of them held (taken in ascending stripe order,
    /// as every path that holds more than one takes them — a batch write,
    /// a resize — so this cannot deadlock), re-reads the
    /// run with one read and, per page whose epoch is still current, checks
    /// the bytes and marks it repaired. Falls back to a read per page when
    /// the run's read fails.
    fn confirm_run<'d>(
        &'d self,
        run: Vec<(usize, RepairTicket<'d>, &[u8])>,
        results: &mut [Option<CommitResult<'d>>],
    ) {
        let Some(first) = run.first().map(|(_, t, _)| t.page) else {
            return;
        };
        assert!(run.len() <= REREAD_RUN_PAGES);
        let mut stripes: Vec<usize> = run
            .iter()
            .map(|(_, t, _)| (t.page.0 % LOCK_STRIPES as u64) as usize)
            .collect();
        stripes.sort_unstable();
        debug_assert!(stripes.windows(2).all(|w| w[0] < w[1]), "distinct stripes");
        let _guards: Vec<MutexGuard<'_, ()>> =
            stripes.iter().map(|&s| self.stripes[s].lock()).collect();
        let ps = self.store.page_size();
        let mut back = vec![0u8; run.len() * ps];
        let read = self.store.read_pages(first, &mut back);
        for (k, (i, ticket, copy)) in run.into_iter().enumerate() {
            let r = if !self.ticket_current(&ticket) {
                ticket.close();
                Ok(Commit::Superseded)
            } else {
                let checked = match &read {
                    Ok(()) => self.check_back(ticket.page, copy, &back[k * ps..(k + 1) * ps]),
                    Err(_) => self.check_written(ticket.page, copy),
                };
                match checked {
                    Ok(()) => Ok(self.finish_written(ticket)),
                    Err(e) => Err((ticket, e)),
                }
            };
            results[i] = Some(r);
        }
    }

    /// Refuses a ticket issued by another detector.
    fn owns(&self, ticket: &RepairTicket<'_>) -> Result<()> {
        if std::ptr::eq(ticket.detector, self) {
            Ok(())
        } else {
            Err(Error::InvalidArgument {
                what: "ticket",
                reason: format!(
                    "the repair ticket of page {} was issued by another detector; commit it there",
                    ticket.page
                ),
            })
        }
    }

    /// Whether the ticket may still write (no host write since it began).
    /// Callers hold the page's stripe lock.
    fn ticket_current(&self, ticket: &RepairTicket<'_>) -> bool {
        self.registry
            .lock()
            .repair_current(ticket.page, ticket.epoch)
    }

    /// Verifies and writes a repair copy (no sync); sets `issued` when the
    /// write was issued to the store. The caller holds the page's stripe
    /// lock and has checked the ticket.
    fn write_copy(&self, page: PageId, copy: &[u8], issued: &mut bool) -> Result<()> {
        check_page_args(
            page,
            self.store.page_count(),
            copy.len(),
            self.store.page_size(),
        )?;
        self.verify_bytes(page, copy)?;
        *issued = true;
        self.store.write_page(page, copy)?;
        self.note_sealed_here(page);
        self.record_write_lsn(page, copy);
        Ok(())
    }

    /// Re-reads a page after its repair write was synced and checks that it
    /// verifies and holds exactly the copy. The caller holds the stripe lock.
    fn check_written(&self, page: PageId, copy: &[u8]) -> Result<()> {
        let mut back = vec![0u8; copy.len()];
        self.store.read_page(page, &mut back)?;
        self.check_back(page, copy, &back)
    }

    /// Checks bytes re-read after a repair write: they verify and are exactly
    /// the copy.
    fn check_back(&self, page: PageId, copy: &[u8], back: &[u8]) -> Result<()> {
        self.verify_bytes(page, back)?;
        if back != copy {
            return Err(Error::Irreparable {
                page,
                reason: "the page read back differs from the copy written".into(),
            });
        }
        Ok(())
    }

    /// Marks a checked, synced repair as done. The caller holds the stripe
    /// lock, so the epoch checked before cannot have changed.
    fn finish_written(&self, ticket: RepairTicket<'_>) -> Commit {
        let done = self
            .registry
            .lock()
            .finish_repair(ticket.page, ticket.epoch, true);
        debug_assert!(done, "the epoch changed under the stripe lock");
        ticket.close();
        Commit::Written
    }

    /// Replaces a page that verifies with a newer copy, but only if the page
    /// still holds exactly `expected` (the bytes the caller compared against):
    /// the compare, write, sync, re-read and re-verify happen with host writes
    /// to the page excluded, so a host write that landed after `expected` was
    /// read is never overwritten. Returns `Ok(false)`, writing nothing, when
    /// the page changed. Used by anti-entropy to adopt a replica's newer copy
    /// of a page whose local copy is valid but older.
    ///
    /// # Errors
    /// The copy's verification error (nothing was written); the store's
    /// error; a verification error of the re-read page (the write did not
    /// stick — the page is then recorded as corrupt and fenced).
    pub fn replace_if_unchanged(&self, page: PageId, expected: &[u8], copy: &[u8]) -> Result<bool> {
        check_page_args(
            page,
            self.store.page_count(),
            copy.len(),
            self.store.page_size(),
        )?;
        check_page_args(
            page,
            self.store.page_count(),
            expected.len(),
            self.store.page_size(),
        )?;
        self.verify_bytes(page, copy)?;
        let (outcome, failure) = {
            let _g = self.stripe(page);
            let mut current = vec![0u8; copy.len()];
            self.store.read_page(page, &mut current)?;
            if current != expected {
                return Ok(false);
            }
            let write = self.store.write_page(page, copy);
            if write.is_ok() {
                self.note_sealed_here(page);
                self.record_write_lsn(page, copy);
            }
            let written = write
                .and_then(|()| self.store.sync())
                .and_then(|()| self.store.read_page(page, &mut current))
                .and_then(|()| self.verify_bytes(page, &current));
            // The page has new contents now, whatever happened: old fences
            // and repairs in flight no longer apply.
            self.registry.lock().on_host_write(page);
            let verified = written.and_then(|()| {
                if current == copy {
                    Ok(())
                } else {
                    Err(Error::Irreparable {
                        page,
                        reason: "the page read back differs from the copy written".into(),
                    })
                }
            });
            match verified {
                Ok(()) => (Ok(true), None),
                // Recorded under the page's lock; reported after it is
                // released (a failure callback may read pages of its stripe).
                Err(e) => {
                    let failure = self.note_corrupt(page, &e, Observer::Scrub).1;
                    (Err(e), failure)
                }
            }
        };
        // Only a call that issued its write gets here.
        self.notify_written([page]);
        self.emit(failure);
        outcome
    }

    /// Ends a repair without writing: the page becomes `Irreparable` (unless
    /// the host rewrote it meanwhile) and stays fenced. Returns whether the
    /// page was marked irreparable (`false` also for a ticket of another
    /// detector, which is then released where it came from).
    pub fn abandon_repair(&self, ticket: RepairTicket<'_>) -> bool {
        if self.owns(&ticket).is_err() {
            return false;
        }
        let marked = self
            .registry
            .lock()
            .finish_repair(ticket.page, ticket.epoch, false);
        ticket.close();
        marked
    }

    /// Re-reads a fenced page and lifts the fence if it now verifies (the
    /// fault was transient). Returns the verdict. A page that does not
    /// verify and that the host now says is unallocated has nothing left to
    /// repair: its entry is dropped and the verdict is
    /// [`Verdict::Unallocated`].
    ///
    /// # Errors
    /// The store's read error; [`Error::PageOutOfRange`] for a page past the
    /// end.
    pub fn recheck(&self, page: PageId) -> Result<Verdict> {
        let mut buf = vec![0u8; self.store.page_size()];
        let free = self.is_unallocated(page);
        let _g = self.stripe(page);
        let page_count = self.store.page_count();
        if page.0 >= page_count {
            return Err(Error::PageOutOfRange { page, page_count });
        }
        let read = self.store.read_page(page, &mut buf);
        if free
            && read
                .as_ref()
                .map_or(true, |()| self.verify_bytes(page, &buf).is_err())
        {
            self.registry.lock().on_freed(page);
            self.stats.unallocated.fetch_add(1, Ordering::Relaxed);
            return Ok(Verdict::Unallocated);
        }
        read?;
        match self.verify_bytes(page, &buf) {
            Ok(()) => {
                self.registry.lock().on_verified(page);
                Ok(Verdict::Clean)
            }
            Err(error) => Ok(Verdict::Corrupt {
                reported: false,
                error,
            }),
        }
    }
}

/// The error each page of a batch gets when the batch's sync failed: the
/// store's error, kept as retryable or not as it was (an error is not `Clone`).
fn batch_sync_error(e: &Error, pages: usize) -> Error {
    match e {
        Error::Host {
            op,
            retryable,
            message,
        } => Error::Host {
            op,
            retryable: *retryable,
            message: format!("{message} (syncing a batch of {pages} repaired pages)"),
        },
        Error::Io { context, source } => Error::io(
            format!("{context} (syncing a batch of {pages} repaired pages)"),
            std::io::Error::new(source.kind(), source.to_string()),
        ),
        other => Error::io(
            format!("syncing a batch of {pages} repaired pages"),
            std::io::Error::other(other.to_string()),
        ),
    }
}

/// The detector is itself a [`PageStore`]: reads are verified
/// ([`read_verified`](CorruptionDetector::read_verified)) and writes are sealed
/// ([`write_sealed`](CorruptionDetector::write_sealed), on a copy of the
/// caller's bytes; batches with
/// [`write_sealed_batch`](CorruptionDetector::write_sealed_batch)). Hand it to
/// any component that writes pages of a protected store (rollback, restore)
/// so that checksums stay current and fences lift.
///
/// It [verifies its reads](PageStore::verifies_reads), so a snapshot taken
/// through it is marked verified; and it refuses to seal bytes from a copy
/// nobody verified ([`PageStore::check_unverified`]): in the trailer
/// placement such bytes must verify against their own trailer (a page
/// sealed before the copy was taken carries it), in the sidecar placement
/// they are refused, because the table keeps only the checksums of the
/// pages as they are now.
impl PageStore for CorruptionDetector {
    fn page_size(&self) -> usize {
        self.store.page_size()
    }

    fn page_count(&self) -> u64 {
        self.store.page_count()
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.read_verified(page, buf)
    }

    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        let mut copy = data.to_vec();
        self.write_sealed(page, &mut copy)
    }

    fn write_pages(&self, pages: &mut [(PageId, &mut [u8])]) -> Result<()> {
        self.write_sealed_batch(pages)
    }

    fn verifies_reads(&self) -> bool {
        true
    }

    fn check_unverified(&self, page: PageId, bytes: &[u8]) -> Result<()> {
        // Only the bytes: the page may lie past the end of a store that a
        // restore has not grown yet.
        let page_size = self.store.page_size();
        if bytes.len() != page_size {
            return Err(Error::BufferSize {
                expected: page_size,
                actual: bytes.len(),
            });
        }
        match &self.placement {
            ChecksumPlacement::Trailer => crate::checksum::trailer::verify(page, bytes).map_err(|e| {
                Error::UnverifiedCopy {
                    page,
                    reason: format!(
                        "its own checksum trailer does not verify ({e}), so it was damaged before the copy was taken or in it; restore a snapshot taken through the detector, or restore into the raw store and repair the page from a replica"
                    ),
                }
            }),
            ChecksumPlacement::Sidecar(_) => Err(Error::UnverifiedCopy {
                page,
                reason: "the sidecar table keeps only the checksums of the pages as they are now, so it cannot check bytes from a copy that was not read through the detector; restore into the raw store and adopt it into a new sidecar table after the host's own integrity check (the current table describes the pages as they were before the restore), or take snapshots through the detector (`Consistency::Paused` with the detector as the store, or a `View` of it)".into(),
            }),
        }
    }

    fn sync(&self) -> Result<()> {
        CorruptionDetector::sync(self)
    }

    fn resize(&self, page_count: u64) -> Result<()> {
        CorruptionDetector::resize(self, page_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::ChecksumTable;
    use crate::store::MemStore;
    use crate::testing::{Damage, FaultyStore, ReadFault};

    fn setup(placement: ChecksumPlacement) -> (Arc<FaultyStore>, CorruptionDetector) {
        let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 8).unwrap())));
        let det = DetectorConfig::new(placement).build(raw.clone()).unwrap();
        for p in 0..8 {
            let mut b = vec![p as u8 + 1; 256];
            det.write_sealed(PageId(p), &mut b).unwrap();
        }
        (raw, det)
    }

    #[test]
    fn transient_read_fault_is_not_corruption() {
        let (raw, det) = setup(ChecksumPlacement::Trailer);
        raw.fail_reads(Some(PageId(3)), ReadFault::TransientBitFlip, 1);
        let mut b = vec![0u8; 256];
        det.read_verified(PageId(3), &mut b).unwrap();
        assert_eq!(b[0], 4);
        assert_eq!(det.stats().transient, 1);
        assert!(det.failures().try_recv().is_err());
    }

    #[test]
    fn corrupt_page_fenced_and_reported_once() {
        for placement in [
            ChecksumPlacement::Trailer,
            ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(256).unwrap())),
        ] {
            let (raw, det) = setup(placement);
            raw.damage(PageId(5), Damage::BitFlip { byte: 10, bit: 1 })
                .unwrap();
            let mut b = vec![0u8; 256];
            assert!(det
                .read_verified(PageId(5), &mut b)
                .unwrap_err()
                .is_corruption());
            assert!(matches!(
                det.read_verified(PageId(5), &mut b),
                Err(Error::PageFenced { .. })
            ));
            assert_eq!(det.failures().try_iter().count(), 1);
            // host rewrite lifts the fence
            let mut fresh = vec![42u8; 256];
            det.write_sealed(PageId(5), &mut fresh).unwrap();
            det.read_verified(PageId(5), &mut b).unwrap();
            assert_eq!(b[0], 42);
        }
    }

    #[test]
    fn repair_superseded_by_host_write() {
        let (raw, det) = setup(ChecksumPlacement::Trailer);
        let mut good = vec![0u8; 256];
        raw.read_page(PageId(2), &mut good).unwrap();
        raw.damage(PageId(2), Damage::Zero).unwrap();
        let mut b = vec![0u8; 256];
        assert!(det.read_verified(PageId(2), &mut b).is_err());
        let ticket = det.begin_repair(PageId(2)).unwrap();
        let mut newer = vec![99u8; 256];
        det.write_sealed(PageId(2), &mut newer).unwrap();
        assert_eq!(
            det.commit_repair(ticket, &good).unwrap(),
            Commit::Superseded
        );
        det.read_verified(PageId(2), &mut b).unwrap();
        assert_eq!(b[0], 99, "the host's newer write stands");
    }

    #[test]
    fn lost_write_found_with_page_lsn() {
        let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 4).unwrap())));
        let lsn: PageLsnFn =
            Arc::new(|b: &[u8]| Some(Lsn(u64::from_le_bytes(b[..8].try_into().unwrap()))));
        let det = DetectorConfig::new(ChecksumPlacement::Trailer)
            .page_lsn(lsn)
            .build(raw.clone())
            .unwrap();
        let mut b = vec![1u8; 256];
        b[..8].copy_from_slice(&5u64.to_le_bytes());
        det.write_sealed(PageId(1), &mut b).unwrap();
        raw.fail_next_write(Some(PageId(1)), crate::testing::WriteFault::Lost);
        b[..8].copy_from_slice(&9u64.to_le_bytes());
        det.write_sealed(PageId(1), &mut b).unwrap();
        let err = det.read_verified(PageId(1), &mut b).unwrap_err();
        assert!(
            matches!(
                err,
                Error::StalePage {
                    found: Lsn(5),
                    expected: Lsn(9),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn persistent_read_error_is_recorded() {
        let (raw, det) = setup(ChecksumPlacement::Trailer);
        raw.fail_reads(Some(PageId(1)), ReadFault::Eio, 2);
        let mut b = vec![0u8; 256];
        assert!(matches!(
            det.read_verified(PageId(1), &mut b),
            Err(Error::Io { .. })
        ));
        assert_eq!(det.page_state(PageId(1)), Some(PageState::Suspect));
        assert_eq!(det.failures().try_iter().count(), 1);
    }

    #[test]
    fn detector_as_page_store_seals_writes() {
        let (raw, det) = setup(ChecksumPlacement::Trailer);
        let det: Arc<dyn PageStore> = Arc::new(det);
        det.write_page(PageId(1), &[3u8; 256]).unwrap();
        let mut b = vec![0u8; 256];
        raw.read_page(PageId(1), &mut b).unwrap();
        crate::checksum::trailer::verify(PageId(1), &b).unwrap();
        det.read_page(PageId(1), &mut b).unwrap();
        assert_eq!(b[0], 3);
    }

    #[test]
    fn replace_if_unchanged_never_overwrites_a_newer_write() {
        let (raw, det) = setup(ChecksumPlacement::Trailer);
        let mut old = vec![0u8; 256];
        raw.read_page(PageId(4), &mut old).unwrap();
        let mut newer = vec![77u8; 256];
        crate::checksum::trailer::seal(PageId(4), &mut newer).unwrap();
        // The host writes in between: the replace must not happen.
        det.write_sealed(PageId(4), &mut vec![55u8; 256]).unwrap();
        assert!(!det.replace_if_unchanged(PageId(4), &old, &newer).unwrap());
        let mut b = vec![0u8; 256];
        det.read_verified(PageId(4), &mut b).unwrap();
        assert_eq!(b[0], 55);
        // Unchanged: the newer copy replaces it.
        raw.read_page(PageId(4), &mut old).unwrap();
        assert!(det.replace_if_unchanged(PageId(4), &old, &newer).unwrap());
        det.read_verified(PageId(4), &mut b).unwrap();
        assert_eq!(b, newer);
        // A copy that does not verify is refused before anything is read.
        let mut junk = newer.clone();
        junk[3] ^= 1;
        assert!(det
            .replace_if_unchanged(PageId(4), &newer, &junk)
            .unwrap_err()
            .is_corruption());
    }

    #[test]
    fn host_read_retries_an_irreparable_page_once_per_episode() {
        let (raw, det) = setup(ChecksumPlacement::Trailer);
        raw.damage(PageId(3), Damage::Zero).unwrap();
        let mut b = vec![0u8; 256];
        assert!(det.read_verified(PageId(3), &mut b).is_err());
        let ticket = det.begin_repair(PageId(3)).unwrap();
        assert!(det.abandon_repair(ticket));
        assert_eq!(det.failures().try_iter().count(), 1);
        // The host's next read renews it: reported again, waiting for repair.
        assert!(matches!(
            det.read_verified(PageId(3), &mut b),
            Err(Error::PageFenced { .. })
        ));
        assert_eq!(det.page_state(PageId(3)), Some(PageState::Suspect));
        assert_eq!(det.failures().try_iter().count(), 1);
        // Further reads while it waits do not report again.
        assert!(det.read_verified(PageId(3), &mut b).is_err());
        assert_eq!(det.failures().try_iter().count(), 0);
    }

    #[test]
    fn a_dropped_ticket_gives_the_page_back_to_suspect() {
        for placement in placements() {
            let (raw, det) = setup(placement);
            raw.damage(PageId(2), Damage::Zero).unwrap();
            let mut b = vec![0u8; 256];
            assert!(det.read_verified(PageId(2), &mut b).is_err());
            assert_eq!(det.failures().try_iter().count(), 1);
            drop(det.begin_repair(PageId(2)).unwrap());
            assert_eq!(det.page_state(PageId(2)), Some(PageState::Suspect));
            // Also when the repair unwinds.
            let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ticket = det.begin_repair(PageId(2)).unwrap();
                panic!("the repair code panicked");
            }));
            assert!(unwound.is_err());
            assert_eq!(det.page_state(PageId(2)), Some(PageState::Suspect));
            assert_eq!(det.failures().try_iter().count(), 0, "not reported again");
            // A ticket outlived by a host write changes nothing when dropped.
            let ticket = det.begin_repair(PageId(2)).unwrap();
            det.write_sealed(PageId(2), &mut vec![9u8; 256]).unwrap();
            drop(ticket);
            assert_eq!(det.page_state(PageId(2)), None);
            det.read_verified(PageId(2), &mut b).unwrap();
        }
    }

    #[test]
    fn a_ticket_of_another_detector_is_refused() {
        let (raw, det) = setup(ChecksumPlacement::Trailer);
        let other = DetectorConfig::new(ChecksumPlacement::Trailer)
            .build(raw.clone())
            .unwrap();
        raw.damage(PageId(1), Damage::Zero).unwrap();
        let mut b = vec![0u8; 256];
        assert!(det.read_verified(PageId(1), &mut b).is_err());
        let ticket = det.begin_repair(PageId(1)).unwrap();
        let mut good = vec![2u8; 256];
        crate::checksum::trailer::seal(PageId(1), &mut good).unwrap();
        let (ticket, err) = other.commit_repair(ticket, &good).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { what: "ticket", .. }));
        assert!(!other.abandon_repair(ticket), "released where it came from");
        assert_eq!(det.page_state(PageId(1)), Some(PageState::Suspect));
    }

    #[test]
    fn batch_commit_syncs_once_and_a_failed_sync_repairs_nothing() {
        for placement in placements() {
            let (raw, det) = setup(placement);
            let mut good = Vec::new();
            for p in [1u64, 3, 5] {
                let mut b = vec![0u8; 256];
                raw.read_page(PageId(p), &mut b).unwrap();
                good.push(b);
                raw.damage(PageId(p), Damage::Zero).unwrap();
                let mut b = vec![0u8; 256];
                assert!(det.read_verified(PageId(p), &mut b).is_err());
            }
            fn tickets(det: &CorruptionDetector) -> Vec<RepairTicket<'_>> {
                [1u64, 3, 5]
                    .iter()
                    .map(|&p| det.begin_repair(PageId(p)).unwrap())
                    .collect()
            }
            // A failed sync: every page comes back with an error, none repaired.
            raw.fail_syncs(1);
            let batch = tickets(&det)
                .into_iter()
                .zip(good.iter().map(Vec::as_slice))
                .collect();
            let results = det.commit_repairs(batch);
            assert_eq!(raw.counts().syncs, 1);
            let mut back = Vec::new();
            for r in results {
                let (ticket, e) = r.unwrap_err();
                assert!(matches!(e, Error::Io { .. }), "{e}");
                assert_eq!(det.page_state(ticket.page()), Some(PageState::Repairing));
                back.push(ticket);
            }
            drop(back);
            // A copy that does not verify is refused and not written; the
            // others share one sync.
            let mut batch: Vec<(RepairTicket<'_>, &[u8])> = tickets(&det)
                .into_iter()
                .zip(good.iter().map(Vec::as_slice))
                .collect();
            let junk = vec![7u8; 256];
            batch[1].1 = &junk;
            let writes = raw.counts().writes;
            let results = det.commit_repairs(batch);
            assert_eq!(raw.counts().writes - writes, 2);
            assert_eq!(raw.counts().syncs, 2);
            assert!(matches!(results[0], Ok(Commit::Written)));
            assert!(matches!(&results[1], Err((_, e)) if e.is_corruption()));
            assert!(matches!(results[2], Ok(Commit::Written)));
            drop(results);
            assert_eq!(det.page_state(PageId(1)), Some(PageState::Repaired));
            assert_eq!(det.page_state(PageId(3)), Some(PageState::Suspect));
            let mut b = vec![0u8; 256];
            det.read_verified(PageId(5), &mut b).unwrap();
            assert_eq!(b, good[2]);
        }
    }

    #[test]
    fn batch_commit_rereads_runs_across_stripes_and_falls_back_per_page() {
        for placement in placements() {
            let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 300).unwrap())));
            let det = DetectorConfig::new(placement).build(raw.clone()).unwrap();
            // 240..290 wraps around the stripes (page 256 shares page 0's)
            // and is longer than one re-read run; 295 stands alone.
            let pages: Vec<u64> = (240..290).chain([295]).collect();
            let mut good = Vec::new();
            for &p in &pages {
                let mut b = vec![(p % 251) as u8 + 1; 256];
                det.write_sealed(PageId(p), &mut b).unwrap();
                good.push(b);
                raw.damage(PageId(p), Damage::Junk { seed: p }).unwrap();
                let mut b = vec![0u8; 256];
                assert!(det.read_verified(PageId(p), &mut b).is_err());
            }
            // One re-read fails: its run is re-read page by page.
            raw.fail_reads(Some(PageId(270)), ReadFault::Eio, 1);
            let injected = raw.counts().injected;
            let batch = pages
                .iter()
                .map(|&p| det.begin_repair(PageId(p)).unwrap())
                .zip(good.iter().map(Vec::as_slice))
                .collect();
            let results = det.commit_repairs(batch);
            assert_eq!(raw.counts().syncs, 1);
            assert_eq!(raw.counts().injected, injected + 1, "the read fault fired");
            assert!(results.iter().all(|r| matches!(r, Ok(Commit::Written))));
            let mut b = vec![0u8; 256];
            for (&p, want) in pages.iter().zip(&good) {
                assert_eq!(det.page_state(PageId(p)), Some(PageState::Repaired));
                det.read_verified(PageId(p), &mut b).unwrap();
                assert_eq!(&b, want);
            }
        }
    }

    #[test]
    fn expected_lsn_hook_finds_a_lost_write_after_a_restart() {
        for placement in placements() {
            let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 4).unwrap())));
            let lsn: PageLsnFn =
                Arc::new(|b: &[u8]| Some(Lsn(u64::from_le_bytes(b[..8].try_into().unwrap()))));
            let build = |hook: Option<ExpectedLsnFn>| {
                let mut cfg = DetectorConfig::new(placement.clone()).page_lsn(lsn.clone());
                if let Some(h) = hook {
                    cfg = cfg.expected_page_lsn(h);
                }
                cfg.build(raw.clone()).unwrap()
            };
            let det = build(None);
            let mut b = vec![1u8; 256];
            b[..8].copy_from_slice(&5u64.to_le_bytes());
            det.write_sealed(PageId(1), &mut b).unwrap();
            if let ChecksumPlacement::Trailer = placement {
                // Under a trailer the old page verifies by checksum; only the
                // LSN tells that the write of LSN 9 was lost.
                raw.fail_next_write(Some(PageId(1)), crate::testing::WriteFault::Lost);
                b[..8].copy_from_slice(&9u64.to_le_bytes());
                det.write_sealed(PageId(1), &mut b).unwrap();
            }
            // Restart: without the hook nothing is known.
            drop(det);
            let forgetful = build(None);
            assert_eq!(forgetful.last_written_lsn(PageId(1)), None);
            let calls = Arc::new(AtomicU64::new(0));
            let host_knows: ExpectedLsnFn = {
                let calls = calls.clone();
                Arc::new(move |p: PageId| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    (p == PageId(1)).then_some(Lsn(9))
                })
            };
            let det = build(Some(host_knows));
            assert_eq!(det.last_written_lsn(PageId(1)), Some(Lsn(9)));
            assert_eq!(det.last_written_lsn(PageId(1)), Some(Lsn(9)));
            assert_eq!(calls.load(Ordering::Relaxed), 1, "answer remembered");
            assert_eq!(det.last_written_lsn(PageId(2)), None);
            assert_eq!(det.last_written_lsn(PageId(u64::MAX)), None);
            let err = det.read_verified(PageId(1), &mut b).unwrap_err();
            assert!(err.is_corruption(), "{err}");
            if let ChecksumPlacement::Trailer = placement {
                assert!(
                    matches!(
                        err,
                        Error::StalePage {
                            found: Lsn(5),
                            expected: Lsn(9),
                            ..
                        }
                    ),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn expected_lsn_hook_needs_a_page_lsn_reader() {
        let raw = Arc::new(MemStore::new(256, 2).unwrap());
        let hook: ExpectedLsnFn = Arc::new(|_| Some(Lsn(1)));
        assert!(matches!(
            DetectorConfig::new(ChecksumPlacement::Trailer)
                .expected_page_lsn(hook)
                .build(raw),
            Err(Error::InvalidConfig {
                field: "expected_page_lsn",
                ..
            })
        ));
    }

    /// A page-LSN reader over the first 8 bytes (0: none).
    fn lsn_in_head() -> PageLsnFn {
        Arc::new(|b: &[u8]| {
            let l = u64::from_le_bytes(b[..8].try_into().unwrap());
            (l != 0).then_some(Lsn(l))
        })
    }

    fn with_lsn(lsn: u64, fill: u8) -> Vec<u8> {
        let mut b = vec![fill; 256];
        b[..8].copy_from_slice(&lsn.to_le_bytes());
        b
    }

    #[test]
    fn the_last_write_defines_the_expected_lsn_whatever_its_lsn() {
        for placement in placements() {
            let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 8).unwrap())));
            let det = DetectorConfig::new(placement.clone())
                .page_lsn(lsn_in_head())
                .build(raw.clone())
                .unwrap();
            let mut b = vec![0u8; 256];
            // A write, then one with an older LSN (a before-image put back).
            det.write_sealed(PageId(1), &mut with_lsn(9, 1)).unwrap();
            det.write_sealed(PageId(1), &mut with_lsn(5, 2)).unwrap();
            assert_eq!(det.last_written_lsn(PageId(1)), Some(Lsn(5)));
            det.read_verified(PageId(1), &mut b).unwrap();
            // In a batch, the last bytes of a page define it.
            det.write_sealed_batch(&mut [
                (PageId(2), &mut with_lsn(7, 3)[..]),
                (PageId(2), &mut with_lsn(3, 4)[..]),
            ])
            .unwrap();
            assert_eq!(det.last_written_lsn(PageId(2)), Some(Lsn(3)));
            det.read_verified(PageId(2), &mut b).unwrap();
            // A failed write defines nothing: the page keeps its bytes.
            raw.fail_next_write(Some(PageId(2)), crate::testing::WriteFault::Eio);
            assert!(det.write_sealed(PageId(2), &mut with_lsn(8, 5)).is_err());
            assert_eq!(det.last_written_lsn(PageId(2)), Some(Lsn(3)));
            // A repair commit writes a verified copy: its LSN.
            let mut good = with_lsn(6, 6);
            det.write_sealed(PageId(3), &mut good).unwrap();
            raw.damage(PageId(3), Damage::Junk { seed: 3 }).unwrap();
            assert!(det.read_verified(PageId(3), &mut b).is_err());
            let ticket = det.begin_repair(PageId(3)).unwrap();
            assert!(matches!(
                det.commit_repair(ticket, &good),
                Ok(Commit::Written)
            ));
            assert_eq!(det.last_written_lsn(PageId(3)), Some(Lsn(6)));
            // A replacement by a newer copy: its LSN.
            if let ChecksumPlacement::Trailer = placement {
                let mut newer = with_lsn(11, 7);
                crate::checksum::trailer::seal(PageId(3), &mut newer).unwrap();
                assert!(det.replace_if_unchanged(PageId(3), &good, &newer).unwrap());
                assert_eq!(det.last_written_lsn(PageId(3)), Some(Lsn(11)));
            }
            // Bytes without an LSN expect nothing.
            det.write_sealed(PageId(4), &mut with_lsn(0, 8)).unwrap();
            assert_eq!(det.last_written_lsn(PageId(4)), None);
            // Lost writes are still caught (trailer: the old page verifies
            // by checksum, only its LSN tells).
            if let ChecksumPlacement::Trailer = placement {
                raw.fail_next_write(Some(PageId(1)), crate::testing::WriteFault::Lost);
                det.write_sealed(PageId(1), &mut with_lsn(12, 9)).unwrap();
                assert!(matches!(
                    det.read_verified(PageId(1), &mut b),
                    Err(Error::StalePage {
                        found: Lsn(5),
                        expected: Lsn(12),
                        ..
                    })
                ));
            }
            // Page 3's damage, and in the trailer placement the lost write.
            let reports = if let ChecksumPlacement::Trailer = placement {
                2
            } else {
                1
            };
            assert_eq!(det.stats().corrupt_reported, reports);
        }
    }

    #[test]
    fn the_expectation_tells_the_last_write_from_the_hosts_floor() {
        for placement in placements() {
            let raw = Arc::new(MemStore::new(256, 4).unwrap());
            let calls = Arc::new(AtomicU64::new(0));
            let hook: ExpectedLsnFn = {
                let calls = calls.clone();
                Arc::new(move |p: PageId| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    (p != PageId(3)).then_some(Lsn(4))
                })
            };
            let det = DetectorConfig::new(placement.clone())
                .page_lsn(lsn_in_head())
                .expected_page_lsn(hook)
                .build(raw.clone())
                .unwrap();
            // Nothing written in this process: the host's floor, asked once.
            assert_eq!(
                det.lsn_expectation(PageId(1)),
                LsnExpectation::AtLeast(Lsn(4))
            );
            assert_eq!(
                det.lsn_expectation(PageId(1)),
                LsnExpectation::AtLeast(Lsn(4))
            );
            assert_eq!(calls.load(Ordering::Relaxed), 1);
            assert_eq!(det.lsn_expectation(PageId(3)), LsnExpectation::Nothing);
            // A write, newer or older than the floor, is the exact truth.
            det.write_sealed(PageId(1), &mut with_lsn(9, 1)).unwrap();
            assert_eq!(
                det.lsn_expectation(PageId(1)),
                LsnExpectation::Exact(Lsn(9))
            );
            det.write_sealed(PageId(1), &mut with_lsn(2, 2)).unwrap();
            assert_eq!(
                det.lsn_expectation(PageId(1)),
                LsnExpectation::Exact(Lsn(2))
            );
            assert_eq!(det.last_written_lsn(PageId(1)), Some(Lsn(2)));
            // A write before the hook was ever asked: the hook is not asked.
            det.write_sealed(PageId(2), &mut with_lsn(6, 3)).unwrap();
            assert_eq!(
                det.lsn_expectation(PageId(2)),
                LsnExpectation::Exact(Lsn(6))
            );
            assert_eq!(calls.load(Ordering::Relaxed), 2, "page 3 only");
            // A write without an LSN expects nothing, floor or not.
            det.write_sealed(PageId(1), &mut with_lsn(0, 4)).unwrap();
            assert_eq!(det.lsn_expectation(PageId(1)), LsnExpectation::Nothing);
            assert_eq!(det.last_written_lsn(PageId(1)), None);
            // Verification checks the floor either way: a newer local page
            // is not refused by a read (only a repair chooses).
            let mut b = vec![0u8; 256];
            det.write_sealed(PageId(2), &mut with_lsn(6, 3)).unwrap();
            det.read_verified(PageId(2), &mut b).unwrap();
            // A forgotten page has no last write: the floor again.
            det.forget(PageId(2)).unwrap();
            assert_eq!(
                det.lsn_expectation(PageId(2)),
                LsnExpectation::AtLeast(Lsn(4))
            );
            assert_eq!(
                det.lsn_expectation(PageId(u64::MAX)),
                LsnExpectation::AtLeast(Lsn(4))
            );
            // Without a page-LSN reader nothing is ever expected.
            let plain = DetectorConfig::new(placement).build(raw.clone()).unwrap();
            plain.write_sealed(PageId(1), &mut with_lsn(9, 5)).unwrap();
            assert_eq!(plain.lsn_expectation(PageId(1)), LsnExpectation::Nothing);
        }
    }

    #[test]
    fn adoption_leaves_the_expected_lsn_and_a_stale_adopted_page_is_refused() {
        for placement in placements() {
            let raw = Arc::new(MemStore::new(256, 2).unwrap());
            // Written before the library: payload with LSN 2, the trailer
            // bytes free.
            let mut old = with_lsn(2, 1);
            old[256 - crate::checksum::TRAILER_LEN..].fill(0);
            raw.write_page(PageId(1), &old).unwrap();
            let hook: ExpectedLsnFn = Arc::new(|p| (p == PageId(1)).then_some(Lsn(4)));
            let det = DetectorConfig::new(placement)
                .page_lsn(lsn_in_head())
                .expected_page_lsn(hook)
                .build(raw.clone())
                .unwrap();
            let report = det.adopt(AdoptOptions::new()).unwrap();
            assert_eq!(report.sealed, 1);
            assert_eq!(
                det.last_written_lsn(PageId(1)),
                Some(Lsn(4)),
                "the floor stands"
            );
            let mut b = vec![0u8; 256];
            assert!(matches!(
                det.read_verified(PageId(1), &mut b),
                Err(Error::StalePage {
                    found: Lsn(2),
                    expected: Lsn(4),
                    ..
                })
            ));
        }
    }

    #[test]
    fn a_failure_callback_may_use_the_stripe_of_the_page_it_reports() {
        for placement in placements() {
            let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 8).unwrap())));
            let cell: Arc<std::sync::OnceLock<std::sync::Weak<CorruptionDetector>>> =
                Arc::default();
            let seen = Arc::new(AtomicU64::new(0));
            let callback: FailureCallback = {
                let (cell, seen) = (cell.clone(), seen.clone());
                Arc::new(move |f: &Failure| {
                    let FailureKind::CorruptPage { page } = f.kind else {
                        return;
                    };
                    if let Some(det) = cell.get().and_then(std::sync::Weak::upgrade) {
                        // Takes the stripe lock of the page reported.
                        let _ = det.recheck(page);
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            let det = Arc::new(
                DetectorConfig::new(placement)
                    .on_failure(callback)
                    .build(raw.clone())
                    .unwrap(),
            );
            cell.set(Arc::downgrade(&det)).unwrap();
            let mut current = vec![3u8; 256];
            det.write_sealed(PageId(2), &mut current).unwrap();
            // The replacement's sync fails: recorded as a corruption.
            raw.fail_syncs(1);
            let (tx, rx) = crossbeam_channel::bounded(1);
            let d = det.clone();
            std::thread::spawn(move || {
                let copy = current.clone();
                let _ = tx.send(d.replace_if_unchanged(PageId(2), &current, &copy).is_err());
            });
            let failed = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .expect("the report was sent under the page's lock: the callback deadlocked");
            assert!(failed);
            assert_eq!(seen.load(Ordering::Relaxed), 1);
        }
    }

    #[test]
    fn the_write_observer_hears_every_writer() {
        for placement in placements() {
            let trailer = matches!(placement, ChecksumPlacement::Trailer);
            let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 8).unwrap())));
            let heard: Arc<Mutex<Vec<u64>>> = Arc::default();
            let observer: WriteObserverFn = {
                let heard = heard.clone();
                Arc::new(move |p: PageId| heard.lock().push(p.0))
            };
            let det = DetectorConfig::new(placement)
                .on_write(observer)
                .build(raw.clone())
                .unwrap();
            let take = || std::mem::take(&mut *heard.lock());
            det.write_sealed(PageId(1), &mut vec![1u8; 256]).unwrap();
            assert_eq!(take(), [1]);
            det.write_sealed_batch(&mut [
                (PageId(2), &mut vec![2u8; 256][..]),
                (PageId(3), &mut vec![3u8; 256][..]),
            ])
            .unwrap();
            assert_eq!(take(), [2, 3]);
            // A failed write is told too: the page's bytes are unknown.
            raw.fail_next_write(Some(PageId(3)), crate::testing::WriteFault::Eio);
            assert!(det.write_sealed(PageId(3), &mut vec![4u8; 256]).is_err());
            assert_eq!(take(), [3]);
            // What a restore and a rollback write through.
            PageStore::write_pages(&det, &mut [(PageId(4), &mut vec![5u8; 256][..])]).unwrap();
            crate::rollback::PageWriter::write_page(&det, PageId(5), &mut vec![6u8; 256]).unwrap();
            assert_eq!(take(), [4, 5]);
            // A repair commit, single and batched.
            let mut good = vec![0u8; 256];
            raw.read_page(PageId(1), &mut good).unwrap();
            raw.damage(PageId(1), Damage::Junk { seed: 1 }).unwrap();
            assert!(det.read_verified(PageId(1), &mut vec![0u8; 256]).is_err());
            let ticket = det.begin_repair(PageId(1)).unwrap();
            assert!(matches!(
                det.commit_repair(ticket, &good),
                Ok(Commit::Written)
            ));
            raw.damage(PageId(1), Damage::Junk { seed: 2 }).unwrap();
            assert!(det.read_verified(PageId(1), &mut vec![0u8; 256]).is_err());
            let ticket = det.begin_repair(PageId(1)).unwrap();
            let results = det.commit_repairs(vec![(ticket, &good[..])]);
            assert!(matches!(results[0], Ok(Commit::Written)));
            drop(results);
            assert_eq!(take(), [1, 1]);
            assert!(det.replace_if_unchanged(PageId(1), &good, &good).unwrap());
            assert_eq!(take(), [1]);
            // Adoption: a trailer written in place changes the bytes; a
            // sidecar claim does not.
            det.resize(7).unwrap();
            det.resize(8).unwrap();
            let mut host = vec![9u8; 256];
            host[256 - crate::checksum::TRAILER_LEN..].fill(0);
            raw.write_page(PageId(7), &host).unwrap();
            det.forget(PageId(6)).unwrap();
            let report = det.adopt(AdoptOptions::new()).unwrap();
            assert_eq!(report.sealed, 1);
            let want: &[u64] = if trailer { &[7] } else { &[] };
            assert_eq!(take(), want);
        }
    }

    #[test]
    fn sidecar_failed_write_keeps_the_old_checksum() {
        let table = Arc::new(ChecksumTable::new(256).unwrap());
        let (raw, det) = setup(ChecksumPlacement::Sidecar(table));
        raw.fail_next_write(Some(PageId(2)), crate::testing::WriteFault::NoSpace);
        assert!(det.write_sealed(PageId(2), &mut vec![9u8; 256]).is_err());
        let mut b = vec![0u8; 256];
        det.read_verified(PageId(2), &mut b).unwrap();
        assert_eq!(b[0], 3, "the old page still verifies");
    }

    #[test]
    fn resize_forgets_checksums_and_fences_of_dropped_pages() {
        for placement in [
            ChecksumPlacement::Trailer,
            ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(256).unwrap())),
        ] {
            let (raw, det) = setup(placement.clone());
            raw.damage(PageId(6), Damage::BitFlip { byte: 3, bit: 0 })
                .unwrap();
            let mut b = vec![0u8; 256];
            assert!(det.read_verified(PageId(6), &mut b).is_err());
            det.resize(4).unwrap();
            assert_eq!(
                det.page_state(PageId(6)),
                None,
                "fence dropped with the page"
            );
            if let ChecksumPlacement::Sidecar(t) = &placement {
                assert_eq!(t.get(PageId(5)), None, "checksum dropped with the page");
                assert!(t.get(PageId(3)).is_some());
            }
            det.read_verified(PageId(3), &mut b).unwrap();
            det.resize(8).unwrap();
            // A page that comes back is new: unwritten, so it fails as zeroed
            // (or as missing its checksum), and a write seals it afresh.
            assert!(det.read_verified(PageId(6), &mut b).is_err());
            det.write_sealed(PageId(6), &mut vec![5u8; 256]).unwrap();
            det.read_verified(PageId(6), &mut b).unwrap();
            assert_eq!(b[0], 5);
        }
    }

    /// A durable sidecar table on a crash-simulating directory.
    fn durable(files: &Arc<crate::testing::CrashFiles>) -> Arc<ChecksumTable> {
        Arc::new(
            crate::checksum::TableConfig::new(256)
                .open_on(files.clone(), "sums")
                .unwrap(),
        )
    }

    /// Every placement that seals pages: the trailer, an in-memory sidecar
    /// table and a durable one.
    fn placements() -> Vec<ChecksumPlacement> {
        vec![
            ChecksumPlacement::Trailer,
            ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(256).unwrap())),
            ChecksumPlacement::Sidecar(durable(&Arc::new(crate::testing::CrashFiles::new()))),
        ]
    }

    #[test]
    fn a_batch_is_sealed_whole_and_written_up_to_the_first_failure() {
        for placement in placements() {
            let (raw, det) = setup(placement.clone());
            let (mut a, mut b, mut c) = (vec![11u8; 256], vec![12u8; 256], vec![13u8; 256]);
            raw.fail_next_write(Some(PageId(5)), crate::testing::WriteFault::Eio);
            let err = det
                .write_sealed_batch(&mut [
                    (PageId(1), &mut a[..]),
                    (PageId(5), &mut b[..]),
                    (PageId(6), &mut c[..]),
                ])
                .unwrap_err();
            assert!(matches!(err, Error::Io { .. }), "{placement:?}: {err}");
            let mut buf = vec![0u8; 256];
            det.read_verified(PageId(1), &mut buf).unwrap();
            assert_eq!(buf[0], 11, "{placement:?}: written before the failure");
            det.read_verified(PageId(5), &mut buf).unwrap();
            assert_eq!(
                buf[0], 6,
                "{placement:?}: the failed write left the old page"
            );
            det.read_verified(PageId(6), &mut buf).unwrap();
            assert_eq!(buf[0], 7, "{placement:?}: not written after the failure");
            // An all-zero page is a write like any other, in every placement
            // (a durable table logs its intent first).
            let mut zero = vec![0u8; 256];
            let mut d = vec![14u8; 256];
            det.write_sealed_batch(&mut [(PageId(2), &mut d[..]), (PageId(3), &mut zero[..])])
                .unwrap();
            det.read_verified(PageId(3), &mut buf).unwrap();
            if let ChecksumPlacement::Sidecar(_) = placement {
                assert!(buf.iter().all(|&b| b == 0), "{placement:?}");
            }
            // A page that cannot be written stops the batch before any write.
            let mut e = vec![15u8; 256];
            assert!(matches!(
                det.write_sealed_batch(&mut [(PageId(2), &mut e[..]), (PageId(9), &mut d[..])]),
                Err(Error::PageOutOfRange { .. })
            ));
            det.read_verified(PageId(2), &mut buf).unwrap();
            assert_eq!(
                buf[0], 14,
                "{placement:?}: nothing of the batch was written"
            );
        }
    }

    #[test]
    fn a_durable_table_accepts_old_bytes_until_the_detector_syncs() {
        let files = Arc::new(crate::testing::CrashFiles::new());
        let table = durable(&files);
        let (raw, det) = setup(ChecksumPlacement::Sidecar(table.clone()));
        det.sync().unwrap();
        let mut old = vec![0u8; 256];
        raw.read_page(PageId(2), &mut old).unwrap();
        det.write_sealed(PageId(2), &mut vec![40u8; 256]).unwrap();
        assert!(
            det.verify(PageId(2), &old).is_ok(),
            "the write may not be durable yet"
        );
        PageStore::sync(&det).unwrap();
        assert!(det.verify(PageId(2), &old).is_err(), "settled by the sync");
        assert!(det.verify(PageId(2), &[40u8; 256]).is_ok());
        assert_eq!(table.stats().unsettled_versions, 0);
        // A failed write may or may not have landed: both bytes verify.
        raw.fail_next_write(Some(PageId(3)), crate::testing::WriteFault::Eio);
        assert!(det.write_sealed(PageId(3), &mut vec![41u8; 256]).is_err());
        assert!(det.verify(PageId(3), &[4u8; 256]).is_ok());
        assert!(det.verify(PageId(3), &[41u8; 256]).is_ok());
    }

    #[test]
    fn too_many_unsettled_writes_make_the_detector_sync() {
        let files = Arc::new(crate::testing::CrashFiles::new());
        let table = Arc::new(
            crate::checksum::TableConfig::new(256)
                .unsettled_versions_max(4)
                .page_versions_max(2)
                .open_on(files.clone(), "sums")
                .unwrap(),
        );
        let raw = Arc::new(crate::testing::CrashStore::new(256, 8).unwrap());
        let det = DetectorConfig::new(ChecksumPlacement::Sidecar(table.clone()))
            .build(raw.clone())
            .unwrap();
        for round in 0..6u8 {
            det.write_sealed(PageId(0), &mut vec![50 + round; 256])
                .unwrap();
            assert!(table.stats().unsettled_versions <= 2, "round {round}");
        }
        assert_ne!(
            raw.durable_bytes()[0],
            0,
            "the detector synced the store on its own"
        );
        for p in 1..8u8 {
            det.write_sealed(PageId(u64::from(p)), &mut vec![p; 256])
                .unwrap();
            assert!(table.stats().unsettled_versions <= 4, "page {p}");
        }
    }

    #[test]
    fn a_durable_table_forgets_dropped_pages_durably() {
        let files = Arc::new(crate::testing::CrashFiles::new());
        let table = durable(&files);
        let raw = Arc::new(MemStore::new(256, 8).unwrap());
        let det = DetectorConfig::new(ChecksumPlacement::Sidecar(table.clone()))
            .build(raw.clone())
            .unwrap();
        for p in 0..8 {
            det.write_sealed(PageId(p), &mut vec![p as u8 + 1; 256])
                .unwrap();
        }
        det.resize(4).unwrap();
        assert_eq!(table.get(PageId(5)), None);
        let reopened = durable(&Arc::new(files.crash(None)));
        assert_eq!(reopened.get(PageId(5)), None, "the drop is durable");
        assert!(reopened.verify(PageId(3), &[4u8; 256]).is_ok());
    }

    #[test]
    fn bad_config_and_input() {
        let raw = Arc::new(MemStore::new(256, 2).unwrap());
        assert!(matches!(
            DetectorConfig::new(ChecksumPlacement::Trailer)
                .suspect_capacity(0)
                .build(raw.clone()),
            Err(Error::InvalidConfig {
                field: "suspect_capacity",
                ..
            })
        ));
        let t = Arc::new(ChecksumTable::new(512).unwrap());
        assert!(matches!(
            DetectorConfig::new(ChecksumPlacement::Sidecar(t)).build(raw.clone()),
            Err(Error::PageSizeMismatch { .. })
        ));
        let det = DetectorConfig::new(ChecksumPlacement::Trailer)
            .build(raw)
            .unwrap();
        let mut short = vec![0u8; 100];
        assert!(matches!(
            det.read_verified(PageId(0), &mut short),
            Err(Error::BufferSize { .. })
        ));
        let mut b = vec![0u8; 256];
        assert!(matches!(
            det.write_sealed(PageId(2), &mut b),
            Err(Error::PageOutOfRange { .. })
        ));
    }
}
