//! The fault injector of the `self_healing` example: each function causes
//! one fault in the running engine and returns the pages it damaged, with
//! their bytes right after the fault (Observe mode checks that they stay
//! so). It uses `selfheal::testing`'s fault types, as a host's own demo or
//! test would.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use selfheal::prelude::*;
use selfheal::testing::{Damage, WriteFault};

use crate::engine::{self, Engine, TxnError, COLD_PAGES, LOCK_PAGES, SLOTS};
use crate::report::Log;

/// The example's own record of every committed write: key → value.
pub type Model = Arc<Mutex<HashMap<u64, u64>>>;

/// One fault the injector caused.
pub struct Fault {
    pub name: &'static str,
    /// When, on the manager's clock (the process-wide system clock).
    pub at_ns: u64,
    /// Pages it damaged, with their bytes right after (Observe's check).
    pub pages: Vec<(PageId, Vec<u8>)>,
}

/// Now, on the manager's clock.
pub fn now_ns() -> u64 {
    SystemClock::shared().now_ns()
}

/// Commits `writes` and records them in the model.
pub fn commit(engine: &Engine, model: &Model, writes: &[(u64, u64)]) -> Result<TxnId, String> {
    let mut m = model.lock();
    let txn = engine.update(writes).map_err(|e| e.to_string())?;
    m.extend(writes.iter().copied());
    Ok(txn)
}

/// The bytes of `page` in the primary file, as a fault left them.
pub fn raw(engine: &Engine, page: PageId) -> Result<(PageId, Vec<u8>), String> {
    let mut b = vec![0u8; engine::PAGE_SIZE];
    engine
        .primary
        .inner()
        .read_page(page, &mut b)
        .map_err(|e| e.to_string())?;
    Ok((page, b))
}

/// One fault: causes it, returns the pages it damaged.
pub type FaultFn = fn(&Arc<Engine>, &Model, &Log, bool) -> Result<Vec<(PageId, Vec<u8>)>, String>;

/// Bit rot: one bit flipped on disk in a cold page (the scrubber finds it).
pub fn bit_rot(
    e: &Arc<Engine>,
    _: &Model,
    log: &Log,
    _: bool,
) -> Result<Vec<(PageId, Vec<u8>)>, String> {
    let page = PageId(COLD_PAGES.start + 1);
    e.primary
        .damage(page, Damage::BitFlip { byte: 40, bit: 5 })
        .map_err(|e| e.to_string())?;
    log.line(format!(
        "FAULT  bit rot: one bit flipped in page {page} on disk (a page no one reads)"
    ));
    Ok(vec![raw(e, page)?])
}

/// A torn write under a committed transaction.
pub fn torn_write(
    e: &Arc<Engine>,
    model: &Model,
    log: &Log,
    _: bool,
) -> Result<Vec<(PageId, Vec<u8>)>, String> {
    let key = 5 * SLOTS + 3;
    let (page, _) = engine::place(key);
    e.primary
        .fail_next_write(Some(page), WriteFault::Torn { new_bytes: 1_024 });
    log.line(format!(
        "FAULT  torn write armed on page {page}: only its first 1 KiB will reach the disk"
    ));
    match commit(e, model, &[(key, 424_242)]) {
        Ok(t) => log.line(format!(
            "       transaction {t} committed key {key} = 424242 over the torn write"
        )),
        Err(err) => log.line(format!("       the write of key {key} failed: {err}")),
    }
    Ok(vec![raw(e, page)?])
}

/// A lost write under a committed transaction.
pub fn lost_write(
    e: &Arc<Engine>,
    model: &Model,
    log: &Log,
    _: bool,
) -> Result<Vec<(PageId, Vec<u8>)>, String> {
    let key = 9 * SLOTS + 7;
    let (page, _) = engine::place(key);
    e.primary.fail_next_write(Some(page), WriteFault::Lost);
    log.line(format!("FAULT  lost write armed on page {page}: the disk will acknowledge it and keep the old bytes"));
    match commit(e, model, &[(key, 777_777)]) {
        Ok(t) => log.line(format!(
            "       transaction {t} committed key {key} = 777777 into the lost write"
        )),
        Err(err) => log.line(format!("       the write of key {key} failed: {err}")),
    }
    Ok(vec![raw(e, page)?])
}

