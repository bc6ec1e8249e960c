//! Point-in-time snapshots of a [`PageStore`]: full and incremental, lz4
//! compressed, checksummed per chunk and per page, restorable as a whole or
//! page by page.
//!
//! [`StateSnapshotManager`] owns one directory. Each snapshot is one file
//! (layout in [`format`](mod@format)); the `MANIFEST` lists them and their chains. A full
//! snapshot stores every page; an incremental one stores only the pages that
//! changed since its parent, found either from the host's dirty-page notices
//! ([`StateSnapshotManager::note_dirty`]) or by comparing 64-bit page
//! fingerprints with the parent's (kept in every snapshot's index, so no
//! decompression is needed). Its cost grows with the changed pages, plus
//! one fingerprint pass over the store when there are no notices.
//!
//! # Consistency
//!
//! A snapshot of a store that the host keeps writing is only meaningful if
//! no write lands while it is read. [`StateSnapshotManager::take_snapshot`]
//! therefore takes a [`Consistency`], which is one of:
//!
//! - [`Consistency::Paused`]: the host routes its page writes through a
//!   [`WriteGate`] (holding a [`WriteTicket`] while it writes and notes the
//!   page dirty), and passes a [`WritePause`] — the gate's exclusive guard —
//!   which cannot exist while any ticket does. Writes wait while the snapshot
//!   runs. The host also gives the LSN of the state it paused at.
//! - [`Consistency::View`]: the host gives a read-only point-in-time view of
//!   its store (for example a read transaction of an MVCC engine) and the LSN
//!   of that view; writes to the live store continue.
//!
//! A thread holding a [`WriteTicket`] must not wait for a snapshot of the
//! same gate — in particular it must not call
//! [`PeriodicSnapshots::snapshot_now`]: the snapshot waits for the pause,
//! the pause for the ticket, and neither ever returns.
//!
//! # Writes the library makes: notices and tickets
//!
//! "All of the host's page writes" includes the ones the library makes on
//! the host's behalf: a [rollback](crate::TransactionRollbackManager::rollback)
//! (and the recovery at [open](crate::RollbackConfig::open)), a
//! [repair](crate::DataRepairer), a [restore](StateSnapshotManager::restore)
//! into the live store, the trailers [adoption](crate::CorruptionDetector::adopt)
//! writes. A host that relies on dirty-page notices must see them all:
//!
//! - **Notices.** Every one of those writes goes through the
//!   [`CorruptionDetector`](crate::CorruptionDetector) of a protected store,
//!   which tells its [write observer](crate::DetectorConfig::on_write) of
//!   each page it writes, whoever asked. Wire the observer to
//!   [`note_dirty`](StateSnapshotManager::note_dirty):
//!   `DetectorConfig::on_write(Arc::new(move |p| snaps.note_dirty(p)))`.
//!   Without it, an incremental snapshot taken after a rollback misses the
//!   pages the rollback wrote, and restoring it brings back what the
//!   rollback undid. A host that rolls back through [`RawPages`](crate::RawPages)
//!   over an unprotected store wraps the store it hands over in a
//!   [`PageStore`] whose `write_page` notes the page.
//! - **Tickets.** With [`Consistency::Paused`], every writer through the
//!   detector must hold a [`WriteTicket`] of the gate while it writes — the
//!   library's writers too, since the library cannot take the host's
//!   tickets itself. The host holds one around each call that writes:
//!   `let _t = gate.write(); rollback_manager.rollback(txn)?;` (likewise
//!   around `rollback_all`, `RollbackConfig::open` when recovery may roll
//!   back, `repair_page`/`repair_all`, `adopt`, and a restore into the live
//!   store). The writes then wait for a snapshot in progress, and a
//!   snapshot waits for them; a rollback that ran unpaused under a snapshot
//!   could leave the snapshot with half of it.
//!
//! Dirty-page notices are used only under `Paused`, where the set of noted
//! pages is exactly what changed since the restore point; the set is cleared
//! when such a snapshot commits. A `View` snapshot compares fingerprints and
//! does not clear the set (writes after the view are in it), which keeps the
//! set a superset of the changes — never a subset. After the manager is
//! opened or a restore, and until the next `Paused` snapshot, notices are not
//! trusted (the host may have written while no manager listened; a
//! restore's target need not be the store snapshotted next). A resize is a
//! change too: a host that relies on notices calls
//! [`StateSnapshotManager::note_resized`] whenever the store's page count
//! changes, and every page from the smallest count since the head on is then
//! stored again.
//!
//! # Change detection by fingerprint
//!
//! Without trusted notices an incremental snapshot stores the pages whose
//! fingerprint ([`page_fingerprint`]: XXH3-64 of the page, seeded with its
//! page number) differs from the parent's, and every page past the parent's
//! page count. A changed page whose new contents have the same fingerprint
//! as the old ones is missed, and the snapshot then holds the parent's copy
//! of it: the chance is about 2⁻⁶⁴ per changed page. Hosts that cannot
//! accept that risk take `Paused` snapshots with dirty-page notices, or full
//! snapshots.
//!
//! The fingerprint is not a CRC on purpose: a page sealed with the checksum
//! trailer ends with the CRC32 of its other bytes, so the CRC32 of such a
//! whole page is the same constant (the CRC residue) whatever it holds.
//! Comparing CRCs would find no change at all on a trailer-sealed store, and
//! CRC32 under another initial value is no way out: CRC is affine, so it
//! differs from the first only by a term fixed by the page size. Snapshot files of format 1
//! hold such CRCs: they are still read and restored, and a format-1 head's
//! fingerprints are computed from its chain (decoding it once) before an
//! incremental snapshot compares with them (see [`format`](mod@format)).
//!
//! # The restore point and single-page reads
//!
//! The *head* is the snapshot the store's state descends from: the newest
//! one taken, or the one last restored. Incremental snapshots build on it.
//! [`StateSnapshotManager::page_source`] gives a [`PageSource`] that serves a
//! single page from the head's chain, for repair when no replica has a good
//! copy. **A stale page is never served**: the page is served only if
//! (a) it was not noted dirty since the head, when notices are trusted; and
//! (b) when the caller passes `not_older_than`, the head's LSN is at least
//! that LSN; and (c) at least one of (a)/(b) actually vouches for it — with
//! neither notices nor an LSN the answer is `Ok(false)`. A page at or past
//! the head's page count has no copy (`Ok(false)`), and with trusted notices
//! neither has a page at or past a size the store was resized to since.
//!
//! A restore that fails after it began writing its target (a store write
//! error, or damage found mid-way with no usable fallback) leaves the
//! target's state descending from no snapshot: the dirty notices are no
//! longer trusted, and the page source answers `Ok(false)` for every page
//! until the next successful snapshot or restore. The head stays the one
//! before the restore, so the next incremental snapshot builds on it by
//! comparing fingerprints.
//!
//! # Restore and corruption
//!
//! [`StateSnapshotManager::restore`] restores exactly the snapshot asked
//! for, or fails. It first checks every chunk CRC of the requested
//! snapshot's chain (unless [`SnapshotConfig::precheck_restore`] is off),
//! then decodes chunk by chunk (on [`SnapshotConfig::threads`] threads),
//! checking every page against its fingerprint (its CRC in format 1) in the
//! index before writing it, base first, incrementals after. If the chain is
//! damaged, the restore fails with [`Error::SnapshotDamaged`], which names
//! the damaged file and what is wrong with it. Restoring an older snapshot
//! instead happens only when the caller asks for it
//! ([`StateSnapshotManager::restore_with`] and [`Fallback::NewestOlderGood`]):
//! then the newest older snapshot whose chain verifies is restored, and
//! [`RestoreReport::fallback`] says which snapshots were refused, why, and
//! which pages of the requested state the restored one lacks
//! ([`LostPages`]). Every page written has verified, so wrong data is never
//! restored; if damage is found only mid-way (one-pass restores), the pages
//! already written are correct pages of the damaged snapshot, and the error
//! says the target was written (a fallback, when allowed, overwrites them).
//!
//! # Restoring into a store that seals its pages
//!
//! The library never seals bytes it has not verified. A snapshot records
//! whether its pages were read through a store that verifies its reads
//! ([`PageStore::verifies_reads`]; [`SnapshotReport::pages_verified`]).
//! The pages of a verified snapshot are written to any target as they are,
//! and so are every snapshot's pages to a target that seals nothing (a raw
//! store). A member of the chain
//! whose pages were *not* verified (a snapshot of the host's raw store,
//! e.g. a [`Consistency::View`] of it, or a file
//! written before the flag existed) may hold pages that had rotted when it
//! was taken; before such a page is written to a target that seals what it
//! writes, the target checks it ([`PageStore::check_unverified`]):
//!
//! - the detector in the trailer placement verifies the page's own
//!   trailer, which a page sealed before the snapshot was taken carries (a
//!   free page holding junk fails too: snapshots through the detector store
//!   free pages as zeros instead);
//! - the detector in the sidecar placement refuses every such page (its
//!   table keeps only the checksums of the pages as they are now): restore
//!   into the raw store and adopt it into a new sidecar table after the
//!   host's integrity check, or take snapshots through the detector.
//!
//! A page that fails gives [`Error::UnverifiedSnapshot`], naming the
//! snapshot and the page. With
//! [`SnapshotConfig::precheck_restore`] (the default) every such page is checked before anything is written (one
//! more decoding pass over the unverified members), so a refusal leaves the
//! target untouched; without it, each page is checked just before its chunk
//! is written, and a refusal says that pages were written. A refusal is not
//! damage of the snapshot: no fallback is tried.
//!
//! Pages are written a chunk at a time with [`PageStore::write_pages`], so
//! a detector with a durable sidecar table pays one log fsync per chunk, not
//! one per page.
//!
//! A page that the detector calls unallocated when a snapshot reads it
//! through the detector has no bytes anybody vouches for: it is stored as
//! zeros (as good as any contents for a free page), and restored as zeros —
//! sealed, in a detector, so it verifies and raises no alarm, while the
//! host's metadata, restored with the rest, still calls it free.
//!
//! # Store size
//!
//! A snapshot records the store's page count and restores a store of that
//! count: the target is resized with [`PageStore::resize`] before the first
//! page is written. A target that cannot resize is refused with
//! [`Error::RestoreTargetSize`] before anything is written, unless it is
//! larger and the caller keeps its extra pages
//! ([`RestoreOptions::keep_extra_pages`]). An incremental snapshot taken
//! after the store shrank holds no page past its end; one taken after it
//! grew holds every page past its parent's count; so every chain can be
//! restored at every size it went through.
//!
//! # Crash safety
//!
//! A snapshot is written to `snap-….shs.tmp`, flushed, fsynced, renamed to
//! its final name, and the directory fsynced; only then is the manifest
//! replaced (temporary file, fsync, rename, fsync of the directory). A crash
//! at each step ([`CrashStep`]) leaves:
//!
//! | crash after / before                          | state at next open                                        |
//! |-----------------------------------------------|-----------------------------------------------------------|
//! | tmp created, part of it written, before fsync | old manifest; stray `.tmp` deleted at open                |
//! | before rename                                 | same                                                      |
//! | renamed, before directory fsync / manifest    | old manifest; unlisted `snap-*.shs` deleted at open       |
//! | manifest tmp written, before its rename       | old manifest; `MANIFEST.tmp` deleted at open              |
//! | manifest renamed                              | new snapshot listed and usable                            |
//!
//! (When no manifest exists yet — a crash during the very first snapshot —
//! the open rebuilds one as below, so a complete renamed file is listed.)
//! While a snapshot file is written, a helper thread (`selfheal-snapshot-sync`)
//! starts writeback early with `fdatasync`, so that disk writes overlap
//! compression; durability still rests on the final fsync.
//!
//! A damaged (or missing) manifest is rebuilt at open from the snapshot
//! files whose header, footer and index check and whose chain is complete
//! ([`StateSnapshotManager::manifest_rebuilt`] says so); a manifest of a
//! newer format version is an error, never rebuilt over. A snapshot file
//! that cannot be read during the rebuild (an I/O error, as opposed to
//! content that does not check) fails the open with that error, and nothing
//! is changed. Files the rebuild leaves out are never deleted by it: each is
//! renamed `snap-….shs.orphan` and no longer used; the host may inspect and
//! delete them.
//!
//! Earlier snapshots are never touched by a snapshot write. Retention
//! rewrites the manifest first and deletes files after, so a crash in between
//! leaves only unlisted files, deleted at the next open that loads the
//! manifest (an open that rebuilds it renames them instead, as above). A
//! failure after the
//! manifest rename (a failed directory fsync) poisons the manager
//! ([`Error::Poisoned`]): reopen it.
//!
//! Files are created owner-only (`0o600`), and a directory the manager
//! creates is `0o700`; the permissions of a directory that already exists
//! are left as they are (the host owns them); each
//! manifest entry's file name must be [`snapshot_file_name`] of its id,
//! checked on load, so the manifest can never name a file outside the
//! directory, the manifest itself, or another snapshot's file.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::checksum::MIN_PAGE_SIZE;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::host::{PageSource, PageStore};
use crate::types::{Lsn, PageId};

