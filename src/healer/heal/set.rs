//! Page-set incidents: page failures of one diagnosis handed to
//! [`SelfHealer::heal_batch`] together become ONE incident over the set of
//! pages — one diagnosis, one plan, one execution of
//! [`repair-from-replicas`](crate::healer::builtin::RepairFromReplicas)
//! through [`DataRepairer::repair_pages`](crate::DataRepairer::repair_pages),
//! one verification pass and one audit record per step listing the pages —
//! instead of one incident per page.
//!
//! # Contract
//! - **Which pages form a set.** Two or more page failures of one batch
//!   whose diagnosis is the same (problem and rule), whose page is not in
//!   its cooldown, and whose plan starts with `repair-from-replicas` while
//!   its breaker is closed. Only when the healer acts on its own (no action
//!   gate, not observe-only) and has a repairer. Everything else is healed
//!   page by page as before.
//! - **Every safety rule holds per page.** Each page is re-checked after
//!   the repair as the built-in remedy's `verify` re-checks one page (the
//!   set was repaired by the built-in `repair_pages`): a page the repair
//!   wrote was re-read and verified by the repair after its sync, and that
//!   read is its re-check; a page the repair left to the host's newer
//!   write, or found not waiting, is re-read now (one pass over the set:
//!   consecutive pages re-read with one read, each verified on its own);
//!   health is sampled once before and
//!   once after, and a set after which health is worse is undone where the
//!   remedy can be and counts as failed for every page; each page starts
//!   its own cooldown; the remedy's breaker and learned record get one
//!   outcome per page, as page incidents would give them.
//! - **Per-page outcomes are kept.** The set incident keeps the pages the
//!   repair healed ([`Incident::pages`]). A page that failed is split out
//!   into its own incident, under the id it was handed in with: opened,
//!   its failed attempt in the set recorded, then the rest of the plan —
//!   escalated with its own report if nothing heals it. When no page of
//!   the set healed, the set incident keeps its first page and carries it
//!   down the rest of the plan itself; the other pages are split out.
//! - **Ids.** The set incident takes a new id from the caller; an id handed
//!   in for a page the set keeps is merged into it.

use std::collections::HashSet;
use std::sync::Arc;

use crate::audit::EntryKind;
use crate::healer::breaker::{Breaker, BreakerState};
use crate::healer::builtin::page::{
    fence_if_unheard, recheck_pages_quiet, repair_checks_for, repair_written, repaired, Rechecked,
    REPAIR_FROM_REPLICAS,
};
use crate::healer::diagnose::Diagnosis;
use crate::healer::incident::{page_list, Attempt, AttemptOutcome, Incident, Outcome, Step};
use crate::healer::remedy::{Case, Remedy};
use crate::repair::{RepairOutcome, RepairReport};
use crate::types::{Failure, PageId, Target};

use super::batch::Holding;
use super::{guarded, SelfHealer};

/// One page incident handed in, as `heal_batch` takes them.
pub(super) type Item = (u64, Failure, Vec<Failure>);

/// A page of a set.
struct Member {
    id: u64,
    page: PageId,
    failure: Failure,
    joined: Vec<Failure>,
    diagnosis: Diagnosis,
}

/// Pages to heal as one incident, with their plan.
pub(super) struct PageSet {
    members: Vec<Member>,
    ranked: Vec<Arc<dyn Remedy>>,
    unsupported_text: String,
}

/// How the set's repair went for one page.
struct PageResult {
    member: Member,
    outcome: AttemptOutcome,
    /// The page was written: the repair's report and what its re-check
    /// found (or why it could not run). Their texts are made only for the
    /// evidence of a page that needs it (see [`PageResult::evidence`]).
    written: Option<(RepairReport, std::result::Result<Rechecked, String>)>,
    /// Evidence found after the re-check (health made worse).
    more: Vec<String>,
}

impl PageResult {
    /// The evidence of its attempt: what the repair did and what the
    /// re-check showed (none for a page not written), then what came after.
    fn evidence(&self) -> Vec<String> {
        let page = self.member.page;
        let mut out = Vec::with_capacity(2 + self.more.len());
        if let Some((report, check)) = &self.written {
            // Written: `repaired` says what it did (it errs only where the
            // page was not written).
            if let Ok(applied) = repaired(page, report) {
                out.push(applied.evidence);
            }
            out.push(match check {
                Ok(r) => r.evidence(page),
                Err(e) => format!("could not re-check: {e}"),
            });
        }
        out.extend(self.more.iter().cloned());
        out
    }
}

