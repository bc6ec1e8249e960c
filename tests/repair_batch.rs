//! Goal: `repair_all` and `repair_pages` make a batch of repairs durable
//! with one sync, and keep the single-page promises: no page is reported (or
//! marked) repaired before its sync, a failed sync repairs nothing, a host
//! write that lands between the batch's write and its sync stands, so does
//! one that lands between the batch's recheck and its write, the recheck
//! reads runs of fenced pages (not page by page), a run of pages whose
//! write fails is written again page by page (only a page whose own write
//! fails is not repaired), and a
//! crash mid-batch leaves every page old or new, never a torn page that
//! verifies. Method: a counting fault-injecting store (over memory and over
//! a real file), failing syncs, a store whose sync runs a host write, and a
//! crash-simulating store killed at every step of a batch, a replica whose
//! read runs a host write and a store counting its reads, under both
//! checksum placements.

mod repair_common;

use std::sync::Arc;

use parking_lot::Mutex;
use repair_common::{fence, Cluster, PS};
use selfheal::corruption::PageState;
use selfheal::repair::{AttemptResult, RepairConfig, RepairOutcome};
use selfheal::testing::{
    both_placements, CrashStore, CrashSwitch, Damage, FaultyStore, WriteFault,
};
use selfheal::{
    CorruptionConfig, CorruptionDetector, Error, FileStore, MemStore, PageId, PageStore,
    StoreReplica,
};

const PAGES: u64 = 48;

fn damaged_cluster(placement: selfheal::ChecksumPlacement) -> (Cluster, Arc<CorruptionDetector>) {
    let c = Cluster::new(placement, PAGES, 1);
    let det = c.detector(None);
    for p in 0..PAGES {
        c.write(&det, p, p + 1, p as u8 ^ 0xA5, &[0]);
    }
    for p in (0..PAGES).filter(|p| p % 3 != 1) {
        c.raw.damage(PageId(p), Damage::Junk { seed: p }).unwrap();
        fence(&det, p);
    }
    (c, det)
}

#[test]
fn repair_all_syncs_once_per_batch() {
    for (_, placement) in both_placements(PS) {
        let (c, det) = damaged_cluster(placement);
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        rep.add_replica(Arc::new(c.replica(0))).unwrap();
        let before = c.raw.counts().syncs;
        let reports = rep.repair_all();
        assert_eq!(reports.len(), 32);
        assert!(reports.iter().all(|r| r.is_repaired()));
        assert_eq!(c.raw.counts().syncs - before, 1, "one sync for the batch");
        for p in 0..PAGES {
            assert_eq!(c.local(p), c.current(p), "page {p}");
        }
        // A batch never holds more than `repair_batch_pages` pages.
        for p in (0..PAGES).filter(|p| p % 3 != 1) {
            c.raw.damage(PageId(p), Damage::Zero).unwrap();
            fence(&det, p);
        }
        let rep = RepairConfig::new()
            .repair_batch_pages(10)
            .build(det.clone())
            .unwrap();
        rep.add_replica(Arc::new(c.replica(0))).unwrap();
        let before = c.raw.counts().syncs;
        assert!(rep.repair_pending().iter().all(|r| r.is_repaired()));
        assert_eq!(
            c.raw.counts().syncs - before,
            4,
            "32 pages in batches of 10"
        );
    }
}

#[test]
fn a_failed_run_write_is_written_again_page_by_page() {
    for (_, placement) in both_placements(PS) {
        // Pages 5 and 6 are a run. A one-shot fault: the run's write fails
        // at page 6, the page's own write that follows succeeds, and every
        // page is repaired.
        let (c, det) = damaged_cluster(placement.clone());
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        rep.add_replica(Arc::new(c.replica(0))).unwrap();
        c.raw.fail_next_write(Some(PageId(6)), WriteFault::Eio);
        let reports = rep.repair_all();
        assert!(reports.iter().all(|r| r.is_repaired()), "{reports:?}");
        for p in 0..PAGES {
            assert_eq!(c.local(p), c.current(p), "page {p}");
        }
        // Two faults: page 6's own write fails too. Only page 6 fails (its
        // one replica has no other copy); page 5, in its run, is repaired.
        let (c, det) = damaged_cluster(placement);
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        rep.add_replica(Arc::new(c.replica(0))).unwrap();
        c.raw.fail_next_write(Some(PageId(6)), WriteFault::Eio);
        c.raw.fail_next_write(Some(PageId(6)), WriteFault::Eio);
        let reports = rep.repair_all();
        for r in &reports {
            if r.page == PageId(6) {
                assert!(
                    matches!(r.outcome, RepairOutcome::Irreparable { .. }),
                    "{r:?}"
                );
                assert!(matches!(
                    r.attempts[0].result,
                    AttemptResult::CommitFailed(Error::Io { .. })
                ));
            } else {
                assert!(r.is_repaired(), "{r:?}");
                assert_eq!(c.local(r.page.0), c.current(r.page.0));
            }
        }
        assert_eq!(det.page_state(PageId(6)), Some(PageState::Irreparable));
    }
}

