//! `SelfHealer`: diagnose what is wrong, choose a remedy by what has worked
//! before, act, verify, and learn — without ever making things worse.

pub mod breaker;
pub mod diagnose;
pub mod learn;
pub mod pacing;

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use diagnose::{Diagnoser, Diagnosis, Problem, Rule, Symptom};
pub use learn::{Learner, Tally};
pub use pacing::{Backoff, Cooldowns, RestartIntensity};
