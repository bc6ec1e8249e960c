//! The incident queue: one open incident per target, served most urgent
//! first, with aging, under a bound.
//!
//! A failure whose target has an open incident joins it (its priority
//! raises the incident's when more urgent); otherwise it opens one, unless
//! the queue already holds `capacity` open incidents: then it is counted as
//! an overflow. A page's failure then waits in the page backlog (at most
//! `backlog_capacity` failures, given by [`IncidentQueue::with_backlog`])
//! and opens its incident as soon as there is room
//! ([`IncidentQueue::refill`]), with no second read of the page; beyond the
//! backlog an error-only rescan is marked due (the page stays fenced in the
//! detector's suspect registry, where the rescan finds it again). A failure
//! of any other target (a component, a metric, a process) is reported once
//! per episode and found by no rescan, so it is held instead: one per
//! target (a repeat coalesces into it, raising its priority when more
//! urgent), at most [`MAX_HELD`] targets, offered again before the pages
//! when room opens.
//!
//! # Contract
//! - At most one incident per [`Target`] is open (queued, running or
//!   deferred) at a time, and at most `capacity` are open in all.
//! - The next incident served (the first of [`IncidentQueue::pop_batch`];
//!   `IncidentQueue::pop` in the unit tests) is the ready incident with the
//!   earliest *virtual time*: when it was queued plus one `aging` per level
//!   below P0 (P0 = 0 … P3 = 3). So a P3 queued at `t` is served as a P0 queued at
//!   `t + 3·aging` would be: urgent incidents go first, and none starves
//!   however many urgent ones keep coming. Ties go to the more urgent.
//! - Joined failures kept per incident are bounded ([`MAX_JOINED_KEPT`]);
//!   later ones are counted.
//! - The page backlog and the held non-page failures are bounded and first
//!   in, first out; a failure leaves them only to be offered to the queue
//!   again. Only a non-page failure beyond [`MAX_HELD`] targets is lost
//!   (counted, and announced by the manager).

use std::collections::{HashMap, VecDeque};

use crate::types::{Failure, Priority, Target};

/// Joined failures an incident keeps; later joins are only counted.
pub(crate) const MAX_JOINED_KEPT: usize = 16;

/// Non-page targets whose failure is held beyond the bound, at most (their
/// number is bounded by the host's components, metrics and processes).
pub(crate) const MAX_HELD: usize = 256;

fn level(p: Priority) -> usize {
    match p {
        Priority::P0 => 0,
        Priority::P1 => 1,
        Priority::P2 => 2,
        Priority::P3 => 3,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Queued,
    Running,
    /// Waiting until the given clock time (the healer's cooldown).
    Deferred(u64),
}

/// An open incident in the queue.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) priority: Priority,
    pub(crate) first: Failure,
    /// Joined before the incident was taken.
    pub(crate) joined: Vec<Failure>,
    /// Joined while it ran.
    pub(crate) late: Vec<Failure>,
    /// Joins not kept (beyond [`MAX_JOINED_KEPT`]).
    pub(crate) joins_dropped: u64,
    pub(crate) queued_ns: u64,
    /// Whether it was read back from the incidents file at start.
    pub(crate) resumed: bool,
    /// Recovery threads that died while handling it.
    pub(crate) deaths: u32,
    state: State,
}

/// What [`IncidentQueue::offer`] did with a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// It opened incident `id`.
    Opened(u64),
    /// It joined open incident `id`.
    Joined(u64),
    /// The queue was full: counted (and a rescan marked due for a page).
    Overflow,
    /// The queue was full: counted, and the failure kept (a page's in the
    /// backlog, another target's among the held ones) until there is room.
    Backlogged,
}

/// What [`IncidentQueue::claim`] found.
#[derive(Debug)]
pub(crate) enum Claim {
    /// No incident was open: one is opened, running, for the caller.
    Opened(Taken),
    /// A queued incident, now running for the caller (the failure joined).
    Taken(Taken),
    /// Another thread heals incident `id` (the failure joined it).
    Busy(u64),
    /// Incident `id` waits out its cooldown (the failure joined it).
    Deferred(u64),
    /// The queue is full: nothing was filed; the failure is given back.
    Full(Option<Failure>),
}

