//! The streaming writer of snapshot files (layout in [`super::format`]):
//! pages pushed in ascending order are cut into chunks, compressed on scoped
//! threads while the previous batch is written, and the index (with every
//! page's fingerprint) and footer are appended by [`SnapshotWriter::finish`].
//! The file is only flushed here; the caller fsyncs and renames it (the
//! crash analysis is in the `snapshot` module docs).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::fingerprint::page_fingerprint;
use super::format::{
    encode_footer, encode_index, ChunkEntry, Header, FOOTER_LEN, HEADER_LEN, WORKER_NAME,
};
use crate::error::{Error, Result};
use crate::worker::{Call, CallError, TimedCaller};

/// How long [`SnapshotWriter::finish`] waits for an early sync by default.
pub(crate) const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// One compression job: a chunk's output buffer and results.
#[derive(Default)]
struct Job {
    out: Vec<u8>,
    used: usize,
    raw_len: usize,
    pages: Vec<u64>,
    crc: u32,
    page_fps: Vec<u64>,
    err: Option<String>,
}

/// Streams a snapshot file: pages in ascending order, compressed in batches
/// of one chunk per thread.
pub(crate) struct SnapshotWriter {
    out: BufWriter<File>,
    path: PathBuf,
    header: Header,
    threads: usize,
    pending_pages: Vec<u64>,
    pending_raw: Vec<u8>,
    jobs: Vec<Job>,
    done: Vec<Job>,
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
    /// `path` in errors). `fps` is the parent's fingerprint table for an
    /// incremental snapshot (resized to the page count; every page at or past
    /// the parent's count must then be pushed), ignored for a full one.
    /// [`finish`](Self::finish) waits for an early sync at most
    /// [`DEFAULT_SYNC_TIMEOUT`] unless [`sync_timeout`](Self::sync_timeout)
    /// says otherwise.
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
        let early = EarlySync::start(&out, DEFAULT_SYNC_TIMEOUT);
        let mut w = SnapshotWriter {
            out: BufWriter::with_capacity(1 << 20, out),
            path,
            threads: threads.max(1),
            pending_pages: Vec::new(),
            pending_raw: Vec::new(),
            jobs: Vec::new(),
            done: Vec::new(),
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
    pub fn push(&mut self, page: u64, bytes: &[u8]) -> Result<()> {
        let expected_next = self.stored.last().map_or(0, |p| p + 1);
        let ok = if self.full {
            page == expected_next
        } else {
            page < self.header.page_count && (self.stored.is_empty() || page >= expected_next)
        };
        if !ok || bytes.len() != self.header.page_size {
            return Err(Error::InvalidArgument {
                what: "page",
                reason: format!(
                    "page {page} ({} bytes) pushed out of order or with the wrong size",
                    bytes.len()
                ),
            });
        }
        self.stored.push(page);
        self.pending_pages.push(page);
        self.pending_raw.extend_from_slice(bytes);
        if self.pending_pages.len() >= self.threads * self.header.chunk_pages {
            self.step()?;
        }
        Ok(())
    }

    /// Compresses and writes every page pushed so far.
    pub fn flush_batch(&mut self) -> Result<()> {
        self.step()?;
        self.step()
    }

    /// One pipeline step: compresses the pending pages (one chunk per
    /// thread) while this thread writes the chunks compressed by the
    /// previous step, so that compression and I/O overlap.
    fn step(&mut self) -> Result<()> {
        let ps = self.header.page_size;
        let cp = self.header.chunk_pages;
        let chunk_bytes = cp * ps;
        let n = self.pending_raw.len().div_ceil(chunk_bytes);
        while self.jobs.len() < n {
            self.jobs.push(Job::default());
        }
        let to_write = std::mem::take(&mut self.done);
        let emitted: u64 = to_write.iter().map(|j| j.used as u64).sum();
        let SnapshotWriter {
            out,
            path,
            jobs,
            pending_raw,
            pending_pages,
            chunks,
            offset,
            fps,
            ..
        } = self;
        let (raw, pages) = (&*pending_raw, &*pending_pages);
        let compress = |i: usize, job: &mut Job| {
            let input = &raw[i * chunk_bytes..((i + 1) * chunk_bytes).min(raw.len())];
            let max = lz4_flex::block::get_maximum_output_size(input.len());
            if job.out.len() < max {
                job.out.resize(max, 0);
            }
            job.raw_len = input.len();
            job.pages.clear();
            job.pages
                .extend_from_slice(&pages[i * cp..i * cp + input.len() / ps]);
            job.page_fps.clear();
            for (slot, p) in input.chunks_exact(ps).enumerate() {
                job.page_fps.push(page_fingerprint(job.pages[slot], p));
            }
            match lz4_flex::block::compress_into(input, &mut job.out[..max]) {
                Ok(used) => {
                    job.used = used;
                    job.crc = crc32fast::hash(&job.out[..used]);
                    job.err = None;
                }
                Err(e) => job.err = Some(e.to_string()),
            }
        };
        let mut emit = || -> Result<()> {
            for job in &to_write {
                if let Some(e) = &job.err {
                    return Err(Error::io(
                        format!("compressing a chunk of {}", path.display()),
                        std::io::Error::other(e.clone()),
                    ));
                }
                for (p, fp) in job.pages.iter().zip(&job.page_fps) {
                    fps[*p as usize] = *fp;
                }
                chunks.push(ChunkEntry {
                    offset: *offset,
                    compressed_len: job.used as u32,
                    raw_len: job.raw_len as u32,
                    crc: job.crc,
                });
                *offset += job.used as u64;
                out.write_all(&job.out[..job.used])
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            }
            Ok(())
        };
        let written = if n == 0 {
            emit()
        } else {
            std::thread::scope(|s| {
                let (first, rest) = jobs[..n].split_at_mut(1);
                let compress = &compress;
                for (i, job) in rest.iter_mut().enumerate() {
                    // Stays set (and fails the write) unless the job runs.
                    job.err = Some("the compression thread could not be started".into());
                    let _ = std::thread::Builder::new()
                        .name(WORKER_NAME.into())
                        .spawn_scoped(s, move || compress(i + 1, job));
                }
                let r = emit();
                compress(0, &mut first[0]);
                r
            })
        };
        written?;
        self.early.wrote(emitted);
        let compressed: Vec<Job> = self.jobs.drain(..n).collect();
        self.jobs.extend(to_write);
        self.done = compressed;
        self.pending_pages.clear();
        self.pending_raw.clear();
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
