//! Unit tests of the durable table: the protocol step by step on a
//! crash-simulating directory (`CrashFiles`), damage, poisoning, limits,
//! group commit, compaction and the logs of older versions, and the helpers
//! the other test files of the table share. Free marks are tested in
//! `tests_free.rs`, log damage in `tests_mirror.rs`, the resume backoff in
//! `tests_backoff.rs`; the crash-at-every-step test through the detector is
//! in `tests/checksum_table_crash.rs`.

use std::sync::Arc;

use super::durable::log_name;
use super::log::{encode_record, LogHeader, LogRecord, FRAME_OVERHEAD, LOG_HEADER_LEN};
use super::*;
use crate::error::Error;
use crate::testing::{CrashFiles, CrashSwitch};
use crate::types::PageId;

pub(super) const PS: usize = 128;

pub(super) fn config() -> TableConfig {
    TableConfig::new(PS)
}

pub(super) fn open(files: &Arc<CrashFiles>) -> ChecksumTable {
    config().open_on(files.clone(), "t").unwrap()
}

pub(super) fn page(fill: u8) -> Vec<u8> {
    vec![fill; PS]
}

/// The detector's write path, without a store: announce, then "write".
pub(super) fn write(t: &ChecksumTable, p: u64, fill: u8, ok: bool) {
    let crc = t.sealable(PageId(p), &page(fill), true).unwrap();
    let intents = t.intend(&[(PageId(p), crc)]).unwrap();
    t.complete(&intents, usize::from(ok)).unwrap();
}

/// The detector's sync, without a store.
pub(super) fn sync(t: &ChecksumTable) {
    let b = t.sync_barrier();
    t.settle(b).unwrap();
}

pub(super) fn accepts(t: &ChecksumTable, p: u64, fill: u8) -> bool {
    t.verify(PageId(p), &page(fill)).is_ok()
}

/// Whether the table says page `p` holding `fill` bytes is unallocated.
pub(super) fn unallocated(t: &ChecksumTable, p: u64, fill: u8) -> bool {
    matches!(
        t.verify(PageId(p), &page(fill)),
        Err(Error::PageUnallocated { .. })
    )
}

#[test]
fn a_write_accepts_old_and_new_until_a_sync_then_only_new() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    assert!(t.is_durable());
    write(&t, 3, 1, true);
    sync(&t);
    write(&t, 3, 2, true);
    assert!(accepts(&t, 3, 1) && accepts(&t, 3, 2));
    assert_eq!(t.get(PageId(3)), t.sealable(PageId(3), &page(2), true).ok());
    sync(&t);
    assert!(
        !accepts(&t, 3, 1),
        "settled: the old bytes no longer verify"
    );
    assert!(accepts(&t, 3, 2));
    assert!(matches!(
        t.verify(PageId(3), &page(9)),
        Err(Error::ChecksumMismatch { .. })
    ));
    assert!(matches!(
        t.verify(PageId(4), &page(2)),
        Err(Error::MissingChecksum { .. })
    ));
}

#[test]
fn intents_are_durable_before_the_write_and_settles_with_the_next_fsync() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    sync(&t);
    t.flush().unwrap();
    write(&t, 0, 2, true);
    // Crash now: the page may hold either bytes; both verify.
    let after = open(&Arc::new(files.crash(None)));
    assert!(accepts(&after, 0, 1) && accepts(&after, 0, 2));
    sync(&t);
    // The settle is only buffered: a crash forgets it, both still verify.
    let after = open(&Arc::new(files.crash(None)));
    assert!(accepts(&after, 0, 1) && accepts(&after, 0, 2));
    t.flush().unwrap();
    let after = open(&Arc::new(files.crash(None)));
    assert!(!accepts(&after, 0, 1) && accepts(&after, 0, 2));
}

