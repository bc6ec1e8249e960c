//! An in-memory [`PageStore`].

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
        })
    }

    /// Appends `n` zeroed pages.
    pub fn grow(&self, n: u64) {
        let mut d = self.data.write();
        let new_len = d.len() + n as usize * self.page_size;
        d.resize(new_len, 0);
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
        (self.data.read().len() / self.page_size) as u64
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

    fn scan_pages(
        &self,
        first: PageId,
        count: u64,
        visit: &mut dyn FnMut(PageId, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let d = self.data.read();
        let total = (d.len() / self.page_size) as u64;
        check_page_span(first, count, total)?;
        for p in first.0..first.0 + count {
            let off = p as usize * self.page_size;
            visit(PageId(p), &d[off..off + self.page_size])?;
        }
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

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
