//! Goal: show that `TransactionRollbackManager` leaves no half-done
//! transaction behind a crash or a rollback and never undoes committed work.
//! Method: typed errors for bad input; injected fsync and write failures;
//! a deterministic group-commit schedule; crashes simulated at every write,
//! sync and journal byte of scripted and random histories (and during
//! recovery itself), each checked byte for byte against a model; recovery
//! modes against damaged journal files; deadlock detection through the
//! manager.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use selfheal::rollback::JournalStorage;
use selfheal::rollback::RawPages;
use selfheal::rollback::{JournalDamage, RecoveryMode, VictimPolicy};
use selfheal::testing::journal::{JournalState, SEGMENT_HEADER_LEN, SEGMENT_VERSION};
use selfheal::testing::{
    both_placements, seal_numbered_pages, CrashDir, CrashStore, CrashSwitch, FaultyStore,
    WriteFault,
};
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, Error, FailureKind, FailureSink, Lsn,
    MemStore, PageId, PageStore, RollbackConfig, TransactionRollbackManager, TxnId,
};

const PS: usize = 128;
const PAGES: u64 = 4;
const SLOTS: usize = 4;
const SLOT: usize = PS / SLOTS;

fn mem_manager(dir: Arc<CrashDir>, store: Arc<dyn PageStore>) -> TransactionRollbackManager {
    RollbackConfig::with_storage(dir)
        .segment_size_bytes(1024)
        .build(RawPages::shared(store))
        .unwrap()
}

// ---- bad input -------------------------------------------------------------

#[test]
fn bad_input_gives_typed_errors() {
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mgr = mem_manager(Arc::new(CrashDir::new()), store);
    assert!(matches!(
        mgr.commit(TxnId(99)),
        Err(Error::UnknownTransaction { txn: TxnId(99) })
    ));
    assert!(matches!(
        mgr.record_undo(TxnId(0), PageId(0), 0, b"x", b"y"),
        Err(Error::UnknownTransaction { .. })
    ));
    let t = mgr.begin().unwrap();
    assert!(matches!(
        mgr.record_undo(t, PageId(0), PS - 4, &[1u8; 8], &[2u8; 8]),
        Err(Error::UndoOutOfPage { offset, end, page_size: PS, .. }) if offset == (PS - 4) as u64 && end == (PS + 4) as u64
    ));
    assert!(matches!(
        mgr.record_undo(t, PageId(PAGES), 0, b"x", b"y"),
        Err(Error::PageOutOfRange { .. })
    ));
    assert!(matches!(
        mgr.record_undo(t, PageId(0), 0, b"", b""),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        mgr.record_undo(t, PageId(0), 0, b"ab", b"c"),
        Err(Error::InvalidArgument { what: "after", .. })
    ));
    assert!(matches!(
        mgr.add_wait(t, t),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        mgr.ensure_durable(Lsn(1_000_000)),
        Err(Error::InvalidArgument { .. })
    ));
    mgr.write(t, PageId(1), 0, b"abc").unwrap();
    mgr.rollback(t).unwrap();
    let e = mgr.commit(t).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TransactionNotActive {
                state: "rolled back",
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        mgr.rollback(t),
        Err(Error::TransactionNotActive { .. })
    ));
    let t2 = mgr.begin().unwrap();
    mgr.commit(t2).unwrap();
    assert!(matches!(
        mgr.rollback(t2),
        Err(Error::TransactionNotActive {
            state: "committed",
            ..
        })
    ));
}

#[test]
fn zero_sizes_and_timeouts_are_rejected() {
    let pages = RawPages::shared(Arc::new(MemStore::new(PS, PAGES).unwrap()));
    let cfg = || RollbackConfig::with_storage(Arc::new(CrashDir::new()));
    let cases: Vec<(RollbackConfig, &str)> = vec![
        (cfg().segment_size_bytes(0), "segment_size_bytes"),
        (cfg().segment_size_bytes(100), "segment_size_bytes"),
        (cfg().buffer_bytes(0), "buffer_bytes"),
        (cfg().max_active_transactions(0), "max_active_transactions"),
        (cfg().max_undo_bytes_per_txn(0), "max_undo_bytes_per_txn"),
        (cfg().sync_wait_timeout(Duration::ZERO), "sync_wait_timeout"),
        (cfg().idle_mark_delay(Duration::ZERO), "idle_mark_delay"),
        (
            cfg().idle_mark_delay(Duration::from_secs(61)),
            "idle_mark_delay",
        ),
    ];
    for (c, field) in cases {
        match c.build(pages.clone()) {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected InvalidConfig, got {other:?}"),
        }
    }
}

#[test]
fn limits_are_enforced() {
    let pages = RawPages::shared(Arc::new(MemStore::new(PS, PAGES).unwrap()));
    let mgr = RollbackConfig::with_storage(Arc::new(CrashDir::new()))
        .max_active_transactions(2)
        .max_undo_bytes_per_txn(10)
        .build(pages)
        .unwrap();
    let a = mgr.begin().unwrap();
    let _b = mgr.begin().unwrap();
    assert!(matches!(mgr.begin(), Err(Error::RollbackLimit { .. })));
    mgr.record_undo(a, PageId(0), 0, &[0u8; 8], &[1u8; 8])
        .unwrap();
    assert!(matches!(
        mgr.record_undo(a, PageId(0), 8, &[0u8; 8], &[1u8; 8]),
        Err(Error::RollbackLimit {
            field: "max_undo_bytes_per_txn",
            ..
        })
    ));
}

#[test]
fn unwritable_journal_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let pages = RawPages::shared(Arc::new(MemStore::new(PS, PAGES).unwrap()));
    let e = RollbackConfig::new(file.join("journal"))
        .build(pages)
        .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("journal"), "{e}");
}

// ---- failures ----------------------------------------------------------------

#[test]
fn failed_fsync_poisons_the_journal_for_good() {
    let dir = Arc::new(CrashDir::new());
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mgr = mem_manager(dir.clone(), store.clone());
    let t = mgr.begin().unwrap();
    mgr.write(t, PageId(0), 0, b"one").unwrap();
    // EROFS: not retryable (EIO or ENOSPC stall the journal instead; see
    // tests/journal_resume.rs).
    dir.fail_syncs_with(1, 30, false);
    let e = mgr.commit(t).unwrap_err();
    assert!(matches!(e, Error::Poisoned { .. }), "{e}");
    // Sticky: everything after says so, also when the disk would work again.
    assert!(matches!(mgr.begin(), Err(Error::Poisoned { .. })));
    assert!(matches!(
        mgr.ensure_durable(Lsn(1)),
        Err(Error::Poisoned { .. })
    ));
    assert!(mgr.stats().journal.poisoned);
    drop(mgr);
    // Reopening reads what reached the disk: the commit record did not, so
    // the transaction is rolled back.
    let mgr = mem_manager(Arc::new(dir.crash(0)), store.clone());
    assert_eq!(mgr.recovery_report().rolled_back.len(), 1);
    let mut buf = vec![0u8; PS];
    store.read_page(PageId(0), &mut buf).unwrap();
    assert_eq!(&buf[..3], &[0, 0, 0]);
}

#[test]
fn lost_rollback_write_is_caught_and_can_be_retried() {
    let faulty = Arc::new(FaultyStore::new(Arc::new(
        MemStore::new(PS, PAGES).unwrap(),
    )));
    let mgr = mem_manager(Arc::new(CrashDir::new()), faulty.clone());
    let t = mgr.begin().unwrap();
    mgr.write(t, PageId(2), 10, b"new").unwrap();
    faulty.fail_next_write(Some(PageId(2)), WriteFault::Lost);
    assert!(matches!(
        mgr.rollback(t),
        Err(Error::RollbackVerifyFailed { page: PageId(2) })
    ));
    assert_eq!(mgr.active_transactions(), vec![t]);
    assert!(matches!(
        mgr.commit(t),
        Err(Error::TransactionNotActive { .. })
    ));
    let out = mgr.rollback(t).unwrap();
    assert_eq!(out.undo_entries, 1);
    let mut buf = vec![0u8; PS];
    faulty.read_page(PageId(2), &mut buf).unwrap();
    assert_eq!(&buf[10..13], &[0, 0, 0]);
}

