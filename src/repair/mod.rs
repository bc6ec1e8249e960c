//! `DataRepairer`: repair corrupt pages from verified replica copies.
//!
//! A repair fetches copies of a fenced page from the registered replicas,
//! verifies each like a local read, writes the newest verified copy (copies
//! at one page LSN vote), and falls back to other page sources when no
//! replica copy can be written. Every call into a replica or a fallback runs
//! on a helper thread with a deadline. The newest-copy guarantee — a verified
//! copy with a newer page LSN wins over any number of older ones — needs a
//! [page-LSN reader](crate::corruption::CorruptionConfig::page_lsn) on the
//! detector: without one, which copy is newest cannot be told, and copies
//! only vote.
//!
//! # How a page is repaired
//!
//! [`DataRepairer::repair_page`] drives the repair protocol of the
//! [`CorruptionDetector`]:
//!
//! 1. The page must be fenced (`Suspect` or `Irreparable`). It is re-read
//!    first: a page that verifies now had a transient fault and is unfenced
//!    without writing anything ([`RepairOutcome::NotNeeded`]).
//! 2. [`begin_repair`](CorruptionDetector::begin_repair) takes a ticket that
//!    remembers the page's epoch. Should the repair end without a verdict —
//!    the ticket dropped, also by a panic unwinding through the repair — the
//!    page goes back to `Suspect` and the next repair tries it.
//! 3. Every replica is asked for its status (at once, on the replicas'
//!    helper threads, with one deadline; see below), and replicas are ordered
//!    by availability, then least lag. A replica that is down, hung, cooling
//!    off, or whose applied LSN is known to be below the LSN the page must
//!    have ([`last_written_lsn`](CorruptionDetector::last_written_lsn)) is
//!    skipped. Copies are then fetched in that order, each verified like a
//!    local read (checksum, page number, and staleness when the detector has
//!    a page-LSN reader). A copy that fails verification never counts, never
//!    votes and is never written: a corrupt replica cannot overwrite
//!    anything. When fetching stops depends on whether copies carry a
//!    readable page LSN:
//!    - **With a page-LSN reader**, fetching never stops while a replica not
//!      yet asked could hold a newer copy than the newest verified one: a
//!      replica whose status reports no applied LSN, or one above that
//!      copy's page LSN, is always asked. A replica reporting exactly that
//!      LSN can only add a vote and is asked until
//!      [`max_replicas_per_repair`](RepairConfig::max_replicas_per_repair)
//!      verified copies carry it; one reporting less cannot hold a copy that
//!      would be written and is skipped
//!      ([`AttemptResult::Stale`]). So stale replicas asked first, however
//!      many, never hide the current copy of a replica asked last — unless
//!      its status claims an applied LSN it has not reached.
//!    - **Without one**, copies are fetched until `max_replicas_per_repair`
//!      of them verified or every replica was asked, and they vote.
//!
//!    - **When the detector knows the page's last write exactly** (it was
//!      written through the detector in this process:
//!      [`LsnExpectation::Exact`](crate::corruption::LsnExpectation::Exact)),
//!      only a copy carrying exactly that LSN is the page. A copy with a
//!      newer LSN is a write that was rolled back or replaced since (a
//!      before-image put back, a restore of an older page) and is refused
//!      ([`AttemptResult::NotLastWrite`]), as is a copy without a readable
//!      LSN; an older one fails verification as stale. No replica can then
//!      hold anything better than the copies at that LSN, and fetching
//!      stops once `max_replicas_per_repair` of them verified. With only a
//!      floor (after a restart, from the host's hook:
//!      [`LsnExpectation::AtLeast`](crate::corruption::LsnExpectation::AtLeast))
//!      a newer copy may be the truth, and the first rule holds.
//!
//!    Either way a repair asks each replica at most once, so it fetches at
//!    most [`MAX_REPLICAS`] copies.
//! 4. The verified copies are ranked: **the newest page LSN first** (an
//!    unknown LSN ranks below any known one), then by votes (byte-identical
//!    copies form a group, one vote per copy), then by the better replica.
//!    Only copies at the newest LSN may be written: a verified copy with a
//!    newer page LSN wins over any number of older ones, so replicas that
//!    lag behind together never out-vote the one that has the current page.
//!    Among copies at the newest LSN the largest group wins (a plurality),
//!    or, with [`require_majority`](RepairConfig::require_majority), only a
//!    group holding more than half of the copies at that LSN.
//! 5. The winning copy goes to
//!    [`commit_repair`](CorruptionDetector::commit_repair), which writes,
//!    syncs, re-reads and re-verifies with host writes to the page excluded.
//!    If that fails, the next distinct verified copy at the newest LSN is
//!    tried, then each fallback [`PageSource`] (asked for a copy not older
//!    than both the page's expected LSN and the newest verified replica copy,
//!    verified all the same, and refused like a replica copy when it is not
//!    the page's last write).
//! 6. If the host rewrote the page at any point after step 2, nothing is
//!    written: the host's newer page stands ([`RepairOutcome::Superseded`]).
//! 7. When nothing works, the ticket is abandoned: the page becomes
//!    `Irreparable`, stays fenced, and a
//!    [`FailureKind::IrreparablePage`](crate::FailureKind::IrreparablePage)
//!    report goes on the repairer's failure bus
//!    ([`RepairConfig::failure_sink`], by default the detector's).
//!
//! # After a restart
//!
//! The detector's memory of each page's LSN is empty after a restart, so
//! only steps 3 and 4 stand between a stale majority and the current page
//! then, and what the host's hook answers is a floor, not the exact last
//! write: a copy newer than the floor wins, so a replica that still holds a
//! write rolled back before the restart can win over the page (only the
//! sidecar placement's table, which holds the checksum of the last sealed
//! page, refuses it then). Against a stale majority: with a page-LSN
//! reader, the replica holding the current page is asked however many
//! stale ones come first, and its copy wins. Without a
//! page-LSN reader nothing tells the copies apart (under the sidecar
//! placement the table's checksum still rejects a copy that differs from
//! the last sealed page; under the trailer placement an older sealed copy
//! verifies), and a stale majority can win the vote. When every replica is
//! stale, only the host knows: give the detector an
//! [expected-LSN hook](crate::corruption::CorruptionConfig::expected_page_lsn)
//! answered from the host's WAL or page map, and stale copies fail
//! verification as [`Error::StalePage`] (the page is then repaired from a
//! fallback or left irreparable, never reverted).
//!
//! # Slow, hung and panicking replicas and fallbacks
//!
//! Every call into a replica — [`status`](Replica::status),
//! [`read_page`](Replica::read_page),
//! [`range_digest`](Replica::range_digest) — runs on a helper thread per
//! replica (`selfheal-replica-read`), and every read of a fallback source on
//! a helper thread per source (`selfheal-fallback-read`); the repairer waits
//! for each answer at most
//! [`replica_read_timeout`](RepairConfig::replica_read_timeout). A call that
//! misses it, or panics, makes the replica or source unavailable (counted in
//! its [`ReplicaStats`] or [`FallbackStats`]) for a
//! [cool-off](RepairConfig::replica_cooloff), and for as long as the
//! abandoned call has not returned, so at most one abandoned call per replica
//! or source is ever running and a hung one costs one deadline, not one per
//! page (see `courier/mod.rs`). The statuses of a repair are asked of all
//! replicas at once and awaited with one deadline. Only `id`, `page_size`,
//! [`may_call_inline`](Replica::may_call_inline) and a fallback's `name`
//! are called on the caller's thread, once, at registration.
//!
//! A replica whose [`may_call_inline`](Replica::may_call_inline) says its
//! calls never hang (an in-memory copy in this process) is the exception:
//! its calls run on the repairing thread, with no hand-over between threads
//! (several microseconds per call, more on a busy machine) and **no
//! deadline** — a call that hangs then hangs the repair. A panic of such a
//! call is still caught and makes it unavailable for its cool-off.
//!
//! When no more replicas are registered than
//! [`max_replicas_per_repair`](RepairConfig::max_replicas_per_repair) (so a
//! repair asks each of them anyway), `repair_page` asks each replica for its
//! status and, in the same call, for its copy of the page, unless the status
//! says it cannot serve reads or is behind the page's expected LSN: one
//! hand-over between threads per replica instead of two, and the copies are
//! read concurrently. A copy read that way that the repair turns out not to
//! need (page LSNs show the replica cannot hold a copy that would be
//! written) is discarded.
//!
//! # A replica that keeps failing
//!
//! The repairer watches each replica: a call that gives it nothing usable —
//! a status saying the replica cannot serve reads, a call that failed,
//! missed its deadline or panicked, a call not made because the replica is
//! hung or cools off, a copy that fails verification — counts as a failure;
//! a copy that verifies starts the count again. After
//! [`replica_failing_after`](RepairConfig::replica_failing_after) failures
//! in a row (default 3), one
//! [`FailureKind::ReplicaFailing`](crate::FailureKind::ReplicaFailing) from
//! [`Source::DataRepairer`](crate::Source::DataRepairer), addressed to
//! [`Target::Replica`](crate::Target::Replica), goes on the repairer's
//! failure bus, stamped with its clock. It is sent once per episode; the
//! episode ends when the replica serves a verified copy again. Lag is not a
//! failure: a replica skipped as behind, or whose copy is only older than
//! the page must be (its page LSN is below the page's expected LSN), counts
//! neither way.
//!
//! # Batches
//!
//! [`DataRepairer::repair_all`] and [`DataRepairer::repair_pending`] repair
//! pages in batches of [`repair_batch_pages`](RepairConfig::repair_batch_pages):
//! the fenced pages of a batch are rechecked in runs of up to 32 consecutive
//! pages, each run with one read of the store (with the write locks of its
//! pages held, so each page's verdict is the one a recheck of it alone would
//! give), the replicas' statuses are asked once per batch, each page of a batch is
//! fetched, verified and ranked exactly as above (the replica every page
//! asks first reads the batch's pages ahead, as one job on its helper), and
//! the winning copies are committed together through
//! [`commit_repairs`](CorruptionDetector::commit_repairs) with **one sync of
//! the store per batch**: the copies of up to 32 consecutive pages are
//! verified and written with one [`write_pages`](crate::PageStore::write_pages)
//! (one `pwrite` on a [`FileStore`](crate::FileStore)) under their write
//! locks, and re-read after the sync with one read. Under the trailer
//! placement a checksum depends on the page's number and bytes alone, so a
//! copy's checksum is computed once, when it is fetched: its commit checks
//! again only what can change meanwhile (the page's LSN floor), and a page
//! read back byte for byte equal to its copy has the copy's checksum (under
//! the sidecar placement, whose table can change, both are verified in
//! full). The promise is the same as for a single page: no
//! page is marked or reported repaired before the sync that covers its write
//! returned and it was re-read and re-verified, and a host write that lands
//! between the write and the sync stands. A page whose batch commit fails (a
//! failed sync fails every page of the batch) goes on exactly as a failed
//! single commit does: the next copy, the fallbacks (single commits), or
//! `Irreparable` — never `Repaired` without its own successful sync. When
//! the write of a run fails, its pages are written again one by one, and
//! only a page whose own write fails goes on that way.
//!
//! # A page no source holds: the rebuilder
//!
//! The last write of a page changed by a transaction that has not
//! committed exists only on the page and in the undo journal's
//! after-images: a replica kept in step with commits holds the version
//! before it, which fails the page's checksum. With a [`PageRebuilder`]
//! ([`DataRepairer::set_rebuilder`]; a
//! [`SelfHealer`](crate::healer::SelfHealer) over this repairer and a
//! [`TransactionRollbackManager`](crate::TransactionRollbackManager) sets
//! one), a repair that finds no copy to write gives the page's ticket back
//! and asks the rebuilder, before it calls the page irreparable. It
//! rebuilds the page from a replica's older copy and the changes it holds
//! (see
//! [`rebuild_page`](crate::TransactionRollbackManager::rebuild_page)):
//! written through the detector's repair protocol like any copy (never over
//! a newer host write; synced, re-read and re-verified), so the outcome is
//! [`RepairOutcome::Repaired`] from [`CopySource::Rebuilt`]. A rebuild
//! that writes nothing or fails leaves the outcome `Irreparable` (its error
//! in the reason). The rebuilder is asked only after every source failed,
//! and whether it holds changes for a page only when a replica's copy of it
//! fails verification (such a copy is then not held against the replica),
//! so it costs nothing on the common path.
//!
//! # On disk
//!
//! The repairer owns no file. It writes only pages of the host's store, and
//! only through `commit_repair` / `commit_repairs`. A crash during a repair
//! leaves the page either as it was (still corrupt, fenced again by the next
//! read or scrub, and repaired again) or holding the verified copy, since the
//! page is written whole and re-verified before anything is marked repaired;
//! a torn repair write fails verification at the next read like any other
//! damage.
//!
//! # Anti-entropy
//!
//! [`DataRepairer::anti_entropy`] compares a range of pages with one replica
//! by Merkle descent over range digests (see [`digest`](crate::digest)): it fetches pages
//! only in leaves whose digests differ. A differing page is repaired when
//! the local copy fails verification. A differing page whose local copy
//! verifies may be a newer host write the replica has not applied, so by
//! default it is only reported in [`AntiEntropyReport::diverged`]. With
//! [`RepairConfig::adopt_newer_copies`] and a page-LSN reader, a local page
//! that is older (by page LSN) than the replica's verified copy is replaced
//! with it through [`CorruptionDetector::replace_if_unchanged`], which
//! compares and writes with host writes to the page excluded, so a host write
//! that lands during the comparison is never overwritten.

