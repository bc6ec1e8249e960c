//! Reading every segment at open, checking the set of segments against the
//! state file, classifying damage with the synced-through marks, and
//! applying the configured [`RecoveryMode`]. The outcome of each mode for
//! each kind of damage is tabled in the [journal module docs](super).
//!
//! # Contract
//!
//! The scan holds one segment's bytes (and its decoded records) at a time:
//! what it keeps of each segment is a fixed-size summary (header fields, how
//! its records end, how many there are, the highest transaction id and mark
//! claim among them). Memory is bounded by the segment size, not by the
//! journal's length. The records themselves are read again, one segment at a
//! time, by the manager's recovery after the repairs the scan made.

use crate::error::{Error, Result};

use super::reader::{decode_segment, salvage, SegmentEnd, SegmentScan, MAX_SEARCH_HASH_BYTES};
use super::record::{HeaderDamage, MAX_HEADER_COUNTER, SEGMENT_HEADER_LEN, SEGMENT_VERSION};
use super::state::JournalState;
use super::storage::JournalStorage;

/// What the journal does at open when it finds damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Cut off a torn tail — what a crash or a power loss leaves in the
    /// newest segment after its last completed fsync, holes included — and
    /// recover; refuse to open on damage to anything that was durable. The
    /// default.
    #[default]
    TolerateTornTail,
    /// Refuse to open on any damage, a torn tail included.
    AbsoluteConsistency,
    /// Also cut at damage that lies after the newest synced-through mark but
    /// is not a torn tail (for example a bad record in a segment that is not
    /// the newest), dropping everything after it, including later segments;
    /// transactions whose commit record is dropped are rolled back. It never
    /// drops a record at or below a synced-through mark (those may be
    /// acknowledged commits): such damage is refused as in the other modes.
    /// In a journal of format version 1, which has no marks, it cuts at any
    /// damage, as that version did. It also rebuilds a lost or damaged state
    /// file from the segments present. Transaction ids that the dropped
    /// records and segment headers show were handed out are not handed out
    /// again.
    StopAtFirstBadRecord,
}

/// Damage found in the journal at open, and what was done about it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalDamage {
    /// The newest segment ends in bytes that were never synced and are not a
    /// valid record (possibly with valid records after a hole, all of them
    /// after the newest synced-through mark), or a segment's creation did
    /// not finish. They were cut off.
    TornTail {
        /// The segment.
        segment: u64,
        /// Where the bad bytes started (the segment was cut to this length;
        /// 0 means the segment, whose creation did not finish, was removed).
        offset: u64,
        /// How many bytes were cut off.
        bytes_dropped: u64,
        /// What was wrong with the first bad record.
        reason: String,
    },
    /// A bad record (or header) after the newest synced-through mark that is
    /// not a torn tail. Only reported in [`RecoveryMode::StopAtFirstBadRecord`];
    /// the other modes refuse to open.
    Corrupt {
        /// The segment.
        segment: u64,
        /// Where the bad record starts.
        offset: u64,
        /// What was wrong.
        reason: String,
        /// Bytes cut off from that segment.
        bytes_dropped: u64,
        /// Later segments that were removed.
        segments_dropped: Vec<u64>,
    },
    /// The state file was missing or damaged and was rebuilt from the
    /// segments present. Only in [`RecoveryMode::StopAtFirstBadRecord`].
    StateRebuilt {
        /// What was wrong with it.
        reason: String,
    },
}

/// A segment kept after the scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegMeta {
    pub id: u64,
    pub first_lsn: u64,
    pub version: u32,
}

