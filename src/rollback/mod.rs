//! `TransactionRollbackManager`: per-transaction undo (before-images), rollback
//! in reverse order with verification, a durable undo journal so that
//! transactions in flight at a crash are rolled back at the next open, group
//! commit, and a wait-for graph that finds deadlocks.
//!
//! # Guarantee
//!
//! No transaction left half-done by a crash or a rollback survives, and
//! committed work is never undone — provided the host keeps two rules:
//!
//! 1. **Write-ahead:** before a changed page is handed to the page store,
//!    the undo for the change is durable
//!    ([`ensure_durable`](TransactionRollbackManager::ensure_durable) with the
//!    LSN [`record_undo`](TransactionRollbackManager::record_undo) returned;
//!    [`write`](TransactionRollbackManager::write) does both).
//! 2. **Strict locking:** bytes a transaction changed are changed by no one
//!    else until its `commit` or `rollback` returns, and a transaction's
//!    page changes are durable in the store before its `commit` is called
//!    (or the host redoes them from its own log).
//!
//! The on-disk format, the crash analysis and the recovery modes are in
//! [`journal`].
//!
//! # Rollback
//!
//! Before-images are applied newest first. Images of the same page are
//! applied together: one read, every image of that page in reverse LSN order,
//! one write, one re-read that must equal what was written
//! ([`Error::RollbackVerifyFailed`] otherwise). Pages are independent, so the
//! order between pages does not matter. The restored pages are synced before
//! the abort record is written, and the abort record is durable before
//! `rollback` returns.
//!
//! # Writing pages
//!
//! Rollback writes through a [`PageWriter`]: [`RawPages`] over a bare
//! [`PageStore`], or a [`CorruptionDetector`] for a protected store, so that
//! restored pages are resealed and their checksums stay current.

pub mod deadlock;
pub mod journal;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::{Clock, SystemClock};
use crate::corruption::CorruptionDetector;
use crate::error::{Error, Result};
use crate::host::PageStore;
use crate::types::{Failure, FailureKind, FailureSink, Lsn, PageId};

pub use deadlock::{choose_victim, Deadlock, VictimPolicy, WaitForGraph};
pub use journal::{JournalDamage, JournalStats, JournalStorage, RecoveryMode};

use journal::{DirStorage, Journal, JournalConfig, Record};

/// A transaction id, handed out by [`TransactionRollbackManager::begin`].
/// Ids grow with begin order and are never reused, also across restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TxnId(pub u64);

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where rollback reads and writes pages.
pub trait PageWriter: Send + Sync + fmt::Debug {
    /// The page size in bytes.
    fn page_size(&self) -> usize;

    /// How many pages there are.
    fn page_count(&self) -> u64;

    /// Reads the raw bytes of `page` (a page torn by a crash must still be
    /// readable: rollback repairs it).
    ///
    /// # Errors
    /// The store's error.
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()>;

    /// Writes `buf` as `page`. May change `buf` first (a checksum trailer);
    /// the bytes in `buf` when it returns are what a re-read must give.
    ///
    /// # Errors
    /// The store's error.
    fn write_page(&self, page: PageId, buf: &mut [u8]) -> Result<()>;

    /// Makes every write durable.
    ///
    /// # Errors
    /// The store's error.
    fn sync(&self) -> Result<()>;
}

/// A [`PageWriter`] over a bare [`PageStore`]: bytes go in as they are.
#[derive(Debug, Clone)]
pub struct RawPages(pub Arc<dyn PageStore>);

impl RawPages {
    /// Wraps `store` for the manager.
    #[must_use]
    pub fn shared(store: Arc<dyn PageStore>) -> Arc<dyn PageWriter> {
        Arc::new(RawPages(store))
    }
}

impl PageWriter for RawPages {
    fn page_size(&self) -> usize {
        self.0.page_size()
    }

    fn page_count(&self) -> u64 {
        self.0.page_count()
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.0.read_page(page, buf)
    }

    fn write_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.0.write_page(page, buf)
    }

    fn sync(&self) -> Result<()> {
        self.0.sync()
    }
}

/// A protected store: reads are raw (a page torn by a crash does not verify,
/// and rollback is what repairs it), writes are sealed so that checksums stay
/// current.
impl PageWriter for CorruptionDetector {
    fn page_size(&self) -> usize {
        self.store().page_size()
    }

    fn page_count(&self) -> u64 {
        self.store().page_count()
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.store().read_page(page, buf)
    }

    fn write_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.write_sealed(page, buf)
    }

    fn sync(&self) -> Result<()> {
        self.store().sync()
    }
}

enum JournalLocation {
    Dir(PathBuf),
    Storage(Arc<dyn JournalStorage>),
}

/// Configuration of a [`TransactionRollbackManager`].
#[must_use]
pub struct RollbackConfig {
    location: JournalLocation,
    segment_size_bytes: u64,
    buffer_bytes: usize,
    recovery_mode: RecoveryMode,
    victim_policy: VictimPolicy,
    max_active_transactions: usize,
    max_undo_bytes_per_txn: u64,
    sync_wait_timeout: Duration,
    clock: Arc<dyn Clock>,
    failure_sink: Option<FailureSink>,
}

impl fmt::Debug for RollbackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RollbackConfig")
            .field("segment_size_bytes", &self.segment_size_bytes)
            .field("buffer_bytes", &self.buffer_bytes)
            .field("recovery_mode", &self.recovery_mode)
            .field("victim_policy", &self.victim_policy)
            .field("max_active_transactions", &self.max_active_transactions)
            .field("max_undo_bytes_per_txn", &self.max_undo_bytes_per_txn)
            .field("sync_wait_timeout", &self.sync_wait_timeout)
            .finish_non_exhaustive()
    }
}