pub(crate) mod ahead;
mod anti_entropy;
mod config;
mod courier;
mod failing;
mod fallback_read;
mod plan;
mod procedure;
mod replica_read;
mod report;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::clock::Clock;
use crate::corruption::CorruptionDetector;
use crate::error::{Error, Result};
use crate::host::{HostActions, PageSource, Replica};
use crate::types::{Failure, FailureSink, Lsn, PageId, ReplicaId};

pub use config::{RepairConfig, MAX_BATCH_PAGES, MAX_REPLICA_COOLOFF, MAX_REPLICA_READ_TIMEOUT};
pub use report::{
    AntiEntropyReport, Attempt, AttemptResult, CopySource, DivergedPage, FallbackStats,
    RepairOutcome, RepairReport, RepairStats, ReplicaStats,
};

use courier::{CallFailure, Limits};
use failing::FailingWatch;
use fallback_read::FallbackReader;
use replica_read::ReplicaReader;

/// Most replicas one repairer accepts.
pub const MAX_REPLICAS: usize = 64;

/// Most fallback sources one repairer accepts.
pub const MAX_FALLBACKS: usize = 16;

/// Pages per top-level anti-entropy tree: the local side keeps one leaf
/// digest per page of the tree being compared (8 bytes each, 512 KiB at most).
pub const ANTI_ENTROPY_TREE_PAGES: u64 = 65_536;

