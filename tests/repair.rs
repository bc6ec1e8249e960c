//! Goal: `DataRepairer` restores exactly the good copy, never writes a bad or stale one, and never loses a host write; method: real detector + fault-injecting stores/replicas, damage of every kind, races driven by a hooked replica and by a writer thread.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use selfheal::corruption::{Observer, PageLsnFn, PageState, Verdict};
use selfheal::repair::{AttemptResult, CopySource, DataRepairer, RepairConfig, RepairOutcome};
use selfheal::testing::{Damage, FaultyReplica, FaultyStore, WriteFault};
use selfheal::{
    ChecksumPlacement, CorruptionConfig, CorruptionDetector, Error, FailureKind, Lsn, MemStore,
    PageId, PageSource, PageStore, Replica, ReplicaId, ReplicaLag, ReplicaStatus, StoreReplica,
};

const PS: usize = 4096;

/// The page LSN lives in the first 8 bytes of every page.
fn lsn_reader() -> PageLsnFn {
    Arc::new(|b: &[u8]| {
        let v = u64::from_le_bytes(b[..8].try_into().ok()?);
        (v != 0).then_some(Lsn(v))
    })
}

/// A sealed page for `page` with LSN `lsn` and body `fill`.
fn sealed(page: u64, lsn: u64, fill: u8) -> Vec<u8> {
    let mut b = vec![fill; PS];
    b[..8].copy_from_slice(&lsn.to_le_bytes());
    ChecksumPlacement::Trailer
        .seal(PageId(page), &mut b)
        .unwrap();
    b
}

/// The host: a local store behind a detector and mirrors that receive every
/// write first (synchronous replication), and the model of what it wrote.
struct Host {
    raw: Arc<FaultyStore>,
    det: Arc<CorruptionDetector>,
    mirrors: Vec<Arc<MemStore>>,
    expected: Mutex<Vec<Vec<u8>>>,
    next_lsn: AtomicU64,
}

impl Host {
    fn new(pages: u64, mirrors: usize, with_lsn: bool) -> Arc<Host> {
        let raw = Arc::new(FaultyStore::new(Arc::new(
            MemStore::new(PS, pages).unwrap(),
        )));
        let mut cfg = CorruptionConfig::new(ChecksumPlacement::Trailer);
        if with_lsn {
            cfg = cfg.page_lsn(lsn_reader());
        }
        let det = Arc::new(cfg.build(raw.clone()).unwrap());
        let host = Arc::new(Host {
            raw,
            det,
            mirrors: (0..mirrors)
                .map(|_| Arc::new(MemStore::new(PS, pages).unwrap()))
                .collect(),
            expected: Mutex::new(vec![Vec::new(); pages as usize]),
            next_lsn: AtomicU64::new(1),
        });
        for p in 0..pages {
            host.write(p, p as u8 ^ 0x5C, None);
        }
        host
    }

    /// Writes page `p` (mirrors first, then locally through the detector),
    /// with an optional fault armed on the local write.
    fn write(&self, p: u64, fill: u8, fault: Option<WriteFault>) {
        let lsn = self.next_lsn.fetch_add(1, Ordering::SeqCst);
        let mut b = sealed(p, lsn, fill);
        for m in &self.mirrors {
            m.write_page(PageId(p), &b).unwrap();
        }
        if let Some(f) = fault {
            self.raw.fail_next_write(Some(PageId(p)), f);
        }
        self.expected.lock()[p as usize] = b.clone();
        self.det.write_sealed(PageId(p), &mut b).unwrap();
    }

    fn local(&self, p: u64) -> Vec<u8> {
        let mut b = vec![0u8; PS];
        self.raw.read_page(PageId(p), &mut b).unwrap();
        b
    }

    fn fence(&self, p: u64) {
        let mut b = vec![0u8; PS];
        let e = self.det.read_verified(PageId(p), &mut b).unwrap_err();
        assert!(e.is_corruption(), "{e}");
    }

