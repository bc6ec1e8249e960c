//! StateSnapshotManager end to end: round trips of random stores and change sets (proptest), a simulated crash at every step of the write path, damage to every part of snapshot files and the manifest, the page-source staleness rule, restores that fail mid-way, chains over a store that shrank, ids at the limit, crafted manifests, manifest rebuilds that must keep files, retention failures, merging, metadata, progress, the periodic thread and bad input — all on real files in temporary directories.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use proptest::prelude::*;
use selfheal::snapshot::{
    ChangeDetection, Consistency, CrashStep, Fallback, LostPages, Operation, PeriodicConfig,
    Progress, RestoreOptions, Retention, SnapshotConfig, SnapshotKind, SnapshotRequest,
    StateSnapshotManager, WriteGate,
};
use selfheal::testing::{damaged_copies, decode_snapshot, fill_store};
use selfheal::{Error, Lsn, MemStore, PageId, PageSource, PageStore, Result};

const PS: usize = 256;

fn manager(dir: &Path) -> StateSnapshotManager {
    SnapshotConfig::new(dir, PS)
        .chunk_bytes(PS * 4)
        .retention(Retention::KeepAll)
        .build()
        .unwrap()
}

fn snap(
    m: &StateSnapshotManager,
    store: &dyn PageStore,
    lsn: u64,
    kind: SnapshotKind,
) -> Result<u64> {
    selfheal::testing::take_paused(m, store, Lsn(lsn), kind).map(|r| r.info.id)
}

fn write(store: &MemStore, m: &StateSnapshotManager, page: u64, fill: u8, notice: bool) {
    store.write_page(PageId(page), &[fill; PS]).unwrap();
    if notice {
        m.note_dirty(PageId(page));
    }
}

fn restored(m: &StateSnapshotManager, id: u64, pages: u64) -> Vec<u8> {
    let s = MemStore::new(PS, pages).unwrap();
    let r = m.restore(id, &s).unwrap();
    assert_eq!(r.restored, id, "{r:?}");
    s.to_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Every snapshot of a chain restores byte-identically, whatever the
    /// change sets and however changes were detected.
    #[test]
    fn round_trips(pages in 1u64..40, seed in any::<u64>(),
                   rounds in proptest::collection::vec((proptest::collection::vec((0u64..40, 1u8..255), 0..12), 0u8..4), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let store = MemStore::new(PS, pages).unwrap();
        fill_store(&store, seed).unwrap();
        let m = manager(dir.path());
        let mut expected = vec![(snap(&m, &store, 0, SnapshotKind::Full).unwrap(), store.to_bytes())];
        for (i, (changes, mode)) in rounds.iter().enumerate() {
            for (p, fill) in changes {
                write(&store, &m, p % pages, *fill, *mode != 1);
            }
            let kind = match mode { 0 | 1 => SnapshotKind::Incremental, 2 => SnapshotKind::Auto, _ => SnapshotKind::Full };
            let id = if *mode == 1 {
                let r = m.take_snapshot(Consistency::View { view: &store, lsn: Lsn(i as u64 + 1) }, SnapshotRequest::new(kind)).unwrap();
                prop_assert_eq!(r.detection, ChangeDetection::Fingerprints);
                r.info.id
            } else {
                snap(&m, &store, i as u64 + 1, kind).unwrap()
            };
            expected.push((id, store.to_bytes()));
        }
        for (id, bytes) in &expected {
            prop_assert!(&restored(&m, *id, pages) == bytes, "snapshot {} differs", id);
            m.verify(*id).unwrap();
        }
        // A fresh manager on the same directory reads the same chains.
        drop(m);
        let m = manager(dir.path());
        for (id, bytes) in &expected {
            prop_assert!(&restored(&m, *id, pages) == bytes, "snapshot {} differs after reopen", id);
        }
    }
}

#[test]
fn incremental_cost_follows_changed_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemStore::new(PS, 200).unwrap();
    fill_store(&store, 3).unwrap();
    let m = manager(dir.path());
    let full = snap(&m, &store, 1, SnapshotKind::Full).unwrap();
    write(&store, &m, 17, 9, true);
    write(&store, &m, 150, 9, true);
    let inc = snap(&m, &store, 2, SnapshotKind::Incremental).unwrap();
    let infos = m.snapshots();
    assert_eq!(infos[1].id, inc);
    assert_eq!(infos[1].parent, Some(full));
    assert_eq!(infos[1].stored_pages, 2);
    assert!(infos[1].file_bytes * 20 < infos[0].file_bytes, "{infos:?}");
}

/// Snapshots 1 (full) and 2 (incremental) of a 12-page store, with the
/// store's bytes at each.
fn two_snapshots(dir: &Path) -> (MemStore, Vec<(u64, Vec<u8>)>) {
    let store = MemStore::new(PS, 12).unwrap();
    fill_store(&store, 11).unwrap();
    let m = manager(dir);
    let a = snap(&m, &store, 1, SnapshotKind::Full).unwrap();
    let sa = store.to_bytes();
    write(&store, &m, 2, 0x22, true);
    write(&store, &m, 9, 0x99, true);
    let b = snap(&m, &store, 2, SnapshotKind::Incremental).unwrap();
    let sb = store.to_bytes();
    write(&store, &m, 5, 0x55, true);
    (store, vec![(a, sa), (b, sb)])
}

/// The files of a snapshot directory, but for the lock file its manager
/// holds (and leaves) there.
fn listed_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != selfheal::snapshot::LOCK_FILE)
        .collect();
    v.sort();
    v
}

