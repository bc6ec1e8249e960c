//! Goal: the recovery manager heals what its components find — verified,
//! within its RTO, one incident per target, bounded under a burst — runs
//! startup recovery before any background work, changes nothing in Observe
//! mode or without approval, never blocks on a subscriber, and stops in
//! bounded time with a clean mark.
//! Method: real components under the manager (a `MemStore` or a crash
//! simulating `CrashStore` and `CrashDir`, a replica over a mirror store,
//! both checksum placements), pages damaged under the detector, the store's
//! bytes compared with the mirror's afterwards; `ManualClock` where time is
//! judged (RTO), the system clock where only progress matters.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal::crash::RunVerdict;
use selfheal::healer::{Outcome, SkipReason};
use selfheal::recovery::{ApprovalRequest, StartupReport};
use selfheal::rollback::RollbackConfig;
use selfheal::testing::{both_placements, CrashDir, CrashStore};
use selfheal::{
    ChecksumPlacement, FailureKind, ManualClock, MemStore, Mode, PageId, PageStore, Priority,
    RecoveryConfig, RecoveryEvent, ScrubConfig, Source, StoreReplica,
};

mod recovery_common;
use recovery_common::*;

const IDLE: Duration = Duration::from_secs(20);

#[test]
fn a_corrupt_page_found_on_read_is_healed_from_the_replica_within_its_rto() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(5));
        let c2 = clock.clone();
        let (raw, mirror, m) = rig(placement, 16, dir.path(), move |c| c.clock(Arc::new(c2)));
        m.start().unwrap();
        damage(&raw, 5);
        read_finds(&m, 5);
        assert!(m.wait_idle(IDLE));
        assert_eq!(bytes(raw.as_ref(), 5), bytes(mirror.as_ref(), 5));
        let incs = m.incidents();
        assert_eq!(incs.len(), 1, "{incs:#?}");
        let inc = &incs[0];
        assert_eq!(
            inc.outcome,
            Outcome::Healed {
                remedy: "repair-from-replicas".into()
            }
        );
        assert_eq!(inc.priority, Priority::P0);
        assert!(inc.time_to_heal().unwrap() <= m.rto(Priority::P0));
        let s = m.stats();
        assert_eq!((s.detected, s.recovered, s.escalated), (1, 1, 0));
        assert_eq!(s.rto_compliance(), Some(1.0));
        assert_eq!(s.remedies["repair-from-replicas"].success_rate(), Some(1.0));
        m.stop().unwrap();
    }
}

#[test]
fn a_corrupt_page_found_by_the_scrubber_is_healed() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = rig(placement, 32, dir.path(), |c| {
            c.scrub(ScrubConfig::new().unlimited().single_pass())
        });
        damage(&raw, 9);
        damage(&raw, 30);
        m.start().unwrap();
        let deadline = Instant::now() + IDLE;
        while m.stats().pages_healed < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(m.wait_idle(IDLE));
        for p in [9, 30] {
            assert_eq!(bytes(raw.as_ref(), p), bytes(mirror.as_ref(), p));
        }
        assert_eq!(m.stats().pages_healed, 2);
        m.stop().unwrap();
    }
}

#[test]
fn two_reports_of_one_page_make_one_incident() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = rig(placement, 8, dir.path(), |c| c);
        damage(&raw, 3);
        read_finds(&m, 3);
        // The same page, reported again by the host before the manager ran.
        m.failure_sink().report(
            Source::Host,
            FailureKind::CorruptPage { page: PageId(3) },
            "the host saw it too",
            0,
        );
        m.start().unwrap();
        assert!(m.wait_idle(IDLE));
        let incs = m.incidents();
        assert_eq!(incs.len(), 1, "{incs:#?}");
        assert_eq!(incs[0].failures.len(), 2);
        let s = m.stats();
        assert_eq!((s.detected, s.joined, s.failures), (1, 1, 2));
        assert_eq!(bytes(raw.as_ref(), 3), bytes(mirror.as_ref(), 3));
        m.stop().unwrap();
    }
}

