//! What the manager is made of: the [`AutoRecoveryManager`]'s fields, the
//! state its threads share ([`Inner`], with the supervised threads), what `build` hands to `start`
//! ([`Pending`]), the background work `start` began ([`Running`]), the
//! [`StartupReport`], and the file names inside the manager's directory.
//!
//! Only data lives here: the manager's methods are in the folder's
//! `mod.rs`, startup and stop in `run`, its threads in `threads`. Both depend on this file, and it on
//! neither, so the folder's imports point one way.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::audit::AuditEntry;
use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::corruption::CorruptionDetector;
use crate::crash::{CrashDetector, RunMarker, RunVerdict};
use crate::healer::{Incident, RestartIntensity, SelfHealer};
use crate::health::HealthMonitor;
use crate::repair::DataRepairer;
use crate::rollback::TransactionRollbackManager;
use crate::scrub::Scrubber;
use crate::snapshot::{PeriodicSnapshots, StateSnapshotManager};
use crate::types::{Failure, FailureSink, PageId, Priority};
use crate::worker::Worker;

use super::config::RecoveryConfig;
use super::events::Events;
use super::queue::IncidentQueue;
use super::stats::Tally;
use super::suspects::{Restored, SuspectFile};

/// File names inside the manager's directory.
pub(super) const LEARNED_FILE: &str = "learned";
pub(super) const INCIDENTS_FILE: &str = "incidents";
pub(super) const JOURNAL_DIR: &str = "journal";
pub(super) const AUDIT_DIR: &str = "audit";
pub(super) const ESCALATED_FILE: &str = "escalated";
/// The component named in the failures of the manager's own threads.
pub(super) const COMPONENT: &str = "recovery manager";

/// What [`AutoRecoveryManager::start`] found and did before background
/// work began.
#[derive(Clone, Debug, PartialEq)]
pub struct StartupReport {
    /// The run marker's verdict on the previous run.
    pub verdict: RunVerdict,
    /// What the rollback manager's recovery did.
    pub rollback: crate::rollback::RecoveryReport,
    /// Pages re-verified after the rollback (every page a rolled-back,
    /// blocked or replaced transaction touched).
    pub pages_verified: u64,
    /// Of those, pages that failed (fenced; each became an incident).
    pub pages_failed: Vec<PageId>,
    /// Open incidents read back from the previous run and queued again.
    pub incidents_resumed: u64,
    /// Why the saved incidents could not be read, if they could not (the
    /// manager then started without them; pages are still found by scrubs),
    /// or that the file is missing from a directory used before.
    pub incidents_warning: Option<String>,
    /// Pages the previous run's suspect registry recorded as bad, fenced
    /// again when the manager was built (each has an incident).
    pub suspects_restored: Vec<PageId>,
    /// Why the suspect registry could not be read as written, if it could
    /// not (its pages were re-checked instead; never a refusal to start) —
    /// also when it is missing from a directory used before (every page
    /// was re-checked then).
    pub suspects_warning: Option<String>,
    /// Escalated incidents of previous runs read back (unacknowledged; see
    /// [`AutoRecoveryManager::escalated`]).
    pub escalations_restored: u64,
    /// Why the escalated-incidents file could not be read, if it could not
    /// (the manager then started without the previous runs' escalations:
    /// their pages, still fenced, are tried and escalated once more).
    pub escalations_warning: Option<String>,
}

/// Everything the threads share.
pub(crate) struct Inner {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) sink: FailureSink,
    pub(crate) detector: Arc<CorruptionDetector>,
    pub(crate) healer: RwLock<Option<Arc<SelfHealer>>>,
    pub(crate) health: Option<Arc<HealthMonitor>>,
    pub(crate) queue: Mutex<IncidentQueue>,
    pub(crate) work: Condvar,
    pub(crate) events: Events,
    pub(crate) tally: Mutex<Tally>,
    pub(crate) recent: Mutex<VecDeque<Incident>>,
    pub(crate) recent_capacity: usize,
    pub(crate) rto: [Duration; 4],
    pub(crate) incidents_path: PathBuf,
    /// Producers stopped: drain what is left, then end.
    pub(crate) draining: AtomicBool,
    /// The dispatcher drained the bus for the last time.
    pub(crate) bus_closed: AtomicBool,
    /// End now, after the incident at hand.
    pub(crate) abort: AtomicBool,
    pub(crate) marker: Mutex<Option<RunMarker>>,
    pub(crate) rescans: std::sync::atomic::AtomicU64,
    /// The open incidents changed since they were last saved.
    pub(crate) dirty: AtomicBool,
    /// The dispatcher and the recovery threads, supervised.
    pub(crate) threads: Mutex<Supervision>,
    /// Threads that died, reported by their dying thread, waiting for the
    /// supervisor.
    pub(crate) deaths: Mutex<Vec<Death>>,
    /// The durable suspect registry.
    pub(crate) suspects: SuspectFile,
    /// Failures taken off the bus and filed (for `is_idle`: every failure
    /// sent is filed, dropped, or still on the bus).
    pub(crate) filed: std::sync::atomic::AtomicU64,
    /// Incidents between leaving the queue and being recorded as closed
    /// (for `is_idle`).
    pub(crate) closing: std::sync::atomic::AtomicU64,
    /// Incidents healed on a reader's thread, out of the queue, whose close
    /// is recorded off that thread (see `closing::close_later`).
    pub(crate) closes: Mutex<Vec<LaterClose>>,
    /// Held while closes left for later are recorded: one recorder at a
    /// time, so they are recorded in the order they were left and a caller
    /// of `stats` or `incidents` waits for one under way.
    pub(crate) recording: Mutex<()>,
    /// The audit log (synced by the dispatcher and at stop).
    pub(crate) audit: Option<Arc<AuditLog>>,
    /// How often, at most, the dispatcher syncs the audit log.
    pub(crate) audit_sync: Duration,
    /// Whether failed verified reads are healed on the reader's thread.
    pub(crate) heal_on_read: bool,
    /// Escalated pages, whose later reports join their escalation, and
    /// the escalated incidents kept until acknowledged.
    pub(crate) escalations: Mutex<super::escalated::Escalations>,
    /// Where they are saved, and the lock that orders the saves.
    pub(crate) escalated_path: PathBuf,
    pub(crate) escalated_save: Mutex<()>,
    /// Whether the manager may act (not Observe): heal on read is off in
    /// Observe mode.
    pub(crate) acting: bool,
    /// Signalled (under the queue's lock) whenever a running incident
    /// leaves the running state, for readers waiting on a page another
    /// thread heals.
    pub(crate) finished: Condvar,
    /// The rollback manager, once started (the dispatcher reports its
    /// journal again while it stays stalled).
    pub(crate) rollback: Mutex<Option<Arc<TransactionRollbackManager>>>,
}

