//! Replica reads with a deadline, so that a hung or panicking replica never
//! holds up a repair.
//!
//! A replica is a host object, often across a network, and its `read_page`
//! may hang (a partition behind a socket without a timeout) or panic (a bug).
//! The repairer therefore never calls it on its own thread: each replica gets
//! one helper thread, `selfheal-replica-read`, started on its first read, that
//! runs that replica's jobs one at a time from a bounded queue (at most
//! [`READS_QUEUED_MAX`] jobs), and the repairer waits for each answer only
//! until the deadline
//! ([`RepairConfig::replica_read_timeout`](super::RepairConfig::replica_read_timeout)).
//! A job is the read of one page, or, for a batch repair, the reads of the
//! batch's pages in order (a *stream*): the helper reads ahead and sends each
//! answer as it comes, so a batch costs one hand-over between threads instead
//! of one per page, and the deadline applies to each answer the repairer
//! waits for.
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
//!   answers as the replica being unavailable; the replica cools off too, and
//!   the rest of its job is not read.
//! - Dropping a stream cancels its reads not yet started.
//! - A read that returns an error answers with that error at once.
//! - The deadline is real time (it bounds how long a thread waits); the
//!   cool-off is measured on the repairer's [`Clock`], so tests step over it.
//! - Dropping the repairer never waits for a hung read: the helper thread
//!   ends when its current read returns and it finds the queue closed.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::host::Replica;
use crate::types::{PageId, ReplicaId};

/// Jobs of one replica that may wait in its helper's queue at once (reads
/// beyond that answer at once that the replica is busy).
pub(crate) const READS_QUEUED_MAX: usize = 16;

/// Where a job is in its life; moves only forward.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
/// Its waiter gave up before the helper started it: it never runs.
const WITHDRAWN: u8 = 3;
/// Its waiter gave up while a read of it ran: the replica is hung until that
/// read returns.
const ABANDONED: u8 = 4;
/// Its waiter no longer wants the rest: the helper stops after the read it
/// is in (not a hang).
const CANCELLED: u8 = 5;

/// Reads of one or more pages, run in order; each answer is sent as it comes.
struct Job {
    pages: Vec<PageId>,
    page_size: usize,
    phase: Arc<AtomicU8>,
    reply: Sender<(PageId, Reply)>,
}

enum Reply {
    Done(Result<()>, Vec<u8>),
    Panicked(String),
}

/// What the helper thread shares with the reader.
struct Shared {
    replica: Arc<dyn Replica>,
    /// The phase of the job the helper runs now. The replica is hung while
    /// it is `ABANDONED`: only the waiter moves a phase there, and only the
    /// helper clears this when the job's last read returned, so no flag can
    /// be left set by a race between the two.
    current: Mutex<Option<Arc<AtomicU8>>>,
}

impl Shared {
    fn hung(&self) -> bool {
        self.current
            .lock()
            .as_ref()
            .is_some_and(|p| p.load(Ordering::Acquire) == ABANDONED)
    }
}

/// How a read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// Not asked: hung, cooling off, busy, or no helper.
    Refused,
    /// The replica answered with an error.
    Failed,
    /// It missed the deadline (abandoned or withdrawn).
    TimedOut,
    /// It panicked.
    Panicked,
}

/// Why a read gave no copy.
#[derive(Debug)]
pub(crate) struct ReadFailure {
    /// The error to report (the replica's own, or `ReplicaUnavailable`).
    pub error: Error,
    /// How it failed.
    pub miss: Miss,
}

impl ReadFailure {
    /// Whether the read missed its deadline.
    pub(crate) fn timed_out(&self) -> bool {
        self.miss == Miss::TimedOut
    }
}

