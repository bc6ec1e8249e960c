//! Closing incidents: a healer's answer about a taken incident filed —
//! deferred back into the queue, or closed (late joins added, actions and
//! outcome announced, counted, kept among the recent ones); a page-set
//! incident's member incidents merged into it; and the closes of incidents
//! healed on a reader's thread, recorded off that thread.
//!
//! # Contract
//! - **Never unseen.** From leaving the queue until recorded, an incident
//!   is counted as closing (`Inner::closing`), so `is_idle` never sees it
//!   neither queued nor recorded.
//! - **Recorded once, in order.** A close left by [`close_later`] is
//!   recorded exactly once, by the first of the dispatcher's next pass,
//!   `stats`, `incidents`, `wait_idle` and `stop` (or, once the manager
//!   stops, by the reader itself); closes left for later are recorded in
//!   the order they were left, one recorder at a time. Against closes
//!   recorded at once (on recovery threads, or a read that did not heal)
//!   they may come late: a later incident of the same page may be opened,
//!   announced and even closed first. Nothing depends on that order: the
//!   events and audit records name their incident, and a late heal never
//!   erases a later escalation of its page (`Escalations::healed`).
//! - **No report lost in a join.** A page healed while later reports of it
//!   arrived is re-checked, and a new incident opened if it is bad again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::audit::AuditEntry;
use crate::corruption::Verdict;
use crate::healer::{Incident, Outcome, Step};
use crate::types::{Failure, FailureKind, Source, Target};

use super::events::RecoveryEvent;
use super::filing::{offer, refill};
use super::queue::Taken;
use super::state::{Inner, LaterClose};

/// Files a page-set incident: announced, its pages' incidents merged into
/// it and closed with it.
pub(super) fn settle_set(inner: &Inner, by_target: &HashMap<&Target, &Taken>, mut inc: Incident) {
    let _closing = Closing::new(inner);
    // The set waited since its first page was queued.
    let queued = inc
        .pages
        .iter()
        .filter_map(|p| by_target.get(&Target::Page(*p)).map(|t| t.queued_ns))
        .min();
    if let Some(q) = queued {
        inc.queued_at(q);
    }
    inner.tally.lock().opened(inc.priority);
    inner.events.emit(&RecoveryEvent::Opened {
        id: inc.id,
        target: inc.target.clone(),
        priority: inc.priority,
    });
    let mut late = Vec::new();
    let mut late_pages = Vec::new();
    let mut merged = Vec::new();
    {
        // Every page's incident out of the queue under one lock.
        let mut q = inner.queue.lock();
        for p in &inc.pages {
            let target = Target::Page(*p);
            let Some(t) = by_target.get(&target) else {
                continue;
            };
            let l = q.finish(&target);
            if !l.is_empty() {
                late_pages.push(*p);
            }
            late.extend(l);
            if t.id != inc.id {
                merged.push(t.id);
            }
        }
    }
    if !merged.is_empty() {
        inner.tally.lock().stats.merged += merged.len() as u64;
    }
    for id in merged {
        inner
            .events
            .emit(&RecoveryEvent::Merged { id, into: inc.id });
    }
    inner.finished.notify_all();
    inner.dirty.store(true, Ordering::Relaxed);
    refill(inner);
    let healed = matches!(inc.outcome, Outcome::Healed { .. });
    let id = inc.id;
    close(inner, inc, &late);
    if healed {
        for p in late_pages {
            recheck_page(inner, p, id);
        }
    }
}

/// Files a healer's answer about a taken incident: deferred, or closed.
pub(super) fn settle(inner: &Inner, t: &Taken, mut inc: Incident) {
    let _closing = Closing::new(inner);
    inc.queued_at(t.queued_ns);
    if let Outcome::Deferred { until_ns } = inc.outcome {
        inner.tally.lock().closed(&inc, inner.rto_of(inc.priority));
        inner.queue.lock().defer(&t.target, until_ns);
        inner.finished.notify_all();
    } else {
        let late = inner.queue.lock().finish(&t.target);
        inner.finished.notify_all();
        inner.dirty.store(true, Ordering::Relaxed);
        refill(inner);
        close(inner, inc, &late);
    }
}

/// Takes a healed incident of a reader's thread out of the queue now — so
/// the page's next report opens a new incident — and leaves recording its
/// close (its closing audit records appended, counted, announced, kept
/// among the recent ones) to the dispatcher's next pass, at most a
/// dispatcher tick later, or to the first of [`stats`], [`incidents`] and
/// [`wait_idle`] called before that: the reader returns with its page
/// without paying for the bookkeeping. Counted as closing until recorded.
///
/// [`stats`]: crate::AutoRecoveryManager::stats
/// [`incidents`]: crate::AutoRecoveryManager::incidents
/// [`wait_idle`]: crate::AutoRecoveryManager::wait_idle
pub(super) fn close_later(inner: &Inner, t: &Taken, mut inc: Incident, audit: Vec<AuditEntry>) {
    debug_assert!(matches!(inc.outcome, Outcome::Healed { .. }));
    inner.closing.fetch_add(1, Ordering::AcqRel);
    inc.queued_at(t.queued_ns);
    let late = inner.queue.lock().finish(&t.target);
    inner.finished.notify_all();
    inner.dirty.store(true, Ordering::Relaxed);
    inner.closes.lock().push(LaterClose { inc, late, audit });
    // A manager that stops records what is left once, after its threads
    // end: a reader finishing later records its own close (stop sets
    // `draining` before that last recording, and this check follows the
    // push, so every close is recorded by one or the other).
    if inner.draining.load(Ordering::Acquire) {
        record_closes(inner);
    }
}

