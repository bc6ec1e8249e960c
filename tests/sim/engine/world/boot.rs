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
use selfheal::healer::{HealerConfig, RemedyContext};
use selfheal::rollback::{PageWriter, RecoveryMode};
use selfheal::testing::FaultyStore;
use selfheal::{
    ChecksumPlacement, CorruptionConfig, PageId, RepairConfig, RollbackConfig, ScrubConfig,
    SnapshotConfig,
};

use super::super::model::page_lsn;
use super::super::plan::{Placement, Structure, PAGES, PAGE_SIZE};
use super::replicas::InlineReplica;
use super::{err_name, End, Process, World};

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
        let model = self.model.clone();
        let slot = self.snap_slot.clone();
        let det = CorruptionConfig::new(checksums)
            .clock(self.clock.clone())
            .failure_sink(self.sink.clone())
            .page_lsn(Arc::new(page_lsn))
            // The host's durable records (see `Model::expected_lsn`).
            .page_lsn_expectation(Arc::new(move |p: PageId| model.lock().expected_lsn(p.0)))
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
    pub(super) fn refused(&mut self, what: &str, structure: Structure, e: &selfheal::Error) -> End {
        if !self.rotted.contains(&structure) {
            self.violation(format!(
                "{what} refused to open after a crash that damaged none of its files: {e}"
            ));
        }
        End::Refused(format!("{what}: {e}"))
    }
}
