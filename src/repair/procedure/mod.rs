//! The repair procedure of [`DataRepairer`] (see the [module docs](super)):
//! take the ticket, gather and rank copies, commit the best one (alone or in
//! a batch with one sync), fall back, or declare the page irreparable. The
//! replicas' statuses a repair starts from are asked in `survey.rs`.

mod survey;

use std::sync::atomic::Ordering;

use super::plan::{
    admit, next_fetch, order_replicas, rank_copies, Fetch, Gathered, Group, Skip, Standing,
};
use super::replica_read::Stream;
use super::{
    Attempt, AttemptResult, CopySource, DataRepairer, FallbackEntry, RepairOutcome, RepairReport,
    ReplicaEntry,
};
use crate::corruption::{
    Commit, CommitResult, LsnExpectation, PageState, RepairTicket, Verdict, VerifiedCopy,
};
use crate::error::{Error, Result};
use crate::types::{Failure, FailureKind, Lsn, PageId, ReplicaId, Source};
use survey::Survey;

/// The most consecutive fenced pages a batch rechecks with one read (as
/// many as a batch commit re-reads together).
const RECHECK_RUN_PAGES: usize = 32;

/// A verified copy waiting for the ranking.
struct Candidate {
    attempt: usize,
    /// The replica that served it (shares its counters).
    replica: ReplicaEntry,
    /// `None` once the ranking showed it is never written.
    copy: Option<VerifiedCopy>,
    lsn: Option<Lsn>,
}

/// How the first step of a repair ended.
enum Start<'d> {
    /// Nothing to fetch: the report is final.
    Done(RepairReport),
    /// The page is ours to repair.
    Ticket(RepairTicket<'d>),
}

/// Reads of a batch's pages queued ahead on the replica that comes first.
struct Prefetch {
    replica: ReplicaId,
    stream: Stream,
}

/// A repair between fetching and committing.
struct Pending<'d> {
    /// `None` while a batch commit holds it.
    ticket: Option<RepairTicket<'d>>,
    report: RepairReport,
    /// What the page must carry, as the detector knew when fetching began.
    expect: LsnExpectation,
    candidates: Vec<Candidate>,
    /// Eligible groups in rank order (all at the newest LSN).
    eligible: Vec<Group>,
    /// The newest page LSN among the verified copies.
    newest: Option<Lsn>,
}

impl Pending<'_> {
    /// The copy a commit writes first, if any copy may be written.
    fn lead(&self) -> Option<&VerifiedCopy> {
        let g = self.eligible.first()?;
        self.candidates[g.members[0]].copy.as_ref()
    }
}