#[test]
fn crash_at_every_step_keeps_earlier_snapshots() {
    for step in CrashStep::ALL {
        for kind in [SnapshotKind::Full, SnapshotKind::Incremental] {
            let dir = tempfile::tempdir().unwrap();
            let (store, before) = two_snapshots(dir.path());
            let m = manager(dir.path());
            m.crash_at(step);
            let e = snap(&m, &store, 3, kind).unwrap_err();
            assert!(e.to_string().contains("simulated crash"), "{step:?}: {e}");
            // The crashed manager refuses further work.
            assert!(matches!(
                snap(&m, &store, 3, kind),
                Err(Error::Poisoned { .. })
            ));
            drop(m);
            let m = manager(dir.path());
            let ids: Vec<u64> = m.snapshots().iter().map(|s| s.id).collect();
            let committed = step == CrashStep::ManifestRenamed;
            assert_eq!(
                ids,
                if committed { vec![1, 2, 3] } else { vec![1, 2] },
                "{step:?}"
            );
            for (id, bytes) in &before {
                assert!(&restored(&m, *id, 12) == bytes, "{step:?} snapshot {id}");
            }
            if committed {
                assert!(restored(&m, 3, 12) == store.to_bytes(), "{step:?}");
            }
            // Nothing but the manifest and listed snapshots is left behind.
            let mut want: Vec<String> = m.snapshots().into_iter().map(|s| s.file_name).collect();
            want.push("MANIFEST".into());
            want.sort();
            assert_eq!(listed_files(dir.path()), want, "{step:?}");
            // And the next snapshot works.
            let id = snap(&m, &store, 4, SnapshotKind::Auto).unwrap();
            assert!(
                restored(&m, id, 12) == store.to_bytes(),
                "{step:?} {kind:?}"
            );
        }
    }
}

fn damage_file(path: &Path, damage: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    damage(&mut b);
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_damaged_newest_is_refused_and_falls_back_only_when_asked() {
    let dir0 = tempfile::tempdir().unwrap();
    let (_, _) = two_snapshots(dir0.path());
    let len = std::fs::metadata(dir0.path().join("snap-0000000000000002.shs"))
        .unwrap()
        .len() as usize;
    // Header, first chunk, index, footer and the last byte of snapshot 2.
    let spots = [0usize, 30, 64, 70, len - 60, len - 20, len - 1];
    for &at in &spots {
        for kind in 0..4 {
            let dir = tempfile::tempdir().unwrap();
            let (store, before) = two_snapshots(dir.path());
            let m = manager(dir.path());
            damage_file(
                &dir.path().join("snap-0000000000000002.shs"),
                |b| match kind {
                    0 => b[at] ^= 0x10,
                    1 => b[at..(at + 16).min(len)].fill(0),
                    2 => b[at..(at + 16).min(len)].fill(0xA5),
                    _ => b.truncate(at),
                },
            );
            assert!(m.verify(2).is_err(), "damage {kind} at {at}");
            m.verify(1).unwrap();
            // Exactly the snapshot asked for, or an error naming it.
            let now = store.to_bytes();
            match m.restore(2, &store) {
                Err(Error::SnapshotDamaged {
                    requested: 2,
                    damaged: 2,
                    path,
                    target_written: false,
                    ..
                }) => assert!(path.ends_with("snap-0000000000000002.shs")),
                other => panic!("damage {kind} at {at}: {other:?}"),
            }
            assert!(store.to_bytes() == now, "damage {kind} at {at}");
            // The older chain, because the caller allows it.
            let r = m
                .restore_with(
                    2,
                    &store,
                    RestoreOptions::new().fallback(Fallback::NewestOlderGood),
                )
                .unwrap();
            assert_eq!(r.restored, 1, "damage {kind} at {at}");
            let fb = r.fallback.expect("a fallback is reported");
            assert_eq!(fb.skipped.len(), 1);
            assert_eq!(fb.skipped[0].0, 2);
            // Damage in a chunk leaves the index readable: the pages changed
            // in snapshot 2 are known to be lost.
            // Damage in the chunk (at 64; the index starts a few bytes
            // later) leaves the index readable: the pages changed in
            // snapshot 2 are known to be lost. Otherwise they may be unknown.
            match &fb.lost {
                LostPages::Known(v) => assert_eq!(v, &vec![2, 9], "damage {kind} at {at}"),
                LostPages::Unknown { reason } => {
                    assert!(at != 64 || kind == 3, "damage {kind} at {at}: {reason}");
                    assert!(reason.contains("cannot be read"), "{reason}");
                }
                other => panic!("a kind of lost pages this test does not know: {other:?}"),
            }
            assert!(store.to_bytes() == before[0].1, "damage {kind} at {at}");
        }
    }
}

#[test]
fn damaged_base_leaves_no_usable_snapshot_and_store_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = two_snapshots(dir.path());
    let m = manager(dir.path());
    damage_file(&dir.path().join("snap-0000000000000001.shs"), |b| {
        b[100] ^= 1
    });
    let now = store.to_bytes();
    match m.restore(2, &store) {
        Err(Error::SnapshotDamaged {
            requested: 2,
            damaged: 1,
            target_written: false,
            ..
        }) => {}
        other => panic!("expected SnapshotDamaged, got {other:?}"),
    }
    let fallback = RestoreOptions::new().fallback(Fallback::NewestOlderGood);
    match m.restore_with(2, &store, fallback) {
        Err(Error::NoUsableSnapshot { reason }) => {
            assert!(reason.contains("snapshot 1"), "{reason}")
        }
        other => panic!("expected NoUsableSnapshot, got {other:?}"),
    }
    assert_eq!(
        store.to_bytes(),
        now,
        "nothing may be written from a damaged chain"
    );
    assert!(matches!(m.verify(2), Err(Error::CorruptFile { .. })));
}

#[test]
fn every_damage_of_a_snapshot_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = two_snapshots(dir.path());
    for name in ["snap-0000000000000001.shs", "snap-0000000000000002.shs"] {
        let good = std::fs::read(dir.path().join(name)).unwrap();
        decode_snapshot(&good).unwrap();
        for (label, bad) in damaged_copies(&good, 64, 1) {
            let r = decode_snapshot(&bad);
            assert!(r.is_err(), "{name}: {label} went undetected");
        }
    }
}