#[test]
fn observe_mode_changes_nothing() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, _mirror, m) = rig(placement, 8, dir.path(), |c| c.mode(Mode::Observe));
        damage(&raw, 2);
        let before = all_bytes(raw.as_ref());
        m.start().unwrap();
        read_finds(&m, 2);
        assert!(m.wait_idle(IDLE));
        assert_eq!(all_bytes(raw.as_ref()), before, "the store is unchanged");
        let incs = m.incidents();
        assert_eq!(incs.len(), 1);
        assert_eq!(incs[0].outcome, Outcome::Observed);
        assert_eq!(m.stats().observed, 1);
        m.stop().unwrap();
    }
}

#[test]
fn approve_mode_acts_only_with_approval() {
    for (_, placement) in both_placements(PS) {
        // Refused, and too slow: nothing changes.
        for slow in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let asked = Arc::new(AtomicUsize::new(0));
            let a2 = asked.clone();
            let (raw, _mirror, m) = rig(placement.clone(), 8, dir.path(), move |c| {
                c.mode(Mode::Approve).approval(
                    Arc::new(move |_: &ApprovalRequest| {
                        a2.fetch_add(1, Ordering::SeqCst);
                        if slow {
                            std::thread::sleep(Duration::from_millis(300));
                            return true; // too late: counts as no
                        }
                        false
                    }),
                    Duration::from_millis(50),
                )
            });
            damage(&raw, 4);
            let before = all_bytes(raw.as_ref());
            m.start().unwrap();
            read_finds(&m, 4);
            assert!(m.wait_idle(IDLE));
            assert_eq!(all_bytes(raw.as_ref()), before, "slow={slow}");
            assert!(asked.load(Ordering::SeqCst) >= 1);
            let incs = m.incidents();
            assert_eq!(incs[0].outcome, Outcome::Escalated);
            assert!(incs[0]
                .attempts
                .iter()
                .all(|a| a.outcome
                    == selfheal::healer::AttemptOutcome::Skipped(SkipReason::NotApproved)));
            m.stop().unwrap();
        }
        // Approved, or on the allow-list: healed.
        for allow in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (raw, mirror, m) = rig(placement.clone(), 8, dir.path(), move |c| {
                let c = c.mode(Mode::Approve).approval(
                    Arc::new(move |r: &ApprovalRequest| {
                        !allow && r.remedy == "repair-from-replicas"
                    }),
                    Duration::from_secs(5),
                );
                if allow {
                    c.allow_without_approval(&["repair-from-replicas"])
                } else {
                    c
                }
            });
            damage(&raw, 4);
            m.start().unwrap();
            read_finds(&m, 4);
            assert!(m.wait_idle(IDLE));
            assert_eq!(
                bytes(raw.as_ref(), 4),
                bytes(mirror.as_ref(), 4),
                "allow={allow}"
            );
            m.stop().unwrap();
        }
    }
}

