//! Decoding a whole segment from untrusted bytes, telling a torn tail from
//! damage in the middle, and collecting the synced-through marks that let
//! recovery tell bytes that were never synced from bytes that were.

use crate::types::Lsn;

use super::record::{
    decode_frame, frame_kind, type_allowed, FrameError, HeaderDamage, Record, SegmentHeader,
    MAX_PAYLOAD_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// One record found in a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedRecord {
    /// Byte offset of the record's frame in the segment.
    pub offset: u64,
    /// Its LSN.
    pub lsn: Lsn,
    /// The record.
    pub record: Record,
}

/// How the records of a segment end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Every byte after the header belongs to a valid record.
    Clean,
    /// A bad or incomplete record at `offset`, and no valid record anywhere
    /// after it: what a crash in the middle of an append leaves.
    TornTail {
        /// Where the bad bytes start.
        offset: u64,
        /// What was wrong with the first bad record.
        reason: String,
    },
    /// A bad record at `offset` with a valid record after it (at
    /// `next_valid`). Also reported when the search for a valid record gave
    /// up after checksumming [`MAX_SEARCH_HASH_BYTES`] (then `next_valid` is
    /// where it stopped), and for a valid frame whose LSN breaks the
    /// sequence (then `next_valid == offset`). Whether this is damage or the
    /// hole a power loss leaves in never-synced bytes is decided by
    /// recovery from the synced-through marks (see
    /// [`SegmentScan::torn_possible`]).
    Corrupt {
        /// Where the bad record starts.
        offset: u64,
        /// What was wrong with it.
        reason: String,
        /// Offset of the first valid frame found after it, or where the
        /// search for one stopped.
        next_valid: u64,
    },
}

/// The decoded contents of one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// The segment's header.
    pub header: SegmentHeader,
    /// The valid records before the first bad one, in order.
    pub records: Vec<ScannedRecord>,
    /// Bytes up to the end of the last valid record (header included).
    pub valid_len: u64,
    /// How the records end.
    pub end: SegmentEnd,
    /// The highest LSN a valid mark record anywhere in the segment — before
    /// the first bad record or in the valid frames found after it — says
    /// was synced. A mark is written only after the fsync it names has
    /// completed, so the claim holds even for a mark found after a hole.
    pub synced_through: Option<Lsn>,
    /// Valid frames found after the first bad record (0 for a clean
    /// segment).
    pub frames_after_damage: u64,
    /// Whether the first bad record could be what a crash or power loss
    /// leaves in bytes that were never synced: its frame is incomplete or
    /// fails its checksum (a valid frame with an out-of-sequence LSN never
    /// is), and the search after it finished within its budget. False for a
    /// clean segment.
    pub torn_possible: bool,
}

impl SegmentScan {
    /// The LSN the first bad record should have had (one past the last good
    /// record).
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        self.records
            .last()
            .map_or(self.header.first_lsn, |r| Lsn(r.lsn.0.saturating_add(1)))
    }
}

/// Decodes a segment's bytes: the header, then records up to the first bad
/// one. Records must carry consecutive LSNs starting at the header's
/// `first_lsn` and types of the header's format version; a record that
/// breaks either rule is a bad record.
///
/// This is the entry point for untrusted input (it is fuzzed): it never
/// panics and allocates at most the size of the input per record.
///
/// # Errors
/// [`HeaderDamage`] when the header itself is short or invalid.
pub fn decode_segment(bytes: &[u8]) -> Result<SegmentScan, HeaderDamage> {
    decode_segment_counted(bytes, MAX_SEARCH_HASH_BYTES).map(|(scan, _)| scan)
}

