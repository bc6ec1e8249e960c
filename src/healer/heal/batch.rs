//! [`SelfHealer::heal_batch`]: many page incidents healed together, with
//! one repair batch and one sync where one per page would be paid.
//!
//! Page failures of one diagnosis become one page-set incident (see
//! `heal/set.rs`). The others are each still their own: opened, diagnosed
//! and planned alone; the pages whose plan starts with
//! [`repair-from-replicas`](crate::healer::builtin::RepairFromReplicas)
//! (and which that remedy's breaker, the action gate and the rest of
//! [`SelfHealer::heal`]'s rules let it try) are repaired in one
//! [`DataRepairer::repair_pages`](crate::DataRepairer::repair_pages) call;
//! each page is then verified on its own, recorded in its own breaker and
//! learned record and timeline, and an incident the batch did not heal goes
//! on down its own plan. Everything else is healed as
//! [`heal_as`](SelfHealer::heal_as) would.
//!
//! # Contract
//! - Every item handed in is closed (or deferred) by exactly one incident
//!   returned: its own, or the page set whose [`Incident::pages`] lists its
//!   page.
//! - The audit records of a batch are appended in few appends: every
//!   decision before a repair acts, the rest when it is done (a lone
//!   incident's records in two appends: everything up to its first
//!   decision to act before that remedy runs, the rest when it is closed;
//!   one more before each further remedy). They are durable
//!   at the log's next sync (see [`audit`](crate::audit)): a crash loses at
//!   most the records since the last sync, never a repair (each page is
//!   written verified through the detector's repair path).
//! - The learned records are saved once per batch.
//! - With an action gate (approval), nothing is batched: each repair is
//!   asked for on its own.

use std::cell::RefCell;
use std::sync::Arc;

use crate::audit::AuditEntry;
use crate::healer::builtin::page::{fence_if_unheard, repaired, REPAIR_FROM_REPLICAS};
use crate::healer::diagnose::Diagnosis;
use crate::healer::incident::Incident;
use crate::healer::remedy::{Case, Remedy};
use crate::types::{Failure, PageId, Target};

use super::verify::Health;
use super::{guarded, SelfHealer};

thread_local! {
    /// Audit records held back while this thread heals a batch.
    static HELD: RefCell<Option<Vec<AuditEntry>>> = const { RefCell::new(None) };
}

/// Holds `entry` back when this thread is healing a batch (`None`); else
/// gives it back to be appended now.
pub(super) fn hold(entry: AuditEntry) -> Option<AuditEntry> {
    HELD.with(|h| match h.borrow_mut().as_mut() {
        Some(held) => {
            held.push(entry);
            None
        }
        None => Some(entry),
    })
}

/// The target text of the last record held on this thread, when it is
/// one of incident `id`'s (its records all name one target).
pub(super) fn held_target(id: u64) -> Option<String> {
    HELD.with(|h| {
        h.borrow()
            .as_ref()
            .and_then(|held| held.last())
            .filter(|e| e.incident == Some(id))
            .map(|e| e.target.clone())
    })
}

/// Appends now what this thread holds back, if anything: the write-ahead
/// before a remedy acts, so that its decision is in the log file before
/// its effect is on the store (see [`audit`](crate::audit)).
pub(super) fn write_ahead(healer: &SelfHealer) {
    let held = HELD.with(|h| match h.borrow_mut().as_mut() {
        Some(held) if !held.is_empty() => Some(std::mem::take(held)),
        _ => None,
    });
    if let (Some(log), Some(held)) = (&healer.audit, held) {
        if let Err(e) = log.append(&held) {
            tracing::warn!(error = %e, "audit records not written; healing goes on");
        }
    }
}

/// Holds this thread's audit records while alive; writes what is held when
/// flushed and when dropped (also on a panic's unwinding). One started
/// while another holds on the same thread leaves the records to it.
pub(super) struct Holding<'a> {
    healer: &'a SelfHealer,
    nested: bool,
}

impl<'a> Holding<'a> {
    pub(super) fn start(healer: &'a SelfHealer) -> Self {
        let nested = HELD.with(|h| {
            let mut h = h.borrow_mut();
            let nested = h.is_some();
            if !nested {
                *h = Some(Vec::new());
            }
            nested
        });
        Holding { healer, nested }
    }

    /// Appends what is held, as one batch.
    pub(super) fn flush(&self) {
        if self.nested {
            return;
        }
        let held = HELD.with(|h| h.borrow_mut().as_mut().map(std::mem::take));
        if let (Some(log), Some(held)) = (&self.healer.audit, held) {
            if let Err(e) = log.append(&held) {
                tracing::warn!(error = %e, "audit records not written; healing goes on");
            }
        }
    }
}

impl Holding<'_> {
    /// Ends the holding without appending: what is held is given back, for
    /// the caller to append later, in order (nothing when nested: the
    /// outer holding keeps the records).
    pub(super) fn take(mut self) -> Vec<AuditEntry> {
        if self.nested {
            return Vec::new();
        }
        // Dropped as if nested: the records are the caller's now.
        self.nested = true;
        HELD.with(|h| h.borrow_mut().take()).unwrap_or_default()
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        if self.nested {
            return;
        }
        self.flush();
        HELD.with(|h| *h.borrow_mut() = None);
    }
}

