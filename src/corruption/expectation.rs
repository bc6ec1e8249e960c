//! The detector's side of the page-LSN rule: recording the LSN of each
//! write through the detector, and answering what LSN a page must carry.
//!
//! The rule itself, and the per-page slots it keeps, are in the
//! [`lsn`](super::lsn) module; this file only connects them to the
//! detector's page-LSN reader, its expected-LSN hook and its store.

use std::sync::atomic::Ordering;

use super::lsn::{LsnExpectation, FLOOR, NO_LSN, UNKNOWN, WRITTEN};
use super::CorruptionDetector;
use crate::types::{Lsn, PageId};

impl CorruptionDetector {
    /// Records that `bytes` were just written to `page` through the
    /// detector: from now on the page must carry exactly their LSN
    /// (nothing, when they carry none). The caller holds the page's lock,
    /// issued the write, and has checked the page exists.
    pub(crate) fn record_write_lsn(&self, page: PageId, bytes: &[u8]) {
        if self.page_lsn.is_none() {
            return;
        }
        let value = match self.page_lsn_of(bytes) {
            Some(l) if l.0 != UNKNOWN => l.0,
            _ => NO_LSN,
        };
        self.written_lsn
            .with_slots(page, |s| s[WRITTEN].store(value, Ordering::Release));
    }

    /// The LSN `page` must carry at least, when a
    /// [page-LSN reader](super::CorruptionConfig::page_lsn) is configured: the
    /// LSN of the last contents written to it through the detector in this
    /// process (`None` when they carried none), or, when nothing was written
    /// to it in this process (after a restart, or after
    /// [`forget`](Self::forget)), the host's floor from the
    /// [expected-LSN hook](super::CorruptionConfig::expected_page_lsn), which
    /// is then remembered until the next write. Verification checks it as a
    /// floor, and a page read from the store also against the exact LSN
    /// when [`lsn_expectation`](Self::lsn_expectation) says it is exact. See
    /// `corruption/lsn.rs` for the rule.
    #[must_use]
    pub fn last_written_lsn(&self, page: PageId) -> Option<Lsn> {
        self.lsn_expectation(page).floor()
    }

    /// What `page` must carry: exactly the LSN of the last write through
    /// the detector in this process, or, when nothing was written in this
    /// process, what the host's hook answers (at least its floor, or
    /// exactly the LSN its records name, see
    /// [`page_lsn_expectation`](super::CorruptionConfig::page_lsn_expectation)),
    /// or nothing (see [`LsnExpectation`]). A repair accepts only copies at
    /// an [`Exact`](LsnExpectation::Exact) LSN.
    #[must_use]
    pub fn lsn_expectation(&self, page: PageId) -> LsnExpectation {
        match self.written_lsn.load(page) {
            [NO_LSN, _] => return LsnExpectation::Nothing,
            [UNKNOWN, UNKNOWN] => {}
            [UNKNOWN, floor] => return LsnExpectation::AtLeast(Lsn(floor)),
            [known, _] => return LsnExpectation::Exact(Lsn(known)),
        }
        let answer = self
            .expected_lsn
            .as_ref()
            .map_or(LsnExpectation::Nothing, |f| f(page));
        let (slot, value) = match answer {
            LsnExpectation::Exact(l) if l.0 != UNKNOWN && l.0 != NO_LSN => (WRITTEN, l.0),
            LsnExpectation::AtLeast(l) if l.0 != UNKNOWN => (FLOOR, l.0),
            _ => return LsnExpectation::Nothing,
        };
        // Remember it only for pages that exist (the map grows with the
        // page id). A write recorded meanwhile takes precedence: an exact
        // answer takes the last-write slot only while it is empty, as if
        // the host's records were a write of this process.
        if page.0 < self.store.page_count() {
            let written = self.written_lsn.with_slots(page, |s| {
                if slot == WRITTEN {
                    match s[WRITTEN].compare_exchange(
                        UNKNOWN,
                        value,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => value,
                        Err(now) => now,
                    }
                } else {
                    s[FLOOR].store(value, Ordering::Release);
                    s[WRITTEN].load(Ordering::Acquire)
                }
            });
            match written {
                Some(NO_LSN) => return LsnExpectation::Nothing,
                Some(UNKNOWN) | None => {}
                Some(known) => return LsnExpectation::Exact(Lsn(known)),
            }
        }
        if slot == WRITTEN {
            LsnExpectation::Exact(Lsn(value))
        } else {
            LsnExpectation::AtLeast(Lsn(value))
        }
    }
}
