//! The streaming writer of snapshot files (layout in [`super::format`]):
//! pages pushed in ascending order are cut into chunks, which the
//! compression threads (`super::compress`) compress while this thread
//! copies the next pages in and writes the compressed chunks out, in chunk
//! order; the index (with every page's fingerprint) and footer are appended
//! by [`SnapshotWriter::finish`]. The file is only flushed here; the caller
//! fsyncs and renames it (the crash analysis is in the `snapshot` module
//! docs).
//!
//! The bytes written do not depend on the thread count or on timing: chunk
//! boundaries are fixed by the page order and the chunk size, each chunk is
//! compressed as one thread would, and chunks are written in order.
//! At most two chunks per thread are in flight (queued, compressing, or
//! compressed and waiting for an earlier one), plus the one being filled.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::compress::{Chunk, CompressPool};
use super::format::{encode_footer, encode_index, ChunkEntry, Header, FOOTER_LEN, HEADER_LEN};
use crate::error::{Error, Result};
use crate::worker::{Call, CallError, TimedCaller};

/// How long [`SnapshotWriter::finish`] waits for an early sync by default.
pub(crate) const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Chunks in flight per compression thread.
const IN_FLIGHT_PER_THREAD: usize = 2;

/// The write buffer: it gathers the header and small compressed chunks; a
/// chunk at least this long goes from the compression buffer to the file
/// directly instead of being copied through it.
const WRITE_BUFFER: usize = 64 << 10;

/// Streams a snapshot file: pages in ascending order, compressed a chunk
/// per job on a pool of threads.
pub(crate) struct SnapshotWriter {
    out: BufWriter<File>,
    path: PathBuf,
    header: Header,
    pool: CompressPool,
    /// The chunk being filled.
    current: Chunk,
    /// Buffers of chunks already written, for the next ones.
    spare: Vec<Chunk>,
    /// Compressed chunks that wait for an earlier one to be written.
    waiting: BTreeMap<u64, Chunk>,
    /// Sequence number of the next chunk submitted.
    next_seq: u64,
    /// Sequence number of the next chunk written.
    next_write: u64,
    in_flight_max: usize,
    /// A chunk shorter than `chunk_pages` was submitted: it must be the last.
    ended_short: bool,
    chunks: Vec<ChunkEntry>,
    offset: u64,
    fps: Vec<u64>,
    stored: Vec<u64>,
    full: bool,
    /// The parent's page count (0 for a full snapshot): every page from it
    /// to the page count must be pushed.
    parent_count: u64,
    early: EarlySync,
}

/// Bytes written between two early writeback requests.
const EARLY_SYNC_BYTES: u64 = 32 << 20;

/// How an early sync syncs the file (replaced by tests with one that hangs).
pub(crate) type SyncFn = Arc<dyn Fn(&File) -> std::io::Result<()> + Send + Sync>;

/// Starts writeback of what has been written so far on a helper thread
/// (`selfheal-snapshot-sync`, a [`TimedCaller`]), so that disk writes
/// overlap compression and the final fsync has little left to do.
/// Durability still rests on that final fsync; an error of an early one is
/// reported by [`stop`](Self::stop) too. At most one early sync runs at a
/// time (a request while one runs is skipped), and `stop` waits for the one
/// running at most the configured time: a sync that hangs is left running,
/// never joined.
struct EarlySync {
    caller: TimedCaller,
    /// The early sync started last (kept: dropping it would withdraw it).
    pending: Option<Call<()>>,
    file: Option<Arc<File>>,
    sync: SyncFn,
    /// The first error of an early sync.
    failed: Arc<Mutex<Option<std::io::Error>>>,
    unsynced: u64,
    every_bytes: u64,
    timeout: Duration,
}

impl EarlySync {
    fn start(file: &File, timeout: Duration) -> Self {
        EarlySync {
            caller: TimedCaller::new("selfheal-snapshot-sync"),
            pending: None,
            file: file.try_clone().ok().map(Arc::new),
            sync: Arc::new(File::sync_data),
            failed: Arc::default(),
            unsynced: 0,
            every_bytes: EARLY_SYNC_BYTES,
            timeout,
        }
    }

