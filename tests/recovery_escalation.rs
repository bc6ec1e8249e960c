//! Goal: a person is paged once per problem, not once per read. Method: an
//! irreparable page (its replica damaged too, no snapshot) read again and
//! again through the manager under a `ManualClock`; count escalation
//! callbacks and `Escalated` events, then move the clock past the
//! re-escalation interval, then rewrite the page and damage it anew.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use selfheal::healer::HealerConfig;
use selfheal::testing::both_placements;
use selfheal::{Clock, ManualClock, PageId, RecoveryEvent, Target};

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
    for (_, placement) in both_placements(PS) {
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

/// A manager over the rig's stores and directory again, as after a
/// restart, counting escalation callbacks of page 3 in `calls`.
fn rebuild(
    placement: &selfheal::ChecksumPlacement,
    raw: &Arc<selfheal::MemStore>,
    mirror: &Arc<selfheal::MemStore>,
    dir: &std::path::Path,
    clock: &Arc<ManualClock>,
    calls: &Arc<AtomicUsize>,
) -> selfheal::AutoRecoveryManager {
    let c = calls.clone();
    let healer = HealerConfig::new().on_escalation(Arc::new(move |r| {
        if r.target == Target::Page(PageId(3)) {
            c.fetch_add(1, Ordering::SeqCst);
        }
    }));
    selfheal::RecoveryConfig::new(raw.clone(), dir)
        .placement(placement.clone())
        .replica(Arc::new(selfheal::StoreReplica::new(
            "mirror",
            mirror.clone(),
        )))
        .without_scrub()
        .heal_on_read(false)
        .clock(clock.clone())
        .healer(healer)
        .reescalate_after(INTERVAL)
        .build()
        .unwrap()
}

/// Goal: an escalation survives a restart. Method: escalate an irreparable
/// page, drop the manager without a stop, build a new one on the same
/// store and directory: the page stays fenced and joins the old
/// escalation (no second callback or `Escalated` event), the host lists
/// the incident with its report, acknowledges it (saved: a third manager
/// does not list it), and the page's next report is escalated anew.
#[test]
fn an_escalation_survives_a_restart_until_the_host_acknowledges_it() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new());
        clock.advance(Duration::from_secs(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let healer = HealerConfig::new().on_escalation(Arc::new(move |r| {
            if r.target == Target::Page(PageId(3)) {
                c.fetch_add(1, Ordering::SeqCst);
            }
        }));
        let (raw, mirror, m) = rig(placement.clone(), 8, dir.path(), |cfg| {
            cfg.heal_on_read(false)
                .clock(clock.clone())
                .healer(healer)
                .reescalate_after(INTERVAL)
        });
        m.start().unwrap();
        damage(&raw, 3);
        damage(&mirror, 3);
        assert!(read(&m, 3).is_err());
        assert!(m.wait_idle(IDLE));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let before = m.escalated();
        let e = before
            .iter()
            .find(|e| e.target() == Target::Page(PageId(3)))
            .unwrap_or_else(|| panic!("page 3 is not listed: {before:#?}"));
        let id = e.id;
        assert_eq!(e.pages, vec![PageId(3)]);
        assert!(!e.previous_run);
        assert!(
            e.report.contains(&format!("incident {id} ")),
            "{}",
            e.report
        );
        assert!(!e.reason.is_empty());
        let report = e.report.clone();
        drop(m); // no stop: as after a crash
        clock.advance(Duration::from_secs(60));

        let calls2 = Arc::new(AtomicUsize::new(0));
        let m = rebuild(&placement, &raw, &mirror, dir.path(), &clock, &calls2);
        let events = m.subscribe(4096).unwrap();
        let r = m.start().unwrap();
        assert!(r.escalations_warning.is_none(), "{r:?}");
        assert!(r.escalations_restored >= 1, "{r:?}");
        assert!(r.suspects_restored.contains(&PageId(3)), "{r:?}");
        for _ in 0..5 {
            assert!(read(&m, 3).is_err(), "still irreparable, still fenced");
            assert!(m.wait_idle(IDLE));
            clock.advance(Duration::from_secs(1));
        }
        assert_eq!(calls2.load(Ordering::SeqCst), 0, "not escalated again");
        let seen: Vec<RecoveryEvent> = events.events().try_iter().collect();
        assert!(
            !seen
                .iter()
                .any(|e| matches!(e, RecoveryEvent::Escalated { .. })),
            "{seen:#?}"
        );
        assert!(
            seen.iter()
                .any(|e| matches!(e, RecoveryEvent::Joined { id: j, .. } if *j == id)),
            "{seen:#?}"
        );
        let s = m.stats();
        assert_eq!(s.escalated, 0, "{s:?}");
        let after = m.escalated();
        let e = after.iter().find(|e| e.id == id).unwrap();
        assert!(e.previous_run);
        assert_eq!(e.report, report);
        assert_eq!(e.pages, vec![PageId(3)]);
        assert!(e.joined >= 1, "{e:?}");
        // Rebased onto this run's clock (the downtime is not counted, as
        // for open incidents): escalated before the five reads.
        assert!(e.escalated_at_ns + 5_000_000_000 <= clock.now_ns());

        // Acknowledged: no longer listed, and the page is tried again.
        assert!(m.acknowledge_escalation(id).unwrap());
        assert!(!m.acknowledge_escalation(id).unwrap());
        assert!(m.escalated().iter().all(|e| e.id != id));
        assert!(read(&m, 3).is_err());
        assert!(m.wait_idle(IDLE));
        assert_eq!(calls2.load(Ordering::SeqCst), 1, "a new escalation");
        let new_id = m
            .escalated()
            .iter()
            .find(|e| e.target() == Target::Page(PageId(3)))
            .map(|e| e.id)
            .unwrap();
        assert!(new_id > id, "ids are never reused: {new_id} after {id}");
        m.stop().unwrap();
        drop(m);

        let calls3 = Arc::new(AtomicUsize::new(0));
        let m = rebuild(&placement, &raw, &mirror, dir.path(), &clock, &calls3);
        m.start().unwrap();
        let listed: Vec<u64> = m.escalated().iter().map(|e| e.id).collect();
        assert!(
            listed.contains(&new_id) && !listed.contains(&id),
            "{listed:?}"
        );
        m.stop().unwrap();
    }
}
