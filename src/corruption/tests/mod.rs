//! Unit tests of the detector: verification, fencing, writes, repair
//! tickets, observers, durable sidecar tables (LSNs are in `lsn.rs`).

use super::*;
use crate::checksum::ChecksumTable;
use crate::store::MemStore;
use crate::testing::{Damage, FaultyStore, ReadFault};

mod lsn;

fn setup(placement: ChecksumPlacement) -> (Arc<FaultyStore>, CorruptionDetector) {
    let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 8).unwrap())));
    let det = CorruptionConfig::new(placement).build(raw.clone()).unwrap();
    for p in 0..8 {
        let mut b = vec![p as u8 + 1; 256];
        det.write_sealed(PageId(p), &mut b).unwrap();
    }
    (raw, det)
}

#[test]
fn transient_read_fault_is_not_corruption() {
    let (raw, det) = setup(ChecksumPlacement::Trailer);
    raw.fail_reads(Some(PageId(3)), ReadFault::TransientBitFlip, 1);
    let mut b = vec![0u8; 256];
    det.read_verified(PageId(3), &mut b).unwrap();
    assert_eq!(b[0], 4);
    assert_eq!(det.stats().transient, 1);
    assert!(det.failures().try_recv().is_err());
}

#[test]
fn corrupt_page_fenced_and_reported_once() {
    for placement in [
        ChecksumPlacement::Trailer,
        ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(256).unwrap())),
    ] {
        let (raw, det) = setup(placement);
        raw.damage(PageId(5), Damage::BitFlip { byte: 10, bit: 1 })
            .unwrap();
        let mut b = vec![0u8; 256];
        assert!(det
            .read_verified(PageId(5), &mut b)
            .unwrap_err()
            .is_corruption());
        assert!(matches!(
            det.read_verified(PageId(5), &mut b),
            Err(Error::PageFenced { .. })
        ));
        assert_eq!(det.failures().try_iter().count(), 1);
        // host rewrite lifts the fence
        let mut fresh = vec![42u8; 256];
        det.write_sealed(PageId(5), &mut fresh).unwrap();
        det.read_verified(PageId(5), &mut b).unwrap();
        assert_eq!(b[0], 42);
    }
}

#[test]
fn repair_superseded_by_host_write() {
    let (raw, det) = setup(ChecksumPlacement::Trailer);
    let mut good = vec![0u8; 256];
    raw.read_page(PageId(2), &mut good).unwrap();
    raw.damage(PageId(2), Damage::Zero).unwrap();
    let mut b = vec![0u8; 256];
    assert!(det.read_verified(PageId(2), &mut b).is_err());
    let ticket = det.begin_repair(PageId(2)).unwrap();
    let mut newer = vec![99u8; 256];
    det.write_sealed(PageId(2), &mut newer).unwrap();
    assert_eq!(
        det.commit_repair(ticket, &good).unwrap(),
        Commit::Superseded
    );
    det.read_verified(PageId(2), &mut b).unwrap();
    assert_eq!(b[0], 99, "the host's newer write stands");
}

