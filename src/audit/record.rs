//! Its contract is documented on [`AuditRecord`] (this module is private; its
//! items are re-exported by its parent).

use sha2::{Digest, Sha256};

/// Longest body a frame may declare.
pub const MAX_BODY_LEN: usize = 1 + 8 * 5 + 1 + 32 + 2 + MAX_TARGET_LEN + 4 + MAX_TEXT_LEN;
/// Longest target text, in bytes.
pub const MAX_TARGET_LEN: usize = 1_024;
/// Longest entry text, in bytes.
pub const MAX_TEXT_LEN: usize = 64 * 1_024;

pub(super) const SEGMENT_MAGIC: [u8; 4] = *b"SHAL";
pub(super) const SEGMENT_VERSION: u32 = 1;
pub(super) const SEGMENT_HEADER_LEN: usize = 16;
pub(super) const FRAME_HEADER_LEN: usize = 8;
/// The smallest frame: empty target and text.
/// The largest sequence number a record may carry: far beyond any real
/// log, and far enough below `u64::MAX` that no count on top of it
/// overflows. A header or a frame naming more is damage.
pub(super) const MAX_SEQ: u64 = 1 << 62;
pub(super) const MIN_FRAME_LEN: u64 = (FRAME_HEADER_LEN + 1 + 8 * 5 + 1 + 32 + 2 + 4) as u64;
const BODY_VERSION: u8 = 1;

/// What an audit entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// A failure was reported and joined or opened an incident.
    Detected,
    /// A diagnosis was made (problem, confidence, rule).
    Diagnosed,
    /// A remedy was chosen (and why), or an action was refused (mode,
    /// breaker, cooldown, approval).
    Decided,
    /// A remedy ran (its outcome).
    Acted,
    /// The result of an action was verified (or failed verification).
    Verified,
    /// A remedy was undone because it made things worse.
    Undone,
    /// Nothing worked: the incident was escalated to a person.
    Escalated,
    /// The incident was closed.
    Closed,
    /// Anything else worth keeping (startup recovery, mode changes).
    Note,
}

impl EntryKind {
    /// The kind's name, as printed.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Detected => "detected",
            EntryKind::Diagnosed => "diagnosed",
            EntryKind::Decided => "decided",
            EntryKind::Acted => "acted",
            EntryKind::Verified => "verified",
            EntryKind::Undone => "undone",
            EntryKind::Escalated => "escalated",
            EntryKind::Closed => "closed",
            EntryKind::Note => "note",
        }
    }

    fn code(self) -> u8 {
        match self {
            EntryKind::Detected => 1,
            EntryKind::Diagnosed => 2,
            EntryKind::Decided => 3,
            EntryKind::Acted => 4,
            EntryKind::Verified => 5,
            EntryKind::Undone => 6,
            EntryKind::Escalated => 7,
            EntryKind::Closed => 8,
            EntryKind::Note => 9,
        }
    }

    fn from_code(c: u8) -> Option<EntryKind> {
        Some(match c {
            1 => EntryKind::Detected,
            2 => EntryKind::Diagnosed,
            3 => EntryKind::Decided,
            4 => EntryKind::Acted,
            5 => EntryKind::Verified,
            6 => EntryKind::Undone,
            7 => EntryKind::Escalated,
            8 => EntryKind::Closed,
            9 => EntryKind::Note,
            _ => return None,
        })
    }
}

/// What a caller asks to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// The incident it belongs to, if any (ids start at 1).
    pub incident: Option<u64>,
    /// What it is about (`page 7`, `component wal`), as text.
    pub target: String,
    /// What happened.
    pub kind: EntryKind,
    /// The details, for a person.
    pub text: String,
}