#[test]
fn damaged_or_missing_manifest_is_rebuilt_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let (_, before) = two_snapshots(dir.path());
    let mpath = dir.path().join("MANIFEST");
    let good = std::fs::read(&mpath).unwrap();
    let mut cases = damaged_copies(&good, 48, 2);
    cases.push(("missing".into(), Vec::new()));
    for (label, bad) in cases {
        if label == "missing" {
            std::fs::remove_file(&mpath).unwrap();
        } else {
            std::fs::write(&mpath, &bad).unwrap();
        }
        let m = manager(dir.path());
        assert!(m.manifest_rebuilt().is_some(), "{label}");
        assert_eq!(
            m.snapshots().iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![1, 2],
            "{label}"
        );
        assert!(restored(&m, 2, 12) == before[1].1, "{label}");
        drop(m);
        assert!(
            std::fs::read(&mpath).unwrap() == good,
            "{label}: the rebuilt manifest is the original"
        );
    }
    assert!(manager(dir.path()).manifest_rebuilt().is_none());
    // A newer format is refused, never rebuilt over.
    let mut newer = good.clone();
    newer[4] = 9;
    let crc = selfheal::testing::reference_crc32(&newer[..20]);
    newer[20..24].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&mpath, &newer).unwrap();
    assert!(matches!(
        SnapshotConfig::new(dir.path(), PS).build(),
        Err(Error::UnsupportedVersion { .. })
    ));
    // Files of another page size are never deleted by a rebuild.
    std::fs::remove_file(&mpath).unwrap();
    assert!(matches!(
        SnapshotConfig::new(dir.path(), PS * 2).build(),
        Err(Error::PageSizeMismatch { .. })
    ));
    assert_eq!(manager(dir.path()).snapshots().len(), 2);
}

#[test]
fn page_source_never_serves_a_stale_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemStore::new(PS, 8).unwrap();
    fill_store(&store, 5).unwrap();
    let m = manager(dir.path());
    let src = m.page_source();
    let mut buf = vec![0u8; PS];
    assert!(
        !src.read_page(PageId(1), None, &mut buf).unwrap(),
        "no snapshot yet"
    );
    snap(&m, &store, 10, SnapshotKind::Full).unwrap();
    let mut want = vec![0u8; PS];
    store.read_page(PageId(1), &mut want).unwrap();
    assert_eq!(src.name(), "snapshot 1");
    // Unchanged since the snapshot, proven by notices and/or LSN.
    assert!(src.read_page(PageId(1), None, &mut buf).unwrap());
    assert_eq!(buf, want);
    assert!(src.read_page(PageId(1), Some(Lsn(10)), &mut buf).unwrap());
    // The local page is newer than the snapshot.
    assert!(!src.read_page(PageId(1), Some(Lsn(11)), &mut buf).unwrap());
    // Noted dirty after the snapshot: never served, whatever the LSN says.
    m.note_dirty(PageId(1));
    assert!(!src.read_page(PageId(1), Some(Lsn(3)), &mut buf).unwrap());
    assert!(!src.read_page(PageId(1), None, &mut buf).unwrap());
    assert!(src.read_page(PageId(2), None, &mut buf).unwrap());
    // Past the end, or the wrong buffer.
    assert!(!src.read_page(PageId(8), Some(Lsn(1)), &mut buf).unwrap());
    assert!(matches!(
        src.read_page(PageId(2), None, &mut [0u8; 3]),
        Err(Error::BufferSize { .. })
    ));
    // A reopened manager does not trust notices: only an LSN vouches.
    drop((m, src));
    let m = manager(dir.path());
    let src = m.page_source();
    assert!(!src.read_page(PageId(2), None, &mut buf).unwrap());
    assert!(src.read_page(PageId(1), Some(Lsn(9)), &mut buf).unwrap());
    assert_eq!(buf, want);
}

#[test]
fn page_source_reads_through_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemStore::new(PS, 10).unwrap();
    fill_store(&store, 6).unwrap();
    let m = manager(dir.path());
    snap(&m, &store, 1, SnapshotKind::Full).unwrap();
    write(&store, &m, 4, 0x44, true);
    snap(&m, &store, 2, SnapshotKind::Incremental).unwrap();
    let src = m.page_source();
    let mut buf = vec![0u8; PS];
    for p in 0..10 {
        assert!(src.read_page(PageId(p), Some(Lsn(2)), &mut buf).unwrap());
        let mut want = vec![0u8; PS];
        store.read_page(PageId(p), &mut want).unwrap();
        assert_eq!(buf, want, "page {p}");
    }
    assert!(m.read_page_at(1, PageId(4), &mut buf).unwrap());
    assert_ne!(buf[0], 0x44);
}