#[test]
fn lost_write_found_with_page_lsn() {
    let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 4).unwrap())));
    let lsn: PageLsnFn =
        Arc::new(|b: &[u8]| Some(Lsn(u64::from_le_bytes(b[..8].try_into().unwrap()))));
    let det = CorruptionConfig::new(ChecksumPlacement::Trailer)
        .page_lsn(lsn)
        .build(raw.clone())
        .unwrap();
    let mut b = vec![1u8; 256];
    b[..8].copy_from_slice(&5u64.to_le_bytes());
    det.write_sealed(PageId(1), &mut b).unwrap();
    raw.fail_next_write(Some(PageId(1)), crate::testing::WriteFault::Lost);
    b[..8].copy_from_slice(&9u64.to_le_bytes());
    det.write_sealed(PageId(1), &mut b).unwrap();
    let err = det.read_verified(PageId(1), &mut b).unwrap_err();
    assert!(
        matches!(
            err,
            Error::StalePage {
                found: Lsn(5),
                expected: Lsn(9),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn persistent_read_error_is_recorded() {
    let (raw, det) = setup(ChecksumPlacement::Trailer);
    raw.fail_reads(Some(PageId(1)), ReadFault::Eio, 2);
    let mut b = vec![0u8; 256];
    assert!(matches!(
        det.read_verified(PageId(1), &mut b),
        Err(Error::Io { .. })
    ));
    assert_eq!(det.page_state(PageId(1)), Some(PageState::Suspect));
    assert_eq!(det.failures().try_iter().count(), 1);
}

#[test]
fn detector_as_page_store_seals_writes() {
    let (raw, det) = setup(ChecksumPlacement::Trailer);
    let det: Arc<dyn PageStore> = Arc::new(det);
    det.write_page(PageId(1), &[3u8; 256]).unwrap();
    let mut b = vec![0u8; 256];
    raw.read_page(PageId(1), &mut b).unwrap();
    crate::checksum::trailer::verify(PageId(1), &b).unwrap();
    det.read_page(PageId(1), &mut b).unwrap();
    assert_eq!(b[0], 3);
}

#[test]
fn replace_if_unchanged_never_overwrites_a_newer_write() {
    let (raw, det) = setup(ChecksumPlacement::Trailer);
    let mut old = vec![0u8; 256];
    raw.read_page(PageId(4), &mut old).unwrap();
    let mut newer = vec![77u8; 256];
    crate::checksum::trailer::seal(PageId(4), &mut newer).unwrap();
    // The host writes in between: the replace must not happen.
    det.write_sealed(PageId(4), &mut vec![55u8; 256]).unwrap();
    assert!(!det.replace_if_unchanged(PageId(4), &old, &newer).unwrap());
    let mut b = vec![0u8; 256];
    det.read_verified(PageId(4), &mut b).unwrap();
    assert_eq!(b[0], 55);
    // Unchanged: the newer copy replaces it.
    raw.read_page(PageId(4), &mut old).unwrap();
    assert!(det.replace_if_unchanged(PageId(4), &old, &newer).unwrap());
    det.read_verified(PageId(4), &mut b).unwrap();
    assert_eq!(b, newer);
    // A copy that does not verify is refused before anything is read.
    let mut junk = newer.clone();
    junk[3] ^= 1;
    assert!(det
        .replace_if_unchanged(PageId(4), &newer, &junk)
        .unwrap_err()
        .is_corruption());
}

#[test]
fn host_read_retries_an_irreparable_page_once_per_episode() {
    let (raw, det) = setup(ChecksumPlacement::Trailer);
    raw.damage(PageId(3), Damage::Zero).unwrap();
    let mut b = vec![0u8; 256];
    assert!(det.read_verified(PageId(3), &mut b).is_err());
    let ticket = det.begin_repair(PageId(3)).unwrap();
    assert!(det.abandon_repair(ticket));
    assert_eq!(det.failures().try_iter().count(), 1);
    // The host's next read renews it: reported again, waiting for repair.
    assert!(matches!(
        det.read_verified(PageId(3), &mut b),
        Err(Error::PageFenced { .. })
    ));
    assert_eq!(det.page_state(PageId(3)), Some(PageState::Suspect));
    assert_eq!(det.failures().try_iter().count(), 1);
    // Further reads while it waits do not report again.
    assert!(det.read_verified(PageId(3), &mut b).is_err());
    assert_eq!(det.failures().try_iter().count(), 0);
}

#[test]
fn a_dropped_ticket_gives_the_page_back_to_suspect() {
    for placement in placements() {
        let (raw, det) = setup(placement);
        raw.damage(PageId(2), Damage::Zero).unwrap();
        let mut b = vec![0u8; 256];
        assert!(det.read_verified(PageId(2), &mut b).is_err());
        assert_eq!(det.failures().try_iter().count(), 1);
        drop(det.begin_repair(PageId(2)).unwrap());
        assert_eq!(det.page_state(PageId(2)), Some(PageState::Suspect));
        // Also when the repair unwinds.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ticket = det.begin_repair(PageId(2)).unwrap();
            panic!("the repair code panicked");
        }));
        assert!(unwound.is_err());
        assert_eq!(det.page_state(PageId(2)), Some(PageState::Suspect));
        assert_eq!(det.failures().try_iter().count(), 0, "not reported again");
        // A ticket outlived by a host write changes nothing when dropped.
        let ticket = det.begin_repair(PageId(2)).unwrap();
        det.write_sealed(PageId(2), &mut vec![9u8; 256]).unwrap();
        drop(ticket);
        assert_eq!(det.page_state(PageId(2)), None);
        det.read_verified(PageId(2), &mut b).unwrap();
    }
}

