//! Goal: a repair puts back only a copy of the page's last write — never a
//! version that a later write replaced, even while that write is not yet
//! synced and a durable sidecar table still accepts the older version for
//! reads (a crash could leave either on disk) — and after a restart, when
//! no write's fate is known, any version the table accepts may be put back.
//! Method: sealed pages under the in-memory and the durable sidecar table
//! (on in-memory files, so its log really runs); a page written again
//! without a sync, its stored bytes damaged, and a repair from a replica
//! that holds the version before that write, then from one that holds the
//! write; the store's bytes and what a verified read serves are checked. A
//! restart is the table reopened from every byte its files were given (a
//! process crash: the kernel kept them all). Under the trailer placement
//! without a page-LSN reader an older copy verifies by its own trailer (the
//! stale-copy limit in the README), so that placement is not run here.

use std::sync::Arc;

use selfheal::checksum::TableConfig;
use selfheal::repair::RepairOutcome;
use selfheal::testing::{seal_numbered_pages, sidecar_placements, CrashFiles, Damage};
use selfheal::{
    ChecksumPlacement, CorruptionConfig, CorruptionDetector, DataRepairer, MemStore, PageId,
    PageStore, RepairConfig, StoreReplica,
};

const PS: usize = 4096;
const PAGE: PageId = PageId(2);

fn page(fill: u8) -> Vec<u8> {
    vec![fill; PS]
}

/// Four pages sealed (page `p` full of `p + 1`) and synced.
fn sealed(placement: ChecksumPlacement) -> (Arc<MemStore>, Arc<CorruptionDetector>) {
    let raw = Arc::new(MemStore::new(PS, 4).unwrap());
    let det = Arc::new(CorruptionConfig::new(placement).build(raw.clone()).unwrap());
    seal_numbered_pages(&det, 4).unwrap();
    det.sync().unwrap();
    (raw, det)
}

fn stored(raw: &MemStore) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    raw.read_page(PAGE, &mut b).unwrap();
    b
}

/// Damages the page's stored bytes behind the detector's back.
fn rot(raw: &MemStore) {
    let mut b = stored(raw);
    Damage::BitFlip { byte: 100, bit: 3 }.apply(&mut b);
    raw.write_page(PAGE, &b).unwrap();
}

/// Damages the page's stored bytes and has a verified read find it.
fn damage(raw: &MemStore, det: &CorruptionDetector) {
    rot(raw);
    let mut b = vec![0u8; PS];
    assert!(det.read_verified(PAGE, &mut b).unwrap_err().is_corruption());
}

/// A repairer over `det` with one replica holding `copy` as the page.
fn repairer(det: &Arc<CorruptionDetector>, copy: &[u8]) -> DataRepairer {
    let mirror = Arc::new(MemStore::new(PS, 4).unwrap());
    mirror.write_page(PAGE, copy).unwrap();
    let r = RepairConfig::new().build(det.clone()).unwrap();
    r.add_replica(Arc::new(StoreReplica::new("mirror", mirror)))
        .unwrap();
    r
}

#[test]
fn a_repair_never_puts_back_a_version_an_unsynced_write_replaced() {
    for (name, placement) in sidecar_placements(PS) {
        let (raw, det) = sealed(placement);
        let before = stored(&raw);
        let mut written = page(0xEE);
        det.write_sealed(PAGE, &mut written).unwrap();
        // No sync: a durable table still accepts `before` for reads.
        damage(&raw, &det);
        let report = repairer(&det, &before).repair_page(PAGE).unwrap();
        assert!(
            matches!(report.outcome, RepairOutcome::Irreparable { .. }),
            "{name}: {report:?}"
        );
        assert_ne!(stored(&raw), before, "{name}: the replaced version is back");
        let mut b = vec![0u8; PS];
        assert!(det.read_verified(PAGE, &mut b).is_err(), "{name}");
        // A copy of the write itself repairs it.
        let report = repairer(&det, &written).repair_page(PAGE).unwrap();
        assert!(report.is_repaired(), "{name}: {report:?}");
        det.read_verified(PAGE, &mut b).unwrap();
        assert_eq!(b, written, "{name}");
    }
}

#[test]
fn after_a_restart_any_version_the_table_accepts_may_be_put_back() {
    let files = Arc::new(CrashFiles::new());
    let table = Arc::new(TableConfig::new(PS).open_on(files.clone(), "sums").unwrap());
    let (raw, det) = sealed(ChecksumPlacement::Sidecar(table.clone()));
    let before = stored(&raw);
    det.write_sealed(PAGE, &mut page(0xEE)).unwrap();
    // A process crash before the sync: the kernel kept every byte written.
    let kept = Arc::new(CrashFiles::new());
    for n in files.names() {
        kept.set_file(&n, files.file(&n).unwrap());
    }
    std::mem::forget((det, table));
    // The page is damaged too: the open cannot tell which version it held.
    rot(&raw);
    let mut b = vec![0u8; PS];
    let table = Arc::new(TableConfig::new(PS).open_on(kept, "sums").unwrap());
    let det = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Sidecar(table))
            .build(raw.clone())
            .unwrap(),
    );
    assert!(det.read_verified(PAGE, &mut b).unwrap_err().is_corruption());
    // The write was never synced: the version before it may be the last
    // write the disk holds, and a replica's copy of it repairs the page.
    let report = repairer(&det, &before).repair_page(PAGE).unwrap();
    assert!(report.is_repaired(), "{report:?}");
    assert_eq!(stored(&raw), before);
}
