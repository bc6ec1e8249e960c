//! Opening the manager: scanning the journal, rolling back what was in
//! flight at the last crash, and the [`RecoveryReport`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::types::{Failure, FailureKind, FailureSink, PageId, Source, DEFAULT_FAILURE_CAPACITY};
use crate::worker::TimedCaller;

use super::apply::PageLocks;
use super::config::{JournalLocation, RollbackConfig};
use super::journal::{
    self, DirStorage, Journal, JournalConfig, JournalDamage, JournalStorage, PoisonHook, Record,
};
use super::txns::{BlockedTxn, Counters, State, Status, Txn, UndoLog};
use super::writer::PageWriter;
use super::{losers, stall, SharedWatch, TransactionRollbackManager, TxnId};

/// A transaction rolled back at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredTxn {
    /// The transaction.
    pub txn: TxnId,
    /// How many undo entries it had.
    pub undo_entries: u64,
    /// How many before-image bytes.
    pub undo_bytes: u64,
    /// The pages its undo covered, sorted: what a caller re-verifies after
    /// recovery.
    pub pages: Vec<PageId>,
}

/// What the manager did at open.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments_read: u64,
    /// Valid records read.
    pub records_read: u64,
    /// Commit records seen.
    pub committed_seen: u64,
    /// Abort records seen.
    pub aborted_seen: u64,
    /// Transactions that were in flight at the crash and were rolled back,
    /// in order of their first record. Each got an abort record.
    pub rolled_back: Vec<RecoveredTxn>,
    /// Transactions that were in flight at the crash whose rollback is
    /// blocked by pages that fail verification (for example a page torn by
    /// the crash under a checksum). They got no abort record and stay
    /// pending, with their undo, as active transactions of the manager:
    /// repair the pages, then call
    /// [`rollback`](TransactionRollbackManager::rollback) (or reopen). Their
    /// other pages were restored.
    pub blocked: Vec<BlockedTxn>,
    /// Transactions that were in flight at the crash and were left in
    /// place by a report-only open
    /// ([`RollbackConfig::defer_recovery`]), in order of their first
    /// record, each with the pages its undo covers: no page was written and
    /// no abort record appended. They stay pending, with their undo, as
    /// active transactions of the manager: call
    /// [`rollback`](TransactionRollbackManager::rollback) for each, or open
    /// the journal again without `defer_recovery`.
    pub deferred: Vec<RecoveredTxn>,
    /// Undo entries applied.
    pub undo_entries_applied: u64,
    /// Undo entries not applied because their page no longer held what the
    /// transaction wrote: it was replaced since (for example restored from a
    /// snapshot while the manager was closed).
    pub undo_entries_replaced: u64,
    /// The pages those entries belong to, sorted.
    pub pages_replaced: Vec<PageId>,
    /// Pages written (each once).
    pub pages_written: u64,
    /// Damage found in the journal and what was done (see [`RecoveryMode`](super::RecoveryMode)),
    /// in the order found.
    pub damage: Vec<JournalDamage>,
    /// How long recovery took, on the configured clock.
    pub duration: Duration,
}

impl RollbackConfig {
    /// Opens (or creates) the journal, recovers — rolls back every
    /// transaction that was in flight at the last crash, through `pages` —
    /// and returns the manager, with the journal's mark thread running (it
    /// is part of durability; see
    /// [why `build` starts it](super#threads-why-build-starts-the-mark-thread)). What recovery did is in
    /// [`TransactionRollbackManager::recovery_report`]: transactions whose
    /// rollback is blocked by a page that fails verification are listed
    /// there and stay pending (see the
    /// [module docs](super#pages-that-fail-verification)).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for zero sizes or timeouts; [`Error::Io`] when
    /// the journal directory cannot be created or written;
    /// [`Error::CorruptFile`] / [`Error::UnsupportedVersion`] for journal
    /// damage the [recovery mode](super::journal::RecoveryMode) refuses, a missing segment,
    /// undo of an unfinished transaction whose begin record is missing, or
    /// undo of an in-flight transaction whose bytes lie past the usable
    /// length of `pages`' pages (a damaged record, or a journal of a store
    /// with larger pages: the error names the segment and the record's
    /// offset, in every recovery mode); [`Error::PageOutOfRange`] when the
    /// journal holds undo of an in-flight transaction on a page past the end
    /// of `pages` (a store that shrank; undo of finished transactions is not
    /// checked); the page store's errors during rollback other than a page
    /// that fails verification.
    pub fn build(self, pages: Arc<dyn PageWriter>) -> Result<TransactionRollbackManager> {
        let page_size = pages.page_size();
        self.validate(page_size)?;
        crate::telemetry::describe();
        open(self, pages)
    }
}

