//! Round trips and refusals of the snapshot file format: encoder against
//! decoder, format 1 still read, and damage refused before it is trusted.

use std::fs::File;
use std::path::Path;

use proptest::prelude::*;

use super::header::Header;
use super::index::{decode_index, CHUNK_ENTRY_LEN, INDEX_FIXED_LEN};
use super::*;
use crate::checksum::page_crc;
use crate::error::Error;
use crate::snapshot::fingerprint::page_fingerprint;
use crate::snapshot::writer::SnapshotWriter;
use crate::testing::{decode_manifest, decode_snapshot};
use crate::types::Lsn;

fn header(parent: Option<u64>, page_count: u64) -> Header {
    Header {
        version: VERSION,
        id: 5,
        parent,
        lsn: Lsn(77),
        created_unix_ms: 1,
        page_size: 64,
        chunk_pages: 3,
        page_count,
        pages_verified: false,
    }
}

fn write(h: Header, pages: &[(u64, Vec<u8>)], parent_fps: Vec<u64>, threads: usize) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let f = File::create(&p).unwrap();
    let mut w = SnapshotWriter::new(f, p.clone(), h, threads, parent_fps).unwrap();
    for (id, b) in pages {
        w.push(*id, b).unwrap();
    }
    w.finish(&[("cfg".into(), b"x=1".to_vec())]).unwrap();
    std::fs::read(&p).unwrap()
}

/// The same snapshot in format 1: header version 1 and a 4-byte
/// [`page_crc`] per page instead of the fingerprints (`pages` are the
/// full state's bytes), every checksum recomputed.
fn to_format_1(v2: &[u8], state: &[Vec<u8>]) -> Vec<u8> {
    let r = SnapshotReader::new(Box::new(v2.to_vec()), Path::new("v2")).unwrap();
    let mut out = v2[..HEADER_LEN].to_vec();
    out[4..8].copy_from_slice(&VERSION_CRC32.to_le_bytes());
    let crc = crc32fast::hash(&out[..60]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
    let index_off = r.index.chunks.last().map_or(HEADER_LEN as u64, |c| {
        c.offset + u64::from(c.compressed_len)
    });
    out.extend_from_slice(&v2[HEADER_LEN..index_off as usize]);
    let fps_len = state.len() * 8;
    let v2_index = &v2[index_off as usize..v2.len() - FOOTER_LEN];
    let stored_ids = r.index.pages.as_ref().map_or(0, |p| p.len() * 8);
    let before = INDEX_FIXED_LEN + r.index.chunks.len() * CHUNK_ENTRY_LEN + stored_ids;
    let mut ix = v2_index[..before].to_vec();
    for (p, b) in state.iter().enumerate() {
        ix.extend_from_slice(&page_crc(crate::types::PageId(p as u64), b).to_le_bytes());
    }
    ix.extend_from_slice(&v2_index[before + fps_len..]);
    out.extend_from_slice(&ix);
    out.extend_from_slice(&encode_footer(index_off, &ix));
    out
}

#[test]
fn format_1_files_are_read_and_checked_with_their_crcs() {
    let state: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i + 1; 64]).collect();
    let pages: Vec<_> = state
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, b)| (i as u64, b))
        .collect();
    let v2 = write(header(None, 7), &pages, Vec::new(), 1);
    let v1 = to_format_1(&v2, &state);
    let s = decode_snapshot(&v1).unwrap();
    assert_eq!(s.stored_pages, 7);
    let r = SnapshotReader::new(Box::new(v1.clone()), Path::new("v1")).unwrap();
    assert_eq!(r.header.version, VERSION_CRC32);
    assert!(r.index.sums.fingerprints().is_none());
    let (mut comp, mut raw) = (Vec::new(), Vec::new());
    r.read_chunk(1, &mut comp, &mut raw).unwrap();
    assert_eq!(&raw[..64], &state[3][..]);
    // A wrong CRC for one page is found when its chunk is read.
    let mut bad_state = state.clone();
    bad_state[4][0] ^= 1;
    let bad = to_format_1(&v2, &bad_state);
    assert!(matches!(
        decode_snapshot(&bad),
        Err(Error::CorruptFile { .. })
    ));
    // Damage anywhere is still found.
    for i in 0..v1.len() {
        let mut d = v1.clone();
        d[i] ^= 0x08;
        assert!(decode_snapshot(&d).is_err(), "flip at {i}");
    }
}

