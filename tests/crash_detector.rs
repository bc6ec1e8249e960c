//! Goal: `CrashDetector` notices dead components and processes quickly, raises no false alarm for live but jittery ones, and its run marker tells a crash from a clean shutdown. Method: the pure heartbeat monitor driven on a manual clock with seeded beat schedules, the real watchdog thread on the system clock, a real child process that is killed, and run markers that are closed, dropped and garbled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use selfheal::crash::{
    ComponentState, CrashConfig, CrashEvent, HeartbeatConfig, ProcessState, RunMarker, RunVerdict,
    Transition,
};
use selfheal::testing::{HeartbeatMonitor, ProcessMonitor};
use selfheal::{Clock, Error, FailureKind, ManualClock, Target};

const MS: u64 = 1_000_000;

/// The seed of a randomized test: `SELFHEAL_SEED` when set, else `default`.
fn seed(default: u64) -> u64 {
    std::env::var("SELFHEAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn fast_config() -> HeartbeatConfig {
    HeartbeatConfig::new()
        .tick_interval(Duration::from_millis(10))
        .timeout(Duration::from_secs(3))
        .acceptable_pause(Duration::from_secs(1))
        .min_std_dev(Duration::from_millis(10))
        .window(200)
}

#[test]
fn dead_component_is_declared_within_timeout_plus_one_tick_after_suspect() {
    for s in 0..20 {
        let seed = seed(1000) + s;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let clock = ManualClock::new();
        let mut m = HeartbeatMonitor::new(fast_config(), clock.now_ns()).unwrap();
        let h = m.register("wal", clock.now_ns()).unwrap();
        let tick = 10 * MS;
        let timeout = 3_000 * MS;
        // Beat at random instants (not aligned with ticks) for ~2 s.
        let mut next_tick = tick;
        let mut last_beat = 0;
        let mut t = 0;
        while t < 2_000 * MS {
            t += rng.random_range(1..40) * MS + rng.random_range(0..MS);
            while next_tick <= t {
                clock.set_ns(next_tick);
                assert!(
                    m.tick(next_tick).is_empty(),
                    "seed {seed}: alarm while beating"
                );
                next_tick += tick;
            }
            clock.set_ns(t);
            h.beat();
            last_beat = t;
        }
        // Silence.
        let mut seen: Vec<Transition> = Vec::new();
        while !seen.iter().any(|x| x.to == ComponentState::Dead) {
            clock.set_ns(next_tick);
            seen.extend(m.tick(next_tick));
            next_tick += tick;
            assert!(
                next_tick < last_beat + 10 * timeout,
                "seed {seed}: never declared dead"
            );
        }
        let states: Vec<_> = seen.iter().map(|x| (x.from, x.to)).collect();
        assert_eq!(
            states,
            [
                (ComponentState::Alive, ComponentState::Suspect),
                (ComponentState::Suspect, ComponentState::Dead)
            ],
            "seed {seed}"
        );
        let dead_at = seen[1].at_ns;
        assert!(
            dead_at <= last_beat + timeout + tick,
            "seed {seed}: dead at {dead_at}, last beat {last_beat}"
        );
        assert!(
            dead_at >= last_beat + timeout,
            "seed {seed}: declared dead early"
        );
        assert!(
            seen[0].at_ns < dead_at,
            "seed {seed}: phi suspected before the timeout"
        );
        let f = seen[1].failure().unwrap();
        assert_eq!(f.target(), Target::Component("wal".into()));
        assert!(matches!(f.kind, FailureKind::ComponentDead { .. }));
    }
}

#[test]
fn jittery_live_component_is_never_suspected_over_a_long_run() {
    let seed = seed(42);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut m = HeartbeatMonitor::new(fast_config(), 0).unwrap();
    let h = m.register("compactor", 0).unwrap();
    let tick = 10 * MS;
    let base = 50 * MS;
    let mut next_beat = base;
    let mut pauses = 0;
    for i in 1..=100_000u64 {
        let now = i * tick;
        while next_beat <= now {
            h.beat();
            // ±50 % jitter, and now and then a pause under the acceptable one.
            next_beat += if rng.random_bool(0.01) {
                pauses += 1;
                rng.random_range(200 * MS..900 * MS)
            } else {
                rng.random_range(base / 2..base * 3 / 2)
            };
        }
        let t = m.tick(now);
        assert!(
            t.is_empty(),
            "seed {seed} (rerun with SELFHEAL_SEED={seed}): false alarm at tick {i}: {t:?}"
        );
    }
    assert!(pauses > 50, "seed {seed}: the run must contain pauses");
    assert_eq!(m.statuses()[0].state, ComponentState::Alive);
}

#[test]
fn recovery_is_reported_once_after_dead_and_after_suspect() {
    let mut m = HeartbeatMonitor::new(fast_config(), 0).unwrap();
    let h = m.register("flusher", 0).unwrap();
    let mut now = 0;
    for _ in 0..100 {
        h.beat();
        now += 10 * MS;
        m.tick(now);
    }
    // Long enough for suspect, short of the timeout.
    let mut t = Vec::new();
    while t.is_empty() {
        now += 10 * MS;
        t = m.tick(now);
    }
    assert_eq!(t[0].to, ComponentState::Suspect);
    h.beat();
    now += 10 * MS;
    let t = m.tick(now);
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].from, t[0].to),
        (ComponentState::Suspect, ComponentState::Alive)
    );
    assert!(t[0].failure().is_none());
    // Now all the way to dead, then back.
    let mut all = Vec::new();
    for _ in 0..400 {
        now += 10 * MS;
        all.extend(m.tick(now));
    }
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].to, ComponentState::Dead);
    h.beat();
    h.beat();
    now += 10 * MS;
    let t = m.tick(now);
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].from, t[0].to),
        (ComponentState::Dead, ComponentState::Alive)
    );
    now += 10 * MS;
    h.beat();
    assert!(m.tick(now).is_empty(), "recovery is reported once");
}

