//! The progress of the manager's running operation, readable from any
//! thread without a lock: bytes done, bytes to do, and the rate on the
//! manager's clock.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::clock::Clock;

/// A long-running operation of the manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// Taking a snapshot.
    Snapshot,
    /// Restoring the store.
    Restore,
    /// Verifying a chain.
    Verify,
    /// Merging a chain into a full snapshot.
    Merge,
}

/// Progress of the running operation, readable from any thread.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<ProgressInner>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct ProgressInner {
    op: AtomicU8,
    done: AtomicU64,
    total: AtomicU64,
    started_ns: AtomicU64,
}

/// A reading of [`Progress`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProgressReport {
    /// The running operation, `None` when idle.
    pub operation: Option<Operation>,
    /// Raw page bytes processed so far.
    pub bytes_done: u64,
    /// Raw page bytes the operation will process (an upper bound for an
    /// incremental snapshot found by fingerprints: the pages compared).
    pub bytes_total: u64,
    /// Bytes per second since the operation started.
    pub rate_bytes_per_s: f64,
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

impl Progress {
    pub(super) fn new(clock: Arc<dyn Clock>) -> Self {
        Progress {
            inner: Arc::default(),
            clock,
        }
    }

    /// The current reading.
    #[must_use]
    pub fn get(&self) -> ProgressReport {
        let op = match self.inner.op.load(Ordering::Acquire) {
            1 => Some(Operation::Snapshot),
            2 => Some(Operation::Restore),
            3 => Some(Operation::Verify),
            4 => Some(Operation::Merge),
            _ => None,
        };
        let done = self.inner.done.load(Ordering::Relaxed);
        let elapsed = self
            .clock
            .now_ns()
            .saturating_sub(self.inner.started_ns.load(Ordering::Relaxed));
        ProgressReport {
            operation: op,
            bytes_done: done,
            bytes_total: self.inner.total.load(Ordering::Relaxed),
            rate_bytes_per_s: if elapsed == 0 {
                0.0
            } else {
                done as f64 * 1e9 / elapsed as f64
            },
        }
    }

    pub(super) fn start(&self, op: Operation, total: u64) -> ProgressGuard<'_> {
        self.inner.done.store(0, Ordering::Relaxed);
        self.inner.total.store(total, Ordering::Relaxed);
        self.inner
            .started_ns
            .store(self.clock.now_ns(), Ordering::Relaxed);
        let code = match op {
            Operation::Snapshot => 1,
            Operation::Restore => 2,
            Operation::Verify => 3,
            Operation::Merge => 4,
        };
        self.inner.op.store(code, Ordering::Release);
        ProgressGuard(self)
    }

    pub(super) fn add(&self, n: u64) {
        self.inner.done.fetch_add(n, Ordering::Relaxed);
    }
}

pub(super) struct ProgressGuard<'a>(&'a Progress);

impl Drop for ProgressGuard<'_> {
    fn drop(&mut self) {
        self.0.inner.op.store(0, Ordering::Release);
    }
}
