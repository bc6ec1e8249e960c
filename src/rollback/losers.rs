//! Finding the transactions that were in flight at the last crash and
//! undoing them, reading the journal one segment at a time, so that
//! recovery's memory does not grow with the journal's length.
//!
//! # Contract
//!
//! - **Outcomes first.** One pass over the kept segments, oldest first,
//!   learns every transaction's outcome. What it keeps per transaction
//!   without a commit or abort record yet is fixed-size plus the list of
//!   segments holding its undo; a transaction's entry is dropped when its
//!   commit or abort record is read. Memory: one segment, plus the
//!   transactions that were unfinished at some point of the pass (at most
//!   the manager's active limit at any time in the history).
//! - **Checks before any write.** A transaction in flight at the crash whose
//!   begin record is missing, or whose undo does not fit the store, is
//!   refused before any page is written, as when the whole journal was read
//!   at once.
//! - **Undo by page ranges.** The undo of the in-flight transactions is read
//!   again from their segments, newest first, keeping only the records of
//!   one range of pages; if that holds more image bytes than the batch
//!   budget, the range is halved and read again. Each batch is applied with
//!   [`apply_undo`] exactly as one batch over the whole journal would apply
//!   it to those pages: every record of a page is in the same batch, so the
//!   check that a page holds what the transaction wrote sees all of them.
//!   The undo of a single page is never split.
//! - **Crash during recovery.** Pages are written batch by batch and synced
//!   once at the end, before any abort record (the caller writes them); a
//!   crash in between leaves the transactions in flight, and the next
//!   recovery applies their undo again, which is idempotent.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::types::{Lsn, PageId};

use super::apply::{apply_undo, Applied, PageLocks, UndoRef};
use super::check_range;
use super::journal::{decode_segment, JournalStorage, Record, ScannedRecord, SegMeta};
use super::txns::UndoLog;
use super::writer::{PageWriter, RepairHook};
use crate::types::TxnId;

/// A transaction without a commit or abort record (so far).
pub(super) struct InFlight {
    /// Its begin record's LSN, if one was read.
    pub begin_lsn: Option<Lsn>,
    /// The LSN of its first record.
    pub first_lsn: Lsn,
    /// The segment and offset of its first record.
    first_at: (u64, u64),
    /// The segments holding its undo, oldest first, each once.
    segments: Vec<u64>,
    /// Its undo records.
    pub undo_entries: u64,
    /// Its before-image bytes.
    pub undo_bytes: u64,
    /// Why its first undo record that does not fit the store does not.
    misfit: Option<Error>,
}

/// What the outcome pass learned.
pub(super) struct Outcomes {
    /// The transactions in flight at the crash.
    pub in_flight: HashMap<TxnId, InFlight>,
    /// Their ids, in order of their first record.
    pub order: Vec<TxnId>,
    /// Commit records read.
    pub committed_seen: u64,
    /// Abort records read.
    pub aborted_seen: u64,
}

/// Reads and decodes a kept segment. The scan left only valid records in
/// it, so a decode that fails means the file changed under recovery.
fn read_records(storage: &dyn JournalStorage, id: u64) -> Result<Vec<ScannedRecord>> {
    let bytes = storage.read(id)?;
    match decode_segment(&bytes) {
        Ok(scan) => Ok(scan.records),
        Err(d) => Err(Error::corrupt_file(
            storage.segment_path(id),
            0,
            format!("{d}: the segment read as valid moments ago; something else changed the journal during recovery (two processes on one journal?)"),
        )),
    }
}

/// The undo fields of a record: page, offset, before-image, after-image
/// (none in format version 1).
type UndoFields<'a> = (PageId, u32, &'a [u8], Option<&'a [u8]>);

/// The undo fields of a record, if it is an undo record.
fn undo_of(record: &Record) -> Option<UndoFields<'_>> {
    match record {
        Record::Undo {
            page,
            offset,
            before,
            after,
            ..
        } => Some((*page, *offset, before, Some(after))),
        Record::UndoV1 {
            page,
            offset,
            before,
            ..
        } => Some((*page, *offset, before, None)),
        _ => None,
    }
}

