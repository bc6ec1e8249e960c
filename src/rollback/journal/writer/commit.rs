//! Group commit: the one thread that holds the I/O token writes everything
//! buffered, fsyncs once, and wakes every waiter whose LSN is now durable.
//!
//! # Contract
//! - Bytes reach the storage only in the hands of the token holder; a
//!   thread that needs durability becomes the leader when no one holds the
//!   token, and otherwise waits and is served by the next leader, so
//!   concurrent commits share fsyncs.
//! - A failed write or fsync stalls the journal when it is retryable, and
//!   poisons it otherwise (`resume.rs`): every later call says so. Batches
//!   written without an fsync are kept until one completes, so that a
//!   resume can rewrite them.

use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::MutexGuard;

use super::super::record::seal_frames;
use super::{poisoned_error, Chunk, Core, Inner, BUFFER_SLACK, SPARE_BUFFERS_MAX};
use crate::error::{Error, Result};
use crate::types::Lsn;

impl Core {
    pub(super) fn ensure_durable(&self, lsn: Lsn) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poison_error());
        }
        if self.durable.load(Ordering::Acquire) >= lsn.0 {
            return Ok(());
        }
        let mut g = self.inner.lock();
        if lsn.0 >= g.next_lsn {
            return Err(Error::InvalidArgument {
                what: "lsn",
                reason: format!(
                    "LSN {lsn} has not been handed out yet (the newest is {})",
                    g.next_lsn - 1
                ),
            });
        }
        self.drive(&mut g, Some(lsn.0))
    }

    pub(super) fn flush(&self) -> Result<()> {
        let last = self.inner.lock().next_lsn - 1;
        self.ensure_durable(Lsn(last))
    }

    /// After a flush: makes sure every record that is not a mark is covered
    /// by a durable mark, writing and syncing one if needed.
    pub(super) fn cover_with_mark(&self) -> Result<()> {
        let lsn = {
            let mut g = self.inner.lock();
            if let Some(p) = &g.poison {
                return Err(poisoned_error(p));
            }
            if g.marked >= g.last_data_lsn || self.durable.load(Ordering::Acquire) < g.last_data_lsn
            {
                return Ok(());
            }
            match self.push_mark(&mut g)? {
                Some(l) => l,
                None => match g.marks_in_flight.back() {
                    Some(&(l, _)) => l,
                    None => return Ok(()),
                },
            }
        };
        self.ensure_durable(Lsn(lsn))?;
        self.counters.idle_marks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Takes the I/O token (waiting for the current holder), writes what is
    /// buffered and, with `sync_to`, fsyncs until that LSN is durable.
    pub(super) fn drive(&self, g: &mut MutexGuard<'_, Inner>, sync_to: Option<u64>) -> Result<()> {
        let deadline = Instant::now() + self.cfg.sync_wait_timeout;
        loop {
            if let Some(p) = &g.poison {
                return Err(poisoned_error(p));
            }
            match sync_to {
                Some(lsn) if self.durable.load(Ordering::Acquire) >= lsn => return Ok(()),
                None if g.pending_bytes < self.cfg.buffer_bytes => return Ok(()),
                _ => {}
            }
            if g.io_busy {
                if self.cv.wait_until(g, deadline).timed_out() && g.io_busy {
                    return Err(Error::io(
                        format!(
                            "waiting {:?} for the undo journal's fsync (the disk may be hung)",
                            self.cfg.sync_wait_timeout
                        ),
                        std::io::Error::from(std::io::ErrorKind::TimedOut),
                    ));
                }
                continue;
            }
            // The batch names the last completed fsync, for free.
            self.push_mark(g)?;
            let chunks = std::mem::take(&mut g.pending);
            g.pending_bytes = 0;
            let target = g.next_lsn - 1;
            let from = g.io_segment;
            g.io_busy = true;
            // Past the bound of what is kept unsynced, the batch is synced.
            let sync = sync_to.is_some() || Core::must_sync(g);
            let (result, chunks) = MutexGuard::unlocked(g, || {
                let mut chunks = chunks;
                let r = self.write_chunks(&mut chunks, from, sync);
                (r, chunks)
            });
            g.io_busy = false;
            match result {
                Ok(seg) => {
                    g.io_segment = seg;
                    if sync {
                        self.synced(g, target);
                        self.recycle(g, chunks);
                    } else {
                        self.keep_unsynced(g, chunks);
                    }
                    self.cv.notify_all();
                    if !sync {
                        return Ok(());
                    }
                }
                Err(e) => return Err(self.halt(g, e, chunks)),
            }
        }
    }

    /// An fsync made every record up to `target` durable: advances the
    /// durable LSN and the marked LSN, wakes the mark thread, and recycles
    /// the batches kept unsynced.
    pub(super) fn synced(&self, g: &mut Inner, target: u64) {
        self.durable.fetch_max(target, Ordering::AcqRel);
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        while let Some(&(lsn, claim)) = g.marks_in_flight.front() {
            if lsn > target {
                break;
            }
            g.marked = g.marked.max(claim);
            g.marks_in_flight.pop_front();
        }
        if let Some(n) = self.notice.get() {
            n.notify(());
        }
        let kept = std::mem::take(&mut g.unsynced);
        g.unsynced_bytes = 0;
        self.recycle(g, kept);
    }

    /// Keeps written buffers for reuse, up to [`SPARE_BUFFERS_MAX`] of at
    /// most 2 × max(buffer size, [`BUFFER_SLACK`]) each (so at most that
    /// many times that is held idle); the others are freed.
    pub(super) fn recycle(&self, g: &mut Inner, chunks: Vec<Chunk>) {
        for mut c in chunks {
            if g.spare.len() < SPARE_BUFFERS_MAX
                && c.bytes.capacity() <= 2 * self.cfg.buffer_bytes.max(BUFFER_SLACK)
            {
                c.bytes.clear();
                g.spare.push(c.bytes);
            }
        }
    }

    /// Writes chunks in order, each frame's CRC computed first; syncs the
    /// previous segment before creating a new one, and names a new one in
    /// the state file before anything is appended to it; syncs the last one
    /// at the end when `sync`. A chunk's creation is forgotten once the
    /// segment exists and the state file names it (a rewrite after a stall
    /// then appends to it).
    pub(super) fn write_chunks(
        &self,
        chunks: &mut [Chunk],
        mut current: u64,
        sync: bool,
    ) -> Result<u64> {
        for c in chunks.iter_mut() {
            seal_frames(&mut c.bytes);
            if let Some(header) = &c.create {
                if current != 0 {
                    self.storage.sync(current)?;
                }
                self.storage.create(c.segment, header)?;
                self.persist(|s| s.newest = s.newest.max(c.segment))?;
                c.create = None;
            }
            current = c.segment;
            if !c.bytes.is_empty() {
                self.storage.append(c.segment, &c.bytes)?;
            }
        }
        if sync {
            self.storage.sync(current)?;
        }
        Ok(current)
    }
}
