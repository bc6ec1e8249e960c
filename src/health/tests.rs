//! Unit tests of the health configuration and monitor.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::error::Error;

fn field(cfg: HealthConfig) -> &'static str {
    match cfg.validate() {
        Err(Error::InvalidConfig { field, .. }) => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

fn one() -> HealthConfig {
    HealthConfig::new().metric("m", Thresholds::percent(80.0, 90.0))
}

#[test]
fn bad_config_is_typed() {
    assert_eq!(field(HealthConfig::new()), "metrics");
    assert_eq!(
        field(one().sample_interval(Duration::ZERO)),
        "sample_interval"
    );
    assert_eq!(
        field(one().prediction_horizon(Duration::ZERO)),
        "prediction_horizon"
    );
    for w in [0, 1, 2] {
        assert_eq!(field(one().prediction_window(w)), "prediction_window");
    }
    assert_eq!(
        field(
            HealthConfig::new()
                .metric("a", Thresholds::percent(80.0, 90.0).weight(0.0))
                .metric("b", Thresholds::percent(80.0, 90.0).weight(0.0))
        ),
        "thresholds.weight"
    );
    assert_eq!(
        field(HealthConfig::new().metric("a", Thresholds::percent(80.0, 101.0))),
        "thresholds.critical"
    );
    assert_eq!(
        field(one().metric("m", Thresholds::percent(80.0, 90.0))),
        "metrics"
    );
    assert_eq!(field(one().history_capacity(10)), "history_capacity");
    assert_eq!(
        field(one().prediction_min_samples(2)),
        "prediction_min_samples"
    );
    assert_eq!(
        field(one().prediction_min_samples(61)),
        "prediction_min_samples"
    );
    assert_eq!(field(one().prediction_min_t(0.0)), "prediction_min_t");
    assert_eq!(field(one().prediction_min_r2(1.5)), "prediction_min_r2");
    assert_eq!(field(one().prediction_confirm(0)), "prediction_confirm");
    assert_eq!(field(one().anomaly_alpha(1.0)), "anomaly_alpha");
    assert_eq!(field(one().anomaly_z(f64::NAN)), "anomaly_z");
    assert!(matches!(
        one().build(),
        Err(Error::InvalidConfig {
            field: "metrics",
            ..
        })
    ));
    one().validate().unwrap();
}

#[test]
fn probe_errors_and_panics_leave_the_value_missing() {
    let monitor = HealthConfig::new()
        .probe_fn("bad", Thresholds::new(1.0, 2.0), || {
            Err(Error::Unsupported { action: "x" })
        })
        .probe_fn("nan", Thresholds::new(1.0, 2.0), || Ok(f64::NAN))
        .probe_fn("boom", Thresholds::new(1.0, 2.0), || panic!("probe bug"))
        .probe_fn("ok", Thresholds::new(1.0, 2.0), || Ok(0.5))
        .clock(Arc::new(crate::ManualClock::new()))
        .build()
        .unwrap();
    let out = monitor.sample_now().unwrap();
    let values: Vec<_> = out.metrics.iter().map(|m| m.value).collect();
    assert_eq!(values, [None, None, None, Some(0.5)]);
    assert_eq!(monitor.stats().probe_errors, 3);
    assert_eq!(out.score, Some(75.0));
}

#[test]
fn start_twice_and_use_after_stop() {
    let monitor = one_probe_monitor();
    monitor.start().unwrap();
    assert!(matches!(
        monitor.start(),
        Err(Error::InvalidArgument { what: "start", .. })
    ));
    monitor.stop().unwrap();
    monitor.stop().unwrap();
    assert!(matches!(monitor.sample_now(), Err(Error::Stopped { .. })));
    assert!(matches!(monitor.start(), Err(Error::Stopped { .. })));
}

#[test]
fn a_round_asked_for_while_the_sampler_runs_never_finds_a_healthy_probe_busy() {
    let monitor = HealthConfig::new()
        .probe_fn("slow", Thresholds::percent(80.0, 90.0), || {
            std::thread::sleep(Duration::from_millis(3));
            Ok(1.0)
        })
        .sample_interval(Duration::from_millis(1))
        .probe_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    monitor.start().unwrap();
    for _ in 0..40 {
        let out = monitor.sample_now().unwrap();
        assert_eq!(out.metrics[0].value, Some(1.0));
    }
    monitor.stop().unwrap();
    assert_eq!(monitor.stats().probe_errors, 0);
    assert_eq!(monitor.failures().try_iter().count(), 0);
}

fn one_probe_monitor() -> HealthMonitor {
    HealthConfig::new()
        .probe_fn("m", Thresholds::percent(80.0, 90.0), || Ok(1.0))
        .sample_interval(Duration::from_millis(5))
        .build()
        .unwrap()
}

#[test]
fn the_sampler_is_due_by_the_monitors_clock_not_by_real_time() {
    let clock = crate::clock::ManualClock::new();
    let monitor = HealthConfig::new()
        .probe_fn("m", Thresholds::percent(80.0, 90.0), || Ok(1.0))
        .sample_interval(Duration::from_millis(100))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    monitor.start().unwrap();
    // Real time passes, the clock does not: no round is due.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(monitor.stats().samples, 0);
    // The clock passes the interval: a round is taken, promptly.
    clock.advance(Duration::from_millis(100));
    let waited = std::time::Instant::now();
    while monitor.stats().samples == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "no round after the clock passed the interval"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // And only one: the next is due another interval of the clock later.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(monitor.stats().samples, 1);
    monitor.stop().unwrap();
}

#[test]
fn reports_dropped_counts_the_monitors_own_reports_not_the_whole_bus() {
    use crate::types::{FailureKind, FailureSink, Source};
    // A bus with room for one report, filled by another component.
    let sink = FailureSink::new(1);
    sink.report(
        Source::Host,
        FailureKind::UncleanShutdown,
        "fills the bus",
        0,
    );
    sink.report(Source::Host, FailureKind::UncleanShutdown, "dropped", 0);
    assert_eq!(sink.dropped(), 1);
    let monitor = HealthConfig::new()
        .probe_fn("m", Thresholds::percent(80.0, 90.0), || {
            Err(Error::InvalidArgument {
                what: "probe",
                reason: "injected".into(),
            })
        })
        .failure_sink(sink.clone())
        .build()
        .unwrap();
    assert_eq!(monitor.stats().reports_dropped, 0, "another's drop");
    // Its own report (the probe failing) finds the bus full.
    monitor.sample_now().unwrap();
    assert_eq!(monitor.stats().reports_dropped, 1);
    assert_eq!(sink.dropped(), 2);
    assert_eq!(sink.dropped_from(Source::HealthMonitor), 1);
    assert_eq!(sink.dropped_from(Source::Host), 1);
}
