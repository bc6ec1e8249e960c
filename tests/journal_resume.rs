//! Goal: show that a retryable failure of the undo journal (a full disk, a
//! failed write or fsync) stalls it instead of ending it, that a resume
//! loses nothing it accepted — every commit acknowledged before and after is
//! durable, a refused call is refused loudly — and that what cannot be
//! resumed stays poisoned and is escalated.
//! Method: the journal on a `CrashDir` whose appends fail with `ENOSPC`
//! (after a short write) or whose fsyncs fail the way Linux can (the
//! unsynced bytes dropped, a later fsync succeeding anyway); a model of the
//! acknowledged commits checked against the store after a crash (only the
//! durable bytes kept) and a reopen; crashes at every step of a resume; and
//! the `AutoRecoveryManager` in Automatic and Observe mode over a disk that
//! fills and frees.

mod recovery_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use recovery_common::*;
use selfheal::healer::{HealerConfig, Outcome, Problem};
use selfheal::rollback::RawPages;
use selfheal::testing::{both_placements, CrashDir, CrashSwitch};
use selfheal::{
    Error, FailureKind, Lsn, MemStore, Mode, PageId, PageStore, RollbackConfig, Target,
    TransactionRollbackManager, TxnId,
};

const RPS: usize = 128;
const RPAGES: u64 = 8;
const ENOSPC: i32 = 28;
const EIO: i32 = 5;
const EROFS: i32 = 30;

fn manager(dir: Arc<CrashDir>, store: Arc<MemStore>) -> TransactionRollbackManager {
    RollbackConfig::with_storage(dir)
        .segment_size_bytes(512)
        .build(RawPages::shared(store))
        .unwrap()
}

/// [`manager`] with a write buffer of `bytes` (a batch is written once it
/// holds that much).
fn manager_buffered(
    dir: Arc<CrashDir>,
    store: Arc<MemStore>,
    bytes: usize,
) -> TransactionRollbackManager {
    RollbackConfig::with_storage(dir)
        .segment_size_bytes(512)
        .buffer_bytes(bytes)
        .build(RawPages::shared(store))
        .unwrap()
}

/// What the store must hold: per page, the byte the last acknowledged
/// commit wrote (0 for none).
#[derive(Default)]
struct Model {
    committed: BTreeMap<u64, u8>,
}

impl Model {
    fn check(&self, store: &MemStore, pending: Option<(u64, u8)>) {
        for p in 0..RPAGES {
            let mut b = vec![0u8; RPS];
            store.read_page(PageId(p), &mut b).unwrap();
            let want = self.committed.get(&p).copied().unwrap_or(0);
            match pending {
                // A commit that returned an error may or may not survive.
                Some((pp, v)) if pp == p => {
                    assert!(b[0] == want || b[0] == v, "page {p}: {} ", b[0]);
                }
                _ => assert_eq!(b[0], want, "page {p}"),
            }
        }
    }
}

/// One transaction writing `value` at the start of `page`, committed.
fn txn(mgr: &TransactionRollbackManager, page: u64, value: u8) -> selfheal::Result<TxnId> {
    let t = mgr.begin()?;
    mgr.write(t, PageId(page), 0, &[value; 4])?;
    mgr.commit(t)?;
    Ok(t)
}

fn is_stalled(e: &Error) -> bool {
    matches!(e, Error::JournalStalled { .. })
}

/// Reopens a crashed image (durable bytes only) over the store and returns
/// the new manager.
fn crash_and_reopen(dir: &CrashDir, store: &Arc<MemStore>) -> TransactionRollbackManager {
    let m = manager(Arc::new(dir.crash(0)), store.clone());
    assert!(
        m.recovery_report().damage.is_empty(),
        "{:?}",
        m.recovery_report().damage
    );
    m
}

