//! Fault-injecting wrappers around a store, a replica and a fallback source.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::host::{digest_by_reads, PageSource, PageStore, Replica, ReplicaLag, ReplicaStatus};
use crate::types::{Lsn, PageId, ReplicaId};

/// Damage done to a page's bytes at rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// Flip one bit: byte `byte % page_size`, bit `bit % 8`.
    BitFlip {
        /// Byte index (taken modulo the page size).
        byte: usize,
        /// Bit index (taken modulo 8).
        bit: u8,
    },
    /// Zero the whole page (a lost or trimmed sector).
    Zero,
    /// Overwrite the whole page with seeded random bytes.
    Junk {
        /// Seed of the bytes.
        seed: u64,
    },
}

impl Damage {
    /// Applies the damage to `buf` in place.
    pub fn apply(self, buf: &mut [u8]) {
        if buf.is_empty() {
            return;
        }
        match self {
            Damage::BitFlip { byte, bit } => {
                let i = byte % buf.len();
                buf[i] ^= 1 << (bit % 8);
            }
            Damage::Zero => buf.fill(0),
            Damage::Junk { seed } => rand::rngs::StdRng::seed_from_u64(seed).fill(buf),
        }
    }
}

/// What goes wrong with a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteFault {
    /// Only the first `new_bytes` bytes of the new page reach the medium; the
    /// rest keeps the old contents. The write reports success.
    Torn {
        /// How many leading bytes of the new page are written.
        new_bytes: usize,
    },
    /// The right bytes land on the wrong page. The write reports success.
    Misdirected {
        /// Where they land instead.
        to: PageId,
    },
    /// Nothing is written, and the write reports success.
    Lost,
    /// The write fails with `EIO`; nothing is written.
    Eio,
    /// The write fails with `ENOSPC`; nothing is written.
    NoSpace,
}

/// What goes wrong with a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadFault {
    /// The read fails with `EIO`.
    Eio,
    /// The read returns the page with one bit flipped (a transient fault on
    /// the path: the stored bytes are fine).
    TransientBitFlip,
    /// The read panics (a bug in the host's store code): what a background
    /// reader (the scrub thread) must survive and report.
    Panic,
}

#[derive(Debug, Default)]
struct FaultState {
    /// One-shot write faults, per page (`None` = the next write to any page).
    writes: HashMap<Option<PageId>, VecDeque<WriteFault>>,
    /// Read faults and how many more reads they hit.
    reads: HashMap<Option<PageId>, (ReadFault, u32)>,
    /// How many more syncs fail.
    failing_syncs: u32,
}

/// Counters of what a [`FaultyStore`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FaultCounts {
    /// Reads served (including failed ones).
    pub reads: u64,
    /// Writes attempted.
    pub writes: u64,
    /// Syncs attempted (including failed ones).
    pub syncs: u64,
    /// Faults that fired.
    pub injected: u64,
}

