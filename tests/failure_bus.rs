//! Goal: every component's failures — what it watches and its own (a corrupt page, a scrub thread that died, a replica that keeps failing, a page left irreparable, a blocked rollback, a poisoned journal, transactions in flight at a crash, an unclean previous run, a dead heartbeat, a dead crash watchdog, a failed snapshot, a dead periodic thread, a degraded metric, a failed probe, a dead sampler) — arrive on ONE shared `FailureSink`, numbered in the order sent, each naming its component and stamped from ONE `ManualClock` at the moment it was caused, so one stream orders and times them all. Method: one bus and one clock handed to every component's config; the `testing` faults (FaultyStore, FaultyReplica, CrashDir, ScriptedProbe) cause each failure at a known clock time, under both checksum placements where pages are sealed; the stream is read back and compared entry by entry, per component and with all components at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use selfheal::crash::{CrashConfig, CrashEvent, HeartbeatConfig, RunMarker};
use selfheal::health::Thresholds;
use selfheal::repair::{RepairConfig, RepairOutcome};
use selfheal::scrub::ScrubState;
use selfheal::snapshot::{
    PeriodicConfig, SnapshotConfig, SnapshotKind, StateSnapshotManager, WriteGate,
};
use selfheal::testing::{
    both_placements, fill_store, seal_numbered_pages, CrashDir, Damage, FaultyReplica, FaultyStore,
    ReadFault, ScriptedProbe,
};
use selfheal::{
    ChecksumPlacement, Clock, CorruptionConfig, CorruptionDetector, Error, Failure, FailureSink,
    HealthConfig, HealthMonitor, Lsn, ManualClock, MemStore, PageId, PageStore, RollbackConfig,
    ScrubConfig, Source, StoreReplica, TransactionRollbackManager,
};

const PS: usize = 512;
const PAGES: u64 = 16;
const SEC: u64 = 1_000_000_000;
/// How long a report from a background thread may take to arrive (real time).
const WAIT: Duration = Duration::from_secs(20);

/// One bus and one clock for every component. The bus's callback kills the
/// health sampler, or the crash watchdog, once, when armed: a callback runs
/// on the sending thread, and one that panics takes that thread down.
struct Bus {
    sink: FailureSink,
    clock: ManualClock,
    kill_sampler: Arc<AtomicBool>,
    kill_watchdog: Arc<AtomicBool>,
}

impl Bus {
    fn new() -> Bus {
        let kill_sampler = Arc::new(AtomicBool::new(false));
        let kill_watchdog = Arc::new(AtomicBool::new(false));
        let (k, w) = (kill_sampler.clone(), kill_watchdog.clone());
        let sink = FailureSink::new(1_024).with_callback(Arc::new(move |_f: &Failure| {
            let armed = match std::thread::current().name() {
                Some("selfheal-health") => k.swap(false, Ordering::SeqCst),
                Some("selfheal-watchdog") => w.swap(false, Ordering::SeqCst),
                _ => false,
            };
            if armed {
                panic!("failure callback bug (injected)");
            }
        }));
        Bus {
            sink,
            clock: ManualClock::new(),
            kill_sampler,
            kill_watchdog,
        }
    }

    fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(self.clock.clone())
    }

    /// Sets the clock to `s` seconds: the time of the failures caused next.
    fn at(&self, s: u64) {
        self.clock.set_ns(s * SEC);
    }

    /// Takes the next `want.len()` reports (waiting for ones sent by
    /// background threads) and checks each against `(source, kind name,
    /// seconds)`: the component, what failed, and when it was caused. Ids
    /// grow in the order read. Returns them.
    fn expect(&self, what: &str, want: &[(Source, &str, u64)]) -> Vec<Failure> {
        let rx = self.sink.failures();
        let mut got = Vec::new();
        for (i, &(source, kind, at_s)) in want.iter().enumerate() {
            let f = rx
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("{what}: report {i} ({kind}) never came; got {got:?}"));
            assert_eq!(
                (f.source, f.kind.name(), f.detected_at_ns),
                (source, kind, at_s * SEC),
                "{what}: report {i}: {f:?}"
            );
            got.push(f);
        }
        for w in got.windows(2) {
            assert!(w[0].id < w[1].id, "{what}: ids in send order: {got:?}");
        }
        got
    }

    /// Nothing more is on the bus.
    fn quiet(&self, what: &str) {
        let rest: Vec<Failure> = self.sink.failures().try_iter().collect();
        assert!(rest.is_empty(), "{what}: unexpected reports {rest:?}");
    }
}

