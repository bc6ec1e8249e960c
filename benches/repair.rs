//! Hot paths of `DataRepairer`.
//!
//! - `repair/repair_page_4k_one_replica`: repairing one 4 KiB page from an
//!   in-memory replica (fetch on the replica's read helper, verify, write,
//!   sync, re-read, re-verify), against the baseline `baseline_read_write_4k`,
//!   a plain read and write of the same page, and against
//!   `baseline_repair_steps_inline_4k`, the same steps on the caller's
//!   thread with the mirror read inline (no call into a replica): the
//!   difference is the hand-over to the replica's helper and back.
//! - `repair/repair_page_4k_one_inline_replica`: the same repair from a
//!   replica that [may be called inline](selfheal::Replica::may_call_inline)
//!   (its reads run on the repairing thread, without a deadline), against
//!   the same baselines.
//! - `repair_batch/repair_all_1000_pages`: `repair_all` of 1 000 damaged
//!   pages of a `FileStore` (a real file; `sync` is `fdatasync`), against the
//!   baseline `write_1000_pages_one_fsync`: writing the same 1 000 pages and
//!   syncing once. Target: at least half the baseline's throughput, and at
//!   most 10 fsyncs per 1 000 pages (counted by a wrapper store and checked
//!   here; the count is printed). On Linux the process CPU time per run of
//!   each is printed too: on a machine busy with other work, wall time
//!   follows CPU time, and the repair reads each page twice (re-read before,
//!   re-read after the sync; one `pread` per run of 32 pages each time) and
//!   writes it once (one `pwrite` per run of 32 pages) where the baseline
//!   writes it once (one `pwrite` per page). The damage is synced before the
//!   timed part, as damage at rest is: left dirty, the repair's first fsync
//!   would write it back too.
//! - `repair_batch/repair_pages_1000_pages`: the same repair through
//!   `repair_pages` (the pages named by the caller, as the recovery manager
//!   does), against the same baseline and fsync bound.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use selfheal::repair::RepairConfig;
use selfheal::testing::Damage;
use selfheal::{
    ChecksumPlacement, CorruptionConfig, FileStore, MemStore, PageId, PageStore, StoreReplica,
};

const PS: usize = 4096;
const PAGES: u64 = 64;
const PAGE: PageId = PageId(17);

