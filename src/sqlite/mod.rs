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
//!   `<db>-selfheal` (plus its `.log-*` and `.lock` files, see
//!   [`checksum::durable`](crate::checksum::durable)), and any other SQLite
//!   tool still opens the file.
//! - **Adoption.** When a file with pages is opened and some page has
//!   neither a checksum nor a free mark (the first open, or an adoption a
//!   crash cut short), SQLite's `PRAGMA quick_check` runs first on a
//!   separate connection through the default VFS; anything but `ok` refuses
//!   the open (`SQLITE_CANTOPEN`, the reason in the log). Then the
//!   freelist's leaf pages are marked unallocated and every other page is
//!   sealed as it is ([`CorruptionDetector::adopt`]). Each adoption is
//!   reported with its duration ([`SqliteVfs::adoptions`]).
//! - **Heal on read.** `xRead` reads whole pages through
//!   [`CorruptionDetector::read_verified`] (a read of part of a page — the
//!   first 100-byte header read — verifies the whole page). A page that
//!   fails is repaired from the configured replicas
//!   ([`DataRepairer::repair_page`](crate::DataRepairer::repair_page): a
//!   replica's copy is written only if it matches the page's checksum) and
//!   read again; each heal is counted, logged and passed to
//!   [`SqliteConfig::on_heal`]. With no good copy the read answers
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
//!   ([`CorruptionDetector::sync`]). Rollback-journal and WAL modes both
//!   work (in WAL mode the main file is written at checkpoints).
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
//!   older page). To hand the file back to plain SQLite for writing, delete
//!   the `<db>-selfheal*` files afterwards, and the next open adopts again.
//! - **Page size** is read from the header (offset 16; from a replica's
//!   header when page 1 itself is damaged) or, for a new file, from SQLite's
//!   first write. Changing it later (`PRAGMA page_size` then `VACUUM`) is not
//!   supported.
//! - **Replicas** ([`SqliteConfig::replica_file`]) are byte copies of the
//!   database file, read by path at each repair, so a copy the host
//!   refreshes serves its newest pages; see the `replica` notes on when a
//!   copy is byte-identical. Any [`Replica`] can be added as well.
//!
//! No panic crosses into SQLite: each callback catches one and answers an
//! I/O error. The FFI is confined to `vfs.rs` and `raw.rs` of this module.

mod database;
// The reader of SQLite's header and freelist that `testing::sqlite` exposes
// to tests, compiled here too so that the VFS needs no `testing` feature
// (the VFS uses the header and freelist parts only).
#[path = "../testing/sqlite.rs"]
#[allow(dead_code, clippy::duplicate_mod)]
mod format;
mod raw;
mod replica;
mod vfs;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::Clock;
use crate::corruption::AdoptReport;
use crate::error::Result;
use crate::host::Replica;
use crate::types::{Failure, FailureSink};
#[cfg(doc)]
use crate::CorruptionDetector;

/// The sidecar checksum table's base file for the database at `db`:
/// `<db>-selfheal` (its logs and lock file are `<db>-selfheal.*`).
#[must_use]
pub fn sidecar_path(db: &std::path::Path) -> PathBuf {
    database::table_path(db)
}

/// Failures a VFS without its own sink keeps before dropping the oldest.
const DEFAULT_FAILURE_CAPACITY: usize = 1024;

/// A callback told of every heal attempt as it happens.
pub type HealFn = Arc<dyn Fn(&HealEvent) + Send + Sync>;

/// How a selfheal VFS protects the databases opened through it.
#[derive(Clone, Default)]
pub struct SqliteConfig {
    replica_files: Vec<PathBuf>,
    replicas: Vec<Arc<dyn Replica>>,
    sink: Option<FailureSink>,
    clock: Option<Arc<dyn Clock>>,
    on_heal: Option<HealFn>,
    scrub_pages_per_s: Option<u64>,
}

impl fmt::Debug for SqliteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteConfig")
            .field("replica_files", &self.replica_files)
            .field("replicas", &self.replicas)
            .field("on_heal", &self.on_heal.is_some())
            .field("scrub_pages_per_s", &self.scrub_pages_per_s)
            .finish_non_exhaustive()
    }
}

