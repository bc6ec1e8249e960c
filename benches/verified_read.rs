//! Verified reads from several threads at once: the aggregate throughput of
//! four readers against one reader in the same run, over a `FileStore`
//! whose file is in the page cache, in both checksum placements. Each
//! iteration reads every page of a 64 MiB store once through
//! `CorruptionDetector::read_verified`, split among the readers (each reads
//! its own interleaved share, in a scattered order). Target: four readers at
//! 1.8× one reader's throughput or better on two cores, i.e.
//! `1_reader` time ÷ `4_readers` time ≥ 1.8; the bench prints these ratios
//! (`ratio …` lines) after a measured run. A control row measures what the
//! machine gives four threads in the same run: CRC32 of the same 64 MiB in
//! memory on one thread and on four (`crc_only`); on a machine busy with
//! other work its ratio is the ceiling the readers' ratio can reach. A
//! second control row, `pread_only`, makes the readers' reads with no
//! checksum and no crate code: the same pages in the same order on one and
//! on four threads, each a plain `pread` of 4 KiB on one shared file
//! descriptor of the trailer store's file. Its ratio is what the kernel's
//! read path gives four threads here; the readers' ratio cannot exceed it
//! by much.
//!
//! Run: `cargo bench --bench verified_read -- --warm-up-time 1 --measurement-time 3`

// Shared with the other benches; this one prints plain ratios only.
#[allow(dead_code)]
#[path = "common/ratio.rs"]
mod ratio;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, CorruptionDetector, FileStore, PageId,
};

const PAGE: usize = 4096;
const FILE_BYTES: u64 = 64 << 20;
const PAGES: u64 = FILE_BYTES / PAGE as u64;
const GROUP: &str = "verified_read_64MiB_page_cache";

/// A detector over a store of sealed pages, read once so that the file is
/// in the page cache.
fn prepare(path: &Path, sidecar: bool) -> Arc<CorruptionDetector> {
    let store = Arc::new(FileStore::create(path, PAGE, PAGES).expect("create store"));
    let placement = if sidecar {
        ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(PAGE).expect("table")))
    } else {
        ChecksumPlacement::Trailer
    };
    let det = CorruptionConfig::new(placement)
        .build(store.clone())
        .expect("detector");
    let mut page = vec![0u8; PAGE];
    for p in 0..PAGES {
        page.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (p as usize ^ i) as u8 | 1);
        det.write_sealed(PageId(p), &mut page).expect("seal");
    }
    det.sync().expect("sync");
    let _ = std::fs::read(path).expect("read");
    Arc::new(det)
}

/// Reads every page once on `readers` threads with `read`; reader `r`
/// reads pages `i × m mod PAGES` for `i = r, r + readers, …` (an odd `m`
/// modulo a power of two is a permutation, so every page is read once, in
/// a scattered order).
fn read_shares(readers: u64, read: impl Fn(u64, &mut [u8]) + Sync) -> u64 {
    let read = &read;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..readers)
            .map(|r| {
                scope.spawn(move || {
                    let mut buf = vec![0u8; PAGE];
                    let mut sum = 0u64;
                    let mut i = r;
                    while i < PAGES {
                        read(i.wrapping_mul(0x9E37_79B1) % PAGES, &mut buf);
                        sum = sum.wrapping_add(u64::from(buf[0]));
                        i += readers;
                    }
                    sum
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader"))
            .fold(0, u64::wrapping_add)
    })
}

/// Every page once through the detector's verified read.
fn read_all(det: &CorruptionDetector, readers: u64) -> u64 {
    read_shares(readers, |page, buf| {
        det.read_verified(PageId(page), buf).expect("verified");
    })
}

const _: () = assert!(PAGES.is_power_of_two());

/// The second control: [`read_all`]'s reads, as plain `pread`s of `file`
/// (no checksum, no detector, no store).
fn pread_all(file: &std::fs::File, readers: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    read_shares(readers, |page, buf| {
        file.read_exact_at(buf, page * PAGE as u64).expect("pread");
    })
}

/// The control: CRC32 of `bytes` on `threads` threads, each its share.
fn crc_all(bytes: &[u8], threads: usize) -> u32 {
    let share = bytes.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = bytes
            .chunks(share)
            .map(|part| scope.spawn(move || crc32fast::hash(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("crc"))
            .fold(0, |a, b| a ^ b)
    })
}

fn verified_read(c: &mut Criterion) {
    let since = std::time::SystemTime::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group(GROUP);
    g.throughput(Throughput::Bytes(FILE_BYTES));
    g.sample_size(10);
    for (name, sidecar) in [("trailer", false), ("sidecar", true)] {
        let det = prepare(&dir.path().join(name), sidecar);
        for readers in [1u64, 4] {
            let id = if readers == 1 {
                "1_reader".to_string()
            } else {
                format!("{readers}_readers")
            };
            g.bench_with_input(BenchmarkId::new(id, name), &readers, |b, &n| {
                b.iter(|| black_box(read_all(&det, n)));
            });
        }
        assert_eq!(det.stats().corrupt_reported, 0);
    }
    let file = std::fs::File::open(dir.path().join("trailer")).expect("open");
    for readers in [1u64, 4] {
        g.bench_with_input(
            BenchmarkId::new("pread_only", readers),
            &readers,
            |b, &n| {
                b.iter(|| black_box(pread_all(&file, n)));
            },
        );
    }
    let bytes: Vec<u8> = (0..FILE_BYTES).map(|i| (i * 7 + (i >> 12)) as u8).collect();
    for threads in [1usize, 4] {
        g.bench_with_input(BenchmarkId::new("crc_only", threads), &threads, |b, &n| {
            b.iter(|| black_box(crc_all(&bytes, n)));
        });
    }
    g.finish();
    let rows: Vec<(String, String, String)> = ["trailer", "sidecar"]
        .iter()
        .map(|p| {
            (
                format!("4 readers vs 1, {p}"),
                format!("{GROUP}/1_reader/{p}"),
                format!("{GROUP}/4_readers/{p}"),
            )
        })
        .collect();
    let mut lines: Vec<(&str, &str, &str, &str)> = rows
        .iter()
        .map(|(n, a, b)| (n.as_str(), a.as_str(), b.as_str(), "target ≥ 1.8"))
        .collect();
    let control = (format!("{GROUP}/crc_only/1"), format!("{GROUP}/crc_only/4"));
    lines.push((
        "4 CRC threads vs 1, no I/O, no lock",
        &control.0,
        &control.1,
        "the machine's ceiling in this run",
    ));
    let kernel = (
        format!("{GROUP}/pread_only/1"),
        format!("{GROUP}/pread_only/4"),
    );
    lines.push((
        "4 pread threads vs 1, the same reads with no checksum",
        &kernel.0,
        &kernel.1,
        "the kernel's read path's ceiling in this run",
    ));
    ratio::report(since, &lines);
}

criterion_group!(benches, verified_read);
criterion_main!(benches);
