//! The remedy for a stalled undo journal: make room when the disk is full,
//! then resume the journal.
//!
//! [`ResumeJournal`] treats [`Problem::JOURNAL_STALLED`] (a retryable I/O
//! error) and [`Problem::JOURNAL_FULL`] (no space). For a full disk it
//! first trims snapshot retention to the newest snapshot (when the context
//! has a snapshot manager) and asks the host to free space (when the host
//! supports [`HostAction::FreeDiskSpace`]); both are best effort and
//! recorded in the evidence. Then it calls
//! [`TransactionRollbackManager::resume`](crate::TransactionRollbackManager::resume),
//! and verifies by appending a record and syncing it: the journal accepts
//! and syncs again. A resume that fails because the disk is still full
//! fails the attempt; the rollback manager reports the stall again after
//! its backoff, and the next incident tries again.

use crate::error::{Error, Result};
use crate::healer::diagnose::Problem;
use crate::healer::remedy::{Applied, Case, Remedy, RemedyContext, Verified};
use crate::host::HostAction;
use crate::snapshot::Retention;

/// Resumes a stalled undo journal, making room first when the disk is
/// full. Planned only with a rollback manager.
#[derive(Debug, Clone, Copy)]
pub struct ResumeJournal {
    bytes_wanted: u64,
}

impl ResumeJournal {
    /// Asks the host for at least `bytes_wanted` bytes when the disk is
    /// full.
    #[must_use]
    pub fn new(bytes_wanted: u64) -> Self {
        ResumeJournal { bytes_wanted }
    }
}

impl Default for ResumeJournal {
    /// Asks for 1 GiB when the disk is full.
    fn default() -> Self {
        ResumeJournal::new(1 << 30)
    }
}

/// Best-effort room for a full disk (trims snapshot retention to the
/// newest snapshot, asks the host for `bytes_wanted` bytes); what was done,
/// for the evidence. Shared by the remedies that resume a stalled writer.
pub(super) fn make_room(ctx: &RemedyContext, bytes_wanted: u64) -> Vec<String> {
    let mut done = Vec::new();
    if let Some(snaps) = ctx.snapshots_ref() {
        match snaps.apply_retention_with(Retention::KeepLast(1)) {
            Ok(deleted) if deleted.is_empty() => {
                done.push("no snapshot to trim".to_string());
            }
            Ok(deleted) => done.push(format!("trimmed snapshots {deleted:?}")),
            Err(e) => done.push(format!("trimming snapshots failed: {e}")),
        }
    }
    if ctx.supports(HostAction::FreeDiskSpace) {
        if let Some(host) = ctx.host_ref() {
            match host.free_disk_space(bytes_wanted) {
                Ok(freed) => done.push(format!("the host freed {freed} bytes")),
                Err(e) => done.push(format!("the host could not free space: {e}")),
            }
        }
    }
    done
}

impl Remedy for ResumeJournal {
    fn name(&self) -> &str {
        "resume-journal"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::JOURNAL_STALLED || *problem == Problem::JOURNAL_FULL
    }

    fn execute(&self, ctx: &RemedyContext, case: &Case<'_>) -> Result<Applied> {
        let rb = ctx.need_rollback()?;
        let room = if *case.problem() == Problem::JOURNAL_FULL {
            make_room(ctx, self.bytes_wanted)
        } else {
            Vec::new()
        };
        let prefix = if room.is_empty() {
            String::new()
        } else {
            format!("{}; ", room.join("; "))
        };
        match rb.resume() {
            Ok(r) if r.was_stalled => Ok(Applied::new(format!(
                "{prefix}journal resumed: {} records ({} bytes) rewritten and synced",
                r.records_rewritten, r.bytes_rewritten
            ))),
            // Nothing to do, unless room was made for it.
            Ok(_) => Ok(Applied {
                nothing_to_do: room.is_empty(),
                ..Applied::new(format!(
                    "{prefix}the journal was not stalled (resumed already)"
                ))
            }),
            // Still stalled: the error keeps what was done to make room.
            Err(Error::JournalStalled { reason, no_space }) => Err(Error::JournalStalled {
                reason: format!("{prefix}{reason}"),
                no_space,
            }),
            Err(e) => Err(e),
        }
    }

    fn verify(&self, ctx: &RemedyContext, _: &Case<'_>, _: &Applied) -> Result<Verified> {
        let rb = ctx.need_rollback()?;
        if let Some(s) = rb.journal_stall() {
            return Ok(Verified::not_healed(format!(
                "the journal is still stalled: {}",
                s.reason
            )));
        }
        Ok(match rb.probe_journal() {
            Ok(()) => Verified::healed("the journal appended and synced a record"),
            Err(e) => Verified::not_healed(format!("the journal refused a record: {e}")),
        })
    }

    fn available(&self, ctx: &RemedyContext) -> bool {
        ctx.need_rollback().is_ok()
    }
}
