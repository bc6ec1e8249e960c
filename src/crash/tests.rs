//! Unit tests of the crash detector: configuration, the watchdog's lifecycle,
//! events and failures, callbacks, and the run marker at build and stop.

use super::*;
use crate::clock::ManualClock;
use std::sync::atomic::AtomicUsize;

const MS: Duration = Duration::from_millis(1);

fn manual() -> (ManualClock, CrashConfig) {
    let clock = ManualClock::new();
    let cfg = CrashConfig::new()
        .clock(Arc::new(clock.clone()))
        // A real-time tick far beyond the test so only check_now ticks.
        .heartbeat(
            HeartbeatConfig::new()
                .tick_interval(Duration::from_secs(3600))
                .timeout(Duration::from_secs(7200)),
        );
    (clock, cfg)
}

#[test]
fn bad_config_is_typed() {
    for (cfg, field) in [
        (
            CrashConfig::new().process_interval(Duration::ZERO),
            "process_interval",
        ),
        (
            CrashConfig::new().marker_refresh_interval(Duration::ZERO),
            "marker_refresh_interval",
        ),
        (CrashConfig::new().event_capacity(0), "event_capacity"),
        (CrashConfig::new().max_processes(0), "max_processes"),
        (
            CrashConfig::new().heartbeat(HeartbeatConfig::new().window(0)),
            "window",
        ),
    ] {
        match cfg.build() {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected InvalidConfig, got {other:?}"),
        }
    }
}

#[test]
fn build_starts_nothing_start_starts_the_watchdog_and_stop_ends_it() {
    let (clock, cfg) = manual();
    let d = cfg.build().unwrap();
    assert!(!d.is_running());
    assert!(matches!(d.check_now(), Err(Error::Stopped { .. })));
    // Registration is accepted before start; nothing is judged yet.
    let _h = d.register("c").unwrap();
    clock.advance(Duration::from_secs(3600 * 3));
    assert_eq!(d.failures().try_iter().count(), 0);
    d.start().unwrap();
    assert!(d.is_running());
    assert!(matches!(
        d.start(),
        Err(Error::InvalidArgument { what: "start", .. })
    ));
    // The first tick after a long gap blames the gap, not the component.
    assert!(d.check_now().unwrap().is_empty());
    clock.advance(Duration::from_secs(3600));
    assert_eq!(d.check_now().unwrap().len(), 2, "suspect, then dead");
    d.stop().unwrap();
    d.stop().unwrap();
    assert!(!d.is_running());
    assert!(matches!(d.start(), Err(Error::Stopped { .. })));
    assert!(matches!(d.register("e"), Err(Error::Stopped { .. })));
    // Stopped before it was ever started: start is refused too.
    let (_clock, cfg) = manual();
    let never = cfg.build().unwrap();
    never.stop().unwrap();
    assert!(matches!(never.start(), Err(Error::Stopped { .. })));
}

#[test]
fn events_is_an_owned_receiver_and_failure_sink_is_the_bus() {
    let (clock, cfg) = manual();
    let sink = FailureSink::new(16);
    let d = cfg.failure_sink(sink.clone()).build().unwrap();
    d.start().unwrap();
    let events: Receiver<CrashEvent> = d.events();
    let _h = d.register("c").unwrap();
    clock.advance(Duration::from_secs(3600));
    assert!(d.check_now().unwrap().is_empty());
    clock.advance(Duration::from_secs(3600));
    d.check_now().unwrap();
    assert_eq!(events.try_iter().count(), 2);
    d.failure_sink()
        .report(Source::Host, FailureKind::UncleanShutdown, "x", 0);
    assert_eq!(
        sink.sent(),
        3,
        "two from the watchdog, one through failure_sink()"
    );
    d.stop().unwrap();
}

