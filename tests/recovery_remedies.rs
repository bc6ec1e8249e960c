//! Goal: each remedy the manager runs changes the real state it claims to
//! — a deadlock victim's writes undone in the store, a blocked rollback
//! finished after its page is repaired, a risky remedy preceded by a real
//! snapshot, each host action called with the right arguments and its
//! metric back to healthy — not only the incident's status.
//! Method: the manager over sealed pages (both checksum placements) with a
//! mirror replica; transactions through its rollback manager; failures
//! reported on its bus as the host or a component would; health metrics
//! from host probes sampled on a `ManualClock`; the store's bytes, the
//! journal's transactions, the snapshot list and the host's calls checked.

mod recovery_common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use recovery_common::*;
use selfheal::healer::builtin::{FailOver, ResizePool};
use selfheal::healer::{HealerConfig, Incident, Outcome, Problem, Step};
use selfheal::health::{HealthConfig, Thresholds};
use selfheal::snapshot::{Retention, SnapshotConfig, WriteGate};
use selfheal::testing::both_placements;
use selfheal::{
    AutoRecoveryManager, Error, Failure, FailureKind, HostAction, HostActions, Lsn, ManualClock,
    PageId, PageStore, ReplicaId, Result, Source, Target,
};

const IDLE: Duration = Duration::from_secs(20);

fn healed_by(i: &Incident) -> Option<&str> {
    match &i.outcome {
        Outcome::Healed { remedy } => Some(remedy),
        _ => None,
    }
}

fn only(m: &AutoRecoveryManager, target: &Target) -> Incident {
    let v: Vec<Incident> = m
        .incidents()
        .into_iter()
        .filter(|i| &i.target == target)
        .collect();
    assert_eq!(v.len(), 1, "{v:#?}");
    v.into_iter().next().unwrap()
}

#[test]
fn a_deadlock_victim_is_rolled_back_and_its_writes_undone() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, _mirror, m) = rig(placement, 8, dir.path(), |c| c);
        m.start().unwrap();
        let rb = m.rollback_manager().unwrap();
        let before = bytes(raw.as_ref(), 2);
        let t = rb.begin().unwrap();
        rb.write(t, PageId(2), 300, b"written by the victim")
            .unwrap();
        assert_ne!(bytes(raw.as_ref(), 2), before);
        m.failure_sink().send(Failure::new(
            Source::Host,
            FailureKind::Deadlock { victim: t },
            "lock cycle t -> u -> t",
            0,
        ));
        assert!(m.wait_idle(IDLE));
        let inc = only(&m, &Target::Transaction(t));
        assert_eq!(healed_by(&inc), Some("break-deadlock"), "{inc:#?}");
        assert_eq!(
            bytes(raw.as_ref(), 2),
            before,
            "the victim's write is undone"
        );
        assert!(!rb.active_transactions().contains(&t));
        assert!(matches!(
            rb.commit(t),
            Err(Error::UnknownTransaction { .. } | Error::TransactionNotActive { .. })
        ));
        drop(rb);
        m.stop().unwrap();
    }
}

#[test]
fn a_rollback_blocked_by_a_corrupt_page_is_finished_after_the_page_is_repaired() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = rig(placement, 8, dir.path(), |c| c);
        m.start().unwrap();
        let rb = m.rollback_manager().unwrap();
        let committed = bytes(raw.as_ref(), 4);
        let t = rb.begin().unwrap();
        rb.write(t, PageId(4), 64, b"in flight").unwrap();
        // The replica is kept in step with every write, as a physical
        // replica is; then the page rots under the transaction: its
        // rollback is blocked.
        mirror
            .write_page(PageId(4), &bytes(raw.as_ref(), 4))
            .unwrap();
        damage(&raw, 4);
        assert!(matches!(rb.rollback(t), Err(Error::RollbackBlocked { .. })));
        assert_eq!(rb.blocked_rollbacks().len(), 1);
        assert!(m.wait_idle(IDLE));
        assert!(rb.blocked_rollbacks().is_empty(), "{:#?}", m.incidents());
        assert!(!rb.active_transactions().contains(&t));
        assert_eq!(bytes(raw.as_ref(), 4), committed);
        let blocked: Vec<Incident> = m
            .incidents()
            .into_iter()
            .filter(|i| matches!(i.failures[0].kind, FailureKind::RollbackBlocked { .. }))
            .collect();
        assert!(
            blocked.iter().any(|i| healed_by(i).is_some()),
            "{:#?}",
            m.incidents()
        );
        drop(rb);
        m.stop().unwrap();
    }
}

