//! The append side: buffered encoding, segment rotation, group commit,
//! synced-through marks, transaction-id reservations, the state file, and
//! the sticky poisoned state (the group commit itself is in `commit.rs`; the
//! stalled state and the resume after a retryable failure in `resume.rs`).
//!
//! # Contract
//!
//! Appends encode into an in-memory buffer under one short lock; an undo
//! record goes in without its CRC, which the thread that writes the batch
//! computes for every frame ([`seal_frames`](super::record::seal_frames))
//! outside that lock, before the bytes leave memory. The same lock holds
//! the in-memory undo log of every transaction the manager keeps
//! (`UndoLog`): an undo append checks that the transaction's log is open,
//! appends the record and adds the entry with its images to the log in
//! one critical section, and a commit record closes the log in its own,
//! so no undo record of a transaction follows its commit record and
//! every appended record is in the log a rollback takes. An undo append does
//! not write the buffer when it is full: the caller does, with
//! [`Journal::write_if_full`], once it has released its own locks (so the
//! buffer may exceed its size by one record per appending thread). Bytes reach
//! the storage only in the hands of the one thread that holds the I/O token:
//! a thread that needs durability becomes the leader when no one holds it,
//! takes everything buffered (its own records and those of every other
//! thread), writes it, fsyncs once, and wakes everyone whose LSN is now
//! durable. Threads that arrive while a leader is syncing wait and are served
//! by the next one: concurrent commits share fsyncs.
//!
//! Every batch a leader writes carries a mark record naming the LSN the
//! previous completed fsync made durable, if that is newer than the last
//! mark. When no batch follows an fsync within the idle delay, the
//! `selfheal-undo-mark` thread (see `marker.rs`) writes and fsyncs a mark of
//! its own, and [`Journal::close`] does the same, so that every acknowledged
//! record is covered by a durable mark shortly after it was acknowledged.
//!
//! A failed write or fsync stalls the journal when it is retryable (a full
//! disk, `EIO`) and poisons it otherwise; see `resume.rs` for the stalled
//! state's contract and the resume.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Condvar, MappedMutexGuard, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::types::{Lsn, PageId};

use super::marker::{Marker, Wakeups};
use super::record::{
    encode_undo_unsealed, Record, SegmentHeader, MAX_HEADER_COUNTER, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN, SEGMENT_VERSION,
};
use super::recovery::{JournalScan, SegMeta};
use super::state::JournalState;
use super::storage::JournalStorage;
use super::UNDO_FIXED_LEN;
use crate::rollback::txns::{TxnMap, UndoLog};
use crate::rollback::TxnId;
use crate::worker::Notifier;

mod commit;
mod resume;

const COMPONENT: &str = "undo journal";

/// How many transaction ids one durable reservation covers. A restart skips
/// what is left of the current block, so ids are never handed out twice;
/// a reservation costs one state-file write per this many `begin`s.
pub const TXN_ID_RESERVATION: u64 = 1 << 16;

/// Most written buffers kept for reuse. Batches written without an fsync
/// are kept (for a resume) until one completes, so a busy journal has
/// several buffers out at a time; keeping as many for the next batches
/// spares it the allocation, growth and page faults of fresh ones.
pub(super) const SPARE_BUFFERS_MAX: usize = 8;

/// A fresh buffer has room for the configured buffer size (up to
/// [`BUFFER_PRESIZE_MAX`]) plus this much, for the records that may go in
/// past the size before the buffer is written.
pub(super) const BUFFER_SLACK: usize = 64 << 10;

/// Most of the configured buffer size a fresh buffer is allocated for up
/// front; a larger one grows as it fills.
pub(super) const BUFFER_PRESIZE_MAX: usize = 64 << 20;

/// Most marks appended and not yet durable (one per batch; a batch adds one
/// only when an fsync completed since the last, so this is never reached).
const MARKS_IN_FLIGHT_MAX: usize = 64;

