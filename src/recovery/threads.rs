//! The manager's threads: the dispatcher that drains the bus into the
//! queue, the recovery threads that heal what it holds, and their
//! supervision. Each is a [`Worker`] running a [`Job`], so a panic anywhere
//! on it — a host callback, a store read, the healer's own steps — is caught
//! on the thread, not only inside a remedy. Their work is in functions the
//! host's thread runs as well in step mode ([`Dispatcher`]'s pass,
//! [`take_ready`], [`heal_taken`], [`put_back`]; see [`step`](super::step)).
//!
//! # Contract
//! - A thread that panics reports a [`FailureKind::WorkerDied`] of the
//!   component `"recovery manager"` on the bus and records its death for
//!   the supervisor.
//! - The incident it was handling is never lost: it is queued again, in its
//!   old place, with what had joined it; an incident that has now cost two
//!   threads is closed as escalated instead, with the healer's one report
//!   to the host (so a poisoned incident cannot kill every thread in turn).
//! - The supervisor (run by every live thread between incidents) restarts a
//!   dead thread within the restart intensity
//!   ([`RecoveryConfig::thread_restarts`](super::RecoveryConfig::thread_restarts));
//!   each restart is an incident healed by `restart-recovery-thread`.
//!   Beyond the intensity the thread stays down and its death is an
//!   escalated incident: a person is paged once, not a restart storm.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::corruption::read_hook::without_read_hook;
use crate::corruption::{Observer, PageState, Verdict};
use crate::error::Result;
use crate::types::{Failure, FailureKind, Source, Target};
use crate::worker::{Flow, Job, Stop, Worker};

use super::closing::{close, record_closes, settle, settle_set, Closing};
use super::events::RecoveryEvent;
use super::filing::{file, file_all, offer, refill};
use super::persist;
use super::queue::Taken;
use super::state::{Death, Dispatcher, Inner, Role, Slot, COMPONENT};
use super::suspects;

/// The remedy an own-thread restart is recorded under.
pub(super) const RESTART_REMEDY: &str = "restart-recovery-thread";
/// Threads an incident may cost before it is escalated instead of retried.
const DEATHS_PER_INCIDENT_MAX: u32 = 2;
/// How often the dispatcher looks at the clock when the bus is quiet.
const TICK: Duration = Duration::from_millis(20);
/// Page incidents a recovery thread takes at once, to heal in one repair
/// batch.
const BATCH_MAX: usize = 256;
/// How long a recovery thread waits for work before it supervises again.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// How often open incidents are saved when they changed, at most.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How often the run marker's last-seen time is refreshed.
const MARKER_EVERY: Duration = Duration::from_secs(10);
/// How long the supervisor waits for a dead thread to end before replacing it.
const REAP_TIMEOUT: Duration = Duration::from_secs(1);

/// A failure the manager itself reports.
pub(super) fn own_failure(inner: &Inner, kind: FailureKind, evidence: String) -> Failure {
    Failure::new(
        Source::RecoveryManager,
        kind,
        evidence,
        inner.clock.now_ns(),
    )
}

/// Starts the thread of `slot` (its role's job).
pub(super) fn spawn(inner: &Arc<Inner>, slot: usize, role: Role, name: &str) -> Result<Worker<()>> {
    match role {
        Role::Dispatch => Worker::spawn(
            COMPONENT,
            name.to_string(),
            DispatchJob {
                inner: inner.clone(),
                slot,
                pass: Dispatcher::new(inner),
            },
        ),
        Role::Recover => Worker::spawn(
            COMPONENT,
            name.to_string(),
            RecoverJob {
                inner: inner.clone(),
                slot,
                current: Vec::new(),
            },
        ),
    }
}

/// Starts the dispatcher and `recovery_threads` recovery threads.
pub(super) fn start_all(inner: &Arc<Inner>, recovery_threads: usize) -> Result<()> {
    let mut roles = vec![(Role::Dispatch, "selfheal-recovery-dispatch".to_string())];
    roles.extend((0..recovery_threads).map(|n| (Role::Recover, format!("selfheal-recovery-{n}"))));
    for (i, (role, name)) in roles.into_iter().enumerate() {
        let w = spawn(inner, i, role, &name)?;
        inner.threads.lock().slots.push(Slot {
            name,
            role,
            worker: Some(w),
        });
    }
    Ok(())
}

/// The dispatcher's thread: one [`Dispatcher`] pass per tick.
struct DispatchJob {
    inner: Arc<Inner>,
    slot: usize,
    pass: Dispatcher,
}

