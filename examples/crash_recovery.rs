//! Kills a process in the middle of its transactions and shows that recovery
//! rolls back exactly what was in flight.
//!
//! Run with `cargo run --example crash_recovery`. The example starts itself
//! as a child (`crash_recovery child <dir>`), which runs transactions on a
//! file store with an undo journal, as a host would: each writes its id into
//! two pages, and every fifth is rolled back. The child appends what it was
//! told to a log (`acked`) after each call returns. The parent kills it with
//! SIGKILL, reopens the journal — which rolls back the transactions in
//! flight — prints what was rolled back, and checks that every acknowledged
//! commit is present, nothing half-done is, and no transaction id was handed
//! out twice (ids jump at each restart: a restart skips the rest of the
//! block of ids the last run reserved). It exits with a non-zero status if
//! the check fails.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use selfheal::prelude::*;

const PAGE_SIZE: usize = 256;
const PAGES: u64 = 16;
/// The `acked` log's outcome byte for "began" (1 = committed, 0 = rolled back).
const BEGAN: u8 = 2;

/// The two pages transaction `txn` writes.
fn pages_of(txn: TxnId) -> [PageId; 2] {
    let a = txn.0 % PAGES;
    let b = (txn.0 * 7 + 3) % PAGES;
    [PageId(a), PageId(if b == a { (a + 1) % PAGES } else { b })]
}

/// The host's store and its rollback manager; building the manager runs
/// recovery.
fn open(dir: &Path) -> Result<(Arc<FileStore>, TransactionRollbackManager)> {
    let path = dir.join("pages");
    let store = Arc::new(if path.exists() {
        FileStore::open(&path, PAGE_SIZE)?
    } else {
        FileStore::create(&path, PAGE_SIZE, PAGES)?
    });
    let rollback =
        RollbackConfig::new(dir.join("journal")).build(RawPages::shared(store.clone()))?;
    Ok((store, rollback))
}

/// The child: transactions until it is killed.
fn child(dir: &Path) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let (store, rollback) = open(dir)?;
    let mut acked = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("acked"))?;
    let mut ack = |txn: TxnId, outcome: u8| {
        let mut rec = txn.0.to_le_bytes().to_vec();
        rec.push(outcome);
        acked.write_all(&rec)
    };
    loop {
        let txn = rollback.begin()?;
        ack(txn, BEGAN)?;
        for page in pages_of(txn) {
            // The undo is made durable before each write reaches the store.
            rollback.write(txn, page, 0, &txn.0.to_le_bytes())?;
            rollback.write(txn, page, 128, &txn.0.to_le_bytes())?;
        }
        store.sync()?;
        if txn.0 % 5 == 0 {
            rollback.rollback(txn)?;
            ack(txn, 0)?;
        } else {
            rollback.commit(txn)?;
            ack(txn, 1)?;
        }
    }
}

/// The parent's check after a kill: reopen (recovery runs) and compare the
/// pages with what the child was told.
fn check(dir: &Path) -> std::result::Result<(), String> {
    let acked = std::fs::read(dir.join("acked")).unwrap_or_default();
    let (mut began, mut finished, mut committed) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut last_began = None;
    for rec in acked.chunks_exact(9) {
        let id = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
        match rec[8] {
            BEGAN if !began.insert(id) => return Err(format!("id {id} was handed out twice")),
            BEGAN => last_began = Some(id),
            1 => {
                finished.insert(id);
                committed.insert(id);
            }
            _ => {
                finished.insert(id);
            }
        }
    }
    let (store, rollback) = open(dir).map_err(|e| format!("reopening: {e}"))?;
    let rolled_back: Vec<TxnId> = rollback
        .recovery_report()
        .rolled_back
        .iter()
        .map(|r| r.txn)
        .collect();
    println!("  recovery rolled back {rolled_back:?}");
    // Transactions ran one at a time: only the last one that began may be in
    // doubt (killed before its outcome was acknowledged).
    let in_doubt = last_began.filter(|id| !finished.contains(id));
    let expected = |with: Option<u64>| {
        let mut pages = vec![0u64; PAGES as usize];
        for t in committed.iter().copied().chain(with) {
            for p in pages_of(TxnId(t)) {
                pages[p.0 as usize] = pages[p.0 as usize].max(t);
            }
        }
        pages
    };
    let mut actual = Vec::new();
    let mut buf = vec![0u8; PAGE_SIZE];
    for p in 0..PAGES {
        store
            .read_page(PageId(p), &mut buf)
            .map_err(|e| e.to_string())?;
        let (a, b) = (&buf[..8], &buf[128..136]);
        if a != b {
            return Err(format!("page {p} is half done"));
        }
        actual.push(u64::from_le_bytes(a.try_into().expect("8 bytes")));
    }
    if actual == expected(None) {
        println!("  every acknowledged commit is present; nothing else is");
    } else if in_doubt.is_some() && actual == expected(in_doubt) {
        println!("  transaction {in_doubt:?}, unacknowledged at the kill, committed in full");
    } else {
        return Err(format!("pages {actual:?}, expected {:?}", expected(None)));
    }
    rollback.stop().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "child" {
        // Runs until killed; an error ends it early.
        if let Err(e) = child(Path::new(&args[2])) {
            eprintln!("child: {e}");
        }
        return ExitCode::FAILURE;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exe = std::env::current_exe().expect("own path");
    for round in 1..=3 {
        let mut child = Command::new(&exe)
            .arg("child")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the child");
        std::thread::sleep(Duration::from_millis(200 + 150 * round));
        child.kill().expect("SIGKILL the child");
        let _ = child.wait();
        println!("round {round}: killed the child");
        if let Err(e) = check(dir.path()) {
            eprintln!("round {round}: CHECK FAILED: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
