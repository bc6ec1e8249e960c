//! Goal: the self-healing loop heals what it can, verified, never makes
//! things worse, learns which remedy works, and escalates once with every
//! attempt when nothing does.
//! Method: real components (a detector-protected `MemStore` under both
//! checksum placements, a replica behind `FaultyReplica`, a snapshot
//! manager, a health monitor with a scripted probe, host actions that
//! count their calls) on a `ManualClock`; pages are damaged under the
//! detector, the failure it reports on its bus is handed to the healer,
//! and the store's bytes are compared with the replica's afterwards.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use selfheal::audit::{AuditConfig, AuditQuery, EntryKind};
use selfheal::healer::{
    Applied, AttemptOutcome, BreakerConfig, BreakerState, Case, EscalationReport, HealerConfig,
    Outcome, Problem, Remedy, RemedyContext, Rule, SelfHealer, SkipReason, Step, Verified,
};
use selfheal::health::Thresholds;
use selfheal::snapshot::{Consistency, SnapshotConfig, SnapshotKind, SnapshotRequest, WriteGate};
use selfheal::testing::{both_placements, Damage, FaultyReplica};
use selfheal::{
    ChecksumPlacement, CorruptionConfig, CorruptionDetector, DataRepairer, Failure, FailureKind,
    HealthConfig, HostAction, HostActions, Lsn, ManualClock, MemStore, PageId, PageStore,
    RepairConfig, Replica, ReplicaId, ReplicaStatus, Result, Source, StateSnapshotManager,
    StoreReplica,
};

const PS: usize = 4096;
const PAGES: u64 = 24;

fn page(fill: u8) -> Vec<u8> {
    let mut b = vec![fill; PS];
    b[0] = 0x5a;
    b
}

struct Rig {
    clock: ManualClock,
    raw: Arc<MemStore>,
    det: Arc<CorruptionDetector>,
    mirror: Arc<MemStore>,
    replica: Arc<FaultyReplica>,
    repairer: Arc<DataRepairer>,
}

fn rig(placement: ChecksumPlacement) -> Rig {
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(1));
    let raw = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let det = Arc::new(
        CorruptionConfig::new(placement)
            .clock(Arc::new(clock.clone()))
            .build(raw.clone())
            .unwrap(),
    );
    for p in 0..PAGES {
        det.write_sealed(PageId(p), &mut page(p as u8 + 1)).unwrap();
    }
    let mirror = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mut b = vec![0u8; PS];
    for p in 0..PAGES {
        raw.read_page(PageId(p), &mut b).unwrap();
        mirror.write_page(PageId(p), &b).unwrap();
    }
    let replica = Arc::new(FaultyReplica::new(Arc::new(StoreReplica::new(
        "mirror",
        mirror.clone(),
    ))));
    let repairer = Arc::new(
        RepairConfig::new()
            .clock(Arc::new(clock.clone()))
            .build(det.clone())
            .unwrap(),
    );
    repairer.add_replica(replica.clone()).unwrap();
    Rig {
        clock,
        raw,
        det,
        mirror,
        replica,
        repairer,
    }
}

impl Rig {
    fn ctx(&self) -> RemedyContext {
        RemedyContext::new()
            .detector(self.det.clone())
            .repairer(self.repairer.clone())
    }

    /// Flips a bit of `p` under the detector, lets a verified read find it,
    /// and returns the failure the detector put on its bus.
    fn corrupt(&self, p: u64) -> Failure {
        let mut b = vec![0u8; PS];
        self.raw.read_page(PageId(p), &mut b).unwrap();
        Damage::BitFlip { byte: 100, bit: 3 }.apply(&mut b);
        self.raw.write_page(PageId(p), &b).unwrap();
        assert!(self
            .det
            .read_verified(PageId(p), &mut b)
            .unwrap_err()
            .is_corruption());
        self.det
            .failures()
            .try_iter()
            .find(|f| f.kind == FailureKind::CorruptPage { page: PageId(p) })
            .expect("the detector reported the page")
    }

    fn bytes(store: &MemStore, p: u64) -> Vec<u8> {
        let mut b = vec![0u8; PS];
        store.read_page(PageId(p), &mut b).unwrap();
        b
    }
}

fn names(inc: &selfheal::healer::Incident) -> Vec<(String, &'static str)> {
    inc.attempts
        .iter()
        .map(|a| (a.remedy.clone(), a.outcome.as_str()))
        .collect()
}

