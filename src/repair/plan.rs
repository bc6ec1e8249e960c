//! The repairer's decisions as pure functions: in which order to ask the
//! replicas, and which of the copies they gave wins.
//!
//! Nothing here does I/O, so every rule is tested on its own (including by
//! property tests) and the repairer itself only fetches, verifies and commits.

use std::cmp::Reverse;
use std::time::Duration;

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
        .map(|i| {
            let s = &statuses[i];
            let skip = if !s.available {
                Some(Skip::Unavailable)
            } else {
                match (s.lag.applied_lsn, needed) {
                    (Some(applied), Some(needed)) if applied < needed => {
                        Some(Skip::Behind { applied, needed })
                    }
                    _ => None,
                }
            };
            (i, skip)
        })
        .collect()
}

/// Byte-identical copies that verified, counted as one vote each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    /// Indices of the copies in the group, in the order they were fetched.
    pub members: Vec<usize>,
    /// The page LSN of the copy, when known.
    pub lsn: Option<Lsn>,
    /// Whether the group may be written (always, unless a majority is
    /// required and the group does not have one).
    pub eligible: bool,
}

impl Group {
    /// How many copies agree.
    pub fn votes(&self) -> usize {
        self.members.len()
    }
}

/// Groups verified copies (given as `(bytes, page LSN)` in fetch order) into
/// byte-identical groups and ranks them: most votes first, then the newer
/// page LSN (unknown counts as oldest), then the group whose first copy was
/// fetched first (the better replica by [`order_replicas`]).
///
/// With `require_majority`, only a group holding more than half of the
/// copies is eligible.
pub(crate) fn rank_copies(copies: &[(&[u8], Option<Lsn>)], require_majority: bool) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, (bytes, lsn)) in copies.iter().enumerate() {
        match groups.iter_mut().find(|g| copies[g.members[0]].0 == *bytes) {
            Some(g) => g.members.push(i),
            None => groups.push(Group {
                members: vec![i],
                lsn: *lsn,
                eligible: true,
            }),
        }
    }
    let total = copies.len();
    for g in &mut groups {
        g.eligible = !require_majority || g.votes() * 2 > total;
    }
    groups.sort_by_key(|g| {
        (
            Reverse(g.votes()),
            Reverse(g.lsn.map_or(0, |l| l.0.saturating_add(1))),
            g.members[0],
        )
    });
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
    fn majority_beats_first_fetched_and_ties_go_to_newer() {
        let a = [1u8; 8];
        let b = [2u8; 8];
        let copies: Vec<(&[u8], Option<Lsn>)> = vec![(&b, Some(Lsn(9))), (&a, None), (&a, None)];
        let g = rank_copies(&copies, false);
        assert_eq!(g[0].members, [1, 2]);
        assert_eq!(g[1].members, [0]);
        let tie: Vec<(&[u8], Option<Lsn>)> = vec![(&a, Some(Lsn(3))), (&b, Some(Lsn(7)))];
        let g = rank_copies(&tie, true);
        assert_eq!(g[0].members, [1], "newer copy wins a tie");
        assert!(g.iter().all(|g| !g.eligible), "no majority in a 1–1 tie");
    }

    proptest! {
        #[test]
        fn ranking_is_a_partition_led_by_the_largest_group(
            vals in proptest::collection::vec((0u8..4, proptest::option::of(0u64..5)), 0..12),
            require_majority in any::<bool>(),
        ) {
            // The LSN is derived from the bytes so identical copies agree on it.
            let bytes: Vec<[u8; 4]> = vals.iter().map(|(v, _)| [*v; 4]).collect();
            let copies: Vec<(&[u8], Option<Lsn>)> = bytes
                .iter()
                .map(|b| (&b[..], (b[0] % 2 == 0).then_some(Lsn(u64::from(b[0])))))
                .collect();
            let groups = rank_copies(&copies, require_majority);
            let mut seen: Vec<usize> = groups.iter().flat_map(|g| g.members.clone()).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..copies.len()).collect::<Vec<_>>());
            for g in &groups {
                for &m in &g.members {
                    prop_assert_eq!(copies[m].0, copies[g.members[0]].0);
                }
                prop_assert_eq!(g.eligible, !require_majority || g.votes() * 2 > copies.len());
            }
            for (i, g) in groups.iter().enumerate() {
                for h in &groups[i + 1..] {
                    prop_assert!(copies[g.members[0]].0 != copies[h.members[0]].0);
                    prop_assert!(g.votes() >= h.votes());
                }
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
