//! The library's view of the main database file: fixed-size pages over
//! the VFS's own handle on it ([`RawFile`]), read and written through the
//! default VFS.
//!
//! # Contract
//! - The page count is read once when the store is made and changed only by
//!   [`PageStore::resize`]: every write of the file goes through this store,
//!   and a write past the end is refused, so a read costs no `fstat`.
//! - `sync` uses the `SQLITE_SYNC_*` flags of SQLite's last `xSync`.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

use super::raw::{RawFile, Rc};
use crate::error::{Error, Result};
use crate::host::PageStore;
use crate::PageId;

/// The library's view of the database file: fixed-size pages over the
/// [`RawFile`].
#[derive(Debug)]
pub(super) struct SqlitePageStore {
    pub(super) raw: Arc<RawFile>,
    pub(super) page_size: usize,
    /// The `SQLITE_SYNC_*` flags of SQLite's last `xSync`, used by `sync`.
    pub(super) sync_flags: AtomicI32,
    /// Pages in the file: read once at open, then changed only by `resize`
    /// (every write of the file goes through this store, and a write past
    /// the end is refused), so a read costs no `fstat`.
    pub(super) pages: AtomicU64,
}

impl SqlitePageStore {
    fn offset(&self, page: PageId) -> Result<u64> {
        page.0
            .checked_mul(self.page_size as u64)
            .ok_or(Error::PageOutOfRange {
                page,
                page_count: self.page_count(),
            })
    }
}

impl PageStore for SqlitePageStore {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn page_count(&self) -> u64 {
        self.pages.load(Ordering::Acquire)
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        crate::host::check_page_args(page, self.page_count(), buf.len(), self.page_size)?;
        let off = self.offset(page)?;
        self.raw
            .read_at(buf, off)
            .map_err(|rc| host_error("read", rc))
    }

    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        crate::host::check_page_args(page, self.page_count(), data.len(), self.page_size)?;
        let off = self.offset(page)?;
        self.raw
            .write_at(data, off)
            .map_err(|rc| host_error("write", rc))
    }

    fn resize(&self, page_count: u64) -> Result<()> {
        let bytes = page_count
            .checked_mul(self.page_size as u64)
            .ok_or_else(|| Error::InvalidArgument {
                what: "page_count",
                reason: format!("{page_count} pages do not fit a file"),
            })?;
        self.raw
            .truncate(bytes)
            .map_err(|rc| host_error("truncate", rc))?;
        self.pages.store(page_count, Ordering::Release);
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.raw
            .sync(self.sync_flags.load(Ordering::Relaxed))
            .map_err(|rc| host_error("sync", rc))
    }
}

/// The error of a default-VFS call that answered `rc`.
pub(super) fn host_error(op: &'static str, rc: Rc) -> Error {
    Error::Host {
        op,
        retryable: false,
        message: format!("the default SQLite VFS answered result code {rc}"),
    }
}
