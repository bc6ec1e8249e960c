//! The stalled state and the resume: a retryable write or fsync failure no
//! longer ends the journal; it keeps in memory every record that is not
//! durable, refuses new ones, and a resume re-validates the tail on disk,
//! rewrites those records and fsyncs.
//!
//! # Contract
//! - **Which failures stall.** An I/O error of a write, create, state-file
//!   write or fsync whose OS error is `ENOSPC` or `EDQUOT` (a full disk:
//!   [`Error::JournalStalled`] with `no_space`), or `EIO`, `EINTR`,
//!   `EAGAIN` (and the kinds interrupted, would-block, timed out, storage
//!   full, quota exceeded). Every other error (`EROFS`, a segment deleted
//!   under the journal, a panic of the mark thread) poisons it for good,
//!   as before: [`Error::Poisoned`].
//! - **Nothing accepted is lost.** The writer keeps every batch it wrote
//!   without an fsync (at most [`UNSYNCED_KEEP_BYTES_MAX`] bytes: a batch
//!   beyond that is written with an fsync, so the bound holds); at a stall
//!   those, the failed batch and the records still buffered are exactly
//!   the records above the durable LSN, in order. While stalled, every
//!   append, begin and commit is refused with [`Error::JournalStalled`]
//!   (retryable) — never accepted and then dropped — so the memory a stall
//!   holds is bounded by that keep bound plus one buffer (and one record per
//!   appending thread).
//! - **A resume rewrites; it never only fsyncs again.** After a failed
//!   fsync the kernel may have dropped the dirty pages and a second fsync
//!   may report success with the bytes gone, and after a failed write
//!   part of it may be in the file. So the resume (under the I/O token, no
//!   appends meanwhile): (1) re-reads the state file; a segment whose
//!   creation the stall interrupted and the state file does not name is
//!   removed (a crash before that leaves what recovery calls a torn
//!   creation), one it names counts as created; (2) takes the newest
//!   segment that exists among those the kept records belong to: every
//!   older one is complete and durable (a segment is created only after
//!   the one before it was synced in full, and records never go back to an
//!   older segment), so its kept records are not written again; (3)
//!   re-validates that newest segment: its header, then every record up to
//!   the durable LSN (CRC, consecutive LSNs) — damage there is not a stall
//!   but lost durable data, and poisons the journal; (4) truncates it right
//!   after the last durable record (durably), discarding whatever the OS
//!   kept after it; (5) writes its kept records and those of every newer
//!   segment again from memory, in order, creating segments as a normal
//!   batch does (the previous one synced before each creation), and
//!   fsyncs; (6) marks them durable and un-stalls. A retryable failure in any step leaves the
//!   journal stalled with the same records (counted in
//!   `failed_resumes`); any other poisons it.
//! - **Commits.** A commit acknowledged (returned `Ok`) is durable. A
//!   commit that returned [`Error::JournalStalled`] is not acknowledged:
//!   its record may be among those kept, and becomes durable at the resume;
//!   the caller calls `commit` again after the resume, which then finishes
//!   (or fails again, unacknowledged, if the journal stalled again).
//!   Transactions in flight keep their in-memory state; an undo append the
//!   stall refused was never recorded (the page was not written).
//!
//! # Crash analysis of a resume
//! Steps (1) and (4) leave only states recovery already accepts: a
//! segment above the state file's newest that holds no record (a torn
//! creation), and a newest segment whose tail after the durable records is
//! cut (only the newest existing segment is ever cut, so no gap arises
//! between segments). A crash during (5) leaves a prefix of the rewritten records after
//! the durable ones — a torn tail of unacknowledged records, as any crash
//! before an fsync does. No step changes a durable record.

use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::MutexGuard;

