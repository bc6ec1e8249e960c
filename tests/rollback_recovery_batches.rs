//! Goal: recovery that applies the undo of in-flight transactions in page
//! ranges (because it exceeds the recovery batch) ends exactly where a
//! recovery in one batch ends — same pages, same report — and stays
//! idempotent when it crashes part-way and runs again.
//! Method: random histories of concurrent transactions over a
//! crash-simulating store and journal directory (`CrashStore`, `CrashDir`,
//! small segments, so that the undo spreads over many of them); the crashed
//! image is recovered with the default batch and with a one-byte batch
//! (every page its own batch); then the batched recovery is crashed at each
//! of its operations (`CrashSwitch`, unsynced page writes dropped, applied
//! or torn) and run again, and must reach the one-batch outcome.

use std::sync::Arc;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use selfheal::rollback::{RawPages, RecoveryReport};
use selfheal::testing::{CrashDir, CrashStore, CrashSwitch};
use selfheal::{PageId, PageStore, RollbackConfig, TxnId};

const PS: usize = 128;
const PAGES: u64 = 8;
const SLOTS: usize = 4;
const SLOT: usize = PS / SLOTS;
const SEGMENT: u64 = 400;

/// A random history of up to four concurrent transactions (each writing
/// only its own slot of a page), some committed, some rolled back, the rest
/// in flight at the crash. Returns the crashed store and journal.
fn crashed_history(seed: u64, steps: usize) -> (CrashStore, CrashDir) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let image: Vec<u8> = (0..PS * PAGES as usize).map(|i| (i % 251) as u8).collect();
    let store = Arc::new(CrashStore::from_bytes(PS, image).unwrap());
    let dir = Arc::new(CrashDir::new());
    let mgr = RollbackConfig::with_storage(dir.clone())
        .segment_size_bytes(SEGMENT)
        .buffer_bytes(64)
        .build(RawPages::shared(store.clone()))
        .unwrap();
    let mut slots: [Option<TxnId>; SLOTS] = [None; SLOTS];
    for _ in 0..steps {
        let s = rng.random_range(0..SLOTS);
        let Some(t) = slots[s] else {
            slots[s] = Some(mgr.begin().unwrap());
            continue;
        };
        match rng.random_range(0..10u8) {
            0..=6 => {
                let page = rng.random_range(0..PAGES);
                let off = rng.random_range(0..SLOT);
                let len = rng.random_range(1..=SLOT - off);
                let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                mgr.write(t, PageId(page), s * SLOT + off, &data).unwrap();
            }
            7 => {
                store.sync().unwrap();
                mgr.commit(t).unwrap();
                slots[s] = None;
            }
            _ => {
                mgr.rollback(t).unwrap();
                slots[s] = None;
            }
        }
    }
    let keep = rng.random_range(0..=dir.unsynced_len());
    let crashed = (store.crash(Some(seed)), dir.crash(keep));
    drop(mgr);
    crashed
}

/// Recovers a copy of the crashed image with the given batch; returns the
/// pages and the report.
fn recover(store: &CrashStore, dir: &CrashDir, batch: Option<u64>) -> (Vec<u8>, RecoveryReport) {
    let store = Arc::new(store.crash(None));
    let mut cfg = RollbackConfig::with_storage(Arc::new(dir.crash(0))).segment_size_bytes(SEGMENT);
    if let Some(b) = batch {
        cfg = cfg.recovery_batch_bytes(b);
    }
    let mgr = cfg.build(RawPages::shared(store.clone())).unwrap();
    assert_eq!(
        store.live_bytes(),
        store.durable_bytes(),
        "recovery left unsynced pages"
    );
    (store.live_bytes(), mgr.recovery_report().clone())
}

/// The parts of a report that do not depend on timing.
fn outcome(r: &RecoveryReport) -> String {
    format!(
        "rolled back {:?}, blocked {:?}, applied {}, replaced {} {:?}, pages written {}, records {}, commits {}, aborts {}",
        r.rolled_back,
        r.blocked,
        r.undo_entries_applied,
        r.undo_entries_replaced,
        r.pages_replaced,
        r.pages_written,
        r.records_read,
        r.committed_seen,
        r.aborted_seen
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Batches of page ranges change nothing: same pages, same report.
    #[test]
    fn batched_recovery_matches_one_batch(seed in any::<u64>(), steps in 10usize..120) {
        let (store, dir) = crashed_history(seed, steps);
        let (one, one_report) = recover(&store, &dir, None);
        for batch in [1, 200, 1000] {
            let (got, report) = recover(&store, &dir, Some(batch));
            prop_assert!(got == one, "batch {}: pages differ", batch);
            prop_assert_eq!(outcome(&report), outcome(&one_report), "batch {}", batch);
        }
    }
}

#[test]
fn a_crash_at_every_step_of_a_batched_recovery_then_recovery_again() {
    let mut checked = 0;
    for seed in 0..16u64 {
        let (store, dir) = crashed_history(0xBA7C_0000 ^ seed, 150);
        let (expected, report) = recover(&store, &dir, None);
        // Count the operations of a batched recovery.
        let probe = CrashSwitch::new();
        {
            let st = Arc::new(store.crash(None).with_switch(probe.clone()));
            let d = Arc::new(dir.crash(0).with_switch(probe.clone()));
            RollbackConfig::with_storage(d)
                .segment_size_bytes(SEGMENT)
                .recovery_batch_bytes(1)
                .build(RawPages::shared(st))
                .unwrap();
        }
        let ops = probe.ops();
        // Histories whose crash left fewer than two pages to restore have
        // no batches to crash between.
        if report.pages_written < 2 {
            continue;
        }
        for m in 0..ops {
            let s = CrashSwitch::new();
            s.arm_at(m);
            let st = Arc::new(store.crash(None).with_switch(s.clone()));
            let d = Arc::new(dir.crash(0).with_switch(s.clone()));
            let r = RollbackConfig::with_storage(d.clone())
                .segment_size_bytes(SEGMENT)
                .recovery_batch_bytes(1)
                .build(RawPages::shared(st.clone()));
            drop(r);
            assert!(s.fired(), "seed {seed}: op {m} of {ops} never came");
            for keep in [0, d.unsynced_len()] {
                let (got, _) = recover(&st.crash(Some(m ^ seed)), &d.crash(keep), Some(1));
                assert!(
                    got == expected,
                    "seed {seed}: a crash at op {m} of {ops} of a batched recovery (keeping {keep} unsynced journal bytes), then recovery, left other pages than one recovery"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} crash points had work to crash"
    );
}
