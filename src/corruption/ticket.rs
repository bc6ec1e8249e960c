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
    pub(super) detector: &'d CorruptionDetector,
    pub(super) page: PageId,
    pub(super) epoch: u64,
    pub(super) open: bool,
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
    pub(super) fn close(mut self) {
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
    pub(super) fn sealed_as(&self, page: PageId) -> bool {
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
    pub(super) fn verify_before_write(
        &self,
        page: PageId,
        copy: &[u8],
        sealed: bool,
    ) -> Result<()> {
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
