//! The simulated world of one seed: a store on a crash-simulating disk under
//! a fault injector, two replicas, a durable sidecar table and an undo
//! journal on simulated directories, snapshots and a scrub cursor in a
//! temporary directory, a manual clock; and the components over them, built
//! and rebuilt at every simulated crash, driven one call at a time from the
//! simulator's thread (no background work is started).
//!
//! Every failure a component reports goes, at the end of the step that
//! reported it, to a [`SelfHealer`] acting on its own (the loop of the
//! `AutoRecoveryManager` in Automatic mode, minus its threads): the healer
//! has the detector, the repairer, the undo journal and the snapshots in
//! its context, a learned-remedy file and an audit log on a simulated
//! directory that crashes with the rest. The manager itself runs its loop
//! only on threads of its own (a dispatcher and recovery threads), which
//! no seed could replay; its queue, heal-on-read, incidents file and
//! suspect registry are not simulated.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use selfheal::audit::AuditLog;
use selfheal::checksum::{ChecksumTable, TableConfig};
use selfheal::corruption::LsnExpectation;
use selfheal::healer::{HealerConfig, RemedyContext, SelfHealer};
use selfheal::rollback::{PageWriter, RecoveryMode};
use selfheal::testing::{
    CrashDir, CrashFiles, CrashStore, CrashSwitch, FaultyReplica, FaultyStore,
};
use selfheal::{
    ChecksumPlacement, CorruptionConfig, CorruptionDetector, DataRepairer, FailureSink, Lsn,
    ManualClock, MemStore, PageId, PageStore, RepairConfig, Replica, ReplicaId, ReplicaLag,
    ReplicaStatus, RollbackConfig, ScrubConfig, Scrubber, SnapshotConfig, Source,
    StateSnapshotManager, StoreReplica, TransactionRollbackManager,
};

mod checks;
mod heal;
mod ops;

use super::model::{page_lsn, Model, Version};
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

/// A replica the repairer may call on its own thread: the fault injector
/// over an in-memory store, which never blocks unless told to hang (the
/// simulator never does), so repairs run on the simulator's thread.
#[derive(Debug)]
struct InlineReplica(Arc<FaultyReplica>);

impl Replica for InlineReplica {
    fn id(&self) -> ReplicaId {
        self.0.id()
    }
    fn page_size(&self) -> usize {
        self.0.page_size()
    }
    fn status(&self) -> ReplicaStatus {
        self.0.status()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> selfheal::Result<()> {
        self.0.read_page(page, buf)
    }
    fn range_digest(&self, first: PageId, count: u64) -> selfheal::Result<u64> {
        self.0.range_digest(first, count)
    }
    fn may_call_inline(&self) -> bool {
        true
    }
}

/// One simulated replica: its pages, the fault injector over them, and
/// what the simulator knows of it.
struct SimReplica {
    pages: Arc<MemStore>,
    faulty: Arc<FaultyReplica>,
    /// Steps left down (0: up).
    down_for: u32,
    /// Steps left lagging (0: current).
    lag_for: u32,
    /// Registered with the repairer.
    registered: bool,
}

/// What survives a crash: the disks.
struct Disks {
    store: Arc<CrashStore>,
    files: Option<Arc<CrashFiles>>,
    journal: Arc<CrashDir>,
    /// The audit log's directory.
    audit: Arc<CrashFiles>,
    switch: Arc<CrashSwitch>,
}

/// One process: the components over the disks.
struct Process {
    faulty: Arc<FaultyStore>,
    det: Arc<CorruptionDetector>,
    repairer: Arc<DataRepairer>,
    scrub: Scrubber,
    mgr: Option<Arc<TransactionRollbackManager>>,
    snap: Option<Arc<StateSnapshotManager>>,
    audit: Option<Arc<AuditLog>>,
    healer: Option<SelfHealer>,
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
    sink: FailureSink,
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
    /// Failures whose incident was deferred (a cooldown), handed to the
    /// healer again at a later step.
    deferred: Vec<selfheal::Failure>,
    /// The newest audit record a returned sync covered.
    audit_synced: u64,
    /// Incidents closed, by outcome name.
    pub incidents: std::collections::BTreeMap<&'static str, u64>,
}

fn err_name(e: &selfheal::Error) -> String {
    let s = format!("{e:?}");
    s.split([' ', '{', '(']).next().unwrap_or("").to_string()
}

/// The page an error names, from its `page: PageId(n)` field.
fn page_of(debug: &str) -> Option<u64> {
    let i = debug.find("page: PageId(")? + "page: PageId(".len();
    debug[i..].split(')').next()?.parse().ok()
}

fn outcome_name(o: &selfheal::repair::RepairOutcome) -> &'static str {
    use selfheal::repair::RepairOutcome as R;
    match o {
        R::Repaired { .. } => "repaired",
        R::Superseded => "superseded",
        R::Irreparable { .. } => "irreparable",
        R::NotNeeded => "not needed",
        R::InProgress => "in progress",
        _ => "other",
    }
}

