//! Its contract is documented on [`Incident`] (this module is private; its
//! items are re-exported by its parent).

use std::fmt;
use std::time::Duration;

use crate::types::{Failure, PageId, Priority, Target};

use super::diagnose::Diagnosis;

/// A step of an incident's timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// The first failure was detected (its own detection time).
    Detected,
    /// A later report of the same target joined the incident.
    Joined,
    /// It entered the recovery manager's queue (before the healer took
    /// it: the time between the two is time spent waiting).
    Queued,
    /// The healer took the incident.
    Started,
    /// The diagnosis was made.
    Diagnosed,
    /// The remedies were ranked.
    Planned,
    /// A remedy was not tried (breaker, restart intensity, snapshot).
    Skipped,
    /// The healer waited (backoff with jitter) before the next attempt.
    Waited,
    /// A snapshot was taken before a risky remedy.
    Snapshot,
    /// A remedy ran.
    Acted,
    /// A remedy's result was checked.
    Verified,
    /// A remedy that made health worse was taken back.
    Undone,
    /// Nothing worked: the incident was escalated.
    Escalated,
    /// The incident was closed.
    Closed,
}

impl Step {
    /// The step's name, as printed.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Detected => "detected",
            Step::Joined => "joined",
            Step::Started => "started",
            Step::Diagnosed => "diagnosed",
            Step::Planned => "planned",
            Step::Skipped => "skipped",
            Step::Waited => "waited",
            Step::Queued => "queued",
            Step::Snapshot => "snapshot",
            Step::Acted => "acted",
            Step::Verified => "verified",
            Step::Undone => "undone",
            Step::Escalated => "escalated",
            Step::Closed => "closed",
        }
    }
}

/// One entry of the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When, in nanoseconds of the healer's clock.
    pub at_ns: u64,
    /// Which step.
    pub step: Step,
    /// What happened, for a person.
    pub text: String,
}

/// Why a remedy was not tried.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// Its circuit breaker is open.
    BreakerOpen,
    /// The component was restarted as often as the restart intensity allows.
    RestartIntensity,
    /// The snapshot before a risky remedy failed.
    SnapshotFailed(String),
    /// The action gate (the host's approval) did not allow it.
    NotApproved,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::BreakerOpen => f.write_str("its circuit breaker is open"),
            SkipReason::RestartIntensity => {
                f.write_str("the component reached its restart intensity")
            }
            SkipReason::SnapshotFailed(e) => {
                write!(f, "the snapshot before it failed: {e}")
            }
            SkipReason::NotApproved => f.write_str("it was not approved"),
        }
    }
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// It ran and the target verified (and health was no worse).
    Healed,
    /// It returned an error.
    Failed {
        /// The error, as printed.
        error: String,
    },
    /// It ran but the target did not verify (or re-checking it failed).
    NotVerified,
    /// It ran and the host acknowledged it, but the remedy has nothing to
    /// re-check its target with ([`Verified::unchecked`]): the incident is
    /// closed as healed, and the learner does not count it as a success.
    ///
    /// [`Verified::unchecked`]: super::Verified::unchecked
    Unverified,
    /// It found its target already healthy and did nothing
    /// ([`Applied::nothing_to_do`]), and the target verified: the incident
    /// is closed as healed, and neither the learner, nor the breaker, nor
    /// the remedy's statistics count it.
    ///
    /// [`Applied::nothing_to_do`]: super::Applied::nothing_to_do
    NothingToDo,
    /// It did nothing because someone else changed its target while it
    /// ran ([`Applied::overtaken`]: the host rewrote the page during its
    /// repair), and the re-check found the target still failing: a fault
    /// of what changed it, not a failure of the remedy. The remedy is
    /// tried once more, on the target as it now is, before the plan moves
    /// on; neither the learner, nor the breaker, nor the remedy's
    /// statistics count it.
    ///
    /// [`Applied::overtaken`]: super::Applied#structfield.overtaken
    Overtaken,
    /// It verified but left health worse than before; it was undone if it
    /// could be.
    MadeWorse {
        /// Whether the undo succeeded.
        undone: bool,
    },
    /// It was not tried.
    Skipped(SkipReason),
}

impl AttemptOutcome {
    /// A short name, as printed.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            AttemptOutcome::Healed => "healed",
            AttemptOutcome::Failed { .. } => "failed",
            AttemptOutcome::NotVerified => "not verified",
            AttemptOutcome::Unverified => "unverified",
            AttemptOutcome::NothingToDo => "nothing to do",
            AttemptOutcome::Overtaken => "overtaken",
            AttemptOutcome::MadeWorse { undone: true } => "made health worse (undone)",
            AttemptOutcome::MadeWorse { undone: false } => "made health worse (not undone)",
            AttemptOutcome::Skipped(_) => "skipped",
        }
    }
}

