//! The audit log's row: a segment (16-byte header: magic 0..4, version
//! 4..8, first sequence number 8..16; then frames: body length 0..4, CRC32
//! 4..8, body) in the middle of a log of several segments.

use std::path::{Path, PathBuf};

use selfheal::audit::{AuditConfig, AuditEntry, AuditQuery, EntryKind};

use crate::harness::{Built, Outcome, Spots};

const RECORDS: u64 = 40;

fn entry(i: u64) -> AuditEntry {
    AuditEntry {
        incident: Some(1 + i / 4),
        target: format!("page {i}"),
        kind: if i.is_multiple_of(2) {
            EntryKind::Detected
        } else {
            EntryKind::Acted
        },
        text: format!("record {i}: {}", "details ".repeat(25)),
    }
}

/// Forty records in batches of four, synced after each, over segments of
/// 4 KiB; the middle segment is damaged. Model: every record reads back in
/// order (or, with damage reported, the records outside the damage do).
pub fn segment(dir: &Path) -> Built {
    let adir = dir.join("audit");
    // On a clock that stands still: the frames' lengths (their times are
    // varints) and so the segments' layout are the same in every run.
    let clock = std::sync::Arc::new(selfheal::ManualClock::new());
    let cfg = move || AuditConfig::new().segment_bytes(4096).clock(clock.clone());
    let model: Vec<AuditEntry> = (0..RECORDS).map(entry).collect();
    {
        let log = cfg().open(&adir).unwrap();
        for batch in model.chunks(4) {
            log.append(batch).unwrap();
            log.sync().unwrap();
        }
    }
    // The segments only (the directory also holds its owner's lock file).
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&adir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("audit-"))
        })
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "several segments: {segs:?}");
    let file = segs[segs.len() / 2].clone();
    let bytes = crate::harness::read(&file);
    let first = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as u64;
    let second_at = 16 + 8 + first;
    Built {
        spots: Spots {
            header_cut: 8,
            record_cut: second_at + 40,
            header: 8,
            body: 16 + 8 + 20,
            checksum: 16 + 4,
            sector: 0,
        },
        file,
        reopen: Box::new(move || {
            let log = match cfg().open(&adir) {
                Err(e) => return Outcome::Refused(e),
                Ok(l) => l,
            };
            let got: Vec<AuditEntry> = match log.query(&AuditQuery::all()) {
                Err(e) => return Outcome::Refused(e),
                Ok(r) => r.into_iter().map(|r| r.entry).collect(),
            };
            let damage = log.damage();
            if damage.is_empty() && got == model {
                return Outcome::Recovered;
            }
            // With damage reported, the records read must be the model's
            // minus what the damage covers, in order.
            let mut it = model.iter();
            let subsequence = got.iter().all(|g| it.any(|m| m == g));
            match (damage.is_empty(), subsequence) {
                (false, true) if got.len() < model.len() => {
                    Outcome::Fallback("damage reported, the other records read")
                }
                (false, true) => Outcome::Fallback("damage reported, every record read"),
                _ => Outcome::Wrong(format!(
                    "{} records of {}, damage reported: {}",
                    got.len(),
                    model.len(),
                    damage.len()
                )),
            }
        }),
    }
}

/// The records of [`segment`]'s log, the file to damage chosen by `pick`
/// among the log's files (segments sorted, then the head file).
fn log_with(dir: &Path, pick: fn(&[PathBuf], &Path) -> (PathBuf, Spots)) -> Built {
    let adir = dir.join("audit");
    // On a clock that stands still: the frames' lengths (their times are
    // varints) and so the segments' layout are the same in every run.
    let clock = std::sync::Arc::new(selfheal::ManualClock::new());
    let cfg = move || AuditConfig::new().segment_bytes(4096).clock(clock.clone());
    let model: Vec<AuditEntry> = (0..RECORDS).map(entry).collect();
    {
        let log = cfg().open(&adir).unwrap();
        for batch in model.chunks(4) {
            log.append(batch).unwrap();
            log.sync().unwrap();
        }
    }
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&adir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("audit-"))
        })
        .collect();
    segs.sort();
    let (file, spots) = pick(&segs, &adir);
    Built {
        spots,
        file,
        reopen: Box::new(move || {
            let log = match cfg().open(&adir) {
                Err(e) => return Outcome::Refused(e),
                Ok(l) => l,
            };
            let got: Vec<AuditEntry> = match log.query(&AuditQuery::all()) {
                Err(e) => return Outcome::Refused(e),
                Ok(r) => r.into_iter().map(|r| r.entry).collect(),
            };
            let damage = log.damage();
            if damage.is_empty() && got == model {
                return Outcome::Recovered;
            }
            let mut it = model.iter();
            let subsequence = got.iter().all(|g| it.any(|m| m == g));
            match (damage.is_empty(), subsequence) {
                (false, true) if got.len() < model.len() => {
                    Outcome::Fallback("damage reported, the other records read")
                }
                (false, true) => Outcome::Fallback("damage reported, every record read"),
                _ => Outcome::Wrong(format!(
                    "{} records of {}, damage reported: {}",
                    got.len(),
                    model.len(),
                    damage.len()
                )),
            }
        }),
    }
}

/// The newest segment (the one appends go to): a cut or a deletion of it
/// leaves frames that all decode, so only the durable head can tell that
/// synced records are gone. Model as [`segment`].
pub fn newest_segment(dir: &Path) -> Built {
    log_with(dir, |segs, _| {
        let file = segs.last().unwrap().clone();
        let bytes = crate::harness::read(&file);
        let first = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as u64;
        let second_at = 16 + 8 + first;
        let spots = Spots {
            header_cut: 8,
            record_cut: second_at + 40,
            header: 8,
            body: 16 + 8 + 20,
            checksum: 16 + 4,
            sector: 0,
        };
        (file, spots)
    })
}

/// The durable head (`audit.head`: the crate's framed file, magic `SHAH`;
/// payload: the newest synced record's number 0..8 and hash 8..40). Model
/// as [`segment`]: every record still reads; damage to the head is
/// reported, its deletion is not detectable (a log without a head is not
/// checked).
pub fn head_file(dir: &Path) -> Built {
    log_with(dir, |_, adir| {
        let spots = Spots {
            header_cut: 12,
            record_cut: 24 + 20,
            header: 8,
            body: 24 + 3,
            checksum: 16,
            sector: 0,
        };
        (adir.join("audit.head"), spots)
    })
}
