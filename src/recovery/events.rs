//! Incident events for subscribers: bounded channels that never block
//! recovery.
//!
//! [`AutoRecoveryManager::subscribe`](super::AutoRecoveryManager::subscribe)
//! gives a [`Subscription`]: a bounded channel of [`RecoveryEvent`]s. An
//! event that does not fit (the subscriber is slow) is dropped *for that
//! subscriber* and counted in [`Subscription::dropped`]; recovery never
//! waits for a subscriber. A subscription that is dropped is forgotten at
//! the next event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::healer::EscalationReport;
use crate::types::{Priority, Target};

/// Subscriptions held at once at most.
pub const MAX_SUBSCRIBERS: usize = 64;

/// Unread events one subscription holds at most (its channel's slots are
/// allocated when it subscribes).
pub const MAX_SUBSCRIPTION_CAPACITY: usize = 1 << 16;

/// What happened to an incident.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RecoveryEvent {
    /// A failure opened an incident.
    Opened {
        /// The incident.
        id: u64,
        /// What it is about.
        target: Target,
        /// Its priority.
        priority: Priority,
    },
    /// A repeat report of the target joined the open incident.
    Joined {
        /// The incident.
        id: u64,
        /// What it is about.
        target: Target,
    },
    /// A remedy acted (or, in Observe mode, was planned), as the
    /// incident's timeline says.
    Action {
        /// The incident.
        id: u64,
        /// The timeline's text.
        text: String,
    },
    /// The incident was healed and verified.
    Healed {
        /// The incident.
        id: u64,
        /// The remedy that healed it.
        remedy: String,
        /// From detection to the verified heal.
        time_to_heal: Duration,
        /// Whether that was within its priority's RTO.
        within_rto: bool,
    },
    /// Nothing healed it: one report went to the host — the one handed
    /// to the escalation callback, if the host set one
    /// ([`HealerConfig::on_escalation`](crate::healer::HealerConfig::on_escalation)).
    Escalated {
        /// The incident.
        id: u64,
        /// Why (the report's `reason`).
        reason: String,
        /// The report: the diagnosis, every remedy tried with its outcome
        /// and evidence, the failures. `None` only for an incident closed
        /// without one.
        report: Option<Arc<EscalationReport>>,
    },
    /// The incident's page was taken into the page-set incident `into`
    /// (page failures of one diagnosis that arrive together are healed as
    /// one incident), which closes for it; `into`'s closing event follows.
    Merged {
        /// The incident merged.
        id: u64,
        /// The page-set incident that healed its page.
        into: u64,
    },
    /// Observe mode: decided and reported, nothing changed.
    Observed {
        /// The incident.
        id: u64,
    },
    /// The queue was full: the failure was counted, not queued yet. It
    /// opens its incident when room opens (a page's from the page backlog,
    /// another target's from the held failures, one per target); a page
    /// beyond the backlog is found again by the error-only rescan, and only
    /// a non-page failure beyond the held bound is lost.
    Overflowed {
        /// What it was about.
        target: Target,
    },
}

/// A bounded stream of [`RecoveryEvent`]s (see the module docs).
#[derive(Debug)]
pub struct Subscription {
    rx: Receiver<RecoveryEvent>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// The receiving end (an owned handle, as every component's
    /// `failures()` and `events()` is; clones share the one queue).
    #[must_use]
    pub fn events(&self) -> Receiver<RecoveryEvent> {
        self.rx.clone()
    }

    /// Events dropped because this subscriber's channel was full.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Sub {
    tx: Sender<RecoveryEvent>,
    dropped: Arc<AtomicU64>,
}

/// The subscribers of one manager.
#[derive(Default)]
pub(crate) struct Events {
    subs: Mutex<Vec<Sub>>,
    /// Events dropped for any subscriber, in all.
    pub(crate) dropped: AtomicU64,
}

impl Events {
    pub(crate) fn subscribe(&self, capacity: usize) -> Result<Subscription> {
        if capacity == 0 {
            return Err(Error::InvalidArgument {
                what: "capacity",
                reason: "is 0; a subscription holds at least one event".into(),
            });
        }
        if capacity > MAX_SUBSCRIPTION_CAPACITY {
            return Err(Error::InvalidArgument {
                what: "capacity",
                reason: format!(
                    "is {capacity}, more than the {MAX_SUBSCRIPTION_CAPACITY} events a subscription may hold (its slots are allocated up front); give at most {MAX_SUBSCRIPTION_CAPACITY} and read the events as they come"
                ),
            });
        }
        let mut subs = self.subs.lock();
        if subs.len() >= MAX_SUBSCRIBERS {
            return Err(Error::InvalidArgument {
                what: "subscribe",
                reason: format!("{MAX_SUBSCRIBERS} subscriptions are held already; drop one first"),
            });
        }
        let (tx, rx) = bounded(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        subs.push(Sub {
            tx,
            dropped: dropped.clone(),
        });
        Ok(Subscription { rx, dropped })
    }

    /// Hands `event` to every subscriber without waiting.
    pub(crate) fn emit(&self, event: &RecoveryEvent) {
        let mut subs = self.subs.lock();
        subs.retain(|s| match s.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_subscriber_loses_events_counted_and_others_get_them() {
        let ev = Events::default();
        let slow = ev.subscribe(1).unwrap();
        let fast = ev.subscribe(8).unwrap();
        for id in 0..5 {
            ev.emit(&RecoveryEvent::Observed { id });
        }
        assert_eq!(slow.dropped(), 4);
        assert_eq!(fast.events().try_iter().count(), 5);
        assert_eq!(fast.dropped(), 0);
        drop(slow);
        ev.emit(&RecoveryEvent::Observed { id: 9 });
        assert_eq!(
            ev.subs.lock().len(),
            1,
            "a dropped subscription is forgotten"
        );
        assert!(ev.subscribe(0).is_err());
    }

    #[test]
    fn a_capacity_past_the_bound_is_a_typed_error_not_a_panic() {
        let ev = Events::default();
        for capacity in [MAX_SUBSCRIPTION_CAPACITY + 1, usize::MAX] {
            match ev.subscribe(capacity) {
                Err(Error::InvalidArgument { what, reason }) => {
                    assert_eq!(what, "capacity");
                    assert!(reason.contains(&capacity.to_string()), "{reason}");
                    assert!(
                        reason.contains(&MAX_SUBSCRIPTION_CAPACITY.to_string()),
                        "{reason}"
                    );
                }
                other => panic!("capacity {capacity}: {other:?}"),
            }
        }
        assert!(ev.subscribe(MAX_SUBSCRIPTION_CAPACITY).is_ok());
    }
}
