//! Taking a snapshot: choosing its pages (every page, the noted ones, or
//! the ones whose fingerprint differs from the parent's), writing its file
//! and committing it to the manifest crash-safely, then retention.
//!
//! A snapshot records whether the store it read verifies its reads
//! ([`PageStore::verifies_reads`]). Through a verifying store (the
//! [`CorruptionDetector`](crate::CorruptionDetector)) a page the host calls
//! unallocated has no bytes anybody vouches for
//! ([`Error::PageUnallocated`]): the snapshot stores it as zeros, which is
//! as good as any contents for a free page. Restored, such a page holds
//! zeros (sealed, in a detector: it verifies, and raises no alarm); the
//! host's own metadata, restored with the rest, still calls it free.
//!
//! The crash analysis of this path is the table in the `snapshot` module
//! docs; each row is a [`CrashStep`] checked here.

use std::fs;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::fingerprint::parallel_fingerprints;
use super::format::{self, Header};
use super::inner::{Head, Inner, State};
use super::manifest::{plan_retention, Manifest, Retention, MANIFEST_NAME};
use super::writer::SnapshotWriter;
use super::{
    snapshot_file_name, ChangeDetection, Consistency, CrashStep, Operation, SnapshotInfo,
    SnapshotIo, SnapshotKind, SnapshotReport, SnapshotRequest,
};
use crate::corruption::read_hook::without_read_hook;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::host::PageStore;
use crate::types::PageId;

/// Reads `buf.len() / ps` pages from `first` into `buf` for a snapshot: a
/// page the store calls unallocated (a verifying store's
/// [`Error::PageUnallocated`]) is stored as zeros. One batch read; pages one
/// by one only for a batch that holds such a page.
fn read_for_snapshot(store: &dyn PageStore, first: u64, buf: &mut [u8], ps: usize) -> Result<()> {
    match store.read_pages(PageId(first), buf) {
        Err(Error::PageUnallocated { .. }) => {
            for (i, page) in buf.chunks_exact_mut(ps).enumerate() {
                read_one_for_snapshot(store, first + i as u64, page)?;
            }
            Ok(())
        }
        other => other,
    }
}

/// One page of [`read_for_snapshot`].
fn read_one_for_snapshot(store: &dyn PageStore, page: u64, buf: &mut [u8]) -> Result<()> {
    match store.read_page(PageId(page), buf) {
        Err(Error::PageUnallocated { .. }) => {
            buf.fill(0);
            Ok(())
        }
        other => other,
    }
}

/// What a new snapshot file makes of the restore point the manifest
/// records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NewHead {
    /// Nothing: the head stays.
    No,
    /// It replaces the head (a merge of the head's chain): the store's
    /// state descends from it exactly as much as from the head before.
    Merged,
    /// It is the store's state now (a snapshot taken).
    Taken,
}

impl Inner {
    /// Takes a snapshot of `source`. Its reads of the host's store never
    /// heal on read on this thread (the recovery manager's hook): a heal may
    /// need the snapshots, whose state this holds — from this thread or a
    /// repair's helper thread, either would wait for it. A page found bad
    /// fails the snapshot and is reported by the detector; the manager heals
    /// it on its own.
    pub(super) fn take_snapshot(
        &self,
        source: Consistency<'_>,
        request: SnapshotRequest,
    ) -> Result<SnapshotReport> {
        without_read_hook(|| self.take_snapshot_unhooked(source, request))
    }