/// A journal storage whose fsyncs wait at a gate the test opens (or,
/// with `gate_state`, whose state-file writes do while it is set).
#[derive(Debug)]
struct GatedDir {
    inner: CrashDir,
    gate: crossbeam_channel::Receiver<()>,
    gate_sync: bool,
    gate_state: std::sync::atomic::AtomicBool,
    /// State-file writes that reached the gate.
    at_state_gate: std::sync::atomic::AtomicU32,
}

impl GatedDir {
    /// Syncs wait at `gate`.
    fn syncs(inner: CrashDir, gate: crossbeam_channel::Receiver<()>) -> GatedDir {
        GatedDir {
            inner,
            gate,
            gate_sync: true,
            gate_state: std::sync::atomic::AtomicBool::new(false),
            at_state_gate: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Waits at the gate; once the test has dropped it, fails (like a
    /// disk that went away) instead of waiting for ever.
    fn wait(&self, what: &str) -> selfheal::Result<()> {
        self.gate.recv().map_err(|_| selfheal::Error::Io {
            context: format!("{what} behind a closed gate"),
            source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        })
    }
}

impl JournalStorage for GatedDir {
    fn list(&self) -> selfheal::Result<Vec<u64>> {
        self.inner.list()
    }
    fn read(&self, s: u64) -> selfheal::Result<Vec<u8>> {
        self.inner.read(s)
    }
    fn create(&self, s: u64, h: &[u8]) -> selfheal::Result<()> {
        self.inner.create(s, h)
    }
    fn append(&self, s: u64, b: &[u8]) -> selfheal::Result<()> {
        self.inner.append(s, b)
    }
    fn sync(&self, s: u64) -> selfheal::Result<()> {
        if self.gate_sync {
            self.wait("syncing")?;
        }
        self.inner.sync(s)
    }
    fn truncate(&self, s: u64, l: u64) -> selfheal::Result<()> {
        self.inner.truncate(s, l)
    }
    fn remove(&self, s: u64) -> selfheal::Result<()> {
        self.inner.remove(s)
    }
    fn read_state(&self) -> selfheal::Result<Option<Vec<u8>>> {
        self.inner.read_state()
    }
    fn write_state(&self, b: &[u8]) -> selfheal::Result<()> {
        if self.gate_state.load(std::sync::atomic::Ordering::SeqCst) {
            self.at_state_gate
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.wait("writing the state file")?;
        }
        self.inner.write_state(b)
    }
}

/// A checkpoint that retires old segments writes the journal's state file
/// (durable: an fsync) and removes the files without holding the
/// journal's lock: undo appends and a commit go on while it waits.
/// Method: the state file's write held at a gate; a transaction begun,
/// changed and committed meanwhile, within a deadline; then the gate
/// opened, the checkpoint's result checked and a crash image reopened.
/// A stop made meanwhile waits for the checkpoint to end.
#[test]
fn appends_and_commits_go_on_while_a_checkpoint_writes_the_state_file() {
    use std::sync::atomic::Ordering::SeqCst;
    let (open, gate) = crossbeam_channel::unbounded();
    let mut gated = GatedDir::syncs(CrashDir::new(), gate);
    gated.gate_sync = false;
    let dir = Arc::new(gated);
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mgr = Arc::new(
        RollbackConfig::with_storage(dir.clone())
            .segment_size_bytes(512)
            .build(RawPages::shared(store.clone()))
            .unwrap(),
    );
    let mut last = Lsn(0);
    for i in 0..12u8 {
        let t = mgr.begin().unwrap();
        mgr.write(t, PageId(u64::from(i % 4)), 0, &[i; 16]).unwrap();
        last = mgr.commit(t).unwrap();
    }
    assert!(mgr.stats().journal.segments > 2);
    dir.gate_state.store(true, SeqCst);
    let checkpoint = {
        let m = mgr.clone();
        std::thread::spawn(move || m.checkpoint(last))
    };
    while dir.at_state_gate.load(SeqCst) == 0 {
        std::thread::yield_now();
    }
    let (done, finished) = crossbeam_channel::bounded(1);
    let writer = {
        let m = mgr.clone();
        std::thread::spawn(move || -> selfheal::Result<Lsn> {
            let t = m.begin()?;
            m.record_undo(t, PageId(1), 0, &[1; 4], &[2; 4])?;
            m.write(t, PageId(2), 0, &[9; 4])?;
            let lsn = m.commit(t)?;
            let _ = done.send(());
            Ok(lsn)
        })
    };
    let went_on = finished.recv_timeout(Duration::from_secs(10)).is_ok();
    // A stop waits for the checkpoint: it must not give up the journal's
    // storage while the checkpoint still writes to it.
    let stopper = {
        let m = mgr.clone();
        std::thread::spawn(move || m.stop())
    };
    std::thread::sleep(Duration::from_millis(300));
    let stopped_early = stopper.is_finished();
    dir.gate_state.store(false, SeqCst);
    open.send(()).unwrap();
    let removed = checkpoint.join().unwrap().unwrap();
    writer.join().unwrap().unwrap();
    stopper.join().unwrap().unwrap();
    assert!(
        went_on,
        "the appends and the commit waited for the checkpoint's state file"
    );
    assert!(!stopped_early, "the stop did not wait for the checkpoint");
    assert!(!removed.is_empty());
    assert_eq!(mgr.stats().journal.segments_removed, removed.len() as u64);
    drop(mgr);
    let again = mem_manager(Arc::new(dir.inner.crash(0)), store.clone());
    assert!(again.recovery_report().damage.is_empty());
    assert!(again.active_transactions().is_empty());
    let mut b = vec![0u8; PS];
    store.read_page(PageId(2), &mut b).unwrap();
    assert_eq!(&b[..4], &[9; 4]);
}

#[test]
fn concurrent_commits_share_one_fsync() {
    let (open, gate) = crossbeam_channel::unbounded();
    let dir = Arc::new(GatedDir::syncs(CrashDir::new(), gate));
    let pages = RawPages::shared(Arc::new(MemStore::new(PS, PAGES).unwrap()));
    let mgr = Arc::new(RollbackConfig::with_storage(dir).build(pages).unwrap());
    let before = mgr.stats().journal.fsyncs;
    let txns: Vec<TxnId> = (0..9).map(|_| mgr.begin().unwrap()).collect();
    // The first committer becomes the leader and blocks in its fsync.
    let leader = {
        let m = mgr.clone();
        let t = txns[0];
        std::thread::spawn(move || m.commit(t).unwrap())
    };
    while mgr.stats().journal.commits < 1 {
        std::thread::yield_now();
    }
    // Eight more commit while it syncs: they append and wait.
    let followers: Vec<_> = txns[1..]
        .iter()
        .map(|&t| {
            let m = mgr.clone();
            std::thread::spawn(move || m.commit(t).unwrap())
        })
        .collect();
    while mgr.stats().journal.commits < 9 {
        std::thread::yield_now();
    }
    // Two fsyncs serve all nine: the leader's, and one for the eight.
    open.send(()).unwrap();
    open.send(()).unwrap();
    leader.join().unwrap();
    for f in followers {
        f.join().unwrap();
    }
    let s = mgr.stats();
    assert_eq!(s.committed, 9);
    assert_eq!(s.journal.fsyncs - before, 2);
}

#[test]
fn rollback_through_the_detector_keeps_checksums_current() {
    for (name, placement) in both_placements(256) {
        let raw = Arc::new(MemStore::new(256, 4).unwrap());
        let det = Arc::new(
            CorruptionConfig::new(placement.clone())
                .build(raw.clone())
                .unwrap(),
        );
        seal_numbered_pages(&det, 4).unwrap();
        let mgr = RollbackConfig::with_storage(Arc::new(CrashDir::new()))
            .build(det.clone())
            .unwrap();
        let t = mgr.begin().unwrap();
        mgr.write(t, PageId(1), 0, &[9u8; 32]).unwrap();
        mgr.write(t, PageId(1), 40, &[8u8; 32]).unwrap();
        let mut buf = vec![0u8; 256];
        det.read_verified(PageId(1), &mut buf).unwrap();
        assert_eq!(buf[0], 9);
        let out = mgr.rollback(t).unwrap();
        assert_eq!((out.undo_entries, out.pages_written), (2, 1), "{name}");
        det.read_verified(PageId(1), &mut buf).unwrap();
        assert_eq!(&buf[..72], &[2u8; 72], "{name}");
    }
}

#[test]
fn rollback_all_and_stats() {
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mgr = mem_manager(Arc::new(CrashDir::new()), store.clone());
    let keep = mgr.begin().unwrap();
    mgr.write(keep, PageId(0), 0, b"keep").unwrap();
    mgr.commit(keep).unwrap();
    let a = mgr.begin().unwrap();
    let b = mgr.begin().unwrap();
    mgr.write(a, PageId(0), 8, b"aaaa").unwrap();
    mgr.write(b, PageId(0), 16, b"bbbb").unwrap();
    mgr.write(a, PageId(0), 8, b"AAAA").unwrap();
    mgr.write(b, PageId(3), 0, b"bbbb").unwrap();
    let out = mgr.rollback_all().unwrap();
    assert_eq!(out.txns, vec![a, b]);
    assert_eq!((out.undo_entries, out.pages_written), (4, 2));
    let mut expected = vec![0u8; PS * PAGES as usize];
    expected[..4].copy_from_slice(b"keep");
    assert_eq!(store.to_bytes(), expected);
    let s = mgr.stats();
    assert_eq!(
        (s.active, s.committed, s.rolled_back, s.rollbacks),
        (0, 1, 2, 1)
    );
    assert_eq!(
        (s.undo_records, s.undo_bytes, s.undo_bytes_held),
        (5, 20, 0)
    );
    assert!(s.rollback_time_max <= s.rollback_time_total);
}

// ---- appends racing their transaction's end ---------------------------------

/// An undo append racing the commit or the rollback of its own
/// transaction is either part of the transaction — before its commit
/// record, or applied by its rollback — or refused: no acknowledged undo
/// record follows the commit record, and a rollback applies exactly the
/// appends that succeeded. Method: one thread appends to a transaction
/// until it is refused while another commits it or rolls it back, over
/// many rounds; the LSNs returned are compared with the commit record's,
/// their count with the rollback's entries, and the total with the stats.
#[test]
fn an_append_racing_its_commit_or_rollback_is_in_the_transaction_or_refused() {
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mgr = RollbackConfig::with_storage(Arc::new(CrashDir::new()))
        .segment_size_bytes(1 << 20)
        .build(RawPages::shared(store))
        .unwrap();
    let mut total = 0u64;
    for round in 0..64u32 {
        let t = mgr.begin().unwrap();
        let started = std::sync::Barrier::new(2);
        let (acked, end) = std::thread::scope(|s| {
            let appender = s.spawn(|| {
                let append = || mgr.record_undo(t, PageId(1), 0, &[0u8; 4], &[2u8; 4]);
                // The first append lands before the race starts (the
                // barrier is passed whatever it returns, so that a failure
                // fails the test instead of hanging it).
                let first = append();
                started.wait();
                let mut acked = vec![first.unwrap_or_else(|e| panic!("first append: {e}"))];
                for i in 1..200_000u32 {
                    match append() {
                        Ok(lsn) => acked.push(lsn),
                        Err(Error::TransactionNotActive { .. }) => break,
                        Err(e) => panic!("append {i}: {e}"),
                    }
                }
                acked
            });
            started.wait();
            let end = if round % 2 == 0 {
                Ok(mgr.commit(t).unwrap())
            } else {
                Err(mgr.rollback(t).unwrap().undo_entries)
            };
            (appender.join().unwrap(), end)
        });
        match end {
            Ok(commit) => assert!(
                acked.iter().all(|lsn| *lsn < commit),
                "round {round}: an undo record after the commit record {commit:?}"
            ),
            Err(applied) => assert_eq!(applied, acked.len() as u64, "round {round}"),
        }
        total += acked.len() as u64;
    }
    let s = mgr.stats();
    assert_eq!((s.undo_records, s.undo_bytes_held), (total, 0));
}

// ---- deadlocks ----------------------------------------------------------------

#[test]
fn deadlocks_are_found_reported_and_resolved() {
    for policy in [VictimPolicy::Youngest, VictimPolicy::LeastUndoWork] {
        for n in 2..=6usize {
            let sink = FailureSink::new(16);
            let reports = sink.failures();
            let mgr = RollbackConfig::with_storage(Arc::new(CrashDir::new()))
                .victim_policy(policy)
                .failure_sink(sink)
                .build(RawPages::shared(Arc::new(
                    MemStore::new(PS, PAGES).unwrap(),
                )))
                .unwrap();
            let txns: Vec<TxnId> = (0..n).map(|_| mgr.begin().unwrap()).collect();
            // The youngest does the most work, so the policies disagree.
            for (i, &t) in txns.iter().enumerate() {
                for k in 0..=i {
                    mgr.record_undo(t, PageId(0), k, &[0], &[1]).unwrap();
                }
            }
            for i in 0..n - 1 {
                assert_eq!(mgr.add_wait(txns[i], txns[i + 1]).unwrap(), None);
            }
            let d = mgr.add_wait(txns[n - 1], txns[0]).unwrap().expect("cycle");
            assert_eq!(d.cycle.len(), n);
            let want = match policy {
                VictimPolicy::Youngest => txns[n - 1],
                VictimPolicy::LeastUndoWork => txns[0],
                other => panic!("no expectation for {other:?}"),
            };
            assert_eq!(d.victim, want, "{policy:?} n={n}");
            let f = reports.try_recv().unwrap();
            assert_eq!(f.kind, FailureKind::Deadlock { victim: want });
            mgr.rollback(d.victim).unwrap();
            // The victim's waits are gone: waiting again on the survivors
            // forms no cycle.
            let others: Vec<TxnId> = txns.iter().copied().filter(|t| *t != want).collect();
            if others.len() >= 2 {
                assert_eq!(mgr.add_wait(others[0], others[1]).unwrap(), None);
            }
            assert_eq!(mgr.stats().deadlocks, 1);
        }
    }
}

// ---- truncation ------------------------------------------------------------------

#[test]
fn checkpoint_removes_old_segments_but_not_those_an_active_txn_needs() {
    let dir = Arc::new(CrashDir::new());
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mgr = mem_manager(dir.clone(), store.clone());
    let old = mgr.begin().unwrap();
    mgr.write(old, PageId(3), 0, b"old").unwrap();
    let mut last = Lsn(0);
    for i in 0..40u8 {
        let t = mgr.begin().unwrap();
        mgr.write(t, PageId(0), 0, &[i; 32]).unwrap();
        last = mgr.commit(t).unwrap();
    }
    let segments = dir.segment_ids().len();
    assert!(segments > 3, "{segments}");
    assert!(
        mgr.checkpoint(last).unwrap().is_empty(),
        "the active txn pins the first segment"
    );
    mgr.rollback(old).unwrap();
    let last = mgr.stats().journal.durable_lsn;
    let removed = mgr.checkpoint(last).unwrap();
    assert_eq!(removed.len(), segments - 1);
    assert_eq!(dir.segment_ids().len(), 1);
    assert!(matches!(
        mgr.checkpoint(Lsn(u64::MAX)),
        Err(Error::InvalidArgument { .. })
    ));
    drop(mgr);
    let mgr = mem_manager(Arc::new(dir.crash(0)), store.clone());
    assert!(mgr.recovery_report().rolled_back.is_empty());
    let t = mgr.begin().unwrap();
    assert!(t.0 > 41, "ids are never reused: {t}");
}

// ---- crash simulation against a model -------------------------------------------

/// A transaction history run against the manager on crash-simulating storage,
/// with a model of what must survive.
struct Run {
    /// Writes of every transaction, in order: (txn, page, offset, bytes).
    writes: Vec<(TxnId, u64, usize, Vec<u8>)>,
    /// Transactions whose commit returned Ok.
    acked: Vec<TxnId>,
    /// A transaction whose commit was cut short by the crash.
    in_doubt: Option<TxnId>,
}

impl Run {
    fn expected(&self, with_doubt: bool) -> Vec<u8> {
        let mut img = initial_image();
        for (t, p, off, data) in &self.writes {
            if self.acked.contains(t) || (with_doubt && self.in_doubt == Some(*t)) {
                let at = *p as usize * PS + off;
                img[at..at + data.len()].copy_from_slice(data);
            }
        }
        img
    }
}

fn initial_image() -> Vec<u8> {
    (0..PS * PAGES as usize).map(|i| (i % 251) as u8).collect()
}

/// Runs a random history of `steps` operations from `seed` until the crash
/// switch fires.
fn run_history(
    seed: u64,
    steps: usize,
    switch: &Arc<CrashSwitch>,
) -> (Run, Arc<CrashStore>, Arc<CrashDir>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let store = Arc::new(
        CrashStore::from_bytes(PS, initial_image())
            .unwrap()
            .with_switch(switch.clone()),
    );
    let dir = Arc::new(CrashDir::new().with_switch(switch.clone()));
    let mut run = Run {
        writes: Vec::new(),
        acked: Vec::new(),
        in_doubt: None,
    };
    let Ok(mgr) = RollbackConfig::with_storage(dir.clone())
        .segment_size_bytes(400)
        .buffer_bytes(64)
        .build(RawPages::shared(store.clone()))
    else {
        return (run, store, dir);
    };
    let mut active: Vec<TxnId> = Vec::new();
    let mut locks: HashMap<(u64, usize), TxnId> = HashMap::new();
    for _ in 0..steps {
        let r = rng.random_range(0..10u8);
        let result: selfheal::Result<()> = (|| {
            if active.is_empty() || (r < 2 && active.len() < 3) {
                active.push(mgr.begin()?);
                return Ok(());
            }
            let t = active[rng.random_range(0..active.len())];
            match r {
                0..=5 => {
                    let page = rng.random_range(0..PAGES);
                    let slot = rng.random_range(0..SLOTS);
                    if locks.get(&(page, slot)).is_some_and(|o| *o != t) {
                        return Ok(());
                    }
                    locks.insert((page, slot), t);
                    let off = rng.random_range(0..SLOT);
                    let len = rng.random_range(1..=SLOT - off);
                    let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                    let at = slot * SLOT + off;
                    run.writes.push((t, page, at, data.clone()));
                    mgr.write(t, PageId(page), at, &data)?;
                }
                6 | 7 => {
                    store.sync()?;
                    run.in_doubt = Some(t);
                    mgr.commit(t)?;
                    run.in_doubt = None;
                    run.acked.push(t);
                    active.retain(|x| *x != t);
                    locks.retain(|_, o| *o != t);
                }
                8 => {
                    mgr.rollback(t)?;
                    active.retain(|x| *x != t);
                    locks.retain(|_, o| *o != t);
                }
                _ => {
                    store.sync()?;
                    let lsn = mgr.durable_lsn();
                    if lsn.0 > 0 {
                        mgr.checkpoint(lsn)?;
                    }
                }
            }
            Ok(())
        })();
        if result.is_err() {
            break;
        }
    }
    drop(mgr);
    (run, store, dir)
}

/// Recovers crashed images and checks them against the model.
fn recover_and_check(run: &Run, store: CrashStore, dir: CrashDir, ctx: &str) {
    let store = Arc::new(store);
    let mgr = RollbackConfig::with_storage(Arc::new(dir))
        .segment_size_bytes(400)
        .build(RawPages::shared(store.clone()))
        .unwrap_or_else(|e| panic!("{ctx}: recovery failed: {e}"));
    let got = store.live_bytes();
    assert_eq!(
        got,
        store.durable_bytes(),
        "{ctx}: recovery left unsynced pages"
    );
    let rolled: Vec<TxnId> = mgr
        .recovery_report()
        .rolled_back
        .iter()
        .map(|r| r.txn)
        .collect();
    for t in &run.acked {
        assert!(!rolled.contains(t), "{ctx}: committed {t} rolled back");
    }
    if got != run.expected(false) {
        assert!(
            run.in_doubt.is_some() && got == run.expected(true),
            "{ctx}: pages match no allowed outcome (in doubt: {:?})",
            run.in_doubt
        );
    }
    // The journal is usable after recovery.
    let t = mgr.begin().unwrap();
    mgr.commit(t).unwrap();
}

/// Crash at every mutating operation (page write, page sync, segment
/// create/append/sync/truncate/remove, state-file replace) of a fixed
/// history, with unsynced page writes dropped, applied or torn; with every
/// byte prefix of the unsynced journal tail surviving, and with holes in it
/// (a power loss writes dirty blocks back in any order): a 17-byte hole at
/// every position with the bytes after it kept, and every unsynced prefix
/// lost with the rest kept. Every image opens in the default mode and
/// matches the model. And crash again during the recovery.
#[test]
fn crash_at_every_step_and_every_journal_byte() {
    let seed = 0x5EED_0001;
    let probe = CrashSwitch::new();
    let _ = run_history(seed, 200, &probe);
    let total = probe.ops();
    assert!(total > 50, "history too short: {total} ops");
    let mut checked = 0;
    for n in 0..=total {
        let switch = CrashSwitch::new();
        switch.arm_at(n);
        let seed_n = seed ^ n;
        let (run, store, dir) = run_history(seed, 200, &switch);
        let unsynced = dir.unsynced_len();
        let ks: Vec<usize> = if unsynced <= 300 {
            (0..=unsynced).collect()
        } else {
            (0..=unsynced).step_by(7).chain([unsynced]).collect()
        };
        for k in ks {
            let ctx = format!(
                "seed {seed:#x} crash at op {n} keeping {k} of {unsynced} unsynced journal bytes"
            );
            recover_and_check(
                &run,
                store.crash(Some(seed_n ^ k as u64)),
                dir.crash(k),
                &ctx,
            );
            checked += 1;
        }
        // Holes: the unsynced bytes in `lo..hi` are lost, the others kept.
        let positions: Vec<usize> = if unsynced <= 300 {
            (0..unsynced).collect()
        } else {
            (0..unsynced).step_by(7).collect()
        };
        for &o in &positions {
            for (lo, hi) in [(o, o + 17), (0, o + 1)] {
                let mut i = 0;
                let image = dir.crash_keeping(|_, _| {
                    let keep = !(lo..hi).contains(&i);
                    i += 1;
                    keep
                });
                let ctx = format!(
                    "seed {seed:#x} crash at op {n}, unsynced journal bytes {lo}..{hi} of {unsynced} lost"
                );
                recover_and_check(&run, store.crash(Some(seed_n ^ o as u64)), image, &ctx);
                checked += 1;
            }
        }
        // A crash during recovery, then recovery again.
        if n % 5 == 0 {
            for m in 0..6 {
                let s = CrashSwitch::new();
                s.arm_at(m);
                let st = Arc::new(store.crash(Some(seed_n)).with_switch(s.clone()));
                let d = Arc::new(dir.crash(unsynced).with_switch(s.clone()));
                let r = RollbackConfig::with_storage(d.clone())
                    .segment_size_bytes(400)
                    .build(RawPages::shared(st.clone()));
                drop(r);
                let ctx = format!("seed {seed:#x} crash at op {n}, then at op {m} of recovery");
                recover_and_check(&run, st.crash(Some(m)), d.crash(0), &ctx);
            }
        }
    }
    eprintln!("{total} crash points, {checked} recoveries checked");
    assert!(checked > total);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random histories, random crash points, random surviving journal bytes.
    #[test]
    fn random_histories_survive_random_crashes(seed in any::<u64>(), at in 0u64..400, keep in 0usize..2000) {
        let switch = CrashSwitch::new();
        switch.arm_at(at);
        let (run, store, dir) = run_history(seed, 60, &switch);
        let ctx = format!("seed {seed:#x} crash at op {at} keeping {keep} unsynced journal bytes");
        recover_and_check(&run, store.crash(Some(seed)), dir.crash(keep), &ctx);
    }
}

// ---- recovery modes on damaged journal files -------------------------------------

/// Writes a journal with committed and in-flight work into real files and
/// returns the directory and the segment ids.
fn journal_on_disk(dir: &Path) -> Vec<u64> {
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mgr = RollbackConfig::new(dir)
        .segment_size_bytes(600)
        .build(RawPages::shared(store))
        .unwrap();
    for i in 0..12u8 {
        let t = mgr.begin().unwrap();
        mgr.write(t, PageId(u64::from(i) % PAGES), 0, &[i + 1; 16])
            .unwrap();
        if i % 3 != 2 {
            mgr.commit(t).unwrap();
        }
    }
    mgr.stop().unwrap();
    let mut ids = selfheal::testing::journal::DirStorage::open(dir)
        .unwrap()
        .list()
        .unwrap();
    ids.sort_unstable();
    ids
}

fn open_mode(dir: &Path, mode: RecoveryMode) -> selfheal::Result<TransactionRollbackManager> {
    RollbackConfig::new(dir)
        .segment_size_bytes(600)
        .recovery_mode(mode)
        .build(RawPages::shared(Arc::new(
            MemStore::new(PS, PAGES).unwrap(),
        )))
}

fn seg_path(dir: &Path, id: u64) -> std::path::PathBuf {
    dir.join(selfheal::testing::journal::segment_file_name(id))
}

#[test]
fn torn_tail_outcome_per_mode() {
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::StopAtFirstBadRecord,
    ] {
        let d = tempfile::tempdir().unwrap();
        let ids = journal_on_disk(d.path());
        let last = seg_path(d.path(), *ids.last().unwrap());
        let mut bytes = std::fs::read(&last).unwrap();
        bytes.extend_from_slice(&[0xAB; 11]); // half a record
        std::fs::write(&last, &bytes).unwrap();
        match (mode, open_mode(d.path(), mode)) {
            (RecoveryMode::AbsoluteConsistency, Err(Error::CorruptFile { .. })) => {}
            (RecoveryMode::AbsoluteConsistency, other) => panic!("{other:?}"),
            (_, Ok(m)) => {
                assert!(matches!(
                    m.recovery_report().damage.as_slice(),
                    [JournalDamage::TornTail {
                        bytes_dropped: 11,
                        ..
                    }]
                ));
                drop(m);
                // The tail was cut: the next open finds no damage.
                assert!(open_mode(d.path(), mode)
                    .unwrap()
                    .recovery_report()
                    .damage
                    .is_empty());
            }
            (_, Err(e)) => panic!("{mode:?}: {e}"),
        }
    }
}

#[test]
fn damage_in_the_middle_outcome_per_mode() {
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::StopAtFirstBadRecord,
    ] {
        let d = tempfile::tempdir().unwrap();
        let ids = journal_on_disk(d.path());
        assert!(ids.len() >= 3, "{ids:?}");
        let first = seg_path(d.path(), ids[0]);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[SEGMENT_HEADER_LEN + 30] ^= 0x10;
        std::fs::write(&first, &bytes).unwrap();
        // Every mode refuses: the damaged records were synced (a later
        // segment and the synced-through marks say so), and may hold
        // acknowledged commits, which even StopAtFirstBadRecord never drops.
        match open_mode(d.path(), mode) {
            Err(Error::CorruptFile { offset, reason, .. }) => {
                // The flipped byte lies in the second record (after a
                // 25-byte begin record); the error names that record.
                assert_eq!(offset, SEGMENT_HEADER_LEN as u64 + 25);
                if mode == RecoveryMode::StopAtFirstBadRecord {
                    assert!(reason.contains("synced-through mark"), "{reason}");
                }
            }
            other => panic!("{mode:?}: {other:?}"),
        }
    }
}

#[test]
fn missing_segment_and_bad_header_are_damage_not_tails() {
    let d = tempfile::tempdir().unwrap();
    let ids = journal_on_disk(d.path());
    std::fs::remove_file(seg_path(d.path(), ids[1])).unwrap();
    assert!(matches!(
        open_mode(d.path(), RecoveryMode::TolerateTornTail),
        Err(Error::CorruptFile { offset: 16, .. })
    ));
    let d = tempfile::tempdir().unwrap();
    let ids = journal_on_disk(d.path());
    let p = seg_path(d.path(), ids[1]);
    let mut b = std::fs::read(&p).unwrap();
    b[..SEGMENT_HEADER_LEN].fill(0);
    std::fs::write(&p, b).unwrap();
    assert!(matches!(
        open_mode(d.path(), RecoveryMode::TolerateTornTail),
        Err(Error::CorruptFile { offset: 0, .. })
    ));
    assert!(matches!(
        open_mode(d.path(), RecoveryMode::StopAtFirstBadRecord),
        Err(Error::CorruptFile { offset: 0, .. })
    ));
    // A newer format version is refused in every mode.
    let d = tempfile::tempdir().unwrap();
    let ids = journal_on_disk(d.path());
    let p = seg_path(d.path(), ids[0]);
    let mut b = std::fs::read(&p).unwrap();
    b[4..8].copy_from_slice(&3u32.to_le_bytes());
    let crc = selfheal::testing::reference_crc32(&b[..36]);
    b[36..40].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&p, b).unwrap();
    assert!(matches!(
        open_mode(d.path(), RecoveryMode::StopAtFirstBadRecord),
        Err(Error::UnsupportedVersion { found: 3, .. })
    ));
}

