//! The seams a host implements: small, object-safe, `Send + Sync` traits.
//!
//! The library never assumes a file layout. A host gives it page storage
//! ([`PageStore`]), sources of page copies ([`Replica`], [`PageSource`]) and
//! the actions only it can take ([`HostActions`]).
//!
//! # What an error from the host means
//!
//! Host methods return [`crate::Error`]. The library treats
//! [`Error::is_retryable`](crate::Error::is_retryable) errors as transient: a
//! read is tried again before a page is declared corrupt, and a replica that
//! answers with a transient error is skipped for this repair but not marked bad.
//! Any other error is taken at its word. A host wraps its own errors with
//! [`Error::Host`], setting `retryable` honestly.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::types::{Lsn, PageId, ReplicaId};

/// Fixed-size page storage: the host's data file(s), as the library sees them.
///
/// Pages are numbered `0..page_count()` and all have `page_size()` bytes.
/// Methods take `&self`: an implementation synchronises internally, and the
/// library calls it from several threads (the host's, the scrubber's, the
/// repairer's).
pub trait PageStore: Send + Sync + fmt::Debug {
    /// The size of every page in bytes. Constant for the life of the store.
    fn page_size(&self) -> usize;

    /// How many pages the store has now. May change while the library runs
    /// (see [`resize`](Self::resize)); the scrubber reads it at the start of
    /// each pass and ends a pass early at a new, smaller end.
    fn page_count(&self) -> u64;

