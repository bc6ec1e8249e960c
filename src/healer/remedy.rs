//! Its contract is documented on [`Remedy`] (this module is private; its
//! items are re-exported by its parent).

use std::fmt;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::corruption::CorruptionDetector;
use crate::crash::CrashDetector;
use crate::error::{Error, Result};
use crate::health::HealthMonitor;
use crate::host::{HostAction, HostActions};
use crate::repair::DataRepairer;
use crate::rollback::TransactionRollbackManager;
use crate::snapshot::{SnapshotReport, StateSnapshotManager};
use crate::types::{Failure, Target};

use super::diagnose::{Diagnosis, Problem};

/// What a remedy did, as evidence for the incident's timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// What was done, for a person (`"page 7 written from replica mirror"`).
    pub evidence: String,
    /// The value of the case's metric just before the action, when the
    /// remedy sampled it: its verification then asks for a lower value, not
    /// only a healthy band (a prediction is made in the healthy band).
    pub metric_before: Option<f64>,
    /// What the action's own check of its target found, when the action
    /// made one after it acted: the built-in repair from replicas re-reads
    /// and verifies every page it writes, after the sync that makes it
    /// durable, before it reports the page repaired. A remedy's
    /// [`verify`](Remedy::verify) may return it rather than read the
    /// target a second time. `None` for an action that checked nothing.
    pub verified: Option<Verified>,
    /// The remedy found nothing to do: its target was already healthy when
    /// it looked (a page no longer waiting for repair, because the host
    /// rewrote it or another action healed it first). When its
    /// verification confirms it, the attempt is
    /// [`NothingToDo`](super::AttemptOutcome::NothingToDo): the incident
    /// closes healed, but the remedy gets no credit for it, neither in its
    /// learned record, nor in its breaker, nor in
    /// [`RemedyStats`](crate::recovery::RemedyStats).
    pub nothing_to_do: bool,
    /// Someone else acted on the target while the remedy ran, and the
    /// remedy left their change standing (set with `nothing_to_do`): the
    /// built-in repair from replicas when the host rewrote the page during
    /// the repair. When the target then fails its verification (what
    /// changed it left it bad), the attempt is
    /// [`Overtaken`](super::AttemptOutcome::Overtaken): the plan goes on,
    /// the remedy is tried once more, and it gets no blame. A remedy that
    /// only found its target healthy leaves this `false`, so that one
    /// whose target is still bad counts as not verified.
    pub overtaken: bool,
}

impl Applied {
    /// An action described by `evidence`.
    pub fn new(evidence: impl Into<String>) -> Applied {
        Applied {
            evidence: evidence.into(),
            metric_before: None,
            verified: None,
            nothing_to_do: false,
            overtaken: false,
        }
    }

    /// No action: the target was already healthy, as `evidence` says (see
    /// the field [`nothing_to_do`](Applied#structfield.nothing_to_do)).
    pub fn nothing_to_do(evidence: impl Into<String>) -> Applied {
        Applied {
            nothing_to_do: true,
            ..Applied::new(evidence)
        }
    }

    /// No action: someone else changed the target while the remedy ran,
    /// and their change stands, as `evidence` says (see the field
    /// [`overtaken`](Applied#structfield.overtaken)).
    pub fn overtaken(evidence: impl Into<String>) -> Applied {
        Applied {
            nothing_to_do: true,
            overtaken: true,
            ..Applied::new(evidence)
        }
    }

    /// With the case's metric as it was before the action.
    #[must_use]
    pub fn metric_before(mut self, value: Option<f64>) -> Applied {
        self.metric_before = value;
        self
    }

    /// With what the action's own check of its target found after it
    /// acted (see the field [`verified`](Applied#structfield.verified)).
    #[must_use]
    pub fn verified(mut self, found: Verified) -> Applied {
        self.verified = Some(found);
        self
    }
}

/// What checking the target again found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Whether the target is healthy again (for an unchecked result:
    /// whether nothing contradicts it).
    pub healed: bool,
    /// Whether the target was re-read at all. `false` only for
    /// [`Verified::unchecked`]: the action was taken and acknowledged, but
    /// nothing the remedy can reach shows its effect.
    pub checked: bool,
    /// What was checked and what it showed.
    pub evidence: String,
}

