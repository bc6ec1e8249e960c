//! Repair tickets: how a repair takes a page, commits a verified copy, or gives it up.

use super::*;

/// A repair in progress, from [`CorruptionDetector::begin_repair`].
///
/// It borrows the detector that issued it, so it cannot outlive it. It ends
/// in one of three ways: [`commit_repair`](CorruptionDetector::commit_repair)
/// (or [`commit_repairs`](CorruptionDetector::commit_repairs)) writes a copy,
/// [`abandon_repair`](CorruptionDetector::abandon_repair) declares the page
/// irreparable, or the ticket is dropped — also while unwinding from a panic
/// — which releases the page back to `Suspect` so that the next repair tries
/// it (it is not reported again: it already was). A page therefore never
/// stays `Repairing` after its repair is gone.
#[must_use = "a dropped ticket ends the repair without a verdict: the page goes back to `Suspect`"]
pub struct RepairTicket<'d> {
    detector: &'d CorruptionDetector,
    page: PageId,
    epoch: u64,
    open: bool,
}

impl RepairTicket<'_> {
    /// The page being repaired.
    #[must_use]
    pub fn page(&self) -> PageId {
        self.page
    }

    /// The epoch of the page's fault this ticket repairs.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Marks the ticket as ended (its verdict was recorded), so that dropping
    /// it releases nothing.
    fn close(mut self) {
        self.open = false;
    }
}

impl fmt::Debug for RepairTicket<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepairTicket")
            .field("page", &self.page)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Drop for RepairTicket<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        if self
            .detector
            .registry
            .lock()
            .release_repair(self.page, self.epoch)
        {
            tracing::warn!(page = %self.page, "a repair ended without a verdict; the page waits for repair again");
        }
    }
}

/// What one page of [`CorruptionDetector::commit_repairs`] came to: as for
/// [`commit_repair`](CorruptionDetector::commit_repair), the ticket comes
/// back with the error so that the caller can try another copy.
pub type CommitResult<'d> = std::result::Result<Commit, (RepairTicket<'d>, Error)>;

/// One page of a run of a batch commit: its place in the batch, its ticket,
/// its copy, and whether the copy's trailer checksum is known to verify as
/// the ticket's page (see [`VerifiedCopy`]).
struct RunEntry<'d, 'c> {
    i: usize,
    ticket: RepairTicket<'d>,
    copy: &'c [u8],
    sealed: bool,
}

/// What [`CorruptionDetector::commit_repair`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The copy was written, synced, re-read and verified.
    Written,
    /// The host rewrote the page after the repair began; nothing was written
    /// (the host's newer page stands).
    Superseded,
}

/// A copy of a page that verified as that page, kept with what its
/// verification proved until it is committed
/// ([`commit_verified_repair`](CorruptionDetector::commit_verified_repair),
/// [`commit_verified_repairs`](CorruptionDetector::commit_verified_repairs)).
///
/// Its bytes are never lent out mutably, so they are the bytes that
/// verified. Under the trailer placement a page's checksum is a function of
/// its page number and its bytes alone, so a commit of the copy need not
/// compute it again; what the page must carry (its LSN floor) can change
/// until the commit, and the commit checks it again. Under the sidecar
/// placement the table can change too, and the commit verifies the copy
/// again in full.
#[derive(Debug)]
pub(crate) struct VerifiedCopy {
    page: PageId,
    bytes: Vec<u8>,
    /// Whether the trailer checksum of `bytes` as `page` verified.
    sealed: bool,
}

impl VerifiedCopy {
    /// The copy's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the trailer checksum of the copy is known to verify as `page`.
    fn sealed_as(&self, page: PageId) -> bool {
        self.sealed && self.page == page
    }
}

