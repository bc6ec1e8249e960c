//! The built-in remedies, wired to the library's components and the host's
//! actions.
//!
//! [`defaults`] is the set a [`SelfHealer`](crate::healer::SelfHealer)
//! starts with, in their cold-start order. The remedies that need the
//! host's own names and values ([`ResizePool`], [`FailOver`],
//! [`RebuildIndex`]) are registered by the host.

mod checksum_log;
mod host;
mod journal;
pub(crate) mod page;
mod space;
pub(crate) mod txn;

use std::sync::Arc;

pub use checksum_log::ResumeChecksumLog;
pub use host::{
    ClearCaches, FailOver, FreeDiskSpace, RebuildIndex, ResizePool, RestartComponent, ShedLoad,
    TakeSnapshot,
};
pub use journal::ResumeJournal;
pub use page::{RepairFromReplicas, Rescan, RestorePageFromSnapshot};
pub use space::{TargetedScrub, TrimSnapshots};
pub use txn::{BreakDeadlock, RollbackCrashLosers, RollbackTransaction};

use super::remedy::Remedy;

/// The default remedies, in cold-start order: for a page, repair from
/// replicas, then restore from the snapshot head, then an error-only
/// rescan; then the transaction remedies, the journal's and the checksum log's
/// resumes, the
/// snapshot and host-action remedies; for a
/// disk filling up, trimming snapshots before asking the host for space;
/// for rising read errors, a targeted scrub.
#[must_use]
pub fn defaults() -> Vec<Arc<dyn Remedy>> {
    vec![
        Arc::new(RepairFromReplicas),
        Arc::new(RestorePageFromSnapshot),
        Arc::new(Rescan),
        Arc::new(BreakDeadlock),
        Arc::new(RollbackTransaction),
        Arc::new(RollbackCrashLosers),
        Arc::new(ResumeJournal::default()),
        Arc::new(ResumeChecksumLog::default()),
        Arc::new(TakeSnapshot),
        Arc::new(RestartComponent),
        Arc::new(ClearCaches),
        Arc::new(ShedLoad::default()),
        Arc::new(TrimSnapshots::default()),
        Arc::new(FreeDiskSpace::default()),
        Arc::new(TargetedScrub),
    ]
}
