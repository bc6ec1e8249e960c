//! Range digests: how a replica and the local store compare a range of pages
//! without shipping them, for anti-entropy.
//!
//! This is part of the host seam: a [`Replica`](crate::Replica) that computes
//! [`range_digest`](crate::Replica::range_digest) where its data lives must
//! compute exactly this function.
//!
//! Each page has a *leaf digest* ([`leaf_digest`]): the 64-bit value whose
//! high half is [`page_crc`] of the page number and all but the last 4 bytes
//! of the page, and whose low half is those last 4 bytes (little-endian). The
//! digest of pages `first .. first + count` is FNV-1a (64-bit) over the
//! little-endian bytes of each page's leaf digest, in page order. A replica
//! that computes digests where its data lives must use exactly this function.
//!
//! The leaf is not simply the CRC of the whole page: a page sealed with a
//! checksum trailer ends with the CRC of what precedes it, and the CRC of a
//! message followed by its own CRC is the same constant for every message, so
//! every valid trailer page would have the same whole-page CRC. Splitting off
//! the last 4 bytes keeps the leaf distinct for distinct pages.
//!
//! A range digest detects any divergence except a CRC32 collision of a page
//! prefix (probability about 2⁻³² per differing page); the pages it leads to
//! are then compared byte for byte.

use crate::types::PageId;

/// CRC32 of (page number as u64 LE ‖ `bytes`): the checksum of a page's
/// bytes as the page numbered `page` (so that a page written to the wrong
/// place fails), used by both checksum placements and by the leaf digest.
#[must_use]
pub fn page_crc(page: PageId, bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&page.0.to_le_bytes());
    h.update(bytes);
    h.finalize()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Incremental builder of a range digest.
#[derive(Clone, Copy, Debug)]
pub struct RangeDigest {
    state: u64,
}

impl Default for RangeDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl RangeDigest {
    /// An empty digest.
    #[must_use]
    pub fn new() -> Self {
        RangeDigest { state: FNV_OFFSET }
    }

    /// Adds the next page of the range.
    pub fn push(&mut self, page: PageId, bytes: &[u8]) {
        self.push_leaf(leaf_digest(page, bytes));
    }

    /// Adds the next page of the range by its [`leaf_digest`].
    pub fn push_leaf(&mut self, leaf: u64) {
        for b in leaf.to_le_bytes() {
            self.state ^= u64::from(b);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }

    /// The digest.
    #[must_use]
    pub fn finish(self) -> u64 {
        self.state
    }
}

/// The leaf digest of one page (see the module docs). A page shorter than 4
/// bytes is taken whole as the prefix, with a zero tail.
#[must_use]
pub fn leaf_digest(page: PageId, bytes: &[u8]) -> u64 {
    let split = bytes.len().saturating_sub(4);
    let (head, tail) = bytes.split_at(split);
    let mut t = [0u8; 4];
    t[..tail.len()].copy_from_slice(tail);
    (u64::from(page_crc(page, head)) << 32) | u64::from(u32::from_le_bytes(t))
}

/// The digest of consecutive pages given as `(page, bytes)` in order.
#[must_use]
pub fn range_digest<'a>(pages: impl IntoIterator<Item = (PageId, &'a [u8])>) -> u64 {
    let mut d = RangeDigest::new();
    for (p, b) in pages {
        d.push(p, b);
    }
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::trailer;
    use proptest::prelude::*;

    #[test]
    fn sealed_pages_have_distinct_leaves() {
        // Regression: whole-page CRCs of sealed pages are all the CRC residue.
        let mut a = vec![1u8; 256];
        let mut b = vec![2u8; 256];
        trailer::seal(PageId(0), &mut a).unwrap();
        trailer::seal(PageId(0), &mut b).unwrap();
        assert_eq!(page_crc(PageId(0), &a), page_crc(PageId(0), &b));
        assert_ne!(leaf_digest(PageId(0), &a), leaf_digest(PageId(0), &b));
        assert_ne!(
            range_digest([(PageId(0), &a[..])]),
            range_digest([(PageId(0), &b[..])])
        );
    }

    proptest! {
        #[test]
        fn one_changed_byte_changes_the_range_digest(
            pages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 64), 1..6),
            which in any::<prop::sample::Index>(),
            at in 0usize..64,
            flip in 1u8..=255,
        ) {
            let before = range_digest(pages.iter().enumerate().map(|(i, p)| (PageId(i as u64), &p[..])));
            let mut changed = pages.clone();
            let i = which.index(changed.len());
            changed[i][at] ^= flip;
            let after = range_digest(changed.iter().enumerate().map(|(i, p)| (PageId(i as u64), &p[..])));
            // A change in the last 4 bytes is exact; elsewhere it changes a CRC32,
            // which a single-byte change always does.
            prop_assert_ne!(before, after);
        }

        #[test]
        fn incremental_equals_whole(pages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..6)) {
            let mut d = RangeDigest::new();
            for (i, p) in pages.iter().enumerate() {
                d.push_leaf(leaf_digest(PageId(i as u64), p));
            }
            prop_assert_eq!(d.finish(), range_digest(pages.iter().enumerate().map(|(i, p)| (PageId(i as u64), &p[..]))));
        }
    }
}
