//! Rows for the snapshot files and the manifest: a full snapshot of sealed
//! pages (header 0..64 with its CRC32 at 60; lz4 chunks from 64; the
//! index, whose chunk table gives each chunk's offset, lengths and CRC32;
//! a 32-byte footer with the index CRC32 at 16) and an incremental one on
//! it, then a restore of the incremental one into a fresh sealed store.

use std::path::{Path, PathBuf};

use selfheal::snapshot::{
    snapshot_file_name, Consistency, SnapshotConfig, SnapshotKind, SnapshotRequest, WriteGate,
};
use selfheal::{Lsn, PageId};

use crate::harness::{read, Built, Outcome, Spots};
use crate::pages::{content, detector, read_all, write_all, Placement, PS};

/// Four pages per chunk: a full snapshot of 16 pages has four chunks.
const CHUNK_BYTES: usize = 4 * PS;

struct Snaps {
    sdir: PathBuf,
    full: PathBuf,
    reopen: Box<dyn FnOnce() -> Outcome + Send>,
}

/// Model: restoring the incremental snapshot gives the source's pages.
fn snapshots(dir: &Path, placement: Placement) -> Snaps {
    let sdir = dir.join("snaps");
    let det = detector(placement);
    write_all(&det, 1);
    let cfg = || SnapshotConfig::new(&sdir, PS).chunk_bytes(CHUNK_BYTES);
    let m = cfg().build().unwrap();
    let gate = WriteGate::new();
    let take = |kind, lsn| {
        let pause = gate.pause();
        m.take_snapshot(
            Consistency::Paused {
                store: &*det,
                pause: &pause,
                lsn: Lsn(lsn),
            },
            SnapshotRequest::new(kind),
        )
        .unwrap()
        .info
        .id
    };
    let full = take(SnapshotKind::Full, 1);
    for p in 0..6 {
        det.write_sealed(PageId(p), &mut content(p, 2)).unwrap();
        m.note_dirty(PageId(p));
    }
    let incr = take(SnapshotKind::Incremental, 2);
    drop(m);
    let model = read_all(&det);
    let full_path = sdir.join(snapshot_file_name(full));
    let sd = sdir.clone();
    let reopen = Box::new(move || {
        let m = match SnapshotConfig::new(&sd, PS)
            .chunk_bytes(CHUNK_BYTES)
            .build()
        {
            Err(e) => return Outcome::Refused(e),
            Ok(m) => m,
        };
        let rebuilt = m.manifest_rebuilt().is_some();
        let target = detector(placement);
        if let Err(e) = m.restore(incr, &*target) {
            return Outcome::Refused(e);
        }
        match (read_all(&target) == model, rebuilt) {
            (true, false) => Outcome::Recovered,
            (true, true) => Outcome::Fallback("manifest rebuilt from the snapshot files"),
            (false, r) => Outcome::Wrong(format!("restored pages differ (manifest rebuilt: {r})")),
        }
    });
    Snaps {
        sdir,
        full: full_path,
        reopen,
    }
}

/// The layout of a snapshot file: chunks (offset, compressed length),
/// index offset and length.
struct Layout {
    chunks: Vec<(u64, u64)>,
    index: u64,
    index_len: u64,
    len: u64,
}

fn layout(path: &Path) -> Layout {
    let b = read(path);
    let len = b.len() as u64;
    let f = &b[b.len() - 32..];
    let index = u64::from_le_bytes(f[0..8].try_into().unwrap());
    let index_len = u64::from_le_bytes(f[8..16].try_into().unwrap());
    let i = &b[index as usize..];
    let c = u32::from_le_bytes(i[0..4].try_into().unwrap()) as usize;
    let chunks = (0..c)
        .map(|k| {
            let e = &i[24 + 20 * k..];
            (
                u64::from_le_bytes(e[0..8].try_into().unwrap()),
                u32::from_le_bytes(e[8..12].try_into().unwrap()) as u64,
            )
        })
        .collect();
    Layout {
        chunks,
        index,
        index_len,
        len,
    }
}

/// The full snapshot's header (page count at 48, CRC32 at 60).
pub fn file_header(dir: &Path, placement: Placement) -> Built {
    let s = snapshots(dir, placement);
    let l = layout(&s.full);
    let (c0, c0_len) = l.chunks[0];
    Built {
        spots: Spots {
            header_cut: 32,
            record_cut: c0 + c0_len / 2,
            header: 48,
            body: c0 + c0_len / 2,
            checksum: 60,
            sector: 0,
        },
        file: s.full,
        reopen: s.reopen,
    }
}

/// The full snapshot's second chunk: its first byte (the lz4 token), its
/// middle, and its CRC32 in the index's chunk table.
pub fn chunk(dir: &Path, placement: Placement) -> Built {
    let s = snapshots(dir, placement);
    let l = layout(&s.full);
    assert_eq!(l.chunks.len(), 4);
    let (at, len) = l.chunks[1];
    Built {
        spots: Spots {
            header_cut: at + 1,
            record_cut: at + len / 2,
            header: at,
            body: at + len / 2,
            checksum: l.index + 24 + 20 + 16,
            sector: at + len / 2,
        },
        file: s.full,
        reopen: s.reopen,
    }
}

/// The full snapshot's index: its counts, its page fingerprints, and the
/// index CRC32 in the footer.
pub fn page_table(dir: &Path, placement: Placement) -> Built {
    let s = snapshots(dir, placement);
    let l = layout(&s.full);
    let sums = l.index + 24 + 20 * l.chunks.len() as u64;
    Built {
        spots: Spots {
            header_cut: l.index + 10,
            record_cut: l.index + l.index_len / 2,
            header: l.index + 4,
            body: sums + 8 * 3 + 2,
            checksum: l.len - 32 + 16,
            sector: sums + 8 * 3,
        },
        file: s.full,
        reopen: s.reopen,
    }
}

/// The manifest (the crate's framed file; the first entry's parent id at
/// payload byte 24).
pub fn manifest(dir: &Path, placement: Placement) -> Built {
    let s = snapshots(dir, placement);
    let file = s.sdir.join("MANIFEST");
    let len = std::fs::metadata(&file).unwrap().len();
    Built {
        spots: Spots {
            header_cut: 12,
            record_cut: 24 + (len - 24) / 2,
            header: 8,
            body: 24 + 16 + 8,
            checksum: 16,
            sector: 0,
        },
        file,
        reopen: s.reopen,
    }
}
