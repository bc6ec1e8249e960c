//! Rolling transactions back: their undo taken from the journal's undo logs,
//! applied newest first to the pages they wrote, and made final with a
//! durable abort record.
//!
//! # Contract
//! - Undo is applied only where a page holds what the transaction wrote, and
//!   each write is verified by a re-read (see the module docs of
//!   [`rollback`](super)).
//! - A transaction whose rollback failed or was blocked keeps its undo and
//!   stays pending; rolling it back again is harmless.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::apply::{apply_undo, Applied, UndoRef};
use super::journal::Record;
use super::txns::{Entry, Status};
use super::{BlockedTxn, RollbackOutcome, TransactionRollbackManager};
use crate::error::{Error, Result};
use crate::types::{Failure, FailureKind, PageId, Source, TxnId};

impl TransactionRollbackManager {
    /// Rolls `txn` back: applies its before-images newest first (one read
    /// and write per page, each verified by a re-read, only to pages that
    /// hold what it wrote), syncs the pages, and makes an abort record
    /// durable. Also retries a rollback that failed or was blocked before.
    ///
    /// # Errors
    /// [`Error::UnknownTransaction`] / [`Error::TransactionNotActive`];
    /// [`Error::RollbackBlocked`] naming a page that fails verification and
    /// was not repaired — the transaction stays pending with its undo (its
    /// other pages were restored), see
    /// [pages that fail verification](super#pages-that-fail-verification);
    /// the store's errors or [`Error::RollbackVerifyFailed`] — the
    /// transaction then stays in flight and `rollback` may be called again
    /// (applying the images again is harmless), or recovery finishes it at
    /// the next open; [`Error::Poisoned`].
    pub fn rollback(&self, txn: TxnId) -> Result<RollbackOutcome> {
        self.rollback_many(Some(txn))
    }

    /// Rolls back every active transaction (and every one whose rollback
    /// failed or was blocked before) in one pass: before-images of all of
    /// them in reverse LSN order, one write per page. Transactions in the
    /// middle of a commit are left alone.
    ///
    /// # Errors
    /// As [`rollback`](Self::rollback). On [`Error::RollbackBlocked`] (which
    /// names the lowest blocked transaction) every transaction of the batch
    /// that is not blocked was rolled back, and
    /// [`blocked_rollbacks`](Self::blocked_rollbacks) lists the blocked ones;
    /// on any other error every transaction of the batch stays in flight.
    pub fn rollback_all(&self) -> Result<RollbackOutcome> {
        self.rollback_many(None)
    }

    /// The transactions whose last rollback attempt was blocked by pages that
    /// fail verification (including those recovery found so at open),
    /// sorted by id.
    #[must_use]
    pub fn blocked_rollbacks(&self) -> Vec<BlockedTxn> {
        let st = self.state.lock();
        let mut v: Vec<BlockedTxn> = st
            .active
            .values()
            .filter_map(|t| t.blocked.clone())
            .collect();
        v.sort_unstable_by_key(|b| b.txn);
        v
    }

    /// Puts the images a failed or blocked rollback took back into the
    /// transaction's log (closed: it takes no more undo).
    fn restore_log(&self, txn: TxnId, entries: Vec<Entry>, arena: Vec<u8>) {
        if let Some(mut log) = self.journal.log(txn) {
            log.entries = entries;
            log.arena = arena;
        }
    }

