//! A SQLite VFS that heals the database file: every page SQLite reads from
//! the main database file is verified against a sidecar checksum table, and
//! a page that fails is repaired from a replica copy before the read
//! returns, so SQLite never sees damaged bytes (feature `sqlite`).
//!
//! [`register`] installs a VFS that wraps SQLite's default VFS (the bundled
//! SQLite of `rusqlite`, whose C API the VFS is written against); a program
//! opens its database through it by name:
//!
//! ```no_run
//! use selfheal::sqlite::{self, SqliteConfig};
//! use rusqlite::{Connection, OpenFlags};
//!
//! let vfs = sqlite::register("selfheal", SqliteConfig::new().replica_file("/backup/app.db"))?;
//! let conn = Connection::open_with_flags_and_vfs(
//!     "/data/app.db",
//!     OpenFlags::default(),
//!     vfs.name(),
//! ).expect("open");
//! // or: Connection::open("file:/data/app.db?vfs=selfheal")
//! # Ok::<(), selfheal::Error>(())
//! ```
//!
//! # Contract
//!
//! - **The main database file only.** Rollback journals, the WAL, its
//!   shared-memory index and temporary files pass through to the default VFS
//!   unchanged (SQLite checksums its WAL frames itself); SQLite's open flags
//!   tell the main database file from the others. SQLite's file format is
//!   unchanged: the checksums live in a durable sidecar table,
//!   `<db>-selfheal` (plus its `.log-*` and `.lock` files: a
//!   [`ChecksumTable`](crate::checksum::ChecksumTable) opened by path), and any other SQLite
//!   tool still opens the file.
//! - **Paths** are taken as the bytes SQLite passes, never converted
//!   lossily, so the file the VFS verifies, keys its connections by and
//!   names its sidecar after is the file SQLite opened. A database whose
//!   file name is not UTF-8 (the sidecar table is named after it) is
//!   refused, as is one with a replica that is the file itself (by path,
//!   symlink, `..` or hard link): the open answers `SQLITE_CANTOPEN` with
//!   the reason in the log, and [`SqliteVfs::check_database`] gives it as
//!   a typed error.
//! - **Registration** ([`register`]) is serialised within the process:
//!   a name is registered with SQLite once; registering it again with the
//!   same configuration returns the same VFS, with another configuration
//!   fails with a typed error.
//! - **Adoption.** When a file with pages is opened and some page has
//!   neither a checksum nor a free mark (the first open, or an adoption a
//!   crash cut short), SQLite's `PRAGMA quick_check` runs first on a
//!   separate connection through the default VFS, inside a read
//!   transaction that is held (SQLite's shared lock) until the adoption is
//!   done, so no writer of any process changes the file meanwhile in
//!   rollback-journal mode (in WAL mode another process's checkpoint still
//!   may: adopt a WAL database with no other process attached). That
//!   connection never checkpoints at its close: committed frames a WAL
//!   still holds stay there, for SQLite to read and to checkpoint through
//!   the VFS (which seals them); adoption seals the file's own pages.
//!   Anything but `ok` refuses the open. Then SQLite's freelist (the trunk list from
//!   header offsets 32 and 36, read defensively: a bad list refuses the
//!   open) decides which pages are free: its leaf pages, and pages past
//!   the header's page count, are marked unallocated, and every other page
//!   is sealed as it is, all-zero pages included (the last overflow page of
//!   a `zeroblob` is all zeros and in use) ([`CorruptionDetector::adopt`]).
//!   An adoption resumed after a crash that finds pages failing the
//!   checksums the first run recorded refuses the open. Each adoption is
//!   reported with its duration ([`SqliteVfs::adoptions`]). Unsealed pages
//!   that are all zeros (what a crash between growing the file and writing
//!   the new pages leaves at its end) need no check: they are marked free.
//!   An open that does not adopt seals the all-zero pages SQLite uses that
//!   are marked free (an adoption by an earlier build of the crate took
//!   every all-zero page for free), after reading SQLite's freelist.
//! - **Refused opens** answer `SQLITE_CANTOPEN` ("unable to open database
//!   file") to SQLite; the typed reason, an
//!   [`Error::SqliteRefused`](crate::Error::SqliteRefused) naming the file,
//!   its sidecar and what to do, is kept for
//!   [`SqliteVfs::take_open_error`] (and logged).
//! - **Identity.** Before any page of a file with a sidecar is healed, page
//!   1 and up to 15 other sealed pages spread over the file are checked
//!   against the sidecar: when at least two fail and they are at least half
//!   of those checked, the file is not the one the sidecar protects
//!   (another file was copied or renamed over it, or the sidecar belongs to
//!   another database) and the open is refused
//!   ([`SqliteRefusal::Replaced`](crate::SqliteRefusal::Replaced)) instead
//!   of the file being "healed" back to a replica page by page. Damage to
//!   a single page is healed as usual.
//! - **Pages nobody wrote.** When SQLite grows the file by writing a page
//!   past its end, the pages between the old end and that page (zeros in
//!   the file) are marked free in the same flush, and sealed when SQLite
//!   writes them: full reads, scrubs and snapshots never take them for
//!   damage.
//! - **Heal on read.** Every byte `xRead` returns from a page in use
//!   comes from the page verified whole by
//!   [`CorruptionDetector::read_verified`]. Pages marked free (such as
//!   freelist leaves at adoption and the unwritten pages of a gap), whose
//!   content SQLite does not use, are served as they are, unverified:
//!   nothing sealed them.
//!   SQLite does not read only whole pages: it reads the 100-byte header
//!   at offset 0 when it opens the file, the 16-byte change counter at
//!   offset 24 at the start of a read transaction in rollback-journal
//!   mode, and the first part of an overflow page it reads straight from
//!   the file (`SQLITE_DIRECT_OVERFLOW_READ`, since the default VFS
//!   reports `SQLITE_IOCAP_SUBPAGE_READ`). A read of part of a page
//!   verifies the whole page and copies out the part asked for (page 1's
//!   verified bytes are kept until its next write, so its small header
//!   reads cost a copy); a read across pages verifies each; pages SQLite
//!   wrote that the VFS still holds (see *Writes in batches*) are served
//!   from memory. Only reads before the page size is known — a file that
//!   was empty when first opened, until SQLite's first page-sized write —
//!   pass through unverified: no page is sealed yet. A page that fails is
//!   repaired from the configured replicas
//!   ([`DataRepairer::repair_page`](crate::DataRepairer::repair_page): a
//!   replica's copy is written only if it matches the page's checksum) and
//!   read again; each heal is counted, logged and passed to
//!   [`SqliteConfig::on_heal`] (a [`HealEvent`] numbers the page from 1 in
//!   every field, like SQLite; the failure bus uses
//!   [`PageId`](crate::PageId)s, from 0). With no good copy the read answers
//!   `SQLITE_CORRUPT` (SQLite: "database disk image is malformed") and
//!   never the damaged bytes; the page stays fenced and the incident is on
//!   the failure bus ([`FailureKind::CorruptPage`](crate::FailureKind::CorruptPage),
//!   then [`FailureKind::IrreparablePage`](crate::FailureKind::IrreparablePage)).
//!   The next read of the page tries the replicas again.
//! - **Writes** are sealed ([`CorruptionDetector::write_sealed_batch`]):
//!   the new checksum is logged durably before the page is written, and the
//!   old one stays accepted until a sync, so a crash at any point leaves
//!   each page holding bytes its checksum accepts. `xTruncate` shrinks the
//!   file and forgets the checksums of the pages past the end together
//!   ([`CorruptionDetector::resize`]); `xSync` syncs the file and then
//!   settles the checksums of the pages it covered
//!   ([`CorruptionDetector::sync`]), so that after a reopen a page accepts
//!   only its last synced version. The settle record is made durable with
//!   the next batch's intents, or by the file's settle thread 50 ms after
//!   the sync when no batch comes first, and at the close: a crash within
//!   that window leaves the last commit's pages accepting their older bytes
//!   too (never a false alarm; replicas and snapshots still serve only a
//!   page's newest version). Rollback-journal and WAL modes both work (in
//!   WAL mode the main file is written at checkpoints).
//! - **Writes in batches.** The pages SQLite writes are held (and served to
//!   reads from memory) until SQLite relies on them being in the file, then
//!   sealed and written as one batch with one fsync of the table's log:
//!   at `SQLITE_FCNTL_SYNC` (sent before every sync of the database file,
//!   also when `synchronous = OFF` omits it), `xSync`, `xTruncate`, the end
//!   of a checkpoint's copy (`SQLITE_FCNTL_CKPT_DONE`), `xClose`, or when
//!   1024 pages are held. A killed process therefore loses only
//!   writes SQLite has not yet relied on, which its journal or WAL covers.
//! - **Refused file controls.** Memory-mapped I/O (`PRAGMA mmap_size`) is
//!   refused, as are size hints and chunked growth: a mapped page would
//!   bypass verification, and pre-grown pages were written by nobody.
//! - **One process.** The sidecar table has one owner: connections of one
//!   process share it (one detector per file and VFS), and a second process
//!   opening the same file through a selfheal VFS is refused
//!   (`SQLITE_CANTOPEN`). Every write of the file must go through the VFS
//!   once it is adopted: a write by another program leaves pages whose
//!   checksums no longer match, which the VFS treats as damage (and heals
//!   from a replica, undoing the outside write, if the replica has the
//!   older page; an outside write that changed most pages, such as another
//!   file copied over it, is refused instead: see Identity). To hand the
//!   file back to plain SQLite for writing, delete
//!   the `<db>-selfheal*` files afterwards, and the next open adopts again.
//!   The last connection's close of a file (its last pages written, its
//!   recovery manager stopped) holds back no open of another file; an open
//!   of the same file waits until the close has finished.
//! - **Page size** is the sidecar table's when one exists; otherwise it is
//!   read from the header (offset 16; from a replica's header when page 1
//!   itself is damaged) or, for a new file, from SQLite's first write. A
//!   page size changed later (`PRAGMA page_size` then `VACUUM`, which works
//!   through the VFS) is refused at the next open
//!   ([`SqliteRefusal::PageSizeChanged`](crate::SqliteRefusal::PageSizeChanged));
//!   delete the `<db>-selfheal*` files after `PRAGMA integrity_check` says
//!   `ok`, and the next open adopts the file at its new page size.
//! - **Page 1's copy.** `<db>-selfheal.page1` keeps page 1 as last
//!   verified, written after each adoption and at the last connection's
//!   clean close; it is a repair source for page 1 only, served like any
//!   replica only when it is page 1's newest version. Page 1 damaged while
//!   the database is closed, its header fields included, heals from it;
//!   after a crash the copy may be older than page 1 and is then not
//!   used.
//! - **Replicas** ([`SqliteConfig::replica_file`], or one copy per
//!   database in a [replica directory](SqliteConfig::replica_dir)) are
//!   copies of the database file, read by path at each repair, so a copy
//!   the host refreshes serves its newest pages. A copy serves a page only
//!   when its bytes are the page's newest version (the checksum SQLite's
//!   last write of the page was sealed with), so a damaged copy, or one
//!   behind the newest commit, is never written back: the read fails
//!   instead. Any [`Replica`] can be added as well.
//! - **Backup-API replicas.** A copy the host keeps in step with SQLite's
//!   online backup API (`sqlite3_backup_*`, `rusqlite::backup::Backup`)
//!   after its commits is a supported replica file: every page past page 1
//!   is the database's byte for byte. Its page 1 is not: the backup writes
//!   five header fields from the copy's own state — bytes 18..20 (file
//!   format versions), 24..28 (change counter), 40..44 (schema cookie),
//!   92..96 (version-valid-for) and 96..100 (SQLite version number). A
//!   copy's page 1 that does not verify as it is is therefore tried with
//!   those fields, and no other byte, taken from the database's own
//!   header: the last one read verified or written through the VFS in this
//!   open, then the header of the damaged page on disk. The sidecar
//!   checksum decides: only a page 1 that is then exactly the newest
//!   version is written back. Caveats: run the backup after the commit
//!   whose pages it must hold (a page written since is not served: the
//!   read fails); keep the copy in rollback-journal mode (`PRAGMA
//!   journal_mode = DELETE` on the copy after each backup — a WAL source's
//!   backup makes the copy a WAL database whose newest pages sit in its
//!   `-wal` file, which is not read) or close its connection before a
//!   repair may read it; and page 1 damaged in those header fields right
//!   after an open, before any verified read of it, heals only from page
//!   1's kept copy (above), and with no current copy fails with
//!   `SQLITE_CORRUPT`.
//! - **Snapshots** ([`SqliteConfig::snapshots`]): each file's incremental
//!   snapshots, taken periodically between batches of writes (writes wait
//!   meanwhile) from the pages the VFS noted written, are the repair source
//!   after the replicas. A snapshot's copy of a page is written back only
//!   if the sidecar table accepts exactly one version of the page (its
//!   write synced, none since) and the copy is that version — or, within
//!   one open, if nothing wrote the page since the snapshot — so a snapshot
//!   heals damage found after a reopen, and never brings back an older
//!   version. [`SqliteVfs::snapshot_now`] takes one at once.
//! - **Under a recovery manager** ([`SqliteConfig::recovery`]): each open
//!   file's detector, repairer, scrub and snapshots belong to an
//!   [`AutoRecoveryManager`](crate::AutoRecoveryManager); a page that fails
//!   on read is the manager's incident, healed through the whole loop
//!   before the read returns, and damage its scrub finds is healed with no
//!   read at all ([`SqliteVfs::manager`] gives its incidents, events and
//!   audit log). Without it the VFS repairs on read itself, and runs the
//!   scrub and the snapshots on threads of its own.
//!
//! No panic crosses into SQLite: each callback catches one and answers an
//! I/O error. The FFI is confined to `vfs.rs`, `vfs/` and `raw.rs` of this module.

