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
//!    remembers the page's epoch.
//! 3. Replicas are ordered by availability, then least lag. A replica that is
//!    down, or whose applied LSN is known to be below the LSN the local store
//!    last wrote to the page, is skipped. Up to
//!    [`max_replicas_per_repair`](RepairConfig::max_replicas_per_repair)
//!    copies are fetched and each is verified like a local read (checksum,
//!    page number, and staleness when the detector has a page-LSN reader).
//! 4. Copies that verify vote: byte-identical copies form a group, and the
//!    group with the most votes wins (ties go to the newer page LSN, then to
//!    the better replica). A copy that fails verification never votes and is
//!    never written: a corrupt replica cannot overwrite anything.
//! 5. The winning copy goes to
//!    [`commit_repair`](CorruptionDetector::commit_repair), which writes,
//!    syncs, re-reads and re-verifies with host writes to the page excluded.
//!    If that fails, the next distinct verified copy is tried, then each
//!    fallback [`PageSource`] (asked for a copy not older than the page's
//!    last written LSN, and verified all the same).
//! 6. If the host rewrote the page at any point after step 2, nothing is
//!    written: the host's newer page stands ([`RepairOutcome::Superseded`]).
//! 7. When nothing works, the ticket is abandoned: the page becomes
//!    `Irreparable`, stays fenced, and a
//!    [`FailureKind::IrreparablePage`] report goes through the detector's sink.
//!
//! # On disk
//!
//! The repairer owns no file. It writes only pages of the host's store, and
//! only through `commit_repair`. A crash during a repair leaves the page
//! either as it was (still corrupt, fenced again by the next read or scrub,
//! and repaired again) or holding the verified copy, since the page is
//! written whole and re-verified before anything is marked repaired; a torn
//! repair write fails verification at the next read like any other damage.
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

pub mod merkle;
mod plan;

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::clock::Clock;
use crate::corruption::{Commit, CorruptionDetector, Observer, PageState, RepairTicket, Verdict};
use crate::error::{Error, Result};
use crate::host::{HostActions, PageSource, Replica};
use crate::types::{Failure, FailureKind, Lsn, PageId, ReplicaId};

pub use merkle::{leaf_digest, range_digest, RangeDigest};

use plan::{order_replicas, rank_copies, Skip};

/// Most replicas one repairer accepts.
pub const MAX_REPLICAS: usize = 64;

/// Most fallback sources one repairer accepts.
pub const MAX_FALLBACKS: usize = 16;

/// Pages per top-level anti-entropy tree: the local side keeps one leaf
/// digest per page of the tree being compared (8 bytes each, 512 KiB at most).
pub const ANTI_ENTROPY_TREE_PAGES: u64 = 65_536;

/// Configuration of a [`DataRepairer`].
#[must_use]
pub struct RepairConfig {
    max_replicas_per_repair: usize,
    require_majority: bool,
    clock: Option<Arc<dyn Clock>>,
    host: Option<Arc<dyn HostActions>>,
    adopt_newer: bool,
}

impl fmt::Debug for RepairConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepairConfig")
            .field("max_replicas_per_repair", &self.max_replicas_per_repair)
            .field("require_majority", &self.require_majority)
            .field("adopt_newer", &self.adopt_newer)
            .field("host_actions", &self.host.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl RepairConfig {
    /// Defaults: up to 3 copies fetched per repair, no majority required, the
    /// detector's clock, no host actions.
    pub fn new() -> Self {
        RepairConfig {
            max_replicas_per_repair: 3,
            require_majority: false,
            clock: None,
            host: None,
            adopt_newer: false,
        }
    }

    /// How many replica copies one repair fetches at most (default 3, a count
    /// of copies; 1 ..= [`MAX_REPLICAS`]). Skipped replicas (down or behind)
    /// do not count. Fetching more than one lets copies vote, so a replica
    /// serving a valid-looking but wrong page is outvoted.
    pub fn max_replicas_per_repair(mut self, copies: usize) -> Self {
        self.max_replicas_per_repair = copies;
        self
    }

    /// Whether a replica copy is written only when more than half of the
    /// verified copies agree with it byte for byte (default `false`: the
    /// largest group wins even without a majority). Without a majority the
    /// repair goes on to the fallback sources.
    pub fn require_majority(mut self, yes: bool) -> Self {
        self.require_majority = yes;
        self
    }

    /// Whether anti-entropy replaces a local page that verifies with the
    /// replica's copy when that copy verifies and carries a newer page LSN
    /// (default `false`: such pages are only reported as diverged). Needs a
    /// page-LSN reader on the detector; without one the direction of a
    /// divergence is unknown and pages are only reported. The replace is
    /// [`CorruptionDetector::replace_if_unchanged`], so a host write that lands
    /// during the comparison is never overwritten.
    pub fn adopt_newer_copies(mut self, yes: bool) -> Self {
        self.adopt_newer = yes;
        self
    }

    /// The clock that times repairs (default: the detector's clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The host's actions, used by [`DataRepairer::rebuild_index`] (default:
    /// none, and rebuilding answers [`Error::Unsupported`]).
    pub fn host_actions(mut self, host: Arc<dyn HostActions>) -> Self {
        self.host = Some(host);
        self
    }

    /// Builds the repairer over `detector`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `max_replicas_per_repair` is 0 or above
    /// [`MAX_REPLICAS`].
    pub fn build(self, detector: Arc<CorruptionDetector>) -> Result<DataRepairer> {
        if self.max_replicas_per_repair == 0 || self.max_replicas_per_repair > MAX_REPLICAS {
            return Err(Error::config(
                "max_replicas_per_repair",
                format!(
                    "is {}; it must be between 1 and {MAX_REPLICAS}",
                    self.max_replicas_per_repair
                ),
            ));
        }
        let clock = self.clock.unwrap_or_else(|| detector.clock().clone());
        Ok(DataRepairer {
            detector,
            max_copies: self.max_replicas_per_repair,
            require_majority: self.require_majority,
            adopt_newer: self.adopt_newer,
            clock,
            host: self.host,
            replicas: RwLock::new(Vec::new()),
            fallbacks: RwLock::new(Vec::new()),
            stats: Counters::default(),
        })
    }
}

/// Where a copy came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopySource {
    /// A registered replica.
    Replica(ReplicaId),
    /// A fallback [`PageSource`], by its name.
    Fallback(String),
}

