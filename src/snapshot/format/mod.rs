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
//! Format 1 differs only in the page sums: 4 bytes per page,
//! [`page_crc`](crate::digest::page_crc) (CRC32 of the page number ‖ the
//! page). It is still read, and its CRCs
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
//! a typed error ([`Error::CorruptFile`](crate::Error::CorruptFile),
//! [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion)),
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
//! The manifest lists the snapshots and records the restore point; it is a
//! framed file (magic `SHSM`, version 2 written, 1 still read; frame
//! described in the crate's `fsutil` module: magic, version, payload length
//! u64, payload CRC32, header CRC32, payload). Its payload:
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
//! | …      | 1    | restore point flags: bit 0 = head unknown; others 0      |
//! | …      | 8    | restore point: the head's id (listed), 0 iff `n` = 0     |
//!
//! The restore point (version 2) is the snapshot the store's state descends
//! from: the newest one taken, or the one last restored — after a restore
//! of snapshot k, the snapshots newer than k describe a history the store
//! left, and the page source must not serve them after a restart either.
//! "Head unknown" is set, durably, just before a restore first writes its
//! target, and cleared by the manifest that records the restored snapshot
//! (or the next snapshot taken): a crash or a failure in between leaves a
//! store that descends from no snapshot, and no snapshot serves a page
//! until the next snapshot or restore. A manifest rebuilt from the snapshot
//! files (the old one damaged) has lost its restore point: it records the
//! newest snapshot, with "head unknown" set. A version-1 manifest has
//! neither field: its head is the newest snapshot, as every open took it
//! before. A build that only reads version 1 refuses version 2 with
//! [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion) (never a
//! rebuild over it).
//!
//! File names are validated on decode so that a manifest can never make the
//! library read or delete a file outside its snapshot directory.

mod cursor;
mod header;
mod index;
mod reader;
#[cfg(test)]
mod tests;

pub(crate) use cursor::Cursor;
pub(crate) use header::{encode_footer, Header};
pub(crate) use index::{encode_index, ChunkEntry};
pub(crate) use reader::SnapshotReader;

/// Length of the snapshot file header.
pub(crate) const HEADER_LEN: usize = 64;
/// Length of the snapshot file footer.
pub(crate) const FOOTER_LEN: usize = 32;
/// The snapshot file version this build writes (and the newest it reads).
pub(crate) const VERSION: u32 = 2;
/// The oldest snapshot file version this build reads (4-byte page CRCs).
pub(crate) const VERSION_CRC32: u32 = 1;
/// The most an lz4 block can expand: each compressed byte yields at most 255
/// raw bytes (a match-length byte of 255), and every other part of a
/// sequence yields fewer per byte.
pub(crate) const LZ4_MAX_RATIO: u64 = 255;
/// Largest page size a snapshot holds.
pub(crate) const MAX_PAGE_SIZE: usize = 1 << 20;
/// Largest raw chunk.
pub(crate) const MAX_CHUNK_BYTES: usize = 64 << 20;
/// Most metadata blobs in one snapshot.
pub(crate) const MAX_BLOBS: usize = 64;
/// Longest metadata blob name in bytes.
pub(crate) const MAX_BLOB_NAME: usize = 255;
/// Largest metadata blob in bytes.
pub(crate) const MAX_BLOB_LEN: usize = 1 << 20;

/// The name of the threads that compress and decompress chunks.
pub(crate) const WORKER_NAME: &str = "selfheal-snapshot-lz4";
