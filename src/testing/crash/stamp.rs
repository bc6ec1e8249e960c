//! The stamp workload, for tests that kill a real process: a child runs
//! transactions over a file store and a journal in a directory, and after
//! it is killed, a check reopens the directory (which runs recovery) and
//! judges what it finds against what the child saw acknowledged.
//!
//! # Contract
//! - [`run_stamp_workload`]: each transaction writes its id at two offsets
//!   of two pages ([`stamp_pages`]) of a store of [`STAMP_PAGES`] pages of
//!   [`STAMP_PAGE_SIZE`] bytes, syncs the store, and then commits — or,
//!   for every fifth, rolls back; the file `acked` records each begin and
//!   each outcome once its call returned.
//! - [`check_stamp_workload`]: no transaction id was handed out twice,
//!   every acknowledged commit's stamps are present, no acknowledged
//!   rollback's are, and the transaction in doubt is all there or all
//!   gone; a violation is described, never panicked on.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::host::PageStore;
use crate::rollback::{RawPages, RollbackConfig, TransactionRollbackManager, TxnId};
use crate::store::FileStore;
use crate::types::PageId;

/// Page size of the stamp workload's store.
pub const STAMP_PAGE_SIZE: usize = 256;
/// Pages in the stamp workload's store.
pub const STAMP_PAGES: u64 = 16;

/// The pages transaction `txn` of the stamp workload writes.
#[must_use]
pub fn stamp_pages(txn: TxnId) -> [PageId; 2] {
    let a = txn.0 % STAMP_PAGES;
    let b = (txn.0 * 7 + 3) % STAMP_PAGES;
    let b = if b == a { (a + 1) % STAMP_PAGES } else { b };
    [PageId(a), PageId(b)]
}

fn stamp_store(dir: &Path) -> Result<Arc<FileStore>> {
    let path = dir.join("pages");
    let store = if path.exists() {
        FileStore::open(&path, STAMP_PAGE_SIZE)?
    } else {
        let s = FileStore::create(&path, STAMP_PAGE_SIZE, STAMP_PAGES)?;
        s.sync()?;
        s
    };
    Ok(Arc::new(store))
}

fn open_stamp(dir: &Path) -> Result<(Arc<FileStore>, TransactionRollbackManager)> {
    let store = stamp_store(dir)?;
    let mgr = RollbackConfig::new(dir.join("journal"))
        .segment_size_bytes(16 << 10)
        .build(RawPages::shared(store.clone()))?;
    Ok((store, mgr))
}

fn acked_path(dir: &Path) -> PathBuf {
    dir.join("acked")
}

/// Outcome byte of an `acked` record: the transaction began.
const BEGAN: u8 = 2;

/// Runs the stamp workload in `dir` for at most `max_txns` transactions (a
/// crash test kills the process long before). Each transaction writes its id
/// at two offsets of two pages ([`stamp_pages`]), syncs the store, and then
/// commits — or, for every fifth, rolls back. When `begin` returns it
/// appends `(id, began)` to the file `acked`, and after `commit` or
/// `rollback` returns, `(id, outcome)`.
///
/// # Errors
/// Any error of the store, the manager or the `acked` file.
pub fn run_stamp_workload(dir: &Path, max_txns: u64) -> Result<()> {
    let (store, mgr) = open_stamp(dir)?;
    let mut acked = OpenOptions::new()
        .create(true)
        .append(true)
        .open(acked_path(dir))
        .map_err(|e| Error::io("opening the acked log", e))?;
    let mut log = |id: TxnId, outcome: u8| {
        let mut rec = [0u8; 9];
        rec[..8].copy_from_slice(&id.0.to_le_bytes());
        rec[8] = outcome;
        acked
            .write_all(&rec)
            .map_err(|e| Error::io("appending to the acked log", e))
    };
    for _ in 0..max_txns {
        let txn = mgr.begin()?;
        log(txn, BEGAN)?;
        let stamp = txn.0.to_le_bytes();
        for p in stamp_pages(txn) {
            mgr.write(txn, p, 0, &stamp)?;
            mgr.write(txn, p, 128, &stamp)?;
        }
        store.sync()?;
        let outcome = if txn.0 % 5 == 0 {
            mgr.rollback(txn)?;
            0u8
        } else {
            mgr.commit(txn)?;
            1u8
        };
        log(txn, outcome)?;
    }
    mgr.stop()
}

