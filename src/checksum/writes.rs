//! The table's side of a page write and of a sync, as the detector drives
//! it: announce (intents, made durable before the pages are written),
//! complete (one outcome per batch), settle (after the store's sync), and
//! resolve (after a restart). The protocol and its crash analysis are in
//! [`durable`](super::durable).

use std::sync::atomic::Ordering;

use super::durable::Durable;
use super::entries::{FREE, PRESENT};
use super::log::LogRecord;
use super::page_crc;
use super::table::ChecksumTable;
use super::unsettled::{Outcome, Outcomes, State, Unsettled, Version, Versions, SLOTS_MAX};
use crate::error::{Error, Result};
use crate::types::PageId;

/// Buffered settle records are fsynced on their own past this many bytes.
const LAZY_BYTES_MAX: usize = 64 << 10;

/// Page changes announced to the table before their writes.
#[derive(Debug)]
pub(crate) struct Intents {
    /// The batch the new versions belong to (none when no version was
    /// added, and for an in-memory table).
    batch: Option<u32>,
    changes: Vec<Intent>,
}

#[cfg(test)]
impl Intents {
    /// How many changes were announced.
    pub(crate) fn len(&self) -> usize {
        self.changes.len()
    }
}

#[derive(Clone, Copy, Debug)]
struct Intent {
    page: PageId,
    crc: u32,
    /// The change is the page's newest version already, announced earlier
    /// (it is not part of the batch's outcome).
    earlier: bool,
}

/// A sync barrier: versions written in a generation up to this one are
/// covered by the store sync that follows it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SyncBarrier(u64);

impl ChecksumTable {
    /// Whether the detector should sync the store (settling what it can)
    /// before writing `pages`: some page has its limit of unsettled
    /// versions and a sync would reduce them, or the whole table would pass
    /// its limit.
    pub(crate) fn needs_sync(&self, pages: &[PageId]) -> bool {
        let Some(d) = &self.durable else {
            return false;
        };
        let un = d.unsettled.lock();
        if un.versions + pages.len() > d.config.unsettled_versions_max {
            return true;
        }
        if un.pages() == 0 {
            return false;
        }
        pages.iter().any(|p| {
            un.get(self.raw_entry(*p), p.0).is_some_and(|vs| {
                vs.len() >= d.config.page_versions_max
                    && vs
                        .iter()
                        .any(|v| matches!(v.effective(&un.outcomes), State::Written(_)))
            })
        })
    }

