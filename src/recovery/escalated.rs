//! Escalated pages and transactions: one page to a person per fault, not
//! one per read or retry.
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
//! - Blocked rollbacks are recorded too: a transaction whose rollback is
//!   blocked is reported again at every retry (the escalated incident's own
//!   remedies, the host's `rollback_all`), each the same episode (it stays
//!   blocked until it is rolled back), so a `RollbackBlocked` report of a
//!   transaction whose `RollbackBlocked` incident was escalated less than
//!   the interval ago joins that incident (another kind of report about the
//!   transaction, a deadlock's, does not). An incident about the
//!   transaction that heals drops the record, as does acknowledging it; the
//!   record is not saved: after a restart a transaction still blocked is
//!   escalated once more. At most `capacity` transactions are recorded,
//!   beside the pages.
//! - No other target is recorded. A second report of a component is taken
//!   as a new episode (a component dead until it beats again, a metric's
//!   band change) — also for those re-sent after each failed retry (a
//!   stalled journal or checksum log, a failed snapshot), which the
//!   per-target cooldown and backoff pace instead.
//! - At most [`MAX_ESCALATED`] pages are recorded; past that the records
//!   past their interval go first, then the oldest (that page may be
//!   escalated once more).
//! - **Durable.** Every escalated incident is kept — its first failure,
//!   priority, reason, the report's text, when it was escalated and the
//!   pages still recorded — in `dir/escalated` (see
//!   [`escalated_file`](super::escalated_file)), saved whenever an incident
//!   is escalated, a page of one is healed, or the host acknowledges one.
//!   After a restart the record is read back when the manager is built: a
//!   page the suspect registry fences again joins its old escalation at its
//!   first report (whatever its fault episode then, which is bound to the
//!   record) instead of being tried and escalated from scratch, within the
//!   re-escalation interval counted from the original escalation. The
//!   host lists the escalated incidents
//!   ([`escalated`](super::AutoRecoveryManager::escalated)) and
//!   acknowledges them
//!   ([`acknowledge_escalation`](super::AutoRecoveryManager::acknowledge_escalation)):
//!   an acknowledged incident's record and its pages' records are dropped,
//!   so the page's next report opens an incident again.
//! - At most [`MAX_REPORTS`] escalated incidents are kept; past that the
//!   oldest (lowest id) goes first, logged.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::types::{Failure, PageId, Priority, Target, TxnId};

/// The default re-escalation interval: a page still irreparable an hour
/// after its escalation is escalated again.
pub const DEFAULT_REESCALATE_AFTER: Duration = Duration::from_secs(3_600);
/// Most escalated pages recorded at once.
pub(crate) const MAX_ESCALATED: usize = 65_536;
/// Most escalated incidents kept (listed, saved) at once.
pub const MAX_REPORTS: usize = 4_096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Escalated {
    id: u64,
    at_ns: u64,
    /// `None`: read back from the previous run; bound to the page's episode
    /// at its first report.
    episode: Option<u64>,
    joined: u64,
}

/// An escalated incident, as the manager keeps it until the host
/// acknowledges it (see
/// [`AutoRecoveryManager::escalated`](super::AutoRecoveryManager::escalated)).
#[derive(Clone, Debug, PartialEq)]
pub struct EscalatedIncident {
    /// The incident's id.
    pub id: u64,
    /// Its first failure (its target is what the incident is about; its
    /// detection time is on this run's clock, rebased after a restart).
    pub failure: Failure,
    /// The incident's priority (the most urgent of its failures).
    pub priority: Priority,
    /// Why it was escalated, in one sentence.
    pub reason: String,
    /// The report sent to the host, as text
    /// ([`EscalationReport`](crate::healer::EscalationReport)'s `Display`;
    /// at most 64 KiB).
    pub report: String,
    /// When it was escalated, on this run's clock (rebased after a restart,
    /// as open incidents are: the time it had been escalated when saved).
    pub escalated_at_ns: u64,
    /// Its pages still recorded as escalated (not healed, rewritten or
    /// freed since, as far as the manager has seen), sorted.
    pub pages: Vec<PageId>,
    /// Reports of those pages that joined it since its escalation (as of
    /// the last save, for an incident of a previous run).
    pub joined: u64,
    /// Whether it was escalated by a previous run of the manager.
    pub previous_run: bool,
}

