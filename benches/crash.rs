//! `HeartbeatHandle::beat` cost, from one and two threads, against the
//! alternatives it avoids: reading the clock (`Instant::now`), a
//! mutex-guarded timestamp store, and a contended atomic counter.
//!
//! Run: `cargo bench --bench crash -- --warm-up-time 1 --measurement-time 3`.
//! A live `CrashDetector` with a 1 ms tick runs throughout, so the beat flag
//! is really cleared (and re-set) as in production.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use crossbeam_utils::CachePadded;
use selfheal::crash::{CrashConfig, HeartbeatConfig};

/// Runs `op(thread)` `iters` times on each of two threads started together
/// and returns the longer of the two elapsed times: the per-operation cost
/// of each thread while both run.
fn two_threads(iters: u64, op: &(dyn Fn(usize) + Sync)) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        op(i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}

fn beat(c: &mut Criterion) {
    let detector = CrashConfig::new()
        .heartbeat(
            HeartbeatConfig::new()
                .tick_interval(Duration::from_millis(1))
                .timeout(Duration::from_secs(3600)),
        )
        .build()
        .expect("detector");
    detector.start().expect("start");
    let a = detector.register("a").expect("register");
    let b = detector.register("b").expect("register");
    let handles = [a.clone(), b.clone()];

    let mut g = c.benchmark_group("beat_1_thread");
    g.bench_function("heartbeat_beat", |bench| {
        bench.iter(|| black_box(&a).beat())
    });
    g.bench_function("baseline_instant_now", |bench| {
        bench.iter(|| black_box(Instant::now()))
    });
    let stamp = Mutex::new(Instant::now());
    g.bench_function("baseline_mutex_timestamp", |bench| {
        bench.iter(|| *black_box(&stamp).lock().expect("lock") = Instant::now())
    });
    let counter = CachePadded::new(AtomicU64::new(0));
    g.bench_function("baseline_fetch_add", |bench| {
        bench.iter(|| black_box(&counter).fetch_add(1, Ordering::Relaxed))
    });
    g.finish();

    let mut g = c.benchmark_group("beat_2_threads");
    g.bench_function("heartbeat_beat_own_handles", |bench| {
        bench.iter_custom(|iters| two_threads(iters, &|i| black_box(&handles[i]).beat()))
    });
    g.bench_function("heartbeat_beat_shared_handle", |bench| {
        bench.iter_custom(|iters| two_threads(iters, &|_| black_box(&a).beat()))
    });
    g.bench_function("baseline_mutex_timestamp_shared", |bench| {
        bench.iter_custom(|iters| {
            two_threads(iters, &|_| {
                *black_box(&stamp).lock().expect("lock") = Instant::now()
            })
        })
    });
    g.bench_function("baseline_fetch_add_shared", |bench| {
        bench.iter_custom(|iters| {
            two_threads(iters, &|_| {
                black_box(&counter).fetch_add(1, Ordering::Relaxed);
            })
        })
    });
    g.finish();
    detector.stop().expect("stop");
}

criterion_group!(benches, beat);
criterion_main!(benches);
