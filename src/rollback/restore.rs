//! Preparing for a restore of the store: the [`RestoreGuard`].

use crate::error::{Error, Result};

use super::TransactionRollbackManager;

/// Proof that the manager is ready for the host to restore its store (from
/// a snapshot), returned by
/// [`prepare_restore`](TransactionRollbackManager::prepare_restore). While it
/// lives, [`begin`](TransactionRollbackManager::begin) refuses with
/// [`Error::RestoreInProgress`]; dropping it (after the restore) lets
/// transactions begin again.
#[must_use = "transactions may begin again as soon as the guard is dropped: keep it until the restore is done"]
pub struct RestoreGuard<'a> {
    mgr: &'a TransactionRollbackManager,
    retired: Vec<u64>,
}

impl std::fmt::Debug for RestoreGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreGuard")
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

impl RestoreGuard<'_> {
    /// The journal segments retired by the preparation.
    #[must_use]
    pub fn segments_retired(&self) -> &[u64] {
        &self.retired
    }
}

impl Drop for RestoreGuard<'_> {
    fn drop(&mut self) {
        self.mgr.state.lock().restoring = false;
    }
}

impl TransactionRollbackManager {
    /// Prepares for a restore of the store by the host: refuses while any
    /// transaction is in flight, then retires every journal record — a new
    /// segment is started and made durable, the state file names it the
    /// oldest, and every older segment is removed — so that no undo record
    /// from before the restore can ever be applied again, by this manager or
    /// by recovery at a later open. Transaction ids keep growing: none is
    /// handed out again. Returns a guard that blocks
    /// [`begin`](Self::begin) until it is dropped; restore while holding it.
    /// See the [module docs](super#restoring-the-store) for the whole
    /// contract.
    ///
    /// # Errors
    /// [`Error::TransactionsInFlight`] naming the transactions that are
    /// active, committing, rolling back or blocked (finish them first);
    /// [`Error::RestoreInProgress`] while another guard lives;
    /// [`Error::Poisoned`] or [`Error::Io`] when the journal cannot be
    /// retired (then nothing was promised: do not restore).
    pub fn prepare_restore(&self) -> Result<RestoreGuard<'_>> {
        self.check_open()?;
        {
            let mut st = self.state.lock();
            if st.restoring {
                return Err(Error::RestoreInProgress);
            }
            if !st.active.is_empty() {
                let mut txns: Vec<crate::types::TxnId> = st.active.keys().copied().collect();
                txns.sort_unstable();
                return Err(Error::TransactionsInFlight {
                    action: "preparing a restore",
                    txns,
                });
            }
            st.restoring = true;
        }
        match self.journal.retire_all() {
            Ok(retired) => {
                tracing::info!(
                    segments = retired.len(),
                    "undo journal retired for a restore"
                );
                Ok(RestoreGuard { mgr: self, retired })
            }
            Err(e) => {
                self.state.lock().restoring = false;
                Err(e)
            }
        }
    }
}