    fn wrote(&mut self, n: u64) {
        self.unsynced += n;
        if self.unsynced < self.every_bytes || !self.caller.is_idle() {
            return;
        }
        let Some(f) = self.file.clone() else { return };
        let (sync, failed) = (self.sync.clone(), self.failed.clone());
        // Not waited for here: `stop` waits for whatever is running then.
        let started = self.caller.start(move || {
            if let Err(e) = sync(&f) {
                failed.lock().get_or_insert(e);
            }
        });
        if let Ok(call) = started {
            self.pending = Some(call);
            self.unsynced = 0;
        }
    }

    /// Waits, at most the timeout, for the early sync running now, and
    /// returns the first error of any.
    fn stop(&mut self) -> std::io::Result<()> {
        self.file = None;
        let deadline = Instant::now() + self.timeout;
        let waited = self
            .pending
            .take()
            .map(|mut call| call.wait_until(deadline));
        match waited {
            None | Some(Ok(())) => {}
            Some(Err(CallError::TimedOut)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "an early sync did not finish within {:?} (a disk that hangs); it was \
                         left running. Check the disk, then take the snapshot again",
                        self.timeout
                    ),
                ))
            }
            Some(Err(e)) => {
                return Err(std::io::Error::other(format!("the early sync {e}")));
            }
        }
        match self.failed.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl SnapshotWriter {
    /// Starts writing `header` to the already created file `out` (named
    /// `path` in errors), compressing on `threads` threads. `fps` is the
    /// parent's fingerprint table for an incremental snapshot (resized to
    /// the page count; every page at or past the parent's count must then be
    /// pushed), ignored for a full one. [`finish`](Self::finish) waits for an
    /// early sync at most [`DEFAULT_SYNC_TIMEOUT`] unless
    /// [`sync_timeout`](Self::sync_timeout) says otherwise.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a page count that does not fit in
    /// memory; [`Error::Io`] when no compression thread can be started or
    /// the header cannot be written.
    pub fn new(
        out: File,
        path: PathBuf,
        header: Header,
        threads: usize,
        mut fps: Vec<u64>,
    ) -> Result<Self> {
        let full = header.parent.is_none();
        let pc = usize::try_from(header.page_count).map_err(|_| Error::InvalidArgument {
            what: "store",
            reason: "page count does not fit in memory".into(),
        })?;
        let parent_count = if full { 0 } else { fps.len() as u64 };
        if full {
            fps.clear();
        }
        fps.resize(pc, 0);
        let threads = threads.max(1);
        let in_flight_max = threads * IN_FLIGHT_PER_THREAD;
        let pool = CompressPool::start(threads, in_flight_max, header.page_size)?;
        let early = EarlySync::start(&out, DEFAULT_SYNC_TIMEOUT);
        let mut w = SnapshotWriter {
            out: BufWriter::with_capacity(WRITE_BUFFER, out),
            path,
            pool,
            current: Chunk::default(),
            spare: Vec::new(),
            waiting: BTreeMap::new(),
            next_seq: 0,
            next_write: 0,
            in_flight_max,
            ended_short: false,
            chunks: Vec::new(),
            offset: HEADER_LEN as u64,
            fps,
            stored: Vec::new(),
            full,
            parent_count,
            header,
            early,
        };
        let hb = w.header.encode();
        w.write(&hb)?;
        Ok(w)
    }

    /// How long [`finish`](Self::finish) waits for an early sync still
    /// running.
    #[must_use]
    pub fn sync_timeout(mut self, timeout: Duration) -> Self {
        self.early.timeout = timeout;
        self
    }

    /// Replaces how early syncs sync the file, and how many bytes are written
    /// between two (tests: a sync that hangs).
    #[cfg(test)]
    pub(crate) fn with_early_sync(mut self, sync: SyncFn, every_bytes: u64) -> Self {
        self.early.sync = sync;
        self.early.every_bytes = every_bytes;
        self
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out
            .write_all(b)
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }

    /// Chunks written so far.
    pub fn chunks_written(&self) -> usize {
        self.chunks.len()
    }

    /// Adds `page` (pages must come in strictly ascending order; a full
    /// snapshot must get every page `0..P`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a page out of order, of the wrong
    /// size, or pushed after [`flush_batch`](Self::flush_batch) wrote a
    /// short chunk; a compression or write error of an earlier chunk.
    pub fn push(&mut self, page: u64, bytes: &[u8]) -> Result<()> {
        self.push_page(page, bytes, None)
    }

    /// As [`push`](Self::push), with the page's fingerprint already
    /// computed (it must be [`page_fingerprint`](super::page_fingerprint)
    /// of `bytes`): the page is not hashed a second time.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn push_fingerprinted(&mut self, page: u64, bytes: &[u8], fp: u64) -> Result<()> {
        self.push_page(page, bytes, Some(fp))
    }

    fn push_page(&mut self, page: u64, bytes: &[u8], fp: Option<u64>) -> Result<()> {
        let expected_next = self.stored.last().map_or(0, |p| p + 1);
        let ok = if self.full {
            page == expected_next
        } else {
            page < self.header.page_count && (self.stored.is_empty() || page >= expected_next)
        };
        if !ok || bytes.len() != self.header.page_size || self.ended_short {
            return Err(Error::InvalidArgument {
                what: "page",
                reason: format!(
                    "page {page} ({} bytes) pushed out of order, with the wrong size, or after the last chunk",
                    bytes.len()
                ),
            });
        }
        let ps = self.header.page_size;
        let at = self.room();
        self.current.raw[at..at + ps].copy_from_slice(bytes);
        // Kept only while every page of the chunk so far came with one;
        // the compressor computes them all otherwise.
        match fp {
            Some(fp) if self.current.page_fps.len() == self.current.pages.len() => {
                self.current.page_fps.push(fp);
            }
            _ => self.current.page_fps.clear(),
        }
        self.took(page, 1)
    }

    /// Adds pages `first..first + count` of a full snapshot (the next ones
    /// due), read by `read(first page, buffer)` straight into the chunk
    /// buffers, a run of at most one chunk per call: one copy of each page
    /// instead of two.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for pages that are not the next ones of a
    /// full snapshot, or after a short chunk was written; `read`'s error;
    /// a compression or write error of an earlier chunk.
    pub fn push_run(
        &mut self,
        first: u64,
        count: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let expected_next = self.stored.last().map_or(0, |p| p + 1);
        let fits = first
            .checked_add(count)
            .is_some_and(|end| end <= self.header.page_count);
        if !self.full || first != expected_next || !fits || self.ended_short {
            return Err(Error::InvalidArgument {
                what: "page",
                reason: format!(
                    "pages {first}..+{count} are not the next pages of a full snapshot"
                ),
            });
        }
        let ps = self.header.page_size;
        let mut page = first;
        let end = first + count;
        while page < end {
            let at = self.room();
            let room = (self.header.chunk_pages - self.current.pages.len()) as u64;
            let n = room.min(end - page);
            read(page, &mut self.current.raw[at..at + n as usize * ps])?;
            self.took(page, n)?;
            page += n;
        }
        Ok(())
    }

    /// Where the next page goes in the chunk being filled (its buffer
    /// sized to a whole chunk once, then reused).
    fn room(&mut self) -> usize {
        let chunk_bytes = self.header.chunk_pages * self.header.page_size;
        if self.current.raw.len() < chunk_bytes {
            self.current.raw.resize(chunk_bytes, 0);
        }
        self.current.filled
    }

    /// Records pages `first..first + n`, just placed in the chunk being
    /// filled, and hands the chunk on once it is full.
    fn took(&mut self, first: u64, n: u64) -> Result<()> {
        self.stored.extend(first..first + n);
        self.current.pages.extend(first..first + n);
        self.current.filled += n as usize * self.header.page_size;
        debug_assert!(self.current.pages.len() <= self.header.chunk_pages);
        if self.current.pages.len() == self.header.chunk_pages {
            self.submit_current()?;
        }
        Ok(())
    }

    /// Compresses and writes every page pushed so far. A chunk shorter than
    /// the chunk size can only be the file's last, so no page may be pushed
    /// after a call that wrote one.
    ///
    /// # Errors
    /// A compression or write error.
    pub fn flush_batch(&mut self) -> Result<()> {
        if !self.current.pages.is_empty() {
            if self.current.pages.len() < self.header.chunk_pages {
                self.ended_short = true;
            }
            self.submit_current()?;
        }
        while self.next_write < self.next_seq {
            self.write_next()?;
        }
        Ok(())
    }

    /// Hands the chunk being filled to the pool (after writing chunks until
    /// there is room in flight), then writes whatever is ready in order.
    fn submit_current(&mut self) -> Result<()> {
        while self.next_seq - self.next_write >= self.in_flight_max as u64 {
            self.write_next()?;
        }
        let mut next = self.spare.pop().unwrap_or_default();
        next.filled = 0;
        next.pages.clear();
        next.page_fps.clear();
        let mut chunk = std::mem::replace(&mut self.current, next);
        chunk.seq = self.next_seq;
        self.pool.submit(chunk)?;
        self.next_seq += 1;
        while let Some(c) = self.pool.try_next()? {
            self.waiting.insert(c.seq, c);
        }
        while let Some(c) = self.waiting.remove(&self.next_write) {
            self.write_chunk(c)?;
        }
        Ok(())
    }

    /// Writes chunk `next_write`, waiting for it to be compressed.
    fn write_next(&mut self) -> Result<()> {
        loop {
            if let Some(c) = self.waiting.remove(&self.next_write) {
                return self.write_chunk(c);
            }
            let c = self.pool.next()?;
            self.waiting.insert(c.seq, c);
        }
    }

    /// Writes a compressed chunk (the next in order) and records it.
    fn write_chunk(&mut self, chunk: Chunk) -> Result<()> {
        debug_assert_eq!(chunk.seq, self.next_write);
        if let Some(e) = &chunk.err {
            return Err(Error::io(
                format!("compressing a chunk of {}", self.path.display()),
                std::io::Error::other(e.clone()),
            ));
        }
        for (p, fp) in chunk.pages.iter().zip(&chunk.page_fps) {
            self.fps[*p as usize] = *fp;
        }
        self.chunks.push(ChunkEntry {
            offset: self.offset,
            compressed_len: chunk.used as u32,
            raw_len: chunk.filled as u32,
            crc: chunk.crc,
        });
        self.offset += chunk.used as u64;
        self.out
            .write_all(&chunk.out[..chunk.used])
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))?;
        self.early.wrote(chunk.used as u64);
        self.next_write += 1;
        self.spare.push(chunk);
        Ok(())
    }

    /// Writes the rest, the index and the footer, and flushes to the OS
    /// (not yet synced). Returns the file, its length, the fingerprint table
    /// and the number of stored pages.
    pub fn finish(mut self, metadata: &[(String, Vec<u8>)]) -> Result<(File, u64, Vec<u64>, u64)> {
        self.flush_batch()?;
        if self.full && self.stored.len() as u64 != self.header.page_count {
            return Err(Error::InvalidArgument {
                what: "store",
                reason: format!(
                    "the store yielded {} of its {} pages during the snapshot",
                    self.stored.len(),
                    self.header.page_count
                ),
            });
        }
        let from = self.parent_count.min(self.header.page_count);
        let tail = self.stored.len() - self.stored.partition_point(|&p| p < from);
        if (tail as u64) != self.header.page_count - from {
            return Err(Error::InvalidArgument {
                what: "store",
                reason: format!(
                    "an incremental snapshot must hold every page from its parent's count {from} to {}, but got {tail} of them",
                    self.header.page_count
                ),
            });
        }
        let pages = (!self.full).then_some(&self.stored[..]);
        let index = encode_index(
            &self.chunks,
            pages,
            self.stored.len() as u64,
            &self.fps,
            metadata,
        );
        let footer = encode_footer(self.offset, &index);
        self.write(&index)?;
        self.write(&footer)?;
        let len = self.offset + index.len() as u64 + FOOTER_LEN as u64;
        let stored = self.stored.len() as u64;
        let path = self.path.clone();
        self.early
            .stop()
            .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(format!("writing {}", path.display()), e.into_error()))?;
        Ok((file, len, self.fps, stored))
    }
}
