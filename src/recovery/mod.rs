//! `AutoRecoveryManager`: the crate's front door. It owns every component,
//! recovers at start, and runs the self-healing loop on a bounded queue of
//! incidents until it is stopped.
//!
//! Built with [`RecoveryConfig::new`]`(store, dir)…`[`build`](RecoveryConfig::build),
//! the manager gives the corruption detector, scrubber, repairer, rollback
//! manager, snapshot manager, crash detector and health monitor **one**
//! [`FailureSink`] and **one** [`Clock`]. A dispatcher thread
//! (`selfheal-recovery-dispatch`) drains the bus into the incident queue;
//! `max_concurrent_recoveries` threads (`selfheal-recovery-N`) hand each
//! incident to the [`SelfHealer`], which diagnoses, acts, verifies and
//! learns. Both kinds run on the crate's one worker lifecycle, restarted by the
//! manager when they die.
//!
//! # Contract
//! - **Startup recovery first.** [`start`](AutoRecoveryManager::start) reads
//!   the run marker's verdict (a crash is reported as
//!   [`FailureKind::UncleanShutdown`]), builds the rollback manager — whose
//!   recovery rolls back the undo journal's losers — and re-verifies every
//!   page those transactions touched (a page that fails is fenced and
//!   becomes an incident); only then do the scrubber, crash watchdog,
//!   health monitor and periodic snapshots start. In [`Mode::Observe`] the
//!   journal is opened report-only
//!   ([`defer_recovery`](crate::rollback::RollbackConfig::defer_recovery)):
//!   the losers are found and reported — in
//!   [`StartupReport::rollback`]`.deferred` (each transaction with its
//!   pages) and as a [`FailureKind::InFlightAtCrash`] whose evidence names
//!   them, an incident observed, audited and announced like any other —
//!   and the store is left as the crash left it. They stay in flight in
//!   the journal and pending in the rollback manager (no new transaction
//!   may write their pages meanwhile): the next start in another mode rolls
//!   them back, or the host does now with
//!   [`rollback`](crate::rollback::TransactionRollbackManager::rollback).
//! - **One incident per target.** A failure about a target with an open
//!   incident joins it ([`Incident::join`]); one that arrives while the
//!   incident is being healed joins it too, and for a page that was healed
//!   the page is then re-checked — a page bad again opens a new incident.
//! - **Escalation.** An escalated page is escalated once per fault: a later
//!   report of it (a host reading the irreparable page again) joins the
//!   incident that escalated it — counted in [`RecoveryStats::joined`],
//!   announced as [`RecoveryEvent::Joined`] — until the page is healed,
//!   rewritten or freed by the host (a new fault is a new incident) or
//!   [`reescalate_after`](RecoveryConfig::reescalate_after) has passed
//!   (default one hour; then it is tried again, and escalated again if
//!   nothing heals it). The record is durable (`dir/escalated`, see
//!   [`escalated_file`](mod@escalated_file) — saved whenever an incident
//!   is escalated, one of its pages healed, or one acknowledged): after a
//!   restart the page, fenced again by the suspect registry, joins its old
//!   escalation rather than being tried and escalated from scratch, and
//!   the host still lists every escalated incident with its report
//!   ([`escalated`](AutoRecoveryManager::escalated)) until it
//!   acknowledges it
//!   ([`acknowledge_escalation`](AutoRecoveryManager::acknowledge_escalation);
//!   the page's next report is then tried again).
//! - **Most urgent first, none starved**: P0 first; a queued incident
//!   competes one level higher per [`aging`](RecoveryConfig::aging) waited.
//! - **Bounded.** At most [`queue_capacity`](RecoveryConfig::queue_capacity)
//!   incidents are open. A failure beyond it is counted
//!   ([`RecoveryStats::overflowed`]) and reported as
//!   [`RecoveryEvent::Overflowed`]; a page's failure waits in a page
//!   backlog of at most 4 × `queue_capacity` failures and opens its
//!   incident as soon as one closes (no second read of the page); a page
//!   beyond the backlog is found again by an error-only rescan (the
//!   detector's suspect pages rechecked) once the queue has room. A
//!   failure of another target (a component, a metric, a process: reported
//!   once per episode, found by no rescan) is held, one per target (repeats
//!   coalesce), for at most 256 targets, and opens its incident before the
//!   backlog's pages as soon as one closes; only one beyond that bound is
//!   counted, logged and lost. The bus itself is bounded too
//!   ([`RecoveryStats::bus_dropped`]).
//! - **Heal on read** ([`heal_on_read`](RecoveryConfig::heal_on_read),
//!   default on, never in Observe mode): a verified read through the
//!   manager's detector that finds its page bad (or fenced) heals it on the
//!   reader's thread — the page's one incident, opened or taken from the
//!   queue, diagnosed, repaired, verified, audited and announced as on a
//!   recovery thread — and returns the good bytes; a reader whose page
//!   another thread is healing waits for that incident (at most 5 s) and
//!   reads again, and a reader whose page was healed since its read found
//!   it bad reads again. Reads inside a remedy never heal on read. The
//!   reader does not wait for the bookkeeping of the close: a healed
//!   incident leaves the queue before the read returns, and its closing
//!   audit records, counts, `Healed` event and place among the recent
//!   incidents are recorded by the dispatcher within its tick (20 ms), or
//!   at once by [`stats`](AutoRecoveryManager::stats),
//!   [`incidents`](AutoRecoveryManager::incidents),
//!   [`wait_idle`](AutoRecoveryManager::wait_idle) and `stop`.
//! - **Modes.** [`Mode::Observe`] decides and reports and never acts: it
//!   changes nothing in the store, at startup included (the journal's
//!   losers are reported, not rolled back). No incident is acted on, no
//!   page is repaired, no host action is called. The manager
//!   writes its own files (run marker, journal, incidents, learned
//!   records, suspects, audit log) in every mode;
//!   [`Mode::Approve`] asks the host before every remedy not on the
//!   allow-list, and no answer within the timeout (on the manager's
//!   clock) is a no;
//!   [`Mode::Automatic`] acts.
//! - **Events never block recovery**: a slow subscriber loses events,
//!   counted ([`Subscription::dropped`]).
//! - **A stalled journal resumes on its own.** A retryable journal failure
//!   ([`FailureKind::JournalStalled`]) is diagnosed `journal-full` (no
//!   space) or `journal-stalled` and healed by `resume-journal`: for a full
//!   disk it trims snapshots to the newest and asks the host to free space
//!   first, then resumes the journal and verifies by appending and syncing
//!   a record. While the resume fails (the disk still full), the
//!   dispatcher reports the stall again after each backoff (see
//!   [a stalled journal](crate::rollback#a-stalled-journal)) and the next
//!   incident tries again. In Observe mode nothing is resumed.
//!   A stalled checksum table log
//!   ([`FailureKind::ChecksumLogStalled`], from the detector) is diagnosed
//!   `checksum-log-stalled` and healed by `resume-checksum-log` the same
//!   way (room first when the disk is full); the table also resumes on its
//!   own at its next change once its backoff has passed (in every mode: it
//!   is the table's own behaviour, see
//!   [a stalled log](crate::checksum#a-stalled-log)). A failed snapshot
//!   ([`FailureKind::SnapshotFailed`]) leaves the snapshot manager working;
//!   the periodic thread retries after its backoff.
//! - **Stop is bounded.** [`stop`](AutoRecoveryManager::stop) stops the
//!   background components, lets queued incidents be worked on for the
//!   drain timeout, joins each thread for at most the join timeout (one
//!   that does not end is left detached and reported as an error), saves
//!   the open incidents, closes the journal and marks a clean stop in the
//!   run marker — only when every thread ended. Drop does the same without
//!   marking a clean stop.
//! - **Incidents survive a restart.** Open incidents are saved in
//!   `dir/incidents` (crash-safely, see [`persist`](mod@persist)) whenever
//!   the set changes and at stop, and are resumed under their old ids at the
//!   next start; the healer's learned records are kept in `dir/learned`,
//!   written at most every
//!   [`learned_save_interval`](crate::healer::HealerConfig::learned_save_interval)
//!   (default 1 s) and at stop: a crash loses at most that interval's
//!   learning.
//! - **The audit log commits in groups.** Its appends are not synced one
//!   by one; the dispatcher syncs what was appended at most every
//!   [`audit_sync_interval`](RecoveryConfig::audit_sync_interval) (default
//!   20 ms), and `stop` syncs the rest. A crash loses at most the records of
//!   the last interval — a prefix of the log survives, chained, with no
//!   hole — and never a remedy's effect, which the remedy's own path made
//!   durable. The healer appends an incident's decision before its remedy
//!   acts (write-ahead, see [`audit`](crate::audit)): a process crash never
//!   leaves an effect without its decision on record.
//! - **Pages known bad stay fenced across a restart.** The detector's
//!   fenced pages are kept in `dir/suspects` (see [`suspects`](mod@suspects)),
//!   fenced again when the next manager is built — before the host can read
//!   them — and each given an incident at start. A damaged file is a
//!   warning ([`StartupReport::suspects_warning`]) and an error-only
//!   re-check of the pages it still names; a file missing from a directory
//!   used before is a warning naming it and an error-only re-check of
//!   every page.
//! - **A panic loses nothing and stops nothing.** The dispatcher and the
//!   recovery threads are supervised workers: a panic anywhere on one (a
//!   host callback, a store read, not only a remedy) is reported as a
//!   [`FailureKind::WorkerDied`] of the `"recovery manager"`, the incidents
//!   it held are queued again (one that has cost two threads is escalated
//!   with a report), and the thread is restarted — at most
//!   [`thread_restarts`](RecoveryConfig::thread_restarts) times in their
//!   period; beyond that its death is escalated. Each restart is an
//!   incident healed by `restart-recovery-thread`.
//! - **A burst is one incident per page set.** Page incidents ready
//!   together (up to 256, none retried after a thread died; those resumed
//!   from the previous run too, re-checked first) go to one
//!   [`SelfHealer::heal_batch`]: those of one diagnosis whose plan starts
//!   with `repair-from-replicas` become one page-set incident (a new id;
//!   one diagnosis, one repair batch with one sync, one verification pass,
//!   one audit record per step listing the pages), into which the pages'
//!   own incidents are merged ([`RecoveryEvent::Merged`],
//!   [`RecoveryStats::merged`]); a page the set did not heal goes on in
//!   its own incident, under its own id, and is escalated with its own
//!   report when nothing heals it. Open incidents are saved per page, so a
//!   set cut short by a crash is resumed page by page and healed as a set
//!   again. [`RecoveryStats::pages_healed`] counts pages,
//!   [`RecoveryStats::recovered`] incidents.
//! - **Step mode** ([`stepped`](RecoveryConfig::stepped)): no dispatcher
//!   and no recovery thread; a scrubber, health monitor or periodic
//!   snapshots are refused at build. The host calls [`step`](AutoRecoveryManager::step): on its
//!   thread, one dispatcher pass, then every ready incident healed in the
//!   recovery threads' batches, by the same code. Given the manager's
//!   clock and seed it is deterministic (the contract is on
//!   [`AutoRecoveryManager::step`]).
//! - **A risky remedy is preceded by a snapshot** when the manager can take
//!   one consistently ([`snapshot_gate`](RecoveryConfig::snapshot_gate), or
//!   the gate of [`periodic_snapshots`](RecoveryConfig::periodic_snapshots)).
//!
//! # Metrics
//! Through the [`metrics`](https://docs.rs/metrics) facade: a host installs
//! any recorder (Prometheus, StatsD, …); without one they cost nothing.
//!
//! | name | kind | unit | labels |
//! |------|------|------|--------|
//! | `selfheal_incidents_opened_total` | counter | incidents | `priority` |
//! | `selfheal_incidents_healed_total` | counter | incidents | `priority` |
//! | `selfheal_incidents_escalated_total` | counter | incidents | `priority` |
//! | `selfheal_incidents_observed_total` | counter | incidents | `priority` |
//! | `selfheal_failures_overflowed_total` | counter | failures | — |
//! | `selfheal_remedy_attempts_total` | counter | attempts (not one that found its target healthy and did nothing) | `remedy`, `outcome` (`healed`/`failed`) |
//! | `selfheal_recovery_duration_seconds` | histogram | seconds, detection to verified heal | `priority` |
//! | `selfheal_rto_total` | counter | healed and escalated incidents (an escalation is a miss) | `priority`, `met` (`yes`/`no`) |
//! | `selfheal_incidents_open` | gauge | incidents | — |
//! | `selfheal_health_score` | gauge | score 0–100 | — |
//! | `selfheal_pages_corrupt_total` | counter | pages (each report of a page found corrupt by the detector) | — |
//! | `selfheal_pages_repaired_total` | counter | pages written verified by the repairer | — |
//! | `selfheal_rollbacks_total` | counter | transactions rolled back | `reason` (`request`: `rollback`/`rollback_all`; `recovery`: losers rolled back at open) |
//! | `selfheal_snapshots_total` | counter | snapshots | `outcome` (`ok`/`failed`) |
//! | `selfheal_snapshot_bytes` | histogram | bytes, each snapshot file written | — |
//!
//! Each component describes its metrics (unit and text, `Unit::Count`,
//! `Unit::Seconds`, `Unit::Bytes`) to the installed recorder when it is
//! built. The pages, rollbacks and snapshots metrics come from the
//! components themselves, so they are emitted with or without the manager.
//!
//! Every incident healed on its own runs in a `tracing` span `incident`
//! with its `id`, `target` and `priority` (and `on_read` when healed on a
//! reader's thread); page incidents healed together in one batch run in
//! one span `incidents` with the `first` id, the `count` and the
//! `priority` (each incident's id is in its audit records and events).
//! Each remedy attempt runs in a child span `remedy` with its `name`;
//! each remedy's action is logged in it.

