//! Test machinery shared by the crate's tests, examples and benches, and
//! available to hosts with the `testing` feature: fault-injecting stores and
//! replicas.
//!
//! Faults are deterministic: what fires is what was armed, so a failing test
//! reproduces exactly.

mod faults;

pub use faults::{Damage, FaultCounts, FaultyReplica, FaultyStore, ReadFault, WriteFault};
mod health;

pub use health::{GaussianNoise, ScriptedProbe};
