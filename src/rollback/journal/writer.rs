//! The append side: buffered encoding, segment rotation, group commit and the
//! sticky poisoned state.
//!
//! Appends encode into an in-memory buffer under one short lock. Bytes reach
//! the storage only in the hands of the one thread that holds the I/O token:
//! a thread that needs durability becomes the leader when no one holds it,
//! takes everything buffered (its own records and those of every other
//! thread), writes it, fsyncs once, and wakes everyone whose LSN is now
//! durable. Threads that arrive while a leader is syncing wait and are served
//! by the next one: concurrent commits share fsyncs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::types::{Lsn, PageId};

use super::record::{encode_undo, Record, SegmentHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::recovery::{JournalScan, SegMeta};
use super::storage::JournalStorage;
use super::UNDO_FIXED_LEN;
use crate::rollback::TxnId;

const COMPONENT: &str = "undo journal";

/// Sizes and limits of the writer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JournalConfig {
    pub segment_size: u64,
    pub buffer_bytes: usize,
    pub sync_wait_timeout: Duration,
}

/// Counters of the journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Records appended since open.
    pub records: u64,
    /// Record bytes appended since open.
    pub bytes: u64,
    /// Commit records appended since open.
    pub commits: u64,
    /// Group syncs (each one fsync of the tail segment) since open.
    pub fsyncs: u64,
    /// Every record up to this LSN is durable.
    pub durable_lsn: Lsn,
    /// The LSN the next record gets.
    pub next_lsn: Lsn,
    /// Segments present.
    pub segments: u64,
    /// Segments removed by truncation since open.
    pub segments_removed: u64,
    /// Whether a failed write or fsync has poisoned the journal.
    pub poisoned: bool,
}

impl JournalStats {
    /// Commit records per fsync: how well group commit shares syncs.
    #[must_use]
    pub fn commits_per_fsync(&self) -> f64 {
        if self.fsyncs == 0 {
            return 0.0;
        }
        self.commits as f64 / self.fsyncs as f64
    }
}

struct Chunk {
    segment: u64,
    create: Option<[u8; SEGMENT_HEADER_LEN]>,
    bytes: Vec<u8>,
}

struct Inner {
    next_lsn: u64,
    next_txn: u64,
    pending: Vec<Chunk>,
    pending_bytes: usize,
    tail_segment: u64,
    tail_len: u64,
    next_segment: u64,
    /// The segment the I/O token holder last wrote to.
    io_segment: u64,
    io_busy: bool,
    poison: Option<String>,
    segments: VecDeque<SegMeta>,
    spare: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    bytes: AtomicU64,
    commits: AtomicU64,
    fsyncs: AtomicU64,
    removed: AtomicU64,
}

/// The append side of the undo journal.
pub(crate) struct Journal {
    storage: Arc<dyn JournalStorage>,
    cfg: JournalConfig,
    inner: Mutex<Inner>,
    cv: Condvar,
    durable: AtomicU64,
    poisoned: AtomicBool,
    counters: Counters,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("storage", &self.storage)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens for appending after `scan` (which already repaired the files).
    pub(crate) fn open(
        storage: Arc<dyn JournalStorage>,
        cfg: JournalConfig,
        scan: &JournalScan,
    ) -> Result<Journal> {
        let mut segments: VecDeque<SegMeta> = scan.segments.iter().copied().collect();
        let (tail_segment, tail_len, next_segment) = match segments.back() {
            Some(last) => (last.id, scan.tail_len, scan.next_segment),
            None => {
                let id = scan.next_segment;
                let header = SegmentHeader {
                    segment: id,
                    first_lsn: Lsn(scan.next_lsn),
                    next_txn: scan.next_txn,
                };
                storage.create(id, &header.encode())?;
                segments.push_back(SegMeta {
                    id,
                    first_lsn: scan.next_lsn,
                });
                let next = id.checked_add(1).ok_or(Error::IdSpaceExhausted {
                    what: "segment numbers",
                })?;
                (id, SEGMENT_HEADER_LEN as u64, next)
            }
        };
        Ok(Journal {
            storage,
            cfg,
            inner: Mutex::new(Inner {
                next_lsn: scan.next_lsn,
                next_txn: scan.next_txn,
                pending: Vec::new(),
                pending_bytes: 0,
                tail_segment,
                tail_len,
                next_segment,
                io_segment: tail_segment,
                io_busy: false,
                poison: None,
                segments,
                spare: Vec::new(),
            }),
            cv: Condvar::new(),
            durable: AtomicU64::new(scan.next_lsn - 1),
            poisoned: AtomicBool::new(false),
            counters: Counters::default(),
        })
    }

    fn poisoned_error(reason: &str) -> Error {
        Error::Poisoned {
            component: COMPONENT,
            reason: reason.to_string(),
        }
    }