/// The checkpointer stops beating.
pub fn hung_worker(
    e: &Arc<Engine>,
    _: &Model,
    log: &Log,
    _: bool,
) -> Result<Vec<(PageId, Vec<u8>)>, String> {
    e.hang_checkpointer();
    log.line("FAULT  the checkpointer hangs: its heartbeats stop");
    Ok(Vec::new())
}

/// Two transactions lock two keys in opposite orders.
pub fn deadlock(
    e: &Arc<Engine>,
    model: &Model,
    log: &Log,
    _: bool,
) -> Result<Vec<(PageId, Vec<u8>)>, String> {
    let (a, b) = (
        LOCK_PAGES.start * SLOTS + 1,
        (LOCK_PAGES.start + 1) * SLOTS + 1,
    );
    let barrier = Arc::new(Barrier::new(2));
    log.line(format!(
        "FAULT  deadlock: T1 locks key {a} then wants {b}; T2 locks {b} then wants {a}"
    ));
    let side = |first: u64, second: u64, value: u64| {
        let (e, model, barrier) = (e.clone(), model.clone(), barrier.clone());
        std::thread::spawn(move || -> Result<TxnId, (TxnId, TxnError)> {
            let txn = e.begin().map_err(|err| (TxnId(0), err.into()))?;
            let first_put = e.put(txn, first, value, Duration::from_secs(3));
            barrier.wait();
            let r = first_put.and_then(|()| e.put(txn, second, value, Duration::from_secs(3)));
            let mut m = model.lock();
            match r.and_then(|()| e.commit(txn)) {
                Ok(()) => {
                    m.extend([(first, value), (second, value)]);
                    Ok(txn)
                }
                Err(err) => {
                    drop(m);
                    e.abort(txn);
                    Err((txn, err))
                }
            }
        })
    };
    let t1 = side(a, b, 1);
    let t2 = side(b, a, 2);
    for t in [t1, t2] {
        match t.join().map_err(|_| "a deadlock thread panicked")? {
            Ok(txn) => log.line(format!(
                "       transaction {txn} got both locks and committed"
            )),
            Err((txn, err)) => log.line(format!("       transaction {txn} did not commit: {err}")),
        }
    }
    Ok(Vec::new())
}

/// The replica is down while a freshly snapshotted page is garbled.
pub fn replica_down(
    e: &Arc<Engine>,
    model: &Model,
    log: &Log,
    observe: bool,
) -> Result<Vec<(PageId, Vec<u8>)>, String> {
    let key = (COLD_PAGES.start + 4) * SLOTS + 2;
    let (page, _) = engine::place(key);
    commit(e, model, &[(key, 31_337)])?;
    let lsn = e.lsn();
    // The restore remedy serves a page from the newest snapshot only when
    // that snapshot is not older than the page's last write.
    let snaps = e.manager.snapshots().ok_or("no snapshot manager")?.clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    while snaps.snapshots().last().is_none_or(|s| s.lsn.0 < lsn) {
        if Instant::now() > deadline {
            return Err("no periodic snapshot was taken within 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    e.replica.set_down(true);
    e.primary
        .damage(page, Damage::Junk { seed: 5 })
        .map_err(|e| e.to_string())?;
    log.line(format!(
        "FAULT  replica down, and page {page} garbled on disk (snapshot {} holds it)",
        snaps.head().unwrap_or(0)
    ));
    let damaged = raw(e, page)?;
    match e.get(key) {
        Err(err) => log.line(format!("       a read of key {key} fails: {err}")),
        Ok(v) => log.line(format!("       a read of key {key} gave {v:?}")),
    }
    let deadline = Instant::now() + Duration::from_secs(if observe { 2 } else { 5 });
    while e.get(key).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    e.replica.set_down(false);
    log.line("       replica back up");
    Ok(vec![damaged])
}

/// A spill file fills the simulated volume.
pub fn disk_fills(
    e: &Arc<Engine>,
    _: &Model,
    log: &Log,
    _: bool,
) -> Result<Vec<(PageId, Vec<u8>)>, String> {
    let path = e.dir.join("sort-run-0001.spill");
    let file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    log.line(format!(
        "FAULT  disk fills: a spill file grows to 95 % of the {} MiB volume",
        e.volume_bytes >> 20
    ));
    let target = e.volume_bytes * 95 / 100;
    for step in 1..=5u64 {
        // Sparse: the volume is simulated, its use is the files' lengths.
        file.set_len(target * step / 5).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(150));
    }
    Ok(Vec::new())
}
