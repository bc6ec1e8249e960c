//! The scrub cursor file: where a full-mode scrub is in its pass, persisted
//! so that a restarted process continues the pass instead of starting over.
//!
//! # Contract
//!
//! - A cursor only ever decides where a pass starts. A wrong one can make
//!   one pass skip or repeat pages; it never makes a bad page verify.
//! - The file is untrusted: it is read with a bound ([`FILE_LEN`] + 1 bytes
//!   at most, whatever its size), framed and checksummed, and one that is
//!   truncated, garbled, zeroed, too long or of a newer version is ignored
//!   (the scrub starts at page 0) and reported once on the scrubber's
//!   failure bus as [`FailureKind::ScrubCursorFailed`](crate::FailureKind::ScrubCursorFailed). A missing file is
//!   not a failure: it starts at page 0.
//! - A cursor past the end of the store (the store shrank since it was
//!   written) is clamped to the end: the interrupted pass is over, and the
//!   next one starts at page 0.
//! - A write that fails leaves the previous file intact; it is logged,
//!   retried at the next persist, and reported once per episode (the
//!   episode ends when a write succeeds again).
//! - Error-only mode neither reads nor writes the cursor.
//!
//! # Format (all integers little-endian)
//!
//! The crate's frame (see `fsutil`) around a 24-byte payload; 48 bytes in
//! all:
//!
//! | offset | size | field                                                   |
//! |-------:|-----:|---------------------------------------------------------|
//! | 0      | 4    | magic `SHSC`                                            |
//! | 4      | 4    | format version, 1                                       |
//! | 8      | 8    | payload length, 24                                      |
//! | 16     | 4    | CRC32 of the payload (bytes 24..48)                     |
//! | 20     | 4    | CRC32 of bytes 0..20                                    |
//! | 24     | 8    | next page to scan in the current pass                   |
//! | 32     | 8    | pages in the current pass when the cursor was written   |
//! | 40     | 8    | passes completed                                        |
//!
//! A decoder checks, in order: the header CRC, the magic, the version (a
//! newer one is refused), the length against the file's size, the payload
//! CRC, the payload's length (exactly 24), and `next ≤ pages in pass`.
//!
//! # When it is written, and what a crash leaves
//!
//! Every [`ScrubConfig::persist_every`](super::ScrubConfig::persist_every)
//! of clock time while scanning, at the end of each pass (next page 0), on
//! pause and on stop, and only when it changed since the last write. A
//! write is the crate's crash-safe replace: `name.tmp` is written and
//! fsynced, renamed over `name`, and the directory fsynced.
//!
//! - A crash while `name.tmp` is written or before its fsync: `name` is the
//!   previous cursor; the stray `name.tmp` is overwritten by the next write.
//! - A crash after the rename, before the directory fsync: either the old
//!   or the new cursor, each complete.
//!
//! So at worst a restarted scrubber rescans the pages since the last write.
//! Rescanning is harmless: a known corrupt page is not reported again within
//! one process, and a restarted process starts with an empty registry, so
//! reporting it once more is correct.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil;

const MAGIC: [u8; 4] = *b"SHSC";
const VERSION: u32 = 1;
const PAYLOAD_LEN: usize = 24;
/// The size of a cursor file.
pub(crate) const FILE_LEN: usize = fsutil::FRAME_HEADER_LEN + PAYLOAD_LEN;

/// What a cursor file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The next page to scan in the current pass.
    pub next: u64,
    /// Pages in the current pass when it was written.
    pub total: u64,
    /// Passes completed.
    pub passes: u64,
}

/// Encodes a cursor file (frame included).
pub fn encode(c: Cursor) -> Vec<u8> {
    debug_assert!(c.next <= c.total, "{c:?}");
    let mut payload = Vec::with_capacity(PAYLOAD_LEN);
    payload.extend_from_slice(&c.next.to_le_bytes());
    payload.extend_from_slice(&c.total.to_le_bytes());
    payload.extend_from_slice(&c.passes.to_le_bytes());
    let out = fsutil::encode_framed(MAGIC, VERSION, &payload);
    debug_assert_eq!(out.len(), FILE_LEN);
    out
}

/// Decodes the bytes of a cursor file read from `path` (named in errors).
///
/// # Errors
/// [`Error::CorruptFile`] or [`Error::UnsupportedVersion`] for anything but
/// a well-formed version-1 cursor (see the module docs for the checks).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Cursor> {
    let (_, payload) = fsutil::decode_framed(path, bytes, MAGIC, VERSION)?;
    if payload.len() != PAYLOAD_LEN {
        return Err(Error::corrupt_file(
            path,
            fsutil::FRAME_HEADER_LEN as u64,
            format!(
                "cursor payload is {} bytes, expected {PAYLOAD_LEN}",
                payload.len()
            ),
        ));
    }
    let word = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
    let c = Cursor {
        next: word(0),
        total: word(8),
        passes: word(16),
    };
    if c.next > c.total {
        return Err(Error::corrupt_file(
            path,
            fsutil::FRAME_HEADER_LEN as u64,
            format!("next page {} is past the pass's {} pages", c.next, c.total),
        ));
    }
    Ok(c)
}

/// Reads the cursor at `path`: `None` when there is no file. Reads at most
/// [`FILE_LEN`] + 1 bytes, so a huge file at the path costs nothing (and is
/// refused as too long).
///
/// # Errors
/// As [`decode`]; [`Error::NotRegularFile`] or [`Error::Io`] when the path
/// cannot be read.
pub(crate) fn load(path: &Path) -> Result<Option<Cursor>> {
    let options = {
        let mut o = fsutil::private_create_options();
        o.read(true);
        o
    };
    let file = match fsutil::open_regular(&options, path, "opening") {
        Ok(f) => f,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::with_capacity(FILE_LEN + 1);
    file.take(FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    decode(path, &bytes).map(Some)
}
