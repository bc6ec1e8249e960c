//! Page checksums: CRC32 over the page number and the page bytes, kept either
//! in a trailer inside the page or in a sidecar table owned by the library.
//!
//! The checksum covers the page number, so a page that is byte-perfect but was
//! written to the wrong place fails; and an all-zero page never verifies.
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
//! | -5                   | 1    | reserved, 0                                               |
//! | -4                   | 4    | CRC32 of (location page number as u64 LE ‖ page[..len-4]) |
//!
//! The CRC is computed with the page number of the *location* being verified,
//! so a misdirected write fails it; the stored page number then lets the
//! verifier say where the bytes belonged ([`Error::MisplacedPage`]). An all-zero
//! page has magic 0 and fails before any CRC is computed.
//!
//! # Sidecar table
//!
//! For hosts that cannot give up bytes in a page, [`ChecksumTable`] keeps one
//! CRC32 of (page number as u64 LE ‖ whole page) per page, in memory and in a
//! framed file. Every file the library writes whole has the same 24-byte
//! frame header: magic (4 bytes, here `SHCT`), format version (u32), payload
//! length (u64), CRC32 of the payload (u32), CRC32 of the 20 header bytes
//! before it (u32). The payload is:
//!
//! | offset | size | field                                                    |
//! |-------:|-----:|----------------------------------------------------------|
//! | 0      | 4    | page size                                                |
//! | 4      | 8    | entry count `n`                                          |
//! | 12     | 8·n  | entries: bit 32 set = present, bits 0..32 = CRC32;       |
//! |        |      | bit 33 set (and nothing else) = unallocated              |
//!
//! An entry with bit 33 set records that the host said the page is
//! unallocated ([`ChecksumTable::mark_free`]): verifying it answers
//! [`Error::PageUnallocated`], not a corruption, until the page is sealed
//! again. Any other flag bit is refused when the table is decoded.
//!
//! [`ChecksumTable::seal`] refuses an all-zero page, so adopting bytes that
//! nobody vouched for never turns a lost (zeroed) page into a valid one. The
//! detector does record the checksum of an all-zero page that the *host
//! writes* through it (SQLite with `secure_delete` zeroes the pages it
//! frees): those zeros are what the host asked for, the checksum covers the
//! page number like any other, and a page whose entry describes other
//! contents still fails as [`Error::ZeroedPage`] when it comes back zeroed.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::types::PageId;

/// Bytes at the end of each page that the trailer placement reserves.
pub const TRAILER_LEN: usize = 16;

/// Smallest page size the library accepts (room for a trailer and some data).
pub const MIN_PAGE_SIZE: usize = 64;

const TRAILER_MAGIC: u16 = 0x4853;
const TRAILER_VERSION: u8 = 1;

/// The bytes of a page available to the host under the trailer placement.
#[must_use]
pub const fn payload_len(page_size: usize) -> usize {
    page_size.saturating_sub(TRAILER_LEN)
}

/// CRC32 of (page number as u64 LE ‖ `bytes`).
#[must_use]
pub fn page_crc(page: PageId, bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&page.0.to_le_bytes());
    h.update(bytes);
    h.finalize()
}

