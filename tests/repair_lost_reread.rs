//! Goal: a batch repair whose write is lost behind a store that also
//! answers the re-read without filling the buffer is never reported
//! repaired. Method: a `PageStore` that, once told to, acknowledges writes
//! and page-run reads without doing them; two fenced pages repaired in one
//! batch from a mirror under both placements; the store's bytes and the
//! reports are checked.

mod repair_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use repair_common::{fence, PS};
use selfheal::repair::RepairConfig;
use selfheal::testing::both_placements;
use selfheal::{CorruptionConfig, MemStore, PageId, PageStore, StoreReplica};

/// A store that, while `lie` is set, acknowledges writes and run reads
/// without doing them.
#[derive(Debug)]
struct Lying {
    inner: Arc<MemStore>,
    lie: AtomicBool,
}

impl PageStore for Lying {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn page_count(&self) -> u64 {
        self.inner.page_count()
    }
    fn read_page(&self, p: PageId, b: &mut [u8]) -> selfheal::Result<()> {
        self.inner.read_page(p, b)
    }
    fn read_pages(&self, first: PageId, b: &mut [u8]) -> selfheal::Result<()> {
        if self.lie.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.read_pages(first, b)
    }
    fn write_page(&self, p: PageId, d: &[u8]) -> selfheal::Result<()> {
        if self.lie.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.write_page(p, d)
    }
    fn sync(&self) -> selfheal::Result<()> {
        self.inner.sync()
    }
}

#[test]
fn a_lost_repair_write_behind_an_unfilled_reread_is_not_reported_repaired() {
    for (name, placement) in both_placements(PS) {
        let inner = Arc::new(MemStore::new(PS, 8).unwrap());
        let local = Arc::new(Lying {
            inner: inner.clone(),
            lie: AtomicBool::new(false),
        });
        let det = Arc::new(
            CorruptionConfig::new(placement.clone())
                .build(local.clone())
                .unwrap(),
        );
        let mirror = Arc::new(MemStore::new(PS, 8).unwrap());
        for p in 0..8u64 {
            let mut b = vec![p as u8 + 1; PS];
            det.write_sealed(PageId(p), &mut b).unwrap();
            mirror.write_page(PageId(p), &b).unwrap();
        }
        for p in [2u64, 3] {
            inner.write_page(PageId(p), &vec![0xEE; PS]).unwrap();
            fence(&det, p);
        }
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        rep.add_replica(Arc::new(StoreReplica::new("m0", mirror)))
            .unwrap();
        local.lie.store(true, Ordering::SeqCst);
        let reports = rep.repair_pages(&[PageId(2), PageId(3)]);
        local.lie.store(false, Ordering::SeqCst);
        for (p, r) in [2u64, 3].into_iter().zip(reports) {
            let mut b = vec![0u8; PS];
            inner.read_page(PageId(p), &mut b).unwrap();
            assert_eq!(b, vec![0xEE; PS], "the write was lost");
            assert!(
                !r.unwrap().is_repaired(),
                "{name}: page {p} reported repaired but still holds junk"
            );
        }
    }
}
