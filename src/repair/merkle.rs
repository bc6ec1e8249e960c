//! Range digests for anti-entropy.
//!
//! The digest of pages `first .. first + count` is FNV-1a (64-bit) over the
//! little-endian bytes of each page's [`page_crc`] in page order. A replica
//! that computes digests where its data lives must use exactly this function.
//! A range digest detects any divergence except a CRC32 collision of a page
//! (probability about 2⁻³² per differing page); the pages it leads to are then
//! verified in full.

use crate::checksum::page_crc;
use crate::types::PageId;

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
        self.push_crc(page_crc(page, bytes));
    }

    /// Adds the next page of the range by its [`page_crc`].
    pub fn push_crc(&mut self, crc: u32) {
        for b in crc.to_le_bytes() {
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

/// The digest of consecutive pages given as `(page, bytes)` in order.
#[must_use]
pub fn range_digest<'a>(pages: impl IntoIterator<Item = (PageId, &'a [u8])>) -> u64 {
    let mut d = RangeDigest::new();
    for (p, b) in pages {
        d.push(p, b);
    }
    d.finish()
}
