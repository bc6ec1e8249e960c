//! The workload's operations: host writes and reads, transactions,
//! scrubs, repairs, snapshots, restores and replica churn, each checked
//! against the model as it returns.

use std::time::Duration;

use selfheal::scrub::ScrubStep;
use selfheal::snapshot::{Consistency, SnapshotKind, SnapshotRequest, WriteGate};
use selfheal::{Clock, Lsn, MemStore, PageId, PageStore, Replica};

use super::super::model::{page_lsn, usable_len, version, Version};
use super::super::plan::{Op, Placement, Structure, TxnEnd, PAGES, PAGE_SIZE, REPLICAS};
use super::{err_name, outcome_name, World};

impl World {
    pub(super) fn run_op(&mut self, op: &Op) {
        match op {
            Op::Write(p) => self.host_write(*p),
            Op::Read(p) => self.host_read(*p),
            Op::Txn(pages, end) => self.txn(pages, *end),
            Op::Scrub(n) => self.scrub(*n),
            Op::Repair(p) => {
                let r = self
                    .proc
                    .as_ref()
                    .expect("process")
                    .repairer
                    .repair_page(PageId(*p));
                self.after_repair(vec![r.map(|r| (r.page, r))]);
            }
            Op::RepairPending => {
                let v = self
                    .proc
                    .as_ref()
                    .expect("process")
                    .repairer
                    .repair_pending();
                self.after_repair(v.into_iter().map(|r| Ok((r.page, r))).collect());
                self.anti_entropy();
            }
            Op::Snapshot {
                incremental,
                paused,
            } => self.snapshot(*incremental, *paused),
            Op::Restore(back) => self.restore(*back),
            Op::Tick(ms) => self.clock.advance(Duration::from_millis(*ms)),
            Op::Churn => {
                let id = self.replicas[0].faulty.id();
                let repairer = self.proc.as_ref().expect("process").repairer.clone();
                repairer.remove_replica(&id);
                self.replicas[0].registered = false;
                // Caught up, and registered again.
                self.catch_up(0);
                self.note("replica 0 left and came back".into());
            }
        }
    }

    pub(super) fn host_write(&mut self, p: u64) {
        let lsn = self.lsn();
        let v = version(self.plan.placement, p, lsn);
        self.model.lock().maybe[p as usize].push(v.clone());
        let det = self.det().clone();
        let mut buf = v.page.clone();
        if let Err(e) = det.write_sealed(PageId(p), &mut buf) {
            self.note(format!("write {p}@{lsn}: {}", err_name(&e)));
            self.observe_err("detector", Some(p), &e);
            return;
        }
        match det.sync() {
            Ok(()) => {
                self.model.lock().ack(p, v.clone());
                self.replicate(p, &v);
                self.note(format!("write {p}@{lsn} acknowledged"));
            }
            Err(e) => {
                // The host cannot tell what reached the disk: it dies.
                self.note(format!("sync: {}; the host dies", err_name(&e)));
                self.observe_err("detector", None, &e);
                self.crash_due.get_or_insert(lsn);
            }
        }
    }

    fn host_read(&mut self, p: u64) {
        let mut buf = vec![0u8; PAGE_SIZE];
        match self.det().read_verified(PageId(p), &mut buf) {
            Ok(()) => {
                let m = self.model.lock();
                if !m.allows(p, &buf) {
                    let d = m.describe(p, &buf);
                    drop(m);
                    self.violation(format!(
                        "a verified read returned bytes never acknowledged nor written: {d}"
                    ));
                } else {
                    drop(m);
                    self.note(format!("read {p}: LSN {:?}", page_lsn(&buf).map(|l| l.0)));
                }
            }
            Err(e) => {
                self.note(format!("read {p}: {}", err_name(&e)));
                self.observe_err("detector", Some(p), &e);
            }
        }
    }