#[test]
fn a_first_settle_is_durable_when_the_sync_returns_and_a_later_one_costs_no_fsync() {
    for freed in [false, true] {
        let files = Arc::new(CrashFiles::new());
        let t = open(&files);
        if freed {
            t.mark_free(PageId(0)).unwrap();
        }
        write(&t, 0, 1, true);
        let before = files.syncs();
        sync(&t);
        assert_eq!(files.syncs() - before, 1, "freed {freed}: the first settle");
        // Power goes: the page keeps a settled checksum, so bytes that hold
        // none of its versions are damage, not a page without a checksum.
        let after = open(&Arc::new(files.crash(None)));
        assert_eq!(
            after.get(PageId(0)),
            t.sealable(PageId(0), &page(1), true).ok()
        );
        after
            .resolve(1, &mut |_, b| {
                b.fill(7);
                Ok(())
            })
            .unwrap();
        assert!(matches!(
            after.verify(PageId(0), &page(7)),
            Err(Error::ChecksumMismatch { .. })
        ));
        assert!(accepts(&after, 0, 1), "freed {freed}");
        // A page with a settled checksum settles its next write lazily.
        write(&t, 0, 2, true);
        let before = files.syncs();
        sync(&t);
        assert_eq!(files.syncs() - before, 0, "freed {freed}: a later settle");
    }
}

/// After a crash, page 0 (written once, holding other bytes now) is damage
/// the table still has a checksum for, not a page without one.
fn keeps_its_first_checksum(files: &CrashFiles) -> bool {
    let after = open(&Arc::new(files.crash(None)));
    after
        .resolve(1, &mut |_, b| {
            b.fill(7);
            Ok(())
        })
        .unwrap();
    matches!(
        after.verify(PageId(0), &page(7)),
        Err(Error::ChecksumMismatch { .. })
    ) && accepts(&after, 0, 1)
}

#[test]
fn a_sync_while_the_log_is_stalled_gives_out_no_first_checksum_and_says_so() {
    for resume in [false, true] {
        let files = Arc::new(CrashFiles::new());
        let t = open(&files);
        write(&t, 0, 1, true);
        files.set_no_space(true);
        let crc = t.sealable(PageId(1), &page(2), true).unwrap();
        assert!(matches!(
            t.intend(&[(PageId(1), crc)]),
            Err(Error::Stalled { .. })
        ));
        let b = t.sync_barrier();
        assert!(matches!(t.settle(b), Err(Error::Stalled { .. })));
        assert!(!t.is_settled(PageId(0)), "nothing is settled while stalled");
        // The host was told: the write is not known durable until a sync
        // after the resume returns.
        if resume {
            files.set_no_space(false);
            t.resume().unwrap();
            sync(&t);
            assert!(t.is_settled(PageId(0)), "settled after the resume");
            assert!(keeps_its_first_checksum(&files));
        }
    }
}

#[test]
fn a_first_settle_whose_fsync_fails_is_refused_until_a_resume_writes_it() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    files.set_no_space(true);
    let b = t.sync_barrier();
    assert!(matches!(t.settle(b), Err(Error::Stalled { .. })));
    let b = t.sync_barrier();
    assert!(
        matches!(t.settle(b), Err(Error::Stalled { .. })),
        "a retried sync does not pretend the first one's record is durable"
    );
    files.set_no_space(false);
    t.resume().unwrap();
    assert!(keeps_its_first_checksum(&files));
}

#[test]
fn a_clean_close_makes_the_last_settle_durable() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    sync(&t);
    t.flush().unwrap();
    write(&t, 0, 2, true);
    sync(&t);
    drop(t);
    // Power goes after the close: what the close wrote must have been synced.
    let after = open(&Arc::new(files.crash(None)));
    assert!(
        !accepts(&after, 0, 1),
        "after a clean close the page's older bytes are damage, not a version"
    );
    assert!(accepts(&after, 0, 2));
}

#[test]
fn a_write_in_flight_during_a_sync_stays_unsettled() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    sync(&t);
    // Announced before the barrier, written after it.
    let crc = t.sealable(PageId(0), &page(2), true).unwrap();
    let intent = t.intend(&[(PageId(0), crc)]).unwrap();
    let b = t.sync_barrier();
    t.complete(&intent, 1).unwrap();
    t.settle(b).unwrap();
    assert!(
        accepts(&t, 0, 1) && accepts(&t, 0, 2),
        "the sync may not cover it"
    );
    t.flush().unwrap();
    let after = open(&Arc::new(files.crash(None)));
    assert!(accepts(&after, 0, 1) && accepts(&after, 0, 2));
    sync(&t);
    assert!(!accepts(&t, 0, 1));
}