impl SelfHealer {
    /// Splits `items` into page sets (see the module docs) and the items
    /// healed one by one, which keep their order.
    pub(super) fn form_sets(&self, items: Vec<Item>) -> (Vec<PageSet>, Vec<Item>) {
        let acting_alone = self.gate.is_none() && !self.observe_only;
        if !acting_alone || items.len() < 2 || self.ctx.need_repairer().is_err() {
            return (Vec::new(), items);
        }
        let now = self.ctx.clock_ref().now_ns();
        let mut rest = Vec::new();
        let mut groups: Vec<Vec<Member>> = Vec::new();
        let mut seen = HashSet::with_capacity(items.len());
        for (id, failure, joined) in items {
            let page = match failure.target() {
                Target::Page(p) if seen.insert(p) => p,
                _ => {
                    rest.push((id, failure, joined));
                    continue;
                }
            };
            let diagnosis = self.diagnose(&failure);
            let cooling = self
                .state
                .lock()
                .cooldowns
                .ready_at(&Target::Page(page), now)
                .is_some();
            if diagnosis.is_unknown() || cooling {
                rest.push((id, failure, joined));
                continue;
            }
            let m = Member {
                id,
                page,
                failure,
                joined,
                diagnosis,
            };
            let same = |g: &Vec<Member>| {
                let d = &g[0].diagnosis;
                d.problem == m.diagnosis.problem && d.rule == m.diagnosis.rule
            };
            match groups.iter_mut().find(|g| same(g)) {
                Some(g) => g.push(m),
                None => groups.push(vec![m]),
            }
        }
        let mut sets = Vec::new();
        for members in groups {
            match self.set_plan(&members) {
                Some((ranked, unsupported_text)) if members.len() >= 2 => sets.push(PageSet {
                    members,
                    ranked,
                    unsupported_text,
                }),
                _ => rest.extend(members.into_iter().map(|m| (m.id, m.failure, m.joined))),
            }
        }
        (sets, rest)
    }

    /// The plan of a group, when it starts with `repair-from-replicas`
    /// and that remedy's breaker is closed (the attempt is then allowed);
    /// also the text of the remedies the host cannot run.
    fn set_plan(&self, members: &[Member]) -> Option<(Vec<Arc<dyn Remedy>>, String)> {
        let problem = &members[0].diagnosis.problem;
        let (apply, unsupported) = self.candidates(problem);
        let names: Vec<&str> = apply.iter().map(|r| r.name()).collect();
        let mut st = self.state.lock();
        let order = st.learner.rank(problem.as_str(), &names);
        let ranked: Vec<Arc<dyn Remedy>> = order.iter().map(|&i| apply[i].clone()).collect();
        let first = ranked.first()?;
        if first.name() != REPAIR_FROM_REPLICAS || first.risky() || first.host_action().is_some() {
            return None;
        }
        let now = self.ctx.clock_ref().now_ns();
        let breaker = st
            .breakers
            .entry(first.name().to_string())
            .or_insert_with(|| Breaker::new(self.breaker).expect("validated at build"));
        if breaker.state() != BreakerState::Closed || !breaker.allow(now) {
            return None;
        }
        let mut text = String::new();
        for (name, action) in &unsupported {
            text.push_str(&format!(
                "; {name} not planned: the host does not support {action}"
            ));
        }
        Some((ranked, text))
    }