mod closing;
mod config;
mod escalated;
pub mod escalated_file;
mod events;
mod filing;
mod inline;
pub mod persist;
mod queue;
mod rejoin;
mod run;
mod state;
mod stats;
mod step;
pub mod suspects;
mod threads;

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::audit::{AuditConfig, AuditLog};
use crate::checksum::{ChecksumPlacement, DirTableStorage, TableStorage};
use crate::corruption::{CorruptionConfig, CorruptionDetector};
use crate::crash::{CrashDetector, RunMarker};
use crate::error::{Error, Result};
use crate::healer::{Incident, SelfHealer};
use crate::health::HealthMonitor;
use crate::repair::DataRepairer;
use crate::rollback::TransactionRollbackManager;
use crate::snapshot::StateSnapshotManager;
use crate::types::{FailureSink, Priority};

pub use config::{
    ApprovalCallback, ApprovalRequest, LsnFn, Mode, RecoveryConfig, MAX_BUS_CAPACITY,
    MAX_CONCURRENT_RECOVERIES, MAX_QUEUE_CAPACITY,
};
pub use escalated::{EscalatedIncident, DEFAULT_REESCALATE_AFTER, MAX_REPORTS};
pub use events::{RecoveryEvent, Subscription, MAX_SUBSCRIBERS, MAX_SUBSCRIPTION_CAPACITY};
pub use state::{AutoRecoveryManager, StartupReport};
pub use stats::{RecoveryStats, RemedyStats};
pub use step::{StepReport, STEP_BATCHES_MAX};

