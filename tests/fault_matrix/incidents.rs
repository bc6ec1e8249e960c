//! The recovery manager's open-incidents file (`dir/incidents`: the crate's
//! framed file, magic `SHRI`; payload: incident count 0..4, then per
//! incident its id 0..8, source 8, priority 9, age 10..18, kind tag 18, the
//! kind's fields, evidence length and evidence).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use selfheal::healer::Outcome as Healed;
use selfheal::testing::Damage;
use selfheal::{
    ChecksumPlacement, ChecksumTable, ManualClock, MemStore, PageId, PageStore, RecoveryConfig,
    StoreReplica,
};

use crate::harness::{Built, Outcome, Spots};
use crate::pages::Placement;

const PS: usize = 4096;
const PAGES: u64 = 8;
const BAD: u64 = 6;
const IDLE: Duration = Duration::from_secs(10);

fn bytes(store: &MemStore, p: u64) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    store.read_page(PageId(p), &mut b).unwrap();
    b
}

fn damage(raw: &MemStore, p: u64) {
    let mut b = bytes(raw, p);
    Damage::BitFlip { byte: 100, bit: 3 }.apply(&mut b);
    raw.write_page(PageId(p), &b).unwrap();
}

fn config(
    placement: &ChecksumPlacement,
    raw: &Arc<MemStore>,
    mirror: &Arc<MemStore>,
    dir: &Path,
    clock_s: u64,
) -> RecoveryConfig {
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(clock_s));
    RecoveryConfig::new(raw.clone(), dir)
        .placement(placement.clone())
        .replica(Arc::new(StoreReplica::new("mirror", mirror.clone())))
        .without_scrub()
        .heal_on_read(false)
        .clock(Arc::new(clock))
}

/// Page 6 is healed once, then found bad again within the healer's cooldown
/// (the manual clock does not move): its incident is deferred and still
/// open at stop, so the file holds one incident. Model: the next manager
/// resumes it (one incident, under the first run's id) and heals the page
/// from the mirror.
pub fn open_incident(dir: &Path, placement: Placement) -> Built {
    let placement = match placement {
        Placement::Trailer => ChecksumPlacement::Trailer,
        Placement::Sidecar => ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(PS).unwrap())),
    };
    let raw = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mirror = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let m = config(&placement, &raw, &mirror, dir, 5).build().unwrap();
    for p in 0..PAGES {
        let mut b: Vec<u8> = (0..PS).map(|i| (i as u8) ^ (p as u8 * 17)).collect();
        m.detector().write_sealed(PageId(p), &mut b).unwrap();
        mirror.write_page(PageId(p), &bytes(&raw, p)).unwrap();
    }
    m.start().unwrap();
    let read_bad = |m: &selfheal::AutoRecoveryManager| {
        let mut b = vec![0u8; PS];
        assert!(m.detector().read_verified(PageId(BAD), &mut b).is_err());
    };
    damage(&raw, BAD);
    read_bad(&m);
    assert!(m.wait_idle(IDLE));
    assert_eq!(m.stats().recovered, 1, "{:?}", m.stats());
    damage(&raw, BAD);
    read_bad(&m);
    assert!(m.wait_idle(IDLE));
    assert_eq!(m.stats().open, 1, "{:?}", m.stats());
    m.stop().unwrap();
    drop(m);
    let file = dir.join("incidents");
    assert!(std::fs::metadata(&file).unwrap().len() > 24 + 4 + 19);
    let d = dir.to_path_buf();
    Built {
        spots: Spots {
            header_cut: 12,
            record_cut: 24 + 4 + 12,
            header: 8,
            body: 24 + 4 + 1,
            checksum: 16,
            sector: 0,
        },
        reopen: Box::new(move || {
            let m = match config(&placement, &raw, &mirror, &d, 100).build() {
                Err(e) => return Outcome::Refused(e),
                Ok(m) => m,
            };
            let report = match m.start() {
                Err(e) => return Outcome::Refused(e),
                Ok(r) => r,
            };
            let idle = m.wait_idle(IDLE);
            let healed = bytes(&raw, BAD) == bytes(&mirror, BAD);
            let incs = m.incidents();
            let resumed = incs.len() == 1
                && incs[0].id == 2
                && matches!(incs[0].outcome, Healed::Healed { .. });
            let out = match (&report.incidents_warning, report.incidents_resumed) {
                (None, 1) if idle && healed && resumed => Outcome::Recovered,
                (Some(w), 0) if idle && healed && w.contains("missing") => Outcome::Fallback(
                    "warned (file missing), the page healed from the suspect registry",
                ),
                (Some(_), 0) if idle && healed => {
                    Outcome::Fallback("warned, the page healed from the suspect registry")
                }
                (w, n) => Outcome::Wrong(format!(
                    "{n} resumed, warning {w:?}, idle {idle}, healed {healed}, incidents {incs:?}"
                )),
            };
            let _ = m.stop();
            out
        }),
        file,
    }
}
