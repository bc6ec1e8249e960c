//! A counter that many threads add to without sharing a cache line.
//!
//! A plain `AtomicU64` bumped on every verified read makes each reader on
//! another core pull the counter's cache line to its own on every read.
//! [`Counter`] keeps one cache-padded cell per shard; a thread adds to the
//! shard it was given at its first add (round robin), and reading sums the
//! shards. (On the 2-core machine the benches ran on, the gain over one
//! atomic was within the noise of `benches/verified_read.rs`.)
//!
//! # Contract
//! - [`Counter::get`] returns every add that happened before it (each add
//!   is one atomic add to one cell); adds racing with it may or may not be
//!   in it, as with one atomic.
//! - The sum wraps as one `u64` counter would (it never reaches that).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// Shards per counter: at least the cores of the machines the crate runs
/// on is enough; more only costs the reader of the sum.
const SHARDS: usize = 16;

/// Hands out shard numbers, one per thread, round robin.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// A `u64` counter sharded by thread (see the module docs).
#[derive(Default)]
pub(crate) struct Counter {
    shards: [CachePadded<AtomicU64>; SHARDS],
}

impl Counter {
    /// Adds `n`.
    pub(crate) fn add(&self, n: u64) {
        let shard = SHARD.with(|s| *s);
        debug_assert!(shard < SHARDS);
        self.shards[shard].fetch_add(n, Ordering::Relaxed);
    }

    /// The sum of every add so far.
    pub(crate) fn get(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.load(Ordering::Relaxed)))
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Counter").field(&self.get()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever threads add, and however many, the sum is every add.
        #[test]
        fn the_sum_is_every_add_from_every_thread(adds in proptest::collection::vec(proptest::collection::vec(0u64..1_000, 0..50), 1..24)) {
            let c = Counter::default();
            std::thread::scope(|s| {
                for mine in &adds {
                    let c = &c;
                    s.spawn(move || mine.iter().for_each(|&n| c.add(n)));
                }
            });
            let want: u64 = adds.iter().flatten().sum();
            prop_assert_eq!(c.get(), want);
        }
    }
}
