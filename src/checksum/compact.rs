//! The durable table's upkeep: flushing its log, folding the log into a new
//! base file (compaction; the protocol and its crash analysis are in
//! [`durable`](super::durable)), and its stats.

use std::sync::atomic::Ordering;

use super::appender::{Appender, LogResumeReport, LogStallHook, LogStallInfo};
use super::base::encode_base;
use super::durable::{log_name, Durable, Files, TableStats};
use super::entries::SETTLED_BITS;
use super::log::{Frame, LogHeader, LogRecord, LOG_VERSION};
use super::storage::replace;
use super::table::ChecksumTable;
use crate::error::Result;

/// The durable table's own operations.
impl ChecksumTable {
    pub(super) fn should_compact(&self, d: &Durable, files: &Files) -> bool {
        let log_bytes = d.log.state.lock().file_bytes;
        let threshold = files.base_bytes.saturating_mul(d.config.compact_ratio_pct) / 100;
        log_bytes >= threshold.max(d.config.compact_log_bytes_min)
    }

    /// Makes every log record written so far durable (settle records are
    /// otherwise fsynced with the next intent). O(records buffered). A no-op
    /// for an in-memory table.
    ///
    /// # Errors
    /// [`Error::Stalled`](crate::Error::Stalled) when the log's write or
    /// fsync failed retryably (see [a stalled log](crate::checksum#a-stalled-log)),
    /// [`Error::Poisoned`](crate::Error::Poisoned) when it failed for good.
    pub fn flush(&self) -> Result<()> {
        match &self.durable {
            Some(d) => {
                d.log.resume_if_due(&*d.storage);
                d.log.flush(&*d.storage)
            }
            None => Ok(()),
        }
    }

    /// Resumes the log after a stall (see
    /// [a stalled log](crate::checksum#a-stalled-log)): writes again, after
    /// its durable prefix, every record it had not made durable, crash-safely,
    /// and accepts changes again. Does nothing (`was_stalled: false`) when
    /// the log is not stalled, and for an in-memory table. The table does it
    /// on its own after a backoff (at its next change); the
    /// [`AutoRecoveryManager`](crate::AutoRecoveryManager)'s remedy
    /// `resume-checksum-log` calls it too; a host calls it after freeing
    /// space for a full disk.
    ///
    /// # Errors
    /// [`Error::Stalled`](crate::Error::Stalled) when it failed retryably
    /// again (the disk is still full) — still stalled, nothing lost;
    /// [`Error::Poisoned`](crate::Error::Poisoned) when the log is poisoned
    /// or the resume failed for good: reopen the table.
    pub fn resume(&self) -> Result<LogResumeReport> {
        match &self.durable {
            Some(d) => d.log.resume(&*d.storage),
            None => Ok(LogResumeReport::default()),
        }
    }

    /// The log's stall, or `None` when it accepts changes (always `None`
    /// for an in-memory table).
    #[must_use]
    pub fn log_stall(&self) -> Option<LogStallInfo> {
        self.durable.as_ref().and_then(|d| d.log.stall_info())
    }

    /// Sets the hook called (with the reason, whether the disk is full and
    /// the resumes failed so far) when the log stalls and after each failed
    /// resume.
    pub(crate) fn set_stall_hook(&self, hook: Option<LogStallHook>) {
        if let Some(d) = &self.durable {
            d.log.set_stall_hook(hook);
        }
    }

    /// Folds the log into a new base file now (see the module docs; the
    /// detector's sync does it when the log has grown past its threshold).
    /// O(table). A no-op for an in-memory table.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io); a retryable failure to create the new log stalls
    /// the table (a resume creates it), any other poisons it; a failure
    /// later leaves it working on the new log (a later compaction tries
    /// again).
    pub fn compact(&self) -> Result<()> {
        match &self.durable {
            Some(d) => {
                let mut files = d.files.lock();
                self.compact_locked(d, &mut files)
            }
            None => Ok(()),
        }
    }

