//! Its contract is documented on [`AdoptReport`] (this module is private; its
//! items are re-exported by its parent).

use std::fmt;
use std::time::Duration;

use super::{CorruptionDetector, Observer, Verdict};
use crate::checksum::{self, is_all_zero, ChecksumPlacement, Entry, TRAILER_LEN};
use crate::error::{Error, Result};
use crate::host::check_page_span;
use crate::types::PageId;

/// Pages per adoption batch by default (1 MiB of 4 KiB pages).
const DEFAULT_BATCH_BYTES: usize = 1 << 20;

/// Where an adoption is, given to the progress callback after each batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdoptProgress {
    /// Pages examined so far.
    pub pages_done: u64,
    /// Pages to examine in all.
    pub pages_total: u64,
    /// Pages sealed so far.
    pub sealed: u64,
    /// Time since adoption began.
    pub elapsed: Duration,
}

/// A progress callback.
pub type AdoptProgressFn = Box<dyn FnMut(&AdoptProgress) + Send>;

/// Options of [`CorruptionDetector::adopt`].
///
/// ```
/// use selfheal::corruption::AdoptOptions;
///
/// let opts = AdoptOptions::new()
///     .batch_pages(512)
///     .on_progress(|p| eprintln!("{}/{} pages", p.pages_done, p.pages_total));
/// # let _ = opts;
/// ```
#[must_use]
pub struct AdoptOptions {
    first: u64,
    count: Option<u64>,
    batch_pages: Option<u64>,
    zero_pages_are_damage: bool,
    progress: Option<AdoptProgressFn>,
}

impl fmt::Debug for AdoptOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdoptOptions")
            .field("first", &self.first)
            .field("count", &self.count)
            .field("batch_pages", &self.batch_pages)
            .field("zero_pages_are_damage", &self.zero_pages_are_damage)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Default for AdoptOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl AdoptOptions {
    /// Defaults: every page of the store (its page count when adoption
    /// begins), batches of 1 MiB, all-zero pages unallocated unless the
    /// detector's free-page answer says otherwise, no progress callback.
    pub fn new() -> Self {
        AdoptOptions {
            first: 0,
            count: None,
            batch_pages: None,
            zero_pages_are_damage: false,
            progress: None,
        }
    }

    /// Adopts only pages `first .. first + count` (default: the whole store).
    pub fn range(mut self, first: PageId, count: u64) -> Self {
        self.first = first.0;
        self.count = Some(count);
        self
    }

    /// Pages per batch (default: 1 MiB worth). Each batch is one scan of the
    /// store and one progress call; resizes wait for at most one batch.
    pub fn batch_pages(mut self, pages: u64) -> Self {
        self.batch_pages = Some(pages);
        self
    }

    /// Whether an all-zero page counts as damage when the detector has no
    /// free-page answer (default: no, it is unallocated). Set it for a host
    /// whose pages are never all zeros while in use.
    pub fn zero_pages_are_damage(mut self, yes: bool) -> Self {
        self.zero_pages_are_damage = yes;
        self
    }

    /// Calls `f` after each batch with the progress so far.
    pub fn on_progress(mut self, f: impl FnMut(&AdoptProgress) + Send + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }
}