/// A record as stored and read back.
///
/// The audit log's record: its byte layout, its frame and its hash.
///
/// # Segment file
///
/// A segment is named `audit-<first sequence number, 16 hex digits>.log` and
/// starts with a 16-byte header, then frames back to back. Integers are
/// little-endian.
///
/// | offset | size | field                                   |
/// |-------:|-----:|-----------------------------------------|
/// | 0      | 4    | magic `SHAL`                            |
/// | 4      | 4    | format version (1)                      |
/// | 8      | 8    | sequence number of its first record     |
///
/// # Frame
///
/// | size | field                                              |
/// |-----:|----------------------------------------------------|
/// | 4    | body length `n` (at most [`MAX_BODY_LEN`])         |
/// | 4    | CRC32 of (the 4 length bytes ‖ body)               |
/// | n    | body                                               |
///
/// # Body (version 1)
///
/// | size | field                                                  |
/// |-----:|--------------------------------------------------------|
/// | 1    | body version (1)                                       |
/// | 8    | sequence number (one more than the record before)      |
/// | 8    | synced through: the highest sequence number known durable when this record was written (0: none) |
/// | 8    | clock time, ns (the healer's [`Clock`](crate::Clock))  |
/// | 8    | wall time, ms since the Unix epoch                     |
/// | 8    | incident id (0: none)                                  |
/// | 1    | entry kind ([`EntryKind`])                             |
/// | 32   | SHA-256 of the body of the record before (zeros for the first record ever) |
/// | 2    | target length `t` (at most [`MAX_TARGET_LEN`])         |
/// | t    | target, UTF-8                                          |
/// | 4    | text length `x` (at most [`MAX_TEXT_LEN`])             |
/// | x    | text, UTF-8                                            |
///
/// A record's hash is the SHA-256 of its body. Each record carries the hash of
/// the one before, so a record changed after it was written — by rot the CRC
/// happened to miss, or on purpose with a recomputed CRC — breaks the chain
/// at the next record; rewriting the chain to hide an edit changes the head
/// hash ([`AuditLog::head_hash`](super::AuditLog::head_hash)), which a host
/// that exports it elsewhere can compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Its sequence number (consecutive over the log's life).
    pub seq: u64,
    /// The highest sequence number known durable when it was written.
    pub synced_through: u64,
    /// Clock time of the append, ns.
    pub at_ns: u64,
    /// Wall time of the append, ms since the Unix epoch.
    pub unix_ms: u64,
    /// The entry.
    pub entry: AuditEntry,
    /// The hash of the record before.
    pub prev_hash: [u8; 32],
    /// This record's hash.
    pub hash: [u8; 32],
}

/// Why a frame did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Fewer bytes than the frame needs: the end of what was written.
    Short,
    /// The length or the CRC does not check, or the body does not decode.
    Bad(String),
}

/// Encodes `entry` as a body with the given header fields (the reference
/// encoding [`push_frame`] is tested against).
#[cfg(test)]
pub(super) fn encode_body(
    seq: u64,
    synced_through: u64,
    at_ns: u64,
    unix_ms: u64,
    prev_hash: &[u8; 32],
    entry: &AuditEntry,
) -> Vec<u8> {
    let mut b = Vec::new();
    push_body(
        &mut b,
        seq,
        synced_through,
        at_ns,
        unix_ms,
        prev_hash,
        entry,
    );
    b
}

/// Appends the body of `entry` (with the given header fields) to `out`.
fn push_body(
    out: &mut Vec<u8>,
    seq: u64,
    synced_through: u64,
    at_ns: u64,
    unix_ms: u64,
    prev_hash: &[u8; 32],
    entry: &AuditEntry,
) {
    let target = truncate_utf8(&entry.target, MAX_TARGET_LEN);
    let text = truncate_utf8(&entry.text, MAX_TEXT_LEN);
    let start = out.len();
    out.reserve(1 + 8 * 5 + 1 + 32 + 2 + target.len() + 4 + text.len());
    out.push(BODY_VERSION);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&synced_through.to_le_bytes());
    out.extend_from_slice(&at_ns.to_le_bytes());
    out.extend_from_slice(&unix_ms.to_le_bytes());
    out.extend_from_slice(&entry.incident.unwrap_or(0).to_le_bytes());
    out.push(entry.kind.code());
    out.extend_from_slice(prev_hash);
    out.extend_from_slice(&(target.len() as u16).to_le_bytes());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    debug_assert!(out.len() - start <= MAX_BODY_LEN);
}