    pub(super) fn compact_locked(&self, d: &Durable, files: &mut Files) -> Result<()> {
        let generation = files.max_generation + 1;
        let name = log_name(&d.stem, generation);
        let (bytes, first_seq, created_to) = {
            let mut un = d.unsettled.lock();
            // Every append happens under `unsettled`, which is held, so
            // after this flush nothing is buffered for the old log.
            d.log.flush(&*d.storage)?;
            let mut log = d.log.state.lock();
            log.check()?;
            let first_seq = log.next_seq;
            let mut bytes = LogHeader {
                version: LOG_VERSION,
                page_size: self.page_size as u32,
                generation,
                first_seq,
            }
            .encode()
            .to_vec();
            // Re-announce every unsettled version, oldest first, in one frame.
            let mut order: Vec<(u64, usize, usize)> = un
                .slots()
                .iter()
                .enumerate()
                .flat_map(|(s, slot)| {
                    slot.versions
                        .iter()
                        .enumerate()
                        .map(move |(i, v)| (v.seq, s, i))
                })
                .collect();
            order.sort_unstable();
            let mut frame = Frame::new(first_seq);
            let slots = un.slots_mut();
            for (_, s, i) in order {
                let page = u32::try_from(slots[s].page).expect("below pages_max");
                let v = &mut slots[s].versions[i];
                v.seq = frame.first_seq() + frame.count();
                frame.push(LogRecord::Intent { page, crc: v.crc });
            }
            let count = frame.count();
            let seq = first_seq + count;
            bytes.extend_from_slice(&frame.finish_mirrored());
            Appender::begin_switch(
                &mut log,
                name.clone(),
                generation,
                count,
                bytes.len() as u64,
            );
            (bytes, first_seq, seq)
        };
        let created = replace(&*d.storage, &name, &bytes);
        d.log.end_switch(created_to, &created, &bytes);
        // The log is the new one from now on, even when its creation
        // stalled (a resume creates it): a later compaction must take the
        // next generation.
        files.logs.insert(generation);
        files.max_generation = generation;
        if let Err(e) = created {
            // A retryable failure stalled the log (`end_switch`): the caller
            // gets the stall's retryable error, as every caller of a stalled
            // log does, not the I/O error behind it.
            return Err(d.log.stall_error().unwrap_or(e));
        }
        let base = self.encode_settled(generation, first_seq);
        replace(&*d.storage, &d.stem, &base)?;
        files.base_generation = generation;
        files.base_bytes = base.len() as u64;
        let old: Vec<u64> = files.logs.range(..generation).copied().collect();
        for g in &old {
            d.storage.remove(&log_name(&d.stem, *g))?;
            files.logs.remove(g);
        }
        if !old.is_empty() {
            d.storage.sync_dir()?;
        }
        d.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            generation,
            base_bytes = base.len(),
            "checksum table compacted"
        );
        Ok(())
    }

    /// The base file of `generation`: the settled checksums and unallocated marks only.
    fn encode_settled(&self, generation: u64, next_seq: u64) -> Vec<u8> {
        let entries = self.entries.read();
        let settled = entries
            .iter()
            .map(|e| e.load(Ordering::Acquire) & SETTLED_BITS);
        encode_base(self.page_size, generation, next_seq, entries.len(), settled)
    }

    /// Whether the table holds anything for pages at or past `page_count`.
    pub(crate) fn has_pages_from(&self, page_count: u64) -> bool {
        self.len() as u64 > page_count
            || self.durable.as_ref().is_some_and(|d| {
                d.unsettled
                    .lock()
                    .slots()
                    .iter()
                    .any(|s| s.page >= page_count)
            })
    }

    /// Sizes and counters.
    #[must_use]
    pub fn stats(&self) -> TableStats {
        let Some(d) = &self.durable else {
            return TableStats::default();
        };
        let (generation, base_bytes) = {
            let f = d.files.lock();
            (f.base_generation, f.base_bytes)
        };
        let (unsettled_pages, unsettled_versions) = {
            let un = d.unsettled.lock();
            (un.pages() as u64, un.versions as u64)
        };
        let (log_bytes, log_syncs) = {
            let l = d.log.state.lock();
            (l.file_bytes, l.syncs)
        };
        TableStats {
            generation,
            base_bytes,
            log_bytes,
            unsettled_pages,
            unsettled_versions,
            log_syncs,
            compactions: d.compactions.load(Ordering::Relaxed),
            torn_bytes_at_open: d.torn_bytes_at_open,
        }
    }
}
