//! The pages a host noted dirty since the head, as a bitmap, plus the
//! lowest page count the store was resized to since then.
//!
//! The set is *trusted* only while it is known to hold every page changed
//! since the head (see the module docs of `snapshot`): from a `Paused`
//! snapshot until the manager is reopened, a restore, or a page number too
//! large to track. A resize is a change to every page at and past the
//! smaller of the two sizes (dropped pages may come back, as zeros or
//! rewritten), so [`DirtyPages::resized`] records the lowest new size and
//! every page at or past it counts as dirty.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

/// Pages past this are not tracked; noting one makes the set untrusted.
pub(super) const MAX_TRACKED_PAGES: u64 = 1 << 32;

/// Pages noted dirty since the head.
pub(super) struct DirtyPages {
    bits: RwLock<Vec<AtomicU64>>,
    /// Whether the set is known to hold every page changed since the head.
    valid: AtomicBool,
    /// The lowest page count the store was resized to since the head
    /// (`u64::MAX` when it was not resized): every page at or past it is dirty.
    dirty_from: AtomicU64,
}

impl Default for DirtyPages {
    fn default() -> Self {
        DirtyPages {
            bits: RwLock::new(Vec::new()),
            valid: AtomicBool::new(false),
            dirty_from: AtomicU64::new(u64::MAX),
        }
    }
}

impl DirtyPages {
    pub(super) fn note(&self, page: u64) {
        if page >= MAX_TRACKED_PAGES {
            self.valid.store(false, Ordering::Release);
            return;
        }
        let (w, b) = ((page / 64) as usize, page % 64);
        {
            let bits = self.bits.read();
            if let Some(word) = bits.get(w) {
                word.fetch_or(1 << b, Ordering::AcqRel);
                return;
            }
        }
        let mut bits = self.bits.write();
        if bits.len() <= w {
            bits.resize_with(w + 1, AtomicU64::default);
        }
        bits[w].fetch_or(1 << b, Ordering::AcqRel);
    }

    /// The store now has `page_count` pages.
    pub(super) fn resized(&self, page_count: u64) {
        self.dirty_from.fetch_min(page_count, Ordering::AcqRel);
    }

    /// Every page at or past this is dirty (`u64::MAX`: none by resize).
    pub(super) fn dirty_from(&self) -> u64 {
        self.dirty_from.load(Ordering::Acquire)
    }

    pub(super) fn contains(&self, page: u64) -> bool {
        if page >= self.dirty_from() {
            return true;
        }
        let bits = self.bits.read();
        bits.get((page / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (page % 64)) != 0)
    }

    pub(super) fn trusted(&self) -> bool {
        self.valid.load(Ordering::Acquire)
    }

    /// The noted pages, ascending, when the set is trusted (pages dirty by
    /// a resize are not listed: see [`dirty_from`](Self::dirty_from)).
    pub(super) fn list(&self) -> Option<Vec<u64>> {
        if !self.trusted() {
            return None;
        }
        let bits = self.bits.read();
        let mut out = Vec::new();
        for (w, word) in bits.iter().enumerate() {
            let mut v = word.load(Ordering::Acquire);
            while v != 0 {
                let b = v.trailing_zeros();
                out.push(w as u64 * 64 + u64::from(b));
                v &= v - 1;
            }
        }
        Some(out)
    }

    pub(super) fn invalidate(&self) {
        self.bits.write().clear();
        self.dirty_from.store(u64::MAX, Ordering::Release);
        self.valid.store(false, Ordering::Release);
    }

    pub(super) fn reset_clean(&self) {
        let mut bits = self.bits.write();
        bits.clear();
        self.dirty_from.store(u64::MAX, Ordering::Release);
        self.valid.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_bitmap_lists_in_order() {
        let d = DirtyPages::default();
        d.reset_clean();
        for p in [700, 3, 64, 3] {
            d.note(p);
        }
        assert_eq!(d.list().unwrap(), vec![3, 64, 700]);
        assert!(d.contains(64) && !d.contains(65));
        d.note(MAX_TRACKED_PAGES);
        assert!(d.list().is_none());
    }

    #[test]
    fn a_resize_makes_every_page_past_the_lowest_size_dirty() {
        let d = DirtyPages::default();
        d.reset_clean();
        d.note(2);
        d.resized(10);
        d.resized(40);
        assert_eq!(d.dirty_from(), 10);
        assert!(d.contains(2) && !d.contains(9) && d.contains(10) && d.contains(39));
        assert_eq!(d.list().unwrap(), vec![2]);
        d.reset_clean();
        assert_eq!(d.dirty_from(), u64::MAX);
        assert!(!d.contains(10));
    }
}
