//! Snapshot throughput against its baselines, measured in the same run:
//! a full snapshot of a 256 MiB store of semi-compressible pages (with the
//! default thread count, and with one compression thread) vs lz4_flex
//! compressing the same bytes alone on one thread (the target: 1.5× it on
//! two cores) and vs `std::fs::copy` of a 256 MiB file;
//! an incremental snapshot with 1 % of pages changed (with dirty-page notices
//! and by fingerprint comparison) — compare with the full one; a restore vs
//! lz4_flex decompressing the same bytes alone (both groups print the CPU
//! per run beside the wall times), and a restore into a `FileStore` (its
//! writes and its fsync counted); and the page fingerprint
//! (XXH3-64) of a 4 KiB page vs the page CRC32 it replaced for comparison.
//!
//! `-- --test` runs every bench once on a 32 MiB store.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use selfheal::digest::page_crc;
use selfheal::snapshot::{
    page_fingerprint, Consistency, Retention, SnapshotConfig, SnapshotKind, SnapshotRequest,
    StateSnapshotManager, WriteGate,
};
use selfheal::testing::{fill_store, semi_compressible_page};
use selfheal::{Lsn, MemStore, PageId, PageStore};

#[path = "common/cpu.rs"]
mod cpu;
use cpu::{counted, mean};

const PAGE: usize = 4096;
const CHUNK: usize = 1 << 20;

fn store_bytes() -> usize {
    if std::env::args().any(|a| a == "--test") {
        32 << 20
    } else {
        256 << 20
    }
}

fn setup() -> (MemStore, tempfile::TempDir, StateSnapshotManager) {
    let pages = (store_bytes() / PAGE) as u64;
    let store = MemStore::new(PAGE, pages).unwrap();
    fill_store(&store, 7).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = SnapshotConfig::new(dir.path(), PAGE)
        .retention(Retention::KeepLast(1))
        .build()
        .unwrap();
    (store, dir, m)
}

fn take(m: &StateSnapshotManager, store: &MemStore, gate: &WriteGate, kind: SnapshotKind) -> u64 {
    let pause = gate.pause();
    m.take_snapshot(
        Consistency::Paused {
            store,
            pause: &pause,
            lsn: Lsn(1),
        },
        SnapshotRequest::new(kind),
    )
    .unwrap()
    .info
    .id
}

fn full(c: &mut Criterion) {
    let (store, dir, m) = setup();
    let bytes = store.to_bytes();
    let gate = WriteGate::new();
    let mut g = c.benchmark_group("snapshot_full");
    g.sample_size(10)
        .throughput(Throughput::Bytes(bytes.len() as u64));
    // Each sample writes into an empty directory, so that deleting the
    // previous 256 MiB snapshot (retention) is not counted as snapshot time;
    // `with_retention` counts it.
    // With the default thread count (the cores available), and with one
    // compression thread (the calling thread still reads and writes).
    let mut cpu_ms = [(0.0, 0u32); 3];
    for (k, (name, threads)) in [
        ("selfheal_full_snapshot", None),
        ("selfheal_full_snapshot_1_thread", Some(1)),
    ]
    .into_iter()
    .enumerate()
    {
        let cpu = &mut cpu_ms[k];
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let d = tempfile::tempdir_in(dir.path()).unwrap();
                    let mut cfg = SnapshotConfig::new(d.path(), PAGE);
                    if let Some(n) = threads {
                        cfg = cfg.threads(n);
                    }
                    let fresh = cfg.build().unwrap();
                    let t = Instant::now();
                    counted(cpu, || {
                        black_box(take(&fresh, &store, &gate, SnapshotKind::Full))
                    });
                    spent += t.elapsed();
                }
                spent
            });
        });
    }
    g.bench_function("selfheal_full_snapshot_with_retention", |b| {
        b.iter(|| black_box(take(&m, &store, &gate, SnapshotKind::Full)));
    });
    let mut out = vec![0u8; lz4_flex::block::get_maximum_output_size(CHUNK)];
    g.bench_function("baseline_lz4_compress_only", |b| {
        b.iter(|| {
            counted(&mut cpu_ms[2], || {
                let mut total = 0;
                for chunk in bytes.chunks(CHUNK) {
                    total += lz4_flex::block::compress_into(chunk, &mut out).unwrap();
                }
                black_box(total)
            })
        });
    });
    if cpu_ms.iter().all(|c| c.1 > 0) {
        println!(
            "snapshot_full: CPU per run (mean, 10 ms ticks): selfheal_full_snapshot {:.0} ms, selfheal_full_snapshot_1_thread {:.0} ms, baseline_lz4_compress_only {:.0} ms",
            mean(cpu_ms[0]),
            mean(cpu_ms[1]),
            mean(cpu_ms[2])
        );
    }
    let src = dir.path().join("copy-src");
    std::fs::write(&src, &bytes).unwrap();
    let dst = dir.path().join("copy-dst");
    g.bench_function("baseline_fs_copy", |b| {
        b.iter(|| black_box(std::fs::copy(&src, &dst).unwrap()));
    });
    g.finish();
}

/// Changes 1 % of the pages (spread over the store), noting them dirty.
fn change_one_percent(store: &MemStore, m: &StateSnapshotManager, round: u64) {
    let pages = store.page_count();
    let mut buf = vec![0u8; PAGE];
    for i in 0..pages / 100 {
        let p = (i * 100 + round * 7) % pages;
        semi_compressible_page(round + 1000, PageId(p), &mut buf);
        store.write_page(PageId(p), &buf).unwrap();
        m.note_dirty(PageId(p));
    }
}