    /// Heals one page set as one incident with id `set_id` (see the module
    /// docs); returns it and the incidents of the pages split out.
    pub(super) fn heal_set(
        &self,
        set: PageSet,
        set_id: u64,
        holding: &Holding<'_>,
    ) -> Vec<Incident> {
        let clock = self.ctx.clock_ref().clone();
        let PageSet {
            members,
            ranked,
            unsupported_text,
        } = set;
        let remedy = ranked[0].clone();
        let name = remedy.name().to_string();
        let pages: Vec<PageId> = members.iter().map(|m| m.page).collect();
        let listed = page_list(&pages);
        let first = &members[0];
        let mut diagnosis = first.diagnosis.clone();
        diagnosis.target = Target::Page(first.page);
        let mut inc = Incident {
            id: set_id,
            target: Target::Page(first.page),
            pages: pages.clone(),
            priority: members
                .iter()
                .map(|m| m.failure.priority)
                .min()
                .expect("two or more"),
            failures: Vec::new(),
            diagnosis: diagnosis.clone(),
            timeline: Vec::new(),
            attempts: Vec::new(),
            outcome: Outcome::Escalated,
            escalation: None,
        };
        let detected = format!(
            "{} pages reported together (pages {listed}); first: {}",
            pages.len(),
            first.failure
        );
        inc.push(
            first.failure.detected_at_ns,
            Step::Detected,
            detected.clone(),
        );
        self.audit(&inc, EntryKind::Detected, detected);
        let now = clock.now_ns();
        inc.push(now, Step::Started, "the healer took the incident");
        let diag_text = format!(
            "{} (confidence {:.2}, rule {}) for each of the {} pages",
            diagnosis.problem,
            diagnosis.confidence,
            diagnosis.rule.as_deref().unwrap_or("none"),
            pages.len()
        );
        inc.push(now, Step::Diagnosed, diag_text.clone());
        self.audit(&inc, EntryKind::Diagnosed, diag_text);
        let plan = format!(
            "plan: {}{unsupported_text}",
            ranked
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
                .join(" → ")
        );
        inc.push(clock.now_ns(), Step::Planned, plan.clone());
        self.audit(&inc, EntryKind::Decided, plan);
        // Begin: health before, every page's cooldown, the decision.
        let before = self.health(&mut inc);
        let started = clock.now_ns();
        {
            let mut st = self.state.lock();
            for p in &pages {
                st.cooldowns.acted(Target::Page(*p), started);
            }
        }
        self.audit(
            &inc,
            EntryKind::Decided,
            format!("try {name} on {} pages", pages.len()),
        );
        holding.flush();
        let repairer = self
            .ctx
            .need_repairer()
            .expect("checked when the set was formed");
        if let Some(det) = self.ctx.detector_ref() {
            fence_if_unheard(det, &pages);
        }
        let reports = guarded(|| Ok(repairer.repair_pages(&pages))).unwrap_or_else(|e| {
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
        });
        // Which pages were written: what `repaired` says of each report,
        // its text left unmade until a page's evidence is asked for.
        let reports: Vec<crate::error::Result<RepairReport>> = reports
            .into_iter()
            .zip(&members)
            .map(|(report, m)| report.and_then(|r| repair_written(m.page, &r).map(|()| r)))
            .collect();
        // One verification pass, what the remedy's `verify` does for one
        // page: a page the repair wrote was re-read and verified by the
        // repair after its sync, and that read is its re-check; every other
        // page it reports done (the host's write stands, or nothing was to
        // repair) is re-checked now, runs of consecutive pages with one
        // read.
        // Pages the repair wrote, and pages it reports done without a
        // write (the host's newer write stands, or nothing was to repair).
        let written = reports
            .iter()
            .filter(|r| r.as_ref().is_ok_and(RepairReport::is_repaired))
            .count();
        let left = reports.iter().filter(|r| r.is_ok()).count() - written;
        let repair_checked = repair_checks_for(&self.ctx);
        let taken_as_checked = |r: &RepairReport| repair_checked && r.is_repaired();
        let reread: Vec<PageId> = members
            .iter()
            .zip(&reports)
            .filter(|(_, r)| r.as_ref().is_ok_and(|r| !taken_as_checked(r)))
            .map(|(m, _)| m.page)
            .collect();
        // A pass that cannot run (no detector) or panics leaves every page
        // it was to check unverified, with its error as the reason.
        let checks: Vec<std::result::Result<Rechecked, String>> =
            match guarded(|| Ok(recheck_pages_quiet(self.ctx.need_detector()?, &reread))) {
                Ok(checks) => checks
                    .into_iter()
                    .map(|c| c.map_err(|e| e.to_string()))
                    .collect(),
                Err(e) => reread.iter().map(|_| Err(e.to_string())).collect(),
            };
        let mut checks = checks.into_iter();
        let mut results: Vec<PageResult> = Vec::with_capacity(members.len());
        for (m, report) in members.into_iter().zip(reports) {
            let (outcome, written) = match report {
                Err(e) => (
                    AttemptOutcome::Failed {
                        error: e.to_string(),
                    },
                    None,
                ),
                Ok(report) => {
                    let check = if taken_as_checked(&report) {
                        Ok(Rechecked::Verified)
                    } else {
                        checks
                            .next()
                            .unwrap_or_else(|| Err("no re-check was made".to_string()))
                    };
                    let healed = check.as_ref().is_ok_and(Rechecked::healed);
                    // A page that was not waiting for repair, or that the
                    // host rewrote while it ran, and checks out healed:
                    // its copy does not stand, and it gets no credit.
                    // One the host rewrote that a re-check found bad is
                    // overtaken, and gets no blame either (see
                    // `AttemptOutcome::Overtaken`).
                    let did_nothing = matches!(
                        report.outcome,
                        RepairOutcome::NotNeeded | RepairOutcome::Superseded
                    );
                    let overtaken = report.outcome == RepairOutcome::Superseded && check.is_ok();
                    let outcome = match (healed, did_nothing) {
                        (true, true) => AttemptOutcome::NothingToDo,
                        (true, false) => AttemptOutcome::Healed,
                        (false, _) if overtaken => AttemptOutcome::Overtaken,
                        (false, _) => AttemptOutcome::NotVerified,
                    };
                    (outcome, Some((report, check)))
                }
            };
            results.push(PageResult {
                member: m,
                outcome,
                written,
                more: Vec::new(),
            });
        }
        debug_assert!(checks.next().is_none(), "a check for a page not re-read");
        let acted = if left == 0 {
            format!(
                "{name}: {written} of {} pages written (pages {listed})",
                pages.len()
            )
        } else {
            format!(
                "{name}: {written} of {} pages written, {left} left as they are (the host's newer write, or nothing to repair) (pages {listed})",
                pages.len()
            )
        };
        inc.push(clock.now_ns(), Step::Acted, acted.clone());
        self.audit(&inc, EntryKind::Acted, acted);
        // Health after, once: a set that made it worse is undone where it
        // can be and fails for every page.
        if let Some(how) = self.worse(before, self.health(&mut inc)) {
            for r in &mut results {
                let Some((report, _)) = &r.written else {
                    continue;
                };
                let Ok(applied) = repaired(r.member.page, report) else {
                    continue;
                };
                let case = Case {
                    diagnosis: &r.member.diagnosis,
                    failure: &r.member.failure,
                };
                let undone = guarded(|| remedy.undo(&self.ctx, &case, &applied)).is_ok();
                r.more.push(how.clone());
                r.outcome = AttemptOutcome::MadeWorse { undone };
            }
            let text = format!("{name} on {} pages: {how}", pages.len());
            inc.push(clock.now_ns(), Step::Undone, text.clone());
            self.audit(&inc, EntryKind::Undone, text);
        }
        {
            let mut st = self.state.lock();
            let t = clock.now_ns();
            let problem = diagnosis.problem.as_str();
            for r in &results {
                st.credit(problem, &name, &r.outcome, t);
            }
        }
        let finished = clock.now_ns();
        let (healed, failed): (Vec<PageResult>, Vec<PageResult>) =
            results.into_iter().partition(|r| {
                matches!(
                    r.outcome,
                    AttemptOutcome::Healed | AttemptOutcome::NothingToDo
                )
            });
        let healed_pages: Vec<PageId> = healed.iter().map(|r| r.member.page).collect();
        let failed_pages: Vec<PageId> = failed.iter().map(|r| r.member.page).collect();
        let verified = if failed.is_empty() {
            format!("{name}: all {} pages re-read and verified", healed.len())
        } else {
            format!(
                "{name}: {} pages re-read and verified; pages {} were not healed and go on in their own incidents",
                healed.len(),
                page_list(&failed_pages)
            )
        };
        inc.push(finished, Step::Verified, verified.clone());
        self.audit(&inc, EntryKind::Verified, verified.clone());
        let mut out = Vec::with_capacity(1 + failed.len());
        let mut failed = failed.into_iter();
        if healed.is_empty() {
            // The set keeps its first page and carries it down the plan.
            let carried = failed.next().expect("a set has pages");
            inc.target = Target::Page(carried.member.page);
            inc.diagnosis.target = inc.target.clone();
            inc.pages = vec![carried.member.page];
            inc.failures.push(carried.member.failure.clone());
            for j in &carried.member.joined {
                inc.join(j.clone(), j.detected_at_ns);
            }
            inc.attempts.push(Attempt {
                remedy: name.clone(),
                started_ns: started,
                finished_ns: finished,
                evidence: carried.evidence(),
                outcome: carried.outcome,
            });
            let case = Case {
                diagnosis: &carried.member.diagnosis,
                failure: &carried.member.failure,
            };
            let rest = rest_of_plan(inc.attempts.last(), &ranked);
            self.run_plan(&mut inc, &case, rest, 1);
        } else {
            // The set's target is its first page it healed.
            inc.target = Target::Page(healed_pages[0]);
            inc.diagnosis.target = inc.target.clone();
            inc.pages = healed_pages;
            let mut evidence = Vec::with_capacity(2);
            let by_write = healed
                .iter()
                .filter(|r| r.written.as_ref().is_some_and(|(rep, _)| rep.is_repaired()))
                .count();
            evidence.push(if by_write == healed.len() {
                format!("{by_write} pages written from the replicas")
            } else {
                format!(
                    "{} pages healed: {by_write} written from the replicas, {} left as they are (the host's newer write, or nothing to repair)",
                    healed.len(),
                    healed.len() - by_write
                )
            });
            evidence.push(verified);
            // Healed by the set's repair unless every page was healed
            // before it acted.
            let outcome = if healed
                .iter()
                .all(|r| r.outcome == AttemptOutcome::NothingToDo)
            {
                AttemptOutcome::NothingToDo
            } else {
                AttemptOutcome::Healed
            };
            for r in healed {
                inc.failures.push(r.member.failure);
                inc.failures.extend(r.member.joined);
            }
            inc.attempts.push(Attempt {
                remedy: name.clone(),
                started_ns: started,
                finished_ns: finished,
                outcome,
                evidence,
            });
            self.healed_by(&mut inc, &name);
        }
        out.push(inc);
        for r in failed {
            out.push(self.split_out(set_id, r, &name, started, finished, &ranked));
        }
        out
    }

