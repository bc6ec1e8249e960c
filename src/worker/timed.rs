//! Calls into host code — a probe, a replica, a fallback source, a store's
//! flush — on a helper thread with a deadline, so that a host call that
//! hangs is abandoned instead of waited for.
//!
//! A [`TimedCaller`] owns one helper thread (started on its first call,
//! named by its owner: `selfheal-probe`, `selfheal-replica-read`, …) that
//! runs jobs one at a time from a bounded queue. A job is one call, or a run
//! of calls answered one by one through its [`Reply`] (the page reads of a
//! batch: the helper reads ahead and sends each answer as it comes). The
//! caller takes each answer with [`Call::wait_until`], waiting at most until
//! its deadline.
//!
//! # Contract
//!
//! - A job whose answer misses the deadline is *abandoned* while a call of
//!   it runs: its answers are discarded and the caller is *hung*
//!   ([`TimedCaller::is_busy`]) until that call returns. While it is hung,
//!   no other job is started ([`CallError::Busy`]), so at most one abandoned
//!   call per caller is ever running: a hung resource never accumulates
//!   threads.
//! - A job queued behind another that misses its own deadline is withdrawn
//!   before it starts (the helper skips it). If nobody waits for the job it
//!   queued behind (its caller dropped it while a call of it ran), that job
//!   is marked abandoned then: the caller is hung until it returns.
//! - A call that panics is caught on the helper thread (which lives on) and
//!   answers [`CallError::Panicked`]; the rest of its job is not run.
//! - Dropping a [`Call`] cancels the parts of its job not yet started.
//! - The queue holds at most the caller's `queue_max` jobs; beyond that a
//!   call is refused at once ([`CallError::Full`]). An
//!   [exclusive](TimedCaller::exclusive) caller takes one job at a time: a
//!   call while another has not given its last answer is refused
//!   ([`CallError::Busy`]), so a pool of them spreads calls over threads.
//! - Dropping the caller never waits for a hung call: the helper ends when
//!   its current call returns and it finds the queue closed.
//! - Deadlines are real time: they bound how long a thread waits, not what
//!   is due (that is the component's clock's business).
//!
//! # The hand-over
//!
//! A call costs two hand-overs between threads (the job to the helper, the
//! answer back). Parking a thread and waking it costs several microseconds
//! each, more than reading a page from memory, so both sides poll briefly
//! before they park: the caller for up to [`CALLER_SPIN`] after it queued a
//! job, the helper for up to [`HELPER_SPIN`] after it finished one. Polling
//! spins a little and then yields the core between polls, so on a busy
//! machine it gives way to threads with work. Neither bound changes what is
//! answered or when a deadline passes; they trade a little CPU for latency.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use parking_lot::Mutex;

use super::panic_message;

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
/// Its caller gave up while a call of it ran: the caller is hung until that
/// call returns.
const ABANDONED: u8 = 4;
/// Its caller no longer wants the rest: the helper stops after the call it
/// is in (not a hang).
const CANCELLED: u8 = 5;

/// Why a [`TimedCaller`] call gave no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The answer did not come within the deadline; a call still running is
    /// abandoned (its result discarded), a job still queued is withdrawn.
    TimedOut,
    /// An earlier call is still running past its deadline; nothing was started.
    Busy,
    /// The queue already holds the caller's `queue_max` jobs; nothing was
    /// started.
    Full,
    /// The job ended without this answer.
    Ended,
    /// The call panicked (the message).
    Panicked(String),
    /// The helper thread could not be started.
    Spawn(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::TimedOut => f.write_str("did not answer within its deadline"),
            CallError::Busy => f.write_str("an earlier call is still running past its deadline"),
            CallError::Full => f.write_str("too many calls are already waiting"),
            CallError::Ended => f.write_str("ended without answering"),
            CallError::Panicked(m) => write!(f, "panicked: {m}"),
            CallError::Spawn(m) => write!(f, "its helper thread could not be started: {m}"),
        }
    }
}

/// What the helper sends back for one job.
enum Answer<A> {
    Value(A),
    Panicked(String),
}

/// Counts a job as in flight until its last answer or its end, whichever
/// comes first (so that the caller that got the last answer may call again
/// at once).
struct Account {
    released: AtomicBool,
    in_flight: Arc<AtomicUsize>,
    answers_left: AtomicUsize,
}

