//! Goal: a page that blocks a rollback, and whose last write (the
//! transaction's, never shipped) no replica holds, is rebuilt from a
//! replica's copy of the version before the transaction and the undo held
//! for it, and then rolled back — and a copy that is not that version, or is
//! damaged, is never written. Found by the simulator (seeds 707416 and
//! 713236: a transaction's write misdirected onto another page it had
//! written, the rollback blocked there, the page irreparable for good under
//! the durable sidecar table). Method: a transaction writes a page (its
//! LSN and data); the page is overwritten below the detector with another
//! page's bytes, as a misdirected write leaves it; the rollback is blocked;
//! `rebuild_page` is offered copies, under both checksum placements, with and
//! without a page-LSN reader; a page the host rewrote meanwhile is left as
//! the host wrote it.

use std::sync::Arc;

use selfheal::testing::CrashDir;
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, CorruptionDetector, Error, Lsn, MemStore,
    PageId, PageStore, RollbackConfig, TransactionRollbackManager, TxnId,
};

const PS: usize = 512;
const PAGE: PageId = PageId(2);

fn placements() -> Vec<ChecksumPlacement> {
    vec![
        ChecksumPlacement::Trailer,
        ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(PS).unwrap())),
    ]
}

/// A page at `lsn`: the LSN in its first 8 bytes, then `fill`.
fn page_at(lsn: u64, fill: u8) -> Vec<u8> {
    let mut b = vec![fill; PS];
    b[..8].copy_from_slice(&lsn.to_le_bytes());
    b
}

struct Rig {
    disk: Arc<MemStore>,
    det: Arc<CorruptionDetector>,
    mgr: TransactionRollbackManager,
    txn: TxnId,
    /// `PAGE` as committed, before the transaction (what a replica holds).
    committed: Vec<u8>,
}

/// Four committed pages (page `p` at LSN `p + 1`); page `PAGE` written
/// once more (LSN 5), then by a transaction (LSN 9), whose page is then
/// overwritten below the detector with page 3's bytes; the rollback is
/// blocked.
fn blocked(placement: &ChecksumPlacement, lsn_reader: bool) -> Rig {
    let disk = Arc::new(MemStore::new(PS, 4).unwrap());
    let mut cfg = CorruptionConfig::new(placement.clone());
    if lsn_reader {
        cfg = cfg.page_lsn(Arc::new(|b: &[u8]| {
            Some(Lsn(u64::from_le_bytes(b[..8].try_into().unwrap())))
        }));
    }
    let det = Arc::new(cfg.build(disk.clone()).unwrap());
    for p in 0..4u64 {
        det.write_sealed(PageId(p), &mut page_at(p + 1, p as u8 + 1))
            .unwrap();
    }
    det.write_sealed(PAGE, &mut page_at(5, 0x33)).unwrap();
    det.sync().unwrap();
    let mut committed = vec![0u8; PS];
    det.read_verified(PAGE, &mut committed).unwrap();

    let mgr = RollbackConfig::with_storage(Arc::new(CrashDir::new()))
        .build(det.clone())
        .unwrap();
    let txn = mgr.begin().unwrap();
    let mut change = page_at(9, 0xA5)[..300].to_vec();
    change[8..].fill(0xA5);
    mgr.write(txn, PAGE, 0, &change).unwrap();
    // A misdirected write: page 3's bytes land on `PAGE`.
    let mut other = vec![0u8; PS];
    disk.read_page(PageId(3), &mut other).unwrap();
    disk.write_page(PAGE, &other).unwrap();
    let r = mgr.rollback(txn);
    assert!(matches!(r, Err(Error::RollbackBlocked { .. })), "{r:?}");
    Rig {
        disk,
        det,
        mgr,
        txn,
        committed,
    }
}

fn stored(disk: &MemStore) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    disk.read_page(PAGE, &mut b).unwrap();
    b
}

