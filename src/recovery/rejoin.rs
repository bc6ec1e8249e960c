//! Reports of escalated pages and transactions and closed incidents, filed
//! against the manager's escalation record (see `escalated.rs` for the
//! contract): a report of a page escalated in the same fault episode, or of
//! a transaction escalated within the interval, joins that escalation; an
//! escalated incident records its pages (and transaction), a healed one
//! forgets them.

use crate::healer::{Incident, Outcome};
use crate::types::{Failure, FailureKind, Target};

use super::escalated::Report;
use super::events::RecoveryEvent;
use super::state::Inner;

/// A report about `target` (`reported`: a failure, not a read of a page
/// already fenced): the escalated incident it joined — counted and
/// announced when reported, and the page put back to `Irreparable` so the
/// next read reports it again — or `None` (file it as ever).
pub(crate) fn join(inner: &Inner, target: &Target, reported: bool) -> Option<u64> {
    join_kind(inner, target, None, reported)
}

/// A failure reported on the bus, filed against the escalations as
/// [`join`] files a target: a transaction's report joins only when it is a
/// blocked rollback (the one report that repeats within an episode).
pub(crate) fn join_failure(inner: &Inner, f: &Failure) -> Option<u64> {
    join_kind(inner, &f.target(), Some(&f.kind), true)
}

/// Whether an incident about a transaction whose first failure is `kind`
/// is one a later report may join: a blocked rollback's.
fn blocked_rollback(kind: Option<&FailureKind>) -> bool {
    matches!(kind, Some(FailureKind::RollbackBlocked { .. }))
}

fn join_kind(
    inner: &Inner,
    target: &Target,
    kind: Option<&FailureKind>,
    reported: bool,
) -> Option<u64> {
    let id = match target {
        Target::Page(page) => {
            // Most pages have no record: the detector is then not asked.
            // A record made after this look-up is as one made after the
            // report was filed (the episode was never read under the
            // escalations' lock either).
            if !inner.escalations.lock().has_page(*page) {
                return None;
            }
            let episode = inner.detector.page_episode(*page);
            let id = inner
                .escalations
                .lock()
                .join(*page, episode, inner.clock.now_ns())?;
            if let Some(e) = episode {
                inner.detector.keep_irreparable(*page, e);
            }
            id
        }
        Target::Transaction(txn) if blocked_rollback(kind) => inner
            .escalations
            .lock()
            .join_txn(*txn, inner.clock.now_ns())?,
        _ => return None,
    };
    if reported {
        inner.tally.lock().stats.joined += 1;
        inner.events.emit(&RecoveryEvent::Joined {
            id,
            target: target.clone(),
        });
    }
    Some(id)
}

/// Records a closed incident: an escalated one is kept (until the host
/// acknowledges it) and its pages remembered in their fault episode; the
/// pages of a healed one are forgotten. Saved when anything changed.
pub(crate) fn closed(inner: &Inner, inc: &Incident) {
    let mut pages = inc.pages.clone();
    if let Target::Page(p) = inc.target {
        pages.push(p);
    }
    let changed = match inc.outcome {
        Outcome::Escalated => {
            let now = inner.clock.now_ns();
            let mut e = inner.escalations.lock();
            for p in pages {
                if let Some(episode) = inner.detector.page_episode(p) {
                    e.escalated(p, inc.id, episode, now);
                }
            }
            if let Target::Transaction(t) = inc.target {
                if blocked_rollback(inc.failures.first().map(|f| &f.kind)) {
                    e.escalated_txn(t, inc.id, now);
                }
            }
            if let Some(first) = inc.failures.first() {
                e.reported(
                    inc.id,
                    Report {
                        failure: first.clone(),
                        priority: inc.priority,
                        reason: inc
                            .escalation
                            .as_ref()
                            .map(|r| r.reason.clone())
                            .unwrap_or_default(),
                        text: inc
                            .escalation
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        at_ns: now,
                        previous_run: false,
                        joined_before: 0,
                    },
                );
            }
            true
        }
        Outcome::Healed { .. } => {
            let mut e = inner.escalations.lock();
            // Every page's record is dropped (no short circuit).
            let mut any = false;
            for p in pages {
                any |= e.healed(p, inc.id);
            }
            if let Target::Transaction(t) = inc.target {
                any |= e.healed_txn(t, inc.id);
            }
            any
        }
        _ => false,
    };
    if changed {
        if let Err(e) = save(inner) {
            tracing::warn!(error = %e, "the escalated incidents were not saved; a restart may escalate them again");
        }
    }
}

/// Saves the escalated incidents (saves are ordered: the last one holds
/// the newest record).
pub(crate) fn save(inner: &Inner) -> crate::error::Result<()> {
    let _order = inner.escalated_save.lock();
    let list = inner.escalations.lock().list();
    super::escalated_file::save(&inner.escalated_path, &list, inner.clock.now_ns())
}