impl SqliteConfig {
    /// No replicas (damage is then detected and refused, never healed), a
    /// failure bus of its own, the system clock.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a replica: a byte copy of the database file at `path`, read by
    /// path at each repair (it may be missing or refreshed meanwhile). Every
    /// database opened through the VFS uses it, so give one VFS per
    /// database when replicas differ.
    #[must_use]
    pub fn replica_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.replica_files.push(path.into());
        self
    }

    /// Adds any [`Replica`] (its page size must be the database's).
    #[must_use]
    pub fn replica(mut self, replica: Arc<dyn Replica>) -> Self {
        self.replicas.push(replica);
        self
    }

    /// The failure bus for corruption and repair reports (default: one of
    /// the VFS's own, [`SqliteVfs::failures`]).
    #[must_use]
    pub fn failure_sink(mut self, sink: FailureSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The clock for reports (default: [`SystemClock::shared`](crate::SystemClock::shared)).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Scrubs each open database file in the background at `pages` pages
    /// per second (a [`Scrubber`](crate::Scrubber) on its own thread,
    /// `selfheal-scrub`, for as long as a connection has the file open):
    /// damage no query reads is found, reported on the failure bus and
    /// fenced, and the next read of a fenced page heals it. Default: no
    /// scrub. Zero is refused by [`register`].
    #[must_use]
    pub fn scrub_pages_per_s(mut self, pages: u64) -> Self {
        self.scrub_pages_per_s = Some(pages);
        self
    }

    /// Calls `f` after every heal attempt (healed or not), on the thread
    /// that read the page, before the read returns. It must not use a
    /// connection of the database being read.
    #[must_use]
    pub fn on_heal(mut self, f: impl Fn(&HealEvent) + Send + Sync + 'static) -> Self {
        self.on_heal = Some(Arc::new(f));
        self
    }
}

/// One page that failed verification on read, and what healing it did.
#[derive(Clone, Debug)]
pub struct HealEvent {
    /// The database file.
    pub path: PathBuf,
    /// The SQLite page number (1-based).
    pub page: u64,
    /// Whether the read was then served verified bytes.
    pub healed: bool,
    /// Why the page failed verification: the detector's error, which
    /// numbers pages from 0 (SQLite's page `n` is its page `n - 1`).
    pub damage: String,
    /// What the repair did (the replica that served it, or why none could).
    pub detail: String,
    /// How long the repair took.
    pub duration: Duration,
}

/// The adoption of one database file.
#[derive(Clone, Debug)]
pub struct AdoptionReport {
    /// The database file.
    pub path: PathBuf,
    /// Its page size.
    pub page_size: usize,
    /// Its pages.
    pub pages: u64,
    /// Freelist leaf pages, marked unallocated.
    pub freelist_leaves: u64,
    /// How long `PRAGMA quick_check` took.
    pub quick_check: Duration,
    /// How long sealing the pages took (after the check).
    pub adopt: Duration,
    /// The detector's report of the adoption.
    pub report: AdoptReport,
}

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

/// What every database of one VFS shares.
struct Shared {
    config: SqliteConfig,
    sink: FailureSink,
    adoptions: Mutex<Vec<AdoptionReport>>,
    files_opened: AtomicU64,
    healed: AtomicU64,
    unhealed: AtomicU64,
}

impl Shared {
    fn note_heal(&self, event: &HealEvent) {
        if event.healed {
            self.healed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(db = %event.path.display(), page = event.page, damage = %event.damage,
                detail = %event.detail, "healed a damaged page on read");
        } else {
            self.unhealed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(f) = &self.config.on_heal {
            f(event);
        }
    }

    fn note_open(&self) {
        self.files_opened.fetch_add(1, Ordering::Relaxed);
    }
}

/// A registered selfheal VFS. The registration lasts until the process
/// ends (SQLite may hold the VFS in any connection); dropping the handle
/// only drops the caller's view of its reports.
#[derive(Clone)]
pub struct SqliteVfs {
    name: String,
    shared: Arc<Shared>,
}

impl fmt::Debug for SqliteVfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteVfs")
            .field("name", &self.name)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Registers a selfheal VFS named `name` that wraps SQLite's default VFS
/// (not made the default: open databases with it by name).
///
/// # Errors
/// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for an empty name,
/// a name with a NUL byte, a scrub rate of zero, a name some VFS is registered under already, or a
/// refusal by SQLite.
pub fn register(name: &str, config: SqliteConfig) -> Result<SqliteVfs> {
    if config.scrub_pages_per_s == Some(0) {
        return Err(crate::Error::config(
            "scrub_pages_per_s",
            "is 0; give a positive rate, or leave it unset for no scrub",
        ));
    }
    let sink = config
        .sink
        .clone()
        .unwrap_or_else(|| FailureSink::new(DEFAULT_FAILURE_CAPACITY));
    let shared = Arc::new(Shared {
        config,
        sink,
        adoptions: Mutex::new(Vec::new()),
        files_opened: AtomicU64::new(0),
        healed: AtomicU64::new(0),
        unhealed: AtomicU64::new(0),
    });
    vfs::register(name, shared.clone())?;
    Ok(SqliteVfs {
        name: name.to_string(),
        shared,
    })
}

impl SqliteVfs {
    /// The name to open databases with (`?vfs=<name>`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
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
