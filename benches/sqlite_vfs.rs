//! The cost of the selfheal SQLite VFS, against SQLite's default VFS in the
//! same run, over the same database (20 000 rows, two indexes, 4 KiB pages,
//! rollback journal, `synchronous = FULL`, files in the OS page cache):
//!
//! - `read`: a new connection (a cold SQLite page cache) answering 200
//!   point lookups by primary key and 200 through an index. Target: the
//!   selfheal VFS takes at most 1.15× the default VFS's time.
//! - `write`: one transaction updating 20 rows at random, committed.
//!   Target: at most 1.25×.
//!
//! The bench prints the ratios (`ratio …` lines) after a measured run: of
//! criterion's means, each side measured in its own series, and of the
//! medians of `read/interleaved` and `write/interleaved`, which time the two
//! sides in turn (which goes first alternates), so that both see the same
//! load and the same state of the disk's cache (on a shared machine the
//! load moves between one series and the next, and an fsync's cost with
//! it). A `write/interleaved` sample is a block of 16 commits of one side,
//! back to back, as under a sustained load (the selfheal VFS's settles are
//! then carried by each next commit's intents); each block is followed by
//! an untimed pause — 80 ms after a selfheal block, longer than its settle
//! thread's 50 ms delay and flush, 3 ms after a default one — so that no
//! block pays for the other side's background work (the settle flush after
//! a selfheal block's last commit, one in 16 commits, is then charged to
//! neither side). The interleaved lines give the ratio of the medians and
//! of the means.
//!
//! Run: `cargo bench --features sqlite --bench sqlite_vfs -- --warm-up-time 1 --measurement-time 3`
//! (every row); the README's figures: `… --measurement-time 8 interleaved`.

#[allow(dead_code)]
#[path = "common/ratio.rs"]
mod ratio;

use std::cell::RefCell;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rusqlite::{params, Connection, OpenFlags};
use selfheal::sqlite::{self, SqliteConfig};

const ROWS: i64 = 20_000;

fn build(path: &Path) {
    let c = Connection::open(path).expect("open");
    c.execute_batch(
        "PRAGMA page_size = 4096; PRAGMA journal_mode = DELETE;
         CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL);
         CREATE INDEX items_name ON items(name);",
    )
    .expect("schema");
    let tx = c.unchecked_transaction().expect("begin");
    for id in 0..ROWS {
        tx.execute(
            "INSERT INTO items(id, name, qty) VALUES (?1, ?2, ?3)",
            params![id, format!("name-{:08}", id * 7_919 % 1_000_003), id % 100],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
}

fn open(path: &Path, vfs: &str) -> Connection {
    let c = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs).expect("open");
    c.execute_batch("PRAGMA synchronous = FULL")
        .expect("pragma");
    c
}

/// 200 lookups by id and 200 by name on a new connection.
fn reads(path: &Path, vfs: &str, seed: &mut u64) -> i64 {
    let c = open(path, vfs);
    let mut sum = 0;
    let mut by_id = c
        .prepare("SELECT qty FROM items WHERE id = ?1")
        .expect("prepare");
    let mut by_name = c
        .prepare("SELECT qty FROM items WHERE name = ?1")
        .expect("prepare");
    for _ in 0..200 {
        *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let id = (*seed >> 33) as i64 % ROWS;
        sum += by_id
            .query_row([id], |r| r.get::<_, i64>(0))
            .expect("by id");
        let name = format!("name-{:08}", id * 7_919 % 1_000_003);
        sum += by_name
            .query_row([name], |r| r.get::<_, i64>(0))
            .expect("by name");
    }
    sum
}

/// One transaction updating 20 random rows.
fn writes(c: &Connection, seed: &mut u64) {
    let tx = c.unchecked_transaction().expect("begin");
    for _ in 0..20 {
        *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let id = (*seed >> 33) as i64 % ROWS;
        tx.execute("UPDATE items SET qty = qty + 1 WHERE id = ?1", [id])
            .expect("update");
    }
    tx.commit().expect("commit");
}

/// Pairs of samples (default VFS, selfheal VFS) taken in turn, each the
/// time of one iteration (the mean over its block).
type Pairs = RefCell<Vec<(Duration, Duration)>>;

/// Fewer pairs than this give no median (test mode).
const MIN_PAIRS: usize = 30;

/// Iterations of one side timed back to back in a `write/interleaved`
/// sample: a commit's background work (the settle thread's fsync) then
/// overlaps the same side's next commit, as under a sustained load.
const WRITE_BLOCK: u32 = 16;

/// The untimed pause after each block of selfheal writes: longer than the
/// settle delay (50 ms) and its fsync, so that the settle thread's flush
/// after the block's last commit lands in the pause and no default block
/// pays for it (that one flush per block goes uncharged to either side;
/// the flushes within a block are the block's own).
const WRITE_PAUSE_SELFHEAL: Duration = Duration::from_millis(80);

/// The untimed pause after each block of default writes.
const WRITE_PAUSE_DEFAULT: Duration = Duration::from_millis(3);

