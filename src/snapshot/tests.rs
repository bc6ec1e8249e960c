//! Unit tests of the snapshot manager: the gate against a store that reads the snapshots, listing while a snapshot runs, a hung early sync, and incremental change detection.

use super::*;
use crate::checksum::{ChecksumPlacement, ChecksumTable};
use crate::corruption::CorruptionConfig;
use crate::store::MemStore;
use crate::types::{FailureKind, FailureSink, Lsn};
use std::time::Duration;

fn snap(
    m: &StateSnapshotManager,
    store: &dyn PageStore,
    gate: &WriteGate,
    lsn: u64,
    kind: SnapshotKind,
) -> SnapshotReport {
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

/// What [`HookedStore`] runs before each read.
type OnRead = Box<dyn Fn(PageId) + Send + Sync>;

/// Eight pages in memory whose reads first run a hook set after the
/// snapshot manager is built (as a heal on read would run on the
/// reader's thread).
struct HookedStore {
    inner: MemStore,
    on_read: std::sync::OnceLock<OnRead>,
}

impl std::fmt::Debug for HookedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedStore").finish_non_exhaustive()
    }
}

impl PageStore for HookedStore {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn page_count(&self) -> u64 {
        self.inner.page_count()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        if let Some(hook) = self.on_read.get() {
            hook(page);
        }
        self.inner.read_page(page, buf)
    }
    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        self.inner.write_page(page, data)
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
}

/// A manager in `dir` with snapshot 1 of a hooked store of eight pages
/// (page `p` holds `p + 1`), the hook not yet set.
fn hooked(dir: &std::path::Path) -> (Arc<StateSnapshotManager>, Arc<HookedStore>) {
    let store = Arc::new(HookedStore {
        inner: MemStore::new(128, 8).unwrap(),
        on_read: std::sync::OnceLock::new(),
    });
    for p in 0..8 {
        store
            .inner
            .write_page(PageId(p), &[p as u8 + 1; 128])
            .unwrap();
    }
    let m = Arc::new(SnapshotConfig::new(dir, 128).build().unwrap());
    snap(&m, store.as_ref(), &WriteGate::new(), 1, SnapshotKind::Full);
    (m, store)
}

/// Takes snapshot 2 of `store` on a thread of its own, so that a
/// regression (a snapshot waiting for itself) fails instead of hanging.
fn second_snapshot(m: &Arc<StateSnapshotManager>, store: &Arc<HookedStore>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (m, store) = (m.clone(), store.clone());
    std::thread::spawn(move || {
        let r = snap(&m, store.as_ref(), &WriteGate::new(), 2, SnapshotKind::Full);
        let _ = tx.send(r.info.id);
    });
    let id = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the snapshot waited for itself");
    assert_eq!(id, 2);
}

#[test]
fn a_snapshot_whose_store_reads_the_snapshots_is_refused_them_not_left_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let (m, store) = hooked(dir.path());
    let source = Arc::new(m.page_source());
    let answers = Arc::new(parking_lot::Mutex::new(Vec::<Result<bool>>::new()));
    let (s, a) = (source.clone(), answers.clone());
    let _ = store.on_read.set(Box::new(move |page| {
        let mut copy = vec![0u8; 128];
        let r = crate::host::PageSource::read_page(s.as_ref(), page, None, &mut copy);
        a.lock().push(r);
    }));
    second_snapshot(&m, &store);
    // Every read the snapshot made asked the snapshots on its own thread,
    // and each was refused with a typed error.
    let answers = std::mem::take(&mut *answers.lock());
    assert!(!answers.is_empty());
    for a in &answers {
        assert!(
            matches!(
                a,
                Err(Error::InvalidArgument {
                    what: "snapshot manager",
                    ..
                })
            ),
            "{a:?}"
        );
    }
    // Outside a snapshot, the same read is served.
    let mut buf = vec![0u8; 128];
    assert!(
        crate::host::PageSource::read_page(source.as_ref(), PageId(3), None, &mut buf).unwrap()
    );
    assert_eq!(buf, vec![4u8; 128]);
}

