//! The detector's configuration and the host hooks it takes.

use std::fmt;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::free_map::PageBits;
use super::lsn::{self, LsnExpectation};
use super::registry::SuspectRegistry;
use super::{CorruptionDetector, Counters, FreePageFn, LOCK_STRIPES};
use crate::checksum::{ChecksumPlacement, MIN_PAGE_SIZE};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::host::PageStore;
use crate::types::{
    Failure, FailureKind, FailureSink, Lsn, PageId, Source, DEFAULT_FAILURE_CAPACITY,
};

/// Reads a page's LSN from its bytes (most engines keep one in the page
/// header). Lets repair refuse copies older than what the store last wrote.
pub type PageLsnFn = Arc<dyn Fn(&[u8]) -> Option<Lsn> + Send + Sync>;

/// Answers the LSN a page must carry at least, from the host's own records
/// (its WAL, its page map): see [`CorruptionConfig::expected_page_lsn`].
pub type ExpectedLsnFn = Arc<dyn Fn(PageId) -> Option<Lsn> + Send + Sync>;

/// Answers what LSN a page must carry — exactly, or at least — from the
/// host's own records: see [`CorruptionConfig::page_lsn_expectation`].
pub type LsnExpectationFn = Arc<dyn Fn(PageId) -> LsnExpectation + Send + Sync>;

/// Told of every page write the detector issues to its store, whoever asked
/// for it: see [`CorruptionConfig::on_write`].
pub type WriteObserverFn = Arc<dyn Fn(PageId) + Send + Sync>;

/// Configuration of a [`CorruptionDetector`].
#[must_use]
pub struct CorruptionConfig {
    placement: ChecksumPlacement,
    suspect_capacity: usize,
    failures: Option<FailureSink>,
    clock: Arc<dyn Clock>,
    page_lsn: Option<PageLsnFn>,
    expected_lsn: Option<LsnExpectationFn>,
    free_pages: Option<FreePageFn>,
    on_write: Option<WriteObserverFn>,
}

impl fmt::Debug for CorruptionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CorruptionConfig")
            .field("placement", &self.placement)
            .field("suspect_capacity", &self.suspect_capacity)
            .field("page_lsn", &self.page_lsn.is_some())
            .field("expected_page_lsn", &self.expected_lsn.is_some())
            .field("on_write", &self.on_write.is_some())
            .finish_non_exhaustive()
    }
}

impl CorruptionConfig {
    /// Defaults: checksums in a trailer, 65 536 suspect pages, a failure bus
    /// of its own, the system clock, no page-LSN reader, no
    /// free-page answer (every page is in use unless
    /// [`forget`](CorruptionDetector::forget) says otherwise), no write
    /// observer.
    pub fn new(placement: ChecksumPlacement) -> Self {
        CorruptionConfig {
            placement,
            suspect_capacity: 65_536,
            failures: None,
            clock: SystemClock::shared(),
            page_lsn: None,
            expected_lsn: None,
            free_pages: None,
            on_write: None,
        }
    }

    /// How many pages the suspect registry holds at most (default 65 536).
    pub fn suspect_capacity(mut self, pages: usize) -> Self {
        self.suspect_capacity = pages;
        self
    }

    /// The failure bus it reports on (default: a bus of its own holding
    /// 4 096 unread reports). Give every component the same sink to see one
    /// ordered stream; its callback, if any, sees every report.
    pub fn failure_sink(mut self, sink: FailureSink) -> Self {
        self.failures = Some(sink);
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
    /// repair copy); see [`LsnExpectation`] and `corruption/lsn.rs` for the rule. That memory is
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
        self.expected_lsn = Some(Arc::new(move |page| match f(page) {
            Some(l) if l.0 != 0 => LsnExpectation::AtLeast(l),
            _ => LsnExpectation::Nothing,
        }));
        self
    }

