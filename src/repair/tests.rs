//! Unit tests of the repairer over in-memory stores and replicas.

use super::*;
use crate::checksum::ChecksumPlacement;
use crate::corruption::{CorruptionConfig, PageState};
use crate::host::{ReplicaLag, ReplicaStatus};
use crate::store::{MemStore, StoreReplica};
use crate::testing::{Damage, FaultyReplica, FaultyStore, WriteFault};
use crate::types::{FailureKind, PageId};
use crate::PageStore;
use proptest::prelude::*;

const PS: usize = 256;

struct Rig {
    raw: Arc<FaultyStore>,
    det: Arc<CorruptionDetector>,
    mirrors: Vec<Arc<MemStore>>,
    good: Vec<Vec<u8>>,
}

/// `pages` sealed pages, mirrored on `replicas` in-memory replicas.
fn rig(pages: u64, replicas: usize) -> Rig {
    let raw = Arc::new(FaultyStore::new(Arc::new(
        MemStore::new(PS, pages).unwrap(),
    )));
    let det = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .build(raw.clone())
            .unwrap(),
    );
    let mirrors: Vec<_> = (0..replicas)
        .map(|_| Arc::new(MemStore::new(PS, pages).unwrap()))
        .collect();
    let mut good = Vec::new();
    for p in 0..pages {
        let mut b = vec![(p as u8).wrapping_mul(31).wrapping_add(1); PS];
        det.write_sealed(PageId(p), &mut b).unwrap();
        for m in &mirrors {
            m.write_page(PageId(p), &b).unwrap();
        }
        good.push(b);
    }
    Rig {
        raw,
        det,
        mirrors,
        good,
    }
}

impl Rig {
    fn repairer(&self, cfg: RepairConfig) -> DataRepairer {
        let r = cfg.build(self.det.clone()).unwrap();
        for (i, m) in self.mirrors.iter().enumerate() {
            r.add_replica(Arc::new(StoreReplica::new(format!("r{i}"), m.clone())))
                .unwrap();
        }
        r
    }

    fn fence(&self, page: u64, damage: Damage) {
        self.raw.damage(PageId(page), damage).unwrap();
        let mut b = vec![0u8; PS];
        assert!(self.det.read_verified(PageId(page), &mut b).is_err());
    }

    fn local(&self, page: u64) -> Vec<u8> {
        let mut b = vec![0u8; PS];
        self.raw.read_page(PageId(page), &mut b).unwrap();
        b
    }
}

#[test]
fn config_is_validated() {
    let r = rig(2, 0);
    for bad in [0, MAX_REPLICAS + 1] {
        assert!(matches!(
            RepairConfig::new()
                .max_replicas_per_repair(bad)
                .build(r.det.clone()),
            Err(Error::InvalidConfig {
                field: "max_replicas_per_repair",
                ..
            })
        ));
    }
}

#[test]
fn registration_refuses_wrong_size_and_duplicates() {
    let r = rig(2, 1);
    let rep = r.repairer(RepairConfig::new());
    let other = Arc::new(MemStore::new(PS * 2, 2).unwrap());
    assert!(matches!(
        rep.add_replica(Arc::new(StoreReplica::new("big", other))),
        Err(Error::PageSizeMismatch { expected: PS, actual, .. }) if actual == PS * 2
    ));
    assert!(matches!(
        rep.add_replica(Arc::new(StoreReplica::new("r0", r.mirrors[0].clone()))),
        Err(Error::DuplicateReplica { .. })
    ));
    assert_eq!(rep.replica_ids(), [ReplicaId::new("r0")]);
    assert!(rep.remove_replica(&ReplicaId::new("r0")));
    assert!(!rep.remove_replica(&ReplicaId::new("r0")));
}

#[test]
fn repairs_from_replica_and_counts() {
    let r = rig(4, 1);
    let rep = r.repairer(RepairConfig::new());
    r.fence(2, Damage::Junk { seed: 9 });
    let report = rep.repair_page(PageId(2)).unwrap();
    assert_eq!(
        report.outcome,
        RepairOutcome::Repaired {
            source: CopySource::Replica(ReplicaId::new("r0"))
        }
    );
    assert_eq!(r.local(2), r.good[2]);
    assert_eq!(report.bytes_fetched, PS as u64);
    let s = rep.stats();
    assert_eq!(
        (s.attempted, s.repaired, s.bytes_fetched),
        (1, 1, PS as u64)
    );
    assert_eq!(s.replicas[0].used, 1);
    assert_eq!(r.det.page_state(PageId(2)), Some(PageState::Repaired));
    // Nothing left to do.
    assert_eq!(
        rep.repair_page(PageId(2)).unwrap().outcome,
        RepairOutcome::NotNeeded
    );
    assert!(matches!(
        rep.repair_page(PageId(4)),
        Err(Error::PageOutOfRange { .. })
    ));
}

