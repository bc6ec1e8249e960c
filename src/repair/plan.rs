//! The repairer's decisions as pure functions: in which order to ask the
//! replicas, whether to ask the next one, and which of the copies they gave
//! wins.
//!
//! Nothing here does I/O, so every rule is tested on its own (including by
//! property tests) and the repairer itself only fetches, verifies and commits.

use std::cmp::Reverse;
use std::time::Duration;

use crate::corruption::LsnExpectation;
use crate::host::ReplicaStatus;
use crate::types::Lsn;

/// Why a replica is not asked for a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Skip {
    /// Its status says it cannot serve reads now.
    Unavailable,
    /// It has applied the log only up to `applied`, below `needed`, the LSN
    /// the local store last wrote to the page: any copy it has is stale.
    Behind {
        /// The replica's applied LSN.
        applied: Lsn,
        /// The LSN the copy must reach.
        needed: Lsn,
    },
}

/// The order in which to consult replicas, as indices into `statuses`, each
/// with the reason to skip it, if any.
///
/// Available replicas come first, then by least lag: a smaller `behind`
/// duration first (unknown counts as the largest), then a higher
/// `applied_lsn` (unknown counts as the lowest), then registration order.
/// A replica whose `applied_lsn` is known to be below `needed` is skipped as
/// stale; one that does not report an LSN is asked, and its copy is checked
/// for staleness by verification.
pub(crate) fn order_replicas(
    statuses: &[ReplicaStatus],
    needed: Option<Lsn>,
) -> Vec<(usize, Option<Skip>)> {
    let mut idx: Vec<usize> = (0..statuses.len()).collect();
    idx.sort_by_key(|&i| {
        let s = &statuses[i];
        (
            !s.available,
            s.lag.behind.unwrap_or(Duration::MAX),
            Reverse(s.lag.applied_lsn.map_or(0, |l| l.0)),
            i,
        )
    });
    idx.into_iter()
        .map(|i| (i, skip(&statuses[i], needed)))
        .collect()
}

/// Why a replica with `status` is not asked for a copy of a page that must
/// reach `needed`, if it is not: it cannot serve reads, or its applied LSN
/// is known to be below `needed`.
pub(crate) fn skip(status: &ReplicaStatus, needed: Option<Lsn>) -> Option<Skip> {
    if !status.available {
        return Some(Skip::Unavailable);
    }
    match (status.lag.applied_lsn, needed) {
        (Some(applied), Some(needed)) if applied < needed => Some(Skip::Behind { applied, needed }),
        _ => None,
    }
}

/// What a repair holds so far: the verified copies, the newest page LSN among
/// them, and how many copies carry it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Gathered {
    /// Verified copies.
    pub copies: usize,
    /// The newest known page LSN among them.
    pub newest: Option<Lsn>,
    /// Copies at `newest` (0 while it is unknown).
    pub at_newest: usize,
}

impl Gathered {
    /// Counts one more verified copy, with its page LSN if known.
    pub fn add(&mut self, lsn: Option<Lsn>) {
        self.copies += 1;
        match (lsn, self.newest) {
            (None, _) => {}
            (Some(l), Some(n)) if l < n => {}
            (Some(l), Some(n)) if l == n => self.at_newest += 1,
            (Some(l), _) => {
                self.newest = Some(l);
                self.at_newest = 1;
            }
        }
    }
}

/// Whether to ask the next replica for its copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fetch {
    /// Ask it.
    Ask,
    /// Its applied LSN is below the page LSN of a verified copy in hand: it
    /// cannot hold a copy that would be written.
    Behind {
        /// The replica's applied LSN.
        applied: Lsn,
        /// The newest page LSN among the verified copies.
        newest: Lsn,
    },
    /// Enough copies are in hand and it cannot hold a newer one.
    Enough,
}

/// Whether a copy that verified (so it is not older than the page must be)
/// and carries `lsn` may be the page: `Err(written)` when the page's last
/// write is known exactly (`expect` is [`LsnExpectation::Exact`]) and the
/// copy carries another LSN — a newer one is a write rolled back or
/// replaced since, and none is not that write either. With a floor (or no
/// expectation) any verified copy may be, and the ranking picks the newest.
pub(crate) fn admit(lsn: Option<Lsn>, expect: LsnExpectation) -> Result<(), Lsn> {
    match expect {
        LsnExpectation::Exact(written) if lsn != Some(written) => Err(written),
        _ => Ok(()),
    }
}

