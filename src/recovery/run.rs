//! Startup recovery, the start of the manager's threads and components,
//! and the bounded stop.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::{AuditEntry, AuditLog, EntryKind};
use crate::clock::Clock;
use crate::corruption::{CorruptionDetector, Observer, Verdict};
use crate::crash::RunVerdict;
use crate::error::{Error, Result};
use crate::healer::{ActionGate, Case, Remedy, RemedyContext};
use crate::rollback::{RecoveryReport, RollbackConfig};
use crate::snapshot::{Consistency, SnapshotKind, SnapshotRequest, StateSnapshotManager};
use crate::types::{Failure, FailureKind, PageId, Source, Target};
use crate::worker::{Stop, TimedCaller};

use super::closing;
use super::config::{ApprovalCallback, ApprovalRequest, Mode};
use super::filing::{self, offer};
use super::persist;
use super::state::{AutoRecoveryManager, Pending, StartupReport, JOURNAL_DIR, LEARNED_FILE};
use super::threads::{self, own_failure};

pub(super) fn start(m: &AutoRecoveryManager, p: Pending) -> Result<StartupReport> {
    let r = start_inner(m, p);
    if r.is_err() {
        let _ = stop(m, Ending::Unclean);
    }
    r
}

fn start_inner(m: &AutoRecoveryManager, p: Pending) -> Result<StartupReport> {
    let inner = &m.inner;
    let Pending {
        mut cfg,
        repairer,
        snapshots,
        audit,
        verdict,
        restored,
        escalations: (escalations_restored, escalations_warning),
    } = p;
    let clock = inner.clock.clone();
    // 1. The previous run's verdict.
    if verdict.is_crash() {
        inner.sink.send(own_failure(
            inner,
            FailureKind::UncleanShutdown,
            verdict.to_string(),
        ));
    }
    // 2. The journal's losers rolled back — in Observe mode only reported:
    //    they stay in flight, pending in the rollback manager.
    let rb = cfg
        .rollback
        .take()
        .unwrap_or_else(|| RollbackConfig::new(cfg.dir.join(JOURNAL_DIR)))
        .defer_recovery(cfg.mode == Mode::Observe);
    let rollback = Arc::new(
        rb.clock(clock.clone())
            .failure_sink(inner.sink.clone())
            .build(inner.detector.clone())?,
    );
    m.running.lock().rollback = Some(rollback.clone());
    *inner.rollback.lock() = Some(rollback.clone());
    let report = rollback.recovery_report().clone();
    if let Some(a) = &audit {
        audit_startup_recovery(a, &report);
    }
    // 3. The pages they touched re-verified.
    let mut pages: Vec<PageId> = report
        .rolled_back
        .iter()
        .flat_map(|t| t.pages.iter().copied())
        .chain(report.blocked.iter().flat_map(|b| b.pages.iter().copied()))
        .chain(report.pages_replaced.iter().copied())
        .collect();
    pages.sort_unstable();
    pages.dedup();
    let failed = verify_pages(&inner.detector, &pages);
    // The healer, over every component.
    let crash = Arc::new(
        std::mem::take(&mut cfg.crash)
            .clock(clock.clone())
            .failure_sink(inner.sink.clone())
            .build()?,
    );
    // In step mode too: remedies verify through it (`check_now`).
    crash.start()?;
    m.running.lock().crash = Some(crash.clone());
    let mut ctx = RemedyContext::new()
        .detector(inner.detector.clone())
        .repairer(repairer)
        .rollback(rollback)
        .crash(crash)
        .clock(clock.clone());
    if let Some(s) = &snapshots {
        ctx = ctx.snapshots(s.clone());
        let gate = cfg.snapshot_gate.clone().or_else(|| {
            cfg.periodic
                .as_ref()
                .map(|p| (p.gate.clone(), p.lsn.clone()))
        });
        if let Some((gate, lsn)) = gate {
            let store = cfg.store.clone();
            ctx = ctx.snapshot_taker(Arc::new(move |s: &StateSnapshotManager| {
                let pause = gate.pause();
                let at = lsn();
                s.take_snapshot(
                    Consistency::Paused {
                        store: &*store,
                        pause: &pause,
                        lsn: at,
                    },
                    SnapshotRequest::new(SnapshotKind::Auto),
                )
            }));
        }
    }
    if let Some(h) = &inner.health {
        ctx = ctx.health(h.clone());
    }
    if let Some(h) = &cfg.host {
        ctx = ctx.host(h.clone());
    }
    let mut hc = std::mem::take(&mut cfg.healer)
        .seed(cfg.seed)
        .learned_path(cfg.dir.join(LEARNED_FILE))
        .learned_saved_on_timer()
        .observe_only(cfg.mode == Mode::Observe);
    if let Some(a) = audit {
        hc = hc.audit(a);
    }
    if cfg.mode == Mode::Approve {
        let cb = cfg
            .approval
            .clone()
            .expect("validated: Approve has a callback");
        hc = hc.action_gate(approval_gate(
            cb,
            clock.clone(),
            cfg.approval_timeout,
            cfg.allow.clone(),
            cfg.max_concurrent,
        ));
    }
    // Checked at build (`RecoveryConfig::validate`), allow-list included.
    let healer = hc.build(ctx)?;
    *inner.healer.write() = Some(Arc::new(healer));
    // Open incidents of the previous run. The file is written at every
    // start (below) and stop, so one missing from a directory used before
    // was deleted or lost: a warning, never silence.
    let missing = std::fs::symlink_metadata(&inner.incidents_path)
        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
    let (saved, incidents_warning) = match persist::load(&inner.incidents_path, clock.now_ns()) {
        Ok(_) if missing && !matches!(verdict, RunVerdict::FirstRun) => {
            let path = inner.incidents_path.display();
            tracing::warn!(%path, "the open-incidents file is missing although the directory was used before; starting without the previous run's incidents");
            (
                Vec::new(),
                Some(format!(
                    "the open-incidents file {path} is missing although this directory was used \
                     before (deleted, or lost with its directory entry): the previous run's open \
                     incidents are lost, except that every page the suspect registry names gets \
                     an incident again"
                )),
            )
        }
        Ok(v) => (v, None),
        Err(e) => {
            tracing::warn!(error = %e, "the saved open incidents cannot be read; starting without them");
            (Vec::new(), Some(e.to_string()))
        }
    };
    let mut resumed = 0u64;
    {
        let now = clock.now_ns();
        let mut q = inner.queue.lock();
        for (id, f) in saved {
            let prio = f.priority;
            if q.resume(id, f, now) {
                resumed += 1;
                inner.tally.lock().opened(prio);
            }
        }
    }
    if missing {
        threads::save(inner);
    }
    // Pages the previous run knew bad: fenced at build, each an incident
    // unless a resumed one covers it.
    for &page in &restored.fenced {
        if !inner.queue.lock().is_open(&Target::Page(page)) {
            offer(
                inner,
                Failure::new(
                    Source::CorruptionDetector,
                    FailureKind::CorruptPage { page },
                    format!("page {page} is fenced: the previous run's suspect registry recorded it bad"),
                    clock.now_ns(),
                ),
            );
        }
    }
    // The dispatcher and the recovery threads, and heal on read.
    // In step mode none: the host's `step` runs the dispatcher's pass and
    // heals on its own thread.
    if cfg.stepped {
        *m.stepper.lock() = Some(super::state::Dispatcher::new(inner));
    } else {
        threads::start_all(inner, cfg.max_concurrent)?;
    }
    super::inline::install(inner);
    // 4. Background work.
    if let Some(sc) = cfg.scrub.take() {
        let scrubber = sc
            .clock(clock.clone())
            .failure_sink(inner.sink.clone())
            .build(inner.detector.clone())?;
        scrubber.start()?;
        m.running.lock().scrub = Some(scrubber);
    }
    if let Some(h) = &inner.health {
        h.start()?;
    }
    if let (Some(per), Some(s)) = (cfg.periodic.take(), &snapshots) {
        let ps = per.config.build(s, cfg.store.clone(), per.gate, per.lsn)?;
        ps.start()?;
        m.running.lock().periodic = Some(ps);
    }
    let report = StartupReport {
        verdict,
        rollback: report,
        pages_verified: pages.len() as u64,
        pages_failed: failed,
        incidents_resumed: resumed,
        incidents_warning,
        suspects_restored: restored.fenced,
        suspects_warning: restored.warning,
        escalations_restored,
        escalations_warning,
    };
    *m.startup.lock() = Some(report.clone());
    Ok(report)
}