impl EscalatedIncident {
    /// What it is about.
    #[must_use]
    pub fn target(&self) -> Target {
        self.failure.target()
    }
}

/// An escalated incident's record, without its pages (kept per page).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Report {
    pub(crate) failure: Failure,
    pub(crate) priority: Priority,
    pub(crate) reason: String,
    pub(crate) text: String,
    pub(crate) at_ns: u64,
    pub(crate) previous_run: bool,
    /// Joins counted before this run (a restored record's).
    pub(crate) joined_before: u64,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Escalations {
    pages: HashMap<PageId, Escalated>,
    /// Escalated transactions (episode always `None`: one per transaction).
    txns: HashMap<TxnId, Escalated>,
    reports: BTreeMap<u64, Report>,
    interval_ns: u64,
    capacity: usize,
}

impl Escalations {
    pub(crate) fn new(interval: Duration, capacity: usize) -> Self {
        Escalations {
            pages: HashMap::new(),
            txns: HashMap::new(),
            reports: BTreeMap::new(),
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            capacity: capacity.max(1),
        }
    }

    /// Records that incident `id` escalated `page`, in fault `episode`, at
    /// `now_ns`.
    pub(crate) fn escalated(&mut self, page: PageId, id: u64, episode: u64, now_ns: u64) {
        self.record_page(page, id, Some(episode), now_ns, 0);
    }

    fn record_page(
        &mut self,
        page: PageId,
        id: u64,
        episode: Option<u64>,
        at_ns: u64,
        joined: u64,
    ) {
        let e = Escalated {
            id,
            at_ns,
            episode,
            joined,
        };
        record(&mut self.pages, page, e, self.capacity, self.interval_ns);
    }

    /// Records that incident `id` escalated transaction `txn` at `now_ns`
    /// (at most `capacity` transactions: past that, those past their
    /// interval go first, then the oldest).
    pub(crate) fn escalated_txn(&mut self, txn: TxnId, id: u64, now_ns: u64) {
        let e = Escalated {
            id,
            at_ns: now_ns,
            episode: None,
            joined: 0,
        };
        record(&mut self.txns, txn, e, self.capacity, self.interval_ns);
    }

    /// A report of transaction `txn`: the escalated incident it joins,
    /// counted, or `None` (past the interval the record is dropped).
    pub(crate) fn join_txn(&mut self, txn: TxnId, now_ns: u64) -> Option<u64> {
        let e = self.txns.get_mut(&txn)?;
        if now_ns.saturating_sub(e.at_ns) < self.interval_ns {
            e.joined += 1;
            return Some(e.id);
        }
        self.txns.remove(&txn);
        None
    }

    /// Transaction `txn` was healed (rolled back) by incident `by`: its
    /// record is dropped unless a later incident escalated it, as
    /// [`healed`](Self::healed) does for a page; whether one was dropped.
    pub(crate) fn healed_txn(&mut self, txn: TxnId, by: u64) -> bool {
        match self.txns.get(&txn) {
            Some(e) if e.id < by => self.txns.remove(&txn).is_some(),
            _ => false,
        }
    }

    /// Keeps incident `id`'s record (at most [`MAX_REPORTS`]: the oldest
    /// goes first).
    pub(crate) fn reported(&mut self, id: u64, report: Report) {
        self.reports.insert(id, report);
        while self.reports.len() > MAX_REPORTS {
            if let Some((old, _)) = self.reports.pop_first() {
                tracing::warn!(
                    incident = old,
                    "more than {MAX_REPORTS} escalated incidents unacknowledged: the oldest is no longer kept"
                );
            }
        }
    }