    fn repairer(&self, cfg: RepairConfig) -> DataRepairer {
        let r = cfg.build(self.det.clone()).unwrap();
        for (i, m) in self.mirrors.iter().enumerate() {
            r.add_replica(Arc::new(StoreReplica::new(format!("m{i}"), m.clone())))
                .unwrap();
        }
        r
    }

    /// Scrubs every page and repairs until nothing is fenced; returns the rounds used.
    fn settle(&self, rep: &DataRepairer) -> usize {
        for round in 0..20 {
            let mut bad = 0;
            for p in 0..self.raw.page_count() {
                if let Verdict::Corrupt { .. } =
                    self.det.check_page(PageId(p), Observer::Scrub).unwrap()
                {
                    bad += 1;
                }
            }
            let fenced = self
                .det
                .suspects()
                .iter()
                .filter(|(_, e)| e.state.is_fenced())
                .count();
            if bad == 0 && fenced == 0 {
                return round;
            }
            // A fault armed but not consumed would hit a repair write; clear it.
            self.raw.clear();
            rep.repair_all();
        }
        panic!(
            "pages still fenced after 20 rounds: {:?}",
            self.det.suspects()
        );
    }

    fn assert_no_write_lost(&self, ctx: &str) {
        let expected = self.expected.lock().clone();
        for (p, want) in expected.iter().enumerate() {
            assert!(
                self.local(p as u64) == *want,
                "{ctx}: page {p} does not hold the host's last write"
            );
        }
    }
}

/// Damages page `p` of the host in one particular way.
type DamageFn = Box<dyn Fn(&Host, u64)>;

#[test]
fn every_damage_kind_is_repaired_byte_identical() {
    let host = Host::new(8, 1, false);
    let rep = host.repairer(RepairConfig::new());
    let kinds: [(&str, DamageFn); 5] = [
        (
            "bit flip",
            Box::new(|h, p| {
                h.raw
                    .damage(PageId(p), Damage::BitFlip { byte: 1000, bit: 4 })
                    .unwrap()
            }),
        ),
        (
            "zero",
            Box::new(|h, p| h.raw.damage(PageId(p), Damage::Zero).unwrap()),
        ),
        (
            "junk",
            Box::new(|h, p| h.raw.damage(PageId(p), Damage::Junk { seed: p }).unwrap()),
        ),
        (
            "torn",
            Box::new(|h, p| h.write(p, 0xA1, Some(WriteFault::Torn { new_bytes: 512 }))),
        ),
        (
            // The write meant for page 7 lands on page p.
            "misdirected",
            Box::new(|h, p| {
                h.raw
                    .fail_next_write(Some(PageId(7)), WriteFault::Misdirected { to: PageId(p) });
                let mut b = h.expected.lock()[7].clone();
                h.det.write_sealed(PageId(7), &mut b).unwrap();
            }),
        ),
    ];
    for (i, (name, damage)) in kinds.iter().enumerate() {
        let p = i as u64;
        damage(&host, p);
        assert_ne!(
            host.local(p),
            host.expected.lock()[p as usize],
            "{name}: no damage done"
        );
        host.fence(p);
        let report = rep.repair_page(PageId(p)).unwrap();
        assert_eq!(
            report.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("m0"))
            },
            "{name}"
        );
        assert_eq!(host.local(p), host.expected.lock()[p as usize], "{name}");
        let mut b = vec![0u8; PS];
        host.det.read_verified(PageId(p), &mut b).unwrap();
    }
    assert_eq!(rep.stats().repaired, 5);
}

