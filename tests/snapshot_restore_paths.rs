//! Every restore path must restore the same bytes at every chunk-boundary case — one page, a short chunk, whole chunks, a page past them; incrementals rewriting the pages at chunk edges — with the precheck (every chunk CRC of the chain checked in a first pass) and without it (one pass), on 1 to 8 threads (more threads than chunks too), into a `MemStore` and into a `FileStore` (whose batched writes gather runs of pages); a damaged chunk must be refused with `Error::SnapshotDamaged` before anything is written; and restores into sealing stores of both checksum placements must leave every page verifying. Method: byte models of the store at each snapshot, compared with what each restore leaves in a fresh target of another size and other bytes.

use std::path::Path;
use std::sync::Arc;

use selfheal::snapshot::{Retention, SnapshotConfig, SnapshotKind, StateSnapshotManager};
use selfheal::testing::{both_placements, semi_compressible_page, SealedStore};
use selfheal::{CorruptionConfig, Error, FileStore, Lsn, MemStore, PageId, PageStore};

const PS: usize = 256;
/// Pages per chunk.
const CP: u64 = 4;

/// A manager of chunks of [`CP`] pages, `precheck` as given.
fn manager(dir: &Path, precheck: bool, threads: usize) -> StateSnapshotManager {
    SnapshotConfig::new(dir, PS)
        .chunk_bytes(PS * CP as usize)
        .retention(Retention::KeepAll)
        .threads(threads)
        .precheck_restore(precheck)
        .build()
        .unwrap()
}

fn take(m: &StateSnapshotManager, store: &dyn PageStore, lsn: u64, kind: SnapshotKind) -> u64 {
    selfheal::testing::take_paused(m, store, Lsn(lsn), kind)
        .unwrap()
        .info
        .id
}

fn rewrite(store: &MemStore, m: &StateSnapshotManager, page: u64, version: u64) {
    let mut buf = vec![0u8; PS];
    semi_compressible_page(version, PageId(page), &mut buf);
    store.write_page(PageId(page), &buf).unwrap();
    m.note_dirty(PageId(page));
}

/// A full snapshot of `pages` pages, then two incrementals rewriting the
/// first and last page of every chunk and then every third page; returns
/// each snapshot's id with the store's bytes at that point.
fn chain(dir: &Path, pages: u64) -> Vec<(u64, Vec<u8>)> {
    let m = manager(dir, true, 2);
    let store = MemStore::new(PS, pages).unwrap();
    for p in 0..pages {
        rewrite(&store, &m, p, 1);
    }
    let mut states = vec![(take(&m, &store, 1, SnapshotKind::Full), store.to_bytes())];
    for p in (0..pages).filter(|p| p % CP == 0 || p % CP == CP - 1 || p + 1 == pages) {
        rewrite(&store, &m, p, 2);
    }
    states.push((
        take(&m, &store, 2, SnapshotKind::Incremental),
        store.to_bytes(),
    ));
    for p in (0..pages).step_by(3) {
        rewrite(&store, &m, p, 3);
    }
    states.push((
        take(&m, &store, 3, SnapshotKind::Incremental),
        store.to_bytes(),
    ));
    states
}

/// The chunk bytes of snapshot `id`'s file: its length less the header,
/// the index and the footer, found from the footer's index offset.
fn chunk_bytes(dir: &Path, id: u64) -> u64 {
    let b = std::fs::read(dir.join(format!("snap-{id:016x}.shs"))).unwrap();
    let foot = &b[b.len() - 32..];
    u64::from_le_bytes(foot[0..8].try_into().unwrap()) - 64
}