#[test]
fn a_ticket_of_another_detector_is_refused() {
    let (raw, det) = setup(ChecksumPlacement::Trailer);
    let other = CorruptionConfig::new(ChecksumPlacement::Trailer)
        .build(raw.clone())
        .unwrap();
    raw.damage(PageId(1), Damage::Zero).unwrap();
    let mut b = vec![0u8; 256];
    assert!(det.read_verified(PageId(1), &mut b).is_err());
    let ticket = det.begin_repair(PageId(1)).unwrap();
    let mut good = vec![2u8; 256];
    crate::checksum::trailer::seal(PageId(1), &mut good).unwrap();
    let (ticket, err) = other.commit_repair(ticket, &good).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { what: "ticket", .. }));
    assert!(!other.abandon_repair(ticket), "released where it came from");
    assert_eq!(det.page_state(PageId(1)), Some(PageState::Suspect));
}

#[test]
fn batch_commit_syncs_once_and_a_failed_sync_repairs_nothing() {
    for placement in placements() {
        let (raw, det) = setup(placement);
        let mut good = Vec::new();
        for p in [1u64, 3, 5] {
            let mut b = vec![0u8; 256];
            raw.read_page(PageId(p), &mut b).unwrap();
            good.push(b);
            raw.damage(PageId(p), Damage::Zero).unwrap();
            let mut b = vec![0u8; 256];
            assert!(det.read_verified(PageId(p), &mut b).is_err());
        }
        fn tickets(det: &CorruptionDetector) -> Vec<RepairTicket<'_>> {
            [1u64, 3, 5]
                .iter()
                .map(|&p| det.begin_repair(PageId(p)).unwrap())
                .collect()
        }
        // A failed sync: every page comes back with an error, none repaired.
        raw.fail_syncs(1);
        let batch = tickets(&det)
            .into_iter()
            .zip(good.iter().map(Vec::as_slice))
            .collect();
        let results = det.commit_repairs(batch);
        assert_eq!(raw.counts().syncs, 1);
        let mut back = Vec::new();
        for r in results {
            let (ticket, e) = r.unwrap_err();
            assert!(matches!(e, Error::Io { .. }), "{e}");
            assert_eq!(det.page_state(ticket.page()), Some(PageState::Repairing));
            back.push(ticket);
        }
        drop(back);
        // A copy that does not verify is refused and not written; the
        // others share one sync.
        let mut batch: Vec<(RepairTicket<'_>, &[u8])> = tickets(&det)
            .into_iter()
            .zip(good.iter().map(Vec::as_slice))
            .collect();
        let junk = vec![7u8; 256];
        batch[1].1 = &junk;
        let writes = raw.counts().writes;
        let results = det.commit_repairs(batch);
        assert_eq!(raw.counts().writes - writes, 2);
        assert_eq!(raw.counts().syncs, 2);
        assert!(matches!(results[0], Ok(Commit::Written)));
        assert!(matches!(&results[1], Err((_, e)) if e.is_corruption()));
        assert!(matches!(results[2], Ok(Commit::Written)));
        drop(results);
        assert_eq!(det.page_state(PageId(1)), Some(PageState::Repaired));
        assert_eq!(det.page_state(PageId(3)), Some(PageState::Suspect));
        let mut b = vec![0u8; 256];
        det.read_verified(PageId(5), &mut b).unwrap();
        assert_eq!(b, good[2]);
    }
}