    /// Announces page changes: for a durable table, logs an intent per
    /// change that is not already the page's newest version, and returns
    /// once they are all durable (one fsync). Call
    /// [`complete`](Self::complete) after the writes.
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] past the configured limit;
    /// [`Error::InvalidArgument`] when the table cannot grow to a page or
    /// hold more unsettled pages; [`Error::Stalled`] when the log's write or
    /// fsync failed retryably (nothing may be written: retry after the
    /// resume); [`Error::Poisoned`].
    pub(crate) fn intend(&self, changes: &[(PageId, u32)]) -> Result<Intents> {
        let mut intents = Intents {
            batch: None,
            changes: changes
                .iter()
                .map(|&(page, crc)| Intent {
                    page,
                    crc,
                    earlier: false,
                })
                .collect(),
        };
        let Some(d) = &self.durable else {
            return Ok(intents);
        };
        d.log.resume_if_due(&*d.storage);
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
            if let Some(last) = changes.iter().map(|(p, _)| p.0).max() {
                // Grown here, under `unsettled`: no truncate can undo it
                // before the entries below are used.
                if self.len() as u64 <= last {
                    self.update_entry(PageId(last), |e| e)?;
                }
            }
            let entries = self.entries.read();
            // The batch id is taken only if the batch adds a version, so
            // that outcomes (one per batch, cleared by every settle) stay
            // fewer than the unsettled versions.
            let batch = un.next_batch;
            debug_assert!(!un.outcomes.contains_key(&batch));
            let outcomes = std::mem::take(&mut un.outcomes);
            let (mut added, mut removed) = (0usize, 0usize);
            let mut announce = || -> Result<()> {
                for (i, &(page, crc)) in changes.iter().enumerate() {
                    let entry = &entries[page.0 as usize];
                    let e = entry.load(Ordering::Acquire);
                    let vs = match un.get_mut(e, page.0) {
                        // Already the settled checksum: nothing to log.
                        None if e & PRESENT != 0 && e as u32 == crc => continue,
                        None => un
                            .insert(entry, page.0, Versions::Empty)
                            .map_err(|_| Error::InvalidArgument {
                                what: "batch",
                                reason: format!(
                                    "the checksum table cannot hold unsettled changes to more than {SLOTS_MAX} pages; sync the store between batches"
                                ),
                            })?,
                        Some(vs) => {
                            if let Some(v) = vs.last().filter(|v| v.crc == crc) {
                                // Already the newest: nothing to log, but
                                // wait for its intent if it is not durable.
                                wait_for = wait_for.max(Some(v.seq));
                                intents.changes[i].earlier = true;
                                continue;
                            }
                            if let Some(k) = vs.iter().position(|v| v.crc == crc) {
                                vs.remove(k);
                                removed += 1;
                            }
                            if vs.len() >= d.config.page_versions_max {
                                // Only a version nobody can settle goes;
                                // versions written since the last sync stay
                                // (the detector syncs first when there are
                                // too many of them).
                                let unknown = vs
                                    .iter()
                                    .position(|v| v.effective(&outcomes) == State::Unknown);
                                if let Some(k) = unknown {
                                    let old = vs.remove(k);
                                    removed += 1;
                                    log.append(LogRecord::Retract { seq: old.seq });
                                    tracing::warn!(%page, "page has too many unsettled versions; the oldest failed write is no longer accepted");
                                }
                            }
                            vs
                        }
                    };
                    let seq = log.append(LogRecord::Intent {
                        page: u32::try_from(page.0).expect("below pages_max"),
                        crc,
                    });
                    vs.push(Version {
                        crc,
                        seq,
                        state: State::InFlight {
                            batch,
                            index: u32::try_from(i).unwrap_or(u32::MAX),
                        },
                    });
                    added += 1;
                    wait_for = Some(seq);
                    intents.batch = Some(batch);
                }
                Ok(())
            };
            let announced = announce();
            un.outcomes = outcomes;
            un.versions = un.versions + added - removed;
            if intents.batch.is_some() {
                un.next_batch = batch.wrapping_add(1);
            }
            announced?;
        }
        if let Some(seq) = wait_for {
            d.log.make_durable(&*d.storage, seq)?;
        }
        Ok(intents)
    }

    /// Records that the writes of the first `written` announced changes
    /// returned and that the rest failed or were not attempted. An in-memory
    /// table records the checksums of the written pages (a failed write
    /// leaves the old bytes and their checksum); a durable one records the
    /// batch's outcome: its versions are written in the current sync
    /// generation, or of unknown fate (accepted, and settled only once a
    /// read of the page finds them).
    ///
    /// # Errors
    /// An in-memory table that cannot grow to a page.
    pub(crate) fn complete(&self, intents: &Intents, written: usize) -> Result<()> {
        let Some(d) = &self.durable else {
            for i in &intents.changes[..written] {
                self.record(i.page, i.crc)?;
            }
            return Ok(());
        };
        // Read after the writes returned: a barrier taken before this load
        // was taken after they completed.
        let generation = d.sync_generation.load(Ordering::SeqCst);
        let mut un = d.unsettled.lock();
        if let Some(batch) = intents.batch {
            let outcome = Outcome {
                written: u32::try_from(written).unwrap_or(u32::MAX),
                generation,
            };
            un.outcomes.insert(batch, outcome);
        }
        // Changes that were already the newest version: rare, one by one.
        for (i, intent) in intents.changes.iter().enumerate() {
            if !intent.earlier {
                continue;
            }
            let e = self.raw_entry(intent.page);
            let outcomes = std::mem::take(&mut un.outcomes);
            let version = un
                .get_mut(e, intent.page.0)
                .and_then(|vs| vs.iter_mut().rev().find(|v| v.crc == intent.crc));
            if let Some(v) = version {
                v.state = match (v.effective(&outcomes), i < written) {
                    (State::Written(w), _) => State::Written(w),
                    (_, true) => State::Written(generation),
                    (state, false) => state,
                };
            }
            un.outcomes = outcomes;
        }
        Ok(())
    }

    /// Resolves versions whose fate is unknown (read back at open, or whose
    /// write failed) by reading the page with `read` (pages at or past
    /// `page_count` are skipped): the version the page holds counts as
    /// written now, and the next sync settles it, dropping the older
    /// versions. Versions newer than the bytes the page holds (the settled
    /// checksum, or an older version) stay accepted, of unknown fate, until
    /// the page is next written: a write the disk lost may have been
    /// acknowledged, and a repair must be able to write a replica's copy of
    /// it back (see `Resolved::Marked`). A page without a
    /// settled checksum (never sealed, or marked unallocated) that holds
    /// none of its versions, all of unknown fate, lost those writes (or
    /// holds a torn one, which no one vouched for either): it goes back to
    /// what it was, nothing or unallocated, with a `drop` or `free` record.
    /// Pages with a write in flight, pages that cannot be read and pages
    /// with a settled checksum that hold none of their accepted versions
    /// (damage, which verification reports) are left as they are. The
    /// detector calls it when it is built.
    ///
    /// Returns how many pages were found holding one of their versions
    /// (now written, not yet settled). Until a sync settles them, the log
    /// still has them of unknown fate: a later write of such a page that a
    /// crash tears would leave a page without a settled checksum holding
    /// none of its versions, and the next resolve would drop the version
    /// the page (and every replica) held. The detector therefore syncs the
    /// store and settles them (see [`settle_resolved`](Self::settle_resolved))
    /// before it takes any write.
    ///
    /// # Errors
    /// [`Error::Poisoned`] when the table's log is poisoned.
    pub(crate) fn resolve(
        &self,
        page_count: u64,
        read: &mut dyn FnMut(PageId, &mut [u8]) -> Result<()>,
    ) -> Result<usize> {
        let Some(d) = &self.durable else {
            return Ok(0);
        };
        let pages: Vec<u64> = {
            let un = d.unsettled.lock();
            un.slots()
                .iter()
                .filter(|s| {
                    s.versions
                        .iter()
                        .any(|v| v.effective(&un.outcomes) == State::Unknown)
                })
                .map(|s| s.page)
                .collect()
        };
        let mut buf = vec![0u8; self.page_size];
        let mut resolved = 0usize;
        let mut marked = 0usize;
        for page in pages.into_iter().map(PageId) {
            if page.0 >= page_count || read(page, &mut buf).is_err() {
                continue;
            }
            let crc = page_crc(page, &buf);
            let generation = d.sync_generation.load(Ordering::SeqCst);
            let mut un = d.unsettled.lock();
            let e = self.raw_entry(page);
            let outcomes = std::mem::take(&mut un.outcomes);
            let outcome = resolve_page(&mut un, e, page, crc, generation, &outcomes);
            un.outcomes = outcomes;
            match outcome {
                Resolved::Nothing => {}
                Resolved::Marked => {
                    resolved += 1;
                    marked += 1;
                }
                Resolved::Lost => {
                    let mut log = d.log.state.lock();
                    log.check()?;
                    let p = u32::try_from(page.0).expect("below pages_max");
                    log.append(if e & FREE != 0 {
                        LogRecord::Free { page: p }
                    } else {
                        LogRecord::Drop { first: p, last: p }
                    });
                    un.remove(&self.entries.read(), page.0);
                    resolved += 1;
                }
            }
        }
        if resolved > 0 {
            tracing::debug!(
                resolved,
                "unsettled checksum versions resolved from the store"
            );
        }
        Ok(marked)
    }

    /// Settles, durably, the versions a [`resolve`](Self::resolve) found
    /// the pages holding: `sync` syncs the store (the bytes read back may
    /// still sit in the page cache a dead process left), then the settle
    /// records are appended and the log fsynced. From then on the checksum
    /// of the bytes each such page holds is its settled one, which no crash
    /// of a later write can take away.
    ///
    /// A stalled log settles nothing (and takes no intent, so no page is
    /// written before a resume): the versions then settle at the first sync
    /// after the resume.
    ///
    /// # Errors
    /// The store sync's error (nothing is settled; the versions settle at
    /// the next sync); [`Error::Poisoned`] when the table's log is
    /// poisoned, or the log's error when its fsync fails for good.
    pub(crate) fn settle_resolved(&self, sync: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        // A stall whose backoff has passed is retried first, as a write's
        // intent does.
        d.log.resume_if_due(&*d.storage);
        let barrier = self.sync_barrier();
        sync()?;
        let mut files = d.files.lock();
        match settle_locked(self, d, barrier.0) {
            Err(Error::Stalled { .. }) => return Ok(()),
            other => other?,
        };
        match d.log.flush(&*d.storage) {
            Err(Error::Stalled { .. }) => {
                // Settled in memory, the records pending: no sync succeeds
                // until a resume writes them.
                files.settle_unflushed = true;
                Ok(())
            }
            other => other,
        }
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
    /// [`Error::Stalled`] while the log is stalled and a page would get its
    /// first settled checksum: that page is not settled (its versions
    /// settle at the first sync after a resume), so no page is left with
    /// only a first checksum that no record carries (pages that have a
    /// settled checksum settle in memory, as they always could); the log's
    /// error when the fsync of a first settled checksum fails (the page is
    /// settled in memory and its record stays pending: a resume writes it,
    /// and every sync fails until then); the compaction's error.
    pub(crate) fn settle(&self, barrier: SyncBarrier) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        // A stall whose backoff has passed is retried first, as a write's
        // intent does: a host that only syncs still sees the log resume.
        d.log.resume_if_due(&*d.storage);
        let mut files = d.files.lock();
        if files.settle_unflushed {
            // Still stalled: the failed sync's records are not durable yet.
            d.log.state.lock().check()?;
            files.settle_unflushed = false;
        }
        let flush = settle_locked(self, d, barrier.0)?;
        if flush {
            if let Err(e) = d.log.flush(&*d.storage) {
                files.settle_unflushed = true;
                return Err(e);
            }
        }
        if self.should_compact(d, &files) {
            self.compact_locked(d, &mut files)?;
        }
        Ok(())
    }
}

