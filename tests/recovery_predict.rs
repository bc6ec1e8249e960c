//! Goal: health predictions become incidents handled before the threshold
//! is crossed — a disk filling up gets snapshot retention trimmed (the
//! snapshot list shrinks) and then the host asked for space; read errors
//! trending up get an error-only scrub of the pages that failed before.
//! Method: a `ManualClock` advanced one second per sample; a host probe
//! whose value is a linear fill plus what the manager's snapshots take (so
//! deleting snapshots really lowers it) or a linear error count; samples
//! taken with `sample_now`; the manager heals on its threads; the snapshot
//! list, the host's calls and the store's bytes are checked, not only the
//! incident status. Pages sealed under both checksum placements.

mod recovery_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use recovery_common::*;
use selfheal::healer::Outcome;
use selfheal::health::{HealthConfig, Thresholds};
use selfheal::snapshot::{Consistency, Retention, SnapshotConfig, SnapshotKind, SnapshotRequest};
use selfheal::testing::both_placements;
use selfheal::{
    AutoRecoveryManager, Clock, HostAction, HostActions, Lsn, ManualClock, MemStore, PageStore,
    Priority, Result, StateSnapshotManager, Target,
};

const IDLE: Duration = Duration::from_secs(20);

/// A disk whose use the host frees on request.
#[derive(Debug, Default)]
struct Disk {
    /// Percent points freed by the host so far, in hundredths.
    freed_centi: AtomicU64,
    calls: AtomicU64,
}

impl HostActions for Disk {
    fn supports(&self, action: HostAction) -> bool {
        action == HostAction::FreeDiskSpace
    }
    fn free_disk_space(&self, bytes_wanted: u64) -> Result<u64> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.freed_centi.fetch_add(3_000, Ordering::SeqCst);
        Ok(bytes_wanted)
    }
}

fn health(clock: &ManualClock) -> HealthConfig {
    HealthConfig::new()
        .clock(Arc::new(clock.clone()))
        // The sampling thread never ticks within the test: samples are
        // taken by the test (and by the healer around each remedy).
        .sample_interval(Duration::from_secs(3_600))
        .prediction_min_samples(8)
        .prediction_window(12)
        .prediction_confirm(2)
}

fn incidents_of(m: &AutoRecoveryManager, metric: &str) -> Vec<selfheal::healer::Incident> {
    m.incidents()
        .into_iter()
        .filter(|i| i.target == Target::Metric(Arc::from(metric)))
        .collect()
}

fn healed_by(i: &selfheal::healer::Incident) -> Option<&str> {
    match &i.outcome {
        Outcome::Healed { remedy } => Some(remedy),
        _ => None,
    }
}

#[test]
fn a_disk_filling_up_is_relieved_before_it_is_degraded() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(5));
        let snaps: Arc<OnceLock<Arc<StateSnapshotManager>>> = Arc::new(OnceLock::new());
        let disk = Arc::new(Disk::default());
        let (c2, s2, d2) = (clock.clone(), snaps.clone(), disk.clone());
        // 20 % plus 0.5 % a second, plus 5 % per snapshot kept, minus what
        // the host freed.
        let used = move || {
            let t = c2.now_ns() as f64 / 1e9;
            let kept = s2.get().map_or(0, |s| s.snapshots().len()) as f64;
            let freed = d2.freed_centi.load(Ordering::SeqCst) as f64 / 100.0;
            Ok(20.0 + 0.5 * t + 5.0 * kept - freed)
        };
        let (c3, d3, sdir) = (clock.clone(), disk.clone(), dir.path().join("snapshots"));
        let (raw, _mirror, m) = rig(placement, 8, dir.path(), move |c| {
            c.clock(Arc::new(c3.clone()))
                .host_actions(d3)
                .snapshots(SnapshotConfig::new(sdir, PS).retention(Retention::KeepAll))
                .health(health(&c3).probe_fn(
                    "disk_used_pct",
                    Thresholds::percent(85.0, 95.0),
                    used,
                ))
        });
        let s = m.snapshots().unwrap().clone();
        snaps.set(s.clone()).unwrap();
        let view = MemStore::new(PS, 8).unwrap();
        for p in 0..8 {
            view.write_page(selfheal::PageId(p), &bytes(raw.as_ref(), p))
                .unwrap();
        }
        for lsn in 1..=3 {
            s.take_snapshot(
                Consistency::View {
                    view: &view,
                    lsn: Lsn(lsn),
                },
                SnapshotRequest::new(SnapshotKind::Full),
            )
            .unwrap();
        }
        assert_eq!(s.snapshots().len(), 3);
        m.start().unwrap();
        let monitor = m.health().unwrap().clone();
        let mut max_seen = 0.0f64;
        for _ in 0..120 {
            clock.advance(Duration::from_secs(1));
            let v = monitor
                .sample_now()
                .unwrap()
                .metric("disk_used_pct")
                .unwrap()
                .value
                .unwrap();
            max_seen = max_seen.max(v);
            assert!(m.wait_idle(IDLE));
            let incs = incidents_of(&m, "disk_used_pct");
            if incs.iter().filter(|i| healed_by(i).is_some()).count() >= 2 {
                break;
            }
        }
        let incs = incidents_of(&m, "disk_used_pct");
        let healed: Vec<_> = incs.iter().filter_map(healed_by).collect();
        assert_eq!(
            healed,
            vec!["trim-snapshots", "free-disk-space"],
            "{incs:#?}"
        );
        assert!(incs.iter().all(|i| i.priority == Priority::P2));
        // The snapshot list really shrank, to the newest; the host was asked once.
        let left: Vec<u64> = s.snapshots().iter().map(|i| i.id).collect();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(disk.calls.load(Ordering::SeqCst), 1);
        // Both before the disk became degraded (85 %).
        assert!(max_seen < 85.0, "the disk reached {max_seen:.1} %");
        m.stop().unwrap();
    }
}

