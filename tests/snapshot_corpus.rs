//! Corpus run of the snapshot and manifest decoders on stable Rust: real files written by the manager (format 2) and kept from the previous format (format 1, `tests/data/snapshot-v1`), and hundreds of damaged copies of each (bit flips, zeroed and junk windows, truncations), must decode or fail with a typed error — never panic, never accept damage.

use selfheal::snapshot::{
    Consistency, Retention, SnapshotConfig, SnapshotKind, SnapshotRequest, WriteGate,
};
use selfheal::testing::{damaged_copies, decode_manifest, decode_snapshot, fill_store};
use selfheal::{Error, Lsn, MemStore, PageId, PageStore};

/// A directory with a full snapshot, an incremental one with metadata, and
/// the manifest; returns (snapshot files, manifest bytes).
fn corpus() -> (Vec<Vec<u8>>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = MemStore::new(128, 24).unwrap();
    fill_store(&store, 77).unwrap();
    let m = SnapshotConfig::new(dir.path(), 128)
        .chunk_bytes(128 * 5)
        .retention(Retention::KeepAll)
        .build()
        .unwrap();
    let gate = WriteGate::new();
    for (lsn, kind) in [(1, SnapshotKind::Full), (2, SnapshotKind::Incremental)] {
        store
            .write_page(PageId(lsn * 7), &[lsn as u8; 128])
            .unwrap();
        m.note_dirty(PageId(lsn * 7));
        let pause = gate.pause();
        m.take_snapshot(
            Consistency::Paused {
                store: &store,
                pause: &pause,
                lsn: Lsn(lsn),
            },
            SnapshotRequest::new(kind).metadata("config", b"k=v".to_vec()),
        )
        .unwrap();
    }
    let files = m
        .snapshots()
        .iter()
        .map(|s| std::fs::read(dir.path().join(&s.file_name)).unwrap())
        .collect();
    (files, std::fs::read(dir.path().join("MANIFEST")).unwrap())
}

fn is_typed(e: &Error) -> bool {
    matches!(
        e,
        Error::CorruptFile { .. } | Error::UnsupportedVersion { .. }
    )
}

/// Snapshot files of format 1 (4-byte page CRCs), written by the previous
/// release: a full snapshot and an incremental one of 16 trailer-sealed pages.
fn format_1_files() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/snapshot-v1");
    ["snap-0000000000000001.shs", "snap-0000000000000002.shs"]
        .iter()
        .map(|n| std::fs::read(dir.join(n)).unwrap())
        .collect()
}

#[test]
fn snapshot_reader_corpus_of_format_1() {
    let mut n = 0;
    for (i, good) in format_1_files().iter().enumerate() {
        assert_eq!(u32::from_le_bytes(good[4..8].try_into().unwrap()), 1);
        let s = decode_snapshot(good).unwrap();
        assert_eq!(s.metadata, vec!["origin".to_string()]);
        assert_eq!(s.page_count, 16);
        for (label, bad) in damaged_copies(good, 200, 40 + i as u64) {
            match decode_snapshot(&bad) {
                Err(e) => assert!(is_typed(&e), "file {i}, {label}: untyped error {e:?}"),
                Ok(s) => panic!("file {i}, {label}: damage accepted as {s:?}"),
            }
            n += 1;
        }
    }
    assert!(n > 1000, "only {n} damaged inputs");
}

#[test]
fn snapshot_reader_corpus() {
    let (files, _) = corpus();
    let mut n = 0;
    for (i, good) in files.iter().enumerate() {
        assert_eq!(u32::from_le_bytes(good[4..8].try_into().unwrap()), 2);
        let s = decode_snapshot(good).unwrap();
        assert_eq!(s.metadata, vec!["config".to_string()]);
        assert_eq!(s.page_count, 24);
        for (label, bad) in damaged_copies(good, 200, i as u64) {
            match decode_snapshot(&bad) {
                Err(e) => assert!(is_typed(&e), "file {i}, {label}: untyped error {e:?}"),
                Ok(s) => panic!("file {i}, {label}: damage accepted as {s:?}"),
            }
            n += 1;
        }
    }
    assert!(n > 1000, "only {n} damaged inputs");
}

#[test]
fn manifest_reader_corpus() {
    let (_, good) = corpus();
    let list = decode_manifest(&good).unwrap();
    assert_eq!(list.iter().map(|s| s.id).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(list[1].parent, Some(1));
    for (label, bad) in damaged_copies(&good, 300, 9) {
        match decode_manifest(&bad) {
            Err(e) => assert!(is_typed(&e), "{label}: untyped error {e:?}"),
            Ok(l) => panic!("{label}: damage accepted as {l:?}"),
        }
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    use rand::{Rng, SeedableRng};
    let seed = 0x5EED_u64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (files, manifest) = corpus();
    let old = format_1_files();
    for i in 0..2000 {
        let len = rng.random_range(0..600);
        let mut b = vec![0u8; len];
        rng.fill(&mut b[..]);
        // Splice a real header or frame in front half of the time, so the
        // decoders get past their first check.
        if i % 2 == 0 {
            let src = match i % 6 {
                0 => &files[0],
                2 => &old[0],
                _ => &manifest,
            };
            let k = len.min(src.len()).min(64);
            b[..k].copy_from_slice(&src[..k]);
        }
        assert!(decode_snapshot(&b).is_err(), "seed {seed:#x}, input {i}");
        assert!(decode_manifest(&b).is_err(), "seed {seed:#x}, input {i}");
    }
}

/// A manifest whose CRC holds but whose page size no configuration can have
/// is damage; one of another valid page size decodes (opening the directory
/// with another page size is then refused as a mismatch, which
/// `tests/snapshot.rs` covers).
#[test]
fn a_manifest_page_size_out_of_range_is_damage() {
    let (_, good) = corpus();
    // The page size is the first field after the 24-byte frame header.
    let with_page_size = |ps: u32| {
        let mut b = good.clone();
        b[24..28].copy_from_slice(&ps.to_le_bytes());
        selfheal::testing::fixup::framed(&b, *b"SHSM", 2)
    };
    for ps in [0u32, 1, 63, (1 << 20) + 1, u32::MAX] {
        match decode_manifest(&with_page_size(ps)) {
            Err(Error::CorruptFile { reason, .. }) => {
                assert!(reason.contains("page size"), "{ps}: {reason}");
            }
            other => panic!("page size {ps}: {other:?}"),
        }
    }
    for ps in [64u32, 2176, 1 << 20] {
        assert_eq!(decode_manifest(&with_page_size(ps)).unwrap().len(), 2);
    }
}