/// Everything the journal learned at open.
#[derive(Debug)]
pub(crate) struct JournalScan {
    /// Valid records in the kept segments (after the repairs).
    pub records_read: u64,
    /// The kept segments, oldest first: after the repairs, each holds only
    /// valid records, which [`decode_segment`] reads back in full.
    pub segments: Vec<SegMeta>,
    /// Length of the last kept segment, if any.
    pub tail_len: u64,
    pub next_lsn: u64,
    pub next_txn: u64,
    pub next_segment: u64,
    /// Damage found and repaired, in the order found.
    pub damage: Vec<JournalDamage>,
    pub segments_read: u64,
    /// The state to persist: which segments must exist after the scan, and
    /// the id reservation read (not yet extended).
    pub state: JournalState,
    /// The highest synced-through claim of a kept mark (0 when none).
    pub synced_through: u64,
}

/// Added to the highest id a journal shows when its state file had to be
/// rebuilt: ids handed out since the newest segment was created and never
/// made durable are below it unless that many transactions began without
/// one journal fsync.
pub(crate) const REBUILD_ID_MARGIN: u64 = 1 << 32;

enum Found {
    Torn {
        offset: u64,
        reason: String,
    },
    Corrupt {
        offset: u64,
        reason: String,
        lsn: u64,
    },
}

/// One past the highest transaction id a dropped segment shows was handed
/// out (its header's next id, its readable records' ids), ignoring values
/// at or above [`MAX_HEADER_COUNTER`]; 1 when nothing is readable.
fn ids_used(bytes: &[u8]) -> u64 {
    let Ok(s) = decode_segment(bytes) else {
        return 1;
    };
    s.records
        .iter()
        .filter_map(|r| r.record.txn())
        .map(|t| t.0.saturating_add(1))
        .chain([s.header.next_txn])
        .filter(|&t| t < MAX_HEADER_COUNTER)
        .max()
        .unwrap_or(1)
}

/// What the scan keeps of a segment's valid records: the records
/// themselves are dropped once these are taken.
#[derive(Clone, Copy, Debug, Default)]
struct Kept {
    /// How many.
    count: u64,
    /// The LSN after the last one (the header's first LSN when none).
    next_lsn: u64,
    /// One past the highest transaction id among them (0 when none).
    ids_end: u64,
    /// The highest synced-through claim of a mark among them (0 when none).
    mark_claim: u64,
}

impl Kept {
    /// Summarizes `scan`'s records and drops them.
    fn take(scan: &mut SegmentScan) -> Kept {
        let kept = Kept {
            count: scan.records.len() as u64,
            next_lsn: scan.next_lsn().0,
            ids_end: scan
                .records
                .iter()
                .filter_map(|r| r.record.txn())
                .map(|t| t.0.saturating_add(1))
                .max()
                .unwrap_or(0),
            mark_claim: scan
                .records
                .iter()
                .filter_map(|r| match r.record {
                    super::record::Record::Mark { synced_through } => Some(synced_through.0),
                    _ => None,
                })
                .max()
                .unwrap_or(0),
        };
        scan.records = Vec::new();
        kept
    }
}

/// A segment as read in the first pass (its records summarized, not kept).
struct Seen {
    id: u64,
    len: u64,
    decoded: std::result::Result<SegmentScan, HeaderDamage>,
    kept: Kept,
    /// For a segment whose header is damaged: valid frames found after it
    /// (`u64::MAX` when the search gave up), and the highest mark claim
    /// among them.
    frames_after_header: u64,
    salvaged_synced: Option<u64>,
}

impl Seen {
    fn synced(&self) -> Option<u64> {
        self.decoded
            .as_ref()
            .ok()
            .and_then(|s| s.synced_through)
            .map(|l| l.0)
            .max(self.salvaged_synced)
    }
}

/// A segment above the newest listed one that holds records.
struct Unlisted {
    id: u64,
    len: u64,
    first_lsn: Option<u64>,
    synced: Option<u64>,
    reason: String,
}

/// Where the state the scan works with came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StateSource {
    /// The state file.
    File,
    /// No state file and no segment of this format: a new journal, or one of
    /// format version 1. Derived from the segments present.
    Derived,
    /// The state file was lost or damaged; rebuilt from the segments
    /// present (StopAtFirstBadRecord only).
    Rebuilt,
}

