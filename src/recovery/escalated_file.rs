//! The escalated-incidents file (`dir/escalated`): the escalations the
//! manager keeps until the host acknowledges them, read back after a
//! restart (see the manager's "Escalation" and
//! [`AutoRecoveryManager::escalated`](super::AutoRecoveryManager::escalated)).
//!
//! # Format
//! A framed file (the crate's framed-file layout: magic `SHRE`, version 1,
//! payload length, payload CRC32, header CRC32) replaced atomically
//! (`escalated.tmp`, fsync, rename, fsync of the directory). The payload,
//! little-endian:
//!
//! | size | field |
//! |-----:|-------|
//! | 4 | number of incidents `n` (at most [`MAX_REPORTS`]) |
//! | … | `n` incidents, each: |
//! | … | the incident id and its first failure, encoded as in the open-incidents file ([`persist`](super::persist)), the failure's age at the save at `+10` |
//! | 1 | the incident's priority (0 = P0 … 3 = P3) |
//! | 8 | the escalation's age at the save, ns |
//! | 4 + `r` | the reason's length (at most 4 096), then UTF-8 |
//! | 4 + `t` | the report's length (at most 65 536), then UTF-8 |
//! | 8 | reports joined so far |
//! | 4 | number of pages still escalated `p` (at most 65 536) |
//! | 8 × `p` | the page ids |
//!
//! Ages are rebased onto the reading clock, as the open-incidents file's
//! are.
//!
//! # Crash analysis
//! A crash before the rename leaves the previous file: an escalation made
//! since is lost from it (its page, still fenced by the suspect registry,
//! is tried and escalated once more), an acknowledgement made since is
//! undone (the host sees the incident again). After the rename the new
//! file stands. A damaged file is a typed error the manager turns into a
//! warning ([`StartupReport::escalations_warning`](super::StartupReport::escalations_warning)):
//! it starts without the previous run's escalations. No file is no
//! escalation (a first run, or one that escalated nothing).

use std::path::Path;

use crate::error::Result;
use crate::fsutil::{atomic_write, decode_framed, encode_framed, read_optional};
use crate::types::{PageId, Priority};

use super::escalated::{EscalatedIncident, MAX_REPORTS};
use super::persist::{decode_incident, encode_incident, Reader};

const MAGIC: [u8; 4] = *b"SHRE";
const VERSION: u32 = 1;
const REASON_MAX: usize = 4_096;
const REPORT_MAX: usize = 65_536;
const PAGES_MAX: u32 = 65_536;

fn put_text(out: &mut Vec<u8>, s: &str, max: usize) {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u32).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// The file's bytes (frame included) for `list`, ages taken at `now_ns`.
pub(crate) fn encode_file(list: &[EscalatedIncident], now_ns: u64) -> Vec<u8> {
    let list = &list[list.len().saturating_sub(MAX_REPORTS)..];
    let mut out = Vec::new();
    out.extend_from_slice(&(list.len() as u32).to_le_bytes());
    for e in list {
        encode_incident(
            &mut out,
            e.id,
            &e.failure,
            now_ns.saturating_sub(e.failure.detected_at_ns),
        );
        out.push(e.priority as u8);
        out.extend_from_slice(&now_ns.saturating_sub(e.escalated_at_ns).to_le_bytes());
        put_text(&mut out, &e.reason, REASON_MAX);
        put_text(&mut out, &e.report, REPORT_MAX);
        out.extend_from_slice(&e.joined.to_le_bytes());
        let pages = &e.pages[..e.pages.len().min(PAGES_MAX as usize)];
        out.extend_from_slice(&(pages.len() as u32).to_le_bytes());
        for p in pages {
            out.extend_from_slice(&p.0.to_le_bytes());
        }
    }
    encode_framed(MAGIC, VERSION, &out)
}

/// Writes `list` crash-safely to `path`.
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) when the file cannot be written.
pub(crate) fn save(path: &Path, list: &[EscalatedIncident], now_ns: u64) -> Result<()> {
    atomic_write(path, &encode_file(list, now_ns))
}

/// Reads the escalated incidents saved in `path` (none without a file),
/// their times rebased onto `now_ns`.
///
/// # Errors
/// [`Error::CorruptFile`](crate::Error::CorruptFile) /
/// [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion) for a
/// damaged file; [`Error::Io`](crate::Error::Io) when it cannot be read.
pub(crate) fn load(path: &Path, now_ns: u64) -> Result<Vec<EscalatedIncident>> {
    match read_optional(path)? {
        Some(bytes) => decode_file(path, &bytes, now_ns),
        None => Ok(Vec::new()),
    }
}

