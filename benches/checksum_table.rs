//! Making sidecar checksum changes durable: the durable table's log against
//! a full save of the table.
//!
//! A table of 8 Mi pages (a 32 GiB store of 4 KiB pages; the table's size
//! does not depend on the page size, so the pages here are 64 bytes to keep
//! the CRCs of the pages themselves out of the measurement). Baseline:
//! `ChecksumTable::save`, the whole table written crash-safely, which is
//! what making any change durable cost before the log. Target: 1 % of the
//! pages changed and made durable through the detector — a batch write
//! whose intents take one fsync, and a sync that settles them (its record
//! is fsynced with the next batch) — including its share of the
//! compactions it causes; ≤ 5 % of the baseline. For reference: the same
//! batch through a detector with an in-memory table (sealing and recording
//! without any durability: the part of the target that is not the cost of
//! durability), and one compaction (a full base rewrite in the new design).
//! A second group makes a fixed 16 Ki changes durable on tables of 1 Mi and
//! 8 Mi pages: the cost depends on the changes, not on the table's size.
//! Files live in a temporary directory (its file system decides the fsync
//! cost).
//!
//! The ratios, printed as `ratio …` lines after a measured run:
//! - like for like (the target): what durability costs,
//!   (`one_percent_durable_total` − `one_percent_in_memory_sealing`) ÷
//!   `full_save_baseline`: the log records, their fsync, the settle and the
//!   share of compactions, without computing the pages' CRCs and the
//!   detector's bookkeeping of a write, which a save of checksums already
//!   known does not do either;
//! - the total: `one_percent_durable_total` ÷ `full_save_baseline`.
//!
//! Run:
//! `cargo bench --bench checksum_table -- --warm-up-time 1 --measurement-time 3`

#[path = "common/ratio.rs"]
mod ratio;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, CorruptionDetector, PageId, PageStore,
    Result,
};

const PAGES: u64 = 8 << 20;
const PS: usize = 64;
const CHANGED: u64 = PAGES / 100;

/// A store that keeps nothing: the bench measures the table, not the pages.
#[derive(Debug)]
struct NullStore;

impl PageStore for NullStore {
    fn page_size(&self) -> usize {
        PS
    }

    fn page_count(&self) -> u64 {
        PAGES
    }

    fn read_page(&self, _page: PageId, buf: &mut [u8]) -> Result<()> {
        buf.fill(0);
        Ok(())
    }

    fn write_page(&self, _page: PageId, _data: &[u8]) -> Result<()> {
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

fn page(page: u64, round: u64) -> Vec<u8> {
    let mut b = vec![0x5Au8; PS];
    b[..8].copy_from_slice(&page.to_le_bytes());
    b[8..16].copy_from_slice(&round.to_le_bytes());
    b
}

fn bench(c: &mut Criterion) {
    let since = std::time::SystemTime::now();
    let dir = tempfile::tempdir().expect("temporary directory");
    let full = ChecksumTable::new(PS).expect("page size");
    for p in 0..PAGES {
        full.seal(PageId(p), &page(p, 0)).expect("sealable");
    }
    let saved = dir.path().join("full");
    let durable_path = dir.path().join("durable");
    full.save(&durable_path).expect("save");
    let table = Arc::new(ChecksumTable::open(&durable_path, PS).expect("open"));
    let det: CorruptionDetector = CorruptionConfig::new(ChecksumPlacement::Sidecar(table.clone()))
        .build(Arc::new(NullStore))
        .expect("detector");

    let mut g = c.benchmark_group("checksum_table_8Mi_pages");
    g.sample_size(10);
    g.bench_function("full_save_baseline", |b| {
        b.iter(|| full.save(black_box(&saved)).expect("save"))
    });
    let round = std::cell::Cell::new(0u64);
    // Every 100th page, from a shifting start, with new bytes.
    let next_batch = || {
        round.set(round.get() + 1);
        let r = round.get();
        (0..CHANGED)
            .map(|i| {
                let p = (i * 100 + r) % PAGES;
                (PageId(p), page(p, r))
            })
            .collect::<Vec<_>>()
    };
    let write = |det: &CorruptionDetector, batch: &mut Vec<(PageId, Vec<u8>)>| {
        let mut refs: Vec<(PageId, &mut [u8])> = batch
            .iter_mut()
            .map(|(p, b)| (*p, b.as_mut_slice()))
            .collect();
        det.write_sealed_batch(&mut refs).expect("batch");
        det.sync().expect("sync");
    };
    g.bench_function("one_percent_durable_total", |b| {
        b.iter_batched_ref(
            next_batch,
            |batch| write(&det, batch),
            BatchSize::PerIteration,
        )
    });
    let in_memory = Arc::new(full);
    let mem_det = CorruptionConfig::new(ChecksumPlacement::Sidecar(in_memory))
        .build(Arc::new(NullStore))
        .expect("detector");
    g.bench_function("one_percent_in_memory_sealing", |b| {
        b.iter_batched_ref(
            next_batch,
            |batch| write(&mem_det, batch),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("compaction", |b| {
        b.iter(|| table.compact().expect("compact"))
    });
    g.finish();

    let small_path = dir.path().join("small");
    let small = ChecksumTable::new(PS).expect("page size");
    for p in 0..PAGES / 8 {
        small.seal(PageId(p), &page(p, 0)).expect("sealable");
    }
    small.save(&small_path).expect("save");
    let small = Arc::new(ChecksumTable::open(&small_path, PS).expect("open"));
    let small_det = CorruptionConfig::new(ChecksumPlacement::Sidecar(small))
        .build(Arc::new(NullStore))
        .expect("detector");
    let mut g = c.benchmark_group("checksum_table_16Ki_changes");
    g.sample_size(10);
    for (name, det, pages) in [
        ("1Mi_pages", &small_det, PAGES / 8),
        ("8Mi_pages", &det, PAGES),
    ] {
        let fixed_batch = || {
            round.set(round.get() + 1);
            let r = round.get();
            (0..16 << 10)
                .map(|i| {
                    let p = (i * 61 + r) % pages;
                    (PageId(p), page(p, r))
                })
                .collect::<Vec<_>>()
        };
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                fixed_batch,
                |batch| write(det, batch),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
    let g = "checksum_table_8Mi_pages";
    let (total, sealing, base) = (
        format!("{g}/one_percent_durable_total"),
        format!("{g}/one_percent_in_memory_sealing"),
        format!("{g}/full_save_baseline"),
    );
    ratio::report_difference(
        since,
        &[(
            "like for like, 1 % made durable vs a full save",
            &total,
            &sealing,
            &base,
            "target ≤ 5 %",
        )],
    );
    ratio::report(
        since,
        &[(
            "total, 1 % sealed and made durable vs a full save",
            &total,
            &base,
            "sealing the pages included",
        )],
    );
    let s = table.stats();
    eprintln!(
        "durable table after the run: generation {}, base {} bytes, log {} bytes, {} log fsyncs, {} compactions",
        s.generation, s.base_bytes, s.log_bytes, s.log_syncs, s.compactions
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
