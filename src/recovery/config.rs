//! [`RecoveryConfig`]: everything the [`AutoRecoveryManager`](super::AutoRecoveryManager) owns, in one
//! validated builder.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::checksum::{ChecksumPlacement, TableStorage};
use crate::clock::{Clock, SystemClock};
use crate::corruption::CorruptionConfig;
use crate::crash::CrashConfig;
use crate::error::{Error, Result};
use crate::healer::{default_rto, HealerConfig, Problem};
use crate::health::HealthConfig;
use crate::host::{HostActions, PageSource, PageStore, Replica};
use crate::repair::RepairConfig;
use crate::rollback::RollbackConfig;
use crate::scrub::ScrubConfig;
use crate::snapshot::{PeriodicConfig, SnapshotConfig, WriteGate};
use crate::types::{Lsn, Priority, Target};

/// How much the manager may do on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Diagnose, plan and report; change nothing (incidents close
    /// `Observed`). For trying the manager on production first. Startup
    /// recovery too only reports: the undo journal's losers (transactions
    /// in flight at a crash) are listed, not rolled back, and stay in
    /// flight until a start in another mode (or the host) rolls them back —
    /// see the manager's "Startup recovery first".
    Observe,
    /// Every remedy asks the host's approval callback first (an answer not
    /// given within the timeout is a no), except those on the allow-list.
    Approve,
    /// Act without asking.
    Automatic,
}

/// What a remedy is about to do, for the host to approve.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalRequest {
    /// What it acts on.
    pub target: Target,
    /// The diagnosed problem.
    pub problem: Problem,
    /// The remedy's name.
    pub remedy: String,
    /// The failure's priority.
    pub priority: Priority,
    /// The failure's evidence.
    pub evidence: String,
}

/// The host's approval in [`Mode::Approve`]: `true` lets the remedy run.
/// Called on a helper thread (`selfheal-approval`) with a deadline; an
/// answer after it is ignored (it counted as no).
pub type ApprovalCallback = Arc<dyn Fn(&ApprovalRequest) -> bool + Send + Sync>;

/// The LSN a periodic snapshot records (the host's last durable write).
pub type LsnFn = Arc<dyn Fn() -> Lsn + Send + Sync>;

pub(super) struct Periodic {
    pub(super) config: PeriodicConfig,
    pub(super) gate: Arc<WriteGate>,
    pub(super) lsn: LsnFn,
}

/// Configuration of an [`AutoRecoveryManager`](super::AutoRecoveryManager); every setter documents its
/// default. The manager gives every component it builds the **same**
/// failure bus and the **same** clock: a bus or clock set on a component's
/// own config here is replaced.
#[must_use]
pub struct RecoveryConfig {
    pub(super) store: Arc<dyn PageStore>,
    pub(super) dir: PathBuf,
    pub(super) detector: CorruptionConfig,
    pub(super) repair: RepairConfig,
    pub(super) replicas: Vec<Arc<dyn Replica>>,
    pub(super) fallbacks: Vec<Arc<dyn PageSource>>,
    pub(super) host: Option<Arc<dyn HostActions>>,
    pub(super) rollback: Option<RollbackConfig>,
    pub(super) scrub: Option<ScrubConfig>,
    pub(super) health: Option<HealthConfig>,
    pub(super) snapshots: Option<SnapshotConfig>,
    pub(super) periodic: Option<Periodic>,
    pub(super) crash: CrashConfig,
    pub(super) healer: HealerConfig,
    pub(super) mode: Mode,
    pub(super) approval: Option<ApprovalCallback>,
    pub(super) approval_timeout: Duration,
    pub(super) allow: HashSet<String>,
    pub(super) rto: [Duration; 4],
    pub(super) max_concurrent: usize,
    pub(super) queue_capacity: usize,
    pub(super) bus_capacity: usize,
    pub(super) aging: Duration,
    pub(super) drain_timeout: Duration,
    pub(super) stop_timeout: Duration,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) seed: u64,
    pub(super) audit: bool,
    pub(super) recent_capacity: usize,
    pub(super) thread_restarts: (u32, Duration),
    pub(super) suspect_storage: Option<Arc<dyn TableStorage>>,
    pub(super) snapshot_gate: Option<(Arc<WriteGate>, LsnFn)>,
    pub(super) audit_sync: Duration,
    pub(super) audit_storage: Option<Arc<dyn TableStorage>>,
    /// The audit log's segment size and total size, in bytes.
    pub(super) audit_bytes: (u64, u64),
    pub(super) heal_on_read: bool,
    pub(super) reescalate_after: Duration,
    pub(super) stepped: bool,
}

