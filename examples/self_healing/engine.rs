//! A small page engine for the `self_healing` example: a table of
//! key → value slots in a file, a synchronous mirror of it (the replica),
//! transactions with key locks through the undo journal, a checkpointer
//! thread that sends heartbeats, and the host actions the manager may call.
//!
//! Everything here is what a host writes against the public API: a
//! `PageStore` (the mirror), a page-LSN reader, `HostActions`, a health
//! probe, and the manager's builder. The fault hooks it exposes (the
//! primary's `FaultyStore`, the replica's `FaultyReplica`) come from
//! `selfheal::testing`, as a host's own demo or test would use them.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use selfheal::prelude::*;
use selfheal::testing::{FaultyReplica, FaultyStore};

/// Page size of the table file.
pub const PAGE_SIZE: usize = 4096;
/// Pages of the table.
pub const PAGES: u64 = 64;
/// Key slots per page: `[key u64][value u64][lsn u64]`, little-endian.
pub const SLOTS: u64 = 64;
const SLOT_BYTES: usize = 24;
/// Keys of the table: key `k` lives in page `k / SLOTS`, slot `k % SLOTS`.
pub const KEYS: u64 = PAGES * SLOTS;
/// Pages the workload writes.
pub const HOT_PAGES: std::ops::Range<u64> = 0..48;
/// Pages the deadlock scenario writes.
pub const LOCK_PAGES: std::ops::Range<u64> = 48..56;
/// Pages only the fault injector writes (found by the scrubber, or restored
/// from a snapshot).
pub const COLD_PAGES: std::ops::Range<u64> = 56..64;
/// The worker that sends heartbeats.
pub const CHECKPOINTER: &str = "checkpointer";
/// The health metric of the simulated volume.
pub const DISK_METRIC: &str = "disk_used_pct";
/// How much room the simulated volume has beyond what the engine's files
/// use when it is opened.
const VOLUME_HEADROOM_BYTES: u64 = 1 << 30;

/// The page that holds `key`, and the slot's byte offset in it.
pub fn place(key: u64) -> (PageId, usize) {
    (PageId(key / SLOTS), (key % SLOTS) as usize * SLOT_BYTES)
}

/// The newest LSN of any slot of a page: the page's LSN, which the
/// detector's lost-write check compares with the last write. The bytes are
/// untrusted: every length is checked by `chunks_exact`.
fn page_lsn(bytes: &[u8]) -> Option<Lsn> {
    let max = bytes
        .chunks_exact(SLOT_BYTES)
        .take(SLOTS as usize)
        .map(|s| u64::from_le_bytes(s[16..24].try_into().expect("8 bytes")))
        .max()?;
    (max > 0).then_some(Lsn(max))
}

/// Every page write of the engine goes to the primary file and then to the
/// replica file, so the replica holds every page the primary should hold
/// (a synchronous mirror). Faults are injected on the primary's path only.
#[derive(Debug)]
pub struct Mirror {
    primary: Arc<FaultyStore>,
    replica: Arc<FileStore>,
    /// Writes issued from the manager's own threads (`selfheal-…`): Observe
    /// mode must issue none.
    manager_writes: AtomicU64,
}

impl Mirror {
    /// Writes the manager's threads issued so far.
    pub fn manager_writes(&self) -> u64 {
        self.manager_writes.load(Ordering::SeqCst)
    }
}

impl PageStore for Mirror {
    fn page_size(&self) -> usize {
        self.primary.page_size()
    }
    fn page_count(&self) -> u64 {
        self.primary.page_count()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.primary.read_page(page, buf)
    }
    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        if std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("selfheal-"))
        {
            self.manager_writes.fetch_add(1, Ordering::SeqCst);
        }
        self.primary.write_page(page, data)?;
        self.replica.write_page(page, data)
    }
    fn sync(&self) -> Result<()> {
        self.primary.sync()?;
        self.replica.sync()
    }
}

/// Why a transaction did not commit.
#[derive(Debug)]
pub enum TxnError {
    /// The manager rolled it back (a deadlock victim).
    RolledBack,
    /// A lock wait timed out (the engine's own lock-wait timeout).
    LockTimeout,
    /// A library error (a page that fails verification, say).
    Lib(Error),
}

