//! The codec of a table's base file: the settled checksums and unallocated
//! marks of every page, framed and checksummed. The byte layout is in the
//! docs of [`ChecksumTable`](super::ChecksumTable); every input is
//! untrusted.

use std::path::Path;

use super::entries::{FREE, MAX_TABLE_PAGES, PRESENT};
use crate::error::{Error, Result};
use crate::fsutil;

pub(super) const BASE_MAGIC: [u8; 4] = *b"SHCT";
const BASE_VERSION: u32 = 2;

/// A decoded base file.
#[derive(Debug)]
pub(super) struct Base {
    pub(super) generation: u64,
    pub(super) next_seq: u64,
    pub(super) entries: Vec<u64>,
}

/// Encodes a version-2 base file of `n` entries.
pub(super) fn encode_base(
    page_size: usize,
    generation: u64,
    next_seq: u64,
    n: usize,
    entries: impl Iterator<Item = u64>,
) -> Vec<u8> {
    let mut payload = Vec::with_capacity(28 + n * 8);
    payload.extend_from_slice(&(page_size as u32).to_le_bytes());
    payload.extend_from_slice(&generation.to_le_bytes());
    payload.extend_from_slice(&next_seq.to_le_bytes());
    payload.extend_from_slice(&(n as u64).to_le_bytes());
    for e in entries {
        payload.extend_from_slice(&e.to_le_bytes());
    }
    debug_assert_eq!(payload.len(), 28 + n * 8);
    fsutil::encode_framed(BASE_MAGIC, BASE_VERSION, &payload)
}

/// Decodes a base file of version 1 or 2 (allocating at most one entry per
/// 8 input bytes).
pub(super) fn decode_base(path: &Path, bytes: &[u8], page_size: usize) -> Result<Base> {
    let (version, payload) = fsutil::decode_framed(path, bytes, BASE_MAGIC, BASE_VERSION)?;
    let off = fsutil::FRAME_HEADER_LEN as u64;
    let fixed = if version == 1 { 12 } else { 28 };
    if payload.len() < fixed {
        return Err(Error::corrupt_file(
            path,
            off,
            format!("table payload shorter than {fixed} bytes"),
        ));
    }
    let u64_at = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
    let ps = u32::from_le_bytes(payload[0..4].try_into().expect("4 bytes")) as usize;
    if ps != page_size {
        return Err(Error::PageSizeMismatch {
            what: format!("checksum table {}", path.display()),
            expected: page_size,
            actual: ps,
        });
    }
    let (generation, next_seq, count_at) = if version == 1 {
        (0, 1, 4)
    } else {
        (u64_at(4), u64_at(12), 20)
    };
    let n = u64_at(count_at);
    if n > MAX_TABLE_PAGES {
        return Err(Error::corrupt_file(
            path,
            off + count_at as u64,
            format!("table says {n} entries, more than the {MAX_TABLE_PAGES} a table holds"),
        ));
    }
    let body = &payload[fixed..];
    if Some(body.len() as u64) != n.checked_mul(8) {
        return Err(Error::corrupt_file(
            path,
            off + count_at as u64,
            format!("table says {n} entries, payload holds {} bytes", body.len()),
        ));
    }
    let entries: Vec<u64> = body
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    if let Some(bad) = entries
        .iter()
        .position(|&e| e != FREE && e & !(PRESENT | u64::from(u32::MAX)) != 0)
    {
        return Err(Error::corrupt_file(
            path,
            off + fixed as u64 + bad as u64 * 8,
            "entry has unknown flag bits",
        ));
    }
    if let Some(bad) = entries
        .iter()
        .position(|&e| e & PRESENT == 0 && e != 0 && e != FREE)
    {
        return Err(Error::corrupt_file(
            path,
            off + fixed as u64 + bad as u64 * 8,
            "absent entry with a nonzero checksum",
        ));
    }
    Ok(Base {
        generation,
        next_seq,
        entries,
    })
}

/// The page size recorded in the base file at `path` (its frame header and
/// the payload's first 4 bytes only, so a large table is not read whole),
/// or `None` when there is no base file.
///
/// # Errors
/// [`Error::CorruptFile`] when the first bytes are no base file's header;
/// [`Error::Io`] when the file cannot be read.
#[cfg(feature = "sqlite")]
pub(crate) fn base_page_size(path: &Path) -> Result<Option<usize>> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let mut head = Vec::with_capacity(fsutil::FRAME_HEADER_LEN + 4);
    f.take((fsutil::FRAME_HEADER_LEN + 4) as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if head.len() < fsutil::FRAME_HEADER_LEN + 4 {
        return Err(Error::corrupt_file(
            path,
            0,
            format!("{} bytes, too short for a checksum table", head.len()),
        ));
    }
    let header_crc = u32::from_le_bytes(head[20..24].try_into().expect("4 bytes"));
    if head[..4] != BASE_MAGIC || crc32fast::hash(&head[..20]) != header_crc {
        return Err(Error::corrupt_file(
            path,
            0,
            "not a checksum table base file (magic or header checksum wrong)",
        ));
    }
    let at = fsutil::FRAME_HEADER_LEN;
    let ps = u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    Ok(Some(ps as usize))
}
