//! Goal: show that the background scrubber finds every kind of page damage it exists for, reports each corrupt page exactly once over several passes, never reports a transient fault, resumes from its persisted cursor, pauses, rechecks known-bad pages, rejects bad configuration, and reports its own thread's death on the failure bus it shares with the detector. Method: pages sealed through a `CorruptionDetector` over a `FileStore` or `MemStore` wrapped in `FaultyStore`; each fault is injected (at rest, during a `write_sealed`, or on reads), the scrubber is stepped in simulated time (`ManualClock`) or run on its thread with the system clock, and the detector's failure reports and page states are checked.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use selfheal::corruption::{PageLsnFn, PageState};
use selfheal::scrub::{ScrubMode, ScrubState};
use selfheal::testing::{Damage, FaultyStore, ReadFault, WriteFault};
use selfheal::{
    ChecksumPlacement, ChecksumTable, Clock, CorruptionConfig, CorruptionDetector, Error, Failure,
    FailureKind, FailureSink, FileStore, Lsn, ManualClock, MemStore, PageId, PageStore,
    ScrubConfig, Scrubber, Source, SystemClock,
};

const PS: usize = 512;
const PAGES: u64 = 64;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Mem,
    File,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Checks {
    /// Trailer checksums only.
    Trailer,
    /// Trailer checksums and a page-LSN reader (lost writes detectable).
    TrailerLsn,
    /// Sidecar checksum table.
    Sidecar,
}

struct Rig {
    raw: Arc<FaultyStore>,
    det: Arc<CorruptionDetector>,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

/// Page contents: LSN in the first 8 bytes, then a pattern unique to the page.
fn page_bytes(page: u64, lsn: u64) -> Vec<u8> {
    let mut b: Vec<u8> = (0..PS)
        .map(|i| (page as usize * 31 + i * 7 + lsn as usize) as u8)
        .collect();
    b[..8].copy_from_slice(&lsn.to_le_bytes());
    b
}

fn rig(backend: Backend, checks: Checks) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn PageStore> = match backend {
        Backend::Mem => Arc::new(MemStore::new(PS, PAGES).unwrap()),
        Backend::File => Arc::new(FileStore::create(dir.path().join("data"), PS, PAGES).unwrap()),
    };
    let raw = Arc::new(FaultyStore::new(inner));
    let clock = ManualClock::new();
    let placement = match checks {
        Checks::Sidecar => ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(PS).unwrap())),
        _ => ChecksumPlacement::Trailer,
    };
    let mut cfg = CorruptionConfig::new(placement).clock(Arc::new(clock.clone()));
    if checks == Checks::TrailerLsn {
        let lsn: PageLsnFn =
            Arc::new(|b: &[u8]| Some(Lsn(u64::from_le_bytes(b[..8].try_into().unwrap()))));
        cfg = cfg.page_lsn(lsn);
    }
    let det = Arc::new(cfg.build(raw.clone()).unwrap());
    for p in 0..PAGES {
        det.write_sealed(PageId(p), &mut page_bytes(p, 1)).unwrap();
    }
    Rig {
        raw,
        det,
        clock,
        _dir: dir,
    }
}

/// Runs `passes` full passes in simulated time (paced at 2 000 pages/s, the
/// clock jumping to each deadline) and returns how many times each page was
/// reported.
fn scrub(r: &Rig, passes: u64) -> BTreeMap<u64, usize> {
    let mut s = ScrubConfig::new()
        .pages_per_s(2_000)
        .batch_pages(16)
        .build(r.det.clone())
        .unwrap();
    step_passes(&mut s, &r.clock, passes);
    reports(&r.det)
}

fn step_passes(s: &mut Scrubber, clock: &ManualClock, passes: u64) {
    let target = s.progress().unwrap().passes_completed + passes;
    for _ in 0..1_000_000 {
        if s.progress().unwrap().passes_completed >= target {
            return;
        }
        match s.step(clock.now_ns()).unwrap() {
            selfheal::scrub::ScrubStep::Wait { until_ns } => clock.set_ns(until_ns),
            selfheal::scrub::ScrubStep::Done => return,
            _ => {}
        }
    }
    panic!("passes did not complete");
}

