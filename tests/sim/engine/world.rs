//! The simulated world of one seed: a store on a crash-simulating disk under
//! a fault injector, two replicas, a durable sidecar table and an undo
//! journal on simulated directories, snapshots and a scrub cursor in a
//! temporary directory, a manual clock; and the components over them, built
//! and rebuilt at every simulated crash, driven one call at a time from the
//! simulator's thread. The threads that remain decide nothing on their own:
//! the crash watchdog (no heartbeat is registered), the journal's idle mark
//! thread (kept idle by a 60 s delay no run reaches), a snapshot's
//! compression thread, and the repairer's helper for the snapshot fallback,
//! whose answer the simulator's thread waits for (its deadline, 60 s of
//! real time, is never reached).
//!
//! Every component but the scrubber is built and owned by an
//! [`AutoRecoveryManager`] in Automatic mode and step mode
//! ([`RecoveryConfig::stepped`](selfheal::RecoveryConfig::stepped)): its
//! startup recovery runs at every boot, a page that fails a verified read
//! is healed on the reader's (the simulator's) thread, and every failure
//! reported on its bus is filed, queued and healed by the
//! [`step`](AutoRecoveryManager::step) at the end of the step that reported
//! it. Its audit log and its suspect registry are on simulated directories
//! that crash with the rest; its run marker, open-incidents, escalations
//! and learned-remedy files are real files in a temporary directory, which
//! a crash does not damage (each is replaced atomically). A crash kills the
//! manager ([`AutoRecoveryManager::abandon`]): nothing is saved at it.
//!
//! This file holds the world's state and its step; `world/` holds the rest,
//! one idea a file: `boot` (building a process), `crash` (a crash and the
//! host's recovery), `faults` (arming them), `replicas`, `ops` (the
//! workload), `heal` (the healer and the audit log), `checks` (whole-world
//! checks and the digest) and `classify` (naming what was reported).

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use selfheal::audit::AuditLog;
use selfheal::testing::{
    CrashDir, CrashFiles, CrashStore, CrashSwitch, FaultyReplica, FaultyStore,
};
use selfheal::{
    AutoRecoveryManager, CorruptionDetector, DataRepairer, Failure, ManualClock, MemStore, PageId,
    Scrubber, Source, StateSnapshotManager, StoreReplica, TransactionRollbackManager,
};

mod boot;
mod checks;
mod classify;
mod crash;
mod faults;
mod heal;
mod ops;
mod replicas;

use classify::structure_of_message;
use classify::{component_of, err_name, outcome_name, page_of};
use replicas::SimReplica;

use super::model::{Model, Version};
use super::plan::{Fault, Placement, Plan, Structure, PAGES, PAGE_SIZE, REPLICAS};

/// A component, as named in the coverage table.
pub type Component = &'static str;

/// Every component, in table order.
pub const COMPONENTS: [Component; 7] = [
    "detector",
    "scrubber",
    "repairer",
    "rollback",
    "snapshots",
    "table",
    "healer",
];

/// Something a component noticed: a failure it reported, or an error it
/// returned to the simulator.
#[derive(Clone, Debug)]
pub struct Observation {
    /// Who.
    pub component: Component,
    /// About which page, if one.
    pub page: Option<u64>,
    /// About which structure.
    pub structure: Structure,
}

/// Closed incidents one process's manager keeps (more than a run closes).
pub(super) const RECENT_MAX: usize = 1 << 16;

/// What survives a crash: the disks.
struct Disks {
    store: Arc<CrashStore>,
    files: Option<Arc<CrashFiles>>,
    journal: Arc<CrashDir>,
    /// The audit log's directory.
    audit: Arc<CrashFiles>,
    /// The suspect registry's directory.
    suspects: Arc<CrashFiles>,
    switch: Arc<CrashSwitch>,
}

/// One process: the manager, the components it owns, and the scrubber the
/// simulator steps.
struct Process {
    faulty: Arc<FaultyStore>,
    det: Arc<CorruptionDetector>,
    repairer: Arc<DataRepairer>,
    scrub: Scrubber,
    mgr: Option<Arc<TransactionRollbackManager>>,
    snap: Option<Arc<StateSnapshotManager>>,
    audit: Option<Arc<AuditLog>>,
    recovery: AutoRecoveryManager,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Every step ran.
    Completed,
    /// A component refused to open after damage to its files, with a typed
    /// error (the expected reaction; the run cannot go on without it).
    Refused(String),
    /// The host had to die (a failed commit or rollback) while its
    /// checksums lived in an in-memory table, which no restart recovers
    /// without adopting the store again.
    HostDied,
}

