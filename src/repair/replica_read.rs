//! Replica reads with a deadline, so that a hung or panicking replica never
//! holds up a repair.
//!
//! A replica is a host object, often across a network, and its `read_page`
//! may hang (a partition behind a socket without a timeout) or panic (a bug).
//! The repairer therefore never calls it on its own thread: each replica gets
//! one helper thread, `selfheal-replica-read`, started on its first read, that
//! runs that replica's reads one at a time from a bounded queue, and the
//! repairer waits for each answer only until the deadline
//! ([`RepairConfig::replica_read_timeout`](super::RepairConfig::replica_read_timeout)).
//!
//! # Contract
//!
//! - A read that misses the deadline is *abandoned*: its answer is discarded
//!   when it comes, the replica is counted as timed out and unavailable, and
//!   it is not asked again until that read has returned **and** the cool-off
//!   ([`RepairConfig::replica_cooloff`](super::RepairConfig::replica_cooloff))
//!   since the deadline has passed. So at most one abandoned read per replica
//!   is ever running: while it hangs, no other read of that replica starts.
//! - A read queued behind a hung one that misses its own deadline is
//!   withdrawn before it starts (the helper skips it).
//! - A read that panics is caught on the helper thread (which lives on) and
//!   answers as the replica being unavailable; the replica cools off too.
//! - A read that returns an error answers with that error at once.
//! - The deadline is real time (it bounds how long a thread waits); the
//!   cool-off is measured on the repairer's [`Clock`], so tests step over it.
//! - Dropping the repairer never waits for a hung read: the helper thread
//!   ends when its current read returns and it finds the queue closed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::host::Replica;
use crate::types::{PageId, ReplicaId};

/// Reads of one replica that may wait in its helper's queue at once (reads
/// beyond that answer at once that the replica is busy).
pub(crate) const READS_QUEUED_MAX: usize = 16;

/// Where a read is in its life; moves only forward.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
/// Its waiter gave up before the helper started it: it never runs.
const WITHDRAWN: u8 = 3;
/// Its waiter gave up while it ran: the replica is hung until it returns.
const ABANDONED: u8 = 4;

struct Job {
    page: PageId,
    buf: Vec<u8>,
    phase: Arc<AtomicU8>,
    reply: Sender<Reply>,
}

enum Reply {
    Done(Result<()>, Vec<u8>),
    Panicked(String),
}

/// What the helper thread shares with the reader.
struct Shared {
    replica: Arc<dyn Replica>,
    /// An abandoned read is still running.
    hung: AtomicBool,
}

/// Why a read gave no copy.
#[derive(Debug)]
pub(crate) struct ReadFailure {
    /// The error to report (the replica's own, or `ReplicaUnavailable`).
    pub error: Error,
    /// The read missed the deadline (and was abandoned or withdrawn).
    pub timed_out: bool,
}

/// The reads of one replica: its helper thread, the hung flag and the cool-off.
pub(crate) struct ReplicaReader {
    id: ReplicaId,
    shared: Arc<Shared>,
    jobs: Mutex<Option<Sender<Job>>>,
    /// Clock time before which the replica is not asked (0: none).
    cool_until_ns: AtomicU64,
}

impl ReplicaReader {
    pub(crate) fn new(id: ReplicaId, replica: Arc<dyn Replica>) -> Self {
        ReplicaReader {
            id,
            shared: Arc::new(Shared {
                replica,
                hung: AtomicBool::new(false),
            }),
            jobs: Mutex::new(None),
            cool_until_ns: AtomicU64::new(0),
        }
    }

    /// The replica.
    pub(crate) fn replica(&self) -> &Arc<dyn Replica> {
        &self.shared.replica
    }

    /// Why the replica must not be asked now, if it must not: a read of it
    /// is hung, or it cools off after a read that timed out or panicked.
    pub(crate) fn unavailable_reason(&self, now_ns: u64) -> Option<String> {
        if self.shared.hung.load(Ordering::Acquire) {
            return Some(
                "a read of it missed its deadline and has not returned yet; it is not asked \
                 again until that read returns"
                    .into(),
            );
        }
        let until = self.cool_until_ns.load(Ordering::Acquire);
        (now_ns < until).then(|| {
            format!(
                "it cools off for another {:?} after a read that missed its deadline or panicked",
                Duration::from_nanos(until - now_ns)
            )
        })
    }

