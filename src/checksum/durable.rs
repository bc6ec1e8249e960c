//! The durable sidecar table: a base file plus an append-only log of
//! changes, kept so that after a crash at any step a page holding either its
//! old or its new bytes verifies, and so that making a change durable costs
//! O(changed pages), not O(table).
//!
//! # Contract
//!
//! For pages written through [`CorruptionDetector::write_sealed`] /
//! [`write_sealed_batch`] and made durable through
//! [`CorruptionDetector::sync`] (`PageStore::sync` of the detector):
//!
//! 1. A page write is issued only after the log record naming its new
//!    checksum (an *intent*) is durable. A page write may reach the disk at
//!    any moment after it is issued, so no byte of a page is ever durable
//!    before the checksum that accepts it.
//! 2. Until a sync that began after the write returned has completed, the
//!    page verifies with its old checksum or its new one (the write is
//!    *unsettled*); after that sync only the newest written one (it is
//!    *settled*). Settling writes a log record but no fsync of its own: it
//!    becomes durable with the next intent, flush or compaction.
//! 3. After a crash at any point and [`ChecksumTable::open`], a page that
//!    holds its settled bytes or the bytes of any unsettled write verifies;
//!    any other bytes — a torn write, a zeroed or garbled page — fail, as
//!    damage (up to the 2⁻³² chance per accepted checksum that a CRC32
//!    matches by accident). A settle whose record had not yet reached the
//!    disk is undone by the crash: the page accepts its older bytes again,
//!    which is weaker than before the crash but never a false alarm.
//! 4. Every change costs one 16-byte log record; a sync adds one record plus
//!    one per write still unsettled; the log is folded into a new base file
//!    (*compaction*, O(table)) only when it has grown past a fraction of the
//!    base, so the amortised cost per change is constant (numbers below).
//!
//! # Files
//!
//! For a table whose base is `<stem>` (e.g. `sums`), in one directory:
//!
//! - `<stem>`: the base file, written whole (layout in the
//!   [table docs](super::ChecksumTable); version 2 records its
//!   *generation* `g` and the sequence number its log starts at);
//! - `<stem>.log-<g as 16 hex digits>`: the log continuing base generation
//!   `g` (layout in [`log`](super::log)); during a compaction the logs of
//!   `g` and `g + 1` (and after crashes, more) exist side by side;
//! - `*.tmp`: files being written by a crash-safe replace; ignored and
//!   removed by the next open.
//!
//! What is assumed of the media is in [`storage`](super::storage).
//!
//! # The state of a page
//!
//! Each page has at most one *settled* checksum (in the entry array, as in
//! the in-memory table) and a short list of *unsettled versions*, oldest
//! first: (checksum, sequence number of its intent, and — in memory only —
//! the state of its write: in flight; written, in sync generation `s`; or
//! unknown, for a write that failed and for every version read back at
//! open). A page verifies with its settled checksum or any unsettled
//! version's. A sync settles only written versions; an unknown one is
//! resolved when the page is read holding it (the detector reads every such
//! page when it is built, after an open): it then counts as written, and if
//! the page holds its settled bytes instead, the settled checksum is
//! announced again as the newest version, so that the next sync drops the
//! rest. The list
//! holds each checksum at most once (rewriting a checksum already in the
//! list moves it to the end) and at most
//! [`page_versions_max`](TableConfig::page_versions_max) versions (the
//! detector syncs the store first when a page would exceed it).
//!
//! # The protocol
//!
//! **Write** (one page, or a batch): (1) compute each page's CRC; (2) under
//! the table's lock, append an intent record per page whose CRC is not
//! already its newest version and add the version; (3) make the intents
//! durable: one fsync for the whole batch, shared with every thread whose
//! intents were buffered meanwhile (group commit); (4) write the pages;
//! (5) mark each version *written in sync generation `s`*, `s` read after
//! the write returned. A write that fails leaves its version unwritten: the
//! page may hold either bytes.
//!
//! **Sync**: (1) take a barrier, `g` = the current sync generation, and
//! advance it; (2) sync the store; (3) settle: for each page, the newest
//! version written in a generation ≤ `g` becomes the settled checksum and
//! it and the older versions leave the list; (4) append `except` records for
//! the versions left whose sequence numbers are below the newest settled
//! one's (writes in flight or failed), then a `settle` record, without an
//! fsync; (5) compact if the log is large. Step (1) before (2) is what makes
//! (3) safe: a write that returned before the barrier was read completed
//! before the store's sync began, so the sync made it durable.
//!
//! **Replay** of a log applies the same rules to the records, so the state
//! after reopening equals the state in memory when the last durable record
//! was written, with every version unwritten (nothing in memory survives).
//!
//! **Compaction** to generation `h` (greater than every generation on disk):
//! (1) with the table's lock held, fsync everything buffered; (2) renumber
//! the unsettled versions and encode a new log: header (generation `h`),
//! a batch record and one intent per unsettled version; (3) create it
//! crash-safely (write `…tmp`, fsync, rename, fsync the directory) — appends
//! meanwhile go to the buffer for the new log; (4) write the base of
//! generation `h` (settled checksums only) crash-safely; (5) remove the logs
//! older than `h` and fsync the directory.
//!
//! **Truncate** (the store shrank): the detector syncs the store first, then
//! a `drop` record is appended and fsynced before the entries go.
//!
//! **Open**: remove nothing yet; read the base (generation `b`); replay every
//! log of generation ≥ `b` in order, each starting at or after the sequence
//! number where the previous one ended; if exactly the log of `b` was
//! replayed and it ended cleanly, fsync it (a process that died left its
//! bytes in the page cache; from now on they count as durable) and append to
//! it; otherwise compact (a torn tail cannot be appended to). Then remove
//! temporary files and logs older than the base.
//!
//! # Crash analysis
//!
//! A crash at each step, and what the next open sees:
//!
//! | step | crash leaves | open |
//! |------|--------------|------|
//! | write (2)–(3): intents buffered or being fsynced | intents partly on disk, pages untouched | a torn tail is cut; a surviving intent only adds an accepted checksum for bytes that were never written |
//! | write (4): pages being written | intents durable; each page old, new or torn | old and new verify; torn bytes fail (damage) |
//! | write (5), sync (1)–(2) | as above; the store's sync partly done | same: every unsettled version is still accepted |
//! | sync (3)–(4): settle in memory, records buffered | the settle record lost or torn | the versions stay unsettled: old and new bytes verify |
//! | after the settle record's fsync | settled | only the settled bytes verify (the page is durable) |
//! | compaction (2)–(3): new log being created | a `…tmp` file, or the new log (name maybe not durable) | base `b` and log `b`, plus maybe the new log whose intents repeat ones of log `b` (replay keeps one of each) |
//! | compaction (4): base being replaced | old base (+ `…tmp`) or new base; both logs | either base with the logs at or after its generation gives the same state |
//! | compaction (5): old logs being removed | new base; stale logs | stale logs are older than the base: ignored, removed |
//! | truncate: `drop` record being fsynced | the store's shrink durable; the record maybe not | stale checksums for pages the store no longer has: harmless, a page that comes back is zeros and fails |
//! | open: fresh table, base being created | nothing or a `…tmp` | a fresh table again |
//! | open: compaction | as for compaction | as for compaction |
//!
//! Every sequence number is used once: a new log starts after every slot,
//! torn or not, of the logs before it, so a record left over from a torn
//! tail can never be mistaken for a newer one.
//!
//! # Damage and what it costs
//!
//! The base is framed and checked whole: any damage is
//! [`Error::CorruptFile`](crate::Error::CorruptFile) at open. In a log, a
//! record that does not verify before the last batch record is damage (the
//! batch proves it was durable): `CorruptFile`, naming the offset. A damaged
//! record in the newest fsynced batch cannot be told from a torn tail; it and
//! the records after it are dropped, and a page whose only accepting intent
//! was among them fails verification and is reported and repaired like any
//! corrupt page: the table never accepts bytes it should not. After
//! `CorruptFile` the host decides: restore the files from a backup, or build
//! a new table from pages it trusts (for example by re-sealing them from a
//! verified replica). A base file missing while logs exist is damage too.
//!
//! # Costs
//!
//! - A page write through the detector now waits for an fsync of the log
//!   before the page is written. Concurrent writers share fsyncs, and
//!   [`write_sealed_batch`] makes a whole batch's intents durable with one;
//!   a host that writes pages one at a time from one thread pays one log
//!   fsync per page, and should batch (a checkpoint's dirty pages are a
//!   batch). This is the price of not holding page writes back: everything
//!   that reads the raw store keeps seeing the host's writes at once.
//! - Log bytes per changed page: 16 (one intent), plus per sync 32 and 16
//!   per write left unsettled. A compaction writes 8 bytes per page of the
//!   table when the log reaches [`compact_ratio_pct`](TableConfig::compact_ratio_pct)
//!   (default 50) % of the base, i.e. after base/32 changes: amortised,
//!   16 + 16 × 100 / ratio bytes per change (48 by default), independent of
//!   the table's size. The `checksum_table` bench measures it.
//! - Memory: 8 bytes per page as before, plus about 32 bytes per unsettled
//!   version, at most [`unsettled_versions_max`](TableConfig::unsettled_versions_max)
//!   before the detector syncs the store on its own.
//!
//! [`CorruptionDetector::write_sealed`]: crate::CorruptionDetector::write_sealed
//! [`write_sealed_batch`]: crate::CorruptionDetector::write_sealed_batch
//! [`CorruptionDetector::sync`]: crate::CorruptionDetector::sync
//! [`ChecksumTable::open`]: super::ChecksumTable::open

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::appender::Appender;
use super::log::{encode_record, LogHeader, LogRecord, LOG_HEADER_LEN, RECORD_LEN};
use super::storage::{replace, DirTableStorage, TableStorage};
use super::table::{check_page_size, encode_base, ChecksumTable, PRESENT, UNSETTLED};
use super::{page_crc, MAX_TABLE_PAGES};
use crate::error::{Error, Result};
use crate::host::PageStore;
use crate::types::PageId;

