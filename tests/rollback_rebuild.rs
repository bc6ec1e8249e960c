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

use selfheal::checksum::TableConfig;
use selfheal::corruption::PageState;
use selfheal::testing::{every_placement, CrashDir, CrashFiles};
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, CorruptionDetector, Error, Lsn, MemStore,
    PageId, PageStore, RollbackConfig, TransactionRollbackManager, TxnId,
};

const PS: usize = 512;
const PAGE: PageId = PageId(2);

/// The trailer, an in-memory sidecar table and a durable one (which also
/// accepts the versions written since its last settle).
fn durable_table() -> ChecksumTable {
    TableConfig::new(PS)
        .open_on(Arc::new(CrashFiles::new()), "sums")
        .unwrap()
}

fn lsn_reader() -> selfheal::corruption::PageLsnFn {
    Arc::new(|b: &[u8]| Some(Lsn(u64::from_le_bytes(b[..8].try_into().unwrap()))))
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

/// A committed page at LSN 5 (`PAGE`, beside three more) behind a detector
/// over `placement`, with a page-LSN reader (the first 8 bytes) when
/// `lsn_reader`, and a rollback manager over a `CrashDir`.
fn fresh(
    placement: &ChecksumPlacement,
    lsn_reader: bool,
) -> (
    Arc<MemStore>,
    Arc<CorruptionDetector>,
    Arc<CrashDir>,
    TransactionRollbackManager,
    Vec<u8>,
) {
    let disk = Arc::new(MemStore::new(PS, 4).unwrap());
    let mut cfg = CorruptionConfig::new(placement.clone());
    if lsn_reader {
        cfg = cfg.page_lsn(self::lsn_reader());
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
    let dir = Arc::new(CrashDir::new());
    let mgr = RollbackConfig::with_storage(dir.clone())
        .build(det.clone())
        .unwrap();
    (disk, det, dir, mgr, committed)
}

/// The transaction's change of `PAGE`: LSN 9 and bytes 8..300.
fn the_change() -> Vec<u8> {
    let mut change = page_at(9, 0xA5)[..300].to_vec();
    change[8..].fill(0xA5);
    change
}

/// Overwrites `PAGE` below the detector with page 3's bytes, as a
/// misdirected write leaves it; returns them.
fn misdirect(disk: &MemStore) -> Vec<u8> {
    let mut other = vec![0u8; PS];
    disk.read_page(PageId(3), &mut other).unwrap();
    disk.write_page(PAGE, &other).unwrap();
    other
}

/// [`fresh`], then a transaction's change of `PAGE` (LSN 9), whose page is
/// then overwritten below the detector with page 3's bytes; the rollback
/// is blocked.
fn blocked(placement: &ChecksumPlacement, lsn_reader: bool) -> Rig {
    let (disk, det, _dir, mgr, committed) = fresh(placement, lsn_reader);
    let txn = mgr.begin().unwrap();
    mgr.write(txn, PAGE, 0, &the_change()).unwrap();
    misdirect(&disk);
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

/// `PAGE` reads, verified, as `want`.
fn reads_as(det: &CorruptionDetector, want: &[u8], placement: &ChecksumPlacement) {
    let mut now = vec![0u8; PS];
    det.read_verified(PAGE, &mut now)
        .unwrap_or_else(|e| panic!("{placement:?}: {e}"));
    assert_eq!(now, want, "{placement:?}");
}

fn stored(disk: &MemStore) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    disk.read_page(PAGE, &mut b).unwrap();
    b
}

#[test]
fn a_blocked_page_is_rebuilt_from_the_version_before_the_transaction_then_rolled_back() {
    for (name, placement) in every_placement(PS) {
        let r = blocked(&placement, true);
        assert!(
            r.mgr
                .rebuild_page(PAGE, std::slice::from_ref(&r.committed))
                .unwrap(),
            "{name}"
        );
        let out = r
            .mgr
            .rollback(r.txn)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.txns, vec![r.txn]);
        let mut now = vec![0u8; PS];
        r.det
            .read_verified(PAGE, &mut now)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(now, r.committed, "{name}: the committed version is back");
        assert!(r.mgr.blocked_rollbacks().is_empty());
    }
}

#[test]
fn copies_that_are_not_the_version_before_the_transaction_are_never_written() {
    for (name, placement) in every_placement(PS) {
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
                "{name}: a copy that is not the version before was taken"
            );
            assert_eq!(stored(&r.disk), damaged_before, "{name}");
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
    for (name, placement) in every_placement(PS) {
        let sidecar = matches!(placement, ChecksumPlacement::Sidecar(_));
        let r = blocked(&placement, false);
        let before = stored(&r.disk);
        let rebuilt = r
            .mgr
            .rebuild_page(PAGE, std::slice::from_ref(&r.committed))
            .unwrap();
        // The trailer carries its own checksum: with no LSN nothing says
        // which version the copy is, and nothing is written.
        assert_eq!(rebuilt, sidecar, "{name}");
        if sidecar {
            r.mgr.rollback(r.txn).unwrap();
            reads_as(&r.det, &r.committed, &placement);
        } else {
            assert_eq!(stored(&r.disk), before);
        }
    }
}

#[test]
fn a_page_with_no_undo_or_out_of_range_is_not_rebuilt() {
    for (_, placement) in every_placement(PS) {
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
    for (name, placement) in every_placement(PS) {
        let r = blocked(&placement, true);
        // The host replaces the fenced page with a whole new version.
        let mut newer = page_at(20, 0x77);
        r.det.write_sealed(PAGE, &mut newer).unwrap();
        let host = stored(&r.disk);
        assert!(
            !r.mgr
                .rebuild_page(PAGE, std::slice::from_ref(&r.committed))
                .unwrap(),
            "{name}"
        );
        assert_eq!(stored(&r.disk), host, "{name}: the host's write stands");
        let mut now = vec![0u8; PS];
        r.det.read_verified(PAGE, &mut now).unwrap();
        assert_eq!(&now[..8], &20u64.to_le_bytes());
    }
}

/// A host write that is the page's last write holds a committed change no
/// undo keeps: an older copy replayed through the undo that is left is not
/// that write, also under a durable table that still accepts the version
/// before it, and nothing is written (no page-LSN reader: the checksum is
/// the only judge).
#[test]
fn a_version_the_table_still_accepts_but_not_the_newest_is_not_written() {
    let placement = ChecksumPlacement::Sidecar(Arc::new(durable_table()));
    let (disk, det, _dir, mgr, committed) = fresh(&placement, false);
    let t1 = mgr.begin().unwrap();
    mgr.write(t1, PAGE, 100, b"AAAA").unwrap();
    let mut v1 = vec![0u8; PS];
    det.read_verified(PAGE, &mut v1).unwrap();
    let mut other = vec![0u8; PS];
    disk.read_page(PageId(3), &mut other).unwrap();
    disk.write_page(PAGE, &other).unwrap();
    assert!(matches!(
        mgr.rollback(t1),
        Err(Error::RollbackBlocked { .. })
    ));
    // The host rewrites the page: t1's bytes and a committed change of t2.
    let t2 = mgr.begin().unwrap();
    let lsn = mgr
        .record_undo(t2, PAGE, 300, &v1[300..304], b"BBBB")
        .unwrap();
    mgr.ensure_durable(lsn).unwrap();
    let mut w = v1.clone();
    w[300..304].copy_from_slice(b"BBBB");
    det.write_sealed(PAGE, &mut w).unwrap();
    mgr.commit(t2).unwrap();
    // Damaged again before any sync: the table accepts v1 and w.
    disk.write_page(PAGE, &other).unwrap();
    let mut now = vec![0u8; PS];
    assert!(det.read_verified(PAGE, &mut now).is_err());
    assert!(!mgr
        .rebuild_page(PAGE, std::slice::from_ref(&committed))
        .unwrap());
    assert_eq!(stored(&disk), other, "nothing written over the page");
}

/// Under the trailer, a copy whose LSN is 0 names no version: a copy of an
/// older LSN-less version that holds the transaction's before-images is
/// not taken for the version before it.
#[test]
fn under_the_trailer_a_copy_with_no_lsn_is_not_taken_for_a_version() {
    let disk = Arc::new(MemStore::new(PS, 4).unwrap());
    let det = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .page_lsn(lsn_reader())
            .build(disk.clone())
            .unwrap(),
    );
    for p in 0..4u64 {
        det.write_sealed(PageId(p), &mut page_at(0, 0x10 + p as u8))
            .unwrap();
    }
    det.sync().unwrap();
    let mut older = vec![0u8; PS];
    det.read_verified(PAGE, &mut older).unwrap();
    // A newer LSN-less version, then a transaction that stamps LSN 9.
    det.write_sealed(PAGE, &mut page_at(0, 0x55)).unwrap();
    let mgr = RollbackConfig::with_storage(Arc::new(CrashDir::new()))
        .build(det.clone())
        .unwrap();
    let t = mgr.begin().unwrap();
    mgr.write(t, PAGE, 0, &9u64.to_le_bytes()).unwrap();
    let mut other = vec![0u8; PS];
    disk.read_page(PageId(3), &mut other).unwrap();
    disk.write_page(PAGE, &other).unwrap();
    assert!(matches!(
        mgr.rollback(t),
        Err(Error::RollbackBlocked { .. })
    ));
    assert!(!mgr
        .rebuild_page(PAGE, std::slice::from_ref(&older))
        .unwrap());
    assert_eq!(stored(&disk), other);
}

/// An undo entry recorded but not yet durable has not reached the page
/// (the write-ahead rule): a rebuild leaves it out, and after a crash that
/// loses it, no byte of it is on the page.
#[test]
fn an_undo_entry_not_yet_durable_is_never_written_by_a_rebuild() {
    for (name, placement) in every_placement(PS) {
        let (disk, det, dir, mgr, committed) = fresh(&placement, true);
        let t1 = mgr.begin().unwrap();
        mgr.write(t1, PAGE, 0, &the_change()).unwrap();
        misdirect(&disk);
        assert!(matches!(
            mgr.rollback(t1),
            Err(Error::RollbackBlocked { .. })
        ));
        // Another transaction records a change of other bytes; its page
        // write would come after `ensure_durable`.
        let t2 = mgr.begin().unwrap();
        let lsn = mgr
            .record_undo(t2, PAGE, 400, &committed[400..404], b"ZZZZ")
            .unwrap();
        assert!(mgr.durable_lsn() < lsn, "not durable yet");
        assert!(
            mgr.rebuild_page(PAGE, std::slice::from_ref(&committed))
                .unwrap(),
            "{name}: rebuilt from t1's durable undo alone"
        );
        assert_eq!(&stored(&disk)[400..404], &committed[400..404], "{name}");
        // A crash loses t2's record; recovery rolls t1 back.
        drop(mgr);
        let after = Arc::new(dir.crash(0));
        let _mgr = RollbackConfig::with_storage(after)
            .build(det.clone())
            .unwrap();
        let mut now = vec![0u8; PS];
        det.read_verified(PAGE, &mut now)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(now, committed, "{name}");
    }
}

/// Two transactions wrote disjoint bytes of the page (the first also its
/// LSN): the copy from before both, replayed through both, is the last
/// write, and both roll back.
#[test]
fn a_page_two_transactions_wrote_is_rebuilt_through_both() {
    for (name, placement) in every_placement(PS) {
        let r = blocked(&placement, true);
        // The page is rebuilt, a second transaction writes other bytes,
        // and the page is damaged again.
        assert!(r
            .mgr
            .rebuild_page(PAGE, std::slice::from_ref(&r.committed))
            .unwrap());
        let t2 = r.mgr.begin().unwrap();
        r.mgr.write(t2, PAGE, 400, &[0x5A; 8]).unwrap();
        let mut other = vec![0u8; PS];
        r.disk.read_page(PageId(1), &mut other).unwrap();
        r.disk.write_page(PAGE, &other).unwrap();
        let mut now = vec![0u8; PS];
        assert!(r.det.read_verified(PAGE, &mut now).is_err());
        // The copy replayed through the first transaction alone is not the
        // last write any more; through both it is.
        assert!(
            r.mgr
                .rebuild_page(PAGE, std::slice::from_ref(&r.committed))
                .unwrap(),
            "{name}"
        );
        r.det.read_verified(PAGE, &mut now).unwrap();
        assert_eq!(&now[400..408], &[0x5A; 8], "{name}");
        let out = r.mgr.rollback_all().unwrap();
        assert_eq!(out.txns.len(), 2, "{name}");
        r.det.read_verified(PAGE, &mut now).unwrap();
        assert_eq!(now, r.committed, "{name}");
    }
}

/// A host write after the transaction's, with no undo of its own (its LSN
/// and other bytes): the copy replayed through the transaction is not the
/// last write — its LSN is the transaction's, not the host write's — and
/// nothing is written.
#[test]
fn a_later_write_with_no_undo_makes_the_replay_not_the_last_write() {
    for (name, placement) in every_placement(PS) {
        let (disk, det, _dir, mgr, committed) = fresh(&placement, true);
        let t = mgr.begin().unwrap();
        mgr.write(t, PAGE, 0, &the_change()).unwrap();
        // The host writes the page again, LSN 12, outside the journal.
        let mut later = vec![0u8; PS];
        det.read_verified(PAGE, &mut later).unwrap();
        later[..8].copy_from_slice(&12u64.to_le_bytes());
        later[300..310].fill(0x77);
        det.write_sealed(PAGE, &mut later).unwrap();
        let other = misdirect(&disk);
        let mut now = vec![0u8; PS];
        assert!(det.read_verified(PAGE, &mut now).is_err());
        assert!(
            !mgr.rebuild_page(PAGE, std::slice::from_ref(&committed))
                .unwrap(),
            "{name}"
        );
        assert_eq!(stored(&disk), other, "{name}");
    }
}

/// Under the trailer, a transaction that did not change the page's LSN
/// leaves nothing to name the copy's version by: even the right copy is
/// not taken (under the sidecar table, the checksum judges it).
#[test]
fn under_the_trailer_a_change_that_keeps_the_lsn_cannot_be_rebuilt() {
    for (name, placement) in every_placement(PS) {
        let sidecar = matches!(placement, ChecksumPlacement::Sidecar(_));
        let (disk, _det, _dir, mgr, committed) = fresh(&placement, true);
        let t = mgr.begin().unwrap();
        mgr.write(t, PAGE, 100, &[0xA5; 4]).unwrap();
        misdirect(&disk);
        assert!(matches!(
            mgr.rollback(t),
            Err(Error::RollbackBlocked { .. })
        ));
        assert_eq!(
            mgr.rebuild_page(PAGE, std::slice::from_ref(&committed))
                .unwrap(),
            sidecar,
            "{name}"
        );
    }
}

/// A write whose undo could not be made durable writes nothing and keeps
/// no entry: once the journal resumes and the host retries (with other
/// bytes), the page is rebuilt through the retried write alone.
#[test]
fn a_write_retried_after_a_journal_stall_leaves_the_page_rebuildable() {
    for (name, placement) in every_placement(PS) {
        let (disk, det, dir, mgr, committed) = fresh(&placement, true);
        let t = mgr.begin().unwrap();
        let mut change = page_at(9, 0xA5)[..300].to_vec();
        change[8..].fill(0xA5);
        dir.fail_syncs(1);
        assert!(mgr.write(t, PAGE, 0, &change).is_err(), "{name}");
        mgr.resume().unwrap();
        // The host retries with other bytes (its next attempt's).
        change[8..].fill(0xB6);
        mgr.write(t, PAGE, 0, &change).unwrap();
        misdirect(&disk);
        assert!(matches!(
            mgr.rollback(t),
            Err(Error::RollbackBlocked { .. })
        ));
        assert!(
            mgr.rebuild_page(PAGE, std::slice::from_ref(&committed))
                .unwrap(),
            "{name}"
        );
        mgr.rollback(t).unwrap();
        reads_as(&det, &committed, &placement);
    }
}

/// Undo made durable whose page write never came (the window a crash
/// leaves between the two): the replay through fewer entries is the last
/// write, and the page is rebuilt and rolled back.
#[test]
fn durable_undo_whose_page_write_never_came_still_lets_the_page_be_rebuilt() {
    for (name, placement) in every_placement(PS) {
        let (disk, det, _dir, mgr, committed) = fresh(&placement, true);
        let t = mgr.begin().unwrap();
        mgr.write(t, PAGE, 0, &the_change()).unwrap();
        let mut v1 = vec![0u8; PS];
        det.read_verified(PAGE, &mut v1).unwrap();
        // The transaction's next change (LSN 10, bytes 400..404): its undo
        // durable, its page write never issued.
        let l1 = mgr
            .record_undo(t, PAGE, 0, &v1[..8], &10u64.to_le_bytes())
            .unwrap();
        let l2 = mgr
            .record_undo(t, PAGE, 400, &v1[400..404], b"ZZZZ")
            .unwrap();
        mgr.ensure_durable(l1.max(l2)).unwrap();
        let other = misdirect(&disk);
        assert!(matches!(
            mgr.rollback(t),
            Err(Error::RollbackBlocked { .. })
        ));
        assert_eq!(stored(&disk), other);
        assert!(
            mgr.rebuild_page(PAGE, std::slice::from_ref(&committed))
                .unwrap(),
            "{name}"
        );
        assert_eq!(stored(&disk)[400..404], committed[400..404], "{name}");
        mgr.rollback(t).unwrap();
        reads_as(&det, &committed, &placement);
    }
}

/// A refused rebuild leaves an irreparable page irreparable; a stopped
/// manager refuses to rebuild.
#[test]
fn a_refused_rebuild_keeps_the_page_irreparable_and_a_stopped_manager_refuses() {
    for (name, placement) in every_placement(PS) {
        let r = blocked(&placement, true);
        // A repair that found no copy marks the page irreparable.
        let ticket = r.det.begin_repair(PAGE).unwrap();
        assert!(r.det.abandon_repair(ticket));
        assert_eq!(r.det.page_state(PAGE), Some(PageState::Irreparable));
        let mut damaged = r.committed.clone();
        damaged[450] ^= 1;
        assert!(!r.mgr.rebuild_page(PAGE, &[damaged]).unwrap());
        assert_eq!(
            r.det.page_state(PAGE),
            Some(PageState::Irreparable),
            "{name}"
        );
        r.mgr.stop().unwrap();
        assert!(matches!(
            r.mgr.rebuild_page(PAGE, std::slice::from_ref(&r.committed)),
            Err(Error::Stopped { .. })
        ));
    }
}
