//! The log's append side: records are encoded into a buffer under a lock and
//! made durable by group commit — whoever needs a record durable and finds
//! no write in flight writes the whole buffer and fsyncs it once for every
//! record in it; the others wait for that fsync.
//!
//! Every write is one frame followed by its mirror (see [`log`](super::log)),
//! begun only after the previous one's fsync returned, so a whole frame
//! truthfully says that every byte before it is durable, and a bit flipped
//! later in either copy of the newest frame (which no later frame vouches
//! for) loses nothing. The records are encoded into the frame
//! under the lock; the frame's one CRC is computed by the writer, with the
//! lock released.
//!
//! # A failed write or fsync
//! - **Retryable** (a full disk, `EIO`; see [`retryable`]): the appender
//!   *stalls*. The file's tail is unknown, so nothing more is appended to
//!   it; the frame that failed is kept in memory with the number of bytes
//!   of the file known durable (those of the last fsync that returned).
//!   Every new change is refused with the retryable [`Error::Stalled`]
//!   before anything is buffered, so the page it describes is never
//!   written: a page's checksum is durable before its bytes are issued,
//!   as always. A caller waiting for a record of the failed frame gets
//!   that error too (its page write did not happen); a record durable
//!   before the stall stays durable.
//! - **The resume** ([`Appender::resume`]) replaces the log, crash-safely
//!   (a temporary file, fsync, rename, fsync of the directory), with its
//!   durable prefix (read back) followed by the kept frame: the file ends
//!   exactly with every record it held, in order, once, whatever the failed
//!   write or fsync left (a partial append, bytes the kernel dropped). It
//!   never only fsyncs again: after a failed fsync a second one may succeed
//!   with the bytes gone. Records appended while the failed write was in
//!   flight stay buffered and are written by the next fsync. A stalled
//!   creation of a compaction's new log is resumed the same way (its
//!   durable prefix is empty).
//! - **When.** The table resumes on its own: the next change after a wait
//!   drawn with full jitter from an exponential backoff
//!   ([`RESUME_BACKOFF_BASE`] · 2ⁿ, at most [`RESUME_BACKOFF_CAP`], n the
//!   resumes failed so far) tries first. The wait is measured on the
//!   table's [`clock`](super::TableConfig::clock) and drawn from an rng
//!   seeded with its [`seed`](super::TableConfig::seed) (from entropy
//!   without one), so a simulated run replays exactly; a host or the
//!   [`AutoRecoveryManager`](crate::AutoRecoveryManager) (remedy
//!   `resume-checksum-log`) may call `ChecksumTable::resume` at any time.
//!   A resume that fails retryably stays stalled with the same bytes (a
//!   disk still full); any other failure (`EROFS`, a log shorter than its
//!   durable prefix) poisons the appender: reopen the table to recover.
//!
//! Crash during a resume: before the rename the old file stands (its
//! durable prefix, then at most a torn tail of records never acknowledged),
//! after it the new one; the temporary file is removed at open.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::log::{Frame, LogRecord, FRAME_OVERHEAD};
use super::storage::{replace, TableStorage};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::retry::{backoff, full_jitter_with, retryable};

pub(super) const COMPONENT: &str = "checksum table";

