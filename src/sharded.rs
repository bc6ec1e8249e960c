//! State that every verified read touches, kept so that readers on
//! different cores do not share a cache line: a counter and a read-write
//! lock, both sharded by thread.
//!
//! A plain `AtomicU64` bumped on every verified read, or a read-write lock
//! taken shared for every checksum look-up, makes each reader on another
//! core pull one cache line to its own: at hundreds of thousands of reads a
//! second per core that alone keeps readers from scaling. [`Counter`] keeps
//! one cache-padded cell per shard; a thread adds to the shard it was given
//! at its first add (round robin), and reading sums the shards.
//! [`ShardedRw`] is `crossbeam_utils`'s `ShardedLock` (a reader locks only
//! its thread's shard, a writer every shard), with poisoning ignored as
//! `parking_lot`'s locks do: the data under it is plain state a panic
//! cannot leave half-changed in a way a lock could detect.
//!
//! # Contract
//! - [`Counter::get`] returns every add that happened before it (each add
//!   is one atomic add to one cell); adds racing with it may or may not be
//!   in it, as with one atomic.
//! - The sum wraps as one `u64` counter would (it never reaches that).
//! - [`ShardedRw::read`] blocks while a writer holds the lock or is taking
//!   it; a writer waits for every reader.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::PoisonError;

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
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

/// A read-write lock sharded by thread (see the module docs).
#[derive(Default)]
pub(crate) struct ShardedRw<T>(ShardedLock<T>);

impl<T> ShardedRw<T> {
    /// A lock around `value`.
    pub(crate) fn new(value: T) -> Self {
        ShardedRw(ShardedLock::new(value))
    }

    /// Shared access: locks this thread's shard only.
    pub(crate) fn read(&self) -> ShardedLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Exclusive access: locks every shard.
    pub(crate) fn write(&self) -> ShardedLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for ShardedRw<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ShardedRw").field(&*self.read()).finish()
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

    /// Readers on many threads never see a half-grown vector: each look
    /// finds a prefix of what the writer pushed, and the last one all of it.
    #[test]
    fn readers_see_whole_writes_only() {
        let lock = ShardedRw::new(Vec::<u64>::new());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mut seen = 0;
                    while seen < 1_000 {
                        let v = lock.read();
                        assert!(v.len() >= seen, "a read went back");
                        assert!(v.iter().enumerate().all(|(i, x)| *x == i as u64));
                        seen = v.len();
                    }
                });
            }
            for i in 0..1_000u64 {
                lock.write().push(i);
            }
        });
        assert_eq!(lock.read().len(), 1_000);
    }
}
