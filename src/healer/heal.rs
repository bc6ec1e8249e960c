//! Its contract is documented on [`SelfHealer`] (this module is private; its
//! items are re-exported by its parent).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::audit::{AuditLog, EntryKind};
use crate::error::{Error, Result};
use crate::host::HostAction;
use crate::types::{Failure, Target};

use super::breaker::{Breaker, BreakerConfig, BreakerState};
use super::builtin;
use super::config::{ActionGate, EscalationCallback, HealerConfig};
use super::diagnose::{Diagnoser, Diagnosis, Problem, Symptom};
use super::incident::{AttemptOutcome, EscalationReport, Incident, Outcome, Step};
use super::learn::{Learner, Tally, MAX_NAME_LEN};
use super::pacing::{Backoff, Cooldowns, RestartIntensity};
use super::remedy::{Case, Remedy, RemedyContext};

mod attempt;
mod audit;
mod batch;
mod closed;
mod learned;
mod set;
mod verify;

/// Most targets whose restarts are counted at once.
const MAX_RESTART_TARGETS: usize = 4_096;
/// Most targets whose cooldown is remembered at once.
const MAX_COOLDOWN_TARGETS: usize = 65_536;

/// Remedies left out of a plan, with the host action the host lacks.
type Unsupported = Vec<(String, HostAction)>;

struct State {
    learner: Learner,
    breakers: HashMap<String, Breaker>,
    cooldowns: Cooldowns<Target>,
    restarts: HashMap<Target, RestartIntensity>,
    rng: StdRng,
}

impl State {
    /// Gives remedy `name`'s attempt on `problem` its one outcome in the
    /// remedy's breaker and its learned record, at `t`. An unverified
    /// attempt is a call that did not fail, and no evidence for the
    /// learner; one that found nothing to do (or was overtaken) is
    /// neither: a half-open trial it was granted is given back rather than
    /// close, or open, the breaker unproven.
    fn credit(&mut self, problem: &str, name: &str, outcome: &AttemptOutcome, t: u64) {
        let healed = *outcome == AttemptOutcome::Healed;
        let nothing = matches!(
            outcome,
            AttemptOutcome::NothingToDo | AttemptOutcome::Overtaken
        );
        let unverified = *outcome == AttemptOutcome::Unverified;
        if let Some(b) = self.breakers.get_mut(name) {
            if nothing {
                b.release();
            } else {
                b.record(healed || unverified, t);
            }
        }
        if !(nothing || unverified) {
            self.learner.record(problem, name, healed);
        }
    }
}