proptest! {
    /// Pages pushed with their fingerprint already computed (the
    /// incremental path that compared them) give the same file as pages
    /// hashed by the compressor, whatever the mix within a chunk.
    #[test]
    fn pages_pushed_with_their_fingerprint_give_the_same_file(
        stored in proptest::collection::btree_set(0u64..24, 1..24),
        given in proptest::collection::vec(any::<bool>(), 24),
        threads in 1usize..3,
    ) {
        let parent_fps = vec![7u64; 4];
        let mut pages: Vec<(u64, Vec<u8>)> = stored
            .iter()
            .map(|&p| (p, (0..64).map(|i| (p as u8).wrapping_mul(31) ^ i).collect()))
            .collect();
        // Every page past the parent's count must be stored.
        for p in 4..24 {
            if !stored.contains(&p) {
                pages.push((p, vec![p as u8; 64]));
            }
        }
        pages.sort_by_key(|(p, _)| *p);
        let h = header(Some(1), 24);
        let plain = write(h.clone(), &pages, parent_fps.clone(), threads);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let f = File::create(&path).unwrap();
        let mut w = SnapshotWriter::new(f, path.clone(), h, threads, parent_fps).unwrap();
        for (id, b) in &pages {
            if given[*id as usize] {
                w.push_fingerprinted(*id, b, page_fingerprint(*id, b)).unwrap();
            } else {
                w.push(*id, b).unwrap();
            }
        }
        w.finish(&[("cfg".into(), b"x=1".to_vec())]).unwrap();
        prop_assert!(std::fs::read(&path).unwrap() == plain);
    }
}

#[test]
fn a_chunk_claiming_more_than_lz4_can_expand_is_refused_before_it_is_read() {
    // Zeros compress at close to lz4's largest ratio, and decode.
    let pages: Vec<_> = (0..64u64).map(|i| (i, vec![0u8; 64])).collect();
    let mut h = header(None, 64);
    h.chunk_pages = 64;
    let bytes = write(h, &pages, Vec::new(), 1);
    decode_snapshot(&bytes).unwrap();
    let r = SnapshotReader::new(Box::new(bytes.clone()), Path::new("z")).unwrap();
    let e = r.index.chunks[0];
    assert!(u64::from(e.raw_len) <= u64::from(e.compressed_len) * LZ4_MAX_RATIO);
    assert!(
        u64::from(e.raw_len) > u64::from(e.compressed_len) * 50,
        "{e:?}"
    );
    // The same chunk entry with one compressed byte: refused at open.
    let h = Header::decode(Path::new("z"), &bytes).unwrap();
    let mut c = Vec::new();
    c.extend_from_slice(&1u32.to_le_bytes());
    c.extend_from_slice(&64u64.to_le_bytes());
    c.extend_from_slice(&64u64.to_le_bytes());
    c.extend_from_slice(&0u32.to_le_bytes());
    c.extend_from_slice(&(HEADER_LEN as u64).to_le_bytes());
    c.extend_from_slice(&1u32.to_le_bytes());
    c.extend_from_slice(&(64u32 * 64).to_le_bytes());
    c.extend_from_slice(&0u32.to_le_bytes());
    c.resize(c.len() + 64 * 8, 0);
    let err = decode_index(Path::new("z"), &c, HEADER_LEN as u64 + 1, &h).unwrap_err();
    assert!(err.to_string().contains("lz4 expands at most"), "{err}");
}

#[test]
fn an_incremental_must_hold_every_page_past_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    // The parent had 4 pages, the store now 6: pages 4 and 5 are new.
    let mut w = SnapshotWriter::new(
        File::create(&p).unwrap(),
        p.clone(),
        header(Some(1), 6),
        1,
        vec![9; 4],
    )
    .unwrap();
    w.push(1, &[1; 64]).unwrap();
    w.push(5, &[5; 64]).unwrap();
    assert!(matches!(w.finish(&[]), Err(Error::InvalidArgument { .. })));
    let mut w = SnapshotWriter::new(
        File::create(&p).unwrap(),
        p.clone(),
        header(Some(1), 6),
        1,
        vec![9; 4],
    )
    .unwrap();
    for page in [1, 4, 5] {
        w.push(page, &[page as u8; 64]).unwrap();
    }
    w.finish(&[]).unwrap();
    let r = SnapshotReader::open_file(&p).unwrap();
    assert_eq!(r.index.stored_from(6, 4), 2);
    let fps = r.index.sums.fingerprints().unwrap();
    assert_eq!(fps[0], 9);
    assert_eq!(fps[4], page_fingerprint(4, &[4; 64]));
}

