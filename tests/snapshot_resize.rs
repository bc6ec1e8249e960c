//! Snapshots across changes of the store's size, under both checksum placements (pages written through a `CorruptionDetector`): shrink → snapshot → restore, grow → snapshot → restore, and chains spanning a shrink, with notices (`note_resized`) and by fingerprints; every restore must give the snapshot's page count and bytes whatever the target's size, a target that cannot resize must be refused before anything is written, and the page source must have no copy of a page past the head's size.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use selfheal::snapshot::{
    ChangeDetection, Consistency, RestoreOptions, Retention, SnapshotConfig, SnapshotKind,
    SnapshotReport, SnapshotRequest, StateSnapshotManager,
};
use selfheal::testing::{both_placements, SealedStore};
use selfheal::{
    ChecksumPlacement, CorruptionConfig, Error, Lsn, MemStore, PageId, PageSource, PageStore,
    Result,
};

const PS: usize = 256;

fn manager(dir: &Path) -> StateSnapshotManager {
    SnapshotConfig::new(dir, PS)
        .chunk_bytes(PS * 4)
        .retention(Retention::KeepAll)
        .build()
        .unwrap()
}

fn paused(
    m: &StateSnapshotManager,
    s: &SealedStore,
    lsn: u64,
    kind: SnapshotKind,
) -> SnapshotReport {
    paused_from(m, s.detector(), lsn, kind)
}

fn paused_from(
    m: &StateSnapshotManager,
    store: &dyn PageStore,
    lsn: u64,
    kind: SnapshotKind,
) -> SnapshotReport {
    selfheal::testing::take_paused(m, store, Lsn(lsn), kind).unwrap()
}

fn view(m: &StateSnapshotManager, s: &SealedStore, lsn: u64) -> SnapshotReport {
    m.take_snapshot(
        Consistency::View {
            view: s.detector(),
            lsn: Lsn(lsn),
        },
        SnapshotRequest::new(SnapshotKind::Incremental),
    )
    .unwrap()
}

/// Resizes the store as a host does: through the detector, telling the
/// snapshot manager, writing the pages it gains.
fn resize(m: &StateSnapshotManager, s: &SealedStore, pages: u64, version: u64) {
    s.resize(pages, version).unwrap();
    m.note_resized(pages);
}

fn write(m: &StateSnapshotManager, s: &SealedStore, page: u64, version: u64) {
    s.write(page, version).unwrap();
    m.note_dirty(PageId(page));
}

/// Restores `id` into raw stores of several sizes, and into a detector of
/// the same placement, and checks each against `bytes` (and its size).
fn check_restores(m: &StateSnapshotManager, name: &str, id: u64, bytes: &[u8]) {
    let pages = (bytes.len() / PS) as u64;
    for start in [1, pages.max(1), pages + 7] {
        let out = MemStore::new(PS, start).unwrap();
        let r = m.restore(id, &out).unwrap();
        assert_eq!(r.page_count, pages, "{name}: snapshot {id}");
        assert_eq!(r.extra_pages_kept, 0);
        assert_eq!(
            out.page_count(),
            pages,
            "{name}: snapshot {id} into {start}"
        );
        assert!(
            out.to_bytes() == bytes,
            "{name}: snapshot {id} into {start} pages differs"
        );
    }
}

/// As `check_restores`, through a detector of placement `like` over a
/// store of `start` pages: the result is byte-identical and every page
/// verifies.
fn check_restore_through_detector(
    m: &StateSnapshotManager,
    like: &str,
    id: u64,
    bytes: &[u8],
    start: u64,
) {
    let placement: ChecksumPlacement = both_placements(PS)
        .into_iter()
        .find(|(n, _)| *n == like)
        .unwrap()
        .1;
    let raw = std::sync::Arc::new(MemStore::new(PS, start).unwrap());
    let det = CorruptionConfig::new(placement).build(raw.clone()).unwrap();
    m.restore(id, &det).unwrap();
    assert!(
        raw.to_bytes() == bytes,
        "{like}: snapshot {id} via detector"
    );
    let mut buf = vec![0u8; PS];
    for p in 0..raw.page_count() {
        det.read_verified(PageId(p), &mut buf).unwrap();
    }
}

