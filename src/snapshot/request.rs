//! What a caller asks of the manager and what it gets back: the kind of
//! snapshot, its metadata, the listing of a snapshot, and the reports of a
//! snapshot and of a verification.

use super::format::{MAX_BLOBS, MAX_BLOB_LEN, MAX_BLOB_NAME};
use crate::error::{Error, Result};
use crate::types::Lsn;
#[cfg(doc)]
use crate::{
    host::PageStore,
    snapshot::{RestoreReport, SnapshotConfig, StateSnapshotManager},
};

/// One snapshot as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its id; ids grow with time.
    pub id: u64,
    /// The snapshot it is incremental on; `None` for a full snapshot.
    pub parent: Option<u64>,
    /// The LSN of the state it holds, as the host gave it.
    pub lsn: Lsn,
    /// When it was taken, in Unix milliseconds.
    pub created_unix_ms: u64,
    /// Pages of the store at the snapshot.
    pub page_count: u64,
    /// Pages stored in its file (all of them for a full snapshot).
    pub stored_pages: u64,
    /// Length of its file in bytes.
    pub file_bytes: u64,
    /// Its file name inside the snapshot directory.
    pub file_name: String,
}

/// Which kind of snapshot to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SnapshotKind {
    /// Every page.
    Full,
    /// Only the pages changed since the head; an error when there is no head.
    Incremental,
    /// Incremental on the head, unless there is none or its chain has reached
    /// [`SnapshotConfig::max_chain_len`]; then full.
    #[default]
    Auto,
}

/// How the pages of a snapshot were chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeDetection {
    /// A full snapshot: every page.
    Full,
    /// From the host's dirty-page notices.
    DirtyNotices,
    /// By comparing each page's fingerprint (64 bits, see the module docs)
    /// with the parent's.
    Fingerprints,
}

/// What to snapshot and which host metadata to save with it.
#[derive(Clone, Debug, Default)]
pub struct SnapshotRequest {
    pub(super) kind: SnapshotKind,
    pub(super) metadata: Vec<(String, Vec<u8>)>,
}

impl SnapshotRequest {
    /// A request of `kind` with no metadata.
    #[must_use]
    pub fn new(kind: SnapshotKind) -> Self {
        SnapshotRequest {
            kind,
            metadata: Vec::new(),
        }
    }

    /// Saves a small named blob (statistics, configuration) with the
    /// snapshot; it comes back with [`RestoreReport::metadata`]. At most 64
    /// blobs, names of 1..=255 bytes, blobs of at most 1 MiB.
    #[must_use]
    pub fn metadata(mut self, name: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        self.metadata.push((name.into(), data.into()));
        self
    }

    pub(super) fn validate(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::InvalidArgument {
                what: "metadata",
                reason,
            })
        };
        if self.metadata.len() > MAX_BLOBS {
            return bad(format!(
                "{} blobs; at most {MAX_BLOBS}",
                self.metadata.len()
            ));
        }
        for (i, (name, data)) in self.metadata.iter().enumerate() {
            if name.is_empty() || name.len() > MAX_BLOB_NAME {
                return bad(format!("name {name:?} must have 1..={MAX_BLOB_NAME} bytes"));
            }
            if data.len() > MAX_BLOB_LEN {
                return bad(format!(
                    "blob {name:?} has {} bytes; at most {MAX_BLOB_LEN}",
                    data.len()
                ));
            }
            if self.metadata[..i].iter().any(|(n, _)| n == name) {
                return bad(format!("name {name:?} is given twice"));
            }
        }
        Ok(())
    }
}

/// What a snapshot call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The new snapshot.
    pub info: SnapshotInfo,
    /// How its pages were chosen.
    pub detection: ChangeDetection,
    /// Whether its pages were read through a store that verifies its reads
    /// ([`PageStore::verifies_reads`]); see the module docs on restoring
    /// into a store that seals its pages.
    pub pages_verified: bool,
    /// Snapshots deleted by retention afterwards.
    pub deleted: Vec<u64>,
    /// Why retention failed after the snapshot committed, if it did. The
    /// snapshot is listed and is the head either way; the snapshots retention
    /// would have deleted are kept until it next runs (the next snapshot or
    /// [`StateSnapshotManager::apply_retention`]).
    pub retention_error: Option<String>,
}

/// What a verification checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// The chain verified, base first.
    pub chain: Vec<u64>,
    /// Chunks decompressed and checked.
    pub chunks: u64,
    /// Pages checked against their fingerprint (their CRC in format 1).
    pub pages: u64,
}
