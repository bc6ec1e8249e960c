//! The scrub's rate limit: a pure token bucket over pages, fed the clock's
//! time and answering "scan `n` now" or "wait until `t`".
//!
//! # Contract
//!
//! - Over any window of polls the pages granted never exceed
//!   `rate × elapsed + burst_pages` (proptest
//!   `scrub::tests::pacer_never_exceeds_rate_plus_burst`).
//! - A [`Pace::WaitUntil`] deadline is exact: polling at it grants the pages
//!   that were asked for (up to the burst). The pacer never stalls.
//! - Integer arithmetic only (`u128` unit-nanoseconds): no rounding drift
//!   and no overflow for any `u64` rate and time. A clock that goes back
//!   adds nothing.
//! - It reads no clock itself: the scrubber passes its clock's `now_ns`,
//!   so simulated time drives it exactly.

use crate::error::{Error, Result};

/// How fast a scrub may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScrubRate {
    /// At most this many pages per second.
    PagesPerSec(u64),
    /// At most this many bytes per second (pages count `page_size` bytes each).
    BytesPerSec(u64),
    /// As fast as the store delivers.
    Unlimited,
}

impl ScrubRate {
    /// The rate in pages per second for a store of `page_size`-byte pages
    /// (`None` when unlimited). May be fractional for a byte rate below one
    /// page per second.
    #[must_use]
    pub fn pages_per_s(self, page_size: usize) -> Option<f64> {
        match self {
            ScrubRate::PagesPerSec(r) => Some(r as f64),
            ScrubRate::BytesPerSec(r) => Some(r as f64 / page_size.max(1) as f64),
            ScrubRate::Unlimited => None,
        }
    }
}

/// Nanoseconds per second.
pub(super) const NS_PER_S: u128 = 1_000_000_000;

/// What [`Pacer::poll`] allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pace {
    /// Scan this many pages now (at least one, at most the number asked for).
    Go(u64),
    /// Nothing may be scanned before this time (clock nanoseconds).
    WaitUntil(u64),
}

/// A token bucket over pages, in integer arithmetic.
///
/// Tokens are kept in unit-nanoseconds (a unit is a page or a byte, as the
/// [`ScrubRate`] says), so refilling is `elapsed_ns × rate` with no rounding,
/// in `u128`, which cannot overflow for any `u64` rate and time. The bucket
/// holds at most `burst_pages` pages' worth and starts full.
///
/// [`poll`](Self::poll) grants only when `min(want, burst_pages)` pages are
/// available, so the scrubber scans in whole batches instead of trickling one
/// page at a time, and otherwise returns the exact time at which they will be.
/// At 100 pages/s with bursts of 10: a full bucket grants 10 pages at time 0,
/// the next 10 are due at 100 ms (`scrub::tests::pacer_grants_a_full_bucket_then_waits`).
#[derive(Clone, Debug)]
pub(crate) struct Pacer {
    /// Units per second; `None` = unlimited.
    rate: Option<u64>,
    /// Units per page.
    unit_cost: u64,
    burst_pages: u64,
    /// Unit-nanoseconds available.
    tokens: u128,
    last_ns: u64,
}

impl Pacer {
    /// A full bucket at `now_ns`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero rate, a zero page size or a zero
    /// burst.
    pub(crate) fn new(
        rate: ScrubRate,
        page_size: usize,
        burst_pages: u64,
        now_ns: u64,
    ) -> Result<Self> {
        if page_size == 0 {
            return Err(Error::config("page_size", "is 0; it must be at least 1"));
        }
        if burst_pages == 0 {
            return Err(Error::config("burst_pages", "is 0; it must be at least 1"));
        }
        let (rate, unit_cost) = match rate {
            ScrubRate::PagesPerSec(0) | ScrubRate::BytesPerSec(0) => {
                return Err(Error::config(
                    "rate",
                    "is 0; give a positive pages/s or bytes/s rate, or `unlimited()`",
                ))
            }
            ScrubRate::PagesPerSec(r) => (Some(r), 1),
            ScrubRate::BytesPerSec(r) => (Some(r), page_size as u64),
            ScrubRate::Unlimited => (None, 1),
        };
        let mut p = Pacer {
            rate,
            unit_cost,
            burst_pages,
            tokens: 0,
            last_ns: now_ns,
        };
        p.tokens = p.capacity();
        Ok(p)
    }

    fn per_page(&self) -> u128 {
        u128::from(self.unit_cost) * NS_PER_S
    }

    fn capacity(&self) -> u128 {
        self.per_page().saturating_mul(u128::from(self.burst_pages))
    }

    fn refill(&mut self, now_ns: u64) {
        let Some(rate) = self.rate else { return };
        // A clock that went backwards (it must not) adds nothing and does not
        // move the reference point back.
        if now_ns > self.last_ns {
            let earned = u128::from(now_ns - self.last_ns) * u128::from(rate);
            self.tokens = self.tokens.saturating_add(earned).min(self.capacity());
            self.last_ns = now_ns;
        }
    }

    /// Asks to scan up to `want_pages` pages at `now_ns`.
    ///
    /// Returns [`Pace::Go`] with how many may be scanned now (the tokens are
    /// taken), or [`Pace::WaitUntil`] with the earliest time at which
    /// `min(want_pages, burst_pages)` pages will be available; polling at that
    /// time grants them. `want_pages == 0` grants `Go(0)`.
    pub(crate) fn poll(&mut self, now_ns: u64, want_pages: u64) -> Pace {
        let Some(rate) = self.rate else {
            return Pace::Go(want_pages);
        };
        if want_pages == 0 {
            return Pace::Go(0);
        }
        self.refill(now_ns);
        let per_page = self.per_page();
        let need = want_pages.min(self.burst_pages);
        let available = self.tokens / per_page;
        if available >= u128::from(need) {
            let n = u64::try_from(available.min(u128::from(want_pages))).unwrap_or(want_pages);
            self.tokens -= u128::from(n) * per_page;
            debug_assert!(n >= need && n <= want_pages);
            return Pace::Go(n);
        }
        let deficit = u128::from(need) * per_page - self.tokens;
        let wait_ns = deficit.div_ceil(u128::from(rate));
        // The bucket was refilled up to `now_ns` or later; wait from there.
        let from = self.last_ns.max(now_ns);
        Pace::WaitUntil(from.saturating_add(u64::try_from(wait_ns).unwrap_or(u64::MAX)))
    }
}