    /// Reads `page` (`page_size` bytes) on the helper thread, waiting at
    /// most `timeout`.
    ///
    /// # Errors
    /// A [`ReadFailure`]: the replica's error, or `ReplicaUnavailable` when
    /// it is hung, cooling off, busy, missed the deadline or panicked.
    pub(crate) fn read(
        &self,
        page: PageId,
        page_size: usize,
        timeout: Duration,
        cooloff: Duration,
        clock: &dyn Clock,
    ) -> std::result::Result<Vec<u8>, ReadFailure> {
        if let Some(reason) = self.unavailable_reason(clock.now_ns()) {
            return Err(self.unavailable(reason, false));
        }
        let (reply, answer) = bounded(1);
        let phase = Arc::new(AtomicU8::new(QUEUED));
        self.submit(Job {
            page,
            buf: vec![0u8; page_size],
            phase: phase.clone(),
            reply,
        })
        .map_err(|reason| self.unavailable(reason, false))?;
        match answer.recv_timeout(timeout) {
            Ok(reply) => self.answer(page, reply, cooloff, clock),
            Err(RecvTimeoutError::Disconnected) => Err(self.unavailable(
                format!("its read helper ended without answering the read of page {page}"),
                false,
            )),
            Err(RecvTimeoutError::Timeout) => {
                let gave_up = phase
                    .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
                    .or_else(|_| {
                        phase.compare_exchange(
                            RUNNING,
                            ABANDONED,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                    });
                match gave_up {
                    Ok(was) => {
                        if was == RUNNING {
                            self.shared.hung.store(true, Ordering::Release);
                        }
                        self.cool_off(cooloff, clock);
                        Err(self.unavailable(
                            format!(
                                "it did not answer the read of page {page} within the deadline \
                                 of {timeout:?}"
                            ),
                            true,
                        ))
                    }
                    // It finished just as the deadline passed: the answer is there.
                    Err(_) => match answer.recv() {
                        Ok(reply) => self.answer(page, reply, cooloff, clock),
                        Err(_) => Err(self.unavailable(
                            format!(
                                "its read helper ended without answering the read of page {page}"
                            ),
                            false,
                        )),
                    },
                }
            }
        }
    }

    fn answer(
        &self,
        page: PageId,
        reply: Reply,
        cooloff: Duration,
        clock: &dyn Clock,
    ) -> std::result::Result<Vec<u8>, ReadFailure> {
        match reply {
            Reply::Done(Ok(()), buf) => Ok(buf),
            Reply::Done(Err(error), _) => Err(ReadFailure {
                error,
                timed_out: false,
            }),
            Reply::Panicked(message) => {
                self.cool_off(cooloff, clock);
                Err(self.unavailable(
                    format!("its read of page {page} panicked: {message}"),
                    false,
                ))
            }
        }
    }

    fn cool_off(&self, cooloff: Duration, clock: &dyn Clock) {
        let cooloff_ns = u64::try_from(cooloff.as_nanos()).unwrap_or(u64::MAX);
        self.cool_until_ns
            .fetch_max(clock.now_ns().saturating_add(cooloff_ns), Ordering::AcqRel);
    }

    fn unavailable(&self, reason: String, timed_out: bool) -> ReadFailure {
        ReadFailure {
            error: Error::ReplicaUnavailable {
                replica: self.id.clone(),
                reason,
            },
            timed_out,
        }
    }

    /// Queues a job for the helper thread, starting the thread first if it
    /// is not running.
    fn submit(&self, job: Job) -> std::result::Result<(), String> {
        let mut jobs = self.jobs.lock();
        // The helper never ends while the queue is open, so a closed queue
        // only means it was never started.
        let job = match jobs.as_ref() {
            Some(tx) => match tx.try_send(job) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(_)) => {
                    return Err(format!(
                        "{READS_QUEUED_MAX} reads of it are already waiting; try again later"
                    ))
                }
                Err(TrySendError::Disconnected(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = bounded(READS_QUEUED_MAX);
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("selfheal-replica-read".into())
            .spawn(move || serve(&shared, &rx))
            .map_err(|e| format!("its read helper thread could not be started: {e}"))?;
        tx.try_send(job)
            .map_err(|_| "its new read helper refused the read".to_owned())?;
        *jobs = Some(tx);
        Ok(())
    }
}

/// The helper thread: runs queued reads one at a time until the queue closes.
fn serve(shared: &Shared, jobs: &Receiver<Job>) {
    for mut job in jobs {
        if job
            .phase
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue; // withdrawn by its waiter
        }
        let page = job.page;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            shared.replica.read_page(page, &mut job.buf)
        }));
        let reply = match outcome {
            Ok(result) => Reply::Done(result, job.buf),
            Err(payload) => Reply::Panicked(panic_message(payload.as_ref())),
        };
        if job
            .phase
            .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Abandoned at its deadline: nobody waits for the answer, and the
            // replica may be asked again (once its cool-off ends).
            shared.hung.store(false, Ordering::Release);
            continue;
        }
        let _ = job.reply.send(reply);
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::{MemStore, StoreReplica};
    use crate::testing::FaultyReplica;
    use crate::PageStore;

    const PS: usize = 64;
    const DEADLINE: Duration = Duration::from_millis(100);
    const COOLOFF: Duration = Duration::from_secs(10);

    fn replica() -> Arc<FaultyReplica> {
        let store = Arc::new(MemStore::new(PS, 4).unwrap());
        store.write_page(PageId(2), &[2u8; PS]).unwrap();
        Arc::new(FaultyReplica::new(Arc::new(StoreReplica::new("r", store))))
    }

    #[test]
    fn hung_read_is_abandoned_and_blocks_the_replica_until_it_returns_and_cools_off() {
        let r = replica();
        let reader = ReplicaReader::new(ReplicaId::new("r"), r.clone());
        let clock = ManualClock::new();
        r.set_hang(true);
        let miss = reader
            .read(PageId(2), PS, DEADLINE, COOLOFF, &clock)
            .unwrap_err();
        assert!(miss.timed_out);
        assert!(miss.error.is_retryable());
        assert_eq!(r.hung_reads(), 1);
        // Past the cool-off, but the read still hangs: still not asked.
        clock.advance(COOLOFF * 2);
        let refused = reader
            .read(PageId(2), PS, DEADLINE, COOLOFF, &clock)
            .unwrap_err();
        assert!(!refused.timed_out);
        assert!(
            refused.error.to_string().contains("has not returned"),
            "{}",
            refused.error
        );
        assert_eq!(r.reads(), 1, "no second read while one hangs");
        // The read returns: its answer is discarded and the replica is asked again.
        r.set_hang(false);
        while reader.unavailable_reason(clock.now_ns()).is_some() {
            std::thread::yield_now();
        }
        assert_eq!(
            reader
                .read(PageId(2), PS, DEADLINE, COOLOFF, &clock)
                .unwrap(),
            vec![2u8; PS]
        );
    }

    #[test]
    fn cool_off_follows_the_clock() {
        let r = replica();
        let reader = ReplicaReader::new(ReplicaId::new("r"), r.clone());
        let clock = ManualClock::new();
        r.set_panic(true);
        let miss = reader
            .read(PageId(1), PS, DEADLINE, COOLOFF, &clock)
            .unwrap_err();
        assert!(
            miss.error.to_string().contains("panicked"),
            "{}",
            miss.error
        );
        r.set_panic(false);
        assert!(reader.unavailable_reason(clock.now_ns()).is_some());
        clock.advance(COOLOFF - Duration::from_nanos(1));
        assert!(reader
            .read(PageId(1), PS, DEADLINE, COOLOFF, &clock)
            .is_err());
        clock.advance(Duration::from_nanos(1));
        assert_eq!(
            reader
                .read(PageId(1), PS, DEADLINE, COOLOFF, &clock)
                .unwrap(),
            vec![0u8; PS]
        );
        assert_eq!(r.reads(), 2, "the helper survived the panic");
    }

    #[test]
    fn errors_answer_at_once_and_do_not_cool_off() {
        let r = replica();
        let reader = ReplicaReader::new(ReplicaId::new("r"), r.clone());
        let clock = ManualClock::new();
        r.set_down(true);
        let miss = reader
            .read(PageId(1), PS, DEADLINE, COOLOFF, &clock)
            .unwrap_err();
        assert!(!miss.timed_out);
        assert!(
            miss.error.to_string().contains("injected"),
            "{}",
            miss.error
        );
        assert!(reader.unavailable_reason(clock.now_ns()).is_none());
    }

    #[test]
    fn concurrent_reads_behind_a_hung_one_are_withdrawn_not_run() {
        let r = replica();
        let reader = Arc::new(ReplicaReader::new(ReplicaId::new("r"), r.clone()));
        let clock = ManualClock::new();
        r.set_hang(true);
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let reader = reader.clone();
                let clock = clock.clone();
                std::thread::spawn(move || {
                    reader
                        .read(PageId(2), PS, DEADLINE, COOLOFF, &clock)
                        .unwrap_err()
                })
            })
            .collect();
        for w in waiters {
            let miss = w.join().unwrap();
            assert!(miss.error.is_retryable());
        }
        r.set_hang(false);
        while reader.unavailable_reason(0).is_some() && r.hung_reads() > 0 {
            std::thread::yield_now();
        }
        // Only the first read ever ran: the others were withdrawn or refused.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(r.reads(), 1);
    }
}
