//! Snapshots of stores whose pages are really sealed (written through a `CorruptionDetector`, trailer and sidecar placement): incrementals found by fingerprint comparison over `View` and `Paused` (with and without dirty notices, and first after reopening the manager) must store exactly the rewritten pages; every restore must equal a byte model of the store; the page source must never serve a page that changed after the head; and a property test drives random writes, resizes, snapshots of every kind, reopens and restores against that model.

use std::path::Path;

use proptest::prelude::*;
use std::sync::Arc;

use selfheal::snapshot::{
    ChangeDetection, Consistency, Retention, SnapshotConfig, SnapshotKind, SnapshotReport,
    SnapshotRequest, StateSnapshotManager, WriteGate,
};
use selfheal::testing::{both_placements, every_placement, SealedStore};
use selfheal::{ChecksumPlacement, CorruptionConfig, Lsn, MemStore, PageId, PageSource, PageStore};

const PS: usize = 512;
const PAGES: u64 = 64;

fn sealed(placement: ChecksumPlacement) -> SealedStore {
    SealedStore::new(placement, PS, PAGES, 1).unwrap()
}

fn manager(dir: &Path) -> StateSnapshotManager {
    SnapshotConfig::new(dir, PS)
        .chunk_bytes(PS * 4)
        .retention(Retention::KeepAll)
        .build()
        .unwrap()
}

fn paused(
    m: &StateSnapshotManager,
    store: &dyn PageStore,
    lsn: u64,
    kind: SnapshotKind,
) -> SnapshotReport {
    selfheal::testing::take_paused(m, store, Lsn(lsn), kind).unwrap()
}

fn view(m: &StateSnapshotManager, store: &dyn PageStore, lsn: u64) -> SnapshotReport {
    m.take_snapshot(
        Consistency::View {
            view: store,
            lsn: Lsn(lsn),
        },
        SnapshotRequest::new(SnapshotKind::Incremental),
    )
    .unwrap()
}

fn restored_bytes(m: &StateSnapshotManager, id: u64) -> Vec<u8> {
    let out = MemStore::new(PS, PAGES).unwrap();
    let r = m.restore(id, &out).unwrap();
    assert_eq!(r.restored, id);
    out.to_bytes()
}

/// The page source serves `page` (vouched for by the head's LSN) with
/// exactly the store's current bytes.
fn served_current(m: &StateSnapshotManager, s: &SealedStore, page: u64, lsn: u64) {
    let mut buf = vec![0u8; PS];
    assert!(
        m.page_source()
            .read_page(PageId(page), Some(Lsn(lsn)), &mut buf)
            .unwrap(),
        "page {page} not served"
    );
    assert!(
        buf == s.page(page).unwrap(),
        "page {page}: a stale copy was served"
    );
}

fn full_view(m: &StateSnapshotManager, store: &dyn PageStore, lsn: u64) -> SnapshotReport {
    m.take_snapshot(
        Consistency::View {
            view: store,
            lsn: Lsn(lsn),
        },
        SnapshotRequest::new(SnapshotKind::Full),
    )
    .unwrap()
}

fn placement_like(name: &str) -> ChecksumPlacement {
    both_placements(PS)
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
}

