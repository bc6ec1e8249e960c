//! The state one manager shares between its handles, its page source and
//! its periodic thread: the manifest, the head, the dirty-page notices, the
//! open readers, and the poisoned state after a failure whose effect on disk
//! is unknown.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLock};

use super::dirty::DirtyPages;
use super::format::SnapshotReader;
#[cfg(any(test, feature = "testing"))]
use super::io_step::SnapshotIo;
use super::manifest::{Manifest, Retention};
use super::progress::Progress;
use super::SnapshotInfo;
use crate::clock::Clock;
use crate::dirlock::DirLock;
use crate::error::{Error, Result};
use crate::types::Lsn;
use crate::types::{FailureKind, FailureSink, Source};

/// The snapshot the store's state descends from (see the module docs).
#[derive(Clone, Debug)]
pub(super) struct Head {
    pub(super) id: u64,
    pub(super) lsn: Lsn,
    pub(super) page_count: u64,
    pub(super) chain: Vec<u64>,
}

/// What the manifest lock guards.
pub(super) struct State {
    pub(super) manifest: Manifest,
    /// The head's page fingerprints, once read or computed.
    pub(super) head_fps: Option<(u64, Arc<Vec<u64>>)>,
}

/// The shared state of one manager.
pub(super) struct Inner {
    pub(super) dir: PathBuf,
    pub(super) page_size: usize,
    pub(super) chunk_pages: usize,
    pub(super) threads: usize,
    /// How long a snapshot waits for its early sync before the final fsync.
    pub(super) sync_timeout: std::time::Duration,
    /// Replaces the early sync and its byte interval (tests: one that hangs).
    #[cfg(test)]
    pub(super) early_sync: Mutex<Option<(super::writer::SyncFn, u64)>>,
    pub(super) max_chain_len: usize,
    pub(super) retention: Retention,
    pub(super) precheck_restore: bool,
    pub(super) state: Mutex<State>,
    /// The manifest's snapshots as last published (at open and whenever
    /// the manifest is replaced): listed without the state lock, which a
    /// snapshot or restore holds throughout.
    pub(super) listed: RwLock<Vec<SnapshotInfo>>,
    pub(super) head: RwLock<Option<Head>>,
    pub(super) dirty: DirtyPages,
    /// Set when a restore failed after it began writing its target: the
    /// store's state then descends from no snapshot, so the page source
    /// serves nothing until the next successful snapshot or restore.
    pub(super) head_unknown: AtomicBool,
    pub(super) readers: Mutex<HashMap<u64, Arc<SnapshotReader>>>,
    pub(super) progress: Progress,
    pub(super) poisoned: Mutex<Option<String>>,
    /// The last manifest write renamed the new manifest into place but its
    /// directory fsync failed.
    pub(super) manifest_unsynced: AtomicBool,
    pub(super) crash_at: AtomicU32,
    #[cfg(any(test, feature = "testing"))]
    pub(super) fail_retention: AtomicBool,
    /// An injected I/O failure: the step, the OS error, how many times.
    #[cfg(any(test, feature = "testing"))]
    pub(super) io_fault: Mutex<Option<(SnapshotIo, i32, u32)>>,
    pub(super) rebuilt: Option<String>,
    /// Every time decision: progress rates, creation times, retention by age.
    pub(super) clock: Arc<dyn Clock>,
    /// Unix milliseconds at the clock's zero: the wall time at open minus
    /// the clock's reading then, so that `clock` alone moves creation times.
    pub(super) wall_origin_unix_ms: u64,
    /// Where the manager reports its own failures.
    pub(super) sink: FailureSink,
    /// The directory's lock, held while anything uses the directory.
    pub(super) _lock: DirLock,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateSnapshotManager")
            .field("dir", &self.dir)
            .field("page_size", &self.page_size)
            .field("head", &self.head.read().as_ref().map(|h| h.id))
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// The managers (their `Inner`'s addresses) whose state lock this
    /// thread holds through [`Inner::lock_state`], in the order taken.
    static HOLDING: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// A manager's state, locked by [`Inner::lock_state`]: while it is held,
/// this thread is known to hold it.
pub(super) struct StateGuard<'a> {
    guard: MutexGuard<'a, State>,
    /// The manager's address, in `HOLDING` while this lives.
    me: usize,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        HOLDING.with(|h| {
            let mut h = h.borrow_mut();
            // Guards dropped out of order are found all the same.
            if let Some(i) = h.iter().rposition(|&a| a == self.me) {
                h.remove(i);
            }
        });
    }
}

