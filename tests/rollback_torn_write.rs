//! Goal: a transaction whose page write the disk tore (and reported done)
//! can be rolled back through the detector, in the process and by
//! recovery after a crash, even when a sync settled the torn write's
//! checksum in between — and damage that is not that torn write still
//! blocks the rollback. Found by the simulator (seed 2804: `Txn([4, 2],
//! Abort)` with page 2's write torn, a sync, the rollback blocked and
//! the page irreparable under the durable sidecar table). Method: a
//! `FaultyStore` tears the transaction's write; a host write of another
//! page syncs the store (settling the torn write under a sidecar table);
//! the rollback — and, after a `CrashDir` crash, recovery — must put the
//! before-image back under the sidecar placement. Under the trailer the
//! tear kept the old trailer (the disk wrote the head of the page), so the
//! page with the transaction's after-images is not its last write as
//! sealed, and the rollback stays blocked until a repair (the documented
//! limit; the test holds that nothing is written over the torn page).

use std::sync::Arc;

use selfheal::testing::{both_placements, seal_numbered_pages, CrashDir, FaultyStore, WriteFault};
use selfheal::{
    ChecksumPlacement, CorruptionConfig, CorruptionDetector, Error, MemStore, PageId,
    RollbackConfig,
};

const PS: usize = 512;
const PAGE: PageId = PageId(2);

/// Four sealed pages (page `p` full of `p + 1`) behind a detector over a
/// faulty store.
fn sealed(placement: &ChecksumPlacement) -> (Arc<FaultyStore>, Arc<CorruptionDetector>) {
    let disk = Arc::new(FaultyStore::new(Arc::new(MemStore::new(PS, 4).unwrap())));
    let det = Arc::new(
        CorruptionConfig::new(placement.clone())
            .build(disk.clone())
            .unwrap(),
    );
    seal_numbered_pages(&det, 4).unwrap();
    det.sync().unwrap();
    (disk, det)
}

fn sidecar(placement: &ChecksumPlacement) -> bool {
    matches!(placement, ChecksumPlacement::Sidecar(_))
}

/// The trailer's limit: blocked, and the torn page left as it is.
fn stays_blocked(r: Result<selfheal::rollback::RollbackOutcome, Error>, disk: &FaultyStore) {
    let mut torn = vec![0u8; PS];
    disk.inner().read_page(PAGE, &mut torn).unwrap();
    assert!(matches!(r, Err(Error::RollbackBlocked { .. })), "{r:?}");
    let mut now = vec![0u8; PS];
    disk.inner().read_page(PAGE, &mut now).unwrap();
    assert_eq!(now, torn);
    assert_eq!(&now[..100], &[0xA5; 100][..], "still the torn write");
}

fn read(det: &CorruptionDetector, page: PageId) -> Result<Vec<u8>, Error> {
    let mut b = vec![0u8; PS];
    det.read_verified(page, &mut b).map(|()| b)
}

/// A transaction changes bytes 0..300 of `PAGE`; the disk keeps only the
/// first 100 bytes of that write and says it is done; the host writes page
/// 0 and syncs (under a sidecar table the sync settles the torn write).
fn tear(
    disk: &FaultyStore,
    det: &Arc<CorruptionDetector>,
    journal: &Arc<CrashDir>,
) -> (
    selfheal::TransactionRollbackManager,
    selfheal::TxnId,
    Vec<u8>,
) {
    let before = read(det, PAGE).unwrap();
    let mgr = RollbackConfig::with_storage(journal.clone())
        .build(det.clone())
        .unwrap();
    let t = mgr.begin().unwrap();
    disk.fail_next_write(Some(PAGE), WriteFault::Torn { new_bytes: 100 });
    mgr.write(t, PAGE, 0, &[0xA5; 300]).unwrap();
    det.write_sealed(PageId(0), &mut vec![7u8; PS]).unwrap();
    det.sync().unwrap();
    assert!(read(det, PAGE).is_err(), "the torn page fails verification");
    (mgr, t, before)
}

#[test]
fn a_torn_write_of_the_transaction_is_rolled_back_in_the_process() {
    for (name, placement) in both_placements(PS) {
        let (disk, det) = sealed(&placement);
        let (mgr, t, before) = tear(&disk, &det, &Arc::new(CrashDir::new()));
        if !sidecar(&placement) {
            stays_blocked(mgr.rollback(t), &disk);
            continue;
        }
        let out = mgr.rollback(t).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.txns, vec![t]);
        let now = read(&det, PAGE).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(now, before, "{name}: the before-image is back");
    }
}

#[test]
fn a_torn_write_of_a_transaction_in_flight_is_rolled_back_by_recovery() {
    for (name, placement) in both_placements(PS) {
        let (disk, det) = sealed(&placement);
        let journal = Arc::new(CrashDir::new());
        let (mgr, _t, before) = tear(&disk, &det, &journal);
        // The process dies with the transaction in flight.
        let journal = Arc::new(journal.crash(0));
        drop(mgr);
        let mgr = RollbackConfig::with_storage(journal)
            .build(det.clone())
            .unwrap();
        let report = mgr.recovery_report();
        if !sidecar(&placement) {
            assert_eq!(report.blocked.len(), 1, "{report:?}");
            stays_blocked(mgr.rollback_all(), &disk);
            continue;
        }
        assert!(
            report.blocked.is_empty() && report.rolled_back.len() == 1,
            "{name}: {report:?}"
        );
        assert_eq!(read(&det, PAGE).unwrap(), before, "{name}");
    }
}

#[test]
fn damage_beside_a_torn_write_still_blocks_the_rollback() {
    for (name, placement) in both_placements(PS) {
        let (disk, det) = sealed(&placement);
        let (mgr, t, _) = tear(&disk, &det, &Arc::new(CrashDir::new()));
        // Rot outside the transaction's bytes: not explained by its undo.
        let mut raw = vec![0u8; PS];
        disk.inner().read_page(PAGE, &mut raw).unwrap();
        raw[400] ^= 0x10;
        disk.inner().write_page(PAGE, &raw).unwrap();
        match mgr.rollback(t) {
            Err(Error::RollbackBlocked { .. }) => {}
            other => panic!("{name}: {other:?}"),
        }
        let mut now = vec![0u8; PS];
        disk.inner().read_page(PAGE, &mut now).unwrap();
        assert_eq!(now, raw, "{name}: nothing was written");
    }
}
