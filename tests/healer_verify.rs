//! Goal: a built-in remedy never reports a verified heal it did not check.
//! Method: each built-in whose verification has nothing to re-read (no
//! heartbeats, no health monitor, a fail-over, an index rebuilt for a
//! non-page target) is run by a healer whose host acknowledges every
//! action; its attempt must be `Unverified`, not counted as a success by
//! the learner. The targeted scrub runs over a page still corrupt (real
//! sealed pages, both checksum placements) and must not verify.
//! Also: a remedy that did not verify, or failed after a partial effect,
//! but left health worse is undone (a scripted health probe on a
//! `ManualClock`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use selfheal::healer::builtin::{FailOver, FreeDiskSpace, RebuildIndex, TargetedScrub};
use selfheal::healer::{
    Applied, AttemptOutcome, Case, HealerConfig, Outcome, Problem, Remedy, RemedyContext, Step,
    Verified,
};
use selfheal::health::Thresholds;
use selfheal::testing::{both_placements, seal_numbered_pages, Damage};
use selfheal::{
    CorruptionConfig, Error, Failure, FailureKind, HealthConfig, HostAction, HostActions,
    ManualClock, MemStore, PageId, PageStore, ReplicaId, Result, Source,
};

const PS: usize = 4096;

/// A host that acknowledges every action.
#[derive(Debug, Default)]
struct Host;

impl HostActions for Host {
    fn supports(&self, _: HostAction) -> bool {
        true
    }
    fn restart_component(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn fail_over(&self, _: &ReplicaId) -> Result<()> {
        Ok(())
    }
    fn free_disk_space(&self, bytes: u64) -> Result<u64> {
        Ok(bytes)
    }
    fn rebuild_index(&self, _: &str) -> Result<()> {
        Ok(())
    }
}

fn ctx() -> RemedyContext {
    RemedyContext::new()
        .clock(Arc::new(ManualClock::new()))
        .host(Arc::new(Host))
}

/// Heals `failure` with `remedy` first and returns its first attempt's
/// outcome and the remedy's learned successes.
fn first_attempt(
    remedy: Arc<dyn Remedy>,
    problem: Problem,
    failure: Failure,
) -> (AttemptOutcome, f64, Outcome) {
    let name = remedy.name().to_string();
    let healer = HealerConfig::new()
        .without_builtins()
        .remedy(remedy)
        .cold_start_order(problem.clone(), &[name.as_str()])
        .build(ctx())
        .unwrap();
    let inc = healer.heal(failure);
    assert_eq!(inc.diagnosis.problem, problem, "{inc:#?}");
    let a = inc.attempts.first().expect("the remedy was tried");
    assert_eq!(a.remedy, name);
    (
        a.outcome.clone(),
        healer.tally(&problem, &name).successes,
        inc.outcome,
    )
}

#[test]
fn a_restart_with_no_heartbeats_to_check_is_unverified() {
    let healer = HealerConfig::new().build(ctx()).unwrap();
    let failure = Failure::new(
        Source::CrashDetector,
        FailureKind::ComponentDead {
            component: Arc::from("wal"),
        },
        "no heartbeat",
        0,
    );
    let inc = healer.heal(failure);
    let a = inc
        .attempts
        .iter()
        .find(|a| a.remedy == "restart-component")
        .expect("tried");
    assert_eq!(a.outcome, AttemptOutcome::Unverified, "{inc:#?}");
    assert_eq!(
        healer
            .tally(&Problem::COMPONENT_DEAD, "restart-component")
            .successes,
        0.0,
        "an unverified attempt is no success to learn from"
    );
}

#[test]
fn a_fail_over_is_unverified() {
    let (outcome, successes, _) = first_attempt(
        Arc::new(FailOver::new(ReplicaId::new("mirror"))),
        Problem::JOURNAL_POISONED,
        Failure::new(
            Source::TransactionRollbackManager,
            FailureKind::JournalPoisoned,
            "poisoned",
            0,
        ),
    );
    assert_eq!(outcome, AttemptOutcome::Unverified);
    assert_eq!(successes, 0.0);
}

#[test]
fn disk_relief_without_a_health_monitor_is_unverified() {
    let remedy = FreeDiskSpace::new(1 << 20);
    let healer = HealerConfig::new().build(ctx()).unwrap();
    let failure = Failure::new(
        Source::TransactionRollbackManager,
        FailureKind::JournalPoisoned,
        "x",
        0,
    );
    let diagnosis = healer.diagnose(&failure);
    let case = Case {
        diagnosis: &diagnosis,
        failure: &failure,
    };
    let applied = remedy.execute(&ctx(), &case).unwrap();
    let v = remedy.verify(&ctx(), &case, &applied).unwrap();
    assert!(!v.checked, "{v:?}");
}

#[test]
fn an_index_rebuilt_for_a_non_page_target_is_unverified() {
    let (outcome, successes, _) = first_attempt(
        Arc::new(RebuildIndex::new("by-name", Problem::JOURNAL_POISONED)),
        Problem::JOURNAL_POISONED,
        Failure::new(
            Source::TransactionRollbackManager,
            FailureKind::JournalPoisoned,
            "poisoned",
            0,
        ),
    );
    assert_eq!(outcome, AttemptOutcome::Unverified);
    assert_eq!(successes, 0.0);
}

#[test]
fn a_targeted_scrub_over_a_page_still_bad_does_not_verify() {
    for (_, placement) in both_placements(PS) {
        let clock = ManualClock::new();
        let raw = Arc::new(MemStore::new(PS, 8).unwrap());
        let det = Arc::new(
            CorruptionConfig::new(placement)
                .clock(Arc::new(clock.clone()))
                .build(raw.clone())
                .unwrap(),
        );
        seal_numbered_pages(&det, 8).unwrap();
        let mut b = vec![0u8; PS];
        raw.read_page(PageId(5), &mut b).unwrap();
        Damage::BitFlip { byte: 100, bit: 3 }.apply(&mut b);
        raw.write_page(PageId(5), &b).unwrap();
        assert!(det.read_verified(PageId(5), &mut b).is_err());
        let ctx = RemedyContext::new()
            .clock(Arc::new(clock.clone()))
            .detector(det.clone());
        let healer = HealerConfig::new().build(ctx.clone()).unwrap();
        let failure = Failure::new(Source::Scrubber, FailureKind::JournalPoisoned, "x", 0);
        let diagnosis = healer.diagnose(&failure);
        let case = Case {
            diagnosis: &diagnosis,
            failure: &failure,
        };
        let applied = TargetedScrub.execute(&ctx, &case).unwrap();
        let v = TargetedScrub.verify(&ctx, &case, &applied).unwrap();
        assert!(!v.healed, "page 5 is still bad: {v:?}");
        assert!(v.checked);
        // Rewritten by the host: the scrub verifies.
        det.write_sealed(PageId(5), &mut vec![9u8; PS]).unwrap();
        let applied = TargetedScrub.execute(&ctx, &case).unwrap();
        let v = TargetedScrub.verify(&ctx, &case, &applied).unwrap();
        assert!(v.healed && v.checked, "{v:?}");
    }
}

/// A remedy that drives a metric critical and then does not verify, or
/// (`fail`) errs after its partial effect.
#[derive(Debug)]
struct Harmful {
    metric: Arc<AtomicU64>,
    undos: AtomicUsize,
    fail: bool,
}

impl Remedy for Harmful {
    fn name(&self) -> &str {
        "grow-pool"
    }
    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::RESOURCE_PRESSURE
    }
    fn execute(&self, _: &RemedyContext, _: &Case<'_>) -> Result<Applied> {
        self.metric.store(150, Ordering::SeqCst);
        if self.fail {
            return Err(Error::InvalidArgument {
                what: "pool",
                reason: "grown halfway, then the host refused".into(),
            });
        }
        Ok(Applied::new("pool grown to 512"))
    }
    fn verify(&self, _: &RemedyContext, _: &Case<'_>, _: &Applied) -> Result<Verified> {
        Ok(Verified::not_healed("the pool still waits"))
    }
    fn undo(&self, _: &RemedyContext, _: &Case<'_>, _: &Applied) -> Result<()> {
        self.undos.fetch_add(1, Ordering::SeqCst);
        self.metric.store(60, Ordering::SeqCst);
        Ok(())
    }
    fn undo_after_error(&self) -> bool {
        true
    }
}

