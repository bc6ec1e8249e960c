//! The survey of a repair (or of a batch): every replica asked for its
//! status at once, each on its helper thread (an inline replica on the
//! caller's), and the answers waited for with one deadline; for one page, the status and the copy asked in one
//! call (a *probe*), also sent ahead of a repair on the same thread
//! ([`DataRepairer::probe_ahead`]).
//!
//! # Contract
//! - Hung replicas cost one deadline together. A replica that is hung or
//!   cooling off is not asked; one whose status misses the deadline or
//!   panics is blocked (it cools off, and is counted as timed out when it
//!   missed the deadline), with the reason kept for the repair's report and
//!   an unavailable status.
//! - A survey probes only when no more replicas are registered than copies
//!   a repair wants; a probe's copy is verified and ranked by the repair
//!   like any other.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::corruption::PageState;
use crate::error::Error;
use crate::host::{ReplicaLag, ReplicaStatus};
use crate::repair::ahead::ProbeAhead;
use crate::repair::courier::{CallFailure, Deadline};
use crate::repair::replica_read::StatusCall;
use crate::repair::{DataRepairer, ReplicaEntry};
use crate::types::{Lsn, PageId};

/// The replicas as a repair (or a batch) sees them: each with why it must
/// not be asked (hung, cooling off, or its status call failed), and its
/// status (unavailable for a blocked one).
pub(super) struct Survey {
    pub(super) replicas: Vec<ReplicaEntry>,
    pub(super) blocked: Vec<Option<String>>,
    pub(super) statuses: Vec<ReplicaStatus>,
    /// Per replica, the probe that may have read the page after the status.
    pub(super) probes: Vec<Option<StatusCall>>,
}

/// Per replica, its status call, or why it could not be asked.
type Asked = Vec<std::result::Result<StatusCall, CallFailure>>;

impl DataRepairer {
    /// Asks every replica for its status at once, on their helper threads,
    /// and waits for the answers with one deadline: hung replicas cost one
    /// deadline together. A replica that is hung or cooling off is not asked;
    /// one whose status misses the deadline or panics is blocked (and cools
    /// off, counted as timed out when it missed the deadline).
    ///
    /// With `probe` (a page and the LSN it must reach), when no more replicas
    /// are registered than copies a repair wants, each replica whose status
    /// allows it reads the page in the same call: a repair then asks every
    /// such replica anyway (unless page LSNs show some cannot hold a copy that
    /// would be written; their copies are discarded unread by the repair).
    pub(super) fn survey(&self, probe: Option<(PageId, Option<Lsn>)>) -> Survey {
        let (replicas, asked) = self.ask(probe);
        self.collect_survey(replicas, asked)
    }

    /// Sends a survey's calls: every replica asked for its status, or
    /// probed for `probe`'s page (see [`survey`](Self::survey)).
    fn ask(&self, probe: Option<(PageId, Option<Lsn>)>) -> (Vec<ReplicaEntry>, Asked) {
        let replicas: Vec<ReplicaEntry> = self.replicas.read().clone();
        let ps = self.detector.store().page_size();
        let probe = probe.filter(|_| replicas.len() <= self.max_copies);
        let asked: Vec<_> = replicas
            .iter()
            .map(|e| match probe {
                Some((page, needed)) => e.reader.probe(page, ps, needed),
                None => e.reader.ask_status(),
            })
            .collect();
        (replicas, asked)
    }

    /// Probes the replicas for `page` now, as its repair's survey would,
    /// for a repair on this thread to take (see [`ahead`](crate::repair::ahead)).
    /// `None` when the page is not fenced, when a replica is called inline,
    /// or when the survey would not probe (no replica, or more replicas
    /// than copies a repair wants).
    pub(crate) fn probe_ahead(&self, page: PageId) -> Option<ProbeAhead> {
        if !self
            .detector
            .page_state(page)
            .is_some_and(PageState::is_fenced)
        {
            return None;
        }
        let epoch = self.detector.page_epoch(page)?;
        {
            let replicas = self.replicas.read();
            // An inline replica would answer on this thread now: nothing
            // to overlap.
            if replicas.is_empty()
                || replicas.len() > self.max_copies
                || replicas.iter().any(|e| e.reader.is_inline())
            {
                return None;
            }
        }
        let needed = self.detector.last_written_lsn(page);
        let sent = Instant::now();
        let (replicas, asked) = self.ask(Some((page, needed)));
        Some(ProbeAhead {
            page,
            epoch,
            sent,
            needed,
            replicas,
            asked,
        })
    }

    /// Waits for a survey's answers with one deadline (see
    /// [`survey`](Self::survey)).
    pub(super) fn collect_survey(&self, replicas: Vec<ReplicaEntry>, asked: Asked) -> Survey {
        let deadline = Deadline::after(self.read_timeout);
        let mut blocked = Vec::with_capacity(replicas.len());
        let mut statuses = Vec::with_capacity(replicas.len());
        let mut probes = Vec::with_capacity(replicas.len());
        for (e, asked) in replicas.iter().zip(asked) {
            let answer = asked.and_then(|mut call| {
                let status = e.reader.status(&mut call, deadline)?;
                Ok((status, call))
            });
            match answer {
                Ok((status, call)) => {
                    if !status.available {
                        e.failing.failed(&"its status says it cannot serve reads");
                    }
                    blocked.push(None);
                    statuses.push(status);
                    probes.push(Some(call));
                }
                Err(f) => {
                    e.failing.failed(&f.error);
                    // Counted as unavailable where the repair skips it.
                    if f.timed_out() {
                        e.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                    blocked.push(Some(match f.error {
                        Error::ReplicaUnavailable { reason, .. } => reason,
                        other => other.to_string(),
                    }));
                    statuses.push(ReplicaStatus {
                        available: false,
                        lag: ReplicaLag::default(),
                    });
                    probes.push(None);
                }
            }
        }
        Survey {
            replicas,
            blocked,
            statuses,
            probes,
        }
    }
}
