//! Goal: the manager's step mode — `RecoveryConfig::stepped(true)` starts
//! no thread, and `step()` on the caller's thread files the bus and heals
//! every ready incident: a corrupt page found by a read is healed by the
//! next step; an incident deferred by the healer's cooldown is healed by
//! the first step after the manual clock passes it; the same sequence run
//! twice gives identical incidents and timelines; a panic while healing is
//! caught, its incident retried (escalated once it has cost two); a
//! threaded component in step mode is a typed configuration error; stop
//! works.
//! Method: the manager over a `MemStore` with a mirror replica (both
//! checksum placements), a `ManualClock`, pages damaged behind the
//! detector and found by verified reads; bytes compared with the mirror's,
//! incidents, stats and step reports checked; the process's thread names
//! read from /proc.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use selfheal::healer::Outcome;
use selfheal::testing::both_placements;
use selfheal::{
    ChecksumPlacement, Error, Failure, FailureKind, HealthConfig, ManualClock, MemStore, PageId,
    PageStore, RecoveryConfig, ScrubConfig, Source, StoreReplica, Target,
};

mod recovery_common;
use recovery_common::*;

/// A step-mode rig on a manual clock (at 5 s, so cadences are not all due
/// at zero), as `rig` but with the mirror called inline (the documented
/// condition for a deterministic run).
fn stepped_rig(
    placement: ChecksumPlacement,
    pages: u64,
    dir: &std::path::Path,
) -> (
    Arc<MemStore>,
    Arc<MemStore>,
    selfheal::AutoRecoveryManager,
    ManualClock,
) {
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(5));
    let raw = Arc::new(MemStore::new(PS, pages).unwrap());
    let mirror = Arc::new(MemStore::new(PS, pages).unwrap());
    let m = stepped_config(&raw, &mirror, placement, &clock, dir)
        .build()
        .unwrap();
    for p in 0..pages {
        m.detector()
            .write_sealed(PageId(p), &mut page((p % 250) as u8 + 1))
            .unwrap();
        mirror
            .write_page(PageId(p), &bytes(raw.as_ref(), p))
            .unwrap();
    }
    (raw, mirror, m, clock)
}

/// The configuration of [`stepped_rig`]'s manager over `raw`, with
/// `mirror` as its replica.
fn stepped_config(
    raw: &Arc<MemStore>,
    mirror: &Arc<MemStore>,
    placement: ChecksumPlacement,
    clock: &ManualClock,
    dir: &std::path::Path,
) -> RecoveryConfig {
    // Called inline: no helper thread, no real-time deadline.
    let replica = StoreReplica::new("mirror", mirror.clone()).call_inline(true);
    RecoveryConfig::new(raw.clone(), dir)
        .placement(placement)
        .replica(Arc::new(replica))
        .without_scrub()
        .heal_on_read(false)
        .clock(Arc::new(clock.clone()))
        .seed(7)
        .stepped(true)
}

/// The names of this process's threads that are the manager's own — the
/// dispatcher and the recovery threads, `selfheal-recovery-…` (Linux;
/// truncated to 15 bytes by the kernel).
fn manager_threads() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| s.starts_with("selfheal-recove"))
        .collect()
}

#[test]
fn a_corrupt_page_found_by_a_read_is_healed_by_the_next_step() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m, _clock) = stepped_rig(placement, 8, dir.path());
        m.start().unwrap();
        if cfg!(target_os = "linux") {
            // Every test of this file runs in step mode: no dispatcher or
            // recovery thread in any of them.
            assert_eq!(manager_threads(), Vec::<String>::new());
        }
        damage(&raw, 3);
        read_finds(&m, 3);
        // Nothing heals between steps.
        assert_ne!(bytes(raw.as_ref(), 3), bytes(mirror.as_ref(), 3));
        assert_eq!(m.stats().recovered, 0);
        let r = m.step().unwrap();
        assert_eq!(
            (r.filed, r.batches, r.handled, r.panics),
            (1, 1, 1, 0),
            "{r:?}"
        );
        assert_eq!((r.open, r.more_ready), (0, false), "{r:?}");
        assert_eq!(bytes(raw.as_ref(), 3), bytes(mirror.as_ref(), 3), "healed");
        let incs = m.incidents();
        assert_eq!(incs.len(), 1, "{incs:#?}");
        assert_eq!(
            incs[0].outcome,
            Outcome::Healed {
                remedy: "repair-from-replicas".into()
            }
        );
        assert!(m.is_idle());
        // A quiet step does nothing.
        let r = m.step().unwrap();
        assert_eq!((r.filed, r.handled, r.open), (0, 0, 0), "{r:?}");
        m.stop().unwrap();
        assert!(matches!(m.step(), Err(Error::Stopped { .. })));
    }
}