/// Buffered settle records are fsynced on their own past this many bytes.
const LAZY_BYTES_MAX: usize = 64 << 10;

/// Configuration of a durable [`ChecksumTable`].
#[must_use]
#[derive(Clone, Debug)]
pub struct TableConfig {
    pub(super) page_size: usize,
    pub(super) pages_max: u64,
    pub(super) compact_ratio_pct: u64,
    pub(super) compact_log_bytes_min: u64,
    pub(super) unsettled_versions_max: usize,
    pub(super) page_versions_max: usize,
}

impl TableConfig {
    /// Defaults for pages of `page_size` bytes: at most
    /// [`MAX_TABLE_PAGES`] pages, compaction when the log reaches 50 % of
    /// the base and at least 1 MiB, at most 1 Mi unsettled versions and 8
    /// per page.
    pub fn new(page_size: usize) -> Self {
        TableConfig {
            page_size,
            pages_max: MAX_TABLE_PAGES,
            compact_ratio_pct: 50,
            compact_log_bytes_min: 1 << 20,
            unsettled_versions_max: 1 << 20,
            page_versions_max: 8,
        }
    }

    /// The most pages the table may describe (default [`MAX_TABLE_PAGES`]):
    /// intents for pages at or past it are refused, and a file naming one is
    /// [`Error::CorruptFile`]. Set it to the store's size limit to bound the
    /// memory a damaged file can make the table allocate.
    pub fn pages_max(mut self, pages: u64) -> Self {
        self.pages_max = pages;
        self
    }

