//! Whether a database file is still the one its sidecar checksum table
//! protects, checked at each open before any page is healed, and the last
//! verified copy of page 1 that the sidecar directory keeps durable.
//!
//! # Contract
//! - **Page size.** When a sidecar table exists, its page size is the
//!   file's; a header whose page size differs (the file was `VACUUM`ed to
//!   another page size, or replaced) refuses the open with
//!   [`SqliteRefusal::PageSizeChanged`]: no page is ever verified against
//!   checksums of another page size.
//! - **Identity.** Before any page is verified or healed, page 1 and up to
//!   [`SAMPLE_PAGES`] other sealed pages spread over the file are checked
//!   against the sidecar table (raw reads, nothing written or reported).
//!   When at least two fail and they are at least half of those checked,
//!   the file is not the one the table protects (another file was put at
//!   its path, or the sidecar belongs to another database): the open is
//!   refused with [`SqliteRefusal::Replaced`], naming both paths, instead
//!   of "healing" the file back page by page from a replica. Damage to one
//!   page (page 1 included) is not a replacement: it is healed on read.
//! - **Page 1's copy.** `<db>-selfheal.page1` holds page 1 as last
//!   verified: written (atomically, synced) after an adoption and at the
//!   last connection's clean close. It is a repair source for page 1 only,
//!   through the same guard as every replica (served only when its
//!   checksum is the newest the table holds), so page 1 damaged while the
//!   database is closed — its header fields included — is healed from it.
//!   After a crash the copy may be older than page 1's last write; it is
//!   then refused by the guard, and page 1 heals only from a replica.

use std::path::{Path, PathBuf};

use super::raw::RawFile;
use super::store::host_error;
use crate::error::{Error, Result, SqliteRefusal};
use crate::host::{Replica, ReplicaStatus};
use crate::types::{PageId, ReplicaId};
use crate::{ChecksumTable, ReplicaLag};

/// The sidecar checksum table's base file for the database at `path`:
/// `<path>-selfheal` (its logs `<path>-selfheal.log-*`, its lock
/// `<path>-selfheal.lock`), beside SQLite's own `-journal`, `-wal` and
/// `-shm` files.
#[must_use]
pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-selfheal");
    PathBuf::from(s)
}

/// Pages checked besides page 1 when a file is opened with a sidecar.
pub(super) const SAMPLE_PAGES: u64 = 15;

/// The file holding the last verified page 1 of the database at `db`:
/// `<db>-selfheal.page1`.
pub(super) fn page_one_path(db: &Path) -> PathBuf {
    let mut s = sidecar_path(db).into_os_string();
    s.push(".page1");
    PathBuf::from(s)
}

/// The refusal of `db` for `kind`.
pub(super) fn refused(
    kind: SqliteRefusal,
    db: &Path,
    reason: impl Into<String>,
    remedy: impl Into<String>,
) -> Error {
    Error::SqliteRefused {
        kind,
        db: db.to_path_buf(),
        sidecar: sidecar_path(db),
        reason: format!("{}; {}", reason.into(), remedy.into()),
    }
}

/// How to adopt the file at `db` again, for a message.
pub(super) fn readopt(db: &Path) -> String {
    format!(
        "if {} is the database you want and `PRAGMA integrity_check` (plain SQLite) says ok, close every connection, delete {}* and open it again to adopt it afresh; otherwise put the right file back (or restore it from a replica) and open again",
        db.display(),
        sidecar_path(db).display()
    )
}

/// The page size to protect `db` with: the sidecar table's when it has
/// one (`header` is the page size the file's header says, if readable),
/// else the header's.
///
/// # Errors
/// [`SqliteRefusal::PageSizeChanged`] when both exist and differ; the
/// header's error when there is neither; the sidecar's read error.
pub(super) fn page_size(db: &Path, header: Result<usize>) -> Result<usize> {
    let sidecar = crate::checksum::base_page_size(&sidecar_path(db))?;
    match (sidecar, header) {
        (Some(s), Ok(h)) if s != h => Err(refused(
            SqliteRefusal::PageSizeChanged,
            db,
            format!("its header says pages of {h} bytes, the sidecar checksum table was made for pages of {s} bytes (the page size was changed, by `PRAGMA page_size` and `VACUUM`, or the file was replaced)"),
            readopt(db),
        )),
        (Some(s), _) => Ok(s),
        (None, h) => h,
    }
}

