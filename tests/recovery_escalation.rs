//! Goal: a person is paged once per problem, not once per read. Method: an
//! irreparable page (its replica damaged too, no snapshot) read again and
//! again through the manager under a `ManualClock`; count escalation
//! callbacks and `Escalated` events, then move the clock past the
//! re-escalation interval, then rewrite the page and damage it anew.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use selfheal::healer::HealerConfig;
use selfheal::{ManualClock, PageId, RecoveryEvent, Target};

mod recovery_common;
use recovery_common::*;

const IDLE: Duration = Duration::from_secs(20);
const INTERVAL: Duration = Duration::from_secs(600);

fn read(m: &selfheal::AutoRecoveryManager, p: u64) -> selfheal::Result<Vec<u8>> {
    let mut b = vec![0u8; PS];
    m.detector().read_verified(PageId(p), &mut b).map(|()| b)
}

/// `Escalated` events of incidents about page 3 (the repairer also
/// reports the replica whose copy failed: another target, its own page).
fn escalations(m: &selfheal::AutoRecoveryManager, seen: &[RecoveryEvent]) -> usize {
    let of_page: Vec<u64> = m
        .incidents()
        .iter()
        .filter(|i| i.target == Target::Page(PageId(3)))
        .map(|i| i.id)
        .collect();
    seen.iter()
        .filter(|e| matches!(e, RecoveryEvent::Escalated { id, .. } if of_page.contains(id)))
        .count()
}

#[test]
fn an_irreparable_page_read_again_and_again_is_escalated_once_per_interval_and_episode() {
    for placement in placements() {
        for heal_on_read in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let clock = Arc::new(ManualClock::new());
            let calls = Arc::new(AtomicUsize::new(0));
            let c = calls.clone();
            let healer = HealerConfig::new().on_escalation(Arc::new(move |r| {
                if r.target == Target::Page(PageId(3)) {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            }));
            let (raw, mirror, m) = rig(placement.clone(), 8, dir.path(), |cfg| {
                cfg.heal_on_read(heal_on_read)
                    .clock(clock.clone())
                    .healer(healer)
                    .reescalate_after(INTERVAL)
            });
            m.start().unwrap();
            let events = m.subscribe(4096).unwrap();
            // The replica's copy is bad too: nothing can heal page 3.
            damage(&raw, 3);
            damage(&mirror, 3);
            for _ in 0..100 {
                assert!(read(&m, 3).is_err(), "an irreparable page never reads");
                assert!(m.wait_idle(IDLE));
                clock.advance(Duration::from_millis(600));
            }
            let seen: Vec<RecoveryEvent> = events.events().try_iter().collect();
            assert_eq!(calls.load(Ordering::SeqCst), 1, "one callback in 60 s");
            assert_eq!(escalations(&m, &seen), 1, "one Escalated event: {seen:#?}");
            assert_eq!(m.stats().escalated, 1, "{:?}", m.stats());

            // Past the interval: one more page to a person.
            clock.advance(INTERVAL);
            for _ in 0..10 {
                assert!(read(&m, 3).is_err());
                assert!(m.wait_idle(IDLE));
                clock.advance(Duration::from_millis(600));
            }
            let seen: Vec<RecoveryEvent> = events.events().try_iter().collect();
            assert_eq!(
                calls.load(Ordering::SeqCst),
                2,
                "one more after the interval"
            );
            assert_eq!(escalations(&m, &seen), 1, "{seen:#?}");

            // The host rewrites the page: its old fault is over. A new fault
            // is a new incident, escalated at once.
            m.detector()
                .write_sealed(PageId(3), &mut page(0x33))
                .unwrap();
            assert_eq!(read(&m, 3).unwrap(), bytes(raw.as_ref(), 3));
            damage(&raw, 3);
            clock.advance(Duration::from_secs(30));
            assert!(read(&m, 3).is_err());
            assert!(m.wait_idle(IDLE));
            let seen: Vec<RecoveryEvent> = events.events().try_iter().collect();
            assert_eq!(
                calls.load(Ordering::SeqCst),
                3,
                "a new fault, a new page ({heal_on_read})"
            );
            assert_eq!(escalations(&m, &seen), 1, "{seen:#?}");
            m.stop().unwrap();
        }
    }
}
