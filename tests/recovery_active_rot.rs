//! Goal: a page that rots while a transaction that wrote it is still active
//! is healed to its last write — the transaction's — even though no replica
//! holds that write (it was never shipped), and the transaction then commits
//! or rolls back as if nothing had happened.
//! Method: the recovery manager over sealed pages with a mirror replica that
//! holds only committed pages; a transaction writes a page through the
//! manager's rollback manager, the page's stored bytes are damaged behind
//! the detector's back, and a verified read (healed on the reader's thread,
//! or on the bus by a recovery thread) must return the transaction's bytes;
//! the store is checked after the commit or the rollback. The host syncs
//! its store after the transaction's writes, so that a durable table has
//! settled them (before that sync it still accepts the page's version
//! before the write: README, Limits). Run under the
//! in-memory and the durable sidecar table, which know the checksum of the
//! page's last write, so that only the transaction's version is accepted;
//! under the trailer placement without a page-LSN reader the replica's
//! committed copy verifies by its own trailer (the stale-copy limit in the
//! README), so that placement is not run here.

mod recovery_common;

use std::time::Duration;

use recovery_common::*;
use selfheal::healer::{Incident, Outcome};
use selfheal::testing::sidecar_placements;
use selfheal::{Error, PageId};

const IDLE: Duration = Duration::from_secs(20);
const P: u64 = 4;

fn rebuilt(i: &Incident) -> bool {
    i.attempts
        .iter()
        .flat_map(|a| &a.evidence)
        .any(|e| e.contains("rebuilt with the undo held for the page"))
}

fn healed_by(i: &Incident) -> Option<&str> {
    match &i.outcome {
        Outcome::Healed { remedy } => Some(remedy),
        _ => None,
    }
}

#[test]
fn a_page_rotted_under_an_active_transaction_is_rebuilt_with_its_write() {
    for ((name, placement), heal_on_read, commit) in
        sidecar_placements(PS).into_iter().flat_map(|p| {
            [
                (p.clone(), true, true),
                (p.clone(), true, false),
                (p, false, true),
            ]
        })
    {
        let what = format!("{name} heal_on_read={heal_on_read} commit={commit}");
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = rig(placement, 8, dir.path(), |c| c.heal_on_read(heal_on_read));
        m.start().unwrap();
        let rb = m.rollback_manager().unwrap();
        let committed = bytes(raw.as_ref(), P);
        let t = rb.begin().unwrap();
        rb.write(t, PageId(P), 64, b"in flight, never shipped")
            .unwrap();
        // The host syncs its store (a durable table settles the write).
        m.detector().sync().unwrap();
        let written = bytes(raw.as_ref(), P);
        assert_ne!(written, committed);
        assert_eq!(bytes(mirror.as_ref(), P), committed, "never shipped");
        damage(&raw, P);
        let mut b = vec![0u8; PS];
        if heal_on_read {
            m.detector()
                .read_verified(PageId(P), &mut b)
                .unwrap_or_else(|e| panic!("{what}: {e}; {:#?}", m.incidents()));
        } else {
            read_finds(&m, P);
            assert!(m.wait_idle(IDLE), "{what}");
            m.detector()
                .read_verified(PageId(P), &mut b)
                .unwrap_or_else(|e| panic!("{what}: {e}; {:#?}", m.incidents()));
        }
        assert_eq!(b, written, "{what}: the transaction's write is back");
        assert!(m.wait_idle(IDLE), "{what}");
        let incidents = m.incidents();
        assert_eq!(incidents.len(), 1, "{what}: {incidents:#?}");
        assert_eq!(
            healed_by(&incidents[0]),
            Some("repair-from-replicas"),
            "{what}: {incidents:#?}"
        );
        assert!(rebuilt(&incidents[0]), "{what}: {incidents:#?}");
        assert_eq!(m.repairer().stats().repaired_by_rebuild, 1, "{what}");
        assert!(rb.active_transactions().contains(&t), "{what}");
        if commit {
            rb.commit(t).unwrap();
            assert_eq!(bytes(raw.as_ref(), P), written, "{what}");
        } else {
            rb.rollback(t).unwrap();
            assert_eq!(bytes(raw.as_ref(), P), committed, "{what}");
        }
        m.detector().read_verified(PageId(P), &mut b).unwrap();
        drop(rb);
        m.stop().unwrap();
    }
}

