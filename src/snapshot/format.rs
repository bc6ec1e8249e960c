//! The snapshot file and manifest formats, and their byte-level decoders.
//!
//! Every integer is little-endian. A snapshot file is named
//! `snap-<id as 16 lowercase hex digits>.shs` and is laid out as
//! header ‖ chunks ‖ index ‖ footer.
//!
//! # Header (64 bytes, at offset 0)
//!
//! | offset | size | field                                                         |
//! |-------:|-----:|---------------------------------------------------------------|
//! | 0      | 4    | magic `SHSN`                                                  |
//! | 4      | 4    | format version (2 is written; 1 is still read, see below)     |
//! | 8      | 8    | snapshot id (≥ 1, < 2⁶⁴ − 1)                                   |
//! | 16     | 8    | parent id; 0 = full snapshot, else incremental on that parent |
//! | 24     | 8    | LSN the snapshot's state corresponds to                       |
//! | 32     | 8    | creation time, Unix milliseconds                              |
//! | 40     | 4    | page size in bytes (64 ..= 1 MiB)                             |
//! | 44     | 4    | pages per chunk `k` (`k · page size` ≤ 64 MiB)                |
//! | 48     | 8    | page count `P` of the store at the snapshot                   |
//! | 56     | 4    | flags (below)                                                 |
//! | 60     | 4    | CRC32 of bytes 0..60                                          |
//!
//! Flags: bit 0 (`pages verified`) is set when the pages were read through
//! a store that verifies its reads
//! ([`PageStore::verifies_reads`](crate::PageStore::verifies_reads): the
//! [`CorruptionDetector`](crate::CorruptionDetector)), so every page in the
//! file verified when it was read. Every other bit is 0, and a reader
//! refuses a file with another bit set. The field was reserved and 0 in
//! files written before the flag existed (format 1 and early format 2),
//! which therefore read as not verified: a restore into a store that seals
//! its pages checks their pages first (see the `restore` module of
//! `snapshot`).
//!
//! # Chunks (from offset 64, back to back)
//!
//! The stored pages, in ascending page order, are cut into chunks of `k`
//! pages (the last may be shorter). Each chunk is the lz4 block
//! ([`lz4_flex::block`]) of its pages' bytes concatenated. A full snapshot
//! stores every page `0..P`; an incremental one stores only the pages that
//! changed since its parent.
//!
//! # Index (right after the last chunk)
//!
//! | offset        | size  | field                                                                |
//! |--------------:|------:|----------------------------------------------------------------------|
//! | 0             | 4     | chunk count `C` (= ⌈M / k⌉)                                           |
//! | 4             | 8     | stored page count `M` (= `P` for a full snapshot)                     |
//! | 12            | 8     | page-sum count, = `P`                                                 |
//! | 20            | 4     | metadata blob count `B` (≤ 64)                                        |
//! | 24            | 20·C  | per chunk: file offset u64, compressed length u32, raw length u32, CRC32 of the compressed bytes u32 |
//! | …             | 8·M   | stored page ids, strictly ascending (incremental snapshots only)      |
//! | …             | 8·P   | the fingerprint (format 2) of every page `0..P` of the full state at the snapshot |
//! | …             | …     | `B` blobs: name length u16, UTF-8 name (1..=255 bytes), data length u32 (≤ 1 MiB), data |
//!
//! The page fingerprint is XXH3-64 of the page's bytes seeded with its page
//! number (see the `fingerprint` module of `snapshot` for why it is not a
//! CRC). The fingerprints describe the *whole* state, not only the stored
//! pages, so an incremental snapshot finds changed pages by comparing them
//! with its parent's without decompressing anything, and every page read
//! back is checked against its fingerprint.
//!
//! Every page at or past the parent's page count is stored in an
//! incremental snapshot (it is new, or came back after the store shrank),
//! so a page is always found in the newest member of a chain that has it
//! and no older copy from before a shrink can be read as part of the state.
//! Readers check this for every chain they use.
//!
//! ## Format 1
//!
//! Format 1 differs only in the page sums: 4 bytes per page, [`page_crc`]
//! (CRC32 of the page number ‖ the page). It is still read, and its CRCs
//! still check every page read back (for a trailer-sealed page, checking the
//! whole-page CRC against the residue is the same as checking the trailer).
//! They cannot tell changed pages apart, though — for a page that carries its
//! own CRC, the whole-page CRC is one constant — so a format-1 snapshot is
//! never used for comparison: when the head is of format 1, its
//! fingerprints are computed once by decoding its chain (every page checked
//! against its CRC) before an incremental snapshot compares with them.
//! Chains may mix formats; new snapshots are always written in format 2.
//!
//! # Footer (32 bytes, at the end of the file)
//!
//! | offset | size | field                       |
//! |-------:|-----:|-----------------------------|
//! | 0      | 8    | index offset                |
//! | 8      | 8    | index length                |
//! | 16     | 4    | CRC32 of the index          |
//! | 20     | 4    | reserved, 0                 |
//! | 24     | 4    | magic `SHSE`                |
//! | 28     | 4    | CRC32 of footer bytes 0..28 |
//!
//! A reader checks the header CRC, the footer CRC, that the chunks are
//! contiguous from offset 64 to the index and the index runs up to the footer,
//! the index CRC, and every count against the bytes that hold it before it
//! allocates; then, per chunk it reads, the chunk CRC, the decompressed length
//! and the sum of every page in it. So a truncated, zeroed or garbled file is
//! a typed error ([`Error::CorruptFile`], [`Error::UnsupportedVersion`]),
//! never a panic and never wrong pages.
//!
//! Every allocation is bounded by the input: the index is at most the file;
//! every count is checked against the bytes that hold it; a chunk's raw
//! length must be exactly its pages times the page size *and* at most
//! [`LZ4_MAX_RATIO`] (255) times its compressed length — lz4 cannot expand
//! more than that — so decoding a file of `n` bytes never holds more than
//! about 256·`n` bytes, whatever the header declares.
//!
//! # Manifest (`MANIFEST`)
//!
//! The manifest lists the snapshots; it is a framed file (magic `SHSM`,
//! version 1; frame described in the crate's `fsutil` module: magic, version,
//! payload length u64, payload CRC32, header CRC32, payload). Its payload:
//!
//! | offset | size | field                                                    |
//! |-------:|-----:|----------------------------------------------------------|
//! | 0      | 4    | page size                                                |
//! | 4      | 8    | next snapshot id (< 2⁶⁴ − 1)                              |
//! | 12     | 4    | entry count `n` (≤ 1 000 000)                            |
//! | 16     | …    | `n` entries, ascending id, each:                         |
//! |        | 8    | · id (≥ 1, < next id)                                    |
//! |        | 8    | · parent id, 0 = full (else an earlier listed id)        |
//! |        | 8    | · LSN                                                    |
//! |        | 8    | · creation time, Unix milliseconds                       |
//! |        | 8    | · page count                                             |
//! |        | 8    | · stored page count                                      |
//! |        | 8    | · file length in bytes                                   |
//! |        | 2    | · file name length                                       |
//! |        | …    | · file name: `snap-<id, 16 lowercase hex digits>.shs`    |
//!
//! File names are validated on decode so that a manifest can never make the
//! library read or delete a file outside its snapshot directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fingerprint::page_fingerprint;
use crate::checksum::{page_crc, MIN_PAGE_SIZE};
use crate::error::{Error, Result};
use crate::types::Lsn;