#[test]
fn a_corrupt_page_is_healed_from_the_replica_byte_for_byte() {
    for (_, placement) in both_placements(PS) {
        let r = rig(placement);
        let failure = r.corrupt(5);
        let healer = HealerConfig::new().build(r.ctx()).unwrap();
        let inc = healer.heal(failure);
        assert_eq!(
            inc.outcome,
            Outcome::Healed {
                remedy: "repair-from-replicas".into()
            },
            "{inc:#?}"
        );
        assert_eq!(inc.diagnosis.problem, Problem::CORRUPT_PAGE);
        assert_eq!(Rig::bytes(&r.raw, 5), Rig::bytes(&r.mirror, 5));
        let mut b = vec![0u8; PS];
        r.det.read_verified(PageId(5), &mut b).unwrap();
        let steps: Vec<Step> = inc.timeline.iter().map(|e| e.step).collect();
        assert_eq!(steps.first(), Some(&Step::Detected));
        assert_eq!(steps.last(), Some(&Step::Closed));
        assert!(steps.contains(&Step::Verified));
        assert!(inc.timeline.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
    }
}

/// A page reported corrupt that something else healed before the healer
/// took the incident (here the host rewrote it): the repair finds nothing
/// to do, the incident closes healed — but not "healed by" the repair, which
/// gets no credit in its learned record or its success count.
#[test]
fn a_page_healed_before_the_remedy_acts_closes_without_crediting_it() {
    for (_, placement) in both_placements(PS) {
        let r = rig(placement);
        let failure = r.corrupt(5);
        r.det.write_sealed(PageId(5), &mut page(0x77)).unwrap();
        let healer = HealerConfig::new().build(r.ctx()).unwrap();
        let inc = healer.heal(failure);
        assert!(matches!(inc.outcome, Outcome::Healed { .. }), "{inc:#?}");
        assert_eq!(
            names(&inc),
            vec![("repair-from-replicas".to_string(), "nothing to do")]
        );
        assert_eq!(
            inc.outcome_text(),
            "healed before any action (repair-from-replicas found nothing to do)"
        );
        let closed = inc.timeline.last().unwrap();
        assert_eq!(closed.step, Step::Closed);
        assert_eq!(closed.text, inc.outcome_text());
        assert!(inc
            .postmortem_markdown(None)
            .contains("healed before any action"));
        // No evidence for or against the repair.
        let t = healer.tally(&Problem::CORRUPT_PAGE, "repair-from-replicas");
        assert_eq!(t.total(), 0.0, "{t:?}");
        // The host's write stands.
        assert_eq!(Rig::bytes(&r.raw, 5)[1..PS / 2], page(0x77)[1..PS / 2]);
        // A page the repair does heal is credited as before.
        let inc = healer.heal(r.corrupt(6));
        assert_eq!(inc.outcome_text(), "healed by repair-from-replicas");
        assert_eq!(
            healer
                .tally(&Problem::CORRUPT_PAGE, "repair-from-replicas")
                .total(),
            1.0
        );
    }
}

/// A replica whose read of a page, once armed, has the host write a newer
/// version of that page first: the write races the repair that fetches it.
#[derive(Debug)]
struct RacingReplica {
    inner: StoreReplica,
    det: Arc<CorruptionDetector>,
    armed: Mutex<Option<Vec<u8>>>,
    /// When set (the store, the replica's store), the host's write reaches
    /// the replica too, and is damaged below the detector right after it
    /// lands (a write the medium did not keep).
    rot: Mutex<Option<(Arc<MemStore>, Arc<MemStore>)>>,
    /// Whether the host's write (and its damage) comes with every read,
    /// not only the next one.
    every_read: AtomicBool,
}

/// What `slot` holds: taken, or (`keep`) a copy left in place.
fn take<T: Clone>(slot: &Mutex<Option<T>>, keep: bool) -> Option<T> {
    if keep {
        slot.lock().clone()
    } else {
        slot.lock().take()
    }
}

impl Replica for RacingReplica {
    fn id(&self) -> ReplicaId {
        self.inner.id()
    }
    fn page_size(&self) -> usize {
        PS
    }
    fn status(&self) -> ReplicaStatus {
        self.inner.status()
    }
    fn read_page(&self, p: PageId, buf: &mut [u8]) -> Result<()> {
        self.inner.read_page(p, buf)?;
        let every = self.every_read.load(Ordering::SeqCst);
        if let Some(mut newer) = take(&self.armed, every) {
            self.det.write_sealed(p, &mut newer)?;
            if let Some((raw, mirror)) = take(&self.rot, every) {
                let mut b = vec![0u8; PS];
                raw.read_page(p, &mut b)?;
                mirror.write_page(p, &b)?;
                Damage::BitFlip { byte: 200, bit: 5 }.apply(&mut b);
                raw.write_page(p, &b)?;
            }
        }
        Ok(())
    }
}

/// `healer.heal_batch(items)`, its new incident ids taken from `next`.
fn batch(
    healer: &SelfHealer,
    items: Vec<(u64, Failure, Vec<Failure>)>,
    next: &mut u64,
) -> Vec<selfheal::healer::Incident> {
    healer.heal_batch(items, &mut || {
        *next += 1;
        *next
    })
}

/// A repairer whose one replica is a `RacingReplica` over the rig's
/// mirror, and a healer's context over it and the rig's detector.
fn racing(r: &Rig) -> (Arc<RacingReplica>, Arc<DataRepairer>, RemedyContext) {
    let racing = Arc::new(RacingReplica {
        inner: StoreReplica::new("racer", r.mirror.clone()),
        det: r.det.clone(),
        armed: Mutex::new(None),
        rot: Mutex::new(None),
        every_read: AtomicBool::new(false),
    });
    let repairer = Arc::new(
        RepairConfig::new()
            .clock(Arc::new(r.clock.clone()))
            .build(r.det.clone())
            .unwrap(),
    );
    repairer.add_replica(racing.clone()).unwrap();
    let ctx = RemedyContext::new()
        .detector(r.det.clone())
        .repairer(repairer.clone());
    (racing, repairer, ctx)
}

/// A host write that lands while the repair of its page runs stands, and
/// the page is healed by it, not by the repair: on its own and in a page
/// set, the attempt is "nothing to do" and the repair gets no credit.
#[test]
fn a_host_write_racing_the_repair_heals_the_page_and_gives_the_repair_no_credit() {
    for (_, placement) in both_placements(PS) {
        let r = rig(placement);
        let (racing, repairer, ctx) = racing(&r);
        let healer = HealerConfig::new().build(ctx).unwrap();
        let failure = r.corrupt(5);
        *racing.armed.lock() = Some(page(0x77));
        let inc = healer.heal(failure);
        assert!(matches!(inc.outcome, Outcome::Healed { .. }), "{inc:#?}");
        assert_eq!(
            names(&inc),
            vec![("repair-from-replicas".to_string(), "nothing to do")],
            "{inc:#?}"
        );
        assert!(inc.healed_without_action());
        assert_eq!(repairer.stats().superseded, 1);
        assert_eq!(Rig::bytes(&r.raw, 5)[1..PS / 2], page(0x77)[1..PS / 2]);
        // Two pages healed as a set: the raced one gives no credit, the
        // other one does.
        let items = vec![(1, r.corrupt(8), Vec::new()), (2, r.corrupt(9), Vec::new())];
        *racing.armed.lock() = Some(page(0x66));
        let mut next = 100;
        let incs = batch(&healer, items, &mut next);
        assert_eq!(incs.len(), 1, "{incs:#?}");
        assert!(
            matches!(incs[0].outcome, Outcome::Healed { .. }),
            "{incs:#?}"
        );
        assert!(!incs[0].healed_without_action());
        assert_eq!(repairer.stats().superseded, 2);
        // The host's write stands on the raced page; the other was repaired.
        let raced: Vec<u64> = [8, 9]
            .into_iter()
            .filter(|&p| Rig::bytes(&r.raw, p)[1..PS / 2] == page(0x66)[1..PS / 2])
            .collect();
        assert_eq!(raced.len(), 1, "{raced:?}");
        let other = 17 - raced[0];
        assert_eq!(
            Rig::bytes(&r.raw, other)[1..PS / 2],
            Rig::bytes(&r.mirror, other)[1..PS / 2]
        );
        assert_eq!(
            healer
                .tally(&Problem::CORRUPT_PAGE, "repair-from-replicas")
                .total(),
            1.0,
            "{incs:#?}"
        );
    }
}

/// A host write that lands while the repair of its page runs, and that
/// the medium then damages, leaves the page bad: the repair did nothing
/// and is overtaken — neither credited nor blamed, in its learned record
/// or its breaker — and the plan goes on (the next attempt repairs the
/// page from the replica). Alone and in a page set.
#[test]
fn a_racing_host_write_that_fails_verification_does_not_count_against_the_repair() {
    for (_, placement) in both_placements(PS) {
        let r = rig(placement);
        let (racing, repairer, ctx) = racing(&r);
        // One failure opens the breaker, were it counted.
        let healer = HealerConfig::new()
            .breaker(
                BreakerConfig::new()
                    .window_size(1)
                    .minimum_calls(1)
                    .failure_rate_threshold(0.5),
            )
            .build(ctx)
            .unwrap();
        let tally = || healer.tally(&Problem::CORRUPT_PAGE, "repair-from-replicas");
        let failure = r.corrupt(5);
        *racing.armed.lock() = Some(page(0x77));
        *racing.rot.lock() = Some((r.raw.clone(), r.mirror.clone()));
        let inc = healer.heal(failure);
        assert_eq!(
            inc.attempts.first().map(|a| a.outcome.clone()),
            Some(AttemptOutcome::Overtaken),
            "{inc:#?}"
        );
        assert_eq!(repairer.stats().superseded, 1);
        assert_eq!(tally().failures, 0.0, "{inc:#?}");
        assert_eq!(
            healer.breaker_state("repair-from-replicas"),
            BreakerState::Closed
        );
        // It was tried once more, on the page as it is now, and repaired it
        // from the replica (which has the host's write): only that counts.
        assert!(matches!(inc.outcome, Outcome::Healed { .. }), "{inc:#?}");
        assert_eq!(inc.attempts.len(), 2, "{inc:#?}");
        assert_eq!(Rig::bytes(&r.raw, 5), Rig::bytes(&r.mirror, 5));
        assert_eq!((tally().successes, tally().failures), (1.0, 0.0));

        // In a set: the raced page is overtaken and goes on in its own
        // incident; the other is repaired by the set.
        r.clock.advance(Duration::from_secs(60));
        let items = vec![(1, r.corrupt(8), Vec::new()), (2, r.corrupt(9), Vec::new())];
        *racing.armed.lock() = Some(page(0x66));
        *racing.rot.lock() = Some((r.raw.clone(), r.mirror.clone()));
        let mut next = 100;
        let incs = batch(&healer, items, &mut next);
        let overtaken: Vec<_> = incs
            .iter()
            .flat_map(|i| &i.attempts)
            .filter(|a| a.outcome == AttemptOutcome::Overtaken)
            .collect();
        assert_eq!(overtaken.len(), 1, "{incs:#?}");
        assert!(
            incs.iter()
                .all(|i| matches!(i.outcome, Outcome::Healed { .. })),
            "{incs:#?}"
        );
        for p in [8, 9] {
            assert_eq!(Rig::bytes(&r.raw, p), Rig::bytes(&r.mirror, p), "page {p}");
        }
        assert_eq!(tally().failures, 0.0, "{incs:#?}");
        assert_eq!(
            healer.breaker_state("repair-from-replicas"),
            BreakerState::Closed
        );

        // A batch of one page (healed on its own, not as a set): the same.
        r.clock.advance(Duration::from_secs(60));
        *racing.armed.lock() = Some(page(0x55));
        *racing.rot.lock() = Some((r.raw.clone(), r.mirror.clone()));
        let incs = batch(&healer, vec![(3, r.corrupt(11), Vec::new())], &mut next);
        assert_eq!(incs.len(), 1, "{incs:#?}");
        assert!(
            matches!(incs[0].outcome, Outcome::Healed { .. }),
            "{incs:#?}"
        );
        assert_eq!(
            names(&incs[0]),
            vec![
                ("repair-from-replicas".to_string(), "overtaken"),
                ("repair-from-replicas".to_string(), "healed")
            ],
            "{incs:#?}"
        );

        // Overtaken at every try: retried once, then the plan moves on —
        // alone, and for a page of a set.
        r.clock.advance(Duration::from_secs(60));
        racing.every_read.store(true, Ordering::SeqCst);
        *racing.armed.lock() = Some(page(0x44));
        *racing.rot.lock() = Some((r.raw.clone(), r.mirror.clone()));
        let inc = healer.heal(r.corrupt(12));
        let repairs = |inc: &selfheal::healer::Incident| {
            inc.attempts
                .iter()
                .filter(|a| a.remedy == "repair-from-replicas")
                .map(|a| a.outcome.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            repairs(&inc),
            vec![AttemptOutcome::Overtaken, AttemptOutcome::Overtaken],
            "{inc:#?}"
        );
        r.clock.advance(Duration::from_secs(60));
        let items = vec![
            (4, r.corrupt(13), Vec::new()),
            (5, r.corrupt(14), Vec::new()),
        ];
        let incs = batch(&healer, items, &mut next);
        racing.every_read.store(false, Ordering::SeqCst);
        for inc in &incs {
            assert!(repairs(inc).len() <= 2, "{incs:#?}");
        }
        assert_eq!(tally().failures, 0.0, "{incs:#?}");
    }
}

/// A snapshot of every page, taken through the host's gate.
fn snapshotted(r: &Rig, dir: &std::path::Path) -> Arc<StateSnapshotManager> {
    let snaps = Arc::new(SnapshotConfig::new(dir, PS).build().unwrap());
    let gate = WriteGate::new();
    for p in 0..PAGES {
        let _w = gate.write();
        r.det
            .write_sealed(PageId(p), &mut page(p as u8 + 1))
            .unwrap();
        snaps.note_dirty(PageId(p));
    }
    let pause = gate.pause();
    snaps
        .take_snapshot(
            Consistency::Paused {
                store: r.raw.as_ref(),
                pause: &pause,
                lsn: Lsn(1),
            },
            SnapshotRequest::new(SnapshotKind::Full),
        )
        .unwrap();
    snaps
}

#[test]
fn replica_down_the_snapshot_restore_remedy_heals_the_page() {
    for (_, placement) in both_placements(PS) {
        let r = rig(placement);
        let dir = tempfile::tempdir().unwrap();
        let snaps = snapshotted(&r, dir.path());
        let good = Rig::bytes(&r.raw, 7);
        let failure = r.corrupt(7);
        r.replica.set_down(true);
        let healer = HealerConfig::new().build(r.ctx().snapshots(snaps)).unwrap();
        let inc = healer.heal(failure);
        assert_eq!(
            names(&inc),
            [
                ("repair-from-replicas".to_string(), "failed"),
                ("restore-page-from-snapshot".to_string(), "healed"),
            ],
            "{inc:#?}"
        );
        assert_eq!(Rig::bytes(&r.raw, 7), good, "restored byte for byte");
        let mut b = vec![0u8; PS];
        r.det.read_verified(PageId(7), &mut b).unwrap();
        assert!(
            inc.timeline.iter().any(|e| e.step == Step::Waited),
            "backoff between the attempts"
        );
    }
}

#[test]
fn the_learner_stops_trying_a_failing_remedy_first_over_seeded_runs() {
    const SEEDS: u64 = 40;
    const INCIDENTS: u64 = 8;
    for (_, placement) in both_placements(PS) {
        let mut rescan_first = vec![0u64; INCIDENTS as usize];
        for seed in 0..SEEDS {
            let r = rig(placement.clone());
            let healer = HealerConfig::new()
                .seed(seed)
                .cold_start_order(Problem::CORRUPT_PAGE, &["rescan", "repair-from-replicas"])
                .build(r.ctx())
                .unwrap();
            for i in 0..INCIDENTS {
                r.clock.advance(Duration::from_secs(60));
                let inc = healer.heal(r.corrupt(i));
                assert!(
                    matches!(inc.outcome, Outcome::Healed { .. }),
                    "seed {seed} incident {i}: {inc:#?}"
                );
                if i == 0 {
                    // The cold-start order: the rescan runs and does not
                    // verify (the page is really corrupt), then repair heals.
                    assert_eq!(
                        names(&inc),
                        [
                            ("rescan".to_string(), "not verified"),
                            ("repair-from-replicas".to_string(), "healed"),
                        ]
                    );
                }
                assert_eq!(Rig::bytes(&r.raw, i), Rig::bytes(&r.mirror, i));
                if inc.attempts[0].remedy == "rescan" {
                    rescan_first[i as usize] += 1;
                }
            }
        }
        println!("rescan tried first, per incident, over {SEEDS} seeds: {rescan_first:?}");
        assert_eq!(rescan_first[0], SEEDS, "cold start");
        let last = rescan_first[INCIDENTS as usize - 1];
        assert!(
            last * 10 <= SEEDS,
            "{last} of {SEEDS} still try rescan first"
        );
    }
}

/// A host remedy that counts its calls and fails or succeeds as told.
#[derive(Debug)]
struct Scripted {
    name: &'static str,
    problem: Problem,
    fail: bool,
    calls: AtomicUsize,
}

impl Scripted {
    fn new(name: &'static str, problem: Problem, fail: bool) -> Arc<Scripted> {
        Arc::new(Scripted {
            name,
            problem,
            fail,
            calls: AtomicUsize::new(0),
        })
    }
}

impl Remedy for Scripted {
    fn name(&self) -> &str {
        self.name
    }
    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == self.problem
    }
    fn execute(&self, _: &RemedyContext, _: &Case<'_>) -> Result<Applied> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            Err(selfheal::Error::Unsupported { action: "scripted" })
        } else {
            Ok(Applied::new("done"))
        }
    }
    fn verify(&self, _: &RemedyContext, _: &Case<'_>, _: &Applied) -> Result<Verified> {
        Ok(Verified::healed("checked"))
    }
}