/// The answers of one job, taken page by page in the job's order. Dropping
/// it cancels the reads not yet started.
pub(crate) struct Stream {
    phase: Arc<AtomicU8>,
    answers: Receiver<(PageId, Reply)>,
    /// Pages whose answers have not been taken yet, in order.
    expected: VecDeque<PageId>,
    /// The job ended early (a read missed its deadline or panicked).
    broken: bool,
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self
            .phase
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            let _ = self.phase.compare_exchange(
                RUNNING,
                CANCELLED,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
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
                current: Mutex::new(None),
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
        if self.shared.hung() {
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
        let mut stream = self.stream(vec![page], page_size, clock)?;
        self.take(&mut stream, page, timeout, cooloff, clock)
            .unwrap_or_else(|| {
                Err(self.unavailable(
                    format!("its read helper ended without answering the read of page {page}"),
                    Miss::Refused,
                ))
            })
    }

    /// Queues reads of `pages` (in this order) as one job and returns at
    /// once; the answers are taken with [`take`](Self::take). The helper
    /// reads ahead while the caller works on earlier answers, so a batch of
    /// reads costs one hand-over between threads, not one per page.
    ///
    /// # Errors
    /// `ReplicaUnavailable` when the replica is hung, cooling off or busy, or
    /// its helper cannot be started.
    pub(crate) fn stream(
        &self,
        pages: Vec<PageId>,
        page_size: usize,
        clock: &dyn Clock,
    ) -> std::result::Result<Stream, ReadFailure> {
        if let Some(reason) = self.unavailable_reason(clock.now_ns()) {
            return Err(self.unavailable(reason, Miss::Refused));
        }
        let (reply, answers) = bounded(pages.len().max(1));
        let phase = Arc::new(AtomicU8::new(QUEUED));
        let expected = pages.iter().copied().collect();
        self.submit(Job {
            pages,
            page_size,
            phase: phase.clone(),
            reply,
        })
        .map_err(|reason| self.unavailable(reason, Miss::Refused))?;
        Ok(Stream {
            phase,
            answers,
            expected,
            broken: false,
        })
    }

    /// Takes the answer for `page` from `stream`, discarding answers for
    /// pages before it, waiting at most `timeout` for each. A wait for an
    /// earlier page that misses the deadline, or an earlier read that
    /// panicked, is this page's answer too (the replica failed it). `None`
    /// when the stream holds no answer for `page` (not asked, or the job
    /// ended early): the caller reads it on its own then.
    pub(crate) fn take(
        &self,
        stream: &mut Stream,
        page: PageId,
        timeout: Duration,
        cooloff: Duration,
        clock: &dyn Clock,
    ) -> Option<std::result::Result<Vec<u8>, ReadFailure>> {
        if stream.broken || !stream.expected.contains(&page) {
            return None;
        }
        loop {
            let next = stream.expected.pop_front()?;
            let answer = match stream.answers.recv_timeout(timeout) {
                Ok((p, reply)) => {
                    debug_assert_eq!(p, next, "answers come in the job's order");
                    self.answer(p, reply, cooloff, clock)
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.give_up(stream, next, timeout, cooloff, clock)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // The job ended early; its last answer said why.
                    stream.broken = true;
                    return None;
                }
            };
            let ends = answer
                .as_ref()
                .is_err_and(|f| matches!(f.miss, Miss::TimedOut | Miss::Panicked));
            if ends {
                stream.broken = true;
            }
            if next == page || ends {
                return Some(answer);
            }
        }
    }

    /// The deadline passed while waiting for `page`'s answer.
    fn give_up(
        &self,
        stream: &mut Stream,
        page: PageId,
        timeout: Duration,
        cooloff: Duration,
        clock: &dyn Clock,
    ) -> std::result::Result<Vec<u8>, ReadFailure> {
        let phase = &stream.phase;
        let gave_up = phase
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .or_else(|_| {
                phase.compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            });
        match gave_up {
            // Withdrawn or abandoned; an abandoned read keeps the replica
            // hung (see `Shared::current`) until it returns.
            Ok(_) => {
                self.cool_off(cooloff, clock);
                Err(self.unavailable(
                    format!(
                        "it did not answer the read of page {page} within the deadline of \
                         {timeout:?}"
                    ),
                    Miss::TimedOut,
                ))
            }
            // The job finished just as the deadline passed: the answer is there.
            Err(_) => match stream.answers.try_recv() {
                Ok((p, reply)) => self.answer(p, reply, cooloff, clock),
                Err(_) => Err(self.unavailable(
                    format!("its read helper ended without answering the read of page {page}"),
                    Miss::Refused,
                )),
            },
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
                miss: Miss::Failed,
            }),
            Reply::Panicked(message) => {
                self.cool_off(cooloff, clock);
                Err(self.unavailable(
                    format!("its read of page {page} panicked: {message}"),
                    Miss::Panicked,
                ))
            }
        }
    }

    fn cool_off(&self, cooloff: Duration, clock: &dyn Clock) {
        let cooloff_ns = u64::try_from(cooloff.as_nanos()).unwrap_or(u64::MAX);
        self.cool_until_ns
            .fetch_max(clock.now_ns().saturating_add(cooloff_ns), Ordering::AcqRel);
    }

    fn unavailable(&self, reason: String, miss: Miss) -> ReadFailure {
        ReadFailure {
            error: Error::ReplicaUnavailable {
                replica: self.id.clone(),
                reason,
            },
            miss,
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

/// The helper thread: runs queued jobs one at a time until the queue closes.
fn serve(shared: &Shared, jobs: &Receiver<Job>) {
    for job in jobs {
        if job
            .phase
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue; // withdrawn by its waiter
        }
        *shared.current.lock() = Some(job.phase.clone());
        run(shared, &job);
        // Abandoned at a deadline or not, the read has returned: the replica
        // may be asked again (once its cool-off ends).
        let _ = job
            .phase
            .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire);
        *shared.current.lock() = None;
    }
}

