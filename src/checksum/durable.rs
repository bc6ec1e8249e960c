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
//!    becomes durable with the next intent, flush or compaction, and at
//!    the latest when the table is closed (dropped), so a clean close never
//!    leaves older versions accepted at the next open. The exception is a
//!    page's first settled checksum (a new page, or one dropped or marked
//!    unallocated before): that sync fsyncs the log before it returns, so
//!    a page the host synced never goes back to having no checksum. While
//!    the log is stalled such a page is not settled and the sync fails
//!    ([`crate::Error::Stalled`]) until the log resumes (a sync retries a
//!    stall whose backoff has passed, as a write does); pages that have a
//!    settled checksum settle in memory as before.
//! 3. After a crash at any point and [`ChecksumTable::open`], a page that
//!    holds its settled bytes or the bytes of any unsettled write verifies;
//!    any other bytes — a torn write, a zeroed or garbled page — fail, as
//!    damage (up to the 2⁻³² chance per accepted checksum that a CRC32
//!    matches by accident). A settle whose record had not yet reached the
//!    disk is undone by the crash: the page accepts its older bytes again,
//!    which is weaker than before the crash but never a false alarm.
//! 4. A page marked unallocated ([`ChecksumTable::mark_free`], which
//!    [`CorruptionDetector::forget`] calls) is durably so when the call
//!    returns; after a crash at any step before that it is either free or
//!    as it was. A free page accepts no bytes (verification answers
//!    [`crate::Error::PageUnallocated`], not a corruption) until it is
//!    written again; a write of it is a write like any other (the mark
//!    stays, beside the new version, until the write settles).
//! 5. A checksum recorded by adoption ([`CorruptionDetector::adopt`]) is
//!    settled at once, and only for a page that has nothing (no checksum,
//!    no unsettled write, no mark): a host write racing the adoption always
//!    wins. After a crash each adopted page has its checksum or nothing.
//! 6. Every change costs one log record of 6 or 7 bytes (one frame of 32
//!    bytes more per append; the frame is written twice, see
//!    [`log`](super::log)); a sync adds one record plus
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
//! A base of generation 1 or more is written only after the log of its
//! generation, and that log is removed only after a newer base: an open
//! that finds the base but not its log refuses
//! ([`Error::CorruptFile`], naming the missing
//! log) rather than lose the changes it held without a word.
//!
//! What is assumed of the media is in [`storage`](super::storage).
//!
//! # The state of a page
//!
//! Each page has at most one *settled* checksum or an unallocated mark
//! (in the entry array, as in the in-memory table) and a short list of
//! *unsettled versions*, oldest first: (checksum, sequence number of its intent, and — in memory only —
//! the state of its write: in flight; written, in sync generation `s`; or
//! unknown, for a write that failed and for every version read back at
//! open). A page verifies with its settled checksum or any unsettled
//! version's. A sync settles only written versions; an unknown one is
//! resolved when the page is read holding it (the detector reads every such
//! page when it is built, after an open): it then counts as written, and
//! the next sync settles it and drops the older versions. The versions
//! newer than the bytes the page holds (all of them, when it holds its
//! settled bytes) stay accepted, of unknown fate, until the page is next
//! written: the disk lost those writes, but one of them may be a write the
//! host acknowledged (a disk that loses a write and reports success), which
//! its replicas hold and a repair must be able to write back. Keeping them
//! admits no stale copy — only versions newer than the page's bytes stay —
//! and the host's [expected LSN](crate::CorruptionConfig::expected_page_lsn)
//! then tells the older bytes the page holds apart from the acknowledged
//! ones. The list holds each checksum at most once (rewriting a checksum
//! already in the list moves it to the end) and at most
//! [`page_versions_max`](TableConfig::page_versions_max) versions: the
//! detector syncs the store first when a page would exceed it, and when
//! that cannot help (its versions are all of unknown fate) the oldest of
//! unknown fate is retracted (a `retract` record).
//!
//! # The protocol
//!
//! **Write** (one page, or a batch): (1) compute each page's CRC; (2) under
//! the table's lock, append an intent record per page whose CRC is not
//! already its newest version and add the version; (3) make the intents
//! durable: one fsync for the whole batch, shared with every thread whose
//! intents were buffered meanwhile (group commit); (4) write the pages, in
//! order, stopping at the first failure; (5) record the batch's outcome
//! once: its first `k` writes returned in sync generation `s`, read after
//! they returned (their versions are *written*), the rest failed or were
//! never issued (their fate is *unknown*: the page may hold either bytes).
//!
//! **Sync**: (1) take a barrier, `g` = the current sync generation, and
//! advance it; (2) sync the store; (3) settle: for each page, the newest
//! version written in a generation ≤ `g` becomes the settled checksum and
//! it and the older versions leave the list; (4) append `except` records for
//! the versions left whose sequence numbers are below the newest settled
//! one's (writes in flight or failed), then a `settle` record, without an
//! fsync — unless a page got its first settled checksum (a new page, or one
//! dropped or marked unallocated before), which fsyncs the log before the
//! sync returns; (5) compact if the log is large. Step (1) before (2) is what makes
//! (3) safe: a write that returned before the barrier was read completed
//! before the store's sync began, so the sync made it durable.
//!
//! **Replay** of a log applies the same rules to the records, so the state
//! after reopening equals the state in memory when the last durable record
//! was written, with every version of unknown fate (nothing in memory
//! survives). The detector resolves them when it is built: it reads each
//! such page, and the version the page holds counts as written; when any
//! page was found so, the build then syncs the store and settles them at
//! once, with the `settle` record (and `except` records for the newer
//! versions, which stay) fsynced before the detector takes a write.
//! Leaving that to the host's next sync would let a later write of such a
//! page, torn by a crash, leave it without a settled checksum and holding
//! none of its versions, which the next build resolves as lost: the
//! checksum of the bytes the page and its replicas hold would be gone. A
//! page holding its settled bytes keeps its versions as they are.
//!
//! **Compaction** to generation `h` (greater than every generation on disk):
//! (1) with the table's lock held, fsync everything buffered; (2) renumber
//! the unsettled versions and encode a new log: header (generation `h`),
//! one frame holding an intent per unsettled version; (3) create it
//! crash-safely (write `…tmp`, fsync, rename, fsync the directory) — appends
//! meanwhile go to the buffer for the new log; (4) write the base of
//! generation `h` (settled checksums and unallocated marks only) crash-safely; (5) remove the logs
//! older than `h` and fsync the directory.
//!
//! **Truncate** (the store shrank): the detector syncs the store first, then
//! a `drop` record is appended and fsynced before the entries go.
//!
//! **Free mark**: under the table's lock, append a `free` record, drop the
//! page's unsettled versions and set its entry to the mark; then make the
//! record durable (one fsync, shared as for intents) before returning. The
//! detector holds the page's write lock throughout, so no write of the page
//! is in flight. A later write of the page logs its intent after the mark;
//! the settle that covers the write replaces the mark with its checksum.
//! The `drop` record would not do: a page without a checksum is
//! [`crate::Error::MissingChecksum`] (reported as damage), a free one is not.
//!
//! **Claim** (adoption): the store is synced before the first claim, so the bytes read are
//! durable. Then, per batch and under the table's lock: for each page whose
//! entry is still empty (no checksum, no slot, no mark), append a `claim`
//! record (for an all-zero page taken as unallocated, a `free` record) and
//! set the settled checksum (or the mark). Replay applies a `claim` only to
//! a page that has nothing at that point of the log, which is what the
//! writer checked under the same lock, so replay and memory agree. Claims
//! are fsynced once per 1 MiB of buffered log (about 170 Ki claims) and when
//! adoption ends; a later intent's fsync covers them too, since the log is
//! written in order.
//!
//! **Resolve** also treats pages without a settled checksum: one that holds
//! none of its versions (all of unknown fate after a crash) lost those
//! writes, or holds a torn one that nobody vouched for either; it goes back
//! to nothing (a `drop` record for the page) or to its mark (a `free`
//! record), so that the next adoption can claim it, or it stays free.
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
//! | sync (3)–(4): settle in memory, records buffered | the settle record lost or torn | the versions stay unsettled: old and new bytes verify (the record of a page's first settled checksum is fsynced before the sync returns, so a page the host synced never goes back to having none: rotted before the next build, it is damage that a replica's copy repairs, not a page without a checksum or a free one) |
//! | after the settle record's fsync | settled | only the settled bytes verify (the page is durable) |
//! | compaction (2)–(3): new log being created | a `…tmp` file, or the new log (name maybe not durable) | base `b` and log `b`, plus maybe the new log whose intents repeat ones of log `b` (replay keeps one of each) |
//! | compaction (4): base being replaced | old base (+ `…tmp`) or new base; both logs | either base with the logs at or after its generation gives the same state |
//! | compaction (5): old logs being removed | new base; stale logs | stale logs are older than the base: ignored, removed |
//! | truncate: `drop` record being fsynced | the store's shrink durable; the record maybe not | stale checksums for pages the store no longer has: harmless, a page that comes back is zeros and fails |
//! | free mark: record buffered or being fsynced | the record lost or torn, or durable | the page as it was (its checksums accepted as before), or free; never half: one record does it |
//! | free mark, then a write of the page: its intent buffered, fsynced, page being written | mark durable; the intent maybe | the page free, with the new version accepted if the intent survived: old bytes are free (unallocated), new bytes verify; the resolve at build returns a page holding neither version to its mark |
//! | adoption: claims buffered or being fsynced | a prefix of the claim records | each page claimed (verifies) or with nothing, as before adoption; adopting again claims the rest |
//! | adoption, racing a host write of the same page | the host's intent before or after the claim, in log order | intent first: the claim was refused and replay refuses it too; claim first: an ordinary write after a settled checksum |
//! | detector build: resolving a page without a settled checksum, its `drop`/`free` record buffered | the record lost or torn | the versions are of unknown fate again; the next build resolves them |
//! | open: fresh table, base being created | nothing or a `…tmp` | a fresh table again |
//! | open: compaction | as for compaction | as for compaction |
//! | detector build: resolving, then the store's sync and the `settle` record being fsynced | the record lost or torn | the versions are of unknown fate again; no page was written meanwhile, so the next build resolves them the same way |
//! | after the build's `settle` fsync, a write of a resolved page torn by a crash | the page's checksum settled; the new intent durable | the page holds neither version: damage, which a replica copy of the settled bytes (or of the new ones) repairs |
//!
//! A failed write or fsync of the log is not a crash but is treated like
//! one: the table refuses further changes, so the detector writes no page
//! whose intent may not be durable; verification goes on. A retryable
//! failure stalls the log ([`crate::Error::Stalled`]) until a resume writes
//! again what it held (see [a stalled log](super#a-stalled-log)); any other
//! poisons the table ([`crate::Error::Poisoned`]), and reopening recovers.
//!
//! Every sequence number is used once: a new log starts after every number
//! the logs before it used or may have used (a torn frame counts one per
//! byte), so a record left over from a torn tail can never be mistaken for
//! a newer one.
//!
//! # Damage and what it costs
//!
//! The base is framed and checked whole: any damage is
//! [`crate::Error::CorruptFile`] at open. A log of version 4 (written by
//! this build) holds every frame twice, so damage confined to one copy of
//! a frame costs nothing: the other copy is read, the damage is logged,
//! and the open compacts (both copies written again). A frame whose two
//! copies are both damaged before a later whole frame is damage (the
//! later frame proves it was durable; in versions 1 and 2, a record before
//! the last batch record; in version 3, one copy suffices):
//! `CorruptFile`, naming the offset.
//!
//! The newest fsynced frame is the one no later frame vouches for. Its
//! damage cannot be told from a torn tail by anything written after its
//! fsync (a crash can always come first), so version 4 does not try: a
//! bit flipped in either copy is read from the other, and only both
//! copies damaged (two independent faults in one small frame; or any
//! damage to the newest frame of a version-3 log, before the open that
//! compacts it into version 4) reads as a torn tail: it and
//! the records after it are dropped, and a page whose only accepting intent
//! was among them fails verification and is reported like any corrupt page:
//! the table never accepts bytes it should not. A replica copy repairs it
//! only if it holds a version the table still accepts; when every replica
//! holds the same newest version (the one whose intent was dropped), no
//! copy verifies and the page stays fenced until the host writes it again
//! from a copy it trusts. Damage to the log's 36-byte header is
//! `CorruptFile` (it is not mirrored). After
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
//! - Log bytes per changed page: 6 or 7 (one intent: 6 when the page is
//!   less than 64 pages after the one logged before it, 7 up to 8 Ki
//!   pages), plus per append a 32-byte frame, per sync a settle of 2 bytes
//!   and 2 or 3 per write left unsettled (and one log fsync for a sync that
//!   gives a page its first settled checksum: a file that grows, or a page
//!   marked unallocated written again, pays it once per such sync; a
//!   rewrite of pages already settled never); a free mark 3 or more (and one
//!   fsync); 6 per adopted page (one fsync per 1 MiB of claims, about
//!   170 Ki pages, and one at the end) — each of these written twice (the
//!   frame and its mirror, in the same write and fsync). No CRC is
//!   computed per record: one per frame, outside the log's lock, and none
//!   for the mirror. A compaction writes 8 bytes per
//!   page of the table when the log reaches
//!   [`compact_ratio_pct`](TableConfig::compact_ratio_pct) (default 100) %
//!   of the base, i.e. after about base/14 changes: amortised, about
//!   14 + 14 × 100 / ratio bytes per change (28 by default; version 3
//!   took 14, versions 1 and 2 took 32), independent of the table's size;
//!   a log at most as large as the base is replayed at
//!   open. The `checksum_table` bench measures it.
//! - Memory: 8 bytes per page as before, plus about 48 bytes per page with
//!   unsettled versions, at most [`unsettled_versions_max`](TableConfig::unsettled_versions_max)
//!   before the detector syncs the store on its own.
//!
//! [`CorruptionDetector::write_sealed`]: crate::CorruptionDetector::write_sealed
//! [`write_sealed_batch`]: crate::CorruptionDetector::write_sealed_batch
//! [`CorruptionDetector::sync`]: crate::CorruptionDetector::sync
//! [`CorruptionDetector::forget`]: crate::CorruptionDetector::forget
//! [`CorruptionDetector::adopt`]: crate::CorruptionDetector::adopt
//! [`ChecksumTable::mark_free`]: super::ChecksumTable::mark_free
//! [`ChecksumTable::open`]: super::ChecksumTable::open

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::Mutex;

