//! Unallocated marks and adoption claims: the changes to a sidecar table
//! that no page write follows, so that they need no window in which an old
//! and a new checksum are both accepted.
//!
//! - A *free mark* ([`ChecksumTable::mark_free`]) says that the host freed a
//!   page: its checksums are forgotten and a page that fails verification
//!   is unallocated, not damaged, until it is written again.
//! - A *claim* records the checksum of bytes that are already on disk, only
//!   for a page that has nothing yet (no checksum, no unsettled write, no
//!   mark): adoption uses it, so that a host write racing the adoption
//!   always wins.
//!
//! In a durable table each is one log record (`free` and `claim`, see
//! [`log`](super::log)) appended under the lock every change of the table
//! takes, so the order of the log is the order in which the changes were
//! made in memory; [`durable`](super::durable) has the crash analysis. A
//! free mark is durable before [`mark_free`](ChecksumTable::mark_free)
//! returns. Claims are not waited for one by one: they become durable with
//! one fsync per [`CLAIMS_BUFFERED_MAX`] bytes of log (about 170 Ki
//! claims of 6 bytes), or
//! with the next intent, flush or compaction; adoption flushes before it
//! returns. A claim lost in a crash leaves its page as it was (without a
//! checksum), and adopting again claims it again.

use std::sync::atomic::Ordering;

use super::durable::Durable;
use super::entries::{grow, FREE, PRESENT};
use super::log::LogRecord;
use super::table::ChecksumTable;
use crate::error::{Error, Result};
use crate::types::PageId;

/// Log bytes of buffered records past which a batch of claims is made
/// durable at once (one fsync per about 170 Ki claims), and the bound on the
/// memory claims buffer.
pub(super) const CLAIMS_BUFFERED_MAX: usize = 1 << 20;