#[test]
fn incrementals_by_fingerprint_store_every_rewritten_sealed_page() {
    for (name, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let s = sealed(placement);
        let mut states = Vec::new();
        let m = manager(dir.path());

        // A host that reads point-in-time views and never pauses: notices
        // are never trusted, every incremental compares fingerprints.
        let full = full_view(&m, s.detector(), 1);
        states.push((full.info.id, s.bytes()));
        let changed = [3, 10, 11, 20, 33, 40, 50, 63];
        for p in changed {
            s.write(p, 2).unwrap();
        }
        let r = view(&m, s.detector(), 2);
        assert_eq!(r.detection, ChangeDetection::Fingerprints, "{name}");
        assert_eq!(r.info.stored_pages, 8, "{name}: rewritten pages missed");
        states.push((r.info.id, s.bytes()));
        for p in changed {
            served_current(&m, &s, p, 2);
        }

        // The first incremental after reopening the manager, paused: notices
        // are not trusted yet, so it compares too.
        drop(m);
        let m = manager(dir.path());
        for p in [0, 5, 60] {
            s.write(p, 3).unwrap();
            m.note_dirty(PageId(p));
        }
        let r = paused(&m, s.detector(), 3, SnapshotKind::Incremental);
        assert_eq!(r.detection, ChangeDetection::Fingerprints, "{name}");
        assert_eq!(r.info.stored_pages, 3, "{name}: after reopen");
        states.push((r.info.id, s.bytes()));
        for p in [0, 5, 60] {
            served_current(&m, &s, p, 3);
        }

        // Paused with trusted notices: the noted pages.
        for p in [1, 9, 17, 25] {
            s.write(p, 4).unwrap();
            m.note_dirty(PageId(p));
        }
        let r = paused(&m, s.detector(), 4, SnapshotKind::Incremental);
        assert_eq!(r.detection, ChangeDetection::DirtyNotices, "{name}");
        assert_eq!(r.info.stored_pages, 4, "{name}");
        states.push((r.info.id, s.bytes()));

        // A view while notices are trusted still compares (the set is kept).
        for p in [2, 30] {
            s.write(p, 5).unwrap();
            m.note_dirty(PageId(p));
        }
        let r = view(&m, s.detector(), 5);
        assert_eq!(r.detection, ChangeDetection::Fingerprints, "{name}");
        assert_eq!(r.info.stored_pages, 2, "{name}");
        states.push((r.info.id, s.bytes()));

        // After a restore of the head into the store, a paused snapshot
        // compares again (notices are not trusted after a restore).
        let head = states.last().unwrap().0;
        m.restore(head, s.detector()).unwrap();
        assert!(!m.dirty_notices_trusted());
        s.write(44, 6).unwrap();
        let r = paused(&m, s.detector(), 6, SnapshotKind::Incremental);
        assert_eq!(r.detection, ChangeDetection::Fingerprints, "{name}");
        assert_eq!(r.info.stored_pages, 1, "{name}");
        states.push((r.info.id, s.bytes()));

        // Every snapshot restores byte for byte.
        for (id, bytes) in &states {
            assert!(
                restored_bytes(&m, *id) == *bytes,
                "{name}: snapshot {id} differs"
            );
        }
        // And through a detector of the same placement, every page verifies.
        let out = Arc::new(MemStore::new(PS, PAGES).unwrap());
        let det = CorruptionConfig::new(placement_like(name))
            .build(out.clone())
            .unwrap();
        let last = states.last().unwrap();
        m.restore(last.0, &det).unwrap();
        assert!(out.to_bytes() == last.1, "{name}");
        let mut buf = vec![0u8; PS];
        for p in 0..PAGES {
            det.read_verified(PageId(p), &mut buf).unwrap();
        }
    }
}

