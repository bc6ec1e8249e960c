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
use std::sync::{Arc, Weak};

use crate::error::{Error, Result};
use crate::host::{Replica, ReplicaStatus};
use crate::types::{PageId, ReplicaId};
use crate::{ChecksumTable, ReplicaLag};

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

/// A replica whose copies are served only when they are the page's newest
/// version: the one SQLite wrote last.
///
/// A page whose write is not yet synced (with `synchronous = OFF` SQLite
/// never syncs the database file) is accepted by the sidecar table in its
/// older versions too, so a replica that lags by a transaction holds a copy
/// the repairer would accept — and SQLite would then read the older row.
/// This guard refuses such a copy (the replica answers "unavailable" for
/// that page) unless its checksum is the newest the table holds for the
/// page. The table is held weakly, like the snapshot source: once the file
/// is closed the replica serves nothing.
#[derive(Debug)]
pub(super) struct NewestOnly {
    inner: Arc<dyn Replica>,
    table: Weak<ChecksumTable>,
}

impl NewestOnly {
    /// `inner`, checked against `table`.
    pub(super) fn new(inner: Arc<dyn Replica>, table: &Arc<ChecksumTable>) -> Self {
        NewestOnly {
            inner,
            table: Arc::downgrade(table),
        }
    }

    fn refuse(&self, page: PageId, why: &str) -> Error {
        Error::ReplicaUnavailable {
            replica: self.inner.id(),
            reason: format!("its copy of page {page} {why}"),
        }
    }
}

impl Replica for NewestOnly {
    fn id(&self) -> ReplicaId {
        self.inner.id()
    }

    fn page_size(&self) -> usize {
        self.inner.page_size()
    }

    fn status(&self) -> ReplicaStatus {
        self.inner.status()
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.inner.read_page(page, buf)?;
        let Some(table) = self.table.upgrade() else {
            return Err(self.refuse(page, "cannot be checked: the database is closed"));
        };
        match table.get(page) {
            Some(newest) if crate::digest::page_crc(page, buf) == newest => Ok(()),
            Some(_) => Err(self.refuse(
                page,
                "is not the version SQLite wrote last (the replica lags behind a write not yet synced, or is damaged)",
            )),
            None => Err(self.refuse(page, "has no checksum to be checked against")),
        }
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