    /// Reads page `page` into `buf`, which has exactly `page_size()` bytes.
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] for a page past the end; [`Error::BufferSize`]
    /// for a buffer of the wrong length; an I/O or host error otherwise (a
    /// retryable one is tried again by the library). A host's own store returns
    /// the raw bytes without verifying them: verification is the library's
    /// job ([`CorruptionDetector`](crate::CorruptionDetector) is the verifying
    /// wrapper), and repair needs to see the damage.
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()>;

    /// Reads `buf.len() / page_size()` consecutive pages starting at `first`.
    ///
    /// The default calls [`read_page`](Self::read_page) per page; a store whose
    /// medium favours large reads (a file) overrides it, and the scrubber's
    /// throughput depends on that.
    ///
    /// # Errors
    /// As `read_page`; [`Error::BufferSize`] when `buf` is not a whole number of pages.
    fn read_pages(&self, first: PageId, buf: &mut [u8]) -> Result<()> {
        let ps = self.page_size();
        whole_pages(buf.len(), ps)?;
        for (i, chunk) in buf.chunks_exact_mut(ps).enumerate() {
            self.read_page(PageId(first.0 + i as u64), chunk)?;
        }
        Ok(())
    }

    /// Calls `visit` with each of `count` consecutive pages starting at
    /// `first`, in order. The slice passed to `visit` is only valid during the
    /// call.
    ///
    /// The default reads batches of up to 1 MiB with
    /// [`read_pages`](Self::read_pages) into a buffer that the calling thread
    /// keeps for its next scans (at most 1 MiB, or one page when pages are
    /// larger; a scan started inside `visit` uses a buffer of its own); a store that can
    /// expose its pages without a copy (a memory map) overrides it. This is the
    /// scrubber's hot path.
    ///
    /// `visit` may call back into the store (the scrubber re-reads a page
    /// that fails verification), and host writers may be waiting meanwhile,
    /// so an implementation must not hold across a call of `visit` a lock
    /// that a read or a write of the store waits for. (The reference
    /// [`FileStore`](crate::FileStore) holds a lock that only its `resize`
    /// waits for, shared, across each batch of its memory-map scan, so that a
    /// shrink never cuts a mapping in use.)
    ///
    /// When the store shrinks during a scan, the scan ends with
    /// [`Error::PageOutOfRange`] at the first page that is gone.
    ///
    /// # Errors
    /// The first error of a read or of `visit`; pages after it are not visited.
    fn scan_pages(
        &self,
        first: PageId,
        count: u64,
        visit: &mut dyn FnMut(PageId, &[u8]) -> Result<()>,
    ) -> Result<()> {
        scan_in_batches(self, first, count, visit)
    }

    /// Writes page `page` from `data`, which has exactly `page_size()` bytes.
    /// The write need not be durable until [`sync`](Self::sync) returns.
    ///
    /// # Errors
    /// As `read_page`. After an error the page's contents are unknown (the
    /// write may have been partial); the library re-reads before trusting it.
    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()>;

    /// Writes a batch of pages: each `(page, bytes)` in order, as
    /// [`write_page`](Self::write_page) would (a page may appear twice; its
    /// last bytes win). The buffers may be changed on the way (the
    /// [`CorruptionDetector`](crate::CorruptionDetector) writes a checksum
    /// trailer into them). Like a single write, the batch need not be
    /// durable until [`sync`](Self::sync) returns.
    ///
    /// The default calls `write_page` for each page. A store for which a
    /// batch costs less than its pages one by one overrides it: the
    /// detector seals and writes a batch with one fsync of a durable
    /// sidecar table's log, where single writes cost one each. The library
    /// restores snapshots this way, a chunk at a time.
    ///
    /// # Errors
    /// As `write_page`, for the first page that fails; the pages before it
    /// may have been written.
    fn write_pages(&self, pages: &mut [(PageId, &mut [u8])]) -> Result<()> {
        for (page, buf) in pages.iter() {
            self.write_page(*page, buf)?;
        }
        Ok(())
    }

    /// Whether this store verifies what it reads: whether a page read from
    /// it can only be bytes that were sealed for that page. A host's own
    /// store returns raw bytes and says no (the default); the
    /// [`CorruptionDetector`](crate::CorruptionDetector) says yes.
    ///
    /// A snapshot records the answer of the store it read, so that a later
    /// restore into a store that seals what it writes knows whether the
    /// pages it writes were verified (see
    /// [`check_unverified`](Self::check_unverified)). A wrapper around a
    /// verifying store forwards the answer; one that may return other bytes
    /// than the store below it must not.
    fn verifies_reads(&self) -> bool {
        false
    }

    /// Checks `bytes`, which come from a copy nobody verified (a snapshot
    /// taken of a raw store), before they are written as `page` through
    /// this store. A store that seals what it writes (the
    /// [`CorruptionDetector`](crate::CorruptionDetector)) refuses bytes it
    /// cannot vouch for, because sealing them would make damaged bytes look
    /// valid; the default accepts everything, because a store that seals
    /// nothing vouches for nothing. `page` may lie past the store's current
    /// end: a restore checks its pages before it resizes the target.
    ///
    /// # Errors
    /// [`Error::UnverifiedCopy`] naming the page and what to do instead.
    fn check_unverified(&self, page: PageId, bytes: &[u8]) -> Result<()> {
        let _ = (page, bytes);
        Ok(())
    }

    /// Changes the number of pages to `page_count`: pages at and past the new
    /// end are dropped, and pages added at the end read as zeros until they
    /// are written. A read, write or scan that races a shrink either
    /// completes before it or fails with [`Error::PageOutOfRange`]; a write
    /// never brings a dropped page back. A store whose medium can shrink (SQLite truncates its file
    /// on `VACUUM` and at checkpoints) implements it; the library calls it
    /// when a restore needs a store of another size, and a host calls the
    /// detector's [`resize`](crate::CorruptionDetector::resize) so that
    /// checksums and fences of dropped pages go with them. Like a write, the
    /// new size need not be durable until [`sync`](Self::sync) returns.
    ///
    /// The default answers [`Error::Unsupported`]: a store that cannot change
    /// size keeps the one it has.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; [`Error::InvalidArgument`] for a size
    /// the store cannot hold; the store's I/O error.
    fn resize(&self, page_count: u64) -> Result<()> {
        let _ = page_count;
        Err(Error::Unsupported { action: "resize" })
    }

    /// Makes every completed write durable.
    ///
    /// # Errors
    /// An error means earlier writes may be lost. The library does not retry a
    /// failed sync as if it had succeeded: it re-reads and re-verifies.
    fn sync(&self) -> Result<()>;
}

/// How far a replica is behind, as far as it knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReplicaLag {
    /// The newest LSN the replica has applied, if it tracks LSNs.
    pub applied_lsn: Option<Lsn>,
    /// How far behind the primary it is in time, if it knows.
    pub behind: Option<Duration>,
}

/// A replica's state as reported by [`Replica::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Whether the replica can serve reads now.
    pub available: bool,
    /// How far behind it is.
    pub lag: ReplicaLag,
}

/// A source of page copies: another node, a mirror disk, a backup.
///
/// The library never trusts a replica's bytes: every copy is verified
/// (checksum and page number) before it is written anywhere.
pub trait Replica: Send + Sync + fmt::Debug {
    /// The replica's unique name.
    fn id(&self) -> ReplicaId;

