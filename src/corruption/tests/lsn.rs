//! Unit tests of the page-LSN rules: lost writes found by the expected-LSN
//! hook, the expectation the last write leaves, and adoption's.

use super::*;

#[test]
fn expected_lsn_hook_finds_a_lost_write_after_a_restart() {
    for placement in placements() {
        let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 4).unwrap())));
        let lsn: PageLsnFn =
            Arc::new(|b: &[u8]| Some(Lsn(u64::from_le_bytes(b[..8].try_into().unwrap()))));
        let build = |hook: Option<ExpectedLsnFn>| {
            let mut cfg = CorruptionConfig::new(placement.clone()).page_lsn(lsn.clone());
            if let Some(h) = hook {
                cfg = cfg.expected_page_lsn(h);
            }
            cfg.build(raw.clone()).unwrap()
        };
        let det = build(None);
        let mut b = vec![1u8; 256];
        b[..8].copy_from_slice(&5u64.to_le_bytes());
        det.write_sealed(PageId(1), &mut b).unwrap();
        if let ChecksumPlacement::Trailer = placement {
            // Under a trailer the old page verifies by checksum; only the
            // LSN tells that the write of LSN 9 was lost.
            raw.fail_next_write(Some(PageId(1)), crate::testing::WriteFault::Lost);
            b[..8].copy_from_slice(&9u64.to_le_bytes());
            det.write_sealed(PageId(1), &mut b).unwrap();
        }
        // Restart: without the hook nothing is known.
        drop(det);
        let forgetful = build(None);
        assert_eq!(forgetful.last_written_lsn(PageId(1)), None);
        let calls = Arc::new(AtomicU64::new(0));
        let host_knows: ExpectedLsnFn = {
            let calls = calls.clone();
            Arc::new(move |p: PageId| {
                calls.fetch_add(1, Ordering::Relaxed);
                (p == PageId(1)).then_some(Lsn(9))
            })
        };
        let det = build(Some(host_knows));
        assert_eq!(det.last_written_lsn(PageId(1)), Some(Lsn(9)));
        assert_eq!(det.last_written_lsn(PageId(1)), Some(Lsn(9)));
        assert_eq!(calls.load(Ordering::Relaxed), 1, "answer remembered");
        assert_eq!(det.last_written_lsn(PageId(2)), None);
        assert_eq!(det.last_written_lsn(PageId(u64::MAX)), None);
        let err = det.read_verified(PageId(1), &mut b).unwrap_err();
        assert!(err.is_corruption(), "{err}");
        if let ChecksumPlacement::Trailer = placement {
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
    }
}

#[test]
fn expected_lsn_hook_needs_a_page_lsn_reader() {
    let raw = Arc::new(MemStore::new(256, 2).unwrap());
    let hook: ExpectedLsnFn = Arc::new(|_| Some(Lsn(1)));
    assert!(matches!(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .expected_page_lsn(hook)
            .build(raw),
        Err(Error::InvalidConfig {
            field: "expected_page_lsn",
            ..
        })
    ));
}

/// A page-LSN reader over the first 8 bytes (0: none).
fn lsn_in_head() -> PageLsnFn {
    Arc::new(|b: &[u8]| {
        let l = u64::from_le_bytes(b[..8].try_into().unwrap());
        (l != 0).then_some(Lsn(l))
    })
}

fn with_lsn(lsn: u64, fill: u8) -> Vec<u8> {
    let mut b = vec![fill; 256];
    b[..8].copy_from_slice(&lsn.to_le_bytes());
    b
}

