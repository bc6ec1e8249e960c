//! Booting a process over the disks: the checksum table (in a trailer, in
//! memory, or durable on its simulated directory), the detector with the
//! host's page-LSN reader and expected-LSN hook, the repairer with its
//! replicas and the snapshot fallback, the snapshot manager, the undo
//! journal (whose recovery runs at the build), the scrubber, the audit log
//! and the healer.
//!
//! A component that refuses to open ends the run: expected after damage
//! done to its files while the process was down, a violation otherwise.

use std::sync::Arc;
use std::time::Duration;

use selfheal::checksum::{ChecksumTable, TableConfig};
use selfheal::healer::HealerConfig;
use selfheal::rollback::RecoveryMode;
use selfheal::testing::FaultyStore;
use selfheal::{
    ChecksumPlacement, CorruptionConfig, Mode, PageId, PageStore, RecoveryConfig, RepairConfig,
    RollbackConfig, ScrubConfig, SnapshotConfig,
};

use super::super::model::page_lsn;
use super::super::plan::{Placement, Structure, PAGES, PAGE_SIZE};
use super::replicas::InlineReplica;
use super::{err_name, structure_of_message, End, Process, World, RECENT_MAX};

/// The seed of the durable table's resume jitter at the boot after
/// `restarts` restarts of the run of `seed`.
fn table_seed(seed: u64, restarts: u64) -> u64 {
    (seed ^ 0x7ab1_e5ee_d000_0000).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ restarts
}

impl World {
    /// Builds the components over the disks: the table, the detector, the
    /// repairer with its replicas and fallback, the snapshot manager, the
    /// undo journal (whose recovery runs now), the scrubber.
    pub(super) fn boot(&mut self) -> Result<(), End> {
        let placement = self.plan.placement;
        let faulty = Arc::new(FaultyStore::new(self.disks.store.clone()));
        let checksums = match placement {
            Placement::Trailer => ChecksumPlacement::Trailer,
            Placement::SidecarMem => {
                ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(PAGE_SIZE).expect("table")))
            }
            Placement::SidecarDurable => {
                let files = self.disks.files.clone().expect("files");
                // The simulated clock and a seed from the run's (and the
                // boot's): a stalled log resumes at the same steps every run.
                match TableConfig::new(PAGE_SIZE)
                    .pages_max(PAGES)
                    .compact_log_bytes_min(4 << 10)
                    .clock(self.clock.clone())
                    .seed(table_seed(self.plan.seed, self.restarts))
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
        let faulty_store: Arc<dyn PageStore> = faulty.clone();
        // The manager: once with snapshots, and once more without them
        // when their files cannot be opened (as a host would start).
        let mut with_snapshots = true;
        let recovery = loop {
            match self
                .recovery_config(faulty_store.clone(), checksums.clone(), with_snapshots)
                .build()
            {
                Ok(m) => break m,
                Err(e) => {
                    let structure = structure_of_message(&e.to_string());
                    if with_snapshots
                        && matches!(
                            structure,
                            Some(Structure::SnapshotFile | Structure::Manifest)
                        )
                    {
                        self.note(format!("snapshot manager open: {}", err_name(&e)));
                        self.observe_err("snapshots", None, &e);
                        with_snapshots = false;
                        continue;
                    }
                    let (what, structure) = match structure {
                        Some(Structure::ChecksumTable) => {
                            ("the checksum table", Structure::ChecksumTable)
                        }
                        Some(Structure::Journal) => ("the undo journal", Structure::Journal),
                        _ => ("the recovery manager", Structure::Page),
                    };
                    self.note(format!("manager build: {}", err_name(&e)));
                    return Err(self.refused(what, structure, &e));
                }
            }
        };
        let det = recovery.detector().clone();
        let repairer = recovery.repairer().clone();
        let snap = recovery.snapshots().cloned();
        if let Some(s) = &snap {
            if s.manifest_rebuilt().is_some() {
                self.note("snapshot manifest rebuilt".into());
                self.observe("snapshots", None, Structure::Manifest);
            }
            repairer
                .add_fallback(Arc::new(s.page_source()))
                .expect("fallback");
        }
        *self.snap_slot.lock() = snap.clone();
        // Every failure on the manager's bus, seen by the simulator as it
        // is sent (for the trace and the coverage table), in order.
        let reported = self.reported.clone();
        let _ = recovery.failure_sink().clone().with_callback(Arc::new(
            move |f: &selfheal::Failure| {
                reported.lock().push(f.clone());
            },
        ));
        let _ = self.hook_repairer.set(repairer.clone());
        // Startup recovery: the run marker's verdict, the journal's losers
        // rolled back, the pages they touched verified, the previous run's
        // open incidents and suspects queued.
        let started = recovery.start();
        let mgr = recovery.rollback_manager();
        match (started, &mgr) {
            (Ok(s), Some(_)) => {
                let r = &s.rollback;
                for d in &r.damage {
                    self.note(format!("journal damage at open: {d:?}"));
                }
                self.note(format!(
                    "journal recovered: {} rolled back, {} blocked, {} replaced; {} pages verified, {} failed; {} incidents resumed, {} suspects, {} escalations restored",
                    r.rolled_back.len(),
                    r.blocked.len(),
                    r.undo_entries_replaced,
                    s.pages_verified,
                    s.pages_failed.len(),
                    s.incidents_resumed,
                    s.suspects_restored.len(),
                    s.escalations_restored,
                ));
                // (Named only: a warning's text holds the directory's path.)
                for (what, w) in [
                    ("incidents", &s.incidents_warning),
                    ("suspects", &s.suspects_warning),
                    ("escalations", &s.escalations_warning),
                ] {
                    if w.is_some() {
                        self.note(format!("startup warning about the {what}"));
                    }
                }
            }
            (Ok(_), None) => {
                self.violation("the manager started without its undo journal".into());
            }
            (Err(e), _) => {
                self.note(format!("manager start: {}", err_name(&e)));
                let structure = structure_of_message(&e.to_string());
                if structure == Some(Structure::Journal) {
                    self.observe("rollback", None, Structure::Journal);
                    return Err(self.refused("the undo journal", Structure::Journal, &e));
                }
                return Err(self.refused(
                    "the recovery manager",
                    structure.unwrap_or(Structure::Page),
                    &e,
                ));
            }
        }
        let scrub = ScrubConfig::new()
            .unlimited()
            .batch_pages(4)
            .cursor_path(self.dir.path().join("scrub.cursor"))
            .persist_every(Duration::from_secs(1))
            .pass_interval(Duration::from_millis(0))
            .clock(self.clock.clone())
            .failure_sink(recovery.failure_sink().clone())
            .build(det.clone())
            .expect("scrubber");
        let audit = recovery.audit_log().cloned();
        if let Some(a) = &audit {
            self.check_audit(a);
        }
        self.closed_seen = 0;
        self.proc = Some(Process {
            faulty,
            det,
            repairer,
            scrub,
            mgr,
            snap,
            audit,
            recovery,
        });
        Ok(())
    }