#[cfg(doc)]
use crate::clock::Clock;
#[cfg(doc)]
use crate::types::{FailureKind, Target};

use escalated::{Escalations, MAX_ESCALATED};
use queue::IncidentQueue;

/// Page failures the backlog holds beyond the queue's bound, per open
/// incident the queue may hold.
const BACKLOG_PER_SLOT: usize = 4;
use state::{Inner, Pending, Running, AUDIT_DIR, ESCALATED_FILE, INCIDENTS_FILE};
use stats::Tally;

impl std::fmt::Debug for AutoRecoveryManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoRecoveryManager")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl RecoveryConfig {
    /// Validates, opens the run marker in `dir` (reading the previous run's
    /// verdict), and builds the detector, repairer, snapshot manager and
    /// health monitor on one failure bus and one clock. Nothing runs and
    /// nothing is recovered until [`AutoRecoveryManager::start`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad setting (named by `field`), the
    /// healer's configuration included (checked here, though the healer is
    /// built at `start`) and an allow-list naming no remedy; the
    /// components' own configuration errors; [`Error::Io`] when `dir`
    /// cannot be created; the run marker's lock error when another manager
    /// uses `dir`.
    pub fn build(self) -> Result<AutoRecoveryManager> {
        crate::telemetry::describe();
        self.validate()?;
        AutoRecoveryManager::build(self)
    }
}