    /// The replica's page size; a replica whose page size differs from the
    /// local store's is refused at registration.
    fn page_size(&self) -> usize;

    /// Whether it is available and how far behind it is. Called before each
    /// repair to order replicas (available first, then least lag); it should
    /// be cheap. The repairer calls it on the replica's helper thread and
    /// waits for it only until its deadline
    /// ([`RepairConfig::replica_read_timeout`](crate::repair::RepairConfig::replica_read_timeout)).
    ///
    /// `lag.applied_lsn`, when reported, must not be below the page LSN of
    /// any page the replica serves: with a page-LSN reader the repairer does
    /// not ask a replica that reports an applied LSN below the newest copy it
    /// already holds, so a replica that under-reports could hold back the
    /// current copy.
    fn status(&self) -> ReplicaStatus;

    /// Reads the replica's copy of `page` into `buf` (exactly `page_size()` bytes).
    ///
    /// # Errors
    /// [`Error::ReplicaUnavailable`] when it cannot answer now (the repairer
    /// moves on to the next replica); any other error likewise skips it.
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()>;

    /// The digest of pages `first .. first + count` (see
    /// [`digest`](crate::digest) for the exact function), used
    /// to find divergent ranges without fetching every page.
    ///
    /// The default reads each page through `read_page`; a remote replica
    /// should compute it where the data is. The repairer calls it on the
    /// replica's helper thread and waits for it only until its deadline.
    ///
    /// # Errors
    /// As `read_page`.
    fn range_digest(&self, first: PageId, count: u64) -> Result<u64> {
        digest_by_reads(self, first, count)
    }

    /// Whether the repairer may call this replica on its own thread —
    /// without a helper thread and **without a deadline** — because no call
    /// into it can hang: an in-memory copy in this process, say. Default
    /// `false`: every call runs on the replica's helper thread and is waited
    /// for only until its deadline.
    ///
    /// Calling inline saves the hand-over between threads, several
    /// microseconds per call (more on a busy machine), which is most of the
    /// cost of repairing a page from memory. Answer `true` only for a
    /// replica no call of which can block for long: a call that hangs then
    /// hangs the repair and its caller with it (a network replica, or a file
    /// on a disk that may stall, must answer `false`). A panic is still
    /// caught and makes the replica unavailable for its cool-off. Asked
    /// once, at registration.
    fn may_call_inline(&self) -> bool {
        false
    }
}

/// The default [`Replica::range_digest`]: reads each page with `read_page`;
/// shared with the fault-injecting replica, which overrides the method only
/// to inject faults.
pub(crate) fn digest_by_reads<R: Replica + ?Sized>(
    replica: &R,
    first: PageId,
    count: u64,
) -> Result<u64> {
    let mut buf = vec![0u8; replica.page_size()];
    let mut digest = crate::digest::RangeDigest::new();
    let end = first.0.checked_add(count).ok_or(Error::InvalidArgument {
        what: "count",
        reason: format!("pages {first}..+{count} run past the largest page id"),
    })?;
    for p in first.0..end {
        replica.read_page(PageId(p), &mut buf)?;
        digest.push(PageId(p), &buf);
    }
    Ok(digest.finish())
}

/// A last-resort source of page copies, tried when no replica has a good one
/// (for example the newest snapshot).
pub trait PageSource: Send + Sync + fmt::Debug {
    /// A short name for reports ("snapshot 12").
    fn name(&self) -> String;

    /// Reads a copy of `page` into `buf`. Returns `Ok(false)` when the source
    /// has no copy of it, or has one that is older than `not_older_than` (the
    /// local store's LSN for the page, when the host knows it): a stale page is
    /// never served as a repair. The repairer calls it on the source's helper
    /// thread and waits for it only until its deadline; a panic is caught
    /// there and skips the source.
    ///
    /// # Errors
    /// An I/O or decoding error of the source; the page is then treated as not
    /// found there.
    fn read_page(&self, page: PageId, not_older_than: Option<Lsn>, buf: &mut [u8]) -> Result<bool>;
}

/// One action only the host can take: what [`HostActions::supports`] is
/// asked about, and what reports name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HostAction {
    /// [`HostActions::restart_component`].
    RestartComponent,
    /// [`HostActions::clear_caches`].
    ClearCaches,
    /// [`HostActions::resize_pool`].
    ResizePool,
    /// [`HostActions::fail_over`].
    FailOver,
    /// [`HostActions::shed_load`].
    ShedLoad,
    /// [`HostActions::free_disk_space`].
    FreeDiskSpace,
    /// [`HostActions::rebuild_index`].
    RebuildIndex,
}

