//! The components that protect one database file, built once its page size
//! is known: the detector over the sidecar table, the repairer with the
//! replicas and snapshots as its sources, and the background work — a
//! scrub and periodic snapshots — either run by the VFS itself or, with
//! [`SqliteConfig::recovery`](super::SqliteConfig::recovery), owned by an
//! [`AutoRecoveryManager`] that also heals on read.
//!
//! # Contract
//! - Every page the detector writes (SQLite's batches, a repair's) is
//!   noted dirty to the snapshots, and every write of the file holds a
//!   ticket of the snapshots' gate, so a snapshot sees no write half done
//!   and an incremental one misses no page.
//! - The file is adopted (or its unsealed pages forgotten) by `prepare`
//!   before any background work starts.
//! - [`Protected::stop`] ends the background work, bounded; a manager is
//!   stopped cleanly so that its next start is no crash recovery, and the
//!   settle thread flushes the table's log once more.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use super::config::Shared;
use super::first_page::FirstPage;
use super::identity::PageOneCopy;
use super::replica::{FileReplica, NewestOnly};
use super::settle::Settler;
use super::snapshots::SnapshotSource;
use super::store::SqlitePageStore;
use crate::error::{Error, Result};
use crate::host::{PageStore, Replica};
use crate::scrub::Scrubber;
use crate::snapshot::{
    Consistency, PeriodicConfig, PeriodicSnapshots, SnapshotKind, SnapshotReport, SnapshotRequest,
    WriteGate, WriteTicket,
};
use crate::types::Lsn;
use crate::{
    AutoRecoveryManager, ChecksumPlacement, ChecksumTable, CorruptionConfig, CorruptionDetector,
    DataRepairer, RecoveryConfig, RepairConfig, ScrubConfig, SnapshotConfig, StateSnapshotManager,
};

/// Adopts the file (or forgets its unsealed pages) through the detector.
pub(super) type Prepare<'a> =
    dyn Fn(&Arc<CorruptionDetector>, &Arc<SqlitePageStore>) -> Result<()> + 'a;

/// What [`Protected::build`] needs.
pub(super) struct Parts<'a> {
    /// The database file.
    pub(super) path: &'a Path,
    /// The VFS's configuration and bus.
    pub(super) shared: &'a Shared,
    /// The file's sidecar checksum table.
    pub(super) table: Arc<ChecksumTable>,
    /// The file as pages.
    pub(super) store: Arc<SqlitePageStore>,
    /// The byte copies of the file to repair from.
    pub(super) replica_paths: Vec<PathBuf>,
    /// Adopts the file (or forgets its unsealed pages) through the
    /// detector, before anything runs in the background.
    pub(super) prepare: &'a Prepare<'a>,
}

/// The components over one file.
pub(super) struct Protected {
    pub(super) page_size: usize,
    pub(super) table: Arc<ChecksumTable>,
    pub(super) store: Arc<SqlitePageStore>,
    pub(super) det: Arc<CorruptionDetector>,
    pub(super) repairer: Arc<DataRepairer>,
    /// The snapshots, when configured.
    pub(super) snapshots: Option<Snapshots>,
    /// The verified bytes of the first page, while no write was issued.
    pub(super) first: Arc<FirstPage>,
    /// The manager that owns the components, when configured.
    pub(super) manager: Option<Arc<AutoRecoveryManager>>,
    /// The VFS's own background scrub, when configured without a manager;
    /// stopped (bounded) on drop.
    _scrub: Option<Scrubber>,
    /// Makes the table's settle records durable after each `xSync`.
    pub(super) settler: Settler,
}

/// The snapshots of one file: the manager, the gate every write of the
/// file holds a ticket of while a snapshot may pause it, and the count of
/// write batches, which stands for the LSN of the state a snapshot holds.
pub(super) struct Snapshots {
    manager: Arc<StateSnapshotManager>,
    gate: Arc<WriteGate>,
    pub(super) batches: Arc<AtomicU64>,
    /// The VFS's own periodic thread (a recovery manager runs its own).
    _periodic: Option<PeriodicSnapshots>,
}