impl fmt::Display for CopySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopySource::Replica(r) => write!(f, "replica {r}"),
            CopySource::Fallback(n) => write!(f, "fallback {n}"),
        }
    }
}

/// What became of one source during a repair.
#[derive(Debug)]
#[non_exhaustive]
pub enum AttemptResult {
    /// The copy verified and was written (or is byte-identical to the copy
    /// that was written, or the repair was superseded before it mattered).
    Verified,
    /// The copy verified but a different copy won the vote.
    LostVote {
        /// Copies that agreed with this one (itself included).
        votes: usize,
        /// Copies that agreed with the winner.
        winner_votes: usize,
    },
    /// A majority was required and this copy's group did not have one.
    NoMajority {
        /// Copies that agreed with this one (itself included).
        votes: usize,
        /// Verified copies in all.
        of: usize,
    },
    /// The copy failed verification (checksum, page number, zeroed, stale).
    FailedVerification(Error),
    /// The source could not serve the page (status down, or its read failed).
    Unavailable(Error),
    /// The replica's applied LSN is below the LSN the local store last wrote
    /// to the page, so it was not asked.
    Stale {
        /// The replica's applied LSN.
        applied: Lsn,
        /// The LSN a copy had to reach.
        needed: Lsn,
    },
    /// A fallback source had no copy (or none new enough).
    NoCopy,
    /// The copy verified but writing it failed (write, sync, or the re-read
    /// did not verify).
    CommitFailed(Error),
}

/// One source consulted during a repair.
#[derive(Debug)]
pub struct Attempt {
    /// The source.
    pub source: CopySource,
    /// What became of it.
    pub result: AttemptResult,
}

/// How a repair ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepairOutcome {
    /// A verified copy was written, synced, re-read and verified.
    Repaired {
        /// Where the copy came from.
        source: CopySource,
    },
    /// The host rewrote the page while the repair ran; nothing was written
    /// and the host's page stands.
    Superseded,
    /// No source had a copy that verifies. The page stays fenced as
    /// `Irreparable` and an `IrreparablePage` failure was reported.
    Irreparable {
        /// What was tried, and why each source failed.
        reason: String,
    },
    /// The page was not waiting for repair: not fenced, or it verified when
    /// re-read (a transient fault, now unfenced).
    NotNeeded,
    /// Another repair of the page is under way.
    InProgress,
}

/// What one call of [`DataRepairer::repair_page`] did.
#[derive(Debug)]
pub struct RepairReport {
    /// The page.
    pub page: PageId,
    /// How it ended.
    pub outcome: RepairOutcome,
    /// Every source consulted, in the order consulted.
    pub attempts: Vec<Attempt>,
    /// Bytes of page copies fetched from replicas and fallbacks.
    pub bytes_fetched: u64,
    /// How long the repair took, by the repairer's clock.
    pub duration: Duration,
}

impl RepairReport {
    fn new(page: PageId, outcome: RepairOutcome) -> Self {
        RepairReport {
            page,
            outcome,
            attempts: Vec::new(),
            bytes_fetched: 0,
            duration: Duration::ZERO,
        }
    }

    /// Whether the page was written with a verified copy.
    #[must_use]
    pub fn is_repaired(&self) -> bool {
        matches!(self.outcome, RepairOutcome::Repaired { .. })
    }
}

/// A page that differs from the replica while the local copy verifies, and
/// that anti-entropy left alone (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DivergedPage {
    /// The page.
    pub page: PageId,
    /// Whether the replica's copy verifies.
    pub replica_copy_verifies: bool,
    /// The local page's LSN, when a page-LSN reader is configured.
    pub local_lsn: Option<Lsn>,
    /// The replica copy's LSN, when a page-LSN reader is configured.
    pub replica_lsn: Option<Lsn>,
}

/// What one call of [`DataRepairer::anti_entropy`] did.
#[derive(Debug)]
pub struct AntiEntropyReport {
    /// The replica compared with.
    pub replica: ReplicaId,
    /// The pages compared.
    pub pages: Range<u64>,
    /// Pages covered by the comparison (the whole range, by digest).
    pub pages_compared: u64,
    /// Range digests requested from the replica.
    pub digests_requested: u64,
    /// Pages fetched from the replica to compare byte by byte.
    pub pages_fetched: u64,
    /// Bytes of those pages (repairs fetch their own copies; see `repairs`).
    pub bytes_fetched: u64,
    /// Differing pages whose local copy failed verification and that were repaired.
    pub pages_repaired: Vec<PageId>,
    /// The repair of every differing page whose local copy failed verification.
    pub repairs: Vec<RepairReport>,
    /// Differing pages whose local copy verified but was older (by page LSN)
    /// than the replica's verified copy, and that were replaced with it
    /// ([`RepairConfig::adopt_newer_copies`]).
    pub adopted: Vec<PageId>,
    /// Differing pages whose local copy verifies and that were left alone.
    pub diverged: Vec<DivergedPage>,
    /// How long it took, by the repairer's clock.
    pub duration: Duration,
}

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
    stale: AtomicU64,
    used: AtomicU64,
}

