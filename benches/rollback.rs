//! Benchmarks of `TransactionRollbackManager`'s hot paths, each next to the
//! baseline it is judged against:
//! - undo append into the in-memory journal (target ≥ 5 M records/s for
//!   64-byte before-images with their 64-byte after-images) from one
//!   thread and from two (each its own transaction; the aggregate rate),
//!   next to encoding alone;
//! - rollback apply into a `MemStore` (64-byte images, 8 per page, each page
//!   holding the after-images so that every image is checked and applied;
//!   target ≥ 2 M undo records/s), next to a plain copy of the same bytes;
//! - durable commits/s on real files with 1, 4 and 16 committers, next to the
//!   disk's fsyncs/s measured in the same run; commits per fsync (from the
//!   journal's own counters) is printed for each;
//! - recovery (opening the manager over a crashed journal on real files, one
//!   transaction in flight) of journals of 16, 64 and 256 MiB of committed
//!   history: the time per MiB is printed for each, and must stay flat
//!   (recovery time linear in the journal's length).

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
    let mgr = Arc::new(mgr);
    g.bench_function("in_memory_journal_2_threads", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(100_000);
                left -= n;
                let start = Instant::now();
                let lsns: Vec<Lsn> = std::thread::scope(|s| {
                    let workers: Vec<_> = [n / 2, n - n / 2]
                        .into_iter()
                        .enumerate()
                        .map(|(k, share)| {
                            let m = mgr.clone();
                            s.spawn(move || {
                                let t = m.begin().unwrap();
                                for i in 0..share {
                                    let page = PageId(k as u64 * 32 + i % 32);
                                    let off = (i as usize * IMAGE) % (PAGE - IMAGE);
                                    black_box(
                                        m.record_undo(t, page, off, &before, &after).unwrap(),
                                    );
                                }
                                m.commit(t).unwrap()
                            })
                        })
                        .collect();
                    workers.into_iter().map(|w| w.join().unwrap()).collect()
                });
                elapsed += start.elapsed();
                let lsn = lsns.into_iter().max().unwrap();
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

const RECOVERY_PAGE: usize = 4096;

/// A journal of about `mib` MiB of committed history (whole-page images)
/// in `dir`, over a file store of 64 pages.
fn history(dir: &std::path::Path, mib: u64) -> Arc<selfheal::FileStore> {
    let store =
        Arc::new(selfheal::FileStore::create(dir.join("pages"), RECOVERY_PAGE, 64).unwrap());
    let mgr = RollbackConfig::new(dir.join("journal"))
        .segment_size_bytes(8 << 20)
        .build(RawPages::shared(store.clone()))
        .unwrap();
    let (before, after) = (vec![1u8; RECOVERY_PAGE], vec![2u8; RECOVERY_PAGE]);
    while mgr.stats().journal.bytes < mib << 20 {
        let t = mgr.begin().unwrap();
        for k in 0..256u64 {
            mgr.record_undo(t, PageId(k % 64), 0, &before, &after)
                .unwrap();
        }
        mgr.commit(t).unwrap();
    }
    mgr.stop().unwrap();
    store
}

fn recovery_by_journal_size(c: &mut Criterion) {
    let mut g = c.benchmark_group("rollback_recovery");
    g.sample_size(10);
    for mib in [16u64, 64, 256] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        // Made on first use, so that a filtered run that skips this bench
        // does not write the journals.
        let store = std::cell::OnceCell::new();
        let open = || {
            let store = store.get_or_init(|| history(dir.path(), mib));
            RollbackConfig::new(dir.path().join("journal"))
                .segment_size_bytes(8 << 20)
                .build(RawPages::shared(store.clone()))
                .unwrap()
        };
        let data = [9u8; 64];
        let (mut total, mut runs) = (Duration::ZERO, 0u64);
        g.throughput(Throughput::Bytes(mib << 20));
        g.bench_with_input(BenchmarkId::new("journal_MiB", mib), &mib, |b, _| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    // A transaction in flight at the crash (not timed).
                    let m = open();
                    let t = m.begin().unwrap();
                    m.write(t, PageId(1), 0, &data).unwrap();
                    drop(m);
                    let start = Instant::now();
                    let m = open();
                    elapsed += start.elapsed();
                    assert_eq!(m.recovery_report().rolled_back.len(), 1);
                    m.stop().unwrap();
                }
                total += elapsed;
                runs += iters;
                elapsed
            });
        });
        if runs == 0 {
            continue;
        }
        println!(
            "rollback_recovery/journal_MiB/{mib}: {:.3} ms per MiB ({} recoveries)",
            total.as_secs_f64() * 1e3 / runs.max(1) as f64 / mib as f64,
            runs
        );
    }
    g.finish();
}

criterion_group!(
    benches,
    undo_append,
    rollback_apply,
    durable_commits,
    recovery_by_journal_size
);
criterion_main!(benches);