impl HostAction {
    /// Every action, in declaration order.
    pub const ALL: [HostAction; 7] = [
        HostAction::RestartComponent,
        HostAction::ClearCaches,
        HostAction::ResizePool,
        HostAction::FailOver,
        HostAction::ShedLoad,
        HostAction::FreeDiskSpace,
        HostAction::RebuildIndex,
    ];

    /// The method's name (`"restart_component"`), as
    /// [`Error::Unsupported`] names it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            HostAction::RestartComponent => "restart_component",
            HostAction::ClearCaches => "clear_caches",
            HostAction::ResizePool => "resize_pool",
            HostAction::FailOver => "fail_over",
            HostAction::ShedLoad => "shed_load",
            HostAction::FreeDiskSpace => "free_disk_space",
            HostAction::RebuildIndex => "rebuild_index",
        }
    }
}

impl fmt::Display for HostAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The [`Error::Unsupported`] every default action answers.
fn unsupported(action: HostAction) -> Result<()> {
    Err(Error::Unsupported {
        action: action.name(),
    })
}

/// Actions only the host can take.
///
/// Every action has a default that answers [`Error::Unsupported`], and
/// [`supports`](Self::supports) answers `false` for every action by default:
/// a host implements what it has and lists it there. The library never plans
/// an action the host does not list; a call to one anyway gets
/// `Unsupported`.
///
/// Actions are called from the library's threads (a recovery thread, or a
/// reader's thread healing on read) and may block. Nothing bounds the wait:
/// an action that hangs holds that thread until it returns (the manager's
/// [`stop`](crate::AutoRecoveryManager::stop) stays bounded by its join
/// timeout and leaves such a thread behind), so each should return within
/// seconds and fail with a retryable error rather than wait longer.
///
/// ```
/// use selfheal::{HostAction, HostActions, Result};
///
/// #[derive(Debug)]
/// struct Engine;
///
/// impl HostActions for Engine {
///     fn supports(&self, action: HostAction) -> bool {
///         matches!(action, HostAction::ClearCaches)
///     }
///     fn clear_caches(&self) -> Result<()> {
///         // Drop the engine's page cache here.
///         Ok(())
///     }
/// }
///
/// let engine = Engine;
/// assert!(engine.supports(HostAction::ClearCaches));
/// assert!(engine.clear_caches().is_ok());
/// assert!(!engine.supports(HostAction::ShedLoad));
/// assert!(engine.shed_load(50).is_err());
/// ```
pub trait HostActions: Send + Sync + fmt::Debug {
    /// Whether the host implements `action`. Default: `false` for every
    /// action. Answer `true` only for the methods this host overrides.
    fn supports(&self, action: HostAction) -> bool {
        let _ = action;
        false
    }

    /// Restarts the host component named `component` (a name it sent
    /// heartbeats under, or one of its own subsystems).
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the host's error otherwise.
    fn restart_component(&self, component: &str) -> Result<()> {
        let _ = component;
        unsupported(HostAction::RestartComponent)
    }

    /// Drops the host's caches of pages or derived data, so that the next
    /// reads go to the store (after a repair changed pages under them).
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the host's error otherwise.
    fn clear_caches(&self) -> Result<()> {
        unsupported(HostAction::ClearCaches)
    }

    /// Resizes the host's pool named `pool` (connections, buffers, workers)
    /// to `size` entries.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the host's error otherwise.
    fn resize_pool(&self, pool: &str, size: usize) -> Result<()> {
        let _ = (pool, size);
        unsupported(HostAction::ResizePool)
    }

    /// Makes the replica `to` serve in place of the local store.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the host's error otherwise.
    fn fail_over(&self, to: &ReplicaId) -> Result<()> {
        let _ = to;
        unsupported(HostAction::FailOver)
    }

    /// Refuses or delays `percent` (1..=100) of new work until told
    /// otherwise (`shed_load(0)` lifts it).
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the host's error otherwise.
    fn shed_load(&self, percent: u8) -> Result<()> {
        let _ = percent;
        unsupported(HostAction::ShedLoad)
    }