/// The longest wait before a stalled log first resumes on its own; it
/// doubles with each failed resume (the actual wait is drawn uniformly
/// below it).
pub const RESUME_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest wait between two resumes of a log that stays stalled.
pub const RESUME_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Called when the log stalls (with the reason, whether the disk is full
/// and the resumes failed so far), and after each resume the table tried
/// on its own that failed: the table's report on the failure bus.
pub(crate) type LogStallHook = Arc<dyn Fn(&str, bool, u32) + Send + Sync>;

/// A stalled log: what it keeps to write again.
#[derive(Debug)]
pub(super) struct LogStall {
    /// The failure that stalled it (the newest, after a failed resume).
    pub(super) reason: String,
    /// Whether it was a lack of space.
    pub(super) no_space: bool,
    /// Resumes that failed since.
    pub(super) failed_resumes: u32,
    /// The bytes that were being written, to follow the durable prefix.
    pending: Vec<u8>,
    /// Every slot below this is durable once `pending` is.
    target_seq: u64,
    /// The earliest moment the table resumes on its own (on the clock of
    /// [`ResumeTiming`]).
    next_attempt_ns: u64,
}

/// What the resume backoff is measured on and drawn from.
#[derive(Debug)]
pub(super) struct ResumeTiming {
    clock: Arc<dyn Clock>,
    rng: StdRng,
}

impl ResumeTiming {
    /// Time from `clock`; jitter from an rng seeded with `seed`, or from
    /// entropy without one.
    pub(super) fn new(clock: Arc<dyn Clock>, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        ResumeTiming { clock, rng }
    }

    /// The moment a wait drawn with full jitter below `max` ends.
    fn after_jitter(&mut self, max: Duration) -> u64 {
        let wait = full_jitter_with(max, &mut self.rng);
        let wait = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.clock.now_ns().saturating_add(wait)
    }
}

/// A stalled log, as [`ChecksumTable::log_stall`](super::ChecksumTable::log_stall) shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogStallInfo {
    /// The failure that stalled it (the newest, after a failed resume).
    pub reason: String,
    /// Whether it was a lack of space (`ENOSPC`, `EDQUOT`).
    pub no_space: bool,
    /// Resumes that failed since.
    pub failed_resumes: u32,
    /// Bytes kept in memory, to be written by the resume.
    pub pending_bytes: u64,
}

/// What a resume of the log did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogResumeReport {
    /// Whether the log was stalled (`false`: nothing to do).
    pub was_stalled: bool,
    /// Bytes of records written again from memory.
    pub bytes_rewritten: u64,
    /// Bytes of the durable prefix read back and written with them.
    pub bytes_kept: u64,
}

/// The state of the log being appended to.
#[derive(Debug)]
pub(super) struct LogState {
    /// The file appended to.
    pub(super) name: String,
    /// Generation of that file.
    pub(super) generation: u64,
    /// Sequence number of the next slot.
    pub(super) next_seq: u64,
    /// Every slot below this is durable.
    pub(super) durable_seq: u64,
    /// Records not yet written (the newest ones, up to `next_seq`), as the
    /// frame that will write them.
    pub(super) frame: Frame,
    /// A write (or the creation of a new file) is in flight.
    pub(super) io_busy: bool,
    /// Why the appender refuses further work for good.
    pub(super) poison: Option<String>,
    /// Why it refuses further work until a resume.
    pub(super) stall: Option<LogStall>,
    /// Bytes of the file, counting the buffer.
    pub(super) file_bytes: u64,
    /// Bytes of the file known durable (written before the last fsync that
    /// returned).
    pub(super) durable_bytes: u64,
    /// Successful fsyncs of the log.
    pub(super) syncs: u64,
    /// The clock and the jitter of the resume backoff.
    timing: ResumeTiming,
}

impl LogState {
    pub(super) fn new(
        name: String,
        generation: u64,
        next_seq: u64,
        file_bytes: u64,
        timing: ResumeTiming,
    ) -> Self {
        LogState {
            name,
            generation,
            next_seq,
            durable_seq: next_seq,
            frame: Frame::new(next_seq),
            io_busy: false,
            poison: None,
            stall: None,
            file_bytes,
            durable_bytes: file_bytes,
            syncs: 0,
            timing,
        }
    }

    pub(super) fn check(&self) -> Result<()> {
        if let Some(reason) = &self.poison {
            return Err(poisoned(reason));
        }
        match &self.stall {
            Some(s) => Err(stalled(s)),
            None => Ok(()),
        }
    }

