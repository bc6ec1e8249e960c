//! The decoders of the crate's small files, reachable from fuzz targets and
//! corpus tests: the same code the components run on the files they read,
//! fed bytes held in memory, and the encoders they write with (for seed
//! corpora and round trips).
//!
//! # Contract
//!
//! Any bytes either decode or give [`Error::CorruptFile`] /
//! [`Error::UnsupportedVersion`] — never a panic, and never an allocation
//! beyond a small multiple of the input. Each encoder's output decodes to
//! what was encoded.

use std::path::Path;

use crate::corruption::PageState;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::recovery::suspects::{self, Saved};
use crate::types::{Failure, PageId};

pub use crate::crash::run_marker::Record as RunMarkerRecord;
pub use crate::scrub::cursor::Cursor as ScrubCursor;

/// The crate's framed small file (magic, version, payload length, payload
/// CRC32, header CRC32, payload — the frame every small file carries):
/// checks the frame and returns its version and payload.
///
/// # Errors
/// [`Error::CorruptFile`] for a wrong magic, a bad CRC or a length that
/// does not fit; [`Error::UnsupportedVersion`] for a version outside
/// `1..=max_version`.
pub fn decode_framed(bytes: &[u8], magic: [u8; 4], max_version: u32) -> Result<(u32, &[u8])> {
    crate::fsutil::decode_framed(Path::new("<framed bytes>"), bytes, magic, max_version)
}

/// Wraps `payload` in the crate's frame.
#[must_use]
pub fn encode_framed(magic: [u8; 4], version: u32, payload: &[u8]) -> Vec<u8> {
    crate::fsutil::encode_framed(magic, version, payload)
}

/// Decodes a run-marker file (`selfheal.run` of the crash detector).
///
/// # Errors
/// As [`RunMarkerRecord::decode`].
pub fn decode_run_marker(bytes: &[u8]) -> Result<RunMarkerRecord> {
    RunMarkerRecord::decode(Path::new("<run marker bytes>"), bytes)
}

/// Decodes a scrub cursor file (the scrubber's resume point).
///
/// # Errors
/// [`Error::CorruptFile`] or [`Error::UnsupportedVersion`] for anything but
/// a well-formed cursor whose next page is within its pass.
pub fn decode_scrub_cursor(bytes: &[u8]) -> Result<ScrubCursor> {
    crate::scrub::cursor::decode(Path::new("<scrub cursor bytes>"), bytes)
}

/// The bytes of a scrub cursor file.
///
/// # Panics
/// In debug builds, when `c.next > c.total` (no scrubber writes that).
#[must_use]
pub fn encode_scrub_cursor(c: ScrubCursor) -> Vec<u8> {
    crate::scrub::cursor::encode(c)
}

/// Decodes the recovery manager's incidents file: the open incidents as
/// `(id, first failure)`. The file keeps each incident's age; it is read
/// on a clock at [`INCIDENTS_CLOCK_NS`], so an incident saved by
/// [`encode_incidents`] comes back with the detection time it had (a
/// version-1 file's incidents come back detected at that reading).
///
/// # Errors
/// [`Error::CorruptFile`] or [`Error::UnsupportedVersion`] for anything but
/// a well-formed file.
pub fn decode_incidents(bytes: &[u8]) -> Result<Vec<(u64, Failure)>> {
    crate::recovery::persist::decode_file(Path::new("<incidents bytes>"), bytes, INCIDENTS_CLOCK_NS)
}

/// The clock reading at which [`encode_incidents`] saves and
/// [`decode_incidents`] reads an incidents file, so ages round-trip into
/// the same detection times.
pub const INCIDENTS_CLOCK_NS: u64 = u64::MAX;

/// The bytes of an incidents file holding `incidents`, saved at
/// [`INCIDENTS_CLOCK_NS`].
#[must_use]
pub fn encode_incidents(incidents: &[(u64, Failure)]) -> Vec<u8> {
    crate::recovery::persist::encode_file(incidents, INCIDENTS_CLOCK_NS)
}

/// Decodes the recovery manager's suspect registry: the fenced pages as
/// `(page, state, first seen ns)`; the state is `Suspect`, `Repairing` or
/// `Irreparable`.
///
/// # Errors
/// [`Error::CorruptFile`] or [`Error::UnsupportedVersion`] for anything but
/// a well-formed file.
pub fn decode_suspects(bytes: &[u8]) -> Result<Vec<(PageId, PageState, u64)>> {
    let files = super::CrashFiles::new();
    Ok(suspects::decode(&files, bytes)?
        .into_iter()
        .map(|s| (s.page, s.state, s.first_seen_ns))
        .collect())
}

/// The bytes of a suspect registry holding `pages` (`Repaired` is stored
/// as `Irreparable`, as the recovery manager does).
#[must_use]
pub fn encode_suspects(pages: &[(PageId, PageState, u64)]) -> Vec<u8> {
    let saved: Vec<Saved> = pages
        .iter()
        .map(|&(page, state, first_seen_ns)| Saved {
            page,
            state,
            first_seen_ns,
        })
        .collect();
    suspects::encode(&saved)
}

/// The page ids the recovery manager salvages from a suspect registry whose
/// frame is damaged: at most the pages below `page_count`, sorted, each
/// once.
#[must_use]
pub fn salvage_suspects(bytes: &[u8], page_count: u64) -> Vec<PageId> {
    suspects::salvage(bytes, page_count)
}
