//! What the writers that stall instead of poisoning share: which I/O
//! failures they can resume from, and the backoff between attempts.
//!
//! # Contract
//! - [`retryable`] says whether a failed write or fsync may succeed later:
//!   `ENOSPC` and `EDQUOT` (a full disk: `Some(true)`), `EIO`, `EINTR`,
//!   `EAGAIN` and the kinds interrupted, would-block, timed out, storage
//!   full, quota exceeded (`Some(false)`). Anything else (`EROFS`, a file
//!   deleted under the writer) is `None`: not retryable.
//! - [`backoff`] is `base · 2ⁿ⁻¹` after the `n`-th failed attempt, at most
//!   `cap`; [`full_jitter`] draws the actual wait uniformly from
//!   `[0, backoff]`, so writers that stalled together do not retry together.
//!   [`full_jitter_with`] draws it from a given source: a component given a
//!   seed draws from an rng seeded with it, so a run replays exactly.

use std::time::Duration;

use rand::Rng;

use crate::error::Error;

/// `Some(no_space)` when `e` is a failure a writer can resume from (see the
/// module docs); `None` when it is not retryable.
pub(crate) fn retryable(e: &Error) -> Option<bool> {
    use std::io::ErrorKind;
    let Error::Io { source, .. } = e else {
        return None;
    };
    match source.raw_os_error() {
        // ENOSPC, EDQUOT.
        Some(28 | 122) => Some(true),
        // EIO, EINTR, EAGAIN.
        Some(5 | 4 | 11) => Some(false),
        Some(_) => None,
        None => match source.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Some(true),
            ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut => Some(false),
            _ => None,
        },
    }
}

/// The wait after the `n`-th failed attempt (n ≥ 1; 0 counts as 1):
/// `base · 2ⁿ⁻¹`, at most `cap`.
pub(crate) fn backoff(n: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
    base.checked_mul(factor).map_or(cap, |d| d.min(cap))
}

/// A wait drawn uniformly from `[0, max]` ("full jitter"), from the
/// thread's entropy-seeded source.
pub(crate) fn full_jitter(max: Duration) -> Duration {
    full_jitter_with(max, &mut rand::rng())
}

/// A wait drawn uniformly from `[0, max]` from `rng` (a seeded one replays).
pub(crate) fn full_jitter_with(max: Duration, rng: &mut impl Rng) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        let io = |n| Error::io("x", std::io::Error::from_raw_os_error(n));
        assert_eq!(retryable(&io(28)), Some(true));
        assert_eq!(retryable(&io(122)), Some(true));
        assert_eq!(retryable(&io(5)), Some(false));
        assert_eq!(retryable(&io(11)), Some(false));
        assert_eq!(retryable(&io(30)), None, "EROFS");
        assert_eq!(retryable(&io(2)), None, "ENOENT");
        let kind = |k| Error::io("x", std::io::Error::from(k));
        assert_eq!(
            retryable(&kind(std::io::ErrorKind::StorageFull)),
            Some(true)
        );
        assert_eq!(retryable(&kind(std::io::ErrorKind::TimedOut)), Some(false));
        assert_eq!(retryable(&kind(std::io::ErrorKind::NotFound)), None);
        assert_eq!(
            retryable(&Error::Stopped {
                component: "x",
                reason: String::new()
            }),
            None
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_jitter_stays_below_it() {
        let (b, c) = (Duration::from_millis(100), Duration::from_secs(30));
        assert_eq!(backoff(1, b, c), b);
        assert_eq!(backoff(0, b, c), b);
        assert_eq!(backoff(4, b, c), b * 8);
        assert_eq!(backoff(20, b, c), c);
        assert_eq!(backoff(u32::MAX, b, c), c);
        for _ in 0..100 {
            assert!(full_jitter(b) <= b);
        }
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn seeded_jitter_replays_and_stays_below_the_bound() {
        use rand::SeedableRng;
        let b = Duration::from_secs(30);
        let draws = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            (0..32)
                .map(|_| full_jitter_with(b, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7), "one seed, one sequence");
        assert_ne!(draws(7), draws(8), "another seed, another sequence");
        assert!(draws(9).iter().all(|d| *d <= b));
    }
}