#[test]
fn an_allow_list_naming_no_remedy_or_a_bad_healer_is_a_typed_error_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn PageStore> = Arc::new(MemStore::new(PS, 4).unwrap());
    let cfg = || {
        RecoveryConfig::new(store.clone(), dir.path())
            .mode(Mode::Approve)
            .approval(Arc::new(|_: &ApprovalRequest| true), Duration::from_secs(1))
    };
    match cfg().allow_without_approval(&["no-such-remedy"]).build() {
        Err(selfheal::Error::InvalidConfig { field, reason }) => {
            assert_eq!(field, "allow_without_approval");
            assert!(reason.contains("no-such-remedy"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        cfg()
            .healer(selfheal::healer::HealerConfig::new().max_attempts(0))
            .build(),
        Err(selfheal::Error::InvalidConfig {
            field: "max_attempts",
            ..
        })
    ));
    // Nothing was left behind that stops a good configuration.
    let m = cfg()
        .allow_without_approval(&["repair-from-replicas"])
        .build()
        .unwrap();
    m.start().unwrap();
    m.stop().unwrap();
}

#[test]
fn the_audit_logs_sizes_are_configured_and_checked_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn PageStore> = Arc::new(MemStore::new(PS, 4).unwrap());
    let cfg = || RecoveryConfig::new(store.clone(), dir.path()).without_scrub();
    assert!(matches!(
        cfg().audit_bytes(1_000, 1 << 20).build(),
        Err(selfheal::Error::InvalidConfig {
            field: "segment_bytes",
            ..
        })
    ));
    assert!(matches!(
        cfg().audit_bytes(64 << 10, 100 << 10).build(),
        Err(selfheal::Error::InvalidConfig {
            field: "max_bytes",
            ..
        })
    ));
    // A small log: many records roll over its 4 KiB segments, and no more
    // than its 16 KiB are kept.
    let m = cfg().audit_bytes(4 << 10, 16 << 10).build().unwrap();
    m.start().unwrap();
    for i in 0..200 {
        m.failure_sink().send(selfheal::Failure::new(
            Source::Host,
            FailureKind::Anomaly {
                metric: Arc::from(format!("metric-{i}").as_str()),
            },
            "z = 9.1",
            0,
        ));
    }
    assert!(m.wait_idle(IDLE));
    m.stop().unwrap();
    let kept: u64 = std::fs::read_dir(dir.path().join("audit"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(kept > 4 << 10, "segments rolled: {kept} bytes");
    assert!(kept <= (16 << 10) + (4 << 10), "{kept} bytes kept");
}

#[test]
fn the_approval_deadline_is_on_the_managers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let c2 = clock.clone();
    let answer = Arc::new(AtomicBool::new(false));
    let a2 = answer.clone();
    let (raw, _mirror, m) = rig(ChecksumPlacement::Trailer, 8, dir.path(), move |c| {
        c.clock(Arc::new(c2)).mode(Mode::Approve).approval(
            // A person who never answers (until the test ends).
            Arc::new(move |_: &ApprovalRequest| {
                while !a2.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                true
            }),
            Duration::from_secs(30),
        )
    });
    damage(&raw, 3);
    let before = all_bytes(raw.as_ref());
    m.start().unwrap();
    read_finds(&m, 3);
    // 30 s of the manager's clock pass in a moment of real time: the
    // request is a no, and the incident is escalated untouched.
    let t = Instant::now();
    let deadline = t + Duration::from_secs(20);
    while m.stats().escalated == 0 && Instant::now() < deadline {
        clock.advance(Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = m.stats();
    assert_eq!(s.escalated, 1, "{s:?}");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert_eq!(all_bytes(raw.as_ref()), before);
    let incs = m.incidents();
    assert!(incs[0]
        .attempts
        .iter()
        .all(|a| a.outcome == selfheal::healer::AttemptOutcome::Skipped(SkipReason::NotApproved)));
    answer.store(true, Ordering::SeqCst);
    m.stop().unwrap();
}

#[test]
fn queue_overflow_is_counted_and_the_rescan_finds_the_pages_again() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let release = Arc::new(AtomicBool::new(false));
        let r2 = release.clone();
        let (raw, mirror, m) = rig(placement, 40, dir.path(), move |c| {
            c.queue_capacity(4)
                .max_concurrent_recoveries(1)
                .mode(Mode::Approve)
                .approval(
                    Arc::new(move |_: &ApprovalRequest| {
                        while !r2.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        true
                    }),
                    Duration::from_secs(30),
                )
        });
        // 4 queued, 16 in the page backlog (4 × the queue), 20 beyond it.
        for p in 0..40 {
            damage(&raw, p);
            read_finds(&m, p);
        }
        m.start().unwrap();
        let deadline = Instant::now() + IDLE;
        while m.stats().overflowed < 36 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let s = m.stats();
        assert_eq!(s.overflowed, 36, "{s:?}");
        assert!(s.open <= 4);
        release.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + IDLE;
        while m.stats().recovered < 40 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(m.wait_idle(IDLE));
        for p in 0..40 {
            assert_eq!(
                bytes(raw.as_ref(), p),
                bytes(mirror.as_ref(), p),
                "page {p}"
            );
        }
        let s = m.stats();
        assert_eq!(s.recovered, 40, "{s:?}");
        assert!(s.rescans >= 1);
        m.stop().unwrap();
    }
}

/// Restarts a dead component (a host's restart that always works).
#[derive(Debug)]
struct RestartWorks;

impl selfheal::healer::Remedy for RestartWorks {
    fn name(&self) -> &str {
        "restart-works"
    }
    fn applies_to(&self, problem: &selfheal::healer::Problem) -> bool {
        *problem == selfheal::healer::Problem::COMPONENT_DEAD
    }
    fn execute(
        &self,
        _: &selfheal::healer::RemedyContext,
        _: &selfheal::healer::Case<'_>,
    ) -> selfheal::Result<selfheal::healer::Applied> {
        Ok(selfheal::healer::Applied::new("restarted"))
    }
    fn verify(
        &self,
        _: &selfheal::healer::RemedyContext,
        _: &selfheal::healer::Case<'_>,
        _: &selfheal::healer::Applied,
    ) -> selfheal::Result<selfheal::healer::Verified> {
        Ok(selfheal::healer::Verified::healed("beating again"))
    }
}

#[test]
fn a_component_death_beyond_the_bound_is_held_and_healed_once_the_queue_drains() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let release = Arc::new(AtomicBool::new(false));
        let r2 = release.clone();
        let (raw, mirror, m) = rig(placement, 8, dir.path(), move |c| {
            c.queue_capacity(2)
                .max_concurrent_recoveries(1)
                .healer(
                    selfheal::healer::HealerConfig::new()
                        .remedy(Arc::new(RestartWorks))
                        .cold_start_order(
                            selfheal::healer::Problem::COMPONENT_DEAD,
                            &["restart-works"],
                        ),
                )
                .mode(Mode::Approve)
                .approval(
                    Arc::new(move |_: &ApprovalRequest| {
                        while !r2.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        true
                    }),
                    Duration::from_secs(30),
                )
        });
        m.start().unwrap();
        // Two page incidents fill the queue: one waits for approval, one
        // is queued.
        for p in [1, 2] {
            damage(&raw, p);
            read_finds(&m, p);
        }
        let deadline = Instant::now() + IDLE;
        while m.stats().open < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        // The component dies once: one report, beyond the bound.
        m.failure_sink().send(selfheal::Failure::new(
            Source::CrashDetector,
            FailureKind::ComponentDead {
                component: Arc::from("wal-writer"),
            },
            "no heartbeat for 3 s",
            0,
        ));
        let deadline = Instant::now() + IDLE;
        while m.stats().overflowed < 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let s = m.stats();
        assert_eq!((s.overflowed, s.open), (1, 2), "{s:?}");
        release.store(true, Ordering::SeqCst);
        assert!(m.wait_idle(IDLE));
        for p in [1, 2] {
            assert_eq!(bytes(raw.as_ref(), p), bytes(mirror.as_ref(), p));
        }
        let incs = m.incidents();
        let dead: Vec<_> = incs
            .iter()
            .filter(|i| i.target.to_string().contains("wal-writer"))
            .collect();
        assert_eq!(dead.len(), 1, "{incs:#?}");
        assert_eq!(
            dead[0].outcome,
            Outcome::Healed {
                remedy: "restart-works".into()
            }
        );
        assert_eq!(m.stats().recovered, 3);
        m.stop().unwrap();
    }
}

