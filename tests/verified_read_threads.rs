//! Goal: show that verified reads running on several threads at once, while writers rewrite pages and damage lands behind the detector's back, never return bytes that fail verification, never return a version older than the last write that finished before the read began, and still refuse a fenced page. Method: a `FileStore` of sealed pages whose bytes name their page and version (the version is the page's LSN, read by a page-LSN reader); four readers, two writers (each page owned by one, so versions grow), and a saboteur that writes garbage or an older sealed copy of a page straight into the raw store; every successful read is checked against the page's self-describing pattern and against the version the read saw as finished before it began; then a damaged page is read by four threads at once and every one is refused. Both checksum placements.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use selfheal::corruption::{PageLsnFn, PageState};
use selfheal::testing::both_placements;
use selfheal::{
    ChecksumPlacement, CorruptionConfig, CorruptionDetector, Error, FileStore, Lsn, PageId,
    PageStore,
};

const PS: usize = 512;
const PAGES: u64 = 64;
/// Bytes of the pattern (the trailer may take the last 16).
const BODY: usize = PS - 16;
const READS_PER_READER: u64 = 4000;

/// A page's bytes: its version (its LSN) and its number, then a pattern of both.
fn page_bytes(page: u64, version: u64) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    b[..8].copy_from_slice(&version.to_le_bytes());
    b[8..16].copy_from_slice(&page.to_le_bytes());
    for (i, x) in b[16..].iter_mut().enumerate() {
        *x = (page as usize * 31 + version as usize * 7 + i) as u8;
    }
    b
}

/// The version `bytes` hold if they are a whole version of `page`.
fn version_of(page: u64, bytes: &[u8]) -> Option<u64> {
    let version = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let named = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    let want = page_bytes(page, version);
    (named == page && bytes[16..BODY] == want[16..BODY]).then_some(version)
}

fn lsn_reader() -> PageLsnFn {
    Arc::new(|b: &[u8]| {
        let l = u64::from_le_bytes(b[..8].try_into().unwrap());
        (l != 0).then_some(Lsn(l))
    })
}

struct Rig {
    raw: Arc<FileStore>,
    det: Arc<CorruptionDetector>,
    /// Per page: the version of the last write through the detector that finished.
    done: Arc<Vec<AtomicU64>>,
    _dir: tempfile::TempDir,
}

fn rig(placement: ChecksumPlacement) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let raw = Arc::new(FileStore::create(dir.path().join("data"), PS, PAGES).unwrap());
    let det = Arc::new(
        CorruptionConfig::new(placement)
            .page_lsn(lsn_reader())
            .build(raw.clone())
            .unwrap(),
    );
    for p in 0..PAGES {
        det.write_sealed(PageId(p), &mut page_bytes(p, 1)).unwrap();
    }
    let done = Arc::new((0..PAGES).map(|_| AtomicU64::new(1)).collect::<Vec<_>>());
    Rig {
        raw,
        det,
        done,
        _dir: dir,
    }
}

#[test]
fn concurrent_readers_never_see_bytes_that_fail_verification() {
    for (name, placement) in both_placements(PS) {
        let Rig {
            raw,
            det,
            done,
            _dir,
        } = rig(placement);
        let stop = Arc::new(AtomicBool::new(false));
        // Sealed copies of old versions, as a saboteur would replay them.
        let old_copies: Vec<Vec<u8>> = (0..PAGES)
            .map(|p| {
                let mut b = vec![0u8; PS];
                raw.read_page(PageId(p), &mut b).unwrap();
                b
            })
            .collect();
        let (ok_reads, refused) = std::thread::scope(|s| {
            for w in 0..2u64 {
                let (det, done, stop) = (&det, &done, &stop);
                s.spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let page = (n * 2 + w) % PAGES;
                        let version = done[page as usize].load(Ordering::Acquire) + 1;
                        det.write_sealed(PageId(page), &mut page_bytes(page, version))
                            .unwrap();
                        done[page as usize].store(version, Ordering::Release);
                    }
                });
            }
            {
                let (raw, stop, old_copies) = (&raw, &stop, &old_copies);
                s.spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let page = (n * 13) % PAGES;
                        let bytes = if n.is_multiple_of(2) {
                            vec![(n as u8) | 1; PS]
                        } else {
                            old_copies[page as usize].clone()
                        };
                        raw.write_page(PageId(page), &bytes).unwrap();
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                });
            }
            let readers: Vec<_> = (0..4u64)
                .map(|r| {
                    let (det, done) = (&det, &done);
                    s.spawn(move || {
                        let mut buf = vec![0u8; PS];
                        let (mut ok, mut refused) = (0u64, 0u64);
                        for i in 0..READS_PER_READER {
                            let page = (i * 7 + r * 5) % PAGES;
                            let floor = done[page as usize].load(Ordering::Acquire);
                            match det.read_verified(PageId(page), &mut buf) {
                                Ok(()) => {
                                    let v = version_of(page, &buf).unwrap_or_else(|| {
                                        panic!("{name}: page {page} returned bytes that are no version of it")
                                    });
                                    assert!(
                                        v >= floor,
                                        "{name}: page {page} returned version {v}, older than {floor} written before the read began"
                                    );
                                    ok += 1;
                                }
                                Err(e) => {
                                    assert!(
                                        e.is_corruption() || matches!(e, Error::PageFenced { .. }),
                                        "{name}: page {page}: unexpected error {e}"
                                    );
                                    refused += 1;
                                }
                            }
                        }
                        (ok, refused)
                    })
                })
                .collect();
            let counts: Vec<(u64, u64)> = readers.into_iter().map(|h| h.join().unwrap()).collect();
            stop.store(true, Ordering::Relaxed);
            counts
                .into_iter()
                .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
        });
        assert_eq!(ok_reads + refused, 4 * READS_PER_READER, "{name}");
        assert!(ok_reads > 0, "{name}: no read succeeded");
        assert!(
            det.stats().corrupt_reported > 0,
            "{name}: the saboteur's damage was never seen"
        );
    }
}

#[test]
fn a_fenced_page_is_refused_to_every_concurrent_reader() {
    for (name, placement) in both_placements(PS) {
        let Rig { raw, det, .. } = rig(placement);
        let page = PageId(9);
        raw.write_page(page, &[0x5A; PS]).unwrap();
        let mut buf = vec![0u8; PS];
        assert!(det
            .read_verified(page, &mut buf)
            .unwrap_err()
            .is_corruption());
        assert_eq!(det.page_state(page), Some(PageState::Suspect), "{name}");
        // Even with the good bytes back behind the detector's back, the
        // fence holds until a repair or a write through the detector.
        det.write_sealed(PageId(10), &mut page_bytes(10, 2))
            .unwrap();
        let mut good = page_bytes(9, 1);
        if matches!(det.placement(), ChecksumPlacement::Trailer) {
            selfheal::checksum::trailer::seal(page, &mut good).unwrap();
        }
        raw.write_page(page, &good).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let det = &det;
                s.spawn(move || {
                    let mut buf = vec![0u8; PS];
                    for _ in 0..200 {
                        match det.read_verified(page, &mut buf) {
                            Err(Error::PageFenced { .. }) => {}
                            other => panic!("{name}: a fenced page was read: {other:?}"),
                        }
                        // Its neighbours in other stripes read as ever.
                        det.read_verified(PageId(10), &mut buf).unwrap();
                    }
                });
            }
        });
        det.write_sealed(page, &mut page_bytes(9, 3)).unwrap();
        det.read_verified(page, &mut buf).unwrap();
        assert_eq!(version_of(9, &buf), Some(3), "{name}");
    }
}
