//! The manager's in-memory bookkeeping: active transactions and their undo
//! logs (held by the journal, see [`UndoLog`]), remembered outcomes,
//! counters, and the public stats and outcome types.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::types::{Lsn, PageId};

use super::deadlock::WaitForGraph;
use super::journal::JournalStats;
use crate::types::TxnId;

/// What one rollback did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollbackOutcome {
    /// The transactions rolled back.
    pub txns: Vec<TxnId>,
    /// Undo entries applied (including those whose bytes already held the
    /// before-image).
    pub undo_entries: u64,
    /// Pages written (each once; a page that already held every before-image
    /// is not written).
    pub pages_written: u64,
    /// Undo entries not applied because their page no longer held what the
    /// transaction wrote: it was replaced since (restored from a snapshot,
    /// or repaired from another copy). See the
    /// [module docs](crate::rollback#undo-is-applied-only-to-what-the-transaction-wrote).
    pub undo_entries_replaced: u64,
    /// The pages those entries belong to, sorted.
    pub pages_replaced: Vec<PageId>,
    /// How long it took, on the configured clock.
    pub duration: Duration,
}

/// A transaction whose rollback is blocked by pages that fail verification.
/// It stays pending (neither committed nor aborted, its undo kept) until the
/// pages are repaired and the rollback is retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedTxn {
    /// The transaction.
    pub txn: TxnId,
    /// The pages that failed, sorted.
    pub pages: Vec<PageId>,
    /// Why the first of them failed.
    pub reason: String,
}

/// Counters of a [`TransactionRollbackManager`](super::TransactionRollbackManager).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RollbackStats {
    /// Transactions active now (blocked rollbacks included).
    pub active: u64,
    /// Transactions committed since open.
    pub committed: u64,
    /// Transactions rolled back since open (by `rollback` and `rollback_all`).
    pub rolled_back: u64,
    /// Transactions rolled back at open (in flight at the last crash).
    pub recovered: u64,
    /// Undo entries recorded since open.
    pub undo_records: u64,
    /// Before-image bytes recorded since open.
    pub undo_bytes: u64,
    /// Image bytes (before- and after-images) held now for active
    /// transactions.
    pub undo_bytes_held: u64,
    /// Undo entries not applied because their page had been replaced.
    pub undo_entries_replaced: u64,
    /// Rollback attempts that were blocked by a page that fails verification.
    pub rollbacks_blocked: u64,
    /// Rollback operations completed (a batch counts once).
    pub rollbacks: u64,
    /// Total time spent in completed rollbacks.
    pub rollback_time_total: Duration,
    /// The longest completed rollback.
    pub rollback_time_max: Duration,
    /// Deadlocks found.
    pub deadlocks: u64,
    /// The journal's counters (fsyncs, commits per fsync, segments).
    pub journal: JournalStats,
}

#[derive(Default)]
pub(super) struct Counters {
    pub committed: AtomicU64,
    pub rolled_back: AtomicU64,
    pub recovered: AtomicU64,
    pub replaced: AtomicU64,
    pub blocked: AtomicU64,
    pub rollbacks: AtomicU64,
    pub rollback_ns_total: AtomicU64,
    pub rollback_ns_max: AtomicU64,
    pub deadlocks: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    Active,
    Committing,
    RollingBack,
    RollbackFailed,
}

impl Status {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Committing => "committing",
            Status::RollingBack => "rolling back",
            Status::RollbackFailed => "rolling back (failed or blocked, may be retried)",
        }
    }
}

/// One undo entry of an active transaction. Its images live in the
/// transaction's arena: the before-image at `at`, then (when `has_after`)
/// the after-image of the same length.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub lsn: u64,
    pub page: PageId,
    pub offset: u32,
    pub len: u32,
    pub at: usize,
    pub has_after: bool,
}

