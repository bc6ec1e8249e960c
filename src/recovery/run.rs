//! The manager's threads: startup recovery, the dispatcher that drains the
//! bus into the queue, the recovery workers, and the bounded stop.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};

use crate::corruption::{CorruptionDetector, Observer, PageState, Verdict};
use crate::error::{Error, Result};
use crate::healer::{ActionGate, Case, Incident, Outcome, Remedy, RemedyContext, Step};
use crate::rollback::RollbackConfig;
use crate::snapshot::PeriodicSnapshots;
use crate::types::{Failure, FailureKind, PageId, Source, Target};
use crate::worker::TimedCaller;

use super::config::{ApprovalCallback, ApprovalRequest, Mode};
use super::events::RecoveryEvent;
use super::persist;
use super::queue::{Offer, Taken};
use super::state::{AutoRecoveryManager, Inner, Pending, StartupReport, JOURNAL_DIR, LEARNED_FILE};

/// How often the dispatcher looks at the clock when the bus is quiet.
const TICK: Duration = Duration::from_millis(20);
/// How often open incidents are saved when they changed, at most.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How often the run marker's last-seen time is refreshed.
const MARKER_EVERY: Duration = Duration::from_secs(10);

type Thread = (String, std::thread::JoinHandle<()>, Receiver<()>);

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<Thread> {
    let (alive, ended) = bounded::<()>(0);
    let handle = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _alive = alive;
            f();
        })
        .map_err(|e| Error::io(format!("spawning the {name} thread"), e))?;
    Ok((name, handle, ended))
}