impl Account {
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What a job's work uses to answer.
pub(crate) struct Reply<'a, A> {
    phase: &'a AtomicU8,
    tx: &'a Sender<Answer<A>>,
    account: Option<&'a Account>,
}

impl<A> Reply<'_, A> {
    /// Whether the caller still wants answers: check before each call into
    /// host code.
    pub(crate) fn wanted(&self) -> bool {
        self.phase.load(Ordering::Acquire) == RUNNING
    }

    /// Sends one answer; `false` when the caller no longer wants answers.
    pub(crate) fn send(&self, answer: A) -> bool {
        if !self.wanted() {
            return false;
        }
        if let Some(a) = self.account {
            if a.answers_left.fetch_sub(1, Ordering::AcqRel) <= 1 {
                // The last answer: no longer in flight before it is seen.
                a.release();
            }
        }
        // The channel holds every answer a job may send: this never blocks.
        self.tx.try_send(Answer::Value(answer)).is_ok()
    }
}

/// A job's work, with the channel it answers on.
trait Run: Send {
    fn run(self: Box<Self>, phase: &AtomicU8, account: Option<&Account>);
}

struct Work<A, F> {
    tx: Sender<Answer<A>>,
    f: F,
}

impl<A, F> Run for Work<A, F>
where
    A: Send,
    F: FnOnce(&Reply<'_, A>) + Send,
{
    fn run(self: Box<Self>, phase: &AtomicU8, account: Option<&Account>) {
        let Work { tx, f } = *self;
        let reply = Reply {
            phase,
            tx: &tx,
            account,
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(&reply))) {
            // The channel keeps a slot for this beyond the job's answers.
            let _ = tx.try_send(Answer::Panicked(panic_message(payload.as_ref())));
        }
    }
}

struct Task {
    phase: Arc<AtomicU8>,
    /// Taken when it runs.
    work: Option<Box<dyn Run>>,
    account: Account,
}

impl Drop for Task {
    /// Run, skipped or never taken (the helper ended): no longer in flight.
    fn drop(&mut self) {
        self.account.release();
    }
}

/// What the helper thread shares with its caller.
#[derive(Default)]
pub(crate) struct Shared {
    /// The phase of the job the helper runs now. The caller is hung while it
    /// is `ABANDONED`: only a waiter moves a phase there, and only the helper
    /// clears this when the job's last call returned, so no flag can be left
    /// set by a race between the two.
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

/// The answers of one job, taken one by one with
/// [`wait_until`](Self::wait_until). Dropping it cancels the parts of the
/// job not yet started.
pub(crate) struct Call<A> {
    phase: Arc<AtomicU8>,
    answers: Receiver<Answer<A>>,
    /// The helper's state (`None` for a job run on the caller's thread).
    shared: Option<Arc<Shared>>,
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

impl<A: Send + 'static> Call<A> {
    /// Runs `work` on the caller's thread now, catching a panic, and keeps
    /// its answers (at most `answers_max`) for
    /// [`wait_until`](Self::wait_until), which then never waits: for host
    /// code that promised never to hang.
    pub(crate) fn run_here(
        answers_max: usize,
        work: impl FnOnce(&Reply<'_, A>) + Send + 'static,
    ) -> Call<A> {
        // One slot more than the answers, for a panic's message; every
        // answer fits, so the job never waits on the channel.
        let (tx, answers) = bounded(answers_max.saturating_add(1));
        let phase = Arc::new(AtomicU8::new(RUNNING));
        Box::new(Work { tx, f: work }).run(&phase, None);
        phase.store(DONE, Ordering::Release);
        Call {
            phase,
            answers,
            shared: None,
        }
    }
}

impl<A> Call<A> {
    /// Takes the next answer, waiting until `deadline` at most.
    ///
    /// # Errors
    /// [`CallError::TimedOut`] when the deadline passed first (the job is
    /// withdrawn, or abandoned and the caller hung until its call returns);
    /// [`CallError::Panicked`]; [`CallError::Ended`] when the job ended
    /// without this answer. After any of these the call gives no more
    /// answers.
    pub(crate) fn wait_until(&mut self, deadline: Instant) -> Result<A, CallError> {
        let got = poll_briefly(CALLER_SPIN, Some(deadline), || {
            match self.answers.try_recv() {
                Ok(a) => Some(Ok(a)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(Err(RecvTimeoutError::Disconnected)),
            }
        })
        .unwrap_or_else(|| self.answers.recv_deadline(deadline));
        match got {
            Ok(answer) => answer.into_result(),
            Err(RecvTimeoutError::Timeout) => self.give_up(),
            Err(RecvTimeoutError::Disconnected) => Err(CallError::Ended),
        }
    }

    /// Takes the next answer if it comes by `at`; `None` when it has not
    /// (the call goes on: wait again, or [`give_up`](Self::give_up)). For a
    /// caller whose deadline is on a [`Clock`](crate::Clock) rather than
    /// in real time, waiting in short slices.
    ///
    /// # Errors
    /// As [`wait_until`](Self::wait_until), except that `at` passing is
    /// `None`, not a time-out.
    pub(crate) fn answer_by(&mut self, at: Instant) -> Option<Result<A, CallError>> {
        match self.answers.recv_deadline(at) {
            Ok(answer) => Some(answer.into_result()),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Err(CallError::Ended)),
        }
    }

