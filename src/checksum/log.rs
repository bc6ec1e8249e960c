//! The sidecar table's change log: its byte layout and its codec.
//!
//! A durable [`ChecksumTable`](super::ChecksumTable) is a base file plus an
//! append-only log of fixed-size, CRC-framed records; this module encodes
//! and decodes the log and nothing else (what the records mean, and why the
//! table survives a crash at any step, is in [`durable`](super::durable)).
//! The decoder treats every byte as untrusted: it allocates at most one
//! record per 16 input bytes, and answers a typed error or a torn-tail
//! verdict, never a panic.
//!
//! # Log file layout (all integers little-endian)
//!
//! A log file is a 36-byte header followed by 16-byte record slots.
//!
//! | offset | size | field                                              |
//! |-------:|-----:|----------------------------------------------------|
//! | 0      | 4    | magic `SHCL`                                       |
//! | 4      | 4    | format version (2; 1 is still read)                |
//! | 8      | 4    | page size of the table                             |
//! | 12     | 4    | reserved, 0                                        |
//! | 16     | 8    | generation (the base file this log continues)      |
//! | 24     | 8    | sequence number of the first record slot           |
//! | 32     | 4    | CRC32 of bytes 0..32                               |
//!
//! Record slot `i` starts at byte `36 + 16·i` and has the sequence number
//! `first_seq + i`; the sequence number is not stored but is part of the
//! record's CRC, so a record copied to another slot, or left over from an
//! older log at the same offset, does not verify.
//!
//! | offset | size | field                                                   |
//! |-------:|-----:|---------------------------------------------------------|
//! | 0      | 1    | kind (below)                                            |
//! | 1      | 3    | reserved, 0                                             |
//! | 4      | 8    | payload: two u32 (`a` at 4, `b` at 8) or one u64        |
//! | 12     | 4    | CRC32 of (sequence number as u64 LE ‖ bytes 0..12)      |
//!
//! | kind | name    | payload                  | meaning                                                        |
//! |-----:|---------|--------------------------|----------------------------------------------------------------|
//! | 1    | batch   | 0                        | first record of every append: all slots before it were fsynced  |
//! | 2    | intent  | `a` page, `b` CRC        | the page may now hold bytes with this CRC                       |
//! | 3    | except  | u64 sequence number      | the next settle leaves this intent unsettled                    |
//! | 4    | settle  | u64 bound `s`            | intents below `s` (except those named) are settled              |
//! | 5    | retract | u64 sequence number      | this intent is no longer accepted                               |
//! | 6    | drop    | `a` first, `b` last page | forget every checksum of pages `a..=b`                          |
//! | 7    | free    | `a` page, `b` 0          | forget every checksum of the page and mark it unallocated       |
//! | 8    | claim   | `a` page, `b` CRC        | if the page has no checksum, no unsettled intent and no mark, this is its settled checksum |
//!
//! Kinds 7 and 8 exist from version 2 on: in a version-1 log a slot of
//! those kinds does not verify (it is read as damage or a torn tail, as any
//! slot that does not verify). A build that knows only version 1 refuses a
//! version-2 log ([`Error::UnsupportedVersion`]) rather than dropping the
//! records it does not know. The table appends only to a log of the
//! current version: it compacts a version-1 log away when it opens one.
//!
//! # Reading a log that a crash cut short
//!
//! A crash may leave any prefix of the bytes appended since the last fsync,
//! with unwritten sectors as zeros or stale bytes, in any order. The reader
//! finds `D`, the last slot holding a valid *batch* record: a batch record is
//! written only after every earlier slot was fsynced, so every slot before
//! `D` is durable and must verify; one that does not is damage
//! ([`Error::CorruptFile`]). From `D` on, the reader keeps records up to the
//! first slot that does not verify and reports the rest as a torn tail
//! ([`LogEnd::Torn`]), which is normal after a crash. What this costs when
//! the newest fsynced batch itself is damaged is in
//! [`durable`](super::durable).

use std::path::Path;

use crate::error::{Error, Result};

