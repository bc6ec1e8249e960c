//! Applying before-images: per page, newest first, under the page's latch,
//! only where the page still holds what the transaction wrote, never to a
//! page that fails verification, and not to a page the host freed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::types::PageId;

use super::writer::{is_page_failure, read_checked, PageWriter, RepairHook};
use crate::types::TxnId;

/// How many locks the pages are striped over.
const PAGE_LOCK_STRIPES: usize = 256;

/// Striped page locks: every read-patch-write of a page through the manager
/// holds the lock of its stripe from the read to the write, so concurrent
/// changes to different bytes of one page never overwrite each other.
///
/// Each thread keeps a list of the latches it holds, so that a call that
/// reaches the manager again on the same thread (a read inside a write that
/// heals the page, and a rebuild of that page) is refused at once instead of
/// waiting for a latch only its own caller can release.
pub(super) struct PageLocks(Box<[Mutex<()>]>);

thread_local! {
    /// The latches this thread holds: (address of their [`PageLocks`],
    /// stripe).
    static HELD: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
}

/// A held page latch; released (and struck from its thread's list) when
/// dropped.
pub(super) struct Latch<'a> {
    _guard: MutexGuard<'a, ()>,
    key: (usize, usize),
}

impl Drop for Latch<'_> {
    fn drop(&mut self) {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            let at = held.iter().rposition(|k| *k == self.key);
            debug_assert!(at.is_some(), "a latch this thread holds is on its list");
            if let Some(at) = at {
                held.swap_remove(at);
            }
        });
    }
}

impl PageLocks {
    pub(super) fn new() -> Self {
        PageLocks((0..PAGE_LOCK_STRIPES).map(|_| Mutex::new(())).collect())
    }

    pub(super) fn lock(&self, page: PageId) -> Latch<'_> {
        let key = self.key(page);
        let guard = self.0[key.1].lock();
        Self::held(key, guard)
    }

    /// [`lock`](Self::lock), waiting at most `wait`: `None` when the latch
    /// stayed held, and at once when this very thread holds it (which
    /// `lock` would deadlock on).
    pub(super) fn try_lock_for(&self, page: PageId, wait: Duration) -> Option<Latch<'_>> {
        let key = self.key(page);
        if HELD.with(|held| held.borrow().contains(&key)) {
            return None;
        }
        let guard = self.0[key.1].try_lock_for(wait)?;
        Some(Self::held(key, guard))
    }

    /// Whether this thread holds the latch of `page`.
    #[cfg(test)]
    pub(super) fn held_here(&self, page: PageId) -> bool {
        let key = self.key(page);
        HELD.with(|held| held.borrow().contains(&key))
    }

    fn held(key: (usize, usize), guard: MutexGuard<'_, ()>) -> Latch<'_> {
        HELD.with(|held| held.borrow_mut().push(key));
        Latch { _guard: guard, key }
    }

    /// Which latch `page` takes: this set's address and the page's stripe.
    fn key(&self, page: PageId) -> (usize, usize) {
        // The modulus is below `PAGE_LOCK_STRIPES`, so the cast is lossless.
        let stripe = (page.0 % PAGE_LOCK_STRIPES as u64) as usize;
        (self.0.as_ptr() as usize, stripe)
    }
}

/// One undo entry to apply.
pub(super) struct UndoRef<'a> {
    pub txn: TxnId,
    pub lsn: u64,
    pub page: PageId,
    pub offset: usize,
    pub before: &'a [u8],
    /// The bytes the change wrote; `None` for a record of format version 1,
    /// which is applied unconditionally.
    pub after: Option<&'a [u8]>,
}

/// What applying a batch did.
#[derive(Default, Debug)]
pub(super) struct Applied {
    /// Entries applied (their page held what the transaction wrote, or
    /// already the before-image).
    pub entries: u64,
    /// Pages written.
    pub pages: u64,
    /// Entries not applied because their page was replaced since, with the
    /// transaction and page.
    pub replaced: Vec<(TxnId, PageId, u64)>,
    /// Transactions blocked by a page that fails verification: the page and
    /// why it failed. Their other pages were restored.
    pub blocked: BTreeMap<TxnId, Vec<(PageId, String)>>,
}

