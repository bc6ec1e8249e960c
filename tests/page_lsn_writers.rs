//! Goal: with a page-LSN reader the detector expects a page to be no older
//! than the last write through it, whatever LSN that write carried: a
//! rollback or a restore that puts an older page LSN back is read as valid
//! (never fenced as stale), a repair then has nothing to bring back, and the
//! host's expected-LSN hook is only a floor for pages not written in this
//! process. Method: pages carrying their LSN in their first 8 bytes, sealed
//! under every placement (trailer, in-memory sidecar, durable sidecar on
//! `CrashFiles`); a transaction rolled back through the detector while a
//! replica holds its in-flight bytes; an older snapshot restored through the
//! detector; a hook answering a floor that a later write contradicts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use selfheal::checksum::payload_len;
use selfheal::corruption::{ExpectedLsnFn, PageLsnFn};
use selfheal::snapshot::{
    Consistency, Retention, SnapshotConfig, SnapshotKind, SnapshotRequest, WriteGate,
};
use selfheal::testing::every_placement;
use selfheal::{
    ChecksumPlacement, CorruptionConfig, CorruptionDetector, Lsn, MemStore, PageId, PageStore,
    RepairConfig, RollbackConfig, StoreReplica,
};

const PS: usize = 512;
/// The bytes a host owns in every placement (the trailer takes the rest).
const N: usize = payload_len(PS);

/// The LSN in the first 8 bytes of a page (0: none).
fn lsn_reader() -> PageLsnFn {
    Arc::new(|b: &[u8]| {
        let l = u64::from_le_bytes(b[0..8].try_into().unwrap());
        (l != 0).then_some(Lsn(l))
    })
}

fn page(lsn: u64, fill: u8) -> Vec<u8> {
    let mut b = vec![fill; PS];
    b[0..8].copy_from_slice(&lsn.to_le_bytes());
    b
}

fn detector(placement: ChecksumPlacement, raw: Arc<MemStore>) -> Arc<CorruptionDetector> {
    Arc::new(
        CorruptionConfig::new(placement)
            .page_lsn(lsn_reader())
            .build(raw)
            .unwrap(),
    )
}

#[test]
fn a_rollback_to_an_older_page_lsn_verifies_and_repair_does_not_bring_the_write_back() {
    for (name, placement) in every_placement(PS) {
        let dir = tempfile::tempdir().unwrap();
        let raw = Arc::new(MemStore::new(PS, 4).unwrap());
        let det = detector(placement, raw.clone());
        for p in 0..4 {
            det.write_sealed(PageId(p), &mut page(5, p as u8 + 1))
                .unwrap();
        }
        let m = RollbackConfig::new(dir.path()).build(det.clone()).unwrap();
        let t = m.begin().unwrap();
        m.write(t, PageId(1), 0, &9u64.to_le_bytes()).unwrap();
        m.write(t, PageId(1), 8, &[7u8; 16]).unwrap();
        // A physical replica ships the page while the transaction is in flight.
        let replica = Arc::new(MemStore::new(PS, 4).unwrap());
        let mut b = vec![0u8; PS];
        for p in 0..4 {
            raw.read_page(PageId(p), &mut b).unwrap();
            replica.write_page(PageId(p), &b).unwrap();
        }
        let outcome = m.rollback(t).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(outcome.pages_written, 1, "{name}");
        assert_eq!(det.page_state(PageId(1)), None, "{name}: not fenced");
        assert_eq!(det.last_written_lsn(PageId(1)), Some(Lsn(5)), "{name}");
        det.read_verified(PageId(1), &mut b)
            .unwrap_or_else(|e| panic!("{name}: the rolled-back page is refused: {e}"));
        assert_eq!(b[..N], page(5, 2)[..N], "{name}");
        assert_eq!(det.failures().try_iter().count(), 0, "{name}: no report");

        let rep = RepairConfig::new().build(det.clone()).unwrap();
        rep.add_replica(Arc::new(StoreReplica::new("r", replica)))
            .unwrap();
        assert!(rep.repair_all().is_empty(), "{name}: nothing to repair");
        det.read_verified(PageId(1), &mut b).unwrap();
        assert_eq!(
            b[..N],
            page(5, 2)[..N],
            "{name}: the aborted write stays undone"
        );
        m.stop().unwrap();
    }
}