/// Whether `every` has passed on the clock since `since_ns`.
fn due(now_ns: u64, since_ns: u64, every: Duration) -> bool {
    u128::from(now_ns.saturating_sub(since_ns)) >= every.as_nanos()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Job for DispatchJob {
    type Command = ();

    fn next_tick(&mut self) -> Option<Instant> {
        Some(Instant::now())
    }

    fn tick(&mut self) -> Flow {
        // Reads on the manager's threads never heal on read.
        without_read_hook(|| self.dispatch())
    }

    fn command(&mut self, (): ()) -> Flow {
        Flow::Continue
    }

    fn died(&mut self, reason: &str) {
        died(&self.inner, self.slot, reason, Vec::new());
    }
}

impl DispatchJob {
    fn dispatch(&mut self) -> Flow {
        let wait = TICK.min(self.inner.audit_sync.max(Duration::from_millis(1)));
        self.pass.pass(&self.inner, Some(wait)).0
    }
}

impl Dispatcher {
    /// A dispatcher whose cadences start now, on the manager's clock.
    pub(super) fn new(inner: &Inner) -> Dispatcher {
        let now = inner.clock.now_ns();
        Dispatcher {
            rx: inner.sink.failures(),
            saved_at_ns: now,
            marker_at_ns: now,
            suspects_next_ns: now,
            audit_synced_at_ns: now,
        }
    }

    /// One pass. With `wait`, waits at most that long (real time) for the
    /// bus's first failure; without, takes only what the bus holds. Takes
    /// at most 4 097 failures off the bus (the rest wait for the next
    /// pass, except when draining). Returns whether the dispatcher goes on,
    /// and how many failures it filed.
    pub(super) fn pass(&mut self, inner_arc: &Arc<Inner>, wait: Option<Duration>) -> (Flow, u64) {
        let inner = &**inner_arc;
        let draining = inner.draining.load(Ordering::Acquire);
        let mut filed = 0u64;
        let first = match wait {
            // A timeout or a disconnected bus: nothing this pass.
            Some(w) => self.rx.recv_timeout(w).ok(),
            None => self.rx.try_recv().ok(),
        };
        if let Some(f) = first {
            let mut taken = vec![f];
            taken.extend(self.rx.try_iter().take(4_096));
            filed += taken.len() as u64;
            file_all(inner, &mut taken);
        }
        record_closes(inner);
        if inner.abort.load(Ordering::Acquire) {
            return (Flow::Exit, filed);
        }
        supervise(inner_arc);
        let now = inner.clock.now_ns();
        // A journal still stalled after a failed resume, once its backoff
        // has passed: reported again, so the healer tries again.
        let stalled = inner.rollback.lock().clone();
        if let Some(f) = stalled.and_then(|rb| rb.stall_report_due(now)) {
            file(inner, f);
        }
        if inner.queue.lock().promote(now) > 0 {
            inner.work.notify_all();
        }
        refill(inner);
        rescan(inner);
        if let Some(h) = &inner.health {
            if let Some(score) = h.latest().and_then(|s| s.score) {
                metrics::gauge!("selfheal_health_score").set(score);
            }
        }
        metrics::gauge!("selfheal_incidents_open").set(inner.queue.lock().len() as f64);
        if inner.dirty.load(Ordering::Relaxed) && due(now, self.saved_at_ns, SAVE_EVERY) {
            save(inner);
            self.saved_at_ns = inner.clock.now_ns();
        }
        if due(now, self.audit_synced_at_ns, inner.audit_sync) {
            sync_audit(inner);
            self.audit_synced_at_ns = inner.clock.now_ns();
        }
        if let Some(h) = inner.healer.read().clone() {
            h.save_learned_if_due();
        }
        if now >= self.suspects_next_ns {
            if let Err(e) = inner.suspects.sync_with(&inner.detector) {
                tracing::warn!(error = %e, "saving the suspect registry");
            }
            // A tenth of the dispatcher's time at most, under a burst.
            let done = inner.clock.now_ns();
            let cost = done.saturating_sub(now).saturating_mul(10);
            self.suspects_next_ns = done.saturating_add(nanos(suspects::SAVE_EVERY).max(cost));
        }
        if due(now, self.marker_at_ns, MARKER_EVERY) {
            if let Some(mk) = inner.marker.lock().as_mut() {
                if let Err(e) = mk.refresh() {
                    tracing::warn!(error = %e, "refreshing the run marker");
                }
            }
            self.marker_at_ns = inner.clock.now_ns();
        }
        if draining {
            for f in self.rx.try_iter() {
                file(inner, f);
                filed += 1;
            }
            inner.bus_closed.store(true, Ordering::Release);
            inner.work.notify_all();
            return (Flow::Exit, filed);
        }
        (Flow::Continue, filed)
    }
}

/// A recovery thread: takes the next incident and heals it, until the bus
/// is closed and nothing is ready, or abort.
struct RecoverJob {
    inner: Arc<Inner>,
    slot: usize,
    /// The incidents in hand, for [`Job::died`].
    current: Vec<Taken>,
}

impl Job for RecoverJob {
    type Command = ();

    fn next_tick(&mut self) -> Option<Instant> {
        Some(Instant::now())
    }

    fn tick(&mut self) -> Flow {
        supervise(&self.inner);
        let inner = &*self.inner;
        let taken = {
            let mut q = inner.queue.lock();
            if inner.abort.load(Ordering::Acquire) {
                return Flow::Exit;
            }
            let batch = take_ready(&mut q);
            if batch.is_empty() {
                if inner.bus_closed.load(Ordering::Acquire) {
                    return Flow::Exit;
                }
                inner.work.wait_for(&mut q, IDLE_WAIT);
                return Flow::Continue;
            }
            batch
        };
        self.current = taken;
        heal_taken(inner, &self.current);
        self.current.clear();
        Flow::Continue
    }

    fn command(&mut self, (): ()) -> Flow {
        Flow::Continue
    }

    fn died(&mut self, reason: &str) {
        died(
            &self.inner,
            self.slot,
            reason,
            std::mem::take(&mut self.current),
        );
    }
}

/// The incidents ready to heal next, taken off the queue: one, or up to
/// [`BATCH_MAX`] page incidents to heal in one batch (empty when none is
/// ready).
pub(super) fn take_ready(q: &mut super::queue::IncidentQueue) -> Vec<Taken> {
    q.pop_batch(BATCH_MAX)
}

/// Heals incidents taken by [`take_ready`]: one on its own, several in one
/// repair batch. Reads inside a remedy never heal on read (the incident is
/// the caller's already).
pub(super) fn heal_taken(inner: &Inner, taken: &[Taken]) {
    without_read_hook(|| {
        if let [t] = taken {
            handle(inner, t);
        } else {
            handle_batch(inner, taken);
        }
    });
}

/// On the dying thread: reports the death, puts the incidents in hand back
/// (or escalates one once it has cost [`DEATHS_PER_INCIDENT_MAX`] threads),
/// and leaves the death for the supervisor.
fn died(inner: &Arc<Inner>, slot: usize, reason: &str, taken: Vec<Taken>) {
    let failure = put_back(inner, reason, taken);
    inner.deaths.lock().push(Death { slot, failure });
}

/// After a panic while handling `taken`: reports a
/// [`FailureKind::WorkerDied`] of the manager on the bus and puts the
/// incidents back in the queue (or escalates one once it has cost
/// [`DEATHS_PER_INCIDENT_MAX`] panics). Returns the failure reported.
pub(super) fn put_back(inner: &Inner, reason: &str, taken: Vec<Taken>) -> Failure {
    let evidence = match taken.as_slice() {
        [] => reason.to_string(),
        [t] => format!("{reason}; it was handling incident {} ({})", t.id, t.target),
        [t, ..] => format!(
            "{reason}; it was handling {} incidents, from incident {} ({})",
            taken.len(),
            t.id,
            t.target
        ),
    };
    let failure = own_failure(
        inner,
        FailureKind::WorkerDied {
            component: Arc::from(COMPONENT),
        },
        evidence,
    );
    inner.sink.send(failure.clone());
    for t in taken {
        let deaths =
            inner
                .queue
                .lock()
                .requeue(&t.target, t.joined.clone(), DEATHS_PER_INCIDENT_MAX);
        match deaths {
            Some(n) if n >= DEATHS_PER_INCIDENT_MAX => escalate_poisoned(inner, t, n, reason),
            Some(_) => {
                tracing::warn!(
                    incident = t.id,
                    "a recovery thread died on the incident: queued again"
                );
                inner.work.notify_one();
            }
            None => {}
        }
        inner.dirty.store(true, Ordering::Relaxed);
    }
    inner.finished.notify_all();
    failure
}

/// Closes an incident that killed `deaths` threads as escalated.
fn escalate_poisoned(inner: &Inner, t: Taken, deaths: u32, reason: &str) {
    let Some(healer) = inner.healer.read().clone() else {
        return;
    };
    let why = format!(
        "{deaths} recovery threads died while handling it (the last: {reason}); it is not retried"
    );
    let inc = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        healer.escalate_as(t.id, t.first.clone(), &t.joined, &why)
    }));
    match inc {
        Ok(inc) => {
            let _closing = Closing::new(inner);
            let late = inner.queue.lock().finish(&t.target);
            inner.finished.notify_all();
            close(inner, inc, &late);
        }
        Err(_) => {
            tracing::error!(
                incident = t.id,
                "escalating an incident that killed its threads panicked too; it is queued again"
            );
            inner.queue.lock().requeue(&t.target, t.joined, u32::MAX);
        }
    }
}