/// The self-healing loop. Built with
/// [`HealerConfig::build`].
///
/// ```
/// use std::sync::Arc;
/// use selfheal::healer::{HealerConfig, Outcome, Problem, RemedyContext};
/// use selfheal::{Failure, FailureKind, ManualClock, Source};
///
/// // No component and no host action: nothing applies to a dead
/// // component, so the healer escalates with one report, acting on nothing.
/// let healer = HealerConfig::new()
///     .build(RemedyContext::new().clock(Arc::new(ManualClock::new())))?;
/// let incident = healer.heal(Failure::new(
///     Source::CrashDetector,
///     FailureKind::ComponentDead { component: Arc::from("wal") },
///     "no heartbeat for 10 s",
///     0,
/// ));
/// assert_eq!(incident.diagnosis.problem, Problem::COMPONENT_DEAD);
/// assert_eq!(incident.outcome, Outcome::Escalated);
/// assert!(incident.escalation.is_some() && incident.attempts.is_empty());
/// assert!(incident.postmortem_markdown(None).contains("## Timeline"));
/// # Ok::<(), selfheal::Error>(())
/// ```
///
/// [`SelfHealer::heal`]: diagnose → choose → act → verify → learn, one
/// failure at a time, synchronously, on the caller's thread.
///
/// # The loop
/// 1. **Diagnose** the failure with the rules. An unknown symptom is
///    escalated at once: nothing is guessed, nothing is done.
/// 2. **Cooldown.** A target acted on within the cooldown is not touched:
///    the incident is [`Deferred`](Outcome::Deferred) with the time it may
///    be handed in again.
/// 3. **Choose.** The remedies that apply — never one whose host action the
///    host does not support — ranked by Thompson sampling over their learned
///    records; with no record, the cold-start order.
/// 4. **Act** on each in turn, at most `max_attempts`, skipping a remedy
///    whose breaker is open, a restart past the component's restart
///    intensity, and a risky remedy whose snapshot before it failed. Before
///    every attempt after the first, the healer waits a backoff with full
///    jitter on its [`Clock`](crate::Clock) (a
///    [`ManualClock`](crate::ManualClock) does not sleep).
/// 5. **Verify**: the remedy re-checks its target (one with nothing to
///    re-check says so: [`AttemptOutcome::Unverified`](super::AttemptOutcome::Unverified), which closes the
///    incident but teaches the learner nothing, as does one that found
///    its target already healthy and did nothing:
///    [`AttemptOutcome::NothingToDo`](super::AttemptOutcome::NothingToDo)), and — with a health
///    monitor — health is sampled before and after every attempt that ran:
///    a remedy after which the score dropped (beyond the tolerance) or the
///    band worsened, whether it verified or not, is undone where it can be,
///    and counts as failed. A remedy that failed after a partial effect is
///    undone when it declares it can be
///    ([`Remedy::undo_after_error`]).
/// 6. **Learn**: each attempt's outcome goes into the remedy's breaker and
///    its learned record, which is saved (crash-safely) when a path is
///    configured — at most every
///    [`learned_save_interval`](HealerConfig::learned_save_interval), and
///    by [`flush_learned`](SelfHealer::flush_learned) or on drop.
/// 7. **Escalate** when nothing healed it: one [`EscalationReport`] with the
///    problem, every remedy considered, each outcome and its evidence, to
///    the callback and in the incident.
///
/// No lock is held while a remedy runs or while the healer waits, so one
/// healer may serve several threads; decisions (breakers, cooldowns,
/// restart counts, the learner) are taken under one short lock.
pub struct SelfHealer {
    ctx: RemedyContext,
    diagnoser: Diagnoser,
    remedies: Vec<Arc<dyn Remedy>>,
    cold_start: HashMap<Problem, Vec<String>>,
    backoff: Backoff,
    breaker: BreakerConfig,
    max_restarts: u32,
    restart_period: Duration,
    max_attempts: usize,
    tolerance: f64,
    audit: Option<Arc<AuditLog>>,
    on_escalation: Option<EscalationCallback>,
    observe_only: bool,
    gate: Option<ActionGate>,
    learned_path: Option<PathBuf>,
    learned_save_ns: u64,
    learned_on_timer: bool,
    /// The learned records' saving: whether they changed since the last
    /// write, and when that was (held while writing, so writes never
    /// overtake each other).
    learned_saved: Mutex<learned::Saved>,
    load_warning: Option<String>,
    next_id: AtomicU64,
    state: Mutex<State>,
}

impl fmt::Debug for SelfHealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfHealer")
            .field("remedies", &self.remedy_names())
            .field("ctx", &self.ctx)
            .field("observe_only", &self.observe_only)
            .field("learned_path", &self.learned_path)
            .finish_non_exhaustive()
    }
}

impl HealerConfig {
    /// Builds the healer over `ctx`, loading the learned records.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad rule, a remedy name that is empty,
    /// longer than 128 bytes or given twice, a cold-start order naming an
    /// unknown remedy, a bad breaker, backoff or restart intensity, zero
    /// attempts, or a negative or non-finite health tolerance.
    pub fn build(self, ctx: RemedyContext) -> Result<SelfHealer> {
        let remedies = self.checked_remedies()?;
        SelfHealer::new(self, remedies, ctx)
    }

    /// Checks everything [`build`](Self::build) checks, without building:
    /// the names of the remedies a healer built from it would have. An
    /// owner that builds the healer later (the recovery manager, at
    /// `start`) reports a bad configuration when it is itself built.
    ///
    /// # Errors
    /// As [`build`](Self::build).
    pub(crate) fn remedy_names_checked(&self) -> Result<Vec<String>> {
        Ok(self
            .checked_remedies()?
            .iter()
            .map(|r| r.name().to_string())
            .collect())
    }

