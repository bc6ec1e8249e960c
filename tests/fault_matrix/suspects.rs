//! The recovery manager's suspect registry (`dir/suspects`: the crate's
//! framed file; payload: page count 0..4, then 17 bytes per page — page id
//! 0..8, state 8, first seen 9..17).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use selfheal::{
    ChecksumPlacement, ChecksumTable, Error, MemStore, Mode, PageId, PageStore, RecoveryConfig,
    StoreReplica,
};

use crate::harness::{Built, Outcome, Spots};
use crate::pages::Placement;

const PS: usize = 4096;
const PAGES: u64 = 8;
const BAD: [u64; 2] = [2, 5];
const IDLE: Duration = Duration::from_secs(10);

fn config(
    placement: &ChecksumPlacement,
    raw: &Arc<MemStore>,
    mirror: &Arc<MemStore>,
    dir: &Path,
) -> RecoveryConfig {
    RecoveryConfig::new(raw.clone(), dir)
        .placement(placement.clone())
        .replica(Arc::new(StoreReplica::new("mirror", mirror.clone())))
        .without_scrub()
        .heal_on_read(false)
        .mode(Mode::Observe)
}

fn bytes(store: &MemStore, p: u64) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    store.read_page(PageId(p), &mut b).unwrap();
    b
}

/// A run in Observe mode (which changes nothing) finds pages 2 and 5
/// damaged and stops, saving them as suspects. Model: the next manager
/// fences exactly those pages from the moment it is built.
pub fn registry(dir: &Path, placement: Placement) -> Built {
    let placement = match placement {
        Placement::Trailer => ChecksumPlacement::Trailer,
        Placement::Sidecar => ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(PS).unwrap())),
    };
    let raw = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mirror = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let m = config(&placement, &raw, &mirror, dir).build().unwrap();
    for p in 0..PAGES {
        let mut b: Vec<u8> = (0..PS).map(|i| (i as u8) ^ (p as u8 * 17)).collect();
        m.detector().write_sealed(PageId(p), &mut b).unwrap();
        mirror.write_page(PageId(p), &bytes(&raw, p)).unwrap();
    }
    m.start().unwrap();
    for p in BAD {
        let mut b = bytes(&raw, p);
        b[100] ^= 0x08;
        raw.write_page(PageId(p), &b).unwrap();
        let mut buf = vec![0u8; PS];
        assert!(m.detector().read_verified(PageId(p), &mut buf).is_err());
    }
    assert!(m.wait_idle(IDLE));
    m.stop().unwrap();
    drop(m);
    let file = dir.join("suspects");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 24 + 4 + 17 * 2);
    let d = dir.to_path_buf();
    Built {
        spots: Spots {
            header_cut: 12,
            record_cut: 24 + 4 + 17 + 8,
            header: 8,
            body: 24 + 4 + 17,
            checksum: 16,
            sector: 0,
        },
        reopen: Box::new(move || {
            let m = match config(&placement, &raw, &mirror, &d).build() {
                Err(e) => return Outcome::Refused(e),
                Ok(m) => m,
            };
            let fenced = |m: &selfheal::AutoRecoveryManager| -> Vec<u64> {
                (0..PAGES)
                    .filter(|&p| {
                        let mut b = vec![0u8; PS];
                        matches!(
                            m.detector().read_verified(PageId(p), &mut b),
                            Err(Error::PageFenced { .. })
                        )
                    })
                    .collect()
            };
            let at_build = fenced(&m);
            let report = match m.start() {
                Err(e) => return Outcome::Refused(e),
                Ok(r) => r,
            };
            let idle = m.wait_idle(IDLE);
            let out = match (&report.suspects_warning, at_build == BAD) {
                (None, true) => Outcome::Recovered,
                (Some(w), _) if idle && fenced(&m) == BAD && w.contains("missing") => {
                    Outcome::Fallback("warned (file missing), every page re-checked")
                }
                (Some(_), _) if idle && fenced(&m) == BAD => {
                    Outcome::Fallback("warned, the pages it names re-checked")
                }
                (w, _) => Outcome::Wrong(format!(
                    "fenced at build {at_build:?}, warning {}",
                    w.is_some()
                )),
            };
            let _ = m.stop();
            out
        }),
        file,
    }
}
