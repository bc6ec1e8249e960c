//! The threads that compress a snapshot's chunks: a pool of named threads
//! (`selfheal-snapshot-lz4`) fed through a bounded queue, so that every
//! core compresses while the writing thread copies pages in and writes the
//! compressed chunks out.
//!
//! # Contract
//!
//! - A chunk is compressed exactly as a single thread would compress it
//!   (one lz4 block of its pages' bytes, see the `format` module), and its
//!   CRC and page fingerprints computed beside it: what a chunk becomes does
//!   not depend on which thread compresses it or when. Chunks come back in
//!   any order, tagged with their sequence number; the writer puts them back
//!   in order, so the file is the same bytes whatever the thread count.
//! - Both queues hold at most the pool's capacity. The caller keeps no more
//!   chunks in flight (submitted and not yet taken back) than that, so
//!   neither a submit nor a worker's hand-back ever waits for room.
//! - A panic while compressing a chunk is caught on its thread and comes
//!   back as that chunk's error; a worker that ends for any reason closes
//!   its side, and a caller waiting for a chunk that no thread will return
//!   gets [`Error::Stopped`] instead of waiting forever.
//! - Dropping the pool closes both queues and joins its threads; each ends
//!   after at most the chunk it is compressing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};

use super::fingerprint::page_fingerprint;
use super::format::WORKER_NAME;
use crate::error::{Error, Result};
use crate::worker::panic_message;

/// One chunk to compress, with the buffers it travels in (reused from
/// chunk to chunk).
#[derive(Debug, Default)]
pub(super) struct Chunk {
    /// Position of the chunk in the file (0, 1, …).
    pub seq: u64,
    /// The pages' bytes, concatenated, in `raw[..filled]` (the buffer
    /// keeps its length from chunk to chunk, so it is never cleared).
    pub raw: Vec<u8>,
    /// Bytes of `raw` that hold pages.
    pub filled: usize,
    /// The page ids, in order.
    pub pages: Vec<u64>,
    /// The compressed block: `out[..used]` once compressed.
    pub out: Vec<u8>,
    /// Length of the compressed block.
    pub used: usize,
    /// CRC32 of the compressed block.
    pub crc: u32,
    /// The fingerprint of every page of the chunk, in order. The writer
    /// may hand in the fingerprints it already has (one per page, in
    /// order); anything else is computed here.
    pub page_fps: Vec<u64>,
    /// Why the chunk could not be compressed.
    pub err: Option<String>,
}

/// Compresses `chunk` in place: the lz4 block, its CRC and the pages'
/// fingerprints (unless it came with one for every page).
pub(super) fn compress_chunk(chunk: &mut Chunk, page_size: usize) {
    assert_eq!(
        chunk.filled,
        chunk.pages.len() * page_size,
        "a chunk holds whole pages"
    );
    let raw = &chunk.raw[..chunk.filled];
    if chunk.page_fps.len() == chunk.pages.len() {
        debug_assert!(chunk
            .pages
            .iter()
            .zip(raw.chunks_exact(page_size))
            .zip(&chunk.page_fps)
            .all(|((p, bytes), fp)| page_fingerprint(*p, bytes) == *fp));
    } else {
        chunk.page_fps.clear();
        for (p, bytes) in chunk.pages.iter().zip(raw.chunks_exact(page_size)) {
            chunk.page_fps.push(page_fingerprint(*p, bytes));
        }
    }
    let max = lz4_flex::block::get_maximum_output_size(raw.len());
    if chunk.out.len() < max {
        chunk.out.resize(max, 0);
    }
    match lz4_flex::block::compress_into(raw, &mut chunk.out[..max]) {
        Ok(used) => {
            chunk.used = used;
            chunk.crc = crc32fast::hash(&chunk.out[..used]);
            chunk.err = None;
        }
        Err(e) => {
            chunk.used = 0;
            chunk.err = Some(e.to_string());
        }
    }
}

/// A pool of compression threads (see the module docs).
pub(super) struct CompressPool {
    jobs: Option<Sender<Chunk>>,
    done: Option<Receiver<Chunk>>,
    handles: Vec<JoinHandle<()>>,
}