pub(super) fn start(m: &AutoRecoveryManager, p: Pending) -> Result<StartupReport> {
    let r = start_inner(m, p);
    if r.is_err() {
        let _ = stop(m, false);
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
    // 2. The journal's losers rolled back.
    let rb = cfg
        .rollback
        .take()
        .unwrap_or_else(|| RollbackConfig::new(cfg.dir.join(JOURNAL_DIR)));
    let rollback = Arc::new(
        rb.clock(clock.clone())
            .failure_sink(inner.sink.clone())
            .build(inner.detector.clone())?,
    );
    m.running.lock().rollback = Some(rollback.clone());
    let report = rollback.recovery_report().clone();
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
            cfg.approval_timeout,
            cfg.allow.clone(),
            cfg.max_concurrent,
        ));
    }
    let healer = hc.build(ctx)?;
    let names = healer.remedy_names();
    let mut allow: Vec<&String> = cfg.allow.iter().collect();
    allow.sort();
    if let Some(unknown) = allow.into_iter().find(|n| !names.contains(n)) {
        return Err(Error::config(
            "allow_without_approval",
            format!("names {unknown:?}, which no remedy is called (the remedies: {names:?})"),
        ));
    }
    *inner.healer.write() = Some(Arc::new(healer));
    // Open incidents of the previous run.
    let (saved, incidents_warning) = match persist::load(&inner.incidents_path) {
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
    // The recovery threads.
    let mut threads = Vec::new();
    {
        let i = inner.clone();
        threads.push(spawn("selfheal-recovery-dispatch".into(), move || {
            dispatch(&i);
        })?);
    }
    for n in 0..cfg.max_concurrent {
        let i = inner.clone();
        threads.push(spawn(format!("selfheal-recovery-{n}"), move || work(&i))?);
    }
    m.running.lock().threads = threads;
    // 4. Background work.
    if let Some(sc) = cfg.scrub.take() {
        let h = sc
            .clock(clock.clone())
            .failure_sink(inner.sink.clone())
            .start(inner.detector.clone())?;
        m.running.lock().scrub = Some(h);
    }
    if let Some(h) = &inner.health {
        h.start()?;
    }
    if let (Some(per), Some(s)) = (cfg.periodic.take(), &snapshots) {
        let ps = PeriodicSnapshots::start(s, cfg.store.clone(), per.gate, per.lsn, per.config)?;
        m.running.lock().periodic = Some(ps);
    }
    let report = StartupReport {
        verdict,
        rollback: report,
        pages_verified: pages.len() as u64,
        pages_failed: failed,
        incidents_resumed: resumed,
        incidents_warning,
    };
    *m.startup.lock() = Some(report.clone());
    Ok(report)
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

/// A failure the manager itself reports.
fn own_failure(inner: &Inner, kind: FailureKind, evidence: String) -> Failure {
    Failure::new(Source::CrashDetector, kind, evidence, inner.clock.now_ns())
}

/// Approve mode: the allow-list, else the host's answer within `timeout`
/// on one of `callers` helper threads (no free helper, no answer, a panic:
/// no).
fn approval_gate(
    cb: ApprovalCallback,
    timeout: Duration,
    allow: HashSet<String>,
    callers: usize,
) -> ActionGate {
    let callers: Arc<Vec<TimedCaller>> = Arc::new(
        (0..callers)
            .map(|_| TimedCaller::new("selfheal-approval"))
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
        let deadline = Instant::now() + timeout;
        for c in callers.iter() {
            let (cb, req) = (cb.clone(), req.clone());
            if let Ok(pending) = c.start(move || cb(&req)) {
                let answer = pending.wait_until(deadline);
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

/// Files one failure in the queue, counting and announcing it.
fn offer(inner: &Inner, f: Failure) {
    let now = inner.clock.now_ns();
    let (target, prio) = (f.target(), f.priority);
    let r = inner.queue.lock().offer(f, now);
    let mut t = inner.tally.lock();
    t.stats.failures += 1;
    match r {
        Offer::Opened(id) => {
            t.opened(prio);
            drop(t);
            inner.dirty.store(true, Ordering::Relaxed);
            inner.work.notify_one();
            inner.events.emit(&RecoveryEvent::Opened {
                id,
                target,
                priority: prio,
            });
        }
        Offer::Joined(id) => {
            t.stats.joined += 1;
            drop(t);
            inner.events.emit(&RecoveryEvent::Joined { id, target });
        }
        Offer::Overflow => {
            drop(t);
            metrics::counter!("selfheal_failures_overflowed_total").increment(1);
            tracing::warn!(%target, "incident queue full: failure counted, not queued");
            inner.events.emit(&RecoveryEvent::Overflowed { target });
        }
    }
}

/// The dispatcher: drains the bus, promotes deferred incidents, runs
/// error-only rescans, saves open incidents, refreshes the run marker.
fn dispatch(inner: &Inner) {
    let rx = inner.sink.failures();
    let mut saved_at = Instant::now();
    let mut marker_at = Instant::now();
    loop {
        let draining = inner.draining.load(Ordering::Acquire);
        match rx.recv_timeout(TICK) {
            Ok(f) => {
                offer(inner, f);
                for f in rx.try_iter().take(4_096) {
                    offer(inner, f);
                }
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
        if inner.abort.load(Ordering::Acquire) {
            return;
        }
        let now = inner.clock.now_ns();
        if inner.queue.lock().promote(now) > 0 {
            inner.work.notify_all();
        }
        rescan(inner);
        if let Some(h) = &inner.health {
            if let Some(score) = h.latest().and_then(|s| s.score) {
                metrics::gauge!("selfheal_health_score").set(score);
            }
        }
        metrics::gauge!("selfheal_incidents_open").set(inner.queue.lock().len() as f64);
        if inner.dirty.load(Ordering::Relaxed) && saved_at.elapsed() >= SAVE_EVERY {
            save(inner);
            saved_at = Instant::now();
        }
        if marker_at.elapsed() >= MARKER_EVERY {
            if let Some(mk) = inner.marker.lock().as_mut() {
                if let Err(e) = mk.refresh() {
                    tracing::warn!(error = %e, "refreshing the run marker");
                }
            }
            marker_at = Instant::now();
        }
        if draining {
            for f in rx.try_iter() {
                offer(inner, f);
            }
            inner.bus_closed.store(true, Ordering::Release);
            inner.work.notify_all();
            return;
        }
    }
}

/// Saves the open incidents (an error is logged: the next save retries).
pub(super) fn save(inner: &Inner) {
    inner.dirty.store(false, Ordering::Relaxed);
    let open = inner.queue.lock().snapshot();
    if let Err(e) = persist::save(&inner.incidents_path, &open) {
        inner.dirty.store(true, Ordering::Relaxed);
        tracing::warn!(error = %e, "saving the open incidents");
    }
}

/// After an overflow, once the queue has room: the detector's bad pages
/// rechecked, and those still bad queued.
fn rescan(inner: &Inner) {
    {
        let q = inner.queue.lock();
        if !(q.rescan_due && q.has_room()) {
            return;
        }
    }
    inner.queue.lock().rescan_due = false;
    inner.rescans.fetch_add(1, Ordering::Relaxed);
    let det = &inner.detector;
    let mut pages = det.pages_in(PageState::Suspect);
    pages.extend(det.pages_in(PageState::Irreparable));
    for p in pages {
        {
            let q = inner.queue.lock();
            if q.is_open(&Target::Page(p)) {
                continue;
            }
            if !q.has_room() {
                drop(q);
                inner.queue.lock().rescan_due = true;
                return;
            }
        }
        if let Ok(Verdict::Corrupt { error, .. }) = det.recheck(p) {
            offer(
                inner,
                Failure::new(
                    Source::Scrubber,
                    FailureKind::CorruptPage { page: p },
                    format!("found again by the error-only rescan after the incident queue overflowed: {error}"),
                    inner.clock.now_ns(),
                ),
            );
        }
    }
}

/// A recovery thread: takes the next incident and heals it, until the
/// bus is closed and nothing is ready, or abort.
fn work(inner: &Inner) {
    loop {
        let taken = {
            let mut q = inner.queue.lock();
            loop {
                if inner.abort.load(Ordering::Acquire) {
                    return;
                }
                if let Some(t) = q.pop() {
                    break t;
                }
                if inner.bus_closed.load(Ordering::Acquire) {
                    return;
                }
                inner.work.wait_for(&mut q, Duration::from_millis(50));
            }
        };
        handle(inner, taken);
    }
}

fn handle(inner: &Inner, t: Taken) {
    let span = tracing::info_span!(
        "incident",
        id = t.id,
        target = %t.target,
        priority = %t.first.priority
    );
    let _enter = span.enter();
    let Some(healer) = inner.healer.read().clone() else {
        return;
    };
    if t.resumed {
        tracing::info!("resuming an incident left open by the previous run");
        // This run's detector knows nothing of the page yet: fence it
        // first if it is still bad, so the repair path takes it.
        if let Target::Page(p) = &t.target {
            let _ = inner.detector.check_page(*p, Observer::HostRead);
        }
    }
    let mut inc = healer.heal_as(t.id, t.first, &t.joined);
    drop(healer);
    if let Outcome::Deferred { until_ns } = inc.outcome {
        inner.queue.lock().defer(&t.target, until_ns);
        inner.tally.lock().closed(&inc, inner.rto_of(inc.priority));
        return;
    }
    let late = inner.queue.lock().finish(&t.target);
    inner.dirty.store(true, Ordering::Relaxed);
    let now = inner.clock.now_ns();
    for f in &late {
        inc.join(f.clone(), now);
    }
    for e in &inc.timeline {
        if matches!(e.step, Step::Acted | Step::Undone)
            || (e.step == Step::Planned && inc.outcome == Outcome::Observed)
        {
            tracing::info!(step = e.step.as_str(), "{}", e.text);
            inner.events.emit(&RecoveryEvent::Action {
                id: inc.id,
                text: e.text.clone(),
            });
        }
    }
    let within = inner.tally.lock().closed(&inc, inner.rto_of(inc.priority));
    let event = match &inc.outcome {
        Outcome::Healed { remedy } => RecoveryEvent::Healed {
            id: inc.id,
            remedy: remedy.clone(),
            time_to_heal: inc.time_to_heal().unwrap_or_default(),
            within_rto: within,
        },
        Outcome::Observed => RecoveryEvent::Observed { id: inc.id },
        _ => RecoveryEvent::Escalated {
            id: inc.id,
            reason: inc
                .escalation
                .as_ref()
                .map_or_else(String::new, |r| r.reason.clone()),
        },
    };
    tracing::info!(outcome = inc.outcome.as_str(), "incident closed");
    inner.events.emit(&event);
    recheck_after_late_joins(inner, &inc, &late);
    let mut recent = inner.recent.lock();
    if inner.recent_capacity > 0 {
        if recent.len() >= inner.recent_capacity {
            recent.pop_front();
        }
        recent.push_back(inc);
    }
}

/// A page healed while later reports of it arrived: re-checked, and a new
/// incident opened if it is bad again (a report is never lost in a join).
fn recheck_after_late_joins(inner: &Inner, inc: &Incident, late: &[Failure]) {
    let (Outcome::Healed { .. }, Target::Page(p)) = (&inc.outcome, &inc.target) else {
        return;
    };
    if late.is_empty() {
        return;
    }
    if let Ok(Verdict::Corrupt { error, .. }) = inner.detector.recheck(*p) {
        offer(
            inner,
            Failure::new(
                Source::CorruptionDetector,
                FailureKind::CorruptPage { page: *p },
                format!(
                    "reported again while incident {} healed it, and bad on re-check: {error}",
                    inc.id
                ),
                inner.clock.now_ns(),
            ),
        );
    }
}

/// See [`AutoRecoveryManager::stop`]; `clean` marks a clean stop.
pub(super) fn stop(m: &AutoRecoveryManager, clean: bool) -> Result<()> {
    let inner = &m.inner;
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
    if !run.threads.is_empty() {
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
    for (name, handle, ended) in run.threads.drain(..) {
        match ended.recv_timeout(m.stop_timeout) {
            Err(RecvTimeoutError::Disconnected) => {
                if handle.join().is_err() {
                    stuck.push(format!("{name} (panicked)"));
                }
            }
            _ => stuck.push(name),
        }
    }
    // 4. What is still open is saved.
    if started && !never_started {
        for f in inner.sink.failures().try_iter() {
            offer(inner, f);
        }
        inner.dirty.store(false, Ordering::Relaxed);
        note(persist::save(
            &inner.incidents_path,
            &inner.queue.lock().snapshot(),
        ));
    }
    // 5. The components the healer used, closed.
    *inner.healer.write() = None;
    if let Some(c) = run.crash.take() {
        note(c.stop());
    }
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
    if clean {
        if let Some(mk) = marker {
            note(mk.stop());
        }
    }
    first.map_or(Ok(()), Err)
}