#[test]
fn repairs_under_sidecar_checksums() {
    let table = Arc::new(crate::ChecksumTable::new(PS).unwrap());
    let raw = Arc::new(FaultyStore::new(Arc::new(MemStore::new(PS, 4).unwrap())));
    let det = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Sidecar(table))
            .build(raw.clone())
            .unwrap(),
    );
    let mirror = Arc::new(MemStore::new(PS, 4).unwrap());
    let mut page = vec![0x3C; PS];
    det.write_sealed(PageId(1), &mut page).unwrap();
    mirror.write_page(PageId(1), &page).unwrap();
    // A second mirror holds other bytes, which the table's checksum refuses.
    let other = Arc::new(MemStore::new(PS, 4).unwrap());
    other.write_page(PageId(1), &[0x3D; PS]).unwrap();
    let rep = RepairConfig::new().build(det.clone()).unwrap();
    rep.add_replica(Arc::new(StoreReplica::new("other", other)))
        .unwrap();
    rep.add_replica(Arc::new(StoreReplica::new("mirror", mirror)))
        .unwrap();
    raw.damage(PageId(1), Damage::BitFlip { byte: 7, bit: 7 })
        .unwrap();
    let mut b = vec![0u8; PS];
    assert!(det.read_verified(PageId(1), &mut b).is_err());
    let report = rep.repair_page(PageId(1)).unwrap();
    assert!(report.is_repaired(), "{:?}", report.outcome);
    assert!(matches!(
        report.attempts[0].result,
        AttemptResult::FailedVerification(Error::ChecksumMismatch { .. })
    ));
    det.read_verified(PageId(1), &mut b).unwrap();
    assert_eq!(b, page);
}

#[test]
fn transient_fault_needs_no_copy() {
    let r = rig(2, 1);
    let rep = r.repairer(RepairConfig::new());
    r.fence(1, Damage::Zero);
    r.raw.inner().write_page(PageId(1), &r.good[1]).unwrap();
    let report = rep.repair_page(PageId(1)).unwrap();
    assert_eq!(report.outcome, RepairOutcome::NotNeeded);
    assert!(report.attempts.is_empty());
    let mut b = vec![0u8; PS];
    r.det.read_verified(PageId(1), &mut b).unwrap();
}

#[test]
fn corrupt_replicas_never_overwrite_and_page_becomes_irreparable() {
    let r = rig(3, 2);
    let rep = RepairConfig::new().build(r.det.clone()).unwrap();
    for (i, m) in r.mirrors.iter().enumerate() {
        let f = FaultyReplica::new(Arc::new(StoreReplica::new(format!("r{i}"), m.clone())));
        f.corrupt(PageId(1), Damage::BitFlip { byte: i, bit: 2 });
        rep.add_replica(Arc::new(f)).unwrap();
    }
    r.fence(1, Damage::Zero);
    let _ = r.det.failures().try_iter().count();
    let writes = r.raw.counts().writes;
    let report = rep.repair_page(PageId(1)).unwrap();
    assert!(matches!(report.outcome, RepairOutcome::Irreparable { .. }));
    assert_eq!(r.raw.counts().writes, writes, "nothing was written");
    assert!(report
        .attempts
        .iter()
        .all(|a| matches!(a.result, AttemptResult::FailedVerification(_))));
    assert_eq!(r.det.page_state(PageId(1)), Some(PageState::Irreparable));
    let f = r.det.failures().try_recv().unwrap();
    assert_eq!(f.kind, FailureKind::IrreparablePage { page: PageId(1) });
    assert_eq!(rep.stats().irreparable, 1);
    // Pending repairs skip it; repair_all tries again.
    assert!(rep.repair_pending().is_empty());
    assert_eq!(rep.repair_all().len(), 1);
}