fn reports(det: &CorruptionDetector) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for f in det.failures().try_iter() {
        let FailureKind::CorruptPage { page } = f.kind else {
            panic!("unexpected failure {f:?}");
        };
        *m.entry(page.0).or_insert(0) += 1;
    }
    m
}

fn once(pages: &[u64]) -> BTreeMap<u64, usize> {
    pages.iter().map(|p| (*p, 1)).collect()
}

const BACKENDS: [Backend; 2] = [Backend::Mem, Backend::File];

#[test]
fn at_rest_damage_found_and_reported_once() {
    for backend in BACKENDS {
        for checks in [Checks::Trailer, Checks::Sidecar] {
            let r = rig(backend, checks);
            r.raw
                .damage(PageId(3), Damage::BitFlip { byte: 100, bit: 5 })
                .unwrap();
            r.raw.damage(PageId(20), Damage::Zero).unwrap();
            r.raw.damage(PageId(63), Damage::Junk { seed: 7 }).unwrap();
            assert_eq!(scrub(&r, 3), once(&[3, 20, 63]), "{backend:?} {checks:?}");
            for p in [3, 20, 63] {
                assert_eq!(r.det.page_state(PageId(p)), Some(PageState::Suspect));
            }
        }
    }
}

#[test]
fn torn_write_found() {
    for backend in BACKENDS {
        for checks in [Checks::Trailer, Checks::Sidecar] {
            let r = rig(backend, checks);
            r.raw
                .fail_next_write(Some(PageId(9)), WriteFault::Torn { new_bytes: PS / 2 });
            r.det
                .write_sealed(PageId(9), &mut page_bytes(9, 2))
                .unwrap();
            assert_eq!(scrub(&r, 3), once(&[9]), "{backend:?} {checks:?}");
        }
    }
}

#[test]
fn misdirected_write_found_on_both_pages() {
    for backend in BACKENDS {
        for checks in [Checks::Trailer, Checks::TrailerLsn, Checks::Sidecar] {
            let r = rig(backend, checks);
            r.raw
                .fail_next_write(Some(PageId(10)), WriteFault::Misdirected { to: PageId(40) });
            r.det
                .write_sealed(PageId(10), &mut page_bytes(10, 2))
                .unwrap();
            let found = scrub(&r, 3);
            // Page 40 holds page 10's bytes: caught by every placement.
            // Page 10 kept its old, self-consistent bytes: only a page-LSN
            // reader or a sidecar table (which recorded the new checksum)
            // can tell.
            let expected = match checks {
                Checks::Trailer => once(&[40]),
                Checks::TrailerLsn | Checks::Sidecar => once(&[10, 40]),
            };
            assert_eq!(found, expected, "{backend:?} {checks:?}");
        }
    }
}

#[test]
fn lost_write_found_with_page_lsn_or_sidecar() {
    for backend in BACKENDS {
        for checks in [Checks::Trailer, Checks::TrailerLsn, Checks::Sidecar] {
            let r = rig(backend, checks);
            r.raw.fail_next_write(Some(PageId(33)), WriteFault::Lost);
            r.det
                .write_sealed(PageId(33), &mut page_bytes(33, 2))
                .unwrap();
            let found = scrub(&r, 3);
            let expected = match checks {
                // The old page verifies by its own trailer: undetectable
                // without knowing what was last written.
                Checks::Trailer => once(&[]),
                Checks::TrailerLsn | Checks::Sidecar => once(&[33]),
            };
            assert_eq!(found, expected, "{backend:?} {checks:?}");
            if checks == Checks::TrailerLsn {
                let e = r.det.suspects();
                assert!(e[0].1.last_error.contains("stale"), "{e:?}");
            }
        }
    }
}