#[test]
fn the_page_source_never_serves_a_page_changed_after_the_head() {
    for (name, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let s = sealed(placement);
        let m = manager(dir.path());
        full_view(&m, s.detector(), 1);
        for p in [4, 8] {
            s.write(p, 2).unwrap();
        }
        // A view snapshot: the head now holds pages 4 and 8 as rewritten.
        view(&m, s.detector(), 2);
        let src = m.page_source();
        let mut buf = vec![0u8; PS];
        for p in 0..PAGES {
            assert!(src.read_page(PageId(p), Some(Lsn(2)), &mut buf).unwrap());
            assert!(buf == s.page(p).unwrap(), "{name}: page {p} served stale");
        }
        // Changed after the head: with a newer LSN it is refused.
        s.write(4, 3).unwrap();
        assert!(
            !src.read_page(PageId(4), Some(Lsn(3)), &mut buf).unwrap(),
            "{name}"
        );
        // A paused snapshot (by fingerprints: notices were never trusted)
        // makes notices trusted; a noted page is then refused whatever LSN
        // is given.
        let r = paused(&m, s.detector(), 3, SnapshotKind::Incremental);
        assert_eq!(r.detection, ChangeDetection::Fingerprints, "{name}");
        assert_eq!(r.info.stored_pages, 1, "{name}");
        s.write(8, 4).unwrap();
        m.note_dirty(PageId(8));
        assert!(
            !src.read_page(PageId(8), Some(Lsn(1)), &mut buf).unwrap(),
            "{name}"
        );
        assert!(!src.read_page(PageId(8), None, &mut buf).unwrap(), "{name}");
        assert!(src.read_page(PageId(4), None, &mut buf).unwrap(), "{name}");
        assert!(buf == s.page(4).unwrap(), "{name}");
    }
}

/// One step of the model test.
#[derive(Clone, Debug)]
enum Op {
    /// Rewrite page `page % page_count` (noted dirty, as the host contract asks).
    Write { page: u64, version: u8 },
    /// Resize through the detector (noted), writing the pages gained.
    Resize { pages: u64 },
    /// Take a snapshot of that kind.
    Snap(Kind),
    /// Drop the manager and open the directory again.
    Reopen,
    /// Restore an earlier snapshot into the live store.
    Restore { pick: proptest::sample::Index },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    FullPaused,
    FullView,
    IncrementalPaused,
    IncrementalView,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..64, any::<u8>()).prop_map(|(page, version)| Op::Write { page, version }),
        1 => (4u64..40).prop_map(|pages| Op::Resize { pages }),
        4 => prop_oneof![
            Just(Kind::FullPaused),
            Just(Kind::FullView),
            Just(Kind::IncrementalPaused),
            Just(Kind::IncrementalView),
        ]
        .prop_map(Op::Snap),
        1 => Just(Op::Reopen),
        1 => any::<proptest::sample::Index>().prop_map(|pick| Op::Restore { pick }),
    ]
}

const MODEL_PS: usize = 256;

fn model_manager(dir: &Path) -> StateSnapshotManager {
    SnapshotConfig::new(dir, MODEL_PS)
        .chunk_bytes(MODEL_PS * 3)
        .retention(Retention::KeepAll)
        .build()
        .unwrap()
}

/// The pages of `now` that an incremental on a head holding `head` must
/// store: those that differ, and those past the head's end.
fn must_store(head: &[u8], now: &[u8]) -> u64 {
    let (h, n) = (head.len() / MODEL_PS, now.len() / MODEL_PS);
    (0..n)
        .filter(|&p| {
            p >= h
                || head[p * MODEL_PS..(p + 1) * MODEL_PS] != now[p * MODEL_PS..(p + 1) * MODEL_PS]
        })
        .count() as u64
}

/// Every page the page source serves equals the store's current page.
fn check_page_source(
    m: &StateSnapshotManager,
    s: &SealedStore,
    lsn: u64,
) -> std::result::Result<(), TestCaseError> {
    let src = m.page_source();
    let mut buf = vec![0u8; MODEL_PS];
    for p in 0..s.raw().page_count() + 2 {
        for bound in [Some(Lsn(lsn)), None] {
            if src.read_page(PageId(p), bound, &mut buf).unwrap() {
                prop_assert!(p < s.raw().page_count(), "page {} past the end served", p);
                prop_assert!(
                    buf == s.page(p).unwrap(),
                    "page {} served stale ({:?})",
                    p,
                    bound
                );
            }
        }
    }
    Ok(())
}

