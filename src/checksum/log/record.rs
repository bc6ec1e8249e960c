//! The log's records and how they are encoded: the constants of the file
//! layout, the 16-byte slots of versions 1 and 2, and the CRC-checked
//! frames of varint-encoded records of versions 3 and 4 (version 4 writes
//! each frame twice; the layout is in the module docs of `log`).
//!
//! # Contract
//! - Every decoder treats its bytes as untrusted: a slot or frame that does
//!   not verify, or that verifies but cannot be right, is refused, never
//!   panicked on; nothing is allocated beyond what the bytes can hold.
//! - `encode_record` and the frame encoder are the only writers of these
//!   bytes, and every encoding decodes to what was encoded.

/// Magic of a log file.
pub const LOG_MAGIC: [u8; 4] = *b"SHCL";
/// Newest log format version this build writes and reads: frames, each
/// followed by its mirror (versions 1 and 2, of 16-byte slots, and 3, of
/// frames without mirrors, are still read; version 1 lacks the `free` and
/// `claim` kinds).
pub const LOG_VERSION: u32 = 4;
/// Length of the log file header.
pub const LOG_HEADER_LEN: usize = 36;
/// Length of one record slot (versions 1 and 2).
pub const RECORD_LEN: usize = 16;
/// Length of a frame's header (versions 3 and 4).
pub const FRAME_HEADER_LEN: usize = 28;
/// Bytes a frame adds to its records: the header and the trailing CRC.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + 4;
/// The shortest encoded record of a frame (a kind byte and a 1-byte varint).
pub(super) const FRAME_RECORD_LEN_MIN: usize = 2;

pub(super) const KIND_BATCH: u8 = 1;
pub(super) const KIND_INTENT: u8 = 2;
pub(super) const KIND_EXCEPT: u8 = 3;
pub(super) const KIND_SETTLE: u8 = 4;
pub(super) const KIND_RETRACT: u8 = 5;
pub(super) const KIND_DROP: u8 = 6;
pub(super) const KIND_FREE: u8 = 7;
pub(super) const KIND_CLAIM: u8 = 8;

