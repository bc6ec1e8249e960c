//! Snapshots of stores whose pages are really sealed (written through a `CorruptionDetector`, trailer and sidecar placement): incrementals found by fingerprint comparison over `View` and `Paused` (with and without dirty notices, and first after reopening the manager) must store exactly the rewritten pages; every restore must equal a byte model of the store; and the page source must never serve a page that changed after the head.

use std::path::Path;
use std::sync::Arc;

use selfheal::snapshot::{
    ChangeDetection, Consistency, Retention, SnapshotConfig, SnapshotKind, SnapshotReport,
    SnapshotRequest, StateSnapshotManager, WriteGate,
};
use selfheal::testing::{both_placements, SealedStore};
use selfheal::{ChecksumPlacement, DetectorConfig, Lsn, MemStore, PageId, PageSource, PageStore};

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
    let gate = WriteGate::new();
    let pause = gate.pause();
    m.take_snapshot(
        Consistency::Paused {
            store,
            pause: &pause,
            lsn: Lsn(lsn),
        },
        SnapshotRequest::new(kind),
    )
    .unwrap()
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
        let det = DetectorConfig::new(placement_like(name))
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