#[test]
fn every_replica_corrupt_leaves_page_fenced_and_reported() {
    let host = Host::new(4, 3, false);
    let rep = RepairConfig::new().build(host.det.clone()).unwrap();
    let damages = [
        Damage::Zero,
        Damage::Junk { seed: 1 },
        Damage::BitFlip { byte: 9, bit: 0 },
    ];
    for (i, m) in host.mirrors.iter().enumerate() {
        let r = FaultyReplica::new(Arc::new(StoreReplica::new(format!("m{i}"), m.clone())));
        r.corrupt(PageId(2), damages[i]);
        rep.add_replica(Arc::new(r)).unwrap();
    }
    host.raw
        .damage(PageId(2), Damage::Junk { seed: 77 })
        .unwrap();
    let damaged = host.local(2);
    host.fence(2);
    let corrupt_report = host.det.failures().try_recv().unwrap();
    assert_eq!(
        corrupt_report.kind,
        FailureKind::CorruptPage { page: PageId(2) }
    );

    let report = rep.repair_page(PageId(2)).unwrap();
    assert!(
        matches!(report.outcome, RepairOutcome::Irreparable { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(report.attempts.len(), 3);
    assert!(report
        .attempts
        .iter()
        .all(|a| matches!(&a.result, AttemptResult::FailedVerification(e) if e.is_corruption())));
    assert_eq!(host.local(2), damaged, "no corrupt copy was written");
    assert_eq!(host.det.page_state(PageId(2)), Some(PageState::Irreparable));
    let mut b = vec![0u8; PS];
    assert!(matches!(
        host.det.read_verified(PageId(2), &mut b),
        Err(Error::PageFenced {
            state: "irreparable",
            ..
        })
    ));
    let f = host.det.failures().try_recv().unwrap();
    assert_eq!(f.kind, FailureKind::IrreparablePage { page: PageId(2) });
    assert!(f.evidence.contains("replica m0"), "{}", f.evidence);
}

#[test]
fn down_or_lagging_replica_falls_through_to_the_next() {
    let host = Host::new(4, 3, true);
    let rep = RepairConfig::new()
        .max_replicas_per_repair(1)
        .build(host.det.clone())
        .unwrap();
    // m0: the least lag but down. m1: claims little lag but has applied only
    // LSN 1 and holds an old copy. m2: up to date, reported as more behind.
    let down = FaultyReplica::new(Arc::new(StoreReplica::new("m0", host.mirrors[0].clone())));
    down.set_down(true);
    let old = sealed(1, 1, 0x00);
    host.mirrors[1].write_page(PageId(1), &old).unwrap();
    let lagging = StoreReplica::new("m1", host.mirrors[1].clone()).with_lag(ReplicaLag {
        applied_lsn: Some(Lsn(1)),
        behind: Some(std::time::Duration::from_millis(1)),
    });
    let current = StoreReplica::new("m2", host.mirrors[2].clone()).with_lag(ReplicaLag {
        applied_lsn: None,
        behind: Some(std::time::Duration::from_millis(500)),
    });
    rep.add_replica(Arc::new(down)).unwrap();
    rep.add_replica(Arc::new(lagging)).unwrap();
    rep.add_replica(Arc::new(current)).unwrap();

    host.raw.damage(PageId(1), Damage::Zero).unwrap();
    host.fence(1);
    let report = rep.repair_page(PageId(1)).unwrap();
    assert_eq!(
        report.outcome,
        RepairOutcome::Repaired {
            source: CopySource::Replica(ReplicaId::new("m2"))
        }
    );
    let results: Vec<_> = report
        .attempts
        .iter()
        .map(|a| (&a.source, &a.result))
        .collect();
    assert!(
        matches!(results[0], (CopySource::Replica(id), AttemptResult::Stale { applied: Lsn(1), .. }) if id.as_str() == "m1"),
        "{results:?}"
    );
    assert!(
        matches!(results[1], (CopySource::Replica(id), AttemptResult::Verified) if id.as_str() == "m2"),
        "{results:?}"
    );
    assert!(
        matches!(results[2], (CopySource::Replica(id), AttemptResult::Unavailable(_)) if id.as_str() == "m0"),
        "{results:?}"
    );
    assert_eq!(host.local(1), host.expected.lock()[1]);
    let s = rep.stats();
    assert_eq!(
        (
            s.replicas[0].unavailable,
            s.replicas[1].stale,
            s.replicas[2].used
        ),
        (1, 1, 1)
    );
}

/// Says it is available, but every read fails.
#[derive(Debug)]
struct LiesAboutStatus(FaultyReplica);

impl Replica for LiesAboutStatus {
    fn id(&self) -> ReplicaId {
        self.0.id()
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
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> selfheal::Result<()> {
        self.0.read_page(page, buf)
    }
}

#[test]
fn a_replica_whose_read_fails_is_skipped() {
    let host = Host::new(2, 2, false);
    let rep = RepairConfig::new()
        .max_replicas_per_repair(2)
        .build(host.det.clone())
        .unwrap();
    let flaky = FaultyReplica::new(Arc::new(StoreReplica::new(
        "flaky",
        host.mirrors[0].clone(),
    )));
    flaky.set_down(true);
    rep.add_replica(Arc::new(LiesAboutStatus(flaky))).unwrap();
    rep.add_replica(Arc::new(StoreReplica::new("ok", host.mirrors[1].clone())))
        .unwrap();
    host.raw.damage(PageId(0), Damage::Zero).unwrap();
    host.fence(0);
    let report = rep.repair_page(PageId(0)).unwrap();
    assert_eq!(
        report.outcome,
        RepairOutcome::Repaired {
            source: CopySource::Replica(ReplicaId::new("ok"))
        }
    );
    assert!(
        matches!(&report.attempts[0].result, AttemptResult::Unavailable(e) if e.is_retryable())
    );
    assert_eq!(rep.stats().replicas[0].unavailable, 1);
}

#[test]
fn majority_of_verified_copies_wins_over_a_valid_looking_wrong_copy() {
    let host = Host::new(4, 3, false);
    // m0 (the best by lag) holds a different copy that verifies: it passes
    // the checksum but disagrees with the two others.
    let wrong = sealed(3, 999, 0xEE);
    host.mirrors[0].write_page(PageId(3), &wrong).unwrap();
    let rep = host.repairer(RepairConfig::new());
    host.raw.damage(PageId(3), Damage::Zero).unwrap();
    host.fence(3);
    let report = rep.repair_page(PageId(3)).unwrap();
    assert_eq!(
        report.outcome,
        RepairOutcome::Repaired {
            source: CopySource::Replica(ReplicaId::new("m1"))
        }
    );
    assert!(matches!(
        report.attempts[0].result,
        AttemptResult::LostVote {
            votes: 1,
            winner_votes: 2
        }
    ));
    assert_eq!(host.local(3), host.expected.lock()[3]);
}

#[test]
fn stale_copy_is_never_written_even_by_a_majority() {
    // With page LSNs known, two replicas holding an older version fail
    // verification as stale; the one current copy is written.
    let host = Host::new(4, 3, true);
    let old = sealed(2, 1, 0x11);
    host.mirrors[0].write_page(PageId(2), &old).unwrap();
    host.mirrors[1].write_page(PageId(2), &old).unwrap();
    let rep = host.repairer(RepairConfig::new());
    host.raw.damage(PageId(2), Damage::Zero).unwrap();
    host.fence(2);
    let report = rep.repair_page(PageId(2)).unwrap();
    assert_eq!(
        report.outcome,
        RepairOutcome::Repaired {
            source: CopySource::Replica(ReplicaId::new("m2"))
        }
    );
    let stale = report
        .attempts
        .iter()
        .filter(|a| {
            matches!(
                a.result,
                AttemptResult::FailedVerification(Error::StalePage { .. })
            )
        })
        .count();
    assert_eq!(stale, 2);
    assert_eq!(host.local(2), host.expected.lock()[2]);
}

/// A fallback source: serves pages from a store, optionally ignoring the
/// `not_older_than` bound (a careless snapshot reader).
struct StoreSource {
    name: &'static str,
    store: Arc<MemStore>,
    honours_bound: bool,
    lsn: PageLsnFn,
    calls: AtomicU64,
}

impl StoreSource {
    fn new(name: &'static str, store: Arc<MemStore>, honours_bound: bool) -> Self {
        StoreSource {
            name,
            store,
            honours_bound,
            lsn: lsn_reader(),
            calls: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for StoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PageSource for StoreSource {
    fn name(&self) -> String {
        self.name.to_owned()
    }
    fn read_page(
        &self,
        page: PageId,
        not_older_than: Option<Lsn>,
        buf: &mut [u8],
    ) -> selfheal::Result<bool> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.store.read_page(page, buf)?;
        if self.honours_bound
            && not_older_than.is_some_and(|n| (self.lsn)(buf).is_none_or(|l| l < n))
        {
            return Ok(false);
        }
        Ok(true)
    }
}

#[test]
fn fallback_serves_when_replicas_fail_and_stale_fallback_is_refused() {
    let host = Host::new(4, 1, true);
    let rep = RepairConfig::new().build(host.det.clone()).unwrap();
    let broken = FaultyReplica::new(Arc::new(StoreReplica::new("m0", host.mirrors[0].clone())));
    broken.corrupt(PageId(1), Damage::Junk { seed: 3 });
    rep.add_replica(Arc::new(broken)).unwrap();

    // An old snapshot (LSN 1 for page 1) and a current one.
    let old = Arc::new(MemStore::new(PS, 4).unwrap());
    old.write_page(PageId(1), &sealed(1, 1, 0x33)).unwrap();
    let current = Arc::new(MemStore::new(PS, 4).unwrap());
    current
        .write_page(PageId(1), &host.expected.lock()[1])
        .unwrap();
    let careless = Arc::new(StoreSource::new("old-careless", old.clone(), false));
    let polite = Arc::new(StoreSource::new("old-polite", old, true));
    let good = Arc::new(StoreSource::new("current", current, true));
    rep.add_fallback(careless.clone()).unwrap();
    rep.add_fallback(polite.clone()).unwrap();
    rep.add_fallback(good.clone()).unwrap();

    host.raw.damage(PageId(1), Damage::Zero).unwrap();
    host.fence(1);
    let report = rep.repair_page(PageId(1)).unwrap();
    assert_eq!(
        report.outcome,
        RepairOutcome::Repaired {
            source: CopySource::Fallback("current".into())
        }
    );
    let r: Vec<&AttemptResult> = report.attempts.iter().map(|a| &a.result).collect();
    assert!(
        matches!(r[0], AttemptResult::FailedVerification(_)),
        "{r:?}"
    );
    assert!(
        matches!(
            r[1],
            AttemptResult::FailedVerification(Error::StalePage { .. })
        ),
        "{r:?}"
    );
    assert!(matches!(r[2], AttemptResult::NoCopy), "{r:?}");
    assert!(matches!(r[3], AttemptResult::Verified), "{r:?}");
    assert_eq!(host.local(1), host.expected.lock()[1]);
    assert_eq!(rep.stats().repaired_from_fallback, 1);

    // Only stale fallbacks: irreparable, and the stale copy is not written.
    let rep2 = RepairConfig::new().build(host.det.clone()).unwrap();
    rep2.add_fallback(careless).unwrap();
    host.raw.damage(PageId(1), Damage::Zero).unwrap();
    host.fence(1);
    let report = rep2.repair_page(PageId(1)).unwrap();
    assert!(matches!(report.outcome, RepairOutcome::Irreparable { .. }));
    assert_eq!(host.local(1), vec![0u8; PS]);
}

#[test]
fn anti_entropy_repairs_exactly_the_damaged_pages_cheaply() {
    const PAGES: u64 = 2048;
    let host = Host::new(PAGES, 1, false);
    let rep = host.repairer(RepairConfig::new());
    let damaged: BTreeSet<u64> = [5, 700, 701, 1999].into();
    for &p in &damaged {
        host.raw
            .damage(PageId(p), Damage::BitFlip { byte: 77, bit: 1 })
            .unwrap();
    }
    let report = rep
        .anti_entropy(&ReplicaId::new("m0"), 0..PAGES, 16)
        .unwrap();
    let repaired: BTreeSet<u64> = report.pages_repaired.iter().map(|p| p.0).collect();
    assert_eq!(repaired, damaged);
    assert!(report.diverged.is_empty());
    assert_eq!(report.pages_compared, PAGES);
    let repair_bytes: u64 = report.repairs.iter().map(|r| r.bytes_fetched).sum();
    let total = report.bytes_fetched + repair_bytes;
    let full_compare = PAGES * PS as u64;
    assert!(
        total * 20 < full_compare,
        "fetched {total} bytes, a full compare fetches {full_compare}"
    );
    assert!(report.pages_fetched <= damaged.len() as u64 * 16);
    host.assert_no_write_lost("anti-entropy");
    // A second pass finds nothing.
    let again = rep
        .anti_entropy(&ReplicaId::new("m0"), 0..PAGES, 16)
        .unwrap();
    assert_eq!((again.digests_requested, again.pages_fetched), (1, 0));
}

#[test]
fn replica_registration_is_checked() {
    let host = Host::new(2, 1, false);
    let rep = host.repairer(RepairConfig::new());
    let small = Arc::new(MemStore::new(PS / 2, 2).unwrap());
    assert!(matches!(
        rep.add_replica(Arc::new(StoreReplica::new("small", small))),
        Err(Error::PageSizeMismatch {
            expected: PS,
            actual: 2048,
            ..
        })
    ));
    assert!(matches!(
        rep.add_replica(Arc::new(StoreReplica::new("m0", host.mirrors[0].clone()))),
        Err(Error::DuplicateReplica { replica }) if replica.as_str() == "m0"
    ));
}

/// A replica that, on its next read of a chosen page, runs a host write to
/// that page (before or after reading its copy): a host write racing a repair.
#[derive(Debug)]
struct RacingReplica {
    inner: StoreReplica,
    host: Arc<Host>,
    race: Mutex<Option<(u64, u8, bool)>>,
}

impl Replica for RacingReplica {
    fn id(&self) -> ReplicaId {
        self.inner.id()
    }
    fn page_size(&self) -> usize {
        PS
    }
    fn status(&self) -> ReplicaStatus {
        self.inner.status()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> selfheal::Result<()> {
        let race = self.race.lock().take_if(|r| r.0 == page.0);
        if let Some((p, fill, before)) = race {
            if before {
                self.host.write(p, fill, None);
                self.inner.read_page(page, buf)
            } else {
                self.inner.read_page(page, buf)?;
                self.host.write(p, fill, None);
                Ok(())
            }
        } else {
            self.inner.read_page(page, buf)
        }
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write {
        page: u64,
        fill: u8,
        fault: Option<u8>,
    },
    Damage {
        page: u64,
        kind: u8,
    },
    Repair {
        page: u64,
    },
    RepairRacingWrite {
        page: u64,
        fill: u8,
        before: bool,
    },
    ScrubAndRepair,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..8, any::<u8>(), proptest::option::of(0u8..3))
            .prop_map(|(page, fill, fault)| Op::Write { page, fill, fault }),
        (0u64..8, 0u8..3).prop_map(|(page, kind)| Op::Damage { page, kind }),
        (0u64..8).prop_map(|page| Op::Repair { page }),
        (0u64..8, any::<u8>(), any::<bool>())
            .prop_map(|(page, fill, before)| Op::RepairRacingWrite { page, fill, before }),
        Just(Op::ScrubAndRepair),
    ]
}

fn write_fault(k: u8, page: u64) -> WriteFault {
    match k {
        0 => WriteFault::Torn { new_bytes: 100 },
        1 => WriteFault::Lost,
        _ => WriteFault::Misdirected {
            to: PageId((page + 1) % 8),
        },
    }
}

/// Runs `ops` against a host with three synchronous mirrors; the racing
/// replica is consulted last, so the two copies fetched before the race are
/// older than the host's write and win the vote unless the repair notices.
fn run_ops(ops: &[Op], with_lsn: bool) -> Result<(), TestCaseError> {
    let host = Host::new(8, 3, with_lsn);
    let rep = RepairConfig::new().build(host.det.clone()).unwrap();
    let racer = Arc::new(RacingReplica {
        inner: StoreReplica::new("racer", host.mirrors[2].clone()),
        host: host.clone(),
        race: Mutex::new(None),
    });
    rep.add_replica(Arc::new(StoreReplica::new("m0", host.mirrors[0].clone())))
        .unwrap();
    rep.add_replica(Arc::new(StoreReplica::new("m1", host.mirrors[1].clone())))
        .unwrap();
    rep.add_replica(racer.clone()).unwrap();
    for op in ops {
        match *op {
            Op::Write { page, fill, fault } => {
                // Without page LSNs a lost or misdirected write leaves a valid
                // old page that nothing can detect; only torn writes then.
                let fault = fault
                    .filter(|&k| with_lsn || k == 0)
                    .map(|k| write_fault(k, page));
                host.write(page, fill, fault);
            }
            Op::Damage { page, kind } => {
                let d = match kind {
                    0 => Damage::Zero,
                    1 => Damage::Junk { seed: page },
                    _ => Damage::BitFlip { byte: 2000, bit: 5 },
                };
                host.raw.damage(PageId(page), d).unwrap();
            }
            Op::Repair { page } => {
                let _ = host.det.check_page(PageId(page), Observer::Scrub).unwrap();
                rep.repair_page(PageId(page)).unwrap();
            }
            Op::RepairRacingWrite { page, fill, before } => {
                let _ = host.det.check_page(PageId(page), Observer::Scrub).unwrap();
                *racer.race.lock() = Some((page, fill, before));
                let r = rep.repair_page(PageId(page)).unwrap();
                if racer.race.lock().take().is_none() {
                    // The write happened during the repair: it must stand.
                    prop_assert!(
                        matches!(r.outcome, RepairOutcome::Superseded),
                        "a repair raced by a host write ended {:?}",
                        r.outcome
                    );
                    prop_assert!(
                        host.local(page) == host.expected.lock()[page as usize],
                        "the racing host write to page {} was overwritten",
                        page
                    );
                }
            }
            Op::ScrubAndRepair => {
                for p in 0..8 {
                    let _ = host.det.check_page(PageId(p), Observer::Scrub).unwrap();
                }
                rep.repair_pending();
            }
        }
    }
    host.settle(&rep);
    host.assert_no_write_lost(&format!("lsn {with_lsn}: {ops:?}"));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Host writes (some torn, lost or misdirected), at-rest damage and
    /// repairs, including repairs that a host write races in the middle of:
    /// the racing write stands, and at the end every page holds the host's
    /// last write.
    #[test]
    fn interleaved_host_writes_are_never_lost(
        ops in proptest::collection::vec(op(), 1..40),
        with_lsn in any::<bool>(),
    ) {
        run_ops(&ops, with_lsn)?;
    }
}

/// A writer thread hammers pages (with torn, lost and misdirected writes
/// mixed in) while the test thread damages pages, scrubs and repairs.
#[test]
fn writer_thread_racing_repairs_loses_nothing() {
    let seeds: Vec<u64> = match std::env::var("SELFHEAL_REPAIR_SEEDS") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        run_writer_race(seed, true);
        run_writer_race(seed, false);
    }
}

fn run_writer_race(seed: u64, with_lsn: bool) {
    const PAGES: u64 = 16;
    let host = Host::new(PAGES, 2, with_lsn);
    let rep = Arc::new(host.repairer(RepairConfig::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let host = host.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("selfheal-test-writer".into())
            .spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n < 300 {
                    let p = rng.random_range(0..PAGES);
                    // Without page LSNs only torn writes are detectable.
                    let kinds = if with_lsn { 3 } else { 1 };
                    let fault =
                        (rng.random_range(0..10) == 0).then(|| match rng.random_range(0..kinds) {
                            0 => WriteFault::Torn {
                                new_bytes: rng.random_range(1..PS - 16),
                            },
                            1 => WriteFault::Lost,
                            _ => WriteFault::Misdirected {
                                to: PageId(rng.random_range(0..PAGES)),
                            },
                        });
                    host.write(p, rng.random(), fault);
                    n += 1;
                    if n >= 3000 {
                        break;
                    }
                }
                n
            })
            .unwrap()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xDEAD_BEEF);
    let mut repaired = 0;
    for _ in 0..200 {
        let p = rng.random_range(0..PAGES);
        let d = match rng.random_range(0..3) {
            0 => Damage::Zero,
            1 => Damage::Junk { seed: rng.random() },
            _ => Damage::BitFlip {
                byte: rng.random_range(0..PS),
                bit: rng.random_range(0..8),
            },
        };
        host.raw.damage(PageId(p), d).unwrap();
        for q in 0..PAGES {
            let _ = host.det.check_page(PageId(q), Observer::Scrub).unwrap();
        }
        repaired += rep
            .repair_pending()
            .iter()
            .filter(|r| r.is_repaired())
            .count();
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().expect("writer thread panicked");
    host.settle(&rep);
    host.assert_no_write_lost(&format!(
        "seed {seed}, lsn {with_lsn} ({writes} host writes, {repaired} repairs)"
    ));
    assert!(repaired > 0, "seed {seed}: no repair ran");
}

/// Anti-entropy adopts a replica's newer copy of a locally valid page only
/// when asked to, only when page LSNs say the replica is newer, and never a
/// copy older than the local page.
#[test]
fn anti_entropy_adopts_newer_copies_only_when_asked() {
    let host = Host::new(16, 1, true);
    // The replica got page 3 at LSN 1000 (the local write of it was never
    // made); the host wrote page 9 locally at LSN 2000 (not yet replicated).
    let replica_newer = sealed(3, 1000, 0xA1);
    host.mirrors[0]
        .write_page(PageId(3), &replica_newer)
        .unwrap();
    let mut local_newer = sealed(9, 2000, 0xB2);
    host.det.write_sealed(PageId(9), &mut local_newer).unwrap();
    let local3_before = host.local(3);

    // Off by default: both are only reported.
    let plain = host.repairer(RepairConfig::new());
    let report = plain.anti_entropy(&ReplicaId::new("m0"), 0..16, 2).unwrap();
    assert!(report.adopted.is_empty());
    let diverged: Vec<u64> = report.diverged.iter().map(|d| d.page.0).collect();
    assert_eq!(diverged, [3, 9]);
    assert_eq!(host.local(3), local3_before);

    // Asked to adopt: page 3 takes the replica's newer copy, page 9 keeps the
    // host's newer write.
    let adopting = host.repairer(RepairConfig::new().adopt_newer_copies(true));
    let report = adopting
        .anti_entropy(&ReplicaId::new("m0"), 0..16, 2)
        .unwrap();
    assert_eq!(report.adopted, [PageId(3)]);
    let diverged: Vec<u64> = report.diverged.iter().map(|d| d.page.0).collect();
    assert_eq!(diverged, [9]);
    assert_eq!(host.local(3), replica_newer);
    assert_eq!(host.local(9), local_newer);
    let mut b = vec![0u8; PS];
    host.det.read_verified(PageId(3), &mut b).unwrap();
    assert_eq!(host.det.last_written_lsn(PageId(3)), Some(Lsn(1000)));
}