#[test]
fn persistent_read_error_recorded_once() {
    for backend in BACKENDS {
        let r = rig(backend, Checks::Trailer);
        r.raw.fail_reads(Some(PageId(50)), ReadFault::Eio, u32::MAX);
        assert_eq!(scrub(&r, 3), once(&[50]), "{backend:?}");
        assert_eq!(r.det.page_state(PageId(50)), Some(PageState::Suspect));
    }
}

#[test]
fn transient_read_fault_not_reported() {
    for backend in BACKENDS {
        let r = rig(backend, Checks::Trailer);
        r.raw
            .fail_reads(Some(PageId(12)), ReadFault::TransientBitFlip, 1);
        assert_eq!(scrub(&r, 3), once(&[]), "{backend:?}");
        assert_eq!(r.det.stats().transient, 1);
        assert_eq!(r.det.page_state(PageId(12)), None);
    }
}

/// The batched `pread` path and the memory-map path of a plain `FileStore`
/// (the fault wrapper reads page by page) find the same damage.
#[test]
fn file_store_scan_paths_find_damage() {
    for mmap in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            FileStore::create(dir.path().join("d"), 4096, 600)
                .unwrap()
                .with_mmap_scan(mmap),
        );
        let det = Arc::new(
            CorruptionConfig::new(ChecksumPlacement::Trailer)
                .build(store.clone())
                .unwrap(),
        );
        for p in 0..600 {
            det.write_sealed(PageId(p), &mut vec![(p % 251) as u8 + 1; 4096])
                .unwrap();
        }
        store.write_page(PageId(0), &[0u8; 4096]).unwrap();
        store.write_page(PageId(300), &[9u8; 4096]).unwrap();
        let mut good = vec![0u8; 4096];
        store.read_page(PageId(400), &mut good).unwrap();
        good[7] ^= 0x40;
        store.write_page(PageId(599), &good).unwrap();
        let s = ScrubConfig::new().unlimited().build(det.clone()).unwrap();
        for _ in 0..3 {
            let sum = s.scan_range(PageId(0), 600).unwrap();
            assert_eq!(sum.pages, 600);
            assert_eq!(sum.clean, 597);
        }
        assert_eq!(reports(&det), once(&[0, 300, 599]), "mmap {mmap}");
    }
}

#[test]
fn resumes_from_persisted_cursor_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cursor = dir.path().join("scrub.cursor");
    let r = rig(Backend::File, Checks::Trailer);
    r.raw.damage(PageId(5), Damage::Zero).unwrap();
    r.raw.damage(PageId(50), Damage::Zero).unwrap();
    let first = ScrubConfig::new()
        .pages_per_s(100)
        .batch_pages(10)
        .cursor_path(&cursor)
        .build(r.det.clone())
        .unwrap();
    // Scan 30 pages (10 now, 10 per 100 ms), then "crash" after persisting.
    for _ in 0..3 {
        assert!(matches!(
            first.step(r.clock.now_ns()).unwrap(),
            selfheal::scrub::ScrubStep::Scanned(_)
        ));
        r.clock.advance(Duration::from_millis(100));
    }
    first.persist_cursor().unwrap();
    assert_eq!(reports(&r.det), once(&[5]));
    drop(first);

    // A restarted process: a new detector (empty registry) over the same store.
    let det2 = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .clock(Arc::new(r.clock.clone()))
            .build(r.raw.clone())
            .unwrap(),
    );
    let mut second = ScrubConfig::new()
        .pages_per_s(100)
        .batch_pages(10)
        .cursor_path(&cursor)
        .build(det2.clone())
        .unwrap();
    assert_eq!(second.progress().unwrap().position, 30);
    step_passes(&mut second, &r.clock, 1);
    // The resumed pass covered pages 30.. only: page 5 was not rescanned.
    assert_eq!(reports(&det2), once(&[50]));
    // The next pass starts at page 0 and finds page 5 for this process.
    step_passes(&mut second, &r.clock, 1);
    assert_eq!(reports(&det2), once(&[5]));

    // The same through the thread: stop persists, a new handle continues there.
    let big = tempfile::tempdir().unwrap();
    let store = Arc::new(MemStore::new(PS, 5_000).unwrap());
    let det3 = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .build(store.clone())
            .unwrap(),
    );
    for p in 0..5_000 {
        det3.write_sealed(PageId(p), &mut page_bytes(p, 1)).unwrap();
    }
    let cursor = big.path().join("c");
    let h = ScrubConfig::new()
        .pages_per_s(5_000)
        .cursor_path(&cursor)
        .clock(SystemClock::shared())
        .build(det3.clone())
        .unwrap();
    h.start().unwrap();
    // Let it scan part of the pass (the first batch is immediate).
    for _ in 0..1_000 {
        if h.progress().unwrap().position > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    h.stop().unwrap();
    let stopped = h.progress().unwrap();
    assert_eq!(stopped.state, ScrubState::Stopped);
    assert!(
        stopped.position > 0 && stopped.position < 5_000,
        "{stopped:?}"
    );
    let again = ScrubConfig::new().cursor_path(&cursor).build(det3).unwrap();
    assert_eq!(again.progress().unwrap().position, stopped.position);
}

