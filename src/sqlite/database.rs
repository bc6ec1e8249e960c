//! One protected database file: the detector, the sidecar table and the
//! repairer over it, shared by every connection of the process that opens
//! the file through the VFS, and what each VFS call of the main database
//! file does with them (verify and heal on read, seal on write, shrink the
//! table on truncate, make pages and checksums durable together on sync).
//!
//! SQLite writes the main database file a whole page at a time, but reads
//! parts of pages too: the 100-byte header at open, the 16-byte change
//! counter at offset 24, and the start of overflow pages it reads directly
//! (`SQLITE_DIRECT_OVERFLOW_READ`). A call that covers part of a page is
//! served by verifying (or, for a write, reading, patching and sealing) the
//! whole page; the file is never read or written in part unverified, except
//! before its page size is known (no page is sealed yet).

use std::collections::BTreeMap;
use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;
use rusqlite::ffi;

use super::config::{HealEvent, Shared, SqliteConfig};
use super::identity::{self, sidecar_path};
use super::protected::{Parts, Protected};
use super::raw::{RawFile, Rc, RootVfs};
use super::replica::FileReplica;
use super::store::{host_error, SqlitePageStore};
use crate::error::{Error, Result};
use crate::host::PageStore;
use crate::repair::RepairOutcome;
use crate::snapshot::SnapshotReport;
use crate::{ChecksumTable, PageId};

// The reader of SQLite's header and freelist that `testing::sqlite` exposes
// to tests, compiled here too so that the VFS needs no `testing` feature
// (the VFS uses the header and freelist parts only).
#[path = "../testing/sqlite.rs"]
#[allow(dead_code, clippy::duplicate_mod)]
mod format;

mod adoption;

/// Why a VFS call of the main database file failed, as SQLite is told.
#[derive(Debug)]
pub(super) enum Fault {
    /// Part of the read lay past the end of the file (zeros were returned):
    /// `SQLITE_IOERR_SHORT_READ`, which SQLite expects.
    ShortRead,
    /// A page failed verification and no good copy could be had:
    /// `SQLITE_CORRUPT`. The bytes are never returned.
    Corrupt,
    /// Another SQLite result code.
    Code(Rc),
}

impl Fault {
    /// The SQLite result code.
    pub(super) fn rc(&self) -> c_int {
        match self {
            Fault::ShortRead => ffi::SQLITE_IOERR_SHORT_READ,
            Fault::Corrupt => ffi::SQLITE_CORRUPT,
            Fault::Code(rc) => *rc,
        }
    }
}

fn io(code: Rc) -> impl FnOnce(Error) -> Fault {
    move |e| {
        tracing::error!(error = %e, "selfheal VFS call failed");
        Fault::Code(code)
    }
}

/// One database file opened through the VFS (shared by its connections).
pub(super) struct Database {
    path: PathBuf,
    root: RootVfs,
    raw: Arc<RawFile>,
    shared: Arc<Shared>,
    protected: OnceLock<Protected>,
    /// Held while the components are built (first write of a new file).
    init: Mutex<()>,
    /// Held while a page is healed: one repair at a time, and a reader that
    /// waited finds the page healed.
    heal: Mutex<()>,
    /// Pages SQLite wrote that are not yet sealed and written to the file,
    /// by page number (whole pages; see [`Database::flush`]).
    pending: Mutex<BTreeMap<u64, Vec<u8>>>,
    /// How long the last `PRAGMA quick_check` before an adoption took.
    quick_check_took: Mutex<Option<std::time::Duration>>,
}

/// The open databases of one VFS by full path: the connections of one file
/// share one.
pub(super) type Databases = super::registry::Registry<Database>;

/// Most pages written by SQLite and held before they are sealed and
/// written as one batch (4 MiB of 4 KiB pages).
pub(super) const PENDING_PAGES_MAX: usize = 1024;

/// Open errors kept for `SqliteVfs::take_open_error`.
const OPEN_ERRORS_KEPT: usize = 64;