/// The replica holds only the committed page (the transaction's write was
/// never shipped): under the sidecar placement no copy verifies against the
/// checksum of the page's last write, so the repair rebuilds the page from
/// the replica's copy and the undo held for it, and the rollback goes on; under the
/// trailer the committed copy verifies by its own trailer and repairs it.
#[test]
fn a_rollback_blocked_by_a_corrupt_page_is_finished_when_the_replica_holds_only_the_committed_page()
{
    for (_, placement) in both_placements(PS) {
        let sidecar = matches!(placement, selfheal::ChecksumPlacement::Sidecar(_));
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = rig(placement, 8, dir.path(), |c| c);
        m.start().unwrap();
        let rb = m.rollback_manager().unwrap();
        let committed = bytes(raw.as_ref(), 4);
        assert_eq!(bytes(mirror.as_ref(), 4), committed);
        let t = rb.begin().unwrap();
        rb.write(t, PageId(4), 64, b"in flight, never shipped")
            .unwrap();
        damage(&raw, 4);
        assert!(matches!(rb.rollback(t), Err(Error::RollbackBlocked { .. })));
        assert!(m.wait_idle(IDLE));
        assert!(rb.blocked_rollbacks().is_empty(), "{:#?}", m.incidents());
        assert!(!rb.active_transactions().contains(&t));
        assert_eq!(bytes(raw.as_ref(), 4), committed);
        let mut b = vec![0u8; PS];
        m.detector().read_verified(PageId(4), &mut b).unwrap();
        assert_eq!(b, committed);
        let blocked: Vec<Incident> = m
            .incidents()
            .into_iter()
            .filter(|i| matches!(i.failures[0].kind, FailureKind::RollbackBlocked { .. }))
            .collect();
        assert!(
            blocked.iter().any(|i| healed_by(i).is_some()),
            "{blocked:#?}"
        );
        // The page's rebuild is the repair's, in whichever incident repairs
        // it first: the page's own (the rollback's failed read reported it)
        // or the blocked rollback's.
        let all = m.incidents();
        let rebuilt = all
            .iter()
            .flat_map(|i| &i.attempts)
            .flat_map(|a| &a.evidence)
            .any(|e| e.contains("rebuilt with the undo held for the page"));
        assert_eq!(rebuilt, sidecar, "{all:#?}");
        assert_eq!(
            m.repairer().stats().repaired_by_rebuild,
            u64::from(sidecar),
            "{all:#?}"
        );
        drop(rb);
        m.stop().unwrap();
    }
}

/// A host that records every action.
#[derive(Debug, Default)]
struct Host {
    failed_over: Mutex<Vec<ReplicaId>>,
    pools: Mutex<Vec<(String, usize)>>,
    caches_cleared: AtomicUsize,
    shed: Mutex<Vec<u8>>,
    /// The value the probes read, in hundredths.
    load_centi: AtomicU64,
}