impl Entry {
    pub(super) fn before<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        &arena[self.at..self.at + self.len as usize]
    }

    pub(super) fn after<'a>(&self, arena: &'a [u8]) -> Option<&'a [u8]> {
        let start = self.at + self.len as usize;
        self.has_after
            .then(|| &arena[start..start + self.len as usize])
    }
}

#[derive(Debug)]
pub(super) struct Txn {
    pub begin_lsn: Lsn,
    pub status: Status,
    /// The commit record's LSN, once it is appended (status `Committing`).
    pub commit_lsn: Option<Lsn>,
    /// Set while the last rollback attempt is blocked by failing pages.
    pub blocked: Option<BlockedTxn>,
}

impl Txn {
    /// An active transaction (its undo log is held by the journal).
    pub(super) fn new(begin_lsn: Lsn) -> Txn {
        Txn {
            begin_lsn,
            status: Status::Active,
            commit_lsn: None,
            blocked: None,
        }
    }
}

/// A transaction's undo: its entries and their images, and what appends
/// counted that the manager's totals do not hold yet. The journal holds
/// it under its own lock, so that an undo append — the record and the
/// entry — is one critical section.
///
/// Lock order: the manager's state, then the journal. An append takes
/// only the journal's lock and appends only while `open` holds; `open` is
/// cleared under that lock when the transaction's status leaves `Active`
/// (with its commit record, or when a rollback takes the images), so an
/// undo record never follows the commit record, nor is missed by a
/// rollback.
#[derive(Debug, Default)]
pub(crate) struct UndoLog {
    /// Whether undo may be appended: true while the transaction is
    /// `Active`; cleared with its commit record (the status turns
    /// `Committing` under the manager's state lock held across both) or
    /// when a rollback takes the images. Goes from true to false only.
    pub open: bool,
    pub entries: Vec<Entry>,
    pub arena: Vec<u8>,
    /// Before-image bytes recorded (what `max_undo_bytes_per_txn` bounds).
    pub before_bytes: u64,
    /// Appended since the manager last folded them into its totals:
    /// records, before-image bytes, image bytes held.
    pub unfolded: (u64, u64, u64),
}

impl UndoLog {
    /// Adds an entry; `after`, when given, must be as long as `before`.
    pub(crate) fn push(
        &mut self,
        lsn: Lsn,
        page: PageId,
        offset: u32,
        before: &[u8],
        after: Option<&[u8]>,
    ) {
        let at = self.arena.len();
        self.arena.extend_from_slice(before);
        if let Some(a) = after {
            debug_assert_eq!(a.len(), before.len());
            self.arena.extend_from_slice(a);
        }
        self.before_bytes += before.len() as u64;
        self.entries.push(Entry {
            lsn: lsn.0,
            page,
            offset,
            len: before.len() as u32,
            at,
            has_after: after.is_some(),
        });
    }

    /// Takes what appends counted since the last call.
    pub(super) fn take_unfolded(&mut self) -> (u64, u64, u64) {
        std::mem::take(&mut self.unfolded)
    }
}

/// Hashes a transaction id by one multiplication (Fibonacci hashing): ids
/// are the manager's own, handed out in sequence, so there is nothing to
/// defend against, and the active map is looked up on every undo record.
#[derive(Default)]
pub(crate) struct TxnIdHasher(u64);

impl Hasher for TxnIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by transaction id.
pub(crate) type TxnMap<V> = HashMap<TxnId, V, BuildHasherDefault<TxnIdHasher>>;

/// How many finished transactions' outcomes are remembered for error messages.
pub(super) const FINISHED_MEMORY: usize = 65_536;

/// Most undo buffers (entry list and image arena) of finished transactions
/// kept for the next transactions to reuse.
pub(super) const SPARE_BUFFERS_MAX: usize = 4;

/// Most bytes of capacity the kept buffers hold together (entries and
/// arenas); a buffer that would exceed it is freed.
pub(super) const SPARE_BYTES_MAX: usize = 16 << 20;