/// Counters of one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStats {
    /// The replica.
    pub replica: ReplicaId,
    /// Copies fetched from it (repairs and anti-entropy).
    pub copies_fetched: u64,
    /// Copies that verified.
    pub verified: u64,
    /// Copies that failed verification.
    pub rejected: u64,
    /// Times it was down or its read failed.
    pub unavailable: u64,
    /// Times it was skipped as known to be behind.
    pub stale: u64,
    /// Repairs written with its copy.
    pub used: u64,
}

/// Counters of a [`DataRepairer`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// Repairs started (pages that were fenced and got a ticket).
    pub attempted: u64,
    /// Pages written with a verified copy.
    pub repaired: u64,
    /// Of those, pages written from a fallback source.
    pub repaired_from_fallback: u64,
    /// Repairs that found the host had rewritten the page.
    pub superseded: u64,
    /// Pages left irreparable.
    pub irreparable: u64,
    /// Calls that found nothing to repair (not fenced, fault gone, or
    /// another repair of the page under way).
    pub not_needed: u64,
    /// Bytes of page copies fetched (repairs and anti-entropy).
    pub bytes_fetched: u64,
    /// Anti-entropy runs completed.
    pub anti_entropy_runs: u64,
    /// Per replica, in registration order.
    pub replicas: Vec<ReplicaStats>,
}

#[derive(Clone)]
struct ReplicaEntry {
    id: ReplicaId,
    replica: Arc<dyn Replica>,
    stats: Arc<ReplicaCounters>,
}

/// Repairs fenced pages from verified replica copies, falls back to other
/// page sources, quarantines what cannot be repaired, and finds divergence
/// with a replica by Merkle anti-entropy.
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
            .finish_non_exhaustive()
    }
}