#[test]
fn retention_merge_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemStore::new(PS, 16).unwrap();
    fill_store(&store, 8).unwrap();
    let m = SnapshotConfig::new(dir.path(), PS)
        .chunk_bytes(PS * 3)
        .retention(Retention::KeepLast(2))
        .max_chain_len(10)
        .build()
        .unwrap();
    let gate = WriteGate::new();
    let mut states = Vec::new();
    for round in 0..4u8 {
        write(&store, &m, u64::from(round) * 3, round + 1, true);
        let pause = gate.pause();
        let r = m
            .take_snapshot(
                Consistency::Paused {
                    store: &store,
                    pause: &pause,
                    lsn: Lsn(u64::from(round)),
                },
                SnapshotRequest::new(SnapshotKind::Auto).metadata("round", vec![round]),
            )
            .unwrap();
        assert!(r.deleted.is_empty(), "a chain's ancestors are kept");
        states.push((r.info.id, store.to_bytes()));
    }
    assert_eq!(m.snapshots().len(), 4);
    let merged = m.merge(4).unwrap();
    assert_eq!(merged.parent, None);
    assert_eq!(m.head(), Some(merged.id));
    let out = MemStore::new(PS, 16).unwrap();
    let r = m.restore(merged.id, &out).unwrap();
    assert!(out.to_bytes() == states[3].1);
    assert_eq!(r.metadata, vec![("round".to_string(), vec![3u8])]);
    // Now the old chain can go: keep the last two (4 and the merged one),
    // with 4's ancestors.
    let deleted = m.apply_retention().unwrap();
    assert!(deleted.is_empty());
    drop(m);
    let m2 = SnapshotConfig::new(dir.path(), PS)
        .retention(Retention::KeepLast(1))
        .build()
        .unwrap();
    assert_eq!(m2.apply_retention().unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(
        listed_files(dir.path()),
        vec![
            "MANIFEST".to_string(),
            format!("snap-{:016x}.shs", merged.id)
        ]
    );
    // By age: everything older than an hour, except the newest.
    drop(m2);
    let m3 = SnapshotConfig::new(dir.path(), PS)
        .retention(Retention::MaxAge(Duration::from_secs(3600)))
        .build()
        .unwrap();
    assert!(m3.apply_retention().unwrap().is_empty());
    assert!(
        m3.apply_retention_at(u64::MAX).unwrap().is_empty(),
        "the newest is always kept"
    );
    let r = m3.restore_latest(&out).unwrap();
    assert_eq!(r.restored, merged.id);
}

/// A store that records the manager's progress whenever it is read or written.
#[derive(Debug)]
struct Watching {
    inner: MemStore,
    progress: Mutex<Option<Progress>>,
    seen: Mutex<Vec<(Option<Operation>, u64, u64)>>,
    thread_names: Mutex<Vec<String>>,
    reads: AtomicU64,
}

impl Watching {
    fn look(&self) {
        if let Some(p) = &*self.progress.lock() {
            let r = p.get();
            self.seen
                .lock()
                .push((r.operation, r.bytes_done, r.bytes_total));
        }
        let name = std::thread::current().name().unwrap_or("").to_owned();
        self.thread_names.lock().push(name);
    }
}

impl PageStore for Watching {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn page_count(&self) -> u64 {
        self.inner.page_count()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.look();
        self.inner.read_page(page, buf)
    }
    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        self.look();
        self.inner.write_page(page, data)
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

fn watching(pages: u64) -> Arc<Watching> {
    let inner = MemStore::new(PS, pages).unwrap();
    fill_store(&inner, 4).unwrap();
    Arc::new(Watching {
        inner,
        progress: Mutex::new(None),
        seen: Mutex::new(Vec::new()),
        thread_names: Mutex::new(Vec::new()),
        reads: AtomicU64::new(0),
    })
}

#[test]
fn progress_is_readable_while_running() {
    let dir = tempfile::tempdir().unwrap();
    // More than one 1 MiB read batch, so progress moves between reads.
    let pages = 5000;
    let store = watching(pages);
    let m = manager(dir.path());
    *store.progress.lock() = Some(m.progress());
    let id = snap(&m, &*store, 1, SnapshotKind::Full).unwrap();
    let seen = std::mem::take(&mut *store.seen.lock());
    assert!(seen
        .iter()
        .all(|(op, done, total)| *op == Some(Operation::Snapshot)
            && done <= total
            && *total == pages * PS as u64));
    assert!(seen.iter().any(|(_, done, _)| *done > 0));
    m.restore(id, &*store).unwrap();
    let seen = store.seen.lock().clone();
    assert!(seen
        .iter()
        .all(|(op, _, total)| *op == Some(Operation::Restore) && *total == pages * PS as u64));
    assert_eq!(m.progress().get().operation, None);
}

#[test]
fn periodic_thread_snapshots_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let store = watching(8);
    let m = SnapshotConfig::new(dir.path(), PS)
        .retention(Retention::KeepLast(3))
        .max_chain_len(2)
        .build()
        .unwrap();
    let gate = Arc::new(WriteGate::new());
    let lsn = Arc::new(AtomicU64::new(5));
    let l2 = lsn.clone();
    let p = PeriodicConfig::new(Duration::from_millis(20))
        .build(
            &m,
            store.clone(),
            gate.clone(),
            Arc::new(move || Lsn(l2.load(Ordering::Relaxed))),
        )
        .unwrap();
    p.start().unwrap();
    let r = p.snapshot_now().unwrap();
    assert_eq!(r.info.lsn, Lsn(5));
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.stats().taken < 4 {
        assert!(
            Instant::now() < deadline,
            "ticks did not take snapshots: {:?}",
            p.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    p.stop().unwrap();
    let taken = p.stats().taken;
    assert!(matches!(p.snapshot_now(), Err(Error::Stopped { .. })));
    assert!(
        m.snapshots().len() <= 4,
        "retention applies: {:?}",
        m.snapshots()
    );
    assert!(store
        .thread_names
        .lock()
        .iter()
        .any(|n| n == "selfheal-snapshot"));
    assert_eq!(p.stats().taken, taken);
    drop(p);
}

#[test]
fn bad_input_gives_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || SnapshotConfig::new(dir.path(), PS);
    let is_cfg = |r: Result<StateSnapshotManager>, f: &str| match r {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, f),
        other => panic!("expected InvalidConfig({f}), got {other:?}"),
    };
    is_cfg(cfg().retention(Retention::KeepLast(0)).build(), "retention");
    is_cfg(
        cfg().retention(Retention::MaxAge(Duration::ZERO)).build(),
        "retention",
    );
    is_cfg(cfg().threads(0).build(), "threads");
    is_cfg(cfg().max_chain_len(0).build(), "max_chain_len");
    is_cfg(cfg().chunk_bytes(PS - 1).build(), "chunk_bytes");
    is_cfg(SnapshotConfig::new(dir.path(), 10).build(), "page_size");

