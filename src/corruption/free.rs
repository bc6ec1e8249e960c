//! Unallocated pages: pages the host's own metadata calls free, which hold
//! nothing to protect and are never reported as damage.
//!
//! An engine with a free list leaves free pages as they are, or zeroes them
//! (SQLite with `secure_delete`, on by default in some distributions' builds,
//! writes zeros over every page it frees). Such a page was never sealed, or
//! was sealed with contents that no longer matter; reporting it would raise a
//! false alarm at every scrub and send a repair that has nothing to do.
//!
//! # How a host says which pages are free
//!
//! * A callback, [`CorruptionConfig::free_pages`](super::CorruptionConfig::free_pages):
//!   the host answers from its own metadata, so the answer survives a
//!   restart with no state in the library. It is asked only when a page
//!   fails verification (never on the path of a page that verifies), with no
//!   lock of the detector held, so it may read pages; it must not resize the
//!   store. It should be cheap: a scrub asks it once per failing page.
//!
//!   **It must answer from the host's current metadata, every time it is
//!   asked.** Because it is asked only once a page has failed, a wrong
//!   "free" is never contradicted: an answer from a copy of the free list
//!   taken once (at startup, at adoption) calls a page that the host has
//!   reused since "free", and damage to that page — a page in use, holding
//!   live data — is then never reported, never fenced and never repaired,
//!   and its reads fail with [`Error::PageUnallocated`] instead of a
//!   corruption error. A host that knows its free pages only at one moment
//!   uses `forget` instead (below): a write through the detector clears the
//!   mark by itself.
//! * An explicit mark, [`CorruptionDetector::forget`]: in the sidecar
//!   placement the mark is kept in the [`ChecksumTable`](crate::ChecksumTable)
//!   like a checksum — saved with an in-memory table; in a durable table
//!   logged, and durable before `forget` returns, so it survives a restart
//!   and a crash at any step (the page is then either free or as it was) —
//!   in the trailer placement it is kept in memory and a host marks its free
//!   pages again after a restart (or gives the callback). A write through
//!   the detector puts the page back in use and seals it; a durable table
//!   keeps the mark until a sync settles the write (a crash before that may
//!   leave the page free again, never damaged). This is the safe way to
//!   declare the free pages at adoption: `forget` each page of the free
//!   list right after adopting (or before), and the marks follow the
//!   host's reuse of the pages with nothing else to keep in step.
//!
//! # What an unallocated page means
//!
//! | operation                      | a page that fails verification and is unallocated      |
//! |--------------------------------|--------------------------------------------------------|
//! | verified read                  | [`Error::PageUnallocated`]: bytes nobody vouches for are never served as verified |
//! | scrub                          | skipped: [`Verdict::Unallocated`](super::Verdict::Unallocated), counted, not reported, not fenced |
//! | repair                         | nothing to repair ([`RepairOutcome::NotNeeded`](crate::repair::RepairOutcome::NotNeeded)), never irreparable: a fence left from before the page was freed is dropped |
//! | host write through the detector | seals the page as usual; the page is in use again     |
//! | a transaction's write ([`TransactionRollbackManager::write`](crate::TransactionRollbackManager::write)) | its contents are taken to be zeros (the before-image); the write seals the page and it is in use again; a rollback puts the zeros back, sealed, or leaves the page alone if it is free again by then |
//! | snapshot through the detector  | stored as zeros; a restore writes zeros (sealed, in a detector): no alarm |
//!
//! A page whose bytes *verify* is served whatever the host says about it: its
//! bytes were sealed for it. A page the host says is in use is checked like
//! any other, so a zeroed page in use is still [`Error::ZeroedPage`].
//!
//! A wrong answer from the host costs what it says: a page called free that
//! is in use loses its protection (its damage is not reported: see the
//! callback's rule above), and a free page called in use raises the alarm
//! it always did.

use super::CorruptionDetector;
use crate::checksum::ChecksumPlacement;
use crate::error::{Error, Result};
use crate::types::PageId;

#[cfg(doc)]
use super::free_map::FreePageFn;

impl CorruptionDetector {
    /// Whether `page` is marked unallocated with [`forget`](Self::forget)
    /// (in the sidecar table, or in memory in the trailer placement).
    pub(crate) fn marked_free(&self, page: PageId) -> bool {
        match &self.placement {
            ChecksumPlacement::Sidecar(t) => t.is_free(page),
            ChecksumPlacement::Trailer => self.freed.get(page),
        }
    }

    /// Whether the host says `page` is unallocated: marked with
    /// [`forget`](Self::forget), or so answered by the
    /// [free-page callback](super::CorruptionConfig::free_pages). Asks the
    /// callback, so it is called with no page lock held.
    #[must_use]
    pub fn is_unallocated(&self, page: PageId) -> bool {
        self.marked_free(page) || self.free_pages.as_ref().is_some_and(|f| f(page))
    }

    /// Marks `page` unallocated: the host freed it. Its checksum is
    /// forgotten (sidecar) and a later failure to verify is
    /// [`Verdict::Unallocated`](super::Verdict::Unallocated), not damage; a
    /// fence on it and any repair in flight are dropped. A later write
    /// through the detector seals the page and puts it back in use. See the
    /// [module docs](self) for where the mark is kept and how it survives a
    /// restart; with a durable sidecar table the mark is durable when this
    /// returns (one log fsync, made with the page's lock held, so no write
    /// of the page through the detector overtakes it).
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] for a page past the end of the store;
    /// [`Error::InvalidArgument`] when the mark cannot be stored; a durable
    /// table's log error (the table is then poisoned: nothing is forgotten
    /// beyond its in-memory mark) or [`Error::Poisoned`].
    pub fn forget(&self, page: PageId) -> Result<()> {
        let _g = self.stripe(page);
        let page_count = self.store.page_count();
        if page.0 >= page_count {
            return Err(Error::PageOutOfRange { page, page_count });
        }
        match &self.placement {
            ChecksumPlacement::Sidecar(t) => t.mark_free(page)?,
            ChecksumPlacement::Trailer => self.freed.set(page)?,
        }
        self.registry.lock().on_freed(page);
        // A freed page has no last write: its next contents start afresh.
        self.written_lsn.clear(page);
        Ok(())
    }
}