/// Appends the frame of `entry`'s record (with the given header fields)
/// to `out`, with no buffer of its own, and returns the record's hash:
/// the same bytes as `frame` of `encode_body` (the test-only reference
/// encoding), and the same hash as [`hash`] of that body.
pub(super) fn push_frame(
    out: &mut Vec<u8>,
    seq: u64,
    synced_through: u64,
    at_ns: u64,
    unix_ms: u64,
    prev_hash: &[u8; 32],
    entry: &AuditEntry,
) -> [u8; 32] {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    push_body(out, seq, synced_through, at_ns, unix_ms, prev_hash, entry);
    let body = &out[start + FRAME_HEADER_LEN..];
    let digest = hash(body);
    let len = (body.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(body);
    let crc = h.finalize().to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + FRAME_HEADER_LEN].copy_from_slice(&crc);
    digest
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary: over-long targets and texts are cut, never refused.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The SHA-256 of a body.
pub(super) fn hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Wraps a body in a frame (the reference framing [`push_frame`] is
/// tested against).
#[cfg(test)]
pub(super) fn frame(body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(body);
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Offset of the sequence number inside a frame (frame header, body version).
pub(super) const SEQ_OFFSET: usize = FRAME_HEADER_LEN + 1;

/// Decodes the frame at the start of `bytes`: the record and the frame's
/// length.
pub(crate) fn decode_frame(bytes: &[u8]) -> Result<(AuditRecord, usize), FrameError> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Short);
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_BODY_LEN {
        return Err(FrameError::Bad(format!(
            "a frame of {len} bytes, more than the {MAX_BODY_LEN} a record can hold"
        )));
    }
    if bytes.len() < FRAME_HEADER_LEN + len {
        return Err(FrameError::Short);
    }
    let stored = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let body = &bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[0..4]);
    h.update(body);
    if h.finalize() != stored {
        return Err(FrameError::Bad("frame checksum mismatch".into()));
    }
    let record = decode_body(body).map_err(FrameError::Bad)?;
    Ok((record, FRAME_HEADER_LEN + len))
}

fn decode_body(b: &[u8]) -> Result<AuditRecord, String> {
    let mut r = Cursor { b, at: 0 };
    let version = r.u8()?;
    if version != BODY_VERSION {
        return Err(format!("record version {version}, expected {BODY_VERSION}"));
    }
    let seq = r.u64()?;
    if seq == 0 || seq > MAX_SEQ {
        return Err(format!("record number {seq}, outside 1..={MAX_SEQ}"));
    }
    let synced_through = r.u64()?;
    if synced_through >= seq {
        return Err(format!(
            "record {seq} claims to be synced through {synced_through}, not before itself"
        ));
    }
    let at_ns = r.u64()?;
    let unix_ms = r.u64()?;
    let incident = r.u64()?;
    let kind = r.u8()?;
    let kind = EntryKind::from_code(kind).ok_or_else(|| format!("unknown entry kind {kind}"))?;
    let prev_hash: [u8; 32] = r.take(32)?.try_into().expect("32 bytes");
    let tlen = usize::from(u16::from_le_bytes(r.take(2)?.try_into().expect("2 bytes")));
    if tlen > MAX_TARGET_LEN {
        return Err(format!("a target of {tlen} bytes"));
    }
    let target = std::str::from_utf8(r.take(tlen)?)
        .map_err(|e| format!("a target that is not UTF-8: {e}"))?
        .to_owned();
    let xlen = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes")) as usize;
    if xlen > MAX_TEXT_LEN {
        return Err(format!("a text of {xlen} bytes"));
    }
    let text = std::str::from_utf8(r.take(xlen)?)
        .map_err(|e| format!("a text that is not UTF-8: {e}"))?
        .to_owned();
    if r.at != b.len() {
        return Err(format!("{} bytes after the text", b.len() - r.at));
    }
    Ok(AuditRecord {
        seq,
        synced_through,
        at_ns,
        unix_ms,
        entry: AuditEntry {
            incident: (incident != 0).then_some(incident),
            target,
            kind,
            text,
        },
        prev_hash,
        hash: hash(b),
    })
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("the body ends {n} bytes too early"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

/// The 16-byte header of a segment whose first record is `first_seq`.
pub(super) fn segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..8].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// The first sequence number a segment header names, or why it is not one.
pub(super) fn parse_segment_header(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(format!(
            "{} bytes, shorter than the {SEGMENT_HEADER_LEN}-byte header",
            bytes.len()
        ));
    }
    if bytes[0..4] != SEGMENT_MAGIC {
        return Err(format!(
            "magic {:?} is not {:?}",
            &bytes[0..4],
            SEGMENT_MAGIC
        ));
    }
    let v = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if v != SEGMENT_VERSION {
        return Err(format!("segment version {v}, expected {SEGMENT_VERSION}"));
    }
    let first = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if first == 0 || first > MAX_SEQ {
        return Err(format!(
            "the header names record {first}, outside 1..={MAX_SEQ} (the numbers a log gives)"
        ));
    }
    Ok(first)
}

