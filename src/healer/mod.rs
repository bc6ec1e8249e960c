//! `SelfHealer`: diagnose what is wrong, choose a remedy by what has worked
//! before, act, verify, and learn — without ever making things worse.
//!
//! A host (or the recovery manager) hands each [`Failure`](crate::Failure)
//! to [`SelfHealer::heal`], which returns a closed [`Incident`]: healed,
//! escalated with one report, observed, or deferred by a cooldown. See
//! [`SelfHealer`] for the loop and its safety rules, [`Remedy`] for the
//! contract of a remedy, [`builtin`] for the remedies wired to the
//! library's components, and [`Postmortem`] for the account of an incident.
//!
//! # Contract
//! - An unknown symptom is escalated without acting.
//! - A host action the host does not support is never planned.
//! - Every action is verified by re-checking its target; with a health
//!   monitor, an action that left health worse is undone where possible.
//! - A remedy's circuit breaker, a target's cooldown and a component's
//!   restart intensity are respected; beyond them the healer escalates.

mod breaker;
pub mod builtin;
mod config;
mod diagnose;
mod heal;
mod incident;
mod learn;
mod pacing;
mod postmortem;
mod remedy;

pub use breaker::{Breaker, BreakerConfig, BreakerState, MAX_WINDOW_SIZE};
pub use config::{ActionGate, EscalationCallback, HealerConfig, DEFAULT_HEALTH_TOLERANCE};
pub use diagnose::{Diagnoser, Diagnosis, Problem, Rule, Symptom};
pub use heal::SelfHealer;
pub use incident::{
    Attempt, AttemptOutcome, EscalationReport, Event, Incident, Outcome, SkipReason, Step,
};
pub use learn::{Learner, Tally, MAX_NAME_LEN, MAX_RECORDS};
pub use pacing::{Backoff, Cooldowns, RestartIntensity, MAX_RESTARTS};
pub use postmortem::{default_rto, Postmortem, PostmortemAction, PostmortemEvent};
pub use remedy::{Applied, Case, Remedy, RemedyContext, SnapshotTaker, Verified};