#[test]
fn verified_copies_commit_only_as_their_page_and_only_if_read_back_whole() {
    for placement in placements() {
        let (raw, det) = setup(placement);
        let mut good = Vec::new();
        for p in [1u64, 2, 3] {
            let mut b = vec![0u8; 256];
            raw.read_page(PageId(p), &mut b).unwrap();
            good.push(b);
            raw.damage(PageId(p), Damage::Zero).unwrap();
            assert!(det.read_verified(PageId(p), &mut vec![0u8; 256]).is_err());
        }
        let copies: Vec<VerifiedCopy> = [1u64, 2, 3]
            .iter()
            .zip(&good)
            .map(|(&p, b)| det.verify_copy(PageId(p), b.clone()).unwrap())
            .collect();
        // A copy that does not verify comes back with its bytes.
        let (junk, e) = det.verify_copy(PageId(1), vec![7u8; 256]).unwrap_err();
        assert_eq!(junk, vec![7u8; 256]);
        assert!(e.is_corruption(), "{e}");
        // Page 1's copy offered for page 3 is verified as page 3, and fails.
        let writes = raw.counts().writes;
        let t3 = det.begin_repair(PageId(3)).unwrap();
        let mut results = det.commit_verified_repairs(vec![(t3, &copies[0])]);
        let (t3, e) = results.pop().unwrap().unwrap_err();
        assert!(e.is_corruption(), "{e}");
        let (t3, e) = det.commit_verified_repair(t3, &copies[0]).unwrap_err();
        assert!(e.is_corruption(), "{e}");
        assert_eq!(raw.counts().writes, writes, "nothing written");
        // A torn write of a verified copy is caught by the read-back.
        raw.fail_next_write(
            Some(PageId(2)),
            crate::testing::WriteFault::Torn { new_bytes: 100 },
        );
        let tickets = [1u64, 2]
            .iter()
            .map(|&p| det.begin_repair(PageId(p)).unwrap());
        let results = det.commit_verified_repairs(tickets.zip(&copies).collect());
        assert!(matches!(results[0], Ok(Commit::Written)));
        let (t2, e) = match results.into_iter().nth(1).unwrap() {
            Err(back) => back,
            Ok(c) => panic!("a torn write was committed: {c:?}"),
        };
        assert!(e.is_corruption(), "{e}");
        assert_eq!(det.page_state(PageId(2)), Some(PageState::Repairing));
        // Written whole, both copies stand and read back verified.
        assert!(matches!(
            det.commit_verified_repair(t2, &copies[1]),
            Ok(Commit::Written)
        ));
        assert!(matches!(
            det.commit_verified_repair(t3, &copies[2]),
            Ok(Commit::Written)
        ));
        let mut b = vec![0u8; 256];
        for (p, want) in [1u64, 2, 3].iter().zip(&good) {
            assert_eq!(det.page_state(PageId(*p)), Some(PageState::Repaired));
            det.read_verified(PageId(*p), &mut b).unwrap();
            assert_eq!(&b, want);
        }
    }
}

