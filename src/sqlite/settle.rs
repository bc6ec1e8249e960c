//! Makes the sidecar table's settle records durable soon after SQLite's
//! `xSync` returns, without a commit waiting for them: a commit waits for
//! one fsync of the table's log (the intents, before the pages), not two —
//! except a commit that gives pages their first settled checksum (the file
//! grew, or a page marked unallocated is used again), whose settle the
//! detector's sync makes durable itself (`checksum::durable`, point 2).
//!
//! # Contract
//! - A sync of the database file settles its writes in the table (the
//!   page then accepts only its newest synced bytes) and buffers the settle
//!   record (a first settled checksum's is fsynced by the sync itself);
//!   [`Settler::notify`] returns without waiting. The record is
//!   durable when the next batch's intents are made durable (one fsync of
//!   the log carries both), or, when no batch comes within
//!   [`SETTLE_DELAY`] of the newest notice (measured on the VFS's clock,
//!   from when the thread takes the notice), when the settle thread
//!   (`selfheal-sqlite-settle`) flushes the log; and at the latest when the
//!   file is closed. While commits come closer together than the delay,
//!   each notice moves the flush on and the timer never fires: a steady
//!   write load pays no fsync beyond the intents'.
//! - Until then a crash undoes the settle: after the reopen the page
//!   accepts its older bytes too (the durable table's contract, point 3,
//!   in `checksum::durable`) — never a false alarm, and, with the system
//!   clock, never for longer than [`SETTLE_DELAY`] and an fsync or two
//!   after the last commit (a clock that does not move, such as a
//!   `ManualClock` nobody advances, leaves the settle to the next batch or
//!   the close). Replicas and snapshots serve only a page's newest
//!   version, so no older copy is written back in that state either.
//! - A failed flush is logged; the table reports a stalled log on the
//!   detector's bus (`ChecksumLogStalled`) and refuses the next intents,
//!   so SQLite's next write fails with an I/O error rather than the settle
//!   being lost without a word.
//! - A settle thread that died (a panic) flushes what it had scheduled,
//!   is reported on the bus (`WorkerDied`, component `sqlite settle`), and
//!   from then on every notice flushes the log on the caller's thread, as
//!   before the thread existed: the window never grows unbounded.
//! - [`Settler::stop`] (also on drop) flushes once more on the thread and
//!   joins it, waiting at most 30 s; a thread stuck in the log's fsync is
//!   left detached (the table's own close flushes what is left).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::error::Result;
use crate::types::{FailureKind, FailureSink, Source};
use crate::worker::{wake_for, Flow, Job, Notifier, Stop, Worker};
use crate::ChecksumTable;

/// How long after a commit its settle records may wait for the next
/// batch's intents to carry them before the settle thread flushes them.
pub(super) const SETTLE_DELAY: Duration = Duration::from_millis(50);

/// How long a close waits for the last settle flush, at most.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The component name in errors and reports.
const COMPONENT: &str = "sqlite settle";

/// The settle thread of one database file.
pub(super) struct Settler {
    table: Arc<ChecksumTable>,
    worker: Worker<()>,
    notifier: Option<Notifier<()>>,
    /// Set when the thread died: notices then flush on the caller.
    dead: Arc<AtomicBool>,
}

struct SettleJob {
    table: Arc<ChecksumTable>,
    clock: Arc<dyn Clock>,
    sink: FailureSink,
    dead: Arc<AtomicBool>,
    /// When the buffered settles are to be flushed (clock ns), if any.
    due_ns: Option<u64>,
    /// A test's way to make the thread die at its next notice.
    #[cfg(test)]
    panic_at_notice: bool,
}

/// Makes what `table`'s log buffers durable; logs a failure.
fn flush(table: &ChecksumTable) -> Result<()> {
    table.flush().inspect_err(|e| {
        tracing::warn!(error = %e,
            "the sidecar table's settle records could not be made durable; its next intents will fail");
    })
}

impl Job for SettleJob {
    type Command = ();

    fn next_tick(&mut self) -> Option<Instant> {
        self.due_ns.map(|due| wake_for(&*self.clock, due))
    }

    fn tick(&mut self) -> Flow {
        if let Some(due) = self.due_ns {
            if self.clock.now_ns() >= due {
                self.due_ns = None;
                let _ = flush(&self.table);
            }
        }
        Flow::Continue
    }

