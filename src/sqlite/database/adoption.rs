//! Adoption of an existing database file by the VFS: SQLite's own
//! `PRAGMA quick_check` first, then its freelist decides which pages are
//! free and every other page is sealed as it is; at an open that does not
//! adopt, all-zero pages in use that an earlier build marked free are
//! sealed; and the durable copy of page 1.
//!
//! # Contract
//! - The check's connection holds a read transaction until every page is
//!   sealed (no writer changes the file meanwhile in rollback-journal
//!   mode) and never checkpoints at its close (a WAL's committed frames
//!   stay in the WAL, for SQLite to read and to checkpoint through the
//!   VFS).
//! - Anything but `ok` refuses the open; so do a freelist that cannot be
//!   read and pages failing checksums a resumed adoption already recorded.
//! - A page marked free that is not all zeros is never sealed by the
//!   zero-page pass: its bytes are no known state of the page.

use std::sync::Arc;
use std::time::Instant;

use super::format;
use super::{Database, PENDING_PAGES_MAX};
use crate::corruption::AdoptOptions;
use crate::error::{Result, SqliteRefusal};
use crate::host::PageStore;
use crate::sqlite::config::AdoptionReport;
use crate::sqlite::identity;
use crate::sqlite::store::SqlitePageStore;
use crate::{CorruptionDetector, PageId};

impl Database {
    /// Adopts the file after SQLite's `PRAGMA quick_check` (run by the
    /// caller, through the default VFS) said `ok`: the freelist's leaves
    /// are marked unallocated; every other page is sealed as it is.
    pub(super) fn adopt(
        &self,
        det: &Arc<CorruptionDetector>,
        store: &Arc<SqlitePageStore>,
    ) -> Result<()> {
        let freelist = format::read_freelist(store.as_ref()).map_err(|e| {
            identity::refused(
                SqliteRefusal::BadFreelist,
                &self.path,
                format!("its freelist (header offsets 32 and 36 of page 1) cannot be read: {e}"),
                "run `PRAGMA integrity_check` with plain SQLite, and `VACUUM` (or restore the file) to rebuild the freelist, then open it again",
            )
        })?;
        for leaf in &freelist.leaves {
            det.forget(*leaf)?;
        }
        let adopting = Instant::now();
        let report = det.adopt(AdoptOptions::new())?;
        if report.corrupt > 0 {
            return Err(identity::refused(
                SqliteRefusal::DamagedAtAdoption,
                &self.path,
                format!(
                    "{} page(s) fail the checksums the sidecar already held for them (an earlier adoption sealed them, and they changed since)",
                    report.corrupt
                ),
                identity::readopt(&self.path),
            ));
        }
        // Every page SQLite uses is sealed, zeros or not: adoption takes an
        // all-zero page for free, and only the freelist's leaves (and pages
        // past the header's page count) are.
        let in_use = self.seal_zero_pages_in_use(det, store, &freelist)?;
        det.sync()?;
        let adopt = adopting.elapsed();
        self.save_page_one(det, store.page_size);
        tracing::info!(
            db = %self.path.display(), sealed = report.sealed, unallocated = report.unallocated,
            corrupt = report.corrupt, zero_pages_in_use = in_use, ?adopt,
            "adopted a SQLite database"
        );
        self.shared.adoptions.lock().push(AdoptionReport {
            path: self.path.clone(),
            page_size: store.page_size,
            pages: store.page_count(),
            freelist_leaves: freelist.leaves.len() as u64,
            quick_check: self.quick_check_took.lock().unwrap_or_default(),
            adopt,
            report,
        });
        Ok(())
    }