/// Length of the snapshot file header.
pub(crate) const HEADER_LEN: usize = 64;
/// Length of the snapshot file footer.
pub(crate) const FOOTER_LEN: usize = 32;
const MAGIC: [u8; 4] = *b"SHSN";
/// Header flag: the pages were read through a store that verifies its reads.
const FLAG_PAGES_VERIFIED: u32 = 1;
const FOOTER_MAGIC: [u8; 4] = *b"SHSE";
/// The snapshot file version this build writes (and the newest it reads).
pub(crate) const VERSION: u32 = 2;
/// The oldest snapshot file version this build reads (4-byte page CRCs).
pub(crate) const VERSION_CRC32: u32 = 1;
/// The most an lz4 block can expand: each compressed byte yields at most 255
/// raw bytes (a match-length byte of 255), and every other part of a
/// sequence yields fewer per byte.
pub const LZ4_MAX_RATIO: u64 = 255;
/// Largest page size a snapshot holds.
pub(crate) const MAX_PAGE_SIZE: usize = 1 << 20;
/// Largest raw chunk.
pub(crate) const MAX_CHUNK_BYTES: usize = 64 << 20;
const CHUNK_ENTRY_LEN: usize = 20;
const INDEX_FIXED_LEN: usize = 24;
/// Most metadata blobs in one snapshot.
pub(crate) const MAX_BLOBS: usize = 64;
/// Longest metadata blob name in bytes.
pub(crate) const MAX_BLOB_NAME: usize = 255;
/// Largest metadata blob in bytes.
pub(crate) const MAX_BLOB_LEN: usize = 1 << 20;

/// The fixed facts of one snapshot file, from its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The file's format version ([`VERSION`] for every file this build writes).
    pub version: u32,
    pub id: u64,
    pub parent: Option<u64>,
    pub lsn: Lsn,
    pub created_unix_ms: u64,
    pub page_size: usize,
    pub chunk_pages: usize,
    pub page_count: u64,
    /// Whether the pages were read through a store that verifies its reads
    /// (header flag bit 0).
    pub pages_verified: bool,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        debug_assert_eq!(self.version, VERSION, "only the current format is written");
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.id.to_le_bytes());
        b[16..24].copy_from_slice(&self.parent.unwrap_or(0).to_le_bytes());
        b[24..32].copy_from_slice(&self.lsn.0.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        b[40..44].copy_from_slice(&(self.page_size as u32).to_le_bytes());
        b[44..48].copy_from_slice(&(self.chunk_pages as u32).to_le_bytes());
        b[48..56].copy_from_slice(&self.page_count.to_le_bytes());
        let flags = if self.pages_verified {
            FLAG_PAGES_VERIFIED
        } else {
            0
        };
        b[56..60].copy_from_slice(&flags.to_le_bytes());
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(path: &Path, b: &[u8]) -> Result<Header> {
        if b.len() < HEADER_LEN {
            return Err(Error::corrupt_file(
                path,
                0,
                format!(
                    "{} bytes is shorter than the {HEADER_LEN}-byte header",
                    b.len()
                ),
            ));
        }
        if crc32fast::hash(&b[..60]) != le32(&b[60..64]) {
            return Err(Error::corrupt_file(path, 60, "header checksum mismatch"));
        }
        if b[0..4] != MAGIC {
            return Err(Error::corrupt_file(
                path,
                0,
                "not a snapshot file (bad magic)",
            ));
        }
        let version = le32(&b[4..8]);
        if !(VERSION_CRC32..=VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: VERSION,
            });
        }
        let id = le64(&b[8..16]);
        let parent = le64(&b[16..24]);
        let page_size = le32(&b[40..44]) as usize;
        let chunk_pages = le32(&b[44..48]) as usize;
        let bad = |off: u64, why: String| Err(Error::corrupt_file(path, off, why));
        if id == 0 || id == u64::MAX {
            return bad(8, format!("snapshot id {id} is reserved"));
        }
        if parent >= id {
            return bad(
                16,
                format!("parent {parent} is not older than snapshot {id}"),
            );
        }
        if !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) {
            return bad(40, format!("page size {page_size} is out of range"));
        }
        if chunk_pages == 0 || chunk_pages.saturating_mul(page_size) > MAX_CHUNK_BYTES {
            return bad(44, format!("{chunk_pages} pages per chunk is out of range"));
        }
        let flags = le32(&b[56..60]);
        if flags & !FLAG_PAGES_VERIFIED != 0 {
            return bad(
                56,
                format!("header flags {flags:#x} hold bits this version does not know"),
            );
        }
        Ok(Header {
            version,
            id,
            parent: (parent != 0).then_some(parent),
            lsn: Lsn(le64(&b[24..32])),
            created_unix_ms: le64(&b[32..40]),
            page_size,
            chunk_pages,
            page_count: le64(&b[48..56]),
            pages_verified: flags & FLAG_PAGES_VERIFIED != 0,
        })
    }
}