    fn take_snapshot_unhooked(
        &self,
        source: Consistency<'_>,
        request: SnapshotRequest,
    ) -> Result<SnapshotReport> {
        self.check_alive()?;
        request.validate()?;
        let (store, lsn, paused) = match source {
            Consistency::Paused { store, lsn, .. } => (store, lsn, true),
            Consistency::View { view, lsn } => (view, lsn, false),
        };
        let verified = store.verifies_reads();
        self.check_page_size("store being snapshotted", store.page_size())?;
        let mut st = self.lock_state()?;
        let head = self.head.read().clone();
        let parent = match request.kind {
            SnapshotKind::Full => None,
            SnapshotKind::Incremental => Some(head.ok_or_else(|| Error::InvalidArgument {
                what: "kind",
                reason: "an incremental snapshot needs an earlier one to build on; take a full snapshot first".into(),
            })?),
            SnapshotKind::Auto => head.filter(|h| h.chain.len() < self.max_chain_len),
        };
        let page_count = store.page_count();
        let ps = self.page_size;
        let mut parent = parent;
        let mut parent_table = None;
        if let Some(h) = &parent {
            match self.fingerprints_of(&mut st, h.id) {
                Ok(f) => parent_table = Some(f),
                // `Auto` does not build on a head it cannot read.
                Err(e) if request.kind == SnapshotKind::Auto => {
                    tracing::warn!(head = h.id, error = %e, "cannot read the head snapshot; taking a full one");
                    parent = None;
                }
                Err(e) => return Err(e),
            }
        }
        let (detection, parent_fps) = match (&parent, parent_table) {
            (Some(_), Some(fps)) => {
                if paused && self.dirty.trusted() {
                    (ChangeDetection::DirtyNotices, fps)
                } else {
                    (ChangeDetection::Fingerprints, fps)
                }
            }
            _ => (ChangeDetection::Full, Arc::new(Vec::new())),
        };
        // Under notices: the noted pages below the first page that is new
        // since the parent (past its count, or past a size the store was
        // shrunk to meanwhile), and every page from there on.
        let dirty = match (detection, &parent) {
            (ChangeDetection::DirtyNotices, Some(h)) => self.dirty.list().map(|noted| {
                let new_from = h.page_count.min(self.dirty.dirty_from()).min(page_count);
                let mut pages: Vec<u64> = noted.into_iter().filter(|&p| p < new_from).collect();
                pages.extend(new_from..page_count);
                pages
            }),
            _ => None,
        };
        let threads = self.threads;
        let chunk_pages = self.chunk_pages;
        let progress = &self.progress;
        let total = match &dirty {
            Some(d) => d.len() as u64 * ps as u64,
            None => page_count * ps as u64,
        };
        let _g = progress.start(Operation::Snapshot, total);
        let mut feed = |w: &mut SnapshotWriter,
                        crash_mid: &mut dyn FnMut(&SnapshotWriter) -> Result<()>|
         -> Result<()> {
            match (detection, &dirty, &parent) {
                // Every page: read straight into the chunk buffers, a chunk
                // at a time (a verifying store's free pages as zeros).
                (ChangeDetection::Full, _, _) => {
                    let run = chunk_pages.max(1) as u64;
                    let mut start = 0u64;
                    while start < page_count {
                        let n = run.min(page_count - start);
                        w.push_run(start, n, &mut |first, buf| {
                            if verified {
                                read_for_snapshot(store, first, buf, ps)?;
                            } else {
                                store.read_pages(PageId(first), buf)?;
                            }
                            progress.add(buf.len() as u64);
                            Ok(())
                        })?;
                        crash_mid(w)?;
                        start += n;
                    }
                    Ok(())
                }
                (ChangeDetection::DirtyNotices, Some(pages), Some(_)) => {
                    let mut buf = vec![0u8; ps];
                    for &p in pages {
                        read_one_for_snapshot(store, p, &mut buf)?;
                        w.push(p, &buf)?;
                        progress.add(ps as u64);
                        crash_mid(w)?;
                    }
                    Ok(())
                }
                _ => {
                    // Pages past the parent's count have no fingerprint
                    // there, so they are always stored.
                    let batch = ((4 << 20) / ps).max(1) as u64;
                    let mut buf = vec![0u8; batch as usize * ps];
                    let mut fps = vec![0u64; batch as usize];
                    let mut start = 0u64;
                    while start < page_count {
                        let n = batch.min(page_count - start) as usize;
                        let bytes = &mut buf[..n * ps];
                        read_for_snapshot(store, start, bytes, ps)?;
                        parallel_fingerprints(start, bytes, ps, &mut fps[..n], threads);
                        for (i, b) in bytes.chunks_exact(ps).enumerate() {
                            let p = start + i as u64;
                            if parent_fps.get(p as usize) != Some(&fps[i]) {
                                w.push_fingerprinted(p, b, fps[i])?;
                                crash_mid(w)?;
                            }
                        }
                        progress.add(bytes.len() as u64);
                        start += n as u64;
                    }
                    Ok(())
                }
            }
        };
        let header = Header {
            version: format::VERSION,
            id: st.manifest.next_id,
            parent: parent.as_ref().map(|h| h.id),
            lsn,
            created_unix_ms: self.now_unix_ms(),
            page_size: ps,
            chunk_pages: self.chunk_pages,
            page_count,
            pages_verified: verified,
        };
        let (info, fps) = self.commit_new(
            &mut st,
            header,
            (*parent_fps).clone(),
            &mut feed,
            &request.metadata,
            NewHead::Taken,
        )?;
        drop(parent_fps);
        let mut chain = parent.map(|h| h.chain).unwrap_or_default();
        chain.push(info.id);
        *self.head.write() = Some(Head {
            id: info.id,
            lsn,
            page_count,
            chain,
        });
        st.head_fps = Some((info.id, Arc::new(fps)));
        self.head_unknown.store(false, Ordering::Release);
        if paused {
            self.dirty.reset_clean();
        }
        let (deleted, retention_error) = match self.retain(&mut st, self.now_unix_ms()) {
            Ok(deleted) => (deleted, None),
            Err(e) => {
                tracing::warn!(snapshot = info.id, error = %e, "snapshot taken, but retention failed; older snapshots are kept until it next runs");
                (Vec::new(), Some(e.to_string()))
            }
        };
        Ok(SnapshotReport {
            info,
            detection,
            pages_verified: verified,
            deleted,
            retention_error,
        })
    }

