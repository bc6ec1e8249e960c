//! The manager's statistics and its metrics (through the `metrics` facade).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use metrics::{Key, Label, Level, Metadata};

use crate::healer::{AttemptOutcome, Incident, Outcome};
use crate::types::Priority;

/// How one remedy has fared under the manager.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemedyStats {
    /// Times it ran (skips not counted, nor attempts that found their
    /// target already healthy and did nothing).
    pub tried: u64,
    /// Times it healed its target, verified.
    pub healed: u64,
}

impl RemedyStats {
    /// `healed / tried`, or `None` before it ran.
    #[must_use]
    pub fn success_rate(&self) -> Option<f64> {
        (self.tried > 0).then(|| self.healed as f64 / self.tried as f64)
    }
}

/// What the manager has seen and done since it was built. See
/// [`AutoRecoveryManager::stats`](super::AutoRecoveryManager::stats).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecoveryStats {
    /// Failures taken from the bus (and found by rescans).
    pub failures: u64,
    /// Incidents opened (a joined failure opens none).
    pub detected: u64,
    /// Failures that joined an open incident.
    pub joined: u64,
    /// Incidents closed healed (a page-set incident counts once).
    pub recovered: u64,
    /// Pages healed: one per healed page incident, and every page of a
    /// healed page-set incident.
    pub pages_healed: u64,
    /// Incidents merged into a page-set incident that healed their page
    /// (page failures that arrive together are healed as one incident).
    pub merged: u64,
    /// Incidents closed escalated.
    pub escalated: u64,
    /// Incidents closed observed (Observe mode).
    pub observed: u64,
    /// Times an incident was deferred by a target's cooldown.
    pub deferred: u64,
    /// Open incidents now (queued, running or deferred).
    pub open: u64,
    /// Failures not queued because the queue was full.
    pub overflowed: u64,
    /// Error-only rescans run after an overflow.
    pub rescans: u64,
    /// Failures the bus dropped because the dispatcher fell behind.
    pub bus_dropped: u64,
    /// Events dropped for slow subscribers.
    pub events_dropped: u64,
    /// Mean time to heal (detection to verified heal) of healed incidents.
    pub mttr: Option<Duration>,
    /// Healed incidents whose time to heal was within their RTO.
    pub within_rto: u64,
    /// Open incidents (queued, running or deferred) detected longer ago
    /// than their RTO, now: misses already, whatever happens next.
    pub open_past_rto: u64,
    /// Per remedy, by name.
    pub remedies: BTreeMap<String, RemedyStats>,
}

impl RecoveryStats {
    /// The share of incidents that met their RTO: those healed within it,
    /// over every incident closed healed or escalated plus those open past
    /// their RTO now. An escalated incident is a miss (nothing healed it),
    /// and so is one still open past its RTO; observed incidents (Observe
    /// mode) are not judged. `None` before any incident was judged.
    #[must_use]
    pub fn rto_compliance(&self) -> Option<f64> {
        let judged = self.recovered + self.escalated + self.open_past_rto;
        (judged > 0).then(|| self.within_rto as f64 / judged as f64)
    }
}

/// The running totals behind [`RecoveryStats`].
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) stats: RecoveryStats,
    heal_ns_total: u128,
    /// Per remedy name, the keys of its `selfheal_remedy_attempts_total`
    /// series (outcome `healed`, `failed`): built the first time the remedy
    /// is counted, so that counting an attempt allocates nothing.
    remedy_keys: HashMap<String, [Key; 2]>,
}

/// Where the manager's metrics say they come from (as the `metrics`
/// macros would give them).
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// A metric of the `metrics` facade (`counter`, `histogram`) labelled
/// with `priority` (and more literal labels): one arm per priority, each
/// with its key built at compile time, so that emitting allocates nothing.
macro_rules! by_priority {
    ($kind:ident, $p:expr, $name:literal $(, $k:literal => $v:literal)*) => {
        match $p {
            Priority::P0 => metrics::$kind!($name, "priority" => "P0" $(, $k => $v)*),
            Priority::P1 => metrics::$kind!($name, "priority" => "P1" $(, $k => $v)*),
            Priority::P2 => metrics::$kind!($name, "priority" => "P2" $(, $k => $v)*),
            Priority::P3 => metrics::$kind!($name, "priority" => "P3" $(, $k => $v)*),
        }
    };
}

impl Tally {
    pub(crate) fn opened(&mut self, p: Priority) {
        self.stats.detected += 1;
        by_priority!(counter, p, "selfheal_incidents_opened_total").increment(1);
    }