#[test]
fn batch_commit_rereads_runs_across_stripes_and_falls_back_per_page() {
    for placement in placements() {
        let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 300).unwrap())));
        let det = CorruptionConfig::new(placement).build(raw.clone()).unwrap();
        // 240..290 wraps around the stripes (page 256 shares page 0's)
        // and is longer than one re-read run; 295 stands alone.
        let pages: Vec<u64> = (240..290).chain([295]).collect();
        let mut good = Vec::new();
        for &p in &pages {
            let mut b = vec![(p % 251) as u8 + 1; 256];
            det.write_sealed(PageId(p), &mut b).unwrap();
            good.push(b);
            raw.damage(PageId(p), Damage::Junk { seed: p }).unwrap();
            let mut b = vec![0u8; 256];
            assert!(det.read_verified(PageId(p), &mut b).is_err());
        }
        // One re-read fails: its run is re-read page by page.
        raw.fail_reads(Some(PageId(270)), ReadFault::Eio, 1);
        let injected = raw.counts().injected;
        let batch = pages
            .iter()
            .map(|&p| det.begin_repair(PageId(p)).unwrap())
            .zip(good.iter().map(Vec::as_slice))
            .collect();
        let results = det.commit_repairs(batch);
        assert_eq!(raw.counts().syncs, 1);
        assert_eq!(raw.counts().injected, injected + 1, "the read fault fired");
        assert!(results.iter().all(|r| matches!(r, Ok(Commit::Written))));
        let mut b = vec![0u8; 256];
        for (&p, want) in pages.iter().zip(&good) {
            assert_eq!(det.page_state(PageId(p)), Some(PageState::Repaired));
            det.read_verified(PageId(p), &mut b).unwrap();
            assert_eq!(&b, want);
        }
    }
}

#[test]
fn a_failure_callback_may_use_the_stripe_of_the_page_it_reports() {
    for placement in placements() {
        let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 8).unwrap())));
        let cell: Arc<std::sync::OnceLock<std::sync::Weak<CorruptionDetector>>> = Arc::default();
        let seen = Arc::new(AtomicU64::new(0));
        let callback: crate::types::FailureCallback = {
            let (cell, seen) = (cell.clone(), seen.clone());
            Arc::new(move |f: &Failure| {
                let FailureKind::CorruptPage { page } = f.kind else {
                    return;
                };
                if let Some(det) = cell.get().and_then(std::sync::Weak::upgrade) {
                    // Takes the stripe lock of the page reported.
                    let _ = det.recheck(page);
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let det = Arc::new(
            CorruptionConfig::new(placement)
                .failure_sink(FailureSink::new(64).with_callback(callback))
                .build(raw.clone())
                .unwrap(),
        );
        cell.set(Arc::downgrade(&det)).unwrap();
        let mut current = vec![3u8; 256];
        det.write_sealed(PageId(2), &mut current).unwrap();
        // The replacement's sync fails: recorded as a corruption.
        raw.fail_syncs(1);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let d = det.clone();
        std::thread::spawn(move || {
            let copy = current.clone();
            let _ = tx.send(d.replace_if_unchanged(PageId(2), &current, &copy).is_err());
        });
        let failed = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the report was sent under the page's lock: the callback deadlocked");
        assert!(failed);
        assert_eq!(seen.load(Ordering::Relaxed), 1);
    }
}

#[test]
fn the_write_observer_hears_every_writer() {
    for placement in placements() {
        let trailer = matches!(placement, ChecksumPlacement::Trailer);
        let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 8).unwrap())));
        let heard: Arc<Mutex<Vec<u64>>> = Arc::default();
        let observer: WriteObserverFn = {
            let heard = heard.clone();
            Arc::new(move |p: PageId| heard.lock().push(p.0))
        };
        let det = CorruptionConfig::new(placement)
            .on_write(observer)
            .build(raw.clone())
            .unwrap();
        let take = || std::mem::take(&mut *heard.lock());
        det.write_sealed(PageId(1), &mut vec![1u8; 256]).unwrap();
        assert_eq!(take(), [1]);
        det.write_sealed_batch(&mut [
            (PageId(2), &mut vec![2u8; 256][..]),
            (PageId(3), &mut vec![3u8; 256][..]),
        ])
        .unwrap();
        assert_eq!(take(), [2, 3]);
        // A failed write is told too: the page's bytes are unknown.
        raw.fail_next_write(Some(PageId(3)), crate::testing::WriteFault::Eio);
        assert!(det.write_sealed(PageId(3), &mut vec![4u8; 256]).is_err());
        assert_eq!(take(), [3]);
        // What a restore and a rollback write through.
        PageStore::write_pages(&det, &mut [(PageId(4), &mut vec![5u8; 256][..])]).unwrap();
        crate::rollback::PageWriter::write_page(&det, PageId(5), &mut vec![6u8; 256]).unwrap();
        assert_eq!(take(), [4, 5]);
        // A repair commit, single and batched.
        let mut good = vec![0u8; 256];
        raw.read_page(PageId(1), &mut good).unwrap();
        raw.damage(PageId(1), Damage::Junk { seed: 1 }).unwrap();
        assert!(det.read_verified(PageId(1), &mut vec![0u8; 256]).is_err());
        let ticket = det.begin_repair(PageId(1)).unwrap();
        assert!(matches!(
            det.commit_repair(ticket, &good),
            Ok(Commit::Written)
        ));
        raw.damage(PageId(1), Damage::Junk { seed: 2 }).unwrap();
        assert!(det.read_verified(PageId(1), &mut vec![0u8; 256]).is_err());
        let ticket = det.begin_repair(PageId(1)).unwrap();
        let results = det.commit_repairs(vec![(ticket, &good[..])]);
        assert!(matches!(results[0], Ok(Commit::Written)));
        drop(results);
        assert_eq!(take(), [1, 1]);
        assert!(det.replace_if_unchanged(PageId(1), &good, &good).unwrap());
        assert_eq!(take(), [1]);
        // Adoption: a trailer written in place changes the bytes; a
        // sidecar claim does not.
        det.resize(7).unwrap();
        det.resize(8).unwrap();
        let mut host = vec![9u8; 256];
        host[256 - crate::checksum::TRAILER_LEN..].fill(0);
        raw.write_page(PageId(7), &host).unwrap();
        det.forget(PageId(6)).unwrap();
        let report = det.adopt(AdoptOptions::new()).unwrap();
        assert_eq!(report.sealed, 1);
        let want: &[u64] = if trailer { &[7] } else { &[] };
        assert_eq!(take(), want);
    }
}