#[test]
fn a_slow_subscriber_does_not_block_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, mirror, m) = rig(ChecksumPlacement::Trailer, 40, dir.path(), |c| c);
    let slow = m.subscribe(1).unwrap();
    let fast = m.subscribe(1_000).unwrap();
    m.start().unwrap();
    for p in 0..30 {
        damage(&raw, p);
        read_finds(&m, p);
    }
    let deadline = Instant::now() + IDLE;
    while m.stats().pages_healed < 30 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(m.stats().pages_healed, 30);
    for p in 0..30 {
        assert_eq!(bytes(raw.as_ref(), p), bytes(mirror.as_ref(), p));
    }
    assert!(slow.dropped() > 0);
    assert_eq!(slow.events().len(), 1);
    assert!(m.stats().events_dropped >= slow.dropped());
    let got: Vec<RecoveryEvent> = fast.events().try_iter().collect();
    let healed = got
        .iter()
        .filter(|e| {
            matches!(
                e,
                RecoveryEvent::Healed {
                    within_rto: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        healed as u64,
        m.stats().recovered,
        "one Healed event per incident"
    );
    assert!(got
        .iter()
        .any(|e| matches!(e, RecoveryEvent::Opened { .. })));
    assert!(got
        .iter()
        .any(|e| matches!(e, RecoveryEvent::Action { .. })));
    m.stop().unwrap();
}

#[test]
fn stop_is_bounded_and_marks_a_clean_stop_drop_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<MemStore> = Arc::new(MemStore::new(PS, 8).unwrap());
    let build = || {
        RecoveryConfig::new(store.clone(), dir.path())
            .scrub(ScrubConfig::new().pages_per_s(10))
            .build()
            .unwrap()
    };
    let m = build();
    assert_eq!(m.start().unwrap().verdict, RunVerdict::FirstRun);
    let t = Instant::now();
    m.stop().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t.elapsed()
    );
    m.stop().unwrap(); // idempotent
    drop(m);
    let m = build();
    let r: StartupReport = m.start().unwrap();
    assert!(
        matches!(r.verdict, RunVerdict::Clean { .. }),
        "{:?}",
        r.verdict
    );
    drop(m); // no stop: not clean
    let m = build();
    let r = m.start().unwrap();
    assert!(r.verdict.is_crash(), "{:?}", r.verdict);
    assert!(m.wait_idle(IDLE));
    assert!(m
        .incidents()
        .iter()
        .any(|i| i.failures[0].kind == FailureKind::UncleanShutdown));
    m.stop().unwrap();
}

