//! Goal: a page known bad stays fenced across a restart — from the moment
//! the next manager is built, without a scrub re-discovering it — and gets
//! its incident healed; a damaged suspect registry is a warning and a
//! re-check of the pages it still names, never a refusal to start; a
//! deleted registry (or incidents file) is a warning naming the file, and
//! every page is re-checked; a crash
//! at any step of saving it leaves the old registry or the new one.
//! Method: a first manager in Observe mode (which changes nothing) finds
//! damaged pages and stops, the second (Automatic, no scrubber) is built
//! over the same store and directory; the registry file is damaged on disk
//! between the two; `CrashFiles` with a `CrashSwitch` cuts a save at every
//! step and gives the image a restarted process sees. Both checksum
//! placements (the sidecar table is carried from one manager to the next).

mod recovery_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use recovery_common::*;
use selfheal::testing::{both_placements, CrashFiles, CrashSwitch};
use selfheal::{
    AutoRecoveryManager, ChecksumPlacement, Error, MemStore, Mode, PageId, RecoveryConfig,
    StoreReplica,
};

const IDLE: Duration = Duration::from_secs(20);

fn second(
    placement: ChecksumPlacement,
    raw: &Arc<MemStore>,
    mirror: &Arc<MemStore>,
    dir: &std::path::Path,
    tune: impl FnOnce(RecoveryConfig) -> RecoveryConfig,
) -> AutoRecoveryManager {
    tune(
        RecoveryConfig::new(raw.clone(), dir)
            .placement(placement)
            .replica(Arc::new(StoreReplica::new("mirror", mirror.clone())))
            .without_scrub(),
    )
    .build()
    .unwrap()
}

fn fenced_read(m: &AutoRecoveryManager, p: u64) -> bool {
    let mut b = vec![0u8; PS];
    matches!(
        m.detector().read_verified(PageId(p), &mut b),
        Err(Error::PageFenced { .. })
    )
}

/// A first run that finds `bad` damaged and changes nothing.
fn observed_run(
    placement: ChecksumPlacement,
    dir: &std::path::Path,
    bad: &[u64],
    tune: impl FnOnce(RecoveryConfig) -> RecoveryConfig,
) -> (Arc<MemStore>, Arc<MemStore>) {
    let (raw, mirror, m) = rig(placement, 8, dir, |c| tune(c.mode(Mode::Observe)));
    m.start().unwrap();
    for &p in bad {
        damage(&raw, p);
        read_finds(&m, p);
    }
    assert!(m.wait_idle(IDLE));
    assert_eq!(m.stats().observed, bad.len() as u64);
    m.stop().unwrap();
    (raw, mirror)
}

#[test]
fn a_page_known_bad_stays_fenced_across_a_restart_and_is_healed() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror) = observed_run(placement.clone(), dir.path(), &[4], |c| c);
        assert_ne!(bytes(raw.as_ref(), 4), bytes(mirror.as_ref(), 4));
        let m = second(placement.clone(), &raw, &mirror, dir.path(), |c| c);
        // Fenced before start, before anything read the page.
        assert!(fenced_read(&m, 4));
        assert!(!fenced_read(&m, 3));
        let r = m.start().unwrap();
        assert_eq!(r.suspects_restored, vec![PageId(4)]);
        assert_eq!(r.suspects_warning, None);
        assert!(m.wait_idle(IDLE));
        assert_eq!(bytes(raw.as_ref(), 4), bytes(mirror.as_ref(), 4));
        assert_eq!(m.stats().recovered, 1, "{:?}", m.stats());
        assert!(!fenced_read(&m, 4));
        m.stop().unwrap();
        drop(m);
        // Healed: the third run fences nothing.
        let m = second(placement, &raw, &mirror, dir.path(), |c| c);
        assert!(m.start().unwrap().suspects_restored.is_empty());
        m.stop().unwrap();
    }
}

#[test]
fn a_damaged_suspect_registry_is_a_warning_and_its_pages_are_rechecked() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror) = observed_run(placement.clone(), dir.path(), &[2, 5], |c| c);
        let path = dir.path().join("suspects");
        let mut file = std::fs::read(&path).unwrap();
        file[16] ^= 0x40; // the payload CRC: the records themselves are intact
        std::fs::write(&path, &file).unwrap();
        let m = second(placement.clone(), &raw, &mirror, dir.path(), |c| c);
        let r = m.start().unwrap();
        let warning = r.suspects_warning.expect("a damaged file is a warning");
        assert!(warning.contains("re-checked"), "{warning}");
        assert!(r.suspects_restored.is_empty());
        assert!(m.wait_idle(IDLE));
        for p in [2, 5] {
            assert_eq!(bytes(raw.as_ref(), p), bytes(mirror.as_ref(), p));
        }
        assert_eq!(m.stats().pages_healed, 2);
        m.stop().unwrap();
        drop(m);
        // Garbage shorter than a header: a warning, and a start.
        std::fs::write(&path, b"garbage").unwrap();
        let m = second(placement, &raw, &mirror, dir.path(), |c| c);
        let r = m.start().unwrap();
        assert!(r.suspects_warning.is_some());
        m.stop().unwrap();
    }
}

