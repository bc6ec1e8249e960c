//! Arming the faults of a step before its op runs: damage to pages at rest,
//! the next write or reads of a page going wrong, failing syncs of the
//! store, the journal or the table, replica states, and crashes (with the
//! file damage done while the process is down).
//!
//! Every fault is armed through the testing seams (`FaultyStore`,
//! `FaultyReplica`, the crash switch and the simulated directories) or the
//! host's own calls (a write, a verified read); none reaches into a
//! component's internals.

use std::time::Duration;

use selfheal::testing::{Damage, WriteFault};
use selfheal::{Lsn, PageId, ReplicaLag};

use super::super::plan::{Fault, PAGE_SIZE};
use super::World;

impl World {
    /// Arms `f` for the step about to run (a crash is done at the step's
    /// end, or when its operation count is reached).
    pub(super) fn arm(&mut self, f: &Fault) {
        if let Fault::TableSyncInRepair(page, d) = f {
            self.arm_table_sync_in_repair(*page, *d);
            return;
        }
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
            Fault::TableSyncInRepair(..) => unreachable!("armed above"),
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

    /// Sets up a repair of `page` that must write, with the next table sync
    /// failing: a host write of the page fails at the disk (its version
    /// stays accepted in the table, of unknown fate, newest in the page's
    /// list), the page is damaged and fenced (a verified read finds it;
    /// the report goes to the healer at the end of the step, after the
    /// repair), and the next sync of a table file fails. The repair writes
    /// back the acknowledged copy, which the table accepts, without a
    /// table record: the failure is left to the next host write.
    pub(super) fn arm_table_sync_in_repair(&mut self, page: u64, d: Damage) {
        self.proc
            .as_ref()
            .expect("process")
            .faulty
            .fail_next_write(Some(PageId(page)), WriteFault::Eio);
        self.host_write(page);
        let p = self.proc.as_ref().expect("process");
        let _ = p.faulty.damage(PageId(page), d);
        let mut buf = vec![0u8; PAGE_SIZE];
        let _ = p.det.read_verified(PageId(page), &mut buf);
        if let Some(f) = &self.disks.files {
            f.fail_syncs(1);
        }
    }
}