/// What a read of a page with versions of unknown fate found.
enum Resolved {
    /// Nothing to do: a write in flight, the page holds its settled bytes
    /// or a version already written, or none of its checksums (damage).
    Nothing,
    /// The page holds one of its versions, which now counts as written: the
    /// next sync settles it and drops the older ones. The versions announced
    /// after it stay accepted, of unknown fate: the disk lost those writes,
    /// but the host may have acknowledged one (a disk that loses a write
    /// and reports success) and its replicas hold it, so a repair must be
    /// able to write it back — dropping it would leave the page irreparable,
    /// its only acceptable bytes the older ones the host's LSN calls stale.
    /// Keeping them lets no stale copy in: only versions newer than the
    /// bytes the page holds stay, and the host's expected LSN judges a copy
    /// of them as any other. The next write of the page drops them.
    Marked,
    /// The page has no settled checksum and holds none of its versions, all
    /// of unknown fate: they were lost (or one was torn); the page goes back
    /// to having nothing, or to its unallocated mark.
    Lost,
}

fn resolve_page(
    un: &mut Unsettled,
    e: u64,
    page: PageId,
    crc: u32,
    generation: u64,
    outcomes: &Outcomes,
) -> Resolved {
    let Some(vs) = un.get_mut(e, page.0) else {
        return Resolved::Nothing;
    };
    for v in vs.iter_mut() {
        v.state = v.effective(outcomes);
    }
    if vs.iter().any(|v| matches!(v.state, State::InFlight { .. })) {
        return Resolved::Nothing;
    }
    match vs.iter().position(|v| v.crc == crc) {
        // Older or newer than the rest, the version the page holds is
        // written; the versions after it stay (see `Resolved::Marked`).
        Some(k) if vs[k].state == State::Unknown => {
            vs[k].state = State::Written(generation);
            Resolved::Marked
        }
        None if e & PRESENT == 0 && vs.iter().all(|v| v.state == State::Unknown) => Resolved::Lost,
        // The settled bytes, a version already written, or damage.
        _ => Resolved::Nothing,
    }
}

