//! Goal: the metrics the crate documents are the metrics it emits, with
//! the documented names, labels and units. Method: a recording
//! `metrics::Recorder` installed as the process's recorder (this file is
//! its own process); a manager heals a damaged page (real sealed pages,
//! both checksum placements), a rollback manager rolls a transaction back,
//! a snapshot manager takes a snapshot; the recorder's keys and described
//! units are compared with the table.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use parking_lot::Mutex;
use selfheal::rollback::RawPages;
use selfheal::snapshot::{
    Consistency, Retention, SnapshotConfig, SnapshotKind, SnapshotRequest, WriteGate,
};
use selfheal::testing::both_placements;
use selfheal::{ChecksumPlacement, Lsn, MemStore, PageId, PageStore, RollbackConfig};

mod recovery_common;
use recovery_common::*;

/// What the recorder saw: per metric name, its label sets and the sum of
/// its counter increments; described units.
#[derive(Default, Debug)]
struct Seen {
    keys: BTreeMap<String, BTreeSet<Vec<(String, String)>>>,
    counts: BTreeMap<String, u64>,
    units: BTreeMap<String, Unit>,
}

#[derive(Default, Debug)]
struct Rec(Arc<Mutex<Seen>>);

struct Handle {
    name: String,
    seen: Arc<Mutex<Seen>>,
}

impl CounterFn for Handle {
    fn increment(&self, v: u64) {
        *self
            .seen
            .lock()
            .counts
            .entry(self.name.clone())
            .or_default() += v;
    }
    fn absolute(&self, v: u64) {
        self.seen.lock().counts.insert(self.name.clone(), v);
    }
}
impl GaugeFn for Handle {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, _: f64) {}
}
impl HistogramFn for Handle {
    fn record(&self, _: f64) {}
}

impl Rec {
    fn handle(&self, key: &Key) -> Arc<Handle> {
        let labels = key
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        let name = key.name().to_string();
        self.0
            .lock()
            .keys
            .entry(name.clone())
            .or_default()
            .insert(labels);
        Arc::new(Handle {
            name,
            seen: self.0.clone(),
        })
    }
    fn unit(&self, key: KeyName, unit: Option<Unit>) {
        if let Some(u) = unit {
            self.0.lock().units.insert(key.as_str().to_string(), u);
        }
    }
}

impl Recorder for Rec {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.unit(key, unit);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.unit(key, unit);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.unit(key, unit);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(key))
    }
}

fn seen() -> &'static Arc<Mutex<Seen>> {
    static SEEN: OnceLock<Arc<Mutex<Seen>>> = OnceLock::new();
    SEEN.get_or_init(|| {
        let s = Arc::new(Mutex::new(Seen::default()));
        metrics::set_global_recorder(Rec(s.clone())).expect("the only recorder");
        s
    })
}

fn labels(s: &Seen, name: &str) -> BTreeSet<Vec<(String, String)>> {
    s.keys.get(name).cloned().unwrap_or_default()
}

fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_documented_metrics_are_emitted_with_their_labels_and_units() {
    let seen = seen();
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = rig(placement, 8, dir.path(), |c| c);
        m.start().unwrap();
        damage(&raw, 2);
        read_finds(&m, 2);
        assert!(m.wait_idle(Duration::from_secs(20)));
        assert_eq!(bytes(raw.as_ref(), 2), bytes(mirror.as_ref(), 2));
        m.stop().unwrap();
    }
    // A rollback.
    let store = Arc::new(MemStore::new(128, 4).unwrap());
    let jdir = tempfile::tempdir().unwrap();
    let rb = RollbackConfig::new(jdir.path().join("journal"))
        .build(RawPages::shared(store.clone()))
        .unwrap();
    let t = rb.begin().unwrap();
    rb.write(t, PageId(1), 0, b"abc").unwrap();
    rb.rollback(t).unwrap();
    // A snapshot.
    let sdir = tempfile::tempdir().unwrap();
    let snaps = SnapshotConfig::new(sdir.path(), 256)
        .retention(Retention::KeepAll)
        .build()
        .unwrap();
    let pages = MemStore::new(256, 4).unwrap();
    pages.write_page(PageId(0), &[7u8; 256]).unwrap();
    let gate = WriteGate::new();
    let pause = gate.pause();
    snaps
        .take_snapshot(
            Consistency::Paused {
                store: &pages,
                pause: &pause,
                lsn: Lsn(1),
            },
            SnapshotRequest::new(SnapshotKind::Full),
        )
        .unwrap();
    drop(pause);

    let s = seen.lock();
    assert_eq!(
        s.counts.get("selfheal_pages_corrupt_total"),
        Some(&2),
        "{s:#?}"
    );
    assert_eq!(
        s.counts.get("selfheal_pages_repaired_total"),
        Some(&2),
        "{s:#?}"
    );
    assert_eq!(labels(&s, "selfheal_pages_corrupt_total"), [l(&[])].into());
    assert_eq!(
        labels(&s, "selfheal_rollbacks_total"),
        [l(&[("reason", "request")])].into(),
        "{s:#?}"
    );
    assert_eq!(s.counts.get("selfheal_rollbacks_total"), Some(&1));
    assert_eq!(
        labels(&s, "selfheal_snapshots_total"),
        [l(&[("outcome", "ok")])].into(),
        "{s:#?}"
    );
    assert!(s.keys.contains_key("selfheal_snapshot_bytes"), "{s:#?}");
    assert!(labels(&s, "selfheal_incidents_opened_total").contains(&l(&[("priority", "P0")])));
    assert!(labels(&s, "selfheal_remedy_attempts_total").contains(&l(&[
        ("remedy", "repair-from-replicas"),
        ("outcome", "healed")
    ])));
    for (name, unit) in [
        ("selfheal_pages_corrupt_total", Unit::Count),
        ("selfheal_pages_repaired_total", Unit::Count),
        ("selfheal_rollbacks_total", Unit::Count),
        ("selfheal_snapshots_total", Unit::Count),
        ("selfheal_snapshot_bytes", Unit::Bytes),
        ("selfheal_incidents_opened_total", Unit::Count),
        ("selfheal_recovery_duration_seconds", Unit::Seconds),
    ] {
        assert_eq!(s.units.get(name), Some(&unit), "{name}: {s:#?}");
    }
    drop(s);

    // An incident escalated (the replica's copy is damaged too) and one
    // observed (Observe mode): the outcome counters, the RTO counter, the
    // duration histogram and the open-incidents gauge.
    let dir = tempfile::tempdir().unwrap();
    let (raw, mirror, m) = rig(ChecksumPlacement::Trailer, 8, dir.path(), |c| c);
    m.start().unwrap();
    damage(&raw, 3);
    damage(&mirror, 3);
    read_finds(&m, 3);
    assert!(m.wait_idle(Duration::from_secs(60)));
    assert_eq!(m.stats().escalated, 1, "{:?}", m.stats());
    m.stop().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (raw, _mirror, m) = rig(ChecksumPlacement::Trailer, 8, dir.path(), |c| {
        c.mode(selfheal::Mode::Observe)
    });
    m.start().unwrap();
    damage(&raw, 4);
    read_finds(&m, 4);
    assert!(m.wait_idle(Duration::from_secs(20)));
    m.stop().unwrap();
    let s = seen.lock();
    let p0 = l(&[("priority", "P0")]);
    for name in [
        "selfheal_incidents_healed_total",
        "selfheal_incidents_escalated_total",
        "selfheal_incidents_observed_total",
        "selfheal_recovery_duration_seconds",
    ] {
        assert!(labels(&s, name).contains(&p0), "{name}: {s:#?}");
    }
    let rto = labels(&s, "selfheal_rto_total");
    assert!(
        rto.iter().any(
            |ls| ls.contains(&("priority".to_string(), "P0".to_string()))
                && ls
                    .iter()
                    .any(|(k, v)| k == "met" && (v == "yes" || v == "no"))
        ),
        "{rto:?}"
    );
    assert_eq!(
        labels(&s, "selfheal_incidents_open"),
        [l(&[])].into(),
        "{s:#?}"
    );
    assert!(
        s.counts.get("selfheal_incidents_escalated_total") >= Some(&1),
        "{s:#?}"
    );
}
