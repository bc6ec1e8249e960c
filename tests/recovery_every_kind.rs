//! Goal: every `FailureKind` a host or component can report, sent through
//! the manager's bus, ends as a closed incident — healed, or escalated with
//! a report that names the problem and every remedy tried — and none is
//! left open, lost or able to stop the manager.
//! Method: one manager over sealed pages with a mirror replica (both
//! checksum placements); one failure of each kind sent at once on its
//! failure sink; after the queue drains, each kind's incident is looked up
//! by its target and its outcome checked; then a corrupt page is still
//! healed, so the manager goes on working after all of them.

use std::sync::Arc;
use std::time::Duration;

use selfheal::healer::Outcome;
use selfheal::testing::both_placements;
use selfheal::{Failure, FailureKind, PageId, ReplicaId, Source, Target, TxnId};

mod recovery_common;
use recovery_common::*;

fn every_kind() -> Vec<FailureKind> {
    let m: Arc<str> = Arc::from("disk_used_pct");
    vec![
        FailureKind::CorruptPage { page: PageId(1) },
        FailureKind::IrreparablePage { page: PageId(2) },
        FailureKind::Deadlock { victim: TxnId(3) },
        FailureKind::InFlightAtCrash { count: 2 },
        FailureKind::ReplicaFailing {
            replica: ReplicaId::new("mirror"),
        },
        FailureKind::RollbackBlocked {
            txn: TxnId(4),
            page: PageId(3),
        },
        FailureKind::JournalPoisoned,
        FailureKind::UncleanShutdown,
        FailureKind::SnapshotFailed,
        FailureKind::ScrubCursorFailed,
        FailureKind::ComponentSuspect {
            component: Arc::from("host-writer"),
        },
        FailureKind::ComponentDead {
            component: Arc::from("host-reader"),
        },
        FailureKind::ProcessGone { pid: 9 },
        FailureKind::HealthDegraded { metric: m.clone() },
        FailureKind::HealthCritical {
            metric: Arc::from("mem_rss_pct"),
        },
        FailureKind::PredictedFailure {
            metric: Arc::from("read_errors"),
            eta: Duration::from_secs(60),
        },
        FailureKind::Anomaly {
            metric: Arc::from("latency_ms"),
        },
        FailureKind::ProbeFailed {
            metric: Arc::from("probe_ms"),
        },
        FailureKind::WorkerDied {
            component: Arc::from("host-compactor"),
        },
        FailureKind::RunMarkerFailed,
        FailureKind::JournalStalled { no_space: false },
        FailureKind::ChecksumLogStalled { no_space: false },
    ]
}

#[test]
fn every_failure_kind_ends_healed_or_escalated_with_a_report() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = rig(placement, 8, dir.path(), |c| c);
        m.start().unwrap();
        // Page 1 really is corrupt; page 2 is reported irreparable while
        // the replica holds a good copy.
        damage(&raw, 1);
        damage(&raw, 2);
        let kinds = every_kind();
        for k in &kinds {
            m.failure_sink().send(Failure::new(
                Source::Host,
                k.clone(),
                format!("reported by the test: {k:?}"),
                0,
            ));
        }
        assert!(m.wait_idle(Duration::from_secs(120)), "{:?}", m.stats());
        let incs = m.incidents();
        for k in &kinds {
            let target = Failure::new(Source::Host, k.clone(), "", 0).target();
            let inc = incs
                .iter()
                .rev()
                .find(|i| i.target == target)
                .unwrap_or_else(|| panic!("no incident for {k:?}: {incs:#?}"));
            match &inc.outcome {
                Outcome::Healed { remedy } => assert!(!remedy.is_empty(), "{k:?}"),
                Outcome::Escalated => {
                    let report = inc
                        .escalation
                        .as_ref()
                        .unwrap_or_else(|| panic!("{k:?}: escalated with no report"));
                    let text = report.to_string();
                    assert!(
                        text.contains(inc.diagnosis.problem.as_str()),
                        "{k:?}: the report names the problem: {text}"
                    );
                    assert_eq!(
                        report.attempts.len(),
                        inc.attempts.len(),
                        "{k:?}: every attempt is in the report"
                    );
                }
                other => panic!("{k:?}: {other:?}"),
            }
        }
        // The pages that were really bad were healed from the replica.
        for p in [1u64, 2] {
            let inc = incs
                .iter()
                .rev()
                .find(|i| i.target == Target::Page(PageId(p)))
                .unwrap();
            assert!(
                matches!(inc.outcome, Outcome::Healed { .. }),
                "page {p}: {inc:#?}"
            );
            assert_eq!(bytes(raw.as_ref(), p), bytes(mirror.as_ref(), p));
        }
        // Incidents deferred by a cooldown stay open (a later pass heals
        // or escalates them); every kind above already has its closed one.
        // Still working after all of them.
        damage(&raw, 5);
        read_finds(&m, 5);
        assert!(m.wait_idle(Duration::from_secs(30)));
        assert_eq!(bytes(raw.as_ref(), 5), bytes(mirror.as_ref(), 5));
        m.stop().unwrap();
    }
}
