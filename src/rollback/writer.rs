//! The [`PageWriter`] seam rollback reads and writes pages through, its two
//! implementations, and the optional repair hook.
//!
//! Every read on the rollback path is a verified read where the writer can
//! verify: the [`CorruptionDetector`] refuses fenced pages and fences (and
//! reports) a page that fails, so rollback never patches and reseals bytes
//! it has not verified. A page that fails is handed to the
//! [repair hook](RepairHook), if one is configured, and read again; if it
//! still fails, the write or rollback that needed it gives up on it with a
//! typed error naming the page.
//!
//! A page the host calls unallocated ([`Error::PageUnallocated`]: it fails
//! verification and the host freed it) is not damage: its bytes mean
//! nothing. A transaction may reuse it: its current contents are taken to
//! be zeros (the before-image is zeros, never the unverified raw bytes), and
//! the write seals the page with the transaction's bytes and zeros around
//! them. A rollback puts the zeros back (sealed: the page verifies and holds
//! nothing), or, when the page is unallocated again by then (freed again, or
//! a crash left its free mark), leaves it as it is: there is nothing of the
//! transaction on a free page to undo.

use std::fmt;
use std::sync::Arc;

use crate::checksum::{ChecksumPlacement, TRAILER_LEN};
use crate::corruption::CorruptionDetector;
use crate::error::{Error, Result};
use crate::host::PageStore;
use crate::types::PageId;

/// Where rollback reads and writes pages.
pub trait PageWriter: Send + Sync + fmt::Debug {
    /// The page size in bytes.
    fn page_size(&self) -> usize;

    /// How many pages there are.
    fn page_count(&self) -> u64;

    /// How many bytes at the start of each page a transaction may change
    /// (default: the whole page). A writer that keeps bytes of its own in
    /// the page (the detector's checksum trailer) returns fewer: a change
    /// there would be overwritten by the seal, so it is refused.
    fn usable_len(&self) -> usize {
        self.page_size()
    }

    /// Reads `page`. A writer that can verify pages returns only bytes that
    /// verify: a page that fails is an error for which
    /// [`is_page_failure`] holds (it is fenced and reported), never its
    /// bytes.
    ///
    /// # Errors
    /// The verification error, [`Error::PageFenced`], or the store's error.
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()>;

    /// Writes `buf` as `page`. May change `buf` first (a checksum trailer);
    /// the bytes in `buf` when it returns are what a re-read must give.
    ///
    /// # Errors
    /// The store's error.
    fn write_page(&self, page: PageId, buf: &mut [u8]) -> Result<()>;

    /// Makes every write durable.
    ///
    /// # Errors
    /// The store's error.
    fn sync(&self) -> Result<()>;

    /// Reads `page` as the store holds it, unverified (default:
    /// [`read_page`](Self::read_page)). Rollback uses it only for a page
    /// that failed [`read_page`](Self::read_page), to tell whether the
    /// failure is a torn write of the transactions it rolls back (see
    /// [`is_last_write`](Self::is_last_write)); it never writes those bytes
    /// back unless that test passes.
    ///
    /// # Errors
    /// The store's error.
    fn read_unverified(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.read_page(page, buf)
    }

    /// Whether `bytes` are exactly the last contents written to `page`
    /// through this writer, as verification would accept them read from the
    /// store (default: `false`, nothing is known). A writer that can verify
    /// pages answers from its checksums and page LSNs.
    fn is_last_write(&self, page: PageId, bytes: &[u8]) -> bool {
        let _ = (page, bytes);
        false
    }

    /// Writes `rebuilt` — `base`, an older copy of `page` from elsewhere (a
    /// replica), with the after-images of the undo held for the page put
    /// over it — as the page's repair, when it is exactly the page's last
    /// write as verification would accept it read from the store, and only
    /// while no other write reached the page since it was found bad; returns
    /// whether it was written (default: `Ok(false)`, nothing is known). The
    /// writer may seal `rebuilt` first where the checksum lives in the
    /// page. Used by
    /// [`rebuild_page`](super::TransactionRollbackManager::rebuild_page),
    /// which has already checked each before-image against the bytes it
    /// replaces.
    ///
    /// # Errors
    /// The store's error, or a verification error of the page re-read
    /// after the write.
    fn repair_rebuilt(&self, page: PageId, base: &[u8], rebuilt: &mut [u8]) -> Result<bool> {
        let _ = (page, base, rebuilt);
        Ok(false)
    }
}

/// Whether `e` says that a page's bytes cannot be trusted (a verification
/// failure, or a page fenced for one) rather than that the call failed.
#[must_use]
pub fn is_page_failure(e: &Error) -> bool {
    e.is_corruption() || matches!(e, Error::PageFenced { .. })
}

