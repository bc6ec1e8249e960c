//! The snapshot manager reports its own failures on one shared failure bus, on one clock: a snapshot that fails (a store that fails its reads, asked for or periodic), a retention that fails after a periodic snapshot, a poisoned manager (reported once, not at every tick) and a periodic thread that dies (a host LSN function that panics) arrive on a `FailureSink` shared with another component, stamped from one `ManualClock` — which also alone decides when periodic snapshots are due and how old a snapshot is for retention.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal::snapshot::{
    Consistency, PeriodicConfig, PeriodicSnapshots, Retention, SnapshotConfig, SnapshotKind,
    SnapshotRequest, StateSnapshotManager, WriteGate,
};
use selfheal::testing::{fill_store, FaultyStore, ReadFault};
use selfheal::{
    Clock, Error, Failure, FailureKind, FailureSink, Lsn, ManualClock, MemStore, PageStore, Source,
};

const PS: usize = 256;
const PAGES: u64 = 8;

fn manager(dir: &std::path::Path, clock: &ManualClock, sink: &FailureSink) -> StateSnapshotManager {
    SnapshotConfig::new(dir, PS)
        .clock(Arc::new(clock.clone()))
        .failure_sink(sink.clone())
        .build()
        .unwrap()
}

fn full(m: &StateSnapshotManager, store: &dyn PageStore, lsn: u64) -> selfheal::Result<u64> {
    selfheal::testing::take_paused(m, store, Lsn(lsn), SnapshotKind::Full).map(|r| r.info.id)
}

/// The next failure on the bus, waiting up to 20 s of real time.
fn next(sink: &FailureSink) -> Failure {
    sink.failures()
        .recv_timeout(Duration::from_secs(20))
        .expect("a failure report")
}

#[test]
fn a_failed_snapshot_and_a_dead_periodic_thread_arrive_on_one_sink_on_one_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(5));
    let sink = FailureSink::new(64);
    // Another component on the same bus reports first.
    sink.report(
        Source::Host,
        FailureKind::UncleanShutdown,
        "seen by the host",
        clock.now_ns(),
    );
    let m = manager(dir.path(), &clock, &sink);
    let raw = Arc::new(MemStore::new(PS, PAGES).unwrap());
    fill_store(raw.as_ref(), 7).unwrap();
    let store = Arc::new(FaultyStore::new(raw.clone()));

    // 1. A snapshot asked for fails: the store fails its reads.
    store.fail_reads(None, ReadFault::Eio, u32::MAX);
    let e = full(&m, store.as_ref(), 1).unwrap_err();
    assert!(!matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(m.snapshots().is_empty(), "a failed snapshot is not listed");
    let host = next(&sink);
    assert_eq!(host.source, Source::Host);
    let failed = next(&sink);
    assert_eq!(failed.source, Source::StateSnapshotManager);
    assert_eq!(failed.kind, FailureKind::SnapshotFailed);
    assert_eq!(failed.detected_at_ns, 5_000_000_000);
    assert!(failed.id > host.id, "one ordered stream");
    assert!(
        failed.evidence.contains("a snapshot"),
        "{}",
        failed.evidence
    );
    // The manager's own accessors reach the same bus.
    m.failure_sink()
        .report(Source::Host, FailureKind::UncleanShutdown, "x", 0);
    assert_eq!(next(&sink).evidence, "x");

    // 2. A periodic snapshot fails the same way, when the clock says it is due.
    let gate = Arc::new(WriteGate::new());
    let panic_now = Arc::new(AtomicBool::new(false));
    let p2 = panic_now.clone();
    let p = PeriodicConfig::new(Duration::from_secs(60))
        .build(
            &m,
            store.clone(),
            gate,
            Arc::new(move || {
                assert!(!p2.load(Ordering::SeqCst), "host bug in the LSN function");
                Lsn(2)
            }),
        )
        .unwrap();
    p.start().unwrap();
    // Real time passes, the clock does not: nothing is due.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(p.stats().failed + p.stats().taken, 0, "{:?}", p.stats());
    assert!(sink.failures().is_empty());
    clock.advance(Duration::from_secs(60));
    let periodic = next(&sink);
    assert_eq!(periodic.kind, FailureKind::SnapshotFailed);
    assert_eq!(periodic.source, Source::StateSnapshotManager);
    assert_eq!(periodic.detected_at_ns, 65_000_000_000);
    assert!(
        periodic.evidence.contains("a periodic snapshot"),
        "{}",
        periodic.evidence
    );
    assert_eq!(p.stats().failed, 1);

    // 3. The periodic thread dies: the host's LSN function panics.
    store.clear();
    panic_now.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(60));
    let died = next(&sink);
    assert_eq!(died.source, Source::StateSnapshotManager);
    assert!(
        matches!(&died.kind, FailureKind::WorkerDied { component } if &**component == "periodic snapshots"),
        "{died:?}"
    );
    assert_eq!(died.detected_at_ns, 125_000_000_000);
    assert!(died.evidence.contains("host bug"), "{}", died.evidence);
    assert!(died.id > periodic.id && periodic.id > failed.id);
    assert!(matches!(p.snapshot_now(), Err(Error::Stopped { .. })));
    assert!(matches!(p.stop(), Err(Error::Stopped { .. })));
    assert!(!p.is_running());
    // The manager itself goes on.
    full(&m, raw.as_ref(), 3).unwrap();
    assert!(sink.failures().is_empty(), "a success reports nothing");
}