#[test]
fn a_failed_write_is_accepted_until_a_later_write_settles() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    sync(&t);
    write(&t, 0, 2, false);
    sync(&t);
    assert!(
        accepts(&t, 0, 1) && accepts(&t, 0, 2),
        "its bytes are unknown"
    );
    t.flush().unwrap();
    let after = open(&Arc::new(files.crash(None)));
    assert!(accepts(&after, 0, 1) && accepts(&after, 0, 2));
    write(&t, 0, 3, true);
    sync(&t);
    assert!(!accepts(&t, 0, 1) && !accepts(&t, 0, 2) && accepts(&t, 0, 3));
}

#[test]
fn resolving_after_a_crash_settles_the_bytes_the_page_holds_and_keeps_newer_versions() {
    use crate::host::PageStore;
    for holds_new in [false, true] {
        let files = Arc::new(CrashFiles::new());
        let t = open(&files);
        write(&t, 0, 1, true);
        write(&t, 1, 1, true);
        sync(&t);
        write(&t, 0, 2, true);
        let t = open(&Arc::new(files.crash(None)));
        let store = crate::store::MemStore::new(PS, 2).unwrap();
        store
            .write_page(PageId(0), &page(if holds_new { 2 } else { 1 }))
            .unwrap();
        store.write_page(PageId(1), &page(9)).unwrap();
        t.resolve(store.page_count(), &mut |p, b| store.read_page(p, b))
            .unwrap();
        assert!(accepts(&t, 0, 1) && accepts(&t, 0, 2), "not before a sync");
        sync(&t);
        assert_eq!(accepts(&t, 0, 1), !holds_new, "holds new: {holds_new}");
        // Holding the old bytes, the page may have lost an acknowledged
        // write: its checksum stays, for a repair to write it back.
        assert!(accepts(&t, 0, 2), "holds new: {holds_new}");
        assert!(
            !accepts(&t, 1, 9),
            "damage is never resolved into a checksum"
        );
        assert_eq!(
            t.stats().unsettled_versions,
            u64::from(!holds_new),
            "holds new: {holds_new}"
        );
        // A write of the page (a repair's, the host's) settles as usual.
        write(&t, 0, 2, true);
        sync(&t);
        assert!(accepts(&t, 0, 2) && !accepts(&t, 0, 1));
        assert_eq!(t.stats().unsettled_versions, 0);
    }
}

#[test]
fn resolving_keeps_versions_newer_than_the_bytes_a_page_holds() {
    use crate::host::PageStore;
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    sync(&t);
    write(&t, 0, 2, true);
    write(&t, 0, 3, true);
    // After a crash the page holds the middle version: the last write was lost.
    let crashed = Arc::new(files.crash(None));
    let t = open(&crashed);
    let store = crate::store::MemStore::new(PS, 1).unwrap();
    store.write_page(PageId(0), &page(2)).unwrap();
    t.resolve(store.page_count(), &mut |p, b| store.read_page(p, b))
        .unwrap();
    sync(&t);
    assert!(accepts(&t, 0, 2), "the bytes it holds are settled");
    assert!(!accepts(&t, 0, 1), "older versions are dropped");
    assert!(
        accepts(&t, 0, 3),
        "a newer version the disk lost stays accepted: it may have been acknowledged"
    );
    assert_eq!(t.stats().unsettled_versions, 1);
    // Across another crash the same state is replayed and resolved again.
    let t = open(&Arc::new(crashed.crash(None)));
    t.resolve(store.page_count(), &mut |p, b| store.read_page(p, b))
        .unwrap();
    sync(&t);
    assert!(accepts(&t, 0, 2) && accepts(&t, 0, 3) && !accepts(&t, 0, 1));
    // Written back (a repair), version 3 settles and version 2 goes.
    write(&t, 0, 3, true);
    sync(&t);
    assert!(accepts(&t, 0, 3) && !accepts(&t, 0, 2));
    assert_eq!(t.stats().unsettled_versions, 0);
}

