//! Goal: a repair never reverts a page to an older version: a verified copy
//! with a newer page LSN beats any number of older ones, also after a restart
//! empties the detector's memory, and a rejected copy does not use up the
//! copies a repair may fetch. Method: mirrors made to lag by leaving host
//! writes out of them, a "restart" as a new detector and repairer over the
//! same store, under both checksum placements.

mod repair_common;

use std::sync::Arc;

use repair_common::{fence, placements, Cluster, PS};
use selfheal::corruption::PageState;
use selfheal::repair::{AttemptResult, CopySource, RepairConfig, RepairOutcome};
use selfheal::testing::{Damage, FaultyReplica};
use selfheal::{ChecksumPlacement, Error, Lsn, PageId, ReplicaId};

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
    for placement in placements() {
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
    for placement in placements() {
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
    for placement in placements() {
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
    for placement in placements() {
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
    for placement in placements() {
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