/// A detector on the bus over a fault-injecting store whose pages are all
/// sealed.
fn detector(
    bus: &Bus,
    placement: ChecksumPlacement,
) -> (Arc<FaultyStore>, Arc<CorruptionDetector>) {
    let raw = Arc::new(FaultyStore::new(Arc::new(
        MemStore::new(PS, PAGES).unwrap(),
    )));
    let det = Arc::new(
        CorruptionConfig::new(placement)
            .clock(bus.clock())
            .failure_sink(bus.sink.clone())
            .build(raw.clone())
            .unwrap(),
    );
    seal_numbered_pages(&det, PAGES).unwrap();
    (raw, det)
}

/// Damages page `p` and reads it through the detector: a corrupt page is
/// found (and fenced) now.
fn corrupt(raw: &FaultyStore, det: &CorruptionDetector, p: u64) {
    raw.damage(PageId(p), Damage::Zero).unwrap();
    let mut buf = vec![0u8; PS];
    assert!(det.read_verified(PageId(p), &mut buf).is_err());
}

fn snapshots(bus: &Bus, dir: &std::path::Path) -> StateSnapshotManager {
    SnapshotConfig::new(dir, PS)
        .clock(bus.clock())
        .failure_sink(bus.sink.clone())
        .build()
        .unwrap()
}

fn full_snapshot(m: &StateSnapshotManager, store: &dyn PageStore) -> selfheal::Result<u64> {
    selfheal::testing::take_paused(m, store, Lsn(1), SnapshotKind::Full).map(|r| r.info.id)
}

fn health(bus: &Bus, probe: Arc<ScriptedProbe>) -> HealthMonitor {
    HealthConfig::new()
        .probe(probe, Thresholds::new(10.0, 20.0))
        .sample_interval(Duration::from_millis(5))
        .clock(bus.clock())
        .failure_sink(bus.sink.clone())
        .build()
        .unwrap()
}

fn rollback(
    bus: &Bus,
    dir: Arc<CrashDir>,
    det: Arc<CorruptionDetector>,
) -> TransactionRollbackManager {
    RollbackConfig::with_storage(dir)
        .clock(bus.clock())
        .failure_sink(bus.sink.clone())
        .build(det)
        .unwrap()
}

#[test]
fn the_detector_reports_a_corrupt_page_on_the_shared_bus() {
    for (_, placement) in both_placements(PS) {
        let bus = Bus::new();
        let (raw, det) = detector(&bus, placement);
        bus.at(3);
        corrupt(&raw, &det, 4);
        let got = bus.expect(
            "detector",
            &[(Source::CorruptionDetector, "corrupt_page", 3)],
        );
        assert_eq!(got[0].target(), selfheal::Target::Page(PageId(4)));
        bus.quiet("detector");
    }
}

#[test]
fn the_scrubber_reports_its_finds_and_its_own_death_on_the_shared_bus() {
    for (_, placement) in both_placements(PS) {
        let bus = Bus::new();
        let (raw, det) = detector(&bus, placement);
        raw.damage(PageId(9), Damage::Zero).unwrap();
        bus.at(2);
        let h = ScrubConfig::new()
            .unlimited()
            .clock(bus.clock())
            .failure_sink(bus.sink.clone())
            .build(det.clone())
            .unwrap();
        h.start().unwrap();
        h.wait_for_passes(1, WAIT).unwrap();
        bus.expect("scrub", &[(Source::CorruptionDetector, "corrupt_page", 2)]);
        // Its thread dies: a read panics in host code.
        bus.at(7);
        raw.fail_reads(None, ReadFault::Panic, u32::MAX);
        assert!(h.wait_for_passes(u64::MAX, WAIT).is_err());
        assert_eq!(h.state(), ScrubState::Failed);
        bus.expect("scrub", &[(Source::Scrubber, "worker_died", 7)]);
        assert!(matches!(h.stop(), Err(Error::Stopped { .. })));
        bus.quiet("scrub");
    }
}

