//! Probes sent ahead: a caller that knows a page is about to be repaired
//! asks the replicas for it before the repair starts, and the repair on the
//! same thread takes the answers instead of asking again.
//!
//! The recovery manager heals a page found bad by a read on the reader's
//! thread (heal on read). Between the failing read and the repair it opens
//! the incident, diagnoses it, plans, and appends the write-ahead audit
//! records; with the probes sent first, the replicas' helper threads read
//! the page meanwhile, and [`DataRepairer::repair_page`] finds the copies
//! waiting instead of handing the probes over and waiting for them.
//!
//! # Contract
//! - **A read, never an effect.** A probe asks a replica for its status and
//!   reads the page; nothing is written, fenced or counted before the
//!   repair itself runs. Probes the repair does not take (the incident took
//!   another remedy, was deferred, or the thread healed another page) are
//!   dropped with the [`Ahead`] guard, which cancels each read not yet
//!   started.
//! - **Taken only when still true.** The repair takes the probes only for
//!   the same page and the same fault (the page's registry epoch: a host
//!   write in between, and a fault found after it, is another fault), on
//!   the same thread, when the page still needs the LSN it needed when
//!   they were sent, the repairer's replicas are the same ones, every
//!   replica was asked (none refused as hung or cooling off), and they
//!   were sent less than one
//!   [`replica_read_timeout`](crate::RepairConfig::replica_read_timeout)
//!   ago — so a heal that waited for an approval, a backoff or a snapshot
//!   asks afresh. Otherwise they are dropped (reads not started
//!   withdrawn) before the repair asks again. Every copy taken is verified
//!   and ranked exactly as a copy the repair asked for itself.
//! - **Deadlines.** The answers of probes taken are waited for with one
//!   deadline from when the repair takes them, as a survey's; an answer
//!   that came before then is never late.
//! - **Not for inline replicas.** A replica called on the caller's thread
//!   would answer at once; no probe is sent ahead when the repairer has
//!   one.
//! - **One page per thread.** A thread holds the probes of at most one page
//!   at a time; sending new ones drops the old.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::courier::CallFailure;
use super::replica_read::StatusCall;
use super::{DataRepairer, ReplicaEntry};
use crate::types::{Lsn, PageId};

/// Probes of one page, sent before its repair (see the module docs).
pub(crate) struct ProbeAhead {
    pub(super) page: PageId,
    /// The epoch of the page's fault when the probes were sent.
    pub(super) epoch: u64,
    /// When they were sent.
    pub(super) sent: Instant,
    /// The LSN the page needed when the probes were sent.
    pub(super) needed: Option<Lsn>,
    /// The repairer's replicas when the probes were sent, in order.
    pub(super) replicas: Vec<ReplicaEntry>,
    /// Per replica, its probe or why it could not be asked.
    pub(super) asked: Vec<Result<StatusCall, CallFailure>>,
}

impl ProbeAhead {
    /// Whether the repair of `page`'s fault `epoch`, needing `needed`, by a
    /// repairer whose replicas are `now` and whose calls may take
    /// `read_timeout`, may take these probes: same page, same fault, same
    /// needed LSN, same replicas, every replica asked, and sent less than
    /// one read timeout ago.
    pub(super) fn fits(
        &self,
        page: PageId,
        epoch: u64,
        needed: Option<Lsn>,
        now: &[ReplicaEntry],
        read_timeout: Duration,
    ) -> bool {
        self.page == page
            && self.epoch == epoch
            && self.sent.elapsed() <= read_timeout
            && self.asked.iter().all(Result::is_ok)
            && self.needed == needed
            && self.replicas.len() == now.len()
            && self
                .replicas
                .iter()
                .zip(now)
                .all(|(a, b)| Arc::ptr_eq(&a.reader, &b.reader))
    }
}

thread_local! {
    /// The probes this thread sent ahead, until a repair takes them.
    static AHEAD: RefCell<Option<ProbeAhead>> = const { RefCell::new(None) };
}

/// Holds the probes sent ahead on this thread; dropping it drops those not
/// taken (cancelling their reads not yet started).
#[must_use = "the probes are dropped with the guard"]
pub(crate) struct Ahead(());

impl Ahead {
    /// Sends `repairer`'s probes of `page` ahead of its repair on this
    /// thread (nothing when a repair would not probe: see
    /// [`DataRepairer::probe_ahead`]).
    pub(crate) fn send(repairer: &DataRepairer, page: PageId) -> Ahead {
        let probes = repairer.probe_ahead(page);
        let old = AHEAD.with(|a| a.replace(probes));
        drop(old);
        Ahead(())
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // Taken out before it is dropped: a probe's drop never runs with
        // the cell borrowed.
        let left = AHEAD.with(|a| a.borrow_mut().take());
        drop(left);
    }
}

