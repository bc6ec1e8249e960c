//! Rows for the durable sidecar checksum table: its base file (the crate's
//! framed file; payload: page size 0..4, generation 4..12, first log
//! sequence number 12..20, entry count 20..28, then 8 bytes per page) and
//! its log (36-byte header, CRC32 at 32..36, then frames: length 0..8,
//! count 8..16, first sequence number 16..24, CRC32 24..28, records, CRC32
//! of the frame in its last 4 bytes; each frame followed by its mirror, an
//! identical copy).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use selfheal::{ChecksumPlacement, ChecksumTable, CorruptionConfig, MemStore, PageId, PageStore};

use crate::harness::{read, Built, Outcome, Spots};
use crate::pages::{content, PAGES, PS};

/// A table whose base holds every page at version 1 (written, synced and
/// compacted) and whose log holds pages 0..8 rewritten at version 2
/// (synced and flushed). Model: each page verifies with its newest bytes,
/// and pages 0..8 no longer accept version 1.
fn table(dir: &Path) -> (PathBuf, Box<dyn FnOnce() -> Outcome + Send>) {
    let path = dir.join("sums");
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    {
        let table = Arc::new(ChecksumTable::open(&path, PS).unwrap());
        let s: Arc<dyn PageStore> = store.clone();
        let det = CorruptionConfig::new(ChecksumPlacement::Sidecar(table.clone()))
            .build(s)
            .unwrap();
        for p in 0..PAGES {
            det.write_sealed(PageId(p), &mut content(p, 1)).unwrap();
        }
        det.sync().unwrap();
        table.compact().unwrap();
        for p in 0..PAGES / 2 {
            det.write_sealed(PageId(p), &mut content(p, 2)).unwrap();
        }
        det.sync().unwrap();
        table.flush().unwrap();
    }
    let p = path.clone();
    let reopen = Box::new(move || {
        let table = match ChecksumTable::open(&p, PS) {
            Err(e) => return Outcome::Refused(e),
            Ok(t) => t,
        };
        let mut wrong = Vec::new();
        for page in 0..PAGES {
            let mut now = vec![0u8; PS];
            store.read_page(PageId(page), &mut now).unwrap();
            if let Err(e) = table.verify(PageId(page), &now) {
                wrong.push(format!("page {page} rejects its bytes: {e}"));
            }
            if page < PAGES / 2 && table.verify(PageId(page), &content(page, 1)).is_ok() {
                wrong.push(format!("page {page} accepts its old bytes"));
            }
        }
        // A log cut short is reported in the table's statistics (and
        // logged); what it costs is documented: a lost settle makes pages
        // accept older bytes again, a lost intent makes them fail.
        let torn = table.stats().torn_bytes_at_open > 0;
        let rejects = wrong.iter().filter(|w| w.contains("rejects")).count();
        match (wrong.is_empty(), torn, rejects) {
            (true, false, _) => Outcome::Recovered,
            (true, true, _) => Outcome::Fallback("torn tail cut, state intact"),
            (false, true, 0) => {
                Outcome::Fallback("torn tail cut: settles lost, pages accept older bytes")
            }
            (false, true, _) => {
                Outcome::Fallback("torn tail cut: intents lost, pages fail verification")
            }
            (false, false, _) => Outcome::Wrong(format!(
                "nothing reported; {} pages reject their bytes, {} accept old bytes",
                rejects,
                wrong.len() - rejects
            )),
        }
    });
    (path, reopen)
}

pub fn base_file(dir: &Path) -> Built {
    let (path, reopen) = table(dir);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 24 + 28 + 8 * PAGES);
    Built {
        spots: Spots {
            header_cut: 12,
            record_cut: 24 + 28 + 8 * 8 + 4,
            header: 8,
            body: 24 + 28 + 8 * 3,
            checksum: 16,
            sector: 0,
        },
        file: path,
        reopen,
    }
}

pub fn log_file(dir: &Path) -> Built {
    let (_base, reopen) = table(dir);
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("sums.log-"))
        .collect();
    logs.sort();
    let file = logs.pop().expect("a log");
    let bytes = read(&file);
    assert!(
        bytes.len() > 36 + 32,
        "the log holds frames: {} bytes",
        bytes.len()
    );
    let first = u64::from_le_bytes(bytes[36..44].try_into().unwrap());
    Built {
        spots: Spots {
            header_cut: 18,
            record_cut: 36 + first / 2,
            header: 16,
            body: 36 + 28 + 2,
            checksum: 36 + first - 4,
            sector: 0,
        },
        file,
        reopen,
    }
}
