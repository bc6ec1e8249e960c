//! Goal: no page stays `Repairing` and no repair waits forever: every call
//! into a replica (status, page read, range digest) or a fallback source has
//! a deadline, and one that hangs or panics is skipped, costs one deadline,
//! and is not called again while the abandoned call hangs; a repair that
//! unwinds gives its page back for the next repair; only a replica that
//! declares its calls inline goes without a deadline (its panics are still
//! caught), and a wrapper that may hang never does. Method: `FaultyReplica`
//! and `FaultySource` hang and panic faults, a panicking page-LSN reader,
//! real detectors under both checksum placements, each call bounded by a
//! watchdog so that a hang fails the test instead of stalling it.

mod repair_common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};

use repair_common::{fence, lsn_reader, within, Cluster, StoreSource, PS};
use selfheal::corruption::PageState;
use selfheal::repair::{AttemptResult, CopySource, RepairConfig, RepairOutcome};
use selfheal::testing::{both_placements, Damage, FaultyReplica, FaultySource, ReplicaCall};
use selfheal::{CorruptionConfig, Error, Lsn, PageId, ReplicaId};

const TIMEOUT: Duration = Duration::from_millis(200);
/// Generous: the machine may be loaded; the point is "not forever".
const WATCHDOG: Duration = Duration::from_secs(30);

#[test]
fn a_hung_replica_is_abandoned_at_the_deadline_and_skipped_by_the_next_repair() {
    for (_, placement) in both_placements(PS) {
        let c = Cluster::new(placement, 4, 2);
        let det = c.detector(None);
        for p in 0..4 {
            c.write(&det, p, p + 1, 0x40 + p as u8, &[0, 1]);
        }
        let hung = Arc::new(FaultyReplica::new(Arc::new(c.replica(0))));
        hung.set_hang(true);
        let rep = Arc::new(
            RepairConfig::new()
                .replica_read_timeout(TIMEOUT)
                .build(det.clone())
                .unwrap(),
        );
        rep.add_replica(hung.clone()).unwrap();
        rep.add_replica(Arc::new(c.replica(1))).unwrap();
        for p in [1, 2] {
            c.raw.damage(PageId(p), Damage::Zero).unwrap();
            fence(&det, p);
        }

        let started = Instant::now();
        let first = {
            let rep = rep.clone();
            within(WATCHDOG, move || rep.repair_page(PageId(1)).unwrap())
        };
        let took = started.elapsed();
        assert_eq!(
            first.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("m1"))
            },
            "{:?}",
            first.attempts
        );
        assert!(took >= TIMEOUT, "it waited for the deadline ({took:?})");
        assert!(
            matches!(&first.attempts[0].result,
                AttemptResult::Unavailable(Error::ReplicaUnavailable { reason, .. }) if reason.contains("deadline")),
            "{:?}",
            first.attempts[0].result
        );
        assert_eq!(det.page_state(PageId(1)), Some(PageState::Repaired));
        assert_eq!(c.local(1), c.current(1));

        // The read is still hung: the next repair does not wait for it, does
        // not start another read of the hung replica, and uses the other one.
        let started = Instant::now();
        let second = {
            let rep = rep.clone();
            within(WATCHDOG, move || rep.repair_page(PageId(2)).unwrap())
        };
        assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
        assert_eq!(
            second.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("m1"))
            }
        );
        assert!(matches!(
            second.attempts.last().map(|a| &a.result),
            Some(AttemptResult::Unavailable(_))
        ));
        assert_eq!(hung.reads(), 1, "no second read of a hung replica");
        assert_eq!(hung.hung_reads(), 1);
        let s = &rep.stats().replicas[0];
        assert_eq!((s.timed_out, s.unavailable), (1, 2));
        hung.set_hang(false);
    }
}