#[test]
fn watchdog_thread_declares_a_stopped_component_dead_and_calls_back_once() {
    let dead_calls = Arc::new(AtomicUsize::new(0));
    let (dead_tx, dead_rx) = crossbeam_channel::bounded(8);
    let calls = dead_calls.clone();
    let detector = CrashConfig::new()
        .heartbeat(
            HeartbeatConfig::new()
                .tick_interval(Duration::from_millis(10))
                // Generous against a loaded machine descheduling the beater.
                .timeout(Duration::from_millis(500))
                .acceptable_pause(Duration::from_millis(200))
                .min_std_dev(Duration::from_millis(10)),
        )
        .on_event(Arc::new(move |ev| {
            if let CrashEvent::Component(t) = ev {
                if t.to == ComponentState::Dead {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let _ = dead_tx.try_send(t.clone());
                }
            }
        }))
        .build()
        .unwrap();
    detector.start().unwrap();
    let handle = detector.register("worker").unwrap();
    let worker = std::thread::spawn(move || {
        let end = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < end {
            handle.beat();
            std::thread::sleep(Duration::from_millis(1));
        }
        // The thread ends; its handle is dropped with it.
    });
    worker.join().unwrap();
    let t = dead_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the stopped component was never declared dead");
    assert_eq!(&*t.component, "worker");
    assert!(t.silent_ns >= 500 * MS);
    // Give the watchdog many more ticks: the callback must not fire again.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(dead_calls.load(Ordering::SeqCst), 1);
    let kinds: Vec<_> = detector.failures().try_iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds[kinds.len().saturating_sub(2)..],
        [
            FailureKind::ComponentSuspect {
                component: "worker".into()
            },
            FailureKind::ComponentDead {
                component: "worker".into()
            }
        ]
    );
    assert_eq!(detector.components()[0].state, ComponentState::Dead);
    detector.stop().unwrap();
}