#[test]
fn every_chunk_boundary_restores_the_same_bytes_on_every_path() {
    for pages in [1, CP - 1, CP, CP + 1, 2 * CP, 2 * CP + 1, 3 * CP + 2] {
        let dir = tempfile::tempdir().unwrap();
        let states = chain(dir.path(), pages);
        for (path, precheck) in [("prechecked", true), ("one pass", false)] {
            for threads in [1, 3, 8] {
                let m = manager(dir.path(), precheck, threads);
                for (id, bytes) in &states {
                    // Targets of another size and with other bytes: every
                    // page must come from the snapshot.
                    let mem = MemStore::new(PS, pages + 2).unwrap();
                    mem.write_page(PageId(0), &[0xEE; PS]).unwrap();
                    let file = FileStore::create(dir.path().join("target"), PS, pages + 2).unwrap();
                    file.write_page(PageId(pages), &[0xEE; PS]).unwrap();
                    let targets: [(&str, &dyn PageStore); 2] = [("mem", &mem), ("file", &file)];
                    for (kind, target) in targets {
                        let r = m.restore(*id, target).unwrap();
                        assert_eq!(r.restored, *id);
                        assert_eq!(target.page_count(), pages);
                        let mut got = vec![0u8; PS * pages as usize];
                        target.read_pages(PageId(0), &mut got).unwrap();
                        assert!(
                            got == *bytes,
                            "{pages} pages, {path}, {threads} threads, {kind}: snapshot {id} differs"
                        );
                    }
                }
            }
        }
    }
}

fn damage(dir: &Path, id: u64, at: u64) {
    let p = dir.join(format!("snap-{id:016x}.shs"));
    let mut b = std::fs::read(&p).unwrap();
    b[at as usize] ^= 0x40;
    std::fs::write(&p, b).unwrap();
}

#[test]
fn a_damaged_chunk_is_refused_before_anything_is_written() {
    let pages = 3 * CP + 1;
    // Damage in the first, a middle and the last chunk of the base, and
    // in the newest incremental.
    for (member, frac) in [(0usize, 0u64), (0, 2), (0, 4), (2, 4)] {
        let dir = tempfile::tempdir().unwrap();
        let states = chain(dir.path(), pages);
        let id = states[member].0;
        let len = chunk_bytes(dir.path(), id);
        damage(dir.path(), id, 64 + (len - 1) * frac / 4);
        for threads in [1, 3] {
            let m = manager(dir.path(), true, threads);
            let target = MemStore::new(PS, pages).unwrap();
            target.write_page(PageId(1), &[7; PS]).unwrap();
            let before = target.to_bytes();
            let newest = states.last().unwrap().0;
            match m.restore(newest, &target) {
                Err(Error::SnapshotDamaged {
                    damaged,
                    target_written,
                    reason,
                    ..
                }) => {
                    assert_eq!(damaged, id, "{reason}");
                    assert!(!target_written);
                    assert!(reason.contains("checksum mismatch"), "{reason}");
                }
                other => panic!("{threads} threads: expected SnapshotDamaged, got {other:?}"),
            }
            assert!(target.to_bytes() == before, "the target was written");
        }
    }
}

#[test]
fn restores_into_sealing_stores_of_both_placements_verify() {
    let pages = 2 * CP + 3;
    for (name, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let s = SealedStore::new(placement.clone(), PS, pages, 1).unwrap();
        let m = manager(dir.path(), true, 2);
        let full = take(&m, s.detector(), 1, SnapshotKind::Full);
        for p in [0, CP - 1, CP, pages - 1] {
            s.write(p, 2).unwrap();
            m.note_dirty(PageId(p));
        }
        let incr = take(&m, s.detector(), 2, SnapshotKind::Incremental);
        let want = s.bytes();
        drop(m);
        for precheck in [true, false] {
            let m = manager(dir.path(), precheck, 2);
            let out = Arc::new(FileStore::create(dir.path().join("out"), PS, 1).unwrap());
            let det = CorruptionConfig::new(placement.clone())
                .build(out.clone())
                .unwrap();
            m.restore(incr, &det).unwrap();
            let mut got = vec![0u8; PS * pages as usize];
            out.read_pages(PageId(0), &mut got).unwrap();
            assert!(got == want, "{name}, precheck {precheck}");
            let mut buf = vec![0u8; PS];
            for p in 0..pages {
                det.read_verified(PageId(p), &mut buf)
                    .unwrap_or_else(|e| panic!("{name}, precheck {precheck}: page {p}: {e}"));
            }
            m.restore(full, &det).unwrap();
            for p in 0..pages {
                det.read_verified(PageId(p), &mut buf).unwrap();
            }
        }
    }
}
