//! Goal: the repairer reports a replica that keeps failing — down, failing
//! its reads, hung past its deadline, panicking, or serving copies that fail verification — as one
//! `ReplicaFailing` from `Source::DataRepairer` on its failure bus, once per
//! episode, stamped with its clock; the episode ends when the replica serves
//! a verified copy, and a new run of failures is reported again. Method:
//! `FaultyReplica` faults beside a good replica, real detectors under both
//! checksum placements, a `ManualClock` stepped before each repair, and a
//! watchdog on every repair so that a hang fails the test instead of
//! stalling it.

mod repair_common;

use std::sync::Arc;
use std::time::Duration;

use repair_common::{fence, within, Cluster, PS};
use selfheal::repair::{AttemptResult, CopySource, DataRepairer, RepairConfig, RepairOutcome};
use selfheal::testing::{both_placements, Damage, FaultyReplica};
use selfheal::{
    Clock, CorruptionDetector, Error, FailureKind, FailureSink, ManualClock, PageId, ReplicaId,
    Source, Target,
};

const TIMEOUT: Duration = Duration::from_millis(100);
const COOLOFF: Duration = Duration::from_secs(30);
const WATCHDOG: Duration = Duration::from_secs(30);
const AFTER: u32 = 3;
/// The page used once the fault is cleared (never corrupted on the replica).
const CLEAN_PAGE: u64 = 7;

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Its status says it cannot serve reads.
    Down,
    /// Its reads fail with an error while its status says it serves.
    ReadError,
    /// Its reads hang past the deadline.
    Hang,
    /// Its reads panic.
    Panic,
    /// It serves damaged copies (of every page but `CLEAN_PAGE`).
    Corrupt,
}

impl Fault {
    fn set(self, r: &FaultyReplica, on: bool) {
        match self {
            Fault::Down => r.set_down(on),
            Fault::ReadError => r.set_read_error(on),
            Fault::Hang => r.set_hang(on),
            Fault::Panic => r.set_panic(on),
            Fault::Corrupt => {
                if on {
                    for p in 0..CLEAN_PAGE {
                        r.corrupt(PageId(p), Damage::Zero);
                    }
                }
            }
        }
    }
}

struct Rig {
    c: Cluster,
    det: Arc<CorruptionDetector>,
    rep: Arc<DataRepairer>,
    faulty: Arc<FaultyReplica>,
    sink: FailureSink,
    clock: ManualClock,
}

fn rig(placement: selfheal::ChecksumPlacement) -> Rig {
    let c = Cluster::new(placement, 8, 2);
    let det = c.detector(None);
    for p in 0..8 {
        c.write(&det, p, p + 1, 0x30 + p as u8, &[0, 1]);
    }
    let faulty = Arc::new(FaultyReplica::new(Arc::new(c.replica(0))));
    let sink = FailureSink::new(64);
    let clock = ManualClock::new();
    let rep = Arc::new(
        RepairConfig::new()
            .replica_read_timeout(TIMEOUT)
            .replica_cooloff(COOLOFF)
            .replica_failing_after(AFTER)
            .clock(Arc::new(clock.clone()))
            .failure_sink(sink.clone())
            .build(det.clone())
            .unwrap(),
    );
    rep.add_replica(faulty.clone()).unwrap();
    rep.add_replica(Arc::new(c.replica(1))).unwrap();
    Rig {
        c,
        det,
        rep,
        faulty,
        sink,
        clock,
    }
}

impl Rig {
    /// Damages page `p` locally, fences it, steps the clock by a second and
    /// repairs it; returns the result of the faulty replica's attempt.
    fn repair(&self, p: u64) -> Option<AttemptResult> {
        self.c.raw.damage(PageId(p), Damage::Zero).unwrap();
        fence(&self.det, p);
        self.clock.advance(Duration::from_secs(1));
        let rep = self.rep.clone();
        let report = within(WATCHDOG, move || rep.repair_page(PageId(p)).unwrap());
        assert!(
            matches!(report.outcome, RepairOutcome::Repaired { .. }),
            "the good replica repairs page {p}: {:?}",
            report.attempts
        );
        assert_eq!(self.c.local(p), self.c.current(p));
        report
            .attempts
            .into_iter()
            .find(|a| a.source == CopySource::Replica(ReplicaId::new("m0")))
            .map(|a| a.result)
    }
}

