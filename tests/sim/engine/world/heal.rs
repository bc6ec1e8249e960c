//! The loop over the workload: the manager's step at the end of every
//! simulator step, every incident it closed checked against the model,
//! and its audit log checked after every boot and synced after every step.

use std::sync::Arc;

use selfheal::audit::AuditLog;
use selfheal::healer::{Incident, Outcome as Healed};

use super::super::plan::{Structure, PAGE_SIZE};
use super::{err_name, World};

/// Manager steps at the end of a simulator step: what one step's remedies
/// report is filed by the next.
const STEPS_PER_STEP: usize = 3;

/// Rounds of steps at the end of the run, each after the clock moved
/// [`FINAL_TICK`], for every incident a cooldown or a backoff deferred to
/// end.
const FINAL_STEPS: usize = 16;

/// Past every cooldown (10 s) and backoff (at most 10 s) of the healer's
/// defaults, and 16 of them well within the hour an escalated page stays
/// escalated (after it, a report of a page nothing can heal opens a new
/// incident, to page a person again: one would always be open).
const FINAL_TICK: std::time::Duration = std::time::Duration::from_secs(60);

impl World {
    /// The audit log the manager opened on its simulated directory: a crash
    /// alone never leaves damage in it, and every record a returned sync
    /// covered is still there.
    /// (Damage done to its files while the process was down is set aside
    /// and named instead: the rest of the log still reads.)
    pub(super) fn check_audit(&mut self, log: &Arc<AuditLog>) {
        let rotted = self.rotted.contains(&Structure::AuditLog);
        for d in log.damage() {
            if rotted {
                self.note("the audit log set damage aside".into());
                self.observe("healer", None, Structure::AuditLog);
            } else {
                self.observe("audit", None, Structure::Page);
                self.violation(format!("the audit log is damaged after a crash alone: {d}"));
            }
        }
        let newest = log.next_seq() - 1;
        if newest < self.audit_synced && !rotted {
            self.violation(format!(
                "the audit log lost synced records: record {} was synced, the newest is {newest}",
                self.audit_synced
            ));
        }
    }

    /// Runs the manager's steps at the end of a simulator step: the
    /// failures on its bus filed, every ready incident healed; what each
    /// closed incident did is checked (it ended healed or escalated, and
    /// its pages read back as the model allows). Then the audit log is
    /// synced.
    pub(super) fn heal(&mut self) {
        for _ in 0..STEPS_PER_STEP {
            if !self.manager_step() {
                break;
            }
        }
        self.sync_audit();
    }

    /// The end of the run: the clock passes every cooldown and backoff, and
    /// the manager steps until no incident is open; one still open then is
    /// a violation (every incident ends healed or escalated).
    pub(super) fn heal_to_the_end(&mut self) {
        for _ in 0..FINAL_STEPS {
            self.clock.advance(FINAL_TICK);
            for _ in 0..STEPS_PER_STEP {
                if !self.manager_step() {
                    break;
                }
            }
            if self.settled() {
                break;
            }
        }
        self.check_closed();
        if let Some(p) = self.proc.as_ref() {
            let s = p.recovery.stats();
            let idle = p.recovery.is_idle();
            if s.open > 0 || !idle {
                self.violation(format!(
                    "{} incidents still open at the end (idle: {idle}), neither healed nor escalated",
                    s.open
                ));
            }
            if s.bus_dropped + s.overflowed > 0 {
                self.violation(format!(
                    "{} failures dropped from the bus and {} overflowed the queue: incidents that never were",
                    s.bus_dropped, s.overflowed
                ));
            }
        }
        self.sync_audit();
    }

    /// Whether no incident is open and every failure sent was filed.
    fn settled(&self) -> bool {
        self.proc
            .as_ref()
            .is_none_or(|p| p.recovery.stats().open == 0 && p.recovery.is_idle())
    }

    /// One step of the manager; returns whether another may find work (a
    /// failure is on its bus).
    fn manager_step(&mut self) -> bool {
        let Some(p) = self.proc.as_ref() else {
            return false;
        };
        let r = p.recovery.step();
        self.note_reported();
        let more = match r {
            Ok(r) => {
                if r.filed + r.handled + r.panics > 0 {
                    self.note(format!(
                        "manager step: {} filed, {} handled in {} batches, {} open, {} panics",
                        r.filed, r.handled, r.batches, r.open, r.panics
                    ));
                }
                if r.panics > 0 {
                    self.violation(format!("{} heals panicked in a manager step", r.panics));
                }
                r.bus_pending > 0 || r.more_ready
            }
            Err(e) => {
                self.violation(format!("the manager's step failed: {e}"));
                false
            }
        };
        self.check_closed();
        more
    }

    /// Checks the incidents the manager closed since the last check.
    pub(super) fn check_closed(&mut self) {
        let closed: Vec<Incident> = match self.proc.as_ref() {
            Some(p) => p.recovery.incidents(),
            None => return,
        };
        if closed.len() >= super::RECENT_MAX {
            self.violation("more incidents closed than the simulator keeps".into());
        }
        let new: Vec<Incident> = closed.into_iter().skip(self.closed_seen).collect();
        self.closed_seen += new.len();
        for inc in new {
            let name = inc.outcome.as_str();
            *self.incidents.entry(name).or_insert(0) += 1;
            self.note(format!(
                "incident {} ({}): {name}{}",
                inc.id,
                inc.target,
                match &inc.outcome {
                    Healed::Healed { remedy } => format!(" by {remedy}"),
                    _ => String::new(),
                }
            ));
            if inc.outcome == Healed::Escalated && inc.escalation.is_none() {
                self.violation(format!(
                    "incident {} about {} was escalated without a report",
                    inc.id, inc.target
                ));
            }
            match &inc.outcome {
                Healed::Healed { .. } | Healed::Escalated => {
                    let page = match &inc.target {
                        selfheal::Target::Page(p) => Some(p.0),
                        _ => inc.pages.first().map(|p| p.0),
                    };
                    self.observe("healer", page, Structure::Page);
                }
                other => self.violation(format!(
                    "incident {} about {} closed {other:?}, neither healed nor escalated",
                    inc.id, inc.target
                )),
            }
            for p in &inc.pages {
                let mut buf = vec![0u8; PAGE_SIZE];
                if self.det().read_verified(*p, &mut buf).is_ok() {
                    let m = self.model.lock();
                    if !m.allows(p.0, &buf) {
                        let d = m.describe(p.0, &buf);
                        drop(m);
                        self.violation(format!(
                            "after incident {} ({}): {d}",
                            inc.id,
                            inc.outcome.as_str()
                        ));
                    }
                }
            }
        }
    }

    /// Syncs the audit log; the newest record a returned sync covered must
    /// survive every later crash.
    fn sync_audit(&mut self) {
        let audit = self.proc.as_ref().and_then(|p| p.audit.clone());
        if let Some(a) = audit {
            let through = a.next_seq() - 1;
            match a.sync() {
                Ok(()) => self.audit_synced = self.audit_synced.max(through),
                Err(e) => {
                    self.note(format!("audit sync: {}", err_name(&e)));
                    self.observe("audit", None, Structure::Page);
                }
            }
        }
    }
}
