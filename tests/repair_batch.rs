//! Goal: `repair_all` makes a batch of repairs durable with one sync, and
//! keeps the single-page promises: no page is reported (or marked) repaired
//! before its sync, a failed sync repairs nothing, and a host write that
//! lands between the batch's write and its sync stands. Method: a counting
//! fault-injecting store, failing syncs, and a store whose sync runs a host
//! write, under both checksum placements.

mod repair_common;

use std::sync::Arc;

use parking_lot::Mutex;
use repair_common::{fence, placements, Cluster, PS};
use selfheal::corruption::PageState;
use selfheal::repair::{AttemptResult, RepairConfig, RepairOutcome};
use selfheal::testing::Damage;
use selfheal::{
    CorruptionConfig, CorruptionDetector, Error, MemStore, PageId, PageStore, StoreReplica,
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
    for placement in placements() {
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
fn a_failed_batch_sync_reports_no_page_repaired() {
    for placement in placements() {
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
    for placement in placements() {
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
