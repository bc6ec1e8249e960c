//! The audit log: every decision and action of the healer, durable,
//! CRC-framed and hash-chained, bounded in size with rotation, queryable by
//! the last N, by target and by incident.
//!
//! Records go into segment files (layouts in `audit/record.rs`). By default the log
//! commits in groups: an [`append`](AuditLog::append) writes its batch of
//! frames without an fsync, and [`sync`](AuditLog::sync) makes everything
//! appended so far durable with one fsync — the recovery manager calls it
//! when its queue drains, at most every
//! [`audit_sync_interval`](crate::RecoveryConfig::audit_sync_interval), and
//! at stop. [`AuditConfig::sync_every_append`] makes each append fsync
//! before it returns instead. A new segment is started when the current one
//! reaches `segment_bytes` (the old one is synced first, so only the newest
//! segment ever holds unsynced records), and the oldest segments are
//! removed while the log holds more than `max_bytes`.
//!
//! # Contract
//! - **Tampering and rot are detected.** Every frame has a CRC, and every
//!   record carries the SHA-256 of the record before: a record changed after
//!   it was written fails its CRC or breaks the chain at the next record.
//!   [`AuditLog::damage`] lists what the open found and
//!   [`AuditLog::verify`] checks the whole log again; each is a typed
//!   [`Error::CorruptFile`] naming the file and the offset.
//! - **Damage never stops the log.** Records before damage stay readable
//!   (and valid frames after it are read too); the log appends to a fresh
//!   segment after a damaged one, and an audit log that cannot be written
//!   never stops recovery (the healer logs the error and goes on).
//! - **A crash loses at most the records appended since the last sync**
//!   (with [`sync_every_append`](AuditConfig::sync_every_append): only what
//!   was not yet appended). Under the manager that is at most one
//!   `audit_sync_interval` of records; it never loses a remedy's effect,
//!   which is made durable by the remedy's own path (a repaired page is
//!   written and synced through the detector) whatever happens to its
//!   record. What survives is a prefix of the log: in order, chained, with
//!   no hole. Each record says which sequence number was known durable when
//!   it was written (`synced_through`). At open, a frame that does not
//!   decode in the newest segment is a torn tail — cut off, with every frame
//!   after it — when no later valid frame says it was durable (a power loss
//!   can leave holes anywhere in the unsynced records, which may span many
//!   appends); if a later frame says it was, it is damage and is reported.
//!
//! - **The healer writes ahead.** Before a remedy acts, the healer appends
//!   (one `write(2)`, not synced) every record of the incident held so
//!   far, ending with its `Decided "try <remedy>"` record; the rest —
//!   acted, verified, closed — is appended when the incident closes. So
//!   after a **process crash** (the kernel keeps every byte written) during
//!   a remedy, the log holds the decision for every effect the remedy may
//!   have had on the store (test `tests/healer_audit_ahead.rs`). After a
//!   **power loss**, the log holds what was synced: under the manager, the
//!   records of every interval before the last
//!   [`audit_sync_interval`](crate::RecoveryConfig::audit_sync_interval)
//!   (and everything, with `sync_every_append`). A page repaired and
//!   synced within that last interval can then have no record: the
//!   decision is written ahead but not synced ahead, which would cost one
//!   fsync per remedy on the heal-on-read path.
//!
//! # A crash at each step
//!
//! | step                                   | what the next open sees                              |
//! |----------------------------------------|------------------------------------------------------|
//! | creating a segment, before its sync     | no segment, or one with a torn header (removed)      |
//! | appending a batch (no fsync by default) | the records synced before, then some of the unsynced ones, torn or with holes: cut at the first gap |
//! | `sync`, before its fsync returned       | as above                                             |
//! | after `sync`'s fsync                    | every record appended before it                      |
//! | starting a segment (the old one synced first) | as the two rows above, for the old segment     |
//! | removing an old segment                  | the segment, or not (both consistent)               |
//!
//! **The end of the log is anchored.** Every sync also replaces a small
//! framed head file (`audit.head`: the number and hash of the newest durable
//! record, written after the segment's fsync). At open, durable records the
//! head names and the segments no longer hold — the newest segment deleted,
//! or cut at a record boundary, or its last synced batch rotted and taken for
//! a torn tail — are damage ([`Error::CorruptFile`], in
//! [`AuditLog::damage`]), and the next record is numbered after the head, so
//! the gap stays visible at every later open. Deleting the head file as well
//! is not detected: [`head_hash`](AuditLog::head_hash) kept by the host is the
//! anchor for that.
//!
//! **Sequence numbers are bounded** (at 2^62): a header or frame naming more
//! is damage, and an append that would pass the bound (only a damaged
//! segment's name can bring the log near it) is a typed
//! [`Error::CorruptFile`], never a wrapped sequence.
//!
//! **Segments do not overlap.** A segment holds the records from the number
//! its name and header give (both, equal: record 1 or later) up to the next
//! segment's name. A header that disagrees with its file name keeps the
//! segment aside; a record at or past the next segment's first is damage
//! naming the segment and the record's offset. So the records an open keeps
//! ascend across the whole log, and the next number given is past every one.

