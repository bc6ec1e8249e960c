//! A bounded ring of samples: the newest `capacity` entries, oldest first.

use std::collections::VecDeque;

use crate::error::{Error, Result};

/// A first-in-first-out buffer that never holds more than its capacity:
/// pushing into a full ring evicts the oldest entry.
#[derive(Clone, Debug)]
pub struct HistoryRing<T> {
    buf: VecDeque<T>,
    capacity: usize,
}

impl<T> HistoryRing<T> {
    /// An empty ring holding at most `capacity` entries.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (`history_capacity`) when `capacity` is 0.
    pub fn new(capacity: usize) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::config(
                "history_capacity",
                "is 0; the history must hold at least 1 sample",
            ));
        }
        Ok(HistoryRing {
            buf: VecDeque::with_capacity(capacity),
            capacity,
        })
    }

    /// Appends `item`, returning the entry it evicted when the ring was full.
    pub fn push(&mut self, item: T) -> Option<T> {
        let evicted = if self.buf.len() == self.capacity {
            self.buf.pop_front()
        } else {
            None
        };
        self.buf.push_back(item);
        debug_assert!(self.buf.len() <= self.capacity);
        evicted
    }

    /// How many entries it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether it holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The most entries it holds.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The newest entry.
    #[must_use]
    pub fn last(&self) -> Option<&T> {
        self.buf.back()
    }

    /// The entries, oldest first (`.rev()` for newest first).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator + '_ {
        self.buf.iter()
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_capacity_is_refused() {
        assert!(matches!(
            HistoryRing::<u8>::new(0),
            Err(Error::InvalidConfig {
                field: "history_capacity",
                ..
            })
        ));
    }

    #[test]
    fn evicts_oldest() {
        let mut r = HistoryRing::new(2).unwrap();
        assert_eq!(r.push(1), None);
        assert_eq!(r.push(2), None);
        assert_eq!(r.push(3), Some(1));
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(r.last(), Some(&3));
    }

    proptest! {
        #[test]
        fn never_exceeds_capacity_and_keeps_newest(cap in 1usize..64, items in proptest::collection::vec(any::<u32>(), 0..300)) {
            let mut r = HistoryRing::new(cap).unwrap();
            for (i, &x) in items.iter().enumerate() {
                r.push(x);
                prop_assert!(r.len() <= cap);
                prop_assert_eq!(r.len(), (i + 1).min(cap));
            }
            let keep = items.len().min(cap);
            let expected: Vec<u32> = items[items.len() - keep..].to_vec();
            prop_assert_eq!(r.iter().copied().collect::<Vec<_>>(), expected);
        }
    }
}
