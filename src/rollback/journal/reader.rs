//! Decoding a whole segment from untrusted bytes, telling a torn tail from
//! damage in the middle.

use crate::types::Lsn;

use super::record::{
    decode_frame, FrameError, HeaderDamage, Record, SegmentHeader, MAX_PAYLOAD_LEN,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
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
    /// `next_valid`): damage in the middle, never skipped silently. Also
    /// reported when the search for a valid record gave up after checksumming
    /// [`MAX_SEARCH_HASH_BYTES`] (then `next_valid` is where it stopped).
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
}

/// Decodes a segment's bytes: the header, then records up to the first bad
/// one. Records must carry consecutive LSNs starting at the header's
/// `first_lsn`; a record that breaks the sequence is a bad record.
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
    let mut records = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    let mut expected = header.first_lsn.0;
    loop {
        if at == bytes.len() {
            return Ok((
                SegmentScan {
                    header,
                    records,
                    valid_len: at as u64,
                    end: SegmentEnd::Clean,
                },
                0,
            ));
        }
        let reason = match decode_frame(&bytes[at..]) {
            Ok((lsn, record, len)) if lsn.0 == expected => {
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
                    },
                    0,
                ));
            }
            Err(FrameError::Incomplete(r) | FrameError::Bad(r)) => r,
        };
        let mut hashed = 0u64;
        let end = match find_valid_frame(bytes, at + 1, expected, budget, &mut hashed) {
            Search::Found(next) => SegmentEnd::Corrupt {
                offset: at as u64,
                reason,
                next_valid: next as u64,
            },
            Search::GaveUp(stopped) => SegmentEnd::Corrupt {
                offset: at as u64,
                reason: format!(
                    "{reason}; the bytes after it hold too many record-like frames to search (checked up to offset {stopped}), so it is treated as damage, not a torn tail"
                ),
                next_valid: stopped as u64,
            },
            Search::NotFound => SegmentEnd::TornTail {
                offset: at as u64,
                reason,
            },
        };
        return Ok((
            SegmentScan {
                header,
                records,
                valid_len: at as u64,
                end,
            },
            hashed,
        ));
    }
}

/// How many bytes the search for a valid frame after a bad record may
/// checksum before it stops and treats the bad record as damage in the
/// middle. Large enough for any real record (the search stops at the first
/// valid frame); it bounds the work a crafted segment can cause.
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

/// The first offset at or after `from` where a complete frame with a valid
/// checksum and an LSN in `expected..expected + LSN_SEARCH_WINDOW` starts.
/// Cheap checks (LSN, type, length) reject most offsets before the checksum
/// is computed; `hashed` counts the bytes checksummed, and once the next
/// checksum would take it past `budget` the search gives up.
fn find_valid_frame(
    bytes: &[u8],
    from: usize,
    expected: u64,
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
        let kind = b[16];
        if lsn.wrapping_sub(expected) < LSN_SEARCH_WINDOW
            && (1..=4).contains(&kind)
            && len <= MAX_PAYLOAD_LEN
            && RECORD_HEADER_LEN + len <= b.len()
        {
            let cost = (RECORD_HEADER_LEN + len) as u64;
            if *hashed + cost > budget {
                return Search::GaveUp(at);
            }
            *hashed += cost;
            if decode_frame(b).is_ok() {
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
    use crate::rollback::TxnId;
    use crate::types::PageId;

    fn segment(n: u64) -> Vec<u8> {
        let mut b = SegmentHeader {
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
            b.push(2);
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
        assert!(
            matches!(&s.end, SegmentEnd::Corrupt { offset, .. } if *offset == s.valid_len),
            "{:?}",
            s.end
        );
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
    fn lsn_gap_is_a_bad_record() {
        let mut b = segment(1);
        Record::Commit { txn: TxnId(1) }.encode_into(Lsn(12), &mut b);
        let s = decode_segment(&b).unwrap();
        assert_eq!(s.records.len(), 1);
        assert!(matches!(s.end, SegmentEnd::Corrupt { .. }));
    }
}
