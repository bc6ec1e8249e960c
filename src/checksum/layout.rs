//! The trailer placement's page geometry: how many bytes of a page the
//! library reserves, the smallest page it accepts, and the all-zero test
//! that sealing and verification share.
//!
//! A leaf: it names nothing else in `checksum`, so `mod.rs` re-exports it
//! and every file of the folder (the trailer codec, the sidecar table) uses
//! it without reaching back into `mod.rs`.

/// Bytes at the end of each page that the trailer placement reserves.
pub const TRAILER_LEN: usize = 16;

/// Smallest page size the library accepts (room for a trailer and some data).
pub const MIN_PAGE_SIZE: usize = 64;

/// The bytes of a page available to the host under the trailer placement.
#[must_use]
pub const fn payload_len(page_size: usize) -> usize {
    page_size.saturating_sub(TRAILER_LEN)
}

/// Whether every byte of `bytes` is zero.
pub(crate) fn is_all_zero(bytes: &[u8]) -> bool {
    // Word-at-a-time; only reached on the failure path or when sealing.
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    words
        .map(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")))
        .all(|w| w == 0)
        && tail.iter().all(|&b| b == 0)
}