    /// The deadline passed while waiting for an answer: the job is
    /// withdrawn or abandoned (an answer that raced in is still taken).
    pub(crate) fn give_up(&mut self) -> Result<A, CallError> {
        let phase = &self.phase;
        let gave_up = phase
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .or_else(|_| {
                phase.compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            });
        match gave_up {
            // Withdrawn or abandoned; an abandoned call keeps the caller
            // hung (see `Shared::current`) until it returns.
            Ok(was) => {
                if was == QUEUED {
                    self.take_over_orphan();
                }
                Err(CallError::TimedOut)
            }
            // The job finished just as the deadline passed: the answer is there.
            Err(_) => match self.answers.try_recv() {
                Ok(answer) => answer.into_result(),
                Err(_) => Err(CallError::Ended),
            },
        }
    }

    /// A job withdrawn at its deadline waited behind the job the helper
    /// runs. If nobody waits for that one (its caller dropped its call while
    /// a call of it ran), it is the call that hangs: it is marked abandoned,
    /// so nothing else starts until it returns.
    fn take_over_orphan(&self) {
        if let Some(shared) = &self.shared {
            if let Some(phase) = shared.current.lock().as_ref() {
                let _ = phase.compare_exchange(
                    CANCELLED,
                    ABANDONED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
        }
    }
}

impl<A> Answer<A> {
    fn into_result(self) -> Result<A, CallError> {
        match self {
            Answer::Value(a) => Ok(a),
            Answer::Panicked(m) => Err(CallError::Panicked(m)),
        }
    }
}

/// Runs calls into host code on a helper thread with a deadline; see the
/// module docs.
pub(crate) struct TimedCaller {
    name: String,
    queue_max: usize,
    exclusive: bool,
    /// Jobs that have not given their last answer nor ended.
    in_flight: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    jobs: Mutex<Option<Sender<Task>>>,
    /// The newest helper thread, joined at drop when no call runs.
    helper: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for TimedCaller {
    /// Closes the queue, so the helper thread ends; when no call runs (none
    /// hangs past its deadline), waits for it to end — its thread-locals
    /// freed — so that a dropped caller leaves nothing behind that a leak
    /// checker could see. A helper still running an abandoned call is left
    /// to end on its own when that call returns.
    fn drop(&mut self) {
        drop(self.jobs.get_mut().take());
        let Some(helper) = self.helper.get_mut().take() else {
            return;
        };
        if self.is_idle() && helper.thread().id() != std::thread::current().id() {
            let _ = helper.join();
        }
    }
}

impl std::fmt::Debug for TimedCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedCaller")
            .field("thread", &self.name)
            .field("busy", &self.is_busy())
            .finish()
    }
}

impl TimedCaller {
    /// A caller whose helper thread is named `name` (`selfheal-…`) and whose
    /// queue holds one job.
    pub(crate) fn new(name: impl Into<String>) -> Self {
        TimedCaller {
            name: name.into(),
            queue_max: 1,
            exclusive: false,
            in_flight: Arc::default(),
            shared: Arc::default(),
            jobs: Mutex::new(None),
            helper: Mutex::new(None),
        }
    }

