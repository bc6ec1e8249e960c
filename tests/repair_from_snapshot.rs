//! Goal: when no replica has a good copy of a page, the repairer falls back to
//! the newest snapshot — and only for a page that has not changed since it.
//! Method: a detector-protected store is snapshotted, then pages are damaged
//! locally and on the only replica; one of them is rewritten by the host after
//! the snapshot. The unchanged page must come back byte-identical from the
//! snapshot; the changed one must stay fenced and irreparable, never restored
//! to its stale snapshot copy.

use std::sync::Arc;

use selfheal::corruption::PageState;
use selfheal::repair::{CopySource, RepairOutcome};
use selfheal::snapshot::{Consistency, SnapshotConfig, SnapshotKind, SnapshotRequest, WriteGate};
use selfheal::testing::{Damage, FaultyReplica};
use selfheal::{
    ChecksumPlacement, CorruptionConfig, Lsn, MemStore, PageId, PageStore, RepairConfig,
    StoreReplica,
};

const PS: usize = 4096;
const PAGES: u64 = 32;

fn page(fill: u8) -> Vec<u8> {
    let mut b = vec![fill; PS];
    b[0] = 0x5a; // a nonzero header, as every real page has
    b
}

#[test]
fn repair_falls_back_to_snapshot_and_never_serves_a_stale_page() {
    let dir = tempfile::tempdir().unwrap();
    let raw = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let det = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .build(raw.clone())
            .unwrap(),
    );
    let snaps = SnapshotConfig::new(dir.path(), PS).build().unwrap();
    let gate = WriteGate::new();

    // The host writes every page through the gate and tells the snapshot
    // manager which pages it dirtied.
    let write = |p: u64, fill: u8| {
        let _w = gate.write();
        det.write_sealed(PageId(p), &mut page(fill)).unwrap();
        snaps.note_dirty(PageId(p));
    };
    for p in 0..PAGES {
        write(p, p as u8 + 1);
    }
    let replica_store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    for p in 0..PAGES {
        let mut b = vec![0u8; PS];
        raw.read_page(PageId(p), &mut b).unwrap();
        replica_store.write_page(PageId(p), &b).unwrap();
    }
    {
        let pause = gate.pause();
        snaps
            .take_snapshot(
                Consistency::Paused {
                    store: raw.as_ref(),
                    pause: &pause,
                    lsn: Lsn(1),
                },
                SnapshotRequest::new(SnapshotKind::Full),
            )
            .unwrap();
    }
    let mut good5 = vec![0u8; PS];
    raw.read_page(PageId(5), &mut good5).unwrap();

    // After the snapshot the host rewrites page 9; then both pages rot locally
    // and the replica's copies of them are corrupt too.
    write(9, 0xEE);
    let replica = Arc::new(FaultyReplica::new(Arc::new(StoreReplica::new(
        "mirror",
        replica_store,
    ))));
    replica.corrupt(PageId(5), Damage::Junk { seed: 1 });
    replica.corrupt(PageId(9), Damage::Zero);
    for p in [5u64, 9] {
        let mut b = vec![0u8; PS];
        raw.read_page(PageId(p), &mut b).unwrap();
        Damage::BitFlip { byte: 100, bit: 4 }.apply(&mut b);
        raw.write_page(PageId(p), &b).unwrap();
        assert!(det
            .read_verified(PageId(p), &mut b)
            .unwrap_err()
            .is_corruption());
    }

    let repairer = RepairConfig::new().build(det.clone()).unwrap();
    repairer.add_replica(replica).unwrap();
    repairer
        .add_fallback(Arc::new(snaps.page_source()))
        .unwrap();

    let r5 = repairer.repair_page(PageId(5)).unwrap();
    assert!(
        matches!(
            &r5.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Fallback(_)
            }
        ),
        "{r5:?}"
    );
    let mut b = vec![0u8; PS];
    raw.read_page(PageId(5), &mut b).unwrap();
    assert_eq!(b, good5, "page 5 restored byte for byte from the snapshot");
    det.read_verified(PageId(5), &mut b).unwrap();

    let r9 = repairer.repair_page(PageId(9)).unwrap();
    assert!(
        matches!(r9.outcome, RepairOutcome::Irreparable { .. }),
        "{r9:?}"
    );
    assert_eq!(det.page_state(PageId(9)), Some(PageState::Irreparable));
    raw.read_page(PageId(9), &mut b).unwrap();
    assert_ne!(
        b[1], 10,
        "the stale snapshot copy of page 9 was never written"
    );
}