/// Where one chunk lives and how to check it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkEntry {
    pub offset: u64,
    pub compressed_len: u32,
    pub raw_len: u32,
    pub crc: u32,
}

/// The per-page sums of a snapshot's index, one per page of the full state.
#[derive(Clone, Debug)]
pub(crate) enum PageSums {
    /// Format 1: [`page_crc`] of every page. Checks a page read back, but
    /// cannot tell changed pages apart (see the module docs).
    Crc32(Vec<u32>),
    /// Format 2: the fingerprint of every page.
    Fingerprints(Arc<Vec<u64>>),
}

impl PageSums {
    /// Whether `bytes` are the contents of `page` that the sums describe.
    /// `false` for a page past them.
    pub fn matches(&self, page: u64, bytes: &[u8]) -> bool {
        let Ok(i) = usize::try_from(page) else {
            return false;
        };
        match self {
            PageSums::Crc32(v) => v
                .get(i)
                .is_some_and(|&c| page_crc(crate::types::PageId(page), bytes) == c),
            PageSums::Fingerprints(v) => v
                .get(i)
                .is_some_and(|&f| page_fingerprint(page, bytes) == f),
        }
    }

    /// The fingerprints, when the file has them (format 2).
    pub fn fingerprints(&self) -> Option<&Arc<Vec<u64>>> {
        match self {
            PageSums::Crc32(_) => None,
            PageSums::Fingerprints(f) => Some(f),
        }
    }
}

/// The decoded index of a snapshot file.
#[derive(Clone, Debug)]
pub(crate) struct Index {
    pub chunks: Vec<ChunkEntry>,
    /// Stored page ids; `None` for a full snapshot (every page `0..P`).
    pub pages: Option<Vec<u64>>,
    /// A sum of every page of the full state.
    pub sums: PageSums,
    pub metadata: Vec<(String, Vec<u8>)>,
}

impl Index {
    /// How many pages the file stores.
    pub fn stored_pages(&self, page_count: u64) -> u64 {
        self.pages.as_ref().map_or(page_count, |p| p.len() as u64)
    }

    /// How many of the stored pages are at or past `from`.
    pub fn stored_from(&self, page_count: u64, from: u64) -> u64 {
        match &self.pages {
            None => page_count.saturating_sub(from),
            Some(p) => (p.len() - p.partition_point(|&x| x < from)) as u64,
        }
    }
}