/// Called for a page that failed verification on the rollback path, before
/// the write or rollback that needed it gives up: `Ok(true)` means the page
/// was repaired (from a replica or a snapshot) and is read again; `Ok(false)`
/// or an error means it stays failed. The manager holds its latch of that
/// page during the call, so the hook must not call back into the manager
/// for that page: a write or rollback of it would deadlock, and a
/// [`rebuild_page`](super::TransactionRollbackManager::rebuild_page) of it
/// (which a repair reaches through a rebuilder) is refused at once, typed. Keeps the rollback module independent of the repairer,
/// which a host (or an orchestrator) wires in here.
pub type RepairHook = Arc<dyn Fn(PageId) -> Result<bool> + Send + Sync>;

/// A [`PageWriter`] over a bare [`PageStore`]: bytes go in and come out as
/// they are (there is nothing to verify them against).
#[derive(Debug, Clone)]
pub struct RawPages(pub Arc<dyn PageStore>);

impl RawPages {
    /// Wraps `store` for the manager.
    #[must_use]
    pub fn shared(store: Arc<dyn PageStore>) -> Arc<dyn PageWriter> {
        Arc::new(RawPages(store))
    }
}

impl PageWriter for RawPages {
    fn page_size(&self) -> usize {
        self.0.page_size()
    }

    fn page_count(&self) -> u64 {
        self.0.page_count()
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.0.read_page(page, buf)
    }

    fn write_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.0.write_page(page, buf)
    }

    fn sync(&self) -> Result<()> {
        self.0.sync()
    }
}

/// A protected store: reads are verified
/// ([`read_verified`](CorruptionDetector::read_verified): a fenced page is
/// refused, a page that fails is fenced and reported), writes are sealed so
/// that checksums stay current. A page torn by a crash fails verification
/// like any other damage: recovery leaves it fenced and the transaction
/// pending until the page is repaired from a replica or a snapshot (see the
/// [rollback module docs](crate::rollback#pages-that-fail-verification)).
impl PageWriter for CorruptionDetector {
    fn page_size(&self) -> usize {
        self.store().page_size()
    }

    fn page_count(&self) -> u64 {
        self.store().page_count()
    }

    fn usable_len(&self) -> usize {
        match self.placement() {
            ChecksumPlacement::Trailer => self.store().page_size().saturating_sub(TRAILER_LEN),
            ChecksumPlacement::Sidecar(_) => self.store().page_size(),
        }
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.read_verified(page, buf)
    }

    fn write_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.write_sealed(page, buf)
    }

    /// Syncs through the detector, so that a durable sidecar table settles
    /// the checksums of the pages rollback wrote.
    fn sync(&self) -> Result<()> {
        CorruptionDetector::sync(self)
    }

    fn read_unverified(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.store().read_page(page, buf)
    }

    /// The page's checksum (trailer, or an accepted version in the sidecar
    /// table) and, with a page-LSN reader, exactly the expected LSN.
    fn is_last_write(&self, page: PageId, bytes: &[u8]) -> bool {
        self.verifies_as_stored(page, bytes)
    }

    /// Through the detector's repair protocol (a ticket, so a newer host
    /// write stands; the write synced, re-read and re-verified), when the
    /// bytes are the last write: under the sidecar table, its newest
    /// checksum and, with a page-LSN reader, the exact LSN where it is known
    /// (else at least the floor); under the trailer (with a page-LSN reader
    /// and an exact expectation only), an older copy that verifies on its
    /// own, moved forward to exactly the expected LSN (see
    /// `corruption/rebuilt.rs`).
    fn repair_rebuilt(&self, page: PageId, base: &[u8], rebuilt: &mut [u8]) -> Result<bool> {
        CorruptionDetector::repair_rebuilt(self, page, base, rebuilt)
    }
}

/// Reads `page` for a change by a transaction: as [`read_checked`], but the
/// contents of a page the writer calls unallocated are zeros (see the
/// module docs).
pub(super) fn read_for_change(
    pages: &dyn PageWriter,
    hook: Option<&RepairHook>,
    page: PageId,
    buf: &mut [u8],
) -> Result<()> {
    match read_checked(pages, hook, page, buf) {
        Err(Error::PageUnallocated { .. }) => {
            buf.fill(0);
            Ok(())
        }
        other => other,
    }
}

/// Reads `page` through `pages`; on a page failure calls `hook` (if any) and,
/// when it reports a repair, reads once more.
pub(super) fn read_checked(
    pages: &dyn PageWriter,
    hook: Option<&RepairHook>,
    page: PageId,
    buf: &mut [u8],
) -> Result<()> {
    match pages.read_page(page, buf) {
        Err(e) if is_page_failure(&e) => {
            let Some(hook) = hook else { return Err(e) };
            match hook(page) {
                Ok(true) => pages.read_page(page, buf),
                Ok(false) => Err(e),
                Err(h) => {
                    tracing::warn!(%page, error = %h, "repair hook failed");
                    Err(e)
                }
            }
        }
        other => other,
    }
}