/// Readers kept open at most; older ones are dropped and reopened on demand.
const MAX_OPEN_READERS: usize = 64;

impl Inner {
    /// The wall time on the manager's clock, in Unix milliseconds.
    pub(super) fn now_unix_ms(&self) -> u64 {
        self.wall_origin_unix_ms
            .saturating_add(self.clock.now_ns() / 1_000_000)
    }

    /// Reports a snapshot that failed with `error` on the failure bus.
    pub(super) fn report_snapshot_failed(&self, what: &str, error: &Error) {
        self.sink.report(
            Source::StateSnapshotManager,
            FailureKind::SnapshotFailed,
            format!("{what} in {} failed: {error}", self.dir.display()),
            self.clock.now_ns(),
        );
    }

    /// Locks the state for an operation that may read or write the host's
    /// store (a snapshot, a restore) or read the chain for a repair. On a
    /// thread that holds this manager's state already it refuses instead of
    /// waiting for itself: a read the snapshot or restore made of the host's
    /// store came back to the snapshots on this thread (a host store that
    /// reads them; a heal on read would, but snapshots and restores turn it
    /// off for their reads) — the snapshots serve nothing to it until the
    /// operation ends.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on such a thread.
    pub(super) fn lock_state(&self) -> Result<StateGuard<'_>> {
        let me = std::ptr::from_ref(self) as usize;
        if HOLDING.with(|h| h.borrow().contains(&me)) {
            return Err(Error::InvalidArgument {
                what: "snapshot manager",
                reason: format!(
                    "this thread is taking or restoring a snapshot in {} already (a page it read is being healed); the snapshots serve it once that ends",
                    self.dir.display()
                ),
            });
        }
        let guard = self.state.lock();
        HOLDING.with(|h| h.borrow_mut().push(me));
        Ok(StateGuard { guard, me })
    }

    /// Publishes `m`'s snapshots for [`listed`](Self::listed): called with
    /// the state lock held, as `m` becomes the manifest.
    pub(super) fn publish(&self, m: &Manifest) {
        *self.listed.write() = m.entries.clone();
    }

    pub(super) fn check_alive(&self) -> Result<()> {
        match &*self.poisoned.lock() {
            Some(reason) => Err(Error::Poisoned {
                component: "snapshot manager",
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    pub(super) fn poison(&self, reason: String) {
        tracing::error!(%reason, "snapshot manager poisoned");
        *self.poisoned.lock() = Some(reason);
    }

    pub(super) fn crashed(&self) -> bool {
        self.poisoned.lock().is_some()
    }

    pub(super) fn check_page_size(&self, what: &str, ps: usize) -> Result<()> {
        if ps != self.page_size {
            return Err(Error::PageSizeMismatch {
                what: what.to_owned(),
                expected: self.page_size,
                actual: ps,
            });
        }
        Ok(())
    }

    pub(super) fn reader(&self, info: &SnapshotInfo) -> Result<Arc<SnapshotReader>> {
        if let Some(r) = self.readers.lock().get(&info.id) {
            return Ok(r.clone());
        }
        let path = self.dir.join(&info.file_name);
        let r = SnapshotReader::open_file(&path)?;
        let h = &r.header;
        if h.id != info.id
            || h.parent != info.parent
            || h.lsn != info.lsn
            || h.page_count != info.page_count
            || h.page_size != self.page_size
        {
            return Err(Error::corrupt_file(
                &path,
                0,
                format!(
                    "header does not match the manifest entry of snapshot {}",
                    info.id
                ),
            ));
        }
        let r = Arc::new(r);
        let mut cache = self.readers.lock();
        if cache.len() >= MAX_OPEN_READERS {
            cache.clear();
        }
        cache.insert(info.id, r.clone());
        Ok(r)
    }

    pub(super) fn reader_by_id(&self, st: &State, id: u64) -> Result<Arc<SnapshotReader>> {
        let info = st.manifest.get(id).ok_or(Error::SnapshotNotFound { id })?;
        self.reader(info)
    }
}