/// The byte copies of the database at `db` that `config` names, each with
/// the setting that names it: each replica file, and the file of the same
/// name in each replica directory.
fn replica_paths(config: &SqliteConfig, db: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut paths: Vec<(&'static str, PathBuf)> = config
        .replica_files
        .iter()
        .map(|p| ("replica_file", p.clone()))
        .collect();
    if let Some(name) = db.file_name() {
        paths.extend(
            config
                .replica_dirs
                .iter()
                .map(|d| ("replica_dir", d.join(name))),
        );
    }
    paths
}

/// Whether `a` and `b` name one file: the same device and inode when both
/// exist (through any symlink, `..` or hard link), else the same path once
/// each one's directory is resolved.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        (Ok(_), Err(_)) | (Err(_), Ok(_)) => false,
        (Err(_), Err(_)) => {
            let resolved = |p: &Path| {
                let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
                let dir = std::fs::canonicalize(dir.unwrap_or(Path::new("."))).ok()?;
                Some(dir.join(p.file_name()?))
            };
            resolved(a).is_some_and(|r| Some(r) == resolved(b))
        }
    }
}

/// Whether `config` can protect the database file at `db`: its file name
/// is UTF-8 (the sidecar table is named after it), and no replica is the
/// file itself.
///
/// # Errors
/// [`Error::InvalidConfig`] saying which.
pub(super) fn check_database(config: &SqliteConfig, db: &Path) -> Result<()> {
    if db.file_name().and_then(|n| n.to_str()).is_none() {
        return Err(Error::config(
            "path",
            format!(
                "the database file {} has no UTF-8 file name, which its sidecar checksum table \
                 is named after; rename the file (any directory above it may have any name)",
                db.display()
            ),
        ));
    }
    for (setting, replica) in replica_paths(config, db) {
        if same_file(&replica, db) {
            return Err(Error::config(
                setting,
                format!(
                    "the replica {} is the database file {} itself; a replica must be a \
                     separate copy of it (another file, e.g. in another directory)",
                    replica.display(),
                    db.display()
                ),
            ));
        }
    }
    Ok(())
}

impl Database {
    /// Opens the file `path` (already opened by SQLite through `root` with
    /// `flags`): a second handle for the library, and, for a file that has
    /// pages, the components (adopting the file if its pages are not all
    /// sealed yet).
    pub(super) fn open(
        root: RootVfs,
        path: &Path,
        flags: c_int,
        shared: Arc<Shared>,
    ) -> Result<Database> {
        Self::open_inner(root, path, flags, shared.clone()).map_err(|e| {
            // SQLite tells its caller only `SQLITE_CANTOPEN`: the typed
            // error is kept for `SqliteVfs::take_open_error`.
            let text = e.to_string();
            let mut errors = shared.open_errors.lock();
            if errors.len() >= OPEN_ERRORS_KEPT {
                errors.remove(0);
            }
            errors.push((path.to_path_buf(), e));
            Error::InvalidArgument {
                what: "SQLite database file",
                reason: text,
            }
        })
    }

    fn open_inner(
        root: RootVfs,
        path: &Path,
        flags: c_int,
        shared: Arc<Shared>,
    ) -> Result<Database> {
        check_database(&shared.config, path)?;
        // Read-write when the file allows it, whatever this connection asked
        // for: the handle is shared with the process's later connections,
        // which may write (and heals write).
        let rw = (flags & !ffi::SQLITE_OPEN_READONLY) | ffi::SQLITE_OPEN_READWRITE;
        let raw = RawFile::open(root, path, rw)
            .or_else(|_| RawFile::open(root, path, flags))
            .map_err(|rc| host_error("open", rc))?;
        let db = Database {
            path: path.to_path_buf(),
            root,
            raw: Arc::new(raw),
            shared,
            protected: OnceLock::new(),
            init: Mutex::new(()),
            heal: Mutex::new(()),
            pending: Mutex::new(BTreeMap::new()),
            quick_check_took: Mutex::new(None),
        };
        let size = db.raw.size().map_err(|rc| host_error("size", rc))?;
        if size > 0 {
            let page_size = identity::page_size(path, db.page_size_of_file())?;
            db.protect(page_size)?;
        }
        Ok(db)
    }