/// An incident planned, waiting for the batch.
struct Planned {
    slot: usize,
    inc: Incident,
    diagnosis: Diagnosis,
    failure: Failure,
    ranked: Vec<Arc<dyn Remedy>>,
    page: PageId,
    before: Option<Health>,
    started: u64,
}

impl SelfHealer {
    /// Heals `incidents` — `(id, first failure, joined failures)` each, as
    /// [`heal_as`](Self::heal_as) takes them — together, and returns the
    /// incidents that closed them (or deferred them).
    ///
    /// Page failures of one diagnosis whose plan starts with
    /// `repair-from-replicas` become **one page-set incident** (see
    /// `heal/set.rs`): one diagnosis, one
    /// [`DataRepairer::repair_pages`](crate::DataRepairer::repair_pages)
    /// call, one verification pass, one audit record per step listing the
    /// pages. It takes its id from `new_id`, lists the pages it healed in
    /// [`Incident::pages`], and the ids handed in for those pages are merged
    /// into it; a page the repair did not heal comes back as its own
    /// incident under its own id (the rest of the plan tried, escalated
    /// when nothing heals it).
    ///
    /// Every other item is opened, diagnosed and planned alone; those whose
    /// plan starts with `repair-from-replicas` are still repaired in one
    /// `repair_pages` call, then verified and recorded each on its own.
    /// The audit records are appended in few appends (every decision before
    /// a repair acts, the rest after); the learned records are saved once
    /// (when their save interval has passed). With an action gate or in
    /// observe-only mode nothing is batched.
    ///
    /// Each page set's incident comes first, followed by the incidents of
    /// its pages split out; then the other items' incidents in the order
    /// given.
    pub fn heal_batch(
        &self,
        incidents: Vec<(u64, Failure, Vec<Failure>)>,
        new_id: &mut dyn FnMut() -> u64,
    ) -> Vec<Incident> {
        let holding = Holding::start(self);
        let (sets, rest) = self.form_sets(incidents);
        let mut done = Vec::new();
        for set in sets {
            let id = new_id();
            done.extend(self.heal_set(set, id, &holding));
        }
        done.extend(self.heal_each(rest, &holding));
        self.save_learned();
        drop(holding);
        done
    }

    /// The items of a batch healed each as its own incident, the repairs
    /// of those that start with `repair-from-replicas` in one call.
    fn heal_each(
        &self,
        incidents: Vec<(u64, Failure, Vec<Failure>)>,
        holding: &Holding<'_>,
    ) -> Vec<Incident> {
        let mut out: Vec<Option<Incident>> = Vec::with_capacity(incidents.len());
        let mut batch: Vec<Planned> = Vec::new();
        let batchable = self.gate.is_none() && self.ctx.need_repairer().is_ok();
        for (slot, (id, failure, joined)) in incidents.into_iter().enumerate() {
            out.push(None);
            let (mut inc, diagnosis) = self.open(id, &failure, &joined);
            let case = Case {
                diagnosis: &diagnosis,
                failure: &failure,
            };
            let Some(ranked) = self.plan(&mut inc, &case) else {
                out[slot] = Some(inc);
                continue;
            };
            let first = &ranked[0];
            let page = match &inc.target {
                Target::Page(p) if batchable && first.name() == REPAIR_FROM_REPLICAS => *p,
                _ => {
                    self.run_plan(&mut inc, &case, ranked, 0);
                    out[slot] = Some(inc);
                    continue;
                }
            };
            let Some(now) = self.prepare(&mut inc, &case, first, 0) else {
                // Skipped (its breaker is open): the rest of the plan.
                let rest = ranked[1..].to_vec();
                self.run_plan(&mut inc, &case, rest, 0);
                out[slot] = Some(inc);
                continue;
            };
            let (before, started) = self.begin(&mut inc, first.name(), now);
            batch.push(Planned {
                slot,
                inc,
                diagnosis,
                failure,
                ranked,
                page,
                before,
                started,
            });
        }
        // Every decision is written before the batch acts.
        holding.flush();
        let pages: Vec<PageId> = batch.iter().map(|p| p.page).collect();
        let reports = if pages.is_empty() {
            Vec::new()
        } else {
            let repairer = self.ctx.need_repairer().expect("checked: batchable");
            let span = tracing::info_span!("remedy", name = REPAIR_FROM_REPLICAS);
            let _enter = span.enter();
            if let Some(det) = self.ctx.detector_ref() {
                fence_if_unheard(det, &pages);
            }
            guarded(|| Ok(repairer.repair_pages(&pages))).unwrap_or_else(|e| {
                pages
                    .iter()
                    .map(|_| {
                        Err(crate::error::Error::Host {
                            op: "remedy",
                            retryable: false,
                            message: e.to_string(),
                        })
                    })
                    .collect()
            })
        };
        for (mut p, report) in batch.into_iter().zip(reports) {
            let case = Case {
                diagnosis: &p.diagnosis,
                failure: &p.failure,
            };
            let result = report.and_then(|r| repaired(p.page, &r));
            let first = p.ranked[0].clone();
            match self.conclude(&mut p.inc, &case, &first, result, p.before, p.started) {
                Some(name) => self.healed_by(&mut p.inc, &name),
                None => {
                    let rest = super::set::rest_of_plan(p.inc.attempts.last(), &p.ranked);
                    self.run_plan(&mut p.inc, &case, rest, 1);
                }
            }
            out[p.slot] = Some(p.inc);
        }
        out.into_iter()
            .map(|i| i.expect("every incident is closed or deferred"))
            .collect()
    }
}