mod chain;
mod dirty;
mod fingerprint;
pub use fingerprint::page_fingerprint;
pub mod format;
pub use format::{decode_manifest, decode_snapshot, SnapshotSummary};
mod manifest;
mod periodic;
mod restore;
mod take;
mod writer;

use dirty::DirtyPages;
use format::{SnapshotReader, MAX_BLOBS, MAX_BLOB_LEN, MAX_BLOB_NAME};
pub use manifest::{snapshot_file_name, Retention};
use manifest::{Manifest, MANIFEST_NAME};
pub use periodic::{PeriodicConfig, PeriodicSnapshots, PeriodicStats};
pub use restore::{Fallback, FallbackReport, LostPages, RestoreOptions, RestoreReport};

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

/// The gate through which a host's page writes pass, so that a snapshot can
/// prove that none is in flight.
///
/// ```
/// use selfheal::snapshot::WriteGate;
/// let gate = WriteGate::new();
/// {
///     let _ticket = gate.write(); // held while the host writes a page
/// }
/// let _pause = gate.pause(); // no ticket exists while this lives
/// ```
#[derive(Debug, Default)]
pub struct WriteGate {
    lock: RwLock<()>,
}

/// Held by the host while it writes (many may exist at once).
#[derive(Debug)]
pub struct WriteTicket<'a>(#[allow(dead_code)] RwLockReadGuard<'a, ()>);