    /// Whether `page` has a record (a report of it may join an escalation).
    pub(crate) fn has_page(&self, page: PageId) -> bool {
        self.pages.contains_key(&page)
    }

    /// A report of `page`, now in fault `episode` (`None`: not fenced):
    /// the escalated incident it joins, counted, or `None` (the record, if
    /// any, is dropped: the page opens an incident as ever). A record read
    /// back from the previous run takes the page's episode now.
    pub(crate) fn join(&mut self, page: PageId, episode: Option<u64>, now_ns: u64) -> Option<u64> {
        let e = self.pages.get_mut(&page)?;
        if e.episode.is_none() && episode.is_some() {
            e.episode = episode;
        }
        if e.episode == episode && now_ns.saturating_sub(e.at_ns) < self.interval_ns {
            e.joined += 1;
            return Some(e.id);
        }
        self.pages.remove(&page);
        None
    }

    /// `page` was healed by incident `by`: its record, if any, is dropped —
    /// unless a later incident escalated it (ids only grow, so a record
    /// with a larger id than `by` was made after that heal began: an
    /// incident healed on a reader's thread whose close is recorded late
    /// must not erase it); whether one was dropped.
    pub(crate) fn healed(&mut self, page: PageId, by: u64) -> bool {
        match self.pages.get(&page) {
            Some(e) if e.id < by => self.pages.remove(&page).is_some(),
            _ => false,
        }
    }

    /// The host acknowledged incident `id`: its record and its pages'
    /// records are dropped; whether it was kept.
    pub(crate) fn acknowledge(&mut self, id: u64) -> bool {
        self.pages.retain(|_, e| e.id != id);
        self.txns.retain(|_, e| e.id != id);
        self.reports.remove(&id).is_some()
    }

    /// The escalated incidents kept, by id.
    pub(crate) fn list(&self) -> Vec<EscalatedIncident> {
        let mut pages: HashMap<u64, (Vec<PageId>, u64)> = HashMap::new();
        for (p, e) in &self.pages {
            let v = pages.entry(e.id).or_default();
            v.0.push(*p);
            v.1 += e.joined;
        }
        for e in self.txns.values() {
            pages.entry(e.id).or_default().1 += e.joined;
        }
        self.reports
            .iter()
            .map(|(id, r)| {
                let (mut ps, joined) = pages.remove(id).unwrap_or_default();
                ps.sort_unstable();
                EscalatedIncident {
                    id: *id,
                    failure: r.failure.clone(),
                    priority: r.priority,
                    reason: r.reason.clone(),
                    report: r.text.clone(),
                    escalated_at_ns: r.at_ns,
                    pages: ps,
                    joined: r.joined_before + joined,
                    previous_run: r.previous_run,
                }
            })
            .collect()
    }

    /// Takes back the escalated incidents of a previous run (their pages'
    /// records bound to no episode yet).
    pub(crate) fn restore(&mut self, saved: Vec<EscalatedIncident>) {
        for s in saved {
            for &p in &s.pages {
                self.record_page(p, s.id, None, s.escalated_at_ns, 0);
            }
            self.reported(
                s.id,
                Report {
                    failure: s.failure,
                    priority: s.priority,
                    reason: s.reason,
                    text: s.report,
                    at_ns: s.escalated_at_ns,
                    previous_run: true,
                    joined_before: s.joined,
                },
            );
        }
    }

    /// The highest incident id kept (0: none).
    pub(crate) fn max_id(&self) -> u64 {
        self.reports.keys().next_back().copied().unwrap_or(0)
    }

    /// Reports joined to `page`'s escalation so far.
    #[cfg(test)]
    pub(crate) fn joined(&self, page: PageId) -> Option<u64> {
        self.pages.get(&page).map(|e| e.joined)
    }
}

