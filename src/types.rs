//! Small shared vocabulary: identifiers, and the failure reports every
//! component sends on one bus.
//!
//! # The failure bus
//!
//! Every component takes a [`FailureSink`] from its builder (each makes its
//! own when none is given). Hand the same sink to all of them and a host
//! sees one ordered stream: every [`Failure`]
//! gets a [`FailureId`] in the order it was sent, names the component that
//! sent it ([`Source`]) and carries a time from that component's
//! [`Clock`](crate::Clock); hand one clock to all of them and the times
//! compare.

use std::fmt;
use std::sync::Arc;

/// A page number in a [`PageStore`](crate::PageStore), counted from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PageId(pub u64);

impl fmt::Display for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for PageId {
    fn from(v: u64) -> Self {
        PageId(v)
    }
}

/// A log sequence number: a position in a log that only grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A transaction id, handed out by
/// [`TransactionRollbackManager::begin`](crate::TransactionRollbackManager::begin).
/// Ids grow with begin order and are never reused, also across crashes and
/// restarts (they are reserved durably in blocks; a restart skips the rest
/// of a block).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TxnId(pub u64);

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The name of a replica, unique among the replicas registered with one repairer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId(pub Arc<str>);

impl ReplicaId {
    /// Makes an id from a name.
    pub fn new(name: impl AsRef<str>) -> Self {
        ReplicaId(Arc::from(name.as_ref()))
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How urgent a failure is. `P0` is the most urgent; the ordering follows
/// urgency, so `P0 < P1` and a sorted queue serves `P0` first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Data is wrong or at risk now (corrupt pages, torn transactions).
    P0,
    /// A component or process is down.
    P1,
    /// Service is degraded or predicted to fail.
    P2,
    /// Housekeeping: nothing is wrong yet.
    P3,
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Priority::P0 => "P0",
            Priority::P1 => "P1",
            Priority::P2 => "P2",
            Priority::P3 => "P3",
        };
        f.write_str(s)
    }
}

/// What a failure is about, and what recovery acts on: the key by which
/// duplicate reports are merged into one incident.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// One page of the local store.
    Page(PageId),
    /// One transaction of the rollback manager.
    Transaction(TxnId),
    /// A registered replica.
    Replica(ReplicaId),
    /// A health metric (a probe's name).
    Metric(Arc<str>),
    /// A component: one of the library's own (`"scrubber"`, `"undo
    /// journal"`), or a host component that sends heartbeats.
    Component(Arc<str>),
    /// An operating-system process, by pid.
    Process(u32),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Page(p) => write!(f, "page {p}"),
            Target::Transaction(t) => write!(f, "transaction {t}"),
            Target::Replica(r) => write!(f, "replica {r}"),
            Target::Metric(m) => write!(f, "metric {m}"),
            Target::Component(c) => write!(f, "component {c}"),
            Target::Process(pid) => write!(f, "process {pid}"),
        }
    }
}

/// How many [`Source`]s there are (the bus counts drops per source).
const SOURCES: usize = 9;

/// The component that sent a [`Failure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// The [`CorruptionDetector`](crate::CorruptionDetector).
    CorruptionDetector,
    /// The [`Scrubber`](crate::Scrubber).
    Scrubber,
    /// The [`DataRepairer`](crate::DataRepairer).
    DataRepairer,
    /// The [`TransactionRollbackManager`](crate::TransactionRollbackManager).
    TransactionRollbackManager,
    /// The [`CrashDetector`](crate::CrashDetector).
    CrashDetector,
    /// The [`StateSnapshotManager`](crate::StateSnapshotManager).
    StateSnapshotManager,
    /// The [`HealthMonitor`](crate::HealthMonitor).
    HealthMonitor,
    /// The host itself (a failure it reports on the bus).
    Host,
    /// The [`AutoRecoveryManager`](crate::AutoRecoveryManager) (its own
    /// threads, the previous run's verdict at its start).
    RecoveryManager,
}

// Every source has a drop counter on the bus.
const _: () = assert!(Source::RecoveryManager as usize + 1 == SOURCES);