/// Proof that no write is in flight and none can start while it lives.
#[derive(Debug)]
pub struct WritePause<'a>(#[allow(dead_code)] RwLockWriteGuard<'a, ()>);

impl WriteGate {
    /// A gate with no writes in flight.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Enters the gate for a write; blocks while a pause is held.
    pub fn write(&self) -> WriteTicket<'_> {
        WriteTicket(self.lock.read())
    }

    /// Waits for in-flight writes to finish and holds off new ones until the
    /// returned guard is dropped.
    pub fn pause(&self) -> WritePause<'_> {
        WritePause(self.lock.write())
    }
}

/// How a snapshot is made consistent (see the module docs). The pause must
/// be one of the gate that all of the host's page writes pass through; the
/// view must not change while the snapshot runs.
#[derive(Clone, Copy)]
pub enum Consistency<'a> {
    /// Read `store` while the host's writes are paused by `pause`; the state
    /// is the one at `lsn`.
    Paused {
        /// The live store.
        store: &'a dyn PageStore,
        /// Proof that no write is in flight.
        pause: &'a WritePause<'a>,
        /// The LSN of the paused state.
        lsn: Lsn,
    },
    /// Read a point-in-time `view` of the store, whose state is the one at `lsn`.
    View {
        /// A read-only view that does not change while the snapshot runs.
        view: &'a dyn PageStore,
        /// The LSN of the view.
        lsn: Lsn,
    },
}

impl fmt::Debug for Consistency<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consistency::Paused { lsn, .. } => write!(f, "Paused {{ lsn: {lsn} }}"),
            Consistency::View { lsn, .. } => write!(f, "View {{ lsn: {lsn} }}"),
        }
    }
}

/// Which kind of snapshot to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
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
    kind: SnapshotKind,
    metadata: Vec<(String, Vec<u8>)>,
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

    fn validate(&self) -> Result<()> {
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

/// A long-running operation of the manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Taking a snapshot.
    Snapshot,
    /// Restoring the store.
    Restore,
    /// Verifying a chain.
    Verify,
    /// Merging a chain into a full snapshot.
    Merge,
}

/// Progress of the running operation, readable from any thread.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<ProgressInner>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct ProgressInner {
    op: AtomicU8,
    done: AtomicU64,
    total: AtomicU64,
    started_ns: AtomicU64,
}

/// A reading of [`Progress`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProgressReport {
    /// The running operation, `None` when idle.
    pub operation: Option<Operation>,
    /// Raw page bytes processed so far.
    pub bytes_done: u64,
    /// Raw page bytes the operation will process (an upper bound for an
    /// incremental snapshot found by fingerprints: the pages compared).
    pub bytes_total: u64,
    /// Bytes per second since the operation started.
    pub rate_bytes_per_s: f64,
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

