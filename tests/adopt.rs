//! Goal: a store that existed before the library is taken under protection
//! by `CorruptionDetector::adopt` in both placements (the sidecar with an
//! in-memory and with a durable table) — every page it vouches for verifies
//! afterwards, damage found later is caught, zero pages follow the host's
//! free-page answer, existing checksums are never overwritten, a host
//! writing meanwhile always wins, adoption can be run again, and a crash at
//! any step of it leaves each page adopted or as it was, and a page the
//! registry knows to be bad is never sealed. Method: pages
//! written raw (as a host would before adopting), adopted, then read,
//! scrubbed and damaged behind the detector; a thread writes through the
//! detector during adoption; a `CrashSwitch` kills the process at every
//! step of an adoption into a `CrashStore` and `CrashFiles`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use selfheal::checksum::{payload_len, trailer, TableConfig, TRAILER_LEN};
use selfheal::corruption::{AdoptOptions, AdoptProgress};
use selfheal::corruption::{FreePageFn, PageState};
use selfheal::testing::{
    every_placement, CrashFiles, CrashStore, CrashSwitch, Damage, FaultyStore, ReadFault,
};
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, CorruptionDetector, Error, FileStore,
    MemStore, PageId, PageStore, ScrubConfig,
};

const PS: usize = 4096;
const PAGES: u64 = 300;

/// A host page: data everywhere but the last 16 bytes (a host that reserves
/// them, as SQLite does with reserved bytes), which stay zero.
fn host_page(page: u64) -> Vec<u8> {
    let mut b: Vec<u8> = (0..PS)
        .map(|i| (page as usize * 7 + i * 3) as u8 | 1)
        .collect();
    b[PS - TRAILER_LEN..].fill(0);
    b
}

fn is_zero_page(p: u64) -> bool {
    p % 50 == 7
}

/// A file written by the host before it had the library; pages 7, 57, ...
/// are all zeros (freed).
fn host_file(dir: &std::path::Path, mmap: bool) -> Arc<FileStore> {
    let s = FileStore::create(dir.join("db"), PS, PAGES)
        .unwrap()
        .with_mmap_scan(mmap);
    for p in 0..PAGES {
        if !is_zero_page(p) {
            s.write_page(PageId(p), &host_page(p)).unwrap();
        }
    }
    s.sync().unwrap();
    Arc::new(s)
}

/// A durable sidecar table on a crash-simulating directory.
fn durable_on(files: &Arc<CrashFiles>) -> ChecksumPlacement {
    ChecksumPlacement::Sidecar(Arc::new(
        TableConfig::new(PS).open_on(files.clone(), "sums").unwrap(),
    ))
}

fn zero_count() -> u64 {
    (0..PAGES).filter(|p| is_zero_page(*p)).count() as u64
}

fn scrub_reports(det: &Arc<CorruptionDetector>) -> Vec<u64> {
    let s = ScrubConfig::new().unlimited().build(det.clone()).unwrap();
    s.scan_range(PageId(0), det.store().page_count()).unwrap();
    det.failures()
        .try_iter()
        .map(|f| f.target_page().unwrap().0)
        .collect()
}

trait TargetPage {
    fn target_page(&self) -> Option<PageId>;
}

impl TargetPage for selfheal::Failure {
    fn target_page(&self) -> Option<PageId> {
        match self.target() {
            selfheal::Target::Page(p) => Some(p),
            _ => None,
        }
    }
}

