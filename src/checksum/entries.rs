//! The table's entries: one `AtomicU64` per page, what its bits mean, and
//! the bounds on how many there are and how large a page is.
//!
//! An entry holds a settled checksum in bits 0..32 with [`PRESENT`], or the
//! unallocated mark [`FREE`] alone; [`UNSETTLED`] (memory only) says the
//! durable state holds versions not yet settled. Every other file of the
//! table reads these; this one reads none of them.

use std::sync::atomic::AtomicU64;

use super::MIN_PAGE_SIZE;
use crate::error::{Error, Result};

/// Entry bit: a settled checksum is present in bits 0..32.
pub(super) const PRESENT: u64 = 1 << 32;
/// Entry value (alone; on disk too): the host said the page is unallocated
/// ([`ChecksumTable::mark_free`](super::ChecksumTable::mark_free)). Carries no CRC.
pub(super) const FREE: u64 = 1 << 33;
/// Entry bit (memory only): the page has unsettled versions in the durable
/// state, which verification also accepts.
pub(super) const UNSETTLED: u64 = 1 << 34;
/// The part of an entry a base file holds: present bit and CRC, or the
/// unallocated mark.
pub(super) const SETTLED_BITS: u64 = PRESENT | FREE | u32::MAX as u64;

/// The most pages a sidecar table describes (2³², 32 GiB of entries): a
/// bound on the memory a page id can make the table allocate.
pub const MAX_TABLE_PAGES: u64 = 1 << 32;

pub(super) fn check_page_size(page_size: usize) -> Result<()> {
    if page_size < MIN_PAGE_SIZE || u32::try_from(page_size).is_err() {
        return Err(Error::config(
            "page_size",
            format!("is {page_size}; it must be at least {MIN_PAGE_SIZE} bytes and fit in 32 bits"),
        ));
    }
    Ok(())
}

/// Grows `entries` to `len` slots (zeroed), reporting an allocation failure
/// instead of aborting.
pub(super) fn grow(entries: &mut Vec<AtomicU64>, len: usize) -> std::result::Result<(), String> {
    if entries.len() < len {
        entries
            .try_reserve_exact(len - entries.len())
            .map_err(|e| e.to_string())?;
        entries.resize_with(len, || AtomicU64::new(0));
    }
    Ok(())
}