    /// Compact when the log reaches this percentage of the base file's size
    /// (default 50; at least 1). Lower means less log to replay at open and
    /// more base rewrites.
    pub fn compact_ratio_pct(mut self, pct: u64) -> Self {
        self.compact_ratio_pct = pct;
        self
    }

    /// Never compact a log smaller than this (default 1 MiB).
    pub fn compact_log_bytes_min(mut self, bytes: u64) -> Self {
        self.compact_log_bytes_min = bytes;
        self
    }

    /// Unsettled versions (pages written since the last sync, roughly) past
    /// which the detector syncs the store before the next write (default
    /// 1 Mi, about 32 MiB of memory; at least 1).
    pub fn unsettled_versions_max(mut self, versions: usize) -> Self {
        self.unsettled_versions_max = versions;
        self
    }

    /// Unsettled versions one page may have (default 8; at least 2). A page
    /// rewritten more often between syncs makes the detector sync the store
    /// first; past it, the oldest version whose write failed stops being
    /// accepted.
    pub fn page_versions_max(mut self, versions: usize) -> Self {
        self.page_versions_max = versions;
        self
    }

    fn validate(&self) -> Result<()> {
        check_page_size(self.page_size)?;
        if self.pages_max == 0 || self.pages_max > MAX_TABLE_PAGES {
            return Err(Error::config(
                "pages_max",
                format!(
                    "is {}; it must be between 1 and {MAX_TABLE_PAGES}",
                    self.pages_max
                ),
            ));
        }
        if self.compact_ratio_pct == 0 {
            return Err(Error::config("compact_ratio_pct", "is 0; it must be at least 1"));
        }
        if self.unsettled_versions_max == 0 {
            return Err(Error::config(
                "unsettled_versions_max",
                "is 0; it must be at least 1",
            ));
        }
        if self.page_versions_max < 2 {
            return Err(Error::config(
                "page_versions_max",
                format!(
                    "is {}; it must be at least 2 (the written version and one in flight)",
                    self.page_versions_max
                ),
            ));
        }
        Ok(())
    }