fn anomaly(clock: &ManualClock) -> Failure {
    Failure::new(
        Source::HealthMonitor,
        FailureKind::Anomaly {
            metric: Arc::from("queue_depth"),
        },
        "z = 9.1",
        clock.now_ns_value(),
    )
}

trait Now {
    fn now_ns_value(&self) -> u64;
}
impl Now for ManualClock {
    fn now_ns_value(&self) -> u64 {
        selfheal::Clock::now_ns(self)
    }
}

#[test]
fn the_breaker_opens_after_repeated_failures_and_the_remedy_is_not_called() {
    let clock = ManualClock::new();
    let flaky = Scripted::new("flaky", Problem::ANOMALY, true);
    let healer = HealerConfig::new()
        .remedy(flaky.clone())
        .breaker(
            BreakerConfig::new()
                .window_size(3)
                .minimum_calls(3)
                .open_wait(Duration::from_secs(600)),
        )
        .build(RemedyContext::new().clock(Arc::new(clock.clone())))
        .unwrap();
    for _ in 0..3 {
        clock.advance(Duration::from_secs(30));
        let inc = healer.heal(anomaly(&clock));
        assert_eq!(inc.outcome, Outcome::Escalated);
    }
    assert!(matches!(
        healer.breaker_state("flaky"),
        BreakerState::Open { .. }
    ));
    clock.advance(Duration::from_secs(30));
    let inc = healer.heal(anomaly(&clock));
    assert_eq!(
        flaky.calls.load(Ordering::SeqCst),
        3,
        "not called while open"
    );
    assert_eq!(
        inc.attempts[0].outcome,
        AttemptOutcome::Skipped(SkipReason::BreakerOpen)
    );
    assert_eq!(inc.outcome, Outcome::Escalated);
}