mod head;
mod load;
pub(crate) mod record;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::checksum::storage::{DirTableStorage, TableStorage};
use crate::clock::{Clock, SystemClock};
use crate::dirlock::DirLock;
use crate::error::{Error, Result};

use head::Head;
use load::{load, read_segment, Inner, Segment};
use record::{
    parse_segment_header, push_frame, segment_header, segment_name, MAX_SEQ, SEGMENT_HEADER_LEN,
};
pub use record::{AuditEntry, AuditRecord, EntryKind, MAX_BODY_LEN, MAX_TARGET_LEN, MAX_TEXT_LEN};

const COMPONENT: &str = "audit log";

/// The file in the log's directory that says who owns it.
const OWNER_LOCK: &str = "audit.lock";

/// Configuration of an [`AuditLog`].
#[must_use]
pub struct AuditConfig {
    segment_bytes: u64,
    max_bytes: u64,
    sync_every_append: bool,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditConfig")
            .field("segment_bytes", &self.segment_bytes)
            .field("max_bytes", &self.max_bytes)
            .field("sync_every_append", &self.sync_every_append)
            .finish_non_exhaustive()
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl AuditConfig {
    /// Defaults: 4 MiB segments, 64 MiB in all, group commit (appends are
    /// made durable by [`AuditLog::sync`]), the system clock.
    pub fn new() -> Self {
        AuditConfig {
            segment_bytes: 4 << 20,
            max_bytes: 64 << 20,
            sync_every_append: false,
            clock: SystemClock::shared(),
        }
    }

    /// Size at which a new segment is started (default 4 MiB; at least 4 KiB).
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Most bytes kept: older segments are removed beyond it (default 64
    /// MiB; at least twice `segment_bytes`).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Whether every [`append`](AuditLog::append) fsyncs before it returns
    /// (default `false`: appends are written and made durable together by
    /// [`AuditLog::sync`]). For a host that wants each record durable once
    /// its append returned, at one fsync per append.
    pub fn sync_every_append(mut self, yes: bool) -> Self {
        self.sync_every_append = yes;
        self
    }

    /// The clock that stamps records (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.segment_bytes < 4_096 {
            return Err(Error::config(
                "segment_bytes",
                format!("is {}; it must be at least 4096", self.segment_bytes),
            ));
        }
        if self.max_bytes < self.segment_bytes.saturating_mul(2) {
            return Err(Error::config(
                "max_bytes",
                format!(
                    "is {}; it must be at least twice segment_bytes ({})",
                    self.max_bytes, self.segment_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Opens (creating it if needed) the log in directory `dir`, which it
    /// owns until dropped (`dir/audit.lock`): a second log on the same
    /// directory, in this process or another, is refused.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`]; [`Error::Io`] when the directory cannot be
    /// created or listed; [`Error::DirectoryLocked`] when another log owns
    /// the directory. Damage in the log is not an error: see
    /// [`AuditLog::damage`].
    pub fn open(self, dir: &Path) -> Result<AuditLog> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating directory {}", dir.display()), e))?;
        let owner = DirLock::acquire(
            dir,
            OWNER_LOCK,
            COMPONENT,
            "drop the other AuditLog opened on this directory (or the AutoRecoveryManager holding it), or stop its process first, or use another directory",
        )?;
        let mut log = self.open_on(Arc::new(DirTableStorage::new(dir)))?;
        log._owner = Some(owner);
        Ok(log)
    }

    /// Opens the log on `storage` (a crash simulator in tests).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_on(self, storage: Arc<dyn TableStorage>) -> Result<AuditLog> {
        self.validate()?;
        let inner = load(&*storage)?;
        let head_seq = inner.synced_through.max(inner.head_seq);
        for e in &inner.damage {
            tracing::error!(error = %e, "the audit log is damaged");
        }
        Ok(AuditLog {
            storage,
            clock: self.clock,
            segment_bytes: self.segment_bytes,
            max_bytes: self.max_bytes,
            sync_every_append: self.sync_every_append,
            inner: Mutex::new(inner),
            sync_gate: Mutex::new(()),
            head_written: Mutex::new(head_seq),
            _owner: None,
        })
    }
}

/// Which records a [`AuditLog::query`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct AuditQuery {
    target: Option<String>,
    incident: Option<u64>,
    last: Option<usize>,
}

impl AuditQuery {
    /// Every record.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only records about `target` (its text, as recorded).
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Only records of incident `id`.
    pub fn incident(mut self, id: u64) -> Self {
        self.incident = Some(id);
        self
    }

    /// Only the newest `n` matching records.
    pub fn last(mut self, n: usize) -> Self {
        self.last = Some(n);
        self
    }

    fn matches(&self, r: &AuditRecord) -> bool {
        self.target.as_deref().is_none_or(|t| t == r.entry.target)
            && self.incident.is_none_or(|i| r.entry.incident == Some(i))
    }
}

/// The audit log. See the module docs.
///
/// ```
/// use selfheal::audit::{AuditConfig, AuditEntry, AuditQuery, EntryKind};
/// let dir = tempfile::tempdir().expect("a temporary directory");
/// let log = AuditConfig::new().open(dir.path())?;
/// log.append(&[AuditEntry {
///     incident: Some(1),
///     target: "page 7".into(),
///     kind: EntryKind::Acted,
///     text: "repaired from replica m1".into(),
/// }])?;
/// let found = log.query(&AuditQuery::all().target("page 7"))?;
/// assert_eq!(found[0].entry.text, "repaired from replica m1");
/// log.verify()?;
/// # Ok::<(), selfheal::Error>(())
/// ```
pub struct AuditLog {
    storage: Arc<dyn TableStorage>,
    clock: Arc<dyn Clock>,
    segment_bytes: u64,
    max_bytes: u64,
    sync_every_append: bool,
    inner: Mutex<Inner>,
    /// One [`sync`](AuditLog::sync) at a time.
    sync_gate: Mutex<()>,
    /// The sequence number the head file holds; one head write at a time
    /// (taken last, never held while another lock is taken).
    head_written: Mutex<u64>,
    /// The directory's one owner, for a log opened by path.
    _owner: Option<DirLock>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("AuditLog")
            .field("storage", &self.storage)
            .field("segments", &inner.segments.len())
            .field("next_seq", &inner.next_seq)
            .field("damage", &inner.damage.len())
            .finish_non_exhaustive()
    }
}

impl Drop for AuditLog {
    /// Syncs what is unsynced, best effort (an error is logged).
    fn drop(&mut self) {
        if self.has_unsynced() {
            if let Err(e) = self.sync() {
                tracing::warn!(error = %e, "syncing the audit log as it is dropped");
            }
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl AuditLog {
    /// Appends `entries` as one batch and returns the sequence number of
    /// the first. They are durable after the next [`sync`](Self::sync)
    /// (with [`AuditConfig::sync_every_append`], when this returns).
    ///
    /// # Errors
    /// [`Error::Io`] from the storage, after which the log is poisoned
    /// ([`Error::Poisoned`] on every later append: reopen it); nothing that
    /// this call appended can then be counted on.
    pub fn append(&self, entries: &[AuditEntry]) -> Result<u64> {
        let mut inner = self.inner.lock();
        if let Some(reason) = &inner.poisoned {
            return Err(Error::Poisoned {
                component: COMPONENT,
                reason: reason.clone(),
            });
        }
        let first = inner.next_seq;
        if entries.is_empty() {
            return Ok(first);
        }
        let room = (entries.len() as u64)
            .checked_add(first)
            .is_some_and(|end| end <= MAX_SEQ + 1);
        if !room {
            // Only a damaged segment's name can push the next number this
            // far: refuse, typed, rather than wrap the sequence.
            let name = inner
                .segments
                .iter()
                .max_by_key(|s| s.first_seq)
                .map_or_else(|| "audit log".to_string(), |s| s.name.clone());
            return Err(Error::corrupt_file(
                self.storage.path(&name),
                8,
                format!(
                    "the next record would be number {first}, and {} more do not fit below the largest a log holds ({MAX_SEQ}): a segment names a number no real log reaches; move the log's directory aside and open a new one",
                    entries.len()
                ),
            ));
        }
        let r = self.append_locked(&mut inner, entries);
        if let Err(e) = &r {
            inner.poisoned = Some(format!("an append failed: {e}; reopen the log"));
        }
        r.map(|()| first)
    }

    fn append_locked(&self, inner: &mut Inner, entries: &[AuditEntry]) -> Result<()> {
        let at_ns = self.clock.now_ns();
        let wall = unix_ms();
        // One buffer for the whole batch: each frame is encoded in place.
        let mut bytes = Vec::with_capacity(entries.len() * 192);
        let mut seq = inner.next_seq;
        let mut prev = inner.last_hash;
        for e in entries {
            prev = push_frame(&mut bytes, seq, inner.synced_through, at_ns, wall, &prev, e);
            seq += 1;
        }
        let need_new = inner
            .segments
            .last()
            .is_none_or(|s| !s.appendable || s.len >= self.segment_bytes);
        if need_new {
            // The old segment's records are made durable first: only the
            // newest segment may end in unsynced records.
            self.sync_locked(inner)?;
            let name = segment_name(inner.next_seq);
            self.storage.write(&name, &segment_header(inner.next_seq))?;
            self.storage.sync(&name)?;
            self.storage.sync_dir()?;
            let first_seq = inner.next_seq;
            if let Some(s) = inner.segments.last_mut() {
                s.appendable = false;
                s.end = s.end.min(first_seq);
            }
            inner.segments.push(Segment {
                name,
                first_seq,
                end: MAX_SEQ + 1,
                len: SEGMENT_HEADER_LEN as u64,
                appendable: true,
            });
        }
        let seg = inner.segments.last_mut().expect("a segment to append to");
        self.storage.append(&seg.name, &bytes)?;
        seg.len += bytes.len() as u64;
        inner.next_seq = seq;
        inner.last_hash = prev;
        if self.sync_every_append {
            self.sync_locked(inner)?;
        }
        self.trim(inner)
    }

    /// Makes every record appended so far durable (one fsync of the newest
    /// segment; nothing when nothing is unsynced).
    ///
    /// # Errors
    /// [`Error::Io`] from the storage, after which the log is poisoned as
    /// after a failed append; [`Error::Poisoned`] when it already is.
    ///
    /// The fsync runs without the log's lock: appends go on meanwhile (and
    /// are covered by the next sync).
    pub fn sync(&self) -> Result<()> {
        let _one = self.sync_gate.lock();
        let (through, name) = {
            let mut inner = self.inner.lock();
            if let Some(reason) = &inner.poisoned {
                return Err(Error::Poisoned {
                    component: COMPONENT,
                    reason: reason.clone(),
                });
            }
            if inner.synced_through + 1 >= inner.next_seq {
                return Ok(());
            }
            let name = inner
                .segments
                .iter()
                .rev()
                .find(|s| s.appendable)
                .map(|s| s.name.clone());
            // Not removed by a rotation's trim while it is synced.
            inner.syncing.clone_from(&name);
            (
                Head {
                    seq: inner.next_seq - 1,
                    hash: inner.last_hash,
                },
                name,
            )
        };
        let r = name
            .as_ref()
            .map_or(Ok(()), |n| self.storage.sync(n))
            .and_then(|()| self.write_head(through));
        let mut inner = self.inner.lock();
        inner.syncing = None;
        match r {
            Ok(()) => {
                inner.synced_through = inner.synced_through.max(through.seq);
                Ok(())
            }
            Err(e) => {
                inner.poisoned = Some(format!("a sync failed: {e}; reopen the log"));
                Err(e)
            }
        }
    }

    /// Whether records were appended since the last sync.
    #[must_use]
    pub fn has_unsynced(&self) -> bool {
        let inner = self.inner.lock();
        inner.synced_through + 1 < inner.next_seq && inner.poisoned.is_none()
    }

    /// The sequence number of the newest record known durable (0: none).
    #[must_use]
    pub fn synced_through(&self) -> u64 {
        self.inner.lock().synced_through
    }

    /// Replaces the head file with `head` unless it already names that
    /// record or a newer one (the head never moves back).
    fn write_head(&self, head: Head) -> Result<()> {
        let mut written = self.head_written.lock();
        if head.seq <= *written {
            return Ok(());
        }
        head::write(&*self.storage, head)?;
        *written = head.seq;
        Ok(())
    }

    fn sync_locked(&self, inner: &mut Inner) -> Result<()> {
        if inner.synced_through + 1 >= inner.next_seq {
            return Ok(());
        }
        if let Some(seg) = inner.segments.iter().rev().find(|s| s.appendable) {
            self.storage.sync(&seg.name)?;
        }
        self.write_head(Head {
            seq: inner.next_seq - 1,
            hash: inner.last_hash,
        })?;
        inner.synced_through = inner.next_seq - 1;
        Ok(())
    }

    /// Removes the oldest segments while the log holds more than `max_bytes`.
    fn trim(&self, inner: &mut Inner) -> Result<()> {
        let mut total: u64 = inner.segments.iter().map(|s| s.len).sum();
        let mut removed = false;
        while total > self.max_bytes && inner.segments.len() > 1 {
            if inner.syncing.as_deref() == Some(inner.segments[0].name.as_str()) {
                // Being synced: removed by a later trim.
                break;
            }
            let oldest = inner.segments.remove(0);
            self.storage.remove(&oldest.name)?;
            total -= oldest.len;
            removed = true;
        }
        if removed {
            self.storage.sync_dir()?;
        }
        Ok(())
    }

    /// What the open found wrong (damage, broken chains, lost segments),
    /// each a [`Error::CorruptFile`] naming the file and offset.
    #[must_use]
    pub fn damage(&self) -> Vec<Error> {
        self.inner
            .lock()
            .damage
            .iter()
            .map(|e| match e {
                Error::CorruptFile {
                    path,
                    offset,
                    reason,
                } => Error::corrupt_file(path, *offset, reason.clone()),
                other => Error::corrupt_file("audit log", 0, other.to_string()),
            })
            .collect()
    }

    /// The hash of the newest record (zeros for an empty log): a host that
    /// keeps it elsewhere can tell whether the log was rewritten.
    #[must_use]
    pub fn head_hash(&self) -> [u8; 32] {
        self.inner.lock().last_hash
    }

    /// The sequence number the next record will get.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.inner.lock().next_seq
    }

    /// Reads every segment again and checks every frame, the sequence and
    /// the hash chain.
    ///
    /// # Errors
    /// The first damage found, as [`Error::CorruptFile`]; [`Error::Io`].
    pub fn verify(&self) -> Result<()> {
        let segments = self.inner.lock().segments.clone();
        let mut prev: Option<AuditRecord> = None;
        for s in &segments {
            let path = self.storage.path(&s.name);
            let bytes = self.storage.read(&s.name)?.unwrap_or_default();
            let bytes = &bytes[..bytes.len().min(s.len as usize)];
            match parse_segment_header(bytes) {
                Err(reason) => return Err(Error::corrupt_file(&path, 0, reason)),
                Ok(first) if first != s.first_seq => {
                    return Err(Error::corrupt_file(
                        &path,
                        8,
                        format!(
                            "the header names record {first}, the file name record {}",
                            s.first_seq
                        ),
                    ))
                }
                Ok(_) => {}
            }
            let read = read_segment(bytes, s.first_seq, s.end);
            if let Some((offset, reason)) = read.failure {
                return Err(Error::corrupt_file(&path, offset, reason));
            }
            for r in read.records {
                if let Some(p) = &prev {
                    if r.seq == p.seq + 1 && r.prev_hash != p.hash {
                        return Err(Error::corrupt_file(
                            &path,
                            0,
                            format!("the hash chain breaks at record {}", r.seq),
                        ));
                    }
                }
                prev = Some(r);
            }
        }
        Ok(())
    }

    /// The records `q` selects, oldest first.
    ///
    /// # Errors
    /// [`Error::Io`] when a segment cannot be read. Damaged parts are
    /// skipped (see [`damage`](Self::damage)).
    pub fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let segments = self.inner.lock().segments.clone();
        let mut out: Vec<AuditRecord> = Vec::new();
        for s in segments.iter().rev() {
            let bytes = self.storage.read(&s.name)?.unwrap_or_default();
            let bytes = &bytes[..bytes.len().min(s.len as usize)];
            // A segment whose header the open found damaged is kept aside:
            // its frames are not the log's (see `damage`).
            if parse_segment_header(bytes) != Ok(s.first_seq) {
                continue;
            }
            let read = read_segment(bytes, s.first_seq, s.end);
            for r in read.records.into_iter().rev() {
                if q.matches(&r) {
                    out.push(r);
                    if q.last.is_some_and(|n| out.len() >= n) {
                        out.reverse();
                        return Ok(out);
                    }
                }
            }
        }
        out.reverse();
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_layout;
