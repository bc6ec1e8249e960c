//! Sealed pages for the rows whose structure holds or changes pages: a
//! detector over a memory store, under either checksum placement.

use std::sync::Arc;

use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, CorruptionDetector, MemStore, PageId,
    PageStore,
};

pub const PS: usize = 256;
pub const PAGES: u64 = 16;

/// A checksum placement, by name (the table of a sidecar is made fresh).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Trailer,
    Sidecar,
}

impl Placement {
    pub const BOTH: [Placement; 2] = [Placement::Trailer, Placement::Sidecar];
}

/// A detector over a fresh memory store of [`PAGES`] pages.
pub fn detector(placement: Placement) -> Arc<CorruptionDetector> {
    let store: Arc<dyn PageStore> = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let p = match placement {
        Placement::Trailer => ChecksumPlacement::Trailer,
        Placement::Sidecar => ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(PS).unwrap())),
    };
    Arc::new(CorruptionConfig::new(p).build(store).unwrap())
}

/// Page `p`'s bytes at version `v` (before sealing; the trailer's bytes
/// are overwritten by the seal).
pub fn content(p: u64, v: u8) -> Vec<u8> {
    (0..PS)
        .map(|i| (i as u8).wrapping_mul(31) ^ (p as u8) ^ v.wrapping_mul(97))
        .collect()
}

/// Seals and writes every page at version `v`.
pub fn write_all(det: &CorruptionDetector, v: u8) {
    for p in 0..PAGES {
        det.write_sealed(PageId(p), &mut content(p, v)).unwrap();
    }
}

/// Every page as read and verified; a page that fails verification reads
/// as its error.
pub fn read_all(det: &CorruptionDetector) -> Vec<Result<Vec<u8>, String>> {
    (0..PAGES)
        .map(|p| {
            let mut buf = vec![0u8; PS];
            det.read_verified(PageId(p), &mut buf)
                .map(|_| buf)
                .map_err(|e| e.to_string())
        })
        .collect()
}
