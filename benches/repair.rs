//! Hot path of `DataRepairer`: repairing one 4 KiB page from an in-memory
//! replica (fetch, verify, write, sync, re-read, re-verify), against the
//! baseline of a plain read and write of the same page.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use selfheal::repair::RepairConfig;
use selfheal::testing::Damage;
use selfheal::{ChecksumPlacement, DetectorConfig, MemStore, PageId, PageStore, StoreReplica};

const PS: usize = 4096;
const PAGES: u64 = 64;
const PAGE: PageId = PageId(17);

fn repair(c: &mut Criterion) {
    let local = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mirror = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let detector = Arc::new(
        DetectorConfig::new(ChecksumPlacement::Trailer)
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
        .add_replica(Arc::new(StoreReplica::new("mirror", mirror)))
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
    g.bench_function("repair_page_4k_one_replica", |b| {
        b.iter_batched(
            || {
                let mut bytes = vec![0u8; PS];
                local.read_page(PAGE, &mut bytes).unwrap();
                Damage::BitFlip { byte: 100, bit: 3 }.apply(&mut bytes);
                local.write_page(PAGE, &bytes).unwrap();
                assert!(detector.read_verified(PAGE, &mut scratch).is_err());
            },
            |()| {
                let report = repairer.repair_page(black_box(PAGE)).unwrap();
                assert!(report.is_repaired());
                report
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

criterion_group!(benches, repair);
criterion_main!(benches);
