//! The read-failure hook: what a verified read does when the page fails
//! verification and an owner of the detector (the recovery manager) can
//! heal it on the reader's thread.
//!
//! The hook is set once, after the detector is built (its owner needs the
//! detector to build what heals). A read that fails verification hands the
//! hook the page and the failure it would have reported; the hook either
//! takes the failure (and says whether the page may be read again) or gives
//! it back to be reported on the bus as without a hook.
//!
//! # Contract
//! - **No re-entrancy.** While a hook runs on a thread — and on a thread
//!   that runs [`without_read_hook`] — verified reads on that thread do not
//!   call the hook: a read inside a remedy (a repair's re-read, a
//!   verification) reports as without a hook, and cannot wait for itself.
//! - **The reader never gets bad bytes.** After a hook that says the page
//!   may be read again, the read is done again, verified, without the hook;
//!   its result is the read's.

use std::cell::Cell;
use std::sync::Arc;

use crate::types::{Failure, PageId};

/// What the hook did with a failed read.
#[derive(Debug)]
pub(crate) enum ReadHeal {
    /// Not taken: the failure (if any) is reported on the bus as usual.
    Declined(Option<Failure>),
    /// Taken, and the page may now verify: read it again.
    ReadAgain,
    /// Taken and not healed: the read returns its error.
    Unhealed,
}

/// Called by a verified read whose page failed verification: the page,
/// and the failure to report when the read produced a new report (`None`
/// when the page was already known bad).
pub(crate) type ReadFailureFn = Arc<dyn Fn(PageId, Option<Failure>) -> ReadHeal + Send + Sync>;

thread_local! {
    static SUPPRESSED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the hook may be called on this thread now.
pub(crate) fn hook_allowed() -> bool {
    !SUPPRESSED.with(Cell::get)
}

/// Runs `f` with the read hook off on this thread (restored after, also on
/// a panic's unwinding).
pub(crate) fn without_read_hook<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SUPPRESSED.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SUPPRESSED.with(|s| s.replace(true)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_is_off_inside_and_restored_after_even_on_a_panic() {
        assert!(hook_allowed());
        without_read_hook(|| {
            assert!(!hook_allowed());
            without_read_hook(|| assert!(!hook_allowed()));
            assert!(!hook_allowed(), "a nested scope restores what it found");
        });
        assert!(hook_allowed());
        let r = std::panic::catch_unwind(|| without_read_hook(|| panic!("in a remedy")));
        assert!(r.is_err());
        assert!(hook_allowed(), "restored while unwinding");
    }
}
