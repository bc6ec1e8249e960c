//! # selfheal
//!
//! Self-healing for embedded storage engines. A host database implements a few
//! small traits over its own pages and replicas ([`PageStore`], [`Replica`],
//! [`PageSource`], [`HostActions`], [`HealthProbe`]) and gets:
//!
//! - [`CorruptionDetector`]: page checksums verified on every read and sealed
//!   on every write, corrupt pages fenced and reported once;
//! - [`Scrubber`]: a paced background scrub of the whole store, resumable
//!   after a restart when given a cursor file;
//! - [`DataRepairer`]: repair of corrupt pages from replica copies it verifies
//!   itself (the newest page LSN wins; votes break ties, a plurality or
//!   optionally a majority), fallback sources and Merkle anti-entropy;
//! - [`TransactionRollbackManager`]: before- and after-images in a durable
//!   undo journal, group commit, rollback of transactions left in flight by a
//!   crash (never over bytes they did not write), and deadlock detection;
//! - [`CrashDetector`]: lock-free heartbeats judged by timeout and phi
//!   accrual, process liveness by pid, and a run marker that tells a clean
//!   shutdown from a crash;
//! - [`StateSnapshotManager`]: full and incremental lz4-compressed snapshots
//!   with point-in-time restore, and single pages served to the repairer;
//! - [`HealthMonitor`]: scores, bands with hysteresis, and trend prediction
//!   that reports a failure before it happens.
//!
//! Every component reports [`Failure`]s — including its own troubles: a
//! worker thread that died, a poisoned journal, a failed snapshot — on one
//! bounded [`FailureSink`], with timestamps from one [`Clock`]. The
//! [`AutoRecoveryManager`] ([`recovery`]) owns them all on one bus and one
//! clock, runs startup recovery, and heals each failure through the
//! [`SelfHealer`](healer::SelfHealer) on a bounded incident queue; a host may
//! also drive the components itself. Each component is made by its
//! configuration's `build`, begins background work with `start` and ends it
//! with a bounded `stop`; background work runs on named threads, and nothing
//! needs an async runtime. `use selfheal::prelude::*;` brings in what a host
//! program needs.
//!
//! ```
//! use std::sync::Arc;
//! use selfheal::prelude::*;
//!
//! // The host's pages (here in memory) and a checksum trailer in each page.
//! let store = Arc::new(MemStore::new(4096, 64)?);
//! let detector = CorruptionConfig::new(ChecksumPlacement::Trailer).build(store.clone())?;
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
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code)]

pub mod audit;
pub mod checksum;
mod clock;
pub mod corruption;
pub mod crash;
pub mod digest;
mod dirlock;
mod error;
mod fsutil;
pub mod healer;
pub mod health;
mod host;
pub mod recovery;
pub mod repair;
mod retry;
pub mod rollback;
pub mod scrub;
mod sharded;
pub mod snapshot;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
mod store;
mod telemetry;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod types;
mod worker;

pub use checksum::{ChecksumPlacement, ChecksumTable};
pub use clock::{Clock, ManualClock, SystemClock};
pub use corruption::{CorruptionConfig, CorruptionDetector};
pub use crash::{CrashConfig, CrashDetector};
/// The receiving end of the library's bounded channels (failures, events),
/// re-exported so that a host names it without depending on the channel
/// crate itself.
pub use crossbeam_channel::Receiver;
pub use error::{Error, Result, SqliteRefusal};
pub use health::{HealthConfig, HealthMonitor, HealthProbe};
pub use host::{
    HostAction, HostActions, PageSource, PageStore, Replica, ReplicaLag, ReplicaStatus,
};
pub use recovery::{AutoRecoveryManager, Mode, RecoveryConfig, RecoveryEvent, RecoveryStats};
pub use repair::{DataRepairer, RepairConfig};
pub use rollback::{RollbackConfig, TransactionRollbackManager};
pub use scrub::{ScrubConfig, Scrubber};
pub use snapshot::{SnapshotConfig, StateSnapshotManager};
pub use store::{FileStore, MemStore, StoreReplica};
pub use types::{
    Failure, FailureCallback, FailureId, FailureKind, FailureSink, Lsn, PageId, Priority,
    ReplicaId, Source, Target, TxnId,
};

/// What a host program needs: `use selfheal::prelude::*;`.
///
/// Everything at the crate root, and the vocabulary a host uses with it most
/// often: options and requests (adoption, snapshots, restores, scrub rates,
/// heartbeats, healer rules, health thresholds), the states and outcomes it
/// inspects (incidents and their steps, the startup report), and the hooks
/// it writes. Everything else is reached through its component's module.
pub mod prelude {
    pub use crate::corruption::{
        AdoptOptions, LsnExpectation, LsnExpectationFn, PageLsnFn, PageState, Verdict,
    };
    pub use crate::crash::{HeartbeatConfig, HeartbeatHandle};
    pub use crate::healer::{HealerConfig, Incident, Outcome, Problem, Rule, Step};
    pub use crate::health::Thresholds;
    pub use crate::recovery::StartupReport;
    pub use crate::repair::RepairOutcome;
    pub use crate::rollback::RawPages;
    pub use crate::scrub::{ScrubMode, ScrubRate};
    pub use crate::snapshot::{
        Consistency, Fallback, LostPages, PeriodicConfig, RestoreOptions, SnapshotKind,
        SnapshotRequest, WriteGate,
    };
    pub use crate::{
        AutoRecoveryManager, ChecksumPlacement, ChecksumTable, Clock, CorruptionConfig,
        CorruptionDetector, CrashConfig, CrashDetector, DataRepairer, Error, Failure,
        FailureCallback, FailureId, FailureKind, FailureSink, FileStore, HealthConfig,
        HealthMonitor, HealthProbe, HostAction, HostActions, Lsn, ManualClock, MemStore, Mode,
        PageId, PageSource, PageStore, Priority, Receiver, RecoveryConfig, RecoveryEvent,
        RecoveryStats, RepairConfig, Replica, ReplicaId, ReplicaLag, ReplicaStatus, Result,
        RollbackConfig, ScrubConfig, Scrubber, SnapshotConfig, Source, SqliteRefusal,
        StateSnapshotManager, StoreReplica, SystemClock, Target, TransactionRollbackManager, TxnId,
    };
}

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
