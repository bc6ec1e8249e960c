//! Unit tests and round-trip properties of the checksum log's codecs.

use super::record::*;
use super::*;
use proptest::prelude::*;

fn any_record() -> impl Strategy<Value = LogRecord> {
    prop_oneof![
        Just(LogRecord::Batch),
        (any::<u32>(), any::<u32>()).prop_map(|(page, crc)| LogRecord::Intent { page, crc }),
        (0u64..8).prop_map(|seq| LogRecord::Except { seq }),
        (0u64..8).prop_map(|below| LogRecord::Settle { below }),
        (0u64..8).prop_map(|seq| LogRecord::Retract { seq }),
        (0u32..100, 0u32..100).prop_map(|(a, n)| LogRecord::Drop {
            first: a,
            last: a + n
        }),
        any::<u32>().prop_map(|page| LogRecord::Free { page }),
        (any::<u32>(), any::<u32>()).prop_map(|(page, crc)| LogRecord::Claim { page, crc }),
    ]
}

/// A version-2 log (16-byte slots).
fn encode_log(first_seq: u64, records: &[LogRecord]) -> Vec<u8> {
    encode_log_version(2, first_seq, records)
}

/// A version-3 log: one frame per group of records.
fn encode_frames(first_seq: u64, frames: &[Vec<LogRecord>]) -> Vec<u8> {
    encode_framed(3, first_seq, frames, Frame::finish)
}

/// A version-4 log: one frame per group of records, each followed by its
/// mirror, as the table writes it.
fn encode_mirrored(first_seq: u64, frames: &[Vec<LogRecord>]) -> Vec<u8> {
    encode_framed(4, first_seq, frames, Frame::finish_mirrored)
}

/// A framed log of `version`, each frame's bytes made by `finish`.
fn encode_framed(
    version: u32,
    first_seq: u64,
    frames: &[Vec<LogRecord>],
    finish: fn(Frame) -> Vec<u8>,
) -> Vec<u8> {
    let mut out = LogHeader {
        version,
        page_size: 4096,
        generation: 3,
        first_seq,
    }
    .encode()
    .to_vec();
    let mut seq = first_seq;
    for records in frames {
        let mut f = Frame::new(seq);
        for r in records {
            f.push(*r);
        }
        seq += f.count();
        out.extend_from_slice(&finish(f));
    }
    out
}

/// A version-3 log of one frame whose header says `count` records from
/// `first_seq` and whose records are `body`, with both CRCs right.
fn one_frame(first_seq: u64, count: u64, body: &[u8]) -> Vec<u8> {
    let mut f = LogHeader {
        version: 3,
        page_size: 4096,
        generation: 3,
        first_seq,
    }
    .encode()
    .to_vec();
    let len = (FRAME_OVERHEAD + body.len()) as u64;
    let start = f.len();
    f.extend_from_slice(&len.to_le_bytes());
    f.extend_from_slice(&count.to_le_bytes());
    f.extend_from_slice(&first_seq.to_le_bytes());
    let h = crc32fast::hash(&f[start..]);
    f.extend_from_slice(&h.to_le_bytes());
    f.extend_from_slice(body);
    let c = crc32fast::hash(&f[start..]);
    f.extend_from_slice(&c.to_le_bytes());
    f
}

/// `v` as a LEB128 varint `pad` bytes longer than its shortest form
/// (continuation bytes of zero bits, then a final 0).
fn put_padded_varint(out: &mut Vec<u8>, v: u64, pad: usize) {
    put_varint(out, v);
    if pad > 0 {
        *out.last_mut().expect("a byte") |= 0x80;
        out.extend(std::iter::repeat_n(0x80, pad - 1));
        out.push(0);
    }
}

fn any_frame_record() -> impl Strategy<Value = LogRecord> {
    any_record().prop_filter("no batch in version 3", |r| *r != LogRecord::Batch)
}

