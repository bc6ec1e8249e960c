//! A replica that is another copy of the database file on disk, read by
//! path at each repair: a copy that the host refreshes (replaces whole, by
//! a rename, or rewrites in place while no repair runs) serves its newest
//! bytes without the VFS being told.
//!
//! Its copies are verified like any other replica's: a page is written only
//! if its bytes match the checksum the sidecar table holds for it, so a stale
//! or damaged copy can never overwrite anything (the read then fails with
//! `SQLITE_CORRUPT`). The copy must therefore be byte-identical to the file
//! for the pages it serves: a file copy taken while no write transaction is
//! open (rollback mode), or after a checkpoint with no writer (WAL mode).
//! A copy made with SQLite's backup API has the same pages except page 1,
//! whose header the backup rewrites (change counter, schema cookie).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::{Replica, ReplicaStatus};
use crate::types::{PageId, ReplicaId};
use crate::ReplicaLag;

/// A byte copy of the database file at `path`.
#[derive(Debug)]
pub(super) struct FileReplica {
    id: ReplicaId,
    path: PathBuf,
    page_size: usize,
}

impl FileReplica {
    /// The copy at `path`, with pages of `page_size` bytes.
    pub(super) fn new(path: PathBuf, page_size: usize) -> Self {
        FileReplica {
            id: ReplicaId::new(format!("file:{}", path.display())),
            path,
            page_size,
        }
    }

    /// The first 100 bytes (SQLite's database header) of the copy at `path`.
    pub(super) fn header(path: &Path) -> Result<[u8; 100]> {
        let f = File::open(path).map_err(|e| io(path, "opening", e))?;
        let mut header = [0u8; 100];
        f.read_exact_at(&mut header, 0)
            .map_err(|e| io(path, "reading the header of", e))?;
        Ok(header)
    }
}

fn io(path: &Path, what: &str, source: std::io::Error) -> Error {
    Error::Io {
        context: format!("{what} replica file {}", path.display()),
        source,
    }
}

impl Replica for FileReplica {
    fn id(&self) -> ReplicaId {
        self.id.clone()
    }

    fn page_size(&self) -> usize {
        self.page_size
    }

    fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            available: self.path.is_file(),
            lag: ReplicaLag::default(),
        }
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        if buf.len() != self.page_size {
            return Err(Error::BufferSize {
                expected: self.page_size,
                actual: buf.len(),
            });
        }
        let f = File::open(&self.path).map_err(|e| io(&self.path, "opening", e))?;
        let off = page
            .0
            .checked_mul(self.page_size as u64)
            .ok_or(Error::PageOutOfRange {
                page,
                page_count: 0,
            })?;
        f.read_exact_at(buf, off)
            .map_err(|e| io(&self.path, &format!("reading page {page} of"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pages_by_offset_and_refuses_pages_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.db");
        let mut bytes = vec![0u8; 3 * 512];
        for (i, chunk) in bytes.chunks_mut(512).enumerate() {
            chunk.fill(i as u8 + 1);
        }
        std::fs::write(&path, &bytes).unwrap();
        let r = FileReplica::new(path.clone(), 512);
        assert!(r.status().available);
        let mut buf = vec![0u8; 512];
        r.read_page(PageId(2), &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 3));
        assert!(r.read_page(PageId(3), &mut buf).is_err());
        assert!(r.read_page(PageId(0), &mut [0u8; 10]).is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(!r.status().available);
        assert!(FileReplica::header(&path).is_err());
    }
}