#[test]
fn failed_commit_moves_to_next_distinct_copy() {
    let r = rig(2, 2);
    // r1 holds a different but valid page 0 (an older version).
    let mut older = vec![0xEE; PS];
    ChecksumPlacement::Trailer
        .seal(PageId(0), &mut older)
        .unwrap();
    r.mirrors[1].write_page(PageId(0), &older).unwrap();
    let rep = r.repairer(RepairConfig::new());
    r.fence(0, Damage::Zero);
    r.raw.fail_next_write(Some(PageId(0)), WriteFault::Eio);
    let report = rep.repair_page(PageId(0)).unwrap();
    assert_eq!(
        report.outcome,
        RepairOutcome::Repaired {
            source: CopySource::Replica(ReplicaId::new("r1"))
        }
    );
    assert!(matches!(
        report.attempts[0].result,
        AttemptResult::CommitFailed(Error::Io { .. })
    ));
    assert_eq!(r.local(0), older);
}

#[test]
fn majority_can_be_required() {
    let r = rig(2, 2);
    let mut other = vec![0xEE; PS];
    ChecksumPlacement::Trailer
        .seal(PageId(0), &mut other)
        .unwrap();
    r.mirrors[1].write_page(PageId(0), &other).unwrap();
    let rep = r.repairer(RepairConfig::new().require_majority(true));
    r.fence(0, Damage::Zero);
    let report = rep.repair_page(PageId(0)).unwrap();
    assert!(
        matches!(report.outcome, RepairOutcome::Irreparable { ref reason } if reason.contains("no majority")),
        "{:?}",
        report.outcome
    );
    assert!(report
        .attempts
        .iter()
        .all(|a| matches!(a.result, AttemptResult::NoMajority { votes: 1, of: 2 })));
}

#[test]
fn down_and_behind_replicas_are_skipped() {
    let r = rig(2, 2);
    let rep = RepairConfig::new()
        .max_replicas_per_repair(1)
        .build(r.det.clone())
        .unwrap();
    let down = FaultyReplica::new(Arc::new(StoreReplica::new("down", r.mirrors[0].clone())));
    down.set_down(true);
    rep.add_replica(Arc::new(down)).unwrap();
    rep.add_replica(Arc::new(StoreReplica::new("up", r.mirrors[1].clone())))
        .unwrap();
    r.fence(1, Damage::Zero);
    let report = rep.repair_page(PageId(1)).unwrap();
    assert!(report.is_repaired());
    assert_eq!(report.attempts.len(), 2);
    assert!(matches!(
        report.attempts[1].result,
        AttemptResult::Unavailable(Error::ReplicaUnavailable { .. })
    ));
    assert_eq!(rep.stats().replicas[0].unavailable, 1);
}

#[derive(Debug)]
struct Actions;
impl HostActions for Actions {}

#[derive(Debug)]
struct Rebuilds(parking_lot::Mutex<Vec<String>>);
impl HostActions for Rebuilds {
    fn rebuild_index(&self, index: &str) -> Result<()> {
        self.0.lock().push(index.to_owned());
        Ok(())
    }
}

#[test]
fn rebuild_index_passes_through_or_is_unsupported() {
    let r = rig(1, 0);
    let none = RepairConfig::new().build(r.det.clone()).unwrap();
    assert!(matches!(
        none.rebuild_index("by_name"),
        Err(Error::Unsupported {
            action: "rebuild_index"
        })
    ));
    let default = RepairConfig::new()
        .host_actions(Arc::new(Actions))
        .build(r.det.clone())
        .unwrap();
    assert!(matches!(
        default.rebuild_index("by_name"),
        Err(Error::Unsupported { .. })
    ));
    let host = Arc::new(Rebuilds(parking_lot::Mutex::new(Vec::new())));
    let real = RepairConfig::new()
        .host_actions(host.clone())
        .build(r.det.clone())
        .unwrap();
    real.rebuild_index("by_name").unwrap();
    assert!(matches!(
        real.rebuild_index(""),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(*host.0.lock(), ["by_name"]);
}

/// A replica that runs a host write to the page while serving it.
#[derive(Debug)]
struct RacingReplica {
    inner: StoreReplica,
    det: Arc<CorruptionDetector>,
    newer: Vec<u8>,
}

impl Replica for RacingReplica {
    fn id(&self) -> ReplicaId {
        self.inner.id()
    }
    fn page_size(&self) -> usize {
        PS
    }
    fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            available: true,
            lag: ReplicaLag::default(),
        }
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.inner.read_page(page, buf)?;
        let mut newer = self.newer.clone();
        self.det.write_sealed(page, &mut newer)
    }
}