#[test]
fn a_transaction_in_flight_at_a_crash_is_rolled_back_before_background_work() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(CrashDir::new());
        let store = Arc::new(CrashStore::new(PS, 8).unwrap());
        let m = RecoveryConfig::new(store.clone(), dir.path())
            .placement(placement.clone())
            .rollback(RollbackConfig::with_storage(journal.clone()))
            .without_scrub()
            .build()
            .unwrap();
        m.start().unwrap();
        let rb = m.rollback_manager().unwrap();
        for p in 0..8 {
            m.detector().write_sealed(PageId(p), &mut page(7)).unwrap();
        }
        store.sync().unwrap();
        let committed = bytes(store.as_ref(), 2);
        let t = rb.begin().unwrap();
        rb.write(t, PageId(2), 200, b"in flight at the crash")
            .unwrap();
        store.sync().unwrap();
        assert_ne!(bytes(store.as_ref(), 2), committed);
        // The process dies: what is durable survives.
        let store2 = Arc::new(store.crash(None));
        let journal2 = Arc::new(journal.crash(0));
        drop(rb);
        drop(m);
        // A probe run by the health monitor records what it sees: it must
        // never see the loser's bytes.
        let saw_loser = Arc::new(AtomicBool::new(false));
        let (s3, seen) = (store2.clone(), saw_loser.clone());
        let health = selfheal::HealthConfig::new()
            .sample_interval(Duration::from_millis(5))
            .probe_fn(
                "loser-visible",
                selfheal::health::Thresholds::new(0.5, 0.9),
                move || {
                    let b = bytes(s3.as_ref(), 2);
                    let bad = &b[200..222] == b"in flight at the crash";
                    seen.fetch_or(bad, Ordering::SeqCst);
                    Ok(f64::from(u8::from(bad)))
                },
            );
        let m = RecoveryConfig::new(store2.clone(), dir.path())
            .placement(placement.clone())
            .rollback(RollbackConfig::with_storage(journal2))
            .health(health)
            .scrub(ScrubConfig::new().unlimited())
            .build()
            .unwrap();
        let r = m.start().unwrap();
        assert!(r.verdict.is_crash());
        assert_eq!(r.rollback.rolled_back.len(), 1);
        assert_eq!(r.rollback.rolled_back[0].pages, vec![PageId(2)]);
        assert_eq!(r.pages_verified, 1);
        assert!(r.pages_failed.is_empty());
        assert_eq!(bytes(store2.as_ref(), 2), committed);
        std::thread::sleep(Duration::from_millis(50));
        assert!(m.wait_idle(IDLE));
        assert!(!saw_loser.load(Ordering::SeqCst));
        m.stop().unwrap();
    }
}