/// What [`CorruptionDetector::adopt`] did.
///
/// Adoption: taking a store that already exists under protection.
///
/// A host has its database file before it has this library. Its pages carry
/// no checksum the library knows, so every verification would fail
/// ([`Error::MissingChecksum`] in the sidecar placement, a missing trailer in
/// the trailer placement). [`CorruptionDetector::adopt`] seals what is on
/// disk, in one batched scan through
/// [`PageStore::scan_pages`](crate::PageStore::scan_pages) (the scrubber's
/// fast path: a memory-mapped [`FileStore`](crate::FileStore) is checksummed
/// without copying).
///
/// # The host checks first
///
/// Adoption vouches for whatever is on disk: a page that is already damaged
/// when it is adopted is sealed as it is, and is from then on "intact". Run
/// the host's own integrity check first, with the store quiescent or under
/// the host's lock (for SQLite: `PRAGMA quick_check` or `integrity_check`,
/// which must answer `ok`), and adopt right after it.
///
/// # What adoption does with each page
///
/// | the page                                           | sidecar placement                              | trailer placement |
/// |----------------------------------------------------|------------------------------------------------|-------------------|
/// | verifies against the checksum it already has       | counted `already_sealed`                        | same |
/// | fails against the checksum it already has          | fenced and reported like a scrub would: `corrupt` (adoption never overwrites a checksum) | same, for a page whose trailer carries the library's magic |
/// | has no checksum, not all zeros                     | its CRC is recorded: `sealed`                  | last 16 bytes all zero: the trailer is written into them in place, `sealed`; otherwise [`Error::TrailerInUse`] and adoption stops |
/// | all zeros, and unallocated (see below)             | marked unallocated (saved with the table): `unallocated` | marked unallocated (in memory): `unallocated` |
/// | all zeros, and in use                              | fenced and reported as [`Error::ZeroedPage`]: `corrupt` | same |
/// | marked unallocated already, or fails and the host calls it free | `unallocated`                       | same |
/// | fenced, and known to be bad (see below)            | never sealed: judged like a scrub, `corrupt`   | same |
///
/// An all-zero page is never sealed: a page that was lost (trimmed,
/// zeroed) cannot be told from one the host zeroed on purpose, so adoption
/// does not vouch for it. Whether it is unallocated is the host's
/// [free-page answer](super::CorruptionConfig::free_pages) when one is
/// configured; without one, an all-zero page is unallocated unless
/// [`AdoptOptions::zero_pages_are_damage`] says that the host has no
/// all-zero pages in use. A host that keeps all-zero pages in use writes
/// them through the detector, which seals them (see
/// [`write_sealed`](CorruptionDetector::write_sealed)).
///
/// # Pages the registry knows to be bad
///
/// Adoption never seals a page that is fenced for anything but carrying no
/// seal at all (the suspect registry's `known_bad`):
/// a page that failed its checksum, could not be read, was stale, or was
/// all zeros stays fenced and is counted `corrupt`, and only a repair or a
/// host write through the detector lifts its fence. In the trailer
/// placement a sealed page whose trailer was zeroed by damage looks exactly
/// like a page never sealed; the detector tells them apart by remembering
/// which pages it wrote a trailer into in this process (host writes,
/// repairs, adoption), so such a page, once fenced, is never resealed.
/// A page fenced only for carrying no seal — a host read or a scrub that
/// reached it before adoption did (no checksum in the sidecar table, which
/// remembers every page it sealed; no trailer on a page the detector has not
/// sealed) — is adopted like any other, and its fence is lifted.
///
/// One case stays out of reach: in the trailer placement, a page sealed in
/// an *earlier* process whose trailer is zeroed afterwards carries no sign
/// of ever having been sealed, and an adoption run again in the new process
/// vouches for it like for any unsealed page. That is why adoption must
/// follow the host's own integrity check, every time it is run.
///
/// In the trailer placement a sealed page that was zeroed carries no sign
/// that it was ever sealed, so adopting again without a free-page answer
/// takes an all-zero page that no scrub has reported yet for unallocated
/// (a fenced all-zero page stays damage).
/// Give the answer (or [`AdoptOptions::zero_pages_are_damage`]) when
/// adopting a trailer store again; the sidecar table remembers which pages
/// it sealed.
///
/// # The trailer placement
///
/// A page carries no trailer until it is written through the detector, and
/// the last 16 bytes of every page belong to the trailer. Adoption writes the
/// trailer in place into pages whose last 16 bytes are all zero, which is how
/// a host that reserves bytes at the end of each page leaves them (SQLite:
/// the reserved-bytes count, header byte 20, set to 16 or more when the
/// database is created; its `cksumvfs` extension works the same way). A page
/// whose last 16 bytes hold data cannot take a trailer without losing them:
/// adoption stops with [`Error::TrailerInUse`] and the host must either
/// migrate to a layout with reserved bytes (SQLite: `VACUUM` after setting
/// the reserved-bytes count) or use the sidecar placement, which needs no
/// byte of the page. Only the trailer bytes change: the rest of each page is
/// rewritten with the bytes it already held, under the page's lock, and the
/// store is synced before `adopt` returns.
///
/// # Running alongside the host, and again
///
/// Adoption may run while the host reads and writes through the detector: a
/// checksum is recorded only for a page that still has nothing (a host write
/// meanwhile recorded its own — in a durable table, its intent — which
/// stands), checked and recorded under the lock every change of the table
/// takes, and a trailer is written only after the page is re-read under its
/// lock. Resizes wait for the batch in
/// progress. A page written behind the detector's back during adoption is
/// not protected against: that is the host's contract everywhere.
///
/// Adoption is idempotent: run again (after a crash part-way, or over a
/// range that grew), pages sealed before are counted `already_sealed` and
/// the rest are adopted.
///
/// # Crash analysis
///
/// Every adoption ends (also when it stops with an error) by making what it
/// did durable, in the trailer placement and with a durable table: when
/// `adopt` returns, what it sealed is durable, and so are the host's writes
/// that raced it (a host write of a page makes it the host's, not
/// adoption's), synced through the detector ([`CorruptionDetector::sync`]).
///
/// Sidecar, in-memory table ([`ChecksumTable::new`](crate::ChecksumTable::new)):
/// adoption changes only the table in memory; nothing is durable until the
/// host saves the table, after `adopt` returns. A crash before the save
/// loses the adoption, which is simply run again.
///
/// Sidecar, durable table ([`ChecksumTable::open`](crate::ChecksumTable::open)):
/// the detector syncs first, so the bytes adoption reads are durable (the
/// sync runs on a helper thread while the first batch is read, and no batch
/// records anything before it has succeeded; if it fails, adoption fails
/// having recorded nothing). A
/// page's bytes are then already on disk, so its checksum needs no window in
/// which old and new are accepted: it is recorded as settled at once, with
/// one `claim` record (an all-zero page taken for unallocated: one `free`
/// record), appended for a whole batch under one lock of the table. The
/// records (6 bytes each) are made durable with one fsync per 1 MiB of them
/// (about 170 Ki pages) and at the end;
/// the log is compacted when it has grown past its threshold. A crash at
/// any step leaves each page either claimed (or marked unallocated) or as
/// it was before adoption (nothing recorded): adopting again finishes the
/// work. A host write during adoption logs its intent before the page is
/// written; a claim never replaces it, in memory or at replay (a `claim`
/// record applies only to a page that has nothing), and a sync at the end (made only
/// when such a write happened) settles it. After a crash before that sync, such a page verifies if it
/// holds the host's new bytes; if it holds the bytes from before the write
/// (lost in the crash), the detector finds that when it is built and the
/// page is as it was before adoption, which adopting again claims.
///
/// Trailer: each page is written whole with only its last 16 bytes changed.
/// A crash part-way leaves each page either as it was (no trailer: adopted
/// again by the next run) or sealed. A torn write of one page leaves at most
/// a garbled trailer in bytes the host does not use: that page fails
/// verification, and the next adoption stops on it with
/// [`Error::TrailerInUse`] unless its trailer bytes read all zero or whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdoptReport {
    /// Pages examined.
    pub pages: u64,
    /// Pages sealed now (a checksum recorded, or a trailer written).
    pub sealed: u64,
    /// Pages that verified against a checksum they already had (adopted
    /// before, or written through the detector meanwhile).
    pub already_sealed: u64,
    /// Pages skipped as unallocated (all zeros, or so marked or answered by
    /// the host); not sealed.
    pub unallocated: u64,
    /// Pages found damaged (failing the checksum they had, or all zeros
    /// while in use): fenced and reported through the detector.
    pub corrupt: u64,
    /// Fences lifted from pages that verify after adoption.
    pub fences_lifted: u64,
    /// Bytes examined (`pages` × page size).
    pub bytes: u64,
    /// How long adoption took.
    pub duration: Duration,
}

