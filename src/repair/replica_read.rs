//! Calls into a replica — its status, page reads, range digests — each with
//! a deadline, on the replica's helper thread (`selfheal-replica-read`; see
//! the [courier](super::courier) for the contract: a call that misses the
//! deadline or panics makes the replica unavailable for its cool-off and for
//! as long as the abandoned call has not returned, so at most one abandoned
//! call per replica is ever running).
//!
//! A batch repair reads its pages as one job, a *stream*: the helper reads
//! ahead and sends each answer as it comes, so a batch costs one hand-over
//! between threads instead of one per page, and the deadline applies to each
//! answer the repairer waits for. A status is asked of every replica at once
//! ([`ReplicaReader::ask_status`]) and the answers are awaited with one shared
//! deadline, so a survey of hung replicas costs one deadline, not one each.
//! A *probe* ([`ReplicaReader::probe`]) asks for the status and, when the
//! status allows it, reads a page right after in the same job: one hand-over
//! instead of two, and the copies of several replicas are read concurrently.

use std::collections::VecDeque;
use std::sync::Arc;

use super::courier::{Call, CallFailure, Courier, Deadline, Limits, Miss, Target};
use super::plan::skip;
use crate::error::Result;
use crate::host::{Replica, ReplicaStatus};
use crate::types::{Lsn, PageId, ReplicaId};

/// The answer of one page read: the page, the replica's result, the bytes.
type PageAnswer = (PageId, Result<()>, Vec<u8>);

/// What a status call answers: the status first, then, for a probe whose
/// status allowed the read, the copy.
enum Probe {
    Status(ReplicaStatus),
    Copy(PageAnswer),
}

/// The answers of one stream of page reads, taken page by page in the
/// stream's order. Dropping it cancels the reads not yet started.
pub(crate) struct Stream {
    call: Call<PageAnswer>,
    /// Pages whose answers have not been taken yet, in order.
    expected: VecDeque<PageId>,
    /// The job ended early (a read missed its deadline or panicked).
    broken: bool,
}

/// A status asked for, and maybe a copy read right after it. Dropping it
/// cancels the read if it has not started.
pub(crate) struct StatusCall {
    call: Call<Probe>,
    /// The page read after the status, until its copy is taken.
    page: Option<PageId>,
}

/// The calls into one replica.
pub(crate) struct ReplicaReader {
    courier: Courier<dyn Replica>,
}

impl ReplicaReader {
    /// The calls into `replica`; with `inline` (the replica
    /// [may be called inline](Replica::may_call_inline)) on the caller's
    /// thread, without a helper and without a deadline.
    pub(crate) fn new(
        id: ReplicaId,
        replica: Arc<dyn Replica>,
        limits: Limits,
        inline: bool,
    ) -> Self {
        ReplicaReader {
            courier: Courier::new(
                Target::Replica(id),
                "selfheal-replica-read",
                limits,
                replica,
            )
            .run_inline(inline),
        }
    }

    /// The failure reported for a replica that is not called because of `reason`.
    pub(crate) fn refused(&self, reason: String) -> CallFailure {
        self.courier.failure(reason, Miss::Refused)
    }

    /// Whether its calls run on the caller's thread (a replica that
    /// [may be called inline](Replica::may_call_inline)).
    pub(crate) fn is_inline(&self) -> bool {
        self.courier.is_inline()
    }

    /// Asks for the replica's status and returns at once; the answer is
    /// taken with [`status`](Self::status).
    ///
    /// # Errors
    /// A `Refused` failure when the replica is hung, cooling off or busy.
    pub(crate) fn ask_status(&self) -> std::result::Result<StatusCall, CallFailure> {
        let call = self.courier.call(1, |replica, reply| {
            reply.send(Probe::Status(replica.status()));
        })?;
        Ok(StatusCall { call, page: None })
    }