/// One remedy considered for an incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The remedy's name.
    pub remedy: String,
    /// When it started (or was skipped), on the clock.
    pub started_ns: u64,
    /// When it ended, on the clock.
    pub finished_ns: u64,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// What it did and what checking found, in order.
    pub evidence: Vec<String>,
}

/// How an incident ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A remedy healed it, verified.
    Healed {
        /// The remedy that did.
        remedy: String,
    },
    /// Nothing worked (or nothing applied, or the problem is unknown): one
    /// report went to the host.
    Escalated,
    /// The healer only observed: it decided and reported, and changed
    /// nothing.
    Observed,
    /// The target is in its cooldown after a recent action: nothing was
    /// done; hand the failure to the healer again after `until_ns`.
    Deferred {
        /// When the cooldown ends, on the clock.
        until_ns: u64,
    },
}

impl Outcome {
    /// A short name, as printed.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Healed { .. } => "healed",
            Outcome::Escalated => "escalated",
            Outcome::Observed => "observed",
            Outcome::Deferred { .. } => "deferred",
        }
    }
}

/// The one report an escalated incident sends to the host: the problem,
/// every remedy tried, each outcome and its evidence.
#[derive(Clone, Debug, PartialEq)]
pub struct EscalationReport {
    /// The incident.
    pub incident: u64,
    /// What it is about.
    pub target: Target,
    /// Its priority (the most urgent of its failures).
    pub priority: Priority,
    /// The diagnosis.
    pub diagnosis: Diagnosis,
    /// The failures that joined it.
    pub failures: Vec<Failure>,
    /// Every remedy considered, in order, with outcome and evidence.
    pub attempts: Vec<Attempt>,
    /// Why it was escalated, in one sentence.
    pub reason: String,
}

impl fmt::Display for EscalationReport {
    /// A page for a person: what, why, and what was tried.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "[{}] incident {} on {}: {} (diagnosis {}, confidence {:.2})",
            self.priority,
            self.incident,
            self.target,
            self.reason,
            self.diagnosis.problem,
            self.diagnosis.confidence
        )?;
        for fl in &self.failures {
            writeln!(f, "  failure {fl}")?;
        }
        if self.attempts.is_empty() {
            writeln!(f, "  no remedy was tried")?;
        }
        for a in &self.attempts {
            writeln!(f, "  tried {}: {}", a.remedy, a.outcome.as_str())?;
            if let AttemptOutcome::Failed { error } = &a.outcome {
                writeln!(f, "    error: {error}")?;
            }
            if let AttemptOutcome::Skipped(why) = &a.outcome {
                writeln!(f, "    because {why}")?;
            }
            for e in &a.evidence {
                writeln!(f, "    {e}")?;
            }
        }
        Ok(())
    }
}

/// One incident.
///
/// An incident: the failures that joined it, what was decided and done, on
/// the clock, and how it ended.
///
/// [`SelfHealer::heal`](super::SelfHealer::heal) returns one per failure it
/// is handed; [`SelfHealer::heal_batch`](super::SelfHealer::heal_batch)
/// returns one page-set incident for page failures of one diagnosis handed
/// in together ([`Incident::pages`] lists the pages it healed); a caller
/// that de-duplicates by target
/// ([`Incident::join`]) adds later reports of the same target to it. Its
/// timeline lists every step with the clock's time, its attempts every
/// remedy considered with its outcome and evidence, and an escalated
/// incident carries the one report sent to the host.
///
/// # Contract
/// - The timeline is in time order, starts with `Detected` (the first
///   failure's detection time) and, once the incident is closed, ends with
///   `Closed`.
/// - Every remedy that was considered appears once per try in
///   [`Incident::attempts`], also when it was skipped (breaker open,
///   restart intensity reached, the snapshot before it failed).
#[derive(Clone, Debug, PartialEq)]
pub struct Incident {
    /// Its id (from 1, in the order the healer opened incidents).
    pub id: u64,
    /// What it is about (for a page-set incident, the first of its pages).
    pub target: Target,
    /// A page-set incident's pages (see
    /// [`SelfHealer::heal_batch`](super::SelfHealer::heal_batch)), in
    /// the order they were handed in; empty for an incident about one
    /// target.
    pub pages: Vec<PageId>,
    /// The most urgent priority of its failures.
    pub priority: Priority,
    /// The failures that joined it, first one first.
    pub failures: Vec<Failure>,
    /// The diagnosis.
    pub diagnosis: Diagnosis,
    /// Every step, in time order.
    pub timeline: Vec<Event>,
    /// Every remedy considered, in order.
    pub attempts: Vec<Attempt>,
    /// How it ended.
    pub outcome: Outcome,
    /// The report sent to the host, when escalated.
    pub escalation: Option<EscalationReport>,
}