/// The undo buffers of a finished transaction, cleared, kept for reuse so
/// that a busy manager does not grow (and fault in) fresh ones for every
/// transaction.
#[derive(Default)]
pub(super) struct SpareBuffers {
    kept: Vec<(Vec<Entry>, Vec<u8>)>,
    /// Capacity of `kept`, in bytes.
    bytes: usize,
}

fn capacity_bytes(entries: &Vec<Entry>, arena: &Vec<u8>) -> usize {
    entries.capacity() * std::mem::size_of::<Entry>() + arena.capacity()
}

impl SpareBuffers {
    /// Keeps `entries` and `arena` (cleared) if there is room.
    pub(super) fn put(&mut self, mut entries: Vec<Entry>, mut arena: Vec<u8>) {
        let bytes = capacity_bytes(&entries, &arena);
        if self.kept.len() < SPARE_BUFFERS_MAX && bytes > 0 && self.bytes + bytes <= SPARE_BYTES_MAX
        {
            entries.clear();
            arena.clear();
            self.kept.push((entries, arena));
            self.bytes += bytes;
        }
        debug_assert!(self.bytes <= SPARE_BYTES_MAX);
    }

    /// An open log for a new transaction, with kept buffers if there are
    /// any.
    pub(super) fn log(&mut self) -> UndoLog {
        let mut log = UndoLog {
            open: true,
            ..UndoLog::default()
        };
        if let Some((entries, arena)) = self.kept.pop() {
            self.bytes -= capacity_bytes(&entries, &arena);
            log.entries = entries;
            log.arena = arena;
        }
        log
    }
}

#[derive(Default)]
pub(super) struct State {
    pub active: TxnMap<Txn>,
    pub finished: TxnMap<&'static str>,
    pub finished_order: VecDeque<TxnId>,
    pub graph: WaitForGraph,
    /// Image bytes held for active transactions, up to what their logs
    /// have not folded in yet (see [`State::fold`]).
    pub undo_bytes_held: u64,
    /// Lowest id handed out by this manager; smaller ids are from earlier runs.
    pub first_id: Option<u64>,
    /// One past the highest id handed out.
    pub end_id: u64,
    /// Whether a restore guard lives (no `begin` until it is dropped).
    pub restoring: bool,
    /// Undo buffers of finished transactions, for reuse.
    pub spare: SpareBuffers,
    /// Undo entries recorded since open, up to what the logs have not
    /// folded in yet (appends count in their own log, under the lock they
    /// hold anyway).
    pub undo_records: u64,
    /// Before-image bytes recorded since open (folded likewise).
    pub undo_bytes: u64,
    /// Pages changed by transactions in flight at the last crash whose
    /// rollback a report-only open deferred, and which of them changed
    /// each, oldest first (see [`RollbackConfig::defer_recovery`](super::RollbackConfig::defer_recovery)).
    pub deferred_pages: HashMap<PageId, Vec<TxnId>>,
}

