//! Reading a snapshot file: the header, footer and index checked at open,
//! then chunks read, CRC-checked, decompressed and page-checked on demand.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::header::{Footer, Header};
use super::index::{decode_index, Index};
use super::{FOOTER_LEN, HEADER_LEN, WORKER_NAME};
use crate::error::{Error, Result};

pub(crate) trait ReadAt: Send + Sync {
    fn len(&self) -> u64;
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for Vec<u8> {
    fn len(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= self.len())
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }
}

/// An opened snapshot: header, footer and index checked; chunks read on demand.
pub(crate) struct SnapshotReader {
    src: Box<dyn ReadAt>,
    path: PathBuf,
    pub header: Header,
    pub index: Index,
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl SnapshotReader {
    /// Opens the snapshot file at `path`.
    ///
    /// # Errors
    /// [`Error::NotRegularFile`] for anything but a regular file (checked
    /// before it is opened, so a named pipe never blocks); [`Error::Io`]
    /// when it cannot be opened;
    /// [`Error::CorruptFile`] or [`Error::UnsupportedVersion`] when its
    /// header, footer or index does not check.
    pub fn open_file(path: &Path) -> Result<Self> {
        let f = crate::fsutil::open_regular(
            crate::fsutil::private_create_options().read(true),
            path,
            "opening",
        )?;
        Self::new(Box::new(f), path)
    }

    /// Checks header, footer and index of `src` (named `path` in errors).
    pub fn new(src: Box<dyn ReadAt>, path: &Path) -> Result<Self> {
        let len = src.len();
        let rd = |off: u64, buf: &mut [u8]| {
            src.read_exact_at(off, buf)
                .map_err(|e| Error::io(format!("reading {} at {off}", path.display()), e))
        };
        if len < (HEADER_LEN + FOOTER_LEN) as u64 {
            return Err(Error::corrupt_file(
                path,
                len,
                format!("file of {len} bytes is too short to be a snapshot"),
            ));
        }
        let mut hb = [0u8; HEADER_LEN];
        rd(0, &mut hb)?;
        let header = Header::decode(path, &hb)?;
        let mut fb = [0u8; FOOTER_LEN];
        let foot_off = len - FOOTER_LEN as u64;
        rd(foot_off, &mut fb)?;
        let Footer {
            index_off,
            index_len,
            index_crc,
        } = Footer::decode(path, foot_off, &fb)?;
        let mut ib = vec![0u8; index_len as usize];
        rd(index_off, &mut ib)?;
        if crc32fast::hash(&ib) != index_crc {
            return Err(Error::corrupt_file(
                path,
                index_off,
                "index checksum mismatch",
            ));
        }
        let index = decode_index(path, &ib, index_off, &header)?;
        Ok(SnapshotReader {
            src,
            path: path.to_path_buf(),
            header,
            index,
        })
    }

    /// The file this reader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The page id stored at position `i` of the file.
    pub fn stored_page(&self, i: usize) -> u64 {
        match &self.index.pages {
            Some(p) => p[i],
            None => i as u64,
        }
    }

    /// Where `page` is stored in this file: (chunk, slot in chunk).
    pub fn locate(&self, page: u64) -> Option<(usize, usize)> {
        let i = match &self.index.pages {
            None => (page < self.header.page_count).then_some(page as usize)?,
            Some(p) => p.binary_search(&page).ok()?,
        };
        Some((i / self.header.chunk_pages, i % self.header.chunk_pages))
    }

    /// Reads chunk `c`'s compressed bytes into `comp` and checks its CRC.
    pub fn read_compressed(&self, c: usize, comp: &mut Vec<u8>) -> Result<()> {
        let e = self.index.chunks[c];
        comp.resize(e.compressed_len as usize, 0);
        self.src.read_exact_at(e.offset, comp).map_err(|err| {
            Error::io(format!("reading chunk {c} of {}", self.path.display()), err)
        })?;
        if crc32fast::hash(comp) != e.crc {
            return Err(Error::corrupt_file(
                &self.path,
                e.offset,
                format!("chunk {c} checksum mismatch"),
            ));
        }
        Ok(())
    }

    /// Reads, checks and decompresses chunk `c` into `raw`, and checks the CRC
    /// of every page in it against the index.
    pub fn read_chunk(&self, c: usize, comp: &mut Vec<u8>, raw: &mut Vec<u8>) -> Result<()> {
        self.read_chunk_opt(c, comp, raw, true)
    }

    /// As [`read_chunk`](Self::read_chunk); `check_chunk_crc = false` skips
    /// the chunk CRC (only when it was just checked: the page CRCs are still
    /// checked, and the decoder is safe on any input).
    fn read_chunk_opt(
        &self,
        c: usize,
        comp: &mut Vec<u8>,
        raw: &mut Vec<u8>,
        check_chunk_crc: bool,
    ) -> Result<()> {
        let e = self.index.chunks[c];
        if check_chunk_crc {
            self.read_compressed(c, comp)?;
        } else {
            comp.resize(e.compressed_len as usize, 0);
            self.src.read_exact_at(e.offset, comp).map_err(|err| {
                Error::io(format!("reading chunk {c} of {}", self.path.display()), err)
            })?;
        }
        raw.resize(e.raw_len as usize, 0);
        let bad = |why: String| Error::corrupt_file(&self.path, e.offset, why);
        match lz4_flex::block::decompress_into(comp, raw) {
            Ok(n) if n == raw.len() => {}
            Ok(n) => {
                return Err(bad(format!(
                    "chunk {c} decompresses to {n} bytes, expected {}",
                    raw.len()
                )))
            }
            Err(err) => return Err(bad(format!("chunk {c} does not decompress: {err}"))),
        }
        let first = c * self.header.chunk_pages;
        for (slot, bytes) in raw.chunks_exact(self.header.page_size).enumerate() {
            let page = self.stored_page(first + slot);
            if !self.index.sums.matches(page, bytes) {
                return Err(bad(format!(
                    "page {page} in chunk {c} does not match its checksum"
                )));
            }
        }
        Ok(())
    }

    /// Checks every chunk CRC (without decompressing) on up to `threads` threads.
    pub fn check_chunk_crcs(&self, threads: usize) -> Result<()> {
        self.run_chunks(threads, &|c, comp, _| self.read_compressed(c, comp))
    }

    /// Decompresses every chunk and checks every chunk and page CRC.
    #[cfg(any(test, feature = "testing"))]
    pub fn verify_all(&self) -> Result<()> {
        let (mut comp, mut raw) = (Vec::new(), Vec::new());
        for c in 0..self.index.chunks.len() {
            self.read_chunk(c, &mut comp, &mut raw)?;
        }
        Ok(())
    }

    /// Decodes chunks `0..C` on up to `threads` threads, calling `visit` with
    /// each chunk's index and its checked raw bytes (the decoding buffer
    /// itself, which `visit` may change: a store seals pages in place as it
    /// writes them). Stops at the first
    /// error. With `check_chunk_crc = false` the chunk CRCs are taken as
    /// checked by [`check_chunk_crcs`](Self::check_chunk_crcs) just before;
    /// page CRCs are always checked.
    pub fn for_each_chunk(
        &self,
        threads: usize,
        check_chunk_crc: bool,
        visit: &(dyn Fn(usize, &mut [u8]) -> Result<()> + Sync),
    ) -> Result<()> {
        self.run_chunks(threads, &|c, comp, raw| {
            self.read_chunk_opt(c, comp, raw, check_chunk_crc)?;
            visit(c, raw.as_mut_slice())
        })
    }

    /// Runs `work(chunk, comp buffer, raw buffer)` for every chunk, chunks
    /// dealt round-robin to up to `threads` threads; first error wins.
    #[allow(clippy::type_complexity)]
    fn run_chunks(
        &self,
        threads: usize,
        work: &(dyn Fn(usize, &mut Vec<u8>, &mut Vec<u8>) -> Result<()> + Sync),
    ) -> Result<()> {
        let n = self.index.chunks.len();
        let threads = threads.clamp(1, n.max(1));
        let failed = std::sync::atomic::AtomicBool::new(false);
        let lane = |t: usize| -> Result<()> {
            let (mut comp, mut raw) = (Vec::new(), Vec::new());
            let mut c = t;
            while c < n {
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(());
                }
                let r = work(c, &mut comp, &mut raw);
                if r.is_err() {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    return r;
                }
                c += threads;
            }
            Ok(())
        };
        if threads == 1 {
            return lane(0);
        }
        std::thread::scope(|s| {
            let lane = &lane;
            let handles: Vec<_> = (1..threads)
                .map(|t| {
                    std::thread::Builder::new()
                        .name(WORKER_NAME.into())
                        .spawn_scoped(s, move || lane(t))
                })
                .collect();
            let mut result = lane(0);
            for h in handles {
                let r = match h {
                    Ok(h) => h.join().unwrap_or_else(|_| {
                        Err(Error::Stopped {
                            component: "snapshot reader",
                            reason: "a decoding thread panicked".into(),
                        })
                    }),
                    // That lane's chunks were not processed: fail the whole run.
                    Err(e) => Err(Error::io("spawning a snapshot decoding thread", e)),
                };
                if result.is_ok() {
                    result = r;
                }
            }
            result
        })
    }
}
