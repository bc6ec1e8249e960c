//! The lost-write check: which LSN a page must carry at least.
//!
//! With a [page-LSN reader](super::DetectorConfig::page_lsn) the detector
//! refuses bytes older than what the page should hold
//! ([`Error::StalePage`](crate::Error::StalePage)). The rule is: **a page is
//! not older than the last write through the detector**. That write defines
//! the expectation, whatever LSN it carries — a rollback that puts a
//! before-image back, or a restore of an older snapshot, writes an older
//! page LSN on purpose, and from then on the older LSN is the truth. So
//! every write through the detector (host writes and batches, rollback and
//! restore through them, repair commits,
//! [`replace_if_unchanged`](super::CorruptionDetector::replace_if_unchanged))
//! *stores* the LSN its bytes carry, under the page's lock, with the write.
//! Bytes that carry no LSN (the reader answers `None` or `Lsn(0)`) expect
//! nothing.
//!
//! Adoption is not a write of a new version: it writes back (trailer) or
//! records (sidecar) the bytes the page already holds, so it leaves the
//! expectation as it is, and a page that adoption sealed but that is older
//! than the expectation (or the host's floor) is refused as stale at its
//! next verification.
//!
//! Memory is empty after a restart. For a page not written in this process
//! the detector asks the host's
//! [expected-LSN hook](super::DetectorConfig::expected_page_lsn), which
//! answers a *floor* from the host's durable records, and remembers the
//! answer — unless a write got there first: after a write in this process,
//! memory has the truth and the hook is not asked. A page the host
//! [forgets](super::CorruptionDetector::forget) has no last write any more.
//!
//! Each page has one 64-bit slot: 0 when nothing is known (the hook is
//! asked), a marker when the last write carried no LSN (nothing is
//! expected), otherwise the LSN expected.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use super::CorruptionDetector;
use crate::types::{Lsn, PageId};

/// Nothing is known about the page: ask the hook.
const UNKNOWN: u64 = 0;
/// The last write through the detector carried no LSN: nothing is expected.
/// (`Lsn(u64::MAX)` itself is therefore never expected.)
const NO_LSN: u64 = u64::MAX;

/// One slot per page, growing with the page id (bounded by the store's page
/// count: only pages that exist are recorded).
#[derive(Debug, Default)]
pub(crate) struct LsnSlots(RwLock<Vec<AtomicU64>>);

impl LsnSlots {
    /// Runs `f` on the slot of `page`, growing the map when needed; `None`
    /// for a page id that does not fit in memory (nothing is recorded).
    fn with_slot<R>(&self, page: PageId, f: impl Fn(&AtomicU64) -> R) -> Option<R> {
        let idx = usize::try_from(page.0).ok()?;
        if let Some(slot) = self.0.read().get(idx) {
            return Some(f(slot));
        }
        let mut v = self.0.write();
        if v.len() <= idx {
            v.resize_with(idx + 1, || AtomicU64::new(UNKNOWN));
        }
        Some(f(&v[idx]))
    }

    fn load(&self, page: PageId) -> u64 {
        let v = self.0.read();
        usize::try_from(page.0)
            .ok()
            .and_then(|i| v.get(i))
            .map_or(UNKNOWN, |s| s.load(Ordering::Acquire))
    }

    /// Forgets what is known about `page` (it was freed).
    pub(crate) fn clear(&self, page: PageId) {
        let v = self.0.read();
        if let Some(s) = usize::try_from(page.0).ok().and_then(|i| v.get(i)) {
            s.store(UNKNOWN, Ordering::Release);
        }
    }

    /// Forgets every page at and past `page_count`.
    pub(crate) fn truncate(&self, page_count: u64) {
        let mut v = self.0.write();
        let keep = usize::try_from(page_count).unwrap_or(usize::MAX);
        if keep < v.len() {
            v.truncate(keep);
        }
    }
}

impl CorruptionDetector {
    /// Records that `bytes` were just written to `page` through the
    /// detector: from now on the page must carry at least their LSN
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
            .with_slot(page, |s| s.store(value, Ordering::Release));
    }

    /// The LSN `page` must carry at least, when a
    /// [page-LSN reader](super::DetectorConfig::page_lsn) is configured: the
    /// LSN of the last contents written to it through the detector in this
    /// process (`None` when they carried none), or, when nothing was written
    /// to it in this process (after a restart, or after
    /// [`forget`](Self::forget)), the host's floor from the
    /// [expected-LSN hook](super::DetectorConfig::expected_page_lsn), which
    /// is then remembered until the next write. See the
    /// [`lsn`](self) module for the rule.
    #[must_use]
    pub fn last_written_lsn(&self, page: PageId) -> Option<Lsn> {
        match self.written_lsn.load(page) {
            NO_LSN => return None,
            UNKNOWN => {}
            known => return Some(Lsn(known)),
        }
        let floor = self.expected_lsn.as_ref()?(page).filter(|l| l.0 != UNKNOWN)?;
        // Remember it only for pages that exist (the map grows with the
        // page id), and only if no write recorded the truth meanwhile.
        if page.0 < self.store.page_count() {
            let kept = self.written_lsn.with_slot(page, |s| {
                s.compare_exchange(
                    UNKNOWN,
                    floor.0.min(NO_LSN - 1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .err()
            });
            match kept.flatten() {
                Some(NO_LSN) => return None,
                Some(now) => return Some(Lsn(now)),
                None => {}
            }
        }
        Some(floor)
    }
}
