//! Benchmarks of `TransactionRollbackManager`'s hot paths, each next to the
//! baseline it is judged against:
//! - undo append into the in-memory journal (target ≥ 5 M records/s for
//!   64-byte before-images with their 64-byte after-images), next to
//!   encoding alone;
//! - rollback apply into a `MemStore` (64-byte images, 8 per page, each page
//!   holding the after-images so that every image is checked and applied;
//!   target ≥ 2 M undo records/s), next to a plain copy of the same bytes;
//! - durable commits/s on real files with 1, 4 and 16 committers, next to the
//!   disk's fsyncs/s measured in the same run; commits per fsync (from the
//!   journal's own counters) is printed for each.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use selfheal::rollback::RawPages;
use selfheal::testing::journal::Record;
use selfheal::testing::CrashDir;
use selfheal::{Lsn, MemStore, PageId, PageStore, RollbackConfig, TxnId};

const IMAGE: usize = 64;
const PAGE: usize = 4096;

fn undo_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("undo_append_64B");
    g.throughput(Throughput::Elements(1));
    let dir = Arc::new(CrashDir::new());
    let store = Arc::new(MemStore::new(PAGE, 64).unwrap());
    let mgr = RollbackConfig::with_storage(dir)
        .segment_size_bytes(8 << 20)
        .build(RawPages::shared(store))
        .unwrap();
    let before = [0xA5u8; IMAGE];
    let after = [0x5Au8; IMAGE];
    g.bench_function("in_memory_journal", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(50_000);
                left -= n;
                let t = mgr.begin().unwrap();
                let start = Instant::now();
                for i in 0..n {
                    let page = PageId(i % 64);
                    let off = (i as usize * IMAGE) % (PAGE - IMAGE);
                    black_box(mgr.record_undo(t, page, off, &before, &after).unwrap());
                }
                elapsed += start.elapsed();
                let lsn = mgr.commit(t).unwrap();
                mgr.checkpoint(lsn).unwrap();
            }
            elapsed
        });
    });
    g.bench_function("baseline_encode_only", |b| {
        let mut buf = Vec::with_capacity(1 << 20);
        let rec = Record::Undo {
            txn: TxnId(1),
            page: PageId(3),
            offset: 128,
            before: before.to_vec(),
            after: after.to_vec(),
        };
        let mut lsn = 1;
        b.iter(|| {
            if buf.len() > (1 << 20) - 200 {
                buf.clear();
            }
            rec.encode_into(Lsn(lsn), &mut buf);
            lsn += 1;
            black_box(buf.len());
        });
    });
    g.finish();
}

const ENTRIES: u64 = 4096;
const PER_PAGE: u64 = 8;

fn rollback_apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("rollback_apply_64B_x8_per_page");
    g.throughput(Throughput::Elements(ENTRIES));
    let pages = ENTRIES / PER_PAGE;
    let store = Arc::new(MemStore::new(PAGE, pages).unwrap());
    let mgr = RollbackConfig::with_storage(Arc::new(CrashDir::new()))
        .segment_size_bytes(64 << 20)
        .build(RawPages::shared(store.clone()))
        .unwrap();
    let before = [0x3Cu8; IMAGE];
    let after = [0xC3u8; IMAGE];
    let written = vec![0xC3u8; PAGE];
    g.bench_function("manager_rollback", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let t = mgr.begin().unwrap();
                for i in 0..ENTRIES {
                    let page = PageId(i / PER_PAGE);
                    let off = (i % PER_PAGE) as usize * IMAGE * 4;
                    mgr.record_undo(t, page, off, &before, &after).unwrap();
                }
                // The pages hold what the transaction wrote.
                for p in 0..pages {
                    store.write_page(PageId(p), &written).unwrap();
                }
                let start = Instant::now();
                black_box(mgr.rollback(t).unwrap());
                elapsed += start.elapsed();
                // Checked here, so that a filtered run that skips this
                // bench does not trip over it.
                let mut page = vec![0u8; PAGE];
                store.read_page(PageId(0), &mut page).unwrap();
                assert_eq!(&page[..IMAGE], &before);
                let lsn = mgr.durable_lsn();
                mgr.checkpoint(lsn).unwrap();
            }
            elapsed
        });
    });
    g.bench_function("baseline_plain_copy", |b| {
        let mut image = vec![0u8; PAGE * pages as usize];
        b.iter(|| {
            for i in (0..ENTRIES).rev() {
                let at = (i / PER_PAGE) as usize * PAGE + (i % PER_PAGE) as usize * IMAGE * 4;
                image[at..at + IMAGE].copy_from_slice(black_box(&before));
            }
            black_box(&image);
        });
    });
    g.finish();
}

fn durable_commits(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_commits");
    g.sample_size(10);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_fsync", |b| {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("fsync-baseline"))
            .unwrap();
        b.iter(|| {
            f.write_all(&[7u8; 64]).unwrap();
            f.sync_data().unwrap();
        });
    });
    for threads in [1usize, 4, 16] {
        let jdir = dir.path().join(format!("journal-{threads}"));
        let store = Arc::new(MemStore::new(PAGE, 64).unwrap());
        let mgr = Arc::new(
            RollbackConfig::new(&jdir)
                .build(RawPages::shared(store))
                .unwrap(),
        );
        let base = mgr.stats().journal;
        g.bench_with_input(
            BenchmarkId::new("commits", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(threads as u64);
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for k in 0..threads {
                            let m = mgr.clone();
                            s.spawn(move || {
                                for i in 0..per {
                                    let t = m.begin().unwrap();
                                    m.record_undo(
                                        t,
                                        PageId(k as u64),
                                        (i as usize % 32) * 8,
                                        &[1u8; 8],
                                        &[2u8; 8],
                                    )
                                    .unwrap();
                                    m.commit(t).unwrap();
                                }
                            });
                        }
                    });
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per * threads as u64) as f64)
                });
            },
        );
        let s = mgr.stats().journal;
        let commits = s.commits - base.commits;
        let fsyncs = s.fsyncs - base.fsyncs;
        println!(
            "durable_commits/{threads}: {commits} commits, {fsyncs} fsyncs, {:.2} commits per fsync",
            commits as f64 / fsyncs.max(1) as f64
        );
    }
    g.finish();
}

criterion_group!(benches, undo_append, rollback_apply, durable_commits);
criterion_main!(benches);