impl Progress {
    /// The current reading.
    #[must_use]
    pub fn get(&self) -> ProgressReport {
        let op = match self.inner.op.load(Ordering::Acquire) {
            1 => Some(Operation::Snapshot),
            2 => Some(Operation::Restore),
            3 => Some(Operation::Verify),
            4 => Some(Operation::Merge),
            _ => None,
        };
        let done = self.inner.done.load(Ordering::Relaxed);
        let elapsed = self
            .clock
            .now_ns()
            .saturating_sub(self.inner.started_ns.load(Ordering::Relaxed));
        ProgressReport {
            operation: op,
            bytes_done: done,
            bytes_total: self.inner.total.load(Ordering::Relaxed),
            rate_bytes_per_s: if elapsed == 0 {
                0.0
            } else {
                done as f64 * 1e9 / elapsed as f64
            },
        }
    }

    fn start(&self, op: Operation, total: u64) -> ProgressGuard<'_> {
        self.inner.done.store(0, Ordering::Relaxed);
        self.inner.total.store(total, Ordering::Relaxed);
        self.inner
            .started_ns
            .store(self.clock.now_ns(), Ordering::Relaxed);
        let code = match op {
            Operation::Snapshot => 1,
            Operation::Restore => 2,
            Operation::Verify => 3,
            Operation::Merge => 4,
        };
        self.inner.op.store(code, Ordering::Release);
        ProgressGuard(self)
    }

    fn add(&self, n: u64) {
        self.inner.done.fetch_add(n, Ordering::Relaxed);
    }
}

struct ProgressGuard<'a>(&'a Progress);

impl Drop for ProgressGuard<'_> {
    fn drop(&mut self) {
        self.0.inner.op.store(0, Ordering::Release);
    }
}

/// The points of the snapshot write path at which the `testing` feature can
/// simulate a crash (`StateSnapshotManager::crash_at`). They are the rows
/// of the crash table in the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Configuration of a [`StateSnapshotManager`].
#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    dir: PathBuf,
    page_size: usize,
    chunk_bytes: usize,
    threads: usize,
    max_chain_len: usize,
    retention: Retention,
    precheck_restore: bool,
    clock: Option<Arc<dyn Clock>>,
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
            threads: 2,
            max_chain_len: 8,
            retention: Retention::KeepLast(8),
            precheck_restore: true,
            clock: None,
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

    /// Threads used to compress and decompress chunks. Default 2; 1..=64.
    #[must_use]
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Longest chain [`SnapshotKind::Auto`] builds before taking a full
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

    /// The clock for progress rates. Default [`SystemClock`].
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates, opens (or creates) the directory and loads the manifest.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a value out of range;
    /// [`Error::SnapshotDirUnusable`] when the directory cannot be created or
    /// written; [`Error::UnsupportedVersion`] for a manifest of a newer
    /// format (a damaged one is rebuilt from the snapshot files, see the
    /// module docs); [`Error::PageSizeMismatch`] when the directory holds
    /// snapshots of another page size.
    pub fn build(self) -> Result<StateSnapshotManager> {
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

#[derive(Clone, Debug)]
struct Head {
    id: u64,
    lsn: Lsn,
    page_count: u64,
    chain: Vec<u64>,
}

struct State {
    manifest: Manifest,
    /// The head's page fingerprints, once read or computed.
    head_fps: Option<(u64, Arc<Vec<u64>>)>,
}

struct Inner {
    dir: PathBuf,
    page_size: usize,
    chunk_pages: usize,
    threads: usize,
    max_chain_len: usize,
    retention: Retention,
    precheck_restore: bool,
    state: Mutex<State>,
    head: RwLock<Option<Head>>,
    dirty: DirtyPages,
    /// Set when a restore failed after it began writing its target: the
    /// store's state then descends from no snapshot, so the page source
    /// serves nothing until the next successful snapshot or restore.
    head_unknown: AtomicBool,
    readers: Mutex<HashMap<u64, Arc<SnapshotReader>>>,
    progress: Progress,
    poisoned: Mutex<Option<String>>,
    crash_at: std::sync::atomic::AtomicU32,
    #[cfg(any(test, feature = "testing"))]
    fail_retention: AtomicBool,
    rebuilt: Option<String>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateSnapshotManager")
            .field("dir", &self.dir)
            .field("page_size", &self.page_size)
            .field("head", &self.head.read().as_ref().map(|h| h.id))
            .finish_non_exhaustive()
    }
}

/// Readers kept open at most; older ones are dropped and reopened on demand.
const MAX_OPEN_READERS: usize = 64;

/// Full and incremental snapshots of a [`PageStore`], restore of the whole
/// store or of single pages, verification, retention and merging.
///
/// ```
/// use selfheal::{Lsn, MemStore, PageId, PageStore};
/// use selfheal::snapshot::{Consistency, SnapshotConfig, SnapshotKind, SnapshotRequest, WriteGate};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = MemStore::new(4096, 16)?;
/// let gate = WriteGate::new();
/// let snaps = SnapshotConfig::new(dir.path(), 4096).build()?;
///
/// {
///     let _w = gate.write();
///     store.write_page(PageId(3), &[1u8; 4096])?;
///     snaps.note_dirty(PageId(3));
/// }
/// let pause = gate.pause();
/// let full = snaps.take_snapshot(
///     Consistency::Paused { store: &store, pause: &pause, lsn: Lsn(1) },
///     SnapshotRequest::new(SnapshotKind::Full).metadata("stats", b"rows=1".to_vec()),
/// )?;
/// drop(pause);
///
/// store.write_page(PageId(3), &[2u8; 4096])?; // a later change...
/// let report = snaps.restore(full.info.id, &store)?; // ...undone
/// let mut buf = vec![0u8; 4096];
/// store.read_page(PageId(3), &mut buf)?;
/// assert_eq!(buf[0], 1);
/// assert_eq!(report.metadata[0].1, b"rows=1");
/// # Ok::<(), selfheal::Error>(())
/// ```
#[derive(Debug)]
pub struct StateSnapshotManager {
    inner: Arc<Inner>,
}