    /// Asks for the replica's status and, in the same job, reads `page`
    /// (`page_size` bytes) unless the status says it cannot serve reads or
    /// is behind `needed`; returns at once. The status is taken with
    /// [`status`](Self::status), the copy with [`take_copy`](Self::take_copy).
    ///
    /// # Errors
    /// As [`ask_status`](Self::ask_status).
    pub(crate) fn probe(
        &self,
        page: PageId,
        page_size: usize,
        needed: Option<Lsn>,
    ) -> std::result::Result<StatusCall, CallFailure> {
        let call = self.courier.call(2, move |replica, reply| {
            let status = replica.status();
            if !reply.send(Probe::Status(status)) || skip(&status, needed).is_some() {
                return;
            }
            if reply.wanted() {
                let mut buf = vec![0u8; page_size];
                let result = replica.read_page(page, &mut buf);
                reply.send(Probe::Copy((page, result, buf)));
            }
        })?;
        Ok(StatusCall {
            call,
            page: Some(page),
        })
    }

    /// The status asked for with `call`, waiting until `deadline` at most.
    ///
    /// # Errors
    /// As [`Courier::wait`].
    pub(crate) fn status(
        &self,
        call: &mut StatusCall,
        deadline: Deadline,
    ) -> std::result::Result<ReplicaStatus, CallFailure> {
        match self
            .courier
            .wait(&mut call.call, deadline, &|| "status".into())?
        {
            Probe::Status(status) => Ok(status),
            Probe::Copy(_) => {
                debug_assert!(false, "a status call answers its status first");
                Err(self.refused("its helper answered out of order".into()))
            }
        }
    }

    /// The copy of `page` that `call` read after the status, waiting for the
    /// deadline at most. `None` when `call` did not read `page` (not a probe
    /// of it, its copy already taken, or the status said not to read): the
    /// caller reads it on its own then.
    pub(crate) fn take_copy(
        &self,
        call: &mut StatusCall,
        page: PageId,
    ) -> Option<std::result::Result<Vec<u8>, CallFailure>> {
        if call.page != Some(page) {
            return None;
        }
        call.page = None;
        let deadline = self.courier.limits().deadline();
        let what = || format!("read of page {page}");
        match self.courier.wait(&mut call.call, deadline, &what) {
            Ok(Probe::Copy((p, result, buf))) => {
                debug_assert_eq!(p, page);
                Some(result.map(|()| buf).map_err(|error| CallFailure {
                    error,
                    miss: Miss::Failed,
                }))
            }
            Ok(Probe::Status(_)) => None,
            // The job ended without reading: the status said not to.
            Err(f) if f.miss == Miss::Refused => None,
            Err(f) => Some(Err(f)),
        }
    }

    /// The replica's status, waiting for the deadline at most.
    ///
    /// # Errors
    /// As [`ask_status`](Self::ask_status) and [`status`](Self::status).
    pub(crate) fn status_now(&self) -> std::result::Result<ReplicaStatus, CallFailure> {
        let mut call = self.ask_status()?;
        self.status(&mut call, self.courier.limits().deadline())
    }

    /// The replica's digest of pages `first .. first + count`, waiting for
    /// the deadline at most.
    ///
    /// # Errors
    /// The replica's error (`Failed`), or as [`Courier::wait`].
    pub(crate) fn range_digest(
        &self,
        first: PageId,
        count: u64,
    ) -> std::result::Result<u64, CallFailure> {
        let mut call = self.courier.call(1, move |replica, reply| {
            if reply.wanted() {
                reply.send(replica.range_digest(first, count));
            }
        })?;
        let deadline = self.courier.limits().deadline();
        let what = || format!("range digest of pages {first}..+{count}");
        match self.courier.wait(&mut call, deadline, &what)? {
            Ok(digest) => Ok(digest),
            Err(error) => Err(CallFailure {
                error,
                miss: Miss::Failed,
            }),
        }
    }