/// Bytes of an audit record's text startup recovery's record uses at most
/// (below [`MAX_TEXT_LEN`](crate::audit::MAX_TEXT_LEN)).
const AUDIT_TEXT_BUDGET: usize = 60_000;

/// Records in the audit log what startup recovery did with the journal's
/// losers — or, report-only (Observe mode), what it would do: each
/// transaction with its pages. Nothing when there were none.
fn audit_startup_recovery(audit: &AuditLog, r: &RecoveryReport) {
    let (verb, txns) = if r.deferred.is_empty() {
        ("rolled back", &r.rolled_back)
    } else {
        (
            "left in place (Observe mode: report only); a start in another mode rolls back",
            &r.deferred,
        )
    };
    if txns.is_empty() && r.blocked.is_empty() {
        return;
    }
    let mut text = format!(
        "startup recovery: {} transactions in flight at the last crash {verb}:",
        txns.len()
    );
    let items = txns
        .iter()
        .map(|t| {
            format!(
                " transaction {} ({} undo entries) on pages {:?};",
                t.txn, t.undo_entries, t.pages
            )
        })
        .chain(r.blocked.iter().map(|b| {
            format!(
                " transaction {} blocked by pages {:?} ({});",
                b.txn, b.pages, b.reason
            )
        }));
    // Within an audit record's text bound; the startup report has them all.
    let total = txns.len() + r.blocked.len();
    for (i, item) in items.enumerate() {
        if text.len() + item.len() > AUDIT_TEXT_BUDGET {
            text.push_str(&format!(" and {} more (see the startup report)", total - i));
            break;
        }
        text.push_str(&item);
    }
    let entry = AuditEntry {
        incident: None,
        target: Target::Component(Arc::from("undo journal")).to_string(),
        kind: EntryKind::Note,
        text,
    };
    if let Err(e) = audit.append(&[entry]) {
        tracing::warn!(error = %e, "startup recovery's audit record was not written");
    }
}