    /// Opens (creating it if needed) the table whose base file is `path`;
    /// the logs live next to it.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad setting or a path without a file
    /// name; [`Error::CorruptFile`], [`Error::UnsupportedVersion`] or
    /// [`Error::PageSizeMismatch`] for files that cannot be read as this
    /// table (see the module docs); [`Error::Io`].
    pub fn open(self, path: &Path) -> Result<ChecksumTable> {
        let stem = path
            .file_name()
            .and_then(|s| s.to_str())
            .ok_or_else(|| {
                Error::config(
                    "path",
                    format!("{} has no UTF-8 file name for the table", path.display()),
                )
            })?
            .to_string();
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        self.open_on(Arc::new(DirTableStorage::new(dir)), &stem)
    }

    /// Opens (creating it if needed) the table whose base file is named
    /// `stem` in `storage`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_on(self, storage: Arc<dyn TableStorage>, stem: &str) -> Result<ChecksumTable> {
        self.validate()?;
        if stem.is_empty() || stem.contains(['/', '\\']) || stem.ends_with(".tmp") {
            return Err(Error::config(
                "stem",
                format!("{stem:?} is not a plain file name"),
            ));
        }
        super::recovery::open(self, storage, stem)
    }
}

/// Counters and sizes of a [`ChecksumTable`] (zeros for an in-memory one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Generation of the base file.
    pub generation: u64,
    /// Size of the base file in bytes.
    pub base_bytes: u64,
    /// Size of the current log in bytes (counting what is buffered).
    pub log_bytes: u64,
    /// Pages with unsettled versions.
    pub unsettled_pages: u64,
    /// Unsettled versions over all pages.
    pub unsettled_versions: u64,
    /// Fsyncs of the log (each covers every record buffered before it).
    pub log_syncs: u64,
    /// Compactions since open (counting one made by the open itself).
    pub compactions: u64,
    /// Bytes of torn log tails found at open.
    pub torn_bytes_at_open: u64,
}

/// One unsettled version of a page.
#[derive(Clone, Copy, Debug)]
pub(super) struct Version {
    pub(super) crc: u32,
    pub(super) seq: u64,
    pub(super) state: State,
}

/// Where the write of a version stands (in memory only: every version read
/// back at open is `Unknown`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Announced; its write has not returned.
    InFlight,
    /// Its write failed, or it was read back at open: the page may or may
    /// not hold it. A sync never settles it; a read of the page that finds
    /// it does ([`ChecksumTable::resolve`]).
    Unknown,
    /// Its write returned (or the page was read holding it) in this sync
    /// generation: the store's sync after the next barrier makes it durable.
    Written(u64),
}

impl Version {
    fn written_by(&self, barrier: u64) -> bool {
        matches!(self.state, State::Written(w) if w <= barrier)
    }
}

/// The unsettled versions of every page that has some.
#[derive(Debug, Default)]
pub(super) struct Unsettled {
    pub(super) pages: HashMap<u64, Vec<Version>>,
    pub(super) versions: usize,
}

/// What is on disk, as far as this process knows; its lock serialises
/// settles, truncations and compactions.
#[derive(Debug)]
pub(super) struct Files {
    pub(super) base_generation: u64,
    pub(super) base_bytes: u64,
    /// Generations of the log files present.
    pub(super) logs: BTreeSet<u64>,
    /// The highest generation ever seen on disk.
    pub(super) max_generation: u64,
}

/// The durable part of a table.
pub(crate) struct Durable {
    pub(super) storage: Arc<dyn TableStorage>,
    pub(super) stem: String,
    pub(super) config: TableConfig,
    pub(super) unsettled: Mutex<Unsettled>,
    pub(super) log: Appender,
    pub(super) files: Mutex<Files>,
    pub(super) sync_generation: AtomicU64,
    pub(super) compactions: AtomicU64,
    pub(super) torn_bytes_at_open: u64,
}

