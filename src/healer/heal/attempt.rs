//! One attempt of one remedy on an incident, from the decision to try it
//! to its recorded outcome: whether it may be tried now (restart
//! intensity, breaker, the action gate, the backoff before it, the
//! snapshot before a risky one), its start (health sampled, cooldown
//! started, decision audited), its run, and its conclusion (verified,
//! undone when it made things worse, recorded in its breaker, its learned
//! record and the incident). [`SelfHealer::heal`] and
//! [`SelfHealer::heal_batch`] drive their plans through these steps.
//!
//! # Contract
//! - A remedy that may not be tried is recorded as a skipped attempt with
//!   its reason, and any breaker trial it was granted is released.
//! - The write-ahead audit append happens before the remedy acts.
//! - Every attempt that ran gets exactly one outcome in its breaker,
//!   unless it found nothing to do (a half-open trial it was granted is
//!   given back), and one in its learned record unless it was unverified
//!   or found nothing to do.
//! - No lock is held while the remedy runs or while the healer waits.

use std::collections::HashMap;
use std::sync::Arc;

use crate::audit::EntryKind;
use crate::error::Result;
use crate::healer::breaker::Breaker;
use crate::healer::incident::{Attempt, AttemptOutcome, Incident, SkipReason, Step};
use crate::healer::pacing::RestartIntensity;
use crate::healer::remedy::{Applied, Case, Remedy};
use crate::host::HostAction;
use crate::types::Target;

use super::{batch, guarded, verify, SelfHealer, State, MAX_RESTART_TARGETS};

impl SelfHealer {
    /// One attempt of `remedy`; returns its name when it healed the target.
    pub(super) fn attempt(
        &self,
        inc: &mut Incident,
        case: &Case<'_>,
        remedy: &Arc<dyn Remedy>,
        executed: &mut usize,
    ) -> Option<String> {
        let now = self.prepare(inc, case, remedy, *executed)?;
        *executed += 1;
        let span = tracing::info_span!("remedy", name = remedy.name());
        let _enter = span.enter();
        let (before, started) = self.begin(inc, remedy.name(), now);
        // Write-ahead: the decision is in the log file before the effect.
        batch::write_ahead(self);
        let result = guarded(|| remedy.execute(&self.ctx, case));
        self.conclude(inc, case, remedy, result, before, started)
    }

    /// Whether `remedy` may be tried now, as attempt number `executed + 1`:
    /// restart intensity, breaker, the action gate, the backoff before it,
    /// the snapshot before a risky one. Returns the time it may start, or
    /// `None` (the skip recorded in the incident).
    pub(super) fn prepare(
        &self,
        inc: &mut Incident,
        case: &Case<'_>,
        remedy: &Arc<dyn Remedy>,
        executed: usize,
    ) -> Option<u64> {
        let clock = self.ctx.clock_ref().clone();
        let name = remedy.name();
        let restart = remedy.host_action() == Some(HostAction::RestartComponent);
        let mut now = clock.now_ns();
        // Decide under the lock: restart intensity, then the breaker.
        let skip = {
            let mut st = self.state.lock();
            let State {
                breakers, restarts, ..
            } = &mut *st;
            if restart && !self.restart_allowed(restarts, &inc.target, now, false) {
                Some(SkipReason::RestartIntensity)
            } else {
                // The name is copied only for the remedy's first breaker.
                if !breakers.contains_key(name) {
                    let b = Breaker::new(self.breaker).expect("validated at build");
                    breakers.insert(name.to_string(), b);
                }
                let breaker = breakers.get_mut(name).expect("present or inserted above");
                (!breaker.allow(now)).then_some(SkipReason::BreakerOpen)
            }
        };
        if let Some(why) = skip {
            self.skipped(inc, name, now, why);
            return None;
        }
        if let Some(gate) = &self.gate {
            if !gate(case, remedy.as_ref()) {
                self.release_breaker(name);
                self.skipped(inc, name, clock.now_ns(), SkipReason::NotApproved);
                return None;
            }
        }
        if executed > 0 {
            let delay = {
                let mut st = self.state.lock();
                self.backoff
                    .delay(u32::try_from(executed - 1).unwrap_or(u32::MAX), &mut st.rng)
            };
            let deadline = now.saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
            clock.sleep_until(deadline);
            now = clock.now_ns();
            inc.push(
                now,
                Step::Waited,
                format!("backoff {} ms before {name}", delay.as_millis()),
            );
        }
        if remedy.risky() {
            match self.ctx.take_snapshot() {
                Some(Ok(report)) => inc.push(
                    clock.now_ns(),
                    Step::Snapshot,
                    format!("snapshot {} taken before {name}", report.info.id),
                ),
                Some(Err(e)) => {
                    self.release_breaker(name);
                    self.skipped(inc, name, now, SkipReason::SnapshotFailed(e.to_string()));
                    return None;
                }
                None => inc.push(
                    clock.now_ns(),
                    Step::Snapshot,
                    format!("no snapshot before {name}: the context cannot take one"),
                ),
            }
        }
        if restart {
            let mut st = self.state.lock();
            if !self.restart_allowed(&mut st.restarts, &inc.target, now, true) {
                drop(st);
                self.release_breaker(name);
                self.skipped(inc, name, now, SkipReason::RestartIntensity);
                return None;
            }
        }
        Some(now)
    }

