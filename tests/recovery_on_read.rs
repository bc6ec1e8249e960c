//! Goal: heal on read — a verified read through the manager's detector that
//! finds its page bad returns the page's good bytes, healed on the reader's
//! thread as one incident (diagnosed, verified, counted, announced), with
//! readers of the same page sharing that incident; Observe mode returns the
//! error and changes nothing; Approve mode asks first; the recovery threads
//! never heal on read.
//! Method: the manager over a `MemStore` with a mirror replica (both
//! checksum placements), pages damaged under the detector, read through it;
//! the bytes returned and the store's bytes compared with the model's (the
//! mirror's); incidents, stats and events checked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use selfheal::audit::EntryKind;
use selfheal::healer::{AttemptOutcome, Outcome, SkipReason};
use selfheal::recovery::ApprovalRequest;
use selfheal::testing::both_placements;
use selfheal::{Mode, PageId, RecoveryEvent};

mod recovery_common;
use recovery_common::*;

const IDLE: Duration = Duration::from_secs(20);

fn read(m: &selfheal::AutoRecoveryManager, p: u64) -> selfheal::Result<Vec<u8>> {
    let mut b = vec![0u8; PS];
    m.detector().read_verified(PageId(p), &mut b).map(|()| b)
}

#[test]
fn a_damaged_page_read_through_the_detector_comes_back_healed() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = rig(placement, 16, dir.path(), |c| c.heal_on_read(true));
        m.start().unwrap();
        let events = m.subscribe(64).unwrap();
        let model = bytes(mirror.as_ref(), 5);
        damage(&raw, 5);
        assert_ne!(bytes(raw.as_ref(), 5), model);
        let got = read(&m, 5).expect("the read heals the page and returns it");
        assert_eq!(got, model, "the model's bytes");
        assert_eq!(bytes(raw.as_ref(), 5), model, "healed in the store");
        // Nothing more to do in the background.
        assert!(m.wait_idle(IDLE));
        let incs = m.incidents();
        assert_eq!(incs.len(), 1, "{incs:#?}");
        assert_eq!(
            incs[0].outcome,
            Outcome::Healed {
                remedy: "repair-from-replicas".into()
            }
        );
        let s = m.stats();
        assert_eq!((s.detected, s.recovered, s.escalated), (1, 1, 0), "{s:?}");
        let seen: Vec<RecoveryEvent> = events.events().try_iter().collect();
        assert!(
            matches!(seen.first(), Some(RecoveryEvent::Opened { .. })),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .any(|e| matches!(e, RecoveryEvent::Healed { id, .. } if *id == incs[0].id)),
            "{seen:?}"
        );
        // Read again: clean, no new incident.
        assert_eq!(read(&m, 5).unwrap(), model);
        m.stop().unwrap();
        assert_eq!(m.stats().detected, 1);
    }
}

#[test]
fn the_close_is_recorded_off_the_reader_and_seen_at_once_by_the_api() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = rig(placement, 8, dir.path(), |c| c.heal_on_read(true));
        m.start().unwrap();
        let events = m.subscribe(64).unwrap();
        // Without a call into the manager, the dispatcher records the
        // close and announces it within its tick.
        let model = bytes(mirror.as_ref(), 3);
        damage(&raw, 3);
        assert_eq!(read(&m, 3).unwrap(), model);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let healed = std::iter::from_fn(|| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            events.events().recv_timeout(left).ok()
        })
        .find(|e| matches!(e, RecoveryEvent::Healed { .. }));
        assert!(healed.is_some(), "the Healed event follows the read");
        // `incidents` and `stats` record what is still to be recorded
        // before they answer: no wait needed.
        damage(&raw, 4);
        assert_eq!(read(&m, 4).unwrap(), bytes(mirror.as_ref(), 4));
        let incs = m.incidents();
        assert!(
            incs.iter()
                .any(|i| i.target == selfheal::Target::Page(PageId(4))
                    && matches!(i.outcome, Outcome::Healed { .. })),
            "{incs:#?}"
        );
        assert_eq!(m.stats().recovered, 2);
        m.stop().unwrap();
        // Recorded once each, also after stop.
        assert_eq!(m.stats().recovered, 2);
        assert_eq!(m.incidents().len(), 2);
    }
}

