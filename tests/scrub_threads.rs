//! Goal: show that a scrub on several threads finds exactly what a scrub on one thread finds: the same summary, the same pages fenced in the same states with the same errors, the same reports. Method: two identical stores of sealed pages (both checksum placements, a `FileStore` for the `pread` path and one with the memory-map scan), the same damage applied to each behind the detector's back (garbage, a zeroed page, a page copied to the wrong place, a freed page), then one scrubbed with `ScrubConfig::threads(1)` and the other with several threads and small batches, both through `scan_range` and through `step`; a proptest draws the damage, the thread count and the batch size. Also: a paced scrub with several threads is refused.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use selfheal::scrub::{ScanSummary, ScrubStep};
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, CorruptionDetector, Error, FileStore,
    ManualClock, PageId, PageStore, ScrubConfig,
};

const PS: usize = 512;

#[derive(Clone, Copy, Debug)]
enum Damage {
    Garbage,
    Zeroed,
    /// A copy of another page's sealed bytes.
    Misplaced,
    /// Garbage on a page the host says is free.
    Freed,
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::Garbage),
        Just(Damage::Zeroed),
        Just(Damage::Misplaced),
        Just(Damage::Freed),
    ]
}

struct Rig {
    det: Arc<CorruptionDetector>,
    _dir: tempfile::TempDir,
}

/// A store of `pages` sealed pages with `damage` applied behind the
/// detector's back.
fn rig(sidecar: bool, mmap: bool, pages: u64, damage: &[(u64, Damage)]) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    drop(FileStore::create(&path, PS, pages).unwrap());
    let raw = Arc::new(FileStore::open(&path, PS).unwrap().with_mmap_scan(mmap));
    let placement = if sidecar {
        ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(PS).unwrap()))
    } else {
        ChecksumPlacement::Trailer
    };
    let freed: BTreeSet<u64> = damage
        .iter()
        .filter(|(_, d)| matches!(d, Damage::Freed))
        .map(|(p, _)| *p)
        .collect();
    let det = Arc::new(
        CorruptionConfig::new(placement)
            .clock(Arc::new(ManualClock::new()))
            .free_pages(Arc::new(move |p: PageId| freed.contains(&p.0)))
            .build(raw.clone())
            .unwrap(),
    );
    for p in 0..pages {
        let mut b: Vec<u8> = (0..PS).map(|i| (p as usize * 13 + i) as u8 | 1).collect();
        det.write_sealed(PageId(p), &mut b).unwrap();
    }
    for &(p, d) in damage {
        let bytes = match d {
            Damage::Garbage | Damage::Freed => vec![(p as u8) ^ 0xA5 | 1; PS],
            Damage::Zeroed => vec![0u8; PS],
            Damage::Misplaced => {
                let mut b = vec![0u8; PS];
                raw.read_page(PageId((p + 1) % pages), &mut b).unwrap();
                b
            }
        };
        raw.write_page(PageId(p), &bytes).unwrap();
    }
    Rig { det, _dir: dir }
}

/// Everything a scrub leaves behind: the registry (page, state, error) and
/// the reports, sorted.
fn findings(det: &CorruptionDetector) -> (Vec<(u64, String, String)>, Vec<String>) {
    let registry = det
        .suspects()
        .into_iter()
        .map(|(p, e)| (p.0, e.state.as_str().to_string(), e.last_error))
        .collect();
    let mut reports: Vec<String> = det.failures().try_iter().map(|f| f.evidence).collect();
    reports.sort();
    (registry, reports)
}

/// Scans the whole store with `threads`, through `scan_range` or by steps.
fn scrub(det: &Arc<CorruptionDetector>, threads: usize, batch: u64, by_steps: bool) -> ScanSummary {
    let s = ScrubConfig::new()
        .unlimited()
        .threads(threads)
        .batch_pages(batch)
        .single_pass()
        .build(det.clone())
        .unwrap();
    let pages = det.store().page_count();
    if !by_steps {
        return s.scan_range(PageId(0), pages).unwrap();
    }
    let mut total = ScanSummary::default();
    loop {
        match s.step(0).unwrap() {
            ScrubStep::Scanned(x) => {
                total.pages += x.pages;
                total.clean += x.clean;
                total.transient += x.transient;
                total.newly_corrupt += x.newly_corrupt;
                total.known_corrupt += x.known_corrupt;
                total.unallocated += x.unallocated;
            }
            ScrubStep::Done => return total,
            ScrubStep::PassComplete { .. } => {}
            other => panic!("unexpected step {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn several_threads_find_what_one_finds(
        pages in 1u64..300,
        damaged in proptest::collection::vec((0u64..300, damage()), 0..12),
        threads in 2usize..5,
        batch in 1u64..40,
        sidecar in any::<bool>(),
        mmap in any::<bool>(),
        by_steps in any::<bool>(),
    ) {
        let mut seen = BTreeSet::new();
        let damaged: Vec<(u64, Damage)> = damaged
            .into_iter()
            .map(|(p, d)| match d {
                // One page has no other page to be mistaken for.
                Damage::Misplaced if pages == 1 => (0, Damage::Garbage),
                d => (p % pages, d),
            })
            .filter(|(p, _)| seen.insert(*p))
            .collect();
        let one = rig(sidecar, mmap, pages, &damaged);
        let many = rig(sidecar, mmap, pages, &damaged);
        let a = scrub(&one.det, 1, batch, by_steps);
        let b = scrub(&many.det, threads, batch, by_steps);
        prop_assert_eq!(a, b);
        prop_assert_eq!(a.pages, pages);
        let expected_bad = damaged.iter().filter(|(_, d)| !matches!(d, Damage::Freed)).count() as u64;
        prop_assert_eq!(a.newly_corrupt, expected_bad);
        prop_assert_eq!(findings(&one.det), findings(&many.det));
        prop_assert_eq!(one.det.stats(), many.det.stats());
    }
}

#[test]
fn a_paced_scrub_on_several_threads_is_refused() {
    let r = rig(false, false, 4, &[]);
    for cfg in [
        ScrubConfig::new().pages_per_s(100).threads(2),
        ScrubConfig::new().unlimited().threads(0),
        ScrubConfig::new()
            .unlimited()
            .threads(selfheal::scrub::MAX_SCRUB_THREADS + 1),
    ] {
        match cfg.build(r.det.clone()) {
            Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "threads"),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
    assert_eq!(
        ScrubConfig::new()
            .unlimited()
            .threads(2)
            .build(r.det.clone())
            .unwrap()
            .threads(),
        2
    );
}