impl HostActions for Host {
    fn supports(&self, _: HostAction) -> bool {
        true
    }
    fn fail_over(&self, to: &ReplicaId) -> Result<()> {
        self.failed_over.lock().push(to.clone());
        Ok(())
    }
    fn clear_caches(&self) -> Result<()> {
        self.caches_cleared.fetch_add(1, Ordering::SeqCst);
        self.load_centi.store(1_000, Ordering::SeqCst);
        Ok(())
    }
    fn shed_load(&self, percent: u8) -> Result<()> {
        self.shed.lock().push(percent);
        if percent > 0 {
            self.load_centi.store(1_000, Ordering::SeqCst);
        }
        Ok(())
    }
    fn resize_pool(&self, pool: &str, size: usize) -> Result<()> {
        self.pools.lock().push((pool.to_string(), size));
        self.load_centi.store(1_000, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_risky_fail_over_is_preceded_by_a_real_snapshot() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(Host::default());
        let gate = Arc::new(WriteGate::new());
        let (h2, g2, sdir) = (host.clone(), gate.clone(), dir.path().join("snapshots"));
        let (_raw, _mirror, m) = rig(placement, 8, dir.path(), move |c| {
            c.host_actions(h2)
                .snapshots(SnapshotConfig::new(sdir, PS).retention(Retention::KeepAll))
                .snapshot_gate(g2, Arc::new(|| Lsn(7)))
                .healer(
                    HealerConfig::new()
                        .remedy(Arc::new(FailOver::new(ReplicaId::new("mirror"))))
                        .cold_start_order(Problem::JOURNAL_POISONED, &["fail-over"]),
                )
        });
        m.start().unwrap();
        assert!(m.snapshots().unwrap().snapshots().is_empty());
        m.failure_sink().send(Failure::new(
            Source::TransactionRollbackManager,
            FailureKind::JournalPoisoned,
            "an fsync of the journal failed",
            0,
        ));
        assert!(m.wait_idle(IDLE));
        let incs = m.incidents();
        let inc = incs
            .iter()
            .find(|i| healed_by(i) == Some("fail-over"))
            .unwrap_or_else(|| panic!("{incs:#?}"));
        let snap = inc
            .timeline
            .iter()
            .position(|e| e.step == Step::Snapshot)
            .expect("a snapshot step");
        let acted = inc
            .timeline
            .iter()
            .position(|e| e.step == Step::Acted)
            .unwrap();
        assert!(snap < acted, "{inc:#?}");
        let list = m.snapshots().unwrap().snapshots();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].lsn, Lsn(7));
        assert!(inc.timeline[snap].text.contains(&list[0].id.to_string()));
        assert_eq!(*host.failed_over.lock(), vec![ReplicaId::new("mirror")]);
        m.stop().unwrap();
    }
}

/// A manager whose host probe reads `host.load_centi` as `metric`.
fn metric_rig(
    placement: selfheal::ChecksumPlacement,
    dir: &std::path::Path,
    metric: &'static str,
    healer: HealerConfig,
) -> (Arc<Host>, ManualClock, AutoRecoveryManager) {
    let host = Arc::new(Host::default());
    host.load_centi.store(5_000, Ordering::SeqCst);
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(5));
    let (h2, h3, c2) = (host.clone(), host.clone(), clock.clone());
    let (_raw, _mirror, m) = rig(placement, 8, dir, move |c| {
        c.clock(Arc::new(c2.clone()))
            .host_actions(h2)
            .healer(healer)
            .health(
                HealthConfig::new()
                    .clock(Arc::new(c2))
                    .sample_interval(Duration::from_secs(3_600))
                    .probe_fn(metric, Thresholds::percent(70.0, 90.0), move || {
                        Ok(h3.load_centi.load(Ordering::SeqCst) as f64 / 100.0)
                    }),
            )
    });
    m.start().unwrap();
    (host, clock, m)
}

/// Drives `metric` critical and waits for the incident to close.
fn drive_critical(
    host: &Host,
    clock: &ManualClock,
    m: &AutoRecoveryManager,
    metric: &str,
) -> Incident {
    let monitor = m.health().unwrap().clone();
    monitor.sample_now().unwrap();
    host.load_centi.store(9_500, Ordering::SeqCst);
    clock.advance(Duration::from_secs(1));
    monitor.sample_now().unwrap();
    assert!(m.wait_idle(IDLE));
    let v: Vec<Incident> = m
        .incidents()
        .into_iter()
        .filter(|i| i.target == Target::Metric(Arc::from(metric)))
        .collect();
    assert_eq!(v.len(), 1, "{v:#?}");
    v.into_iter().next().unwrap()
}

