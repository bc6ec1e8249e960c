//! Snapshot a store, damage both the store and the newest snapshot, then
//! restore: exactly the damaged snapshot is refused with an error that names
//! it, and only an explicit fallback restores the older one, reporting the
//! pages that the fallback lost.
//!
//! Run with `cargo run --example snapshot_restore`. Every claim it prints is
//! checked; it exits non-zero if any of them is false (a restore that falls
//! back silently, a store that is not byte-identical to the state restored,
//! lost pages that are not the ones changed in between).

use selfheal::prelude::*;

/// Prints a claim and whether it held; remembers a false one.
struct Checks {
    failed: usize,
}

impl Checks {
    fn claim(&mut self, ok: bool, what: &str) {
        println!("[{}] {what}", if ok { "ok" } else { "FAILED" });
        if !ok {
            self.failed += 1;
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let page_size = 4096;
    let store = MemStore::new(page_size, 2048)?; // 8 MiB
                                                 // The host's data: records of text and numbers, as a table page holds.
    for p in 0..2048u64 {
        let mut page = Vec::with_capacity(page_size);
        let mut row = 0u64;
        while page.len() < page_size {
            page.extend_from_slice(
                format!("row {p}:{row} value {}\n", (p * 31 + row * 7) % 1000).as_bytes(),
            );
            row += 1;
        }
        page.truncate(page_size);
        store.write_page(PageId(p), &page)?;
    }
    let gate = WriteGate::new();
    let snaps = SnapshotConfig::new(dir.path(), page_size).build()?;
    let mut checks = Checks { failed: 0 };

    // 1. A full snapshot, then some writes and an incremental one.
    let take = |lsn: u64, kind: SnapshotKind| {
        let pause = gate.pause();
        snaps.take_snapshot(
            Consistency::Paused {
                store: &store,
                pause: &pause,
                lsn: Lsn(lsn),
            },
            SnapshotRequest::new(kind).metadata("lsn", lsn.to_le_bytes().to_vec()),
        )
    };
    let full = take(100, SnapshotKind::Full)?;
    let state_full = store.to_bytes();
    println!(
        "full snapshot {}: {} pages, {} bytes on disk ({:.0}% of the store)",
        full.info.id,
        full.info.stored_pages,
        full.info.file_bytes,
        100.0 * full.info.file_bytes as f64 / state_full.len() as f64
    );
    let changed: Vec<u64> = (0..2048).step_by(97).collect();
    for &p in &changed {
        let _w = gate.write();
        store.write_page(PageId(p), &vec![(p % 251) as u8 + 1; page_size])?;
        snaps.note_dirty(PageId(p));
    }
    let inc = take(200, SnapshotKind::Incremental)?;
    println!(
        "incremental snapshot {} on {}: {} changed pages, {} bytes ({:?})",
        inc.info.id, full.info.id, inc.info.stored_pages, inc.info.file_bytes, inc.detection
    );
    checks.claim(
        inc.info.stored_pages == changed.len() as u64,
        &format!("the incremental holds the {} changed pages", changed.len()),
    );
    println!("verified: {:?}", snaps.verify(inc.info.id)?);

    // 2. A single page served from the snapshot (it has not changed since).
    let mut page = vec![0u8; page_size];
    let served = snaps
        .page_source()
        .read_page(PageId(5), Some(Lsn(150)), &mut page)?;
    let mut want = vec![0u8; page_size];
    store.read_page(PageId(5), &mut want)?;
    checks.claim(
        served && page == want,
        "page 5 is served from the snapshot, byte-identical",
    );

    // 3. Damage: scribble over the store and flip a bit in the incremental
    //    snapshot's first chunk.
    for p in 0..64u64 {
        // Junk over every byte, as a stray write would leave.
        let junk: Vec<u8> = (0..page_size as u64)
            .map(|i| ((i * 2_654_435_761 + p * 40_503) >> 7) as u8)
            .collect();
        store.write_page(PageId(p), &junk)?;
    }
    let path = dir.path().join(&inc.info.file_name);
    let mut bytes = std::fs::read(&path)?;
    bytes[100] ^= 0x04;
    std::fs::write(&path, bytes)?;
    println!(
        "damaged 64 store pages and one bit of snapshot {}",
        inc.info.id
    );

    // 4. Restoring the damaged snapshot is refused: no other one is used
    //    unless the caller says so, and the store is not touched.
    let before = store.to_bytes();
    match snaps.restore(inc.info.id, &store) {
        Err(e @ Error::SnapshotDamaged { .. }) => {
            println!("restore({}) refused: {e}", inc.info.id);
            checks.claim(true, "restoring the damaged snapshot is an error");
        }
        Ok(r) => checks.claim(
            false,
            &format!("restoring the damaged snapshot is an error (it returned {r:?})"),
        ),
        Err(e) => checks.claim(false, &format!("restore failed with the damage error: {e}")),
    }
    checks.claim(
        store.to_bytes() == before,
        "the refused restore did not write the store",
    );

    // 5. With an explicit fallback, the full snapshot is restored and the
    //    report says so, with the pages that were lost.
    let report = snaps.restore_with(
        inc.info.id,
        &store,
        RestoreOptions::new().fallback(Fallback::NewestOlderGood),
    )?;
    println!(
        "restored snapshot {} (asked for {}), LSN {}, {} page writes",
        report.restored, report.requested, report.lsn, report.pages_written
    );
    checks.claim(
        report.restored == full.info.id,
        &format!("the fallback restored snapshot {}", full.info.id),
    );
    match &report.fallback {
        Some(fb) => {
            for (id, why) in &fb.skipped {
                println!("skipped snapshot {id}: {why}");
            }
            checks.claim(
                fb.skipped.first().map(|s| s.0) == Some(inc.info.id),
                "the report names the refused snapshot",
            );
            match &fb.lost {
                LostPages::Known(lost) => {
                    println!("pages lost by the fallback: {}", lost.len());
                    checks.claim(
                        *lost == changed,
                        "the lost pages are exactly the ones changed between the two snapshots",
                    );
                }
                LostPages::Unknown { reason } => checks.claim(
                    false,
                    &format!("the lost pages are known (the index is intact): {reason}"),
                ),
                other => checks.claim(false, &format!("the lost pages are known: {other:?}")),
            }
        }
        None => checks.claim(false, "the fallback is reported"),
    }
    checks.claim(
        store.to_bytes() == state_full,
        &format!(
            "the store is byte-identical to snapshot {}",
            report.restored
        ),
    );

    if checks.failed > 0 {
        eprintln!("{} claim(s) failed", checks.failed);
        std::process::exit(1);
    }
    Ok(())
}