/// Whether to ask a replica (available, not known behind the page's expected
/// LSN) whose status reports `applied`, given the copies in hand and the
/// copies `wanted` (`max_replicas_per_repair`).
///
/// With page LSNs (`by_lsn`: the detector has a page-LSN reader), a repair
/// must not stop while a replica left could hold a newer copy than the
/// newest in hand: one that reports no applied LSN, or one above that copy's
/// LSN, is always asked. One that reports exactly that LSN can only add a
/// vote among the copies at it, and is asked until `wanted` copies carry it.
/// One that reports less cannot hold a copy that would be written. Before
/// any copy with a known LSN is in hand, every replica is asked.
///
/// When the page's last write is known `exact`ly, only copies at that LSN
/// are [admitted](admit), so no replica can hold a better one than those in
/// hand: each counts as reporting that LSN at most (one that says nothing,
/// too), and the repair asks replicas until `wanted` copies carry it.
///
/// Without page LSNs the newest copy cannot be told, and copies vote: the
/// repair asks replicas until `wanted` copies verified.
pub(crate) fn next_fetch(
    applied: Option<Lsn>,
    got: &Gathered,
    wanted: usize,
    by_lsn: bool,
    exact: Option<Lsn>,
) -> Fetch {
    if !by_lsn {
        return if got.copies >= wanted {
            Fetch::Enough
        } else {
            Fetch::Ask
        };
    }
    let applied = match exact {
        Some(e) => Some(applied.map_or(e, |a| a.min(e))),
        None => applied,
    };
    let (Some(newest), Some(applied)) = (got.newest, applied) else {
        return Fetch::Ask;
    };
    if applied > newest || (applied == newest && got.at_newest < wanted) {
        Fetch::Ask
    } else if applied == newest {
        Fetch::Enough
    } else {
        Fetch::Behind { applied, newest }
    }
}

/// Whether a group of copies may be written, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Standing {
    /// It may be written (in rank order).
    Eligible,
    /// Another group carries a newer page LSN: an older copy is never
    /// written, however many copies agree with it.
    Older {
        /// The newest page LSN among the copies.
        newest: Lsn,
    },
    /// A majority was required and the group does not hold more than half
    /// of the copies at the newest LSN.
    NoMajority {
        /// Copies at the newest LSN.
        of: usize,
    },
}

/// Byte-identical copies that verified, counted as one vote each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    /// Indices of the copies in the group, in the order they were fetched.
    pub members: Vec<usize>,
    /// The page LSN of the copy, when known.
    pub lsn: Option<Lsn>,
    /// Whether it may be written.
    pub standing: Standing,
}

impl Group {
    /// How many copies agree.
    pub fn votes(&self) -> usize {
        self.members.len()
    }

    /// Whether the group may be written.
    pub fn eligible(&self) -> bool {
        self.standing == Standing::Eligible
    }
}

