//! Scrub throughput over a `FileStore` whose file is in the page cache,
//! against the baseline of reading the same file sequentially into a 1 MiB
//! buffer with no verification. Both scan paths of the store are measured:
//! batched `pread` (1 MiB per read) and the memory map, each on one thread
//! and on two ([`ScrubConfig::threads`]). Target: the `pread` path on one
//! thread at 0.85× the baseline's throughput or better; the bench prints
//! each path's ratio (`ratio …` lines) after a measured run.
//!
//! Run: `cargo bench --bench scrub -- --warm-up-time 1 --measurement-time 3`

// Shared with the other benches; this one prints plain ratios only.
#[allow(dead_code)]
#[path = "common/ratio.rs"]
mod ratio;

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

const GROUP: &str = "scrub_64MiB_page_cache";
const BASELINE: &str = "raw_sequential_read_1MiB";

/// The name of a scrub row: scan path, and thread count when above 1.
fn row(mmap: bool, threads: usize) -> String {
    let path = if mmap { "mmap" } else { "pread_1MiB_batches" };
    if threads == 1 {
        path.to_string()
    } else {
        format!("{path}_{threads}_threads")
    }
}

fn scrub(c: &mut Criterion) {
    let since = std::time::SystemTime::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    prepare(&path);

    let mut g = c.benchmark_group(GROUP);
    g.throughput(Throughput::Bytes(FILE_BYTES));
    g.sample_size(10);

    g.bench_function(BASELINE, |b| {
        b.iter(|| assert_eq!(raw_read(&path), FILE_BYTES));
    });

    for (mmap, threads) in [(false, 1), (true, 1), (false, 2), (true, 2)] {
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
        let scrubber = ScrubConfig::new()
            .unlimited()
            .threads(threads)
            .build(det)
            .expect("scrubber");
        let found = scrubber.scan_range(PageId(0), PAGES).expect("scan");
        assert_eq!(found.clean, PAGES, "every page verifies");
        g.bench_with_input(
            BenchmarkId::new("scrub_unpaced", row(mmap, threads)),
            &PAGES,
            |b, &n| {
                b.iter(|| {
                    let s = scrubber.scan_range(PageId(0), n).expect("scan");
                    black_box(s.clean)
                });
            },
        );
    }
    g.finish();
    let rows: Vec<(String, String, String)> = [(false, 1), (true, 1), (false, 2), (true, 2)]
        .iter()
        .map(|&(mmap, threads)| {
            let name = row(mmap, threads);
            (
                format!("scrub {name} throughput vs raw read"),
                format!("{GROUP}/{BASELINE}"),
                format!("{GROUP}/scrub_unpaced/{name}"),
            )
        })
        .collect();
    let lines: Vec<(&str, &str, &str, &str)> = rows
        .iter()
        .map(|(n, a, b)| {
            let note = if b.ends_with("/pread_1MiB_batches") {
                "target ≥ 0.85"
            } else {
                "no target"
            };
            (n.as_str(), a.as_str(), b.as_str(), note)
        })
        .collect();
    ratio::report(since, &lines);
}

criterion_group!(benches, scrub);
criterion_main!(benches);