#[test]
fn enospc_stalls_the_journal_and_a_resume_keeps_every_acknowledged_commit() {
    let dir = Arc::new(CrashDir::new());
    let store = Arc::new(MemStore::new(RPS, RPAGES).unwrap());
    let mgr = manager(dir.clone(), store.clone());
    let mut model = Model::default();
    for (i, p) in (0..3u64).enumerate() {
        txn(&mgr, p, 10 + i as u8).unwrap();
        model.committed.insert(p, 10 + i as u8);
    }
    let failures = mgr.failures();
    // The disk fills: the commit's write runs out of space part-way.
    dir.fail_appends(3, ENOSPC);
    let t = mgr.begin().unwrap();
    mgr.write(t, PageId(4), 0, &[44; 4]).unwrap_err();
    // The write-ahead rule held: the page was not written.
    let e = mgr.commit(t).unwrap_err();
    assert!(
        is_stalled(&e) || matches!(e, Error::TransactionNotActive { .. }),
        "{e}"
    );
    let stall = mgr.journal_stall().expect("stalled");
    assert!(stall.no_space, "{stall:?}");
    assert!(mgr.stats().journal.stalled && !mgr.stats().journal.poisoned);
    // Refused loudly, and retryable.
    let e = mgr.begin().map(|_| ()).unwrap_err();
    assert!(is_stalled(&e) && e.is_retryable(), "{e}");
    assert!(e.to_string().contains("nothing"), "{e}");
    let f = failures.try_recv().expect("the stall is reported");
    assert_eq!(f.kind, FailureKind::JournalStalled { no_space: true });
    // Resumes while the disk is still full fail and keep it stalled.
    for n in 1..=2u32 {
        let e = mgr.resume().unwrap_err();
        assert!(is_stalled(&e), "{e}");
        assert_eq!(mgr.journal_stall().unwrap().failed_resumes, n);
    }
    // Space returns.
    let r = mgr.resume().unwrap();
    assert!(r.was_stalled && r.records_rewritten > 0, "{r:?}");
    assert!(mgr.journal_stall().is_none());
    // The transaction in flight kept its state: it commits now.
    match mgr.commit(t) {
        Ok(_) => {}
        Err(Error::TransactionNotActive { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    mgr.rollback(t).ok();
    for (i, p) in (5..8u64).enumerate() {
        txn(&mgr, p, 50 + i as u8).unwrap();
        model.committed.insert(p, 50 + i as u8);
    }
    assert_eq!(dir.injected_failures(), 3);
    drop(mgr);
    let again = crash_and_reopen(&dir, &store);
    model.check(&store, None);
    assert!(again.active_transactions().is_empty());
}

#[test]
fn a_commit_refused_by_a_stall_commits_on_retry_after_the_resume() {
    let dir = Arc::new(CrashDir::new());
    let store = Arc::new(MemStore::new(RPS, RPAGES).unwrap());
    let mgr = manager(dir.clone(), store.clone());
    let mut model = Model::default();
    txn(&mgr, 0, 1).unwrap();
    model.committed.insert(0, 1);
    let t = mgr.begin().unwrap();
    mgr.write(t, PageId(1), 0, &[7; 4]).unwrap();
    dir.fail_appends(1, ENOSPC);
    let e = mgr.commit(t).unwrap_err();
    assert!(is_stalled(&e), "{e}");
    // Not acknowledged: a crash now may keep it or not.
    model.check(&store, Some((1, 7)));
    mgr.resume().unwrap();
    mgr.commit(t).unwrap();
    model.committed.insert(1, 7);
    drop(mgr);
    crash_and_reopen(&dir, &store);
    model.check(&store, None);
}

/// A commit whose record fills the buffer, and whose write of it fails,
/// is noted as committing before that write: the transaction takes no more
/// undo (refused as committing, not as finished under a status still
/// active), and the retry after the resume commits it with the same commit
/// record — one in the journal, not two. Method: a one-byte buffer (every
/// append writes), the disk full during the commit, then space back.
#[test]
fn a_commit_whose_buffer_write_fails_is_retried_with_its_one_commit_record() {
    let dir = Arc::new(CrashDir::new());
    let store = Arc::new(MemStore::new(RPS, RPAGES).unwrap());
    let mgr = manager_buffered(dir.clone(), store.clone(), 1);
    let t = mgr.begin().unwrap();
    mgr.write(t, PageId(1), 0, &[7; 4]).unwrap();
    let commits = mgr.stats().journal.commits;
    dir.set_no_space(true);
    let e = mgr.commit(t).unwrap_err();
    assert!(is_stalled(&e), "{e}");
    assert_eq!(mgr.active_transactions(), vec![t]);
    match mgr.record_undo(t, PageId(2), 0, &[0; 4], &[1; 4]) {
        Err(Error::TransactionNotActive { state, .. }) => assert_eq!(state, "committing"),
        other => panic!("{other:?}"),
    }
    dir.set_no_space(false);
    mgr.resume().unwrap();
    mgr.commit(t).unwrap();
    assert_eq!(
        mgr.stats().journal.commits,
        commits + 1,
        "one commit record"
    );
    assert!(mgr.active_transactions().is_empty());
    drop(mgr);
    crash_and_reopen(&dir, &store);
    let mut b = vec![0u8; RPS];
    store.read_page(PageId(1), &mut b).unwrap();
    assert_eq!(b[0], 7, "the commit is durable");
}

#[test]
fn a_failed_fsync_that_dropped_the_page_cache_is_rewritten_not_only_synced_again() {
    for errno in [EIO, ENOSPC] {
        let dir = Arc::new(CrashDir::new());
        let store = Arc::new(MemStore::new(RPS, RPAGES).unwrap());
        let mgr = manager(dir.clone(), store.clone());
        let mut model = Model::default();
        txn(&mgr, 0, 3).unwrap();
        model.committed.insert(0, 3);
        let t = mgr.begin().unwrap();
        mgr.write(t, PageId(2), 0, &[9; 4]).unwrap();
        // The fsync fails and the kernel drops the dirty pages: a second
        // fsync would report success with the bytes gone.
        dir.fail_syncs_with(1, errno, true);
        let e = mgr.commit(t).unwrap_err();
        assert!(is_stalled(&e), "{e}");
        assert_eq!(mgr.journal_stall().unwrap().no_space, errno == ENOSPC);
        mgr.resume().unwrap();
        mgr.commit(t).unwrap();
        model.committed.insert(2, 9);
        txn(&mgr, 3, 4).unwrap();
        model.committed.insert(3, 4);
        drop(mgr);
        let again = crash_and_reopen(&dir, &store);
        model.check(&store, None);
        assert!(again.recovery_report().rolled_back.is_empty());
    }
}

#[test]
fn a_non_retryable_failure_stays_poisoned_and_is_escalated() {
    let dir = Arc::new(CrashDir::new());
    let store = Arc::new(MemStore::new(RPS, RPAGES).unwrap());
    let mgr = manager(dir.clone(), store.clone());
    txn(&mgr, 0, 1).unwrap();
    let failures = mgr.failures();
    dir.fail_appends(1, EROFS);
    let t = mgr.begin().unwrap();
    // The write's undo record cannot be made durable: the page is not
    // written, and the journal is poisoned for good.
    let e = mgr.write(t, PageId(1), 0, &[2; 4]).unwrap_err();
    assert!(matches!(e, Error::Poisoned { .. }), "{e}");
    assert!(mgr.journal_stall().is_none());
    assert!(matches!(mgr.resume(), Err(Error::Poisoned { .. })));
    assert!(matches!(mgr.begin(), Err(Error::Poisoned { .. })));
    let f = failures.try_recv().unwrap();
    assert_eq!(f.kind, FailureKind::JournalPoisoned);
}

#[test]
fn a_resume_that_finds_the_durable_tail_damaged_poisons_the_journal() {
    let dir = Arc::new(CrashDir::new());
    let store = Arc::new(MemStore::new(RPS, RPAGES).unwrap());
    let mgr = manager(dir.clone(), store.clone());
    txn(&mgr, 0, 1).unwrap();
    let t = mgr.begin().unwrap();
    mgr.write(t, PageId(1), 0, &[2; 4]).unwrap();
    dir.fail_syncs_with(1, EIO, false);
    assert!(is_stalled(&mgr.commit(t).unwrap_err()));
    // Damage at rest in the durable part of the newest segment.
    let newest = *dir.segment_ids().last().unwrap();
    let mut bytes = dir.segment(newest).unwrap();
    bytes[60] ^= 0xff;
    dir.set_segment(newest, bytes);
    let e = mgr.resume().unwrap_err();
    assert!(matches!(e, Error::Poisoned { .. }), "{e}");
    assert!(e.to_string().contains("re-validating"), "{e}");
    assert!(mgr.stats().journal.poisoned);
}

#[test]
fn a_deleted_segment_makes_the_resume_fail_for_good() {
    let dir = Arc::new(CrashDir::new());
    let store = Arc::new(MemStore::new(RPS, RPAGES).unwrap());
    let mgr = manager(dir.clone(), store.clone());
    txn(&mgr, 0, 1).unwrap();
    let t = mgr.begin().unwrap();
    mgr.write(t, PageId(1), 0, &[2; 4]).unwrap();
    dir.fail_syncs_with(1, EIO, false);
    assert!(is_stalled(&mgr.commit(t).unwrap_err()));
    let newest = *dir.segment_ids().last().unwrap();
    dir.delete_segment(newest);
    assert!(matches!(mgr.resume(), Err(Error::Poisoned { .. })));
}

/// Retries `op` across stalls: frees the disk and resumes after each.
fn through_stalls<T>(
    mgr: &TransactionRollbackManager,
    dir: &CrashDir,
    mut op: impl FnMut() -> selfheal::Result<T>,
) -> T {
    loop {
        match op() {
            Ok(v) => return v,
            Err(e) => {
                assert!(is_stalled(&e), "{e}");
                dir.set_no_space(false);
                // Injected failures left may fail a few resumes first.
                let mut failed = 0;
                while let Err(e) = mgr.resume() {
                    assert!(is_stalled(&e), "{e}");
                    failed += 1;
                    assert!(failed < 10, "the resume keeps failing: {e}");
                }
            }
        }
    }
}

#[test]
fn stalls_across_segment_rotation_resume_in_order() {
    // Transactions cross segments while the disk fills and frees; the host
    // retries each refused call after the resume.
    let dir = Arc::new(CrashDir::new());
    let store = Arc::new(MemStore::new(RPS, RPAGES).unwrap());
    let mgr = manager(dir.clone(), store.clone());
    let mut model = Model::default();
    for round in 0..6u8 {
        let page = u64::from(round) % RPAGES;
        let value = 100 + round;
        let t = through_stalls(&mgr, &dir, || mgr.begin());
        for off in (0..96).step_by(8) {
            if round % 2 == 1 && off % 32 == 0 {
                dir.set_no_space(true);
            }
            through_stalls(&mgr, &dir, || mgr.write(t, PageId(page), off, &[value; 8]));
        }
        if round % 2 == 1 {
            dir.set_no_space(true);
        }
        through_stalls(&mgr, &dir, || mgr.commit(t));
        model.committed.insert(page, value);
    }
    assert!(mgr.stats().journal.segments > 1);
    assert!(dir.injected_failures() > 3);
    drop(mgr);
    crash_and_reopen(&dir, &store);
    model.check(&store, None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Any history of commits and injected failures (short writes out of
    /// space, fsyncs that fail and drop the page cache, fsyncs out of
    /// space), each stall resumed and the refused call retried: after a
    /// crash that keeps only durable bytes, the store holds exactly the
    /// acknowledged commits.
    #[test]
    fn any_fault_history_keeps_exactly_the_acknowledged_commits(
        ops in proptest::collection::vec((0u64..RPAGES, 0u8..4, 1u8..=255), 1..20),
        buffer in prop_oneof![Just(128usize), Just(4096usize)],
    ) {
        let dir = Arc::new(CrashDir::new());
        let store = Arc::new(MemStore::new(RPS, RPAGES).unwrap());
        let mgr = RollbackConfig::with_storage(dir.clone())
            .segment_size_bytes(512)
            .buffer_bytes(buffer)
            .build(RawPages::shared(store.clone()))
            .unwrap();
        let mut model = Model::default();
        for (page, fault, value) in ops {
            match fault {
                1 => dir.fail_appends(1 + u32::from(value % 3), ENOSPC),
                2 => dir.fail_syncs_with(1, EIO, true),
                3 => dir.fail_syncs_with(1 + u32::from(value % 2), ENOSPC, false),
                _ => {}
            }
            let t = through_stalls(&mgr, &dir, || mgr.begin());
            through_stalls(&mgr, &dir, || mgr.write(t, PageId(page), 0, &[value; 4]));
            through_stalls(&mgr, &dir, || mgr.commit(t));
            model.committed.insert(page, value);
        }
        drop(mgr);
        let again = crash_and_reopen(&dir, &store);
        model.check(&store, None);
        prop_assert!(again.recovery_report().rolled_back.is_empty());
    }
}

#[test]
fn batches_written_without_an_fsync_across_segments_are_rewritten_after_a_failed_fsync() {
    let dir = Arc::new(CrashDir::new());
    let store = Arc::new(MemStore::new(RPS, RPAGES).unwrap());
    let mgr = manager_buffered(dir.clone(), store.clone(), 128);
    txn(&mgr, 0, 1).unwrap();
    let segments_before = dir.segment_ids().len();
    let t = mgr.begin().unwrap();
    // Undo records only (no page write): the full buffer is written
    // without an fsync, batch after batch, across segments.
    for i in 0..40u8 {
        mgr.record_undo(t, PageId(1), usize::from(i % 8) * 8, &[0; 8], &[i; 8])
            .unwrap();
    }
    assert!(dir.unsynced_len() > 0);
    dir.fail_syncs_with(1, EIO, true);
    let e = mgr.commit(t).unwrap_err();
    assert!(is_stalled(&e), "{e}");
    let r = mgr.resume().unwrap();
    // Only the newest segment's records are written again: every older
    // segment was synced in full before the next one was created.
    assert!(r.records_rewritten >= 2, "{r:?}");
    mgr.commit(t).unwrap();
    assert!(dir.segment_ids().len() > segments_before + 1);
    drop(mgr);
    let again = crash_and_reopen(&dir, &store);
    assert!(again.recovery_report().rolled_back.is_empty());
    assert!(again.active_transactions().is_empty());
}

#[test]
fn a_crash_at_any_step_of_a_resume_leaves_a_journal_that_recovers() {
    let mut step = 1;
    loop {
        let switch = CrashSwitch::new();
        let dir = Arc::new(CrashDir::new().with_switch(switch.clone()));
        let store = Arc::new(MemStore::new(RPS, RPAGES).unwrap());
        let mgr = manager(dir.clone(), store.clone());
        let mut model = Model::default();
        txn(&mgr, 0, 1).unwrap();
        model.committed.insert(0, 1);
        let t = mgr.begin().unwrap();
        mgr.write(t, PageId(1), 0, &[2; 4]).unwrap();
        dir.fail_syncs_with(1, EIO, true);
        assert!(is_stalled(&mgr.commit(t).unwrap_err()));
        switch.arm_at(switch.ops() + step);
        let resumed = mgr.resume();
        let fired = switch.fired();
        drop(mgr);
        let again = crash_and_reopen(&dir, &store);
        // The commit was never acknowledged: either outcome is allowed.
        model.check(&store, Some((1, 2)));
        assert!(again.active_transactions().is_empty());
        if !fired {
            resumed.unwrap();
            break;
        }
        assert!(resumed.is_err());
        step += 1;
        assert!(step < 64, "the resume never finished");
    }
}

// ---- through the AutoRecoveryManager ----------------------------------------

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_manager_resumes_a_journal_on_a_disk_that_fills_and_frees() {
    for (_, placement) in both_placements(PS) {
        let tmp = tempfile::tempdir().unwrap();
        let jdir = Arc::new(CrashDir::new());
        let (raw, _mirror, m) = rig(placement, 8, tmp.path(), |c| {
            c.rollback(RollbackConfig::with_storage(jdir.clone()))
                .mode(Mode::Automatic)
                .healer(
                    HealerConfig::new()
                        .cooldown(Duration::from_millis(1))
                        .backoff(Duration::from_millis(1), Duration::from_millis(5)),
                )
        });
        m.start().unwrap();
        let rb = m.rollback_manager().unwrap();
        let t = rb.begin().unwrap();
        rb.write(t, PageId(2), 300, b"kept across the stall")
            .unwrap();
        jdir.set_no_space(true);
        let e = rb.commit(t).unwrap_err();
        assert!(is_stalled(&e), "{e}");
        // While the disk stays full the manager keeps trying, backing off.
        wait_for("two failed resumes", Duration::from_secs(20), || {
            rb.journal_stall().is_some_and(|s| s.failed_resumes >= 2)
        });
        assert!(rb.begin().is_err());
        jdir.set_no_space(false);
        wait_for("the resume", Duration::from_secs(20), || {
            rb.journal_stall().is_none()
        });
        rb.commit(t).unwrap();
        let t2 = rb.begin().unwrap();
        rb.write(t2, PageId(3), 300, b"after").unwrap();
        rb.commit(t2).unwrap();
        let target = Target::Component(Arc::from("undo journal"));
        let healed = m.incidents().into_iter().any(|i| {
            i.target == target
                && i.diagnosis.problem == Problem::JOURNAL_FULL
                && matches!(&i.outcome, Outcome::Healed { remedy } if remedy == "resume-journal")
        });
        assert!(healed, "{:#?}", m.incidents());
        m.stop().unwrap();
        assert_eq!(&bytes(raw.as_ref(), 2)[300..321], b"kept across the stall");
        // Both commits are in the journal's durable bytes.
        let store = Arc::new(MemStore::new(RPS, RPAGES).unwrap());
        let again = RollbackConfig::with_storage(Arc::new(jdir.crash(0)))
            .build(RawPages::shared(store))
            .unwrap();
        assert!(again.recovery_report().rolled_back.is_empty());
        assert!(again.recovery_report().damage.is_empty());
        let _ = Lsn(0);
    }
}

#[test]
fn in_observe_mode_the_manager_leaves_a_stalled_journal_alone() {
    for (_, placement) in both_placements(PS) {
        let tmp = tempfile::tempdir().unwrap();
        let jdir = Arc::new(CrashDir::new());
        let (_raw, _mirror, m) = rig(placement, 8, tmp.path(), |c| {
            c.rollback(RollbackConfig::with_storage(jdir.clone()))
                .mode(Mode::Observe)
        });
        m.start().unwrap();
        let rb = m.rollback_manager().unwrap();
        let t = rb.begin().unwrap();
        rb.write(t, PageId(2), 300, b"x").unwrap();
        jdir.fail_appends(1, ENOSPC);
        assert!(is_stalled(&rb.commit(t).unwrap_err()));
        let target = Target::Component(Arc::from("undo journal"));
        wait_for("the observed incident", Duration::from_secs(20), || {
            m.incidents()
                .iter()
                .any(|i| i.target == target && i.outcome == Outcome::Observed)
        });
        std::thread::sleep(Duration::from_millis(200));
        let s = rb.journal_stall().expect("still stalled: nothing acted");
        assert_eq!(s.failed_resumes, 0);
        // The host may resume it itself.
        rb.resume().unwrap();
        rb.commit(t).unwrap();
        m.stop().unwrap();
    }
}