/// An incident handed to a worker.
#[derive(Clone, Debug)]
pub(crate) struct Taken {
    pub(crate) id: u64,
    pub(crate) target: Target,
    pub(crate) first: Failure,
    pub(crate) joined: Vec<Failure>,
    pub(crate) resumed: bool,
    /// When it was queued (on the manager's clock).
    pub(crate) queued_ns: u64,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct IncidentQueue {
    open: HashMap<Target, Entry>,
    /// Per level, targets in arrival order (stale items are skipped).
    ready: [VecDeque<(u64, Target)>; 4],
    capacity: usize,
    aging_ns: u64,
    next_id: u64,
    pub(crate) overflowed: u64,
    pub(crate) rescan_due: bool,
    /// Page failures beyond the bound, waiting for room (oldest first).
    backlog: VecDeque<Failure>,
    backlog_capacity: usize,
    /// Non-page failures beyond the bound, one per target (oldest first).
    held: VecDeque<Failure>,
    /// How many open incidents are deferred (so that a queue with none is
    /// not scanned for them).
    deferred: usize,
}

impl IncidentQueue {
    /// A queue of at most `capacity` open incidents, aging one level per
    /// `aging_ns` waited, numbering incidents from `next_id`.
    pub(crate) fn new(capacity: usize, aging_ns: u64, next_id: u64) -> Self {
        assert!(capacity > 0 && aging_ns > 0, "validated by the config");
        IncidentQueue {
            open: HashMap::new(),
            ready: Default::default(),
            capacity,
            aging_ns,
            next_id: next_id.max(1),
            overflowed: 0,
            rescan_due: false,
            backlog: VecDeque::new(),
            backlog_capacity: 0,
            held: VecDeque::new(),
            deferred: 0,
        }
    }

    /// Keeps up to `pages` page failures beyond the bound in a backlog
    /// (default 0: none, each is left to the rescan).
    pub(crate) fn with_backlog(mut self, pages: usize) -> Self {
        self.backlog_capacity = pages;
        self
    }

    /// Offers the held non-page failures, then the page backlog's, oldest
    /// first, while there is room; returns what each did, with its target
    /// and priority.
    pub(crate) fn refill(&mut self, now_ns: u64) -> Vec<(Offer, Target, Priority)> {
        let mut out = Vec::new();
        while self.has_room() {
            let Some(f) = self.held.pop_front().or_else(|| self.backlog.pop_front()) else {
                break;
            };
            let (target, prio) = (f.target(), f.priority);
            out.push((self.offer(f, now_ns), target, prio));
        }
        out
    }

    /// Whether failures wait for room (in the page backlog or held).
    pub(crate) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty() || !self.held.is_empty()
    }

    /// Open incidents (queued, running or deferred).
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether a new incident would fit.
    pub(crate) fn has_room(&self) -> bool {
        self.open.len() < self.capacity
    }

    /// Whether `target` has an open incident.
    pub(crate) fn is_open(&self, target: &Target) -> bool {
        self.open.contains_key(target)
    }

    /// Whether nothing is queued or running (deferred incidents may remain).
    pub(crate) fn is_idle(&self) -> bool {
        debug_assert_eq!(
            self.deferred,
            self.open
                .values()
                .filter(|e| matches!(e.state, State::Deferred(_)))
                .count()
        );
        !self.has_backlog() && self.open.len() == self.deferred
    }

