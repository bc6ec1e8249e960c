//! The wait-for graph: the host reports that one transaction waits for
//! another (and when the wait ends); a cycle is found the moment the edge
//! that closes it is added, and a victim is chosen by policy.
//!
//! This is a plain data structure with no I/O and no threads: the manager
//! feeds it under its lock, and tests drive it directly.

use std::collections::{HashMap, HashSet};

use crate::types::TxnId;

/// How the victim of a deadlock is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum VictimPolicy {
    /// The transaction that began last (the highest id). The default: it has
    /// usually done the least work, and older transactions are never starved.
    #[default]
    Youngest,
    /// The transaction with the fewest undo bytes (the cheapest to roll
    /// back); ties go to the youngest.
    LeastUndoWork,
}

/// A deadlock found when a wait was reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadlock {
    /// The transactions in the cycle, starting with the one whose wait closed
    /// it; each waits for the next, and the last waits for the first.
    pub cycle: Vec<TxnId>,
    /// The transaction chosen to be rolled back.
    pub victim: TxnId,
}

/// Who waits for whom.
#[derive(Debug, Default)]
pub struct WaitForGraph {
    /// waiter → the transactions it waits for.
    waits: HashMap<TxnId, HashSet<TxnId>>,
    edges: usize,
}

impl WaitForGraph {
    /// An empty graph.
    #[cfg(test)]
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many wait edges there are.
    #[cfg(test)]
    #[must_use]
    pub fn edges(&self) -> usize {
        self.edges
    }

    /// Adds "`waiter` waits for `holder`" and returns the cycle it closes, if
    /// any, as `[waiter, holder, ..., (the one that waits for waiter)]`.
    /// Adding an edge that exists already returns `None` (its cycle, if any,
    /// was reported when it formed).
    pub fn add_wait(&mut self, waiter: TxnId, holder: TxnId) -> Option<Vec<TxnId>> {
        if !self.waits.entry(waiter).or_default().insert(holder) {
            return None;
        }
        self.edges += 1;
        // A new cycle must pass through the new edge: look for a path back
        // from `holder` to `waiter`.
        let mut path = self.path(holder, waiter)?;
        path.insert(0, waiter);
        path.pop();
        Some(path)
    }

    /// Depth-first search for a path `from → ... → to`; returns it including
    /// both ends.
    fn path(&self, from: TxnId, to: TxnId) -> Option<Vec<TxnId>> {
        let mut seen = HashSet::new();
        let mut stack: Vec<(TxnId, Vec<TxnId>)> = Vec::new();
        let mut path = vec![from];
        if from == to {
            return Some(path);
        }
        seen.insert(from);
        let next_of = |t: TxnId| -> Vec<TxnId> {
            let mut v: Vec<TxnId> = self
                .waits
                .get(&t)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            v.sort_unstable();
            v
        };
        stack.push((from, next_of(from)));
        while let Some((_, pending)) = stack.last_mut() {
            let Some(n) = pending.pop() else {
                stack.pop();
                path.pop();
                continue;
            };
            if n == to {
                path.push(n);
                return Some(path);
            }
            if seen.insert(n) {
                path.push(n);
                let succ = next_of(n);
                stack.push((n, succ));
            }
        }
        None
    }

    /// Removes "`waiter` waits for `holder`" (the wait ended). Returns
    /// whether it was there.
    pub fn remove_wait(&mut self, waiter: TxnId, holder: TxnId) -> bool {
        let Some(set) = self.waits.get_mut(&waiter) else {
            return false;
        };
        let removed = set.remove(&holder);
        if set.is_empty() {
            self.waits.remove(&waiter);
        }
        if removed {
            self.edges -= 1;
        }
        removed
    }

    /// Removes every wait of and for `txn` (it committed or rolled back).
    pub fn remove_txn(&mut self, txn: TxnId) {
        if let Some(set) = self.waits.remove(&txn) {
            self.edges -= set.len();
        }
        let mut emptied = Vec::new();
        for (w, set) in &mut self.waits {
            if set.remove(&txn) {
                self.edges -= 1;
                if set.is_empty() {
                    emptied.push(*w);
                }
            }
        }
        for w in emptied {
            self.waits.remove(&w);
        }
    }
}

