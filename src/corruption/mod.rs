//! `CorruptionDetector`: verify pages on read, seal them on write, fence the
//! ones that fail, and report each corruption once.
//!
//! The detector wraps the host's raw [`PageStore`]. Everything that writes
//! pages of a protected store (the host, rollback, repair, restore) goes
//! through it, because it keeps the checksums current and because it is what
//! lets a repair know that a host write raced with it (see
//! [`registry`] for the epoch protocol). A host write that
//! bypasses the detector is invisible to it: its checksum goes stale and the
//! next verification reports the page.

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

pub use registry::{Observation, Observer, PageState, SuspectEntry, SuspectRegistry};
pub use scrub::{
    Pace, Pacer, ScanSummary, ScrubConfig, ScrubHandle, ScrubMode, ScrubProgress, ScrubRate,
    ScrubState, ScrubStep, Scrubber,
};

/// Reads a page's LSN from its bytes (most engines keep one in the page
/// header). Lets repair refuse copies older than what the store last wrote.
pub type PageLsnFn = Arc<dyn Fn(&[u8]) -> Option<Lsn> + Send + Sync>;

pub use crate::types::FailureCallback;

const LOCK_STRIPES: usize = 256;

/// Configuration of a [`CorruptionDetector`].
#[must_use]
pub struct DetectorConfig {
    placement: ChecksumPlacement,
    suspect_capacity: usize,
    report_capacity: usize,
    clock: Arc<dyn Clock>,
    page_lsn: Option<PageLsnFn>,
    on_failure: Option<FailureCallback>,
}

impl fmt::Debug for DetectorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetectorConfig")
            .field("placement", &self.placement)
            .field("suspect_capacity", &self.suspect_capacity)
            .field("report_capacity", &self.report_capacity)
            .finish_non_exhaustive()
    }
}

impl DetectorConfig {
    /// Defaults: checksums in a trailer, 65 536 suspect pages, 4 096 unread
    /// reports, the system clock, no page-LSN reader, no callback.
    pub fn new(placement: ChecksumPlacement) -> Self {
        DetectorConfig {
            placement,
            suspect_capacity: 65_536,
            report_capacity: 4_096,
            clock: SystemClock::shared(),
            page_lsn: None,
            on_failure: None,
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

    /// A callback run with every failure reported (default: none).
    pub fn on_failure(mut self, f: FailureCallback) -> Self {
        self.on_failure = Some(f);
        self
    }

    /// Builds the detector over `store`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero capacity or a page size below 64;
    /// [`Error::PageSizeMismatch`] when a sidecar table was made for another
    /// page size; [`Error::Poisoned`] for a durable sidecar table whose log
    /// failed.
    pub fn build(self, store: Arc<dyn PageStore>) -> Result<CorruptionDetector> {
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
            written_lsn: RwLock::new(Vec::new()),
            page_lsn: self.page_lsn,
            on_failure: self.on_failure,
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
}

/// A repair in progress, from [`CorruptionDetector::begin_repair`].
#[derive(Debug)]
#[must_use = "a ticket must be committed or abandoned, or the page stays `Repairing`"]
pub struct RepairTicket {
    page: PageId,
    epoch: u64,
}

impl RepairTicket {
    /// The page being repaired.
    #[must_use]
    pub fn page(&self) -> PageId {
        self.page
    }
}

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
    written_lsn: RwLock<Vec<AtomicU64>>,
    page_lsn: Option<PageLsnFn>,
    on_failure: Option<FailureCallback>,
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
        }
    }

    /// Checksum verification plus, when a page-LSN reader is configured, the
    /// lost-write check: bytes older than the last write to the page fail.
    fn verify_bytes(&self, page: PageId, bytes: &[u8]) -> Result<()> {
        self.placement.verify(page, bytes)?;
        if let (Some(expected), Some(found)) =
            (self.last_written_lsn(page), self.page_lsn_of(bytes))
        {
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
    /// repaired; a corruption error ([`Error::is_corruption`]) or the store's
    /// read error for a page that failed both reads (it is then fenced and
    /// reported).
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
                self.record_corrupt(page, &err, Observer::HostRead);
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
        }
    }

    /// Verifies bytes that were read (by a scan) as the contents of `page`,
    /// re-reading once before declaring corruption. Used by the scrubber.
    ///
    /// # Errors
    /// The store's error from the re-read.
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
    /// [`Error::PageOutOfRange`] for a page past the end.
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

