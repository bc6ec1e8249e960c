//! `DataRepairer`: repair corrupt pages from verified replica copies.
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
//! 3. Replicas are ordered by availability, then least lag. A replica that is
//!    down, cooling off (see below), or whose applied LSN is known to be
//!    below the LSN the page must have
//!    ([`last_written_lsn`](CorruptionDetector::last_written_lsn)) is
//!    skipped. Copies are fetched until
//!    [`max_replicas_per_repair`](RepairConfig::max_replicas_per_repair) of
//!    them verified or every replica was asked; each is verified like a local
//!    read (checksum, page number, and staleness when the detector has a
//!    page-LSN reader). A copy that fails verification never counts, never
//!    votes and is never written: a corrupt replica cannot overwrite anything.
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
//!    and verified all the same).
//! 6. If the host rewrote the page at any point after step 2, nothing is
//!    written: the host's newer page stands ([`RepairOutcome::Superseded`]).
//! 7. When nothing works, the ticket is abandoned: the page becomes
//!    `Irreparable`, stays fenced, and a
//!    [`FailureKind::IrreparablePage`] report goes through the detector's sink.
//!
//! # After a restart
//!
//! The detector's memory of each page's LSN is empty after a restart, so
//! only the ranking of step 4 stands between a stale majority and the
//! current page then, and it needs one replica holding the current page. When
//! every replica is stale, only the host knows: give the detector an
//! [expected-LSN hook](crate::corruption::DetectorConfig::expected_page_lsn)
//! answered from the host's WAL or page map, and stale copies fail
//! verification as [`Error::StalePage`] (the page is then irreparable from
//! replicas, never reverted).
//!
//! # Slow, hung and panicking replicas
//!
//! Replica reads run on a helper thread per replica (`selfheal-replica-read`)
//! and the repairer waits for each at most
//! [`replica_read_timeout`](RepairConfig::replica_read_timeout). A read that
//! misses it, or panics, makes the replica unavailable (counted in its
//! [`ReplicaStats`]) for a [cool-off](RepairConfig::replica_cooloff), and for
//! as long as an abandoned read of it has not returned, so a hung replica
//! costs one deadline, not one per page (see `replica_read.rs`).
//!
//! # Batches
//!
//! [`DataRepairer::repair_all`] and [`DataRepairer::repair_pending`] repair
//! pages in batches of [`repair_batch_pages`](RepairConfig::repair_batch_pages):
//! each page of a batch is fetched, verified and ranked exactly as above (the
//! replica every page asks first reads the batch's pages ahead, as one job on
//! its helper), and the winning copies are committed together through
//! [`commit_repairs`](CorruptionDetector::commit_repairs) with **one sync of
//! the store per batch**. The promise is the same as for a single page: no
//! page is marked or reported repaired before the sync that covers its write
//! returned and it was re-read and re-verified, and a host write that lands
//! between the write and the sync stands. A page whose batch commit fails (a
//! failed sync fails every page of the batch) goes on exactly as a failed
//! single commit does: the next copy, the fallbacks (single commits), or
//! `Irreparable` — never `Repaired` without its own successful sync.
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
//! by Merkle descent over range digests (see [`merkle`]): it fetches pages
//! only in leaves whose digests differ. A differing page is repaired when
//! the local copy fails verification. A differing page whose local copy
//! verifies may be a newer host write the replica has not applied, so by
//! default it is only reported in [`AntiEntropyReport::diverged`]. With
//! [`RepairConfig::adopt_newer_copies`] and a page-LSN reader, a local page
//! that is older (by page LSN) than the replica's verified copy is replaced
//! with it through [`CorruptionDetector::replace_if_unchanged`], which
//! compares and writes with host writes to the page excluded, so a host write
//! that lands during the comparison is never overwritten.

mod anti_entropy;
mod config;
pub mod merkle;
mod plan;
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
use crate::corruption::{
    Commit, CommitResult, CorruptionDetector, PageState, RepairTicket, Verdict,
};
use crate::error::{Error, Result};
use crate::host::{HostActions, PageSource, Replica, ReplicaStatus};
use crate::types::{Failure, FailureKind, Lsn, PageId, ReplicaId};

