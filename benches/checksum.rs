//! Page checksum verification against a plain read of the same bytes.
//!
//! Baseline: summing the page as little-endian u64 words, which touches every
//! byte once and does the least work a reader can do. Target: verify ≥ 0.8×
//! the baseline's throughput. Run:
//! `cargo bench --bench checksum -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use selfheal::checksum::{trailer, ChecksumTable};
use selfheal::PageId;

/// The baseline: read every word of the page once.
fn sum_words(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
        .fold(0u64, u64::wrapping_add)
}

fn page(size: usize) -> Vec<u8> {
    let mut b: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    trailer::seal(PageId(42), &mut b).expect("sealable");
    b
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify");
    for size in [4096usize, 8192] {
        let p = page(size);
        let table = ChecksumTable::new(size).expect("valid size");
        table.seal(PageId(42), &p).expect("sealable");
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("plain_sum_baseline", size), &p, |b, p| {
            b.iter(|| sum_words(black_box(p)))
        });
        g.bench_with_input(BenchmarkId::new("trailer", size), &p, |b, p| {
            b.iter(|| trailer::verify(PageId(42), black_box(p)).expect("valid"))
        });
        g.bench_with_input(BenchmarkId::new("sidecar", size), &p, |b, p| {
            b.iter(|| table.verify(PageId(42), black_box(p)).expect("valid"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