use super::super::record::{decode_frame, SegmentHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::super::recovery::SegMeta;
use super::super::state::JournalState;
use super::{poisoned_error, Chunk, Core, Halt, Inner, Journal, Stall, COMPONENT};
use crate::error::{Error, Result};
use crate::retry::retryable;
use crate::rollback::ResumeReport;
use crate::types::Lsn;

/// Most bytes the writer keeps of batches written without an fsync, for a
/// resume to rewrite; a batch beyond it is written with an fsync.
pub const UNSYNCED_KEEP_BYTES_MAX: usize = 64 << 20;

impl Halt {
    /// The error a refused call returns.
    pub(super) fn error(&self) -> Error {
        match self {
            Halt::Poisoned(reason) => Error::Poisoned {
                component: COMPONENT,
                reason: reason.clone(),
            },
            Halt::Stalled(s) => Error::JournalStalled {
                reason: s.reason.clone(),
                no_space: s.no_space,
            },
        }
    }

    /// Whether this is the sticky poisoned state.
    pub(super) fn is_poisoned(&self) -> bool {
        matches!(self, Halt::Poisoned(_))
    }
}

/// What a stalled journal holds, for the rollback manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StallInfo {
    pub reason: String,
    pub no_space: bool,
    pub failed_resumes: u32,
    pub pending_bytes: u64,
}

/// Records and bytes in `chunks` (whole frames, back to back).
fn count(chunks: &[Chunk]) -> (u64, u64) {
    let (mut records, mut bytes) = (0u64, 0u64);
    for c in chunks {
        let mut at = 0;
        while at + RECORD_HEADER_LEN <= c.bytes.len() {
            let len = u32::from_le_bytes([
                c.bytes[at],
                c.bytes[at + 1],
                c.bytes[at + 2],
                c.bytes[at + 3],
            ]) as usize;
            at += RECORD_HEADER_LEN + len;
            records += 1;
        }
        bytes += c.bytes.len() as u64;
    }
    (records, bytes)
}

impl Core {
    /// Keeps a batch written without an fsync, for a resume.
    pub(super) fn keep_unsynced(&self, g: &mut Inner, chunks: Vec<Chunk>) {
        g.unsynced_bytes += chunks.iter().map(|c| c.bytes.len()).sum::<usize>();
        g.unsynced.extend(chunks);
    }

    /// Whether the next batch must be synced to keep the keep bound.
    pub(super) fn must_sync(g: &Inner) -> bool {
        g.unsynced_bytes >= UNSYNCED_KEEP_BYTES_MAX
    }

    /// A batch's write or fsync failed with `e`: stalls (keeping every
    /// record not durable) or poisons. Returns the error to give the caller.
    pub(super) fn halt(&self, g: &mut Inner, e: Error, chunks: Vec<Chunk>) -> Error {
        let reason = e.to_string();
        let Some(no_space) = retryable(&e) else {
            tracing::error!(%reason, "undo journal poisoned");
            g.poison = Some(Halt::Poisoned(reason.clone()));
            self.cv.notify_all();
            self.mark_poisoned(&reason);
            return poisoned_error(g.poison.as_ref().expect("set above"));
        };
        let mut kept = std::mem::take(&mut g.unsynced);
        g.unsynced_bytes = 0;
        kept.extend(chunks);
        tracing::warn!(%reason, no_space, "undo journal stalled; a resume rewrites what it holds");
        g.poison = Some(Halt::Stalled(Stall {
            reason: reason.clone(),
            no_space,
            chunks: kept,
            failed_resumes: 0,
        }));
        self.cv.notify_all();
        if let Some(hook) = &self.cfg.on_stall {
            hook(&reason, no_space);
        }
        g.poison.as_ref().expect("set above").error()
    }