/// Restarts the threads that died, within the restart intensity; beyond
/// it, escalates. Does nothing once the manager is stopping.
pub(super) fn supervise(inner: &Arc<Inner>) {
    if inner.abort.load(Ordering::Acquire) || inner.draining.load(Ordering::Acquire) {
        return;
    }
    // Deaths stay recorded until a healer can close their incidents.
    let Some(healer) = inner.healer.read().clone() else {
        return;
    };
    let deaths = std::mem::take(&mut *inner.deaths.lock());
    if deaths.is_empty() {
        return;
    }
    for d in deaths {
        let mut sup = inner.threads.lock();
        let now = inner.clock.now_ns();
        let Some(slot) = sup.slots.get_mut(d.slot) else {
            continue;
        };
        if let Some(old) = slot.worker.take() {
            // Dead already: this joins it (its error is the death, reported).
            let _ = old.stop(Stop::Abandon, REAP_TIMEOUT);
        }
        let (name, role) = (slot.name.clone(), slot.role);
        let permitted = sup.intensity.permit(now);
        let restarted = if permitted {
            spawn(inner, d.slot, role, &name)
        } else {
            Err(crate::error::Error::Stopped {
                component: COMPONENT,
                reason: "the restart intensity of the manager's threads is reached".into(),
            })
        };
        let id = inner.queue.lock().allocate_id();
        let inc = match restarted {
            Ok(w) => {
                sup.slots[d.slot].worker = Some(w);
                drop(sup);
                tracing::warn!(thread = %name, "a recovery thread died and was restarted");
                healer.healed_as(
                    id,
                    d.failure,
                    RESTART_REMEDY,
                    &format!("{name} restarted"),
                    &format!("{name} is running"),
                )
            }
            Err(e) => {
                drop(sup);
                healer.escalate_as(
                    id,
                    d.failure,
                    &[],
                    &format!("{name} died and is not restarted: {e}"),
                )
            }
        };
        inner.tally.lock().opened(inc.priority);
        inner.events.emit(&RecoveryEvent::Opened {
            id,
            target: inc.target.clone(),
            priority: inc.priority,
        });
        close(inner, inc, &[]);
    }
}

