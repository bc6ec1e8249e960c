//! Heal on read: a verified read through the manager's detector that finds
//! its page failing verification heals it on the reader's thread, through
//! the same incident machinery as the recovery threads, and returns the
//! good bytes.
//!
//! # Contract
//! - **One incident per page, as ever.** The read's report opens the
//!   page's incident (running on the reader's thread), or takes the queued
//!   one (joining it); when another thread is healing the page already, the
//!   reader waits for that incident to close — at most [`WAIT_MAX`] — and
//!   then reads again. The incident is diagnosed, acted on, verified,
//!   audited, counted and announced exactly as on a recovery thread.
//! - **The replicas read while the incident opens.** Once the reader's
//!   thread holds the incident, the page's replica probes are sent ahead
//!   (see [`repair::ahead`](crate::repair::ahead)): the replicas' helper
//!   threads read the page while the incident is diagnosed and planned and
//!   its write-ahead records are appended, and `repair-from-replicas`
//!   takes those copies when they are still the page's (same fault, sent
//!   within a read timeout; else it asks afresh). The probes only read; a
//!   heal that takes another remedy, or none, drops them.
//! - **A read that raced a heal reads again.** A page found bad whose
//!   incident closed healed before the reader got to it (no open
//!   incident, the page no longer fenced) is read again, not given a
//!   second incident.
//! - **The reader does not wait for the bookkeeping.** A healed incident
//!   leaves the queue before the read returns; recording its close (the
//!   closing audit records, counts, the `Healed` event, the recent list)
//!   is left to the dispatcher's next pass — at most a dispatcher tick
//!   later — or to the first call of `stats`, `incidents` or `wait_idle`
//!   before that (see `closing::close_later`). Its write-ahead audit
//!   records were appended before its remedy acted, as on any thread.
//! - **The reader gets verified bytes or its error.** When the incident
//!   healed the page the read is done again, verified (without the hook);
//!   otherwise the read returns the error it found.
//! - **Modes.** Observe never heals on read (the hook is not installed: the
//!   read fails and reports, as without the manager); Approve asks the
//!   host as a recovery thread would, the reader waiting for the answer.
//! - **No re-entrancy.** Reads inside a remedy, on the reader's thread or
//!   on a recovery thread, never call the hook (see
//!   [`read_hook`](crate::corruption::read_hook)).
//! - Not while the manager stops: once it drains, a failed read is
//!   reported on the bus as without the hook.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::corruption::read_hook::{ReadFailureFn, ReadHeal};
use crate::corruption::PageState;
use crate::healer::Outcome;
use crate::repair::ahead::Ahead;
use crate::types::{Failure, FailureKind, PageId, Source, Target};

use super::closing::{close_later, settle};
use super::events::RecoveryEvent;
use super::filing::offer;
use super::queue::{Claim, Taken};
use super::state::Inner;

/// How long a reader waits, at most, for another thread's incident on its
/// page to close.
pub(crate) const WAIT_MAX: Duration = Duration::from_secs(5);

/// Installs the hook on the manager's detector (once), unless heal on read
/// is off or the manager only observes.
pub(super) fn install(inner: &Arc<Inner>) {
    if !inner.heal_on_read || !inner.acting {
        return;
    }
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let hook: ReadFailureFn = Arc::new(move |page, failure| match weak.upgrade() {
        Some(inner) => heal_page(&inner, page, failure),
        None => ReadHeal::Declined(failure),
    });
    if !inner.detector.set_read_hook(hook) {
        tracing::warn!("the detector has a read hook already; heal on read is off");
    }
}

