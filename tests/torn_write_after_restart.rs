//! Goal: a page's last durable checksum survives a crash that tears a later
//! write of the page, even when that checksum was only an intent of unknown
//! fate at the open before (its `settle` record lost to an earlier crash),
//! so that a replica's copy of the acknowledged bytes still verifies and
//! repairs the page. Method: a `CrashStore` and `CrashFiles` image; write
//! and sync a page through the detector, crash keeping only durable bytes
//! (the lazily written settle record is lost), reopen and rebuild the
//! detector, write the page again without a sync, crash, tear the page
//! (half new bytes over the old), reopen, and check that the acknowledged
//! copy verifies, the torn page fails as damage, and writing the copy back
//! heals it; under the trailer placement the same steps are the reference.

use std::sync::Arc;

use selfheal::checksum::TableConfig;
use selfheal::testing::{CrashFiles, CrashStore};
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, CorruptionDetector, Error, PageId,
    PageStore,
};

const PS: usize = 256;
const PAGES: u64 = 4;
const PAGE: PageId = PageId(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    Trailer,
    Sidecar,
}

/// Page bytes that differ from page to page and from version to version.
fn contents(version: u8) -> Vec<u8> {
    (0..PS)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(version))
        .collect()
}

/// A process on `store` and `files`: the table (sidecar) and the detector.
fn start(
    placement: Placement,
    store: &Arc<CrashStore>,
    files: &Arc<CrashFiles>,
) -> (CorruptionDetector, Option<Arc<ChecksumTable>>) {
    let (p, table) = match placement {
        Placement::Sidecar => {
            let t = Arc::new(
                TableConfig::new(PS)
                    .open_on(files.clone(), "sums")
                    .expect("open the table"),
            );
            (ChecksumPlacement::Sidecar(t.clone()), Some(t))
        }
        Placement::Trailer => (ChecksumPlacement::Trailer, None),
    };
    let det = CorruptionConfig::new(p)
        .build(store.clone())
        .expect("build the detector");
    (det, table)
}

fn torn_write_after_restart_keeps_the_acknowledged_checksum(placement: Placement) {
    let store = Arc::new(CrashStore::new(PS, PAGES).unwrap());
    let files = Arc::new(CrashFiles::new());
    let (det, table) = start(placement, &store, &files);
    for p in 0..PAGES {
        det.write_sealed(PageId(p), &mut contents(p as u8)).unwrap();
    }
    // The acknowledged version (a replica holds these bytes).
    let mut acked = contents(10);
    det.write_sealed(PAGE, &mut acked).unwrap();
    det.sync().unwrap();

    // Crash 1 (the images taken while the process lives: a clean close
    // would write what is buffered): only durable bytes survive; the settle
    // record of the sync was buffered, so the acknowledged version's intent
    // is read back of unknown fate.
    let store = Arc::new(store.crash(None));
    let files = Arc::new(files.crash(None));
    drop((det, table));
    let (det, table) = start(placement, &store, &files);
    let mut b = vec![0u8; PS];
    det.read_verified(PAGE, &mut b).unwrap_or_else(|e| {
        panic!("{placement:?}: the acknowledged page fails after a restart: {e}")
    });
    assert_eq!(b, acked, "{placement:?}");
    // A write of the page that no sync covers.
    let mut newer = contents(20);
    det.write_sealed(PAGE, &mut newer).unwrap();

    // Crash 2: the write is torn (its first half over the old bytes).
    let store = Arc::new(store.crash(None));
    let files = Arc::new(files.crash(None));
    drop((det, table));
    let mut torn = acked.clone();
    torn[..PS / 2].copy_from_slice(&newer[..PS / 2]);
    store.write_page(PAGE, &torn).unwrap();
    store.sync().unwrap();
    let (det, table) = start(placement, &store, &files);

    // The acknowledged copy still verifies: a repair can use it.
    det.verify(PAGE, &acked).unwrap_or_else(|e| {
        panic!("{placement:?}: the acknowledged copy no longer verifies after the torn write: {e}")
    });
    // The torn page is damage, not a page without a checksum.
    match det.read_verified(PAGE, &mut b) {
        Err(Error::ChecksumMismatch { .. }) => {}
        other => {
            panic!("{placement:?}: the torn page read as {other:?}, not as a checksum mismatch")
        }
    }
    // Writing the copy back heals it, across a sync and a clean restart.
    let mut copy = acked.clone();
    det.write_sealed(PAGE, &mut copy).unwrap();
    det.sync().unwrap();
    det.read_verified(PAGE, &mut b).unwrap();
    assert_eq!(b, acked, "{placement:?}");
    let (store, files) = (Arc::new(store.crash(None)), Arc::new(files.crash(None)));
    drop((det, table));
    let (det, _table) = start(placement, &store, &files);
    det.read_verified(PAGE, &mut b)
        .unwrap_or_else(|e| panic!("{placement:?}: the healed page fails after a restart: {e}"));
    assert_eq!(b, acked, "{placement:?}");
}

#[test]
fn sidecar_keeps_the_acknowledged_checksum_across_a_torn_write_after_a_restart() {
    torn_write_after_restart_keeps_the_acknowledged_checksum(Placement::Sidecar);
}

#[test]
fn trailer_keeps_the_acknowledged_checksum_across_a_torn_write_after_a_restart() {
    torn_write_after_restart_keeps_the_acknowledged_checksum(Placement::Trailer);
}
