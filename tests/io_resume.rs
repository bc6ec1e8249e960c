//! Goal: show that the durable checksum table's log and the snapshot writer, like the undo journal, survive retryable I/O errors (a failed write or fsync, a full disk) and resume on their own once the fault clears, with nothing acknowledged lost and nothing partial trusted. Method: the detector over a `MemStore` with its sidecar table on a `CrashFiles` whose fsyncs fail (dropping the unsynced bytes the way Linux may), whose appends fail part-way, or whose disk is full; a model of the acknowledged page bytes byte-compared with the store and checked against the table reopened from the durable image only (a crash right after), by example and by proptest over random fault schedules; the `AutoRecoveryManager` resuming a stalled log on its own; snapshots whose every I/O step fails with `EIO` or `ENOSPC` (the manager's injected faults), after which the manifest, the head and the dirty notices are as before and the next snapshot (asked for, or the periodic thread's after its backoff) restores byte-equal to the store. The trailer placement has no log: it runs the same page workloads as a reference (the faults touch nothing it uses).

mod recovery_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use selfheal::checksum::{TableConfig, RESUME_BACKOFF_BASE};
use selfheal::healer::{HealerConfig, Outcome, Problem};
use selfheal::snapshot::{
    PeriodicConfig, SnapshotConfig, SnapshotIo, SnapshotKind, StateSnapshotManager, WriteGate,
};
use selfheal::testing::CrashFiles;
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, CorruptionDetector, Error, FailureKind,
    FailureSink, Lsn, ManualClock, MemStore, Mode, PageId, PageStore, Target,
};

const PS: usize = 512;
const PAGES: u64 = 16;
const ENOSPC: i32 = 28;
const EIO: i32 = 5;
const EROFS: i32 = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    Trailer,
    Sidecar,
}

const PLACEMENTS: [Placement; 2] = [Placement::Trailer, Placement::Sidecar];

fn table_config() -> TableConfig {
    // Small limits, so that syncs compact (a new log is created) often.
    TableConfig::new(PS)
        .compact_log_bytes_min(0)
        .compact_ratio_pct(200)
}

/// Unique bytes per (page, stamp); the trailer's room left zero.
fn contents(page: u64, stamp: u64) -> Vec<u8> {
    let mut b: Vec<u8> = (0..PS)
        .map(|i| (stamp.wrapping_mul(37) as usize + i * 5 + page as usize) as u8 | 1)
        .collect();
    b[..8].copy_from_slice(&stamp.to_le_bytes());
    let n = b.len();
    b[n - 16..].fill(0);
    b
}

/// A detector over `store`, its table (sidecar) on `files`, reporting on
/// `sink`.
fn detector(
    placement: Placement,
    files: &Arc<CrashFiles>,
    store: &Arc<MemStore>,
    sink: &FailureSink,
) -> (CorruptionDetector, Option<Arc<ChecksumTable>>) {
    detector_with(table_config(), placement, files, store, sink)
}

/// As [`detector`], the table on a clock that never moves: a stalled log
/// resumes only when the test calls `resume` (its own retry waits for the
/// backoff on that clock), whatever the machine's load.
fn detector_frozen(
    placement: Placement,
    files: &Arc<CrashFiles>,
    store: &Arc<MemStore>,
    sink: &FailureSink,
) -> (CorruptionDetector, Option<Arc<ChecksumTable>>) {
    let cfg = table_config().clock(Arc::new(selfheal::ManualClock::new()));
    detector_with(cfg, placement, files, store, sink)
}

fn detector_with(
    cfg: TableConfig,
    placement: Placement,
    files: &Arc<CrashFiles>,
    store: &Arc<MemStore>,
    sink: &FailureSink,
) -> (CorruptionDetector, Option<Arc<ChecksumTable>>) {
    let (placement, table) = match placement {
        Placement::Trailer => (ChecksumPlacement::Trailer, None),
        Placement::Sidecar => {
            let t = Arc::new(cfg.open_on(files.clone(), "t").unwrap());
            (ChecksumPlacement::Sidecar(t.clone()), Some(t))
        }
    };
    let det = CorruptionConfig::new(placement)
        .failure_sink(sink.clone())
        .build(store.clone())
        .unwrap();
    (det, table)
}