/// Groups verified copies (given as `(bytes, page LSN)` in fetch order) into
/// byte-identical groups and ranks them: the newest page LSN first (an
/// unknown LSN ranks below any known one), then most votes, then the group
/// whose first copy was fetched first (the better replica by
/// [`order_replicas`]).
///
/// Only groups at the newest LSN are eligible: a newer verified copy beats
/// any number of older ones, and votes only break ties among copies at one
/// LSN. With `require_majority`, a group must also hold more than half of
/// the copies at the newest LSN. When no copy has a known LSN, every copy is
/// "at the newest LSN" and this is the plain vote (plurality, or majority).
pub(crate) fn rank_copies(copies: &[(&[u8], Option<Lsn>)], require_majority: bool) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, (bytes, lsn)) in copies.iter().enumerate() {
        match groups.iter_mut().find(|g| copies[g.members[0]].0 == *bytes) {
            Some(g) => g.members.push(i),
            None => groups.push(Group {
                members: vec![i],
                lsn: *lsn,
                standing: Standing::Eligible,
            }),
        }
    }
    groups.sort_by_key(|g| (Reverse(g.lsn), Reverse(g.votes()), g.members[0]));
    let Some(newest) = groups.first().map(|g| g.lsn) else {
        return groups;
    };
    let at_newest: usize = groups
        .iter()
        .filter(|g| g.lsn == newest)
        .map(Group::votes)
        .sum();
    for g in &mut groups {
        g.standing = match newest {
            Some(n) if g.lsn != newest => Standing::Older { newest: n },
            _ if require_majority && g.votes() * 2 <= at_newest => {
                Standing::NoMajority { of: at_newest }
            }
            _ => Standing::Eligible,
        };
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::ReplicaLag;
    use proptest::prelude::*;

    fn st(available: bool, behind_ms: Option<u64>, applied: Option<u64>) -> ReplicaStatus {
        ReplicaStatus {
            available,
            lag: ReplicaLag {
                applied_lsn: applied.map(Lsn),
                behind: behind_ms.map(Duration::from_millis),
            },
        }
    }

    #[test]
    fn available_then_least_lag() {
        let s = [
            st(false, Some(0), None),
            st(true, Some(50), None),
            st(true, Some(5), None),
            st(true, None, Some(10)),
            st(true, None, Some(90)),
        ];
        let order: Vec<usize> = order_replicas(&s, None).iter().map(|x| x.0).collect();
        assert_eq!(order, [2, 1, 4, 3, 0]);
    }

    #[test]
    fn behind_replica_is_skipped_only_when_known_behind() {
        let s = [
            st(true, None, Some(4)),
            st(true, None, None),
            st(true, None, Some(9)),
        ];
        let o = order_replicas(&s, Some(Lsn(5)));
        assert_eq!(o[0], (2, None));
        assert_eq!(
            o[1],
            (
                0,
                Some(Skip::Behind {
                    applied: Lsn(4),
                    needed: Lsn(5)
                })
            )
        );
        assert_eq!(o[2], (1, None));
        assert!(order_replicas(&s, None).iter().all(|x| x.1.is_none()));
    }

    #[test]
    fn votes_break_ties_among_equal_lsns_and_majority_counts_the_newest_only() {
        let a = [1u8; 8];
        let b = [2u8; 8];
        let c = [3u8; 8];
        // Without LSNs: the largest group wins, a plurality.
        let copies: Vec<(&[u8], Option<Lsn>)> =
            vec![(&b, None), (&a, None), (&a, None), (&c, None)];
        let g = rank_copies(&copies, false);
        assert_eq!(g[0].members, [1, 2]);
        assert!(
            g.iter().all(Group::eligible),
            "all at the same (unknown) LSN"
        );
        let g = rank_copies(&copies, true);
        assert_eq!(
            g[0].standing,
            Standing::NoMajority { of: 4 },
            "2 of 4 is no majority"
        );
        // At one LSN, more votes win; a tie goes to the copy fetched first.
        let tie: Vec<(&[u8], Option<Lsn>)> = vec![
            (&a, Some(Lsn(7))),
            (&b, Some(Lsn(7))),
            (&b, Some(Lsn(7))),
            (&c, Some(Lsn(3))),
        ];
        let g = rank_copies(&tie, true);
        assert_eq!(g[0].members, [1, 2]);
        assert!(g[0].eligible(), "2 of the 3 copies at LSN 7 is a majority");
        assert_eq!(g[1].standing, Standing::NoMajority { of: 3 });
        assert_eq!(g[2].standing, Standing::Older { newest: Lsn(7) });
        let even: Vec<(&[u8], Option<Lsn>)> = vec![(&a, Some(Lsn(3))), (&b, Some(Lsn(3)))];
        let g = rank_copies(&even, false);
        assert_eq!(g[0].members, [0], "equal votes: the better replica");
        assert!(g[1].eligible(), "a later eligible group at the same LSN");
    }

    #[test]
    fn newest_lsn_wins_over_any_number_of_older_copies() {
        let old = [1u8; 8];
        let new = [2u8; 8];
        let unknown = [3u8; 8];
        let copies: Vec<(&[u8], Option<Lsn>)> = vec![
            (&old, Some(Lsn(3))),
            (&unknown, None),
            (&old, Some(Lsn(3))),
            (&unknown, None),
            (&old, Some(Lsn(3))),
            (&new, Some(Lsn(4))),
        ];
        for require_majority in [false, true] {
            let g = rank_copies(&copies, require_majority);
            assert_eq!(g[0].members, [5], "the one newest copy leads");
            assert!(g[0].eligible(), "and may be written");
            assert_eq!(g[1].members, [0, 2, 4]);
            assert_eq!(
                g[2].members,
                [1, 3],
                "unknown LSN ranks below any known one"
            );
            assert!(
                !g[1].eligible() && !g[2].eligible(),
                "older copies are never written"
            );
            assert_eq!(g[1].standing, Standing::Older { newest: Lsn(4) });
        }
    }

    #[test]
    fn with_page_lsns_only_replicas_that_cannot_hold_a_newer_copy_are_passed_over() {
        let mut got = Gathered::default();
        // Nothing with a known LSN in hand: everyone is asked.
        assert_eq!(next_fetch(Some(Lsn(1)), &got, 1, true, None), Fetch::Ask);
        got.add(None);
        got.add(None);
        assert_eq!(next_fetch(Some(Lsn(1)), &got, 1, true, None), Fetch::Ask);
        got.add(Some(Lsn(5)));
        assert_eq!(
            (got.newest, got.at_newest, got.copies),
            (Some(Lsn(5)), 1, 3)
        );
        assert_eq!(
            next_fetch(None, &got, 1, true, None),
            Fetch::Ask,
            "may be newer"
        );
        assert_eq!(next_fetch(Some(Lsn(6)), &got, 1, true, None), Fetch::Ask);
        assert_eq!(next_fetch(Some(Lsn(5)), &got, 1, true, None), Fetch::Enough);
        assert_eq!(
            next_fetch(Some(Lsn(5)), &got, 2, true, None),
            Fetch::Ask,
            "a vote more"
        );
        assert_eq!(
            next_fetch(Some(Lsn(4)), &got, 2, true, None),
            Fetch::Behind {
                applied: Lsn(4),
                newest: Lsn(5)
            }
        );
        got.add(Some(Lsn(3)));
        got.add(Some(Lsn(5)));
        assert_eq!(
            (got.newest, got.at_newest, got.copies),
            (Some(Lsn(5)), 2, 5)
        );
        got.add(Some(Lsn(9)));
        assert_eq!((got.newest, got.at_newest), (Some(Lsn(9)), 1));
    }

    #[test]
    fn without_page_lsns_copies_are_counted_up_to_the_limit() {
        let mut got = Gathered::default();
        for _ in 0..3 {
            assert_eq!(next_fetch(None, &got, 3, false, None), Fetch::Ask);
            got.add(None);
        }
        assert_eq!(next_fetch(None, &got, 3, false, None), Fetch::Enough);
        assert_eq!(
            next_fetch(Some(Lsn(99)), &got, 3, false, None),
            Fetch::Enough
        );
    }

    proptest! {
        /// The winner (the first group) carries the newest LSN of all copies;
        /// no eligible group has an older LSN than the winner; among groups at
        /// one LSN votes never increase down the ranking; eligibility is
        /// exactly "at the newest LSN, and a majority of those if required".
        #[test]
        fn ranking_puts_the_newest_lsn_first_and_never_makes_an_older_copy_eligible(
            vals in proptest::collection::vec(0u8..8, 0..12),
            require_majority in any::<bool>(),
        ) {
            // The LSN is derived from the bytes so identical copies agree on
            // it; several byte values share an LSN (ties), some have none.
            let bytes: Vec<[u8; 4]> = vals.iter().map(|v| [*v; 4]).collect();
            let lsn_of = |v: u8| (!v.is_multiple_of(3)).then_some(Lsn(u64::from(v / 3)));
            let copies: Vec<(&[u8], Option<Lsn>)> =
                bytes.iter().map(|b| (&b[..], lsn_of(b[0]))).collect();
            let groups = rank_copies(&copies, require_majority);
            let mut seen: Vec<usize> = groups.iter().flat_map(|g| g.members.clone()).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..copies.len()).collect::<Vec<_>>());
            for g in &groups {
                for &m in &g.members {
                    prop_assert_eq!(copies[m].0, copies[g.members[0]].0);
                    prop_assert_eq!(copies[m].1, g.lsn);
                }
            }
            let Some(winner) = groups.first() else { return Ok(()) };
            let newest = copies.iter().map(|c| c.1).max().flatten();
            prop_assert_eq!(winner.lsn, newest, "the winner carries the newest LSN");
            let at_newest = copies.iter().filter(|c| c.1 == winner.lsn).count();
            for g in &groups {
                if g.eligible() {
                    prop_assert!(g.lsn >= winner.lsn, "an eligible group is older than the winner");
                }
                let want = g.lsn == winner.lsn && (!require_majority || g.votes() * 2 > at_newest);
                prop_assert_eq!(g.eligible(), want);
            }
            if !require_majority {
                prop_assert!(winner.eligible(), "without a majority rule the winner is written");
            }
            for (i, g) in groups.iter().enumerate() {
                for h in &groups[i + 1..] {
                    prop_assert!(copies[g.members[0]].0 != copies[h.members[0]].0);
                    prop_assert!(g.lsn >= h.lsn);
                    if g.lsn == h.lsn {
                        prop_assert!(g.votes() >= h.votes());
                    }
                }
            }
        }

        /// A model of a repair's fetch loop over replicas in the order
        /// `order_replicas` gives, asking each as `next_fetch` says, with the
        /// detector expecting nothing, a floor, or an exact LSN: copies older
        /// than the floor fail verification and only copies at an exact LSN
        /// are admitted. The winner always carries the newest admissible page
        /// LSN any available replica holds (whatever the statuses say, as
        /// long as a replica that reports an applied LSN holds no page newer
        /// than it) — with an exact expectation, that LSN or nothing — no
        /// replica is asked twice, and without page LSNs at most `wanted`
        /// copies are fetched.
        #[test]
        fn the_fetch_loop_never_passes_over_the_newest_admissible_copy(
            replicas in proptest::collection::vec(
                (any::<bool>(), 1u64..20, 0u64..20, any::<bool>(), 0u64..3),
                0..12,
            ),
            wanted in 1usize..5,
            by_lsn in any::<bool>(),
            kind in 0u8..3,
            expected in 1u64..20,
        ) {
            // (available, page LSN, lead of the applied LSN, reports it, lag ms)
            let statuses: Vec<ReplicaStatus> = replicas
                .iter()
                .map(|&(available, lsn, lead, reports, behind)| {
                    st(available, Some(behind), reports.then_some(lsn + lead))
                })
                .collect();
            let expect = match (by_lsn, kind) {
                (true, 1) => LsnExpectation::AtLeast(Lsn(expected)),
                (true, 2) => LsnExpectation::Exact(Lsn(expected)),
                _ => LsnExpectation::Nothing,
            };
            let floor = expect.floor().map_or(0, |l| l.0);
            let copy_lsn = |i: usize| by_lsn.then_some(Lsn(replicas[i].1));
            let mut got = Gathered::default();
            let mut fetched = Vec::new();
            for (i, skip) in order_replicas(&statuses, expect.floor()) {
                if let Some(Skip::Behind { applied, needed }) = skip {
                    prop_assert!(applied < needed && replicas[i].1 < floor);
                }
                if skip.is_some() {
                    continue;
                }
                match next_fetch(statuses[i].lag.applied_lsn, &got, wanted, by_lsn, expect.exact()) {
                    Fetch::Ask => {
                        prop_assert!(!fetched.contains(&i));
                        if expect.exact().is_some() {
                            prop_assert!(
                                got.at_newest < wanted,
                                "with the last write known, enough copies at it end the fetch"
                            );
                        }
                        fetched.push(i);
                        let lsn = copy_lsn(i);
                        // Verification refuses copies below the floor.
                        if lsn.is_some_and(|l| l.0 < floor) {
                            continue;
                        }
                        if admit(lsn, expect).is_ok() {
                            got.add(lsn);
                        }
                    }
                    Fetch::Behind { applied, newest } => {
                        prop_assert!(applied < newest);
                        prop_assert!(replicas[i].1 < newest.0, "it held nothing as new");
                    }
                    Fetch::Enough => {}
                }
            }
            let admissible: Vec<usize> = (0..replicas.len())
                .filter(|&i| replicas[i].0 && replicas[i].1 >= floor)
                .filter(|&i| expect.exact().is_none_or(|e| replicas[i].1 == e.0))
                .collect();
            if by_lsn {
                let newest = admissible.iter().map(|&i| replicas[i].1).max();
                prop_assert_eq!(got.newest.map(|l| l.0), newest);
                if let Some(e) = expect.exact() {
                    prop_assert!(got.newest.is_none_or(|n| n == e), "only the last write");
                }
                let at_newest = admissible
                    .iter()
                    .filter(|&&i| Some(replicas[i].1) == newest)
                    .count();
                prop_assert!(got.at_newest <= at_newest);
                prop_assert!(got.at_newest >= at_newest.min(wanted), "the votes wanted, or all there are");
            } else {
                prop_assert_eq!(fetched.len(), admissible.len().min(wanted));
            }
        }

        /// Copies through verification (below the floor: refused),
        /// admission and the ranking, with the detector expecting nothing,
        /// a floor, or an exact LSN: with an exact LSN nothing else is ever
        /// eligible and a copy at it wins whenever one exists; with a floor
        /// the newest copy wins, newer than the floor included.
        #[test]
        fn with_an_exact_lsn_only_the_last_write_is_eligible_and_with_a_floor_the_newest_wins(
            vals in proptest::collection::vec(0u8..12, 0..12),
            kind in 0u8..3,
            expected in 1u64..4,
            require_majority in any::<bool>(),
        ) {
            let bytes: Vec<[u8; 4]> = vals.iter().map(|v| [*v; 4]).collect();
            // LSNs 1..=3 and none, several byte values per LSN.
            let lsn_of = |v: u8| (!v.is_multiple_of(4)).then_some(Lsn(u64::from(v % 4)));
            let expect = match kind {
                1 => LsnExpectation::AtLeast(Lsn(expected)),
                2 => LsnExpectation::Exact(Lsn(expected)),
                _ => LsnExpectation::Nothing,
            };
            let verified: Vec<(&[u8], Option<Lsn>)> = bytes
                .iter()
                .map(|b| (&b[..], lsn_of(b[0])))
                .filter(|(_, l)| !matches!((l, expect.floor()), (Some(l), Some(f)) if *l < f))
                .collect();
            let admitted: Vec<(&[u8], Option<Lsn>)> = verified
                .iter()
                .copied()
                .filter(|(_, l)| match admit(*l, expect) {
                    Ok(()) => true,
                    Err(w) => {
                        assert_eq!(Some(w), expect.exact());
                        false
                    }
                })
                .collect();
            let groups = rank_copies(&admitted, require_majority);
            match expect {
                LsnExpectation::Exact(e) => {
                    prop_assert!(groups.iter().all(|g| g.lsn == Some(e)), "only the last write");
                    let any_at_e = vals.iter().any(|&v| lsn_of(v) == Some(e));
                    prop_assert_eq!(!groups.is_empty(), any_at_e);
                }
                LsnExpectation::AtLeast(f) => {
                    prop_assert!(admitted.len() == verified.len(), "a floor admits every verified copy");
                    prop_assert!(groups.iter().all(|g| g.lsn.is_none_or(|l| l >= f)));
                    let newest = verified.iter().map(|c| c.1).max().flatten();
                    prop_assert_eq!(groups.first().and_then(|g| g.lsn), newest);
                }
                LsnExpectation::Nothing => {
                    prop_assert_eq!(admitted.len(), vals.len());
                    let newest = admitted.iter().map(|c| c.1).max().flatten();
                    prop_assert_eq!(groups.first().and_then(|g| g.lsn), newest);
                }
            }
            if let Some(w) = groups.first() {
                if !require_majority {
                    prop_assert!(w.eligible());
                }
                prop_assert!(groups.iter().filter(|g| g.eligible()).all(|g| g.lsn == w.lsn));
            }
        }

        #[test]
        fn order_is_a_permutation_with_available_first(
            s in proptest::collection::vec(
                (any::<bool>(), proptest::option::of(0u64..100), proptest::option::of(0u64..100)),
                0..10,
            ),
            needed in proptest::option::of(0u64..100),
        ) {
            let statuses: Vec<ReplicaStatus> = s.iter().map(|&(a, b, l)| st(a, b, l)).collect();
            let o = order_replicas(&statuses, needed.map(Lsn));
            let mut idx: Vec<usize> = o.iter().map(|x| x.0).collect();
            idx.sort_unstable();
            prop_assert_eq!(idx, (0..statuses.len()).collect::<Vec<_>>());
            let first_down = o.iter().position(|x| !statuses[x.0].available).unwrap_or(o.len());
            prop_assert!(o[first_down..].iter().all(|x| !statuses[x.0].available));
            for &(i, skip) in &o {
                let st = &statuses[i];
                let behind = matches!((st.lag.applied_lsn, needed), (Some(a), Some(n)) if a.0 < n);
                match skip {
                    Some(Skip::Unavailable) => prop_assert!(!st.available),
                    Some(Skip::Behind { .. }) => prop_assert!(st.available && behind),
                    None => prop_assert!(st.available && !behind),
                }
            }
        }
    }
}