impl RollbackConfig {
    /// A journal in the directory `dir` (created if missing). Defaults:
    /// 64 MiB segments, a 1 MiB append buffer, [`RecoveryMode::TolerateTornTail`],
    /// [`VictimPolicy::Youngest`], 65 536 active transactions, 256 MiB of
    /// undo per transaction, a 30 s wait for another thread's fsync, the
    /// system clock, no failure sink.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_location(JournalLocation::Dir(dir.into()))
    }

    /// A journal on any [`JournalStorage`] (for example the crash-simulating
    /// in-memory directory of the `testing` feature).
    pub fn with_storage(storage: Arc<dyn JournalStorage>) -> Self {
        Self::with_location(JournalLocation::Storage(storage))
    }

    fn with_location(location: JournalLocation) -> Self {
        RollbackConfig {
            location,
            segment_size_bytes: 64 << 20,
            buffer_bytes: 1 << 20,
            recovery_mode: RecoveryMode::default(),
            victim_policy: VictimPolicy::default(),
            max_active_transactions: 65_536,
            max_undo_bytes_per_txn: 256 << 20,
            sync_wait_timeout: Duration::from_secs(30),
            clock: SystemClock::shared(),
            failure_sink: None,
        }
    }

    /// Size in bytes at which a new segment is started (default 64 MiB). It
    /// must hold the 40-byte header plus one undo record of a whole page
    /// (page size + 37 bytes).
    pub fn segment_size_bytes(mut self, bytes: u64) -> Self {
        self.segment_size_bytes = bytes;
        self
    }

    /// Bytes of encoded records held in memory before they are written to the
    /// segment without an fsync (default 1 MiB, at least 1).
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// What to do with damage found at open (default
    /// [`RecoveryMode::TolerateTornTail`]).
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }

    /// How a deadlock victim is chosen (default [`VictimPolicy::Youngest`]).
    pub fn victim_policy(mut self, policy: VictimPolicy) -> Self {
        self.victim_policy = policy;
        self
    }

    /// Most transactions active at once (default 65 536, at least 1).
    pub fn max_active_transactions(mut self, n: usize) -> Self {
        self.max_active_transactions = n;
        self
    }

    /// Most before-image bytes one transaction may hold (default 256 MiB, at
    /// least 1). The manager keeps them in memory until commit or rollback.
    pub fn max_undo_bytes_per_txn(mut self, bytes: u64) -> Self {
        self.max_undo_bytes_per_txn = bytes;
        self
    }

    /// How long a thread waits for another thread's journal fsync before it
    /// gives up with a retryable timed-out I/O error (default 30 s, nonzero).
    pub fn sync_wait_timeout(mut self, timeout: Duration) -> Self {
        self.sync_wait_timeout = timeout;
        self
    }

    /// The clock rollback durations are measured with (default: system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where deadlocks and crash recoveries are reported (default: nowhere).
    pub fn failure_sink(mut self, sink: FailureSink) -> Self {
        self.failure_sink = Some(sink);
        self
    }

    fn validate(&self, page_size: usize) -> Result<()> {
        let min_segment = (journal::SEGMENT_HEADER_LEN
            + journal::RECORD_HEADER_LEN
            + journal::UNDO_FIXED_LEN
            + page_size) as u64;
        if self.segment_size_bytes < min_segment {
            return Err(Error::config(
                "segment_size_bytes",
                format!(
                    "is {}; it must hold a header and one whole-page undo record: at least {min_segment} bytes for {page_size}-byte pages",
                    self.segment_size_bytes
                ),
            ));
        }
        if self.buffer_bytes == 0 {
            return Err(Error::config("buffer_bytes", "is 0; it must be at least 1"));
        }
        if self.max_active_transactions == 0 {
            return Err(Error::config(
                "max_active_transactions",
                "is 0; it must be at least 1",
            ));
        }
        if self.max_undo_bytes_per_txn == 0 {
            return Err(Error::config(
                "max_undo_bytes_per_txn",
                "is 0; it must be at least 1",
            ));
        }
        if self.sync_wait_timeout.is_zero() {
            return Err(Error::config(
                "sync_wait_timeout",
                "is zero; give the time a journal fsync may take, e.g. 30 s",
            ));
        }
        if page_size == 0 || page_size > journal::MAX_PAYLOAD_LEN - journal::UNDO_FIXED_LEN {
            return Err(Error::config(
                "page_size",
                format!(
                    "the store's page size is {page_size}; it must be between 1 and {} bytes",
                    journal::MAX_PAYLOAD_LEN - journal::UNDO_FIXED_LEN
                ),
            ));
        }
        Ok(())
    }

    /// Opens (or creates) the journal, recovers — rolls back every
    /// transaction that was in flight at the last crash, through `pages` —
    /// and returns the manager. What recovery did is in
    /// [`TransactionRollbackManager::recovery_report`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for zero sizes or timeouts; [`Error::Io`] when
    /// the journal directory cannot be created or written;
    /// [`Error::CorruptFile`] / [`Error::UnsupportedVersion`] for journal
    /// damage the [recovery mode](RecoveryMode) refuses;
    /// [`Error::UndoOutOfPage`] / [`Error::PageOutOfRange`] when the journal
    /// holds undo of an in-flight transaction that does not fit `pages` (a
    /// journal of another store; undo of finished transactions is not
    /// checked); the page store's errors during rollback.
    pub fn open(self, pages: Arc<dyn PageWriter>) -> Result<TransactionRollbackManager> {
        let page_size = pages.page_size();
        self.validate(page_size)?;
        let storage: Arc<dyn JournalStorage> = match &self.location {
            JournalLocation::Dir(d) => Arc::new(DirStorage::open(d)?),
            JournalLocation::Storage(s) => s.clone(),
        };
        storage.check_writable()?;
        let start = self.clock.now_ns();
        let scan = journal::recovery::scan(storage.as_ref(), self.recovery_mode)?;

        // Which transactions have no commit or abort record?
        let mut in_flight: HashMap<TxnId, Vec<usize>> = HashMap::new();
        let mut order: Vec<TxnId> = Vec::new();
        let (mut committed_seen, mut aborted_seen) = (0u64, 0u64);
        for (i, r) in scan.records.iter().enumerate() {
            match &r.record {
                Record::Begin { txn } => {
                    if !in_flight.contains_key(txn) {
                        order.push(*txn);
                    }
                    in_flight.entry(*txn).or_default();
                }
                Record::Undo { txn, .. } => {
                    if !in_flight.contains_key(txn) {
                        order.push(*txn);
                    }
                    in_flight.entry(*txn).or_default().push(i);
                }
                Record::Commit { txn } => {
                    committed_seen += 1;
                    in_flight.remove(txn);
                }
                Record::Abort { txn } => {
                    aborted_seen += 1;
                    in_flight.remove(txn);
                }
            }
        }
        order.retain(|t| in_flight.contains_key(t));
        let mut refs = Vec::new();
        let mut rolled_back = Vec::new();
        for txn in &order {
            let idx = &in_flight[txn];
            let mut bytes = 0u64;
            for &i in idx {
                let r = &scan.records[i];
                if let Record::Undo {
                    page,
                    offset,
                    before,
                    ..
                } = &r.record
                {
                    // Only undo that will be applied must fit the store:
                    // finished transactions' undo may predate a resize.
                    check_range(
                        *page,
                        *offset as usize,
                        before.len(),
                        page_size,
                        pages.page_count(),
                    )?;
                    bytes += before.len() as u64;
                    refs.push(UndoRef {
                        lsn: r.lsn.0,
                        page: *page,
                        offset: *offset as usize,
                        bytes: before,
                    });
                }
            }
            rolled_back.push(RecoveredTxn {
                txn: *txn,
                undo_entries: idx.len() as u64,
                undo_bytes: bytes,
            });
        }
        let page_locks = PageLocks::new();
        let applied = apply_undo(pages.as_ref(), &page_locks, refs)?;
        if applied.pages > 0 {
            pages.sync()?;
        }
        let records_read = scan.records.len() as u64;
        let segments_read = scan.segments_read;
        let damage = scan.damage.clone();
        let journal = Journal::open(
            storage,
            JournalConfig {
                segment_size: self.segment_size_bytes,
                buffer_bytes: self.buffer_bytes,
                sync_wait_timeout: self.sync_wait_timeout,
            },
            &scan,
        )?;
        drop(scan);
        for r in &rolled_back {
            journal.append(&Record::Abort { txn: r.txn })?;
        }
        journal.flush()?;
        let duration = Duration::from_nanos(self.clock.now_ns().saturating_sub(start));
        let report = RecoveryReport {
            segments_read,
            records_read,
            committed_seen,
            aborted_seen,
            rolled_back,
            undo_entries_applied: applied.entries,
            pages_written: applied.pages,
            damage,
            duration,
        };
        if !report.rolled_back.is_empty() {
            tracing::warn!(
                count = report.rolled_back.len(),
                "rolled back transactions in flight at the last crash"
            );
            if let Some(sink) = &self.failure_sink {
                sink.send(Failure::new(
                    FailureKind::InFlightAtCrash {
                        count: report.rolled_back.len() as u64,
                    },
                    format!(
                        "{} transactions were in flight at the last crash and were rolled back ({} undo entries, {} pages)",
                        report.rolled_back.len(),
                        report.undo_entries_applied,
                        report.pages_written
                    ),
                    self.clock.now_ns(),
                ));
            }
        }
        Ok(TransactionRollbackManager {
            pages,
            journal,
            state: Mutex::new(State::default()),
            page_locks,
            victim_policy: self.victim_policy,
            max_active: self.max_active_transactions,
            max_undo: self.max_undo_bytes_per_txn,
            clock: self.clock,
            sink: self.failure_sink,
            counters: Counters {
                recovered: AtomicU64::new(report.rolled_back.len() as u64),
                ..Counters::default()
            },
            report,
        })
    }
}