fn incremental(c: &mut Criterion) {
    let (store, _dir, m) = setup();
    let gate = WriteGate::new();
    take(&m, &store, &gate, SnapshotKind::Full);
    let mut g = c.benchmark_group("snapshot_incremental_1pct");
    g.sample_size(10)
        .throughput(Throughput::Bytes(store_bytes() as u64));
    let mut round = 0;
    for by_fingerprints in [false, true] {
        let name = if by_fingerprints {
            "by_fingerprints"
        } else {
            "dirty_notices"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    if round % 32 == 0 {
                        // Keep the chain (and the directory) short, untimed.
                        take(&m, &store, &gate, SnapshotKind::Full);
                    }
                    change_one_percent(&store, &m, round);
                    let t = Instant::now();
                    if by_fingerprints {
                        m.take_snapshot(
                            Consistency::View {
                                view: &store,
                                lsn: Lsn(round),
                            },
                            SnapshotRequest::new(SnapshotKind::Incremental),
                        )
                        .unwrap();
                    } else {
                        take(&m, &store, &gate, SnapshotKind::Incremental);
                    }
                    spent += t.elapsed();
                }
                spent
            });
        });
    }
    g.finish();
}

fn restore(c: &mut Criterion) {
    let (store, _dir, m) = setup();
    drop(m);
    let m = SnapshotConfig::new(_dir.path(), PAGE)
        .retention(Retention::KeepAll)
        .build()
        .unwrap();
    let gate = WriteGate::new();
    let id = take(&m, &store, &gate, SnapshotKind::Full);
    let bytes = store.to_bytes();
    let target = MemStore::new(PAGE, store.page_count()).unwrap();
    let mut g = c.benchmark_group("restore_full");
    g.sample_size(10)
        .throughput(Throughput::Bytes(bytes.len() as u64));
    let mut cpu_ms = [(0.0, 0u32); 4];
    g.bench_function("selfheal_restore", |b| {
        b.iter(|| {
            counted(&mut cpu_ms[0], || {
                black_box(m.restore(id, &target).unwrap())
            })
        });
    });
    // One owner per directory: the first manager goes before the second opens it.
    drop(m);
    let one_pass = SnapshotConfig::new(_dir.path(), PAGE)
        .precheck_restore(false)
        .retention(Retention::KeepAll)
        .build()
        .unwrap();
    g.bench_function("selfheal_restore_without_precheck", |b| {
        b.iter(|| {
            counted(&mut cpu_ms[1], || {
                black_box(one_pass.restore(id, &target).unwrap())
            })
        });
    });
    // Into a file: a chunk's pages are one batch of writes, and the
    // restore ends with the target's fsync.
    let file_target =
        selfheal::FileStore::create(_dir.path().join("target"), PAGE, store.page_count()).unwrap();
    g.bench_function("selfheal_restore_without_precheck_into_file_store", |b| {
        b.iter(|| {
            counted(&mut cpu_ms[3], || {
                black_box(one_pass.restore(id, &file_target).unwrap())
            })
        });
    });
    let compressed: Vec<Vec<u8>> = bytes.chunks(CHUNK).map(lz4_flex::block::compress).collect();
    let mut out = vec![0u8; CHUNK];
    g.bench_function("baseline_lz4_decompress_only", |b| {
        b.iter(|| {
            counted(&mut cpu_ms[2], || {
                let mut total = 0;
                for c in &compressed {
                    total += lz4_flex::block::decompress_into(c, &mut out).unwrap();
                }
                black_box(total)
            })
        });
    });
    if cpu_ms.iter().all(|c| c.1 > 0) {
        println!(
            "restore_full: CPU per run (mean, 10 ms ticks): selfheal_restore {:.0} ms, selfheal_restore_without_precheck {:.0} ms, selfheal_restore_without_precheck_into_file_store {:.0} ms, baseline_lz4_decompress_only {:.0} ms",
            mean(cpu_ms[0]),
            mean(cpu_ms[1]),
            mean(cpu_ms[3]),
            mean(cpu_ms[2])
        );
    }
    g.finish();
    // Once more outside the timing, so the check holds when a filter left
    // the restore benches out.
    one_pass.restore(id, &target).unwrap();
    assert!(target.to_bytes() == bytes, "restore must be byte-identical");
}

fn page_sums(c: &mut Criterion) {
    let pages = 256u64;
    let mut bytes = vec![0u8; pages as usize * PAGE];
    for (p, b) in bytes.chunks_exact_mut(PAGE).enumerate() {
        semi_compressible_page(9, PageId(p as u64), b);
    }
    let mut g = c.benchmark_group("page_sum_4k");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("selfheal_page_fingerprint", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for (p, page) in bytes.chunks_exact(PAGE).enumerate() {
                acc ^= page_fingerprint(p as u64, page);
            }
            black_box(acc)
        });
    });
    g.bench_function("baseline_page_crc32", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for (p, page) in bytes.chunks_exact(PAGE).enumerate() {
                acc ^= page_crc(PageId(p as u64), page);
            }
            black_box(acc)
        });
    });
    g.finish();
}

criterion_group!(benches, full, incremental, restore, page_sums);
criterion_main!(benches);
