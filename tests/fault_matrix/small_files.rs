//! Rows for the library's small framed files: the run marker, the scrub
//! cursor and the learned-remedy file. Each is the crate's framed file
//! (`fsutil`): a 24-byte header — magic 0..4, version 4..8, payload length
//! 8..16, payload CRC32 16..20, header CRC32 20..24 — then the payload.

use std::path::Path;
use std::sync::Arc;

use selfheal::crash::{RunMarker, RunVerdict};
use selfheal::healer::Learner;
use selfheal::testing::seal_numbered_pages;
use selfheal::{
    ChecksumPlacement, CorruptionConfig, FailureKind, MemStore, PageStore, ScrubConfig,
};

use crate::harness::{Built, Outcome, Spots};

/// Spots in a framed file whose payload is `payload_len` bytes, with the
/// body byte at `body` (from the start of the file).
fn framed_spots(payload_len: u64, body: u64) -> Spots {
    Spots {
        header_cut: 12,
        record_cut: 24 + payload_len / 2,
        header: 8,
        body,
        checksum: 16,
        sector: 0,
    }
}

/// Whether nothing at all is at `path` (not even a dangling link).
fn absent(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_err()
}

/// Run marker: run 1 stopped cleanly, run 2 crashed (dropped without
/// `stop`). Model: the next open says run 2 crashed, in this process.
pub fn run_marker(dir: &Path) -> Built {
    let (m, _) = RunMarker::open(dir).unwrap();
    m.stop().unwrap();
    let (mut m, _) = RunMarker::open(dir).unwrap();
    m.refresh().unwrap();
    drop(m);
    let file = dir.join("selfheal.run");
    let len = std::fs::metadata(&file).unwrap().len();
    assert_eq!(len, 24 + 29);
    let dir = dir.to_path_buf();
    Built {
        file,
        // Payload byte 1: the run number.
        spots: framed_spots(29, 24 + 1),
        reopen: Box::new(move || match RunMarker::open(&dir) {
            Err(e) => Outcome::Refused(e),
            Ok((_, RunVerdict::Crashed { run: 2, pid, .. })) if pid == std::process::id() => {
                Outcome::Recovered
            }
            Ok((_, RunVerdict::Unknown { .. })) => Outcome::Fallback("verdict Unknown (a crash)"),
            Ok((_, v)) => Outcome::Wrong(format!("verdict {v}")),
        }),
    }
}

const CURSOR_PAGES: u64 = 16;

/// Scrub cursor: one full pass over 16 sealed pages, then 8 pages of the
/// next. Model: the next scrubber resumes at page 8 with 1 pass done.
pub fn scrub_cursor(dir: &Path) -> Built {
    let file = dir.join("scrub.cursor");
    let ps = 256;
    let store: Arc<dyn PageStore> = Arc::new(MemStore::new(ps, CURSOR_PAGES).unwrap());
    let det = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .build(store)
            .unwrap(),
    );
    seal_numbered_pages(&det, CURSOR_PAGES).unwrap();
    let s = ScrubConfig::new()
        .unlimited()
        .batch_pages(4)
        .pass_interval(std::time::Duration::from_millis(1))
        .cursor_path(&file)
        .build(det.clone())
        .unwrap();
    let mut now = 0;
    for _ in 0..100 {
        let p = s.progress().unwrap();
        if p.passes_completed == 1 && p.position == 8 {
            break;
        }
        s.step(now).unwrap();
        now += 1_000_000_000;
    }
    let p = s.progress().unwrap();
    assert_eq!(
        (p.passes_completed, p.position),
        (1, 8),
        "the scrubber stopped mid-pass"
    );
    s.persist_cursor().unwrap();
    drop(s);
    Built {
        spots: framed_spots(24, 24 + 1),
        reopen: Box::new({
            let file = file.clone();
            move || {
                let s = match ScrubConfig::new().cursor_path(&file).build(det) {
                    Err(e) => return Outcome::Refused(e),
                    Ok(s) => s,
                };
                let p = match s.progress() {
                    Err(e) => return Outcome::Refused(e),
                    Ok(p) => p,
                };
                let reported = s
                    .failures()
                    .try_iter()
                    .any(|f| f.kind == FailureKind::ScrubCursorFailed);
                match (p.position, p.passes_completed, reported) {
                    (8, 1, false) => Outcome::Recovered,
                    (0, 0, true) => Outcome::Fallback("scan from page 0, reported"),
                    (0, 0, false) if absent(&file) => {
                        Outcome::Fallback("scan from page 0 (no file)")
                    }
                    (pos, passes, rep) => {
                        Outcome::Wrong(format!("position {pos}, passes {passes}, reported {rep}"))
                    }
                }
            }
        }),
        file,
    }
}

/// Learned-remedy file: three problems, five remedies, successes and
/// failures. Model: the loaded records equal the saved ones.
pub fn learned_remedies(dir: &Path) -> Built {
    let file = dir.join("learned");
    let mut l = Learner::new(7, 64);
    let cases = [
        ("corrupt_page", "repair_from_replica", [true, true, false]),
        ("corrupt_page", "restore_from_snapshot", [false, true, true]),
        ("crashed_txn", "rollback", [true, true, true]),
        ("worker_died", "restart_worker", [false, false, true]),
        ("worker_died", "escalate", [true, false, false]),
    ];
    for (problem, remedy, outcomes) in cases {
        for ok in outcomes {
            l.record(problem, remedy, ok);
        }
    }
    l.save(&file).unwrap();
    let model = format!("{:?}", sorted(&l));
    let len = std::fs::metadata(&file).unwrap().len();
    Built {
        // The first record's problem name, past the count (4) and its
        // length (2).
        spots: framed_spots(len - 24, 24 + 4 + 2),
        reopen: Box::new({
            let file = file.clone();
            move || {
                let (l, problem) = Learner::load(&file, 7, 64);
                let got = format!("{:?}", sorted(&l));
                match problem {
                    Some(_) if l.records().is_empty() => {
                        Outcome::Fallback("cold-start order, warned")
                    }
                    None if got == model => Outcome::Recovered,
                    None if l.records().is_empty() && absent(&file) => {
                        Outcome::Fallback("cold-start order (no file)")
                    }
                    Some(e) => Outcome::Wrong(format!("records kept beside an error: {e}")),
                    None => Outcome::Wrong(format!("records {got}")),
                }
            }
        }),
        file,
    }
}

fn sorted(l: &Learner) -> Vec<String> {
    let mut v: Vec<String> = l
        .records()
        .into_iter()
        .map(|(p, r, t)| format!("{p}/{r}/{t:?}"))
        .collect();
    v.sort();
    v
}