/// Records `e` for `key` in `map`, holding at most `capacity`: past that,
/// the records past their interval (as of `e`'s time) go first, then the
/// oldest.
fn record<K: std::hash::Hash + Eq + Copy>(
    map: &mut HashMap<K, Escalated>,
    key: K,
    e: Escalated,
    capacity: usize,
    interval_ns: u64,
) {
    if !map.contains_key(&key) && map.len() >= capacity {
        map.retain(|_, old| e.at_ns.saturating_sub(old.at_ns) < interval_ns);
        if map.len() >= capacity {
            let oldest = map.iter().min_by_key(|(_, old)| old.at_ns).map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
    }
    map.insert(key, e);
    debug_assert!(map.len() <= capacity);
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
        // Healed by an incident older than the escalation (its close
        // recorded late): kept. Healed by a later one: dropped.
        e.escalated(PageId(3), 9, 2, 200 * S);
        assert!(!e.healed(PageId(3), 5));
        assert_eq!(e.join(PageId(3), Some(2), 200 * S), Some(9));
        assert!(e.healed(PageId(3), 10));
        assert_eq!(e.join(PageId(3), Some(2), 201 * S), None);
        // Not fenced any more: dropped.
        e.escalated(PageId(3), 9, 2, 300 * S);
        assert_eq!(e.join(PageId(3), None, 301 * S), None);
    }

    #[test]
    fn a_transaction_joins_within_the_interval_until_healed_or_acknowledged() {
        let mut e = Escalations::new(Duration::from_secs(60), 16);
        assert_eq!(e.join_txn(TxnId(5), 0), None, "never escalated");
        e.escalated_txn(TxnId(5), 7, 0);
        assert_eq!(e.join_txn(TxnId(5), 10 * S), Some(7));
        assert_eq!(e.join_txn(TxnId(5), 59 * S), Some(7));
        assert_eq!(e.join_txn(TxnId(6), 10 * S), None, "another transaction");
        // The joins are counted on the incident (it has no pages).
        e.reported(
            7,
            Report {
                failure: Failure::new(
                    crate::types::Source::TransactionRollbackManager,
                    crate::types::FailureKind::RollbackBlocked {
                        txn: TxnId(5),
                        page: PageId(2),
                    },
                    "blocked",
                    0,
                ),
                priority: Priority::P1,
                reason: String::new(),
                text: String::new(),
                at_ns: 0,
                previous_run: false,
                joined_before: 0,
            },
        );
        let listed = e.list();
        assert_eq!((listed[0].joined, listed[0].pages.len()), (2, 0));
        // Past the interval: dropped, and stays dropped.
        assert_eq!(e.join_txn(TxnId(5), 60 * S), None);
        assert_eq!(e.join_txn(TxnId(5), 61 * S), None);
        // Healed by an older incident (a late close): kept; by a later one:
        // dropped.
        e.escalated_txn(TxnId(5), 9, 100 * S);
        assert!(!e.healed_txn(TxnId(5), 8));
        assert_eq!(e.join_txn(TxnId(5), 101 * S), Some(9));
        assert!(e.healed_txn(TxnId(5), 10));
        assert_eq!(e.join_txn(TxnId(5), 102 * S), None);
        // Acknowledged: dropped.
        e.escalated_txn(TxnId(5), 11, 200 * S);
        e.acknowledge(11);
        assert_eq!(e.join_txn(TxnId(5), 201 * S), None);
    }

    proptest! {
        #[test]
        fn transactions_are_bounded_and_the_newest_record_stays(
            ops in prop::collection::vec((0u64..64, 0u64..1_000), 1..400),
            cap in 1usize..16,
        ) {
            let mut e = Escalations::new(Duration::from_secs(100), cap);
            let mut now = 0;
            for (i, (txn, dt)) in ops.into_iter().enumerate() {
                now += dt * S / 10;
                e.escalated_txn(TxnId(txn), i as u64, now);
                prop_assert!(e.txns.len() <= cap);
                prop_assert_eq!(e.join_txn(TxnId(txn), now), Some(i as u64));
            }
        }

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