#[test]
fn adopts_an_existing_file_in_both_placements() {
    for (name, placement) in every_placement(PS) {
        for mmap in [false, true] {
            let what = format!("{name} mmap {mmap}");
            let dir = tempfile::tempdir().unwrap();
            let store = host_file(dir.path(), mmap);
            let det = Arc::new(
                CorruptionConfig::new(placement_like(&placement))
                    .build(store.clone())
                    .unwrap(),
            );
            // Before adoption, every page fails verification.
            let mut buf = vec![0u8; PS];
            assert!(det.read_verified(PageId(1), &mut buf).is_err(), "{what}");
            let _ = det.failures().try_iter().count();

            let progress: Arc<Mutex<Vec<AdoptProgress>>> = Arc::default();
            let seen = progress.clone();
            let report = det
                .adopt(
                    AdoptOptions::new()
                        .batch_pages(64)
                        .on_progress(move |p| seen.lock().unwrap().push(*p)),
                )
                .unwrap();
            assert_eq!(report.pages, PAGES, "{what}");
            assert_eq!(report.unallocated, zero_count(), "{what}");
            // Page 1 was fenced by the read above (it had no checksum):
            // adoption lifts its fence.
            assert_eq!(report.fences_lifted, 1, "{what}: {report:?}");
            assert_eq!(report.sealed + report.already_sealed, PAGES - zero_count());
            assert_eq!(report.corrupt, 0, "{what}");
            assert_eq!(report.bytes, PAGES * PS as u64);
            let p = progress.lock().unwrap();
            assert_eq!(
                p.len(),
                PAGES.div_ceil(64) as usize,
                "{what}: one call a batch"
            );
            assert!(p.windows(2).all(|w| w[0].pages_done < w[1].pages_done));
            assert_eq!(p.last().unwrap().pages_done, PAGES);
            assert_eq!(p.last().unwrap().pages_total, PAGES);

            for pg in 0..PAGES {
                let r = det.read_verified(PageId(pg), &mut buf);
                if is_zero_page(pg) {
                    assert!(
                        matches!(r, Err(Error::PageUnallocated { .. })),
                        "{what} page {pg}: {r:?}"
                    );
                } else {
                    r.unwrap_or_else(|e| panic!("{what} page {pg}: {e}"));
                    let n = payload_len(PS);
                    assert_eq!(buf[..n], host_page(pg)[..n], "{what}: data unchanged");
                }
            }
            assert!(scrub_reports(&det).is_empty(), "{what}: no false alarm");

            // Damage found after adoption is caught.
            let mut bytes = vec![0u8; PS];
            store.read_page(PageId(10), &mut bytes).unwrap();
            Damage::BitFlip { byte: 100, bit: 4 }.apply(&mut bytes);
            store.write_page(PageId(10), &bytes).unwrap();
            store.write_page(PageId(11), &vec![0u8; PS]).unwrap();
            assert_eq!(scrub_reports(&det), vec![10, 11], "{what}");

            // Adopting again: everything already sealed, damage reported
            // (already known: not again), nothing overwritten.
            let again = det.adopt(AdoptOptions::new()).unwrap();
            assert_eq!(again.sealed, 0, "{what}: {again:?}");
            assert_eq!(again.corrupt, 2, "{what}: {again:?}");
            assert_eq!(again.unallocated, zero_count(), "{what}");
            assert_eq!(det.page_state(PageId(10)), Some(PageState::Suspect));
        }
    }
}

/// Adoption never seals a page the registry knows to be bad: a sealed page
/// whose trailer was zeroed by damage looks never sealed, and a page that
/// could not be read looks fine once reads work again; both stay fenced.
/// A page fenced only for carrying no seal yet is still adopted.
#[test]
fn adoption_never_seals_a_page_known_to_be_bad() {
    for (name, placement) in every_placement(PS) {
        let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(PS, 8).unwrap())));
        for p in 0..8 {
            raw.write_page(PageId(p), &host_page(p)).unwrap();
        }
        let det = Arc::new(
            CorruptionConfig::new(placement_like(&placement))
                .build(raw.clone())
                .unwrap(),
        );
        let mut buf = vec![0u8; PS];
        // Page 1: sealed through the detector, then its last 64 bytes zeroed.
        det.write_sealed(PageId(1), &mut host_page(101)).unwrap();
        raw.read_page(PageId(1), &mut buf).unwrap();
        buf[PS - 64..].fill(0);
        raw.write_page(PageId(1), &buf).unwrap();
        assert!(det.read_verified(PageId(1), &mut buf).is_err(), "{name}");
        // Page 2: never sealed, unreadable twice (fenced), readable again.
        raw.fail_reads(Some(PageId(2)), ReadFault::Eio, 2);
        assert!(det.read_verified(PageId(2), &mut buf).is_err(), "{name}");
        // Page 3: never sealed, read before adoption (fenced: no seal yet).
        assert!(det.read_verified(PageId(3), &mut buf).is_err(), "{name}");
        let report = det.adopt(AdoptOptions::new()).unwrap();
        assert_eq!(report.corrupt, 2, "{name}: {report:?}");
        assert_eq!(report.fences_lifted, 1, "{name}: {report:?}");
        assert_eq!(report.sealed, 6, "{name}: {report:?}");
        for p in [1, 2] {
            assert_eq!(
                det.page_state(PageId(p)),
                Some(PageState::Suspect),
                "{name} page {p}"
            );
            assert!(
                matches!(
                    det.read_verified(PageId(p), &mut buf),
                    Err(Error::PageFenced { .. })
                ),
                "{name} page {p}"
            );
        }
        det.read_verified(PageId(3), &mut buf).unwrap();
        // Adopting again changes nothing about them.
        let again = det.adopt(AdoptOptions::new()).unwrap();
        assert_eq!((again.sealed, again.corrupt), (0, 2), "{name}: {again:?}");
        assert!(det.read_verified(PageId(1), &mut buf).is_err(), "{name}");
    }
}