mod config;
mod database;
mod first_page;
mod identity;
mod protected;
mod raw;
mod registry;
mod replica;
mod settle;
mod snapshots;
mod store;
mod vfs;

use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::Result;
use crate::snapshot::{SnapshotInfo, SnapshotReport};
use crate::types::{Failure, FailureSink};
#[cfg(doc)]
use crate::{host::Replica, CorruptionDetector};
use config::Shared;
use database::Databases;

pub use config::{AdoptionReport, HealEvent, HealFn, SqliteConfig};
pub use identity::sidecar_path;

/// Counters of a selfheal VFS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SqliteStats {
    /// Database files opened (each file once while any connection has it).
    pub files_opened: u64,
    /// Pages that failed verification on read and were healed.
    pub healed: u64,
    /// Pages that failed verification on read and could not be healed (the
    /// read answered `SQLITE_CORRUPT`).
    pub unhealed: u64,
}

/// A registered selfheal VFS. The registration lasts until the process
/// ends (SQLite may hold the VFS in any connection); dropping the handle
/// only drops the caller's view of its reports.
#[derive(Clone)]
pub struct SqliteVfs {
    name: String,
    shared: Arc<Shared>,
    dbs: Arc<Databases>,
}

impl fmt::Debug for SqliteVfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteVfs")
            .field("name", &self.name)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The selfheal VFSes registered in this process, by name (a registration
/// lasts until the process ends). Registrations run under its lock, one at
/// a time, so two threads registering one name cannot both pass SQLite's
/// "no such VFS yet" check and register it twice.
static REGISTERED: parking_lot::Mutex<Vec<SqliteVfs>> = parking_lot::Mutex::new(Vec::new());

/// Registers a selfheal VFS named `name` that wraps SQLite's default VFS
/// (not made the default: open databases with it by name).
///
/// Registering a name again with the same configuration (equal paths and
/// settings, and the same [`Replica`], sink, clock and callback objects:
/// clones of the one config) is idempotent: it returns a handle of the VFS
/// registered first, sharing its counters and reports. Registrations from
/// several threads at once are serialised; exactly one of them registers
/// the VFS with SQLite.
///
/// # Errors
/// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for an empty name,
/// a name with a NUL byte, a scrub rate or snapshot interval of zero, a
/// name this process registered a selfheal VFS under with another
/// configuration, a name another (not selfheal) VFS is registered under,
/// or a refusal by SQLite.
pub fn register(name: &str, config: SqliteConfig) -> Result<SqliteVfs> {
    if config.scrub_pages_per_s == Some(0) {
        return Err(crate::Error::config(
            "scrub_pages_per_s",
            "is 0; give a positive rate, or leave it unset for no scrub",
        ));
    }
    if matches!(config.snapshots, Some((_, every)) if every.is_zero()) {
        return Err(crate::Error::config(
            "snapshots",
            "interval is 0; give how often to snapshot, e.g. 60 s",
        ));
    }
    let mut registered = REGISTERED.lock();
    if let Some(vfs) = registered.iter().find(|v| v.name == name) {
        if vfs.shared.config.same_as(&config) {
            return Ok(vfs.clone());
        }
        return Err(crate::Error::config(
            "name",
            format!(
                "a selfheal VFS named {name:?} is registered already with another configuration \
                 (a registration lasts for the process); register this one under another name, \
                 or register the same configuration (a clone of it) to get the existing VFS"
            ),
        ));
    }
    let shared = Arc::new(Shared::new(config));
    let dbs = Arc::new(Databases::default());
    vfs::register(name, shared.clone(), dbs.clone())?;
    let vfs = SqliteVfs {
        name: name.to_string(),
        shared,
        dbs,
    };
    registered.push(vfs.clone());
    Ok(vfs)
}

impl SqliteVfs {
    /// The name to open databases with (`?vfs=<name>`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks that this VFS can protect the database file at `db` (which
    /// need not exist yet): its file name is UTF-8 (the sidecar table
    /// `<db>-selfheal` is named after it; the directories above it may
    /// have any bytes in their names), and no replica — a
    /// [`replica_file`](SqliteConfig::replica_file), or `db`'s copy in a
    /// [`replica_dir`](SqliteConfig::replica_dir) — is `db` itself, by the
    /// same path, through a symlink, `..` or a hard link. Every open of a
    /// database through the VFS runs the same check first and refuses the
    /// open (`SQLITE_CANTOPEN`, this error in the log) when it fails; call
    /// it beforehand for the reason as a typed error.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming the
    /// path and the setting (`path`, `replica_file` or `replica_dir`).
    pub fn check_database(&self, db: impl AsRef<Path>) -> Result<()> {
        database::check_database(&self.shared.config, db.as_ref())
    }

    /// The failure bus: corrupt pages found on read, pages no replica could
    /// repair.
    #[must_use]
    pub fn failure_sink(&self) -> &FailureSink {
        &self.shared.sink
    }

    /// The receiving end of the failure bus.
    #[must_use]
    pub fn failures(&self) -> crate::Receiver<Failure> {
        self.shared.sink.failures()
    }

    /// Every adoption so far, oldest first.
    #[must_use]
    pub fn adoptions(&self) -> Vec<AdoptionReport> {
        self.shared.adoptions.lock().clone()
    }

    /// Takes a snapshot of the open database file at `path` now (see
    /// [`SqliteConfig::snapshots`]), after writing the pages SQLite wrote so
    /// far, and returns what it did. The periodic snapshots go on as
    /// before. Do not call it from a callback the VFS runs
    /// ([`SqliteConfig::on_heal`]): the snapshot waits for the write in
    /// progress.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when no
    /// connection has the file open through this VFS, or the VFS keeps no
    /// snapshots; the snapshot's own error.
    pub fn snapshot_now(&self, path: impl AsRef<Path>) -> Result<SnapshotReport> {
        self.open_database(path.as_ref())?.snapshot_now()
    }

    /// The snapshots of the open database file at `path`, oldest first
    /// (none when the VFS keeps no snapshots).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when no
    /// connection has the file open through this VFS.
    pub fn snapshots(&self, path: impl AsRef<Path>) -> Result<Vec<SnapshotInfo>> {
        Ok(self.open_database(path.as_ref())?.snapshots())
    }

    /// The recovery manager of the open database file at `path` (see
    /// [`SqliteConfig::recovery`]): its events, incidents, postmortems,
    /// statistics and audit log. It is stopped when the last connection
    /// closes the file; drop the handle before the file is opened again,
    /// or the new manager finds its directory held.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when no
    /// connection has the file open through this VFS, or the VFS runs no
    /// manager.
    pub fn manager(&self, path: impl AsRef<Path>) -> Result<Arc<crate::AutoRecoveryManager>> {
        let path = path.as_ref();
        self.open_database(path)?
            .manager()
            .ok_or_else(|| crate::Error::InvalidArgument {
                what: "path",
                reason: format!(
                    "{} runs under no recovery manager; configure SqliteConfig::recovery",
                    path.display()
                ),
            })
    }

    fn open_database(&self, path: &Path) -> Result<Arc<database::Database>> {
        self.dbs
            .find(path)
            .ok_or_else(|| crate::Error::InvalidArgument {
                what: "path",
                reason: format!(
                    "no connection has {} open through the VFS {:?}; open it first",
                    path.display(),
                    self.name
                ),
            })
    }

    /// Why the last open of `path` through this VFS failed, if it did and
    /// nobody took the error yet: SQLite reports only `SQLITE_CANTOPEN`
    /// ("unable to open database file"); this is the typed reason, such as
    /// [`Error::SqliteRefused`](crate::Error::SqliteRefused). Taking it
    /// removes it. At most the last 64 errors are kept.
    #[must_use]
    pub fn take_open_error(&self, path: impl AsRef<Path>) -> Option<crate::Error> {
        let path = path.as_ref();
        let mut errors = self.shared.open_errors.lock();
        let at = errors.iter().rposition(|(p, _)| p == path)?;
        Some(errors.remove(at).1)
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> SqliteStats {
        SqliteStats {
            files_opened: self.shared.files_opened.load(Ordering::Relaxed),
            healed: self.shared.healed.load(Ordering::Relaxed),
            unhealed: self.shared.unhealed.load(Ordering::Relaxed),
        }
    }
}
