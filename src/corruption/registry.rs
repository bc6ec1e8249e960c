//! Its contract is documented on [`SuspectEntry`] (this module is private; its
//! items are re-exported by its parent).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::types::PageId;

/// The state of a page in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PageState {
    /// Failed verification; waiting for repair.
    Suspect,
    /// A repair is under way.
    Repairing,
    /// Repaired and verified; kept for reporting until evicted.
    Repaired,
    /// Every source was tried and none had a good copy.
    Irreparable,
}

impl PageState {
    /// The state's name, as used in messages.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PageState::Suspect => "suspect",
            PageState::Repairing => "repairing",
            PageState::Repaired => "repaired",
            PageState::Irreparable => "irreparable",
        }
    }

    /// Whether verified reads of the page are refused.
    #[must_use]
    pub fn is_fenced(self) -> bool {
        !matches!(self, PageState::Repaired)
    }
}

/// One page's entry.
///
/// The suspect-page registry: a pure state machine over page states.
///
/// ```text
///            corrupt seen                begin_repair           finish(ok)
///  (absent) ─────────────► Suspect ───────────────► Repairing ─────────► Repaired
///      ▲                    ▲  ▲  released (ticket      │ finish(failed)
///      │                    │  └─ dropped, unwinding) ──┤
///      │ host rewrites      │ host read fails again     ▼
///      └──── any state ◄────┴────────────────────── Irreparable
/// ```
///
/// A repair that ends without a verdict (its ticket is dropped, also while
/// unwinding from a panic) releases the page back to `Suspect`: it was never
/// shown to be irreparable, and it is already reported, so it simply waits
/// for the next repair.
///
/// A page is reported when it enters `Suspect` from absent or `Repaired`, and
/// again when a host read fails on an `Irreparable` page (so repair is tried
/// once more); a scrub pass that meets a page already known never reports it
/// again. `Suspect`, `Repairing` and `Irreparable` pages are fenced: verified
/// reads return [`Error::PageFenced`](crate::Error::PageFenced).
///
/// Every entry carries an *epoch*, a number that changes whenever the page's
/// entry is created or the host rewrites the page. A repair holds the epoch it
/// started with and may write only if the epoch is unchanged, so a repair
/// never overwrites a host write that raced with it.
///
/// Beside the entries the registry keeps how many fenced pages each of 1024
/// stripes of page numbers (page mod 1024) holds, changed with every
/// transition under the registry's lock and read without it. A verified
/// read looks there first and takes the registry's lock only for a page
/// whose stripe holds a fenced page, so readers of healthy pages share no
/// lock (proptest `fenced_stripes_count_the_fenced_entries`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuspectEntry {
    /// Its state.
    pub state: PageState,
    /// When it was first seen corrupt (clock nanoseconds).
    pub first_seen_ns: u64,
    /// The last verification error, as text.
    pub last_error: String,
    /// How many times verification failed while it was known.
    pub errors: u32,
    /// The entry's epoch (see [`SuspectEntry`]).
    pub epoch: u64,
    /// The fault episode it belongs to: set when the page is first seen
    /// bad (and when a repaired page goes bad again), kept when a host read
    /// renews an irreparable page. A host write or free drops the entry, so
    /// a later fault starts a new episode. The recovery manager joins the
    /// reports of one episode of an escalated page to its escalation.
    pub episode: u64,
    /// Whether every failure seen in this episode said only that the page
    /// carries no seal at all, as a page not adopted yet does
    /// (`SuspectRegistry::on_unsealed`). Adoption may seal
    /// such a page; a page fenced for anything else is known to be bad and
    /// is never sealed by adoption.
    pub unsealed: bool,
}

/// Where a corruption observation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Observer {
    /// A host read through the detector.
    HostRead,
    /// The background scrubber.
    Scrub,
}

