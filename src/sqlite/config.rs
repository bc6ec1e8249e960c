//! What a selfheal VFS is configured with, what it reports (heals,
//! adoptions), and the state every database of one VFS shares.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::Clock;
use crate::corruption::AdoptReport;
use crate::host::Replica;
use crate::types::FailureSink;

/// Failures a VFS without its own sink keeps before dropping the oldest.
const DEFAULT_FAILURE_CAPACITY: usize = 1024;

/// A callback told of every heal attempt as it happens.
pub type HealFn = Arc<dyn Fn(&HealEvent) + Send + Sync>;

/// How a selfheal VFS protects the databases opened through it.
#[derive(Clone, Default)]
pub struct SqliteConfig {
    pub(super) replica_files: Vec<PathBuf>,
    pub(super) replica_dirs: Vec<PathBuf>,
    pub(super) snapshots: Option<(PathBuf, Duration)>,
    pub(super) recovery: Option<PathBuf>,
    pub(super) replicas: Vec<Arc<dyn Replica>>,
    pub(super) sink: Option<FailureSink>,
    pub(super) clock: Option<Arc<dyn Clock>>,
    pub(super) on_heal: Option<HealFn>,
    pub(super) scrub_pages_per_s: Option<u64>,
}

impl fmt::Debug for SqliteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteConfig")
            .field("replica_files", &self.replica_files)
            .field("replica_dirs", &self.replica_dirs)
            .field("snapshots", &self.snapshots)
            .field("recovery", &self.recovery)
            .field("replicas", &self.replicas)
            .field("on_heal", &self.on_heal.is_some())
            .field("scrub_pages_per_s", &self.scrub_pages_per_s)
            .finish_non_exhaustive()
    }
}

/// Whether `a` and `b` hold the same objects, in the same order.
fn same_objects<T: ?Sized>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

/// Whether `a` and `b` are both unset or hold the same object.
fn same_object<T: ?Sized>(a: Option<&Arc<T>>, b: Option<&Arc<T>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
        _ => false,
    }
}