impl AdoptReport {
    /// Bytes examined per second (0 for an instant adoption).
    #[must_use]
    pub fn bytes_per_s(&self) -> f64 {
        let s = self.duration.as_secs_f64();
        if s > 0.0 {
            self.bytes as f64 / s
        } else {
            0.0
        }
    }

    /// Pages examined per second (0 for an instant adoption).
    #[must_use]
    pub fn pages_per_s(&self) -> f64 {
        let s = self.duration.as_secs_f64();
        if s > 0.0 {
            self.pages as f64 / s
        } else {
            0.0
        }
    }
}

/// What one scanned page needs.
enum Plan {
    Done,
    /// Sidecar placement: record its checksum if it still has none.
    Claim(u32),
    /// Trailer placement: write a trailer into the page's zero tail.
    SealInPlace,
    /// An all-zero page that has no checksum: unallocated, or damage.
    Zero,
}

/// The sync that begins an adoption into a durable table, running on a
/// helper thread while the first batch is read.
enum PendingSync<'scope> {
    Running(std::thread::ScopedJoinHandle<'scope, Result<()>>),
    Done,
}

impl PendingSync<'_> {
    /// Waits for the sync (once); its error, or a panic of its thread as
    /// [`Error::Stopped`].
    fn wait(&mut self) -> Result<()> {
        match std::mem::replace(self, PendingSync::Done) {
            PendingSync::Running(h) => h.join().unwrap_or_else(|_| {
                Err(Error::Stopped {
                    component: "adoption",
                    reason: "the thread syncing the store before adoption panicked".into(),
                })
            }),
            PendingSync::Done => Ok(()),
        }
    }
}