    /// The page size from the header (offset 16), or, when page 1 is
    /// damaged, from a replica's header.
    fn page_size_of_file(&self) -> Result<usize> {
        let mut header = [0u8; format::HEADER_LEN];
        let own = match self.raw.read_at(&mut header, 0) {
            Ok(()) => format::parse_header(&header).map(|h| h.page_size),
            Err(rc) => Err(host_error("read", rc)),
        };
        let own_err = match own {
            Ok(ps) => return Ok(ps),
            Err(e) => e,
        };
        for path in &self.replica_paths() {
            let header = FileReplica::header(path);
            if let Ok(ps) = header.and_then(|h| format::parse_header(&h).map(|h| h.page_size)) {
                tracing::warn!(
                    db = %self.path.display(), error = %own_err,
                    "page 1's header is unreadable; page size taken from replica {}",
                    path.display()
                );
                return Ok(ps);
            }
        }
        Err(own_err)
    }

    /// The byte copies of the file: each replica file, and the file of the
    /// same name in each replica directory.
    fn replica_paths(&self) -> Vec<PathBuf> {
        replica_paths(&self.shared.config, &self.path)
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// Builds the components for pages of `page_size` bytes, adopting the
    /// file first if some page has neither a checksum nor a free mark.
    fn protect(&self, page_size: usize) -> Result<&Protected> {
        let _g = self.init.lock();
        if let Some(p) = self.protected.get() {
            return Ok(p);
        }
        let table = Arc::new(ChecksumTable::open(&sidecar_path(&self.path), page_size)?);
        // Pages with neither a checksum nor a free mark: all of them on a
        // first open, the rest of an adoption a crash cut short — or only
        // all-zero pages at the end, which a crash between growing the file
        // and writing the new pages leaves (nothing to check or seal: they
        // are marked free, and SQLite's recovery truncates them or writes
        // them through the VFS).
        let size = self.raw.size().map_err(|rc| host_error("size", rc))?;
        let unsealed: Vec<PageId> = (0..size.div_ceil(page_size as u64))
            .map(PageId)
            .filter(|p| table.get(*p).is_none() && !table.is_free(*p))
            .collect();
        let mut page = vec![0u8; page_size];
        let mut adopt = false;
        for p in &unsealed {
            self.raw
                .read_at(&mut page, p.0 * page_size as u64)
                .or_else(|rc| match rc {
                    ffi::SQLITE_IOERR_SHORT_READ => Ok(()),
                    rc => Err(host_error("read", rc)),
                })?;
            if page.iter().any(|&b| b != 0) {
                adopt = true;
                break;
            }
        }
        // Held until the adoption is done: the read transaction of the
        // quick_check's connection (SQLite's shared lock on the file).
        let _lock = if adopt {
            // Before the store is sized: the check may roll back a hot
            // journal (through the default VFS), which can shrink the file.
            Some(self.quick_check()?)
        } else {
            None
        };
        let size = self.raw.size().map_err(|rc| host_error("size", rc))?;
        if !adopt {
            identity::check_same_file(
                &self.path,
                &self.raw,
                &table,
                page_size,
                size.div_ceil(page_size as u64),
            )?;
        }
        let store = Arc::new(SqlitePageStore {
            raw: self.raw.clone(),
            page_size,
            sync_flags: AtomicI32::new(ffi::SQLITE_SYNC_NORMAL),
            pages: AtomicU64::new(size.div_ceil(page_size as u64)),
        });
        let protected = Protected::build(Parts {
            path: &self.path,
            shared: &self.shared,
            table,
            store,
            replica_paths: self.replica_paths(),
            prepare: &|det, store| {
                if adopt {
                    self.adopt(det, store)
                } else {
                    for p in unsealed.iter().filter(|p| p.0 < store.page_count()) {
                        det.forget(*p)?;
                    }
                    self.seal_zero_pages_marked_free(det, store)
                }
            },
        })?;
        let _ = self.protected.set(protected);
        Ok(self.protected.get().expect("set just above"))
    }

    /// `xRead`: verified pages only; a page that fails is healed first.
    pub(super) fn read(&self, buf: &mut [u8], offset: u64) -> std::result::Result<(), Fault> {
        let Some(p) = self.protected.get() else {
            return self.raw.read_at(buf, offset).map_err(raw_fault);
        };
        let ps = p.page_size as u64;
        let pages = self.pages_with_pending(p);
        let mut short = false;
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let page = PageId(at / ps);
            let within = (at % ps) as usize;
            let n = (p.page_size - within).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            done += n;
            if let Some(bytes) = self.pending.lock().get(&page.0) {
                out.copy_from_slice(&bytes[within..within + n]);
                continue;
            }
            if page.0 >= p.store.page_count() {
                // A page past the file's end that SQLite has not written
                // (below a pending page past the end): zeros, as the file
                // would read once extended.
                out.fill(0);
                short |= page.0 >= pages;
                continue;
            }
            if page.0 == 0 {
                if !p.first.read(within, out) {
                    let generation = p.first.generation();
                    let mut whole = vec![0u8; p.page_size];
                    self.read_page(p, page, &mut whole)?;
                    p.first.offer(generation, &whole);
                    p.first.note_header(&whole);
                    out.copy_from_slice(&whole[within..within + n]);
                }
            } else if n == p.page_size {
                self.read_page(p, page, out)?;
            } else {
                let mut whole = vec![0u8; p.page_size];
                self.read_page(p, page, &mut whole)?;
                out.copy_from_slice(&whole[within..within + n]);
            }
        }
        if short {
            Err(Fault::ShortRead)
        } else {
            Ok(())
        }
    }