#[test]
fn the_last_write_defines_the_expected_lsn_whatever_its_lsn() {
    for placement in placements() {
        let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 8).unwrap())));
        let det = CorruptionConfig::new(placement.clone())
            .page_lsn(lsn_in_head())
            .build(raw.clone())
            .unwrap();
        let mut b = vec![0u8; 256];
        // A write, then one with an older LSN (a before-image put back).
        det.write_sealed(PageId(1), &mut with_lsn(9, 1)).unwrap();
        det.write_sealed(PageId(1), &mut with_lsn(5, 2)).unwrap();
        assert_eq!(det.last_written_lsn(PageId(1)), Some(Lsn(5)));
        det.read_verified(PageId(1), &mut b).unwrap();
        // In a batch, the last bytes of a page define it.
        det.write_sealed_batch(&mut [
            (PageId(2), &mut with_lsn(7, 3)[..]),
            (PageId(2), &mut with_lsn(3, 4)[..]),
        ])
        .unwrap();
        assert_eq!(det.last_written_lsn(PageId(2)), Some(Lsn(3)));
        det.read_verified(PageId(2), &mut b).unwrap();
        // A failed write defines nothing: the page keeps its bytes.
        raw.fail_next_write(Some(PageId(2)), crate::testing::WriteFault::Eio);
        assert!(det.write_sealed(PageId(2), &mut with_lsn(8, 5)).is_err());
        assert_eq!(det.last_written_lsn(PageId(2)), Some(Lsn(3)));
        // A repair commit writes a verified copy: its LSN.
        let mut good = with_lsn(6, 6);
        det.write_sealed(PageId(3), &mut good).unwrap();
        raw.damage(PageId(3), Damage::Junk { seed: 3 }).unwrap();
        assert!(det.read_verified(PageId(3), &mut b).is_err());
        let ticket = det.begin_repair(PageId(3)).unwrap();
        assert!(matches!(
            det.commit_repair(ticket, &good),
            Ok(Commit::Written)
        ));
        assert_eq!(det.last_written_lsn(PageId(3)), Some(Lsn(6)));
        // A replacement by a newer copy: its LSN.
        if let ChecksumPlacement::Trailer = placement {
            let mut newer = with_lsn(11, 7);
            crate::checksum::trailer::seal(PageId(3), &mut newer).unwrap();
            assert!(det.replace_if_unchanged(PageId(3), &good, &newer).unwrap());
            assert_eq!(det.last_written_lsn(PageId(3)), Some(Lsn(11)));
        }
        // Bytes without an LSN expect nothing.
        det.write_sealed(PageId(4), &mut with_lsn(0, 8)).unwrap();
        assert_eq!(det.last_written_lsn(PageId(4)), None);
        // Lost writes are still caught (trailer: the old page verifies
        // by checksum, only its LSN tells).
        if let ChecksumPlacement::Trailer = placement {
            raw.fail_next_write(Some(PageId(1)), crate::testing::WriteFault::Lost);
            det.write_sealed(PageId(1), &mut with_lsn(12, 9)).unwrap();
            assert!(matches!(
                det.read_verified(PageId(1), &mut b),
                Err(Error::StalePage {
                    found: Lsn(5),
                    expected: Lsn(12),
                    ..
                })
            ));
        }
        // Page 3's damage, and in the trailer placement the lost write.
        let reports = if let ChecksumPlacement::Trailer = placement {
            2
        } else {
            1
        };
        assert_eq!(det.stats().corrupt_reported, reports);
    }
}

#[test]
fn adoption_leaves_the_expected_lsn_and_a_stale_adopted_page_is_refused() {
    for placement in placements() {
        let raw = Arc::new(MemStore::new(256, 2).unwrap());
        // Written before the library: payload with LSN 2, the trailer
        // bytes free.
        let mut old = with_lsn(2, 1);
        old[256 - crate::checksum::TRAILER_LEN..].fill(0);
        raw.write_page(PageId(1), &old).unwrap();
        let hook: ExpectedLsnFn = Arc::new(|p| (p == PageId(1)).then_some(Lsn(4)));
        let det = CorruptionConfig::new(placement)
            .page_lsn(lsn_in_head())
            .expected_page_lsn(hook)
            .build(raw.clone())
            .unwrap();
        let report = det.adopt(AdoptOptions::new()).unwrap();
        assert_eq!(report.sealed, 1);
        assert_eq!(
            det.last_written_lsn(PageId(1)),
            Some(Lsn(4)),
            "the floor stands"
        );
        let mut b = vec![0u8; 256];
        assert!(matches!(
            det.read_verified(PageId(1), &mut b),
            Err(Error::StalePage {
                found: Lsn(2),
                expected: Lsn(4),
                ..
            })
        ));
    }
}

