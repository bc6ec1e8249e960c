//! Rebuilding a page that blocks a rollback from an older copy: the
//! version of the page from before the pending transactions wrote it (a
//! replica's copy) with their after-images put over it, change by change,
//! is the page's last write — which no replica holds, since the changes
//! were never committed — and once it is back the rollback goes on as
//! ever.
//!
//! A rollback is blocked by a page that fails verification (see
//! [pages that fail verification](super#pages-that-fail-verification)); a
//! repair puts back only a copy of the page's last write, and the last
//! write of a page changed by a transaction that was rolling back exists
//! nowhere but in the undo journal's after-images. The replicas hold the
//! version before it.
//!
//! # Contract
//! - [`TransactionRollbackManager::rebuild_page`] writes a page only when
//!   a candidate copy, replayed forward through every durable undo entry
//!   held for the page (oldest LSN first), finds each entry's before-image
//!   exactly where the entry changed the page, and the writer then judges
//!   the result to be the page's last write and writes it
//!   ([`PageWriter::repair_rebuilt`](super::PageWriter::repair_rebuilt)).
//!   The replay checks only the bytes the changes covered; the writer's
//!   judgement covers the rest: under the detector, the sidecar table's
//!   newest checksum of the page, or under the trailer the copy's own seal
//!   and the LSN the changes moved it to, exactly the expected one (see
//!   `corruption/rebuilt.rs` for what that assumes of the host). The
//!   detector writes through its repair protocol: only a page known bad,
//!   never over a newer host write; synced, re-read and re-verified.
//! - Only undo entries already durable are replayed: one that is not has
//!   not reached the page (the write-ahead rule), and its after-image is
//!   never written by a rebuild. A durable entry may not have reached the
//!   page either (a crash between its sync and the page write): when the
//!   replay through every entry is refused, the replays through fewer —
//!   the oldest entries, newest dropped first — are offered to the same
//!   judge, down to one entry.
//! - An entry without an after-image (journal format 1) makes the page
//!   impossible to rebuild: nothing is written.
//! - The write happens under the manager's latch of the page, waited for
//!   at most a second (a caller inside a write or rollback of the page, on
//!   its thread, gets a typed error, never a deadlock); the undo stays as it
//!   was, for the rollback to apply next.

use std::sync::Arc;
use std::time::Duration;

use super::TransactionRollbackManager;
use crate::corruption::CorruptionDetector;
use crate::error::{Error, Result};
use crate::types::PageId;

/// Longest a rebuild waits for the page's latch.
const LATCH_WAIT: Duration = Duration::from_secs(1);

/// One undo entry of the page, copied out of the journal's undo logs.
struct Change {
    lsn: u64,
    offset: usize,
    before: Vec<u8>,
    after: Vec<u8>,
}

impl TransactionRollbackManager {
    /// Rebuilds `page` from the first of `copies` (older copies of it,
    /// such as the replicas hold) that, with the after-images of every undo
    /// entry held for the page put over it, is the page's last write (see
    /// the module docs), writes that, and returns whether it did. The undo
    /// is kept: roll the transactions back afterwards, as the
    /// [`RollbackBlocked`](Error::RollbackBlocked) error said.
    ///
    /// # Errors
    /// [`Error::Stopped`] after [`stop`](Self::stop);
    /// [`Error::InvalidArgument`] when a write or rollback of the page held
    /// its latch for a second — also one on this thread, as when a read of
    /// the page inside it heals (the rebuild never waits for ever): try
    /// again outside it;
    /// [`Error::PageOutOfRange`] for a page the store does not have; the
    /// writer's errors on the write or on the re-read after it
    /// ([`PageWriter::repair_rebuilt`](super::PageWriter::repair_rebuilt)).
    pub fn rebuild_page(&self, page: PageId, copies: &[Vec<u8>]) -> Result<bool> {
        Ok(self.rebuild_from(page, copies)?.is_some())
    }

