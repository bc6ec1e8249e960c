//! Committing repairs in batches: the copies of many pages written in runs
//! of consecutive pages, made durable with one sync of the store, then
//! re-read in runs and re-verified, with the promises of a single
//! [`commit_repair`](CorruptionDetector::commit_repair) for every page;
//! and the recheck of a run of pages with one read.
//!
//! # Contract
//! - No page is marked repaired before the sync that covers it returned and
//!   the page was re-read and re-verified.
//! - A run holds at most [`REREAD_RUN_PAGES`] pages; the stripe locks of
//!   all of them are held, taken in ascending stripe order, across its
//!   write and across its re-read.
//! - Every buffer a re-read or a recheck reads into is zeroed first: a
//!   store that answers without filling it leaves bytes that never verify.

use super::ticket::{CommitResult, RepairTicket, VerifiedCopy};
use super::*;

/// One page of a run of a batch commit: its place in the batch, its ticket,
/// its copy, and whether the copy's trailer checksum is known to verify as
/// the ticket's page (see [`VerifiedCopy`]).
struct RunEntry<'d, 'c> {
    i: usize,
    ticket: RepairTicket<'d>,
    copy: &'c [u8],
    sealed: bool,
}

impl CorruptionDetector {
    /// Writes the repair copies of a batch of pages and makes them durable
    /// with one [`sync`](PageStore::sync) of the store, with the promises of
    /// [`commit_repair`](Self::commit_repair) for each page:
    ///
    /// 1. Per page, with host writes to it excluded and its epoch current:
    ///    the copy is verified and written (not synced). A page the host
    ///    rewrote since its repair began is `Superseded` and not written.
    ///    Consecutive pages are handled together, up to 32 at a time with
    ///    the write locks of all of them held, and the copies of a run that
    ///    verified are written with one [`write_pages`](PageStore::write_pages);
    ///    when that fails, each of them is written again on its own and gets
    ///    the result of its own write.
    /// 2. One sync for every page written in step 1.
    /// 3. Per page, with host writes to it excluded: if its epoch is still
    ///    current (no host write since step 1), it is re-read and re-verified
    ///    (it must hold exactly the copy) and only then marked `Repaired`. A
    ///    host write between its repair write and the sync changed its epoch:
    ///    the host's bytes stand and the page is `Superseded`. Consecutive
    ///    pages are re-read together, up to 32 at a time with the write locks
    ///    of all of them held, with one [`read_pages`](PageStore::read_pages).
    ///
    /// No page is marked repaired before the sync that covers it returned.
    /// When the sync fails, every page written in step 1 fails with it (its
    /// ticket comes back with the sync error; none is marked repaired).
    ///
    /// Returns one result per entry of `batch`, in its order.
    pub fn commit_repairs<'d>(
        &'d self,
        batch: Vec<(RepairTicket<'d>, &[u8])>,
    ) -> Vec<CommitResult<'d>> {
        self.commit_batch(batch.into_iter().map(|(t, c)| (t, c, false)).collect())
    }

    /// [`commit_repairs`](Self::commit_repairs) of copies verified with
    /// [`verify_copy`](Self::verify_copy): their checksums are not computed
    /// again when the placement makes that needless (see [`VerifiedCopy`]).
    pub(crate) fn commit_verified_repairs<'d>(
        &'d self,
        batch: Vec<(RepairTicket<'d>, &VerifiedCopy)>,
    ) -> Vec<CommitResult<'d>> {
        self.commit_batch(
            batch
                .into_iter()
                .map(|(t, c)| {
                    let sealed = c.sealed_as(t.page);
                    (t, c.bytes(), sealed)
                })
                .collect(),
        )
    }

    /// `commit_repairs`; the flag of each entry says its copy's trailer
    /// checksum is known to verify as the ticket's page.
    fn commit_batch<'d>(
        &'d self,
        batch: Vec<(RepairTicket<'d>, &[u8], bool)>,
    ) -> Vec<CommitResult<'d>> {
        let mut results: Vec<Option<CommitResult<'d>>> = Vec::with_capacity(batch.len());
        let mut written: Vec<(usize, RepairTicket<'d>, &[u8])> = Vec::with_capacity(batch.len());
        let mut issued_pages: Vec<PageId> = Vec::with_capacity(batch.len());
        let mut run: Vec<RunEntry<'d, '_>> = Vec::with_capacity(REREAD_RUN_PAGES);
        let mut scratch = Vec::new();
        for (ticket, copy, sealed) in batch {
            let i = results.len();
            results.push(None);
            if let Err(e) = self.owns(&ticket) {
                results[i] = Some(Err((ticket, e)));
                continue;
            }
            let follows = run
                .last()
                .is_none_or(|e| e.ticket.page.0.checked_add(1) == Some(ticket.page.0));
            if !follows || run.len() == REREAD_RUN_PAGES {
                self.write_run(
                    &mut run,
                    &mut scratch,
                    &mut results,
                    &mut written,
                    &mut issued_pages,
                );
            }
            run.push(RunEntry {
                i,
                ticket,
                copy,
                sealed,
            });
        }
        self.write_run(
            &mut run,
            &mut scratch,
            &mut results,
            &mut written,
            &mut issued_pages,
        );
        // Told before the sync and re-read: the bytes changed already.
        self.notify_written(issued_pages);
        if !written.is_empty() {
            let pages = written.len();
            match self.store.sync() {
                Err(e) => {
                    for (i, ticket, _) in written {
                        results[i] = Some(Err((ticket, batch_sync_error(&e, pages))));
                    }
                }
                Ok(()) => {
                    // One buffer for the re-reads of every run (the write
                    // buffer, no longer needed): each read fills the part it
                    // checks.
                    let mut back = scratch;
                    let mut run = Vec::with_capacity(REREAD_RUN_PAGES);
                    for item in written {
                        let follows = run.last().is_none_or(
                            |(_, t, _): &(usize, RepairTicket<'d>, &[u8])| {
                                t.page.0.checked_add(1) == Some(item.1.page.0)
                            },
                        );
                        if !follows || run.len() == REREAD_RUN_PAGES {
                            self.confirm_run(&mut run, &mut back, &mut results);
                        }
                        run.push(item);
                    }
                    self.confirm_run(&mut run, &mut back, &mut results);
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every entry of the batch has a result"))
            .collect()
    }

    /// Step 1 of a batch commit for a run of consecutive pages (at most
    /// [`REREAD_RUN_PAGES`]; empties `run`): with the stripe locks of all of
    /// them held (taken in ascending stripe order, as every path that holds
    /// more than one takes them), each page whose ticket is current has its
    /// copy checked and verified, and the copies that verified are written
    /// with one [`write_pages`](PageStore::write_pages) (a file store writes
    /// them with one `pwrite`). A copy whose trailer checksum is known to
    /// verify (`sealed`) has only its LSN floor checked again. A page the
    /// host rewrote since its repair began is `Superseded` and not written;
    /// a copy that fails its checks is that page's error and is not written.
    /// When the run's write fails, which of its pages hold what is unknown,
    /// so each of them is written again on its own, and each page gets the
    /// result of its own write, as if the batch had been written page by
    /// page. Pages written go to `written` (for the sync and step 3) with
    /// their `results` entry left empty; every page whose write was issued
    /// goes to `issued`. The copies are lent to the store through `scratch`,
    /// so what the store does to the buffers it is given never changes them.
    fn write_run<'d, 'c>(
        &'d self,
        run: &mut Vec<RunEntry<'d, 'c>>,
        scratch: &mut Vec<u8>,
        results: &mut [Option<CommitResult<'d>>],
        written: &mut Vec<(usize, RepairTicket<'d>, &'c [u8])>,
        issued: &mut Vec<PageId>,
    ) {
        if run.is_empty() {
            return;
        }
        assert!(run.len() <= REREAD_RUN_PAGES);
        let _guards = self.stripes_of(run.iter().map(|e| e.ticket.page));
        let (page_count, ps) = (self.store.page_count(), self.store.page_size());
        let mut checked = Vec::with_capacity(run.len());
        for RunEntry {
            i,
            ticket,
            copy,
            sealed,
        } in run.drain(..)
        {
            if !self.ticket_current(&ticket) {
                ticket.close();
                results[i] = Some(Ok(Commit::Superseded));
                continue;
            }
            let ok = check_page_args(ticket.page, page_count, copy.len(), ps)
                .and_then(|()| self.verify_before_write(ticket.page, copy, sealed));
            match ok {
                Ok(()) => checked.push((i, ticket, copy)),
                Err(e) => results[i] = Some(Err((ticket, e))),
            }
        }
        if checked.is_empty() {
            return;
        }
        scratch.clear();
        scratch.reserve(checked.len() * ps);
        for (_, _, copy) in &checked {
            scratch.extend_from_slice(copy);
        }
        let mut pages: Vec<(PageId, &mut [u8])> = checked
            .iter()
            .map(|(_, t, _)| t.page)
            .zip(scratch.chunks_exact_mut(ps))
            .collect();
        issued.extend(pages.iter().map(|(p, _)| *p));
        let together = self.store.write_pages(&mut pages);
        for (i, ticket, copy) in checked {
            let r = match &together {
                Ok(()) => Ok(()),
                Err(_) => self.store.write_page(ticket.page, copy),
            };
            match r {
                Ok(()) => {
                    self.note_sealed_here(ticket.page);
                    self.record_write_lsn(ticket.page, copy);
                    written.push((i, ticket, copy));
                }
                Err(e) => results[i] = Some(Err((ticket, e))),
            }
        }
    }

    /// Step 3 of a batch commit for a run of consecutive written pages
    /// (empties `run`): with the stripe locks of all of them held (taken in
    /// ascending stripe order, as every path that holds more than one takes
    /// them — a batch write, a resize — so this cannot deadlock), re-reads
    /// the run with one read into `back` (grown to the run's size when
    /// shorter, and zeroed: every byte checked is one the read filled, or
    /// a zero that never verifies) and, per page
    /// whose epoch is still current, checks the bytes
    /// ([`check_back`](Self::check_back)) and marks it repaired. Falls back
    /// to a read per page when the run's read fails.
    pub(super) fn confirm_run<'d>(
        &'d self,
        run: &mut Vec<(usize, RepairTicket<'d>, &[u8])>,
        back: &mut Vec<u8>,
        results: &mut [Option<CommitResult<'d>>],
    ) {
        let Some(first) = run.first().map(|(_, t, _)| t.page) else {
            return;
        };
        assert!(run.len() <= REREAD_RUN_PAGES);
        let mut stripes: Vec<usize> = run
            .iter()
            .map(|(_, t, _)| (t.page.0 % LOCK_STRIPES as u64) as usize)
            .collect();
        stripes.sort_unstable();
        debug_assert!(stripes.windows(2).all(|w| w[0] < w[1]), "distinct stripes");
        let _guards: Vec<MutexGuard<'_, ()>> =
            stripes.iter().map(|&s| self.stripes[s].lock()).collect();
        let ps = self.store.page_size();
        let len = run.len() * ps;
        if back.len() < len {
            back.resize(len, 0);
        }
        let back = &mut back[..len];
        // Zeroed before the read: it may hold the copies just written (the
        // caller's write buffer), and a store that answers without filling
        // it must leave bytes that never verify, not the expected ones.
        back.fill(0);
        let read = self.store.read_pages(first, back);
        for (k, (i, ticket, copy)) in run.drain(..).enumerate() {
            let r = if !self.ticket_current(&ticket) {
                ticket.close();
                Ok(Commit::Superseded)
            } else {
                let checked = match &read {
                    Ok(()) => self.check_back(ticket.page, copy, &back[k * ps..(k + 1) * ps]),
                    Err(_) => self.check_written(ticket.page, copy),
                };
                match checked {
                    Ok(()) => Ok(self.finish_written(ticket)),
                    Err(e) => Err((ticket, e)),
                }
            };
            results[i] = Some(r);
        }
    }
}

impl CorruptionDetector {
    /// [`recheck`](Self::recheck) of `count` consecutive pages from `first`
    /// (at most 32) with one [`read_pages`](PageStore::read_pages): the
    /// stripe locks of all of them are held, taken in ascending stripe order
    /// as every path that holds more than one takes them, across the read,
    /// the verification of each page and the one registry update of the run,
    /// so each page's verdict is the one `recheck` would have given it at
    /// that moment. Falls back to `recheck` per page when the run reaches
    /// past the end of the store or its read fails. One verdict per page, in
    /// page order.
    pub(crate) fn recheck_run(&self, first: PageId, count: usize) -> Vec<Result<Verdict>> {
        self.recheck_run_in(first, count, &mut Vec::new())
    }

    /// [`recheck_run`](Self::recheck_run) reading into `buf`, grown to the
    /// run's size when shorter and zeroed before each read (every byte
    /// verified is one the read filled, or a zero that never verifies), so
    /// that a caller rechecking run after run allocates one buffer once.
    pub(crate) fn recheck_run_in(
        &self,
        first: PageId,
        count: usize,
        buf: &mut Vec<u8>,
    ) -> Vec<Result<Verdict>> {
        assert!(
            count <= REREAD_RUN_PAGES,
            "a recheck run is at most 32 pages"
        );
        let Some(end) = first.0.checked_add(count as u64) else {
            return (0..count as u64)
                .map(|k| self.recheck(PageId(first.0.saturating_add(k))))
                .collect();
        };
        let pages = (first.0..end).map(PageId);
        // The free-page callback is asked with no page lock held.
        let free: Vec<bool> = pages.clone().map(|p| self.is_unallocated(p)).collect();
        let ps = self.store.page_size();
        let len = count * ps;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let buf = &mut buf[..len];
        // Zeroed before the read: a store that answers without filling it
        // must leave bytes that never verify, not an earlier run's.
        buf.fill(0);
        let verdicts = {
            let _guards = self.stripes_of(pages.clone());
            let read = if end <= self.store.page_count() {
                self.store.read_pages(first, buf).is_ok()
            } else {
                false
            };
            read.then(|| {
                let verdicts: Vec<Result<Verdict>> = pages
                    .clone()
                    .zip(buf.chunks_exact(ps))
                    .zip(&free)
                    .map(
                        |((page, bytes), &free)| match self.verify_stored(page, bytes) {
                            Err(_) if free => Ok(Verdict::Unallocated),
                            Ok(()) => Ok(Verdict::Clean),
                            Err(error) => Ok(Verdict::Corrupt {
                                reported: false,
                                error,
                            }),
                        },
                    )
                    .collect();
                let mut reg = self.registry.lock();
                for (page, v) in pages.clone().zip(&verdicts) {
                    match v {
                        Ok(Verdict::Unallocated) => {
                            reg.on_freed(page);
                            self.stats.unallocated.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Verdict::Clean) => {
                            reg.on_verified(page);
                        }
                        _ => {}
                    }
                }
                verdicts
            })
        };
        verdicts.unwrap_or_else(|| pages.map(|p| self.recheck(p)).collect())
    }
}

/// The error each page of a batch gets when the batch's sync failed: the
/// store's error, kept as retryable or not as it was (an error is not `Clone`).
fn batch_sync_error(e: &Error, pages: usize) -> Error {
    match e {
        Error::Host {
            op,
            retryable,
            message,
        } => Error::Host {
            op,
            retryable: *retryable,
            message: format!("{message} (syncing a batch of {pages} repaired pages)"),
        },
        Error::Io { context, source } => Error::io(
            format!("{context} (syncing a batch of {pages} repaired pages)"),
            std::io::Error::new(source.kind(), source.to_string()),
        ),
        other => Error::io(
            format!("syncing a batch of {pages} repaired pages"),
            std::io::Error::other(other.to_string()),
        ),
    }
}