fn run_model(
    placement: ChecksumPlacement,
    ops: &[Op],
    sizes: &[u64],
) -> std::result::Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let s = SealedStore::new(placement, MODEL_PS, 24, 0).unwrap();
    let mut m = model_manager(dir.path());
    let gate = WriteGate::new();
    let mut lsn = 1u64;
    // (id, store bytes at it), in the order taken; and the head's bytes.
    let mut snaps: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut head: Option<Vec<u8>> = None;
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Write { page, version } => {
                let p = page % s.raw().page_count();
                s.write(p, u64::from(*version) + 256 * step as u64).unwrap();
                m.note_dirty(PageId(p));
                lsn += 1;
            }
            Op::Resize { pages } => {
                s.resize(*pages, 7 + 256 * step as u64).unwrap();
                m.note_resized(*pages);
                lsn += 1;
            }
            Op::Snap(kind) => {
                let incremental = matches!(kind, Kind::IncrementalPaused | Kind::IncrementalView);
                if incremental && head.is_none() {
                    continue;
                }
                let request = SnapshotRequest::new(if incremental {
                    SnapshotKind::Incremental
                } else {
                    SnapshotKind::Full
                });
                let trusted = m.dirty_notices_trusted();
                let pause = gate.pause();
                let source = match kind {
                    Kind::FullPaused | Kind::IncrementalPaused => Consistency::Paused {
                        store: s.detector(),
                        pause: &pause,
                        lsn: Lsn(lsn),
                    },
                    _ => Consistency::View {
                        view: s.detector(),
                        lsn: Lsn(lsn),
                    },
                };
                let r = m.take_snapshot(source, request).unwrap();
                drop(pause);
                let now = s.bytes();
                if incremental {
                    let need = must_store(head.as_ref().unwrap(), &now);
                    if *kind == Kind::IncrementalPaused && trusted {
                        prop_assert_eq!(r.detection, ChangeDetection::DirtyNotices);
                        prop_assert!(r.info.stored_pages >= need, "step {}: {:?}", step, r);
                    } else {
                        prop_assert_eq!(r.detection, ChangeDetection::Fingerprints);
                        prop_assert_eq!(r.info.stored_pages, need, "step {}", step);
                    }
                }
                prop_assert_eq!(r.info.page_count, s.raw().page_count());
                snaps.push((r.info.id, now.clone()));
                head = Some(now);
            }
            Op::Reopen => {
                drop(m);
                m = model_manager(dir.path());
                // The restore point is durable: the head is still the
                // snapshot taken or restored last.
            }
            Op::Restore { pick } => {
                if snaps.is_empty() {
                    continue;
                }
                let (id, bytes) = snaps[pick.index(snaps.len())].clone();
                let r = m.restore(id, s.detector()).unwrap();
                prop_assert_eq!(r.restored, id);
                prop_assert!(
                    s.bytes() == bytes,
                    "step {}: restore of {} differs",
                    step,
                    id
                );
                head = Some(bytes);
                lsn += 1;
            }
        }
        check_page_source(&m, &s, lsn)?;
    }
    // Every snapshot restores byte for byte into a store of any size.
    for (i, (id, bytes)) in snaps.iter().enumerate() {
        let out = MemStore::new(MODEL_PS, sizes[i % sizes.len()]).unwrap();
        m.restore(*id, &out).unwrap();
        prop_assert!(out.to_bytes() == *bytes, "snapshot {} differs", id);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20, ..ProptestConfig::default() })]

    /// Random writes and resizes through the detector (each placement: trailer,
    /// in-memory and durable sidecar),
    /// snapshots of every kind, reopens and restores to earlier snapshots:
    /// every incremental stores at least (by notices) or exactly (by
    /// fingerprints) the pages that changed since the head, every restore
    /// equals the model byte for byte, and the page source never serves a
    /// page that differs from the store's.
    #[test]
    fn snapshots_of_sealed_stores_match_a_model(
        ops in proptest::collection::vec(op(), 1..40),
        sizes in proptest::collection::vec(1u64..50, 1..4),
    ) {
        for (_, placement) in every_placement(MODEL_PS) {
            run_model(placement, &ops, &sizes)?;
        }
    }
}
