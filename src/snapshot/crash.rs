//! Simulated crashes on the snapshot write path: the [`CrashStep`]s (the
//! rows of the crash table in the [`snapshot`](super) module docs) and the
//! check each step of the path makes; and injected I/O errors
//! ([`SnapshotIo`]) at the path's real writes, fsyncs and renames, which
//! the manager survives (see [a failed snapshot](super#a-failed-snapshot)).

use std::sync::atomic::Ordering;

use super::inner::Inner;
use super::io_step::SnapshotIo;
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
    /// An injected failure of `step`, if one is armed; a no-op otherwise.
    #[allow(clippy::unused_self)]
    pub(super) fn io_fault(&self, step: SnapshotIo) -> Result<()> {
        #[cfg(any(test, feature = "testing"))]
        {
            let mut armed = self.io_fault.lock();
            if let Some((at, errno, times)) = armed.as_mut() {
                if *at == step && *times > 0 {
                    *times -= 1;
                    let errno = *errno;
                    if *times == 0 {
                        *armed = None;
                    }
                    return Err(Error::io(
                        format!(
                            "{step:?} of a snapshot in {} (injected)",
                            self.dir.display()
                        ),
                        std::io::Error::from_raw_os_error(errno),
                    ));
                }
            }
        }
        let _ = step;
        Ok(())
    }

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

/// The fault injection of the `testing` feature.
#[cfg(any(test, feature = "testing"))]
impl super::StateSnapshotManager {
    /// Arms a simulated crash at `step` of the next snapshot write: the
    /// write stops there as a crashed process would, leaving its files as
    /// they are, and the manager is poisoned. Reopen the directory to see
    /// what a restart sees.
    #[cfg(any(test, feature = "testing"))]
    pub fn crash_at(&self, step: CrashStep) {
        self.inner
            .crash_at
            .store(step as u32, std::sync::atomic::Ordering::SeqCst);
    }

    /// Makes the next `times` calls of I/O step `step` of the snapshot
    /// write path fail with the OS error `errno` (28 for `ENOSPC`, 5 for
    /// `EIO`), as a full disk or a failing device does; `times` 0 disarms.
    /// The manager survives it (see [a failed snapshot](super#a-failed-snapshot)).
    #[cfg(any(test, feature = "testing"))]
    pub fn fail_io(&self, step: SnapshotIo, errno: i32, times: u32) {
        *self.inner.io_fault.lock() = (times > 0).then_some((step, errno, times));
    }

    /// Makes the next retention that has snapshots to delete fail before it
    /// rewrites the manifest, with an I/O error, as a full disk would.
    #[cfg(any(test, feature = "testing"))]
    pub fn fail_next_retention(&self) {
        self.inner
            .fail_retention
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