#[test]
fn rising_read_errors_get_an_error_only_scrub_of_the_pages_that_failed_before() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(5));
        let errors = Arc::new(Mutex::new(0.0f64));
        let e2 = errors.clone();
        let c3 = clock.clone();
        let (raw, mirror, m) = rig(placement, 8, dir.path(), move |c| {
            c.clock(Arc::new(c3.clone())).health(health(&c3).probe_fn(
                "read_errors",
                Thresholds::new(500.0, 1_000.0),
                move || Ok(*e2.lock()),
            ))
        });
        m.start().unwrap();
        // Page 3 failed once and was repaired.
        damage(&raw, 3);
        read_finds(&m, 3);
        assert!(m.wait_idle(IDLE));
        assert_eq!(m.stats().recovered, 1);
        // It rots again, and so does page 5, which never failed: nothing
        // reads either.
        damage(&raw, 3);
        damage(&raw, 5);
        let monitor = m.health().unwrap().clone();
        let mut scrubbed = false;
        for i in 0..60 {
            clock.advance(Duration::from_secs(1));
            *errors.lock() = 2.0 * f64::from(i) + if i % 2 == 0 { 0.1 } else { 0.0 };
            monitor.sample_now().unwrap();
            assert!(m.wait_idle(IDLE));
            // The scrub runs; it does not verify while the pages it found
            // bad are still bad (their own incidents repair them).
            if incidents_of(&m, "read_errors")
                .iter()
                .any(|i| i.attempts.iter().any(|a| a.remedy == "targeted-scrub"))
            {
                scrubbed = true;
                break;
            }
        }
        assert!(scrubbed, "{:#?}", m.incidents());
        // Page 3's new incident waits out the cooldown of its first repair.
        clock.advance(Duration::from_secs(600));
        let deadline = std::time::Instant::now() + IDLE;
        while bytes(raw.as_ref(), 3) != bytes(mirror.as_ref(), 3)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(m.wait_idle(IDLE));
        // Page 3 was found by the scrub and healed; page 5 was not targeted.
        assert!(bytes(raw.as_ref(), 3) == bytes(mirror.as_ref(), 3));
        assert!(
            bytes(raw.as_ref(), 5) != bytes(mirror.as_ref(), 5),
            "page 5 was not targeted: {:#?}",
            m.incidents()
                .iter()
                .map(|i| (
                    i.target.clone(),
                    i.outcome.clone(),
                    i.timeline
                        .iter()
                        .map(|e| e.text.clone())
                        .collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>()
        );
        let page3: Vec<_> = m
            .incidents()
            .into_iter()
            .filter(|i| i.target == Target::Page(selfheal::PageId(3)))
            .collect();
        assert_eq!(page3.len(), 2, "{page3:#?}");
        assert!(page3.iter().all(|i| healed_by(i).is_some()));
        m.stop().unwrap();
    }
}
