//! Goal: a repair never reverts a page to an older version: a verified copy
//! with a newer page LSN beats any number of older ones, also after a restart
//! empties the detector's memory and however many stale replicas are asked
//! before the current one; fetching stops only when no replica left can hold
//! a newer copy; a rejected copy does not use up the copies a repair may
//! fetch; and while the detector knows a page's last write exactly, a copy
//! newer than it (a write rolled back or replaced since) never wins.
//! Method: mirrors made to lag by leaving host writes out of them, replicas
//! whose statuses report their applied LSN or not, a "restart" as a
//! new detector and repairer over the same store, a rollback through
//! `TransactionRollbackManager` or an older write that a mirror misses,
//! under both checksum placements.

mod repair_common;

use std::sync::Arc;

use repair_common::{fence, Cluster, StoreSource, PS};
use selfheal::corruption::LsnExpectation;
use selfheal::corruption::PageState;
use selfheal::repair::{AttemptResult, CopySource, RepairConfig, RepairOutcome};
use selfheal::testing::{both_placements, Damage, FaultyReplica};
use selfheal::{ChecksumPlacement, CorruptionConfig, Error, Lsn, PageId, ReplicaId, ReplicaLag};

/// Page 2 is written at LSN 1 everywhere, then at LSN 7 only locally and on
/// mirror 2: mirrors 0 and 1 lag with the LSN-1 copy.
fn lagging_cluster(placement: ChecksumPlacement) -> Arc<Cluster> {
    let c = Arc::new(Cluster::new(placement, 4, 3));
    let det = c.detector(None);
    for p in 0..4 {
        c.write(&det, p, 1, 0x10 + p as u8, &[0, 1, 2]);
    }
    c.write(&det, 2, 7, 0x77, &[2]);
    c
}

#[test]
fn after_a_restart_two_stale_replicas_do_not_outvote_the_current_copy() {
    for (_, placement) in both_placements(PS) {
        let sidecar = matches!(placement, ChecksumPlacement::Sidecar(_));
        let c = lagging_cluster(placement);
        // Restart: nothing in memory says which LSN page 2 must have.
        let det = c.detector(None);
        assert_eq!(det.last_written_lsn(PageId(2)), None);
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        for i in 0..3 {
            rep.add_replica(Arc::new(c.replica(i))).unwrap();
        }
        c.raw.damage(PageId(2), Damage::Junk { seed: 2 }).unwrap();
        fence(&det, 2);
        let report = rep.repair_page(PageId(2)).unwrap();
        assert_eq!(
            report.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("m2"))
            },
            "sidecar {sidecar}: {:?}",
            report.attempts
        );
        assert_eq!(c.local(2), c.current(2), "the committed LSN-7 page stands");
        for a in &report.attempts[..2] {
            if sidecar {
                // The table holds the checksum of the LSN-7 page.
                assert!(
                    matches!(
                        a.result,
                        AttemptResult::FailedVerification(Error::ChecksumMismatch { .. })
                    ),
                    "{:?}",
                    a.result
                );
            } else {
                assert!(
                    matches!(
                        a.result,
                        AttemptResult::OlderCopy {
                            lsn: Some(Lsn(1)),
                            newest: Lsn(7)
                        }
                    ),
                    "{:?}",
                    a.result
                );
            }
        }
    }
}

#[test]
fn after_a_restart_the_hosts_expected_lsn_refuses_every_stale_copy() {
    for (_, placement) in both_placements(PS) {
        let c = lagging_cluster(placement);
        let det = c.detector(Some(c.expected_lsn()));
        assert_eq!(det.last_written_lsn(PageId(2)), Some(Lsn(7)));
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        for i in 0..3 {
            rep.add_replica(Arc::new(c.replica(i))).unwrap();
        }
        c.raw.damage(PageId(2), Damage::Zero).unwrap();
        fence(&det, 2);
        let report = rep.repair_page(PageId(2)).unwrap();
        assert_eq!(
            report.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("m2"))
            }
        );
        assert_eq!(c.local(2), c.current(2));
    }
}

