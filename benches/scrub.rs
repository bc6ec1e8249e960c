//! Scrub throughput over a `FileStore` whose file is in the page cache,
//! against the baseline of reading the same file sequentially into a 1 MiB
//! buffer with no verification. Both scan paths of the store are measured:
//! batched `pread` (1 MiB per read) and the memory map.
//!
//! Run: `cargo bench --bench scrub -- --warm-up-time 1 --measurement-time 3`

use std::fs::File;
use std::hint::black_box;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use selfheal::{ChecksumPlacement, CorruptionConfig, FileStore, PageId, PageStore, ScrubConfig};

const PAGE: usize = 4096;
const FILE_BYTES: u64 = 64 << 20;
const PAGES: u64 = FILE_BYTES / PAGE as u64;

/// Writes a store of sealed pages and reads it once so it is in the page cache.
fn prepare(path: &Path) {
    let store = Arc::new(FileStore::create(path, PAGE, PAGES).expect("create store"));
    let det = CorruptionConfig::new(ChecksumPlacement::Trailer)
        .build(store.clone())
        .expect("detector");
    let mut page = vec![0u8; PAGE];
    for p in 0..PAGES {
        page.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (p as usize ^ i) as u8 | 1);
        det.write_sealed(PageId(p), &mut page).expect("seal");
    }
    store.sync().expect("sync");
    raw_read(path);
}

/// The baseline: sequential reads into a 1 MiB buffer, no checksums.
fn raw_read(path: &Path) -> u64 {
    let mut f = File::open(path).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += black_box(&buf[..n]).len() as u64;
    }
    total
}

fn scrub(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    prepare(&path);

    let mut g = c.benchmark_group("scrub_64MiB_page_cache");
    g.throughput(Throughput::Bytes(FILE_BYTES));
    g.sample_size(10);

    g.bench_function("raw_sequential_read_1MiB", |b| {
        b.iter(|| assert_eq!(raw_read(&path), FILE_BYTES));
    });

    for mmap in [false, true] {
        let store = Arc::new(
            FileStore::open(&path, PAGE)
                .expect("open store")
                .with_mmap_scan(mmap),
        );
        let det = Arc::new(
            CorruptionConfig::new(ChecksumPlacement::Trailer)
                .build(store)
                .expect("detector"),
        );
        let scrubber = ScrubConfig::new().unlimited().build(det).expect("scrubber");
        let found = scrubber.scan_range(PageId(0), PAGES).expect("scan");
        assert_eq!(found.clean, PAGES, "every page verifies");
        let name = if mmap { "mmap" } else { "pread_1MiB_batches" };
        g.bench_with_input(BenchmarkId::new("scrub_unpaced", name), &PAGES, |b, &n| {
            b.iter(|| {
                let s = scrubber.scan_range(PageId(0), n).expect("scan");
                black_box(s.clean)
            });
        });
    }
    g.finish();
}

criterion_group!(benches, scrub);
criterion_main!(benches);