impl Source {
    /// The component's name, as printed.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Source::CorruptionDetector => "corruption detector",
            Source::Scrubber => "scrubber",
            Source::DataRepairer => "data repairer",
            Source::TransactionRollbackManager => "rollback manager",
            Source::CrashDetector => "crash detector",
            Source::StateSnapshotManager => "snapshot manager",
            Source::HealthMonitor => "health monitor",
            Source::Host => "host",
            Source::RecoveryManager => "recovery manager",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    // ---- corruption ----
    /// A page failed verification (checksum, zeroed, misplaced, bad trailer).
    CorruptPage {
        /// The page.
        page: PageId,
    },
    /// Every source was tried and none had a copy of the page that verifies.
    IrreparablePage {
        /// The page.
        page: PageId,
    },
    // ---- repair ----
    /// A replica keeps failing (down, hung, or serving copies that do not
    /// verify): reported once per episode, which ends when it serves a good
    /// copy again.
    ReplicaFailing {
        /// The replica.
        replica: ReplicaId,
    },
    // ---- rollback ----
    /// Transactions waited for each other in a cycle; `victim` was chosen to
    /// be rolled back.
    Deadlock {
        /// The victim.
        victim: TxnId,
    },
    /// Transactions were in flight at a crash and were rolled back when the
    /// undo journal was opened (or, by a report-only open, left in place:
    /// the evidence names them).
    InFlightAtCrash {
        /// How many were rolled back (0 when a report-only open left them
        /// in place).
        count: u64,
    },
    /// A rollback could not finish because a page it must restore fails
    /// verification: the transaction stays pending with its undo until the
    /// page is repaired.
    RollbackBlocked {
        /// The transaction.
        txn: TxnId,
        /// The page that fails.
        page: PageId,
    },
    /// The undo journal refused further work after a write or fsync failure
    /// it cannot resume from (not retryable, or a resume found its durable
    /// records damaged): drop the rollback manager and build it again (its
    /// recovery runs then) to continue. A retryable failure is
    /// [`JournalStalled`](FailureKind::JournalStalled) instead.
    JournalPoisoned,
    /// The undo journal stalled after a retryable write or fsync failure
    /// (a full disk, `EIO`): it refuses new records and keeps every record
    /// it accepted until
    /// [`TransactionRollbackManager::resume`](crate::TransactionRollbackManager::resume)
    /// rewrites them (the healer's `resume-journal` remedy calls it).
    /// Reported when it stalls, and again after each failed resume once its
    /// backoff has passed.
    JournalStalled {
        /// Whether the disk is full (`ENOSPC`, `EDQUOT`): space must be
        /// freed before a resume can succeed.
        no_space: bool,
    },
    /// The durable checksum table's log stalled after a retryable write or
    /// fsync failure (a full disk, `EIO`): the table refuses changes (so no
    /// page is written through the detector) and keeps every record it had
    /// not made durable until a resume writes them again — its own, after
    /// a backoff, or
    /// [`ChecksumTable::resume`](crate::checksum::ChecksumTable::resume)
    /// (the healer's `resume-checksum-log` remedy calls it). Reported when
    /// it stalls and after each failed resume.
    ChecksumLogStalled {
        /// Whether the disk is full (`ENOSPC`, `EDQUOT`): space must be
        /// freed before a resume can succeed.
        no_space: bool,
    },
    // ---- crash detection ----
    /// A component's heartbeats are late enough that phi crossed the threshold.
    ComponentSuspect {
        /// The component's registered name.
        component: Arc<str>,
    },
    /// A component sent no heartbeat for the whole timeout.
    ComponentDead {
        /// The component's registered name.
        component: Arc<str>,
    },
    /// A watched process exited (zombie or gone from the process table).
    ProcessGone {
        /// Its pid.
        pid: u32,
    },
    /// The previous run did not shut down cleanly (the run marker says it
    /// crashed, or cannot say): startup recovery is due.
    UncleanShutdown,
    // ---- snapshots ----
    /// A snapshot (periodic or asked for) failed.
    SnapshotFailed,
    // ---- scrubbing ----
    /// The scrub cursor file could not be written (the scrub goes on; a
    /// restart rescans from the last cursor written), or the one found at
    /// start could not be read (the scrub started at page 0). A failed write
    /// is reported once per episode, which ends when a write succeeds.
    ScrubCursorFailed,
    // ---- health ----
    /// A health metric entered the degraded band (see
    /// [`HealthMonitor`](crate::HealthMonitor)); reported once per episode,
    /// which ends when the metric is healthy again.
    HealthDegraded {
        /// The metric (the probe's name).
        metric: Arc<str>,
    },
    /// A health metric entered the critical band; reported once per episode,
    /// which ends when it leaves the critical band.
    HealthCritical {
        /// The metric (the probe's name).
        metric: Arc<str>,
    },
    /// A metric's significant upward trend will cross its critical threshold
    /// within the configured horizon.
    PredictedFailure {
        /// The metric (the probe's name).
        metric: Arc<str>,
        /// Estimated time until the critical threshold is crossed.
        eta: std::time::Duration,
    },
    /// A metric jumped far outside its recent range (EWMA z-score).
    Anomaly {
        /// The metric (the probe's name).
        metric: Arc<str>,
    },
    /// A health probe gave no value: it returned an error, panicked, gave a
    /// non-finite number or missed its deadline. Reported once per episode,
    /// which ends when the probe answers again.
    ProbeFailed {
        /// The metric (the probe's name).
        metric: Arc<str>,
    },
    // ---- the library's own components ----
    /// A component's background thread died (a panic in a host callback,
    /// say): the component does no more work until it is started again.
    /// One exception keeps its thread: component `"crash detector callback"`
    /// says the crash detector's event callback panicked (caught; the
    /// watchdog goes on watching).
    WorkerDied {
        /// The component.
        component: Arc<str>,
    },
    /// The crash detector could not refresh its run marker's last-seen time
    /// (detection goes on; a crash in this run is then dated from the last
    /// refresh that succeeded). Reported once per episode, which ends when a
    /// refresh succeeds again.
    RunMarkerFailed,
}