impl fmt::Debug for RecoveryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryConfig")
            .field("dir", &self.dir)
            .field("replicas", &self.replicas.len())
            .field("mode", &self.mode)
            .field("max_concurrent", &self.max_concurrent)
            .field("queue_capacity", &self.queue_capacity)
            .finish_non_exhaustive()
    }
}

/// Recovery threads at most.
pub const MAX_CONCURRENT_RECOVERIES: usize = 64;

/// Unread failures the shared bus may be configured to hold at most (its
/// slots are allocated when the manager is built).
pub const MAX_BUS_CAPACITY: usize = 1 << 20;

/// Open incidents the queue may be configured to hold at most.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 20;

impl RecoveryConfig {
    /// A manager over `store`, keeping its files in `dir` (the run marker,
    /// the undo journal in `dir/journal`, the learned records, the open
    /// incidents, the audit log in `dir/audit`).
    ///
    /// Defaults: checksum trailer in each page; no replica, fallback or
    /// host action; a scrubber with [`ScrubConfig::new`]'s defaults; no
    /// health monitor, no snapshots; [`Mode::Automatic`]; approval timeout
    /// 30 s; RTOs P0 30 s, P1 2 min, P2 5 min, P3 1 h; 2 recovery threads;
    /// 4 096 open incidents; a bus of 16 384 failures; aging 30 s per
    /// level; drain 10 s and join 5 s at stop; the system clock; seed 0;
    /// audit log on, synced at most every 20 ms, in 4 MiB segments and
    /// 64 MiB in all; the last 1 024 closed
    /// incidents kept; heal on read on.
    pub fn new(store: Arc<dyn PageStore>, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        RecoveryConfig {
            store,
            detector: CorruptionConfig::new(ChecksumPlacement::Trailer),
            repair: RepairConfig::new(),
            replicas: Vec::new(),
            fallbacks: Vec::new(),
            host: None,
            rollback: None,
            scrub: Some(ScrubConfig::new()),
            health: None,
            snapshots: None,
            periodic: None,
            crash: CrashConfig::new(),
            healer: HealerConfig::new(),
            mode: Mode::Automatic,
            approval: None,
            approval_timeout: Duration::from_secs(30),
            allow: HashSet::new(),
            rto: [
                default_rto(Priority::P0),
                default_rto(Priority::P1),
                default_rto(Priority::P2),
                default_rto(Priority::P3),
            ],
            max_concurrent: 2,
            queue_capacity: 4_096,
            bus_capacity: 16_384,
            aging: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(5),
            clock: SystemClock::shared(),
            seed: 0,
            audit: true,
            recent_capacity: 1_024,
            thread_restarts: (3, Duration::from_secs(60)),
            suspect_storage: None,
            snapshot_gate: None,
            audit_sync: Duration::from_millis(20),
            audit_storage: None,
            audit_bytes: (4 << 20, 64 << 20),
            heal_on_read: true,
            reescalate_after: super::escalated::DEFAULT_REESCALATE_AFTER,
            stepped: false,
            dir,
        }
    }

    /// Where page checksums live (default: a trailer in each page). Same as
    /// `detector(CorruptionConfig::new(placement))`.
    pub fn placement(mut self, placement: ChecksumPlacement) -> Self {
        self.detector = CorruptionConfig::new(placement);
        self
    }

    /// The corruption detector's configuration (default: trailer
    /// placement, no LSN or free-page callbacks).
    pub fn detector(mut self, config: CorruptionConfig) -> Self {
        self.detector = config;
        self
    }