#[test]
fn pause_and_resume_on_the_thread() {
    let store = Arc::new(MemStore::new(PS, 2_000).unwrap());
    let det = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .build(store.clone())
            .unwrap(),
    );
    for p in 0..2_000 {
        det.write_sealed(PageId(p), &mut page_bytes(p, 1)).unwrap();
    }
    store.write_page(PageId(1_999), &[1u8; PS]).unwrap();
    let h = ScrubConfig::new()
        .pages_per_s(10_000)
        .single_pass()
        .build(det.clone())
        .unwrap();
    h.start().unwrap();
    h.pause().unwrap();
    let p = h.progress().unwrap();
    assert_eq!(p.state, ScrubState::Paused);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        h.progress().unwrap().position,
        p.position,
        "no scan while paused"
    );
    h.resume().unwrap();
    let done = h
        .wait_for_passes(1, Duration::from_secs(20))
        .unwrap()
        .expect("pass completes");
    assert_eq!(done.state, ScrubState::Finished);
    assert_eq!(done.corrupt_found, 1);
    h.stop().unwrap();
    assert_eq!(reports(&det), once(&[1_999]));
}

#[test]
fn error_only_pass_lifts_only_what_verifies() {
    for backend in BACKENDS {
        let r = rig(backend, Checks::Trailer);
        let mut good = vec![0u8; PS];
        r.raw.read_page(PageId(9), &mut good).unwrap();
        r.raw.damage(PageId(3), Damage::Zero).unwrap();
        r.raw.damage(PageId(9), Damage::Junk { seed: 3 }).unwrap();
        assert_eq!(scrub(&r, 1), once(&[3, 9]));

        // The host rewrites page 3: its entry goes; page 9 is still bad.
        r.det
            .write_sealed(PageId(3), &mut page_bytes(3, 2))
            .unwrap();
        let mut eo = ScrubConfig::new()
            .unlimited()
            .mode(ScrubMode::ErrorOnly)
            .single_pass()
            .build(r.det.clone())
            .unwrap();
        step_passes(&mut eo, &r.clock, 1);
        assert_eq!(r.det.page_state(PageId(3)), None);
        assert_eq!(r.det.page_state(PageId(9)), Some(PageState::Suspect));
        let mut buf = vec![0u8; PS];
        assert!(matches!(
            r.det.read_verified(PageId(9), &mut buf),
            Err(Error::PageFenced { .. })
        ));
        r.det.read_verified(PageId(3), &mut buf).unwrap();

        // A repair behind the detector's back (good bytes written raw):
        // the recheck lifts the fence.
        r.raw.inner().write_page(PageId(9), &good).unwrap();
        let s = ScrubConfig::new().unlimited().build(r.det.clone()).unwrap();
        let sum = s.rescan_bad().unwrap();
        assert_eq!((sum.pages, sum.fences_lifted), (1, 1));
        assert_eq!(r.det.page_state(PageId(9)), Some(PageState::Repaired));
        r.det.read_verified(PageId(9), &mut buf).unwrap();
        assert_eq!(buf, good);
        assert_eq!(reports(&r.det), once(&[]), "rechecks report nothing");
    }
}