impl AutoRecoveryManager {
    fn build(mut cfg: RecoveryConfig) -> Result<AutoRecoveryManager> {
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| Error::io(format!("creating directory {}", cfg.dir.display()), e))?;
        let (marker, verdict) = RunMarker::open(&cfg.dir)?;
        let clock = cfg.clock.clone();
        let sink = FailureSink::new(cfg.bus_capacity);
        let detector = Arc::new(
            std::mem::replace(
                &mut cfg.detector,
                CorruptionConfig::new(ChecksumPlacement::Trailer),
            )
            .failure_sink(sink.clone())
            .clock(clock.clone())
            .build(cfg.store.clone())?,
        );
        let suspect_storage: Arc<dyn TableStorage> = match cfg.suspect_storage.take() {
            Some(s) => s,
            None => Arc::new(DirTableStorage::new(&cfg.dir)),
        };
        let used_before = !matches!(verdict, crate::crash::RunVerdict::FirstRun);
        let restored = suspects::restore(suspect_storage.as_ref(), &detector, used_before);
        let suspects = suspects::SuspectFile::new(suspect_storage, &detector);
        let mut repair = std::mem::take(&mut cfg.repair).clock(clock.clone());
        if let Some(h) = &cfg.host {
            repair = repair.host_actions(h.clone());
        }
        let repairer = Arc::new(repair.build(detector.clone())?);
        for r in &cfg.replicas {
            repairer.add_replica(r.clone())?;
        }
        for s in &cfg.fallbacks {
            repairer.add_fallback(s.clone())?;
        }
        let snapshots = match cfg.snapshots.take() {
            Some(s) => Some(Arc::new(
                s.clock(clock.clone()).failure_sink(sink.clone()).build()?,
            )),
            None => None,
        };
        let health = match cfg.health.take() {
            Some(h) => Some(Arc::new(
                h.failure_sink(sink.clone()).clock(clock.clone()).build()?,
            )),
            None => None,
        };
        let audit = if cfg.audit {
            let ac = AuditConfig::new()
                .segment_bytes(cfg.audit_bytes.0)
                .max_bytes(cfg.audit_bytes.1)
                .clock(clock.clone())
                .sync_every_append(cfg.audit_sync.is_zero());
            Some(Arc::new(match cfg.audit_storage.take() {
                Some(s) => ac.open_on(s)?,
                None => ac.open(&cfg.dir.join(AUDIT_DIR))?,
            }))
        } else {
            None
        };
        // The escalations of previous runs, before any report can join them.
        let escalated_path = cfg.dir.join(ESCALATED_FILE);
        let mut escalations = Escalations::new(cfg.reescalate_after, MAX_ESCALATED);
        let restored_escalations = match escalated_file::load(&escalated_path, clock.now_ns()) {
            Ok(list) => {
                let n = list.len() as u64;
                escalations.restore(list);
                (n, None)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the escalated incidents cannot be read; starting without them");
                (0, Some(e.to_string()))
            }
        };
        let inner = Arc::new(Inner {
            clock,
            sink,
            detector,
            healer: RwLock::new(None),
            health,
            queue: Mutex::new(
                IncidentQueue::new(
                    cfg.queue_capacity,
                    u64::try_from(cfg.aging.as_nanos()).unwrap_or(u64::MAX),
                    // Never an id a kept escalation has.
                    escalations.max_id() + 1,
                )
                .with_backlog(cfg.queue_capacity.saturating_mul(BACKLOG_PER_SLOT)),
            ),
            work: Condvar::new(),
            events: events::Events::default(),
            tally: Mutex::new(Tally::default()),
            recent: Mutex::new(VecDeque::new()),
            recent_capacity: cfg.recent_capacity,
            rto: cfg.rto,
            incidents_path: cfg.dir.join(INCIDENTS_FILE),
            draining: AtomicBool::new(false),
            bus_closed: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            marker: Mutex::new(Some(marker)),
            rescans: std::sync::atomic::AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            threads: Mutex::new(state::Supervision {
                slots: Vec::new(),
                intensity: crate::healer::RestartIntensity::new(
                    cfg.thread_restarts.0,
                    cfg.thread_restarts.1,
                )?,
            }),
            deaths: Mutex::new(Vec::new()),
            suspects,
            filed: std::sync::atomic::AtomicU64::new(0),
            closing: std::sync::atomic::AtomicU64::new(0),
            closes: Mutex::new(Vec::new()),
            recording: Mutex::new(()),
            audit: audit.clone(),
            audit_sync: cfg.audit_sync,
            heal_on_read: cfg.heal_on_read,
            escalations: Mutex::new(escalations),
            escalated_path,
            escalated_save: Mutex::new(()),
            acting: cfg.mode != Mode::Observe,
            rollback: Mutex::new(None),
            finished: Condvar::new(),
        });
        Ok(AutoRecoveryManager {
            inner,
            repairer: repairer.clone(),
            snapshots: snapshots.clone(),
            audit: audit.clone(),
            drain_timeout: cfg.drain_timeout,
            stop_timeout: cfg.stop_timeout,
            stepped: cfg.stepped,
            stepper: Mutex::new(None),
            pending: Mutex::new(Some(Pending {
                cfg,
                repairer,
                snapshots,
                audit,
                verdict,
                restored,
                escalations: restored_escalations,
            })),
            running: Mutex::new(Running::default()),
            startup: Mutex::new(None),
        })
    }

    /// Runs startup recovery, then starts the background work (see the
    /// module docs) and returns what startup recovery found.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when already started (or stopped); the
    /// rollback manager's open errors
    /// (journal damage its recovery mode refuses, I/O); [`Error::Io`] when
    /// a thread cannot be spawned. On an error nothing is left running.
    pub fn start(&self) -> Result<StartupReport> {
        let Some(p) = self.pending.lock().take() else {
            return Err(Error::InvalidArgument {
                what: "start",
                reason: "the manager was started already; build a new one to start again".into(),
            });
        };
        run::start(self, p)
    }

    /// What startup recovery found, once [`start`](Self::start) ran.
    #[must_use]
    pub fn startup_report(&self) -> Option<StartupReport> {
        self.startup.lock().clone()
    }

    /// Stops (see the module docs): the background components, a bounded
    /// drain of queued incidents, the threads (each joined for at most the
    /// join timeout), the open incidents saved, the journal closed, and a
    /// clean stop marked in the run marker. Idempotent.
    ///
    /// # Errors
    /// [`Error::Stopped`] naming the threads that did not end in time (the
    /// run is then **not** marked clean: the next start runs recovery);
    /// the first error of stopping a component, saving or marking.
    pub fn stop(&self) -> Result<()> {
        run::stop(self, run::Ending::Clean)
    }

    /// Ends the manager as if its process were killed, for a simulated
    /// crash: its threads (and the crash watchdog's) are ended and the
    /// background components stopped as [`stop`](Self::stop) stops them (a
    /// scrubber's stop saves its cursor), and nothing else is drained,
    /// saved, synced or marked — the open incidents, the suspect
    /// registry, the learned records and the audit log's unsynced records
    /// keep what their last save made durable, and the run marker stays
    /// "running", so the next start finds a crash. The directory's lock
    /// (the run marker's) is released; the snapshot directory's lock is
    /// held until the last handle of the snapshot manager is dropped (the
    /// repairer's fallback holds one). The components the manager built are
    /// dropped as they are (their own drops may still write; a simulated
    /// disk armed to fail first sees those writes fail, as after a kill).
    /// Later calls, `stop` and Drop do nothing.
    ///
    /// # Errors
    /// [`Error::Stopped`] naming the threads that did not end within the
    /// join timeout (they are left detached, and the directory stays locked
    /// while they live); else the first error of stopping a background
    /// component or the crash watchdog.
    #[cfg(feature = "testing")]
    #[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
    pub fn abandon(&self) -> Result<()> {
        run::stop(self, run::Ending::Killed)
    }

    /// Subscribes to incident events, at most `capacity` unread (see
    /// [`Subscription`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero capacity, one above
    /// [`MAX_SUBSCRIPTION_CAPACITY`], or when [`MAX_SUBSCRIBERS`]
    /// subscriptions are held.
    pub fn subscribe(&self, capacity: usize) -> Result<Subscription> {
        self.inner.events.subscribe(capacity)
    }

    /// The counters, MTTR, RTO compliance and per-remedy success so far
    /// (walks the open incidents, to count those past their RTO). Closes of
    /// incidents healed on read that the dispatcher has not recorded yet
    /// are recorded first, on this thread (their closing audit records
    /// appended, their events sent), so the counts include them.
    #[must_use]
    pub fn stats(&self) -> RecoveryStats {
        closing::record_closes(&self.inner);
        let mut s = self.inner.tally.lock().stats.clone();
        let q = self.inner.queue.lock();
        s.open = q.len() as u64;
        s.open_past_rto = q.past_rto(self.inner.clock.now_ns(), &self.inner.rto);
        s.overflowed = q.overflowed;
        drop(q);
        s.bus_dropped = self.inner.sink.dropped();
        s.events_dropped = self
            .inner
            .events
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed);
        s.rescans = self
            .inner
            .rescans
            .load(std::sync::atomic::Ordering::Relaxed);
        s
    }

    /// The escalated incidents kept until the host acknowledges them —
    /// those of previous runs included (read back at build) — by id, each
    /// with its report (see the module docs, "Escalation").
    #[must_use]
    pub fn escalated(&self) -> Vec<EscalatedIncident> {
        self.inner.escalations.lock().list()
    }

    /// Acknowledges escalated incident `id`: it is no longer kept or
    /// listed, and its pages' next reports open incidents again (they are
    /// tried, and escalated again if nothing heals them). Saved before it
    /// returns. Returns whether the incident was kept.
    ///
    /// # Errors
    /// [`Error::Io`] when the escalated-incidents file cannot be written:
    /// the incident is acknowledged in this run but would be listed again
    /// after a restart; call again to retry the save.
    pub fn acknowledge_escalation(&self, id: u64) -> Result<bool> {
        let kept = self.inner.escalations.lock().acknowledge(id);
        rejoin::save(&self.inner)?;
        Ok(kept)
    }

    /// The last closed incidents (oldest first), each with its timeline.
    /// Closes of incidents healed on read not recorded yet are recorded
    /// first, on this thread, as [`stats`](Self::stats) does.
    #[must_use]
    pub fn incidents(&self) -> Vec<Incident> {
        closing::record_closes(&self.inner);
        self.inner.recent.lock().iter().cloned().collect()
    }

    /// The RTO of `priority`.
    #[must_use]
    pub fn rto(&self, priority: Priority) -> Duration {
        self.inner.rto_of(priority)
    }

    /// Whether no incident is queued or running and every failure sent on
    /// the bus has been filed (deferred incidents may remain).
    #[must_use]
    pub fn is_idle(&self) -> bool {
        let sink = &self.inner.sink;
        // Read before the queue: a failure taken off the bus is counted only
        // once it is in the queue, so none is between the two unseen.
        let filed = self.inner.filed.load(std::sync::atomic::Ordering::Acquire);
        filed + sink.dropped() >= sink.sent()
            && sink.failures().is_empty()
            && self.inner.queue.lock().is_idle()
            && self
                .inner
                .closing
                .load(std::sync::atomic::Ordering::Acquire)
                == 0
    }

    /// Waits (in real time) until [`is_idle`](Self::is_idle) or `timeout`;
    /// returns whether it became idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            closing::record_closes(&self.inner);
            if self.is_idle() {
                // Once more after the dispatcher's next pass.
                std::thread::sleep(Duration::from_millis(5));
                if self.is_idle() {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The shared failure bus: the host reports its own failures here.
    #[must_use]
    pub fn failure_sink(&self) -> &FailureSink {
        &self.inner.sink
    }

    /// The corruption detector: the host reads and writes pages through it.
    #[must_use]
    pub fn detector(&self) -> &Arc<CorruptionDetector> {
        &self.inner.detector
    }

    /// The repairer.
    #[must_use]
    pub fn repairer(&self) -> &Arc<DataRepairer> {
        &self.repairer
    }

    /// The rollback manager, once started: the host runs its transactions
    /// through it.
    #[must_use]
    pub fn rollback_manager(&self) -> Option<Arc<TransactionRollbackManager>> {
        self.running.lock().rollback.clone()
    }

    /// The crash detector, once started: the host registers heartbeats and
    /// processes with it.
    #[must_use]
    pub fn crash_detector(&self) -> Option<Arc<CrashDetector>> {
        self.running.lock().crash.clone()
    }

    /// The snapshot manager, when configured.
    #[must_use]
    pub fn snapshots(&self) -> Option<&Arc<StateSnapshotManager>> {
        self.snapshots.as_ref()
    }

    /// The health monitor, when configured.
    #[must_use]
    pub fn health(&self) -> Option<&Arc<HealthMonitor>> {
        self.inner.health.as_ref()
    }

    /// The audit log, when on.
    #[must_use]
    pub fn audit_log(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    /// The healer, once started.
    #[must_use]
    pub fn healer(&self) -> Option<Arc<SelfHealer>> {
        self.inner.healer.read().clone()
    }
}

impl Drop for AutoRecoveryManager {
    /// Stops as [`stop`](AutoRecoveryManager::stop) does, but marks no
    /// clean stop: the next start treats this run as crashed unless `stop`
    /// was called.
    fn drop(&mut self) {
        if let Err(e) = run::stop(self, run::Ending::Unclean) {
            tracing::warn!(error = %e, "stopping the recovery manager on drop");
        }
    }
}