/// Rebuilds a page no source holds a copy of its last write of, from an
/// older copy and changes kept elsewhere (see
/// [the module docs](self#a-page-no-source-holds-the-rebuilder)).
pub trait PageRebuilder: Send + Sync {
    /// Whether changes are held for `page` that the replicas may not have:
    /// a replica's copy of it that fails verification may then be the
    /// version before them rather than damage, and is not held against
    /// the replica. Asked for every copy that fails verification, so it
    /// should do no I/O.
    fn holds_changes(&self, page: PageId) -> bool;

    /// Called by a repair of `page` that found no copy to write, after it
    /// gave the page's ticket back: rebuilds the page, writing it through
    /// the detector's repair protocol (a ticket of its own; never over a
    /// newer host write; synced, re-read and re-verified, as
    /// [`TransactionRollbackManager::rebuild_page`](crate::TransactionRollbackManager::rebuild_page)
    /// does), and returns the replica whose copy it was rebuilt from, or
    /// `Ok(None)` when it had nothing to rebuild it with. It may read the
    /// replicas through `repairer`
    /// ([`DataRepairer::replica_copies`]); it must not repair pages
    /// through it.
    ///
    /// # Errors
    /// Why the rebuild could not be tried or failed; the repair reports the
    /// page irreparable with it.
    fn rebuild(&self, repairer: &DataRepairer, page: PageId) -> Result<Option<ReplicaId>>;
}

