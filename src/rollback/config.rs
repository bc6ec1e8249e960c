//! [`RollbackConfig`]: where the journal lives and the manager's limits.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::types::FailureSink;

use super::deadlock::VictimPolicy;
use super::journal::{self, JournalStorage, RecoveryMode};
use super::writer::RepairHook;

pub(super) enum JournalLocation {
    Dir(PathBuf),
    Storage(Arc<dyn JournalStorage>),
}

/// Configuration of a [`TransactionRollbackManager`](super::TransactionRollbackManager).
#[must_use]
pub struct RollbackConfig {
    pub(super) location: JournalLocation,
    pub(super) segment_size_bytes: u64,
    pub(super) buffer_bytes: usize,
    pub(super) recovery_mode: RecoveryMode,
    pub(super) victim_policy: VictimPolicy,
    pub(super) max_active_transactions: usize,
    pub(super) max_undo_bytes_per_txn: u64,
    pub(super) sync_wait_timeout: Duration,
    pub(super) idle_mark_delay: Duration,
    pub(super) stop_timeout: Duration,
    pub(super) recovery_batch_bytes: u64,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) failure_sink: Option<FailureSink>,
    pub(super) repair_hook: Option<RepairHook>,
    pub(super) defer_recovery: bool,
}

impl fmt::Debug for RollbackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RollbackConfig")
            .field("segment_size_bytes", &self.segment_size_bytes)
            .field("buffer_bytes", &self.buffer_bytes)
            .field("recovery_mode", &self.recovery_mode)
            .field("victim_policy", &self.victim_policy)
            .field("max_active_transactions", &self.max_active_transactions)
            .field("max_undo_bytes_per_txn", &self.max_undo_bytes_per_txn)
            .field("sync_wait_timeout", &self.sync_wait_timeout)
            .field("idle_mark_delay", &self.idle_mark_delay)
            .field("stop_timeout", &self.stop_timeout)
            .field("recovery_batch_bytes", &self.recovery_batch_bytes)
            .field("repair_hook", &self.repair_hook.is_some())
            .field("defer_recovery", &self.defer_recovery)
            .finish_non_exhaustive()
    }
}

