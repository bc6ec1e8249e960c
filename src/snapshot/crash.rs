//! Simulated crashes on the snapshot write path: the [`CrashStep`]s (the
//! rows of the crash table in the [`snapshot`](super) module docs) and the
//! check each step of the path makes.

use std::sync::atomic::Ordering;

use super::inner::Inner;
use crate::error::{Error, Result};

/// The points of the snapshot write path at which the `testing` feature can
/// simulate a crash (`StateSnapshotManager::crash_at`). They are the rows
/// of the crash table in the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrashStep {
    /// The temporary file exists (header buffered, nothing flushed).
    TmpCreated = 1,
    /// At least one chunk has been written to the temporary file.
    ChunksPartlyWritten = 2,
    /// Everything is written and flushed but not fsynced.
    BeforeFsync = 3,
    /// Fsynced, not renamed.
    BeforeRename = 4,
    /// Renamed, directory not fsynced.
    BeforeDirSync = 5,
    /// Snapshot file durable, manifest not yet written.
    BeforeManifest = 6,
    /// New manifest written and fsynced as a temporary file, not renamed.
    ManifestTmpWritten = 7,
    /// New manifest renamed into place, directory not fsynced.
    ManifestRenamed = 8,
}

impl CrashStep {
    /// Every step, in order.
    pub const ALL: [CrashStep; 8] = [
        CrashStep::TmpCreated,
        CrashStep::ChunksPartlyWritten,
        CrashStep::BeforeFsync,
        CrashStep::BeforeRename,
        CrashStep::BeforeDirSync,
        CrashStep::BeforeManifest,
        CrashStep::ManifestTmpWritten,
        CrashStep::ManifestRenamed,
    ];
}

impl Inner {
    /// A simulated crash point; a no-op unless armed through `crash_at`.
    pub(super) fn crash(&self, step: CrashStep) -> Result<()> {
        if self.crash_at.load(Ordering::SeqCst) == step as u32 {
            self.crash_at.store(0, Ordering::SeqCst);
            let what = format!("simulated crash at {step:?}");
            self.poison(what.clone());
            return Err(Error::io(what, std::io::Error::other("simulated crash")));
        }
        Ok(())
    }
}