#[test]
fn the_repairer_reports_a_failing_replica_and_an_irreparable_page_on_the_shared_bus() {
    for (_, placement) in both_placements(PS) {
        let bus = Bus::new();
        let (raw, det) = detector(&bus, placement);
        let mirror = Arc::new(MemStore::new(PS, PAGES).unwrap());
        let replica = Arc::new(FaultyReplica::new(Arc::new(StoreReplica::new(
            "mirror", mirror,
        ))));
        replica.set_down(true);
        let rep = RepairConfig::new()
            .replica_failing_after(2)
            .clock(bus.clock())
            .failure_sink(bus.sink.clone())
            .build(det.clone())
            .unwrap();
        rep.add_replica(replica).unwrap();
        bus.at(1);
        corrupt(&raw, &det, 5);
        bus.at(4);
        let first = rep.repair_page(PageId(5)).unwrap();
        assert!(matches!(first.outcome, RepairOutcome::Irreparable { .. }));
        bus.at(6);
        let second = rep.repair_page(PageId(5)).unwrap();
        assert!(matches!(second.outcome, RepairOutcome::Irreparable { .. }));
        let got = bus.expect(
            "repair",
            &[
                (Source::CorruptionDetector, "corrupt_page", 1),
                (Source::DataRepairer, "irreparable_page", 4),
                // The second failed call in a row: the replica is failing;
                // the page stays irreparable, reported for each repair that
                // ends so.
                (Source::DataRepairer, "replica_failing", 6),
                (Source::DataRepairer, "irreparable_page", 6),
            ],
        );
        assert_eq!(
            got[2].target(),
            selfheal::Target::Replica(selfheal::ReplicaId::new("mirror"))
        );
        bus.quiet("repair");
    }
}

#[test]
fn the_rollback_manager_reports_a_blocked_rollback_and_a_poisoned_journal_on_the_shared_bus() {
    for (_, placement) in both_placements(PS) {
        let bus = Bus::new();
        let (raw, det) = detector(&bus, placement);
        let dir = Arc::new(CrashDir::new());
        let mgr = rollback(&bus, dir.clone(), det.clone());
        let t = mgr.begin().unwrap();
        mgr.write(t, PageId(2), 0, &[0xAB; 32]).unwrap();
        // The page rots before the rollback: it is blocked, not resealed.
        raw.damage(PageId(2), Damage::Zero).unwrap();
        bus.at(3);
        assert!(matches!(
            mgr.rollback(t),
            Err(Error::RollbackBlocked { .. })
        ));
        bus.expect(
            "rollback",
            &[
                (Source::CorruptionDetector, "corrupt_page", 3),
                (Source::TransactionRollbackManager, "rollback_blocked", 3),
            ],
        );
        // The journal's fsync fails for good (EROFS; a retryable EIO or
        // ENOSPC would stall it instead): it is poisoned.
        bus.at(8);
        let u = mgr.begin().unwrap();
        mgr.write(u, PageId(3), 0, &[0xCD; 32]).unwrap();
        dir.fail_syncs_with(1, 30, false);
        let err = mgr.commit(u).unwrap_err();
        assert!(matches!(err, Error::Poisoned { .. }), "{err}");
        let got = bus.expect(
            "rollback",
            &[(Source::TransactionRollbackManager, "journal_poisoned", 8)],
        );
        // The report and the error tell the same next step.
        let next = "build it again (its recovery runs then)";
        assert!(err.to_string().contains(next), "{err}");
        assert!(got[0].evidence.contains(next), "{}", got[0].evidence);
        bus.quiet("rollback");
    }
}