    /// Frees at least `bytes_wanted` bytes of disk space where the host can
    /// (old logs, temporary files); returns how many bytes it freed.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the host's error otherwise.
    fn free_disk_space(&self, bytes_wanted: u64) -> Result<u64> {
        let _ = bytes_wanted;
        unsupported(HostAction::FreeDiskSpace).map(|()| 0)
    }

    /// Rebuilds the named index (or other derived structure) from base data.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the host's error otherwise.
    fn rebuild_index(&self, index: &str) -> Result<()> {
        let _ = index;
        unsupported(HostAction::RebuildIndex)
    }
}

/// Checks that `count` pages starting at `first` lie within `page_count`;
/// shared by the reference stores' batch reads and scans.
pub(crate) fn check_page_span(first: PageId, count: u64, page_count: u64) -> Result<()> {
    if first.0.saturating_add(count) > page_count {
        return Err(Error::PageOutOfRange {
            page: PageId(first.0.saturating_add(count).saturating_sub(1)),
            page_count,
        });
    }
    Ok(())
}

/// Checks that `buf_len` is a whole, nonzero number of pages and returns how
/// many; shared by the reference stores' batch reads.
pub(crate) fn whole_pages(buf_len: usize, page_size: usize) -> Result<u64> {
    let n = buf_len / page_size.max(1);
    if page_size == 0 || n == 0 || !buf_len.is_multiple_of(page_size) {
        return Err(Error::BufferSize {
            expected: page_size * n.max(1),
            actual: buf_len,
        });
    }
    Ok(n as u64)
}

/// Checks that `buf` is exactly one page and `page` is in range; shared by the
/// reference stores and the wrappers so that bad input gets the same typed error
/// everywhere.
pub(crate) fn check_page_args(
    page: PageId,
    page_count: u64,
    buf_len: usize,
    page_size: usize,
) -> Result<()> {
    if buf_len != page_size {
        return Err(Error::BufferSize {
            expected: page_size,
            actual: buf_len,
        });
    }
    if page.0 >= page_count {
        return Err(Error::PageOutOfRange { page, page_count });
    }
    Ok(())
}

/// Bytes of one batch of the default [`PageStore::scan_pages`] (at least
/// one page).
const SCAN_BATCH_BYTES: usize = 1 << 20;

