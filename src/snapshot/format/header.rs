//! The fixed-size ends of a snapshot file: the 64-byte header and the
//! 32-byte footer (layouts in the [`format`](super) module docs).

use std::path::Path;

use super::cursor::{le32, le64};
use super::{FOOTER_LEN, HEADER_LEN, MAX_CHUNK_BYTES, MAX_PAGE_SIZE, VERSION, VERSION_CRC32};
use crate::checksum::MIN_PAGE_SIZE;
use crate::error::{Error, Result};
use crate::types::Lsn;

const MAGIC: [u8; 4] = *b"SHSN";
/// Header flag: the pages were read through a store that verifies its reads.
const FLAG_PAGES_VERIFIED: u32 = 1;
const FOOTER_MAGIC: [u8; 4] = *b"SHSE";

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

    pub(crate) fn decode(path: &Path, b: &[u8]) -> Result<Header> {
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

/// The footer of a file whose index starts at `index_offset`.
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

/// Where the index is and how to check it, from a footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Footer {
    pub index_off: u64,
    pub index_len: u64,
    pub index_crc: u32,
}

impl Footer {
    /// Checks the footer bytes `b` found at `foot_off` of `path`: its CRC,
    /// its magic and reserved field, and that the index it points at lies
    /// between the header and the footer, ending exactly at the footer.
    pub(crate) fn decode(path: &Path, foot_off: u64, b: &[u8; FOOTER_LEN]) -> Result<Footer> {
        if crc32fast::hash(&b[..28]) != le32(&b[28..32]) {
            return Err(Error::corrupt_file(
                path,
                foot_off + 28,
                "footer checksum mismatch",
            ));
        }
        if b[24..28] != FOOTER_MAGIC || le32(&b[20..24]) != 0 {
            return Err(Error::corrupt_file(path, foot_off + 20, "bad footer magic"));
        }
        let index_off = le64(&b[0..8]);
        let index_len = le64(&b[8..16]);
        if index_off < HEADER_LEN as u64 || index_off.checked_add(index_len) != Some(foot_off) {
            return Err(Error::corrupt_file(
                path,
                foot_off,
                format!("index at {index_off}+{index_len} does not end at the footer ({foot_off})"),
            ));
        }
        Ok(Footer {
            index_off,
            index_len,
            index_crc: le32(&b[16..20]),
        })
    }
}