/// Re-verifies `pages` after startup recovery; returns those that failed
/// (fenced and reported by the detector).
fn verify_pages(det: &CorruptionDetector, pages: &[PageId]) -> Vec<PageId> {
    let mut failed = Vec::new();
    for &p in pages {
        match det.check_page(p, Observer::HostRead) {
            Ok(Verdict::Clean | Verdict::Transient | Verdict::Unallocated) => {}
            Ok(Verdict::Corrupt { .. }) => failed.push(p),
            Err(e) => {
                tracing::warn!(page = %p, error = %e, "a page recovery touched could not be re-verified");
                failed.push(p);
            }
        }
    }
    failed
}

/// Real time waited at most between two readings of the clock while an
/// approval is pending: a clock moved by hand is seen this soon.
const APPROVAL_POLL: Duration = Duration::from_millis(10);

/// Approve mode: the allow-list, else the host's answer within `timeout`
/// of `clock` on one of `callers` helper threads (no free helper, no
/// answer, a panic: no).
fn approval_gate(
    cb: ApprovalCallback,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    allow: HashSet<String>,
    callers: usize,
) -> ActionGate {
    let callers: Arc<Vec<TimedCaller>> = Arc::new(
        (0..callers)
            .map(|_| TimedCaller::new("selfheal-approval").exclusive())
            .collect(),
    );
    Arc::new(move |case: &Case<'_>, remedy: &dyn Remedy| {
        if allow.contains(remedy.name()) {
            return true;
        }
        let req = ApprovalRequest {
            target: case.target().clone(),
            problem: case.problem().clone(),
            remedy: remedy.name().to_string(),
            priority: case.failure.priority,
            evidence: case.failure.evidence.clone(),
        };
        let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let deadline_ns = clock.now_ns().saturating_add(timeout_ns);
        for c in callers.iter() {
            let (cb, req) = (cb.clone(), req.clone());
            if let Ok(mut pending) = c.start(move || cb(&req)) {
                let answer = loop {
                    let now = clock.now_ns();
                    if now >= deadline_ns {
                        break pending.give_up();
                    }
                    let slice = Duration::from_nanos(deadline_ns - now).min(APPROVAL_POLL);
                    if let Some(a) = pending.answer_by(Instant::now() + slice) {
                        break a;
                    }
                };
                if answer.is_err() {
                    tracing::warn!(
                        remedy = remedy.name(),
                        "no approval within the timeout: not run"
                    );
                }
                return answer.unwrap_or(false);
            }
        }
        false
    })
}

/// How a stop ends the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    /// `stop()`: everything saved, a clean stop marked.
    Clean,
    /// Drop, or a failed start: everything saved, no clean stop marked.
    Unclean,
    /// As a killed process: threads ended, nothing drained, saved, synced
    /// or marked (testing only).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    Killed,
}