impl Verified {
    /// The target checked out.
    pub fn healed(evidence: impl Into<String>) -> Verified {
        Verified {
            healed: true,
            checked: true,
            evidence: evidence.into(),
        }
    }

    /// The target is still wrong.
    pub fn not_healed(evidence: impl Into<String>) -> Verified {
        Verified {
            healed: false,
            checked: true,
            evidence: evidence.into(),
        }
    }

    /// The remedy cannot re-check its target (no heartbeats, no health
    /// monitor, an effect only the host can see); `evidence` says why. The
    /// attempt closes the incident as [`AttemptOutcome::Unverified`]:
    /// healed, but not counted as a verified heal.
    ///
    /// [`AttemptOutcome::Unverified`]: super::AttemptOutcome::Unverified
    pub fn unchecked(evidence: impl Into<String>) -> Verified {
        Verified {
            healed: true,
            checked: false,
            evidence: evidence.into(),
        }
    }
}

/// The problem a remedy is asked to treat: the diagnosis and the failure it
/// came from.
#[derive(Clone, Debug)]
pub struct Case<'a> {
    /// What is wrong, how sure, and about what.
    pub diagnosis: &'a Diagnosis,
    /// The failure that opened the incident.
    pub failure: &'a Failure,
}

impl Case<'_> {
    /// The diagnosed problem.
    #[must_use]
    pub fn problem(&self) -> &Problem {
        &self.diagnosis.problem
    }

    /// What the failure is about.
    #[must_use]
    pub fn target(&self) -> &Target {
        &self.diagnosis.target
    }
}

/// One thing the healer can do.
///
/// Remedies: what the healer can do about a [`Problem`], each with a way to
/// check that it worked and, where possible, a way to take it back.
///
/// A [`Remedy`] says which problems it [applies to](Remedy::applies_to),
/// [executes](Remedy::execute) one action and returns what it did as
/// evidence ([`Applied`]), then [verifies](Remedy::verify) by checking the
/// target again ([`Verified`]). The healer calls `undo` for a remedy that
/// left the host's health worse than before (verified or not), and for one
/// that failed after a partial effect it declares it can take back. A remedy
/// reaches the library's components and the host's actions through the
/// [`RemedyContext`] it is handed; none of them is required, and a remedy
/// whose component is missing fails with a typed error (it is not planned
/// at all when it needs a [`HostAction`] the host does not support).
///
/// # Contract
/// - `execute` acts at most once and returns; it does not retry (the healer
///   paces retries with backoff and a breaker).
/// - `verify` re-reads the target; it does not trust `execute`'s word.
///   A remedy that has nothing to re-read returns
///   [`Verified::unchecked`], never [`Verified::healed`]: its attempt is
///   [`Unverified`](super::AttemptOutcome::Unverified) — the incident
///   closes, but the learner does not count it as a success and
///   [`RemedyStats::healed`](crate::recovery::RemedyStats::healed) does not count it
///   (nor one that found its target already healthy,
///   [`Applied::nothing_to_do`], and whose verification confirms it)
///   (the breaker counts it as a call that did not fail).
/// - `undo` is called after an `execute` of the same remedy on the same
///   problem that left health worse — whether it verified or not — with its
///   [`Applied`]; and after an `execute` that returned an error, when
///   [`undo_after_error`](Remedy::undo_after_error) says it may have had
///   a partial effect, with an [`Applied`] whose evidence is the error.
/// - A remedy is `Send + Sync`: the healer is shared between threads.
pub trait Remedy: Send + Sync + fmt::Debug {
    /// A stable name (1 to 128 bytes): learned records and reports use it.
    fn name(&self) -> &str;

    /// Whether it treats `problem`.
    fn applies_to(&self, problem: &Problem) -> bool;

