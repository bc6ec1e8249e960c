//! Calls into one host object — a replica or a fallback source — on a
//! helper thread of its own, with a deadline, so that a host object that
//! hangs or panics never holds up the repairer.
//!
//! A replica is a host object, often across a network, and any of its calls
//! (`status`, `read_page`, `range_digest`; a fallback's `read_page`) may hang
//! (a partition behind a socket without a timeout) or panic (a bug). The
//! repairer therefore never calls one on its own thread: each host object
//! gets a [`Courier`] with one helper thread (`selfheal-replica-read` or
//! `selfheal-fallback-read`), started on its first call, that runs the
//! object's jobs one at a time from a bounded queue (at most
//! [`JOBS_QUEUED_MAX`]). The caller waits for each answer only until its
//! deadline. A job is one call, or a run of calls answered one by one (the
//! page reads of a batch: the helper reads ahead and sends each answer as it
//! comes).
//!
//! # Contract
//!
//! - A job whose answer misses the deadline is *abandoned*: its answers are
//!   discarded, the object cools off, and it is not called again until that
//!   call has returned **and** the cool-off since the deadline has passed. So
//!   at most one abandoned call per host object is ever running: while it
//!   hangs, no other call of that object starts.
//! - A job queued behind a hung one that misses its own deadline is
//!   withdrawn before it starts (the helper skips it). If nobody waits for
//!   the job it queued behind (its caller dropped it while a call of it ran),
//!   that job is marked abandoned then: the object is hung until it returns.
//! - A call that panics is caught on the helper thread (which lives on) and
//!   answers as the object being unavailable; the object cools off too, and
//!   the rest of its job is not run.
//! - Dropping a [`Call`] cancels the parts of its job not yet started.
//! - The deadline is real time (it bounds how long a thread waits); the
//!   cool-off is measured on the repairer's [`Clock`], so tests step over it.
//! - Dropping the courier never waits for a hung call: the helper ends when
//!   its current call returns and it finds the queue closed.
//!
//! # Inline calls
//!
//! A host object that promises its calls never hang (a
//! [replica that may be called inline](crate::Replica::may_call_inline))
//! gets a courier without a helper thread: each job runs on the caller's
//! thread when it is queued, its answers wait in the call's channel, and
//! [`Courier::wait`] takes them at once. Everything else holds as above — a
//! panic is caught and answers as the object being unavailable, the object
//! cools off after it, a call refused while it cools off is not made — except
//! the deadline, which an inline call cannot miss because it has returned
//! before anyone waits: a call that hangs hangs its caller. That is the
//! price of the promise, and why it is the host's to make.
//!
//! # The hand-over
//!
//! A call costs two hand-overs between threads (the job to the helper, the
//! answer back). Parking a thread and waking it costs several microseconds
//! each, more than reading a page from memory, so both sides poll briefly
//! before they park: the caller for up to [`CALLER_SPIN`] after it queued a
//! job, the helper for up to [`HELPER_SPIN`] after it finished one (the next
//! call of a repair follows within microseconds). Polling spins a little and
//! then yields the core between polls, so on a busy machine it gives way to
//! threads with work. Neither bound changes what is answered or when a
//! deadline passes; they trade a little CPU for latency.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use parking_lot::Mutex;

use crate::clock::Clock;
use crate::error::Error;
use crate::types::ReplicaId;
use crate::worker::panic_message;

/// Jobs of one host object that may wait in its helper's queue at once
/// (calls beyond that answer at once that the object is busy).
pub(crate) const JOBS_QUEUED_MAX: usize = 16;

/// How long a caller polls for an answer before it parks.
pub(crate) const CALLER_SPIN: Duration = Duration::from_micros(50);

/// How long a helper polls its queue after a job before it parks.
pub(crate) const HELPER_SPIN: Duration = Duration::from_micros(100);

/// Where a job is in its life; moves only forward.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
/// Its caller gave up before the helper started it: it never runs.
const WITHDRAWN: u8 = 3;
/// Its caller gave up while a call of it ran: the object is hung until that
/// call returns.
const ABANDONED: u8 = 4;
/// Its caller no longer wants the rest: the helper stops after the call it
/// is in (not a hang).
const CANCELLED: u8 = 5;

/// How long a courier's caller waits, how long a host object that missed a
/// deadline or panicked is left alone, and the clock of that cool-off.
#[derive(Clone)]
pub(crate) struct Limits {
    /// The deadline of one answer.
    pub timeout: Duration,
    /// The cool-off after a call that missed its deadline or panicked.
    pub cooloff: Duration,
    /// The clock the cool-off is measured on.
    pub clock: Arc<dyn Clock>,
}

impl Limits {
    /// The deadline of an answer asked for now.
    pub(crate) fn deadline(&self) -> Deadline {
        Deadline::after(self.timeout)
    }
}