/// Sizes and limits of the writer.
#[derive(Clone)]
pub(crate) struct JournalConfig {
    pub segment_size: u64,
    pub buffer_bytes: usize,
    pub sync_wait_timeout: Duration,
    pub idle_mark_delay: Duration,
    /// Told once, with the reason, when the journal poisons itself.
    pub on_poison: Option<PoisonHook>,
    /// Told, with the reason and whether the disk is full, when the journal
    /// stalls after a retryable failure.
    pub on_stall: Option<StallHook>,
}

/// Called once when the journal poisons itself.
pub(crate) type PoisonHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Called with the reason and whether it is a lack of space, when the
/// journal stalls (not again when a resume fails).
pub(crate) type StallHook = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// Why the journal refuses work: for good, or until a resume.
enum Halt {
    /// A failure after which the journal must not continue.
    Poisoned(String),
    /// A retryable failure: the records not yet durable are kept.
    Stalled(Stall),
}

/// The state of a stalled journal.
struct Stall {
    reason: String,
    no_space: bool,
    /// Every record above the durable LSN that left the buffer, in order
    /// (the buffer holds the rest).
    chunks: Vec<Chunk>,
    failed_resumes: u32,
}

impl std::fmt::Debug for JournalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalConfig")
            .field("segment_size", &self.segment_size)
            .field("buffer_bytes", &self.buffer_bytes)
            .field("sync_wait_timeout", &self.sync_wait_timeout)
            .field("idle_mark_delay", &self.idle_mark_delay)
            .finish_non_exhaustive()
    }
}

/// Counters of the journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Records appended since open (marks included).
    pub records: u64,
    /// Record bytes appended since open.
    pub bytes: u64,
    /// Commit records appended since open.
    pub commits: u64,
    /// Syncs of the tail segment since open: group syncs, and the syncs of
    /// idle marks.
    pub fsyncs: u64,
    /// Synced-through mark records appended since open.
    pub marks: u64,
    /// Of those, marks the idle thread or `close` wrote and fsynced on their
    /// own (every other mark rode along in a batch).
    pub idle_marks: u64,
    /// Every record up to this LSN is durable.
    pub durable_lsn: Lsn,
    /// Every record up to this LSN is covered by a durable synced-through
    /// mark: damage to it can never be mistaken for a torn tail.
    pub marked_lsn: Lsn,
    /// The LSN the next record gets.
    pub next_lsn: Lsn,
    /// Segments present.
    pub segments: u64,
    /// Segments removed by truncation since open.
    pub segments_removed: u64,
    /// Whether a failed write or fsync has poisoned the journal.
    pub poisoned: bool,
    /// Whether a retryable write or fsync failure has stalled the journal
    /// (it refuses new records until a resume rewrites what it holds).
    pub stalled: bool,
}

impl JournalStats {
    /// Commit records per fsync: how well group commit shares syncs.
    #[must_use]
    pub fn commits_per_fsync(&self) -> f64 {
        if self.fsyncs == 0 {
            return 0.0;
        }
        self.commits as f64 / self.fsyncs as f64
    }
}

struct Chunk {
    segment: u64,
    create: Option<[u8; SEGMENT_HEADER_LEN]>,
    bytes: Vec<u8>,
}

struct Inner {
    next_lsn: u64,
    /// Records appended since open (marks included); counted under the
    /// lock the append holds anyway.
    records: u64,
    /// Record bytes appended since open.
    bytes: u64,
    pending: Vec<Chunk>,
    pending_bytes: usize,
    tail_segment: u64,
    tail_len: u64,
    next_segment: u64,
    /// The segment the I/O token holder last wrote to.
    io_segment: u64,
    io_busy: bool,
    /// Why the journal refuses work: poisoned for good, or stalled.
    poison: Option<Halt>,
    /// Batches written since the last completed fsync, kept for a resume
    /// (at most `resume::UNSYNCED_KEEP_BYTES_MAX` bytes).
    unsynced: Vec<Chunk>,
    unsynced_bytes: usize,
    segments: VecDeque<SegMeta>,
    spare: Vec<Vec<u8>>,
    /// The highest LSN a mark appended so far claims.
    mark_claimed: u64,
    /// Marks appended whose own LSN is not durable yet: (LSN, claim).
    marks_in_flight: VecDeque<(u64, u64)>,
    /// The highest claim of a mark that is durable.
    marked: u64,
    /// The LSN of the newest record that is not a mark.
    last_data_lsn: u64,
    /// The undo of every transaction the manager holds, under this lock
    /// so that an undo append is one critical section (see
    /// [`Journal::append_undo`]).
    logs: TxnMap<UndoLog>,
}

