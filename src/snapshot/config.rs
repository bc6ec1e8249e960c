//! The configuration of a [`StateSnapshotManager`]: validated by
//! [`SnapshotConfig::build`], which opens the directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::format;
use super::manifest::Retention;
use super::StateSnapshotManager;
use crate::checksum::MIN_PAGE_SIZE;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
#[cfg(doc)]
use crate::types::FailureKind;
use crate::types::FailureSink;

/// The most threads [`SnapshotConfig::threads`] defaults to, however many
/// cores the machine has: each holds two chunks in flight.
pub const DEFAULT_THREADS_MAX: usize = 8;

/// The cores available to the process, 1 when unknown, at most
/// [`DEFAULT_THREADS_MAX`].
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, DEFAULT_THREADS_MAX)
}

/// Configuration of a [`StateSnapshotManager`].
#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    pub(super) dir: PathBuf,
    pub(super) page_size: usize,
    pub(super) chunk_bytes: usize,
    pub(super) threads: usize,
    pub(super) max_chain_len: usize,
    pub(super) retention: Retention,
    pub(super) precheck_restore: bool,
    pub(super) sync_timeout: Duration,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) failure_sink: Option<FailureSink>,
}

impl SnapshotConfig {
    /// Snapshots of pages of `page_size` bytes, kept in `dir` (created
    /// owner-only if missing).
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>, page_size: usize) -> Self {
        SnapshotConfig {
            dir: dir.into(),
            page_size,
            chunk_bytes: 1 << 20,
            threads: default_threads(),
            max_chain_len: 8,
            retention: Retention::KeepLast(8),
            precheck_restore: true,
            sync_timeout: super::writer::DEFAULT_SYNC_TIMEOUT,
            clock: SystemClock::shared(),
            failure_sink: None,
        }
    }

    /// Raw bytes per compressed chunk, rounded down to whole pages.
    /// Default 1 MiB; at least one page, at most 64 MiB. Larger chunks
    /// compress slightly better; a single-page read decodes one chunk.
    #[must_use]
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes;
        self
    }

    /// Threads that compress chunks while a snapshot is written (the
    /// calling thread reads pages and writes the file meanwhile), and that
    /// decompress chunks during a restore; 1..=64. Default: the cores
    /// available to the process ([`std::thread::available_parallelism`]),
    /// at most [`DEFAULT_THREADS_MAX`]. The file written is the same bytes
    /// whatever the count.
    #[must_use]
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Longest chain [`SnapshotKind::Auto`](super::SnapshotKind::Auto) builds before taking a full
    /// snapshot again (a full snapshot counts as 1). Default 8; at least 1.
    #[must_use]
    pub fn max_chain_len(mut self, n: usize) -> Self {
        self.max_chain_len = n;
        self
    }

    /// Which snapshots to keep; applied after every snapshot. Default
    /// [`Retention::KeepLast`]`(8)`.
    #[must_use]
    pub fn retention(mut self, r: Retention) -> Self {
        self.retention = r;
        self
    }

    /// Whether a restore checks every chunk CRC of the chain before it writes
    /// the first page. Default `true`: a damaged chain then leaves the store
    /// untouched. With `false` restore is one pass (faster); every page is
    /// still verified before it is written, but damage found mid-way leaves
    /// the pages restored so far (correct pages of that snapshot) until the
    /// fallback overwrites them, or in place if no older snapshot verifies.
    #[must_use]
    pub fn precheck_restore(mut self, on: bool) -> Self {
        self.precheck_restore = on;
        self
    }

    /// The clock of every time decision: progress rates, the periodic
    /// snapshots' interval, creation times (the wall time when the manager
    /// was built, moved on by this clock) and so retention by age, and the
    /// time of every failure reported. Default [`SystemClock::shared`].
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long a snapshot waits, before its final fsync, for the early sync
    /// (`selfheal-snapshot-sync`, which writes back the file while it is
    /// written) still running. Default 60 s; nonzero; real time. A sync that
    /// does not finish by then (a disk that hangs) is left running, and the
    /// snapshot fails with a timed-out [`Error::Io`], reported as
    /// [`FailureKind::SnapshotFailed`].
    #[must_use]
    pub fn sync_timeout(mut self, timeout: Duration) -> Self {
        self.sync_timeout = timeout;
        self
    }

    /// The failure bus the manager reports its own failures on: a snapshot
    /// that failed ([`FailureKind::SnapshotFailed`]), a periodic-snapshot
    /// thread that died ([`FailureKind::WorkerDied`]). Default: a bus of its
    /// own holding 4 096 unread reports. Give every component the same sink
    /// to see one ordered stream.
    #[must_use]
    pub fn failure_sink(mut self, sink: FailureSink) -> Self {
        self.failure_sink = Some(sink);
        self
    }

    /// Validates, opens (or creates) the directory, takes its lock (held
    /// until the manager, its page sources and its periodic thread are all
    /// dropped) and loads the manifest.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a value out of range;
    /// [`Error::DirectoryLocked`] when another manager (in this process or
    /// another) owns the directory;
    /// [`Error::SnapshotDirUnusable`] when the directory cannot be created or
    /// written; [`Error::UnsupportedVersion`] for a manifest of a newer
    /// format (a damaged one is rebuilt from the snapshot files, see the
    /// module docs); [`Error::PageSizeMismatch`] when the directory holds
    /// snapshots of another page size.
    pub fn build(self) -> Result<StateSnapshotManager> {
        crate::telemetry::describe();
        if !(MIN_PAGE_SIZE..=format::MAX_PAGE_SIZE).contains(&self.page_size) {
            return Err(Error::config(
                "page_size",
                format!(
                    "is {}; it must be {MIN_PAGE_SIZE}..={} bytes",
                    self.page_size,
                    format::MAX_PAGE_SIZE
                ),
            ));
        }
        if self.chunk_bytes < self.page_size || self.chunk_bytes > format::MAX_CHUNK_BYTES {
            return Err(Error::config(
                "chunk_bytes",
                format!(
                    "is {}; it must be between the page size ({}) and {} bytes",
                    self.chunk_bytes,
                    self.page_size,
                    format::MAX_CHUNK_BYTES
                ),
            ));
        }
        if !(1..=64).contains(&self.threads) {
            return Err(Error::config(
                "threads",
                format!("is {}; it must be 1..=64", self.threads),
            ));
        }
        if self.sync_timeout.is_zero() {
            return Err(Error::config(
                "sync_timeout",
                "is zero; give the time an early sync of a snapshot file may take, e.g. 60 s",
            ));
        }
        if self.max_chain_len == 0 {
            return Err(Error::config(
                "max_chain_len",
                "is 0; it must be at least 1",
            ));
        }
        self.retention.validate()?;
        StateSnapshotManager::open(self)
    }
}
