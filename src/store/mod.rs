//! Reference implementations of the host seams: an in-memory store, a file
//! store, and a replica adapter over any store.

mod file;
mod mem;
mod mmap;

use std::fmt;
use std::sync::Arc;

pub use file::FileStore;
pub use mem::MemStore;

use crate::error::Result;
use crate::host::{PageStore, Replica, ReplicaLag, ReplicaStatus};
use crate::types::{PageId, ReplicaId};

/// A [`Replica`] over any [`PageStore`]: a mirror disk, a local copy, or in
/// tests a second store. Always available; its lag is what was set with
/// [`with_lag`](Self::with_lag) (none by default).
pub struct StoreReplica {
    id: ReplicaId,
    store: Arc<dyn PageStore>,
    lag: ReplicaLag,
    inline: bool,
}

impl StoreReplica {
    /// A replica named `id` serving the pages of `store`.
    pub fn new(id: impl AsRef<str>, store: Arc<dyn PageStore>) -> Self {
        StoreReplica {
            id: ReplicaId::new(id),
            store,
            lag: ReplicaLag::default(),
            inline: false,
        }
    }

    /// Declares that no read of its store can hang (an in-memory store), so
    /// the repairer may call it on the repairing thread without a deadline
    /// (see [`Replica::may_call_inline`]); default `false`. Never for a
    /// store whose reads may stall (a file on a disk, a network mount).
    #[must_use]
    pub fn call_inline(mut self, yes: bool) -> Self {
        self.inline = yes;
        self
    }

    /// Sets the lag it reports.
    #[must_use]
    pub fn with_lag(mut self, lag: ReplicaLag) -> Self {
        self.lag = lag;
        self
    }

    /// The store it serves.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn PageStore> {
        &self.store
    }
}

impl fmt::Debug for StoreReplica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreReplica")
            .field("id", &self.id)
            .field("lag", &self.lag)
            .field("call_inline", &self.inline)
            .finish_non_exhaustive()
    }
}

impl Replica for StoreReplica {
    fn id(&self) -> ReplicaId {
        self.id.clone()
    }

    fn page_size(&self) -> usize {
        self.store.page_size()
    }

    fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            available: true,
            lag: self.lag,
        }
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.store.read_page(page, buf)
    }

    fn may_call_inline(&self) -> bool {
        self.inline
    }
}