    /// The manager's configuration over the simulated disks: the detector
    /// with the host's page-LSN reader and expected-LSN hook, the replicas
    /// (called inline), the snapshots (when `with_snapshots`), the undo
    /// journal on its simulated directory with the repair hook, the audit
    /// log and the suspect registry on theirs; step mode, no scrubber of
    /// its own, the simulated clock and the run's seed.
    fn recovery_config(
        &self,
        store: Arc<dyn PageStore>,
        checksums: ChecksumPlacement,
        with_snapshots: bool,
    ) -> RecoveryConfig {
        let model = self.model.clone();
        let slot = self.snap_slot.clone();
        let detector = CorruptionConfig::new(checksums)
            .page_lsn(Arc::new(page_lsn))
            // The host's durable records (see `Model::expected_lsn`).
            .page_lsn_expectation(Arc::new(move |p: PageId| model.lock().expected_lsn(p.0)))
            .on_write(Arc::new(move |p: PageId| {
                if let Some(s) = &*slot.lock() {
                    s.note_dirty(p);
                }
            }));
        let hook = self.hook_repairer.clone();
        let rollback = RollbackConfig::with_storage(self.disks.journal.clone())
            .segment_size_bytes(8 << 10)
            .buffer_bytes(4 << 10)
            .recovery_mode(RecoveryMode::TolerateTornTail)
            .idle_mark_delay(Duration::from_secs(60))
            .repair_hook(Arc::new(move |p: PageId| match hook.get() {
                Some(r) => Ok(r.repair_page(p)?.is_repaired()),
                None => Ok(false),
            }));
        let mut cfg = RecoveryConfig::new(store, self.dir.path().join("manager"))
            .detector(detector)
            .repair(RepairConfig::new().replica_read_timeout(Duration::from_secs(60)))
            .rollback(rollback)
            .healer(HealerConfig::new().seed(self.plan.seed))
            .audit_storage(self.disks.audit.clone())
            .audit_bytes(4 << 10, 64 << 10)
            .suspect_storage(self.disks.suspects.clone())
            .recent_incidents(RECENT_MAX)
            .without_scrub()
            .mode(Mode::Automatic)
            .stepped(true)
            .clock(self.clock.clone())
            .seed(self.plan.seed);
        for r in &self.replicas {
            if r.registered {
                cfg = cfg.replica(Arc::new(InlineReplica(r.faulty.clone())));
            }
        }
        if with_snapshots {
            cfg = cfg.snapshots(
                SnapshotConfig::new(self.dir.path().join("snapshots"), PAGE_SIZE)
                    .threads(1)
                    .max_chain_len(4),
            );
        }
        cfg
    }

    /// An open refused with `e`: the expected reaction to damage done to
    /// the component's files, and a violation otherwise (a crash alone must
    /// never leave files a component cannot open).
    pub(super) fn refused(&mut self, what: &str, structure: Structure, e: &selfheal::Error) -> End {
        if !self.rotted.contains(&structure) {
            self.violation(format!(
                "{what} refused to open after a crash that damaged none of its files: {e}"
            ));
        }
        End::Refused(format!("{what}: {e}"))
    }
}
