//! Goal: after a restore to snapshot k, snapshots newer than k never serve
//! a page as a repair fallback for this store again — not in this process
//! and not after a restart — and a restore that failed after it began
//! writing leaves no snapshot serving pages, across a restart too. Method:
//! sealed pages under every placement (trailer, in-memory sidecar, durable
//! sidecar); two paused snapshots through the detector with page 0 changed
//! between them; a restore of the older one; the snapshot manager dropped
//! and reopened on the same directory (the restart); the page source asked
//! for page 0 with the restored snapshot's LSN as the floor, as a repair
//! asks. A failed restore is a store whose sync fails after every page of
//! the restore was written.

use std::sync::Arc;

use selfheal::snapshot::{
    Consistency, Retention, SnapshotConfig, SnapshotKind, SnapshotRequest, StateSnapshotManager,
    WriteGate,
};
use selfheal::testing::{every_placement, FaultyStore};
use selfheal::{
    CorruptionConfig, CorruptionDetector, Lsn, MemStore, PageId, PageSource, PageStore,
};

const PS: usize = 512;
const PAGES: u64 = 8;

fn contents(page: u64, version: u8) -> Vec<u8> {
    (0..PS)
        .map(|i| (page as usize * 13 + i * 7 + version as usize * 31) as u8 | 1)
        .collect()
}

fn manager(dir: &std::path::Path) -> StateSnapshotManager {
    SnapshotConfig::new(dir, PS)
        .retention(Retention::KeepAll)
        .build()
        .unwrap()
}

fn snapshot(m: &StateSnapshotManager, gate: &WriteGate, det: &CorruptionDetector, lsn: u64) -> u64 {
    let pause = gate.pause();
    m.take_snapshot(
        Consistency::Paused {
            store: det,
            pause: &pause,
            lsn: Lsn(lsn),
        },
        SnapshotRequest::new(SnapshotKind::Full),
    )
    .unwrap()
    .info
    .id
}

/// A store with page 0 at version 1 in snapshot `old` (LSN 10) and at
/// version 2 in snapshot `new` (LSN 20); the store holds version 2.
struct Rig {
    raw: Arc<FaultyStore>,
    det: Arc<CorruptionDetector>,
    dir: tempfile::TempDir,
    old: u64,
    new: u64,
    /// Page 0 as sealed in `old` and in `new`.
    sealed: [Vec<u8>; 2],
}

fn rig(placement: selfheal::ChecksumPlacement) -> (Rig, StateSnapshotManager) {
    let raw = Arc::new(FaultyStore::new(Arc::new(
        MemStore::new(PS, PAGES).unwrap(),
    )));
    let det = Arc::new(CorruptionConfig::new(placement).build(raw.clone()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let gate = WriteGate::new();
    let mut sealed: [Vec<u8>; 2] = [vec![0; PS], vec![0; PS]];
    for p in 0..PAGES {
        det.write_sealed(PageId(p), &mut contents(p, 1)).unwrap();
    }
    raw.read_page(PageId(0), &mut sealed[0]).unwrap();
    let old = snapshot(&m, &gate, &det, 10);
    det.write_sealed(PageId(0), &mut contents(0, 2)).unwrap();
    raw.read_page(PageId(0), &mut sealed[1]).unwrap();
    assert_ne!(sealed[0], sealed[1]);
    let new = snapshot(&m, &gate, &det, 20);
    assert!(old < new);
    (
        Rig {
            raw,
            det,
            dir,
            old,
            new,
            sealed,
        },
        m,
    )
}

/// What the page source serves for page 0 with the restored snapshot's LSN
/// as the floor.
fn served(m: &StateSnapshotManager) -> Option<Vec<u8>> {
    let mut b = vec![0u8; PS];
    m.page_source()
        .read_page(PageId(0), Some(Lsn(10)), &mut b)
        .unwrap()
        .then_some(b)
}

#[test]
fn after_a_restore_and_a_restart_a_newer_snapshot_is_no_fallback() {
    for (name, placement) in every_placement(PS) {
        let (r, m) = rig(placement);
        m.restore(r.old, r.det.as_ref()).unwrap();
        let mut b = vec![0u8; PS];
        r.raw.read_page(PageId(0), &mut b).unwrap();
        assert_eq!(b, r.sealed[0], "{name}: the restore put version 1 back");
        assert_eq!(
            served(&m).as_ref(),
            Some(&r.sealed[0]),
            "{name}: in process"
        );

        // The restart.
        drop(m);
        let m = manager(r.dir.path());
        let got = served(&m);
        assert!(
            got.as_ref() != Some(&r.sealed[1]),
            "{name}: after a restart, snapshot {} (newer than the restored {}) served the version the restore replaced",
            r.new,
            r.old
        );
        assert!(
            got.as_ref() == Some(&r.sealed[0]),
            "{name}: the restored snapshot still serves"
        );

        // A snapshot taken now is the store's state again, durably.
        det_write_and_snapshot(&r, &m, 3, 30);
        drop(m);
        let m = manager(r.dir.path());
        let mut b = vec![0u8; PS];
        assert!(m
            .page_source()
            .read_page(PageId(0), Some(Lsn(30)), &mut b)
            .unwrap());
        let mut now = vec![0u8; PS];
        r.raw.read_page(PageId(0), &mut now).unwrap();
        assert_eq!(
            b, now,
            "{name}: the newest snapshot serves after it was taken"
        );
    }
}

fn det_write_and_snapshot(r: &Rig, m: &StateSnapshotManager, version: u8, lsn: u64) {
    r.det
        .write_sealed(PageId(0), &mut contents(0, version))
        .unwrap();
    snapshot(m, &WriteGate::new(), &r.det, lsn);
}

#[test]
fn a_restore_that_failed_after_writing_leaves_no_fallback_after_a_restart() {
    for (name, placement) in every_placement(PS) {
        let (r, m) = rig(placement);
        r.raw.fail_syncs(1);
        let err = m.restore(r.old, r.det.as_ref()).unwrap_err();
        r.raw.clear();
        assert!(served(&m).is_none(), "{name}: in process ({err})");
        drop(m);
        let m = manager(r.dir.path());
        assert!(
            served(&m).is_none(),
            "{name}: after a restart a snapshot served a page of a store a failed restore left mid-way"
        );
        // A restore that succeeds makes its snapshot the fallback again.
        m.restore(r.old, r.det.as_ref()).unwrap();
        drop(m);
        let m = manager(r.dir.path());
        assert_eq!(served(&m).as_ref(), Some(&r.sealed[0]), "{name}");
    }
}

#[test]
fn a_restore_refused_before_writing_keeps_the_restore_point() {
    for (name, placement) in every_placement(PS) {
        let (r, m) = rig(placement);
        assert!(m.restore(r.new + 1, r.det.as_ref()).is_err());
        drop(m);
        let m = manager(r.dir.path());
        let mut b = vec![0u8; PS];
        assert!(
            m.page_source()
                .read_page(PageId(0), Some(Lsn(20)), &mut b)
                .unwrap(),
            "{name}"
        );
        assert_eq!(
            b, r.sealed[1],
            "{name}: the newest snapshot is still the head"
        );
    }
}
