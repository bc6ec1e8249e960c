//! The scan pass: the synchronous core of the scrubber, a state machine that
//! each [`Scrubber::step`](super::Scrubber::step) advances by at most one batch.
//!
//! # Contract
//!
//! - A step scans at most one batch (with several threads, 16 batches per
//!   thread, each thread a contiguous run of them), through one
//!   [`PageStore::scan_pages`](crate::PageStore::scan_pages) call per batch and one
//!   [`CorruptionDetector::check_scanned`] per page, granted by the pacer
//!   at the time it is given; it never reads a clock itself (except
//!   [`Scrubber::persist_cursor`](super::Scrubber::persist_cursor)), so simulated time drives it exactly.
//! - A batch whose read fails is re-read page by page
//!   ([`CorruptionDetector::check_page`]): an unreadable page is recorded by
//!   the detector like a corrupt one, the others are verified.
//! - Whether a page is reported is the detector's decision (its suspect
//!   registry): the scrubber counts what the detector said.
//! - The page count is read at the start of each pass; a store that shrinks
//!   during a pass ends the pass where it now ends, without an error.
//! - Error-only passes recheck the known-bad pages taken at the start of the
//!   pass with [`CorruptionDetector::recheck`], which lifts the fence of a
//!   page that now verifies.

use std::time::Duration;

use super::pacer::Pace;
use super::{
    Phase, ScanSummary, ScrubCore, ScrubMode, ScrubProgress, ScrubState, ScrubStep,
    EMPTY_PASS_WAIT_NS,
};
use crate::corruption::{CorruptionDetector, Observer, PageState, Verdict};
use crate::error::{Error, Result};
use crate::types::PageId;

/// Batches per thread in one step of a scrubber with several threads.
const PARALLEL_STEP_BATCHES: u64 = 16;

impl ScanSummary {
    fn add(&mut self, o: ScanSummary) {
        self.pages += o.pages;
        self.clean += o.clean;
        self.transient += o.transient;
        self.newly_corrupt += o.newly_corrupt;
        self.known_corrupt += o.known_corrupt;
        self.fences_lifted += o.fences_lifted;
        self.unallocated += o.unallocated;
    }

    fn count(&mut self, v: &Verdict) {
        self.pages += 1;
        match v {
            Verdict::Clean => self.clean += 1,
            Verdict::Transient => {
                self.clean += 1;
                self.transient += 1;
            }
            Verdict::Corrupt { reported: true, .. } => self.newly_corrupt += 1,
            Verdict::Corrupt {
                reported: false, ..
            } => self.known_corrupt += 1,
            Verdict::Unallocated => self.unallocated += 1,
        }
    }
}

impl ScrubCore {
    /// Pages one step scans at most: one batch, or with several threads
    /// [`PARALLEL_STEP_BATCHES`] batches per thread, so that starting the
    /// threads costs little beside the work they share.
    fn step_pages(&self) -> u64 {
        if self.threads > 1 {
            self.batch_pages
                .saturating_mul(self.threads as u64)
                .saturating_mul(PARALLEL_STEP_BATCHES)
        } else {
            self.batch_pages
        }
    }

    fn begin_pass(&mut self, now: u64) {
        self.position = 0;
        match self.mode {
            ScrubMode::Full => {
                self.bad_pages.clear();
                self.pass_total = self.detector.store().page_count();
            }
            ScrubMode::ErrorOnly => {
                self.bad_pages = self.known_bad();
                self.pass_total = self.bad_pages.len() as u64;
            }
        }
        self.phase = Phase::Scanning;
        self.pass_started_ns = now;
        self.run_pages = 0;
        self.paused_ns = 0;
    }

    fn known_bad(&self) -> Vec<PageId> {
        let mut v = self.detector.pages_in(PageState::Suspect);
        v.extend(self.detector.pages_in(PageState::Irreparable));
        v.sort_unstable();
        v
    }

