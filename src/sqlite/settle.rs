//! Makes the sidecar table's settle records durable right after SQLite's
//! `xSync` returns, on a thread of the file's own (`selfheal-sqlite-settle`),
//! so that a commit waits for one fsync of the table's log (the intents,
//! before the pages), not two.
//!
//! # Contract
//! - A sync of the database file settles its writes in the table (the
//!   page then accepts only its newest synced bytes) and buffers the settle
//!   record; [`Settler::notify`] asks the thread to write and fsync it, and
//!   returns without waiting. The record is durable at the latest when
//!   that fsync returns, when the next batch's intents are made durable
//!   (one fsync carries both), or when the file is closed.
//! - Until then a crash undoes the settle: after the reopen the page
//!   accepts its older bytes too (the table's contract, point 3, in
//!   [`checksum::durable`](crate::checksum)) — never a false alarm, and
//!   never for longer than the window between a commit and the settle's
//!   fsync, which the thread starts at once.
//! - A failed flush is logged; the log then refuses the next intents
//!   (stalled or poisoned), so SQLite's next write fails with an I/O error
//!   instead of the settle being lost without a word.
//! - [`Settler::stop`] (also on drop) flushes once more and joins the
//!   thread, bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::worker::{Flow, Job, Notifier, Stop, Worker};
use crate::ChecksumTable;

/// How long a close waits for the last settle flush, at most.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The settle thread of one database file.
pub(super) struct Settler {
    worker: Worker<()>,
    notifier: Option<Notifier<()>>,
}

struct SettleJob {
    table: Arc<ChecksumTable>,
}

impl SettleJob {
    fn flush(&self) -> Result<()> {
        self.table.flush().inspect_err(|e| {
            tracing::warn!(error = %e,
                "the sidecar table's settle records could not be made durable; its next intents will fail");
        })
    }
}

impl Job for SettleJob {
    type Command = ();

    fn next_tick(&mut self) -> Option<Instant> {
        None
    }

    fn tick(&mut self) -> Flow {
        Flow::Continue
    }

    fn command(&mut self, (): ()) -> Flow {
        let _ = self.flush();
        Flow::Continue
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
}

impl Settler {
    /// Starts the thread for `table`.
    pub(super) fn start(table: Arc<ChecksumTable>) -> Result<Settler> {
        let worker = Worker::spawn(
            "sqlite settle",
            "selfheal-sqlite-settle",
            SettleJob { table },
        )?;
        let notifier = worker.notifier();
        Ok(Settler { worker, notifier })
    }

    /// Asks the thread to make the buffered settle records durable now.
    /// Never waits: a notice already queued covers this one.
    pub(super) fn notify(&self) {
        if let Some(n) = &self.notifier {
            n.notify(());
        }
    }

    /// Flushes once more and ends the thread (bounded by [`STOP_TIMEOUT`]).
    pub(super) fn stop(&self) -> Result<()> {
        self.worker.stop(Stop::Finish, STOP_TIMEOUT)
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
    use crate::{CorruptionConfig, MemStore, PageId};

    /// A notice makes the settle the detector's sync buffered durable
    /// without any further call: reopening the table's files afterwards
    /// (as a crash would leave them) finds the older bytes no longer
    /// accepted. Without the notice the reopened table still accepts them.
    #[test]
    fn a_notice_makes_the_buffered_settle_durable() {
        for notify in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("sums");
            let table = Arc::new(ChecksumTable::open(&path, 512).unwrap());
            let store = Arc::new(MemStore::new(512, 1).unwrap());
            let det = CorruptionConfig::new(ChecksumPlacement::Sidecar(table.clone()))
                .build(store.clone())
                .unwrap();
            let mut old = vec![1u8; 512];
            det.write_sealed(PageId(0), &mut old).unwrap();
            det.sync().unwrap();
            let mut new = vec![2u8; 512];
            det.write_sealed(PageId(0), &mut new).unwrap();
            let settler = Settler::start(table.clone()).unwrap();
            det.sync().unwrap();
            if notify {
                settler.notify();
            }
            // What a crash leaves: the files as they are now, read by a
            // table of their own (the settle thread still running).
            let deadline = Instant::now() + Duration::from_secs(10);
            let crash_copy = tempfile::tempdir().unwrap();
            let accepts_old = loop {
                for e in std::fs::read_dir(dir.path()).unwrap() {
                    let e = e.unwrap();
                    std::fs::copy(e.path(), crash_copy.path().join(e.file_name())).unwrap();
                }
                let reopened = ChecksumTable::open(&crash_copy.path().join("sums"), 512).unwrap();
                let accepts_old = reopened.verify(PageId(0), &old).is_ok();
                assert!(reopened.verify(PageId(0), &new).is_ok(), "the newest write");
                if !accepts_old || !notify || Instant::now() > deadline {
                    break accepts_old;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            assert_eq!(accepts_old, !notify, "notify = {notify}");
            drop(settler);
        }
    }
}