use super::appender::Appender;
use super::entries::{check_page_size, MAX_TABLE_PAGES};
use super::storage::TableStorage;
use super::unsettled::{Unsettled, SLOTS_MAX};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

/// Configuration of a durable [`ChecksumTable`](super::ChecksumTable).
#[must_use]
#[derive(Clone, Debug)]
pub struct TableConfig {
    pub(super) page_size: usize,
    pub(super) pages_max: u64,
    pub(super) compact_ratio_pct: u64,
    pub(super) compact_log_bytes_min: u64,
    pub(super) unsettled_versions_max: usize,
    pub(super) page_versions_max: usize,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) seed: Option<u64>,
}

impl TableConfig {
    /// Defaults for pages of `page_size` bytes: at most
    /// [`MAX_TABLE_PAGES`] pages, compaction when the log reaches 100 % of
    /// the base and at least 1 MiB, at most 1 Mi unsettled versions and 8
    /// per page; the system clock and an entropy-seeded backoff jitter.
    pub fn new(page_size: usize) -> Self {
        TableConfig {
            page_size,
            pages_max: MAX_TABLE_PAGES,
            compact_ratio_pct: 100,
            compact_log_bytes_min: 1 << 20,
            unsettled_versions_max: 1 << 20,
            page_versions_max: 8,
            clock: SystemClock::shared(),
            seed: None,
        }
    }