pub(super) fn structure_of_message(msg: &str) -> Option<Structure> {
    let m = msg.to_ascii_lowercase();
    if m.contains("cursor") {
        Some(Structure::ScrubCursor)
    } else if m.contains("manifest") {
        Some(Structure::Manifest)
    } else if m.contains("snapshot") || m.contains(".snap") {
        Some(Structure::SnapshotFile)
    } else if m.contains("journal") || m.contains("segment") || m.contains("undo") {
        Some(Structure::Journal)
    } else if m.contains("sums") || m.contains("checksum table") || m.contains("table") {
        Some(Structure::ChecksumTable)
    } else {
        None
    }
}

fn component_of(source: Source) -> Component {
    match source {
        Source::CorruptionDetector => "detector",
        Source::Scrubber => "scrubber",
        Source::DataRepairer => "repairer",
        Source::TransactionRollbackManager => "rollback",
        Source::StateSnapshotManager => "snapshots",
        _ => "detector",
    }
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
            sink: FailureSink::new(1 << 16),
            disks: Disks {
                store: Arc::new(store.with_switch(switch.clone())),
                files: (placement == Placement::SidecarDurable)
                    .then(|| Arc::new(CrashFiles::new().with_switch(switch.clone()))),
                journal: Arc::new(CrashDir::new().with_switch(switch.clone())),
                audit: Arc::new(CrashFiles::new().with_switch(switch.clone())),
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
            rotted: BTreeSet::new(),
            deferred: Vec::new(),
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

    /// Builds the components over the disks: the table, the detector, the
    /// repairer with its replicas and fallback, the snapshot manager, the
    /// undo journal (whose recovery runs now), the scrubber.
    fn boot(&mut self) -> Result<(), End> {
        let placement = self.plan.placement;
        let faulty = Arc::new(FaultyStore::new(self.disks.store.clone()));
        let checksums = match placement {
            Placement::Trailer => ChecksumPlacement::Trailer,
            Placement::SidecarMem => {
                ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(PAGE_SIZE).expect("table")))
            }
            Placement::SidecarDurable => {
                let files = self.disks.files.clone().expect("files");
                match TableConfig::new(PAGE_SIZE)
                    .pages_max(PAGES)
                    .compact_log_bytes_min(4 << 10)
                    .open_on(files, "sums")
                {
                    Ok(t) => ChecksumPlacement::Sidecar(Arc::new(t)),
                    Err(e) => {
                        self.note(format!("table open: {}", err_name(&e)));
                        self.observe("table", None, Structure::ChecksumTable);
                        return Err(self.refused(
                            "the checksum table",
                            Structure::ChecksumTable,
                            &e,
                        ));
                    }
                }
            }
        };
        let model = self.model.clone();
        let slot = self.snap_slot.clone();
        let det = CorruptionConfig::new(checksums)
            .clock(self.clock.clone())
            .failure_sink(self.sink.clone())
            .page_lsn(Arc::new(page_lsn))
            // The host's durable records: exactly the acknowledged version
            // when no other write of the page may have reached the disk
            // (nothing written since and not acknowledged: a restore or a
            // rollback acknowledged puts an older LSN back, and a lost
            // write of it leaves the replaced, newer one), otherwise the
            // oldest version the page may durably hold (a restore that
            // failed part way may have put an older one back).
            .page_lsn_expectation(Arc::new(move |p: PageId| {
                let m = model.lock();
                let Some(acked) = m.acked.get(p.0 as usize).map(|v| v.lsn) else {
                    return LsnExpectation::Nothing;
                };
                let maybe = &m.maybe[p.0 as usize];
                // Every version the page may hold carries one LSN (nothing
                // written since, or a failed restore whose chain holds the
                // acknowledged version only): the host knows it exactly,
                // and a floor would let through the newer version a lost
                // write of an earlier restore left on the page (seed 101).
                if !m.in_txn.contains(&p.0) && maybe.iter().all(|v| v.lsn == acked) {
                    return LsnExpectation::Exact(Lsn(acked));
                }
                LsnExpectation::AtLeast(Lsn(maybe.iter().map(|v| v.lsn).fold(acked, u64::min)))
            }))
            .on_write(Arc::new(move |p: PageId| {
                if let Some(s) = &*slot.lock() {
                    s.note_dirty(p);
                }
            }))
            .build(faulty.clone());
        let det = match det {
            Ok(d) => Arc::new(d),
            Err(e) => return Err(self.refused("the detector", Structure::Page, &e)),
        };
        let repairer = Arc::new(
            RepairConfig::new()
                .clock(self.clock.clone())
                .failure_sink(self.sink.clone())
                .replica_read_timeout(Duration::from_secs(60))
                .build(det.clone())
                .expect("repairer"),
        );
        for r in &mut self.replicas {
            if r.registered {
                repairer
                    .add_replica(Arc::new(InlineReplica(r.faulty.clone())))
                    .expect("add replica");
            }
        }
        let snap = match SnapshotConfig::new(self.dir.path().join("snapshots"), PAGE_SIZE)
            .threads(1)
            .max_chain_len(4)
            .clock(self.clock.clone())
            .failure_sink(self.sink.clone())
            .build()
        {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                self.note(format!("snapshot manager open: {}", err_name(&e)));
                self.observe_err("snapshots", None, &e);
                None
            }
        };
        if let Some(s) = &snap {
            if let Some(m) = s.manifest_rebuilt() {
                let m = m.to_string();
                self.note("snapshot manifest rebuilt".into());
                self.observe("snapshots", None, Structure::Manifest);
                let _ = m;
            }
            repairer
                .add_fallback(Arc::new(s.page_source()))
                .expect("fallback");
        }
        *self.snap_slot.lock() = snap.clone();
        let hook_repairer = repairer.clone();
        let mgr = RollbackConfig::with_storage(self.disks.journal.clone())
            .segment_size_bytes(8 << 10)
            .buffer_bytes(4 << 10)
            .recovery_mode(RecoveryMode::TolerateTornTail)
            .idle_mark_delay(Duration::from_secs(60))
            .clock(self.clock.clone())
            .failure_sink(self.sink.clone())
            .repair_hook(Arc::new(move |p: PageId| {
                Ok(hook_repairer.repair_page(p)?.is_repaired())
            }))
            .build(det.clone() as Arc<dyn PageWriter>);
        let mgr = match mgr {
            Ok(m) => {
                let r = m.recovery_report();
                self.note(format!(
                    "journal recovered: {} rolled back, {} blocked, {} replaced",
                    r.rolled_back.len(),
                    r.blocked.len(),
                    r.undo_entries_replaced
                ));
                Some(Arc::new(m))
            }
            Err(e) => {
                self.note(format!("journal open: {}", err_name(&e)));
                self.observe("rollback", None, Structure::Journal);
                return Err(self.refused("the undo journal", Structure::Journal, &e));
            }
        };
        let scrub = ScrubConfig::new()
            .unlimited()
            .batch_pages(4)
            .cursor_path(self.dir.path().join("scrub.cursor"))
            .persist_every(Duration::from_secs(1))
            .pass_interval(Duration::from_millis(0))
            .clock(self.clock.clone())
            .failure_sink(self.sink.clone())
            .build(det.clone())
            .expect("scrubber");
        let audit = self.open_audit();
        let mut ctx = RemedyContext::new()
            .detector(det.clone())
            .repairer(repairer.clone())
            .clock(self.clock.clone());
        if let Some(s) = &snap {
            ctx = ctx.snapshots(s.clone());
        }
        if let Some(m) = &mgr {
            ctx = ctx.rollback(m.clone());
        }
        let mut hc = HealerConfig::new()
            .seed(self.plan.seed)
            .learned_path(self.dir.path().join("learned"));
        if let Some(a) = &audit {
            hc = hc.audit(a.clone());
        }
        let healer = match hc.build(ctx) {
            Ok(h) => Some(h),
            Err(e) => {
                self.violation(format!("the healer refused to build: {e}"));
                None
            }
        };
        self.proc = Some(Process {
            faulty,
            det,
            repairer,
            scrub,
            mgr,
            snap,
            audit,
            healer,
        });
        Ok(())
    }

    /// An open refused with `e`: the expected reaction to damage done to
    /// the component's files, and a violation otherwise (a crash alone must
    /// never leave files a component cannot open).
    fn refused(&mut self, what: &str, structure: Structure, e: &selfheal::Error) -> End {
        if !self.rotted.contains(&structure) {
            self.violation(format!(
                "{what} refused to open after a crash that damaged none of its files: {e}"
            ));
        }
        End::Refused(format!("{what}: {e}"))
    }

    /// Kills the process: every later write of the dead process fails, what
    /// was not synced is lost, kept, reordered or torn as `seed` says, the
    /// file damage queued is done, and a new process boots.
    fn crash(&mut self, seed: u64) -> Result<(), End> {
        self.disks.switch.arm_at(0);
        if let Some(p) = self.proc.take() {
            *self.snap_slot.lock() = None;
            drop(p);
        }
        let switch = CrashSwitch::new();
        let mut rng = StdRng::seed_from_u64(seed);
        let store = self.disks.store.crash(Some(rng.random()));
        let keep_pct = rng.random_range(0..=100u32);
        let mut krng = StdRng::seed_from_u64(rng.random());
        let journal = self
            .disks
            .journal
            .crash_keeping(|_, _| krng.random_range(0..100) < keep_pct);
        let files = self.disks.files.as_ref().map(|f| f.crash(Some(seed)));
        let audit = self.disks.audit.crash(Some(seed.rotate_left(17)));
        for (structure, s) in std::mem::take(&mut self.file_rot) {
            self.rotted.insert(structure);
            self.rot_file(structure, s, &journal, files.as_ref());
        }
        self.disks = Disks {
            store: Arc::new(store.with_switch(switch.clone())),
            files: files.map(|f| Arc::new(f.with_switch(switch.clone()))),
            journal: Arc::new(journal.with_switch(switch.clone())),
            audit: Arc::new(audit.with_switch(switch.clone())),
            switch,
        };
        // What was written and not acknowledged may be there or not; an
        // in-flight transaction's writes must not be.
        self.restarts += 1;
        self.note(format!("crash (seed {seed:#x}); restart {}", self.restarts));
        self.boot()?;
        // The journal's recovery has finished every transaction it could.
        self.model.lock().in_txn.clear();
        self.check_all_pages("after recovery");
        self.settle();
        Ok(())
    }

    /// The host's own recovery after a restart: a page that may hold a
    /// write that was never acknowledged gets its acknowledged version
    /// written back (the host's log discards what it never acknowledged),
    /// so that every page again holds a version the replicas have.
    fn settle(&mut self) {
        let pending: Vec<(u64, Version)> = {
            let m = self.model.lock();
            (0..PAGES)
                .filter(|&p| !m.maybe[p as usize].is_empty())
                .map(|p| (p, m.acked[p as usize].clone()))
                .collect()
        };
        if pending.is_empty() {
            return;
        }
        let det = self.det().clone();
        let mut written = Vec::new();
        for (p, v) in pending {
            let mut buf = v.page.clone();
            match det.write_sealed(PageId(p), &mut buf) {
                Ok(()) => written.push((p, v)),
                Err(e) => {
                    self.note(format!("settle {p}: {}", err_name(&e)));
                    self.observe_err("detector", Some(p), &e);
                }
            }
        }
        match det.sync() {
            Ok(()) => {
                for (p, v) in written {
                    self.note(format!("settled {p} at LSN {}", v.lsn));
                    self.model.lock().ack(p, v);
                }
            }
            Err(e) => {
                self.note(format!("settle sync: {}", err_name(&e)));
                self.observe_err("detector", None, &e);
            }
        }
    }

    fn rot_file(
        &mut self,
        s: Structure,
        seed: u64,
        journal: &CrashDir,
        files: Option<&CrashFiles>,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut flip = |mut b: Vec<u8>| {
            if !b.is_empty() {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            b
        };
        match s {
            Structure::Journal => {
                let ids = journal.segment_ids();
                if let Some(&id) = ids.last() {
                    let b = journal.segment(id).unwrap_or_default();
                    journal.set_segment(id, flip(b));
                    self.note(format!("rot journal segment {id}"));
                }
            }
            Structure::ChecksumTable => {
                if let Some(f) = files {
                    let names = f.names();
                    if !names.is_empty() {
                        let name = names[(seed as usize) % names.len()].clone();
                        let b = f.file(&name).unwrap_or_default();
                        f.set_file(&name, flip(b));
                        self.note(format!("rot table file {name}"));
                    }
                }
            }
            Structure::SnapshotFile | Structure::Manifest | Structure::ScrubCursor => {
                let dir = self.dir.path().join("snapshots");
                let path: Option<PathBuf> = match s {
                    Structure::ScrubCursor => Some(self.dir.path().join("scrub.cursor")),
                    Structure::Manifest => std::fs::read_dir(&dir).ok().and_then(|d| {
                        let mut v: Vec<PathBuf> = d
                            .filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|p| p.file_name().is_some_and(|n| n == "MANIFEST"))
                            .collect();
                        v.sort();
                        v.pop()
                    }),
                    _ => std::fs::read_dir(&dir).ok().and_then(|d| {
                        let mut v: Vec<PathBuf> = d
                            .filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|p| p.extension().is_some_and(|x| x == "shs"))
                            .collect();
                        v.sort();
                        (!v.is_empty()).then(|| v[(seed as usize) % v.len()].clone())
                    }),
                };
                if let Some(p) = path {
                    if let Ok(b) = std::fs::read(&p) {
                        std::fs::write(&p, flip(b)).expect("rewrite");
                        self.note(format!(
                            "rot {:?} {}",
                            s,
                            p.file_name().unwrap_or_default().to_string_lossy()
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    /// Applies the replica state the plan and the step count say.
    fn tick_replicas(&mut self) {
        for r in 0..REPLICAS {
            let rep = &mut self.replicas[r];
            let mut caught = false;
            if rep.down_for > 0 {
                rep.down_for -= 1;
                if rep.down_for == 0 {
                    rep.faulty.set_down(false);
                    caught = true;
                }
            }
            if rep.lag_for > 0 {
                rep.lag_for -= 1;
                if rep.lag_for == 0 {
                    caught = true;
                }
            }
            if caught && rep.down_for == 0 && rep.lag_for == 0 {
                self.catch_up(r);
            }
        }
    }

    /// Replica `r` copies every acknowledged page (replication catching up).
    fn catch_up(&mut self, r: usize) {
        let m = self.model.lock();
        let rep = &self.replicas[r];
        for (p, v) in m.acked.iter().enumerate() {
            rep.pages
                .write_page(PageId(p as u64), &v.page)
                .expect("replica write");
        }
        rep.faulty.set_lag(ReplicaLag::default());
        if !rep.registered {
            if let Some(p) = &self.proc {
                p.repairer
                    .add_replica(Arc::new(InlineReplica(rep.faulty.clone())))
                    .expect("re-add replica");
            }
            self.replicas[r].registered = true;
        }
    }

    /// Ships an acknowledged version to every replica that is up and current.
    fn replicate(&mut self, page: u64, v: &Version) {
        for rep in &self.replicas {
            if rep.down_for == 0 && rep.lag_for == 0 {
                rep.pages
                    .write_page(PageId(page), &v.page)
                    .expect("replica write");
            }
        }
    }

    fn arm(&mut self, f: &Fault) {
        let p = self.proc.as_ref().expect("process");
        match f {
            Fault::Rot(page, d) => {
                let _ = p.faulty.damage(PageId(*page), *d);
            }
            Fault::Write(page, w) => p.faulty.fail_next_write(Some(PageId(*page)), *w),
            Fault::Read(page, r, n) => p.faulty.fail_reads(Some(PageId(*page)), *r, *n),
            Fault::StoreSync => p.faulty.fail_syncs(1),
            Fault::JournalSync => self.disks.journal.fail_syncs(1),
            Fault::TableSync => {
                if let Some(f) = &self.disks.files {
                    f.fail_syncs(1);
                }
            }
            Fault::ReplicaDown(r, n) => {
                let rep = &mut self.replicas[*r];
                rep.down_for = rep.down_for.max(*n);
                rep.faulty.set_down(true);
            }
            Fault::ReplicaLag(r, n) => {
                let applied = self.next_lsn - 1;
                let rep = &mut self.replicas[*r];
                rep.lag_for = rep.lag_for.max(*n);
                rep.faulty.set_lag(ReplicaLag {
                    applied_lsn: Some(Lsn(applied)),
                    behind: Some(Duration::from_secs(5)),
                });
            }
            Fault::ReplicaCorrupt(r, page, d) => {
                self.replicas[*r].faulty.corrupt(PageId(*page), *d)
            }
            Fault::Crash { ops, seed } => {
                let at = self.disks.switch.ops() + ops;
                self.disks.switch.arm_at(at);
                self.crash_due = Some(*seed);
            }
            Fault::FileRot(s, seed) => {
                self.file_rot.push((*s, *seed));
                self.crash_due = Some(*seed);
            }
        }
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
        let failures: Vec<_> = self.sink.failures().try_iter().collect();
        for f in &failures {
            self.note_failure(f);
        }
        if self.proc.is_some() {
            self.heal(failures, false);
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