    /// Counts one attempt of `remedy` in `selfheal_remedy_attempts_total`.
    fn count_attempt(&mut self, remedy: &str, healed: bool) {
        if !self.remedy_keys.contains_key(remedy) {
            let key = |outcome: &'static str| {
                Key::from_parts(
                    "selfheal_remedy_attempts_total",
                    vec![
                        Label::new("remedy", remedy.to_string()),
                        Label::new("outcome", outcome),
                    ],
                )
            };
            self.remedy_keys
                .insert(remedy.to_string(), [key("healed"), key("failed")]);
        }
        let key = &self.remedy_keys[remedy][usize::from(!healed)];
        metrics::with_recorder(|r| r.register_counter(key, &METADATA)).increment(1);
    }

    /// Counts a closed (or deferred) incident; returns whether it was
    /// healed within `rto`.
    pub(crate) fn closed(&mut self, inc: &Incident, rto: Duration) -> bool {
        for a in &inc.attempts {
            // A remedy that was skipped, or did nothing (its target found
            // healthy, or changed under it), neither succeeded nor failed.
            if matches!(
                a.outcome,
                AttemptOutcome::Skipped(_)
                    | AttemptOutcome::NothingToDo
                    | AttemptOutcome::Overtaken
            ) {
                continue;
            }
            // The name is copied only the first time the remedy is counted.
            if !self.stats.remedies.contains_key(&a.remedy) {
                self.stats
                    .remedies
                    .insert(a.remedy.clone(), RemedyStats::default());
            }
            let r = self
                .stats
                .remedies
                .get_mut(&a.remedy)
                .expect("inserted above");
            r.tried += 1;
            let healed = a.outcome == AttemptOutcome::Healed;
            r.healed += u64::from(healed);
            self.count_attempt(&a.remedy, healed);
        }
        let p = inc.priority;
        match &inc.outcome {
            Outcome::Healed { .. } => {
                self.stats.recovered += 1;
                self.stats.pages_healed += match (&inc.target, inc.pages.len()) {
                    (crate::types::Target::Page(_), 0) => 1,
                    (_, n) => n as u64,
                };
                let tth = inc.time_to_heal().unwrap_or_default();
                self.heal_ns_total += tth.as_nanos();
                let n = u128::from(self.stats.recovered);
                self.stats.mttr = Some(Duration::from_nanos(
                    u64::try_from(self.heal_ns_total / n).unwrap_or(u64::MAX),
                ));
                let within = tth <= rto;
                self.stats.within_rto += u64::from(within);
                by_priority!(counter, p, "selfheal_incidents_healed_total").increment(1);
                by_priority!(histogram, p, "selfheal_recovery_duration_seconds")
                    .record(tth.as_secs_f64());
                if within {
                    by_priority!(counter, p, "selfheal_rto_total", "met" => "yes").increment(1);
                } else {
                    by_priority!(counter, p, "selfheal_rto_total", "met" => "no").increment(1);
                }
                within
            }
            Outcome::Escalated => {
                self.stats.escalated += 1;
                by_priority!(counter, p, "selfheal_incidents_escalated_total").increment(1);
                by_priority!(counter, p, "selfheal_rto_total", "met" => "no").increment(1);
                false
            }
            Outcome::Observed => {
                self.stats.observed += 1;
                by_priority!(counter, p, "selfheal_incidents_observed_total").increment(1);
                false
            }
            _ => {
                self.stats.deferred += 1;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::healer::{Attempt, Diagnosis, Problem};
    use crate::types::{PageId, Target};

    /// An attempt that did nothing — its target found healthy, or changed
    /// under it — is counted for the remedy neither as tried nor as
    /// healed; the attempt after it is.
    #[test]
    fn attempts_that_did_nothing_are_not_counted_for_the_remedy() {
        let attempt = |outcome| Attempt {
            remedy: "repair-from-replicas".into(),
            started_ns: 1,
            finished_ns: 2,
            outcome,
            evidence: Vec::new(),
        };
        let target = Target::Page(PageId(3));
        let inc = Incident {
            id: 1,
            target: target.clone(),
            pages: Vec::new(),
            priority: Priority::P0,
            failures: Vec::new(),
            diagnosis: Diagnosis {
                problem: Problem::CORRUPT_PAGE,
                confidence: 1.0,
                rule: None,
                target,
            },
            timeline: Vec::new(),
            attempts: vec![
                attempt(AttemptOutcome::Overtaken),
                attempt(AttemptOutcome::NothingToDo),
                attempt(AttemptOutcome::Healed),
            ],
            outcome: Outcome::Healed {
                remedy: "repair-from-replicas".into(),
            },
            escalation: None,
        };
        let mut tally = Tally::default();
        tally.closed(&inc, Duration::from_secs(30));
        let r = &tally.stats.remedies["repair-from-replicas"];
        assert_eq!((r.tried, r.healed), (1, 1));
        assert_eq!(tally.stats.recovered, 1);
    }
}
