//! The restore policy, under both checksum placements: `restore(id)` restores exactly `id` or fails with an error naming the damaged member of its chain (store untouched), and only `Fallback::NewestOlderGood` restores an older snapshot — reporting which one, what was refused and why, and exactly the pages the fallback lost (checked against a byte model), also across a change of the store's size.

use std::path::Path;

use selfheal::snapshot::{
    Fallback, LostPages, RestoreOptions, Retention, SnapshotConfig, SnapshotKind,
    StateSnapshotManager,
};
use selfheal::testing::{both_placements, SealedStore};
use selfheal::{Error, Lsn, MemStore, PageId, PageStore};

const PS: usize = 256;

fn manager(dir: &Path) -> StateSnapshotManager {
    SnapshotConfig::new(dir, PS)
        .chunk_bytes(PS * 4)
        .retention(Retention::KeepAll)
        .build()
        .unwrap()
}

fn paused(m: &StateSnapshotManager, s: &SealedStore, lsn: u64, kind: SnapshotKind) -> u64 {
    selfheal::testing::take_paused(m, s.detector(), Lsn(lsn), kind)
        .unwrap()
        .info
        .id
}

fn write(m: &StateSnapshotManager, s: &SealedStore, page: u64, version: u64) {
    s.write(page, version).unwrap();
    m.note_dirty(PageId(page));
}

/// Flips a bit inside the first chunk of snapshot `id`'s file.
fn damage_first_chunk(dir: &Path, id: u64) {
    let path = dir.join(selfheal::snapshot::snapshot_file_name(id));
    let mut b = std::fs::read(&path).unwrap();
    b[66] ^= 0x40;
    std::fs::write(&path, b).unwrap();
}

/// The pages whose bytes differ between two store images, plus the pages
/// that exist in only one of them.
fn differing_pages(a: &[u8], b: &[u8]) -> Vec<u64> {
    let (na, nb) = (a.len() / PS, b.len() / PS);
    let mut v: Vec<u64> = (0..na.min(nb))
        .filter(|&p| a[p * PS..(p + 1) * PS] != b[p * PS..(p + 1) * PS])
        .map(|p| p as u64)
        .collect();
    v.extend(na.min(nb) as u64..na.max(nb) as u64);
    v
}

#[test]
fn restore_is_exact_and_names_the_damaged_member() {
    for (name, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let s = SealedStore::new(placement, PS, 24, 1).unwrap();
        let m = manager(dir.path());
        let a = paused(&m, &s, 1, SnapshotKind::Full);
        let at_a = s.bytes();
        write(&m, &s, 3, 2);
        let b = paused(&m, &s, 2, SnapshotKind::Incremental);
        write(&m, &s, 20, 3);
        let c = paused(&m, &s, 3, SnapshotKind::Incremental);
        damage_first_chunk(dir.path(), b);

        let target = MemStore::new(PS, 24).unwrap();
        target.write_page(PageId(0), &[0xAB; PS]).unwrap();
        let untouched = target.to_bytes();
        for (id, restore_latest) in [(c, false), (b, false), (c, true)] {
            let r = if restore_latest {
                m.restore_latest(&target)
            } else {
                m.restore(id, &target)
            };
            match r {
                Err(e @ Error::SnapshotDamaged { .. }) => {
                    let Error::SnapshotDamaged {
                        requested,
                        damaged,
                        ref path,
                        ref reason,
                        target_written,
                    } = e
                    else {
                        unreachable!()
                    };
                    assert_eq!((requested, damaged), (id, b), "{name}");
                    assert!(path.ends_with(selfheal::snapshot::snapshot_file_name(b)));
                    assert!(reason.contains("chunk 0"), "{name}: {reason}");
                    assert!(!target_written);
                    let msg = e.to_string();
                    assert!(msg.contains("Fallback::NewestOlderGood"), "{msg}");
                }
                other => panic!("{name}: restore of {id} gave {other:?}"),
            }
            assert!(
                target.to_bytes() == untouched,
                "{name}: the target was written"
            );
        }
        // The good one restores exactly.
        let r = m.restore(a, &target).unwrap();
        assert_eq!((r.requested, r.restored, r.fallback), (a, a, None));
        assert!(target.to_bytes() == at_a, "{name}");
    }
}

#[test]
fn a_fallback_reports_what_it_restored_and_the_pages_it_lost() {
    for (name, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let s = SealedStore::new(placement, PS, 40, 1).unwrap();
        let m = manager(dir.path());
        let a = paused(&m, &s, 1, SnapshotKind::Full);
        let at_a = s.bytes();
        for p in [1, 7, 22] {
            write(&m, &s, p, 2);
        }
        let b = paused(&m, &s, 2, SnapshotKind::Incremental);
        // The store shrinks before the next one: pages 30..40 go.
        s.resize(30, 3).unwrap();
        m.note_resized(30);
        write(&m, &s, 7, 3);
        write(&m, &s, 9, 3);
        let c = paused(&m, &s, 3, SnapshotKind::Incremental);
        let at_c = s.bytes();
        damage_first_chunk(dir.path(), b);

        let fallback = RestoreOptions::new().fallback(Fallback::NewestOlderGood);
        let target = MemStore::new(PS, 30).unwrap();
        let r = m.restore_with(c, &target, fallback).unwrap();
        assert_eq!((r.requested, r.restored, r.lsn), (c, a, Lsn(1)), "{name}");
        assert_eq!(
            r.page_count, 40,
            "{name}: the target grew to the fallback's size"
        );
        assert!(target.to_bytes() == at_a, "{name}");
        let fb = r.fallback.expect("reported");
        let skipped: Vec<u64> = fb.skipped.iter().map(|s| s.0).collect();
        assert_eq!(skipped, vec![c, b], "{name}");
        assert!(
            fb.skipped[0].1.contains(&format!("snapshot {b}")),
            "{:?}",
            fb.skipped
        );
        let lost = differing_pages(&at_c, &at_a);
        assert_eq!(
            lost,
            vec![1, 7, 9, 22, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39]
        );
        assert_eq!(fb.lost, LostPages::Known(lost), "{name}");
        assert_eq!(m.head(), Some(a), "{name}");

        // A snapshot that verifies is restored exactly, even under the policy.
        let r = m.restore_with(a, &target, fallback).unwrap();
        assert_eq!(r.fallback, None, "{name}");
    }
}