/// Whether the bytes `page` holds are explained by a transaction's own
/// changes there: every byte a record covers equals that byte of one of the
/// covering records' before-images (restored already, or never written) or
/// after-images (written; a torn write leaves a mix of the two). A record
/// without an after-image (format version 1) explains anything. `scratch`
/// is reused between calls.
fn explained(page: &[u8], recs: &[&UndoRef<'_>], scratch: &mut Vec<u8>) -> bool {
    if recs.iter().any(|r| r.after.is_none()) {
        return true;
    }
    // The common case: each range holds exactly one of its images.
    let whole = |r: &UndoRef<'_>| {
        let held = &page[r.offset..r.offset + r.before.len()];
        Some(held) == r.after || held == r.before
    };
    if recs.iter().all(|r| whole(r)) {
        return true;
    }
    if let [r] = recs {
        let held = &page[r.offset..r.offset + r.before.len()];
        let after = r.after.unwrap_or_default();
        return held
            .iter()
            .zip(r.before.iter().zip(after))
            .all(|(h, (b, a))| h == b || h == a);
    }
    let lo = recs.iter().map(|r| r.offset).min().unwrap_or(0);
    let hi = recs
        .iter()
        .map(|r| r.offset + r.before.len())
        .max()
        .unwrap_or(0);
    // 0: not covered, 1: covered and not explained yet, 2: explained.
    scratch.clear();
    scratch.resize(hi - lo, 0);
    for r in recs {
        let after = r.after.unwrap_or_default();
        for (i, (b, a)) in r.before.iter().zip(after).enumerate() {
            let at = r.offset + i;
            let s = &mut scratch[at - lo];
            if page[at] == *b || page[at] == *a {
                *s = 2;
            } else if *s == 0 {
                *s = 1;
            }
        }
    }
    !scratch.contains(&1)
}