impl fmt::Display for TxnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxnError::RolledBack => f.write_str("rolled back by the recovery manager"),
            TxnError::LockTimeout => f.write_str("lock wait timed out"),
            TxnError::Lib(e) => write!(f, "{e}"),
        }
    }
}

impl From<Error> for TxnError {
    fn from(e: Error) -> Self {
        TxnError::Lib(e)
    }
}

/// What a checkpointer thread needs: its heartbeat, the journal to trim,
/// the store to sync.
type CheckpointerParts = (
    HeartbeatHandle,
    Arc<TransactionRollbackManager>,
    Arc<Mirror>,
);

/// The checkpointer: a worker that beats every 20 ms and trims the undo
/// journal every half second. `hang` makes it stop beating (stuck); a
/// restart abandons the stuck thread and starts a fresh one.
#[derive(Default)]
struct Checkpointer {
    generation: AtomicU64,
    hang: AtomicBool,
    stop: AtomicBool,
    parts: Mutex<Option<CheckpointerParts>>,
}

impl Checkpointer {
    fn spawn(self: &Arc<Self>) -> Result<()> {
        let Some((beat, rb, store)) = self.parts.lock().clone() else {
            return Err(Error::InvalidArgument {
                what: "component",
                reason: "the checkpointer cannot be restarted before the engine started".into(),
            });
        };
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.hang.store(false, Ordering::SeqCst);
        beat.beat();
        let me = self.clone();
        std::thread::Builder::new()
            .name(format!("engine-checkpointer-{generation}"))
            .spawn(move || {
                let mut last_trim = Instant::now();
                while me.generation.load(Ordering::SeqCst) == generation
                    && !me.stop.load(Ordering::SeqCst)
                {
                    std::thread::sleep(Duration::from_millis(20));
                    if me.hang.load(Ordering::SeqCst) {
                        continue; // stuck: no beats, no work
                    }
                    beat.beat();
                    if last_trim.elapsed() >= Duration::from_millis(500) {
                        last_trim = Instant::now();
                        let lsn = rb.durable_lsn();
                        if store.sync().is_ok() {
                            let _ = rb.checkpoint(lsn);
                        }
                    }
                }
            })
            .map_err(|e| Error::Io {
                context: "spawning the checkpointer".into(),
                source: e,
            })?;
        Ok(())
    }
}

/// What only the engine can do, for the manager's remedies.
struct Host {
    dir: PathBuf,
    checkpointer: Arc<Checkpointer>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host").field("dir", &self.dir).finish()
    }
}

impl HostActions for Host {
    fn supports(&self, action: HostAction) -> bool {
        matches!(
            action,
            HostAction::RestartComponent | HostAction::FreeDiskSpace
        )
    }

    fn restart_component(&self, component: &str) -> Result<()> {
        if component != CHECKPOINTER {
            return Err(Error::InvalidArgument {
                what: "component",
                reason: format!("the engine has no component {component:?}"),
            });
        }
        self.checkpointer.spawn()
    }

    /// Removes the engine's spill files (temporary sort runs).
    fn free_disk_space(&self, _bytes_wanted: u64) -> Result<u64> {
        let mut freed = 0;
        for path in spill_files(&self.dir) {
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            std::fs::remove_file(&path).map_err(|e| Error::Io {
                context: format!("removing spill file {}", path.display()),
                source: e,
            })?;
            freed += len;
        }
        Ok(freed)
    }
}

/// The engine's spill files in `dir`.
pub fn spill_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "spill"))
        .collect()
}