/// [`decode_segment`] with the search budget given, also returning how many
/// bytes the search after a bad record checksummed.
fn decode_segment_counted(bytes: &[u8], budget: u64) -> Result<(SegmentScan, u64), HeaderDamage> {
    let header = SegmentHeader::decode(bytes)?;
    let version = header.version;
    let mut records = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    let mut expected = header.first_lsn.0;
    let mut synced: Option<u64> = None;
    loop {
        if at == bytes.len() {
            return Ok((
                SegmentScan {
                    header,
                    records,
                    valid_len: at as u64,
                    end: SegmentEnd::Clean,
                    synced_through: synced.map(Lsn),
                    frames_after_damage: 0,
                    torn_possible: false,
                },
                0,
            ));
        }
        let reason = match decode_frame(&bytes[at..], version) {
            Ok((lsn, record, len)) if lsn.0 == expected => {
                if let Record::Mark { synced_through } = record {
                    synced = synced.max(Some(synced_through.0));
                }
                records.push(ScannedRecord {
                    offset: at as u64,
                    lsn,
                    record,
                });
                at += len;
                expected = expected.wrapping_add(1);
                continue;
            }
            Ok((lsn, _, _)) => {
                // A frame that verifies is never the product of a torn write:
                // an LSN out of sequence is damage (or foreign data).
                return Ok((
                    SegmentScan {
                        header,
                        records,
                        valid_len: at as u64,
                        end: SegmentEnd::Corrupt {
                            offset: at as u64,
                            reason: format!("record has LSN {lsn}, expected {expected}"),
                            next_valid: at as u64,
                        },
                        synced_through: synced.map(Lsn),
                        frames_after_damage: 0,
                        torn_possible: false,
                    },
                    0,
                ));
            }
            Err(FrameError::Incomplete(r) | FrameError::Bad(r)) => r,
        };
        let mut hashed = 0u64;
        let found = salvage(
            bytes,
            at + 1,
            expected,
            LSN_SEARCH_WINDOW,
            version,
            budget,
            &mut hashed,
        );
        let synced = synced.max(found.synced_through);
        let (end, torn_possible) = match found.first {
            Search::Found(next) => (
                SegmentEnd::Corrupt {
                    offset: at as u64,
                    reason,
                    next_valid: next as u64,
                },
                !found.gave_up,
            ),
            Search::GaveUp(stopped) => (
                SegmentEnd::Corrupt {
                    offset: at as u64,
                    reason: format!(
                        "{reason}; the bytes after it hold too many record-like frames to search (checked up to offset {stopped}), so it is treated as damage, not a torn tail"
                    ),
                    next_valid: stopped as u64,
                },
                false,
            ),
            Search::NotFound => (
                SegmentEnd::TornTail {
                    offset: at as u64,
                    reason,
                },
                true,
            ),
        };
        return Ok((
            SegmentScan {
                header,
                records,
                valid_len: at as u64,
                end,
                synced_through: synced.map(Lsn),
                frames_after_damage: found.frames,
                torn_possible,
            },
            hashed,
        ));
    }
}

/// How many bytes the search for valid frames after a bad record may
/// checksum (not counting the valid frames it finds, each read once) before
/// it stops and treats the bad record as damage in the middle. Large enough
/// for any real record; it bounds the work a crafted segment can cause.
pub const MAX_SEARCH_HASH_BYTES: u64 = 4 * MAX_PAYLOAD_LEN as u64;

/// A frame found after a bad record counts only if its LSN lies in
/// `expected..expected + LSN_SEARCH_WINDOW`: a later record of this journal
/// has a higher LSN than the last good one, and not absurdly higher.
pub const LSN_SEARCH_WINDOW: u64 = 1 << 20;

/// What the search for a valid frame found.
enum Search {
    /// A valid frame starts here.
    Found(usize),
    /// No valid frame anywhere after the bad record.
    NotFound,
    /// The checksum budget ran out at this offset.
    GaveUp(usize),
}

/// What [`salvage`] found after a bad record.
pub(crate) struct Salvage {
    first: Search,
    /// Valid frames found.
    pub frames: u64,
    /// The highest claim of a mark among them.
    pub synced_through: Option<u64>,
    /// Whether the budget ran out before the end of the bytes.
    pub gave_up: bool,
}

/// Reads every valid frame at or after `from` whose LSN lies in
/// `expected..expected + window` (then within [`LSN_SEARCH_WINDOW`] above
/// the previous one found): the first is found by [`find_valid_frame`], the
/// ones after it by decoding in sequence and, at each bad spot, searching
/// again. Counts them and keeps the highest mark claim. Checksums at most
/// `budget` bytes in all.
pub(crate) fn salvage(
    bytes: &[u8],
    from: usize,
    expected: u64,
    window: u64,
    version: u32,
    budget: u64,
    hashed: &mut u64,
) -> Salvage {
    let mut out = Salvage {
        first: Search::NotFound,
        frames: 0,
        synced_through: None,
        gave_up: false,
    };
    let mut expected = expected;
    let mut at = match find_valid_frame(bytes, from, expected, window, version, budget, hashed) {
        Search::Found(p) => {
            out.first = Search::Found(p);
            p
        }
        other => {
            out.gave_up = matches!(other, Search::GaveUp(_));
            out.first = other;
            return out;
        }
    };
    loop {
        if at >= bytes.len() {
            return out;
        }
        match decode_frame(&bytes[at..], version) {
            // Valid frames are read once each, so their checksums cost at
            // most the length of the input: they are not charged to the
            // budget, which bounds the search work between them.
            Ok((lsn, record, n)) if lsn.0.wrapping_sub(expected) < LSN_SEARCH_WINDOW => {
                out.frames += 1;
                if let Record::Mark { synced_through } = record {
                    out.synced_through = out.synced_through.max(Some(synced_through.0));
                }
                expected = lsn.0.wrapping_add(1);
                at += n;
            }
            _ => {
                // A bad frame is search work, charged like the search.
                *hashed += frame_cost(&bytes[at..]);
                if *hashed > budget {
                    out.gave_up = true;
                    return out;
                }
                match find_valid_frame(
                    bytes,
                    at + 1,
                    expected,
                    LSN_SEARCH_WINDOW,
                    version,
                    budget,
                    hashed,
                ) {
                    Search::Found(p) => at = p,
                    Search::NotFound => return out,
                    Search::GaveUp(_) => {
                        out.gave_up = true;
                        return out;
                    }
                }
            }
        }
    }
}

