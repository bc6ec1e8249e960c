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
//! A log file is a 36-byte header followed by the records: in version 4
//! (written by this build) a sequence of *frames*, one per append, each
//! followed by its *mirror* (the same bytes again); in version 3 (still
//! read) the frames without mirrors; in versions 1 and 2 (still read)
//! 16-byte slots.
//!
//! | offset | size | field                                              |
//! |-------:|-----:|----------------------------------------------------|
//! | 0      | 4    | magic `SHCL`                                       |
//! | 4      | 4    | format version (4; 1 to 3 are still read)          |
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
//! their encoding in frames, versions 3 and 4, is below):
//!
//! | kind | name    | payload                  | meaning                                                        |
//! |-----:|---------|--------------------------|----------------------------------------------------------------|
//! | 1    | batch   | 0                        | versions 1 and 2: first record of every append: all slots before it were fsynced (versions 3 and 4: the frame says it) |
//! | 2    | intent  | `a` page, `b` CRC        | the page may now hold bytes with this CRC                       |
//! | 3    | except  | u64 sequence number      | the next settle leaves this intent unsettled                    |
//! | 4    | settle  | u64 bound `s`            | intents below `s` (except those named) are settled              |
//! | 5    | retract | u64 sequence number      | this intent is no longer accepted                               |
//! | 6    | drop    | `a` first, `b` last page | forget every checksum of pages `a..=b`                          |
//! | 7    | free    | `a` page, `b` 0          | forget every checksum of the page and mark it unallocated       |
//! | 8    | claim   | `a` page, `b` CRC        | if the page has no checksum, no unsettled intent and no mark, this is its settled checksum |
//!
//! ## Versions 3 and 4: frames
//!
//! Each append (one write and one fsync of every record buffered since the
//! last, shared by the threads that wait for it) is one frame; a frame is
//! written only after the fsync of the frame before it returned. In
//! version 4 the append writes the frame and then its mirror, byte for
//! byte the same, in the same write and under the same fsync: a frame of
//! length `L` at offset `o` has its mirror at `o + L`, and the next frame
//! starts at `o + 2L`.
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
//! A record is its kind (1 byte) and then, by kind (*varint*: LEB128 in
//! its shortest form, at most 10 bytes; *page delta*: the page minus the page of the frame's
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
//! to 8 Ki pages away; a settle 2; a frame adds 32; version 4 writes all of
//! it twice (frame and mirror). Versions 3 and 4 have no batch
//! record. A frame that verifies but whose records cannot be right (a count
//! its bytes cannot hold, an unknown kind, bytes after the last record, a
//! varint longer than its shortest form, a page outside 0..2³², a reference
//! to itself or to a later record, an empty drop range) is damage: the
//! encoder writes every frame in one canonical form, so a frame that
//! verifies (CRC included) but is not in that form was not written by it.
//! A frame torn by a crash never verifies, so refusing non-canonical frames
//! costs crash recovery nothing.
//!
//! Why the mirror: a whole frame after a damaged one proves that the
//! damaged bytes were durable, but nothing follows the *newest* frame, so
//! a bit flipped in it after its fsync (bit rot) looked exactly like the
//! frame of an append a crash cut short, and its records — the only
//! checksum of writes the host was told are durable — were dropped as a
//! torn tail. No mark of "fsync done" can help there: the mark would be a
//! write after the fsync, and a crash can come before it; and an fsync per
//! mark doubles the fsyncs. The mirror costs no fsync and no extra write
//! call, only the frame's bytes again, and makes damage confined to one
//! copy of any frame — the newest included — cost nothing.
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
//! Version 4: the reader takes frames in order while each verifies (both
//! CRCs, a length within the file) and continues the sequence numbers,
//! stepping over each frame's mirror. A frame that does not verify is read
//! from its mirror: the whole frame at `o + L` whose first sequence number
//! is the one expected and whose length is `L`. A mirror that differs
//! from its verified frame is stepped over. Either is reported
//! ([`DecodedLog::mended`]; the table then compacts, writing both copies
//! again). A file that ends inside the mirror of a verified frame is the
//! tail of that append: the frame's records are used and the rest is a
//! torn tail. Only when neither copy verifies does the reader go on as for
//! version 3.
//!
//! | a crash while a frame and its mirror are appended leaves | read as |
//! |-----------------------------------------------------------|---------|
//! | none of their bytes | a clean end |
//! | some sectors of each, old or zero bytes in the others | a torn tail: dropped, as if the append had not begun |
//! | the frame whole, its mirror cut or missing sectors | the frame's records are used (see below: a whole frame) |
//! | the mirror whole, the frame missing sectors | the mirror's records are used |
//!
//! | damage after the fsync | read as |
//! |------------------------|---------|
//! | in one copy of any frame (the newest included) | nothing lost: the other copy is read, the damage logged and the log compacted |
//! | in both copies of a frame before a later frame | [`Error::CorruptFile`] naming the frame's offset |
//! | in both copies of the newest frame | a torn tail (two independent faults in one frame: see [`durable`](super::durable)) |
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
//! What this costs when the newest fsynced append of a version-3 log (or
//! both copies of a version-4 one) is damaged is in
//! [`durable`](super::durable).

use std::path::Path;

use crate::error::{Error, Result};

mod record;

use record::{check_frame, decode_frame_body, decode_record, FrameCheck};
pub use record::{
    encode_record, Frame, LogRecord, FRAME_HEADER_LEN, FRAME_OVERHEAD, LOG_HEADER_LEN, LOG_MAGIC,
    LOG_VERSION, RECORD_LEN,
};