#[test]
fn a_panicking_replica_is_skipped_and_the_page_does_not_stay_repairing() {
    for (_, placement) in both_placements(PS) {
        let c = Cluster::new(placement, 4, 2);
        let det = c.detector(None);
        for p in 0..4 {
            c.write(&det, p, p + 1, 0x50 + p as u8, &[0, 1]);
        }
        let panicky = Arc::new(FaultyReplica::new(Arc::new(c.replica(0))));
        panicky.set_panic(true);
        // A panic answers at once; the deadline is generous because printing
        // the panic's backtrace may take a while on a loaded machine.
        let rep = RepairConfig::new()
            .replica_read_timeout(Duration::from_secs(60))
            .build(det.clone())
            .unwrap();
        rep.add_replica(panicky.clone()).unwrap();
        rep.add_replica(Arc::new(c.replica(1))).unwrap();
        c.raw.damage(PageId(3), Damage::Junk { seed: 3 }).unwrap();
        fence(&det, 3);
        let report = catch_unwind(AssertUnwindSafe(|| rep.repair_page(PageId(3))))
            .expect("a replica's panic must not unwind through the repair")
            .unwrap();
        assert_ne!(det.page_state(PageId(3)), Some(PageState::Repairing));
        assert_eq!(
            report.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("m1"))
            }
        );
        assert!(
            matches!(&report.attempts[0].result,
                AttemptResult::Unavailable(Error::ReplicaUnavailable { reason, .. }) if reason.contains("panicked")),
            "{:?}",
            report.attempts[0].result
        );
        assert_eq!(c.local(3), c.current(3));
    }
}

fn unavailable_because(result: &AttemptResult, words: &str) -> bool {
    match result {
        AttemptResult::Unavailable(e) => e.is_retryable() && e.to_string().contains(words),
        _ => false,
    }
}

