//! `CorruptionDetector`: verify pages on read, seal them on write, fence the
//! ones that fail, and report each corruption once.
//!
//! The detector wraps the host's raw [`PageStore`]. Everything that writes
//! pages of a protected store (the host, rollback, repair, restore) goes
//! through it, because it keeps the checksums current and because it is what
//! lets a repair know that a host write raced with it (see
//! `registry.rs` for the epoch protocol). A host write that
//! bypasses the detector is invisible to it: its checksum goes stale and the
//! next verification reports the page. A host that needs to know of every
//! page write — its own and the library's — gives the detector a
//! [write observer](CorruptionConfig::on_write) (incremental snapshots that
//! rely on dirty-page notices need one).
//!
//! # What a write promises
//!
//! With a [page-LSN reader](CorruptionConfig::page_lsn), a page must not be
//! older than the last write through the detector, whatever LSN that write
//! carried (see [`LsnExpectation`] and `lsn.rs`). Nothing the library writes is sealed
//! without having been verified: rollback reads verified, repair writes only
//! copies it verified, adoption never seals a page the registry knows to be
//! bad, and a restore checks pages that a snapshot did not read through a
//! verifying store ([`PageStore::check_unverified`]).
//!
//! # Pages the library did not write
//!
//! A store that existed before the library (a host's database file) is
//! taken under protection with [`CorruptionDetector::adopt`] (see the
//! docs of `adopt.rs`): it seals what is on disk, after the host's own
//! integrity check. Pages the host's metadata calls unallocated (a free
//! list) are not damage: a host names them with
//! [`CorruptionConfig::free_pages`] or [`CorruptionDetector::forget`], and
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
//!
//! A verified read of a page takes none of the detector's locks unless
//! the page's stripe of the registry holds a fenced page (the registry's
//! fenced counts are read without its lock; see [`SuspectEntry`]), so readers
//! of healthy pages run in parallel; a fenced page is refused all the same.

mod adopt;
pub mod free;
mod free_map;
mod lsn;
mod registry;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::checksum::{ChecksumPlacement, ChecksumTable};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::host::{check_page_args, PageStore};
use crate::types::{Failure, FailureKind, FailureSink, Lsn, PageId, Source};
use free_map::PageBits;

pub use adopt::{AdoptOptions, AdoptProgress, AdoptProgressFn, AdoptReport};
pub use free_map::FreePageFn;
pub use lsn::LsnExpectation;
use registry::{Observation, SuspectRegistry};
pub use registry::{Observer, PageState, SuspectEntry};

mod batch;
mod config;
mod expectation;
pub(crate) mod read_hook;
mod rebuilt;
#[cfg(test)]
mod tests;
mod ticket;
mod verify;
mod write;

pub use config::{CorruptionConfig, ExpectedLsnFn, LsnExpectationFn, PageLsnFn, WriteObserverFn};
pub(crate) use ticket::VerifiedCopy;
pub use ticket::{Commit, CommitResult, RepairTicket};

const LOCK_STRIPES: usize = 256;

/// Most consecutive pages a batch commit writes with one batch write and
/// re-reads with one read: their
/// stripe locks are all held for it (so it stays well below
/// [`LOCK_STRIPES`], and host writes to other pages are rarely held up).
pub(crate) const REREAD_RUN_PAGES: usize = 32;

#[derive(Debug, Default)]
struct Counters {
    /// Sharded: every verified read adds to it, on any thread.
    verified: crate::sharded::Counter,
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
    /// Its own reports dropped because the failure bus was full (on a
    /// shared bus, other components' drops are not counted here; the whole
    /// bus's are [`FailureSink::dropped`]).
    pub reports_dropped: u64,
    /// Pages that failed verification but that the host says are
    /// unallocated: not reported, not fenced (reads, scans and rechecks).
    pub unallocated: u64,
}

/// The outcome of verifying one page.
#[derive(Debug)]
#[non_exhaustive]
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