    /// The repairer's configuration (default [`RepairConfig::new`]).
    pub fn repair(mut self, config: RepairConfig) -> Self {
        self.repair = config;
        self
    }

    /// Adds a replica that repairs read from.
    pub fn replica(mut self, replica: Arc<dyn Replica>) -> Self {
        self.replicas.push(replica);
        self
    }

    /// Adds a fallback page source (tried after the replicas).
    pub fn fallback(mut self, source: Arc<dyn PageSource>) -> Self {
        self.fallbacks.push(source);
        self
    }

    /// The host's actions (restart a component, clear caches, …) for
    /// remedies and the repairer (default: none).
    pub fn host_actions(mut self, host: Arc<dyn HostActions>) -> Self {
        self.host = Some(host);
        self
    }

    /// The undo journal's configuration (default
    /// `RollbackConfig::new(dir/journal)`; give
    /// [`RollbackConfig::with_storage`] for a journal elsewhere).
    pub fn rollback(mut self, config: RollbackConfig) -> Self {
        self.rollback = Some(config);
        self
    }

    /// The scrubber's configuration (default [`ScrubConfig::new`]).
    pub fn scrub(mut self, config: ScrubConfig) -> Self {
        self.scrub = Some(config);
        self
    }

    /// No background scrub (default: one runs).
    pub fn without_scrub(mut self) -> Self {
        self.scrub = None;
        self
    }

    /// A health monitor with these probes (default: none).
    pub fn health(mut self, config: HealthConfig) -> Self {
        self.health = Some(config);
        self
    }

    /// Snapshots kept by this configuration (default: none): the
    /// restore-a-page remedy reads them.
    pub fn snapshots(mut self, config: SnapshotConfig) -> Self {
        self.snapshots = Some(config);
        self
    }

    /// Periodic snapshots (needs [`snapshots`](Self::snapshots)): each
    /// pauses `gate` and records `lsn()`.
    pub fn periodic_snapshots(
        mut self,
        config: PeriodicConfig,
        gate: Arc<WriteGate>,
        lsn: LsnFn,
    ) -> Self {
        self.periodic = Some(Periodic { config, gate, lsn });
        self
    }

    /// How the manager takes a consistent snapshot on its own — before a
    /// risky remedy, and for the take-snapshot remedy: it pauses `gate` and
    /// records `lsn()` (needs [`snapshots`](Self::snapshots)). Without it,
    /// the gate and LSN of [`periodic_snapshots`](Self::periodic_snapshots)
    /// are used; with neither, a risky remedy notes that no snapshot could
    /// be taken before it.
    pub fn snapshot_gate(mut self, gate: Arc<WriteGate>, lsn: LsnFn) -> Self {
        self.snapshot_gate = Some((gate, lsn));
        self
    }

    /// The crash detector's configuration (heartbeat timeouts, process
    /// checks; default [`CrashConfig::new`]).
    pub fn crash(mut self, config: CrashConfig) -> Self {
        self.crash = config;
        self
    }

    /// The healer's rules, remedies and safety limits (default
    /// [`HealerConfig::new`]). Its seed, learned-records path, audit log,
    /// observe flag and action gate are set by the manager.
    pub fn healer(mut self, config: HealerConfig) -> Self {
        self.healer = config;
        self
    }

    /// How much the manager may do on its own (default
    /// [`Mode::Automatic`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The host's approval for [`Mode::Approve`], and how long an answer may
    /// take on the manager's [`clock`](Self::clock) (default: none, 30 s).
    pub fn approval(mut self, callback: ApprovalCallback, timeout: Duration) -> Self {
        self.approval = Some(callback);
        self.approval_timeout = timeout;
        self
    }

    /// Remedies that run without approval in [`Mode::Approve`] (default:
    /// none). Checked against the healer's remedies at `build`.
    pub fn allow_without_approval(mut self, remedies: &[&str]) -> Self {
        self.allow.extend(remedies.iter().map(|s| (*s).to_string()));
        self
    }