#[test]
fn a_close_left_for_later_is_recorded_by_stop_with_its_audit_records_in_order() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = rig(placement, 8, dir.path(), |c| c.heal_on_read(true));
        m.start().unwrap();
        damage(&raw, 6);
        assert_eq!(read(&m, 6).unwrap(), bytes(mirror.as_ref(), 6));
        // No call that records closes: `stop` must.
        m.stop().unwrap();
        let incs = m.incidents();
        assert_eq!(incs.len(), 1, "{incs:#?}");
        assert!(matches!(incs[0].outcome, Outcome::Healed { .. }));
        let log = m.audit_log().expect("the audit log is on by default");
        let recs = log
            .query(&selfheal::audit::AuditQuery::all().incident(incs[0].id))
            .unwrap();
        let kinds: Vec<EntryKind> = recs.iter().map(|r| r.entry.kind).collect();
        // Written ahead (detected … decided) before the repair acted, the
        // rest appended with the close: every step, in order, once.
        let pos = |k: EntryKind| kinds.iter().position(|x| *x == k);
        for k in [
            EntryKind::Detected,
            EntryKind::Diagnosed,
            EntryKind::Decided,
            EntryKind::Acted,
            EntryKind::Verified,
            EntryKind::Closed,
        ] {
            assert!(pos(k).is_some(), "{k:?} missing: {kinds:?}");
        }
        assert!(pos(EntryKind::Decided) < pos(EntryKind::Acted), "{kinds:?}");
        assert!(pos(EntryKind::Acted) < pos(EntryKind::Closed), "{kinds:?}");
        assert_eq!(
            kinds.iter().filter(|k| **k == EntryKind::Closed).count(),
            1,
            "{kinds:?}"
        );
        let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }
}

#[test]
fn readers_of_one_damaged_page_share_its_incident() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = rig(placement, 16, dir.path(), |c| c.heal_on_read(true));
        m.start().unwrap();
        let model = bytes(mirror.as_ref(), 7);
        damage(&raw, 7);
        let m = Arc::new(m);
        let start = Arc::new(Barrier::new(4));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (m, start) = (m.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    read(&m, 7)
                })
            })
            .collect();
        for r in readers {
            assert_eq!(
                r.join().unwrap().expect("every reader gets the page"),
                model
            );
        }
        assert!(m.wait_idle(IDLE));
        let incs = m.incidents();
        assert_eq!(incs.len(), 1, "one incident for the page: {incs:#?}");
        assert!(matches!(incs[0].outcome, Outcome::Healed { .. }));
        assert_eq!(m.stats().recovered, 1);
        m.stop().unwrap();
    }
}

#[test]
fn observe_mode_returns_the_error_and_changes_nothing() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, _mirror, m) = rig(placement, 8, dir.path(), |c| {
            c.heal_on_read(true).mode(Mode::Observe)
        });
        damage(&raw, 2);
        let before = all_bytes(raw.as_ref());
        m.start().unwrap();
        let err = read(&m, 2).unwrap_err();
        assert!(err.is_corruption(), "{err}");
        assert!(m.wait_idle(IDLE));
        assert_eq!(all_bytes(raw.as_ref()), before, "the store is unchanged");
        let incs = m.incidents();
        assert_eq!(incs.len(), 1);
        assert_eq!(incs[0].outcome, Outcome::Observed);
        assert!(read(&m, 2).is_err(), "still refused");
        assert_eq!(all_bytes(raw.as_ref()), before);
        m.stop().unwrap();
    }
}