/// Reads the state file, or derives (or, in StopAtFirstBadRecord, rebuilds)
/// the state from the segments present.
fn load_state(
    storage: &dyn JournalStorage,
    ids: &[u64],
    mode: RecoveryMode,
    damage: &mut Vec<JournalDamage>,
) -> Result<(JournalState, StateSource)> {
    let state_path = storage.state_path();
    let why = match storage.read_state()? {
        None => "it is missing".to_string(),
        Some(bytes) => match JournalState::decode(&state_path, &bytes) {
            Ok(s) => return Ok((s, StateSource::File)),
            Err(e @ Error::UnsupportedVersion { .. }) => return Err(e),
            Err(e) => e.to_string(),
        },
    };
    let mut this_format = false;
    for &id in ids {
        let b = storage.read(id)?;
        match super::record::SegmentHeader::decode(&b) {
            Ok(h) if h.version >= 2 => this_format = true,
            Err(HeaderDamage::Version { found }) => {
                return Err(Error::UnsupportedVersion {
                    path: storage.segment_path(id),
                    found,
                    supported: SEGMENT_VERSION,
                })
            }
            _ => {}
        }
    }
    // A state names segments from 1 (`oldest - 1` is "none"): one derived
    // from a segment numbered 0 could not be written and read back.
    if ids.first() == Some(&0) {
        return Err(Error::corrupt_file(
            storage.segment_path(0),
            0,
            format!(
                "segment number 0 is below the first any journal writes (1), and the state file cannot tell whether it is this journal's ({why}); move the segment aside, or restore the state file from a backup"
            ),
        ));
    }
    let derived = JournalState {
        oldest: ids.first().copied().unwrap_or(1),
        newest: ids.last().copied().unwrap_or(0),
        txn_reserved_end: 0,
    };
    let damaged = why != "it is missing";
    if !this_format && !damaged {
        return Ok((derived, StateSource::Derived));
    }
    if mode != RecoveryMode::StopAtFirstBadRecord {
        return Err(Error::corrupt_file(
            state_path,
            0,
            format!(
                "the undo journal's state file is unusable ({why}) while segments of this format exist, so a deleted segment could go unnoticed; restore the file from a backup, or reopen with RecoveryMode::StopAtFirstBadRecord to rebuild it from the segments present (a segment missing at either end then goes unnoticed)"
            ),
        ));
    }
    tracing::error!(reason = %why, "undo journal: state file rebuilt from the segments present");
    damage.push(JournalDamage::StateRebuilt { reason: why });
    Ok((derived, StateSource::Rebuilt))
}

/// The error for a segment lost between `kept` and `dropped`, the segment
/// the scan would drop whole for `what`: without the lost one the journal
/// would end at a segment that does not exist.
fn lost_segment(storage: &dyn JournalStorage, kept: u64, dropped: u64, what: &str) -> Error {
    let lost = kept.saturating_add(1);
    Error::corrupt_file(
        storage.segment_path(lost),
        0,
        format!(
            "segment {lost} is missing: segment {kept} is present and segment {dropped}, which recovery would drop whole ({what}), follows, so it was deleted or lost; it was complete, so it may have held durable records (acknowledged commits, undo for transactions in flight): restore it from a backup"
        ),
    )
}