/// One log record (see the module docs for the meaning of each kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogRecord {
    /// Starts an append: every slot before it was durable when it was written.
    Batch,
    /// `page` may now hold bytes whose checksum is `crc`.
    Intent {
        /// The page (below [`MAX_TABLE_PAGES`](crate::checksum::MAX_TABLE_PAGES), so it fits 32 bits).
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
    pub(super) fn split(self) -> (u8, [u8; 8]) {
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
    pub(super) fn implausible(self, seq: u64) -> Option<&'static str> {
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

pub(super) fn record_crc(seq: u64, head: &[u8]) -> u32 {
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
pub(super) fn decode_record(version: u32, seq: u64, slot: &[u8]) -> Option<LogRecord> {
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

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint at `*pos` in the canonical form [`put_varint`]
/// writes (at most 10 bytes, no bits past 64, no overlong encoding: a last
/// byte of 0 after the first, as in `0x80 0x00` for 0, is refused, so every
/// value has exactly one encoding and a frame that verifies re-encodes to
/// the bytes it came from).
pub(super) fn get_varint(body: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *body.get(*pos)?;
        *pos += 1;
        let bits = u64::from(b & 0x7F);
        if i == 9 && bits > 1 {
            return None;
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            return (i == 0 || b != 0).then_some(v);
        }
    }
    None
}

pub(super) fn zigzag(d: i64) -> u64 {
    ((d << 1) ^ (d >> 63)) as u64
}

pub(super) fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// A frame (versions 3 and 4) being built: the records of one append, encoded back
/// to back after room for the header (layout in the module docs), sealed by
/// [`finish`](Self::finish) with one CRC for the whole frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Header room, then the encoded records.
    bytes: Vec<u8>,
    first_seq: u64,
    count: u64,
    /// The page of the last record that named one (0 at the start).
    prev_page: u32,
}

impl Frame {
    /// An empty frame whose first record will have sequence number
    /// `first_seq`.
    #[must_use]
    pub fn new(first_seq: u64) -> Self {
        Frame {
            bytes: vec![0; FRAME_HEADER_LEN],
            first_seq,
            count: 0,
            prev_page: 0,
        }
    }

    /// An empty frame that reuses the memory of `bytes` (a finished frame's).
    #[must_use]
    pub fn recycle(mut bytes: Vec<u8>, first_seq: u64) -> Self {
        bytes.clear();
        bytes.resize(FRAME_HEADER_LEN, 0);
        Frame {
            bytes,
            first_seq,
            count: 0,
            prev_page: 0,
        }
    }

    /// Empties the frame (keeping its memory) for records from `first_seq` on.
    pub fn reset(&mut self, first_seq: u64) {
        self.bytes.clear();
        self.bytes.resize(FRAME_HEADER_LEN, 0);
        self.first_seq = first_seq;
        self.count = 0;
        self.prev_page = 0;
    }

    /// Records in the frame.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sequence number of the frame's first record.
    #[must_use]
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Bytes the frame will have in the file.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.bytes.len() + 4
    }

    /// Appends `record`, which gets the next sequence number; returns the
    /// bytes it took.
    ///
    /// # Panics
    /// For a [`LogRecord::Batch`], which version 3 does not have (the frame
    /// does its work).
    pub fn push(&mut self, record: LogRecord) -> usize {
        let seq = self.first_seq + self.count;
        let before = self.bytes.len();
        let page_delta = |prev: &mut u32, page: u32| {
            let d = zigzag(i64::from(page) - i64::from(*prev));
            *prev = page;
            d
        };
        match record {
            LogRecord::Batch => panic!("a version-3 frame has no batch record"),
            LogRecord::Intent { page, crc } | LogRecord::Claim { page, crc } => {
                let kind = if matches!(record, LogRecord::Intent { .. }) {
                    KIND_INTENT
                } else {
                    KIND_CLAIM
                };
                self.bytes.push(kind);
                let d = page_delta(&mut self.prev_page, page);
                put_varint(&mut self.bytes, d);
                self.bytes.extend_from_slice(&crc.to_le_bytes());
            }
            LogRecord::Free { page } => {
                self.bytes.push(KIND_FREE);
                let d = page_delta(&mut self.prev_page, page);
                put_varint(&mut self.bytes, d);
            }
            LogRecord::Except { seq: s } | LogRecord::Retract { seq: s } => {
                debug_assert!(s < seq, "names an older intent");
                let kind = if matches!(record, LogRecord::Except { .. }) {
                    KIND_EXCEPT
                } else {
                    KIND_RETRACT
                };
                self.bytes.push(kind);
                put_varint(&mut self.bytes, seq.wrapping_sub(s));
            }
            LogRecord::Settle { below } => {
                debug_assert!(below <= seq, "settles only older intents");
                self.bytes.push(KIND_SETTLE);
                put_varint(&mut self.bytes, seq.wrapping_sub(below));
            }
            LogRecord::Drop { first, last } => {
                self.bytes.push(KIND_DROP);
                put_varint(&mut self.bytes, u64::from(first));
                put_varint(&mut self.bytes, u64::from(last));
            }
        }
        self.count += 1;
        self.bytes.len() - before
    }

    /// Writes the header and the trailing CRC and returns the frame's bytes
    /// (the CRCs are computed here, once per frame, not per record).
    #[must_use]
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.encoded_len() as u64;
        self.bytes[..8].copy_from_slice(&len.to_le_bytes());
        self.bytes[8..16].copy_from_slice(&self.count.to_le_bytes());
        self.bytes[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        let head = crc32fast::hash(&self.bytes[..24]);
        self.bytes[24..28].copy_from_slice(&head.to_le_bytes());
        let all = crc32fast::hash(&self.bytes);
        self.bytes.extend_from_slice(&all.to_le_bytes());
        self.bytes
    }

    /// The frame as version 4 writes it: [`finish`](Self::finish)'s bytes
    /// twice, the frame and its mirror, in one buffer (one write, one
    /// fsync).
    #[must_use]
    pub fn finish_mirrored(self) -> Vec<u8> {
        let mut bytes = self.finish();
        let len = bytes.len();
        bytes.extend_from_within(..len);
        bytes
    }

    /// Bytes the frame and its mirror will have in the file.
    #[must_use]
    pub fn mirrored_len(&self) -> usize {
        2 * self.encoded_len()
    }
}

/// Why the bytes at a frame's position are not a frame that continues the
/// log.
pub(super) enum FrameCheck {
    /// A whole frame that verifies: its length, record count and first
    /// sequence number.
    Whole {
        len: usize,
        count: u64,
        first_seq: u64,
    },
    /// Not a frame (a torn or damaged one, or none).
    NotAFrame,
}

/// Checks the frame at the start of `at` (header CRC, length, frame CRC).
pub(super) fn check_frame(at: &[u8]) -> FrameCheck {
    if at.len() < FRAME_OVERHEAD {
        return FrameCheck::NotAFrame;
    }
    let head = u32::from_le_bytes(at[24..28].try_into().expect("4 bytes"));
    if crc32fast::hash(&at[..24]) != head {
        return FrameCheck::NotAFrame;
    }
    let len = u64::from_le_bytes(at[..8].try_into().expect("8 bytes"));
    let count = u64::from_le_bytes(at[8..16].try_into().expect("8 bytes"));
    let first_seq = u64::from_le_bytes(at[16..24].try_into().expect("8 bytes"));
    let Some(len) = usize::try_from(len)
        .ok()
        .filter(|&l| l >= FRAME_OVERHEAD && l <= at.len())
    else {
        return FrameCheck::NotAFrame;
    };
    let stored = u32::from_le_bytes(at[len - 4..len].try_into().expect("4 bytes"));
    if crc32fast::hash(&at[..len - 4]) != stored {
        return FrameCheck::NotAFrame;
    }
    FrameCheck::Whole {
        len,
        count,
        first_seq,
    }
}

/// Decodes the records of a frame that verified; `Err` says why they cannot
/// be right.
pub(super) fn decode_frame_body(
    body: &[u8],
    first_seq: u64,
    count: u64,
    out: &mut Vec<(u64, LogRecord)>,
) -> std::result::Result<(), String> {
    if count > (body.len() / FRAME_RECORD_LEN_MIN) as u64 {
        return Err(format!("claims {count} records in {} bytes", body.len()));
    }
    let mut pos = 0usize;
    let mut prev_page = 0u32;
    for i in 0..count {
        let seq = first_seq + i;
        let kind = *body.get(pos).ok_or("ends inside a record")?;
        pos += 1;
        let mut varint = |what: &str| {
            get_varint(body, &mut pos).ok_or_else(|| {
                format!(
                    "record {seq}: malformed {what} (a truncated, overlong or over-64-bit varint)"
                )
            })
        };
        let page = |d: u64, prev: &mut u32| -> std::result::Result<u32, String> {
            let delta = unzigzag(d);
            let p = i64::from(*prev)
                .checked_add(delta)
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| {
                    format!(
                        "record {seq} names page {} {delta:+}, not a 32-bit page number",
                        *prev
                    )
                })?;
            *prev = p;
            Ok(p)
        };
        let record = match kind {
            KIND_INTENT | KIND_CLAIM | KIND_FREE => {
                let d = varint("page")?;
                let p = page(d, &mut prev_page)?;
                if kind == KIND_FREE {
                    LogRecord::Free { page: p }
                } else {
                    let crc = body
                        .get(pos..pos + 4)
                        .ok_or_else(|| format!("record {seq} ends inside its CRC"))?;
                    pos += 4;
                    let crc = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
                    if kind == KIND_INTENT {
                        LogRecord::Intent { page: p, crc }
                    } else {
                        LogRecord::Claim { page: p, crc }
                    }
                }
            }
            KIND_EXCEPT | KIND_RETRACT | KIND_SETTLE => {
                let back = varint("distance")?;
                let named = seq
                    .checked_sub(back)
                    .ok_or_else(|| format!("record {seq} names a record before sequence 0"))?;
                match kind {
                    KIND_EXCEPT => LogRecord::Except { seq: named },
                    KIND_RETRACT => LogRecord::Retract { seq: named },
                    _ => LogRecord::Settle { below: named },
                }
            }
            KIND_DROP => {
                let first = varint("first page")?;
                let last = varint("last page")?;
                match (u32::try_from(first), u32::try_from(last)) {
                    (Ok(first), Ok(last)) => LogRecord::Drop { first, last },
                    _ => return Err(format!("record {seq} drops pages past 2^32")),
                }
            }
            other => return Err(format!("record {seq} has unknown kind {other}")),
        };
        if let Some(why) = record.implausible(seq) {
            return Err(format!("record {seq} {why}"));
        }
        out.push((seq, record));
    }
    if pos != body.len() {
        return Err(format!(
            "{} bytes follow its {count} records",
            body.len() - pos
        ));
    }
    Ok(())
}
