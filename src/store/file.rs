//! A [`PageStore`] over one file: positioned reads and writes, `fsync` on sync,
//! and optionally a memory map for scanning.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::mmap::ScanMap;
use crate::checksum::MIN_PAGE_SIZE;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::host::{check_page_args, check_page_span, whole_pages, PageStore};
use crate::types::PageId;

/// Pages in one file, page `n` at byte offset `n * page_size`.
///
/// Reads and writes are `pread`/`pwrite` (no shared cursor, so threads do not
/// serialise on the file); `sync` is `fsync`. With
/// [`with_mmap_scan`](Self::with_mmap_scan), [`PageStore::scan_pages`] reads
/// through a read-only memory map instead of copying into a buffer.
///
/// The store can shrink and grow ([`PageStore::resize`], [`grow`](Self::grow))
/// while it is read, written and scanned: a resize waits until no read,
/// write or scan batch of the store is in flight, so a write never extends a
/// file that was just shortened and a scan never touches a mapped page past
/// the end (see `store/mmap.rs` for the argument). The file must not be
/// truncated by anyone else while the store is open.
///
/// A batch write ([`PageStore::write_pages`]) copies each run of
/// consecutive pages into one buffer and writes it with one `pwrite`; every
/// thread that writes such runs keeps its buffer, at most 1 MiB, for its
/// lifetime.
///
/// ```
/// use selfheal::{FileStore, PageStore, PageId};
///
/// let dir = tempfile::tempdir()?;
/// let store = FileStore::create(dir.path().join("data"), 4096, 16)?;
/// store.write_page(PageId(1), &[1u8; 4096])?;
/// store.sync()?;
/// assert_eq!(FileStore::open(dir.path().join("data"), 4096)?.page_count(), 16);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    file: File,
    page_size: usize,
    /// Changes only while `scan_map`'s gate is held exclusively.
    page_count: AtomicU64,
    mmap_scan: bool,
    scan_map: ScanMap,
}

impl FileStore {
    /// Creates (or truncates) the file at `path` with `page_count` zeroed pages.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a page size below 64 bytes; [`Error::Io`].
    pub fn create(path: impl AsRef<Path>, page_size: usize, page_count: u64) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        check_page_size(page_size)?;
        let file = fsutil::open_regular(
            fsutil::private_create_options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
            &path,
            "creating",
        )?;
        let len = page_count
            .checked_mul(page_size as u64)
            .ok_or_else(|| Error::config("page_count", "page_count * page_size overflows u64"))?;
        file.set_len(len)
            .map_err(|e| Error::io(format!("sizing {}", path.display()), e))?;
        Ok(Self::from_parts(path, file, page_size, page_count))
    }

    /// Opens an existing store file.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a page size below 64 bytes;
    /// [`Error::PageSizeMismatch`] when the file length is not a whole number
    /// of pages; [`Error::Io`].
    pub fn open(path: impl AsRef<Path>, page_size: usize) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        check_page_size(page_size)?;
        let file = fsutil::open_regular(
            fsutil::private_create_options().read(true).write(true),
            &path,
            "opening",
        )?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("reading metadata of {}", path.display()), e))?
            .len();
        if len % page_size as u64 != 0 {
            return Err(Error::PageSizeMismatch {
                what: format!(
                    "file {} ({len} bytes, not a whole number of pages)",
                    path.display()
                ),
                expected: page_size,
                actual: (len % page_size as u64) as usize,
            });
        }
        Ok(Self::from_parts(
            path,
            file,
            page_size,
            len / page_size as u64,
        ))
    }

    fn from_parts(path: PathBuf, file: File, page_size: usize, page_count: u64) -> Self {
        FileStore {
            path,
            file,
            page_size,
            page_count: AtomicU64::new(page_count),
            mmap_scan: false,
            scan_map: ScanMap::default(),
        }
    }

    /// Scans through a read-only memory map instead of `pread` into a buffer.
    /// Off by default.
    #[must_use]
    pub fn with_mmap_scan(mut self, on: bool) -> Self {
        self.mmap_scan = on;
        self
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `n` zeroed pages.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the new size overflows; [`Error::Io`]
    /// when the file cannot be extended.
    pub fn grow(&self, n: u64) -> Result<()> {
        // One resizer at a time, so two concurrent grows add both their pages.
        let _g = self.scan_map.resizing();
        let new = self
            .page_count
            .load(Ordering::Acquire)
            .checked_add(n)
            .ok_or_else(|| Error::InvalidArgument {
                what: "n",
                reason: format!(
                    "{n} more pages of {} bytes overflow the file size",
                    self.page_size
                ),
            })?;
        self.set_pages(new, "n")
    }

    /// Sets the file to `pages` pages; the caller holds the gate exclusively.
    fn set_pages(&self, pages: u64, what: &'static str) -> Result<()> {
        let len = pages
            .checked_mul(self.page_size as u64)
            .filter(|len| *len <= i64::MAX as u64)
            .ok_or_else(|| Error::InvalidArgument {
                what,
                reason: format!(
                    "{pages} pages of {} bytes overflow the file size",
                    self.page_size
                ),
            })?;
        self.file.set_len(len).map_err(|e| {
            Error::io(
                format!("resizing {} to {pages} pages", self.path.display()),
                e,
            )
        })?;
        self.page_count.store(pages, Ordering::Release);
        Ok(())
    }
}