#[test]
fn sidecar_failed_write_keeps_the_old_checksum() {
    let table = Arc::new(ChecksumTable::new(256).unwrap());
    let (raw, det) = setup(ChecksumPlacement::Sidecar(table));
    raw.fail_next_write(Some(PageId(2)), crate::testing::WriteFault::NoSpace);
    assert!(det.write_sealed(PageId(2), &mut vec![9u8; 256]).is_err());
    let mut b = vec![0u8; 256];
    det.read_verified(PageId(2), &mut b).unwrap();
    assert_eq!(b[0], 3, "the old page still verifies");
}

#[test]
fn resize_forgets_checksums_and_fences_of_dropped_pages() {
    for placement in [
        ChecksumPlacement::Trailer,
        ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(256).unwrap())),
    ] {
        let (raw, det) = setup(placement.clone());
        raw.damage(PageId(6), Damage::BitFlip { byte: 3, bit: 0 })
            .unwrap();
        let mut b = vec![0u8; 256];
        assert!(det.read_verified(PageId(6), &mut b).is_err());
        det.resize(4).unwrap();
        assert_eq!(
            det.page_state(PageId(6)),
            None,
            "fence dropped with the page"
        );
        if let ChecksumPlacement::Sidecar(t) = &placement {
            assert_eq!(t.get(PageId(5)), None, "checksum dropped with the page");
            assert!(t.get(PageId(3)).is_some());
        }
        det.read_verified(PageId(3), &mut b).unwrap();
        det.resize(8).unwrap();
        // A page that comes back is new: unwritten, so it fails as zeroed
        // (or as missing its checksum), and a write seals it afresh.
        assert!(det.read_verified(PageId(6), &mut b).is_err());
        det.write_sealed(PageId(6), &mut vec![5u8; 256]).unwrap();
        det.read_verified(PageId(6), &mut b).unwrap();
        assert_eq!(b[0], 5);
    }
}