fn repair(c: &mut Criterion) {
    let local = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mirror = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let detector = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .build(local.clone())
            .unwrap(),
    );
    for p in 0..PAGES {
        let mut b = vec![p as u8 | 1; PS];
        detector.write_sealed(PageId(p), &mut b).unwrap();
        mirror.write_page(PageId(p), &b).unwrap();
    }
    let repairer = RepairConfig::new().build(detector.clone()).unwrap();
    repairer
        .add_replica(Arc::new(StoreReplica::new("mirror", mirror.clone())))
        .unwrap();
    let inline_repairer = RepairConfig::new().build(detector.clone()).unwrap();
    inline_repairer
        .add_replica(Arc::new(
            StoreReplica::new("mirror", mirror.clone()).call_inline(true),
        ))
        .unwrap();

    let mut g = c.benchmark_group("repair");
    g.throughput(Throughput::Bytes(PS as u64));

    // Baseline: what rewriting the page costs without any verification.
    let mut buf = vec![0u8; PS];
    g.bench_function("baseline_read_write_4k", |b| {
        b.iter(|| {
            local.read_page(black_box(PAGE), &mut buf).unwrap();
            local.write_page(black_box(PAGE), &buf).unwrap();
        });
    });

    // Setup (not timed): damage the page and fence it with a verified read.
    let mut scratch = vec![0u8; PS];
    let damage = |scratch: &mut [u8]| {
        let mut bytes = vec![0u8; PS];
        local.read_page(PAGE, &mut bytes).unwrap();
        Damage::BitFlip { byte: 100, bit: 3 }.apply(&mut bytes);
        local.write_page(PAGE, &bytes).unwrap();
        assert!(detector.read_verified(PAGE, scratch).is_err());
    };

    // Baseline: the steps of a repair on the caller's thread, with no call
    // into a replica — recheck, ticket, read of the mirror, verification,
    // commit (write, sync, re-read, re-verify). What `repair_page` adds to
    // it is the hand-over to the replica's helper thread and back, and the
    // bookkeeping of the report.
    g.bench_function("baseline_repair_steps_inline_4k", |b| {
        b.iter_batched(
            || damage(&mut scratch),
            |()| {
                assert!(detector.recheck(black_box(PAGE)).is_ok());
                let ticket = detector.begin_repair(PAGE).unwrap();
                let mut copy = vec![0u8; PS];
                mirror.read_page(PAGE, &mut copy).unwrap();
                detector.verify(PAGE, &copy).unwrap();
                detector.commit_repair(ticket, &copy).unwrap()
            },
            BatchSize::PerIteration,
        );
    });

    g.bench_function("repair_page_4k_one_replica", |b| {
        b.iter_batched(
            || damage(&mut scratch),
            |()| {
                let report = repairer.repair_page(black_box(PAGE)).unwrap();
                assert!(report.is_repaired());
                report
            },
            BatchSize::PerIteration,
        );
    });

    // The same repair from a replica that may be called inline: no helper
    // thread, no hand-over, no deadline.
    g.bench_function("repair_page_4k_one_inline_replica", |b| {
        b.iter_batched(
            || damage(&mut scratch),
            |()| {
                let report = inline_repairer.repair_page(black_box(PAGE)).unwrap();
                assert!(report.is_repaired());
                report
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

/// A store that counts the syncs reaching the store under it.
#[derive(Debug)]
struct CountingStore {
    inner: FileStore,
    syncs: AtomicU64,
}

impl PageStore for CountingStore {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn page_count(&self) -> u64 {
        self.inner.page_count()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> selfheal::Result<()> {
        self.inner.read_page(page, buf)
    }
    // Forwarded, or the wrapper would hide the file's range read (one
    // `pread` for a run of pages) behind the default page-at-a-time one.
    fn read_pages(&self, first: PageId, buf: &mut [u8]) -> selfheal::Result<()> {
        self.inner.read_pages(first, buf)
    }
    fn write_page(&self, page: PageId, data: &[u8]) -> selfheal::Result<()> {
        self.inner.write_page(page, data)
    }
    // Forwarded too: the file writes a run of pages with one `pwrite`.
    fn write_pages(&self, pages: &mut [(PageId, &mut [u8])]) -> selfheal::Result<()> {
        self.inner.write_pages(pages)
    }
    fn sync(&self) -> selfheal::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.inner.sync()
    }
}

const BATCH_PAGES: u64 = 1000;

#[path = "common/cpu.rs"]
#[allow(dead_code)]
mod cpu;
use cpu::{mean, process_cpu_ms};

fn repair_batch(c: &mut Criterion) {
    // In the target directory, not /tmp: a tmpfs would make fsync free.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = Arc::new(CountingStore {
        inner: FileStore::create(dir.path().join("pages"), PS, BATCH_PAGES).unwrap(),
        syncs: AtomicU64::new(0),
    });
    let mirror = Arc::new(MemStore::new(PS, BATCH_PAGES).unwrap());
    let detector = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .build(store.clone())
            .unwrap(),
    );
    let mut pages = Vec::new();
    for p in 0..BATCH_PAGES {
        let mut b = vec![(p as u8) | 1; PS];
        detector.write_sealed(PageId(p), &mut b).unwrap();
        mirror.write_page(PageId(p), &b).unwrap();
        pages.push(b);
    }
    store.sync().unwrap();
    let repairer = RepairConfig::new().build(detector.clone()).unwrap();
    repairer
        .add_replica(Arc::new(StoreReplica::new("mirror", mirror)))
        .unwrap();

    let mut g = c.benchmark_group("repair_batch");
    g.throughput(Throughput::Elements(BATCH_PAGES));
    g.sample_size(10);

    // Baseline: the same pages written to the same file, one fsync at the end.
    let mut baseline_cpu = (0.0, 0u32);
    g.bench_function("write_1000_pages_one_fsync", |b| {
        b.iter(|| {
            let cpu = process_cpu_ms();
            for (p, bytes) in pages.iter().enumerate() {
                store.inner.write_page(PageId(p as u64), bytes).unwrap();
            }
            store.inner.sync().unwrap();
            if let (Some(a), Some(b)) = (cpu, process_cpu_ms()) {
                baseline_cpu = (baseline_cpu.0 + b - a, baseline_cpu.1 + 1);
            }
        });
    });

    // Setup (not timed): every page damaged on disk (written and synced,
    // through the raw file, so not counted) and fenced by a read.
    let junk = vec![0xEE; PS];
    let mut scratch = vec![0u8; PS];
    let mut fsyncs_per_run = Vec::new();
    let mut repair_cpu = (0.0, 0u32);
    g.bench_function("repair_all_1000_pages", |b| {
        b.iter_batched(
            || {
                for p in 0..BATCH_PAGES {
                    store.inner.write_page(PageId(p), &junk).unwrap();
                    assert!(detector.read_verified(PageId(p), &mut scratch).is_err());
                }
                // On disk: unsynced, the damage would be written back by
                // the repair's first fsync, in the timed part.
                store.inner.sync().unwrap();
                store.syncs.load(Ordering::Relaxed)
            },
            |syncs_before| {
                let cpu = process_cpu_ms();
                let reports = repairer.repair_all();
                if let (Some(a), Some(b)) = (cpu, process_cpu_ms()) {
                    repair_cpu = (repair_cpu.0 + b - a, repair_cpu.1 + 1);
                }
                assert_eq!(reports.len(), BATCH_PAGES as usize);
                assert!(reports.iter().all(|r| r.is_repaired()));
                fsyncs_per_run.push(store.syncs.load(Ordering::Relaxed) - syncs_before);
            },
            BatchSize::PerIteration,
        );
    });
    // The same repair of the same pages named by the caller.
    let ids: Vec<PageId> = (0..BATCH_PAGES).map(PageId).collect();
    let mut pages_fsyncs_per_run = Vec::new();
    g.bench_function("repair_pages_1000_pages", |b| {
        b.iter_batched(
            || {
                for p in 0..BATCH_PAGES {
                    store.inner.write_page(PageId(p), &junk).unwrap();
                    assert!(detector.read_verified(PageId(p), &mut scratch).is_err());
                }
                // On disk: unsynced, the damage would be written back by
                // the repair's first fsync, in the timed part.
                store.inner.sync().unwrap();
                store.syncs.load(Ordering::Relaxed)
            },
            |syncs_before| {
                let reports = repairer.repair_pages(black_box(&ids));
                assert!(reports
                    .iter()
                    .all(|r| r.as_ref().is_ok_and(|r| r.is_repaired())));
                pages_fsyncs_per_run.push(store.syncs.load(Ordering::Relaxed) - syncs_before);
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
    fsyncs_per_run.extend(pages_fsyncs_per_run);
    let most = fsyncs_per_run.iter().copied().max().unwrap_or(0);
    println!(
        "repair_batch: at most {most} fsyncs per repair_all or repair_pages of {BATCH_PAGES} pages ({} runs)",
        fsyncs_per_run.len()
    );
    if baseline_cpu.1 > 0 && repair_cpu.1 > 0 {
        println!(
            "repair_batch: CPU per run (mean, 10 ms ticks): repair_all_1000_pages {:.1} ms over {} runs, write_1000_pages_one_fsync {:.1} ms over {} runs",
            mean(repair_cpu),
            repair_cpu.1,
            mean(baseline_cpu),
            baseline_cpu.1
        );
    }
    assert!(
        most <= 10,
        "a repair of {BATCH_PAGES} pages took {most} fsyncs; the target is at most 10"
    );
}

criterion_group!(benches, repair, repair_batch);
criterion_main!(benches);