#[test]
fn rewriting_the_newest_bytes_logs_nothing() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    sync(&t);
    t.flush().unwrap();
    let before = t.stats();
    write(&t, 0, 1, true);
    let after = t.stats();
    assert_eq!(after.log_bytes, before.log_bytes);
    assert_eq!(after.log_syncs, before.log_syncs);
    assert_eq!(after.unsettled_versions, 0);
}

#[test]
fn too_many_failed_writes_retract_the_oldest() {
    let files = Arc::new(CrashFiles::new());
    let t = config()
        .page_versions_max(2)
        .open_on(files.clone(), "t")
        .unwrap();
    write(&t, 0, 1, true);
    sync(&t);
    write(&t, 0, 2, false);
    write(&t, 0, 3, false);
    assert!(
        !t.needs_sync(&[PageId(0)]),
        "a sync cannot settle failed writes"
    );
    write(&t, 0, 4, false);
    assert!(!accepts(&t, 0, 2), "the oldest failed write was retracted");
    assert!(accepts(&t, 0, 1) && accepts(&t, 0, 3) && accepts(&t, 0, 4));
    t.flush().unwrap();
    let after = open(&Arc::new(files.crash(None)));
    assert!(!accepts(&after, 0, 2));
    assert!(accepts(&after, 0, 1) && accepts(&after, 0, 3) && accepts(&after, 0, 4));
    // Written versions are what a sync settles: past the limit, ask for one.
    write(&t, 1, 1, true);
    write(&t, 1, 2, true);
    assert!(t.needs_sync(&[PageId(1)]));
    sync(&t);
    assert!(!t.needs_sync(&[PageId(1)]));
}

#[test]
fn compaction_folds_the_log_and_keeps_unsettled_versions() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    for p in 0..20 {
        write(&t, p, p as u8 + 1, true);
    }
    sync(&t);
    write(&t, 5, 99, true);
    let g = t.stats().generation;
    t.compact().unwrap();
    let s = t.stats();
    assert_eq!(s.generation, g + 1);
    assert_eq!(
        s.log_bytes,
        (LOG_HEADER_LEN + 2 * (FRAME_OVERHEAD + 6)) as u64,
        "header, one frame holding the one re-logged intent (kind, page delta, CRC), and its mirror"
    );
    assert_eq!(
        files.names(),
        vec!["t".to_string(), log_name("t", g + 1)],
        "the old log is gone"
    );
    let after = open(&Arc::new(files.crash(None)));
    for p in 0..20 {
        assert!(accepts(&after, p, p as u8 + 1), "page {p}");
    }
    assert!(accepts(&after, 5, 99));
    // Appends after the compaction go to the new log.
    write(&t, 6, 77, true);
    let after = open(&Arc::new(files.crash(None)));
    assert!(accepts(&after, 6, 77) && accepts(&after, 6, 7));
}

#[test]
fn the_sync_compacts_when_the_log_passes_its_share_of_the_base() {
    let files = Arc::new(CrashFiles::new());
    let t = config()
        .compact_log_bytes_min(0)
        .compact_ratio_pct(100)
        .open_on(files.clone(), "t")
        .unwrap();
    for p in 0..64 {
        write(&t, p, 1, true);
    }
    sync(&t);
    let first = t.stats();
    assert!(first.compactions >= 2, "open and this sync: {first:?}");
    // The base is now 64 pages (~564 bytes): 40 rounds (~1280 log bytes) pass it.
    for round in 0..40u8 {
        write(&t, u64::from(round), round.wrapping_add(2), true);
        sync(&t);
    }
    let s = t.stats();
    assert!(s.compactions > first.compactions, "{s:?}");
    assert!(
        s.log_bytes <= s.base_bytes + 2 * FRAME_OVERHEAD as u64,
        "{s:?}"
    );
}