/// What the store must hold: per page, the bytes of its last acknowledged
/// write (as sealed).
#[derive(Default, Clone)]
struct Model {
    pages: BTreeMap<u64, Vec<u8>>,
}

impl Model {
    fn write(&mut self, det: &CorruptionDetector, page: u64, stamp: u64) -> selfheal::Result<()> {
        let mut b = contents(page, stamp);
        det.write_sealed(PageId(page), &mut b)?;
        self.pages.insert(page, b);
        Ok(())
    }

    /// The store holds exactly the acknowledged bytes, and `det` verifies
    /// every one of them.
    fn check(&self, det: &CorruptionDetector, store: &MemStore) {
        for (&p, want) in &self.pages {
            let mut raw = vec![0u8; PS];
            store.read_page(PageId(p), &mut raw).unwrap();
            assert_eq!(&raw, want, "page {p}: the store's bytes");
            let mut b = vec![0u8; PS];
            det.read_verified(PageId(p), &mut b)
                .unwrap_or_else(|e| panic!("page {p} does not verify: {e}"));
        }
    }
}

/// Drops the detector and its table, keeps only the durable files (a
/// crash), reopens, and checks the model against the store.
fn crash_and_check(placement: Placement, files: &CrashFiles, store: &Arc<MemStore>, model: &Model) {
    let files = Arc::new(files.crash(None));
    if placement == Placement::Sidecar {
        let t = table_config().open_on(files.clone(), "t").unwrap();
        assert_eq!(
            t.stats().torn_bytes_at_open,
            0,
            "nothing torn: every byte was synced"
        );
    }
    let (det, _) = detector(placement, &files, store, &FailureSink::new(8));
    model.check(&det, store);
}

fn stalled(e: &Error, no_space: bool) -> bool {
    matches!(e, Error::Stalled { no_space: n, .. } if *n == no_space) && e.is_retryable()
}

// ---- the checksum table's log ---------------------------------------------

#[test]
fn a_failed_log_fsync_refuses_the_write_and_a_resume_keeps_every_acknowledged_page() {
    for placement in PLACEMENTS {
        for errno in [EIO, ENOSPC] {
            let files = Arc::new(CrashFiles::new());
            let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
            let sink = FailureSink::new(64);
            let (det, table) = detector_frozen(placement, &files, &store, &sink);
            let mut model = Model::default();
            for p in 0..4 {
                model.write(&det, p, 1).unwrap();
            }
            det.sync().unwrap();
            // The log's fsync fails and the kernel drops the unsynced
            // bytes: a second fsync would succeed with them gone.
            files.fail_syncs_with(1, errno, true);
            let before = {
                let mut b = vec![0u8; PS];
                store.read_page(PageId(4), &mut b).unwrap();
                b
            };
            match (placement, model.write(&det, 4, 2)) {
                (Placement::Trailer, r) => r.unwrap(),
                (Placement::Sidecar, Err(e)) => {
                    assert!(stalled(&e, errno == ENOSPC), "{e}");
                    // The page was not written: its checksum is not durable.
                    let mut b = vec![0u8; PS];
                    store.read_page(PageId(4), &mut b).unwrap();
                    assert_eq!(b, before, "a refused write never reaches the store");
                    let e = model.write(&det, 5, 2).unwrap_err();
                    assert!(stalled(&e, errno == ENOSPC), "{e}");
                    let f = sink.failures().try_recv().expect("the stall is on the bus");
                    assert_eq!(
                        f.kind,
                        FailureKind::ChecksumLogStalled {
                            no_space: errno == ENOSPC
                        }
                    );
                    assert_eq!(
                        f.kind.target(),
                        Target::Component(Arc::from("checksum table"))
                    );
                    // Verification goes on.
                    model.check(&det, &store);
                    let t = table.as_ref().unwrap();
                    let stall = t.log_stall().expect("stalled");
                    let r = t.resume().unwrap();
                    assert!(
                        r.was_stalled && r.bytes_rewritten == stall.pending_bytes,
                        "{r:?}"
                    );
                    assert!(t.log_stall().is_none());
                    model.write(&det, 4, 2).unwrap();
                    model.write(&det, 5, 2).unwrap();
                }
                (Placement::Sidecar, Ok(())) => panic!("the write was acknowledged"),
            }
            for p in 6..9 {
                model.write(&det, p, 3).unwrap();
            }
            det.sync().unwrap();
            model.check(&det, &store);
            drop(det);
            drop(table);
            crash_and_check(placement, &files, &store, &model);
        }
    }
}