impl fmt::Debug for Durable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Durable")
            .field("storage", &self.storage)
            .field("stem", &self.stem)
            .field("files", &*self.files.lock())
            .finish_non_exhaustive()
    }
}

/// The name of the log of generation `generation`.
pub(super) fn log_name(stem: &str, generation: u64) -> String {
    format!("{stem}.log-{generation:016x}")
}

/// The generation of a log file name of this table.
pub(super) fn parse_log_name(stem: &str, name: &str) -> Option<u64> {
    let hex = name.strip_prefix(stem)?.strip_prefix(".log-")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

impl Durable {
    /// The checksum of the newest unsettled version of `page`.
    pub(super) fn newest(&self, page: PageId) -> Option<u32> {
        let un = self.unsettled.lock();
        un.pages.get(&page.0)?.last().map(|v| v.crc)
    }

    /// The newest unsettled checksum of every page that has one.
    pub(super) fn newest_of_all(&self) -> HashMap<u64, u32> {
        let un = self.unsettled.lock();
        un.pages
            .iter()
            .filter_map(|(&p, vs)| Some((p, vs.last()?.crc)))
            .collect()
    }

    /// Whether `crc` is the settled checksum of `page` or one of its
    /// unsettled versions' (looked at under the lock every change takes).
    pub(super) fn accepts(&self, table: &ChecksumTable, page: PageId, crc: u32) -> bool {
        let un = self.unsettled.lock();
        let e = table.entry(page);
        (e & PRESENT != 0 && e as u32 == crc)
            || un
                .pages
                .get(&page.0)
                .is_some_and(|vs| vs.iter().any(|v| v.crc == crc))
    }

    pub(super) fn truncate(&self, table: &ChecksumTable, page_count: u64) -> Result<()> {
        let _files = self.files.lock();
        let seq = {
            let mut un = self.unsettled.lock();
            let pending_past = un.pages.keys().any(|&p| p >= page_count);
            if table.len() as u64 <= page_count && !pending_past {
                return Ok(());
            }
            let first = u32::try_from(page_count).expect("below the table's length, so below 2^32");
            let seq = {
                let mut log = self.log.state.lock();
                log.check()?;
                log.append(LogRecord::Drop {
                    first,
                    last: u32::MAX,
                })
            };
            let dropped: usize = un
                .pages
                .iter()
                .filter(|(p, _)| **p >= page_count)
                .map(|(_, vs)| vs.len())
                .sum();
            un.pages.retain(|p, _| *p < page_count);
            un.versions -= dropped;
            table.truncate_entries(page_count);
            seq
        };
        self.log.make_durable(&*self.storage, seq)
    }
}

/// A page change announced to the table before its write.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Intent {
    page: PageId,
    crc: u32,
}

/// A sync barrier: versions written in a generation up to this one are
/// covered by the store sync that follows it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SyncBarrier(u64);

/// The write path of the detector, and the durable table's own operations.
impl ChecksumTable {
    /// Whether the detector should sync the store (settling what it can)
    /// before writing `pages`: some page has its limit of unsettled
    /// versions, or the whole table would pass its limit.
    pub(crate) fn needs_sync(&self, pages: &[PageId]) -> bool {
        let Some(d) = &self.durable else {
            return false;
        };
        let un = d.unsettled.lock();
        un.versions + pages.len() > d.config.unsettled_versions_max
            || pages.iter().any(|p| {
                un.pages.get(&p.0).is_some_and(|vs| {
                    vs.len() >= d.config.page_versions_max
                        && vs.iter().any(|v| matches!(v.state, State::Written(_)))
                })
            })
    }