/// A transaction rolled back at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredTxn {
    /// The transaction.
    pub txn: TxnId,
    /// How many undo entries it had.
    pub undo_entries: u64,
    /// How many before-image bytes.
    pub undo_bytes: u64,
}

/// What the manager did at open.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments_read: u64,
    /// Valid records read.
    pub records_read: u64,
    /// Commit records seen.
    pub committed_seen: u64,
    /// Abort records seen.
    pub aborted_seen: u64,
    /// Transactions that were in flight at the crash and were rolled back,
    /// in order of their first record. Each got an abort record.
    pub rolled_back: Vec<RecoveredTxn>,
    /// Undo entries applied.
    pub undo_entries_applied: u64,
    /// Pages written (each once).
    pub pages_written: u64,
    /// Damage found in the journal and what was done (see [`RecoveryMode`]).
    pub damage: Option<JournalDamage>,
    /// How long recovery took, on the configured clock.
    pub duration: Duration,
}

/// What one rollback did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollbackOutcome {
    /// The transactions rolled back.
    pub txns: Vec<TxnId>,
    /// Undo entries applied.
    pub undo_entries: u64,
    /// Pages written (each once).
    pub pages_written: u64,
    /// How long it took, on the configured clock.
    pub duration: Duration,
}

/// Counters of a [`TransactionRollbackManager`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RollbackStats {
    /// Transactions active now.
    pub active: u64,
    /// Transactions committed since open.
    pub committed: u64,
    /// Transactions rolled back since open (by `rollback` and `rollback_all`).
    pub rolled_back: u64,
    /// Transactions rolled back at open (in flight at the last crash).
    pub recovered: u64,
    /// Undo entries recorded since open.
    pub undo_records: u64,
    /// Before-image bytes recorded since open.
    pub undo_bytes: u64,
    /// Before-image bytes held now for active transactions.
    pub undo_bytes_held: u64,
    /// Rollback operations completed (a batch counts once).
    pub rollbacks: u64,
    /// Total time spent in completed rollbacks.
    pub rollback_time_total: Duration,
    /// The longest completed rollback.
    pub rollback_time_max: Duration,
    /// Deadlocks found.
    pub deadlocks: u64,
    /// The journal's counters (fsyncs, commits per fsync, segments).
    pub journal: JournalStats,
}