#[test]
fn memory_pressure_clears_the_hosts_caches_and_the_metric_recovers() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (host, clock, m) =
            metric_rig(placement, dir.path(), "mem_used_pct", HealerConfig::new());
        let inc = drive_critical(&host, &clock, &m, "mem_used_pct");
        assert_eq!(healed_by(&inc), Some("clear-caches"), "{inc:#?}");
        assert_eq!(host.caches_cleared.load(Ordering::SeqCst), 1);
        let v = m.health().unwrap().sample_now().unwrap();
        assert!(v.metric("mem_used_pct").unwrap().value.unwrap() < 70.0);
        m.stop().unwrap();
    }
}

#[test]
fn resource_pressure_sheds_load_or_resizes_the_pool_the_host_registered() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (host, clock, m) = metric_rig(
            placement.clone(),
            dir.path(),
            "queue_depth",
            HealerConfig::new(),
        );
        let inc = drive_critical(&host, &clock, &m, "queue_depth");
        assert_eq!(healed_by(&inc), Some("shed-load"), "{inc:#?}");
        assert_eq!(
            host.shed.lock().first().copied(),
            Some(25),
            "{:?}",
            host.shed.lock()
        );
        m.stop().unwrap();
        drop(m);

        let dir = tempfile::tempdir().unwrap();
        let healer = HealerConfig::new()
            .remedy(Arc::new(ResizePool::new("workers", 8, 32)))
            .cold_start_order(Problem::RESOURCE_PRESSURE, &["resize-pool"]);
        let (host, clock, m) = metric_rig(placement, dir.path(), "queue_depth", healer);
        let inc = drive_critical(&host, &clock, &m, "queue_depth");
        assert_eq!(healed_by(&inc), Some("resize-pool"), "{inc:#?}");
        assert_eq!(*host.pools.lock(), vec![("workers".to_string(), 32)]);
        m.stop().unwrap();
    }
}

#[test]
fn a_failed_snapshot_is_taken_again_and_the_new_head_verifies() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let gate = Arc::new(WriteGate::new());
        let (g2, sdir) = (gate.clone(), dir.path().join("snapshots"));
        let (raw, _mirror, m) = rig(placement, 8, dir.path(), move |c| {
            c.snapshots(SnapshotConfig::new(sdir, PS))
                .snapshot_gate(g2, Arc::new(|| Lsn(11)))
        });
        m.start().unwrap();
        m.failure_sink().send(Failure::new(
            Source::StateSnapshotManager,
            FailureKind::SnapshotFailed,
            "a periodic snapshot failed: a read of the store timed out",
            0,
        ));
        assert!(m.wait_idle(IDLE));
        let incs = m.incidents();
        assert!(
            incs.iter().any(|i| healed_by(i) == Some("take-snapshot")),
            "{incs:#?}"
        );
        let snaps = m.snapshots().unwrap();
        let list = snaps.snapshots();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].lsn, Lsn(11));
        // The snapshot holds the store's pages.
        let mut b = vec![0u8; PS];
        assert!(snaps.read_page_at(list[0].id, PageId(3), &mut b).unwrap());
        assert_eq!(b, bytes(raw.as_ref(), 3));
        m.stop().unwrap();
    }
}

/// A host with an index it can rebuild.
#[derive(Debug, Default)]
struct Indexer {
    rebuilt: Mutex<Vec<String>>,
}

impl HostActions for Indexer {
    fn supports(&self, action: HostAction) -> bool {
        action == HostAction::RebuildIndex
    }
    fn rebuild_index(&self, index: &str) -> Result<()> {
        self.rebuilt.lock().push(index.to_string());
        Ok(())
    }
}

