//! Judging a page rebuilt from an older copy: an older version of the page
//! (a replica's copy from before a transaction wrote it) with the
//! after-images of every change since put over it, offered as the page's
//! last write when no copy of that write exists anywhere.
//!
//! # Contract
//! - [`CorruptionDetector::repair_rebuilt`] writes the rebuilt bytes only
//!   through the repair protocol: a [`RepairTicket`](super::RepairTicket)
//!   is taken first (so only a page known bad, waiting for repair, is
//!   written), and [`commit_repair`](CorruptionDetector::commit_repair)
//!   writes nothing when the host rewrote the page since (its newer page
//!   stands), then syncs, re-reads and re-verifies.
//! - The rebuilt bytes are taken only when they are the page's last write
//!   as verification would accept them read from the store: the checksum
//!   the detector holds for the page and, with a page-LSN reader, exactly
//!   the expected LSN.
//! - Under the sidecar table that is decisive: the table holds the last
//!   write's checksum, and the rebuilt bytes must match it.
//! - Under the trailer the page carries its own checksum, so nothing in the
//!   detector says what the last write's bytes were; the rebuilt page is
//!   sealed and then judged by its LSN alone. It is accepted only with a
//!   page-LSN reader, only when the older copy verifies on its own (an
//!   undamaged page), and only when the changes put over it moved its LSN
//!   forward to exactly the expected one: the caller has checked, change by
//!   change, that each before-image was what the copy held at that point
//!   (see `TransactionRollbackManager::rebuild_page`), so the copy was the
//!   version right before the oldest change, and the LSN names the version.

use super::lsn::LsnExpectation;
use super::{Commit, CorruptionDetector};
use crate::checksum::{trailer, ChecksumPlacement};
use crate::error::Result;
use crate::types::PageId;

impl CorruptionDetector {
    /// Writes `rebuilt` — `base` with after-images put over it — as the
    /// repair of `page` when it is the page's last write (see the module
    /// docs); returns whether it was written. `Ok(false)` when the page is
    /// not waiting for repair, the bytes are not its last write, or the host
    /// rewrote the page meanwhile.
    ///
    /// # Errors
    /// As [`commit_repair`](Self::commit_repair): the store's error, or a
    /// verification error of the re-read page (the page stays fenced).
    pub(crate) fn repair_rebuilt(
        &self,
        page: PageId,
        base: &[u8],
        rebuilt: &mut [u8],
    ) -> Result<bool> {
        let Some(ticket) = self.begin_repair(page) else {
            return Ok(false);
        };
        if !self.rebuilt_is_last_write(page, base, rebuilt) {
            // The dropped ticket puts the page back to wait for repair.
            return Ok(false);
        }
        match self.commit_repair(ticket, rebuilt) {
            Ok(Commit::Written) => Ok(true),
            Ok(Commit::Superseded) => Ok(false),
            Err((_ticket, e)) => Err(e),
        }
    }

    /// Whether `rebuilt` — `base` with after-images put over it — is the
    /// last write of `page` (see the module docs). Under the trailer,
    /// `rebuilt` is sealed first (its trailer is the older copy's).
    fn rebuilt_is_last_write(&self, page: PageId, base: &[u8], rebuilt: &mut [u8]) -> bool {
        debug_assert_eq!(base.len(), rebuilt.len());
        match &self.placement {
            ChecksumPlacement::Sidecar(_) => self.verifies_as_stored(page, rebuilt),
            ChecksumPlacement::Trailer => {
                if trailer::verify(page, base).is_err() {
                    return false;
                }
                let (Some(was), Some(now)) = (self.page_lsn_of(base), self.page_lsn_of(rebuilt))
                else {
                    return false;
                };
                if was >= now {
                    return false;
                }
                let LsnExpectation::Exact(expected) = self.lsn_expectation(page) else {
                    return false;
                };
                now == expected
                    && trailer::seal(page, rebuilt).is_ok()
                    && self.verifies_as_stored(page, rebuilt)
            }
        }
    }
}