/// Trailer adoption writes only the 16 trailer bytes of each page and syncs.
#[test]
fn trailer_adoption_writes_only_the_reserved_tail() {
    let dir = tempfile::tempdir().unwrap();
    let store = host_file(dir.path(), false);
    let before = std::fs::read(dir.path().join("db")).unwrap();
    let det = CorruptionConfig::new(ChecksumPlacement::Trailer)
        .build(store.clone())
        .unwrap();
    let report = det.adopt(AdoptOptions::new()).unwrap();
    assert_eq!(report.sealed, PAGES - zero_count());
    let after = std::fs::read(dir.path().join("db")).unwrap();
    for p in 0..PAGES as usize {
        let (a, b) = (&before[p * PS..(p + 1) * PS], &after[p * PS..(p + 1) * PS]);
        assert_eq!(a[..PS - TRAILER_LEN], b[..PS - TRAILER_LEN], "page {p}");
        if !is_zero_page(p as u64) {
            trailer::verify(PageId(p as u64), b).unwrap();
        } else {
            assert!(b.iter().all(|&x| x == 0), "a free zero page is not written");
        }
    }
}

/// A page whose last 16 bytes hold data cannot take a trailer: a typed
/// error, with the pages before it adopted; the sidecar placement adopts
/// the same file whole.
#[test]
fn trailer_adoption_stops_at_a_page_whose_tail_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = host_file(dir.path(), true);
    let mut full = host_page(120);
    full[PS - 3] = 9;
    store.write_page(PageId(120), &full).unwrap();
    let det = CorruptionConfig::new(ChecksumPlacement::Trailer)
        .build(store.clone())
        .unwrap();
    let err = det.adopt(AdoptOptions::new().batch_pages(16)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TrailerInUse {
                page: PageId(120),
                trailer_len: 16
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("sidecar"), "{err}");
    let mut buf = vec![0u8; PS];
    det.read_verified(PageId(119), &mut buf).unwrap();
    assert!(det.read_verified(PageId(121), &mut buf).is_err());

    let side = CorruptionConfig::new(ChecksumPlacement::Sidecar(Arc::new(
        ChecksumTable::new(PS).unwrap(),
    )))
    .build(store)
    .unwrap();
    let report = side.adopt(AdoptOptions::new()).unwrap();
    // Pages 0..=119 now carry trailers; the sidecar seals them as bytes too.
    assert_eq!(report.sealed, PAGES - zero_count());
}

/// With a free-page answer, a zero page the host says is in use is damage
/// (fenced and reported), one it says is free is unallocated; without an
/// answer, `zero_pages_are_damage` decides.
#[test]
fn zero_pages_follow_the_hosts_answer() {
    for (name, placement) in every_placement(PS) {
        let dir = tempfile::tempdir().unwrap();
        let store = host_file(dir.path(), false);
        let answer: FreePageFn = Arc::new(|p: PageId| p.0 != 57 && is_zero_page(p.0));
        let det = Arc::new(
            CorruptionConfig::new(placement_like(&placement))
                .free_pages(answer)
                .build(store.clone())
                .unwrap(),
        );
        let report = det.adopt(AdoptOptions::new()).unwrap();
        assert_eq!(report.corrupt, 1, "{name}: {report:?}");
        assert_eq!(report.unallocated, zero_count() - 1, "{name}");
        let reported: Vec<_> = det
            .failures()
            .try_iter()
            .map(|f| f.target_page().unwrap().0)
            .collect();
        assert_eq!(reported, vec![57], "{name}");
        let mut buf = vec![0u8; PS];
        assert!(matches!(
            det.read_verified(PageId(57), &mut buf),
            Err(Error::PageFenced { .. })
        ));

        let dir = tempfile::tempdir().unwrap();
        let store = host_file(dir.path(), false);
        let det = CorruptionConfig::new(placement_like(&placement))
            .build(store)
            .unwrap();
        let report = det
            .adopt(AdoptOptions::new().zero_pages_are_damage(true))
            .unwrap();
        assert_eq!(
            (report.corrupt, report.unallocated),
            (zero_count(), 0),
            "{name}"
        );
    }
}