#[test]
fn an_incident_deferred_by_cooldown_heals_on_a_step_after_the_clock_passes_it() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m, clock) = stepped_rig(placement, 8, dir.path());
        m.start().unwrap();
        damage(&raw, 6);
        read_finds(&m, 6);
        m.step().unwrap();
        assert_eq!(m.stats().recovered, 1);
        // Bad again within the healer's cooldown (10 s): deferred.
        damage(&raw, 6);
        read_finds(&m, 6);
        let r = m.step().unwrap();
        assert_eq!((r.handled, r.open), (1, 1), "{r:?}");
        assert_eq!(m.stats().deferred, 1);
        assert_ne!(bytes(raw.as_ref(), 6), bytes(mirror.as_ref(), 6));
        // The clock has not moved: a step leaves it deferred.
        let r = m.step().unwrap();
        assert_eq!((r.handled, r.open), (0, 1), "{r:?}");
        // Past the cooldown: the next step promotes and heals it.
        clock.advance(Duration::from_secs(60));
        let r = m.step().unwrap();
        assert_eq!((r.handled, r.open), (1, 0), "{r:?}");
        assert_eq!(bytes(raw.as_ref(), 6), bytes(mirror.as_ref(), 6));
        let s = m.stats();
        assert_eq!((s.recovered, s.open), (2, 0), "{s:?}");
        m.stop().unwrap();
    }
}

/// One fixed sequence of damage, reads, steps and clock moves; returns the
/// closed incidents and the stats.
fn run_sequence(placement: ChecksumPlacement) -> (Vec<selfheal::prelude::Incident>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (raw, _mirror, m, clock) = stepped_rig(placement, 32, dir.path());
    m.start().unwrap();
    for round in 0..4u64 {
        for p in [round, round + 7, round + 13, 6] {
            damage(&raw, p);
            let mut b = vec![0u8; PS];
            let _ = m.detector().read_verified(PageId(p), &mut b);
        }
        m.step().unwrap();
        clock.advance(Duration::from_millis(2_500 * (round + 1)));
        m.step().unwrap();
    }
    clock.advance(Duration::from_secs(60));
    m.step().unwrap();
    let mut s = m.stats();
    // Measured in real time by the bus and events, not by the manager.
    s.bus_dropped = 0;
    let stats = format!("{s:?}");
    let incs = m.incidents();
    m.stop().unwrap();
    (incs, stats)
}

#[test]
fn the_same_sequence_twice_gives_identical_incidents_and_timelines() {
    for (_, placement) in both_placements(PS) {
        let (a, sa) = run_sequence(placement.clone());
        let (b, sb) = run_sequence(placement);
        assert!(a.len() >= 4, "{a:#?}");
        assert!(
            a.iter().any(|i| !i.pages.is_empty()),
            "a page-set incident among them: {a:#?}"
        );
        assert_eq!(a, b);
        assert_eq!(sa, sb);
    }
}

#[test]
fn threaded_components_in_step_mode_are_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemStore::new(PS, 4).unwrap());
    let base = || RecoveryConfig::new(store.clone(), dir.path()).stepped(true);
    let field = |c: RecoveryConfig| match c.build() {
        Err(Error::InvalidConfig { field, reason }) => {
            assert!(reason.contains("step mode"), "{reason}");
            field
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    // The default scrubber is one.
    assert_eq!(field(base()), "scrub");
    assert_eq!(field(base().scrub(ScrubConfig::new())), "scrub");
    assert_eq!(
        field(base().without_scrub().health(HealthConfig::new())),
        "health"
    );
    let m = base().without_scrub().build().unwrap();
    assert!(
        matches!(m.step(), Err(Error::InvalidArgument { .. })),
        "not started"
    );
    m.start().unwrap();
    m.step().unwrap();
    m.stop().unwrap();
    // A threaded manager refuses steps.
    let dir2 = tempfile::tempdir().unwrap();
    let m = RecoveryConfig::new(store.clone(), dir2.path())
        .without_scrub()
        .build()
        .unwrap();
    assert!(matches!(m.step(), Err(Error::InvalidArgument { .. })));
}

#[test]
fn a_panic_while_stepping_is_caught_and_its_incident_retried_then_escalated() {
    let cache = || Target::Component(Arc::from("cache"));
    for (panics, healed) in [(1, true), (2, false)] {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(PanickyHost::default());
        let h2 = host.clone();
        let (_raw, _mirror, m) = rig(ChecksumPlacement::Trailer, 4, dir.path(), move |c| {
            c.clock(Arc::new(ManualClock::new()))
                .host_actions(h2)
                .stepped(true)
        });
        m.start().unwrap();
        host.panics.store(panics, Ordering::SeqCst);
        m.failure_sink().send(Failure::new(
            Source::Host,
            FailureKind::WorkerDied {
                component: Arc::from("cache"),
            },
            "the cache's thread died",
            0,
        ));
        let r = m.step().expect("a panic is no error of the step");
        assert_eq!(r.panics, panics as u64, "{r:?}");
        assert_eq!(r.open, 0, "{r:?}");
        let incs = m.incidents();
        let inc = incs
            .iter()
            .find(|i| i.target == cache())
            .expect("the incident is closed, not lost");
        if healed {
            assert_eq!(
                inc.outcome,
                Outcome::Healed {
                    remedy: "restart-component".into()
                },
                "{inc:#?}"
            );
            assert_eq!(host.restarts.load(Ordering::SeqCst), 1);
        } else {
            assert_eq!(inc.outcome, Outcome::Escalated, "{inc:#?}");
            assert_eq!(host.restarts.load(Ordering::SeqCst), 0);
        }
        // The panics were reported on the bus, filed by the next step
        // (counted, no incident: there is no thread to restart).
        let r = m.step().unwrap();
        assert_eq!((r.filed, r.handled), (panics as u64, 0), "{r:?}");
        m.stop().unwrap();
    }
}

/// A manager ended by `abandon` (a simulated kill) saves nothing and marks
/// nothing: a failure still on its bus, which a `stop` files and saves, is
/// lost with it, and the next start on the directory (free again) finds a
/// crash; after a `stop` in the same spot the next start finds a clean stop
/// and resumes the incident. Either way the page is healed in the end.
#[test]
fn abandon_saves_nothing_and_the_next_start_finds_a_crash() {
    for (_, placement) in both_placements(PS) {
        for kill in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (raw, mirror, m, clock) = stepped_rig(placement.clone(), 8, dir.path());
            m.start().unwrap();
            m.step().unwrap();
            damage(&raw, 3);
            read_finds(&m, 3);
            if kill {
                m.abandon().unwrap();
            } else {
                m.stop().unwrap();
            }
            // Later calls do nothing.
            m.stop().unwrap();
            m.abandon().unwrap();
            assert!(matches!(m.step(), Err(Error::Stopped { .. })));
            drop(m);
            let m = stepped_config(&raw, &mirror, placement.clone(), &clock, dir.path())
                .build()
                .unwrap();
            let s = m.start().unwrap();
            assert_eq!(s.verdict.is_crash(), kill, "kill {kill}: {:?}", s.verdict);
            assert_eq!(s.incidents_resumed, u64::from(!kill), "kill {kill}: {s:?}");
            m.step().unwrap();
            let mut b = vec![0u8; PS];
            if m.detector().read_verified(PageId(3), &mut b).is_err() {
                m.step().unwrap();
            }
            assert_eq!(
                bytes(raw.as_ref(), 3),
                bytes(mirror.as_ref(), 3),
                "kill {kill}: healed"
            );
            m.stop().unwrap();
        }
    }
}