/// The hook: heals `page` on this thread (see the module docs).
fn heal_page(inner: &Inner, page: PageId, failure: Option<Failure>) -> ReadHeal {
    if inner.draining.load(Ordering::Acquire) || inner.abort.load(Ordering::Acquire) {
        return ReadHeal::Declined(failure);
    }
    let Some(healer) = inner.healer.read().clone() else {
        return ReadHeal::Declined(failure);
    };
    let target = Target::Page(page);
    let now = inner.clock.now_ns();
    let reported = failure.as_ref().map(|f| f.priority);
    if super::rejoin::join(inner, &target, reported.is_some()).is_some() {
        if reported.is_some() {
            inner.tally.lock().stats.failures += 1;
        }
        return ReadHeal::Unhealed;
    }
    let mut queue = inner.queue.lock();
    // The read found the page bad, but another thread may have healed it
    // and closed its incident since. The page's state is looked at under
    // the queue's lock: an incident marks its page repaired before it
    // leaves the queue, so a page with no open incident that is not fenced
    // is past its fault, and the read is done again (a new fault there is
    // found and reported by that read) instead of opening an incident for
    // a page that is already good.
    if !queue.is_open(&target)
        && !inner
            .detector
            .page_state(page)
            .is_some_and(PageState::is_fenced)
    {
        return ReadHeal::ReadAgain;
    }
    let claim = queue.claim(
        &target,
        failure,
        || {
            Failure::new(
                Source::CorruptionDetector,
                FailureKind::CorruptPage { page },
                format!("page {page} is fenced and was read"),
                now,
            )
        },
        now,
    );
    drop(queue);
    if reported.is_some() && !matches!(claim, Claim::Full(_)) {
        inner.tally.lock().stats.failures += 1;
    }
    let taken = match claim {
        Claim::Full(failure) => {
            if let Some(f) = failure {
                offer(inner, f);
            }
            return ReadHeal::Unhealed;
        }
        Claim::Deferred(id) => {
            joined(inner, id, &target, reported.is_some());
            return ReadHeal::Unhealed;
        }
        Claim::Busy(id) => {
            joined(inner, id, &target, reported.is_some());
            return wait_for(inner, &target, id);
        }
        Claim::Taken(t) => {
            joined(inner, t.id, &target, reported.is_some());
            t
        }
        Claim::Opened(t) => {
            inner.tally.lock().opened(t.first.priority);
            inner.dirty.store(true, Ordering::Relaxed);
            inner.events.emit(&RecoveryEvent::Opened {
                id: t.id,
                target: target.clone(),
                priority: t.first.priority,
            });
            t
        }
    };
    heal_taken(inner, &healer, taken)
}

/// Counts and announces a report that joined incident `id`.
fn joined(inner: &Inner, id: u64, target: &Target, reported: bool) {
    if reported {
        inner.tally.lock().stats.joined += 1;
        inner.events.emit(&RecoveryEvent::Joined {
            id,
            target: target.clone(),
        });
    }
}

/// Heals an incident taken for this thread; settles it as a recovery
/// thread would.
fn heal_taken(inner: &Inner, healer: &crate::healer::SelfHealer, t: Taken) -> ReadHeal {
    let span = tracing::info_span!(
        "incident",
        id = t.id,
        target = %t.target,
        priority = %t.first.priority,
        on_read = true
    );
    let _enter = span.enter();
    let healed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // The replicas read the page while the incident is diagnosed and
        // planned and its write-ahead records are appended; the repair
        // takes their copies (see `repair::ahead`). Sent inside the guard:
        // it asks the host for the page's expected LSN, which may panic.
        let _ahead = match (&t.target, healer.context().need_repairer()) {
            (Target::Page(page), Ok(r)) => Some(Ahead::send(r, *page)),
            _ => None,
        };
        healer.heal_as_closing_later(t.id, t.first.clone(), &t.joined)
    }));
    match healed {
        Ok((inc, audit)) => {
            if matches!(inc.outcome, Outcome::Healed { .. }) {
                close_later(inner, &t, inc, audit);
                ReadHeal::ReadAgain
            } else {
                // Not healed: its records now, and the incident settled
                // here (deferred, or escalated) before the read fails.
                if let (Some(log), false) = (&inner.audit, audit.is_empty()) {
                    if let Err(e) = log.append(&audit) {
                        tracing::warn!(error = %e, "audit records not written; healing goes on");
                    }
                }
                settle(inner, &t, inc);
                ReadHeal::Unhealed
            }
        }
        Err(_) => {
            // Healing panicked outside a remedy's guard: the incident goes
            // back to the queue for a recovery thread, never lost.
            tracing::error!(
                incident = t.id,
                "healing on read panicked; the incident is queued again"
            );
            inner.queue.lock().requeue(&t.target, t.joined, u32::MAX);
            inner.work.notify_one();
            inner.finished.notify_all();
            ReadHeal::Unhealed
        }
    }
}

/// Waits until incident `id` of `target` is no longer running, at most
/// [`WAIT_MAX`]; then the page is read again (it verifies if the incident
/// healed it).
fn wait_for(inner: &Inner, target: &Target, id: u64) -> ReadHeal {
    let deadline = Instant::now() + WAIT_MAX;
    let mut q = inner.queue.lock();
    while q.is_running(target, id) {
        if inner.finished.wait_until(&mut q, deadline).timed_out() {
            return if q.is_running(target, id) {
                ReadHeal::Unhealed
            } else {
                ReadHeal::ReadAgain
            };
        }
    }
    ReadHeal::ReadAgain
}