#[test]
fn truncate_is_logged_durably() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    for p in 0..8 {
        write(&t, p, 1, true);
    }
    sync(&t);
    write(&t, 7, 2, true);
    t.truncate(4).unwrap();
    assert!(!t.has_pages_from(4));
    let after = open(&Arc::new(files.crash(None)));
    assert!(accepts(&after, 3, 1));
    for p in 4..8 {
        assert!(matches!(
            after.verify(PageId(p), &page(1)),
            Err(Error::MissingChecksum { .. })
        ));
    }
}

#[test]
fn a_failed_fsync_stalls_the_table_and_a_resume_writes_the_intent_again() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    files.fail_syncs(1);
    let crc = t.sealable(PageId(1), &page(1), true).unwrap();
    let e = t.intend(&[(PageId(1), crc)]).map(|_| ()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Stalled {
                no_space: false,
                ..
            }
        ) && e.is_retryable(),
        "{e}"
    );
    assert!(matches!(
        t.intend(&[(PageId(2), crc)]),
        Err(Error::Stalled { .. })
    ));
    assert!(matches!(t.flush(), Err(Error::Stalled { .. })));
    assert!(accepts(&t, 0, 1), "verification goes on");
    let stall = t.log_stall().expect("stalled");
    assert!(stall.pending_bytes > 0, "{stall:?}");
    let r = t.resume().unwrap();
    assert!(
        r.was_stalled && r.bytes_rewritten == stall.pending_bytes,
        "{r:?}"
    );
    assert!(t.log_stall().is_none());
    assert_eq!(
        t.resume().unwrap(),
        LogResumeReport::default(),
        "not stalled"
    );
    write(&t, 2, 1, true);
    // The intent of the refused write was made durable by the resume (it
    // is accepted, as one announced for a write that may not have happened).
    let t = open(&Arc::new(files.crash(None)));
    assert!(accepts(&t, 0, 1) && accepts(&t, 1, 1) && accepts(&t, 2, 1));
}

#[test]
fn a_failed_fsync_that_is_not_retryable_poisons_the_table() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    files.fail_syncs_with(1, 30, false);
    let crc = t.sealable(PageId(1), &page(1), true).unwrap();
    assert!(matches!(
        t.intend(&[(PageId(1), crc)]),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(t.resume(), Err(Error::Poisoned { .. })));
    assert!(accepts(&t, 0, 1), "verification goes on");
    // Reopening recovers.
    let t = open(&files);
    write(&t, 1, 1, true);
    assert!(accepts(&t, 0, 1) && accepts(&t, 1, 1));
}

#[test]
fn a_missing_base_with_logs_is_damage_and_leftovers_are_removed() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    let g = t.stats().generation;
    drop(t);
    files.set_file("t.tmp", vec![1, 2, 3]);
    files.set_file(&format!("{}.tmp", log_name("t", g + 7)), vec![4]);
    files.set_file(&log_name("t", 0), vec![5]);
    files.set_file("other", vec![6]);
    let t = open(&files);
    assert!(accepts(&t, 0, 1));
    assert_eq!(
        files.names(),
        vec!["other".to_string(), "t".to_string(), log_name("t", g)]
    );
    drop(t);
    files.delete_file("t");
    assert!(matches!(
        config().open_on(files.clone(), "t"),
        Err(Error::CorruptFile { .. })
    ));
}

#[test]
fn a_base_without_the_log_of_its_generation_is_damage() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    sync(&t);
    t.compact().unwrap();
    write(&t, 0, 2, true);
    sync(&t);
    let g = t.stats().generation;
    assert!(g > 0);
    drop(t);
    files.delete_file(&log_name("t", g));
    match config().open_on(files.clone(), "t") {
        Err(Error::CorruptFile {
            path,
            offset,
            reason,
        }) => {
            assert_eq!(path, files.path("t"));
            assert_eq!(offset, 28);
            assert!(reason.contains(&log_name("t", g)), "{reason}");
        }
        other => panic!("a lost log must be refused, got {other:?}"),
    }
}