    fn checked_remedies(&self) -> Result<Vec<Arc<dyn Remedy>>> {
        for r in &self.rules {
            r.validate()?;
        }
        let mut remedies = self.host_remedies.clone();
        if self.builtins {
            remedies.extend(builtin::defaults());
        }
        let mut names = HashSet::new();
        for r in &remedies {
            let n = r.name();
            if n.is_empty() || n.len() > MAX_NAME_LEN {
                return Err(Error::config(
                    "remedy",
                    format!("remedy name {n:?} must have 1 to {MAX_NAME_LEN} bytes"),
                ));
            }
            if !names.insert(n.to_string()) {
                return Err(Error::config(
                    "remedy",
                    format!("two remedies are named {n:?}; names must be unique"),
                ));
            }
        }
        for (problem, order) in &self.cold_start {
            if let Some(unknown) = order.iter().find(|n| !names.contains(*n)) {
                return Err(Error::config(
                    "cold_start_order",
                    format!("the order for {problem} names {unknown:?}, which no registered remedy is called"),
                ));
            }
        }
        self.breaker.validate()?;
        Backoff::new(self.backoff_base, self.backoff_cap)?;
        RestartIntensity::new(self.max_restarts, self.restart_period)?;
        if self.max_attempts == 0 {
            return Err(Error::config(
                "max_attempts",
                "is 0; allow at least one attempt per incident",
            ));
        }
        if !(self.health_tolerance.is_finite() && self.health_tolerance >= 0.0) {
            return Err(Error::config(
                "health_tolerance",
                format!(
                    "is {}; it must be a finite number of points, 0 or more",
                    self.health_tolerance
                ),
            ));
        }
        Ok(remedies)
    }
}

impl SelfHealer {
    pub(super) fn new(
        cfg: HealerConfig,
        remedies: Vec<Arc<dyn Remedy>>,
        ctx: RemedyContext,
    ) -> Result<SelfHealer> {
        let diagnoser = Diagnoser::with_builtins(cfg.rules, cfg.builtin_rules)?;
        let backoff = Backoff::new(cfg.backoff_base, cfg.backoff_cap)?;
        // A repair that finds no copy of a page's last write falls back to
        // rebuilding it from the undo the rollback manager holds, when that
        // manager writes through the repairer's detector.
        if let (Ok(repairer), Ok(rb)) = (ctx.need_repairer(), ctx.need_rollback()) {
            if rb.writes_through(repairer.detector()) {
                repairer.set_rebuilder(Some(Arc::new(builtin::txn::UndoRebuilder(
                    Arc::downgrade(rb),
                ))));
            }
        }
        let (learner, load_warning) = match &cfg.learned_path {
            Some(path) => {
                let (l, warning) = Learner::load(path, cfg.seed, cfg.memory);
                (l, warning.map(|e| e.to_string()))
            }
            None => (Learner::new(cfg.seed, cfg.memory), None),
        };
        Ok(SelfHealer {
            ctx,
            diagnoser,
            remedies,
            cold_start: cfg.cold_start,
            backoff,
            breaker: cfg.breaker,
            max_restarts: cfg.max_restarts,
            restart_period: cfg.restart_period,
            max_attempts: cfg.max_attempts,
            tolerance: cfg.health_tolerance,
            audit: cfg.audit,
            on_escalation: cfg.on_escalation,
            observe_only: cfg.observe_only,
            gate: cfg.gate,
            learned_path: cfg.learned_path,
            learned_save_ns: u64::try_from(cfg.learned_save.as_nanos()).unwrap_or(u64::MAX),
            learned_on_timer: cfg.learned_on_timer,
            learned_saved: Mutex::new(learned::Saved::default()),
            load_warning,
            next_id: AtomicU64::new(1),
            state: Mutex::new(State {
                learner,
                breakers: HashMap::new(),
                cooldowns: Cooldowns::new(cfg.cooldown, MAX_COOLDOWN_TARGETS),
                restarts: HashMap::new(),
                rng: StdRng::seed_from_u64(cfg.seed ^ 0x9e37_79b9_7f4a_7c15),
            }),
        })
    }

