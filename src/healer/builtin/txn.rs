//! Remedies for transactions: break a deadlock by rolling back its victim,
//! finish a blocked rollback (repairing the page that blocks it first, or
//! rebuilding it from a replica's older copy and the undo held for it when
//! no copy of its last write exists), and finish the rollbacks a crash left
//! blocked.
//!
//! Each goes through [`TransactionRollbackManager::rollback`], which applies
//! before-images only to pages that still hold what the transaction wrote
//! and verifies each by a re-read; each verifies by checking that the
//! transaction is no longer active.

use crate::error::{Error, Result};
use crate::healer::diagnose::Problem;
use crate::healer::remedy::{Applied, Case, Remedy, RemedyContext, Verified};
use std::sync::Weak;

use crate::repair::{DataRepairer, PageRebuilder};
use crate::rollback::TransactionRollbackManager;
use crate::types::{FailureKind, PageId, ReplicaId, Target, TxnId};

fn txn_of(case: &Case<'_>) -> Result<TxnId> {
    match case.target() {
        Target::Transaction(t) => Ok(*t),
        other => Err(Error::InvalidArgument {
            what: "target",
            reason: format!("{other} is not a transaction; this remedy treats transactions"),
        }),
    }
}

fn gone(rb: &TransactionRollbackManager, txn: TxnId) -> Verified {
    if rb.active_transactions().contains(&txn) {
        Verified::not_healed(format!("transaction {txn} is still active"))
    } else {
        Verified::healed(format!("transaction {txn} is no longer active"))
    }
}

/// The [`PageRebuilder`] of a rollback manager that writes through the
/// repairer's detector: a page no replica holds a copy of its last write of
/// (a transaction's write that was never shipped) is rebuilt from a
/// replica's older copy and the durable undo held for it
/// ([`rebuild_page`](TransactionRollbackManager::rebuild_page)). Holds the
/// manager weakly: once it is gone, nothing is rebuilt.
#[derive(Debug)]
pub(crate) struct UndoRebuilder(pub(crate) Weak<TransactionRollbackManager>);

impl PageRebuilder for UndoRebuilder {
    fn holds_changes(&self, page: PageId) -> bool {
        self.0.upgrade().is_some_and(|rb| rb.holds_undo_for(page))
    }

    fn rebuild(&self, repairer: &DataRepairer, page: PageId) -> Result<Option<ReplicaId>> {
        let Some(rb) = self.0.upgrade() else {
            return Ok(None);
        };
        // Replicas are read only for a page there is undo for.
        if !rb.holds_undo_for(page) {
            return Ok(None);
        }
        let (ids, copies): (Vec<ReplicaId>, Vec<Vec<u8>>) =
            repairer.replica_copies(page).into_iter().unzip();
        Ok(rb.rebuild_from(page, &copies)?.map(|i| ids[i].clone()))
    }
}

/// Repairs `pages` first when a repairer is present (a page whose last
/// write no replica holds is rebuilt by the repair, through
/// [`UndoRebuilder`], when the healer set it). Returns what it did.
fn repair_first(ctx: &RemedyContext, pages: &[PageId]) -> String {
    let Ok(repairer) = ctx.need_repairer() else {
        return String::new();
    };
    let done: Vec<String> = pages
        .iter()
        .map(|&p| {
            match repairer
                .repair_page(p)
                .and_then(|r| super::page::repaired(p, &r))
            {
                Ok(applied) => applied.evidence,
                Err(e) => e.to_string(),
            }
        })
        .collect();
    if done.is_empty() {
        String::new()
    } else {
        format!("repaired first: {}; ", done.join(", "))
    }
}

/// Breaks a deadlock: rolls back the victim the rollback manager chose,
/// which also removes its waits.
#[derive(Debug, Default, Clone, Copy)]
pub struct BreakDeadlock;

impl Remedy for BreakDeadlock {
    fn name(&self) -> &str {
        "break-deadlock"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::DEADLOCK
    }

