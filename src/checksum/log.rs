//! The sidecar table's change log: its byte layout and its codec.
//!
//! A durable [`ChecksumTable`](super::ChecksumTable) is a base file plus an
//! append-only log of changes; this module encodes and decodes the log and
//! nothing else (what the records mean, and why the table survives a crash
//! at any step, is in [`durable`](super::durable)). The decoder treats every
//! byte as untrusted: it allocates at most one record per 2 input bytes, and
//! answers a typed error or a torn-tail verdict, never a panic.
//!
//! # Log file layout (all integers little-endian)
//!
//! A log file is a 36-byte header followed by the records: in version 3
//! (written by this build) a sequence of *frames*, one per append; in
//! versions 1 and 2 (still read) 16-byte slots.
//!
//! | offset | size | field                                              |
//! |-------:|-----:|----------------------------------------------------|
//! | 0      | 4    | magic `SHCL`                                       |
//! | 4      | 4    | format version (3; 1 and 2 are still read)         |
//! | 8      | 4    | page size of the table                             |
//! | 12     | 4    | reserved, 0                                        |
//! | 16     | 8    | generation (the base file this log continues)      |
//! | 24     | 8    | sequence number of the first record                |
//! | 32     | 4    | CRC32 of bytes 0..32                               |
//!
//! Every record has a sequence number, consecutive through the file from
//! the header's; the numbers are never stored per record, and are never
//! reused (a new log starts after every number the logs before it may have
//! used, torn tails included).
//!
//! The kinds of record and what they mean (`a`, `b` in the version-2 slot;
//! their version-3 encoding is below):
//!
//! | kind | name    | payload                  | meaning                                                        |
//! |-----:|---------|--------------------------|----------------------------------------------------------------|
//! | 1    | batch   | 0                        | versions 1 and 2: first record of every append: all slots before it were fsynced (version 3: the frame says it) |
//! | 2    | intent  | `a` page, `b` CRC        | the page may now hold bytes with this CRC                       |
//! | 3    | except  | u64 sequence number      | the next settle leaves this intent unsettled                    |
//! | 4    | settle  | u64 bound `s`            | intents below `s` (except those named) are settled              |
//! | 5    | retract | u64 sequence number      | this intent is no longer accepted                               |
//! | 6    | drop    | `a` first, `b` last page | forget every checksum of pages `a..=b`                          |
//! | 7    | free    | `a` page, `b` 0          | forget every checksum of the page and mark it unallocated       |
//! | 8    | claim   | `a` page, `b` CRC        | if the page has no checksum, no unsettled intent and no mark, this is its settled checksum |
//!
//! ## Version 3: frames
//!
//! Each append (one write and one fsync of every record buffered since the
//! last, shared by the threads that wait for it) is one frame; a frame is
//! written only after the fsync of the frame before it returned.
//!
//! | offset  | size    | field                                                  |
//! |--------:|--------:|--------------------------------------------------------|
//! | 0       | 8       | frame length `L` in bytes, header and trailer included (≥ 32) |
//! | 8       | 8       | record count `n`                                       |
//! | 16      | 8       | sequence number of the frame's first record (the one after the previous frame's last) |
//! | 24      | 4       | CRC32 of bytes 0..24                                   |
//! | 28      | `L`−32  | the `n` records, back to back                          |
//! | `L`−4   | 4       | CRC32 of bytes 0..`L`−4                                |
//!
//! A record is its kind (1 byte) and then, by kind (*varint*: LEB128, at
//! most 10 bytes; *page delta*: the page minus the page of the frame's
//! previous intent, claim or free record — 0 for the first — as a zigzag
//! varint; the record's own sequence number is `s`):
//!
//! | kind            | after the kind byte                          |
//! |-----------------|----------------------------------------------|
//! | intent, claim   | page delta, CRC (4 bytes)                    |
//! | free            | page delta                                   |
//! | except, retract | varint `s` − the sequence number named (≥ 1) |
//! | settle          | varint `s` − bound                           |
//! | drop            | varint first page, varint last page          |
//!
//! So an intent or a claim takes 6 bytes when it follows a page less than
//! 64 pages before it (an adoption's claims, and most checkpoints), 7 up
//! to 8 Ki pages away; a settle 2; a frame adds 32. Version 3 has no batch
//! record. A frame that verifies but whose records cannot be right (a count
//! its bytes cannot hold, an unknown kind, bytes after the last record, a
//! page past 2³², a reference to itself or to a later record, an empty drop
//! range) is damage.
//!
//! ## Versions 1 and 2: slots
//!
//! Record slot `i` starts at byte `36 + 16·i` and has the sequence number
//! `first_seq + i`; the sequence number is not stored but is part of the
//! record's CRC, so a record copied to another slot, or left over from an
//! older log at the same offset, does not verify.
//!
//! | offset | size | field                                                   |
//! |-------:|-----:|---------------------------------------------------------|
//! | 0      | 1    | kind (above)                                            |
//! | 1      | 3    | reserved, 0                                             |
//! | 4      | 8    | payload: two u32 (`a` at 4, `b` at 8) or one u64        |
//! | 12     | 4    | CRC32 of (sequence number as u64 LE ‖ bytes 0..12)      |
//!
//! Kinds 7 and 8 exist from version 2 on: in a version-1 log a slot of
//! those kinds does not verify (it is read as damage or a torn tail, as any
//! slot that does not verify). A build that knows only version 1 or 2
//! refuses a newer log ([`Error::UnsupportedVersion`]) rather than dropping
//! the records it does not know. The table appends only to a log of the
//! current version: it compacts an older log away when it opens one.
//!
//! # Reading a log that a crash cut short
//!
//! A crash may leave any prefix of the bytes appended since the last fsync,
//! with unwritten sectors as zeros or stale bytes, in any order.
//!
//! Version 3: the reader takes frames in order while each verifies (both
//! CRCs, a length within the file) and continues the sequence numbers. At
//! the first that does not, it looks at every later offset for a whole
//! frame that verifies with a sequence number at or after the expected one:
//! a frame is written only after every byte before it was fsynced, so if
//! there is one, the bytes that do not verify were durable, and that is
//! damage ([`Error::CorruptFile`], naming the offset). Otherwise they are
//! the frame of the append a crash cut short ([`LogEnd::Torn`]), normal
//! after a crash; its records are not used, and the sequence numbers it may
//! hold (at most one per byte) are never used again. A frame left from an
//! older log (stale sectors) carries older sequence numbers and never
//! counts.
//!
//! | a crash while a frame is appended leaves | read as |
//! |------------------------------------------|---------|
//! | none of its bytes                        | a clean end |
//! | some of its sectors, old or zero bytes in the others | a torn tail: the frame's records are dropped, as if the append had not begun |
//! | all of it, but not its fsync             | a whole frame: its records are used (they only add to what the fsynced ones say, see [`durable`](super::durable)) |
//!
//! Versions 1 and 2: the reader finds `D`, the last slot holding a valid
//! *batch* record: a batch record is written only after every earlier slot
//! was fsynced, so every slot before `D` is durable and must verify; one
//! that does not is damage ([`Error::CorruptFile`]). From `D` on, the reader
//! keeps records up to the first slot that does not verify and reports the
//! rest as a torn tail ([`LogEnd::Torn`]).
//!
//! What this costs when the newest fsynced append itself is damaged is in
//! [`durable`](super::durable).

