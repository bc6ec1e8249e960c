//! Goal: a genuine power loss never makes the undo journal refuse to
//! open, even when a page holds the after-image of an undo record that was
//! never synced and the power loss tore: a rollback at run time, or a
//! recovery, wrote the page back to an earlier state that the record's
//! after-image repeats; or the host restored an older snapshot while the
//! manager was closed. Any rule that takes such a page as proof that the
//! record was durable (to tell rot in the journal's tail from a tear) must
//! keep these passing. Method: a transaction writes a page through the
//! rollback manager and records a change back that is never synced;
//! `CrashDir`'s power loss loses exactly that record's after-image; the
//! journal is opened again in the modes that cut a torn tail. Both
//! checksum placements.

use std::sync::Arc;
use std::time::Duration;

use selfheal::rollback::{JournalDamage, RecoveryMode};
use selfheal::testing::journal::{decode_segment, Record};
use selfheal::testing::{both_placements, seal_numbered_pages, CrashDir};
use selfheal::{
    ChecksumPlacement, CorruptionConfig, CorruptionDetector, Error, MemStore, PageId, PageStore,
    RollbackConfig, TransactionRollbackManager,
};

const PS: usize = 512;
const PAGE: PageId = PageId(2);
/// Frame header, then transaction, page and offset.
const IMAGES_AT: usize = 17 + 20;
const N: usize = 64;

/// Four sealed pages (page `p` full of `p + 1`) behind a detector.
fn sealed(placement: &ChecksumPlacement) -> (Arc<MemStore>, Arc<CorruptionDetector>) {
    let mem = Arc::new(MemStore::new(PS, 4).unwrap());
    let det = Arc::new(
        CorruptionConfig::new(placement.clone())
            .build(mem.clone())
            .unwrap(),
    );
    seal_numbered_pages(&det, 4).unwrap();
    det.sync().unwrap();
    (mem, det)
}

fn read(det: &CorruptionDetector, page: PageId) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    det.read_verified(page, &mut b).unwrap();
    b
}

fn manager(journal: &Arc<CrashDir>, det: &Arc<CorruptionDetector>) -> TransactionRollbackManager {
    RollbackConfig::with_storage(journal.clone())
        // No mark after the records within a test.
        .idle_mark_delay(Duration::from_secs(60))
        .build(det.clone())
        .unwrap()
}

fn open(
    journal: &Arc<CrashDir>,
    det: &Arc<CorruptionDetector>,
    mode: RecoveryMode,
) -> Result<TransactionRollbackManager, Error> {
    RollbackConfig::with_storage(journal.clone())
        .recovery_mode(mode)
        .build(det.clone())
}

/// Offset of the last undo record on `page` whose before-image starts with
/// `before`, and the record's image length.
fn record_of(journal: &CrashDir, page: PageId, before: u8) -> (u64, usize, usize) {
    let id = *journal.segment_ids().last().unwrap();
    let scan = decode_segment(&journal.segment(id).unwrap()).unwrap();
    scan.records
        .iter()
        .rev()
        .find_map(|r| match &r.record {
            Record::Undo {
                page: p, before: b, ..
            } if *p == page && b[0] == before => Some((id, r.offset as usize, b.len())),
            _ => None,
        })
        .expect("the undo record is in the newest segment")
}

/// A transaction writes `PAGE` (3 → 0xB0, durable, written), then records
/// a change back (0xB0 → 3) that is never synced.
fn write_then_change_back(mgr: &TransactionRollbackManager) -> (selfheal::TxnId, selfheal::Lsn) {
    let t = mgr.begin().unwrap();
    mgr.write(t, PAGE, 0, &[0xB0; N]).unwrap();
    let lsn = mgr.record_undo(t, PAGE, 0, &[0xB0; N], &[3; N]).unwrap();
    (t, lsn)
}

/// Power loss that loses exactly the after-image of the record that
/// changes `PAGE` back, and nothing before it.
fn lose_the_change_back(journal: &CrashDir) -> Arc<CrashDir> {
    let (id, at, n) = record_of(journal, PAGE, 0xB0);
    let lost = at + IMAGES_AT + n..at + IMAGES_AT + 2 * n;
    Arc::new(journal.crash_keeping(|s, off| !(s == id && lost.contains(&off))))
}