impl CorruptionDetector {
    /// [`verify`](Self::verify) of a copy of `page` that may be committed
    /// later: the copy comes back with the proof of its verification, or
    /// with the error.
    ///
    /// # Errors
    /// The verification error, with the bytes.
    pub(crate) fn verify_copy(
        &self,
        page: PageId,
        bytes: Vec<u8>,
    ) -> std::result::Result<VerifiedCopy, (Vec<u8>, Error)> {
        match self.verify_bytes(page, &bytes) {
            Ok(()) => Ok(VerifiedCopy {
                page,
                sealed: matches!(self.placement, ChecksumPlacement::Trailer),
                bytes,
            }),
            Err(e) => Err((bytes, e)),
        }
    }

    /// Verifies a repair copy before it is written: in full, or, when its
    /// trailer checksum is known to verify as `page` (`sealed`, from a
    /// [`VerifiedCopy`]) under the trailer placement, only what may have
    /// changed since (the LSN floor).
    fn verify_before_write(&self, page: PageId, copy: &[u8], sealed: bool) -> Result<()> {
        if sealed && matches!(self.placement, ChecksumPlacement::Trailer) {
            debug_assert!(
                crate::checksum::trailer::verify(page, copy).is_ok(),
                "a sealed copy verifies"
            );
            self.check_lsn_floor(page, copy)
        } else {
            self.verify_bytes(page, copy)
        }
    }