/// The world of one seed.
pub struct World {
    plan: Plan,
    clock: Arc<ManualClock>,
    /// Every failure sent on the live manager's bus, not yet noted.
    reported: Arc<Mutex<Vec<Failure>>>,
    /// The repairer the undo journal's repair hook calls (the live
    /// manager's, set at each boot before its startup recovery).
    hook_repairer: Arc<std::sync::OnceLock<Arc<DataRepairer>>>,
    /// Closed incidents of the live manager already checked.
    closed_seen: usize,
    disks: Disks,
    replicas: Vec<SimReplica>,
    proc: Option<Process>,
    /// Directory of the snapshots and the scrub cursor.
    dir: tempfile::TempDir,
    /// The model, shared with the expected-LSN hook.
    pub model: Arc<Mutex<Model>>,
    /// Snapshot manager slot the detector's write observer notes into.
    snap_slot: Arc<Mutex<Option<Arc<StateSnapshotManager>>>>,
    next_lsn: u64,
    /// One line per step and event: the run's trace.
    pub trace: Vec<String>,
    /// Invariants that failed.
    pub violations: Vec<String>,
    /// What components noticed in the current step.
    pub observed: Vec<Observation>,
    /// Set when the current step must end with a crash.
    crash_due: Option<u64>,
    /// File damage to do while the process is down.
    file_rot: Vec<(Structure, u64)>,
    /// Structures whose files were damaged so far.
    rotted: BTreeSet<Structure>,
    /// Crashes so far.
    pub restarts: u64,
    /// Anti-entropy runs so far (each with the next replica in turn).
    anti_entropy_runs: u64,
    /// The newest audit record a returned sync covered.
    audit_synced: u64,
    /// Incidents closed, by outcome name.
    pub incidents: std::collections::BTreeMap<&'static str, u64>,
}

impl World {
    /// The world of `plan`, with every page written, synced and replicated.
    ///
    /// # Panics
    /// When the initial world cannot be built (a bug of the simulator).
    pub fn new(plan: Plan) -> World {
        let placement = plan.placement;
        let clock = Arc::new(ManualClock::new());
        clock.set_ns(1_000_000_000);
        let switch = CrashSwitch::new();
        let model = Model::new(placement);
        let store = CrashStore::new(PAGE_SIZE, PAGES).expect("store");
        let replicas = (0..REPLICAS)
            .map(|r| {
                let pages = Arc::new(MemStore::new(PAGE_SIZE, PAGES).expect("replica"));
                let faulty = Arc::new(FaultyReplica::new(Arc::new(StoreReplica::new(
                    format!("replica-{r}"),
                    pages.clone(),
                ))));
                SimReplica {
                    pages,
                    faulty,
                    down_for: 0,
                    lag_for: 0,
                    registered: true,
                }
            })
            .collect();
        let mut w = World {
            clock,
            reported: Arc::new(Mutex::new(Vec::new())),
            hook_repairer: Arc::new(std::sync::OnceLock::new()),
            closed_seen: 0,
            disks: Disks {
                store: Arc::new(store.with_switch(switch.clone())),
                files: (placement == Placement::SidecarDurable)
                    .then(|| Arc::new(CrashFiles::new().with_switch(switch.clone()))),
                journal: Arc::new(CrashDir::new().with_switch(switch.clone())),
                audit: Arc::new(CrashFiles::new().with_switch(switch.clone())),
                suspects: Arc::new(CrashFiles::new().with_switch(switch.clone())),
                switch,
            },
            replicas,
            proc: None,
            // Snapshots and the cursor are real files; on a memory file
            // system where there is one, so that their fsyncs cost nothing.
            dir: match std::path::Path::new("/dev/shm") {
                shm if shm.is_dir() => tempfile::tempdir_in(shm),
                _ => tempfile::tempdir(),
            }
            .expect("tempdir"),
            model: Arc::new(Mutex::new(model)),
            snap_slot: Arc::new(Mutex::new(None)),
            next_lsn: PAGES + 1,
            trace: Vec::new(),
            violations: Vec::new(),
            observed: Vec::new(),
            crash_due: None,
            file_rot: Vec::new(),
            restarts: 0,
            anti_entropy_runs: 0,
            rotted: BTreeSet::new(),
            audit_synced: 0,
            incidents: std::collections::BTreeMap::new(),
            plan,
        };
        w.boot().expect("the first boot");
        let versions: Vec<Version> = w.model.lock().acked.clone();
        {
            let det = w.det().clone();
            for (p, v) in versions.iter().enumerate() {
                let mut buf = v.page.clone();
                det.write_sealed(PageId(p as u64), &mut buf)
                    .expect("initial write");
            }
            det.sync().expect("initial sync");
        }
        for r in 0..REPLICAS {
            w.catch_up(r);
        }
        w
    }