use std::path::Path;

use crate::error::{Error, Result};

/// Magic of a log file.
pub const LOG_MAGIC: [u8; 4] = *b"SHCL";
/// Newest log format version this build writes and reads (versions 1 and 2,
/// of 16-byte slots, are still read; version 1 lacks the `free` and `claim`
/// kinds).
pub const LOG_VERSION: u32 = 3;
/// Length of the log file header.
pub const LOG_HEADER_LEN: usize = 36;
/// Length of one record slot (versions 1 and 2).
pub const RECORD_LEN: usize = 16;
/// Length of a frame's header (version 3 on).
pub const FRAME_HEADER_LEN: usize = 28;
/// Bytes a frame adds to its records: the header and the trailing CRC.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + 4;
/// The shortest encoded record of a frame (a kind byte and a 1-byte varint).
const FRAME_RECORD_LEN_MIN: usize = 2;

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

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint at `*pos` (at most 10 bytes, no bits past 64).
fn get_varint(body: &[u8], pos: &mut usize) -> Option<u64> {
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
            return Some(v);
        }
    }
    None
}

fn zigzag(d: i64) -> u64 {
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// A version-3 frame being built: the records of one append, encoded back
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
}

/// Why the bytes at a frame's position are not a frame that continues the
/// log.
enum FrameCheck {
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
fn check_frame(at: &[u8]) -> FrameCheck {
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
fn decode_frame_body(
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
            get_varint(body, &mut pos).ok_or_else(|| format!("record {seq}: malformed {what}"))
        };
        let page = |d: u64, prev: &mut u32| -> std::result::Result<u32, String> {
            let p = i64::from(*prev) + unzigzag(d);
            let p = u32::try_from(p).map_err(|_| format!("record {seq} names page {p}"))?;
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
    /// File offset of each record of `records`: its slot (versions 1 and
    /// 2), or its frame (version 3).
    pub offsets: Vec<u64>,
    /// How the file ends.
    pub end: LogEnd,
    /// Sequence numbers the file may have used, counting a torn tail
    /// generously (a partial slot; one per byte of a torn frame): the next
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
    if version >= 3 {
        decode_frames(path, bytes, header)
    } else {
        decode_slots(path, bytes, header)
    }
}

/// The body of a version-1 or -2 log: 16-byte slots.
fn decode_slots(path: &Path, bytes: &[u8], header: LogHeader) -> Result<DecodedLog> {
    let version = header.version;
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
    let offsets = (0..records.len()).map(offset_of).collect();
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
        offsets,
        end,
        slots,
    })
}