    /// Cuts and rewrites: see the module docs. `chunks` come back holding
    /// what was rewritten (the rest is dropped). Returns the segment written
    /// last (0 when nothing was).
    fn redo(&self, chunks: &mut Vec<Chunk>, durable: u64, segs: &[SegMeta]) -> Result<u64> {
        let state = match self.storage.read_state()? {
            Some(bytes) => Some(JournalState::decode(&self.storage.state_path(), &bytes)?),
            None => None,
        };
        let present = self.storage.list()?;
        for c in chunks.iter_mut() {
            if c.create.is_some() && present.contains(&c.segment) {
                if state.is_some_and(|s| s.newest >= c.segment) {
                    c.create = None;
                } else {
                    self.storage.remove(c.segment)?;
                }
            }
        }
        // A segment is created only after the one before it was synced in
        // full, and records never go back to an older segment: every
        // segment below the newest one that exists is complete and durable.
        let tail = chunks
            .iter()
            .filter(|c| c.create.is_none())
            .map(|c| c.segment)
            .max()
            .or_else(|| segs.last().map(|s| s.id).filter(|_| chunks.is_empty()));
        if let Some(t) = tail {
            chunks.retain(|c| c.segment >= t);
            self.cut_after_durable(t, durable, segs)?;
        }
        let from = match chunks.first() {
            Some(c) if c.create.is_none() => c.segment,
            Some(_) => 0,
            None => tail.unwrap_or(0),
        };
        if from == 0 && chunks.is_empty() {
            return Ok(0);
        }
        self.write_chunks(chunks, from, true)
    }

    /// Re-validates segment `id` up to the durable LSN and truncates it
    /// right after the last durable record.
    fn cut_after_durable(&self, id: u64, durable: u64, segs: &[SegMeta]) -> Result<()> {
        let path = self.storage.segment_path(id);
        let i = segs
            .iter()
            .position(|s| s.id == id)
            .ok_or_else(|| Error::corrupt_file(&path, 0, "the segment is not in the journal"))?;
        let meta = segs[i];
        let end_lsn = segs.get(i + 1).map_or(u64::MAX, |n| n.first_lsn);
        let bytes = self.storage.read(id)?;
        let header = SegmentHeader::decode(&bytes).map_err(|d| {
            Error::corrupt_file(&path, 0, format!("re-validating before a resume: {d:?}"))
        })?;
        if header.segment != id || header.first_lsn.0 != meta.first_lsn {
            return Err(Error::corrupt_file(
                &path,
                0,
                format!(
                    "re-validating before a resume: the header names segment {} from LSN {}, \
                     the journal expects segment {id} from LSN {}",
                    header.segment, header.first_lsn, meta.first_lsn
                ),
            ));
        }
        let mut at = SEGMENT_HEADER_LEN;
        let mut lsn = meta.first_lsn;
        while lsn <= durable && lsn < end_lsn {
            match decode_frame(&bytes[at..], header.version) {
                Ok((l, _, len)) if l.0 == lsn => {
                    at += len;
                    lsn += 1;
                }
                Ok((l, _, _)) => {
                    return Err(Error::corrupt_file(
                        &path,
                        at as u64,
                        format!("re-validating before a resume: LSN {l} where durable LSN {lsn} belongs"),
                    ))
                }
                Err(e) => {
                    return Err(Error::corrupt_file(
                        &path,
                        at as u64,
                        format!("re-validating before a resume: durable LSN {lsn} does not read back: {e:?}"),
                    ))
                }
            }
        }
        if bytes.len() > at {
            self.storage.truncate(id, at as u64)?;
        }
        Ok(())
    }

    /// A resume attempt failed with `e`: stays stalled with `chunks`, or
    /// poisons. Returns the error to give the caller.
    fn resume_failed(&self, g: &mut Inner, e: Error, chunks: Vec<Chunk>) -> Error {
        let reason = e.to_string();
        match (retryable(&e), g.poison.as_mut()) {
            (Some(no_space), Some(Halt::Stalled(s))) => {
                tracing::warn!(%reason, "undo journal resume failed; still stalled");
                s.reason = reason;
                s.no_space = no_space;
                s.chunks = chunks;
                s.failed_resumes = s.failed_resumes.saturating_add(1);
            }
            _ => {
                let reason = format!("a resume after a stall failed: {reason}");
                tracing::error!(%reason, "undo journal poisoned");
                g.poison = Some(Halt::Poisoned(reason.clone()));
                self.mark_poisoned(&reason);
            }
        }
        self.cv.notify_all();
        g.poison.as_ref().expect("set").error()
    }
}

