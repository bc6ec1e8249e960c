//! Step mode: the manager driven on the host's thread, one
//! [`step`](AutoRecoveryManager::step) at a time, with no thread of its
//! own — for a deterministic simulator, a test, or a host with its own
//! scheduler. Turned on by [`RecoveryConfig::stepped`].
//!
//! The contract is on [`AutoRecoveryManager::step`].

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::corruption::read_hook::without_read_hook;
use crate::error::{Error, Result};
use crate::worker::panic_message;

use super::closing::record_closes;
use super::state::{AutoRecoveryManager, COMPONENT};
use super::threads::{heal_taken, put_back, take_ready};

#[cfg(doc)]
use super::RecoveryConfig;

/// Batches one [`step`](AutoRecoveryManager::step) heals at most (bounds
/// a step whose heals keep opening ready incidents, as a page that goes
/// bad again at every re-check).
pub const STEP_BATCHES_MAX: usize = 4_096;

/// What one [`step`](AutoRecoveryManager::step) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Failures taken off the bus and filed (opening incidents, joining
    /// them, or overflowing).
    pub filed: u64,
    /// Heals run: one incident, or page incidents in one repair batch.
    pub batches: u64,
    /// Incidents taken off the queue and handled (healed, escalated,
    /// observed, or deferred to try again).
    pub handled: u64,
    /// Heals that panicked (their incidents queued again, or escalated).
    pub panics: u64,
    /// Incidents open after the step (deferred ones included).
    pub open: u64,
    /// Failures on the bus after the step, for the next one.
    pub bus_pending: u64,
    /// Whether incidents were still ready when the step stopped at
    /// [`STEP_BATCHES_MAX`] batches.
    pub more_ready: bool,
}

