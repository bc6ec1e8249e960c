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
    /// `next_valid`): damage in the middle, never skipped silently.
    Corrupt {
        /// Where the bad record starts.
        offset: u64,
        /// What was wrong with it.
        reason: String,
        /// Offset of the first valid frame found after it.
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
    let header = SegmentHeader::decode(bytes)?;
    let mut records = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    let mut expected = header.first_lsn.0;
    loop {
        if at == bytes.len() {
            return Ok(SegmentScan {
                header,
                records,
                valid_len: at as u64,
                end: SegmentEnd::Clean,
            });
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
                return Ok(SegmentScan {
                    header,
                    records,
                    valid_len: at as u64,
                    end: SegmentEnd::Corrupt {
                        offset: at as u64,
                        reason: format!("record has LSN {lsn}, expected {expected}"),
                        next_valid: at as u64,
                    },
                });
            }
            Err(FrameError::Incomplete(r) | FrameError::Bad(r)) => r,
        };
        let end = match find_valid_frame(bytes, at + 1) {
            Some(next) => SegmentEnd::Corrupt {
                offset: at as u64,
                reason,
                next_valid: next as u64,
            },
            None => SegmentEnd::TornTail {
                offset: at as u64,
                reason,
            },
        };
        return Ok(SegmentScan {
            header,
            records,
            valid_len: at as u64,
            end,
        });
    }
}

/// The first offset at or after `from` where a complete frame with a valid
/// checksum starts. Cheap checks (length, type) reject most offsets before the
/// checksum is computed.
fn find_valid_frame(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + RECORD_HEADER_LEN <= bytes.len() {
        let b = &bytes[at..];
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let kind = b[16];
        if (1..=4).contains(&kind)
            && len <= MAX_PAYLOAD_LEN
            && RECORD_HEADER_LEN + len <= b.len()
            && decode_frame(b).is_ok()
        {
            return Some(at);
        }
        at += 1;
    }
    None
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

    #[test]
    fn lsn_gap_is_a_bad_record() {
        let mut b = segment(1);
        Record::Commit { txn: TxnId(1) }.encode_into(Lsn(12), &mut b);
        let s = decode_segment(&b).unwrap();
        assert_eq!(s.records.len(), 1);
        assert!(matches!(s.end, SegmentEnd::Corrupt { .. }));
    }
}
