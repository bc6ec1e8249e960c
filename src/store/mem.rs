//! An in-memory [`PageStore`].

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::checksum::MIN_PAGE_SIZE;
use crate::error::{Error, Result};
use crate::host::{check_page_args, check_page_span, whole_pages, PageStore};

use crate::types::PageId;

/// Pages in memory. `sync` is a no-op; useful for tests, benchmarks and as a
/// replica of pages a host keeps in memory.
///
/// ```
/// use selfheal::{MemStore, PageStore, PageId};
///
/// let store = MemStore::new(4096, 8)?;
/// store.write_page(PageId(3), &[7u8; 4096])?;
/// let mut buf = vec![0u8; 4096];
/// store.read_page(PageId(3), &mut buf)?;
/// assert_eq!(buf[0], 7);
/// # Ok::<(), selfheal::Error>(())
/// ```
#[derive(Debug)]
pub struct MemStore {
    page_size: usize,
    data: RwLock<Vec<u8>>,
    /// The page count, changed only under `data`'s write lock, so that
    /// [`page_count`](PageStore::page_count) (asked on every undo record the
    /// rollback manager takes) reads it without taking the lock.
    pages: AtomicU64,
}

impl MemStore {
    /// A store of `page_count` zeroed pages of `page_size` bytes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a page size below 64 bytes or a size that
    /// does not fit in memory.
    pub fn new(page_size: usize, page_count: u64) -> Result<Self> {
        if page_size < MIN_PAGE_SIZE {
            return Err(Error::config(
                "page_size",
                format!("is {page_size}; it must be at least {MIN_PAGE_SIZE} bytes"),
            ));
        }
        let len = usize::try_from(page_count)
            .ok()
            .and_then(|n| n.checked_mul(page_size))
            .ok_or_else(|| {
                Error::config(
                    "page_count",
                    format!("{page_count} pages of {page_size} bytes do not fit in memory"),
                )
            })?;
        Ok(MemStore {
            page_size,
            data: RwLock::new(vec![0u8; len]),
            pages: AtomicU64::new(page_count),
        })
    }

    /// Appends `n` zeroed pages.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the new size does not fit in memory.
    pub fn grow(&self, n: u64) -> Result<()> {
        let mut d = self.data.write();
        let new_len = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(self.page_size))
            .and_then(|add| add.checked_add(d.len()))
            .ok_or_else(|| Error::InvalidArgument {
                what: "n",
                reason: format!(
                    "{n} more pages of {} bytes do not fit in memory",
                    self.page_size
                ),
            })?;
        let more = new_len - d.len();
        d.try_reserve_exact(more)
            .map_err(|e| Error::InvalidArgument {
                what: "n",
                reason: format!("cannot allocate {n} more pages: {e}"),
            })?;
        d.resize(new_len, 0);
        self.pages
            .store((new_len / self.page_size) as u64, Ordering::Release);
        Ok(())
    }

    /// A copy of every page, concatenated.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        self.data.read().clone()
    }
}

impl PageStore for MemStore {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn page_count(&self) -> u64 {
        self.pages.load(Ordering::Acquire)
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        let d = self.data.read();
        check_page_args(
            page,
            (d.len() / self.page_size) as u64,
            buf.len(),
            self.page_size,
        )?;
        let off = page.0 as usize * self.page_size;
        buf.copy_from_slice(&d[off..off + self.page_size]);
        Ok(())
    }

