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
//! # Machinery
//!
//! The helper thread, its bounded queue, abandonment and the hand-over are
//! [`TimedCaller`]'s (shared with the health monitor's probes); the courier
//! adds what a host object needs on top: the cool-off on the clock, calls
//! refused while it lasts, inline calls, and errors that name the object.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::error::Error;
use crate::types::ReplicaId;
use crate::worker::{CallError, TimedCaller};

pub(crate) use crate::worker::{Call, Reply};

/// Jobs of one host object that may wait in its helper's queue at once
/// (calls beyond that answer at once that the object is busy).
pub(crate) const JOBS_QUEUED_MAX: usize = 16;

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

/// Calls into one host object: its timed caller and the cool-off.
pub(crate) struct Courier<T: ?Sized + Send + Sync + 'static> {
    who: Target,
    limits: Limits,
    target: Arc<T>,
    caller: TimedCaller,
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
            limits,
            target,
            caller: TimedCaller::new(thread_name).queue_max(JOBS_QUEUED_MAX),
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

    /// Whether its jobs run on the caller's thread.
    pub(crate) fn is_inline(&self) -> bool {
        self.inline
    }

    /// Its limits.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Why the object must not be called now, if it must not: a call of it
    /// is hung, or it cools off after a call that timed out or panicked.
    pub(crate) fn unavailable_reason(&self) -> Option<String> {
        let now_ns = self.limits.clock.now_ns();
        if self.caller.is_busy() {
            return Some(HUNG.into());
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
        let target = self.target.clone();
        let work = move |reply: &Reply<'_, A>| work(&target, reply);
        if self.inline {
            return Ok(Call::run_here(answers_max, work));
        }
        self.caller.call(answers_max, work).map_err(|e| {
            let reason = match e {
                CallError::Busy => HUNG.to_owned(),
                CallError::Full => {
                    format!("{JOBS_QUEUED_MAX} calls into it are already waiting; try again later")
                }
                other => format!("its helper {other}"),
            };
            self.failure(reason, Miss::Refused)
        })
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
        match call.wait_until(deadline.at) {
            Ok(a) => Ok(a),
            Err(CallError::TimedOut) => {
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
            Err(CallError::Panicked(message)) => {
                self.cool_off();
                Err(self.failure(
                    format!("its {} panicked: {message}", what()),
                    Miss::Panicked,
                ))
            }
            Err(_) => Err(self.failure(
                format!("its helper ended without answering the {}", what()),
                Miss::Refused,
            )),
        }
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

    /// Whether a call into the object is hung (tests wait for it to return).
    #[cfg(test)]
    pub(crate) fn hung(&self) -> bool {
        self.caller.is_busy()
    }

    /// The helper's shared state, to watch the helper end (tests).
    #[cfg(test)]
    fn shared_weak(&self) -> std::sync::Weak<impl Sized> {
        self.caller.helper_weak()
    }
}

/// Why a hung object is refused.
const HUNG: &str = "a call into it missed its deadline and has not returned yet; it is not \
                    called again until that call returns";

#[cfg(test)]
mod tests;