    /// [`rebuild_page`](Self::rebuild_page), returning which of `copies`
    /// the written page was rebuilt from. Without durable undo held for
    /// the page it returns `Ok(None)` before it takes the page's latch.
    pub(crate) fn rebuild_from(&self, page: PageId, copies: &[Vec<u8>]) -> Result<Option<usize>> {
        self.check_open()?;
        let ps = self.pages.page_size();
        if page.0 >= self.pages.page_count() {
            return Err(Error::PageOutOfRange {
                page,
                page_count: self.pages.page_count(),
            });
        }
        if !self.holds_undo_for(page) {
            return Ok(None);
        }
        // Never waited on for ever: the caller may be inside a write or
        // rollback of this page on this very thread (a read of it that
        // heals: refused at once), or another thread's may be waiting on
        // the caller.
        let Some(_latch) = self.page_locks.try_lock_for(page, LATCH_WAIT) else {
            return Err(Error::InvalidArgument {
                what: "page",
                reason: format!(
                    "a write or rollback of page {page} holds its latch (on this thread, or for {LATCH_WAIT:?} on another): try the rebuild again outside it"
                ),
            });
        };
        let Some(changes) = self.changes_of(page) else {
            return Ok(None);
        };
        for (i, base) in copies.iter().enumerate().filter(|(_, c)| c.len() == ps) {
            // The replay through every change first, then through fewer: the
            // newest durable changes may never have reached the page (a
            // crash between an entry's sync and its page write).
            for n in (1..=changes.len()).rev() {
                let Some(mut rebuilt) = replay(base, &changes[..n]) else {
                    continue;
                };
                if self.pages.repair_rebuilt(page, base, &mut rebuilt)? {
                    tracing::info!(%page, changes = n, held = changes.len(), "page rebuilt from an older copy and the undo held for it");
                    return Ok(Some(i));
                }
            }
        }
        Ok(None)
    }

    /// Whether this manager writes its pages through `det` (it was built
    /// over that very detector): then a page it rebuilds is repaired in
    /// that detector's eyes too.
    pub(crate) fn writes_through(&self, det: &Arc<CorruptionDetector>) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.pages), Arc::as_ptr(det))
    }

    /// Whether a durable undo entry of an active (or blocked) transaction
    /// is held for `page`: what a rebuild would replay. A scan of the
    /// entries held, without copying any.
    pub(crate) fn holds_undo_for(&self, page: PageId) -> bool {
        let durable = self.journal.durable_lsn().0;
        let st = self.state.lock();
        let logs = self.journal.logs();
        st.active.keys().filter_map(|id| logs.get(id)).any(|log| {
            log.entries
                .iter()
                .any(|e| e.page == page && e.lsn <= durable)
        })
    }

    /// Every durable undo entry held for `page` (of every transaction,
    /// active or blocked), oldest LSN first; `None` when there is none, or
    /// one has no after-image.
    fn changes_of(&self, page: PageId) -> Option<Vec<Change>> {
        // An entry not yet durable has not been written to the page (the
        // write-ahead rule): the last write does not hold it, and writing
        // its after-image would put on the page bytes no crash could undo.
        let durable = self.journal.durable_lsn().0;
        let st = self.state.lock();
        let mut changes = Vec::new();
        let logs = self.journal.logs();
        for log in st.active.keys().filter_map(|id| logs.get(id)) {
            for e in log
                .entries
                .iter()
                .filter(|e| e.page == page && e.lsn <= durable)
            {
                changes.push(Change {
                    lsn: e.lsn,
                    offset: e.offset as usize,
                    before: e.before(&log.arena).to_vec(),
                    after: e.after(&log.arena)?.to_vec(),
                });
            }
        }
        drop(logs);
        drop(st);
        if changes.is_empty() {
            return None;
        }
        changes.sort_unstable_by_key(|c| c.lsn);
        Some(changes)
    }
}