#[test]
fn shrink_then_snapshot_then_restore() {
    for (name, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let s = SealedStore::new(placement, PS, 48, 1).unwrap();
        let m = manager(dir.path());
        let full = paused(&m, &s, 1, SnapshotKind::Full);
        let at_full = s.bytes();

        // With notices.
        resize(&m, &s, 20, 2);
        write(&m, &s, 3, 2);
        let r = paused(&m, &s, 2, SnapshotKind::Incremental);
        assert_eq!(r.detection, ChangeDetection::DirtyNotices, "{name}");
        assert_eq!(r.info.page_count, 20, "{name}");
        assert_eq!(r.info.stored_pages, 1, "{name}: only page 3 changed");
        let shrunk = (r.info.id, s.bytes());

        // By fingerprints (a view).
        s.resize(12, 3).unwrap();
        s.write(1, 3).unwrap();
        let r = view(&m, &s, 3);
        assert_eq!(r.detection, ChangeDetection::Fingerprints, "{name}");
        assert_eq!(r.info.page_count, 12, "{name}");
        assert_eq!(r.info.stored_pages, 1, "{name}");
        let shrunk_more = (r.info.id, s.bytes());

        // No copy of a page past the head's size, whatever vouches for it.
        let src = m.page_source();
        let mut buf = vec![0u8; PS];
        for p in [12, 19, 47] {
            assert!(
                !src.read_page(PageId(p), Some(Lsn(3)), &mut buf).unwrap(),
                "{name}"
            );
            assert!(!src.read_page(PageId(p), None, &mut buf).unwrap(), "{name}");
        }
        assert!(src.read_page(PageId(11), Some(Lsn(3)), &mut buf).unwrap());
        assert!(buf == s.page(11).unwrap(), "{name}");

        // Every state restores at its own size, into any target size.
        for (id, bytes) in [
            (full.info.id, &at_full),
            (shrunk.0, &shrunk.1),
            (shrunk_more.0, &shrunk_more.1),
        ] {
            check_restores(&m, name, id, bytes);
            check_restore_through_detector(&m, name, id, bytes, 48);
            check_restore_through_detector(&m, name, id, bytes, 5);
        }
    }
}

#[test]
fn grow_then_snapshot_then_restore() {
    for (name, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let s = SealedStore::new(placement, PS, 16, 1).unwrap();
        let m = manager(dir.path());
        let full = paused(&m, &s, 1, SnapshotKind::Full);
        let at_full = s.bytes();

        // With notices: the pages past the parent's count are stored.
        resize(&m, &s, 40, 2);
        write(&m, &s, 0, 2);
        let r = paused(&m, &s, 2, SnapshotKind::Incremental);
        assert_eq!(r.detection, ChangeDetection::DirtyNotices, "{name}");
        assert_eq!(r.info.page_count, 40, "{name}");
        assert_eq!(r.info.stored_pages, 25, "{name}: page 0 and pages 16..40");
        let grown = (r.info.id, s.bytes());

        // By fingerprints.
        s.resize(50, 3).unwrap();
        s.write(39, 3).unwrap();
        let r = view(&m, &s, 3);
        assert_eq!(r.detection, ChangeDetection::Fingerprints, "{name}");
        assert_eq!(r.info.stored_pages, 11, "{name}: page 39 and pages 40..50");
        let grown_more = (r.info.id, s.bytes());

        for (id, bytes) in [
            (full.info.id, &at_full),
            (grown.0, &grown.1),
            (grown_more.0, &grown_more.1),
        ] {
            check_restores(&m, name, id, bytes);
            check_restore_through_detector(&m, name, id, bytes, 30);
        }
        // Restoring the smallest state into the live store shrinks it.
        m.restore(full.info.id, s.detector()).unwrap();
        assert_eq!(s.raw().page_count(), 16, "{name}");
        assert!(s.bytes() == at_full, "{name}");
    }
}

#[test]
fn a_chain_spanning_a_shrink_restores_every_member() {
    for (name, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let s = SealedStore::new(placement, PS, 48, 1).unwrap();
        let mut states = Vec::new();
        let m = manager(dir.path());
        states.push((paused(&m, &s, 1, SnapshotKind::Full).info.id, s.bytes()));
        resize(&m, &s, 20, 2);
        write(&m, &s, 2, 2);
        states.push((
            paused(&m, &s, 2, SnapshotKind::Incremental).info.id,
            s.bytes(),
        ));
        // Grown back: pages 20..36 are new contents, never the old ones.
        s.resize(36, 3).unwrap();
        let r = view(&m, &s, 3);
        assert_eq!(r.info.stored_pages, 16, "{name}");
        states.push((r.info.id, s.bytes()));
        drop(m);
        let m = manager(dir.path());
        s.write(5, 4).unwrap();
        s.write(30, 4).unwrap();
        let r = paused(&m, &s, 4, SnapshotKind::Incremental);
        assert_eq!(r.detection, ChangeDetection::Fingerprints, "{name}");
        assert_eq!(r.info.stored_pages, 2, "{name}");
        states.push((r.info.id, s.bytes()));
        // Shrunk and grown back with nothing written, under notices: the
        // pages that came back (zeros) are stored, not inherited.
        m.note_resized(10);
        s.detector().resize(10).unwrap();
        s.detector().resize(36).unwrap();
        m.note_resized(36);
        // (Read raw: the detector refuses to serve a zeroed page.)
        let r = paused_from(&m, s.raw().as_ref(), 5, SnapshotKind::Incremental);
        assert_eq!(r.detection, ChangeDetection::DirtyNotices, "{name}");
        assert_eq!(r.info.stored_pages, 26, "{name}: pages 10..36");
        let zeros = (r.info.id, s.bytes());
        assert!(zeros.1[10 * PS..].iter().all(|&b| b == 0));

        for (id, bytes) in &states {
            check_restores(&m, name, *id, bytes);
            check_restore_through_detector(&m, name, *id, bytes, 40);
            m.verify(*id).unwrap();
        }
        // Zero pages cannot be sealed, so only raw targets for this one.
        check_restores(&m, name, zeros.0, &zeros.1);
        let merged = m.merge(zeros.0).unwrap();
        check_restores(&m, name, merged.id, &zeros.1);
        let merged = m.merge(states[3].0).unwrap();
        check_restores(&m, name, merged.id, &states[3].1);
    }
}

