//! Goal: pages the host calls unallocated are never a false alarm — scrubs
//! skip them, verified reads refuse them with a typed error, repair finds
//! nothing to do — while a zeroed page the host says is in use is still
//! damage, a later write seals a free page, and the state survives a
//! restart (sidecar marks in the saved table, or logged by a durable one
//! through crashes and compactions; a host callback from its own metadata);
//! a transaction may reuse a free page, and its rollback (also by recovery
//! after a crash) leaves the page free or holding zeros, never an alarm.
//! Method: sealed pages in both placements (the sidecar with an in-memory
//! and with a durable table) over a `FaultyStore`; pages zeroed or garbled
//! behind the detector, declared free with `forget` or a callback, then
//! scrubbed, read and repaired from a replica; a `CrashStore` and
//! `CrashFiles` crashed with seeds for the durable marks.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::RwLock;
use selfheal::checksum::{payload_len, TableConfig};
use selfheal::corruption::{FreePageFn, PageState, Verdict};
use selfheal::repair::RepairOutcome;
use selfheal::testing::{every_placement, CrashFiles, CrashStore, Damage, FaultyStore};
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, CorruptionDetector, Error, FailureKind,
    MemStore, PageId, PageStore, RepairConfig, RollbackConfig, ScrubConfig, StoreReplica,
};

const PS: usize = 1024;
const PAGES: u64 = 32;

/// A durable sidecar table on a crash-simulating directory.
fn durable_on(files: &Arc<CrashFiles>) -> ChecksumPlacement {
    ChecksumPlacement::Sidecar(Arc::new(
        TableConfig::new(PS).open_on(files.clone(), "sums").unwrap(),
    ))
}

fn page_bytes(page: u64) -> Vec<u8> {
    (0..PS)
        .map(|i| (page as usize * 17 + i) as u8 | 1)
        .collect()
}

struct Rig {
    raw: Arc<FaultyStore>,
    det: Arc<CorruptionDetector>,
    free: Arc<RwLock<BTreeSet<u64>>>,
}

/// Every page sealed; `callback` gives the detector a free-page answer
/// backed by `free`.
fn rig(placement: ChecksumPlacement, callback: bool) -> Rig {
    let raw = Arc::new(FaultyStore::new(Arc::new(
        MemStore::new(PS, PAGES).unwrap(),
    )));
    let free: Arc<RwLock<BTreeSet<u64>>> = Arc::default();
    let mut cfg = CorruptionConfig::new(placement);
    if callback {
        let f = free.clone();
        let answer: FreePageFn = Arc::new(move |p: PageId| f.read().contains(&p.0));
        cfg = cfg.free_pages(answer);
    }
    let det = Arc::new(cfg.build(raw.clone()).unwrap());
    for p in 0..PAGES {
        det.write_sealed(PageId(p), &mut page_bytes(p)).unwrap();
    }
    Rig { raw, det, free }
}

