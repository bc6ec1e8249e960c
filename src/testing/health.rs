//! Scripted health probes and seeded noise, for driving a
//! [`HealthMonitor`](crate::HealthMonitor) with values chosen by a test.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::health::{HealthConfig, HealthProbe};

pub use crate::health::model::HealthModel;

/// The pure model a [`HealthMonitor`](crate::HealthMonitor) feeds, built
/// from `config` without probes, thread or clock: a test or a bench feeds it
/// values at times of its choosing.
///
/// # Errors
/// As [`HealthConfig::validate`].
pub fn health_model(config: &HealthConfig) -> Result<HealthModel> {
    config.build_model()
}

/// A probe that returns the values it is given: queued values first (one per
/// sample), then the last value set; failures can be armed.
#[derive(Debug)]
pub struct ScriptedProbe {
    name: String,
    state: Mutex<Script>,
    calls: AtomicU64,
}

#[derive(Debug)]
struct Script {
    queued: VecDeque<f64>,
    current: f64,
    failures: u32,
}

impl ScriptedProbe {
    /// A probe named `name` that returns `initial` until told otherwise.
    #[must_use]
    pub fn new(name: impl Into<String>, initial: f64) -> Self {
        ScriptedProbe {
            name: name.into(),
            state: Mutex::new(Script {
                queued: VecDeque::new(),
                current: initial,
                failures: 0,
            }),
            calls: AtomicU64::new(0),
        }
    }

    /// Sets the value returned from now on (after any queued values).
    pub fn set(&self, value: f64) {
        self.state.lock().current = value;
    }

    /// Queues values returned one per sample before the current value.
    pub fn push(&self, values: impl IntoIterator<Item = f64>) {
        self.state.lock().queued.extend(values);
    }

    /// Makes the next `n` samples fail with a transient host error.
    pub fn fail_next(&self, n: u32) {
        self.state.lock().failures = n;
    }

    /// How many times it was sampled.
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl HealthProbe for ScriptedProbe {
    fn name(&self) -> &str {
        &self.name
    }

    fn sample(&self) -> Result<f64> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut s = self.state.lock();
        if s.failures > 0 {
            s.failures -= 1;
            return Err(Error::Host {
                op: "health probe",
                retryable: true,
                message: "scripted failure".into(),
            });
        }
        if let Some(v) = s.queued.pop_front() {
            s.current = v;
        }
        Ok(s.current)
    }
}

/// Seeded Gaussian noise (Box–Muller), so that noisy series reproduce from
/// their seed.
#[derive(Debug)]
pub struct GaussianNoise {
    rng: rand::rngs::StdRng,
    spare: Option<f64>,
}

impl GaussianNoise {
    /// A generator seeded with `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        GaussianNoise {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            spare: None,
        }
    }

    /// A standard normal value (mean 0, standard deviation 1).
    pub fn next_std(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = self.rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        let th = std::f64::consts::TAU * u2;
        self.spare = Some(r * th.sin());
        r * th.cos()
    }

    /// A value with mean `mean` and standard deviation `sd`.
    pub fn sample(&mut self, mean: f64, sd: f64) -> f64 {
        mean + sd * self.next_std()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_probe_plays_its_script() {
        let p = ScriptedProbe::new("x", 1.0);
        p.push([2.0, 3.0]);
        p.fail_next(1);
        assert!(p.sample().is_err());
        assert_eq!(p.sample().unwrap(), 2.0);
        assert_eq!(p.sample().unwrap(), 3.0);
        assert_eq!(p.sample().unwrap(), 3.0);
        p.set(7.0);
        assert_eq!(p.sample().unwrap(), 7.0);
        assert_eq!(p.calls(), 5);
    }

    #[test]
    fn noise_has_unit_spread() {
        let mut g = GaussianNoise::new(7);
        let xs: Vec<f64> = (0..20_000).map(|_| g.next_std()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
