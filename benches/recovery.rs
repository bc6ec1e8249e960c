//! The recovery manager's loop against calling the repairer directly.
//!
//! - `recovery_one_page`: a corrupt 4 KiB page found by a verified read,
//!   healed and verified. The baseline `direct` is the failing read,
//!   `DataRepairer::repair_page` and a verified re-read of the page, on the
//!   caller's thread. `manager_on_read_disk` is the [`AutoRecoveryManager`]
//!   with its defaults (audit log on, heal on read on) and its directory on
//!   the temporary directory's disk: the failing read heals the page on the
//!   caller's thread — the incident opened, diagnosed,
//!   `repair-from-replicas`, its verification, its write-ahead audit
//!   records — and returns the good bytes; a sample ends when the read
//!   returns (the incident's close — closing audit records, counts, the
//!   `Healed` event — is recorded off the reader's thread, by the
//!   dispatcher, on the same two cores while the samples run; after each
//!   batch the bench waits until idle, untimed, and checks that every
//!   incident closed healed). `manager_on_read_tmpfs`
//!   is the same with the directory on `/dev/shm` (skipped where there is
//!   none), `manager_on_read_tmpfs_audit_off` without the audit log.
//!   `manager_bus_disk` and `manager_bus_tmpfs` are the background path
//!   (heal on read off): the read fails and reports on the bus, the
//!   dispatcher queues the incident, a recovery thread heals it, and the
//!   sample ends at its `Healed` event. All of them repair the same pages of
//!   a `MemStore` from a `MemStore` replica. Criterion reports means; the
//!   bench keeps every sample itself (`iter_custom`, one incident per
//!   sample, the first 20 dropped as warm-up) and prints the median and the
//!   99th percentile of each and their ratios to the baseline's; it also
//!   takes one baseline sample before each manager sample, interleaved, and
//!   prints the ratios to those (on a shared machine the load moves between
//!   one series and the next; interleaved, both see the same). Targets
//!   (for the path a read takes, `manager_on_read_*`): median ≤ 1.5×,
//!   p99 ≤ 3×. It also prints, from the incidents' own timelines, the
//!   median time from detection until the healer took the incident, and
//!   from then until it closed.
//! - `recovery_burst_10000`: 10 000 pages made corrupt at once, each found
//!   by a verified read; `manager_tmpfs` (heal on read off, so the reads
//!   fail and report on the bus, as a scrub's findings are) heals them all
//!   in the background (default queue of 4 096 open incidents),
//!   `manager_tmpfs_audit_off` without the audit log, `manager_tmpfs_on_read`
//!   with heal on read (each read heals its page before it returns),
//!   against the baseline `repair_all` of the same pages after the same
//!   reads. Page failures that arrive together are healed as page-set
//!   incidents (one incident per set), so a sample ends when
//!   `RecoveryStats::pages_healed` has grown by 10 000 (asked every
//!   millisecond). Throughput in
//!   pages/s; target ≥ 0.8× the baseline's. The
//!   manager's directory is on `/dev/shm` (the bench is skipped where there
//!   is none), so that CI's test-mode run of every bench stays short.
//!
//! Every manager runs with a per-target cooldown of 1 ms (default 10 s), so
//! that the bench may damage a page again in its next round.
//!
//! Run: `cargo bench --bench recovery -- --warm-up-time 1 --measurement-time 3`

// Shared with the other benches; this one prints plain ratios only.
#[allow(dead_code)]
#[path = "common/ratio.rs"]
mod ratio;

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use selfheal::healer::{HealerConfig, Incident, Step};
use selfheal::recovery::Subscription;
use selfheal::repair::RepairConfig;
use selfheal::testing::Damage;
use selfheal::{
    AutoRecoveryManager, ChecksumPlacement, CorruptionConfig, CorruptionDetector, DataRepairer,
    MemStore, PageId, PageStore, RecoveryConfig, RecoveryEvent, StoreReplica,
};

const PS: usize = 4096;
const PAGES: u64 = 1_024;
const BURST: u64 = 10_000;
/// Samples dropped from the front of each series (warm-up).
const WARM_UP_SAMPLES: usize = 20;
/// How often a burst sample asks `stats()` whether its pages are healed:
/// at most this much is added to a sample of 100 ms or more, and each
/// `stats()` counts the open incidents past their RTO under the queue's
/// lock, which the recovery threads then wait for.
const POLL: Duration = Duration::from_millis(1);
/// Fewer samples than this give no percentiles (test mode).
const MIN_SAMPLES: usize = 50;