/// A verified copy waiting for the vote.
struct Candidate {
    attempt: usize,
    replica: usize,
    bytes: Vec<u8>,
    lsn: Option<Lsn>,
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
            id,
            replica,
            stats: Arc::default(),
        });
        Ok(())
    }

    /// Unregisters a replica; returns whether it was registered.
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
                    stale: l(&e.stats.stale),
                    used: l(&e.stats.used),
                })
                .collect(),
        }
    }

    fn elapsed(&self, started_ns: u64) -> Duration {
        Duration::from_nanos(self.clock.now_ns().saturating_sub(started_ns))
    }

    /// Repairs one fenced page (see the module docs for the procedure).
    ///
    /// Every way a repair can end — including no source having a good copy —
    /// is an `Ok` report; see [`RepairReport::outcome`].
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] for a page past the end of the store.
    pub fn repair_page(&self, page: PageId) -> Result<RepairReport> {
        let started = self.clock.now_ns();
        let page_count = self.detector.store().page_count();
        if page.0 >= page_count {
            return Err(Error::PageOutOfRange { page, page_count });
        }
        let mut report = match self.detector.page_state(page) {
            Some(PageState::Suspect | PageState::Irreparable) => {
                // A fault that has gone away needs no copy; recheck lifts the fence.
                match self.detector.recheck(page) {
                    Ok(Verdict::Clean | Verdict::Transient | Verdict::Unallocated) => {
                        RepairReport::new(page, RepairOutcome::NotNeeded)
                    }
                    Ok(Verdict::Corrupt { .. }) | Err(_) => {
                        match self.detector.begin_repair(page) {
                            Some(ticket) => {
                                self.stats.attempted.fetch_add(1, Ordering::Relaxed);
                                self.run_repair(ticket)
                            }
                            None => RepairReport::new(page, self.idle_outcome(page)),
                        }
                    }
                }
            }
            _ => RepairReport::new(page, self.idle_outcome(page)),
        };
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
        report.duration = self.elapsed(started);
        tracing::debug!(%page, outcome = ?report.outcome, "repair finished");
        Ok(report)
    }

    fn idle_outcome(&self, page: PageId) -> RepairOutcome {
        if self.detector.page_state(page) == Some(PageState::Repairing) {
            RepairOutcome::InProgress
        } else {
            RepairOutcome::NotNeeded
        }
    }

    /// Repairs every `Suspect` page, in page order.
    pub fn repair_pending(&self) -> Vec<RepairReport> {
        self.repair_states(&[PageState::Suspect])
    }

    /// Repairs every `Suspect` page and tries every `Irreparable` page again
    /// (a replica may have come back), in page order.
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
        // A page past the end (the store shrank) cannot be repaired; skip it.
        pages
            .into_iter()
            .filter_map(|p| self.repair_page(p).ok())
            .collect()
    }

    /// Fetches, votes, commits; holds the ticket throughout.
    fn run_repair(&self, ticket: RepairTicket) -> RepairReport {
        let page = ticket.page();
        let ps = self.detector.store().page_size();
        let needed = self.detector.last_written_lsn(page);
        let replicas: Vec<ReplicaEntry> = self.replicas.read().clone();
        let statuses: Vec<_> = replicas.iter().map(|e| e.replica.status()).collect();
        let mut report = RepairReport::new(page, RepairOutcome::NotNeeded);
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut fetched = 0usize;

        for (idx, skip) in order_replicas(&statuses, needed) {
            let entry = &replicas[idx];
            let source = CopySource::Replica(entry.id.clone());
            match skip {
                Some(Skip::Unavailable) => {
                    entry.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                    report.attempts.push(Attempt {
                        source,
                        result: AttemptResult::Unavailable(Error::ReplicaUnavailable {
                            replica: entry.id.clone(),
                            reason: "its status says it cannot serve reads".into(),
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
            if fetched == self.max_copies {
                break;
            }
            fetched += 1;
            let mut buf = vec![0u8; ps];
            let result = match entry.replica.read_page(page, &mut buf) {
                Err(e) => {
                    entry.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                    AttemptResult::Unavailable(e)
                }
                Ok(()) => {
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
        let total = candidates.len();
        for g in groups.iter().filter(|g| !g.eligible) {
            for &m in &g.members {
                report.attempts[candidates[m].attempt].result = AttemptResult::NoMajority {
                    votes: g.votes(),
                    of: total,
                };
            }
        }

        let mut ticket = ticket;
        let eligible: Vec<&plan::Group> = groups.iter().filter(|g| g.eligible).collect();
        for (gi, g) in eligible.iter().enumerate() {
            let lead = &candidates[g.members[0]];
            match self.detector.commit_repair(ticket, &lead.bytes) {
                Ok(commit) => {
                    // Copies of other groups lost the vote only if a copy was
                    // written; a superseded repair decided nothing.
                    let decided = if commit == Commit::Written {
                        &eligible[gi + 1..]
                    } else {
                        &[][..]
                    };
                    for later in decided {
                        for &m in &later.members {
                            report.attempts[candidates[m].attempt].result =
                                AttemptResult::LostVote {
                                    votes: later.votes(),
                                    winner_votes: g.votes(),
                                };
                        }
                    }
                    report.outcome = match commit {
                        Commit::Written => {
                            let entry = &replicas[lead.replica];
                            entry.stats.used.fetch_add(1, Ordering::Relaxed);
                            RepairOutcome::Repaired {
                                source: CopySource::Replica(entry.id.clone()),
                            }
                        }
                        Commit::Superseded => RepairOutcome::Superseded,
                    };
                    return report;
                }
                Err((back, e)) => {
                    tracing::warn!(%page, error = %e, "writing a verified replica copy failed");
                    let reason = e.to_string();
                    report.attempts[lead.attempt].result = AttemptResult::CommitFailed(e);
                    for &m in &g.members[1..] {
                        report.attempts[candidates[m].attempt].result =
                            AttemptResult::CommitFailed(Error::Irreparable {
                                page,
                                reason: format!("an identical copy failed to commit: {reason}"),
                            });
                    }
                    ticket = back;
                }
            }
        }

        let fallbacks: Vec<Arc<dyn PageSource>> = self.fallbacks.read().clone();
        for fb in fallbacks {
            let source = CopySource::Fallback(fb.name());
            let mut buf = vec![0u8; ps];
            let result = match fb.read_page(page, needed, &mut buf) {
                Ok(false) => AttemptResult::NoCopy,
                Err(e) => AttemptResult::Unavailable(e),
                Ok(true) => {
                    report.bytes_fetched += ps as u64;
                    match self.detector.verify(page, &buf) {
                        Err(e) => AttemptResult::FailedVerification(e),
                        Ok(()) => match self.detector.commit_repair(ticket, &buf) {
                            Ok(commit) => {
                                report.attempts.push(Attempt {
                                    source: source.clone(),
                                    result: AttemptResult::Verified,
                                });
                                report.outcome = match commit {
                                    Commit::Written => RepairOutcome::Repaired { source },
                                    Commit::Superseded => RepairOutcome::Superseded,
                                };
                                return report;
                            }
                            Err((back, e)) => {
                                ticket = back;
                                AttemptResult::CommitFailed(e)
                            }
                        },
                    }
                }
            };
            report.attempts.push(Attempt { source, result });
        }

        let reason = irreparable_reason(&report.attempts);
        if self.detector.abandon_repair(ticket) {
            tracing::error!(%page, %reason, "page is irreparable");
            self.detector.report(Failure::new(
                FailureKind::IrreparablePage { page },
                format!("page {page} is irreparable: {reason}"),
                self.clock.now_ns(),
            ));
            report.outcome = RepairOutcome::Irreparable { reason };
        } else {
            // The host rewrote the page while every source was failing.
            report.outcome = RepairOutcome::Superseded;
        }
        report
    }

    /// Compares pages `pages` with replica `replica` by Merkle descent over
    /// range digests, fetching pages only in differing leaves of at most
    /// `leaf_pages` pages, and repairs differing pages whose local copy fails
    /// verification (through [`repair_page`](Self::repair_page), so all
    /// replicas vote on the copy). Differing pages whose local copy verifies
    /// are reported, or with [`RepairConfig::adopt_newer_copies`] replaced by
    /// the replica's copy when that one verifies and is newer by page LSN.
    ///
    /// The local side's digests come from the store's raw bytes; the
    /// replica's from [`Replica::range_digest`]. Each top-level tree covers
    /// at most [`ANTI_ENTROPY_TREE_PAGES`] pages.
    ///
    /// # Errors
    /// [`Error::UnknownReplica`]; [`Error::InvalidArgument`] for
    /// `leaf_pages == 0`; [`Error::PageOutOfRange`] for a range past the end;
    /// [`Error::ReplicaUnavailable`] when the replica is down; the replica's
    /// or the store's error when a digest or read fails (pages repaired
    /// before that stay repaired).
    pub fn anti_entropy(
        &self,
        replica: &ReplicaId,
        pages: Range<u64>,
        leaf_pages: u64,
    ) -> Result<AntiEntropyReport> {
        let started = self.clock.now_ns();
        let entry = self
            .replicas
            .read()
            .iter()
            .find(|e| &e.id == replica)
            .cloned()
            .ok_or_else(|| Error::UnknownReplica {
                replica: replica.clone(),
            })?;
        if leaf_pages == 0 {
            return Err(Error::InvalidArgument {
                what: "leaf_pages",
                reason: "is 0; a leaf must hold at least one page".into(),
            });
        }
        let page_count = self.detector.store().page_count();
        if pages.end > page_count {
            return Err(Error::PageOutOfRange {
                page: PageId(pages.end - 1),
                page_count,
            });
        }
        if !entry.replica.status().available {
            entry.stats.unavailable.fetch_add(1, Ordering::Relaxed);
            return Err(Error::ReplicaUnavailable {
                replica: entry.id.clone(),
                reason: "its status says it cannot serve reads".into(),
            });
        }
        let mut ae = AntiEntropy {
            repairer: self,
            entry: &entry,
            leaves: Vec::new(),
            base: 0,
            ps: self.detector.store().page_size(),
            report: AntiEntropyReport {
                replica: entry.id.clone(),
                pages: pages.clone(),
                pages_compared: 0,
                digests_requested: 0,
                pages_fetched: 0,
                bytes_fetched: 0,
                pages_repaired: Vec::new(),
                repairs: Vec::new(),
                adopted: Vec::new(),
                diverged: Vec::new(),
                duration: Duration::ZERO,
            },
        };
        let mut first = pages.start;
        while first < pages.end {
            let count = (pages.end - first).min(ANTI_ENTROPY_TREE_PAGES);
            ae.load_local(first, count)?;
            ae.descend(first, count, leaf_pages)?;
            ae.report.pages_compared += count;
            first += count;
        }
        self.stats
            .bytes_fetched
            .fetch_add(ae.report.bytes_fetched, Ordering::Relaxed);
        self.stats.anti_entropy_runs.fetch_add(1, Ordering::Relaxed);
        let mut report = ae.report;
        report.duration = self.elapsed(started);
        Ok(report)
    }
}

/// One anti-entropy run over one replica.
struct AntiEntropy<'a> {
    repairer: &'a DataRepairer,
    entry: &'a ReplicaEntry,
    /// The leaf digest of each local page of the current tree, from `base`.
    leaves: Vec<u64>,
    base: u64,
    ps: usize,
    report: AntiEntropyReport,
}

impl AntiEntropy<'_> {
    fn load_local(&mut self, first: u64, count: u64) -> Result<()> {
        self.leaves.clear();
        self.base = first;
        let leaves = &mut self.leaves;
        self.repairer
            .detector
            .store()
            .scan_pages(PageId(first), count, &mut |p, b| {
                leaves.push(leaf_digest(p, b));
                Ok(())
            })
    }

    fn local_digest(&self, first: u64, count: u64) -> u64 {
        let start = (first - self.base) as usize;
        let mut d = RangeDigest::new();
        for &l in &self.leaves[start..start + count as usize] {
            d.push_leaf(l);
        }
        d.finish()
    }

    fn descend(&mut self, first: u64, count: u64, leaf_pages: u64) -> Result<()> {
        self.report.digests_requested += 1;
        let remote = self.entry.replica.range_digest(PageId(first), count)?;
        if remote == self.local_digest(first, count) {
            return Ok(());
        }
        if count > leaf_pages {
            let left = count / 2;
            self.descend(first, left, leaf_pages)?;
            return self.descend(first + left, count - left, leaf_pages);
        }
        for p in first..first + count {
            self.compare_page(PageId(p))?;
        }
        Ok(())
    }

    fn compare_page(&mut self, page: PageId) -> Result<()> {
        let det = &self.repairer.detector;
        let mut remote = vec![0u8; self.ps];
        self.entry.replica.read_page(page, &mut remote)?;
        self.entry.stats.fetched.fetch_add(1, Ordering::Relaxed);
        self.report.pages_fetched += 1;
        self.report.bytes_fetched += self.ps as u64;
        let mut local = vec![0u8; self.ps];
        det.store().read_page(page, &mut local)?;
        if local == remote {
            return Ok(());
        }
        let remote_ok = det.verify(page, &remote).is_ok();
        if remote_ok {
            self.entry.stats.verified.fetch_add(1, Ordering::Relaxed);
        } else {
            self.entry.stats.rejected.fetch_add(1, Ordering::Relaxed);
        }
        if det.verify(page, &local).is_ok() {
            let local_lsn = det.page_lsn_of(&local);
            let replica_lsn = det.page_lsn_of(&remote);
            let newer = matches!((local_lsn, replica_lsn), (Some(l), Some(r)) if r > l);
            if self.repairer.adopt_newer
                && remote_ok
                && newer
                && det.replace_if_unchanged(page, &local, &remote)?
            {
                self.entry.stats.used.fetch_add(1, Ordering::Relaxed);
                self.report.adopted.push(page);
                return Ok(());
            }
            self.report.diverged.push(DivergedPage {
                page,
                replica_copy_verifies: remote_ok,
                local_lsn,
                replica_lsn,
            });
            return Ok(());
        }
        // Fence it first (a page nobody has read yet is not in the registry);
        // the re-read inside also catches a host write that fixed it meanwhile.
        if !det.page_state(page).is_some_and(PageState::is_fenced) {
            match det.check_page(page, Observer::Scrub)? {
                Verdict::Clean | Verdict::Transient | Verdict::Unallocated => return Ok(()),
                Verdict::Corrupt { .. } => {}
            }
        }
        let r = self.repairer.repair_page(page)?;
        if r.is_repaired() {
            self.report.pages_repaired.push(page);
        }
        self.report.repairs.push(r);
        Ok(())
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
                    format!("no majority ({votes} of {of} copies agree)")
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::ChecksumPlacement;
    use crate::corruption::DetectorConfig;
    use crate::host::{ReplicaLag, ReplicaStatus};
    use crate::store::{MemStore, StoreReplica};
    use crate::testing::{Damage, FaultyReplica, FaultyStore, WriteFault};
    use crate::PageStore;
    use proptest::prelude::*;

    const PS: usize = 256;

    struct Rig {
        raw: Arc<FaultyStore>,
        det: Arc<CorruptionDetector>,
        mirrors: Vec<Arc<MemStore>>,
        good: Vec<Vec<u8>>,
    }

    /// `pages` sealed pages, mirrored on `replicas` in-memory replicas.
    fn rig(pages: u64, replicas: usize) -> Rig {
        let raw = Arc::new(FaultyStore::new(Arc::new(
            MemStore::new(PS, pages).unwrap(),
        )));
        let det = Arc::new(
            DetectorConfig::new(ChecksumPlacement::Trailer)
                .build(raw.clone())
                .unwrap(),
        );
        let mirrors: Vec<_> = (0..replicas)
            .map(|_| Arc::new(MemStore::new(PS, pages).unwrap()))
            .collect();
        let mut good = Vec::new();
        for p in 0..pages {
            let mut b = vec![(p as u8).wrapping_mul(31).wrapping_add(1); PS];
            det.write_sealed(PageId(p), &mut b).unwrap();
            for m in &mirrors {
                m.write_page(PageId(p), &b).unwrap();
            }
            good.push(b);
        }
        Rig {
            raw,
            det,
            mirrors,
            good,
        }
    }

    impl Rig {
        fn repairer(&self, cfg: RepairConfig) -> DataRepairer {
            let r = cfg.build(self.det.clone()).unwrap();
            for (i, m) in self.mirrors.iter().enumerate() {
                r.add_replica(Arc::new(StoreReplica::new(format!("r{i}"), m.clone())))
                    .unwrap();
            }
            r
        }

        fn fence(&self, page: u64, damage: Damage) {
            self.raw.damage(PageId(page), damage).unwrap();
            let mut b = vec![0u8; PS];
            assert!(self.det.read_verified(PageId(page), &mut b).is_err());
        }

        fn local(&self, page: u64) -> Vec<u8> {
            let mut b = vec![0u8; PS];
            self.raw.read_page(PageId(page), &mut b).unwrap();
            b
        }
    }

    #[test]
    fn config_is_validated() {
        let r = rig(2, 0);
        for bad in [0, MAX_REPLICAS + 1] {
            assert!(matches!(
                RepairConfig::new()
                    .max_replicas_per_repair(bad)
                    .build(r.det.clone()),
                Err(Error::InvalidConfig {
                    field: "max_replicas_per_repair",
                    ..
                })
            ));
        }
    }

    #[test]
    fn registration_refuses_wrong_size_and_duplicates() {
        let r = rig(2, 1);
        let rep = r.repairer(RepairConfig::new());
        let other = Arc::new(MemStore::new(PS * 2, 2).unwrap());
        assert!(matches!(
            rep.add_replica(Arc::new(StoreReplica::new("big", other))),
            Err(Error::PageSizeMismatch { expected: PS, actual, .. }) if actual == PS * 2
        ));
        assert!(matches!(
            rep.add_replica(Arc::new(StoreReplica::new("r0", r.mirrors[0].clone()))),
            Err(Error::DuplicateReplica { .. })
        ));
        assert_eq!(rep.replica_ids(), [ReplicaId::new("r0")]);
        assert!(rep.remove_replica(&ReplicaId::new("r0")));
        assert!(!rep.remove_replica(&ReplicaId::new("r0")));
    }

    #[test]
    fn repairs_from_replica_and_counts() {
        let r = rig(4, 1);
        let rep = r.repairer(RepairConfig::new());
        r.fence(2, Damage::Junk { seed: 9 });
        let report = rep.repair_page(PageId(2)).unwrap();
        assert_eq!(
            report.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("r0"))
            }
        );
        assert_eq!(r.local(2), r.good[2]);
        assert_eq!(report.bytes_fetched, PS as u64);
        let s = rep.stats();
        assert_eq!(
            (s.attempted, s.repaired, s.bytes_fetched),
            (1, 1, PS as u64)
        );
        assert_eq!(s.replicas[0].used, 1);
        assert_eq!(r.det.page_state(PageId(2)), Some(PageState::Repaired));
        // Nothing left to do.
        assert_eq!(
            rep.repair_page(PageId(2)).unwrap().outcome,
            RepairOutcome::NotNeeded
        );
        assert!(matches!(
            rep.repair_page(PageId(4)),
            Err(Error::PageOutOfRange { .. })
        ));
    }

    #[test]
    fn repairs_under_sidecar_checksums() {
        let table = Arc::new(crate::ChecksumTable::new(PS).unwrap());
        let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(PS, 4).unwrap())));
        let det = Arc::new(
            DetectorConfig::new(ChecksumPlacement::Sidecar(table))
                .build(raw.clone())
                .unwrap(),
        );
        let mirror = Arc::new(MemStore::new(PS, 4).unwrap());
        let mut page = vec![0x3C; PS];
        det.write_sealed(PageId(1), &mut page).unwrap();
        mirror.write_page(PageId(1), &page).unwrap();
        // A second mirror holds other bytes, which the table's checksum refuses.
        let other = Arc::new(MemStore::new(PS, 4).unwrap());
        other.write_page(PageId(1), &[0x3D; PS]).unwrap();
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        rep.add_replica(Arc::new(StoreReplica::new("other", other)))
            .unwrap();
        rep.add_replica(Arc::new(StoreReplica::new("mirror", mirror)))
            .unwrap();
        raw.damage(PageId(1), Damage::BitFlip { byte: 7, bit: 7 })
            .unwrap();
        let mut b = vec![0u8; PS];
        assert!(det.read_verified(PageId(1), &mut b).is_err());
        let report = rep.repair_page(PageId(1)).unwrap();
        assert!(report.is_repaired(), "{:?}", report.outcome);
        assert!(matches!(
            report.attempts[0].result,
            AttemptResult::FailedVerification(Error::ChecksumMismatch { .. })
        ));
        det.read_verified(PageId(1), &mut b).unwrap();
        assert_eq!(b, page);
    }

    #[test]
    fn transient_fault_needs_no_copy() {
        let r = rig(2, 1);
        let rep = r.repairer(RepairConfig::new());
        r.fence(1, Damage::Zero);
        r.raw.inner().write_page(PageId(1), &r.good[1]).unwrap();
        let report = rep.repair_page(PageId(1)).unwrap();
        assert_eq!(report.outcome, RepairOutcome::NotNeeded);
        assert!(report.attempts.is_empty());
        let mut b = vec![0u8; PS];
        r.det.read_verified(PageId(1), &mut b).unwrap();
    }

    #[test]
    fn corrupt_replicas_never_overwrite_and_page_becomes_irreparable() {
        let r = rig(3, 2);
        let rep = RepairConfig::new().build(r.det.clone()).unwrap();
        for (i, m) in r.mirrors.iter().enumerate() {
            let f = FaultyReplica::new(Arc::new(StoreReplica::new(format!("r{i}"), m.clone())));
            f.corrupt(PageId(1), Damage::BitFlip { byte: i, bit: 2 });
            rep.add_replica(Arc::new(f)).unwrap();
        }
        r.fence(1, Damage::Zero);
        let _ = r.det.failures().try_iter().count();
        let writes = r.raw.counts().writes;
        let report = rep.repair_page(PageId(1)).unwrap();
        assert!(matches!(report.outcome, RepairOutcome::Irreparable { .. }));
        assert_eq!(r.raw.counts().writes, writes, "nothing was written");
        assert!(report
            .attempts
            .iter()
            .all(|a| matches!(a.result, AttemptResult::FailedVerification(_))));
        assert_eq!(r.det.page_state(PageId(1)), Some(PageState::Irreparable));
        let f = r.det.failures().try_recv().unwrap();
        assert_eq!(f.kind, FailureKind::IrreparablePage { page: PageId(1) });
        assert_eq!(rep.stats().irreparable, 1);
        // Pending repairs skip it; repair_all tries again.
        assert!(rep.repair_pending().is_empty());
        assert_eq!(rep.repair_all().len(), 1);
    }

    #[test]
    fn failed_commit_moves_to_next_distinct_copy() {
        let r = rig(2, 2);
        // r1 holds a different but valid page 0 (an older version).
        let mut older = vec![0xEE; PS];
        ChecksumPlacement::Trailer
            .seal(PageId(0), &mut older)
            .unwrap();
        r.mirrors[1].write_page(PageId(0), &older).unwrap();
        let rep = r.repairer(RepairConfig::new());
        r.fence(0, Damage::Zero);
        r.raw.fail_next_write(Some(PageId(0)), WriteFault::Eio);
        let report = rep.repair_page(PageId(0)).unwrap();
        assert_eq!(
            report.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("r1"))
            }
        );
        assert!(matches!(
            report.attempts[0].result,
            AttemptResult::CommitFailed(Error::Io { .. })
        ));
        assert_eq!(r.local(0), older);
    }

    #[test]
    fn majority_can_be_required() {
        let r = rig(2, 2);
        let mut other = vec![0xEE; PS];
        ChecksumPlacement::Trailer
            .seal(PageId(0), &mut other)
            .unwrap();
        r.mirrors[1].write_page(PageId(0), &other).unwrap();
        let rep = r.repairer(RepairConfig::new().require_majority(true));
        r.fence(0, Damage::Zero);
        let report = rep.repair_page(PageId(0)).unwrap();
        assert!(
            matches!(report.outcome, RepairOutcome::Irreparable { ref reason } if reason.contains("no majority")),
            "{:?}",
            report.outcome
        );
        assert!(report
            .attempts
            .iter()
            .all(|a| matches!(a.result, AttemptResult::NoMajority { votes: 1, of: 2 })));
    }

    #[test]
    fn down_and_behind_replicas_are_skipped() {
        let r = rig(2, 2);
        let rep = RepairConfig::new()
            .max_replicas_per_repair(1)
            .build(r.det.clone())
            .unwrap();
        let down = FaultyReplica::new(Arc::new(StoreReplica::new("down", r.mirrors[0].clone())));
        down.set_down(true);
        rep.add_replica(Arc::new(down)).unwrap();
        rep.add_replica(Arc::new(StoreReplica::new("up", r.mirrors[1].clone())))
            .unwrap();
        r.fence(1, Damage::Zero);
        let report = rep.repair_page(PageId(1)).unwrap();
        assert!(report.is_repaired());
        assert_eq!(report.attempts.len(), 2);
        assert!(matches!(
            report.attempts[1].result,
            AttemptResult::Unavailable(Error::ReplicaUnavailable { .. })
        ));
        assert_eq!(rep.stats().replicas[0].unavailable, 1);
    }

    #[derive(Debug)]
    struct Actions;
    impl HostActions for Actions {}

    #[derive(Debug)]
    struct Rebuilds(parking_lot::Mutex<Vec<String>>);
    impl HostActions for Rebuilds {
        fn rebuild_index(&self, index: &str) -> Result<()> {
            self.0.lock().push(index.to_owned());
            Ok(())
        }
    }

    #[test]
    fn rebuild_index_passes_through_or_is_unsupported() {
        let r = rig(1, 0);
        let none = RepairConfig::new().build(r.det.clone()).unwrap();
        assert!(matches!(
            none.rebuild_index("by_name"),
            Err(Error::Unsupported {
                action: "rebuild_index"
            })
        ));
        let default = RepairConfig::new()
            .host_actions(Arc::new(Actions))
            .build(r.det.clone())
            .unwrap();
        assert!(matches!(
            default.rebuild_index("by_name"),
            Err(Error::Unsupported { .. })
        ));
        let host = Arc::new(Rebuilds(parking_lot::Mutex::new(Vec::new())));
        let real = RepairConfig::new()
            .host_actions(host.clone())
            .build(r.det.clone())
            .unwrap();
        real.rebuild_index("by_name").unwrap();
        assert!(matches!(
            real.rebuild_index(""),
            Err(Error::InvalidArgument { .. })
        ));
        assert_eq!(*host.0.lock(), ["by_name"]);
    }

    /// A replica that runs a host write to the page while serving it.
    #[derive(Debug)]
    struct RacingReplica {
        inner: StoreReplica,
        det: Arc<CorruptionDetector>,
        newer: Vec<u8>,
    }

    impl Replica for RacingReplica {
        fn id(&self) -> ReplicaId {
            self.inner.id()
        }
        fn page_size(&self) -> usize {
            PS
        }
        fn status(&self) -> ReplicaStatus {
            ReplicaStatus {
                available: true,
                lag: ReplicaLag::default(),
            }
        }
        fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
            self.inner.read_page(page, buf)?;
            let mut newer = self.newer.clone();
            self.det.write_sealed(page, &mut newer)
        }
    }

    #[test]
    fn host_write_during_fetch_supersedes_the_repair() {
        let r = rig(2, 1);
        let rep = RepairConfig::new().build(r.det.clone()).unwrap();
        rep.add_replica(Arc::new(RacingReplica {
            inner: StoreReplica::new("racer", r.mirrors[0].clone()),
            det: r.det.clone(),
            newer: vec![0x77; PS],
        }))
        .unwrap();
        r.fence(1, Damage::Zero);
        let report = rep.repair_page(PageId(1)).unwrap();
        assert_eq!(report.outcome, RepairOutcome::Superseded);
        let mut b = vec![0u8; PS];
        r.det.read_verified(PageId(1), &mut b).unwrap();
        assert_eq!(b[0], 0x77, "the host's write stands");
        assert_eq!(rep.stats().superseded, 1);
    }

    #[test]
    fn anti_entropy_arguments_are_checked() {
        let r = rig(8, 1);
        let rep = r.repairer(RepairConfig::new());
        let id = ReplicaId::new("r0");
        assert!(matches!(
            rep.anti_entropy(&ReplicaId::new("nope"), 0..8, 2),
            Err(Error::UnknownReplica { .. })
        ));
        assert!(matches!(
            rep.anti_entropy(&id, 0..8, 0),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            rep.anti_entropy(&id, 0..9, 2),
            Err(Error::PageOutOfRange { .. })
        ));
        let same = rep.anti_entropy(&id, 0..8, 2).unwrap();
        assert_eq!((same.digests_requested, same.pages_fetched), (1, 0));
        let empty = rep.anti_entropy(&id, 3..3, 2).unwrap();
        assert_eq!(empty.digests_requested, 0);
    }

    #[test]
    fn anti_entropy_reports_locally_valid_divergence_without_writing() {
        let r = rig(8, 1);
        let rep = r.repairer(RepairConfig::new());
        let mut newer = vec![0x42; PS];
        r.det.write_sealed(PageId(5), &mut newer).unwrap();
        let rep_report = rep.anti_entropy(&ReplicaId::new("r0"), 0..8, 1).unwrap();
        assert!(rep_report.pages_repaired.is_empty());
        assert_eq!(rep_report.diverged.len(), 1);
        assert_eq!(rep_report.diverged[0].page, PageId(5));
        assert!(rep_report.diverged[0].replica_copy_verifies);
        assert_eq!(r.local(5), newer);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn anti_entropy_repairs_exactly_the_damaged_pages(
            damaged in proptest::collection::btree_set(0u64..96, 0..8),
            leaf in 1u64..9,
        ) {
            let r = rig(96, 1);
            let rep = r.repairer(RepairConfig::new());
            for &p in &damaged {
                r.raw.damage(PageId(p), Damage::Junk { seed: p }).unwrap();
            }
            let report = rep.anti_entropy(&ReplicaId::new("r0"), 0..96, leaf).unwrap();
            let want: Vec<PageId> = damaged.iter().map(|&p| PageId(p)).collect();
            prop_assert_eq!(&report.pages_repaired, &want);
            prop_assert!(report.diverged.is_empty());
            prop_assert!(report.pages_fetched <= damaged.len() as u64 * leaf);
            for p in 0..96 {
                prop_assert_eq!(r.local(p), r.good[p as usize].clone());
            }
        }
    }
}
