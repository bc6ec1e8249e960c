//! Crash simulation: a page store and a journal directory that each keep a
//! live image and a durable image, a shared switch that "kills the process"
//! after a chosen number of writes, and a stamp workload for tests that kill
//! a real child process.
//!
//! [`CrashStore`] works like redb's `CrashBackend`: `write_page` changes the
//! live image, `sync` copies live to durable, and [`CrashStore::crash`] gives
//! the image a restarted process would see — the durable one, optionally
//! with some unsynced page writes applied whole or torn.
//! [`CrashDir`] does the same for journal segments: appended bytes are
//! durable once the segment is synced, and [`CrashDir::crash`] keeps the
//! durable bytes plus any chosen prefix of the unsynced ones, so that a test
//! can cut the journal at every byte; [`CrashDir::crash_keeping`] keeps any
//! chosen subset of the unsynced bytes (a power loss writes dirty blocks
//! back in any order, leaving holes before bytes that survived). The state
//! file is replaced atomically and is durable when `write_state` returns.
//!
//! [`CrashDir`] also fails on purpose, as a full or failing disk does:
//! [`CrashDir::fail_appends`] makes appends fail with an errno after a short
//! write, [`CrashDir::set_no_space`] fails every append and create with
//! `ENOSPC` until space returns, and [`CrashDir::fail_syncs_with`] fails
//! fsyncs — optionally the way Linux can: the unsynced bytes stay readable
//! but the failed writeback dropped them, and a later fsync that succeeds
//! does not bring them back (a crash then shows them as zeros).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::host::{check_page_args, PageStore};
use crate::rollback::journal::{segment_file_name, JournalStorage, STATE_FILE_NAME};
use crate::rollback::{RawPages, RollbackConfig, TransactionRollbackManager, TxnId};
use crate::store::FileStore;
use crate::types::PageId;

fn dead(what: &str) -> Error {
    Error::io(
        format!("{what} (simulated crash: the process is dead)"),
        io::Error::from_raw_os_error(5),
    )
}

/// Kills the simulated process after a number of mutating operations: that
/// operation and every later one fail with `EIO`, as if the process had died
/// just before it. Share one switch between a [`CrashStore`] and a
/// [`CrashDir`] to crash at any step of a mixed sequence.
#[derive(Debug, Default)]
pub struct CrashSwitch {
    state: Mutex<SwitchState>,
}

#[derive(Debug, Default)]
struct SwitchState {
    ops: u64,
    fire_at: Option<u64>,
    fired: bool,
}

impl CrashSwitch {
    /// A disarmed switch.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Arms it: operation number `op` (counting from 0 over the switch's
    /// life) and every later one fail.
    pub fn arm_at(&self, op: u64) {
        let mut s = self.state.lock();
        s.fire_at = Some(op);
        s.fired = false;
    }

    /// Disarms it (a restarted process).
    pub fn disarm(&self) {
        let mut s = self.state.lock();
        s.fire_at = None;
        s.fired = false;
    }

    /// Mutating operations seen so far.
    #[must_use]
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Whether it has fired.
    #[must_use]
    pub fn fired(&self) -> bool {
        self.state.lock().fired
    }

    pub(super) fn tick(&self, what: &str) -> Result<()> {
        let mut s = self.state.lock();
        let n = s.ops;
        s.ops += 1;
        if s.fired || s.fire_at.is_some_and(|at| n >= at) {
            s.fired = true;
            return Err(dead(what));
        }
        Ok(())
    }
}

fn tick(switch: Option<&Arc<CrashSwitch>>, what: &str) -> Result<()> {
    switch.map_or(Ok(()), |s| s.tick(what))
}

#[derive(Debug, Clone)]
struct Images {
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: BTreeSet<u64>,
}

/// A page store with a live and a durable image (see the module docs).
#[derive(Debug)]
pub struct CrashStore {
    page_size: usize,
    images: Mutex<Images>,
    switch: Option<Arc<CrashSwitch>>,
}

