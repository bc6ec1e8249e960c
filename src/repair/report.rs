//! What a repair tells its caller: where each copy came from, what became of
//! it, how the repair ended, and the repairer's counters.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use crate::error::Error;
use crate::types::{Lsn, PageId, ReplicaId};

/// Where a copy came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CopySource {
    /// A registered replica.
    Replica(ReplicaId),
    /// A fallback [`PageSource`](crate::PageSource), by its name.
    Fallback(String),
    /// This replica's older copy of the page with the changes held for it
    /// elsewhere put over it (the undo journal's after-images, through the
    /// [`PageRebuilder`](super::PageRebuilder)): the page's last write,
    /// which no source held.
    Rebuilt(ReplicaId),
}

impl fmt::Display for CopySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopySource::Replica(r) => write!(f, "replica {r}"),
            CopySource::Fallback(n) => write!(f, "fallback {n}"),
            CopySource::Rebuilt(r) => write!(
                f,
                "replica {r}'s older copy, rebuilt with the undo held for the page"
            ),
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
    /// The copy verified, carries the newest page LSN of the verified
    /// copies (or no page LSN is known), but a different copy at that LSN
    /// won: it had more votes, or as many from a better replica.
    LostVote {
        /// Copies that agreed with this one (itself included).
        votes: usize,
        /// Copies that agreed with the winner.
        winner_votes: usize,
    },
    /// A majority was required and this copy's group did not have one
    /// among the verified copies at the newest page LSN.
    NoMajority {
        /// Copies that agreed with this one (itself included).
        votes: usize,
        /// Verified copies at the newest page LSN (all verified copies when
        /// no page LSN is known).
        of: usize,
    },
    /// The copy verified, but another verified copy carries a newer page
    /// LSN; an older copy is never written, however many replicas agree
    /// with it.
    OlderCopy {
        /// The copy's page LSN (`None`: it could not be read, which ranks
        /// below any known LSN).
        lsn: Option<Lsn>,
        /// The newest page LSN among the verified copies.
        newest: Lsn,
    },
    /// The copy verified, but the detector knows the exact LSN of the
    /// page's last write in this process
    /// ([`LsnExpectation::Exact`](crate::corruption::LsnExpectation::Exact))
    /// and the copy carries another: a newer LSN is a write that was rolled
    /// back or replaced since (by a before-image put back, or a restore of
    /// an older page), and a copy without a readable LSN is not that write
    /// either. It is never written. (A copy older than the last write fails
    /// verification as [`Error::StalePage`] instead.)
    NotLastWrite {
        /// The copy's page LSN (`None`: it could not be read).
        lsn: Option<Lsn>,
        /// The LSN of the page's last write through the detector.
        written: Lsn,
    },
    /// The copy failed verification (checksum, page number, zeroed, stale).
    FailedVerification(Error),
    /// The source could not serve the page: its status says it is down, its
    /// read failed, a call into it (status or read) panicked or missed the
    /// deadline
    /// ([`RepairConfig::replica_read_timeout`](super::RepairConfig::replica_read_timeout)),
    /// or it is cooling off after such a call or such a call still hangs.
    Unavailable(Error),
    /// The replica's status reports an applied LSN below the LSN the local
    /// store last wrote to the page, or below the page LSN of a verified
    /// copy already in hand: it cannot hold a copy that would be written, so
    /// it was not asked.
    Stale {
        /// The replica's applied LSN.
        applied: Lsn,
        /// The LSN a copy had to reach: the page's expected LSN, or the
        /// newest page LSN among the copies in hand.
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
    /// A verified copy was written, synced, re-read and verified. The
    /// healer takes that re-read as the page's re-check
    /// ([`Applied::verified`](crate::healer::Applied#structfield.verified)):
    /// every path that reports `Repaired` must have made it.
    Repaired {
        /// Where the copy came from.
        source: CopySource,
    },
    /// The host rewrote the page while the repair ran, and the host's page
    /// stands: the repair's copy was not written, or (in a batch) the
    /// host's write landed after it and before its sync.
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

/// What one call of [`DataRepairer::repair_page`](super::DataRepairer::repair_page) did.
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
    /// How long the repair took, by the repairer's clock; for a page repaired
    /// in a batch ([`repair_all`](super::DataRepairer::repair_all)), from the
    /// start of its batch to the end of its own commit.
    pub duration: Duration,
}

impl RepairReport {
    pub(super) fn new(page: PageId, outcome: RepairOutcome) -> Self {
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

/// What one call of [`DataRepairer::anti_entropy`](super::DataRepairer::anti_entropy) did.
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
    /// ([`RepairConfig::adopt_newer_copies`](super::RepairConfig::adopt_newer_copies)).
    pub adopted: Vec<PageId>,
    /// Differing pages whose local copy verifies and that were left alone.
    pub diverged: Vec<DivergedPage>,
    /// How long it took, by the repairer's clock.
    pub duration: Duration,
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
    /// Times it was down, its read failed, a call into it (status, read,
    /// range digest) panicked or missed the deadline, or it was skipped
    /// while cooling off after such a call or while such a call hung.
    pub unavailable: u64,
    /// Calls into it (status, read, range digest) that missed the deadline
    /// and were abandoned (counted in `unavailable` as well; in a batch
    /// repair a status that missed it counts once, and `unavailable` once
    /// per page).
    pub timed_out: u64,
    /// Times it was skipped as known to be behind (see
    /// [`AttemptResult::Stale`]).
    pub stale: u64,
    /// Repairs written with its copy.
    pub used: u64,
}

/// Counters of one fallback [`PageSource`](crate::PageSource).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackStats {
    /// The source's name.
    pub source: String,
    /// Copies it served.
    pub copies_fetched: u64,
    /// Copies that verified.
    pub verified: u64,
    /// Copies that failed verification.
    pub rejected: u64,
    /// Times its read failed, panicked or missed the deadline, or it was
    /// skipped while cooling off after such a read or while such a read hung.
    pub unavailable: u64,
    /// Reads that missed the deadline and were abandoned (counted in
    /// `unavailable` as well).
    pub timed_out: u64,
    /// Repairs written with its copy.
    pub used: u64,
}

/// Counters of a [`DataRepairer`](super::DataRepairer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// Repairs started (pages that were fenced and got a ticket).
    pub attempted: u64,
    /// Pages written with a verified copy.
    pub repaired: u64,
    /// Of those, pages written from a fallback source.
    pub repaired_from_fallback: u64,
    /// Of those, pages rebuilt by the
    /// [`PageRebuilder`](super::PageRebuilder) ([`CopySource::Rebuilt`]).
    pub repaired_by_rebuild: u64,
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
    /// Per fallback source, in registration order.
    pub fallbacks: Vec<FallbackStats>,
}