/// Bytes of the regular files under `dir` (their lengths).
fn used_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => used_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// The engine: its files, its transactions, and the recovery manager that
/// watches over them.
pub struct Engine {
    /// The recovery manager.
    pub manager: AutoRecoveryManager,
    /// The primary file's fault hooks.
    pub primary: Arc<FaultyStore>,
    /// The replica as repairs see it, with its fault hooks.
    pub replica: Arc<FaultyReplica>,
    /// The mirror every page write goes through.
    pub mirror: Arc<Mirror>,
    /// The engine's directory (the simulated volume).
    pub dir: PathBuf,
    /// The simulated volume's size.
    pub volume_bytes: u64,
    rb: OnceLock<Arc<TransactionRollbackManager>>,
    gate: Arc<WriteGate>,
    lsn: Arc<AtomicU64>,
    locks: Mutex<HashMap<u64, TxnId>>,
    unlocked: Condvar,
    checkpointer: Arc<Checkpointer>,
}

impl Engine {
    /// Opens (or creates and formats) the engine in `dir`, with its recovery
    /// manager in `mode` built but not started.
    pub fn open(dir: &Path, mode: Mode) -> Result<Engine> {
        let data = dir.join("table.pages");
        let fresh = !data.exists();
        let (primary_file, replica_file) = if fresh {
            (
                FileStore::create(&data, PAGE_SIZE, PAGES)?,
                FileStore::create(dir.join("replica.pages"), PAGE_SIZE, PAGES)?,
            )
        } else {
            (
                FileStore::open(&data, PAGE_SIZE)?,
                FileStore::open(dir.join("replica.pages"), PAGE_SIZE)?,
            )
        };
        let primary = Arc::new(FaultyStore::new(Arc::new(primary_file)));
        let replica_file = Arc::new(replica_file);
        let mirror = Arc::new(Mirror {
            primary: primary.clone(),
            replica: replica_file.clone(),
            manager_writes: AtomicU64::new(0),
        });
        let replica = Arc::new(FaultyReplica::new(Arc::new(StoreReplica::new(
            "replica",
            replica_file,
        ))));
        // Carry on numbering after the newest LSN on disk.
        let mut newest = 0;
        let mut buf = vec![0u8; PAGE_SIZE];
        for p in 0..PAGES {
            if mirror.read_page(PageId(p), &mut buf).is_ok() {
                newest = newest.max(page_lsn(&buf).map_or(0, |l| l.0));
            }
        }
        let lsn = Arc::new(AtomicU64::new(newest));
        let gate = Arc::new(WriteGate::new());
        let checkpointer = Arc::new(Checkpointer::default());
        let volume_bytes = used_bytes(dir) + VOLUME_HEADROOM_BYTES;
        let probe_dir = dir.to_path_buf();
        let lsn_now = lsn.clone();
        // Periodic snapshots are incremental on the pages noted dirty: every
        // write through the detector (the engine's, and the rollbacks and
        // repairs the library makes) is noted.
        let snapshots: Arc<OnceLock<Arc<StateSnapshotManager>>> = Arc::default();
        let notes = snapshots.clone();
        let config = RecoveryConfig::new(mirror.clone(), dir.join("selfheal"))
            .detector(
                CorruptionConfig::new(ChecksumPlacement::Trailer)
                    .page_lsn(Arc::new(page_lsn))
                    .on_write(Arc::new(move |page| {
                        if let Some(s) = notes.get() {
                            s.note_dirty(page);
                        }
                    })),
            )
            .replica(replica.clone())
            .host_actions(Arc::new(Host {
                dir: dir.to_path_buf(),
                checkpointer: checkpointer.clone(),
            }))
            .scrub(ScrubConfig::new().pages_per_s(128))
            // The volume is simulated: its size is what the engine's files
            // used at open plus 1 GiB, and what is used is the sum of the
            // files' lengths under the directory (spill files are sparse).
            .health(
                HealthConfig::new()
                    .sample_interval(Duration::from_millis(100))
                    // The disk's jumps are judged by its thresholds; an
                    // anomaly alarm would page a second time for them.
                    .anomaly_z(1e6)
                    // Trends that cross the critical line within 30 s.
                    .prediction_horizon(Duration::from_secs(30))
                    .probe_fn(DISK_METRIC, Thresholds::new(80.0, 90.0), move || {
                        Ok(100.0 * used_bytes(&probe_dir) as f64 / volume_bytes as f64)
                    }),
            )
            .snapshots(SnapshotConfig::new(dir.join("snapshots"), PAGE_SIZE))
            .periodic_snapshots(
                PeriodicConfig::new(Duration::from_secs(3)),
                gate.clone(),
                Arc::new(move || Lsn(lsn_now.load(Ordering::SeqCst))),
            )
            .crash(
                CrashConfig::new().heartbeat(
                    HeartbeatConfig::new()
                        .tick_interval(Duration::from_millis(20))
                        .timeout(Duration::from_secs(1))
                        .acceptable_pause(Duration::from_millis(200))
                        .min_std_dev(Duration::from_millis(20))
                        .first_heartbeat_estimate(Duration::from_millis(40)),
                ),
            )
            .healer(
                HealerConfig::new()
                    // The checkpointer beats every 20 ms: late beats mean it
                    // is stuck, not slow. Restart it then, without waiting
                    // for the dead verdict.
                    .rule(
                        Rule::new("engine.checkpointer_stalled", Problem::COMPONENT_DEAD)
                            .kind("component_suspect")
                            .target(CHECKPOINTER)?,
                    )
                    .cooldown(Duration::from_secs(2))
                    // The disk metric drifts as the journal and the audit log
                    // grow: a remedy counts as making health worse only when
                    // the score drops by more than a point.
                    .health_tolerance(1.0),
            )
            .mode(mode)
            .seed(9);
        let manager = config.build()?;
        let _ = snapshots.set(
            manager
                .snapshots()
                .expect("configured with snapshots")
                .clone(),
        );
        if fresh {
            // Every page is written once through the detector before use:
            // an all-zero page would read as a lost one.
            for p in 0..PAGES {
                manager
                    .detector()
                    .write_sealed(PageId(p), &mut vec![0u8; PAGE_SIZE])?;
            }
            mirror.sync()?;
        }
        let engine = Engine {
            manager,
            primary,
            replica,
            mirror,
            dir: dir.to_path_buf(),
            volume_bytes,
            rb: OnceLock::new(),
            gate,
            lsn,
            locks: Mutex::new(HashMap::new()),
            unlocked: Condvar::new(),
            checkpointer,
        };
        Ok(engine)
    }

