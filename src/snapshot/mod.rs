//! Point-in-time snapshots of a [`PageStore`]: full and incremental, lz4
//! compressed, checksummed per chunk and per page, restorable as a whole or
//! page by page.
//!
//! # Contract
//!
//! [`StateSnapshotManager`] owns one directory, alone: it holds the
//! directory's lock (`snapshots.lock`) from [`SnapshotConfig::build`] until
//! it, its [page sources](SnapshotPageSource) and its
//! [periodic thread](PeriodicSnapshots) are all dropped, and a second
//! manager on the directory — in this process or another — is refused with
//! [`Error::DirectoryLocked`]. Each snapshot is one file (its byte layout,
//! with the manifest's, is documented in the source of the private `format`
//! module; `selfheal::testing::decode_snapshot`, feature `testing`, runs
//! its decoder on bytes in memory); the `MANIFEST` lists them and their chains. A full
//! snapshot stores every page; an incremental one stores only the pages that
//! changed since its parent, found either from the host's dirty-page notices
//! ([`StateSnapshotManager::note_dirty`]) or by comparing 64-bit page
//! fingerprints with the parent's (kept in every snapshot's index, so no
//! decompression is needed). Its cost grows with the changed pages, plus
//! one fingerprint pass over the store when there are no notices.
//!
//! The manager reports its own failures on its
//! [failure bus](SnapshotConfig::failure_sink): a snapshot that failed
//! ([`FailureKind::SnapshotFailed`](crate::FailureKind::SnapshotFailed)) and
//! a periodic thread that died
//! ([`FailureKind::WorkerDied`](crate::FailureKind::WorkerDied)), from
//! [`Source::StateSnapshotManager`](crate::Source::StateSnapshotManager).
//! Every time decision — progress rates, the periodic interval, creation
//! times and so retention by age, failure timestamps — is read from the
//! clock of [`SnapshotConfig::clock`].
//!
//! ## Consistency
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
//! ## Writes the library makes: notices and tickets
//!
//! "All of the host's page writes" includes the ones the library makes on
//! the host's behalf: a [rollback](crate::TransactionRollbackManager::rollback)
//! (and the recovery at [build](crate::RollbackConfig::build)), a
//! [repair](crate::DataRepairer), a [restore](StateSnapshotManager::restore)
//! into the live store, the trailers [adoption](crate::CorruptionDetector::adopt)
//! writes. A host that relies on dirty-page notices must see them all:
//!
//! - **Notices.** Every one of those writes goes through the
//!   [`CorruptionDetector`](crate::CorruptionDetector) of a protected store,
//!   which tells its [write observer](crate::CorruptionConfig::on_write) of
//!   each page it writes, whoever asked. Wire the observer to
//!   [`note_dirty`](StateSnapshotManager::note_dirty):
//!   `CorruptionConfig::on_write(Arc::new(move |p| snaps.note_dirty(p)))`.
//!   Without it, an incremental snapshot taken after a rollback misses the
//!   pages the rollback wrote, and restoring it brings back what the
//!   rollback undid. A host that rolls back through [`RawPages`](crate::rollback::RawPages)
//!   over an unprotected store wraps the store it hands over in a
//!   [`PageStore`] whose `write_page` notes the page.
//! - **Tickets.** With [`Consistency::Paused`], every writer through the
//!   detector must hold a [`WriteTicket`] of the gate while it writes — the
//!   library's writers too, since the library cannot take the host's
//!   tickets itself. The host holds one around each call that writes:
//!   `let _t = gate.write(); rollback_manager.rollback(txn)?;` (likewise
//!   around `rollback_all`, `RollbackConfig::build` when recovery may roll
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
//! ## Change detection by fingerprint
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
//! incremental snapshot compares with them.
//!
//! ## The restore point and single-page reads
//!
//! The *head* is the snapshot the store's state descends from: the newest
//! one taken, or the one last restored — recorded in the manifest, so it
//! survives a restart: after a restore of snapshot k, the snapshots newer
//! than k serve no page, in this process or after a reopen. Incremental
//! snapshots build on it.
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
//! until the next successful snapshot or restore, across a reopen too
//! (the manifest records it before the first write). The head stays the one
//! before the restore, so the next incremental snapshot builds on it by
//! comparing fingerprints.
//!
//! ## Restore and corruption
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
//! ## Restoring into a store that seals its pages
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
//! ## Store size
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
//! ## Crash safety
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
//!
//! A restore replaces the manifest (same steps, same rows) twice, so that
//! the restore point survives a crash: once before its first write to the
//! target, recording "head unknown", and once after the target's sync,
//! recording the restored snapshot as the head. A crash leaves:
//!
//! | crash during the restore                                | state at next open                                                        |
//! |---------------------------------------------------------|---------------------------------------------------------------------------|
//! | before the first manifest is renamed (nothing written)  | the head as before                                                        |
//! | after it: target being written, or written and synced   | head unknown: the page source serves nothing until the next snapshot or restore |
//! | after the second manifest is renamed                    | the restored snapshot is the head; newer snapshots serve no page          |
//!
//! A restore that fails before it writes its target takes the first
//! manifest back (if that fails too, the head stays unknown, which is safe).
//! While a snapshot file is written, its chunks are compressed on
//! [`SnapshotConfig::threads`] threads (`selfheal-snapshot-lz4`, fed through
//! a bounded queue, joined before the call returns) while the calling
//! thread reads pages and writes the compressed chunks in chunk order; the
//! file is the same bytes whatever the thread count. A helper thread
//! (`selfheal-snapshot-sync`) starts writeback early with `fdatasync`, so
//! that disk writes overlap compression; durability still rests on the
//! final fsync.
//!
//! A damaged (or missing) manifest is rebuilt at open from the snapshot
//! files whose header, footer and index check and whose chain is complete
//! ([`StateSnapshotManager::manifest_rebuilt`] says so); the restore point
//! is lost with it, so the rebuilt manifest records the head as unknown (the
//! page source serves nothing until the next snapshot or restore); a manifest of a
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
//! manifest (an open that rebuilds it renames them instead, as above).
//!
//! # A failed snapshot
//!
//! A write, fsync or rename that fails during a snapshot (a full disk,
//! `EIO`) fails that snapshot with its [`Error::Io`] and nothing else: the
//! manager is not poisoned, and the failure is reported on its bus
//! ([`FailureKind::SnapshotFailed`](crate::FailureKind::SnapshotFailed)).
//! No partial state is trusted: before the manifest's rename the snapshot's
//! temporary (or renamed) file is removed and the manifest is as before;
//! after it (a failed directory fsync) the new manifest is in place but
//! maybe not durable — it names only complete, durable files, so a crash
//! may keep it or the old one — while in memory the manifest, the head
//! and the restore point stay as before, the failed snapshot's id is never
//! reused, and the next manifest written (by the next snapshot or a
//! retention) replaces it durably. The dirty notices are cleared only by a
//! snapshot that succeeds, so the next incremental snapshot misses nothing.
//! The next snapshot — asked for, or the periodic thread's, which retries a
//! snapshot that failed on a retryable I/O error after a backoff with full
//! jitter (from [`PERIODIC_RETRY_BASE`], doubling, at most the interval)
//! — succeeds once the fault clears, `ENOSPC` included (the
//! [`AutoRecoveryManager`](crate::AutoRecoveryManager)'s disk-full remedies
//! trim retention and ask the host for space meanwhile). Only a simulated
//! crash (`StateSnapshotManager::crash_at`, with the `testing` feature) poisons the manager.
//!
//! Files are created owner-only (`0o600`), and a directory the manager
//! creates is `0o700`; the permissions of a directory that already exists
//! are left as they are (the host owns them); each
//! manifest entry's file name must be [`snapshot_file_name`] of its id,
//! checked on load, so the manifest can never name a file outside the
//! directory, the manifest itself, or another snapshot's file.