    /// Announces page changes: for a durable table, logs an intent per
    /// change and returns once they are all durable (one fsync). Call
    /// [`complete`](Self::complete) for each after its write.
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] past the configured limit; the log's error
    /// (the table is then poisoned); [`Error::Poisoned`].
    pub(crate) fn intend(&self, changes: &[(PageId, u32)]) -> Result<Vec<Intent>> {
        let intents = changes
            .iter()
            .map(|&(page, crc)| Intent { page, crc })
            .collect();
        let Some(d) = &self.durable else {
            return Ok(intents);
        };
        if let Some(&(page, _)) = changes.iter().find(|(p, _)| p.0 >= d.config.pages_max) {
            return Err(Error::PageOutOfRange {
                page,
                page_count: d.config.pages_max,
            });
        }
        let mut wait_for: Option<u64> = None;
        {
            let mut un = d.unsettled.lock();
            let mut log = d.log.state.lock();
            log.check()?;
            for &(page, crc) in changes {
                let e = self.entry(page);
                let versions = un.pages.get(&page.0);
                let newest = match versions.and_then(|vs| vs.last()) {
                    Some(v) => Some((v.crc, Some(v.seq))),
                    None => (e & PRESENT != 0).then_some((e as u32, None)),
                };
                if let Some((newest_crc, seq)) = newest {
                    if newest_crc == crc {
                        // Already the newest: nothing to log, but wait for
                        // its intent if it is not durable yet.
                        wait_for = wait_for.max(seq);
                        continue;
                    }
                }
                self.update_entry(page, |e| e | UNSETTLED)?;
                let Unsettled { pages, versions } = &mut *un;
                let vs = pages.entry(page.0).or_default();
                if let Some(i) = vs.iter().position(|v| v.crc == crc) {
                    vs.remove(i);
                    *versions -= 1;
                }
                if vs.len() >= d.config.page_versions_max {
                    // Only a version nobody can settle goes; versions written
                    // since the last sync stay (the detector syncs first when
                    // there are too many of them, so they are few).
                    if let Some(i) = vs.iter().position(|v| v.state == State::Unknown) {
                        let old = vs.remove(i);
                        *versions -= 1;
                        log.append(LogRecord::Retract { seq: old.seq });
                        tracing::warn!(%page, "page has too many unsettled versions; the oldest failed write is no longer accepted");
                    }
                }
                let seq = log.append(LogRecord::Intent {
                    page: u32::try_from(page.0).expect("below pages_max"),
                    crc,
                });
                vs.push(Version {
                    crc,
                    seq,
                    state: State::InFlight,
                });
                *versions += 1;
                wait_for = Some(seq);
            }
        }
        if let Some(seq) = wait_for {
            d.log.make_durable(&*d.storage, seq)?;
        }
        Ok(intents)
    }

    /// Records that an announced change's write returned (`written`) or
    /// failed. An in-memory table records the checksum only when the write
    /// succeeded (a failed write leaves the old bytes and their checksum); a
    /// durable one marks the version written in the current sync
    /// generation, or leaves it unwritten (accepted, never settled).
    ///
    /// # Errors
    /// An in-memory table that cannot grow to the page.
    pub(crate) fn complete(&self, intent: &Intent, written: bool) -> Result<()> {
        let Some(d) = &self.durable else {
            return if written {
                self.record(intent.page, intent.crc)
            } else {
                Ok(())
            };
        };
        // Read after the write returned: a barrier taken before this load
        // was taken after the write completed.
        let generation = d.sync_generation.load(Ordering::SeqCst);
        let mut un = d.unsettled.lock();
        let version = un
            .pages
            .get_mut(&intent.page.0)
            .and_then(|vs| vs.iter_mut().find(|v| v.crc == intent.crc));
        if let Some(v) = version {
            v.state = match (v.state, written) {
                (State::Written(w), _) => State::Written(w),
                (_, true) => State::Written(generation),
                (_, false) => State::Unknown,
            };
        }
        Ok(())
    }

    /// Resolves versions whose fate is unknown (read back at open, or whose
    /// write failed) by reading the page from `store`: the version the page
    /// holds — or its settled checksum, re-announced as the newest version —
    /// counts as written now, and the next sync settles it. Pages with a
    /// write in flight, pages that cannot be read and pages that hold none
    /// of their accepted versions (damage, which verification reports) are
    /// left as they are. The detector calls it when it is built.
    ///
    /// # Errors
    /// [`Error::Poisoned`] when the table's log is poisoned.
    pub(crate) fn resolve(&self, store: &dyn PageStore) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        let pages: Vec<u64> = {
            let un = d.unsettled.lock();
            un.pages
                .iter()
                .filter(|(_, vs)| vs.iter().any(|v| v.state == State::Unknown))
                .map(|(p, _)| *p)
                .collect()
        };
        let mut buf = vec![0u8; self.page_size];
        let mut resolved = 0usize;
        for page in pages.into_iter().map(PageId) {
            if page.0 >= store.page_count() || store.read_page(page, &mut buf).is_err() {
                continue;
            }
            let crc = page_crc(page, &buf);
            let generation = d.sync_generation.load(Ordering::SeqCst);
            let mut un = d.unsettled.lock();
            let Unsettled { pages, versions } = &mut *un;
            let Some(vs) = pages.get_mut(&page.0) else {
                continue;
            };
            if vs.iter().any(|v| v.state == State::InFlight) {
                continue;
            }
            if let Some(v) = vs.iter_mut().find(|v| v.crc == crc) {
                if v.state == State::Unknown {
                    v.state = State::Written(generation);
                    resolved += 1;
                }
                continue;
            }
            let e = self.entry(page);
            if e & PRESENT != 0 && e as u32 == crc {
                let mut log = d.log.state.lock();
                log.check()?;
                let seq = log.append(LogRecord::Intent {
                    page: u32::try_from(page.0).expect("below pages_max"),
                    crc,
                });
                vs.push(Version {
                    crc,
                    seq,
                    state: State::Written(generation),
                });
                *versions += 1;
                resolved += 1;
            }
        }
        if resolved > 0 {
            tracing::debug!(resolved, "unsettled checksum versions resolved from the store");
        }
        Ok(())
    }

    /// Takes a sync barrier (before the store's sync).
    pub(crate) fn sync_barrier(&self) -> SyncBarrier {
        SyncBarrier(
            self.durable
                .as_ref()
                .map_or(0, |d| d.sync_generation.fetch_add(1, Ordering::SeqCst)),
        )
    }

    /// Settles what the store's sync after `barrier` made durable, and
    /// compacts when the log has grown large.
    ///
    /// # Errors
    /// The log's or the compaction's error.
    pub(crate) fn settle(&self, barrier: SyncBarrier) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        let mut files = d.files.lock();
        let flush = {
            let mut un = d.unsettled.lock();
            let Unsettled { pages, versions } = &mut *un;
            let mut newest_settled: Option<u64> = None;
            pages.retain(|&page, vs| {
                let Some(k) = vs.iter().rposition(|v| v.written_by(barrier.0)) else {
                    return true;
                };
                let v = vs[k];
                vs.drain(..=k);
                *versions -= k + 1;
                newest_settled = newest_settled.max(Some(v.seq));
                let flag = if vs.is_empty() { 0 } else { UNSETTLED };
                self.set_entry(PageId(page), PRESENT | u64::from(v.crc) | flag);
                !vs.is_empty()
            });
            let mut log = d.log.state.lock();
            match newest_settled {
                Some(newest) if log.check().is_ok() => {
                    let below = newest + 1;
                    for v in pages.values().flatten().filter(|v| v.seq < below) {
                        log.append(LogRecord::Except { seq: v.seq });
                    }
                    log.append(LogRecord::Settle { below });
                    log.buffered() >= LAZY_BYTES_MAX
                }
                _ => false,
            }
        };
        if flush {
            d.log.flush(&*d.storage)?;
        }
        if self.should_compact(d, &files) {
            self.compact_locked(d, &mut files)?;
        }
        Ok(())
    }

    fn set_entry(&self, page: PageId, value: u64) {
        let entries = self.entries.read();
        let e = entries.get(page.0 as usize);
        debug_assert!(e.is_some(), "a page with unsettled versions has an entry");
        if let Some(e) = e {
            e.store(value, Ordering::Release);
        }
    }

    fn should_compact(&self, d: &Durable, files: &Files) -> bool {
        let log_bytes = d.log.state.lock().file_bytes;
        let threshold = files.base_bytes.saturating_mul(d.config.compact_ratio_pct) / 100;
        log_bytes >= threshold.max(d.config.compact_log_bytes_min)
    }

    /// Makes every log record written so far durable (settle records are
    /// otherwise fsynced with the next intent). O(records buffered). A no-op
    /// for an in-memory table.
    ///
    /// # Errors
    /// The log's I/O error (the table is then poisoned), or
    /// [`Error::Poisoned`].
    pub fn flush(&self) -> Result<()> {
        match &self.durable {
            Some(d) => d.log.flush(&*d.storage),
            None => Ok(()),
        }
    }

    /// Folds the log into a new base file now (see the module docs; the
    /// detector's sync does it when the log has grown past its threshold).
    /// O(table). A no-op for an in-memory table.
    ///
    /// # Errors
    /// [`Error::Io`]; a failure to create the new log poisons the table, a
    /// failure later leaves it working on the new log (a later compaction
    /// tries again).
    pub fn compact(&self) -> Result<()> {
        match &self.durable {
            Some(d) => {
                let mut files = d.files.lock();
                self.compact_locked(d, &mut files)
            }
            None => Ok(()),
        }
    }

    pub(super) fn compact_locked(&self, d: &Durable, files: &mut Files) -> Result<()> {
        let generation = files.max_generation + 1;
        let name = log_name(&d.stem, generation);
        let (bytes, first_seq, created_to) = {
            let mut un = d.unsettled.lock();
            // Every append happens under `unsettled`, which is held, so
            // after this flush nothing is buffered for the old log.
            d.log.flush(&*d.storage)?;
            let mut log = d.log.state.lock();
            log.check()?;
            let first_seq = log.next_seq;
            let mut bytes = LogHeader {
                page_size: self.page_size as u32,
                generation,
                first_seq,
            }
            .encode()
            .to_vec();
            let mut order: Vec<(u64, u64, usize)> = un
                .pages
                .iter()
                .flat_map(|(&page, vs)| vs.iter().enumerate().map(move |(i, v)| (v.seq, page, i)))
                .collect();
            order.sort_unstable();
            let mut seq = first_seq;
            encode_record(&mut bytes, seq, LogRecord::Batch);
            seq += 1;
            for (_, page, i) in order {
                let v = &mut un.pages.get_mut(&page).expect("collected above")[i];
                let page32 = u32::try_from(page).expect("below pages_max");
                encode_record(&mut bytes, seq, LogRecord::Intent { page: page32, crc: v.crc });
                v.seq = seq;
                seq += 1;
            }
            let slots = seq - first_seq;
            debug_assert_eq!(bytes.len(), LOG_HEADER_LEN + slots as usize * RECORD_LEN);
            Appender::begin_switch(&mut log, name.clone(), generation, slots, bytes.len() as u64);
            (bytes, first_seq, seq)
        };
        let created = replace(&*d.storage, &name, &bytes);
        d.log.end_switch(created_to, &created);
        created?;
        files.logs.insert(generation);
        files.max_generation = generation;
        let base = self.encode_settled(generation, first_seq);
        replace(&*d.storage, &d.stem, &base)?;
        files.base_generation = generation;
        files.base_bytes = base.len() as u64;
        let old: Vec<u64> = files.logs.range(..generation).copied().collect();
        for g in &old {
            d.storage.remove(&log_name(&d.stem, *g))?;
            files.logs.remove(g);
        }
        if !old.is_empty() {
            d.storage.sync_dir()?;
        }
        d.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(generation, base_bytes = base.len(), "checksum table compacted");
        Ok(())
    }

    /// The base file of `generation`: the settled checksums only.
    fn encode_settled(&self, generation: u64, next_seq: u64) -> Vec<u8> {
        let entries = self.entries.read();
        let settled = entries
            .iter()
            .map(|e| e.load(Ordering::Acquire) & (PRESENT | u64::from(u32::MAX)));
        encode_base(self.page_size, generation, next_seq, entries.len(), settled)
    }

    /// Whether the table holds anything for pages at or past `page_count`.
    pub(crate) fn has_pages_from(&self, page_count: u64) -> bool {
        self.len() as u64 > page_count
            || self
                .durable
                .as_ref()
                .is_some_and(|d| d.unsettled.lock().pages.keys().any(|&p| p >= page_count))
    }

    /// Sizes and counters.
    #[must_use]
    pub fn stats(&self) -> TableStats {
        let Some(d) = &self.durable else {
            return TableStats::default();
        };
        let (generation, base_bytes) = {
            let f = d.files.lock();
            (f.base_generation, f.base_bytes)
        };
        let (unsettled_pages, unsettled_versions) = {
            let un = d.unsettled.lock();
            (un.pages.len() as u64, un.versions as u64)
        };
        let (log_bytes, log_syncs) = {
            let l = d.log.state.lock();
            (l.file_bytes, l.syncs)
        };
        TableStats {
            generation,
            base_bytes,
            log_bytes,
            unsettled_pages,
            unsettled_versions,
            log_syncs,
            compactions: d.compactions.load(Ordering::Relaxed),
            torn_bytes_at_open: d.torn_bytes_at_open,
        }
    }
}