    /// How many jobs may wait in the queue at once (at least one).
    #[must_use]
    pub(crate) fn queue_max(mut self, jobs: usize) -> Self {
        self.queue_max = jobs.max(1);
        self
    }

    /// Takes one job at a time: a call while another has not given its last
    /// answer (nor ended) is refused with [`CallError::Busy`] instead of
    /// queued. For a pool of callers that spreads calls over threads.
    #[must_use]
    pub(crate) fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }

    /// Whether a call is running past its deadline (abandoned, not yet
    /// returned): nothing else starts until it returns.
    pub(crate) fn is_busy(&self) -> bool {
        self.shared.hung()
    }

    /// Whether no job is queued or running (every one gave its last answer
    /// or ended).
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Whether the helper thread was ever started.
    #[cfg(test)]
    pub(crate) fn is_started(&self) -> bool {
        self.jobs.lock().is_some()
    }

    /// The helper's shared state, to watch the helper end (tests).
    #[cfg(test)]
    pub(crate) fn helper_weak(&self) -> std::sync::Weak<Shared> {
        Arc::downgrade(&self.shared)
    }

    /// Starts `f` on the helper thread; [`Call::wait_until`] collects its
    /// answer. Starting several callers' calls before waiting for any runs
    /// them in parallel under one deadline.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub(crate) fn start<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Call<T>, CallError> {
        self.call(1, move |reply| {
            reply.send(f());
        })
    }

    /// Queues `work` as one job that sends at most `answers_max` answers,
    /// and returns at once; the answers are taken with [`Call::wait_until`].
    ///
    /// # Errors
    /// [`CallError::Busy`] while an abandoned call hangs,
    /// [`CallError::Full`] when the queue is full, [`CallError::Spawn`] when
    /// the helper cannot be started.
    pub(crate) fn call<A, F>(&self, answers_max: usize, work: F) -> Result<Call<A>, CallError>
    where
        A: Send + 'static,
        F: FnOnce(&Reply<'_, A>) + Send + 'static,
    {
        if self.is_busy() {
            return Err(CallError::Busy);
        }
        let was_in_flight = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let account = Account {
            released: AtomicBool::new(false),
            in_flight: self.in_flight.clone(),
            answers_left: AtomicUsize::new(answers_max),
        };
        if self.exclusive && was_in_flight > 0 {
            account.release();
            return Err(CallError::Busy);
        }
        // One slot more than the answers, for a panic's message.
        let (tx, answers) = bounded(answers_max.saturating_add(1));
        let phase = Arc::new(AtomicU8::new(QUEUED));
        // A task refused by the queue is dropped, releasing its account.
        self.submit(Task {
            phase: phase.clone(),
            work: Some(Box::new(Work { tx, f: work })),
            account,
        })?;
        Ok(Call {
            phase,
            answers,
            shared: Some(self.shared.clone()),
        })
    }

    /// Queues a task for the helper thread, starting the thread first if it
    /// is not running.
    fn submit(&self, task: Task) -> Result<(), CallError> {
        let mut jobs = self.jobs.lock();
        // The helper never ends while the queue is open, so a closed queue
        // only means it was never started.
        let task = match jobs.as_ref() {
            Some(tx) => match tx.try_send(task) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(_)) => return Err(CallError::Full),
                Err(TrySendError::Disconnected(task)) => task,
            },
            None => task,
        };
        let (tx, rx) = bounded(self.queue_max);
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || serve(&shared, &rx))
            .map_err(|e| CallError::Spawn(e.to_string()))?;
        // A helper replaced (its predecessor's queue closed while a call
        // hung) is left detached; the newest is joined at drop.
        *self.helper.lock() = Some(handle);
        tx.try_send(task)
            .map_err(|_| CallError::Spawn("the new helper refused the call".into()))?;
        *jobs = Some(tx);
        Ok(())
    }
}