impl CrashStore {
    /// `page_count` zeroed pages of `page_size` bytes, all durable.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero page size.
    pub fn new(page_size: usize, page_count: u64) -> Result<Self> {
        let len = usize::try_from(page_count)
            .ok()
            .and_then(|n| n.checked_mul(page_size))
            .ok_or_else(|| Error::config("page_count", "does not fit in memory"))?;
        Self::from_bytes(page_size, vec![0u8; len])
    }

    /// A store whose live and durable image are `bytes`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero page size or a length that is not
    /// a whole number of pages.
    pub fn from_bytes(page_size: usize, bytes: Vec<u8>) -> Result<Self> {
        if page_size == 0 || !bytes.len().is_multiple_of(page_size) {
            return Err(Error::config(
                "page_size",
                format!("{} bytes are not whole pages of {page_size}", bytes.len()),
            ));
        }
        Ok(CrashStore {
            page_size,
            images: Mutex::new(Images {
                durable: bytes.clone(),
                live: bytes,
                unsynced: BTreeSet::new(),
            }),
            switch: None,
        })
    }

    /// Makes writes and syncs go through `switch`.
    #[must_use]
    pub fn with_switch(mut self, switch: Arc<CrashSwitch>) -> Self {
        self.switch = Some(switch);
        self
    }

    /// The live image (what a read sees now).
    #[must_use]
    pub fn live_bytes(&self) -> Vec<u8> {
        self.images.lock().live.clone()
    }

    /// The durable image.
    #[must_use]
    pub fn durable_bytes(&self) -> Vec<u8> {
        self.images.lock().durable.clone()
    }

    /// Pages written since the last sync.
    #[must_use]
    pub fn unsynced_pages(&self) -> Vec<PageId> {
        self.images
            .lock()
            .unsynced
            .iter()
            .map(|p| PageId(*p))
            .collect()
    }

    /// The store a restarted process sees: the durable image. With `seed`,
    /// each page written since the last sync independently keeps its old
    /// contents, gets the new ones, or gets a torn mix (a prefix of the new
    /// bytes over the old ones), as a disk's write cache may leave it.
    #[must_use]
    pub fn crash(&self, seed: Option<u64>) -> CrashStore {
        let im = self.images.lock();
        let mut image = im.durable.clone();
        if let Some(seed) = seed {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            for &p in &im.unsynced {
                let off = p as usize * self.page_size;
                if off + self.page_size > image.len() {
                    // Written after a resize that never became durable.
                    continue;
                }
                let new = &im.live[off..off + self.page_size];
                match rng.random_range(0..3u8) {
                    0 => {}
                    1 => image[off..off + self.page_size].copy_from_slice(new),
                    _ => {
                        let n = rng.random_range(0..=self.page_size);
                        image[off..off + n].copy_from_slice(&new[..n]);
                    }
                }
            }
        }
        CrashStore::from_bytes(self.page_size, image).expect("same geometry")
    }
}