/// Found by the fault matrix: a deleted registry went unnoticed (nothing
/// fenced at build, no warning), so the pages the previous run knew bad
/// were trusted again until something read them.
#[test]
fn a_deleted_suspect_registry_is_a_warning_and_every_page_is_rechecked() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror) = observed_run(placement.clone(), dir.path(), &[2, 5], |c| c);
        let path = dir.path().join("suspects");
        std::fs::remove_file(&path).unwrap();
        let m = second(placement.clone(), &raw, &mirror, dir.path(), |c| c);
        // Fenced at build again: every page was re-checked.
        assert!(fenced_read(&m, 2) && fenced_read(&m, 5));
        assert!(!fenced_read(&m, 3));
        let r = m.start().unwrap();
        let warning = r.suspects_warning.expect("a deleted registry is a warning");
        assert!(
            warning.contains("missing") && warning.contains(&path.display().to_string()),
            "{warning}"
        );
        assert!(m.wait_idle(IDLE));
        for p in [2, 5] {
            assert_eq!(bytes(raw.as_ref(), p), bytes(mirror.as_ref(), p));
        }
        m.stop().unwrap();
        drop(m);
        // The file exists again: the next run says nothing.
        assert!(path.exists());
        let m = second(placement, &raw, &mirror, dir.path(), |c| c);
        let r = m.start().unwrap();
        assert_eq!(r.suspects_warning, None);
        m.stop().unwrap();
    }
}

/// A first run over an empty directory warns of nothing, and writes both
/// files, so that their deletion can be told from a first run.
#[test]
fn a_first_run_warns_of_nothing_and_a_deleted_incidents_file_is_a_warning() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, mirror, m) = rig(placement.clone(), 8, dir.path(), |c| c);
        let r = m.start().unwrap();
        assert_eq!((r.suspects_warning, r.incidents_warning), (None, None));
        assert!(dir.path().join("suspects").exists());
        assert!(dir.path().join("incidents").exists());
        m.stop().unwrap();
        drop(m);
        std::fs::remove_file(dir.path().join("incidents")).unwrap();
        let m = second(placement, &raw, &mirror, dir.path(), |c| c);
        let r = m.start().unwrap();
        let w = r
            .incidents_warning
            .expect("a deleted incidents file is a warning");
        assert!(w.contains("missing") && w.contains("incidents"), "{w}");
        assert_eq!(r.suspects_warning, None);
        m.stop().unwrap();
    }
}

#[test]
fn a_crash_at_any_step_of_a_save_leaves_the_old_registry_or_the_new() {
    for (_, placement) in both_placements(PS) {
        // Steps of one save: write the temporary file, sync it, rename, sync
        // the directory; step 4 is past the save.
        for step in 0..=4u64 {
            for seed in [None, Some(1), Some(7)] {
                let dir = tempfile::tempdir().unwrap();
                let switch = CrashSwitch::new();
                let files = Arc::new(CrashFiles::new().with_switch(switch.clone()));
                let f2 = files.clone();
                let (raw, mirror, m) = rig(placement.clone(), 8, dir.path(), move |c| {
                    c.mode(Mode::Observe).suspect_storage(f2)
                });
                m.start().unwrap();
                // The build wrote the registry (empty): the first save with
                // a page replaces it.
                let built = files.file("suspects");
                assert!(built.is_some(), "the build writes the registry");
                let base = switch.ops();
                damage(&raw, 3);
                read_finds(&m, 3);
                // The first save's four steps all done (its new bytes show
                // after the rename, before the directory's sync).
                let deadline = Instant::now() + IDLE;
                while switch.ops() < base + 4 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                assert!(files.file("suspects") != built, "the first save");
                let at = switch.ops() + step;
                switch.arm_at(at);
                damage(&raw, 6);
                read_finds(&m, 6);
                // Until the crash fired, or (step 4) the save's four steps
                // are all done: the file's new bytes alone do not say the
                // directory was synced.
                let deadline = Instant::now() + IDLE;
                while !switch.fired()
                    && (step < 4 || switch.ops() < at)
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let image = Arc::new(files.crash(seed));
                drop(m);
                switch.disarm();
                let m = second(placement.clone(), &raw, &mirror, dir.path(), |c| {
                    c.suspect_storage(image)
                });
                let r = m.start().unwrap();
                assert_eq!(r.suspects_warning, None, "step {step} seed {seed:?}");
                let restored = r.suspects_restored.clone();
                assert!(
                    restored == vec![PageId(3)] || restored == vec![PageId(3), PageId(6)],
                    "step {step} seed {seed:?}: {restored:?}"
                );
                if step == 4 && seed.is_none() {
                    assert_eq!(restored, vec![PageId(3), PageId(6)]);
                }
                assert!(m.wait_idle(IDLE));
                assert_eq!(bytes(raw.as_ref(), 3), bytes(mirror.as_ref(), 3));
                m.stop().unwrap();
            }
        }
    }
}