/// Through a `CorruptionDetector`, under both checksum placements: a page
/// torn by a crash in the middle of an uncommitted transaction fails
/// verification, so recovery never reseals it: the transaction stays
/// pending (listed in the report with its pages) while every other page is
/// restored. Once the page is repaired (here from the copy a replica would
/// hold: the transaction's write), the retried rollback completes, and
/// every page verifies and holds exactly the committed bytes. With a repair
/// hook, recovery repairs the page itself and finishes at open. Under the
/// sidecar placement the table knows the transaction's own write, so a
/// page torn between its before- and after-images is provably that write
/// torn: recovery rolls it back at open (the trailer's tear keeps the old
/// trailer, which proves nothing, so it blocks).
#[test]
fn recovery_through_the_detector_blocks_on_torn_pages_until_they_are_repaired() {
    const DPS: usize = 256;
    let (mut blocked_seen, mut clean_seen) = (0, 0);
    for with_hook in [false, true] {
        for sidecar in [false, true] {
            for seed in 0..40u64 {
                let ctx = format!("seed {seed} sidecar {sidecar} hook {with_hook}");
                let placement = if sidecar {
                    ChecksumPlacement::Sidecar(Arc::new(ChecksumTable::new(DPS).unwrap()))
                } else {
                    ChecksumPlacement::Trailer
                };
                let store = Arc::new(CrashStore::new(DPS, 4).unwrap());
                let det = Arc::new(
                    CorruptionConfig::new(placement.clone())
                        .build(store.clone())
                        .unwrap(),
                );
                seal_numbered_pages(&det, 4).unwrap();
                store.sync().unwrap();
                let dir = Arc::new(CrashDir::new());
                let mgr = RollbackConfig::with_storage(dir.clone())
                    .build(det.clone())
                    .unwrap();
                let t1 = mgr.begin().unwrap();
                mgr.write(t1, PageId(0), 10, &[0xC0; 40]).unwrap();
                store.sync().unwrap();
                mgr.commit(t1).unwrap();
                let t2 = mgr.begin().unwrap();
                mgr.write(t2, PageId(1), 0, &[0xEE; 200]).unwrap();
                mgr.write(t2, PageId(2), 50, &[0xDD; 100]).unwrap();
                mgr.write(t2, PageId(1), 100, &[0xAA; 100]).unwrap();
                // What a replica that received the transaction's writes holds.
                let replica = Arc::new(store.live_bytes());
                let crashed = Arc::new(store.crash(Some(seed)));
                // The sidecar table is the detector's, shared across the crash.
                let det2 = Arc::new(
                    CorruptionConfig::new(placement.clone())
                        .build(crashed.clone())
                        .unwrap(),
                );
                let repair = {
                    let (det2, replica) = (det2.clone(), replica.clone());
                    move |page: PageId| -> selfheal::Result<bool> {
                        let Some(ticket) = det2.begin_repair(page) else {
                            return Ok(false);
                        };
                        let at = page.0 as usize * DPS;
                        Ok(det2.commit_repair(ticket, &replica[at..at + DPS]).is_ok())
                    }
                };
                let mut failing = Vec::new();
                let mut buf = vec![0u8; DPS];
                for p in [1u64, 2] {
                    if det2
                        .verify(
                            PageId(p),
                            &crashed.live_bytes()[p as usize * DPS..(p as usize + 1) * DPS],
                        )
                        .is_err()
                    {
                        failing.push(PageId(p));
                    }
                }
                let dir2 = Arc::new(dir.crash(0));
                let mut cfg = RollbackConfig::with_storage(dir2.clone());
                if with_hook {
                    cfg = cfg.repair_hook(Arc::new(repair.clone()));
                }
                let mgr2 = cfg.build(det2.clone()).unwrap();
                let report = mgr2.recovery_report().clone();
                if failing.is_empty() || with_hook || sidecar {
                    clean_seen += 1;
                    assert!(report.blocked.is_empty(), "{ctx}: {report:?}");
                    assert_eq!(report.rolled_back[0].txn, t2, "{ctx}");
                } else {
                    blocked_seen += 1;
                    assert!(report.rolled_back.is_empty(), "{ctx}: {report:?}");
                    assert_eq!(report.blocked.len(), 1, "{ctx}");
                    assert_eq!(report.blocked[0].txn, t2, "{ctx}");
                    assert_eq!(report.blocked[0].pages, failing, "{ctx}");
                    assert_eq!(mgr2.active_transactions(), vec![t2], "{ctx}");
                    assert_eq!(mgr2.blocked_rollbacks(), report.blocked, "{ctx}");
                    // Never resealed: still fenced, and a retry without a
                    // repair is blocked again and names the page.
                    for p in &failing {
                        assert!(det2.read_verified(*p, &mut buf).is_err(), "{ctx}");
                    }
                    match mgr2.rollback(t2) {
                        Err(Error::RollbackBlocked { txn, page, .. }) => {
                            assert_eq!((txn, page), (t2, failing[0]), "{ctx}");
                        }
                        other => panic!("{ctx}: {other:?}"),
                    }
                    // The checkpoint keeps the pending transaction's records.
                    let lsn = mgr2.durable_lsn();
                    mgr2.checkpoint(lsn).unwrap();
                    for p in &failing {
                        assert!(repair(*p).unwrap(), "{ctx}");
                    }
                    let out = mgr2.rollback(t2).unwrap();
                    assert_eq!(out.txns, vec![t2], "{ctx}");
                    assert!(mgr2.blocked_rollbacks().is_empty());
                }
                for p in 0..4u64 {
                    det2.read_verified(PageId(p), &mut buf)
                        .unwrap_or_else(|e| panic!("{ctx} page {p}: {e}"));
                    let data = if sidecar { &buf[..] } else { &buf[..DPS - 16] };
                    if p == 0 {
                        assert_eq!(&data[10..50], &[0xC0; 40], "{ctx}");
                        assert!(data[..10].iter().chain(&data[50..]).all(|b| *b == 1));
                    } else {
                        assert!(data.iter().all(|b| *b == p as u8 + 1), "{ctx} page {p}");
                    }
                }
                // Nothing is left to do at the next open.
                mgr2.stop().unwrap();
                let again = RollbackConfig::with_storage(dir2)
                    .build(det2.clone())
                    .unwrap();
                let r = again.recovery_report();
                assert!(
                    r.rolled_back.is_empty() && r.blocked.is_empty(),
                    "{ctx}: {r:?}"
                );
            }
        }
    }
    assert!(
        blocked_seen > 10 && clean_seen > 10,
        "{blocked_seen} {clean_seen}"
    );
}

