//! [`ChecksumTable`]: the per-page checksums of the sidecar placement, in
//! memory, and the lookups that verify a page against them.
//!
//! The byte layout of the base file is in the type's docs (its codec is
//! `base.rs`); the entry bits are in `entries.rs`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use super::base::{decode_base, encode_base};
use super::durable::Durable;
use super::entries::{
    check_page_size, grow, FREE, MAX_TABLE_PAGES, PRESENT, SETTLED_BITS, UNSETTLED,
};
use super::log::LogRecord;
use super::unsettled::State;
use super::{is_all_zero, page_crc};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::types::PageId;

/// What a sidecar table holds for one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Nothing: never sealed (or forgotten by a shrink).
    Absent,
    /// A checksum: settled, or of a write not yet settled.
    Sealed,
    /// Marked unallocated by the host, with no write since.
    Free,
}

impl Entry {
    /// What a raw entry holds.
    fn of(e: u64) -> Self {
        if e & (PRESENT | UNSETTLED) != 0 {
            Entry::Sealed
        } else if e & FREE != 0 {
            Entry::Free
        } else {
            Entry::Absent
        }
    }
}

/// A sidecar checksum table: one CRC per page, kept outside the pages.
///
/// Lookups are lock-free reads of an atomic per page (plus a lock on the
/// rare path of a page with a change not yet known durable); the table grows
/// (under a write lock) when a page past its end is sealed.
///
/// # Durability
///
/// A table from [`open`](Self::open) (or [`TableConfig`](super::TableConfig))
/// is durable at every moment: the [`CorruptionDetector`](crate::CorruptionDetector)
/// logs each new checksum durably before it writes the page, accepts the old
/// or the new checksum until the host's [`sync`](crate::CorruptionDetector::sync)
/// through the detector has made the page durable, and after a crash a page
/// holding its old or its new bytes verifies. Making changes durable costs
/// O(changed pages); see `checksum/durable.rs` for the protocol, its
/// costs and the crash analysis. A durable table is changed only through the
/// detector ([`seal`](Self::seal) refuses it). Dropping it writes nothing:
/// the records of the last settles become durable with the next change,
/// or with [`flush`](Self::flush) (which only narrows what a page accepts
/// after a crash; safety never needs it).
///
/// A table from [`new`](Self::new) lives in memory only; [`save`](Self::save)
/// writes a whole copy (O(table)), and after a crash a page written since the
/// last save fails verification against its older checksum. Use it for tests
/// and for hosts whose pages do not outlive the process.
///
/// # Base file layout
///
/// The base file is written whole, crash-safely (temporary file, fsync,
/// rename, fsync of the directory), in the 24-byte frame every such file of
/// the library has: magic `SHCT` (4 bytes), format version (u32), payload
/// length (u64), CRC32 of the payload (u32), CRC32 of the 20 header bytes
/// before it (u32). Integers are little-endian. Version 2 payload:
///
/// | offset | size | field                                                     |
/// |-------:|-----:|-----------------------------------------------------------|
/// | 0      | 4    | page size                                                 |
/// | 4      | 8    | generation (which log files continue it, see `checksum/durable.rs`) |
/// | 12     | 8    | sequence number the log of this generation starts at      |
/// | 20     | 8    | entry count `n`                                           |
/// | 28     | 8·n  | entries (below)                                           |
///
/// An entry (u64) is one of: 0, no checksum; bit 32 set and bits 0..32 the
/// CRC32, a checksum; exactly bit 33, the host said the page is unallocated
/// ([`mark_free`](Self::mark_free)): verifying it answers
/// [`Error::PageUnallocated`], not a corruption, until the page is written
/// again. Any other value is refused when the file is decoded.
///
/// Version 1 (still read) has no generation and sequence fields: page size,
/// entry count, entries (of the same kinds); it reads as generation 0
/// starting at sequence 1.
#[derive(Debug)]
pub struct ChecksumTable {
    pub(super) page_size: usize,
    pub(super) entries: RwLock<Vec<AtomicU64>>,
    pub(super) durable: Option<Durable>,
}

