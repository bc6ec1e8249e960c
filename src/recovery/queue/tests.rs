//! Unit tests of the incident queue: joining, urgency with aging, overflow into the backlog and the held failures, batches, deferral and the RTO count, by example and by property (proptest).

use super::*;
use crate::types::{FailureKind, PageId, Source};
use proptest::prelude::*;
use std::sync::Arc;

fn page(p: u64) -> Failure {
    Failure::new(
        Source::Scrubber,
        FailureKind::CorruptPage { page: PageId(p) },
        "x",
        0,
    )
}

fn metric(name: &str, kind: u8) -> Failure {
    let metric: Arc<str> = Arc::from(name);
    let k = match kind {
        0 => FailureKind::HealthCritical { metric },
        1 => FailureKind::HealthDegraded { metric },
        _ => FailureKind::Anomaly { metric },
    };
    Failure::new(Source::HealthMonitor, k, "x", 0)
}

#[test]
fn a_repeat_report_joins_and_may_raise_the_priority() {
    let mut q = IncidentQueue::new(8, 1_000, 1);
    assert_eq!(q.offer(metric("m", 2), 0), Offer::Opened(1));
    assert_eq!(q.offer(metric("m", 0), 0), Offer::Joined(1));
    assert_eq!(q.len(), 1);
    let t = q.pop().unwrap();
    assert_eq!((t.id, t.joined.len()), (1, 1));
    assert_eq!(
        q.offer(metric("m", 1), 0),
        Offer::Joined(1),
        "joins while running"
    );
    assert_eq!(q.finish(&t.target).len(), 1);
    assert!(q.pop().is_none() && q.len() == 0);
}

#[test]
fn most_urgent_first_and_aging_prevents_starvation() {
    let mut q = IncidentQueue::new(8, 1_000, 1);
    q.offer(metric("low", 2), 0); // P3 at t=0
    q.offer(page(1), 0); // P0
    assert_eq!(q.pop().unwrap().target, Target::Page(PageId(1)));
    // The P3 queued at 0 competes as a P0 queued at 3000: a P0 queued
    // at 3000 ties and wins (more urgent), one queued later loses.
    q.offer(page(2), 3_000);
    let first = q.pop().unwrap();
    assert_eq!(
        first.target,
        Target::Page(PageId(2)),
        "tie: the more urgent"
    );
    q.offer(page(3), 3_001);
    assert_eq!(
        q.pop().unwrap().target,
        Target::Metric(Arc::from("low")),
        "a P0 queued after the P3's virtual time waits"
    );
    assert_eq!(q.pop().unwrap().target, Target::Page(PageId(3)));
}

#[test]
fn overflow_is_counted_and_marks_a_rescan_for_pages() {
    let mut q = IncidentQueue::new(2, 1_000, 1);
    q.offer(page(1), 0);
    q.offer(metric("m", 0), 0);
    assert_eq!(q.offer(metric("n", 0), 0), Offer::Backlogged);
    assert!(!q.rescan_due);
    assert_eq!(q.offer(page(2), 0), Offer::Overflow);
    assert!(q.rescan_due);
    assert_eq!(q.overflowed, 2);
    assert_eq!(q.offer(page(1), 0), Offer::Joined(1), "joins still fit");
}

#[test]
fn pages_beyond_the_bound_wait_in_the_backlog_then_beyond_it_for_a_rescan() {
    let mut q = IncidentQueue::new(2, 1_000, 1).with_backlog(2);
    q.offer(page(1), 0);
    q.offer(page(2), 0);
    assert_eq!(q.offer(page(3), 0), Offer::Backlogged);
    assert_eq!(
        q.offer(metric("m", 0), 0),
        Offer::Backlogged,
        "held apart from the pages"
    );
    assert_eq!(q.offer(page(4), 0), Offer::Backlogged);
    assert!(!q.rescan_due, "every page is held");
    assert_eq!(q.offer(page(5), 0), Offer::Overflow);
    assert!(q.rescan_due, "beyond the backlog: a rescan");
    assert_eq!(q.overflowed, 4);
    assert!(q.refill(1).is_empty(), "no room yet");
    let t = q.pop().unwrap();
    q.finish(&t.target);
    assert!(!q.is_idle());
    let r = q.refill(2);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, Offer::Opened(3));
    assert_eq!(
        r[0].1,
        metric("m", 0).target(),
        "a held non-page failure first"
    );
    let t = q.pop().unwrap();
    q.finish(&t.target);
    let r = q.refill(2);
    assert_eq!(r[0].0, Offer::Opened(4));
    assert_eq!(r[0].1, Target::Page(PageId(3)), "then pages, oldest first");
    assert!(q.has_backlog() && q.len() == 2);
    while let Some(t) = q.pop() {
        q.finish(&t.target);
        q.refill(3);
    }
    assert!(!q.has_backlog() && q.is_idle());
}