#[derive(Debug, Default)]
struct Counters {
    attempted: AtomicU64,
    repaired: AtomicU64,
    from_fallback: AtomicU64,
    by_rebuild: AtomicU64,
    superseded: AtomicU64,
    irreparable: AtomicU64,
    not_needed: AtomicU64,
    bytes_fetched: AtomicU64,
    anti_entropy_runs: AtomicU64,
}

/// The counters of one replica or fallback source.
#[derive(Debug, Default)]
struct SourceCounters {
    fetched: AtomicU64,
    verified: AtomicU64,
    rejected: AtomicU64,
    unavailable: AtomicU64,
    timed_out: AtomicU64,
    stale: AtomicU64,
    used: AtomicU64,
}

impl SourceCounters {
    /// Counts a call that gave no answer.
    fn count_failure(&self, f: &CallFailure) {
        self.unavailable.fetch_add(1, Ordering::Relaxed);
        if f.timed_out() {
            self.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Clone)]
struct ReplicaEntry {
    id: ReplicaId,
    reader: Arc<ReplicaReader>,
    stats: Arc<SourceCounters>,
    failing: Arc<FailingWatch>,
}

impl ReplicaEntry {
    /// Counts a call that gave no answer, towards the replica failing too.
    fn count_failure(&self, f: &CallFailure) {
        self.stats.count_failure(f);
        self.failing.failed(&f.error);
    }
}

#[derive(Clone)]
struct FallbackEntry {
    /// Its name, asked once at registration.
    name: String,
    reader: Arc<FallbackReader>,
    stats: Arc<SourceCounters>,
}

/// Repairs fenced pages from verified replica copies, falls back to other
/// page sources, quarantines what cannot be repaired, and finds divergence
/// with a replica by Merkle anti-entropy.
///
/// Dropping it never waits for a hung call into a replica or fallback (see
/// the module docs): their helper threads end when the call returns.
///
/// ```
/// use std::sync::Arc;
/// use selfheal::repair::{RepairConfig, RepairOutcome};
/// use selfheal::{ChecksumPlacement, CorruptionConfig, MemStore, PageId, PageStore, StoreReplica};
///
/// // The local store, and a mirror holding the same sealed pages.
/// let local = Arc::new(MemStore::new(4096, 16)?);
/// let mirror = Arc::new(MemStore::new(4096, 16)?);
/// let detector = Arc::new(CorruptionConfig::new(ChecksumPlacement::Trailer).build(local.clone())?);
/// let mut page = vec![0x5A; 4096];
/// detector.write_sealed(PageId(3), &mut page)?;
/// mirror.write_page(PageId(3), &page)?;
///
/// let repairer = RepairConfig::new().build(detector.clone())?;
/// repairer.add_replica(Arc::new(StoreReplica::new("mirror", mirror)))?;
///
/// // The page rots on disk; the next verified read fences it.
/// local.write_page(PageId(3), &[0xFF; 4096])?;
/// let mut buf = vec![0u8; 4096];
/// assert!(detector.read_verified(PageId(3), &mut buf).is_err());
///
/// let report = repairer.repair_page(PageId(3))?;
/// assert!(matches!(report.outcome, RepairOutcome::Repaired { .. }));
/// detector.read_verified(PageId(3), &mut buf)?;
/// assert_eq!(buf, page);
/// # Ok::<(), selfheal::Error>(())
/// ```
pub struct DataRepairer {
    detector: Arc<CorruptionDetector>,
    max_copies: usize,
    require_majority: bool,
    adopt_newer: bool,
    read_timeout: Duration,
    cooloff: Duration,
    batch_pages: usize,
    clock: Arc<dyn Clock>,
    /// Failed calls in a row after which a replica is reported failing.
    failing_after: u32,
    sink: FailureSink,
    host: Option<Arc<dyn HostActions>>,
    replicas: RwLock<Vec<ReplicaEntry>>,
    fallbacks: RwLock<Vec<FallbackEntry>>,
    /// Tried for a page no source holds a copy of its last write of.
    rebuilder: RwLock<Option<Arc<dyn PageRebuilder>>>,
    stats: Counters,
}

impl fmt::Debug for DataRepairer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<ReplicaId> = self.replicas.read().iter().map(|e| e.id.clone()).collect();
        f.debug_struct("DataRepairer")
            .field("replicas", &ids)
            .field(
                "fallbacks",
                &self
                    .fallbacks
                    .read()
                    .iter()
                    .map(|f| f.name.clone())
                    .collect::<Vec<_>>(),
            )
            .field("max_copies", &self.max_copies)
            .field("require_majority", &self.require_majority)
            .field("read_timeout", &self.read_timeout)
            .field("batch_pages", &self.batch_pages)
            .field("failing_after", &self.failing_after)
            .finish_non_exhaustive()
    }
}

