//! Restoring a store from a snapshot: exactly the snapshot asked for, or —
//! only when the caller chose [`Fallback::NewestOlderGood`] — the newest
//! older snapshot whose chain verifies, reported with the pages that the
//! fallback lost.
//!
//! # Contract
//!
//! - [`StateSnapshotManager::restore`](super::StateSnapshotManager::restore)
//!   restores exactly the requested snapshot or returns an error; a damaged
//!   chain gives [`Error::SnapshotDamaged`], which names the snapshot, the
//!   damaged file and what is wrong with it, and says whether the target
//!   was written.
//! - A fallback happens only under [`Fallback::NewestOlderGood`]; the
//!   report's [`RestoreReport::fallback`] then says which snapshots were
//!   refused and why, and which pages of the requested state the restored
//!   one does not have ([`LostPages`]).
//! - Every page written has been checked against its sum in the snapshot's
//!   index; with [`SnapshotConfig::precheck_restore`](super::SnapshotConfig::precheck_restore)
//!   (the default) every chunk CRC of a chain is checked before its first
//!   page is written, so a chain damaged in its chunks leaves the target
//!   untouched.
//! - The target ends with the snapshot's page count: it is resized with
//!   [`PageStore::resize`] before any page is written. A target that cannot
//!   resize gives [`Error::RestoreTargetSize`] before anything is written —
//!   unless it is larger and the caller asked to keep the extra pages
//!   ([`RestoreOptions::keep_extra_pages`]), which are then left as they are.
//! - Pages are written a chunk at a time with [`PageStore::write_pages`],
//!   so a target that seals what it writes (a
//!   [`CorruptionDetector`](crate::CorruptionDetector), with a durable
//!   sidecar table) pays one log fsync per chunk, not one per page.
//!
//! The rules for a target that seals its pages are in the `snapshot`
//! module docs ("Restoring into a store that seals its pages").

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::chain::check_chain;
use super::format::SnapshotReader;
use super::inner::{Head, Inner, State};
use super::Operation;
use crate::corruption::read_hook::without_read_hook;
use crate::error::{Error, Result};
use crate::host::PageStore;
use crate::types::{Lsn, PageId};

/// What a restore may do when the requested snapshot's chain does not verify.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// Restore exactly the requested snapshot, or fail with
    /// [`Error::SnapshotDamaged`]. The default.
    #[default]
    Never,
    /// Restore the newest snapshot older than the requested one whose chain
    /// verifies, and report it in [`RestoreReport::fallback`].
    NewestOlderGood,
}

/// How [`StateSnapshotManager::restore_with`](super::StateSnapshotManager::restore_with) restores.
///
/// ```
/// use selfheal::snapshot::{Fallback, RestoreOptions};
/// let opts = RestoreOptions::new().fallback(Fallback::NewestOlderGood);
/// assert_eq!(opts.fallback_policy(), Fallback::NewestOlderGood);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    fallback: Fallback,
    keep_extra_pages: bool,
}

impl RestoreOptions {
    /// Exactly the requested snapshot, and a target of its page count.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// What to do when the requested snapshot's chain does not verify.
    /// Default [`Fallback::Never`].
    #[must_use]
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// Whether a target with more pages than the snapshot keeps its extra
    /// pages (as they are, not part of the restored state) instead of being
    /// shrunk with [`PageStore::resize`]. Default `false`: the target ends
    /// with exactly the snapshot's page count, and a target that cannot
    /// shrink is an error. A smaller target is always grown.
    #[must_use]
    pub fn keep_extra_pages(mut self, keep: bool) -> Self {
        self.keep_extra_pages = keep;
        self
    }

    /// The fallback policy.
    #[must_use]
    pub fn fallback_policy(&self) -> Fallback {
        self.fallback
    }

    /// Whether extra pages of a larger target are kept.
    #[must_use]
    pub fn keeps_extra_pages(&self) -> bool {
        self.keep_extra_pages
    }
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    /// The snapshot that was asked for.
    pub requested: u64,
    /// The snapshot whose state the store now holds: `requested`, unless a
    /// fallback was allowed and happened (then [`fallback`](Self::fallback)
    /// says so).
    pub restored: u64,
    /// Its LSN.
    pub lsn: Lsn,
    /// Its page count, which the target now has (plus
    /// [`extra_pages_kept`](Self::extra_pages_kept)).
    pub page_count: u64,
    /// Pages past the snapshot's page count that the target kept
    /// ([`RestoreOptions::keep_extra_pages`]); 0 when it was resized.
    pub extra_pages_kept: u64,
    /// Set when an older snapshot than the requested one was restored.
    pub fallback: Option<FallbackReport>,
    /// Page writes made (pages changed in incrementals are written once per
    /// snapshot of the chain that holds them; pages past the restored
    /// snapshot's page count are not written).
    pub pages_written: u64,
    /// The metadata blobs saved with the restored snapshot.
    pub metadata: Vec<(String, Vec<u8>)>,
}