/// A snapshot taken through the detector with heal on read on, of a store
/// with a damaged page and no replica: a heal of the page on the snapshot's
/// own read would need the snapshots the snapshot holds — read on this
/// thread (the restore-page remedy) or on the repairer's helper thread (the
/// snapshots as the repairer's fallback). Either waited for the snapshot,
/// which waited for it; now the snapshot's reads do not heal on read: it
/// fails on the damaged page, which the next steps heal from the earlier
/// snapshot, and a snapshot taken after succeeds.
#[test]
fn a_snapshot_whose_read_heals_on_read_from_the_snapshots_does_not_wait_for_itself() {
    use selfheal::snapshot::SnapshotKind;
    use selfheal::{RepairConfig, SnapshotConfig};
    for (placement, fallback) in both_placements(PS)
        .into_iter()
        .flat_map(|(_, p)| [(p.clone(), false), (p, true)])
    {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(5));
        let raw = Arc::new(MemStore::new(PS, 8).unwrap());
        let m = Arc::new(
            RecoveryConfig::new(raw.clone(), dir.path())
                .placement(placement)
                .snapshots(SnapshotConfig::new(dir.path().join("snapshots"), PS))
                // Longer than the wait below: a read that waits for the
                // snapshot is not cut short by its deadline.
                .repair(RepairConfig::new().replica_read_timeout(Duration::from_secs(120)))
                .without_scrub()
                .heal_on_read(true)
                .clock(Arc::new(clock.clone()))
                .seed(7)
                .stepped(true)
                .build()
                .unwrap(),
        );
        m.start().unwrap();
        if fallback {
            let source = m.snapshots().unwrap().page_source();
            m.repairer().add_fallback(Arc::new(source)).unwrap();
        }
        for p in 0..8 {
            m.detector()
                .write_sealed(PageId(p), &mut page(p as u8 + 1))
                .unwrap();
        }
        let good = bytes(raw.as_ref(), 3);
        let take = |m: &selfheal::AutoRecoveryManager| {
            selfheal::testing::take_paused(
                m.snapshots().unwrap(),
                &**m.detector(),
                selfheal::Lsn(1),
                SnapshotKind::Full,
            )
        };
        take(&m).unwrap();
        damage(&raw, 3);
        // On a thread of its own, so that a regression fails, not hangs.
        let (tx, rx) = std::sync::mpsc::channel();
        let m2 = m.clone();
        std::thread::spawn(move || {
            let _ = tx.send(take(&m2).map(|_| ()));
        });
        let taken = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the snapshot waited for itself");
        assert!(
            taken.as_ref().is_err_and(|e| e.is_corruption()),
            "fallback {fallback}: {taken:?}"
        );
        for _ in 0..3 {
            clock.advance(Duration::from_secs(3_600));
            m.step().unwrap();
        }
        assert_eq!(
            bytes(raw.as_ref(), 3),
            good,
            "fallback {fallback}: healed from the snapshot"
        );
        take(&m).unwrap();
        m.stop().unwrap();
    }
}
