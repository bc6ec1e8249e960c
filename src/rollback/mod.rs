//! `TransactionRollbackManager`: per-transaction undo (before- and
//! after-images), rollback in reverse order with verification, a durable
//! undo journal so that transactions in flight at a crash are rolled back at
//! the next open, group commit, and a wait-for graph that finds deadlocks.
//!
//! # Guarantee
//!
//! No transaction left half-done by a crash or a rollback survives, and
//! committed work is never undone — provided the host keeps two rules:
//!
//! 1. **Write-ahead:** before a changed page is handed to the page store,
//!    the undo for the change is durable
//!    ([`ensure_durable`](TransactionRollbackManager::ensure_durable) with the
//!    LSN [`record_undo`](TransactionRollbackManager::record_undo) returned;
//!    [`write`](TransactionRollbackManager::write) does both).
//! 2. **Strict locking:** bytes a transaction changed are changed by no one
//!    else until its `commit` or `rollback` returns, and a transaction's
//!    page changes are durable in the store before its `commit` is called
//!    (or the host redoes them from its own log).
//!
//! Transaction ids grow with begin order and are never handed out twice,
//! also across crashes and restarts: ids are handed out only from a block
//! reserved durably in the journal's state file, and an open starts after
//! the last reservation.
//!
//! The on-disk format, the crash analysis and the recovery modes are in
//! the journal's module docs (`rollback/journal/mod.rs`).
//!
//! # Rollback
//!
//! Before-images are applied newest first. Images of the same page are
//! applied together: one read, every image of that page in reverse LSN order,
//! one write, one re-read that must equal what was written
//! ([`Error::RollbackVerifyFailed`] otherwise). Pages are independent, so the
//! order between pages does not matter. The pages are synced before the
//! abort record is written, and the abort record is durable before
//! `rollback` returns.
//!
//! # Undo is applied only to what the transaction wrote
//!
//! Every undo record carries the bytes the change wrote (the after-image)
//! next to the bytes it replaced (the before-image). A transaction's undo is
//! applied to a page only where the page still holds what the transaction's
//! own changes explain: every byte its records cover must equal that byte of
//! one of their before-images (already restored, or never written) or
//! after-images (written — a write torn by a crash leaves a mix of the two,
//! byte by byte). A page holding anything else was **replaced** since — by a
//! restore from a snapshot or a repair from another copy — and none of the
//! transaction's undo for that page is applied: the entries are counted,
//! logged and reported ([`RollbackOutcome::undo_entries_replaced`],
//! [`RecoveryReport::undo_entries_replaced`]), never written. So a snapshot
//! that holds a transaction's partial change gets it rolled back, and one
//! that predates the change is left alone. Records of journal format
//! version 1 carry no after-image and are applied unconditionally, as that
//! version did.
//!
//! # Pages that fail verification
//!
//! Every read on the rollback path is a verified read where the
//! [`PageWriter`] verifies (the [`CorruptionDetector`]): a fenced page is
//! refused, and a page that fails is fenced and reported. Rollback never
//! patches and reseals bytes it has not verified. A page that fails is
//! handed to the configured [`RepairHook`], if any, and read again; if it
//! still fails:
//!
//! - [`write`](TransactionRollbackManager::write) returns the verification
//!   error (it names the page) and writes nothing;
//! - [`rollback`](TransactionRollbackManager::rollback) and
//!   [`rollback_all`](TransactionRollbackManager::rollback_all) restore the
//!   other pages, but the transactions with undo on that page are **not**
//!   aborted: they stay pending with their undo, the call returns
//!   [`Error::RollbackBlocked`] naming a transaction and the page, and
//!   [`blocked_rollbacks`](TransactionRollbackManager::blocked_rollbacks)
//!   lists them all. Repair the page, then roll back again. When no copy of
//!   the page's last write exists — it was the transaction's own, never
//!   shipped to a replica — [`rebuild_page`](TransactionRollbackManager::rebuild_page)
//!   rebuilds it from a copy of the version before (a replica's) and the
//!   undo held for the page, after checking each before-image against the
//!   bytes it replaces and the result against the writer's checksum and
//!   LSN; the healer's rollback remedies do this for every blocked page a
//!   repair leaves failing;
//! - recovery at open finishes every transaction it can and lists the
//!   blocked ones, with their pages, in [`RecoveryReport::blocked`]; they
//!   stay pending as active transactions of the opened manager (and are
//!   tried again at every open until they finish).
//!
//! A page torn by a crash under a checksum is such a page: earlier versions
//! read it raw and overwrote the torn range; now it stays fenced until it
//! is repaired from a replica or a snapshot (the repair hook, or the host),
//! and then the blocked rollback completes — applying the undo only if the
//! repaired copy holds what the transaction wrote. [`RawPages`] has nothing
//! to verify against and reads raw, so a torn page there is restored as
//! before.
//!
//! One failing page needs no repair: a torn or lost write (the disk kept
//! part of it, or none, and reported it done) of the very transactions
//! being rolled back. When the page as stored is
//! explained byte for byte by their undo entries (each covered byte is a
//! before- or after-image byte) and, with every after-image put over it,
//! is exactly the page's last write as the writer would verify it
//! ([`PageWriter::is_last_write`]: the detector's checksum and, with a
//! page-LSN reader, the exact LSN), then every byte outside the entries is
//! the last write's, and the before-images put the page back as it was
//! before the transactions; the rollback writes that (sealed, even when
//! the page held every before-image already: the write makes those bytes
//! verify again), which lifts the fence. This matters under a sidecar table, where a sync after the
//! torn write settled its checksum and dropped the previous contents' —
//! so a replica's copy of those (the newest acknowledged version) would
//! not verify, and no copy of the torn write exists (it was never
//! acknowledged). Damage anywhere else in the page is not explained, and
//! the rollback stays blocked.
//!
//! # Report-only recovery
//!
//! With [`RollbackConfig::defer_recovery`] the open finds the transactions
//! in flight at the last crash and reports them
//! ([`RecoveryReport::deferred`], with their pages) but changes no page
//! and appends no abort record: they stay pending, with their undo in
//! memory, as active transactions ([`rollback`](TransactionRollbackManager::rollback)
//! rolls one back; an open without the option rolls them back as ever,
//! since the journal still has them in flight). Until then a new
//! transaction may not record undo on a page they changed, so no committed
//! change lands on bytes a later rollback would have to restore. A recovery
//! manager in [`Mode::Observe`](crate::recovery::Mode::Observe) opens its
//! journal this way.
//!
//! # Recovery's memory
//!
//! Recovery reads the journal one segment at a time: a scan that keeps a
//! summary per segment, a pass that learns every transaction's outcome
//! (keeping only the unfinished ones), and the undo of the transactions in
//! flight at the crash, read again from their segments and applied in
//! batches of page ranges of at most
//! [`recovery_batch_bytes`](RollbackConfig::recovery_batch_bytes) of images
//! (every record of a page in the same batch, so each page is judged and
//! written exactly as in one batch). Peak memory is about two segments plus
//! one batch, whatever the journal's length (a 1 GiB journal of 8 MiB
//! segments recovers in about 35 MiB resident:
//! `tests/rollback_recovery_memory.rs`); its time grows linearly with the
//! journal, plus a read of the in-flight transactions' segments per batch
//! (and per halving of a page range whose undo did not fit). Transactions whose rollback is blocked keep their undo in memory,
//! as active transactions do.
//!
//! # Pages the host freed
//!
//! A page the host calls unallocated (the detector's
//! [`Error::PageUnallocated`]: it fails verification and the host freed it,
//! with [`forget`](crate::CorruptionDetector::forget) or its
//! [free-page answer](crate::CorruptionConfig::free_pages)) holds nothing:
//! its bytes mean nothing and nobody vouches for them. A transaction may
//! reuse it: [`write`](TransactionRollbackManager::write) takes its current
//! contents to be **zeros** — the before-image is zeros, never the raw bytes
//! nobody verified — and writes the page, sealed, with the transaction's
//! bytes and zeros around them (the page is in use again). A rollback puts
//! the zeros back, sealed: the page verifies, holds nothing, and raises no
//! alarm; the host's own metadata still calls it free. If the page is
//! unallocated again when the undo is applied (the host freed it again, or
//! a crash left its free mark), nothing of the transaction is on it: its
//! undo entries count as applied and the page is left as it is, free.
//!
//! # Restoring the store
//!
//! A host that restores its store from a snapshot keeps this contract:
//!
//! 1. With the manager open, finish every transaction (commit, roll back,
//!    and repair the pages of blocked rollbacks), then call
//!    [`prepare_restore`](TransactionRollbackManager::prepare_restore). It
//!    refuses with [`Error::TransactionsInFlight`] while any transaction is
//!    in flight; otherwise it retires the whole journal durably, so that no
//!    undo record from before the restore is ever applied again, and returns
//!    a [`RestoreGuard`] that makes [`begin`](TransactionRollbackManager::begin)
//!    fail with [`Error::RestoreInProgress`].
//! 2. Restore the store while holding the guard; drop it afterwards.
//!
//! If the host restores while the manager is not open — after a crash, say —
//! and then opens it, recovery rolls back the transactions that were in
//! flight at the crash against the restored pages: undo is applied only to
//! pages that hold what those transactions wrote (a snapshot taken during
//! the transaction gets its partial change rolled back; pages from a
//! snapshot that predates it are left alone and reported as replaced).
//! Finished transactions' undo is never applied. To avoid even that
//! judgement, open the manager (which recovers against the old store)
//! before restoring, and follow steps 1 and 2.
//!
//! # A stalled journal
//!
//! A retryable failure of a journal write or fsync (a full disk, `EIO`)
//! stalls the journal instead of ending it, as RocksDB's auto-resume does
//! for retryable background errors: every record it accepted stays in
//! memory, new ones are refused with the retryable
//! [`Error::JournalStalled`], and
//! [`FailureKind::JournalStalled`] is
//! reported. [`TransactionRollbackManager::resume`] truncates the newest
//! segment after its last durable record (a failed fsync may have dropped
//! the bytes after it, and a second fsync would not say so), writes the
//! kept records again and fsyncs; the
//! [`AutoRecoveryManager`](crate::AutoRecoveryManager) runs it on its own
//! (remedy `resume-journal`, making room first for a full disk) and, while
//! the disk stays full, again after a backoff doubling from
//! [`RESUME_BACKOFF_BASE`] to [`RESUME_BACKOFF_CAP`]. A commit acknowledged
//! is durable; one refused by the stall is retried by the caller after the
//! resume. A failure that is not retryable (`EROFS`, a deleted segment,
//! durable records that no longer read back at the resume) poisons the
//! journal ([`Error::Poisoned`]) as before.
//!
//! # Writing pages
//!
//! Rollback writes through a [`PageWriter`]: [`RawPages`] over a bare
//! [`PageStore`](crate::PageStore), or a [`CorruptionDetector`] for a
//! protected store, so that restored pages are resealed and their checksums
//! stay current.
//!
//! # Threads: why `build` starts the mark thread
//!
//! Every other component is constructed by its configuration's `build` and
//! begins background work with `start`. The rollback manager has no
//! `start`: its one thread, `selfheal-undo-mark`, is started by
//! [`RollbackConfig::build`] because it is part of durability, not a
//! service. After an fsync that no later batch follows, it writes and syncs
//! a synced-through mark within [`RollbackConfig::idle_mark_delay`]; the
//! mark is what lets recovery tell a torn tail (an append a crash cut short,
//! dropped) from damage to records that were acknowledged durable (refused,
//! or rolled back only as far as the mode allows). A manager whose mark
//! thread had not been started would acknowledge commits that no mark ever
//! covers, and media damage to their commit records would then be taken for
//! a torn tail at the next open: the transaction's committed work would be
//! undone. So the thread runs for as long as the manager accepts work;
//! [`TransactionRollbackManager::stop`] writes a last mark, stops it
//! (waiting at most a fixed bound) and closes the manager.