/// A host remedy whose execution panics (a bug in the host's code).
#[derive(Debug)]
struct Panicking;

impl Remedy for Panicking {
    fn name(&self) -> &str {
        "panicking"
    }
    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::ANOMALY
    }
    fn execute(&self, _: &RemedyContext, _: &Case<'_>) -> Result<Applied> {
        panic!("host remedy bug");
    }
    fn verify(&self, _: &RemedyContext, _: &Case<'_>, _: &Applied) -> Result<Verified> {
        Ok(Verified::healed("checked"))
    }
}

#[test]
fn a_remedy_that_panics_is_a_failed_attempt_and_the_next_remedy_heals() {
    let clock = ManualClock::new();
    let works = Scripted::new("works", Problem::ANOMALY, false);
    let healer = HealerConfig::new()
        .remedy(Arc::new(Panicking))
        .remedy(works.clone())
        .cold_start_order(Problem::ANOMALY, &["panicking", "works"])
        .build(RemedyContext::new().clock(Arc::new(clock.clone())))
        .unwrap();
    clock.advance(Duration::from_secs(30));
    let inc = healer.heal(anomaly(&clock));
    assert_eq!(
        inc.outcome,
        Outcome::Healed {
            remedy: "works".into()
        },
        "{inc:?}"
    );
    assert!(
        matches!(inc.attempts[0].outcome, AttemptOutcome::Failed { ref error } if error.contains("host remedy bug")),
        "{:?}",
        inc.attempts
    );
    assert_eq!(works.calls.load(Ordering::SeqCst), 1);
}