    /// The context its remedies act through.
    pub fn context(&self) -> &RemedyContext {
        &self.ctx
    }

    /// The registered remedies' names, in registration order.
    #[must_use]
    pub fn remedy_names(&self) -> Vec<String> {
        self.remedies.iter().map(|r| r.name().to_string()).collect()
    }

    /// Why the learned records could not be loaded at build (the healer
    /// then started from the cold-start order), if they could not.
    #[must_use]
    pub fn load_warning(&self) -> Option<&str> {
        self.load_warning.as_deref()
    }

    /// The learned record of `remedy` on `problem`.
    #[must_use]
    pub fn tally(&self, problem: &Problem, remedy: &str) -> Tally {
        self.state.lock().learner.tally(problem.as_str(), remedy)
    }

    /// The state of `remedy`'s breaker (`Closed` for one never tried).
    #[must_use]
    pub fn breaker_state(&self, remedy: &str) -> BreakerState {
        self.state
            .lock()
            .breakers
            .get(remedy)
            .map_or(BreakerState::Closed, Breaker::state)
    }

    /// Diagnoses `failure` (with the current band of its metric, when a
    /// health monitor has sampled it).
    #[must_use]
    pub fn diagnose(&self, failure: &Failure) -> Diagnosis {
        let band = match (failure.target(), self.ctx.health_ref()) {
            (Target::Metric(m), Some(h)) => h.latest().and_then(|s| s.metric(&m).map(|x| x.band)),
            _ => None,
        };
        self.diagnoser.diagnose(&Symptom { failure, band })
    }

    /// The remedies that may be planned for `problem`, in cold-start order,
    /// and those left out because the host does not support their action.
    fn candidates(&self, problem: &Problem) -> (Vec<Arc<dyn Remedy>>, Unsupported) {
        let mut unsupported = Vec::new();
        let mut apply: Vec<Arc<dyn Remedy>> = Vec::new();
        for r in &self.remedies {
            if !r.applies_to(problem) || !r.available(&self.ctx) {
                continue;
            }
            match r.host_action() {
                Some(a) if !self.ctx.supports(a) => unsupported.push((r.name().to_string(), a)),
                _ => apply.push(r.clone()),
            }
        }
        if let Some(order) = self.cold_start.get(problem) {
            let pos = |r: &Arc<dyn Remedy>| {
                order
                    .iter()
                    .position(|n| n == r.name())
                    .unwrap_or(order.len())
            };
            // Stable: remedies not named keep registration order after.
            apply.sort_by_key(pos);
        }
        (apply, unsupported)
    }

    /// Heals one failure (see [`SelfHealer`]) and returns its incident,
    /// closed.
    pub fn heal(&self, failure: Failure) -> Incident {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.heal_as(id, failure, &[])
    }

    /// [`heal`](Self::heal) under the caller's incident id, with `joined`
    /// (later reports of the same target, collected while the incident
    /// waited) joined before the healer takes it. A caller that numbers
    /// incidents itself (the recovery manager, durably) uses this, so its
    /// ids and the audit log's agree.
    pub fn heal_as(&self, id: u64, failure: Failure, joined: &[Failure]) -> Incident {
        // The incident's audit records are held and appended in few
        // appends: before each remedy acts (write-ahead), and at close.
        let _holding = batch::Holding::start(self);
        self.heal_held(id, &failure, joined)
    }

    /// [`heal_as`](Self::heal_as), but the records that close the incident
    /// (everything after the last write-ahead) are given back instead of
    /// appended: the caller appends them, in order, when it records the
    /// close (heal on read closes off the reader's thread).
    pub(crate) fn heal_as_closing_later(
        &self,
        id: u64,
        failure: Failure,
        joined: &[Failure],
    ) -> (Incident, Vec<crate::audit::AuditEntry>) {
        let holding = batch::Holding::start(self);
        let inc = self.heal_held(id, &failure, joined);
        (inc, holding.take())
    }

