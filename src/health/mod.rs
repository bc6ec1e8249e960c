//! `HealthMonitor`: see trouble coming before it becomes an outage. Probes
//! ([`HealthProbe`]: built-in CPU, memory, disk space and process probes,
//! plus host probes) are sampled at a fixed interval on a thread named
//! `selfheal-health`; each round goes through the health model, a pure state
//! machine fed with the time and the values, and what begins is reported on
//! the failure bus.
//!
//! # Contract
//!
//! The model
//!
//! - scores each metric 0–100 and the host as a weighted mean
//!   ([`Thresholds`], [`weighted_score`]);
//! - keeps each metric in a band (healthy / degraded / critical) with
//!   hysteresis, so that a value hovering at a threshold does not flap;
//! - keeps a bounded history of rounds;
//! - fits a least-squares line to each metric over a window and predicts when
//!   it will cross its critical threshold, reporting a
//!   [`PredictedFailure`](crate::FailureKind::PredictedFailure) only for a
//!   trend that passes a significance test ([`TrendRule`] documents the rule);
//! - flags sudden jumps with an EWMA z-score: a value is anomalous when
//!   `|value - mean| / max(std dev, floor) >= anomaly_z` against the
//!   exponentially weighted mean and variance of the values before it, after
//!   `anomaly_warmup` values; the floor is 1 % of `critical - best`, so a
//!   metric that sat perfectly still is not anomalous for a tiny step. The
//!   episode ends when |z| falls below half the threshold. Measured on steady
//!   Gaussian noise with the defaults: 1 flag in 500 000 samples (a genuine
//!   4.5-sigma draw); `tests/health.rs` asserts a rate below 1e-5.
//!
//! Each condition (degraded, critical, predicted failure, anomaly) is
//! reported once per episode on the [`FailureSink`](crate::FailureSink),
//! like every other detector. Moreover:
//!
//! - Scores are always within `0..=100`; the history never holds more than
//!   `history_capacity` rounds; the report channel is bounded.
//! - A metric without a value in a round (probe error, panic, NaN) keeps its
//!   band and episodes; nothing is inferred from a missing value.
//! - Nothing is written to disk.

// What only `testing` reaches (fuzz targets, corpus tests) is unused without it.
#[cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]
mod history;
// What only `testing` reaches (fuzz targets, corpus tests) is unused without it.
#[cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]
pub(crate) mod model;
mod predict;
mod probe;
mod score;

mod config;
mod monitor;
#[cfg(test)]
mod tests;

pub use model::{BandChange, MetricStatus, Sample, SampleOutcome};
pub use predict::{least_squares, Ewma, Fit, TrendRule};
pub use probe::{
    CpuProbe, DiskProbe, FnProbe, HealthProbe, MemoryProbe, ProcessRssProbe, ProcessThreadsProbe,
};
pub use score::{weighted_score, Band, Thresholds};

pub use config::HealthConfig;
pub use monitor::{HealthMonitor, MonitorStats};
