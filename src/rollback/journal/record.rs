//! Segment headers and record frames: encoding, and decoding of untrusted
//! bytes. The byte layout is documented in the [journal module](super).

use crate::types::{Lsn, PageId};

use super::super::TxnId;

/// The magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"SHUJ";
/// The segment format version this build writes. It reads every version
/// from 1 up to this one.
pub const SEGMENT_VERSION: u32 = 2;
/// Length of the segment header in bytes.
pub const SEGMENT_HEADER_LEN: usize = 40;
/// Length of a record frame's header (length, CRC, LSN, type) in bytes.
pub const RECORD_HEADER_LEN: usize = 17;
/// The largest payload a record may have (16 MiB). A length field above it is
/// damage, not a record.
pub const MAX_PAYLOAD_LEN: usize = 16 << 20;
/// Fixed part of an undo payload: transaction, page, offset.
pub(crate) const UNDO_FIXED_LEN: usize = 20;

const TYPE_BEGIN: u8 = 1;
const TYPE_UNDO_V1: u8 = 2;
const TYPE_COMMIT: u8 = 3;
const TYPE_ABORT: u8 = 4;
const TYPE_UNDO: u8 = 5;
const TYPE_MARK: u8 = 6;

/// Whether a record type may appear in a segment of `version`: version 1
/// holds types 1–4 (undo without an after-image), version 2 types 1, 3–6.
/// Version 0 stands for "unknown" (a segment whose header is damaged) and
/// allows every type.
pub(crate) fn type_allowed(kind: u8, version: u32) -> bool {
    match kind {
        TYPE_BEGIN | TYPE_COMMIT | TYPE_ABORT => true,
        TYPE_UNDO_V1 => version <= 1,
        TYPE_UNDO | TYPE_MARK => version != 1,
        _ => false,
    }
}

/// Bound (exclusive) on a header's `first_lsn` and `next_txn`: no real
/// history gets near it, and below it the counters have room to grow.
pub const MAX_HEADER_COUNTER: u64 = u64::MAX / 2;

/// The header of one segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The format version of the segment's records (1 or
    /// [`SEGMENT_VERSION`]); new segments are always written with
    /// [`SEGMENT_VERSION`].
    pub version: u32,
    /// The segment's number; segments are numbered upward without gaps.
    pub segment: u64,
    /// The LSN the first record of this segment has (or will have).
    pub first_lsn: Lsn,
    /// A bound on the transaction ids handed out when the segment was
    /// created (the end of the id reservation then), so that ids never
    /// repeat even if the journal's state file is lost.
    pub next_txn: u64,
}

impl SegmentHeader {
    /// The header's 40 bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..4].copy_from_slice(&SEGMENT_MAGIC);
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..16].copy_from_slice(&self.segment.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        b[24..32].copy_from_slice(&self.next_txn.to_le_bytes());
        let crc = crc32fast::hash(&b[..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header from the start of `bytes`.
    ///
    /// # Errors
    /// A [`HeaderDamage`] saying what is wrong; never panics.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderDamage> {
        if bytes.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderDamage::Short { len: bytes.len() });
        }
        let b = &bytes[..SEGMENT_HEADER_LEN];
        if crc32fast::hash(&b[..36]) != u32_at(b, 36) {
            return Err(HeaderDamage::Invalid {
                reason: "segment header checksum mismatch".into(),
            });
        }
        if b[0..4] != SEGMENT_MAGIC {
            return Err(HeaderDamage::Invalid {
                reason: format!("magic {:?} is not {:?}", &b[0..4], SEGMENT_MAGIC),
            });
        }
        let version = u32_at(b, 4);
        if version == 0 || version > SEGMENT_VERSION {
            return Err(HeaderDamage::Version { found: version });
        }
        if u32_at(b, 32) != 0 {
            return Err(HeaderDamage::Invalid {
                reason: "reserved header bytes are not zero".into(),
            });
        }
        let first_lsn = u64_at(b, 16);
        if first_lsn == 0 || first_lsn >= MAX_HEADER_COUNTER {
            return Err(HeaderDamage::Invalid {
                reason: format!(
                    "first LSN {first_lsn} is outside 1..{MAX_HEADER_COUNTER} (LSNs start at 1)"
                ),
            });
        }
        let next_txn = u64_at(b, 24);
        if next_txn >= MAX_HEADER_COUNTER {
            return Err(HeaderDamage::Invalid {
                reason: format!("next transaction id {next_txn} is not below {MAX_HEADER_COUNTER}"),
            });
        }
        Ok(SegmentHeader {
            version,
            segment: u64_at(b, 8),
            first_lsn: Lsn(first_lsn),
            next_txn,
        })
    }
}