impl Protected {
    /// Builds the components over `parts.store` (see the module docs).
    pub(super) fn build(parts: Parts<'_>) -> Result<Protected> {
        let Parts {
            path,
            shared,
            table,
            store,
            replica_paths,
            prepare,
        } = parts;
        let config = &shared.config;
        let page_size = store.page_size();
        let name = path
            .file_name()
            .ok_or_else(|| Error::config("path", format!("{} names no file", path.display())))?;
        // Every replica serves only a page's newest version (see
        // `NewestOnly`): the table accepts older ones until a sync.
        // Page 1 of a backup-API copy is also tried with its rewritten
        // header fields taken from the database's own header.
        let first = Arc::new(FirstPage::default());
        let own: Arc<dyn PageStore> = store.clone();
        let replicas: Vec<Arc<dyn Replica>> = replica_paths
            .into_iter()
            .map(|p| Arc::new(FileReplica::new(p, page_size)) as Arc<dyn Replica>)
            .chain(config.replicas.iter().cloned())
            .chain(std::iter::once(
                Arc::new(PageOneCopy::new(path, page_size)) as Arc<dyn Replica>
            ))
            .map(|r| Arc::new(NewestOnly::new(r, &table, &first, &own)) as Arc<dyn Replica>)
            .collect();
        // The detector is built before the snapshot manager under a
        // recovery manager, so the notices go through a cell; a weak one,
        // or the detector and the snapshot manager would keep each other
        // (and the file's sidecar table) alive once the file is closed.
        let noted: Arc<OnceLock<Weak<StateSnapshotManager>>> = Arc::default();
        let dropped = first.clone();
        let noted_by = noted.clone();
        let detector = CorruptionConfig::new(ChecksumPlacement::Sidecar(table.clone())).on_write(
            Arc::new(move |page| {
                if page.0 == 0 {
                    dropped.invalidate();
                }
                if let Some(s) = noted_by.get().and_then(Weak::upgrade) {
                    s.note_dirty(page);
                }
            }),
        );
        let gate = Arc::new(WriteGate::new());
        let batches = Arc::new(AtomicU64::new(0));
        let counted = batches.clone();
        let lsn = Arc::new(move || Lsn(counted.load(Ordering::Acquire)));
        let snapshot_config = |dir: &Path| {
            let mut c =
                SnapshotConfig::new(dir.join(name), page_size).failure_sink(shared.sink.clone());
            if let Some(clock) = &config.clock {
                c = c.clock(clock.clone());
            }
            c
        };

        let (det, repairer, manager, snaps) = match &config.recovery {
            Some(dir) => {
                let mut rc = RecoveryConfig::new(store.clone(), dir.join(name)).detector(detector);
                for r in replicas {
                    rc = rc.replica(r);
                }
                rc = match config.scrub_pages_per_s {
                    Some(rate) => rc.scrub(ScrubConfig::new().pages_per_s(rate)),
                    None => rc.without_scrub(),
                };
                if let Some(clock) = &config.clock {
                    rc = rc.clock(clock.clone());
                }
                if let Some((sdir, every)) = &config.snapshots {
                    rc = rc.snapshots(snapshot_config(sdir)).periodic_snapshots(
                        PeriodicConfig::new(*every),
                        gate.clone(),
                        lsn.clone(),
                    );
                }
                let m = Arc::new(rc.build()?);
                let snaps = m.snapshots().cloned();
                (m.detector().clone(), m.repairer().clone(), Some(m), snaps)
            }
            None => {
                let mut detector = detector.failure_sink(shared.sink.clone());
                let mut repair = RepairConfig::new().failure_sink(shared.sink.clone());
                if let Some(clock) = &config.clock {
                    detector = detector.clock(clock.clone());
                    repair = repair.clock(clock.clone());
                }
                let det = Arc::new(detector.build(store.clone())?);
                let repairer = Arc::new(repair.build(det.clone())?);
                for r in replicas {
                    repairer.add_replica(r)?;
                }
                let snaps = match &config.snapshots {
                    Some((sdir, _)) => Some(Arc::new(snapshot_config(sdir).build()?)),
                    None => None,
                };
                (det, repairer, None, snaps)
            }
        };
        if let Some(s) = &snaps {
            let _ = noted.set(Arc::downgrade(s));
            repairer.add_fallback(Arc::new(SnapshotSource::new(s, &table)))?;
        }
        prepare(&det, &store)?;
        let settler = Settler::start(
            table.clone(),
            config
                .clock
                .clone()
                .unwrap_or_else(crate::SystemClock::shared),
            shared.sink.clone(),
        )?;

        let mut scrub = None;
        let mut periodic = None;
        match &manager {
            Some(m) => {
                m.start()?;
            }
            None => {
                if let (Some(s), Some((_, every))) = (&snaps, &config.snapshots) {
                    let p =
                        PeriodicConfig::new(*every).build(s, store.clone(), gate.clone(), lsn)?;
                    p.start()?;
                    periodic = Some(p);
                }
                if let Some(rate) = config.scrub_pages_per_s {
                    let scrubber = ScrubConfig::new().pages_per_s(rate).build(det.clone())?;
                    scrubber.start()?;
                    scrub = Some(scrubber);
                }
            }
        }
        Ok(Protected {
            page_size,
            table,
            store,
            det,
            repairer,
            snapshots: snaps.map(|manager| Snapshots {
                manager,
                gate,
                batches,
                _periodic: periodic,
            }),
            first,
            manager,
            _scrub: scrub,
            settler,
        })
    }

