//! Tells when a replica keeps failing, and reports it once per episode.
//!
//! Each registered replica has a [`FailingWatch`]. The repairer tells it of
//! every call into the replica that gave nothing usable
//! ([`failed`](FailingWatch::failed)) and of every copy it served that
//! verified ([`served`](FailingWatch::served)). When
//! [`replica_failing_after`](super::RepairConfig::replica_failing_after)
//! failures come in a row, one
//! [`FailureKind::ReplicaFailing`] goes on the repairer's failure bus,
//! stamped with the repairer's clock; no other is sent until the replica
//! serves a verified copy, which ends the episode and starts the count
//! again.
//!
//! # Contract
//!
//! - At most one report per episode, also when repairs on several threads
//!   fail at once (the report is claimed by one compare-and-swap).
//! - A verified copy resets the count and ends the episode; nothing else
//!   does (a status that answers is not a copy: a replica serving corrupt
//!   copies keeps failing however well it answers its status).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::clock::Clock;
use crate::types::{FailureKind, FailureSink, ReplicaId, Source};

/// The failure count and episode of one replica, and where to report.
pub(crate) struct FailingWatch {
    replica: ReplicaId,
    /// Failures in a row that make an episode (at least 1).
    after: u32,
    sink: FailureSink,
    clock: Arc<dyn Clock>,
    in_a_row: AtomicU32,
    /// The episode under way was reported.
    reported: AtomicBool,
}

impl FailingWatch {
    /// A watch over `replica` that reports on `sink` after `after` failures
    /// in a row, at the time of `clock`.
    pub(crate) fn new(
        replica: ReplicaId,
        after: u32,
        sink: FailureSink,
        clock: Arc<dyn Clock>,
    ) -> Self {
        debug_assert!(after >= 1, "validated by the config");
        FailingWatch {
            replica,
            after: after.max(1),
            sink,
            clock,
            in_a_row: AtomicU32::new(0),
            reported: AtomicBool::new(false),
        }
    }

    /// A call into the replica gave nothing usable, because of `why`.
    /// Reports the replica failing when this failure completes a run of
    /// `after` and the episode was not reported yet.
    pub(crate) fn failed(&self, why: &dyn fmt::Display) {
        let n = self
            .in_a_row
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if n < self.after
            || self
                .reported
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let now_ns = self.clock.now_ns();
        tracing::warn!(replica = %self.replica, failures = n, "replica failing: {why}");
        self.sink.report(
            Source::DataRepairer,
            FailureKind::ReplicaFailing {
                replica: self.replica.clone(),
            },
            format!("{n} calls into it in a row gave no usable copy; the last: {why}"),
            now_ns,
        );
    }

    /// The replica served a copy that verified: the count starts again and
    /// an episode under way ends.
    pub(crate) fn served(&self) {
        // Loads first: the common case writes nothing.
        if self.in_a_row.load(Ordering::Acquire) != 0 {
            self.in_a_row.store(0, Ordering::Release);
        }
        if self.reported.load(Ordering::Acquire) {
            self.reported.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    fn watch(after: u32) -> (FailingWatch, FailureSink, ManualClock) {
        let sink = FailureSink::new(64);
        let clock = ManualClock::new();
        let w = FailingWatch::new(
            ReplicaId::new("r"),
            after,
            sink.clone(),
            Arc::new(clock.clone()),
        );
        (w, sink, clock)
    }

    #[test]
    fn reports_once_per_episode_at_the_failure_that_completes_the_run() {
        let (w, sink, clock) = watch(3);
        w.failed(&"a");
        w.failed(&"b");
        assert_eq!(sink.sent(), 0);
        clock.advance(Duration::from_secs(7));
        w.failed(&"c");
        let got: Vec<_> = sink.failures().try_iter().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].source, Source::DataRepairer);
        assert_eq!(
            got[0].target(),
            crate::types::Target::Replica(ReplicaId::new("r"))
        );
        assert_eq!(got[0].detected_at_ns, clock.now_ns());
        assert!(
            got[0].evidence.contains("the last: c"),
            "{}",
            got[0].evidence
        );
        for _ in 0..10 {
            w.failed(&"more");
        }
        assert_eq!(sink.sent(), 1, "one report per episode");
        // A verified copy ends the episode; the count starts again.
        w.served();
        w.failed(&"d");
        w.failed(&"e");
        assert_eq!(sink.sent(), 1);
        w.failed(&"f");
        assert_eq!(sink.sent(), 2);
    }

    #[test]
    fn a_success_inside_a_run_starts_the_count_again() {
        let (w, sink, _) = watch(2);
        w.failed(&"a");
        w.served();
        w.failed(&"b");
        assert_eq!(sink.sent(), 0);
        w.failed(&"c");
        assert_eq!(sink.sent(), 1);
    }
}
