//! The verified bytes of the database file's first page, kept so that the
//! small reads SQLite makes of its header at the start of every transaction
//! (the change counter at offset 24, 16 bytes) cost a copy instead of a
//! whole-page read and checksum.
//!
//! # Contract
//! - Only bytes that passed verification are kept, and they are served only
//!   while no write of the page has been issued since they were read: every
//!   write of the page — SQLite's batches, a repair, a restore — goes
//!   through the detector, whose write observer calls
//!   [`FirstPage::invalidate`] after issuing it, and so does every resize.
//! - A read that raced with a write is not kept: the generation taken before
//!   the read must still be current when the bytes are offered.
//! - Damage on disk after the bytes were kept is not seen through the copy
//!   (the copy is the page's true contents); a scrub or the next read after
//!   a write finds it.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// The kept copy of page 1 (page id 0).
#[derive(Debug, Default)]
pub(super) struct FirstPage {
    /// Bumped by every invalidation.
    generation: AtomicU64,
    /// The verified bytes, while no write was issued since.
    bytes: Mutex<Option<Box<[u8]>>>,
}

impl FirstPage {
    /// Copies `out.len()` bytes from offset `within` of the kept page into
    /// `out`; `false` when no copy is kept.
    pub(super) fn read(&self, within: usize, out: &mut [u8]) -> bool {
        match &*self.bytes.lock() {
            Some(b) => {
                out.copy_from_slice(&b[within..within + out.len()]);
                true
            }
            None => false,
        }
    }

    /// The generation to pass to [`offer`](Self::offer), taken before the
    /// page is read.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `page` (verified, read after `generation` was taken) unless a
    /// write was issued since.
    pub(super) fn offer(&self, generation: u64, page: &[u8]) {
        let mut kept = self.bytes.lock();
        if self.generation.load(Ordering::Acquire) == generation {
            *kept = Some(page.into());
        }
    }

    /// Forgets the copy: a write of the page (or a resize) was issued.
    pub(super) fn invalidate(&self) {
        let mut kept = self.bytes.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        *kept = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_read_before_a_write_is_never_kept_after_it() {
        let f = FirstPage::default();
        let mut out = [0u8; 4];
        assert!(!f.read(0, &mut out));
        let g = f.generation();
        f.offer(g, &[1, 2, 3, 4, 5, 6]);
        assert!(f.read(2, &mut out));
        assert_eq!(out, [3, 4, 5, 6]);
        // A read that started before a write and ends after it.
        let g = f.generation();
        f.invalidate();
        f.offer(g, &[9; 6]);
        assert!(!f.read(0, &mut out), "a copy older than a write was kept");
        let g = f.generation();
        f.offer(g, &[7; 6]);
        assert!(f.read(0, &mut out));
        assert_eq!(out, [7; 4]);
    }
}