impl DataRepairer {
    /// The detector whose pages it repairs.
    #[must_use]
    pub fn detector(&self) -> &Arc<CorruptionDetector> {
        &self.detector
    }

    /// The failure bus it reports its own failures on (see
    /// [`RepairConfig::failure_sink`]; by default the detector's).
    #[must_use]
    pub fn failure_sink(&self) -> &FailureSink {
        &self.sink
    }

    /// The receiving end of its failure bus (cloning shares the queue).
    #[must_use]
    pub fn failures(&self) -> crossbeam_channel::Receiver<Failure> {
        self.sink.failures()
    }

    /// Registers a replica. Replicas may be added while repairs run. Its
    /// `id`, `page_size` and [`may_call_inline`](Replica::may_call_inline)
    /// are asked here, on the caller's thread, once; every later call into
    /// it runs on its helper thread with a deadline — or, for a replica that
    /// may be called inline, on the repairing thread without one.
    ///
    /// # Errors
    /// [`Error::PageSizeMismatch`] when its page size differs from the local
    /// store's; [`Error::DuplicateReplica`] when a replica with its id is
    /// registered; [`Error::InvalidArgument`] beyond [`MAX_REPLICAS`].
    pub fn add_replica(&self, replica: Arc<dyn Replica>) -> Result<()> {
        let id = replica.id();
        let inline = replica.may_call_inline();
        let expected = self.detector.store().page_size();
        let actual = replica.page_size();
        if actual != expected {
            return Err(Error::PageSizeMismatch {
                what: format!("replica {id}"),
                expected,
                actual,
            });
        }
        let mut v = self.replicas.write();
        if v.iter().any(|e| e.id == id) {
            return Err(Error::DuplicateReplica { replica: id });
        }
        if v.len() >= MAX_REPLICAS {
            return Err(Error::InvalidArgument {
                what: "replica",
                reason: format!(
                    "{MAX_REPLICAS} replicas are registered, the most one repairer takes"
                ),
            });
        }
        v.push(ReplicaEntry {
            reader: Arc::new(ReplicaReader::new(
                id.clone(),
                replica,
                self.limits(),
                inline,
            )),
            failing: Arc::new(FailingWatch::new(
                id.clone(),
                self.failing_after,
                self.sink.clone(),
                self.clock.clone(),
            )),
            id,
            stats: Arc::default(),
        });
        Ok(())
    }