/// Observe mode never acts, at startup included, byte for byte: the
/// crashed transaction is reported (startup report, audit record, an
/// observed incident) and left in place with the rest of the store, a
/// corrupt page found by the scrub included; a new transaction may not
/// write its page but may commit elsewhere; the next start in Automatic
/// mode rolls it back and keeps every committed write.
#[test]
fn observe_mode_changes_nothing_at_startup_and_a_later_automatic_start_rolls_the_losers_back() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(CrashDir::new());
        let store = Arc::new(CrashStore::new(PS, 8).unwrap());
        let m = RecoveryConfig::new(store.clone(), dir.path())
            .placement(placement.clone())
            .rollback(RollbackConfig::with_storage(journal.clone()))
            .without_scrub()
            .build()
            .unwrap();
        m.start().unwrap();
        let rb = m.rollback_manager().unwrap();
        for p in 0..8 {
            m.detector()
                .write_sealed(PageId(p), &mut page(p as u8 + 1))
                .unwrap();
        }
        store.sync().unwrap();
        let committed = all_bytes(store.as_ref());
        let t = rb.begin().unwrap();
        rb.write(t, PageId(2), 200, b"in flight at the crash")
            .unwrap();
        rb.write(t, PageId(6), 10, b"also in flight").unwrap();
        store.sync().unwrap();
        let store2 = Arc::new(store.crash(None));
        let journal2 = Arc::new(journal.crash(0));
        drop(rb);
        drop(m);
        assert_ne!(
            bytes(store2.as_ref(), 2),
            committed[2],
            "the loser is on disk"
        );
        // Page 5 rots while the engine is down.
        let mut rotten = bytes(store2.as_ref(), 5);
        rotten[300] ^= 0x10;
        store2.write_page(PageId(5), &rotten).unwrap();
        let before = all_bytes(store2.as_ref());
        let build = |mode: Mode| {
            RecoveryConfig::new(store2.clone(), dir.path())
                .placement(placement.clone())
                .rollback(RollbackConfig::with_storage(journal2.clone()))
                .scrub(ScrubConfig::new().unlimited().single_pass())
                .mode(mode)
                .build()
                .unwrap()
        };
        let m = build(Mode::Observe);
        let r = m.start().unwrap();
        assert!(r.rollback.rolled_back.is_empty(), "{:?}", r.rollback);
        assert_eq!(r.rollback.deferred.len(), 1, "{:?}", r.rollback);
        assert_eq!(r.rollback.deferred[0].txn, t);
        assert_eq!(r.rollback.deferred[0].pages, vec![PageId(2), PageId(6)]);
        assert_eq!(r.rollback.undo_entries_applied, 0);
        assert_eq!(r.pages_verified, 0);
        assert_eq!(
            all_bytes(store2.as_ref()),
            before,
            "start changed the store"
        );
        let deadline = Instant::now() + IDLE;
        while m.stats().observed < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(m.wait_idle(IDLE));
        assert_eq!(all_bytes(store2.as_ref()), before, "the store is unchanged");
        let s = m.stats();
        assert_eq!((s.recovered, s.escalated), (0, 0), "{s:?}");
        let incs = m.incidents();
        assert!(incs.iter().any(
            |i| i.target == selfheal::Target::Page(PageId(5)) && i.outcome == Outcome::Observed
        ));
        let loser = incs
            .iter()
            .find(|i| {
                matches!(
                    i.failures[0].kind,
                    FailureKind::InFlightAtCrash { count: 0 }
                )
            })
            .unwrap_or_else(|| panic!("no incident of the losers: {incs:#?}"));
        assert_eq!(loser.outcome, Outcome::Observed);
        let ev = &loser.failures[0].evidence;
        assert!(
            ev.contains(&format!("transaction {t} ")) && ev.contains("left in place"),
            "{ev}"
        );
        let notes = m
            .audit_log()
            .unwrap()
            .query(&selfheal::audit::AuditQuery::all())
            .unwrap();
        assert!(
            notes
                .iter()
                .any(|a| a.entry.kind == selfheal::audit::EntryKind::Note
                    && a.entry.text.contains(&format!("transaction {t} "))
                    && a.entry.text.contains("left in place")),
            "{notes:#?}"
        );
        // The loser stays pending: its pages are closed to new
        // transactions, the others are not.
        let rb = m.rollback_manager().unwrap();
        assert!(rb.active_transactions().contains(&t));
        let t2 = rb.begin().unwrap();
        let e = rb.write(t2, PageId(2), 200, b"x").unwrap_err();
        assert!(
            matches!(&e, selfheal::Error::InvalidArgument { reason, .. } if reason.contains(&t.to_string())),
            "{e}"
        );
        rb.write(t2, PageId(3), 40, b"committed while observing")
            .unwrap();
        store2.sync().unwrap();
        rb.commit(t2).unwrap();
        let mut expected = committed.clone();
        expected[3] = bytes(store2.as_ref(), 3);
        drop(rb);
        m.stop().unwrap();
        drop(m);
        // Automatic: the loser is rolled back, every committed write kept.
        let m = build(Mode::Automatic);
        let r = m.start().unwrap();
        assert!(r.rollback.deferred.is_empty());
        assert_eq!(r.rollback.rolled_back.len(), 1, "{:?}", r.rollback);
        assert_eq!(r.rollback.rolled_back[0].txn, t);
        assert_eq!(r.rollback.rolled_back[0].pages, vec![PageId(2), PageId(6)]);
        assert!(r.pages_failed.is_empty(), "{r:?}");
        assert!(m.wait_idle(IDLE));
        let after = all_bytes(store2.as_ref());
        for p in [0, 1, 2, 3, 4, 6, 7] {
            assert_eq!(after[p], expected[p], "page {p}");
        }
        assert_eq!(&after[3][40..65], b"committed while observing");
        m.stop().unwrap();
    }
}