#[test]
fn configuration_is_checked() {
    let files: Arc<dyn TableStorage> = Arc::new(CrashFiles::new());
    for bad in [
        TableConfig::new(10),
        config().pages_max(0),
        config().compact_ratio_pct(0),
        config().unsettled_versions_max(0),
        config().page_versions_max(1),
    ] {
        assert!(matches!(
            bad.open_on(files.clone(), "t"),
            Err(Error::InvalidConfig { .. })
        ));
    }
    assert!(config().open_on(files.clone(), "a/b").is_err());
    let t = config().pages_max(10).open_on(files.clone(), "t").unwrap();
    let crc = t.sealable(PageId(10), &page(1), true).unwrap();
    assert!(matches!(
        t.intend(&[(PageId(10), crc)]),
        Err(Error::PageOutOfRange { .. })
    ));
    assert!(matches!(
        t.seal(PageId(1), &page(1)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        config().open_on(files.clone(), "t").map(|_| ()),
        Ok(())
    ));
    assert!(matches!(
        TableConfig::new(256).open_on(files, "t"),
        Err(Error::PageSizeMismatch { .. })
    ));
}

#[test]
fn a_batch_costs_one_fsync() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    let changes: Vec<(PageId, u32)> = (0..50)
        .map(|p| (PageId(p), t.sealable(PageId(p), &page(7), true).unwrap()))
        .collect();
    let before = files.syncs();
    let intents = t.intend(&changes).unwrap();
    assert_eq!(files.syncs() - before, 1);
    t.complete(&intents, intents.len()).unwrap();
    let after = open(&Arc::new(files.crash(None)));
    assert!((0..50).all(|p| accepts(&after, p, 7)));
}

#[test]
fn concurrent_writers_share_fsyncs() {
    let files = Arc::new(CrashFiles::new());
    let t = Arc::new(open(&files));
    let before = files.syncs();
    std::thread::scope(|s| {
        for w in 0..8u64 {
            let t = t.clone();
            s.spawn(move || {
                for i in 0..50u64 {
                    write(&t, w * 100 + i, (i % 250) as u8 + 1, true);
                }
            });
        }
    });
    let fsyncs = files.syncs() - before;
    assert!(fsyncs <= 400, "{fsyncs} fsyncs for 400 writes");
    for w in 0..8u64 {
        for i in 0..50u64 {
            assert!(accepts(&t, w * 100 + i, (i % 250) as u8 + 1));
        }
    }
    let after = open(&Arc::new(files.crash(None)));
    for w in 0..8u64 {
        for i in 0..50u64 {
            assert!(accepts(&after, w * 100 + i, (i % 250) as u8 + 1));
        }
    }
}

#[test]
fn a_real_directory_round_trips() {
    use crate::host::PageStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sums");
    let t = ChecksumTable::open(&path, PS).unwrap();
    write(&t, 2, 1, true);
    sync(&t);
    write(&t, 2, 2, true);
    t.flush().unwrap();
    drop(t);
    let t = ChecksumTable::open(&path, PS).unwrap();
    assert!(accepts(&t, 2, 1) && accepts(&t, 2, 2), "unsettled");
    sync(&t);
    assert!(
        accepts(&t, 2, 1),
        "a sync alone cannot tell which bytes the page holds"
    );
    // The store holds the new bytes: reading it resolves the version.
    let store = crate::store::MemStore::new(PS, 4).unwrap();
    store.write_page(PageId(2), &page(2)).unwrap();
    t.resolve(store.page_count(), &mut |p, b| store.read_page(p, b))
        .unwrap();
    sync(&t);
    t.flush().unwrap();
    drop(t);
    let t = ChecksumTable::open(&path, PS).unwrap();
    assert!(!accepts(&t, 2, 1) && accepts(&t, 2, 2));
    // A version-1 file saved by an in-memory table opens as a base.
    let mem = ChecksumTable::new(PS).unwrap();
    mem.seal(PageId(1), &page(5)).unwrap();
    let other = dir.path().join("old");
    mem.save(&other).unwrap();
    let t = ChecksumTable::open(&other, PS).unwrap();
    assert!(accepts(&t, 1, 5));
}