fn harmful_run(fail: bool) -> (selfheal::healer::Incident, Arc<Harmful>, Arc<AtomicU64>) {
    let clock = ManualClock::new();
    let value = Arc::new(AtomicU64::new(60));
    let v = value.clone();
    let monitor = Arc::new(
        HealthConfig::new()
            .probe_fn("pool_wait_ms", Thresholds::new(50.0, 100.0), move || {
                Ok(v.load(Ordering::SeqCst) as f64)
            })
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap(),
    );
    monitor.sample_now().unwrap();
    let harmful = Arc::new(Harmful {
        metric: value.clone(),
        undos: AtomicUsize::new(0),
        fail,
    });
    let healer = HealerConfig::new()
        .without_builtins()
        .remedy(harmful.clone())
        .build(
            RemedyContext::new()
                .clock(Arc::new(clock.clone()))
                .health(monitor),
        )
        .unwrap();
    let inc = healer.heal(Failure::new(
        Source::HealthMonitor,
        FailureKind::HealthDegraded {
            metric: Arc::from("pool_wait_ms"),
        },
        "60 ms",
        0,
    ));
    assert_eq!(inc.diagnosis.problem, Problem::RESOURCE_PRESSURE);
    (inc, harmful, value)
}

#[test]
fn a_remedy_that_does_not_verify_and_makes_health_critical_is_undone() {
    let (inc, harmful, value) = harmful_run(false);
    assert_eq!(
        inc.attempts[0].outcome,
        AttemptOutcome::MadeWorse { undone: true },
        "{inc:#?}"
    );
    assert_eq!(harmful.undos.load(Ordering::SeqCst), 1);
    assert_eq!(value.load(Ordering::SeqCst), 60, "taken back");
    assert!(inc.timeline.iter().any(|e| e.step == Step::Undone));
    assert_eq!(inc.outcome, Outcome::Escalated);
}

#[test]
fn a_remedy_that_fails_after_a_partial_effect_is_undone_when_it_can_be() {
    let (inc, harmful, value) = harmful_run(true);
    assert!(
        matches!(inc.attempts[0].outcome, AttemptOutcome::Failed { .. }),
        "{inc:#?}"
    );
    assert_eq!(harmful.undos.load(Ordering::SeqCst), 1);
    assert_eq!(value.load(Ordering::SeqCst), 60, "taken back");
    assert!(inc.timeline.iter().any(|e| e.step == Step::Undone));
}