#[test]
fn header_round_trip_and_checks() {
    let h = header(Some(2), 9);
    let b = h.encode();
    assert_eq!(Header::decode(Path::new("h"), &b).unwrap(), h);
    let mut v = b;
    v[4] = 9;
    assert!(Header::decode(Path::new("h"), &v).is_err());
    // The flag round-trips; an unknown flag is refused.
    let verified = Header {
        pages_verified: true,
        ..header(None, 3)
    };
    let b = verified.encode();
    assert_eq!(Header::decode(Path::new("h"), &b).unwrap(), verified);
    assert_eq!(b[56..60], 1u32.to_le_bytes());
    let mut v = b;
    v[56] = 3;
    let crc = crc32fast::hash(&v[..60]);
    v[60..64].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        Header::decode(Path::new("h"), &v),
        Err(Error::CorruptFile { offset: 56, .. })
    ));
}

/// A header written before the flag existed (the field reserved and 0)
/// reads as not verified.
#[test]
fn a_header_without_flags_reads_as_not_verified() {
    let b = header(None, 3).encode();
    assert_eq!(b[56..60], [0; 4]);
    assert!(!Header::decode(Path::new("h"), &b).unwrap().pages_verified);
    let v1 = to_format_1(
        &write(header(None, 1), &[(0, vec![1u8; 64])], Vec::new(), 1),
        &[vec![1u8; 64]],
    );
    let r = SnapshotReader::new(Box::new(v1), Path::new("v1")).unwrap();
    assert!(!r.header.pages_verified);
}

proptest! {
    #[test]
    fn full_file_round_trips(n in 0u64..20, seed in any::<u8>(), threads in 1usize..4) {
        let pages: Vec<_> = (0..n).map(|i| (i, vec![seed.wrapping_add(i as u8); 64])).collect();
        let bytes = write(header(None, n), &pages, Vec::new(), threads);
        let s = decode_snapshot(&bytes).unwrap();
        prop_assert_eq!(s.stored_pages, n);
        prop_assert_eq!(s.metadata, vec!["cfg".to_string()]);
        let r = SnapshotReader::new(Box::new(bytes), Path::new("m")).unwrap();
        let (mut comp, mut raw) = (Vec::new(), Vec::new());
        for (id, b) in &pages {
            let (c, slot) = r.locate(*id).unwrap();
            r.read_chunk(c, &mut comp, &mut raw).unwrap();
            prop_assert_eq!(&raw[slot * 64..(slot + 1) * 64], &b[..]);
        }
    }

    #[test]
    fn incremental_file_round_trips(ids in proptest::collection::btree_set(0u64..30, 0..12)) {
        let pages: Vec<_> = ids.iter().map(|&i| (i, vec![i as u8 ^ 0x5A; 64])).collect();
        let bytes = write(header(Some(1), 30), &pages, vec![7; 30], 2);
        let r = SnapshotReader::new(Box::new(bytes), Path::new("m")).unwrap();
        r.verify_all().unwrap();
        prop_assert_eq!(r.index.stored_pages(30), ids.len() as u64);
        for p in 0..30u64 {
            prop_assert_eq!(r.locate(p).is_some(), ids.contains(&p));
            if !ids.contains(&p) {
                prop_assert_eq!(r.index.sums.fingerprints().unwrap()[p as usize], 7);
            }
        }
    }

    #[test]
    fn any_damage_is_detected(n in 1u64..12, at in any::<usize>(), bit in 0u8..8, cut in any::<usize>()) {
        let pages: Vec<_> = (0..n).map(|i| (i, vec![i as u8 + 1; 64])).collect();
        let bytes = write(header(None, n), &pages, Vec::new(), 1);
        let mut flipped = bytes.clone();
        let i = at % flipped.len();
        flipped[i] ^= 1 << bit;
        prop_assert!(decode_snapshot(&flipped).is_err());
        let mut short = bytes.clone();
        short.truncate(cut % bytes.len());
        prop_assert!(decode_snapshot(&short).is_err());
        prop_assert!(decode_snapshot(&vec![0u8; bytes.len()]).is_err());
    }

    #[test]
    fn format_1_round_trips_and_damage_is_detected(n in 1u64..16, seed in any::<u8>(), at in any::<usize>(), bit in 0u8..8) {
        let state: Vec<Vec<u8>> = (0..n).map(|i| vec![seed.wrapping_add(i as u8) | 1; 64]).collect();
        let pages: Vec<_> = state.iter().cloned().enumerate().map(|(i, b)| (i as u64, b)).collect();
        let v1 = to_format_1(&write(header(None, n), &pages, Vec::new(), 2), &state);
        let r = SnapshotReader::new(Box::new(v1.clone()), Path::new("v1")).unwrap();
        r.verify_all().unwrap();
        let (mut comp, mut raw) = (Vec::new(), Vec::new());
        for (id, b) in &pages {
            let (c, slot) = r.locate(*id).unwrap();
            r.read_chunk(c, &mut comp, &mut raw).unwrap();
            prop_assert_eq!(&raw[slot * 64..(slot + 1) * 64], &b[..]);
        }
        let mut flipped = v1.clone();
        let i = at % flipped.len();
        flipped[i] ^= 1 << bit;
        prop_assert!(decode_snapshot(&flipped).is_err());
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_snapshot(&bytes);
        let _ = decode_manifest(&bytes);
    }
}