    fn det(&self) -> &Arc<CorruptionDetector> {
        &self.proc.as_ref().expect("a live process").det
    }

    fn lsn(&mut self) -> u64 {
        let l = self.next_lsn;
        self.next_lsn += 1;
        l
    }

    fn note(&mut self, line: String) {
        self.trace.push(line);
    }

    fn violation(&mut self, what: String) {
        self.trace.push(format!("VIOLATION {what}"));
        self.violations.push(what);
    }

    fn observe(&mut self, component: Component, page: Option<u64>, structure: Structure) {
        self.observed.push(Observation {
            component,
            page,
            structure,
        });
    }

    fn observe_err(&mut self, component: Component, page: Option<u64>, e: &selfheal::Error) {
        let msg = e.to_string();
        let page = page.or_else(|| page_of(&format!("{e:?}")));
        let named = structure_of_message(&msg);
        // An error that names the checksum table's files (a failed sync of
        // them, a table poisoned by one) is about the table even when it
        // came back from a write of one page.
        let structure = if named == Some(Structure::ChecksumTable) {
            Structure::ChecksumTable
        } else if page.is_some() {
            Structure::Page
        } else {
            named.unwrap_or(Structure::Page)
        };
        self.observe(component, page, structure);
    }

    /// Runs step `i`: arms its faults, does its op, checks the invariants,
    /// and crashes if the step asked for it.
    ///
    /// # Errors
    /// How the run ended early.
    pub fn step(&mut self, i: usize, faults: &[Fault]) -> Result<(), End> {
        self.observed.clear();
        self.tick_replicas();
        for f in faults {
            self.note(format!("step {i}: fault {f}"));
            self.arm(f);
        }
        let op = self.plan.ops[i].clone();
        self.note(format!("step {i}: {op:?}"));
        self.run_op(&op);
        if let Some(seed) = self.crash_due.take() {
            if self.plan.placement == Placement::SidecarMem {
                self.note("the host dies with an in-memory table".into());
                return Err(End::HostDied);
            }
            self.crash(seed)?;
        }
        self.drain_failures();
        Ok(())
    }

    fn drain_failures(&mut self) {
        self.note_reported();
        if self.proc.is_some() {
            self.heal();
        }
    }

    /// Notes every failure sent on the manager's bus since the last call.
    pub(super) fn note_reported(&mut self) {
        let reported = std::mem::take(&mut *self.reported.lock());
        for f in &reported {
            self.note_failure(f);
        }
    }

    pub(super) fn note_failure(&mut self, f: &selfheal::Failure) {
        {
            let component = component_of(f.source);
            let (page, structure) = match f.target() {
                selfheal::Target::Page(p) => (Some(p.0), Structure::Page),
                selfheal::Target::Replica(_) => (None, Structure::ReplicaCopy),
                selfheal::Target::Transaction(_) => (None, Structure::Journal),
                t => (
                    None,
                    structure_of_message(&format!("{t} {}", f.evidence)).unwrap_or(
                        if f.source == Source::StateSnapshotManager {
                            Structure::SnapshotFile
                        } else {
                            Structure::Page
                        },
                    ),
                ),
            };
            self.trace
                .push(format!("failure from {component}: {:?}", f.kind));
            self.observe(component, page, structure);
        }
    }
}