impl FailureKind {
    /// The thing the failure is about, used to merge duplicate reports.
    #[must_use]
    pub fn target(&self) -> Target {
        match self {
            FailureKind::CorruptPage { page } | FailureKind::IrreparablePage { page } => {
                Target::Page(*page)
            }
            FailureKind::ReplicaFailing { replica } => Target::Replica(replica.clone()),
            FailureKind::Deadlock { victim } => Target::Transaction(*victim),
            FailureKind::RollbackBlocked { txn, .. } => Target::Transaction(*txn),
            FailureKind::InFlightAtCrash { .. }
            | FailureKind::JournalPoisoned
            | FailureKind::JournalStalled { .. } => Target::Component(Arc::from("undo journal")),
            FailureKind::ChecksumLogStalled { .. } => {
                Target::Component(Arc::from("checksum table"))
            }
            FailureKind::ComponentSuspect { component }
            | FailureKind::ComponentDead { component }
            | FailureKind::WorkerDied { component } => Target::Component(component.clone()),
            FailureKind::ProcessGone { pid } => Target::Process(*pid),
            FailureKind::UncleanShutdown | FailureKind::RunMarkerFailed => {
                Target::Component(Arc::from("run marker"))
            }
            FailureKind::SnapshotFailed => Target::Component(Arc::from("snapshots")),
            FailureKind::ScrubCursorFailed => Target::Component(Arc::from("scrub cursor")),
            FailureKind::HealthDegraded { metric }
            | FailureKind::HealthCritical { metric }
            | FailureKind::PredictedFailure { metric, .. }
            | FailureKind::Anomaly { metric }
            | FailureKind::ProbeFailed { metric } => Target::Metric(metric.clone()),
        }
    }

    /// The kind's stable name (`snake_case`), as diagnosis rules match it
    /// and reports print it.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            FailureKind::CorruptPage { .. } => "corrupt_page",
            FailureKind::IrreparablePage { .. } => "irreparable_page",
            FailureKind::ReplicaFailing { .. } => "replica_failing",
            FailureKind::Deadlock { .. } => "deadlock",
            FailureKind::InFlightAtCrash { .. } => "in_flight_at_crash",
            FailureKind::RollbackBlocked { .. } => "rollback_blocked",
            FailureKind::JournalPoisoned => "journal_poisoned",
            FailureKind::JournalStalled { .. } => "journal_stalled",
            FailureKind::ChecksumLogStalled { .. } => "checksum_log_stalled",
            FailureKind::ComponentSuspect { .. } => "component_suspect",
            FailureKind::ComponentDead { .. } => "component_dead",
            FailureKind::ProcessGone { .. } => "process_gone",
            FailureKind::UncleanShutdown => "unclean_shutdown",
            FailureKind::SnapshotFailed => "snapshot_failed",
            FailureKind::ScrubCursorFailed => "scrub_cursor_failed",
            FailureKind::HealthDegraded { .. } => "health_degraded",
            FailureKind::HealthCritical { .. } => "health_critical",
            FailureKind::PredictedFailure { .. } => "predicted_failure",
            FailureKind::Anomaly { .. } => "anomaly",
            FailureKind::ProbeFailed { .. } => "probe_failed",
            FailureKind::WorkerDied { .. } => "worker_died",
            FailureKind::RunMarkerFailed => "run_marker_failed",
        }
    }

    /// The default priority of this kind of failure.
    #[must_use]
    pub fn default_priority(&self) -> Priority {
        match self {
            FailureKind::CorruptPage { .. }
            | FailureKind::IrreparablePage { .. }
            | FailureKind::InFlightAtCrash { .. }
            | FailureKind::RollbackBlocked { .. }
            | FailureKind::JournalPoisoned
            | FailureKind::JournalStalled { .. }
            | FailureKind::ChecksumLogStalled { .. } => Priority::P0,
            FailureKind::Deadlock { .. }
            | FailureKind::ComponentDead { .. }
            | FailureKind::ProcessGone { .. }
            | FailureKind::UncleanShutdown
            | FailureKind::HealthCritical { .. }
            | FailureKind::WorkerDied { .. } => Priority::P1,
            FailureKind::ComponentSuspect { .. }
            | FailureKind::ReplicaFailing { .. }
            | FailureKind::SnapshotFailed
            | FailureKind::ScrubCursorFailed
            | FailureKind::RunMarkerFailed
            | FailureKind::HealthDegraded { .. }
            | FailureKind::PredictedFailure { .. }
            | FailureKind::ProbeFailed { .. } => Priority::P2,
            FailureKind::Anomaly { .. } => Priority::P3,
        }
    }
}