    let m = manager(dir.path());
    let store = MemStore::new(PS, 4).unwrap();
    fill_store(&store, 1).unwrap();
    let z = Arc::new(MemStore::new(PS, 4).unwrap());
    match PeriodicConfig::new(Duration::ZERO).build(
        &m,
        z,
        Arc::new(WriteGate::new()),
        Arc::new(|| Lsn(0)),
    ) {
        Err(Error::InvalidConfig {
            field: "interval", ..
        }) => {}
        other => panic!("zero interval: {other:?}"),
    }
    assert!(matches!(
        snap(&m, &store, 1, SnapshotKind::Incremental),
        Err(Error::InvalidArgument { .. })
    ));
    let id = snap(&m, &store, 1, SnapshotKind::Full).unwrap();
    let mut buf = vec![0u8; PS];
    assert!(matches!(
        m.restore(99, &store),
        Err(Error::SnapshotNotFound { id: 99 })
    ));
    assert!(matches!(
        m.verify(99),
        Err(Error::SnapshotNotFound { id: 99 })
    ));
    assert!(matches!(
        m.merge(99),
        Err(Error::SnapshotNotFound { id: 99 })
    ));
    assert!(matches!(
        m.read_page_at(99, PageId(0), &mut buf),
        Err(Error::SnapshotNotFound { id: 99 })
    ));

    let other = MemStore::new(PS * 2, 4).unwrap();
    assert!(matches!(
        snap(&m, &other, 2, SnapshotKind::Full),
        Err(Error::PageSizeMismatch { .. })
    ));
    assert!(matches!(
        m.restore(id, &other),
        Err(Error::PageSizeMismatch { .. })
    ));
    // Another page size (once the owner of the directory let go of it).
    drop(m);
    assert!(matches!(
        SnapshotConfig::new(dir.path(), PS * 2).build(),
        Err(Error::PageSizeMismatch { .. })
    ));
    let m = manager(dir.path());
    // A smaller target that cannot grow: a typed error, nothing written.
    let small = FixedSize(MemStore::new(PS, 2).unwrap());
    let before = small.0.to_bytes();
    assert!(matches!(
        m.restore(id, &small),
        Err(Error::RestoreTargetSize {
            needed: 4,
            actual: 2,
            ..
        })
    ));
    assert_eq!(small.0.to_bytes(), before);
    let gate = WriteGate::new();
    let pause = gate.pause();
    let bad_meta = m.take_snapshot(
        Consistency::Paused {
            store: &store,
            pause: &pause,
            lsn: Lsn(3),
        },
        SnapshotRequest::new(SnapshotKind::Full).metadata("", vec![1]),
    );
    assert!(matches!(
        bad_meta,
        Err(Error::InvalidArgument {
            what: "metadata",
            ..
        })
    ));
    drop(pause);

    // A directory that cannot be created or written.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        SnapshotConfig::new(file.join("sub"), PS).build(),
        Err(Error::SnapshotDirUnusable { .. })
    ));
    assert!(matches!(
        SnapshotConfig::new(&file, PS).build(),
        Err(Error::SnapshotDirUnusable { .. })
    ));
}

#[cfg(unix)]
#[test]
fn files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("snaps");
    let (_, _) = two_snapshots(&sub);
    assert_eq!(
        std::fs::metadata(&sub).unwrap().permissions().mode() & 0o077,
        0
    );
    assert_files_private(&sub);
}

/// Every file the manager lists in `dir` is owner-only.
fn assert_files_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for f in listed_files(dir) {
        let mode = std::fs::metadata(dir.join(&f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} is {mode:o}");
    }
}

/// A manager that restores in one pass (no chunk pre-check), with small
/// chunks so that damage can be placed mid-way.
fn one_pass_manager(dir: &Path) -> StateSnapshotManager {
    SnapshotConfig::new(dir, PS)
        .chunk_bytes(PS * 4)
        .retention(Retention::KeepAll)
        .precheck_restore(false)
        .threads(1)
        .build()
        .unwrap()
}

#[test]
fn one_pass_restore_finding_damage_mid_way_fails_or_falls_back_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemStore::new(PS, 64).unwrap();
    fill_store(&store, 21).unwrap();
    let m = one_pass_manager(dir.path());
    snap(&m, &store, 1, SnapshotKind::Full).unwrap();
    let first = store.to_bytes();
    fill_store(&store, 22).unwrap();
    snap(&m, &store, 2, SnapshotKind::Full).unwrap();
    let path = dir.path().join("snap-0000000000000002.shs");
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    // A chunk three quarters into the file: earlier chunks restore first.
    damage_file(&path, |b| b[len * 3 / 4] ^= 0x80);
    let target = MemStore::new(PS, 64).unwrap();
    match m.restore(2, &target) {
        Err(Error::SnapshotDamaged {
            requested: 2,
            damaged: 2,
            target_written: true,
            ..
        }) => {}
        other => panic!("expected SnapshotDamaged after writing, got {other:?}"),
    }
    let r = m
        .restore_with(
            2,
            &target,
            RestoreOptions::new().fallback(Fallback::NewestOlderGood),
        )
        .unwrap();
    assert_eq!(r.restored, 1);
    let fb = r.fallback.unwrap();
    assert_eq!(fb.skipped.len(), 1);
    assert!(fb.skipped[0].1.contains("chunk"), "{:?}", fb.skipped);
    // Every page was rewritten by the second full snapshot.
    assert_eq!(fb.lost, LostPages::Known((0..64).collect()));
    assert!(
        target.to_bytes() == first,
        "the fallback must overwrite every page"
    );
}

/// A store whose reads panic: a host bug inside a snapshot.
#[derive(Debug)]
struct Panicking;