/// Host actions that count their calls; supports what it is told.
#[derive(Debug, Default)]
struct Host {
    supported: Vec<HostAction>,
    restarts: AtomicUsize,
    freed: AtomicUsize,
}

impl HostActions for Host {
    fn supports(&self, action: HostAction) -> bool {
        self.supported.contains(&action)
    }
    fn restart_component(&self, _: &str) -> Result<()> {
        self.restarts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn free_disk_space(&self, bytes: u64) -> Result<u64> {
        self.freed.fetch_add(1, Ordering::SeqCst);
        Ok(bytes)
    }
}

#[test]
fn restart_intensity_exceeded_escalates_instead_of_storming() {
    let clock = ManualClock::new();
    let host = Arc::new(Host {
        supported: vec![HostAction::RestartComponent],
        ..Host::default()
    });
    let healer = HealerConfig::new()
        .restart_intensity(2, Duration::from_secs(600))
        .build(
            RemedyContext::new()
                .clock(Arc::new(clock.clone()))
                .host(host.clone()),
        )
        .unwrap();
    let dead = |clock: &ManualClock| {
        Failure::new(
            Source::CrashDetector,
            FailureKind::ComponentDead {
                component: Arc::from("wal-writer"),
            },
            "no heartbeat for 10 s",
            clock.now_ns_value(),
        )
    };
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        clock.advance(Duration::from_secs(20));
        let inc = healer.heal(dead(&clock));
        outcomes.push(inc.outcome.as_str());
        if inc.outcome == Outcome::Escalated {
            assert_eq!(
                inc.attempts[0].outcome,
                AttemptOutcome::Skipped(SkipReason::RestartIntensity)
            );
        }
    }
    assert_eq!(
        outcomes,
        ["healed", "healed", "escalated", "escalated", "escalated"]
    );
    assert_eq!(host.restarts.load(Ordering::SeqCst), 2, "no storm");
}