impl PageStore for CrashStore {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn page_count(&self) -> u64 {
        (self.images.lock().live.len() / self.page_size) as u64
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        let im = self.images.lock();
        check_page_args(
            page,
            (im.live.len() / self.page_size) as u64,
            buf.len(),
            self.page_size,
        )?;
        let off = page.0 as usize * self.page_size;
        buf.copy_from_slice(&im.live[off..off + self.page_size]);
        Ok(())
    }

    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        let mut im = self.images.lock();
        check_page_args(
            page,
            (im.live.len() / self.page_size) as u64,
            data.len(),
            self.page_size,
        )?;
        tick(self.switch.as_ref(), "writing a page")?;
        let off = page.0 as usize * self.page_size;
        im.live[off..off + self.page_size].copy_from_slice(data);
        im.unsynced.insert(page.0);
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let mut im = self.images.lock();
        tick(self.switch.as_ref(), "syncing the store")?;
        im.durable = im.live.clone();
        im.unsynced.clear();
        Ok(())
    }

    /// The new size is live at once and durable at the next sync; a crash
    /// before it keeps the durable image's size.
    fn resize(&self, page_count: u64) -> Result<()> {
        let mut im = self.images.lock();
        let len = usize::try_from(page_count)
            .ok()
            .and_then(|n| n.checked_mul(self.page_size))
            .ok_or_else(|| Error::InvalidArgument {
                what: "page_count",
                reason: format!("{page_count} pages do not fit in memory"),
            })?;
        tick(self.switch.as_ref(), "resizing the store")?;
        im.live.resize(len, 0);
        im.unsynced.retain(|&p| p < page_count);
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
struct FileImage {
    data: Vec<u8>,
    durable_len: usize,
    /// Byte ranges a failed fsync dropped from the page cache's writeback:
    /// readable live, never durable (zeros after a crash) until rewritten.
    holes: Vec<(usize, usize)>,
}

impl FileImage {
    /// Forgets the holes at or past `len` (the bytes were cut or rewritten).
    fn clip_holes(&mut self, len: usize) {
        self.holes.retain(|&(from, _)| from < len);
        for h in &mut self.holes {
            h.1 = h.1.min(len);
        }
    }
}

#[derive(Debug, Default)]
struct DirState {
    files: BTreeMap<u64, FileImage>,
    state_file: Option<Vec<u8>>,
    failing_syncs: u32,
    /// The errno of an injected sync failure (default `EIO`).
    sync_errno: Option<i32>,
    /// Whether an injected sync failure drops the unsynced bytes.
    sync_drops: bool,
    failing_appends: u32,
    append_errno: i32,
    /// Every append and create fails with `ENOSPC`.
    no_space: bool,
    syncs: u64,
    injected: u64,
}

/// `ENOSPC`.
const ENOSPC: i32 = 28;

/// An in-memory journal directory with durable and unsynced bytes per
/// segment (see the module docs). Also the in-memory journal storage of the
/// benches.
#[derive(Debug, Default)]
pub struct CrashDir {
    state: Mutex<DirState>,
    switch: Option<Arc<CrashSwitch>>,
}

impl CrashDir {
    /// An empty directory.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes mutating operations go through `switch`.
    #[must_use]
    pub fn with_switch(mut self, switch: Arc<CrashSwitch>) -> Self {
        self.switch = Some(switch);
        self
    }

    /// Makes the next `times` syncs fail with `EIO` (nothing becomes durable).
    pub fn fail_syncs(&self, times: u32) {
        self.fail_syncs_with(times, 5, false);
    }

    /// Makes the next `times` syncs fail with the OS error `errno`; nothing
    /// becomes durable. With `drop_unsynced`, each failure also does what
    /// Linux may do after a failed writeback: the segment's unsynced bytes
    /// stay readable but are never written back — a later sync that succeeds
    /// leaves them as zeros on the simulated disk ([`crash`](Self::crash)
    /// shows that), unless they are truncated away and appended again.
    pub fn fail_syncs_with(&self, times: u32, errno: i32, drop_unsynced: bool) {
        let mut st = self.state.lock();
        st.failing_syncs = times;
        st.sync_errno = Some(errno);
        st.sync_drops = drop_unsynced;
    }

    /// Makes the next `times` appends fail with the OS error `errno` after
    /// a short write: the first half of the bytes is appended (unsynced),
    /// as a write that runs out of space part-way leaves them.
    pub fn fail_appends(&self, times: u32, errno: i32) {
        let mut st = self.state.lock();
        st.failing_appends = times;
        st.append_errno = errno;
    }

    /// A full disk (`true`) or one with room again (`false`): while full,
    /// every append and segment creation fails with `ENOSPC` (an append
    /// after a short write of half its bytes; a create leaves no file).
    pub fn set_no_space(&self, full: bool) {
        self.state.lock().no_space = full;
    }

    /// Appends, creates and syncs failed on purpose so far.
    #[must_use]
    pub fn injected_failures(&self) -> u64 {
        self.state.lock().injected
    }

    /// Successful syncs so far.
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Bytes appended but not synced, over all segments.
    #[must_use]
    pub fn unsynced_len(&self) -> usize {
        self.state
            .lock()
            .files
            .values()
            .map(|f| f.data.len() - f.durable_len)
            .sum()
    }

    /// The segments present.
    #[must_use]
    pub fn segment_ids(&self) -> Vec<u64> {
        self.state.lock().files.keys().copied().collect()
    }

    /// A segment's current bytes.
    #[must_use]
    pub fn segment(&self, id: u64) -> Option<Vec<u8>> {
        self.state.lock().files.get(&id).map(|f| f.data.clone())
    }

    /// Replaces a segment's bytes, durably (damage at rest, or a crafted file).
    pub fn set_segment(&self, id: u64, bytes: Vec<u8>) {
        let len = bytes.len();
        self.state.lock().files.insert(
            id,
            FileImage {
                data: bytes,
                durable_len: len,
                holes: Vec::new(),
            },
        );
    }

    /// The state file's current contents.
    #[must_use]
    pub fn state_file(&self) -> Option<Vec<u8>> {
        self.state.lock().state_file.clone()
    }

    /// Replaces (or, with `None`, deletes) the state file, durably.
    pub fn set_state_file(&self, bytes: Option<Vec<u8>>) {
        self.state.lock().state_file = bytes;
    }

    /// Deletes a segment, durably, without going through the crash switch
    /// (an operator's mistake, or a lost file).
    pub fn delete_segment(&self, id: u64) {
        self.state.lock().files.remove(&id);
    }

    /// The directory a restarted process sees: every durable byte, plus the
    /// first `keep_unsynced` unsynced bytes (segments in order).
    #[must_use]
    pub fn crash(&self, keep_unsynced: usize) -> CrashDir {
        let mut budget = keep_unsynced;
        // Called once per unsynced byte, segments and offsets in order: the
        // first `keep_unsynced` are kept, so no hole arises.
        self.crash_keeping(|_, _| {
            let keep = budget > 0;
            budget = budget.saturating_sub(1);
            keep
        })
    }

    /// The directory a restarted process sees after a power loss: every
    /// durable byte, and of the unsynced bytes those for which
    /// `keep(segment, offset)` is true (it is called once per unsynced byte,
    /// segments and offsets in order). A lost byte before a kept one reads
    /// as zero (a hole); the file ends after its last durable or kept byte.
    #[must_use]
    pub fn crash_keeping(&self, mut keep: impl FnMut(u64, usize) -> bool) -> CrashDir {
        let st = self.state.lock();
        let files = st
            .files
            .iter()
            .map(|(id, f)| {
                let mut data = f.data[..f.durable_len].to_vec();
                for &(from, to) in &f.holes {
                    let to = to.min(data.len());
                    if from < to {
                        data[from..to].fill(0);
                    }
                }
                let mut end = f.durable_len;
                let mut tail = Vec::with_capacity(f.data.len() - f.durable_len);
                for (i, b) in f.data[f.durable_len..].iter().enumerate() {
                    let at = f.durable_len + i;
                    let dropped = f.holes.iter().any(|&(from, to)| (from..to).contains(&at));
                    if keep(*id, at) && !dropped {
                        tail.push(*b);
                        end = at + 1;
                    } else {
                        tail.push(0);
                    }
                }
                data.extend_from_slice(&tail[..end - f.durable_len]);
                let len = data.len();
                (
                    *id,
                    FileImage {
                        data,
                        durable_len: len,
                        holes: Vec::new(),
                    },
                )
            })
            .collect();
        CrashDir {
            state: Mutex::new(DirState {
                files,
                state_file: st.state_file.clone(),
                ..DirState::default()
            }),
            switch: None,
        }
    }

    /// Writes every segment, and the state file, into `dir` as real files
    /// (to test the file storage on a crafted image).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn export(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating the export dir", e))?;
        let st = self.state.lock();
        for (id, f) in &st.files {
            let p = dir.join(segment_file_name(*id));
            std::fs::write(&p, &f.data)
                .map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        }
        if let Some(b) = &st.state_file {
            let p = dir.join(STATE_FILE_NAME);
            std::fs::write(&p, b).map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        }
        Ok(())
    }
}