/// A non-page failure is reported once per episode (a component dies
/// once): beyond the bound it is held, one per target, and opens its
/// incident when room opens, instead of being lost.
#[test]
fn non_page_overflow_is_held_per_target_and_opened_when_room_opens() {
    let mut q = IncidentQueue::new(1, 1_000, 1);
    q.offer(page(1), 0);
    let dead = |c: &str| {
        Failure::new(
            Source::CrashDetector,
            FailureKind::ComponentDead {
                component: Arc::from(c),
            },
            "no heartbeat",
            0,
        )
    };
    assert_eq!(q.offer(dead("wal"), 0), Offer::Backlogged);
    assert_eq!(q.offer(metric("m", 2), 0), Offer::Backlogged);
    assert_eq!(
        q.offer(metric("m", 0), 0),
        Offer::Backlogged,
        "a repeat coalesces"
    );
    assert_eq!(q.overflowed, 3);
    assert!(!q.rescan_due && q.has_backlog() && !q.is_idle());
    let t = q.pop().unwrap();
    q.finish(&t.target);
    let r = q.refill(1);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1, dead("wal").target(), "oldest first");
    assert!(matches!(r[0].0, Offer::Opened(_)));
    let t = q.pop().unwrap();
    q.finish(&t.target);
    let r = q.refill(2);
    assert_eq!(r[0].1, metric("m", 0).target());
    assert_eq!(r[0].2, Priority::P1, "the repeat raised its priority");
    let t = q.pop().unwrap();
    q.finish(&t.target);
    assert!(q.is_idle() && !q.has_backlog());
    // Bounded: beyond MAX_HELD targets, a failure is counted and dropped.
    q.offer(page(1), 0);
    for i in 0..MAX_HELD {
        assert_eq!(q.offer(dead(&format!("c{i}")), 0), Offer::Backlogged);
    }
    assert_eq!(q.offer(dead("one-too-many"), 0), Offer::Overflow);
    assert_eq!(q.offer(dead("c0"), 0), Offer::Backlogged, "still coalesces");
}

#[test]
fn incidents_open_longer_than_their_rto_are_counted() {
    use std::time::Duration;
    let rto = [1_000, 2_000, 3_000, 4_000].map(Duration::from_nanos);
    let mut q = IncidentQueue::new(8, 1_000, 1);
    q.offer(page(1), 0); // P0, detected at 0
    q.offer(metric("m", 2), 0); // P3
    assert_eq!(q.past_rto(1_000, &rto), 0, "at its RTO is not past it");
    assert_eq!(q.past_rto(1_001, &rto), 1);
    assert_eq!(q.past_rto(4_001, &rto), 2);
    let t = q.pop().unwrap();
    q.finish(&t.target);
    assert_eq!(
        q.past_rto(4_001, &rto),
        1,
        "a closed one is judged by its close"
    );
}

#[test]
fn an_incident_whose_thread_died_is_queued_again_until_the_bound() {
    let mut q = IncidentQueue::new(4, 1_000, 1);
    q.offer(page(1), 0);
    q.offer(page(1), 0);
    let t = q.pop().unwrap();
    assert_eq!(t.joined.len(), 1);
    q.offer(page(1), 5);
    assert_eq!(q.requeue(&t.target, t.joined.clone(), 2), Some(1));
    let again = q.pop().unwrap();
    assert_eq!(again.id, t.id);
    assert_eq!(
        again.joined.len(),
        2,
        "what it had and what joined meanwhile"
    );
    // The second death: kept running for the caller to close.
    assert_eq!(q.requeue(&t.target, again.joined, 2), Some(2));
    assert!(q.pop().is_none());
    assert!(!q.is_idle());
    assert!(q.finish(&t.target).is_empty());
    assert_eq!(q.requeue(&t.target, Vec::new(), 2), None);
}

