//! Goal: a stalled log resumes on its own on the table's clock, with jitter
//! drawn from its seed. Method: a full disk on a crash-simulating directory
//! stalls a table on a `ManualClock`; time is moved by hand and each change
//! (which resumes first when due) shows whether the table tried.

use std::sync::Arc;
use std::time::Duration;

use super::tests::{page, write, PS};
use super::*;
use crate::clock::{Clock, ManualClock};
use crate::error::Error;
use crate::testing::CrashFiles;
use crate::types::PageId;

/// A table on `clock` with `seed`, stalled by a full disk at its second
/// write (the disk stays full).
fn stalled(clock: &ManualClock, seed: u64) -> (Arc<CrashFiles>, ChecksumTable) {
    let files = Arc::new(CrashFiles::new());
    let t = TableConfig::new(PS)
        .clock(Arc::new(clock.clone()))
        .seed(seed)
        .open_on(files.clone(), "t")
        .unwrap();
    write(&t, 0, 1, true);
    files.set_no_space(true);
    assert!(matches!(
        try_change(&t),
        Err(Error::Stalled { no_space: true, .. })
    ));
    assert_eq!(t.log_stall().unwrap().failed_resumes, 0);
    (files, t)
}

/// A change: an intent for page 1 (the table resumes first when due).
fn try_change(t: &ChecksumTable) -> Result<()> {
    let crc = t.sealable(PageId(1), &page(2), true)?;
    t.intend(&[(PageId(1), crc)]).map(|_| ())
}

/// Moves `clock` 1 ms at a time until a change makes the stalled table try
/// a resume (its failed resumes grow, the disk being full); the time it
/// took, in ms.
fn ms_until_a_resume_is_tried(clock: &ManualClock, t: &ChecksumTable) -> u64 {
    let before = t.log_stall().unwrap().failed_resumes;
    for ms in 0..=RESUME_BACKOFF_CAP.as_millis() as u64 {
        let _ = try_change(t);
        if t.log_stall().unwrap().failed_resumes > before {
            return ms;
        }
        clock.advance(Duration::from_millis(1));
    }
    panic!("no resume tried within the backoff's cap");
}

#[test]
fn no_resume_before_the_backoff_has_passed_on_the_table_clock() {
    let clock = ManualClock::new();
    let (files, t) = stalled(&clock, 42);
    // Real time passes, the table's clock does not: no resume is tried.
    std::thread::sleep(RESUME_BACKOFF_BASE + Duration::from_millis(20));
    for _ in 0..5 {
        assert!(matches!(try_change(&t), Err(Error::Stalled { .. })));
    }
    assert_eq!(t.log_stall().unwrap().failed_resumes, 0);
    // The whole first backoff passes on the clock: the next change tries.
    clock.advance(RESUME_BACKOFF_BASE);
    assert!(try_change(&t).is_err(), "the disk is still full");
    assert_eq!(t.log_stall().unwrap().failed_resumes, 1);
    // The second wait starts now: nothing is tried until it passes.
    assert!(try_change(&t).is_err());
    assert_eq!(t.log_stall().unwrap().failed_resumes, 1);
    // Room again, and the second backoff (at most 2 · base) passed.
    files.set_no_space(false);
    clock.advance(2 * RESUME_BACKOFF_BASE);
    try_change(&t).unwrap();
    assert!(t.log_stall().is_none());
}

#[test]
fn one_seed_resumes_at_the_same_moments_every_time() {
    let waits = |seed| {
        let clock = ManualClock::new();
        let (_files, t) = stalled(&clock, seed);
        let first = ms_until_a_resume_is_tried(&clock, &t);
        let second = ms_until_a_resume_is_tried(&clock, &t);
        let third = ms_until_a_resume_is_tried(&clock, &t);
        assert!(
            first <= 100 && second <= 200 && third <= 400,
            "{first} {second} {third}"
        );
        (first, second, third, clock.now_ns())
    };
    assert_eq!(waits(7), waits(7));
    let others: Vec<_> = (8..12).map(waits).collect();
    assert!(
        others.iter().any(|w| *w != waits(7)),
        "other seeds draw other waits: {others:?}"
    );
}

#[test]
fn without_a_seed_or_clock_the_table_still_resumes_on_its_own() {
    let files = Arc::new(CrashFiles::new());
    let t = TableConfig::new(PS).open_on(files.clone(), "t").unwrap();
    write(&t, 0, 1, true);
    files.fail_syncs(1);
    assert!(matches!(try_change(&t), Err(Error::Stalled { .. })));
    std::thread::sleep(RESUME_BACKOFF_BASE + Duration::from_millis(10));
    try_change(&t).unwrap();
    assert!(t.log_stall().is_none());
}
