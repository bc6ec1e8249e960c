//! The streaming writer of snapshot files (layout in [`super::format`]):
//! pages pushed in ascending order are cut into chunks, compressed on scoped
//! threads while the previous batch is written, and the index (with every
//! page's fingerprint) and footer are appended by [`SnapshotWriter::finish`].
//! The file is only flushed here; the caller fsyncs and renames it (the
//! crash analysis is in the `snapshot` module docs).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use super::fingerprint::page_fingerprint;
use super::format::{
    encode_footer, encode_index, ChunkEntry, Header, FOOTER_LEN, HEADER_LEN, WORKER_NAME,
};
use crate::error::{Error, Result};

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

/// Starts writeback of what has been written so far on a helper thread
/// (`selfheal-snapshot-sync`), so that disk writes overlap compression and
/// the final fsync has little left to do. Durability still rests on that
/// final fsync; an error of an early one is reported by it too.
struct EarlySync {
    tx: Option<crossbeam_channel::Sender<()>>,
    handle: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    unsynced: u64,
}

impl EarlySync {
    fn start(file: &File) -> Self {
        let none = EarlySync {
            tx: None,
            handle: None,
            unsynced: 0,
        };
        let Ok(f) = file.try_clone() else { return none };
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        let spawned = std::thread::Builder::new()
            .name("selfheal-snapshot-sync".into())
            .spawn(move || {
                for () in rx {
                    f.sync_data()?;
                }
                Ok(())
            });
        match spawned {
            Ok(h) => EarlySync {
                tx: Some(tx),
                handle: Some(h),
                unsynced: 0,
            },
            Err(_) => none,
        }
    }

    fn wrote(&mut self, n: u64) {
        self.unsynced += n;
        if self.unsynced >= EARLY_SYNC_BYTES {
            if let Some(tx) = &self.tx {
                if tx.try_send(()).is_ok() {
                    self.unsynced = 0;
                }
            }
        }
    }

    /// Stops the helper and returns its first error.
    fn stop(&mut self) -> std::io::Result<()> {
        self.tx = None;
        match self.handle.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("the early-sync thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for EarlySync {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl SnapshotWriter {
    /// Starts writing `header` to the already created file `out` (named
    /// `path` in errors). `fps` is the parent's fingerprint table for an
    /// incremental snapshot (resized to the page count; every page at or past
    /// the parent's count must then be pushed), ignored for a full one.
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
        let early = EarlySync::start(&out);
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
