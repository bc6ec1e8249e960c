//! Sealing pages on their way to the store: single writes, batches, the sidecar table, sync, resize.

use super::*;

impl CorruptionDetector {
    /// Seals `buf` as `page` (writes the trailer, or records the checksum in
    /// the sidecar table) and writes it. A fenced page is unfenced: the host's
    /// new contents replace whatever was corrupt, and any repair in flight for
    /// it will not overwrite them. A page marked unallocated is in use again.
    ///
    /// An all-zero page is accepted in both placements: the trailer makes it
    /// nonzero, and the sidecar table records the checksum of the zeros the
    /// host wrote (SQLite with `secure_delete` zeroes the pages it frees, and
    /// may read them back), through the same path as any other write (a
    /// durable table logs its intent first). Such a page verifies only as long as it holds
    /// those zeros; a page sealed with other contents that comes back zeroed
    /// is still [`Error::ZeroedPage`].
    ///
    /// With a durable sidecar table the new checksum is logged and fsynced
    /// before the page is written (see `checksum/durable.rs`);
    /// concurrent writers share that fsync, and
    /// [`write_sealed_batch`](Self::write_sealed_batch) shares it across a
    /// batch.
    ///
    /// # Errors
    /// [`Error::BufferSize`], [`Error::PageOutOfRange`] (also when a resize
    /// dropped the page while the write waited for its lock), the sealing
    /// error, the table's log error, or the store's write error.
    pub fn write_sealed(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        self.write_sealed_batch(&mut [(page, buf)])
    }

    /// Seals and writes a batch of pages: [`write_sealed`](Self::write_sealed)
    /// for each, in order, but with one fsync of a durable sidecar table's
    /// log for the whole batch. Every page is checked and sealed before any
    /// is written; the writes stop at the first that fails, and the pages
    /// before it stay written (a page may appear twice; its last bytes win).
    ///
    /// # Errors
    /// As [`write_sealed`](Self::write_sealed), for the first page that fails.
    pub fn write_sealed_batch(&self, pages: &mut [(PageId, &mut [u8])]) -> Result<()> {
        let (page_count, page_size) = (self.store.page_count(), self.store.page_size());
        for (page, buf) in pages.iter() {
            check_page_args(*page, page_count, buf.len(), page_size)?;
        }
        let mut issued = 0;
        let result = self.write_batch_locked(pages, &mut issued);
        self.notify_written(pages[..issued].iter().map(|(p, _)| *p));
        result
    }

    /// The body of [`write_sealed_batch`](Self::write_sealed_batch), with
    /// the pages' locks held; counts in `issued` the page writes issued to
    /// the store (the last may have failed).
    pub(super) fn write_batch_locked(
        &self,
        pages: &mut [(PageId, &mut [u8])],
        issued: &mut usize,
    ) -> Result<()> {
        let _g = self.stripes_of(pages.iter().map(|(p, _)| *p));
        // A resize may have dropped a page while the batch waited for its
        // locks: nothing may be written or recorded for it.
        let page_count = self.store.page_count();
        if let Some((page, _)) = pages.iter().find(|(p, _)| p.0 >= page_count) {
            return Err(Error::PageOutOfRange {
                page: *page,
                page_count,
            });
        }
        let (written, result) = match &self.placement {
            ChecksumPlacement::Trailer => {
                for (page, buf) in pages.iter_mut() {
                    crate::checksum::trailer::seal(*page, buf)?;
                }
                let mut written = 0;
                let mut result = Ok(());
                for (page, buf) in pages.iter() {
                    *issued += 1;
                    result = self.store.write_page(*page, buf);
                    if result.is_err() {
                        break;
                    }
                    self.freed.clear(*page);
                    self.note_sealed_here(*page);
                    written += 1;
                }
                (written, result)
            }
            ChecksumPlacement::Sidecar(table) => self.write_sidecar(table, pages, issued)?,
        };
        let mut registry = self.registry.lock();
        for (page, _) in &pages[..written] {
            registry.on_host_write(*page);
        }
        drop(registry);
        // In order: the last write of a page that appears twice defines it.
        for (page, buf) in &pages[..written] {
            self.record_write_lsn(*page, buf);
        }
        result
    }

    /// Trailer placement: remembers that the detector wrote a trailer into
    /// `page` (see [`looks_unsealed`](Self::looks_unsealed)).
    pub(super) fn note_sealed_here(&self, page: PageId) {
        if matches!(self.placement, ChecksumPlacement::Trailer) && !self.sealed_here.get(page) {
            // Only pages below the page count get here: the set stays bounded.
            let _ = self.sealed_here.set(page);
        }
    }