    /// Reads `page` (`page_size` bytes), waiting for the deadline at most.
    ///
    /// # Errors
    /// The replica's error (`Failed`), or `ReplicaUnavailable` when it is
    /// hung, cooling off, busy, missed the deadline or panicked.
    pub(crate) fn read(
        &self,
        page: PageId,
        page_size: usize,
    ) -> std::result::Result<Vec<u8>, CallFailure> {
        let mut stream = self.stream(vec![page], page_size)?;
        self.take(&mut stream, page).unwrap_or_else(|| {
            Err(self.refused(format!(
                "its read helper ended without answering the read of page {page}"
            )))
        })
    }

    /// Queues reads of `pages` (in this order) as one job and returns at
    /// once; the answers are taken with [`take`](Self::take).
    ///
    /// # Errors
    /// `ReplicaUnavailable` when the replica is hung, cooling off or busy, or
    /// its helper cannot be started.
    pub(crate) fn stream(
        &self,
        pages: Vec<PageId>,
        page_size: usize,
    ) -> std::result::Result<Stream, CallFailure> {
        let expected = pages.iter().copied().collect();
        let call = self.courier.call(pages.len(), move |replica, reply| {
            for page in pages {
                if !reply.wanted() {
                    return;
                }
                let mut buf = vec![0u8; page_size];
                let result = replica.read_page(page, &mut buf);
                if !reply.send((page, result, buf)) {
                    return;
                }
            }
        })?;
        Ok(Stream {
            call,
            expected,
            broken: false,
        })
    }