/// A host that only syncs after the disk has room again sees the log
/// resume on its own (the sync retries a stall whose backoff has passed,
/// as a write does); and while it is stalled, a sync that settles only
/// pages that already have a checksum succeeds — a rollback that wrote no
/// page is not failed by it — while one that would give a page its first
/// checksum fails, typed.
#[test]
fn a_sync_under_a_stall_fails_only_for_a_first_checksum_and_resumes_the_log_on_its_own() {
    let files = Arc::new(CrashFiles::new());
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let sink = FailureSink::new(64);
    let (det, table) = detector_with(
        TableConfig::new(PS),
        Placement::Sidecar,
        &files,
        &store,
        &sink,
    );
    let table = table.unwrap();
    let det = Arc::new(det);
    let mut model = Model::default();
    model.write(&det, 0, 1).unwrap();
    model.write(&det, 1, 1).unwrap();
    det.sync().unwrap();
    // A rollback whose page already holds its before-image writes nothing
    // and syncs: no first checksum is at stake, the stall does not fail it.
    let mgr = selfheal::RollbackConfig::with_storage(Arc::new(selfheal::testing::CrashDir::new()))
        .build(det.clone())
        .unwrap();
    let txn = mgr.begin().unwrap();
    mgr.write(txn, PageId(1), 0, &contents(1, 1)[..32]).unwrap();
    files.set_no_space(true);
    assert!(stalled(&model.write(&det, 3, 1).unwrap_err(), true));
    mgr.rollback(txn).unwrap();
    files.set_no_space(false);
    table.resume().unwrap();
    // Page 2 is written but not synced when the log stalls: its first
    // checksum may not be given out while the log cannot record it.
    model.write(&det, 2, 1).unwrap();
    files.set_no_space(true);
    assert!(stalled(&model.write(&det, 3, 2).unwrap_err(), true));
    assert!(stalled(&det.sync().unwrap_err(), true));
    files.set_no_space(false);
    let end = Instant::now() + RESUME_BACKOFF_BASE * 8 + Duration::from_secs(5);
    loop {
        match det.sync() {
            Ok(()) => break,
            Err(e) => assert!(
                stalled(&e, true) && Instant::now() < end,
                "{e}; {:?}",
                table.log_stall()
            ),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    crash_and_check(Placement::Sidecar, &files, &store, &model);
}

#[test]
fn a_short_append_is_cut_and_written_again_exactly_once() {
    let files = Arc::new(CrashFiles::new());
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let sink = FailureSink::new(64);
    let (det, table) = detector(Placement::Sidecar, &files, &store, &sink);
    let t = table.unwrap();
    let mut model = Model::default();
    model.write(&det, 0, 1).unwrap();
    let name = files
        .names()
        .into_iter()
        .find(|n| n.starts_with("t.log-"))
        .unwrap();
    let durable = files.file(&name).unwrap();
    files.fail_appends(1, EIO);
    assert!(stalled(&model.write(&det, 1, 1).unwrap_err(), false));
    let torn = files.file(&name).unwrap();
    assert!(
        torn.len() > durable.len(),
        "half the frame reached the file"
    );
    let r = t.resume().unwrap();
    assert_eq!(r.bytes_kept, durable.len() as u64);
    let after = files.file(&name).unwrap();
    assert_eq!(
        &after[..durable.len()],
        &durable[..],
        "the durable prefix as it was"
    );
    assert_eq!(
        after.len() as u64,
        durable.len() as u64 + r.bytes_rewritten,
        "the torn half is gone; the frame is there once"
    );
    model.write(&det, 1, 1).unwrap();
    drop(det);
    drop(t);
    crash_and_check(Placement::Sidecar, &files, &store, &model);
}

#[test]
fn enospc_waits_for_space_then_the_table_resumes_on_its_own() {
    for placement in PLACEMENTS {
        let files = Arc::new(CrashFiles::new());
        let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
        let sink = FailureSink::new(64);
        let (det, table) = detector(placement, &files, &store, &sink);
        let mut model = Model::default();
        model.write(&det, 0, 1).unwrap();
        det.sync().unwrap();
        files.set_no_space(true);
        if let Some(t) = &table {
            let e = model.write(&det, 1, 1).unwrap_err();
            assert!(stalled(&e, true), "{e}");
            // Resumes while the disk stays full fail and keep everything.
            for n in 1..=2u32 {
                let e = t.resume().unwrap_err();
                assert!(stalled(&e, true), "{e}");
                let s = t.log_stall().unwrap();
                assert_eq!(s.failed_resumes, n);
                assert!(s.pending_bytes > 0);
            }
            // No page write gets through while the log is stalled.
            let e = model.write(&det, 2, 1).unwrap_err();
            assert!(stalled(&e, true), "{e}");
        } else {
            model.write(&det, 1, 1).unwrap();
            model.write(&det, 2, 1).unwrap();
        }
        files.set_no_space(false);
        // Nobody calls resume: the next write after the backoff resumes it
        // (retries until then are refused, never half-done).
        let end = Instant::now() + RESUME_BACKOFF_BASE * 8 + Duration::from_secs(5);
        loop {
            match model.write(&det, 1, 1) {
                Ok(()) => break,
                Err(e) => assert!(stalled(&e, true) && Instant::now() < end, "{e}"),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(t) = &table {
            assert!(t.log_stall().is_none());
        }
        model.write(&det, 2, 1).unwrap();
        det.sync().unwrap();
        model.check(&det, &store);
        drop(det);
        drop(table);
        crash_and_check(placement, &files, &store, &model);
    }
}

#[test]
fn a_stalled_compaction_creates_its_new_log_at_the_resume() {
    let files = Arc::new(CrashFiles::new());
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let sink = FailureSink::new(64);
    let (det, table) = detector(Placement::Sidecar, &files, &store, &sink);
    let t = table.unwrap();
    let mut model = Model::default();
    for p in 0..6 {
        model.write(&det, p, 1).unwrap();
    }
    det.sync().unwrap();
    let generation = t.stats().generation;
    model.write(&det, 6, 1).unwrap();
    // The compaction's new log cannot be written.
    files.set_no_space(true);
    let e = t.compact().unwrap_err();
    assert!(t.log_stall().is_some_and(|s| s.no_space), "{e}");
    assert!(stalled(&model.write(&det, 7, 1).unwrap_err(), true));
    files.set_no_space(false);
    t.resume().unwrap();
    model.write(&det, 7, 1).unwrap();
    det.sync().unwrap();
    t.flush().unwrap();
    // A crash now: the old base, its log and the new log created by the
    // resume replay to the same table.
    crash_and_check(Placement::Sidecar, &files, &store, &model);
    t.compact().unwrap();
    assert!(
        t.stats().generation > generation + 1,
        "the next compaction takes the next generation"
    );
    model.check(&det, &store);
    drop(det);
    drop(t);
    crash_and_check(Placement::Sidecar, &files, &store, &model);
}

#[test]
fn a_failure_that_is_not_retryable_still_poisons_and_a_reopen_recovers() {
    let files = Arc::new(CrashFiles::new());
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let sink = FailureSink::new(64);
    let (det, table) = detector(Placement::Sidecar, &files, &store, &sink);
    let mut model = Model::default();
    model.write(&det, 0, 1).unwrap();
    files.fail_syncs_with(1, EROFS, false);
    let e = model.write(&det, 1, 1).unwrap_err();
    assert!(matches!(e, Error::Poisoned { .. }), "{e}");
    assert!(matches!(
        table.as_ref().unwrap().resume(),
        Err(Error::Poisoned { .. })
    ));
    assert!(
        sink.failures().try_recv().ok().is_none(),
        "a poisoned log is not a stall"
    );
    drop(det);
    drop(table);
    crash_and_check(Placement::Sidecar, &files, &store, &model);
}

#[derive(Clone, Debug)]
enum Op {
    Write(u64),
    Sync,
    Compact,
    FailSync { errno: i32, drop: bool },
    FailAppend(i32),
    Full(bool),
    Resume,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..PAGES).prop_map(Op::Write),
        1 => Just(Op::Sync),
        1 => Just(Op::Compact),
        1 => (prop_oneof![Just(EIO), Just(ENOSPC)], any::<bool>())
            .prop_map(|(errno, drop)| Op::FailSync { errno, drop }),
        1 => prop_oneof![Just(EIO), Just(ENOSPC)].prop_map(Op::FailAppend),
        1 => any::<bool>().prop_map(Op::Full),
        2 => Just(Op::Resume),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any schedule of faults: a write is acknowledged or refused with a
    /// retryable error (never poisoned); after the faults clear and a
    /// resume, the store equals the model byte for byte, and so does what
    /// a crash then leaves (the durable table accepts every acknowledged
    /// page).
    #[test]
    fn any_fault_schedule_resumes_to_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        for placement in PLACEMENTS {
            let files = Arc::new(CrashFiles::new());
            let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
            let sink = FailureSink::new(1024);
            let (det, table) = detector(placement, &files, &store, &sink);
            let mut model = Model::default();
            for (stamp, op) in ops.iter().enumerate() {
                match op {
                    Op::Write(p) => {
                        let before = model.pages.get(p).cloned();
                        match model.write(&det, *p, stamp as u64 + 1) {
                            Ok(()) => {}
                            Err(e) => {
                                prop_assert!(e.is_retryable(), "{}", e);
                                let mut raw = vec![0u8; PS];
                                store.read_page(PageId(*p), &mut raw).unwrap();
                                prop_assert_eq!(Some(raw), before.or(Some(vec![0u8; PS])));
                            }
                        }
                    }
                    Op::Sync => {
                        if let Err(e) = det.sync() {
                            prop_assert!(e.is_retryable(), "{}", e);
                        }
                    }
                    Op::Compact => {
                        if let Some(t) = &table {
                            if let Err(e) = t.compact() {
                                prop_assert!(t.log_stall().is_some() || e.is_retryable(), "{}", e);
                            }
                        }
                    }
                    Op::FailSync { errno, drop } => files.fail_syncs_with(1, *errno, *drop),
                    Op::FailAppend(errno) => files.fail_appends(1, *errno),
                    Op::Full(full) => files.set_no_space(*full),
                    Op::Resume => {
                        if let Some(t) = &table {
                            if let Err(e) = t.resume() {
                                prop_assert!(matches!(e, Error::Stalled { .. }), "{}", e);
                            }
                        }
                    }
                }
            }
            files.set_no_space(false);
            files.fail_syncs_with(0, EIO, false);
            files.fail_appends(0, EIO);
            if let Some(t) = &table {
                t.resume().unwrap();
                prop_assert!(t.log_stall().is_none());
            }
            det.sync().unwrap();
            model.check(&det, &store);
            drop(det);
            drop(table);
            crash_and_check(placement, &files, &store, &model);
        }
    }
}

// ---- through the AutoRecoveryManager ----------------------------------------

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_manager_resumes_a_stalled_checksum_log() {
    let tmp = tempfile::tempdir().unwrap();
    let files = Arc::new(CrashFiles::new());
    let table = Arc::new(
        TableConfig::new(recovery_common::PS)
            .open_on(files.clone(), "t")
            .unwrap(),
    );
    let (raw, _mirror, m) = recovery_common::rig(
        ChecksumPlacement::Sidecar(table.clone()),
        8,
        tmp.path(),
        |c| {
            c.mode(Mode::Automatic).healer(
                HealerConfig::new()
                    .cooldown(Duration::from_millis(1))
                    .backoff(Duration::from_millis(1), Duration::from_millis(5)),
            )
        },
    );
    m.start().unwrap();
    let det = m.detector().clone();
    files.fail_syncs_with(1, EIO, true);
    let mut b = recovery_common::page(77);
    let e = det.write_sealed(PageId(3), &mut b).unwrap_err();
    assert!(stalled(&e, false), "{e}");
    // Nobody calls resume: the manager's remedy does.
    wait_for("the resume", Duration::from_secs(20), || {
        table.log_stall().is_none()
    });
    let target = Target::Component(Arc::from("checksum table"));
    wait_for("the healed incident", Duration::from_secs(20), || {
        m.incidents().into_iter().any(|i| {
            i.target == target
                && i.diagnosis.problem == Problem::CHECKSUM_LOG_STALLED
                && matches!(&i.outcome, Outcome::Healed { remedy } if remedy == "resume-checksum-log")
        })
    });
    let mut b = recovery_common::page(77);
    det.write_sealed(PageId(3), &mut b).unwrap();
    det.sync().unwrap();
    m.stop().unwrap();
    assert_eq!(recovery_common::bytes(raw.as_ref(), 3), b);
    drop(det);
    drop(m);
    drop(table);
    // The durable table accepts the page written after the resume.
    let again = TableConfig::new(recovery_common::PS)
        .open_on(Arc::new(files.crash(None)), "t")
        .unwrap();
    again.verify(PageId(3), &b).unwrap();
}

// ---- snapshots ----------------------------------------------------------------

const STEPS: [SnapshotIo; 6] = [
    SnapshotIo::FileWrite,
    SnapshotIo::FileSync,
    SnapshotIo::FileRename,
    SnapshotIo::DirSync,
    SnapshotIo::ManifestWrite,
    SnapshotIo::ManifestDirSync,
];

fn snapshot(m: &StateSnapshotManager, store: &dyn PageStore, lsn: u64) -> selfheal::Result<u64> {
    selfheal::testing::take_paused(m, store, Lsn(lsn), SnapshotKind::Auto).map(|r| r.info.id)
}

fn store_bytes(store: &dyn PageStore) -> Vec<u8> {
    let mut b = vec![0u8; PS * store.page_count() as usize];
    store.read_pages(PageId(0), &mut b).unwrap();
    b
}

/// Restores snapshot `id` into a fresh store and returns its bytes.
fn restored(m: &StateSnapshotManager, id: u64) -> Vec<u8> {
    let target = MemStore::new(PS, PAGES).unwrap();
    m.restore(id, &target).unwrap();
    store_bytes(&target)
}

#[test]
fn a_failed_snapshot_leaves_nothing_trusted_and_the_next_one_misses_nothing() {
    for step in STEPS {
        for errno in [EIO, ENOSPC] {
            let dir = tempfile::tempdir().unwrap();
            let sink = FailureSink::new(64);
            let m = SnapshotConfig::new(dir.path(), PS)
                .failure_sink(sink.clone())
                .build()
                .unwrap();
            let store = MemStore::new(PS, PAGES).unwrap();
            for p in 0..PAGES {
                store.write_page(PageId(p), &contents(p, 1)).unwrap();
            }
            let first = snapshot(&m, &store, 1).unwrap();
            assert!(m.dirty_notices_trusted());
            // Pages change, noted dirty; the incremental snapshot fails.
            for p in [2, 9] {
                store.write_page(PageId(p), &contents(p, 2)).unwrap();
                m.note_dirty(PageId(p));
            }
            let listed = m.snapshots();
            m.fail_io(step, errno, 1);
            let e = snapshot(&m, &store, 2).unwrap_err();
            assert!(
                matches!(&e, Error::Io { source, .. } if source.raw_os_error() == Some(errno)),
                "{step:?}: {e}"
            );
            // Nothing partial is trusted; the manager is not poisoned.
            assert_eq!(m.snapshots(), listed, "{step:?}: the manifest as before");
            assert_eq!(m.head(), Some(first), "{step:?}");
            assert!(m.dirty_notices_trusted(), "{step:?}: the notices are kept");
            let f = sink
                .failures()
                .try_recv()
                .expect("the failure is on the bus");
            assert_eq!(f.kind, FailureKind::SnapshotFailed);
            // More changes, then the next snapshot: it holds every change
            // since the head, the failed snapshot's pages included.
            store.write_page(PageId(5), &contents(5, 3)).unwrap();
            m.note_dirty(PageId(5));
            let next = snapshot(&m, &store, 3).unwrap_or_else(|e| panic!("{step:?}: {e}"));
            assert!(next > first);
            assert_eq!(restored(&m, next), store_bytes(&store), "{step:?}");
            // A reopen sees the same, and no leftovers of the failed one.
            let ids: Vec<u64> = m.snapshots().iter().map(|s| s.id).collect();
            drop(m);
            let again = SnapshotConfig::new(dir.path(), PS).build().unwrap();
            assert_eq!(
                again.snapshots().iter().map(|s| s.id).collect::<Vec<_>>(),
                ids,
                "{step:?}"
            );
            assert_eq!(restored(&again, next), store_bytes(&store), "{step:?}");
            let files: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect();
            assert!(files.is_empty(), "{step:?}: {files:?}");
        }
    }
}

#[test]
fn a_manifest_whose_directory_fsync_failed_names_only_a_complete_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let m = SnapshotConfig::new(dir.path(), PS).build().unwrap();
    let store = MemStore::new(PS, PAGES).unwrap();
    for p in 0..PAGES {
        store.write_page(PageId(p), &contents(p, 1)).unwrap();
    }
    let first = snapshot(&m, &store, 1).unwrap();
    store.write_page(PageId(4), &contents(4, 2)).unwrap();
    m.note_dirty(PageId(4));
    m.fail_io(SnapshotIo::ManifestDirSync, EIO, 1);
    snapshot(&m, &store, 2).unwrap_err();
    // A crash now may keep the new manifest (its rename is in place): what
    // it names is complete and restores to the store's bytes.
    drop(m);
    let again = SnapshotConfig::new(dir.path(), PS).build().unwrap();
    let ids: Vec<u64> = again.snapshots().iter().map(|s| s.id).collect();
    assert_eq!(ids[0], first);
    let newest = *ids.last().unwrap();
    if newest != first {
        assert_eq!(restored(&again, newest), store_bytes(&store));
    }
}

#[test]
fn the_periodic_thread_retries_a_failed_snapshot_after_its_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let sink = FailureSink::new(64);
    let m = SnapshotConfig::new(dir.path(), PS)
        .clock(Arc::new(clock.clone()))
        .failure_sink(sink.clone())
        .build()
        .unwrap();
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    for p in 0..PAGES {
        store.write_page(PageId(p), &contents(p, 1)).unwrap();
    }
    let interval = Duration::from_secs(3600);
    let p = PeriodicConfig::new(interval)
        .build(
            &m,
            store.clone(),
            Arc::new(WriteGate::new()),
            Arc::new(|| Lsn(1)),
        )
        .unwrap();
    p.start().unwrap();
    m.fail_io(SnapshotIo::FileSync, ENOSPC, 2);
    let rounds = |n: u64| {
        let end = Instant::now() + Duration::from_secs(20);
        while p.stats().taken + p.stats().failed < n {
            assert!(Instant::now() < end, "{:?}", p.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    clock.advance(interval);
    rounds(1);
    assert_eq!(p.stats().failed, 1);
    // The retry is due well before the next interval: at most the base.
    clock.advance(selfheal::snapshot::PERIODIC_RETRY_BASE);
    rounds(2);
    assert_eq!(p.stats().failed, 2, "still failing: backing off");
    // The disk has room again: the retry after the doubled backoff succeeds.
    clock.advance(selfheal::snapshot::PERIODIC_RETRY_BASE * 2);
    rounds(3);
    assert_eq!(p.stats().taken, 1, "{:?}", p.stats());
    p.stop().unwrap();
    let failed: Vec<_> = sink.failures().try_iter().collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().all(|f| f.kind == FailureKind::SnapshotFailed));
    let id = m.head().unwrap();
    assert_eq!(restored(&m, id), store_bytes(store.as_ref()));
}