/// A durable sidecar table on a crash-simulating directory.
fn durable(files: &Arc<crate::testing::CrashFiles>) -> Arc<ChecksumTable> {
    Arc::new(
        crate::checksum::TableConfig::new(256)
            .open_on(files.clone(), "sums")
            .unwrap(),
    )
}

/// Every placement that seals pages: the trailer, an in-memory sidecar
/// table and a durable one.
fn placements() -> Vec<ChecksumPlacement> {
    vec![
        ChecksumPlacement::Trailer,
        ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(256).unwrap())),
        ChecksumPlacement::Sidecar(durable(&Arc::new(crate::testing::CrashFiles::new()))),
    ]
}

#[test]
fn a_batch_is_sealed_whole_and_written_up_to_the_first_failure() {
    for placement in placements() {
        let (raw, det) = setup(placement.clone());
        let (mut a, mut b, mut c) = (vec![11u8; 256], vec![12u8; 256], vec![13u8; 256]);
        raw.fail_next_write(Some(PageId(5)), crate::testing::WriteFault::Eio);
        let err = det
            .write_sealed_batch(&mut [
                (PageId(1), &mut a[..]),
                (PageId(5), &mut b[..]),
                (PageId(6), &mut c[..]),
            ])
            .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{placement:?}: {err}");
        let mut buf = vec![0u8; 256];
        det.read_verified(PageId(1), &mut buf).unwrap();
        assert_eq!(buf[0], 11, "{placement:?}: written before the failure");
        det.read_verified(PageId(5), &mut buf).unwrap();
        assert_eq!(
            buf[0], 6,
            "{placement:?}: the failed write left the old page"
        );
        det.read_verified(PageId(6), &mut buf).unwrap();
        assert_eq!(buf[0], 7, "{placement:?}: not written after the failure");
        // An all-zero page is a write like any other, in every placement
        // (a durable table logs its intent first).
        let mut zero = vec![0u8; 256];
        let mut d = vec![14u8; 256];
        det.write_sealed_batch(&mut [(PageId(2), &mut d[..]), (PageId(3), &mut zero[..])])
            .unwrap();
        det.read_verified(PageId(3), &mut buf).unwrap();
        if let ChecksumPlacement::Sidecar(_) = placement {
            assert!(buf.iter().all(|&b| b == 0), "{placement:?}");
        }
        // A page that cannot be written stops the batch before any write.
        let mut e = vec![15u8; 256];
        assert!(matches!(
            det.write_sealed_batch(&mut [(PageId(2), &mut e[..]), (PageId(9), &mut d[..])]),
            Err(Error::PageOutOfRange { .. })
        ));
        det.read_verified(PageId(2), &mut buf).unwrap();
        assert_eq!(
            buf[0], 14,
            "{placement:?}: nothing of the batch was written"
        );
    }
}

#[test]
fn a_durable_table_accepts_old_bytes_until_the_detector_syncs() {
    let files = Arc::new(crate::testing::CrashFiles::new());
    let table = durable(&files);
    let (raw, det) = setup(ChecksumPlacement::Sidecar(table.clone()));
    det.sync().unwrap();
    let mut old = vec![0u8; 256];
    raw.read_page(PageId(2), &mut old).unwrap();
    det.write_sealed(PageId(2), &mut vec![40u8; 256]).unwrap();
    assert!(
        det.verify(PageId(2), &old).is_ok(),
        "the write may not be durable yet"
    );
    PageStore::sync(&det).unwrap();
    assert!(det.verify(PageId(2), &old).is_err(), "settled by the sync");
    assert!(det.verify(PageId(2), &[40u8; 256]).is_ok());
    assert_eq!(table.stats().unsettled_versions, 0);
    // A failed write may or may not have landed: both bytes verify.
    raw.fail_next_write(Some(PageId(3)), crate::testing::WriteFault::Eio);
    assert!(det.write_sealed(PageId(3), &mut vec![41u8; 256]).is_err());
    assert!(det.verify(PageId(3), &[4u8; 256]).is_ok());
    assert!(det.verify(PageId(3), &[41u8; 256]).is_ok());
}