impl PageStore for Panicking {
    fn page_size(&self) -> usize {
        PS
    }
    fn page_count(&self) -> u64 {
        4
    }
    fn read_page(&self, _: PageId, _: &mut [u8]) -> Result<()> {
        panic!("host bug while reading a page")
    }
    fn write_page(&self, _: PageId, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

#[test]
fn a_panicking_worker_marks_the_periodic_component_failed() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let p = PeriodicConfig::new(Duration::from_secs(3600))
        .build(
            &m,
            Arc::new(Panicking),
            Arc::new(WriteGate::new()),
            Arc::new(|| Lsn(1)),
        )
        .unwrap();
    p.start().unwrap();
    assert!(matches!(p.snapshot_now(), Err(Error::Stopped { .. })));
    assert!(matches!(p.snapshot_now(), Err(Error::Stopped { .. })));
    assert_eq!(p.stats().failed, 1);
    assert!(matches!(p.stop(), Err(Error::Stopped { .. })));
    // The manager itself is still usable.
    let store = MemStore::new(PS, 4).unwrap();
    fill_store(&store, 1).unwrap();
    snap(&m, &store, 2, SnapshotKind::Full).unwrap();
}

#[test]
fn auto_takes_a_full_snapshot_when_the_head_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = two_snapshots(dir.path());
    let m = manager(dir.path());
    damage_file(&dir.path().join("snap-0000000000000002.shs"), |b| {
        let n = b.len();
        b[n - 40] ^= 1; // the index
    });
    assert!(matches!(
        snap(&m, &store, 3, SnapshotKind::Incremental),
        Err(Error::CorruptFile { .. })
    ));
    let id = snap(&m, &store, 3, SnapshotKind::Auto).unwrap();
    let info = m.snapshots().into_iter().find(|s| s.id == id).unwrap();
    assert_eq!(info.parent, None);
    assert!(restored(&m, id, 12) == store.to_bytes());
}

/// A store that cannot change size (`resize` keeps the default answer).
#[derive(Debug)]
struct FixedSize(MemStore);

impl PageStore for FixedSize {
    fn page_size(&self) -> usize {
        self.0.page_size()
    }
    fn page_count(&self) -> u64 {
        self.0.page_count()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.0.read_page(page, buf)
    }
    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        self.0.write_page(page, data)
    }
    fn sync(&self) -> Result<()> {
        self.0.sync()
    }
}

/// A store whose writes fail once `left` of them have been made.
#[derive(Debug)]
struct FailsAfter<'a> {
    inner: &'a MemStore,
    left: AtomicU64,
}

impl PageStore for FailsAfter<'_> {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn page_count(&self) -> u64 {
        self.inner.page_count()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.inner.read_page(page, buf)
    }
    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        if self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(Error::Io {
                context: "write to a failing store".into(),
                source: std::io::Error::other("injected write failure"),
            });
        }
        self.inner.write_page(page, data)
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
}

#[test]
fn a_restore_failing_mid_way_distrusts_notices_and_the_head() {
    for kind in [SnapshotKind::Incremental, SnapshotKind::Auto] {
        let dir = tempfile::tempdir().unwrap();
        let store = MemStore::new(PS, 8).unwrap();
        fill_store(&store, 31).unwrap();
        let m = SnapshotConfig::new(dir.path(), PS)
            .chunk_bytes(PS * 4)
            .retention(Retention::KeepAll)
            .threads(1)
            .build()
            .unwrap();
        let old = snap(&m, &store, 1, SnapshotKind::Full).unwrap();
        for p in 0..4 {
            write(&store, &m, p, 0xb0 + p as u8, true);
        }
        let head = snap(&m, &store, 2, SnapshotKind::Full).unwrap();
        write(&store, &m, 7, 0x77, true);
        assert!(m.dirty_notices_trusted());
        // Restoring the older snapshot writes pages 0..3 back, then fails.
        let failing = FailsAfter {
            inner: &store,
            left: AtomicU64::new(3),
        };
        let err = m.restore(old, &failing).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(
            !m.dirty_notices_trusted(),
            "pages were overwritten that no notice names"
        );
        // The head's copy of page 0 no longer matches the store: not served.
        let src = m.page_source();
        let mut buf = vec![0u8; PS];
        assert!(!src.read_page(PageId(0), None, &mut buf).unwrap());
        assert!(!src.read_page(PageId(0), Some(Lsn(2)), &mut buf).unwrap());
        assert!(!src.read_page(PageId(5), Some(Lsn(1)), &mut buf).unwrap());
        let gate = WriteGate::new();
        let pause = gate.pause();
        let r = m
            .take_snapshot(
                Consistency::Paused {
                    store: &store,
                    pause: &pause,
                    lsn: Lsn(3),
                },
                SnapshotRequest::new(kind),
            )
            .unwrap();
        drop(pause);
        assert_eq!(r.info.parent, Some(head), "{kind:?}");
        assert_eq!(r.detection, ChangeDetection::Fingerprints);
        assert_eq!(r.info.stored_pages, 4, "pages 0, 1, 2 and 7 changed");
        assert_eq!(restored(&m, r.info.id, 8), store.to_bytes());
        // A successful restore makes the head known again.
        assert!(src.read_page(PageId(5), Some(Lsn(3)), &mut buf).unwrap());
    }
}