// ---- concurrent writers on one page -------------------------------------------

#[test]
fn concurrent_writes_to_one_page_are_both_kept() {
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mgr = Arc::new(mem_manager(Arc::new(CrashDir::new()), store.clone()));
    const ROUNDS: u32 = 200;
    let barrier = Arc::new(std::sync::Barrier::new(3));
    let writers: Vec<_> = (0..2usize)
        .map(|w| {
            let (m, b) = (mgr.clone(), barrier.clone());
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let t = m.begin().unwrap();
                    let bytes = [(round as u8).wrapping_add(1); 8];
                    m.write(t, PageId(1), w * 64, &bytes).unwrap();
                    m.commit(t).unwrap();
                    b.wait();
                    b.wait();
                }
            })
        })
        .collect();
    let mut page = vec![0u8; PS];
    for round in 0..ROUNDS {
        barrier.wait();
        store.read_page(PageId(1), &mut page).unwrap();
        let want = [(round as u8).wrapping_add(1); 8];
        assert_eq!(&page[0..8], &want, "round {round}: writer 0's update lost");
        assert_eq!(
            &page[64..72],
            &want,
            "round {round}: writer 1's update lost"
        );
        barrier.wait();
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(mgr.stats().committed, 2 * u64::from(ROUNDS));
}