/// The [`PageSource`] of a manager: single pages from the head's chain,
/// never stale ones (see the module docs for the rule).
#[derive(Debug, Clone)]
pub struct SnapshotPageSource {
    inner: Arc<Inner>,
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn dir_unusable(dir: &Path, reason: impl fmt::Display) -> Error {
    Error::SnapshotDirUnusable {
        path: dir.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Appended to the name of a snapshot file that a manifest rebuild left out.
const ORPHAN_SUFFIX: &str = ".orphan";

/// Whether `name` is one of the library's snapshot file names.
fn is_snapshot_name(name: &str) -> bool {
    name.len() == 25
        && name.starts_with("snap-")
        && name.ends_with(".shs")
        && name[5..21].bytes().all(|b| b.is_ascii_hexdigit())
}

fn has_snapshot_files(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| is_snapshot_name(&e.file_name().to_string_lossy()))
    })
}

/// A manifest listing every snapshot file in `dir` whose header, footer and
/// index check and whose chain is complete. Files that do not check
/// ([`Error::CorruptFile`], [`Error::UnsupportedVersion`], or a name that
/// does not match the id inside) are left out (and renamed `….orphan` by
/// the caller).
///
/// # Errors
/// [`Error::PageSizeMismatch`] when a valid file has another page size
/// (the directory belongs to another store: nothing is deleted);
/// [`Error::SnapshotDirUnusable`] when the directory cannot be listed; any
/// other error opening a snapshot file (for example [`Error::Io`]), since a
/// file that cannot be read now may be intact.
fn rebuild_manifest(dir: &Path, page_size: usize) -> Result<Manifest> {
    let rd = fs::read_dir(dir).map_err(|e| dir_unusable(dir, format!("cannot list it: {e}")))?;
    let mut found: Vec<SnapshotInfo> = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_snapshot_name(&name) {
            continue;
        }
        let r = match SnapshotReader::open_file(&e.path()) {
            Ok(r) if snapshot_file_name(r.header.id) == name => r,
            Ok(_) => {
                tracing::warn!(file = %name, "snapshot file's name does not match its id; left out");
                continue;
            }
            Err(err @ (Error::CorruptFile { .. } | Error::UnsupportedVersion { .. })) => {
                tracing::warn!(file = %name, %err, "snapshot file does not check; left out");
                continue;
            }
            Err(err) => return Err(err),
        };
        if r.header.page_size != page_size {
            return Err(Error::PageSizeMismatch {
                what: format!("snapshot file {}", e.path().display()),
                expected: page_size,
                actual: r.header.page_size,
            });
        }
        let file_bytes = e.metadata().map_or(0, |m| m.len());
        found.push(SnapshotInfo {
            id: r.header.id,
            parent: r.header.parent,
            lsn: r.header.lsn,
            created_unix_ms: r.header.created_unix_ms,
            page_count: r.header.page_count,
            stored_pages: r.index.stored_pages(r.header.page_count),
            file_bytes,
            file_name: name,
        });
    }
    found.sort_by_key(|e| e.id);
    let mut m = Manifest::new(page_size);
    for e in found {
        if e.parent.is_none_or(|p| m.get(p).is_some()) {
            m.next_id = e.id.checked_add(1).ok_or_else(|| {
                Error::corrupt_file(dir.join(&e.file_name), 8, "snapshot id is u64::MAX")
            })?;
            m.entries.push(e);
        }
    }
    Ok(m)
}