fn page(p: u64) -> Vec<u8> {
    let mut b = vec![(p % 251) as u8 | 1; PS];
    b[..8].copy_from_slice(&p.to_le_bytes());
    b
}

/// Flips a bit of `p` in `store` (below any detector).
fn damage(store: &MemStore, p: u64) {
    let mut b = vec![0u8; PS];
    store.read_page(PageId(p), &mut b).unwrap();
    Damage::BitFlip { byte: 100, bit: 3 }.apply(&mut b);
    store.write_page(PageId(p), &b).unwrap();
}

/// A verified read that finds the damage (and reports it).
fn read_fails(det: &CorruptionDetector, p: u64) {
    let mut b = vec![0u8; PS];
    assert!(det.read_verified(PageId(p), &mut b).is_err(), "page {p}");
}

/// A verified read that returns the page's good bytes.
fn read_good(det: &CorruptionDetector, p: u64) {
    let mut b = vec![0u8; PS];
    det.read_verified(PageId(p), &mut b)
        .unwrap_or_else(|e| panic!("page {p}: {e}"));
    assert_eq!(b[..8], p.to_le_bytes(), "page {p}");
}

/// `pages` sealed pages in a store, and a mirror of them.
fn stores(pages: u64) -> (Arc<MemStore>, Arc<MemStore>) {
    (
        Arc::new(MemStore::new(PS, pages).unwrap()),
        Arc::new(MemStore::new(PS, pages).unwrap()),
    )
}

fn seal(det: &CorruptionDetector, local: &MemStore, mirror: &MemStore, pages: u64) {
    let mut b = vec![0u8; PS];
    for p in 0..pages {
        det.write_sealed(PageId(p), &mut page(p)).unwrap();
        local.read_page(PageId(p), &mut b).unwrap();
        mirror.write_page(PageId(p), &b).unwrap();
    }
}

/// A started manager over `pages` sealed pages with a mirror replica, its
/// files in `dir`. The per-target cooldown is 1 ms (default 10 s) so that
/// a page may be healed again in the next round of the bench.
fn manager(
    pages: u64,
    dir: &Path,
    audit: bool,
    on_read: bool,
) -> (Arc<MemStore>, AutoRecoveryManager) {
    let (local, mirror) = stores(pages);
    let m = RecoveryConfig::new(local.clone(), dir)
        .replica(Arc::new(StoreReplica::new("mirror", mirror.clone())))
        .without_scrub()
        .healer(HealerConfig::new().cooldown(Duration::from_millis(1)))
        .audit(audit)
        .heal_on_read(on_read)
        .build()
        .unwrap();
    seal(m.detector(), &local, &mirror, pages);
    m.start().unwrap();
    (local, m)
}

/// The baseline: a detector and a repairer over the same kind of stores.
fn direct(pages: u64) -> (Arc<MemStore>, Arc<CorruptionDetector>, DataRepairer) {
    let (local, mirror) = stores(pages);
    let det = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .build(local.clone())
            .unwrap(),
    );
    seal(&det, &local, &mirror, pages);
    let repairer = RepairConfig::new().build(det.clone()).unwrap();
    repairer
        .add_replica(Arc::new(StoreReplica::new("mirror", mirror)))
        .unwrap();
    (local, det, repairer)
}

/// Waits for the next incident to close healed.
fn healed(events: &Subscription) {
    loop {
        match events.events().recv_timeout(Duration::from_secs(30)) {
            Ok(RecoveryEvent::Healed { .. }) => return,
            Ok(RecoveryEvent::Escalated { reason, .. }) => panic!("escalated: {reason}"),
            Ok(_) => {}
            Err(e) => panic!("no Healed event within 30 s: {e}"),
        }
    }
}

fn shm_dir() -> Option<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    shm.is_dir()
        .then(|| tempfile::tempdir_in(shm).ok())
        .flatten()
}

type Samples = Rc<RefCell<Vec<Duration>>>;

/// Median and 99th percentile of `samples` after the warm-up ones.
fn percentiles(samples: &[Duration]) -> Option<(Duration, Duration, usize)> {
    let mut s: Vec<Duration> = samples.iter().skip(WARM_UP_SAMPLES).copied().collect();
    if s.len() < MIN_SAMPLES {
        return None;
    }
    s.sort_unstable();
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    Some((at(0.5), at(0.99), s.len()))
}