#[test]
fn a_write_racing_rollback_all_never_survives_it() {
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let mgr = Arc::new(mem_manager(Arc::new(CrashDir::new()), store.clone()));
    const ROUNDS: usize = 300;
    let barrier = Arc::new(std::sync::Barrier::new(3));
    let writers: Vec<_> = (0..2usize)
        .map(|w| {
            let (m, b) = (mgr.clone(), barrier.clone());
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    let t = m.begin().unwrap();
                    b.wait();
                    for i in 0..4 {
                        match m.write(t, PageId(2), w * 64 + i * 8, &[0xEE; 8]) {
                            Ok(_) => {}
                            Err(Error::TransactionNotActive { .. }) => break,
                            Err(e) => panic!("unexpected error {e}"),
                        }
                    }
                    b.wait();
                }
            })
        })
        .collect();
    let mut page = vec![0u8; PS];
    for round in 0..ROUNDS {
        barrier.wait();
        for _ in 0..(round % 7) {
            std::thread::yield_now();
        }
        let out = mgr.rollback_all().unwrap();
        assert_eq!(out.txns.len(), 2, "round {round}");
        barrier.wait();
        // Both transactions were active when rollback_all started, so both
        // were rolled back; none of their bytes may remain.
        store.read_page(PageId(2), &mut page).unwrap();
        assert_eq!(
            page,
            vec![0u8; PS],
            "round {round}: a rolled-back write survived"
        );
    }
    for w in writers {
        w.join().unwrap();
    }
}