    /// Reads one whole page verified, healing it from a replica when it
    /// fails. A free page that fails (nothing sealed it) is served raw.
    fn read_page(
        &self,
        p: &Protected,
        page: PageId,
        buf: &mut [u8],
    ) -> std::result::Result<(), Fault> {
        let first = match p.det.read_verified(page, buf) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match first {
            Error::PageUnallocated { .. } => {
                return p
                    .store
                    .read_page(page, buf)
                    .map_err(io(ffi::SQLITE_IOERR_READ));
            }
            Error::PageOutOfRange { .. } => {
                buf.fill(0);
                return Err(Fault::ShortRead);
            }
            _ => {}
        }
        if p.manager.is_some() {
            // The manager healed on read, or could not: its incident says
            // what it tried. A second repair here would bypass the loop.
            buf.fill(0);
            self.shared.note_heal(&HealEvent {
                path: self.path.clone(),
                page: format::sqlite_page(page),
                healed: false,
                damage: sqlite_numbered(page, &first.to_string()),
                detail: "the recovery manager could not heal it (see its incidents)".into(),
                duration: std::time::Duration::ZERO,
            });
            return Err(Fault::Corrupt);
        }
        let result = self.heal(p, page, buf, &first);
        if result.is_err() {
            // Never the damaged bytes, even though SQLite ignores them.
            buf.fill(0);
        }
        result
    }