impl CompressPool {
    /// Starts `threads` threads compressing pages of `page_size` bytes, with
    /// queues of `capacity` chunks each. Starts with as many threads as it
    /// could spawn, if at least one.
    ///
    /// # Errors
    /// [`Error::Io`] when not one thread could be spawned.
    pub fn start(threads: usize, capacity: usize, page_size: usize) -> Result<Self> {
        assert!(threads >= 1 && capacity >= 1);
        let (jobs_tx, jobs_rx) = bounded::<Chunk>(capacity);
        let (done_tx, done_rx) = bounded::<Chunk>(capacity);
        let mut handles = Vec::with_capacity(threads);
        let mut last_err = None;
        for _ in 0..threads {
            let (rx, tx) = (jobs_rx.clone(), done_tx.clone());
            let spawned = std::thread::Builder::new()
                .name(WORKER_NAME.into())
                .spawn(move || compress_loop(&rx, &tx, page_size));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => last_err = Some(e),
            }
        }
        if handles.is_empty() {
            let e = last_err.unwrap_or_else(|| std::io::Error::other("no thread"));
            return Err(Error::io("spawning a snapshot compression thread", e));
        }
        Ok(CompressPool {
            jobs: Some(jobs_tx),
            done: Some(done_rx),
            handles,
        })
    }

    /// Queues `chunk`. The caller keeps at most the capacity in flight, so
    /// this does not wait for room.
    ///
    /// # Errors
    /// [`Error::Stopped`] when every thread has ended.
    pub fn submit(&self, chunk: Chunk) -> Result<()> {
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(chunk)
            .map_err(|_| stopped())
    }

    /// The next compressed chunk (in any order), waiting for it.
    ///
    /// # Errors
    /// [`Error::Stopped`] when every thread has ended.
    pub fn next(&self) -> Result<Chunk> {
        self.done
            .as_ref()
            .ok_or_else(stopped)?
            .recv()
            .map_err(|_| stopped())
    }

    /// A compressed chunk if one is ready.
    ///
    /// # Errors
    /// [`Error::Stopped`] when every thread has ended and none is ready.
    pub fn try_next(&self) -> Result<Option<Chunk>> {
        match self.done.as_ref().ok_or_else(stopped)?.try_recv() {
            Ok(c) => Ok(Some(c)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(stopped()),
        }
    }
}

impl Drop for CompressPool {
    fn drop(&mut self) {
        // Closing the result queue first makes a worker holding a chunk end
        // at its hand-back instead of compressing what is still queued.
        self.done = None;
        self.jobs = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn stopped() -> Error {
    Error::Stopped {
        component: "snapshot writer",
        reason: "its compression threads have ended".into(),
    }
}

/// The body of a compression thread: until either queue closes.
fn compress_loop(jobs: &Receiver<Chunk>, done: &Sender<Chunk>, page_size: usize) {
    for mut chunk in jobs {
        let seq = chunk.seq;
        let chunk = match catch_unwind(AssertUnwindSafe(|| {
            compress_chunk(&mut chunk, page_size);
            chunk
        })) {
            Ok(c) => c,
            Err(payload) => Chunk {
                seq,
                err: Some(format!(
                    "the compression thread panicked: {}",
                    panic_message(payload.as_ref())
                )),
                ..Chunk::default()
            },
        };
        if done.send(chunk).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64, pages: &[u64], ps: usize) -> Chunk {
        let mut raw = Vec::new();
        for &p in pages {
            raw.extend((0..ps).map(|i| (p as usize * 31 + i / 7) as u8));
        }
        Chunk {
            seq,
            filled: raw.len(),
            raw,
            pages: pages.to_vec(),
            ..Chunk::default()
        }
    }

    #[test]
    fn the_pool_compresses_as_one_thread_does() {
        let ps = 256;
        let pool = CompressPool::start(3, 4, ps).unwrap();
        let mut expected = Vec::new();
        for seq in 0..4u64 {
            let pages: Vec<u64> = (seq * 3..seq * 3 + 3).collect();
            let c = chunk(seq, &pages, ps);
            let block = lz4_flex::block::compress(&c.raw[..c.filled]);
            expected.push((block, pages));
            pool.submit(c).unwrap();
        }
        let mut got: Vec<Chunk> = (0..4).map(|_| pool.next().unwrap()).collect();
        got.sort_by_key(|c| c.seq);
        for (c, (block, pages)) in got.iter().zip(&expected) {
            assert!(c.err.is_none());
            assert_eq!(&c.out[..c.used], &block[..]);
            assert_eq!(c.crc, crc32fast::hash(block));
            assert_eq!(&c.pages, pages);
            for (k, p) in pages.iter().enumerate() {
                let bytes = &c.raw[k * ps..(k + 1) * ps];
                assert_eq!(c.page_fps[k], page_fingerprint(*p, bytes));
            }
        }
        assert!(pool.try_next().unwrap().is_none());
    }

    #[test]
    fn a_panic_while_compressing_comes_back_as_the_chunks_error() {
        let pool = CompressPool::start(1, 2, 64).unwrap();
        // Two pages named but 10 bytes: the length assertion panics.
        let mut bad = chunk(7, &[1], 64);
        bad.pages.push(2);
        bad.filled = 10;
        pool.submit(bad).unwrap();
        let c = pool.next().unwrap();
        assert_eq!(c.seq, 7);
        let err = c.err.expect("the panic is the chunk's error");
        assert!(err.contains("panicked"), "{err}");
        // The thread lives on.
        pool.submit(chunk(8, &[3], 64)).unwrap();
        assert!(pool.next().unwrap().err.is_none());
    }
}
