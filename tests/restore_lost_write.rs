//! A restore whose write of a page the disk silently loses must not leave
//! the replaced page served as verified: found by the simulator (seed 51,
//! `cargo run --example sim -- --seed 51`) and reduced here to the public
//! API, under both checksum placements, with the disk's lost write injected
//! by `FaultyStore`.

use std::sync::Arc;

use selfheal::checksum::payload_len;
use selfheal::prelude::*;
use selfheal::testing::{FaultyStore, WriteFault};

const PS: usize = 512;
const PAGES: u64 = 8;

/// A page whose first 8 bytes are its LSN (what the page-LSN reader reads).
fn page_at(lsn: u64, usable: usize) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    b[..8].copy_from_slice(&lsn.to_le_bytes());
    b[8..usable].fill(lsn as u8);
    b
}

fn lsn_of(b: &[u8]) -> Option<Lsn> {
    let l = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    (l > 0).then_some(Lsn(l))
}

/// Snapshot at LSN 10, write LSN 20, restore with the restore's write of
/// page 3 lost: a verified read of page 3 must not return LSN 20's bytes.
fn restore_over_a_lost_write(placement: ChecksumPlacement) {
    let usable = match placement {
        ChecksumPlacement::Trailer => payload_len(PS),
        _ => PS,
    };
    let faulty = Arc::new(FaultyStore::new(Arc::new(
        MemStore::new(PS, PAGES).unwrap(),
    )));
    let det = Arc::new(
        CorruptionConfig::new(placement)
            .page_lsn(Arc::new(lsn_of))
            .build(faulty.clone())
            .unwrap(),
    );
    for p in 0..PAGES {
        det.write_sealed(PageId(p), &mut page_at(10, usable))
            .unwrap();
    }
    det.sync().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = SnapshotConfig::new(dir.path(), PS)
        .threads(1)
        .build()
        .unwrap();
    let gate = WriteGate::new();
    let id = {
        let pause = gate.pause();
        let store: &dyn PageStore = &*det;
        snap.take_snapshot(
            Consistency::Paused {
                store,
                pause: &pause,
                lsn: Lsn(10),
            },
            SnapshotRequest::new(SnapshotKind::Full),
        )
        .unwrap()
        .info
        .id
    };
    det.write_sealed(PageId(3), &mut page_at(20, usable))
        .unwrap();
    det.sync().unwrap();

    faulty.fail_next_write(Some(PageId(3)), WriteFault::Lost);
    snap.restore(id, &*det).unwrap();

    let mut buf = vec![0u8; PS];
    match det.read_verified(PageId(3), &mut buf) {
        Ok(()) => assert_eq!(
            lsn_of(&buf),
            Some(Lsn(10)),
            "the restore put LSN 10 back, and a verified read served the replaced page"
        ),
        Err(e) => assert!(
            matches!(e, Error::StalePage { .. } | Error::ChecksumMismatch { .. }),
            "{e}"
        ),
    }

    // A replica holding the restored version repairs the page: the repair
    // does not take the replaced version for a fault that went away.
    let mirror = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mut sealed = page_at(10, usable);
    if matches!(det.placement(), ChecksumPlacement::Trailer) {
        ChecksumPlacement::Trailer
            .seal(PageId(3), &mut sealed)
            .unwrap();
    }
    mirror.write_page(PageId(3), &sealed).unwrap();
    let repairer = RepairConfig::new().build(det.clone()).unwrap();
    repairer
        .add_replica(Arc::new(
            StoreReplica::new("mirror", mirror).call_inline(true),
        ))
        .unwrap();
    let report = repairer.repair_page(PageId(3)).unwrap();
    assert!(report.is_repaired(), "{:?}", report.outcome);
    det.read_verified(PageId(3), &mut buf).unwrap();
    assert_eq!(lsn_of(&buf), Some(Lsn(10)));
}

#[test]
fn sidecar_a_restore_over_a_lost_write_is_never_served_as_verified() {
    restore_over_a_lost_write(ChecksumPlacement::Sidecar(Arc::new(
        ChecksumTable::new(PS).unwrap(),
    )));
}

#[test]
fn trailer_a_restore_over_a_lost_write_is_never_served_as_verified() {
    restore_over_a_lost_write(ChecksumPlacement::Trailer);
}