#[test]
fn after_a_restart_only_stale_replicas_leave_the_page_irreparable() {
    for (_, placement) in both_placements(PS) {
        let c = lagging_cluster(placement);
        // Mirror 2 loses its copy too: every replica now holds LSN 1.
        let stale = {
            let mut b = vec![0u8; PS];
            selfheal::PageStore::read_page(c.mirrors[0].as_ref(), PageId(2), &mut b).unwrap();
            b
        };
        selfheal::PageStore::write_page(c.mirrors[2].as_ref(), PageId(2), &stale).unwrap();
        let det = c.detector(Some(c.expected_lsn()));
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        for i in 0..3 {
            rep.add_replica(Arc::new(c.replica(i))).unwrap();
        }
        c.raw.damage(PageId(2), Damage::Zero).unwrap();
        fence(&det, 2);
        let report = rep.repair_page(PageId(2)).unwrap();
        assert!(
            matches!(report.outcome, RepairOutcome::Irreparable { .. }),
            "{:?}",
            report.outcome
        );
        assert!(report.attempts.iter().all(
            |a| matches!(&a.result, AttemptResult::FailedVerification(e) if e.is_corruption())
        ));
        assert_eq!(
            c.local(2),
            vec![0u8; PS],
            "the stale copy was never written"
        );
        assert_eq!(det.page_state(PageId(2)), Some(PageState::Irreparable));
    }
}

#[test]
fn a_newer_copy_wins_over_a_majority_also_when_a_majority_is_required() {
    for (_, placement) in both_placements(PS) {
        let c = lagging_cluster(placement);
        let det = c.detector(None);
        let rep = RepairConfig::new()
            .require_majority(true)
            .build(det.clone())
            .unwrap();
        for i in 0..3 {
            rep.add_replica(Arc::new(c.replica(i))).unwrap();
        }
        c.raw.damage(PageId(2), Damage::Zero).unwrap();
        fence(&det, 2);
        let report = rep.repair_page(PageId(2)).unwrap();
        // The one LSN-7 copy is a majority among the copies at the newest LSN.
        assert_eq!(
            report.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("m2"))
            }
        );
        assert_eq!(c.local(2), c.current(2));
    }
}

#[test]
fn a_rejected_copy_does_not_use_up_the_copy_limit() {
    for (_, placement) in both_placements(PS) {
        let c = Cluster::new(placement, 4, 2);
        let det = c.detector(None);
        for p in 0..4 {
            c.write(&det, p, p + 1, 0x30 + p as u8, &[0, 1]);
        }
        let rep = RepairConfig::new()
            .max_replicas_per_repair(1)
            .build(det.clone())
            .unwrap();
        let corrupt = FaultyReplica::new(Arc::new(c.replica(0)));
        corrupt.corrupt(PageId(1), Damage::BitFlip { byte: 99, bit: 1 });
        rep.add_replica(Arc::new(corrupt)).unwrap();
        rep.add_replica(Arc::new(c.replica(1))).unwrap();
        c.raw.damage(PageId(1), Damage::Zero).unwrap();
        fence(&det, 1);
        let report = rep.repair_page(PageId(1)).unwrap();
        assert_eq!(
            report.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("m1"))
            },
            "{:?}",
            report.attempts
        );
        assert!(matches!(
            report.attempts[0].result,
            AttemptResult::FailedVerification(_)
        ));
        assert!(matches!(report.attempts[1].result, AttemptResult::Verified));
        assert_eq!(c.local(1), c.current(1));
    }
}

/// What the replicas' statuses say about their applied LSN.
#[derive(Clone, Copy, Debug)]
enum Reports {
    /// Nothing (a replica that does not track LSNs).
    Nothing,
    /// The truth: the stale ones LSN 1, the current one LSN 7.
    Everyone,
    /// Only the stale ones report (LSN 1); the current one reports nothing.
    OnlyTheStale,
}