/// The file the format docs describe for `pages` (stored in ascending
/// order), built without the writer: header, one lz4 block per run of
/// `chunk_pages` pages compressed on this thread, index, footer.
fn reference_file(h: &Header, pages: &[(u64, Vec<u8>)], parent_fps: &[u64]) -> Vec<u8> {
    let mut out = h.encode().to_vec();
    let mut chunks = Vec::new();
    let mut fps = if h.parent.is_some() {
        parent_fps.to_vec()
    } else {
        Vec::new()
    };
    fps.resize(h.page_count as usize, 0);
    for run in pages.chunks(h.chunk_pages) {
        let raw: Vec<u8> = run.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        let block = lz4_flex::block::compress(&raw);
        chunks.push(ChunkEntry {
            offset: out.len() as u64,
            compressed_len: block.len() as u32,
            raw_len: raw.len() as u32,
            crc: crc32fast::hash(&block),
        });
        out.extend_from_slice(&block);
        for (p, b) in run {
            fps[*p as usize] = page_fingerprint(*p, b);
        }
    }
    let ids: Vec<u64> = pages.iter().map(|(p, _)| *p).collect();
    let stored = h.parent.is_some().then_some(&ids[..]);
    let meta = [("cfg".to_string(), b"x=1".to_vec())];
    let index = encode_index(&chunks, stored, ids.len() as u64, &fps, &meta);
    let footer = encode_footer(out.len() as u64, &index);
    out.extend_from_slice(&index);
    out.extend_from_slice(&footer);
    out
}

/// A full snapshot of `pages` (every page `0..n`, in order) written with
/// [`SnapshotWriter::push_run`] in runs of `run` pages.
fn write_runs(h: Header, pages: &[(u64, Vec<u8>)], threads: usize, run: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let f = File::create(&p).unwrap();
    let mut w = SnapshotWriter::new(f, p.clone(), h, threads, Vec::new()).unwrap();
    let n = pages.len() as u64;
    let mut start = 0;
    while start < n {
        let k = run.min(n - start);
        w.push_run(start, k, &mut |first, buf| {
            for (i, page) in buf.chunks_exact_mut(64).enumerate() {
                page.copy_from_slice(&pages[first as usize + i].1);
            }
            Ok(())
        })
        .unwrap();
        start += k;
    }
    w.finish(&[("cfg".into(), b"x=1".to_vec())]).unwrap();
    std::fs::read(&p).unwrap()
}