mod apply;
mod config;
mod deadlock;
mod losers;
mod ops;
mod rebuild;
// What only `testing` reaches (fuzz targets, corpus tests) is unused without it.
#[cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]
pub(crate) mod journal;
mod recovery;
mod restore;
mod stall;
mod txns;
mod undo;
mod writer;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::clock::Clock;
use crate::error::{Error, Result};
pub(crate) use crate::types::TxnId;
use crate::types::{Failure, FailureKind, FailureSink, Lsn, PageId, Source};
use crate::worker::{CallError, TimedCaller};

pub use config::RollbackConfig;
use deadlock::choose_victim;
pub use deadlock::{Deadlock, VictimPolicy};
pub use journal::{JournalDamage, JournalStats, JournalStorage, RecoveryMode};
pub use recovery::{RecoveredTxn, RecoveryReport};
pub use restore::RestoreGuard;
pub use stall::{JournalStall, ResumeReport, RESUME_BACKOFF_BASE, RESUME_BACKOFF_CAP};
pub use txns::{BlockedTxn, RollbackOutcome, RollbackStats};
pub use writer::{is_page_failure, PageWriter, RawPages, RepairHook};

#[cfg(doc)]
use crate::corruption::CorruptionDetector;

use apply::PageLocks;
use journal::Journal;
use txns::{Counters, State};