/// Plausible version-3 frames: references only backwards.
fn plausible_frames(frames: Vec<Vec<LogRecord>>, first_seq: u64) -> Vec<Vec<LogRecord>> {
    let mut seq = first_seq;
    frames
        .into_iter()
        .map(|f| {
            f.into_iter()
                .map(|r| {
                    let r = match r {
                        LogRecord::Except { seq: s } => LogRecord::Except {
                            seq: s % seq.max(1),
                        },
                        LogRecord::Retract { seq: s } => LogRecord::Retract {
                            seq: s % seq.max(1),
                        },
                        LogRecord::Settle { below } => LogRecord::Settle {
                            below: below % (seq + 1),
                        },
                        other => other,
                    };
                    seq += 1;
                    r
                })
                .collect()
        })
        .collect()
}

fn flat(frames: &[Vec<LogRecord>]) -> Vec<LogRecord> {
    frames.iter().flatten().copied().collect()
}

#[test]
fn version_3_records_are_small() {
    // An intent 100 pages after the one before: kind, 2-byte delta, CRC.
    let mut f = Frame::new(1);
    assert_eq!(f.push(LogRecord::Intent { page: 0, crc: 1 }), 6);
    assert_eq!(f.push(LogRecord::Intent { page: 100, crc: 1 }), 7);
    // An adoption's claims of consecutive pages: 6 bytes each.
    assert_eq!(f.push(LogRecord::Claim { page: 101, crc: 1 }), 6);
    assert_eq!(f.push(LogRecord::Settle { below: 3 }), 2);
    assert_eq!(f.encoded_len(), FRAME_OVERHEAD + 21);
    assert_eq!(f.finish().len(), FRAME_OVERHEAD + 21);
}

#[test]
fn a_bad_frame_before_a_whole_one_is_damage_after_it_a_torn_tail() {
    let frames = vec![
        vec![LogRecord::Intent { page: 1, crc: 7 }],
        vec![
            LogRecord::Intent { page: 2, crc: 8 },
            LogRecord::Settle { below: 11 },
        ],
        vec![LogRecord::Intent { page: 3, crc: 9 }],
    ];
    let good = encode_frames(10, &frames);
    let second = LOG_HEADER_LEN + FRAME_OVERHEAD + 6;
    let third = second + FRAME_OVERHEAD + 8;
    assert_eq!(good.len(), third + FRAME_OVERHEAD + 6);
    let d = decode_log(Path::new("l"), &good, 4096).unwrap();
    assert_eq!(
        d.offsets,
        [
            LOG_HEADER_LEN as u64,
            second as u64,
            second as u64,
            third as u64
        ]
    );
    for at in [second + 3, second + FRAME_HEADER_LEN + 1, third - 1] {
        let mut damaged = good.clone();
        damaged[at] ^= 1;
        assert!(
            matches!(
                decode_log(Path::new("l"), &damaged, 4096),
                Err(Error::CorruptFile { offset, .. }) if offset == second as u64
            ),
            "byte {at}"
        );
    }
    for at in [
        third,
        third + 20,
        third + FRAME_HEADER_LEN + 2,
        good.len() - 1,
    ] {
        let mut torn = good.clone();
        torn[at] ^= 1;
        let d = decode_log(Path::new("l"), &torn, 4096).unwrap();
        assert_eq!(d.records.len(), 3, "byte {at}");
        assert_eq!(
            d.end,
            LogEnd::Torn {
                offset: third as u64,
                bytes: (good.len() - third) as u64
            }
        );
        assert!(d.slots >= 4, "the torn frame's sequence numbers stay used");
    }
    // A frame whose sequence numbers do not continue the log (left over
    // from an older one) does not belong to it.
    let other = encode_frames(20, &frames[2..]);
    let mut moved = good[..third].to_vec();
    moved.extend_from_slice(&other[LOG_HEADER_LEN..]);
    let d = decode_log(Path::new("l"), &moved, 4096).unwrap();
    assert_eq!(d.records.len(), 3);
    assert!(matches!(d.end, LogEnd::Torn { .. }));
}