#[test]
fn host_write_during_fetch_supersedes_the_repair() {
    let r = rig(2, 1);
    let rep = RepairConfig::new().build(r.det.clone()).unwrap();
    rep.add_replica(Arc::new(RacingReplica {
        inner: StoreReplica::new("racer", r.mirrors[0].clone()),
        det: r.det.clone(),
        newer: vec![0x77; PS],
    }))
    .unwrap();
    r.fence(1, Damage::Zero);
    let report = rep.repair_page(PageId(1)).unwrap();
    assert_eq!(report.outcome, RepairOutcome::Superseded);
    let mut b = vec![0u8; PS];
    r.det.read_verified(PageId(1), &mut b).unwrap();
    assert_eq!(b[0], 0x77, "the host's write stands");
    assert_eq!(rep.stats().superseded, 1);
}

#[test]
fn anti_entropy_arguments_are_checked() {
    let r = rig(8, 1);
    let rep = r.repairer(RepairConfig::new());
    let id = ReplicaId::new("r0");
    assert!(matches!(
        rep.anti_entropy(&ReplicaId::new("nope"), 0..8, 2),
        Err(Error::UnknownReplica { .. })
    ));
    assert!(matches!(
        rep.anti_entropy(&id, 0..8, 0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        rep.anti_entropy(&id, 0..9, 2),
        Err(Error::PageOutOfRange { .. })
    ));
    let same = rep.anti_entropy(&id, 0..8, 2).unwrap();
    assert_eq!((same.digests_requested, same.pages_fetched), (1, 0));
    let empty = rep.anti_entropy(&id, 3..3, 2).unwrap();
    assert_eq!(empty.digests_requested, 0);
}

#[test]
fn anti_entropy_reports_locally_valid_divergence_without_writing() {
    let r = rig(8, 1);
    let rep = r.repairer(RepairConfig::new());
    let mut newer = vec![0x42; PS];
    r.det.write_sealed(PageId(5), &mut newer).unwrap();
    let rep_report = rep.anti_entropy(&ReplicaId::new("r0"), 0..8, 1).unwrap();
    assert!(rep_report.pages_repaired.is_empty());
    assert_eq!(rep_report.diverged.len(), 1);
    assert_eq!(rep_report.diverged[0].page, PageId(5));
    assert!(rep_report.diverged[0].replica_copy_verifies);
    assert_eq!(r.local(5), newer);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn anti_entropy_repairs_exactly_the_damaged_pages(
        damaged in proptest::collection::btree_set(0u64..96, 0..8),
        leaf in 1u64..9,
    ) {
        let r = rig(96, 1);
        let rep = r.repairer(RepairConfig::new());
        for &p in &damaged {
            r.raw.damage(PageId(p), Damage::Junk { seed: p }).unwrap();
        }
        let report = rep.anti_entropy(&ReplicaId::new("r0"), 0..96, leaf).unwrap();
        let want: Vec<PageId> = damaged.iter().map(|&p| PageId(p)).collect();
        prop_assert_eq!(&report.pages_repaired, &want);
        prop_assert!(report.diverged.is_empty());
        prop_assert!(report.pages_fetched <= damaged.len() as u64 * leaf);
        for p in 0..96 {
            prop_assert_eq!(r.local(p), r.good[p as usize].clone());
        }
    }
}

#[test]
fn repair_pages_answers_for_each_page_in_the_order_given() {
    let r = rig(8, 1);
    let repairer = r.repairer(RepairConfig::new().repair_batch_pages(2));
    for p in [5, 1, 3] {
        r.fence(p, Damage::BitFlip { byte: 10, bit: 1 });
    }
    let answers = repairer.repair_pages(&[
        PageId(5),
        PageId(9),
        PageId(1),
        PageId(5),
        PageId(3),
        PageId(0),
    ]);
    assert_eq!(answers.len(), 6);
    for (i, p) in [(0, 5u64), (2, 1), (4, 3)] {
        let rep = answers[i].as_ref().unwrap();
        assert_eq!(rep.page, PageId(p));
        assert!(rep.is_repaired(), "{rep:?}");
        assert_eq!(r.local(p), r.good[p as usize]);
    }
    assert!(matches!(answers[1], Err(Error::PageOutOfRange { .. })));
    assert!(matches!(answers[3], Err(Error::InvalidArgument { .. })));
    let clean = answers[5].as_ref().unwrap();
    assert_eq!(clean.outcome, RepairOutcome::NotNeeded);
}

/// A rebuilder that knows a page's last write (as the undo journal's
/// after-images would let it rebuild) and writes it through the repair
/// protocol; counts what it is asked.
struct KnownWrite {
    det: Arc<CorruptionDetector>,
    page: PageId,
    bytes: Vec<u8>,
    base: ReplicaId,
    fail: bool,
    asked: std::sync::atomic::AtomicUsize,
}

impl PageRebuilder for KnownWrite {
    fn holds_changes(&self, page: PageId) -> bool {
        page == self.page
    }

    fn rebuild(&self, repairer: &DataRepairer, page: PageId) -> Result<Option<ReplicaId>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            return Err(Error::InvalidArgument {
                what: "page",
                reason: "the rebuild failed".into(),
            });
        }
        if page != self.page {
            return Ok(None);
        }
        assert!(!repairer.replica_copies(page).is_empty());
        let ticket = self
            .det
            .begin_repair(page)
            .expect("the ticket was given back");
        self.det
            .commit_repair(ticket, &self.bytes)
            .map_err(|(_, e)| e)?;
        Ok(Some(self.base.clone()))
    }
}