/// A host writing through the detector while adoption runs always wins: a
/// checksum adoption computed from older bytes never replaces the one the
/// write recorded, and a trailer is written only over the bytes it re-read.
#[test]
fn host_writes_during_adoption_win() {
    for (name, placement) in every_placement(PS) {
        for round in 0..4u64 {
            let raw = Arc::new(FaultyStore::new(Arc::new(
                MemStore::new(PS, PAGES).unwrap(),
            )));
            for p in 0..PAGES {
                raw.write_page(PageId(p), &host_page(p)).unwrap();
            }
            let det = Arc::new(
                CorruptionConfig::new(placement_like(&placement))
                    .build(raw.clone())
                    .unwrap(),
            );
            let stop = Arc::new(AtomicBool::new(false));
            let writer = {
                let (det, stop) = (det.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = round;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) || n < 50 {
                        let p = (i * 37) % PAGES;
                        det.write_sealed(PageId(p), &mut host_page(p + 1000 + i))
                            .unwrap();
                        i += 1;
                        n += 1;
                    }
                })
            };
            let report = det.adopt(AdoptOptions::new().batch_pages(8)).unwrap();
            stop.store(true, Ordering::Relaxed);
            writer.join().unwrap();
            assert_eq!(report.corrupt, 0, "{name}: {report:?}");
            let mut buf = vec![0u8; PS];
            for p in 0..PAGES {
                det.read_verified(PageId(p), &mut buf)
                    .unwrap_or_else(|e| panic!("{name} round {round} page {p}: {e}"));
            }
            assert!(det.failures().try_iter().next().is_none(), "{name}");
        }
    }
}

#[test]
fn bad_options_and_ranges() {
    let raw = Arc::new(MemStore::new(PS, 8).unwrap());
    for p in 0..8 {
        raw.write_page(PageId(p), &host_page(p)).unwrap();
    }
    let det = CorruptionConfig::new(ChecksumPlacement::Sidecar(Arc::new(
        ChecksumTable::new(PS).unwrap(),
    )))
    .build(raw)
    .unwrap();
    assert!(matches!(
        det.adopt(AdoptOptions::new().batch_pages(0)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        det.adopt(AdoptOptions::new().range(PageId(4), 5)),
        Err(Error::PageOutOfRange { .. })
    ));
    let r = det.adopt(AdoptOptions::new().range(PageId(2), 3)).unwrap();
    assert_eq!((r.pages, r.sealed), (3, 3));
    let mut buf = vec![0u8; PS];
    det.read_verified(PageId(4), &mut buf).unwrap();
    assert!(det.read_verified(PageId(5), &mut buf).is_err());
    let r = det.adopt(AdoptOptions::new()).unwrap();
    assert_eq!((r.sealed, r.already_sealed), (5, 3));
    assert!(r.pages_per_s() >= 0.0 && r.bytes_per_s() >= 0.0);
}

/// A fresh placement of the same kind (a new, empty table for sidecars).
fn placement_like(p: &ChecksumPlacement) -> ChecksumPlacement {
    match p {
        ChecksumPlacement::Trailer => ChecksumPlacement::Trailer,
        ChecksumPlacement::Sidecar(t) if t.is_durable() => durable_on(&Arc::new(CrashFiles::new())),
        ChecksumPlacement::Sidecar(_) => {
            ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(PS).unwrap()))
        }
        other => panic!("a placement this test does not know: {other:?}"),
    }
}

/// A store that runs a hook once, right after a scan: the host's write
/// landing between adoption's scan of a batch and what adoption records
/// for it.
struct RacingStore {
    inner: MemStore,
    hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for RacingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RacingStore").finish_non_exhaustive()
    }
}

impl PageStore for RacingStore {
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
        self.inner.scan_pages(first, count, visit)?;
        let hook = self.hook.lock().unwrap().take();
        if let Some(h) = hook {
            h();
        }
        Ok(())
    }

    fn write_page(&self, page: PageId, data: &[u8]) -> selfheal::Result<()> {
        self.inner.write_page(page, data)
    }

    fn sync(&self) -> selfheal::Result<()> {
        self.inner.sync()
    }
}

