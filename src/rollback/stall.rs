//! A stalled undo journal, seen from the rollback manager: the failure it
//! reports, the resume a host (or the
//! [`AutoRecoveryManager`](crate::AutoRecoveryManager)) calls, and when a
//! journal still stalled is reported again.
//!
//! # Contract
//! - When the journal stalls (a retryable write or fsync failure: a full
//!   disk, `EIO`; see the journal's writer docs) the manager reports
//!   [`FailureKind::JournalStalled`] once on its bus. Until a resume
//!   succeeds, `begin`, `record_undo`, `write` and `commit` are refused
//!   with the retryable [`Error::JournalStalled`]; nothing the journal
//!   accepted before is lost, and transactions in flight keep their state.
//! - [`TransactionRollbackManager::resume`] re-validates the journal's tail,
//!   rewrites from memory every record not yet durable, fsyncs, and
//!   un-stalls. A retryable failure of the resume leaves the journal
//!   stalled and schedules the next report of the stall after an
//!   exponential backoff ([`RESUME_BACKOFF_BASE`] · 2ⁿ⁻¹ after the n-th
//!   failed resume, at most [`RESUME_BACKOFF_CAP`]), which the recovery
//!   manager's dispatcher sends on the bus, so its healer tries again; any
//!   other failure poisons the journal ([`FailureKind::JournalPoisoned`]).
//! - A commit that returned [`Error::JournalStalled`] was not acknowledged:
//!   call [`commit`](TransactionRollbackManager::commit) again once the
//!   resume succeeded.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::types::{Failure, FailureKind, FailureSink, Source};

use super::journal::StallHook;
use super::{SharedWatch, StallWatch, TransactionRollbackManager};

/// What a resume did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResumeReport {
    /// Whether the journal was stalled (`false`: nothing to do).
    pub was_stalled: bool,
    /// Records written again from memory (marks included).
    pub records_rewritten: u64,
    /// Their bytes.
    pub bytes_rewritten: u64,
}

/// The wait before the stall is reported again after the first failed
/// resume; it doubles with each further failure.
pub const RESUME_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest wait between reports of a journal that stays stalled.
pub const RESUME_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// A stalled journal, as [`TransactionRollbackManager::journal_stall`]
/// shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalStall {
    /// The failure that stalled it (the newest, after a failed resume).
    pub reason: String,
    /// Whether it was a lack of space (`ENOSPC`, `EDQUOT`).
    pub no_space: bool,
    /// When it stalled, on the manager's clock.
    pub since_ns: u64,
    /// Resumes that failed since.
    pub failed_resumes: u32,
    /// Bytes of records kept in memory, to be written by the resume.
    pub pending_bytes: u64,
}

/// The evidence of a stall report.
fn evidence(reason: &str, no_space: bool, failed_resumes: u32) -> String {
    let what = if no_space {
        "the disk is full (no space left)"
    } else {
        "a retryable I/O error"
    };
    format!(
        "the undo journal is stalled by {what}: {reason}; {failed_resumes} resume(s) failed so far; \
         it refuses new records until TransactionRollbackManager::resume succeeds, and keeps every \
         record it accepted"
    )
}

/// The hook the journal calls when it stalls: reports once and starts the
/// watch.
pub(crate) fn stall_hook(
    sink: FailureSink,
    clock: Arc<dyn Clock>,
    watch: SharedWatch,
) -> StallHook {
    Arc::new(move |reason: &str, no_space: bool| {
        let now = clock.now_ns();
        *watch.lock() = Some(StallWatch {
            since_ns: now,
            next_report_ns: u64::MAX,
        });
        sink.send(Failure::new(
            Source::TransactionRollbackManager,
            FailureKind::JournalStalled { no_space },
            evidence(reason, no_space, 0),
            now,
        ));
    })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The wait after the `n`-th failed resume (n ≥ 1).
fn backoff(n: u32) -> Duration {
    crate::retry::backoff(n, RESUME_BACKOFF_BASE, RESUME_BACKOFF_CAP)
}

impl TransactionRollbackManager {
    /// Resumes the undo journal after a stall (see
    /// [a stalled journal](crate::rollback#a-stalled-journal)):
    /// re-validates the tail of its newest segment (truncating it right
    /// after the last durable record), rewrites from memory every record
    /// not yet durable, fsyncs, and accepts records again. Does nothing
    /// (`was_stalled: false`) when the journal is not stalled. The
    /// [`AutoRecoveryManager`](crate::AutoRecoveryManager) calls it on its
    /// own (remedy `resume-journal`); a host without one calls it itself,
    /// after freeing space for a full disk.
    ///
    /// # Errors
    /// [`Error::Stopped`] after `stop`; [`Error::JournalStalled`] when it
    /// failed retryably again (the disk is still full, say) — still stalled,
    /// nothing lost, call again later; [`Error::Poisoned`] when the journal
    /// is poisoned or the resume failed for good (its durable records do
    /// not read back, a segment is gone, `EROFS`): build the manager again;
    /// a retryable timed-out [`Error::Io`].
    pub fn resume(&self) -> Result<ResumeReport> {
        self.check_open()?;
        let result = self.journal.resume();
        let now = self.clock.now_ns();
        let mut watch = self.stall_watch.lock();
        match &result {
            Err(Error::JournalStalled { .. }) => {
                let failed = self.journal.stall_info().map_or(1, |s| s.failed_resumes);
                let since = watch.map_or(now, |w| w.since_ns);
                *watch = Some(StallWatch {
                    since_ns: since,
                    next_report_ns: now.saturating_add(nanos(backoff(failed))),
                });
            }
            Err(Error::Io { .. }) => {}
            _ => *watch = None,
        }
        result
    }

    /// The journal's stall, or `None` when it accepts records.
    #[must_use]
    pub fn journal_stall(&self) -> Option<JournalStall> {
        let info = self.journal.stall_info()?;
        let since_ns = self
            .stall_watch
            .lock()
            .map_or_else(|| self.clock.now_ns(), |w| w.since_ns);
        Some(JournalStall {
            reason: info.reason,
            no_space: info.no_space,
            since_ns,
            failed_resumes: info.failed_resumes,
            pending_bytes: info.pending_bytes,
        })
    }

    /// A report of the stall when one is due (a resume failed and its
    /// backoff has passed); each is given once.
    pub(crate) fn stall_report_due(&self, now_ns: u64) -> Option<Failure> {
        let mut watch = self.stall_watch.lock();
        let w = watch.as_mut()?;
        if now_ns < w.next_report_ns {
            return None;
        }
        let Some(info) = self.journal.stall_info() else {
            *watch = None;
            return None;
        };
        w.next_report_ns = u64::MAX;
        Some(Failure::new(
            Source::TransactionRollbackManager,
            FailureKind::JournalStalled {
                no_space: info.no_space,
            },
            evidence(&info.reason, info.no_space, info.failed_resumes),
            now_ns,
        ))
    }

    /// Appends a mark record and makes it durable: whether the journal
    /// accepts and syncs records (a resume's verification).
    pub(crate) fn probe_journal(&self) -> Result<()> {
        self.check_open()?;
        self.journal.probe().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        assert_eq!(backoff(1), RESUME_BACKOFF_BASE);
        assert_eq!(backoff(2), RESUME_BACKOFF_BASE * 2);
        assert_eq!(backoff(4), RESUME_BACKOFF_BASE * 8);
        assert_eq!(backoff(20), RESUME_BACKOFF_CAP);
        assert_eq!(backoff(u32::MAX), RESUME_BACKOFF_CAP);
    }
}
