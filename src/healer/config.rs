//! [`HealerConfig`]: the rules, remedies and safety limits of a
//! [`SelfHealer`](super::SelfHealer), validated when it is built.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditLog;

use super::breaker::BreakerConfig;
use super::diagnose::{Problem, Rule};
use super::incident::EscalationReport;
use super::remedy::{Case, Remedy};

/// Called with the one report of an escalated incident, on the thread that
/// called [`SelfHealer::heal`](super::SelfHealer::heal). It should hand the report on (page a
/// person, open a ticket) and return; it must not call back into the
/// healer.
pub type EscalationCallback = Arc<dyn Fn(&EscalationReport) + Send + Sync>;

/// Asked, on the healing thread, before each remedy would run (after its
/// breaker and restart intensity allowed it, before any snapshot or wait):
/// `true` lets it run, `false` skips it as
/// [`SkipReason::NotApproved`](super::SkipReason::NotApproved). The
/// recovery manager's Approve mode is such a gate. It must not call back
/// into the healer.
pub type ActionGate = Arc<dyn Fn(&Case<'_>, &dyn Remedy) -> bool + Send + Sync>;

/// Configuration of a [`SelfHealer`](super::SelfHealer). Every setter documents its default.
#[must_use]
pub struct HealerConfig {
    pub(super) rules: Vec<Rule>,
    pub(super) host_remedies: Vec<Arc<dyn Remedy>>,
    pub(super) builtins: bool,
    pub(super) builtin_rules: bool,
    pub(super) cold_start: HashMap<Problem, Vec<String>>,
    pub(super) seed: u64,
    pub(super) learned_path: Option<PathBuf>,
    pub(super) learned_save: Duration,
    pub(super) learned_on_timer: bool,
    pub(super) memory: u32,
    pub(super) breaker: BreakerConfig,
    pub(super) backoff_base: Duration,
    pub(super) backoff_cap: Duration,
    pub(super) cooldown: Duration,
    pub(super) max_restarts: u32,
    pub(super) restart_period: Duration,
    pub(super) max_attempts: usize,
    pub(super) health_tolerance: f64,
    pub(super) audit: Option<Arc<AuditLog>>,
    pub(super) on_escalation: Option<EscalationCallback>,
    pub(super) observe_only: bool,
    pub(super) gate: Option<ActionGate>,
}

impl fmt::Debug for HealerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealerConfig")
            .field("rules", &self.rules.len())
            .field("host_remedies", &self.host_remedies)
            .field("builtins", &self.builtins)
            .field("seed", &self.seed)
            .field("learned_path", &self.learned_path)
            .field("max_attempts", &self.max_attempts)
            .field("observe_only", &self.observe_only)
            .finish_non_exhaustive()
    }
}

impl Default for HealerConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The default [`HealerConfig::health_tolerance`], in score points: well
/// above a probe's drift between the two samples around one remedy (a score
/// moves half a point per 1 % of the distance between a metric's best and
/// degraded values), well below a harmful remedy's effect, which moves a
/// score by tens of points or its band.
pub const DEFAULT_HEALTH_TOLERANCE: f64 = 5.0;

impl HealerConfig {
    /// Defaults: the built-in rules and remedies, seed 0, learned records
    /// kept in memory only (about 100 observations each), resilience4j's
    /// breaker defaults, backoff from 100 ms to 10 s, a 10 s cooldown per
    /// target, at most 3 restarts of a component in 5 min, at most 4
    /// attempts per incident, a health tolerance of 5 points, no audit log, no
    /// escalation callback, acting (not observe-only).
    pub fn new() -> Self {
        HealerConfig {
            rules: Vec::new(),
            host_remedies: Vec::new(),
            builtins: true,
            builtin_rules: true,
            cold_start: HashMap::new(),
            seed: 0,
            learned_path: None,
            learned_save: Duration::from_secs(1),
            learned_on_timer: false,
            memory: 100,
            breaker: BreakerConfig::new(),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(10),
            cooldown: Duration::from_secs(10),
            max_restarts: 3,
            restart_period: Duration::from_secs(300),
            max_attempts: 4,
            health_tolerance: DEFAULT_HEALTH_TOLERANCE,
            audit: None,
            on_escalation: None,
            observe_only: false,
            gate: None,
        }
    }

    /// Adds a diagnosis rule; host rules are tried before the built-ins.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Leaves out the built-in diagnosis rules (default: included): only
    /// the host's rules diagnose, and a symptom none of them matches is
    /// escalated without acting.
    pub fn without_builtin_rules(mut self) -> Self {
        self.builtin_rules = false;
        self
    }

    /// Registers a host remedy; host remedies come before the built-ins in
    /// the default cold-start order. Names must be unique.
    pub fn remedy(mut self, remedy: Arc<dyn Remedy>) -> Self {
        self.host_remedies.push(remedy);
        self
    }

    /// Leaves out the built-in remedies (default: included).
    pub fn without_builtins(mut self) -> Self {
        self.builtins = false;
        self
    }

    /// The cold-start order for `problem`: these remedies first, in this
    /// order, then the others that apply in registration order (default:
    /// registration order).
    pub fn cold_start_order(mut self, problem: Problem, remedies: &[&str]) -> Self {
        self.cold_start
            .insert(problem, remedies.iter().map(|s| (*s).to_string()).collect());
        self
    }

