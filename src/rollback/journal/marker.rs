//! The `selfheal-undo-mark` thread: after an fsync that no further batch
//! follows within the idle delay, it writes and fsyncs a synced-through mark
//! so that the acknowledged records are covered by a durable mark (see the
//! [journal docs](super#power-loss-and-the-synced-through-mark)).
//!
//! It is a [`Job`] on the crate's one worker lifecycle: each completed fsync
//! queues a wake-up without waiting ([`Notifier`]); the job's deadline moves
//! to `idle delay` after the latest wake-up, and when it passes the job
//! writes the mark. A panic poisons the journal (through [`Wakeups::died`]'s
//! hook), and a stop waits at most [`STOP_TIMEOUT`] for an fsync in progress.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::worker::{Flow, Job, Notifier, Stop, Worker};

/// The longest a stop waits for a mark being written.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the mark job needs from the journal.
pub(super) trait Wakeups: Send + Sync + 'static {
    /// Writes and fsyncs the idle mark.
    ///
    /// # Errors
    /// The journal's write or fsync error (it has poisoned itself).
    fn idle_mark(&self) -> Result<()>;

    /// The thread died: the journal is poisoned with `reason`.
    fn died(&self, reason: String);
}

/// The mark thread's job.
struct MarkJob<W: Wakeups> {
    journal: Arc<W>,
    delay: Duration,
    due: Option<Instant>,
}

impl<W: Wakeups> Job for MarkJob<W> {
    /// An fsync completed.
    type Command = ();

    fn next_tick(&mut self) -> Option<Instant> {
        self.due
    }

    fn tick(&mut self) -> Flow {
        self.due = None;
        if let Err(e) = self.journal.idle_mark() {
            tracing::warn!(error = %e, "undo journal: idle mark not written");
        }
        Flow::Continue
    }

    fn command(&mut self, (): ()) -> Flow {
        self.due = Some(Instant::now() + self.delay);
        Flow::Continue
    }

    fn died(&mut self, reason: &str) {
        let reason = format!("the undo journal's mark thread panicked: {reason}");
        tracing::error!(%reason);
        self.journal.died(reason);
    }
}

/// The running mark thread.
pub(super) struct Marker {
    worker: Worker<()>,
}

impl Marker {
    /// Starts the thread over `journal`, writing a mark `delay` after the
    /// last wake-up.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the thread cannot be spawned.
    pub(super) fn start<W: Wakeups>(journal: Arc<W>, delay: Duration) -> Result<Marker> {
        let job = MarkJob {
            journal,
            delay,
            due: None,
        };
        let worker = Worker::spawn("undo journal", "selfheal-undo-mark", job)?;
        Ok(Marker { worker })
    }

    /// The handle an fsync wakes the thread with (`None` once stopped).
    pub(super) fn notifier(&self) -> Option<Notifier<()>> {
        self.worker.notifier()
    }

    /// Stops the thread, waiting at most [`STOP_TIMEOUT`] for a mark being
    /// written.
    pub(super) fn stop(&mut self) {
        if let Err(e) = self.worker.stop(Stop::Abandon, STOP_TIMEOUT) {
            tracing::warn!(error = %e, "undo journal: mark thread did not stop cleanly");
        }
    }
}