    fn execute(&self, ctx: &RemedyContext, case: &Case<'_>) -> Result<Applied> {
        let victim = match &case.failure.kind {
            FailureKind::Deadlock { victim } => *victim,
            _ => txn_of(case)?,
        };
        let out = ctx.need_rollback()?.rollback(victim)?;
        Ok(Applied::new(format!(
            "victim {victim} rolled back ({} undo entries, {} pages written)",
            out.undo_entries, out.pages_written
        )))
    }

    fn verify(&self, ctx: &RemedyContext, case: &Case<'_>, _: &Applied) -> Result<Verified> {
        Ok(gone(ctx.need_rollback()?, txn_of(case)?))
    }
}

/// Rolls back one transaction; for a rollback blocked by a page that fails
/// verification, repairs that page first (when a repairer is present).
#[derive(Debug, Default, Clone, Copy)]
pub struct RollbackTransaction;

impl Remedy for RollbackTransaction {
    fn name(&self) -> &str {
        "rollback-transaction"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::ROLLBACK_BLOCKED
    }

    fn execute(&self, ctx: &RemedyContext, case: &Case<'_>) -> Result<Applied> {
        let txn = txn_of(case)?;
        let rb = ctx.need_rollback()?;
        let mut pages: Vec<PageId> = rb
            .blocked_rollbacks()
            .into_iter()
            .filter(|b| b.txn == txn)
            .flat_map(|b| b.pages)
            .collect();
        if let FailureKind::RollbackBlocked { page, .. } = &case.failure.kind {
            pages.push(*page);
        }
        pages.sort_unstable();
        pages.dedup();
        let first = repair_first(ctx, &pages);
        let out = rb.rollback(txn)?;
        Ok(Applied::new(format!(
            "{first}transaction {txn} rolled back ({} undo entries, {} pages written)",
            out.undo_entries, out.pages_written
        )))
    }

    fn verify(&self, ctx: &RemedyContext, case: &Case<'_>, _: &Applied) -> Result<Verified> {
        Ok(gone(ctx.need_rollback()?, txn_of(case)?))
    }
}

/// Finishes what recovery could not: the transactions in flight at a crash
/// whose rollback is blocked by pages that fail verification. Repairs those
/// pages (when a repairer is present), then rolls each back. It never rolls
/// back a transaction that is simply active.
#[derive(Debug, Default, Clone, Copy)]
pub struct RollbackCrashLosers;

impl Remedy for RollbackCrashLosers {
    fn name(&self) -> &str {
        "rollback-crash-losers"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::CRASH_LOSERS
            || *problem == Problem::UNCLEAN_SHUTDOWN
            || *problem == Problem::ROLLBACK_BLOCKED
    }

    fn execute(&self, ctx: &RemedyContext, _case: &Case<'_>) -> Result<Applied> {
        let rb = ctx.need_rollback()?;
        let blocked = rb.blocked_rollbacks();
        let rolled = rb.recovery_report().rolled_back.len();
        let mut done = Vec::new();
        for b in &blocked {
            let first = repair_first(ctx, &b.pages);
            rb.rollback(b.txn)?;
            done.push(format!("{first}transaction {} rolled back", b.txn));
        }
        Ok(Applied::new(format!(
            "recovery had rolled back {rolled} transaction(s); {} blocked one(s) finished{}{}",
            blocked.len(),
            if done.is_empty() { "" } else { ": " },
            done.join("; ")
        )))
    }

    fn verify(&self, ctx: &RemedyContext, _case: &Case<'_>, _: &Applied) -> Result<Verified> {
        let blocked = ctx.need_rollback()?.blocked_rollbacks();
        Ok(if blocked.is_empty() {
            Verified::healed("no rollback is blocked")
        } else {
            Verified::not_healed(format!(
                "{} rollback(s) still blocked, first: transaction {} ({})",
                blocked.len(),
                blocked[0].txn,
                blocked[0].reason
            ))
        })
    }
}