    /// Does the next piece of work due at `now_ns`: at most one batch, or
    /// the end of a pass, or nothing (and says until when).
    ///
    /// # Errors
    /// Only a store error that is not about a page (a page that cannot be
    /// read is recorded, not returned). Failing to persist the cursor is
    /// logged, not returned.
    pub(super) fn step(&mut self, now_ns: u64) -> Result<ScrubStep> {
        if self.paused_since.is_some() {
            return Ok(ScrubStep::Paused);
        }
        match self.phase {
            Phase::Finished => return Ok(ScrubStep::Done),
            Phase::Between { until_ns } if now_ns < until_ns => {
                return Ok(ScrubStep::Wait { until_ns });
            }
            Phase::Between { .. } => self.begin_pass(now_ns),
            Phase::Scanning => {}
        }
        if self.position >= self.pass_total {
            return Ok(self.end_pass(now_ns));
        }
        let want = self.step_pages().min(self.pass_total - self.position);
        let n = match self.pacer.poll(now_ns, want) {
            Pace::WaitUntil(until_ns) => return Ok(ScrubStep::Wait { until_ns }),
            Pace::Go(n) => n,
        };
        let summary = match self.mode {
            ScrubMode::Full => {
                let s = match self.scan_range(PageId(self.position), n) {
                    // The store ends before the position: nothing left to scan.
                    Err(Error::PageOutOfRange { .. }) => ScanSummary::default(),
                    other => other?,
                };
                if s.pages < n {
                    // The store shrank under the pass: end it where the store ends.
                    self.pass_total = self.position + s.pages;
                }
                s
            }
            ScrubMode::ErrorOnly => {
                let from = self.position as usize;
                let pages: Vec<PageId> = self.bad_pages[from..from + n as usize].to_vec();
                self.recheck_pages(&pages)
            }
        };
        self.position += summary.pages;
        self.run_pages += summary.pages;
        if self.mode == ScrubMode::Full
            && now_ns.saturating_sub(self.last_persist_ns) >= self.persist_every_ns
        {
            self.persist_logged(now_ns);
        }
        Ok(ScrubStep::Scanned(summary))
    }

    fn end_pass(&mut self, now: u64) -> ScrubStep {
        self.passes += 1;
        // A pass with nothing to scan (an empty store, or error-only mode with
        // no known-bad pages) would otherwise start again at once, forever.
        let floor = if self.pass_total == 0 {
            EMPTY_PASS_WAIT_NS
        } else {
            0
        };
        self.position = 0;
        self.pass_total = 0;
        self.bad_pages = Vec::new();
        self.phase = match self.pass_interval_ns {
            None => Phase::Finished,
            Some(i) => Phase::Between {
                until_ns: now.saturating_add(i.max(floor)),
            },
        };
        if self.mode == ScrubMode::Full {
            self.persist_logged(now);
        }
        tracing::debug!(passes = self.passes, "scrub pass complete");
        ScrubStep::PassComplete {
            passes_completed: self.passes,
        }
    }

