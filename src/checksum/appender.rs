//! The log's append side: records are encoded into a buffer under a lock and
//! made durable by group commit — whoever needs a record durable and finds
//! no write in flight writes the whole buffer and fsyncs it once for every
//! record in it; the others wait for that fsync.
//!
//! Every write is one frame (see [`log`](super::log)), begun only after the
//! previous one's fsync returned, so a whole frame truthfully says that
//! every byte before it is durable. The records are encoded into the frame
//! under the lock; the frame's one CRC is computed by the writer, with the
//! lock released. A failed write or
//! fsync poisons the appender: the file's tail is then unknown, and nothing
//! more is written to it.

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::log::{Frame, LogRecord, FRAME_OVERHEAD};
use super::storage::TableStorage;
use crate::error::{Error, Result};

pub(super) const COMPONENT: &str = "checksum table";

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
    /// Why the appender refuses further work.
    pub(super) poison: Option<String>,
    /// Bytes of the file, counting the buffer.
    pub(super) file_bytes: u64,
    /// Successful fsyncs of the log.
    pub(super) syncs: u64,
}

impl LogState {
    pub(super) fn new(name: String, generation: u64, next_seq: u64, file_bytes: u64) -> Self {
        LogState {
            name,
            generation,
            next_seq,
            durable_seq: next_seq,
            frame: Frame::new(next_seq),
            io_busy: false,
            poison: None,
            file_bytes,
            syncs: 0,
        }
    }

    pub(super) fn check(&self) -> Result<()> {
        match &self.poison {
            Some(reason) => Err(poisoned(reason)),
            None => Ok(()),
        }
    }

    /// Buffers `record` and returns its sequence number.
    pub(super) fn append(&mut self, record: LogRecord) -> u64 {
        let seq = self.next_seq;
        debug_assert_eq!(seq, self.frame.first_seq() + self.frame.count());
        if self.frame.count() == 0 {
            self.file_bytes += FRAME_OVERHEAD as u64;
        }
        self.file_bytes += self.frame.push(record) as u64;
        self.next_seq += 1;
        seq
    }

    /// Bytes buffered and not yet written.
    pub(super) fn buffered(&self) -> usize {
        if self.frame.count() == 0 {
            0
        } else {
            self.frame.encoded_len()
        }
    }
}

pub(super) fn poisoned(reason: &str) -> Error {
    Error::Poisoned {
        component: COMPONENT,
        reason: reason.to_string(),
    }
}

/// The appender: the state and the condition variable its waiters sleep on.
#[derive(Debug)]
pub(super) struct Appender {
    pub(super) state: Mutex<LogState>,
    cv: Condvar,
}

impl Appender {
    pub(super) fn new(state: LogState) -> Self {
        Appender {
            state: Mutex::new(state),
            cv: Condvar::new(),
        }
    }

    /// Waits until slot `seq` is durable, writing and fsyncing the buffer
    /// (for every record in it) if no one else is.
    pub(super) fn make_durable(&self, storage: &dyn TableStorage, seq: u64) -> Result<()> {
        let mut st = self.state.lock();
        assert!(seq < st.next_seq, "slot {seq} was never handed out");
        loop {
            st.check()?;
            if st.durable_seq > seq {
                return Ok(());
            }
            if st.io_busy {
                self.cv.wait(&mut st);
                continue;
            }
            self.write_buffer(&mut st, storage);
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
    fn write_buffer(&self, st: &mut MutexGuard<'_, LogState>, storage: &dyn TableStorage) {
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
            buf = frame.finish();
            storage
                .append(&name, &buf)
                .and_then(|()| storage.sync(&name))
        });
        st.io_busy = false;
        match written {
            Ok(()) => {
                st.durable_seq = target;
                st.syncs += 1;
                if st.frame.count() == 0 {
                    st.frame = Frame::recycle(buf, st.next_seq);
                }
            }
            Err(e) => {
                let reason = format!("writing the log {name}: {e}");
                tracing::error!(%reason, "checksum table poisoned");
                st.poison = Some(reason);
            }
        }
        self.cv.notify_all();
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
    /// `durable_to`, or (on error) the appender is poisoned.
    pub(super) fn end_switch(&self, durable_to: u64, created: &Result<()>) {
        let mut st = self.state.lock();
        st.io_busy = false;
        match created {
            Ok(()) => st.durable_seq = durable_to,
            Err(e) => {
                let reason = format!("creating the log {}: {e}", st.name);
                tracing::error!(%reason, "checksum table poisoned");
                st.poison = Some(reason);
            }
        }
        self.cv.notify_all();
    }
}