impl StateSnapshotManager {
    fn open(cfg: SnapshotConfig) -> Result<Self> {
        let dir = cfg.dir;
        {
            let mut b = fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(&dir)
                .map_err(|e| dir_unusable(&dir, format!("cannot create it: {e}")))?;
        }
        let probe = dir.join(".selfheal-probe.tmp");
        fsutil::open_regular(
            fsutil::private_create_options()
                .write(true)
                .create(true)
                .truncate(true),
            &probe,
            "creating",
        )
        .map_err(|e| dir_unusable(&dir, format!("cannot create files in it: {e}")))?;
        let _ = fs::remove_file(&probe);
        let mpath = dir.join(MANIFEST_NAME);
        let mut rebuilt = None;
        let manifest = match fsutil::read_optional(&mpath)? {
            Some(bytes) => match Manifest::decode(&mpath, &bytes) {
                Ok(m) => m,
                Err(e @ Error::CorruptFile { .. }) => {
                    rebuilt = Some(e.to_string());
                    rebuild_manifest(&dir, cfg.page_size)?
                }
                Err(e) => return Err(e),
            },
            None if has_snapshot_files(&dir) => {
                rebuilt = Some("the manifest is missing".to_owned());
                rebuild_manifest(&dir, cfg.page_size)?
            }
            None => Manifest::new(cfg.page_size),
        };
        if let Some(why) = &rebuilt {
            tracing::warn!(reason = %why, snapshots = manifest.entries.len(), "rebuilt the snapshot manifest from the snapshot files");
            fsutil::atomic_write(&mpath, &manifest.encode())?;
        }
        if manifest.page_size != cfg.page_size {
            return Err(Error::PageSizeMismatch {
                what: format!("snapshot directory {}", dir.display()),
                expected: cfg.page_size,
                actual: manifest.page_size,
            });
        }
        // Leftovers of a crash: temporary files and unlisted snapshot files.
        // A manifest rebuilt in this open may have left out a file by
        // mistake, so unlisted snapshot files are then kept, renamed.
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let stray_tmp = name == format!("{MANIFEST_NAME}.tmp")
                    || name.strip_suffix(".tmp").is_some_and(is_snapshot_name);
                let unlisted = is_snapshot_name(&name)
                    && !manifest.entries.iter().any(|m| m.file_name == name);
                if unlisted && rebuilt.is_some() {
                    let to = dir.join(format!("{name}{ORPHAN_SUFFIX}"));
                    tracing::warn!(file = %name, "snapshot file left out of the rebuilt manifest; renamed to {name}{ORPHAN_SUFFIX}");
                    if let Err(err) = fs::rename(e.path(), &to) {
                        tracing::warn!(file = %name, %err, "cannot rename an unlisted snapshot file; left as it is");
                    }
                } else if stray_tmp || unlisted {
                    tracing::info!(file = %name, "removing leftover of an interrupted snapshot");
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let head = match manifest.entries.last() {
            Some(e) => Some(Head {
                id: e.id,
                lsn: e.lsn,
                page_count: e.page_count,
                chain: manifest.chain(e.id)?,
            }),
            None => None,
        };
        let clock = cfg.clock.unwrap_or_else(SystemClock::shared);
        let inner = Inner {
            chunk_pages: (cfg.chunk_bytes / cfg.page_size).max(1),
            page_size: cfg.page_size,
            threads: cfg.threads,
            max_chain_len: cfg.max_chain_len,
            retention: cfg.retention,
            precheck_restore: cfg.precheck_restore,
            state: Mutex::new(State {
                manifest,
                head_fps: None,
            }),
            head: RwLock::new(head),
            dirty: DirtyPages::default(),
            head_unknown: AtomicBool::new(false),
            readers: Mutex::new(HashMap::new()),
            progress: Progress {
                inner: Arc::default(),
                clock,
            },
            poisoned: Mutex::new(None),
            rebuilt,
            crash_at: std::sync::atomic::AtomicU32::new(0),
            #[cfg(any(test, feature = "testing"))]
            fail_retention: AtomicBool::new(false),
            dir,
        };
        Ok(StateSnapshotManager {
            inner: Arc::new(inner),
        })
    }

    /// Why the manifest was rebuilt from the snapshot files when the
    /// manager was opened (it was damaged or missing), if it was.
    #[must_use]
    pub fn manifest_rebuilt(&self) -> Option<&str> {
        self.inner.rebuilt.as_deref()
    }

    /// The snapshots, ascending by id.
    #[must_use]
    pub fn snapshots(&self) -> Vec<SnapshotInfo> {
        self.inner.state.lock().manifest.entries.clone()
    }

    /// The head (restore point): the snapshot the store's state descends from.
    #[must_use]
    pub fn head(&self) -> Option<u64> {
        self.inner.head.read().as_ref().map(|h| h.id)
    }

    /// The page size of the snapshots.
    #[must_use]
    pub fn page_size(&self) -> usize {
        self.inner.page_size
    }

    /// Notes that the host wrote `page` (call it while holding the
    /// [`WriteTicket`] of that write). Lock-free on the common path.
    ///
    /// The library's own writes (rollback, repair, restore, adoption) need
    /// noting too: wire the detector's
    /// [write observer](crate::DetectorConfig::on_write) here (see
    /// [writes the library makes](self#writes-the-library-makes-notices-and-tickets)).
    pub fn note_dirty(&self, page: PageId) {
        self.inner.dirty.note(page.0);
    }

    /// Notes that the host resized the store to `page_count` pages (call it
    /// while holding the [`WriteTicket`] of that resize, as for a write).
    /// Every page at or past the smaller of the old and new counts then
    /// counts as changed since the head: pages dropped by a shrink that come
    /// back later are new pages, whatever they hold. A host that resizes
    /// without calling this while relying on `Paused` snapshots with notices
    /// gets incrementals that miss those pages, as with an unnoted write.
    pub fn note_resized(&self, page_count: u64) {
        self.inner.dirty.resized(page_count);
    }

    /// Whether dirty-page notices are currently trusted (see the module docs).
    #[must_use]
    pub fn dirty_notices_trusted(&self) -> bool {
        self.inner.dirty.trusted()
    }

    /// A handle to read the progress of the running operation from any thread.
    #[must_use]
    pub fn progress(&self) -> Progress {
        self.inner.progress.clone()
    }

    /// The page source that serves single pages from the head's chain.
    #[must_use]
    pub fn page_source(&self) -> SnapshotPageSource {
        SnapshotPageSource {
            inner: self.inner.clone(),
        }
    }

    pub(crate) fn shared(&self) -> StateSnapshotManager {
        StateSnapshotManager {
            inner: self.inner.clone(),
        }
    }

    /// Arms a simulated crash at `step` of the next snapshot write: the
    /// write stops there as a crashed process would, leaving its files as
    /// they are, and the manager is poisoned. Reopen the directory to see
    /// what a restart sees.
    #[cfg(any(test, feature = "testing"))]
    pub fn crash_at(&self, step: CrashStep) {
        self.inner.crash_at.store(step as u32, Ordering::SeqCst);
    }

    /// Makes the next retention that has snapshots to delete fail before it
    /// rewrites the manifest, with an I/O error, as a full disk would.
    #[cfg(any(test, feature = "testing"))]
    pub fn fail_next_retention(&self) {
        self.inner.fail_retention.store(true, Ordering::SeqCst);
    }

    /// Takes a snapshot made consistent by `source` (see the module docs).
    /// Retention is applied after it commits; a retention failure does not
    /// fail the call (the snapshot is listed by then): it is logged and
    /// reported in [`SnapshotReport::retention_error`].
    ///
    /// # Errors
    /// [`Error::PageSizeMismatch`] for a store of another page size;
    /// [`Error::InvalidArgument`] for bad metadata or an incremental
    /// snapshot without a head; a store or I/O error while the snapshot is
    /// written (the snapshot is then not listed and earlier ones are
    /// untouched); [`Error::Poisoned`] after a failure that left the
    /// manifest's durability unknown.
    pub fn take_snapshot(
        &self,
        source: Consistency<'_>,
        request: SnapshotRequest,
    ) -> Result<SnapshotReport> {
        self.inner.take_snapshot(source, request)
    }

    /// Restores `target` to exactly snapshot `id`: the same as
    /// [`restore_with`](Self::restore_with) with [`RestoreOptions::new`]
    /// (no fallback; `target` resized to the snapshot's page count).
    ///
    /// # Errors
    /// As `restore_with`; in particular [`Error::SnapshotDamaged`] when the
    /// chain of `id` does not verify — no other snapshot is restored instead.
    pub fn restore(&self, id: u64, target: &dyn PageStore) -> Result<RestoreReport> {
        self.restore_with(id, target, RestoreOptions::new())
    }

    /// Restores `target` to snapshot `id` — or, only when `options` allow a
    /// [`Fallback`], to the newest older snapshot whose chain verifies,
    /// reported in [`RestoreReport::fallback`] with the pages it lost. The
    /// host must not write to `target` meanwhile.
    ///
    /// `target` is first resized to the snapshot's page count with
    /// [`PageStore::resize`] (see [`RestoreOptions::keep_extra_pages`] for
    /// a larger target that should keep its extra pages). Afterwards the
    /// restored snapshot is the head; dirty-page notices are trusted again
    /// only after the next [`Consistency::Paused`] snapshot (the manager
    /// cannot know that `target` is the store the host snapshots next, so
    /// the next incremental snapshot compares fingerprints).
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`] for an unknown id;
    /// [`Error::PageSizeMismatch`]; [`Error::SnapshotDamaged`] when `id`'s
    /// chain does not verify and no fallback is allowed (it names the
    /// damaged file and says whether `target` was written);
    /// [`Error::NoUsableSnapshot`] when a fallback is allowed and no
    /// candidate verifies; [`Error::UnverifiedSnapshot`] when `target` seals
    /// what it writes (a detector) and a page of a member whose pages were
    /// not verified cannot be vouched for (see
    /// [restoring into a store that seals its pages](self#restoring-into-a-store-that-seals-its-pages);
    /// no fallback is tried); [`Error::RestoreTargetSize`] when `target` must
    /// change size and cannot (nothing is written then); a store error from
    /// resizing or writing `target` (no fallback is tried then). After an
    /// error that came once `target` was resized or written, dirty-page
    /// notices are not trusted and the page source serves no page until
    /// the next successful snapshot or restore.
    pub fn restore_with(
        &self,
        id: u64,
        target: &dyn PageStore,
        options: RestoreOptions,
    ) -> Result<RestoreReport> {
        self.inner.restore(id, target, options)
    }

    /// Restores exactly the newest snapshot (as [`restore`](Self::restore)).
    ///
    /// # Errors
    /// As `restore`; [`Error::NoUsableSnapshot`] when there is no snapshot.
    pub fn restore_latest(&self, target: &dyn PageStore) -> Result<RestoreReport> {
        let newest = self
            .inner
            .state
            .lock()
            .manifest
            .entries
            .last()
            .map(|e| e.id);
        match newest {
            Some(id) => self.restore(id, target),
            None => Err(Error::NoUsableSnapshot {
                reason: "the directory holds no snapshot".into(),
            }),
        }
    }

    /// Verifies snapshot `id` and every ancestor: every chunk CRC, every
    /// decompressed length and every page's fingerprint (its CRC in format
    /// 1), and that the chain fits together, without restoring anything.
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`]; [`Error::CorruptFile`] naming the first
    /// damage found.
    pub fn verify(&self, id: u64) -> Result<VerifyReport> {
        self.inner.verify(id)
    }

