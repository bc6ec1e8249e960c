//! The one background-thread lifecycle every component uses: a named thread
//! that runs a [`Job`], commands with replies, a bounded stop, and a panic
//! that marks the component failed instead of taking the host down.
//!
//! # Contract
//!
//! - The thread (`selfheal-…`) selects over a bounded command channel and
//!   the job's next deadline ([`Job::next_tick`]); it does nothing else.
//!   Deciding is the job's business, on the clock it was given; the worker
//!   only waits in real time ([`wake_for`] turns a due time on the clock
//!   into a bounded real wait).
//! - [`Worker::request`] sends a command carrying a reply channel and waits
//!   for the reply **or** for the thread to end: a command queued just as
//!   the thread ended is never answered (a bounded crossbeam queue keeps it,
//!   and its reply sender, alive while any sender exists), so every wait also
//!   watches a channel that disconnects when the thread ends, however it
//!   ends. A request from the worker's own thread (inside a host callback)
//!   is refused with a typed error instead of waiting for itself.
//! - [`Worker::stop`] asks the thread to stop (running [`Job::finish`] when
//!   asked to), waits at most the given time, and joins. A thread that does
//!   not end in time (a host callback that hangs) is left detached and
//!   reported; a stop never waits forever.
//! - A panic in the job (a host callback, a probe) is caught on the thread:
//!   the worker records the reason, calls the job's [`Job::died`] hook (which
//!   reports it as a [`Failure`](crate::Failure)), and every later call
//!   returns [`Error::Stopped`] with the reason. The library never aborts its
//!   host.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, Sender};
use parking_lot::Mutex;

use crate::clock::Clock;
use crate::error::{Error, Result};

mod timed;

pub(crate) use timed::{Call, CallError, Reply, TimedCaller};

/// Commands a worker's queue holds at most; a sender waits beyond that.
const COMMAND_CAPACITY: usize = 16;

/// The longest a job waits in real time before it reads its clock again,
/// so that a simulated clock moved by a test is seen within this long.
pub(crate) const CLOCK_POLL_MAX: Duration = Duration::from_millis(100);

/// When a job whose next work is due at `due_ns` on `clock` should wake:
/// when the clock says it is due, read again at most every
/// [`CLOCK_POLL_MAX`] of real time. The clock decides what is due; this
/// only bounds the real wait ([`Job::next_tick`]).
pub(crate) fn wake_for(clock: &dyn Clock, due_ns: u64) -> Instant {
    let wait_ns = due_ns.saturating_sub(clock.now_ns());
    Instant::now() + Duration::from_nanos(wait_ns).min(CLOCK_POLL_MAX)
}

/// What the thread does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep running.
    Continue,
    /// End the thread (without [`Job::finish`]).
    Exit,
}

/// The body of a worker thread: a state machine fed with ticks and commands.
pub(crate) trait Job: Send + 'static {
    /// The job's own commands (each usually carries a reply sender).
    type Command: Send + 'static;

    /// When the next [`tick`](Self::tick) is due; `None` waits for commands
    /// only. Asked before every wait.
    fn next_tick(&mut self) -> Option<Instant>;

    /// The deadline passed.
    fn tick(&mut self) -> Flow;

    /// A command arrived.
    fn command(&mut self, command: Self::Command) -> Flow;

    /// The worker was asked to stop cleanly: flush, persist, record. Its
    /// result is what [`Worker::stop`] returns.
    ///
    /// # Errors
    /// Whatever the job's flush reports.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    /// The job panicked with `reason`; report it (the worker has already
    /// recorded it). Runs on the dying thread, itself guarded against panics.
    fn died(&mut self, reason: &str) {
        let _ = reason;
    }
}

/// How [`Worker::stop`] ends the thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Run [`Job::finish`] first and return its result.
    Finish,
    /// End without finishing (a drop that must not record a clean shutdown).
    Abandon,
}

enum Envelope<C> {
    Job(C),
    /// Finish, reply, and end.
    Stop(Sender<Result<()>>),
    /// End without finishing.
    Exit,
}

/// Queues commands for a [`Worker`] without waiting; see
/// [`Worker::notifier`].
pub(crate) struct Notifier<C: Send + 'static>(Sender<Envelope<C>>);

impl<C: Send + 'static> Notifier<C> {
    /// Queues `command` unless the queue is full or the thread has ended;
    /// returns whether it was queued. A job whose commands are wake-ups
    /// loses nothing when one is dropped: a queued one wakes it anyway.
    pub(crate) fn notify(&self, command: C) -> bool {
        self.0.try_send(Envelope::Job(command)).is_ok()
    }
}

/// The failed state shared between the handle and its thread.
#[derive(Debug, Default)]
struct State {
    failed: Mutex<Option<String>>,
}