/// The body of a version-3 log: frames, each one append.
fn decode_frames(path: &Path, bytes: &[u8], header: LogHeader) -> Result<DecodedLog> {
    let mut records = Vec::new();
    let mut offsets = Vec::new();
    let mut pos = LOG_HEADER_LEN;
    let mut seq = header.first_seq;
    while pos < bytes.len() {
        let FrameCheck::Whole {
            len,
            count,
            first_seq,
        } = check_frame(&bytes[pos..])
        else {
            break;
        };
        if first_seq != seq {
            // A frame left over from an older log, or misplaced: it does
            // not continue this one.
            break;
        }
        if seq.checked_add(count).is_none() {
            return Err(Error::corrupt_file(
                path,
                pos as u64,
                "frame's sequence numbers pass 2^64",
            ));
        }
        let body = &bytes[pos + FRAME_HEADER_LEN..pos + len - 4];
        let before = records.len();
        decode_frame_body(body, first_seq, count, &mut records)
            .map_err(|why| Error::corrupt_file(path, pos as u64, format!("frame {why}")))?;
        offsets.extend(std::iter::repeat_n(pos as u64, records.len() - before));
        seq += count;
        pos += len;
    }
    let end = if pos == bytes.len() {
        LogEnd::Clean
    } else {
        // Every frame was written after the one before it was fsynced: a
        // whole frame further on means that the bytes here were durable.
        let later = (pos + 1..bytes.len().saturating_sub(FRAME_OVERHEAD - 1)).find(|&p| {
            matches!(check_frame(&bytes[p..]), FrameCheck::Whole { first_seq, .. } if first_seq >= seq)
        });
        if let Some(later) = later {
            return Err(Error::corrupt_file(
                path,
                pos as u64,
                format!(
                    "the frame at this offset does not verify, but the frame at offset {later} was written after it was durable"
                ),
            ));
        }
        LogEnd::Torn {
            offset: pos as u64,
            bytes: (bytes.len() - pos) as u64,
        }
    };
    // A torn frame may have used a sequence number per byte at most.
    let torn = (bytes.len() - pos) as u64;
    let slots = (seq - header.first_seq).saturating_add(torn);
    Ok(DecodedLog {
        header,
        records,
        offsets,
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

    /// A version-2 log (16-byte slots).
    fn encode_log(first_seq: u64, records: &[LogRecord]) -> Vec<u8> {
        encode_log_version(2, first_seq, records)
    }

    /// A version-3 log: one frame per group of records.
    fn encode_frames(first_seq: u64, frames: &[Vec<LogRecord>]) -> Vec<u8> {
        let mut out = LogHeader {
            version: LOG_VERSION,
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
            out.extend_from_slice(&f.finish());
        }
        out
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
        let frame = |count: u64, body: &[u8]| {
            let mut f = LogHeader {
                version: LOG_VERSION,
                page_size: 4096,
                generation: 3,
                first_seq: 5,
            }
            .encode()
            .to_vec();
            let len = (FRAME_OVERHEAD + body.len()) as u64;
            let start = f.len();
            f.extend_from_slice(&len.to_le_bytes());
            f.extend_from_slice(&count.to_le_bytes());
            f.extend_from_slice(&5u64.to_le_bytes());
            let h = crc32fast::hash(&f[start..]);
            f.extend_from_slice(&h.to_le_bytes());
            f.extend_from_slice(body);
            let c = crc32fast::hash(&f[start..]);
            f.extend_from_slice(&c.to_le_bytes());
            f
        };
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

        #[test]
        fn junk_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_log(Path::new("l"), &bytes, 4096);
        }
    }
}