pub(crate) fn is_all_zero(bytes: &[u8]) -> bool {
    // Word-at-a-time; only reached on the failure path or when sealing.
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    words
        .map(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")))
        .all(|w| w == 0)
        && tail.iter().all(|&b| b == 0)
}

/// Trailer placement: seal and verify pages whose last 16 bytes are the library's.
pub mod trailer {
    use super::*;

    /// Writes the trailer for `page` into the last [`TRAILER_LEN`] bytes of `buf`.
    ///
    /// # Errors
    /// [`Error::BufferSize`] when `buf` is shorter than [`MIN_PAGE_SIZE`].
    pub fn seal(page: PageId, buf: &mut [u8]) -> Result<()> {
        if buf.len() < MIN_PAGE_SIZE {
            return Err(Error::BufferSize {
                expected: MIN_PAGE_SIZE,
                actual: buf.len(),
            });
        }
        let t = buf.len() - TRAILER_LEN;
        buf[t..t + 8].copy_from_slice(&page.0.to_le_bytes());
        buf[t + 8..t + 10].copy_from_slice(&TRAILER_MAGIC.to_le_bytes());
        buf[t + 10] = TRAILER_VERSION;
        buf[t + 11] = 0;
        let crc = page_crc(page, &buf[..buf.len() - 4]);
        let n = buf.len();
        buf[n - 4..].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// Whether `buf` ends in a trailer header this crate writes (magic and
    /// version), whatever its page number and CRC: the page was sealed once.
    #[must_use]
    pub fn has_magic(buf: &[u8]) -> bool {
        let n = buf.len();
        if n < MIN_PAGE_SIZE {
            return false;
        }
        let t = n - TRAILER_LEN;
        u16::from_le_bytes([buf[t + 8], buf[t + 9]]) == TRAILER_MAGIC
            && buf[t + 10] == TRAILER_VERSION
    }

    /// Verifies `buf` as the contents of `page`.
    ///
    /// # Errors
    /// [`Error::ZeroedPage`], [`Error::InvalidTrailer`], [`Error::MisplacedPage`]
    /// or [`Error::ChecksumMismatch`], in that order of diagnosis; and
    /// [`Error::BufferSize`] for a buffer shorter than [`MIN_PAGE_SIZE`].
    pub fn verify(page: PageId, buf: &[u8]) -> Result<()> {
        let n = buf.len();
        if n < MIN_PAGE_SIZE {
            return Err(Error::BufferSize {
                expected: MIN_PAGE_SIZE,
                actual: n,
            });
        }
        let t = n - TRAILER_LEN;
        let stored_page = u64::from_le_bytes(buf[t..t + 8].try_into().expect("8 bytes"));
        let magic = u16::from_le_bytes(buf[t + 8..t + 10].try_into().expect("2 bytes"));
        let stored_crc = u32::from_le_bytes(buf[n - 4..].try_into().expect("4 bytes"));
        if magic == TRAILER_MAGIC && buf[t + 10] == TRAILER_VERSION {
            let actual = page_crc(page, &buf[..n - 4]);
            if actual == stored_crc && stored_page == page.0 {
                return Ok(());
            }
            if stored_page != page.0 && page_crc(PageId(stored_page), &buf[..n - 4]) == stored_crc {
                return Err(Error::MisplacedPage {
                    page,
                    found: PageId(stored_page),
                });
            }
            return Err(Error::ChecksumMismatch {
                page,
                expected: stored_crc,
                actual,
            });
        }
        if is_all_zero(buf) {
            return Err(Error::ZeroedPage { page });
        }
        let reason = if magic != TRAILER_MAGIC {
            format!("magic {magic:#06x}, expected {TRAILER_MAGIC:#06x}")
        } else {
            format!("version {}, expected {TRAILER_VERSION}", buf[t + 10])
        };
        Err(Error::InvalidTrailer { page, reason })
    }
}

const PRESENT: u64 = 1 << 32;
/// The entry of a page the host said is unallocated; carries no CRC.
const FREE: u64 = 1 << 33;

/// The most pages a sidecar table describes (2³², 32 GiB of entries): a
/// bound on the memory a page id can make the table allocate.
pub const MAX_TABLE_PAGES: u64 = 1 << 32;
const TABLE_MAGIC: [u8; 4] = *b"SHCT";
const TABLE_VERSION: u32 = 1;

/// What a sidecar table holds for one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Nothing: never sealed (or forgotten by a shrink).
    Absent,
    /// The CRC of the page's sealed contents.
    Sealed(u32),
    /// Marked unallocated by the host.
    Free,
}

/// A sidecar checksum table: one CRC per page, kept outside the pages.
///
/// Lookups are lock-free reads of an atomic per page; the table grows (under a
/// write lock) when a page past its end is sealed.
///
/// # Durability
///
/// The table lives in memory and is as durable as its last
/// [`save`](Self::save). A host saves it at each of its checkpoints, after
/// syncing the pages it covers. After a crash, a page written after the last
/// save is checked against its older checksum and reported as corrupt (and
/// a replica copy of the newer bytes fails verification the same way), so
/// the trailer placement, which keeps the checksum in the page and needs no
/// save, is the better choice for hosts that can spare 16 bytes a page.
#[derive(Debug)]
pub struct ChecksumTable {
    page_size: usize,
    entries: RwLock<Vec<AtomicU64>>,
}

impl ChecksumTable {
    /// An empty table for pages of `page_size` bytes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a page size below [`MIN_PAGE_SIZE`].
    pub fn new(page_size: usize) -> Result<Self> {
        if page_size < MIN_PAGE_SIZE {
            return Err(Error::config(
                "page_size",
                format!("is {page_size}; it must be at least {MIN_PAGE_SIZE} bytes"),
            ));
        }
        Ok(ChecksumTable {
            page_size,
            entries: RwLock::new(Vec::new()),
        })
    }

    /// The page size the table was made for.
    #[must_use]
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The CRC recorded for `page`, if any.
    #[must_use]
    pub fn get(&self, page: PageId) -> Option<u32> {
        let entries = self.entries.read();
        let e = entries
            .get(usize::try_from(page.0).ok()?)?
            .load(Ordering::Acquire);
        (e & PRESENT != 0).then_some(e as u32)
    }

    /// Records the checksum of `buf` as the contents of `page`.
    ///
    /// # Errors
    /// [`Error::BufferSize`] for a buffer that is not one page;
    /// [`Error::PageOutOfRange`] for a page id at or past
    /// [`MAX_TABLE_PAGES`]; [`Error::InvalidArgument`] for an all-zero page,
    /// which could not be told apart from a lost one, or when the table
    /// cannot grow to the page.
    pub fn seal(&self, page: PageId, buf: &[u8]) -> Result<()> {
        let crc = self.sealable(page, buf, false)?;
        self.record(page, crc)
    }

    /// Checks that `buf` may be sealed as `page` and returns its checksum,
    /// without recording it (the detector records only after the write
    /// succeeded, so a failed write never leaves a checksum for bytes that
    /// are not on disk). An all-zero page is refused unless `zero_ok` (a
    /// host write of zeros, see the module docs).
    pub(crate) fn sealable(&self, page: PageId, buf: &[u8], zero_ok: bool) -> Result<u32> {
        self.check_len(buf)?;
        if page.0 >= MAX_TABLE_PAGES {
            return Err(Error::PageOutOfRange {
                page,
                page_count: MAX_TABLE_PAGES,
            });
        }
        if !zero_ok && is_all_zero(buf) {
            return Err(Error::InvalidArgument {
                what: "page",
                reason: format!(
                    "page {page} is all zeros; a zeroed page cannot be told from a lost one, so give every page a nonzero header"
                ),
            });
        }
        Ok(page_crc(page, buf))
    }

    /// Records `crc` for `page`, growing the table as needed. Clears an
    /// unallocated mark.
    pub(crate) fn record(&self, page: PageId, crc: u32) -> Result<()> {
        self.store_entry(page, PRESENT | u64::from(crc))
    }

    /// Records that the host said `page` is unallocated: its checksum is
    /// forgotten, and verifying it answers [`Error::PageUnallocated`] until
    /// it is sealed again. The mark is saved with the table, so it survives
    /// a restart.
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] for a page id at or past
    /// [`MAX_TABLE_PAGES`]; [`Error::InvalidArgument`] when the table cannot
    /// grow to the page.
    pub fn mark_free(&self, page: PageId) -> Result<()> {
        self.store_entry(page, FREE)
    }

    /// Whether `page` is marked unallocated ([`mark_free`](Self::mark_free)).
    #[must_use]
    pub fn is_free(&self, page: PageId) -> bool {
        let entries = self.entries.read();
        usize::try_from(page.0)
            .ok()
            .and_then(|i| entries.get(i))
            .is_some_and(|e| e.load(Ordering::Acquire) == FREE)
    }

    /// What the table holds for `page`, in one look.
    pub(crate) fn entry(&self, page: PageId) -> Entry {
        let entries = self.entries.read();
        let e = usize::try_from(page.0)
            .ok()
            .and_then(|i| entries.get(i))
            .map_or(0, |e| e.load(Ordering::Acquire));
        if e & PRESENT != 0 {
            Entry::Sealed(e as u32)
        } else if e == FREE {
            Entry::Free
        } else {
            Entry::Absent
        }
    }

    /// Records `crc` for `page` (or, with `None`, marks it unallocated) only
    /// if the page has no entry at all; returns whether it did. Adoption
    /// uses it, so a checksum that the host's own write recorded meanwhile
    /// is never replaced by one of older bytes. The table must already reach
    /// the page ([`reserve_pages`](Self::reserve_pages)); a page past its
    /// end is left alone (`false`).
    pub(crate) fn claim_absent(&self, page: PageId, crc: Option<u32>) -> bool {
        let value = crc.map_or(FREE, |c| PRESENT | u64::from(c));
        let entries = self.entries.read();
        usize::try_from(page.0)
            .ok()
            .and_then(|i| entries.get(i))
            .is_some_and(|e| {
                e.compare_exchange(0, value, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
    }

    /// Grows the table (with empty entries) so that it reaches
    /// `page_count` pages, in one allocation.
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] past [`MAX_TABLE_PAGES`];
    /// [`Error::InvalidArgument`] when the memory cannot be had.
    pub(crate) fn reserve_pages(&self, page_count: u64) -> Result<()> {
        if page_count > MAX_TABLE_PAGES {
            return Err(Error::PageOutOfRange {
                page: PageId(page_count - 1),
                page_count: MAX_TABLE_PAGES,
            });
        }
        let want = usize::try_from(page_count).map_err(|_| Error::InvalidArgument {
            what: "page_count",
            reason: format!("{page_count} entries do not fit in memory"),
        })?;
        let mut entries = self.entries.write();
        if entries.len() < want {
            let more = want - entries.len();
            entries
                .try_reserve_exact(more)
                .map_err(|e| Error::InvalidArgument {
                    what: "page_count",
                    reason: format!("cannot grow the checksum table to {page_count} pages: {e}"),
                })?;
            entries.resize_with(want, || AtomicU64::new(0));
        }
        Ok(())
    }

    fn store_entry(&self, page: PageId, value: u64) -> Result<()> {
        let idx = usize::try_from(page.0)
            .ok()
            .filter(|_| page.0 < MAX_TABLE_PAGES)
            .ok_or(Error::PageOutOfRange {
                page,
                page_count: MAX_TABLE_PAGES,
            })?;
        {
            let entries = self.entries.read();
            if let Some(e) = entries.get(idx) {
                e.store(value, Ordering::Release);
                return Ok(());
            }
        }
        let mut entries = self.entries.write();
        if entries.len() <= idx {
            let more = idx + 1 - entries.len();
            entries
                .try_reserve_exact(more)
                .map_err(|e| Error::InvalidArgument {
                    what: "page",
                    reason: format!("cannot grow the checksum table to page {page}: {e}"),
                })?;
            entries.resize_with(idx + 1, || AtomicU64::new(0));
        }
        entries[idx].store(value, Ordering::Release);
        Ok(())
    }

    /// Forgets the checksums of pages at and past `page_count` (the store
    /// shrank); a page written there later is sealed afresh.
    pub fn truncate(&self, page_count: u64) {
        let mut entries = self.entries.write();
        let keep = usize::try_from(page_count).unwrap_or(usize::MAX);
        if keep < entries.len() {
            entries.truncate(keep);
            entries.shrink_to_fit();
        }
    }

    /// Verifies `buf` as the contents of `page`.
    ///
    /// # Errors
    /// [`Error::MissingChecksum`] when no checksum was recorded;
    /// [`Error::PageUnallocated`] for a page marked free;
    /// [`Error::ZeroedPage`] or [`Error::ChecksumMismatch`] when the bytes do
    /// not match; [`Error::BufferSize`] for a buffer that is not one page.
    pub fn verify(&self, page: PageId, buf: &[u8]) -> Result<()> {
        self.check_len(buf)?;
        let Some(expected) = self.get(page) else {
            if self.is_free(page) {
                return Err(Error::PageUnallocated { page });
            }
            return Err(Error::MissingChecksum { page });
        };
        let actual = page_crc(page, buf);
        if actual == expected {
            return Ok(());
        }
        if is_all_zero(buf) {
            return Err(Error::ZeroedPage { page });
        }
        Err(Error::ChecksumMismatch {
            page,
            expected,
            actual,
        })
    }

    fn check_len(&self, buf: &[u8]) -> Result<()> {
        if buf.len() != self.page_size {
            return Err(Error::BufferSize {
                expected: self.page_size,
                actual: buf.len(),
            });
        }
        Ok(())
    }

    /// Encodes the table as the framed file described in the module docs.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let entries = self.entries.read();
        let mut payload = Vec::with_capacity(12 + entries.len() * 8);
        payload.extend_from_slice(&(self.page_size as u32).to_le_bytes());
        payload.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for e in entries.iter() {
            payload.extend_from_slice(&e.load(Ordering::Acquire).to_le_bytes());
        }
        fsutil::encode_framed(TABLE_MAGIC, TABLE_VERSION, &payload)
    }

    /// Decodes a table from bytes read from `path` (used in messages).
    ///
    /// # Errors
    /// [`Error::CorruptFile`] / [`Error::UnsupportedVersion`] for a damaged or
    /// foreign file; [`Error::PageSizeMismatch`] when it was made for another
    /// page size.
    pub fn decode(path: &Path, bytes: &[u8], page_size: usize) -> Result<Self> {
        let (_, payload) = fsutil::decode_framed(path, bytes, TABLE_MAGIC, TABLE_VERSION)?;
        let off = fsutil::FRAME_HEADER_LEN as u64;
        if payload.len() < 12 {
            return Err(Error::corrupt_file(
                path,
                off,
                "table payload shorter than 12 bytes",
            ));
        }
        let ps = u32::from_le_bytes(payload[0..4].try_into().expect("4 bytes")) as usize;
        if ps != page_size {
            return Err(Error::PageSizeMismatch {
                what: format!("checksum table {}", path.display()),
                expected: page_size,
                actual: ps,
            });
        }
        let n = u64::from_le_bytes(payload[4..12].try_into().expect("8 bytes"));
        if n > MAX_TABLE_PAGES {
            return Err(Error::corrupt_file(
                path,
                off + 4,
                format!("table says {n} entries, more than the {MAX_TABLE_PAGES} a table holds"),
            ));
        }
        let body = &payload[12..];
        if Some(body.len() as u64) != n.checked_mul(8) {
            return Err(Error::corrupt_file(
                path,
                off + 4,
                format!("table says {n} entries, payload holds {} bytes", body.len()),
            ));
        }
        let entries = body
            .chunks_exact(8)
            .map(|c| AtomicU64::new(u64::from_le_bytes(c.try_into().expect("8 bytes"))))
            .collect::<Vec<_>>();
        if let Some(bad) = entries.iter().position(|e| {
            let e = e.load(Ordering::Relaxed);
            e != FREE && e & !(PRESENT | u64::from(u32::MAX)) != 0
        }) {
            return Err(Error::corrupt_file(
                path,
                off + 12 + bad as u64 * 8,
                "entry has unknown flag bits",
            ));
        }
        let t = ChecksumTable::new(page_size)?;
        *t.entries.write() = entries;
        Ok(t)
    }

    /// Writes the table to `path` crash-safely.
    ///
    /// # Errors
    /// [`Error::Io`] naming the step that failed.
    pub fn save(&self, path: &Path) -> Result<()> {
        fsutil::atomic_write(path, &self.encode())
    }

    /// Loads the table at `path`, or an empty one when the file does not exist.
    ///
    /// # Errors
    /// As [`decode`](Self::decode), and [`Error::Io`].
    pub fn load_or_new(path: &Path, page_size: usize) -> Result<Self> {
        match fsutil::read_optional(path)? {
            Some(bytes) => Self::decode(path, &bytes, page_size),
            None => Self::new(page_size),
        }
    }
}

/// Where a store's page checksums live.
#[derive(Clone, Debug)]
pub enum ChecksumPlacement {
    /// In the last [`TRAILER_LEN`] bytes of every page.
    Trailer,
    /// In a sidecar table kept by the library.
    Sidecar(Arc<ChecksumTable>),
}

impl ChecksumPlacement {
    /// Prepares `buf` to be written as `page`: writes the trailer, or records
    /// the checksum in the table.
    ///
    /// # Errors
    /// As [`trailer::seal`] or [`ChecksumTable::seal`].
    pub fn seal(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        match self {
            ChecksumPlacement::Trailer => trailer::seal(page, buf),
            ChecksumPlacement::Sidecar(t) => t.seal(page, buf),
        }
    }

    /// Verifies `buf` as the contents of `page`.
    ///
    /// # Errors
    /// A corruption error ([`Error::is_corruption`]) when it does not verify.
    pub fn verify(&self, page: PageId, buf: &[u8]) -> Result<()> {
        match self {
            ChecksumPlacement::Trailer => trailer::verify(page, buf),
            ChecksumPlacement::Sidecar(t) => t.verify(page, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealed(page: u64, size: usize, fill: u8) -> Vec<u8> {
        let mut b = vec![fill; size];
        trailer::seal(PageId(page), &mut b).unwrap();
        b
    }

    #[test]
    fn zero_page_never_verifies() {
        for size in [64, 4096, 8192] {
            let z = vec![0u8; size];
            assert!(matches!(
                trailer::verify(PageId(0), &z),
                Err(Error::ZeroedPage { .. })
            ));
            let t = ChecksumTable::new(size).unwrap();
            assert!(t.seal(PageId(0), &z).is_err());
        }
    }

    #[test]
    fn misdirected_write_is_named() {
        let b = sealed(7, 4096, 0xAB);
        assert!(trailer::verify(PageId(7), &b).is_ok());
        match trailer::verify(PageId(9), &b) {
            Err(Error::MisplacedPage { page, found }) => {
                assert_eq!((page, found), (PageId(9), PageId(7)));
            }
            other => panic!("expected MisplacedPage, got {other:?}"),
        }
    }

    #[test]
    fn sidecar_catches_misdirected_and_missing() {
        let t = ChecksumTable::new(128).unwrap();
        let b = vec![5u8; 128];
        t.seal(PageId(1), &b).unwrap();
        assert!(t.verify(PageId(1), &b).is_ok());
        assert!(matches!(
            t.verify(PageId(2), &b),
            Err(Error::MissingChecksum { .. })
        ));
        t.seal(PageId(2), &[6u8; 128]).unwrap();
        assert!(matches!(
            t.verify(PageId(2), &b),
            Err(Error::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn huge_page_ids_are_refused_not_allocated() {
        let t = ChecksumTable::new(64).unwrap();
        let b = [1u8; 64];
        assert!(matches!(
            t.seal(PageId(u64::MAX), &b),
            Err(Error::PageOutOfRange { .. })
        ));
        assert!(matches!(
            t.seal(PageId(MAX_TABLE_PAGES), &b),
            Err(Error::PageOutOfRange { .. })
        ));
        t.seal(PageId(10), &b).unwrap();
        assert!(t.verify(PageId(10), &b).is_ok());
    }

    #[test]
    fn table_file_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sums");
        let t = ChecksumTable::new(256).unwrap();
        t.seal(PageId(3), &[9u8; 256]).unwrap();
        t.save(&p).unwrap();
        let back = ChecksumTable::load_or_new(&p, 256).unwrap();
        assert_eq!(back.get(PageId(3)), t.get(PageId(3)));
        assert_eq!(back.get(PageId(0)), None);
        assert!(matches!(
            ChecksumTable::load_or_new(&p, 512),
            Err(Error::PageSizeMismatch { .. })
        ));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 3);
        assert!(ChecksumTable::decode(&p, &bytes, 256).is_err());
    }

    proptest! {
        #[test]
        fn trailer_round_trip(page in any::<u64>(), data in proptest::collection::vec(any::<u8>(), MIN_PAGE_SIZE..1024)) {
            let mut b = data;
            trailer::seal(PageId(page), &mut b).unwrap();
            prop_assert!(trailer::verify(PageId(page), &b).is_ok());
        }

        #[test]
        fn any_single_bit_flip_is_caught(page in 0u64..1000, data in proptest::collection::vec(any::<u8>(), MIN_PAGE_SIZE..600), bit in any::<usize>()) {
            let mut b = data;
            trailer::seal(PageId(page), &mut b).unwrap();
            let i = (bit / 8) % b.len();
            b[i] ^= 1 << (bit % 8);
            let r = trailer::verify(PageId(page), &b);
            prop_assert!(r.as_ref().is_err_and(Error::is_corruption), "{:?}", r);
        }

        #[test]
        fn sidecar_bit_flip_is_caught(page in 0u64..100, data in proptest::collection::vec(1u8..255, MIN_PAGE_SIZE..300), bit in any::<usize>()) {
            let t = ChecksumTable::new(data.len()).unwrap();
            t.seal(PageId(page), &data).unwrap();
            prop_assert!(t.verify(PageId(page), &data).is_ok());
            let mut b = data;
            let i = (bit / 8) % b.len();
            b[i] ^= 1 << (bit % 8);
            prop_assert!(t.verify(PageId(page), &b).is_err());
        }

        #[test]
        fn table_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ChecksumTable::decode(Path::new("t"), &bytes, 128);
        }

        #[test]
        fn table_encode_decode_round_trip(pages in proptest::collection::btree_map(0u64..64, 1u8..255, 0..20)) {
            let t = ChecksumTable::new(64).unwrap();
            for (p, fill) in &pages {
                t.seal(PageId(*p), &[*fill; 64]).unwrap();
            }
            let back = ChecksumTable::decode(Path::new("t"), &t.encode(), 64).unwrap();
            for p in 0..64 {
                prop_assert_eq!(back.get(PageId(p)), t.get(PageId(p)));
            }
        }
    }
}