pub use config::{RepairConfig, MAX_BATCH_PAGES, MAX_REPLICA_COOLOFF, MAX_REPLICA_READ_TIMEOUT};
pub use merkle::{leaf_digest, range_digest, RangeDigest};
pub use report::{
    AntiEntropyReport, Attempt, AttemptResult, CopySource, DivergedPage, RepairOutcome,
    RepairReport, RepairStats, ReplicaStats,
};

use plan::{order_replicas, rank_copies, Group, Skip, Standing};
use replica_read::{ReadFailure, ReplicaReader, Stream};

/// Most replicas one repairer accepts.
pub const MAX_REPLICAS: usize = 64;

/// Most fallback sources one repairer accepts.
pub const MAX_FALLBACKS: usize = 16;

/// Pages per top-level anti-entropy tree: the local side keeps one leaf
/// digest per page of the tree being compared (8 bytes each, 512 KiB at most).
pub const ANTI_ENTROPY_TREE_PAGES: u64 = 65_536;

#[derive(Debug, Default)]
struct Counters {
    attempted: AtomicU64,
    repaired: AtomicU64,
    from_fallback: AtomicU64,
    superseded: AtomicU64,
    irreparable: AtomicU64,
    not_needed: AtomicU64,
    bytes_fetched: AtomicU64,
    anti_entropy_runs: AtomicU64,
}

#[derive(Debug, Default)]
struct ReplicaCounters {
    fetched: AtomicU64,
    verified: AtomicU64,
    rejected: AtomicU64,
    unavailable: AtomicU64,
    timed_out: AtomicU64,
    stale: AtomicU64,
    used: AtomicU64,
}

#[derive(Clone)]
struct ReplicaEntry {
    id: ReplicaId,
    reader: Arc<ReplicaReader>,
    stats: Arc<ReplicaCounters>,
}

impl ReplicaEntry {
    /// Counts a read that gave no copy.
    fn count_failure(&self, f: &ReadFailure) {
        self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
        if f.timed_out() {
            self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Repairs fenced pages from verified replica copies, falls back to other
/// page sources, quarantines what cannot be repaired, and finds divergence
/// with a replica by Merkle anti-entropy.
///
/// Dropping it never waits for a hung replica read (see the module docs).
///
/// ```
/// use std::sync::Arc;
/// use selfheal::repair::{RepairConfig, RepairOutcome};
/// use selfheal::{ChecksumPlacement, DetectorConfig, MemStore, PageId, PageStore, StoreReplica};
///
/// // The local store, and a mirror holding the same sealed pages.
/// let local = Arc::new(MemStore::new(4096, 16)?);
/// let mirror = Arc::new(MemStore::new(4096, 16)?);
/// let detector = Arc::new(DetectorConfig::new(ChecksumPlacement::Trailer).build(local.clone())?);
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
    host: Option<Arc<dyn HostActions>>,
    replicas: RwLock<Vec<ReplicaEntry>>,
    fallbacks: RwLock<Vec<Arc<dyn PageSource>>>,
    stats: Counters,
}

impl fmt::Debug for DataRepairer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<ReplicaId> = self.replicas.read().iter().map(|e| e.id.clone()).collect();
        f.debug_struct("DataRepairer")
            .field("replicas", &ids)
            .field("fallbacks", &self.fallbacks.read().len())
            .field("max_copies", &self.max_copies)
            .field("require_majority", &self.require_majority)
            .field("read_timeout", &self.read_timeout)
            .field("batch_pages", &self.batch_pages)
            .finish_non_exhaustive()
    }
}

/// A verified copy waiting for the ranking.
struct Candidate {
    attempt: usize,
    replica: usize,
    bytes: Vec<u8>,
    lsn: Option<Lsn>,
}

/// How the first step of a repair ended.
enum Start<'d> {
    /// Nothing to fetch: the report is final.
    Done(RepairReport),
    /// The page is ours to repair.
    Ticket(RepairTicket<'d>),
}

/// Reads of a batch's pages queued ahead on the replica that comes first.
struct Prefetch {
    replica: ReplicaId,
    stream: Stream,
}