    /// Acts once.
    ///
    /// # Errors
    /// Whatever stopped the action; the healer records it as a failed
    /// attempt and goes on to the next remedy.
    fn execute(&self, ctx: &RemedyContext, case: &Case<'_>) -> Result<Applied>;

    /// Checks the target again after `execute`.
    ///
    /// # Errors
    /// When the target cannot be checked; the attempt counts as failed.
    fn verify(&self, ctx: &RemedyContext, case: &Case<'_>, applied: &Applied) -> Result<Verified>;

    /// Takes back what `execute` did. Default: [`Error::Unsupported`].
    ///
    /// # Errors
    /// [`Error::Unsupported`] when it cannot be undone; the remedy's error.
    fn undo(&self, ctx: &RemedyContext, case: &Case<'_>, applied: &Applied) -> Result<()> {
        let _ = (ctx, case, applied);
        Err(Error::Unsupported { action: "undo" })
    }

    /// Whether `undo` can take back what a failed `execute` may have done
    /// before it failed (the healer then calls it at once). Default:
    /// `false`.
    fn undo_after_error(&self) -> bool {
        false
    }

    /// Whether the action is risky enough that a snapshot is taken before
    /// it (when the context can take one). Default: `false`.
    fn risky(&self) -> bool {
        false
    }

    /// The host action it needs, if any. A remedy whose action the host's
    /// [`HostActions::supports`] denies is never planned. Default: none.
    fn host_action(&self) -> Option<HostAction> {
        None
    }

    /// Whether the context has what it acts on (a remedy over the snapshot
    /// manager, when there is none, is not planned). Default: `true`.
    fn available(&self, ctx: &RemedyContext) -> bool {
        let _ = ctx;
        true
    }
}

/// Takes a consistent snapshot with the host's write gate and LSN (only
/// the host knows them): see
/// [snapshot consistency](crate::snapshot#consistency).
pub type SnapshotTaker = Arc<dyn Fn(&StateSnapshotManager) -> Result<SnapshotReport> + Send + Sync>;

/// What a remedy can reach: the library's components the host built, its
/// actions, and the clock. Every component is optional.
#[derive(Clone)]
#[must_use]
pub struct RemedyContext {
    detector: Option<Arc<CorruptionDetector>>,
    repairer: Option<Arc<DataRepairer>>,
    rollback: Option<Arc<TransactionRollbackManager>>,
    snapshots: Option<Arc<StateSnapshotManager>>,
    snapshot_taker: Option<SnapshotTaker>,
    health: Option<Arc<HealthMonitor>>,
    crash: Option<Arc<CrashDetector>>,
    host: Option<Arc<dyn HostActions>>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RemedyContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemedyContext")
            .field("detector", &self.detector.is_some())
            .field("repairer", &self.repairer.is_some())
            .field("rollback", &self.rollback.is_some())
            .field("snapshots", &self.snapshots.is_some())
            .field("snapshot_taker", &self.snapshot_taker.is_some())
            .field("health", &self.health.is_some())
            .field("crash", &self.crash.is_some())
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Default for RemedyContext {
    fn default() -> Self {
        Self::new()
    }
}

/// The error a remedy gets when the component it needs is not in the context.
fn missing(field: &'static str, what: &str) -> Error {
    Error::config(
        field,
        format!("the remedy needs {what}; hand one to RemedyContext::{field}"),
    )
}

impl RemedyContext {
    /// An empty context on the system clock.
    pub fn new() -> Self {
        RemedyContext {
            detector: None,
            repairer: None,
            rollback: None,
            snapshots: None,
            snapshot_taker: None,
            health: None,
            crash: None,
            host: None,
            clock: SystemClock::shared(),
        }
    }

    /// The corruption detector over the host's store. A context built with
    /// one takes the detector's clock unless [`clock`](Self::clock) comes
    /// after.
    pub fn detector(mut self, detector: Arc<CorruptionDetector>) -> Self {
        self.clock = detector.clock().clone();
        self.detector = Some(detector);
        self
    }

    /// The repairer (replica copies).
    pub fn repairer(mut self, repairer: Arc<DataRepairer>) -> Self {
        self.repairer = Some(repairer);
        self
    }

    /// The rollback manager.
    pub fn rollback(mut self, rollback: Arc<TransactionRollbackManager>) -> Self {
        self.rollback = Some(rollback);
        self
    }

    /// The snapshot manager (single pages from its head; a snapshot before
    /// a risky remedy when a [`snapshot_taker`](Self::snapshot_taker) is
    /// given too).
    pub fn snapshots(mut self, snapshots: Arc<StateSnapshotManager>) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// How to take a consistent snapshot (the host pauses its gate and
    /// gives its LSN).
    pub fn snapshot_taker(mut self, taker: SnapshotTaker) -> Self {
        self.snapshot_taker = Some(taker);
        self
    }

    /// The health monitor: the healer checks that health is no worse after
    /// each remedy, and undoes one that made it worse.
    pub fn health(mut self, health: Arc<HealthMonitor>) -> Self {
        self.health = Some(health);
        self
    }

    /// The crash detector: a component restart verifies by its heartbeats.
    pub fn crash(mut self, crash: Arc<CrashDetector>) -> Self {
        self.crash = Some(crash);
        self
    }

    /// The host's actions.
    pub fn host(mut self, host: Arc<dyn HostActions>) -> Self {
        self.host = Some(host);
        self
    }

    /// The clock of every time decision (default: the detector's if given,
    /// else the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The corruption detector, if given.
    #[must_use]
    pub fn detector_ref(&self) -> Option<&Arc<CorruptionDetector>> {
        self.detector.as_ref()
    }

    /// The clock.
    #[must_use]
    pub fn clock_ref(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The health monitor, if given.
    #[must_use]
    pub fn health_ref(&self) -> Option<&Arc<HealthMonitor>> {
        self.health.as_ref()
    }

    /// The snapshot manager, if given.
    #[must_use]
    pub fn snapshots_ref(&self) -> Option<&Arc<StateSnapshotManager>> {
        self.snapshots.as_ref()
    }

    /// The crash detector, if given.
    #[must_use]
    pub fn crash_ref(&self) -> Option<&Arc<CrashDetector>> {
        self.crash.as_ref()
    }

    /// The host's actions, if given.
    #[must_use]
    pub fn host_ref(&self) -> Option<&Arc<dyn HostActions>> {
        self.host.as_ref()
    }

    /// The detector, or the error a remedy that needs one returns.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the missing component.
    pub fn need_detector(&self) -> Result<&Arc<CorruptionDetector>> {
        self.detector
            .as_ref()
            .ok_or_else(|| missing("detector", "a corruption detector"))
    }

    /// The repairer, or the error a remedy that needs one returns.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the missing component.
    pub fn need_repairer(&self) -> Result<&Arc<DataRepairer>> {
        self.repairer
            .as_ref()
            .ok_or_else(|| missing("repairer", "a data repairer"))
    }

    /// The rollback manager, or the error a remedy that needs one returns.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the missing component.
    pub fn need_rollback(&self) -> Result<&Arc<TransactionRollbackManager>> {
        self.rollback
            .as_ref()
            .ok_or_else(|| missing("rollback", "a transaction rollback manager"))
    }

    /// The snapshot manager, or the error a remedy that needs one returns.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the missing component.
    pub fn need_snapshots(&self) -> Result<&Arc<StateSnapshotManager>> {
        self.snapshots
            .as_ref()
            .ok_or_else(|| missing("snapshots", "a snapshot manager"))
    }

    /// The host's actions, or the error a remedy that needs them returns.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the missing component.
    pub fn need_host(&self) -> Result<&Arc<dyn HostActions>> {
        self.host
            .as_ref()
            .ok_or_else(|| missing("host", "the host's actions"))
    }

    /// Whether the host supports `action` (`false` without host actions).
    #[must_use]
    pub fn supports(&self, action: HostAction) -> bool {
        self.host.as_ref().is_some_and(|h| h.supports(action))
    }

    /// Takes a snapshot with the configured taker. `None` when the context
    /// has no snapshot manager or no taker (nothing to do).
    #[must_use]
    pub fn take_snapshot(&self) -> Option<Result<SnapshotReport>> {
        let (snaps, taker) = (self.snapshots.as_ref()?, self.snapshot_taker.as_ref()?);
        Some(taker(snaps))
    }
}