    /// Heals with this thread's audit records held (see `heal/batch.rs`).
    fn heal_held(&self, id: u64, failure: &Failure, joined: &[Failure]) -> Incident {
        let (mut inc, diagnosis) = self.open(id, failure, joined);
        let case = Case {
            diagnosis: &diagnosis,
            failure,
        };
        if let Some(ranked) = self.plan(&mut inc, &case) {
            self.run_plan(&mut inc, &case, ranked, 0);
            self.save_learned();
        }
        inc
    }

    /// Opens incident `id`: detected, joined, started, diagnosed.
    fn open(&self, id: u64, failure: &Failure, joined: &[Failure]) -> (Incident, Diagnosis) {
        let now = self.ctx.clock_ref().now_ns();
        let diagnosis = self.diagnose(failure);
        let mut inc = Incident {
            id,
            target: failure.target(),
            pages: Vec::new(),
            priority: failure.priority,
            failures: vec![failure.clone()],
            diagnosis: diagnosis.clone(),
            // Room for a heal's usual steps (queued, detected, started,
            // diagnosed, planned, acted, verified, closed) and one attempt.
            timeline: Vec::with_capacity(8),
            attempts: Vec::with_capacity(1),
            outcome: Outcome::Escalated,
            escalation: None,
        };
        self.record(
            &mut inc,
            failure.detected_at_ns,
            Step::Detected,
            EntryKind::Detected,
            failure.text(),
        );
        for j in joined {
            inc.join(j.clone(), j.detected_at_ns);
        }
        inc.push(now, Step::Started, "the healer took the incident");
        let diag_text = match &diagnosis.rule {
            Some(rule) => format!(
                "{} (confidence {:.2}, rule {rule})",
                diagnosis.problem, diagnosis.confidence
            ),
            None => "unknown: no rule matches the symptom".to_string(),
        };
        self.record(
            &mut inc,
            now,
            Step::Diagnosed,
            EntryKind::Diagnosed,
            diag_text,
        );
        (inc, diagnosis)
    }

    /// Plans the remedies of an open incident, in the order they are to be
    /// tried; `None` when the incident was closed instead (unknown,
    /// deferred by its cooldown, observed, nothing applies).
    fn plan(&self, inc: &mut Incident, case: &Case<'_>) -> Option<Vec<Arc<dyn Remedy>>> {
        let clock = self.ctx.clock_ref().clone();
        let now = clock.now_ns();
        let diagnosis = case.diagnosis;
        if diagnosis.is_unknown() {
            self.escalate(
                inc,
                "the symptom matches no diagnosis rule; nothing was done",
            );
            return None;
        }
        let until = self.state.lock().cooldowns.ready_at(&inc.target, now);
        if let Some(until_ns) = until {
            let text = format!(
                "{} was acted on recently; deferred until its cooldown ends at {until_ns} ns",
                inc.target
            );
            self.audit(inc, EntryKind::Decided, text.clone());
            inc.outcome = Outcome::Deferred { until_ns };
            inc.push(now, Step::Closed, text);
            return None;
        }
        let (apply, unsupported) = self.candidates(&diagnosis.problem);
        let names: Vec<&str> = apply.iter().map(|r| r.name()).collect();
        let order = self
            .state
            .lock()
            .learner
            .rank(diagnosis.problem.as_str(), &names);
        let ranked: Vec<Arc<dyn Remedy>> = order.iter().map(|&i| apply[i].clone()).collect();
        // "plan: a → b → c", built without the formatting machinery.
        let names_len: usize = ranked.iter().map(|r| r.name().len() + 5).sum();
        let mut plan = String::with_capacity(32 + names_len);
        plan.push_str("plan: ");
        if ranked.is_empty() {
            plan.push_str("no remedy applies");
        }
        for (i, r) in ranked.iter().enumerate() {
            if i > 0 {
                plan.push_str(" → ");
            }
            plan.push_str(r.name());
        }
        for (name, action) in &unsupported {
            plan.push_str(&format!(
                "; {name} not planned: the host does not support {action}"
            ));
        }
        self.record(inc, clock.now_ns(), Step::Planned, EntryKind::Decided, plan);
        if self.observe_only {
            inc.outcome = Outcome::Observed;
            inc.push(
                clock.now_ns(),
                Step::Closed,
                "observe only: nothing was changed",
            );
            self.audit(inc, EntryKind::Closed, "observed".to_string());
            return None;
        }
        if ranked.is_empty() {
            self.escalate(inc, "no remedy applies to the problem");
            return None;
        }
        Some(ranked)
    }