/// What is wrong with a segment header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderDamage {
    /// Fewer than [`SEGMENT_HEADER_LEN`] bytes: a segment whose creation was
    /// cut short, or a truncated file.
    Short {
        /// How many bytes there are.
        len: usize,
    },
    /// The header's checksum, magic or reserved bytes are wrong.
    Invalid {
        /// What was wrong.
        reason: String,
    },
    /// The header is intact but of a newer format version.
    Version {
        /// The version found.
        found: u32,
    },
}

impl std::fmt::Display for HeaderDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderDamage::Short { len } => write!(
                f,
                "segment is {len} bytes, shorter than its {SEGMENT_HEADER_LEN}-byte header"
            ),
            HeaderDamage::Invalid { reason } => f.write_str(reason),
            HeaderDamage::Version { found } => write!(
                f,
                "segment format version {found}, this build reads up to {SEGMENT_VERSION}"
            ),
        }
    }
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A transaction began.
    Begin {
        /// The transaction.
        txn: TxnId,
    },
    /// A change: the bytes `page[offset..offset + before.len()]` held
    /// `before` and the transaction changed them to `after` (type 5, format
    /// version 2). Rollback applies `before` only while the page still holds
    /// what this transaction's changes explain (see the
    /// [rollback module docs](crate::rollback#undo-is-applied-only-to-what-the-transaction-wrote)).
    ///
    /// `after` must be as long as `before`: the frame stores the two images
    /// back to back and the decoder splits the payload in half.
    Undo {
        /// The transaction.
        txn: TxnId,
        /// The page.
        page: PageId,
        /// Byte offset inside the page.
        offset: u32,
        /// The bytes before the change.
        before: Vec<u8>,
        /// The bytes the change wrote.
        after: Vec<u8>,
    },
    /// A before-image without an after-image (type 2): the only undo record
    /// of format version 1, read from old segments and applied
    /// unconditionally, as that version did. Never written by this build.
    UndoV1 {
        /// The transaction.
        txn: TxnId,
        /// The page.
        page: PageId,
        /// Byte offset inside the page.
        offset: u32,
        /// The bytes before the change.
        before: Vec<u8>,
    },
    /// The transaction committed: its undo must never be applied.
    Commit {
        /// The transaction.
        txn: TxnId,
    },
    /// The transaction was rolled back and its restored pages were synced.
    Abort {
        /// The transaction.
        txn: TxnId,
    },
    /// A synced-through mark: an fsync that made every record up to
    /// `synced_through` durable had completed before this record was
    /// written. Damage at or below that LSN is therefore never what a crash
    /// or power loss leaves.
    Mark {
        /// Every record up to this LSN was durable.
        synced_through: Lsn,
    },
}

impl Record {
    /// The transaction the record belongs to (`None` for a mark).
    #[must_use]
    pub fn txn(&self) -> Option<TxnId> {
        match self {
            Record::Begin { txn }
            | Record::Undo { txn, .. }
            | Record::UndoV1 { txn, .. }
            | Record::Commit { txn }
            | Record::Abort { txn } => Some(*txn),
            Record::Mark { .. } => None,
        }
    }