impl FileStore {
    /// Writes a run of checked, consecutive pages with one `pwrite` (a
    /// single page straight from its buffer). The caller holds the resize
    /// gate.
    fn write_run(&self, run: &[(PageId, &mut [u8])], buf: &mut Vec<u8>) -> Result<()> {
        let first = run[0].0;
        let bytes: &[u8] = if let [(_, one)] = run {
            one
        } else {
            buf.clear();
            for (_, data) in run {
                buf.extend_from_slice(data);
            }
            buf
        };
        self.file
            .write_all_at(bytes, first.0 * self.page_size as u64)
            .map_err(|e| {
                Error::io(
                    format!(
                        "writing pages {first}..+{} of {}",
                        run.len(),
                        self.path.display()
                    ),
                    e,
                )
            })
    }
}

/// Most bytes [`FileStore`]'s `write_pages` writes with one `pwrite` (at
/// least one page): the size of the copy it makes of a run.
const WRITE_RUN_BYTES: usize = 1 << 20;

thread_local! {
    /// The run buffer of [`FileStore`]'s `write_pages`, kept by each thread
    /// that writes runs of two pages or more (at most [`WRITE_RUN_BYTES`],
    /// 1 MiB, for the thread's lifetime; a run of one page is written from
    /// the caller's bytes), so that a batch copies its runs into memory that is
    /// already mapped and warm instead of allocating a buffer per batch
    /// (which the allocator may hand back to the system at once, to fault
    /// it in again for the next).
    static RUN_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn check_page_size(page_size: usize) -> Result<()> {
    if page_size < MIN_PAGE_SIZE {
        return Err(Error::config(
            "page_size",
            format!("is {page_size}; it must be at least {MIN_PAGE_SIZE} bytes"),
        ));
    }
    Ok(())
}

impl PageStore for FileStore {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn page_count(&self) -> u64 {
        self.page_count.load(Ordering::Acquire)
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        let _io = self.scan_map.io();
        check_page_args(page, self.page_count(), buf.len(), self.page_size)?;
        self.file
            .read_exact_at(buf, page.0 * self.page_size as u64)
            .map_err(|e| Error::io(format!("reading page {page} of {}", self.path.display()), e))
    }

    fn read_pages(&self, first: PageId, buf: &mut [u8]) -> Result<()> {
        let _io = self.scan_map.io();
        let n = whole_pages(buf.len(), self.page_size)?;
        check_page_span(first, n, self.page_count())?;
        self.file
            .read_exact_at(buf, first.0 * self.page_size as u64)
            .map_err(|e| {
                Error::io(
                    format!("reading pages {first}..+{n} of {}", self.path.display()),
                    e,
                )
            })
    }

    /// With the mmap scan on, visits pages straight from the map, in
    /// batches of up to 1 MiB; each batch holds the store's resize gate
    /// shared (a resize waits for the batch, never for the whole scan), and
    /// a store that shrank between batches ends the scan with
    /// [`Error::PageOutOfRange`] at the first page that is gone.
    fn scan_pages(
        &self,
        first: PageId,
        count: u64,
        visit: &mut dyn FnMut(PageId, &[u8]) -> Result<()>,
    ) -> Result<()> {
        check_page_span(first, count, self.page_count())?;
        if !self.mmap_scan || count == 0 {
            return crate::host::scan_in_batches(self, first, count, visit);
        }
        let ps = self.page_size;
        let batch = ((1usize << 20) / ps).max(1) as u64;
        let end = first.0 + count;
        let mut next = first.0;
        while next < end {
            let n = batch.min(end - next);
            self.scan_map.with_map(
                &self.file,
                &self.path.display().to_string(),
                || usize::try_from(self.page_count()).map_or(0, |p| p.saturating_mul(ps)),
                |map| -> Result<()> {
                    // The map is exactly the pages the store has now.
                    check_page_span(PageId(next), n, (map.len() / ps) as u64)?;
                    for p in next..next + n {
                        let off = p as usize * ps;
                        visit(PageId(p), &map[off..off + ps])?;
                    }
                    Ok(())
                },
            )??;
            next += n;
        }
        Ok(())
    }

    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        // Under the gate: a write racing a shrink must not extend the file.
        let _io = self.scan_map.io();
        check_page_args(page, self.page_count(), data.len(), self.page_size)?;
        self.file
            .write_all_at(data, page.0 * self.page_size as u64)
            .map_err(|e| Error::io(format!("writing page {page} of {}", self.path.display()), e))
    }

    /// Writes each run of consecutive pages (each page the one after the
    /// page before it in `pages`) with one `pwrite` of up to 1 MiB, copied
    /// into one buffer first (one the calling thread keeps for its next
    /// batches; a fresh one when the thread's is in use further up its
    /// stack); a page that does not follow the one before it
    /// starts a new run. Pages are checked as they come: a bad page (wrong
    /// length, past the end) stops the batch with its error after the pages
    /// before it were written, as single writes would. The whole batch holds
    /// the store's resize gate shared, as one `write_page` does.
    ///
    /// # Errors
    /// [`Error::BufferSize`] or [`Error::PageOutOfRange`] for the first bad
    /// page; [`Error::Io`] for a failed write, after which the pages of its
    /// run, and only those, may hold anything.
    fn write_pages(&self, pages: &mut [(PageId, &mut [u8])]) -> Result<()> {
        let _io = self.scan_map.io();
        let ps = self.page_size;
        let page_count = self.page_count();
        let max_run = (WRITE_RUN_BYTES / ps).max(1);
        let write = |run_buf: &mut Vec<u8>| -> Result<()> {
            let mut next = 0;
            while next < pages.len() {
                // The run: `next..end`, every page valid and following the last.
                let mut end = next;
                let mut bad = None;
                while end < pages.len() && end - next < max_run {
                    let (page, data) = &pages[end];
                    if let Err(e) = check_page_args(*page, page_count, data.len(), ps) {
                        bad = Some(e);
                        break;
                    }
                    if end > next && pages[end - 1].0 .0.checked_add(1) != Some(page.0) {
                        break;
                    }
                    end += 1;
                }
                if end > next {
                    self.write_run(&pages[next..end], run_buf)?;
                }
                if let Some(e) = bad {
                    return Err(e);
                }
                next = end;
            }
            Ok(())
        };
        let reused =
            RUN_BUF.try_with(|cell| cell.try_borrow_mut().ok().map(|mut buf| write(&mut buf)));
        match reused {
            Ok(Some(result)) => result,
            // In use further up the stack, or the thread is ending.
            _ => write(&mut Vec::new()),
        }
    }

    /// Truncates or extends the file (`set_len`); added pages read as zeros.
    /// Waits until no read, write or scan batch of the store is in flight.
    /// The new length is durable after [`sync`](PageStore::sync).
    fn resize(&self, page_count: u64) -> Result<()> {
        let _g = self.scan_map.resizing();
        self.set_pages(page_count, "page_count")
    }

    fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("syncing {}", self.path.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_scan_paths_agree() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::create(dir.path().join("d"), 128, 300).unwrap();
        for p in 0..300u64 {
            s.write_page(PageId(p), &[p as u8; 128]).unwrap();
        }
        s.sync().unwrap();
        let mut seen = Vec::new();
        s.scan_pages(PageId(5), 290, &mut |p, b| {
            seen.push((p.0, b[0]));
            Ok(())
        })
        .unwrap();
        let m = FileStore::open(dir.path().join("d"), 128)
            .unwrap()
            .with_mmap_scan(true);
        let mut seen_map = Vec::new();
        m.scan_pages(PageId(5), 290, &mut |p, b| {
            seen_map.push((p.0, b[0]));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, seen_map);
        assert_eq!(seen.len(), 290);
        assert!(s.scan_pages(PageId(5), 296, &mut |_, _| Ok(())).is_err());
    }

    fn page(fill: u8) -> Vec<u8> {
        vec![fill; 64]
    }

    #[test]
    fn write_pages_writes_runs_and_scattered_pages_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::create(dir.path().join("d"), 64, 8).unwrap();
        let (mut a, mut b, mut c, mut d, mut e) = (page(1), page(2), page(3), page(4), page(5));
        // A run (2, 3, 4), a jump back (0), and page 3 again: its last bytes win.
        let mut batch = [
            (PageId(2), &mut a[..]),
            (PageId(3), &mut b[..]),
            (PageId(4), &mut c[..]),
            (PageId(0), &mut d[..]),
            (PageId(3), &mut e[..]),
        ];
        s.write_pages(&mut batch).unwrap();
        let mut all = vec![0u8; 8 * 64];
        s.read_pages(PageId(0), &mut all).unwrap();
        let firsts: Vec<u8> = all.chunks_exact(64).map(|p| p[0]).collect();
        assert_eq!(firsts, [4, 0, 1, 5, 3, 0, 0, 0]);
        assert!(all.chunks_exact(64).all(|p| p.iter().all(|&x| x == p[0])));
    }

    #[test]
    fn write_pages_runs_longer_than_one_write_are_split() {
        let dir = tempfile::tempdir().unwrap();
        let n = WRITE_RUN_BYTES / 64 * 2 + 3;
        let s = FileStore::create(dir.path().join("d"), 64, n as u64).unwrap();
        let mut bytes: Vec<u8> = (0..n).flat_map(|p| vec![(p % 251) as u8; 64]).collect();
        let mut batch: Vec<(PageId, &mut [u8])> = bytes
            .chunks_exact_mut(64)
            .enumerate()
            .map(|(p, b)| (PageId(p as u64), b))
            .collect();
        s.write_pages(&mut batch).unwrap();
        let mut back = vec![0u8; n * 64];
        s.read_pages(PageId(0), &mut back).unwrap();
        assert!(back == bytes);
    }

    #[test]
    fn write_pages_stops_at_the_first_bad_page_with_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::create(dir.path().join("d"), 64, 4).unwrap();
        // Past the end: the run before it (0, 1) is written, nothing after.
        let (mut a, mut b, mut c, mut d) = (page(1), page(2), page(3), page(4));
        let mut batch = [
            (PageId(0), &mut a[..]),
            (PageId(1), &mut b[..]),
            (PageId(4), &mut c[..]),
            (PageId(2), &mut d[..]),
        ];
        assert!(matches!(
            s.write_pages(&mut batch),
            Err(Error::PageOutOfRange {
                page: PageId(4),
                page_count: 4
            })
        ));
        let mut all = vec![0u8; 4 * 64];
        s.read_pages(PageId(0), &mut all).unwrap();
        let firsts: Vec<u8> = all.chunks_exact(64).map(|p| p[0]).collect();
        assert_eq!(firsts, [1, 2, 0, 0]);
        // A buffer that is not one page, inside a run: the same.
        let (mut e, mut short, mut f) = (page(5), vec![6u8; 63], page(7));
        let mut batch = [
            (PageId(2), &mut e[..]),
            (PageId(3), &mut short[..]),
            (PageId(0), &mut f[..]),
        ];
        assert!(matches!(
            s.write_pages(&mut batch),
            Err(Error::BufferSize {
                expected: 64,
                actual: 63
            })
        ));
        s.read_pages(PageId(0), &mut all).unwrap();
        let firsts: Vec<u8> = all.chunks_exact(64).map(|p| p[0]).collect();
        assert_eq!(firsts, [1, 2, 5, 0]);
        // Page ids whose run would overflow: out of range, no panic.
        let mut g = page(8);
        assert!(matches!(
            s.write_pages(&mut [(PageId(u64::MAX), &mut g[..])]),
            Err(Error::PageOutOfRange { .. })
        ));
        s.write_pages(&mut []).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any batch — runs, jumps, repeats — reads back as the same pages
        /// written one by one in order would (the model), through
        /// `read_pages` of the whole file and of each run.
        #[test]
        fn write_pages_round_trips_through_read_pages(
            runs in proptest::collection::vec((0u64..40, 1u64..12, proptest::prelude::any::<u8>()), 0..8)
        ) {
            const N: u64 = 48;
            let dir = tempfile::tempdir().unwrap();
            let s = FileStore::create(dir.path().join("d"), 64, N).unwrap();
            let mut model = vec![0u8; N as usize * 64];
            let mut ids = Vec::new();
            let mut bytes = Vec::new();
            for (k, &(first, len, seed)) in runs.iter().enumerate() {
                for p in first..(first + len).min(N) {
                    let b: Vec<u8> = (0..64u8).map(|i| seed ^ i ^ (p as u8) ^ (k as u8)).collect();
                    model[p as usize * 64..(p as usize + 1) * 64].copy_from_slice(&b);
                    ids.push(PageId(p));
                    bytes.extend_from_slice(&b);
                }
            }
            let mut batch: Vec<(PageId, &mut [u8])> =
                ids.iter().copied().zip(bytes.chunks_exact_mut(64)).collect();
            s.write_pages(&mut batch).unwrap();
            let mut all = vec![0u8; N as usize * 64];
            s.read_pages(PageId(0), &mut all).unwrap();
            proptest::prop_assert!(all == model);
            for &(first, len, _) in &runs {
                let len = len.min(N - first);
                let mut run = vec![0u8; len as usize * 64];
                s.read_pages(PageId(first), &mut run).unwrap();
                let want = &model[first as usize * 64..(first + len) as usize * 64];
                proptest::prop_assert!(run == want);
            }
        }
    }

    #[test]
    fn grow_never_wraps_into_a_shrink() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::create(dir.path().join("d"), 4096, 2).unwrap();
        assert!(matches!(
            s.grow(u64::MAX / 4096),
            Err(Error::InvalidArgument { .. })
        ));
        assert_eq!(s.page_count(), 2);
        assert_eq!(std::fs::metadata(dir.path().join("d")).unwrap().len(), 8192);
    }

    #[test]
    fn odd_length_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        std::fs::write(&p, vec![0u8; 100]).unwrap();
        assert!(matches!(
            FileStore::open(&p, 64),
            Err(Error::PageSizeMismatch { .. })
        ));
    }
}