#[cfg(unix)]
#[test]
fn killed_child_process_goes_zombie_then_gone() {
    let mut child = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    let mut m = ProcessMonitor::new(4).unwrap();
    m.watch(pid, "sleep").unwrap();
    assert!(m.sample(1).is_empty());
    let s = m.last_sample(pid).unwrap();
    assert_eq!(s.state, ProcessState::Alive);
    assert!(s.resident_bytes.unwrap() > 0, "{s:?}");
    #[cfg(target_os = "linux")]
    assert_eq!(s.threads, Some(1));
    m.sample(2);
    assert!(m.last_sample(pid).unwrap().cpu_percent.is_some());

    child.kill().unwrap();
    // The signal is delivered asynchronously: sample until the exit shows.
    // Not reaped yet, so a child of ours must appear as a zombie.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let t = loop {
        let t = m.sample(3);
        if !t.is_empty() {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "kill never observed");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].from, t[0].to),
        (ProcessState::Alive, ProcessState::Zombie)
    );
    assert_eq!(
        t[0].failure().unwrap().kind,
        FailureKind::ProcessGone { pid }
    );
    assert_eq!(m.last_sample(pid).unwrap().resident_bytes, None);
    child.wait().unwrap();
    let t = m.sample(4);
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].from, t[0].to),
        (ProcessState::Zombie, ProcessState::Gone)
    );
    assert!(
        t[0].failure().is_none(),
        "the exit was reported once, as zombie"
    );
    assert!(m.sample(5).is_empty());
}

#[cfg(unix)]
#[test]
fn detector_reports_a_watched_process_that_exits() {
    let clock = ManualClock::new();
    let detector = CrashConfig::new()
        .clock(Arc::new(clock.clone()))
        .heartbeat(
            HeartbeatConfig::new()
                .tick_interval(Duration::from_secs(3600))
                .timeout(Duration::from_secs(7200)),
        )
        .process_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    detector.start().unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    detector.watch_process(pid, "sleep").unwrap();
    assert!(matches!(
        detector.watch_process(pid, "again"),
        Err(Error::AlreadyWatched { .. })
    ));
    clock.advance(Duration::from_secs(1));
    assert!(detector.check_now().unwrap().is_empty());
    assert_eq!(detector.process(pid).unwrap().state, ProcessState::Alive);
    child.kill().unwrap();
    child.wait().unwrap();
    clock.advance(Duration::from_secs(1));
    let ev = detector.check_now().unwrap();
    assert_eq!(ev.len(), 1, "{ev:?}");
    let f = detector.failures().try_recv().unwrap();
    assert_eq!(f.target(), Target::Process(pid));
    detector.stop().unwrap();
}

#[test]
fn run_marker_tells_first_run_clean_and_crashed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    let before = unix_ms();
    let (m, v) = RunMarker::open(&data).unwrap();
    assert_eq!(v, RunVerdict::FirstRun);
    assert_eq!(m.run(), 1);
    m.stop().unwrap();

    let (mut m, v) = RunMarker::open(&data).unwrap();
    match v {
        RunVerdict::Clean {
            run,
            started_unix_ms,
            stopped_unix_ms,
        } => {
            assert_eq!(run, 1);
            assert!(before <= started_unix_ms && started_unix_ms <= stopped_unix_ms);
        }
        other => panic!("expected Clean, got {other:?}"),
    }
    assert_eq!(m.run(), 2);
    m.refresh().unwrap();
    let refreshed = unix_ms();
    drop(m); // a crash: no close

    let (m, v) = RunMarker::open(&data).unwrap();
    match v {
        RunVerdict::Crashed {
            run,
            pid,
            last_seen_unix_ms,
            started_unix_ms,
        } => {
            assert_eq!(run, 2);
            assert_eq!(pid, std::process::id());
            assert!(started_unix_ms <= last_seen_unix_ms && last_seen_unix_ms <= refreshed);
            assert!(last_seen_unix_ms >= before);
        }
        other => panic!("expected Crashed, got {other:?}"),
    }
    assert_eq!(m.run(), 3);
    m.stop().unwrap();
}

#[test]
fn second_opener_gets_a_typed_error_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = RunMarker::open(dir.path()).unwrap();
    match RunMarker::open(dir.path()) {
        Err(Error::DirectoryLocked { path, .. }) => assert_eq!(path, dir.path()),
        other => panic!("expected DirectoryLocked, got {other:?}"),
    }
    m.stop().unwrap();
    let (_m, v) = RunMarker::open(dir.path()).unwrap();
    assert!(matches!(v, RunVerdict::Clean { .. }));
}

