//! The snapshots of one database file as a repair source: a page is served
//! from the newest snapshot whose copy the sidecar table accepts, but only
//! while the table accepts a single version of the page.
//!
//! The snapshot manager's own rule
//! ([`SnapshotPageSource`](crate::snapshot::SnapshotPageSource)) serves a
//! page that nothing wrote since the newest snapshot, which it knows from dirty
//! notices — and it forgets them when the file is reopened. The sidecar
//! table gives the VFS a second rule that survives a reopen: a page whose
//! checksum is settled (synced, and no write of unknown fate since) has
//! exactly one accepted content, so a snapshot's copy that verifies against
//! it *is* the current page, however old the snapshot. A page with a write
//! not yet synced accepts its old bytes too, and is served only under the
//! manager's rule, so an older version is never brought back.
//!
//! Snapshots are tried newest first; a copy that does not verify (the page
//! changed since, or the snapshot holds it damaged) moves on to the next.
//!
//! The source holds the manager and the table weakly: the repairer calls it
//! on a helper thread that may outlive the file's close by a moment, and a
//! strong hold would keep the snapshot directory and the sidecar table
//! owned, refusing an immediate reopen. Once the file is closed the source
//! has no copy of anything.

use std::fmt;
use std::sync::{Arc, Weak};

use crate::error::Result;
use crate::host::PageSource;
use crate::types::{Lsn, PageId};
use crate::{ChecksumTable, StateSnapshotManager};

/// The snapshots of one file, served by the rules above.
pub(super) struct SnapshotSource {
    manager: Weak<StateSnapshotManager>,
    table: Weak<ChecksumTable>,
}

impl fmt::Debug for SnapshotSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotSource")
            .field("head", &self.manager.upgrade().and_then(|m| m.head()))
            .finish_non_exhaustive()
    }
}

impl SnapshotSource {
    /// The snapshots of `manager`, checked against `table`.
    pub(super) fn new(manager: &Arc<StateSnapshotManager>, table: &Arc<ChecksumTable>) -> Self {
        SnapshotSource {
            manager: Arc::downgrade(manager),
            table: Arc::downgrade(table),
        }
    }
}

impl PageSource for SnapshotSource {
    fn name(&self) -> String {
        match self.manager.upgrade() {
            Some(m) => m.page_source().name(),
            None => "snapshots (file closed)".into(),
        }
    }

    fn read_page(&self, page: PageId, not_older_than: Option<Lsn>, buf: &mut [u8]) -> Result<bool> {
        let (Some(manager), Some(table)) = (self.manager.upgrade(), self.table.upgrade()) else {
            return Ok(false);
        };
        if manager.page_source().read_page(page, not_older_than, buf)? {
            return Ok(true);
        }
        if !table.is_settled(page) {
            return Ok(false);
        }
        for info in manager.snapshots().iter().rev() {
            // A damaged snapshot file only skips that snapshot.
            if matches!(manager.read_page_at(info.id, page, buf), Ok(true))
                && table.verify(page, buf).is_ok()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Consistency, SnapshotKind, SnapshotRequest, WriteGate};
    use crate::{ChecksumPlacement, CorruptionConfig, MemStore, SnapshotConfig};

    const PAGE: usize = 4096;

    fn page(tag: u8) -> Vec<u8> {
        (0..PAGE)
            .map(|i| (i as u8).wrapping_mul(31) ^ tag)
            .collect()
    }

    /// A page with a write since the snapshot that is not yet synced
    /// accepts its old bytes too: the snapshot's (old) copy is not served,
    /// though it would verify. Once the write is synced the old copy no
    /// longer verifies, and a page untouched since is served after a
    /// reopen of the manager (no dirty notices to go by).
    #[test]
    fn an_older_copy_is_served_only_against_a_single_accepted_version() {
        let dir = tempfile::tempdir().unwrap();
        let table = Arc::new(ChecksumTable::open(&dir.path().join("t"), PAGE).unwrap());
        let store = Arc::new(MemStore::new(PAGE, 4).unwrap());
        let snap_dir = dir.path().join("snaps");
        let manager = Arc::new(SnapshotConfig::new(&snap_dir, PAGE).build().unwrap());
        let noted = manager.clone();
        let det = CorruptionConfig::new(ChecksumPlacement::Sidecar(table.clone()))
            .on_write(Arc::new(move |p| noted.note_dirty(p)))
            .build(store.clone())
            .unwrap();
        for p in 0..4 {
            det.write_sealed(PageId(p), &mut page(p as u8)).unwrap();
        }
        det.sync().unwrap();
        let gate = WriteGate::new();
        let snapshot = |m: &StateSnapshotManager| {
            let pause = gate.pause();
            m.take_snapshot(
                Consistency::Paused {
                    store: store.as_ref(),
                    pause: &pause,
                    lsn: Lsn(1),
                },
                SnapshotRequest::new(SnapshotKind::Full),
            )
            .unwrap();
        };
        snapshot(&manager);
        let source = SnapshotSource::new(&manager, &table);
        let mut buf = vec![0u8; PAGE];
        assert!(source.read_page(PageId(1), None, &mut buf).unwrap());
        assert_eq!(buf, page(1));

        // Page 1 rewritten, not synced: the table accepts old and new.
        det.write_sealed(PageId(1), &mut page(0xA0)).unwrap();
        assert!(
            table.verify(PageId(1), &page(1)).is_ok(),
            "the old version is still accepted"
        );
        assert!(
            !source.read_page(PageId(1), None, &mut buf).unwrap(),
            "an older copy was served"
        );
        // Synced: the old copy no longer verifies, and is not served.
        det.sync().unwrap();
        assert!(!source.read_page(PageId(1), None, &mut buf).unwrap());

        // Reopened: no notices are trusted, the settled rule still serves
        // a page nothing changed.
        drop(source);
        drop(det);
        drop(manager);
        let manager = Arc::new(SnapshotConfig::new(&snap_dir, PAGE).build().unwrap());
        assert!(!manager.dirty_notices_trusted());
        let source = SnapshotSource::new(&manager, &table);
        assert!(source.read_page(PageId(2), None, &mut buf).unwrap());
        assert_eq!(buf, page(2));
        assert!(!source.read_page(PageId(1), None, &mut buf).unwrap());
    }
}
