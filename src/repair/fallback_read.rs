//! Reads from a fallback [`PageSource`] with a deadline, on the source's
//! helper thread (`selfheal-fallback-read`; see the [courier](super::courier)
//! for the contract: a read that misses the deadline or panics makes the
//! source unavailable for its cool-off and for as long as the abandoned read
//! has not returned, so at most one abandoned read per source is ever
//! running).

use std::sync::Arc;

use super::courier::{CallFailure, Courier, Limits, Miss, Target};
use crate::host::PageSource;
use crate::types::{Lsn, PageId};

/// The reads of one fallback source.
pub(crate) struct FallbackReader {
    courier: Courier<dyn PageSource>,
}

impl FallbackReader {
    /// A reader of `source`, known in reports as `name`.
    pub(crate) fn new(name: String, source: Arc<dyn PageSource>, limits: Limits) -> Self {
        FallbackReader {
            courier: Courier::new(
                Target::Fallback(name),
                "selfheal-fallback-read",
                limits,
                source,
            ),
        }
    }

    /// The source's copy of `page` (`page_size` bytes) not older than
    /// `not_older_than`, or `None` when it has none, waiting for the deadline
    /// at most.
    ///
    /// # Errors
    /// The source's error (`Failed`), or an `Error::Host` saying it is
    /// unavailable when it is hung, cooling off, busy, missed the deadline or
    /// panicked.
    pub(crate) fn read(
        &self,
        page: PageId,
        not_older_than: Option<Lsn>,
        page_size: usize,
    ) -> std::result::Result<Option<Vec<u8>>, CallFailure> {
        let mut call = self.courier.call(1, move |source, reply| {
            if reply.wanted() {
                let mut buf = vec![0u8; page_size];
                let found = source.read_page(page, not_older_than, &mut buf);
                reply.send(found.map(|has| has.then_some(buf)));
            }
        })?;
        let deadline = self.courier.limits().deadline();
        let what = || format!("read of page {page}");
        self.courier
            .wait(&mut call, deadline, &what)?
            .map_err(|error| CallFailure {
                error,
                miss: Miss::Failed,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::error::Result;
    use crate::testing::FaultySource;
    use std::time::{Duration, Instant};

    const PS: usize = 64;
    const DEADLINE: Duration = Duration::from_millis(100);
    const COOLOFF: Duration = Duration::from_secs(10);

    /// Has page 1 (at LSN 5) and nothing else.
    #[derive(Debug)]
    struct OnePage;

    impl PageSource for OnePage {
        fn name(&self) -> String {
            "one".into()
        }
        fn read_page(
            &self,
            page: PageId,
            not_older_than: Option<Lsn>,
            buf: &mut [u8],
        ) -> Result<bool> {
            buf.fill(7);
            Ok(page == PageId(1) && not_older_than.is_none_or(|l| l <= Lsn(5)))
        }
    }

    fn reader(timeout: Duration) -> (Arc<FaultySource>, FallbackReader, ManualClock) {
        let source = Arc::new(FaultySource::new(Arc::new(OnePage)));
        let clock = ManualClock::new();
        let limits = Limits {
            timeout,
            cooloff: COOLOFF,
            clock: Arc::new(clock.clone()),
        };
        let r = FallbackReader::new("one".into(), source.clone(), limits);
        (source, r, clock)
    }

    #[test]
    fn answers_copy_or_none_as_the_source_does() {
        let (_, r, _) = reader(DEADLINE);
        assert_eq!(r.read(PageId(1), None, PS).unwrap(), Some(vec![7u8; PS]));
        assert_eq!(r.read(PageId(1), Some(Lsn(6)), PS).unwrap(), None);
        assert_eq!(r.read(PageId(2), None, PS).unwrap(), None);
    }

    #[test]
    fn a_hung_read_costs_one_deadline_and_the_source_is_not_asked_while_it_hangs() {
        let (source, r, clock) = reader(DEADLINE);
        source.set_hang(true);
        let started = Instant::now();
        let miss = r.read(PageId(1), None, PS).unwrap_err();
        assert!(started.elapsed() >= DEADLINE);
        assert!(miss.timed_out());
        assert!(miss.error.is_retryable());
        assert!(
            miss.error
                .to_string()
                .contains("fallback one is unavailable"),
            "{}",
            miss.error
        );
        clock.advance(COOLOFF);
        let refused = r.read(PageId(1), None, PS).unwrap_err();
        assert_eq!(refused.miss, Miss::Refused);
        assert_eq!(source.reads(), 1);
        source.set_hang(false);
        while r.courier.hung() {
            std::thread::yield_now();
        }
        assert!(r.read(PageId(1), None, PS).unwrap().is_some());
    }

    #[test]
    fn a_panicking_read_is_caught_and_cools_off() {
        // Generous: printing the panic's backtrace may take a while.
        let (source, r, clock) = reader(Duration::from_secs(60));
        source.set_panic(true);
        let miss = r.read(PageId(1), None, PS).unwrap_err();
        assert_eq!(miss.miss, Miss::Panicked);
        source.set_panic(false);
        assert_eq!(r.read(PageId(1), None, PS).unwrap_err().miss, Miss::Refused);
        clock.advance(COOLOFF);
        assert!(r.read(PageId(1), None, PS).unwrap().is_some());
    }
}
