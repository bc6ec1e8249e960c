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
//! A copy made with SQLite's backup API (kept in step by the host after its
//! commits) has the same pages except page 1, whose header fields
//! [`BACKUP_REWRITTEN`](super::first_page::BACKUP_REWRITTEN) the copy holds from its own state: its page 1 is
//! therefore tried as it is and then with those fields taken from the
//! database's own header (see [`NewestOnly`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use super::first_page::{patch_rewritten, FirstPage, HEADER_LEN};
use crate::error::{Error, Result};
use crate::host::{PageStore, Replica, ReplicaStatus};
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
/// page. The table and the file are held weakly, like the snapshot source:
/// once the file is closed the replica serves nothing.
///
/// Page 1 of a copy made with SQLite's backup API differs from the
/// database's in the [`BACKUP_REWRITTEN`](super::first_page::BACKUP_REWRITTEN) header fields even when every
/// other byte is the same. When the copy's page 1 is not the newest version
/// as it is, those fields (and only those) are taken from a header of the
/// database's own page 1 and the result is checked again: first the last
/// header read verified or written this open
/// ([`FirstPage::last_header`]), then the header of the damaged page on
/// disk (its fields may have survived the damage). Only a result whose
/// checksum is the newest the table holds is served; with no header known
/// and the fields damaged, page 1 has no good copy.
#[derive(Debug)]
pub(super) struct NewestOnly {
    inner: Arc<dyn Replica>,
    table: Weak<ChecksumTable>,
    first: Arc<FirstPage>,
    own: Weak<dyn PageStore>,
}

impl NewestOnly {
    /// `inner`, checked against `table`; page 1 patched from `first`'s
    /// header or `own`'s page 1.
    pub(super) fn new(
        inner: Arc<dyn Replica>,
        table: &Arc<ChecksumTable>,
        first: &Arc<FirstPage>,
        own: &Arc<dyn PageStore>,
    ) -> Self {
        NewestOnly {
            inner,
            table: Arc::downgrade(table),
            first: first.clone(),
            own: Arc::downgrade(own),
        }
    }

    fn refuse(&self, page: PageId, why: &str) -> Error {
        Error::ReplicaUnavailable {
            replica: self.inner.id(),
            reason: format!("its copy of page {page} {why}"),
        }
    }

    /// Headers of the database's own page 1 to take the rewritten fields
    /// from: the last verified one, then the one on disk now.
    fn own_headers(&self) -> Vec<[u8; HEADER_LEN]> {
        let mut headers: Vec<[u8; HEADER_LEN]> = self.first.last_header().into_iter().collect();
        if let Some(store) = self.own.upgrade() {
            let mut page = vec![0u8; store.page_size()];
            if store.read_page(PageId(0), &mut page).is_ok() {
                let mut h = [0u8; HEADER_LEN];
                h.copy_from_slice(&page[..HEADER_LEN]);
                if !headers.contains(&h) {
                    headers.push(h);
                }
            }
        }
        headers
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
        let Some(newest) = table.get(page) else {
            return Err(self.refuse(page, "has no checksum to be checked against"));
        };
        if crate::digest::page_crc(page, buf) == newest {
            return Ok(());
        }
        if page.0 == 0 && buf.len() >= HEADER_LEN {
            for header in self.own_headers() {
                let mut candidate = buf.to_vec();
                patch_rewritten(&mut candidate, &header);
                if crate::digest::page_crc(page, &candidate) == newest {
                    buf.copy_from_slice(&candidate);
                    tracing::info!(replica = %self.inner.id(),
                        "page 1 of a backup copy verified with its rewritten header fields taken from the database's own header");
                    return Ok(());
                }
            }
            return Err(self.refuse(
                page,
                "is not the version SQLite wrote last, also with the header fields a backup rewrites taken from the database's own page 1 (the replica lags behind a write, or is damaged, or the database's header is damaged and none was verified this open)",
            ));
        }
        Err(self.refuse(
            page,
            "is not the version SQLite wrote last (the replica lags behind a write not yet synced, or is damaged)",
        ))
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

    /// A backup-style copy of page 1 (the rewritten header fields differ)
    /// is served only once those fields are taken from a header of the
    /// database's own page 1 and the result is the newest version; any
    /// other difference, or any other page, is refused.
    #[test]
    fn page_1_of_a_backup_copy_is_served_only_when_the_patch_verifies() {
        const PS: usize = 512;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.db");
        let own_page: Vec<u8> = (0..PS).map(|i| (i * 7 % 253) as u8).collect();
        let mut copy = own_page.clone();
        copy[19] ^= 3;
        copy[27] ^= 0x41;
        copy[43] ^= 0x42;
        copy[95] ^= 0x41;
        copy[99] ^= 1;
        let mut other = own_page.clone();
        other[27] ^= 1;
        let mut file = copy.clone();
        file.extend_from_slice(&other);
        std::fs::write(&path, &file).unwrap();

        let store = Arc::new(crate::MemStore::new(PS, 2).unwrap());
        store.write_page(PageId(0), &own_page).unwrap();
        store.write_page(PageId(1), &own_page).unwrap();
        let table = Arc::new(ChecksumTable::new(PS).unwrap());
        table.seal(PageId(0), &own_page).unwrap();
        table.seal(PageId(1), &own_page).unwrap();
        let first = Arc::new(FirstPage::default());
        let own: Arc<dyn PageStore> = store.clone();
        let r = NewestOnly::new(
            Arc::new(FileReplica::new(path.clone(), PS)),
            &table,
            &first,
            &own,
        );
        let mut buf = vec![0u8; PS];
        // The damaged page's own header still holds the fields.
        store
            .write_page(PageId(0), &{
                let mut d = own_page.clone();
                d[300] ^= 0xff;
                d
            })
            .unwrap();
        r.read_page(PageId(0), &mut buf).unwrap();
        assert_eq!(buf, own_page);
        // The fields are damaged too and no header was verified: refused.
        store.write_page(PageId(0), &vec![0u8; PS]).unwrap();
        assert!(r.read_page(PageId(0), &mut buf).is_err());
        // The last verified header supplies them.
        first.note_header(&own_page);
        r.read_page(PageId(0), &mut buf).unwrap();
        assert_eq!(buf, own_page);
        // Only page 1 is patched.
        assert!(r.read_page(PageId(1), &mut buf).is_err());
        // A copy that differs outside the fields is never served.
        copy[200] ^= 1;
        file[..PS].copy_from_slice(&copy);
        std::fs::write(&path, &file).unwrap();
        assert!(r.read_page(PageId(0), &mut buf).is_err());
    }
}
