//! Goal: a store can shrink and grow while it is read, written, scanned and
//! repaired, in both checksum placements, and nothing about a dropped page
//! survives the shrink (no checksum, fence, LSN or report), and no scan of a
//! memory-mapped `FileStore` touches a page past the new end. Method: a
//! `FileStore` resized under threads that scan its map; a store wrapper with
//! a hook that resizes from another thread in the middle of a detector write;
//! the final state is checked against what a fresh page must look like.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use selfheal::corruption::PageLsnFn;
use selfheal::testing::both_placements;
use selfheal::{
    ChecksumPlacement, CorruptionConfig, CorruptionDetector, Error, FileStore, Lsn, MemStore,
    PageId, PageStore,
};

const PS: usize = 4096;
const PAGES: u64 = 64;

fn lsn_reader() -> PageLsnFn {
    Arc::new(|b: &[u8]| Some(Lsn(u64::from_le_bytes(b[..8].try_into().ok()?))))
}

fn page_bytes(page: u64, lsn: u64) -> Vec<u8> {
    let mut b = vec![(page as u8).wrapping_mul(13) | 1; PS];
    b[..8].copy_from_slice(&lsn.to_le_bytes());
    b
}

/// The error a page that was dropped and came back must give: a new,
/// never-written page, not one with a stale checksum or LSN.
fn assert_fresh(det: &CorruptionDetector, page: u64, what: &str) {
    let mut buf = vec![0u8; PS];
    let err = det
        .read_verified(PageId(page), &mut buf)
        .expect_err("a page that came back is unwritten");
    assert!(
        matches!(
            err,
            Error::ZeroedPage { .. } | Error::MissingChecksum { .. }
        ),
        "{what}: page {page} must read as new, got {err}"
    );
    assert_eq!(
        det.last_written_lsn(PageId(page)),
        None,
        "{what}: stale LSN"
    );
    if let ChecksumPlacement::Sidecar(t) = det.placement() {
        assert_eq!(t.get(PageId(page)), None, "{what}: stale checksum");
    }
}

#[test]
fn file_store_shrinks_and_grows_through_the_detector() {
    for (what, placement) in both_placements(PS) {
        for mmap in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("data");
            let store = Arc::new(
                FileStore::create(&path, PS, PAGES)
                    .unwrap()
                    .with_mmap_scan(mmap),
            );
            let det = CorruptionConfig::new(placement.clone())
                .page_lsn(lsn_reader())
                .build(store.clone())
                .unwrap();
            for p in 0..PAGES {
                det.write_sealed(PageId(p), &mut page_bytes(p, 5)).unwrap();
            }
            det.resize(20).unwrap();
            assert_eq!(store.page_count(), 20, "{what}");
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                20 * PS as u64,
                "{what}: the file shrank"
            );
            let mut buf = vec![0u8; PS];
            assert!(matches!(
                det.read_verified(PageId(20), &mut buf),
                Err(Error::PageOutOfRange { page_count: 20, .. })
            ));
            assert!(matches!(
                det.write_sealed(PageId(30), &mut page_bytes(30, 6)),
                Err(Error::PageOutOfRange { .. })
            ));
            let mut seen = 0;
            store
                .scan_pages(PageId(0), 20, &mut |p, b| {
                    det.verify(p, b)?;
                    seen += 1;
                    Ok(())
                })
                .unwrap();
            assert_eq!(seen, 20, "{what} mmap {mmap}");
            assert!(store.scan_pages(PageId(0), 21, &mut |_, _| Ok(())).is_err());
            det.resize(PAGES).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), PAGES * PS as u64);
            for p in 20..PAGES {
                assert_fresh(&det, p, what);
            }
            det.write_sealed(PageId(40), &mut page_bytes(40, 1))
                .unwrap();
            det.read_verified(PageId(40), &mut buf).unwrap();
            // Reopened, the file has the size it was given.
            store.sync().unwrap();
            assert_eq!(FileStore::open(&path, PS).unwrap().page_count(), PAGES);
        }
    }
}

#[test]
fn file_store_resize_checks_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::create(dir.path().join("d"), PS, 2).unwrap();
    assert!(matches!(
        s.resize(u64::MAX / 2),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(s.page_count(), 2);
}

/// Scans of the memory map run flat out while another thread shrinks the
/// file to a few pages and grows it back. A scan that touched a mapped page
/// past the end of the file would kill the test process with SIGBUS.
#[test]
fn mmap_scans_racing_shrinks_never_touch_dropped_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        FileStore::create(dir.path().join("data"), PS, 256)
            .unwrap()
            .with_mmap_scan(true),
    );
    for p in 0..256 {
        store.write_page(PageId(p), &page_bytes(p, 1)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let scanned = Arc::new(AtomicU64::new(0));
    let scanners: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop, scanned) = (store.clone(), stop.clone(), scanned.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let n = store.page_count();
                    let r = store.scan_pages(PageId(0), n, &mut |_, b| {
                        // Touch every byte of the page.
                        std::hint::black_box(b.iter().map(|&x| u64::from(x)).sum::<u64>());
                        scanned.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    });
                    match r {
                        Ok(()) | Err(Error::PageOutOfRange { .. }) => {}
                        Err(e) => panic!("scan failed: {e}"),
                    }
                }
            })
        })
        .collect();
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let p = PageId(i % 256);
                match store.write_page(p, &page_bytes(p.0, 2)) {
                    Ok(()) | Err(Error::PageOutOfRange { .. }) => {}
                    Err(e) => panic!("write failed: {e}"),
                }
                i += 7;
            }
        })
    };
    let started = std::time::Instant::now();
    for round in 0..60u64 {
        store.resize(1 + round % 5).unwrap();
        std::thread::sleep(Duration::from_micros(200));
        store.resize(256).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    eprintln!("120 resizes under load took {:?}", started.elapsed());
    stop.store(true, Ordering::Relaxed);
    for s in scanners {
        s.join().unwrap();
    }
    writer.join().unwrap();
    assert!(scanned.load(Ordering::Relaxed) > 0);
    // No write extended the file past the size it was given last.
    let len = std::fs::metadata(dir.path().join("data")).unwrap().len();
    assert_eq!(len, 256 * PS as u64);
}