#[test]
fn error_only_on_the_thread() {
    let r = rig(Backend::Mem, Checks::Trailer);
    let mut good = vec![0u8; PS];
    r.raw.read_page(PageId(4), &mut good).unwrap();
    r.raw.damage(PageId(4), Damage::Zero).unwrap();
    let h = ScrubConfig::new()
        .unlimited()
        .single_pass()
        .clock(SystemClock::shared())
        .build(r.det.clone())
        .unwrap();
    h.start().unwrap();
    h.wait_for_passes(1, Duration::from_secs(20))
        .unwrap()
        .unwrap();
    assert_eq!(h.rescan_bad().unwrap().known_corrupt, 1);
    r.raw.inner().write_page(PageId(4), &good).unwrap();
    assert_eq!(h.rescan_bad().unwrap().fences_lifted, 1);
    h.stop().unwrap();
}

#[test]
fn zero_rate_is_invalid_config() {
    let r = rig(Backend::Mem, Checks::Trailer);
    for cfg in [
        ScrubConfig::new().pages_per_s(0),
        ScrubConfig::new().bytes_per_s(0),
    ] {
        match cfg.build(r.det.clone()) {
            Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "rate"),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        ScrubConfig::new().pages_per_s(0).build(r.det.clone()),
        Err(Error::InvalidConfig { .. })
    ));
}

#[test]
fn damaged_cursor_falls_back_to_page_zero() {
    let r = rig(Backend::Mem, Checks::Trailer);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cursor");
    // A valid cursor at page 40.
    let s = ScrubConfig::new()
        .unlimited()
        .batch_pages(40)
        .cursor_path(&path)
        .build(r.det.clone())
        .unwrap();
    s.step(0).unwrap();
    s.persist_cursor().unwrap();
    // The cursor file has one owner: a restart comes after the first is gone.
    drop(s);
    let valid = std::fs::read(&path).unwrap();
    let reopen = || {
        ScrubConfig::new()
            .cursor_path(&path)
            .build(r.det.clone())
            .unwrap()
            .progress()
            .unwrap()
            .position
    };
    assert_eq!(reopen(), 40);

    let mut damaged: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"junk".to_vec(),
        vec![0u8; valid.len()],
        valid[..valid.len() - 1].to_vec(),
    ];
    for i in 0..valid.len() {
        let mut b = valid.clone();
        b[i] ^= 0x10;
        damaged.push(b);
    }
    for bytes in damaged {
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(reopen(), 0, "{bytes:?}");
    }

    // A cursor from a larger store points past the end: ignored.
    let big = Arc::new(MemStore::new(PS, 1_000).unwrap());
    let det_big = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .build(big.clone())
            .unwrap(),
    );
    let s = ScrubConfig::new()
        .unlimited()
        .batch_pages(500)
        .cursor_path(&path)
        .build(det_big)
        .unwrap();
    s.step(0).unwrap();
    s.persist_cursor().unwrap();
    drop(s);
    assert_eq!(reopen(), 0);
}

/// A store wrapper whose scans read their pages, then (once, when armed)
/// shrink the store through the detector, then visit the bytes they read:
/// the worst moment for a shrink, since the scrubber holds bytes of pages
/// that no longer exist.
struct ShrinkInScan {
    inner: Arc<dyn PageStore>,
    shrink_to: std::sync::Mutex<Option<(u64, std::sync::Weak<CorruptionDetector>)>>,
}

impl std::fmt::Debug for ShrinkInScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShrinkInScan").finish_non_exhaustive()
    }
}