pub(crate) fn encode_index(
    chunks: &[ChunkEntry],
    pages: Option<&[u64]>,
    stored: u64,
    fingerprints: &[u64],
    metadata: &[(String, Vec<u8>)],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(
        INDEX_FIXED_LEN
            + chunks.len() * CHUNK_ENTRY_LEN
            + pages.map_or(0, |p| p.len() * 8)
            + fingerprints.len() * 8,
    );
    b.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    b.extend_from_slice(&stored.to_le_bytes());
    b.extend_from_slice(&(fingerprints.len() as u64).to_le_bytes());
    b.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
    for c in chunks {
        b.extend_from_slice(&c.offset.to_le_bytes());
        b.extend_from_slice(&c.compressed_len.to_le_bytes());
        b.extend_from_slice(&c.raw_len.to_le_bytes());
        b.extend_from_slice(&c.crc.to_le_bytes());
    }
    if let Some(pages) = pages {
        for p in pages {
            b.extend_from_slice(&p.to_le_bytes());
        }
    }
    for f in fingerprints {
        b.extend_from_slice(&f.to_le_bytes());
    }
    for (name, data) in metadata {
        b.extend_from_slice(&(name.len() as u16).to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(data);
    }
    b
}

/// A bounds-checked reader over untrusted bytes that names the file offset
/// of whatever it finds wrong.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: u64,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(path: &'a Path, bytes: &'a [u8], base: u64) -> Self {
        Cursor {
            bytes,
            pos: 0,
            base,
            path,
        }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn err(&self, reason: impl Into<String>) -> Error {
        Error::corrupt_file(self.path, self.offset(), reason)
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(self.err(format!(
                "{what} needs {n} bytes but only {} remain",
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(le32(self.take(4, what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(le64(self.take(8, what)?))
    }

    /// Fails unless `count` items of `item_len` bytes fit in what remains, so
    /// that no count read from the file drives an allocation by itself.
    pub(crate) fn check_fits(&self, count: u64, item_len: usize, what: &str) -> Result<usize> {
        match count.checked_mul(item_len as u64) {
            Some(n) if n <= self.remaining() as u64 => Ok(count as usize),
            _ => Err(self.err(format!(
                "{count} {what} do not fit in the {} remaining bytes",
                self.remaining()
            ))),
        }
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

fn decode_index(path: &Path, bytes: &[u8], base: u64, h: &Header) -> Result<Index> {
    let mut c = Cursor::new(path, bytes, base);
    let n_chunks = u64::from(c.u32("chunk count")?);
    let stored = c.u64("stored page count")?;
    let n_sums = c.u64("page sum count")?;
    let n_blobs = c.u32("metadata count")? as usize;
    if n_sums != h.page_count {
        return Err(c.err(format!(
            "index has {n_sums} page sums for a store of {} pages",
            h.page_count
        )));
    }
    if h.parent.is_none() && stored != h.page_count {
        return Err(c.err(format!(
            "full snapshot stores {stored} of {} pages",
            h.page_count
        )));
    }
    if stored > h.page_count {
        return Err(c.err(format!(
            "{stored} stored pages exceed the {} pages of the store",
            h.page_count
        )));
    }
    if n_chunks != stored.div_ceil(h.chunk_pages as u64) {
        return Err(c.err(format!(
            "{n_chunks} chunks cannot hold {stored} pages of {} per chunk",
            h.chunk_pages
        )));
    }
    if n_blobs > MAX_BLOBS {
        return Err(c.err(format!("{n_blobs} metadata blobs exceed {MAX_BLOBS}")));
    }
    let n_chunks = c.check_fits(n_chunks, CHUNK_ENTRY_LEN, "chunk entries")?;
    let mut chunks = Vec::with_capacity(n_chunks);
    let mut expect_off = HEADER_LEN as u64;
    let mut left = stored;
    for i in 0..n_chunks {
        let e = ChunkEntry {
            offset: c.u64("chunk offset")?,
            compressed_len: c.u32("chunk length")?,
            raw_len: c.u32("chunk raw length")?,
            crc: c.u32("chunk CRC")?,
        };
        let pages = left.min(h.chunk_pages as u64);
        left -= pages;
        if e.offset != expect_off {
            return Err(c.err(format!(
                "chunk {i} starts at {}, expected {expect_off}",
                e.offset
            )));
        }
        if u64::from(e.raw_len) != pages * h.page_size as u64 {
            return Err(c.err(format!(
                "chunk {i} says {} raw bytes for {pages} pages",
                e.raw_len
            )));
        }
        if e.compressed_len == 0
            || e.compressed_len as usize
                > lz4_flex::block::get_maximum_output_size(e.raw_len as usize)
        {
            return Err(c.err(format!(
                "chunk {i} compressed length {} is impossible",
                e.compressed_len
            )));
        }
        // Bounds the buffer a chunk decodes into by the bytes that hold it.
        if u64::from(e.raw_len) > u64::from(e.compressed_len) * LZ4_MAX_RATIO {
            return Err(c.err(format!(
                "chunk {i} says {} raw bytes from {} compressed bytes; lz4 expands at most {LZ4_MAX_RATIO} : 1",
                e.raw_len, e.compressed_len
            )));
        }
        expect_off += u64::from(e.compressed_len);
        chunks.push(e);
    }
    if expect_off != base {
        return Err(c.err(format!(
            "chunks end at {expect_off} but the index starts at {base}"
        )));
    }
    let pages = if h.parent.is_some() {
        let m = c.check_fits(stored, 8, "page ids")?;
        let mut v = Vec::with_capacity(m);
        for _ in 0..m {
            let p = c.u64("page id")?;
            if p >= h.page_count || v.last().is_some_and(|&last| p <= last) {
                return Err(c.err(format!(
                    "page id {p} is out of order or past the {} pages",
                    h.page_count
                )));
            }
            v.push(p);
        }
        Some(v)
    } else {
        None
    };
    let sums = if h.version == VERSION_CRC32 {
        let n = c.check_fits(n_sums, 4, "page CRCs")?;
        let raw = c.take(n * 4, "page CRCs")?;
        PageSums::Crc32(raw.chunks_exact(4).map(le32).collect())
    } else {
        let n = c.check_fits(n_sums, 8, "page fingerprints")?;
        let raw = c.take(n * 8, "page fingerprints")?;
        PageSums::Fingerprints(Arc::new(raw.chunks_exact(8).map(le64).collect()))
    };
    let mut metadata = Vec::with_capacity(n_blobs);
    for _ in 0..n_blobs {
        let len = c.u16("blob name length")? as usize;
        if len == 0 || len > MAX_BLOB_NAME {
            return Err(c.err(format!("blob name length {len} is out of range")));
        }
        let name = std::str::from_utf8(c.take(len, "blob name")?)
            .map_err(|_| c.err("blob name is not UTF-8"))?
            .to_owned();
        let dlen = c.u32("blob length")? as usize;
        if dlen > MAX_BLOB_LEN {
            return Err(c.err(format!("blob of {dlen} bytes exceeds {MAX_BLOB_LEN}")));
        }
        metadata.push((name, c.take(dlen, "blob data")?.to_vec()));
    }
    if c.remaining() != 0 {
        return Err(c.err(format!(
            "{} unexpected bytes after the index",
            c.remaining()
        )));
    }
    Ok(Index {
        chunks,
        pages,
        sums,
        metadata,
    })
}

pub(crate) fn encode_footer(index_offset: u64, index: &[u8]) -> [u8; FOOTER_LEN] {
    let mut b = [0u8; FOOTER_LEN];
    b[0..8].copy_from_slice(&index_offset.to_le_bytes());
    b[8..16].copy_from_slice(&(index.len() as u64).to_le_bytes());
    b[16..20].copy_from_slice(&crc32fast::hash(index).to_le_bytes());
    b[24..28].copy_from_slice(&FOOTER_MAGIC);
    let crc = crc32fast::hash(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Positioned reads from a snapshot's bytes: a file or a slice.
pub(crate) trait ReadAt: Send + Sync {
    fn len(&self) -> u64;
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for Vec<u8> {
    fn len(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= self.len())
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }
}

/// An opened snapshot: header, footer and index checked; chunks read on demand.
pub(crate) struct SnapshotReader {
    src: Box<dyn ReadAt>,
    path: PathBuf,
    pub header: Header,
    pub index: Index,
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl SnapshotReader {
    /// Opens the snapshot file at `path`.
    ///
    /// # Errors
    /// [`Error::NotRegularFile`] for anything but a regular file (checked
    /// before it is opened, so a named pipe never blocks); [`Error::Io`]
    /// when it cannot be opened;
    /// [`Error::CorruptFile`] or [`Error::UnsupportedVersion`] when its
    /// header, footer or index does not check.
    pub fn open_file(path: &Path) -> Result<Self> {
        let f = crate::fsutil::open_regular(
            crate::fsutil::private_create_options().read(true),
            path,
            "opening",
        )?;
        Self::new(Box::new(f), path)
    }

    /// Checks header, footer and index of `src` (named `path` in errors).
    pub fn new(src: Box<dyn ReadAt>, path: &Path) -> Result<Self> {
        let len = src.len();
        let rd = |off: u64, buf: &mut [u8]| {
            src.read_exact_at(off, buf)
                .map_err(|e| Error::io(format!("reading {} at {off}", path.display()), e))
        };
        if len < (HEADER_LEN + FOOTER_LEN) as u64 {
            return Err(Error::corrupt_file(
                path,
                len,
                format!("file of {len} bytes is too short to be a snapshot"),
            ));
        }
        let mut hb = [0u8; HEADER_LEN];
        rd(0, &mut hb)?;
        let header = Header::decode(path, &hb)?;
        let mut fb = [0u8; FOOTER_LEN];
        let foot_off = len - FOOTER_LEN as u64;
        rd(foot_off, &mut fb)?;
        if crc32fast::hash(&fb[..28]) != le32(&fb[28..32]) {
            return Err(Error::corrupt_file(
                path,
                foot_off + 28,
                "footer checksum mismatch",
            ));
        }
        if fb[24..28] != FOOTER_MAGIC || le32(&fb[20..24]) != 0 {
            return Err(Error::corrupt_file(path, foot_off + 20, "bad footer magic"));
        }
        let index_off = le64(&fb[0..8]);
        let index_len = le64(&fb[8..16]);
        if index_off < HEADER_LEN as u64 || index_off.checked_add(index_len) != Some(foot_off) {
            return Err(Error::corrupt_file(
                path,
                foot_off,
                format!("index at {index_off}+{index_len} does not end at the footer ({foot_off})"),
            ));
        }
        let mut ib = vec![0u8; index_len as usize];
        rd(index_off, &mut ib)?;
        if crc32fast::hash(&ib) != le32(&fb[16..20]) {
            return Err(Error::corrupt_file(
                path,
                index_off,
                "index checksum mismatch",
            ));
        }
        let index = decode_index(path, &ib, index_off, &header)?;
        Ok(SnapshotReader {
            src,
            path: path.to_path_buf(),
            header,
            index,
        })
    }

    /// The file this reader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The page id stored at position `i` of the file.
    pub fn stored_page(&self, i: usize) -> u64 {
        match &self.index.pages {
            Some(p) => p[i],
            None => i as u64,
        }
    }

    /// Where `page` is stored in this file: (chunk, slot in chunk).
    pub fn locate(&self, page: u64) -> Option<(usize, usize)> {
        let i = match &self.index.pages {
            None => (page < self.header.page_count).then_some(page as usize)?,
            Some(p) => p.binary_search(&page).ok()?,
        };
        Some((i / self.header.chunk_pages, i % self.header.chunk_pages))
    }

    /// Reads chunk `c`'s compressed bytes into `comp` and checks its CRC.
    pub fn read_compressed(&self, c: usize, comp: &mut Vec<u8>) -> Result<()> {
        let e = self.index.chunks[c];
        comp.resize(e.compressed_len as usize, 0);
        self.src.read_exact_at(e.offset, comp).map_err(|err| {
            Error::io(format!("reading chunk {c} of {}", self.path.display()), err)
        })?;
        if crc32fast::hash(comp) != e.crc {
            return Err(Error::corrupt_file(
                &self.path,
                e.offset,
                format!("chunk {c} checksum mismatch"),
            ));
        }
        Ok(())
    }

    /// Reads, checks and decompresses chunk `c` into `raw`, and checks the CRC
    /// of every page in it against the index.
    pub fn read_chunk(&self, c: usize, comp: &mut Vec<u8>, raw: &mut Vec<u8>) -> Result<()> {
        self.read_chunk_opt(c, comp, raw, true)
    }

    /// As [`read_chunk`](Self::read_chunk); `check_chunk_crc = false` skips
    /// the chunk CRC (only when it was just checked: the page CRCs are still
    /// checked, and the decoder is safe on any input).
    fn read_chunk_opt(
        &self,
        c: usize,
        comp: &mut Vec<u8>,
        raw: &mut Vec<u8>,
        check_chunk_crc: bool,
    ) -> Result<()> {
        let e = self.index.chunks[c];
        if check_chunk_crc {
            self.read_compressed(c, comp)?;
        } else {
            comp.resize(e.compressed_len as usize, 0);
            self.src.read_exact_at(e.offset, comp).map_err(|err| {
                Error::io(format!("reading chunk {c} of {}", self.path.display()), err)
            })?;
        }
        raw.resize(e.raw_len as usize, 0);
        let bad = |why: String| Error::corrupt_file(&self.path, e.offset, why);
        match lz4_flex::block::decompress_into(comp, raw) {
            Ok(n) if n == raw.len() => {}
            Ok(n) => {
                return Err(bad(format!(
                    "chunk {c} decompresses to {n} bytes, expected {}",
                    raw.len()
                )))
            }
            Err(err) => return Err(bad(format!("chunk {c} does not decompress: {err}"))),
        }
        let first = c * self.header.chunk_pages;
        for (slot, bytes) in raw.chunks_exact(self.header.page_size).enumerate() {
            let page = self.stored_page(first + slot);
            if !self.index.sums.matches(page, bytes) {
                return Err(bad(format!(
                    "page {page} in chunk {c} does not match its checksum"
                )));
            }
        }
        Ok(())
    }

    /// Checks every chunk CRC (without decompressing) on up to `threads` threads.
    pub fn check_chunk_crcs(&self, threads: usize) -> Result<()> {
        self.run_chunks(threads, &|c, comp, _| self.read_compressed(c, comp))
    }

    /// Decompresses every chunk and checks every chunk and page CRC.
    pub fn verify_all(&self) -> Result<()> {
        let (mut comp, mut raw) = (Vec::new(), Vec::new());
        for c in 0..self.index.chunks.len() {
            self.read_chunk(c, &mut comp, &mut raw)?;
        }
        Ok(())
    }

    /// Decodes chunks `0..C` on up to `threads` threads, calling `visit` with
    /// each chunk's index and its checked raw bytes. Stops at the first
    /// error. With `check_chunk_crc = false` the chunk CRCs are taken as
    /// checked by [`check_chunk_crcs`](Self::check_chunk_crcs) just before;
    /// page CRCs are always checked.
    pub fn for_each_chunk(
        &self,
        threads: usize,
        check_chunk_crc: bool,
        visit: &(dyn Fn(usize, &[u8]) -> Result<()> + Sync),
    ) -> Result<()> {
        self.run_chunks(threads, &|c, comp, raw| {
            self.read_chunk_opt(c, comp, raw, check_chunk_crc)?;
            visit(c, raw)
        })
    }

    /// Runs `work(chunk, comp buffer, raw buffer)` for every chunk, chunks
    /// dealt round-robin to up to `threads` threads; first error wins.
    #[allow(clippy::type_complexity)]
    fn run_chunks(
        &self,
        threads: usize,
        work: &(dyn Fn(usize, &mut Vec<u8>, &mut Vec<u8>) -> Result<()> + Sync),
    ) -> Result<()> {
        let n = self.index.chunks.len();
        let threads = threads.clamp(1, n.max(1));
        let failed = std::sync::atomic::AtomicBool::new(false);
        let lane = |t: usize| -> Result<()> {
            let (mut comp, mut raw) = (Vec::new(), Vec::new());
            let mut c = t;
            while c < n {
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(());
                }
                let r = work(c, &mut comp, &mut raw);
                if r.is_err() {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    return r;
                }
                c += threads;
            }
            Ok(())
        };
        if threads == 1 {
            return lane(0);
        }
        std::thread::scope(|s| {
            let lane = &lane;
            let handles: Vec<_> = (1..threads)
                .map(|t| {
                    std::thread::Builder::new()
                        .name(WORKER_NAME.into())
                        .spawn_scoped(s, move || lane(t))
                })
                .collect();
            let mut result = lane(0);
            for h in handles {
                let r = match h {
                    Ok(h) => h.join().unwrap_or_else(|_| {
                        Err(Error::Stopped {
                            component: "snapshot reader",
                            reason: "a decoding thread panicked".into(),
                        })
                    }),
                    // That lane's chunks were not processed: fail the whole run.
                    Err(e) => Err(Error::io("spawning a snapshot decoding thread", e)),
                };
                if result.is_ok() {
                    result = r;
                }
            }
            result
        })
    }
}

/// What [`decode_snapshot`] found in a valid snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The snapshot id.
    pub id: u64,
    /// The parent's id for an incremental snapshot.
    pub parent: Option<u64>,
    /// The LSN the state corresponds to.
    pub lsn: Lsn,
    /// Page size in bytes.
    pub page_size: usize,
    /// Pages of the store at the snapshot.
    pub page_count: u64,
    /// Pages stored in the file.
    pub stored_pages: u64,
    /// Whether its pages were read through a store that verifies its reads
    /// (header flag; `false` for files written before the flag existed).
    pub pages_verified: bool,
    /// Names of the metadata blobs.
    pub metadata: Vec<String>,
}

/// Decodes and fully verifies a snapshot file held in memory: header, footer,
/// index, every chunk CRC, every decompressed length and every page CRC.
///
/// This is the same decoder the manager uses on files; it is public so that
/// fuzzers and tests can feed it arbitrary bytes.
///
/// # Errors
/// [`Error::CorruptFile`] or [`Error::UnsupportedVersion`] for anything that
/// is not a valid snapshot.
pub fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotSummary> {
    let r = SnapshotReader::new(Box::new(bytes.to_vec()), Path::new("<snapshot bytes>"))?;
    r.verify_all()?;
    Ok(SnapshotSummary {
        id: r.header.id,
        parent: r.header.parent,
        lsn: r.header.lsn,
        page_size: r.header.page_size,
        page_count: r.header.page_count,
        stored_pages: r.index.stored_pages(r.header.page_count),
        pages_verified: r.header.pages_verified,
        metadata: r.index.metadata.iter().map(|(n, _)| n.clone()).collect(),
    })
}

/// Decodes a manifest held in memory and returns the snapshots it lists.
///
/// # Errors
/// [`Error::CorruptFile`] or [`Error::UnsupportedVersion`] for anything that
/// is not a valid manifest, including a file name that is not
/// [`snapshot_file_name`](super::snapshot_file_name) of its entry's id (so
/// none can point outside the snapshot directory or at another file).
pub fn decode_manifest(bytes: &[u8]) -> Result<Vec<super::SnapshotInfo>> {
    super::manifest::Manifest::decode(Path::new("<manifest bytes>"), bytes).map(|m| m.entries)
}

/// The name of the threads that compress and decompress chunks.
pub(crate) const WORKER_NAME: &str = "selfheal-snapshot-lz4";

#[cfg(test)]
mod tests {
    use super::super::writer::SnapshotWriter;
    use super::*;
    use proptest::prelude::*;

    fn header(parent: Option<u64>, page_count: u64) -> Header {
        Header {
            version: VERSION,
            id: 5,
            parent,
            lsn: Lsn(77),
            created_unix_ms: 1,
            page_size: 64,
            chunk_pages: 3,
            page_count,
            pages_verified: false,
        }
    }

    fn write(h: Header, pages: &[(u64, Vec<u8>)], parent_fps: Vec<u64>, threads: usize) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let f = File::create(&p).unwrap();
        let mut w = SnapshotWriter::new(f, p.clone(), h, threads, parent_fps).unwrap();
        for (id, b) in pages {
            w.push(*id, b).unwrap();
        }
        w.finish(&[("cfg".into(), b"x=1".to_vec())]).unwrap();
        std::fs::read(&p).unwrap()
    }

    /// The same snapshot in format 1: header version 1 and a 4-byte
    /// [`page_crc`] per page instead of the fingerprints (`pages` are the
    /// full state's bytes), every checksum recomputed.
    fn to_format_1(v2: &[u8], state: &[Vec<u8>]) -> Vec<u8> {
        let r = SnapshotReader::new(Box::new(v2.to_vec()), Path::new("v2")).unwrap();
        let mut out = v2[..HEADER_LEN].to_vec();
        out[4..8].copy_from_slice(&VERSION_CRC32.to_le_bytes());
        let crc = crc32fast::hash(&out[..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        let index_off = r.index.chunks.last().map_or(HEADER_LEN as u64, |c| {
            c.offset + u64::from(c.compressed_len)
        });
        out.extend_from_slice(&v2[HEADER_LEN..index_off as usize]);
        let fps_len = state.len() * 8;
        let v2_index = &v2[index_off as usize..v2.len() - FOOTER_LEN];
        let stored_ids = r.index.pages.as_ref().map_or(0, |p| p.len() * 8);
        let before = INDEX_FIXED_LEN + r.index.chunks.len() * CHUNK_ENTRY_LEN + stored_ids;
        let mut ix = v2_index[..before].to_vec();
        for (p, b) in state.iter().enumerate() {
            ix.extend_from_slice(&page_crc(crate::types::PageId(p as u64), b).to_le_bytes());
        }
        ix.extend_from_slice(&v2_index[before + fps_len..]);
        out.extend_from_slice(&ix);
        out.extend_from_slice(&encode_footer(index_off, &ix));
        out
    }

    #[test]
    fn format_1_files_are_read_and_checked_with_their_crcs() {
        let state: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i + 1; 64]).collect();
        let pages: Vec<_> = state
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, b)| (i as u64, b))
            .collect();
        let v2 = write(header(None, 7), &pages, Vec::new(), 1);
        let v1 = to_format_1(&v2, &state);
        let s = decode_snapshot(&v1).unwrap();
        assert_eq!(s.stored_pages, 7);
        let r = SnapshotReader::new(Box::new(v1.clone()), Path::new("v1")).unwrap();
        assert_eq!(r.header.version, VERSION_CRC32);
        assert!(r.index.sums.fingerprints().is_none());
        let (mut comp, mut raw) = (Vec::new(), Vec::new());
        r.read_chunk(1, &mut comp, &mut raw).unwrap();
        assert_eq!(&raw[..64], &state[3][..]);
        // A wrong CRC for one page is found when its chunk is read.
        let mut bad_state = state.clone();
        bad_state[4][0] ^= 1;
        let bad = to_format_1(&v2, &bad_state);
        assert!(matches!(
            decode_snapshot(&bad),
            Err(Error::CorruptFile { .. })
        ));
        // Damage anywhere is still found.
        for i in 0..v1.len() {
            let mut d = v1.clone();
            d[i] ^= 0x08;
            assert!(decode_snapshot(&d).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn a_chunk_claiming_more_than_lz4_can_expand_is_refused_before_it_is_read() {
        // Zeros compress at close to lz4's largest ratio, and decode.
        let pages: Vec<_> = (0..64u64).map(|i| (i, vec![0u8; 64])).collect();
        let mut h = header(None, 64);
        h.chunk_pages = 64;
        let bytes = write(h, &pages, Vec::new(), 1);
        decode_snapshot(&bytes).unwrap();
        let r = SnapshotReader::new(Box::new(bytes.clone()), Path::new("z")).unwrap();
        let e = r.index.chunks[0];
        assert!(u64::from(e.raw_len) <= u64::from(e.compressed_len) * LZ4_MAX_RATIO);
        assert!(
            u64::from(e.raw_len) > u64::from(e.compressed_len) * 50,
            "{e:?}"
        );
        // The same chunk entry with one compressed byte: refused at open.
        let h = Header::decode(Path::new("z"), &bytes).unwrap();
        let mut c = Vec::new();
        c.extend_from_slice(&1u32.to_le_bytes());
        c.extend_from_slice(&64u64.to_le_bytes());
        c.extend_from_slice(&64u64.to_le_bytes());
        c.extend_from_slice(&0u32.to_le_bytes());
        c.extend_from_slice(&(HEADER_LEN as u64).to_le_bytes());
        c.extend_from_slice(&1u32.to_le_bytes());
        c.extend_from_slice(&(64u32 * 64).to_le_bytes());
        c.extend_from_slice(&0u32.to_le_bytes());
        c.resize(c.len() + 64 * 8, 0);
        let err = decode_index(Path::new("z"), &c, HEADER_LEN as u64 + 1, &h).unwrap_err();
        assert!(err.to_string().contains("lz4 expands at most"), "{err}");
    }

    #[test]
    fn an_incremental_must_hold_every_page_past_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        // The parent had 4 pages, the store now 6: pages 4 and 5 are new.
        let mut w = SnapshotWriter::new(
            File::create(&p).unwrap(),
            p.clone(),
            header(Some(1), 6),
            1,
            vec![9; 4],
        )
        .unwrap();
        w.push(1, &[1; 64]).unwrap();
        w.push(5, &[5; 64]).unwrap();
        assert!(matches!(w.finish(&[]), Err(Error::InvalidArgument { .. })));
        let mut w = SnapshotWriter::new(
            File::create(&p).unwrap(),
            p.clone(),
            header(Some(1), 6),
            1,
            vec![9; 4],
        )
        .unwrap();
        for page in [1, 4, 5] {
            w.push(page, &[page as u8; 64]).unwrap();
        }
        w.finish(&[]).unwrap();
        let r = SnapshotReader::open_file(&p).unwrap();
        assert_eq!(r.index.stored_from(6, 4), 2);
        let fps = r.index.sums.fingerprints().unwrap();
        assert_eq!(fps[0], 9);
        assert_eq!(fps[4], page_fingerprint(4, &[4; 64]));
    }

    #[test]
    fn header_round_trip_and_checks() {
        let h = header(Some(2), 9);
        let b = h.encode();
        assert_eq!(Header::decode(Path::new("h"), &b).unwrap(), h);
        let mut v = b;
        v[4] = 9;
        assert!(Header::decode(Path::new("h"), &v).is_err());
        // The flag round-trips; an unknown flag is refused.
        let verified = Header {
            pages_verified: true,
            ..header(None, 3)
        };
        let b = verified.encode();
        assert_eq!(Header::decode(Path::new("h"), &b).unwrap(), verified);
        assert_eq!(b[56..60], 1u32.to_le_bytes());
        let mut v = b;
        v[56] = 3;
        let crc = crc32fast::hash(&v[..60]);
        v[60..64].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            Header::decode(Path::new("h"), &v),
            Err(Error::CorruptFile { offset: 56, .. })
        ));
    }

    /// A header written before the flag existed (the field reserved and 0)
    /// reads as not verified.
    #[test]
    fn a_header_without_flags_reads_as_not_verified() {
        let b = header(None, 3).encode();
        assert_eq!(b[56..60], [0; 4]);
        assert!(!Header::decode(Path::new("h"), &b).unwrap().pages_verified);
        let v1 = to_format_1(
            &write(header(None, 1), &[(0, vec![1u8; 64])], Vec::new(), 1),
            &[vec![1u8; 64]],
        );
        let r = SnapshotReader::new(Box::new(v1), Path::new("v1")).unwrap();
        assert!(!r.header.pages_verified);
    }

    proptest! {
        #[test]
        fn full_file_round_trips(n in 0u64..20, seed in any::<u8>(), threads in 1usize..4) {
            let pages: Vec<_> = (0..n).map(|i| (i, vec![seed.wrapping_add(i as u8); 64])).collect();
            let bytes = write(header(None, n), &pages, Vec::new(), threads);
            let s = decode_snapshot(&bytes).unwrap();
            prop_assert_eq!(s.stored_pages, n);
            prop_assert_eq!(s.metadata, vec!["cfg".to_string()]);
            let r = SnapshotReader::new(Box::new(bytes), Path::new("m")).unwrap();
            let (mut comp, mut raw) = (Vec::new(), Vec::new());
            for (id, b) in &pages {
                let (c, slot) = r.locate(*id).unwrap();
                r.read_chunk(c, &mut comp, &mut raw).unwrap();
                prop_assert_eq!(&raw[slot * 64..(slot + 1) * 64], &b[..]);
            }
        }

        #[test]
        fn incremental_file_round_trips(ids in proptest::collection::btree_set(0u64..30, 0..12)) {
            let pages: Vec<_> = ids.iter().map(|&i| (i, vec![i as u8 ^ 0x5A; 64])).collect();
            let bytes = write(header(Some(1), 30), &pages, vec![7; 30], 2);
            let r = SnapshotReader::new(Box::new(bytes), Path::new("m")).unwrap();
            r.verify_all().unwrap();
            prop_assert_eq!(r.index.stored_pages(30), ids.len() as u64);
            for p in 0..30u64 {
                prop_assert_eq!(r.locate(p).is_some(), ids.contains(&p));
                if !ids.contains(&p) {
                    prop_assert_eq!(r.index.sums.fingerprints().unwrap()[p as usize], 7);
                }
            }
        }

        #[test]
        fn any_damage_is_detected(n in 1u64..12, at in any::<usize>(), bit in 0u8..8, cut in any::<usize>()) {
            let pages: Vec<_> = (0..n).map(|i| (i, vec![i as u8 + 1; 64])).collect();
            let bytes = write(header(None, n), &pages, Vec::new(), 1);
            let mut flipped = bytes.clone();
            let i = at % flipped.len();
            flipped[i] ^= 1 << bit;
            prop_assert!(decode_snapshot(&flipped).is_err());
            let mut short = bytes.clone();
            short.truncate(cut % bytes.len());
            prop_assert!(decode_snapshot(&short).is_err());
            prop_assert!(decode_snapshot(&vec![0u8; bytes.len()]).is_err());
        }

        #[test]
        fn format_1_round_trips_and_damage_is_detected(n in 1u64..16, seed in any::<u8>(), at in any::<usize>(), bit in 0u8..8) {
            let state: Vec<Vec<u8>> = (0..n).map(|i| vec![seed.wrapping_add(i as u8) | 1; 64]).collect();
            let pages: Vec<_> = state.iter().cloned().enumerate().map(|(i, b)| (i as u64, b)).collect();
            let v1 = to_format_1(&write(header(None, n), &pages, Vec::new(), 2), &state);
            let r = SnapshotReader::new(Box::new(v1.clone()), Path::new("v1")).unwrap();
            r.verify_all().unwrap();
            let (mut comp, mut raw) = (Vec::new(), Vec::new());
            for (id, b) in &pages {
                let (c, slot) = r.locate(*id).unwrap();
                r.read_chunk(c, &mut comp, &mut raw).unwrap();
                prop_assert_eq!(&raw[slot * 64..(slot + 1) * 64], &b[..]);
            }
            let mut flipped = v1.clone();
            let i = at % flipped.len();
            flipped[i] ^= 1 << bit;
            prop_assert!(decode_snapshot(&flipped).is_err());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_snapshot(&bytes);
            let _ = decode_manifest(&bytes);
        }
    }
}
