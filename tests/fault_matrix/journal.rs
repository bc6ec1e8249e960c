//! Rows for the undo journal: the newest segment's 40-byte header, one of
//! its records (17-byte frame header: length 0..4, CRC32 4..8, LSN 8..16,
//! type 16, then the payload), and the state file (the crate's framed file
//! around 24 bytes).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use selfheal::rollback::PageWriter;
use selfheal::{PageId, RollbackConfig};

use crate::harness::{read, Built, Outcome, Spots};
use crate::pages::{detector, read_all, write_all, Placement};

/// A journal of several segments: six committed transactions, each
/// changing two pages, and one left in flight (its undo durable, the
/// manager stopped). Returns the journal directory and the reopen, whose
/// model is: the committed changes stand, the in-flight one is rolled back.
fn journal(dir: &Path, placement: Placement) -> (PathBuf, Box<dyn FnOnce() -> Outcome + Send>) {
    let jdir = dir.join("journal");
    let det = detector(placement);
    write_all(&det, 1);
    let writer: Arc<dyn PageWriter> = det.clone();
    let mgr = RollbackConfig::new(&jdir)
        .segment_size_bytes(1024)
        .build(writer.clone())
        .unwrap();
    for i in 0..6u64 {
        let t = mgr.begin().unwrap();
        mgr.write(t, PageId(i), 16, &[0xC0 + i as u8; 64]).unwrap();
        mgr.write(t, PageId(i + 6), 100, &[0xD0 + i as u8; 64])
            .unwrap();
        mgr.commit(t).unwrap();
    }
    let model = read_all(&det);
    let t = mgr.begin().unwrap();
    mgr.write(t, PageId(14), 0, &[0xEE; 48]).unwrap();
    mgr.write(t, PageId(15), 8, &[0xEF; 48]).unwrap();
    mgr.stop().unwrap();
    drop(mgr);
    let j = jdir.clone();
    let reopen = Box::new(move || {
        let mgr = match RollbackConfig::new(&j)
            .segment_size_bytes(1024)
            .build(writer)
        {
            Err(e) => return Outcome::Refused(e),
            Ok(m) => m,
        };
        let report = mgr.recovery_report();
        let got = read_all(&det);
        let differ: Vec<usize> = (0..got.len()).filter(|&i| got[i] != model[i]).collect();
        let committed_lost = differ.iter().any(|&i| i < 12);
        let out = match (
            report.damage.is_empty(),
            differ.is_empty() && report.blocked.is_empty(),
        ) {
            (true, true) => Outcome::Recovered,
            (false, true) => Outcome::Fallback("damage cut and reported, state intact"),
            (false, false) if committed_lost => {
                Outcome::Fallback("damage cut and reported, committed changes rolled back")
            }
            (false, false) => {
                Outcome::Fallback("damage cut and reported, the in-flight change stays")
            }
            (true, false) => Outcome::Wrong(format!(
                "pages differ from the model, rolled back {:?}, blocked {}",
                report.rolled_back.len(),
                report.blocked.len()
            )),
        };
        let _ = mgr.stop();
        out
    });
    (jdir, reopen)
}

fn segments(jdir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(jdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn newest_segment(jdir: &Path) -> PathBuf {
    let segs = segments(jdir);
    assert!(segs.len() >= 3, "several segments: {segs:?}");
    segs.last().unwrap().clone()
}

/// The newest segment, damaged in its header (segment number, LSN and
/// counters at 8..32, CRC32 at 36).
pub fn segment_header(dir: &Path, placement: Placement) -> Built {
    let (jdir, reopen) = journal(dir, placement);
    let file = newest_segment(&jdir);
    Built {
        spots: Spots {
            header_cut: 20,
            record_cut: 40 + 10,
            header: 16,
            body: 40 + 17 + 2,
            checksum: 36,
            sector: 0,
        },
        file,
        reopen,
    }
}

/// The frames of a segment: (offset, frame length).
fn frames(bytes: &[u8]) -> Vec<(u64, u64)> {
    let mut at = 40usize;
    let mut v = Vec::new();
    while at + 17 <= bytes.len() {
        let n = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if at + 17 + n > bytes.len() {
            break;
        }
        v.push((at as u64, (17 + n) as u64));
        at += 17 + n;
    }
    v
}

/// One record of the newest segment that holds an undo record (the
/// largest frame), damaged in its frame.
pub fn segment_record(dir: &Path, placement: Placement) -> Built {
    let (jdir, reopen) = journal(dir, placement);
    let file = newest_segment(&jdir);
    let fr = frames(&read(&file));
    let &(at, len) = fr.iter().max_by_key(|(_, l)| *l).unwrap();
    Built {
        spots: Spots {
            header_cut: at + 8,
            record_cut: at + len / 2,
            header: at + 8,
            body: at + 17 + (len - 17) / 2,
            checksum: at + 4,
            sector: at + len / 2,
        },
        file,
        reopen,
    }
}

/// The state file: which segments must exist (oldest, newest, and the
/// end of the id reservation).
pub fn state_file(dir: &Path, placement: Placement) -> Built {
    let (jdir, reopen) = journal(dir, placement);
    let file = jdir.join("undo.state");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 48);
    Built {
        spots: Spots {
            header_cut: 12,
            record_cut: 24 + 12,
            header: 8,
            body: 24 + 8,
            checksum: 16,
            sector: 0,
        },
        file,
        reopen,
    }
}