    /// Unregisters a replica; returns whether it was registered. It does not
    /// wait: a call into the replica in flight for a repair under way goes on
    /// until it answers or misses its deadline.
    pub fn remove_replica(&self, id: &ReplicaId) -> bool {
        let mut v = self.replicas.write();
        let before = v.len();
        v.retain(|e| &e.id != id);
        v.len() != before
    }

    /// Sets (or with `None` clears) what a repair asks to rebuild a page
    /// no source holds a copy of its last write of (see
    /// [the module docs](self#a-page-no-source-holds-the-rebuilder)). A
    /// [`SelfHealer`](crate::healer::SelfHealer) built over this repairer
    /// and a rollback manager sets its own, replacing any set before. The
    /// repair reports `Repaired` from a rebuild only when the detector
    /// then holds the page repaired.
    pub fn set_rebuilder(&self, rebuilder: Option<Arc<dyn PageRebuilder>>) {
        *self.rebuilder.write() = rebuilder;
    }

    /// Asks the rebuilder, if one is set, to rebuild `page` (whose ticket
    /// the caller gave back): the replica whose copy it was rebuilt from,
    /// or `Ok(None)` when there was nothing to rebuild it with.
    pub(crate) fn try_rebuild(&self, page: PageId) -> Result<Option<ReplicaId>> {
        let Some(r) = self.rebuilder.read().clone() else {
            return Ok(None);
        };
        r.rebuild(self, page)
    }