thread_local! {
    /// The batch buffer of the default scan, kept by each thread that scans
    /// (at most one batch: [`SCAN_BATCH_BYTES`], or one page when pages are
    /// larger), so that a scrub reads every batch into memory that is
    /// already mapped and warm instead of allocating (and zeroing) a new
    /// buffer for each.
    static SCAN_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The default [`PageStore::scan_pages`]: batched `read_pages` of up to 1 MiB
/// into the calling thread's reused batch buffer (a fresh one when the
/// thread's is in use by a scan further up its stack: `visit` may scan).
pub(crate) fn scan_in_batches<S: PageStore + ?Sized>(
    store: &S,
    first: PageId,
    count: u64,
    visit: &mut dyn FnMut(PageId, &[u8]) -> Result<()>,
) -> Result<()> {
    let ps = store.page_size().max(1);
    let batch = (SCAN_BATCH_BYTES / ps).max(1) as u64;
    let want = (batch.min(count.max(1)) as usize) * ps;
    let mut scan = |buf: &mut Vec<u8>| -> Result<()> {
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let mut next = first.0;
        let end = first.0.saturating_add(count);
        while next < end {
            let n = batch.min(end - next);
            let bytes = &mut buf[..n as usize * ps];
            store.read_pages(PageId(next), bytes)?;
            for (i, page) in bytes.chunks_exact(ps).enumerate() {
                visit(PageId(next + i as u64), page)?;
            }
            next += n;
        }
        Ok(())
    };
    let reused = SCAN_BUF.try_with(|cell| cell.try_borrow_mut().ok().map(|mut buf| scan(&mut buf)));
    match reused {
        Ok(Some(result)) => result,
        // In use further up the stack, or the thread is ending.
        _ => scan(&mut Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Nothing;
    impl HostActions for Nothing {}

    /// Calls `action` on `host` the way a healer would.
    fn call(host: &dyn HostActions, action: HostAction) -> Result<()> {
        match action {
            HostAction::RestartComponent => host.restart_component("engine"),
            HostAction::ClearCaches => host.clear_caches(),
            HostAction::ResizePool => host.resize_pool("buffers", 8),
            HostAction::FailOver => host.fail_over(&ReplicaId::new("r1")),
            HostAction::ShedLoad => host.shed_load(50),
            HostAction::FreeDiskSpace => host.free_disk_space(1 << 20).map(|_| ()),
            HostAction::RebuildIndex => host.rebuild_index("idx"),
        }
    }

    #[test]
    fn every_default_action_is_unsupported_and_named() {
        for action in HostAction::ALL {
            assert!(!Nothing.supports(action), "{action}");
            match call(&Nothing, action) {
                Err(Error::Unsupported { action: name }) => assert_eq!(name, action.name()),
                other => panic!("{action}: {other:?}"),
            }
        }
        let names: std::collections::HashSet<_> =
            HostAction::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(names.len(), HostAction::ALL.len());
    }

    #[derive(Debug)]
    struct Shedder(std::sync::atomic::AtomicU8);
    impl HostActions for Shedder {
        fn supports(&self, action: HostAction) -> bool {
            action == HostAction::ShedLoad
        }
        fn shed_load(&self, percent: u8) -> Result<()> {
            self.0.store(percent, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn a_host_overrides_what_it_has() {
        let host = Shedder(std::sync::atomic::AtomicU8::new(0));
        for action in HostAction::ALL {
            let supported = host.supports(action);
            assert_eq!(call(&host, action).is_ok(), supported, "{action}");
        }
        assert_eq!(host.0.load(std::sync::atomic::Ordering::SeqCst), 50);
    }

    /// A store with only the required methods, so that `write_pages` and
    /// `read_pages` are the trait's defaults.
    #[derive(Debug)]
    struct Plain(parking_lot::Mutex<Vec<u8>>);

    impl PageStore for Plain {
        fn page_size(&self) -> usize {
            64
        }
        fn page_count(&self) -> u64 {
            (self.0.lock().len() / 64) as u64
        }
        fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
            check_page_args(page, self.page_count(), buf.len(), 64)?;
            let off = page.0 as usize * 64;
            buf.copy_from_slice(&self.0.lock()[off..off + 64]);
            Ok(())
        }
        fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
            check_page_args(page, self.page_count(), data.len(), 64)?;
            let off = page.0 as usize * 64;
            self.0.lock()[off..off + 64].copy_from_slice(data);
            Ok(())
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn default_write_pages_is_single_writes_in_order_up_to_the_first_bad_page() {
        let s = Plain(parking_lot::Mutex::new(vec![0u8; 4 * 64]));
        let (mut a, mut b, mut c) = ([1u8; 64], [2u8; 64], [3u8; 64]);
        // A run, then page 1 again: its last bytes win.
        let mut batch = [
            (PageId(1), &mut a[..]),
            (PageId(2), &mut b[..]),
            (PageId(1), &mut c[..]),
        ];
        s.write_pages(&mut batch).unwrap();
        let mut all = [0u8; 4 * 64];
        s.read_pages(PageId(0), &mut all).unwrap();
        let firsts: Vec<u8> = all.chunks_exact(64).map(|p| p[0]).collect();
        assert_eq!(firsts, [0, 3, 2, 0]);
        // Past the end, then a short buffer: typed errors, the pages before
        // them written, none after.
        let (mut d, mut e, mut f) = ([4u8; 64], [5u8; 64], [6u8; 64]);
        let mut bad = [
            (PageId(0), &mut d[..]),
            (PageId(4), &mut e[..]),
            (PageId(3), &mut f[..]),
        ];
        assert!(matches!(
            s.write_pages(&mut bad),
            Err(Error::PageOutOfRange {
                page: PageId(4),
                page_count: 4
            })
        ));
        let mut short = [7u8; 65];
        let mut g = [8u8; 64];
        let mut bad = [(PageId(3), &mut g[..]), (PageId(2), &mut short[..])];
        assert!(matches!(
            s.write_pages(&mut bad),
            Err(Error::BufferSize {
                expected: 64,
                actual: 65
            })
        ));
        s.read_pages(PageId(0), &mut all).unwrap();
        let firsts: Vec<u8> = all.chunks_exact(64).map(|p| p[0]).collect();
        assert_eq!(firsts, [4, 3, 2, 8]);
        // A range read past the end or of a partial page: typed errors.
        assert!(matches!(
            s.read_pages(PageId(3), &mut [0u8; 128]),
            Err(Error::PageOutOfRange { .. })
        ));
        assert!(matches!(
            s.read_pages(PageId(0), &mut [0u8; 100]),
            Err(Error::BufferSize { .. })
        ));
    }
}