/// A failure's number on the bus: ids grow in the order failures were sent
/// on one [`FailureSink`] (and its clones), starting at 1. A failure not yet
/// sent has id 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FailureId(pub u64);

impl fmt::Display for FailureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A failure report: what failed, where, how bad, who saw it, when, and why
/// it thinks so.
///
/// Components send these on a [`FailureSink`]; a consumer merges duplicate
/// reports by [`Failure::target`] and serves them in order of
/// [`Failure::priority`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Its number on the bus (0 until sent).
    pub id: FailureId,
    /// The component that reported it.
    pub source: Source,
    /// What was found wrong.
    pub kind: FailureKind,
    /// How urgent it is.
    pub priority: Priority,
    /// Human-readable evidence (the error seen, the values measured).
    pub evidence: String,
    /// When it was detected, in nanoseconds of the reporting component's
    /// [`Clock`](crate::Clock).
    pub detected_at_ns: u64,
}

impl Failure {
    /// A failure with the kind's default priority, not yet sent.
    pub fn new(
        source: Source,
        kind: FailureKind,
        evidence: impl Into<String>,
        detected_at_ns: u64,
    ) -> Self {
        let priority = kind.default_priority();
        Failure {
            id: FailureId::default(),
            source,
            kind,
            priority,
            evidence: evidence.into(),
            detected_at_ns,
        }
    }

    /// The thing the failure is about.
    #[must_use]
    pub fn target(&self) -> Target {
        self.kind.target()
    }

    /// Its [`Display`](fmt::Display) text, rendered into a string sized
    /// for it once (an incident's first timeline step and audit record):
    /// the evidence plus room for the id, priority, target and source.
    pub(crate) fn text(&self) -> String {
        use fmt::Write as _;
        let mut s = String::with_capacity(self.evidence.len() + 96);
        // Writing into a String cannot fail.
        let _ = write!(s, "{self}");
        s
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] {} (from the {}): {}",
            self.id,
            self.priority,
            self.target(),
            self.source,
            self.evidence
        )
    }
}

/// Called with every failure sent on a sink, on the sending thread, after
/// it is queued — possibly while the reporting component holds its own
/// locks. It must not block, must not call back into the component that
/// reported (hand the failure to another thread: the bus's receiver does
/// that), and must not panic: a callback that panics takes down the
/// component that reported (a background thread dies, and is reported as
/// [`FailureKind::WorkerDied`]).
pub type FailureCallback = Arc<dyn Fn(&Failure) + Send + Sync>;

/// Unread reports a component's own bus holds when it is given none.
pub(crate) const DEFAULT_FAILURE_CAPACITY: usize = 4_096;

struct Bus {
    tx: crossbeam_channel::Sender<Failure>,
    rx: crossbeam_channel::Receiver<Failure>,
    /// The next id; held while a failure is numbered and queued, so ids
    /// and queue order agree.
    next: parking_lot::Mutex<u64>,
    dropped: std::sync::atomic::AtomicU64,
    /// Drops by the sender's [`Source`] (its declaration order).
    dropped_by_source: [std::sync::atomic::AtomicU64; SOURCES],
    sent: std::sync::atomic::AtomicU64,
    /// Run for every failure sent on the bus, through any handle.
    callback: parking_lot::RwLock<Option<FailureCallback>>,
}