impl ChecksumTable {
    /// Records that the host said `page` is unallocated: its checksums are
    /// forgotten, and verifying it answers [`Error::PageUnallocated`] until
    /// it is written again. The mark is kept with the table: saved with an
    /// in-memory table, and in a durable one logged (a `free` record) and
    /// durable before this returns, so it survives a restart and a crash.
    ///
    /// Prefer [`CorruptionDetector::forget`](crate::CorruptionDetector::forget),
    /// which also orders the mark with the detector's writes of the page and
    /// drops the page's fence.
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] for a page id at or past
    /// [`MAX_TABLE_PAGES`](super::MAX_TABLE_PAGES) (or a durable table's
    /// [`pages_max`](super::TableConfig::pages_max));
    /// [`Error::InvalidArgument`] when the table cannot grow to the page;
    /// for a durable table, [`Error::Stalled`] when the log's write or fsync
    /// failed retryably (the mark is then not durable; retry after the
    /// resume) or [`Error::Poisoned`].
    pub fn mark_free(&self, page: PageId) -> Result<()> {
        match &self.durable {
            Some(d) => self.mark_free_durably(d, page),
            None => self.update_entry(page, |_| FREE),
        }
    }

    fn mark_free_durably(&self, d: &Durable, page: PageId) -> Result<()> {
        d.log.resume_if_due(&*d.storage);
        if page.0 >= d.config.pages_max {
            return Err(Error::PageOutOfRange {
                page,
                page_count: d.config.pages_max,
            });
        }
        let seq = {
            let mut un = d.unsettled.lock();
            let mut log = d.log.state.lock();
            log.check()?;
            if self.len() as u64 <= page.0 {
                self.update_entry(page, |e| e)?;
            }
            let seq = log.append(LogRecord::Free {
                page: u32::try_from(page.0).expect("below pages_max"),
            });
            let entries = self.entries.read();
            un.remove(&entries, page.0);
            entries[page.0 as usize].store(FREE, Ordering::Release);
            seq
        };
        d.log.make_durable(&*d.storage, seq)
    }

    /// For each `(page, crc)` of `claims`, in order: records `crc` as the
    /// page's settled checksum (or, with `None`, marks it unallocated) only
    /// if the page has nothing at all — no checksum, no unsettled write, no
    /// mark — and pushes onto `claimed` whether it did. Adoption uses it, so
    /// that a checksum the host's own write recorded meanwhile is never
    /// replaced by one of older bytes. The table grows to the highest page.
    /// A durable table logs a `claim` (or `free`) record per page claimed
    /// and makes them durable once [`CLAIMS_BUFFERED_MAX`] bytes are
    /// buffered; [`flush_claims`](Self::flush_claims) makes the rest durable.
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] past the table's limit (nothing is
    /// claimed); [`Error::InvalidArgument`] when the table cannot grow; the
    /// log's [`Error::Stalled`] (the claims are then in memory, and durable
    /// once the log resumes) or [`Error::Poisoned`].
    pub(crate) fn claim_absent(
        &self,
        claims: &[(PageId, Option<u32>)],
        claimed: &mut Vec<bool>,
    ) -> Result<()> {
        claimed.clear();
        let Some(last) = claims.iter().map(|(p, _)| *p).max() else {
            return Ok(());
        };
        let value = |crc: Option<u32>| crc.map_or(FREE, |c| PRESENT | u64::from(c));
        let Some(d) = &self.durable else {
            if self.len() as u64 <= last.0 {
                self.update_entry(last, |e| e)?;
            }
            let entries = self.entries.read();
            claimed.extend(claims.iter().map(|&(page, crc)| {
                entries[page.0 as usize]
                    .compare_exchange(0, value(crc), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            }));
            return Ok(());
        };
        d.log.resume_if_due(&*d.storage);
        if last.0 >= d.config.pages_max {
            return Err(Error::PageOutOfRange {
                page: last,
                page_count: d.config.pages_max,
            });
        }
        let flush = {
            // Every change of an entry happens under `unsettled`: a write's
            // intent is either before the check below (the page is not
            // absent) or after the claim, in memory and in the log.
            let _un = d.unsettled.lock();
            let mut log = d.log.state.lock();
            log.check()?;
            if self.len() as u64 <= last.0 {
                self.update_entry(last, |e| e)?;
            }
            let entries = self.entries.read();
            for &(page, crc) in claims {
                let entry = &entries[page.0 as usize];
                let absent = entry.load(Ordering::Acquire) == 0;
                if absent {
                    let p = u32::try_from(page.0).expect("below pages_max");
                    log.append(match crc {
                        Some(crc) => LogRecord::Claim { page: p, crc },
                        None => LogRecord::Free { page: p },
                    });
                    entry.store(value(crc), Ordering::Release);
                }
                claimed.push(absent);
            }
            log.buffered() >= CLAIMS_BUFFERED_MAX
        };
        if flush {
            self.flush_claims()?;
        }
        Ok(())
    }

    /// Makes every claim made so far durable (one fsync, shared with
    /// whatever else is buffered), and compacts when the log has grown past
    /// its threshold. A no-op for an in-memory table.
    ///
    /// # Errors
    /// The log's or the compaction's error.
    pub(crate) fn flush_claims(&self) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        let mut files = d.files.lock();
        d.log.flush(&*d.storage)?;
        if self.should_compact(d, &files) {
            self.compact_locked(d, &mut files)?;
        }
        Ok(())
    }

    /// Grows the table (with empty entries) so that it reaches
    /// `page_count` pages, in one allocation.
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] past [`MAX_TABLE_PAGES`](super::MAX_TABLE_PAGES)
    /// (or a durable table's `pages_max`); [`Error::InvalidArgument`] when
    /// the memory cannot be had.
    pub(crate) fn reserve_pages(&self, page_count: u64) -> Result<()> {
        let max = self
            .durable
            .as_ref()
            .map_or(super::MAX_TABLE_PAGES, |d| d.config.pages_max);
        if page_count > max {
            return Err(Error::PageOutOfRange {
                page: PageId(page_count - 1),
                page_count: max,
            });
        }
        let want = usize::try_from(page_count).map_err(|_| Error::InvalidArgument {
            what: "page_count",
            reason: format!("{page_count} entries do not fit in memory"),
        })?;
        grow(&mut self.entries.write(), want).map_err(|reason| Error::InvalidArgument {
            what: "page_count",
            reason: format!("cannot grow the checksum table to {page_count} pages: {reason}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::CrashFiles;
    use std::sync::Arc;

    fn durable(files: &Arc<CrashFiles>) -> ChecksumTable {
        super::super::TableConfig::new(64)
            .open_on(files.clone(), "sums")
            .unwrap()
    }

    #[test]
    fn claims_take_only_pages_with_nothing() {
        let files = Arc::new(CrashFiles::new());
        for t in [ChecksumTable::new(64).unwrap(), durable(&files)] {
            t.mark_free(PageId(1)).unwrap();
            if !t.is_durable() {
                t.seal(PageId(2), &[2u8; 64]).unwrap();
            } else {
                let i = t.intend(&[(PageId(2), 7)]).unwrap();
                t.complete(&i, 1).unwrap();
            }
            let mut claimed = Vec::new();
            t.claim_absent(
                &[
                    (PageId(0), Some(10)),
                    (PageId(1), Some(11)),
                    (PageId(2), Some(12)),
                    (PageId(5), None),
                    (PageId(0), Some(13)),
                ],
                &mut claimed,
            )
            .unwrap();
            assert_eq!(claimed, [true, false, false, true, false]);
            assert_eq!(t.get(PageId(0)), Some(10));
            assert!(t.is_free(PageId(1)) && t.is_free(PageId(5)));
            assert_ne!(t.get(PageId(2)), Some(12));
            t.flush_claims().unwrap();
        }
        // The durable claims and marks survive a crash once flushed.
        let back = durable(&Arc::new(files.crash(Some(3))));
        assert_eq!(back.get(PageId(0)), Some(10));
        assert!(back.is_free(PageId(1)) && back.is_free(PageId(5)));
        assert_eq!(back.get(PageId(2)), Some(7), "the write stays unsettled");
    }

    #[test]
    fn a_durable_free_mark_is_durable_when_it_returns() {
        let files = Arc::new(CrashFiles::new());
        let t = durable(&files);
        let i = t.intend(&[(PageId(3), 9), (PageId(4), 8)]).unwrap();
        t.complete(&i, 2).unwrap();
        t.mark_free(PageId(3)).unwrap();
        assert_eq!(t.stats().unsettled_versions, 1, "page 3's version went");
        assert!(matches!(
            t.verify(PageId(3), &[1u8; 64]),
            Err(Error::PageUnallocated { .. })
        ));
        let back = durable(&Arc::new(files.crash(Some(1))));
        assert!(back.is_free(PageId(3)));
        assert_eq!(back.get(PageId(3)), None);
        assert_eq!(back.get(PageId(4)), Some(8));
        assert!(matches!(
            t.mark_free(PageId(1 << 40)),
            Err(Error::PageOutOfRange { .. })
        ));
    }
}