    /// Starts the recovery manager (startup recovery first) and the
    /// checkpointer.
    pub fn start(&self) -> Result<StartupReport> {
        let report = self.manager.start()?;
        let rb = self
            .manager
            .rollback_manager()
            .expect("a started manager has a rollback manager");
        let crash = self
            .manager
            .crash_detector()
            .expect("a started manager has a crash detector");
        *self.checkpointer.parts.lock() = Some((
            crash.register(CHECKPOINTER)?,
            rb.clone(),
            self.mirror.clone(),
        ));
        let _ = self.rb.set(rb);
        self.checkpointer.spawn()?;
        Ok(report)
    }

    fn rb(&self) -> &TransactionRollbackManager {
        self.rb.get().expect("the engine was started")
    }

    /// The value of `key` (`None`: never written), read verified.
    pub fn get(&self, key: u64) -> Result<Option<u64>> {
        let (page, off) = place(key);
        let mut buf = vec![0u8; PAGE_SIZE];
        self.manager.detector().read_verified(page, &mut buf)?;
        let slot = &buf[off..off + SLOT_BYTES];
        let word = |i: usize| u64::from_le_bytes(slot[i..i + 8].try_into().expect("8 bytes"));
        if word(16) == 0 {
            return Ok(None);
        }
        if word(0) != key {
            return Err(Error::InvalidArgument {
                what: "key",
                reason: format!("slot of key {key} holds key {}", word(0)),
            });
        }
        Ok(Some(word(8)))
    }

    /// Begins a transaction.
    pub fn begin(&self) -> Result<TxnId> {
        self.rb().begin()
    }