/// Counts a scrub-like verdict on a page adoption did not seal.
fn count(verdict: Verdict, report: &mut AdoptReport) {
    match verdict {
        Verdict::Clean | Verdict::Transient => report.already_sealed += 1,
        Verdict::Unallocated => report.unallocated += 1,
        Verdict::Corrupt { .. } => report.corrupt += 1,
    }
}

impl CorruptionDetector {
    /// Seals the pages of a store that existed before the library: see the
    /// docs of `corruption/adopt.rs` for what happens to each page, and run
    /// the host's own integrity check first, since adoption vouches for
    /// whatever is on disk.
    ///
    /// In the sidecar placement with an in-memory table, save the table
    /// afterwards (adoption changes only its in-memory copy); a durable
    /// table has made what adoption recorded durable when this returns.
    /// In the trailer placement adoption ends with a sync through the
    /// detector; with a durable table it begins with one, and ends with one
    /// if a host write raced it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use selfheal::{ChecksumPlacement, ChecksumTable, CorruptionConfig, MemStore, PageId, PageStore};
    /// use selfheal::corruption::AdoptOptions;
    ///
    /// // A store the host wrote before it had the library.
    /// let raw = Arc::new(MemStore::new(4096, 8)?);
    /// for p in 0..6 {
    ///     raw.write_page(PageId(p), &[p as u8 + 1; 4096])?;
    /// }                                                      // pages 6 and 7 stay zero (free)
    /// let table = Arc::new(ChecksumTable::new(4096)?);
    /// let det = CorruptionConfig::new(ChecksumPlacement::Sidecar(table)).build(raw)?;
    ///
    /// let report = det.adopt(AdoptOptions::new())?;
    /// assert_eq!((report.sealed, report.unallocated), (6, 2));
    /// let mut buf = vec![0u8; 4096];
    /// det.read_verified(PageId(3), &mut buf)?;               // verified from now on
    /// # Ok::<(), selfheal::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a batch of 0 pages;
    /// [`Error::PageOutOfRange`] for a range past the end of the store (or,
    /// with a durable table, past its
    /// [`pages_max`](crate::checksum::TableConfig::pages_max));
    /// [`Error::TrailerInUse`] in the trailer placement for a page whose last
    /// 16 bytes hold data (pages before it are adopted; see the module
    /// docs); the store's read, write or sync error; a durable table's log error. A range that the store
    /// shrinks below during adoption ends where the store ends.
    pub fn adopt(&self, mut opts: AdoptOptions) -> Result<AdoptReport> {
        let started = self.clock.now_ns();
        let ps = self.store.page_size();
        let batch = match opts.batch_pages {
            Some(0) => {
                return Err(Error::InvalidArgument {
                    what: "batch_pages",
                    reason: "is 0; give at least 1 page per batch".into(),
                })
            }
            Some(b) => b,
            None => (DEFAULT_BATCH_BYTES / ps).max(1) as u64,
        };
        let page_count = self.store.page_count();
        let count = opts
            .count
            .unwrap_or_else(|| page_count.saturating_sub(opts.first));
        check_page_span(PageId(opts.first), count, page_count)?;
        let end = opts.first + count;
        if let ChecksumPlacement::Sidecar(table) = &self.placement {
            let _gate = self.resize_gate.read();
            table.reserve_pages(end.min(self.store.page_count()))?;
        }
        let durable = matches!(&self.placement, ChecksumPlacement::Sidecar(t) if t.is_durable());
        let mut report = AdoptReport::default();
        std::thread::scope(|scope| -> Result<()> {
            // A durable table records the checksums as settled: the bytes
            // they vouch for must be durable first (a host that wrote them
            // without a sync could lose them in a crash). The sync runs on a
            // helper thread while the first batch is read, and every batch
            // waits for it before it records anything.
            let mut first_sync = if durable {
                let spawned = std::thread::Builder::new()
                    .name("selfheal-adopt-sync".into())
                    .spawn_scoped(scope, || self.sync());
                match spawned {
                    Ok(h) => PendingSync::Running(h),
                    Err(error) => {
                        tracing::debug!(%error, "no helper thread for adoption's first sync; syncing here");
                        self.sync()?;
                        PendingSync::Done
                    }
                }
            } else {
                PendingSync::Done
            };
            let mut next = opts.first;
            while next < end {
                let (examined, stopped) = {
                    // No resize while a batch is scanned and recorded.
                    let _gate = self.resize_gate.read();
                    let now_count = self.store.page_count();
                    if next >= now_count {
                        break;
                    }
                    let n = batch.min(end - next).min(now_count - next);
                    self.adopt_batch(PageId(next), n, &opts, &mut report, &mut first_sync)
                };
                if let Some(e) = stopped {
                    // What was adopted before the error stands: make it durable.
                    if let Err(f) = self.make_adoption_durable() {
                        tracing::error!(error = %f, "what adoption recorded before it stopped is not durable");
                    }
                    return Err(e);
                }
                next += examined;
                if let Some(f) = opts.progress.as_mut() {
                    f(&AdoptProgress {
                        pages_done: next - opts.first,
                        pages_total: count,
                        sealed: report.sealed,
                        elapsed: Duration::from_nanos(self.clock.now_ns().saturating_sub(started)),
                    });
                }
                if examined == 0 {
                    break;
                }
            }
            // Nothing was recorded if no batch ran: the sync must still end
            // (and succeed) before adoption does.
            first_sync.wait()
        })?;
        self.make_adoption_durable()?;
        // Pages fenced before they were adopted (a scrub found no checksum)
        // verify now: lift their fences.
        let mut fenced = self.pages_in(super::PageState::Suspect);
        fenced.extend(self.pages_in(super::PageState::Irreparable));
        for p in fenced
            .into_iter()
            .filter(|p| (opts.first..end).contains(&p.0))
        {
            if matches!(self.recheck(p), Ok(Verdict::Clean)) {
                report.fences_lifted += 1;
            }
        }
        report.bytes = report.pages * ps as u64;
        report.duration = Duration::from_nanos(self.clock.now_ns().saturating_sub(started));
        tracing::info!(
            pages = report.pages,
            sealed = report.sealed,
            already_sealed = report.already_sealed,
            unallocated = report.unallocated,
            corrupt = report.corrupt,
            "adoption finished"
        );
        Ok(report)
    }