/// The handle of a running [`Job`]. See the module docs.
pub(crate) struct Worker<C: Send + 'static> {
    component: &'static str,
    name: Cow<'static, str>,
    /// Taken by [`Worker::stop`]; behind a lock so that a component shared
    /// behind an `Arc` stops through `&self`.
    tx: Mutex<Option<Sender<Envelope<C>>>>,
    /// Disconnects when the thread ends, however it ends.
    ended: Receiver<()>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: std::thread::ThreadId,
    state: Arc<State>,
}

impl<C: Send + 'static> std::fmt::Debug for Worker<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("thread", &self.name)
            .field("running", &self.is_running())
            .field("failed", &self.failure())
            .finish()
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

impl<C: Send + 'static> Worker<C> {
    /// Starts `job` on a thread named `name`, on behalf of `component` (used
    /// in errors).
    ///
    /// # Errors
    /// [`Error::Io`] when the thread cannot be spawned.
    pub(crate) fn spawn<J: Job<Command = C>>(
        component: &'static str,
        name: impl Into<Cow<'static, str>>,
        job: J,
    ) -> Result<Self> {
        let name: Cow<'static, str> = name.into();
        let thread_name = name.clone();
        let (tx, rx) = bounded(COMMAND_CAPACITY);
        // Never sent on: the thread drops its end when it exits.
        let (alive, ended) = bounded::<()>(0);
        let state = Arc::new(State::default());
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name(name.clone().into_owned())
            .spawn(move || {
                let _alive = alive;
                run(job, &rx, &thread_state, &thread_name);
            })
            .map_err(|e| Error::io(format!("spawning the {name} thread"), e))?;
        Ok(Worker {
            component,
            name,
            tx: Mutex::new(Some(tx)),
            ended,
            thread_id: thread.thread().id(),
            thread: Mutex::new(Some(thread)),
            state,
        })
    }

    /// A handle that queues commands without waiting for a reply: for
    /// wake-ups from code that must never block (a notice after an fsync).
    /// `None` once the worker was stopped.
    pub(crate) fn notifier(&self) -> Option<Notifier<C>> {
        self.tx.lock().as_ref().map(|tx| Notifier(tx.clone()))
    }

    /// Commands waiting in the queue (a test waits for one to be queued).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.tx.lock().as_ref().map_or(0, Sender::len)
    }

    /// Why the thread died, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.state.failed.lock().clone()
    }

    /// Whether the thread is running (not stopped, not dead).
    pub(crate) fn is_running(&self) -> bool {
        self.tx.lock().is_some() && self.failure().is_none() && !self.has_ended()
    }

    fn has_ended(&self) -> bool {
        matches!(
            self.ended.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        )
    }

    /// Whether the caller is the worker's own thread.
    pub(crate) fn on_worker_thread(&self) -> bool {
        self.thread_id == std::thread::current().id()
    }

    /// The error for a worker that cannot take calls: its failure, or that
    /// it was stopped.
    pub(crate) fn stopped_error(&self) -> Error {
        Error::Stopped {
            component: self.component,
            reason: self
                .failure()
                .unwrap_or_else(|| format!("the {} thread is not running", self.name)),
        }
    }

    /// Checks that calls can be made: not stopped, not failed.
    ///
    /// # Errors
    /// [`Error::Stopped`].
    pub(crate) fn check_running(&self) -> Result<()> {
        if self.tx.lock().is_none() || self.failure().is_some() {
            return Err(self.stopped_error());
        }
        Ok(())
    }

    /// Sends a command built around a reply sender and waits for the reply.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the thread is stopped, died, or ended before
    /// replying; [`Error::InvalidArgument`] when called from the worker's own
    /// thread, where it would wait for itself.
    pub(crate) fn request<R>(&self, make: impl FnOnce(Sender<R>) -> C) -> Result<R> {
        self.check_running()?;
        if self.on_worker_thread() {
            return Err(Error::InvalidArgument {
                what: "call",
                reason: format!(
                    "made from the {} thread itself (inside a callback), where it would wait for itself; make it from another thread",
                    self.name
                ),
            });
        }
        let (reply, answer) = bounded(1);
        let tx = self.tx.lock().clone().ok_or_else(|| self.stopped_error())?;
        tx.send(Envelope::Job(make(reply)))
            .map_err(|_| self.stopped_error())?;
        select! {
            recv(answer) -> r => r.map_err(|_| {
                // The reply was dropped unanswered: the job is unwinding from
                // a panic. Let the thread record why before saying so.
                let _ = self.ended.recv_timeout(Duration::from_secs(1));
                self.stopped_error()
            }),
            recv(self.ended) -> _ => answer.try_recv().map_err(|_| self.stopped_error()),
        }
    }

    /// Stops the thread and joins it, waiting at most `timeout` for it to
    /// end. Calling it again does nothing and returns `Ok`.
    ///
    /// # Errors
    /// [`Job::finish`]'s error (with [`Stop::Finish`]); [`Error::Stopped`]
    /// with the reason when the thread had died, or when it did not end
    /// within `timeout` (it is then left running detached, and will exit
    /// when whatever it waits for returns). From the worker's own thread,
    /// [`Error::InvalidArgument`]: the thread ends after the current
    /// callback returns, without [`Job::finish`].
    pub(crate) fn stop(&self, how: Stop, timeout: Duration) -> Result<()> {
        let Some(tx) = self.tx.lock().take() else {
            return Ok(());
        };
        if self.on_worker_thread() {
            // Ends the loop once the callback returns (a notifier may keep
            // the channel open, so it is said, not left to disconnection).
            let _ = tx.try_send(Envelope::Exit);
            drop(tx);
            *self.thread.lock() = None;
            return Err(Error::InvalidArgument {
                what: "stop",
                reason: format!(
                    "called from the {} thread itself (inside a callback); it stops when the callback returns, without a clean finish",
                    self.name
                ),
            });
        }
        let deadline = Instant::now() + timeout;
        let mut finished = Ok(());
        if how == Stop::Finish {
            let (reply, answer) = bounded(1);
            if tx.send_deadline(Envelope::Stop(reply), deadline).is_ok() {
                select! {
                    recv(answer) -> r => finished = r.unwrap_or(Ok(())),
                    recv(self.ended) -> _ => finished = answer.try_recv().unwrap_or(Ok(())),
                    recv(crossbeam_channel::at(deadline)) -> _ => {}
                }
            }
        } else {
            // Said, not left to the channel's disconnection: a notifier
            // (which the job itself may hold) keeps the channel open.
            let _ = tx.send_deadline(Envelope::Exit, deadline);
        }
        // Without a sender the loop ends at its next wait.
        drop(tx);
        let ended = select! {
            recv(self.ended) -> _ => true,
            recv(crossbeam_channel::at(deadline)) -> _ => false,
        };
        let thread = self.thread.lock().take();
        if !ended {
            let reason = format!(
                "the {} thread did not stop within {timeout:?}; it was left running detached",
                self.name
            );
            tracing::error!(%reason, "a worker did not stop in time");
            return Err(Error::Stopped {
                component: self.component,
                reason,
            });
        }
        if let Some(t) = thread {
            // The thread has ended (its channel disconnected): join is immediate.
            if t.join().is_err() {
                self.state
                    .failed
                    .lock()
                    .get_or_insert_with(|| format!("the {} thread panicked", self.name));
            }
        }
        if let Some(reason) = self.failure() {
            return Err(Error::Stopped {
                component: self.component,
                reason,
            });
        }
        finished
    }
}