/// The host writes a page after adoption scanned it and before adoption
/// recorded anything for it: the host's bytes win (adoption records
/// nothing over its write, in memory or, for a durable table, in the log),
/// and its old bytes no longer verify once adoption returned.
#[test]
fn a_host_write_between_the_scan_and_the_record_wins() {
    for (name, placement) in every_placement(PS) {
        let files = Arc::new(CrashFiles::new());
        let placement = match &placement {
            ChecksumPlacement::Sidecar(t) if t.is_durable() => durable_on(&files),
            p => placement_like(p),
        };
        let store = Arc::new(RacingStore {
            inner: MemStore::new(PS, 8).unwrap(),
            hook: Mutex::new(None),
        });
        for p in 0..8 {
            store.write_page(PageId(p), &host_page(p)).unwrap();
        }
        let det = Arc::new(
            CorruptionConfig::new(placement)
                .build(store.clone())
                .unwrap(),
        );
        let host = Arc::downgrade(&det);
        *store.hook.lock().unwrap() = Some(Box::new(move || {
            let det = host.upgrade().unwrap();
            det.write_sealed(PageId(2), &mut host_page(102)).unwrap();
        }));
        let report = det.adopt(AdoptOptions::new().batch_pages(4)).unwrap();
        assert_eq!(report.corrupt, 0, "{name}: {report:?}");
        assert_eq!(
            (report.sealed, report.already_sealed),
            (7, 1),
            "{name}: {report:?}"
        );
        let mut buf = vec![0u8; PS];
        det.read_verified(PageId(2), &mut buf).unwrap();
        let n = payload_len(PS);
        assert_eq!(buf[..n], host_page(102)[..n], "{name}");
        // (A trailer page carries its own checksum: nothing to record.)
        if let ChecksumPlacement::Sidecar(t) = det.placement() {
            assert!(
                det.verify(PageId(2), &host_page(2)).is_err(),
                "{name}: the old bytes"
            );
            if t.is_durable() {
                // After a crash: the host's write was made durable by the
                // sync that ends adoption; the log never let a claim over it.
                let back = TableConfig::new(PS)
                    .open_on(Arc::new(files.crash(Some(1))), "sums")
                    .unwrap();
                assert!(back.verify(PageId(2), &host_page(102)).is_ok(), "{name}");
                assert!(back.verify(PageId(2), &host_page(2)).is_err(), "{name}");
            }
        }
    }
}

