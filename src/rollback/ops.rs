//! A transaction's own calls on the [`TransactionRollbackManager`]: begin,
//! record undo, write through the manager, make the undo durable, commit.
//! The contract is the module's (see [`rollback`](super)): an undo record is
//! durable before the page change it undoes is written.

use std::sync::atomic::Ordering;

use super::journal::Record;
use super::txns::{Status, Txn};
use super::writer::read_for_change;
use super::{check_range, TransactionRollbackManager};
#[cfg(doc)]
use super::{PageWriter, RepairHook, RestoreGuard, RollbackConfig};
use crate::error::{Error, Result};
use crate::types::{Lsn, PageId, TxnId};

impl TransactionRollbackManager {
    /// Begins a transaction.
    ///
    /// # Errors
    /// [`Error::RollbackLimit`] when `max_active_transactions` are active;
    /// [`Error::RestoreInProgress`] while a [`RestoreGuard`] lives;
    /// [`Error::JournalStalled`] while the journal is stalled (retry after
    /// [`resume`](Self::resume)); [`Error::Poisoned`] after a journal write
    /// or fsync failed for good;
    /// [`Error::Io`] when a new block of ids cannot be reserved;
    /// [`Error::IdSpaceExhausted`].
    pub fn begin(&self) -> Result<TxnId> {
        self.check_open()?;
        let mut st = self.state.lock();
        if st.restoring {
            return Err(Error::RestoreInProgress);
        }
        if st.active.len() >= self.max_active {
            return Err(Error::RollbackLimit {
                what: "active transactions",
                field: "max_active_transactions",
                limit: self.max_active as u64,
            });
        }
        let txn = TxnId(self.journal.next_txn()?);
        let begin_lsn = self.journal.append(&Record::Begin { txn })?;
        st.first_id.get_or_insert(txn.0);
        st.end_id = st.end_id.max(txn.0 + 1);
        self.journal.open_log(txn, st.spare.log());
        st.active.insert(txn, Txn::new(begin_lsn));
        Ok(txn)
    }

    /// Records that `txn` is about to change `page[offset..offset +
    /// before.len()]` from `before` (its current contents) to `after` (what
    /// the page will hold there when it is written). Returns the LSN of the
    /// undo record: pass it to [`ensure_durable`](Self::ensure_durable)
    /// before the changed page is written to the store (see the
    /// write-ahead rule in `rollback/journal/mod.rs`).
    ///
    /// Rollback applies `before` only while the page holds what the
    /// transaction's recorded changes explain (see the
    /// [module docs](super#undo-is-applied-only-to-what-the-transaction-wrote)):
    /// if the transaction changes these bytes again before the page is
    /// written, record that change too (its `before` is this `after`).
    ///
    /// # Errors
    /// [`Error::UnknownTransaction`] / [`Error::TransactionNotActive`];
    /// [`Error::UndoOutOfPage`] for a range past the page's usable bytes
    /// ([`PageWriter::usable_len`]); [`Error::PageOutOfRange`];
    /// [`Error::InvalidArgument`] for an empty before-image or an after-image
    /// of another length, or a page a transaction whose rollback a
    /// report-only open deferred changed
    /// ([`RollbackConfig::defer_recovery`]); [`Error::RollbackLimit`] past
    /// `max_undo_bytes_per_txn`; [`Error::JournalStalled`] (nothing was
    /// recorded; retry after [`resume`](Self::resume)); [`Error::Poisoned`].
    pub fn record_undo(
        &self,
        txn: TxnId,
        page: PageId,
        offset: usize,
        before: &[u8],
        after: &[u8],
    ) -> Result<Lsn> {
        self.check_open()?;
        if before.is_empty() {
            return Err(Error::InvalidArgument {
                what: "before",
                reason: "the before-image is empty; record the bytes the change overwrites".into(),
            });
        }
        if after.len() != before.len() {
            return Err(Error::InvalidArgument {
                what: "after",
                reason: format!(
                    "the after-image has {} bytes, the before-image {}: both cover the same range",
                    after.len(),
                    before.len()
                ),
            });
        }
        check_range(
            page,
            offset,
            before.len(),
            self.usable_len,
            self.pages.page_count(),
        )?;
        if self.deferred.load(Ordering::Relaxed) {
            self.check_deferred(txn, page)?;
        }
        // The record and the entry in one critical section, the journal's
        // (see `UndoLog`).
        let Some((lsn, full)) =
            self.journal
                .append_undo(txn, page, offset as u32, before, after, self.max_undo)?
        else {
            return Err(self.state.lock().refusal(txn));
        };
        if full {
            // Outside every lock: other threads append while this one
            // writes the batch. The record is appended either way; a write
            // that fails halts the journal, and the `ensure_durable` that
            // must come before the page is written reports it.
            if let Err(e) = self.journal.write_if_full() {
                tracing::debug!(error = %e, "writing a full undo buffer; the record waits in it");
            }
        }
        Ok(lsn)
    }

