//! The tour: a file-backed store with a replica, pages corrupted in several
//! different ways, a background scrub that finds them, a repair that fixes
//! them, and a second scrub that proves it. Exits non-zero if anything is left
//! unrepaired.
//!
//! Run: `cargo run --release --example quickstart`

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal::prelude::*;
use selfheal::testing::{Damage, FaultyStore, WriteFault};

const PAGE_SIZE: usize = 4096;
const PAGES: u64 = 8192; // 32 MiB

/// A page as a host engine would write it: an 8-byte LSN header, then data.
fn host_page(page: u64, lsn: u64) -> Vec<u8> {
    let mut b = vec![0u8; PAGE_SIZE];
    b[..8].copy_from_slice(&lsn.to_le_bytes());
    for (i, x) in b[8..].iter_mut().enumerate() {
        *x = (page as usize * 31 + i * 7 + lsn as usize) as u8;
    }
    b
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let primary_file =
        FileStore::create(dir.path().join("primary.db"), PAGE_SIZE, PAGES)?.with_mmap_scan(true);
    // The primary sits behind a fault injector so that we can break it on purpose.
    let primary = Arc::new(FaultyStore::new(Arc::new(primary_file)));
    let replica_store: Arc<dyn PageStore> = Arc::new(FileStore::create(
        dir.path().join("replica.db"),
        PAGE_SIZE,
        PAGES,
    )?);

    // The detector reads each page's LSN from its header, so it also catches
    // lost and misdirected writes, which a checksum alone cannot see.
    let lsn_of: PageLsnFn =
        Arc::new(|b: &[u8]| Some(Lsn(u64::from_le_bytes(b[..8].try_into().ok()?))));
    let detector = Arc::new(
        CorruptionConfig::new(ChecksumPlacement::Trailer)
            .page_lsn(lsn_of)
            .build(primary.clone())?,
    );

    // The host writes every page; replication ships the same sealed bytes to the replica.
    let write = |page: u64, lsn: u64| -> Result<(), selfheal::Error> {
        let mut b = host_page(page, lsn);
        detector.write_sealed(PageId(page), &mut b)?;
        replica_store.write_page(PageId(page), &b)
    };
    let t = Instant::now();
    for p in 0..PAGES {
        write(p, 1)?;
    }
    primary.sync()?;
    println!(
        "wrote {PAGES} pages of {PAGE_SIZE} bytes ({} MiB) to the primary, sealed, and the same to the replica, in {:?}",
        (PAGES * PAGE_SIZE as u64) >> 20,
        t.elapsed()
    );

    // Break the primary in six different ways.
    primary.damage(PageId(100), Damage::BitFlip { byte: 1234, bit: 3 })?;
    primary.damage(PageId(200), Damage::Zero)?;
    primary.damage(PageId(300), Damage::Junk { seed: 42 })?;
    primary.fail_next_write(Some(PageId(400)), WriteFault::Torn { new_bytes: 1000 });
    write(400, 2)?;
    primary.fail_next_write(
        Some(PageId(500)),
        WriteFault::Misdirected { to: PageId(600) },
    );
    write(500, 2)?;
    primary.fail_next_write(Some(PageId(700)), WriteFault::Lost);
    write(700, 2)?;
    let broken: Vec<u64> = vec![100, 200, 300, 400, 500, 600, 700];
    println!("injected: bit flip @100, zeroed @200, junk @300, torn write @400, misdirected write 500→600, lost write @700");

    // Scrub the whole store on the background thread.
    let t = Instant::now();
    let scrub = ScrubConfig::new()
        .unlimited()
        .single_pass()
        .build(detector.clone())?;
    scrub.start()?;
    scrub.wait_for_passes(1, Duration::from_secs(60))?;
    scrub.stop()?;
    let scrub_time = t.elapsed();
    let found: Vec<_> = detector.failures().try_iter().collect();
    println!(
        "\nscrub: {} pages in {scrub_time:?} ({:.0} MiB/s), found {} corrupt pages:",
        PAGES,
        (PAGES * PAGE_SIZE as u64) as f64 / 1048576.0 / scrub_time.as_secs_f64(),
        found.len()
    );
    for f in &found {
        println!("  {f}");
    }

    // Repair every fenced page from the replica.
    let repairer = RepairConfig::new().build(detector.clone())?;
    repairer.add_replica(Arc::new(StoreReplica::new(
        "replica-1",
        replica_store.clone(),
    )))?;
    println!("\nrepair:");
    for report in repairer.repair_pending() {
        let outcome = match &report.outcome {
            RepairOutcome::Repaired { source } => format!("repaired from {source}"),
            other => format!("{other:?}"),
        };
        println!(
            "  page {:>4}: {outcome} in {:?}",
            report.page, report.duration
        );
    }

    // Prove it: a second full scrub finds nothing, and every page matches the replica.
    let check = ScrubConfig::new()
        .unlimited()
        .single_pass()
        .build(detector.clone())?;
    check.start()?;
    check.wait_for_passes(1, Duration::from_secs(60))?;
    check.stop()?;
    let still_bad: Vec<_> = detector.failures().try_iter().collect();
    let mut ok = still_bad.is_empty() && found.len() == broken.len();
    let (mut a, mut b) = (vec![0u8; PAGE_SIZE], vec![0u8; PAGE_SIZE]);
    for p in 0..PAGES {
        detector.read_verified(PageId(p), &mut a)?;
        replica_store.read_page(PageId(p), &mut b)?;
        if a != b {
            println!("page {p} differs from the replica");
            ok = false;
        }
    }
    for p in &broken {
        if detector.page_state(PageId(*p)) != Some(PageState::Repaired) {
            println!(
                "page {p} is not repaired: {:?}",
                detector.page_state(PageId(*p))
            );
            ok = false;
        }
    }
    let stats = repairer.stats();
    println!(
        "\nresult: {} of {} damaged pages found, {} repaired, {} irreparable; second scrub found {}; all {} pages verified and identical to the replica: {}",
        found.len(),
        broken.len(),
        stats.repaired,
        stats.irreparable,
        still_bad.len(),
        PAGES,
        ok
    );
    Ok(ok)
}