#[test]
fn a_failed_batch_sync_reports_no_page_repaired() {
    for (_, placement) in both_placements(PS) {
        let (c, det) = damaged_cluster(placement);
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        rep.add_replica(Arc::new(c.replica(0))).unwrap();
        c.raw.fail_syncs(1);
        let reports = rep.repair_all();
        assert_eq!(reports.len(), 32);
        for r in &reports {
            assert!(!r.is_repaired(), "page {} reported repaired", r.page);
            assert_ne!(det.page_state(r.page), Some(PageState::Repaired));
            assert!(
                r.attempts
                    .iter()
                    .any(|a| matches!(&a.result, AttemptResult::CommitFailed(Error::Io { .. }))),
                "{:?}",
                r.attempts
            );
        }
        // The pages stay fenced until the next pass settles them: here the
        // writes did reach the store (only the sync failed), so the re-read
        // finds them good (`NotNeeded`, unfenced); with the bytes lost they
        // would be repaired again.
        for r in &reports {
            assert!(det.page_state(r.page).is_some_and(|s| s.is_fenced()));
        }
        let reports = rep.repair_all();
        assert_eq!(reports.len(), 32);
        assert!(reports
            .iter()
            .all(|r| r.is_repaired() || r.outcome == RepairOutcome::NotNeeded));
        let mut b = vec![0u8; PS];
        for p in 0..PAGES {
            det.read_verified(PageId(p), &mut b).unwrap();
            assert_eq!(b, c.current(p), "page {p}");
        }
    }
}

/// A store whose next sync first runs a hook (a host thread acting while the
/// repairer syncs).
struct HookedSync {
    inner: Arc<MemStore>,
    hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for HookedSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedSync").finish_non_exhaustive()
    }
}

impl PageStore for HookedSync {
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
        self.inner.write_page(page, data)
    }
    fn sync(&self) -> selfheal::Result<()> {
        let hook = self.hook.lock().take();
        if let Some(h) = hook {
            h();
        }
        self.inner.sync()
    }
}

#[test]
fn a_host_write_between_the_batch_write_and_its_sync_stands() {
    for (_, placement) in both_placements(PS) {
        let store = Arc::new(HookedSync {
            inner: Arc::new(MemStore::new(PS, 8).unwrap()),
            hook: Mutex::new(None),
        });
        let det = Arc::new(
            CorruptionConfig::new(placement.clone())
                .build(store.clone())
                .unwrap(),
        );
        let mirror = Arc::new(MemStore::new(PS, 8).unwrap());
        for p in 0..8u64 {
            let mut b = vec![p as u8 + 1; PS];
            det.write_sealed(PageId(p), &mut b).unwrap();
            mirror.write_page(PageId(p), &b).unwrap();
        }
        let batch = [1u64, 4, 6];
        for &p in &batch {
            store.inner.write_page(PageId(p), &vec![0xEE; PS]).unwrap();
            fence(&det, p);
        }
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        rep.add_replica(Arc::new(StoreReplica::new("m0", mirror)))
            .unwrap();
        let seen: Arc<Mutex<Vec<Option<PageState>>>> = Arc::default();
        {
            let det = Arc::downgrade(&det);
            let seen = seen.clone();
            *store.hook.lock() = Some(Box::new(move || {
                let det = det.upgrade().unwrap();
                // Nothing of the batch is marked repaired before its sync.
                seen.lock()
                    .extend(batch.iter().map(|&p| det.page_state(PageId(p))));
                det.write_sealed(PageId(4), &mut vec![0x44; PS]).unwrap();
            }));
        }
        let reports = rep.repair_all();
        assert_eq!(
            *seen.lock(),
            vec![Some(PageState::Repairing); 3],
            "state of the batch at its sync"
        );
        let outcome = |p: u64| {
            reports
                .iter()
                .find(|r| r.page == PageId(p))
                .map(|r| r.outcome.clone())
        };
        assert!(matches!(outcome(1), Some(RepairOutcome::Repaired { .. })));
        assert_eq!(outcome(4), Some(RepairOutcome::Superseded));
        assert!(matches!(outcome(6), Some(RepairOutcome::Repaired { .. })));
        let mut b = vec![0u8; PS];
        det.read_verified(PageId(4), &mut b).unwrap();
        assert_eq!(b[0], 0x44, "the host's write stands");
        for p in [1u64, 6] {
            det.read_verified(PageId(p), &mut b).unwrap();
            assert_eq!(b[0], p as u8 + 1);
        }
    }
}