    /// The frame length of this record in bytes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN
            + match self {
                Record::Undo { before, after, .. } => UNDO_FIXED_LEN + before.len() + after.len(),
                Record::UndoV1 { before, .. } => UNDO_FIXED_LEN + before.len(),
                _ => 8,
            }
    }

    /// Appends the record's frame with `lsn` to `out`.
    pub fn encode_into(&self, lsn: Lsn, out: &mut Vec<u8>) {
        match self {
            Record::Begin { txn } => encode_small(out, lsn, TYPE_BEGIN, txn.0),
            Record::Commit { txn } => encode_small(out, lsn, TYPE_COMMIT, txn.0),
            Record::Abort { txn } => encode_small(out, lsn, TYPE_ABORT, txn.0),
            Record::Mark { synced_through } => {
                encode_small(out, lsn, TYPE_MARK, synced_through.0);
            }
            Record::Undo {
                txn,
                page,
                offset,
                before,
                after,
            } => {
                debug_assert_eq!(before.len(), after.len());
                encode_undo(out, lsn, *txn, *page, *offset, before, after);
            }
            Record::UndoV1 {
                txn,
                page,
                offset,
                before,
            } => encode_undo_frame(out, lsn, TYPE_UNDO_V1, *txn, *page, *offset, &[before]),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// CRC over the length field and everything after the CRC field.
fn frame_crc(frame: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&frame[0..4]);
    h.update(&frame[8..]);
    h.finalize()
}

fn finish_frame(out: &mut [u8], start: usize) {
    let crc = frame_crc(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn encode_small(out: &mut Vec<u8>, lsn: Lsn, kind: u8, value: u64) {
    let start = out.len();
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&lsn.0.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&value.to_le_bytes());
    finish_frame(out, start);
}

/// Appends an undo record's frame (type 5: before-image, then after-image);
/// the hot path of the journal.
pub(crate) fn encode_undo(
    out: &mut Vec<u8>,
    lsn: Lsn,
    txn: TxnId,
    page: PageId,
    offset: u32,
    before: &[u8],
    after: &[u8],
) {
    encode_undo_frame(out, lsn, TYPE_UNDO, txn, page, offset, &[before, after]);
}

/// [`encode_undo`] without the frame's CRC (its field left zero): the
/// journal's append path, which leaves the checksum to [`seal_frames`],
/// run by the thread that writes the batch, outside the append lock.
pub(crate) fn encode_undo_unsealed(
    out: &mut Vec<u8>,
    lsn: Lsn,
    txn: TxnId,
    page: PageId,
    offset: u32,
    before: &[u8],
    after: &[u8],
) {
    encode_undo_body(out, lsn, TYPE_UNDO, txn, page, offset, &[before, after]);
}

/// Writes the CRC of every frame in `frames` (whole frames, back to back,
/// as encoded by this module: trusted bytes). Idempotent: a sealed frame
/// gets the same CRC again.
pub(crate) fn seal_frames(frames: &mut [u8]) {
    let mut at = 0;
    while at < frames.len() {
        let len = RECORD_HEADER_LEN + u32_at(frames, at) as usize;
        debug_assert!(at + len <= frames.len(), "a partial frame in a batch");
        finish_frame(&mut frames[at..at + len], 0);
        at += len;
    }
}

fn encode_undo_frame(
    out: &mut Vec<u8>,
    lsn: Lsn,
    kind: u8,
    txn: TxnId,
    page: PageId,
    offset: u32,
    images: &[&[u8]],
) {
    let start = out.len();
    encode_undo_body(out, lsn, kind, txn, page, offset, images);
    finish_frame(out, start);
}

/// An undo frame with its CRC field zero.
fn encode_undo_body(
    out: &mut Vec<u8>,
    lsn: Lsn,
    kind: u8,
    txn: TxnId,
    page: PageId,
    offset: u32,
    images: &[&[u8]],
) {
    let images_len: usize = images.iter().map(|i| i.len()).sum();
    let len = (UNDO_FIXED_LEN + images_len) as u32;
    out.reserve(RECORD_HEADER_LEN + len as usize);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&lsn.0.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&txn.0.to_le_bytes());
    out.extend_from_slice(&page.0.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    for i in images {
        out.extend_from_slice(i);
    }
}

/// Why a frame could not be decoded at some offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The bytes end before the frame does.
    Incomplete(String),
    /// The frame is complete but wrong.
    Bad(String),
}

/// The frame's type byte, if `bytes` hold a frame header.
pub(crate) fn frame_kind(bytes: &[u8]) -> Option<u8> {
    bytes.get(16).copied()
}

/// Decodes the frame at the start of `bytes`, found in a segment of format
/// `version`. Returns the LSN, the record and the frame length.
pub(crate) fn decode_frame(bytes: &[u8], version: u32) -> Result<(Lsn, Record, usize), FrameError> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(FrameError::Incomplete(format!(
            "{} bytes left, a record header needs {RECORD_HEADER_LEN}",
            bytes.len()
        )));
    }
    let len = u32_at(bytes, 0) as usize;
    if len > MAX_PAYLOAD_LEN {
        return Err(FrameError::Bad(format!(
            "record length {len} exceeds the maximum {MAX_PAYLOAD_LEN}"
        )));
    }
    let total = RECORD_HEADER_LEN + len;
    if bytes.len() < total {
        return Err(FrameError::Incomplete(format!(
            "record needs {total} bytes, {} are left",
            bytes.len()
        )));
    }
    let frame = &bytes[..total];
    let stored = u32_at(frame, 4);
    let actual = frame_crc(frame);
    if stored != actual {
        return Err(FrameError::Bad(format!(
            "record checksum {actual:#010x} does not match the stored {stored:#010x}"
        )));
    }
    let lsn = Lsn(u64_at(frame, 8));
    let kind = frame[16];
    if !type_allowed(kind, version) {
        return Err(FrameError::Bad(format!(
            "record type {kind} is not one of format version {version}"
        )));
    }
    let payload = &frame[RECORD_HEADER_LEN..];
    let record = match kind {
        TYPE_BEGIN | TYPE_COMMIT | TYPE_ABORT | TYPE_MARK => {
            if payload.len() != 8 {
                return Err(FrameError::Bad(format!(
                    "record type {kind} has a {}-byte payload, expected 8",
                    payload.len()
                )));
            }
            let value = u64_at(payload, 0);
            match kind {
                TYPE_BEGIN => Record::Begin { txn: TxnId(value) },
                TYPE_COMMIT => Record::Commit { txn: TxnId(value) },
                TYPE_ABORT => Record::Abort { txn: TxnId(value) },
                _ => {
                    if value >= lsn.0 {
                        return Err(FrameError::Bad(format!(
                            "mark at LSN {lsn} claims LSN {value} synced: a mark only covers records before it"
                        )));
                    }
                    Record::Mark {
                        synced_through: Lsn(value),
                    }
                }
            }
        }
        _ => {
            if payload.len() < UNDO_FIXED_LEN {
                return Err(FrameError::Bad(format!(
                    "undo record payload is {} bytes, shorter than {UNDO_FIXED_LEN}",
                    payload.len()
                )));
            }
            let (txn, page, offset) = (
                TxnId(u64_at(payload, 0)),
                PageId(u64_at(payload, 8)),
                u32_at(payload, 16),
            );
            let images = &payload[UNDO_FIXED_LEN..];
            if kind == TYPE_UNDO_V1 {
                Record::UndoV1 {
                    txn,
                    page,
                    offset,
                    before: images.to_vec(),
                }
            } else {
                if !images.len().is_multiple_of(2) {
                    return Err(FrameError::Bad(format!(
                        "undo record holds {} image bytes; a before- and an after-image of one length make an even number",
                        images.len()
                    )));
                }
                let (before, after) = images.split_at(images.len() / 2);
                Record::Undo {
                    txn,
                    page,
                    offset,
                    before: before.to_vec(),
                    after: after.to_vec(),
                }
            }
        }
    };
    if lsn.0 == 0 {
        return Err(FrameError::Bad("record has LSN 0".into()));
    }
    Ok((lsn, record, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        let txn = any::<u64>().prop_map(TxnId);
        prop_oneof![
            txn.clone().prop_map(|txn| Record::Begin { txn }),
            txn.clone().prop_map(|txn| Record::Commit { txn }),
            txn.clone().prop_map(|txn| Record::Abort { txn }),
            (
                txn,
                any::<u64>(),
                any::<u32>(),
                proptest::collection::vec(any::<(u8, u8)>(), 0..300)
            )
                .prop_map(|(txn, page, offset, images)| Record::Undo {
                    txn,
                    page: PageId(page),
                    offset,
                    before: images.iter().map(|i| i.0).collect(),
                    after: images.iter().map(|i| i.1).collect(),
                }),
        ]
    }

    proptest! {
        #[test]
        fn record_round_trip(rec in arb_record(), lsn in 1u64.., junk in proptest::collection::vec(any::<u8>(), 0..20)) {
            let mut buf = Vec::new();
            rec.encode_into(Lsn(lsn), &mut buf);
            prop_assert_eq!(buf.len(), rec.encoded_len());
            buf.extend_from_slice(&junk);
            let (l, back, n) = decode_frame(&buf, SEGMENT_VERSION).unwrap();
            prop_assert_eq!(l, Lsn(lsn));
            prop_assert_eq!(back, rec);
            prop_assert_eq!(n, buf.len() - junk.len());
        }

        #[test]
        fn mark_round_trip(claim in 0u64..u64::MAX - 1, gap in 1u64..1000) {
            let lsn = claim.saturating_add(gap);
            let rec = Record::Mark { synced_through: Lsn(claim) };
            let mut buf = Vec::new();
            rec.encode_into(Lsn(lsn), &mut buf);
            prop_assert_eq!(decode_frame(&buf, SEGMENT_VERSION).unwrap(), (Lsn(lsn), rec, buf.len()));
            // A mark never claims itself or anything after it.
            let mut bad = Vec::new();
            Record::Mark { synced_through: Lsn(lsn) }.encode_into(Lsn(lsn), &mut bad);
            prop_assert!(decode_frame(&bad, SEGMENT_VERSION).is_err());
        }

        #[test]
        fn v1_undo_round_trips_only_in_v1_segments(txn in any::<u64>(), page in any::<u64>(), offset in any::<u32>(), before in proptest::collection::vec(any::<u8>(), 0..100)) {
            let rec = Record::UndoV1 { txn: TxnId(txn), page: PageId(page), offset, before };
            let mut buf = Vec::new();
            rec.encode_into(Lsn(3), &mut buf);
            prop_assert_eq!(buf.len(), rec.encoded_len());
            prop_assert_eq!(decode_frame(&buf, 1).unwrap().1, rec);
            prop_assert!(decode_frame(&buf, 2).is_err());
        }

        #[test]
        fn header_round_trip(version in 1..=SEGMENT_VERSION, segment in any::<u64>(), first in 1..MAX_HEADER_COUNTER, next in 0..MAX_HEADER_COUNTER) {
            let h = SegmentHeader { version, segment, first_lsn: Lsn(first), next_txn: next };
            prop_assert_eq!(SegmentHeader::decode(&h.encode()).unwrap(), h);
        }

        #[test]
        fn header_counters_out_of_range_are_invalid(segment in any::<u64>(), first in any::<u64>(), next in any::<u64>()) {
            let h = SegmentHeader { version: SEGMENT_VERSION, segment, first_lsn: Lsn(first), next_txn: next };
            let in_range = (1..MAX_HEADER_COUNTER).contains(&first) && next < MAX_HEADER_COUNTER;
            match SegmentHeader::decode(&h.encode()) {
                Ok(back) => prop_assert!(in_range && back == h),
                Err(HeaderDamage::Invalid { .. }) => prop_assert!(!in_range),
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
        }

        /// Frames encoded without their CRC and sealed in a batch are the
        /// bytes the sealed encoders make, whatever records precede them.
        #[test]
        fn sealing_a_batch_gives_the_sealed_encoding(
            recs in proptest::collection::vec(arb_record(), 0..6),
            images in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 1..40), any::<u64>()), 0..6),
        ) {
            let (mut sealed, mut batch) = (Vec::new(), Vec::new());
            let mut lsn = 1;
            for (r, (img, page)) in recs.iter().zip(images.iter().cycle()) {
                if !matches!(r, Record::Mark { .. } | Record::UndoV1 { .. } | Record::Undo { .. }) {
                    r.encode_into(Lsn(lsn), &mut sealed);
                    r.encode_into(Lsn(lsn), &mut batch);
                    lsn += 1;
                }
                let after: Vec<u8> = img.iter().map(|b| !b).collect();
                encode_undo(&mut sealed, Lsn(lsn), TxnId(lsn), PageId(*page), 3, img, &after);
                encode_undo_unsealed(&mut batch, Lsn(lsn), TxnId(lsn), PageId(*page), 3, img, &after);
                lsn += 1;
            }
            seal_frames(&mut batch);
            prop_assert_eq!(&batch, &sealed);
            seal_frames(&mut batch);
            prop_assert_eq!(&batch, &sealed);
        }

        #[test]
        fn any_bit_flip_in_a_frame_is_caught(rec in arb_record(), bit in any::<usize>()) {
            let mut buf = Vec::new();
            rec.encode_into(Lsn(7), &mut buf);
            let i = (bit / 8) % buf.len();
            buf[i] ^= 1 << (bit % 8);
            prop_assert!(decode_frame(&buf, SEGMENT_VERSION).is_err());
        }

        #[test]
        fn decode_frame_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100), version in 0u32..4) {
            let _ = decode_frame(&bytes, version);
            let _ = SegmentHeader::decode(&bytes);
        }
    }

    #[test]
    fn zeros_are_never_a_record() {
        for n in 0..64 {
            assert!(decode_frame(&vec![0u8; n], SEGMENT_VERSION).is_err());
            assert!(decode_frame(&vec![0u8; n], 1).is_err());
        }
        assert!(SegmentHeader::decode(&[0u8; SEGMENT_HEADER_LEN]).is_err());
    }

    #[test]
    fn an_undo_record_with_an_odd_image_length_is_bad() {
        let mut buf = Vec::new();
        encode_undo_frame(
            &mut buf,
            Lsn(1),
            TYPE_UNDO,
            TxnId(1),
            PageId(0),
            0,
            &[b"abc", b"de"],
        );
        assert!(matches!(
            decode_frame(&buf, SEGMENT_VERSION),
            Err(FrameError::Bad(_))
        ));
    }
}