    /// The recovery time objective of `priority` (defaults P0 30 s, P1
    /// 2 min, P2 5 min, P3 1 h).
    pub fn rto(mut self, priority: Priority, rto: Duration) -> Self {
        self.rto[priority as usize] = rto;
        self
    }

    /// Incidents healed at once, each on its own thread
    /// (`selfheal-recovery-N`; default 2, at most
    /// [`MAX_CONCURRENT_RECOVERIES`]).
    pub fn max_concurrent_recoveries(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }

    /// Open incidents held at most (default 4 096; 1 to
    /// [`MAX_QUEUE_CAPACITY`]); beyond it failures are
    /// counted as overflow and pages are found again by an error-only
    /// rescan.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Unread failures the shared bus holds (default 16 384; 1 to
    /// [`MAX_BUS_CAPACITY`], allocated when the manager is built); beyond it the
    /// bus counts drops (see [`FailureSink`](crate::FailureSink)).
    pub fn bus_capacity(mut self, n: usize) -> Self {
        self.bus_capacity = n;
        self
    }

    /// Waiting this long makes a queued incident compete one priority
    /// level higher (default 30 s).
    pub fn aging(mut self, per_level: Duration) -> Self {
        self.aging = per_level;
        self
    }

    /// At `stop`, how long queued incidents may still be worked on (default
    /// 10 s), and how long each thread is then waited for (default 5 s).
    pub fn stop_timeouts(mut self, drain: Duration, join: Duration) -> Self {
        self.drain_timeout = drain;
        self.stop_timeout = join;
        self
    }

    /// The one clock of every component (default the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The seed of the healer's random draws (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Whether decisions and actions go to the audit log in `dir/audit`
    /// (default on).
    pub fn audit(mut self, on: bool) -> Self {
        self.audit = on;
        self
    }

    /// Closed incidents kept for [`AutoRecoveryManager::incidents`](super::AutoRecoveryManager::incidents)
    /// (default 1 024).
    pub fn recent_incidents(mut self, n: usize) -> Self {
        self.recent_capacity = n;
        self
    }

    /// Where the durable suspect registry (the file `suspects`, see
    /// [`suspects`](super::suspects)) is kept (default: `dir` itself). A
    /// test hands a crash-simulating storage here.
    pub fn suspect_storage(mut self, storage: Arc<dyn TableStorage>) -> Self {
        self.suspect_storage = Some(storage);
        self
    }

    /// How often the manager's own threads (the dispatcher, the recovery
    /// threads) may be restarted after a panic: at most `max_restarts`
    /// within `period`, all of them together (default 3 in 60 s; 1 to
    /// [`MAX_RESTARTS`](crate::healer::MAX_RESTARTS)). Beyond
    /// it a thread that dies is not restarted and its death is escalated.
    pub fn thread_restarts(mut self, max_restarts: u32, period: Duration) -> Self {
        self.thread_restarts = (max_restarts, period);
        self
    }

    /// How often, at most, the audit log is synced while records are
    /// written (default 20 ms): its appends are not synced one by one (see
    /// [`audit`](crate::audit)); the dispatcher syncs what was appended
    /// once this much time has passed since the last sync, and `stop` syncs
    /// the rest. A crash loses at most the records of the last interval
    /// (never a remedy's effect, which its own path made durable). Zero
    /// syncs every append before it returns (one fsync per record).
    pub fn audit_sync_interval(mut self, interval: Duration) -> Self {
        self.audit_sync = interval;
        self
    }

    /// The audit log's segment size and the most bytes it keeps (older
    /// segments are removed beyond it); default 4 MiB and 64 MiB. As
    /// [`AuditConfig::segment_bytes`](crate::audit::AuditConfig::segment_bytes)
    /// and [`max_bytes`](crate::audit::AuditConfig::max_bytes): a segment
    /// of at least 4 KiB, and at least two segments in all, checked at
    /// `build`.
    pub fn audit_bytes(mut self, segment_bytes: u64, max_bytes: u64) -> Self {
        self.audit_bytes = (segment_bytes, max_bytes);
        self
    }

