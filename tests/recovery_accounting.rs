//! Goal: the manager's accounting tells the truth — time to heal, MTTR and
//! RTO compliance count slow heals and escalations as misses, an incident
//! resumed after a restart keeps the age it had, and each escalation
//! reaches the host once by callback and once by event, with its report.
//! Method: a real manager over sealed pages (both checksum placements where
//! pages are involved), host remedies scripted to take simulated time by
//! advancing a `ManualClock` while they run, failures sent on the manager's
//! bus, and a restart onto a new clock whose origin differs from the first.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use selfheal::healer::{
    Applied, Case, EscalationReport, HealerConfig, Outcome, Problem, Remedy, RemedyContext,
    Verified,
};
use selfheal::testing::both_placements;
use selfheal::{
    Clock, Failure, FailureKind, ManualClock, PageId, Priority, RecoveryConfig, RecoveryEvent,
    Result, Source, StoreReplica,
};

mod recovery_common;
use recovery_common::*;

const IDLE: Duration = Duration::from_secs(20);

/// Treats anomalies: `slow` takes 40 s of the manual clock and heals,
/// `fast` heals at once, `broken` does not heal.
#[derive(Debug)]
struct Timed {
    clock: ManualClock,
}

impl Remedy for Timed {
    fn name(&self) -> &str {
        "timed"
    }
    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::ANOMALY
    }
    fn execute(&self, _: &RemedyContext, case: &Case<'_>) -> Result<Applied> {
        if case.target().to_string().contains("slow") {
            self.clock.advance(Duration::from_secs(40));
        }
        Ok(Applied::new("acted"))
    }
    fn verify(&self, _: &RemedyContext, case: &Case<'_>, _: &Applied) -> Result<Verified> {
        Ok(if case.target().to_string().contains("broken") {
            Verified::not_healed("still anomalous")
        } else {
            Verified::healed("back in band")
        })
    }
}

fn p0_anomaly(metric: &str, clock: &ManualClock) -> Failure {
    let mut f = Failure::new(
        Source::Host,
        FailureKind::Anomaly {
            metric: Arc::from(metric),
        },
        "z = 9.3",
        clock.now_ns(),
    );
    f.priority = Priority::P0;
    f
}