    fn rollback_many(&self, only: Option<TxnId>) -> Result<RollbackOutcome> {
        self.check_open()?;
        let start = self.clock.now_ns();
        let mut taken: Vec<(TxnId, Vec<Entry>, Vec<u8>)> = Vec::new();
        {
            let mut st = self.state.lock();
            let ids: Vec<TxnId> = match only {
                Some(txn) => {
                    let t = st.get(txn)?;
                    if !matches!(t.status, Status::Active | Status::RollbackFailed) {
                        return Err(Error::TransactionNotActive {
                            txn,
                            state: t.status.as_str(),
                        });
                    }
                    vec![txn]
                }
                None => {
                    let mut v: Vec<TxnId> = st
                        .active
                        .iter()
                        .filter(|(_, t)| {
                            matches!(t.status, Status::Active | Status::RollbackFailed)
                        })
                        .map(|(id, _)| *id)
                        .collect();
                    v.sort_unstable();
                    v
                }
            };
            for id in ids {
                let t = st.active.get_mut(&id).expect("listed above");
                t.status = Status::RollingBack;
                // Closed in the journal's critical section: every append
                // of the transaction is in what is taken. What appends
                // counted goes into the totals before the images leave.
                let (entries, arena) = match self.journal.log(id) {
                    Some(mut log) => {
                        log.open = false;
                        st.fold(&mut log);
                        (
                            std::mem::take(&mut log.entries),
                            std::mem::take(&mut log.arena),
                        )
                    }
                    None => (Vec::new(), Vec::new()),
                };
                taken.push((id, entries, arena));
            }
        }
        let result = self.undo_and_abort(&taken);
        let mut st = self.state.lock();
        let applied = match result {
            Ok(applied) => applied,
            Err(e) => {
                tracing::error!(error = %e, "rollback failed; the transactions stay in flight");
                for (id, entries, arena) in taken {
                    if let Some(t) = st.active.get_mut(&id) {
                        t.status = Status::RollbackFailed;
                        self.restore_log(id, entries, arena);
                    }
                }
                return Err(e);
            }
        };
        let mut done = Vec::new();
        let mut first_blocked: Option<(TxnId, PageId, String)> = None;
        for (id, entries, arena) in taken {
            if let Some(failed) = applied.blocked.get(&id) {
                if let Some(t) = st.active.get_mut(&id) {
                    t.status = Status::RollbackFailed;
                    self.restore_log(id, entries, arena);
                    t.blocked = Some(BlockedTxn {
                        txn: id,
                        pages: failed.iter().map(|f| f.0).collect(),
                        reason: failed[0].1.clone(),
                    });
                }
                if first_blocked.is_none() {
                    first_blocked = Some((id, failed[0].0, failed[0].1.clone()));
                }
            } else {
                st.undo_bytes_held -= arena.len() as u64;
                let log = self.journal.take_log(id);
                st.finish(id, log, "rolled back");
                st.spare.put(entries, arena);
                done.push(id);
            }
        }
        drop(st);
        let replaced: u64 = applied.replaced.iter().map(|r| r.2).sum();
        self.counters
            .replaced
            .fetch_add(replaced, Ordering::Relaxed);
        self.counters
            .rolled_back
            .fetch_add(done.len() as u64, Ordering::Relaxed);
        if let Some((txn, page, reason)) = first_blocked {
            self.counters.blocked.fetch_add(1, Ordering::Relaxed);
            self.sink.send(Failure::new(
                Source::TransactionRollbackManager,
                FailureKind::RollbackBlocked { txn, page },
                format!(
                    "the rollback of transaction {txn} is blocked: page {page} fails verification ({reason}); repair the page, then roll back again"
                ),
                self.clock.now_ns(),
            ));
            return Err(Error::RollbackBlocked { txn, page, reason });
        }
        let ns = self.clock.now_ns().saturating_sub(start);
        self.counters.rollbacks.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::telemetry::ROLLBACKS, "reason" => "request")
            .increment(done.len() as u64);
        self.counters
            .rollback_ns_total
            .fetch_add(ns, Ordering::Relaxed);
        self.counters
            .rollback_ns_max
            .fetch_max(ns, Ordering::Relaxed);
        let mut pages_replaced: Vec<PageId> = applied.replaced.iter().map(|r| r.1).collect();
        pages_replaced.sort_unstable();
        pages_replaced.dedup();
        Ok(RollbackOutcome {
            txns: done,
            undo_entries: applied.entries,
            pages_written: applied.pages,
            undo_entries_replaced: replaced,
            pages_replaced,
            duration: Duration::from_nanos(ns),
        })
    }

    /// Applies the undo of `taken`, syncs the pages, and makes abort records
    /// of the transactions that are not blocked durable.
    fn undo_and_abort(&self, taken: &[(TxnId, Vec<Entry>, Vec<u8>)]) -> Result<Applied> {
        let refs: Vec<UndoRef<'_>> = taken
            .iter()
            .flat_map(|(txn, entries, arena)| {
                entries.iter().map(move |e| UndoRef {
                    txn: *txn,
                    lsn: e.lsn,
                    page: e.page,
                    offset: e.offset as usize,
                    before: e.before(arena),
                    after: e.after(arena),
                })
            })
            .collect();
        let any_undo = !refs.is_empty();
        let applied = apply_undo(
            self.pages.as_ref(),
            &self.page_locks,
            self.repair_hook.as_ref(),
            refs,
        )?;
        if any_undo {
            // Also when no page changed: a page may hold its before-image
            // only in a cache, and the abort record must not outlive it.
            self.pages.sync()?;
        }
        let mut last = None;
        for (id, _, _) in taken {
            if !applied.blocked.contains_key(id) {
                last = Some(self.journal.append(&Record::Abort { txn: *id })?);
            }
        }
        if let Some(lsn) = last {
            self.journal.ensure_durable(lsn)?;
        }
        Ok(applied)
    }
}