#[test]
fn the_snapshots_are_listed_at_once_while_a_snapshot_runs_on_the_same_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (m, store) = hooked(dir.path());
    let listed = Arc::new(parking_lot::Mutex::new(Vec::<Vec<u64>>::new()));
    let (m2, l) = (Arc::downgrade(&m), listed.clone());
    let _ = store.on_read.set(Box::new(move |_| {
        if let Some(m) = m2.upgrade() {
            l.lock().push(m.snapshots().iter().map(|s| s.id).collect());
        }
    }));
    second_snapshot(&m, &store);
    // Every read of snapshot 2 listed snapshot 1 alone: the one under
    // way is listed when it is done.
    let listed = std::mem::take(&mut *listed.lock());
    assert!(!listed.is_empty());
    assert!(listed.iter().all(|ids| ids == &[1]), "{listed:?}");
    let ids: Vec<u64> = m.snapshots().iter().map(|s| s.id).collect();
    assert_eq!(ids, [1, 2]);
}

#[test]
fn an_early_sync_that_hangs_fails_the_snapshot_within_the_sync_timeout_and_is_reported() {
    for placement in [
        ChecksumPlacement::Trailer,
        ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(128).unwrap())),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let raw = Arc::new(MemStore::new(128, 64).unwrap());
        let det = CorruptionConfig::new(placement).build(raw.clone()).unwrap();
        for p in 0..64 {
            det.write_sealed(PageId(p), &mut [p as u8 + 1; 128])
                .unwrap();
        }
        let sink = FailureSink::new(64);
        let m = SnapshotConfig::new(dir.path(), 128)
            .chunk_bytes(512)
            .sync_timeout(Duration::from_millis(300))
            .failure_sink(sink.clone())
            .build()
            .unwrap();
        // Every early sync hangs until the test drops the gate.
        let (release, gate) = crossbeam_channel::bounded::<()>(0);
        let hang: writer::SyncFn = Arc::new(move |_: &std::fs::File| {
            let _ = gate.recv();
            Ok(())
        });
        *m.inner.early_sync.lock() = Some((hang, 1));
        let pause = WriteGate::new();
        let pause = pause.pause();
        let started = std::time::Instant::now();
        let err = m
            .take_snapshot(
                Consistency::Paused {
                    store: raw.as_ref(),
                    pause: &pause,
                    lsn: Lsn(1),
                },
                SnapshotRequest::new(SnapshotKind::Full),
            )
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited {:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains("did not finish within"), "{err}");
        assert!(err.is_retryable(), "{err}");
        let f = sink.failures().try_recv().expect("reported on the bus");
        assert_eq!(f.kind, FailureKind::SnapshotFailed);
        assert!(f.evidence.contains("did not finish within"), "{f}");
        assert!(m.snapshots().is_empty());
        drop(release);
    }
}

#[test]
fn incremental_uses_notices_then_fingerprints() {
    for placement in [
        ChecksumPlacement::Trailer,
        ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(128).unwrap())),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let raw = Arc::new(MemStore::new(128, 40).unwrap());
        let det = CorruptionConfig::new(placement).build(raw.clone()).unwrap();
        let write = |p: u64, fill: u8| det.write_sealed(PageId(p), &mut [fill; 128]).unwrap();
        for p in 0..40 {
            write(p, p as u8 + 1);
        }
        let gate = WriteGate::new();
        let m = SnapshotConfig::new(dir.path(), 128)
            .chunk_bytes(512)
            .build()
            .unwrap();
        assert!(!m.dirty_notices_trusted());
        let full = snap(&m, raw.as_ref(), &gate, 1, SnapshotKind::Auto);
        assert_eq!(full.detection, ChangeDetection::Full);
        write(5, 0x99);
        m.note_dirty(PageId(5));
        let inc = snap(&m, raw.as_ref(), &gate, 2, SnapshotKind::Auto);
        assert_eq!(inc.detection, ChangeDetection::DirtyNotices);
        assert_eq!(inc.info.stored_pages, 1);
        // Un-noted changes under a view: found by fingerprints.
        write(7, 0x88);
        write(39, 0x77);
        let r = m
            .take_snapshot(
                Consistency::View {
                    view: raw.as_ref(),
                    lsn: Lsn(3),
                },
                SnapshotRequest::default(),
            )
            .unwrap();
        assert_eq!(r.detection, ChangeDetection::Fingerprints);
        assert_eq!(r.info.stored_pages, 2);
        let other = MemStore::new(128, 40).unwrap();
        m.restore(r.info.id, &other).unwrap();
        assert_eq!(other.to_bytes(), raw.to_bytes());
    }
}