#[test]
fn approve_mode_asks_before_healing_on_read() {
    for (_, placement) in both_placements(PS) {
        for approve in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let asked = Arc::new(AtomicUsize::new(0));
            let a2 = asked.clone();
            let (raw, mirror, m) = rig(placement.clone(), 8, dir.path(), move |c| {
                c.heal_on_read(true).mode(Mode::Approve).approval(
                    Arc::new(move |r: &ApprovalRequest| {
                        a2.fetch_add(1, Ordering::SeqCst);
                        approve && r.remedy == "repair-from-replicas"
                    }),
                    Duration::from_secs(5),
                )
            });
            damage(&raw, 4);
            let before = all_bytes(raw.as_ref());
            m.start().unwrap();
            let got = read(&m, 4);
            assert!(asked.load(Ordering::SeqCst) >= 1, "the host was asked");
            if approve {
                assert_eq!(got.unwrap(), bytes(mirror.as_ref(), 4));
            } else {
                assert!(got.unwrap_err().is_corruption());
                assert_eq!(all_bytes(raw.as_ref()), before, "nothing changed");
                let incs = m.incidents();
                assert_eq!(incs[0].outcome, Outcome::Escalated);
                assert!(incs[0]
                    .attempts
                    .iter()
                    .all(|a| a.outcome == AttemptOutcome::Skipped(SkipReason::NotApproved)));
            }
            assert!(m.wait_idle(IDLE));
            m.stop().unwrap();
        }
    }
}

/// With heal on read off, the read returns its error and the page is healed
/// in the background.
#[test]
fn heal_on_read_off_leaves_it_to_the_recovery_threads() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = rig(placement, 8, dir.path(), |c| c.heal_on_read(false));
        m.start().unwrap();
        damage(&raw, 3);
        read_finds(&m, 3);
        assert!(m.wait_idle(IDLE));
        assert_eq!(bytes(raw.as_ref(), 3), bytes(mirror.as_ref(), 3));
        assert_eq!(m.stats().recovered, 1);
        m.stop().unwrap();
    }
}

/// The replica reads the page while the incident is diagnosed and planned,
/// not after: the approval (asked after the plan, before the repair, while
/// the reader waits) sees the replica's read already made, and the repair
/// takes that copy instead of reading again.
#[test]
fn the_replica_reads_the_page_before_the_repair_asks_and_only_once() {
    use selfheal::testing::FaultyReplica;
    use selfheal::{PageStore, RecoveryConfig, StoreReplica};
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let raw = Arc::new(selfheal::MemStore::new(PS, 8).unwrap());
        let mirror = Arc::new(selfheal::MemStore::new(PS, 8).unwrap());
        let replica = Arc::new(FaultyReplica::new(Arc::new(StoreReplica::new(
            "mirror",
            mirror.clone(),
        ))));
        let seen = Arc::new(AtomicUsize::new(usize::MAX));
        let (r2, s2) = (replica.clone(), seen.clone());
        let m = RecoveryConfig::new(raw.clone(), dir.path())
            .placement(placement)
            .replica(replica.clone())
            .without_scrub()
            .heal_on_read(true)
            .mode(Mode::Approve)
            .approval(
                Arc::new(move |_: &ApprovalRequest| {
                    // The probe sent ahead runs on the replica's helper
                    // thread: give it time, then record what it did.
                    let until = std::time::Instant::now() + Duration::from_secs(5);
                    while r2.reads() == 0 && std::time::Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    s2.store(r2.reads() as usize, Ordering::SeqCst);
                    true
                }),
                Duration::from_secs(10),
            )
            .build()
            .unwrap();
        for p in 0..8 {
            m.detector()
                .write_sealed(PageId(p), &mut page(p as u8 + 1))
                .unwrap();
            mirror
                .write_page(PageId(p), &bytes(raw.as_ref(), p))
                .unwrap();
        }
        m.start().unwrap();
        damage(&raw, 2);
        assert_eq!(read(&m, 2).unwrap(), bytes(mirror.as_ref(), 2));
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1,
            "the replica had read the page when the host was asked"
        );
        assert_eq!(replica.reads(), 1, "the repair took that copy");
        assert!(m.wait_idle(IDLE));
        m.stop().unwrap();
    }
}
