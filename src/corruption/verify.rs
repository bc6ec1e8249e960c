//! Verifying pages: reads, scans and rechecks, and what a failure does (fence, report).

use super::*;

/// A verified read that failed: the error it returns, the report it made
/// (not sent yet), and whether the page is known bad (corrupt or fenced),
/// so that the read hook may heal it.
struct ReadFailed {
    error: Error,
    failure: Option<Failure>,
    healable: bool,
}

impl CorruptionDetector {
    /// Reads `page` into `buf` and verifies it. A page that fails is re-read
    /// once (with writers to it excluded) before it is declared corrupt.
    ///
    /// # Errors
    /// [`Error::PageFenced`] for a page known to be corrupt and not yet
    /// repaired; [`Error::PageUnallocated`] for a page that does not verify
    /// and that the host says is free (not recorded, not reported); a
    /// corruption error ([`Error::is_corruption`]) or the store's read error
    /// for a page that failed both reads (it is then fenced and reported).
    /// The corrupt bytes are never returned as valid: on error `buf` holds
    /// whatever was read and must not be used.
    ///
    /// Under the recovery manager with
    /// [`heal_on_read`](crate::RecoveryConfig::heal_on_read), a page that
    /// fails (or is fenced) is first healed on this thread, and the read
    /// returns the healed page's verified bytes.
    pub fn read_verified(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        let hook = self
            .read_hook
            .get()
            .filter(|_| read_hook::hook_allowed())
            .cloned();
        let Some(ReadFailed {
            error: err,
            failure,
            healable,
        }) = self.read_once(page, buf)
        else {
            return Ok(());
        };
        let Some(hook) = hook.filter(|_| healable) else {
            self.emit(failure);
            return Err(err);
        };
        read_hook::without_read_hook(|| match hook(page, failure) {
            read_hook::ReadHeal::Declined(failure) => {
                self.emit(failure);
                Err(err)
            }
            read_hook::ReadHeal::ReadAgain => self.read_verified(page, buf),
            read_hook::ReadHeal::Unhealed => Err(err),
        })
    }

    /// One verified read: `None` when it verified, else why it failed.
    fn read_once(&self, page: PageId, buf: &mut [u8]) -> Option<ReadFailed> {
        let failed = |error, failure, healable| {
            Some(ReadFailed {
                error,
                failure,
                healable,
            })
        };
        if let Err(e) = check_page_args(
            page,
            self.store.page_count(),
            buf.len(),
            self.store.page_size(),
        ) {
            return failed(e, None, false);
        }
        // The registry's lock only for a page whose stripe holds a fenced
        // page: reads of healthy pages share no lock.
        let fenced = if self.fenced.may_be_fenced(page) {
            self.registry.lock().state(page).filter(|s| s.is_fenced())
        } else {
            None
        };
        if let Some(state) = fenced {
            self.stats.fenced_reads.fetch_add(1, Ordering::Relaxed);
            let err = Error::PageFenced {
                page,
                state: state.as_str(),
            };
            // A host read of an irreparable page is its "next error": the
            // page goes back to suspect and is reported, so repair is tried
            // again (a replica may have come back). Suspect and repairing
            // pages are already waiting for repair and are not re-reported.
            let mut failure = None;
            if state == PageState::Irreparable {
                let _g = self.stripe(page);
                // Dropped by a resize meanwhile: nothing to renew.
                failure = (page.0 < self.store.page_count())
                    .then(|| self.note_corrupt(page, &err, Observer::HostRead).1)
                    .flatten();
            }
            return failed(err, failure, true);
        }
        if self.store.read_page(page, buf).is_ok() && self.verify_stored(page, buf).is_ok() {
            self.stats.verified.add(1);
            return None;
        }
        match self.confirm_held(page, Observer::HostRead, Some(buf)) {
            Err(e) => failed(e, None, false),
            Ok((Verdict::Clean | Verdict::Transient, _)) => None,
            Ok((Verdict::Corrupt { error, .. }, failure)) => failed(error, failure, true),
            Ok((Verdict::Unallocated, _)) => failed(Error::PageUnallocated { page }, None, false),
        }
    }

