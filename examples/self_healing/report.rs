//! The `self_healing` example's output: the timeline's lines and the
//! final table of incidents.

use std::time::Instant;

use selfheal::prelude::*;

use crate::engine::Engine;
use crate::faults::Fault;

/// Prints timeline lines with the time since the run began.
#[derive(Clone)]
pub struct Log(pub Instant);

impl Log {
    /// Prints one line.
    pub fn line(&self, text: impl AsRef<str>) {
        let t = self.0.elapsed().as_secs_f64();
        println!("[{t:7.3}s] {}", text.as_ref());
    }
}

/// Which fault an incident belongs to: the last one before it was detected.
pub fn fault_of(inc: &Incident, faults: &[Fault]) -> usize {
    faults
        .iter()
        .rposition(|f| f.at_ns <= inc.detected_ns())
        .unwrap_or(0)
}

/// One timeline line for an incident event.
pub fn describe(e: &RecoveryEvent) -> String {
    match e {
        RecoveryEvent::Opened {
            id,
            target,
            priority,
        } => {
            format!("  #{id:<3} opened   {target} ({priority})")
        }
        RecoveryEvent::Joined { id, target } => {
            format!("  #{id:<3} joined   another report of {target}")
        }
        RecoveryEvent::Action { id, text } => format!("  #{id:<3} action   {text}"),
        RecoveryEvent::Healed {
            id,
            remedy,
            time_to_heal,
            within_rto,
        } => format!(
            "  #{id:<3} healed   by {remedy} in {time_to_heal:.1?}{}",
            if *within_rto { "" } else { " (RTO missed)" }
        ),
        RecoveryEvent::Escalated { id, reason, .. } => format!("  #{id:<3} ESCALATED {reason}"),
        RecoveryEvent::Merged { id, into } => {
            format!("  #{id:<3} merged   into page-set incident #{into}")
        }
        RecoveryEvent::Observed { id } => {
            format!("  #{id:<3} observed (Observe mode: nothing done)")
        }
        RecoveryEvent::Overflowed { target } => {
            format!("       queue full: {target} left to the rescan")
        }
        other => format!("       {other:?}"),
    }
}

/// The table of incidents.
pub fn print_table(engine: &Engine, incidents: &[Incident], faults: &[Fault]) {
    println!(
        "{:<4} {:<31} {:<22} {:<19} {:<26} {:<27} {:>3} {:>10} {:>4}",
        "#", "fault", "target", "detected by", "diagnosis", "remedy", "try", "heal time", "RTO"
    );
    for inc in incidents {
        let remedy = match &inc.outcome {
            Outcome::Healed { .. } if inc.healed_without_action() => "none needed".into(),
            Outcome::Healed { remedy } => remedy.clone(),
            Outcome::Observed => inc
                .timeline
                .iter()
                .find(|e| e.step == Step::Planned)
                .and_then(|e| e.text.strip_prefix("plan: "))
                .and_then(|plan| plan.split(" → ").next())
                .map_or("nothing planned".into(), |first| format!("would: {first}")),
            other => other.as_str().to_string(),
        };
        let first = &inc.failures[0];
        let heal = inc.time_to_heal();
        println!(
            "{:<4} {:<31} {:<22} {:<19} {:<26} {:<27} {:>3} {:>10} {:>4}",
            inc.id,
            faults[fault_of(inc, faults)].name,
            inc.target.to_string(),
            format!("{}", first.source),
            format!(
                "{} ({:.2})",
                inc.diagnosis.problem, inc.diagnosis.confidence
            ),
            remedy,
            inc.attempts.len(),
            heal.map_or("-".into(), |d| format!("{d:.1?}")),
            match heal {
                Some(d) if d <= engine.manager.rto(inc.priority) => "yes",
                Some(_) => "NO",
                None => "-",
            }
        );
    }
}