fn one_page(c: &mut Criterion) {
    let mut g = c.benchmark_group("recovery_one_page");
    g.throughput(Throughput::Elements(1));
    let mut series: Vec<(&str, Samples)> = Vec::new();
    // Per manager variant, baseline samples taken interleaved with its own
    // (one before each), so that both see the same load.
    let mut paired: Vec<(&str, Samples)> = Vec::new();

    let direct_samples = Samples::default();
    let (dlocal, ddet, drepairer) = direct(PAGES);
    let mut dnext = 0u64;
    // One sample of the baseline: damage, failing read, repair, re-read.
    let mut direct_once = || {
        let p = dnext % PAGES;
        dnext += 1;
        damage(&dlocal, p);
        let t = Instant::now();
        read_fails(&ddet, p);
        assert!(drepairer.repair_page(PageId(p)).unwrap().is_repaired());
        read_good(&ddet, p);
        t.elapsed()
    };
    {
        let s = direct_samples.clone();
        g.bench_function("direct", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let d = direct_once();
                    s.borrow_mut().push(d);
                    total += d;
                }
                total
            });
        });
    }
    series.push(("direct", direct_samples.clone()));

    let disk = tempfile::tempdir().unwrap();
    let shm = shm_dir();
    let shm_path = shm.as_ref().map(|d| d.path());
    let variants: Vec<(&str, &Path, bool, bool)> = [
        ("manager_on_read_disk", Some(disk.path()), true, true),
        ("manager_on_read_tmpfs", shm_path, true, true),
        ("manager_on_read_tmpfs_audit_off", shm_path, false, true),
        ("manager_bus_disk", Some(disk.path()), true, false),
        ("manager_bus_tmpfs", shm_path, true, false),
    ]
    .into_iter()
    .filter_map(|(n, d, audit, on_read)| d.map(|d| (n, d, audit, on_read)))
    .collect();
    for (name, dir, audit, on_read) in variants {
        let dir = tempfile::tempdir_in(dir).unwrap();
        let (local, m) = manager(PAGES, dir.path(), audit, on_read);
        let events = m.subscribe(1_024).unwrap();
        let mut next = 0u64;
        let s = Samples::default();
        let s2 = s.clone();
        let d = Samples::default();
        let d2 = d.clone();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let before = m.stats();
                for _ in 0..iters {
                    d2.borrow_mut().push(direct_once());
                    let p = next % PAGES;
                    next += 1;
                    damage(&local, p);
                    let t = Instant::now();
                    let d = if on_read {
                        // The read returns the healed, verified page: that
                        // is the latency a reader sees. The incident's
                        // close is recorded by the dispatcher meanwhile, on
                        // the same cores (checked after the batch).
                        read_good(m.detector(), p);
                        t.elapsed()
                    } else {
                        read_fails(m.detector(), p);
                        healed(&events);
                        t.elapsed()
                    };
                    s2.borrow_mut().push(d);
                    total += d;
                }
                if on_read {
                    // Every incident of the batch closed healed (untimed).
                    assert!(m.wait_idle(Duration::from_secs(30)));
                    let after = m.stats();
                    assert_eq!(after.recovered - before.recovered, iters, "{after:?}");
                    assert_eq!(after.escalated, before.escalated, "{after:?}");
                }
                total
            });
        });
        breakdown(name, &m.incidents());
        m.stop().unwrap();
        series.push((name, s));
        paired.push((name, d));
    }
    g.finish();

    let base = percentiles(&direct_samples.borrow());
    for (name, s) in &series {
        let Some((med, p99, n)) = percentiles(&s.borrow()) else {
            eprintln!(
                "recovery_one_page/{name}: {} samples, too few for percentiles (test mode?)",
                s.borrow().len()
            );
            continue;
        };
        eprint!("recovery_one_page/{name}: median {med:.1?}, p99 {p99:.1?} ({n} samples)");
        match base {
            Some((bmed, bp99, _)) if *name != "direct" => eprintln!(
                "; vs direct: median {:.2}× (target ≤ 1.5), p99 {:.2}× (target ≤ 3)",
                med.as_secs_f64() / bmed.as_secs_f64(),
                p99.as_secs_f64() / bp99.as_secs_f64()
            ),
            _ => eprintln!(),
        }
    }
    for ((name, s), (_, d)) in series.iter().skip(1).zip(&paired) {
        if let (Some((med, p99, _)), Some((dmed, dp99, n))) =
            (percentiles(&s.borrow()), percentiles(&d.borrow()))
        {
            eprintln!(
                "recovery_one_page/{name}: vs direct interleaved with it ({n} samples, median {dmed:.1?}, p99 {dp99:.1?}): median {:.2}× (target ≤ 1.5), p99 {:.2}× (target ≤ 3)",
                med.as_secs_f64() / dmed.as_secs_f64(),
                p99.as_secs_f64() / dp99.as_secs_f64()
            );
        }
    }
}