// ---- untrusted header values ----------------------------------------------------

/// A journal holding one segment with a valid-checksum header of the given
/// values, followed by `records`, and a state file that lists it.
fn crafted_journal(segment: u64, first_lsn: u64, next_txn: u64, records: &[u8]) -> Arc<CrashDir> {
    let dir = Arc::new(CrashDir::new());
    let header = selfheal::testing::journal::SegmentHeader {
        version: SEGMENT_VERSION,
        segment,
        first_lsn: Lsn(first_lsn),
        next_txn,
    };
    dir.create(segment, &header.encode()).unwrap();
    if !records.is_empty() {
        dir.append(segment, records).unwrap();
    }
    dir.sync(segment).unwrap();
    if segment < u64::MAX {
        let state = JournalState {
            oldest: segment,
            newest: segment,
            txn_reserved_end: 0,
        };
        dir.write_state(&state.encode()).unwrap();
    }
    dir
}

fn open_crafted(
    dir: Arc<CrashDir>,
    mode: RecoveryMode,
) -> selfheal::Result<TransactionRollbackManager> {
    RollbackConfig::with_storage(dir)
        .recovery_mode(mode)
        .build(RawPages::shared(Arc::new(
            MemStore::new(PS, PAGES).unwrap(),
        )))
}

#[test]
fn out_of_range_header_values_are_corrupt_files_not_panics() {
    for (segment, first_lsn, next_txn, what) in [
        (1, 0, 1, "first LSN 0"),
        (1, u64::MAX - 1, 1, "first LSN near the end"),
        (1, u64::MAX / 2, 1, "first LSN at half the range"),
        (1, 1, u64::MAX, "next txn at the end"),
        (1, 1, u64::MAX / 2, "next txn at half the range"),
        (u64::MAX, 1, 1, "segment number u64::MAX"),
    ] {
        for mode in [
            RecoveryMode::TolerateTornTail,
            RecoveryMode::AbsoluteConsistency,
        ] {
            let dir = crafted_journal(segment, first_lsn, next_txn, &[]);
            match open_crafted(dir, mode) {
                Err(Error::CorruptFile { .. }) => {}
                Ok(m) => {
                    // Using the journal must not overflow either.
                    let r = m.begin().and_then(|t| m.commit(t));
                    panic!("{what} ({mode:?}): opened, then {r:?}")
                }
                Err(e) => panic!("{what} ({mode:?}): {e}"),
            }
        }
    }
}