    /// Whether a rebuilder is set.
    pub(crate) fn has_rebuilder(&self) -> bool {
        self.rebuilder.read().is_some()
    }

    /// Whether the rebuilder holds changes for `page` that the replicas
    /// may not have (see [`PageRebuilder::holds_changes`]).
    fn rebuilder_holds_changes(&self, page: PageId) -> bool {
        self.rebuilder
            .read()
            .as_ref()
            .is_some_and(|r| r.holds_changes(page))
    }

    /// The registered replicas' ids, in registration order.
    #[must_use]
    pub fn replica_ids(&self) -> Vec<ReplicaId> {
        self.replicas.read().iter().map(|e| e.id.clone()).collect()
    }

    /// Every registered replica's copy of `page`, as each answers within
    /// its read deadline (one that is down, cooling off, hung or failing is
    /// skipped and counted as in a repair), in registration order,
    /// **unverified**: for a caller that checks copies by other means, as
    /// [`TransactionRollbackManager::rebuild_page`](crate::TransactionRollbackManager::rebuild_page)
    /// does (a copy from before an uncommitted change is no repair copy:
    /// it fails the page's checksum or LSN). Nothing is written.
    #[must_use]
    pub fn replica_copies(&self, page: PageId) -> Vec<(ReplicaId, Vec<u8>)> {
        let ps = self.detector.store().page_size();
        let replicas = self.replicas.read().clone();
        let mut copies = Vec::with_capacity(replicas.len());
        for e in replicas {
            match e.reader.read(page, ps) {
                Ok(copy) => {
                    e.stats.fetched.fetch_add(1, Ordering::Relaxed);
                    copies.push((e.id.clone(), copy));
                }
                Err(f) => e.count_failure(&f),
            }
        }
        copies
    }

    /// Adds a last-resort source, tried in the order added when no replica
    /// copy could be written. Its `name` is asked here, on the caller's
    /// thread, once; its reads run on its own helper thread
    /// (`selfheal-fallback-read`) with the deadline and cool-off of replica
    /// calls (see the module docs).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] beyond [`MAX_FALLBACKS`].
    pub fn add_fallback(&self, source: Arc<dyn PageSource>) -> Result<()> {
        let name = source.name();
        let mut v = self.fallbacks.write();
        if v.len() >= MAX_FALLBACKS {
            return Err(Error::InvalidArgument {
                what: "fallback",
                reason: format!(
                    "{MAX_FALLBACKS} fallbacks are registered, the most one repairer takes"
                ),
            });
        }
        v.push(FallbackEntry {
            reader: Arc::new(FallbackReader::new(name.clone(), source, self.limits())),
            name,
            stats: Arc::default(),
        });
        Ok(())
    }