#[test]
fn a_replica_whose_status_hangs_costs_one_deadline_and_is_not_asked_again_while_it_hangs() {
    for (_, placement) in both_placements(PS) {
        let c = Cluster::new(placement, 4, 2);
        let det = c.detector(None);
        for p in 0..4 {
            c.write(&det, p, p + 1, 0x70 + p as u8, &[0, 1]);
        }
        let hung = Arc::new(FaultyReplica::new(Arc::new(c.replica(0))));
        hung.set_hang_on(ReplicaCall::Status, true);
        let rep = Arc::new(
            RepairConfig::new()
                .replica_read_timeout(TIMEOUT)
                .replica_cooloff(Duration::ZERO)
                .build(det.clone())
                .unwrap(),
        );
        rep.add_replica(hung.clone()).unwrap();
        rep.add_replica(Arc::new(c.replica(1))).unwrap();
        for p in [1, 2, 3] {
            c.raw.damage(PageId(p), Damage::Junk { seed: p }).unwrap();
            fence(&det, p);
        }

        let started = Instant::now();
        let first = {
            let rep = rep.clone();
            within(WATCHDOG, move || rep.repair_page(PageId(1)).unwrap())
        };
        assert!(started.elapsed() >= TIMEOUT, "{:?}", started.elapsed());
        assert_eq!(
            first.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("m1"))
            },
            "{:?}",
            first.attempts
        );
        let skipped = first
            .attempts
            .iter()
            .find(|a| a.source == CopySource::Replica(ReplicaId::new("m0")))
            .expect("the hung replica is reported");
        assert!(
            unavailable_because(&skipped.result, "deadline"),
            "{:?}",
            skipped.result
        );
        assert_eq!(c.local(1), c.current(1));
        let s = &rep.stats().replicas[0];
        assert_eq!((s.timed_out, s.unavailable), (1, 1));

        // Still hung: the next repair does not wait and does not call it again.
        let started = Instant::now();
        let second = {
            let rep = rep.clone();
            within(WATCHDOG, move || rep.repair_page(PageId(2)).unwrap())
        };
        assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
        assert!(second.is_repaired(), "{:?}", second.attempts);
        assert!(second
            .attempts
            .iter()
            .any(|a| unavailable_because(&a.result, "has not returned")));
        assert_eq!(
            hung.calls(ReplicaCall::Status),
            1,
            "one abandoned call at most"
        );
        assert_eq!(hung.hung_calls(ReplicaCall::Status), 1);

        // Released (and no cool-off): it is asked again.
        hung.set_hang_on(ReplicaCall::Status, false);
        let waited = Instant::now();
        while hung.hung_calls(ReplicaCall::Status) > 0 {
            assert!(waited.elapsed() < WATCHDOG);
            std::thread::yield_now();
        }
        let third = {
            let rep = rep.clone();
            within(WATCHDOG, move || {
                // The helper may take a moment to see the call returned.
                loop {
                    let r = rep.repair_page(PageId(3)).unwrap();
                    if r.is_repaired() {
                        return r;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        assert!(third.is_repaired());
        assert!(
            hung.calls(ReplicaCall::Status) >= 2,
            "asked again once it returned"
        );
    }
}

#[test]
fn anti_entropy_with_a_replica_whose_status_or_digest_hangs_ends_at_the_deadline() {
    for (_, placement) in both_placements(PS) {
        for call in [ReplicaCall::Status, ReplicaCall::Digest] {
            let c = Cluster::new(placement.clone(), 4, 1);
            let det = c.detector(None);
            for p in 0..4 {
                c.write(&det, p, p + 1, 0x80 + p as u8, &[0]);
            }
            let hung = Arc::new(FaultyReplica::new(Arc::new(c.replica(0))));
            hung.set_hang_on(call, true);
            let rep = Arc::new(
                RepairConfig::new()
                    .replica_read_timeout(TIMEOUT)
                    .build(det.clone())
                    .unwrap(),
            );
            rep.add_replica(hung.clone()).unwrap();
            let id = ReplicaId::new("m0");

            let started = Instant::now();
            let err = {
                let (rep, id) = (rep.clone(), id.clone());
                within(WATCHDOG, move || {
                    rep.anti_entropy(&id, 0..4, 1).unwrap_err()
                })
            };
            assert!(
                started.elapsed() >= TIMEOUT,
                "{call:?}: {:?}",
                started.elapsed()
            );
            assert!(
                matches!(&err, Error::ReplicaUnavailable { reason, .. } if reason.contains("deadline")),
                "{call:?}: {err}"
            );
            let s = &rep.stats().replicas[0];
            assert_eq!((s.timed_out, s.unavailable), (1, 1), "{call:?}");

            // Still hung: the next run gives up at once without calling it.
            let started = Instant::now();
            let err = {
                let (rep, id) = (rep.clone(), id.clone());
                within(WATCHDOG, move || {
                    rep.anti_entropy(&id, 0..4, 1).unwrap_err()
                })
            };
            assert!(
                started.elapsed() < TIMEOUT,
                "{call:?}: {:?}",
                started.elapsed()
            );
            assert!(err.is_retryable(), "{call:?}: {err}");
            assert_eq!(hung.calls(call), 1, "{call:?}: one abandoned call at most");
            hung.set_hang_on(call, false);
        }
    }
}

#[test]
fn a_hung_fallback_costs_one_deadline_and_is_not_asked_again_while_it_hangs() {
    for (_, placement) in both_placements(PS) {
        let c = Cluster::new(placement, 4, 0);
        let det = c.detector(None);
        for p in 0..4 {
            c.write(&det, p, p + 1, 0x90 + p as u8, &[]);
        }
        let hung = Arc::new(FaultySource::new(Arc::new(StoreSource::current(
            "slow", &c,
        ))));
        hung.set_hang(true);
        let rep = Arc::new(
            RepairConfig::new()
                .replica_read_timeout(TIMEOUT)
                .build(det.clone())
                .unwrap(),
        );
        rep.add_fallback(hung.clone()).unwrap();
        rep.add_fallback(Arc::new(StoreSource::current("backup", &c)))
            .unwrap();
        for p in [1, 2] {
            c.raw.damage(PageId(p), Damage::Zero).unwrap();
            fence(&det, p);
        }

        let started = Instant::now();
        let first = {
            let rep = rep.clone();
            within(WATCHDOG, move || rep.repair_page(PageId(1)).unwrap())
        };
        assert!(started.elapsed() >= TIMEOUT, "{:?}", started.elapsed());
        assert_eq!(
            first.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Fallback("backup".into())
            },
            "{:?}",
            first.attempts
        );
        assert_eq!(
            first.attempts[0].source,
            CopySource::Fallback("slow".into())
        );
        assert!(
            unavailable_because(&first.attempts[0].result, "deadline"),
            "{:?}",
            first.attempts[0].result
        );
        assert_eq!(c.local(1), c.current(1));

        let started = Instant::now();
        let second = {
            let rep = rep.clone();
            within(WATCHDOG, move || rep.repair_page(PageId(2)).unwrap())
        };
        assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
        assert!(second.is_repaired(), "{:?}", second.attempts);
        assert!(unavailable_because(
            &second.attempts[0].result,
            "has not returned"
        ));
        assert_eq!(hung.reads(), 1, "one abandoned call at most");
        assert_eq!(hung.hung_reads(), 1);
        let s = &rep.stats().fallbacks;
        assert_eq!(s[0].source, "slow");
        assert_eq!((s[0].timed_out, s[0].unavailable), (1, 2));
        assert_eq!((s[1].source.as_str(), s[1].used), ("backup", 2));
        hung.set_hang(false);
    }
}

#[test]
fn a_panicking_fallback_is_skipped_and_the_page_does_not_stay_repairing() {
    for (_, placement) in both_placements(PS) {
        let c = Cluster::new(placement, 4, 0);
        let det = c.detector(None);
        for p in 0..4 {
            c.write(&det, p, p + 1, 0xA0 + p as u8, &[]);
        }
        let panicky = Arc::new(FaultySource::new(Arc::new(StoreSource::current(
            "buggy", &c,
        ))));
        panicky.set_panic(true);
        // Generous: printing the panic's backtrace may take a while.
        let rep = RepairConfig::new()
            .replica_read_timeout(Duration::from_secs(60))
            .build(det.clone())
            .unwrap();
        rep.add_fallback(panicky.clone()).unwrap();
        rep.add_fallback(Arc::new(StoreSource::current("backup", &c)))
            .unwrap();
        c.raw.damage(PageId(3), Damage::Zero).unwrap();
        fence(&det, 3);
        let report = catch_unwind(AssertUnwindSafe(|| rep.repair_page(PageId(3))))
            .expect("a fallback's panic must not unwind through the repair")
            .unwrap();
        assert_eq!(
            report.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Fallback("backup".into())
            },
            "{:?}",
            report.attempts
        );
        assert!(
            unavailable_because(&report.attempts[0].result, "panicked"),
            "{:?}",
            report.attempts[0].result
        );
        assert_eq!(det.page_state(PageId(3)), Some(PageState::Repaired));
        assert_eq!(c.local(3), c.current(3));
    }
}

#[test]
fn a_repair_that_unwinds_gives_the_page_back_for_the_next_repair() {
    for (_, placement) in both_placements(PS) {
        let c = Cluster::new(placement.clone(), 4, 1);
        // A page-LSN reader (host code, called on the repairing thread) that
        // panics on the replica's copy of page 0 once armed.
        let armed = Arc::new(AtomicBool::new(false));
        let reader = {
            let armed = armed.clone();
            let inner = lsn_reader();
            Arc::new(move |b: &[u8]| {
                let lsn = inner(b);
                assert!(
                    !(armed.load(Ordering::SeqCst) && lsn == Some(Lsn(0xDEAD))),
                    "page-LSN reader panicked (injected)"
                );
                lsn
            })
        };
        let det = Arc::new(
            CorruptionConfig::new(placement)
                .page_lsn(reader)
                .build(c.raw.clone())
                .unwrap(),
        );
        for p in 0..4 {
            c.write(&det, p, 0xDEAD, 0x60 + p as u8, &[0]);
        }
        let rep = RepairConfig::new().build(det.clone()).unwrap();
        rep.add_replica(Arc::new(c.replica(0))).unwrap();
        c.raw.damage(PageId(0), Damage::Zero).unwrap();
        fence(&det, 0);
        armed.store(true, Ordering::SeqCst);
        let unwound = catch_unwind(AssertUnwindSafe(|| rep.repair_page(PageId(0))));
        assert!(unwound.is_err(), "the host's panic reaches its caller");
        armed.store(false, Ordering::SeqCst);
        assert_eq!(
            det.page_state(PageId(0)),
            Some(PageState::Suspect),
            "the page waits for repair again"
        );
        let mut b = vec![0u8; PS];
        assert!(matches!(
            det.read_verified(PageId(0), &mut b),
            Err(Error::PageFenced { .. })
        ));
        // The next repair picks it up as a pending page.
        let reports = rep.repair_pending();
        assert_eq!(reports.len(), 1);
        assert!(reports[0].is_repaired(), "{:?}", reports[0].outcome);
        det.read_verified(PageId(0), &mut b).unwrap();
        assert_eq!(b, c.current(0));
    }
}

// ---- replicas that may be called inline ---------------------------------------

#[test]
fn a_replica_that_may_hang_keeps_its_deadline_even_over_one_that_may_be_called_inline() {
    for (_, placement) in both_placements(PS) {
        let c = Cluster::new(placement, 4, 2);
        let det = c.detector(None);
        for p in 0..4 {
            c.write(&det, p, p + 1, 0x60 + p as u8, &[0, 1]);
        }
        // The fault injector can hang whatever it wraps: never inline.
        let hung = Arc::new(FaultyReplica::new(Arc::new(c.replica(0).call_inline(true))));
        assert!(!selfheal::Replica::may_call_inline(hung.as_ref()));
        hung.set_hang(true);
        let rep = Arc::new(
            RepairConfig::new()
                .replica_read_timeout(TIMEOUT)
                .build(det.clone())
                .unwrap(),
        );
        rep.add_replica(hung.clone()).unwrap();
        rep.add_replica(Arc::new(c.replica(1).call_inline(true)))
            .unwrap();
        c.raw.damage(PageId(1), Damage::Zero).unwrap();
        fence(&det, 1);
        let report = {
            let rep = rep.clone();
            within(WATCHDOG, move || rep.repair_page(PageId(1)).unwrap())
        };
        assert_eq!(
            report.outcome,
            RepairOutcome::Repaired {
                source: CopySource::Replica(ReplicaId::new("m1"))
            },
            "{:?}",
            report.attempts
        );
        assert!(unavailable_because(&report.attempts[0].result, "deadline"));
        assert_eq!(c.local(1), c.current(1));
        hung.set_hang(false);
    }
}

/// A replica over a mirror that may be called inline, noting the thread of
/// each read, and panicking while told to.
#[derive(Debug)]
struct InlineProbe {
    inner: selfheal::StoreReplica,
    panics: AtomicBool,
    threads: parking_lot::Mutex<Vec<std::thread::ThreadId>>,
}

impl selfheal::Replica for InlineProbe {
    fn id(&self) -> ReplicaId {
        self.inner.id()
    }
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn status(&self) -> selfheal::ReplicaStatus {
        self.inner.status()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> selfheal::Result<()> {
        self.threads.lock().push(std::thread::current().id());
        assert!(
            !self.panics.load(Ordering::SeqCst),
            "inline read panicked (injected)"
        );
        self.inner.read_page(page, buf)
    }
    fn may_call_inline(&self) -> bool {
        true
    }
}

#[test]
fn a_replica_called_inline_is_read_on_the_repairing_thread_and_its_panic_is_caught() {
    for (name, placement) in both_placements(PS) {
        for batch in [false, true] {
            let case = format!("{name}, batch {batch}");
            let c = Cluster::new(placement.clone(), 4, 2);
            let det = c.detector(None);
            for p in 0..4 {
                c.write(&det, p, p + 1, 0x70 + p as u8, &[0, 1]);
            }
            let probe = Arc::new(InlineProbe {
                inner: c.replica(0),
                panics: AtomicBool::new(false),
                threads: parking_lot::Mutex::new(Vec::new()),
            });
            let rep = RepairConfig::new()
                .replica_read_timeout(Duration::from_secs(60))
                .build(det.clone())
                .unwrap();
            rep.add_replica(probe.clone()).unwrap();
            rep.add_replica(Arc::new(c.replica(1))).unwrap();
            let repair = |p: u64| {
                c.raw.damage(PageId(p), Damage::Junk { seed: p }).unwrap();
                fence(&det, p);
                if batch {
                    let mut all = rep.repair_all();
                    assert_eq!(all.len(), 1, "{case}");
                    all.remove(0)
                } else {
                    rep.repair_page(PageId(p)).unwrap()
                }
            };
            let report = repair(1);
            assert_eq!(
                report.outcome,
                RepairOutcome::Repaired {
                    source: CopySource::Replica(ReplicaId::new("m0"))
                },
                "{case}: {:?}",
                report.attempts
            );
            assert_eq!(c.local(1), c.current(1), "{case}");
            assert_eq!(
                *probe.threads.lock(),
                [std::thread::current().id()],
                "{case}: read once, on the repairing thread"
            );
            // A panic of an inline call: caught, the next replica repairs.
            probe.panics.store(true, Ordering::SeqCst);
            let report = catch_unwind(AssertUnwindSafe(|| repair(2)))
                .expect("an inline replica's panic must not unwind through the repair");
            assert_eq!(
                report.outcome,
                RepairOutcome::Repaired {
                    source: CopySource::Replica(ReplicaId::new("m1"))
                },
                "{case}: {:?}",
                report.attempts
            );
            assert!(
                unavailable_because(&report.attempts[0].result, "panicked"),
                "{case}: {:?}",
                report.attempts[0].result
            );
            assert_ne!(det.page_state(PageId(2)), Some(PageState::Repairing));
            assert_eq!(c.local(2), c.current(2), "{case}");
            // It cools off: the next repair does not call it.
            probe.panics.store(false, Ordering::SeqCst);
            let reads = probe.threads.lock().len();
            let report = repair(3);
            assert!(report.is_repaired(), "{case}: {:?}", report.attempts);
            // Its status was not asked: it is ordered last, as unavailable.
            let m0 = report.attempts.last().unwrap();
            assert_eq!(m0.source, CopySource::Replica(ReplicaId::new("m0")));
            assert!(
                unavailable_because(&m0.result, "cools off"),
                "{case}: {:?}",
                m0.result
            );
            assert_eq!(probe.threads.lock().len(), reads, "{case}: not called");
        }
    }
}