/// A [`PageStore`] wrapper that injects faults into an inner store.
///
/// At-rest damage ([`damage`](Self::damage)) changes the inner store's bytes
/// now. Write faults are queued one-shot per page; read faults hit a given
/// number of reads. Batch reads and scans use the trait's per-page defaults,
/// so every page read passes through the read faults (the inner store's own
/// batched or memory-mapped paths are not exercised through this wrapper).
///
/// ```
/// use std::sync::Arc;
/// use selfheal::{MemStore, PageStore, PageId};
/// use selfheal::testing::{FaultyStore, WriteFault};
///
/// let store = FaultyStore::new(Arc::new(MemStore::new(128, 4)?));
/// store.fail_next_write(Some(PageId(1)), WriteFault::Lost);
/// store.write_page(PageId(1), &[9u8; 128])?; // reports success...
/// let mut buf = vec![0u8; 128];
/// store.read_page(PageId(1), &mut buf)?;
/// assert_eq!(buf[0], 0); // ...but nothing was written
/// # Ok::<(), selfheal::Error>(())
/// ```
pub struct FaultyStore {
    inner: Arc<dyn PageStore>,
    state: Mutex<FaultState>,
    reads: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    injected: AtomicU64,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

impl FaultyStore {
    /// Wraps `inner`; no fault is armed.
    pub fn new(inner: Arc<dyn PageStore>) -> Self {
        FaultyStore {
            inner,
            state: Mutex::new(FaultState::default()),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    /// The wrapped store (writes to it bypass every fault).
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn PageStore> {
        &self.inner
    }

    /// Damages `page` at rest, now.
    ///
    /// # Errors
    /// The inner store's read or write error.
    pub fn damage(&self, page: PageId, damage: Damage) -> Result<()> {
        let mut buf = vec![0u8; self.inner.page_size()];
        self.inner.read_page(page, &mut buf)?;
        damage.apply(&mut buf);
        self.inner.write_page(page, &buf)?;
        self.injected.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Arms a one-shot fault for the next write to `page` (or to any page for `None`).
    pub fn fail_next_write(&self, page: Option<PageId>, fault: WriteFault) {
        self.state
            .lock()
            .writes
            .entry(page)
            .or_default()
            .push_back(fault);
    }

    /// Makes the next `times` reads of `page` (or of any page for `None`)
    /// fail with `fault`; `times == 0` disarms it.
    pub fn fail_reads(&self, page: Option<PageId>, fault: ReadFault, times: u32) {
        let mut st = self.state.lock();
        if times == 0 {
            st.reads.remove(&page);
        } else {
            st.reads.insert(page, (fault, times));
        }
    }

    /// Makes the next `times` syncs fail with `EIO`.
    pub fn fail_syncs(&self, times: u32) {
        self.state.lock().failing_syncs = times;
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        *self.state.lock() = FaultState::default();
    }

    /// What the store did so far.
    #[must_use]
    pub fn counts(&self) -> FaultCounts {
        FaultCounts {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            injected: self.injected.load(Ordering::Relaxed),
        }
    }

    fn take_read_fault(&self, page: PageId) -> Option<ReadFault> {
        let mut st = self.state.lock();
        for key in [Some(page), None] {
            if let Some((fault, left)) = st.reads.get_mut(&key) {
                let fault = *fault;
                *left -= 1;
                if *left == 0 {
                    st.reads.remove(&key);
                }
                self.injected.fetch_add(1, Ordering::Relaxed);
                return Some(fault);
            }
        }
        None
    }

    fn take_write_fault(&self, page: PageId) -> Option<WriteFault> {
        let mut st = self.state.lock();
        for key in [Some(page), None] {
            if let Some(q) = st.writes.get_mut(&key) {
                if let Some(f) = q.pop_front() {
                    if q.is_empty() {
                        st.writes.remove(&key);
                    }
                    self.injected.fetch_add(1, Ordering::Relaxed);
                    return Some(f);
                }
            }
        }
        None
    }
}

impl PageStore for FaultyStore {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }

    fn page_count(&self) -> u64 {
        self.inner.page_count()
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        match self.take_read_fault(page) {
            Some(ReadFault::Eio) => Err(Error::io(format!("reading page {page}"), eio())),
            Some(ReadFault::TransientBitFlip) => {
                self.inner.read_page(page, buf)?;
                Damage::BitFlip {
                    byte: buf.len() / 2,
                    bit: 3,
                }
                .apply(buf);
                Ok(())
            }
            Some(ReadFault::Panic) => panic!("reading page {page} panicked (injected)"),
            None => self.inner.read_page(page, buf),
        }
    }

    /// With no read fault armed when the scan starts, the inner store's own
    /// scan runs (a `FileStore`'s mmap path, say), so a scan through the
    /// injector costs what it costs without it; every page it visits counts
    /// as a read. With a read fault armed, pages are read one call at a time
    /// so that the fault hits.
    fn scan_pages(
        &self,
        first: PageId,
        count: u64,
        visit: &mut dyn FnMut(PageId, &[u8]) -> Result<()>,
    ) -> Result<()> {
        if !self.state.lock().reads.is_empty() {
            return crate::host::scan_in_batches(self, first, count, visit);
        }
        self.inner.scan_pages(first, count, &mut |page, bytes| {
            self.reads.fetch_add(1, Ordering::Relaxed);
            visit(page, bytes)
        })
    }

    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        match self.take_write_fault(page) {
            None => self.inner.write_page(page, data),
            Some(WriteFault::Lost) => {
                crate::host::check_page_args(
                    page,
                    self.inner.page_count(),
                    data.len(),
                    self.inner.page_size(),
                )?;
                Ok(())
            }
            Some(WriteFault::Eio) => Err(Error::io(format!("writing page {page}"), eio())),
            Some(WriteFault::NoSpace) => Err(Error::io(format!("writing page {page}"), enospc())),
            Some(WriteFault::Misdirected { to }) => self.inner.write_page(to, data),
            Some(WriteFault::Torn { new_bytes }) => {
                let mut cur = vec![0u8; self.inner.page_size()];
                self.inner.read_page(page, &mut cur)?;
                let n = new_bytes.min(data.len());
                cur[..n].copy_from_slice(&data[..n]);
                self.inner.write_page(page, &cur)
            }
        }
    }

    fn sync(&self) -> Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = self.state.lock();
            if st.failing_syncs > 0 {
                st.failing_syncs -= 1;
                self.injected.fetch_add(1, Ordering::Relaxed);
                return Err(Error::io("syncing the store", eio()));
            }
        }
        self.inner.sync()
    }