/// Magic of a log file.
pub const LOG_MAGIC: [u8; 4] = *b"SHCL";
/// Newest log format version this build writes and reads (version 1, which
/// lacks the `free` and `claim` kinds, is still read).
pub const LOG_VERSION: u32 = 2;
/// Length of the log file header.
pub const LOG_HEADER_LEN: usize = 36;
/// Length of one record slot.
pub const RECORD_LEN: usize = 16;

const KIND_BATCH: u8 = 1;
const KIND_INTENT: u8 = 2;
const KIND_EXCEPT: u8 = 3;
const KIND_SETTLE: u8 = 4;
const KIND_RETRACT: u8 = 5;
const KIND_DROP: u8 = 6;
const KIND_FREE: u8 = 7;
const KIND_CLAIM: u8 = 8;

/// One log record (see the module docs for the meaning of each kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogRecord {
    /// Starts an append: every slot before it was durable when it was written.
    Batch,
    /// `page` may now hold bytes whose checksum is `crc`.
    Intent {
        /// The page (below [`MAX_TABLE_PAGES`](super::MAX_TABLE_PAGES), so it fits 32 bits).
        page: u32,
        /// CRC32 of (page number ‖ page bytes).
        crc: u32,
    },
    /// The next [`Settle`](LogRecord::Settle) leaves the intent with this
    /// sequence number unsettled.
    Except {
        /// Sequence number of an earlier intent.
        seq: u64,
    },
    /// For every page, the newest intent with a sequence number below
    /// `below` that no preceding `Except` names becomes the page's only
    /// checksum; older intents of that page are dropped.
    Settle {
        /// Exclusive bound on the settled intents' sequence numbers.
        below: u64,
    },
    /// The intent with this sequence number is no longer accepted.
    Retract {
        /// Sequence number of an earlier intent.
        seq: u64,
    },
    /// Every checksum of pages `first..=last` is forgotten.
    Drop {
        /// First page dropped.
        first: u32,
        /// Last page dropped (`u32::MAX`: to the end).
        last: u32,
    },
    /// Every checksum of `page` (settled and unsettled) is forgotten and the
    /// page is marked unallocated, until an intent names it again (version
    /// 2 on).
    Free {
        /// The page the host freed.
        page: u32,
    },
    /// `crc` becomes the settled checksum of `page` if the page has no
    /// checksum, no unsettled intent and no unallocated mark; otherwise the
    /// record changes nothing. Adoption writes it for bytes already on disk
    /// (version 2 on).
    Claim {
        /// The page adopted.
        page: u32,
        /// CRC32 of (page number ‖ the page's bytes).
        crc: u32,
    },
}

impl LogRecord {
    fn split(self) -> (u8, [u8; 8]) {
        let two = |a: u32, b: u32| {
            let mut p = [0u8; 8];
            p[..4].copy_from_slice(&a.to_le_bytes());
            p[4..].copy_from_slice(&b.to_le_bytes());
            p
        };
        match self {
            LogRecord::Batch => (KIND_BATCH, [0; 8]),
            LogRecord::Intent { page, crc } => (KIND_INTENT, two(page, crc)),
            LogRecord::Except { seq } => (KIND_EXCEPT, seq.to_le_bytes()),
            LogRecord::Settle { below } => (KIND_SETTLE, below.to_le_bytes()),
            LogRecord::Retract { seq } => (KIND_RETRACT, seq.to_le_bytes()),
            LogRecord::Drop { first, last } => (KIND_DROP, two(first, last)),
            LogRecord::Free { page } => (KIND_FREE, two(page, 0)),
            LogRecord::Claim { page, crc } => (KIND_CLAIM, two(page, crc)),
        }
    }

    /// Why a record that passed its CRC still cannot be right in slot `seq`:
    /// a reference to itself or to a later slot, an empty drop range, a
    /// nonzero batch payload.
    fn implausible(self, seq: u64) -> Option<&'static str> {
        match self {
            LogRecord::Except { seq: s } | LogRecord::Retract { seq: s } if s >= seq => {
                Some("names an intent that is not older than itself")
            }
            LogRecord::Settle { below } if below > seq => {
                Some("settles intents that are not older than itself")
            }
            LogRecord::Drop { first, last } if first > last => Some("drops an empty page range"),
            _ => None,
        }
    }
}

