//! Goal: no page stays `Repairing` and no repair waits forever: a replica
//! that panics or hangs is skipped and the repair finishes within its
//! deadline; a repair that unwinds gives its page back for the next repair.
//! Method: `FaultyReplica` hang and panic faults, a panicking fallback source,
//! real detectors under both checksum placements, each call bounded by a
//! watchdog so that a hang fails the test instead of stalling it.

mod repair_common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use repair_common::{fence, placements, within, Cluster, PS};
use selfheal::corruption::PageState;
use selfheal::repair::{AttemptResult, CopySource, RepairConfig, RepairOutcome};
use selfheal::testing::{Damage, FaultyReplica};
use selfheal::{Error, Lsn, PageId, PageSource, PageStore, ReplicaId};

const TIMEOUT: Duration = Duration::from_millis(200);
/// Generous: the machine may be loaded; the point is "not forever".
const WATCHDOG: Duration = Duration::from_secs(30);

#[test]
fn a_hung_replica_is_abandoned_at_the_deadline_and_skipped_by_the_next_repair() {
    for placement in placements() {
        let c = Cluster::new(placement, 4, 2);
        let det = c.detector(None);
        for p in 0..4 {
            c.write(&det, p, p + 1, 0x40 + p as u8, &[0, 1]);
        }
        let hung = Arc::new(FaultyReplica::new(Arc::new(c.replica(0))));
        hung.set_hang(true);
        let rep = Arc::new(
            RepairConfig::new()
                .replica_read_timeout(TIMEOUT)
                .build(det.clone())
                .unwrap(),
        );
        rep.add_replica(hung.clone()).unwrap();
        rep.add_replica(Arc::new(c.replica(1))).unwrap();
        for p in [1, 2] {
            c.raw.damage(PageId(p), Damage::Zero).unwrap();
            fence(&det, p);
        }

        let started = Instant::now();
        let first = {
            let rep = rep.clone();
            within(WATCHDOG, move || rep.repair_page(PageId(1)).unwrap())
        };
        let took = started.elapsed();
        assert_eq!(
            first.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("m1"))
            },
            "{:?}",
            first.attempts
        );
        assert!(took >= TIMEOUT, "it waited for the deadline ({took:?})");
        assert!(
            matches!(&first.attempts[0].result,
                AttemptResult::Unavailable(Error::ReplicaUnavailable { reason, .. }) if reason.contains("deadline")),
            "{:?}",
            first.attempts[0].result
        );
        assert_eq!(det.page_state(PageId(1)), Some(PageState::Repaired));
        assert_eq!(c.local(1), c.current(1));

        // The read is still hung: the next repair does not wait for it, does
        // not start another read of the hung replica, and uses the other one.
        let started = Instant::now();
        let second = {
            let rep = rep.clone();
            within(WATCHDOG, move || rep.repair_page(PageId(2)).unwrap())
        };
        assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
        assert_eq!(
            second.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("m1"))
            }
        );
        assert!(matches!(
            second.attempts.last().map(|a| &a.result),
            Some(AttemptResult::Unavailable(_))
        ));
        assert_eq!(hung.reads(), 1, "no second read of a hung replica");
        assert_eq!(hung.hung_reads(), 1);
        let s = &rep.stats().replicas[0];
        assert_eq!((s.timed_out, s.unavailable), (1, 2));
        hung.set_hang(false);
    }
}

#[test]
fn a_panicking_replica_is_skipped_and_the_page_does_not_stay_repairing() {
    for placement in placements() {
        let c = Cluster::new(placement, 4, 2);
        let det = c.detector(None);
        for p in 0..4 {
            c.write(&det, p, p + 1, 0x50 + p as u8, &[0, 1]);
        }
        let panicky = Arc::new(FaultyReplica::new(Arc::new(c.replica(0))));
        panicky.set_panic(true);
        // A panic answers at once; the deadline is generous because printing
        // the panic's backtrace may take a while on a loaded machine.
        let rep = RepairConfig::new()
            .replica_read_timeout(Duration::from_secs(60))
            .build(det.clone())
            .unwrap();
        rep.add_replica(panicky.clone()).unwrap();
        rep.add_replica(Arc::new(c.replica(1))).unwrap();
        c.raw.damage(PageId(3), Damage::Junk { seed: 3 }).unwrap();
        fence(&det, 3);
        let report = catch_unwind(AssertUnwindSafe(|| rep.repair_page(PageId(3))))
            .expect("a replica's panic must not unwind through the repair")
            .unwrap();
        assert_ne!(det.page_state(PageId(3)), Some(PageState::Repairing));
        assert_eq!(
            report.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("m1"))
            }
        );
        assert!(
            matches!(&report.attempts[0].result,
                AttemptResult::Unavailable(Error::ReplicaUnavailable { reason, .. }) if reason.contains("panicked")),
            "{:?}",
            report.attempts[0].result
        );
        assert_eq!(c.local(3), c.current(3));
    }
}

/// A fallback whose read panics (a bug in the host's code).
#[derive(Debug)]
struct PanickingSource;

impl PageSource for PanickingSource {
    fn name(&self) -> String {
        "panicking".into()
    }
    fn read_page(&self, page: PageId, _: Option<Lsn>, _: &mut [u8]) -> selfheal::Result<bool> {
        panic!("fallback panicked reading page {page} (injected)");
    }
}

#[test]
fn a_repair_that_unwinds_gives_the_page_back_for_the_next_repair() {
    for placement in placements() {
        let c = Cluster::new(placement, 4, 1);
        let det = c.detector(None);
        for p in 0..4 {
            c.write(&det, p, p + 1, 0x60 + p as u8, &[0]);
        }
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        rep.add_fallback(Arc::new(PanickingSource)).unwrap();
        c.raw.damage(PageId(0), Damage::Zero).unwrap();
        fence(&det, 0);
        let unwound = catch_unwind(AssertUnwindSafe(|| rep.repair_page(PageId(0))));
        assert!(unwound.is_err(), "the host's panic reaches its caller");
        assert_eq!(
            det.page_state(PageId(0)),
            Some(PageState::Suspect),
            "the page waits for repair again"
        );
        let mut b = vec![0u8; PS];
        assert!(matches!(
            det.read_verified(PageId(0), &mut b),
            Err(Error::PageFenced { .. })
        ));
        // A repairer with a working replica picks it up as a pending page.
        let good = RepairConfig::new().build(det.clone()).unwrap();
        good.add_replica(Arc::new(c.replica(0))).unwrap();
        let reports = good.repair_pending();
        assert_eq!(reports.len(), 1);
        assert!(reports[0].is_repaired(), "{:?}", reports[0].outcome);
        det.read_verified(PageId(0), &mut b).unwrap();
        assert_eq!(b, c.current(0));
        let _ = c.raw.page_count();
    }
}
