//! The loop over the workload: the failures of each step handed to the
//! healer and what it did checked against the model, and the audit log
//! reopened after every crash.

use std::collections::BTreeSet;
use std::sync::Arc;

use selfheal::audit::{AuditConfig, AuditLog};
use selfheal::healer::{Incident, Outcome as Healed};

use super::super::plan::{Structure, PAGE_SIZE};
use super::{err_name, World};

impl World {
    /// Opens the audit log on its simulated directory: a crash alone never
    /// leaves damage in it, and every record a returned sync covered is
    /// still there.
    pub(super) fn open_audit(&mut self) -> Option<Arc<AuditLog>> {
        match AuditConfig::new()
            .segment_bytes(4 << 10)
            .max_bytes(64 << 10)
            .clock(self.clock.clone())
            .open_on(self.disks.audit.clone())
        {
            Ok(log) => {
                for d in log.damage() {
                    self.observe("audit", None, Structure::Page);
                    self.violation(format!("the audit log is damaged after a crash alone: {d}"));
                }
                let newest = log.next_seq() - 1;
                if newest < self.audit_synced {
                    self.violation(format!(
                        "the audit log lost synced records: record {} was synced, the newest is {newest}",
                        self.audit_synced
                    ));
                }
                Some(Arc::new(log))
            }
            Err(e) => {
                self.violation(format!("the audit log refused to open: {e}"));
                None
            }
        }
    }

    /// Hands every failure reported in this step (and those deferred
    /// before) to the healer, and checks what it did: every incident ends
    /// healed or escalated (a deferred one is handed in again later), and
    /// every page of an incident reads back as the model allows. The
    /// healer's own reports are healed too, for a few rounds.
    pub(super) fn heal(&mut self, failures: Vec<selfheal::Failure>, final_pass: bool) {
        let mut todo = failures;
        todo.append(&mut self.deferred);
        for round in 0..3 {
            // One incident per target, as under the manager: later reports
            // of a target join the first.
            let mut seen = BTreeSet::new();
            todo.retain(|f| seen.insert(format!("{}", f.target())));
            if todo.is_empty() {
                break;
            }
            let mut closed: Vec<Incident> = Vec::new();
            {
                let Some(h) = self.proc.as_ref().and_then(|p| p.healer.as_ref()) else {
                    return;
                };
                for f in todo.drain(..) {
                    closed.push(h.heal(f));
                }
            }
            for inc in closed {
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
                match &inc.outcome {
                    Healed::Healed { .. } | Healed::Escalated => {}
                    Healed::Deferred { .. } if !final_pass || round > 0 => {
                        if let Some(f) = inc.failures.first() {
                            self.deferred.push(f.clone());
                        }
                    }
                    other => self.violation(format!(
                        "incident {} about {} ended {other:?}, neither healed nor escalated",
                        inc.id, inc.target
                    )),
                }
                if matches!(inc.outcome, Healed::Healed { .. } | Healed::Escalated) {
                    let page = match &inc.target {
                        selfheal::Target::Page(p) => Some(p.0),
                        _ => inc.pages.first().map(|p| p.0),
                    };
                    self.observe("healer", page, Structure::Page);
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
            todo = self.sink.failures().try_iter().collect();
            for f in &todo {
                self.note_failure(f);
            }
        }
        // What the healer reported beyond the rounds waits for the next step.
        self.deferred.append(&mut todo);
        let mut seen = BTreeSet::new();
        self.deferred
            .retain(|f| seen.insert(format!("{}", f.target())));
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