#[test]
fn an_open_incident_survives_a_restart_and_is_resumed_under_its_id() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(5));
        let c2 = clock.clone();
        let (raw, mirror, m) = rig(placement.clone(), 8, dir.path(), move |c| {
            c.clock(Arc::new(c2))
        });
        m.start().unwrap();
        damage(&raw, 6);
        read_finds(&m, 6);
        assert!(m.wait_idle(IDLE));
        assert_eq!(m.stats().recovered, 1);
        // Bad again within the healer's cooldown: the incident is deferred
        // (the manual clock does not move), and stays open at stop.
        damage(&raw, 6);
        read_finds(&m, 6);
        assert!(m.wait_idle(IDLE));
        let s = m.stats();
        assert_eq!((s.deferred, s.open), (1, 1), "{s:?}");
        m.stop().unwrap();
        drop(m);
        assert_ne!(bytes(raw.as_ref(), 6), bytes(mirror.as_ref(), 6));
        // The next run resumes it (the new detector knows nothing of the
        // page: the manager re-checks a resumed page first).
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(100));
        let m = RecoveryConfig::new(raw.clone(), dir.path())
            .placement(placement)
            .replica(Arc::new(StoreReplica::new("mirror", mirror.clone())))
            .without_scrub()
            .clock(Arc::new(clock))
            .build()
            .unwrap();
        let r = m.start().unwrap();
        assert_eq!(r.incidents_resumed, 1);
        assert!(m.wait_idle(IDLE));
        assert_eq!(bytes(raw.as_ref(), 6), bytes(mirror.as_ref(), 6));
        let incs = m.incidents();
        assert_eq!(incs.len(), 1, "{incs:#?}");
        assert_eq!(incs[0].id, 2, "the id of the first run");
        assert!(matches!(incs[0].outcome, Outcome::Healed { .. }));
        m.stop().unwrap();
    }
}

#[test]
fn a_burst_of_a_thousand_corrupt_pages_is_all_healed() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, mirror, m) = rig(ChecksumPlacement::Trailer, 1_000, dir.path(), |c| {
        c.scrub(ScrubConfig::new().unlimited().single_pass())
            .max_concurrent_recoveries(2)
    });
    for p in 0..1_000 {
        damage(&raw, p);
    }
    let t = Instant::now();
    m.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while m.stats().pages_healed < 1_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t.elapsed();
    let s = m.stats();
    assert_eq!(s.pages_healed, 1_000, "{s:?}");
    assert_eq!(s.escalated, 0);
    for p in 0..1_000 {
        assert_eq!(bytes(raw.as_ref(), p), bytes(mirror.as_ref(), p));
    }
    eprintln!("1000 corrupt pages found by scrub and healed in {took:?}");
    m.stop().unwrap();
}