#[derive(Default)]
struct Counters {
    committed: AtomicU64,
    rolled_back: AtomicU64,
    recovered: AtomicU64,
    undo_records: AtomicU64,
    undo_bytes: AtomicU64,
    rollbacks: AtomicU64,
    rollback_ns_total: AtomicU64,
    rollback_ns_max: AtomicU64,
    deadlocks: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Active,
    Committing,
    RollingBack,
    RollbackFailed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Committing => "committing",
            Status::RollingBack => "rolling back",
            Status::RollbackFailed => "rolling back (failed, may be retried)",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    lsn: u64,
    page: PageId,
    offset: u32,
    len: u32,
    at: usize,
}

#[derive(Debug)]
struct Txn {
    begin_lsn: Lsn,
    status: Status,
    /// The commit record's LSN, once it is appended (status `Committing`).
    commit_lsn: Option<Lsn>,
    entries: Vec<Entry>,
    arena: Vec<u8>,
}

/// How many finished transactions' outcomes are remembered for error messages.
const FINISHED_MEMORY: usize = 65_536;

#[derive(Default)]
struct State {
    active: HashMap<TxnId, Txn>,
    finished: HashMap<TxnId, &'static str>,
    finished_order: VecDeque<TxnId>,
    graph: WaitForGraph,
    undo_bytes_held: u64,
    /// Lowest id handed out by this manager; smaller ids are from earlier runs.
    first_id: Option<u64>,
    /// One past the highest id handed out.
    end_id: u64,
}

impl State {
    fn finish(&mut self, txn: TxnId, outcome: &'static str) {
        if let Some(t) = self.active.remove(&txn) {
            self.undo_bytes_held -= t.arena.len() as u64;
        }
        self.graph.remove_txn(txn);
        self.finished.insert(txn, outcome);
        self.finished_order.push_back(txn);
        if self.finished_order.len() > FINISHED_MEMORY {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    /// The active transaction, or the right error.
    fn get(&mut self, txn: TxnId) -> Result<&mut Txn> {
        if !self.active.contains_key(&txn) {
            return Err(self.not_active(txn));
        }
        Ok(self.active.get_mut(&txn).expect("checked above"))
    }

    fn not_active(&self, txn: TxnId) -> Error {
        if let Some(t) = self.active.get(&txn) {
            return Error::TransactionNotActive {
                txn: txn.0,
                state: t.status.as_str(),
            };
        }
        if let Some(outcome) = self.finished.get(&txn) {
            return Error::TransactionNotActive {
                txn: txn.0,
                state: outcome,
            };
        }
        if txn.0 != 0 && txn.0 < self.end_id {
            return Error::TransactionNotActive {
                txn: txn.0,
                state: "finished",
            };
        }
        Error::UnknownTransaction { txn: txn.0 }
    }

    fn active_mut(&mut self, txn: TxnId) -> Result<&mut Txn> {
        let t = self.get(txn)?;
        if t.status != Status::Active {
            return Err(Error::TransactionNotActive {
                txn: txn.0,
                state: t.status.as_str(),
            });
        }
        Ok(self.active.get_mut(&txn).expect("checked above"))
    }
}

/// Per-transaction undo with a durable journal, rollback, crash recovery,
/// group commit and deadlock detection.
///
/// ```
/// use std::sync::Arc;
/// use selfheal::{MemStore, PageId, PageStore, RawPages, RollbackConfig};
///
/// let dir = tempfile::tempdir()?;
/// let store = Arc::new(MemStore::new(4096, 16)?);
/// let mgr = RollbackConfig::new(dir.path()).open(RawPages::shared(store.clone()))?;
///
/// // A transaction that commits: its change stays.
/// let t1 = mgr.begin()?;
/// mgr.write(t1, PageId(1), 100, b"committed")?; // undo made durable, then the page written
/// mgr.commit(t1)?;
///
/// // A transaction that is rolled back: its change is undone.
/// let t2 = mgr.begin()?;
/// mgr.write(t2, PageId(1), 100, b"discarded")?;
/// let outcome = mgr.rollback(t2)?;
/// assert_eq!(outcome.undo_entries, 1);
///
/// let mut page = vec![0u8; 4096];
/// store.read_page(PageId(1), &mut page)?;
/// assert_eq!(&page[100..109], b"committed");
/// assert_eq!(mgr.stats().committed, 1);
/// assert!(matches!(mgr.commit(t2), Err(selfheal::Error::TransactionNotActive { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TransactionRollbackManager {
    pages: Arc<dyn PageWriter>,
    journal: Journal,
    state: Mutex<State>,
    page_locks: PageLocks,
    victim_policy: VictimPolicy,
    max_active: usize,
    max_undo: u64,
    clock: Arc<dyn Clock>,
    sink: Option<FailureSink>,
    counters: Counters,
    report: RecoveryReport,
}

impl fmt::Debug for TransactionRollbackManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionRollbackManager")
            .field("pages", &self.pages)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn check_range(
    page: PageId,
    offset: usize,
    len: usize,
    page_size: usize,
    page_count: u64,
) -> Result<()> {
    let end = offset as u64 + len as u64;
    if end > page_size as u64 {
        return Err(Error::UndoOutOfPage {
            page,
            offset: offset as u64,
            end,
            page_size,
        });
    }
    if page.0 >= page_count {
        return Err(Error::PageOutOfRange { page, page_count });
    }
    Ok(())
}

/// How many locks the pages are striped over.
const PAGE_LOCK_STRIPES: usize = 256;

/// Striped page locks: every read-patch-write of a page through the manager
/// holds the lock of its stripe from the read to the write, so concurrent
/// changes to different bytes of one page never overwrite each other.
struct PageLocks(Box<[Mutex<()>]>);

impl PageLocks {
    fn new() -> Self {
        PageLocks((0..PAGE_LOCK_STRIPES).map(|_| Mutex::new(())).collect())
    }