/// The replicas as a repair sees them now: each with why it must not be
/// asked (hung or cooling off), and its status (not asked of a blocked one).
struct Survey {
    replicas: Vec<ReplicaEntry>,
    blocked: Vec<Option<String>>,
    statuses: Vec<ReplicaStatus>,
}

/// A repair between fetching and committing.
struct Pending<'d> {
    /// `None` while a batch commit holds it.
    ticket: Option<RepairTicket<'d>>,
    report: RepairReport,
    needed: Option<Lsn>,
    replicas: Vec<ReplicaEntry>,
    candidates: Vec<Candidate>,
    /// Eligible groups in rank order (all at the newest LSN).
    eligible: Vec<Group>,
    /// The newest page LSN among the verified copies.
    newest: Option<Lsn>,
}

impl Pending<'_> {
    /// The copy a commit writes first, if any copy may be written.
    fn lead(&self) -> Option<&[u8]> {
        let g = self.eligible.first()?;
        Some(&self.candidates[g.members[0]].bytes)
    }
}

impl DataRepairer {
    /// The detector whose pages it repairs.
    #[must_use]
    pub fn detector(&self) -> &Arc<CorruptionDetector> {
        &self.detector
    }

    /// Registers a replica. Replicas may be added while repairs run.
    ///
    /// # Errors
    /// [`Error::PageSizeMismatch`] when its page size differs from the local
    /// store's; [`Error::DuplicateReplica`] when a replica with its id is
    /// registered; [`Error::InvalidArgument`] beyond [`MAX_REPLICAS`].
    pub fn add_replica(&self, replica: Arc<dyn Replica>) -> Result<()> {
        let id = replica.id();
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
            reader: Arc::new(ReplicaReader::new(id.clone(), replica)),
            id,
            stats: Arc::default(),
        });
        Ok(())
    }

    /// Unregisters a replica; returns whether it was registered. A read of it
    /// in flight finishes (or is abandoned at its deadline) first.
    pub fn remove_replica(&self, id: &ReplicaId) -> bool {
        let mut v = self.replicas.write();
        let before = v.len();
        v.retain(|e| &e.id != id);
        v.len() != before
    }

    /// The registered replicas' ids, in registration order.
    #[must_use]
    pub fn replica_ids(&self) -> Vec<ReplicaId> {
        self.replicas.read().iter().map(|e| e.id.clone()).collect()
    }

    /// Adds a last-resort source, tried in the order added when no replica
    /// copy could be written.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] beyond [`MAX_FALLBACKS`].
    pub fn add_fallback(&self, source: Arc<dyn PageSource>) -> Result<()> {
        let mut v = self.fallbacks.write();
        if v.len() >= MAX_FALLBACKS {
            return Err(Error::InvalidArgument {
                what: "fallback",
                reason: format!(
                    "{MAX_FALLBACKS} fallbacks are registered, the most one repairer takes"
                ),
            });
        }
        v.push(source);
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
        RepairStats {
            attempted: l(&s.attempted),
            repaired: l(&s.repaired),
            repaired_from_fallback: l(&s.from_fallback),
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
        }
    }

    fn elapsed(&self, started_ns: u64) -> Duration {
        Duration::from_nanos(self.clock.now_ns().saturating_sub(started_ns))
    }

    /// Repairs one fenced page (see the module docs for the procedure), with
    /// a sync of its own.
    ///
    /// Every way a repair can end — including no source having a good copy —
    /// is an `Ok` report; see [`RepairReport::outcome`]. A panic of a host
    /// fallback source unwinds to the caller, and the page goes back to
    /// `Suspect` on the way; a replica's panic is caught on its read helper.
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] for a page past the end of the store.
    pub fn repair_page(&self, page: PageId) -> Result<RepairReport> {
        let started = self.clock.now_ns();
        let page_count = self.detector.store().page_count();
        if page.0 >= page_count {
            return Err(Error::PageOutOfRange { page, page_count });
        }
        let report = match self.start(page) {
            Start::Done(report) => report,
            Start::Ticket(ticket) => {
                let pending = self.gather(ticket, None);
                self.settle(pending, None)
            }
        };
        Ok(self.finish(report, started))
    }

    /// Repairs every `Suspect` page, in page order, in batches with one sync
    /// each (see the module docs).
    pub fn repair_pending(&self) -> Vec<RepairReport> {
        self.repair_states(&[PageState::Suspect])
    }

    /// Repairs every `Suspect` page and tries every `Irreparable` page again
    /// (a replica may have come back), in page order, in batches with one
    /// sync each (see the module docs).
    pub fn repair_all(&self) -> Vec<RepairReport> {
        self.repair_states(&[PageState::Suspect, PageState::Irreparable])
    }

    fn repair_states(&self, states: &[PageState]) -> Vec<RepairReport> {
        let mut pages: Vec<PageId> = states
            .iter()
            .flat_map(|s| self.detector.pages_in(*s))
            .collect();
        pages.sort_unstable();
        pages.dedup();
        let mut reports = Vec::with_capacity(pages.len());
        for batch in pages.chunks(self.batch_pages) {
            reports.extend(self.repair_batch(batch));
        }
        reports
    }

    /// Repairs `pages` with one batch commit of their winning replica copies.
    fn repair_batch(&self, pages: &[PageId]) -> Vec<RepairReport> {
        let started = self.clock.now_ns();
        let page_count = self.detector.store().page_count();
        let mut done: Vec<(usize, RepairReport)> = Vec::new();
        let mut tickets: Vec<(usize, RepairTicket<'_>)> = Vec::new();
        // A page past the end (the store shrank) cannot be repaired; skip it.
        for (i, &page) in pages.iter().enumerate() {
            if page.0 >= page_count {
                continue;
            }
            match self.start(page) {
                Start::Done(report) => done.push((i, report)),
                Start::Ticket(ticket) => tickets.push((i, ticket)),
            }
        }
        let mut prefetch = self.prefetch(tickets.iter().map(|(_, t)| t.page()).collect());
        let mut to_commit: Vec<(usize, Pending<'_>)> = Vec::new();
        let mut without_copy: Vec<(usize, Pending<'_>)> = Vec::new();
        for (i, ticket) in tickets {
            let pending = self.gather(ticket, prefetch.as_mut());
            if pending.lead().is_some() {
                to_commit.push((i, pending));
            } else {
                without_copy.push((i, pending));
            }
        }
        drop(prefetch);
        let batch: Vec<(RepairTicket<'_>, &[u8])> = to_commit
            .iter_mut()
            .map(|(_, p)| {
                let ticket = p.ticket.take().expect("a gathered repair holds its ticket");
                (ticket, p.lead().expect("only pages with a copy"))
            })
            .collect();
        let results = if batch.is_empty() {
            Vec::new()
        } else {
            self.detector.commit_repairs(batch)
        };
        for ((i, pending), result) in to_commit.into_iter().zip(results) {
            done.push((i, self.settle(pending, Some(result))));
        }
        for (i, pending) in without_copy {
            done.push((i, self.settle(pending, None)));
        }
        done.sort_by_key(|(i, _)| *i);
        done.into_iter()
            .map(|(_, report)| self.finish(report, started))
            .collect()
    }

    /// Queues the reads of a batch's pages on the replica every page would
    /// ask first, so that the helper reads ahead while pages are verified.
    /// `None` when no replica can be asked (each page then finds out why).
    fn prefetch(&self, pages: Vec<PageId>) -> Option<Prefetch> {
        if pages.is_empty() {
            return None;
        }
        let survey = self.survey();
        let (first, _) = order_replicas(&survey.statuses, None)
            .into_iter()
            .find(|(_, skip)| skip.is_none())?;
        let entry = &survey.replicas[first];
        let ps = self.detector.store().page_size();
        let stream = entry.reader.stream(pages, ps, self.clock.as_ref()).ok()?;
        Some(Prefetch {
            replica: entry.id.clone(),
            stream,
        })
    }

    fn survey(&self) -> Survey {
        let replicas: Vec<ReplicaEntry> = self.replicas.read().clone();
        // A replica that is hung or cooling off is not even asked for its status.
        let now = self.clock.now_ns();
        let blocked: Vec<Option<String>> = replicas
            .iter()
            .map(|e| e.reader.unavailable_reason(now))
            .collect();
        let statuses = replicas
            .iter()
            .zip(&blocked)
            .map(|(e, b)| match b {
                Some(_) => ReplicaStatus {
                    available: false,
                    lag: crate::host::ReplicaLag::default(),
                },
                None => e.reader.replica().status(),
            })
            .collect();
        Survey {
            replicas,
            blocked,
            statuses,
        }
    }

    /// Step 1: unfences a page whose fault went away, or takes its ticket.
    fn start(&self, page: PageId) -> Start<'_> {
        match self.detector.page_state(page) {
            Some(PageState::Suspect | PageState::Irreparable) => {
                // A fault that has gone away needs no copy; recheck lifts the fence.
                match self.detector.recheck(page) {
                    Ok(Verdict::Clean | Verdict::Transient) => {
                        Start::Done(RepairReport::new(page, RepairOutcome::NotNeeded))
                    }
                    Ok(Verdict::Corrupt { .. }) | Err(_) => {
                        match self.detector.begin_repair(page) {
                            Some(ticket) => {
                                self.stats.attempted.fetch_add(1, Ordering::Relaxed);
                                Start::Ticket(ticket)
                            }
                            None => Start::Done(RepairReport::new(page, self.idle_outcome(page))),
                        }
                    }
                }
            }
            _ => Start::Done(RepairReport::new(page, self.idle_outcome(page))),
        }
    }

    fn idle_outcome(&self, page: PageId) -> RepairOutcome {
        if self.detector.page_state(page) == Some(PageState::Repairing) {
            RepairOutcome::InProgress
        } else {
            RepairOutcome::NotNeeded
        }
    }

    /// Counts a finished repair and stamps its duration.
    fn finish(&self, mut report: RepairReport, started_ns: u64) -> RepairReport {
        match &report.outcome {
            RepairOutcome::Repaired { source } => {
                self.stats.repaired.fetch_add(1, Ordering::Relaxed);
                if matches!(source, CopySource::Fallback(_)) {
                    self.stats.from_fallback.fetch_add(1, Ordering::Relaxed);
                }
            }
            RepairOutcome::Superseded => {
                self.stats.superseded.fetch_add(1, Ordering::Relaxed);
            }
            RepairOutcome::Irreparable { .. } => {
                self.stats.irreparable.fetch_add(1, Ordering::Relaxed);
            }
            RepairOutcome::NotNeeded | RepairOutcome::InProgress => {
                self.stats.not_needed.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.stats
            .bytes_fetched
            .fetch_add(report.bytes_fetched, Ordering::Relaxed);
        report.duration = self.elapsed(started_ns);
        tracing::debug!(page = %report.page, outcome = ?report.outcome, "repair finished");
        report
    }

    /// Steps 3 and 4: fetches and verifies replica copies (taking them from
    /// `prefetch` where it holds them), and ranks them.
    fn gather<'d>(
        &'d self,
        ticket: RepairTicket<'d>,
        mut prefetch: Option<&mut Prefetch>,
    ) -> Pending<'d> {
        let page = ticket.page();
        let ps = self.detector.store().page_size();
        let needed = self.detector.last_written_lsn(page);
        let Survey {
            replicas,
            mut blocked,
            statuses,
        } = self.survey();
        let mut report = RepairReport::new(page, RepairOutcome::NotNeeded);
        let mut candidates: Vec<Candidate> = Vec::new();

        for (idx, skip) in order_replicas(&statuses, needed) {
            let entry = &replicas[idx];
            let source = CopySource::Replica(entry.id.clone());
            match skip {
                Some(Skip::Unavailable) => {
                    entry.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                    let reason = blocked[idx]
                        .take()
                        .unwrap_or_else(|| "its status says it cannot serve reads".into());
                    report.attempts.push(Attempt {
                        source,
                        result: AttemptResult::Unavailable(Error::ReplicaUnavailable {
                            replica: entry.id.clone(),
                            reason,
                        }),
                    });
                    continue;
                }
                Some(Skip::Behind { applied, needed }) => {
                    entry.stats.stale.fetch_add(1, Ordering::Relaxed);
                    report.attempts.push(Attempt {
                        source,
                        result: AttemptResult::Stale { applied, needed },
                    });
                    continue;
                }
                None => {}
            }
            // Only verified copies count toward the limit.
            if candidates.len() == self.max_copies {
                break;
            }
            let clock = self.clock.as_ref();
            let ahead = match prefetch.as_deref_mut() {
                Some(pf) if pf.replica == entry.id => {
                    entry
                        .reader
                        .take(&mut pf.stream, page, self.read_timeout, self.cooloff, clock)
                }
                _ => None,
            };
            let read = ahead.unwrap_or_else(|| {
                entry
                    .reader
                    .read(page, ps, self.read_timeout, self.cooloff, clock)
            });
            let result = match read {
                Err(f) => {
                    entry.count_failure(&f);
                    AttemptResult::Unavailable(f.error)
                }
                Ok(buf) => {
                    entry.stats.fetched.fetch_add(1, Ordering::Relaxed);
                    report.bytes_fetched += ps as u64;
                    match self.detector.verify(page, &buf) {
                        Err(e) => {
                            entry.stats.rejected.fetch_add(1, Ordering::Relaxed);
                            AttemptResult::FailedVerification(e)
                        }
                        Ok(()) => {
                            entry.stats.verified.fetch_add(1, Ordering::Relaxed);
                            candidates.push(Candidate {
                                attempt: report.attempts.len(),
                                replica: idx,
                                lsn: self.detector.page_lsn_of(&buf),
                                bytes: buf,
                            });
                            AttemptResult::Verified
                        }
                    }
                }
            };
            report.attempts.push(Attempt { source, result });
        }

        let groups = {
            let views: Vec<(&[u8], Option<Lsn>)> = candidates
                .iter()
                .map(|c| (c.bytes.as_slice(), c.lsn))
                .collect();
            rank_copies(&views, self.require_majority)
        };
        let newest = groups.first().and_then(|g| g.lsn);
        for g in &groups {
            for &m in &g.members {
                report.attempts[candidates[m].attempt].result = match g.standing {
                    Standing::Eligible => continue,
                    Standing::NoMajority { of } => AttemptResult::NoMajority {
                        votes: g.votes(),
                        of,
                    },
                    Standing::Older { newest } => AttemptResult::OlderCopy { lsn: g.lsn, newest },
                };
            }
        }
        Pending {
            ticket: Some(ticket),
            report,
            needed,
            replicas,
            candidates,
            eligible: groups.into_iter().filter(Group::eligible).collect(),
            newest,
        }
    }

    /// Steps 5 to 7: commits the best copy (or takes the result of its batch
    /// commit as `first`), then the next copies, then the fallbacks, and
    /// abandons the ticket when nothing could be written.
    fn settle<'d>(&'d self, mut p: Pending<'d>, first: Option<CommitResult<'d>>) -> RepairReport {
        let page = p.report.page;
        debug_assert_eq!(first.is_some(), p.ticket.is_none());
        let mut first = first;
        for gi in 0..p.eligible.len() {
            let g = &p.eligible[gi];
            let lead = &p.candidates[g.members[0]];
            let result = match first.take() {
                Some(r) => r,
                None => self
                    .detector
                    .commit_repair(p.ticket.take().expect("held between commits"), &lead.bytes),
            };
            match result {
                Ok(commit) => {
                    // Copies of other groups lost the vote only if a copy was
                    // written; a superseded repair decided nothing.
                    if commit == Commit::Written {
                        for later in &p.eligible[gi + 1..] {
                            for &m in &later.members {
                                p.report.attempts[p.candidates[m].attempt].result =
                                    AttemptResult::LostVote {
                                        votes: later.votes(),
                                        winner_votes: g.votes(),
                                    };
                            }
                        }
                    }
                    p.report.outcome = match commit {
                        Commit::Written => {
                            let entry = &p.replicas[lead.replica];
                            entry.stats.used.fetch_add(1, Ordering::Relaxed);
                            RepairOutcome::Repaired {
                                source: CopySource::Replica(entry.id.clone()),
                            }
                        }
                        Commit::Superseded => RepairOutcome::Superseded,
                    };
                    return p.report;
                }
                Err((back, e)) => {
                    tracing::warn!(%page, error = %e, "writing a verified replica copy failed");
                    let reason = e.to_string();
                    p.report.attempts[lead.attempt].result = AttemptResult::CommitFailed(e);
                    for &m in &g.members[1..] {
                        p.report.attempts[p.candidates[m].attempt].result =
                            AttemptResult::CommitFailed(Error::Irreparable {
                                page,
                                reason: format!("an identical copy failed to commit: {reason}"),
                            });
                    }
                    p.ticket = Some(back);
                }
            }
        }
        let mut ticket = p.ticket.take().expect("held after the replica copies");

        // A fallback copy must not be older than the page must be, nor older
        // than a verified replica copy that could not be written.
        let floor = p.needed.max(p.newest);
        let ps = self.detector.store().page_size();
        let fallbacks: Vec<Arc<dyn PageSource>> = self.fallbacks.read().clone();
        for fb in fallbacks {
            let source = CopySource::Fallback(fb.name());
            let mut buf = vec![0u8; ps];
            let result = match fb.read_page(page, floor, &mut buf) {
                Ok(false) => AttemptResult::NoCopy,
                Err(e) => AttemptResult::Unavailable(e),
                Ok(true) => {
                    p.report.bytes_fetched += ps as u64;
                    let lsn = self.detector.page_lsn_of(&buf);
                    match self.detector.verify(page, &buf) {
                        Err(e) => AttemptResult::FailedVerification(e),
                        Ok(()) if p.newest.is_some_and(|n| lsn < Some(n)) => {
                            AttemptResult::OlderCopy {
                                lsn,
                                newest: p.newest.expect("checked"),
                            }
                        }
                        Ok(()) => match self.detector.commit_repair(ticket, &buf) {
                            Ok(commit) => {
                                p.report.attempts.push(Attempt {
                                    source: source.clone(),
                                    result: AttemptResult::Verified,
                                });
                                p.report.outcome = match commit {
                                    Commit::Written => RepairOutcome::Repaired { source },
                                    Commit::Superseded => RepairOutcome::Superseded,
                                };
                                return p.report;
                            }
                            Err((back, e)) => {
                                ticket = back;
                                AttemptResult::CommitFailed(e)
                            }
                        },
                    }
                }
            };
            p.report.attempts.push(Attempt { source, result });
        }

        let reason = irreparable_reason(&p.report.attempts);
        if self.detector.abandon_repair(ticket) {
            tracing::error!(%page, %reason, "page is irreparable");
            self.detector.report(Failure::new(
                FailureKind::IrreparablePage { page },
                format!("page {page} is irreparable: {reason}"),
                self.clock.now_ns(),
            ));
            p.report.outcome = RepairOutcome::Irreparable { reason };
        } else {
            // The host rewrote the page while every source was failing.
            p.report.outcome = RepairOutcome::Superseded;
        }
        p.report
    }
}

fn irreparable_reason(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "no replica or fallback source is registered".into();
    }
    let parts: Vec<String> = attempts
        .iter()
        .map(|a| {
            let what = match &a.result {
                AttemptResult::Verified => "verified".to_owned(),
                AttemptResult::LostVote {
                    votes,
                    winner_votes,
                } => format!("lost the vote {votes} to {winner_votes}"),
                AttemptResult::NoMajority { votes, of } => {
                    format!("no majority ({votes} of {of} copies at the newest LSN agree)")
                }
                AttemptResult::OlderCopy { lsn, newest } => match lsn {
                    Some(l) => format!("copy has LSN {l}, older than the newest copy's {newest}"),
                    None => format!("copy has no readable LSN; the newest copy has {newest}"),
                },
                AttemptResult::FailedVerification(e) => format!("copy failed verification: {e}"),
                AttemptResult::Unavailable(e) => format!("unavailable: {e}"),
                AttemptResult::Stale { applied, needed } => {
                    format!("behind (applied LSN {applied}, needed {needed})")
                }
                AttemptResult::NoCopy => "has no copy new enough".to_owned(),
                AttemptResult::CommitFailed(e) => format!("writing its copy failed: {e}"),
            };
            format!("{}: {what}", a.source)
        })
        .collect();
    parts.join("; ")
}