    fn read_pages(&self, first: PageId, buf: &mut [u8]) -> Result<()> {
        let d = self.data.read();
        let count = (d.len() / self.page_size) as u64;
        let n = whole_pages(buf.len(), self.page_size)?;
        check_page_span(first, n, count)?;
        let off = first.0 as usize * self.page_size;
        buf.copy_from_slice(&d[off..off + buf.len()]);
        Ok(())
    }

    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        let mut d = self.data.write();
        check_page_args(
            page,
            (d.len() / self.page_size) as u64,
            data.len(),
            self.page_size,
        )?;
        let off = page.0 as usize * self.page_size;
        d[off..off + self.page_size].copy_from_slice(data);
        Ok(())
    }

    /// The whole batch under one write lock (a restore writes a chunk at a
    /// time; page by page, its decoding threads took turns at the lock for
    /// every page). In order, as single writes: the first page that fails
    /// stops the batch, the pages before it are written.
    fn write_pages(&self, pages: &mut [(PageId, &mut [u8])]) -> Result<()> {
        let mut d = self.data.write();
        let count = (d.len() / self.page_size) as u64;
        for (page, data) in pages.iter() {
            check_page_args(*page, count, data.len(), self.page_size)?;
            let off = page.0 as usize * self.page_size;
            d[off..off + self.page_size].copy_from_slice(data);
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn resize(&self, page_count: u64) -> Result<()> {
        let mut d = self.data.write();
        let new_len = usize::try_from(page_count)
            .ok()
            .and_then(|n| n.checked_mul(self.page_size))
            .ok_or_else(|| Error::InvalidArgument {
                what: "page_count",
                reason: format!(
                    "{page_count} pages of {} bytes do not fit in memory",
                    self.page_size
                ),
            })?;
        if new_len > d.len() {
            let more = new_len - d.len();
            d.try_reserve_exact(more)
                .map_err(|e| Error::InvalidArgument {
                    what: "page_count",
                    reason: format!("cannot allocate {page_count} pages: {e}"),
                })?;
        }
        d.resize(new_len, 0);
        self.pages.store(page_count, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `scan_pages` must not hold the store's lock while it visits: the
    /// scrubber's visit reads the page again (and a host writer may be queued
    /// on the lock in between).
    #[test]
    fn scan_visit_may_call_back_into_the_store_while_a_writer_waits() {
        let s = std::sync::Arc::new(MemStore::new(128, 64).unwrap());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    s.write_page(PageId(7), &[1u8; 128]).unwrap();
                }
            })
        };
        for _ in 0..200 {
            s.scan_pages(PageId(0), 64, &mut |p, _| {
                let mut b = vec![0u8; 128];
                s.read_page(p, &mut b)
            })
            .unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
    }

    #[test]
    fn resize_shrinks_and_grows_with_zeroed_pages() {
        let s = MemStore::new(64, 4).unwrap();
        s.write_page(PageId(3), &[9u8; 64]).unwrap();
        s.resize(2).unwrap();
        assert_eq!(s.page_count(), 2);
        let mut b = vec![0u8; 64];
        assert!(matches!(
            s.read_page(PageId(3), &mut b),
            Err(Error::PageOutOfRange { .. })
        ));
        s.resize(4).unwrap();
        s.read_page(PageId(3), &mut b).unwrap();
        assert_eq!(b, [0u8; 64], "a page added back reads as zeros");
        assert_eq!(s.page_count(), 4);
        assert!(s.resize(u64::MAX).is_err());
        assert_eq!(s.page_count(), 4, "a refused resize keeps the count");
    }

    #[test]
    fn write_pages_is_single_writes_in_order_up_to_the_first_bad_page() {
        let s = MemStore::new(64, 4).unwrap();
        let (mut a, mut b, mut c) = ([1u8; 64], [2u8; 64], [3u8; 64]);
        // Page 2 twice: the last bytes win.
        let mut batch = [
            (PageId(2), &mut a[..]),
            (PageId(0), &mut b[..]),
            (PageId(2), &mut c[..]),
        ];
        s.write_pages(&mut batch).unwrap();
        let bytes = s.to_bytes();
        assert_eq!(&bytes[..64], &[2u8; 64]);
        assert_eq!(&bytes[64..128], &[0u8; 64]);
        assert_eq!(&bytes[128..192], &[3u8; 64]);
        // A page out of range stops the batch; the pages before it are written.
        let (mut d, mut e, mut f) = ([4u8; 64], [5u8; 64], [6u8; 64]);
        let mut bad = [
            (PageId(1), &mut d[..]),
            (PageId(4), &mut e[..]),
            (PageId(3), &mut f[..]),
        ];
        assert!(matches!(
            s.write_pages(&mut bad),
            Err(Error::PageOutOfRange { page_count: 4, .. })
        ));
        let bytes = s.to_bytes();
        assert_eq!(&bytes[64..128], &[4u8; 64]);
        assert_eq!(&bytes[192..], &[0u8; 64]);
        let mut short = [0u8; 32];
        assert!(matches!(
            s.write_pages(&mut [(PageId(0), &mut short[..])]),
            Err(Error::BufferSize {
                expected: 64,
                actual: 32
            })
        ));
    }

    #[test]
    fn grow_checks_overflow() {
        let s = MemStore::new(128, 1).unwrap();
        assert!(matches!(
            s.grow(u64::MAX),
            Err(Error::InvalidArgument { .. })
        ));
        s.grow(2).unwrap();
        assert_eq!(s.page_count(), 3);
    }

    #[test]
    fn bad_input_is_typed() {
        assert!(matches!(
            MemStore::new(0, 1),
            Err(Error::InvalidConfig { .. })
        ));
        let s = MemStore::new(128, 2).unwrap();
        let mut small = vec![0u8; 64];
        assert!(matches!(
            s.read_page(PageId(0), &mut small),
            Err(Error::BufferSize {
                expected: 128,
                actual: 64
            })
        ));
        let mut buf = vec![0u8; 128];
        assert!(matches!(
            s.read_page(PageId(2), &mut buf),
            Err(Error::PageOutOfRange { page_count: 2, .. })
        ));
        let mut two = vec![0u8; 256];
        assert!(s.read_pages(PageId(1), &mut two).is_err());
        assert!(s.read_pages(PageId(0), &mut two).is_ok());
    }
}