    fn command(&mut self, (): ()) -> Flow {
        #[cfg(test)]
        assert!(!self.panic_at_notice, "injected: the settle thread dies");
        // Each notice moves the flush to `SETTLE_DELAY` after itself: while
        // commits come closer together than that, each one's intents carry
        // the settles before it and the timer never fires.
        let delay = u64::try_from(SETTLE_DELAY.as_nanos()).unwrap_or(u64::MAX);
        self.due_ns = Some(self.clock.now_ns().saturating_add(delay));
        Flow::Continue
    }

    fn finish(&mut self) -> Result<()> {
        self.due_ns = None;
        flush(&self.table)
    }

    fn died(&mut self, reason: &str) {
        self.dead.store(true, Ordering::Release);
        // What a notice had scheduled is flushed now, not left to the next
        // `xSync` or the close.
        let _ = flush(&self.table);
        tracing::error!(%reason, "the settle thread of a database died; settles are flushed at each xSync");
        self.sink.report(
            Source::CorruptionDetector,
            FailureKind::WorkerDied {
                component: Arc::from(COMPONENT),
            },
            format!(
                "the {COMPONENT} thread died ({reason}); each xSync now flushes the settles itself"
            ),
            self.clock.now_ns(),
        );
    }
}

impl Settler {
    /// Starts the thread for `table`, deciding its delays on `clock` and
    /// reporting its death on `sink`.
    pub(super) fn start(
        table: Arc<ChecksumTable>,
        clock: Arc<dyn Clock>,
        sink: FailureSink,
    ) -> Result<Settler> {
        let dead = Arc::new(AtomicBool::new(false));
        let job = SettleJob {
            table: table.clone(),
            clock,
            sink,
            dead: dead.clone(),
            due_ns: None,
            #[cfg(test)]
            panic_at_notice: false,
        };
        Self::spawn(table, job, dead)
    }

    /// Starts `job`'s thread.
    fn spawn(table: Arc<ChecksumTable>, job: SettleJob, dead: Arc<AtomicBool>) -> Result<Settler> {
        let worker = Worker::spawn(COMPONENT, "selfheal-sqlite-settle", job)?;
        let notifier = worker.notifier();
        Ok(Settler {
            table,
            worker,
            notifier,
            dead,
        })
    }

    /// Says that the log buffers settle records: the thread flushes them
    /// [`SETTLE_DELAY`] from now unless a batch's intents carry them first.
    /// Never waits, except when the thread is gone: the log is then
    /// flushed here.
    ///
    /// # Errors
    /// The flush's, when it ran here.
    pub(super) fn notify(&self) -> Result<()> {
        if !self.dead.load(Ordering::Acquire) {
            let queued = self.notifier.as_ref().is_some_and(|n| n.notify(()));
            // A full queue holds a notice already, which covers this one;
            // only a thread that is gone leaves the flush to the caller.
            if queued || self.worker.is_running() {
                return Ok(());
            }
        }
        flush(&self.table)
    }

    /// Flushes once more and ends the thread (bounded by [`STOP_TIMEOUT`]).
    pub(super) fn stop(&self) -> Result<()> {
        let stopped = self.worker.stop(Stop::Finish, STOP_TIMEOUT);
        // A thread that died did not finish: the flush is done here. Not
        // after a timeout: the thread is then stuck in the log's fsync, and
        // a flush here would wait for it without a bound.
        if self.dead.load(Ordering::Acquire) {
            flush(&self.table)?;
        }
        stopped
    }
}

impl Drop for Settler {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "the settle thread of a database did not stop cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::ChecksumPlacement;
    use crate::clock::ManualClock;
    use crate::{CorruptionConfig, CorruptionDetector, MemStore, PageId};

    const PS: usize = 512;

    /// A detector over a durable sidecar table in `dir`, page 0 written
    /// (`old`) and synced, then written again (`new`) and synced: the
    /// table has settled `new` and buffered the settle record.
    struct Rig {
        dir: tempfile::TempDir,
        table: Arc<ChecksumTable>,
        det: CorruptionDetector,
        old: Vec<u8>,
        new: Vec<u8>,
    }

    fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let table = Arc::new(ChecksumTable::open(&dir.path().join("sums"), PS).unwrap());
        let store = Arc::new(MemStore::new(PS, 2).unwrap());
        let det = CorruptionConfig::new(ChecksumPlacement::Sidecar(table.clone()))
            .build(store)
            .unwrap();
        let mut old = vec![1u8; PS];
        det.write_sealed(PageId(0), &mut old).unwrap();
        det.sync().unwrap();
        let mut new = vec![2u8; PS];
        det.write_sealed(PageId(0), &mut new).unwrap();
        det.sync().unwrap();
        Rig {
            dir,
            table,
            det,
            old,
            new,
        }
    }

    impl Rig {
        /// Whether the table files as they are now on disk — what a crash
        /// leaves — still accept page 0's older bytes.
        fn crash_accepts_old(&self) -> bool {
            let copy = tempfile::tempdir().unwrap();
            for e in std::fs::read_dir(self.dir.path()).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
            }
            let reopened = ChecksumTable::open(&copy.path().join("sums"), PS).unwrap();
            assert!(
                reopened.verify(PageId(0), &self.new).is_ok(),
                "the newest write"
            );
            reopened.verify(PageId(0), &self.old).is_ok()
        }

        /// Waits (at most 10 s) until a crash would no longer accept the
        /// older bytes; returns whether it came to that.
        fn settled_within(&self, deadline: Duration) -> bool {
            let end = Instant::now() + deadline;
            loop {
                if !self.crash_accepts_old() {
                    return true;
                }
                if Instant::now() > end {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// The settle thread flushes the buffered settle `SETTLE_DELAY` after
    /// the notice on its clock, and not before: with the clock held, the
    /// settle is not durable; once the clock passes the delay, it is.
    #[test]
    fn a_notice_makes_the_settle_durable_once_the_delay_has_passed() {
        let r = rig();
        let clock = Arc::new(ManualClock::new());
        let settler = Settler::start(r.table.clone(), clock.clone(), FailureSink::new(16)).unwrap();
        assert!(
            r.crash_accepts_old(),
            "buffered, not durable, before the notice"
        );
        settler.notify().unwrap();
        assert!(
            !r.settled_within(Duration::from_millis(300)),
            "flushed before its delay passed on the clock"
        );
        clock.advance(SETTLE_DELAY);
        assert!(
            r.settled_within(Duration::from_secs(10)),
            "not flushed once the delay passed"
        );
        drop(settler);
    }

    /// The next batch's intents carry the settle: made durable with them,
    /// with no flush of the settle thread (its clock held). (What the
    /// settler adds to this is only that it does not get in the way.)
    #[test]
    fn the_next_intents_carry_the_settle() {
        let r = rig();
        let clock = Arc::new(ManualClock::new());
        let settler = Settler::start(r.table.clone(), clock, FailureSink::new(16)).unwrap();
        settler.notify().unwrap();
        let mut other = vec![3u8; PS];
        r.det.write_sealed(PageId(1), &mut other).unwrap();
        assert!(
            !r.crash_accepts_old(),
            "the intents' fsync carried the settle"
        );
        drop(settler);
    }

    /// A settle thread that dies (here: at its first notice) flushes what
    /// was buffered, is reported on the bus, and from then on each notice
    /// flushes on the caller's thread, at once (the clock is held).
    #[test]
    fn a_dead_settle_thread_flushes_is_reported_and_notices_flush_inline() {
        let r = rig();
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
        let sink = FailureSink::new(16);
        let dead = Arc::new(AtomicBool::new(false));
        let job = SettleJob {
            table: r.table.clone(),
            clock,
            sink: sink.clone(),
            dead: dead.clone(),
            due_ns: None,
            panic_at_notice: true,
        };
        let settler = Settler::spawn(r.table.clone(), job, dead).unwrap();
        assert!(r.crash_accepts_old());
        settler.notify().unwrap();
        let died = sink
            .failures()
            .recv_timeout(Duration::from_secs(10))
            .expect("the death is reported");
        assert!(
            matches!(&died.kind, FailureKind::WorkerDied { component } if &**component == COMPONENT),
            "{died:?}"
        );
        assert!(
            !r.crash_accepts_old(),
            "the dying thread flushed the settle"
        );
        // A newer version, synced: its settle is buffered; the notice now
        // flushes it here, before returning.
        let mut newer = vec![4u8; PS];
        r.det.write_sealed(PageId(0), &mut newer).unwrap();
        r.det.sync().unwrap();
        let copy = Rig {
            old: r.new.clone(),
            new: newer,
            ..r
        };
        assert!(copy.crash_accepts_old(), "buffered before the notice");
        settler.notify().unwrap();
        assert!(!copy.crash_accepts_old(), "flushed inline by the notice");
        assert!(settler.stop().is_err(), "the stop says the thread died");
    }

    /// Stopping the settler (a close) makes the settle durable at once.
    #[test]
    fn a_stop_flushes_the_settle() {
        let r = rig();
        let clock = Arc::new(ManualClock::new());
        let settler = Settler::start(r.table.clone(), clock, FailureSink::new(16)).unwrap();
        settler.notify().unwrap();
        settler.stop().unwrap();
        assert!(!r.crash_accepts_old());
        settler.notify().unwrap();
    }
}
