//! Fault-injecting wrappers around the sources of copies a repair reads: a
//! replica ([`FaultyReplica`]) and a fallback source ([`FaultySource`]).
//!
//! # Contract
//! - Faults are armed and disarmed by hand and fire only while armed:
//!   nothing is random, so a failing test reproduces exactly.
//! - A hung call blocks the calling thread until released, then proceeds as
//!   a normal call; the calls blocked now are counted.
//! - A replica's range digests are computed from its own page reads, so its
//!   damage, hangs and panics reach them; it is never called inline.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::Damage;
use crate::error::{Error, Result};
use crate::host::{digest_by_reads, PageSource, Replica, ReplicaLag, ReplicaStatus};
use crate::types::{Lsn, PageId, ReplicaId};

/// Which call of a [`FaultyReplica`] a hang applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaCall {
    /// [`Replica::status`].
    Status,
    /// [`Replica::read_page`].
    Read,
    /// [`Replica::range_digest`].
    Digest,
}

impl ReplicaCall {
    fn index(self) -> usize {
        match self {
            ReplicaCall::Status => 0,
            ReplicaCall::Read => 1,
            ReplicaCall::Digest => 2,
        }
    }
}

/// A gate that calls pass while it is open and block at while it is closed,
/// counting the calls blocked at it.
#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
    waiting: AtomicU64,
}

impl Gate {
    fn set_closed(&self, closed: bool) {
        *self.closed.lock() = closed;
        if !closed {
            self.opened.notify_all();
        }
    }