fn scrub_reports(det: &Arc<CorruptionDetector>) -> (selfheal::scrub::ScanSummary, Vec<u64>) {
    let s = ScrubConfig::new().unlimited().build(det.clone()).unwrap();
    let sum = s.scan_range(PageId(0), PAGES).unwrap();
    let pages = det
        .failures()
        .try_iter()
        .map(|f| match f.kind {
            FailureKind::CorruptPage { page } => page.0,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    (sum, pages)
}

/// The host frees pages and zeroes them (secure delete) behind the
/// detector, or leaves junk in them: declared free, none is reported, read,
/// or repaired; a zeroed page it did not free is reported.
#[test]
fn free_pages_are_skipped_by_scrubs_and_refused_by_reads() {
    for (name, placement) in every_placement(PS) {
        for callback in [false, true] {
            let what = format!("{name} callback {callback}");
            let r = rig(placement_clone(&placement), callback);
            for p in [3u64, 4, 5] {
                r.raw.damage(PageId(p), Damage::Zero).unwrap();
            }
            r.raw.damage(PageId(6), Damage::Junk { seed: 1 }).unwrap();
            r.raw.damage(PageId(9), Damage::Zero).unwrap();
            for p in [3u64, 4, 5, 6] {
                if callback {
                    r.free.write().insert(p);
                } else {
                    r.det.forget(PageId(p)).unwrap();
                }
            }
            let (sum, reported) = scrub_reports(&r.det);
            assert_eq!(reported, vec![9], "{what}: only the page in use");
            assert_eq!(sum.unallocated, 4, "{what}");
            assert_eq!(sum.newly_corrupt, 1, "{what}");
            // A second pass: still no alarm, and page 9 is not reported again.
            let (sum, reported) = scrub_reports(&r.det);
            assert_eq!((sum.unallocated, reported.len()), (4, 0), "{what}");

            let mut buf = vec![0u8; PS];
            for p in [3u64, 6] {
                assert!(
                    matches!(
                        r.det.read_verified(PageId(p), &mut buf),
                        Err(Error::PageUnallocated { .. })
                    ),
                    "{what}: page {p}"
                );
                assert_eq!(r.det.page_state(PageId(p)), None, "{what}: not fenced");
            }
            assert!(!Error::PageUnallocated { page: PageId(3) }.is_corruption());
            assert!(matches!(
                r.det.read_verified(PageId(9), &mut buf),
                Err(Error::PageFenced { .. })
            ));
            assert!(r.det.stats().unallocated >= 8, "{what}");

            // Repair: nothing to do for a free page, page 9 from the replica.
            let mirror = Arc::new(MemStore::new(PS, PAGES).unwrap());
            let mdet = CorruptionConfig::new(placement_like(&placement))
                .build(mirror.clone())
                .unwrap();
            for p in 0..PAGES {
                mdet.write_sealed(PageId(p), &mut page_bytes(p)).unwrap();
            }
            let repairer = RepairConfig::new().build(r.det.clone()).unwrap();
            repairer
                .add_replica(Arc::new(StoreReplica::new("m", mirror)))
                .unwrap();
            for p in [3u64, 6] {
                let rep = repairer.repair_page(PageId(p)).unwrap();
                assert_eq!(rep.outcome, RepairOutcome::NotNeeded, "{what}: page {p}");
            }
            let rep = repairer.repair_page(PageId(9)).unwrap();
            assert!(rep.is_repaired(), "{what}: {rep:?}");

            // The host allocates page 4 again and writes it: sealed, verified.
            r.free.write().remove(&4);
            r.det.write_sealed(PageId(4), &mut page_bytes(40)).unwrap();
            r.det.read_verified(PageId(4), &mut buf).unwrap();
            assert!(!r.det.is_unallocated(PageId(4)), "{what}");
            // ... and damage to it is reported again.
            r.raw
                .damage(PageId(4), Damage::BitFlip { byte: 5, bit: 1 })
                .unwrap();
            let (_, reported) = scrub_reports(&r.det);
            assert_eq!(reported, vec![4], "{what}");
        }
    }
}

/// A page fenced as corrupt that the host then frees needs no repair: the
/// repair ends `NotNeeded`, never `Irreparable`, and the fence goes.
#[test]
fn a_fenced_page_that_is_freed_needs_no_repair() {
    for (name, placement) in every_placement(PS) {
        for callback in [false, true] {
            let what = format!("{name} callback {callback}");
            let r = rig(placement_clone(&placement), callback);
            r.raw.damage(PageId(7), Damage::Zero).unwrap();
            let (_, reported) = scrub_reports(&r.det);
            assert_eq!(reported, vec![7], "{what}");
            if callback {
                r.free.write().insert(7);
            } else {
                r.det.forget(PageId(7)).unwrap();
            }
            // No replica at all: were it tried, it would be irreparable.
            let repairer = RepairConfig::new().build(r.det.clone()).unwrap();
            let reports = repairer.repair_all();
            if callback {
                assert_eq!(reports.len(), 1, "{what}");
                assert_eq!(reports[0].outcome, RepairOutcome::NotNeeded, "{what}");
            } else {
                // `forget` dropped the fence already: nothing is pending.
                assert!(reports.is_empty(), "{what}: {reports:?}");
            }
            assert_eq!(r.det.page_state(PageId(7)), None, "{what}");
            assert!(r.det.pages_in(PageState::Irreparable).is_empty(), "{what}");
            assert!(
                matches!(r.det.recheck(PageId(7)).unwrap(), Verdict::Unallocated),
                "{what}"
            );
        }
    }
}

/// Sidecar marks are saved with the table: after a restart, a free page is
/// still free with no callback; a write clears the mark and that survives
/// too. Trailer marks are in memory: after a restart the host marks again.
#[test]
fn sidecar_marks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sums");
    let table = Arc::new(ChecksumTable::new(PS).unwrap());
    let r = rig(ChecksumPlacement::Sidecar(table.clone()), false);
    r.raw.damage(PageId(2), Damage::Zero).unwrap();
    r.raw.damage(PageId(3), Damage::Zero).unwrap();
    r.det.forget(PageId(2)).unwrap();
    r.det.forget(PageId(3)).unwrap();
    r.det.write_sealed(PageId(3), &mut page_bytes(33)).unwrap();
    table.save(&path).unwrap();

    let back = Arc::new(ChecksumTable::load_or_new(&path, PS).unwrap());
    assert!(back.is_free(PageId(2)));
    assert!(!back.is_free(PageId(3)));
    let det = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Sidecar(back))
            .build(r.raw.clone())
            .unwrap(),
    );
    let (sum, reported) = scrub_reports(&det);
    assert!(reported.is_empty(), "{reported:?}");
    assert_eq!(sum.unallocated, 1);
    let mut buf = vec![0u8; PS];
    det.read_verified(PageId(3), &mut buf).unwrap();
    assert_eq!(buf, page_bytes(33));

    // Trailer: the mark does not outlive the detector.
    let t = rig(ChecksumPlacement::Trailer, false);
    t.raw.damage(PageId(2), Damage::Zero).unwrap();
    t.det.forget(PageId(2)).unwrap();
    let det2 = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .build(t.raw.clone())
            .unwrap(),
    );
    let (_, reported) = scrub_reports(&det2);
    assert_eq!(
        reported,
        vec![2],
        "a restarted trailer detector knows no marks"
    );
}