/// When the stall began and when it is to be reported again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StallWatch {
    pub(crate) since_ns: u64,
    /// `u64::MAX`: reported, and no resume has failed since.
    pub(crate) next_report_ns: u64,
}

/// Shared between the journal's stall hook and the manager.
pub(crate) type SharedWatch = Arc<Mutex<Option<StallWatch>>>;

/// Per-transaction undo with a durable journal, rollback, crash recovery,
/// group commit and deadlock detection.
///
/// ```
/// use std::sync::Arc;
/// use selfheal::{MemStore, PageId, PageStore, RollbackConfig};
/// use selfheal::rollback::RawPages;
///
/// let dir = tempfile::tempdir()?;
/// let store = Arc::new(MemStore::new(4096, 16)?);
/// let mgr = RollbackConfig::new(dir.path()).build(RawPages::shared(store.clone()))?;
///
/// // A transaction that commits: its change stays.
/// let t1 = mgr.begin()?;
/// mgr.write(t1, PageId(1), 100, b"committed")?; // undo made durable, then the page written
/// mgr.commit(t1)?;
///
/// // A transaction that is rolled back: its change is undone.
/// let t2 = mgr.begin()?;
/// mgr.write(t2, PageId(1), 100, b"discarded")?;
/// let outcome = mgr.rollback(t2)?;
/// assert_eq!(outcome.undo_entries, 1);
///
/// let mut page = vec![0u8; 4096];
/// store.read_page(PageId(1), &mut page)?;
/// assert_eq!(&page[100..109], b"committed");
/// assert_eq!(mgr.stats().committed, 1);
/// assert!(matches!(mgr.commit(t2), Err(selfheal::Error::TransactionNotActive { .. })));
/// mgr.stop()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TransactionRollbackManager {
    pages: Arc<dyn PageWriter>,
    /// `pages.usable_len()`, read once when the manager is built (a page's
    /// size and its placement do not change under a store).
    usable_len: usize,
    /// Shared with the `selfheal-undo-close` thread that runs the last flush.
    journal: Arc<Journal>,
    /// Runs the journal's last flush at [`stop`](Self::stop), bounded.
    closer: TimedCaller,
    stop_timeout: Duration,
    state: Mutex<State>,
    page_locks: PageLocks,
    victim_policy: VictimPolicy,
    max_active: usize,
    max_undo: u64,
    clock: Arc<dyn Clock>,
    sink: FailureSink,
    repair_hook: Option<RepairHook>,
    /// Set by the first [`stop`](TransactionRollbackManager::stop).
    stopped: AtomicBool,
    /// Whether a page may be held by a deferred rollback: appends then
    /// check the state's `deferred_pages` (cleared once it is empty).
    deferred: AtomicBool,
    counters: Counters,
    report: RecoveryReport,
    /// When the journal stalled and when that is to be reported again.
    stall_watch: SharedWatch,
}