/// A store whose `write_page` runs a hook once, after the bytes are written
/// and before the detector records anything about them.
struct HookStore {
    inner: MemStore,
    hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for HookStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookStore").finish_non_exhaustive()
    }
}

impl PageStore for HookStore {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn page_count(&self) -> u64 {
        self.inner.page_count()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> selfheal::Result<()> {
        self.inner.read_page(page, buf)
    }
    fn write_page(&self, page: PageId, data: &[u8]) -> selfheal::Result<()> {
        self.inner.write_page(page, data)?;
        let hook = self.hook.lock().take();
        if let Some(h) = hook {
            h();
        }
        Ok(())
    }
    fn resize(&self, page_count: u64) -> selfheal::Result<()> {
        self.inner.resize(page_count)
    }
    fn sync(&self) -> selfheal::Result<()> {
        Ok(())
    }
}

/// A shrink that lands while a host write of a page it drops is between its
/// write and its bookkeeping must still leave no checksum and no LSN of that
/// page behind: when the page comes back, it is new.
#[test]
fn shrink_racing_a_write_leaves_no_trace_of_the_dropped_page() {
    for (what, placement) in both_placements(PS) {
        let store = Arc::new(HookStore {
            inner: MemStore::new(PS, PAGES).unwrap(),
            hook: Mutex::new(None),
        });
        let det = Arc::new(
            CorruptionConfig::new(placement)
                .page_lsn(lsn_reader())
                .build(store.clone())
                .unwrap(),
        );
        for p in 0..PAGES {
            det.write_sealed(PageId(p), &mut page_bytes(p, 3)).unwrap();
        }
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
        let resizer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>> = Arc::default();
        {
            let (det, resizer) = (det.clone(), resizer.clone());
            *store.hook.lock() = Some(Box::new(move || {
                let t = std::thread::spawn(move || {
                    det.resize(10).unwrap();
                    let _ = done_tx.send(());
                });
                // Give the shrink every chance to finish inside the write.
                let _ = done_rx.recv_timeout(Duration::from_millis(300));
                *resizer.lock() = Some(t);
            }));
        }
        det.write_sealed(PageId(50), &mut page_bytes(50, 9))
            .unwrap();
        let t = resizer.lock().take().unwrap();
        t.join().unwrap();
        assert_eq!(store.page_count(), 10, "{what}");
        assert!(det.suspects().iter().all(|(p, _)| p.0 < 10), "{what}");
        det.resize(PAGES).unwrap();
        assert_fresh(&det, 50, what);
        // Sealed again, it verifies with its new LSN, lower than the old one.
        det.write_sealed(PageId(50), &mut page_bytes(50, 1))
            .unwrap();
        let mut buf = vec![0u8; PS];
        det.read_verified(PageId(50), &mut buf).unwrap();
    }
}

/// Reads, writes and scrub checks of high pages run while the store shrinks
/// and grows; afterwards nothing is recorded about a page past the end, and
/// every page the workers never wrote again reads as new.
#[test]
fn resize_racing_reads_writes_and_checks() {
    for (what, placement) in both_placements(PS) {
        let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
        let det = Arc::new(
            CorruptionConfig::new(placement)
                .page_lsn(lsn_reader())
                .build(store.clone())
                .unwrap(),
        );
        for p in 0..PAGES {
            det.write_sealed(PageId(p), &mut page_bytes(p, 2)).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3u64)
            .map(|w| {
                let (det, stop) = (det.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; PS];
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        let p = PageId(32 + i % 32);
                        match w {
                            0 => {
                                let _ = det.write_sealed(p, &mut page_bytes(p.0, 4));
                            }
                            1 => {
                                let _ = det.read_verified(p, &mut buf);
                            }
                            _ => {
                                let _ = det.check_page(p, selfheal::corruption::Observer::Scrub);
                            }
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        for round in 0..300u64 {
            det.resize(32 - round % 3).unwrap();
            det.resize(PAGES).unwrap();
        }
        det.resize(32).unwrap();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        assert!(
            det.suspects().iter().all(|(p, _)| p.0 < 32),
            "{what}: a dropped page is still in the registry"
        );
        let _ = det.failures().try_iter().count();
        det.resize(PAGES).unwrap();
        for p in 32..PAGES {
            assert_fresh(&det, p, what);
        }
    }
}