    /// Verifies bytes that were read (by a scan) as the contents of `page`,
    /// re-reading once before declaring corruption. Used by the scrubber.
    /// A page that fails and that the host says is unallocated is
    /// [`Verdict::Unallocated`].
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] when the store shrank below the page since
    /// it was read (nothing is recorded about it).
    pub fn check_scanned(&self, page: PageId, bytes: &[u8], by: Observer) -> Result<Verdict> {
        let v = self.check_scanned_uncounted(page, bytes, by)?;
        if matches!(v, Verdict::Clean) {
            self.stats.verified.add(1);
        }
        Ok(v)
    }

    /// [`check_scanned`](Self::check_scanned) without counting a page that
    /// verifies at once in the stats: a scan counts its clean pages with
    /// [`count_verified`](Self::count_verified) once per batch, so that
    /// threads scanning at once do not share a counter per page.
    pub(crate) fn check_scanned_uncounted(
        &self,
        page: PageId,
        bytes: &[u8],
        by: Observer,
    ) -> Result<Verdict> {
        if self.verify_stored(page, bytes).is_ok() {
            return Ok(Verdict::Clean);
        }
        self.confirm(page, by, None)
    }

    /// Adds `pages` that verified to the stats (see
    /// [`check_scanned_uncounted`](Self::check_scanned_uncounted)).
    pub(crate) fn count_verified(&self, pages: u64) {
        if pages > 0 {
            self.stats.verified.add(pages);
        }
    }

    /// Reads `page` and verifies it like a scan would: re-reads once before
    /// declaring corruption, and counts a persistent read error as a page
    /// that needs repair. Used by the scrubber for pages a batch read could
    /// not deliver.
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] for a page past the end (also when the
    /// store shrinks below it during the check; nothing is recorded then).
    pub fn check_page(&self, page: PageId, by: Observer) -> Result<Verdict> {
        let page_count = self.store.page_count();
        if page.0 >= page_count {
            return Err(Error::PageOutOfRange { page, page_count });
        }
        let mut buf = vec![0u8; self.store.page_size()];
        if self.store.read_page(page, &mut buf).is_ok() && self.verify_stored(page, &buf).is_ok() {
            self.stats.verified.add(1);
            return Ok(Verdict::Clean);
        }
        self.confirm(page, by, None)
    }

    /// After a failed verification: asks whether the page is unallocated,
    /// then re-reads `page` with writers to it excluded and verifies again;
    /// records the corruption if it fails twice (and reports it, after the
    /// page's lock is released). When `out` is given, the re-read bytes are
    /// copied there on success.
    pub(super) fn confirm(
        &self,
        page: PageId,
        by: Observer,
        out: Option<&mut [u8]>,
    ) -> Result<Verdict> {
        let (verdict, failure) = self.confirm_held(page, by, out)?;
        self.emit(failure);
        Ok(verdict)
    }

    /// [`confirm`](Self::confirm), handing back the report instead of
    /// sending it (the caller sends it, or gives it to the read hook).
    fn confirm_held(
        &self,
        page: PageId,
        by: Observer,
        out: Option<&mut [u8]>,
    ) -> Result<(Verdict, Option<Failure>)> {
        // The host's answer is asked with no lock held: it may read pages.
        if self.is_unallocated(page) {
            self.stats.unallocated.fetch_add(1, Ordering::Relaxed);
            return Ok((Verdict::Unallocated, None));
        }
        let mut again = vec![0u8; self.store.page_size()];
        let (verdict, failure) = {
            let _g = self.stripe(page);
            // A resize that dropped the page since it was read: nothing about
            // it may be recorded (a shrink forgets with every page lock held).
            let page_count = self.store.page_count();
            if page.0 >= page_count {
                return Err(Error::PageOutOfRange { page, page_count });
            }
            // A read that fails twice is recorded like corruption: an
            // unreadable page needs a repair as much as a garbled one
            // (rewriting a bad sector usually remaps it).
            let retry = self
                .store
                .read_page(page, &mut again)
                .and_then(|()| self.verify_stored(page, &again));
            match retry {
                Ok(()) => {
                    self.stats.transient.fetch_add(1, Ordering::Relaxed);
                    self.stats.verified.add(1);
                    tracing::debug!(%page, "verification failed once, re-read verified");
                    if let Some(out) = out {
                        out.copy_from_slice(&again);
                    }
                    (Verdict::Transient, None)
                }
                Err(e @ Error::PageOutOfRange { .. }) => return Err(e),
                // Forgotten while we waited for the lock.
                Err(_) if self.marked_free(page) => {
                    self.stats.unallocated.fetch_add(1, Ordering::Relaxed);
                    (Verdict::Unallocated, None)
                }
                Err(error) => {
                    let (reported, failure) = self.note_corrupt(page, &error, by);
                    (Verdict::Corrupt { reported, error }, failure)
                }
            }
        };
        Ok((verdict, failure))
    }

    /// Records a corruption of `page` in the registry and counts it; returns
    /// whether it is reported and the report to send. The caller holds the
    /// page's lock (so a resize cannot drop the page in between) and sends
    /// the report with [`emit`](Self::emit) after releasing it, because a
    /// host's failure callback may read pages.
    pub(super) fn note_corrupt(
        &self,
        page: PageId,
        error: &Error,
        by: Observer,
    ) -> (bool, Option<Failure>) {
        let now = self.clock.now_ns();
        let evidence = error.to_string();
        let obs = if self.looks_unsealed(page, error) {
            self.registry.lock().on_unsealed(page, &evidence, now, by)
        } else {
            self.registry.lock().on_corrupt(page, &evidence, now, by)
        };
        match obs {
            Observation::Report { .. } => {
                self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::telemetry::PAGES_CORRUPT).increment(1);
                tracing::warn!(%page, %evidence, "corrupt page");
                let f = Failure::new(
                    Source::CorruptionDetector,
                    FailureKind::CorruptPage { page },
                    evidence,
                    now,
                );
                (true, Some(f))
            }
            Observation::Known => (false, None),
            Observation::Full => {
                self.stats.unrecorded.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%page, "suspect registry full; corruption not recorded");
                let f = Failure::new(
                    Source::CorruptionDetector,
                    FailureKind::CorruptPage { page },
                    format!(
                        "{evidence} (not fenced: {})",
                        Error::RegistryFull {
                            capacity: self.registry.lock().capacity()
                        }
                    ),
                    now,
                );
                (true, Some(f))
            }
        }
    }

    /// Whether `error` says only that `page` carries no seal at all, as a
    /// page that is not adopted yet does: no checksum in the sidecar table
    /// (which remembers every page it sealed), or no trailer on a page this
    /// detector has not sealed in this process. Adoption may seal a page
    /// fenced only for that, and never one fenced for anything else.
    pub(super) fn looks_unsealed(&self, page: PageId, error: &Error) -> bool {
        match (&self.placement, error) {
            (ChecksumPlacement::Sidecar(_), Error::MissingChecksum { .. }) => true,
            (ChecksumPlacement::Trailer, Error::InvalidTrailer { .. }) => {
                !self.sealed_here.get(page)
            }
            _ => false,
        }
    }

    pub(super) fn emit(&self, failure: Option<Failure>) {
        if let Some(f) = failure {
            self.report(f);
        }
    }

    /// Tells the [write observer](CorruptionConfig::on_write) of page writes
    /// that were issued. Called with no lock of the detector held.
    pub(super) fn notify_written(&self, pages: impl IntoIterator<Item = PageId>) {
        if let Some(f) = &self.on_write {
            for page in pages {
                f(page);
            }
        }
    }

    /// Sends a report on the bus.
    pub(crate) fn report(&self, failure: Failure) {
        self.sink.send(failure);
    }
}
