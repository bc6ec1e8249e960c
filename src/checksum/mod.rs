//! Page checksums: CRC32 over the page number and the page bytes, kept either
//! in a trailer inside the page or in a sidecar table owned by the library.
//!
//! The checksum covers the page number, so a page that is byte-perfect but was
//! written to the wrong place fails; and an all-zero page verifies only where
//! the host wrote zeros through the detector (sidecar placement, below).
//!
//! # Trailer layout
//!
//! The last [`TRAILER_LEN`] (16) bytes of every page belong to the library; a
//! host keeps its data in the first [`payload_len`]`(page_size)` bytes.
//! Integers are little-endian.
//!
//! | offset from page end | size | field                                                     |
//! |---------------------:|-----:|-----------------------------------------------------------|
//! | -16                  | 8    | page number the page was sealed for                       |
//! | -8                   | 2    | magic `0x4853` (`"SH"`)                                   |
//! | -6                   | 1    | trailer version (1)                                       |
//! | -5                   | 1    | reserved, 0 (verify refuses any other value)              |
//! | -4                   | 4    | CRC32 of (location page number as u64 LE ‖ page[..len-4]) |
//!
//! The CRC is computed with the page number of the *location* being verified,
//! so a misdirected write fails it; the stored page number then lets the
//! verifier say where the bytes belonged ([`Error::MisplacedPage`](crate::Error::MisplacedPage)).
//! An all-zero page has magic 0 and fails before any CRC is computed.
//!
//! # Sidecar table
//!
//! For hosts that cannot give up bytes in a page, [`ChecksumTable`] keeps one
//! CRC32 of (page number as u64 LE ‖ whole page) per page. It comes in two
//! kinds:
//!
//! - **durable** ([`ChecksumTable::open`], [`TableConfig`]): the default for
//!   hosts whose pages outlive the process. A base file plus an append-only
//!   log; each change costs one log record of 6 or 7 bytes (in a frame of 32
//!   more per append, all of it written twice so that a bit flipped in
//!   either copy loses nothing), made durable (one fsync,
//!   shared by concurrent writers and by a batch) before the page write is
//!   issued, and after a crash at any point a page that holds its old or its
//!   new bytes verifies. The layouts are in `checksum/log/mod.rs` and [`ChecksumTable`]
//!   (base file); the protocol and the crash analysis in
//!   `checksum/durable.rs`; its file I/O goes through the [`TableStorage`]
//!   seam.
//! - **in memory** ([`ChecksumTable::new`]): nothing on disk; for tests and
//!   for hosts whose pages do not outlive the process (or that rebuild the
//!   table themselves). [`ChecksumTable::save`] writes a whole copy.
//!
//! A table entry may also record that the host said the page is
//! unallocated ([`ChecksumTable::mark_free`]): verifying it answers
//! [`Error::PageUnallocated`](crate::Error::PageUnallocated), not a
//! corruption, until the page is written again. The mark is kept like a
//! checksum: saved with an in-memory table, logged durably (and carried
//! through compactions) by a durable one (see `checksum/durable.rs` for the mark and
//! for the claims adoption makes).
//!
//! [`ChecksumTable::seal`] refuses an all-zero page, so adopting bytes that
//! nobody vouched for never turns a lost (zeroed) page into a valid one. The
//! detector does record the checksum of an all-zero page that the *host
//! writes* through it (SQLite with `secure_delete` zeroes the pages it
//! frees), through the same path as any other write (in a durable table, an
//! intent logged before the page is written): those zeros are what the host
//! asked for, the checksum covers the page number like any other, and a page
//! whose entry describes other contents still fails as
//! [`Error::ZeroedPage`](crate::Error::ZeroedPage) when it comes back zeroed.
//!
//! # A stalled log
//!
//! A retryable failure of a durable table's log write or fsync (a full
//! disk, `EIO`) stalls the log instead of poisoning it: it keeps in memory
//! the bytes it had not made durable, and refuses every change with the
//! retryable [`Error::Stalled`](crate::Error::Stalled) — before anything is
//! logged, so the detector writes no page whose checksum is not durable;
//! a write waiting for the failed fsync gets the same error and its page
//! is not written. Verification goes on. [`ChecksumTable::resume`] writes the
//! log again (its durable prefix, then the kept bytes, crash-safely) and
//! accepts changes again; the table does it on its own at its next change
//! once a backoff with full jitter ([`RESUME_BACKOFF_BASE`] doubling to
//! [`RESUME_BACKOFF_CAP`]) has passed, and the
//! [`AutoRecoveryManager`](crate::AutoRecoveryManager) does it when the
//! stall arrives on its bus ([`FailureKind::ChecksumLogStalled`](crate::FailureKind::ChecksumLogStalled),
//! remedy `resume-checksum-log`). A retry after space returns writes
//! exactly what was pending, in order, once. Any other failure (`EROFS`)
//! poisons the table ([`Error::Poisoned`](crate::Error::Poisoned)): reopen it.
//! The protocol is in `checksum/appender.rs`.

use std::sync::Arc;

use crate::error::Result;
use crate::types::PageId;

mod appender;
mod base;
mod compact;
mod durable;
mod entries;
mod layout;
// What only `testing` reaches (fuzz targets, corpus tests) is unused without it.
#[cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]
pub(crate) mod log;
mod marks;
mod recovery;
pub(crate) mod storage;
mod table;
pub mod trailer;
mod unsettled;
mod writes;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_backoff;
#[cfg(test)]
mod tests_free;
#[cfg(test)]
mod tests_mirror;

pub use appender::{LogResumeReport, LogStallInfo, RESUME_BACKOFF_BASE, RESUME_BACKOFF_CAP};
#[cfg(feature = "sqlite")]
pub(crate) use base::base_page_size;
pub use durable::{TableConfig, TableStats};
pub use entries::MAX_TABLE_PAGES;
pub use storage::{DirTableStorage, TableStorage};
pub use table::ChecksumTable;
pub(crate) use table::Entry;

pub(crate) use layout::is_all_zero;
pub use layout::{payload_len, MIN_PAGE_SIZE, TRAILER_LEN};

// The page CRC lives in `digest` (its one public path); used here too.
pub(crate) use crate::digest::page_crc;

/// Where a store's page checksums live.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ChecksumPlacement {
    /// In the last [`TRAILER_LEN`] bytes of every page.
    Trailer,
    /// In a sidecar table kept by the library.
    Sidecar(Arc<ChecksumTable>),
}

impl ChecksumPlacement {
    /// Prepares `buf` to be written as `page`: writes the trailer, or records
    /// the checksum in an in-memory table.
    ///
    /// # Errors
    /// As [`trailer::seal`] or [`ChecksumTable::seal`] (which refuses a
    /// durable table: its changes go through the detector).
    pub fn seal(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        match self {
            ChecksumPlacement::Trailer => trailer::seal(page, buf),
            ChecksumPlacement::Sidecar(t) => t.seal(page, buf),
        }
    }

    /// Verifies `buf` as the contents of `page`.
    ///
    /// # Errors
    /// A corruption error ([`Error::is_corruption`](crate::Error::is_corruption)) when it does not verify.
    pub fn verify(&self, page: PageId, buf: &[u8]) -> Result<()> {
        match self {
            ChecksumPlacement::Trailer => trailer::verify(page, buf),
            ChecksumPlacement::Sidecar(t) => t.verify(page, buf),
        }
    }
}