#[test]
fn repair_pages_of_1000_pages_on_a_file_store_syncs_at_most_10_times() {
    const N: u64 = 1000;
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let file = FileStore::create(dir.path().join("pages"), PS, N).unwrap();
        let store = Arc::new(FaultyStore::new(Arc::new(file)));
        let det = Arc::new(
            CorruptionConfig::new(placement.clone())
                .build(store.clone())
                .unwrap(),
        );
        let mirror = Arc::new(MemStore::new(PS, N).unwrap());
        let mut good = Vec::new();
        for p in 0..N {
            let mut b = vec![(p % 251) as u8 + 1; PS];
            b[..8].copy_from_slice(&p.to_le_bytes());
            det.write_sealed(PageId(p), &mut b).unwrap();
            mirror.write_page(PageId(p), &b).unwrap();
            good.push(b);
        }
        det.sync().unwrap();
        for p in 0..N {
            store.damage(PageId(p), Damage::Junk { seed: p }).unwrap();
            fence(&det, p);
        }
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        rep.add_replica(Arc::new(StoreReplica::new("m0", mirror)))
            .unwrap();
        // Asked in an order that is not page order.
        let pages: Vec<PageId> = (0..N).map(|i| PageId((i * 7) % N)).collect();
        let before = store.counts().syncs;
        let reports = rep.repair_pages(&pages);
        let syncs = store.counts().syncs - before;
        assert!(syncs <= 10, "{syncs} syncs for {N} pages");
        assert_eq!(reports.len(), N as usize);
        for (r, page) in reports.iter().zip(&pages) {
            let r = r.as_ref().unwrap();
            assert_eq!(r.page, *page);
            assert!(r.is_repaired(), "page {page}: {:?}", r.outcome);
        }
        // On the file, as a restarted process reads it.
        drop(rep);
        drop(det);
        let reopened = FileStore::open(dir.path().join("pages"), PS).unwrap();
        let mut b = vec![0u8; PS];
        for p in 0..N {
            reopened.read_page(PageId(p), &mut b).unwrap();
            assert!(b == good[p as usize], "page {p}");
        }
    }
}