#[test]
fn a_bad_request_is_the_callers_error_not_a_reported_failure() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let sink = FailureSink::new(8);
    let m = manager(dir.path(), &clock, &sink);
    let store = MemStore::new(PS, PAGES).unwrap();
    let gate = WriteGate::new();
    let pause = gate.pause();
    let r = m.take_snapshot(
        Consistency::Paused {
            store: &store,
            pause: &pause,
            lsn: Lsn(1),
        },
        SnapshotRequest::new(SnapshotKind::Incremental),
    );
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    assert!(sink.failures().is_empty());
    // Its own bus when given none.
    let own = SnapshotConfig::new(dir.path().join("own"), PS)
        .build()
        .unwrap();
    assert!(own.failures().is_empty());
}

#[test]
fn periodic_snapshots_are_due_on_the_managers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let sink = FailureSink::new(8);
    let m = manager(dir.path(), &clock, &sink);
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let p = PeriodicConfig::new(Duration::from_secs(3600))
        .build(&m, store, Arc::new(WriteGate::new()), Arc::new(|| Lsn(1)))
        .unwrap();
    p.start().unwrap();
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(p.stats().taken, 0, "an hour has not passed on the clock");
    for round in 1..=3 {
        clock.advance(Duration::from_secs(3600));
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.stats().taken < round {
            assert!(Instant::now() < deadline, "round {round}: {:?}", p.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // A clock that jumps many intervals at once takes one snapshot, not a burst.
    clock.advance(Duration::from_secs(10 * 3600));
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.stats().taken < 4 {
        assert!(Instant::now() < deadline, "{:?}", p.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(p.stats().taken, 4);
    p.stop().unwrap();
    assert!(sink.failures().is_empty());
}

#[test]
fn retention_by_age_reads_the_managers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let sink = FailureSink::new(8);
    let m = SnapshotConfig::new(dir.path(), PS)
        .clock(Arc::new(clock.clone()))
        .failure_sink(sink.clone())
        .retention(Retention::MaxAge(Duration::from_secs(3600)))
        .build()
        .unwrap();
    let store = MemStore::new(PS, PAGES).unwrap();
    let first = full(&m, &store, 1).unwrap();
    clock.advance(Duration::from_secs(1800));
    let second = full(&m, &store, 2).unwrap();
    let snaps = m.snapshots();
    assert_eq!(
        snaps[1].created_unix_ms - snaps[0].created_unix_ms,
        1_800_000,
        "creation times move with the clock"
    );
    assert!(m.apply_retention().unwrap().is_empty());
    clock.advance(Duration::from_secs(1801));
    assert_eq!(m.apply_retention().unwrap(), vec![first]);
    assert_eq!(
        m.snapshots().iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![second]
    );
}

/// Waits until the periodic thread has counted `n` snapshots taken or
/// failed in all.
fn wait_rounds(p: &PeriodicSnapshots, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.stats().taken + p.stats().failed < n {
        assert!(Instant::now() < deadline, "{:?}", p.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_periodic_snapshots_retention_failure_arrives_on_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let sink = FailureSink::new(64);
    let m = SnapshotConfig::new(dir.path(), PS)
        .clock(Arc::new(clock.clone()))
        .failure_sink(sink.clone())
        .retention(Retention::KeepLast(1))
        .build()
        .unwrap();
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    fill_store(&*store, 1).unwrap();
    let first = full(&m, &*store, 1).unwrap();
    let p = PeriodicConfig::new(Duration::from_secs(3600))
        .kind(SnapshotKind::Full)
        .build(&m, store, Arc::new(WriteGate::new()), Arc::new(|| Lsn(2)))
        .unwrap();
    p.start().unwrap();
    m.fail_next_retention();
    clock.advance(Duration::from_secs(3600));
    wait_rounds(&p, 1);
    assert_eq!(p.stats().taken, 1, "the snapshot itself was taken");
    let f = sink
        .failures()
        .recv_timeout(Duration::from_secs(5))
        .expect("the retention failure is reported on the bus");
    assert_eq!(
        (f.source, &f.kind, f.detected_at_ns),
        (
            Source::StateSnapshotManager,
            &FailureKind::SnapshotFailed,
            3_600_000_000_000
        )
    );
    assert!(f.evidence.contains("retention"), "{}", f.evidence);
    // The snapshot retention could not delete is still listed.
    assert!(m.snapshots().iter().any(|s| s.id == first));
    p.stop().unwrap();
}

#[test]
fn a_poisoned_manager_is_reported_once_not_at_every_tick() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let sink = FailureSink::new(64);
    let m = manager(dir.path(), &clock, &sink);
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    fill_store(&*store, 1).unwrap();
    let p = PeriodicConfig::new(Duration::from_secs(3600))
        .build(&m, store, Arc::new(WriteGate::new()), Arc::new(|| Lsn(1)))
        .unwrap();
    p.start().unwrap();
    // The first snapshot stops at a simulated crash, which poisons the
    // manager; every later tick finds it poisoned.
    m.crash_at(selfheal::snapshot::CrashStep::BeforeManifest);
    for round in 1..=5 {
        clock.advance(Duration::from_secs(3600));
        wait_rounds(&p, round);
    }
    assert_eq!(p.stats().failed, 5);
    let got: Vec<Failure> = sink.failures().try_iter().collect();
    assert!(
        got.iter().all(|f| f.kind == FailureKind::SnapshotFailed),
        "{got:?}"
    );
    let poisoned = got
        .iter()
        .filter(|f| f.evidence.contains("poisoned"))
        .count();
    assert_eq!(
        got.len(),
        2,
        "the crash, then the poisoned state once: {got:?}"
    );
    assert_eq!(poisoned, 1, "{got:?}");
    p.stop().unwrap();
}