    /// Scans `count` pages from `first` now, without pacing, and returns what
    /// it found. Corrupt pages are recorded and reported by the detector.
    /// This is what each step does with its batch; it is public for hosts
    /// that schedule scans themselves (and for benchmarks).
    ///
    /// With [`ScrubConfig::threads`](super::ScrubConfig::threads) above 1 the
    /// range is cut into that many runs of whole batches, scanned at once on
    /// scoped threads named `selfheal-scrub-part` (the calling thread scans
    /// the first); what is found is the same as on one thread, since every
    /// page is checked by the same detector exactly once.
    ///
    /// Fewer than `count` pages are examined only when the store ends first
    /// (`pages` in the summary says how many).
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] when `first` is past the end of the store.
    pub(super) fn scan_range(&mut self, first: PageId, count: u64) -> Result<ScanSummary> {
        let page_count = self.detector.store().page_count();
        if count > 0 && first.0 >= page_count {
            return Err(Error::PageOutOfRange {
                page: first,
                page_count,
            });
        }
        let end = first.0.saturating_add(count).min(page_count);
        let total = if self.threads > 1 && end - first.0 > self.batch_pages {
            scan_parallel(&self.detector, self.batch_pages, self.threads, first.0, end)
        } else {
            scan_run(&self.detector, self.batch_pages, first.0, end)
        };
        self.corrupt_found += total.newly_corrupt;
        Ok(total)
    }

    fn recheck_pages(&mut self, pages: &[PageId]) -> ScanSummary {
        let mut s = ScanSummary::default();
        for &p in pages {
            s.pages += 1;
            if !self
                .detector
                .page_state(p)
                .is_some_and(PageState::is_fenced)
            {
                // Rewritten or repaired since the list was taken: nothing to lift.
                s.clean += 1;
                continue;
            }
            match self.detector.recheck(p) {
                Ok(Verdict::Clean) => {
                    s.clean += 1;
                    if self.detector.page_state(p) == Some(PageState::Repaired) {
                        s.fences_lifted += 1;
                    }
                }
                Ok(Verdict::Unallocated) => s.unallocated += 1,
                Ok(_) => s.known_corrupt += 1,
                Err(error) => {
                    tracing::debug!(%error, page = %p, "recheck read failed; page stays fenced");
                    s.known_corrupt += 1;
                }
            }
        }
        s
    }

    /// Rechecks every page the detector knows to be bad (`Suspect` or
    /// `Irreparable`) now, without pacing, and lifts the fence of those that
    /// verify. Does not move the full-scan position.
    pub(super) fn rescan_bad(&mut self) -> ScanSummary {
        let pages = self.known_bad();
        self.recheck_pages(&pages)
    }

    /// Pauses at `now_ns`: `step` does nothing until [`resume`](Self::resume),
    /// and paused time does not count in the measured rate. The cursor is
    /// persisted (failures are logged).
    pub(super) fn pause(&mut self, now_ns: u64) {
        if self.paused_since.is_none() {
            self.paused_since = Some(now_ns);
            self.persist_logged(now_ns);
        }
    }

    /// Resumes after [`pause`](Self::pause).
    pub(super) fn resume(&mut self, now_ns: u64) {
        if let Some(since) = self.paused_since.take() {
            self.paused_ns += now_ns.saturating_sub(since);
        }
    }

    /// Where the scrub is at `now_ns`.
    #[must_use]
    pub(super) fn progress(&self, now_ns: u64) -> ScrubProgress {
        let state = if self.paused_since.is_some() {
            ScrubState::Paused
        } else if self.phase == Phase::Finished {
            ScrubState::Finished
        } else {
            ScrubState::Running
        };
        let paused_now = self
            .paused_since
            .map_or(0, |since| now_ns.saturating_sub(since));
        let active_ns = now_ns
            .saturating_sub(self.pass_started_ns)
            .saturating_sub(self.paused_ns + paused_now);
        let rate = if self.run_pages == 0 || active_ns == 0 || self.phase != Phase::Scanning {
            0.0
        } else {
            self.run_pages as f64 * 1e9 / active_ns as f64
        };
        let remaining = self.pass_total.saturating_sub(self.position);
        let eta = (rate > 0.0)
            .then(|| Duration::try_from_secs_f64(remaining as f64 / rate).ok())
            .flatten();
        ScrubProgress {
            state,
            mode: self.mode,
            position: self.position,
            pages_done: self.position,
            total: self.pass_total,
            passes_completed: self.passes,
            corrupt_found: self.corrupt_found,
            rate_pages_per_s: rate,
            eta,
        }
    }
}