#[test]
fn a_batch_takes_pages_in_serving_order_and_stops_at_anything_else() {
    let mut q = IncidentQueue::new(16, 1_000, 1);
    for p in 0..4 {
        q.offer(page(p), 0);
    }
    q.offer(metric("disk", 0), 1);
    q.offer(page(9), 2);
    let b = q.pop_batch(3);
    assert_eq!(b.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    let b = q.pop_batch(8);
    assert_eq!(b.iter().map(|t| t.id).collect::<Vec<_>>(), vec![4, 6]);
    let b = q.pop_batch(8);
    assert_eq!(
        b.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![5],
        "a metric alone"
    );
    // A page that killed a thread is served alone.
    q.offer(page(10), 3);
    let t = q.pop_batch(8).remove(0);
    q.requeue(&t.target, Vec::new(), 2);
    q.offer(page(11), 4);
    assert_eq!(
        q.pop_batch(8).iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![7]
    );
    assert_eq!(
        q.pop_batch(8).iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![8]
    );
    assert!(q.pop_batch(8).is_empty());
}

#[test]
fn deferred_incidents_come_back_when_due() {
    let mut q = IncidentQueue::new(4, 1_000, 7);
    q.offer(page(1), 0);
    let t = q.pop().unwrap();
    assert_eq!(t.id, 7);
    q.defer(&t.target, 500);
    assert!(q.is_idle() && q.pop().is_none());
    assert_eq!(q.promote(499), 0);
    assert_eq!(q.promote(500), 1);
    assert_eq!(q.pop().unwrap().id, 7);
}

proptest! {
    /// Incidents deferred together come back oldest first, whatever
    /// order they were deferred in and the map holds them in: a run on a
    /// given clock queues them the same way every time.
    #[test]
    fn deferred_incidents_come_back_oldest_first(
        pages in proptest::collection::btree_set(0u64..1_000, 1..24),
        shuffle in any::<u64>(),
    ) {
        let mut q = IncidentQueue::new(64, 1_000, 1);
        let mut taken = Vec::new();
        for &p in &pages {
            q.offer(page(p), 0);
            taken.push(q.pop().unwrap());
        }
        // Deferred in an order of the seed's choosing.
        let n = taken.len();
        for i in 0..n {
            let j = (shuffle as usize).wrapping_mul(i + 7) % n;
            taken.swap(i, j);
        }
        for t in &taken {
            q.defer(&t.target, 100);
        }
        prop_assert_eq!(q.promote(100), n);
        let ids: Vec<u64> = std::iter::from_fn(|| q.pop().map(|t| t.id)).collect();
        let mut want = ids.clone();
        want.sort_unstable();
        prop_assert_eq!(ids, want);
    }
}

proptest! {
    /// Whatever arrives, each target has at most one open incident,
    /// the bound holds, and every failure is opened, joined or counted.
    #[test]
    fn one_incident_per_target_within_the_bound(
        ops in proptest::collection::vec((0u64..12, 0u8..3, any::<bool>()), 1..200),
        cap in 1usize..8,
    ) {
        let mut q = IncidentQueue::new(cap, 10, 1);
        let (mut opened, mut joined, mut over) = (0u64, 0u64, 0u64);
        let mut now = 0;
        for (t, kind, take) in ops {
            now += 3;
            let f = if kind == 0 { page(t) } else { metric(&t.to_string(), kind) };
            match q.offer(f, now) {
                Offer::Opened(_) => opened += 1,
                Offer::Joined(_) => joined += 1,
                Offer::Overflow | Offer::Backlogged => over += 1,
            }
            prop_assert!(q.len() <= cap);
            if take {
                if let Some(x) = q.pop() {
                    q.finish(&x.target);
                }
            }
        }
        prop_assert_eq!(over, q.overflowed);
        prop_assert!(opened + joined + over > 0);
        let mut seen = std::collections::HashSet::new();
        while let Some(x) = q.pop() {
            prop_assert!(seen.insert(x.target.clone()));
            q.finish(&x.target);
        }
        prop_assert_eq!(q.len(), 0);
    }
}