    fn lock(&self, page: PageId) -> parking_lot::MutexGuard<'_, ()> {
        // The modulus is below `PAGE_LOCK_STRIPES`, so the cast is lossless.
        self.0[(page.0 % PAGE_LOCK_STRIPES as u64) as usize].lock()
    }
}

/// One before-image to apply.
struct UndoRef<'a> {
    lsn: u64,
    page: PageId,
    offset: usize,
    bytes: &'a [u8],
}

#[derive(Default)]
struct Applied {
    entries: u64,
    pages: u64,
}

/// Applies before-images: per page, newest LSN first, one read, one write and
/// one verifying re-read per page, each under the page's lock.
fn apply_undo(
    pages: &dyn PageWriter,
    locks: &PageLocks,
    mut refs: Vec<UndoRef<'_>>,
) -> Result<Applied> {
    let mut out = Applied::default();
    if refs.is_empty() {
        return Ok(out);
    }
    refs.sort_unstable_by(|a, b| a.page.cmp(&b.page).then(b.lsn.cmp(&a.lsn)));
    let ps = pages.page_size();
    let mut buf = vec![0u8; ps];
    let mut check = vec![0u8; ps];
    for group in refs.chunk_by(|a, b| a.page == b.page) {
        let page = group[0].page;
        let _guard = locks.lock(page);
        pages.read_page(page, &mut buf)?;
        for r in group {
            buf[r.offset..r.offset + r.bytes.len()].copy_from_slice(r.bytes);
        }
        pages.write_page(page, &mut buf)?;
        pages.read_page(page, &mut check)?;
        if check != buf {
            return Err(Error::RollbackVerifyFailed { page });
        }
        out.entries += group.len() as u64;
        out.pages += 1;
    }
    Ok(out)
}

impl TransactionRollbackManager {
    /// What recovery did at open.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Begins a transaction.
    ///
    /// # Errors
    /// [`Error::RollbackLimit`] when `max_active_transactions` are active;
    /// [`Error::Poisoned`] after a journal write or fsync failed.
    pub fn begin(&self) -> Result<TxnId> {
        let mut st = self.state.lock();
        if st.active.len() >= self.max_active {
            return Err(Error::RollbackLimit {
                what: "active transactions",
                field: "max_active_transactions",
                limit: self.max_active as u64,
            });
        }
        let txn = TxnId(self.journal.next_txn()?);
        let begin_lsn = self.journal.append(&Record::Begin { txn })?;
        st.first_id.get_or_insert(txn.0);
        st.end_id = st.end_id.max(txn.0 + 1);
        st.active.insert(
            txn,
            Txn {
                begin_lsn,
                status: Status::Active,
                commit_lsn: None,
                entries: Vec::new(),
                arena: Vec::new(),
            },
        );
        Ok(txn)
    }

    /// Records that `txn` is about to change `page[offset..offset +
    /// before.len()]`, whose current contents are `before`. Returns the LSN
    /// of the undo record: pass it to [`ensure_durable`](Self::ensure_durable)
    /// before the changed page is written to the store (see the
    /// [journal docs](journal#the-write-ahead-rule)).
    ///
    /// # Errors
    /// [`Error::UnknownTransaction`] / [`Error::TransactionNotActive`];
    /// [`Error::UndoOutOfPage`] for a before-image past the page end;
    /// [`Error::PageOutOfRange`]; [`Error::InvalidArgument`] for an empty
    /// before-image; [`Error::RollbackLimit`] past `max_undo_bytes_per_txn`;
    /// [`Error::Poisoned`].
    pub fn record_undo(
        &self,
        txn: TxnId,
        page: PageId,
        offset: usize,
        before: &[u8],
    ) -> Result<Lsn> {
        if before.is_empty() {
            return Err(Error::InvalidArgument {
                what: "before",
                reason: "the before-image is empty; record the bytes the change overwrites".into(),
            });
        }
        check_range(
            page,
            offset,
            before.len(),
            self.pages.page_size(),
            self.pages.page_count(),
        )?;
        let mut st = self.state.lock();
        let max_undo = self.max_undo;
        let t = st.active_mut(txn)?;
        if t.arena.len() as u64 + before.len() as u64 > max_undo {
            return Err(Error::RollbackLimit {
                what: "undo bytes per transaction",
                field: "max_undo_bytes_per_txn",
                limit: max_undo,
            });
        }
        let lsn = self.journal.append_undo(txn, page, offset as u32, before)?;
        let at = t.arena.len();
        t.arena.extend_from_slice(before);
        t.entries.push(Entry {
            lsn: lsn.0,
            page,
            offset: offset as u32,
            len: before.len() as u32,
            at,
        });
        st.undo_bytes_held += before.len() as u64;
        drop(st);
        self.counters.undo_records.fetch_add(1, Ordering::Relaxed);
        self.counters
            .undo_bytes
            .fetch_add(before.len() as u64, Ordering::Relaxed);
        Ok(lsn)
    }