    fn resize(&self, page_count: u64) -> Result<()> {
        self.inner.resize(page_count)
    }
}

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
    use crate::store::{MemStore, StoreReplica};

    fn store() -> FaultyStore {
        FaultyStore::new(Arc::new(MemStore::new(64, 4).unwrap()))
    }

    #[test]
    fn torn_write_mixes_new_and_old() {
        let s = store();
        s.write_page(PageId(0), &[1u8; 64]).unwrap();
        s.fail_next_write(Some(PageId(0)), WriteFault::Torn { new_bytes: 10 });
        s.write_page(PageId(0), &[2u8; 64]).unwrap();
        let mut b = vec![0u8; 64];
        s.read_page(PageId(0), &mut b).unwrap();
        assert_eq!(&b[..10], &[2u8; 10]);
        assert_eq!(&b[10..], &[1u8; 54]);
    }

    #[test]
    fn misdirected_and_errors() {
        let s = store();
        s.fail_next_write(None, WriteFault::Misdirected { to: PageId(3) });
        s.write_page(PageId(1), &[5u8; 64]).unwrap();
        let mut b = vec![0u8; 64];
        s.read_page(PageId(3), &mut b).unwrap();
        assert_eq!(b[0], 5);
        s.read_page(PageId(1), &mut b).unwrap();
        assert_eq!(b[0], 0);
        s.fail_next_write(None, WriteFault::NoSpace);
        let e = s.write_page(PageId(1), &[5u8; 64]).unwrap_err();
        assert!(e.to_string().contains("No space"), "{e}");
        s.fail_reads(Some(PageId(2)), ReadFault::Eio, 2);
        assert!(s.read_page(PageId(2), &mut b).is_err());
        assert!(s.read_page(PageId(2), &mut b).is_err());
        assert!(s.read_page(PageId(2), &mut b).is_ok());
        s.fail_syncs(1);
        assert!(s.sync().is_err());
        assert!(s.sync().is_ok());
        assert_eq!(s.counts().injected, 5);
        assert_eq!(s.counts().syncs, 2);
    }

    /// A store that counts the scans it runs itself.
    #[derive(Debug)]
    struct ScanCounting {
        inner: MemStore,
        scans: AtomicU64,
    }

    impl PageStore for ScanCounting {
        fn page_size(&self) -> usize {
            self.inner.page_size()
        }
        fn page_count(&self) -> u64 {
            self.inner.page_count()
        }
        fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
            self.inner.read_page(page, buf)
        }
        fn scan_pages(
            &self,
            first: PageId,
            count: u64,
            visit: &mut dyn FnMut(PageId, &[u8]) -> Result<()>,
        ) -> Result<()> {
            self.scans.fetch_add(1, Ordering::Relaxed);
            self.inner.scan_pages(first, count, visit)
        }
        fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
            self.inner.write_page(page, data)
        }
        fn sync(&self) -> Result<()> {
            self.inner.sync()
        }
    }

    #[test]
    fn a_scan_runs_the_inner_scan_unless_a_read_fault_is_armed() {
        let inner = Arc::new(ScanCounting {
            inner: MemStore::new(64, 8).unwrap(),
            scans: AtomicU64::new(0),
        });
        let s = FaultyStore::new(inner.clone());
        for p in 0..8 {
            s.write_page(PageId(p), &[p as u8 + 1; 64]).unwrap();
        }
        let mut seen = Vec::new();
        s.scan_pages(PageId(0), 8, &mut |p, b| {
            seen.push((p.0, b[0]));
            Ok(())
        })
        .unwrap();
        assert_eq!(inner.scans.load(Ordering::Relaxed), 1);
        assert_eq!(seen, (0..8).map(|p| (p, p as u8 + 1)).collect::<Vec<_>>());
        assert_eq!(s.counts().reads, 8, "every visited page counts as a read");

        s.fail_reads(Some(PageId(5)), ReadFault::Eio, 1);
        let e = s.scan_pages(PageId(0), 8, &mut |_, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains("page 5"), "{e}");
        assert_eq!(
            inner.scans.load(Ordering::Relaxed),
            1,
            "an armed fault is applied page by page, not by the inner scan"
        );
    }

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
