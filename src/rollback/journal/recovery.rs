//! Reading every segment at open, classifying damage, and applying the
//! configured [`RecoveryMode`]. The outcome of each mode for each kind of
//! damage is tabled in the [journal module docs](super).

use crate::error::{Error, Result};

use super::reader::{decode_segment, ScannedRecord, SegmentEnd};
use super::record::{HeaderDamage, MAX_HEADER_COUNTER, SEGMENT_HEADER_LEN, SEGMENT_VERSION};
use super::storage::JournalStorage;

/// What the journal does at open when it finds damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Cut off a torn tail (what a crash during an append leaves) and
    /// recover; refuse to open on damage in the middle. The default.
    #[default]
    TolerateTornTail,
    /// Refuse to open on any damage, a torn tail included.
    AbsoluteConsistency,
    /// Recover from the records before the first bad one and drop everything
    /// after it, including later segments. Transactions whose commit record
    /// lies after the damage are rolled back: use this only when the host can
    /// redo them from its own log. Transaction ids that the dropped records
    /// and segment headers show were handed out are not handed out again.
    StopAtFirstBadRecord,
}

/// Damage found in the journal at open, and what was done about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalDamage {
    /// The last segment ends in bytes that are not a valid record, and
    /// nothing valid follows them. They were cut off.
    TornTail {
        /// The segment.
        segment: u64,
        /// Where the bad bytes started (the segment was cut to this length;
        /// 0 means the segment, whose header was incomplete, was removed).
        offset: u64,
        /// How many bytes were cut off.
        bytes_dropped: u64,
        /// What was wrong with the first bad record.
        reason: String,
    },
    /// A bad record (or header) with valid data after it. Only reported in
    /// [`RecoveryMode::StopAtFirstBadRecord`]; the other modes refuse to open.
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
}

/// A segment kept after the scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegMeta {
    pub id: u64,
    pub first_lsn: u64,
}

/// Everything the journal learned at open.
#[derive(Debug)]
pub(crate) struct JournalScan {
    pub records: Vec<ScannedRecord>,
    pub segments: Vec<SegMeta>,
    /// Length of the last kept segment, if any.
    pub tail_len: u64,
    pub next_lsn: u64,
    pub next_txn: u64,
    pub next_segment: u64,
    pub damage: Option<JournalDamage>,
    pub segments_read: u64,
}

enum Found {
    Torn { offset: u64, reason: String },
    Corrupt { offset: u64, reason: String },
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
        .map(|r| r.record.txn().0.saturating_add(1))
        .chain([s.header.next_txn])
        .filter(|&t| t < MAX_HEADER_COUNTER)
        .max()
        .unwrap_or(1)
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
    let mut out = JournalScan {
        records: Vec::new(),
        segments: Vec::new(),
        tail_len: 0,
        next_lsn: 1,
        next_txn: 1,
        next_segment: ids.last().map_or(1, |l| l.saturating_add(1)),
        damage: None,
        segments_read: 0,
    };
    let mut expected_lsn: Option<u64> = None;
    for (i, &id) in ids.iter().enumerate() {
        let last = i + 1 == ids.len();
        let bytes = storage.read(id)?;
        out.segments_read += 1;
        let len = bytes.len() as u64;
        let found = match decode_segment(&bytes) {
            Err(HeaderDamage::Version { found }) => {
                return Err(Error::UnsupportedVersion {
                    path: storage.segment_path(id),
                    found,
                    supported: SEGMENT_VERSION,
                })
            }
            Err(d @ HeaderDamage::Short { .. }) if last => Some(Found::Torn {
                offset: 0,
                reason: d.to_string(),
            }),
            Err(d) => Some(Found::Corrupt {
                offset: 0,
                reason: d.to_string(),
            }),
            Ok(s) if s.header.segment != id => Some(Found::Corrupt {
                offset: 8,
                reason: format!("header names segment {}", s.header.segment),
            }),
            Ok(s) if expected_lsn.is_some_and(|e| e != s.header.first_lsn.0) => {
                Some(Found::Corrupt {
                    offset: 16,
                    reason: format!(
                        "segment starts at LSN {}, but the previous segment ended before LSN {}: records are missing",
                        s.header.first_lsn,
                        expected_lsn.unwrap_or_default()
                    ),
                })
            }
            Ok(s) => {
                out.next_txn = out.next_txn.max(s.header.next_txn);
                out.segments.push(SegMeta {
                    id,
                    first_lsn: s.header.first_lsn.0,
                });
                out.tail_len = s.valid_len;
                let next = s
                    .records
                    .last()
                    .map_or(s.header.first_lsn.0, |r| r.lsn.0.saturating_add(1));
                expected_lsn = Some(next);
                out.next_lsn = next;
                out.records.extend(s.records);
                match s.end {
                    SegmentEnd::Clean => None,
                    SegmentEnd::TornTail { offset, reason } if last => {
                        Some(Found::Torn { offset, reason })
                    }
                    SegmentEnd::TornTail { offset, reason } => Some(Found::Corrupt {
                        offset,
                        reason: format!("{reason}; later segments follow"),
                    }),
                    SegmentEnd::Corrupt { offset, reason, .. } => {
                        Some(Found::Corrupt { offset, reason })
                    }
                }
            }
        };
        let Some(found) = found else { continue };
        let path = storage.segment_path(id);
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
                    storage.remove(id)?;
                } else {
                    storage.truncate(id, offset)?;
                }
                tracing::warn!(segment = id, offset, %reason, "undo journal: torn tail cut off");
                out.damage = Some(JournalDamage::TornTail {
                    segment: id,
                    offset,
                    bytes_dropped: len - offset,
                    reason,
                });
            }
            Found::Corrupt { offset, reason } => {
                if mode != RecoveryMode::StopAtFirstBadRecord {
                    return Err(Error::corrupt_file(
                        path,
                        offset,
                        format!("{reason}; valid records follow, so this is damage, not a torn tail (recovery mode {mode:?} refuses it; StopAtFirstBadRecord would drop everything from here on)"),
                    ));
                }
                let kept = out.segments.last().map(|s| s.id) == Some(id);
                let bytes_dropped = if offset < SEGMENT_HEADER_LEN as u64 || !kept {
                    // The segment's header itself is unusable (or does not
                    // fit the sequence): the whole segment goes.
                    if kept {
                        out.segments.pop();
                    }
                    storage.remove(id)?;
                    out.tail_len = out.segments.last().map_or(0, |_| out.tail_len);
                    len
                } else {
                    storage.truncate(id, offset)?;
                    out.tail_len = offset;
                    len - offset
                };
                let later: Vec<u64> = ids[i + 1..].to_vec();
                // Transaction ids handed out in what is dropped are never
                // handed out again.
                out.next_txn = out.next_txn.max(ids_used(&bytes));
                for &l in &later {
                    out.next_txn = out.next_txn.max(ids_used(&storage.read(l)?));
                    storage.remove(l)?;
                }
                tracing::error!(segment = id, offset, %reason, dropped_segments = later.len(), "undo journal: stopped at the first bad record");
                out.damage = Some(JournalDamage::Corrupt {
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
    if let Some(max_txn) = out.records.iter().map(|r| r.record.txn().0).max() {
        out.next_txn = out.next_txn.max(max_txn.saturating_add(1));
    }
    if out.segments.is_empty() {
        out.tail_len = 0;
    }
    Ok(out)
}