    /// Changes `page[offset..offset + data.len()]` to `data` as part of
    /// `txn`, keeping the write-ahead rule: reads the page, records the
    /// before-image, waits until it is durable, then — holding the page's
    /// lock, and only if `txn` is still active — re-reads the page, patches
    /// the range and writes it through the [`PageWriter`]. Concurrent writes
    /// to different bytes of one page all survive, and a write that loses a
    /// race with [`rollback`](Self::rollback) or
    /// [`rollback_all`](Self::rollback_all) writes nothing. The page write is
    /// not synced (the host syncs its store before it commits).
    ///
    /// # Errors
    /// As [`record_undo`](Self::record_undo) and
    /// [`ensure_durable`](Self::ensure_durable), and the store's errors;
    /// [`Error::TransactionNotActive`] also when `txn` was rolled back or
    /// started committing while the undo was being made durable (the page is
    /// then not written).
    pub fn write(&self, txn: TxnId, page: PageId, offset: usize, data: &[u8]) -> Result<Lsn> {
        let ps = self.pages.page_size();
        check_range(page, offset, data.len(), ps, self.pages.page_count())?;
        let mut buf = vec![0u8; ps];
        self.pages.read_page(page, &mut buf)?;
        let lsn = self.record_undo(txn, page, offset, &buf[offset..offset + data.len()])?;
        self.journal.ensure_durable(lsn)?;
        // Lock order: page lock, then state lock (never the reverse).
        let _guard = self.page_locks.lock(page);
        self.state.lock().active_mut(txn)?;
        self.pages.read_page(page, &mut buf)?;
        buf[offset..offset + data.len()].copy_from_slice(data);
        self.pages.write_page(page, &mut buf)?;
        Ok(lsn)
    }

    /// Waits until every journal record up to `lsn` is durable. Concurrent
    /// callers share one fsync (group commit).
    ///
    /// # Errors
    /// [`Error::Poisoned`] once a journal write or fsync has failed (sticky);
    /// [`Error::InvalidArgument`] for an LSN not handed out yet; a retryable
    /// timed-out [`Error::Io`] after `sync_wait_timeout` waiting for another
    /// thread's fsync.
    pub fn ensure_durable(&self, lsn: Lsn) -> Result<()> {
        self.journal.ensure_durable(lsn)
    }

