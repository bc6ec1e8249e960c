//! The snapshot file and manifest decoders, reachable from fuzz targets and
//! tests: the same code the [`StateSnapshotManager`](crate::StateSnapshotManager)
//! runs on the files it reads, fed bytes held in memory.
//!
//! # Contract
//!
//! Any bytes either decode or give [`Error::CorruptFile`] /
//! [`Error::UnsupportedVersion`] — never a
//! panic, and never an allocation beyond about 256 times the input (lz4's
//! largest expansion; see the format's documentation in the source of the
//! `snapshot` module).

use std::path::Path;

#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::snapshot::format::SnapshotReader;
use crate::snapshot::SnapshotInfo;
use crate::types::Lsn;

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

/// Decodes and fully verifies a snapshot file held in memory: header,
/// footer, index, every chunk CRC, every decompressed length and every
/// page's fingerprint (its CRC in format 1).
///
/// ```
/// assert!(selfheal::testing::decode_snapshot(b"not a snapshot").is_err());
/// ```
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

/// Decodes a snapshot manifest held in memory and returns the snapshots it
/// lists.
///
/// # Errors
/// [`Error::CorruptFile`] or [`Error::UnsupportedVersion`] for anything that
/// is not a valid manifest, including a file name that is not
/// [`snapshot_file_name`](crate::snapshot::snapshot_file_name) of its
/// entry's id (so none can point outside the snapshot directory or at
/// another file).
pub fn decode_manifest(bytes: &[u8]) -> Result<Vec<SnapshotInfo>> {
    crate::snapshot::manifest::Manifest::decode(Path::new("<manifest bytes>"), bytes)
        .map(|m| m.entries)
}
