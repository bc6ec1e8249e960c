//! The crate's side of `benches/compare.sh`: times what the crate does on
//! files another tool also reads, so that the script can put the two side
//! by side. Build it with `--release`; the script runs it.
//!
//! ```text
//! compare scrub <page_size> <threads> <mmap|pread> <path>...
//!     Adopts every page file found under the paths (regular files whose
//!     length is a non-zero multiple of the page size and whose name starts
//!     with a digit, as PostgreSQL's relation files do; a path that is a
//!     file is taken as it is) into an in-memory sidecar checksum table per
//!     file, then scrubs them all, on <threads> threads. Prints
//!     `files=… pages=… bytes=… adopt_s=… scrub_s=… corrupt=…`.
//! compare snapshot <page_size> <file> <dir>
//!     Takes a full snapshot of <file> into <dir>, restores it into a new
//!     file there and checks it is byte-identical. Prints
//!     `bytes=… snapshot_s=… snapshot_bytes=… restore_s=…`.
//! ```
//!
//! Work is shared among threads in runs of at most 16 MiB of one file, so
//! that one large file and a thousand small ones both keep every thread
//! busy. The stores, detectors and tables are opened once, before any
//! timing starts, as a long-lived process holds them; the times are wall
//! clock from the first page to the last.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use selfheal::prelude::*;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The most bytes of one file one thread takes at a time.
const RUN_BYTES: u64 = 16 << 20;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("scrub") if args.len() >= 5 => {
            let page_size: usize = args[1].parse()?;
            let threads: usize = args[2].parse()?;
            let mmap = match args[3].as_str() {
                "mmap" => true,
                "pread" => false,
                other => return Err(format!("scan path {other:?}: give mmap or pread").into()),
            };
            let paths: Vec<PathBuf> = args[4..].iter().map(PathBuf::from).collect();
            scrub(page_size, threads.max(1), mmap, &paths)
        }
        Some("snapshot") if args.len() == 4 => {
            snapshot(args[1].parse()?, Path::new(&args[2]), Path::new(&args[3]))
        }
        _ => Err("usage: compare scrub <page_size> <threads> <mmap|pread> <path>... | compare snapshot <page_size> <file> <dir>".into()),
    }
}

/// Page files under `path` (or `path` itself), sorted.
fn page_files(path: &Path, page_size: u64, out: &mut Vec<PathBuf>) -> Res<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        entries.sort();
        for e in entries {
            let m = std::fs::symlink_metadata(&e)?;
            let digit = e
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()));
            if m.is_dir() || (digit && m.is_file()) {
                page_files(&e, page_size, out)?;
            }
        }
    } else if meta.is_file() && meta.len() > 0 && meta.len() % page_size == 0 {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Runs of at most [`RUN_BYTES`] of each detector's pages: (detector, first, count).
fn runs(dets: &[Arc<CorruptionDetector>], page_size: usize) -> Vec<(usize, u64, u64)> {
    let per_run = (RUN_BYTES / page_size as u64).max(1);
    let mut out = Vec::new();
    for (i, d) in dets.iter().enumerate() {
        let pages = d.store().page_count();
        let mut first = 0;
        while first < pages {
            let n = per_run.min(pages - first);
            out.push((i, first, n));
            first += n;
        }
    }
    out
}

/// Runs `work` on every run, on `threads` threads taking runs in turn;
/// returns the wall time in seconds.
fn on_threads(
    threads: usize,
    runs: &[(usize, u64, u64)],
    work: &(dyn Fn(usize, u64, u64) -> Res<()> + Sync),
) -> Res<f64> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| -> Res<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> std::result::Result<(), String> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(d, first, n)) = runs.get(i) else {
                            return Ok(());
                        };
                        work(d, first, n).map_err(|e| e.to_string())?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a worker panicked")??;
        }
        Ok(())
    })?;
    Ok(started.elapsed().as_secs_f64())
}

fn scrub(page_size: usize, threads: usize, mmap: bool, paths: &[PathBuf]) -> Res<()> {
    let mut files = Vec::new();
    for p in paths {
        page_files(p, page_size as u64, &mut files)?;
    }
    if files.is_empty() {
        return Err("no page files found".into());
    }
    // One failure bus for every file's detector, as a host with many files
    // would have.
    let sink = FailureSink::new(1024);
    let mut dets = Vec::with_capacity(files.len());
    for f in &files {
        let store = Arc::new(FileStore::open(f, page_size)?.with_mmap_scan(mmap));
        let table = Arc::new(ChecksumTable::new(page_size)?);
        dets.push(Arc::new(
            CorruptionConfig::new(ChecksumPlacement::Sidecar(table))
                .failure_sink(sink.clone())
                .build(store)?,
        ));
    }
    let runs = runs(&dets, page_size);
    let pages: u64 = dets.iter().map(|d| d.store().page_count()).sum();

    let adopted = AtomicU64::new(0);
    let adopt_s = on_threads(threads, &runs, &|d, first, n| {
        let r = dets[d].adopt(AdoptOptions::new().range(PageId(first), n))?;
        adopted.fetch_add(r.pages, Ordering::Relaxed);
        Ok(())
    })?;
    assert_eq!(
        adopted.load(Ordering::Relaxed),
        pages,
        "adoption examined every page"
    );

    let scanned = AtomicU64::new(0);
    let corrupt = AtomicU64::new(0);
    let scrub_s = on_threads(threads, &runs, &|d, first, n| {
        let s = ScrubConfig::new().unlimited().build(dets[d].clone())?;
        let found = s.scan_range(PageId(first), n)?;
        scanned.fetch_add(found.pages, Ordering::Relaxed);
        corrupt.fetch_add(found.newly_corrupt + found.known_corrupt, Ordering::Relaxed);
        Ok(())
    })?;
    assert_eq!(
        scanned.load(Ordering::Relaxed),
        pages,
        "the scrub examined every page"
    );
    println!(
        "files={} pages={pages} bytes={} adopt_s={adopt_s:.4} scrub_s={scrub_s:.4} corrupt={}",
        files.len(),
        pages * page_size as u64,
        corrupt.load(Ordering::Relaxed)
    );
    Ok(())
}

fn snapshot(page_size: usize, file: &Path, dir: &Path) -> Res<()> {
    let store = FileStore::open(file, page_size)?;
    let pages = store.page_count();
    let snaps = SnapshotConfig::new(dir.join("snapshots"), page_size).build()?;
    let gate = WriteGate::new();
    let started = Instant::now();
    let taken = {
        let pause = gate.pause();
        snaps.take_snapshot(
            Consistency::Paused {
                store: &store,
                pause: &pause,
                lsn: Lsn(1),
            },
            SnapshotRequest::new(SnapshotKind::Full),
        )?
    };
    let snapshot_s = started.elapsed().as_secs_f64();
    let target = FileStore::create(dir.join("restored"), page_size, pages)?;
    let started = Instant::now();
    snaps.restore(taken.info.id, &target)?;
    let restore_s = started.elapsed().as_secs_f64();
    let (a, b) = (std::fs::read(file)?, std::fs::read(dir.join("restored"))?);
    if a != b {
        return Err("the restored file differs from the original".into());
    }
    println!(
        "bytes={} snapshot_s={snapshot_s:.4} snapshot_bytes={} restore_s={restore_s:.4}",
        pages * page_size as u64,
        taken.info.file_bytes
    );
    Ok(())
}
