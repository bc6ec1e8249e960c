//! Snapshot directories written by the previous format (1: 4-byte page CRCs, kept in `tests/data/snapshot-v1`, of 16 trailer-sealed pages) keep working: they restore and verify byte for byte, the first incremental on a format-1 head finds the changed sealed pages by fingerprints computed from its chain, a fallback from them says why its lost pages are unknown, and merging rewrites them in format 2.

use std::path::Path;
use std::sync::Arc;

use selfheal::snapshot::{
    ChangeDetection, Consistency, Fallback, LostPages, RestoreOptions, Retention, SnapshotConfig,
    SnapshotKind, SnapshotRequest, StateSnapshotManager, WriteGate,
};
use selfheal::testing::semi_compressible_page;
use selfheal::{
    ChecksumPlacement, CorruptionConfig, Error, Lsn, MemStore, PageId, PageSource, PageStore,
};

const PS: usize = 256;
const PAGES: u64 = 16;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/snapshot-v1")
        .join(name)
}

/// A copy of the format-1 directory and the store's bytes at snapshots 1 and 2.
fn format_1_dir() -> (tempfile::TempDir, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "MANIFEST",
        "snap-0000000000000001.shs",
        "snap-0000000000000002.shs",
    ] {
        std::fs::copy(fixture(name), dir.path().join(name)).unwrap();
    }
    let s1 = std::fs::read(fixture("state-1.bin")).unwrap();
    let s2 = std::fs::read(fixture("state-2.bin")).unwrap();
    (dir, s1, s2)
}

fn manager(dir: &Path) -> StateSnapshotManager {
    SnapshotConfig::new(dir, PS)
        .chunk_bytes(PS * 4)
        .retention(Retention::KeepAll)
        .build()
        .unwrap()
}

fn restored(m: &StateSnapshotManager, id: u64) -> Vec<u8> {
    let out = MemStore::new(PS, PAGES).unwrap();
    let r = m.restore(id, &out).unwrap();
    assert_eq!(r.restored, id);
    out.to_bytes()
}

fn format_of(dir: &Path, id: u64) -> u32 {
    let b = std::fs::read(dir.join(selfheal::snapshot::snapshot_file_name(id))).unwrap();
    u32::from_le_bytes(b[4..8].try_into().unwrap())
}

#[test]
fn format_1_snapshots_restore_and_verify() {
    let (dir, s1, s2) = format_1_dir();
    let m = manager(dir.path());
    assert!(m.manifest_rebuilt().is_none());
    let ids: Vec<u64> = m.snapshots().iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(format_of(dir.path(), 2), 1);
    m.verify(2).unwrap();
    assert!(restored(&m, 1) == s1);
    assert!(restored(&m, 2) == s2);
    let out = MemStore::new(PS, PAGES).unwrap();
    let r = m.restore(2, &out).unwrap();
    assert_eq!(r.metadata, vec![("origin".into(), b"format 1".to_vec())]);
    let mut buf = vec![0u8; PS];
    assert!(m.read_page_at(1, PageId(7), &mut buf).unwrap());
    assert!(buf[..] == s1[7 * PS..8 * PS]);
}

#[test]
fn the_first_incremental_on_a_format_1_head_compares_fingerprints() {
    for kind in ["view", "paused"] {
        let (dir, _, s2) = format_1_dir();
        let m = manager(dir.path());
        assert_eq!(m.head(), Some(2));
        // The store as it was at snapshot 2, trailer-sealed; the host
        // rewrites three pages through the detector.
        let raw = Arc::new(MemStore::new(PS, PAGES).unwrap());
        for p in 0..PAGES {
            let at = p as usize * PS;
            raw.write_page(PageId(p), &s2[at..at + PS]).unwrap();
        }
        let det = CorruptionConfig::new(ChecksumPlacement::Trailer)
            .build(raw.clone())
            .unwrap();
        let mut buf = vec![0u8; PS];
        for p in 0..PAGES {
            det.read_verified(PageId(p), &mut buf).unwrap();
        }
        for p in [0, 7, 15] {
            semi_compressible_page(0x53, PageId(p), &mut buf);
            det.write_sealed(PageId(p), &mut buf).unwrap();
        }
        let gate = WriteGate::new();
        let pause = gate.pause();
        let source = if kind == "view" {
            Consistency::View {
                view: &det,
                lsn: Lsn(3),
            }
        } else {
            Consistency::Paused {
                store: &det,
                pause: &pause,
                lsn: Lsn(3),
            }
        };
        let r = m
            .take_snapshot(source, SnapshotRequest::new(SnapshotKind::Incremental))
            .unwrap();
        drop(pause);
        assert_eq!(r.detection, ChangeDetection::Fingerprints, "{kind}");
        assert_eq!(r.info.parent, Some(2), "{kind}");
        assert_eq!(r.info.stored_pages, 3, "{kind}: the rewritten pages");
        assert_eq!(format_of(dir.path(), r.info.id), 2, "{kind}");
        assert!(restored(&m, r.info.id) == raw.to_bytes(), "{kind}");
        // The head now holds the rewritten page: served as it is now.
        assert!(m
            .page_source()
            .read_page(PageId(7), Some(Lsn(3)), &mut buf)
            .unwrap());
        let mut now = vec![0u8; PS];
        raw.read_page(PageId(7), &mut now).unwrap();
        assert_eq!(buf, now, "{kind}");
        // A reopened manager reads the mixed chain the same way.
        drop(m);
        let m = manager(dir.path());
        assert!(restored(&m, r.info.id) == raw.to_bytes(), "{kind}");
    }
}

#[test]
fn a_fallback_from_format_1_says_why_its_lost_pages_are_unknown() {
    let (dir, s1, _) = format_1_dir();
    let path = dir.path().join("snap-0000000000000002.shs");
    let mut b = std::fs::read(&path).unwrap();
    b[70] ^= 0x20; // inside its only chunk
    std::fs::write(&path, b).unwrap();
    let m = manager(dir.path());
    let out = MemStore::new(PS, PAGES).unwrap();
    assert!(matches!(
        m.restore(2, &out),
        Err(Error::SnapshotDamaged {
            requested: 2,
            damaged: 2,
            ..
        })
    ));
    let r = m
        .restore_with(
            2,
            &out,
            RestoreOptions::new().fallback(Fallback::NewestOlderGood),
        )
        .unwrap();
    assert_eq!(r.restored, 1);
    match r.fallback.unwrap().lost {
        LostPages::Unknown { reason } => assert!(reason.contains("format 1"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(out.to_bytes() == s1);
}

#[test]
fn merging_a_format_1_chain_writes_format_2() {
    let (dir, _, s2) = format_1_dir();
    let m = manager(dir.path());
    let merged = m.merge(2).unwrap();
    assert_eq!(merged.parent, None);
    assert_eq!(format_of(dir.path(), merged.id), 2);
    assert!(restored(&m, merged.id) == s2);
    assert_eq!(m.head(), Some(merged.id));
}