/// The probes of `page` sent ahead on this thread, if any (taken: a
/// second repair asks afresh).
pub(super) fn take(page: PageId) -> Option<ProbeAhead> {
    AHEAD.with(|a| {
        let mut a = a.borrow_mut();
        if a.as_ref().is_some_and(|p| p.page == page) {
            a.take()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{ChecksumPlacement, ChecksumTable};
    use crate::corruption::{CorruptionConfig, CorruptionDetector};
    use crate::host::PageStore;
    use crate::repair::RepairConfig;
    use crate::store::{MemStore, StoreReplica};
    use crate::testing::{Damage, FaultyReplica, FaultyStore};

    const PS: usize = 512;

    fn placements() -> Vec<ChecksumPlacement> {
        vec![
            ChecksumPlacement::Trailer,
            ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(PS).unwrap())),
        ]
    }

    struct Rig {
        raw: Arc<FaultyStore>,
        det: Arc<CorruptionDetector>,
        mirror: Arc<MemStore>,
        replica: Arc<FaultyReplica>,
        repairer: DataRepairer,
    }

    /// Four sealed pages mirrored on one counted replica; `bad` pages
    /// damaged and found by a verified read (fenced).
    fn rig(placement: ChecksumPlacement, bad: &[u64]) -> Rig {
        let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(PS, 4).unwrap())));
        let det = Arc::new(CorruptionConfig::new(placement).build(raw.clone()).unwrap());
        let mirror = Arc::new(MemStore::new(PS, 4).unwrap());
        for p in 0..4u64 {
            let mut b = vec![p as u8 + 7; PS];
            det.write_sealed(PageId(p), &mut b).unwrap();
            let mut sealed = vec![0u8; PS];
            raw.read_page(PageId(p), &mut sealed).unwrap();
            mirror.write_page(PageId(p), &sealed).unwrap();
        }
        let replica = Arc::new(FaultyReplica::new(Arc::new(StoreReplica::new(
            "mirror",
            mirror.clone(),
        ))));
        let repairer = RepairConfig::new().build(det.clone()).unwrap();
        repairer.add_replica(replica.clone()).unwrap();
        for &p in bad {
            raw.damage(PageId(p), Damage::BitFlip { byte: 9, bit: 1 })
                .unwrap();
            let mut b = vec![0u8; PS];
            assert!(det.read_verified(PageId(p), &mut b).is_err());
        }
        Rig {
            raw,
            det,
            mirror,
            replica,
            repairer,
        }
    }

    impl Rig {
        fn healed(&self, p: u64) -> bool {
            let (mut a, mut b) = (vec![0u8; PS], vec![0u8; PS]);
            self.raw.read_page(PageId(p), &mut a).unwrap();
            self.mirror.read_page(PageId(p), &mut b).unwrap();
            a == b && self.det.read_verified(PageId(p), &mut a).is_ok()
        }
    }

    #[test]
    fn the_repair_takes_the_copy_read_ahead() {
        for placement in placements() {
            let r = rig(placement, &[1]);
            let guard = Ahead::send(&r.repairer, PageId(1));
            assert!(r.repairer.repair_page(PageId(1)).unwrap().is_repaired());
            assert!(r.healed(1));
            assert_eq!(r.replica.reads(), 1, "read once: ahead, not again");
            assert!(take(PageId(1)).is_none(), "taken by the repair");
            drop(guard);
            // A second repair on this thread asks afresh.
            r.raw
                .damage(PageId(1), Damage::BitFlip { byte: 3, bit: 0 })
                .unwrap();
            let mut b = vec![0u8; PS];
            assert!(r.det.read_verified(PageId(1), &mut b).is_err());
            assert!(r.repairer.repair_page(PageId(1)).unwrap().is_repaired());
            assert_eq!(r.replica.reads(), 2);
        }
    }

    #[test]
    fn probes_of_another_page_stay_and_are_dropped_with_the_guard() {
        for placement in placements() {
            let r = rig(placement, &[1, 2]);
            let guard = Ahead::send(&r.repairer, PageId(1));
            assert!(r.repairer.repair_page(PageId(2)).unwrap().is_repaired());
            assert!(r.healed(2));
            AHEAD.with(|a| {
                assert_eq!(a.borrow().as_ref().map(|p| p.page), Some(PageId(1)));
            });
            drop(guard);
            assert!(AHEAD.with(|a| a.borrow().is_none()), "dropped");
            assert!(r.repairer.repair_page(PageId(1)).unwrap().is_repaired());
            assert!(r.healed(1));
        }
    }

    #[test]
    fn probes_fit_only_the_same_fault_replicas_and_lsn_all_asked_and_recent() {
        for placement in placements() {
            let r = rig(placement.clone(), &[1]);
            let mut ahead = r
                .repairer
                .probe_ahead(PageId(1))
                .expect("fenced, one replica");
            let now = r.repairer.replicas.read().clone();
            let (e, n, t) = (ahead.epoch, ahead.needed, r.repairer.read_timeout);
            assert!(ahead.fits(PageId(1), e, n, &now, t));
            assert!(!ahead.fits(PageId(2), e, n, &now, t), "another page");
            assert!(!ahead.fits(PageId(1), e + 1, n, &now, t), "another fault");
            assert!(!ahead.fits(PageId(1), e, Some(Lsn(u64::MAX)), &now, t));
            assert!(!ahead.fits(PageId(1), e, n, &[], t), "other replicas");
            // Sent longer ago than a read may take: a status that old is
            // not the replica's now.
            assert!(!ahead.fits(PageId(1), e, n, &now, Duration::ZERO));
            if let Some(earlier) = Instant::now().checked_sub(t * 2) {
                ahead.sent = earlier;
                assert!(!ahead.fits(PageId(1), e, n, &now, t), "too old");
                ahead.sent = Instant::now();
            }
            // A replica refused when the probes were sent (hung, cooling
            // off) is asked again by the repair, not skipped for it.
            ahead.asked[0] = Err(now[0].reader.refused("cooling off".into()));
            assert!(!ahead.fits(PageId(1), e, n, &now, t), "one was refused");
        }
    }

    #[test]
    fn a_replica_added_after_the_probes_is_asked_by_the_repair() {
        for placement in placements() {
            let r = rig(placement.clone(), &[1]);
            let guard = Ahead::send(&r.repairer, PageId(1));
            let second = Arc::new(MemStore::new(PS, 4).unwrap());
            let mut b = vec![0u8; PS];
            r.mirror.read_page(PageId(1), &mut b).unwrap();
            second.write_page(PageId(1), &b).unwrap();
            let second = Arc::new(FaultyReplica::new(Arc::new(StoreReplica::new(
                "second", second,
            ))));
            r.repairer.add_replica(second.clone()).unwrap();
            assert!(r.repairer.repair_page(PageId(1)).unwrap().is_repaired());
            assert!(r.healed(1));
            assert_eq!(second.reads(), 1, "the repair surveyed afresh");
            drop(guard);
        }
    }

    /// A copy read ahead, then the host rewrites the page and it goes bad
    /// again: the repair of the new fault never writes the old copy (it
    /// would undo the host's write).
    #[test]
    fn a_copy_read_before_the_host_rewrote_the_page_is_not_written() {
        for placement in placements() {
            let r = rig(placement.clone(), &[1]);
            let guard = Ahead::send(&r.repairer, PageId(1));
            let until = Instant::now() + Duration::from_secs(10);
            while r.replica.reads() == 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(r.replica.reads(), 1, "the old copy was read ahead");
            // The host writes the page (its newer version reaches the
            // replica), then the page goes bad again: a new fault.
            let mut newer = vec![0xEE; PS];
            r.det.write_sealed(PageId(1), &mut newer).unwrap();
            let mut sealed = vec![0u8; PS];
            r.raw.read_page(PageId(1), &mut sealed).unwrap();
            r.mirror.write_page(PageId(1), &sealed).unwrap();
            r.raw
                .damage(PageId(1), Damage::BitFlip { byte: 9, bit: 1 })
                .unwrap();
            let mut b = vec![0u8; PS];
            assert!(r.det.read_verified(PageId(1), &mut b).is_err());
            assert!(r.repairer.repair_page(PageId(1)).unwrap().is_repaired());
            assert!(r.healed(1));
            r.raw.read_page(PageId(1), &mut b).unwrap();
            assert_eq!(b, sealed, "the host's newer page, not the copy read ahead");
            assert_eq!(r.replica.reads(), 2, "asked afresh");
            drop(guard);
        }
    }

    #[test]
    fn nothing_is_sent_when_a_replica_is_called_inline() {
        for placement in placements() {
            let r = rig(placement.clone(), &[1]);
            let inline = RepairConfig::new().build(r.det.clone()).unwrap();
            inline
                .add_replica(Arc::new(
                    StoreReplica::new("inline", r.mirror.clone()).call_inline(true),
                ))
                .unwrap();
            assert!(inline.probe_ahead(PageId(1)).is_none());
        }
    }

    #[test]
    fn nothing_is_sent_for_a_page_that_is_not_fenced_or_without_replicas() {
        for placement in placements() {
            let r = rig(placement.clone(), &[]);
            assert!(r.repairer.probe_ahead(PageId(0)).is_none(), "not fenced");
            let bare = RepairConfig::new().build(r.det.clone()).unwrap();
            r.raw
                .damage(PageId(0), Damage::BitFlip { byte: 9, bit: 1 })
                .unwrap();
            let mut b = vec![0u8; PS];
            assert!(r.det.read_verified(PageId(0), &mut b).is_err());
            assert!(bare.probe_ahead(PageId(0)).is_none(), "no replica");
            assert_eq!(r.replica.reads(), 0, "nothing was read");
            assert!(r.repairer.probe_ahead(PageId(0)).is_some(), "fenced now");
        }
    }
}