/// The manager's audit log commits in groups: an incident's records are
/// written but not synced until the sync interval has passed (a crash
/// before loses them, and only them), and `stop` syncs the rest: every
/// record is then durable, in order and chained.
#[test]
fn the_audit_log_is_synced_by_the_manager_in_groups_and_at_stop() {
    use selfheal::audit::{AuditConfig, AuditQuery};
    use selfheal::testing::CrashFiles;
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let files = Arc::new(CrashFiles::new());
        let f2 = files.clone();
        let (raw, _mirror, m) = rig(placement, 16, dir.path(), move |c| {
            c.audit_storage(f2)
                .audit_sync_interval(Duration::from_secs(3_600))
        });
        m.start().unwrap();
        damage(&raw, 3);
        read_finds(&m, 3);
        assert!(m.wait_idle(IDLE));
        let written = m.audit_log().unwrap().next_seq() - 1;
        assert!(written >= 5, "{written} records");
        let crashed = AuditConfig::new()
            .open_on(Arc::new(files.crash(None)))
            .unwrap();
        assert!(
            crashed.query(&AuditQuery::all()).unwrap().is_empty(),
            "nothing is synced within the interval"
        );
        m.stop().unwrap();
        let after = AuditConfig::new()
            .open_on(Arc::new(files.crash(None)))
            .unwrap();
        let seen = after.query(&AuditQuery::all()).unwrap();
        assert_eq!(seen.len() as u64, written, "stop synced every record");
        after.verify().unwrap();
        assert!(after.damage().is_empty());
    }
}

/// With a short sync interval the records become durable while the manager
/// runs, without a stop.
#[test]
fn the_audit_log_is_synced_within_the_interval() {
    use selfheal::audit::{AuditConfig, AuditQuery};
    use selfheal::testing::CrashFiles;
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let files = Arc::new(CrashFiles::new());
        let f2 = files.clone();
        let (raw, _mirror, m) = rig(placement, 16, dir.path(), move |c| {
            c.audit_storage(f2)
                .audit_sync_interval(Duration::from_millis(10))
        });
        m.start().unwrap();
        damage(&raw, 4);
        read_finds(&m, 4);
        assert!(m.wait_idle(IDLE));
        let written = m.audit_log().unwrap().next_seq() - 1;
        let deadline = Instant::now() + IDLE;
        loop {
            let crashed = AuditConfig::new()
                .open_on(Arc::new(files.crash(None)))
                .unwrap();
            if crashed.query(&AuditQuery::all()).unwrap().len() as u64 == written {
                crashed.verify().unwrap();
                break;
            }
            assert!(Instant::now() < deadline, "not synced within {IDLE:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        m.stop().unwrap();
    }
}

#[test]
fn the_dispatcher_saves_open_incidents_when_the_managers_clock_says_so() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(5));
        let c2 = clock.clone();
        let (raw, _mirror, m) = rig(placement, 8, dir.path(), move |c| c.clock(Arc::new(c2)));
        m.start().unwrap();
        let path = dir.path().join("incidents");
        let saved = || std::fs::read(&path).ok();
        damage(&raw, 6);
        read_finds(&m, 6);
        assert!(m.wait_idle(IDLE));
        // Bad again within the healer's cooldown: deferred, and open.
        damage(&raw, 6);
        read_finds(&m, 6);
        assert!(m.wait_idle(IDLE));
        assert_eq!(m.stats().open, 1);
        let before = saved();
        // Real time passes, the clock does not: no save is due.
        std::thread::sleep(Duration::from_millis(1_500));
        assert_eq!(saved(), before, "saved on real time, not on the clock");
        // A second of the clock: the open incident is saved, promptly.
        clock.advance(Duration::from_secs(1));
        let waited = std::time::Instant::now();
        while saved() == before {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "not saved after the clock passed the save interval"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        m.stop().unwrap();
    }
}

/// A page the host rewrote between its report and its incident closes
/// healed (within its RTO, counted as recovered) while the repair, which
/// found nothing to do, is neither tried nor credited in the statistics.
#[test]
fn a_page_healed_before_the_manager_acts_counts_as_recovered_but_not_for_the_repair() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, _mirror, m) = rig(placement, 16, dir.path(), |c| c);
        damage(&raw, 5);
        read_finds(&m, 5);
        m.detector()
            .write_sealed(PageId(5), &mut page(0x77))
            .unwrap();
        m.start().unwrap();
        assert!(m.wait_idle(IDLE));
        let s = m.stats();
        assert_eq!((s.detected, s.recovered), (1, 1), "{s:?}");
        assert!(
            s.remedies
                .get("repair-from-replicas")
                .is_none_or(|r| r.tried == 0),
            "{s:?}"
        );
        damage(&raw, 6);
        read_finds(&m, 6);
        assert!(m.wait_idle(IDLE));
        let r = m.stats().remedies["repair-from-replicas"];
        assert_eq!((r.tried, r.healed), (1, 1));
        m.stop().unwrap();
    }
}