/// The outcome pass: every transaction's outcome, and what recovery needs
/// of those in flight.
///
/// # Errors
/// The storage's read errors; [`Error::CorruptFile`] for undo of an
/// in-flight transaction without its begin record, or whose bytes lie
/// past the page's usable length; [`Error::PageOutOfRange`] for undo of an
/// in-flight transaction on a page past the store's end.
pub(super) fn find_in_flight(
    storage: &dyn JournalStorage,
    segments: &[SegMeta],
    usable_len: usize,
    page_count: u64,
) -> Result<Outcomes> {
    let mut in_flight: HashMap<TxnId, InFlight> = HashMap::new();
    let mut order: Vec<TxnId> = Vec::new();
    let (mut committed_seen, mut aborted_seen) = (0u64, 0u64);
    for seg in segments {
        for r in read_records(storage, seg.id)? {
            let Some(txn) = r.record.txn() else { continue };
            match &r.record {
                Record::Commit { .. } => {
                    committed_seen += 1;
                    in_flight.remove(&txn);
                }
                Record::Abort { .. } => {
                    aborted_seen += 1;
                    in_flight.remove(&txn);
                }
                record => {
                    let t = in_flight.entry(txn).or_insert_with(|| {
                        order.push(txn);
                        InFlight {
                            begin_lsn: None,
                            first_lsn: r.lsn,
                            first_at: (seg.id, r.offset),
                            segments: Vec::new(),
                            undo_entries: 0,
                            undo_bytes: 0,
                            misfit: None,
                        }
                    });
                    if let Record::Begin { .. } = record {
                        t.begin_lsn.get_or_insert(r.lsn);
                    } else if let Some((page, offset, before, _)) = undo_of(record) {
                        if t.segments.last() != Some(&seg.id) {
                            t.segments.push(seg.id);
                        }
                        t.undo_entries += 1;
                        t.undo_bytes += before.len() as u64;
                        // Only undo that will be applied must fit the
                        // store: finished transactions' undo may predate a
                        // resize. Which transactions finish is known only
                        // at the end of the pass.
                        if t.misfit.is_none() {
                            t.misfit = check_range(
                                page,
                                offset as usize,
                                before.len(),
                                usable_len,
                                page_count,
                            )
                            .err()
                            .map(|e| misfit_on_disk(e, storage, seg.id, &r, txn));
                        }
                    }
                }
            }
        }
        // `order` would otherwise grow with every transaction of the
        // history.
        if order.len() > 2 * in_flight.len() + 1024 {
            order.retain(|t| in_flight.contains_key(t));
        }
    }
    order.retain(|t| in_flight.contains_key(t));
    for txn in &order {
        let t = &in_flight[txn];
        // Checkpoints never retire the segment of an unfinished
        // transaction's begin record: without it, earlier undo of the
        // transaction went with a lost segment.
        if t.begin_lsn.is_none() && t.undo_entries > 0 {
            return Err(Error::corrupt_file(
                storage.segment_path(t.first_at.0),
                t.first_at.1,
                format!(
                    "transaction {txn} has undo records from LSN {} on but no begin record, and neither commit nor abort: its begin (and maybe more of its undo) went with a segment that is missing, so it cannot be rolled back whole; restore the missing segment from a backup",
                    t.first_lsn
                ),
            ));
        }
    }
    for txn in &order {
        if let Some(e) = in_flight.get_mut(txn).and_then(|t| t.misfit.take()) {
            return Err(e);
        }
    }
    Ok(Outcomes {
        in_flight,
        order,
        committed_seen,
        aborted_seen,
    })
}

/// The error for undo read from the journal that does not fit the store.
///
/// [`check_range`] answers [`Error::UndoOutOfPage`], an argument error
/// whose advice (split the change) is for a caller of `write`. A record on
/// disk that verified but covers bytes past the page's usable length is
/// damage that kept a valid CRC, or the journal of a store with larger
/// (usable) pages; the segment records no page size, so the two cannot be
/// told apart, and the error names the segment file and the record's offset
/// as [`Error::CorruptFile`] with both causes and what to do. No recovery
/// mode cuts the journal there: the check needs the store's geometry, so a
/// cut would drop the record and every one after it (commits of other
/// transactions included) for what may be only a journal opened with the
/// wrong store. A page past the store's end stays [`Error::PageOutOfRange`]:
/// a store that shrank while the journal was closed is the usual cause, and
/// that error says to grow the store.
fn misfit_on_disk(
    e: Error,
    storage: &dyn JournalStorage,
    segment: u64,
    r: &ScannedRecord,
    txn: TxnId,
) -> Error {
    match e {
        Error::UndoOutOfPage {
            page,
            offset,
            end,
            page_size,
        } => Error::corrupt_file(
            storage.segment_path(segment),
            r.offset,
            format!(
                "the undo record at LSN {} of transaction {txn}, which was in flight at the last crash, covers bytes {offset}..{end} of page {page}, but the store's pages have {page_size} usable bytes: the record is damaged, or the journal was written for a store with larger pages (or more usable bytes per page); open the journal with the store it was written for, or restore the segment from a backup (moving the journal aside loses the rollback of the transactions in flight)",
                r.lsn
            ),
        ),
        other => other,
    }
}