/// The settle itself (under the `files` lock): returns whether the
/// buffered records should be fsynced now: when they have grown large, and
/// when a page got its first settled checksum. A `settle` record lost in a
/// crash leaves a page with a settled checksum accepting it still (with the
/// newer versions, of unknown fate, until the next build reads the page),
/// but takes a page that had none back to versions of unknown fate, which a
/// build that finds the page holding none of them (rot while the process
/// was down) would drop as writes never made durable: the page's checksum
/// would be gone although the host synced it and its replicas hold it.
///
/// # Errors
/// A poisoned log's error, before anything is settled. While the log is
/// stalled, pages that already have a settled checksum settle in memory
/// (their record is lost with the stall: after a crash they accept their
/// older bytes too, as after any lost `settle` record), but a page that
/// would get its first settled checksum does not: a settle that no record
/// carries would be lost at the next crash and leave it with none. Its
/// versions stay written for the first sync after a resume, and the
/// stall's error is returned. The log's lock is held from that check to
/// the records, so no stall comes in between.
fn settle_locked(table: &ChecksumTable, d: &Durable, barrier: u64) -> Result<bool> {
    let mut un = d.unsettled.lock();
    let mut log = d.log.state.lock();
    let stall = match log.check() {
        Ok(()) => None,
        Err(e @ Error::Stalled { .. }) => Some(e),
        Err(e) => return Err(e),
    };
    let outcomes = std::mem::take(&mut un.outcomes);
    let mut newest_settled: Option<u64> = None;
    // Whether a page gets its first settled checksum (new, dropped or
    // unallocated until now): see the return value. Under a stall, whether
    // one was held back.
    let mut first_settled = false;
    {
        let entries = table.entries.read();
        un.retain(&entries, |slot| {
            let vs = &mut slot.versions;
            for v in vs.iter_mut() {
                v.state = v.effective(&outcomes);
            }
            let k = vs
                .iter()
                .rposition(|v| matches!(v.state, State::Written(w) if w <= barrier))?;
            let first = entries
                .get(slot.page as usize)
                .is_some_and(|e| e.load(Ordering::Acquire) & PRESENT == 0);
            first_settled |= first;
            if first && stall.is_some() {
                return None;
            }
            let v = vs[k];
            vs.drain_through(k);
            newest_settled = newest_settled.max(Some(v.seq));
            Some(v.crc)
        });
    }
    // Every version has taken its batch's outcome; keep the map's memory.
    un.outcomes = outcomes;
    un.outcomes.clear();
    un.shrink(d.config.unsettled_versions_max);
    if let Some(e) = stall {
        return if first_settled { Err(e) } else { Ok(false) };
    }
    let Some(newest) = newest_settled else {
        return Ok(false);
    };
    let below = newest + 1;
    for s in un.slots() {
        for v in s.versions.iter().filter(|v| v.seq < below) {
            log.append(LogRecord::Except { seq: v.seq });
        }
    }
    log.append(LogRecord::Settle { below });
    Ok(first_settled || log.buffered() >= LAZY_BYTES_MAX)
}