fn known_write(r: &Rig, page: u64, fail: bool) -> Arc<KnownWrite> {
    Arc::new(KnownWrite {
        det: r.det.clone(),
        page: PageId(page),
        bytes: r.good[page as usize].clone(),
        base: ReplicaId::new("r0"),
        fail,
        asked: std::sync::atomic::AtomicUsize::new(0),
    })
}

/// Every replica holds a copy of page 1 that fails verification (the
/// version before a write they never got).
fn rig_without_the_last_write() -> (Rig, DataRepairer) {
    let r = rig(3, 2);
    let rep = RepairConfig::new()
        .replica_failing_after(1)
        .build(r.det.clone())
        .unwrap();
    for (i, m) in r.mirrors.iter().enumerate() {
        let f = FaultyReplica::new(Arc::new(StoreReplica::new(format!("r{i}"), m.clone())));
        f.corrupt(PageId(1), Damage::BitFlip { byte: 3, bit: 1 });
        rep.add_replica(Arc::new(f)).unwrap();
    }
    r.fence(1, Damage::Zero);
    let _ = r.det.failures().try_iter().count();
    (r, rep)
}

#[test]
fn a_page_no_source_holds_is_rebuilt_by_the_rebuilder_and_reported_repaired() {
    let (r, rep) = rig_without_the_last_write();
    let known = known_write(&r, 1, false);
    rep.set_rebuilder(Some(known.clone()));
    let report = rep.repair_page(PageId(1)).unwrap();
    assert_eq!(
        report.outcome,
        RepairOutcome::Repaired {
            source: CopySource::Rebuilt(ReplicaId::new("r0"))
        }
    );
    assert_eq!(known.asked.load(Ordering::SeqCst), 1);
    assert_eq!(r.local(1), r.good[1]);
    let mut b = vec![0u8; PS];
    r.det.read_verified(PageId(1), &mut b).unwrap();
    let stats = rep.stats();
    assert_eq!((stats.repaired, stats.repaired_by_rebuild), (1, 1));
    assert_eq!(stats.irreparable, 0);
    // Neither an irreparable page nor a failing replica is reported: the
    // copies were the version before changes the rebuilder holds.
    let reported: Vec<FailureKind> = r.det.failures().try_iter().map(|f| f.kind).collect();
    assert!(reported.is_empty(), "{reported:?}");
    // In a batch too.
    r.fence(1, Damage::Zero);
    let reports = rep.repair_pages(&[PageId(0), PageId(1)]);
    assert!(reports[1].as_ref().unwrap().is_repaired(), "{reports:?}");
    assert_eq!(rep.stats().repaired_by_rebuild, 2);
}