struct Ids {
    next: u64,
    reserved_end: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    fsyncs: AtomicU64,
    marks: AtomicU64,
    idle_marks: AtomicU64,
    removed: AtomicU64,
}

/// Everything the journal and its mark thread share.
pub(super) struct Core {
    storage: Arc<dyn JournalStorage>,
    cfg: JournalConfig,
    inner: Mutex<Inner>,
    cv: Condvar,
    durable: AtomicU64,
    poisoned: AtomicBool,
    counters: Counters,
    /// Lock order: `retiring`, then `inner`, then `state`; `ids`, then
    /// `state`. Nothing takes `ids` or `inner` while holding `state`.
    /// (Above them all: the rollback manager's state lock, which is taken
    /// before `inner`, never while `inner` is held; see `UndoLog`.)
    ids: Mutex<Ids>,
    /// Held while old segments are retired: one retirement at a time, and
    /// the state file written and the files removed without `inner`, so
    /// that appends go on meanwhile.
    retiring: Mutex<()>,
    /// The state file's contents as last written; held while it is written.
    state: Mutex<JournalState>,
    /// The reservation end, for segment headers (read without `ids`).
    reserved_end: AtomicU64,
    /// Wakes the mark thread after an fsync (set once it runs).
    notice: OnceLock<Notifier<()>>,
}

/// The append side of the undo journal.
pub(crate) struct Journal {
    core: Arc<Core>,
    marker: Mutex<Marker>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("storage", &self.core.storage)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn poisoned_error(halt: &Halt) -> Error {
    halt.error()
}

impl Journal {
    /// Opens for appending after `scan` (which already repaired the files):
    /// reserves transaction ids and writes the state file, syncs the tail
    /// segment (what the scan read may have been only in the page cache),
    /// starts a segment of the current format when there is none (or the
    /// tail is of an older format), and starts the mark thread.
    pub(crate) fn open(
        storage: Arc<dyn JournalStorage>,
        cfg: JournalConfig,
        scan: &JournalScan,
    ) -> Result<Journal> {
        let mut state = scan.state;
        let next_txn = scan.next_txn;
        let reserved_end = if next_txn >= MAX_HEADER_COUNTER {
            next_txn.min(MAX_HEADER_COUNTER)
        } else {
            next_txn
                .saturating_add(TXN_ID_RESERVATION)
                .min(MAX_HEADER_COUNTER)
        };
        state.txn_reserved_end = state.txn_reserved_end.max(reserved_end);
        storage.write_state(&state.encode())?;
        let segments: VecDeque<SegMeta> = scan.segments.iter().copied().collect();
        if let Some(last) = segments.back() {
            storage.sync(last.id)?;
        }
        let durable = scan.next_lsn - 1;
        let core = Arc::new(Core {
            storage,
            cfg,
            inner: Mutex::new(Inner {
                next_lsn: scan.next_lsn,
                records: 0,
                bytes: 0,
                pending: Vec::new(),
                pending_bytes: 0,
                tail_segment: segments.back().map_or(0, |s| s.id),
                tail_len: scan.tail_len,
                next_segment: scan.next_segment,
                io_segment: segments.back().map_or(0, |s| s.id),
                io_busy: false,
                poison: None,
                unsynced: Vec::new(),
                unsynced_bytes: 0,
                segments,
                spare: Vec::new(),
                mark_claimed: scan.synced_through,
                marks_in_flight: VecDeque::new(),
                marked: scan.synced_through,
                last_data_lsn: durable,
                logs: TxnMap::default(),
            }),
            cv: Condvar::new(),
            durable: AtomicU64::new(durable),
            poisoned: AtomicBool::new(false),
            counters: Counters::default(),
            ids: Mutex::new(Ids {
                next: next_txn,
                reserved_end,
            }),
            retiring: Mutex::new(()),
            state: Mutex::new(state),
            reserved_end: AtomicU64::new(state.txn_reserved_end),
            notice: OnceLock::new(),
        });
        {
            let mut g = core.inner.lock();
            let needs_segment = g
                .segments
                .back()
                .is_none_or(|s| s.version < SEGMENT_VERSION);
            if needs_segment {
                // Written right away, before anything is appended to it.
                core.start_segment(&mut g)?;
                let mut chunks = std::mem::take(&mut g.pending);
                let from = g.io_segment;
                core.write_chunks(&mut chunks, from, false)?;
                g.io_segment = g.tail_segment;
            }
            if durable > g.mark_claimed {
                core.push_mark(&mut g)?;
            }
        }
        let marker = Marker::start(core.clone(), core.cfg.idle_mark_delay)?;
        if let Some(n) = marker.notifier() {
            let _ = core.notice.set(n);
        }
        Ok(Journal {
            core,
            marker: Mutex::new(marker),
        })
    }