fn record_crc(seq: u64, head: &[u8]) -> u32 {
    // One call over a stack copy: for 20 bytes, much cheaper than a Hasher.
    let mut covered = [0u8; 8 + 12];
    covered[..8].copy_from_slice(&seq.to_le_bytes());
    covered[8..].copy_from_slice(&head[..12]);
    crc32fast::hash(&covered)
}

/// Appends the 16-byte encoding of `record` in slot `seq` to `out`.
pub fn encode_record(out: &mut Vec<u8>, seq: u64, record: LogRecord) {
    let (kind, payload) = record.split();
    let mut slot = [0u8; RECORD_LEN];
    slot[0] = kind;
    slot[4..12].copy_from_slice(&payload);
    let crc = record_crc(seq, &slot[..12]);
    slot[12..].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&slot);
}

/// Decodes slot `seq` of a log of format `version`; `None` when it does not
/// verify.
fn decode_record(version: u32, seq: u64, slot: &[u8]) -> Option<LogRecord> {
    debug_assert_eq!(slot.len(), RECORD_LEN);
    let stored = u32::from_le_bytes(slot[12..16].try_into().expect("4 bytes"));
    if record_crc(seq, &slot[..12]) != stored || slot[1..4] != [0, 0, 0] {
        return None;
    }
    let a = u32::from_le_bytes(slot[4..8].try_into().expect("4 bytes"));
    let b = u32::from_le_bytes(slot[8..12].try_into().expect("4 bytes"));
    let wide = u64::from_le_bytes(slot[4..12].try_into().expect("8 bytes"));
    Some(match slot[0] {
        KIND_BATCH if wide == 0 => LogRecord::Batch,
        KIND_INTENT => LogRecord::Intent { page: a, crc: b },
        KIND_EXCEPT => LogRecord::Except { seq: wide },
        KIND_SETTLE => LogRecord::Settle { below: wide },
        KIND_RETRACT => LogRecord::Retract { seq: wide },
        KIND_DROP => LogRecord::Drop { first: a, last: b },
        KIND_FREE if version >= 2 && b == 0 => LogRecord::Free { page: a },
        KIND_CLAIM if version >= 2 => LogRecord::Claim { page: a, crc: b },
        _ => return None,
    })
}

/// The header of a log file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogHeader {
    /// Format version ([`LOG_VERSION`] for a log this build creates).
    pub version: u32,
    /// Page size of the table.
    pub page_size: u32,
    /// Generation of the base file this log continues.
    pub generation: u64,
    /// Sequence number of slot 0.
    pub first_seq: u64,
}

impl LogHeader {
    /// The 36-byte encoding.
    #[must_use]
    pub fn encode(&self) -> [u8; LOG_HEADER_LEN] {
        let mut h = [0u8; LOG_HEADER_LEN];
        h[..4].copy_from_slice(&LOG_MAGIC);
        h[4..8].copy_from_slice(&self.version.to_le_bytes());
        h[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        h[16..24].copy_from_slice(&self.generation.to_le_bytes());
        h[24..32].copy_from_slice(&self.first_seq.to_le_bytes());
        let crc = crc32fast::hash(&h[..32]);
        h[32..].copy_from_slice(&crc.to_le_bytes());
        h
    }
}

/// How a decoded log ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogEnd {
    /// Every byte after the header is a valid record.
    Clean,
    /// The records stop at `offset`; the `bytes` after it (a partial slot,
    /// or slots that do not verify after the last batch record) are the tail
    /// of an append that a crash cut short.
    Torn {
        /// File offset of the first byte not used.
        offset: u64,
        /// Bytes from there to the end of the file.
        bytes: u64,
    },
}

/// A decoded log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedLog {
    /// The header.
    pub header: LogHeader,
    /// The records kept, with their sequence numbers (consecutive from
    /// `header.first_seq`).
    pub records: Vec<(u64, LogRecord)>,
    /// How the file ends.
    pub end: LogEnd,
    /// Record slots the file spans, counting a partial last one: the next
    /// log's first sequence number must be at least `first_seq + slots`.
    pub slots: u64,
}