    /// Holds back a snapshot while the caller writes the file.
    pub(super) fn ticket(&self) -> Option<WriteTicket<'_>> {
        self.snapshots.as_ref().map(|s| s.gate.write())
    }

    /// Tells the snapshots the file now has `pages` pages.
    pub(super) fn note_resized(&self, pages: u64) {
        self.first.invalidate();
        if let Some(s) = &self.snapshots {
            s.manager.note_resized(pages);
        }
    }

    /// Counts a batch of writes made (the snapshots' LSN).
    pub(super) fn note_batch(&self) {
        if let Some(s) = &self.snapshots {
            s.batches.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Takes a snapshot on the calling thread, writes paused meanwhile.
    pub(super) fn snapshot_now(&self) -> Result<SnapshotReport> {
        let Some(s) = &self.snapshots else {
            return Err(Error::InvalidArgument {
                what: "snapshot_now",
                reason: "no snapshots are kept; configure SqliteConfig::snapshots".into(),
            });
        };
        let pause = s.gate.pause();
        s.manager.take_snapshot(
            Consistency::Paused {
                store: self.store.as_ref(),
                pause: &pause,
                lsn: Lsn(s.batches.load(Ordering::Acquire)),
            },
            SnapshotRequest::new(SnapshotKind::Auto),
        )
    }

    /// The snapshots, oldest first.
    pub(super) fn snapshot_list(&self) -> Vec<crate::snapshot::SnapshotInfo> {
        self.snapshots
            .as_ref()
            .map(|s| s.manager.snapshots())
            .unwrap_or_default()
    }

    /// Stops the manager cleanly, when there is one (the rest stops when
    /// dropped).
    pub(super) fn stop(&self, path: &Path) {
        // The settle thread first, so that its last flush does not wait
        // behind the manager's stop; settles the manager's drain records
        // after it are flushed by the table's close.
        if let Err(e) = self.settler.stop() {
            tracing::warn!(db = %path.display(), error = %e,
                "the settle thread of a database did not stop cleanly");
        }
        if let Some(m) = &self.manager {
            if let Err(e) = m.stop() {
                tracing::warn!(db = %path.display(), error = %e,
                    "the recovery manager of a database did not stop cleanly");
            }
        }
    }
}