/// `base` with every change put over it in order, when each change's
/// before-image is exactly what the page holds at that point.
fn replay(base: &[u8], changes: &[Change]) -> Option<Vec<u8>> {
    let mut page = base.to_vec();
    for c in changes {
        let range = page.get_mut(c.offset..c.offset.checked_add(c.before.len())?)?;
        if *range != *c.before {
            return None;
        }
        range.copy_from_slice(&c.after);
    }
    Some(page)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::rollback::PageWriter;

    /// The writer's judgement of a replay.
    fn judged(pages: &dyn PageWriter, page: PageId, base: &[u8], changes: &[Change]) -> bool {
        replay(base, changes).is_some_and(|mut r| pages.repair_rebuilt(page, base, &mut r).unwrap())
    }

    fn change(lsn: u64, offset: usize, before: &[u8], after: &[u8]) -> Change {
        Change {
            lsn,
            offset,
            before: before.to_vec(),
            after: after.to_vec(),
        }
    }

    #[test]
    fn a_replay_puts_each_after_image_where_its_before_image_is() {
        let base = vec![1u8; 16];
        let changes = [
            change(1, 0, &[1, 1], &[2, 2]),
            change(2, 1, &[2, 1], &[3, 3]),
        ];
        let r = replay(&base, &changes).unwrap();
        assert_eq!(&r[..4], &[2, 3, 3, 1]);
    }

    #[test]
    fn a_replay_refuses_a_copy_that_is_not_the_version_before_the_changes() {
        let base = vec![1u8; 16];
        // The second change found byte 1 as 9, not as the first left it:
        // a change is missing between them.
        let changes = [
            change(1, 0, &[1, 1], &[2, 2]),
            change(2, 1, &[9, 1], &[3, 3]),
        ];
        assert!(replay(&base, &changes).is_none());
        // A range past the page.
        assert!(replay(&base, &[change(1, 15, &[1, 1], &[2, 2])]).is_none());
    }

    #[derive(Debug)]
    struct Nothing;

    impl PageWriter for Nothing {
        fn page_size(&self) -> usize {
            16
        }
        fn page_count(&self) -> u64 {
            1
        }
        fn read_page(&self, _: PageId, _: &mut [u8]) -> Result<()> {
            Ok(())
        }
        fn write_page(&self, _: PageId, _: &mut [u8]) -> Result<()> {
            Ok(())
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_rebuild_inside_a_held_latch_fails_typed_instead_of_deadlocking() {
        use std::sync::Arc;

        use crate::rollback::{RawPages, RollbackConfig};
        use crate::store::MemStore;
        use crate::testing::CrashDir;

        let store = Arc::new(MemStore::new(4096, 4).unwrap());
        let mgr = RollbackConfig::with_storage(Arc::new(CrashDir::new()))
            .build(RawPages::shared(store))
            .unwrap();
        let t = mgr.begin().unwrap();
        mgr.write(t, PageId(2), 0, &[7; 8]).unwrap();
        // This thread holds the page's latch, as a write of it does: the
        // rebuild is refused at once, without waiting for it.
        let held = mgr.page_locks.lock(PageId(2));
        assert!(mgr.page_locks.held_here(PageId(2)));
        let started = std::time::Instant::now();
        let r = mgr.rebuild_page(PageId(2), &[vec![0u8; 4096]]);
        assert!(
            matches!(r, Err(Error::InvalidArgument { what: "page", .. })),
            "{r:?}"
        );
        assert!(started.elapsed() < LATCH_WAIT, "{:?}", started.elapsed());
        // Another thread's latch is waited for, up to the limit.
        let other = std::thread::scope(|s| {
            s.spawn(|| {
                let started = std::time::Instant::now();
                let r = mgr.rebuild_page(PageId(2), &[vec![0u8; 4096]]);
                (r.is_err(), started.elapsed())
            })
            .join()
            .unwrap()
        });
        assert!(other.0 && other.1 >= LATCH_WAIT, "{other:?}");
        drop(held);
        assert!(!mgr.page_locks.held_here(PageId(2)));
        // Outside it, the call goes on (nothing here can judge a rebuilt
        // page: raw pages know no checksum).
        assert!(!mgr.rebuild_page(PageId(2), &[vec![0u8; 4096]]).unwrap());
    }

    #[test]
    fn a_writer_that_knows_nothing_accepts_no_rebuilt_page() {
        let base = vec![1u8; 16];
        assert!(!judged(
            &Nothing,
            PageId(0),
            &base,
            &[change(1, 0, &[1], &[2])]
        ));
    }

    proptest! {
        /// Replaying the changes a page went through, from the version
        /// before them, gives the page as it ended; and from any copy that
        /// differs from that version inside a changed range, nothing.
        #[test]
        fn replay_from_the_version_before_gives_the_last_and_from_another_nothing(
            start in proptest::collection::vec(any::<u8>(), 32),
            writes in proptest::collection::vec((0usize..28, proptest::collection::vec(any::<u8>(), 1..4)), 1..6),
        ) {
            let mut page = start.clone();
            let mut changes = Vec::new();
            for (i, (offset, data)) in writes.iter().enumerate() {
                let end = offset + data.len();
                changes.push(change(i as u64 + 1, *offset, &page[*offset..end], data));
                page[*offset..end].copy_from_slice(data);
            }
            prop_assert_eq!(replay(&start, &changes), Some(page));
            // A copy that differs from the version before the changes in
            // the first byte the oldest change covers.
            let mut other = start.clone();
            other[changes[0].offset] ^= 0xFF;
            prop_assert_eq!(replay(&other, &changes), None);
        }
    }
}