    /// After a failed verification: re-reads `page` with writers to it
    /// excluded and verifies again; records and reports the corruption if it
    /// fails twice. When `out` is given, the re-read bytes are copied there on
    /// success.
    fn confirm(&self, page: PageId, by: Observer, out: Option<&mut [u8]>) -> Result<Verdict> {
        let mut again = vec![0u8; self.store.page_size()];
        // A read that fails twice is recorded like corruption: an unreadable
        // page needs a repair as much as a garbled one (rewriting a bad
        // sector usually remaps it).
        let retry = {
            let _g = self.stripe(page);
            self.store
                .read_page(page, &mut again)
                .and_then(|()| self.verify_bytes(page, &again))
        };
        match retry {
            Ok(()) => {
                self.stats.transient.fetch_add(1, Ordering::Relaxed);
                self.stats.verified.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%page, "verification failed once, re-read verified");
                if let Some(out) = out {
                    out.copy_from_slice(&again);
                }
                Ok(Verdict::Transient)
            }
            Err(error) => {
                let reported = self.record_corrupt(page, &error, by);
                Ok(Verdict::Corrupt { reported, error })
            }
        }
    }

    fn record_corrupt(&self, page: PageId, error: &Error, by: Observer) -> bool {
        let now = self.clock.now_ns();
        let evidence = error.to_string();
        let obs = self.registry.lock().on_corrupt(page, &evidence, now, by);
        match obs {
            Observation::Report { .. } => {
                self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%page, %evidence, "corrupt page");
                self.report(Failure::new(
                    FailureKind::CorruptPage { page },
                    evidence,
                    now,
                ));
                true
            }
            Observation::Known => false,
            Observation::Full => {
                self.stats.unrecorded.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%page, "suspect registry full; corruption not recorded");
                self.report(Failure::new(
                    FailureKind::CorruptPage { page },
                    format!(
                        "{evidence} (not fenced: {})",
                        Error::RegistryFull {
                            capacity: self.registry.lock().capacity()
                        }
                    ),
                    now,
                ));
                true
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
    /// it will not overwrite them.
    ///
    /// With a durable sidecar table the new checksum is logged and fsynced
    /// before the page is written (see [`checksum::durable`](crate::checksum::durable));
    /// concurrent writers share that fsync, and
    /// [`write_sealed_batch`](Self::write_sealed_batch) shares it across a
    /// batch.
    ///
    /// # Errors
    /// [`Error::BufferSize`], [`Error::PageOutOfRange`], the sealing error,
    /// the table's log error, or the store's write error.
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
        let _g = self.stripes_of(pages.iter().map(|(p, _)| *p));
        let written = match &self.placement {
            ChecksumPlacement::Trailer => {
                for (page, buf) in pages.iter_mut() {
                    crate::checksum::trailer::seal(*page, buf)?;
                }
                let mut written = 0;
                let mut result = Ok(());
                for (page, buf) in pages.iter() {
                    result = self.store.write_page(*page, buf);
                    if result.is_err() {
                        break;
                    }
                    written += 1;
                }
                (written, result)
            }
            ChecksumPlacement::Sidecar(table) => self.write_sidecar(table, pages)?,
        };
        let (written, result) = written;
        let mut registry = self.registry.lock();
        for (page, _) in &pages[..written] {
            registry.on_host_write(*page);
        }
        drop(registry);
        for (page, buf) in &pages[..written] {
            if let Some(lsn) = self.page_lsn.as_ref().and_then(|f| f(buf)) {
                self.note_written_lsn(*page, lsn);
            }
        }
        result
    }

    /// The sidecar branch of a batch write: the table's entries change only
    /// around writes that were issued — an in-memory table records a
    /// checksum once its write succeeded (a failed write leaves the old
    /// bytes and checksum), a durable one logs the new checksum durably
    /// before the write and keeps the old one accepted until a sync.
    /// Returns how many pages were written and the first write error.
    fn write_sidecar(
        &self,
        table: &ChecksumTable,
        pages: &[(PageId, &mut [u8])],
    ) -> Result<(usize, Result<()>)> {
        let changes = pages
            .iter()
            .map(|(page, buf)| Ok((*page, table.sealable(*page, buf)?)))
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
    /// The checksums, fences and last-written LSNs of pages past the new end
    /// are dropped with them, so a page that comes back later is a new page.
    /// With a durable sidecar table a shrink syncs the store before the
    /// table forgets anything, so that no crash can leave pages whose
    /// checksums are gone.
    ///
    /// # Errors
    /// The store's error ([`Error::Unsupported`] when it cannot change size);
    /// nothing is forgotten then. The sync's or the table's error.
    pub fn resize(&self, page_count: u64) -> Result<()> {
        self.store.resize(page_count)?;
        if let ChecksumPlacement::Sidecar(table) = &self.placement {
            if table.is_durable() && table.has_pages_from(page_count) {
                self.sync()?;
            }
            table.truncate(page_count)?;
        }
        self.registry.lock().forget_from(page_count);
        let mut lsns = self.written_lsn.write();
        let keep = usize::try_from(page_count).unwrap_or(usize::MAX);
        if keep < lsns.len() {
            lsns.truncate(keep);
        }
        Ok(())
    }

    fn note_written_lsn(&self, page: PageId, lsn: Lsn) {
        let idx = page.0 as usize;
        {
            let v = self.written_lsn.read();
            if let Some(slot) = v.get(idx) {
                slot.fetch_max(lsn.0, Ordering::AcqRel);
                return;
            }
        }
        let mut v = self.written_lsn.write();
        if v.len() <= idx {
            v.resize_with(idx + 1, || AtomicU64::new(0));
        }
        v[idx].fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// The LSN of the newest contents written to `page` through the detector,
    /// when a [page-LSN reader](DetectorConfig::page_lsn) is configured.
    #[must_use]
    pub fn last_written_lsn(&self, page: PageId) -> Option<Lsn> {
        let v = self.written_lsn.read();
        let lsn = v.get(page.0 as usize)?.load(Ordering::Acquire);
        (lsn != 0).then_some(Lsn(lsn))
    }

    /// The LSN recorded in `bytes`, when a page-LSN reader is configured.
    #[must_use]
    pub fn page_lsn_of(&self, bytes: &[u8]) -> Option<Lsn> {
        self.page_lsn.as_ref().and_then(|f| f(bytes))
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
    pub fn begin_repair(&self, page: PageId) -> Option<RepairTicket> {
        let epoch = self.registry.lock().begin_repair(page)?;
        Some(RepairTicket { page, epoch })
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
    /// a verification error of the re-read page (the write did not stick).
    pub fn commit_repair(
        &self,
        ticket: RepairTicket,
        copy: &[u8],
    ) -> std::result::Result<Commit, (RepairTicket, Error)> {
        let page = ticket.page;
        let _g = self.stripe(page);
        if !self.registry.lock().repair_current(page, ticket.epoch) {
            return Ok(Commit::Superseded);
        }
        if let Err(e) = self.verify_bytes(page, copy) {
            return Err((ticket, e));
        }
        let mut back = vec![0u8; copy.len()];
        let written = self
            .store
            .write_page(page, copy)
            .and_then(|()| self.store.sync())
            .and_then(|()| self.store.read_page(page, &mut back))
            .and_then(|()| self.verify_bytes(page, &back));
        if let Err(e) = written {
            return Err((ticket, e));
        }
        if back != copy {
            return Err((
                ticket,
                Error::Irreparable {
                    page,
                    reason: "the page read back differs from the copy written".into(),
                },
            ));
        }
        self.registry.lock().finish_repair(page, ticket.epoch, true);
        Ok(Commit::Written)
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
        let _g = self.stripe(page);
        let mut current = vec![0u8; copy.len()];
        self.store.read_page(page, &mut current)?;
        if current != expected {
            return Ok(false);
        }
        let written = self
            .store
            .write_page(page, copy)
            .and_then(|()| self.store.sync())
            .and_then(|()| self.store.read_page(page, &mut current))
            .and_then(|()| self.verify_bytes(page, &current));
        // The page has new contents now, whatever happened: old fences and
        // repairs in flight no longer apply.
        self.registry.lock().on_host_write(page);
        if let Some(lsn) = self.page_lsn_of(copy) {
            self.note_written_lsn(page, lsn);
        }
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
        if let Err(e) = verified {
            self.record_corrupt(page, &e, Observer::Scrub);
            return Err(e);
        }
        Ok(true)
    }

    /// Ends a repair without writing: the page becomes `Irreparable` (unless
    /// the host rewrote it meanwhile) and stays fenced. Returns whether the
    /// page was marked irreparable.
    pub fn abandon_repair(&self, ticket: RepairTicket) -> bool {
        self.registry
            .lock()
            .finish_repair(ticket.page, ticket.epoch, false)
    }

    /// Re-reads a fenced page and lifts the fence if it now verifies (the
    /// fault was transient). Returns the verdict.
    ///
    /// # Errors
    /// The store's read error.
    pub fn recheck(&self, page: PageId) -> Result<Verdict> {
        let mut buf = vec![0u8; self.store.page_size()];
        let _g = self.stripe(page);
        self.store.read_page(page, &mut buf)?;
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

/// The detector is itself a [`PageStore`]: reads are verified
/// ([`read_verified`](CorruptionDetector::read_verified)) and writes are sealed
/// ([`write_sealed`](CorruptionDetector::write_sealed), on a copy of the
/// caller's bytes). Hand it to any component that writes pages of a protected
/// store (rollback, restore) so that checksums stay current and fences lift.
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
            // A page that cannot be sealed stops the batch before any write.
            let mut zero = vec![0u8; 256];
            let mut d = vec![14u8; 256];
            let r =
                det.write_sealed_batch(&mut [(PageId(2), &mut d[..]), (PageId(3), &mut zero[..])]);
            if let ChecksumPlacement::Sidecar(_) = placement {
                assert!(matches!(r, Err(Error::InvalidArgument { .. })));
                det.read_verified(PageId(2), &mut buf).unwrap();
                assert_eq!(buf[0], 3, "nothing of the batch was written");
            }
            let mut e = vec![15u8; 256];
            assert!(matches!(
                det.write_sealed_batch(&mut [(PageId(2), &mut e[..]), (PageId(9), &mut d[..])]),
                Err(Error::PageOutOfRange { .. })
            ));
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
