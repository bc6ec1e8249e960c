//! Crash simulation: a page store and a journal directory that each keep a
//! live image and a durable image, a shared switch that "kills the process"
//! after a chosen number of writes, and a stamp workload for tests that kill
//! a real child process.
//!
//! # Contract
//! - [`CrashStore`] (`store.rs`) is a page store and [`CrashDir`]
//!   (`dir.rs`) a journal directory, each with a live and a durable image:
//!   what a restarted process would see is theirs to give, chosen by the
//!   test.
//! - [`CrashSwitch`] (here) kills the simulated process: once it fires,
//!   the mutating operation that fired it and every later one of each
//!   store and directory that shares it fail with `EIO`, as if the process
//!   had died just before it.
//! - The stamp workload (`stamp.rs`: [`run_stamp_workload`],
//!   [`check_stamp_workload`]) runs over real files, for a test that kills
//!   a child process and checks what recovery left.

mod dir;
mod stamp;
mod store;

use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};

pub use dir::CrashDir;
pub use stamp::{
    check_stamp_workload, run_stamp_workload, stamp_pages, StampCheck, STAMP_PAGES, STAMP_PAGE_SIZE,
};
pub use store::CrashStore;

fn dead(what: &str) -> Error {
    Error::io(
        format!("{what} (simulated crash: the process is dead)"),
        io::Error::from_raw_os_error(5),
    )
}

/// Kills the simulated process after a number of mutating operations: that
/// operation and every later one fail with `EIO`, as if the process had died
/// just before it. Share one switch between a [`CrashStore`] and a
/// [`CrashDir`] to crash at any step of a mixed sequence.
#[derive(Debug, Default)]
pub struct CrashSwitch {
    state: Mutex<SwitchState>,
}

#[derive(Debug, Default)]
struct SwitchState {
    ops: u64,
    fire_at: Option<u64>,
    fired: bool,
}

impl CrashSwitch {
    /// A disarmed switch.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Arms it: operation number `op` (counting from 0 over the switch's
    /// life) and every later one fail.
    pub fn arm_at(&self, op: u64) {
        let mut s = self.state.lock();
        s.fire_at = Some(op);
        s.fired = false;
    }

    /// Disarms it (a restarted process).
    pub fn disarm(&self) {
        let mut s = self.state.lock();
        s.fire_at = None;
        s.fired = false;
    }

    /// Mutating operations seen so far.
    #[must_use]
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Whether it has fired.
    #[must_use]
    pub fn fired(&self) -> bool {
        self.state.lock().fired
    }

    pub(super) fn tick(&self, what: &str) -> Result<()> {
        let mut s = self.state.lock();
        let n = s.ops;
        s.ops += 1;
        if s.fired || s.fire_at.is_some_and(|at| n >= at) {
            s.fired = true;
            return Err(dead(what));
        }
        Ok(())
    }
}

fn tick(switch: Option<&Arc<CrashSwitch>>, what: &str) -> Result<()> {
    switch.map_or(Ok(()), |s| s.tick(what))
}