fn missing(segment: u64) -> Error {
    Error::io(
        format!("segment {segment}"),
        io::Error::from(io::ErrorKind::NotFound),
    )
}

impl JournalStorage for CrashDir {
    fn list(&self) -> Result<Vec<u64>> {
        Ok(self.segment_ids())
    }

    fn read_state(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.state_file())
    }

    /// Atomic and durable at once: a crash (the switch firing) before it
    /// leaves the old contents.
    fn write_state(&self, bytes: &[u8]) -> Result<()> {
        tick(self.switch.as_ref(), "replacing the state file")?;
        self.state.lock().state_file = Some(bytes.to_vec());
        Ok(())
    }

    fn read(&self, segment: u64) -> Result<Vec<u8>> {
        self.segment(segment).ok_or_else(|| missing(segment))
    }

    fn create(&self, segment: u64, header: &[u8]) -> Result<()> {
        tick(self.switch.as_ref(), "creating a segment")?;
        let mut st = self.state.lock();
        if st.files.contains_key(&segment) {
            return Err(Error::io(
                format!("creating segment {segment}"),
                io::Error::from(io::ErrorKind::AlreadyExists),
            ));
        }
        if st.no_space {
            st.injected += 1;
            return Err(Error::io(
                format!("creating segment {segment} (injected)"),
                io::Error::from_raw_os_error(ENOSPC),
            ));
        }
        st.files.insert(
            segment,
            FileImage {
                data: header.to_vec(),
                durable_len: header.len(),
                holes: Vec::new(),
            },
        );
        Ok(())
    }

    fn append(&self, segment: u64, bytes: &[u8]) -> Result<()> {
        tick(self.switch.as_ref(), "appending")?;
        let mut st = self.state.lock();
        let errno = if st.no_space {
            Some(ENOSPC)
        } else if st.failing_appends > 0 {
            st.failing_appends -= 1;
            Some(st.append_errno)
        } else {
            None
        };
        if errno.is_some() {
            st.injected += 1;
        }
        let f = st.files.get_mut(&segment).ok_or_else(|| missing(segment))?;
        match errno {
            Some(errno) => {
                f.data.extend_from_slice(&bytes[..bytes.len() / 2]);
                Err(Error::io(
                    format!("appending to segment {segment} (injected)"),
                    io::Error::from_raw_os_error(errno),
                ))
            }
            None => {
                f.data.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn sync(&self, segment: u64) -> Result<()> {
        tick(self.switch.as_ref(), "syncing a segment")?;
        let mut st = self.state.lock();
        if st.failing_syncs > 0 {
            st.failing_syncs -= 1;
            st.injected += 1;
            let errno = st.sync_errno.unwrap_or(5);
            if st.sync_drops {
                if let Some(f) = st.files.get_mut(&segment) {
                    if f.data.len() > f.durable_len {
                        let hole = (f.durable_len, f.data.len());
                        f.holes.push(hole);
                    }
                }
            }
            return Err(Error::io(
                format!("syncing segment {segment} (injected)"),
                io::Error::from_raw_os_error(errno),
            ));
        }
        let f = st.files.get_mut(&segment).ok_or_else(|| missing(segment))?;
        f.durable_len = f.data.len();
        st.syncs += 1;
        Ok(())
    }

    fn truncate(&self, segment: u64, len: u64) -> Result<()> {
        tick(self.switch.as_ref(), "truncating")?;
        let mut st = self.state.lock();
        let f = st.files.get_mut(&segment).ok_or_else(|| missing(segment))?;
        let len = (len as usize).min(f.data.len());
        f.data.truncate(len);
        f.durable_len = f.durable_len.min(len);
        f.clip_holes(len);
        Ok(())
    }

    fn remove(&self, segment: u64) -> Result<()> {
        tick(self.switch.as_ref(), "removing a segment")?;
        self.state
            .lock()
            .files
            .remove(&segment)
            .map(|_| ())
            .ok_or_else(|| missing(segment))
    }
}

// ---- a workload for killing a real process --------------------------------

/// Page size of the stamp workload's store.
pub const STAMP_PAGE_SIZE: usize = 256;
/// Pages in the stamp workload's store.
pub const STAMP_PAGES: u64 = 16;

/// The pages transaction `txn` of the stamp workload writes.
#[must_use]
pub fn stamp_pages(txn: TxnId) -> [PageId; 2] {
    let a = txn.0 % STAMP_PAGES;
    let b = (txn.0 * 7 + 3) % STAMP_PAGES;
    let b = if b == a { (a + 1) % STAMP_PAGES } else { b };
    [PageId(a), PageId(b)]
}

fn stamp_store(dir: &Path) -> Result<Arc<FileStore>> {
    let path = dir.join("pages");
    let store = if path.exists() {
        FileStore::open(&path, STAMP_PAGE_SIZE)?
    } else {
        let s = FileStore::create(&path, STAMP_PAGE_SIZE, STAMP_PAGES)?;
        s.sync()?;
        s
    };
    Ok(Arc::new(store))
}

fn open_stamp(dir: &Path) -> Result<(Arc<FileStore>, TransactionRollbackManager)> {
    let store = stamp_store(dir)?;
    let mgr = RollbackConfig::new(dir.join("journal"))
        .segment_size_bytes(16 << 10)
        .build(RawPages::shared(store.clone()))?;
    Ok((store, mgr))
}

fn acked_path(dir: &Path) -> PathBuf {
    dir.join("acked")
}

/// Outcome byte of an `acked` record: the transaction began.
const BEGAN: u8 = 2;

/// Runs the stamp workload in `dir` for at most `max_txns` transactions (a
/// crash test kills the process long before). Each transaction writes its id
/// at two offsets of two pages ([`stamp_pages`]), syncs the store, and then
/// commits — or, for every fifth, rolls back. When `begin` returns it
/// appends `(id, began)` to the file `acked`, and after `commit` or
/// `rollback` returns, `(id, outcome)`.
///
/// # Errors
/// Any error of the store, the manager or the `acked` file.
pub fn run_stamp_workload(dir: &Path, max_txns: u64) -> Result<()> {
    let (store, mgr) = open_stamp(dir)?;
    let mut acked = OpenOptions::new()
        .create(true)
        .append(true)
        .open(acked_path(dir))
        .map_err(|e| Error::io("opening the acked log", e))?;
    let mut log = |id: TxnId, outcome: u8| {
        let mut rec = [0u8; 9];
        rec[..8].copy_from_slice(&id.0.to_le_bytes());
        rec[8] = outcome;
        acked
            .write_all(&rec)
            .map_err(|e| Error::io("appending to the acked log", e))
    };
    for _ in 0..max_txns {
        let txn = mgr.begin()?;
        log(txn, BEGAN)?;
        let stamp = txn.0.to_le_bytes();
        for p in stamp_pages(txn) {
            mgr.write(txn, p, 0, &stamp)?;
            mgr.write(txn, p, 128, &stamp)?;
        }
        store.sync()?;
        let outcome = if txn.0 % 5 == 0 {
            mgr.rollback(txn)?;
            0u8
        } else {
            mgr.commit(txn)?;
            1u8
        };
        log(txn, outcome)?;
    }
    mgr.stop()
}

/// What [`check_stamp_workload`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StampCheck {
    /// Commits the workload saw acknowledged.
    pub acked_commits: u64,
    /// Rollbacks the workload saw acknowledged.
    pub acked_rollbacks: u64,
    /// Transactions recovery rolled back.
    pub rolled_back: Vec<TxnId>,
    /// The transaction that was running when the process died (not
    /// acknowledged), and whether its changes survived (its commit record
    /// was durable).
    pub in_doubt: Option<(TxnId, bool)>,
}

/// Reopens the stamp workload's directory — which runs recovery — and checks
/// the properties: no transaction id was handed out twice (across every
/// run in the directory), every acknowledged commit's stamps are present, no
/// acknowledged rollback's are, and the transaction in doubt is all there or
/// all gone. Returns what it found, or a description of the violation.
///
/// # Errors
/// A message describing the violation or the error.
pub fn check_stamp_workload(dir: &Path) -> std::result::Result<StampCheck, String> {
    let acked = std::fs::read(acked_path(dir)).unwrap_or_default();
    let mut committed: BTreeSet<u64> = BTreeSet::new();
    let mut finished: BTreeSet<u64> = BTreeSet::new();
    let mut began: BTreeSet<u64> = BTreeSet::new();
    let mut last_began = None;
    let mut rollbacks = 0;
    for rec in acked.chunks_exact(9) {
        let id = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
        match rec[8] {
            BEGAN => {
                if !began.insert(id) {
                    return Err(format!("transaction id {id} was handed out twice"));
                }
                last_began = Some(id);
            }
            1 => {
                finished.insert(id);
                committed.insert(id);
            }
            _ => {
                finished.insert(id);
                rollbacks += 1;
            }
        }
    }
    let (store, mgr) = open_stamp(dir).map_err(|e| format!("reopening: {e}"))?;
    let report = mgr.recovery_report().clone();
    let rolled_back: Vec<TxnId> = report.rolled_back.iter().map(|r| r.txn).collect();
    for t in &rolled_back {
        if committed.contains(&t.0) {
            return Err(format!("acknowledged commit {t} was rolled back"));
        }
    }
    // Transactions run one at a time, so at most the last one that began is
    // in doubt (an id that began but was never logged had no effect: its
    // first write comes after the log record).
    let in_doubt = last_began.filter(|l| !finished.contains(l)).map(TxnId);
    let expected = |with_doubt: bool| -> Vec<u64> {
        let mut pages = vec![0u64; STAMP_PAGES as usize];
        let doubt = in_doubt.filter(|_| with_doubt).map(|t| t.0);
        for t in committed.iter().copied().chain(doubt) {
            for p in stamp_pages(TxnId(t)) {
                pages[p.0 as usize] = pages[p.0 as usize].max(t);
            }
        }
        pages
    };
    let mut actual = Vec::new();
    let mut buf = vec![0u8; STAMP_PAGE_SIZE];
    for p in 0..STAMP_PAGES {
        store
            .read_page(PageId(p), &mut buf)
            .map_err(|e| format!("reading page {p}: {e}"))?;
        let a = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
        let b = u64::from_le_bytes(buf[128..136].try_into().expect("8 bytes"));
        if a != b {
            return Err(format!("page {p} is half rolled back: stamps {a} and {b}"));
        }
        actual.push(a);
    }
    let survived = if actual == expected(false) {
        false
    } else if in_doubt.is_some_and(|d| actual == expected(true) && !rolled_back.contains(&d)) {
        true
    } else {
        return Err(format!(
            "pages {actual:?} match neither the acknowledged commits {:?} nor them plus the transaction in doubt {in_doubt:?} {:?}",
            expected(false),
            expected(true)
        ));
    };
    mgr.stop().map_err(|e| format!("closing: {e}"))?;
    Ok(StampCheck {
        acked_commits: committed.len() as u64,
        acked_rollbacks: rollbacks,
        rolled_back,
        in_doubt: in_doubt.map(|d| (d, survived)),
    })
}