impl State {
    /// Forgets `txn` as active and remembers its outcome; `log` is its
    /// undo log, given up by the journal (its buffers are kept for reuse).
    pub(super) fn finish(&mut self, txn: TxnId, log: Option<UndoLog>, outcome: &'static str) {
        self.active.remove(&txn);
        if let Some(mut log) = log {
            self.fold(&mut log);
            self.undo_bytes_held -= log.arena.len() as u64;
            self.spare.put(log.entries, log.arena);
        }
        if !self.deferred_pages.is_empty() {
            self.deferred_pages.retain(|_, owners| {
                owners.retain(|o| *o != txn);
                !owners.is_empty()
            });
        }
        self.graph.remove_txn(txn);
        self.finished.insert(txn, outcome);
        self.finished_order.push_back(txn);
        if self.finished_order.len() > FINISHED_MEMORY {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    /// Adds what appends to `log` counted to the totals.
    pub(super) fn fold(&mut self, log: &mut UndoLog) {
        let (records, bytes, held) = log.take_unfolded();
        self.undo_records += records;
        self.undo_bytes += bytes;
        self.undo_bytes_held += held;
    }

    /// The error for a transaction that cannot take undo now.
    pub(super) fn refusal(&mut self, txn: TxnId) -> Error {
        match self.active_mut(txn) {
            Err(e) => e,
            // The log was closed, so the status left `Active` (and never
            // comes back): not reached.
            Ok(_) => Error::TransactionNotActive {
                txn,
                state: "finished",
            },
        }
    }

    /// The active transaction, or the right error.
    pub(super) fn get(&mut self, txn: TxnId) -> Result<&mut Txn> {
        if !self.active.contains_key(&txn) {
            return Err(self.not_active(txn));
        }
        Ok(self.active.get_mut(&txn).expect("checked above"))
    }

    pub(super) fn not_active(&self, txn: TxnId) -> Error {
        if let Some(t) = self.active.get(&txn) {
            return Error::TransactionNotActive {
                txn,
                state: t.status.as_str(),
            };
        }
        if let Some(outcome) = self.finished.get(&txn) {
            return Error::TransactionNotActive {
                txn,
                state: outcome,
            };
        }
        if txn.0 != 0 && txn.0 < self.end_id {
            return Error::TransactionNotActive {
                txn,
                state: "finished",
            };
        }
        Error::UnknownTransaction { txn }
    }

    pub(super) fn active_mut(&mut self, txn: TxnId) -> Result<&mut Txn> {
        // Two look-ups on the hot path (every undo record), not three.
        match self.active.get(&txn).map(|t| t.status) {
            Some(Status::Active) => Ok(self.active.get_mut(&txn).expect("found above")),
            Some(status) => Err(Error::TransactionNotActive {
                txn,
                state: status.as_str(),
            }),
            None => Err(self.not_active(txn)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_hash_spreads_sequential_ids() {
        use std::hash::BuildHasher;
        let b = BuildHasherDefault::<TxnIdHasher>::default();
        let tops: std::collections::HashSet<u64> =
            (1..=128u64).map(|i| b.hash_one(TxnId(i)) >> 57).collect();
        assert!(tops.len() > 64, "{} distinct top-7-bit values", tops.len());
    }

    proptest::proptest! {
        /// The kept buffers stay within their bounds whatever is put, and
        /// a new transaction gets a cleared one.
        #[test]
        fn spare_buffers_stay_bounded(sizes in proptest::collection::vec(0usize..(12 << 20), 0..12)) {
            let mut spare = SpareBuffers::default();
            for (i, n) in sizes.iter().enumerate() {
                spare.put(Vec::with_capacity(i), vec![7u8; *n]);
                proptest::prop_assert!(spare.kept.len() <= SPARE_BUFFERS_MAX);
                proptest::prop_assert!(spare.bytes <= SPARE_BYTES_MAX);
                let held: usize = spare.kept.iter().map(|(e, a)| capacity_bytes(e, a)).sum();
                proptest::prop_assert_eq!(held, spare.bytes);
            }
            let before = spare.kept.len();
            let t = spare.log();
            proptest::prop_assert!(t.open && t.arena.is_empty() && t.entries.is_empty());
            proptest::prop_assert_eq!(spare.kept.len(), before.saturating_sub(1));
        }
    }

    #[test]
    fn finished_outcomes_are_remembered_within_a_bound() {
        let mut st = State {
            end_id: FINISHED_MEMORY as u64 + 10,
            ..State::default()
        };
        for i in 1..=FINISHED_MEMORY as u64 + 5 {
            st.finish(TxnId(i), None, "committed");
        }
        assert_eq!(st.finished.len(), FINISHED_MEMORY);
        assert!(matches!(
            st.not_active(TxnId(1)),
            Error::TransactionNotActive {
                state: "finished",
                ..
            }
        ));
        assert!(matches!(
            st.not_active(TxnId(FINISHED_MEMORY as u64)),
            Error::TransactionNotActive {
                state: "committed",
                ..
            }
        ));
        assert!(matches!(
            st.not_active(TxnId(u64::MAX)),
            Error::UnknownTransaction { .. }
        ));
    }
}
