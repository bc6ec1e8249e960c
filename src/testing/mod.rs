//! Test machinery shared by the crate's tests, examples and benches, and
//! available to hosts with the `testing` feature: fault-injecting stores and
//! replicas, and crash simulation for pages and journals.
//!
//! Faults are deterministic: what fires is what was armed, so a failing test
//! reproduces exactly.

mod crash;
mod faults;

pub use crash::{
    check_stamp_workload, run_stamp_workload, stamp_pages, CrashDir, CrashStore, CrashSwitch,
    StampCheck, STAMP_PAGES, STAMP_PAGE_SIZE,
};
pub use faults::{Damage, FaultCounts, FaultyReplica, FaultyStore, ReadFault, WriteFault};
mod snapshot;

pub use snapshot::{damaged_copies, fill_store, semi_compressible_page};
mod health;

pub use health::{GaussianNoise, ScriptedProbe};