#[test]
fn the_crash_detector_reports_an_unclean_previous_run_and_a_dead_heartbeat_on_the_shared_bus() {
    let bus = Bus::new();
    let dir = tempfile::tempdir().unwrap();
    let build = || {
        let (marker, _) = RunMarker::open(dir.path()).unwrap();
        CrashConfig::new()
            .clock(bus.clock())
            .failure_sink(bus.sink.clone())
            .heartbeat(HeartbeatConfig::new().timeout(Duration::from_secs(2)))
            .run_marker(marker)
            .build()
            .unwrap()
    };
    // A run that ends without a clean stop.
    drop(build());
    bus.quiet("crash: a first run is no crash");
    bus.at(5);
    let d = build();
    d.start().unwrap();
    bus.expect("crash", &[(Source::CrashDetector, "unclean_shutdown", 5)]);
    // A component stops beating: suspect, then dead, each at its check.
    let wal = d.register("wal-writer").unwrap();
    for _ in 0..20 {
        wal.beat();
        bus.clock.advance(Duration::from_millis(100));
        assert!(d.check_now().unwrap().is_empty());
    }
    let mut seen = Vec::new();
    for _ in 0..30 {
        bus.clock.advance(Duration::from_millis(100));
        for ev in d.check_now().unwrap() {
            if let CrashEvent::Component(_) = ev {
                seen.push(bus.clock.now_ns());
            }
        }
    }
    assert_eq!(seen.len(), 2, "suspect, then dead: {seen:?}");
    let got: Vec<Failure> = bus.sink.failures().try_iter().collect();
    let view: Vec<(Source, &str, u64)> = got
        .iter()
        .map(|f| (f.source, f.kind.name(), f.detected_at_ns))
        .collect();
    assert_eq!(
        view,
        [
            (Source::CrashDetector, "component_suspect", seen[0]),
            (Source::CrashDetector, "component_dead", seen[1]),
        ]
    );
    assert!(got[0].id < got[1].id);
    d.stop().unwrap();
    bus.quiet("crash");
}

#[test]
fn the_rollback_manager_reports_transactions_in_flight_at_a_crash_on_the_shared_bus() {
    for (_, placement) in both_placements(PS) {
        let bus = Bus::new();
        let (_raw, det) = detector(&bus, placement);
        let dir = Arc::new(CrashDir::new());
        let mgr = rollback(&bus, dir.clone(), det.clone());
        // Two transactions in flight; a third commits, which makes the
        // journal (their undo included) durable.
        let (t, u) = (mgr.begin().unwrap(), mgr.begin().unwrap());
        mgr.write(t, PageId(2), 0, &[0xAB; 32]).unwrap();
        mgr.write(u, PageId(6), 8, &[0xCD; 16]).unwrap();
        let c = mgr.begin().unwrap();
        mgr.write(c, PageId(9), 0, &[0xEF; 8]).unwrap();
        mgr.commit(c).unwrap();
        drop(mgr);
        bus.quiet("rollback: nothing before the restart");
        // The process restarts at 9 s over what reached the disk.
        bus.at(9);
        let mgr = rollback(&bus, Arc::new(dir.crash(0)), det.clone());
        assert_eq!(mgr.recovery_report().rolled_back.len(), 2);
        let got = bus.expect(
            "rollback",
            &[(Source::TransactionRollbackManager, "in_flight_at_crash", 9)],
        );
        assert_eq!(
            got[0].kind,
            selfheal::FailureKind::InFlightAtCrash { count: 2 }
        );
        assert!(
            got[0].evidence.contains("2 transactions were in flight"),
            "{}",
            got[0].evidence
        );
        // The pages read back as before the transactions, and verify.
        let mut buf = vec![0u8; PS];
        det.read_verified(PageId(2), &mut buf).unwrap();
        assert_eq!(buf[0], 3);
        bus.quiet("rollback");
    }
}