    /// Tries `ranked` in turn (`executed` attempts made already) until one
    /// heals, then closes the incident: healed, or escalated. The caller
    /// saves the learned records.
    fn run_plan(
        &self,
        inc: &mut Incident,
        case: &Case<'_>,
        ranked: Vec<Arc<dyn Remedy>>,
        mut executed: usize,
    ) {
        'plan: for remedy in ranked {
            // One retry of an overtaken remedy in all: none when the
            // attempt before this plan was that retry's reason already.
            let overtaken_last = |inc: &Incident| {
                inc.attempts.last().is_some_and(|a| {
                    a.outcome == AttemptOutcome::Overtaken && a.remedy == remedy.name()
                })
            };
            let mut retried = overtaken_last(inc);
            loop {
                if executed >= self.max_attempts {
                    break 'plan;
                }
                if let Some(remedy_name) = self.attempt(inc, case, &remedy, &mut executed) {
                    self.healed_by(inc, &remedy_name);
                    return;
                }
                // An attempt overtaken by a change of its target did
                // nothing: the remedy is tried once more, on the target as
                // it is now, before the plan moves on.
                if !overtaken_last(inc) || retried {
                    break;
                }
                retried = true;
            }
        }
        let reason = if executed >= self.max_attempts {
            format!("{executed} attempts were made (the most per incident) and none healed it")
        } else {
            "every remedy that applies was tried or skipped, and none healed it".to_string()
        };
        self.escalate(inc, &reason);
    }

    /// Closes `inc` as healed by `remedy_name` (its last attempt).
    fn healed_by(&self, inc: &mut Incident, remedy_name: &str) {
        inc.outcome = Outcome::Healed {
            remedy: remedy_name.to_string(),
        };
        let now = self.ctx.clock_ref().now_ns();
        let text = inc.outcome_text();
        self.record(inc, now, Step::Closed, EntryKind::Closed, text);
    }

    /// Adds `text` to the timeline as `step` at `at_ns`, and writes it as
    /// an audit record of `kind`: the one text rendered once for both.
    fn record(&self, inc: &mut Incident, at_ns: u64, step: Step, kind: EntryKind, text: String) {
        if self.audit.is_some() {
            self.audit(inc, kind, text.clone());
        }
        inc.push(at_ns, step, text);
    }

    fn escalate(&self, inc: &mut Incident, reason: &str) {
        let now = self.ctx.clock_ref().now_ns();
        let report = EscalationReport {
            incident: inc.id,
            target: inc.target.clone(),
            priority: inc.priority,
            diagnosis: inc.diagnosis.clone(),
            failures: inc.failures.clone(),
            attempts: inc.attempts.clone(),
            reason: reason.to_string(),
        };
        inc.push(now, Step::Escalated, reason);
        self.audit(inc, EntryKind::Escalated, report.to_string());
        tracing::error!(incident = inc.id, target = %inc.target, %reason, "incident escalated");
        if let Some(cb) = &self.on_escalation {
            cb(&report);
        }
        inc.escalation = Some(report);
        inc.outcome = Outcome::Escalated;
        inc.push(now, Step::Closed, "escalated to a person");
        self.audit(inc, EntryKind::Closed, "escalated".to_string());
    }
}

/// Runs a remedy's step (host code, for a host's remedy or action), turning a
/// panic into a failed step: a remedy that panics is an attempt that failed
/// (counted by its breaker, reported in the incident), never a dead thread
/// that stops healing.
fn guarded<T>(step: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).unwrap_or_else(|payload| {
        Err(Error::Host {
            op: "remedy",
            retryable: false,
            message: format!(
                "the remedy panicked: {}",
                crate::worker::panic_message(payload.as_ref())
            ),
        })
    })
}