impl ChecksumTable {
    /// An empty table for pages of `page_size` bytes, in memory only.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a page size below [`MIN_PAGE_SIZE`](super::MIN_PAGE_SIZE).
    pub fn new(page_size: usize) -> Result<Self> {
        check_page_size(page_size)?;
        Ok(ChecksumTable {
            page_size,
            entries: RwLock::new(Vec::new()),
            durable: None,
        })
    }

    /// Whether the table is durable (from [`open`](Self::open)) rather than
    /// in memory only.
    #[must_use]
    pub fn is_durable(&self) -> bool {
        self.durable.is_some()
    }

    /// The page size the table was made for.
    #[must_use]
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The raw entry of `page` (0 when past the end).
    pub(super) fn raw_entry(&self, page: PageId) -> u64 {
        let entries = self.entries.read();
        usize::try_from(page.0)
            .ok()
            .and_then(|i| entries.get(i))
            .map_or(0, |e| e.load(Ordering::Acquire))
    }

    /// Whether `page` has exactly one accepted checksum: a settled one and
    /// no write of unknown fate since. Bytes that verify against such a page
    /// are its current contents, wherever they were read from.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn is_settled(&self, page: PageId) -> bool {
        let e = self.raw_entry(page);
        e & PRESENT != 0 && e & UNSETTLED == 0
    }

    /// What the table holds for `page`, in one look.
    pub(crate) fn entry(&self, page: PageId) -> Entry {
        Entry::of(self.raw_entry(page))
    }

    /// What the table holds for each of the pages `first .. first + count`,
    /// into `out` (cleared first), in one look at the entries: a batch's
    /// worth of [`entry`](Self::entry) without a lock per page. Pages past
    /// the table's end are left out (they hold nothing).
    pub(crate) fn entries_of(&self, first: PageId, count: u64, out: &mut Vec<Entry>) {
        out.clear();
        let entries = self.entries.read();
        let start = usize::try_from(first.0).unwrap_or(usize::MAX);
        let n = usize::try_from(count).unwrap_or(usize::MAX);
        let have = entries.get(start..).unwrap_or(&[]);
        out.extend(
            have.iter()
                .take(n)
                .map(|e| Entry::of(e.load(Ordering::Acquire))),
        );
    }

    /// The newest CRC recorded for `page`, if any: for a durable table with
    /// an unsettled change, the checksum of the bytes written last.
    #[must_use]
    pub fn get(&self, page: PageId) -> Option<u32> {
        let e = self.raw_entry(page);
        if e & UNSETTLED != 0 {
            if let Some(crc) = self.durable.as_ref().and_then(|d| d.newest(self, page)) {
                return Some(crc);
            }
        }
        (e & PRESENT != 0).then_some(e as u32)
    }

    /// Records the checksum of `buf` as the contents of `page` in an
    /// in-memory table.
    ///
    /// # Errors
    /// [`Error::BufferSize`] for a buffer that is not one page;
    /// [`Error::PageOutOfRange`] for a page id at or past
    /// [`MAX_TABLE_PAGES`]; [`Error::InvalidArgument`] for an all-zero page,
    /// which could not be told apart from a lost one (see the
    /// [module docs](super#sidecar-table)), when the table cannot grow to
    /// the page, or when the table is durable (its changes must be ordered
    /// with the page writes, which
    /// [`CorruptionDetector::write_sealed`](crate::CorruptionDetector::write_sealed)
    /// does).
    pub fn seal(&self, page: PageId, buf: &[u8]) -> Result<()> {
        let crc = self.sealable(page, buf, false)?;
        if self.is_durable() {
            return Err(Error::InvalidArgument {
                what: "table",
                reason: format!(
                    "page {page}: a durable checksum table is changed only through CorruptionDetector::write_sealed, which logs the checksum before the page is written"
                ),
            });
        }
        self.record(page, crc)
    }

    /// Checks that `buf` may be sealed as `page` and returns its checksum,
    /// without recording it. An all-zero page is refused unless `zero_ok` (a
    /// host write of zeros through the detector, see the module docs).
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

    /// Records `crc` as the settled checksum of `page`, growing the table as
    /// needed and clearing an unallocated mark (in-memory tables; the
    /// durable state changes through intents).
    pub(crate) fn record(&self, page: PageId, crc: u32) -> Result<()> {
        self.update_entry(page, |_| PRESENT | u64::from(crc))
    }

    /// Replaces the entry of `page` with `f(entry)`, growing the table to
    /// the page first when it is past the end.
    pub(super) fn update_entry(&self, page: PageId, f: impl FnOnce(u64) -> u64) -> Result<()> {
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
                e.store(f(e.load(Ordering::Acquire)), Ordering::Release);
                return Ok(());
            }
        }
        let mut entries = self.entries.write();
        grow(&mut entries, idx + 1).map_err(|reason| Error::InvalidArgument {
            what: "page",
            reason: format!("cannot grow the checksum table to page {page}: {reason}"),
        })?;
        let e = &entries[idx];
        e.store(f(e.load(Ordering::Acquire)), Ordering::Release);
        Ok(())
    }

    /// Forgets the checksums of pages at and past `page_count` (the store
    /// shrank); a page written there later is sealed afresh.
    ///
    /// A durable table logs the change and makes it durable before it
    /// returns, so call it only once the store's shrink is durable (a crash
    /// in between would leave pages without checksums);
    /// [`CorruptionDetector::resize`](crate::CorruptionDetector::resize)
    /// syncs the store first.
    ///
    /// # Errors
    /// For a durable table, [`Error::Stalled`] when
    /// the log's write or fsync failed retryably (retry after the resume),
    /// or [`Error::Poisoned`]; an in-memory table
    /// never fails.
    pub fn truncate(&self, page_count: u64) -> Result<()> {
        if let Some(d) = &self.durable {
            return d.truncate(self, page_count);
        }
        self.truncate_entries(page_count);
        Ok(())
    }

    pub(super) fn truncate_entries(&self, page_count: u64) {
        let mut entries = self.entries.write();
        let keep = usize::try_from(page_count).unwrap_or(usize::MAX);
        if keep < entries.len() {
            entries.truncate(keep);
            entries.shrink_to_fit();
        }
    }

    /// Number of entry slots (pages up to the highest one ever sealed).
    pub(super) fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether `page` is marked unallocated ([`mark_free`](Self::mark_free))
    /// and not written since. A durable table keeps the mark of a page
    /// written since until a sync settles the write, so that a crash before
    /// leaves the page free if it does not hold the new bytes; meanwhile the
    /// page counts as in use once a write of it is in flight or has
    /// returned (a write that failed leaves it free).
    #[must_use]
    pub fn is_free(&self, page: PageId) -> bool {
        let e = self.raw_entry(page);
        e & FREE != 0
            && (e & UNSETTLED == 0
                || self
                    .durable
                    .as_ref()
                    .is_none_or(|d| !d.written_since_mark(self, page)))
    }

    /// Verifies `buf` as the contents of `page`. A page of a durable table
    /// with a change not yet known durable verifies with the checksum of any
    /// of its unsettled versions as well as its settled one.
    ///
    /// # Errors
    /// [`Error::MissingChecksum`] when no checksum was recorded;
    /// [`Error::PageUnallocated`] for a page marked free whose bytes match
    /// no checksum (a durable table keeps the mark, and accepts the bytes of
    /// a write since, until a sync settles that write);
    /// [`Error::ZeroedPage`] or [`Error::ChecksumMismatch`] when the bytes do
    /// not match; [`Error::BufferSize`] for a buffer that is not one page.
    pub fn verify(&self, page: PageId, buf: &[u8]) -> Result<()> {
        self.check_len(buf)?;
        let e = self.raw_entry(page);
        if e & (PRESENT | UNSETTLED) == 0 {
            if e & FREE != 0 {
                return Err(Error::PageUnallocated { page });
            }
            return Err(Error::MissingChecksum { page });
        }
        let actual = page_crc(page, buf);
        if e & PRESENT != 0 && e as u32 == actual {
            return Ok(());
        }
        // A durable table looks again under the lock that every change
        // takes, so a settle racing with this read is no false alarm.
        if self
            .durable
            .as_ref()
            .is_some_and(|d| d.accepts(self, page, actual))
        {
            return Ok(());
        }
        // Looked at again: the page may have been freed meanwhile.
        if self.is_free(page) {
            return Err(Error::PageUnallocated { page });
        }
        if is_all_zero(buf) {
            return Err(Error::ZeroedPage { page });
        }
        match self.get(page) {
            Some(expected) => Err(Error::ChecksumMismatch {
                page,
                expected,
                actual,
            }),
            // Forgotten between the two looks (a concurrent truncate).
            None => Err(Error::MissingChecksum { page }),
        }
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

    /// Encodes the table as a base file (layout in the type docs) holding
    /// each page's newest checksum or its unallocated mark, generation 0: a
    /// standalone copy that
    /// [`decode`](Self::decode) reads back and [`open`](Self::open) accepts
    /// as a base.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        // The unsettled versions first: taking their lock while holding the
        // entries would invert the lock order of the write path.
        let newest = self
            .durable
            .as_ref()
            .map(|d| d.newest_of_all())
            .unwrap_or_default();
        let entries = self.entries.read();
        let n = entries.len();
        let value = (0..n).map(|i| match newest.get(&(i as u64)) {
            Some(&crc) => PRESENT | u64::from(crc),
            None => entries[i].load(Ordering::Acquire) & SETTLED_BITS,
        });
        encode_base(self.page_size, 0, 1, n, value)
    }

    /// Decodes a base file read from `path` (used in messages) into an
    /// in-memory table.
    ///
    /// # Errors
    /// [`Error::CorruptFile`] / [`Error::UnsupportedVersion`] for a damaged or
    /// foreign file; [`Error::PageSizeMismatch`] when it was made for another
    /// page size.
    pub fn decode(path: &Path, bytes: &[u8], page_size: usize) -> Result<Self> {
        let base = decode_base(path, bytes, page_size)?;
        let t = ChecksumTable::new(page_size)?;
        *t.entries.write() = base.entries.into_iter().map(AtomicU64::new).collect();
        Ok(t)
    }

    /// Writes a whole copy of the table to `path` crash-safely (O(table);
    /// a durable table needs no save, see the type docs).
    ///
    /// # Errors
    /// [`Error::Io`] naming the step that failed.
    pub fn save(&self, path: &Path) -> Result<()> {
        fsutil::atomic_write(path, &self.encode())
    }

    /// Loads the table at `path` into memory, or an empty one when the file
    /// does not exist.
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