#[test]
fn a_record_with_the_largest_txn_id_gives_typed_errors_not_overflow() {
    let mut records = Vec::new();
    selfheal::testing::journal::Record::Begin {
        txn: TxnId(u64::MAX),
    }
    .encode_into(Lsn(1), &mut records);
    selfheal::testing::journal::Record::Abort {
        txn: TxnId(u64::MAX),
    }
    .encode_into(Lsn(2), &mut records);
    let mgr = open_crafted(crafted_journal(1, 1, 1, &records), RecoveryMode::default()).unwrap();
    for _ in 0..3 {
        assert!(matches!(mgr.begin(), Err(Error::IdSpaceExhausted { .. })));
    }
}

// ---- commit after a timed-out fsync wait ------------------------------------------

#[test]
fn a_commit_whose_fsync_wait_timed_out_can_be_retried() {
    let (open, gate) = crossbeam_channel::unbounded();
    let dir = Arc::new(GatedDir::syncs(CrashDir::new(), gate));
    let pages = RawPages::shared(Arc::new(MemStore::new(PS, PAGES).unwrap()));
    let mgr = Arc::new(
        RollbackConfig::with_storage(dir)
            .sync_wait_timeout(Duration::from_millis(50))
            .build(pages)
            .unwrap(),
    );
    let (a, b) = (mgr.begin().unwrap(), mgr.begin().unwrap());
    // A becomes the fsync leader and blocks in the sync.
    let leader = {
        let m = mgr.clone();
        std::thread::spawn(move || m.commit(a).unwrap())
    };
    while mgr.stats().journal.commits < 1 {
        std::thread::yield_now();
    }
    // B waits for A's fsync and gives up after the timeout.
    let err = mgr.commit(b).unwrap_err();
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::TimedOut),
        "{err:?}"
    );
    // Its commit record may already be on its way to disk: it cannot be
    // rolled back any more.
    assert!(matches!(
        mgr.rollback(b),
        Err(Error::TransactionNotActive { .. })
    ));
    open.send(()).unwrap();
    open.send(()).unwrap();
    leader.join().unwrap();
    // Retrying finishes the commit.
    let lsn = mgr.commit(b).unwrap();
    assert!(mgr.durable_lsn() >= lsn);
    let s = mgr.stats();
    assert_eq!((s.committed, s.active), (2, 0));
    assert!(matches!(
        mgr.commit(b),
        Err(Error::TransactionNotActive { .. })
    ));
}

// ---- power loss: a hole in the unsynced tail -------------------------------------

#[test]
fn a_hole_in_the_unsynced_tail_is_a_torn_tail_in_every_mode_but_absolute() {
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let dir = Arc::new(CrashDir::new());
    // A tiny buffer: records reach the file at once, without an fsync.
    let mgr = RollbackConfig::with_storage(dir.clone())
        .buffer_bytes(1)
        .build(RawPages::shared(store.clone()))
        .unwrap();
    let a = mgr.begin().unwrap();
    mgr.write(a, PageId(0), 0, b"AAAA").unwrap();
    mgr.commit(a).unwrap();
    let b = mgr.begin().unwrap();
    mgr.write(b, PageId(1), 0, b"BBBB").unwrap();
    // Two more undo records reach the file; power is lost before an fsync
    // covers them, and writeback kept the later one but not the earlier.
    let synced = dir.segment(1).unwrap().len() - dir.unsynced_len();
    mgr.record_undo(b, PageId(1), 8, &[0; 4], b"CCCC").unwrap();
    let second = dir.segment(1).unwrap().len();
    mgr.record_undo(b, PageId(1), 16, &[0; 4], b"DDDD").unwrap();
    assert!(dir.unsynced_len() > 0);
    drop(mgr);
    let image = |mode| {
        let d = dir.crash_keeping(|_, at| at >= second);
        RollbackConfig::with_storage(Arc::new(d))
            .recovery_mode(mode)
            .build(RawPages::shared(store.clone()))
    };
    assert!(matches!(
        image(RecoveryMode::AbsoluteConsistency),
        Err(Error::CorruptFile { offset, .. }) if offset == synced as u64
    ));
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::StopAtFirstBadRecord,
    ] {
        let m = image(mode).unwrap();
        let r = m.recovery_report();
        match r.damage.as_slice() {
            [JournalDamage::TornTail { offset, reason, .. }] => {
                assert_eq!(*offset, synced as u64, "{mode:?}");
                assert!(reason.contains("1 valid records after it"), "{reason}");
            }
            other => panic!("{mode:?}: {other:?}"),
        }
        assert_eq!(r.rolled_back.len(), 1);
        assert_eq!(r.rolled_back[0].txn, b);
        let mut page = vec![0u8; PS];
        store.read_page(PageId(0), &mut page).unwrap();
        assert_eq!(&page[..4], b"AAAA", "the acknowledged commit is kept");
        store.read_page(PageId(1), &mut page).unwrap();
        assert_eq!(&page[..4], &[0; 4], "the in-flight change is undone");
        store
            .write_page(PageId(1), &{
                let mut p = page.clone();
                p[..4].copy_from_slice(b"BBBB");
                p
            })
            .unwrap();
    }
}

// ---- undo of finished transactions is not checked against the store ------------

