//! Opening the audit log: reading every segment, finding where damage
//! starts, keeping a damaged segment aside, and deciding where the next
//! record goes (see the [module docs](super) for the format and the crash
//! analysis).

use super::head::{self, Head};
use super::record::{
    self, decode_frame, parse_segment_header, parse_segment_name, FrameError, MAX_SEQ,
    SEGMENT_HEADER_LEN, SEQ_OFFSET,
};
use super::AuditRecord;
use crate::checksum::storage::{replace, TableStorage};
use crate::error::{Error, Result};

/// One segment file as the log knows it.
#[derive(Clone, Debug)]
pub(super) struct Segment {
    pub(super) name: String,
    pub(super) first_seq: u64,
    /// The first record number this segment may not hold: the next
    /// segment's (by name), or past [`MAX_SEQ`] for the newest. A record at
    /// or past it is damage, never read, so that the records of the whole
    /// log ascend from segment to segment.
    pub(super) end: u64,
    pub(super) len: u64,
    /// Whether appends may go here (the newest segment, undamaged).
    pub(super) appendable: bool,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) segments: Vec<Segment>,
    pub(super) next_seq: u64,
    pub(super) synced_through: u64,
    pub(super) last_hash: [u8; 32],
    pub(super) damage: Vec<Error>,
    pub(super) poisoned: Option<String>,
    /// The segment a [`AuditLog::sync`](super::AuditLog::sync) is syncing without the lock.
    pub(super) syncing: Option<String>,
    /// The record number the head file holds (0: no head file).
    pub(super) head_seq: u64,
}

/// What reading one segment found.
pub(super) struct SegmentRead {
    pub(super) records: Vec<AuditRecord>,
    /// Where the first frame that does not decode starts, and why.
    pub(super) failure: Option<(u64, String)>,
    /// Whether that failure is a torn tail (nothing after it says it was durable).
    torn: bool,
    /// Bytes up to the end of the last record before the failure.
    good_len: u64,
}

/// Reads a segment whose records should start at `first_seq` and stay
/// below `end` (the next segment's first record).
pub(super) fn read_segment(bytes: &[u8], first_seq: u64, end: u64) -> SegmentRead {
    let mut records = Vec::new();
    let mut off = SEGMENT_HEADER_LEN;
    let mut expected = first_seq;
    loop {
        if off == bytes.len() {
            return SegmentRead {
                records,
                failure: None,
                torn: false,
                good_len: off as u64,
            };
        }
        match decode_frame(&bytes[off..]) {
            Ok((r, n)) if r.seq == expected && r.seq < end => {
                expected += 1;
                records.push(r);
                off += n;
            }
            Ok((r, _)) if r.seq == expected => {
                let reason = format!(
                    "record {} is past the segment's end: the next segment starts at record {end}",
                    r.seq
                );
                return after_failure(bytes, off, expected, end, reason, records);
            }
            Ok((r, _)) => {
                let reason = format!("record {} where record {expected} belongs", r.seq);
                return after_failure(bytes, off, expected, end, reason, records);
            }
            Err(FrameError::Short) => {
                return after_failure(
                    bytes,
                    off,
                    expected,
                    end,
                    "the frame ends past the end of the file".into(),
                    records,
                )
            }
            Err(FrameError::Bad(reason)) => {
                return after_failure(bytes, off, expected, end, reason, records)
            }
        }
    }
}

/// The frames that still decode after a failure at `off`: candidates are
/// found by their sequence number (one linear pass, below `end`), then
/// checked whole.
fn after_failure(
    bytes: &[u8],
    off: usize,
    expected: u64,
    end: u64,
    reason: String,
    mut records: Vec<AuditRecord>,
) -> SegmentRead {
    let good_len = off as u64;
    let mut later: Vec<AuditRecord> = Vec::new();
    let mut at = off + 1;
    while at + SEQ_OFFSET + 8 <= bytes.len() {
        let seq = u64::from_le_bytes(
            bytes[at + SEQ_OFFSET..at + SEQ_OFFSET + 8]
                .try_into()
                .expect("8 bytes"),
        );
        let plausible = seq >= expected && seq < end && seq - expected < 1 << 20;
        if plausible {
            if let Ok((r, n)) = decode_frame(&bytes[at..]) {
                if later.last().is_none_or(|l: &AuditRecord| r.seq > l.seq) {
                    later.push(r);
                    at += n;
                    continue;
                }
            }
        }
        at += 1;
    }
    // A later frame written after the failing one was synced says so.
    let torn = later.iter().all(|r| r.synced_through < expected);
    if !torn {
        records.extend(later);
    }
    SegmentRead {
        records,
        failure: Some((off as u64, reason)),
        torn,
        good_len,
    }
}