#[test]
fn an_index_the_host_reports_damaged_is_rebuilt_by_the_host() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(Indexer::default());
        let h2 = host.clone();
        let damaged = Problem::new("index-damaged");
        let d2 = damaged.clone();
        let (_raw, _mirror, m) = rig(placement, 8, dir.path(), move |c| {
            c.host_actions(h2).healer(
                HealerConfig::new()
                    .rule(
                        selfheal::healer::Rule::new("host.index", d2.clone())
                            .evidence(r"index \w+ failed its check")
                            .unwrap()
                            .confidence(0.99),
                    )
                    .remedy(Arc::new(selfheal::healer::builtin::RebuildIndex::new(
                        "by_name", d2,
                    ))),
            )
        });
        m.start().unwrap();
        m.failure_sink().send(Failure::new(
            Source::Host,
            FailureKind::ComponentSuspect {
                component: Arc::from("by_name"),
            },
            "index by_name failed its check",
            0,
        ));
        assert!(m.wait_idle(IDLE));
        let inc = only(&m, &Target::Component(Arc::from("by_name")));
        assert_eq!(inc.diagnosis.problem, damaged);
        assert_eq!(healed_by(&inc), Some("rebuild-index"), "{inc:#?}");
        assert_eq!(*host.rebuilt.lock(), vec!["by_name".to_string()]);
        m.stop().unwrap();
    }
}

#[test]
fn a_crash_loser_whose_page_rotted_is_rolled_back_once_the_page_is_repaired() {
    use selfheal::rollback::RollbackConfig;
    use selfheal::testing::{CrashDir, CrashStore};
    use selfheal::{MemStore, RecoveryConfig, StoreReplica};
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(CrashDir::new());
        let store = Arc::new(CrashStore::new(PS, 8).unwrap());
        let mirror = Arc::new(MemStore::new(PS, 8).unwrap());
        let m = RecoveryConfig::new(store.clone(), dir.path())
            .placement(placement.clone())
            .rollback(RollbackConfig::with_storage(journal.clone()))
            .without_scrub()
            .build()
            .unwrap();
        m.start().unwrap();
        let rb = m.rollback_manager().unwrap();
        for p in 0..8 {
            m.detector().write_sealed(PageId(p), &mut page(7)).unwrap();
        }
        store.sync().unwrap();
        let committed = bytes(store.as_ref(), 2);
        let t = rb.begin().unwrap();
        rb.write(t, PageId(2), 200, b"in flight at the crash")
            .unwrap();
        store.sync().unwrap();
        // The replica follows every write, in flight or not.
        for p in 0..8 {
            mirror
                .write_page(PageId(p), &bytes(store.as_ref(), p))
                .unwrap();
        }
        let store2 = Arc::new(store.crash(None));
        let journal2 = Arc::new(journal.crash(0));
        drop(rb);
        drop(m);
        // The loser's page rots while the process is down.
        let mut b = bytes(store2.as_ref(), 2);
        b[1_000] ^= 0x10;
        store2.write_page(PageId(2), &b).unwrap();
        let m = RecoveryConfig::new(store2.clone(), dir.path())
            .placement(placement)
            .rollback(RollbackConfig::with_storage(journal2))
            .replica(Arc::new(StoreReplica::new("mirror", mirror.clone())))
            .without_scrub()
            .build()
            .unwrap();
        let r = m.start().unwrap();
        assert!(r.verdict.is_crash());
        assert_eq!(r.rollback.blocked.len(), 1, "{r:#?}");
        assert!(m.wait_idle(IDLE));
        let rb = m.rollback_manager().unwrap();
        assert!(rb.blocked_rollbacks().is_empty(), "{:#?}", m.incidents());
        assert!(rb.active_transactions().is_empty());
        assert_eq!(bytes(store2.as_ref(), 2), committed);
        let incs = m.incidents();
        assert!(
            incs.iter().any(|i| matches!(
                healed_by(i),
                Some("rollback-crash-losers" | "rollback-transaction")
            )),
            "{incs:#?}"
        );
        drop(rb);
        m.stop().unwrap();
    }
}