impl fmt::Debug for TransactionRollbackManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionRollbackManager")
            .field("pages", &self.pages)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn check_range(
    page: PageId,
    offset: usize,
    len: usize,
    page_size: usize,
    page_count: u64,
) -> Result<()> {
    let end = offset as u64 + len as u64;
    if end > page_size as u64 {
        return Err(Error::UndoOutOfPage {
            page,
            offset: offset as u64,
            end,
            page_size,
        });
    }
    if page.0 >= page_count {
        return Err(Error::PageOutOfRange { page, page_count });
    }
    Ok(())
}

impl TransactionRollbackManager {
    /// The receiving end of its failure bus (cloning shares the queue).
    #[must_use]
    pub fn failures(&self) -> crossbeam_channel::Receiver<Failure> {
        self.sink.failures()
    }

    /// The failure bus it reports on.
    #[must_use]
    pub fn failure_sink(&self) -> &FailureSink {
        &self.sink
    }

    /// What recovery did at open.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The host reports that every page change whose undo LSN is at most
    /// `lsn` is durable in its store. Segments holding only records older
    /// than that, and older than the begin record of every active (or
    /// blocked) transaction, are removed. Returns the removed segment
    /// numbers.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an LSN not handed out yet;
    /// [`Error::Poisoned`]; [`Error::Io`] when the state file or a removal
    /// fails.
    pub fn checkpoint(&self, lsn: Lsn) -> Result<Vec<u64>> {
        self.check_open()?;
        let next = self.journal.stats().next_lsn;
        if lsn >= next {
            return Err(Error::InvalidArgument {
                what: "lsn",
                reason: format!(
                    "checkpoint LSN {lsn} has not been handed out yet (next is {next})"
                ),
            });
        }
        let oldest_active = self
            .state
            .lock()
            .active
            .values()
            .map(|t| t.begin_lsn.0)
            .min()
            .unwrap_or(u64::MAX);
        let keep_from = Lsn(lsn.0.saturating_add(1).min(oldest_active));
        self.journal.truncate_before(keep_from)
    }

