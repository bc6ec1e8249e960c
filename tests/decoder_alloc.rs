//! Goal: every decoder's allocations are bounded by what its input justifies. Method: crafted files (hand-built or fixed up with `testing::fixup`, every checksum right) whose counts and lengths claim far more than their bytes hold — and, for the snapshot decoder, chunks that declare huge pages behind a few compressed bytes, and damaged copies of real files — are decoded under a counting global allocator that records the peak bytes the decoding thread holds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use selfheal::snapshot::{
    Consistency, Retention, SnapshotConfig, SnapshotKind, SnapshotRequest, WriteGate,
};
use selfheal::testing::{damaged_copies, decode_snapshot, fill_store, reference_crc32};
use selfheal::{Error, Lsn, MemStore, PageId, PageStore};

/// Counts the bytes held by the thread that turned tracking on.
struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static HELD: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn on_alloc(n: usize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            HELD.with(|h| {
                let now = h.get() + n;
                h.set(now);
                PEAK.with(|p| p.set(p.get().max(now)));
            });
        }
    });
}

fn on_dealloc(n: usize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            HELD.with(|h| h.set(h.get().saturating_sub(n)));
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// bookkeeping touches only const-initialised thread-locals, which never
// allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_dealloc(layout.size());
        on_alloc(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result and the peak bytes held meanwhile.
fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    HELD.with(|h| h.set(0));
    PEAK.with(|p| p.set(0));
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    (r, PEAK.with(Cell::get))
}

/// Decodes `bytes` and returns the result and the peak bytes held meanwhile.
fn peak_of_decode(bytes: &[u8]) -> (selfheal::Result<u64>, usize) {
    peak(|| decode_snapshot(bytes).map(|s| s.stored_pages))
}

/// What the decoder may hold for an input of `len` bytes: a copy of it, lz4's
/// largest expansion (255 : 1) of it, and a little bookkeeping.
fn allowed(len: usize) -> usize {
    len + 256 * len + (16 << 10)
}

/// A full snapshot file of format `version` (1: 4-byte page CRCs, 2: 8-byte
/// page fingerprints) built by hand: `page_count` pages of `page_size`
/// bytes in one chunk whose compressed bytes are `chunk`. Every checksum
/// of the frame is right, so only the chunk's contents can be wrong.
fn crafted(version: u32, page_size: u32, page_count: u64, chunk: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(b"SHSN");
    f.extend_from_slice(&version.to_le_bytes());
    f.extend_from_slice(&1u64.to_le_bytes()); // id
    f.extend_from_slice(&0u64.to_le_bytes()); // full
    f.extend_from_slice(&7u64.to_le_bytes()); // lsn
    f.extend_from_slice(&0u64.to_le_bytes()); // created
    f.extend_from_slice(&page_size.to_le_bytes());
    f.extend_from_slice(&(page_count as u32).to_le_bytes()); // pages per chunk
    f.extend_from_slice(&page_count.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    let crc = reference_crc32(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f.extend_from_slice(chunk);
    let index_off = f.len() as u64;
    let mut ix = Vec::new();
    ix.extend_from_slice(&1u32.to_le_bytes()); // chunks
    ix.extend_from_slice(&page_count.to_le_bytes()); // stored
    ix.extend_from_slice(&page_count.to_le_bytes()); // sums
    ix.extend_from_slice(&0u32.to_le_bytes()); // blobs
    ix.extend_from_slice(&64u64.to_le_bytes());
    ix.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
    ix.extend_from_slice(&((page_count as u32) * page_size).to_le_bytes());
    ix.extend_from_slice(&reference_crc32(chunk).to_le_bytes());
    let sum_len = if version == 1 { 4 } else { 8 };
    ix.resize(ix.len() + sum_len * page_count as usize, 0);
    f.extend_from_slice(&ix);
    let mut foot = Vec::new();
    foot.extend_from_slice(&index_off.to_le_bytes());
    foot.extend_from_slice(&(ix.len() as u64).to_le_bytes());
    foot.extend_from_slice(&reference_crc32(&ix).to_le_bytes());
    foot.extend_from_slice(&0u32.to_le_bytes());
    foot.extend_from_slice(b"SHSE");
    let crc = reference_crc32(&foot);
    foot.extend_from_slice(&crc.to_le_bytes());
    f.extend_from_slice(&foot);
    f
}

#[test]
fn a_small_crafted_file_cannot_make_the_decoder_allocate_much() {
    // 64 pages of 1 MiB in one 64 MiB chunk, "compressed" to one byte.
    for version in [1, 2] {
        let file = crafted(version, 1 << 20, 64, &[0x00]);
        let (r, peak) = peak_of_decode(&file);
        assert!(
            matches!(r, Err(Error::CorruptFile { .. })),
            "v{version}: {r:?}"
        );
        assert!(
            peak <= allowed(file.len()),
            "v{version}: a {}-byte file made the decoder hold {peak} bytes",
            file.len()
        );
    }
    // A real lz4 block of zeros at the largest ratio lz4 reaches is a
    // legitimate chunk: it is decoded, and the page checksums refuse it.
    let raw = vec![0u8; 64 * 1024];
    let block = lz4_flex::block::compress(&raw);
    let file = crafted(2, 1024, 64, &block);
    let (r, peak) = peak_of_decode(&file);
    match r {
        Err(Error::CorruptFile { reason, .. }) => {
            assert!(reason.contains("checksum"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(peak <= allowed(file.len()) + raw.len(), "{peak}");
}

#[test]
fn damaged_real_files_never_make_the_decoder_allocate_much() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemStore::new(1024, 48).unwrap();
    fill_store(&store, 5).unwrap();
    // Half the pages compress very well, so chunks expand a lot.
    for p in (0..48).step_by(2) {
        store.write_page(PageId(p), &[7u8; 1024]).unwrap();
    }
    let m = SnapshotConfig::new(dir.path(), 1024)
        .chunk_bytes(1024 * 8)
        .retention(Retention::KeepAll)
        .build()
        .unwrap();
    let gate = WriteGate::new();
    let pause = gate.pause();
    let r = m
        .take_snapshot(
            Consistency::Paused {
                store: &store,
                pause: &pause,
                lsn: Lsn(1),
            },
            SnapshotRequest::new(SnapshotKind::Full),
        )
        .unwrap();
    let good = std::fs::read(dir.path().join(&r.info.file_name)).unwrap();
    let (ok, _) = peak_of_decode(&good);
    assert_eq!(ok.unwrap(), 48);
    for (label, bad) in damaged_copies(&good, 150, 3) {
        let (_, peak) = peak_of_decode(&bad);
        assert!(
            peak <= allowed(bad.len()),
            "{label}: {} bytes made the decoder hold {peak}",
            bad.len()
        );
    }
}

/// What a decoder of the crate's small files and logs may hold for an input
/// of `len` bytes: a small multiple of it, and a little bookkeeping (paths
/// and messages of errors).
fn allowed_small(len: usize) -> usize {
    16 * len + (16 << 10)
}

fn assert_bounded<T: std::fmt::Debug>(what: &str, input: &[u8], f: impl FnOnce() -> T) {
    let (r, held) = peak(f);
    assert!(
        held <= allowed_small(input.len()),
        "{what}: a {}-byte input made the decoder hold {held} bytes ({r:?})",
        input.len()
    );
}

#[test]
fn counts_and_lengths_claiming_more_than_the_bytes_hold_allocate_nothing_big() {
    use selfheal::testing::decoders::{self, encode_framed};
    use selfheal::testing::fixup;
    use selfheal::testing::journal::{decode_segment, MAX_PAYLOAD_LEN};

    // The frame itself: a payload length of 2^64 - 1 with a valid header CRC.
    let mut framed = encode_framed(*b"SHFZ", 1, b"x");
    framed[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let crc = reference_crc32(&framed[..20]);
    framed[20..24].copy_from_slice(&crc.to_le_bytes());
    assert_bounded("framed file", &framed, || {
        decoders::decode_framed(&framed, *b"SHFZ", 1).map(|(v, p)| (v, p.len()))
    });

    // Incidents: 2^20 incidents claimed, none present.
    let incidents = encode_framed(*b"SHRI", 1, &(1u32 << 20).to_le_bytes());
    assert_bounded("incidents", &incidents, || {
        decoders::decode_incidents(&incidents).map(|v| v.len())
    });

    // Suspects: 2^24 pages claimed, none present.
    let suspects = encode_framed(*b"SHRS", 1, &(1u32 << 24).to_le_bytes());
    assert_bounded("suspects", &suspects, || {
        decoders::decode_suspects(&suspects).map(|v| v.len())
    });

    // Learned remedies: the most records claimed, none present.
    let learned = encode_framed(
        *b"SHLR",
        1,
        &(selfheal::healer::MAX_RECORDS as u32).to_le_bytes(),
    );
    assert_bounded("learned remedies", &learned, || {
        selfheal::healer::Learner::new(1, 8).decode_into(std::path::Path::new("l"), &learned)
    });

    // Manifest: a million entries claimed, none present.
    let mut m = Vec::new();
    m.extend_from_slice(&4096u32.to_le_bytes());
    m.extend_from_slice(&9u64.to_le_bytes());
    m.extend_from_slice(&1_000_000u32.to_le_bytes());
    let manifest = encode_framed(*b"SHSM", 2, &m);
    assert_bounded("manifest", &manifest, || {
        selfheal::testing::decode_manifest(&manifest).map(|v| v.len())
    });

    // Checksum table base: the most entries claimed, none present.
    let mut b = Vec::new();
    b.extend_from_slice(&4096u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&(1u64 << 32).to_le_bytes());
    let base = encode_framed(*b"SHCT", 2, &b);
    assert_bounded("checksum table base", &base, || {
        selfheal::ChecksumTable::decode(std::path::Path::new("t"), &base, 4096).map(|_| ())
    });

    // Run marker and scrub cursor: payloads longer than their fixed size.
    let long = encode_framed(*b"SHRM", 1, &[1u8; 4096]);
    assert_bounded("run marker", &long, || decoders::decode_run_marker(&long));
    let long = encode_framed(*b"SHSC", 1, &[1u8; 4096]);
    assert_bounded("scrub cursor", &long, || {
        decoders::decode_scrub_cursor(&long)
    });

    // Journal segment: a record claiming the largest payload, 17 bytes
    // present.
    let mut seg = fixup::journal_segment(&[]);
    seg.extend_from_slice(&(MAX_PAYLOAD_LEN as u32).to_le_bytes());
    seg.extend_from_slice(&[0u8; 13]);
    assert_bounded("journal segment", &seg, || {
        decode_segment(&seg).map(|s| s.records.len())
    });

    // Checksum log: a verified frame claiming 2^64 - 1 records in 8 bytes.
    let mut log = vec![0u8; 36];
    log[4..8].copy_from_slice(&3u32.to_le_bytes());
    log[8..12].copy_from_slice(&4096u32.to_le_bytes());
    log[24..32].copy_from_slice(&1u64.to_le_bytes());
    log.extend_from_slice(&40u64.to_le_bytes());
    log.extend_from_slice(&u64::MAX.to_le_bytes());
    log.extend_from_slice(&[0u8; 24]);
    let log = fixup::checksum_log(&log);
    assert_bounded("checksum log", &log, || {
        selfheal::testing::checksum_log::decode_log(std::path::Path::new("l"), &log, 4096)
            .map(|l| l.records.len())
    });

    // Audit segment (header naming record 1, so the open reads its frames):
    // a frame claiming the largest body, 8 bytes present.
    let mut header = [0u8; 16];
    header[8] = 1;
    let mut audit = fixup::audit_segment(&header);
    audit.extend_from_slice(&(selfheal::audit::MAX_BODY_LEN as u32).to_le_bytes());
    audit.extend_from_slice(&[0u8; 4]);
    let files = std::sync::Arc::new(selfheal::testing::CrashFiles::new());
    let first = u64::from_le_bytes(audit[8..16].try_into().unwrap());
    files.set_file(&format!("audit-{first:016x}.log"), audit.clone());
    assert_bounded("audit log", &audit, || {
        selfheal::audit::AuditConfig::new()
            .open_on(files.clone())
            .map(|l| l.next_seq())
    });
}