/// Free marks made through a durable table survive a crash at any moment
/// after `forget` returned, compactions before and after the crash, and a
/// second crash: with no callback, a freed page stays unallocated (not
/// reported by a scrub, refused by reads) and a page written again after
/// it was freed stays in use. The trailer placement runs the same steps:
/// its marks live in memory, so after the crash a zeroed page it freed is
/// reported and the others verify with the bytes they were sealed with.
#[test]
fn free_marks_survive_a_crash_and_compaction() {
    for durable in [false, true] {
        for seed in 0..4 {
            let what = format!("durable {durable} seed {seed}");
            let store = Arc::new(CrashStore::new(PS, PAGES).unwrap());
            let files = Arc::new(CrashFiles::new());
            let build = |store: Arc<CrashStore>, files: &Arc<CrashFiles>| {
                let placement = if durable {
                    durable_on(files)
                } else {
                    ChecksumPlacement::Trailer
                };
                Arc::new(CorruptionConfig::new(placement).build(store).unwrap())
            };
            let compact = |det: &CorruptionDetector| {
                if let ChecksumPlacement::Sidecar(t) = det.placement() {
                    t.compact().unwrap();
                }
            };
            let det = build(store.clone(), &files);
            for p in 0..PAGES {
                det.write_sealed(PageId(p), &mut page_bytes(p)).unwrap();
            }
            det.sync().unwrap();
            // The host frees 2 and 3 and zeroes them (secure delete, behind
            // the detector), frees 5 and leaves it, and uses 3 again.
            for p in [2u64, 3] {
                store.write_page(PageId(p), &vec![0u8; PS]).unwrap();
                det.forget(PageId(p)).unwrap();
            }
            store.sync().unwrap();
            compact(&det);
            det.forget(PageId(5)).unwrap();
            det.write_sealed(PageId(3), &mut page_bytes(33)).unwrap();
            det.sync().unwrap();
            // Crash: unsynced table bytes torn by the seed; the page store
            // had everything synced.
            let after = Arc::new(store.crash(Some(seed)));
            let files2 = Arc::new(files.crash(Some(seed)));
            let det2 = build(after.clone(), &files2);
            let check = |det: &Arc<CorruptionDetector>, when: &str| {
                let (sum, reported) = scrub_reports(det);
                let mut buf = vec![0u8; PS];
                det.read_verified(PageId(3), &mut buf)
                    .unwrap_or_else(|e| panic!("{what} {when}: page 3: {e}"));
                let n = payload_len(PS);
                assert!(
                    buf[..n] == page_bytes(33)[..n],
                    "{what} {when}: page 3's bytes"
                );
                if durable {
                    assert!(reported.is_empty(), "{what} {when}: {reported:?}");
                    assert_eq!(sum.unallocated, 2, "{what} {when}");
                    for p in [2u64, 5] {
                        assert!(
                            matches!(
                                det.read_verified(PageId(p), &mut buf),
                                Err(Error::PageUnallocated { .. })
                            ),
                            "{what} {when}: page {p}"
                        );
                    }
                } else {
                    assert_eq!(reported, vec![2], "{what} {when}: marks are in memory");
                    det.read_verified(PageId(5), &mut buf).unwrap();
                }
            };
            check(&det2, "after the crash");
            compact(&det2);
            let det3 = build(
                Arc::new(after.crash(Some(seed))),
                &Arc::new(files2.crash(Some(seed))),
            );
            check(&det3, "after a compaction and a second crash");
        }
    }
}