    /// Repairs `page` (which failed with `first`) from the replicas and
    /// reads it again verified.
    fn heal(
        &self,
        p: &Protected,
        page: PageId,
        buf: &mut [u8],
        first: &Error,
    ) -> std::result::Result<(), Fault> {
        let _g = self.heal.lock();
        // Another reader may have healed it while this one waited.
        if p.det.read_verified(page, buf).is_ok() {
            return Ok(());
        }
        let started = Instant::now();
        let outcome = {
            let _t = p.ticket();
            p.repairer.repair_page(page)
        };
        let again = p.det.read_verified(page, buf);
        let healed = again.is_ok();
        let detail = match &outcome {
            Ok(r) => match &r.outcome {
                RepairOutcome::Repaired { source } => format!("repaired from {source}"),
                RepairOutcome::Irreparable { reason } => format!("no good copy: {reason}"),
                other => format!("{other:?}"),
            },
            Err(e) => format!("repair failed: {e}"),
        };
        let event = HealEvent {
            path: self.path.clone(),
            page: format::sqlite_page(page),
            healed,
            damage: sqlite_numbered(page, &first.to_string()),
            detail: sqlite_numbered(page, &detail),
            duration: started.elapsed(),
        };
        self.shared.note_heal(&event);
        match again {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(
                    db = %self.path.display(), page = event.page, error = %e,
                    "page failed verification and could not be healed"
                );
                Err(Fault::Corrupt)
            }
        }
    }

    /// `xWrite`: seals every page written (reading, patching and sealing a
    /// page written in part). The first write to an empty file fixes the
    /// page size.
    pub(super) fn write(&self, buf: &[u8], offset: u64) -> std::result::Result<(), Fault> {
        let p = match self.protected.get() {
            Some(p) => p,
            None => {
                let len = buf.len();
                let page_sized = (512..=65_536).contains(&len)
                    && len.is_power_of_two()
                    && offset.is_multiple_of(len as u64);
                if !page_sized {
                    return self.raw.write_at(buf, offset).map_err(raw_fault);
                }
                self.protect(len).map_err(io(ffi::SQLITE_IOERR_WRITE))?
            }
        };
        let ps = p.page_size as u64;
        let mut pending = self.pending.lock();
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let page = PageId(at / ps);
            let within = (at % ps) as usize;
            let n = (p.page_size - within).min(buf.len() - done);
            let bytes = if n == p.page_size {
                buf[done..done + n].to_vec()
            } else {
                let mut whole = match pending.get(&page.0) {
                    Some(b) => b.clone(),
                    None => {
                        let mut w = vec![0u8; p.page_size];
                        if page.0 < p.store.page_count() {
                            self.read_page(p, page, &mut w)?;
                        }
                        w
                    }
                };
                whole[within..within + n].copy_from_slice(&buf[done..done + n]);
                whole
            };
            pending.insert(page.0, bytes);
            done += n;
        }
        if pending.len() >= PENDING_PAGES_MAX {
            Self::flush_locked(p, &mut pending)?;
        }
        Ok(())
    }

    /// Pages of the file as SQLite sees it: the file's, and pending pages
    /// past its end.
    fn pages_with_pending(&self, p: &Protected) -> u64 {
        let last = self.pending.lock().keys().next_back().map(|k| k + 1);
        p.store.page_count().max(last.unwrap_or(0))
    }

    /// Seals and writes the pending pages as one batch (one fsync of the
    /// sidecar table's log for all of them), growing the file first when
    /// they reach past its end. On error the pages stay pending (some may
    /// have been written), so the next flush — at the latest SQLite's next
    /// `xSync` or `xTruncate` — tries again and fails the call.
    fn flush_locked(
        p: &Protected,
        pending: &mut BTreeMap<u64, Vec<u8>>,
    ) -> std::result::Result<(), Fault> {
        let Some(&last) = pending.keys().next_back() else {
            return Ok(());
        };
        let _t = p.ticket();
        let old = p.store.page_count();
        if last >= old {
            p.det
                .resize(last + 1)
                .map_err(io(ffi::SQLITE_IOERR_WRITE))?;
            p.note_resized(last + 1);
            // Pages between the old end and the new pages that SQLite has
            // not written (zeros in the file): free, until a write seals
            // them. Marked before the batch is written, so once the file has
            // grown they are never unmarked and unsealed.
            let gap: Vec<(PageId, Option<u32>)> = (old..last)
                .filter(|q| !pending.contains_key(q))
                .map(|q| (PageId(q), None))
                .collect();
            if !gap.is_empty() {
                let mut claimed = Vec::with_capacity(gap.len());
                p.table
                    .claim_absent(&gap, &mut claimed)
                    .and_then(|()| p.table.flush_claims())
                    .map_err(io(ffi::SQLITE_IOERR_WRITE))?;
            }
        }
        let mut refs: Vec<(PageId, &mut [u8])> = pending
            .iter_mut()
            .map(|(page, b)| (PageId(*page), b.as_mut_slice()))
            .collect();
        p.det
            .write_sealed_batch(&mut refs)
            .map_err(io(ffi::SQLITE_IOERR_WRITE))?;
        if let Some(first) = pending.get(&0) {
            p.first.note_header(first);
        }
        pending.clear();
        p.note_batch();
        Ok(())
    }

    /// Seals and writes the pages SQLite wrote since the last flush. Called
    /// before every point at which SQLite relies on its writes having
    /// reached the file: `xSync` and `xTruncate` (here), and from the VFS
    /// at `SQLITE_FCNTL_SYNC` (sent before each sync of the database file,
    /// also when `synchronous = OFF` omits the sync), at the end of a
    /// checkpoint's copy (`SQLITE_FCNTL_CKPT_DONE`) and at `xClose`.
    pub(super) fn flush(&self) -> std::result::Result<(), Fault> {
        #[cfg(test)]
        tests::maybe_panic_in_flush(&self.path);
        match self.protected.get() {
            Some(p) => Self::flush_locked(p, &mut self.pending.lock()),
            None => Ok(()),
        }
    }

    /// `xTruncate`: the file and its checksums shrink together.
    pub(super) fn truncate(&self, size: u64) -> std::result::Result<(), Fault> {
        match self.protected.get() {
            Some(p) => {
                let pages = size.div_ceil(p.page_size as u64);
                let mut pending = self.pending.lock();
                pending.retain(|page, _| *page < pages);
                Self::flush_locked(p, &mut pending)?;
                let _t = p.ticket();
                p.det
                    .resize(pages)
                    .map_err(io(ffi::SQLITE_IOERR_TRUNCATE))?;
                p.note_resized(pages);
                Ok(())
            }
            None => self.raw.truncate(size).map_err(raw_fault),
        }
    }

    /// `xSync`: the pages, then the checksums that accept them; the settle
    /// records follow (see `settle`).
    pub(super) fn sync(&self, flags: c_int) -> std::result::Result<(), Fault> {
        match self.protected.get() {
            Some(p) => {
                Self::flush_locked(p, &mut self.pending.lock())?;
                p.store.sync_flags.store(flags, Ordering::Relaxed);
                p.det.sync().map_err(io(ffi::SQLITE_IOERR_FSYNC))?;
                // The settles the sync recorded are made durable with the
                // next batch's intents or by the settle thread soon after
                // (see `settle`): the commit waits for the intents' fsync
                // only, unless it gave a page its first settled checksum
                // (the detector's sync then fsynced the log itself).
                p.settler.notify().map_err(io(ffi::SQLITE_IOERR_FSYNC))
            }
            None => self.raw.sync(flags).map_err(raw_fault),
        }
    }

    /// Takes a snapshot of the file now, on the calling thread (writes wait
    /// meanwhile), after writing the pages SQLite wrote so far.
    pub(super) fn snapshot_now(&self) -> Result<SnapshotReport> {
        let Some(p) = self.protected.get().filter(|p| p.snapshots.is_some()) else {
            return Err(Error::InvalidArgument {
                what: "snapshot_now",
                reason: format!(
                    "{} keeps no snapshots; configure SqliteConfig::snapshots (a file with no pages yet has none either)",
                    self.path.display()
                ),
            });
        };
        self.flush().map_err(|f| Error::Host {
            op: "write",
            retryable: true,
            message: format!(
                "writing the pages SQLite wrote failed (result code {})",
                f.rc()
            ),
        })?;
        p.snapshot_now()
    }

    /// The snapshots of the file, oldest first (none when not configured).
    pub(super) fn snapshots(&self) -> Vec<crate::snapshot::SnapshotInfo> {
        self.protected
            .get()
            .map(Protected::snapshot_list)
            .unwrap_or_default()
    }

    /// The recovery manager that owns the file's components, if any.
    pub(super) fn manager(&self) -> Option<Arc<crate::AutoRecoveryManager>> {
        self.protected.get().and_then(|p| p.manager.clone())
    }

    /// The file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// `xFileSize`.
    pub(super) fn file_size(&self) -> std::result::Result<u64, Fault> {
        let size = self.raw.size().map_err(raw_fault)?;
        Ok(match self.protected.get() {
            Some(p) => size.max(self.pages_with_pending(p) * p.page_size as u64),
            None => size,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // Every connection flushed at its close; this is the last resort.
        if let Err(f) = self.flush() {
            tracing::error!(db = %self.path.display(), rc = f.rc(),
                "pages SQLite wrote could not be written at close");
        }
        if let Some(p) = self.protected.get() {
            if p.store.page_count() > 0 {
                self.save_page_one(&p.det, p.page_size);
            }
            p.stop(&self.path);
        }
    }
}

/// `text` (a message of the library about `page`) with each `"page <n>"`
/// that names `page` by its id (from 0) naming it as SQLite does (from 1).
/// Other numbers are left alone.
fn sqlite_numbered(page: PageId, text: &str) -> String {
    const WORD: &str = "page ";
    let id = page.0.to_string();
    let mut out = String::with_capacity(text.len() + 4);
    let mut rest = text;
    while let Some(at) = rest.find(WORD) {
        let (before, after) = rest.split_at(at + WORD.len());
        out.push_str(before);
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let starts_word = at == 0 || !before[..at].ends_with(|c: char| c.is_alphanumeric());
        if starts_word && after[..digits] == id {
            out.push_str(&format::sqlite_page(page).to_string());
        } else {
            out.push_str(&after[..digits]);
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

fn raw_fault(rc: Rc) -> Fault {
    if rc == ffi::SQLITE_IOERR_SHORT_READ {
        Fault::ShortRead
    } else {
        Fault::Code(rc)
    }
}

#[cfg(test)]
pub(super) mod tests;