/// Times `block` iterations of `default`, then `block` of `selfheal`
/// (pausing, untimed, `pauses.0` after a default block and `pauses.1`
/// after a selfheal one), `iters` times, keeping each pair of
/// per-iteration means. The side that goes first alternates, so that
/// neither always follows the other.
fn interleave(
    pairs: &Pairs,
    iters: u64,
    block: u32,
    pauses: (Duration, Duration),
    mut default: impl FnMut(),
    mut selfheal: impl FnMut(),
) -> Duration {
    let timed = |f: &mut dyn FnMut(), pause: Duration| {
        let t = Instant::now();
        for _ in 0..block {
            f();
        }
        let d = t.elapsed();
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        d
    };
    let mut total = Duration::ZERO;
    for i in 0..iters {
        let (d, s) = if i % 2 == 0 {
            let d = timed(&mut default, pauses.0);
            (d, timed(&mut selfheal, pauses.1))
        } else {
            let s = timed(&mut selfheal, pauses.1);
            (timed(&mut default, pauses.0), s)
        };
        pairs.borrow_mut().push((d / block, s / block));
        total += d + s;
    }
    total
}

/// Prints the medians of the interleaved pairs and their ratio.
fn report_pairs(name: &str, pairs: &Pairs, target: &str) {
    let pairs = pairs.borrow();
    if pairs.len() < MIN_PAIRS {
        return;
    }
    let median = |mut v: Vec<Duration>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let d = median(pairs.iter().map(|p| p.0).collect());
    let s = median(pairs.iter().map(|p| p.1).collect());
    let n = pairs.len() as u32;
    let d_mean = pairs.iter().map(|p| p.0).sum::<Duration>() / n;
    let s_mean = pairs.iter().map(|p| p.1).sum::<Duration>() / n;
    eprintln!(
        "ratio {name} interleaved ({n} pairs): median selfheal {s:.1?} / median default {d:.1?} = {:.3} ({target}); means {s_mean:.1?} / {d_mean:.1?} = {:.3}",
        s.as_secs_f64() / d.as_secs_f64(),
        s_mean.as_secs_f64() / d_mean.as_secs_f64()
    );
}

fn bench(c: &mut Criterion) {
    let since = std::time::SystemTime::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("plain.db");
    let healed = dir.path().join("healed.db");
    build(&plain);
    std::fs::copy(&plain, &healed).expect("copy");
    let vfs = sqlite::register("selfheal-bench", SqliteConfig::new()).expect("register");
    // Keeps the selfheal database open (adopted once, here) between iterations.
    let _holder = open(&healed, vfs.name());
    let default_vfs = "unix";

    let mut g = c.benchmark_group("sqlite_vfs");
    let mut seed = 1u64;
    g.bench_function("read/default_vfs", |b| {
        b.iter(|| black_box(reads(&plain, default_vfs, &mut seed)))
    });
    g.bench_function("read/selfheal_vfs", |b| {
        b.iter(|| black_box(reads(&healed, vfs.name(), &mut seed)))
    });
    let plain_conn = open(&plain, default_vfs);
    g.bench_function("write/default_vfs", |b| {
        b.iter(|| writes(&plain_conn, &mut seed))
    });
    let healed_conn = open(&healed, vfs.name());
    g.bench_function("write/selfheal_vfs", |b| {
        b.iter(|| writes(&healed_conn, &mut seed))
    });
    let read_pairs = Pairs::default();
    let mut seed_b = seed;
    g.bench_function("read/interleaved", |b| {
        b.iter_custom(|iters| {
            interleave(
                &read_pairs,
                iters,
                1,
                (Duration::ZERO, Duration::ZERO),
                || {
                    black_box(reads(&plain, default_vfs, &mut seed));
                },
                || {
                    black_box(reads(&healed, vfs.name(), &mut seed_b));
                },
            )
        })
    });
    let write_pairs = Pairs::default();
    g.bench_function("write/interleaved", |b| {
        b.iter_custom(|iters| {
            interleave(
                &write_pairs,
                iters,
                WRITE_BLOCK,
                (WRITE_PAUSE_DEFAULT, WRITE_PAUSE_SELFHEAL),
                || writes(&plain_conn, &mut seed),
                || writes(&healed_conn, &mut seed_b),
            )
        })
    });
    g.finish();
    assert_eq!(vfs.stats().unhealed, 0);
    ratio::report(
        since,
        &[
            (
                "read overhead",
                "sqlite_vfs/read_selfheal_vfs",
                "sqlite_vfs/read_default_vfs",
                "target ≤ 1.15",
            ),
            (
                "write overhead",
                "sqlite_vfs/write_selfheal_vfs",
                "sqlite_vfs/write_default_vfs",
                "target ≤ 1.25",
            ),
        ],
    );
    report_pairs("read overhead", &read_pairs, "target ≤ 1.15");
    report_pairs("write overhead", &write_pairs, "target ≤ 1.25");
}

criterion_group!(benches, bench);
criterion_main!(benches);