/// See [`AutoRecoveryManager::stop`]; `ending` says what is saved and
/// marked.
pub(super) fn stop(m: &AutoRecoveryManager, ending: Ending) -> Result<()> {
    let inner = &m.inner;
    let killed = ending == Ending::Killed;
    // A step under way ends first; no step runs after.
    m.stepper.lock().take();
    let mut run = {
        let mut r = m.running.lock();
        if r.stopped {
            return Ok(());
        }
        let taken = std::mem::take(&mut *r);
        r.stopped = true;
        taken
    };
    let never_started = m.pending.lock().take().is_some();
    let started = inner.healer.read().is_some();
    let mut first: Option<Error> = None;
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            tracing::warn!(error = %e, "stopping the recovery manager");
            first.get_or_insert(e);
        }
    };
    // 1. No new failures from the background components.
    if let Some(s) = run.scrub.take() {
        note(s.stop());
    }
    if let Some(p) = run.periodic.take() {
        note(p.stop());
    }
    if let Some(h) = &inner.health {
        note(h.stop());
    }
    // 2. Drain: queued incidents are worked on until the drain timeout.
    inner.draining.store(true, Ordering::Release);
    inner.work.notify_all();
    let threads = inner.threads.lock().slots.len();
    if threads > 0 && !killed {
        let deadline = Instant::now() + m.drain_timeout;
        while Instant::now() < deadline
            && !(inner.bus_closed.load(Ordering::Acquire) && inner.queue.lock().is_idle())
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    inner.abort.store(true, Ordering::Release);
    inner.work.notify_all();
    // 3. Join, each thread bounded.
    let mut stuck = Vec::new();
    let slots = std::mem::take(&mut inner.threads.lock().slots);
    for slot in slots {
        let Some(w) = slot.worker else {
            continue;
        };
        // A thread that died was reported (and escalated) when it died.
        let died = w.failure().is_some();
        if w.stop(Stop::Abandon, m.stop_timeout).is_err() && !died {
            stuck.push(slot.name);
        }
    }
    if killed {
        // Nothing more is written by the manager itself; the components
        // are dropped as they are.
        *inner.healer.write() = None;
        if let Some(c) = run.crash.take() {
            note(c.stop());
        }
        inner.rollback.lock().take();
        drop(run);
        if !stuck.is_empty() {
            // A thread left detached may still write: the directory stays
            // locked while it lives, so no next manager races it.
            return Err(Error::Stopped {
                component: "recovery manager",
                reason: format!(
                    "threads {stuck:?} did not end within {:?}; they were left detached and hold the directory",
                    m.stop_timeout
                ),
            });
        }
        inner.marker.lock().take();
        return first.map_or(Ok(()), Err);
    }
    // Closes healed on readers' threads and not yet recorded, recorded.
    closing::record_closes(inner);
    // 4. What is still open is saved, and the pages known bad.
    if started && !never_started {
        if let Err(e) = inner.suspects.sync_with(&inner.detector) {
            tracing::warn!(error = %e, "saving the suspect registry at stop");
        }
        for f in inner.sink.failures().try_iter() {
            filing::file(inner, f);
        }
        inner.dirty.store(false, Ordering::Relaxed);
        note(persist::save(
            &inner.incidents_path,
            &inner.queue.lock().snapshot(),
            inner.clock.now_ns(),
        ));
    }
    // The audit log's last records and the learned records, made durable.
    threads::sync_audit(inner);
    if let Some(h) = inner.healer.read().clone() {
        if let Err(e) = h.flush_learned() {
            tracing::warn!(error = %e, "saving the learned records at stop");
        }
    }
    // 5. The components the healer used, closed.
    *inner.healer.write() = None;
    if let Some(c) = run.crash.take() {
        note(c.stop());
    }
    inner.rollback.lock().take();
    if let Some(r) = run.rollback.take() {
        note(r.stop());
    }
    // 6. A clean stop, only when every thread ended.
    let marker = inner.marker.lock().take();
    if !stuck.is_empty() {
        drop(marker);
        return Err(Error::Stopped {
            component: "recovery manager",
            reason: format!(
                "threads {stuck:?} did not end within {:?}; they were left detached and the run is not marked clean",
                m.stop_timeout
            ),
        });
    }
    if ending == Ending::Clean {
        if let Some(mk) = marker {
            note(mk.stop());
        }
    }
    first.map_or(Ok(()), Err)
}