#[test]
fn implausible_version_3_frames_are_damage() {
    let b = encode_frames(5, &[vec![LogRecord::Drop { first: 4, last: 3 }]]);
    assert!(matches!(
        decode_log(Path::new("l"), &b, 4096),
        Err(Error::CorruptFile { .. })
    ));
    // A frame that verifies but whose contents cannot be right: a count
    // larger than its bytes hold, an unknown kind, a record naming
    // itself, bytes after the last record.
    let frame = |count: u64, body: &[u8]| one_frame(5, count, body);
    for (count, body) in [
        (9u64, &[KIND_SETTLE, 0][..]),
        (1, &[99, 0][..]),
        (1, &[KIND_EXCEPT, 0][..]),
        (1, &[KIND_SETTLE, 6][..]),
        (1, &[KIND_SETTLE, 0, 0][..]),
        (1, &[KIND_INTENT, 0, 1, 2][..]),
        (
            1,
            &[
                KIND_FREE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F,
            ][..],
        ),
        // Overlong varints: 17 as two bytes (the encoder writes one), 0 as
        // two, and as ten.
        (1, &[KIND_DROP, 0x91, 0x00, 0x22][..]),
        (1, &[KIND_SETTLE, 0x80, 0x00][..]),
        (
            1,
            &[
                KIND_SETTLE,
                0x80,
                0x80,
                0x80,
                0x80,
                0x80,
                0x80,
                0x80,
                0x80,
                0x80,
                0x00,
            ][..],
        ),
        // Page 1, then a delta of +(2^63 - 1): past i64, not only past u32.
        (
            2,
            &[
                KIND_FREE, 2, KIND_FREE, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
            ][..],
        ),
    ] {
        assert!(
            matches!(
                decode_log(Path::new("l"), &frame(count, body), 4096),
                Err(Error::CorruptFile { .. })
            ),
            "{count} {body:?}"
        );
    }
    let ok = decode_log(Path::new("l"), &frame(1, &[KIND_SETTLE, 0]), 4096).unwrap();
    assert_eq!(ok.records, [(5, LogRecord::Settle { below: 5 })]);
}

fn encode_log_version(version: u32, first_seq: u64, records: &[LogRecord]) -> Vec<u8> {
    let mut out = LogHeader {
        version,
        page_size: 4096,
        generation: 3,
        first_seq,
    }
    .encode()
    .to_vec();
    for (i, r) in records.iter().enumerate() {
        encode_record(&mut out, first_seq + i as u64, *r);
    }
    out
}

/// A plausible log: a batch record first, references only backwards.
fn plausible(records: Vec<LogRecord>, first_seq: u64) -> Vec<LogRecord> {
    std::iter::once(LogRecord::Batch)
        .chain(records.into_iter().enumerate().map(|(i, r)| {
            let seq = first_seq + i as u64 + 1;
            match r {
                LogRecord::Except { seq: s } => LogRecord::Except { seq: s % seq },
                LogRecord::Retract { seq: s } => LogRecord::Retract { seq: s % seq },
                LogRecord::Settle { below } => LogRecord::Settle {
                    below: below % (seq + 1),
                },
                other => other,
            }
        }))
        .collect()
}

#[test]
fn header_damage_and_short_files_are_typed_errors() {
    let good = encode_log(1, &[LogRecord::Batch]);
    for cut in 0..LOG_HEADER_LEN {
        assert!(matches!(
            decode_log(Path::new("l"), &good[..cut], 4096),
            Err(Error::CorruptFile { .. })
        ));
    }
    assert!(matches!(
        decode_log(Path::new("l"), &good, 512),
        Err(Error::PageSizeMismatch { .. })
    ));
    let mut newer = good.clone();
    newer[4] = 9;
    let crc = crc32fast::hash(&newer[..32]);
    newer[32..36].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        decode_log(Path::new("l"), &newer, 4096),
        Err(Error::UnsupportedVersion { found: 9, .. })
    ));
}

