//! Reports of escalated pages and closed incidents, filed against the
//! manager's escalation record (see `escalated.rs` for the contract): a
//! report of a page escalated in the same fault episode joins that
//! escalation; an escalated incident records its pages, a healed one
//! forgets them.

use crate::healer::{Incident, Outcome};
use crate::types::Target;

use super::events::RecoveryEvent;
use super::state::Inner;

/// A report about `target` (`reported`: a failure, not a read of a page
/// already fenced): the escalated incident it joined — counted and
/// announced when reported, and the page put back to `Irreparable` so the
/// next read reports it again — or `None` (file it as ever).
pub(crate) fn join(inner: &Inner, target: &Target, reported: bool) -> Option<u64> {
    let Target::Page(page) = target else {
        return None;
    };
    let episode = inner.detector.page_episode(*page);
    let id = inner
        .escalations
        .lock()
        .join(*page, episode, inner.clock.now_ns())?;
    if let Some(e) = episode {
        inner.detector.keep_irreparable(*page, e);
    }
    if reported {
        inner.tally.lock().stats.joined += 1;
        inner.events.emit(&RecoveryEvent::Joined {
            id,
            target: target.clone(),
        });
    }
    Some(id)
}

/// Records a closed incident: an escalated page is remembered in its
/// fault episode; the pages of a healed one are forgotten.
pub(crate) fn closed(inner: &Inner, inc: &Incident) {
    let mut pages = inc.pages.clone();
    if let Target::Page(p) = inc.target {
        pages.push(p);
    }
    match inc.outcome {
        Outcome::Escalated => {
            let now = inner.clock.now_ns();
            for p in pages {
                if let Some(episode) = inner.detector.page_episode(p) {
                    inner.escalations.lock().escalated(p, inc.id, episode, now);
                }
            }
        }
        Outcome::Healed { .. } => {
            let mut e = inner.escalations.lock();
            for p in pages {
                e.healed(p);
            }
        }
        _ => {}
    }
}