/// A run-time rollback restores the page (its first change's before-image,
/// which is the after-image of the change back that was never synced) and
/// syncs it; the abort record's fsync never completes; the power goes.
#[test]
fn a_power_loss_after_a_rollback_wrote_the_page_back_is_not_refused() {
    for (name, placement) in both_placements(PS) {
        let (_, det) = sealed(&placement);
        let journal = Arc::new(CrashDir::new());
        let mgr = manager(&journal, &det);
        let (t, _) = write_then_change_back(&mgr);
        journal.fail_syncs(100);
        let _ = mgr.rollback(t);
        assert_eq!(&read(&det, PAGE)[..N], &[3; N][..], "{name}");
        let crashed = lose_the_change_back(&journal);
        drop(mgr);
        for mode in [
            RecoveryMode::TolerateTornTail,
            RecoveryMode::StopAtFirstBadRecord,
        ] {
            let m = open(&crashed, &det, mode)
                .unwrap_or_else(|e| panic!("{name} {mode:?}: a power loss refused: {e}"));
            drop(m);
        }
        assert_eq!(&read(&det, PAGE)[..N], &[3; N][..], "{name}");
    }
}

/// The process dies with the change back written but not synced; the
/// recovery at the next open rolls the transaction back (writing the page
/// back and syncing it); the power goes before the journal's tail is
/// synced; the open after that is not refused.
#[test]
fn a_power_loss_after_a_recovery_wrote_the_page_back_is_not_refused() {
    for (name, placement) in both_placements(PS) {
        let (_, det) = sealed(&placement);
        let journal = Arc::new(CrashDir::new());
        let mgr = manager(&journal, &det);
        let (_, lsn) = write_then_change_back(&mgr);
        journal.fail_syncs(1000);
        assert!(mgr.ensure_durable(lsn).is_err());
        // Killed: the bytes written stay in the directory's page cache.
        std::mem::forget(mgr);
        let recovered = open(&journal, &det, RecoveryMode::TolerateTornTail);
        assert_eq!(&read(&det, PAGE)[..N], &[3; N][..], "{name}");
        std::mem::forget(recovered);
        let crashed = lose_the_change_back(&journal);
        let m = open(&crashed, &det, RecoveryMode::TolerateTornTail)
            .unwrap_or_else(|e| panic!("{name}: a power loss refused: {e}"));
        drop(m);
        assert_eq!(&read(&det, PAGE)[..N], &[3; N][..], "{name}");
    }
}

/// The host restores an older snapshot of the page while the manager is
/// closed (as the rollback module's docs allow), after a power loss that
/// tore the record changing a committed write back: the page holds that
/// record's after-image, and the open is not refused.
#[test]
fn a_power_loss_then_a_restore_of_an_older_snapshot_is_not_refused() {
    for (name, placement) in both_placements(PS) {
        let (mem, det) = sealed(&placement);
        let mut snapshot = vec![0u8; PS];
        mem.read_page(PAGE, &mut snapshot).unwrap();
        let journal = Arc::new(CrashDir::new());
        let mgr = manager(&journal, &det);
        let t0 = mgr.begin().unwrap();
        mgr.write(t0, PAGE, 0, &[0xB0; N]).unwrap();
        det.sync().unwrap();
        mgr.commit(t0).unwrap();
        let t = mgr.begin().unwrap();
        let lsn = mgr.record_undo(t, PAGE, 0, &[0xB0; N], &[3; N]).unwrap();
        journal.fail_syncs(1000);
        assert!(mgr.ensure_durable(lsn).is_err());
        let crashed = lose_the_change_back(&journal);
        std::mem::forget(mgr);
        mem.write_page(PAGE, &snapshot).unwrap();
        let det = Arc::new(
            CorruptionConfig::new(placement.clone())
                .build(mem.clone())
                .unwrap(),
        );
        for mode in [
            RecoveryMode::TolerateTornTail,
            RecoveryMode::StopAtFirstBadRecord,
        ] {
            let m = open(&crashed, &det, mode)
                .unwrap_or_else(|e| panic!("{name} {mode:?}: a power loss refused: {e}"));
            assert!(m
                .recovery_report()
                .damage
                .iter()
                .all(|d| matches!(d, JournalDamage::TornTail { .. })));
        }
    }
}