#[test]
fn a_bad_record_before_a_batch_is_damage_after_it_a_torn_tail() {
    let recs = [
        LogRecord::Batch,
        LogRecord::Intent { page: 1, crc: 7 },
        LogRecord::Batch,
        LogRecord::Intent { page: 2, crc: 8 },
        LogRecord::Intent { page: 3, crc: 9 },
    ];
    let good = encode_log(10, &recs);
    let slot = |i: usize| LOG_HEADER_LEN + i * RECORD_LEN;
    let mut damaged = good.clone();
    damaged[slot(1) + 5] ^= 1;
    assert!(matches!(
        decode_log(Path::new("l"), &damaged, 4096),
        Err(Error::CorruptFile { offset, .. }) if offset == slot(1) as u64
    ));
    let mut torn = good.clone();
    torn[slot(3)..slot(4)].fill(0);
    let d = decode_log(Path::new("l"), &torn, 4096).unwrap();
    assert_eq!(
        d.records.len(),
        3,
        "the valid record after the hole is not used"
    );
    assert_eq!(
        d.end,
        LogEnd::Torn {
            offset: slot(3) as u64,
            bytes: 2 * RECORD_LEN as u64
        }
    );
    assert_eq!(d.slots, 5);
    // A record copied into another slot does not verify there.
    let mut moved = good.clone();
    moved.copy_within(slot(1)..slot(2), slot(4));
    let d = decode_log(Path::new("l"), &moved, 4096).unwrap();
    assert_eq!(d.records.len(), 4);
}

#[test]
fn a_version_1_log_is_read_without_the_kinds_it_lacks() {
    let v1 = [
        LogRecord::Batch,
        LogRecord::Intent { page: 1, crc: 7 },
        LogRecord::Drop { first: 1, last: 1 },
    ];
    let d = decode_log(Path::new("l"), &encode_log_version(1, 1, &v1), 4096).unwrap();
    assert_eq!(d.header.version, 1);
    assert_eq!(d.end, LogEnd::Clean);
    assert_eq!(d.records.len(), 3);
    // A free or claim record in a version-1 log does not verify: after
    // the last batch record it is a torn tail, before it damage.
    for late in [
        LogRecord::Free { page: 2 },
        LogRecord::Claim { page: 2, crc: 9 },
    ] {
        let mut recs = v1.to_vec();
        recs.push(late);
        let d = decode_log(Path::new("l"), &encode_log_version(1, 1, &recs), 4096).unwrap();
        assert_eq!(d.records.len(), 3, "{late:?}");
        assert!(matches!(d.end, LogEnd::Torn { .. }));
        recs.push(LogRecord::Batch);
        assert!(matches!(
            decode_log(Path::new("l"), &encode_log_version(1, 1, &recs), 4096),
            Err(Error::CorruptFile { .. })
        ));
        let d = decode_log(Path::new("l"), &encode_log(1, &recs), 4096).unwrap();
        assert_eq!(d.records.len(), 5, "version 2 has {late:?}");
        assert_eq!(d.records[3].1, late);
    }
    // A free record's unused half must be zero.
    let mut bytes = encode_log(1, &[LogRecord::Batch, LogRecord::Free { page: 3 }]);
    let at = LOG_HEADER_LEN + RECORD_LEN;
    bytes[at + 8] = 1;
    let crc = record_crc(2, &bytes[at..at + 12]);
    bytes[at + 12..at + 16].copy_from_slice(&crc.to_le_bytes());
    let d = decode_log(Path::new("l"), &bytes, 4096).unwrap();
    assert_eq!(d.records.len(), 1);
}

#[test]
fn implausible_records_are_damage() {
    for bad in [
        LogRecord::Except { seq: 5 },
        LogRecord::Retract { seq: 9 },
        LogRecord::Settle { below: 6 },
        LogRecord::Drop { first: 4, last: 3 },
    ] {
        let b = encode_log(5, &[bad]);
        assert!(
            matches!(
                decode_log(Path::new("l"), &b, 4096),
                Err(Error::CorruptFile { .. })
            ),
            "{bad:?}"
        );
    }
}