    /// Locks `key` for `txn` (waiting at most `wait`; a wait is reported to
    /// the deadlock detector) and writes `value` to it through the undo
    /// journal.
    pub fn put(&self, txn: TxnId, key: u64, value: u64, wait: Duration) -> Result<(), TxnError> {
        self.lock(txn, key, wait)?;
        let (page, off) = place(key);
        let _ticket = self.gate.write();
        let lsn = self.lsn.fetch_add(1, Ordering::SeqCst) + 1;
        let mut slot = [0u8; SLOT_BYTES];
        slot[..8].copy_from_slice(&key.to_le_bytes());
        slot[8..16].copy_from_slice(&value.to_le_bytes());
        slot[16..].copy_from_slice(&lsn.to_le_bytes());
        match self.rb().write(txn, page, off, &slot) {
            Ok(_) => Ok(()),
            Err(Error::TransactionNotActive { .. }) => Err(TxnError::RolledBack),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes the pages durable, then the commit; releases the locks.
    pub fn commit(&self, txn: TxnId) -> Result<(), TxnError> {
        let r = self.mirror.sync().and_then(|()| self.rb().commit(txn));
        self.unlock_all(txn);
        match r {
            Ok(_) => Ok(()),
            Err(Error::TransactionNotActive { .. }) => Err(TxnError::RolledBack),
            Err(e) => Err(e.into()),
        }
    }

    /// Rolls `txn` back (unless the manager did already) and releases its
    /// locks. A rollback blocked by a bad page is finished by the manager.
    pub fn abort(&self, txn: TxnId) {
        if self.rb().active_transactions().contains(&txn) {
            let _ = self.rb().rollback(txn);
        }
        self.unlock_all(txn);
    }

    /// Writes `(key, value)` pairs in one transaction and commits it.
    pub fn update(&self, writes: &[(u64, u64)]) -> Result<TxnId, TxnError> {
        let txn = self.begin()?;
        for &(k, v) in writes {
            if let Err(e) = self.put(txn, k, v, Duration::from_secs(3)) {
                self.abort(txn);
                return Err(e);
            }
        }
        match self.commit(txn) {
            Ok(()) => Ok(txn),
            Err(e) => {
                self.abort(txn);
                Err(e)
            }
        }
    }

    fn lock(&self, txn: TxnId, key: u64, wait: Duration) -> Result<(), TxnError> {
        let deadline = Instant::now() + wait;
        let mut locks = self.locks.lock();
        let mut waiting_for = None;
        loop {
            match locks.get(&key).copied() {
                None => {
                    locks.insert(key, txn);
                    if let Some(holder) = waiting_for {
                        self.rb().remove_wait(txn, holder);
                    }
                    return Ok(());
                }
                Some(holder) if holder == txn => return Ok(()),
                Some(holder) => {
                    if waiting_for != Some(holder) {
                        // A cycle is reported to the manager on the failure
                        // bus; its remedy rolls the victim back.
                        self.rb().add_wait(txn, holder)?;
                        waiting_for = Some(holder);
                    }
                }
            }
            if !self.rb().active_transactions().contains(&txn) {
                return Err(TxnError::RolledBack);
            }
            if Instant::now() >= deadline {
                if let Some(holder) = waiting_for {
                    self.rb().remove_wait(txn, holder);
                }
                return Err(TxnError::LockTimeout);
            }
            self.unlocked.wait_for(&mut locks, Duration::from_millis(5));
        }
    }

    fn unlock_all(&self, txn: TxnId) {
        self.locks.lock().retain(|_, t| *t != txn);
        self.unlocked.notify_all();
    }

    /// Makes the checkpointer stop beating (it hangs).
    pub fn hang_checkpointer(&self) {
        self.checkpointer.hang.store(true, Ordering::SeqCst);
    }

    /// Whether the checkpointer hangs now.
    pub fn checkpointer_hangs(&self) -> bool {
        self.checkpointer.hang.load(Ordering::SeqCst)
    }

    /// The newest LSN handed out.
    pub fn lsn(&self) -> u64 {
        self.lsn.load(Ordering::SeqCst)
    }

    /// Stops the checkpointer and the manager (a clean stop).
    pub fn close(self) -> Result<()> {
        self.checkpointer.stop.store(true, Ordering::SeqCst);
        *self.checkpointer.parts.lock() = None;
        // The checkpointer threads see `stop` within one 20 ms round and
        // drop their handle on the rollback manager.
        std::thread::sleep(Duration::from_millis(60));
        drop(self.rb);
        self.manager.stop()
    }
}