/// What a crash at mutating operation `crash_at` of a `repair_pages` batch
/// leaves, with the unsynced page writes kept, lost or torn as `seed`
/// picks: every page verifies only as the copy, every page reported repaired
/// holds it durably, and the pages that do not verify are repaired after the
/// restart.
fn crash_mid_batch(placement: &selfheal::ChecksumPlacement, crash_at: u64, seed: u64) {
    const N: u64 = 24;
    let switch = CrashSwitch::new();
    let store = Arc::new(CrashStore::new(PS, N).unwrap().with_switch(switch.clone()));
    let det = Arc::new(
        CorruptionConfig::new(placement.clone())
            .build(store.clone())
            .unwrap(),
    );
    let mirror = Arc::new(MemStore::new(PS, N).unwrap());
    let mut good = Vec::new();
    for p in 0..N {
        let mut b = vec![p as u8 ^ 0x5A; PS];
        b[..8].copy_from_slice(&(p + 1).to_le_bytes());
        det.write_sealed(PageId(p), &mut b).unwrap();
        mirror.write_page(PageId(p), &b).unwrap();
        good.push(b);
    }
    // Every other page damaged, durably.
    let damaged: Vec<PageId> = (0..N).filter(|p| p.is_multiple_of(2)).map(PageId).collect();
    for p in &damaged {
        let mut junk = vec![0u8; PS];
        Damage::Junk { seed: p.0 }.apply(&mut junk);
        store.write_page(*p, &junk).unwrap();
    }
    det.sync().unwrap();
    for p in &damaged {
        fence(&det, p.0);
    }
    let rep = RepairConfig::new().build(det.clone()).unwrap();
    rep.add_replica(Arc::new(StoreReplica::new("m0", mirror.clone())))
        .unwrap();
    switch.arm_at(switch.ops() + crash_at);
    let reports = rep.repair_pages(&damaged);
    let crashed = Arc::new(store.crash(Some(seed)));
    switch.disarm();
    drop(rep);
    drop(det);
    let durable = crashed.live_bytes();
    let page = |p: u64| &durable[p as usize * PS..(p as usize + 1) * PS];
    for (r, p) in reports.iter().zip(&damaged) {
        if r.as_ref().is_ok_and(|r| r.is_repaired()) {
            assert!(
                page(p.0) == &good[p.0 as usize][..],
                "page {p} reported repaired but not durable (crash at {crash_at}, seed {seed})"
            );
        }
    }
    // The restarted process: a page that verifies is exactly the copy.
    let det2 = Arc::new(
        CorruptionConfig::new(placement.clone())
            .build(crashed.clone())
            .unwrap(),
    );
    let mut b = vec![0u8; PS];
    let mut bad = Vec::new();
    for p in 0..N {
        match det2.read_verified(PageId(p), &mut b) {
            Ok(()) => assert!(
                b == good[p as usize],
                "page {p} verifies with other bytes (crash at {crash_at}, seed {seed})"
            ),
            Err(e) => {
                assert!(e.is_corruption(), "{e}");
                assert!(p.is_multiple_of(2), "undamaged page {p} lost");
                bad.push(PageId(p));
            }
        }
    }
    let rep2 = RepairConfig::new().build(det2.clone()).unwrap();
    rep2.add_replica(Arc::new(StoreReplica::new("m0", mirror)))
        .unwrap();
    for r in rep2.repair_pages(&bad) {
        assert!(r.unwrap().is_repaired());
    }
    for p in 0..N {
        det2.read_verified(PageId(p), &mut b).unwrap();
        assert!(b == good[p as usize], "page {p} after the second repair");
    }
}

#[test]
fn a_crash_mid_batch_leaves_each_page_old_or_new() {
    for (_, placement) in both_placements(PS) {
        // 12 writes and one sync: a crash before each of them, and after.
        for crash_at in 0..=14 {
            for seed in 0..3 {
                crash_mid_batch(&placement, crash_at, seed);
            }
        }
    }
}

/// A store that counts single-page and range reads and runs a hook (once)
/// when `hook_page` is read.
struct HookedRead {
    inner: Arc<MemStore>,
    hook_page: PageId,
    hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    single_reads: std::sync::atomic::AtomicU64,
    range_reads: std::sync::atomic::AtomicU64,
}

impl HookedRead {
    fn new(pages: u64, hook_page: u64) -> Arc<HookedRead> {
        Arc::new(HookedRead {
            inner: Arc::new(MemStore::new(PS, pages).unwrap()),
            hook_page: PageId(hook_page),
            hook: Mutex::new(None),
            single_reads: Default::default(),
            range_reads: Default::default(),
        })
    }
}

impl std::fmt::Debug for HookedRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedRead").finish_non_exhaustive()
    }
}

