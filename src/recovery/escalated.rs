//! Escalated pages: one page to a person per fault, not one per read.
//!
//! A host read of an irreparable page reports it again (its "next error",
//! so a replica that came back is tried). Without this record each such
//! report would open an incident that is tried, fails and is escalated
//! again, once per cooldown, for as long as the host keeps reading. The
//! manager remembers, per page, the incident that escalated it and the
//! page's fault episode
//! ([`SuspectEntry::episode`](crate::corruption::SuspectEntry::episode));
//! a later report of the same page in the same episode joins that incident
//! (counted, announced as [`Joined`](super::RecoveryEvent::Joined)) and the
//! page is put back to `Irreparable`, so the next read reports it again.
//!
//! This file holds the record; `rejoin.rs` files reports and closed
//! incidents against it.
//!
//! # Contract
//! - A report of page `p` joins the escalated incident while all hold:
//!   `p` was escalated less than
//!   [`reescalate_after`](super::RecoveryConfig::reescalate_after) ago
//!   (default [`DEFAULT_REESCALATE_AFTER`]), and `p` is in the same fault
//!   episode (not repaired, rewritten or freed by the host since). Else the
//!   record is dropped and the report opens an incident as ever.
//! - An incident that heals a page drops the page's record.
//! - Only pages are recorded: the other detectors report a target once per
//!   episode (a component dead until it beats again, a metric's band
//!   change), so a second report of them is a new episode.
//! - At most [`MAX_ESCALATED`] pages are recorded; past that the records
//!   past their interval go first, then the oldest (that page may be
//!   escalated once more).
//! - The record lives in memory: after a restart the suspect registry
//!   fences the page again and it is tried — and, still irreparable,
//!   escalated — once more.

use std::collections::HashMap;
use std::time::Duration;

use crate::types::PageId;

/// The default re-escalation interval: a page still irreparable an hour
/// after its escalation is escalated again.
pub const DEFAULT_REESCALATE_AFTER: Duration = Duration::from_secs(3_600);
/// Most escalated pages recorded at once.
pub(crate) const MAX_ESCALATED: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Escalated {
    id: u64,
    at_ns: u64,
    episode: u64,
    joined: u64,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Escalations {
    pages: HashMap<PageId, Escalated>,
    interval_ns: u64,
    capacity: usize,
}

impl Escalations {
    pub(crate) fn new(interval: Duration, capacity: usize) -> Self {
        Escalations {
            pages: HashMap::new(),
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            capacity: capacity.max(1),
        }
    }

    /// Records that incident `id` escalated `page`, in fault `episode`, at
    /// `now_ns`.
    pub(crate) fn escalated(&mut self, page: PageId, id: u64, episode: u64, now_ns: u64) {
        if !self.pages.contains_key(&page) && self.pages.len() >= self.capacity {
            let interval = self.interval_ns;
            self.pages
                .retain(|_, e| now_ns.saturating_sub(e.at_ns) < interval);
            if self.pages.len() >= self.capacity {
                let oldest = self
                    .pages
                    .iter()
                    .min_by_key(|(_, e)| e.at_ns)
                    .map(|(p, _)| *p);
                if let Some(p) = oldest {
                    self.pages.remove(&p);
                }
            }
        }
        self.pages.insert(
            page,
            Escalated {
                id,
                at_ns: now_ns,
                episode,
                joined: 0,
            },
        );
        debug_assert!(self.pages.len() <= self.capacity);
    }

    /// A report of `page`, now in fault `episode` (`None`: not fenced):
    /// the escalated incident it joins, counted, or `None` (the record, if
    /// any, is dropped: the page opens an incident as ever).
    pub(crate) fn join(&mut self, page: PageId, episode: Option<u64>, now_ns: u64) -> Option<u64> {
        let e = self.pages.get_mut(&page)?;
        if Some(e.episode) == episode && now_ns.saturating_sub(e.at_ns) < self.interval_ns {
            e.joined += 1;
            return Some(e.id);
        }
        self.pages.remove(&page);
        None
    }

    /// `page` was healed: its record, if any, is dropped.
    pub(crate) fn healed(&mut self, page: PageId) {
        self.pages.remove(&page);
    }

    /// Reports joined to `page`'s escalation so far.
    #[cfg(test)]
    pub(crate) fn joined(&self, page: PageId) -> Option<u64> {
        self.pages.get(&page).map(|e| e.joined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn joins_within_the_interval_and_episode_only() {
        let mut e = Escalations::new(Duration::from_secs(60), 16);
        e.escalated(PageId(3), 7, 1, 0);
        assert_eq!(e.join(PageId(3), Some(1), 10 * S), Some(7));
        assert_eq!(e.join(PageId(3), Some(1), 59 * S), Some(7));
        assert_eq!(e.joined(PageId(3)), Some(2));
        assert_eq!(e.join(PageId(4), Some(1), 10 * S), None, "another page");
        // Past the interval: dropped, and stays dropped.
        assert_eq!(e.join(PageId(3), Some(1), 60 * S), None);
        assert_eq!(e.join(PageId(3), Some(1), 61 * S), None);
        // Another episode (the host rewrote it): dropped.
        e.escalated(PageId(3), 8, 1, 100 * S);
        assert_eq!(e.join(PageId(3), Some(2), 101 * S), None);
        assert_eq!(e.joined(PageId(3)), None);
        // Healed: dropped.
        e.escalated(PageId(3), 9, 2, 200 * S);
        e.healed(PageId(3));
        assert_eq!(e.join(PageId(3), Some(2), 201 * S), None);
        // Not fenced any more: dropped.
        e.escalated(PageId(3), 9, 2, 300 * S);
        assert_eq!(e.join(PageId(3), None, 301 * S), None);
    }

    proptest! {
        #[test]
        fn bounded_and_the_newest_record_stays(
            ops in prop::collection::vec((0u64..64, 0u64..1_000), 1..400),
            cap in 1usize..16,
        ) {
            let mut e = Escalations::new(Duration::from_secs(100), cap);
            let mut now = 0;
            for (i, (page, dt)) in ops.into_iter().enumerate() {
                now += dt * S / 10;
                e.escalated(PageId(page), i as u64, 1, now);
                prop_assert!(e.pages.len() <= cap);
                prop_assert_eq!(e.join(PageId(page), Some(1), now), Some(i as u64));
            }
        }
    }
}