/// Scans every segment of `storage` and repairs per `mode`.
pub(crate) fn scan(storage: &dyn JournalStorage, mode: RecoveryMode) -> Result<JournalScan> {
    let mut ids = storage.list()?;
    ids.sort_unstable();
    if ids.last() == Some(&u64::MAX) {
        return Err(Error::corrupt_file(
            storage.segment_path(u64::MAX),
            0,
            "segment number 18446744073709551615 leaves no room for a next segment; no real journal reaches it",
        ));
    }
    let mut damage = Vec::new();
    let (state, source) = load_state(storage, &ids, mode, &mut damage)?;
    let state_backed = source == StateSource::File;

    // Segments outside the listed range. Below it: a retirement that did not
    // finish; nothing in it is needed. Just above it, holding no record: a
    // creation that did not finish (a torn tail). Above it with records: the
    // leftovers of an interrupted cut by StopAtFirstBadRecord — or a state
    // file older than the segments, so only that mode removes them.
    let mut listed = Vec::new();
    let mut unlisted = Vec::new();
    for &id in &ids {
        if id < state.oldest {
            tracing::debug!(segment = id, "undo journal: removing a retired segment");
            storage.remove(id)?;
            continue;
        }
        if id <= state.newest {
            listed.push(id);
            continue;
        }
        let bytes = storage.read(id)?;
        let len = bytes.len() as u64;
        let holds_records = match decode_segment(&bytes) {
            Ok(s) => !s.records.is_empty() || s.frames_after_damage > 0,
            Err(_) => {
                let mut hashed = 0;
                let s = salvage(
                    &bytes,
                    SEGMENT_HEADER_LEN.min(bytes.len()),
                    1,
                    u64::MAX - 1,
                    0,
                    MAX_SEARCH_HASH_BYTES,
                    &mut hashed,
                );
                s.frames > 0 || s.gave_up
            }
        };
        let path = storage.segment_path(id);
        if id == state.newest.saturating_add(1) && !holds_records {
            let reason = format!(
                "segment {id} is not listed in the journal state (newest {}) and holds no record: its creation did not finish",
                state.newest
            );
            if mode == RecoveryMode::AbsoluteConsistency {
                return Err(Error::corrupt_file(
                    path,
                    0,
                    format!("torn tail ({reason}); recovery mode AbsoluteConsistency refuses any damage"),
                ));
            }
            storage.remove(id)?;
            tracing::warn!(segment = id, %reason, "undo journal: torn tail cut off");
            damage.push(JournalDamage::TornTail {
                segment: id,
                offset: 0,
                bytes_dropped: len,
                reason,
            });
            continue;
        }
        let reason = format!(
            "segment {id} holds records but the journal state ends at segment {}: it is a leftover of an interrupted cut by StopAtFirstBadRecord, or the state file is older than the segments",
            state.newest
        );
        if mode != RecoveryMode::StopAtFirstBadRecord {
            return Err(Error::corrupt_file(
                path,
                0,
                format!("{reason}; reopen with RecoveryMode::StopAtFirstBadRecord to drop it (it refuses if a synced-through mark covers its records)"),
            ));
        }
        let decoded = decode_segment(&bytes).ok();
        unlisted.push(Unlisted {
            id,
            len,
            first_lsn: decoded.as_ref().map(|d| d.header.first_lsn.0),
            synced: decoded.and_then(|d| d.synced_through).map(|l| l.0),
            reason,
        });
    }
    if state.newest >= state.oldest {
        for end in [state.oldest, state.newest] {
            if !listed.contains(&end) {
                return Err(Error::corrupt_file(
                    storage.segment_path(end),
                    0,
                    format!(
                        "segment {end} is missing: the journal state lists segments {}..={}, so it was deleted or lost; restore it from a backup (without it, transactions in flight could be only half rolled back, or acknowledged commits undone)",
                        state.oldest, state.newest
                    ),
                ));
            }
        }
    }

    // First pass: decode every listed segment and collect the marks.
    let mut seen = Vec::with_capacity(listed.len());
    let mut prev_end: Option<u64> = None;
    for &id in &listed {
        let bytes = storage.read(id)?;
        let mut decoded = decode_segment(&bytes);
        let kept = decoded.as_mut().map(Kept::take).unwrap_or_default();
        let mut frames_after_header = 0;
        match &decoded {
            Err(HeaderDamage::Version { found }) => {
                return Err(Error::UnsupportedVersion {
                    path: storage.segment_path(id),
                    found: *found,
                    supported: SEGMENT_VERSION,
                })
            }
            Err(_) => {
                let mut hashed = 0;
                let (expected, window) =
                    prev_end.map_or((1, u64::MAX - 1), |e| (e, super::reader::LSN_SEARCH_WINDOW));
                let s = salvage(
                    &bytes,
                    SEGMENT_HEADER_LEN.min(bytes.len()),
                    expected,
                    window,
                    0,
                    MAX_SEARCH_HASH_BYTES,
                    &mut hashed,
                );
                frames_after_header = if s.gave_up { u64::MAX } else { s.frames };
                prev_end = None;
                seen.push(Seen {
                    id,
                    len: bytes.len() as u64,
                    decoded,
                    kept,
                    frames_after_header,
                    salvaged_synced: s.synced_through,
                });
                continue;
            }
            Ok(_) => prev_end = Some(kept.next_lsn),
        }
        seen.push(Seen {
            id,
            len: bytes.len() as u64,
            decoded,
            kept,
            frames_after_header,
            salvaged_synced: None,
        });
    }
    let lstar = seen
        .iter()
        .filter_map(Seen::synced)
        .chain(unlisted.iter().filter_map(|u| u.synced))
        .max()
        .unwrap_or(0);
    // Unlisted segments with records are dropped only if no mark covers them.
    for u in unlisted {
        let path = storage.segment_path(u.id);
        if lstar > 0 && u.first_lsn.is_none_or(|f| f <= lstar) {
            return Err(Error::corrupt_file(
                path,
                0,
                format!("{}; a synced-through mark (LSN {lstar}) covers its records, so they were durable and may hold acknowledged commits: StopAtFirstBadRecord drops nothing a mark covers. Restore the journal's state file from the backup the segments come from", u.reason),
            ));
        }
        storage.remove(u.id)?;
        tracing::error!(segment = u.id, reason = %u.reason, "undo journal: unlisted segment removed");
        damage.push(JournalDamage::Corrupt {
            segment: u.id,
            offset: 0,
            reason: u.reason,
            bytes_dropped: u.len,
            segments_dropped: Vec::new(),
        });
    }

    let mut out = JournalScan {
        records_read: 0,
        segments: Vec::new(),
        tail_len: 0,
        next_lsn: 1,
        next_txn: state.txn_reserved_end.max(1),
        next_segment: state.newest.saturating_add(1).max(state.oldest),
        damage,
        segments_read: seen.len() as u64,
        state,
        synced_through: 0,
    };
    let mut expected_lsn: Option<u64> = None;
    // What each kept segment's records add up to, parallel to `out.segments`.
    let mut kept: Vec<Kept> = Vec::new();
    for (i, s) in seen.iter().enumerate() {
        let id = s.id;
        let last = i + 1 == seen.len();
        let found = match &s.decoded {
            Err(d) => {
                let half_created = last
                    && !state_backed
                    && (matches!(d, HeaderDamage::Short { .. }) || s.frames_after_header == 0);
                if half_created {
                    Some(Found::Torn {
                        offset: 0,
                        reason: format!(
                            "{d}; nothing valid follows: the segment's creation did not finish"
                        ),
                    })
                } else {
                    let why = if !last {
                        "later segments follow"
                    } else if state_backed {
                        "the journal state lists the segment, so its creation had finished"
                    } else {
                        "valid records follow"
                    };
                    Some(Found::Corrupt {
                        offset: 0,
                        reason: format!("{d}; {why}, so this is damage, not a torn tail"),
                        lsn: expected_lsn.unwrap_or(1),
                    })
                }
            }
            Ok(sc) if sc.header.segment != id => Some(Found::Corrupt {
                offset: 8,
                reason: format!("header names segment {}", sc.header.segment),
                lsn: expected_lsn.unwrap_or(sc.header.first_lsn.0),
            }),
            Ok(sc) if expected_lsn.is_some_and(|e| e != sc.header.first_lsn.0) => {
                let e = expected_lsn.unwrap_or_default();
                return Err(Error::corrupt_file(
                    storage.segment_path(id),
                    16,
                    format!(
                        "segment starts at LSN {}, but the previous segment ended before LSN {e}: a segment between them is missing (deleted or lost); restore it from a backup (recovery never opens a journal with records missing in the middle)",
                        sc.header.first_lsn
                    ),
                ));
            }
            Ok(sc) => {
                out.next_txn = out.next_txn.max(sc.header.next_txn);
                out.segments.push(SegMeta {
                    id,
                    first_lsn: sc.header.first_lsn.0,
                    version: sc.header.version,
                });
                out.tail_len = sc.valid_len;
                let next = s.kept.next_lsn;
                expected_lsn = Some(next);
                out.next_lsn = next;
                kept.push(s.kept);
                let (offset, reason) = match &sc.end {
                    SegmentEnd::Clean => (None, String::new()),
                    SegmentEnd::TornTail { offset, reason }
                    | SegmentEnd::Corrupt { offset, reason, .. } => (Some(*offset), reason.clone()),
                };
                offset.map(|offset| {
                    let torn = last
                        && if sc.header.version >= 2 {
                            sc.torn_possible && next > lstar
                        } else {
                            matches!(sc.end, SegmentEnd::TornTail { .. })
                        };
                    if torn {
                        let reason = if sc.frames_after_damage > 0 {
                            format!(
                                "{reason}; {} valid records after it lie after the synced-through mark (LSN {lstar}): they were never synced (a hole a power loss leaves) and are dropped with it",
                                sc.frames_after_damage
                            )
                        } else {
                            reason
                        };
                        Found::Torn { offset, reason }
                    } else {
                        let why = if !last {
                            "later segments follow, and a segment is synced before the next is created".to_string()
                        } else if sc.header.version >= 2 && next <= lstar {
                            format!("a synced-through mark covers LSN {lstar}, so these bytes were durable")
                        } else if sc.header.version >= 2 && !sc.torn_possible {
                            "its frame is valid or the bytes after it could not all be searched".to_string()
                        } else {
                            "valid records follow".to_string()
                        };
                        Found::Corrupt {
                            offset,
                            reason: format!("{reason}; {why}, so this is damage, not a torn tail"),
                            lsn: next,
                        }
                    }
                })
            }
        };
        let Some(found) = found else { continue };
        let path = storage.segment_path(id);
        // Dropping this segment whole makes the one numbered just below it
        // the newest the state lists: it must be present. When it is not
        // (ids in the listed range skip it), it was lost; it was complete
        // (a segment is synced before the next is created), so it may have
        // held durable records, and nothing left shows which.
        let below = i.checked_sub(1).map(|p| seen[p].id);
        let lost_below = |what: &str| match below {
            Some(b) if b.saturating_add(1) != id => Err(lost_segment(storage, b, id, what)),
            _ => Ok(()),
        };
        match found {
            Found::Torn { offset, reason } => {
                if mode == RecoveryMode::AbsoluteConsistency {
                    return Err(Error::corrupt_file(
                        path,
                        offset,
                        format!("torn tail ({reason}); recovery mode AbsoluteConsistency refuses any damage"),
                    ));
                }
                if offset < SEGMENT_HEADER_LEN as u64 {
                    lost_below("a torn tail: its creation did not finish")?;
                    storage.remove(id)?;
                } else {
                    storage.truncate(id, offset)?;
                }
                tracing::warn!(segment = id, offset, %reason, "undo journal: torn tail cut off");
                out.damage.push(JournalDamage::TornTail {
                    segment: id,
                    offset,
                    bytes_dropped: s.len - offset,
                    reason,
                });
                if offset < SEGMENT_HEADER_LEN as u64 {
                    // The segment is gone: the state ends before it, never
                    // below `oldest - 1` (a torn leftover numbered below the
                    // oldest listed, id 0 included, lowers nothing).
                    let floor = out.state.oldest.saturating_sub(1);
                    out.state.newest = id.saturating_sub(1).max(floor);
                    out.next_segment = out.state.newest + 1;
                }
            }
            Found::Corrupt {
                offset,
                reason,
                lsn,
            } => {
                if mode != RecoveryMode::StopAtFirstBadRecord {
                    return Err(Error::corrupt_file(
                        path,
                        offset,
                        format!("{reason} (recovery mode {mode:?} refuses it; StopAtFirstBadRecord would drop what lies after the newest synced-through mark, if the damage lies there)"),
                    ));
                }
                if lstar > 0 && lsn <= lstar {
                    return Err(Error::corrupt_file(
                        path,
                        offset,
                        format!("{reason}; the damage is at LSN {lsn}, at or below the synced-through mark (LSN {lstar}): those records were durable and may hold acknowledged commits, so StopAtFirstBadRecord drops nothing here. Restore the journal from a backup; or, if the host can redo its committed transactions from its own log, move the journal directory aside and open a new one (its pending undo is then lost)"),
                    ));
                }
                let kept_here = out.segments.last().map(|s| s.id) == Some(id);
                let whole = offset < SEGMENT_HEADER_LEN as u64 || !kept_here;
                if whole {
                    lost_below("damage after the newest synced-through mark")?;
                }
                let later: Vec<u64> = seen[i + 1..].iter().map(|s| s.id).collect();
                // Transaction ids handed out in what is dropped are never
                // handed out again.
                let bytes = storage.read(id)?;
                out.next_txn = out.next_txn.max(ids_used(&bytes));
                for &l in &later {
                    out.next_txn = out.next_txn.max(ids_used(&storage.read(l)?));
                }
                // The state names the new newest segment, and reserves past
                // every id seen, before anything is removed: a crash in
                // between leaves the dropped segments unlisted, and the next
                // open in this mode removes them.
                // Never below `oldest - 1` (no segment left): a damaged
                // segment numbered below the oldest the state lists (an
                // unlisted leftover, id 0 included) drops everything from it
                // on.
                let floor = out.state.oldest.saturating_sub(1);
                out.state.newest = if whole { id.saturating_sub(1) } else { id }.max(floor);
                out.state.txn_reserved_end = out
                    .state
                    .txn_reserved_end
                    .max(out.next_txn)
                    .min(MAX_HEADER_COUNTER);
                storage.write_state(&out.state.encode())?;
                let bytes_dropped = if whole {
                    if kept_here {
                        out.segments.pop();
                        kept.pop();
                    }
                    storage.remove(id)?;
                    out.tail_len = if out.segments.is_empty() {
                        0
                    } else {
                        out.tail_len
                    };
                    s.len
                } else {
                    storage.truncate(id, offset)?;
                    out.tail_len = offset;
                    s.len - offset
                };
                for &l in &later {
                    storage.remove(l)?;
                }
                out.next_segment = out.state.newest + 1;
                tracing::error!(segment = id, offset, %reason, dropped_segments = later.len(), "undo journal: stopped at the first bad record");
                out.damage.push(JournalDamage::Corrupt {
                    segment: id,
                    offset,
                    reason,
                    bytes_dropped,
                    segments_dropped: later,
                });
            }
        }
        break;
    }
    for k in &kept {
        out.records_read += k.count;
        out.next_txn = out.next_txn.max(k.ids_end);
    }
    if source == StateSource::Rebuilt {
        out.next_txn = out
            .next_txn
            .saturating_add(REBUILD_ID_MARGIN)
            .min(MAX_HEADER_COUNTER);
    }
    out.synced_through = kept.iter().map(|k| k.mark_claim).max().unwrap_or(0);
    if out.segments.is_empty() {
        out.tail_len = 0;
    }
    out.state.txn_reserved_end = out
        .state
        .txn_reserved_end
        .max(out.next_txn)
        .min(MAX_HEADER_COUNTER);
    Ok(out)
}
