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

fn check_page_size(page_size: usize) -> Result<()> {
    if page_size < MIN_PAGE_SIZE {
        return Err(Error::config(
            "page_size",
            format!("is {page_size}; it must be at least {MIN_PAGE_SIZE} bytes"),
        ));
    }
    Ok(())
}

impl FileStore {
    /// Writes `bytes`, whole pages checked to be in range, from page `first`
    /// on, with one `pwrite` (none when empty).
    fn write_run(&self, first: u64, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(bytes, first * self.page_size as u64)
            .map_err(|e| {
                Error::io(
                    format!(
                        "writing pages {first}..+{} of {}",
                        bytes.len() / self.page_size,
                        self.path.display()
                    ),
                    e,
                )
            })
    }
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

    /// Writes each run of consecutive pages of the batch (up to 1 MiB) with
    /// one `pwrite`, gathered in a buffer, instead of one per page: a
    /// restore writes a chunk of consecutive pages at a time. The result is
    /// that of single writes in order: a page may appear twice (its last
    /// bytes win), and a page out of range or of the wrong size stops the
    /// batch there, the pages before it written.
    fn write_pages(&self, pages: &mut [(PageId, &mut [u8])]) -> Result<()> {
        // Under the gate: a write racing a shrink must not extend the file.
        let _io = self.scan_map.io();
        let count = self.page_count();
        let ps = self.page_size;
        let max_run = ((1usize << 20) / ps).max(1);
        let mut run: Vec<u8> = Vec::new();
        let mut run_first = 0u64;
        for (page, data) in pages.iter() {
            let run_pages = run.len() / ps;
            if let Err(e) = check_page_args(*page, count, data.len(), ps) {
                self.write_run(run_first, &run)?;
                return Err(e);
            }
            if run_pages > 0 && (page.0 != run_first + run_pages as u64 || run_pages == max_run) {
                self.write_run(run_first, &run)?;
                run.clear();
            }
            if run.is_empty() {
                run_first = page.0;
            }
            run.extend_from_slice(data);
        }
        self.write_run(run_first, &run)
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

#[cfg(test)]
mod write_pages_tests {
    //! `FileStore::write_pages` gathers runs of consecutive pages into one
    //! `pwrite`: checked against `MemStore`'s batch, which is single writes
    //! in order, on random batches (runs, gaps, repeats, runs longer than
    //! one gathered write, pages out of range or of the wrong size).

    use proptest::prelude::*;

    use super::*;
    use crate::store::MemStore;

    const PS: usize = 64;
    const PAGES: u64 = 40;

    /// The batch `(page, fill, wrong size)` applied to a file store and to
    /// the model: same outcome, same bytes.
    fn same_as_single_writes(batch: &[(u64, u8, bool)]) {
        let dir = tempfile::tempdir().unwrap();
        let file = FileStore::create(dir.path().join("d"), PS, PAGES).unwrap();
        let model = MemStore::new(PS, PAGES).unwrap();
        let mut bufs: Vec<Vec<u8>> = batch
            .iter()
            .map(|&(p, fill, short)| {
                let len = if short { PS - 1 } else { PS };
                (0..len).map(|i| fill ^ (i as u8) ^ (p as u8)).collect()
            })
            .collect();
        let mut a: Vec<(PageId, &mut [u8])> = batch
            .iter()
            .zip(bufs.iter_mut())
            .map(|(&(p, _, _), b)| (PageId(p), b.as_mut_slice()))
            .collect();
        let got = file.write_pages(&mut a);
        drop(a);
        let mut bufs2 = bufs.clone();
        let mut b: Vec<(PageId, &mut [u8])> = batch
            .iter()
            .zip(bufs2.iter_mut())
            .map(|(&(p, _, _), b)| (PageId(p), b.as_mut_slice()))
            .collect();
        let want = model.write_pages(&mut b);
        assert_eq!(
            got.as_ref().map_err(std::mem::discriminant),
            want.as_ref().map_err(std::mem::discriminant),
            "{got:?} vs {want:?}"
        );
        let mut page = vec![0u8; PS];
        let mut expect = vec![0u8; PS];
        for p in 0..PAGES {
            file.read_page(PageId(p), &mut page).unwrap();
            model.read_page(PageId(p), &mut expect).unwrap();
            assert_eq!(page, expect, "page {p}");
        }
    }

    #[test]
    fn runs_gaps_repeats_and_a_bad_page_mid_batch() {
        // A run of every page (longer than nothing), then gaps and repeats.
        let all: Vec<_> = (0..PAGES).map(|p| (p, 1, false)).collect();
        same_as_single_writes(&all);
        same_as_single_writes(&[(3, 1, false), (4, 2, false), (4, 3, false), (5, 4, false)]);
        same_as_single_writes(&[(9, 1, false), (8, 2, false), (7, 3, false)]);
        // Out of range and wrong size stop the batch; earlier runs land.
        same_as_single_writes(&[
            (0, 1, false),
            (1, 2, false),
            (PAGES, 3, false),
            (2, 4, false),
        ]);
        same_as_single_writes(&[(5, 1, false), (6, 2, true), (7, 3, false)]);
        same_as_single_writes(&[]);
    }

    #[test]
    fn a_run_longer_than_one_gathered_write_is_split() {
        let dir = tempfile::tempdir().unwrap();
        // 1 MiB / 64 B = 16 384 pages per gathered write: 40 000 pages is three.
        let pages = 40_000u64;
        let s = FileStore::create(dir.path().join("d"), PS, pages).unwrap();
        let mut bufs: Vec<Vec<u8>> = (0..pages).map(|p| vec![(p % 251) as u8; PS]).collect();
        let mut batch: Vec<(PageId, &mut [u8])> = bufs
            .iter_mut()
            .enumerate()
            .map(|(p, b)| (PageId(p as u64), b.as_mut_slice()))
            .collect();
        s.write_pages(&mut batch).unwrap();
        let mut buf = vec![0u8; PS];
        for p in [0, 16_383, 16_384, 16_385, 32_768, pages - 1] {
            s.read_page(PageId(p), &mut buf).unwrap();
            assert_eq!(buf, vec![(p % 251) as u8; PS], "page {p}");
        }
    }

    proptest! {
        #[test]
        fn any_batch_lands_as_single_writes_would(
            batch in proptest::collection::vec(
                (0u64..PAGES + 2, any::<u8>(), proptest::bool::weighted(0.03)),
                0..60,
            ),
            runs in proptest::collection::vec((0u64..PAGES, 1u64..12), 0..4),
        ) {
            // Random pages, plus runs of consecutive pages mixed in.
            let mut b = batch;
            for (i, (start, len)) in runs.into_iter().enumerate() {
                let at = (i * 7) % (b.len() + 1);
                let run: Vec<_> = (start..(start + len).min(PAGES))
                    .map(|p| (p, i as u8, false))
                    .collect();
                b.splice(at..at, run);
            }
            same_as_single_writes(&b);
        }
    }
}