/// Scans pages `first .. end` in batches of `batch_pages`, stopping where
/// the store ends (it may shrink meanwhile).
fn scan_run(det: &CorruptionDetector, batch_pages: u64, first: u64, end: u64) -> ScanSummary {
    let mut total = ScanSummary::default();
    let mut next = first;
    while next < end {
        let chunk = (end - next).min(batch_pages);
        let (s, reached) = scan_batch(det, batch_pages, next, chunk);
        total.add(s);
        if reached < next + chunk {
            // The store ended early (it shrank).
            break;
        }
        next = reached;
    }
    total
}

/// Scans pages `first .. end` on `threads` threads, each a run of whole
/// batches; the calling thread scans the first run. A part whose thread
/// cannot be spawned is scanned on the calling thread; a panic in a part
/// (a host callback's) is resumed on the calling thread once every part
/// has ended.
fn scan_parallel(
    det: &CorruptionDetector,
    batch_pages: u64,
    threads: usize,
    first: u64,
    end: u64,
) -> ScanSummary {
    let pages = end - first;
    let per_part = pages
        .div_ceil(threads as u64)
        .div_ceil(batch_pages)
        .saturating_mul(batch_pages)
        .max(batch_pages);
    let parts: Vec<(u64, u64)> = (0..threads as u64)
        .map(|i| {
            let a = first.saturating_add(per_part.saturating_mul(i)).min(end);
            (a, a.saturating_add(per_part).min(end))
        })
        .filter(|(a, b)| a < b)
        .collect();
    debug_assert_eq!(parts.iter().map(|(a, b)| b - a).sum::<u64>(), pages);
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(parts.len());
        let mut total = ScanSummary::default();
        for &(a, b) in &parts[1..] {
            let spawned = std::thread::Builder::new()
                .name("selfheal-scrub-part".into())
                .spawn_scoped(scope, move || scan_run(det, batch_pages, a, b));
            match spawned {
                Ok(h) => handles.push(h),
                Err(error) => {
                    tracing::debug!(%error, "no thread for a scrub part; scanning it here");
                    total.add(scan_run(det, batch_pages, a, b));
                }
            }
        }
        let (a, b) = parts[0];
        total.add(scan_run(det, batch_pages, a, b));
        let mut panicked = None;
        for h in handles {
            match h.join() {
                Ok(s) => total.add(s),
                Err(payload) => panicked = Some(payload),
            }
        }
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
        total
    })
}

/// Scans `first .. first + count` and returns the summary and the first
/// page not examined.
fn scan_batch(
    det: &CorruptionDetector,
    batch_pages: u64,
    first: u64,
    count: u64,
) -> (ScanSummary, u64) {
    let mut s = ScanSummary::default();
    let mut next = first;
    let end = first + count;
    // Pages that verified at once, added to the detector's stats per batch.
    let mut clean_at_once = 0u64;
    while next < end {
        let res = det
            .store()
            .scan_pages(PageId(next), end - next, &mut |page, bytes| {
                let v = det.check_scanned_uncounted(page, bytes, Observer::Scrub)?;
                if matches!(v, Verdict::Clean) {
                    clean_at_once += 1;
                }
                s.count(&v);
                next = page.0 + 1;
                Ok(())
            });
        match res {
            Ok(()) => break,
            Err(error) => {
                // The batch failed at or after `next` (a read error, or
                // the store shrank). Find the page it was about by
                // reading page by page; an unreadable page is recorded by
                // the detector like a corrupt one.
                tracing::debug!(%error, first = next, "scrub batch read failed; checking its pages one by one");
                let retry_end = end.min(next.saturating_add(batch_pages));
                while next < retry_end {
                    match det.check_page(PageId(next), Observer::Scrub) {
                        Ok(v) => s.count(&v),
                        Err(Error::PageOutOfRange { .. }) => {
                            det.count_verified(clean_at_once);
                            return (s, next);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, page = next, "scrub could not check a page");
                            det.count_verified(clean_at_once);
                            return (s, next);
                        }
                    }
                    next += 1;
                }
            }
        }
    }
    det.count_verified(clean_at_once);
    (s, next)
}