/// What [`SuspectRegistry::on_corrupt`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Observation {
    /// New (or renewed) suspicion: report it.
    Report {
        /// The entry's epoch.
        epoch: u64,
    },
    /// Already known; nothing to report.
    Known,
    /// Not recorded: the registry is full of unresolved pages.
    Full,
}

/// Stripes of page numbers (`page % FENCE_STRIPES`) counted by [`FencedStripes`].
pub(crate) const FENCE_STRIPES: usize = 1024;

/// How many fenced pages (`Suspect`, `Repairing`, `Irreparable`) the
/// registry holds in each stripe of page numbers. Changed only by the
/// registry, under its lock (each change is a release store that the lock's
/// release follows); read by anyone without it.
#[derive(Debug)]
pub(crate) struct FencedStripes {
    counts: Box<[AtomicU32]>,
}

impl FencedStripes {
    fn new() -> Self {
        FencedStripes {
            counts: (0..FENCE_STRIPES).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn slot(&self, page: PageId) -> &AtomicU32 {
        &self.counts[(page.0 % FENCE_STRIPES as u64) as usize]
    }

    /// Whether the registry may hold `page` fenced: `false` means that no
    /// page of its stripe was fenced when this looked, so a read that began
    /// after the page was fenced cannot be told `false`.
    pub(crate) fn may_be_fenced(&self, page: PageId) -> bool {
        self.slot(page).load(Ordering::Acquire) != 0
    }

    /// A page of `page`'s stripe went from fenced `was` to fenced `now`.
    fn change(&self, page: PageId, was: bool, now: bool) {
        match (was, now) {
            (false, true) => {
                self.slot(page).fetch_add(1, Ordering::AcqRel);
            }
            (true, false) => {
                let before = self.slot(page).fetch_sub(1, Ordering::AcqRel);
                debug_assert!(
                    before > 0,
                    "fenced count of page {page}'s stripe underflows"
                );
            }
            _ => {}
        }
    }
}

/// The registry. Bounded: when full, `Repaired` entries are evicted oldest
/// first; unresolved entries are never evicted.
#[derive(Debug)]
pub(crate) struct SuspectRegistry {
    capacity: usize,
    entries: HashMap<PageId, SuspectEntry>,
    next_epoch: u64,
    fenced: Arc<FencedStripes>,
}

impl SuspectRegistry {
    /// A registry holding at most `capacity` pages (at least 1).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        SuspectRegistry {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            next_epoch: 1,
            fenced: Arc::new(FencedStripes::new()),
        }
    }

    /// Its fenced-page counts, for reading without its lock.
    #[must_use]
    pub fn fenced_stripes(&self) -> Arc<FencedStripes> {
        self.fenced.clone()
    }

    /// Drops `page`'s entry, if any, keeping the fenced counts.
    fn remove(&mut self, page: PageId) -> Option<SuspectEntry> {
        let e = self.entries.remove(&page)?;
        self.fenced.change(page, e.state.is_fenced(), false);
        Some(e)
    }