#[test]
fn a_rebuild_that_fails_or_has_nothing_leaves_the_page_irreparable() {
    for fail in [true, false] {
        let (r, rep) = rig_without_the_last_write();
        // With nothing held for the page (another page's changes), or a
        // rebuild that fails.
        let known = known_write(&r, if fail { 1 } else { 2 }, fail);
        rep.set_rebuilder(Some(known.clone()));
        let report = rep.repair_page(PageId(1)).unwrap();
        let RepairOutcome::Irreparable { reason } = &report.outcome else {
            panic!("fail={fail}: {report:?}");
        };
        assert_eq!(reason.contains("not rebuilt: "), fail, "{reason}");
        assert_eq!(known.asked.load(Ordering::SeqCst), 1);
        assert_eq!(r.det.page_state(PageId(1)), Some(PageState::Irreparable));
        let reported: Vec<FailureKind> = r.det.failures().try_iter().map(|f| f.kind).collect();
        assert!(
            reported.contains(&FailureKind::IrreparablePage { page: PageId(1) }),
            "{reported:?}"
        );
        // A copy that fails is held against its replica unless the
        // rebuilder holds changes for the page.
        let failing = reported
            .iter()
            .any(|k| matches!(k, FailureKind::ReplicaFailing { .. }));
        assert_eq!(failing, !fail, "fail={fail}: {reported:?}");
        assert_eq!(rep.stats().repaired_by_rebuild, 0);
    }
}

#[test]
fn the_rebuilder_is_not_asked_when_a_copy_repairs_the_page() {
    let r = rig(3, 2);
    let rep = r.repairer(RepairConfig::new());
    let known = known_write(&r, 1, false);
    rep.set_rebuilder(Some(known.clone()));
    r.fence(1, Damage::Zero);
    let report = rep.repair_page(PageId(1)).unwrap();
    assert!(matches!(
        report.outcome,
        RepairOutcome::Repaired {
            source: CopySource::Replica(_)
        }
    ));
    assert_eq!(known.asked.load(Ordering::SeqCst), 0);
    assert_eq!(rep.stats().repaired_by_rebuild, 0);
}

/// A rebuilder that does not rebuild: the host writes the page meanwhile,
/// or its ticket is dropped after a failed commit, or it claims a rebuild
/// it never wrote.
struct NoRebuild {
    det: Arc<CorruptionDetector>,
    what: &'static str,
}

impl PageRebuilder for NoRebuild {
    fn holds_changes(&self, _: PageId) -> bool {
        true
    }

    fn rebuild(&self, _: &DataRepairer, page: PageId) -> Result<Option<ReplicaId>> {
        match self.what {
            "host writes" => self
                .det
                .write_sealed(page, &mut vec![0x77; PS])
                .map(|()| None),
            "drops its ticket" => {
                let ticket = self.det.begin_repair(page).expect("given back");
                drop(ticket);
                Err(Error::InvalidArgument {
                    what: "page",
                    reason: "the rebuilt page's write failed".into(),
                })
            }
            _ => Ok(Some(ReplicaId::new("r0"))),
        }
    }
}

#[test]
fn the_verdict_after_a_rebuild_that_wrote_nothing_is_taken_again() {
    for what in ["host writes", "drops its ticket", "claims a rebuild"] {
        let (r, rep) = rig_without_the_last_write();
        rep.set_rebuilder(Some(Arc::new(NoRebuild {
            det: r.det.clone(),
            what,
        })));
        let report = rep.repair_page(PageId(1)).unwrap();
        let reported: Vec<FailureKind> = r.det.failures().try_iter().map(|f| f.kind).collect();
        let irreparable = reported.contains(&FailureKind::IrreparablePage { page: PageId(1) });
        if what == "host writes" {
            // The host's write stands: nothing irreparable about it.
            assert_eq!(report.outcome, RepairOutcome::Superseded, "{what}");
            assert!(!irreparable, "{what}: {reported:?}");
            assert_eq!(&r.local(1)[..PS - 16], &[0x77; PS - 16][..], "{what}");
        } else {
            assert!(
                matches!(report.outcome, RepairOutcome::Irreparable { .. }),
                "{what}: {report:?}"
            );
            assert!(irreparable, "{what}: {reported:?}");
            assert_eq!(
                r.det.page_state(PageId(1)),
                Some(PageState::Irreparable),
                "{what}"
            );
            assert_eq!(rep.stats().repaired_by_rebuild, 0, "{what}");
        }
    }
}
