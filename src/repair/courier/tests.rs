//! Unit tests of the courier: answers in order, hung calls abandoned, panics
//! caught, queued calls withdrawn or cancelled, the helper's end, a full queue.

use super::*;
use crate::clock::ManualClock;
use parking_lot::{Condvar, Mutex};

const DEADLINE: Duration = Duration::from_millis(100);
const COOLOFF: Duration = Duration::from_secs(10);

/// A host object whose calls block while its gate is closed, and panic
/// when asked about 13.
#[derive(Default)]
struct Gated {
    closed: Mutex<bool>,
    opened: Condvar,
    calls: AtomicU64,
}

impl Gated {
    fn set_closed(&self, closed: bool) {
        *self.closed.lock() = closed;
        self.opened.notify_all();
    }

    fn call(&self, x: u32) -> u32 {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut closed = self.closed.lock();
        while *closed {
            self.opened.wait(&mut closed);
        }
        assert!(x != 13, "unlucky number (injected)");
        x * 2
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

fn courier(timeout: Duration) -> (Arc<Gated>, Courier<Gated>, ManualClock) {
    let g = Arc::new(Gated::default());
    let clock = ManualClock::new();
    let limits = Limits {
        timeout,
        cooloff: COOLOFF,
        clock: Arc::new(clock.clone()),
    };
    let c = Courier::new(
        Target::Fallback("gated".into()),
        "selfheal-test-courier",
        limits,
        g.clone(),
    );
    (g, c, clock)
}

fn ask(c: &Courier<Gated>, x: u32) -> Result<u32, CallFailure> {
    let mut call = c.call(1, move |g: &Gated, r| {
        r.send(g.call(x));
    })?;
    c.wait(&mut call, c.limits().deadline(), &|| format!("call {x}"))
}

#[test]
fn answers_come_back_in_order_and_a_job_may_send_several() {
    let (_, c, _) = courier(DEADLINE);
    assert_eq!(ask(&c, 4).unwrap(), 8);
    let mut call = c
        .call(3, |g: &Gated, r| {
            for x in 1..=3 {
                if !r.wanted() || !r.send(g.call(x)) {
                    return;
                }
            }
        })
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            c.wait(&mut call, c.limits().deadline(), &|| "run".into())
                .unwrap(),
        );
    }
    assert_eq!(got, [2, 4, 6]);
    let end = c
        .wait(&mut call, c.limits().deadline(), &|| "fourth answer".into())
        .unwrap_err();
    assert_eq!(end.miss, Miss::Refused, "{}", end.error);
    assert!(end
        .error
        .to_string()
        .contains("without answering the fourth answer"));
}

#[test]
fn a_hung_call_is_abandoned_and_blocks_the_object_until_it_returns_and_cools_off() {
    let (g, c, clock) = courier(DEADLINE);
    g.set_closed(true);
    let started = Instant::now();
    let miss = ask(&c, 1).unwrap_err();
    assert!(started.elapsed() >= DEADLINE);
    assert!(miss.timed_out());
    assert!(miss.error.is_retryable());
    assert!(
        miss.error
            .to_string()
            .contains("the call 1 within the deadline of 100ms"),
        "{}",
        miss.error
    );
    // Past the cool-off, but the call still hangs: not called again.
    clock.advance(COOLOFF * 2);
    let refused = ask(&c, 2).unwrap_err();
    assert_eq!(refused.miss, Miss::Refused);
    assert!(
        refused.error.to_string().contains("has not returned"),
        "{}",
        refused.error
    );
    assert_eq!(g.calls(), 1, "no second call while one hangs");
    // It returns: its answer is discarded and the object is called again.
    g.set_closed(false);
    while c.hung() {
        std::thread::yield_now();
    }
    assert_eq!(ask(&c, 3).unwrap(), 6);
}

#[test]
fn a_panic_is_caught_answers_at_once_and_cools_off_on_the_clock() {
    // Generous: printing the panic's backtrace may take a while.
    let (g, c, clock) = courier(Duration::from_secs(60));
    let miss = ask(&c, 13).unwrap_err();
    assert_eq!(miss.miss, Miss::Panicked);
    assert!(
        miss.error
            .to_string()
            .contains("its call 13 panicked: unlucky"),
        "{}",
        miss.error
    );
    assert!(c.unavailable_reason().is_some());
    clock.advance(COOLOFF - Duration::from_nanos(1));
    assert!(ask(&c, 1).is_err());
    clock.advance(Duration::from_nanos(1));
    assert_eq!(ask(&c, 1).unwrap(), 2);
    assert_eq!(g.calls(), 2, "the helper survived the panic");
}