#[test]
fn only_in_flight_undo_must_fit_the_store_at_open() {
    let dir = Arc::new(CrashDir::new());
    let mgr = mem_manager(dir.clone(), Arc::new(MemStore::new(PS, PAGES).unwrap()));
    let t = mgr.begin().unwrap();
    mgr.write(t, PageId(3), PS - 4, b"tail").unwrap();
    mgr.commit(t).unwrap();
    let t = mgr.begin().unwrap();
    mgr.write(t, PageId(2), 0, b"gone").unwrap();
    mgr.rollback(t).unwrap();
    mgr.stop().unwrap();
    // The store shrank to two smaller pages: the finished transactions'
    // undo no longer fits, and does not matter.
    let small = Arc::new(MemStore::new(PS / 2, 2).unwrap());
    let reopened = RollbackConfig::with_storage(dir.clone())
        .segment_size_bytes(1024)
        .build(RawPages::shared(small.clone()))
        .unwrap();
    assert!(reopened.recovery_report().rolled_back.is_empty());
    // An in-flight transaction's undo that does not fit is still refused.
    let t = reopened.begin().unwrap();
    reopened.write(t, PageId(1), 0, b"open").unwrap();
    drop(reopened);
    let crashed = Arc::new(dir.crash(usize::MAX));
    let tiny = Arc::new(MemStore::new(PS / 2, 1).unwrap());
    assert!(matches!(
        RollbackConfig::with_storage(crashed).build(RawPages::shared(tiny)),
        Err(Error::PageOutOfRange { .. })
    ));
}

// ---- journals of format version 1 -------------------------------------------------

/// A journal as format version 1 wrote it (no state file, no marks, undo
/// without after-images) in three segments: transactions 1, 2 and 4
/// committed, 3 in flight with a change to page 2.
fn v1_journal() -> Arc<CrashDir> {
    use selfheal::testing::journal::{Record, SegmentHeader};
    let dir = Arc::new(CrashDir::new());
    let undo = |txn: u64, page: u64| Record::UndoV1 {
        txn: TxnId(txn),
        page: PageId(page),
        offset: 4,
        before: vec![txn as u8; 4],
    };
    let segments: [&[Record]; 3] = [
        &[
            Record::Begin { txn: TxnId(1) },
            undo(1, 0),
            Record::Commit { txn: TxnId(1) },
            Record::Begin { txn: TxnId(2) },
            undo(2, 1),
        ],
        &[
            Record::Commit { txn: TxnId(2) },
            Record::Begin { txn: TxnId(3) },
            undo(3, 2),
        ],
        &[
            Record::Begin { txn: TxnId(4) },
            undo(4, 3),
            Record::Commit { txn: TxnId(4) },
        ],
    ];
    let mut lsn = 1;
    for (i, recs) in segments.iter().enumerate() {
        let mut b = SegmentHeader {
            version: 1,
            segment: i as u64 + 1,
            first_lsn: Lsn(lsn),
            next_txn: 1,
        }
        .encode()
        .to_vec();
        for r in recs.iter() {
            r.encode_into(Lsn(lsn), &mut b);
            lsn += 1;
        }
        dir.set_segment(i as u64 + 1, b);
    }
    dir
}

#[test]
fn a_version_1_journal_is_recovered_and_continued_in_version_2() {
    let dir = v1_journal();
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    store.write_page(PageId(2), &[0xEE; PS]).unwrap();
    let m = mem_manager(dir.clone(), store.clone());
    let r = m.recovery_report();
    assert!(r.damage.is_empty(), "{:?}", r.damage);
    assert_eq!(r.rolled_back.len(), 1);
    assert_eq!(r.rolled_back[0].txn, TxnId(3));
    // A version-1 record has no after-image: it is applied unconditionally.
    let mut page = vec![0u8; PS];
    store.read_page(PageId(2), &mut page).unwrap();
    assert_eq!(&page[4..8], &[3; 4]);
    assert_eq!(&page[..4], &[0xEE; 4]);
    let t = m.begin().unwrap();
    assert!(t.0 > 4, "id {t} was reused");
    m.write(t, PageId(0), 0, b"new").unwrap();
    m.commit(t).unwrap();
    m.stop().unwrap();
    // New records went to a new segment of the current version, and the
    // journal now has a state file.
    let ids = dir.segment_ids();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    let newest = selfheal::testing::journal::decode_segment(&dir.segment(4).unwrap()).unwrap();
    assert_eq!(newest.header.version, SEGMENT_VERSION);
    assert!(dir.state_file().is_some());
    let m = mem_manager(dir, store);
    assert!(m.recovery_report().damage.is_empty());
    assert!(m.recovery_report().rolled_back.is_empty());
}

#[test]
fn transaction_ids_stay_monotonic_when_every_segment_of_a_version_1_journal_is_dropped() {
    let dir = v1_journal();
    let mut first = dir.segment(1).unwrap();
    first[0] ^= 0xFF;
    dir.set_segment(1, first);
    assert!(matches!(
        open_crafted(dir.clone(), RecoveryMode::TolerateTornTail),
        Err(Error::CorruptFile { offset: 0, .. })
    ));
    // Version 1 has no synced-through marks: StopAtFirstBadRecord cuts.
    let m = open_crafted(dir, RecoveryMode::StopAtFirstBadRecord).unwrap();
    assert!(matches!(
        m.recovery_report().damage.as_slice(),
        [JournalDamage::Corrupt { offset: 0, segments_dropped, .. }] if segments_dropped == &vec![2, 3]
    ));
    // The journal handed out ids 1..=4 before; none is handed out again.
    let t = m.begin().unwrap();
    assert!(t.0 > 4, "id {t} was reused");
}

/// A journal storage whose fsyncs hang, once armed, until the test drops
/// the gate (then they fail, like a disk that went away).
#[derive(Debug)]
struct HangingDir {
    inner: CrashDir,
    hang: std::sync::atomic::AtomicBool,
    gate: crossbeam_channel::Receiver<()>,
}

impl JournalStorage for HangingDir {
    fn list(&self) -> selfheal::Result<Vec<u64>> {
        self.inner.list()
    }
    fn read(&self, s: u64) -> selfheal::Result<Vec<u8>> {
        self.inner.read(s)
    }
    fn create(&self, s: u64, h: &[u8]) -> selfheal::Result<()> {
        self.inner.create(s, h)
    }
    fn append(&self, s: u64, b: &[u8]) -> selfheal::Result<()> {
        self.inner.append(s, b)
    }
    fn sync(&self, s: u64) -> selfheal::Result<()> {
        if self.hang.load(std::sync::atomic::Ordering::SeqCst) && self.gate.recv().is_err() {
            return Err(selfheal::Error::Io {
                context: "syncing on a disk that went away".into(),
                source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
            });
        }
        self.inner.sync(s)
    }
    fn truncate(&self, s: u64, l: u64) -> selfheal::Result<()> {
        self.inner.truncate(s, l)
    }
    fn remove(&self, s: u64) -> selfheal::Result<()> {
        self.inner.remove(s)
    }
    fn read_state(&self) -> selfheal::Result<Option<Vec<u8>>> {
        self.inner.read_state()
    }
    fn write_state(&self, b: &[u8]) -> selfheal::Result<()> {
        self.inner.write_state(b)
    }
}

#[test]
fn stop_is_bounded_when_the_journal_fsync_hangs_and_reports_it_on_the_bus() {
    let (release, gate) = crossbeam_channel::bounded::<()>(0);
    let dir = Arc::new(HangingDir {
        inner: CrashDir::new(),
        hang: std::sync::atomic::AtomicBool::new(false),
        gate,
    });
    let sink = FailureSink::new(64);
    let pages = RawPages::shared(Arc::new(MemStore::new(PS, PAGES).unwrap()));
    let mgr = RollbackConfig::with_storage(dir.clone())
        .failure_sink(sink.clone())
        .stop_timeout(Duration::from_millis(300))
        .build(pages)
        .unwrap();
    let t = mgr.begin().unwrap();
    mgr.write(t, PageId(1), 0, b"abc").unwrap();
    dir.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let err = mgr.stop().unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop waited {:?}",
        started.elapsed()
    );
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("did not finish within"), "{err}");
    let reported = sink
        .failures()
        .try_iter()
        .find(|f| matches!(f.kind, FailureKind::JournalPoisoned))
        .expect("the hung flush is reported on the bus");
    assert!(
        reported.evidence.contains("did not finish within"),
        "{reported}"
    );
    // Stopped for good: a second stop does nothing, calls are refused.
    mgr.stop().unwrap();
    assert!(matches!(mgr.begin(), Err(Error::Stopped { .. })));
    drop(release);
}
