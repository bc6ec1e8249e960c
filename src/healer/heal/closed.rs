//! Incidents a caller closes on its own account: escalated without acting
//! (the recovery thread handling it kept dying), or healed by an action the
//! caller took and checked itself (the recovery manager restarting one of
//! its own threads). Each gets the timeline, attempts and audit records of
//! any incident the healer closes, so statistics, postmortems and the audit
//! log count it.

use std::sync::Arc;

use crate::audit::EntryKind;
use crate::healer::diagnose::{Diagnosis, Problem};
use crate::healer::incident::{Attempt, AttemptOutcome, Incident, Outcome, Step};
use crate::types::Failure;

use super::SelfHealer;

impl SelfHealer {
    /// Closes incident `id` as escalated without acting, for a caller that
    /// could not see it through (the recovery thread handling it died on it
    /// more than once): the diagnosis is tried (a panic in it leaves the
    /// problem unknown), the report goes to the host as every escalation
    /// does, and the audit log records it.
    pub fn escalate_as(
        &self,
        id: u64,
        failure: Failure,
        joined: &[Failure],
        reason: &str,
    ) -> Incident {
        let target = failure.target();
        let diagnosis =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.diagnose(&failure)))
                .unwrap_or_else(|_| Diagnosis {
                    problem: Problem::UNKNOWN,
                    confidence: 0.0,
                    rule: None,
                    target: target.clone(),
                });
        let mut inc = Incident {
            id,
            target,
            pages: Vec::new(),
            priority: failure.priority,
            failures: vec![failure.clone()],
            diagnosis,
            timeline: Vec::new(),
            attempts: Vec::new(),
            outcome: Outcome::Escalated,
            escalation: None,
        };
        let detected = failure.text();
        inc.push(failure.detected_at_ns, Step::Detected, detected.clone());
        self.audit(&inc, EntryKind::Detected, detected);
        for j in joined {
            inc.join(j.clone(), j.detected_at_ns);
        }
        self.escalate(&mut inc, reason);
        inc
    }

    /// Closes incident `id` as healed by `remedy`, an action the caller
    /// took itself and checked (the recovery manager restarting one of its
    /// own threads): the timeline, the attempt and the audit records are
    /// those of any healed incident, so statistics and postmortems count it.
    pub fn healed_as(
        &self,
        id: u64,
        failure: Failure,
        remedy: &str,
        acted: &str,
        verified: &str,
    ) -> Incident {
        let clock = self.ctx.clock_ref().clone();
        let target = failure.target();
        let diagnosis = Diagnosis {
            problem: Problem::WORKER_DIED,
            confidence: 1.0,
            rule: Some(Arc::from("recovery.own_thread")),
            target: target.clone(),
        };
        let mut inc = Incident {
            id,
            target,
            pages: Vec::new(),
            priority: failure.priority,
            failures: vec![failure.clone()],
            diagnosis,
            timeline: Vec::new(),
            attempts: Vec::new(),
            outcome: Outcome::Escalated,
            escalation: None,
        };
        let detected = failure.text();
        inc.push(failure.detected_at_ns, Step::Detected, detected.clone());
        self.audit(&inc, EntryKind::Detected, detected);
        let started = clock.now_ns();
        inc.push(
            started,
            Step::Started,
            "the recovery manager took the incident",
        );
        let acted_text = format!("{remedy}: {acted}");
        inc.push(clock.now_ns(), Step::Acted, acted_text.clone());
        self.audit(&inc, EntryKind::Acted, acted_text);
        let verified_text = format!("{remedy}: {verified}");
        inc.push(clock.now_ns(), Step::Verified, verified_text.clone());
        self.audit(&inc, EntryKind::Verified, verified_text);
        inc.attempts.push(Attempt {
            remedy: remedy.to_string(),
            started_ns: started,
            finished_ns: clock.now_ns(),
            outcome: AttemptOutcome::Healed,
            evidence: vec![acted.to_string(), verified.to_string()],
        });
        inc.outcome = Outcome::Healed {
            remedy: remedy.to_string(),
        };
        inc.push(clock.now_ns(), Step::Closed, format!("healed by {remedy}"));
        self.audit(&inc, EntryKind::Closed, format!("healed by {remedy}"));
        inc
    }
}