    /// Asks the host to rebuild a derived structure (an index) from base data.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty name; [`Error::Unsupported`]
    /// when no host actions were configured or the host does not implement
    /// rebuilding; the host's error otherwise.
    pub fn rebuild_index(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::InvalidArgument {
                what: "index",
                reason: "the index name is empty".into(),
            });
        }
        match &self.host {
            Some(h) => h.rebuild_index(name),
            None => Err(Error::Unsupported {
                action: "rebuild_index",
            }),
        }
    }

    /// Current counters.
    #[must_use]
    pub fn stats(&self) -> RepairStats {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let fallbacks = self
            .fallbacks
            .read()
            .iter()
            .map(|f| FallbackStats {
                source: f.name.clone(),
                copies_fetched: l(&f.stats.fetched),
                verified: l(&f.stats.verified),
                rejected: l(&f.stats.rejected),
                unavailable: l(&f.stats.unavailable),
                timed_out: l(&f.stats.timed_out),
                used: l(&f.stats.used),
            })
            .collect();
        RepairStats {
            attempted: l(&s.attempted),
            repaired: l(&s.repaired),
            repaired_from_fallback: l(&s.from_fallback),
            repaired_by_rebuild: l(&s.by_rebuild),
            superseded: l(&s.superseded),
            irreparable: l(&s.irreparable),
            not_needed: l(&s.not_needed),
            bytes_fetched: l(&s.bytes_fetched),
            anti_entropy_runs: l(&s.anti_entropy_runs),
            replicas: self
                .replicas
                .read()
                .iter()
                .map(|e| ReplicaStats {
                    replica: e.id.clone(),
                    copies_fetched: l(&e.stats.fetched),
                    verified: l(&e.stats.verified),
                    rejected: l(&e.stats.rejected),
                    unavailable: l(&e.stats.unavailable),
                    timed_out: l(&e.stats.timed_out),
                    stale: l(&e.stats.stale),
                    used: l(&e.stats.used),
                })
                .collect(),
            fallbacks,
        }
    }

    /// The deadline, cool-off and clock of every call into a replica or a
    /// fallback source.
    fn limits(&self) -> Limits {
        Limits {
            timeout: self.read_timeout,
            cooloff: self.cooloff,
            clock: self.clock.clone(),
        }
    }

    /// A copy of `page` from `entry` failed verification with `e`: it counts
    /// towards the replica failing, unless it is only older than `needed`
    /// (the LSN the page must carry), which is lag, not a failure. An older
    /// copy fails as stale under the trailer placement, and as a checksum
    /// mismatch under the sidecar one (the table holds the newest page's
    /// checksum): its page LSN tells.
    fn copy_rejected(
        &self,
        entry: &ReplicaEntry,
        page: PageId,
        copy: &[u8],
        e: &Error,
        needed: Option<Lsn>,
    ) {
        let older = matches!(e, Error::StalePage { .. })
            || matches!(
                (self.detector.page_lsn_of(copy), needed),
                (Some(lsn), Some(needed)) if lsn < needed
            );
        // A copy from before changes the replicas never got is no sign of
        // a failing replica either.
        if !older && !self.rebuilder_holds_changes(page) {
            entry
                .failing
                .failed(&format_args!("its copy of page {page}: {e}"));
        }
    }

    /// Time since `started_ns` on the repairer's clock.
    fn elapsed(&self, started_ns: u64) -> Duration {
        Duration::from_nanos(self.clock.now_ns().saturating_sub(started_ns))
    }
}