    /// The clock the stalled log's resume backoff is measured on (default
    /// [`SystemClock::shared`]): after a stall, the table resumes on its own
    /// at the first change once the drawn wait has passed on this clock.
    /// Give it the clock of the other components (a
    /// [`ManualClock`](crate::ManualClock) in simulated time).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The seed of the resume backoff's jitter (default: none, a seed drawn
    /// from the operating system's entropy at open). With a seed and a
    /// [`clock`](Self::clock) that is driven by hand, the same run of
    /// failures resumes at the same moments every time.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
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
    /// (default 100; at least 1). Lower means less log to replay at open and
    /// more base rewrites: each change costs about 14 + 1400 / pct bytes written,
    /// amortised.
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

    pub(super) fn validate(&self) -> Result<()> {
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
            return Err(Error::config(
                "compact_ratio_pct",
                "is 0; it must be at least 1",
            ));
        }
        if self.unsettled_versions_max == 0 || self.unsettled_versions_max > SLOTS_MAX / 2 {
            return Err(Error::config(
                "unsettled_versions_max",
                format!(
                    "is {}; it must be between 1 and {}",
                    self.unsettled_versions_max,
                    SLOTS_MAX / 2
                ),
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
}

/// Counters and sizes of a [`ChecksumTable`](super::ChecksumTable) (zeros for an in-memory one).
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
    /// A sync's fsync of its records failed: until the log is no longer
    /// stalled (a resume wrote them), a first settled checksum may be
    /// carried by no durable record, and every sync fails.
    pub(super) settle_unflushed: bool,
}

/// The durable part of a table.
///
/// Locks, always taken in this order: `files` (settles, truncations,
/// compactions), `unsettled` (every change of an entry or a version, and
/// every append to the log), the log's state, the table's entries.
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

/// A clean close makes the settle records still buffered durable, so that
/// after a reopen a page's older bytes are damage, not a version of it (they
/// are otherwise fsynced with the next intent, which a closed table never
/// writes). Best effort: a failure is logged; the records it could not make
/// durable only leave older versions accepted, as after a crash.
impl Drop for Durable {
    fn drop(&mut self) {
        if let Err(e) = self.log.flush(&*self.storage) {
            tracing::warn!(table = %self.stem, error = %e, "closing a durable checksum table: its last settle records may not be durable");
        }
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
    /// The newest unsettled checksum of every page that has one.
    pub(super) fn newest_of_all(&self) -> HashMap<u64, u32> {
        let un = self.unsettled.lock();
        un.slots()
            .iter()
            .filter_map(|s| Some((s.page, s.versions.last()?.crc)))
            .collect()
    }
}