/// A store that cannot change size (`resize` keeps the default answer).
#[derive(Debug)]
struct FixedSize(MemStore);

impl PageStore for FixedSize {
    fn page_size(&self) -> usize {
        self.0.page_size()
    }
    fn page_count(&self) -> u64 {
        self.0.page_count()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.0.read_page(page, buf)
    }
    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        self.0.write_page(page, data)
    }
    fn sync(&self) -> Result<()> {
        self.0.sync()
    }
}

/// A store whose resize fails with an I/O error after `truncate`ing
/// nothing: its size is unknown to the caller.
#[derive(Debug)]
struct ResizeFails {
    inner: MemStore,
    resizes: AtomicU64,
}

impl PageStore for ResizeFails {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn page_count(&self) -> u64 {
        self.inner.page_count()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.inner.read_page(page, buf)
    }
    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        self.inner.write_page(page, data)
    }
    fn resize(&self, _: u64) -> Result<()> {
        self.resizes.fetch_add(1, Ordering::Relaxed);
        Err(Error::Io {
            context: "truncating the data file".into(),
            source: std::io::Error::other("injected EIO"),
        })
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
}

#[test]
fn a_target_that_cannot_resize_is_refused_before_anything_is_written() {
    for (name, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let s = SealedStore::new(placement, PS, 12, 1).unwrap();
        let m = manager(dir.path());
        let id = paused(&m, &s, 1, SnapshotKind::Full).info.id;
        let at_id = s.bytes();
        write(&m, &s, 4, 2);
        assert!(m.dirty_notices_trusted());
        for pages in [5, 20] {
            let t = FixedSize(MemStore::new(PS, pages).unwrap());
            t.write_page(PageId(0), &[0x5A; PS]).unwrap();
            let before = t.0.to_bytes();
            match m.restore(id, &t) {
                Err(Error::RestoreTargetSize {
                    snapshot,
                    needed: 12,
                    actual,
                    ..
                }) => assert_eq!((snapshot, actual), (id, pages), "{name}"),
                other => panic!("{name}: {other:?}"),
            }
            assert!(t.0.to_bytes() == before, "{name}: nothing may be written");
            // Nothing was written, so the notices and the head still hold.
            assert!(m.dirty_notices_trusted(), "{name}");
        }
        // A larger target may keep its extra pages when the caller says so.
        let t = FixedSize(MemStore::new(PS, 20).unwrap());
        t.write_page(PageId(15), &[0x77; PS]).unwrap();
        let r = m
            .restore_with(id, &t, RestoreOptions::new().keep_extra_pages(true))
            .unwrap();
        assert_eq!(r.extra_pages_kept, 8, "{name}");
        let bytes = t.0.to_bytes();
        assert!(bytes[..12 * PS] == at_id[..], "{name}");
        assert!(bytes[15 * PS..16 * PS].iter().all(|&b| b == 0x77), "{name}");

        // A resize that fails with an I/O error leaves the target's size
        // unknown: notices and the head are no longer trusted.
        paused(&m, &s, 2, SnapshotKind::Incremental);
        assert!(m.dirty_notices_trusted());
        let t = ResizeFails {
            inner: MemStore::new(PS, 3).unwrap(),
            resizes: AtomicU64::new(0),
        };
        assert!(matches!(m.restore(id, &t), Err(Error::Io { .. })), "{name}");
        assert_eq!(t.resizes.load(Ordering::Relaxed), 1);
        assert!(!m.dirty_notices_trusted(), "{name}");
        let mut buf = vec![0u8; PS];
        assert!(!m
            .page_source()
            .read_page(PageId(0), Some(Lsn(2)), &mut buf)
            .unwrap());
    }
}