/// What [`check_stamp_workload`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StampCheck {
    /// Commits the workload saw acknowledged.
    pub acked_commits: u64,
    /// Rollbacks the workload saw acknowledged.
    pub acked_rollbacks: u64,
    /// Transactions recovery rolled back.
    pub rolled_back: Vec<TxnId>,
    /// The transaction that was running when the process died (not
    /// acknowledged), and whether its changes survived (its commit record
    /// was durable).
    pub in_doubt: Option<(TxnId, bool)>,
}

/// Reopens the stamp workload's directory — which runs recovery — and checks
/// the properties: no transaction id was handed out twice (across every
/// run in the directory), every acknowledged commit's stamps are present, no
/// acknowledged rollback's are, and the transaction in doubt is all there or
/// all gone. Returns what it found, or a description of the violation.
///
/// # Errors
/// A message describing the violation or the error.
pub fn check_stamp_workload(dir: &Path) -> std::result::Result<StampCheck, String> {
    let acked = std::fs::read(acked_path(dir)).unwrap_or_default();
    let mut committed: BTreeSet<u64> = BTreeSet::new();
    let mut finished: BTreeSet<u64> = BTreeSet::new();
    let mut began: BTreeSet<u64> = BTreeSet::new();
    let mut last_began = None;
    let mut rollbacks = 0;
    for rec in acked.chunks_exact(9) {
        let id = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
        match rec[8] {
            BEGAN => {
                if !began.insert(id) {
                    return Err(format!("transaction id {id} was handed out twice"));
                }
                last_began = Some(id);
            }
            1 => {
                finished.insert(id);
                committed.insert(id);
            }
            _ => {
                finished.insert(id);
                rollbacks += 1;
            }
        }
    }
    let (store, mgr) = open_stamp(dir).map_err(|e| format!("reopening: {e}"))?;
    let report = mgr.recovery_report().clone();
    let rolled_back: Vec<TxnId> = report.rolled_back.iter().map(|r| r.txn).collect();
    for t in &rolled_back {
        if committed.contains(&t.0) {
            return Err(format!("acknowledged commit {t} was rolled back"));
        }
    }
    // Transactions run one at a time, so at most the last one that began is
    // in doubt (an id that began but was never logged had no effect: its
    // first write comes after the log record).
    let in_doubt = last_began.filter(|l| !finished.contains(l)).map(TxnId);
    let expected = |with_doubt: bool| -> Vec<u64> {
        let mut pages = vec![0u64; STAMP_PAGES as usize];
        let doubt = in_doubt.filter(|_| with_doubt).map(|t| t.0);
        for t in committed.iter().copied().chain(doubt) {
            for p in stamp_pages(TxnId(t)) {
                pages[p.0 as usize] = pages[p.0 as usize].max(t);
            }
        }
        pages
    };
    let mut actual = Vec::new();
    let mut buf = vec![0u8; STAMP_PAGE_SIZE];
    for p in 0..STAMP_PAGES {
        store
            .read_page(PageId(p), &mut buf)
            .map_err(|e| format!("reading page {p}: {e}"))?;
        let a = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
        let b = u64::from_le_bytes(buf[128..136].try_into().expect("8 bytes"));
        if a != b {
            return Err(format!("page {p} is half rolled back: stamps {a} and {b}"));
        }
        actual.push(a);
    }
    let survived = if actual == expected(false) {
        false
    } else if in_doubt.is_some_and(|d| actual == expected(true) && !rolled_back.contains(&d)) {
        true
    } else {
        return Err(format!(
            "pages {actual:?} match neither the acknowledged commits {:?} nor them plus the transaction in doubt {in_doubt:?} {:?}",
            expected(false),
            expected(true)
        ));
    };
    mgr.stop().map_err(|e| format!("closing: {e}"))?;
    Ok(StampCheck {
        acked_commits: committed.len() as u64,
        acked_rollbacks: rollbacks,
        rolled_back,
        in_doubt: in_doubt.map(|d| (d, survived)),
    })
}