use std::sync::Arc;

use crate::error::{Error, Result};
#[cfg(doc)]
use crate::host::PageSource;
use crate::host::PageStore;
use crate::types::{Failure, FailureSink, PageId};
use crossbeam_channel::Receiver;

mod chain;
mod compress;
mod config;
mod crash;
mod dirty;
mod fingerprint;
pub(crate) mod format;
mod gate;
mod inner;
mod io_step;
pub(crate) mod manifest;
mod open;
mod page_source;
mod periodic;
mod progress;
mod request;
mod restore;
mod take;
mod writer;

pub use config::{SnapshotConfig, DEFAULT_THREADS_MAX};
pub use crash::CrashStep;
pub use fingerprint::page_fingerprint;
pub use gate::{Consistency, WriteGate, WritePause, WriteTicket};
use inner::Inner;
pub use io_step::SnapshotIo;
pub use manifest::{snapshot_file_name, Retention};
pub use open::LOCK_FILE;
pub use page_source::SnapshotPageSource;
pub use periodic::{PeriodicConfig, PeriodicSnapshots, PeriodicStats, PERIODIC_RETRY_BASE};
pub use progress::{Operation, Progress, ProgressReport};
pub use request::{
    ChangeDetection, SnapshotInfo, SnapshotKind, SnapshotReport, SnapshotRequest, VerifyReport,
};
pub use restore::{Fallback, FallbackReport, LostPages, RestoreOptions, RestoreReport};

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

impl StateSnapshotManager {
    /// Why the manifest was rebuilt from the snapshot files when the
    /// manager was opened (it was damaged or missing), if it was.
    #[must_use]
    pub fn manifest_rebuilt(&self) -> Option<&str> {
        self.inner.rebuilt.as_deref()
    }