/// The lookups and the truncation of a durable table's state, which read
/// and change the table's entries.
impl Durable {
    /// Whether `page`, marked unallocated, has a write since whose fate is
    /// known to be written (or is being written): it is in use again.
    pub(super) fn written_since_mark(&self, table: &ChecksumTable, page: PageId) -> bool {
        let un = self.unsettled.lock();
        let e = table.raw_entry(page);
        if e & FREE == 0 {
            return true;
        }
        un.get(e, page.0).is_some_and(|vs| {
            vs.iter()
                .any(|v| v.effective(&un.outcomes) != State::Unknown)
        })
    }

    /// The checksum of the newest unsettled version of `page`.
    pub(super) fn newest(&self, table: &ChecksumTable, page: PageId) -> Option<u32> {
        let un = self.unsettled.lock();
        let e = table.raw_entry(page);
        un.get(e, page.0)?.last().map(|v| v.crc)
    }

    /// Whether `crc` is the settled checksum of `page` or one of its
    /// unsettled versions' (looked at under the lock every change takes).
    pub(super) fn accepts(&self, table: &ChecksumTable, page: PageId, crc: u32) -> bool {
        let un = self.unsettled.lock();
        let e = table.raw_entry(page);
        (e & PRESENT != 0 && e as u32 == crc)
            || un
                .get(e, page.0)
                .is_some_and(|vs| vs.iter().any(|v| v.crc == crc))
    }