#[test]
fn an_unknown_symptom_escalates_without_acting() {
    for (_, placement) in both_placements(PS) {
        let r = rig(placement);
        let failure = r.corrupt(3);
        let before = Rig::bytes(&r.raw, 3);
        let reports = Arc::new(Mutex::new(Vec::<EscalationReport>::new()));
        let sink = reports.clone();
        let healer = HealerConfig::new()
            .without_builtin_rules()
            .rule(Rule::new("host.deadlock", Problem::DEADLOCK).kind("deadlock"))
            .on_escalation(Arc::new(move |rep: &EscalationReport| {
                sink.lock().push(rep.clone())
            }))
            .build(r.ctx())
            .unwrap();
        let inc = healer.heal(failure);
        assert_eq!(inc.outcome, Outcome::Escalated);
        assert!(inc.diagnosis.is_unknown());
        assert!(inc.attempts.is_empty());
        assert_eq!(Rig::bytes(&r.raw, 3), before, "nothing was written");
        assert_eq!(r.repairer.stats().repaired, 0);
        assert_eq!(reports.lock().len(), 1);
    }
}

/// A remedy whose own check passes but which drives a metric up.
#[derive(Debug)]
struct Harmful {
    metric: Arc<AtomicU64>,
    undos: AtomicUsize,
}

impl Remedy for Harmful {
    fn name(&self) -> &str {
        "grow-pool"
    }
    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::RESOURCE_PRESSURE
    }
    fn execute(&self, _: &RemedyContext, _: &Case<'_>) -> Result<Applied> {
        self.metric.store(95, Ordering::SeqCst);
        Ok(Applied::new("pool grown to 512"))
    }
    fn verify(&self, _: &RemedyContext, _: &Case<'_>, _: &Applied) -> Result<Verified> {
        Ok(Verified::healed("the pool has 512 entries"))
    }
    fn undo(&self, _: &RemedyContext, _: &Case<'_>, _: &Applied) -> Result<()> {
        self.undos.fetch_add(1, Ordering::SeqCst);
        self.metric.store(60, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_remedy_that_makes_health_worse_is_undone() {
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
    });
    let healer = HealerConfig::new()
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
    assert_eq!(
        inc.attempts[0].outcome,
        AttemptOutcome::MadeWorse { undone: true },
        "{inc:#?}"
    );
    assert_eq!(harmful.undos.load(Ordering::SeqCst), 1);
    assert_eq!(value.load(Ordering::SeqCst), 60, "taken back");
    assert!(inc.timeline.iter().any(|e| e.step == Step::Undone));
    assert_eq!(inc.outcome, Outcome::Escalated);
    assert_eq!(
        healer
            .tally(&Problem::RESOURCE_PRESSURE, "grow-pool")
            .failures,
        1.0
    );
}

#[test]
fn a_host_action_the_host_does_not_support_is_never_planned() {
    let disk_full = || {
        Failure::new(
            Source::HealthMonitor,
            FailureKind::HealthCritical {
                metric: Arc::from("disk_used_pct"),
            },
            "97 %",
            0,
        )
    };
    let clock = ManualClock::new();
    let unsupported = Arc::new(Host {
        supported: vec![HostAction::ClearCaches],
        ..Host::default()
    });
    let healer = HealerConfig::new()
        .build(
            RemedyContext::new()
                .clock(Arc::new(clock.clone()))
                .host(unsupported.clone()),
        )
        .unwrap();
    let inc = healer.heal(disk_full());
    assert_eq!(inc.diagnosis.problem, Problem::DISK_FULL);
    assert_eq!(inc.outcome, Outcome::Escalated);
    assert!(inc.attempts.is_empty());
    assert_eq!(unsupported.freed.load(Ordering::SeqCst), 0);
    let plan = inc
        .timeline
        .iter()
        .find(|e| e.step == Step::Planned)
        .unwrap();
    assert!(
        plan.text.contains("free-disk-space not planned"),
        "{}",
        plan.text
    );

    let supported = Arc::new(Host {
        supported: vec![HostAction::FreeDiskSpace],
        ..Host::default()
    });
    let healer = HealerConfig::new()
        .build(
            RemedyContext::new()
                .clock(Arc::new(clock.clone()))
                .host(supported.clone()),
        )
        .unwrap();
    let inc = healer.heal(disk_full());
    assert_eq!(
        inc.outcome,
        Outcome::Healed {
            remedy: "free-disk-space".into()
        }
    );
    assert_eq!(supported.freed.load(Ordering::SeqCst), 1);
}