pub(super) fn open(
    cfg: RollbackConfig,
    pages: Arc<dyn PageWriter>,
) -> Result<TransactionRollbackManager> {
    let page_size = pages.page_size();
    let storage: Arc<dyn JournalStorage> = match &cfg.location {
        JournalLocation::Dir(d) => Arc::new(DirStorage::open(d)?),
        JournalLocation::Storage(s) => s.clone(),
    };
    storage.check_writable()?;
    let start = cfg.clock.now_ns();
    let scan = journal::recovery::scan(storage.as_ref(), cfg.recovery_mode)?;

    // Which transactions have no commit or abort record? One pass, one
    // segment at a time; the undo is read again below, by page ranges.
    let outcomes = losers::find_in_flight(
        storage.as_ref(),
        &scan.segments,
        page_size,
        pages.page_count(),
    )?;
    let page_locks = PageLocks::new();
    // Report-only: nothing is applied, every transaction in flight stays
    // pending with its undo (read back below).
    let undone = if cfg.defer_recovery {
        losers::Undone::default()
    } else {
        losers::undo_in_flight(
            storage.as_ref(),
            &outcomes,
            &losers::Target {
                pages: pages.as_ref(),
                locks: &page_locks,
                hook: cfg.repair_hook.as_ref(),
            },
            cfg.recovery_batch_bytes,
        )?
    };
    let applied = undone.applied;
    if !cfg.defer_recovery && outcomes.in_flight.values().any(|t| t.undo_entries > 0) {
        // Also when no page changed: a page may hold its before-image only
        // in a cache, and the abort record must not outlive it.
        pages.sync()?;
    }
    // Transactions whose rollback is blocked stay pending with their undo,
    // read back before the journal is appended to.
    let mut pending: HashMap<TxnId, UndoLog> = HashMap::new();
    for txn in applied.blocked.keys() {
        if let Some(t) = outcomes.in_flight.get(txn) {
            pending.insert(*txn, losers::pending_txn(storage.as_ref(), *txn, t)?);
        }
    }
    if cfg.defer_recovery {
        for txn in &outcomes.order {
            let t = &outcomes.in_flight[txn];
            pending.insert(*txn, losers::pending_txn(storage.as_ref(), *txn, t)?);
        }
    }
    let sink = cfg
        .failure_sink
        .clone()
        .unwrap_or_else(|| FailureSink::new(DEFAULT_FAILURE_CAPACITY));
    let on_poison: PoisonHook = {
        let (sink, clock) = (sink.clone(), cfg.clock.clone());
        Arc::new(move |reason: &str| {
            sink.send(Failure::new(
                Source::TransactionRollbackManager,
                FailureKind::JournalPoisoned,
                format!("the undo journal refuses further work: {reason}; drop the rollback manager and build it again (its recovery runs then) to continue"),
                clock.now_ns(),
            ));
        })
    };
    let stall_watch: SharedWatch = Arc::default();
    let on_stall = stall::stall_hook(sink.clone(), cfg.clock.clone(), stall_watch.clone());
    let journal = Journal::open(
        storage,
        JournalConfig {
            segment_size: cfg.segment_size_bytes,
            buffer_bytes: cfg.buffer_bytes,
            sync_wait_timeout: cfg.sync_wait_timeout,
            idle_mark_delay: cfg.idle_mark_delay,
            on_poison: Some(on_poison),
            on_stall: Some(on_stall),
        },
        &scan,
    )?;
    let mut rolled_back = Vec::new();
    let mut blocked = Vec::new();
    let mut deferred = Vec::new();
    let mut state = State::default();
    for txn in &outcomes.order {
        let t = &outcomes.in_flight[txn];
        if cfg.defer_recovery {
            let log = pending.remove(txn).unwrap_or_default();
            let mut touched: Vec<PageId> = log.entries.iter().map(|e| e.page).collect();
            touched.sort_unstable();
            touched.dedup();
            for &p in &touched {
                state.deferred_pages.entry(p).or_default().push(*txn);
            }
            let mut pending = Txn::new(t.begin_lsn.unwrap_or(t.first_lsn));
            pending.status = Status::RollbackFailed;
            state.undo_bytes_held += log.arena.len() as u64;
            journal.open_log(*txn, log);
            state.active.insert(*txn, pending);
            deferred.push(RecoveredTxn {
                txn: *txn,
                undo_entries: t.undo_entries,
                undo_bytes: t.undo_bytes,
                pages: touched,
            });
        } else if let Some(failed) = applied.blocked.get(txn) {
            let log = pending.remove(txn).unwrap_or_default();
            let mut pending = Txn::new(t.begin_lsn.unwrap_or(t.first_lsn));
            let b = BlockedTxn {
                txn: *txn,
                pages: failed.iter().map(|f| f.0).collect(),
                reason: failed[0].1.clone(),
            };
            pending.status = Status::RollbackFailed;
            pending.blocked = Some(b.clone());
            state.undo_bytes_held += log.arena.len() as u64;
            journal.open_log(*txn, log);
            state.active.insert(*txn, pending);
            blocked.push(b);
        } else {
            journal.append(&Record::Abort { txn: *txn })?;
            rolled_back.push(RecoveredTxn {
                pages: undone.touched.get(txn).cloned().unwrap_or_default(),
                txn: *txn,
                undo_entries: t.undo_entries,
                undo_bytes: t.undo_bytes,
            });
        }
    }
    journal.flush()?;
    let mut pages_replaced: Vec<PageId> = applied.replaced.iter().map(|r| r.1).collect();
    pages_replaced.sort_unstable();
    pages_replaced.dedup();
    if !rolled_back.is_empty() {
        metrics::counter!(crate::telemetry::ROLLBACKS, "reason" => "recovery")
            .increment(rolled_back.len() as u64);
    }
    let report = RecoveryReport {
        segments_read: scan.segments_read,
        records_read: scan.records_read,
        committed_seen: outcomes.committed_seen,
        aborted_seen: outcomes.aborted_seen,
        rolled_back,
        blocked,
        deferred,
        undo_entries_applied: applied.entries,
        undo_entries_replaced: applied.replaced.iter().map(|r| r.2).sum(),
        pages_replaced,
        pages_written: applied.pages,
        damage: scan.damage.clone(),
        duration: Duration::from_nanos(cfg.clock.now_ns().saturating_sub(start)),
    };
    drop(scan);
    report_recovery(&cfg, &sink, &report);
    let has_deferred = !state.deferred_pages.is_empty();
    Ok(TransactionRollbackManager {
        usable_len: pages.usable_len(),
        pages,
        journal: Arc::new(journal),
        closer: TimedCaller::new("selfheal-undo-close"),
        stop_timeout: cfg.stop_timeout,
        state: Mutex::new(state),
        page_locks,
        victim_policy: cfg.victim_policy,
        max_active: cfg.max_active_transactions,
        max_undo: cfg.max_undo_bytes_per_txn,
        clock: cfg.clock,
        sink,
        repair_hook: cfg.repair_hook,
        stopped: AtomicBool::new(false),
        deferred: AtomicBool::new(has_deferred),
        counters: Counters {
            recovered: AtomicU64::new(report.rolled_back.len() as u64),
            replaced: AtomicU64::new(report.undo_entries_replaced),
            ..Counters::default()
        },
        report,
        stall_watch,
    })
}