#[test]
fn a_panicking_callback_is_reported_once_and_the_watchdog_keeps_watching() {
    let (clock, cfg) = manual();
    let sink = FailureSink::new(64);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let d = cfg
        .failure_sink(sink.clone())
        .on_event(Arc::new(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            panic!("host callback bug")
        }))
        .build()
        .unwrap();
    d.start().unwrap();
    let _a = d.register("a").unwrap();
    clock.advance(Duration::from_secs(3600));
    d.check_now().unwrap();
    clock.advance(Duration::from_secs(3600));
    // Suspect and dead: the callback panics on both; the watchdog goes on.
    assert_eq!(d.check_now().unwrap().len(), 2);
    assert!(d.is_running());
    // Still watching: a second component is registered and judged.
    let _b = d.register("b").unwrap();
    clock.advance(Duration::from_secs(3600));
    d.check_now().unwrap();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(d.check_now().unwrap().len(), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(d.stats().callback_panics, 4);
    let got: Vec<Failure> = sink.failures().try_iter().collect();
    let panics: Vec<&Failure> = got
        .iter()
        .filter(|f| matches!(&f.kind, FailureKind::WorkerDied { component } if &**component == CALLBACK))
        .collect();
    assert_eq!(panics.len(), 1, "reported once: {got:?}");
    assert_eq!(panics[0].source, Source::CrashDetector);
    assert!(
        panics[0].evidence.contains("on_event"),
        "{}",
        panics[0].evidence
    );
    assert!(
        panics[0].evidence.contains("host callback bug"),
        "{}",
        panics[0].evidence
    );
    // The events' own failures still went out: a suspect and a dead each.
    let dead = got
        .iter()
        .filter(|f| matches!(f.kind, FailureKind::ComponentDead { .. }))
        .count();
    assert_eq!(dead, 2);
    assert!(
        !got.iter().any(|f| matches!(&f.kind, FailureKind::WorkerDied { component } if &**component == COMPONENT)),
        "the watchdog did not die: {got:?}"
    );
    d.stop().unwrap();
}

#[test]
fn a_callback_that_answers_again_ends_the_episode() {
    let (clock, cfg) = manual();
    let sink = FailureSink::new(64);
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f2 = fail.clone();
    let d = cfg
        .failure_sink(sink.clone())
        .on_event(Arc::new(move |_| {
            assert!(!f2.load(Ordering::SeqCst), "host callback bug");
        }))
        .build()
        .unwrap();
    d.start().unwrap();
    let mut reported = 0;
    for (round, failing) in [true, false, true].into_iter().enumerate() {
        fail.store(failing, Ordering::SeqCst);
        let _h = d.register(&format!("c{round}")).unwrap();
        clock.advance(Duration::from_secs(3600));
        d.check_now().unwrap();
        clock.advance(Duration::from_secs(3600));
        assert_eq!(d.check_now().unwrap().len(), 2);
        reported += usize::from(failing);
        let seen = sink
            .failures()
            .try_iter()
            .filter(|f| matches!(&f.kind, FailureKind::WorkerDied { component } if &**component == CALLBACK))
            .count();
        assert_eq!(seen, usize::from(failing), "round {round}");
        assert!(d.is_running());
    }
    assert_eq!(reported, 2);
    d.stop().unwrap();
}

#[test]
fn calls_from_inside_the_callback_are_refused_not_deadlocked() {
    let (clock, cfg) = manual();
    let slot: Arc<std::sync::OnceLock<std::sync::Weak<CrashDetector>>> = Arc::default();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (slot2, seen2) = (slot.clone(), seen.clone());
    let d = Arc::new(
        cfg.on_event(Arc::new(move |_| {
            if let Some(d) = slot2.get().and_then(std::sync::Weak::upgrade) {
                let e = d.check_now().unwrap_err();
                seen2.lock().push(e.to_string());
            }
        }))
        .build()
        .unwrap(),
    );
    slot.set(Arc::downgrade(&d)).unwrap();
    d.start().unwrap();
    let _h = d.register("c").unwrap();
    clock.advance(Duration::from_secs(3600));
    d.check_now().unwrap();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(d.check_now().unwrap().len(), 2);
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].contains("watchdog thread"), "{}", seen[0]);
    d.stop().unwrap();
}