/// Who a courier calls, for the errors it reports.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A registered replica.
    Replica(ReplicaId),
    /// A fallback source, by its name.
    Fallback(String),
}

/// When a caller stops waiting for an answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    /// `timeout` from now.
    pub(crate) fn after(timeout: Duration) -> Self {
        let now = Instant::now();
        Deadline {
            // A timeout is validated to at most an hour; were the sum past
            // what an `Instant` holds, the deadline would be now.
            at: now.checked_add(timeout).unwrap_or(now),
            timeout,
        }
    }
}

/// How a call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// Not made: hung, cooling off, busy, or no helper.
    Refused,
    /// The host object answered with an error.
    Failed,
    /// It missed the deadline (abandoned or withdrawn).
    TimedOut,
    /// It panicked.
    Panicked,
}

/// Why a call gave no answer.
#[derive(Debug)]
pub(crate) struct CallFailure {
    /// The error to report (the object's own, or one saying it is unavailable).
    pub error: Error,
    /// How it failed.
    pub miss: Miss,
}

impl CallFailure {
    /// Whether the call missed its deadline.
    pub(crate) fn timed_out(&self) -> bool {
        self.miss == Miss::TimedOut
    }
}

/// What the helper sends back for one job.
enum Answer<A> {
    Value(A),
    Panicked(String),
}

/// What a job's work uses to answer.
pub(crate) struct Reply<'a, A> {
    phase: &'a AtomicU8,
    tx: &'a Sender<Answer<A>>,
}

impl<A> Reply<'_, A> {
    /// Whether the caller still wants answers: check before each call into
    /// the host object.
    pub(crate) fn wanted(&self) -> bool {
        self.phase.load(Ordering::Acquire) == RUNNING
    }

    /// Sends one answer; `false` when the caller no longer wants answers.
    pub(crate) fn send(&self, answer: A) -> bool {
        // The channel holds every answer a job may send: this never blocks.
        self.wanted() && self.tx.try_send(Answer::Value(answer)).is_ok()
    }
}

/// A job's work, with the channel it answers on.
trait Run<T: ?Sized>: Send {
    fn run(self: Box<Self>, target: &T, phase: &AtomicU8);
}

struct Work<A, F> {
    tx: Sender<Answer<A>>,
    f: F,
}

impl<T, A, F> Run<T> for Work<A, F>
where
    T: ?Sized,
    A: Send,
    F: FnOnce(&T, &Reply<'_, A>) + Send,
{
    fn run(self: Box<Self>, target: &T, phase: &AtomicU8) {
        let Work { tx, f } = *self;
        let reply = Reply { phase, tx: &tx };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(target, &reply))) {
            // The channel keeps a slot for this beyond the job's answers.
            let _ = tx.try_send(Answer::Panicked(panic_message(payload.as_ref())));
        }
    }
}

struct Job<T: ?Sized> {
    phase: Arc<AtomicU8>,
    work: Box<dyn Run<T>>,
}

/// What the helper thread shares with the courier.
struct Shared<T: ?Sized> {
    target: Arc<T>,
    /// The phase of the job the helper runs now. The object is hung while it
    /// is `ABANDONED`: only the caller moves a phase there, and only the
    /// helper clears this when the job's last call returned, so no flag can
    /// be left set by a race between the two.
    current: Mutex<Option<Arc<AtomicU8>>>,
}

impl<T: ?Sized> Shared<T> {
    fn hung(&self) -> bool {
        self.current
            .lock()
            .as_ref()
            .is_some_and(|p| p.load(Ordering::Acquire) == ABANDONED)
    }
}

/// The answers of one job, taken one by one. Dropping it cancels the parts
/// of the job not yet started.
pub(crate) struct Call<A> {
    phase: Arc<AtomicU8>,
    answers: Receiver<Answer<A>>,
}

impl<A> Drop for Call<A> {
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

/// Calls into one host object: its helper thread, the hung flag and the
/// cool-off.
pub(crate) struct Courier<T: ?Sized + Send + Sync + 'static> {
    who: Target,
    thread_name: &'static str,
    limits: Limits,
    shared: Arc<Shared<T>>,
    jobs: Mutex<Option<Sender<Job<T>>>>,
    /// Clock time before which the object is not called (0: none).
    cool_until_ns: AtomicU64,
    /// Jobs run on the caller's thread (see [Inline calls](self#inline-calls)).
    inline: bool,
}

