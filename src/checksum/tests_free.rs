//! Free marks in the durable table: a page the host marked unallocated
//! stays so through a reopen, a crash and a compaction until a write to it
//! settles; a crash at every step of a mark leaves the page free or as it
//! was; a lost write to a page without a checksum is resolved back to what
//! the page had.

use std::sync::Arc;

use super::tests::{accepts, open, page, sync, unallocated, write, PS};
use super::*;
use crate::error::Error;
use crate::testing::{CrashFiles, CrashSwitch};
use crate::types::PageId;

#[test]
fn free_marks_survive_reopen_and_compaction() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    for p in 0..6 {
        write(&t, p, 1, true);
    }
    sync(&t);
    write(&t, 2, 2, true);
    t.mark_free(PageId(1)).unwrap(); // settled
    t.mark_free(PageId(2)).unwrap(); // with an unsettled version
    t.mark_free(PageId(9)).unwrap(); // past the end
    let check = |t: &ChecksumTable, what: &str| {
        for p in [1, 2, 9] {
            assert!(t.is_free(PageId(p)), "{what}: page {p}");
            for fill in [1, 2] {
                assert!(unallocated(t, p, fill), "{what}: page {p}, bytes {fill}");
            }
        }
        for p in [0, 3, 4, 5] {
            assert!(
                accepts(t, p, 1) && !t.is_free(PageId(p)),
                "{what}: page {p}"
            );
        }
    };
    check(&t, "live");
    assert_eq!(t.stats().unsettled_versions, 0, "page 2's version went");
    for seed in [None, Some(1), Some(2)] {
        check(&open(&Arc::new(files.crash(seed))), "reopened");
    }
    t.compact().unwrap();
    check(&open(&Arc::new(files.crash(Some(3)))), "after a compaction");
    // A free page written again is in use once the write returned; a
    // failed write leaves it free (its bytes may be the new ones: accepted).
    write(&t, 2, 8, false);
    assert!(t.is_free(PageId(2)) && accepts(&t, 2, 8) && unallocated(&t, 2, 1));
    write(&t, 1, 7, true);
    assert!(accepts(&t, 1, 7) && !t.is_free(PageId(1)));
    assert!(matches!(
        t.verify(PageId(1), &page(1)),
        Err(Error::ChecksumMismatch { .. })
    ));
    // After a crash before the write settles, the page may hold its old
    // bytes: it is free again unless it holds the new ones.
    let after = open(&Arc::new(files.crash(Some(4))));
    assert!(accepts(&after, 1, 7) && after.is_free(PageId(1)) && unallocated(&after, 1, 1));
    t.compact().unwrap();
    let after = open(&Arc::new(files.crash(Some(5))));
    assert!(accepts(&after, 1, 7) && unallocated(&after, 1, 1));
    sync(&t);
    assert!(!t.is_free(PageId(1)) && accepts(&t, 1, 7));
    assert!(matches!(
        t.verify(PageId(1), &page(1)),
        Err(Error::ChecksumMismatch { .. })
    ));
    t.flush().unwrap();
    let after = open(&Arc::new(files.crash(Some(6))));
    assert!(!after.is_free(PageId(1)) && accepts(&after, 1, 7));
    assert!(after.is_free(PageId(2)) && after.is_free(PageId(9)));
    t.compact().unwrap();
    let after = open(&Arc::new(files.crash(Some(7))));
    assert!(!after.is_free(PageId(1)) && after.is_free(PageId(2)));
}

#[test]
fn a_crash_at_every_step_of_a_free_mark_leaves_the_page_free_or_as_it_was() {
    let mut step = 0;
    loop {
        let switch = CrashSwitch::new();
        let files = Arc::new(CrashFiles::new().with_switch(switch.clone()));
        let t = open(&files);
        write(&t, 0, 1, true);
        write(&t, 1, 1, true);
        sync(&t);
        write(&t, 1, 2, true);
        switch.arm_at(switch.ops() + step);
        let done = t.mark_free(PageId(1)).is_ok() && t.mark_free(PageId(0)).is_ok();
        for seed in [None, Some(step), Some(step + 1000)] {
            let after = open(&Arc::new(files.crash(seed)));
            for (p, fills) in [(0u64, &[1u8][..]), (1, &[1, 2])] {
                let free = after.is_free(PageId(p));
                for &fill in fills {
                    let ok = if free {
                        unallocated(&after, p, fill)
                    } else {
                        accepts(&after, p, fill)
                    };
                    assert!(
                        ok,
                        "step {step} seed {seed:?}: page {p} (free: {free}), bytes {fill}"
                    );
                }
                assert!(
                    free || !done,
                    "step {step}: returned, but page {p} is not free"
                );
            }
        }
        if done {
            break;
        }
        step += 1;
    }
    assert!(step >= 2, "two marks, each with an fsync: saw {step} steps");
}

#[test]
fn resolving_a_lost_write_of_a_page_without_a_checksum_restores_what_it_had() {
    use crate::host::PageStore;
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    t.mark_free(PageId(1)).unwrap();
    write(&t, 1, 5, true);
    write(&t, 2, 6, true);
    let crashed = Arc::new(files.crash(None));
    let t = open(&crashed);
    // The writes were lost: the pages hold their bytes from before.
    let store = crate::store::MemStore::new(PS, 3).unwrap();
    store.write_page(PageId(0), &page(1)).unwrap();
    store.write_page(PageId(1), &page(3)).unwrap();
    store.write_page(PageId(2), &page(4)).unwrap();
    t.resolve(store.page_count(), &mut |p, b| store.read_page(p, b))
        .unwrap();
    assert!(t.is_free(PageId(1)) && t.get(PageId(1)).is_none());
    assert!(unallocated(&t, 1, 3) && unallocated(&t, 1, 5));
    assert!(!t.is_free(PageId(2)) && t.get(PageId(2)).is_none());
    assert!(matches!(
        t.verify(PageId(2), &page(4)),
        Err(Error::MissingChecksum { .. })
    ));
    assert!(
        accepts(&t, 0, 1),
        "a page holding its version is marked as usual"
    );
    assert_eq!(t.stats().unsettled_versions, 1);
    t.flush().unwrap();
    let again = open(&Arc::new(crashed.crash(None)));
    assert!(again.is_free(PageId(1)) && again.get(PageId(1)).is_none());
    assert_eq!(again.get(PageId(2)), None);
}