/// Syncs the audit log's unsynced records (an error is logged: the log is
/// then poisoned, and healing goes on without it).
pub(super) fn sync_audit(inner: &Inner) {
    if let Some(a) = &inner.audit {
        if a.has_unsynced() {
            if let Err(e) = a.sync() {
                tracing::warn!(error = %e, "syncing the audit log; healing goes on");
            }
        }
    }
}

/// Saves the open incidents (an error is logged: the next save retries).
pub(super) fn save(inner: &Inner) {
    inner.dirty.store(false, Ordering::Relaxed);
    let open = inner.queue.lock().snapshot();
    if let Err(e) = persist::save(&inner.incidents_path, &open, inner.clock.now_ns()) {
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

fn handle(inner: &Inner, t: &Taken) {
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
    let inc = healer.heal_as(t.id, t.first.clone(), &t.joined);
    drop(healer);
    settle(inner, t, inc);
}

/// Page incidents taken together, healed in one
/// [`SelfHealer::heal_batch`](crate::healer::SelfHealer::heal_batch): those
/// of one diagnosis as one page-set incident, under a new id, into which
/// the incidents of the pages it healed are merged.
fn handle_batch(inner: &Inner, batch: &[Taken]) {
    let span = tracing::info_span!(
        "incidents",
        first = batch[0].id,
        count = batch.len(),
        priority = %batch[0].first.priority
    );
    let _enter = span.enter();
    let Some(healer) = inner.healer.read().clone() else {
        return;
    };
    for t in batch.iter().filter(|t| t.resumed) {
        // As in `handle`: this run's detector is told of a page the
        // previous run left open, so that the repair path takes it.
        if let Target::Page(p) = &t.target {
            let _ = inner.detector.check_page(*p, Observer::HostRead);
        }
    }
    let items = batch
        .iter()
        .map(|t| (t.id, t.first.clone(), t.joined.clone()))
        .collect();
    let mut new_id = || inner.queue.lock().allocate_id();
    let incs = healer.heal_batch(items, &mut new_id);
    drop(healer);
    let by_target: HashMap<&Target, &Taken> = batch.iter().map(|t| (&t.target, t)).collect();
    for inc in incs {
        if inc.pages.is_empty() {
            if let Some(t) = by_target.get(&inc.target) {
                settle(inner, t, inc);
            }
        } else {
            settle_set(inner, &by_target, inc);
        }
    }
}
