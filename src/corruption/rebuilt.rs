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
//!   stands), then syncs, re-reads and re-verifies. Bytes that are refused
//!   leave the page in the state it had (irreparable, or suspect).
//! - The rebuilt bytes are taken only when they are the page's last write
//!   as verification would accept them read from the store, and by the
//!   newest record the detector has of that write:
//! - Under the sidecar table, the rebuilt bytes must match the table's
//!   **newest** checksum of the page (a durable table also accepts the
//!   versions written since its last settle; those are not the last write)
//!   and, with a page-LSN reader, the expected LSN (exact where the
//!   detector knows it exactly, else at least its floor). After a crash or
//!   a failed store write the newest checksum is the newest *logged intent*,
//!   whose page write may never have happened: bytes matching it are that
//!   intent's, which is either the last write or a version the rollback
//!   reverts all the same (the pre-transaction copy with durable
//!   after-images only); anything else is refused.
//! - Under the trailer the page carries its own checksum, so nothing in the
//!   detector says what the last write's bytes were; the rebuilt page is
//!   sealed and then judged by its LSN alone. It is accepted only with a
//!   page-LSN reader and an exact expectation (in the process, the last
//!   write through the detector; after a restart, the host's
//!   [exact-LSN hook](super::CorruptionConfig::page_lsn_expectation)), only
//!   when the older copy verifies on its own (an undamaged page) and carries
//!   an LSN that names a version (not 0 or `u64::MAX`), and only when the changes put over
//!   it moved that LSN forward to exactly the expected one. The caller has
//!   checked, change by change, that each before-image was what the copy
//!   held where the change went (see
//!   `TransactionRollbackManager::rebuild_page`); since the changes moved
//!   the LSN, its field is among the bytes checked, so the copy carries the
//!   LSN from before the oldest change — and an LSN names one version
//!   **if every write of the page carries a new LSN and the host records
//!   undo for the LSN field with the bytes it changes**, which the page-LSN
//!   rule assumes. A host write that changes bytes without a new LSN cannot
//!   be told from the version before it.

use super::lsn::{LsnExpectation, NO_LSN, UNKNOWN};
use super::{Commit, CorruptionDetector, PageState};
use crate::checksum::{trailer, ChecksumPlacement};
use crate::digest::page_crc;
use crate::error::Result;
use crate::types::{Lsn, PageId};

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
        let was_irreparable = self.page_state(page) == Some(PageState::Irreparable);
        let Some(ticket) = self.begin_repair(page) else {
            return Ok(false);
        };
        if !self.rebuilt_is_last_write(page, base, rebuilt) {
            // The page goes back to the state it had: irreparable, or (the
            // dropped ticket) suspect, waiting for a repair.
            if was_irreparable {
                self.abandon_repair(ticket);
            }
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
            // The newest checksum, not any the table would accept: a durable
            // table also accepts the versions written since its last settle.
            ChecksumPlacement::Sidecar(table) => {
                table.get(page) == Some(page_crc(page, rebuilt))
                    && self.verifies_as_stored(page, rebuilt)
            }
            ChecksumPlacement::Trailer => {
                if trailer::verify(page, base).is_err() {
                    return false;
                }
                let (Some(was), Some(now)) = (self.page_lsn_of(base), self.page_lsn_of(rebuilt))
                else {
                    return false;
                };
                // 0 and `u64::MAX` name no version (see `lsn.rs`).
                let names_a_version = |l: Lsn| l.0 != UNKNOWN && l.0 != NO_LSN;
                if !names_a_version(was) || !names_a_version(now) || was >= now {
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