    fn txn(&mut self, pages: &[u64], end: TxnEnd) {
        let placement = self.plan.placement;
        let usable = usable_len(placement);
        let versions: Vec<(u64, Version)> = pages
            .iter()
            .map(|&p| {
                let l = self.lsn();
                (p, version(placement, p, l))
            })
            .collect();
        self.model.lock().in_txn.extend(pages.iter().copied());
        let proc = self.proc.as_ref().expect("process");
        let Some(mgr) = proc.mgr.as_ref() else { return };
        let det = proc.det.clone();
        let txn = match mgr.begin() {
            Ok(t) => t,
            Err(e) => {
                self.note(format!("begin: {}", err_name(&e)));
                self.observe_err("rollback", None, &e);
                return;
            }
        };
        let mut failed = None;
        for (p, v) in &versions {
            if let Err(e) = mgr.write(txn, PageId(*p), 0, &v.page[..usable]) {
                failed = Some((*p, e));
                break;
            }
        }
        let end = if let Some((p, e)) = failed {
            self.note(format!("txn {} write {p}: {}", txn.0, err_name(&e)));
            self.observe_err("rollback", Some(p), &e);
            TxnEnd::Abort
        } else {
            end
        };
        let mgr = self
            .proc
            .as_ref()
            .expect("process")
            .mgr
            .as_ref()
            .expect("mgr");
        match end {
            TxnEnd::Commit => {
                if let Err(e) = det.sync() {
                    self.note(format!(
                        "txn {} sync: {}; the host dies",
                        txn.0,
                        err_name(&e)
                    ));
                    self.observe_err("detector", None, &e);
                    self.crash_due.get_or_insert(txn.0);
                    return;
                }
                match mgr.commit(txn) {
                    Ok(_) => {
                        for (p, v) in &versions {
                            self.model.lock().ack(*p, v.clone());
                            self.model.lock().in_txn.remove(p);
                            self.replicate(*p, v);
                        }
                        self.note(format!("txn {} committed {pages:?}", txn.0));
                        let mgr = self
                            .proc
                            .as_ref()
                            .expect("process")
                            .mgr
                            .as_ref()
                            .expect("mgr");
                        // The mark the `selfheal-undo-mark` thread writes
                        // within its idle delay in real time (kept idle here
                        // for determinism): without it every commit would
                        // stay in the journal's residual window until the
                        // next batch, and journal rot while the process is
                        // down would roll it back.
                        if let Err(e) = mgr.mark_synced() {
                            self.note(format!(
                                "txn {} mark: {}; the host dies",
                                txn.0,
                                err_name(&e)
                            ));
                            self.observe_err("rollback", None, &e);
                            self.crash_due.get_or_insert(txn.0);
                        }
                    }
                    Err(e) => {
                        self.note(format!(
                            "txn {} commit: {}; the host dies",
                            txn.0,
                            err_name(&e)
                        ));
                        self.observe_err("rollback", None, &e);
                        // Whether it committed is unknown until recovery.
                        for (p, v) in &versions {
                            self.model.lock().maybe[*p as usize].push(v.clone());
                        }
                        self.crash_due.get_or_insert(txn.0);
                    }
                }
            }
            TxnEnd::Abort => match mgr.rollback(txn) {
                Ok(_) => {
                    let mut m = self.model.lock();
                    for p in pages {
                        m.in_txn.remove(p);
                    }
                    drop(m);
                    self.note(format!("txn {} rolled back", txn.0));
                }
                Err(e) => {
                    self.note(format!(
                        "txn {} rollback: {}; the host dies",
                        txn.0,
                        err_name(&e)
                    ));
                    self.observe_err("rollback", None, &e);
                    self.crash_due.get_or_insert(txn.0);
                }
            },
            TxnEnd::InFlight => {
                self.note(format!("txn {} in flight at a crash", txn.0));
                self.crash_due.get_or_insert(txn.0 ^ 0xC0FFEE);
            }
        }
    }