/// Decodes the bytes of an escalated-incidents file read from `path`.
///
/// # Errors
/// [`Error::CorruptFile`](crate::Error::CorruptFile) /
/// [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion) for
/// anything but a well-formed file.
pub(crate) fn decode_file(
    path: &Path,
    bytes: &[u8],
    now_ns: u64,
) -> Result<Vec<EscalatedIncident>> {
    let (_, payload) = decode_framed(path, bytes, MAGIC, VERSION)?;
    let mut r = Reader {
        path,
        buf: payload,
        at: 0,
    };
    let n = r.u32()?;
    if n as usize > MAX_REPORTS {
        return Err(r.bad(format!(
            "{n} escalated incidents is more than {MAX_REPORTS}"
        )));
    }
    let mut v = Vec::new();
    for _ in 0..n {
        let (id, failure) = decode_incident(&mut r, now_ns)?;
        let priority = match r.u8()? {
            0 => Priority::P0,
            1 => Priority::P1,
            2 => Priority::P2,
            3 => Priority::P3,
            t => return Err(r.bad(format!("unknown priority {t}"))),
        };
        let age = r.u64()?;
        let reason = text(&mut r, REASON_MAX, "reason")?;
        let report = text(&mut r, REPORT_MAX, "report")?;
        let joined = r.u64()?;
        let np = r.u32()?;
        if np > PAGES_MAX {
            return Err(r.bad(format!("{np} pages is more than {PAGES_MAX}")));
        }
        if (np as usize).saturating_mul(8) > r.buf.len() - r.at {
            return Err(r.bad(format!("{np} pages do not fit in the payload")));
        }
        let mut pages = Vec::with_capacity(np as usize);
        for _ in 0..np {
            pages.push(PageId(r.u64()?));
        }
        v.push(EscalatedIncident {
            id,
            failure,
            priority,
            reason,
            report,
            escalated_at_ns: now_ns.saturating_sub(age),
            pages,
            joined,
            previous_run: true,
        });
    }
    if r.at != payload.len() {
        return Err(r.bad("bytes after the last escalated incident".into()));
    }
    Ok(v)
}

fn text(r: &mut Reader<'_>, max: usize, what: &str) -> Result<String> {
    let n = r.u32()? as usize;
    if n > max {
        return Err(r.bad(format!("a {what} of {n} bytes is more than {max}")));
    }
    r.text(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Failure, FailureKind, Source};
    use proptest::prelude::*;

    fn one(id: u64, pages: Vec<PageId>, at: u64) -> EscalatedIncident {
        let mut f = Failure::new(
            Source::CorruptionDetector,
            FailureKind::CorruptPage {
                page: pages.first().copied().unwrap_or(PageId(0)),
            },
            "bad page",
            at.saturating_sub(5),
        );
        f.priority = Priority::P0;
        EscalatedIncident {
            id,
            failure: f,
            priority: Priority::P0,
            reason: "nothing healed it".into(),
            report: "[P0] incident — a report\n  tried repair: failed".into(),
            escalated_at_ns: at,
            pages,
            joined: 3,
            previous_run: true,
        }
    }

    #[test]
    fn a_saved_list_reads_back_rebased() {
        let list = vec![one(4, vec![PageId(3), PageId(9)], 100), one(7, vec![], 150)];
        let bytes = encode_file(&list, 200);
        // Read by a clock at 1 000: every time moves by 800.
        let back = decode_file(Path::new("escalated"), &bytes, 1_000).unwrap();
        assert_eq!(back.len(), 2);
        for (a, b) in list.iter().zip(&back) {
            assert_eq!(b.id, a.id);
            assert_eq!(b.escalated_at_ns, a.escalated_at_ns + 800);
            assert_eq!(b.failure.detected_at_ns, a.failure.detected_at_ns + 800);
            assert_eq!(
                (&b.pages, &b.reason, &b.report, b.joined),
                (&a.pages, &a.reason, &a.report, a.joined)
            );
            assert_eq!(b.failure.kind, a.failure.kind);
        }
    }

    proptest! {
        /// Any damage is a typed error or a list, never a panic.
        #[test]
        fn damaged_bytes_never_panic(flips in prop::collection::vec((0usize..400, any::<u8>()), 1..8), cut in 0usize..400) {
            // Damage inside a valid frame: the payload's decoder sees it.
            let list = vec![one(4, vec![PageId(3), PageId(9)], 100)];
            let framed = encode_file(&list, 200);
            let mut payload = framed[crate::fsutil::FRAME_HEADER_LEN..].to_vec();
            for (at, x) in flips {
                let n = payload.len();
                payload[at % n] ^= x;
            }
            payload.truncate(cut.min(payload.len()));
            let bytes = encode_framed(MAGIC, VERSION, &payload);
            let _ = decode_file(Path::new("escalated"), &bytes, 1_000);
        }
    }
}