impl PageStore for ShrinkInScan {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn page_count(&self) -> u64 {
        self.inner.page_count()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> selfheal::Result<()> {
        self.inner.read_page(page, buf)
    }
    fn scan_pages(
        &self,
        first: PageId,
        count: u64,
        visit: &mut dyn FnMut(PageId, &[u8]) -> selfheal::Result<()>,
    ) -> selfheal::Result<()> {
        let mut buf = vec![0u8; count as usize * PS];
        self.inner.read_pages(first, &mut buf)?;
        let armed = self.shrink_to.lock().unwrap().take();
        if let Some((to, det)) = armed {
            det.upgrade().unwrap().resize(to)?;
        }
        for (i, page) in buf.chunks_exact(PS).enumerate() {
            visit(PageId(first.0 + i as u64), page)?;
        }
        Ok(())
    }
    fn write_page(&self, page: PageId, data: &[u8]) -> selfheal::Result<()> {
        self.inner.write_page(page, data)
    }
    fn resize(&self, page_count: u64) -> selfheal::Result<()> {
        self.inner.resize(page_count)
    }
    fn sync(&self) -> selfheal::Result<()> {
        self.inner.sync()
    }
}

/// A pass over a store that shrinks in the middle of a batch ends at the
/// new end, with no error, no report and no fence of a dropped page, in
/// both placements, over memory and over a memory-mapped file.
#[test]
fn a_pass_over_a_store_that_shrinks_mid_batch_ends_at_the_new_end() {
    for backend in BACKENDS {
        for sidecar in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let inner: Arc<dyn PageStore> = match backend {
                Backend::Mem => Arc::new(MemStore::new(PS, PAGES).unwrap()),
                Backend::File => Arc::new(
                    FileStore::create(dir.path().join("data"), PS, PAGES)
                        .unwrap()
                        .with_mmap_scan(true),
                ),
            };
            let store = Arc::new(ShrinkInScan {
                inner,
                shrink_to: std::sync::Mutex::new(None),
            });
            let placement = if sidecar {
                ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(PS).unwrap()))
            } else {
                ChecksumPlacement::Trailer
            };
            let clock = ManualClock::new();
            let det = Arc::new(
                CorruptionConfig::new(placement)
                    .clock(Arc::new(clock.clone()))
                    .build(store.clone())
                    .unwrap(),
            );
            for p in 0..PAGES {
                det.write_sealed(PageId(p), &mut page_bytes(p, 1)).unwrap();
            }
            let what = format!("{backend:?} sidecar {sidecar}");
            let mut s = ScrubConfig::new()
                .unlimited()
                .batch_pages(16)
                .single_pass()
                .build(det.clone())
                .unwrap();
            // First batch: pages 0..16, intact.
            assert!(matches!(
                s.step(clock.now_ns()).unwrap(),
                selfheal::scrub::ScrubStep::Scanned(_)
            ));
            // The second batch reads 16..32, then the store shrinks to 20.
            *store.shrink_to.lock().unwrap() = Some((20, Arc::downgrade(&det)));
            step_passes(&mut s, &clock, 1);
            let p = s.progress().unwrap();
            assert_eq!(p.passes_completed, 1, "{what}");
            assert_eq!(reports(&det), once(&[]), "{what}: nothing reported");
            assert!(det.suspects().is_empty(), "{what}: nothing fenced");
            assert_eq!(det.stats().corrupt_reported, 0, "{what}");
        }
    }
}

/// A cursor written before the store shrank points past its end: the
/// restarted scrubber clamps it (the interrupted pass is over) instead of
/// distrusting it, and the next pass covers the store as it is.
#[test]
fn a_cursor_past_the_end_of_a_shrunk_store_is_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let cursor = dir.path().join("scrub.cursor");
    let r = rig(Backend::File, Checks::Sidecar);
    let first = ScrubConfig::new()
        .unlimited()
        .batch_pages(8)
        .cursor_path(&cursor)
        .build(r.det.clone())
        .unwrap();
    for _ in 0..5 {
        first.step(r.clock.now_ns()).unwrap();
    }
    first.persist_cursor().unwrap();
    assert_eq!(first.progress().unwrap().position, 40);
    drop(first);
    r.det.resize(24).unwrap();
    let mut second = ScrubConfig::new()
        .unlimited()
        .batch_pages(8)
        .cursor_path(&cursor)
        .build(r.det.clone())
        .unwrap();
    assert_eq!(second.progress().unwrap().position, 24);
    assert_eq!(
        second.step(r.clock.now_ns()).unwrap(),
        selfheal::scrub::ScrubStep::PassComplete {
            passes_completed: 1
        }
    );
    step_passes(&mut second, &r.clock, 1);
    assert_eq!(second.progress().unwrap().passes_completed, 2);
    assert_eq!(reports(&r.det), once(&[]));
}