    /// The host's answer to "which LSN must this page carry?", exactly or
    /// at least (default: none). Needs a [page-LSN reader](Self::page_lsn).
    /// It takes the place of [`expected_page_lsn`](Self::expected_page_lsn)
    /// (the one set last is used), which can only answer a floor.
    ///
    /// A floor cannot tell a page that holds a version newer than the
    /// host's records from one that holds a version a restore or a rollback
    /// replaced, when the disk lost that write and the process died before
    /// the detector saw it: under the trailer placement both verify, and
    /// the replaced version would be served. A host whose records say which
    /// version a page holds — no write of it can have reached the disk
    /// since (nothing in flight when it last synced, as after a restore
    /// that returned) — answers [`LsnExpectation::Exact`]: the page must
    /// then carry exactly that LSN, as after a write through the detector
    /// in this process; a copy with a newer LSN fails as
    /// [`Error::StalePage`] and a repair accepts only that LSN. A host that
    /// cannot rule out a newer write (one in flight at the crash) answers
    /// [`LsnExpectation::AtLeast`] with the oldest LSN the page may
    /// durably hold, and [`LsnExpectation::Nothing`] (or an LSN of 0) when
    /// it does not know.
    ///
    /// The answer is asked for, remembered and overridden as the floor of
    /// `expected_page_lsn` is: only for a page not written through the
    /// detector in this process, once per page and run, until the next
    /// write. It must be cheap, must not call back into the detector, and
    /// must not answer an LSN the page has not durably reached, nor
    /// `Exact` for a page a write may have changed since (that would fence
    /// a good page as stale).
    pub fn page_lsn_expectation(mut self, f: LsnExpectationFn) -> Self {
        self.expected_lsn = Some(f);
        self
    }

    /// The host's answer to "is this page unallocated now?", from its own
    /// metadata (a free list), so that free pages are not reported as damage
    /// (default: none). Asked only when a page fails verification, never on
    /// the path of a page that verifies; see the [`free`](super::free) module for what an
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
    /// an [expected-LSN hook](Self::expected_page_lsn) (or
    /// [expectation hook](Self::page_lsn_expectation)) without a page-LSN
    /// reader; [`Error::PageSizeMismatch`] when a sidecar table was made for
    /// another page size; [`Error::Poisoned`] for a durable sidecar table
    /// whose log failed; the store's sync error (or the table log's fsync
    /// error) when a durable sidecar table reopened after a crash has pages
    /// whose checksums the build settles durably before any write.
    pub fn build(self, store: Arc<dyn PageStore>) -> Result<CorruptionDetector> {
        crate::telemetry::describe();
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
            // Writes a crash left unsettled: find which bytes each page
            // holds, and settle those durably before any write can tear a
            // page whose only checksum is still of unknown fate in the log.
            let marked = t.resolve(store.page_count(), &mut |p, buf| store.read_page(p, buf))?;
            if marked > 0 {
                t.settle_resolved(&mut || store.sync())?;
            }
        }
        let sink = self
            .failures
            .unwrap_or_else(|| FailureSink::new(DEFAULT_FAILURE_CAPACITY));
        if let ChecksumPlacement::Sidecar(t) = &self.placement {
            // A stall of the table's log (and each failed resume it tries
            // on its own) goes on the detector's bus.
            let (stall_sink, clock) = (sink.clone(), self.clock.clone());
            t.set_stall_hook(Some(Arc::new(move |reason: &str, no_space: bool, failed: u32| {
                stall_sink.send(Failure::new(
                    Source::CorruptionDetector,
                    FailureKind::ChecksumLogStalled { no_space },
                    format!(
                        "the checksum table's log is stalled by {}: {reason}; {failed} resume(s) failed so far; \
                         it refuses changes until a resume (ChecksumTable::resume, or its own after a backoff) \
                         writes again what it holds",
                        if no_space { "the disk is full (no space left)" } else { "a retryable I/O error" }
                    ),
                    clock.now_ns(),
                ));
            })));
        }
        let registry = SuspectRegistry::new(self.suspect_capacity);
        Ok(CorruptionDetector {
            store,
            placement: self.placement,
            fenced: registry.fenced_stripes(),
            registry: Mutex::new(registry),
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            written_lsn: lsn::LsnSlots::default(),
            freed: PageBits::default(),
            sealed_here: PageBits::default(),
            free_pages: self.free_pages,
            resize_gate: RwLock::new(()),
            page_lsn: self.page_lsn,
            expected_lsn: self.expected_lsn,
            on_write: self.on_write,
            read_hook: std::sync::OnceLock::new(),
            sink,
            clock: self.clock,
            stats: Counters::default(),
        })
    }
}
