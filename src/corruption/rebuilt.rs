//! Judging a page rebuilt from an older copy: an older version of the page
//! (a replica's copy from before a transaction wrote it) with the
//! after-images of every change since put over it, offered as the page's
//! last write when no copy of that write exists anywhere.
//!
//! # Contract
//! - [`CorruptionDetector::rebuilt_is_last_write`] says yes only when the
//!   rebuilt bytes are the page's last write as verification would accept
//!   them read from the store: the checksum the detector holds for the page
//!   and, with a page-LSN reader, exactly the expected LSN.
//! - Under the sidecar table that is decisive: the table holds the last
//!   write's checksum, and the rebuilt bytes must match it.
//! - Under the trailer the page carries its own checksum, so nothing in the
//!   detector says what the last write's bytes were; the rebuilt page is
//!   sealed and then judged by its LSN alone. It is accepted only with a
//!   page-LSN reader, only when the older copy verifies on its own (an
//!   undamaged page) and only when the changes put over it moved its LSN
//!   forward to exactly the expected one: the caller has checked, change by
//!   change, that each before-image was what the copy held at that point
//!   (see `TransactionRollbackManager::rebuild_page`), so the copy was the
//!   version right before the oldest change, and the LSN names the version.
//! - Nothing is written, fenced or reported.

use super::lsn::LsnExpectation;
use super::CorruptionDetector;
use crate::checksum::{trailer, ChecksumPlacement};
use crate::types::PageId;

impl CorruptionDetector {
    /// Whether `rebuilt` — `base` with after-images put over it — is the
    /// last write of `page` (see the module docs). Under the trailer,
    /// `rebuilt` is sealed first (its trailer is the older copy's).
    pub(crate) fn rebuilt_is_last_write(
        &self,
        page: PageId,
        base: &[u8],
        rebuilt: &mut [u8],
    ) -> bool {
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