#[test]
fn crash_during_compaction_at_every_step() {
    // Crash at every storage step of a compaction (and of the open after
    // it): every checksum accepted before must be accepted after, and every
    // page marked unallocated stays so.
    let mut step = 0;
    loop {
        let switch = CrashSwitch::new();
        let files = Arc::new(CrashFiles::new().with_switch(switch.clone()));
        let t = open(&files);
        for p in 0..10 {
            write(&t, p, 1, true);
        }
        sync(&t);
        for p in 0..5 {
            write(&t, p, 2, true);
        }
        t.mark_free(PageId(8)).unwrap();
        t.mark_free(PageId(12)).unwrap();
        t.flush().unwrap();
        switch.arm_at(switch.ops() + step);
        let done = t.compact().is_ok();
        for seed in [None, Some(step), Some(step + 1000)] {
            let after = open(&Arc::new(files.crash(seed)));
            for p in 0..10 {
                let free = [8, 12].contains(&p);
                assert_eq!(
                    after.is_free(PageId(p)),
                    free,
                    "step {step} seed {seed:?}: page {p}"
                );
                assert!(
                    if free {
                        unallocated(&after, p, 1)
                    } else {
                        accepts(&after, p, 1)
                    },
                    "step {step} seed {seed:?}: page {p}"
                );
            }
            assert!(after.is_free(PageId(12)), "step {step} seed {seed:?}");
            for p in 0..5 {
                assert!(accepts(&after, p, 2), "step {step} seed {seed:?}: page {p}");
            }
        }
        if done {
            break;
        }
        step += 1;
    }
    assert!(step >= 8, "a compaction has at least 8 steps, saw {step}");
}

/// A log of 16-byte slots (versions 1 and 2), as older builds wrote it.
fn slot_log(version: u32, generation: u64, first_seq: u64, records: &[LogRecord]) -> Vec<u8> {
    let mut out = LogHeader {
        version,
        page_size: PS as u32,
        generation,
        first_seq,
    }
    .encode()
    .to_vec();
    for (i, r) in records.iter().enumerate() {
        encode_record(&mut out, first_seq + i as u64, *r);
    }
    out
}

#[test]
fn version_1_and_2_logs_are_replayed_and_compacted_away() {
    for version in [1u32, 2] {
        let files = Arc::new(CrashFiles::new());
        let t = open(&files);
        let g = t.stats().generation;
        drop(t);
        let name = log_name("t", g);
        let first_seq = u64::from_le_bytes(files.file(&name).unwrap()[24..32].try_into().unwrap());
        let crc = |p: u64, fill: u8| crate::checksum::page_crc(PageId(p), &page(fill));
        let s = first_seq;
        let mut records = vec![
            LogRecord::Batch,
            LogRecord::Intent {
                page: 0,
                crc: crc(0, 1),
            },
            LogRecord::Settle { below: s + 2 },
            LogRecord::Batch,
            LogRecord::Intent {
                page: 1,
                crc: crc(1, 2),
            },
            LogRecord::Intent {
                page: 4,
                crc: crc(4, 5),
            },
            LogRecord::Drop { first: 4, last: 4 },
        ];
        if version == 2 {
            records.push(LogRecord::Claim {
                page: 2,
                crc: crc(2, 3),
            });
            records.push(LogRecord::Free { page: 3 });
        }
        files.set_file(&name, slot_log(version, g, first_seq, &records));
        let t = open(&files);
        assert_eq!(t.stats().generation, g + 1, "not appended to: compacted");
        assert!(accepts(&t, 0, 1) && accepts(&t, 1, 2), "version {version}");
        assert_eq!(t.get(PageId(4)), None, "version {version}");
        assert_eq!(accepts(&t, 2, 3), version == 2);
        assert_eq!(t.is_free(PageId(3)), version == 2);
        t.mark_free(PageId(0)).unwrap();
        let after = open(&Arc::new(files.crash(None)));
        assert!(after.is_free(PageId(0)) && accepts(&after, 1, 2));
        assert_eq!(accepts(&after, 2, 3), version == 2);
    }
}