#[test]
fn the_escalation_report_lists_every_attempt_with_its_evidence() {
    for (_, placement) in both_placements(PS) {
        let r = rig(placement);
        let failure = r.corrupt(9);
        r.replica.set_down(true);
        let reports = Arc::new(Mutex::new(Vec::<EscalationReport>::new()));
        let sink = reports.clone();
        let healer = HealerConfig::new()
            .on_escalation(Arc::new(move |rep: &EscalationReport| {
                sink.lock().push(rep.clone())
            }))
            .build(r.ctx())
            .unwrap();
        let inc = healer.heal(failure);
        assert_eq!(inc.outcome, Outcome::Escalated);
        let reports = reports.lock();
        assert_eq!(reports.len(), 1, "one page for a person");
        let rep = &reports[0];
        assert_eq!(Some(rep), inc.escalation.as_ref());
        let tried: Vec<(&str, &str)> = rep
            .attempts
            .iter()
            .map(|a| (a.remedy.as_str(), a.outcome.as_str()))
            .collect();
        assert_eq!(
            tried,
            [
                ("repair-from-replicas", "failed"),
                ("restore-page-from-snapshot", "failed"),
                ("rescan", "not verified"),
            ]
        );
        let text = rep.to_string();
        for needle in [
            "corrupt-page",
            "page 9",
            "repair-from-replicas",
            "restore-page-from-snapshot",
            "rescan",
            "snapshot manager",
            "still fails verification",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        let mut b = vec![0u8; PS];
        assert!(
            r.det.read_verified(PageId(9), &mut b).is_err(),
            "still fenced"
        );
    }
}

#[test]
fn the_postmortem_has_the_timeline_and_the_rto_verdict() {
    for (_, placement) in both_placements(PS) {
        let r = rig(placement);
        let failure = r.corrupt(2);
        r.clock.advance(Duration::from_secs(40));
        let inc = HealerConfig::new().build(r.ctx()).unwrap().heal(failure);
        assert_eq!(inc.time_to_heal(), Some(Duration::from_secs(40)));
        let md = inc.postmortem_markdown(None);
        for needle in [
            "## Timeline",
            "| detected |",
            "| verified |",
            "| closed |",
            "corrupt-page (confidence 0.96, rule builtin.checksum_mismatch",
            "repair-from-replicas",
            "40000 ms, over the RTO of 30000 ms: missed",
        ] {
            assert!(md.contains(needle), "{needle:?} missing from:\n{md}");
        }
        let pm = inc.postmortem(Some(Duration::from_secs(60)));
        assert!(pm.rto_met);
        assert!(pm
            .to_markdown()
            .contains("40000 ms, within the RTO of 60000 ms: met"));
    }
}

#[cfg(feature = "serde")]
#[test]
fn the_postmortem_serialises_to_json() {
    let r = rig(ChecksumPlacement::Trailer);
    let inc = HealerConfig::new()
        .build(r.ctx())
        .unwrap()
        .heal(r.corrupt(4));
    let json = serde_json::to_value(inc.postmortem(None)).unwrap();
    assert_eq!(json["problem"], "corrupt-page");
    assert_eq!(json["rto_ms"], 30_000);
    assert_eq!(json["rto_met"], true);
    assert!(json["timeline"].as_array().unwrap().len() >= 5);
}

fn learned(dir: &std::path::Path, r: &Rig) -> SelfHealer {
    HealerConfig::new()
        .learned_path(dir.join("learned"))
        .cold_start_order(Problem::CORRUPT_PAGE, &["rescan", "repair-from-replicas"])
        .build(r.ctx())
        .unwrap()
}

#[test]
fn learned_records_survive_a_rebuild_and_a_damaged_file_means_cold_start() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(ChecksumPlacement::Trailer);
    let healer = learned(dir.path(), &r);
    assert!(healer.load_warning().is_none());
    let inc = healer.heal(r.corrupt(1));
    assert!(matches!(inc.outcome, Outcome::Healed { .. }));
    let rescan = healer.tally(&Problem::CORRUPT_PAGE, "rescan");
    let repair = healer.tally(&Problem::CORRUPT_PAGE, "repair-from-replicas");
    assert_eq!((rescan.failures, repair.successes), (1.0, 1.0));
    drop(healer);

    let rebuilt = learned(dir.path(), &r);
    assert!(rebuilt.load_warning().is_none());
    assert_eq!(rebuilt.tally(&Problem::CORRUPT_PAGE, "rescan"), rescan);
    assert_eq!(
        rebuilt.tally(&Problem::CORRUPT_PAGE, "repair-from-replicas"),
        repair
    );
    drop(rebuilt);

    let path = dir.path().join("learned");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let cold = learned(dir.path(), &r);
    let warning = cold.load_warning().expect("the damage is reported");
    assert!(warning.contains("corrupt"), "{warning}");
    assert_eq!(cold.tally(&Problem::CORRUPT_PAGE, "rescan").total(), 0.0);
    r.clock.advance(Duration::from_secs(60));
    let inc = cold.heal(r.corrupt(2));
    assert_eq!(inc.attempts[0].remedy, "rescan", "cold-start order again");
}

/// The learned records are written at most once per save interval (the
/// first incident's at once, the next ones' when the interval has passed,
/// on `save_learned_if_due`), and what is left unwritten is written when
/// the healer is dropped.
#[test]
fn learned_records_are_saved_at_most_once_per_interval() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("learned");
        let r = rig(placement);
        let build = || {
            HealerConfig::new()
                .learned_path(&path)
                .learned_save_interval(Duration::from_secs(1))
                .build(r.ctx())
                .unwrap()
        };
        let repairs = |h: &SelfHealer| {
            h.tally(&Problem::CORRUPT_PAGE, "repair-from-replicas")
                .successes
        };
        let healer = build();
        assert!(matches!(
            healer.heal(r.corrupt(1)).outcome,
            Outcome::Healed { .. }
        ));
        let first = std::fs::read(&path).expect("the first incident's records are written");
        assert!(matches!(
            healer.heal(r.corrupt(2)).outcome,
            Outcome::Healed { .. }
        ));
        assert_eq!(repairs(&healer), 2.0);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            first,
            "not written again within the interval"
        );
        healer.save_learned_if_due();
        assert_eq!(std::fs::read(&path).unwrap(), first, "not due yet");
        r.clock.advance(Duration::from_secs(1));
        healer.save_learned_if_due();
        assert_ne!(std::fs::read(&path).unwrap(), first, "due: written");
        {
            let reread = build();
            assert_eq!(repairs(&reread), 2.0);
            // Dropped with nothing new: it writes nothing.
        }
        assert!(matches!(
            healer.heal(r.corrupt(3)).outcome,
            Outcome::Healed { .. }
        ));
        drop(healer);
        assert_eq!(repairs(&build()), 3.0, "written when dropped");
    }
}

