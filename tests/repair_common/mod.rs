//! Shared rig of the repair integration tests: a local store behind a
//! detector under either checksum placement, mirrors that receive the host's
//! writes (or not, to make them lag), and page LSNs in the first 8 bytes of
//! every page. A "restart" is a new detector over the same store and table.

#![allow(dead_code)]

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use selfheal::corruption::{ExpectedLsnFn, PageLsnFn};
use selfheal::testing::FaultyStore;
use selfheal::{
    ChecksumPlacement, CorruptionConfig, CorruptionDetector, Lsn, MemStore, PageId, PageSource,
    PageStore, StoreReplica,
};

pub const PS: usize = 4096;

/// The page LSN lives in the first 8 bytes of every page (0: none).
pub fn lsn_reader() -> PageLsnFn {
    Arc::new(|b: &[u8]| {
        let v = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        (v != 0).then_some(Lsn(v))
    })
}

/// A host's storage: the local store, its checksum placement, its mirrors,
/// and what the host last wrote to each page (LSN and sealed bytes).
pub struct Cluster {
    pub placement: ChecksumPlacement,
    pub raw: Arc<FaultyStore>,
    pub mirrors: Vec<Arc<MemStore>>,
    pub written: Mutex<Vec<(u64, Vec<u8>)>>,
}

impl Cluster {
    pub fn new(placement: ChecksumPlacement, pages: u64, mirrors: usize) -> Cluster {
        Cluster {
            placement,
            raw: Arc::new(FaultyStore::new(Arc::new(
                MemStore::new(PS, pages).unwrap(),
            ))),
            mirrors: (0..mirrors)
                .map(|_| Arc::new(MemStore::new(PS, pages).unwrap()))
                .collect(),
            written: Mutex::new(vec![(0, Vec::new()); pages as usize]),
        }
    }

    /// A detector over the local store as a freshly started process builds
    /// it: page LSNs readable, nothing remembered about earlier writes, and
    /// optionally the host's answer for the LSN each page must have.
    pub fn detector(&self, expected: Option<ExpectedLsnFn>) -> Arc<CorruptionDetector> {
        let mut cfg = CorruptionConfig::new(self.placement.clone()).page_lsn(lsn_reader());
        if let Some(f) = expected {
            cfg = cfg.expected_page_lsn(f);
        }
        Arc::new(cfg.build(self.raw.clone()).unwrap())
    }

    /// The host's answer to "which LSN must page p have": its own record of
    /// the last write (as a WAL or page map would tell it after a restart).
    pub fn expected_lsn(self: &Arc<Self>) -> ExpectedLsnFn {
        let c = self.clone();
        Arc::new(move |p: PageId| {
            let w = c.written.lock();
            w.get(p.0 as usize)
                .map(|(lsn, _)| *lsn)
                .filter(|&l| l != 0)
                .map(Lsn)
        })
    }

    /// The host writes page `p` at `lsn` through `det`, and mirrors `to` get
    /// the same bytes (the others keep what they had: they lag).
    pub fn write(&self, det: &CorruptionDetector, p: u64, lsn: u64, fill: u8, to: &[usize]) {
        let mut b = vec![fill; PS];
        b[..8].copy_from_slice(&lsn.to_le_bytes());
        det.write_sealed(PageId(p), &mut b).unwrap();
        for &m in to {
            self.mirrors[m].write_page(PageId(p), &b).unwrap();
        }
        self.written.lock()[p as usize] = (lsn, b);
    }

    /// The bytes the host last wrote to page `p`.
    pub fn current(&self, p: u64) -> Vec<u8> {
        self.written.lock()[p as usize].1.clone()
    }

    /// The local page's raw bytes.
    pub fn local(&self, p: u64) -> Vec<u8> {
        let mut b = vec![0u8; PS];
        self.raw.read_page(PageId(p), &mut b).unwrap();
        b
    }

    /// A replica named `m{i}` over mirror `i`.
    pub fn replica(&self, i: usize) -> StoreReplica {
        StoreReplica::new(format!("m{i}"), self.mirrors[i].clone())
    }
}

/// A fallback source (a backup) serving the pages of a store, honouring the
/// LSN bound it is asked with (by the page LSN in the first 8 bytes).
#[derive(Debug)]
pub struct StoreSource {
    pub name: &'static str,
    pub store: Arc<MemStore>,
}

impl StoreSource {
    /// A source holding the host's current copy of every page of `c`.
    pub fn current(name: &'static str, c: &Cluster) -> StoreSource {
        let pages = c.written.lock().len() as u64;
        let store = Arc::new(MemStore::new(PS, pages).unwrap());
        for (p, (_, bytes)) in c.written.lock().iter().enumerate() {
            if !bytes.is_empty() {
                store.write_page(PageId(p as u64), bytes).unwrap();
            }
        }
        StoreSource { name, store }
    }
}

impl PageSource for StoreSource {
    fn name(&self) -> String {
        self.name.to_owned()
    }
    fn read_page(
        &self,
        page: PageId,
        not_older_than: Option<Lsn>,
        buf: &mut [u8],
    ) -> selfheal::Result<bool> {
        self.store.read_page(page, buf)?;
        Ok(not_older_than.is_none_or(|n| lsn_reader()(buf).is_some_and(|l| l >= n)))
    }
}

/// Fences page `p` through a verified read that must fail as corruption.
pub fn fence(det: &CorruptionDetector, p: u64) {
    let mut b = vec![0u8; PS];
    let e = det.read_verified(PageId(p), &mut b).unwrap_err();
    assert!(e.is_corruption(), "{e}");
}

/// Runs `f` on a thread and fails the test if it does not return within
/// `limit` (a hung call would otherwise hang the test run).
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("selfheal-test-bounded".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the call did not return within {limit:?}"))
}