proptest! {
    #[test]
    fn round_trip(first_seq in 0u64..1 << 40, records in proptest::collection::vec(any_record(), 0..40)) {
        let records = plausible(records, first_seq);
        let bytes = encode_log(first_seq, &records);
        let d = decode_log(Path::new("l"), &bytes, 4096).unwrap();
        prop_assert_eq!(d.end, LogEnd::Clean);
        prop_assert_eq!(d.slots, records.len() as u64);
        let back: Vec<LogRecord> = d.records.iter().map(|(_, r)| *r).collect();
        prop_assert_eq!(back, records);
        for (i, (seq, _)) in d.records.iter().enumerate() {
            prop_assert_eq!(*seq, first_seq + i as u64);
        }
    }

    #[test]
    fn a_cut_log_keeps_a_prefix(records in proptest::collection::vec(any_record(), 0..30), cut in any::<usize>()) {
        let records = plausible(records, 1);
        let bytes = encode_log(1, &records);
        let cut = LOG_HEADER_LEN + cut % (bytes.len() - LOG_HEADER_LEN + 1);
        let d = decode_log(Path::new("l"), &bytes[..cut], 4096).unwrap();
        let whole = (cut - LOG_HEADER_LEN) / RECORD_LEN;
        prop_assert_eq!(d.records.len(), whole);
        let back: Vec<LogRecord> = d.records.iter().map(|(_, r)| *r).collect();
        prop_assert_eq!(&back[..], &records[..whole]);
    }

    #[test]
    fn any_damage_is_typed_or_a_shorter_prefix(records in proptest::collection::vec(any_record(), 0..30),
                                               flip in any::<usize>(), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
        let records = plausible(records, 1);
        let mut bytes = encode_log(1, &records);
        let i = flip % bytes.len();
        bytes[i] ^= 1 << (flip % 8);
        bytes.extend_from_slice(&junk);
        match decode_log(Path::new("l"), &bytes, 4096) {
            Ok(d) => {
                // What is kept is a prefix of what was written, never altered.
                prop_assert!(i >= LOG_HEADER_LEN);
                let back: Vec<LogRecord> = d.records.iter().map(|(_, r)| *r).collect();
                prop_assert!(back.len() <= records.len() + junk.len() / RECORD_LEN);
                let n = back.len().min(records.len());
                prop_assert_eq!(&back[..n], &records[..n]);
                prop_assert!(n <= (i - LOG_HEADER_LEN) / RECORD_LEN);
            }
            Err(e) => prop_assert!(matches!(e, Error::CorruptFile { .. } | Error::UnsupportedVersion { .. } | Error::PageSizeMismatch { .. }), "{e}"),
        }
    }

    #[test]
    fn version_3_round_trip(first_seq in 1u64..1 << 40,
                            frames in proptest::collection::vec(proptest::collection::vec(any_frame_record(), 0..12), 0..6)) {
        let frames = plausible_frames(frames, first_seq);
        let bytes = encode_frames(first_seq, &frames);
        let d = decode_log(Path::new("l"), &bytes, 4096).unwrap();
        prop_assert_eq!(d.end, LogEnd::Clean);
        let back: Vec<LogRecord> = d.records.iter().map(|(_, r)| *r).collect();
        prop_assert_eq!(&back, &flat(&frames));
        prop_assert_eq!(d.slots, back.len() as u64);
        for (i, (seq, _)) in d.records.iter().enumerate() {
            prop_assert_eq!(*seq, first_seq + i as u64);
        }
    }

    #[test]
    fn a_cut_version_3_log_keeps_whole_frames(frames in proptest::collection::vec(proptest::collection::vec(any_frame_record(), 0..8), 1..6),
                                              cut in any::<usize>()) {
        let frames = plausible_frames(frames, 1);
        let bytes = encode_frames(1, &frames);
        let cut = LOG_HEADER_LEN + cut % (bytes.len() - LOG_HEADER_LEN + 1);
        let d = decode_log(Path::new("l"), &bytes[..cut], 4096).unwrap();
        // The frames wholly before the cut, and nothing else.
        let mut end = LOG_HEADER_LEN;
        let mut kept = Vec::new();
        let mut seq = 1;
        for f in &frames {
            let mut fr = Frame::new(seq);
            for r in f {
                fr.push(*r);
            }
            seq += fr.count();
            if end + fr.encoded_len() > cut {
                break;
            }
            end += fr.encoded_len();
            kept.extend_from_slice(f);
        }
        let back: Vec<LogRecord> = d.records.iter().map(|(_, r)| *r).collect();
        prop_assert_eq!(back, kept);
    }

    #[test]
    fn any_damage_to_a_version_3_log_is_typed_or_a_shorter_prefix(
        frames in proptest::collection::vec(proptest::collection::vec(any_frame_record(), 0..8), 1..6),
        flip in any::<usize>(), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
        let frames = plausible_frames(frames, 1);
        let records = flat(&frames);
        let mut bytes = encode_frames(1, &frames);
        let i = flip % bytes.len();
        bytes[i] ^= 1 << (flip % 8);
        bytes.extend_from_slice(&junk);
        match decode_log(Path::new("l"), &bytes, 4096) {
            Ok(d) => {
                prop_assert!(i >= LOG_HEADER_LEN);
                let back: Vec<LogRecord> = d.records.iter().map(|(_, r)| *r).collect();
                prop_assert!(back.len() <= records.len());
                prop_assert_eq!(&back[..], &records[..back.len()]);
            }
            Err(e) => prop_assert!(matches!(e, Error::CorruptFile { .. } | Error::UnsupportedVersion { .. } | Error::PageSizeMismatch { .. }), "{e}"),
        }
    }

    /// A frame the decoder accepts is the one the encoder writes for its
    /// records, byte for byte: no field (a varint's length above all) has a
    /// second accepted form. The records are built field by field, each
    /// varint padded to a longer form some of the time.
    #[test]
    fn an_accepted_frame_is_canonical(
        fields in proptest::collection::vec((2u8..=8, 0u64..200, 0usize..3, 0u64..200, 0usize..3, any::<u32>()), 0..6),
        junk in proptest::collection::vec(any::<u8>(), 0..2)) {
        let mut body = Vec::new();
        for &(kind, a, pad_a, b, pad_b, crc) in &fields {
            body.push(kind);
            put_padded_varint(&mut body, a, pad_a);
            match kind {
                KIND_INTENT | KIND_CLAIM => body.extend_from_slice(&crc.to_le_bytes()),
                KIND_DROP => put_padded_varint(&mut body, b, pad_b),
                _ => {}
            }
        }
        body.extend_from_slice(&junk);
        let padded = fields.iter().any(|f| f.2 > 0 || (f.0 == KIND_DROP && f.4 > 0));
        let bytes = one_frame(100, fields.len() as u64, &body);
        match decode_log(Path::new("l"), &bytes, 4096) {
            Ok(d) => {
                prop_assert!(!padded && junk.is_empty());
                let mut f = Frame::new(100);
                for (_, r) in &d.records {
                    f.push(*r);
                }
                prop_assert_eq!(&f.finish()[..], &bytes[LOG_HEADER_LEN..]);
            }
            Err(e) => prop_assert!(matches!(e, Error::CorruptFile { .. }), "{e}"),
        }
    }

    #[test]
    fn a_version_4_log_round_trips(frames in proptest::collection::vec(proptest::collection::vec(any_frame_record(), 0..8), 0..6),
                                   first_seq in 0u64..1 << 40) {
        let frames = plausible_frames(frames, first_seq);
        let bytes = encode_mirrored(first_seq, &frames);
        let d = decode_log(Path::new("l"), &bytes, 4096).unwrap();
        prop_assert_eq!(d.end, LogEnd::Clean);
        prop_assert!(d.mended.is_empty());
        let back: Vec<LogRecord> = d.records.iter().map(|(_, r)| *r).collect();
        prop_assert_eq!(&back, &flat(&frames));
        for (i, (seq, _)) in d.records.iter().enumerate() {
            prop_assert_eq!(*seq, first_seq + i as u64);
        }
    }

    /// Bit rot confined to one copy of each frame — the newest frame's
    /// included, which no later frame vouches for — loses no record.
    #[test]
    fn damage_to_one_copy_of_each_version_4_frame_loses_nothing(
        frames in proptest::collection::vec(proptest::collection::vec(any_frame_record(), 0..8), 1..6),
        flips in proptest::collection::vec((any::<bool>(), any::<usize>(), 0u8..8), 1..6)) {
        let frames = plausible_frames(frames, 1);
        let mut bytes = encode_mirrored(1, &frames);
        let mut at = LOG_HEADER_LEN;
        let mut seq = 1;
        for (f, &(mirror, i, bit)) in frames.iter().zip(flips.iter().cycle()) {
            let mut fr = Frame::new(seq);
            for r in f {
                fr.push(*r);
            }
            seq += fr.count();
            let len = fr.encoded_len();
            let copy = if mirror { at + len } else { at };
            bytes[copy + i % len] ^= 1 << bit;
            at += 2 * len;
        }
        let d = decode_log(Path::new("l"), &bytes, 4096).unwrap();
        prop_assert_eq!(d.end, LogEnd::Clean);
        prop_assert_eq!(d.mended.len(), frames.len());
        let back: Vec<LogRecord> = d.records.iter().map(|(_, r)| *r).collect();
        prop_assert_eq!(&back, &flat(&frames));
    }

    /// A crash cuts an append anywhere: the decoder keeps the frames whose
    /// first copy is whole (only its mirror may be cut) and never errs.
    #[test]
    fn a_cut_version_4_log_keeps_whole_frames(frames in proptest::collection::vec(proptest::collection::vec(any_frame_record(), 0..8), 1..6),
                                              cut in any::<usize>()) {
        let frames = plausible_frames(frames, 1);
        let bytes = encode_mirrored(1, &frames);
        let cut = LOG_HEADER_LEN + cut % (bytes.len() - LOG_HEADER_LEN + 1);
        let d = decode_log(Path::new("l"), &bytes[..cut], 4096).unwrap();
        let mut end = LOG_HEADER_LEN;
        let mut kept = Vec::new();
        let mut seq = 1;
        for f in &frames {
            let mut fr = Frame::new(seq);
            for r in f {
                fr.push(*r);
            }
            seq += fr.count();
            if end + fr.encoded_len() > cut {
                break;
            }
            end += 2 * fr.encoded_len();
            kept.extend_from_slice(f);
        }
        let back: Vec<LogRecord> = d.records.iter().map(|(_, r)| *r).collect();
        prop_assert_eq!(back, kept);
        prop_assert_eq!(d.end == LogEnd::Clean, cut == bytes.len() || cut == end);
    }

    #[test]
    fn any_damage_to_a_version_4_log_is_typed_or_a_prefix(
        frames in proptest::collection::vec(proptest::collection::vec(any_frame_record(), 0..8), 1..6),
        flips in proptest::collection::vec(any::<usize>(), 1..4), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
        let frames = plausible_frames(frames, 1);
        let records = flat(&frames);
        let mut bytes = encode_mirrored(1, &frames);
        for &flip in &flips {
            let i = flip % bytes.len();
            bytes[i] ^= 1 << (flip % 8);
        }
        bytes.extend_from_slice(&junk);
        match decode_log(Path::new("l"), &bytes, 4096) {
            Ok(d) => {
                let back: Vec<LogRecord> = d.records.iter().map(|(_, r)| *r).collect();
                prop_assert!(back.len() <= records.len());
                prop_assert_eq!(&back[..], &records[..back.len()]);
            }
            Err(e) => prop_assert!(matches!(e, Error::CorruptFile { .. } | Error::UnsupportedVersion { .. } | Error::PageSizeMismatch { .. }), "{e}"),
        }
    }

    #[test]
    fn junk_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_log(Path::new("l"), &bytes, 4096);
    }
}
