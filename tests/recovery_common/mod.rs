//! The rig shared by the recovery manager's test files: sealed pages over a
//! `MemStore`, a mirror replica kept byte-equal, damage behind the
//! detector's back, and reads that find it.
#![allow(dead_code)]

use std::sync::Arc;

use selfheal::testing::Damage;
use selfheal::{
    AutoRecoveryManager, ChecksumPlacement, MemStore, PageId, PageStore, RecoveryConfig,
    StoreReplica,
};

pub const PS: usize = 4096;

pub fn page(fill: u8) -> Vec<u8> {
    let mut b = vec![fill; PS];
    b[0] = 0x5a;
    b
}

pub fn bytes(store: &dyn PageStore, p: u64) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    store.read_page(PageId(p), &mut b).unwrap();
    b
}

pub fn all_bytes(store: &dyn PageStore) -> Vec<Vec<u8>> {
    (0..store.page_count()).map(|p| bytes(store, p)).collect()
}

/// A manager over `pages` sealed pages with a mirror replica; returns the
/// raw store, the mirror and the (not started) manager.
pub fn rig(
    placement: ChecksumPlacement,
    pages: u64,
    dir: &std::path::Path,
    tune: impl FnOnce(RecoveryConfig) -> RecoveryConfig,
) -> (Arc<MemStore>, Arc<MemStore>, AutoRecoveryManager) {
    rig_with_replica(
        placement,
        pages,
        dir,
        |mirror| Arc::new(StoreReplica::new("mirror", mirror)),
        tune,
    )
}

/// [`rig`] with the replica over the mirror made by `replica`.
pub fn rig_with_replica(
    placement: ChecksumPlacement,
    pages: u64,
    dir: &std::path::Path,
    replica: impl FnOnce(Arc<MemStore>) -> Arc<dyn selfheal::Replica>,
    tune: impl FnOnce(RecoveryConfig) -> RecoveryConfig,
) -> (Arc<MemStore>, Arc<MemStore>, AutoRecoveryManager) {
    let raw = Arc::new(MemStore::new(PS, pages).unwrap());
    let mirror = Arc::new(MemStore::new(PS, pages).unwrap());
    let cfg = RecoveryConfig::new(raw.clone(), dir)
        .placement(placement)
        .replica(replica(mirror.clone()))
        .without_scrub()
        // The failing read reports on the bus and a recovery thread heals
        // (`tune` may turn heal on read back on).
        .heal_on_read(false);
    let m = tune(cfg).build().unwrap();
    for p in 0..pages {
        m.detector()
            .write_sealed(PageId(p), &mut page((p % 250) as u8 + 1))
            .unwrap();
        mirror
            .write_page(PageId(p), &bytes(raw.as_ref(), p))
            .unwrap();
    }
    (raw, mirror, m)
}

pub fn damage(raw: &MemStore, p: u64) {
    let mut b = bytes(raw, p);
    Damage::BitFlip { byte: 100, bit: 3 }.apply(&mut b);
    raw.write_page(PageId(p), &b).unwrap();
}

/// A verified read that finds the damage (and reports it on the bus).
pub fn read_finds(m: &AutoRecoveryManager, p: u64) {
    let mut b = vec![0u8; PS];
    assert!(m
        .detector()
        .read_verified(PageId(p), &mut b)
        .unwrap_err()
        .is_corruption());
}

/// Panics in `supports` while `panics` is above zero (counting down).
#[derive(Debug, Default)]
pub struct PanickyHost {
    pub panics: std::sync::atomic::AtomicUsize,
    pub restarts: std::sync::atomic::AtomicUsize,
}

impl selfheal::HostActions for PanickyHost {
    fn supports(&self, action: selfheal::HostAction) -> bool {
        if self
            .panics
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            panic!("the host's supports() panicked");
        }
        action == selfheal::HostAction::RestartComponent
    }

    fn restart_component(&self, _: &str) -> selfheal::Result<()> {
        self.restarts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}