    /// The sidecar branch of a batch write: the table's entries change only
    /// around writes that were issued — an in-memory table records a
    /// checksum once its write succeeded (a failed write leaves the old
    /// bytes and checksum), a durable one logs the new checksum durably
    /// before the write and keeps the old one accepted until a sync.
    /// Returns how many pages were written and the first write error, and
    /// counts in `issued` the page writes issued.
    pub(super) fn write_sidecar(
        &self,
        table: &ChecksumTable,
        pages: &[(PageId, &mut [u8])],
        issued: &mut usize,
    ) -> Result<(usize, Result<()>)> {
        let changes = pages
            .iter()
            .map(|(page, buf)| Ok((*page, table.sealable(*page, buf, true)?)))
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<PageId> = changes.iter().map(|(p, _)| *p).collect();
        if table.needs_sync(&ids) {
            // Too many changes since the last sync: settle them first.
            self.sync()?;
        }
        let intents = table.intend(&changes)?;
        let mut written = 0;
        let mut result = Ok(());
        for (page, buf) in pages {
            *issued += 1;
            result = self.store.write_page(*page, buf);
            if result.is_err() {
                break;
            }
            written += 1;
        }
        table.complete(&intents, written)?;
        Ok((written, result))
    }

    /// Makes every completed write durable: syncs the store and then, for a
    /// durable sidecar table, settles the checksums of the pages the sync
    /// covered (their old checksums stop being accepted) and compacts the
    /// table's log when it has grown large. This is the detector's
    /// [`PageStore::sync`]; a host syncs through it, not through the raw
    /// store, or its pages keep accepting their older checksums (safe, but
    /// weaker, and the table keeps growing until the detector syncs on its
    /// own).
    ///
    /// # Errors
    /// The store's sync error (nothing is settled); [`Error::Stalled`] while
    /// the table's log is stalled and a page written since the last sync
    /// would get its first checksum (the store is synced, but that page is
    /// not settled until the first sync after the log resumes: no checksum
    /// a crash could take back is given out), or after a sync whose records
    /// could not be made durable, until a resume writes them; the table's
    /// log or compaction error.
    pub fn sync(&self) -> Result<()> {
        let table = match &self.placement {
            ChecksumPlacement::Sidecar(t) if t.is_durable() => Some(t),
            _ => None,
        };
        let barrier = table.map(|t| t.sync_barrier());
        self.store.sync()?;
        if let (Some(t), Some(b)) = (table, barrier) {
            t.settle(b)?;
        }
        Ok(())
    }

    /// Resizes the store to `page_count` pages (see [`PageStore::resize`]).
    /// The checksums, fences, unallocated marks and last-written LSNs of
    /// pages past the new end are dropped with them, so a page that comes
    /// back later is a new page. With a durable sidecar table the store is
    /// synced before the table forgets anything (durably, with a `drop`
    /// record), so that no crash can leave pages whose checksums are gone.
    ///
    /// Safe to call while reads, writes, scrubs and repairs run: see the
    /// [module docs](super#resizing). One resize runs at a time, and none
    /// runs during an adoption batch. It must not be called from a failure
    /// callback or a free-page answer (they may run under a scan that the
    /// store's resize waits for).
    ///
    /// # Errors
    /// The store's error ([`Error::Unsupported`] when it cannot change size);
    /// nothing is forgotten then. The sync's error (the store has its new
    /// size, nothing is forgotten: a later resize forgets it), or the
    /// table's log error (the table is then poisoned; everything else about
    /// the dropped pages is forgotten).
    pub fn resize(&self, page_count: u64) -> Result<()> {
        let _gate = self.resize_gate.write();
        let old = self.store.page_count();
        if page_count > old {
            // Pages `old..` do not exist yet, so nothing is in flight on them:
            // forget anything left about them before they appear.
            self.forget_past(old)?;
            self.store.resize(page_count)
        } else {
            // Shrink the store first (it may wait for a scan whose visits
            // take page locks, so no page lock is held here), then forget
            // with every page lock held: an operation on a dropped page has
            // either finished (its traces go now) or will find the page gone.
            self.store.resize(page_count)?;
            self.forget_past(page_count)
        }
    }

    /// Forgets everything about pages at and past `page_count`, with every
    /// page lock held.
    pub(super) fn forget_past(&self, page_count: u64) -> Result<()> {
        if let ChecksumPlacement::Sidecar(table) = &self.placement {
            if table.is_durable() && table.has_pages_from(page_count) {
                // The store's new size is made durable before the table's
                // drop record is (with no page lock held, as for the resize).
                self.sync()?;
            }
        }
        let _all: Vec<MutexGuard<'_, ()>> = self.stripes.iter().map(|m| m.lock()).collect();
        let truncated = match &self.placement {
            ChecksumPlacement::Sidecar(table) => table.truncate(page_count),
            ChecksumPlacement::Trailer => Ok(()),
        };
        self.freed.truncate(page_count);
        self.sealed_here.truncate(page_count);
        self.registry.lock().forget_from(page_count);
        self.written_lsn.truncate(page_count);
        truncated
    }
}