/// What a fallback restore skipped and lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackReport {
    /// The snapshots tried before the restored one, newest first, with why
    /// each was refused (the first is the requested one).
    pub skipped: Vec<(u64, String)>,
    /// The pages of the requested state that the restored one does not hold.
    pub lost: LostPages,
}

/// The pages whose contents differ between the requested snapshot's state
/// and the restored one's.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostPages {
    /// The differing pages, ascending: pages whose fingerprints differ in
    /// the two states' indexes, and pages that exist in only one of them
    /// (the stores had different page counts). Each changed page is missed
    /// with a probability of about 2⁻⁶⁴ (see the fingerprint contract).
    Known(Vec<u64>),
    /// They cannot be known, and why: the requested snapshot's index cannot
    /// be read, or one of the two is of format 1, whose page CRCs cannot
    /// tell changed pages apart.
    Unknown {
        /// Why.
        reason: String,
    },
}

/// A chain member that cannot be restored from.
#[derive(Clone, Debug)]
struct Damage {
    member: u64,
    path: PathBuf,
    reason: String,
}

impl Damage {
    fn new(member: u64, path: PathBuf, e: &Error) -> Self {
        let reason = match e {
            Error::CorruptFile { offset, reason, .. } => {
                format!("corrupt at byte {offset}: {reason}")
            }
            other => other.to_string(),
        };
        Damage {
            member,
            path,
            reason,
        }
    }

    fn describe(&self) -> String {
        format!(
            "snapshot {} ({}) {}",
            self.member,
            self.path.display(),
            self.reason
        )
    }

    fn into_error(self, requested: u64, target_written: bool) -> Error {
        Error::SnapshotDamaged {
            requested,
            damaged: self.member,
            path: self.path,
            reason: self.reason,
            target_written,
        }
    }
}

enum ApplyError {
    /// The target failed, or refused a page nobody verified: no fallback is
    /// tried.
    Store(Error),
    /// The snapshot did: a fallback may be tried.
    Snapshot(Damage),
}

/// The refusal of a page of member `snapshot` that the target would not
/// vouch for.
fn unverified(snapshot: u64, page: u64, e: Error, target_written: bool) -> Error {
    let reason = match e {
        Error::UnverifiedCopy { reason, .. } => reason,
        other => other.to_string(),
    };
    Error::UnverifiedSnapshot {
        snapshot,
        page: PageId(page),
        reason,
        target_written,
    }
}

impl Inner {
    /// Restores `target` to snapshot `id`. Its reads of `target` never heal
    /// on read on this thread, for the reason
    /// [`take_snapshot`](Inner::take_snapshot) gives.
    pub(super) fn restore(
        &self,
        id: u64,
        target: &dyn PageStore,
        options: RestoreOptions,
    ) -> Result<RestoreReport> {
        without_read_hook(|| self.restore_unhooked(id, target, options))
    }

    fn restore_unhooked(
        &self,
        id: u64,
        target: &dyn PageStore,
        options: RestoreOptions,
    ) -> Result<RestoreReport> {
        self.check_alive()?;
        self.check_page_size("restore target", target.page_size())?;
        let mut st = self.lock_state()?;
        let before = (st.manifest.head, st.manifest.head_unknown);
        let wrote = AtomicBool::new(false);
        let res = self.restore_locked(&mut st, id, target, options, &wrote);
        if res.is_err() {
            let mut unknown = wrote.load(Ordering::Acquire);
            if !unknown && (st.manifest.head, st.manifest.head_unknown) != before {
                // Nothing was written: the restore point recorded before the
                // first write is taken back.
                if let Err(e) = self.record_restore_point(&mut st, before.0, before.1) {
                    tracing::warn!(error = %e, "a restore that wrote nothing could not take back the restore point it recorded; no snapshot serves a page until the next snapshot or restore");
                    unknown = true;
                }
            }
            if unknown {
                // Some pages of `target` may have been overwritten (or its size
                // changed): the dirty notices no longer describe what changed
                // since the head, and the head's copies may no longer match.
                self.dirty.invalidate();
                self.head_unknown.store(true, Ordering::Release);
            }
        }
        res
    }