#[test]
fn a_blocked_page_is_rebuilt_from_the_version_before_the_transaction_then_rolled_back() {
    for placement in placements() {
        let r = blocked(&placement, true);
        assert!(
            r.mgr
                .rebuild_page(PAGE, std::slice::from_ref(&r.committed))
                .unwrap(),
            "{placement:?}"
        );
        let out = r
            .mgr
            .rollback(r.txn)
            .unwrap_or_else(|e| panic!("{placement:?}: {e}"));
        assert_eq!(out.txns, vec![r.txn]);
        let mut now = vec![0u8; PS];
        r.det
            .read_verified(PAGE, &mut now)
            .unwrap_or_else(|e| panic!("{placement:?}: {e}"));
        assert_eq!(
            now, r.committed,
            "{placement:?}: the committed version is back"
        );
        assert!(r.mgr.blocked_rollbacks().is_empty());
    }
}

#[test]
fn copies_that_are_not_the_version_before_the_transaction_are_never_written() {
    for placement in placements() {
        let r = blocked(&placement, true);
        let damaged_before = stored(&r.disk);
        // An older version (LSN 3, the first write of the page).
        let older = page_at(3, 3);
        // The right version, damaged where the transaction did not write.
        let mut damaged = r.committed.clone();
        damaged[400] ^= 0x10;
        // The right version, damaged where it did.
        let mut damaged_in_range = r.committed.clone();
        damaged_in_range[100] ^= 0x10;
        // A copy of another page.
        let mut elsewhere = vec![0u8; PS];
        r.disk.read_page(PageId(1), &mut elsewhere).unwrap();
        // The wrong length.
        let short = r.committed[..PS - 1].to_vec();
        for bad in [older, damaged, damaged_in_range, elsewhere, short] {
            assert!(
                !r.mgr.rebuild_page(PAGE, &[bad]).unwrap(),
                "{placement:?}: a copy that is not the version before was taken"
            );
            assert_eq!(stored(&r.disk), damaged_before, "{placement:?}");
        }
        // Still blocked, and the right copy after the bad ones still works.
        assert!(matches!(
            r.mgr.rollback(r.txn),
            Err(Error::RollbackBlocked { .. })
        ));
        assert!(r
            .mgr
            .rebuild_page(PAGE, &[page_at(3, 3), r.committed.clone()])
            .unwrap());
        r.mgr.rollback(r.txn).unwrap();
    }
}

#[test]
fn without_a_page_lsn_reader_only_the_sidecar_table_can_judge_a_rebuilt_page() {
    for placement in placements() {
        let sidecar = matches!(placement, ChecksumPlacement::Sidecar(_));
        let r = blocked(&placement, false);
        let before = stored(&r.disk);
        let rebuilt = r
            .mgr
            .rebuild_page(PAGE, std::slice::from_ref(&r.committed))
            .unwrap();
        // The trailer carries its own checksum: with no LSN nothing says
        // which version the copy is, and nothing is written.
        assert_eq!(rebuilt, sidecar, "{placement:?}");
        if sidecar {
            r.mgr.rollback(r.txn).unwrap();
            let mut now = vec![0u8; PS];
            r.det.read_verified(PAGE, &mut now).unwrap();
            assert_eq!(now, r.committed);
        } else {
            assert_eq!(stored(&r.disk), before);
        }
    }
}

#[test]
fn a_page_with_no_undo_or_out_of_range_is_not_rebuilt() {
    for placement in placements() {
        let r = blocked(&placement, true);
        let mut copy = vec![0u8; PS];
        r.disk.read_page(PageId(1), &mut copy).unwrap();
        assert!(!r.mgr.rebuild_page(PageId(1), &[copy]).unwrap());
        assert!(matches!(
            r.mgr
                .rebuild_page(PageId(4), std::slice::from_ref(&r.committed)),
            Err(Error::PageOutOfRange { .. })
        ));
    }
}

#[test]
fn a_page_the_host_rewrote_meanwhile_is_not_rebuilt_over() {
    for placement in placements() {
        let r = blocked(&placement, true);
        // The host replaces the fenced page with a whole new version.
        let mut newer = page_at(20, 0x77);
        r.det.write_sealed(PAGE, &mut newer).unwrap();
        let host = stored(&r.disk);
        assert!(
            !r.mgr
                .rebuild_page(PAGE, std::slice::from_ref(&r.committed))
                .unwrap(),
            "{placement:?}"
        );
        assert_eq!(
            stored(&r.disk),
            host,
            "{placement:?}: the host's write stands"
        );
        let mut now = vec![0u8; PS];
        r.det.read_verified(PAGE, &mut now).unwrap();
        assert_eq!(&now[..8], &20u64.to_le_bytes());
    }
}
