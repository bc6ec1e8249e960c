//! A simulated crash and what follows it: the disks lose, keep, reorder or
//! tear what was not synced (as the fault's seed says), file damage queued
//! by the plan is done while the process is down, a new process boots, and
//! the host's own recovery writes back the acknowledged version of every
//! page that may hold a write it never acknowledged.
//!
//! After the restart every page is checked against the model before the
//! host's recovery runs: the journal's recovery must leave nothing
//! uncommitted visible.

use std::path::PathBuf;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use selfheal::testing::{CrashDir, CrashFiles, CrashSwitch};
use selfheal::PageId;

use super::super::model::Version;
use super::super::plan::{Structure, PAGES};
use super::{err_name, Disks, End, World};

impl World {
    /// Kills the process: every later write of the dead process fails, what
    /// was not synced is lost, kept, reordered or torn as `seed` says, the
    /// file damage queued is done, and a new process boots.
    pub(super) fn crash(&mut self, seed: u64) -> Result<(), End> {
        self.disks.switch.arm_at(0);
        // What the dying process closed (heals on read) is checked first.
        self.check_closed();
        if let Some(p) = self.proc.take() {
            *self.snap_slot.lock() = None;
            // Killed: nothing is saved, synced or marked.
            if let Err(e) = p.recovery.abandon() {
                self.note(format!("abandon: {}", err_name(&e)));
            }
            drop(p);
        }
        // Failures sent as it died die with it.
        self.reported.lock().clear();
        self.hook_repairer = Arc::new(std::sync::OnceLock::new());
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
        let suspects = self.disks.suspects.crash(Some(seed.rotate_left(29)));
        for (structure, s) in std::mem::take(&mut self.file_rot) {
            self.rotted.insert(structure);
            self.rot_file(structure, s, &journal, files.as_ref(), &audit);
        }
        self.disks = Disks {
            store: Arc::new(store.with_switch(switch.clone())),
            files: files.map(|f| Arc::new(f.with_switch(switch.clone()))),
            journal: Arc::new(journal.with_switch(switch.clone())),
            audit: Arc::new(audit.with_switch(switch.clone())),
            suspects: Arc::new(suspects.with_switch(switch.clone())),
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
    pub(super) fn settle(&mut self) {
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

    pub(super) fn rot_file(
        &mut self,
        s: Structure,
        seed: u64,
        journal: &CrashDir,
        files: Option<&CrashFiles>,
        audit: &CrashFiles,
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
            Structure::AuditLog => {
                let names = audit.names();
                if !names.is_empty() {
                    let name = names[(seed as usize) % names.len()].clone();
                    let b = audit.file(&name).unwrap_or_default();
                    audit.set_file(&name, flip(b));
                    self.note(format!("rot audit file {name}"));
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
}
