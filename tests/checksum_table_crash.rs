//! Goal: a sidecar checksum table survives a crash at any step. Method: the
//! pre-fix durability story (save the table at each checkpoint).

use std::sync::Arc;

use selfheal::testing::CrashStore;
use selfheal::{ChecksumPlacement, ChecksumTable, DetectorConfig, PageId, PageStore};

#[test]
fn a_page_written_and_synced_after_the_last_save_verifies_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sums");
    let store = Arc::new(CrashStore::new(256, 4).unwrap());
    let table = Arc::new(ChecksumTable::load_or_new(&path, 256).unwrap());
    let det = DetectorConfig::new(ChecksumPlacement::Sidecar(table.clone()))
        .build(store.clone())
        .unwrap();
    for p in 0..4 {
        det.write_sealed(PageId(p), &mut vec![p as u8 + 1; 256]).unwrap();
    }
    PageStore::sync(&det).unwrap();
    table.save(&path).unwrap();
    det.write_sealed(PageId(2), &mut vec![0xEE; 256]).unwrap();
    PageStore::sync(&det).unwrap();
    let after = Arc::new(store.crash(None));
    let table = Arc::new(ChecksumTable::load_or_new(&path, 256).unwrap());
    let det = DetectorConfig::new(ChecksumPlacement::Sidecar(table))
        .build(after)
        .unwrap();
    let mut b = vec![0u8; 256];
    for p in 0..4 {
        det.read_verified(PageId(p), &mut b)
            .unwrap_or_else(|e| panic!("page {p} fails after the crash: {e}"));
    }
}
