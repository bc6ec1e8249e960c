//! The simulated replicas: an in-memory store under a fault injector each,
//! called inline by the repairer; how they go down, lag, catch up and come
//! back, and how acknowledged writes are shipped to them.
//!
//! Replica 1 is never faulted unless the run has no redundancy: it always
//! holds every acknowledged version once it has caught up.

use std::sync::Arc;

use selfheal::testing::FaultyReplica;
use selfheal::{MemStore, PageId, PageStore, Replica, ReplicaId, ReplicaLag, ReplicaStatus};

use super::super::model::Version;
use super::super::plan::REPLICAS;
use super::World;

/// A replica the repairer may call on its own thread: the fault injector
/// over an in-memory store, which never blocks unless told to hang (the
/// simulator never does), so repairs run on the simulator's thread.
#[derive(Debug)]
pub(super) struct InlineReplica(pub(super) Arc<FaultyReplica>);

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
pub(super) struct SimReplica {
    pub(super) pages: Arc<MemStore>,
    pub(super) faulty: Arc<FaultyReplica>,
    /// Steps left down (0: up).
    pub(super) down_for: u32,
    /// Steps left lagging (0: current).
    pub(super) lag_for: u32,
    /// Registered with the repairer.
    pub(super) registered: bool,
}

impl World {
    /// Applies the replica state the plan and the step count say.
    pub(super) fn tick_replicas(&mut self) {
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
    pub(super) fn catch_up(&mut self, r: usize) {
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
    pub(super) fn replicate(&mut self, page: u64, v: &Version) {
        for rep in &self.replicas {
            if rep.down_for == 0 && rep.lag_for == 0 {
                rep.pages
                    .write_page(PageId(page), &v.page)
                    .expect("replica write");
            }
        }
    }
}
