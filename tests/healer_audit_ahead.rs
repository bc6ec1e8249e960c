//! Goal: the audit log is written ahead of a remedy's effect: a process
//! that dies at any step of a heal leaves no page repaired without the
//! record of the decision to repair it. Method: one `CrashSwitch` shared
//! by the page store (`CrashStore`) and the audit log's files
//! (`CrashFiles`) stops every write from step k on, for every k of a heal
//! of a damaged page (real sealed pages, both checksum placements); the
//! audit log is reopened on what a process crash leaves (every byte
//! written, synced or not) and must hold `Decided "try
//! repair-from-replicas"` whenever the store shows the page repaired.

use std::sync::Arc;

use selfheal::audit::{AuditConfig, AuditQuery, EntryKind};
use selfheal::healer::{HealerConfig, RemedyContext};
use selfheal::testing::{
    both_placements, seal_numbered_pages, CrashFiles, CrashStore, CrashSwitch, Damage,
};
use selfheal::{
    ChecksumPlacement, CorruptionConfig, FailureKind, ManualClock, MemStore, PageId, PageStore,
    RepairConfig, StoreReplica,
};

const PS: usize = 4096;
const PAGES: u64 = 8;
const BAD: u64 = 3;

/// Heals page `BAD` with the switch armed at `crash_at` (`None`: never);
/// returns the switch's operation count, whether the store shows the page
/// repaired, and the audit records a process crash leaves.
fn heal_once(
    placement: ChecksumPlacement,
    crash_at: Option<u64>,
) -> (u64, bool, Vec<selfheal::audit::AuditRecord>) {
    let clock = ManualClock::new();
    let switch = CrashSwitch::new();
    let store = Arc::new(
        CrashStore::new(PS, PAGES)
            .unwrap()
            .with_switch(switch.clone()),
    );
    let det = Arc::new(
        CorruptionConfig::new(placement)
            .clock(Arc::new(clock.clone()))
            .build(store.clone())
            .unwrap(),
    );
    let mirror = Arc::new(MemStore::new(PS, PAGES).unwrap());
    seal_numbered_pages(&det, PAGES).unwrap();
    let mut b = vec![0u8; PS];
    for p in 0..PAGES {
        store.read_page(PageId(p), &mut b).unwrap();
        mirror.write_page(PageId(p), &b).unwrap();
    }
    store.sync().unwrap();
    let good = b_of(mirror.as_ref(), BAD);
    let mut bad = good.clone();
    Damage::BitFlip { byte: 100, bit: 3 }.apply(&mut bad);
    store.write_page(PageId(BAD), &bad).unwrap();
    assert!(det.read_verified(PageId(BAD), &mut b).is_err());
    let failure = det
        .failures()
        .try_iter()
        .find(|f| f.kind == FailureKind::CorruptPage { page: PageId(BAD) })
        .expect("reported");
    let repairer = Arc::new(
        RepairConfig::new()
            .clock(Arc::new(clock.clone()))
            .build(det.clone())
            .unwrap(),
    );
    repairer
        .add_replica(Arc::new(StoreReplica::new("mirror", mirror.clone())))
        .unwrap();
    let files = Arc::new(CrashFiles::new().with_switch(switch.clone()));
    let log = Arc::new(AuditConfig::new().open_on(files.clone()).unwrap());
    let healer = HealerConfig::new()
        .audit(log.clone())
        .build(
            RemedyContext::new()
                .clock(Arc::new(clock.clone()))
                .detector(det.clone())
                .repairer(repairer),
        )
        .unwrap();
    let base = switch.ops();
    if let Some(k) = crash_at {
        switch.arm_at(base + k);
    }
    let _ = healer.heal(failure);
    let ops = switch.ops() - base;
    drop(healer);
    drop(log);
    switch.disarm();
    // A process crash: the OS keeps every byte written.
    let after = Arc::new(CrashFiles::new());
    for name in files.names() {
        after.set_file(&name, files.file(&name).unwrap_or_default());
    }
    let log = AuditConfig::new().open_on(after).unwrap();
    let records = log.query(&AuditQuery::all()).unwrap();
    let repaired = b_of(store.as_ref(), BAD) == good;
    (ops, repaired, records)
}

fn b_of(store: &dyn PageStore, p: u64) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    store.read_page(PageId(p), &mut b).unwrap();
    b
}

#[test]
fn a_page_repaired_before_a_crash_has_its_decision_on_record() {
    for (_, placement) in both_placements(PS) {
        let (steps, repaired, records) = heal_once(placement.clone(), None);
        assert!(repaired, "the heal repairs the page when nothing crashes");
        assert!(records.iter().any(|r| r.entry.kind == EntryKind::Closed));
        let mut crashed_repaired = 0;
        for k in 0..=steps {
            let (_, repaired, records) = heal_once(placement.clone(), Some(k));
            if !repaired {
                continue;
            }
            crashed_repaired += 1;
            assert!(
                records.iter().any(|r| r.entry.kind == EntryKind::Decided
                    && r.entry.text.contains("try repair-from-replicas")
                    && r.entry.target.contains(&BAD.to_string())),
                "crash at step {k} of {steps}: page {BAD} is repaired with no decision on record: {records:#?}"
            );
        }
        assert!(
            crashed_repaired > 0,
            "some crash points come after the repair"
        );
    }
}
