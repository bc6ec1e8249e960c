//! The checks that read the whole world: every page against the model
//! (after a recovery or a restore, and at the end), the snapshots, and the
//! digest of the final state that tells two runs of a seed apart.

use std::collections::BTreeSet;

use selfheal::{PageId, PageStore};

use super::super::model::{page_lsn, usable_len};
use super::super::plan::{PAGES, PAGE_SIZE};
use super::{err_name, outcome_name, World};

impl World {
    /// Every page's bytes, read verified, are what the model allows; a page
    /// that fails verification is fine here (it is fenced and reported).
    pub(super) fn check_all_pages(&mut self, when: &str) {
        for p in 0..PAGES {
            let mut buf = vec![0u8; PAGE_SIZE];
            let r = self.det().read_verified(PageId(p), &mut buf);
            match r {
                Ok(()) => {
                    let m = self.model.lock();
                    if !m.allows(p, &buf) {
                        let d = m.describe(p, &buf);
                        drop(m);
                        self.violation(format!("{when}: a verified read returned bytes never acknowledged nor written: {d}"));
                    }
                }
                Err(e) => {
                    self.note(format!("{when}: page {p}: {}", err_name(&e)));
                    self.observe_err("detector", Some(p), &e);
                }
            }
        }
    }

    /// The end of the run: repair what is fenced, finish blocked rollbacks,
    /// and check every page (and, with redundancy, that every page is
    /// readable: a good copy was always on replica 1).
    pub fn finish(&mut self) {
        self.observed.clear();
        // Past every cooldown, the manager heals what it deferred: each
        // incident must now end healed or escalated.
        self.heal_to_the_end();
        let proc = self.proc.as_ref().expect("process");
        proc.faulty.clear();
        let repairer = proc.repairer.clone();
        let _ = repairer.repair_pending();
        if let Some(mgr) = self.proc.as_ref().expect("process").mgr.as_ref() {
            if !mgr.blocked_rollbacks().is_empty() {
                let r = mgr.rollback_all();
                self.trace.push(format!(
                    "final rollback_all: {:?}",
                    r.as_ref().map(|_| ()).map_err(err_name)
                ));
            }
        }
        for p in 0..PAGES {
            let mut buf = vec![0u8; PAGE_SIZE];
            let mut r = self.det().read_verified(PageId(p), &mut buf);
            if r.is_err() {
                let rep = repairer.repair_page(PageId(p));
                self.trace.push(format!(
                    "final repair {p}: {:?}",
                    rep.as_ref()
                        .map(|r| outcome_name(&r.outcome))
                        .map_err(err_name)
                ));
                if let Ok(selfheal::repair::RepairOutcome::Irreparable { reason }) =
                    rep.as_ref().map(|r| &r.outcome)
                {
                    self.trace.push(format!("  why: {reason}"));
                }
                r = self.det().read_verified(PageId(p), &mut buf);
            }
            match r {
                Ok(()) => {
                    let m = self.model.lock();
                    if !m.allows(p, &buf) {
                        let d = m.describe(p, &buf);
                        drop(m);
                        self.violation(format!("at the end: {d}"));
                    }
                }
                Err(e) => {
                    if self.model.lock().half_restored.contains(&p) {
                        // The sidecar table vouches for whatever version the
                        // failed restores left, which may be on no replica.
                        self.trace.push(format!(
                            "at the end page {p} left by a failed restore: {}",
                            err_name(&e)
                        ));
                    } else if !self.plan.no_redundancy {
                        self.violation(format!(
                            "at the end page {p} is unreadable ({e}) although replica 1 holds its acknowledged version"
                        ));
                    }
                }
            }
        }
        // What the final repairs and reads reported ends too.
        self.heal_to_the_end();
        // Every snapshot the model knows reads back as it was taken, or
        // fails with a typed error.
        if let Some(snap) = self.proc.as_ref().expect("process").snap.clone() {
            let snaps = self.model.lock().snapshots.clone();
            let listed: BTreeSet<u64> = snap.snapshots().iter().map(|s| s.id).collect();
            let n = usable_len(self.plan.placement);
            for (id, held) in snaps.iter().filter(|(id, _)| listed.contains(id)) {
                for (p, v) in held.iter().enumerate() {
                    let mut buf = vec![0u8; PAGE_SIZE];
                    if let Ok(true) = snap.read_page_at(*id, PageId(p as u64), &mut buf) {
                        if buf[..n] != v.page[..n] {
                            self.violation(format!(
                                "snapshot {id} page {p} reads LSN {:?}, taken at LSN {}",
                                page_lsn(&buf).map(|l| l.0),
                                v.lsn
                            ));
                        }
                    }
                }
            }
        }
        self.drain_failures();
    }

    /// A digest of the final state: the store's live and durable images, the
    /// journal, the table's files, the replicas, the model, and what each
    /// snapshot holds (not the snapshot files' bytes: they carry the wall
    /// time the manager was opened at).
    pub fn state_digest(&self) -> Vec<u8> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.disks.store.live_bytes());
        h.update(self.disks.store.durable_bytes());
        for id in self.disks.journal.segment_ids() {
            h.update(id.to_le_bytes());
            h.update(self.disks.journal.segment(id).unwrap_or_default());
        }
        h.update(self.disks.journal.state_file().unwrap_or_default());
        if let Some(f) = &self.disks.files {
            for n in f.names() {
                h.update(n.as_bytes());
                h.update(f.file(&n).unwrap_or_default());
            }
        }
        for r in &self.replicas {
            for p in 0..PAGES {
                let mut b = vec![0u8; PAGE_SIZE];
                r.pages.read_page(PageId(p), &mut b).expect("replica read");
                h.update(&b);
            }
        }
        let m = self.model.lock();
        for v in &m.acked {
            h.update(v.lsn.to_le_bytes());
        }
        for (id, vs) in &m.snapshots {
            h.update(id.to_le_bytes());
            for v in vs {
                h.update(v.lsn.to_le_bytes());
            }
        }
        if let Some(s) = self.proc.as_ref().and_then(|p| p.snap.as_ref()) {
            for i in s.snapshots() {
                h.update(i.id.to_le_bytes());
                h.update(i.stored_pages.to_le_bytes());
                h.update(i.page_count.to_le_bytes());
            }
        }
        h.finalize().to_vec()
    }
}