    /// Commits `txn`: writes its commit record and waits until it is durable
    /// (sharing the fsync with concurrent commits). From then on its undo is
    /// never applied.
    ///
    /// Once the commit record is appended the transaction can no longer be
    /// rolled back. If waiting for its fsync fails with the retryable
    /// timed-out [`Error::Io`], call `commit` again: it waits for the same
    /// commit record and then finishes the commit (until then the
    /// transaction counts as active and holds back checkpoints).
    ///
    /// # Errors
    /// [`Error::UnknownTransaction`] / [`Error::TransactionNotActive`] (also
    /// for a commit after a rollback or after a completed commit); the
    /// timed-out [`Error::Io`] of [`ensure_durable`](Self::ensure_durable);
    /// [`Error::Poisoned`] — then whether the commit survives a crash is
    /// unknown until the next open.
    pub fn commit(&self, txn: TxnId) -> Result<Lsn> {
        let lsn = {
            let mut st = self.state.lock();
            let (status, pending) = {
                let t = st.get(txn)?;
                (t.status, t.commit_lsn)
            };
            match (status, pending) {
                (Status::Committing, Some(lsn)) => lsn,
                _ => {
                    let t = st.active_mut(txn)?;
                    let lsn = self.journal.append(&Record::Commit { txn })?;
                    t.status = Status::Committing;
                    t.commit_lsn = Some(lsn);
                    lsn
                }
            }
        };
        self.journal.ensure_durable(lsn)?;
        let mut st = self.state.lock();
        // A concurrent retry of the same commit may have finished it already.
        if st
            .active
            .get(&txn)
            .is_some_and(|t| t.status == Status::Committing)
        {
            st.finish(txn, "committed");
            drop(st);
            self.counters.committed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(lsn)
    }

    /// Rolls `txn` back: applies its before-images newest first (one read and
    /// write per page, each verified by a re-read), syncs the pages, and
    /// makes an abort record durable.
    ///
    /// # Errors
    /// [`Error::UnknownTransaction`] / [`Error::TransactionNotActive`]; the
    /// store's errors or [`Error::RollbackVerifyFailed`] — the transaction then
    /// stays in flight and `rollback` may be called again (applying the
    /// images again is harmless), or recovery finishes it at the next open;
    /// [`Error::Poisoned`].
    pub fn rollback(&self, txn: TxnId) -> Result<RollbackOutcome> {
        self.rollback_many(Some(txn))
    }

    /// Rolls back every active transaction (and every one whose rollback
    /// failed before) in one pass: before-images of all of them in reverse
    /// LSN order, one write per page. Transactions in the middle of a commit
    /// are left alone.
    ///
    /// # Errors
    /// As [`rollback`](Self::rollback); on error every transaction of the
    /// batch stays in flight.
    pub fn rollback_all(&self) -> Result<RollbackOutcome> {
        self.rollback_many(None)
    }

    fn rollback_many(&self, only: Option<TxnId>) -> Result<RollbackOutcome> {
        let start = self.clock.now_ns();
        let mut taken: Vec<(TxnId, Vec<Entry>, Vec<u8>)> = Vec::new();
        {
            let mut st = self.state.lock();
            let ids: Vec<TxnId> = match only {
                Some(txn) => {
                    let t = st.get(txn)?;
                    if !matches!(t.status, Status::Active | Status::RollbackFailed) {
                        return Err(Error::TransactionNotActive {
                            txn: txn.0,
                            state: t.status.as_str(),
                        });
                    }
                    vec![txn]
                }
                None => {
                    let mut v: Vec<TxnId> = st
                        .active
                        .iter()
                        .filter(|(_, t)| {
                            matches!(t.status, Status::Active | Status::RollbackFailed)
                        })
                        .map(|(id, _)| *id)
                        .collect();
                    v.sort_unstable();
                    v
                }
            };
            for id in ids {
                let t = st.active.get_mut(&id).expect("listed above");
                t.status = Status::RollingBack;
                taken.push((
                    id,
                    std::mem::take(&mut t.entries),
                    std::mem::take(&mut t.arena),
                ));
            }
        }
        let result = self.undo_and_abort(&taken);
        let mut st = self.state.lock();
        match result {
            Ok(applied) => {
                for (id, _, arena) in &taken {
                    st.undo_bytes_held -= arena.len() as u64;
                    st.active.remove(id);
                    st.finish(*id, "rolled back");
                }
                drop(st);
                let ns = self.clock.now_ns().saturating_sub(start);
                self.counters
                    .rolled_back
                    .fetch_add(taken.len() as u64, Ordering::Relaxed);
                self.counters.rollbacks.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .rollback_ns_total
                    .fetch_add(ns, Ordering::Relaxed);
                self.counters
                    .rollback_ns_max
                    .fetch_max(ns, Ordering::Relaxed);
                Ok(RollbackOutcome {
                    txns: taken.into_iter().map(|(id, _, _)| id).collect(),
                    undo_entries: applied.entries,
                    pages_written: applied.pages,
                    duration: Duration::from_nanos(ns),
                })
            }
            Err(e) => {
                tracing::error!(error = %e, "rollback failed; the transactions stay in flight");
                for (id, entries, arena) in taken {
                    if let Some(t) = st.active.get_mut(&id) {
                        t.entries = entries;
                        t.arena = arena;
                        t.status = Status::RollbackFailed;
                    }
                }
                Err(e)
            }
        }
    }

    fn undo_and_abort(&self, taken: &[(TxnId, Vec<Entry>, Vec<u8>)]) -> Result<Applied> {
        let refs: Vec<UndoRef<'_>> = taken
            .iter()
            .flat_map(|(_, entries, arena)| {
                entries.iter().map(move |e| UndoRef {
                    lsn: e.lsn,
                    page: e.page,
                    offset: e.offset as usize,
                    bytes: &arena[e.at..e.at + e.len as usize],
                })
            })
            .collect();
        let applied = apply_undo(self.pages.as_ref(), &self.page_locks, refs)?;
        if applied.pages > 0 {
            self.pages.sync()?;
        }
        let mut last = None;
        for (id, _, _) in taken {
            last = Some(self.journal.append(&Record::Abort { txn: *id })?);
        }
        if let Some(lsn) = last {
            self.journal.ensure_durable(lsn)?;
        }
        Ok(applied)
    }

    /// The host reports that every page change whose undo LSN is at most
    /// `lsn` is durable in its store. Segments holding only records older
    /// than that, and older than the first record of every active
    /// transaction, are removed. Returns the removed segment numbers.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an LSN not handed out yet;
    /// [`Error::Poisoned`]; [`Error::Io`] when a removal fails.
    pub fn checkpoint(&self, lsn: Lsn) -> Result<Vec<u64>> {
        let next = self.journal.stats().next_lsn;
        if lsn >= next {
            return Err(Error::InvalidArgument {
                what: "lsn",
                reason: format!(
                    "checkpoint LSN {lsn} has not been handed out yet (next is {next})"
                ),
            });
        }
        let oldest_active = self
            .state
            .lock()
            .active
            .values()
            .map(|t| t.begin_lsn.0)
            .min()
            .unwrap_or(u64::MAX);
        let keep_from = Lsn(lsn.0.saturating_add(1).min(oldest_active));
        self.journal.truncate_before(keep_from)
    }

    /// Reports that `waiter` waits for `holder` (a lock). When the wait
    /// closes a cycle, returns the deadlock and its victim (chosen by the
    /// configured [`VictimPolicy`]); the host rolls the victim back, which
    /// also removes its waits.
    ///
    /// # Errors
    /// [`Error::UnknownTransaction`] / [`Error::TransactionNotActive`] for a
    /// transaction that is not active; [`Error::InvalidArgument`] for a
    /// transaction waiting for itself.
    pub fn add_wait(&self, waiter: TxnId, holder: TxnId) -> Result<Option<Deadlock>> {
        if waiter == holder {
            return Err(Error::InvalidArgument {
                what: "holder",
                reason: format!("transaction {waiter} cannot wait for itself"),
            });
        }
        let mut st = self.state.lock();
        st.get(waiter)?;
        st.get(holder)?;
        let Some(cycle) = st.graph.add_wait(waiter, holder) else {
            return Ok(None);
        };
        let victim = choose_victim(&cycle, self.victim_policy, |t| {
            st.active.get(&t).map_or(0, |x| x.arena.len() as u64)
        })
        .expect("a cycle has members");
        drop(st);
        self.counters.deadlocks.fetch_add(1, Ordering::Relaxed);
        let evidence = format!(
            "wait-for cycle {}; victim {victim} ({:?})",
            cycle
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" -> "),
            self.victim_policy
        );
        tracing::warn!(%evidence, "deadlock");
        if let Some(sink) = &self.sink {
            sink.send(Failure::new(
                FailureKind::Deadlock { victim: victim.0 },
                evidence,
                self.clock.now_ns(),
            ));
        }
        Ok(Some(Deadlock { cycle, victim }))
    }

