//! Checksum fix-ups for fuzz targets: each function takes arbitrary bytes,
//! reads them leniently as one of the crate's on-disk frame formats, and
//! rewrites what a random mutation almost never gets right — the magic, the
//! version (into the readable range), the length fields that must match the
//! bytes present, the sequence numbers that must continue, and every CRC —
//! so that the decoder behind the frame sees the payload bytes instead of
//! stopping at the first checksum.
//!
//! # Contract
//! - One function per frame format, shared by every target that reads that
//!   format: [`framed`] (the crate's framed small files), [`journal_segment`],
//!   [`checksum_log`], [`snapshot_file`] and [`audit_segment`]. A page
//!   trailer needs none: `checksum::trailer::seal` is its fix-up.
//! - A fix-up never panics and never grows its input by more than one
//!   header and one footer of its format (bounded output for any input).
//! - Bytes that are not part of a frame's structure (payloads, record
//!   bodies) are left as they are: what the decoder then says about them is
//!   what is being fuzzed.
//! - [`split_mode`] is how every target chooses between the raw input (the
//!   checks on frames themselves) and the fixed-up input (the decoders
//!   behind them): an odd first byte selects the fix-up.

use crate::audit::MAX_BODY_LEN;
use crate::rollback::journal::{
    MAX_HEADER_COUNTER, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
    SEGMENT_VERSION,
};

/// The crate's framed-file header length (`fsutil`).
const FRAMED_HEADER_LEN: usize = 24;