#[test]
fn the_expectation_tells_the_last_write_from_the_hosts_floor() {
    for placement in placements() {
        let raw = Arc::new(MemStore::new(256, 4).unwrap());
        let calls = Arc::new(AtomicU64::new(0));
        let hook: ExpectedLsnFn = {
            let calls = calls.clone();
            Arc::new(move |p: PageId| {
                calls.fetch_add(1, Ordering::Relaxed);
                (p != PageId(3)).then_some(Lsn(4))
            })
        };
        let det = CorruptionConfig::new(placement.clone())
            .page_lsn(lsn_in_head())
            .expected_page_lsn(hook)
            .build(raw.clone())
            .unwrap();
        // Nothing written in this process: the host's floor, asked once.
        assert_eq!(
            det.lsn_expectation(PageId(1)),
            LsnExpectation::AtLeast(Lsn(4))
        );
        assert_eq!(
            det.lsn_expectation(PageId(1)),
            LsnExpectation::AtLeast(Lsn(4))
        );
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_eq!(det.lsn_expectation(PageId(3)), LsnExpectation::Nothing);
        // A write, newer or older than the floor, is the exact truth.
        det.write_sealed(PageId(1), &mut with_lsn(9, 1)).unwrap();
        assert_eq!(
            det.lsn_expectation(PageId(1)),
            LsnExpectation::Exact(Lsn(9))
        );
        det.write_sealed(PageId(1), &mut with_lsn(2, 2)).unwrap();
        assert_eq!(
            det.lsn_expectation(PageId(1)),
            LsnExpectation::Exact(Lsn(2))
        );
        assert_eq!(det.last_written_lsn(PageId(1)), Some(Lsn(2)));
        // A write before the hook was ever asked: the hook is not asked.
        det.write_sealed(PageId(2), &mut with_lsn(6, 3)).unwrap();
        assert_eq!(
            det.lsn_expectation(PageId(2)),
            LsnExpectation::Exact(Lsn(6))
        );
        assert_eq!(calls.load(Ordering::Relaxed), 2, "page 3 only");
        // A write without an LSN expects nothing, floor or not.
        det.write_sealed(PageId(1), &mut with_lsn(0, 4)).unwrap();
        assert_eq!(det.lsn_expectation(PageId(1)), LsnExpectation::Nothing);
        assert_eq!(det.last_written_lsn(PageId(1)), None);
        // Verification checks the floor either way: a newer local page
        // is not refused by a read (only a repair chooses).
        let mut b = vec![0u8; 256];
        det.write_sealed(PageId(2), &mut with_lsn(6, 3)).unwrap();
        det.read_verified(PageId(2), &mut b).unwrap();
        // A forgotten page has no last write: the floor again.
        det.forget(PageId(2)).unwrap();
        assert_eq!(
            det.lsn_expectation(PageId(2)),
            LsnExpectation::AtLeast(Lsn(4))
        );
        assert_eq!(
            det.lsn_expectation(PageId(u64::MAX)),
            LsnExpectation::AtLeast(Lsn(4))
        );
        // Without a page-LSN reader nothing is ever expected.
        let plain = CorruptionConfig::new(placement).build(raw.clone()).unwrap();
        plain.write_sealed(PageId(1), &mut with_lsn(9, 5)).unwrap();
        assert_eq!(plain.lsn_expectation(PageId(1)), LsnExpectation::Nothing);
    }
}

#[test]
fn a_verified_copy_has_its_lsn_floor_checked_again_at_its_commit() {
    for placement in placements() {
        let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(256, 4).unwrap())));
        let det = CorruptionConfig::new(placement)
            .page_lsn(lsn_in_head())
            .build(raw.clone())
            .unwrap();
        let mut good = with_lsn(5, 1);
        det.write_sealed(PageId(1), &mut good).unwrap();
        raw.damage(PageId(1), Damage::Junk { seed: 1 }).unwrap();
        let mut b = vec![0u8; 256];
        assert!(det.read_verified(PageId(1), &mut b).is_err());
        let copy = det.verify_copy(PageId(1), good.clone()).unwrap();
        // The page's floor rises after the copy verified (as the record of
        // a write would raise it): the copy is now older than the page must
        // be, and neither commit writes it.
        det.record_write_lsn(PageId(1), &with_lsn(9, 2));
        let writes = raw.counts().writes;
        let ticket = det.begin_repair(PageId(1)).unwrap();
        let (ticket, e) = det.commit_verified_repair(ticket, &copy).unwrap_err();
        assert!(
            matches!(
                e,
                Error::StalePage {
                    found: Lsn(5),
                    expected: Lsn(9),
                    ..
                }
            ),
            "{e}"
        );
        let mut results = det.commit_verified_repairs(vec![(ticket, &copy)]);
        let (ticket, e) = results.pop().unwrap().unwrap_err();
        assert!(matches!(e, Error::StalePage { .. }), "{e}");
        assert_eq!(raw.counts().writes, writes, "nothing written");
        assert!(det.abandon_repair(ticket));
    }
}
