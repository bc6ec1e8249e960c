//! Filing failures in the incident queue: each failure counted and
//! announced — opening an incident, joining the open one of its target, or
//! overflowing (counted, never silently dropped) — and the page backlog
//! opened as the queue makes room. Used by the dispatcher, heal on read,
//! startup and the closes that re-check a page.
//!
//! # Contract
//! - Every failure filed is counted once in `RecoveryStats::failures`, and
//!   announced by exactly one event (`Opened`, `Joined` or `Overflowed`),
//!   except the deaths of the manager's own threads (counted; the
//!   supervisor records them) and reports joining a kept escalation
//!   (counted and announced by `rejoin::join`).

use std::sync::atomic::Ordering;

use crate::types::{Failure, FailureKind, Priority, Source, Target};

use super::events::RecoveryEvent;
use super::queue::Offer;
use super::state::{Inner, COMPONENT};

/// Whether `f` is the death of one of the manager's own threads (recorded
/// by the supervisor, not queued for the healer).
fn own_death(f: &Failure) -> bool {
    f.source == Source::RecoveryManager
        && matches!(&f.kind, FailureKind::WorkerDied { component } if &**component == COMPONENT)
}

/// Files a failure taken off the bus, and counts it as filed.
pub(super) fn file(inner: &Inner, f: Failure) {
    offer(inner, f);
    inner.filed.fetch_add(1, Ordering::Release);
}

/// How many failures [`file_all`] offers under one hold of the queue's
/// lock (so a recovery thread never waits long for it).
const FILE_CHUNK: usize = 256;

/// Files failures taken off the bus together, in order, as [`file`] files
/// each — counted, announced by one event each — with the queue's and
/// the counts' locks taken once per chunk instead of per failure.
pub(super) fn file_all(inner: &Inner, failures: &mut Vec<Failure>) {
    let mut chunk: Vec<Failure> = Vec::with_capacity(FILE_CHUNK.min(failures.len()));
    let mut results: Vec<(Offer, Target, Priority)> = Vec::with_capacity(chunk.capacity());
    let mut drained = failures.drain(..).peekable();
    while drained.peek().is_some() {
        let mut counted = 0u64;
        let mut taken = 0u64;
        for f in drained.by_ref().take(FILE_CHUNK) {
            taken += 1;
            // As in `offer`: the manager's own deaths and the reports that
            // join a kept escalation are counted only.
            if own_death(&f) || super::rejoin::join_failure(inner, &f).is_some() {
                counted += 1;
            } else {
                chunk.push(f);
            }
        }
        let now = inner.clock.now_ns();
        {
            let mut q = inner.queue.lock();
            for f in chunk.drain(..) {
                let (target, prio) = (f.target(), f.priority);
                results.push((q.offer(f, now), target, prio));
            }
        }
        let (mut opened, mut overflowed) = (false, 0u64);
        {
            let mut tally = inner.tally.lock();
            tally.stats.failures += counted + results.len() as u64;
            for (r, _, prio) in &results {
                match r {
                    Offer::Opened(_) => {
                        tally.opened(*prio);
                        opened = true;
                    }
                    Offer::Joined(_) => tally.stats.joined += 1,
                    Offer::Overflow | Offer::Backlogged => overflowed += 1,
                }
            }
        }
        if opened {
            inner.dirty.store(true, Ordering::Relaxed);
            inner.work.notify_all();
        }
        if overflowed > 0 {
            metrics::counter!("selfheal_failures_overflowed_total").increment(overflowed);
        }
        for (r, target, prio) in results.drain(..) {
            match r {
                Offer::Opened(id) => inner.events.emit(&RecoveryEvent::Opened {
                    id,
                    target,
                    priority: prio,
                }),
                Offer::Joined(id) => inner.events.emit(&RecoveryEvent::Joined { id, target }),
                Offer::Overflow => {
                    tracing::warn!(%target, "incident queue full: failure counted, not queued");
                    inner.events.emit(&RecoveryEvent::Overflowed { target });
                }
                Offer::Backlogged => {
                    tracing::debug!(%target, "incident queue full: the failure waits for room");
                    inner.events.emit(&RecoveryEvent::Overflowed { target });
                }
            }
        }
        inner.filed.fetch_add(taken, Ordering::Release);
    }
}

/// Files one failure in the queue, counting and announcing it.
pub(super) fn offer(inner: &Inner, f: Failure) {
    if own_death(&f) {
        inner.tally.lock().stats.failures += 1;
        return;
    }
    let now = inner.clock.now_ns();
    let (target, prio) = (f.target(), f.priority);
    if super::rejoin::join_failure(inner, &f).is_some() {
        inner.tally.lock().stats.failures += 1;
        return;
    }
    let r = inner.queue.lock().offer(f, now);
    inner.tally.lock().stats.failures += 1;
    match r {
        Offer::Opened(_) | Offer::Joined(_) => announce(inner, r, target, prio),
        Offer::Overflow => {
            metrics::counter!("selfheal_failures_overflowed_total").increment(1);
            tracing::warn!(%target, "incident queue full: failure counted, not queued");
            inner.events.emit(&RecoveryEvent::Overflowed { target });
        }
        Offer::Backlogged => {
            metrics::counter!("selfheal_failures_overflowed_total").increment(1);
            tracing::debug!(%target, "incident queue full: the failure waits for room");
            inner.events.emit(&RecoveryEvent::Overflowed { target });
        }
    }
}

/// Counts and announces an incident that a failure opened or joined (an
/// overflow is its caller's to report).
fn announce(inner: &Inner, r: Offer, target: Target, prio: Priority) {
    match r {
        Offer::Opened(id) => {
            inner.tally.lock().opened(prio);
            inner.dirty.store(true, Ordering::Relaxed);
            inner.work.notify_one();
            inner.events.emit(&RecoveryEvent::Opened {
                id,
                target,
                priority: prio,
            });
        }
        Offer::Joined(id) => {
            inner.tally.lock().stats.joined += 1;
            inner.events.emit(&RecoveryEvent::Joined { id, target });
        }
        Offer::Overflow | Offer::Backlogged => {}
    }
}

/// Opens the incidents of the page backlog while the queue has room,
/// counting and announcing each.
pub(super) fn refill(inner: &Inner) {
    let filed = {
        let mut q = inner.queue.lock();
        if !q.has_backlog() || !q.has_room() {
            return;
        }
        q.refill(inner.clock.now_ns())
    };
    for (r, target, prio) in filed {
        announce(inner, r, target, prio);
    }
    inner.dirty.store(true, Ordering::Relaxed);
}