impl DataRepairer {
    /// Repairs one fenced page (see the module docs for the procedure), with
    /// a sync of its own.
    ///
    /// Every way a repair can end — including no source having a good copy —
    /// is an `Ok` report; see [`RepairReport::outcome`]. A panic of a replica
    /// or a fallback source is caught on its helper thread and skips it. A
    /// panic of host code called on the caller's thread (the detector's
    /// page-LSN reader, its store) unwinds to the caller, and the page goes
    /// back to `Suspect` on the way.
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`] for a page past the end of the store.
    pub fn repair_page(&self, page: PageId) -> Result<RepairReport> {
        let started = self.clock.now_ns();
        let page_count = self.detector.store().page_count();
        if page.0 >= page_count {
            return Err(Error::PageOutOfRange { page, page_count });
        }
        let report = match self.start(page) {
            Start::Done(report) => report,
            Start::Ticket(ticket) => {
                let needed = self.detector.last_written_lsn(page);
                // Probes sent ahead that do not fit are dropped (their
                // reads not started withdrawn) before asking afresh.
                let ahead = super::ahead::take(page).filter(|a| {
                    let now = self.replicas.read();
                    a.fits(page, ticket.epoch(), needed, &now, self.read_timeout)
                });
                let mut survey = match ahead {
                    Some(a) => self.collect_survey(a.replicas, a.asked),
                    None => self.survey(Some((page, needed))),
                };
                let pending = self.gather(ticket, &mut survey, None);
                self.settle(pending, None)
            }
        };
        Ok(self.finish(report, started))
    }

    /// Repairs every `Suspect` page, in page order, in batches with one sync
    /// each (see the module docs).
    pub fn repair_pending(&self) -> Vec<RepairReport> {
        self.repair_states(&[PageState::Suspect])
    }

    /// Repairs every `Suspect` page and tries every `Irreparable` page again
    /// (a replica may have come back), in page order, in batches with one
    /// sync each (see the module docs).
    pub fn repair_all(&self) -> Vec<RepairReport> {
        self.repair_states(&[PageState::Suspect, PageState::Irreparable])
    }

    /// Repairs the given fenced pages as [`repair_all`](Self::repair_all)
    /// does — in batches of `repair_batch_pages` with one sync each — and
    /// answers for each page, in the order given. A caller that collects
    /// pages from several reports (the recovery manager healing a burst)
    /// gets one sync per batch instead of one per page.
    ///
    /// # Errors
    /// Per page: [`Error::PageOutOfRange`] for a page past the end of the
    /// store; [`Error::InvalidArgument`] for a page given twice (its first
    /// place is repaired).
    pub fn repair_pages(&self, pages: &[PageId]) -> Vec<Result<RepairReport>> {
        let page_count = self.detector.store().page_count();
        let mut seen = std::collections::HashSet::with_capacity(pages.len());
        let mut out: Vec<Option<Result<RepairReport>>> = Vec::with_capacity(pages.len());
        let mut todo: Vec<(usize, PageId)> = Vec::new();
        for (i, &page) in pages.iter().enumerate() {
            if page.0 >= page_count {
                out.push(Some(Err(Error::PageOutOfRange { page, page_count })));
            } else if !seen.insert(page) {
                out.push(Some(Err(Error::InvalidArgument {
                    what: "pages",
                    reason: format!("page {page} is given twice; give each page once"),
                })));
            } else {
                out.push(None);
                todo.push((i, page));
            }
        }
        for chunk in todo.chunks(self.batch_pages) {
            let batch: Vec<PageId> = chunk.iter().map(|(_, p)| *p).collect();
            // Matched by page: a page the store no longer holds (it shrank
            // meanwhile) has no report and stays out of range.
            for report in self.repair_batch(&batch) {
                if let Some((i, _)) = chunk.iter().find(|(_, p)| *p == report.page) {
                    out[*i] = Some(Ok(report));
                }
            }
        }
        out.into_iter()
            .zip(pages)
            .map(|(r, &page)| {
                r.unwrap_or_else(|| {
                    Err(Error::PageOutOfRange {
                        page,
                        page_count: self.detector.store().page_count(),
                    })
                })
            })
            .collect()
    }

    fn repair_states(&self, states: &[PageState]) -> Vec<RepairReport> {
        let mut pages: Vec<PageId> = states
            .iter()
            .flat_map(|s| self.detector.pages_in(*s))
            .collect();
        pages.sort_unstable();
        pages.dedup();
        let mut reports = Vec::with_capacity(pages.len());
        for batch in pages.chunks(self.batch_pages) {
            reports.extend(self.repair_batch(batch));
        }
        reports
    }

    /// Repairs `pages` with one batch commit of their winning replica copies.
    fn repair_batch(&self, pages: &[PageId]) -> Vec<RepairReport> {
        let started = self.clock.now_ns();
        let page_count = self.detector.store().page_count();
        let mut done: Vec<(usize, RepairReport)> = Vec::with_capacity(pages.len());
        let mut tickets: Vec<(usize, RepairTicket<'_>)> = Vec::with_capacity(pages.len());
        // A page past the end (the store shrank) cannot be repaired; skip it.
        for (i, start) in self.start_batch(pages, page_count) {
            match start {
                Start::Done(report) => done.push((i, report)),
                Start::Ticket(ticket) => tickets.push((i, ticket)),
            }
        }
        // One survey serves the whole batch: statuses are asked once.
        let mut survey = self.survey(None);
        let mut prefetch = self.prefetch(&survey, tickets.iter().map(|(_, t)| t.page()).collect());
        let mut to_commit: Vec<(usize, Pending<'_>)> = Vec::with_capacity(tickets.len());
        let mut without_copy: Vec<(usize, Pending<'_>)> = Vec::new();
        for (i, ticket) in tickets {
            let pending = self.gather(ticket, &mut survey, prefetch.as_mut());
            if pending.lead().is_some() {
                to_commit.push((i, pending));
            } else {
                without_copy.push((i, pending));
            }
        }
        drop(prefetch);
        let batch: Vec<(RepairTicket<'_>, &VerifiedCopy)> = to_commit
            .iter_mut()
            .map(|(_, p)| {
                let ticket = p.ticket.take().expect("a gathered repair holds its ticket");
                (ticket, p.lead().expect("only pages with a copy"))
            })
            .collect();
        let results = if batch.is_empty() {
            Vec::new()
        } else {
            self.detector.commit_verified_repairs(batch)
        };
        for ((i, pending), result) in to_commit.into_iter().zip(results) {
            done.push((i, self.settle(pending, Some(result))));
        }
        for (i, pending) in without_copy {
            done.push((i, self.settle(pending, None)));
        }
        done.sort_by_key(|(i, _)| *i);
        done.into_iter()
            .map(|(_, report)| self.finish(report, started))
            .collect()
    }

    /// Queues the reads of a batch's pages on the replica every page would
    /// ask first, so that the helper reads ahead while pages are verified.
    /// `None` when no replica can be asked (each page then finds out why).
    fn prefetch(&self, survey: &Survey, pages: Vec<PageId>) -> Option<Prefetch> {
        if pages.is_empty() {
            return None;
        }
        let (first, _) = order_replicas(&survey.statuses, None)
            .into_iter()
            .find(|(_, skip)| skip.is_none())?;
        let entry = &survey.replicas[first];
        let ps = self.detector.store().page_size();
        let stream = entry.reader.stream(pages, ps).ok()?;
        Some(Prefetch {
            replica: entry.id.clone(),
            stream,
        })
    }

    /// Step 1: unfences a page whose fault went away, or takes its ticket.
    fn start(&self, page: PageId) -> Start<'_> {
        match self.detector.page_state(page) {
            Some(PageState::Suspect | PageState::Irreparable) => {
                self.start_rechecked(page, self.detector.recheck(page))
            }
            _ => Start::Done(RepairReport::new(page, self.idle_outcome(page))),
        }
    }

    /// Step 1 for a batch: as [`start`](Self::start) per page, but the fenced
    /// pages are rechecked in runs of consecutive pages, each with one read
    /// ([`recheck_run`](crate::CorruptionDetector::recheck_run)). Returns the
    /// index of each page in `pages` with how its step 1 ended, in order;
    /// pages at or past `page_count` are left out.
    fn start_batch(&self, pages: &[PageId], page_count: u64) -> Vec<(usize, Start<'_>)> {
        let mut out = Vec::with_capacity(pages.len());
        let mut run: Vec<(usize, PageId)> = Vec::with_capacity(RECHECK_RUN_PAGES);
        // One read buffer for every run of the batch.
        let mut buf = Vec::new();
        for (i, &page) in pages.iter().enumerate() {
            if page.0 >= page_count {
                continue;
            }
            match self.detector.page_state(page) {
                Some(PageState::Suspect | PageState::Irreparable) => {
                    let follows = run
                        .last()
                        .is_none_or(|(_, last)| last.0.checked_add(1) == Some(page.0));
                    if !follows || run.len() == RECHECK_RUN_PAGES {
                        self.start_run(&mut run, &mut buf, &mut out);
                    }
                    run.push((i, page));
                }
                _ => {
                    self.start_run(&mut run, &mut buf, &mut out);
                    out.push((
                        i,
                        Start::Done(RepairReport::new(page, self.idle_outcome(page))),
                    ));
                }
            }
        }
        self.start_run(&mut run, &mut buf, &mut out);
        out
    }

    /// Rechecks a run of consecutive fenced pages with one read (into
    /// `buf`) and starts each; empties `run`.
    fn start_run<'d>(
        &'d self,
        run: &mut Vec<(usize, PageId)>,
        buf: &mut Vec<u8>,
        out: &mut Vec<(usize, Start<'d>)>,
    ) {
        let Some(&(_, first)) = run.first() else {
            return;
        };
        let verdicts = self.detector.recheck_run_in(first, run.len(), buf);
        debug_assert_eq!(verdicts.len(), run.len());
        for ((i, page), verdict) in run.drain(..).zip(verdicts) {
            out.push((i, self.start_rechecked(page, verdict)));
        }
    }

    /// Step 1 after the recheck of a fenced page.
    fn start_rechecked(&self, page: PageId, recheck: Result<Verdict>) -> Start<'_> {
        // A fault that has gone away needs no copy; recheck lifts the fence.
        match recheck {
            Ok(Verdict::Clean | Verdict::Transient | Verdict::Unallocated) => {
                Start::Done(RepairReport::new(page, RepairOutcome::NotNeeded))
            }
            Ok(Verdict::Corrupt { .. }) | Err(_) => match self.detector.begin_repair(page) {
                Some(ticket) => {
                    self.stats.attempted.fetch_add(1, Ordering::Relaxed);
                    Start::Ticket(ticket)
                }
                None => Start::Done(RepairReport::new(page, self.idle_outcome(page))),
            },
        }
    }

    fn idle_outcome(&self, page: PageId) -> RepairOutcome {
        if self.detector.page_state(page) == Some(PageState::Repairing) {
            RepairOutcome::InProgress
        } else {
            RepairOutcome::NotNeeded
        }
    }

    /// Counts a finished repair and stamps its duration.
    fn finish(&self, mut report: RepairReport, started_ns: u64) -> RepairReport {
        match &report.outcome {
            RepairOutcome::Repaired { source } => {
                self.stats.repaired.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::telemetry::PAGES_REPAIRED).increment(1);
                if matches!(source, CopySource::Fallback(_)) {
                    self.stats.from_fallback.fetch_add(1, Ordering::Relaxed);
                }
            }
            RepairOutcome::Superseded => {
                self.stats.superseded.fetch_add(1, Ordering::Relaxed);
            }
            RepairOutcome::Irreparable { .. } => {
                self.stats.irreparable.fetch_add(1, Ordering::Relaxed);
            }
            RepairOutcome::NotNeeded | RepairOutcome::InProgress => {
                self.stats.not_needed.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.stats
            .bytes_fetched
            .fetch_add(report.bytes_fetched, Ordering::Relaxed);
        report.duration = self.elapsed(started_ns);
        tracing::debug!(page = %report.page, outcome = ?report.outcome, "repair finished");
        report
    }

    /// Steps 3 and 4: fetches and verifies replica copies (taking them from
    /// `prefetch` where it holds them), and ranks them.
    fn gather<'d>(
        &'d self,
        ticket: RepairTicket<'d>,
        survey: &mut Survey,
        mut prefetch: Option<&mut Prefetch>,
    ) -> Pending<'d> {
        let page = ticket.page();
        let ps = self.detector.store().page_size();
        let expect = self.detector.lsn_expectation(page);
        let needed = expect.floor();
        let by_lsn = self.detector.reads_page_lsns();
        let Survey {
            replicas,
            blocked,
            statuses,
            probes,
        } = survey;
        let mut report = RepairReport::new(page, RepairOutcome::NotNeeded);
        report.attempts.reserve(replicas.len());
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut got = Gathered::default();

        for (idx, skip) in order_replicas(statuses, needed) {
            let entry = &replicas[idx];
            let source = CopySource::Replica(entry.id.clone());
            match skip {
                Some(Skip::Unavailable) => {
                    entry.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                    let reason = blocked[idx]
                        .clone()
                        .unwrap_or_else(|| "its status says it cannot serve reads".into());
                    report.attempts.push(Attempt {
                        source,
                        result: AttemptResult::Unavailable(Error::ReplicaUnavailable {
                            replica: entry.id.clone(),
                            reason,
                        }),
                    });
                    continue;
                }
                Some(Skip::Behind { applied, needed }) => {
                    entry.stats.stale.fetch_add(1, Ordering::Relaxed);
                    report.attempts.push(Attempt {
                        source,
                        result: AttemptResult::Stale { applied, needed },
                    });
                    continue;
                }
                None => {}
            }
            // Only verified copies count; with page LSNs, only those at the
            // newest LSN, and never while a replica left may hold a newer one.
            match next_fetch(
                statuses[idx].lag.applied_lsn,
                &got,
                self.max_copies,
                by_lsn,
                expect.exact(),
            ) {
                Fetch::Ask => {}
                Fetch::Enough => continue,
                Fetch::Behind { applied, newest } => {
                    entry.stats.stale.fetch_add(1, Ordering::Relaxed);
                    report.attempts.push(Attempt {
                        source,
                        result: AttemptResult::Stale {
                            applied,
                            needed: newest,
                        },
                    });
                    continue;
                }
            }
            let ahead = match (prefetch.as_deref_mut(), probes[idx].as_mut()) {
                (Some(pf), _) if pf.replica == entry.id => entry.reader.take(&mut pf.stream, page),
                (_, Some(probe)) => entry.reader.take_copy(probe, page),
                _ => None,
            };
            let read = ahead.unwrap_or_else(|| entry.reader.read(page, ps));
            let result = match read {
                Err(f) => {
                    entry.count_failure(&f);
                    AttemptResult::Unavailable(f.error)
                }
                Ok(buf) => {
                    entry.stats.fetched.fetch_add(1, Ordering::Relaxed);
                    report.bytes_fetched += ps as u64;
                    match self.detector.verify_copy(page, buf) {
                        Err((buf, e)) => {
                            entry.stats.rejected.fetch_add(1, Ordering::Relaxed);
                            self.copy_rejected(entry, page, &buf, &e, needed);
                            AttemptResult::FailedVerification(e)
                        }
                        Ok(copy) => {
                            entry.stats.verified.fetch_add(1, Ordering::Relaxed);
                            entry.failing.served();
                            let lsn = self.detector.page_lsn_of(copy.bytes());
                            if let Err(written) = admit(lsn, expect) {
                                report.attempts.push(Attempt {
                                    source,
                                    result: AttemptResult::NotLastWrite { lsn, written },
                                });
                                continue;
                            }
                            got.add(lsn);
                            candidates.push(Candidate {
                                attempt: report.attempts.len(),
                                replica: entry.clone(),
                                lsn,
                                copy: Some(copy),
                            });
                            AttemptResult::Verified
                        }
                    }
                }
            };
            report.attempts.push(Attempt { source, result });
        }

        let groups = {
            let views: Vec<(&[u8], Option<Lsn>)> = candidates
                .iter()
                .map(|c| (c.copy.as_ref().map_or(&[][..], VerifiedCopy::bytes), c.lsn))
                .collect();
            rank_copies(&views, self.require_majority)
        };
        let newest = groups.first().and_then(|g| g.lsn);
        debug_assert_eq!(newest, got.newest, "the ranking and the fetch agree");
        // Only the lead copy of a group that may be written is kept: the
        // others are byte-identical to it or are never written, and a batch
        // holds its pages' copies until its commit.
        for g in &groups {
            for (k, &m) in g.members.iter().enumerate() {
                if !(g.eligible() && k == 0) {
                    candidates[m].copy = None;
                }
            }
        }
        for g in &groups {
            for &m in &g.members {
                report.attempts[candidates[m].attempt].result = match g.standing {
                    Standing::Eligible => continue,
                    Standing::NoMajority { of } => AttemptResult::NoMajority {
                        votes: g.votes(),
                        of,
                    },
                    Standing::Older { newest } => AttemptResult::OlderCopy { lsn: g.lsn, newest },
                };
            }
        }
        Pending {
            ticket: Some(ticket),
            report,
            expect,
            candidates,
            eligible: groups.into_iter().filter(Group::eligible).collect(),
            newest,
        }
    }

    /// Steps 5 to 7: commits the best copy (or takes the result of its batch
    /// commit as `first`), then the next copies, then the fallbacks, and
    /// abandons the ticket when nothing could be written.
    fn settle<'d>(&'d self, mut p: Pending<'d>, first: Option<CommitResult<'d>>) -> RepairReport {
        let page = p.report.page;
        debug_assert_eq!(first.is_some(), p.ticket.is_none());
        let mut first = first;
        for gi in 0..p.eligible.len() {
            let g = &p.eligible[gi];
            let lead = &p.candidates[g.members[0]];
            let result = match first.take() {
                Some(r) => r,
                None => self.detector.commit_verified_repair(
                    p.ticket.take().expect("held between commits"),
                    lead.copy
                        .as_ref()
                        .expect("the lead copy of an eligible group is kept"),
                ),
            };
            match result {
                Ok(commit) => {
                    // Copies of other groups lost the vote only if a copy was
                    // written; a superseded repair decided nothing.
                    if commit == Commit::Written {
                        for later in &p.eligible[gi + 1..] {
                            for &m in &later.members {
                                p.report.attempts[p.candidates[m].attempt].result =
                                    AttemptResult::LostVote {
                                        votes: later.votes(),
                                        winner_votes: g.votes(),
                                    };
                            }
                        }
                    }
                    p.report.outcome = match commit {
                        Commit::Written => {
                            let entry = &lead.replica;
                            entry.stats.used.fetch_add(1, Ordering::Relaxed);
                            RepairOutcome::Repaired {
                                source: CopySource::Replica(entry.id.clone()),
                            }
                        }
                        Commit::Superseded => RepairOutcome::Superseded,
                    };
                    return p.report;
                }
                Err((back, e)) => {
                    tracing::warn!(%page, error = %e, "writing a verified replica copy failed");
                    let reason = e.to_string();
                    p.report.attempts[lead.attempt].result = AttemptResult::CommitFailed(e);
                    for &m in &g.members[1..] {
                        p.report.attempts[p.candidates[m].attempt].result =
                            AttemptResult::CommitFailed(Error::Irreparable {
                                page,
                                reason: format!("an identical copy failed to commit: {reason}"),
                            });
                    }
                    p.ticket = Some(back);
                }
            }
        }
        let mut ticket = p.ticket.take().expect("held after the replica copies");

        // A fallback copy must not be older than the page must be, nor older
        // than a verified replica copy that could not be written; with the
        // last write known exactly, it must carry that write's LSN.
        let floor = p.expect.floor().max(p.newest);
        let ps = self.detector.store().page_size();
        let fallbacks: Vec<FallbackEntry> = self.fallbacks.read().clone();
        for fb in fallbacks {
            let source = CopySource::Fallback(fb.name.clone());
            let result = match fb.reader.read(page, floor, ps) {
                Ok(None) => AttemptResult::NoCopy,
                Err(f) => {
                    fb.stats.count_failure(&f);
                    AttemptResult::Unavailable(f.error)
                }
                Ok(Some(buf)) => {
                    fb.stats.fetched.fetch_add(1, Ordering::Relaxed);
                    p.report.bytes_fetched += ps as u64;
                    let lsn = self.detector.page_lsn_of(&buf);
                    let verified = self.detector.verify(page, &buf);
                    let counter = match verified {
                        Ok(()) => &fb.stats.verified,
                        Err(_) => &fb.stats.rejected,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    match verified.map(|()| admit(lsn, p.expect)) {
                        Err(e) => AttemptResult::FailedVerification(e),
                        Ok(Err(written)) => AttemptResult::NotLastWrite { lsn, written },
                        Ok(Ok(())) if p.newest.is_some_and(|n| lsn < Some(n)) => {
                            AttemptResult::OlderCopy {
                                lsn,
                                newest: p.newest.expect("checked"),
                            }
                        }
                        Ok(Ok(())) => match self.detector.commit_repair(ticket, &buf) {
                            Ok(commit) => {
                                p.report.attempts.push(Attempt {
                                    source: source.clone(),
                                    result: AttemptResult::Verified,
                                });
                                p.report.outcome = match commit {
                                    Commit::Written => {
                                        fb.stats.used.fetch_add(1, Ordering::Relaxed);
                                        RepairOutcome::Repaired { source }
                                    }
                                    Commit::Superseded => RepairOutcome::Superseded,
                                };
                                return p.report;
                            }
                            Err((back, e)) => {
                                ticket = back;
                                AttemptResult::CommitFailed(e)
                            }
                        },
                    }
                }
            };
            p.report.attempts.push(Attempt { source, result });
        }

        let mut reason = irreparable_reason(&p.report.attempts);
        if !self.detector.abandon_repair(ticket) {
            // The host rewrote the page while every source was failing.
            p.report.outcome = RepairOutcome::Superseded;
            return p.report;
        }
        // The ticket is given back: a rebuild takes its own.
        let tried = self.has_rebuilder();
        match self.try_rebuild(page) {
            // Taken only when the detector agrees the page was repaired:
            // the rebuilder's write went through its repair protocol
            // (synced, re-read, re-verified), which is the `Repaired`
            // contract.
            Ok(Some(replica)) if self.detector.page_state(page) == Some(PageState::Repaired) => {
                let source = CopySource::Rebuilt(replica);
                p.report.attempts.push(Attempt {
                    source: source.clone(),
                    result: AttemptResult::Verified,
                });
                self.stats.by_rebuild.fetch_add(1, Ordering::Relaxed);
                p.report.outcome = RepairOutcome::Repaired { source };
                return p.report;
            }
            Ok(Some(replica)) => {
                reason = format!(
                    "{reason}; a rebuild from replica {replica} was reported, but the detector does not hold the page repaired"
                );
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%page, error = %e, "page not rebuilt");
                reason = format!("{reason}; not rebuilt: {e}");
            }
        }
        // The rebuild took time, and one that failed may have left the page
        // suspect: the verdict is taken again, as the first was.
        if !tried {
            // No rebuild: the verdict stands as abandoned above.
        } else if let Some(again) = self.detector.begin_repair(page) {
            if !self.detector.abandon_repair(again) {
                p.report.outcome = RepairOutcome::Superseded;
                return p.report;
            }
        } else {
            p.report.outcome = match self.detector.page_state(page) {
                // Another repair took the page meanwhile.
                Some(PageState::Repairing) => RepairOutcome::InProgress,
                // Still irreparable (no rebuild was tried), as abandoned above.
                Some(PageState::Irreparable) => RepairOutcome::Irreparable {
                    reason: reason.clone(),
                },
                // Not fenced any more: the host's write replaced it.
                _ => RepairOutcome::Superseded,
            };
            if !matches!(p.report.outcome, RepairOutcome::Irreparable { .. }) {
                return p.report;
            }
        }
        tracing::error!(%page, %reason, "page is irreparable");
        self.sink.send(Failure::new(
            Source::DataRepairer,
            FailureKind::IrreparablePage { page },
            format!("page {page} is irreparable: {reason}"),
            self.clock.now_ns(),
        ));
        p.report.outcome = RepairOutcome::Irreparable { reason };
        p.report
    }
}

fn irreparable_reason(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "no replica or fallback source is registered".into();
    }
    let parts: Vec<String> = attempts
        .iter()
        .map(|a| {
            let what = match &a.result {
                AttemptResult::Verified => "verified".to_owned(),
                AttemptResult::LostVote {
                    votes,
                    winner_votes,
                } => format!("lost the vote {votes} to {winner_votes}"),
                AttemptResult::NoMajority { votes, of } => {
                    format!("no majority ({votes} of {of} copies at the newest LSN agree)")
                }
                AttemptResult::OlderCopy { lsn, newest } => match lsn {
                    Some(l) => format!("copy has LSN {l}, older than the newest copy's {newest}"),
                    None => format!("copy has no readable LSN; the newest copy has {newest}"),
                },
                AttemptResult::NotLastWrite { lsn, written } => match lsn {
                    Some(l) => format!(
                        "copy has LSN {l}, but the page's last write has {written} \
                         (a newer copy is a write rolled back or replaced since)"
                    ),
                    None => {
                        format!("copy has no readable LSN; the page's last write has {written}")
                    }
                },
                AttemptResult::FailedVerification(e) => format!("copy failed verification: {e}"),
                AttemptResult::Unavailable(e) => format!("unavailable: {e}"),
                AttemptResult::Stale { applied, needed } => {
                    format!("behind (applied LSN {applied}, needed {needed})")
                }
                AttemptResult::NoCopy => "has no copy new enough".to_owned(),
                AttemptResult::CommitFailed(e) => format!("writing its copy failed: {e}"),
            };
            format!("{}: {what}", a.source)
        })
        .collect();
    parts.join("; ")
}