/// Decodes a log file read from `path` (used in messages) for a table of
/// `page_size` bytes per page.
///
/// # Errors
/// [`Error::CorruptFile`] for a damaged header, or a record that does not
/// verify although a later batch record shows it was durable, or a record
/// that verifies but cannot be right; [`Error::UnsupportedVersion`] for a
/// newer format; [`Error::PageSizeMismatch`] for a log of another page size.
pub fn decode_log(path: &Path, bytes: &[u8], page_size: usize) -> Result<DecodedLog> {
    if bytes.len() < LOG_HEADER_LEN {
        return Err(Error::corrupt_file(
            path,
            0,
            format!(
                "log is {} bytes, shorter than its {LOG_HEADER_LEN}-byte header (logs are created whole, so this is damage)",
                bytes.len()
            ),
        ));
    }
    let stored = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..32]) != stored {
        return Err(Error::corrupt_file(
            path,
            32,
            "log header checksum mismatch",
        ));
    }
    if bytes[..4] != LOG_MAGIC {
        return Err(Error::corrupt_file(
            path,
            0,
            format!("magic {:?} is not {LOG_MAGIC:?}", &bytes[..4]),
        ));
    }
    let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if version == 0 || version > LOG_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: LOG_VERSION,
        });
    }
    let ps = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if ps as usize != page_size {
        return Err(Error::PageSizeMismatch {
            what: format!("checksum log {}", path.display()),
            expected: page_size,
            actual: ps as usize,
        });
    }
    if bytes[12..16] != [0; 4] {
        return Err(Error::corrupt_file(
            path,
            12,
            "reserved header bytes are not zero",
        ));
    }
    let header = LogHeader {
        version,
        page_size: ps,
        generation: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
        first_seq: u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes")),
    };
    let body = &bytes[LOG_HEADER_LEN..];
    let slots = body.len().div_ceil(RECORD_LEN) as u64;
    if header.first_seq.checked_add(slots).is_none() {
        return Err(Error::corrupt_file(
            path,
            24,
            "first sequence number leaves no room for the records",
        ));
    }
    let offset_of = |i: usize| (LOG_HEADER_LEN + i * RECORD_LEN) as u64;
    let decoded: Vec<Option<LogRecord>> = body
        .chunks_exact(RECORD_LEN)
        .enumerate()
        .map(|(i, slot)| decode_record(version, header.first_seq + i as u64, slot))
        .collect();
    let last_batch = decoded
        .iter()
        .rposition(|r| *r == Some(LogRecord::Batch))
        .unwrap_or(0);
    let mut records = Vec::with_capacity(decoded.len());
    for (i, r) in decoded.iter().enumerate() {
        let seq = header.first_seq + i as u64;
        match r {
            Some(r) => {
                if let Some(why) = r.implausible(seq) {
                    return Err(Error::corrupt_file(
                        path,
                        offset_of(i),
                        format!("record {seq} {why}"),
                    ));
                }
                records.push((seq, *r));
            }
            None if i < last_batch => {
                return Err(Error::corrupt_file(
                    path,
                    offset_of(i),
                    format!(
                        "record {seq} does not verify, but the batch record at offset {} shows it was durable",
                        offset_of(last_batch)
                    ),
                ));
            }
            None => break,
        }
    }
    let used = LOG_HEADER_LEN + records.len() * RECORD_LEN;
    let end = if used == bytes.len() {
        LogEnd::Clean
    } else {
        LogEnd::Torn {
            offset: used as u64,
            bytes: (bytes.len() - used) as u64,
        }
    };
    Ok(DecodedLog {
        header,
        records,
        end,
        slots,
    })
}

#[cfg(test)]
mod tests {
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

    fn encode_log(first_seq: u64, records: &[LogRecord]) -> Vec<u8> {
        encode_log_version(LOG_VERSION, first_seq, records)
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
        fn junk_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_log(Path::new("l"), &bytes, 4096);
        }
    }
}
