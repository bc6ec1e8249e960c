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

/// How many failures are offered under one hold of the queue's lock (so a
/// recovery thread never waits long for it).
const FILE_CHUNK: usize = 256;

/// Files failures taken off the bus together, in order, as [`file()`] files
/// each, with the queue's and the counts' locks taken once per chunk
/// instead of per failure; each chunk counts as filed once announced.
pub(super) fn file_all(inner: &Inner, failures: &mut Vec<Failure>) {
    offer_chunks(inner, failures.drain(..), true);
}

/// Files one failure in the queue, counting and announcing it.
pub(super) fn offer(inner: &Inner, f: Failure) {
    offer_chunks(inner, std::iter::once(f), false);
}

/// Offers `failures` in order, [`FILE_CHUNK`] at a time: the manager's own
/// deaths and reports joining a kept escalation counted only, the rest
/// offered to the queue under one hold of its lock, then counted and
/// announced together; with `filed`, each chunk is counted as filed after.
fn offer_chunks(inner: &Inner, failures: impl Iterator<Item = Failure>, filed: bool) {
    let mut failures = failures.peekable();
    let mut chunk: Vec<Failure> = Vec::new();
    let mut results: Vec<(Offer, Target, Priority)> = Vec::new();
    while failures.peek().is_some() {
        let mut counted = 0u64;
        let mut taken = 0u64;
        for f in failures.by_ref().take(FILE_CHUNK) {
            taken += 1;
            if own_death(&f) || super::rejoin::join_failure(inner, &f).is_some() {
                counted += 1;
            } else {
                chunk.push(f);
            }
        }
        let now = inner.clock.now_ns();
        if !chunk.is_empty() {
            let mut q = inner.queue.lock();
            for f in chunk.drain(..) {
                let (target, prio) = (f.target(), f.priority);
                results.push((q.offer(f, now), target, prio));
            }
        }
        let failed = counted + results.len() as u64;
        announce(inner, &mut results, failed);
        if filed {
            inner.filed.fetch_add(taken, Ordering::Release);
        }
    }
}

/// Counts and announces what offers did (`results`, drained), with
/// `failures` more failures counted: each incident opened or joined
/// counted, the recovery threads woken once when one was opened, each
/// overflow counted, and one event per result, in order.
fn announce(inner: &Inner, results: &mut Vec<(Offer, Target, Priority)>, failures: u64) {
    let (mut opened, mut overflowed) = (0usize, 0u64);
    {
        let mut tally = inner.tally.lock();
        tally.stats.failures += failures;
        for (r, _, prio) in results.iter() {
            match r {
                Offer::Opened(_) => {
                    tally.opened(*prio);
                    opened += 1;
                }
                Offer::Joined(_) => tally.stats.joined += 1,
                Offer::Overflow | Offer::Backlogged => overflowed += 1,
            }
        }
    }
    if opened > 0 {
        inner.dirty.store(true, Ordering::Relaxed);
        if opened == 1 {
            inner.work.notify_one();
        } else {
            inner.work.notify_all();
        }
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
}

/// Opens the incidents of the page backlog while the queue has room,
/// counting and announcing each.
pub(super) fn refill(inner: &Inner) {
    let mut filed = {
        let mut q = inner.queue.lock();
        if !q.has_backlog() || !q.has_room() {
            return;
        }
        q.refill(inner.clock.now_ns())
    };
    // Counted as failures when they were backlogged.
    announce(inner, &mut filed, 0);
    inner.dirty.store(true, Ordering::Relaxed);
}