/// Where a manager's incidents spent their time, by their own timelines
/// (the manager's clock): from detection until a recovery thread took the
/// incident (the bus, the dispatcher, the queue), and from then until it
/// was closed (the healer: diagnosis, the remedy, its verification, the
/// learned record and the audit log).
fn breakdown(name: &str, incidents: &[Incident]) {
    let mut queued = Vec::new();
    let mut healing = Vec::new();
    for inc in incidents {
        let started = inc.timeline.iter().find(|e| e.step == Step::Started);
        if let (Some(s), Some(c)) = (started, inc.closed_ns()) {
            queued.push(s.at_ns.saturating_sub(inc.detected_ns()));
            healing.push(c.saturating_sub(s.at_ns));
        }
    }
    let median = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v.get(v.len() / 2)
            .map_or(Duration::ZERO, |&ns| Duration::from_nanos(ns))
    };
    if !queued.is_empty() {
        eprintln!(
            "recovery_one_page/{name}: of the last {} incidents, median detected → started {:.1?}, started → closed {:.1?}",
            queued.len(),
            median(&mut queued),
            median(&mut healing)
        );
    }
}

fn burst(c: &mut Criterion) {
    let Some(shm) = shm_dir() else {
        eprintln!("recovery_burst_10000: skipped, no /dev/shm for the manager's files");
        return;
    };
    let since = SystemTime::now();
    let mut g = c.benchmark_group("recovery_burst_10000");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BURST));
    {
        let (local, det, repairer) = direct(BURST);
        g.bench_function("repair_all", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for p in 0..BURST {
                        damage(&local, p);
                    }
                    let t = Instant::now();
                    for p in 0..BURST {
                        read_fails(&det, p);
                    }
                    let reports = repairer.repair_all();
                    total += t.elapsed();
                    assert_eq!(
                        reports.iter().filter(|r| r.is_repaired()).count() as u64,
                        BURST
                    );
                }
                total
            });
        });
    }
    for (name, audit, on_read) in [
        ("manager_tmpfs", true, false),
        ("manager_tmpfs_audit_off", false, false),
        ("manager_tmpfs_on_read", true, true),
    ] {
        let dir = tempfile::tempdir_in(shm.path()).unwrap();
        let (local, m) = manager(BURST, dir.path(), audit, on_read);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for p in 0..BURST {
                        damage(&local, p);
                    }
                    let before = m.stats().pages_healed;
                    let t = Instant::now();
                    for p in 0..BURST {
                        if on_read {
                            read_good(m.detector(), p);
                        } else {
                            read_fails(m.detector(), p);
                        }
                    }
                    let deadline = Instant::now() + Duration::from_secs(600);
                    while m.stats().pages_healed - before < BURST {
                        assert!(Instant::now() < deadline, "{:?}", m.stats());
                        std::thread::sleep(POLL);
                    }
                    total += t.elapsed();
                    assert!(m.wait_idle(Duration::from_secs(30)));
                }
                total
            });
        });
        let s = m.stats();
        eprintln!(
            "recovery_burst_10000/{name}: {} overflowed, {} rescans so far",
            s.overflowed, s.rescans
        );
        m.stop().unwrap();
    }
    g.finish();
    ratio::report(
        since,
        &[
            (
                "burst pages/s, manager vs repair_all",
                "recovery_burst_10000/repair_all",
                "recovery_burst_10000/manager_tmpfs",
                "target ≥ 0.8",
            ),
            (
                "burst pages/s, manager without audit log vs repair_all",
                "recovery_burst_10000/repair_all",
                "recovery_burst_10000/manager_tmpfs_audit_off",
                "for the audit log's share",
            ),
            (
                "burst pages/s, manager healing on read vs repair_all",
                "recovery_burst_10000/repair_all",
                "recovery_burst_10000/manager_tmpfs_on_read",
                "each read heals its page",
            ),
        ],
    );
}

criterion_group!(benches, one_page, burst);
criterion_main!(benches);