/// What checksumming the frame at the start of `b` would cost (its claimed
/// length, capped by what is there).
fn frame_cost(b: &[u8]) -> u64 {
    if b.len() < RECORD_HEADER_LEN {
        return 0;
    }
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if len > MAX_PAYLOAD_LEN {
        return 0;
    }
    (RECORD_HEADER_LEN + len).min(b.len()) as u64
}

/// The first offset at or after `from` where a complete frame with a valid
/// checksum, a type of `version` and an LSN in `expected..expected +
/// window` starts. Cheap checks (LSN, type, length) reject most
/// offsets before the checksum is computed; `hashed` counts the bytes
/// checksummed, and once the next checksum would take it past `budget` the
/// search gives up.
fn find_valid_frame(
    bytes: &[u8],
    from: usize,
    expected: u64,
    window: u64,
    version: u32,
    budget: u64,
    hashed: &mut u64,
) -> Search {
    let mut at = from;
    while at + RECORD_HEADER_LEN <= bytes.len() {
        let b = &bytes[at..];
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&b[8..16]);
        let lsn = u64::from_le_bytes(lsn);
        if lsn.wrapping_sub(expected) < window
            && frame_kind(b).is_some_and(|k| type_allowed(k, version))
            && len <= MAX_PAYLOAD_LEN
            && RECORD_HEADER_LEN + len <= b.len()
        {
            let cost = (RECORD_HEADER_LEN + len) as u64;
            if *hashed + cost > budget {
                return Search::GaveUp(at);
            }
            *hashed += cost;
            if decode_frame(b, version).is_ok() {
                return Search::Found(at);
            }
        }
        at += 1;
    }
    Search::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollback::journal::SEGMENT_VERSION;
    use crate::rollback::TxnId;
    use crate::types::PageId;

    fn segment(n: u64) -> Vec<u8> {
        let mut b = SegmentHeader {
            version: SEGMENT_VERSION,
            segment: 1,
            first_lsn: Lsn(10),
            next_txn: 1,
        }
        .encode()
        .to_vec();
        for i in 0..n {
            Record::Undo {
                txn: TxnId(1),
                page: PageId(i),
                offset: 0,
                before: vec![i as u8; 8],
                after: vec![!(i as u8); 8],
            }
            .encode_into(Lsn(10 + i), &mut b);
        }
        b
    }

    #[test]
    fn clean_torn_and_corrupt_are_told_apart() {
        let full = segment(4);
        let s = decode_segment(&full).unwrap();
        assert_eq!(s.end, SegmentEnd::Clean);
        assert_eq!(s.records.len(), 4);
        let torn = &full[..full.len() - 3];
        let s = decode_segment(torn).unwrap();
        assert!(matches!(s.end, SegmentEnd::TornTail { .. }));
        assert!(s.torn_possible);
        assert_eq!(s.records.len(), 3);
        let mut mid = full.clone();
        let second = s.records[1].offset as usize;
        mid[second + 20] ^= 0x40;
        let s = decode_segment(&mid).unwrap();
        assert!(
            matches!(s.end, SegmentEnd::Corrupt { offset, .. } if offset == second as u64),
            "{:?}",
            s.end
        );
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.frames_after_damage, 2);
        assert!(s.torn_possible);
    }

    #[test]
    fn marks_are_found_before_and_after_a_hole() {
        let mut b = segment(2);
        Record::Mark {
            synced_through: Lsn(10),
        }
        .encode_into(Lsn(12), &mut b);
        let hole = b.len();
        Record::Commit { txn: TxnId(1) }.encode_into(Lsn(13), &mut b);
        Record::Mark {
            synced_through: Lsn(12),
        }
        .encode_into(Lsn(14), &mut b);
        assert_eq!(decode_segment(&b).unwrap().synced_through, Some(Lsn(12)));
        b[hole..hole + 10].fill(0);
        let s = decode_segment(&b).unwrap();
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.next_lsn(), Lsn(13));
        assert_eq!(s.synced_through, Some(Lsn(12)), "the mark after the hole");
        assert_eq!(s.frames_after_damage, 1);
    }

    /// A segment of one good record, then a bad one, then `n` frame headers
    /// every 17 bytes with the given LSN, a valid type and a length reaching
    /// to the end, whose checksums are wrong.
    fn crafted_candidates(n: usize, lsn: u64) -> Vec<u8> {
        let mut b = segment(1);
        let total = b.len() + RECORD_HEADER_LEN * (n + 1);
        b.extend_from_slice(&[0xFF; RECORD_HEADER_LEN]);
        while b.len() < total {
            let len = (total - b.len() - RECORD_HEADER_LEN) as u32;
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
            b.extend_from_slice(&lsn.to_le_bytes());
            b.push(5);
        }
        b
    }

    #[test]
    fn the_search_after_a_bad_record_is_bounded() {
        // LSN 11 is the next expected one: every candidate passes the cheap
        // checks and the search must give up within its budget.
        let bytes = crafted_candidates(4000, 11);
        let budget = 1 << 20;
        let (s, hashed) = decode_segment_counted(&bytes, budget).unwrap();
        assert!(hashed <= budget, "hashed {hashed} bytes");
        assert_eq!(s.records.len(), 1);
        assert!(!s.torn_possible);
        assert!(
            matches!(&s.end, SegmentEnd::Corrupt { offset, .. } if *offset == s.valid_len),
            "{:?}",
            s.end
        );
    }

    #[test]
    fn the_salvage_reads_any_number_of_valid_frames_and_bounds_the_search() {
        // A hole followed by more valid frames than the budget would cover:
        // all of them are read (a power-loss tail of any length stays a
        // torn tail), and only the search is charged.
        let mut b = segment(1);
        b.extend_from_slice(&[0xFF; 30]);
        for i in 0..2000u64 {
            Record::Begin { txn: TxnId(i) }.encode_into(Lsn(11 + i), &mut b);
        }
        let budget = 10_000;
        let (s, hashed) = decode_segment_counted(&b, budget).unwrap();
        assert!(hashed <= budget, "hashed {hashed} bytes");
        assert_eq!(s.frames_after_damage, 2000);
        assert!(s.torn_possible);
        // Holes between the frames are searched again, within the budget.
        let mut b = segment(1);
        for i in 0..2000u64 {
            b.extend_from_slice(&[0xFF; 30]);
            Record::Begin { txn: TxnId(i) }.encode_into(Lsn(11 + i), &mut b);
        }
        let (s, hashed) = decode_segment_counted(&b, budget).unwrap();
        assert!(hashed <= budget + 30, "hashed {hashed} bytes");
        assert_eq!(s.records.len(), 1);
    }

    #[test]
    fn candidates_with_impossible_lsns_are_rejected_without_hashing() {
        for lsn in [0, 10, 11 + (1 << 20), u64::MAX] {
            let bytes = crafted_candidates(200, lsn);
            let (s, hashed) = decode_segment_counted(&bytes, MAX_SEARCH_HASH_BYTES).unwrap();
            assert_eq!(hashed, 0, "LSN {lsn}");
            assert!(matches!(s.end, SegmentEnd::TornTail { .. }), "LSN {lsn}");
        }
    }

    #[test]
    fn lsn_gap_is_a_bad_record_that_is_never_torn() {
        let mut b = segment(1);
        Record::Commit { txn: TxnId(1) }.encode_into(Lsn(12), &mut b);
        let s = decode_segment(&b).unwrap();
        assert_eq!(s.records.len(), 1);
        assert!(matches!(s.end, SegmentEnd::Corrupt { .. }));
        assert!(!s.torn_possible);
    }

    #[test]
    fn a_version_1_record_in_a_version_2_segment_is_bad() {
        let mut b = segment(1);
        Record::UndoV1 {
            txn: TxnId(1),
            page: PageId(0),
            offset: 0,
            before: vec![1; 4],
        }
        .encode_into(Lsn(11), &mut b);
        let s = decode_segment(&b).unwrap();
        assert_eq!(s.records.len(), 1);
        assert!(matches!(s.end, SegmentEnd::TornTail { .. }));
    }
}