/// The file name of the segment whose first record is `first_seq`.
pub(super) fn segment_name(first_seq: u64) -> String {
    format!("audit-{first_seq:016x}.log")
}

/// The first sequence number in a segment's name, if it is one.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("audit-")?.strip_suffix(".log")?;
    // Only the spelling `segment_name` writes: two names for one number
    // would be two segments claiming the same records.
    if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(text: &str) -> AuditEntry {
        AuditEntry {
            incident: Some(3),
            target: "page 7".into(),
            kind: EntryKind::Acted,
            text: text.into(),
        }
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT_LEN);
        let body = encode_body(1, 0, 2, 3, &[0; 32], &entry(&long));
        let (r, _) = decode_frame(&frame(&body)).unwrap();
        assert!(r.entry.text.len() <= MAX_TEXT_LEN);
        assert!(r.entry.text.chars().all(|c| c == 'é'));
    }

    #[test]
    fn names_and_headers_round_trip() {
        assert_eq!(parse_segment_name(&segment_name(0xab)), Some(0xab));
        assert_eq!(parse_segment_name("audit-12.log"), None);
        assert_eq!(parse_segment_header(&segment_header(9)).unwrap(), 9);
        assert!(parse_segment_header(&[0; 16]).is_err());
    }

    proptest! {
        #[test]
        fn frame_round_trips(seq in 1u64..=MAX_SEQ, behind in any::<u64>(), at in any::<u64>(), ms in any::<u64>(),
                             incident in proptest::option::of(1u64..), kind in 1u8..=9,
                             prev in any::<[u8; 32]>(), target in ".{0,40}", text in ".{0,200}") {
            let e = AuditEntry { incident, target, kind: EntryKind::from_code(kind).unwrap(), text };
            let synced = behind % seq;
            let body = encode_body(seq, synced, at, ms, &prev, &e);
            let bytes = frame(&body);
            let (r, n) = decode_frame(&bytes).unwrap();
            prop_assert_eq!(n, bytes.len());
            prop_assert_eq!(r.seq, seq);
            prop_assert_eq!(r.synced_through, synced);
            prop_assert_eq!(r.prev_hash, prev);
            prop_assert_eq!(r.hash, hash(&body));
            prop_assert_eq!(r.entry, e);
        }

        #[test]
        fn frames_pushed_into_one_buffer_are_the_frames_of_their_bodies(
            records in proptest::collection::vec((1u64.., any::<u64>(), proptest::option::of(1u64..), 1u8..=9, ".{0,40}", ".{0,300}"), 1..8),
            prefix in proptest::collection::vec(any::<u8>(), 0..20),
            synced in any::<u64>(), ms in any::<u64>(), prev in any::<[u8; 32]>(),
        ) {
            // Encoded in place, batch after batch, as the log appends them.
            let mut out = prefix.clone();
            let mut want = prefix;
            let mut chain = prev;
            for (seq, at, incident, kind, target, text) in records {
                let e = AuditEntry { incident, target, kind: EntryKind::from_code(kind).unwrap(), text };
                let body = encode_body(seq, synced, at, ms, &chain, &e);
                want.extend_from_slice(&frame(&body));
                let got = push_frame(&mut out, seq, synced, at, ms, &chain, &e);
                prop_assert_eq!(got, hash(&body));
                chain = got;
            }
            prop_assert_eq!(out, want);
        }

        #[test]
        fn any_damage_is_caught_and_nothing_panics(text in ".{0,80}", flip in any::<usize>(), cut in any::<usize>()) {
            let bytes = frame(&encode_body(1, 0, 2, 3, &[7; 32], &entry(&text)));
            let mut bad = bytes.clone();
            let i = flip % bad.len();
            bad[i] ^= 1 << (flip % 8);
            prop_assert!(decode_frame(&bad).is_err());
            let short = &bytes[..cut % bytes.len()];
            prop_assert_eq!(decode_frame(short).unwrap_err(), FrameError::Short);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_frame(&bytes);
            let _ = parse_segment_header(&bytes);
        }
    }
}