fn run<J: Job>(mut job: J, rx: &Receiver<Envelope<J::Command>>, state: &State, name: &str) {
    let body = catch_unwind(AssertUnwindSafe(|| loop {
        let wake = job
            .next_tick()
            .map_or_else(crossbeam_channel::never, crossbeam_channel::at);
        let flow = select! {
            recv(rx) -> msg => match msg {
                Ok(Envelope::Job(cmd)) => job.command(cmd),
                Ok(Envelope::Stop(reply)) => {
                    let _ = reply.send(job.finish());
                    Flow::Exit
                }
                Ok(Envelope::Exit) => Flow::Exit,
                Err(_) => Flow::Exit,
            },
            recv(wake) -> _ => job.tick(),
        };
        if flow == Flow::Exit {
            return;
        }
    }));
    if let Err(payload) = body {
        let reason = format!(
            "the {name} thread panicked: {}",
            panic_message(payload.as_ref())
        );
        tracing::error!(%reason, "a selfheal worker died");
        *state.failed.lock() = Some(reason.clone());
        if catch_unwind(AssertUnwindSafe(|| job.died(&reason))).is_err() {
            tracing::error!(thread = name, "reporting a worker's death panicked too");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    enum Cmd {
        Echo(u32, Sender<u32>),
        Panic,
        Hang(Duration),
    }

    struct Counter {
        ticks: Arc<AtomicU32>,
        every: Duration,
        next: Instant,
        deaths: Arc<AtomicU32>,
        finished: Arc<AtomicU32>,
    }

    impl Job for Counter {
        type Command = Cmd;
        fn next_tick(&mut self) -> Option<Instant> {
            Some(self.next)
        }
        fn tick(&mut self) -> Flow {
            self.ticks.fetch_add(1, Ordering::SeqCst);
            self.next = Instant::now() + self.every;
            Flow::Continue
        }
        fn command(&mut self, command: Cmd) -> Flow {
            match command {
                Cmd::Echo(v, reply) => {
                    let _ = reply.send(v + 1);
                }
                Cmd::Panic => panic!("job bug"),
                Cmd::Hang(d) => std::thread::sleep(d),
            }
            Flow::Continue
        }
        fn finish(&mut self) -> Result<()> {
            self.finished.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn died(&mut self, reason: &str) {
            assert!(reason.contains("job bug"));
            self.deaths.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A job that holds a notifier of its own worker (as the undo journal's
    /// mark job does, through the journal): the channel never disconnects.
    struct SelfNotified {
        /// Held, never read: it keeps the worker's channel open.
        _notifier: Arc<parking_lot::Mutex<Option<Notifier<()>>>>,
    }

    impl Job for SelfNotified {
        type Command = ();
        fn next_tick(&mut self) -> Option<Instant> {
            None
        }
        fn tick(&mut self) -> Flow {
            Flow::Continue
        }
        fn command(&mut self, (): ()) -> Flow {
            Flow::Continue
        }
    }

    #[test]
    fn a_stop_without_finish_ends_a_job_that_holds_its_own_notifier() {
        for how in [Stop::Abandon, Stop::Finish] {
            let slot = Arc::new(parking_lot::Mutex::new(None));
            let w = Worker::spawn(
                "test",
                "selfheal-test",
                SelfNotified {
                    _notifier: Arc::clone(&slot),
                },
            )
            .unwrap();
            *slot.lock() = w.notifier();
            assert!(slot.lock().as_ref().unwrap().notify(()));
            let started = Instant::now();
            w.stop(how, Duration::from_secs(5)).unwrap();
            assert!(started.elapsed() < Duration::from_secs(4), "{how:?}");
            assert!(!w.is_running());
        }
    }

    fn counter(every: Duration) -> (Worker<Cmd>, Arc<AtomicU32>, Arc<AtomicU32>, Arc<AtomicU32>) {
        let (ticks, deaths, finished) = (Arc::default(), Arc::default(), Arc::default());
        let job = Counter {
            ticks: Arc::clone(&ticks),
            every,
            next: Instant::now(),
            deaths: Arc::clone(&deaths),
            finished: Arc::clone(&finished),
        };
        let w = Worker::spawn("test", "selfheal-test", job).unwrap();
        (w, ticks, deaths, finished)
    }

    #[test]
    fn ticks_answers_and_finishes_on_stop() {
        let (w, ticks, _, finished) = counter(Duration::from_millis(1));
        assert_eq!(w.request(|r| Cmd::Echo(41, r)).unwrap(), 42);
        while ticks.load(Ordering::SeqCst) < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        w.stop(Stop::Finish, Duration::from_secs(5)).unwrap();
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        assert!(!w.is_running());
        assert!(matches!(
            w.request(|r| Cmd::Echo(1, r)),
            Err(Error::Stopped { .. })
        ));
        w.stop(Stop::Finish, Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn abandon_skips_finish() {
        let (w, _, _, finished) = counter(Duration::from_secs(3600));
        w.stop(Stop::Abandon, Duration::from_secs(5)).unwrap();
        assert_eq!(finished.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_panic_marks_the_worker_failed_and_is_reported_once() {
        let (w, _, deaths, _) = counter(Duration::from_secs(3600));
        // The panic is caught on the thread; a request queued behind it is
        // answered with Stopped, never left waiting.
        w.tx.lock()
            .as_ref()
            .unwrap()
            .send(Envelope::Job(Cmd::Panic))
            .unwrap();
        let e = w.request(|r| Cmd::Echo(1, r)).unwrap_err();
        assert!(matches!(e, Error::Stopped { .. }), "{e}");
        assert!(w.failure().unwrap().contains("job bug"));
        let e = w.stop(Stop::Finish, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("job bug"), "{e}");
        assert_eq!(deaths.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn stop_is_bounded_when_the_job_hangs() {
        let (w, _, _, _) = counter(Duration::from_secs(3600));
        w.tx.lock()
            .as_ref()
            .unwrap()
            .send(Envelope::Job(Cmd::Hang(Duration::from_millis(500))))
            .unwrap();
        let started = Instant::now();
        let e = w.stop(Stop::Finish, Duration::from_millis(50)).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        assert!(e.to_string().contains("did not stop"), "{e}");
    }

    #[test]
    fn panic_message_reads_both_payload_kinds() {
        let p = catch_unwind(|| panic!("a {}", 1)).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "a 1");
        let p = catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "static");
    }
}
