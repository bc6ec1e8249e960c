//! The scrubber's side of its resume cursor: restoring the position of a
//! full scan when the scrubber is built, and writing it back while it
//! scans, on pause and on stop.
//!
//! The file format, and what a crash at each step of a write leaves, are in
//! the [`cursor`](super::cursor) module; this file only decides when the
//! cursor is read and written and reports a write that failed on the
//! failure bus.

use super::cursor::{encode, load, Cursor};
use super::{Phase, ScrubCore, ScrubMode};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::fsutil;
use crate::types::{FailureKind, Source};

impl ScrubCore {
    /// Positions a new full-mode scrubber where its cursor file says; a
    /// cursor that cannot be read is reported and ignored.
    pub(super) fn resume_from_cursor(&mut self, now: u64) {
        debug_assert_eq!(self.mode, ScrubMode::Full);
        let Some(path) = self.cursor_path.clone() else {
            return;
        };
        let page_count = self.detector.store().page_count();
        match load(&path) {
            Ok(None) => {}
            Ok(Some(c)) => {
                // The store may have shrunk since the cursor was written: the
                // interrupted pass then ends where the store ends now.
                let next = c.next.min(page_count);
                self.passes = c.passes;
                self.persisted = Some(Cursor {
                    next,
                    total: page_count,
                    passes: c.passes,
                });
                if next > 0 {
                    // Continue the interrupted pass over the store as it is now.
                    self.phase = Phase::Scanning;
                    self.position = next;
                    self.pass_total = page_count;
                    self.pass_started_ns = now;
                    tracing::info!(next, page_count, "scrub resumes from its cursor");
                }
            }
            Err(error) => {
                tracing::warn!(
                    path = %path.display(),
                    %error,
                    "scrub cursor unreadable; starting at page 0"
                );
                self.report_cursor(
                    format!(
                        "the scrub cursor {} could not be read ({error}); the scrub starts at page 0",
                        path.display()
                    ),
                    now,
                );
            }
        }
    }

    /// Writes the cursor if it changed (full mode with a cursor path only);
    /// a failed write is reported once per episode and returned.
    pub(super) fn persist_cursor_at(&mut self, now: u64) -> Result<()> {
        self.last_persist_ns = now;
        if self.mode != ScrubMode::Full {
            return Ok(());
        }
        let Some(path) = &self.cursor_path else {
            return Ok(());
        };
        let c = Cursor {
            next: self.position,
            total: self.pass_total,
            passes: self.passes,
        };
        if self.persisted == Some(c) {
            return Ok(());
        }
        match fsutil::atomic_write(path, &encode(c)) {
            Ok(()) => {
                self.persisted = Some(c);
                self.cursor_failing = false;
                Ok(())
            }
            Err(error) => {
                if !self.cursor_failing {
                    self.cursor_failing = true;
                    let evidence = format!(
                        "the scrub cursor {} could not be written ({error}); the previous one is intact, the scrub goes on and retries, and a restart rescans from the last cursor written",
                        path.display()
                    );
                    self.report_cursor(evidence, now);
                }
                Err(error)
            }
        }
    }

    /// [`persist_cursor_at`](Self::persist_cursor_at), logging a failure
    /// (it is retried at the next persist).
    pub(super) fn persist_logged(&mut self, now: u64) {
        if let Err(error) = self.persist_cursor_at(now) {
            tracing::warn!(%error, "could not persist the scrub cursor; will retry");
        }
    }

    fn report_cursor(&self, evidence: String, now: u64) {
        self.sink.report(
            Source::Scrubber,
            FailureKind::ScrubCursorFailed,
            evidence,
            now,
        );
    }

    /// Writes the cursor file now (when one is configured, in full mode).
    /// A failure is also reported on the failure bus, once until a write
    /// succeeds again.
    ///
    /// # Errors
    /// [`Error::Io`] naming the step of the crash-safe write that failed (or
    /// [`Error::NotRegularFile`] when something else is at the path); the
    /// previous cursor file is then intact.
    pub(super) fn persist_cursor(&mut self) -> Result<()> {
        let now = self.clock.now_ns();
        self.persist_cursor_at(now)
    }
}