    /// A page the set's repair did not heal, as its own incident: opened
    /// under its own id, its attempt in set `set_id` recorded, then the
    /// rest of the plan.
    fn split_out(
        &self,
        set_id: u64,
        r: PageResult,
        name: &str,
        started: u64,
        finished: u64,
        ranked: &[Arc<dyn Remedy>],
    ) -> Incident {
        let (mut inc, diagnosis) = self.open(r.member.id, &r.member.failure, &r.member.joined);
        let now = self.ctx.clock_ref().now_ns();
        let plan = format!(
            "plan: {} (the plan of page set incident {set_id})",
            ranked
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
                .join(" → ")
        );
        inc.push(now, Step::Planned, plan.clone());
        self.audit(&inc, EntryKind::Decided, plan);
        let text = format!(
            "{name} in page set incident {set_id}: {}",
            match &r.outcome {
                AttemptOutcome::Failed { error } => format!("failed: {error}"),
                other => other.as_str().to_string(),
            }
        );
        inc.push(now, Step::Acted, text.clone());
        self.audit(&inc, EntryKind::Acted, text);
        inc.attempts.push(Attempt {
            remedy: name.to_string(),
            started_ns: started,
            finished_ns: finished,
            evidence: r.evidence(),
            outcome: r.outcome,
        });
        let case = Case {
            diagnosis: &diagnosis,
            failure: &r.member.failure,
        };
        let rest = rest_of_plan(inc.attempts.last(), ranked);
        self.run_plan(&mut inc, &case, rest, 1);
        inc
    }
}

/// What is left of a plan for a page whose first remedy (run in a batch or
/// a set) did not heal it: the remedies after it, or the whole plan again
/// when it was overtaken (it did nothing: it is tried once more, as
/// [`SelfHealer::run_plan`] does for a lone page, which sees the overtaken
/// attempt and retries no further).
pub(super) fn rest_of_plan(
    last: Option<&Attempt>,
    ranked: &[Arc<dyn Remedy>],
) -> Vec<Arc<dyn Remedy>> {
    let overtaken = last.is_some_and(|a| a.outcome == AttemptOutcome::Overtaken);
    ranked[usize::from(!overtaken)..].to_vec()
}