    /// A write or fsync failed with `e`: stalls (keeping `pending`, the
    /// bytes that follow the durable prefix, and `target_seq`) or poisons.
    /// Returns `Some(no_space)` for a stall.
    fn halt(&mut self, what: String, e: &Error, pending: Vec<u8>, target_seq: u64) -> Option<bool> {
        let reason = format!("{what}: {e}");
        match retryable(e) {
            Some(no_space) => {
                tracing::warn!(%reason, no_space, "checksum table log stalled; a resume writes again what it holds");
                let next_attempt_ns = self.timing.after_jitter(RESUME_BACKOFF_BASE);
                self.stall = Some(LogStall {
                    reason,
                    no_space,
                    failed_resumes: 0,
                    pending,
                    target_seq,
                    next_attempt_ns,
                });
                Some(no_space)
            }
            None => {
                tracing::error!(%reason, "checksum table poisoned");
                self.poison = Some(reason);
                None
            }
        }
    }

    /// Buffers `record` and returns its sequence number.
    pub(super) fn append(&mut self, record: LogRecord) -> u64 {
        let seq = self.next_seq;
        debug_assert_eq!(seq, self.frame.first_seq() + self.frame.count());
        // Every byte twice: the frame and its mirror (log version 4).
        if self.frame.count() == 0 {
            self.file_bytes += 2 * FRAME_OVERHEAD as u64;
        }
        self.file_bytes += 2 * self.frame.push(record) as u64;
        self.next_seq += 1;
        seq
    }

    /// Bytes buffered and not yet written.
    pub(super) fn buffered(&self) -> usize {
        if self.frame.count() == 0 {
            0
        } else {
            self.frame.mirrored_len()
        }
    }
}

pub(super) fn poisoned(reason: &str) -> Error {
    Error::Poisoned {
        component: COMPONENT,
        reason: reason.to_string(),
    }
}

fn stalled(s: &LogStall) -> Error {
    Error::Stalled {
        component: COMPONENT,
        reason: s.reason.clone(),
        no_space: s.no_space,
    }
}