impl Journal {
    /// What a stalled journal holds; `None` when it is not stalled.
    pub(crate) fn stall_info(&self) -> Option<StallInfo> {
        let g = self.core.inner.lock();
        match &g.poison {
            Some(Halt::Stalled(s)) => Some(StallInfo {
                reason: s.reason.clone(),
                no_space: s.no_space,
                failed_resumes: s.failed_resumes,
                pending_bytes: (s.chunks.iter().map(|c| c.bytes.len()).sum::<usize>()
                    + g.pending_bytes) as u64,
            }),
            _ => None,
        }
    }

    /// Resumes a stalled journal (see the module docs); does nothing for
    /// one that is not stalled.
    ///
    /// # Errors
    /// [`Error::JournalStalled`] when it failed retryably again (still
    /// stalled); [`Error::Poisoned`] when the journal is poisoned, or the
    /// resume found lost durable data or failed for good; a retryable
    /// timed-out [`Error::Io`] when another thread's I/O does not finish
    /// in time.
    pub(crate) fn resume(&self) -> Result<ResumeReport> {
        let core = &self.core;
        let mut g = core.inner.lock();
        let deadline = Instant::now() + core.cfg.sync_wait_timeout;
        while g.io_busy {
            if core.cv.wait_until(&mut g, deadline).timed_out() && g.io_busy {
                return Err(Error::io(
                    format!(
                        "waiting {:?} for the undo journal's I/O before a resume",
                        core.cfg.sync_wait_timeout
                    ),
                    std::io::Error::from(std::io::ErrorKind::TimedOut),
                ));
            }
        }
        let mut chunks = match g.poison.as_mut() {
            None => return Ok(ResumeReport::default()),
            Some(Halt::Poisoned(_)) => {
                return Err(poisoned_error(g.poison.as_ref().expect("some")))
            }
            Some(Halt::Stalled(s)) => std::mem::take(&mut s.chunks),
        };
        chunks.append(&mut g.pending);
        g.pending_bytes = 0;
        let target = g.next_lsn - 1;
        let durable = core.durable.load(Ordering::Acquire);
        let segs: Vec<SegMeta> = g.segments.iter().copied().collect();
        g.io_busy = true;
        let (result, chunks) = MutexGuard::unlocked(&mut g, || {
            let mut chunks = chunks;
            let r = core.redo(&mut chunks, durable, &segs);
            (r, chunks)
        });
        g.io_busy = false;
        match result {
            Ok(seg) => {
                if seg != 0 {
                    g.io_segment = seg;
                }
                g.poison = None;
                let (records, bytes) = count(&chunks);
                core.synced(&mut g, target);
                core.recycle(&mut g, chunks);
                core.cv.notify_all();
                tracing::info!(records, bytes, "undo journal resumed");
                Ok(ResumeReport {
                    was_stalled: true,
                    records_rewritten: records,
                    bytes_rewritten: bytes,
                })
            }
            Err(e) => Err(core.resume_failed(&mut g, e, chunks)),
        }
    }

    /// Appends a mark and makes it durable: proves the journal accepts and
    /// syncs records.
    ///
    /// # Errors
    /// As [`ensure_durable`](Self::ensure_durable); [`Error::JournalStalled`]
    /// or [`Error::Poisoned`] when the journal refuses work.
    pub(crate) fn probe(&self) -> Result<Lsn> {
        let core = &self.core;
        let lsn = {
            let mut g = core.inner.lock();
            if let Some(h) = &g.poison {
                return Err(h.error());
            }
            core.push_mark_forced(&mut g)?
        };
        core.ensure_durable(Lsn(lsn))?;
        Ok(Lsn(lsn))
    }
}