    /// Appends an undo record of `txn` and adds its entry to the
    /// transaction's log, in one critical section (the hot path: no
    /// intermediate allocation, no checksum, no I/O). Returns its LSN and
    /// whether the buffer is full — then call
    /// [`write_if_full`](Self::write_if_full), outside the caller's locks —
    /// or `None` when the transaction has no open log (nothing appended).
    ///
    /// # Errors
    /// [`Error::RollbackLimit`] when the log would hold more than
    /// `max_undo` before-image bytes; [`Error::Poisoned`];
    /// [`Error::JournalStalled`]; [`Error::IdSpaceExhausted`].
    pub(crate) fn append_undo(
        &self,
        txn: TxnId,
        page: PageId,
        offset: u32,
        before: &[u8],
        after: &[u8],
        max_undo: u64,
    ) -> Result<Option<(Lsn, bool)>> {
        debug_assert_eq!(before.len(), after.len());
        let len = RECORD_HEADER_LEN + UNDO_FIXED_LEN + before.len() + after.len();
        let core = &self.core;
        let mut g = core.inner.lock();
        match g.logs.get(&txn) {
            Some(log) if log.open => {
                if log.before_bytes + before.len() as u64 > max_undo {
                    return Err(Error::RollbackLimit {
                        what: "undo bytes per transaction",
                        field: "max_undo_bytes_per_txn",
                        limit: max_undo,
                    });
                }
            }
            _ => return Ok(None),
        }
        if let Some(p) = &g.poison {
            return Err(poisoned_error(p));
        }
        let lsn = core.push(&mut g, len, |buf, lsn| {
            encode_undo_unsealed(buf, lsn, txn, page, offset, before, after);
        })?;
        g.last_data_lsn = lsn.0;
        let full = g.pending_bytes >= core.cfg.buffer_bytes;
        let log = g
            .logs
            .get_mut(&txn)
            .expect("found above, under the same lock");
        log.push(lsn, page, offset, before, Some(after));
        let n = before.len() as u64;
        let (records, bytes, held) = &mut log.unfolded;
        *records += 1;
        *bytes += n;
        *held += 2 * n;
        Ok(Some((lsn, full)))
    }

    /// Holds `log` as the undo of `txn` (replacing any it had).
    pub(crate) fn open_log(&self, txn: TxnId, log: UndoLog) {
        self.core.inner.lock().logs.insert(txn, log);
    }

    /// The undo log of `txn`, locked (appends wait until it is dropped).
    pub(crate) fn log(&self, txn: TxnId) -> Option<MappedMutexGuard<'_, UndoLog>> {
        MutexGuard::try_map(self.core.inner.lock(), |g| g.logs.get_mut(&txn)).ok()
    }

