//! What the detector knows of unallocated pages: the host's answer
//! ([`FreePageFn`]) and the pages marked free through the detector
//! ([`PageBits`]). The rules that use them are in [`free`](super::free).

use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::types::PageId;

/// The host's answer to "is `page` unallocated now?" (see the
/// [module docs](super::free)).
pub type FreePageFn = Arc<dyn Fn(PageId) -> bool + Send + Sync>;

/// One bit per page, growing on demand and bounded by the store's page count.
#[derive(Debug, Default)]
pub(crate) struct PageBits {
    words: RwLock<Vec<u64>>,
}

impl PageBits {
    pub(crate) fn get(&self, page: PageId) -> bool {
        let words = self.words.read();
        usize::try_from(page.0 / 64)
            .ok()
            .and_then(|i| words.get(i))
            .is_some_and(|w| w & (1 << (page.0 % 64)) != 0)
    }

    /// Sets the bit of `page`; the caller has checked that the page exists.
    pub(crate) fn set(&self, page: PageId) -> Result<()> {
        let idx = usize::try_from(page.0 / 64).map_err(|_| Error::InvalidArgument {
            what: "page",
            reason: format!("page {page} does not fit in memory"),
        })?;
        let mut words = self.words.write();
        if words.len() <= idx {
            let more = idx + 1 - words.len();
            words
                .try_reserve(more)
                .map_err(|e| Error::InvalidArgument {
                    what: "page",
                    reason: format!("cannot grow the unallocated-page set to page {page}: {e}"),
                })?;
            words.resize(idx + 1, 0);
        }
        words[idx] |= 1 << (page.0 % 64);
        Ok(())
    }

    pub(crate) fn clear(&self, page: PageId) {
        // Most writes are to pages that were never forgotten: look first.
        if !self.get(page) {
            return;
        }
        let mut words = self.words.write();
        if let Some(w) = usize::try_from(page.0 / 64)
            .ok()
            .and_then(|i| words.get_mut(i))
        {
            *w &= !(1 << (page.0 % 64));
        }
    }

    /// Clears every bit at and past `page_count`.
    pub(crate) fn truncate(&self, page_count: u64) {
        let mut words = self.words.write();
        let keep = usize::try_from(page_count.div_ceil(64)).unwrap_or(usize::MAX);
        if keep < words.len() {
            words.truncate(keep);
            words.shrink_to_fit();
        }
        if !page_count.is_multiple_of(64) {
            if let Some(last) = words.get_mut(keep.saturating_sub(1)) {
                *last &= (1u64 << (page_count % 64)) - 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `PageBits` agrees with a set: set, clear and truncate.
        #[test]
        fn page_bits_match_a_set(ops in proptest::collection::vec((0u8..3, 0u64..300), 0..200)) {
            let bits = PageBits::default();
            let mut model = std::collections::BTreeSet::new();
            for (op, page) in ops {
                match op {
                    0 => { bits.set(PageId(page)).unwrap(); model.insert(page); }
                    1 => { bits.clear(PageId(page)); model.remove(&page); }
                    _ => { bits.truncate(page); model.retain(|p| *p < page); }
                }
                for p in 0..300 {
                    prop_assert_eq!(bits.get(PageId(p)), model.contains(&p), "page {}", p);
                }
            }
        }
    }
}
