//! [`RepairConfig`]: how many copies a repair fetches, how they are chosen,
//! how long a replica may take, and how many pages one batch makes durable
//! with one sync.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use super::{Counters, DataRepairer, MAX_REPLICAS};
use crate::clock::Clock;
use crate::corruption::CorruptionDetector;
use crate::error::{Error, Result};
use crate::host::HostActions;
use crate::types::FailureSink;

/// Most pages one batch of [`DataRepairer::repair_all`] holds.
pub const MAX_BATCH_PAGES: usize = 4096;

/// Longest accepted [`RepairConfig::replica_read_timeout`] (one hour).
pub const MAX_REPLICA_READ_TIMEOUT: Duration = Duration::from_secs(3600);

/// Longest accepted [`RepairConfig::replica_cooloff`] (one day).
pub const MAX_REPLICA_COOLOFF: Duration = Duration::from_secs(86_400);

/// Configuration of a [`DataRepairer`].
///
/// The repairer's promise that a verified copy with a newer page LSN wins
/// over any number of older ones needs a
/// [page-LSN reader](crate::corruption::CorruptionConfig::page_lsn) on the
/// detector: only then can copies be told apart by age, and fetching goes on
/// while a replica not yet asked could hold a newer copy. Without one,
/// verified copies vote (see [`max_replicas_per_repair`](Self::max_replicas_per_repair)).
#[must_use]
pub struct RepairConfig {
    max_replicas_per_repair: usize,
    require_majority: bool,
    clock: Option<Arc<dyn Clock>>,
    host: Option<Arc<dyn HostActions>>,
    adopt_newer: bool,
    replica_read_timeout: Duration,
    replica_cooloff: Duration,
    batch_pages: usize,
    failing_after: u32,
    sink: Option<FailureSink>,
}