    /// Every undo log, locked.
    pub(crate) fn logs(&self) -> MappedMutexGuard<'_, TxnMap<UndoLog>> {
        MutexGuard::map(self.core.inner.lock(), |g| &mut g.logs)
    }

    /// Gives up the undo log of `txn` (closed).
    pub(crate) fn take_log(&self, txn: TxnId) -> Option<UndoLog> {
        let mut log = self.core.inner.lock().logs.remove(&txn)?;
        log.open = false;
        Some(log)
    }

    /// Writes the buffer (without an fsync) if it holds its configured size
    /// or more.
    ///
    /// # Errors
    /// [`Error::Poisoned`] (also when this write fails); a retryable
    /// timed-out [`Error::Io`] when another thread's I/O does not finish in
    /// time.
    pub(crate) fn write_if_full(&self) -> Result<()> {
        let mut g = self.core.inner.lock();
        if g.pending_bytes >= self.core.cfg.buffer_bytes {
            self.core.drive(&mut g, None)?;
        }
        Ok(())
    }

    /// Appends a begin or abort record, and writes the buffer if that
    /// filled it.
    pub(crate) fn append(&self, record: &Record) -> Result<Lsn> {
        debug_assert!(matches!(
            record,
            Record::Begin { .. } | Record::Abort { .. }
        ));
        let (lsn, full) = self
            .core
            .append_with(record.encoded_len(), None, |buf, lsn| {
                record.encode_into(lsn, buf);
            })?;
        if full {
            self.write_if_full()?;
        }
        Ok(lsn)
    }

    /// Appends the commit record of `txn`, which closes its undo log in
    /// the same critical section: no undo record of it follows its commit
    /// record. Returns its LSN, and whether the buffer is full: the caller
    /// notes the commit first, then writes the buffer
    /// ([`write_if_full`](Self::write_if_full)), so that a write that fails
    /// leaves a commit it can retry, not a closed log under a transaction
    /// still active.
    pub(crate) fn append_commit(&self, txn: TxnId) -> Result<(Lsn, bool)> {
        let record = Record::Commit { txn };
        self.core
            .append_with(record.encoded_len(), Some(txn), |buf, lsn| {
                record.encode_into(lsn, buf);
            })
    }

    /// The next transaction id to hand out, and reserves it. Ids are handed
    /// out only below a reservation end that is durable in the state file.
    ///
    /// # Errors
    /// [`Error::Poisoned`]; [`Error::IdSpaceExhausted`]; [`Error::Io`] when a
    /// new reservation cannot be written (no id is handed out then).
    pub(crate) fn next_txn(&self) -> Result<u64> {
        let core = &self.core;
        if core.poisoned.load(Ordering::Acquire) {
            return Err(core.poison_error());
        }
        let mut ids = core.ids.lock();
        if ids.next >= MAX_HEADER_COUNTER - 1 {
            return Err(Error::IdSpaceExhausted {
                what: "transaction ids",
            });
        }
        if ids.next >= ids.reserved_end {
            let end = ids
                .next
                .saturating_add(TXN_ID_RESERVATION)
                .min(MAX_HEADER_COUNTER);
            core.persist(|s| s.txn_reserved_end = s.txn_reserved_end.max(end))?;
            ids.reserved_end = end;
            core.reserved_end.fetch_max(end, Ordering::AcqRel);
        }
        let t = ids.next;
        ids.next += 1;
        Ok(t)
    }

    /// Every record up to this LSN is durable.
    pub(crate) fn durable_lsn(&self) -> Lsn {
        Lsn(self.core.durable.load(Ordering::Acquire))
    }

    /// Waits until every record up to `lsn` is durable, syncing (as the
    /// leader of a group) if no one else is.
    pub(crate) fn ensure_durable(&self, lsn: Lsn) -> Result<()> {
        self.core.ensure_durable(lsn)
    }

    /// Makes everything appended so far durable.
    pub(crate) fn flush(&self) -> Result<()> {
        self.core.flush()
    }

    /// Makes everything appended so far durable and covered by a durable
    /// mark now (what the mark thread does after the idle delay); nothing
    /// is written when a durable mark covers it already.
    pub(crate) fn mark_now(&self) -> Result<()> {
        self.core.flush().and_then(|()| self.core.cover_with_mark())
    }

    /// Makes everything durable and covered by a durable mark, and stops the
    /// mark thread.
    pub(crate) fn close(&self) -> Result<()> {
        // A retirement under way (a checkpoint) ends first: it writes the
        // state file and removes files without the append lock, and must
        // not do so after the storage is released to a new owner.
        let _retiring = self.core.retiring.lock();
        let result = self.core.flush().and_then(|()| self.core.cover_with_mark());
        self.marker.lock().stop();
        result
    }

    /// Gives up the storage's ownership, after [`close`](Self::close).
    pub(crate) fn release(&self) {
        self.core.storage.release();
    }

    /// Removes segments all of whose records are below `keep_from` and
    /// durable. The newest segment is always kept. The state file names the
    /// new oldest segment before any is removed.
    pub(crate) fn truncate_before(&self, keep_from: Lsn) -> Result<Vec<u64>> {
        let core = &self.core;
        let retiring = core.retiring.lock();
        let n = {
            let g = core.inner.lock();
            if let Some(p) = &g.poison {
                return Err(poisoned_error(p));
            }
            let durable_next = core.durable.load(Ordering::Acquire) + 1;
            let mut n = 0;
            while n + 1 < g.segments.len() {
                let next_first = g.segments[n + 1].first_lsn;
                if next_first > keep_from.0
                    || next_first > durable_next
                    || g.segments[n].id >= g.io_segment
                {
                    break;
                }
                n += 1;
            }
            n
        };
        core.retire(&retiring, n)
    }

    /// Retires every segment: starts a new one holding a mark, makes it
    /// durable, names it the oldest in the state file, and removes the
    /// others. Returns the removed segments. Used before a restore of the
    /// store, when no transaction is in flight.
    pub(crate) fn retire_all(&self) -> Result<Vec<u64>> {
        let core = &self.core;
        let retiring = core.retiring.lock();
        core.flush()?;
        let mark = {
            let mut g = core.inner.lock();
            if let Some(p) = &g.poison {
                return Err(poisoned_error(p));
            }
            core.start_segment(&mut g)?;
            core.push_mark_forced(&mut g)?
        };
        core.ensure_durable(Lsn(mark))?;
        let keep = {
            let g = core.inner.lock();
            g.segments
                .iter()
                .position(|s| s.first_lsn > mark)
                .unwrap_or(g.segments.len())
                .saturating_sub(1)
        };
        core.retire(&retiring, keep)
    }

    /// Current counters.
    pub(crate) fn stats(&self) -> JournalStats {
        let core = &self.core;
        let g = core.inner.lock();
        let c = &core.counters;
        JournalStats {
            records: g.records,
            bytes: g.bytes,
            commits: c.commits.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            marks: c.marks.load(Ordering::Relaxed),
            idle_marks: c.idle_marks.load(Ordering::Relaxed),
            durable_lsn: self.durable_lsn(),
            marked_lsn: Lsn(g.marked),
            next_lsn: Lsn(g.next_lsn),
            segments: g.segments.len() as u64,
            segments_removed: c.removed.load(Ordering::Relaxed),
            poisoned: g.poison.as_ref().is_some_and(Halt::is_poisoned),
            stalled: g.poison.as_ref().is_some_and(|h| !h.is_poisoned()),
        }
    }
}