    /// Writes a new snapshot file and lists it in the manifest, crash-safely.
    #[allow(clippy::type_complexity)]
    pub(super) fn commit_new(
        &self,
        st: &mut State,
        header: Header,
        parent_fps: Vec<u64>,
        feed: &mut dyn FnMut(
            &mut SnapshotWriter,
            &mut dyn FnMut(&SnapshotWriter) -> Result<()>,
        ) -> Result<()>,
        metadata: &[(String, Vec<u8>)],
        head: NewHead,
    ) -> Result<(SnapshotInfo, Vec<u64>)> {
        let id = header.id;
        let next_id = id
            .checked_add(1)
            .filter(|&n| n < u64::MAX)
            .ok_or_else(|| {
                Error::corrupt_file(
                    self.dir.join(MANIFEST_NAME),
                    0,
                    format!("snapshot ids are exhausted (the next would be {id}); start a new snapshot directory"),
                )
            })?;
        let name = snapshot_file_name(id);
        let path = self.dir.join(&name);
        let tmp = fsutil::tmp_path(&path);
        let (parent, lsn, created, page_count) = (
            header.parent,
            header.lsn,
            header.created_unix_ms,
            header.page_count,
        );
        let written = (|| -> Result<(u64, Vec<u64>, u64)> {
            let file = fsutil::open_regular(
                fsutil::private_create_options()
                    .write(true)
                    .create(true)
                    .truncate(true),
                &tmp,
                "creating",
            )?;
            let w = SnapshotWriter::new(file, tmp.clone(), header, self.threads, parent_fps)?
                .sync_timeout(self.sync_timeout);
            #[cfg(test)]
            let w = match self.early_sync.lock().clone() {
                Some((sync, every_bytes)) => w.with_early_sync(sync, every_bytes),
                None => w,
            };
            let mut w = w;
            self.crash(CrashStep::TmpCreated)?;
            let mut mid_done = false;
            feed(&mut w, &mut |w: &SnapshotWriter| {
                if !mid_done && w.chunks_written() > 0 {
                    mid_done = true;
                    self.crash(CrashStep::ChunksPartlyWritten)?;
                    self.io_fault(SnapshotIo::FileWrite)?;
                }
                Ok(())
            })?;
            w.flush_batch()?;
            if !mid_done {
                self.crash(CrashStep::ChunksPartlyWritten)?;
                self.io_fault(SnapshotIo::FileWrite)?;
            }
            let (file, len, fps, stored) = w.finish(metadata)?;
            self.crash(CrashStep::BeforeFsync)?;
            self.io_fault(SnapshotIo::FileSync)?;
            file.sync_all()
                .map_err(|e| Error::io(format!("syncing {}", tmp.display()), e))?;
            drop(file);
            self.crash(CrashStep::BeforeRename)?;
            self.io_fault(SnapshotIo::FileRename)?;
            fs::rename(&tmp, &path).map_err(|e| {
                Error::io(
                    format!("renaming {} to {}", tmp.display(), path.display()),
                    e,
                )
            })?;
            self.crash(CrashStep::BeforeDirSync)?;
            self.io_fault(SnapshotIo::DirSync)?;
            fsutil::sync_dir(&self.dir)?;
            self.crash(CrashStep::BeforeManifest)?;
            Ok((len, fps, stored))
        })();
        let (len, fps, stored) = match written {
            Ok(v) => v,
            Err(e) => {
                if !self.crashed() {
                    let _ = fs::remove_file(&tmp);
                    let _ = fs::remove_file(&path);
                }
                return Err(e);
            }
        };
        let info = SnapshotInfo {
            id,
            parent,
            lsn,
            created_unix_ms: created,
            page_count,
            stored_pages: stored,
            file_bytes: len,
            file_name: name,
        };
        let mut m = st.manifest.clone();
        m.entries.push(info.clone());
        m.next_id = next_id;
        match head {
            NewHead::No => {}
            NewHead::Merged => m.head = Some(id),
            NewHead::Taken => {
                m.head = Some(id);
                m.head_unknown = false;
            }
        }
        if let Err(e) = self.write_manifest(&m) {
            if self.manifest_unsynced.load(Ordering::Acquire) {
                // The new manifest is in place, maybe not durably: it
                // names this file, which is complete and durable, so the
                // file stays (a crash may keep that manifest). In memory
                // the snapshot does not count; its id is never used again.
                st.manifest.next_id = st.manifest.next_id.max(next_id);
            } else if !self.crashed() {
                let _ = fs::remove_file(&path);
            }
            return Err(e);
        }
        self.publish(&m);
        st.manifest = m;
        Ok((info, fps))
    }

