//! # selfheal
//!
//! Self-healing for embedded storage engines. A host database implements a few
//! small traits over its own pages and replicas ([`PageStore`], [`Replica`],
//! [`HostActions`]) and gets page checksums verified on every read, paced
//! background scrubbing, and repair of corrupt pages from verified replica
//! copies.
//!
//! ```
//! use std::sync::Arc;
//! use selfheal::{ChecksumPlacement, DetectorConfig, MemStore, PageId, PageStore};
//!
//! // The host's pages (here in memory) and a checksum trailer in each page.
//! let store = Arc::new(MemStore::new(4096, 64)?);
//! let detector = DetectorConfig::new(ChecksumPlacement::Trailer).build(store.clone())?;
//!
//! let mut page = vec![0xAB; 4096];
//! detector.write_sealed(PageId(7), &mut page)?;
//! let mut buf = vec![0u8; 4096];
//! detector.read_verified(PageId(7), &mut buf)?;
//! assert_eq!(buf[0], 0xAB);
//! # Ok::<(), selfheal::Error>(())
//! ```
//!
//! See `ARCHITECTURE.md` for how a fault travels through the components, and
//! each module for its on-disk format and contracts.

#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod checksum;
mod clock;
pub mod corruption;
mod error;
mod fsutil;
mod host;
pub mod repair;
// ---- rollback ----
pub mod rollback;

// ---- crash detection ----
pub mod crash;

// ---- snapshots ----
pub mod snapshot;

// ---- health ----
pub mod health;

mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod types;

pub use checksum::{ChecksumPlacement, ChecksumTable};
pub use clock::{Clock, ManualClock, SystemClock};
pub use corruption::scrub::{
    Pace, Pacer, ScanSummary, ScrubConfig, ScrubHandle, ScrubMode, ScrubProgress, ScrubRate,
    ScrubState, ScrubStep, Scrubber,
};
pub use corruption::{CorruptionDetector, DetectorConfig};
pub use error::{Error, Result};
pub use host::{HostActions, PageSource, PageStore, Replica, ReplicaLag, ReplicaStatus};
pub use repair::{DataRepairer, RepairConfig};
pub use store::{FileStore, MemStore, StoreReplica};
// ---- re-exports: rollback ----
pub use rollback::{
    PageWriter, RawPages, RecoveryReport, RollbackConfig, RollbackStats,
    TransactionRollbackManager, TxnId,
};

// ---- re-exports: crash detection ----
pub use crash::{
    CrashDetector, CrashDetectorConfig, CrashEvent, HeartbeatConfig, HeartbeatHandle, RunMarker,
    RunVerdict,
};

// ---- re-exports: snapshots ----
pub use snapshot::{SnapshotConfig, SnapshotPageSource, StateSnapshotManager};

// ---- re-exports: health ----
pub use health::{
    Band, HealthConfig, HealthModel, HealthMonitor, HealthProbe, SampleOutcome, Thresholds,
};

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use types::{Failure, FailureKind, FailureSink, Lsn, PageId, Priority, ReplicaId, Target};
