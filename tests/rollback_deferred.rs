//! Goal: report-only recovery (`RollbackConfig::defer_recovery`) changes
//! nothing in the store, keeps the crash's losers pending, keeps new
//! transactions off their pages, and loses no committed work: the host's
//! `rollback` or a later normal open rolls them back exactly.
//! Method: a store behind the corruption detector (both checksum
//! placements), a loser and a committed transaction in a journal
//! dropped without stop (a process crash), reopened report-only; bytes
//! compared with a model after each step, through the detector.

use std::sync::Arc;

use selfheal::testing::{both_placements, seal_numbered_pages, CrashDir};
use selfheal::{
    CorruptionConfig, CorruptionDetector, Error, MemStore, PageId, PageStore, RollbackConfig,
    TransactionRollbackManager,
};

const PS: usize = 256;
const PAGES: u64 = 4;

fn open(
    dir: &Arc<CrashDir>,
    det: &Arc<CorruptionDetector>,
    defer: bool,
) -> TransactionRollbackManager {
    RollbackConfig::with_storage(dir.clone())
        .defer_recovery(defer)
        .build(det.clone())
        .unwrap()
}

fn raw_bytes(store: &MemStore) -> Vec<Vec<u8>> {
    (0..PAGES)
        .map(|p| {
            let mut b = vec![0u8; PS];
            store.read_page(PageId(p), &mut b).unwrap();
            b
        })
        .collect()
}

fn verified(det: &CorruptionDetector, p: u64) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    det.read_verified(PageId(p), &mut b).unwrap();
    b
}

#[test]
fn deferred_losers_change_nothing_until_rolled_back_by_the_host_or_the_next_open() {
    for (name, placement) in both_placements(PS) {
        for host_rolls_back in [true, false] {
            let what = format!("{name} host_rolls_back={host_rolls_back}");
            let raw = Arc::new(MemStore::new(PS, PAGES).unwrap());
            let det = Arc::new(
                CorruptionConfig::new(placement.clone())
                    .build(raw.clone())
                    .unwrap(),
            );
            seal_numbered_pages(&det, PAGES).unwrap();
            let dir = Arc::new(CrashDir::new());
            let mgr = open(&dir, &det, false);
            let committed = mgr.begin().unwrap();
            mgr.write(committed, PageId(2), 8, b"committed").unwrap();
            mgr.commit(committed).unwrap();
            let model: Vec<Vec<u8>> = (0..PAGES).map(|p| verified(&det, p)).collect();
            let loser = mgr.begin().unwrap();
            mgr.write(loser, PageId(0), 4, b"loser on zero").unwrap();
            mgr.write(loser, PageId(1), 100, b"loser on one").unwrap();
            mgr.write(loser, PageId(0), 60, b"again").unwrap();
            drop(mgr); // a crash: no commit, no stop

            let before = raw_bytes(&raw);
            assert_ne!(
                verified(&det, 0),
                model[0],
                "{what}: the loser is on the page"
            );
            let mgr = open(&dir, &det, true);
            let r = mgr.recovery_report().clone();
            assert_eq!(
                raw_bytes(&raw),
                before,
                "{what}: the open changed the store"
            );
            assert!(
                r.rolled_back.is_empty() && r.blocked.is_empty(),
                "{what}: {r:?}"
            );
            assert_eq!(r.deferred.len(), 1, "{what}: {r:?}");
            assert_eq!(r.deferred[0].txn, loser);
            assert_eq!(r.deferred[0].pages, vec![PageId(0), PageId(1)]);
            assert_eq!(r.deferred[0].undo_entries, 3);
            assert_eq!((r.undo_entries_applied, r.pages_written), (0, 0));
            assert!(mgr.active_transactions().contains(&loser), "{what}");

            // New work: refused on the loser's pages, fine elsewhere.
            let t = mgr.begin().unwrap();
            for p in [0, 1] {
                let e = mgr.write(t, PageId(p), 0, b"x").unwrap_err();
                assert!(
                    matches!(&e, Error::InvalidArgument { what: "page", reason } if reason.contains(&loser.to_string())),
                    "{what}: {e}"
                );
            }
            mgr.write(t, PageId(3), 16, b"after the crash").unwrap();
            mgr.commit(t).unwrap();
            let mut model = model;
            model[3] = verified(&det, 3);
            assert_eq!(&model[3][16..31], b"after the crash");

            let mgr = if host_rolls_back {
                let out = mgr.rollback(loser).unwrap();
                assert_eq!((out.undo_entries, out.pages_written), (3, 2), "{what}");
                // Its pages are open to new work again.
                let t = mgr.begin().unwrap();
                mgr.write(t, PageId(1), 0, b"y").unwrap();
                mgr.rollback(t).unwrap();
                mgr.stop().unwrap();
                drop(mgr);
                let mgr = open(&dir, &det, false);
                assert!(
                    mgr.recovery_report().rolled_back.is_empty(),
                    "{what}: finished"
                );
                assert!(mgr.recovery_report().deferred.is_empty());
                mgr
            } else {
                drop(mgr); // a crash again, the loser still in flight
                let mgr = open(&dir, &det, false);
                let r = mgr.recovery_report();
                assert_eq!(r.rolled_back.len(), 1, "{what}: {r:?}");
                assert_eq!(r.rolled_back[0].txn, loser);
                mgr
            };
            for p in 0..PAGES {
                assert_eq!(verified(&det, p), model[p as usize], "{what}: page {p}");
            }
            assert!(mgr.active_transactions().is_empty(), "{what}");
            mgr.stop().unwrap();
        }
    }
}