#[test]
fn restoring_an_older_snapshot_through_the_detector_verifies() {
    for (name, placement) in every_placement(PS) {
        let dir = tempfile::tempdir().unwrap();
        let raw = Arc::new(MemStore::new(PS, 4).unwrap());
        let det = detector(placement, raw.clone());
        for p in 0..4 {
            det.write_sealed(PageId(p), &mut page(1, p as u8 + 1))
                .unwrap();
        }
        let m = SnapshotConfig::new(dir.path(), PS)
            .retention(Retention::KeepAll)
            .build()
            .unwrap();
        let gate = WriteGate::new();
        let pause = gate.pause();
        let old = m
            .take_snapshot(
                Consistency::Paused {
                    store: det.as_ref(),
                    pause: &pause,
                    lsn: Lsn(1),
                },
                SnapshotRequest::new(SnapshotKind::Full),
            )
            .unwrap();
        drop(pause);
        for p in 0..4 {
            det.write_sealed(PageId(p), &mut page(2, 0x40 + p as u8))
                .unwrap();
        }
        m.restore(old.info.id, det.as_ref()).unwrap();
        let mut b = vec![0u8; PS];
        for p in 0..4 {
            det.read_verified(PageId(p), &mut b)
                .unwrap_or_else(|e| panic!("{name}: restored page {p} is refused: {e}"));
            assert_eq!(b[..N], page(1, p as u8 + 1)[..N], "{name}");
            assert_eq!(det.last_written_lsn(PageId(p)), Some(Lsn(1)), "{name}");
        }
        assert_eq!(det.stats().corrupt_reported, 0, "{name}");
    }
}

#[test]
fn the_hook_is_a_floor_only_for_pages_not_written_in_this_process() {
    for (name, placement) in every_placement(PS) {
        let raw = Arc::new(MemStore::new(PS, 4).unwrap());
        let calls = Arc::new(AtomicU64::new(0));
        let hook: ExpectedLsnFn = {
            let calls = calls.clone();
            Arc::new(move |_| {
                calls.fetch_add(1, Ordering::Relaxed);
                Some(Lsn(9))
            })
        };
        let det = CorruptionConfig::new(placement)
            .page_lsn(lsn_reader())
            .expected_page_lsn(hook)
            .build(raw.clone())
            .unwrap();
        // Page 1 was rolled back (by recovery, say) to LSN 5: the write says
        // so, and the hook's floor no longer applies to it.
        det.write_sealed(PageId(1), &mut page(5, 1)).unwrap();
        let mut b = vec![0u8; PS];
        det.read_verified(PageId(1), &mut b)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(det.last_written_lsn(PageId(1)), Some(Lsn(5)), "{name}");
        // A write whose bytes carry no LSN expects nothing.
        det.write_sealed(PageId(2), &mut page(0, 2)).unwrap();
        assert_eq!(det.last_written_lsn(PageId(2)), None, "{name}");
        det.read_verified(PageId(2), &mut b).unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 0, "{name}: memory knew");
        // A page not written in this process: the hook's floor.
        assert_eq!(det.last_written_lsn(PageId(3)), Some(Lsn(9)), "{name}");
        assert_eq!(calls.load(Ordering::Relaxed), 1, "{name}");
        // A page the host forgets has no last write: the hook is asked again.
        det.forget(PageId(1)).unwrap();
        assert_eq!(det.last_written_lsn(PageId(1)), Some(Lsn(9)), "{name}");
        assert_eq!(calls.load(Ordering::Relaxed), 2, "{name}");
    }
}