/// Chooses the victim of `cycle` by `policy`; `undo_bytes` tells the undo
/// work of a transaction. Transaction ids grow with begin order, so the
/// youngest is the highest id.
///
/// # Panics
/// Never for a non-empty cycle; an empty one has no victim and returns `None`.
#[must_use]
pub fn choose_victim(
    cycle: &[TxnId],
    policy: VictimPolicy,
    undo_bytes: impl Fn(TxnId) -> u64,
) -> Option<TxnId> {
    match policy {
        VictimPolicy::Youngest => cycle.iter().copied().max(),
        VictimPolicy::LeastUndoWork => cycle
            .iter()
            .copied()
            .min_by_key(|t| (undo_bytes(*t), std::cmp::Reverse(*t))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(n: u64) -> TxnId {
        TxnId(n)
    }

    #[test]
    fn cycles_of_every_length_are_found_when_they_form() {
        for n in 2..=12u64 {
            let mut g = WaitForGraph::new();
            for i in 1..n {
                assert_eq!(g.add_wait(t(i), t(i + 1)), None, "n={n} i={i}");
            }
            let cycle = g.add_wait(t(n), t(1)).expect("cycle");
            assert_eq!(cycle.len() as u64, n);
            assert_eq!(cycle[0], t(n));
            assert_eq!(cycle[1], t(1));
            let mut sorted = cycle.clone();
            sorted.sort();
            assert_eq!(sorted, (1..=n).map(t).collect::<Vec<_>>());
        }
    }

    #[test]
    fn no_false_cycle_in_a_dag_and_after_a_wait_ends() {
        let mut g = WaitForGraph::new();
        assert_eq!(g.add_wait(t(1), t(2)), None);
        assert_eq!(g.add_wait(t(1), t(3)), None);
        assert_eq!(g.add_wait(t(2), t(3)), None);
        assert_eq!(g.add_wait(t(4), t(1)), None);
        assert!(g.remove_wait(t(1), t(2)));
        assert_eq!(g.add_wait(t(3), t(4)), Some(vec![t(3), t(4), t(1)]));
        g.remove_txn(t(4));
        assert_eq!(g.edges(), 2);
        assert_eq!(g.add_wait(t(2), t(1)), None);
    }

    #[test]
    fn victim_policies() {
        let cycle = [t(3), t(9), t(5)];
        assert_eq!(
            choose_victim(&cycle, VictimPolicy::Youngest, |_| 0),
            Some(t(9))
        );
        let work = |x: TxnId| match x.0 {
            3 => 10,
            9 => 500,
            _ => 10,
        };
        assert_eq!(
            choose_victim(&cycle, VictimPolicy::LeastUndoWork, work),
            Some(t(5))
        );
        assert_eq!(choose_victim(&[], VictimPolicy::Youngest, |_| 0), None);
    }

    fn has_cycle_bruteforce(edges: &HashSet<(u64, u64)>, n: u64) -> bool {
        // Floyd–Warshall reachability: a cycle exists when some node reaches itself.
        let n = n as usize;
        let mut r = vec![vec![false; n]; n];
        for &(a, b) in edges {
            r[a as usize][b as usize] = true;
        }
        for k in 0..n {
            for i in 0..n {
                for j in 0..n {
                    if r[i][k] && r[k][j] {
                        r[i][j] = true;
                    }
                }
            }
        }
        (0..n).any(|i| r[i][i])
    }

    proptest! {
        /// Against a brute-force model: an edge is reported as closing a
        /// cycle exactly when the graph goes from acyclic to cyclic, and the
        /// reported cycle is a real cycle of the graph.
        #[test]
        fn matches_bruteforce(ops in proptest::collection::vec((0u64..7, 0u64..7, any::<bool>()), 1..60)) {
            let mut g = WaitForGraph::new();
            let mut model: HashSet<(u64, u64)> = HashSet::new();
            for (a, b, add) in ops {
                if a == b { continue; }
                if add {
                    let before = has_cycle_bruteforce(&model, 7);
                    let fresh = model.insert((a, b));
                    let found = g.add_wait(t(a), t(b));
                    if let Some(c) = &found {
                        prop_assert!(fresh);
                        for i in 0..c.len() {
                            let (x, y) = (c[i].0, c[(i + 1) % c.len()].0);
                            prop_assert!(model.contains(&(x, y)), "edge {x}->{y} of {c:?}");
                        }
                    }
                    if fresh && !before {
                        prop_assert_eq!(found.is_some(), has_cycle_bruteforce(&model, 7));
                    }
                    if !before && found.is_some() {
                        // The cycle is broken at once, like a victim rollback would.
                        model.remove(&(a, b));
                        g.remove_wait(t(a), t(b));
                    }
                } else {
                    prop_assert_eq!(g.remove_wait(t(a), t(b)), model.remove(&(a, b)));
                }
                prop_assert_eq!(g.edges(), model.len());
            }
        }
    }
}