    /// Starts an attempt of `name` at `now`: health sampled, the target's
    /// cooldown started, the decision audited. Returns the health before
    /// and the start time.
    pub(super) fn begin(
        &self,
        inc: &mut Incident,
        name: &str,
        now: u64,
    ) -> (Option<verify::Health>, u64) {
        let before = self.health(inc);
        self.state.lock().cooldowns.acted(inc.target.clone(), now);
        self.audit(inc, EntryKind::Decided, ["try ", name].concat());
        (before, now)
    }

    /// Ends an attempt of `remedy` that ran with `result`: verified, undone
    /// when it made health worse (healed or not) or failed after an effect
    /// it can take back, recorded in its breaker, its learned
    /// record and the incident. Returns its name when it healed the target.
    pub(super) fn conclude(
        &self,
        inc: &mut Incident,
        case: &Case<'_>,
        remedy: &Arc<dyn Remedy>,
        result: Result<Applied>,
        before: Option<verify::Health>,
        started: u64,
    ) -> Option<String> {
        let clock = self.ctx.clock_ref().clone();
        let name = remedy.name().to_string();
        let problem = case.problem().as_str();
        // What the remedy did, its verification, and at most one more line.
        let mut evidence = Vec::with_capacity(3);
        let outcome = match result {
            Err(e) => {
                let text = format!("{name} failed: {e}");
                self.record(inc, clock.now_ns(), Step::Acted, EntryKind::Acted, text);
                if remedy.undo_after_error() {
                    // It may have changed something before it failed.
                    let partial = Applied::new(format!("{name} failed: {e}"));
                    let why = format!("it failed, maybe after a partial effect: {e}");
                    self.take_back(inc, case, remedy, &partial, &why, &mut evidence);
                }
                AttemptOutcome::Failed {
                    error: e.to_string(),
                }
            }
            Ok(applied) => {
                let acted = [name.as_str(), ": ", &applied.evidence].concat();
                self.record(inc, clock.now_ns(), Step::Acted, EntryKind::Acted, acted);
                evidence.push(applied.evidence.clone());
                let verified = guarded(|| remedy.verify(&self.ctx, case, &applied));
                // `rechecked`: the verification ran and looked at the
                // target (an error of its own is no finding about it).
                let (healed, checked, rechecked, text) = match verified {
                    Ok(v) => (v.healed, v.checked, v.checked, v.evidence),
                    Err(e) => (false, true, false, format!("could not re-check: {e}")),
                };
                let line = [name.as_str(), ": ", &text].concat();
                self.record(
                    inc,
                    clock.now_ns(),
                    Step::Verified,
                    EntryKind::Verified,
                    line,
                );
                evidence.push(text);
                // Health is compared after every attempt that ran, healed
                // or not: one that did not heal may still have done harm.
                match self.worse(before, self.health(inc)) {
                    Some(how) => {
                        evidence.push(how.clone());
                        let undone =
                            self.take_back(inc, case, remedy, &applied, &how, &mut evidence);
                        AttemptOutcome::MadeWorse { undone }
                    }
                    // It did nothing, and what changed the target under
                    // it left it bad: no evidence about the remedy.
                    None if !healed && applied.overtaken && rechecked => AttemptOutcome::Overtaken,
                    None if !healed => AttemptOutcome::NotVerified,
                    None if applied.nothing_to_do && checked => AttemptOutcome::NothingToDo,
                    None if !checked => AttemptOutcome::Unverified,
                    None => AttemptOutcome::Healed,
                }
            }
        };
        let healed = outcome == AttemptOutcome::Healed;
        // Closes the incident, but is no evidence either way for the
        // learner: nothing could re-check it, or it did nothing.
        let uncredited = matches!(
            outcome,
            AttemptOutcome::Unverified | AttemptOutcome::NothingToDo
        );
        // One clock read for the breaker and the attempt's end.
        let t = clock.now_ns();
        self.state.lock().credit(problem, &name, &outcome, t);
        inc.attempts.push(Attempt {
            remedy: name.clone(),
            started_ns: started,
            finished_ns: t,
            outcome,
            evidence,
        });
        (healed || uncredited).then_some(name)
    }

    /// Whether one more restart of `target` is allowed; counts it when
    /// `count`. With too many targets counted, forgets those with no recent
    /// restart; still full, refuses (escalation, never a storm).
    fn restart_allowed(
        &self,
        restarts: &mut HashMap<Target, RestartIntensity>,
        target: &Target,
        now: u64,
        count: bool,
    ) -> bool {
        if !restarts.contains_key(target) {
            if restarts.len() >= MAX_RESTART_TARGETS {
                restarts.retain(|_, r| r.recent(now) > 0);
            }
            if restarts.len() >= MAX_RESTART_TARGETS {
                return false;
            }
            restarts.insert(
                target.clone(),
                RestartIntensity::new(self.max_restarts, self.restart_period)
                    .expect("validated at build"),
            );
        }
        let r = restarts.get_mut(target).expect("inserted");
        if count {
            r.permit(now)
        } else {
            r.would_permit(now)
        }
    }

    fn release_breaker(&self, name: &str) {
        if let Some(b) = self.state.lock().breakers.get_mut(name) {
            b.release();
        }
    }

    fn skipped(&self, inc: &mut Incident, name: &str, now: u64, why: SkipReason) {
        let text = format!("{name} not tried: {why}");
        inc.push(now, Step::Skipped, text.clone());
        self.audit(inc, EntryKind::Decided, text);
        inc.attempts.push(Attempt {
            remedy: name.to_string(),
            started_ns: now,
            finished_ns: now,
            outcome: AttemptOutcome::Skipped(why),
            evidence: Vec::new(),
        });
    }
}