    /// Replaces the manifest crash-safely. A failure of the directory's
    /// fsync after the rename leaves the new manifest in place but maybe
    /// not durable: it sets `manifest_unsynced` (the next manifest written
    /// clears it), and the caller keeps its state in memory as before.
    pub(super) fn write_manifest(&self, m: &Manifest) -> Result<()> {
        self.manifest_unsynced.store(false, Ordering::Release);
        use std::io::Write;
        let path = self.dir.join(MANIFEST_NAME);
        let tmp = fsutil::tmp_path(&path);
        let bytes = m.encode();
        fsutil::check_regular(&path)?;
        let mut f = fsutil::open_regular(
            fsutil::private_create_options()
                .write(true)
                .create(true)
                .truncate(true),
            &tmp,
            "creating",
        )?;
        let written = self.io_fault(SnapshotIo::ManifestWrite).and_then(|()| {
            f.write_all(&bytes)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))
        });
        drop(f);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.crash(CrashStep::ManifestTmpWritten)?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(
                format!("renaming {} over {}", tmp.display(), path.display()),
                e,
            ));
        }
        self.crash(CrashStep::ManifestRenamed)?;
        if let Err(e) = self
            .io_fault(SnapshotIo::ManifestDirSync)
            .and_then(|()| fsutil::sync_dir(&self.dir))
        {
            tracing::warn!(error = %e, "the manifest was replaced but the directory fsync failed; the next manifest written replaces it durably");
            self.manifest_unsynced.store(true, Ordering::Release);
            return Err(e);
        }
        Ok(())
    }

    pub(super) fn retain(&self, st: &mut State, now_ms: u64) -> Result<Vec<u64>> {
        self.retain_with(st, self.retention, now_ms)
    }

    /// Applies `policy` (the configured retention, or a stricter one asked
    /// for once): deletes what it does not keep; returns the deleted ids.
    pub(super) fn retain_with(
        &self,
        st: &mut State,
        policy: Retention,
        now_ms: u64,
    ) -> Result<Vec<u64>> {
        let head = self.head.read().as_ref().map(|h| h.id);
        let del = plan_retention(&st.manifest.entries, policy, now_ms, head);
        if del.is_empty() {
            return Ok(del);
        }
        let mut m = st.manifest.clone();
        m.entries.retain(|e| !del.contains(&e.id));
        #[cfg(any(test, feature = "testing"))]
        if self.fail_retention.swap(false, Ordering::SeqCst) {
            return Err(Error::io(
                format!("writing {}", self.dir.join(MANIFEST_NAME).display()),
                std::io::Error::other("simulated write failure during retention"),
            ));
        }
        self.write_manifest(&m)?;
        self.publish(&m);
        let old = std::mem::replace(&mut st.manifest, m);
        let mut readers = self.readers.lock();
        for e in old.entries.iter().filter(|e| del.contains(&e.id)) {
            readers.remove(&e.id);
            if let Err(err) = fs::remove_file(self.dir.join(&e.file_name)) {
                tracing::warn!(file = %e.file_name, %err, "could not delete a retired snapshot; it is removed at the next open");
            }
        }
        Ok(del)
    }
}
