//! Small shared vocabulary: identifiers and the failure description that every
//! detector hands on.

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

/// What a failure is about: the key by which duplicate reports are merged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// One page of the local store.
    Page(PageId),
    /// A named component of the host (heartbeat source, probe, subsystem).
    Component(Arc<str>),
    /// An operating-system process, by pid.
    Process(u32),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Page(p) => write!(f, "page {p}"),
            Target::Component(c) => write!(f, "component {c}"),
            Target::Process(pid) => write!(f, "process {pid}"),
        }
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
    // ---- rollback ----
    /// Transactions waited for each other in a cycle; `victim` was chosen to
    /// be rolled back.
    Deadlock {
        /// The transaction id of the victim.
        victim: u64,
    },
    /// Transactions were in flight at a crash and were rolled back when the
    /// undo journal was opened.
    InFlightAtCrash {
        /// How many were rolled back.
        count: u64,
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
    WorkerDied {
        /// The component.
        component: Arc<str>,
    },
}

impl FailureKind {
    /// The thing the failure is about, used to merge duplicate reports.
    #[must_use]
    pub fn target(&self) -> Target {
        match self {
            FailureKind::CorruptPage { page } | FailureKind::IrreparablePage { page } => {
                Target::Page(*page)
            }
            // ---- rollback ----
            FailureKind::Deadlock { victim } => {
                Target::Component(Arc::from(format!("transaction {victim}")))
            }
            FailureKind::InFlightAtCrash { .. } => Target::Component(Arc::from("undo journal")),
            // ---- crash detection ----
            FailureKind::ComponentSuspect { component }
            | FailureKind::ComponentDead { component } => Target::Component(component.clone()),
            FailureKind::ProcessGone { pid } => Target::Process(*pid),
            // ---- health ----
            FailureKind::HealthDegraded { metric }
            | FailureKind::HealthCritical { metric }
            | FailureKind::PredictedFailure { metric, .. }
            | FailureKind::Anomaly { metric }
            | FailureKind::ProbeFailed { metric } => Target::Component(metric.clone()),
            FailureKind::WorkerDied { component } => Target::Component(component.clone()),
        }
    }

    /// The default priority of this kind of failure.
    #[must_use]
    pub fn default_priority(&self) -> Priority {
        match self {
            FailureKind::CorruptPage { .. } | FailureKind::IrreparablePage { .. } => Priority::P0,
            // ---- rollback ----
            FailureKind::Deadlock { .. } => Priority::P1,
            FailureKind::InFlightAtCrash { .. } => Priority::P0,
            // ---- crash detection ----
            FailureKind::ComponentDead { .. } | FailureKind::ProcessGone { .. } => Priority::P1,
            FailureKind::ComponentSuspect { .. } => Priority::P2,
            // ---- health ----
            FailureKind::HealthCritical { .. } => Priority::P1,
            FailureKind::HealthDegraded { .. } | FailureKind::PredictedFailure { .. } => {
                Priority::P2
            }
            FailureKind::Anomaly { .. } => Priority::P3,
            FailureKind::ProbeFailed { .. } => Priority::P2,
            FailureKind::WorkerDied { .. } => Priority::P1,
        }
    }
}

/// A failure report: what failed, where, how bad, and why the detector thinks so.
///
/// Detectors send these over a channel (see [`FailureSink`]); a consumer
/// merges duplicate reports by [`Failure::target`] and serves them in order
/// of [`Failure::priority`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What was found wrong.
    pub kind: FailureKind,
    /// How urgent it is.
    pub priority: Priority,
    /// Human-readable evidence (the error seen, the values measured).
    pub evidence: String,
    /// When it was detected, in nanoseconds of the detector's [`Clock`](crate::Clock).
    pub detected_at_ns: u64,
}

impl Failure {
    /// A failure with the kind's default priority.
    pub fn new(kind: FailureKind, evidence: impl Into<String>, detected_at_ns: u64) -> Self {
        let priority = kind.default_priority();
        Failure {
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
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {}: {}",
            self.priority,
            self.target(),
            self.evidence
        )
    }
}

/// Called with every failure a detector reports, on the detecting thread.
pub type FailureCallback = Arc<dyn Fn(&Failure) + Send + Sync>;

/// Where a detector sends its [`Failure`] reports.
///
/// A bounded crossbeam channel: when the consumer falls behind, new reports are
/// counted as dropped (see [`FailureSink::dropped`]) rather than blocking the
/// detector, because a detector that blocks on its own reporting would stop
/// detecting. What a dropped report loses depends on its kind: a corrupt
/// page stays fenced in the suspect registry (a host that walks
/// [`CorruptionDetector::pages_in`](crate::CorruptionDetector::pages_in), or
/// `repair_pending`, still finds it), but any other report — a dead
/// component, a predicted failure, transactions in flight at a crash — is
/// gone, and only the count says it was there. Size the channel, and drain
/// it.
#[derive(Clone, Debug)]
pub struct FailureSink {
    tx: crossbeam_channel::Sender<Failure>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl FailureSink {
    /// A sink and its receiving end, holding at most `capacity` unread reports.
    #[must_use]
    pub fn bounded(capacity: usize) -> (FailureSink, crossbeam_channel::Receiver<Failure>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        (
            FailureSink {
                tx,
                dropped: Arc::default(),
            },
            rx,
        )
    }

    /// Sends a report without blocking; returns `false` when it was dropped
    /// (channel full or receiver gone).
    pub fn send(&self, failure: Failure) -> bool {
        match self.tx.try_send(failure) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(failure = %e.into_inner(), "failure report dropped");
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
    }

    /// How many reports were dropped because the receiver was full or gone.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_orders_by_urgency() {
        let mut v = vec![Priority::P3, Priority::P0, Priority::P2, Priority::P1];
        v.sort();
        assert_eq!(v, [Priority::P0, Priority::P1, Priority::P2, Priority::P3]);
    }

    #[test]
    fn sink_counts_drops_instead_of_blocking() {
        let (sink, rx) = FailureSink::bounded(1);
        let f = Failure::new(FailureKind::CorruptPage { page: PageId(1) }, "x", 0);
        assert!(sink.send(f.clone()));
        assert!(!sink.send(f.clone()));
        assert_eq!(sink.dropped(), 1);
        assert_eq!(rx.try_recv().unwrap().target(), Target::Page(PageId(1)));
    }
}