    /// At an open that does not adopt: seals the all-zero pages SQLite
    /// uses that are marked free, which an adoption by an earlier build of
    /// the crate left so (it took every all-zero page for free), after
    /// reading SQLite's freelist. From then on they verify and heal like
    /// any other page. A freelist that cannot be read (the file may be in
    /// the middle of a transaction a hot journal or the WAL completes) is
    /// logged and the pages are left as they are until the next open.
    pub(super) fn seal_zero_pages_marked_free(
        &self,
        det: &Arc<CorruptionDetector>,
        store: &Arc<SqlitePageStore>,
    ) -> Result<()> {
        let Some(used) = Self::pages_in_use(store)? else {
            return Ok(());
        };
        let marked = match det.placement() {
            crate::ChecksumPlacement::Sidecar(t) => (0..used).any(|p| t.is_free(PageId(p))),
            crate::ChecksumPlacement::Trailer => false,
        };
        if !marked {
            return Ok(());
        }
        let freelist = match format::read_freelist(store.as_ref()) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(db = %self.path.display(), error = %e,
                    "the freelist cannot be read; all-zero pages marked free stay unsealed");
                return Ok(());
            }
        };
        let sealed = self.seal_zero_pages_in_use(det, store, &freelist)?;
        if sealed > 0 {
            // Their intents are durable already (a crash now leaves them
            // verifiable); settled now, and the settle made durable too, as
            // adoption's are, so they accept nothing else after a crash.
            det.sync()?;
            if let crate::ChecksumPlacement::Sidecar(t) = det.placement() {
                t.flush()?;
            }
            tracing::info!(db = %self.path.display(), sealed,
                "sealed all-zero pages in use that were marked free");
        }
        Ok(())
    }

    /// The pages SQLite uses: the header's page count (at most the file's),
    /// or the file's when the header has none; `None` when page 1's header
    /// cannot be read.
    pub(super) fn pages_in_use(store: &SqlitePageStore) -> Result<Option<u64>> {
        if store.page_count() == 0 {
            return Ok(None);
        }
        let mut first = vec![0u8; store.page_size];
        store.read_page(PageId(0), &mut first)?;
        Ok(format::parse_header(&first).ok().map(|h| {
            h.page_count
                .map_or(store.page_count(), |n| u64::from(n).min(store.page_count()))
        }))
    }

    /// Seals the pages marked free that are all zeros but that SQLite
    /// uses: neither a freelist leaf nor past the header's page count
    /// (adoption marks every all-zero page free). A page marked free that
    /// is not all zeros is left unsealed: its bytes are no known state of
    /// the page. Returns how many were sealed.
    pub(super) fn seal_zero_pages_in_use(
        &self,
        det: &Arc<CorruptionDetector>,
        store: &Arc<SqlitePageStore>,
        freelist: &format::Freelist,
    ) -> Result<u64> {
        let ps = store.page_size;
        let Some(used) = Self::pages_in_use(store)? else {
            return Ok(0);
        };
        let table = match det.placement() {
            crate::ChecksumPlacement::Sidecar(t) => t.clone(),
            crate::ChecksumPlacement::Trailer => return Ok(0),
        };
        let candidates: Vec<PageId> = (0..used)
            .map(PageId)
            .filter(|p| table.is_free(*p) && !freelist.is_free(*p))
            .collect();
        let mut sealed = 0u64;
        for chunk in candidates.chunks(PENDING_PAGES_MAX) {
            let mut pages: Vec<(PageId, Vec<u8>)> = Vec::with_capacity(chunk.len());
            for p in chunk {
                let mut b = vec![0u8; ps];
                store.read_page(*p, &mut b)?;
                if b.iter().all(|&x| x == 0) {
                    pages.push((*p, b));
                }
            }
            let mut refs: Vec<(PageId, &mut [u8])> = pages
                .iter_mut()
                .map(|(p, b)| (*p, b.as_mut_slice()))
                .collect();
            if !refs.is_empty() {
                det.write_sealed_batch(&mut refs)?;
            }
            sealed += refs.len() as u64;
        }
        Ok(sealed)
    }

    /// Keeps page 1, read verified, as its durable copy (see `identity`);
    /// a failure is logged: the copy is a repair source, not a duty.
    pub(super) fn save_page_one(&self, det: &CorruptionDetector, page_size: usize) {
        let mut page = vec![0u8; page_size];
        let saved = det
            .read_verified(PageId(0), &mut page)
            .and_then(|()| identity::save_page_one(&self.path, &page));
        if let Err(e) = saved {
            tracing::warn!(db = %self.path.display(), error = %e,
                "page 1's copy could not be kept");
        }
    }

    /// `PRAGMA quick_check` on a separate connection through the default
    /// VFS; anything but a single `ok` refuses adoption. The connection is
    /// returned inside the read transaction the check ran in, so SQLite's
    /// shared lock on the file is held until it is dropped: in
    /// rollback-journal mode no other connection (of any process) can
    /// write the file meanwhile. In WAL mode the read transaction does not
    /// stop another process's checkpoint from copying newer frames into
    /// the file; adopt a WAL database with no other process attached (or
    /// after `PRAGMA wal_checkpoint(TRUNCATE)`). The connection never
    /// checkpoints at its close: a WAL's committed frames are left in the
    /// WAL, for SQLite to read from there and to checkpoint through the VFS
    /// (adoption seals the file's own pages, which the frames supersede).
    pub(super) fn quick_check(&self) -> Result<rusqlite::Connection> {
        use rusqlite::config::DbConfig;
        use rusqlite::OpenFlags;
        let started = Instant::now();
        let refuse = |reason: String| {
            identity::refused(
                SqliteRefusal::QuickCheckFailed,
                &self.path,
                format!("it cannot be adopted: {reason}"),
                "repair it (or restore it) with SQLite's own tools first, then open it again",
            )
        };
        let conn = rusqlite::Connection::open_with_flags_and_vfs(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            self.root.name().as_str(),
        )
        .map_err(|e| refuse(format!("opening it for PRAGMA quick_check failed: {e}")))?;
        // Closed after adoption has sealed the file's pages: a checkpoint
        // at that close would copy a WAL's committed frames into the file
        // behind the VFS (and delete the WAL), so the sealed pages would
        // change under their checksums and the transactions in the WAL
        // would be lost to a heal. The frames stay in the WAL: SQLite reads
        // them from there and checkpoints them through the VFS, which seals
        // them.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(|e| refuse(format!("turning off its checkpoint at close failed: {e}")))?;
        conn.execute_batch("BEGIN")
            .map_err(|e| refuse(format!("BEGIN failed: {e}")))?;
        let rows: Vec<String> = {
            let mut stmt = conn
                .prepare("PRAGMA quick_check")
                .map_err(|e| refuse(format!("PRAGMA quick_check failed: {e}")))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| refuse(format!("PRAGMA quick_check failed: {e}")))?;
            rows
        };
        if rows != ["ok"] {
            return Err(refuse(format!("PRAGMA quick_check says {rows:?}")));
        }
        *self.quick_check_took.lock() = Some(started.elapsed());
        Ok(conn)
    }
}