    /// Refuses a change of `page` by `txn` while the page holds changes of
    /// a transaction whose rollback a report-only open deferred. (Such
    /// pages are only ever released, so the check need not hold the lock
    /// while the change is appended.)
    fn check_deferred(&self, txn: TxnId, page: PageId) -> Result<()> {
        let st = self.state.lock();
        if st.deferred_pages.is_empty() {
            self.deferred.store(false, Ordering::Relaxed);
        } else if let Some(&owner) = st
            .deferred_pages
            .get(&page)
            .and_then(|o| o.iter().find(|o| **o != txn))
        {
            return Err(Error::InvalidArgument {
                what: "page",
                reason: format!(
                    "page {page} holds changes of transaction {owner}, in flight at the last crash, whose rollback was deferred (report-only recovery); roll it back first (rollback({owner})), or reopen without report-only recovery"
                ),
            });
        }
        Ok(())
    }

    /// Changes `page[offset..offset + data.len()]` to `data` as part of
    /// `txn`, keeping the write-ahead rule: reads the page (verified, where
    /// the [`PageWriter`] verifies), records the before- and after-image,
    /// waits until they are durable, then — holding the page's lock, and
    /// only if `txn` is still active — re-reads the page (verified), patches
    /// the range and writes it through the [`PageWriter`]. Concurrent writes
    /// to different bytes of one page all survive, and a write that loses a
    /// race with [`rollback`](Self::rollback) or
    /// [`rollback_all`](Self::rollback_all) writes nothing. The page write is
    /// not synced (the host syncs its store before it commits).
    ///
    /// # Errors
    /// As [`record_undo`](Self::record_undo) and
    /// [`ensure_durable`](Self::ensure_durable) (the page is then not
    /// written and the change's undo entry is dropped from memory: a retry
    /// records its own), and the store's errors; the
    /// verification error (naming the page) or [`Error::PageFenced`] for a
    /// page that fails verification and was not repaired by the
    /// [`RepairHook`] — nothing is written to it then (a page the host calls
    /// unallocated is not such a page: see
    /// [pages the host freed](super#pages-the-host-freed));
    /// [`Error::TransactionNotActive`] also when `txn` was rolled back or
    /// started committing while the undo was being made durable (the page is
    /// then not written).
    pub fn write(&self, txn: TxnId, page: PageId, offset: usize, data: &[u8]) -> Result<Lsn> {
        self.check_open()?;
        let ps = self.pages.page_size();
        check_range(
            page,
            offset,
            data.len(),
            self.usable_len,
            self.pages.page_count(),
        )?;
        // Fail fast, before anything is recorded, for a transaction that
        // cannot take changes.
        self.state.lock().active_mut(txn)?;
        let mut buf = vec![0u8; ps];
        self.read_page(page, &mut buf)?;
        let range = offset..offset + data.len();
        let lsn = self.record_undo(txn, page, offset, &buf[range.clone()], data)?;
        if let Err(e) = self.journal.ensure_durable(lsn) {
            // The page is not written: the entry has nothing to undo (a
            // retry records its own), and a rebuild of the page must not
            // take it for a change the page went through.
            self.forget_entry(txn, lsn);
            return Err(e);
        }
        // Lock order: page lock, then state lock (never the reverse).
        let _guard = self.page_locks.lock(page);
        self.state.lock().active_mut(txn)?;
        if let Err(e) = read_for_change(
            self.pages.as_ref(),
            self.repair_hook.as_ref(),
            page,
            &mut buf,
        ) {
            // Nothing is written: the record needs no rollback here (and if
            // a crash comes first, recovery finds the page's bytes explained
            // by the before-image).
            self.forget_entry(txn, lsn);
            return Err(e);
        }
        buf[range].copy_from_slice(data);
        self.pages.write_page(page, &mut buf)?;
        Ok(lsn)
    }