impl Drop for Journal {
    /// Stops the mark thread (waiting, for a bounded time, for an fsync it
    /// is in). Nothing is
    /// flushed: [`close`](Journal::close) does that.
    fn drop(&mut self) {
        self.marker.lock().stop();
    }
}

impl Core {
    /// Poisons the journal (the mark thread died).
    pub(super) fn poison(&self, reason: String) {
        {
            let mut g = self.inner.lock();
            if !g.poison.as_ref().is_some_and(Halt::is_poisoned) {
                g.poison = Some(Halt::Poisoned(reason.clone()));
            }
        }
        self.mark_poisoned(&reason);
    }

    /// Sets the poisoned flag; the first time, tells the hook.
    fn mark_poisoned(&self, reason: &str) {
        if !self.poisoned.swap(true, Ordering::AcqRel) {
            if let Some(hook) = &self.cfg.on_poison {
                hook(reason);
            }
        }
    }

    fn poison_error(&self) -> Error {
        let g = self.inner.lock();
        match &g.poison {
            Some(h) => h.error(),
            None => Error::Poisoned {
                component: COMPONENT,
                reason: "an earlier write or fsync failed".into(),
            },
        }
    }

    /// Writes the state file with `change` applied, holding the state lock.
    fn persist(&self, change: impl FnOnce(&mut JournalState)) -> Result<()> {
        let mut st = self.state.lock();
        let mut new = *st;
        change(&mut new);
        if new != *st {
            self.storage.write_state(&new.encode())?;
            *st = new;
        }
        Ok(())
    }