/// What undoing the in-flight transactions did.
#[derive(Default)]
pub(super) struct Undone {
    /// The batches' results, merged.
    pub applied: Applied,
    /// The pages each transaction's undo covers, sorted.
    pub touched: HashMap<TxnId, Vec<PageId>>,
}

/// Everything a batch needs to be applied.
pub(super) struct Target<'a> {
    pub pages: &'a dyn PageWriter,
    pub locks: &'a PageLocks,
    pub hook: Option<&'a RepairHook>,
}

/// The records of the in-flight transactions on pages `lo..hi`, read from
/// `segments` (newest first); `None` when their images exceed `budget`.
fn collect(
    storage: &dyn JournalStorage,
    segments: &[u64],
    in_flight: &HashMap<TxnId, InFlight>,
    (lo, hi): (u64, u64),
    budget: Option<u64>,
) -> Result<Option<Vec<ScannedRecord>>> {
    let mut batch = Vec::new();
    let mut bytes = 0u64;
    for &id in segments {
        for r in read_records(storage, id)? {
            let Some(txn) = r.record.txn() else { continue };
            let Some((page, _, before, after)) = undo_of(&r.record) else {
                continue;
            };
            if page.0 < lo || page.0 >= hi || !in_flight.contains_key(&txn) {
                continue;
            }
            bytes += (before.len() + after.map_or(0, <[u8]>::len)) as u64;
            if budget.is_some_and(|b| bytes > b) {
                return Ok(None);
            }
            batch.push(r);
        }
    }
    Ok(Some(batch))
}

/// Applies the undo of every transaction in `outcomes` (none of them is
/// finished), in batches of page ranges whose images fit `budget` bytes.
/// Does not sync the pages.
///
/// # Errors
/// The storage's read errors; the errors of [`apply_undo`] (nothing after
/// them was applied).
pub(super) fn undo_in_flight(
    storage: &dyn JournalStorage,
    outcomes: &Outcomes,
    target: &Target<'_>,
    budget: u64,
) -> Result<Undone> {
    let mut segments: Vec<u64> = outcomes
        .in_flight
        .values()
        .flat_map(|t| t.segments.iter().copied())
        .collect();
    segments.sort_unstable_by(|a, b| b.cmp(a));
    segments.dedup();
    let mut applied = Applied::default();
    let mut touched: HashMap<TxnId, HashSet<PageId>> = HashMap::new();
    let end = target.pages.page_count();
    let mut lo = 0u64;
    while lo < end && !segments.is_empty() {
        let mut hi = end;
        let batch = loop {
            // One page is never split, whatever it holds.
            let budget = (hi - lo > 1).then_some(budget);
            match collect(storage, &segments, &outcomes.in_flight, (lo, hi), budget)? {
                Some(batch) => break batch,
                None => hi = lo + (hi - lo) / 2,
            }
        };
        let refs: Vec<UndoRef<'_>> = batch
            .iter()
            .filter_map(|r| {
                let txn = r.record.txn()?;
                let (page, offset, before, after) = undo_of(&r.record)?;
                touched.entry(txn).or_default().insert(page);
                Some(UndoRef {
                    txn,
                    lsn: r.lsn.0,
                    page,
                    offset: offset as usize,
                    before,
                    after,
                })
            })
            .collect();
        let a = apply_undo(target.pages, target.locks, target.hook, refs)?;
        applied.entries += a.entries;
        applied.pages += a.pages;
        applied.replaced.extend(a.replaced);
        for (txn, failed) in a.blocked {
            applied.blocked.entry(txn).or_default().extend(failed);
        }
        lo = hi;
    }
    let touched = touched
        .into_iter()
        .map(|(txn, pages)| {
            let mut v: Vec<PageId> = pages.into_iter().collect();
            v.sort_unstable();
            (txn, v)
        })
        .collect();
    Ok(Undone { applied, touched })
}

/// The undo of `txn` (in flight, its rollback blocked), read back from its
/// segments into the log of a pending transaction the manager keeps
/// (closed: it takes no more undo).
///
/// # Errors
/// The storage's read errors.
pub(super) fn pending_txn(
    storage: &dyn JournalStorage,
    txn: TxnId,
    t: &InFlight,
) -> Result<UndoLog> {
    let mut pending = UndoLog::default();
    for &id in &t.segments {
        for r in read_records(storage, id)? {
            if r.record.txn() != Some(txn) {
                continue;
            }
            if let Some((page, offset, before, after)) = undo_of(&r.record) {
                pending.push(r.lsn, page, offset, before, after);
            }
        }
    }
    Ok(pending)
}