#[test]
fn a_slow_heal_and_an_escalation_are_rto_misses_and_mttr_is_the_mean() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(5));
    let callbacks: Arc<Mutex<Vec<EscalationReport>>> = Arc::default();
    let cb = callbacks.clone();
    let healer = HealerConfig::new()
        .remedy(Arc::new(Timed {
            clock: clock.clone(),
        }))
        .max_attempts(1)
        .on_escalation(Arc::new(move |r: &EscalationReport| {
            cb.lock().push(r.clone())
        }));
    let c2 = clock.clone();
    let (_raw, _mirror, m) = rig(selfheal::ChecksumPlacement::Trailer, 4, dir.path(), |c| {
        c.clock(Arc::new(c2)).healer(healer)
    });
    let sub = m.subscribe(64).unwrap();
    m.start().unwrap();
    // One at a time, so each remedy's clock advance lands in its own
    // incident.
    for metric in ["slow", "fast", "broken"] {
        m.failure_sink().send(p0_anomaly(metric, &clock));
        assert!(m.wait_idle(IDLE), "{metric}");
    }
    let s = m.stats();
    assert_eq!((s.recovered, s.escalated), (2, 1), "{s:?}");
    assert_eq!(s.within_rto, 1, "only the fast heal is within 30 s");
    assert_eq!(
        s.rto_compliance(),
        Some(1.0 / 3.0),
        "the escalated P0 is a miss: {s:?}"
    );
    assert_eq!(
        s.mttr,
        Some(Duration::from_secs(20)),
        "mean of 40 s and 0 s"
    );
    let incs = m.incidents();
    let slow = incs
        .iter()
        .find(|i| i.target.to_string().contains("slow"))
        .unwrap();
    assert_eq!(slow.time_to_heal(), Some(Duration::from_secs(40)));
    let pm = slow.postmortem(Some(m.rto(Priority::P0)));
    assert_eq!(pm.time_to_heal_ms, Some(40_000));
    assert!(!pm.rto_met, "{pm:?}");
    let events: Vec<RecoveryEvent> = sub.events().try_iter().collect();
    let healed: Vec<bool> = events
        .iter()
        .filter_map(|e| match e {
            RecoveryEvent::Healed { within_rto, .. } => Some(*within_rto),
            _ => None,
        })
        .collect();
    assert_eq!(healed, [false, true]);
    // Exactly one escalation: one callback and one event, with one report.
    let reports = callbacks.lock().clone();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let escalated: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RecoveryEvent::Escalated { id, report, .. } => Some((*id, report.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(escalated.len(), 1, "{events:#?}");
    let (id, report) = &escalated[0];
    let report = report.as_ref().expect("the event carries the report");
    assert_eq!(*id, reports[0].incident);
    assert_eq!(**report, reports[0]);
    assert_eq!(report.attempts.len(), 1);
    assert_eq!(report.attempts[0].remedy, "timed");
    m.stop().unwrap();
}

#[test]
fn a_resumed_incident_keeps_its_age_on_the_next_runs_clock() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(1_000));
        let c2 = clock.clone();
        // A long cooldown keeps the re-damaged page's incident open (deferred)
        // while the first run's clock moves on.
        let (raw, mirror, m) = rig(placement.clone(), 8, dir.path(), move |c| {
            c.clock(Arc::new(c2))
                .healer(HealerConfig::new().cooldown(Duration::from_secs(3_600)))
        });
        m.start().unwrap();
        damage(&raw, 6);
        read_finds(&m, 6);
        assert!(m.wait_idle(IDLE));
        damage(&raw, 6);
        read_finds(&m, 6);
        assert!(m.wait_idle(IDLE));
        assert_eq!(m.stats().open, 1);
        clock.advance(Duration::from_secs(25));
        let s = m.stats();
        assert_eq!((s.open_past_rto, s.rto_compliance()), (0, Some(1.0)));
        // Open past its RTO (P0: 30 s): a miss already.
        clock.advance(Duration::from_secs(10));
        let s = m.stats();
        assert_eq!(
            (s.open_past_rto, s.rto_compliance()),
            (1, Some(0.5)),
            "{s:?}"
        );
        m.stop().unwrap();
        drop(m);
        // The next process: its clock has another origin, and reads less
        // than the first run's did.
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(100));
        let c2 = clock.clone();
        let m = RecoveryConfig::new(raw.clone(), dir.path())
            .placement(placement)
            .replica(Arc::new(StoreReplica::new("mirror", mirror.clone())))
            .without_scrub()
            .clock(Arc::new(c2))
            .build()
            .unwrap();
        assert_eq!(m.start().unwrap().incidents_resumed, 1);
        assert!(m.wait_idle(IDLE));
        clock.advance(Duration::from_secs(1));
        assert_eq!(bytes(raw.as_ref(), 6), bytes(mirror.as_ref(), 6));
        let incs = m.incidents();
        assert_eq!(incs.len(), 1, "{incs:#?}");
        let inc = &incs[0];
        assert!(matches!(inc.outcome, Outcome::Healed { .. }));
        assert_eq!(inc.target, selfheal::Target::Page(PageId(6)));
        assert_eq!(
            inc.detected_ns(),
            Duration::from_secs(65).as_nanos() as u64,
            "detected 35 s before the save, on the new clock"
        );
        assert_eq!(inc.time_to_heal(), Some(Duration::from_secs(35)));
        let s = m.stats();
        assert_eq!(s.mttr, Some(Duration::from_secs(35)));
        assert_eq!(s.rto_compliance(), Some(0.0), "healed after its RTO");
        let pm = inc.postmortem(None);
        assert!(!pm.rto_met);
        let last = pm.timeline.last().unwrap();
        assert_eq!(last.offset_ms, 35_000, "{:#?}", pm.timeline);
        assert!(pm
            .timeline
            .windows(2)
            .all(|w| w[0].offset_ms <= w[1].offset_ms));
        m.stop().unwrap();
    }
}