impl fmt::Debug for RepairConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepairConfig")
            .field("max_replicas_per_repair", &self.max_replicas_per_repair)
            .field("require_majority", &self.require_majority)
            .field("adopt_newer", &self.adopt_newer)
            .field("replica_read_timeout", &self.replica_read_timeout)
            .field("replica_cooloff", &self.replica_cooloff)
            .field("repair_batch_pages", &self.batch_pages)
            .field("host_actions", &self.host.is_some())
            .field("replica_failing_after", &self.failing_after)
            .finish_non_exhaustive()
    }
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl RepairConfig {
    /// Defaults: 3 votes wanted per repair, the newest copy wins by plurality
    /// (no majority required), calls into replicas and fallbacks time out
    /// after 5 s and one that timed out or panicked cools off for 30 s,
    /// batches of 1 024 pages, a replica reported failing after 3 failed calls
    /// in a row, the detector's clock and failure bus, no host actions.
    pub fn new() -> Self {
        RepairConfig {
            max_replicas_per_repair: 3,
            require_majority: false,
            clock: None,
            host: None,
            adopt_newer: false,
            replica_read_timeout: Duration::from_secs(5),
            replica_cooloff: Duration::from_secs(30),
            batch_pages: 1024,
            failing_after: 3,
            sink: None,
        }
    }

    /// How many verified copies a repair wants to vote on (default 3;
    /// 1 ..= [`MAX_REPLICAS`]). Only copies that verify count: a replica
    /// that is skipped (down, behind, cooling off), whose read fails or times
    /// out, or whose copy fails verification does not use up the limit, and
    /// the repair goes on to the next replica. Collecting more than one lets
    /// copies at the same page LSN vote, so a replica serving a
    /// valid-looking but wrong page is outvoted.
    ///
    /// - **With a page-LSN reader** it is the number of verified copies *at
    ///   the newest page LSN* after which the repair stops asking replicas
    ///   that can only add a vote (their status reports exactly that applied
    ///   LSN). It never stops the repair from asking a replica that could
    ///   hold a newer copy (its status reports no applied LSN, or a higher
    ///   one), so a repair may fetch more copies than this, up to one per
    ///   replica ([`MAX_REPLICAS`]); replicas reporting a lower applied LSN
    ///   are not asked.
    /// - **Without a page-LSN reader** it is the number of verified copies
    ///   after which the repair stops fetching; with 1, the first copy that
    ///   verifies is written. Which copy is newest cannot be told then: a
    ///   lagging majority among those copies wins the vote.
    pub fn max_replicas_per_repair(mut self, copies: usize) -> Self {
        self.max_replicas_per_repair = copies;
        self
    }

    /// Whether a replica copy is written only when more than half of the
    /// verified copies *at the newest page LSN* agree with it byte for byte
    /// (default `false`: the largest group at the newest LSN wins, a
    /// plurality, even without a majority). Copies with an older page LSN
    /// never vote against a newer one: they are never written either way.
    /// Without page LSNs (no page-LSN reader) every copy counts as being at
    /// the newest LSN, so this is a majority of all verified copies. Without
    /// a majority the repair goes on to the fallback sources.
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

    /// How long the repairer waits for the answer of one call into a replica
    /// or a fallback source (default 5 s; more than zero, at most
    /// [`MAX_REPLICA_READ_TIMEOUT`]): a replica's status (the statuses of one
    /// repair share one deadline), a page read, a range digest (anti-entropy:
    /// a digest of up to [`ANTI_ENTROPY_TREE_PAGES`](super::ANTI_ENTROPY_TREE_PAGES)
    /// pages must be answered within it too), a fallback's read. Calls run on
    /// the replica's or source's helper thread (`selfheal-replica-read`,
    /// `selfheal-fallback-read`); one that misses the deadline is abandoned
    /// (its answer discarded), the replica or source counts as unavailable
    /// and timed out, and the repair goes on to the next one. Measured in
    /// real time: it bounds how long a thread waits. A replica that
    /// [may be called inline](crate::Replica::may_call_inline) is called on
    /// the repairing thread and has no deadline.
    pub fn replica_read_timeout(mut self, timeout: Duration) -> Self {
        self.replica_read_timeout = timeout;
        self
    }

    /// How long a replica or fallback source a call into which missed the
    /// deadline or panicked is left alone (default 30 s; at most
    /// [`MAX_REPLICA_COOLOFF`]), measured on the repairer's clock from the
    /// moment it failed. One whose abandoned call has not returned yet stays
    /// unavailable beyond that, so at most one abandoned call per replica or
    /// source is ever running.
    pub fn replica_cooloff(mut self, cooloff: Duration) -> Self {
        self.replica_cooloff = cooloff;
        self
    }

    /// How many pages [`DataRepairer::repair_all`] and
    /// [`DataRepairer::repair_pending`] commit per batch, with one sync of the
    /// store for the whole batch (default 1 024; 1 ..= [`MAX_BATCH_PAGES`]).
    /// A batch holds up to this many pages `Repairing` and keeps in memory,
    /// per page, the distinct verified copies that may be written, with the
    /// copies its first replica's helper read ahead: without a page-LSN
    /// reader at most pages × (`max_replicas_per_repair` + 1) × page size
    /// bytes (16 MiB for the default batch of 4 KiB pages; 4 MiB when the
    /// replicas agree); with one, a page keeps one copy per byte-distinct
    /// copy at its newest LSN (in the worst case, replicas that all
    /// disagree, one per replica).
    ///
    /// Each sync of the store waits for the device, so fewer, larger batches
    /// repair more pages per second; smaller ones report each page sooner
    /// (a page is reported repaired only after its batch's sync) and hold
    /// less memory. Large pages may want a smaller batch.
    pub fn repair_batch_pages(mut self, pages: usize) -> Self {
        self.batch_pages = pages;
        self
    }

    /// The clock that times repairs and cool-offs (default: the detector's clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// After how many failed calls in a row a replica is reported failing
    /// (default 3; at least 1): one
    /// [`FailureKind::ReplicaFailing`](crate::FailureKind::ReplicaFailing)
    /// from [`Source::DataRepairer`](crate::Source::DataRepairer) on the
    /// [failure bus](Self::failure_sink), once per episode, which ends when
    /// the replica serves a copy that verifies.
    ///
    /// A failed call is one that gave the repairer nothing it could use: a
    /// status that says the replica cannot serve reads, a call that
    /// returned an error, missed its deadline or panicked, a call not made
    /// because the replica is hung or cools off after such a call, and a
    /// copy that fails verification. A replica that lags (its status or its
    /// copy is older than the page must be) is not failing: lag counts
    /// neither way.
    pub fn replica_failing_after(mut self, failures: u32) -> Self {
        self.failing_after = failures;
        self
    }

    /// The failure bus the repairer reports on — a replica that keeps
    /// failing, a page left irreparable (default: the detector's,
    /// [`CorruptionDetector::failure_sink`]).
    pub fn failure_sink(mut self, sink: FailureSink) -> Self {
        self.sink = Some(sink);
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
    /// [`MAX_REPLICAS`], `replica_read_timeout` is zero or above
    /// [`MAX_REPLICA_READ_TIMEOUT`], `replica_cooloff` is above
    /// [`MAX_REPLICA_COOLOFF`], or `repair_batch_pages` is 0 or above
    /// [`MAX_BATCH_PAGES`], or `replica_failing_after` is 0.
    pub fn build(self, detector: Arc<CorruptionDetector>) -> Result<DataRepairer> {
        crate::telemetry::describe();
        if self.max_replicas_per_repair == 0 || self.max_replicas_per_repair > MAX_REPLICAS {
            return Err(Error::config(
                "max_replicas_per_repair",
                format!(
                    "is {}; it must be between 1 and {MAX_REPLICAS}",
                    self.max_replicas_per_repair
                ),
            ));
        }
        if self.replica_read_timeout.is_zero()
            || self.replica_read_timeout > MAX_REPLICA_READ_TIMEOUT
        {
            return Err(Error::config(
                "replica_read_timeout",
                format!(
                    "is {:?}; it must be more than zero and at most {MAX_REPLICA_READ_TIMEOUT:?}",
                    self.replica_read_timeout
                ),
            ));
        }
        if self.replica_cooloff > MAX_REPLICA_COOLOFF {
            return Err(Error::config(
                "replica_cooloff",
                format!(
                    "is {:?}; it must be at most {MAX_REPLICA_COOLOFF:?}",
                    self.replica_cooloff
                ),
            ));
        }
        if self.batch_pages == 0 || self.batch_pages > MAX_BATCH_PAGES {
            return Err(Error::config(
                "repair_batch_pages",
                format!(
                    "is {}; it must be between 1 and {MAX_BATCH_PAGES}",
                    self.batch_pages
                ),
            ));
        }
        if self.failing_after == 0 {
            return Err(Error::config(
                "replica_failing_after",
                "is 0; a replica is reported failing after at least one failed call",
            ));
        }
        let clock = self.clock.unwrap_or_else(|| detector.clock().clone());
        let sink = self.sink.unwrap_or_else(|| detector.failure_sink().clone());
        Ok(DataRepairer {
            detector,
            max_copies: self.max_replicas_per_repair,
            require_majority: self.require_majority,
            adopt_newer: self.adopt_newer,
            read_timeout: self.replica_read_timeout,
            cooloff: self.replica_cooloff,
            batch_pages: self.batch_pages,
            clock,
            failing_after: self.failing_after,
            sink,
            host: self.host,
            replicas: RwLock::new(Vec::new()),
            fallbacks: RwLock::new(Vec::new()),
            rebuilder: RwLock::new(None),
            stats: Counters::default(),
        })
    }
}