    pub(super) fn truncate(&self, table: &ChecksumTable, page_count: u64) -> Result<()> {
        self.log.resume_if_due(&*self.storage);
        let _files = self.files.lock();
        let seq = {
            let mut un = self.unsettled.lock();
            let pending_past = un.slots().iter().any(|s| s.page >= page_count);
            if table.len() as u64 <= page_count && !pending_past {
                return Ok(());
            }
            let first = u32::try_from(page_count).expect("below the table's length, so below 2^32");
            let seq = {
                let mut log = self.log.state.lock();
                log.check()?;
                log.append(LogRecord::Drop {
                    first,
                    last: u32::MAX,
                })
            };
            {
                let entries = table.entries.read();
                let keep = entries.len().min(page_count as usize);
                un.retain(&entries[..keep], |_| None);
            }
            table.truncate_entries(page_count);
            seq
        };
        self.log.make_durable(&*self.storage, seq)
    }
}

#[cfg(test)]
mod tests {
    use super::super::base::BASE_MAGIC;
    use super::super::MIN_PAGE_SIZE;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entries_of_a_range_match_one_look_each() {
        let t = ChecksumTable::new(64).unwrap();
        t.seal(PageId(1), &[1u8; 64]).unwrap();
        t.mark_free(PageId(2)).unwrap();
        t.seal(PageId(4), &[4u8; 64]).unwrap();
        let mut out = vec![Entry::Sealed; 9];
        t.entries_of(PageId(0), 8, &mut out);
        // Pages past the end (5 on) are left out.
        assert_eq!(out.len(), 5);
        for (p, e) in out.iter().enumerate() {
            assert_eq!(*e, t.entry(PageId(p as u64)), "page {p}");
        }
        t.entries_of(PageId(2), 2, &mut out);
        assert_eq!(out, [Entry::Free, Entry::Absent]);
        t.entries_of(PageId(1 << 40), 3, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn zero_page_is_refused() {
        for size in [64, 4096, 8192] {
            let t = ChecksumTable::new(size).unwrap();
            assert!(t.seal(PageId(0), &vec![0u8; size]).is_err());
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

    #[test]
    fn free_marks_verify_as_unallocated_and_other_flags_are_refused() {
        let t = ChecksumTable::new(64).unwrap();
        t.seal(PageId(1), &[3u8; 64]).unwrap();
        t.mark_free(PageId(1)).unwrap();
        t.mark_free(PageId(4)).unwrap();
        for p in [1, 4] {
            assert!(t.is_free(PageId(p)) && t.get(PageId(p)).is_none());
            assert!(matches!(
                t.verify(PageId(p), &[3u8; 64]),
                Err(Error::PageUnallocated { .. })
            ));
        }
        assert_eq!(t.entry(PageId(4)), Entry::Free);
        assert_eq!(t.entry(PageId(2)), Entry::Absent);
        t.seal(PageId(1), &[5u8; 64]).unwrap();
        assert!(!t.is_free(PageId(1)) && t.verify(PageId(1), &[5u8; 64]).is_ok());
        assert_eq!(t.entry(PageId(1)), Entry::Sealed);
        // On disk: exactly bit 33; with any other bit it is damage.
        for (value, ok) in [
            (FREE, true),
            (FREE | 1, false),
            (FREE | PRESENT, false),
            (1 << 34, false),
        ] {
            let bytes = encode_base(64, 0, 1, 1, std::iter::once(value));
            let d = decode_base(Path::new("b"), &bytes, 64);
            assert_eq!(d.is_ok(), ok, "{value:#x}");
        }
        // Version 1 files carry the mark too.
        let mut payload = Vec::new();
        payload.extend_from_slice(&64u32.to_le_bytes());
        payload.extend_from_slice(&1u64.to_le_bytes());
        payload.extend_from_slice(&FREE.to_le_bytes());
        let v1 = fsutil::encode_framed(BASE_MAGIC, 1, &payload);
        assert!(ChecksumTable::decode(Path::new("v1"), &v1, 64)
            .unwrap()
            .is_free(PageId(0)));
    }

    #[test]
    fn version_1_files_are_still_read() {
        let mut payload = Vec::new();
        payload.extend_from_slice(&256u32.to_le_bytes());
        payload.extend_from_slice(&2u64.to_le_bytes());
        payload.extend_from_slice(&0u64.to_le_bytes());
        payload.extend_from_slice(&(PRESENT | 0xDEAD_BEEF).to_le_bytes());
        let bytes = fsutil::encode_framed(BASE_MAGIC, 1, &payload);
        let base = decode_base(Path::new("v1"), &bytes, 256).unwrap();
        assert_eq!((base.generation, base.next_seq), (0, 1));
        let t = ChecksumTable::decode(Path::new("v1"), &bytes, 256).unwrap();
        assert_eq!(t.get(PageId(0)), None);
        assert_eq!(t.get(PageId(1)), Some(0xDEAD_BEEF));
    }

    proptest! {
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
        fn table_encode_decode_round_trip(pages in proptest::collection::btree_map(0u64..64, 0u8..255, 0..20)) {
            let t = ChecksumTable::new(64).unwrap();
            for (p, fill) in &pages {
                // Fill 0 stands for a page the host freed.
                if *fill == 0 {
                    t.mark_free(PageId(*p)).unwrap();
                } else {
                    t.seal(PageId(*p), &[*fill; 64]).unwrap();
                }
            }
            let back = ChecksumTable::decode(Path::new("t"), &t.encode(), 64).unwrap();
            for p in 0..64 {
                prop_assert_eq!(back.get(PageId(p)), t.get(PageId(p)));
                prop_assert_eq!(back.is_free(PageId(p)), pages.get(&p) == Some(&0));
            }
            prop_assert_eq!(back.encode(), t.encode());
        }

        #[test]
        fn base_damage_is_a_typed_error(gen in any::<u64>(), seq in any::<u64>(), crcs in proptest::collection::vec(proptest::option::of(proptest::option::of(any::<u32>())), 0..16), flip in any::<usize>()) {
            // None: no checksum; Some(None): unallocated; Some(Some(crc)).
            let entries: Vec<u64> = crcs.iter().map(|c| match c {
                None => 0,
                Some(None) => FREE,
                Some(Some(c)) => PRESENT | u64::from(*c),
            }).collect();
            let good = encode_base(128, gen, seq, entries.len(), entries.iter().copied());
            let back = decode_base(Path::new("b"), &good, 128).unwrap();
            prop_assert_eq!((back.generation, back.next_seq), (gen, seq));
            prop_assert_eq!(&back.entries, &entries);
            let mut bad = good.clone();
            bad[flip % good.len()] ^= 1 << (flip % 8);
            let e = decode_base(Path::new("b"), &bad, 128);
            prop_assert!(matches!(e, Err(Error::CorruptFile { .. } | Error::UnsupportedVersion { .. } | Error::PageSizeMismatch { .. })), "{:?}", e);
            let cut = flip % good.len();
            let short = decode_base(Path::new("b"), &good[..cut], 128);
            prop_assert!(matches!(short, Err(Error::CorruptFile { .. })), "cut {}", cut);
        }
    }
}