/// `stale + 1` mirrors: page 2 at LSN 1 on mirrors `0..stale`, at LSN 7 on
/// mirror `stale` (and locally). Replicas are registered stale ones first,
/// each a `FaultyReplica` reporting its applied LSN as `reports` says.
fn stale_first(
    placement: ChecksumPlacement,
    stale: usize,
    reports: Reports,
) -> (Arc<Cluster>, Vec<Arc<FaultyReplica>>) {
    let c = Arc::new(Cluster::new(placement, 4, stale + 1));
    let det = c.detector(None);
    let all: Vec<usize> = (0..=stale).collect();
    for p in 0..4 {
        c.write(&det, p, 1, 0x10 + p as u8, &all);
    }
    c.write(&det, 2, 7, 0x77, &[stale]);
    let replicas = (0..=stale)
        .map(|i| {
            let r = FaultyReplica::new(Arc::new(c.replica(i)));
            let applied = match (reports, i == stale) {
                (Reports::Nothing, _) | (Reports::OnlyTheStale, true) => None,
                (Reports::Everyone, true) => Some(Lsn(7)),
                (Reports::Everyone | Reports::OnlyTheStale, false) => Some(Lsn(1)),
            };
            r.set_lag(ReplicaLag {
                applied_lsn: applied,
                behind: None,
            });
            Arc::new(r)
        })
        .collect();
    (c, replicas)
}