/// Adoption into a durable table, and in place under trailers, with the
/// process dying at every step, some of the host's last writes before it
/// not yet synced, and the host writing pages through the detector while it
/// runs (the next page to adopt, and one adopted before):
/// each page that holds its old or new bytes verifies, or is unallocated
/// (all zeros, durable table), or — only while `adopt` had not returned —
/// has no checksum yet, as before adoption; never a false alarm. Adopting
/// again after the crash reports nothing but torn pages.
#[test]
fn adoption_into_a_durable_table_then_a_crash() {
    const N: u64 = 24;
    let zero = |p: u64| p % 8 == 7;
    for durable in [false, true] {
        let what = if durable { "durable" } else { "trailer" };
        let mut at = 0;
        loop {
            let switch = CrashSwitch::new();
            let store = Arc::new(CrashStore::new(PS, N).unwrap().with_switch(switch.clone()));
            for p in (0..N).filter(|&p| !zero(p)) {
                store.write_page(PageId(p), &host_page(p)).unwrap();
            }
            store.sync().unwrap();
            // The host's last writes before adoption, not synced yet.
            for p in [1u64, 9, 17] {
                store.write_page(PageId(p), &host_page(p + 500)).unwrap();
            }
            let files = Arc::new(CrashFiles::new().with_switch(switch.clone()));
            let build = |store: Arc<CrashStore>, files: &Arc<CrashFiles>| {
                let placement = if durable {
                    ChecksumPlacement::Sidecar(Arc::new(
                        TableConfig::new(PS).open_on(files.clone(), "sums")?,
                    ))
                } else {
                    ChecksumPlacement::Trailer
                };
                CorruptionConfig::new(placement).build(store)
            };
            let det = Arc::new(build(store.clone(), &files).unwrap());
            switch.arm_at(switch.ops() + at);
            let host = det.clone();
            let adopted = det.adopt(AdoptOptions::new().batch_pages(4).on_progress(move |p| {
                // The next page to adopt, and (half-way) one adopted before;
                // none after the last batch, whose records only adoption's
                // own flush makes durable. Errors here are the crash, which
                // adoption then meets too.
                for page in [p.pages_done, p.pages_done / 2] {
                    if p.pages_done < N && page % 8 != 7 {
                        let _ = host.write_sealed(PageId(page), &mut host_page(page + 1000));
                    }
                }
            }));
            let fired = switch.fired();
            assert!(adopted.is_ok() || fired, "{what} step {at}: {adopted:?}");
            for seed in 0..4 {
                let w = format!("{what} step {at} seed {seed}");
                let after = Arc::new(store.crash(Some(seed)));
                let files2 = Arc::new(files.crash(Some(seed)));
                let det2 = Arc::new(build(after.clone(), &files2).unwrap());
                let (old, new) = (store.durable_bytes(), store.live_bytes());
                let mut b = vec![0u8; PS];
                let mut torn = Vec::new();
                for p in 0..N {
                    after.read_page(PageId(p), &mut b).unwrap();
                    let r = p as usize * PS..(p as usize + 1) * PS;
                    let whole = b[..] == old[r.clone()] || b[..] == new[r];
                    let v = det2.verify(PageId(p), &b);
                    let unsealed = match &v {
                        Err(Error::MissingChecksum { .. }) => true,
                        Err(_) => !durable && !trailer::has_magic(&b),
                        Ok(()) => false,
                    };
                    match v {
                        _ if !whole => {
                            assert!(v.is_err(), "{w}: page {p} is torn but verifies");
                            torn.push(p);
                        }
                        Ok(()) => {}
                        Err(Error::PageUnallocated { .. }) if zero(p) => {}
                        // A trailer store keeps unallocated marks in memory.
                        Err(_) if unsealed && (adopted.is_err() || (!durable && zero(p))) => {}
                        Err(e) => panic!("{w}: page {p} holds whole bytes but fails: {e}"),
                    }
                }
                let _ = det2.failures().try_iter().count();
                match det2.adopt(AdoptOptions::new()) {
                    Ok(_) => {}
                    // A trailer torn half-written: the page is damage.
                    Err(Error::TrailerInUse { page, .. }) if torn.contains(&page.0) => continue,
                    Err(e) => panic!("{w}: adopting again: {e}"),
                }
                let reported: Vec<u64> = det2
                    .failures()
                    .try_iter()
                    .map(|f| f.target_page().unwrap().0)
                    .collect();
                assert!(
                    reported.iter().all(|p| torn.contains(p)),
                    "{w}: reported {reported:?}, torn {torn:?}"
                );
                for p in (0..N).filter(|p| !torn.contains(p)) {
                    after.read_page(PageId(p), &mut b).unwrap();
                    match det2.verify(PageId(p), &b) {
                        Ok(()) => {}
                        // (A trailer store's mark is the detector's, not the page's.)
                        Err(_) if zero(p) && det2.is_unallocated(PageId(p)) => {}
                        Err(e) => panic!("{w}: page {p} after adopting again: {e}"),
                    }
                }
            }
            if !fired {
                break;
            }
            at += 1;
        }
        assert!(at >= 8, "{what}: only {at} steps");
    }
}

/// Adoption into a durable table records nothing before the sync that makes
/// the bytes it read durable has succeeded (that sync runs on a helper
/// thread beside the first batch's read): when it fails, adoption fails and
/// the table holds no checksum; adopting again seals every page. Only the
/// durable table has this sync (the trailer placement writes the pages
/// themselves and syncs after; an in-memory table is saved by the host).
#[test]
fn a_failed_first_sync_records_nothing() {
    const N: u64 = 16;
    let store = Arc::new(FaultyStore::new(Arc::new(MemStore::new(PS, N).unwrap())));
    for p in 0..N {
        store.write_page(PageId(p), &host_page(p)).unwrap();
    }
    let files = Arc::new(CrashFiles::new());
    let table = Arc::new(TableConfig::new(PS).open_on(files.clone(), "sums").unwrap());
    let det = CorruptionConfig::new(ChecksumPlacement::Sidecar(table.clone()))
        .build(store.clone())
        .unwrap();
    store.fail_syncs(1);
    let failed = det.adopt(AdoptOptions::new().batch_pages(4));
    assert!(matches!(failed, Err(Error::Io { .. })), "{failed:?}");
    for p in 0..N {
        assert_eq!(table.get(PageId(p)), None, "page {p} was claimed");
    }
    let after = TableConfig::new(PS)
        .open_on(Arc::new(files.crash(None)), "sums")
        .unwrap();
    assert!((0..N).all(|p| after.get(PageId(p)).is_none()));
    assert_eq!(det.adopt(AdoptOptions::new()).unwrap().sealed, N);
}