    /// Where the audit log's segments are kept (default: `dir/audit`). A
    /// test hands a crash-simulating storage here.
    pub fn audit_storage(mut self, storage: Arc<dyn TableStorage>) -> Self {
        self.audit_storage = Some(storage);
        self
    }

    /// Whether a verified read through the manager's detector that finds
    /// its page failing verification heals the page on the reader's thread
    /// before it returns (default `true`; see the manager's "heal on read"
    /// and [`read_verified`](crate::CorruptionDetector::read_verified)).
    /// The reader then gets the page's good bytes instead of an error, and
    /// the heal costs no hand-off to a recovery thread; it is the same
    /// incident — diagnosed, verified, audited, counted — as one healed in
    /// the background. Off, the read returns its error and the page is
    /// healed in the background, as a scrub's finding is. Never in
    /// [`Mode::Observe`].
    pub fn heal_on_read(mut self, on: bool) -> Self {
        self.heal_on_read = on;
        self
    }

    /// How long an escalated page stays escalated: until then, reports of
    /// it in the same fault episode (a host reading it again) join the
    /// incident that escalated it instead of paging a person again; after
    /// it, the next report opens an incident (tried again, escalated again
    /// if nothing heals it). Default
    /// [`DEFAULT_REESCALATE_AFTER`](super::DEFAULT_REESCALATE_AFTER) (one
    /// hour); zero escalates every report. A page repaired, rewritten or
    /// freed by the host starts a new episode at once (see the manager's
    /// "Escalation").
    pub fn reescalate_after(mut self, interval: Duration) -> Self {
        self.reescalate_after = interval;
        self
    }