    /// Takes the answer for `page` from `stream`, discarding answers for
    /// pages before it, waiting for the deadline at most for each. A wait for
    /// an earlier page that misses the deadline, or an earlier read that
    /// panicked, is this page's answer too (the replica failed it). `None`
    /// when the stream holds no answer for `page` (not asked, or the job
    /// ended early): the caller reads it on its own then.
    pub(crate) fn take(
        &self,
        stream: &mut Stream,
        page: PageId,
    ) -> Option<std::result::Result<Vec<u8>, CallFailure>> {
        if stream.broken || !stream.expected.contains(&page) {
            return None;
        }
        loop {
            let next = stream.expected.pop_front()?;
            let deadline = self.courier.limits().deadline();
            let what = || format!("read of page {next}");
            let answer = match self.courier.wait(&mut stream.call, deadline, &what) {
                Ok((p, result, buf)) => {
                    debug_assert_eq!(p, next, "answers come in the job's order");
                    result.map(|()| buf).map_err(|error| CallFailure {
                        error,
                        miss: Miss::Failed,
                    })
                }
                Err(f) if f.miss == Miss::Refused => {
                    // The job ended early; its last answer said why.
                    stream.broken = true;
                    return None;
                }
                Err(f) => Err(f),
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

    /// Whether a call into the replica is hung (tests wait for it to return).
    #[cfg(test)]
    pub(crate) fn hung(&self) -> bool {
        self.courier.hung()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::{MemStore, StoreReplica};
    use crate::testing::{FaultyReplica, ReplicaCall};
    use crate::PageStore;
    use std::time::{Duration, Instant};

    const PS: usize = 64;
    const DEADLINE: Duration = Duration::from_millis(100);
    const COOLOFF: Duration = Duration::from_secs(10);

    fn replica() -> Arc<FaultyReplica> {
        let store = Arc::new(MemStore::new(PS, 4).unwrap());
        store.write_page(PageId(2), &[2u8; PS]).unwrap();
        Arc::new(FaultyReplica::new(Arc::new(StoreReplica::new("r", store))))
    }

    fn reader(r: &Arc<FaultyReplica>, timeout: Duration) -> (ReplicaReader, ManualClock) {
        let clock = ManualClock::new();
        let limits = Limits {
            timeout,
            cooloff: COOLOFF,
            clock: Arc::new(clock.clone()),
        };
        (
            ReplicaReader::new(ReplicaId::new("r"), r.clone(), limits, false),
            clock,
        )
    }

    #[test]
    fn a_hung_read_is_abandoned_and_blocks_every_call_until_it_returns() {
        let r = replica();
        let (reader, clock) = reader(&r, DEADLINE);
        r.set_hang(true);
        let miss = reader.read(PageId(2), PS).unwrap_err();
        assert!(miss.timed_out());
        assert!(
            miss.error.to_string().contains("read of page 2 within"),
            "{}",
            miss.error
        );
        clock.advance(COOLOFF * 2);
        // Neither a status nor a digest is asked of a replica with a hung read.
        assert!(reader.status_now().is_err());
        assert!(reader.range_digest(PageId(0), 4).is_err());
        assert_eq!(r.calls(ReplicaCall::Status), 0);
        assert_eq!(r.calls(ReplicaCall::Digest), 0);
        r.set_hang(false);
        while reader.hung() {
            std::thread::yield_now();
        }
        assert_eq!(reader.read(PageId(2), PS).unwrap(), vec![2u8; PS]);
        assert!(reader.status_now().unwrap().available);
    }

    #[test]
    fn a_hung_status_or_digest_misses_its_deadline_and_cools_off() {
        for call in [ReplicaCall::Status, ReplicaCall::Digest] {
            let r = replica();
            let (reader, clock) = reader(&r, DEADLINE);
            r.set_hang_on(call, true);
            let started = Instant::now();
            let miss = match call {
                ReplicaCall::Status => reader.status_now().unwrap_err(),
                _ => reader.range_digest(PageId(0), 4).unwrap_err(),
            };
            assert!(started.elapsed() >= DEADLINE);
            assert!(miss.timed_out(), "{call:?}: {}", miss.error);
            assert!(miss.error.is_retryable());
            // Reads are refused while it hangs, and during the cool-off.
            assert_eq!(reader.read(PageId(2), PS).unwrap_err().miss, Miss::Refused);
            r.set_hang_on(call, false);
            while reader.hung() {
                std::thread::yield_now();
            }
            assert!(reader.read(PageId(2), PS).is_err(), "cooling off");
            clock.advance(COOLOFF);
            assert_eq!(reader.read(PageId(2), PS).unwrap(), vec![2u8; PS]);
            assert_eq!(r.calls(call), 1);
        }
    }

    #[test]
    fn statuses_asked_at_once_share_one_deadline() {
        // Four hung replicas: waited for one after another, their deadlines
        // would add up to 4 × `wait`; shared, the wait is one. The bound is
        // "less than four" so that a loaded machine's delays (which add, they
        // do not multiply) do not fail it.
        const REPLICAS: u32 = 4;
        let wait = Duration::from_millis(250);
        let replicas: Vec<Arc<FaultyReplica>> = (0..REPLICAS).map(|_| replica()).collect();
        let readers: Vec<ReplicaReader> = replicas.iter().map(|r| reader(r, wait).0).collect();
        for r in &replicas {
            r.set_hang_on(ReplicaCall::Status, true);
        }
        let started = Instant::now();
        let calls: Vec<StatusCall> = readers.iter().map(|r| r.ask_status().unwrap()).collect();
        let deadline = Deadline::after(wait);
        for (reader, mut call) in readers.iter().zip(calls) {
            assert!(reader.status(&mut call, deadline).unwrap_err().timed_out());
        }
        let took = started.elapsed();
        assert!(took >= wait && took < wait * REPLICAS, "{took:?}");
        for r in &replicas {
            r.set_hang_on(ReplicaCall::Status, false);
        }
    }

    #[test]
    fn a_read_error_answers_at_once_and_does_not_cool_off() {
        let r = replica();
        let (reader, _) = reader(&r, DEADLINE);
        r.set_down(true);
        let miss = reader.read(PageId(1), PS).unwrap_err();
        assert_eq!(miss.miss, Miss::Failed);
        assert!(
            miss.error.to_string().contains("injected"),
            "{}",
            miss.error
        );
        assert!(reader.courier.unavailable_reason().is_none());
    }

    #[test]
    fn a_stream_skips_earlier_answers_and_a_panic_ends_it() {
        let r = replica();
        let (reader, _) = reader(&r, Duration::from_secs(60));
        let mut stream = reader
            .stream(vec![PageId(0), PageId(1), PageId(2)], PS)
            .unwrap();
        assert_eq!(
            reader.take(&mut stream, PageId(2)).unwrap().unwrap(),
            vec![2u8; PS],
            "earlier answers are skipped"
        );
        assert!(reader.take(&mut stream, PageId(1)).is_none());
        drop(stream);
        r.set_panic(true);
        let mut stream = reader.stream(vec![PageId(0), PageId(1)], PS).unwrap();
        let miss = reader.take(&mut stream, PageId(1)).unwrap().unwrap_err();
        assert_eq!(miss.miss, Miss::Panicked);
        assert!(
            miss.error.to_string().contains("read of page 0 panicked"),
            "{}",
            miss.error
        );
        assert_eq!(r.reads(), 4, "the rest of the job was not read");
    }

    #[test]
    fn a_probe_reads_after_the_status_only_when_the_status_allows_it() {
        let r = replica();
        let (reader, _) = reader(&r, DEADLINE);
        let mut call = reader.probe(PageId(2), PS, None).unwrap();
        assert!(
            reader
                .status(&mut call, Deadline::after(DEADLINE))
                .unwrap()
                .available
        );
        assert!(
            reader.take_copy(&mut call, PageId(1)).is_none(),
            "not this page"
        );
        assert_eq!(
            reader.take_copy(&mut call, PageId(2)).unwrap().unwrap(),
            vec![2u8; PS]
        );
        assert!(
            reader.take_copy(&mut call, PageId(2)).is_none(),
            "taken once"
        );
        assert_eq!(r.reads(), 1);
        // Behind the LSN the page needs: the status answers, nothing is read.
        r.set_lag(crate::host::ReplicaLag {
            applied_lsn: Some(Lsn(4)),
            behind: None,
        });
        let mut call = reader.probe(PageId(2), PS, Some(Lsn(5))).unwrap();
        reader.status(&mut call, Deadline::after(DEADLINE)).unwrap();
        assert!(reader.take_copy(&mut call, PageId(2)).is_none());
        r.set_down(true);
        let mut call = reader.probe(PageId(2), PS, None).unwrap();
        assert!(
            !reader
                .status(&mut call, Deadline::after(DEADLINE))
                .unwrap()
                .available
        );
        assert!(reader.take_copy(&mut call, PageId(2)).is_none());
        assert_eq!(r.reads(), 1, "a replica that may not be read is not read");
    }

    #[test]
    fn a_probe_whose_read_hangs_after_the_status_costs_one_deadline() {
        let r = replica();
        let (reader, _) = reader(&r, DEADLINE);
        r.set_hang(true);
        let mut call = reader.probe(PageId(2), PS, None).unwrap();
        assert!(reader.status(&mut call, Deadline::after(DEADLINE)).is_ok());
        let miss = reader.take_copy(&mut call, PageId(2)).unwrap().unwrap_err();
        assert!(miss.timed_out(), "{}", miss.error);
        assert!(reader.hung());
        r.set_hang(false);
    }

    #[test]
    fn an_unwanted_probe_read_that_hangs_is_taken_over_by_the_next_call() {
        let r = replica();
        let (reader, _) = reader(&r, DEADLINE);
        r.set_hang(true);
        let mut call = reader.probe(PageId(2), PS, None).unwrap();
        assert!(reader.status(&mut call, Deadline::after(DEADLINE)).is_ok());
        while r.hung_reads() == 0 {
            std::thread::yield_now();
        }
        // Nobody waits for the copy: dropping the call does not mark a hang.
        drop(call);
        assert!(!reader.hung());
        // The next call misses its deadline behind it and marks the replica
        // hung: later calls are refused at once until the read returns.
        assert!(reader.status_now().unwrap_err().timed_out());
        assert!(reader.hung());
        let started = Instant::now();
        assert_eq!(reader.status_now().unwrap_err().miss, Miss::Refused);
        assert!(started.elapsed() < DEADLINE);
        r.set_hang(false);
        while reader.hung() {
            std::thread::yield_now();
        }
        assert_eq!(r.reads(), 1);
    }
}