    /// The failure bus the manager reports its own failures on (see
    /// [`SnapshotConfig::failure_sink`]).
    #[must_use]
    pub fn failure_sink(&self) -> &FailureSink {
        &self.inner.sink
    }

    /// The receiving end of its failure bus (cloning shares the queue).
    #[must_use]
    pub fn failures(&self) -> Receiver<Failure> {
        self.inner.sink.failures()
    }

    /// The snapshots, ascending by id: those of the manifest as last
    /// written. Answers at once, also while a snapshot or restore runs (on
    /// any thread, the one running it included): the one under way is
    /// listed when it is done.
    #[must_use]
    pub fn snapshots(&self) -> Vec<SnapshotInfo> {
        self.inner.listed.read().clone()
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
    /// [write observer](crate::CorruptionConfig::on_write) here (see
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

    /// Takes a snapshot made consistent by `source` (see the module docs).
    /// Retention is applied after it commits; a retention failure does not
    /// fail the call (the snapshot is listed by then): it is logged and
    /// reported in [`SnapshotReport::retention_error`].
    ///
    /// A snapshot that fails for any reason but a bad request (an
    /// [`Error::InvalidArgument`] or an [`Error::PageSizeMismatch`], which
    /// only the caller can act on) is also reported on the
    /// [failure bus](Self::failure_sink) as
    /// [`FailureKind::SnapshotFailed`](crate::FailureKind::SnapshotFailed)
    /// from [`Source::StateSnapshotManager`](crate::Source::StateSnapshotManager),
    /// at the manager's clock time.
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
        self.take_reported(source, request, "a snapshot")
    }

    /// [`take_snapshot`](Self::take_snapshot), reporting a failure as `what`.
    fn take_reported(
        &self,
        source: Consistency<'_>,
        request: SnapshotRequest,
        what: &str,
    ) -> Result<SnapshotReport> {
        let taken = self.inner.take_snapshot(source, request);
        match &taken {
            Ok(r) => {
                metrics::counter!(crate::telemetry::SNAPSHOTS, "outcome" => "ok").increment(1);
                metrics::histogram!(crate::telemetry::SNAPSHOT_BYTES)
                    .record(r.info.file_bytes as f64);
            }
            Err(e) => {
                metrics::counter!(crate::telemetry::SNAPSHOTS, "outcome" => "failed").increment(1);
                if is_reported(e) {
                    self.inner.report_snapshot_failed(what, e);
                }
            }
        }
        taken
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
    /// A snapshot under way on another thread is waited for, and is then
    /// the newest.
    ///
    /// # Errors
    /// As `restore`; [`Error::NoUsableSnapshot`] when there is no snapshot;
    /// [`Error::InvalidArgument`] when called on a thread that is taking or
    /// restoring a snapshot of this manager (a store read that heals from
    /// the snapshots), which would otherwise wait for itself.
    pub fn restore_latest(&self, target: &dyn PageStore) -> Result<RestoreReport> {
        // Chosen under the state lock, as `restore` takes it: a snapshot
        // running on another thread is waited for (and is then the newest);
        // on this thread, refused rather than waited for.
        let newest = self
            .inner
            .lock_state()?
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
        let chain = self.inner.lock_state()?.manifest.chain(id)?;
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
        self.apply_retention_at(self.inner.now_unix_ms())
    }

    /// Applies the configured retention as if the time were `now_unix_ms`.
    ///
    /// # Errors
    /// As [`apply_retention`](Self::apply_retention).
    pub fn apply_retention_at(&self, now_unix_ms: u64) -> Result<Vec<u64>> {
        self.inner.check_alive()?;
        let mut st = self.inner.lock_state()?;
        self.inner.retain(&mut st, now_unix_ms)
    }

    /// Applies `policy` once, in place of the configured retention, to free
    /// space now (a disk filling up): the snapshots it does not keep are
    /// deleted, as retention deletes them — never the newest, the head, or
    /// an ancestor of a kept snapshot. The configured retention is
    /// unchanged. Returns the deleted ids.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a policy that keeps nothing
    /// (`KeepLast(0)`, a zero age); I/O errors writing the manifest;
    /// [`Error::Poisoned`] after an earlier failure.
    pub fn apply_retention_with(&self, policy: Retention) -> Result<Vec<u64>> {
        policy.validate()?;
        self.inner.check_alive()?;
        let now = self.inner.now_unix_ms();
        let mut st = self.inner.lock_state()?;
        self.inner.retain_with(&mut st, policy, now)
    }
}

/// Whether a failed snapshot is reported on the failure bus: every failure
/// but a bad request (an [`Error::InvalidArgument`] or an
/// [`Error::PageSizeMismatch`]), which only the caller can act on.
pub(super) fn is_reported(e: &Error) -> bool {
    !matches!(
        e,
        Error::InvalidArgument { .. } | Error::PageSizeMismatch { .. }
    )
}

#[cfg(test)]
mod tests;