    /// Files `failure` (see the module docs).
    pub(crate) fn offer(&mut self, failure: Failure, now_ns: u64) -> Offer {
        let target = failure.target();
        if let Some(e) = self.open.get_mut(&target) {
            let id = e.id;
            let raised = failure.priority < e.priority;
            if raised {
                e.priority = failure.priority;
            }
            let list = if e.state == State::Running {
                &mut e.late
            } else {
                &mut e.joined
            };
            if list.len() < MAX_JOINED_KEPT {
                list.push(failure);
            } else {
                e.joins_dropped += 1;
            }
            if raised && e.state == State::Queued {
                let p = e.priority;
                self.ready[level(p)].push_back((id, target));
            }
            return Offer::Joined(id);
        }
        if !self.has_room() {
            self.overflowed += 1;
            if matches!(target, Target::Page(_)) {
                if self.backlog.len() < self.backlog_capacity {
                    self.backlog.push_back(failure);
                    return Offer::Backlogged;
                }
                self.rescan_due = true;
                return Offer::Overflow;
            }
            if let Some(held) = self.held.iter_mut().find(|h| h.target() == target) {
                held.priority = held.priority.min(failure.priority);
                return Offer::Backlogged;
            }
            if self.held.len() < MAX_HELD {
                self.held.push_back(failure);
                return Offer::Backlogged;
            }
            return Offer::Overflow;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.insert(id, failure, now_ns, false);
        Offer::Opened(id)
    }

    /// Claims the incident of `target` for the caller's thread (heal on
    /// read), with `failure` — the report of the read, when it made one —
    /// joined or opening it (see [`Claim`]).
    pub(crate) fn claim(
        &mut self,
        target: &Target,
        failure: Option<Failure>,
        opening: impl FnOnce() -> Failure,
        now_ns: u64,
    ) -> Claim {
        if let Some(e) = self.open.get_mut(target) {
            let id = e.id;
            let state = e.state;
            if let Some(f) = failure {
                if f.priority < e.priority {
                    e.priority = f.priority;
                }
                let list = if state == State::Running {
                    &mut e.late
                } else {
                    &mut e.joined
                };
                if list.len() < MAX_JOINED_KEPT {
                    list.push(f);
                } else {
                    e.joins_dropped += 1;
                }
            }
            return match state {
                State::Running => Claim::Busy(id),
                State::Deferred(_) => Claim::Deferred(id),
                State::Queued => {
                    e.state = State::Running;
                    Claim::Taken(Taken {
                        id,
                        target: target.clone(),
                        first: e.first.clone(),
                        joined: std::mem::take(&mut e.joined),
                        resumed: e.resumed,
                        queued_ns: e.queued_ns,
                    })
                }
            };
        }
        if !self.has_room() {
            return Claim::Full(failure);
        }
        let first = failure.unwrap_or_else(opening);
        let id = self.next_id;
        self.next_id += 1;
        self.insert(id, first.clone(), now_ns, false);
        self.open.get_mut(target).expect("inserted").state = State::Running;
        Claim::Opened(Taken {
            id,
            target: target.clone(),
            first,
            joined: Vec::new(),
            resumed: false,
            queued_ns: now_ns,
        })
    }

    /// Whether incident `id` is open and running.
    pub(crate) fn is_running(&self, target: &Target, id: u64) -> bool {
        self.open
            .get(target)
            .is_some_and(|e| e.id == id && e.state == State::Running)
    }

    /// Re-opens an incident read back at start, under its old id.
    pub(crate) fn resume(&mut self, id: u64, failure: Failure, now_ns: u64) -> bool {
        let target = failure.target();
        if self.open.contains_key(&target) || !self.has_room() {
            return false;
        }
        self.next_id = self.next_id.max(id + 1);
        self.insert(id, failure, now_ns, true);
        true
    }

    fn insert(&mut self, id: u64, failure: Failure, now_ns: u64, resumed: bool) {
        let target = failure.target();
        let p = failure.priority;
        self.ready[level(p)].push_back((id, target.clone()));
        self.open.insert(
            target,
            Entry {
                id,
                priority: p,
                first: failure,
                joined: Vec::new(),
                late: Vec::new(),
                joins_dropped: 0,
                queued_ns: now_ns,
                resumed,
                deaths: 0,
                state: State::Queued,
            },
        );
    }

    /// Whether the ready item `(id, target)` at `lvl` is current.
    fn current(&self, lvl: usize, id: u64, target: &Target) -> bool {
        self.open
            .get(target)
            .is_some_and(|e| e.id == id && e.state == State::Queued && level(e.priority) == lvl)
    }

    /// The level whose front is the ready incident to serve next (see the
    /// module docs), stale items dropped on the way.
    fn best(&mut self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None; // (virtual time, level)
        for lvl in 0..4 {
            while let Some((id, t)) = self.ready[lvl].front() {
                if self.current(lvl, *id, t) {
                    break;
                }
                self.ready[lvl].pop_front();
            }
            if let Some((_, t)) = self.ready[lvl].front() {
                let e = &self.open[t];
                let key = (
                    e.queued_ns
                        .saturating_add(self.aging_ns.saturating_mul(lvl as u64)),
                    lvl,
                );
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
        }
        best.map(|(_, lvl)| lvl)
    }

    /// Takes the front of `lvl` and marks it running.
    fn take(&mut self, lvl: usize) -> Taken {
        let (_, target) = self.ready[lvl].pop_front().expect("front checked");
        let e = self.open.get_mut(&target).expect("current");
        e.state = State::Running;
        Taken {
            id: e.id,
            target,
            first: e.first.clone(),
            joined: std::mem::take(&mut e.joined),
            resumed: e.resumed,
            queued_ns: e.queued_ns,
        }
    }

    /// Takes the ready incident to serve next (see the module docs) and
    /// marks it running.
    #[cfg(test)]
    pub(crate) fn pop(&mut self) -> Option<Taken> {
        let lvl = self.best()?;
        Some(self.take(lvl))
    }

    /// Whether the front of `lvl` may be healed in a batch of pages: a
    /// page (one resumed from the previous run too: the batch re-checks
    /// it first) that has killed no recovery thread (it is then served
    /// alone).
    fn batchable(&self, lvl: usize) -> bool {
        self.ready[lvl]
            .front()
            .is_some_and(|(_, t)| matches!(t, Target::Page(_)) && self.open[t].deaths == 0)
    }

    /// Whether an incident is ready to be taken (drops stale entries on the way).
    pub(crate) fn has_ready(&mut self) -> bool {
        self.best().is_some()
    }

    /// Takes up to `max` incidents to serve next, in the order of the
    /// module docs (earliest virtual time first, as `pop` in the unit tests
    /// takes them one by one): the first alone unless it is a page that may
    /// be healed in a batch, then the following ones while they are too.
    pub(crate) fn pop_batch(&mut self, max: usize) -> Vec<Taken> {
        let Some(lvl) = self.best() else {
            return Vec::new();
        };
        let batch = self.batchable(lvl);
        let mut out = Vec::with_capacity(if batch { max.min(self.open.len()) } else { 1 });
        out.push(self.take(lvl));
        while batch && out.len() < max {
            match self.best() {
                Some(lvl) if self.batchable(lvl) => out.push(self.take(lvl)),
                _ => break,
            }
        }
        out
    }

    /// Closes the running incident of `target`; returns the failures that
    /// joined while it ran.
    pub(crate) fn finish(&mut self, target: &Target) -> Vec<Failure> {
        let e = self.open.remove(target);
        if e.as_ref()
            .is_some_and(|e| matches!(e.state, State::Deferred(_)))
        {
            self.deferred -= 1;
        }
        e.map(|e| e.late).unwrap_or_default()
    }

    /// The running incident of `target` lost its thread: the death is
    /// counted, and when the incident has cost fewer than `requeue_below`
    /// threads it is queued again with `joined` (what the thread had taken)
    /// and the failures that joined meanwhile, keeping its place by its
    /// queued time; otherwise it stays running for the caller to close.
    /// Returns the deaths it has cost; `None` when it is not running.
    pub(crate) fn requeue(
        &mut self,
        target: &Target,
        joined: Vec<Failure>,
        requeue_below: u32,
    ) -> Option<u32> {
        let e = self.open.get_mut(target)?;
        if e.state != State::Running {
            return None;
        }
        e.deaths = e.deaths.saturating_add(1);
        let late = std::mem::take(&mut e.late);
        e.joined = joined;
        e.joined.extend(late);
        e.joined.truncate(MAX_JOINED_KEPT);
        if e.deaths < requeue_below {
            e.state = State::Queued;
            let (id, p) = (e.id, e.priority);
            self.ready[level(p)].push_back((id, target.clone()));
        }
        Some(self.open[target].deaths)
    }

    /// A fresh incident id, for an incident the manager opens and closes
    /// itself (one of its own threads restarted).
    pub(crate) fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Keeps the running incident of `target` open but idle until
    /// `until_ns` (then [`promote`](Self::promote) queues it again, with
    /// the failures that joined meanwhile).
    pub(crate) fn defer(&mut self, target: &Target, until_ns: u64) {
        if let Some(e) = self.open.get_mut(target) {
            if !matches!(e.state, State::Deferred(_)) {
                self.deferred += 1;
            }
            e.state = State::Deferred(until_ns);
            let late = std::mem::take(&mut e.late);
            e.joined.extend(late);
            e.joined.truncate(MAX_JOINED_KEPT);
        }
    }

    /// Queues every deferred incident whose time has come, oldest (lowest
    /// id) first whatever the map's order, so that a run on a given clock
    /// queues them the same way every time; returns how many.
    pub(crate) fn promote(&mut self, now_ns: u64) -> usize {
        if self.deferred == 0 {
            return 0;
        }
        let mut due: Vec<(u64, usize, Target)> = Vec::new();
        for (t, e) in &mut self.open {
            if let State::Deferred(until) = e.state {
                if until <= now_ns {
                    e.state = State::Queued;
                    due.push((e.id, level(e.priority), t.clone()));
                }
            }
        }
        due.sort_unstable_by_key(|(id, _, _)| *id);
        let n = due.len();
        self.deferred -= n;
        for (id, lvl, t) in due {
            self.ready[lvl].push_back((id, t));
        }
        n
    }

    /// Open incidents whose first failure was detected longer ago than
    /// their priority's RTO (`rto`, P0 first) at `now_ns`.
    pub(crate) fn past_rto(&self, now_ns: u64, rto: &[std::time::Duration; 4]) -> u64 {
        self.open
            .values()
            .filter(|e| {
                let age = now_ns.saturating_sub(e.first.detected_at_ns);
                u128::from(age) > rto[level(e.priority)].as_nanos()
            })
            .count() as u64
    }

    /// The open incidents not running, for persisting: `(id, first failure)`.
    pub(crate) fn snapshot(&self) -> Vec<(u64, Failure)> {
        let mut v: Vec<(u64, Failure)> = self
            .open
            .values()
            .map(|e| {
                let mut f = e.first.clone();
                f.priority = e.priority;
                (e.id, f)
            })
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }
}

#[cfg(test)]
mod tests;