    /// Appends a record; `encode` writes exactly `len` bytes for the given
    /// LSN. A commit record (of the transaction given) closes its undo
    /// log. Returns its LSN and whether the buffer is full (the caller
    /// writes it, outside this lock).
    fn append_with(
        &self,
        len: usize,
        commit: Option<TxnId>,
        encode: impl FnOnce(&mut Vec<u8>, Lsn),
    ) -> Result<(Lsn, bool)> {
        let mut g = self.inner.lock();
        if let Some(p) = &g.poison {
            return Err(poisoned_error(p));
        }
        let lsn = self.push(&mut g, len, encode)?;
        g.last_data_lsn = lsn.0;
        if let Some(txn) = commit {
            if let Some(log) = g.logs.get_mut(&txn) {
                log.open = false;
            }
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok((lsn, g.pending_bytes >= self.cfg.buffer_bytes))
    }

    /// Puts a chunk that creates the next segment into the buffer and makes
    /// it the tail.
    fn start_segment(&self, inner: &mut Inner) -> Result<()> {
        let id = inner.next_segment;
        let next = id.checked_add(1).ok_or(Error::IdSpaceExhausted {
            what: "segment numbers",
        })?;
        inner.next_segment = next;
        let header = SegmentHeader {
            version: SEGMENT_VERSION,
            segment: id,
            first_lsn: Lsn(inner.next_lsn),
            next_txn: self
                .reserved_end
                .load(Ordering::Acquire)
                .min(MAX_HEADER_COUNTER - 1),
        };
        let bytes = self.buffer(inner);
        inner.pending.push(Chunk {
            segment: id,
            create: Some(header.encode()),
            bytes,
        });
        inner.tail_segment = id;
        inner.tail_len = SEGMENT_HEADER_LEN as u64;
        inner.segments.push_back(SegMeta {
            id,
            first_lsn: inner.next_lsn,
            version: SEGMENT_VERSION,
        });
        Ok(())
    }

    /// An empty buffer for the next chunk: a kept one, or a new one with
    /// room for the configured buffer size and then some (so that filling
    /// it rarely moves what it holds: only records past the size that
    /// outgrow the slack do).
    fn buffer(&self, inner: &mut Inner) -> Vec<u8> {
        inner.spare.pop().unwrap_or_else(|| {
            Vec::with_capacity(self.cfg.buffer_bytes.min(BUFFER_PRESIZE_MAX) + BUFFER_SLACK)
        })
    }

    /// Encodes a record into the buffer, starting a new segment when it
    /// would not fit.
    fn push(
        &self,
        inner: &mut Inner,
        len: usize,
        encode: impl FnOnce(&mut Vec<u8>, Lsn),
    ) -> Result<Lsn> {
        // A `let … else`, not `ok_or`: the error is built (and dropped)
        // only when it is returned, not on every record.
        let Some(next_lsn) = inner.next_lsn.checked_add(1) else {
            return Err(Error::IdSpaceExhausted { what: "LSNs" });
        };
        let new_segment = inner.tail_len + len as u64 > self.cfg.segment_size
            && inner.tail_len > SEGMENT_HEADER_LEN as u64;
        if new_segment {
            self.start_segment(inner)?;
        }
        if inner.pending.last().map(|c| c.segment) != Some(inner.tail_segment) {
            let bytes = self.buffer(inner);
            inner.pending.push(Chunk {
                segment: inner.tail_segment,
                create: None,
                bytes,
            });
        }
        let lsn = Lsn(inner.next_lsn);
        inner.next_lsn = next_lsn;
        let chunk = inner.pending.last_mut().expect("pushed above");
        let before = chunk.bytes.len();
        encode(&mut chunk.bytes, lsn);
        debug_assert_eq!(chunk.bytes.len() - before, len);
        inner.tail_len += len as u64;
        inner.pending_bytes += len;
        inner.records += 1;
        inner.bytes += len as u64;
        Ok(lsn)
    }

    /// Appends a mark claiming the durable LSN, if that is newer than the
    /// last claim. Returns its LSN.
    fn push_mark(&self, inner: &mut Inner) -> Result<Option<u64>> {
        if self.durable.load(Ordering::Acquire) <= inner.mark_claimed {
            return Ok(None);
        }
        self.push_mark_forced(inner).map(Some)
    }

    /// Appends a mark claiming the durable LSN. Returns its LSN.
    fn push_mark_forced(&self, inner: &mut Inner) -> Result<u64> {
        let claim = self.durable.load(Ordering::Acquire);
        let record = Record::Mark {
            synced_through: Lsn(claim),
        };
        let lsn = self.push(inner, record.encoded_len(), |buf, lsn| {
            record.encode_into(lsn, buf);
        })?;
        debug_assert!(claim < lsn.0);
        inner.mark_claimed = inner.mark_claimed.max(claim);
        if inner.marks_in_flight.len() == MARKS_IN_FLIGHT_MAX {
            inner.marks_in_flight.pop_front();
        }
        inner.marks_in_flight.push_back((lsn.0, claim));
        self.counters.marks.fetch_add(1, Ordering::Relaxed);
        Ok(lsn.0)
    }

    /// Removes the `n` oldest segments, after naming the new oldest in the
    /// state file.
    fn retire(&self, _retiring: &MutexGuard<'_, ()>, n: usize) -> Result<Vec<u64>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        // The oldest `n` segments hold only durable records with no I/O on
        // them, and only a retirement takes segments off the front, one at
        // a time (`retiring`): appends, which only add at the back, go on
        // while the state file is written and the files removed.
        let (oldest, ids): (u64, Vec<u64>) = {
            let g = self.inner.lock();
            assert!(n < g.segments.len(), "the newest segment is never retired");
            (
                g.segments[n].id,
                g.segments.iter().take(n).map(|s| s.id).collect(),
            )
        };
        self.persist(|s| s.oldest = s.oldest.max(oldest))?;
        let mut removed = Vec::with_capacity(n);
        let mut result = Ok(());
        for &id in &ids {
            if let Err(e) = self.storage.remove(id) {
                result = Err(e);
                break;
            }
            removed.push(id);
        }
        let mut g = self.inner.lock();
        for &id in &removed {
            let front = g.segments.pop_front().map(|s| s.id);
            debug_assert_eq!(
                front,
                Some(id),
                "only a retirement takes segments off the front"
            );
            self.counters.removed.fetch_add(1, Ordering::Relaxed);
        }
        drop(g);
        result.map(|()| removed)
    }

    /// The idle mark: when every record that is not a mark is durable but not
    /// yet covered by a durable mark, writes and syncs one.
    pub(super) fn idle_mark(&self) -> Result<()> {
        {
            let g = self.inner.lock();
            if g.poison.is_some() || g.io_busy {
                return Ok(());
            }
        }
        self.cover_with_mark()
    }
}

impl Wakeups for Core {
    fn idle_mark(&self) -> Result<()> {
        Core::idle_mark(self)
    }

    fn died(&self, reason: String) {
        self.poison(reason);
    }
}

#[cfg(test)]
mod tests;