#[test]
fn the_crash_watchdogs_own_death_arrives_on_the_shared_bus() {
    let bus = Bus::new();
    let d = CrashConfig::new()
        .clock(bus.clock())
        .failure_sink(bus.sink.clone())
        .heartbeat(HeartbeatConfig::new().timeout(Duration::from_secs(2)))
        .build()
        .unwrap();
    d.start().unwrap();
    let wal = d.register("wal-writer").unwrap();
    for _ in 0..20 {
        wal.beat();
        bus.clock.advance(Duration::from_millis(100));
        assert!(d.check_now().unwrap().is_empty());
    }
    // The bus's callback panics on the watchdog thread when the next
    // failure is sent: the watchdog dies at that moment.
    bus.kill_watchdog.store(true, Ordering::SeqCst);
    let mut died_at = None;
    for _ in 0..30 {
        bus.clock.advance(Duration::from_millis(100));
        if d.check_now().is_err() {
            died_at = Some(bus.clock.now_ns());
            break;
        }
    }
    let at = died_at.expect("the watchdog died when it reported");
    let got = bus.sink.failures().try_iter().collect::<Vec<_>>();
    let view: Vec<(Source, &str, u64)> = got
        .iter()
        .map(|f| (f.source, f.kind.name(), f.detected_at_ns))
        .collect();
    assert_eq!(
        view,
        [
            (Source::CrashDetector, "component_suspect", at),
            (Source::CrashDetector, "worker_died", at),
        ]
    );
    assert!(got[0].id < got[1].id);
    assert_eq!(
        got[1].target(),
        selfheal::Target::Component(Arc::from("crash detector"))
    );
    assert!(
        got[1].evidence.contains("failure callback bug (injected)"),
        "{}",
        got[1].evidence
    );
    assert!(!d.is_running());
    assert!(matches!(d.register("x"), Err(Error::Stopped { .. })));
    assert!(matches!(d.stop(), Err(Error::Stopped { .. })));
    bus.quiet("crash");
}

#[test]
fn the_snapshot_manager_reports_a_failed_snapshot_and_a_dead_periodic_thread_on_the_shared_bus() {
    let bus = Bus::new();
    let dir = tempfile::tempdir().unwrap();
    let m = snapshots(&bus, dir.path());
    let raw = Arc::new(MemStore::new(PS, PAGES).unwrap());
    fill_store(raw.as_ref(), 7).unwrap();
    let store = Arc::new(FaultyStore::new(raw.clone()));
    store.fail_reads(None, ReadFault::Eio, u32::MAX);
    bus.at(2);
    assert!(full_snapshot(&m, store.as_ref()).is_err());
    bus.expect(
        "snapshot",
        &[(Source::StateSnapshotManager, "snapshot_failed", 2)],
    );
    // The periodic thread dies: the host's LSN function panics when due.
    store.clear();
    let p = PeriodicConfig::new(Duration::from_secs(60))
        .build(
            &m,
            store.clone(),
            Arc::new(WriteGate::new()),
            Arc::new(|| panic!("host LSN function bug (injected)")),
        )
        .unwrap();
    p.start().unwrap();
    bus.at(62);
    bus.expect(
        "snapshot",
        &[(Source::StateSnapshotManager, "worker_died", 62)],
    );
    assert!(matches!(p.stop(), Err(Error::Stopped { .. })));
    bus.quiet("snapshot");
}

#[test]
fn the_health_monitor_reports_a_degraded_metric_a_failed_probe_and_its_dead_sampler_on_the_shared_bus(
) {
    let bus = Bus::new();
    let probe = Arc::new(ScriptedProbe::new("lag", 1.0));
    let monitor = health(&bus, probe.clone());
    bus.at(1);
    monitor.sample_now().unwrap();
    bus.quiet("health: healthy");
    probe.set(15.0);
    bus.at(2);
    monitor.sample_now().unwrap();
    bus.expect("health", &[(Source::HealthMonitor, "health_degraded", 2)]);
    probe.fail_next(1);
    bus.at(3);
    monitor.sample_now().unwrap();
    bus.expect("health", &[(Source::HealthMonitor, "probe_failed", 3)]);
    // The sampler's thread dies: the bus's callback panics on it.
    probe.set(25.0);
    bus.kill_sampler.store(true, Ordering::SeqCst);
    // Rounds are due by the clock: started one interval (5 ms) before 4 s,
    // the first round is due when the clock reaches 4 s.
    bus.clock.set_ns(4 * SEC - 5_000_000);
    monitor.start().unwrap();
    bus.at(4);
    let got = bus.expect(
        "health",
        &[
            (Source::HealthMonitor, "health_critical", 4),
            (Source::HealthMonitor, "worker_died", 4),
        ],
    );
    // The dead component is named as its source is, in the lowercase
    // style every component's name has.
    assert_eq!(
        got[1].target(),
        selfheal::Target::Component(Arc::from(Source::HealthMonitor.as_str()))
    );
    assert!(matches!(
        monitor.stop(),
        Err(Error::Stopped {
            component: "health monitor",
            ..
        })
    ));
    bus.quiet("health");
}

