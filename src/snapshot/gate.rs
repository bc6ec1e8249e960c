//! How a snapshot is made consistent: the [`WriteGate`] the host's page
//! writes pass through, and the [`Consistency`] a snapshot is taken under
//! (see the [`snapshot`](super) module docs for the rules).

use std::fmt;

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::host::PageStore;
use crate::types::Lsn;

/// The gate through which a host's page writes pass, so that a snapshot can
/// prove that none is in flight.
///
/// ```
/// use selfheal::snapshot::WriteGate;
/// let gate = WriteGate::new();
/// {
///     let _ticket = gate.write(); // held while the host writes a page
/// }
/// let _pause = gate.pause(); // no ticket exists while this lives
/// ```
#[derive(Debug, Default)]
pub struct WriteGate {
    lock: RwLock<()>,
}

/// Held by the host while it writes (many may exist at once).
#[derive(Debug)]
pub struct WriteTicket<'a>(#[allow(dead_code)] RwLockReadGuard<'a, ()>);

/// Proof that no write is in flight and none can start while it lives.
#[derive(Debug)]
pub struct WritePause<'a>(#[allow(dead_code)] RwLockWriteGuard<'a, ()>);

impl WriteGate {
    /// A gate with no writes in flight.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Enters the gate for a write; blocks while a pause is held.
    pub fn write(&self) -> WriteTicket<'_> {
        WriteTicket(self.lock.read())
    }

    /// Waits for in-flight writes to finish and holds off new ones until the
    /// returned guard is dropped.
    pub fn pause(&self) -> WritePause<'_> {
        WritePause(self.lock.write())
    }
}

/// How a snapshot is made consistent (see the module docs). The pause must
/// be one of the gate that all of the host's page writes pass through; the
/// view must not change while the snapshot runs.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum Consistency<'a> {
    /// Read `store` while the host's writes are paused by `pause`; the state
    /// is the one at `lsn`.
    Paused {
        /// The live store.
        store: &'a dyn PageStore,
        /// Proof that no write is in flight.
        pause: &'a WritePause<'a>,
        /// The LSN of the paused state.
        lsn: Lsn,
    },
    /// Read a point-in-time `view` of the store, whose state is the one at `lsn`.
    View {
        /// A read-only view that does not change while the snapshot runs.
        view: &'a dyn PageStore,
        /// The LSN of the view.
        lsn: Lsn,
    },
}

impl fmt::Debug for Consistency<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consistency::Paused { lsn, .. } => write!(f, "Paused {{ lsn: {lsn} }}"),
            Consistency::View { lsn, .. } => write!(f, "View {{ lsn: {lsn} }}"),
        }
    }
}