    /// Adopts `count` pages from `first`; returns how many were examined and
    /// the error that stopped the batch (the pages before the one it is
    /// about are adopted all the same).
    fn adopt_batch(
        &self,
        first: PageId,
        count: u64,
        opts: &AdoptOptions,
        report: &mut AdoptReport,
        first_sync: &mut PendingSync<'_>,
    ) -> (u64, Option<Error>) {
        let mut in_place: Vec<PageId> = Vec::new();
        let mut zero: Vec<PageId> = Vec::new();
        // Most pages of a first adoption are claims: one allocation per batch.
        let mut claims: Vec<(PageId, Option<u32>)> =
            Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 16));
        let mut examined = 0u64;
        // The table's entries for the batch, in one look (the resize gate is
        // held, so they only change by host writes, which the claim checks
        // for again under the table's lock).
        let mut entries = Vec::new();
        if let ChecksumPlacement::Sidecar(table) = &self.placement {
            table.entries_of(first, count, &mut entries);
        }
        let scanned = self.store.scan_pages(first, count, &mut |page, bytes| {
            let entry = entries
                .get((page.0 - first.0) as usize)
                .copied()
                .unwrap_or(Entry::Absent);
            let plan = self.plan(page, entry, bytes, report)?;
            examined += 1;
            report.pages += 1;
            match plan {
                Plan::Done => {}
                Plan::Claim(crc) => claims.push((page, Some(crc))),
                Plan::SealInPlace => in_place.push(page),
                Plan::Zero => zero.push(page),
            }
            Ok(())
        });
        let mut stopped = match scanned {
            Ok(()) => None,
            // The store shrank under the scan (it cannot while the gate is
            // held, unless it was resized behind the detector): stop there.
            Err(Error::PageOutOfRange { .. }) => None,
            Err(e) => Some(e),
        };
        // Nothing is recorded before the bytes read are durable.
        if let Err(e) = first_sync.wait() {
            return (examined, Some(e));
        }
        if let Err(e) = self.claim_scanned(&claims, report) {
            stopped.get_or_insert(e);
        }
        for page in zero {
            self.adopt_zero(page, opts, report);
        }
        for page in in_place {
            if let Err(e) = self.seal_in_place(page, report) {
                stopped.get_or_insert(e);
                break;
            }
        }
        (examined, stopped)
    }

    /// Decides what a scanned page needs, doing it now when that needs no
    /// write and no page lock (the visit of a scan must not wait for them
    /// while the store may hold a scan open). `entry` is what a sidecar
    /// table held for the page when the batch began.
    fn plan(
        &self,
        page: PageId,
        entry: Entry,
        bytes: &[u8],
        report: &mut AdoptReport,
    ) -> Result<Plan> {
        match &self.placement {
            ChecksumPlacement::Sidecar(_) => match entry {
                Entry::Absent if is_all_zero(bytes) => Ok(Plan::Zero),
                // Pages fenced for more than a missing checksum are sorted
                // out just before the claim, with one look at the registry
                // per batch (`claim_scanned`).
                Entry::Absent => Ok(Plan::Claim(checksum::page_crc(page, bytes))),
                Entry::Sealed | Entry::Free => {
                    self.count_verdict(page, bytes, report)?;
                    Ok(Plan::Done)
                }
            },
            ChecksumPlacement::Trailer => {
                if self.verify_bytes(page, bytes).is_ok() {
                    report.already_sealed += 1;
                    return Ok(Plan::Done);
                }
                if is_all_zero(bytes) {
                    return Ok(Plan::Zero);
                }
                let tail = &bytes[bytes.len() - TRAILER_LEN..];
                if tail.iter().all(|&b| b == 0) {
                    return Ok(Plan::SealInPlace);
                }
                if checksum::trailer::has_magic(bytes) || self.is_unallocated(page) {
                    // A sealed page that fails, or a free page: as a scrub.
                    self.count_verdict(page, bytes, report)?;
                    return Ok(Plan::Done);
                }
                Err(Error::TrailerInUse {
                    page,
                    trailer_len: TRAILER_LEN,
                })
            }
        }
    }

    /// Verifies a page that has a checksum (or a mark) like a scrub, and
    /// counts the verdict.
    fn count_verdict(&self, page: PageId, bytes: &[u8], report: &mut AdoptReport) -> Result<()> {
        count(self.check_scanned(page, bytes, Observer::Scrub)?, report);
        Ok(())
    }

    /// Sidecar placement: records the checksums of a batch's scanned pages
    /// that still have nothing, all at once (one lock of the table, and in a
    /// durable table one `claim` record each, see `checksum/durable.rs`). A
    /// page that was given a checksum since it was scanned (a host write
    /// through the detector) keeps it, and is read again and verified like a
    /// scrub.
    fn claim_scanned(
        &self,
        claims: &[(PageId, Option<u32>)],
        report: &mut AdoptReport,
    ) -> Result<()> {
        let ChecksumPlacement::Sidecar(table) = &self.placement else {
            return Ok(());
        };
        // Fenced for more than a missing checksum (unreadable, say):
        // adoption does not vouch for it, and judges it like a scrub. One
        // lock of the registry for the batch, and no lookup at all while it
        // is empty (the usual case).
        let mut known_bad = Vec::new();
        let vetted;
        let claims = {
            let registry = self.registry.lock();
            if registry.is_empty() {
                claims
            } else {
                vetted = claims
                    .iter()
                    .copied()
                    .filter(|&(page, _)| {
                        let bad = registry.known_bad(page);
                        if bad {
                            known_bad.push(page);
                        }
                        !bad
                    })
                    .collect::<Vec<_>>();
                &vetted[..]
            }
        };
        for page in known_bad {
            match self.check_page(page, Observer::Scrub) {
                Ok(v) => count(v, report),
                Err(Error::PageOutOfRange { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut claimed = Vec::with_capacity(claims.len());
        table.claim_absent(claims, &mut claimed)?;
        for (&(page, _), &won) in claims.iter().zip(&claimed) {
            if won {
                report.sealed += 1;
            } else {
                match self.check_page(page, Observer::Scrub) {
                    Ok(v) => count(v, report),
                    // Dropped by a resize behind the detector's back.
                    Err(Error::PageOutOfRange { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// An all-zero page with no checksum: unallocated, or damage. The host's
    /// answer is asked with no lock held; the mark is made under the page's
    /// lock, after a re-read shows the page is still all zeros and unsealed.
    fn adopt_zero(&self, page: PageId, opts: &AdoptOptions, report: &mut AdoptReport) {
        // A page already known to be damaged stays damage: in the trailer
        // placement a sealed page that was zeroed looks like a never-sealed one.
        let known_bad = self
            .page_state(page)
            .is_some_and(super::PageState::is_fenced);
        let free = !known_bad
            && match &self.free_pages {
                Some(f) => f(page),
                None => !opts.zero_pages_are_damage,
            };
        let mut buf = vec![0u8; self.store.page_size()];
        let failure = {
            let _g = self.stripe(page);
            let still_zero = self.store.read_page(page, &mut buf).is_ok() && is_all_zero(&buf);
            let unsealed = match &self.placement {
                ChecksumPlacement::Sidecar(t) => t.entry(page) == Entry::Absent,
                ChecksumPlacement::Trailer => true,
            };
            if !still_zero || !unsealed {
                // Written meanwhile: it is sealed, or it is the next scrub's.
                report.already_sealed += 1;
                None
            } else if free {
                let marked = match &self.placement {
                    ChecksumPlacement::Sidecar(t) => {
                        let mut claimed = Vec::with_capacity(1);
                        t.claim_absent(&[(page, None)], &mut claimed).is_ok() && claimed[0]
                    }
                    ChecksumPlacement::Trailer => self.freed.set(page).is_ok(),
                };
                if marked {
                    report.unallocated += 1;
                } else {
                    report.already_sealed += 1;
                }
                None
            } else {
                report.corrupt += 1;
                self.note_corrupt(page, &Error::ZeroedPage { page }, Observer::Scrub)
                    .1
            }
        };
        self.emit(failure);
    }

    /// Trailer placement: re-reads `page` under its lock and, if its last 16
    /// bytes are still all zero and the registry does not know it to be bad
    /// (a sealed page whose trailer was zeroed by damage looks never
    /// sealed), writes the trailer into them (not synced: adoption syncs at
    /// the end).
    fn seal_in_place(&self, page: PageId, report: &mut AdoptReport) -> Result<()> {
        let mut buf = vec![0u8; self.store.page_size()];
        let sealed = {
            let _g = self.stripe(page);
            self.store.read_page(page, &mut buf)?;
            let tail_zero = buf[buf.len() - TRAILER_LEN..].iter().all(|&b| b == 0);
            if self.verify_bytes(page, &buf).is_ok() {
                report.already_sealed += 1;
                return Ok(());
            }
            if tail_zero && !is_all_zero(&buf) && !self.registry.lock().known_bad(page) {
                checksum::trailer::seal(page, &mut buf)?;
                let written = self.store.write_page(page, &buf);
                if written.is_ok() {
                    // Adoption writes back the bytes the page holds, not a
                    // new version: the expected LSN stays as it is.
                    self.note_sealed_here(page);
                    report.sealed += 1;
                }
                Some(written)
            } else {
                None
            }
        };
        match sealed {
            Some(written) => {
                self.notify_written([page]);
                written
            }
            // Changed since it was scanned, or known to be bad: judge it as
            // it is now, like a scrub.
            None => self.count_verdict(page, &buf, report),
        }
    }

    /// Ends an adoption (also one stopped by an error). Trailer: a sync
    /// makes the trailers written in place durable, and the host writes
    /// that raced the adoption. Durable table: if a write went through the
    /// detector since the sync that began the adoption (a host write that
    /// raced it), a sync makes it durable and settles it; then the claims
    /// are made durable (one log fsync). When it returns, every page
    /// adoption examined is sealed durably (or marked unallocated; trailer
    /// marks live in memory), unless a host write of it failed or is still
    /// in flight. An in-memory table has nothing durable to make.
    fn make_adoption_durable(&self) -> Result<()> {
        match &self.placement {
            ChecksumPlacement::Trailer => self.sync(),
            ChecksumPlacement::Sidecar(table) if table.is_durable() => {
                if table.stats().unsettled_versions > 0 {
                    self.sync()?;
                }
                table.flush_claims()
            }
            ChecksumPlacement::Sidecar(_) => Ok(()),
        }
    }
}