/// One bus, one clock: a corrupt page the detector reports and the death of
/// the scrub thread (a store read that panics) arrive on one shared
/// `FailureSink`, in the order they happened, each named by its source, with
/// timestamps from one `ManualClock` that compare. The sink and clock are
/// given to the scrubber explicitly, or come from the detector by default.
#[test]
fn a_dead_scrub_thread_arrives_on_the_shared_bus_with_a_comparable_time() {
    for sidecar in [false, true] {
        for explicit in [false, true] {
            let what = format!("sidecar {sidecar}, explicit {explicit}");
            let clock = ManualClock::new();
            let sink = FailureSink::new(64);
            let raw = Arc::new(FaultyStore::new(Arc::new(
                MemStore::new(PS, PAGES).unwrap(),
            )));
            let placement = if sidecar {
                ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(PS).unwrap()))
            } else {
                ChecksumPlacement::Trailer
            };
            let det = Arc::new(
                CorruptionConfig::new(placement)
                    .clock(Arc::new(clock.clone()))
                    .failure_sink(sink.clone())
                    .build(raw.clone())
                    .unwrap(),
            );
            for p in 0..PAGES {
                det.write_sealed(PageId(p), &mut page_bytes(p, 1)).unwrap();
            }
            // The detector's failure, at 1 s.
            raw.damage(PageId(5), Damage::Zero).unwrap();
            clock.set_ns(1_000_000_000);
            let mut buf = vec![0u8; PS];
            assert!(det.read_verified(PageId(5), &mut buf).is_err(), "{what}");
            // The scrubber's, at 5 s: its first read panics.
            clock.set_ns(5_000_000_000);
            raw.fail_reads(None, ReadFault::Panic, u32::MAX);
            let mut cfg = ScrubConfig::new().unlimited();
            if explicit {
                cfg = cfg
                    .failure_sink(sink.clone())
                    .clock(Arc::new(clock.clone()));
            }
            let h = cfg.build(det.clone()).unwrap();
            h.start().unwrap();
            let err = h.wait_for_passes(1, Duration::from_secs(20)).unwrap_err();
            assert!(err.to_string().contains("(injected)"), "{what}: {err}");
            assert_eq!(h.state(), ScrubState::Failed, "{what}");

            let got: Vec<Failure> = sink.failures().try_iter().collect();
            assert_eq!(got.len(), 2, "{what}: {got:?}");
            let (found, died) = (&got[0], &got[1]);
            assert_eq!(found.source, Source::CorruptionDetector, "{what}");
            assert_eq!(
                found.kind,
                FailureKind::CorruptPage { page: PageId(5) },
                "{what}"
            );
            assert_eq!(found.detected_at_ns, 1_000_000_000, "{what}");
            assert_eq!(died.source, Source::Scrubber, "{what}");
            assert_eq!(
                died.kind,
                FailureKind::WorkerDied {
                    component: Arc::from("scrubber")
                },
                "{what}"
            );
            assert!(died.evidence.contains("(injected)"), "{what}: {died}");
            assert_eq!(died.detected_at_ns, 5_000_000_000, "{what}");
            assert!(found.id < died.id, "{what}: bus order");
            assert!(found.detected_at_ns < died.detected_at_ns, "{what}");
            assert!(matches!(h.stop(), Err(Error::Stopped { .. })), "{what}");
            assert!(sink.failures().try_recv().is_err(), "{what}: reported once");
        }
    }
}