    /// The capacity.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn epoch(&mut self) -> u64 {
        let e = self.next_epoch;
        self.next_epoch += 1;
        e
    }

    /// Records that `page` failed verification.
    pub fn on_corrupt(
        &mut self,
        page: PageId,
        error: &str,
        now_ns: u64,
        by: Observer,
    ) -> Observation {
        self.observe(page, error, now_ns, by, false)
    }

    /// Records that `page` failed verification only because it carries no
    /// seal at all (no checksum recorded for it, no trailer written into it
    /// as far as the detector knows): it may be damage, or a page that is
    /// simply not adopted yet. Otherwise as [`on_corrupt`](Self::on_corrupt).
    pub fn on_unsealed(
        &mut self,
        page: PageId,
        error: &str,
        now_ns: u64,
        by: Observer,
    ) -> Observation {
        self.observe(page, error, now_ns, by, true)
    }

    fn observe(
        &mut self,
        page: PageId,
        error: &str,
        now_ns: u64,
        by: Observer,
        unsealed: bool,
    ) -> Observation {
        if let Some(e) = self.entries.get_mut(&page) {
            e.errors = e.errors.saturating_add(1);
            e.last_error = error.to_owned();
            let renew = match e.state {
                PageState::Repaired => true,
                PageState::Irreparable => by == Observer::HostRead,
                PageState::Suspect | PageState::Repairing => false,
            };
            // Any other failure in an episode makes the page known bad.
            e.unsealed = if e.state == PageState::Repaired {
                unsealed
            } else {
                e.unsealed && unsealed
            };
            if !renew {
                return Observation::Known;
            }
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            let e = self.entries.get_mut(&page).expect("present");
            let was = e.state.is_fenced();
            if e.state != PageState::Irreparable {
                e.episode = epoch;
            }
            e.state = PageState::Suspect;
            e.epoch = epoch;
            e.first_seen_ns = now_ns;
            self.fenced.change(page, was, true);
            return Observation::Report { epoch };
        }
        if self.entries.len() >= self.capacity && !self.evict_one() {
            return Observation::Full;
        }
        let epoch = self.epoch();
        self.entries.insert(
            page,
            SuspectEntry {
                state: PageState::Suspect,
                first_seen_ns: now_ns,
                last_error: error.to_owned(),
                errors: 1,
                epoch,
                episode: epoch,
                unsealed,
            },
        );
        self.fenced.change(page, false, true);
        Observation::Report { epoch }
    }

    fn evict_one(&mut self) -> bool {
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == PageState::Repaired)
            .min_by_key(|(_, e)| e.first_seen_ns)
            .map(|(p, _)| *p);
        victim.is_some_and(|p| self.remove(p).is_some())
    }

    /// The epoch of `page`'s entry, if it has one.
    pub(crate) fn epoch_of(&self, page: PageId) -> Option<u64> {
        self.entries.get(&page).map(|e| e.epoch)
    }

    /// Moves a fenced page to `Repairing` and returns the epoch the repair
    /// must present to finish; `None` when the page is not waiting for repair
    /// (absent, repaired, or already being repaired).
    pub fn begin_repair(&mut self, page: PageId) -> Option<u64> {
        let e = self.entries.get_mut(&page)?;
        match e.state {
            PageState::Suspect | PageState::Irreparable => {
                e.state = PageState::Repairing;
                Some(e.epoch)
            }
            PageState::Repairing | PageState::Repaired => None,
        }
    }

    /// Whether a repair that began at `epoch` may still write the page.
    #[must_use]
    pub fn repair_current(&self, page: PageId, epoch: u64) -> bool {
        self.entries
            .get(&page)
            .is_some_and(|e| e.epoch == epoch && e.state == PageState::Repairing)
    }

    /// Ends a repair that began at `epoch`. Returns `false` (and changes
    /// nothing) when the page was rewritten meanwhile.
    pub fn finish_repair(&mut self, page: PageId, epoch: u64, repaired: bool) -> bool {
        if !self.repair_current(page, epoch) {
            return false;
        }
        let e = self.entries.get_mut(&page).expect("checked");
        e.state = if repaired {
            PageState::Repaired
        } else {
            PageState::Irreparable
        };
        self.fenced.change(page, true, !repaired);
        true
    }

    /// Ends a repair that began at `epoch` without a verdict: the page goes
    /// back to `Suspect` (same epoch, not reported again) so that the next
    /// repair tries it. Returns `false` (and changes nothing) when the page
    /// was rewritten meanwhile.
    pub fn release_repair(&mut self, page: PageId, epoch: u64) -> bool {
        if !self.repair_current(page, epoch) {
            return false;
        }
        self.entries.get_mut(&page).expect("checked").state = PageState::Suspect;
        true
    }

    /// Puts `page` back to `Irreparable` when it is `Suspect` in fault
    /// episode `episode` (a host read renewed it, and the renewal joined an
    /// escalation instead of opening an incident), so the next host read
    /// reports it again. Returns whether it did.
    pub fn keep_irreparable(&mut self, page: PageId, episode: u64) -> bool {
        match self.entries.get_mut(&page) {
            Some(e) if e.episode == episode && e.state == PageState::Suspect => {
                // Both states are fenced: the stripe counts do not change.
                e.state = PageState::Irreparable;
                true
            }
            _ => false,
        }
    }

    /// The host wrote new contents: the old corruption no longer matters.
    /// The entry is dropped, which also invalidates any repair in flight.
    pub fn on_host_write(&mut self, page: PageId) {
        self.remove(page);
    }

    /// The host said the page is unallocated: like a rewrite, its old
    /// corruption no longer matters and a repair in flight must not write.
    pub fn on_freed(&mut self, page: PageId) {
        self.remove(page);
    }

    /// The store shrank to `page_count` pages: entries of pages past the end
    /// are dropped (with any repair in flight for them). Returns how many.
    pub fn forget_from(&mut self, page_count: u64) -> usize {
        let before = self.entries.len();
        let fenced = &self.fenced;
        self.entries.retain(|p, e| {
            let keep = p.0 < page_count;
            if !keep {
                fenced.change(*p, e.state.is_fenced(), false);
            }
            keep
        });
        before - self.entries.len()
    }

    /// A fenced page verified on a rescan (the fault was transient): lift the fence.
    pub fn on_verified(&mut self, page: PageId) -> bool {
        match self.entries.get_mut(&page) {
            Some(e) if matches!(e.state, PageState::Suspect | PageState::Irreparable) => {
                e.state = PageState::Repaired;
                self.fenced.change(page, true, false);
                true
            }
            _ => false,
        }
    }

    /// Whether `page` is fenced for a failure other than carrying no seal
    /// (see [`SuspectEntry::unsealed`]): its bytes are known to be bad, and
    /// nothing may seal them.
    #[must_use]
    pub fn known_bad(&self, page: PageId) -> bool {
        self.entries
            .get(&page)
            .is_some_and(|e| e.state.is_fenced() && !e.unsealed)
    }

    /// The fault episode of `page` (see [`SuspectEntry::episode`]), if
    /// it is known.
    #[must_use]
    pub fn episode(&self, page: PageId) -> Option<u64> {
        self.entries.get(&page).map(|e| e.episode)
    }

    /// The state of `page`, if known.
    #[must_use]
    pub fn state(&self, page: PageId) -> Option<PageState> {
        self.entries.get(&page).map(|e| e.state)
    }

    /// Every entry, sorted by page.
    #[must_use]
    pub fn entries(&self) -> Vec<(PageId, SuspectEntry)> {
        let mut v: Vec<_> = self.entries.iter().map(|(p, e)| (*p, e.clone())).collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }

    /// Every fenced entry's page, state and first sighting, in no order
    /// (no text copied: cheap to take under the lock).
    #[must_use]
    pub(crate) fn fenced_entries(&self) -> Vec<(PageId, PageState, u64)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.state.is_fenced())
            .map(|(p, e)| (*p, e.state, e.first_seen_ns))
            .collect()
    }

    /// Pages in a given state, sorted.
    #[must_use]
    pub fn pages_in(&self, state: PageState) -> Vec<PageId> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == state)
            .map(|(p, _)| *p)
            .collect();
        v.sort();
        v
    }

    /// How many entries there are.
    #[cfg(test)]
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reported_once_per_corruption() {
        let mut r = SuspectRegistry::new(8);
        let p = PageId(4);
        assert!(matches!(
            r.on_corrupt(p, "x", 1, Observer::Scrub),
            Observation::Report { .. }
        ));
        assert_eq!(r.on_corrupt(p, "x", 2, Observer::Scrub), Observation::Known);
        assert_eq!(
            r.on_corrupt(p, "x", 3, Observer::HostRead),
            Observation::Known
        );
        let epoch = r.begin_repair(p).unwrap();
        assert!(r.finish_repair(p, epoch, false));
        assert_eq!(r.state(p), Some(PageState::Irreparable));
        // a scrub pass does not re-report an irreparable page...
        assert_eq!(r.on_corrupt(p, "x", 4, Observer::Scrub), Observation::Known);
        // ...but its next host error tries again
        assert!(matches!(
            r.on_corrupt(p, "x", 5, Observer::HostRead),
            Observation::Report { .. }
        ));
        let epoch = r.begin_repair(p).unwrap();
        assert!(r.finish_repair(p, epoch, true));
        assert!(!r.state(p).unwrap().is_fenced());
        assert!(matches!(
            r.on_corrupt(p, "x", 6, Observer::Scrub),
            Observation::Report { .. }
        ));
    }

    #[test]
    fn host_write_invalidates_repair_in_flight() {
        let mut r = SuspectRegistry::new(8);
        r.on_corrupt(PageId(1), "x", 0, Observer::Scrub);
        let epoch = r.begin_repair(PageId(1)).unwrap();
        r.on_host_write(PageId(1));
        assert!(!r.repair_current(PageId(1), epoch));
        assert!(!r.finish_repair(PageId(1), epoch, true));
        // even if the page is seen corrupt again before the stale repair finishes
        r.on_corrupt(PageId(1), "x", 1, Observer::Scrub);
        r.begin_repair(PageId(1)).unwrap();
        assert!(!r.finish_repair(PageId(1), epoch, true));
    }

    #[test]
    fn released_repair_waits_again_unless_rewritten() {
        let mut r = SuspectRegistry::new(8);
        r.on_corrupt(PageId(1), "x", 0, Observer::Scrub);
        let epoch = r.begin_repair(PageId(1)).unwrap();
        assert!(r.release_repair(PageId(1), epoch));
        assert_eq!(r.state(PageId(1)), Some(PageState::Suspect));
        assert_eq!(r.pages_in(PageState::Suspect), [PageId(1)]);
        let epoch = r.begin_repair(PageId(1)).unwrap();
        r.on_host_write(PageId(1));
        assert!(!r.release_repair(PageId(1), epoch));
        assert_eq!(r.state(PageId(1)), None);
    }

    #[test]
    fn bounded_and_evicts_only_resolved() {
        let mut r = SuspectRegistry::new(2);
        r.on_corrupt(PageId(1), "x", 0, Observer::Scrub);
        r.on_corrupt(PageId(2), "x", 0, Observer::Scrub);
        assert_eq!(
            r.on_corrupt(PageId(3), "x", 0, Observer::Scrub),
            Observation::Full
        );
        let e = r.begin_repair(PageId(1)).unwrap();
        r.finish_repair(PageId(1), e, true);
        assert!(matches!(
            r.on_corrupt(PageId(3), "x", 0, Observer::Scrub),
            Observation::Report { .. }
        ));
        assert_eq!(r.len(), 2);
        assert_eq!(r.state(PageId(1)), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Corrupt(u8, bool),
        Begin(u8),
        Finish(u8, bool),
        Release(u8),
        Write(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, any::<bool>()).prop_map(|(p, h)| Op::Corrupt(p, h)),
            (0u8..6).prop_map(Op::Begin),
            (0u8..6, any::<bool>()).prop_map(|(p, ok)| Op::Finish(p, ok)),
            (0u8..6).prop_map(Op::Release),
            (0u8..6).prop_map(Op::Write),
        ]
    }

    proptest! {
        /// Invariants: never more entries than capacity; a page is never
        /// reported twice without a repair, rewrite or host retry between;
        /// a stale repair never finishes or releases; a page is `Repairing`
        /// only while the ticket of its current epoch is held.
        #[test]
        fn registry_invariants(ops in proptest::collection::vec(op(), 0..200), cap in 1usize..5) {
            let mut r = SuspectRegistry::new(cap);
            let mut epochs: HashMap<u8, u64> = HashMap::new();
            let mut reported_open: HashMap<u8, bool> = HashMap::new();
            for (t, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Corrupt(p, host) => {
                        let before = r.state(PageId(p.into()));
                        let by = if host { Observer::HostRead } else { Observer::Scrub };
                        if let Observation::Report { .. } = r.on_corrupt(PageId(p.into()), "e", t as u64, by) {
                            let renewable = matches!(before, None | Some(PageState::Repaired))
                                || (host && before == Some(PageState::Irreparable));
                            prop_assert!(renewable, "reported page {} in state {:?}", p, before);
                            reported_open.insert(p, true);
                        }
                    }
                    Op::Begin(p) => {
                        if let Some(e) = r.begin_repair(PageId(p.into())) { epochs.insert(p, e); }
                    }
                    Op::Finish(p, ok) => {
                        if let Some(e) = epochs.remove(&p) {
                            let current = r.repair_current(PageId(p.into()), e);
                            prop_assert_eq!(r.finish_repair(PageId(p.into()), e, ok), current);
                        }
                    }
                    Op::Release(p) => {
                        if let Some(e) = epochs.remove(&p) {
                            let current = r.repair_current(PageId(p.into()), e);
                            prop_assert_eq!(r.release_repair(PageId(p.into()), e), current);
                            if current {
                                // Back to waiting, and a repair may start again.
                                prop_assert_eq!(r.state(PageId(p.into())), Some(PageState::Suspect));
                            }
                        }
                    }
                    Op::Write(p) => { r.on_host_write(PageId(p.into())); }
                }
                // No page is left `Repairing` without a ticket that can end it.
                for (page, e) in r.entries() {
                    if e.state == PageState::Repairing {
                        let held = u8::try_from(page.0).ok().and_then(|p| epochs.get(&p));
                        prop_assert_eq!(held, Some(&e.epoch), "page {} repairing without its ticket", page);
                    }
                }
                prop_assert!(r.len() <= cap);
            }
        }
    }

    proptest! {
        /// The fenced counts read without the lock always equal the number
        /// of fenced entries of each stripe, whatever the transitions (also
        /// shrinks and evictions), and a page with a fenced entry is never
        /// said to be unfenced.
        #[test]
        fn fenced_stripes_count_the_fenced_entries(
            ops in proptest::collection::vec((0u8..8, 0u64..3000, any::<bool>()), 0..300),
            cap in 1usize..6,
        ) {
            let mut r = SuspectRegistry::new(cap);
            let stripes = r.fenced_stripes();
            let mut epochs: HashMap<u64, u64> = HashMap::new();
            for (op, page, flag) in ops {
                let p = PageId(page);
                match op {
                    0 => { r.on_corrupt(p, "e", page, if flag { Observer::HostRead } else { Observer::Scrub }); }
                    1 => { r.on_unsealed(p, "e", page, Observer::Scrub); }
                    2 => { if let Some(e) = r.begin_repair(p) { epochs.insert(page, e); } }
                    3 => { if let Some(e) = epochs.remove(&page) { r.finish_repair(p, e, flag); } }
                    4 => { if let Some(e) = epochs.remove(&page) { r.release_repair(p, e); } }
                    5 => if flag { r.on_host_write(p) } else { r.on_freed(p) },
                    6 => { r.on_verified(p); }
                    _ => { r.forget_from(page); }
                }
                let mut want = vec![0u32; FENCE_STRIPES];
                for (q, e) in r.entries() {
                    if e.state.is_fenced() {
                        want[(q.0 % FENCE_STRIPES as u64) as usize] += 1;
                        prop_assert!(stripes.may_be_fenced(q), "fenced page {} not counted", q);
                    }
                }
                for (i, w) in want.iter().enumerate() {
                    prop_assert_eq!(stripes.counts[i].load(Ordering::Relaxed), *w, "stripe {}", i);
                }
            }
        }
    }
}