/// Keeps a segment whose header is damaged in the list (never appended to,
/// never overwritten by a new segment of the same name, removed by rotation
/// in its turn).
fn keep_damaged(
    inner: &mut Inner,
    damaged: &mut Vec<String>,
    name: String,
    first_seq: u64,
    end: u64,
    len: usize,
) {
    damaged.push(name.clone());
    inner.segments.push(Segment {
        name,
        first_seq,
        end,
        len: len as u64,
        appendable: false,
    });
}

/// Opens the log's state: reads every segment, cuts a torn tail, records damage.
pub(super) fn load(storage: &dyn TableStorage) -> Result<Inner> {
    let listed = storage.list()?;
    // A crash while a torn tail was being cut leaves its temporary file.
    for n in &listed {
        if (n.starts_with("audit-") || n.starts_with(head::HEAD_FILE)) && n.ends_with(".tmp") {
            storage.remove(n)?;
        }
    }
    let mut names: Vec<(u64, String)> = listed
        .into_iter()
        .filter_map(|n| parse_segment_name(&n).map(|s| (s, n)))
        .collect();
    names.sort();
    // Each segment ends where the next one's name says it starts.
    let ends: Vec<u64> = names
        .iter()
        .skip(1)
        .map(|(s, _)| *s)
        .chain([MAX_SEQ + 1])
        .collect();
    let mut inner = Inner {
        segments: Vec::new(),
        next_seq: 1,
        synced_through: 0,
        last_hash: [0; 32],
        damage: Vec::new(),
        poisoned: None,
        syncing: None,
        head_seq: 0,
    };
    let head = match head::read(storage) {
        Ok(h) => h,
        Err(e) => {
            inner.damage.push(e);
            None
        }
    };
    // The hash of the record the head names, when it is loaded.
    let mut at_head: Option<[u8; 32]> = None;
    let count = names.len();
    let mut prev: Option<AuditRecord> = None;
    // The sequence number the newest segment expects next.
    let mut newest_next = None;
    let mut damaged: Vec<String> = Vec::new();
    for (i, ((first_seq, name), end)) in names.into_iter().zip(ends).enumerate() {
        let newest = i + 1 == count;
        let path = storage.path(&name);
        let bytes = storage.read(&name)?.unwrap_or_default();
        match parse_segment_header(&bytes) {
            Ok(seq) if seq == first_seq => {}
            Ok(seq) => {
                inner.damage.push(Error::corrupt_file(
                    &path,
                    8,
                    format!("the header names record {seq}, the file name record {first_seq}"),
                ));
                keep_damaged(&mut inner, &mut damaged, name, first_seq, end, bytes.len());
                continue;
            }
            Err(reason) => {
                if newest && bytes.len() <= SEGMENT_HEADER_LEN {
                    // Created but holding no record: a crash before its
                    // header was synced (or rot of a segment with nothing
                    // in it). Nothing is lost by removing it.
                    storage.remove(&name)?;
                    storage.sync_dir()?;
                    continue;
                }
                inner.damage.push(Error::corrupt_file(&path, 0, reason));
                keep_damaged(&mut inner, &mut damaged, name, first_seq, end, bytes.len());
                continue;
            }
        }
        if let Some(p) = &prev {
            if first_seq != p.seq + 1 {
                inner.damage.push(Error::corrupt_file(
                    &path,
                    0,
                    format!(
                        "records {}..{first_seq} are missing (a segment was lost)",
                        p.seq + 1
                    ),
                ));
                prev = None;
            }
        }
        let read = read_segment(&bytes, first_seq, end);
        let mut appendable = newest;
        if let Some((offset, reason)) = &read.failure {
            if newest && read.torn {
                tracing::warn!(file = %path.display(), offset, %reason, "audit log: torn tail cut");
                replace(storage, &name, &bytes[..read.good_len as usize])?;
            } else {
                inner
                    .damage
                    .push(Error::corrupt_file(&path, *offset, reason.clone()));
                damaged.push(name.clone());
                appendable = false;
            }
        }
        for r in &read.records {
            // What `read_segment` keeps lies in [first_seq, end) and the
            // segments are in order: the records ascend across the log.
            debug_assert!(prev.as_ref().is_none_or(|p| p.seq < r.seq) && r.seq < end);
            if let Some(p) = &prev {
                if r.seq == p.seq + 1 && r.prev_hash != p.hash {
                    inner.damage.push(Error::corrupt_file(
                        &path,
                        0,
                        format!(
                            "the hash chain breaks at record {}: record {} was changed after it was written",
                            r.seq, p.seq
                        ),
                    ));
                }
            }
            if head.is_some_and(|h| h.seq == r.seq) {
                at_head = Some(r.hash);
            }
            prev = Some(r.clone());
        }
        if newest {
            newest_next = Some(read.records.last().map_or(first_seq, |r| r.seq + 1));
        }
        let len = if newest && read.torn {
            read.good_len
        } else {
            bytes.len() as u64
        };
        inner.segments.push(Segment {
            name,
            first_seq,
            end,
            len,
            appendable,
        });
    }
    if let Some(p) = prev {
        inner.next_seq = p.seq + 1;
        inner.synced_through = p.seq;
        inner.last_hash = p.hash;
    }
    if let Some(h) = head {
        check_head(storage, &mut inner, h, at_head);
    }
    // Never reuse a sequence number a segment may hold: an empty one starts
    // where its name says; a damaged one may hold at most one record per
    // smallest frame.
    for s in &inner.segments {
        let bound = if damaged.contains(&s.name) {
            s.first_seq
                .saturating_add(s.len / record::MIN_FRAME_LEN)
                .saturating_add(1)
        } else {
            s.first_seq
        };
        inner.next_seq = inner.next_seq.max(bound);
    }
    // The newest segment takes the next record only if that record is the
    // one it expects (a reader takes its frames in sequence from its
    // header's number): otherwise the append starts a fresh segment.
    if newest_next != Some(inner.next_seq) {
        if let Some(last) = inner.segments.last_mut() {
            last.appendable = false;
        }
    }
    Ok(inner)
}