impl Incident {
    /// Adds a later report of the same target (its priority raises the
    /// incident's when more urgent), with a `Joined` step at `now_ns`.
    pub fn join(&mut self, failure: Failure, now_ns: u64) {
        self.priority = self.priority.min(failure.priority);
        self.push(
            now_ns,
            Step::Joined,
            format!("{} joined: {}", failure.id, failure.evidence),
        );
        self.failures.push(failure);
    }

    /// Records that it was queued at `at_ns`: a `Queued` step just before
    /// the healer's `Started` (at most once; the time is clamped between
    /// the events around it, so the timeline stays ordered).
    pub(crate) fn queued_at(&mut self, at_ns: u64) {
        if self.timeline.iter().any(|e| e.step == Step::Queued) {
            return;
        }
        let pos = self
            .timeline
            .iter()
            .position(|e| e.step == Step::Started)
            .unwrap_or(self.timeline.len());
        let lo = pos.checked_sub(1).map_or(0, |i| self.timeline[i].at_ns);
        let hi = self.timeline.get(pos).map_or(u64::MAX, |e| e.at_ns);
        self.timeline.insert(
            pos,
            Event {
                at_ns: at_ns.clamp(lo, hi.max(lo)),
                step: Step::Queued,
                text: "queued for the healer".to_string(),
            },
        );
    }

    pub(super) fn push(&mut self, at_ns: u64, step: Step, text: impl Into<String>) {
        // A joined failure detected earlier keeps the timeline ordered.
        let at_ns = self.timeline.last().map_or(at_ns, |l| at_ns.max(l.at_ns));
        self.timeline.push(Event {
            at_ns,
            step,
            text: text.into(),
        });
    }

    /// What it is about, as printed: its target, or for a page-set
    /// incident its page count and pages.
    #[must_use]
    pub fn subject(&self) -> String {
        if self.pages.is_empty() {
            self.target.to_string()
        } else {
            format!("{} pages ({})", self.pages.len(), page_list(&self.pages))
        }
    }

    /// When the first failure was detected, on the clock.
    #[must_use]
    pub fn detected_ns(&self) -> u64 {
        self.failures.first().map_or(0, |f| f.detected_at_ns)
    }

    /// When it was closed, if it was.
    #[must_use]
    pub fn closed_ns(&self) -> Option<u64> {
        self.timeline
            .iter()
            .rev()
            .find(|e| e.step == Step::Closed)
            .map(|e| e.at_ns)
    }

    /// How it ended, as a person reads it: `healed by repair-from-replicas`;
    /// when the last attempt found the target already healthy, `healed
    /// before any action (repair-from-replicas found nothing to do)`; when
    /// nothing could re-check it, `healed by … (unverified: nothing could
    /// re-check it)`; `escalated`, `observed`, `deferred` otherwise.
    #[must_use]
    pub fn outcome_text(&self) -> String {
        match &self.outcome {
            Outcome::Healed { remedy } => match self.attempts.last().map(|a| &a.outcome) {
                Some(AttemptOutcome::NothingToDo) => {
                    format!("healed before any action ({remedy} found nothing to do)")
                }
                Some(AttemptOutcome::Unverified) => {
                    format!("healed by {remedy} (unverified: nothing could re-check it)")
                }
                _ => ["healed by ", remedy].concat(),
            },
            other => other.as_str().to_string(),
        }
    }

    /// Whether it closed healed although no remedy acted: the last attempt
    /// found the target already healthy ([`AttemptOutcome::NothingToDo`]).
    #[must_use]
    pub fn healed_without_action(&self) -> bool {
        matches!(self.outcome, Outcome::Healed { .. })
            && self
                .attempts
                .last()
                .is_some_and(|a| a.outcome == AttemptOutcome::NothingToDo)
    }

    /// From detection to a verified heal; `None` unless healed.
    #[must_use]
    pub fn time_to_heal(&self) -> Option<Duration> {
        match self.outcome {
            Outcome::Healed { .. } => self
                .closed_ns()
                .map(|c| Duration::from_nanos(c.saturating_sub(self.detected_ns()))),
            _ => None,
        }
    }
}

/// `pages` as printed in a page-set incident's texts: `3, 5, 9`.
pub(crate) fn page_list(pages: &[PageId]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(pages.len() * 6);
    for (i, p) in pages.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{p}");
    }
    s
}
