//! Goal: recovery's memory does not grow with the undo journal's length: a
//! 1 GiB journal (committed history, and a transaction in flight at the
//! crash whose undo is twice the recovery batch) recovers with a peak
//! resident set of at most 64 MiB, and restores every page it wrote.
//! Method: the test writes the journal on real files, then re-executes its
//! own binary (`child_recovers`, selected by an environment variable) to do
//! nothing but the recovery, and reads the child's peak resident set
//! (`VmHWM` of `/proc/self/status`, which the child prints), so that the
//! parent's own allocations and other tests cannot pollute the peak.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use selfheal::rollback::RawPages;
use selfheal::{FileStore, PageId, PageStore, RollbackConfig};

const CHILD_ENV: &str = "SELFHEAL_RECOVERY_MEMORY_CHILD_DIR";
/// Large pages and whole-page images keep the record count (and the debug
/// build's time) low for a journal of 1 GiB.
const PAGE: usize = 64 << 10;
const PAGES: u64 = 512;
const SEGMENT: u64 = 8 << 20;
const JOURNAL: u64 = 1 << 30;
const PEAK_MAX_KIB: u64 = 64 << 10;

fn initial(page: u64) -> Vec<u8> {
    vec![(page % 251) as u8; PAGE]
}

fn written(page: u64) -> Vec<u8> {
    vec![(page % 251) as u8 ^ 0xFF; PAGE]
}

/// The peak resident set of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// The child's work: recover the journal in the directory the variable
/// names, check the pages, print the peak. Without the variable (an
/// ordinary test run) there is no child to be, and it returns at once.
#[test]
fn child_recovers() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let store = Arc::new(FileStore::open(dir.join("pages"), PAGE).unwrap());
    let mgr = RollbackConfig::new(dir.join("journal"))
        .segment_size_bytes(SEGMENT)
        .build(RawPages::shared(store.clone()))
        .unwrap();
    let report = mgr.recovery_report().clone();
    assert_eq!(report.rolled_back.len(), 1, "{report:?}");
    assert_eq!(report.rolled_back[0].undo_entries, PAGES);
    assert_eq!(report.pages_written, PAGES);
    assert!(report.committed_seen > 0);
    let mut buf = vec![0u8; PAGE];
    for p in 0..PAGES {
        store.read_page(PageId(p), &mut buf).unwrap();
        assert!(buf == initial(p), "page {p} not restored");
    }
    mgr.stop().unwrap();
    println!(
        "records {} peak_kib {}",
        report.records_read,
        peak_rss_kib()
    );
}

#[test]
fn a_1_gib_journal_recovers_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::create(dir.path().join("pages"), PAGE, PAGES).unwrap());
    for p in 0..PAGES {
        store.write_page(PageId(p), &initial(p)).unwrap();
    }
    store.sync().unwrap();
    let mgr = RollbackConfig::new(dir.path().join("journal"))
        .segment_size_bytes(SEGMENT)
        .build(RawPages::shared(store.clone()))
        .unwrap();
    // The loser begins first, so that its begin record is in the oldest
    // segment and every segment must be kept; its writes come last.
    let loser = mgr.begin().unwrap();
    let (before, after) = (vec![1u8; PAGE], vec![2u8; PAGE]);
    let per_txn = 32;
    let txns = JOURNAL / (per_txn * 2 * PAGE as u64);
    for i in 0..txns {
        let t = mgr.begin().unwrap();
        for k in 0..per_txn {
            mgr.record_undo(t, PageId((i + k) % PAGES), 0, &before, &after)
                .unwrap();
        }
        mgr.commit(t).unwrap();
    }
    // 512 whole-page writes: 64 MiB of images, four times the default
    // recovery batch.
    for p in 0..PAGES {
        mgr.write(loser, PageId(p), 0, &written(p)).unwrap();
    }
    store.sync().unwrap();
    let bytes = mgr.stats().journal.bytes;
    assert!(bytes >= JOURNAL, "journal holds {bytes} bytes");
    mgr.stop().unwrap();
    drop(mgr);

    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_recovers",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak: u64 = stdout
        .split_whitespace()
        .skip_while(|w| *w != "peak_kib")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no peak in the child's output: {stdout}"));
    eprintln!("recovery of a {bytes}-byte journal: peak resident {peak} KiB");
    assert!(
        peak <= PEAK_MAX_KIB,
        "recovery of a {bytes}-byte journal peaked at {peak} KiB resident (limit {PEAK_MAX_KIB} KiB)"
    );
}