impl RollbackConfig {
    /// A journal in the directory `dir` (created if missing). Defaults:
    /// 64 MiB segments, a 1 MiB append buffer, [`RecoveryMode::TolerateTornTail`],
    /// [`VictimPolicy::Youngest`], 65 536 active transactions, 256 MiB of
    /// undo per transaction, a 30 s wait for another thread's fsync, a 10 ms
    /// idle-mark delay, 16 MiB of undo per recovery batch, the system clock, a failure bus of its own, no
    /// repair hook.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_location(JournalLocation::Dir(dir.into()))
    }

    /// A journal on any [`JournalStorage`] (for example the crash-simulating
    /// in-memory directory of the `testing` feature).
    pub fn with_storage(storage: Arc<dyn JournalStorage>) -> Self {
        Self::with_location(JournalLocation::Storage(storage))
    }

    fn with_location(location: JournalLocation) -> Self {
        RollbackConfig {
            location,
            segment_size_bytes: 64 << 20,
            buffer_bytes: 1 << 20,
            recovery_mode: RecoveryMode::default(),
            victim_policy: VictimPolicy::default(),
            max_active_transactions: 65_536,
            max_undo_bytes_per_txn: 256 << 20,
            sync_wait_timeout: Duration::from_secs(30),
            idle_mark_delay: Duration::from_millis(10),
            stop_timeout: Duration::from_secs(30),
            recovery_batch_bytes: 16 << 20,
            clock: SystemClock::shared(),
            failure_sink: None,
            repair_hook: None,
            defer_recovery: false,
        }
    }

    /// Size in bytes at which a new segment is started (default 64 MiB). It
    /// must hold the 40-byte header plus one undo record of a whole page
    /// (2 × page size + 37 bytes: the before- and the after-image).
    pub fn segment_size_bytes(mut self, bytes: u64) -> Self {
        self.segment_size_bytes = bytes;
        self
    }

    /// Bytes of encoded records held in memory before they are written to the
    /// segment without an fsync (default 1 MiB, at least 1). Threads appending
    /// undo at the same moment may each add one record past it before the
    /// buffer is written.
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// What to do with damage found at open (default
    /// [`RecoveryMode::TolerateTornTail`]).
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }

    /// How a deadlock victim is chosen (default [`VictimPolicy::Youngest`]).
    pub fn victim_policy(mut self, policy: VictimPolicy) -> Self {
        self.victim_policy = policy;
        self
    }

    /// Most transactions active at once (default 65 536, at least 1).
    pub fn max_active_transactions(mut self, n: usize) -> Self {
        self.max_active_transactions = n;
        self
    }

    /// Most before-image bytes one transaction may hold (default 256 MiB, at
    /// least 1). The manager keeps them, and the after-images (as many bytes
    /// again), in memory until commit or rollback.
    pub fn max_undo_bytes_per_txn(mut self, bytes: u64) -> Self {
        self.max_undo_bytes_per_txn = bytes;
        self
    }

    /// How long a thread waits for another thread's journal fsync before it
    /// gives up with a retryable timed-out I/O error (default 30 s, nonzero).
    pub fn sync_wait_timeout(mut self, timeout: Duration) -> Self {
        self.sync_wait_timeout = timeout;
        self
    }

    /// How long [`stop`](super::TransactionRollbackManager::stop) waits for
    /// the journal's last flush (its writes, fsyncs and covering mark) on
    /// its `selfheal-undo-close` thread (default 30 s, nonzero; real time).
    /// A flush that does not finish by then (an fsync that hangs) is left
    /// running, reported as
    /// [`FailureKind::JournalPoisoned`](crate::FailureKind::JournalPoisoned),
    /// and the stop returns [`Error::Poisoned`].
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// How long the journal waits, after an fsync that no further batch
    /// follows, before the `selfheal-undo-mark` thread writes and fsyncs a
    /// synced-through mark covering it (default 10 ms, nonzero, at most
    /// 60 s; measured in real time, like `sync_wait_timeout`). It bounds the
    /// window in which media damage to an acknowledged commit could be taken
    /// for a torn tail (see "Power loss and the synced-through
    /// mark" in `rollback/journal/mod.rs`).
    pub fn idle_mark_delay(mut self, delay: Duration) -> Self {
        self.idle_mark_delay = delay;
        self
    }

    /// Most image bytes (before- and after-images) of the undo of
    /// transactions in flight at the last crash that recovery holds in memory
    /// at once (default 16 MiB, at least 1). Recovery reads the journal one
    /// segment at a time; when that undo is larger than this, it is applied
    /// in batches of page ranges, each read from the journal again, so that
    /// memory stays near this plus two segments whatever the journal's
    /// length. The undo of one page is never split (it may exceed this).
    pub fn recovery_batch_bytes(mut self, bytes: u64) -> Self {
        self.recovery_batch_bytes = bytes;
        self
    }

    /// The clock rollback durations are measured with (default: system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The failure bus it reports on: deadlocks, transactions in flight at
    /// a crash, blocked rollbacks, a poisoned journal (default: a bus of its
    /// own holding 4 096 unread reports). Give every component the same sink
    /// to see one ordered stream.
    pub fn failure_sink(mut self, sink: FailureSink) -> Self {
        self.failure_sink = Some(sink);
        self
    }

    /// A repair to try on a page that fails verification on the rollback
    /// path, before the write or rollback gives up on it (default: none).
    /// See [`RepairHook`].
    pub fn repair_hook(mut self, hook: RepairHook) -> Self {
        self.repair_hook = Some(hook);
        self
    }

    /// Report-only recovery (default off): the open finds the
    /// transactions in flight at the last crash and reports them
    /// ([`RecoveryReport::deferred`](super::RecoveryReport::deferred), and
    /// [`FailureKind::InFlightAtCrash`](crate::types::FailureKind::InFlightAtCrash)
    /// with a count of 0 on the failure bus) but writes no page and no
    /// abort record. Each stays pending as an active transaction of the
    /// opened manager, its undo read back into memory: roll it back with
    /// [`rollback`](super::TransactionRollbackManager::rollback) (or
    /// [`rollback_all`](super::TransactionRollbackManager::rollback_all)),
    /// or open the journal again without this (its recovery rolls it back
    /// then). Until then no new transaction may record undo on a page a
    /// deferred transaction changed ([`Error::InvalidArgument`] naming the
    /// page and the transaction): a committed change there would make the
    /// deferred rollback skip that page and leave the crashed
    /// transaction's other bytes in place.
    pub fn defer_recovery(mut self, yes: bool) -> Self {
        self.defer_recovery = yes;
        self
    }

    pub(super) fn validate(&self, page_size: usize) -> Result<()> {
        let max_image = (journal::MAX_PAYLOAD_LEN - journal::UNDO_FIXED_LEN) / 2;
        if page_size == 0 || page_size > max_image {
            return Err(Error::config(
                "page_size",
                format!(
                    "the store's page size is {page_size}; it must be between 1 and {max_image} bytes"
                ),
            ));
        }
        let min_segment = (journal::SEGMENT_HEADER_LEN
            + journal::RECORD_HEADER_LEN
            + journal::UNDO_FIXED_LEN
            + 2 * page_size) as u64;
        if self.segment_size_bytes < min_segment {
            return Err(Error::config(
                "segment_size_bytes",
                format!(
                    "is {}; it must hold a header and one whole-page undo record: at least {min_segment} bytes for {page_size}-byte pages",
                    self.segment_size_bytes
                ),
            ));
        }
        if self.buffer_bytes == 0 {
            return Err(Error::config("buffer_bytes", "is 0; it must be at least 1"));
        }
        if self.max_active_transactions == 0 {
            return Err(Error::config(
                "max_active_transactions",
                "is 0; it must be at least 1",
            ));
        }
        if self.max_undo_bytes_per_txn == 0 {
            return Err(Error::config(
                "max_undo_bytes_per_txn",
                "is 0; it must be at least 1",
            ));
        }
        if self.recovery_batch_bytes == 0 {
            return Err(Error::config(
                "recovery_batch_bytes",
                "is 0; it must be at least 1 (16 MiB is the default)",
            ));
        }
        if self.sync_wait_timeout.is_zero() {
            return Err(Error::config(
                "sync_wait_timeout",
                "is zero; give the time a journal fsync may take, e.g. 30 s",
            ));
        }
        if self.stop_timeout.is_zero() {
            return Err(Error::config(
                "stop_timeout",
                "is zero; give the time the journal's last flush may take at stop, e.g. 30 s",
            ));
        }
        if self.idle_mark_delay.is_zero() || self.idle_mark_delay > Duration::from_secs(60) {
            return Err(Error::config(
                "idle_mark_delay",
                format!(
                    "is {:?}; it must be above zero and at most 60 s (a few milliseconds is right: it is how long an acknowledged commit may go without a durable mark)",
                    self.idle_mark_delay
                ),
            ));
        }
        Ok(())
    }
}
