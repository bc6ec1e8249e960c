//! Adoption throughput over a `FileStore` whose file is in the page cache,
//! against the baseline of scrubbing the same file (a sidecar detector that
//! already has every checksum) in the same run. Adoption reads each page
//! once, computes its CRC and records it; a scrub reads each page once and
//! compares its CRC. Target: adoption at 0.8× the scrub's throughput or
//! better, i.e. `scrub_baseline/X` time ÷ `adopt_…/X` time ≥ 0.8 for each
//! read path X; the bench prints these ratios (`ratio …` lines) after a
//! measured run. Both run over the memory-map scan path and the `pread`
//! path, and adoption into an in-memory table and into a durable one (files
//! in a temporary directory next to the store: a 6-byte `claim` record per
//! page, the syncs that begin and end an adoption, and one log fsync per
//! 1 MiB of claims, here one at the end).
//!
//! Run: `cargo bench --bench adopt -- --warm-up-time 1 --measurement-time 3`

// Shared with the other benches; this one prints plain ratios only.
#[allow(dead_code)]
#[path = "common/ratio.rs"]
mod ratio;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use selfheal::corruption::AdoptOptions;
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, FileStore, PageId, PageStore, ScrubConfig,
};

const PAGE: usize = 4096;
const FILE_BYTES: u64 = 64 << 20;
const PAGES: u64 = FILE_BYTES / PAGE as u64;

/// A host's file written before it had the library (no zero pages), read
/// once so that it is in the page cache.
fn prepare(path: &Path) {
    let store = FileStore::create(path, PAGE, PAGES).expect("create store");
    let mut page = vec![0u8; PAGE];
    for p in 0..PAGES {
        page.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (p as usize ^ i) as u8 | 1);
        store.write_page(PageId(p), &page).expect("write");
    }
    store.sync().expect("sync");
    let _ = std::fs::read(path).expect("read");
}

fn adopt(c: &mut Criterion) {
    let since = std::time::SystemTime::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    prepare(&path);

    let mut g = c.benchmark_group("adopt_64MiB_page_cache");
    g.throughput(Throughput::Bytes(FILE_BYTES));
    g.sample_size(10);
    for mmap in [true, false] {
        let name = if mmap { "mmap" } else { "pread_1MiB_batches" };
        // One store for both, so that both read through the same (warm) map.
        let store = Arc::new(
            FileStore::open(&path, PAGE)
                .expect("open store")
                .with_mmap_scan(mmap),
        );
        let open = || store.clone();

        // Baseline: a scrub of the adopted file, every checksum known.
        let table = Arc::new(ChecksumTable::new(PAGE).expect("table"));
        let det = Arc::new(
            CorruptionConfig::new(ChecksumPlacement::Sidecar(table))
                .build(open())
                .expect("detector"),
        );
        let report = det.adopt(AdoptOptions::new()).expect("adopt");
        assert_eq!(report.sealed, PAGES);
        let scrubber = ScrubConfig::new().unlimited().build(det).expect("scrubber");
        g.bench_with_input(BenchmarkId::new("scrub_baseline", name), &PAGES, |b, &n| {
            b.iter(|| {
                let s = scrubber.scan_range(PageId(0), n).expect("scan");
                assert_eq!(s.clean, n);
                black_box(s.clean)
            });
        });

        // Adoption of the same file into an empty table, each iteration.
        g.bench_with_input(
            BenchmarkId::new("adopt_in_memory_table", name),
            &PAGES,
            |b, &n| {
                b.iter_batched(
                    || {
                        let table = Arc::new(ChecksumTable::new(PAGE).expect("table"));
                        CorruptionConfig::new(ChecksumPlacement::Sidecar(table))
                            .build(open())
                            .expect("detector")
                    },
                    |det| {
                        let r = det.adopt(AdoptOptions::new()).expect("adopt");
                        assert_eq!(r.sealed, n);
                        black_box(r.sealed)
                    },
                    criterion::BatchSize::PerIteration,
                );
            },
        );

        // The same into a fresh durable table each iteration (opened, and
        // dropped with its directory, outside the measurement).
        g.bench_with_input(
            BenchmarkId::new("adopt_durable_table", name),
            &PAGES,
            |b, &n| {
                b.iter_batched(
                    || {
                        let tables = tempfile::tempdir_in(dir.path()).expect("tempdir");
                        let table = Arc::new(
                            ChecksumTable::open(&tables.path().join("sums"), PAGE).expect("table"),
                        );
                        let det = CorruptionConfig::new(ChecksumPlacement::Sidecar(table))
                            .build(open())
                            .expect("detector");
                        (det, tables)
                    },
                    |(det, tables)| {
                        let r = det.adopt(AdoptOptions::new()).expect("adopt");
                        assert_eq!(r.sealed, n);
                        (black_box(r.sealed), det, tables)
                    },
                    criterion::BatchSize::PerIteration,
                );
            },
        );
    }
    g.finish();
    let g = "adopt_64MiB_page_cache";
    let mut lines = Vec::new();
    for path in ["mmap", "pread_1MiB_batches"] {
        for table in ["adopt_in_memory_table", "adopt_durable_table"] {
            lines.push((
                format!("{table}/{path} throughput vs scrub"),
                format!("{g}/scrub_baseline/{path}"),
                format!("{g}/{table}/{path}"),
            ));
        }
    }
    let lines: Vec<(&str, &str, &str, &str)> = lines
        .iter()
        .map(|(n, a, b)| (n.as_str(), a.as_str(), b.as_str(), "target ≥ 0.8"))
        .collect();
    ratio::report(since, &lines);
}

criterion_group!(benches, adopt);
criterion_main!(benches);