fn failing_episodes(fault: Fault) {
    for (_, placement) in both_placements(PS) {
        let r = rig(placement);
        fault.set(&r.faulty, true);

        // Failures below the threshold say nothing.
        for p in 0..u64::from(AFTER) - 1 {
            let got = r.repair(p);
            assert!(
                !matches!(got, Some(AttemptResult::Verified)),
                "{fault:?}: {got:?}"
            );
            assert_eq!(r.sink.sent(), 0, "{fault:?}: reported too early");
        }
        // The failure that completes the run is reported, at its time.
        r.repair(u64::from(AFTER) - 1);
        let first: Vec<_> = r.sink.failures().try_iter().collect();
        assert_eq!(first.len(), 1, "{fault:?}: {first:?}");
        let f = &first[0];
        assert_eq!(f.source, Source::DataRepairer);
        assert_eq!(
            f.kind,
            FailureKind::ReplicaFailing {
                replica: ReplicaId::new("m0")
            }
        );
        assert_eq!(f.target(), Target::Replica(ReplicaId::new("m0")));
        assert_eq!(f.detected_at_ns, r.clock.now_ns(), "{fault:?}");
        assert!(
            f.evidence.contains(&format!("{AFTER} calls")),
            "{}",
            f.evidence
        );

        // More failures in the same episode are not reported again.
        for p in 3..5 {
            r.repair(p);
        }
        assert_eq!(r.sink.sent(), 1, "{fault:?}: once per episode");

        // The fault clears; once the replica serves a verified copy, the
        // episode is over.
        fault.set(&r.faulty, false);
        let mut served = false;
        for _ in 0..50 {
            while r.faulty.hung_reads() > 0 {
                std::thread::yield_now();
            }
            r.clock.advance(COOLOFF);
            if matches!(r.repair(CLEAN_PAGE), Some(AttemptResult::Verified)) {
                served = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(served, "{fault:?}: the replica never served again");
        assert_eq!(r.sink.sent(), 1);

        // A new run of failures is a new episode.
        fault.set(&r.faulty, true);
        for p in 0..u64::from(AFTER) {
            r.repair(p);
        }
        let second: Vec<_> = r.sink.failures().try_iter().collect();
        assert_eq!(second.len(), 1, "{fault:?}: {second:?}");
        assert!(second[0].id > f.id);
        assert_eq!(second[0].detected_at_ns, r.clock.now_ns());
        assert_eq!(second[0].source, Source::DataRepairer);
        fault.set(&r.faulty, false);
    }
}

#[test]
fn a_replica_that_is_down_is_reported_failing_once_per_episode() {
    failing_episodes(Fault::Down);
}

#[test]
fn a_replica_whose_reads_fail_is_reported_failing_once_per_episode() {
    failing_episodes(Fault::ReadError);
}

#[test]
fn a_replica_that_hangs_past_its_deadline_is_reported_failing_once_per_episode() {
    failing_episodes(Fault::Hang);
}

#[test]
fn a_replica_that_panics_is_reported_failing_once_per_episode() {
    failing_episodes(Fault::Panic);
}

#[test]
fn a_replica_serving_corrupt_copies_is_reported_failing_once_per_episode() {
    failing_episodes(Fault::Corrupt);
}

#[test]
fn a_lagging_replica_is_not_failing_and_the_default_bus_is_the_detectors() {
    for (_, placement) in both_placements(PS) {
        let c = Cluster::new(placement, 8, 2);
        let det = c.detector(None);
        for p in 0..8 {
            c.write(&det, p, p + 1, 0x30 + p as u8, &[0, 1]);
            // Mirror 0 does not get the second write: it lags.
            c.write(&det, p, p + 10, 0x50 + p as u8, &[1]);
        }
        let rep = RepairConfig::new()
            .replica_failing_after(1)
            .build(det.clone())
            .unwrap();
        assert_eq!(rep.failure_sink().sent(), det.failure_sink().sent());
        rep.add_replica(Arc::new(c.replica(0))).unwrap();
        rep.add_replica(Arc::new(c.replica(1))).unwrap();
        let bus = det.failures();
        for p in 0..3 {
            c.raw.damage(PageId(p), Damage::Zero).unwrap();
            fence(&det, p);
            let report = rep.repair_page(PageId(p)).unwrap();
            assert!(matches!(report.outcome, RepairOutcome::Repaired { .. }));
        }
        let failing: Vec<_> = bus
            .try_iter()
            .filter(|f| f.source == Source::DataRepairer)
            .collect();
        assert!(failing.is_empty(), "lag is not a failure: {failing:?}");

        // A replica that fails once is reported on the detector's bus, at
        // the detector's clock.
        let down = Arc::new(FaultyReplica::new(Arc::new(c.replica(1))));
        let rep = RepairConfig::new()
            .replica_failing_after(1)
            .build(det.clone())
            .unwrap();
        rep.add_replica(down.clone()).unwrap();
        down.set_down(true);
        c.raw.damage(PageId(4), Damage::Zero).unwrap();
        fence(&det, 4);
        let report = rep.repair_page(PageId(4)).unwrap();
        assert!(matches!(report.outcome, RepairOutcome::Irreparable { .. }));
        let got: Vec<_> = bus
            .try_iter()
            .filter(|f| f.source == Source::DataRepairer)
            .map(|f| (f.kind.name(), f.target()))
            .collect();
        assert_eq!(
            got,
            [
                ("replica_failing", Target::Replica(ReplicaId::new("m1"))),
                ("irreparable_page", Target::Page(PageId(4))),
            ]
        );
    }
}

#[test]
fn a_threshold_of_zero_is_refused() {
    let c = Cluster::new(selfheal::ChecksumPlacement::Trailer, 1, 0);
    let det = c.detector(None);
    let err = RepairConfig::new()
        .replica_failing_after(0)
        .build(det)
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig { field, .. } if field == "replica_failing_after"),
        "{err}"
    );
}