    /// Reads `page` as it was in snapshot `id` into `buf`. `Ok(false)` when
    /// the page is past the snapshot's page count.
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`]; [`Error::BufferSize`];
    /// [`Error::CorruptFile`] when the chunk holding it is damaged.
    pub fn read_page_at(&self, id: u64, page: PageId, buf: &mut [u8]) -> Result<bool> {
        self.inner.check_alive()?;
        let chain = self.inner.state.lock().manifest.chain(id)?;
        self.inner.read_from_chain(&chain, page, buf)
    }

    /// Writes a new full snapshot holding the state of `id` (same LSN and
    /// metadata), so that `id`'s chain is no longer needed once retention
    /// lets it go. Returns `id` itself if it is already full. When `id` is
    /// the head, the new snapshot becomes the head.
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`]; [`Error::CorruptFile`] when the chain is
    /// damaged; I/O errors as for [`take_snapshot`](Self::take_snapshot).
    pub fn merge(&self, id: u64) -> Result<SnapshotInfo> {
        self.inner.merge(id)
    }

    /// Applies the configured retention now; returns the deleted ids.
    ///
    /// # Errors
    /// I/O errors writing the manifest.
    pub fn apply_retention(&self) -> Result<Vec<u64>> {
        self.apply_retention_at(now_unix_ms())
    }

    /// Applies the configured retention as if the time were `now_unix_ms`.
    ///
    /// # Errors
    /// As [`apply_retention`](Self::apply_retention).
    pub fn apply_retention_at(&self, now_unix_ms: u64) -> Result<Vec<u64>> {
        self.inner.check_alive()?;
        let mut st = self.inner.state.lock();
        self.inner.retain(&mut st, now_unix_ms)
    }
}