/// Whether `page`, which failed verification, is a torn (or partly
/// written, or lost) write of the transactions whose undo entries `group`
/// holds:
/// its bytes as stored (read into `buf`) are explained by those entries,
/// and with every entry's after-image put over them they are exactly the
/// page's last write ([`PageWriter::is_last_write`]). Then the bytes
/// outside the entries are the last write's, and the before-images put the
/// page back as it was before the transactions — the rollback needs no
/// copy of the last write (which no replica holds: it was never
/// acknowledged), and under a sidecar table, whose sync settled the torn
/// write and dropped the checksum of the page's previous contents, no
/// replica copy of those would verify either. Anything else (damage
/// outside the entries, another version) is not explained and stays
/// blocked.
fn torn_by(
    pages: &dyn PageWriter,
    page: PageId,
    group: &[UndoRef<'_>],
    buf: &mut [u8],
    scratch: &mut Vec<u8>,
) -> bool {
    if group.iter().any(|r| r.after.is_none()) || pages.read_unverified(page, buf).is_err() {
        return false;
    }
    let recs: Vec<&UndoRef<'_>> = group.iter().collect();
    if !explained(buf, &recs, scratch) {
        return false;
    }
    let mut last = buf.to_vec();
    // `group` is newest first: put the after-images oldest first.
    for r in group.iter().rev() {
        let after = r.after.unwrap_or_default();
        last[r.offset..r.offset + after.len()].copy_from_slice(after);
    }
    pages.is_last_write(page, &last)
}

/// Applies undo entries: per page, one verified read (a page that fails is
/// offered to `hook`; if it still fails and is not a torn write of these
/// transactions (`torn_by`), every transaction with entries on it is
/// blocked and the page is not touched); per transaction on the
/// page, its entries only if the page holds what they explain (otherwise
/// they are counted as replaced); the entries that apply newest LSN first;
/// one write and one verifying re-read when anything changed — all under
/// the page's latch.
///
/// # Errors
/// A store error other than a page failure, or
/// [`Error::RollbackVerifyFailed`]: nothing after it was applied.
pub(super) fn apply_undo(
    pages: &dyn PageWriter,
    locks: &PageLocks,
    hook: Option<&RepairHook>,
    mut refs: Vec<UndoRef<'_>>,
) -> Result<Applied> {
    let mut out = Applied::default();
    if refs.is_empty() {
        return Ok(out);
    }
    refs.sort_unstable_by(|a, b| a.page.cmp(&b.page).then(b.lsn.cmp(&a.lsn)));
    let ps = pages.page_size();
    let mut buf = vec![0u8; ps];
    let mut held = vec![0u8; ps];
    let mut scratch = Vec::new();
    let mut recs: Vec<&UndoRef<'_>> = Vec::new();
    let (mut txns, mut skip): (Vec<TxnId>, Vec<TxnId>) = (Vec::new(), Vec::new());
    for group in refs.chunk_by(|a, b| a.page == b.page) {
        let page = group[0].page;
        let _guard = locks.lock(page);
        // A page that failed as a torn (or lost) write of these
        // transactions is written even when it holds every before-image
        // already: the write makes those bytes the page's verified version
        // again (the checksum of the write that failed still stands).
        let mut rewrite = false;
        match read_checked(pages, hook, page, &mut buf) {
            Ok(()) => {}
            // Freed (again): nothing a transaction wrote is on a free page,
            // and its bytes mean nothing. Left as it is.
            Err(Error::PageUnallocated { .. }) => {
                tracing::debug!(%page, entries = group.len(), "undo not applied: the page is unallocated");
                out.entries += group.len() as u64;
                continue;
            }
            Err(e)
                if is_page_failure(&e) && torn_by(pages, page, group, &mut buf, &mut scratch) =>
            {
                tracing::warn!(%page, error = %e, "the page is a torn or lost write of the transactions rolled back: their before-images are applied over it");
                rewrite = true;
            }
            Err(e) if is_page_failure(&e) => {
                tracing::warn!(%page, error = %e, "rollback blocked: the page fails verification");
                let reason = e.to_string();
                let mut txns: Vec<TxnId> = group.iter().map(|r| r.txn).collect();
                txns.sort_unstable();
                txns.dedup();
                for t in txns {
                    out.blocked
                        .entry(t)
                        .or_default()
                        .push((page, reason.clone()));
                }
                continue;
            }
            Err(e) => return Err(e),
        }
        // Decided on the bytes as read, before anything is patched.
        txns.clear();
        txns.extend(group.iter().map(|r| r.txn));
        txns.sort_unstable();
        txns.dedup();
        skip.clear();
        for &t in &txns {
            recs.clear();
            recs.extend(group.iter().filter(|r| r.txn == t));
            if !explained(&buf, &recs, &mut scratch) {
                tracing::warn!(%page, txn = %t, entries = recs.len(), "undo not applied: the page no longer holds what the transaction wrote (replaced since)");
                out.replaced.push((t, page, recs.len() as u64));
                skip.push(t);
            }
        }
        let mut changed = rewrite;
        for r in group.iter().filter(|r| !skip.contains(&r.txn)) {
            let range = &mut buf[r.offset..r.offset + r.before.len()];
            if range != r.before {
                range.copy_from_slice(r.before);
                changed = true;
            }
            out.entries += 1;
        }
        if changed {
            pages.write_page(page, &mut buf)?;
            pages.read_page(page, &mut held)?;
            if held != buf {
                return Err(Error::RollbackVerifyFailed { page });
            }
            out.pages += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::host::PageStore;
    use crate::rollback::RawPages;
    use crate::store::MemStore;

    /// Counts page reads and writes.
    #[derive(Debug)]
    struct Counting {
        inner: RawPages,
        reads: AtomicU64,
        writes: AtomicU64,
    }

    impl PageWriter for Counting {
        fn page_size(&self) -> usize {
            self.inner.page_size()
        }
        fn page_count(&self) -> u64 {
            self.inner.page_count()
        }
        fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.read_page(page, buf)
        }
        fn write_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.inner.write_page(page, buf)
        }
        fn sync(&self) -> Result<()> {
            self.inner.sync()
        }
    }

    fn undo<'a>(
        lsn: u64,
        page: u64,
        offset: usize,
        before: &'a [u8],
        after: Option<&'a [u8]>,
    ) -> UndoRef<'a> {
        UndoRef {
            txn: TxnId(1),
            lsn,
            page: PageId(page),
            offset,
            before,
            after,
        }
    }

    #[test]
    fn images_of_one_page_are_applied_with_one_write_newest_first() {
        let store = Arc::new(MemStore::new(64, 4).unwrap());
        let pages = Counting {
            inner: RawPages(store.clone()),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        };
        // Interleaved pages; on page 1 the oldest image (LSN 1) must win
        // over the newer one (LSN 5) that covers the same bytes. The store
        // holds zeros: the after-images of the newest changes.
        let refs = vec![
            undo(1, 1, 0, b"oldest", Some(b"NEWER!")),
            undo(2, 3, 8, b"three", Some(&[0; 5])),
            undo(3, 1, 20, b"x", Some(&[0])),
            undo(4, 3, 0, b"3", Some(&[0])),
            undo(5, 1, 0, b"NEWER!", Some(&[0; 6])),
        ];
        let applied = apply_undo(&pages, &PageLocks::new(), None, refs).unwrap();
        assert_eq!((applied.entries, applied.pages), (5, 2));
        assert!(applied.replaced.is_empty());
        assert_eq!(pages.writes.load(Ordering::Relaxed), 2);
        assert_eq!(
            pages.reads.load(Ordering::Relaxed),
            4,
            "one read and one verifying re-read per page"
        );
        let mut buf = vec![0u8; 64];
        store.read_page(PageId(1), &mut buf).unwrap();
        assert_eq!(&buf[..6], b"oldest");
        assert_eq!(buf[20], b'x');
        store.read_page(PageId(3), &mut buf).unwrap();
        assert_eq!(&buf[..1], b"3");
        assert_eq!(&buf[8..13], b"three");
    }

    #[test]
    fn a_replaced_page_is_left_alone_and_an_unchanged_one_is_not_written() {
        let store = Arc::new(MemStore::new(64, 2).unwrap());
        let mut page = vec![0u8; 64];
        page[..4].copy_from_slice(b"ZZZZ");
        store.write_page(PageId(0), &page).unwrap();
        let pages = Counting {
            inner: RawPages(store.clone()),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        };
        let refs = vec![
            // Page 0 holds neither the before- nor the after-image.
            undo(1, 0, 0, b"0000", Some(b"AAAA")),
            // Page 1 already holds the before-image.
            undo(2, 1, 0, &[0; 4], Some(b"BBBB")),
        ];
        let applied = apply_undo(&pages, &PageLocks::new(), None, refs).unwrap();
        assert_eq!(applied.replaced, vec![(TxnId(1), PageId(0), 1)]);
        assert_eq!((applied.entries, applied.pages), (1, 0));
        assert_eq!(pages.writes.load(Ordering::Relaxed), 0);
        store.read_page(PageId(0), &mut page).unwrap();
        assert_eq!(&page[..4], b"ZZZZ");
    }

    proptest! {
        /// A page that holds any byte-wise mix of a transaction's before- and
        /// after-images (a torn write) is restored to the before-image; one
        /// with a byte no image explains is left alone.
        #[test]
        fn torn_mixes_are_restored_and_foreign_bytes_are_not(
            images in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<bool>()), 1..40),
            offset in 0usize..20,
            foreign in any::<bool>(),
        ) {
            let before: Vec<u8> = images.iter().map(|i| i.0).collect();
            let after: Vec<u8> = images.iter().map(|i| i.1).collect();
            let mut held: Vec<u8> = images.iter().map(|i| if i.3 { i.1 } else { i.0 }).collect();
            let alien = images.iter().position(|i| i.2 != i.0 && i.2 != i.1);
            let replaced = foreign && alien.is_some();
            if let (true, Some(k)) = (foreign, alien) {
                held[k] = images[k].2;
            }
            let store = Arc::new(MemStore::new(64, 1).unwrap());
            let mut page = vec![0xEEu8; 64];
            page[offset..offset + held.len()].copy_from_slice(&held);
            store.write_page(PageId(0), &page).unwrap();
            let pages = RawPages(store.clone());
            // Split into two records to exercise the general path too.
            let mid = before.len() / 2;
            let refs = vec![
                undo(1, 0, offset, &before[..mid], Some(&after[..mid])),
                undo(2, 0, offset + mid, &before[mid..], Some(&after[mid..])),
            ];
            let refs: Vec<UndoRef<'_>> = refs.into_iter().filter(|r| !r.before.is_empty()).collect();
            let applied = apply_undo(&pages, &PageLocks::new(), None, refs).unwrap();
            store.read_page(PageId(0), &mut page).unwrap();
            if replaced {
                prop_assert!(!applied.replaced.is_empty());
                prop_assert_eq!(&page[offset..offset + held.len()], &held[..]);
            } else {
                prop_assert!(applied.replaced.is_empty());
                prop_assert_eq!(&page[offset..offset + before.len()], &before[..]);
            }
        }
    }
}
