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
//! - Apart from the copy, the last verified header (the first 100 bytes of
//!   the page as last read verified or written through the VFS in this
//!   open) is kept, and never forgotten by a write: it supplies the
//!   [`BACKUP_REWRITTEN`] fields when page 1 is healed from a copy made
//!   with SQLite's backup API (see [`patch_rewritten`]). It is a candidate
//!   only: whatever is built from it is written back only if the page's
//!   checksum accepts it.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Bytes of SQLite's database header (the start of page 1).
pub(super) const HEADER_LEN: usize = 100;

/// The fields of page 1's header that a copy made with SQLite's backup API
/// (`sqlite3_backup_*`, `rusqlite::backup`) holds from its own state rather
/// than the source's; every other byte of every page of such a copy is the
/// source's (`tests/sqlite_backup.rs` checks both, in both journal modes):
///
/// | bytes    | field                 | in the copy                                     |
/// |----------|-----------------------|-------------------------------------------------|
/// | 18..20   | file format versions  | 1 once the copy is set to a rollback journal (2 in WAL mode) |
/// | 24..28   | file change counter   | the copy's own, bumped by each of its commits   |
/// | 40..44   | schema cookie         | the copy's previous cookie + 1 (the backup's rule) |
/// | 92..96   | version-valid-for     | the copy's change counter                       |
/// | 96..100  | SQLite version number | the library that last wrote the copy            |
///
/// The last field equals the source's when one library wrote both; it is
/// listed because SQLite writes it with 92..96 at every commit, so a copy
/// made by another SQLite version differs there.
pub(super) const BACKUP_REWRITTEN: [Range<usize>; 5] = [18..20, 24..28, 40..44, 92..96, 96..100];

/// Overwrites the [`BACKUP_REWRITTEN`] fields of `page` (a copy's page 1)
/// with those of `header` (a header of the database's own page 1); no
/// other byte changes.
pub(super) fn patch_rewritten(page: &mut [u8], header: &[u8; HEADER_LEN]) {
    debug_assert!(page.len() >= HEADER_LEN);
    for r in BACKUP_REWRITTEN {
        page[r.clone()].copy_from_slice(&header[r]);
    }
}

/// The kept copy of page 1 (page id 0).
#[derive(Debug, Default)]
pub(super) struct FirstPage {
    /// Bumped by every invalidation.
    generation: AtomicU64,
    /// The verified bytes, while no write was issued since.
    bytes: Mutex<Option<Box<[u8]>>>,
    /// The header of the page as last read verified or written.
    header: Mutex<Option<[u8; HEADER_LEN]>>,
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

    /// Keeps the header of `page`, bytes the page's checksum accepted (a
    /// verified read) or the VFS sealed (a write).
    pub(super) fn note_header(&self, page: &[u8]) {
        if let Some(h) = page.get(..HEADER_LEN) {
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(h);
            *self.header.lock() = Some(header);
        }
    }

    /// The header last noted, if any was this open.
    pub(super) fn last_header(&self) -> Option<[u8; HEADER_LEN]> {
        *self.header.lock()
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

    #[test]
    fn the_header_survives_writes_and_follows_the_last_note() {
        let f = FirstPage::default();
        assert_eq!(f.last_header(), None);
        f.note_header(&[5u8; 10]);
        assert_eq!(f.last_header(), None, "a short page is no header");
        let mut page = vec![1u8; 512];
        f.note_header(&page);
        f.invalidate();
        assert_eq!(f.last_header(), Some([1u8; HEADER_LEN]));
        page[0] = 9;
        f.note_header(&page);
        assert_eq!(f.last_header().unwrap()[0], 9);
    }

    proptest::proptest! {
        /// The patch takes exactly the rewritten fields from the header and
        /// keeps every other byte; a copy that differs from the page only
        /// there is patched back into the page itself.
        #[test]
        fn the_patch_changes_only_the_rewritten_fields(
            page in proptest::collection::vec(proptest::prelude::any::<u8>(), 512..=1024),
            header in proptest::collection::vec(proptest::prelude::any::<u8>(), HEADER_LEN),
        ) {
            let header: [u8; HEADER_LEN] = header.try_into().unwrap();
            let mut patched = page.clone();
            patch_rewritten(&mut patched, &header);
            for (i, (a, b)) in patched.iter().zip(&page).enumerate() {
                if BACKUP_REWRITTEN.iter().any(|r| r.contains(&i)) {
                    proptest::prop_assert_eq!(*a, header[i], "byte {}", i);
                } else {
                    proptest::prop_assert_eq!(a, b, "byte {} changed", i);
                }
            }
            // A copy whose header differs from the page's in the rewritten
            // fields only is restored exactly from the page's own header.
            let own: [u8; HEADER_LEN] = page[..HEADER_LEN].try_into().unwrap();
            patch_rewritten(&mut patched, &own);
            proptest::prop_assert_eq!(patched, page);
        }
    }
}