/// Pages found bad together are healed as one page set, repaired in one
/// batch: each page of the batch that no replica holds is rebuilt too.
#[test]
fn pages_rotted_together_under_an_active_transaction_are_rebuilt_in_one_batch() {
    for (name, placement) in sidecar_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, _mirror, m) = rig(placement, 8, dir.path(), |c| c);
        m.start().unwrap();
        let rb = m.rollback_manager().unwrap();
        let t = rb.begin().unwrap();
        let pages = [2u64, 3, 5];
        for &p in &pages {
            rb.write(t, PageId(p), 8 * p as usize, b"never shipped")
                .unwrap();
        }
        m.detector().sync().unwrap();
        let written: Vec<Vec<u8>> = pages.iter().map(|&p| bytes(raw.as_ref(), p)).collect();
        for &p in &pages {
            damage(&raw, p);
        }
        for &p in &pages {
            read_finds(&m, p);
        }
        assert!(m.wait_idle(IDLE), "{name}");
        for (&p, w) in pages.iter().zip(&written) {
            let mut b = vec![0u8; PS];
            m.detector()
                .read_verified(PageId(p), &mut b)
                .unwrap_or_else(|e| panic!("{name} page {p}: {e}; {:#?}", m.incidents()));
            assert_eq!(&b, w, "{name} page {p}");
        }
        let stats = m.stats();
        assert_eq!(stats.escalated, 0, "{name}: {:#?}", m.incidents());
        assert_eq!(m.repairer().stats().repaired_by_rebuild, 3, "{name}");
        rb.commit(t).unwrap();
        for (&p, w) in pages.iter().zip(&written) {
            assert_eq!(&bytes(raw.as_ref(), p), w, "{name} page {p}");
        }
        drop(rb);
        m.stop().unwrap();
    }
}

/// A page that rots under its transaction and is found by that
/// transaction's next write of it: the write reads the page holding the
/// page's latch, so the heal on the writer's thread cannot rebuild it
/// there (the rebuild needs the latch). The rebuild is refused at once —
/// the write fails without waiting for a latch only its own caller holds —
/// and the rollback the host then asks for rebuilds the page and puts the
/// committed version back.
#[test]
fn a_write_that_finds_its_own_page_rotted_fails_at_once_and_the_rollback_rebuilds_it() {
    for (name, placement) in sidecar_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, _mirror, m) = rig(placement, 8, dir.path(), |c| c.heal_on_read(true));
        m.start().unwrap();
        let rb = m.rollback_manager().unwrap();
        let committed = bytes(raw.as_ref(), P);
        let t = rb.begin().unwrap();
        rb.write(t, PageId(P), 64, b"first change").unwrap();
        m.detector().sync().unwrap();
        damage(&raw, P);
        let started = std::time::Instant::now();
        let e = rb.write(t, PageId(P), 200, b"second change").unwrap_err();
        assert!(
            e.is_corruption() || matches!(e, Error::PageFenced { .. }),
            "{name}: {e}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{name}: the write waited {:?}",
            started.elapsed()
        );
        assert!(m.wait_idle(IDLE), "{name}");
        match rb.rollback(t) {
            Ok(_) => {}
            Err(Error::RollbackBlocked { .. }) => assert!(m.wait_idle(IDLE), "{name}"),
            Err(e) => panic!("{name}: {e}"),
        }
        assert!(
            !rb.active_transactions().contains(&t),
            "{name}: {:#?}",
            m.incidents()
        );
        assert_eq!(bytes(raw.as_ref(), P), committed, "{name}");
        let mut b = vec![0u8; PS];
        m.detector().read_verified(PageId(P), &mut b).unwrap();
        assert_eq!(b, committed, "{name}");
        // The rebuild the rollback needed was made (by the page's incident
        // or the blocked rollback's).
        assert!(
            m.repairer().stats().repaired_by_rebuild >= 1,
            "{name}: {:#?}",
            m.incidents()
        );
        assert!(m.incidents().iter().any(rebuilt), "{name}");
        drop(rb);
        m.stop().unwrap();
    }
}