    /// Replaces the manifest with one that records `head` (and
    /// `head_unknown`) as the restore point, crash-safely; `st.manifest`
    /// follows only once the new manifest is in place.
    fn record_restore_point(
        &self,
        st: &mut State,
        head: Option<u64>,
        head_unknown: bool,
    ) -> Result<()> {
        let mut m = st.manifest.clone();
        m.head = head;
        m.head_unknown = head_unknown;
        self.write_manifest(&m)?;
        self.publish(&m);
        st.manifest = m;
        Ok(())
    }

    fn restore_locked(
        &self,
        st: &mut State,
        id: u64,
        target: &dyn PageStore,
        options: RestoreOptions,
        wrote: &AtomicBool,
    ) -> Result<RestoreReport> {
        if st.manifest.get(id).is_none() {
            return Err(Error::SnapshotNotFound { id });
        }
        let mut candidates = vec![id];
        if options.fallback == Fallback::NewestOlderGood {
            candidates.extend(
                st.manifest
                    .entries
                    .iter()
                    .rev()
                    .map(|e| e.id)
                    .filter(|&c| c < id),
            );
        }
        let mut checked: HashMap<u64, std::result::Result<(), Damage>> = HashMap::new();
        let mut skipped: Vec<(u64, String)> = Vec::new();
        for c in candidates {
            let readers = match self.prepare_chain(st, c, &mut checked) {
                Ok(r) => r,
                Err(d) => {
                    if options.fallback == Fallback::Never {
                        return Err(d.into_error(id, false));
                    }
                    tracing::warn!(snapshot = c, why = %d.describe(), "snapshot does not verify; trying an older one");
                    skipped.push((c, d.describe()));
                    continue;
                }
            };
            let top = readers.last().expect("a chain has a member").clone();
            let page_count = top.header.page_count;
            if self.precheck_restore {
                match self.check_unverified_pages(&readers, target) {
                    Ok(()) => {}
                    Err(ApplyError::Store(e)) => return Err(e),
                    Err(ApplyError::Snapshot(d)) => {
                        if options.fallback == Fallback::Never {
                            return Err(d.into_error(id, false));
                        }
                        tracing::warn!(snapshot = c, why = %d.describe(), "snapshot damage found while checking its pages; trying an older one");
                        skipped.push((c, d.describe()));
                        checked.insert(d.member, Err(d));
                        continue;
                    }
                }
            }
            if !st.manifest.head_unknown {
                // Durably before the first write: a crash from here on must
                // not leave the head's chain (or any snapshot newer than
                // the target) serving pages of a history the store is
                // leaving.
                let head = st.manifest.head;
                self.record_restore_point(st, head, true)?;
            }
            let extra_pages_kept = self.fit_target(c, page_count, target, options, wrote)?;
            match self.apply_chain(&readers, target, wrote) {
                Ok(pages_written) => {
                    target.sync()?;
                    // Snapshots newer than `c` describe a history the store
                    // left: recorded before the head moves, so that no open
                    // after this makes them the head again.
                    self.record_restore_point(st, Some(c), false)?;
                    let info = st.manifest.get(c).cloned().expect("listed");
                    *self.head.write() = Some(Head {
                        id: c,
                        lsn: info.lsn,
                        page_count,
                        chain: readers.iter().map(|r| r.header.id).collect(),
                    });
                    st.head_fps = top.index.sums.fingerprints().map(|f| (c, f.clone()));
                    // `target` need not be the store the host snapshots next,
                    // so notices are trusted again only after a paused snapshot.
                    self.dirty.invalidate();
                    self.head_unknown.store(false, Ordering::Release);
                    let fallback = (c != id).then(|| {
                        tracing::warn!(
                            requested = id,
                            restored = c,
                            "restored an older snapshot than asked for, as the fallback policy allows"
                        );
                        FallbackReport {
                            lost: self.lost_pages(st, id, &top),
                            skipped: std::mem::take(&mut skipped),
                        }
                    });
                    return Ok(RestoreReport {
                        requested: id,
                        restored: c,
                        lsn: info.lsn,
                        page_count,
                        extra_pages_kept,
                        fallback,
                        pages_written,
                        metadata: top.index.metadata.clone(),
                    });
                }
                Err(ApplyError::Store(e)) => return Err(e),
                Err(ApplyError::Snapshot(d)) => {
                    if options.fallback == Fallback::Never {
                        return Err(d.into_error(id, wrote.load(Ordering::Acquire)));
                    }
                    tracing::warn!(snapshot = c, why = %d.describe(), "snapshot damage found while restoring; trying an older one");
                    skipped.push((c, d.describe()));
                    checked.insert(d.member, Err(d));
                }
            }
        }
        Err(Error::NoUsableSnapshot {
            reason: skipped
                .iter()
                .map(|(c, why)| format!("for snapshot {c}: {why}"))
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    /// The checked readers of `c`'s chain (every chunk CRC too, unless
    /// `precheck_restore` is off), or the first member that is damaged.
    /// Results per member are kept in `checked` across candidates.
    fn prepare_chain(
        &self,
        st: &State,
        c: u64,
        checked: &mut HashMap<u64, std::result::Result<(), Damage>>,
    ) -> std::result::Result<Vec<Arc<SnapshotReader>>, Damage> {
        let path_of = |m: u64| {
            self.dir.join(
                st.manifest
                    .get(m)
                    .map_or_else(|| super::snapshot_file_name(m), |e| e.file_name.clone()),
            )
        };
        let chain = st
            .manifest
            .chain(c)
            .map_err(|e| Damage::new(c, path_of(c), &e))?;
        let mut readers = Vec::with_capacity(chain.len());
        for m in chain {
            if let Some(Err(d)) = checked.get(&m) {
                return Err(d.clone());
            }
            let checked_r = match self.reader_by_id(st, m) {
                Ok(r) if self.precheck_restore && !checked.contains_key(&m) => r
                    .check_chunk_crcs(self.threads)
                    .map(|()| r)
                    .map_err(|e| Damage::new(m, path_of(m), &e)),
                Ok(r) => Ok(r),
                Err(e) => Err(Damage::new(m, path_of(m), &e)),
            };
            match checked_r {
                Ok(r) => {
                    checked.insert(m, Ok(()));
                    readers.push(r);
                }
                Err(d) => {
                    checked.insert(m, Err(d.clone()));
                    return Err(d);
                }
            }
        }
        check_chain(&readers).map_err(|(m, e)| {
            let d = Damage::new(m, path_of(m), &e);
            checked.insert(m, Err(d.clone()));
            d
        })?;
        Ok(readers)
    }

    /// Gives `target` the page count `need` of snapshot `c` before anything
    /// is written; returns how many extra pages it keeps.
    fn fit_target(
        &self,
        c: u64,
        need: u64,
        target: &dyn PageStore,
        options: RestoreOptions,
        wrote: &AtomicBool,
    ) -> Result<u64> {
        let have = target.page_count();
        if have == need {
            return Ok(0);
        }
        if have > need && options.keep_extra_pages {
            return Ok(have - need);
        }
        match target.resize(need) {
            Ok(()) => {
                wrote.store(true, Ordering::Release);
                let now = target.page_count();
                if now != need {
                    return Err(Error::RestoreTargetSize {
                        snapshot: c,
                        needed: need,
                        actual: now,
                        reason: format!("the target reported a successful resize from {have} pages but now has {now}"),
                    });
                }
                Ok(0)
            }
            // The store says it did not change.
            Err(e @ (Error::Unsupported { .. } | Error::InvalidArgument { .. })) => {
                Err(Error::RestoreTargetSize {
                    snapshot: c,
                    needed: need,
                    actual: have,
                    reason: e.to_string(),
                })
            }
            Err(e) => {
                // An I/O error: its size is unknown now.
                wrote.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// The pages whose contents differ between snapshot `requested` and the
    /// restored `top` (see [`LostPages`]).
    fn lost_pages(&self, st: &State, requested: u64, top: &SnapshotReader) -> LostPages {
        let req = match st.manifest.get(requested).map(|info| self.reader(info)) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                return LostPages::Unknown {
                    reason: format!("the index of snapshot {requested} cannot be read: {e}"),
                }
            }
            None => {
                return LostPages::Unknown {
                    reason: format!("snapshot {requested} is no longer listed"),
                }
            }
        };
        let (Some(want), Some(have)) =
            (req.index.sums.fingerprints(), top.index.sums.fingerprints())
        else {
            let old = if req.index.sums.fingerprints().is_none() {
                requested
            } else {
                top.header.id
            };
            return LostPages::Unknown {
                reason: format!(
                    "snapshot {old} is of format 1, whose page checksums cannot tell changed pages apart"
                ),
            };
        };
        let common = want.len().min(have.len());
        let mut lost: Vec<u64> = (0..common)
            .filter(|&p| want[p] != have[p])
            .map(|p| p as u64)
            .collect();
        lost.extend(common as u64..want.len().max(have.len()) as u64);
        LostPages::Known(lost)
    }

    /// Before anything is written: when `target` seals what it writes,
    /// checks every page that the chain's unverified members would write
    /// with [`PageStore::check_unverified`].
    fn check_unverified_pages(
        &self,
        readers: &[Arc<SnapshotReader>],
        target: &dyn PageStore,
    ) -> std::result::Result<(), ApplyError> {
        if !target.verifies_reads() {
            return Ok(());
        }
        let limit = readers.last().map_or(0, |r| r.header.page_count);
        let ps = self.page_size;
        for r in readers.iter().filter(|r| !r.header.pages_verified) {
            let refused: Mutex<Option<Error>> = Mutex::new(None);
            let res = r.for_each_chunk(self.threads, !self.precheck_restore, &|c, raw| {
                let first = c * r.header.chunk_pages;
                for (slot, b) in raw.chunks_exact(ps).enumerate() {
                    let page = r.stored_page(first + slot);
                    if page >= limit {
                        continue;
                    }
                    if let Err(e) = target.check_unverified(PageId(page), b) {
                        *refused.lock() = Some(unverified(r.header.id, page, e, false));
                        return Err(Error::Stopped {
                            component: "restore",
                            reason: "the target refused a page".into(),
                        });
                    }
                }
                Ok(())
            });
            if let Some(e) = refused.into_inner() {
                return Err(ApplyError::Store(e));
            }
            res.map_err(|e| {
                ApplyError::Snapshot(Damage::new(r.header.id, r.path().to_path_buf(), &e))
            })?;
        }
        Ok(())
    }

    /// Writes the chain's pages into `target`, base first, a chunk at a
    /// time with [`PageStore::write_pages`]; pages of members that were not
    /// verified are checked by the target first.
    fn apply_chain(
        &self,
        readers: &[Arc<SnapshotReader>],
        target: &dyn PageStore,
        wrote: &AtomicBool,
    ) -> std::result::Result<u64, ApplyError> {
        let ps = self.page_size;
        // Older members of the chain may hold pages of a larger store; the
        // pages at or past the restored snapshot's page count are not part
        // of it and are not written.
        let limit = readers.last().map_or(0, |r| r.header.page_count);
        let total: u64 = readers
            .iter()
            .map(|r| r.index.stored_pages(r.header.page_count) * ps as u64)
            .sum();
        let _g = self.progress.start(Operation::Restore, total);
        let written = AtomicU64::new(0);
        let seals = target.verifies_reads();
        for r in readers {
            let check = seals && !r.header.pages_verified;
            let store_err: Mutex<Option<Error>> = Mutex::new(None);
            let refused: Mutex<Option<(u64, Error)>> = Mutex::new(None);
            let res = r.for_each_chunk(self.threads, !self.precheck_restore, &|c, raw| {
                let first = c * r.header.chunk_pages;
                let raw_len = raw.len() as u64;
                let mut batch: Vec<(PageId, &mut [u8])> = Vec::with_capacity(raw.len() / ps);
                for (slot, b) in raw.chunks_exact_mut(ps).enumerate() {
                    let page = r.stored_page(first + slot);
                    if page >= limit {
                        continue;
                    }
                    if check {
                        if let Err(e) = target.check_unverified(PageId(page), b) {
                            *refused.lock() = Some((page, e));
                            return Err(Error::Stopped {
                                component: "restore",
                                reason: "the target refused a page".into(),
                            });
                        }
                    }
                    batch.push((PageId(page), b));
                }
                if !batch.is_empty() {
                    wrote.store(true, Ordering::Release);
                    if let Err(e) = target.write_pages(&mut batch) {
                        *store_err.lock() = Some(e);
                        return Err(Error::Stopped {
                            component: "restore",
                            reason: "the target store failed".into(),
                        });
                    }
                    written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                self.progress.add(raw_len);
                Ok(())
            });
            if let Some(e) = store_err.into_inner() {
                return Err(ApplyError::Store(e));
            }
            if let Some((page, e)) = refused.into_inner() {
                // Every lane has stopped: whether anything was written is known.
                let written = wrote.load(Ordering::Acquire);
                return Err(ApplyError::Store(unverified(r.header.id, page, e, written)));
            }
            res.map_err(|e| {
                ApplyError::Snapshot(Damage::new(r.header.id, r.path().to_path_buf(), &e))
            })?;
        }
        Ok(written.into_inner())
    }
}