impl Inner {
    fn check_alive(&self) -> Result<()> {
        match &*self.poisoned.lock() {
            Some(reason) => Err(Error::Poisoned {
                component: "snapshot manager",
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison(&self, reason: String) {
        tracing::error!(%reason, "snapshot manager poisoned");
        *self.poisoned.lock() = Some(reason);
    }

    fn crashed(&self) -> bool {
        self.poisoned.lock().is_some()
    }

    /// A simulated crash point; a no-op unless armed through `crash_at`.
    fn crash(&self, step: CrashStep) -> Result<()> {
        if self.crash_at.load(Ordering::SeqCst) == step as u32 {
            self.crash_at.store(0, Ordering::SeqCst);
            let what = format!("simulated crash at {step:?}");
            self.poison(what.clone());
            return Err(Error::io(what, std::io::Error::other("simulated crash")));
        }
        Ok(())
    }

    fn check_page_size(&self, what: &str, ps: usize) -> Result<()> {
        if ps != self.page_size {
            return Err(Error::PageSizeMismatch {
                what: what.to_owned(),
                expected: self.page_size,
                actual: ps,
            });
        }
        Ok(())
    }

    fn reader(&self, info: &SnapshotInfo) -> Result<Arc<SnapshotReader>> {
        if let Some(r) = self.readers.lock().get(&info.id) {
            return Ok(r.clone());
        }
        let path = self.dir.join(&info.file_name);
        let r = SnapshotReader::open_file(&path)?;
        let h = &r.header;
        if h.id != info.id
            || h.parent != info.parent
            || h.lsn != info.lsn
            || h.page_count != info.page_count
            || h.page_size != self.page_size
        {
            return Err(Error::corrupt_file(
                &path,
                0,
                format!(
                    "header does not match the manifest entry of snapshot {}",
                    info.id
                ),
            ));
        }
        let r = Arc::new(r);
        let mut cache = self.readers.lock();
        if cache.len() >= MAX_OPEN_READERS {
            cache.clear();
        }
        cache.insert(info.id, r.clone());
        Ok(r)
    }

    fn reader_by_id(&self, st: &State, id: u64) -> Result<Arc<SnapshotReader>> {
        let info = st.manifest.get(id).ok_or(Error::SnapshotNotFound { id })?;
        self.reader(info)
    }
}
impl PageSource for SnapshotPageSource {
    fn name(&self) -> String {
        match &*self.inner.head.read() {
            Some(h) => format!("snapshot {}", h.id),
            None => "snapshot (none taken)".into(),
        }
    }

    fn read_page(&self, page: PageId, not_older_than: Option<Lsn>, buf: &mut [u8]) -> Result<bool> {
        let inner = &self.inner;
        inner.check_alive()?;
        if buf.len() != inner.page_size {
            return Err(Error::BufferSize {
                expected: inner.page_size,
                actual: buf.len(),
            });
        }
        let Some(head) = inner.head.read().clone() else {
            return Ok(false);
        };
        if inner.head_unknown.load(Ordering::Acquire) {
            return Ok(false);
        }
        let trusted = inner.dirty.trusted();
        if trusted && inner.dirty.contains(page.0) {
            return Ok(false);
        }
        match not_older_than {
            Some(lsn) if head.lsn < lsn => return Ok(false),
            None if !trusted => return Ok(false),
            _ => {}
        }
        inner.read_from_chain(&head.chain, page, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{ChecksumPlacement, ChecksumTable};
    use crate::corruption::DetectorConfig;
    use crate::store::MemStore;

    fn snap(
        m: &StateSnapshotManager,
        store: &dyn PageStore,
        gate: &WriteGate,
        lsn: u64,
        kind: SnapshotKind,
    ) -> SnapshotReport {
        let pause = gate.pause();
        m.take_snapshot(
            Consistency::Paused {
                store,
                pause: &pause,
                lsn: Lsn(lsn),
            },
            SnapshotRequest::new(kind),
        )
        .unwrap()
    }

    #[test]
    fn incremental_uses_notices_then_fingerprints() {
        for placement in [
            ChecksumPlacement::Trailer,
            ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(128).unwrap())),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let raw = Arc::new(MemStore::new(128, 40).unwrap());
            let det = DetectorConfig::new(placement).build(raw.clone()).unwrap();
            let write = |p: u64, fill: u8| det.write_sealed(PageId(p), &mut [fill; 128]).unwrap();
            for p in 0..40 {
                write(p, p as u8 + 1);
            }
            let gate = WriteGate::new();
            let m = SnapshotConfig::new(dir.path(), 128)
                .chunk_bytes(512)
                .build()
                .unwrap();
            assert!(!m.dirty_notices_trusted());
            let full = snap(&m, raw.as_ref(), &gate, 1, SnapshotKind::Auto);
            assert_eq!(full.detection, ChangeDetection::Full);
            write(5, 0x99);
            m.note_dirty(PageId(5));
            let inc = snap(&m, raw.as_ref(), &gate, 2, SnapshotKind::Auto);
            assert_eq!(inc.detection, ChangeDetection::DirtyNotices);
            assert_eq!(inc.info.stored_pages, 1);
            // Un-noted changes under a view: found by fingerprints.
            write(7, 0x88);
            write(39, 0x77);
            let r = m
                .take_snapshot(
                    Consistency::View {
                        view: raw.as_ref(),
                        lsn: Lsn(3),
                    },
                    SnapshotRequest::default(),
                )
                .unwrap();
            assert_eq!(r.detection, ChangeDetection::Fingerprints);
            assert_eq!(r.info.stored_pages, 2);
            let other = MemStore::new(128, 40).unwrap();
            m.restore(r.info.id, &other).unwrap();
            assert_eq!(other.to_bytes(), raw.to_bytes());
        }
    }

    #[test]
    fn snapshot_names_are_recognised() {
        assert!(is_snapshot_name(&snapshot_file_name(42)));
        assert!(!is_snapshot_name("MANIFEST"));
        assert!(!is_snapshot_name("snap-zz.shs"));
    }
}