/// The helper thread: runs queued jobs one at a time until the queue closes.
fn serve(shared: &Shared, jobs: &Receiver<Task>) {
    loop {
        let next = poll_briefly(HELPER_SPIN, None, || match jobs.try_recv() {
            Ok(job) => Some(Some(job)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(None),
        })
        .unwrap_or_else(|| jobs.recv().ok());
        let Some(mut job) = next else { return };
        if job
            .phase
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue; // withdrawn by its caller
        }
        *shared.current.lock() = Some(job.phase.clone());
        if let Some(work) = job.work.take() {
            work.run(&job.phase, Some(&job.account));
        }
        job.account.release();
        // Abandoned at a deadline or not, the call has returned: the caller
        // may call again.
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
mod tests {
    use super::*;

    fn call<T: Send + 'static>(
        c: &TimedCaller,
        deadline: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::result::Result<T, CallError> {
        c.start(f)?.wait_until(Instant::now() + deadline)
    }

    #[test]
    fn a_dropped_idle_caller_has_ended_its_helper_and_a_hung_one_does_not_wait() {
        let c = TimedCaller::new("selfheal-test-call");
        assert_eq!(call(&c, Duration::from_secs(5), || 7), Ok(7));
        let helper = c.helper_weak();
        drop(c);
        // Joined at drop: the helper's state is gone at once, not later.
        assert!(helper.upgrade().is_none(), "the idle helper was joined");

        let c = TimedCaller::new("selfheal-test-call");
        let (release, gate) = bounded::<()>(0);
        let r = call(&c, Duration::from_millis(20), move || {
            let _ = gate.recv();
            1
        });
        assert_eq!(r, Err(CallError::TimedOut));
        let helper = c.helper_weak();
        let started = Instant::now();
        drop(c);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a drop never waits for a hung call"
        );
        assert!(
            helper.upgrade().is_some(),
            "the hung helper is still running"
        );
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while helper.upgrade().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(helper.upgrade().is_none(), "it ends once its call returns");
    }

    #[test]
    fn timed_caller_abandons_a_hung_call_and_refuses_while_it_hangs() {
        let c = &TimedCaller::new("selfheal-test-call");
        assert_eq!(call(c, Duration::from_secs(5), || 7), Ok(7));
        let (release, gate) = bounded::<()>(0);
        let started = Instant::now();
        let r = call(c, Duration::from_millis(30), move || {
            let _ = gate.recv();
            1
        });
        assert_eq!(r, Err(CallError::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(c.is_busy());
        assert_eq!(call(c, Duration::from_secs(5), || 2), Err(CallError::Busy));
        release.send(()).unwrap();
        while c.is_busy() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(call(c, Duration::from_secs(5), || 3), Ok(3));
        match call(c, Duration::from_secs(5), || -> u8 { panic!("probe bug") }) {
            Err(CallError::Panicked(m)) => assert!(m.contains("probe bug")),
            other => panic!("{other:?}"),
        }
        assert_eq!(call(c, Duration::from_secs(5), || 4), Ok(4));
    }

    #[test]
    fn an_exclusive_caller_refuses_while_a_call_runs_and_takes_the_next_at_once() {
        let c = &TimedCaller::new("selfheal-test-call").exclusive();
        let (release, gate) = bounded::<()>(0);
        let mut running = c
            .start(move || {
                let _ = gate.recv();
                1
            })
            .unwrap();
        // Running, not hung: an exclusive caller still refuses a second call.
        assert!(!c.is_busy());
        assert_eq!(call(c, Duration::from_secs(5), || 2), Err(CallError::Busy));
        release.send(()).unwrap();
        assert_eq!(
            running.wait_until(Instant::now() + Duration::from_secs(5)),
            Ok(1)
        );
        // The answer was its last: the next call is taken at once, every time.
        for i in 0..100 {
            assert_eq!(call(c, Duration::from_secs(5), move || i), Ok(i));
        }
        // A caller that is not exclusive queues the second call instead.
        let q = &TimedCaller::new("selfheal-test-call").queue_max(2);
        let (release, gate) = bounded::<()>(0);
        let mut first = q
            .start(move || {
                let _ = gate.recv();
                1
            })
            .unwrap();
        let mut second = q.start(|| 2).unwrap();
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(first.wait_until(deadline), Ok(1));
        assert_eq!(second.wait_until(deadline), Ok(2));
    }
}