/// The appender: the state and the condition variable its waiters sleep on.
pub(super) struct Appender {
    pub(super) state: Mutex<LogState>,
    cv: Condvar,
    on_stall: Mutex<Option<LogStallHook>>,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Appender {
    pub(super) fn new(state: LogState) -> Self {
        Appender {
            state: Mutex::new(state),
            cv: Condvar::new(),
            on_stall: Mutex::new(None),
        }
    }

    /// Sets the hook called when the log stalls and after each failed
    /// resume.
    pub(super) fn set_stall_hook(&self, hook: Option<LogStallHook>) {
        *self.on_stall.lock() = hook;
    }

    /// Calls the stall hook (no lock of the appender held).
    fn report_stall(&self, reason: &str, no_space: bool, failed_resumes: u32) {
        let hook = self.on_stall.lock().clone();
        if let Some(h) = hook {
            h(reason, no_space, failed_resumes);
        }
    }

    /// Waits until slot `seq` is durable, writing and fsyncing the buffer
    /// (for every record in it) if no one else is.
    pub(super) fn make_durable(&self, storage: &dyn TableStorage, seq: u64) -> Result<()> {
        let mut st = self.state.lock();
        assert!(seq < st.next_seq, "slot {seq} was never handed out");
        loop {
            if st.durable_seq > seq {
                // Durable before any stall: it stays durable.
                return Ok(());
            }
            st.check()?;
            if st.io_busy {
                self.cv.wait(&mut st);
                continue;
            }
            if let Some((reason, no_space)) = self.write_buffer(&mut st, storage) {
                drop(st);
                self.report_stall(&reason, no_space, 0);
                st = self.state.lock();
            }
        }
    }

    /// Makes every buffered record durable.
    pub(super) fn flush(&self, storage: &dyn TableStorage) -> Result<()> {
        let last = {
            let st = self.state.lock();
            st.check()?;
            if st.durable_seq == st.next_seq {
                return Ok(());
            }
            st.next_seq - 1
        };
        self.make_durable(storage, last)
    }

    /// One write of the whole buffer and one fsync, with the lock released
    /// meanwhile. Called with `io_busy` clear and a nonempty buffer.
    /// Returns the reason and `no_space` when it stalled the log.
    fn write_buffer(
        &self,
        st: &mut MutexGuard<'_, LogState>,
        storage: &dyn TableStorage,
    ) -> Option<(String, bool)> {
        debug_assert!(
            st.frame.count() > 0,
            "records below next_seq are buffered, in flight or durable"
        );
        let target = st.next_seq;
        let frame = std::mem::replace(&mut st.frame, Frame::new(target));
        let name = st.name.clone();
        st.io_busy = true;
        let mut buf = Vec::new();
        let written = MutexGuard::unlocked(st, || {
            buf = frame.finish_mirrored();
            storage
                .append(&name, &buf)
                .and_then(|()| storage.sync(&name))
        });
        st.io_busy = false;
        let mut stalled = None;
        match written {
            Ok(()) => {
                st.durable_seq = target;
                st.durable_bytes += buf.len() as u64;
                st.syncs += 1;
                if st.frame.count() == 0 {
                    st.frame = Frame::recycle(buf, st.next_seq);
                }
            }
            Err(e) => {
                if let Some(no_space) = st.halt(format!("writing the log {name}"), &e, buf, target)
                {
                    let reason = st
                        .stall
                        .as_ref()
                        .map(|s| s.reason.clone())
                        .unwrap_or_default();
                    stalled = Some((reason, no_space));
                }
            }
        }
        self.cv.notify_all();
        stalled
    }

    /// Starts a switch to a new log file holding `created_slots` slots from
    /// `first_seq` on: appends continue into the buffer (after those slots),
    /// and nothing is written until [`end_switch`](Self::end_switch).
    pub(super) fn begin_switch(
        st: &mut LogState,
        name: String,
        generation: u64,
        created_slots: u64,
        file_bytes: u64,
    ) {
        debug_assert!(st.frame.count() == 0 && !st.io_busy);
        st.name = name;
        st.generation = generation;
        st.next_seq += created_slots;
        st.frame.reset(st.next_seq);
        st.file_bytes = file_bytes;
        st.io_busy = true;
    }

    /// Ends a switch: the new file exists durably with every slot below
    /// `durable_to` (its `bytes`), or (on error) the appender is stalled
    /// with those bytes to create it again, or poisoned.
    pub(super) fn end_switch(&self, durable_to: u64, created: &Result<()>, bytes: &[u8]) {
        let mut st = self.state.lock();
        st.io_busy = false;
        let mut stalled = None;
        match created {
            Ok(()) => {
                st.durable_seq = durable_to;
                st.durable_bytes = bytes.len() as u64;
            }
            Err(e) => {
                let what = format!("creating the log {}", st.name);
                st.durable_bytes = 0;
                if let Some(no_space) = st.halt(what, e, bytes.to_vec(), durable_to) {
                    let reason = st
                        .stall
                        .as_ref()
                        .map(|s| s.reason.clone())
                        .unwrap_or_default();
                    stalled = Some((reason, no_space));
                }
            }
        }
        self.cv.notify_all();
        drop(st);
        if let Some((reason, no_space)) = stalled {
            self.report_stall(&reason, no_space, 0);
        }
    }

    /// The retryable error a caller gets while the log is stalled; `None`
    /// when it is not.
    pub(super) fn stall_error(&self) -> Option<Error> {
        self.state.lock().stall.as_ref().map(stalled)
    }

    /// What a stalled log holds; `None` when it is not stalled.
    pub(super) fn stall_info(&self) -> Option<LogStallInfo> {
        let st = self.state.lock();
        st.stall.as_ref().map(|s| LogStallInfo {
            reason: s.reason.clone(),
            no_space: s.no_space,
            failed_resumes: s.failed_resumes,
            pending_bytes: s.pending.len() as u64,
        })
    }

    /// Resumes when the log is stalled and its backoff has passed; the
    /// table calls it before each change. A failure is left in the stall
    /// and reported through the hook (an explicit [`resume`](Self::resume)
    /// reports nothing: its caller has the error).
    pub(super) fn resume_if_due(&self, storage: &dyn TableStorage) {
        let due = {
            let st = self.state.lock();
            st.stall
                .as_ref()
                .is_some_and(|s| !st.io_busy && st.timing.clock.now_ns() >= s.next_attempt_ns)
        };
        if !due {
            return;
        }
        if let Err(e) = self.resume(storage) {
            tracing::debug!(error = %e, "checksum table log: a resume on its own failed");
            let report = self
                .state
                .lock()
                .stall
                .as_ref()
                .map(|s| (s.reason.clone(), s.no_space, s.failed_resumes));
            if let Some((reason, no_space, failed)) = report {
                self.report_stall(&reason, no_space, failed);
            }
        }
    }

    /// Resumes a stalled log (see the module docs); does nothing for one
    /// that is not stalled.
    ///
    /// # Errors
    /// [`Error::Stalled`] when it failed retryably again (still stalled,
    /// nothing lost); [`Error::Poisoned`] when the log is poisoned or the
    /// resume failed for good.
    pub(super) fn resume(&self, storage: &dyn TableStorage) -> Result<LogResumeReport> {
        let mut st = self.state.lock();
        while st.io_busy {
            self.cv.wait(&mut st);
        }
        if let Some(reason) = &st.poison {
            return Err(poisoned(reason));
        }
        let Some(stall) = st.stall.as_mut() else {
            return Ok(LogResumeReport::default());
        };
        let pending = std::mem::take(&mut stall.pending);
        let target = stall.target_seq;
        let name = st.name.clone();
        let durable_bytes = st.durable_bytes;
        st.io_busy = true;
        let result = MutexGuard::unlocked(&mut st, || -> Result<u64> {
            let mut all = Vec::with_capacity(durable_bytes as usize + pending.len());
            if durable_bytes > 0 {
                let live = storage.read(&name)?.unwrap_or_default();
                if (live.len() as u64) < durable_bytes {
                    return Err(Error::corrupt_file(
                        storage.path(&name),
                        live.len() as u64,
                        format!(
                            "resuming the log after a stall: it holds {} bytes, but its first {durable_bytes} were durable",
                            live.len()
                        ),
                    ));
                }
                all.extend_from_slice(&live[..durable_bytes as usize]);
            }
            all.extend_from_slice(&pending);
            replace(storage, &name, &all)?;
            Ok(all.len() as u64)
        });
        st.io_busy = false;
        let out = match result {
            Ok(len) => {
                st.stall = None;
                st.durable_seq = st.durable_seq.max(target);
                st.durable_bytes = len;
                st.syncs += 1;
                tracing::info!(bytes = pending.len(), "checksum table log resumed");
                Ok(LogResumeReport {
                    was_stalled: true,
                    bytes_rewritten: pending.len() as u64,
                    bytes_kept: durable_bytes,
                })
            }
            Err(e) => match (retryable(&e), &mut *st) {
                (
                    Some(no_space),
                    LogState {
                        stall: Some(s),
                        timing,
                        ..
                    },
                ) => {
                    s.reason = format!("resuming the log {name}: {e}");
                    s.no_space = no_space;
                    s.pending = pending;
                    s.failed_resumes = s.failed_resumes.saturating_add(1);
                    s.next_attempt_ns = timing.after_jitter(backoff(
                        s.failed_resumes.saturating_add(1),
                        RESUME_BACKOFF_BASE,
                        RESUME_BACKOFF_CAP,
                    ));
                    tracing::warn!(reason = %s.reason, "checksum table log resume failed; still stalled");
                    Err(stalled(s))
                }
                _ => {
                    let reason = format!("a resume of the log {name} after a stall failed: {e}");
                    tracing::error!(%reason, "checksum table poisoned");
                    st.stall = None;
                    st.poison = Some(reason.clone());
                    Err(poisoned(&reason))
                }
            },
        };
        self.cv.notify_all();
        out
    }
}
