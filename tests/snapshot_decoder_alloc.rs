//! The snapshot decoder's allocations are bounded by what its input justifies: crafted files (hand-built, every checksum right) that declare huge chunks behind a few compressed bytes, and damaged copies of real files, are decoded under a counting global allocator that records the peak bytes the decoding thread holds.

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

/// Decodes `bytes` and returns the result and the peak bytes held meanwhile.
fn peak_of_decode(bytes: &[u8]) -> (selfheal::Result<u64>, usize) {
    HELD.with(|h| h.set(0));
    PEAK.with(|p| p.set(0));
    TRACKING.with(|t| t.set(true));
    let r = decode_snapshot(bytes).map(|s| s.stored_pages);
    TRACKING.with(|t| t.set(false));
    (r, PEAK.with(Cell::get))
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