/// Checks that the file `raw` (`pages` pages of `page_size` bytes) is the
/// one `table` protects: see the module docs.
///
/// # Errors
/// [`SqliteRefusal::Replaced`]; a read error of the file.
pub(super) fn check_same_file(
    db: &Path,
    raw: &RawFile,
    table: &ChecksumTable,
    page_size: usize,
    pages: u64,
) -> Result<()> {
    if pages == 0 {
        return Ok(());
    }
    let step = (pages / (SAMPLE_PAGES + 1)).max(1);
    let sample = std::iter::once(0)
        .chain((1..=SAMPLE_PAGES).map(|i| i * step))
        .take_while(|p| *p < pages);
    let mut buf = vec![0u8; page_size];
    let (mut checked, mut failed) = (0u64, Vec::new());
    for p in sample {
        let page = PageId(p);
        if table.get(page).is_none() {
            continue;
        }
        raw.read_at(&mut buf, p * page_size as u64)
            .or_else(|rc| match rc {
                rusqlite::ffi::SQLITE_IOERR_SHORT_READ => Ok(()),
                rc => Err(host_error("read", rc)),
            })?;
        checked += 1;
        if let Err(Error::ChecksumMismatch { .. } | Error::ZeroedPage { .. }) =
            table.verify(page, &buf)
        {
            failed.push(p + 1);
        }
    }
    if failed.len() >= 2 && failed.len() as u64 * 2 >= checked {
        return Err(refused(
            SqliteRefusal::Replaced,
            db,
            format!(
                "{} of the {checked} pages checked (SQLite pages {failed:?}) do not match the checksums of the sidecar: the file is not the database the sidecar protects (another file was put at its path, or the sidecar belongs to another database), so it is not healed back from a replica page by page",
                failed.len()
            ),
            readopt(db),
        ));
    }
    if !failed.is_empty() {
        tracing::warn!(db = %db.display(), pages = ?failed, checked,
            "pages do not match their checksums at open; they are healed when read");
    }
    Ok(())
}

/// Keeps `page` (page 1, verified) as the durable copy of page 1 of `db`,
/// unless the copy already holds exactly these bytes.
pub(super) fn save_page_one(db: &Path, page: &[u8]) -> Result<()> {
    let path = page_one_path(db);
    if crate::fsutil::read_optional(&path)?.as_deref() == Some(page) {
        return Ok(());
    }
    crate::fsutil::atomic_write(&path, page)
}

/// The copy of page 1 kept by [`save_page_one`], as a repair source of
/// page 1 only.
#[derive(Debug)]
pub(super) struct PageOneCopy {
    id: ReplicaId,
    path: PathBuf,
    page_size: usize,
}

impl PageOneCopy {
    /// The copy of page 1 of `db`.
    pub(super) fn new(db: &Path, page_size: usize) -> Self {
        let path = page_one_path(db);
        PageOneCopy {
            id: ReplicaId::new(format!("page1-copy:{}", path.display())),
            path,
            page_size,
        }
    }

    fn unavailable(&self, reason: String) -> Error {
        Error::ReplicaUnavailable {
            replica: self.id.clone(),
            reason,
        }
    }
}

impl Replica for PageOneCopy {
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
        if page.0 != 0 {
            return Err(self.unavailable("it holds the first page of the file only".into()));
        }
        match crate::fsutil::read_optional(&self.path)? {
            Some(bytes) if bytes.len() == self.page_size => {
                buf.copy_from_slice(&bytes);
                Ok(())
            }
            Some(bytes) => Err(self.unavailable(format!(
                "{} holds {} bytes, not one page of {}",
                self.path.display(),
                bytes.len(),
                self.page_size
            ))),
            None => Err(self.unavailable(format!("{} does not exist", self.path.display()))),
        }
    }
}