    /// Starts a repair of a fenced page. `None` when the page is not waiting
    /// for repair (not known corrupt, already repaired, or being repaired).
    pub fn begin_repair(&self, page: PageId) -> Option<RepairTicket<'_>> {
        let epoch = self.registry.lock().begin_repair(page)?;
        Some(RepairTicket {
            detector: self,
            page,
            epoch,
            open: true,
        })
    }

    /// Writes a repair copy: verifies it, and — unless the host rewrote the
    /// page since the repair began — writes it, syncs, re-reads and
    /// re-verifies, all with host writes to the page excluded.
    ///
    /// On `Ok` the ticket is finished (the page is `Repaired`, or the host's
    /// newer page stands). On `Err` the ticket is handed back so that the
    /// caller can try another copy or [`abandon_repair`](Self::abandon_repair).
    ///
    /// # Errors
    /// The copy's verification error (nothing was written); the store's error;
    /// a verification error of the re-read page (the write did not stick);
    /// [`Error::InvalidArgument`] for a ticket of another detector.
    pub fn commit_repair<'d>(&'d self, ticket: RepairTicket<'d>, copy: &[u8]) -> CommitResult<'d> {
        self.commit_one(ticket, copy, false)
    }

    /// [`commit_repair`](Self::commit_repair) of a copy verified with
    /// [`verify_copy`](Self::verify_copy): its checksum is not computed again
    /// when the placement makes that needless (see [`VerifiedCopy`]).
    pub(crate) fn commit_verified_repair<'d>(
        &'d self,
        ticket: RepairTicket<'d>,
        copy: &VerifiedCopy,
    ) -> CommitResult<'d> {
        let sealed = copy.sealed_as(ticket.page);
        self.commit_one(ticket, copy.bytes(), sealed)
    }

    /// `commit_repair`; `sealed` says the copy's trailer checksum is known
    /// to verify as the ticket's page.
    fn commit_one<'d>(
        &'d self,
        ticket: RepairTicket<'d>,
        copy: &[u8],
        sealed: bool,
    ) -> CommitResult<'d> {
        if let Err(e) = self.owns(&ticket) {
            return Err((ticket, e));
        }
        let page = ticket.page;
        let mut issued = false;
        let result = {
            let _g = self.stripe(page);
            if self.ticket_current(&ticket) {
                let written = self
                    .write_copy(page, copy, sealed, &mut issued)
                    .and_then(|()| self.store.sync())
                    .and_then(|()| self.check_written(page, copy));
                match written {
                    Ok(()) => Ok(self.finish_written(ticket)),
                    Err(e) => Err((ticket, e)),
                }
            } else {
                ticket.close();
                Ok(Commit::Superseded)
            }
        };
        if issued {
            self.notify_written([page]);
        }
        result
    }

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

    /// Refuses a ticket issued by another detector.
    pub(super) fn owns(&self, ticket: &RepairTicket<'_>) -> Result<()> {
        if std::ptr::eq(ticket.detector, self) {
            Ok(())
        } else {
            Err(Error::InvalidArgument {
                what: "ticket",
                reason: format!(
                    "the repair ticket of page {} was issued by another detector; commit it there",
                    ticket.page
                ),
            })
        }
    }

    /// Whether the ticket may still write (no host write since it began).
    /// Callers hold the page's stripe lock.
    pub(super) fn ticket_current(&self, ticket: &RepairTicket<'_>) -> bool {
        self.registry
            .lock()
            .repair_current(ticket.page, ticket.epoch)
    }

    /// Verifies and writes a repair copy (no sync); sets `issued` when the
    /// write was issued to the store. The caller holds the page's stripe
    /// lock and has checked the ticket.
    pub(super) fn write_copy(
        &self,
        page: PageId,
        copy: &[u8],
        sealed: bool,
        issued: &mut bool,
    ) -> Result<()> {
        check_page_args(
            page,
            self.store.page_count(),
            copy.len(),
            self.store.page_size(),
        )?;
        self.verify_before_write(page, copy, sealed)?;
        *issued = true;
        self.store.write_page(page, copy)?;
        self.note_sealed_here(page);
        self.record_write_lsn(page, copy);
        Ok(())
    }

    /// Re-reads a page after its repair write was synced and checks that it
    /// verifies and holds exactly the copy. The caller holds the stripe lock.
    pub(super) fn check_written(&self, page: PageId, copy: &[u8]) -> Result<()> {
        let mut back = vec![0u8; copy.len()];
        self.store.read_page(page, &mut back)?;
        self.check_back(page, copy, &back)
    }

    /// Checks bytes re-read after a repair write: they verify as read from
    /// the store and are exactly the copy. The caller verified the copy
    /// before writing it (its checksum, or the proof of a [`VerifiedCopy`])
    /// and holds the page's stripe lock with its epoch current.
    ///
    /// Bytes that are exactly the copy have the copy's checksum: under the
    /// trailer placement, where the checksum is a function of the page
    /// number and the bytes alone, it is not computed again, and only what
    /// may have changed since the copy was verified (the page's LSN floor,
    /// and its exact last write) is checked. Under the sidecar placement the
    /// re-read bytes are verified against the table in full.
    pub(super) fn check_back(&self, page: PageId, copy: &[u8], back: &[u8]) -> Result<()> {
        if back != copy {
            // The store's own verdict on what it holds comes first.
            self.verify_stored(page, back)?;
            return Err(Error::Irreparable {
                page,
                reason: "the page read back differs from the copy written".into(),
            });
        }
        match self.placement {
            ChecksumPlacement::Trailer => {
                debug_assert!(
                    crate::checksum::trailer::verify(page, back).is_ok(),
                    "a repair copy verified before it was written"
                );
                self.check_lsn_floor(page, back)?;
                self.check_lsn_exact(page, back)
            }
            ChecksumPlacement::Sidecar(_) => self.verify_stored(page, back),
        }
    }

    /// Marks a checked, synced repair as done. The caller holds the stripe
    /// lock, so the epoch checked before cannot have changed.
    pub(super) fn finish_written(&self, ticket: RepairTicket<'_>) -> Commit {
        let done = self
            .registry
            .lock()
            .finish_repair(ticket.page, ticket.epoch, true);
        debug_assert!(done, "the epoch changed under the stripe lock");
        ticket.close();
        Commit::Written
    }

    /// Replaces a page that verifies with a newer copy, but only if the page
    /// still holds exactly `expected` (the bytes the caller compared against):
    /// the compare, write, sync, re-read and re-verify happen with host writes
    /// to the page excluded, so a host write that landed after `expected` was
    /// read is never overwritten. Returns `Ok(false)`, writing nothing, when
    /// the page changed. Used by anti-entropy to adopt a replica's newer copy
    /// of a page whose local copy is valid but older.
    ///
    /// # Errors
    /// The copy's verification error (nothing was written); the store's
    /// error; a verification error of the re-read page (the write did not
    /// stick — the page is then recorded as corrupt and fenced).
    pub fn replace_if_unchanged(&self, page: PageId, expected: &[u8], copy: &[u8]) -> Result<bool> {
        check_page_args(
            page,
            self.store.page_count(),
            copy.len(),
            self.store.page_size(),
        )?;
        check_page_args(
            page,
            self.store.page_count(),
            expected.len(),
            self.store.page_size(),
        )?;
        self.verify_bytes(page, copy)?;
        let (outcome, failure) = {
            let _g = self.stripe(page);
            let mut current = vec![0u8; copy.len()];
            self.store.read_page(page, &mut current)?;
            if current != expected {
                return Ok(false);
            }
            let write = self.store.write_page(page, copy);
            if write.is_ok() {
                self.note_sealed_here(page);
                self.record_write_lsn(page, copy);
            }
            let written = write
                .and_then(|()| self.store.sync())
                .and_then(|()| self.store.read_page(page, &mut current))
                .and_then(|()| self.verify_stored(page, &current));
            // The page has new contents now, whatever happened: old fences
            // and repairs in flight no longer apply.
            self.registry.lock().on_host_write(page);
            let verified = written.and_then(|()| {
                if current == copy {
                    Ok(())
                } else {
                    Err(Error::Irreparable {
                        page,
                        reason: "the page read back differs from the copy written".into(),
                    })
                }
            });
            match verified {
                Ok(()) => (Ok(true), None),
                // Recorded under the page's lock; reported after it is
                // released (a failure callback may read pages of its stripe).
                Err(e) => {
                    let failure = self.note_corrupt(page, &e, Observer::Scrub).1;
                    (Err(e), failure)
                }
            }
        };
        // Only a call that issued its write gets here.
        self.notify_written([page]);
        self.emit(failure);
        outcome
    }

    /// Ends a repair without writing: the page becomes `Irreparable` (unless
    /// the host rewrote it meanwhile) and stays fenced. Returns whether the
    /// page was marked irreparable (`false` also for a ticket of another
    /// detector, which is then released where it came from).
    pub fn abandon_repair(&self, ticket: RepairTicket<'_>) -> bool {
        if self.owns(&ticket).is_err() {
            return false;
        }
        let marked = self
            .registry
            .lock()
            .finish_repair(ticket.page, ticket.epoch, false);
        ticket.close();
        marked
    }

    /// Re-reads a fenced page and lifts the fence if it now verifies (the
    /// fault was transient). Returns the verdict. A page that does not
    /// verify and that the host now says is unallocated has nothing left to
    /// repair: its entry is dropped and the verdict is
    /// [`Verdict::Unallocated`].
    ///
    /// # Errors
    /// The store's read error; [`Error::PageOutOfRange`] for a page past the
    /// end.
    pub fn recheck(&self, page: PageId) -> Result<Verdict> {
        let mut buf = vec![0u8; self.store.page_size()];
        let free = self.is_unallocated(page);
        let _g = self.stripe(page);
        let page_count = self.store.page_count();
        if page.0 >= page_count {
            return Err(Error::PageOutOfRange { page, page_count });
        }
        let read = self.store.read_page(page, &mut buf);
        if free
            && read
                .as_ref()
                .map_or(true, |()| self.verify_stored(page, &buf).is_err())
        {
            self.registry.lock().on_freed(page);
            self.stats.unallocated.fetch_add(1, Ordering::Relaxed);
            return Ok(Verdict::Unallocated);
        }
        read?;
        match self.verify_stored(page, &buf) {
            Ok(()) => {
                self.registry.lock().on_verified(page);
                Ok(Verdict::Clean)
            }
            Err(error) => Ok(Verdict::Corrupt {
                reported: false,
                error,
            }),
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