/// Verifies pages on read, seals them on write, and keeps the suspect-page
/// registry.
///
/// ```
/// use std::sync::Arc;
/// use selfheal::{ChecksumPlacement, CorruptionDetector, CorruptionConfig, MemStore, PageId, PageStore};
///
/// let raw = Arc::new(MemStore::new(4096, 8)?);
/// let det = CorruptionConfig::new(ChecksumPlacement::Trailer).build(raw.clone())?;
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
    /// The registry's fenced-page counts, read without its lock by
    /// verified reads (see [`registry`]).
    fenced: Arc<registry::FencedStripes>,
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
    expected_lsn: Option<LsnExpectationFn>,
    on_write: Option<WriteObserverFn>,
    /// Set once by the detector's owner (see [`read_hook`]).
    read_hook: std::sync::OnceLock<read_hook::ReadFailureFn>,
    sink: FailureSink,
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
    /// Sets the [read-failure hook](read_hook); returns `false` when one is
    /// set already (it is set once).
    pub(crate) fn set_read_hook(&self, hook: read_hook::ReadFailureFn) -> bool {
        self.read_hook.set(hook).is_ok()
    }

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

    /// The receiving end of its failure bus (cloning shares the queue).
    #[must_use]
    pub fn failures(&self) -> Receiver<Failure> {
        self.sink.failures()
    }

    /// The failure bus it reports on; the repairer, built over it, reports
    /// on the same one unless given its own.
    #[must_use]
    pub fn failure_sink(&self) -> &FailureSink {
        &self.sink
    }

    /// Current counters.
    #[must_use]
    pub fn stats(&self) -> DetectorStats {
        let s = &self.stats;
        DetectorStats {
            verified: s.verified.get(),
            transient: s.transient.load(Ordering::Relaxed),
            corrupt_reported: s.corrupt.load(Ordering::Relaxed),
            fenced_reads: s.fenced_reads.load(Ordering::Relaxed),
            unrecorded: s.unrecorded.load(Ordering::Relaxed),
            reports_dropped: self.sink.dropped_from(Source::CorruptionDetector),
            unallocated: s.unallocated.load(Ordering::Relaxed),
        }
    }

    /// Checksum verification plus, when a page-LSN reader is configured, the
    /// lost-write check: bytes older than the last write to the page fail.
    fn verify_bytes(&self, page: PageId, bytes: &[u8]) -> Result<()> {
        if let Err(e) = self.placement.verify(page, bytes) {
            // Under a sidecar table an older copy (a lost write) fails its
            // checksum too — the table holds the newest write's — and its
            // page LSN tells it from damaged contents: it is stale.
            if let (Error::ChecksumMismatch { .. }, Some(found)) = (&e, self.page_lsn_of(bytes)) {
                if let Some(expected) = self.last_written_lsn(page).filter(|x| found < *x) {
                    return Err(Error::StalePage {
                        page,
                        found,
                        expected,
                    });
                }
            }
            return Err(e);
        }
        self.check_lsn_floor(page, bytes)
    }

    /// The second half of [`verify_bytes`](Self::verify_bytes), for bytes
    /// whose checksum is known to verify: with a page-LSN reader, bytes
    /// older than the last write to the page fail as stale.
    fn check_lsn_floor(&self, page: PageId, bytes: &[u8]) -> Result<()> {
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

    /// Whether `bytes` would verify read from the store as `page`
    /// ([`verify_stored`](Self::verify_stored)); fences and reports nothing.
    pub(crate) fn verifies_as_stored(&self, page: PageId, bytes: &[u8]) -> bool {
        self.verify_stored(page, bytes).is_ok()
    }

    /// [`verify_bytes`](Self::verify_bytes) for bytes read from the store
    /// itself, where the last write through the detector in this process is
    /// exact: a page carrying a newer LSN than that write is the version a
    /// lost write of a rollback or a restore (which put an older LSN back)
    /// was to replace, and fails as stale too. Copies offered to a repair
    /// keep the floor check here; the repair plan refuses a copy newer than
    /// the last write itself, and says so.
    fn verify_stored(&self, page: PageId, bytes: &[u8]) -> Result<()> {
        self.verify_bytes(page, bytes)?;
        self.check_lsn_exact(page, bytes)
    }

    /// The part of [`verify_stored`](Self::verify_stored) that
    /// `verify_bytes` does not do: a page read from the store must not be
    /// newer than the last write through the detector when that write is
    /// known exactly.
    fn check_lsn_exact(&self, page: PageId, bytes: &[u8]) -> Result<()> {
        // The expectation is looked up only for a page that carries an LSN
        // (with no page-LSN reader, nothing more per page).
        let Some(found) = self.page_lsn_of(bytes) else {
            return Ok(());
        };
        if let LsnExpectation::Exact(expected) = self.lsn_expectation(page) {
            if found > expected {
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

    /// The LSN recorded in `bytes`, when a page-LSN reader is configured.
    #[must_use]
    pub fn page_lsn_of(&self, bytes: &[u8]) -> Option<Lsn> {
        self.page_lsn.as_ref().and_then(|f| f(bytes))
    }

    /// Whether a [page-LSN reader](CorruptionConfig::page_lsn) is configured,
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

    /// Those of `pages` that are not fenced (unknown to the registry, or
    /// repaired), in their order: one look at the registry for them all.
    pub(crate) fn unfenced(&self, pages: &[PageId]) -> Vec<PageId> {
        let reg = self.registry.lock();
        pages
            .iter()
            .copied()
            .filter(|p| !reg.state(*p).is_some_and(PageState::is_fenced))
            .collect()
    }

    /// The fault episode `page` is in, if it is known (see
    /// [`SuspectEntry::episode`]).
    pub(crate) fn page_episode(&self, page: PageId) -> Option<u64> {
        self.registry.lock().episode(page)
    }

    /// The epoch of `page`'s registry entry, if it has one: a host write
    /// ends it, and a fault found after that starts a new one.
    pub(crate) fn page_epoch(&self, page: PageId) -> Option<u64> {
        self.registry.lock().epoch_of(page)
    }

    /// Puts `page`, renewed to `Suspect` by a host read in fault episode
    /// `episode`, back to `Irreparable` (see
    /// `SuspectRegistry::keep_irreparable`).
    pub(crate) fn keep_irreparable(&self, page: PageId, episode: u64) -> bool {
        self.registry.lock().keep_irreparable(page, episode)
    }

    /// Every registry entry, sorted by page.
    #[must_use]
    pub fn suspects(&self) -> Vec<(PageId, SuspectEntry)> {
        self.registry.lock().entries()
    }

    /// The fenced pages with their state and when each was first seen
    /// bad, sorted by page (taken under the registry's lock, sorted after
    /// it is released).
    pub(crate) fn fenced_pages(&self) -> Vec<(PageId, PageState, u64)> {
        let mut v = self.registry.lock().fenced_entries();
        v.sort_unstable_by_key(|(p, _, _)| *p);
        v
    }

    /// Pages in `state`, sorted.
    #[must_use]
    pub fn pages_in(&self, state: PageState) -> Vec<PageId> {
        self.registry.lock().pages_in(state)
    }

    /// Fences `page` as known bad without reading it — a page an earlier
    /// run recorded as bad and that no one has repaired or rewritten since
    /// (the recovery manager's durable suspect registry). It enters
    /// `Suspect` as if a scrub had seen it fail with `reason`, so verified
    /// reads refuse it until it is repaired or rewritten; nothing is
    /// reported (the caller opens the incident). Returns whether it is
    /// fenced: `false` for a page past the end or a full registry.
    pub fn fence(&self, page: PageId, reason: &str) -> bool {
        if page.0 >= self.store.page_count() {
            return false;
        }
        let now = self.clock.now_ns();
        let mut reg = self.registry.lock();
        let _ = reg.on_corrupt(page, reason, now, Observer::Scrub);
        reg.state(page).is_some_and(PageState::is_fenced)
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