/// The dispatcher's state: the bus it drains and its cadences, on the
/// manager's clock (what is due is the clock's decision; real time only
/// bounds how long the dispatcher's thread waits for the bus). Its passes
/// (`threads`) run on the dispatcher's thread, or on the host's in step
/// mode.
pub(crate) struct Dispatcher {
    pub(crate) rx: crossbeam_channel::Receiver<Failure>,
    pub(crate) saved_at_ns: u64,
    pub(crate) marker_at_ns: u64,
    /// When the suspect registry may be compared and saved next.
    pub(crate) suspects_next_ns: u64,
    pub(crate) audit_synced_at_ns: u64,
}

/// What a manager's thread does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Drains the bus into the queue.
    Dispatch,
    /// Heals incidents from the queue.
    Recover,
}

/// One of the manager's threads.
pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) worker: Option<Worker<()>>,
}

/// The manager's threads and how often they may be restarted (at most
/// N restarts in T, for all of them together, as an OTP supervisor).
pub(crate) struct Supervision {
    pub(crate) slots: Vec<Slot>,
    pub(crate) intensity: RestartIntensity,
}

/// A thread that died: its slot and the failure reported for it.
pub(crate) struct Death {
    pub(crate) slot: usize,
    pub(crate) failure: Failure,
}

impl Inner {
    pub(crate) fn rto_of(&self, p: Priority) -> Duration {
        self.rto[p as usize]
    }
}

/// What `build` made and `start` consumes.
pub(super) struct Pending {
    pub(super) cfg: RecoveryConfig,
    pub(super) repairer: Arc<DataRepairer>,
    pub(super) snapshots: Option<Arc<StateSnapshotManager>>,
    pub(super) audit: Option<Arc<AuditLog>>,
    pub(super) verdict: RunVerdict,
    pub(super) restored: Restored,
    /// Escalated incidents read back, and why they could not be.
    pub(super) escalations: (u64, Option<String>),
}

/// The background work `start` began.
#[derive(Default)]
pub(super) struct Running {
    pub(super) scrub: Option<Scrubber>,
    pub(super) periodic: Option<PeriodicSnapshots>,
    pub(super) crash: Option<Arc<CrashDetector>>,
    pub(super) rollback: Option<Arc<TransactionRollbackManager>>,
    pub(super) stopped: bool,
}

/// The self-healing front door. See the [module docs](super).
pub struct AutoRecoveryManager {
    pub(super) inner: Arc<Inner>,
    pub(super) repairer: Arc<DataRepairer>,
    pub(super) snapshots: Option<Arc<StateSnapshotManager>>,
    pub(super) audit: Option<Arc<AuditLog>>,
    pub(super) pending: Mutex<Option<Pending>>,
    pub(super) running: Mutex<Running>,
    pub(super) startup: Mutex<Option<StartupReport>>,
    pub(super) drain_timeout: Duration,
    pub(super) stop_timeout: Duration,
    /// Step mode: no threads; the host calls `step`.
    pub(super) stepped: bool,
    /// In step mode, from `start` to `stop`: the dispatcher `step` runs
    /// (its lock orders concurrent steps).
    pub(super) stepper: Mutex<Option<Dispatcher>>,
}

/// An incident healed on a reader's thread and out of the queue, whose
/// close is still to be recorded: the late joins the queue handed back and
/// the audit records that close it.
pub(crate) struct LaterClose {
    pub(crate) inc: Incident,
    pub(crate) late: Vec<Failure>,
    pub(crate) audit: Vec<AuditEntry>,
}
