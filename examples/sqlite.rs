//! SQLite that heals itself: a database opened through the selfheal VFS,
//! damaged on disk behind SQLite's back while a reader runs queries. Each
//! damaged page is healed from a replica copy before SQLite reads it (each
//! heal is printed as it happens); every query still returns the expected
//! answer, and SQLite's `integrity_check` ends the run.
//!
//! Run: `cargo run --release --features sqlite --example sqlite`. Exits
//! non-zero if a query answers wrong, fails, or a page is not healed.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags};
use selfheal::sqlite::{self, SqliteConfig};

const PAGE: u64 = 4096;
const ROWS: i64 = 20_000;

fn fail(what: &str) -> ! {
    eprintln!("FAILED: {what}");
    std::process::exit(1);
}

fn open(path: &Path, vfs: &str) -> Connection {
    Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs)
        .unwrap_or_else(|e| fail(&format!("opening {}: {e}", path.display())))
}

/// One round of queries; returns the rows checked.
fn queries(c: &Connection) -> rusqlite::Result<u64> {
    let mut checked = 0;
    let (n, sum): (i64, i64) = c.query_row("SELECT count(*), sum(qty) FROM stock", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    if n != ROWS || sum != (0..ROWS).map(|i| i % 100).sum::<i64>() {
        fail(&format!("full scan answered {n} rows, sum {sum}"));
    }
    checked += n as u64;
    let mut by_sku = c.prepare_cached("SELECT id, qty FROM stock WHERE sku = ?1")?;
    for id in (0..ROWS).step_by(211) {
        let (got, qty): (i64, i64) = by_sku
            .query_row([format!("sku-{:08}", id * 7_919 % 1_000_003)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        if got != id || qty != id % 100 {
            fail(&format!(
                "sku lookup of row {id} answered row {got}, qty {qty}"
            ));
        }
        checked += 1;
    }
    Ok(checked)
}

fn main() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("temporary directory: {e}")));
    let db = dir.path().join("shop.db");
    let replica = dir.path().join("shop-replica.db");
    let vfs = sqlite::register(
        "selfheal",
        SqliteConfig::new().replica_file(&replica).on_heal(|e| {
            println!(
                "  heal: page {:>4} {} in {:?} — {} ({})",
                e.page,
                if e.healed { "healed" } else { "NOT healed" },
                e.duration,
                e.damage,
                e.detail
            );
        }),
    )
    .unwrap_or_else(|e| fail(&format!("registering the VFS: {e}")));

    let c = open(&db, vfs.name());
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE stock(id INTEGER PRIMARY KEY, sku TEXT NOT NULL, qty INTEGER NOT NULL);
         CREATE INDEX stock_sku ON stock(sku);",
    )
    .unwrap_or_else(|e| fail(&format!("creating the schema: {e}")));
    let tx = c
        .unchecked_transaction()
        .unwrap_or_else(|e| fail(&e.to_string()));
    for id in 0..ROWS {
        tx.execute(
            "INSERT INTO stock(id, sku, qty) VALUES (?1, ?2, ?3)",
            params![id, format!("sku-{:08}", id * 7_919 % 1_000_003), id % 100],
        )
        .unwrap_or_else(|e| fail(&e.to_string()));
    }
    tx.commit().unwrap_or_else(|e| fail(&e.to_string()));
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap_or_else(|e| fail(&e.to_string()));
    drop(c);
    std::fs::copy(&db, &replica).unwrap_or_else(|e| fail(&format!("copying the replica: {e}")));
    let pages = std::fs::metadata(&db).map(|m| m.len() / PAGE).unwrap_or(0);
    println!(
        "built {} with {ROWS} rows in {pages} pages; replica {}",
        db.display(),
        replica.display()
    );

    // The reader: a fresh connection per round (a cold SQLite page cache).
    let stop = Arc::new(AtomicBool::new(false));
    let rows_checked = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, rows_checked, db, name) = (
            stop.clone(),
            rows_checked.clone(),
            db.clone(),
            vfs.name().to_string(),
        );
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) || rounds == 0 {
                let c = open(&db, &name);
                match queries(&c) {
                    Ok(n) => rows_checked.fetch_add(n, Ordering::Relaxed),
                    Err(e) => fail(&format!("a query failed: {e}")),
                };
                rounds += 1;
            }
            rounds
        })
    };

    // Damage pages behind SQLite's back while the reader runs.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap_or_else(|e| fail(&format!("opening the file to damage it: {e}")));
    let kinds = ["bit flip", "zeroed", "junk"];
    let started = Instant::now();
    let mut damaged = 0;
    for (i, page) in (1..pages).step_by((pages / 12).max(1) as usize).enumerate() {
        let kind = kinds[i % kinds.len()];
        let mut bytes = vec![0u8; PAGE as usize];
        let off = page * PAGE;
        let _ = FileExt::read_exact_at(&std::fs::File::open(&db).unwrap(), &mut bytes, off);
        match kind {
            "bit flip" => bytes[1_000] ^= 0x10,
            "zeroed" => bytes.fill(0),
            _ => bytes
                .iter_mut()
                .enumerate()
                .for_each(|(j, b)| *b = (j * 31 + i) as u8),
        }
        file.write_all_at(&bytes, off)
            .unwrap_or_else(|e| fail(&format!("damaging page {}: {e}", page + 1)));
        println!("damage: page {:>4} {kind}", page + 1);
        damaged += 1;
        std::thread::sleep(Duration::from_millis(40));
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let rounds = reader
        .join()
        .unwrap_or_else(|_| fail("the reader panicked"));

    let c = open(&db, vfs.name());
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap_or_else(|e| fail(&format!("integrity_check: {e}")));
    let checked = rows_checked.load(Ordering::Relaxed)
        + queries(&c).unwrap_or_else(|e| fail(&format!("a query failed: {e}")));
    drop(c);
    let stats = vfs.stats();
    println!(
        "{damaged} pages damaged in {:?}; {} heals, {} failed; {rounds} reader rounds; \
         {checked} rows checked; integrity_check: {integrity}",
        started.elapsed(),
        stats.healed,
        stats.unhealed
    );
    if integrity != "ok" || stats.unhealed != 0 {
        fail("the database did not come through whole");
    }
    let same = std::fs::read(&db).ok() == std::fs::read(&replica).ok();
    println!("the file is byte-identical to the replica: {same}");
    if !same {
        fail("the healed file differs from the replica");
    }
}