    /// Step mode (default off): [`start`](super::AutoRecoveryManager::start)
    /// runs startup recovery as always but starts neither the dispatcher
    /// nor any recovery thread, and the host
    /// drives the manager on its own thread with
    /// [`step`](super::AutoRecoveryManager::step) (see the manager's
    /// "Step mode"). Given the manager's clock and seed, what it does is
    /// then deterministic: for a simulator, a test, or a host with its own
    /// scheduler. The components with threads of their own are refused
    /// here ([`build`](Self::build) fails): give
    /// [`without_scrub`](Self::without_scrub) (the default scrubber is one)
    /// and no [`health`](Self::health) or
    /// [`periodic_snapshots`](Self::periodic_snapshots), and drive them by
    /// hand ([`Scrubber`](crate::scrub::Scrubber) built over the manager's
    /// detector and bus, snapshots taken by the host).
    /// [`max_concurrent_recoveries`](Self::max_concurrent_recoveries) is
    /// then only the number of approval helpers in [`Mode::Approve`].
    pub fn stepped(mut self, on: bool) -> Self {
        self.stepped = on;
        self
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.stepped {
            for (field, on, what) in [
                ("scrub", self.scrub.is_some(), "a background scrubber (the default one included); give RecoveryConfig::without_scrub and scrub by hand"),
                ("health", self.health.is_some(), "a health monitor's sampling thread; give none and sample health by hand"),
                ("periodic_snapshots", self.periodic.is_some(), "a periodic snapshots thread; give none and take snapshots by hand"),
            ] {
                if on {
                    return Err(Error::config(
                        field,
                        format!("step mode (RecoveryConfig::stepped) starts no thread, and this would start {what}"),
                    ));
                }
            }
        }
        if self.thread_restarts.0 == 0 || self.thread_restarts.1.is_zero() {
            return Err(Error::config(
                "thread_restarts",
                format!(
                    "is {} in {:?}; allow at least one restart in a positive period",
                    self.thread_restarts.0, self.thread_restarts.1
                ),
            ));
        }
        if self.max_concurrent == 0 || self.max_concurrent > MAX_CONCURRENT_RECOVERIES {
            return Err(Error::config(
                "max_concurrent_recoveries",
                format!(
                    "is {}; give 1 to {MAX_CONCURRENT_RECOVERIES}",
                    self.max_concurrent
                ),
            ));
        }
        for (field, n, max) in [
            ("queue_capacity", self.queue_capacity, MAX_QUEUE_CAPACITY),
            ("bus_capacity", self.bus_capacity, MAX_BUS_CAPACITY),
        ] {
            if n == 0 || n > max {
                return Err(Error::config(field, format!("is {n}; give 1 to {max}")));
            }
        }
        crate::healer::RestartIntensity::new(self.thread_restarts.0, self.thread_restarts.1)?;
        for (field, d) in [
            ("aging", self.aging),
            ("approval_timeout", self.approval_timeout),
            ("drain_timeout", self.drain_timeout),
            ("stop_timeout", self.stop_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::config(field, "is zero; give a positive duration"));
            }
        }
        if let Some(p) = self.rto.iter().position(Duration::is_zero) {
            return Err(Error::config(
                "rto",
                format!("the RTO of P{p} is zero; give a positive duration"),
            ));
        }
        if self.mode == Mode::Approve && self.approval.is_none() {
            return Err(Error::config(
                "approval",
                "Approve mode needs an approval callback; give one with RecoveryConfig::approval",
            ));
        }
        if self.periodic.is_some() && self.snapshots.is_none() {
            return Err(Error::config(
                "periodic_snapshots",
                "periodic snapshots need a snapshot configuration; give one with RecoveryConfig::snapshots",
            ));
        }
        // The healer is built at `start` (it acts through the components
        // started there), but its configuration and the allow-list are
        // checked now.
        let names = self.healer.remedy_names_checked()?;
        let mut allow: Vec<&String> = self.allow.iter().collect();
        allow.sort();
        if let Some(unknown) = allow.into_iter().find(|n| !names.contains(n)) {
            return Err(Error::config(
                "allow_without_approval",
                format!(
                    "names {unknown:?}, which no remedy is called; name one of the healer's remedies ({names:?})"
                ),
            ));
        }
        if self.dir.is_file() {
            return Err(Error::config(
                "dir",
                format!("{} is a file; give a directory", self.dir.display()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    fn field(cfg: RecoveryConfig) -> &'static str {
        match cfg.validate() {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn bad_configuration_is_a_typed_error() {
        let store: Arc<dyn PageStore> = Arc::new(MemStore::new(4096, 4).unwrap());
        let c = || RecoveryConfig::new(store.clone(), "/nonexistent-selfheal-dir");
        assert_eq!(
            field(c().max_concurrent_recoveries(0)),
            "max_concurrent_recoveries"
        );
        assert_eq!(
            field(c().max_concurrent_recoveries(65)),
            "max_concurrent_recoveries"
        );
        assert_eq!(field(c().queue_capacity(0)), "queue_capacity");
        assert_eq!(field(c().bus_capacity(0)), "bus_capacity");
        assert_eq!(field(c().bus_capacity(usize::MAX)), "bus_capacity");
        assert_eq!(
            field(c().bus_capacity(MAX_BUS_CAPACITY + 1)),
            "bus_capacity"
        );
        assert_eq!(field(c().queue_capacity(usize::MAX)), "queue_capacity");
        assert_eq!(
            field(c().allow_without_approval(&["no-such-remedy"])),
            "allow_without_approval"
        );
        assert_eq!(
            field(c().healer(HealerConfig::new().max_attempts(0))),
            "max_attempts"
        );
        assert!(c()
            .allow_without_approval(&["repair-from-replicas"])
            .validate()
            .is_ok());
        assert_eq!(
            field(c().thread_restarts(u32::MAX, Duration::from_secs(1))),
            "max_restarts"
        );
        assert_eq!(field(c().aging(Duration::ZERO)), "aging");
        assert_eq!(field(c().rto(Priority::P2, Duration::ZERO)), "rto");
        assert_eq!(field(c().mode(Mode::Approve)), "approval");
        assert_eq!(
            field(c().stop_timeouts(Duration::ZERO, Duration::from_secs(1))),
            "drain_timeout"
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(
            field(RecoveryConfig::new(store.clone(), file.path())),
            "dir"
        );
        assert!(c().validate().is_ok());
    }
}