    fn scrub(&mut self, n: u32) {
        for _ in 0..n {
            let now = self.clock.now_ns();
            let r = self.proc.as_mut().expect("process").scrub.step(now);
            match r {
                Ok(ScrubStep::Wait { until_ns }) => self.clock.set_ns(until_ns.max(now)),
                Ok(ScrubStep::Scanned(s)) => {
                    if s.newly_corrupt > 0 || s.known_corrupt > 0 {
                        self.note(format!(
                            "scrub: {} newly corrupt, {} known",
                            s.newly_corrupt, s.known_corrupt
                        ));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.note(format!("scrub: {}", err_name(&e)));
                    self.observe_err("scrubber", None, &e);
                }
            }
        }
        let bad = self
            .det()
            .pages_in(selfheal::corruption::PageState::Suspect);
        for p in bad {
            self.observe("scrubber", Some(p.0), Structure::Page);
        }
    }

    /// The host's background pass after repairing what is fenced: an
    /// anti-entropy run over every page with one replica (the two in turn):
    /// every page it repaired must read back as the model's, as any
    /// repair's.
    fn anti_entropy(&mut self) {
        let r = self.anti_entropy_runs as usize % REPLICAS;
        self.anti_entropy_runs += 1;
        let id = self.replicas[r].faulty.id();
        let repairer = self.proc.as_ref().expect("process").repairer.clone();
        match repairer.anti_entropy(&id, 0..PAGES, 4) {
            Ok(rep) => {
                self.note(format!(
                    "anti-entropy with replica {r}: {} compared, {} fetched, {} repaired, {} diverged",
                    rep.pages_compared,
                    rep.pages_fetched,
                    rep.pages_repaired.len(),
                    rep.diverged.len()
                ));
                if !rep.repairs.is_empty() {
                    self.observe(
                        "repairer",
                        rep.repairs.first().map(|x| x.page.0),
                        Structure::Page,
                    );
                }
                self.after_repair(rep.repairs.into_iter().map(|x| Ok((x.page, x))).collect());
            }
            Err(e) => {
                self.note(format!("anti-entropy with replica {r}: {}", err_name(&e)));
                self.observe_err("repairer", None, &e);
            }
        }
    }

    fn after_repair(
        &mut self,
        reports: Vec<selfheal::Result<(PageId, selfheal::repair::RepairReport)>>,
    ) {
        for r in reports {
            match r {
                Ok((page, rep)) => {
                    let failed_replica = rep
                        .attempts
                        .iter()
                        .any(|a| !matches!(a.result, selfheal::repair::AttemptResult::Verified));
                    if failed_replica {
                        self.observe("repairer", Some(page.0), Structure::ReplicaCopy);
                    }
                    self.note(format!("repair {page}: {}", outcome_name(&rep.outcome)));
                    // A repair whose write or sync failed on the checksum
                    // table's files says so in its reason.
                    if let selfheal::repair::RepairOutcome::Irreparable { reason } = &rep.outcome {
                        if super::structure_of_message(reason) == Some(Structure::ChecksumTable) {
                            self.observe("repairer", Some(page.0), Structure::ChecksumTable);
                        }
                    }
                    if rep.is_repaired() {
                        self.observe("repairer", Some(page.0), Structure::Page);
                        let mut buf = vec![0u8; PAGE_SIZE];
                        match self.det().read_verified(page, &mut buf) {
                            Ok(()) => {
                                let m = self.model.lock();
                                if !m.allows(page.0, &buf) {
                                    let d = m.describe(page.0, &buf);
                                    drop(m);
                                    self.violation(format!(
                                        "a repaired page is not the model's: {d}"
                                    ));
                                }
                            }
                            Err(e) => {
                                // A read fault armed for the page may fail the re-read.
                                self.note(format!("re-read of repaired {page}: {}", err_name(&e)));
                            }
                        }
                    }
                }
                Err(e) => {
                    self.note(format!("repair: {}", err_name(&e)));
                    self.observe_err("repairer", None, &e);
                }
            }
        }
    }

    fn snapshot(&mut self, incremental: bool, paused: bool) {
        let proc = self.proc.as_ref().expect("process");
        let Some(snap) = proc.snap.clone() else {
            return;
        };
        let det = proc.det.clone();
        let kind = if incremental {
            SnapshotKind::Auto
        } else {
            SnapshotKind::Full
        };
        let lsn = Lsn(self.next_lsn - 1);
        let versions: Vec<Version> = self.model.lock().acked.clone();
        let r = if paused {
            let gate = WriteGate::new();
            let pause = gate.pause();
            snap.take_snapshot(
                Consistency::Paused {
                    store: &*det,
                    pause: &pause,
                    lsn,
                },
                SnapshotRequest::new(kind),
            )
        } else {
            // A point-in-time view the host copied through verified reads.
            let view = MemStore::new(PAGE_SIZE, PAGES).expect("view");
            for p in 0..PAGES {
                let mut buf = vec![0u8; PAGE_SIZE];
                if let Err(e) = det.read_verified(PageId(p), &mut buf) {
                    self.note(format!("view of {p}: {}; no snapshot", err_name(&e)));
                    self.observe_err("detector", Some(p), &e);
                    return;
                }
                view.write_page(PageId(p), &buf).expect("view write");
            }
            snap.take_snapshot(
                Consistency::View { view: &view, lsn },
                SnapshotRequest::new(kind),
            )
        };
        match r {
            Ok(rep) => {
                let id = rep.info.id;
                // The snapshot holds what the store held: the model's pages,
                // or for a page read since a write that was not acknowledged,
                // that write (the model then allows both).
                let mut held = versions;
                {
                    let m = self.model.lock();
                    for (p, v) in held.iter_mut().enumerate() {
                        if !m.maybe[p].is_empty() {
                            let mut buf = vec![0u8; PAGE_SIZE];
                            if snap
                                .read_page_at(id, PageId(p as u64), &mut buf)
                                .unwrap_or(false)
                            {
                                if let Some(w) =
                                    m.maybe[p].iter().find(|w| buf[..16] == w.page[..16])
                                {
                                    *v = w.clone();
                                }
                            }
                        }
                    }
                }
                self.model.lock().snapshots.insert(id, held);
                self.note(format!(
                    "snapshot {id} ({:?}, {} pages stored)",
                    rep.detection, rep.info.stored_pages
                ));
            }
            Err(e) => {
                self.note(format!("snapshot: {}", err_name(&e)));
                self.observe_err("snapshots", None, &e);
            }
        }
    }

    fn restore(&mut self, back: usize) {
        let proc = self.proc.as_ref().expect("process");
        let Some(snap) = proc.snap.clone() else {
            return;
        };
        let det = proc.det.clone();
        let listed: Vec<u64> = snap.snapshots().iter().map(|s| s.id).collect();
        let known: Vec<u64> = {
            let m = self.model.lock();
            listed
                .into_iter()
                .filter(|id| m.snapshots.contains_key(id))
                .collect()
        };
        if known.is_empty() {
            return;
        }
        let id = known[known.len().saturating_sub(1 + back).min(known.len() - 1)];
        let Some(mgr) = proc.mgr.as_ref() else { return };
        let prepared = mgr.prepare_restore().map(|guard| {
            // A restore that fails part way is done again at once: the
            // store holds a mix of versions until one succeeds.
            let r = snap.restore(id, &*det).or_else(|_| snap.restore(id, &*det));
            drop(guard);
            r
        });
        let r = match prepared {
            Ok(r) => r,
            Err(e) => {
                self.note(format!("prepare restore: {}", err_name(&e)));
                self.observe_err("rollback", None, &e);
                return;
            }
        };
        let held = self.model.lock().snapshots[&id].clone();
        match r {
            Ok(_) => {
                for (p, v) in held.iter().enumerate() {
                    self.model.lock().ack(p as u64, v.clone());
                }
                for r in 0..REPLICAS {
                    if self.replicas[r].down_for == 0 {
                        self.catch_up(r);
                    } else {
                        // It still holds the versions the restore replaced:
                        // no repair source until it is re-seeded when it
                        // comes back (the README's rule for replicas that
                        // may hold replaced writes under the trailer).
                        let id = self.replicas[r].faulty.id();
                        self.proc
                            .as_ref()
                            .expect("process")
                            .repairer
                            .remove_replica(&id);
                        self.replicas[r].registered = false;
                        self.replicas[r].lag_for = self.replicas[r].lag_for.max(1);
                    }
                }
                self.note(format!("restored snapshot {id}"));
                self.check_all_pages("after a restore");
            }
            Err(e) => {
                self.note(format!("restore {id}: {}", err_name(&e)));
                self.observe_err("snapshots", None, &e);
                let written = match &e {
                    selfheal::Error::SnapshotDamaged { target_written, .. } => *target_written,
                    selfheal::Error::UnverifiedSnapshot { .. }
                    | selfheal::Error::SnapshotNotFound { .. }
                    | selfheal::Error::NoUsableSnapshot { .. }
                    | selfheal::Error::RestoreTargetSize { .. } => false,
                    _ => true,
                };
                if !written {
                    return;
                }
                self.model.lock().half_restored.extend(0..PAGES);
                {
                    // A restore that failed part way may have left any page
                    // at the version of any member of the snapshot's chain
                    // (the model does not keep chains: every older one).
                    let mut m = self.model.lock();
                    let members: Vec<Vec<Version>> =
                        m.snapshots.range(..=id).map(|(_, v)| v.clone()).collect();
                    for vs in members {
                        for (p, v) in vs.into_iter().enumerate() {
                            if !m.maybe[p].contains(&v) {
                                m.maybe[p].push(v);
                            }
                        }
                    }
                }
                if self.plan.placement != Placement::SidecarMem {
                    // The store is part restored: the host starts over.
                    self.crash_due.get_or_insert(id);
                }
            }
        }
    }
}
