//! Its contract is documented on [`Postmortem`] (this module is private; its
//! items are re-exported by its parent).

use std::fmt::Write as _;
use std::time::Duration;

use crate::types::Priority;

use super::incident::{AttemptOutcome, Incident};

/// The default RTO per priority: P0 30 s, P1 2 min, P2 5 min, P3 1 h.
#[must_use]
pub fn default_rto(priority: Priority) -> Duration {
    match priority {
        Priority::P0 => Duration::from_secs(30),
        Priority::P1 => Duration::from_secs(120),
        Priority::P2 => Duration::from_secs(300),
        Priority::P3 => Duration::from_secs(3_600),
    }
}

/// One line of a postmortem's timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PostmortemEvent {
    /// Milliseconds since the first detection.
    pub offset_ms: u64,
    /// The step's name.
    pub step: String,
    /// What happened.
    pub text: String,
}

/// One action of a postmortem.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PostmortemAction {
    /// The remedy.
    pub remedy: String,
    /// How it ended (`healed`, `failed`, …).
    pub outcome: String,
    /// The error, skip reason or verification result, and what it did.
    pub evidence: Vec<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// An incident's postmortem as plain data.
///
/// The postmortem of an incident: a short account for a person (Markdown)
/// and for a pager or ticket system (a plain data struct, serialisable with
/// the `serde` feature).
///
/// It holds the timeline, the evidence, the diagnosis and its confidence,
/// each action with its verification, and the time to heal against the
/// recovery time objective (RTO): the one the caller passes, or the default
/// of the incident's priority ([`default_rto`]).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Postmortem {
    /// The incident.
    pub incident: u64,
    /// What it was about (for a page-set incident: its page count and
    /// pages).
    pub target: String,
    /// Its priority (`P0` …).
    pub priority: String,
    /// How it ended (`healed`, `escalated`, `observed`, `deferred`).
    pub outcome: String,
    /// The problem diagnosed.
    pub problem: String,
    /// The diagnosis' confidence, 0 to 1.
    pub confidence: f64,
    /// The rule that decided (none for an unknown symptom).
    pub rule: Option<String>,
    /// Each failure that joined, as printed.
    pub evidence: Vec<String>,
    /// The timeline.
    pub timeline: Vec<PostmortemEvent>,
    /// The actions and their verification.
    pub actions: Vec<PostmortemAction>,
    /// From detection to a verified heal, in milliseconds (healed only).
    pub time_to_heal_ms: Option<u64>,
    /// The RTO it is judged against, in milliseconds.
    pub rto_ms: u64,
    /// Whether it healed within the RTO.
    pub rto_met: bool,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Incident {
    /// The postmortem, judged against `rto` or the priority's default.
    #[must_use]
    pub fn postmortem(&self, rto: Option<Duration>) -> Postmortem {
        let rto = rto.unwrap_or_else(|| default_rto(self.priority));
        let start = self.detected_ns();
        let heal = self.time_to_heal();
        Postmortem {
            incident: self.id,
            target: self.subject(),
            priority: self.priority.to_string(),
            outcome: self.outcome_text(),
            problem: self.diagnosis.problem.to_string(),
            confidence: self.diagnosis.confidence,
            rule: self.diagnosis.rule.as_deref().map(str::to_string),
            evidence: self.failures.iter().map(ToString::to_string).collect(),
            timeline: self
                .timeline
                .iter()
                .map(|e| PostmortemEvent {
                    offset_ms: e.at_ns.saturating_sub(start) / 1_000_000,
                    step: e.step.as_str().to_string(),
                    text: e.text.clone(),
                })
                .collect(),
            actions: self
                .attempts
                .iter()
                .map(|a| {
                    let mut evidence = Vec::new();
                    match &a.outcome {
                        AttemptOutcome::Failed { error } => {
                            evidence.push(format!("error: {error}"))
                        }
                        AttemptOutcome::Skipped(why) => evidence.push(format!("skipped: {why}")),
                        _ => {}
                    }
                    evidence.extend(a.evidence.iter().cloned());
                    PostmortemAction {
                        remedy: a.remedy.clone(),
                        outcome: a.outcome.as_str().to_string(),
                        evidence,
                        duration_ms: a.finished_ns.saturating_sub(a.started_ns) / 1_000_000,
                    }
                })
                .collect(),
            time_to_heal_ms: heal.map(ms),
            rto_ms: ms(rto),
            rto_met: heal.is_some_and(|h| h <= rto),
        }
    }

    /// The postmortem as Markdown, judged against `rto` or the priority's
    /// default.
    #[must_use]
    pub fn postmortem_markdown(&self, rto: Option<Duration>) -> String {
        self.postmortem(rto).to_markdown()
    }
}