impl PageStore for HookedRead {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn page_count(&self) -> u64 {
        self.inner.page_count()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> selfheal::Result<()> {
        use std::sync::atomic::Ordering;
        self.single_reads.fetch_add(1, Ordering::Relaxed);
        if page == self.hook_page {
            let hook = self.hook.lock().take();
            if let Some(h) = hook {
                h();
            }
        }
        self.inner.read_page(page, buf)
    }
    fn read_pages(&self, first: PageId, buf: &mut [u8]) -> selfheal::Result<()> {
        self.range_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.read_pages(first, buf)
    }
    fn write_page(&self, page: PageId, data: &[u8]) -> selfheal::Result<()> {
        self.inner.write_page(page, data)
    }
    fn sync(&self) -> selfheal::Result<()> {
        self.inner.sync()
    }
}

#[test]
fn a_host_write_between_the_batch_recheck_and_its_write_stands() {
    for (_, placement) in both_placements(PS) {
        let local = Arc::new(MemStore::new(PS, 8).unwrap());
        let det = Arc::new(
            CorruptionConfig::new(placement.clone())
                .build(local.clone())
                .unwrap(),
        );
        // The mirror runs a host write of page 4 when the repair reads its
        // copy of page 4: after the batch's recheck, before its commit.
        let mirror = HookedRead::new(8, 4);
        for p in 0..8u64 {
            let mut b = vec![p as u8 + 1; PS];
            det.write_sealed(PageId(p), &mut b).unwrap();
            mirror.inner.write_page(PageId(p), &b).unwrap();
        }
        let batch = [3u64, 4, 5];
        for &p in &batch {
            local.write_page(PageId(p), &vec![0xEE; PS]).unwrap();
            fence(&det, p);
        }
        {
            let det = Arc::downgrade(&det);
            *mirror.hook.lock() = Some(Box::new(move || {
                let det = det.upgrade().unwrap();
                det.write_sealed(PageId(4), &mut vec![0x44; PS]).unwrap();
            }));
        }
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        rep.add_replica(Arc::new(StoreReplica::new("m0", mirror.clone())))
            .unwrap();
        let reports = rep.repair_all();
        assert!(mirror.hook.lock().is_none(), "the hook ran");
        let outcome = |p: u64| {
            reports
                .iter()
                .find(|r| r.page == PageId(p))
                .map(|r| r.outcome.clone())
        };
        assert!(matches!(outcome(3), Some(RepairOutcome::Repaired { .. })));
        assert_eq!(outcome(4), Some(RepairOutcome::Superseded));
        assert!(matches!(outcome(5), Some(RepairOutcome::Repaired { .. })));
        let mut b = vec![0u8; PS];
        det.read_verified(PageId(4), &mut b).unwrap();
        assert_eq!((b[0], b[PS / 2]), (0x44, 0x44), "the host's write stands");
        for p in [3u64, 5] {
            det.read_verified(PageId(p), &mut b).unwrap();
            assert_eq!(b[0], p as u8 + 1);
        }
    }
}

#[test]
fn a_batch_rechecks_a_run_of_fenced_pages_with_one_read() {
    for (_, placement) in both_placements(PS) {
        let local = HookedRead::new(PAGES, u64::MAX);
        let det = Arc::new(
            CorruptionConfig::new(placement.clone())
                .build(local.clone())
                .unwrap(),
        );
        let mirror = Arc::new(MemStore::new(PS, PAGES).unwrap());
        for p in 0..PAGES {
            let mut b = vec![p as u8 ^ 0x5A; PS];
            det.write_sealed(PageId(p), &mut b).unwrap();
            mirror.write_page(PageId(p), &b).unwrap();
        }
        // Pages 8..16 fenced: 10 is fine again (the fault went away), 12
        // was freed by the host, the others are damaged.
        let mut keep = vec![0u8; PS];
        local.inner.read_page(PageId(10), &mut keep).unwrap();
        for p in 8..16u64 {
            local.inner.write_page(PageId(p), &vec![0xEE; PS]).unwrap();
            fence(&det, p);
        }
        local.inner.write_page(PageId(10), &keep).unwrap();
        det.forget(PageId(12)).unwrap();
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        rep.add_replica(Arc::new(StoreReplica::new("m0", mirror)))
            .unwrap();
        let singles = local
            .single_reads
            .load(std::sync::atomic::Ordering::Relaxed);
        let reports = rep.repair_all();
        assert_eq!(
            local
                .single_reads
                .load(std::sync::atomic::Ordering::Relaxed),
            singles,
            "the recheck and the confirming re-read read runs, not pages"
        );
        assert_eq!(reports.len(), 7, "page 12 is no longer fenced");
        for r in &reports {
            match r.page.0 {
                10 => assert_eq!(r.outcome, RepairOutcome::NotNeeded),
                _ => assert!(r.is_repaired(), "page {}: {:?}", r.page, r.outcome),
            }
        }
        assert_eq!(det.page_state(PageId(10)), Some(PageState::Repaired));
        let mut b = vec![0u8; PS];
        for p in (8..16u64).filter(|&p| p != 12) {
            det.read_verified(PageId(p), &mut b).unwrap();
            assert_eq!(b[0], p as u8 ^ 0x5A, "page {p}");
        }
    }
}