/// A remedy that changes nothing, while the health probe drifts by a point
/// of score between samples (disk use growing under a workload): with the
/// default tolerance the remedy is not taken for one that made health
/// worse.
#[test]
fn a_probe_that_drifts_does_not_make_a_working_remedy_worse() {
    #[derive(Debug)]
    struct Noop;
    impl Remedy for Noop {
        fn name(&self) -> &str {
            "clear-pool"
        }
        fn applies_to(&self, problem: &Problem) -> bool {
            *problem == Problem::RESOURCE_PRESSURE
        }
        fn execute(&self, _: &RemedyContext, _: &Case<'_>) -> Result<Applied> {
            Ok(Applied::new("pool cleared"))
        }
        fn verify(&self, _: &RemedyContext, _: &Case<'_>, _: &Applied) -> Result<Verified> {
            Ok(Verified::healed("the pool is empty"))
        }
    }
    let clock = ManualClock::new();
    let value = Arc::new(AtomicU64::new(60));
    let v = value.clone();
    let monitor = Arc::new(
        HealthConfig::new()
            .probe_fn("pool_wait_ms", Thresholds::new(50.0, 100.0), move || {
                // 1 ms more at every sample: 1 point of score.
                Ok(v.fetch_add(1, Ordering::SeqCst) as f64)
            })
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap(),
    );
    monitor.sample_now().unwrap();
    let healer = HealerConfig::new()
        .remedy(Arc::new(Noop))
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
    assert_eq!(inc.attempts[0].outcome, AttemptOutcome::Healed, "{inc:#?}");
    assert_eq!(
        inc.outcome,
        Outcome::Healed {
            remedy: "clear-pool".into()
        }
    );
}

#[test]
fn every_decision_and_action_is_in_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(ChecksumPlacement::Trailer);
    let log = Arc::new(AuditConfig::new().open(dir.path()).unwrap());
    let healer = HealerConfig::new()
        .audit(log.clone())
        .build(r.ctx())
        .unwrap();
    let inc = healer.heal(r.corrupt(6));
    let kinds: Vec<EntryKind> = log
        .query(&AuditQuery::all().incident(inc.id))
        .unwrap()
        .into_iter()
        .map(|rec| rec.entry.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EntryKind::Detected,
            EntryKind::Diagnosed,
            EntryKind::Decided,
            EntryKind::Decided,
            EntryKind::Acted,
            EntryKind::Verified,
            EntryKind::Closed,
        ]
    );
    log.verify().unwrap();
}

/// Each text of a healed page's incident, rendered as the healer always
/// rendered it (one `format!` per text, from the incident's own data), is
/// what its timeline holds and what its audit record holds; every record
/// names the incident's target.
#[test]
fn audit_records_and_the_timeline_carry_the_same_texts_rendered_as_before() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let r = rig(placement);
        let log = Arc::new(AuditConfig::new().open(dir.path()).unwrap());
        let healer = HealerConfig::new()
            .audit(log.clone())
            .build(r.ctx())
            .unwrap();
        // Twice: the second incident is planned from learned records.
        for p in [6, 7] {
            let failure = r.corrupt(p);
            let inc = healer.heal(failure.clone());
            assert!(matches!(inc.outcome, Outcome::Healed { .. }), "{inc:#?}");
            let name = "repair-from-replicas";
            let attempt = &inc.attempts[0];
            assert_eq!(attempt.remedy, name);
            let d = &inc.diagnosis;
            let plan = inc
                .timeline
                .iter()
                .find(|e| e.step == Step::Planned)
                .expect("planned");
            let ranked = plan.text.strip_prefix("plan: ").expect("a plan");
            assert_eq!(ranked.split(" → ").next(), Some(name), "{}", plan.text);
            let want: Vec<(EntryKind, Option<Step>, String)> = vec![
                (
                    EntryKind::Detected,
                    Some(Step::Detected),
                    format!("{failure}"),
                ),
                (
                    EntryKind::Diagnosed,
                    Some(Step::Diagnosed),
                    format!(
                        "{} (confidence {:.2}, rule {})",
                        d.problem,
                        d.confidence,
                        d.rule.as_deref().unwrap()
                    ),
                ),
                (
                    EntryKind::Decided,
                    Some(Step::Planned),
                    format!("plan: {ranked}"),
                ),
                (EntryKind::Decided, None, format!("try {name}")),
                (
                    EntryKind::Acted,
                    Some(Step::Acted),
                    format!("{name}: {}", attempt.evidence[0]),
                ),
                (
                    EntryKind::Verified,
                    Some(Step::Verified),
                    format!("{name}: {}", attempt.evidence[1]),
                ),
                (
                    EntryKind::Closed,
                    Some(Step::Closed),
                    format!("healed by {name}"),
                ),
            ];
            assert_eq!(
                attempt.evidence[1],
                format!("page {} re-read and verified", PageId(p))
            );
            let records = log.query(&AuditQuery::all().incident(inc.id)).unwrap();
            assert_eq!(records.len(), want.len());
            for (rec, (kind, step, text)) in records.iter().zip(&want) {
                assert_eq!(rec.entry.kind, *kind);
                assert_eq!(rec.entry.target, inc.target.to_string());
                assert_eq!(&rec.entry.text, text);
                if let Some(step) = step {
                    let e = inc.timeline.iter().find(|e| e.step == *step).unwrap();
                    assert_eq!(&e.text, text, "{step:?}");
                }
            }
        }
        log.verify().unwrap();
    }
}

#[test]
fn a_target_in_its_cooldown_is_deferred_untouched() {
    let r = rig(ChecksumPlacement::Trailer);
    let healer = HealerConfig::new()
        .cooldown(Duration::from_secs(30))
        .build(r.ctx())
        .unwrap();
    assert!(matches!(
        healer.heal(r.corrupt(8)).outcome,
        Outcome::Healed { .. }
    ));
    let again = r.corrupt(8);
    let before = Rig::bytes(&r.raw, 8);
    let inc = healer.heal(again.clone());
    assert!(matches!(inc.outcome, Outcome::Deferred { .. }), "{inc:#?}");
    assert_eq!(Rig::bytes(&r.raw, 8), before);
    r.clock.advance(Duration::from_secs(31));
    assert!(matches!(healer.heal(again).outcome, Outcome::Healed { .. }));
}