/// Every component on one bus and one clock at once: their failures, caused
/// one after another at growing times, form one stream in that order.
#[test]
fn all_components_on_one_bus_interleave_in_the_order_and_at_the_times_they_failed() {
    for (_, placement) in both_placements(PS) {
        let bus = Bus::new();
        let (raw, det) = detector(&bus, placement);
        let tmp = tempfile::tempdir().unwrap();
        let crash_dir = tmp.path().join("crash");
        let crash = || {
            let (marker, _) = RunMarker::open(&crash_dir).unwrap();
            CrashConfig::new()
                .clock(bus.clock())
                .failure_sink(bus.sink.clone())
                .run_marker(marker)
                .build()
                .unwrap()
        };
        drop(crash());
        let journal = Arc::new(CrashDir::new());
        let mgr = rollback(&bus, journal.clone(), det.clone());
        let snaps = snapshots(&bus, &tmp.path().join("snapshots"));
        let probe = Arc::new(ScriptedProbe::new("lag", 1.0));
        let monitor = health(&bus, probe.clone());
        let replica = Arc::new(FaultyReplica::new(Arc::new(StoreReplica::new(
            "mirror",
            Arc::new(MemStore::new(PS, PAGES).unwrap()),
        ))));
        replica.set_down(true);
        let rep = RepairConfig::new()
            .replica_failing_after(1)
            .clock(bus.clock())
            .failure_sink(bus.sink.clone())
            .build(det.clone())
            .unwrap();
        rep.add_replica(replica).unwrap();
        bus.quiet("all: nothing failed yet");

        bus.at(1);
        corrupt(&raw, &det, 1);
        bus.at(2);
        let crashed = crash();
        crashed.start().unwrap();
        bus.at(3);
        monitor.sample_now().unwrap();
        probe.set(15.0);
        monitor.sample_now().unwrap();
        bus.at(4);
        let failing = Arc::new(FaultyStore::new(raw.clone()));
        failing.fail_reads(None, ReadFault::Eio, u32::MAX);
        assert!(full_snapshot(&snaps, failing.as_ref()).is_err());
        bus.at(5);
        let t = mgr.begin().unwrap();
        mgr.write(t, PageId(6), 0, &[0xEE; 16]).unwrap();
        // Not retryable (EROFS): poisoned, not stalled.
        journal.fail_syncs_with(1, 30, false);
        assert!(mgr.commit(t).is_err());
        bus.at(6);
        assert!(matches!(
            rep.repair_page(PageId(1)).unwrap().outcome,
            RepairOutcome::Irreparable { .. }
        ));
        bus.at(7);
        let scrub = ScrubConfig::new()
            .unlimited()
            .clock(bus.clock())
            .failure_sink(bus.sink.clone())
            .build(det.clone())
            .unwrap();
        scrub.start().unwrap();
        scrub.wait_for_passes(1, WAIT).unwrap();
        bus.at(8);
        raw.fail_reads(None, ReadFault::Panic, u32::MAX);
        assert!(scrub.wait_for_passes(u64::MAX, WAIT).is_err());

        let got = bus.expect(
            "all",
            &[
                (Source::CorruptionDetector, "corrupt_page", 1),
                (Source::CrashDetector, "unclean_shutdown", 2),
                (Source::HealthMonitor, "health_degraded", 3),
                (Source::StateSnapshotManager, "snapshot_failed", 4),
                (Source::TransactionRollbackManager, "journal_poisoned", 5),
                (Source::DataRepairer, "replica_failing", 6),
                (Source::DataRepairer, "irreparable_page", 6),
                (Source::Scrubber, "worker_died", 8),
            ],
        );
        for w in got.windows(2) {
            assert!(w[0].detected_at_ns <= w[1].detected_at_ns, "{got:?}");
        }
        bus.quiet("all");
        crashed.stop().unwrap();
    }
}