    /// The seed of the random draws (Thompson sampling, jitter); default 0.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Where the learned records are kept across restarts (default: in
    /// memory only). A damaged file is a warning and a cold start, never an
    /// error (see [`SelfHealer::load_warning`](super::SelfHealer::load_warning)).
    pub fn learned_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.learned_path = Some(path.into());
        self
    }

    /// How often, at most, the learned records are written to the
    /// [learned path](Self::learned_path) (default 1 s; zero: after every
    /// incident). Each write is a crash-safe replace (two fsyncs and a
    /// rename), so writing after every incident would cost a burst more
    /// than its repairs. Records learned since the last write are written
    /// by the first incident after the interval,
    /// [`SelfHealer::save_learned_if_due`](super::SelfHealer::save_learned_if_due)
    /// (the recovery manager calls it on a timer),
    /// [`SelfHealer::flush_learned`](super::SelfHealer::flush_learned) and
    /// when the healer is dropped: a crash loses at most the last
    /// interval's learning, never a remedy's effect.
    pub fn learned_save_interval(mut self, interval: Duration) -> Self {
        self.learned_save = interval;
        self
    }

    /// The owner calls [`SelfHealer::save_learned_if_due`](super::SelfHealer::save_learned_if_due)
    /// on a timer (the recovery manager's dispatcher): an incident then
    /// never writes the learned records on its own thread.
    pub(crate) fn learned_saved_on_timer(mut self) -> Self {
        self.learned_on_timer = true;
        self
    }

    /// About how many observations a record keeps before old ones weigh
    /// half (default 100; at least 2).
    pub fn learner_memory(mut self, observations: u32) -> Self {
        self.memory = observations;
        self
    }

    /// The circuit breaker of each remedy (default: resilience4j's).
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Exponential backoff with full jitter between attempts: the wait
    /// before the n-th retry is uniform in `0 ..= min(cap, base·2ⁿ)`
    /// (default 100 ms to 10 s).
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_cap = cap;
        self
    }

    /// Quiet time per target after an action (default 10 s): a failure
    /// about that target handed in earlier is deferred.
    pub fn cooldown(mut self, quiet: Duration) -> Self {
        self.cooldown = quiet;
        self
    }

    /// At most `max_restarts` restarts of one component within `period`
    /// (default 3 in 5 min; 1 to [`MAX_RESTARTS`](super::MAX_RESTARTS));
    /// beyond it the healer escalates instead.
    pub fn restart_intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.restart_period = period;
        self
    }

    /// Remedies executed per incident at most (default 4; at least 1).
    pub fn max_attempts(mut self, attempts: usize) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// How many score points (0–100) health may drop after a remedy before
    /// it counts as worse and is undone (default
    /// [`DEFAULT_HEALTH_TOLERANCE`], 5 points). A worse band always counts
    /// as worse, whatever the tolerance. 0 makes any drop count: with a
    /// probe that drifts between samples (disk use growing under a
    /// workload, a latency's noise) that undoes remedies that worked.
    pub fn health_tolerance(mut self, points: f64) -> Self {
        self.health_tolerance = points;
        self
    }

    /// Appends every decision and action to `log` (default: none). A log
    /// that cannot be written never stops healing: the error is logged.
    pub fn audit(mut self, log: Arc<AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// Called with the report of each escalated incident (default: none;
    /// the report is in the returned [`Incident`](super::Incident) either way).
    pub fn on_escalation(mut self, callback: EscalationCallback) -> Self {
        self.on_escalation = Some(callback);
        self
    }

    /// Diagnose and plan but change nothing (default: `false`).
    pub fn observe_only(mut self, yes: bool) -> Self {
        self.observe_only = yes;
        self
    }

    /// Asks `gate` before each remedy runs (default: none, every remedy
    /// that is planned may run). See [`ActionGate`].
    pub fn action_gate(mut self, gate: ActionGate) -> Self {
        self.gate = Some(gate);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::healer::builtin::Rescan;
    use crate::healer::remedy::RemedyContext;

    fn field(cfg: HealerConfig) -> &'static str {
        match cfg.build(RemedyContext::new()) {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn bad_configuration_is_a_typed_error() {
        assert_eq!(
            field(HealerConfig::new().remedy(Arc::new(Rescan))),
            "remedy"
        );
        assert_eq!(
            field(HealerConfig::new().cold_start_order(Problem::CORRUPT_PAGE, &["nope"])),
            "cold_start_order"
        );
        assert_eq!(field(HealerConfig::new().max_attempts(0)), "max_attempts");
        assert_eq!(
            field(HealerConfig::new().health_tolerance(f64::NAN)),
            "health_tolerance"
        );
        assert_eq!(
            field(HealerConfig::new().backoff(Duration::ZERO, Duration::from_secs(1))),
            "backoff_base"
        );
        assert_eq!(
            field(HealerConfig::new().restart_intensity(0, Duration::from_secs(1))),
            "max_restarts"
        );
        assert_eq!(
            field(HealerConfig::new().breaker(BreakerConfig::new().window_size(0))),
            "window_size"
        );
        assert!(HealerConfig::new().build(RemedyContext::new()).is_ok());
    }
}