impl SqliteConfig {
    /// Whether `other` configures a VFS exactly as `self` does: equal
    /// paths and settings, and the same replica, sink, clock and callback
    /// objects (a clone of a config is the same; two closures are not).
    pub(super) fn same_as(&self, other: &SqliteConfig) -> bool {
        let same_sink = match (&self.sink, &other.sink) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same_bus(b),
            _ => false,
        };
        self.replica_files == other.replica_files
            && self.replica_dirs == other.replica_dirs
            && self.snapshots == other.snapshots
            && self.recovery == other.recovery
            && self.scrub_pages_per_s == other.scrub_pages_per_s
            && same_objects(&self.replicas, &other.replicas)
            && same_sink
            && same_object(self.clock.as_ref(), other.clock.as_ref())
            && same_object(self.on_heal.as_ref(), other.on_heal.as_ref())
    }

    /// No replicas (damage is then detected and refused, never healed), a
    /// failure bus of its own, the system clock.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a replica: a copy of the database file at `path`, read by
    /// path at each repair (it may be missing or refreshed meanwhile). Every
    /// database opened through the VFS uses it, so give one VFS per
    /// database when replicas differ.
    ///
    /// The copy may be a byte copy (taken while no write transaction is
    /// open, or after a checkpoint in WAL mode) or a copy the host keeps in
    /// step with SQLite's backup API (`rusqlite::backup::Backup` from a
    /// connection of the database into `path`, after its commits). A
    /// backup's page 1 differs in five header fields — bytes 18..20,
    /// 24..28, 40..44, 92..96 and 96..100 — which the VFS takes from the
    /// database's own header (the last one read verified or written this
    /// open, else the damaged page's) before checking the page against its
    /// checksum; no other byte is taken. A page is served only when it is
    /// the newest version SQLite wrote, so run the backup after the commits
    /// it must cover, and keep the copy in rollback-journal mode (`PRAGMA
    /// journal_mode = DELETE` on it after each backup: a WAL source makes
    /// its copy a WAL database, whose newest pages are in its `-wal` file).
    /// See the module docs' *Backup-API replicas*.
    #[must_use]
    pub fn replica_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.replica_files.push(path.into());
        self
    }

    /// Adds a replica directory: the replica of a database file `<name>`
    /// is the copy `dir/<name>` (a byte copy or a backup-API copy, as for
    /// [`replica_file`](Self::replica_file)) (its file name, whatever directory the
    /// database is in), read by path at each repair like a
    /// [`replica_file`](Self::replica_file). One VFS can so serve several
    /// databases, each with its own copy; a database with no copy in `dir`
    /// just has no replica there.
    #[must_use]
    pub fn replica_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.replica_dirs.push(dir.into());
        self
    }

    /// Keeps incremental snapshots of each open database file in
    /// `dir/<file name>/` (a [`StateSnapshotManager`](crate::StateSnapshotManager)
    /// per file), one taken every `every` on a thread of its own
    /// (`selfheal-snapshot`), and uses the newest as a repair source after
    /// the replicas. The first snapshot of a file is full; later ones hold
    /// only the pages written since the one before, found from the writes
    /// the VFS makes (dirty notices; after a reopen, by comparing page
    /// fingerprints once). Each is taken between two batches of writes,
    /// with writes held back while it runs.
    ///
    /// A snapshot serves a page only if nothing was written to it since
    /// (and only bytes the page's checksum accepts are ever written back),
    /// so it never brings back an older version of a page; it heals pages
    /// that have not changed since the newest snapshot. It is a repair
    /// source, not a backup of the database: it is taken between SQLite's
    /// writes, not at a transaction's end. Default: no snapshots. A zero
    /// interval is refused by [`register`](super::register); a directory
    /// another manager holds refuses the open (`SQLITE_CANTOPEN`).
    #[must_use]
    pub fn snapshots(mut self, dir: impl Into<PathBuf>, every: Duration) -> Self {
        self.snapshots = Some((dir.into(), every));
        self
    }

    /// Runs each open database file under an
    /// [`AutoRecoveryManager`](crate::AutoRecoveryManager) (in
    /// [`Mode::Automatic`](crate::Mode::Automatic)) keeping its files in
    /// `dir/<file name>/`: the run marker, the open incidents, the audit
    /// log, the learned records. The manager owns the file's detector, its
    /// repairer (the replicas, then the snapshots), the scrub and the
    /// periodic snapshots when configured; a page that fails verification
    /// on read is its incident, healed on the reader's thread through the
    /// whole loop (diagnosis, the remedy it has learned works, verification,
    /// the audit record) before the read returns, and damage a scrub finds
    /// is healed in the background with no read at all.
    ///
    /// Under a manager, heals are reported by the manager — its events,
    /// incidents, postmortems and audit log
    /// ([`SqliteVfs::manager`](super::SqliteVfs::manager)) — and its own
    /// failure bus: [`on_heal`](Self::on_heal) and
    /// [`SqliteStats::healed`](super::SqliteStats::healed) are told only of
    /// reads it could not heal (answered `SQLITE_CORRUPT`). The manager
    /// stops cleanly when the last connection closes the file. A directory
    /// another manager holds refuses the open (`SQLITE_CANTOPEN`).
    /// Default: no manager.
    #[must_use]
    pub fn recovery(mut self, dir: impl Into<PathBuf>) -> Self {
        self.recovery = Some(dir.into());
        self
    }

    /// Adds any [`Replica`] (its page size must be the database's).
    #[must_use]
    pub fn replica(mut self, replica: Arc<dyn Replica>) -> Self {
        self.replicas.push(replica);
        self
    }

    /// The failure bus for corruption and repair reports (default: one of
    /// the VFS's own, [`SqliteVfs::failures`](super::SqliteVfs::failures)).
    #[must_use]
    pub fn failure_sink(mut self, sink: FailureSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The clock for reports and for the file's settle delay (default:
    /// [`SystemClock::shared`](crate::SystemClock::shared)): a commit's
    /// settle is flushed 50 ms after it on this clock unless the next
    /// commit carries it first, so a clock that does not move leaves it to
    /// the next commit or the close.
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
    /// scrub. Zero is refused by [`register`](super::register).
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
    /// Why the page failed verification: the detector's error, with the
    /// page numbered like SQLite and [`page`](Self::page), from 1 (the
    /// library's own reports — the failure bus, a recovery manager's
    /// incidents — use [`PageId`](crate::PageId)s, which count from 0:
    /// SQLite's page `n` is `PageId(n - 1)`).
    pub damage: String,
    /// What the repair did (the replica that served it, or why none could),
    /// the page numbered from 1 like [`damage`](Self::damage).
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

/// What every database of one VFS shares.
pub(super) struct Shared {
    pub(super) config: SqliteConfig,
    pub(super) sink: FailureSink,
    pub(super) adoptions: Mutex<Vec<AdoptionReport>>,
    pub(super) files_opened: AtomicU64,
    pub(super) healed: AtomicU64,
    pub(super) unhealed: AtomicU64,
    /// Why opens failed, by file, newest last (see
    /// [`SqliteVfs::take_open_error`](super::SqliteVfs::take_open_error)).
    pub(super) open_errors: Mutex<Vec<(std::path::PathBuf, crate::Error)>>,
}

impl Shared {
    /// The shared state of a VFS configured with `config`.
    pub(super) fn new(config: SqliteConfig) -> Shared {
        let sink = config
            .sink
            .clone()
            .unwrap_or_else(|| FailureSink::new(DEFAULT_FAILURE_CAPACITY));
        Shared {
            config,
            sink,
            adoptions: Mutex::new(Vec::new()),
            files_opened: AtomicU64::new(0),
            healed: AtomicU64::new(0),
            unhealed: AtomicU64::new(0),
            open_errors: Mutex::new(Vec::new()),
        }
    }

    /// Counts and logs a heal attempt and tells the host's callback.
    pub(super) fn note_heal(&self, event: &HealEvent) {
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

    /// Counts a database file opened.
    pub(super) fn note_open(&self) {
        self.files_opened.fetch_add(1, Ordering::Relaxed);
    }
}