    /// Reports that a wait ended. Returns whether it was known.
    pub fn remove_wait(&self, waiter: TxnId, holder: TxnId) -> bool {
        self.state.lock().graph.remove_wait(waiter, holder)
    }

    /// The active transactions (including those committing or rolling back), sorted.
    #[must_use]
    pub fn active_transactions(&self) -> Vec<TxnId> {
        let mut v: Vec<TxnId> = self.state.lock().active.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Every journal record up to this LSN is durable.
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        self.journal.durable_lsn()
    }

    /// Current counters.
    #[must_use]
    pub fn stats(&self) -> RollbackStats {
        let c = &self.counters;
        let (active, held) = {
            let st = self.state.lock();
            (st.active.len() as u64, st.undo_bytes_held)
        };
        RollbackStats {
            active,
            committed: c.committed.load(Ordering::Relaxed),
            rolled_back: c.rolled_back.load(Ordering::Relaxed),
            recovered: c.recovered.load(Ordering::Relaxed),
            undo_records: c.undo_records.load(Ordering::Relaxed),
            undo_bytes: c.undo_bytes.load(Ordering::Relaxed),
            undo_bytes_held: held,
            rollbacks: c.rollbacks.load(Ordering::Relaxed),
            rollback_time_total: Duration::from_nanos(c.rollback_ns_total.load(Ordering::Relaxed)),
            rollback_time_max: Duration::from_nanos(c.rollback_ns_max.load(Ordering::Relaxed)),
            deadlocks: c.deadlocks.load(Ordering::Relaxed),
            journal: self.journal.stats(),
        }
    }

    /// Makes every journal record durable and closes the manager. Active
    /// transactions are left in flight: the next open rolls them back.
    ///
    /// # Errors
    /// [`Error::Poisoned`] when the journal cannot be made durable.
    pub fn close(self) -> Result<()> {
        self.journal.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    /// Counts page reads and writes.
    #[derive(Debug)]
    struct Counting {
        inner: RawPages,
        reads: AtomicU64,
        writes: AtomicU64,
    }

    impl PageWriter for Counting {
        fn page_size(&self) -> usize {
            self.inner.page_size()
        }
        fn page_count(&self) -> u64 {
            self.inner.page_count()
        }
        fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.read_page(page, buf)
        }
        fn write_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.inner.write_page(page, buf)
        }
        fn sync(&self) -> Result<()> {
            self.inner.sync()
        }
    }

    #[test]
    fn images_of_one_page_are_applied_with_one_write_newest_first() {
        let store = Arc::new(MemStore::new(64, 4).unwrap());
        let pages = Counting {
            inner: RawPages(store.clone()),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        };
        // Interleaved pages; on page 1 the oldest image (LSN 1) must win
        // over the newer one (LSN 5) that covers the same bytes.
        let refs = vec![
            UndoRef {
                lsn: 1,
                page: PageId(1),
                offset: 0,
                bytes: b"oldest",
            },
            UndoRef {
                lsn: 2,
                page: PageId(3),
                offset: 8,
                bytes: b"three",
            },
            UndoRef {
                lsn: 3,
                page: PageId(1),
                offset: 20,
                bytes: b"x",
            },
            UndoRef {
                lsn: 4,
                page: PageId(3),
                offset: 0,
                bytes: b"3",
            },
            UndoRef {
                lsn: 5,
                page: PageId(1),
                offset: 0,
                bytes: b"NEWER!",
            },
        ];
        let applied = apply_undo(&pages, &PageLocks::new(), refs).unwrap();
        assert_eq!((applied.entries, applied.pages), (5, 2));
        assert_eq!(pages.writes.load(Ordering::Relaxed), 2);
        assert_eq!(
            pages.reads.load(Ordering::Relaxed),
            4,
            "one read and one verifying re-read per page"
        );
        let mut buf = vec![0u8; 64];
        store.read_page(PageId(1), &mut buf).unwrap();
        assert_eq!(&buf[..6], b"oldest");
        assert_eq!(buf[20], b'x');
        store.read_page(PageId(3), &mut buf).unwrap();
        assert_eq!(&buf[..1], b"3");
        assert_eq!(&buf[8..13], b"three");
    }

    #[test]
    fn finished_outcomes_are_remembered_within_a_bound() {
        let mut st = State {
            end_id: FINISHED_MEMORY as u64 + 10,
            ..State::default()
        };
        for i in 1..=FINISHED_MEMORY as u64 + 5 {
            st.finish(TxnId(i), "committed");
        }
        assert_eq!(st.finished.len(), FINISHED_MEMORY);
        assert!(matches!(
            st.not_active(TxnId(1)),
            Error::TransactionNotActive {
                state: "finished",
                ..
            }
        ));
        assert!(matches!(
            st.not_active(TxnId(FINISHED_MEMORY as u64)),
            Error::TransactionNotActive {
                state: "committed",
                ..
            }
        ));
        assert!(matches!(
            st.not_active(TxnId(u64::MAX)),
            Error::UnknownTransaction { .. }
        ));
    }
}