#[test]
fn restore_of_a_snapshot_taken_after_the_store_shrank() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let big = MemStore::new(PS, 10).unwrap();
    fill_store(&big, 41).unwrap();
    snap(&m, &big, 1, SnapshotKind::Full).unwrap();
    let small = MemStore::new(PS, 5).unwrap();
    let mut buf = vec![0u8; PS];
    for p in 0..5 {
        big.read_page(PageId(p), &mut buf).unwrap();
        small.write_page(PageId(p), &buf).unwrap();
    }
    write(&small, &m, 2, 0x22, true);
    let id = snap(&m, &small, 2, SnapshotKind::Incremental).unwrap();
    assert_eq!(m.snapshots()[1].page_count, 5);
    let target = MemStore::new(PS, 5).unwrap();
    let r = m.restore(id, &target).unwrap();
    assert_eq!(r.restored, id);
    assert_eq!(target.to_bytes(), small.to_bytes());
    // By default a larger target is shrunk to the snapshot's page count.
    let larger = MemStore::new(PS, 7).unwrap();
    m.restore(id, &larger).unwrap();
    assert_eq!(larger.to_bytes(), small.to_bytes());
    // Asked to, it keeps the pages past it as they are.
    let larger = MemStore::new(PS, 7).unwrap();
    larger.write_page(PageId(6), &[0x66; PS]).unwrap();
    let r = m
        .restore_with(id, &larger, RestoreOptions::new().keep_extra_pages(true))
        .unwrap();
    assert_eq!(r.extra_pages_kept, 2);
    let bytes = larger.to_bytes();
    assert_eq!(&bytes[..5 * PS], &small.to_bytes()[..]);
    assert_eq!(&bytes[5 * PS..6 * PS], &[0u8; PS][..]);
    assert_eq!(&bytes[6 * PS..], &[0x66; PS][..]);
}

/// Rewrites the payload of a framed file (the manifest) and recomputes both
/// checksums of its frame, so that only the edited field is wrong.
fn reframe(bytes: &mut [u8], edit: impl FnOnce(&mut [u8])) {
    edit(&mut bytes[24..]);
    let crc = selfheal::testing::reference_crc32(&bytes[24..]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    let crc = selfheal::testing::reference_crc32(&bytes[..20]);
    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
}

/// Sets the id in a snapshot file's header and recomputes the header CRC.
fn set_snapshot_id(bytes: &mut [u8], id: u64) {
    bytes[8..16].copy_from_slice(&id.to_le_bytes());
    let crc = selfheal::testing::reference_crc32(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn the_largest_ids_on_disk_give_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemStore::new(PS, 6).unwrap();
    fill_store(&store, 51).unwrap();
    let first = {
        let m = manager(dir.path());
        snap(&m, &store, 1, SnapshotKind::Full).unwrap()
    };
    let mpath = dir.path().join("MANIFEST");
    let good_manifest = std::fs::read(&mpath).unwrap();
    let spath = dir.path().join("snap-0000000000000001.shs");
    let good_snapshot = std::fs::read(&spath).unwrap();

    // A manifest whose next id is u64::MAX does not load; it is rebuilt.
    let mut bad = good_manifest.clone();
    reframe(&mut bad, |p| {
        p[4..12].copy_from_slice(&u64::MAX.to_le_bytes())
    });
    assert!(matches!(
        selfheal::testing::decode_manifest(&bad),
        Err(Error::CorruptFile { .. })
    ));
    std::fs::write(&mpath, &bad).unwrap();
    let m = manager(dir.path());
    assert!(m.manifest_rebuilt().is_some());
    assert_eq!(snap(&m, &store, 2, SnapshotKind::Full).unwrap(), first + 1);
    drop(m);

    // A snapshot file whose id is u64::MAX does not check, and a rebuild
    // leaves it out.
    let mut top = good_snapshot.clone();
    set_snapshot_id(&mut top, u64::MAX);
    assert!(matches!(
        decode_snapshot(&top),
        Err(Error::CorruptFile { offset: 8, .. })
    ));
    std::fs::write(dir.path().join("snap-ffffffffffffffff.shs"), &top).unwrap();
    std::fs::remove_file(&mpath).unwrap();
    let m = manager(dir.path());
    assert_eq!(
        m.snapshots().iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    drop(m);

    // The largest usable id rebuilds, but no snapshot can follow it.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let mut last = good_snapshot;
    set_snapshot_id(&mut last, u64::MAX - 1);
    std::fs::write(dir.path().join("snap-fffffffffffffffe.shs"), &last).unwrap();
    let m = manager(dir.path());
    assert_eq!(m.snapshots()[0].id, u64::MAX - 1);
    let err = snap(&m, &store, 3, SnapshotKind::Full).unwrap_err();
    assert!(matches!(err, Error::CorruptFile { .. }), "{err:?}");
    assert_eq!(m.snapshots().len(), 1);
    assert_eq!(restored(&m, u64::MAX - 1, 6), store.to_bytes());
}

#[test]
fn a_rebuild_never_deletes_a_file_it_could_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let (_, before) = two_snapshots(dir.path());
    let mpath = dir.path().join("MANIFEST");
    std::fs::remove_file(&mpath).unwrap();
    // A snapshot name that cannot be read as a file (here a directory): an
    // open error, not damage. The open fails and changes nothing.
    let odd = dir.path().join("snap-0000000000000009.shs");
    std::fs::create_dir(&odd).unwrap();
    std::fs::write(odd.join("keep"), b"x").unwrap();
    let err = SnapshotConfig::new(dir.path(), PS).build().unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotRegularFile {
                kind: "directory",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(odd.join("keep").exists());
    assert!(!mpath.exists(), "no manifest is written by a failed open");
    assert_eq!(listed_files(dir.path()).len(), 3);
    std::fs::remove_dir_all(&odd).unwrap();

    // A damaged file is left out of the rebuilt manifest and kept, renamed.
    let second = dir.path().join("snap-0000000000000002.shs");
    damage_file(&second, |b| b[0] ^= 1);
    let damaged = std::fs::read(&second).unwrap();
    let m = manager(dir.path());
    assert!(m.manifest_rebuilt().is_some());
    assert_eq!(
        m.snapshots().iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![1]
    );
    assert!(!second.exists());
    let orphan = dir.path().join("snap-0000000000000002.shs.orphan");
    assert_eq!(std::fs::read(&orphan).unwrap(), damaged);
    assert!(restored(&m, 1, 12) == before[0].1);
    drop(m);
    // A later open that loads the manifest leaves the orphan alone.
    let m = manager(dir.path());
    assert!(m.manifest_rebuilt().is_none());
    assert!(orphan.exists());
}

/// A manifest frame around `payload`, with the magic and version of `like`.
fn framed_like(like: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = like[..8].to_vec();
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&selfheal::testing::reference_crc32(payload).to_le_bytes());
    let crc = selfheal::testing::reference_crc32(&out[..20]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn a_manifest_entry_naming_another_file_is_refused() {
    for victim in ["snap-0000000000000002.shs", "MANIFEST"] {
        let dir = tempfile::tempdir().unwrap();
        let store = MemStore::new(PS, 6).unwrap();
        fill_store(&store, 61).unwrap();
        {
            let m = manager(dir.path());
            snap(&m, &store, 1, SnapshotKind::Full).unwrap();
            write(&store, &m, 3, 0x33, true);
            snap(&m, &store, 2, SnapshotKind::Full).unwrap();
        }
        let mpath = dir.path().join("MANIFEST");
        let good = std::fs::read(&mpath).unwrap();
        // The first entry's name: its length at payload offset 16 + 56.
        let mut payload = good[24..].to_vec();
        let at = 16 + 56;
        assert_eq!(&payload[at + 2..at + 27], b"snap-0000000000000001.shs");
        payload.splice(at..at + 27, {
            let mut v = (victim.len() as u16).to_le_bytes().to_vec();
            v.extend_from_slice(victim.as_bytes());
            v
        });
        let bad = framed_like(&good, &payload);
        assert!(
            matches!(
                selfheal::testing::decode_manifest(&bad),
                Err(Error::CorruptFile { .. })
            ),
            "{victim}"
        );
        std::fs::write(&mpath, &bad).unwrap();
        // Retention of the older snapshot deletes its own file, never the
        // one the crafted entry names.
        let m = SnapshotConfig::new(dir.path(), PS)
            .chunk_bytes(PS * 4)
            .retention(Retention::KeepLast(1))
            .build()
            .unwrap();
        assert!(m.manifest_rebuilt().is_some(), "{victim}");
        assert_eq!(m.apply_retention().unwrap(), vec![1], "{victim}");
        assert!(dir.path().join("snap-0000000000000002.shs").exists());
        assert!(!dir.path().join("snap-0000000000000001.shs").exists());
        assert!(restored(&m, 2, 6) == store.to_bytes(), "{victim}");
        drop(m);
        assert!(manager(dir.path()).manifest_rebuilt().is_none(), "{victim}");
    }
}

#[test]
fn a_retention_failure_after_the_commit_keeps_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemStore::new(PS, 6).unwrap();
    fill_store(&store, 71).unwrap();
    let m = SnapshotConfig::new(dir.path(), PS)
        .retention(Retention::KeepLast(1))
        .build()
        .unwrap();
    snap(&m, &store, 1, SnapshotKind::Full).unwrap();
    write(&store, &m, 2, 0x22, true);
    m.fail_next_retention();
    let gate = WriteGate::new();
    let pause = gate.pause();
    let r = m
        .take_snapshot(
            Consistency::Paused {
                store: &store,
                pause: &pause,
                lsn: Lsn(2),
            },
            SnapshotRequest::new(SnapshotKind::Full),
        )
        .unwrap();
    drop(pause);
    let why = r.retention_error.expect("retention failed");
    assert!(why.contains("simulated write failure"), "{why}");
    assert!(r.deleted.is_empty());
    assert_eq!(m.head(), Some(r.info.id));
    assert_eq!(
        m.snapshots().iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(restored(&m, 2, 6) == store.to_bytes());
    // The next retention deletes what this one could not.
    assert_eq!(m.apply_retention().unwrap(), vec![1]);
    drop(m);
    assert_eq!(manager(dir.path()).snapshots().len(), 1);
}

#[test]
fn an_existing_directory_keeps_its_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("shared");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o750)).unwrap();
    two_snapshots(&sub);
    let mode = std::fs::metadata(&sub).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o750, "{mode:o}");
    assert_files_private(&sub);
}

