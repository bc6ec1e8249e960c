//! Goal: page failures of one diagnosis that arrive together are healed as
//! ONE page-set incident — one diagnosis, one repair of every page, one
//! verification pass, one audit record per step listing the pages — with
//! every page's outcome kept: a page the set could not heal goes on in its
//! own incident and is escalated with its own report; the set survives a
//! restart (its pages' incidents are resumed and healed as a set again).
//! Method: a manager whose incidents are left open at stop (pages bad
//! again within their cooldown on a manual clock that does not move), so
//! the next run starts with every page queued at once and the recovery
//! thread takes them in one batch; under both checksum placements.

mod recovery_common;

use std::sync::Arc;
use std::time::Duration;

use recovery_common::*;
use selfheal::audit::{AuditQuery, EntryKind};
use selfheal::healer::{AttemptOutcome, Outcome};
use selfheal::testing::both_placements;
use selfheal::{
    AutoRecoveryManager, ChecksumPlacement, ManualClock, MemStore, PageId, RecoveryConfig,
    StoreReplica, Target,
};

const PAGES: u64 = 8;
const IDLE: Duration = Duration::from_secs(30);

/// Run one: every page healed once, then bad again within its cooldown
/// (deferred, left open at stop); `bad_mirror` also spoils that page's
/// replica copy. Returns the stores and run two's manager, not started.
fn left_open(
    placement: ChecksumPlacement,
    dir: &std::path::Path,
    bad_mirror: Option<u64>,
) -> (Arc<MemStore>, Arc<MemStore>, AutoRecoveryManager) {
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(5));
    let c = clock.clone();
    let (raw, mirror, m) = rig(placement.clone(), PAGES, dir, move |cfg| {
        cfg.clock(Arc::new(c))
    });
    m.start().unwrap();
    for p in 0..PAGES {
        damage(&raw, p);
        read_finds(&m, p);
    }
    assert!(m.wait_idle(IDLE));
    assert_eq!(m.stats().pages_healed, PAGES, "{:?}", m.stats());
    for p in 0..PAGES {
        damage(&raw, p);
        read_finds(&m, p);
    }
    if let Some(p) = bad_mirror {
        damage(&mirror, p);
    }
    assert!(m.wait_idle(IDLE));
    assert_eq!(m.stats().open, PAGES, "{:?}", m.stats());
    m.stop().unwrap();
    drop(m);
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(100));
    let m = RecoveryConfig::new(raw.clone(), dir)
        .placement(placement)
        .replica(Arc::new(StoreReplica::new("mirror", mirror.clone())))
        .without_scrub()
        .clock(Arc::new(clock))
        .build()
        .unwrap();
    (raw, mirror, m)
}

#[test]
fn pages_left_open_at_a_restart_are_resumed_and_healed_as_one_page_set() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = left_open(placement, dir.path(), None);
        let events = m.subscribe(256).unwrap();
        let r = m.start().unwrap();
        assert_eq!(r.incidents_resumed, PAGES);
        assert!(m.wait_idle(IDLE));
        for p in 0..PAGES {
            assert_eq!(
                bytes(raw.as_ref(), p),
                bytes(mirror.as_ref(), p),
                "page {p}"
            );
        }
        let incs = m.incidents();
        assert_eq!(incs.len(), 1, "one incident for the set: {incs:#?}");
        let set = &incs[0];
        assert!(matches!(set.outcome, Outcome::Healed { .. }), "{set:#?}");
        let mut pages = set.pages.clone();
        pages.sort_unstable();
        assert_eq!(pages, (0..PAGES).map(PageId).collect::<Vec<_>>());
        assert_eq!(set.attempts.len(), 1, "one repair of every page");
        let s = m.stats();
        assert_eq!(
            (s.recovered, s.pages_healed, s.merged),
            (1, PAGES, PAGES),
            "{s:?}"
        );
        assert_eq!(s.open, 0, "{s:?}");
        // Every resumed incident is announced as merged into the set.
        let merged = events
            .events()
            .try_iter()
            .filter(
                |e| matches!(e, selfheal::RecoveryEvent::Merged { into, .. } if *into == set.id),
            )
            .count();
        assert_eq!(merged as u64, PAGES);
        // One audit record of the repair, listing the pages.
        let acted = m
            .audit_log()
            .unwrap()
            .query(&AuditQuery::all().incident(set.id))
            .unwrap()
            .into_iter()
            .filter(|r| r.entry.kind == EntryKind::Acted)
            .collect::<Vec<_>>();
        assert_eq!(acted.len(), 1, "{acted:#?}");
        for p in 0..PAGES {
            assert!(
                acted[0].entry.text.contains(&format!("{}", PageId(p))),
                "page {p} in {:?}",
                acted[0].entry.text
            );
        }
        m.stop().unwrap();
    }
}

#[test]
fn a_page_the_set_cannot_heal_is_split_out_and_escalated_with_its_own_report() {
    const BAD: u64 = 3;
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = left_open(placement, dir.path(), Some(BAD));
        m.start().unwrap();
        assert!(m.wait_idle(IDLE));
        for p in (0..PAGES).filter(|&p| p != BAD) {
            assert_eq!(
                bytes(raw.as_ref(), p),
                bytes(mirror.as_ref(), p),
                "page {p}"
            );
        }
        let incs = m.incidents();
        assert_eq!(incs.len(), 2, "the set and the page split out: {incs:#?}");
        let set = incs.iter().find(|i| !i.pages.is_empty()).unwrap();
        assert!(matches!(set.outcome, Outcome::Healed { .. }), "{set:#?}");
        assert_eq!(set.pages.len() as u64, PAGES - 1);
        assert!(!set.pages.contains(&PageId(BAD)));
        assert_eq!(set.target, Target::Page(set.pages[0]), "a page it healed");
        let own = incs.iter().find(|i| i.pages.is_empty()).unwrap();
        assert_eq!(own.target, Target::Page(PageId(BAD)));
        assert_eq!(own.outcome, Outcome::Escalated, "{own:#?}");
        assert_ne!(own.id, set.id);
        let report = own.escalation.as_ref().expect("one report to the host");
        assert_eq!(report.target, Target::Page(PageId(BAD)));
        assert!(
            matches!(
                report.attempts.first().map(|a| (&*a.remedy, &a.outcome)),
                Some(("repair-from-replicas", AttemptOutcome::Failed { .. }))
            ),
            "the set's repair of the page is its first attempt: {report}"
        );
        let s = m.stats();
        assert_eq!(
            (s.recovered, s.pages_healed, s.escalated, s.merged),
            (1, PAGES - 1, 1, PAGES - 1),
            "{s:?}"
        );
        // The page stays fenced: never served.
        let mut b = vec![0u8; PS];
        assert!(m.detector().read_verified(PageId(BAD), &mut b).is_err());
        m.stop().unwrap();
    }
}