    /// Appends a record; `encode` writes exactly `len` bytes for the given LSN.
    fn append_with(
        &self,
        len: usize,
        is_commit: bool,
        next_txn: Option<u64>,
        encode: impl FnOnce(&mut Vec<u8>, Lsn),
    ) -> Result<Lsn> {
        let mut g = self.inner.lock();
        if let Some(p) = &g.poison {
            return Err(Self::poisoned_error(p));
        }
        let next_lsn = g
            .next_lsn
            .checked_add(1)
            .ok_or(Error::IdSpaceExhausted { what: "LSNs" })?;
        let inner = &mut *g;
        let new_segment = inner.tail_len + len as u64 > self.cfg.segment_size
            && inner.tail_len > SEGMENT_HEADER_LEN as u64;
        let next_segment = if new_segment {
            inner
                .next_segment
                .checked_add(1)
                .ok_or(Error::IdSpaceExhausted {
                    what: "segment numbers",
                })?
        } else {
            inner.next_segment
        };
        if let Some(t) = next_txn {
            inner.next_txn = inner.next_txn.max(t);
        }
        if new_segment {
            let id = inner.next_segment;
            inner.next_segment = next_segment;
            let header = SegmentHeader {
                segment: id,
                first_lsn: Lsn(inner.next_lsn),
                next_txn: inner.next_txn,
            };
            let bytes = inner.spare.pop().unwrap_or_default();
            inner.pending.push(Chunk {
                segment: id,
                create: Some(header.encode()),
                bytes,
            });
            inner.tail_segment = id;
            inner.tail_len = SEGMENT_HEADER_LEN as u64;
            inner.segments.push_back(SegMeta {
                id,
                first_lsn: inner.next_lsn,
            });
        }
        if inner.pending.last().map(|c| c.segment) != Some(inner.tail_segment) {
            let bytes = inner.spare.pop().unwrap_or_default();
            inner.pending.push(Chunk {
                segment: inner.tail_segment,
                create: None,
                bytes,
            });
        }
        let lsn = Lsn(inner.next_lsn);
        inner.next_lsn = next_lsn;
        let chunk = inner.pending.last_mut().expect("pushed above");
        let before = chunk.bytes.len();
        encode(&mut chunk.bytes, lsn);
        debug_assert_eq!(chunk.bytes.len() - before, len);
        inner.tail_len += len as u64;
        inner.pending_bytes += len;
        self.counters.records.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(len as u64, Ordering::Relaxed);
        if is_commit {
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
        }
        if g.pending_bytes >= self.cfg.buffer_bytes {
            self.drive(&mut g, None)?;
        }
        Ok(lsn)
    }

    /// Appends an undo record (the hot path: no intermediate allocation).
    pub(crate) fn append_undo(
        &self,
        txn: TxnId,
        page: PageId,
        offset: u32,
        before: &[u8],
    ) -> Result<Lsn> {
        let len = RECORD_HEADER_LEN + UNDO_FIXED_LEN + before.len();
        self.append_with(len, false, None, |buf, lsn| {
            encode_undo(buf, lsn, txn, page, offset, before);
        })
    }

    /// Appends a begin, commit or abort record.
    pub(crate) fn append(&self, record: &Record) -> Result<Lsn> {
        let next_txn = match record {
            Record::Begin { txn } => Some(txn.0.saturating_add(1)),
            _ => None,
        };
        let is_commit = matches!(record, Record::Commit { .. });
        self.append_with(record.encoded_len(), is_commit, next_txn, |buf, lsn| {
            record.encode_into(lsn, buf);
        })
    }

    /// The next transaction id to hand out, and reserves it.
    pub(crate) fn next_txn(&self) -> Result<u64> {
        let mut g = self.inner.lock();
        if let Some(p) = &g.poison {
            return Err(Self::poisoned_error(p));
        }
        let t = g.next_txn;
        g.next_txn = t.checked_add(1).ok_or(Error::IdSpaceExhausted {
            what: "transaction ids",
        })?;
        Ok(t)
    }

    /// Every record up to this LSN is durable.
    pub(crate) fn durable_lsn(&self) -> Lsn {
        Lsn(self.durable.load(Ordering::Acquire))
    }