/// A host reuses a free page inside a transaction: the page's bytes mean
/// nothing, so its before-image is zeros and the write goes ahead. A
/// rollback leaves the page harmless (zeros, sealed) or free, and neither a
/// read nor a scrub raises an alarm; a commit keeps the new contents. A
/// transaction in flight at a crash on a page freed again meanwhile is
/// rolled back at the next open without touching it.
#[test]
fn a_transaction_may_reuse_a_free_page() {
    for (name, placement) in every_placement(PS) {
        for callback in [false, true] {
            let what = format!("{name} callback {callback}");
            let dir = tempfile::tempdir().unwrap();
            let r = rig(placement_clone(&placement), callback);
            r.raw.damage(PageId(3), Damage::Zero).unwrap();
            r.raw.damage(PageId(4), Damage::Junk { seed: 4 }).unwrap();
            for p in [3u64, 4] {
                if callback {
                    r.free.write().insert(p);
                } else {
                    r.det.forget(PageId(p)).unwrap();
                }
            }
            let m = RollbackConfig::new(dir.path())
                .build(r.det.clone())
                .unwrap();
            let t = m.begin().unwrap();
            m.write(t, PageId(3), 10, b"reused")
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            m.write(t, PageId(4), 0, b"also").unwrap();
            let mut buf = vec![0u8; PS];
            r.det.read_verified(PageId(3), &mut buf).unwrap();
            assert_eq!(&buf[10..16], b"reused", "{what}");
            assert!(buf[..10].iter().all(|&b| b == 0), "{what}: zeros around");
            m.rollback(t).unwrap_or_else(|e| panic!("{what}: {e}"));
            for p in [3u64, 4] {
                match r.det.read_verified(PageId(p), &mut buf) {
                    Ok(()) => assert!(
                        buf[..payload_len(PS)].iter().all(|&b| b == 0),
                        "{what}: page {p} holds zeros"
                    ),
                    Err(Error::PageUnallocated { .. }) => {}
                    Err(e) => panic!("{what}: page {p}: {e}"),
                }
            }
            let (sum, reported) = scrub_reports(&r.det);
            assert!(reported.is_empty(), "{what}: {reported:?}");
            assert_eq!(sum.newly_corrupt, 0, "{what}");
            // Reused for good: a committed write stays.
            let t = m.begin().unwrap();
            m.write(t, PageId(4), 0, b"kept").unwrap();
            m.commit(t).unwrap();
            r.free.write().remove(&4);
            r.det.read_verified(PageId(4), &mut buf).unwrap();
            assert_eq!(&buf[..4], b"kept", "{what}");
            // In flight at a crash, the page freed again meanwhile.
            let t = m.begin().unwrap();
            m.write(t, PageId(3), 0, b"lost").unwrap();
            r.raw.damage(PageId(3), Damage::Zero).unwrap();
            if callback {
                r.free.write().insert(3);
            } else {
                r.det.forget(PageId(3)).unwrap();
            }
            drop(m);
            let m = RollbackConfig::new(dir.path())
                .build(r.det.clone())
                .unwrap();
            assert_eq!(m.recovery_report().rolled_back.len(), 1, "{what}");
            assert!(matches!(
                r.det.read_verified(PageId(3), &mut buf),
                Err(Error::PageUnallocated { .. })
            ));
            assert!(scrub_reports(&r.det).1.is_empty(), "{what}");
            m.stop().unwrap();
        }
    }
}

#[test]
fn forget_and_bad_input() {
    for (name, placement) in every_placement(PS) {
        let r = rig(placement, false);
        assert!(
            matches!(
                r.det.forget(PageId(PAGES)),
                Err(Error::PageOutOfRange { .. })
            ),
            "{name}"
        );
        // Forgetting a page whose bytes still verify changes nothing for
        // reads: bytes sealed for the page are served.
        r.det.forget(PageId(1)).unwrap();
        let mut buf = vec![0u8; PS];
        match r.det.placement() {
            ChecksumPlacement::Trailer => {
                r.det.read_verified(PageId(1), &mut buf).unwrap();
            }
            // The sidecar mark replaces the checksum: nothing vouches now.
            ChecksumPlacement::Sidecar(_) => assert!(matches!(
                r.det.read_verified(PageId(1), &mut buf),
                Err(Error::PageUnallocated { .. })
            )),
            other => panic!("a placement this test does not know: {other:?}"),
        }
        // A shrink drops the marks of dropped pages.
        r.det.forget(PageId(30)).unwrap();
        r.det.resize(20).unwrap();
        r.det.resize(PAGES).unwrap();
        assert!(!r.det.is_unallocated(PageId(30)), "{name}");
    }
}

fn placement_clone(p: &ChecksumPlacement) -> ChecksumPlacement {
    placement_like(p)
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