impl AutoRecoveryManager {
    /// In step mode ([`RecoveryConfig::stepped`]), one dispatcher pass and
    /// then every ready incident healed, on this thread (see the
    /// contract below).
    ///
    /// # Contract
    /// - **No thread of the manager's.** [`start`](AutoRecoveryManager::start)
    ///   runs startup recovery exactly as in the threaded manager (the run
    ///   marker's verdict, the journal's losers, the pages they touched, the
    ///   previous run's open incidents and suspects queued) but starts no
    ///   dispatcher and no recovery thread. The components with threads of
    ///   their own that report on their own schedule (a scrubber — the default
    ///   one included —, a health monitor, periodic snapshots) are refused at
    ///   [`build`](RecoveryConfig::build) with [`Error::InvalidConfig`] naming
    ///   them: the host drives them by hand (a
    ///   [`Scrubber`](crate::scrub::Scrubber)'s `step` over the manager's
    ///   detector and bus, snapshots taken by the host). Two threads remain,
    ///   neither deciding anything on its own: the crash watchdog (remedies
    ///   verify through its [`check_now`](crate::CrashDetector::check_now); a
    ///   heartbeat the host registers is judged on the manager's clock, so with
    ///   a manual clock a miss is reported only after the host moves the clock
    ///   — call `check_now` then, before the next step, and its failures are on
    ///   the bus in a known order), and the undo journal's
    ///   `selfheal-undo-mark` (a durability mark after an idle delay; it files
    ///   no failure). A replica is read on its helper thread with a real-time
    ///   deadline unless it [may be called inline](crate::Replica::may_call_inline):
    ///   for a deterministic run, give replicas that may (a miss of the
    ///   deadline is a real-time decision). A fallback source (the snapshots'
    ///   page source) is always read on its helper thread with that
    ///   deadline: give it one no run reaches.
    /// - **One step** is, on the caller's thread: one dispatcher pass — the
    ///   failures already on the bus filed (at most 4 097; the rest wait for
    ///   the next step), closes healed on readers' threads recorded, deferred
    ///   incidents whose time has come promoted and the page backlog opened,
    ///   a stalled journal reported again when its backoff has passed, the
    ///   error-only rescan when due, and the saves and syncs due on the
    ///   manager's clock (open incidents, audit log, learned records, suspect
    ///   registry, run marker) — then every ready incident healed, in the
    ///   batches a recovery thread takes (one incident, or up to 256 page
    ///   incidents in one repair batch), until none is ready, or
    ///   [`STEP_BATCHES_MAX`] batches. It runs the dispatcher's and the
    ///   recovery threads' own code: the same incident, audit records, events
    ///   and counts as the threaded manager for the same failures.
    /// - **Deterministic.** A step never waits in real time and never reads
    ///   real time for a decision: given the manager's [`Clock`] (a
    ///   [`ManualClock`](crate::ManualClock)), its seed, the store and the
    ///   host's calls in the same order, two runs give the same incidents,
    ///   timelines, events and audit records (the run marker alone records
    ///   wall-clock times, by design). An incident deferred (a cooldown, a backoff) is
    ///   healed by the first step after the clock passes its time. What a step
    ///   causes on the bus (a remedy's own reports) waits for the next step
    ///   ([`StepReport::bus_pending`]). Approve mode asks its callback on a
    ///   helper thread as always and waits on the manager's clock: it is
    ///   deterministic only if the callback answers (a manual clock does not
    ///   time it out).
    /// - **Heal on read is unchanged**: it runs on the reader's thread; its
    ///   close is recorded by the next step (or `stats`, `incidents`, `stop`).
    /// - **A panic loses nothing.** A panic while healing (a host callback, a
    ///   store read) is caught: reported as a [`FailureKind::WorkerDied`] of
    ///   the `"recovery manager"`, the incidents in hand queued again (one that
    ///   has cost two panics is escalated with a report, as on a thread), and
    ///   the step goes on ([`StepReport::panics`]); there is no thread to
    ///   restart.
    /// - **Stop** works as in the threaded manager, but heals nothing more:
    ///   a step under way ends first, no step runs after, and what is open is
    ///   saved and resumed by the next start. Concurrent steps run one after
    ///   the other.
    ///
    /// [`Clock`]: crate::clock::Clock
    /// [`FailureKind::WorkerDied`]: crate::types::FailureKind::WorkerDied
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the manager is not in step mode, or
    /// not started yet; [`Error::Stopped`] after
    /// [`stop`](Self::stop). A heal's own failure is no error: it is in the
    /// incident.
    ///
    /// # Examples
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use selfheal::{ManualClock, MemStore, PageId, RecoveryConfig, StoreReplica};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Arc::new(MemStore::new(4096, 8)?);
    /// let mirror = Arc::new(MemStore::new(4096, 8)?);
    /// let clock = Arc::new(ManualClock::new());
    /// let m = RecoveryConfig::new(store.clone(), dir.path())
    ///     // Called inline: no helper thread, no real-time deadline.
    ///     .replica(Arc::new(StoreReplica::new("mirror", mirror.clone()).call_inline(true)))
    ///     .without_scrub()
    ///     .heal_on_read(false)
    ///     .clock(clock.clone())
    ///     .stepped(true)
    ///     .build()?;
    /// m.start()?;
    /// // Nothing runs between steps: the host decides when the manager acts.
    /// let r = m.step()?;
    /// assert_eq!((r.handled, r.open), (0, 0));
    /// clock.advance(Duration::from_secs(1));
    /// m.step()?;
    /// m.stop()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn step(&self) -> Result<StepReport> {
        if !self.stepped {
            return Err(Error::InvalidArgument {
                what: "step",
                reason: "the manager runs its own threads; build it with RecoveryConfig::stepped(true) to drive it by steps".into(),
            });
        }
        let mut guard = self.stepper.lock();
        let Some(dispatcher) = guard.as_mut() else {
            return Err(if self.pending.lock().is_some() {
                Error::InvalidArgument {
                    what: "step",
                    reason: "the manager is not started; call start() first".into(),
                }
            } else {
                Error::Stopped {
                    component: COMPONENT,
                    reason: "stop() was called; build a new manager to go on".into(),
                }
            });
        };
        let inner = &self.inner;
        let mut report = StepReport::default();
        // As on the dispatcher's thread: its reads never heal on read.
        let (_, filed) = without_read_hook(|| dispatcher.pass(inner, None));
        report.filed = filed;
        loop {
            if report.batches >= STEP_BATCHES_MAX as u64 {
                // The rest waits in its place for the next step.
                report.more_ready = inner.queue.lock().has_ready();
                break;
            }
            let taken = take_ready(&mut inner.queue.lock());
            if taken.is_empty() {
                break;
            }
            report.batches += 1;
            report.handled += taken.len() as u64;
            let healed = catch_unwind(AssertUnwindSafe(|| heal_taken(inner, &taken)));
            if let Err(payload) = healed {
                report.panics += 1;
                let reason = format!(
                    "a step panicked while healing: {}",
                    panic_message(&*payload)
                );
                tracing::error!(%reason, "healing in step mode");
                put_back(inner, &reason, taken);
            }
        }
        record_closes(inner);
        report.open = inner.queue.lock().len() as u64;
        report.bus_pending = inner.sink.failures().len() as u64;
        Ok(report)
    }
}