/// The failure bus: a bounded channel every component sends its
/// [`Failure`]s on (see the module docs). Cloning shares it.
///
/// When the consumer falls behind, new reports are counted as dropped (see
/// [`FailureSink::dropped`]) rather than blocking the sender, because a
/// detector that blocks on its own reporting would stop detecting. What a
/// dropped report loses depends on its kind: a corrupt page stays fenced in
/// the suspect registry (a host that walks
/// [`CorruptionDetector::pages_in`](crate::CorruptionDetector::pages_in), or
/// `repair_pending`, still finds it), but any other report — a dead
/// component, a predicted failure, transactions in flight at a crash — is
/// gone, and only the count says it was there. Size the channel, and drain
/// it.
///
/// ```
/// use selfheal::{Failure, FailureKind, FailureSink, PageId, Source};
/// let sink = FailureSink::new(16);
/// let id = sink.send(Failure::new(
///     Source::Host,
///     FailureKind::CorruptPage { page: PageId(3) },
///     "seen by the host",
///     0,
/// ));
/// let got = sink.failures().try_recv().unwrap();
/// assert_eq!(got.id, id);
/// assert_eq!(got.source, Source::Host);
/// ```
#[derive(Clone)]
pub struct FailureSink {
    bus: Arc<Bus>,
}

impl fmt::Debug for FailureSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailureSink")
            .field("capacity", &self.bus.tx.capacity())
            .field("queued", &self.bus.rx.len())
            .field("dropped", &self.dropped())
            .field("callback", &self.bus.callback.read().is_some())
            .finish()
    }
}

impl FailureSink {
    /// Whether `self` and `other` are handles of one bus.
    #[cfg(feature = "sqlite")]
    pub(crate) fn same_bus(&self, other: &FailureSink) -> bool {
        Arc::ptr_eq(&self.bus, &other.bus)
    }

    /// A bus holding at most `capacity` unread reports (at least 1).
    #[must_use]
    pub fn new(capacity: usize) -> FailureSink {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        FailureSink {
            bus: Arc::new(Bus {
                tx,
                rx,
                next: parking_lot::Mutex::new(1),
                dropped: std::sync::atomic::AtomicU64::new(0),
                dropped_by_source: Default::default(),
                sent: std::sync::atomic::AtomicU64::new(0),
                callback: parking_lot::RwLock::new(None),
            }),
        }
    }

    /// Sets the bus's callback: `callback` runs for every failure sent on
    /// this bus from now on, through any handle — this one, its clones, and
    /// the clones made before (every component given this bus). Setting it
    /// again replaces it for all of them. Returns the same bus.
    #[must_use]
    pub fn with_callback(self, callback: FailureCallback) -> FailureSink {
        *self.bus.callback.write() = Some(callback);
        self
    }

    /// The receiving end: the one ordered stream of every failure sent on
    /// this bus (cloning the receiver shares the queue).
    #[must_use]
    pub fn failures(&self) -> crossbeam_channel::Receiver<Failure> {
        self.bus.rx.clone()
    }

    /// Numbers `failure`, queues it without blocking, and runs the callback.
    /// Returns its id (also when it was dropped because the queue was full).
    pub fn send(&self, mut failure: Failure) -> FailureId {
        use std::sync::atomic::Ordering;
        let queued = {
            let mut next = self.bus.next.lock();
            failure.id = FailureId(*next);
            *next += 1;
            match self.bus.tx.try_send(failure.clone()) {
                Ok(()) => true,
                Err(_) => {
                    self.bus.dropped.fetch_add(1, Ordering::Relaxed);
                    self.bus.dropped_by_source[failure.source as usize]
                        .fetch_add(1, Ordering::Relaxed);
                    false
                }
            }
        };
        self.bus.sent.fetch_add(1, Ordering::Relaxed);
        if !queued {
            tracing::warn!(failure = %failure, "failure report dropped: the bus is full");
        }
        // Cloned out so that the callback runs without the lock held (it may
        // set another callback, or send).
        let callback = self.bus.callback.read().clone();
        if let Some(cb) = callback {
            cb(&failure);
        }
        failure.id
    }

    /// Makes a failure of `kind` from `source` at `detected_at_ns` and sends it.
    pub fn report(
        &self,
        source: Source,
        kind: FailureKind,
        evidence: impl Into<String>,
        detected_at_ns: u64,
    ) -> FailureId {
        self.send(Failure::new(source, kind, evidence, detected_at_ns))
    }

    /// How many reports were dropped because the queue was full, whoever
    /// sent them: the whole bus.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.bus.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many reports from `source` were dropped because the queue was
    /// full. Each component's own drop counter (`reports_dropped`,
    /// `failures_dropped`) is this for its source, so that on a bus shared
    /// by several components it counts only the component's own reports.
    #[must_use]
    pub fn dropped_from(&self, source: Source) -> u64 {
        self.bus.dropped_by_source[source as usize].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many reports were sent in all (queued or dropped).
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.bus.sent.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