/// Runs the reads of one job in order until one panics or its waiter stops
/// waiting.
fn run(shared: &Shared, job: &Job) {
    for &page in &job.pages {
        if job.phase.load(Ordering::Acquire) != RUNNING {
            return;
        }
        let mut buf = vec![0u8; job.page_size];
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            shared.replica.read_page(page, &mut buf)
        }));
        let (reply, stop) = match outcome {
            Ok(result) => (Reply::Done(result, buf), false),
            Err(payload) => (Reply::Panicked(panic_message(payload.as_ref())), true),
        };
        if job.phase.load(Ordering::Acquire) != RUNNING {
            return;
        }
        // The channel holds one answer per page: this never blocks.
        let _ = job.reply.try_send((page, reply));
        if stop {
            return;
        }
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
        assert!(miss.timed_out());
        assert!(miss.error.is_retryable());
        assert_eq!(r.hung_reads(), 1);
        // Past the cool-off, but the read still hangs: still not asked.
        clock.advance(COOLOFF * 2);
        let refused = reader
            .read(PageId(2), PS, DEADLINE, COOLOFF, &clock)
            .unwrap_err();
        assert!(!refused.timed_out());
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
        // Generous: printing the panic's backtrace may take a while.
        let miss = reader
            .read(PageId(1), PS, Duration::from_secs(60), COOLOFF, &clock)
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
        assert!(!miss.timed_out());
        assert!(
            miss.error.to_string().contains("injected"),
            "{}",
            miss.error
        );
        assert!(reader.unavailable_reason(clock.now_ns()).is_none());
    }

    #[test]
    fn the_helper_ends_when_the_reader_is_dropped() {
        let r = replica();
        let reader = ReplicaReader::new(ReplicaId::new("r"), r.clone());
        let clock = ManualClock::new();
        let mut stream = reader
            .stream(vec![PageId(0), PageId(1), PageId(2)], PS, &clock)
            .unwrap();
        assert_eq!(
            reader
                .take(&mut stream, PageId(2), DEADLINE, COOLOFF, &clock)
                .unwrap()
                .unwrap(),
            vec![2u8; PS],
            "earlier answers are skipped"
        );
        assert!(reader
            .take(&mut stream, PageId(1), DEADLINE, COOLOFF, &clock)
            .is_none());
        drop(stream);
        assert!(Arc::strong_count(&r) > 1, "the helper holds the replica");
        drop(reader);
        let waited = std::time::Instant::now();
        while Arc::strong_count(&r) > 1 {
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "the helper did not end"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
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
        while reader.shared.hung() {
            std::thread::yield_now();
        }
        // Only the first read ever ran: the others were withdrawn or refused
        // (a withdrawn job is skipped by the helper before the next one).
        let r2 = reader.read(PageId(2), PS, DEADLINE, COOLOFF, &ManualClock::new());
        assert!(r2.is_err(), "cooling off on this clock");
        assert_eq!(r.reads(), 1);
    }
}