#[cfg(test)]
mod tests;

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
///
/// A version-4 log whose file ends exactly after a verified frame (its
/// mirror missing altogether) ends `Torn` with 0 bytes: the append was cut
/// short, and the log is not appended to as it is.
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
    /// 2), or its frame (version 3), or the copy of its frame that was
    /// read (version 4).
    pub offsets: Vec<u64>,
    /// How the file ends.
    pub end: LogEnd,
    /// Sequence numbers the file may have used, counting a torn tail
    /// generously (a partial slot; one per byte of a torn frame): the next
    /// log's first sequence number must be at least `first_seq + slots`.
    pub slots: u64,
    /// Version 4: offsets of the frames of which one copy (the frame or its
    /// mirror) was damaged or torn and the other was used. Nothing was
    /// lost, but the file no longer holds two copies of those frames.
    pub mended: Vec<u64>,
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
        decode_frames(path, bytes, header, version >= 4)
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
    let mended = Vec::new();
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
        mended,
    })
}

/// The body of a version-3 or -4 log: frames, each one append; in version
/// 4 (`mirrored`) each frame is followed by its mirror.
fn decode_frames(
    path: &Path,
    bytes: &[u8],
    header: LogHeader,
    mirrored: bool,
) -> Result<DecodedLog> {
    let mut records = Vec::new();
    let mut offsets = Vec::new();
    let mut mended = Vec::new();
    let mut pos = LOG_HEADER_LEN;
    let mut seq = header.first_seq;
    // Where the bytes stop being used: the first byte not read as a frame,
    // or (version 4) the mirror of the last frame when the file ends inside
    // it.
    let mut stop = None;
    while pos < bytes.len() {
        let whole = match check_frame(&bytes[pos..]) {
            // A frame left over from an older log, or misplaced, does not
            // continue this one.
            FrameCheck::Whole {
                len,
                count,
                first_seq,
            } if first_seq == seq => Some((pos, len, count)),
            _ => None,
        };
        // Version 4: the frame's mirror stands in for a frame that does not
        // verify.
        let (at, len, count, next) = match whole {
            Some((at, len, count)) => {
                if !mirrored {
                    (at, len, count, at + len)
                } else if bytes.len() < at + 2 * len {
                    // The file ends inside the mirror: the append was cut
                    // short after the frame (or the mirror was damaged at
                    // the end of the file); the frame's records stand.
                    stop = Some(at + len);
                    (at, len, count, bytes.len())
                } else {
                    if bytes[at + len..at + 2 * len] != bytes[at..at + len] {
                        // A mirror torn with the file's length already
                        // extended, or damaged: the frame stands for both.
                        mended.push(at as u64);
                    }
                    (at, len, count, at + 2 * len)
                }
            }
            None => match mirrored.then(|| find_mirror(bytes, pos, seq)).flatten() {
                Some((at, len, count)) => {
                    mended.push(pos as u64);
                    (at, len, count, at + len)
                }
                None => {
                    stop = Some(pos);
                    break;
                }
            },
        };
        if seq.checked_add(count).is_none() {
            return Err(Error::corrupt_file(
                path,
                at as u64,
                "frame's sequence numbers pass 2^64",
            ));
        }
        let body = &bytes[at + FRAME_HEADER_LEN..at + len - 4];
        let before = records.len();
        decode_frame_body(body, seq, count, &mut records)
            .map_err(|why| Error::corrupt_file(path, at as u64, format!("frame {why}")))?;
        offsets.extend(std::iter::repeat_n(at as u64, records.len() - before));
        seq += count;
        pos = next;
    }
    let end = match stop {
        None => LogEnd::Clean,
        Some(stop) => {
            // Every frame was written after the one before it was fsynced:
            // a whole frame further on means that the bytes here were
            // durable.
            let later = (stop + 1..bytes.len().saturating_sub(FRAME_OVERHEAD - 1)).find(|&p| {
                matches!(check_frame(&bytes[p..]), FrameCheck::Whole { first_seq, .. } if first_seq >= seq)
            });
            if let Some(later) = later {
                return Err(Error::corrupt_file(
                    path,
                    stop as u64,
                    format!(
                        "the frame at this offset does not verify{}, but the frame at offset {later} was written after it was durable",
                        if mirrored { " and neither does its mirror" } else { "" }
                    ),
                ));
            }
            LogEnd::Torn {
                offset: stop as u64,
                bytes: (bytes.len() - stop) as u64,
            }
        }
    };
    // A torn frame may have used a sequence number per byte at most.
    let torn = match end {
        LogEnd::Torn { bytes, .. } => bytes,
        LogEnd::Clean => 0,
    };
    let slots = (seq - header.first_seq).saturating_add(torn);
    Ok(DecodedLog {
        header,
        records,
        offsets,
        end,
        slots,
        mended,
    })
}

/// Version 4: the mirror of the frame that should start at `pos` with
/// sequence number `seq` but does not verify there: a whole frame with that
/// first sequence number that ends where a frame of its length starting at
/// `pos` would be followed by its copy. Returns its offset, length and
/// record count.
fn find_mirror(bytes: &[u8], pos: usize, seq: u64) -> Option<(usize, usize, u64)> {
    (pos + FRAME_OVERHEAD..bytes.len().saturating_sub(FRAME_OVERHEAD - 1)).find_map(|p| {
        match check_frame(&bytes[p..]) {
            FrameCheck::Whole {
                len,
                count,
                first_seq,
            } if first_seq == seq && p - pos == len => Some((p, len, count)),
            _ => None,
        }
    })
}