/// Records the closes [`close_later`] left, in the order they were left,
/// one recorder at a time (a caller waits for a recording under way, so
/// that what it reads next includes it).
pub(super) fn record_closes(inner: &Inner) {
    let _one = inner.recording.lock();
    let mut closes = std::mem::take(&mut *inner.closes.lock());
    if closes.is_empty() {
        return;
    }
    // Every close's records in one append, in the order the closes were
    // left: one `write(2)` per recording, not one per incident.
    let records: Vec<AuditEntry> = closes
        .iter_mut()
        .flat_map(|c| std::mem::take(&mut c.audit))
        .collect();
    if let Some(log) = &inner.audit {
        if !records.is_empty() {
            if let Err(e) = log.append(&records) {
                tracing::warn!(error = %e, "audit records not written; healing goes on");
            }
        }
    }
    for c in closes {
        close(inner, c.inc, &c.late);
        inner.closing.fetch_sub(1, Ordering::AcqRel);
    }
    refill(inner);
}

/// Counts an incident as closing from while it still runs in the queue
/// until it is recorded, so that `is_idle` never sees it neither queued
/// nor recorded; uncounted on drop, also while unwinding.
pub(super) struct Closing<'a>(&'a Inner);

impl<'a> Closing<'a> {
    pub(super) fn new(inner: &'a Inner) -> Self {
        inner.closing.fetch_add(1, Ordering::AcqRel);
        Closing(inner)
    }
}

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.0.closing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Closes an incident the queue no longer holds: late joins added, its
/// actions and outcome announced, counted, kept among the recent ones.
pub(super) fn close(inner: &Inner, mut inc: Incident, late: &[Failure]) {
    let now = inner.clock.now_ns();
    super::rejoin::closed(inner, &inc);
    for f in late {
        inc.join(f.clone(), now);
    }
    for e in &inc.timeline {
        if matches!(e.step, Step::Acted | Step::Undone)
            || (e.step == Step::Planned && inc.outcome == Outcome::Observed)
        {
            tracing::info!(step = e.step.as_str(), "{}", e.text);
            inner.events.emit(&RecoveryEvent::Action {
                id: inc.id,
                text: e.text.clone(),
            });
        }
    }
    let within = inner.tally.lock().closed(&inc, inner.rto_of(inc.priority));
    let event = match &inc.outcome {
        Outcome::Healed { remedy } => RecoveryEvent::Healed {
            id: inc.id,
            remedy: remedy.clone(),
            time_to_heal: inc.time_to_heal().unwrap_or_default(),
            within_rto: within,
        },
        Outcome::Observed => RecoveryEvent::Observed { id: inc.id },
        _ => RecoveryEvent::Escalated {
            id: inc.id,
            reason: inc
                .escalation
                .as_ref()
                .map_or_else(String::new, |r| r.reason.clone()),
            report: inc.escalation.clone().map(Arc::new),
        },
    };
    tracing::info!(outcome = inc.outcome.as_str(), "incident closed");
    inner.events.emit(&event);
    recheck_after_late_joins(inner, &inc, late);
    let mut recent = inner.recent.lock();
    if inner.recent_capacity > 0 {
        if recent.len() >= inner.recent_capacity {
            recent.pop_front();
        }
        recent.push_back(inc);
    }
}

/// A page healed while later reports of it arrived: re-checked, and a new
/// incident opened if it is bad again (a report is never lost in a join).
fn recheck_after_late_joins(inner: &Inner, inc: &Incident, late: &[Failure]) {
    let (Outcome::Healed { .. }, Target::Page(p)) = (&inc.outcome, &inc.target) else {
        return;
    };
    if late.is_empty() || !inc.pages.is_empty() {
        return;
    }
    recheck_page(inner, *p, inc.id);
}

/// Re-checks `p`, healed by incident `id` while later reports of it
/// arrived; opens a new incident when it is bad again.
fn recheck_page(inner: &Inner, p: crate::types::PageId, id: u64) {
    if let Ok(Verdict::Corrupt { error, .. }) = inner.detector.recheck(p) {
        offer(
            inner,
            Failure::new(
                Source::CorruptionDetector,
                FailureKind::CorruptPage { page: p },
                format!(
                    "reported again while incident {id} healed it, and bad on re-check: {error}"
                ),
                inner.clock.now_ns(),
            ),
        );
    }
}