#[test]
fn runs_must_be_the_next_pages_of_a_full_snapshot_and_read_errors_stop_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let fill = &mut |_: u64, buf: &mut [u8]| {
        buf.fill(1);
        Ok(())
    };
    let mut w = SnapshotWriter::new(
        File::create(&p).unwrap(),
        p.clone(),
        header(None, 9),
        2,
        Vec::new(),
    )
    .unwrap();
    w.push_run(0, 2, fill).unwrap();
    for (first, count) in [(0, 1), (3, 1), (2, 8), (2, u64::MAX)] {
        let err = w.push_run(first, count, fill).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { what: "page", .. }),
            "{first}+{count}: {err}"
        );
    }
    let err = w
        .push_run(2, 4, &mut |_, _| {
            Err(Error::io("reading", std::io::Error::other("gone")))
        })
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    // Not for an incremental snapshot.
    let mut w = SnapshotWriter::new(
        File::create(&p).unwrap(),
        p.clone(),
        header(Some(1), 9),
        2,
        vec![0; 9],
    )
    .unwrap();
    assert!(matches!(
        w.push_run(0, 1, fill),
        Err(Error::InvalidArgument { .. })
    ));
}

/// Pages that compress to different lengths, so that chunk offsets differ
/// from chunk to chunk.
fn varied_page(seed: u64, p: u64) -> Vec<u8> {
    let mut x = seed ^ (p.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..64)
        .map(|i| {
            if (p + i).is_multiple_of(3) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            } else {
                (p as u8).wrapping_add(i as u8 / 8)
            }
        })
        .collect()
}

proptest! {
    /// Whatever the thread count, the writer writes the same bytes, and
    /// they are the documented layout built by one thread: the format is
    /// unchanged by compressing in parallel.
    #[test]
    fn the_file_is_the_same_bytes_whatever_the_thread_count(
        n in 0u64..40,
        chunk_pages in 1usize..6,
        run in 1u64..9,
        seed in any::<u64>(),
        keep in proptest::collection::vec(any::<bool>(), 40),
    ) {
        let all: Vec<(u64, Vec<u8>)> = (0..n).map(|p| (p, varied_page(seed, p))).collect();
        let mut full = header(None, n);
        full.chunk_pages = chunk_pages;
        let expected = reference_file(&full, &all, &[]);
        for threads in [1, 2, 3, 8] {
            prop_assert_eq!(&write(full.clone(), &all, Vec::new(), threads), &expected, "full, {} threads", threads);
            prop_assert_eq!(&write_runs(full.clone(), &all, threads, run), &expected, "runs of {}, {} threads", run, threads);
        }
        // An incremental one: a subset below the parent's count, and every
        // page from it on.
        let parent_count = n / 2;
        let parent_fps: Vec<u64> = (0..parent_count).map(|p| p ^ seed).collect();
        let some: Vec<(u64, Vec<u8>)> = all
            .iter()
            .filter(|(p, _)| *p >= parent_count || keep[*p as usize])
            .cloned()
            .collect();
        let mut inc = header(Some(4), n);
        inc.chunk_pages = chunk_pages;
        let expected = reference_file(&inc, &some, &parent_fps);
        for threads in [1, 2, 3, 8] {
            prop_assert_eq!(
                &write(inc.clone(), &some, parent_fps.clone(), threads),
                &expected,
                "incremental, {} threads",
                threads
            );
        }
    }
}

#[test]
fn no_page_is_pushed_after_a_short_chunk_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    let f = File::create(&p).unwrap();
    let mut w = SnapshotWriter::new(f, p.clone(), header(None, 9), 2, Vec::new()).unwrap();
    for page in 0..4 {
        w.push(page, &[page as u8; 64]).unwrap();
    }
    // 3 pages per chunk: page 3 is written in a chunk of its own.
    w.flush_batch().unwrap();
    assert_eq!(w.chunks_written(), 2);
    let err = w.push(4, &[4; 64]).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { what: "page", .. }),
        "{err}"
    );
    // After whole chunks only, pushing goes on.
    let mut w = SnapshotWriter::new(
        File::create(&p).unwrap(),
        p.clone(),
        header(None, 6),
        2,
        Vec::new(),
    )
    .unwrap();
    for page in 0..3 {
        w.push(page, &[page as u8; 64]).unwrap();
    }
    w.flush_batch().unwrap();
    for page in 3..6 {
        w.push(page, &[page as u8; 64]).unwrap();
    }
    w.finish(&[]).unwrap();
    let r = SnapshotReader::open_file(&p).unwrap();
    assert_eq!(r.index.chunks.len(), 2);
    r.verify_all().unwrap();
}