#[test]
fn too_many_unsettled_writes_make_the_detector_sync() {
    let files = Arc::new(crate::testing::CrashFiles::new());
    let table = Arc::new(
        crate::checksum::TableConfig::new(256)
            .unsettled_versions_max(4)
            .page_versions_max(2)
            .open_on(files.clone(), "sums")
            .unwrap(),
    );
    let raw = Arc::new(crate::testing::CrashStore::new(256, 8).unwrap());
    let det = CorruptionConfig::new(ChecksumPlacement::Sidecar(table.clone()))
        .build(raw.clone())
        .unwrap();
    for round in 0..6u8 {
        det.write_sealed(PageId(0), &mut vec![50 + round; 256])
            .unwrap();
        assert!(table.stats().unsettled_versions <= 2, "round {round}");
    }
    assert_ne!(
        raw.durable_bytes()[0],
        0,
        "the detector synced the store on its own"
    );
    for p in 1..8u8 {
        det.write_sealed(PageId(u64::from(p)), &mut vec![p; 256])
            .unwrap();
        assert!(table.stats().unsettled_versions <= 4, "page {p}");
    }
}

#[test]
fn a_durable_table_forgets_dropped_pages_durably() {
    let files = Arc::new(crate::testing::CrashFiles::new());
    let table = durable(&files);
    let raw = Arc::new(MemStore::new(256, 8).unwrap());
    let det = CorruptionConfig::new(ChecksumPlacement::Sidecar(table.clone()))
        .build(raw.clone())
        .unwrap();
    for p in 0..8 {
        det.write_sealed(PageId(p), &mut vec![p as u8 + 1; 256])
            .unwrap();
    }
    det.resize(4).unwrap();
    assert_eq!(table.get(PageId(5)), None);
    let reopened = durable(&Arc::new(files.crash(None)));
    assert_eq!(reopened.get(PageId(5)), None, "the drop is durable");
    assert!(reopened.verify(PageId(3), &[4u8; 256]).is_ok());
}

#[test]
fn bad_config_and_input() {
    let raw = Arc::new(MemStore::new(256, 2).unwrap());
    assert!(matches!(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .suspect_capacity(0)
            .build(raw.clone()),
        Err(Error::InvalidConfig {
            field: "suspect_capacity",
            ..
        })
    ));
    let t = Arc::new(ChecksumTable::new(512).unwrap());
    assert!(matches!(
        CorruptionConfig::new(ChecksumPlacement::Sidecar(t)).build(raw.clone()),
        Err(Error::PageSizeMismatch { .. })
    ));
    let det = CorruptionConfig::new(ChecksumPlacement::Trailer)
        .build(raw)
        .unwrap();
    let mut short = vec![0u8; 100];
    assert!(matches!(
        det.read_verified(PageId(0), &mut short),
        Err(Error::BufferSize { .. })
    ));
    let mut b = vec![0u8; 256];
    assert!(matches!(
        det.write_sealed(PageId(2), &mut b),
        Err(Error::PageOutOfRange { .. })
    ));
}

#[test]
fn a_page_fenced_without_a_read_is_refused_until_rewritten_and_not_reported() {
    for placement in [
        ChecksumPlacement::Trailer,
        ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(256).unwrap())),
    ] {
        let (_raw, det) = setup(placement);
        assert!(det.fence(PageId(2), "recorded bad by an earlier run"));
        assert_eq!(det.page_state(PageId(2)), Some(PageState::Suspect));
        let mut b = vec![0u8; 256];
        assert!(matches!(
            det.read_verified(PageId(2), &mut b),
            Err(Error::PageFenced { .. })
        ));
        assert!(det.failures().try_recv().is_err(), "the caller reports it");
        assert!(!det.fence(PageId(8), "past the end"));
        let mut fresh = vec![9u8; 256];
        det.write_sealed(PageId(2), &mut fresh).unwrap();
        det.read_verified(PageId(2), &mut b).unwrap();
    }
}