#[test]
fn damaged_marker_gives_an_unknown_verdict_not_a_panic() {
    let seed = seed(7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = RunMarker::open(dir.path()).unwrap();
    let path = m.path().to_path_buf();
    m.stop().unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut garbage = vec![0u8; 64];
    rng.fill(&mut garbage[..]);
    let mut flipped = good.clone();
    let i = rng.random_range(0..flipped.len());
    flipped[i] ^= 0x10;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", garbage),
        ("zeroed", vec![0u8; good.len()]),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("bit flip", flipped),
    ];
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let (m, v) = RunMarker::open(dir.path()).unwrap();
        match &v {
            RunVerdict::Unknown { reason } => assert!(!reason.is_empty()),
            other => panic!("seed {seed}, {what}: expected Unknown, got {other:?}"),
        }
        assert!(v.is_crash());
        // The marker is rewritten: the next clean close is recognised again.
        m.stop().unwrap();
        let (m, v) = RunMarker::open(dir.path()).unwrap();
        assert!(matches!(v, RunVerdict::Clean { .. }), "{what}: {v:?}");
        m.stop().unwrap();
    }
}

#[test]
fn detector_keeps_the_marker_fresh_and_closes_it_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = RunMarker::open(dir.path()).unwrap();
    let clock = ManualClock::new();
    let detector = CrashConfig::new()
        .clock(Arc::new(clock.clone()))
        .heartbeat(
            HeartbeatConfig::new()
                .tick_interval(Duration::from_secs(3600))
                .timeout(Duration::from_secs(7200)),
        )
        .marker_refresh_interval(Duration::from_secs(1))
        .run_marker(m)
        .build()
        .unwrap();
    detector.start().unwrap();
    let written = std::fs::read(dir.path().join("selfheal.run")).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    clock.advance(Duration::from_secs(1));
    detector.check_now().unwrap();
    let refreshed = std::fs::read(dir.path().join("selfheal.run")).unwrap();
    assert_ne!(written, refreshed, "the last-seen time was rewritten");
    assert_eq!(detector.stats().marker_errors, 0);
    detector.stop().unwrap();
    let (_m, v) = RunMarker::open(dir.path()).unwrap();
    assert!(matches!(v, RunVerdict::Clean { .. }), "{v:?}");
}

#[test]
fn zero_settings_are_invalid_config() {
    let zero = Duration::ZERO;
    let cases = [
        CrashConfig::new().heartbeat(HeartbeatConfig::new().timeout(zero)),
        CrashConfig::new().heartbeat(HeartbeatConfig::new().tick_interval(zero)),
        CrashConfig::new().heartbeat(HeartbeatConfig::new().window(0)),
        CrashConfig::new().process_interval(zero),
        CrashConfig::new().marker_refresh_interval(zero),
    ];
    for c in cases {
        assert!(matches!(c.build(), Err(Error::InvalidConfig { .. })));
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_failing_marker_refresh_is_counted_and_detection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    let (m, _) = RunMarker::open(&data).unwrap();
    let clock = ManualClock::new();
    let detector = CrashConfig::new()
        .clock(Arc::new(clock.clone()))
        .heartbeat(
            HeartbeatConfig::new()
                .tick_interval(Duration::from_secs(1))
                .timeout(Duration::from_secs(3)),
        )
        .marker_refresh_interval(Duration::from_secs(1))
        .run_marker(m)
        .build()
        .unwrap();
    detector.start().unwrap();
    let _h = detector.register("c").unwrap();
    // The data directory disappears under the running detector.
    std::fs::remove_dir_all(&data).unwrap();
    let mut dead = false;
    for _ in 0..5 {
        clock.advance(Duration::from_secs(1));
        dead |= detector
            .check_now()
            .unwrap()
            .iter()
            .any(|e| matches!(e, CrashEvent::Component(t) if t.to == ComponentState::Dead));
    }
    assert!(dead, "detection continued");
    assert!(detector.stats().marker_errors >= 1);
    // The clean record cannot be written either: shutdown says so.
    assert!(matches!(detector.stop(), Err(Error::Io { .. })));
}