#[test]
fn after_a_restart_any_number_of_stale_replicas_asked_first_never_hide_the_current_copy() {
    for (name, placement) in both_placements(PS) {
        let sidecar = matches!(placement, ChecksumPlacement::Sidecar(_));
        for stale in [3, 5] {
            for reports in [Reports::Nothing, Reports::Everyone, Reports::OnlyTheStale] {
                for batch in [false, true] {
                    let case =
                        format!("{name}, {stale} stale, {reports:?} reported, batch {batch}");
                    let (c, replicas) = stale_first(placement.clone(), stale, reports);
                    // Restart, default config, no expected-LSN hook.
                    let det = c.detector(None);
                    let rep = RepairConfig::new().build(det.clone()).unwrap();
                    for r in &replicas {
                        rep.add_replica(r.clone()).unwrap();
                    }
                    c.raw.damage(PageId(2), Damage::Junk { seed: 2 }).unwrap();
                    fence(&det, 2);
                    let report = if batch {
                        let mut all = rep.repair_all();
                        assert_eq!(all.len(), 1, "{case}");
                        all.remove(0)
                    } else {
                        rep.repair_page(PageId(2)).unwrap()
                    };
                    assert_eq!(
                        report.outcome,
                        RepairOutcome::Repaired {
                            source: CopySource::Replica(ReplicaId::new(format!("m{stale}")))
                        },
                        "{case}: {:?}",
                        report.attempts
                    );
                    assert_eq!(c.local(2), c.current(2), "{case}: the LSN-7 page stands");
                    let reads: Vec<u64> = replicas.iter().map(|r| r.reads()).collect();
                    match reports {
                        // Any of them could hold a newer copy: all are asked.
                        Reports::Nothing => {
                            assert!(reads.iter().all(|&n| n == 1), "{case}: {reads:?}")
                        }
                        // The current one is asked first (highest applied
                        // LSN); the others cannot hold anything as new.
                        Reports::Everyone => {
                            assert_eq!(reads[stale], 1, "{case}");
                            assert!(reads[..stale].iter().all(|&n| n == 0), "{case}: {reads:?}");
                            for a in &report.attempts[1..] {
                                assert!(
                                    matches!(
                                        a.result,
                                        AttemptResult::Stale {
                                            applied: Lsn(1),
                                            needed: Lsn(7)
                                        }
                                    ),
                                    "{case}: {:?}",
                                    a.result
                                );
                            }
                        }
                        // The stale ones come first; once three copies agree
                        // at LSN 1 the others reporting LSN 1 add nothing, but
                        // the silent one may be newer and is asked. (With the
                        // sidecar table, stale copies fail verification and
                        // never count, so every stale one is asked.)
                        Reports::OnlyTheStale => {
                            let asked = if sidecar { stale as u64 } else { 3 };
                            assert_eq!(reads[stale], 1, "{case}");
                            assert_eq!(
                                reads[..stale].iter().sum::<u64>(),
                                asked,
                                "{case}: {reads:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn after_a_restart_when_every_replica_is_stale_the_stale_copy_is_never_written() {
    for (name, placement) in both_placements(PS) {
        let sidecar = matches!(placement, ChecksumPlacement::Sidecar(_));
        for reports in [Reports::Nothing, Reports::Everyone] {
            for with_fallback in [false, true] {
                // Hook: the host's WAL says which LSN the page must have.
                // Without it only the sidecar table knows the page changed.
                for hook in [true, false] {
                    if !hook && !sidecar {
                        continue;
                    }
                    let case =
                        format!("{name}, {reports:?}, fallback {with_fallback}, hook {hook}");
                    let (c, replicas) = stale_first(placement.clone(), 5, reports);
                    let last = replicas.len() - 1;
                    // The one current replica is unavailable: all that answer are stale.
                    replicas[last].set_down(true);
                    let det = c.detector(hook.then(|| c.expected_lsn()));
                    let rep = RepairConfig::new().build(det.clone()).unwrap();
                    for r in &replicas {
                        rep.add_replica(r.clone()).unwrap();
                    }
                    if with_fallback {
                        rep.add_fallback(Arc::new(StoreSource::current("backup", &c)))
                            .unwrap();
                    }
                    c.raw.damage(PageId(2), Damage::Zero).unwrap();
                    fence(&det, 2);
                    let report = rep.repair_page(PageId(2)).unwrap();
                    if with_fallback {
                        assert_eq!(
                            report.outcome,
                            RepairOutcome::Repaired {
                                source: CopySource::Fallback("backup".into())
                            },
                            "{case}: {:?}",
                            report.attempts
                        );
                        assert_eq!(c.local(2), c.current(2), "{case}");
                    } else {
                        assert!(
                            matches!(report.outcome, RepairOutcome::Irreparable { .. }),
                            "{case}: {:?}",
                            report.outcome
                        );
                        assert_eq!(c.local(2), vec![0u8; PS], "{case}: nothing was written");
                        assert_eq!(det.page_state(PageId(2)), Some(PageState::Irreparable));
                    }
                    assert!(
                        report.attempts.iter().all(|a| !matches!(
                            a.result,
                            AttemptResult::Verified
                        ) || a.source
                            == CopySource::Fallback("backup".into())),
                        "{case}: no stale copy verified: {:?}",
                        report.attempts
                    );
                }
            }
        }
    }
}

#[test]
fn with_a_page_lsn_reader_the_copy_limit_counts_votes_at_the_newest_lsn() {
    for (name, placement) in both_placements(PS) {
        for reported in [true, false] {
            // `restart`: the host's floor (LSN 7) instead of the exact LSN of
            // the last write in this process.
            for restart in [false, true] {
                let case = format!("{name}, reported {reported}, restart {restart}");
                let c = Arc::new(Cluster::new(placement.clone(), 4, 5));
                let mut det = c.detector(None);
                for p in 0..4 {
                    c.write(&det, p, 7, 0x20 + p as u8, &[0, 1, 2, 3, 4]);
                }
                if restart {
                    det = c.detector(Some(c.expected_lsn()));
                    assert_eq!(
                        det.lsn_expectation(PageId(1)),
                        LsnExpectation::AtLeast(Lsn(7))
                    );
                } else {
                    assert_eq!(
                        det.lsn_expectation(PageId(1)),
                        LsnExpectation::Exact(Lsn(7))
                    );
                }
                let rep = RepairConfig::new().build(det.clone()).unwrap();
                let replicas: Vec<Arc<FaultyReplica>> = (0..5)
                    .map(|i| {
                        let r = Arc::new(FaultyReplica::new(Arc::new(c.replica(i))));
                        r.set_lag(ReplicaLag {
                            applied_lsn: reported.then_some(Lsn(7)),
                            behind: None,
                        });
                        rep.add_replica(r.clone()).unwrap();
                        r
                    })
                    .collect();
                c.raw.damage(PageId(1), Damage::Zero).unwrap();
                fence(&det, 1);
                let report = rep.repair_page(PageId(1)).unwrap();
                assert!(report.is_repaired(), "{case}: {:?}", report.attempts);
                let reads: Vec<u64> = replicas.iter().map(|r| r.reads()).collect();
                if reported || !restart {
                    // Three votes at LSN 7, and nobody can hold anything
                    // newer (or, with the last write known exactly, anything
                    // newer would not be the page).
                    assert_eq!(reads, [1, 1, 1, 0, 0], "{case}");
                    assert_eq!(report.attempts.len(), 3, "{case}");
                } else {
                    // Above a floor, any replica that says nothing may hold
                    // a newer copy.
                    assert_eq!(reads, [1, 1, 1, 1, 1], "{case}");
                }
                assert_eq!(c.local(1), c.current(1), "{case}");
            }
        }
    }
}

#[test]
fn without_a_page_lsn_reader_copies_vote_and_fetching_stops_at_the_limit() {
    for (_, placement) in both_placements(PS) {
        let c = Arc::new(Cluster::new(placement.clone(), 4, 5));
        let det = Arc::new(
            CorruptionConfig::new(placement)
                .build(c.raw.clone())
                .unwrap(),
        );
        for p in 0..4 {
            c.write(&det, p, 3, 0x20 + p as u8, &[0, 1, 2, 3, 4]);
        }
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        let replicas: Vec<Arc<FaultyReplica>> = (0..5)
            .map(|i| {
                let r = Arc::new(FaultyReplica::new(Arc::new(c.replica(i))));
                rep.add_replica(r.clone()).unwrap();
                r
            })
            .collect();
        c.raw.damage(PageId(1), Damage::Zero).unwrap();
        fence(&det, 1);
        let report = rep.repair_page(PageId(1)).unwrap();
        assert!(report.is_repaired(), "{:?}", report.attempts);
        let reads: Vec<u64> = replicas.iter().map(|r| r.reads()).collect();
        assert_eq!(reads, [1, 1, 1, 0, 0], "three votes, then it stops");
        assert_eq!(c.local(1), c.current(1));
    }
}

// ---- a copy newer than the last write is not the page either ------------------

/// Page 2 at LSN 5 on the local store and both mirrors; then written at LSN
/// 10 locally and on mirror 0, and put back to its LSN-5 contents by a write
/// through the detector that mirror 0 misses (`rollback`: through a
/// `TransactionRollbackManager`; otherwise a direct write of the older
/// page, as a restore does). Mirror 0, registered first, holds the aborted
/// LSN-10 bytes; mirror 1 the LSN-5 page the store must hold.
fn rolled_back(
    placement: ChecksumPlacement,
    rollback: bool,
) -> (Arc<Cluster>, Arc<selfheal::CorruptionDetector>) {
    let c = Arc::new(Cluster::new(placement, 4, 2));
    let det = c.detector(None);
    for p in 0..4 {
        c.write(&det, p, 5, 0x50 + p as u8, &[0, 1]);
    }
    let before = c.current(2);
    if rollback {
        let mgr =
            selfheal::RollbackConfig::with_storage(Arc::new(selfheal::testing::CrashDir::new()))
                .build(det.clone())
                .unwrap();
        let t = mgr.begin().unwrap();
        let mut patch = 10u64.to_le_bytes().to_vec();
        patch.extend_from_slice(&[0xAB; 56]);
        mgr.write(t, PageId(2), 0, &patch).unwrap();
        // The write reaches mirror 0 before the transaction is rolled back.
        let aborted = c.local(2);
        assert_eq!(aborted[..8], 10u64.to_le_bytes());
        selfheal::PageStore::write_page(c.mirrors[0].as_ref(), PageId(2), &aborted).unwrap();
        mgr.rollback(t).unwrap();
    } else {
        c.write(&det, 2, 10, 0xAA, &[0]);
        c.write(&det, 2, 5, 0x52, &[]);
    }
    assert_eq!(c.local(2), before, "the LSN-5 page is back");
    assert_eq!(det.last_written_lsn(PageId(2)), Some(Lsn(5)));
    (c, det)
}

#[test]
fn a_copy_newer_than_the_last_write_never_reverts_a_rollback_or_an_older_write() {
    for (name, placement) in both_placements(PS) {
        let sidecar = matches!(placement, ChecksumPlacement::Sidecar(_));
        for rollback in [false, true] {
            for batch in [false, true] {
                let case = format!("{name}, rollback {rollback}, batch {batch}");
                let (c, det) = rolled_back(placement.clone(), rollback);
                let rep = RepairConfig::new().build(det.clone()).unwrap();
                rep.add_replica(Arc::new(c.replica(0))).unwrap();
                rep.add_replica(Arc::new(c.replica(1))).unwrap();
                c.raw.damage(PageId(2), Damage::Junk { seed: 5 }).unwrap();
                fence(&det, 2);
                let report = if batch {
                    let mut all = rep.repair_all();
                    assert_eq!(all.len(), 1, "{case}");
                    all.remove(0)
                } else {
                    rep.repair_page(PageId(2)).unwrap()
                };
                assert_eq!(
                    report.outcome,
                    RepairOutcome::Repaired {
                        source: CopySource::Replica(ReplicaId::new("m1"))
                    },
                    "{case}: {:?}",
                    report.attempts
                );
                assert_eq!(c.local(2), c.current(2), "{case}: the LSN-5 page stands");
                let m0 = &report.attempts[0];
                assert_eq!(m0.source, CopySource::Replica(ReplicaId::new("m0")));
                if sidecar {
                    // The table holds the checksum of the LSN-5 page.
                    assert!(
                        matches!(
                            m0.result,
                            AttemptResult::FailedVerification(Error::ChecksumMismatch { .. })
                        ),
                        "{case}: {:?}",
                        m0.result
                    );
                } else {
                    assert!(
                        matches!(
                            m0.result,
                            AttemptResult::NotLastWrite {
                                lsn: Some(Lsn(10)),
                                written: Lsn(5)
                            }
                        ),
                        "{case}: {:?}",
                        m0.result
                    );
                }
            }
        }
    }
}

#[test]
fn a_fallback_copy_newer_than_the_last_write_is_refused_too() {
    for (_, placement) in both_placements(PS) {
        let sidecar = matches!(placement, ChecksumPlacement::Sidecar(_));
        let (c, det) = rolled_back(placement.clone(), false);
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        // Only the replica that missed the older write, and a backup taken
        // from it before the backup with the current page.
        rep.add_replica(Arc::new(c.replica(0))).unwrap();
        rep.add_fallback(Arc::new(StoreSource {
            name: "aborted",
            store: c.mirrors[0].clone(),
        }))
        .unwrap();
        rep.add_fallback(Arc::new(StoreSource::current("backup", &c)))
            .unwrap();
        c.raw.damage(PageId(2), Damage::Zero).unwrap();
        fence(&det, 2);
        let report = rep.repair_page(PageId(2)).unwrap();
        assert_eq!(
            report.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Fallback("backup".into())
            },
            "{placement:?}: {:?}",
            report.attempts
        );
        assert_eq!(c.local(2), c.current(2), "{placement:?}");
        assert_eq!(report.attempts.len(), 3);
        for a in &report.attempts[..2] {
            let refused = if sidecar {
                matches!(
                    a.result,
                    AttemptResult::FailedVerification(Error::ChecksumMismatch { .. })
                )
            } else {
                matches!(
                    a.result,
                    AttemptResult::NotLastWrite {
                        lsn: Some(Lsn(10)),
                        written: Lsn(5)
                    }
                )
            };
            assert!(refused, "{placement:?}: {a:?}");
        }
        // Without the backup the page stays fenced, never reverted.
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        rep.add_replica(Arc::new(c.replica(0))).unwrap();
        c.raw.damage(PageId(2), Damage::Zero).unwrap();
        fence(&det, 2);
        let report = rep.repair_page(PageId(2)).unwrap();
        match &report.outcome {
            RepairOutcome::Irreparable { reason } if !sidecar => {
                assert!(reason.contains("last write has 5"), "{reason}")
            }
            RepairOutcome::Irreparable { .. } => {}
            other => panic!("{placement:?}: {other:?}"),
        }
        assert_eq!(c.local(2), vec![0u8; PS], "{placement:?}: nothing written");
    }
}