    /// A verified read of `page` (with the repair hook) outside any latch;
    /// an unallocated page reads as zeros.
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        let _guard = self.page_locks.lock(page);
        read_for_change(self.pages.as_ref(), self.repair_hook.as_ref(), page, buf)
    }

    /// Drops the in-memory undo entry of `txn` with `lsn` (its page write did
    /// not happen).
    fn forget_entry(&self, txn: TxnId, lsn: Lsn) {
        if let Some(mut log) = self.journal.log(txn) {
            if let Some(i) = log.entries.iter().rposition(|e| e.lsn == lsn.0) {
                log.entries.remove(i);
            }
        }
    }

    /// Waits until every journal record up to `lsn` is durable. Concurrent
    /// callers share one fsync (group commit).
    ///
    /// # Errors
    /// [`Error::JournalStalled`] while the journal is stalled by a retryable
    /// write or fsync failure (call again after [`resume`](Self::resume));
    /// [`Error::Poisoned`] once one has failed for good (sticky);
    /// [`Error::InvalidArgument`] for an LSN not handed out yet; a retryable
    /// timed-out [`Error::Io`] after `sync_wait_timeout` waiting for another
    /// thread's fsync.
    pub fn ensure_durable(&self, lsn: Lsn) -> Result<()> {
        self.journal.ensure_durable(lsn)
    }

    /// Commits `txn`: writes its commit record and waits until it is durable
    /// (sharing the fsync with concurrent commits). From then on its undo is
    /// never applied.
    ///
    /// Once the commit record is appended the transaction can no longer be
    /// rolled back. If waiting for its fsync fails with the retryable
    /// timed-out [`Error::Io`], call `commit` again: it waits for the same
    /// commit record and then finishes the commit (until then the
    /// transaction counts as active and holds back checkpoints).
    ///
    /// # Errors
    /// [`Error::UnknownTransaction`] / [`Error::TransactionNotActive`] (also
    /// for a commit after a rollback or after a completed commit, and for a
    /// blocked rollback); the timed-out [`Error::Io`] of
    /// [`ensure_durable`](Self::ensure_durable); [`Error::JournalStalled`] —
    /// the commit is not acknowledged: call `commit` again after
    /// [`resume`](Self::resume) (its record, if appended, is kept and made
    /// durable by the resume); [`Error::Poisoned`] — then
    /// whether the commit survives a crash is unknown until the next open.
    pub fn commit(&self, txn: TxnId) -> Result<Lsn> {
        self.check_open()?;
        let (lsn, full) = {
            let mut st = self.state.lock();
            let (status, pending) = {
                let t = st.get(txn)?;
                (t.status, t.commit_lsn)
            };
            match (status, pending) {
                (Status::Committing, Some(lsn)) => (lsn, false),
                _ => {
                    let t = st.active_mut(txn)?;
                    // Closes the undo log with the commit record, and is
                    // noted before anything can fail: a commit whose write
                    // fails below is retried from here, never appended twice.
                    let (lsn, full) = self.journal.append_commit(txn)?;
                    t.status = Status::Committing;
                    t.commit_lsn = Some(lsn);
                    (lsn, full)
                }
            }
        };
        if full {
            self.journal.write_if_full()?;
        }
        self.journal.ensure_durable(lsn)?;
        let mut st = self.state.lock();
        // A concurrent retry of the same commit may have finished it already.
        if st
            .active
            .get(&txn)
            .is_some_and(|t| t.status == Status::Committing)
        {
            let log = self.journal.take_log(txn);
            st.finish(txn, log, "committed");
            drop(st);
            self.counters.committed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(lsn)
    }
}
