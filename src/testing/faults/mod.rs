//! Fault-injecting wrappers around a store ([`FaultyStore`], here) and
//! around the sources of copies a repair reads, a replica and a fallback
//! source (in `sources.rs`), with the faults they inject.
//!
//! # Contract
//! - Faults are deterministic: what fires is what was armed (a write fault
//!   once, a read fault for a given number of reads, damage at rest at
//!   once), so a failing test reproduces exactly.
//! - What a wrapper did is counted ([`FaultCounts`] for a store, calls and
//!   hung calls for a replica or a fallback source).

mod sources;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::host::PageStore;
use crate::types::PageId;

pub use sources::{FaultyReplica, FaultySource, ReplicaCall};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

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
}