#[test]
fn calls_behind_a_hung_one_are_withdrawn_not_run() {
    let (g, c, _) = courier(DEADLINE);
    let c = Arc::new(c);
    g.set_closed(true);
    let waiters: Vec<_> = (0..4)
        .map(|x| {
            let c = c.clone();
            std::thread::spawn(move || ask(&c, x).unwrap_err())
        })
        .collect();
    for w in waiters {
        assert!(w.join().unwrap().error.is_retryable());
    }
    g.set_closed(false);
    while c.hung() {
        std::thread::yield_now();
    }
    // Only the first call ever ran: the others were withdrawn or refused
    // (a withdrawn job is skipped by the helper before the next one).
    assert!(ask(&c, 5).is_err(), "cooling off");
    assert_eq!(g.calls(), 1);
}

#[test]
fn dropping_a_call_cancels_the_rest_of_its_job() {
    let (g, c, _) = courier(DEADLINE);
    let mut call = c
        .call(100, |g: &Gated, r| {
            for x in 0..100 {
                if !r.wanted() {
                    return;
                }
                r.send(g.call(x));
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .unwrap();
    c.wait(&mut call, c.limits().deadline(), &|| "run".into())
        .unwrap();
    drop(call);
    // The next job runs once the cancelled one stopped.
    assert_eq!(ask(&c, 7).unwrap(), 14);
    assert!(g.calls() < 100);
    assert!(c.unavailable_reason().is_none(), "not a hang");
}

#[test]
fn the_helper_ends_when_the_courier_is_dropped() {
    let (g, c, _) = courier(DEADLINE);
    assert_eq!(ask(&c, 1).unwrap(), 2);
    let shared = c.shared_weak();
    drop(c);
    let waited = Instant::now();
    while shared.upgrade().is_some() {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the helper did not end"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(Arc::strong_count(&g), 1, "nothing holds the object");
}

#[test]
fn a_full_queue_refuses_at_once() {
    let (g, c, _) = courier(DEADLINE);
    g.set_closed(true);
    let mut calls = Vec::new();
    // The first job is taken by the helper (and blocks), the rest fill the queue.
    for x in 0..=JOBS_QUEUED_MAX as u32 {
        match c.call(1, move |g: &Gated, r| {
            r.send(g.call(x));
        }) {
            Ok(call) => calls.push(call),
            Err(f) => panic!("refused too early: {}", f.error),
        }
        while x == 0 && g.calls() == 0 {
            std::thread::yield_now();
        }
    }
    let refused = c
        .call(1, |g: &Gated, r| {
            r.send(g.call(0));
        })
        .err()
        .expect("the queue is full");
    assert_eq!(refused.miss, Miss::Refused);
    assert!(refused.error.to_string().contains("already waiting"));
    drop(calls);
    g.set_closed(false);
}

#[test]
fn an_inline_courier_runs_jobs_on_the_callers_thread_and_still_catches_panics() {
    let (g, c, clock) = courier(DEADLINE);
    let c = c.run_inline(true);
    let caller = std::thread::current().id();
    let mut call = c
        .call(3, move |g: &Gated, r| {
            assert_eq!(std::thread::current().id(), caller);
            for x in 1..=3 {
                if !r.send(g.call(x)) {
                    return;
                }
            }
        })
        .unwrap();
    // The job has run before anyone waits: every answer is there.
    assert_eq!(g.calls(), 3);
    let got: Vec<u32> = (0..3)
        .map(|_| {
            c.wait(&mut call, c.limits().deadline(), &|| "run".into())
                .unwrap()
        })
        .collect();
    assert_eq!(got, [2, 4, 6]);
    assert_eq!(
        c.wait(&mut call, c.limits().deadline(), &|| "end".into())
            .unwrap_err()
            .miss,
        Miss::Refused
    );
    // No helper thread was started.
    assert!(!c.caller.is_started());
    // A panic answers as one and the object cools off.
    let f = ask(&c, 13).unwrap_err();
    assert_eq!(f.miss, Miss::Panicked, "{}", f.error);
    let refused = ask(&c, 1).unwrap_err();
    assert_eq!(refused.miss, Miss::Refused);
    assert!(refused.error.to_string().contains("cools off"));
    assert_eq!(g.calls(), 4, "not called while cooling off");
    clock.advance(COOLOFF);
    assert_eq!(ask(&c, 5).unwrap(), 10);
}