    /// Blocks the calling thread while the gate is closed.
    fn pass(&self) {
        let mut closed = self.closed.lock();
        if *closed {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while *closed {
                self.opened.wait(&mut closed);
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// A [`Replica`] wrapper that can be taken down, made to lag, made to serve
/// damaged copies of chosen pages, made to hang in any of its calls, or made
/// to fail or panic in reads.
///
/// A hung call blocks the calling thread until it is released (then it
/// proceeds as a normal call), like a replica behind a network partition
/// whose socket never times out. Its range digests are computed from its own
/// (possibly damaged, hanging or panicking) page reads.
pub struct FaultyReplica {
    inner: Arc<dyn Replica>,
    down: AtomicBool,
    lag: Mutex<Option<ReplicaLag>>,
    damaged: Mutex<HashMap<PageId, Damage>>,
    /// Calls made, by [`ReplicaCall::index`].
    calls: [AtomicU64; 3],
    /// Where calls hang, by [`ReplicaCall::index`].
    gates: [Gate; 3],
    panics: AtomicBool,
    read_errors: AtomicBool,
}

impl fmt::Debug for FaultyReplica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyReplica")
            .field("id", &self.inner.id())
            .field("down", &self.down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl FaultyReplica {
    /// Wraps `inner`; no fault is armed.
    pub fn new(inner: Arc<dyn Replica>) -> Self {
        FaultyReplica {
            inner,
            down: AtomicBool::new(false),
            lag: Mutex::new(None),
            damaged: Mutex::new(HashMap::new()),
            calls: Default::default(),
            gates: Default::default(),
            panics: AtomicBool::new(false),
            read_errors: AtomicBool::new(false),
        }
    }

    /// Makes every call of kind `call` block until `set_hang_on(call, false)`
    /// (which also releases the calls blocked now), or stops doing so.
    pub fn set_hang_on(&self, call: ReplicaCall, hang: bool) {
        self.gates[call.index()].set_closed(hang);
    }

    /// Makes every page read block until `set_hang(false)` (which also
    /// releases the reads blocked now), or stops doing so; the same as
    /// [`set_hang_on(ReplicaCall::Read, hang)`](Self::set_hang_on).
    pub fn set_hang(&self, hang: bool) {
        self.set_hang_on(ReplicaCall::Read, hang);
    }

    /// How many calls of kind `call` are blocked by a hang right now.
    #[must_use]
    pub fn hung_calls(&self, call: ReplicaCall) -> u64 {
        self.gates[call.index()].waiting()
    }

    /// How many page reads are blocked by [`set_hang`](Self::set_hang) right now.
    #[must_use]
    pub fn hung_reads(&self) -> u64 {
        self.hung_calls(ReplicaCall::Read)
    }

    /// How many calls of kind `call` were made (served, refused or hung).
    #[must_use]
    pub fn calls(&self, call: ReplicaCall) -> u64 {
        self.calls[call.index()].load(Ordering::SeqCst)
    }

    /// Makes every read panic (a bug in the replica's code), or stops doing so.
    pub fn set_panic(&self, panic: bool) {
        self.panics.store(panic, Ordering::SeqCst);
    }

    /// Makes every page read fail with a retryable [`Error::Host`] while its
    /// status still says it serves reads (a replica whose disk or link
    /// fails under it), or stops doing so.
    pub fn set_read_error(&self, fail: bool) {
        self.read_errors.store(fail, Ordering::SeqCst);
    }

    /// Takes the replica down (unavailable, reads fail) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Overrides the lag it reports.
    pub fn set_lag(&self, lag: ReplicaLag) {
        *self.lag.lock() = Some(lag);
    }

    /// Makes it serve `page` with `damage` applied (its own copy is corrupt).
    pub fn corrupt(&self, page: PageId, damage: Damage) {
        self.damaged.lock().insert(page, damage);
    }

    /// How many page reads it served or refused (digests read pages too).
    #[must_use]
    pub fn reads(&self) -> u64 {
        self.calls(ReplicaCall::Read)
    }

    /// Counts a call of kind `call` and blocks while such calls hang.
    fn enter(&self, call: ReplicaCall) {
        self.calls[call.index()].fetch_add(1, Ordering::SeqCst);
        self.gates[call.index()].pass();
    }
}

impl Replica for FaultyReplica {
    fn id(&self) -> ReplicaId {
        self.inner.id()
    }

    fn page_size(&self) -> usize {
        self.inner.page_size()
    }

    fn status(&self) -> ReplicaStatus {
        self.enter(ReplicaCall::Status);
        let mut s = self.inner.status();
        if self.down.load(Ordering::SeqCst) {
            s.available = false;
        }
        if let Some(lag) = *self.lag.lock() {
            s.lag = lag;
        }
        s
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.calls[ReplicaCall::Read.index()].fetch_add(1, Ordering::SeqCst);
        assert!(
            !self.panics.load(Ordering::SeqCst),
            "replica {} panicked reading page {page} (injected)",
            self.inner.id()
        );
        self.gates[ReplicaCall::Read.index()].pass();
        if self.read_errors.load(Ordering::SeqCst) {
            return Err(Error::Host {
                op: "a replica read",
                retryable: true,
                message: format!(
                    "replica {} failed to read page {page} (injected)",
                    self.inner.id()
                ),
            });
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::ReplicaUnavailable {
                replica: self.inner.id(),
                reason: "down (injected)".into(),
            });
        }
        self.inner.read_page(page, buf)?;
        if let Some(d) = self.damaged.lock().get(&page) {
            d.apply(buf);
        }
        Ok(())
    }

    fn range_digest(&self, first: PageId, count: u64) -> Result<u64> {
        self.enter(ReplicaCall::Digest);
        digest_by_reads(self, first, count)
    }
}

/// A [`PageSource`] wrapper (a fallback) that can be made to hang or panic
/// in its reads.
///
/// A hung read blocks the calling thread until [`set_hang(false)`](Self::set_hang)
/// releases it (then it proceeds as a normal read), like a backup store
/// behind a mount that stopped answering.
pub struct FaultySource {
    inner: Arc<dyn PageSource>,
    reads: AtomicU64,
    gate: Gate,
    panics: AtomicBool,
}

impl fmt::Debug for FaultySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultySource")
            .field("name", &self.inner.name())
            .finish_non_exhaustive()
    }
}

impl FaultySource {
    /// Wraps `inner`; no fault is armed.
    pub fn new(inner: Arc<dyn PageSource>) -> Self {
        FaultySource {
            inner,
            reads: AtomicU64::new(0),
            gate: Gate::default(),
            panics: AtomicBool::new(false),
        }
    }

    /// Makes every read block until `set_hang(false)` (which also releases
    /// the reads blocked now), or stops doing so.
    pub fn set_hang(&self, hang: bool) {
        self.gate.set_closed(hang);
    }

    /// How many reads are blocked by [`set_hang`](Self::set_hang) right now.
    #[must_use]
    pub fn hung_reads(&self) -> u64 {
        self.gate.waiting()
    }

    /// Makes every read panic (a bug in the source's code), or stops doing so.
    pub fn set_panic(&self, panic: bool) {
        self.panics.store(panic, Ordering::SeqCst);
    }

    /// How many reads it was asked for (served, refused or hung).
    #[must_use]
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

impl PageSource for FaultySource {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn read_page(&self, page: PageId, not_older_than: Option<Lsn>, buf: &mut [u8]) -> Result<bool> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        assert!(
            !self.panics.load(Ordering::SeqCst),
            "fallback {} panicked reading page {page} (injected)",
            self.inner.name()
        );
        self.gate.pass();
        self.inner.read_page(page, not_older_than, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::PageStore;
    use crate::store::{MemStore, StoreReplica};

    #[test]
    fn replica_faults() {
        let inner = Arc::new(MemStore::new(64, 2).unwrap());
        inner.write_page(PageId(0), &[7u8; 64]).unwrap();
        let r = FaultyReplica::new(Arc::new(StoreReplica::new("r", inner)));
        r.corrupt(PageId(0), Damage::Zero);
        let mut b = vec![1u8; 64];
        r.read_page(PageId(0), &mut b).unwrap();
        assert_eq!(b, vec![0u8; 64]);
        r.set_read_error(true);
        assert!(
            r.status().available,
            "a read error leaves the status as it was"
        );
        let e = r.read_page(PageId(0), &mut b).unwrap_err();
        assert!(
            e.is_retryable() && e.to_string().contains("(injected)"),
            "{e}"
        );
        r.set_read_error(false);
        r.read_page(PageId(0), &mut b).unwrap();
        r.set_down(true);
        assert!(!r.status().available);
        assert!(r.read_page(PageId(1), &mut b).unwrap_err().is_retryable());
    }

    #[test]
    fn replica_hangs_until_released_and_panics_when_told() {
        let inner = Arc::new(MemStore::new(64, 2).unwrap());
        inner.write_page(PageId(1), &[3u8; 64]).unwrap();
        let r = Arc::new(FaultyReplica::new(Arc::new(StoreReplica::new("r", inner))));
        r.set_hang(true);
        let reader = {
            let r = r.clone();
            std::thread::spawn(move || {
                let mut b = vec![0u8; 64];
                r.read_page(PageId(1), &mut b).map(|()| b[0])
            })
        };
        while r.hung_reads() == 0 {
            std::thread::yield_now();
        }
        assert!(!reader.is_finished());
        r.set_hang(false);
        assert_eq!(reader.join().unwrap().unwrap(), 3);
        assert_eq!(r.hung_reads(), 0);
        r.set_panic(true);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut b = vec![0u8; 64];
            let _ = r.read_page(PageId(1), &mut b);
        }));
        assert!(panicked.is_err());
    }
}