impl<T: ?Sized + Send + Sync + 'static> Courier<T> {
    /// A courier for `target`; its helper thread, named `thread_name`, starts
    /// with the first call.
    pub(crate) fn new(
        who: Target,
        thread_name: &'static str,
        limits: Limits,
        target: Arc<T>,
    ) -> Self {
        Courier {
            who,
            thread_name,
            limits,
            shared: Arc::new(Shared {
                target,
                current: Mutex::new(None),
            }),
            jobs: Mutex::new(None),
            cool_until_ns: AtomicU64::new(0),
            inline: false,
        }
    }

    /// Whether jobs run on the caller's thread instead of the helper's, with
    /// no deadline (see [Inline calls](self#inline-calls)); default `false`.
    #[must_use]
    pub(crate) fn run_inline(mut self, yes: bool) -> Self {
        self.inline = yes;
        self
    }

    /// Its limits.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Why the object must not be called now, if it must not: a call of it
    /// is hung, or it cools off after a call that timed out or panicked.
    pub(crate) fn unavailable_reason(&self) -> Option<String> {
        let now_ns = self.limits.clock.now_ns();
        if self.shared.hung() {
            return Some(
                "a call into it missed its deadline and has not returned yet; it is not called \
                 again until that call returns"
                    .into(),
            );
        }
        let until = self.cool_until_ns.load(Ordering::Acquire);
        (now_ns < until).then(|| {
            format!(
                "it cools off for another {:?} after a call that missed its deadline or panicked",
                Duration::from_nanos(until - now_ns)
            )
        })
    }

    /// Queues `work` as one job that sends at most `answers_max` answers,
    /// and returns at once; the answers are taken with [`wait`](Self::wait).
    ///
    /// # Errors
    /// A `Refused` failure when the object is hung, cooling off or busy, or
    /// its helper cannot be started.
    pub(crate) fn call<A, F>(&self, answers_max: usize, work: F) -> Result<Call<A>, CallFailure>
    where
        A: Send + 'static,
        F: FnOnce(&T, &Reply<'_, A>) + Send + 'static,
    {
        if let Some(reason) = self.unavailable_reason() {
            return Err(self.failure(reason, Miss::Refused));
        }
        // One slot more than the answers, for a panic's message.
        let (tx, answers) = bounded(answers_max.saturating_add(1));
        if self.inline {
            // Every answer fits in the channel: the job never waits on it.
            let phase = Arc::new(AtomicU8::new(RUNNING));
            Box::new(Work { tx, f: work }).run(&self.shared.target, &phase);
            phase.store(DONE, Ordering::Release);
            return Ok(Call { phase, answers });
        }
        let phase = Arc::new(AtomicU8::new(QUEUED));
        self.submit(Job {
            phase: phase.clone(),
            work: Box::new(Work { tx, f: work }),
        })
        .map_err(|reason| self.failure(reason, Miss::Refused))?;
        Ok(Call { phase, answers })
    }

    /// Takes the next answer of `call`, waiting until `deadline` at most.
    /// `what` names the call in the reasons ("read of page 3"); it is only
    /// called when a reason is written.
    ///
    /// # Errors
    /// `TimedOut` when the deadline passed first (the job is withdrawn or
    /// abandoned and the object cools off); `Panicked` when the call panicked
    /// (the object cools off); `Refused` when the job ended without this
    /// answer. After any of these the call gives no more answers.
    pub(crate) fn wait<A>(
        &self,
        call: &mut Call<A>,
        deadline: Deadline,
        what: &dyn Fn() -> String,
    ) -> Result<A, CallFailure> {
        let got = poll_briefly(CALLER_SPIN, Some(deadline.at), || {
            match call.answers.try_recv() {
                Ok(a) => Some(Ok(a)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(Err(RecvTimeoutError::Disconnected)),
            }
        })
        .unwrap_or_else(|| call.answers.recv_deadline(deadline.at));
        match got {
            Ok(answer) => self.answer(answer, what),
            Err(RecvTimeoutError::Timeout) => self.give_up(call, deadline, what),
            Err(RecvTimeoutError::Disconnected) => Err(self.ended(what)),
        }
    }

    /// The deadline passed while waiting for an answer of `call`.
    fn give_up<A>(
        &self,
        call: &mut Call<A>,
        deadline: Deadline,
        what: &dyn Fn() -> String,
    ) -> Result<A, CallFailure> {
        let phase = &call.phase;
        let gave_up = phase
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .or_else(|_| {
                phase.compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            });
        match gave_up {
            // Withdrawn or abandoned; an abandoned call keeps the object
            // hung (see `Shared::current`) until it returns.
            Ok(was) => {
                if was == QUEUED {
                    self.take_over_orphan();
                }
                self.cool_off();
                Err(self.failure(
                    format!(
                        "it did not answer the {} within the deadline of {:?}",
                        what(),
                        deadline.timeout
                    ),
                    Miss::TimedOut,
                ))
            }
            // The job finished just as the deadline passed: the answer is there.
            Err(_) => match call.answers.try_recv() {
                Ok(answer) => self.answer(answer, what),
                Err(_) => Err(self.ended(what)),
            },
        }
    }

    /// A job withdrawn at its deadline waited behind the job the helper
    /// runs. If nobody waits for that one (its caller dropped its call while
    /// a call of it ran), it is the call that hangs: it is marked abandoned,
    /// so the object is not called again until it returns.
    fn take_over_orphan(&self) {
        if let Some(phase) = self.shared.current.lock().as_ref() {
            let _ =
                phase.compare_exchange(CANCELLED, ABANDONED, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn answer<A>(&self, answer: Answer<A>, what: &dyn Fn() -> String) -> Result<A, CallFailure> {
        match answer {
            Answer::Value(a) => Ok(a),
            Answer::Panicked(message) => {
                self.cool_off();
                Err(self.failure(
                    format!("its {} panicked: {message}", what()),
                    Miss::Panicked,
                ))
            }
        }
    }

    fn ended(&self, what: &dyn Fn() -> String) -> CallFailure {
        self.failure(
            format!("its helper ended without answering the {}", what()),
            Miss::Refused,
        )
    }

    fn cool_off(&self) {
        let l = &self.limits;
        let cooloff_ns = u64::try_from(l.cooloff.as_nanos()).unwrap_or(u64::MAX);
        self.cool_until_ns.fetch_max(
            l.clock.now_ns().saturating_add(cooloff_ns),
            Ordering::AcqRel,
        );
    }

    /// The error saying the object cannot answer now, for `reason`.
    pub(crate) fn failure(&self, reason: String, miss: Miss) -> CallFailure {
        let error = match &self.who {
            Target::Replica(replica) => Error::ReplicaUnavailable {
                replica: replica.clone(),
                reason,
            },
            Target::Fallback(name) => Error::Host {
                op: "a fallback read",
                retryable: true,
                message: format!("fallback {name} is unavailable: {reason}"),
            },
        };
        CallFailure { error, miss }
    }

    /// Queues a job for the helper thread, starting the thread first if it
    /// is not running.
    fn submit(&self, job: Job<T>) -> std::result::Result<(), String> {
        let mut jobs = self.jobs.lock();
        // The helper never ends while the queue is open, so a closed queue
        // only means it was never started.
        let job = match jobs.as_ref() {
            Some(tx) => match tx.try_send(job) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(_)) => {
                    return Err(format!(
                        "{JOBS_QUEUED_MAX} calls into it are already waiting; try again later"
                    ))
                }
                Err(TrySendError::Disconnected(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = bounded(JOBS_QUEUED_MAX);
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name(self.thread_name.into())
            .spawn(move || serve(&shared, &rx))
            .map_err(|e| format!("its helper thread could not be started: {e}"))?;
        tx.try_send(job)
            .map_err(|_| "its new helper refused the call".to_owned())?;
        *jobs = Some(tx);
        Ok(())
    }

    /// Whether a call into the object is hung (tests wait for it to return).
    #[cfg(test)]
    pub(crate) fn hung(&self) -> bool {
        self.shared.hung()
    }

    /// The helper's shared state, to watch the helper end (tests).
    #[cfg(test)]
    fn shared_weak(&self) -> std::sync::Weak<Shared<T>> {
        Arc::downgrade(&self.shared)
    }
}

/// The helper thread: runs queued jobs one at a time until the queue closes.
fn serve<T: ?Sized>(shared: &Shared<T>, jobs: &Receiver<Job<T>>) {
    loop {
        let next = poll_briefly(HELPER_SPIN, None, || match jobs.try_recv() {
            Ok(job) => Some(Some(job)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(None),
        })
        .unwrap_or_else(|| jobs.recv().ok());
        let Some(job) = next else { return };
        if job
            .phase
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue; // withdrawn by its caller
        }
        *shared.current.lock() = Some(job.phase.clone());
        job.work.run(&shared.target, &job.phase);
        // Abandoned at a deadline or not, the call has returned: the object
        // may be called again (once its cool-off ends).
        let _ = job
            .phase
            .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire);
        *shared.current.lock() = None;
    }
}

/// Calls `poll` until it gives something, `budget` has passed, or
/// `deadline` has come: spins a little first, then yields the core between
/// polls. `None` when it gave nothing in time (the caller parks then).
fn poll_briefly<R>(
    budget: Duration,
    deadline: Option<Instant>,
    mut poll: impl FnMut() -> Option<R>,
) -> Option<R> {
    const SPINS: u32 = 64;
    let started = Instant::now();
    let mut polls = 0u32;
    loop {
        if let Some(r) = poll() {
            return Some(r);
        }
        polls = polls.saturating_add(1);
        if polls <= SPINS {
            std::hint::spin_loop();
            continue;
        }
        let now = Instant::now();
        if now.duration_since(started) >= budget || deadline.is_some_and(|d| now >= d) {
            return None;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests;