/// Deferred transactions, and pages of each, a failure's evidence names.
const EVIDENCE_TXNS: usize = 16;
const EVIDENCE_PAGES: usize = 32;

fn report_recovery(cfg: &RollbackConfig, sink: &FailureSink, report: &RecoveryReport) {
    if !report.pages_replaced.is_empty() {
        tracing::warn!(
            entries = report.undo_entries_replaced,
            pages = ?report.pages_replaced,
            "undo of transactions in flight at the last crash was not applied to pages replaced since"
        );
    }
    for b in &report.blocked {
        tracing::error!(txn = %b.txn, pages = ?b.pages, reason = %b.reason, "rollback of a transaction in flight at the last crash is blocked; repair the pages, then roll it back");
    }
    if !report.deferred.is_empty() {
        let mut evidence = format!(
            "{} transactions were in flight at the last crash and were left in place (report-only recovery: no page written, no abort record); rolling them back would restore their before-images:",
            report.deferred.len()
        );
        // Bounded: the report holds them all.
        for t in report.deferred.iter().take(EVIDENCE_TXNS) {
            let shown = &t.pages[..t.pages.len().min(EVIDENCE_PAGES)];
            evidence.push_str(&format!(
                " transaction {} ({} undo entries, {} bytes) on pages {shown:?}",
                t.txn, t.undo_entries, t.undo_bytes
            ));
            if t.pages.len() > shown.len() {
                evidence.push_str(&format!(" and {} more", t.pages.len() - shown.len()));
            }
            evidence.push(';');
        }
        if report.deferred.len() > EVIDENCE_TXNS {
            evidence.push_str(&format!(
                " and {} more transactions;",
                report.deferred.len() - EVIDENCE_TXNS
            ));
        }
        evidence.push_str(
            " roll each back (rollback), or open the journal again without report-only recovery",
        );
        tracing::warn!(deferred = report.deferred.len(), %evidence, "transactions in flight at the last crash were left in place");
        sink.send(Failure::new(
            Source::TransactionRollbackManager,
            FailureKind::InFlightAtCrash { count: 0 },
            evidence,
            cfg.clock.now_ns(),
        ));
    }
    let n = report.rolled_back.len() + report.blocked.len();
    if n == 0 {
        return;
    }
    tracing::warn!(
        rolled_back = report.rolled_back.len(),
        blocked = report.blocked.len(),
        "transactions were in flight at the last crash"
    );
    {
        let mut evidence = format!(
            "{n} transactions were in flight at the last crash; {} were rolled back ({} undo entries, {} pages)",
            report.rolled_back.len(),
            report.undo_entries_applied,
            report.pages_written
        );
        if report.undo_entries_replaced > 0 {
            evidence.push_str(&format!(
                "; {} undo entries were not applied to pages replaced since ({:?})",
                report.undo_entries_replaced, report.pages_replaced
            ));
        }
        for b in &report.blocked {
            if let Some(&page) = b.pages.first() {
                sink.send(Failure::new(
                    Source::TransactionRollbackManager,
                    FailureKind::RollbackBlocked { txn: b.txn, page },
                    format!(
                        "transaction {} was in flight at the last crash; its rollback is blocked by pages {:?} that fail verification ({}); repair them, then roll it back",
                        b.txn, b.pages, b.reason
                    ),
                    cfg.clock.now_ns(),
                ));
            }
            evidence.push_str(&format!(
                "; the rollback of transaction {} is blocked by pages {:?} that fail verification ({})",
                b.txn, b.pages, b.reason
            ));
        }
        // `count` is how many were rolled back; the evidence names the
        // blocked ones (their pages are reported by the detector too).
        sink.send(Failure::new(
            Source::TransactionRollbackManager,
            FailureKind::InFlightAtCrash {
                count: report.rolled_back.len() as u64,
            },
            evidence,
            cfg.clock.now_ns(),
        ));
    }
}