    /// Reports that `waiter` waits for `holder` (a lock). When the wait
    /// closes a cycle, returns the deadlock and its victim (chosen by the
    /// configured [`VictimPolicy`]); the host rolls the victim back, which
    /// also removes its waits.
    ///
    /// # Errors
    /// [`Error::UnknownTransaction`] / [`Error::TransactionNotActive`] for a
    /// transaction that is not active; [`Error::InvalidArgument`] for a
    /// transaction waiting for itself.
    pub fn add_wait(&self, waiter: TxnId, holder: TxnId) -> Result<Option<Deadlock>> {
        if waiter == holder {
            return Err(Error::InvalidArgument {
                what: "holder",
                reason: format!("transaction {waiter} cannot wait for itself"),
            });
        }
        let mut st = self.state.lock();
        st.get(waiter)?;
        st.get(holder)?;
        let Some(cycle) = st.graph.add_wait(waiter, holder) else {
            return Ok(None);
        };
        let victim = choose_victim(&cycle, self.victim_policy, |t| {
            self.journal.log(t).map_or(0, |log| log.before_bytes)
        })
        .expect("a cycle has members");
        drop(st);
        self.counters.deadlocks.fetch_add(1, Ordering::Relaxed);
        let evidence = format!(
            "wait-for cycle {}; victim {victim} ({:?})",
            cycle
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" -> "),
            self.victim_policy
        );
        tracing::warn!(%evidence, "deadlock");
        self.sink.send(Failure::new(
            Source::TransactionRollbackManager,
            FailureKind::Deadlock { victim },
            evidence,
            self.clock.now_ns(),
        ));
        Ok(Some(Deadlock { cycle, victim }))
    }

    /// Reports that a wait ended. Returns whether it was known.
    pub fn remove_wait(&self, waiter: TxnId, holder: TxnId) -> bool {
        self.state.lock().graph.remove_wait(waiter, holder)
    }

    /// The active transactions (including those committing, rolling back or
    /// blocked), sorted.
    #[must_use]
    pub fn active_transactions(&self) -> Vec<TxnId> {
        let mut v: Vec<TxnId> = self.state.lock().active.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Makes every journal record appended so far durable and writes (and
    /// fsyncs) a synced-through mark covering them, now — what the
    /// `selfheal-undo-mark` thread does
    /// [`idle_mark_delay`](RollbackConfig::idle_mark_delay) after the last
    /// fsync; nothing is written when a durable mark covers them already.
    ///
    /// Until a mark covers an acknowledged commit, media damage to the
    /// commit's own bytes is indistinguishable from a torn tail, and
    /// recovery would roll the commit back if the process also crashed
    /// (the residual window: see
    /// [why `build` starts the mark thread](crate::rollback#threads-why-build-starts-the-mark-thread)).
    /// A host that cannot accept that window for some commits calls this
    /// after them (one more write and fsync, or none when a later batch
    /// carried the mark); a host that drives time itself (a deterministic
    /// simulation) calls it where its idle delay would have passed.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or the journal's write or fsync error (which
    /// poisons it).
    pub fn mark_synced(&self) -> Result<()> {
        self.journal.mark_now()
    }

    /// Every journal record up to this LSN is durable.
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        self.journal.durable_lsn()
    }

    /// Current counters.
    #[must_use]
    pub fn stats(&self) -> RollbackStats {
        let c = &self.counters;
        let (active, held, undo_records, undo_bytes) = {
            let mut st = self.state.lock();
            let mut logs = self.journal.logs();
            for log in logs.values_mut() {
                st.fold(log);
            }
            drop(logs);
            (
                st.active.len() as u64,
                st.undo_bytes_held,
                st.undo_records,
                st.undo_bytes,
            )
        };
        RollbackStats {
            active,
            committed: c.committed.load(Ordering::Relaxed),
            rolled_back: c.rolled_back.load(Ordering::Relaxed),
            recovered: c.recovered.load(Ordering::Relaxed),
            undo_records,
            undo_bytes,
            undo_bytes_held: held,
            undo_entries_replaced: c.replaced.load(Ordering::Relaxed),
            rollbacks_blocked: c.blocked.load(Ordering::Relaxed),
            rollbacks: c.rollbacks.load(Ordering::Relaxed),
            rollback_time_total: Duration::from_nanos(c.rollback_ns_total.load(Ordering::Relaxed)),
            rollback_time_max: Duration::from_nanos(c.rollback_ns_max.load(Ordering::Relaxed)),
            deadlocks: c.deadlocks.load(Ordering::Relaxed),
            journal: self.journal.stats(),
        }
    }

    /// Makes every journal record durable and covered by a durable
    /// synced-through mark, stops the journal's mark thread (waiting at
    /// most a fixed bound for a mark being written), and closes the
    /// manager: later calls that change or end transactions return
    /// [`Error::Stopped`], and a second `stop` does nothing. Active (and
    /// blocked) transactions are left in flight: the next build rolls them
    /// back. It takes `&self`, like every component's `stop`, so a manager
    /// shared behind an `Arc` (with a healer, say) stops too; the journal's
    /// storage is released ([`JournalStorage::release`]: a directory's lock),
    /// so a new manager may open it while old handles linger. Dropping the
    /// manager without `stop` only stops the mark thread; what was not yet
    /// durable is then treated like a crash at the next open.
    ///
    /// The flush runs on the `selfheal-undo-close` thread and is waited for
    /// at most [`RollbackConfig::stop_timeout`]. A flush that does not
    /// finish by then (an fsync that hangs) is left running, with the
    /// storage still owned until it returns (so no second manager writes the
    /// journal beside it), and is reported on the failure bus as
    /// [`FailureKind::JournalPoisoned`].
    ///
    /// # Errors
    /// [`Error::Poisoned`] when the journal cannot be made durable: its
    /// flush failed, panicked, or did not finish within the stop timeout.
    /// [`Error::JournalStalled`] when the journal is stalled: what it kept
    /// in memory is then treated like a crash at the next open (call
    /// [`resume`](Self::resume) before `stop` to keep it).
    pub fn stop(&self) -> Result<()> {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let journal = self.journal.clone();
        let started = self.closer.start(move || {
            let closed = journal.close();
            journal.release();
            closed
        });
        let deadline = Instant::now() + self.stop_timeout;
        let why = match started.and_then(|mut call| call.wait_until(deadline)) {
            Ok(closed) => return closed,
            Err(CallError::TimedOut) => format!(
                "its last flush at stop did not finish within {:?} (a journal fsync that \
                 hangs); it was left running and the journal stays owned until it returns. \
                 What it had not made durable is treated like a crash at the next open: \
                 build a new manager over the journal once the storage answers again",
                self.stop_timeout
            ),
            Err(e) => {
                // Nothing runs any more: give the storage up.
                self.journal.release();
                format!(
                    "its last flush at stop {e}; what it had not made durable is treated \
                     like a crash at the next open: build a new manager over the journal"
                )
            }
        };
        tracing::error!(reason = %why, "the undo journal's stop flush failed");
        self.sink.send(Failure::new(
            Source::TransactionRollbackManager,
            FailureKind::JournalPoisoned,
            format!("the undo journal: {why}"),
            self.clock.now_ns(),
        ));
        Err(Error::Poisoned {
            component: "undo journal",
            reason: why,
        })
    }

    /// Refuses a call after [`stop`](Self::stop).
    fn check_open(&self) -> Result<()> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(Error::Stopped {
                component: "rollback manager",
                reason: "stop() was called; build a new manager over the journal".into(),
            });
        }
        Ok(())
    }
}