#[test]
fn a_one_pass_restore_finding_damage_with_no_fallback_distrusts_notices() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemStore::new(PS, 64).unwrap();
    fill_store(&store, 81).unwrap();
    let m = one_pass_manager(dir.path());
    let id = snap(&m, &store, 1, SnapshotKind::Full).unwrap();
    let path = dir.path().join("snap-0000000000000001.shs");
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    damage_file(&path, |b| b[len * 3 / 4] ^= 0x80);
    // The store moves on, with notices; then a restore of the only
    // snapshot writes its first chunks before the damage is found.
    write(&store, &m, 63, 0x63, true);
    let err = m.restore(id, &store).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SnapshotDamaged {
                target_written: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!m.dirty_notices_trusted());
    let mut buf = vec![0u8; PS];
    assert!(!m
        .page_source()
        .read_page(PageId(0), Some(Lsn(1)), &mut buf)
        .unwrap());
}

#[test]
fn periodic_snapshots_are_built_then_started_and_stop_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let store = Arc::new(MemStore::new(PS, 4).unwrap());
    fill_store(&*store, 1).unwrap();
    let p = PeriodicConfig::new(Duration::from_secs(3600))
        .build(&m, store, Arc::new(WriteGate::new()), Arc::new(|| Lsn(1)))
        .unwrap();
    assert!(!p.is_running());
    assert!(matches!(
        p.snapshot_now(),
        Err(Error::InvalidArgument { .. })
    ));
    p.start().unwrap();
    assert!(p.is_running());
    assert!(matches!(p.start(), Err(Error::InvalidArgument { .. })));
    assert_eq!(p.snapshot_now().unwrap().info.lsn, Lsn(1));
    p.stop().unwrap();
    assert!(matches!(p.start(), Err(Error::Stopped { .. })));
    assert!(matches!(p.snapshot_now(), Err(Error::Stopped { .. })));
    p.stop().unwrap();
}
