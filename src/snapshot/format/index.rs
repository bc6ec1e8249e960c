//! The index of a snapshot file: chunk table, stored page ids, the page
//! sums of the whole state and the metadata blobs (layout in the
//! [`format`](super) module docs), and its bounds-checked decoder.

use std::path::Path;
use std::sync::Arc;

use super::cursor::{le32, le64, Cursor};
use super::header::Header;
use super::{HEADER_LEN, LZ4_MAX_RATIO, MAX_BLOBS, MAX_BLOB_LEN, MAX_BLOB_NAME, VERSION_CRC32};
use crate::checksum::page_crc;
use crate::error::Result;
use crate::snapshot::fingerprint::page_fingerprint;

pub(super) const CHUNK_ENTRY_LEN: usize = 20;
pub(super) const INDEX_FIXED_LEN: usize = 24;

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

/// The index of a file (layout in the [`format`](super) module docs).
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

/// Decodes the index `bytes` found at file offset `base`, checking every
/// count against the bytes that hold it before allocating, and every chunk
/// against the header (see the [`format`](super) module docs).
pub(super) fn decode_index(path: &Path, bytes: &[u8], base: u64, h: &Header) -> Result<Index> {
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