/// Splits a fuzz input into its mode and the rest: `Some((true, rest))`
/// when the first byte is odd (fix the checksums up), `Some((false, rest))`
/// when it is even (feed the bytes as they are), `None` for an empty input.
#[must_use]
pub fn split_mode(data: &[u8]) -> Option<(bool, &[u8])> {
    let (&first, rest) = data.split_first()?;
    Some((first & 1 == 1, rest))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// `v` if it is in `1..=max`, else a version in that range derived from it.
fn readable_version(v: u32, max: u32) -> u32 {
    if (1..=max).contains(&v) {
        v
    } else {
        1 + v % max
    }
}

/// Pads `bytes` with zeros to at least `len` bytes.
fn padded(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.len() < len {
        out.resize(len, 0);
    }
    out
}

/// The crate's framed small file (magic, version, payload length, payload
/// CRC, header CRC, payload; layout in the crate's `fsutil` module): the
/// input is taken as header and payload (padded to a whole header), the
/// magic set to `magic`, the version brought into `1..=max_version`, and
/// the length and both CRCs rewritten.
#[must_use]
pub fn framed(bytes: &[u8], magic: [u8; 4], max_version: u32) -> Vec<u8> {
    let mut out = padded(bytes, FRAMED_HEADER_LEN);
    out[0..4].copy_from_slice(&magic);
    let v = readable_version(u32_at(&out, 4), max_version.max(1));
    put_u32(&mut out, 4, v);
    let len = (out.len() - FRAMED_HEADER_LEN) as u64;
    put_u64(&mut out, 8, len);
    let payload_crc = crc32fast::hash(&out[FRAMED_HEADER_LEN..]);
    put_u32(&mut out, 16, payload_crc);
    let header_crc = crc32fast::hash(&out[..20]);
    put_u32(&mut out, 20, header_crc);
    out
}

/// An undo-journal segment (layout in the `rollback` module's journal
/// docs): the header gets its magic, a readable version, counters in range
/// and its CRC; then each record frame in turn gets a payload length that
/// fits the bytes left (at most the format's maximum), the LSN that
/// continues the previous record's, and its CRC. Bytes too few for a record
/// header are left as a tail.
#[must_use]
pub fn journal_segment(bytes: &[u8]) -> Vec<u8> {
    let mut out = padded(bytes, SEGMENT_HEADER_LEN);
    out[0..4].copy_from_slice(&SEGMENT_MAGIC);
    let v = readable_version(u32_at(&out, 4), SEGMENT_VERSION);
    put_u32(&mut out, 4, v);
    let first = u64_at(&out, 16);
    let first = if (1..MAX_HEADER_COUNTER).contains(&first) {
        first
    } else {
        1 + first % (MAX_HEADER_COUNTER - 1)
    };
    put_u64(&mut out, 16, first);
    let next_txn = u64_at(&out, 24) % MAX_HEADER_COUNTER;
    put_u64(&mut out, 24, next_txn);
    put_u32(&mut out, 32, 0);
    let crc = crc32fast::hash(&out[..36]);
    put_u32(&mut out, 36, crc);
    let mut at = SEGMENT_HEADER_LEN;
    let mut lsn = first;
    while out.len() - at >= RECORD_HEADER_LEN {
        let room = out.len() - at - RECORD_HEADER_LEN;
        let mut n = u32_at(&out, at) as usize;
        if n > room || n > MAX_PAYLOAD_LEN {
            n = room.min(MAX_PAYLOAD_LEN);
            put_u32(&mut out, at, n as u32);
        }
        put_u64(&mut out, at + 8, lsn);
        let end = at + RECORD_HEADER_LEN + n;
        let mut h = crc32fast::Hasher::new();
        h.update(&out[at..at + 4]);
        h.update(&out[at + 8..end]);
        let crc = h.finalize();
        put_u32(&mut out, at + 4, crc);
        lsn = lsn.wrapping_add(1);
        at = end;
    }
    out
}

/// The sidecar checksum table's log (layout in the `checksum` module's log
/// docs): the header gets its magic, a readable version and its CRC; in
/// version 3 each frame gets a length that fits the bytes left, the first
/// sequence number that continues the frame before (by the record count it
/// states) and both CRCs; in versions 1 and 2 each 16-byte slot gets its
/// CRC for its slot's sequence number.
#[must_use]
pub fn checksum_log(bytes: &[u8]) -> Vec<u8> {
    use crate::checksum::log::LOG_HEADER_LEN;
    let mut out = padded(bytes, LOG_HEADER_LEN);
    out[0..4].copy_from_slice(b"SHCL");
    let v = readable_version(u32_at(&out, 4), 3);
    put_u32(&mut out, 4, v);
    let crc = crc32fast::hash(&out[..32]);
    put_u32(&mut out, 32, crc);
    let mut seq = u64_at(&out, 24);
    let mut at = LOG_HEADER_LEN;
    if v >= 3 {
        const FRAME_MIN: usize = 32;
        while out.len() - at >= FRAME_MIN {
            let room = out.len() - at;
            let len = u64_at(&out, at);
            let len = if len < FRAME_MIN as u64 || len > room as u64 {
                put_u64(&mut out, at, room as u64);
                room
            } else {
                len as usize
            };
            put_u64(&mut out, at + 16, seq);
            seq = seq.wrapping_add(u64_at(&out, at + 8));
            let crc = crc32fast::hash(&out[at..at + 24]);
            put_u32(&mut out, at + 24, crc);
            let crc = crc32fast::hash(&out[at..at + len - 4]);
            put_u32(&mut out, at + len - 4, crc);
            at += len;
        }
    } else {
        while out.len() - at >= 16 {
            let mut h = crc32fast::Hasher::new();
            h.update(&seq.to_le_bytes());
            h.update(&out[at..at + 12]);
            let crc = h.finalize();
            put_u32(&mut out, at + 12, crc);
            seq = seq.wrapping_add(1);
            at += 16;
        }
    }
    out
}

/// A snapshot file (layout in the `snapshot` module's format docs): the
/// header gets its magic, a readable version and its CRC; the footer (the
/// last 32 bytes; the input is padded to hold a header and a footer) gets an
/// index that runs from its stated offset — or from the end of the header
/// when that offset is out of range — up to the footer, the CRC of every
/// chunk whose index entry points inside the chunk area, the index CRC, its
/// magic and its own CRC. Page fingerprints are not fixed: a changed page
/// is still caught by them.
#[must_use]
pub fn snapshot_file(bytes: &[u8]) -> Vec<u8> {
    use crate::snapshot::format::{FOOTER_LEN, HEADER_LEN, VERSION};
    let mut out = padded(bytes, HEADER_LEN + FOOTER_LEN);
    out[0..4].copy_from_slice(b"SHSN");
    let v = readable_version(u32_at(&out, 4), VERSION);
    put_u32(&mut out, 4, v);
    let crc = crc32fast::hash(&out[..60]);
    put_u32(&mut out, 60, crc);
    let footer = out.len() - FOOTER_LEN;
    let mut index_at = u64_at(&out, footer);
    if index_at < HEADER_LEN as u64 || index_at > footer as u64 {
        index_at = HEADER_LEN as u64;
    }
    let index_at = index_at as usize;
    // Chunk CRCs first (they are inside the index), then the index CRC.
    if footer - index_at >= 24 {
        let chunks = u32_at(&out, index_at) as usize;
        let room = (footer - index_at - 24) / 20;
        for i in 0..chunks.min(room) {
            let e = index_at + 24 + 20 * i;
            let off = u64_at(&out, e);
            let clen = u64::from(u32_at(&out, e + 8));
            if off >= HEADER_LEN as u64 && off.saturating_add(clen) <= index_at as u64 {
                let (off, clen) = (off as usize, clen as usize);
                let crc = crc32fast::hash(&out[off..off + clen]);
                put_u32(&mut out, e + 16, crc);
            }
        }
    }
    put_u64(&mut out, footer, index_at as u64);
    put_u64(&mut out, footer + 8, (footer - index_at) as u64);
    let crc = crc32fast::hash(&out[index_at..footer]);
    put_u32(&mut out, footer + 16, crc);
    put_u32(&mut out, footer + 20, 0);
    out[footer + 24..footer + 28].copy_from_slice(b"SHSE");
    let crc = crc32fast::hash(&out[footer..footer + 28]);
    put_u32(&mut out, footer + 28, crc);
    out
}

/// An audit-log segment (layout in the `audit` module's record docs): the
/// header gets its magic and version; each frame gets a body length that
/// fits the bytes left (at most a record's maximum), and — where its body
/// is long enough to hold them — the sequence number that continues the
/// segment's (from the header's first), the hash of the body before it
/// (the chain), and its CRC.
#[must_use]
pub fn audit_segment(bytes: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    const HEADER: usize = 16;
    const FRAME_HEADER: usize = 8;
    // Body: version (1), seq (8), synced-through, at, unix ms, incident
    // (8 each), kind (1), previous hash (32).
    const PREV_HASH_AT: usize = 1 + 8 * 5 + 1;
    let mut out = padded(bytes, HEADER);
    out[0..4].copy_from_slice(b"SHAL");
    put_u32(&mut out, 4, 1);
    let mut seq = u64_at(&out, 8);
    let mut prev: Option<[u8; 32]> = None;
    let mut at = HEADER;
    while out.len() - at >= FRAME_HEADER {
        let room = out.len() - at - FRAME_HEADER;
        let mut n = u32_at(&out, at) as usize;
        if n > room || n > MAX_BODY_LEN {
            n = room.min(MAX_BODY_LEN);
            put_u32(&mut out, at, n as u32);
        }
        let body = at + FRAME_HEADER;
        if n >= 9 {
            put_u64(&mut out, body + 1, seq);
        }
        if let Some(p) = prev {
            if n >= PREV_HASH_AT + 32 {
                out[body + PREV_HASH_AT..body + PREV_HASH_AT + 32].copy_from_slice(&p);
            }
        }
        prev = Some(Sha256::digest(&out[body..body + n]).into());
        let mut h = crc32fast::Hasher::new();
        h.update(&out[at..at + 4]);
        h.update(&out[body..body + n]);
        let crc = h.finalize();
        put_u32(&mut out, at + 4, crc);
        seq = seq.wrapping_add(1);
        at = body + n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use proptest::prelude::*;
    use std::path::Path;

    /// A decoder's error is past the frame's checks when its message does
    /// not name a checksum mismatch.
    fn past_crc(e: &Error) -> bool {
        !format!("{e}").contains("checksum mismatch")
    }

    #[test]
    fn split_mode_reads_the_first_byte() {
        assert_eq!(split_mode(&[]), None);
        assert_eq!(split_mode(&[1, 9]), Some((true, &[9u8][..])));
        assert_eq!(split_mode(&[2, 9]), Some((false, &[9u8][..])));
    }

    proptest! {
        #[test]
        fn framed_payloads_reach_the_payload_decoder(payload in proptest::collection::vec(any::<u8>(), 0..200), junk in proptest::collection::vec(any::<u8>(), 24)) {
            let mut b = junk.clone();
            b.extend_from_slice(&payload);
            let fixed = framed(&b, *b"SHXX", 2);
            let (v, p) = crate::fsutil::decode_framed(Path::new("f"), &fixed, *b"SHXX", 2).unwrap();
            prop_assert!((1..=2).contains(&v));
            prop_assert_eq!(p, &payload[..]);
            // A scrub cursor's payload decoder is reached: any error is
            // about the payload, never the frame.
            let fixed = framed(&b, *b"SHSC", 1);
            if let Err(e) = crate::scrub::cursor::decode(Path::new("c"), &fixed) {
                prop_assert!(past_crc(&e), "{}", e);
            }
        }

        #[test]
        fn journal_records_reach_the_record_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let fixed = journal_segment(&bytes);
            let scan = crate::rollback::journal::decode_segment(&fixed).unwrap();
            // Every frame checks: the first that does not decode failed on
            // its contents (type, payload), never on its CRC.
            if let crate::rollback::journal::SegmentEnd::Corrupt { reason, .. }
            | crate::rollback::journal::SegmentEnd::TornTail { reason, .. } = &scan.end {
                prop_assert!(!reason.contains("checksum"), "{}", reason);
            }
        }

        #[test]
        fn checksum_log_frames_reach_the_record_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..300), v in 1u32..=3) {
            let mut b = padded(&bytes, 36);
            put_u32(&mut b, 4, v);
            put_u32(&mut b, 8, 4096);
            let fixed = checksum_log(&b);
            match crate::checksum::log::decode_log(Path::new("l"), &fixed, 4096) {
                // Every whole frame or slot verifies: only a tail too short
                // for one can be torn.
                Ok(log) => if let crate::checksum::log::LogEnd::Torn { bytes, .. } = log.end {
                    prop_assert!(bytes < 32, "{} torn bytes", bytes);
                },
                Err(e) => prop_assert!(past_crc(&e), "{}", e),
            }
        }

        #[test]
        fn audit_frames_reach_the_body_decoder(bytes in proptest::collection::vec(any::<u8>(), 16..400)) {
            let fixed = audit_segment(&bytes);
            let mut at = 16;
            if fixed.len() - at >= 8 {
                match crate::audit::record::decode_frame(&fixed[at..]) {
                    Ok((_, n)) => at += n,
                    Err(crate::audit::record::FrameError::Bad(e)) => {
                        prop_assert!(!e.contains("checksum"), "{}", e);
                    }
                    Err(crate::audit::record::FrameError::Short) => {
                        prop_assert!(false, "a fixed-up frame fits its bytes");
                    }
                }
            }
            prop_assert!(at <= fixed.len());
        }

        #[test]
        fn snapshot_frames_reach_the_index_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let fixed = snapshot_file(&bytes);
            if let Err(e) = crate::testing::decode_snapshot(&fixed) {
                prop_assert!(past_crc(&e), "{}", e);
            }
        }
    }

    #[test]
    fn fixed_up_real_files_are_unchanged() {
        // A valid encoding is a fixed point of its fix-up.
        let t = crate::ChecksumTable::new(4096).unwrap();
        t.seal(crate::PageId(3), &[7u8; 4096]).unwrap();
        let base = t.encode();
        assert_eq!(framed(&base, base[0..4].try_into().unwrap(), 9), base);
        let c = crate::scrub::cursor::encode(crate::scrub::cursor::Cursor {
            next: 3,
            total: 9,
            passes: 2,
        });
        assert_eq!(framed(&c, *b"SHSC", 1), c);
    }
}