impl Postmortem {
    /// Renders it as Markdown for a person.
    #[must_use]
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "# Incident {} — {} on {}\n",
            self.incident, self.priority, self.target
        );
        let _ = writeln!(s, "**Outcome:** {}  ", self.outcome);
        let _ = writeln!(
            s,
            "**Diagnosis:** {} (confidence {:.2}, rule {})  ",
            self.problem,
            self.confidence,
            self.rule.as_deref().unwrap_or("none: unknown symptom")
        );
        let verdict = match self.time_to_heal_ms {
            Some(t) if self.rto_met => format!("{t} ms, within the RTO of {} ms: met", self.rto_ms),
            Some(t) => format!("{t} ms, over the RTO of {} ms: missed", self.rto_ms),
            None => format!("not healed; RTO of {} ms: missed", self.rto_ms),
        };
        let _ = writeln!(s, "**Time to heal:** {verdict}\n");
        let _ = writeln!(s, "## Evidence\n");
        for e in &self.evidence {
            let _ = writeln!(s, "- {e}");
        }
        let _ = writeln!(s, "\n## Timeline\n");
        let _ = writeln!(s, "| +ms | step | what |\n|---:|---|---|");
        for e in &self.timeline {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                e.offset_ms,
                e.step,
                e.text.replace('|', "\\|").replace('\n', " ")
            );
        }
        let _ = writeln!(s, "\n## Actions and verification\n");
        if self.actions.is_empty() {
            let _ = writeln!(s, "No action was taken.");
        }
        for (i, a) in self.actions.iter().enumerate() {
            let _ = writeln!(
                s,
                "{}. **{}**: {} ({} ms)",
                i + 1,
                a.remedy,
                a.outcome,
                a.duration_ms
            );
            for e in &a.evidence {
                let _ = writeln!(s, "   - {e}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::healer::diagnose::{Diagnosis, Problem};
    use crate::healer::incident::{Outcome, Step};
    use crate::types::{Failure, FailureKind, PageId, Source, Target};

    fn incident() -> Incident {
        let f = Failure::new(
            Source::Host,
            FailureKind::Anomaly { metric: "m".into() },
            "z | 9",
            5_000_000,
        );
        let mut inc = Incident {
            id: 1,
            target: f.target(),
            pages: Vec::new(),
            priority: f.priority,
            failures: vec![f],
            diagnosis: Diagnosis {
                problem: Problem::ANOMALY,
                confidence: 0.5,
                rule: Some("builtin.anomaly".into()),
                target: Target::Metric("m".into()),
            },
            timeline: Vec::new(),
            attempts: Vec::new(),
            outcome: Outcome::Escalated,
            escalation: None,
        };
        inc.push(5_000_000, Step::Detected, "a | b");
        inc
    }

    #[test]
    fn default_rtos_follow_priority() {
        assert_eq!(default_rto(Priority::P0), Duration::from_secs(30));
        assert_eq!(default_rto(Priority::P1), Duration::from_secs(120));
        assert_eq!(default_rto(Priority::P2), Duration::from_secs(300));
        assert_eq!(default_rto(Priority::P3), Duration::from_secs(3_600));
    }

    #[test]
    fn a_joined_failure_raises_priority_and_keeps_the_timeline_ordered() {
        let mut inc = incident();
        assert_eq!(inc.priority, Priority::P3);
        let urgent = Failure::new(
            Source::CorruptionDetector,
            FailureKind::CorruptPage { page: PageId(1) },
            "x",
            1_000,
        );
        inc.join(urgent, 1_000);
        assert_eq!(inc.priority, Priority::P0);
        assert!(inc.timeline.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
        assert_eq!(inc.failures.len(), 2);
    }

    #[test]
    fn an_unhealed_incident_misses_its_rto_and_table_cells_are_escaped() {
        let inc = incident();
        let pm = inc.postmortem(None);
        assert!(!pm.rto_met);
        assert_eq!(pm.time_to_heal_ms, None);
        assert_eq!(pm.rto_ms, 3_600_000);
        let md = pm.to_markdown();
        assert!(md.contains("not healed; RTO of 3600000 ms: missed"), "{md}");
        assert!(md.contains("No action was taken."));
        assert!(md.contains("| a \\| b |"), "{md}");
    }
}
