//! Its contract is documented on [`LsnExpectation`] (this module is private; its
//! items are re-exported by its parent).

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::types::{Lsn, PageId};

/// What the detector knows about the page LSN a page must carry (see the
/// docs of `corruption/lsn.rs`). Without a
/// [page-LSN reader](super::CorruptionConfig::page_lsn) it is always
/// [`Nothing`](Self::Nothing).
///
/// The lost-write check: which LSN a page must carry, exactly or at least.
///
/// With a [page-LSN reader](super::CorruptionConfig::page_lsn) the detector
/// refuses bytes older than what the page should hold
/// ([`Error::StalePage`](crate::Error::StalePage)). The rule is: **a page is
/// not older than the last write through the detector**. That write defines
/// the expectation, whatever LSN it carries — a rollback that puts a
/// before-image back, or a restore of an older snapshot, writes an older
/// page LSN on purpose, and from then on the older LSN is the truth. So
/// every write through the detector (host writes and batches, rollback and
/// restore through them, repair commits,
/// [`replace_if_unchanged`](super::CorruptionDetector::replace_if_unchanged))
/// *stores* the LSN its bytes carry, under the page's lock, with the write.
/// Bytes that carry no LSN (the reader answers `None` or `Lsn(0)`) expect
/// nothing.
///
/// Adoption is not a write of a new version: it writes back (trailer) or
/// records (sidecar) the bytes the page already holds, so it leaves the
/// expectation as it is, and a page that adoption sealed but that is older
/// than the expectation (or the host's floor) is refused as stale at its
/// next verification.
///
/// Memory is empty after a restart. For a page not written in this process
/// the detector asks the host's
/// [expected-LSN hook](super::CorruptionConfig::expected_page_lsn), which
/// answers a *floor* from the host's durable records, and remembers the
/// answer — unless a write got there first: after a write in this process,
/// memory has the truth and the hook is not asked. A host whose records
/// name the exact version a page holds answers through
/// [`page_lsn_expectation`](super::CorruptionConfig::page_lsn_expectation)
/// with [`Exact`](LsnExpectation::Exact): the answer is then remembered as
/// a write of this process would be (in the last-write slot, only while it
/// is empty), and the page is held to exactly that LSN — which is what
/// refuses, after a restart, the version a restore or a rollback replaced
/// when the disk lost that write. A page the host
/// [forgets](super::CorruptionDetector::forget) has no last write any more.
///
/// The two are different promises, and
/// [`lsn_expectation`](super::CorruptionDetector::lsn_expectation) keeps
/// them apart ([`LsnExpectation`]): after a write in this process the page
/// must hold **exactly** that write's LSN — a copy with a newer LSN is a
/// write that was rolled back or replaced (by a restore, or by putting a
/// before-image back) and is as wrong as an older one; after the hook
/// answered, the page must hold **at least** the floor, and a newer copy
/// may be the truth. Verification of the page as read from the store checks
/// both: after a write in this process a page with a newer LSN fails as
/// stale too — it is the version that the write (a rollback's or a
/// restore's, which put an older LSN back) was to replace, and the disk
/// lost that write; after the hook answered, only the floor
/// ([`last_written_lsn`](super::CorruptionDetector::last_written_lsn)).
/// A copy offered to a repair is checked against the floor when verified,
/// and the repair, which chooses between copies, accepts only the exact
/// LSN when it is known.
///
/// Each page has two 64-bit slots. The first holds the last write: 0 when
/// nothing was written in this process, a marker when the last write
/// carried no LSN (nothing is expected), otherwise that write's LSN. The
/// second holds the hook's remembered floor (0: not asked, or no answer);
/// it is read only while the first says nothing was written, so a write
/// racing a hook answer always wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LsnExpectation {
    /// The last write through the detector in this process carried this
    /// LSN (or, for a page not written in this process, the host's
    /// [expectation hook](super::CorruptionConfig::page_lsn_expectation)
    /// answered it): the page holds exactly that version. Bytes with an older LSN
    /// are a lost write; bytes with a newer one are a write that was rolled
    /// back or replaced (neither is the page).
    Exact(Lsn),
    /// Nothing was written to the page through the detector in this process
    /// (a restart, or the page was [forgotten](super::CorruptionDetector::forget));
    /// the host's [expected-LSN hook](super::CorruptionConfig::expected_page_lsn)
    /// answered this floor. Bytes with an older LSN are stale; a newer LSN
    /// may be the truth.
    AtLeast(Lsn),
    /// Nothing is expected: no page-LSN reader, the last write carried no
    /// LSN, or nothing was written in this process and the hook (if any)
    /// had no answer.
    Nothing,
}

impl LsnExpectation {
    /// The LSN the page must carry at least (the exact LSN, or the floor).
    #[must_use]
    pub fn floor(self) -> Option<Lsn> {
        match self {
            LsnExpectation::Exact(l) | LsnExpectation::AtLeast(l) => Some(l),
            LsnExpectation::Nothing => None,
        }
    }

    /// The LSN the page must carry exactly, when the last write is known.
    #[must_use]
    pub fn exact(self) -> Option<Lsn> {
        match self {
            LsnExpectation::Exact(l) => Some(l),
            LsnExpectation::AtLeast(_) | LsnExpectation::Nothing => None,
        }
    }
}

/// Nothing is known about the page: ask the hook.
pub(super) const UNKNOWN: u64 = 0;

/// The last write through the detector carried no LSN: nothing is expected.
/// (`Lsn(u64::MAX)` itself is therefore never expected.)
pub(super) const NO_LSN: u64 = u64::MAX;

/// The slots of one page: the last write, and the hook's remembered floor.
pub(super) type Slots = [AtomicU64; 2];
pub(super) const WRITTEN: usize = 0;
pub(super) const FLOOR: usize = 1;

/// Two slots per page, growing with the page id (bounded by the store's
/// page count: only pages that exist are recorded).
#[derive(Debug, Default)]
pub(crate) struct LsnSlots(RwLock<Vec<Slots>>);

impl LsnSlots {
    /// Runs `f` on the slots of `page`, growing the map when needed; `None`
    /// for a page id that does not fit in memory (nothing is recorded).
    pub(super) fn with_slots<R>(&self, page: PageId, f: impl Fn(&Slots) -> R) -> Option<R> {
        let idx = usize::try_from(page.0).ok()?;
        if let Some(slots) = self.0.read().get(idx) {
            return Some(f(slots));
        }
        let mut v = self.0.write();
        if v.len() <= idx {
            v.resize_with(idx + 1, || {
                [AtomicU64::new(UNKNOWN), AtomicU64::new(UNKNOWN)]
            });
        }
        Some(f(&v[idx]))
    }

    /// The page's `[last write, floor]` slot values.
    pub(super) fn load(&self, page: PageId) -> [u64; 2] {
        let v = self.0.read();
        usize::try_from(page.0)
            .ok()
            .and_then(|i| v.get(i))
            .map_or([UNKNOWN; 2], |s| {
                [
                    s[WRITTEN].load(Ordering::Acquire),
                    s[FLOOR].load(Ordering::Acquire),
                ]
            })
    }

    /// Forgets what is known about `page` (it was freed).
    pub(crate) fn clear(&self, page: PageId) {
        let v = self.0.read();
        if let Some(s) = usize::try_from(page.0).ok().and_then(|i| v.get(i)) {
            s[WRITTEN].store(UNKNOWN, Ordering::Release);
            s[FLOOR].store(UNKNOWN, Ordering::Release);
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