/// Compares what the open loaded with the durable head: records the head
/// says were durable and that no segment holds any more, or a record at the
/// head's number that is not the one synced, are damage; the next record is
/// numbered after the head either way (a number once durable is never
/// reused, so the gap stays visible).
fn check_head(storage: &dyn TableStorage, inner: &mut Inner, h: Head, at_head: Option<[u8; 32]>) {
    inner.head_seq = h.seq;
    let path = storage.path(head::HEAD_FILE);
    match at_head {
        Some(hash) if hash != h.hash => inner.damage.push(Error::corrupt_file(
            &path,
            0,
            format!(
                "record {} differs from the one synced (its hash is not the head's): the log was rewritten",
                h.seq
            ),
        )),
        Some(_) => {}
        None => {
            let newest = inner.next_seq - 1;
            if h.seq > newest {
                let newest_name = inner
                    .segments
                    .last()
                    .map_or_else(|| "no segment".to_string(), |s| s.name.clone());
                inner.damage.push(Error::corrupt_file(
                    &path,
                    0,
                    format!(
                        "records {}..={} were synced (the head says so) and no segment holds them (newest: {newest_name}): the newest segment was deleted or cut",
                        newest + 1,
                        h.seq
                    ),
                ));
            } else {
                // Below what was loaded, yet not loaded: in a segment kept
                // aside as damaged, which is reported already.
            }
        }
    }
    if h.seq >= inner.next_seq {
        inner.next_seq = h.seq + 1;
        if let Some(last) = inner.segments.last_mut() {
            last.appendable = false;
        }
    }
}