#[test]
fn events_reach_callback_and_both_channels_once() {
    let (clock, cfg) = manual();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let d = cfg
        .event_capacity(1)
        .failure_sink(FailureSink::new(1))
        .on_event(Arc::new(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        }))
        .build()
        .unwrap();
    d.start().unwrap();
    let _h = d.register("c").unwrap();
    clock.advance(Duration::from_secs(3600));
    assert!(d.check_now().unwrap().is_empty());
    clock.advance(Duration::from_secs(3600));
    let evs = d.check_now().unwrap();
    assert_eq!(evs.len(), 2, "suspect then dead in one tick: {evs:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(d.check_now().unwrap().is_empty());
    // Capacity 1: the second of each kind was counted as dropped.
    assert_eq!(d.failures().try_iter().count(), 1);
    assert_eq!(d.events().try_iter().count(), 1);
    let s = d.stats();
    assert_eq!((s.failures_dropped, s.events_dropped), (1, 1));
    d.stop().unwrap();
}

#[test]
fn an_unclean_previous_run_is_reported_at_build_and_a_clean_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let sink = FailureSink::new(16);
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(3));
    let open = |sink: &FailureSink| {
        let (m, _) = RunMarker::open(dir.path()).unwrap();
        CrashConfig::new()
            .clock(Arc::new(clock.clone()))
            .failure_sink(sink.clone())
            .run_marker(m)
            .build()
            .unwrap()
    };
    // First run: nothing to report. Stopped cleanly: nothing either.
    open(&sink).stop().unwrap();
    open(&sink).stop().unwrap();
    assert_eq!(sink.failures().try_iter().count(), 0);
    // Dropped without a clean stop: the next start reports it.
    drop(open(&sink));
    let d = open(&sink);
    let got: Vec<Failure> = sink.failures().try_iter().collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].kind, FailureKind::UncleanShutdown);
    assert_eq!(got[0].source, Source::CrashDetector);
    assert_eq!(got[0].detected_at_ns, 3_000_000_000);
    assert!(
        got[0].evidence.contains("did not stop cleanly"),
        "{}",
        got[0].evidence
    );
    d.stop().unwrap();
}

#[test]
fn shutdown_closes_the_marker_cleanly_and_drop_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = RunMarker::open(dir.path()).unwrap();
    let (_clock, cfg) = manual();
    let d = cfg.run_marker(m).build().unwrap();
    d.start().unwrap();
    d.stop().unwrap();
    let (m, v) = RunMarker::open(dir.path()).unwrap();
    assert!(matches!(v, RunVerdict::Clean { .. }), "{v:?}");
    let (_clock, cfg) = manual();
    let d = cfg.run_marker(m).build().unwrap();
    d.start().unwrap();
    drop(d);
    let (_m, v) = RunMarker::open(dir.path()).unwrap();
    assert!(v.is_crash(), "{v:?}");
    let _ = MS;
}

#[test]
fn a_run_marker_that_cannot_be_refreshed_is_reported_on_the_bus_once_per_episode() {
    let dir = tempfile::tempdir().unwrap();
    let marker_dir = dir.path().join("marker");
    let (m, _) = RunMarker::open(&marker_dir).unwrap();
    let sink = FailureSink::new(16);
    let (clock, cfg) = manual();
    let d = cfg
        .failure_sink(sink.clone())
        .marker_refresh_interval(Duration::from_secs(1))
        .run_marker(m)
        .build()
        .unwrap();
    d.start().unwrap();
    // The directory goes away: every refresh fails from now on.
    std::fs::remove_dir_all(&marker_dir).unwrap();
    for _ in 0..3 {
        clock.advance(Duration::from_secs(1));
        d.check_now().unwrap();
    }
    assert_eq!(d.stats().marker_errors, 3);
    let got: Vec<Failure> = sink.failures().try_iter().collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].kind, FailureKind::RunMarkerFailed);
    assert_eq!(got[0].source, Source::CrashDetector);
    assert_eq!(got[0].detected_at_ns, 1_000_000_000);
    let _ = d.stop();
}