    /// Waits until every record up to `lsn` is durable, syncing (as the
    /// leader of a group) if no one else is.
    pub(crate) fn ensure_durable(&self, lsn: Lsn) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            let g = self.inner.lock();
            return Err(Self::poisoned_error(g.poison.as_deref().unwrap_or("")));
        }
        if self.durable.load(Ordering::Acquire) >= lsn.0 {
            return Ok(());
        }
        let mut g = self.inner.lock();
        if lsn.0 >= g.next_lsn {
            return Err(Error::InvalidArgument {
                what: "lsn",
                reason: format!(
                    "LSN {lsn} has not been handed out yet (the newest is {})",
                    g.next_lsn - 1
                ),
            });
        }
        self.drive(&mut g, Some(lsn.0))
    }

    /// Makes everything appended so far durable.
    pub(crate) fn flush(&self) -> Result<()> {
        let last = self.inner.lock().next_lsn - 1;
        self.ensure_durable(Lsn(last))
    }

    /// Takes the I/O token (waiting for the current holder), writes what is
    /// buffered and, with `sync_to`, fsyncs until that LSN is durable.
    fn drive(&self, g: &mut MutexGuard<'_, Inner>, sync_to: Option<u64>) -> Result<()> {
        let deadline = Instant::now() + self.cfg.sync_wait_timeout;
        loop {
            if let Some(p) = &g.poison {
                return Err(Self::poisoned_error(p));
            }
            match sync_to {
                Some(lsn) if self.durable.load(Ordering::Acquire) >= lsn => return Ok(()),
                None if g.pending_bytes < self.cfg.buffer_bytes => return Ok(()),
                _ => {}
            }
            if g.io_busy {
                if self.cv.wait_until(g, deadline).timed_out() && g.io_busy {
                    return Err(Error::io(
                        format!(
                            "waiting {:?} for the undo journal's fsync (the disk may be hung)",
                            self.cfg.sync_wait_timeout
                        ),
                        std::io::Error::from(std::io::ErrorKind::TimedOut),
                    ));
                }
                continue;
            }
            let chunks = std::mem::take(&mut g.pending);
            g.pending_bytes = 0;
            let target = g.next_lsn - 1;
            let from = g.io_segment;
            g.io_busy = true;
            let sync = sync_to.is_some();
            let result = MutexGuard::unlocked(g, || {
                self.write_chunks(&chunks, from, sync).map(|s| (s, chunks))
            });
            g.io_busy = false;
            match result {
                Ok((seg, chunks)) => {
                    g.io_segment = seg;
                    if sync {
                        self.durable.fetch_max(target, Ordering::AcqRel);
                        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                    }
                    for mut c in chunks {
                        if g.spare.len() < 4 && c.bytes.capacity() <= 2 * self.cfg.buffer_bytes {
                            c.bytes.clear();
                            g.spare.push(c.bytes);
                        }
                    }
                    self.cv.notify_all();
                    if !sync {
                        return Ok(());
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    tracing::error!(%reason, "undo journal poisoned");
                    g.poison = Some(reason.clone());
                    self.poisoned.store(true, Ordering::Release);
                    self.cv.notify_all();
                    return Err(Self::poisoned_error(&reason));
                }
            }
        }
    }

    /// Writes chunks in order; syncs the previous segment before creating a
    /// new one, and the last one at the end when `sync`.
    fn write_chunks(&self, chunks: &[Chunk], mut current: u64, sync: bool) -> Result<u64> {
        for c in chunks {
            if let Some(header) = &c.create {
                self.storage.sync(current)?;
                self.storage.create(c.segment, header)?;
            }
            current = c.segment;
            if !c.bytes.is_empty() {
                self.storage.append(c.segment, &c.bytes)?;
            }
        }
        if sync {
            self.storage.sync(current)?;
        }
        Ok(current)
    }

    /// Removes segments all of whose records are below `keep_from` and
    /// durable. The newest segment is always kept.
    pub(crate) fn truncate_before(&self, keep_from: Lsn) -> Result<Vec<u64>> {
        let mut g = self.inner.lock();
        if let Some(p) = &g.poison {
            return Err(Self::poisoned_error(p));
        }
        let durable_next = self.durable.load(Ordering::Acquire) + 1;
        let mut removed = Vec::new();
        while g.segments.len() > 1 {
            let next_first = g.segments[1].first_lsn;
            if next_first > keep_from.0
                || next_first > durable_next
                || g.segments[0].id >= g.io_segment
            {
                break;
            }
            let id = g.segments[0].id;
            self.storage.remove(id)?;
            g.segments.pop_front();
            removed.push(id);
            self.counters.removed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(removed)
    }

    /// Current counters.
    pub(crate) fn stats(&self) -> JournalStats {
        let g = self.inner.lock();
        JournalStats {
            records: self.counters.records.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
            commits: self.counters.commits.load(Ordering::Relaxed),
            fsyncs: self.counters.fsyncs.load(Ordering::Relaxed),
            durable_lsn: self.durable_lsn(),
            next_lsn: Lsn(g.next_lsn),
            segments: g.segments.len() as u64,
            segments_removed: self.counters.removed.load(Ordering::Relaxed),
            poisoned: g.poison.is_some(),
        }
    }
}
