//! Opening a durable table: read the base, replay the logs that continue it
//! (the rules are those of [`durable`](super::durable)), and either go on
//! appending to the one clean log (of the current format version, every
//! frame read from its first copy) or compact.
//!
//! Replay allocates in proportion to its input (one entry per 8 base bytes,
//! one version per 2 log bytes); only building the table's entry array
//! grows to the highest page named, which
//! [`pages_max`](super::TableConfig::pages_max) bounds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::appender::{Appender, LogState, ResumeTiming};
use super::base::{decode_base, encode_base};
use super::durable::{log_name, parse_log_name, Durable, Files, TableConfig};
use super::entries::{grow, FREE, PRESENT};
use super::log::{decode_log, LogEnd, LogRecord, LOG_VERSION};
use super::storage::DirTableStorage;
use super::storage::{replace, tmp_name, TableStorage};
use super::table::ChecksumTable;
use super::unsettled::{State, Unsettled, Version, Versions};
use crate::error::{Error, Result};

/// The state rebuilt from a base and its logs.
#[derive(Debug)]
pub(super) struct Replay {
    /// The base file's entries (present bit and CRC, or the unallocated
    /// mark).
    base: Vec<u64>,
    /// Entries of pages past the base's end (never 0).
    extra: BTreeMap<u64, u64>,
    /// Unsettled versions per page: (CRC, sequence number), oldest first.
    pending: BTreeMap<u64, Vec<(u32, u64)>>,
    /// The page of each pending version's sequence number.
    page_of: HashMap<u64, u64>,
    /// `except` records since the last `settle`.
    except: HashSet<u64>,
    pages_max: u64,
}

impl Replay {
    pub(super) fn new(base: Vec<u64>, pages_max: u64) -> Self {
        Replay {
            base,
            extra: BTreeMap::new(),
            pending: BTreeMap::new(),
            page_of: HashMap::new(),
            except: HashSet::new(),
            pages_max,
        }
    }

    fn set_settled(&mut self, page: u64, crc: u32) {
        self.set_entry(page, PRESENT | u64::from(crc));
    }

    fn set_entry(&mut self, page: u64, value: u64) {
        debug_assert_ne!(value, 0);
        match self.base.get_mut(page as usize) {
            Some(e) => *e = value,
            None => {
                self.extra.insert(page, value);
            }
        }
    }

    /// The settled entry of `page` (0: nothing).
    fn settled_entry(&self, page: u64) -> u64 {
        match self.base.get(page as usize) {
            Some(e) => *e,
            None => self.extra.get(&page).copied().unwrap_or(0),
        }
    }

    /// Forgets the unsettled versions of `page`.
    fn drop_pending(&mut self, page: u64) {
        for (_, s) in self.pending.remove(&page).unwrap_or_default() {
            self.page_of.remove(&s);
        }
    }

    /// Refuses a record naming a page at or past the configured limit.
    fn check_page(&self, path: &Path, offset: u64, seq: u64, page: u64) -> Result<()> {
        if page >= self.pages_max {
            return Err(Error::corrupt_file(
                path,
                offset,
                format!(
                    "record {seq} names page {page}, past the table's limit of {} pages (raise pages_max if the store is larger)",
                    self.pages_max
                ),
            ));
        }
        Ok(())
    }

    /// Applies record `seq` (found at `offset` of `path`).
    ///
    /// # Errors
    /// [`Error::CorruptFile`] for an intent, free or claim record naming a
    /// page at or past the configured limit.
    pub(super) fn apply(
        &mut self,
        path: &Path,
        offset: u64,
        seq: u64,
        record: LogRecord,
    ) -> Result<()> {
        match record {
            LogRecord::Batch => {}
            LogRecord::Intent { page, crc } => {
                let page = u64::from(page);
                self.check_page(path, offset, seq, page)?;
                let vs = self.pending.entry(page).or_default();
                if let Some(i) = vs.iter().position(|v| v.0 == crc) {
                    self.page_of.remove(&vs[i].1);
                    vs.remove(i);
                }
                vs.push((crc, seq));
                self.page_of.insert(seq, page);
            }
            LogRecord::Except { seq } => {
                self.except.insert(seq);
            }
            LogRecord::Settle { below } => {
                let mut settled = Vec::new();
                for (&page, vs) in &mut self.pending {
                    let newest = vs
                        .iter()
                        .rposition(|(_, s)| *s < below && !self.except.contains(s));
                    if let Some(k) = newest {
                        settled.push((page, vs[k].0));
                        for (_, s) in vs.drain(..=k) {
                            self.page_of.remove(&s);
                        }
                    }
                }
                for (page, crc) in settled {
                    self.set_settled(page, crc);
                }
                self.pending.retain(|_, vs| !vs.is_empty());
                self.except.clear();
            }
            LogRecord::Retract { seq } => {
                if let Some(page) = self.page_of.remove(&seq) {
                    if let Some(vs) = self.pending.get_mut(&page) {
                        vs.retain(|v| v.1 != seq);
                        if vs.is_empty() {
                            self.pending.remove(&page);
                        }
                    }
                }
            }
            LogRecord::Drop { first, last } => {
                let (first, last) = (u64::from(first), u64::from(last));
                let len = self.base.len() as u64;
                if first < len {
                    self.base[first as usize..=last.min(len - 1) as usize].fill(0);
                }
                let gone: Vec<u64> = self.extra.range(first..=last).map(|(p, _)| *p).collect();
                for p in gone {
                    self.extra.remove(&p);
                }
                let gone: Vec<u64> = self.pending.range(first..=last).map(|(p, _)| *p).collect();
                for p in gone {
                    self.drop_pending(p);
                }
            }
            LogRecord::Free { page } => {
                let page = u64::from(page);
                self.check_page(path, offset, seq, page)?;
                self.drop_pending(page);
                self.set_entry(page, FREE);
            }
            LogRecord::Claim { page, crc } => {
                let page = u64::from(page);
                self.check_page(path, offset, seq, page)?;
                if self.settled_entry(page) == 0 && !self.pending.contains_key(&page) {
                    self.set_settled(page, crc);
                }
            }
        }
        Ok(())
    }

    /// Ends one log file: `except` records not followed by their `settle`
    /// (a torn tail) do not carry over to the next file.
    pub(super) fn end_file(&mut self) {
        self.except.clear();
    }

    /// The checksums this state accepts for `page`: the settled one (if
    /// any) first, then the unsettled ones, oldest first.
    #[cfg(test)]
    pub(super) fn accepted(&self, page: u64) -> Vec<u32> {
        let e = self.settled_entry(page);
        let settled = (e & PRESENT != 0).then_some(e as u32);
        settled
            .into_iter()
            .chain(self.pending.get(&page).into_iter().flatten().map(|v| v.0))
            .collect()
    }

    /// Whether this state marks `page` unallocated.
    #[cfg(test)]
    pub(super) fn is_free(&self, page: u64) -> bool {
        self.settled_entry(page) == FREE
    }

    /// Builds the table's entries and unsettled versions.
    fn build(self) -> Result<(Vec<AtomicU64>, Unsettled)> {
        let len = [
            self.base.len() as u64,
            self.extra.keys().next_back().map_or(0, |p| p + 1),
            self.pending.keys().next_back().map_or(0, |p| p + 1),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        let mut entries: Vec<AtomicU64> = Vec::new();
        grow(&mut entries, len as usize).map_err(|reason| Error::InvalidArgument {
            what: "table",
            reason: format!("cannot hold the checksums of {len} pages: {reason}"),
        })?;
        for (e, v) in entries.iter_mut().zip(&self.base) {
            *e.get_mut() = *v;
        }
        for (p, value) in &self.extra {
            *entries[*p as usize].get_mut() = *value;
        }
        let mut unsettled = Unsettled::default();
        for (p, vs) in self.pending {
            let versions: Versions = vs
                .into_iter()
                .map(|(crc, seq)| Version {
                    crc,
                    seq,
                    state: State::Unknown,
                })
                .collect();
            let n = versions.len();
            unsettled
                .insert(&entries[p as usize], p, versions)
                .map_err(|_| Error::InvalidArgument {
                    what: "table",
                    reason: "the logs leave more pages unsettled than a table holds".into(),
                })?;
            unsettled.versions += n;
        }
        Ok((entries, unsettled))
    }
}

/// Opens the table named `stem` in `storage` (the open steps of the
/// [`durable`](super::durable) docs).
/// Where a version-2 base file records its generation: the 24-byte frame,
/// then the page size (4 bytes).
const BASE_GENERATION_OFFSET: u64 = 24 + 4;

pub(super) fn open(
    config: TableConfig,
    storage: Arc<dyn TableStorage>,
    stem: &str,
) -> Result<ChecksumTable> {
    let page_size = config.page_size;
    let mut logs: BTreeMap<u64, String> = BTreeMap::new();
    let mut leftovers = Vec::new();
    for name in storage.list()? {
        if let Some(g) = parse_log_name(stem, &name) {
            logs.insert(g, name);
        } else if name == tmp_name(stem)
            || name
                .strip_suffix(".tmp")
                .and_then(|n| parse_log_name(stem, n))
                .is_some()
        {
            leftovers.push(name);
        }
    }
    let base_path = storage.path(stem);
    let base_bytes = match storage.read(stem)? {
        Some(b) => b,
        None if !logs.is_empty() => {
            return Err(Error::corrupt_file(
                &base_path,
                0,
                format!(
                    "the base file is missing but {} log file(s) of it exist ({}); restore the base file, or move the logs away and rebuild the table from pages you trust",
                    logs.len(),
                    logs.values().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        None => {
            // A fresh table: the base first, so that a log never exists
            // without one; the compaction below creates the log.
            let fresh = encode_base(page_size, 0, 1, 0, std::iter::empty());
            replace(&*storage, stem, &fresh)?;
            fresh
        }
    };
    let base = decode_base(&base_path, &base_bytes, page_size)?;
    if base.entries.len() as u64 > config.pages_max {
        return Err(Error::config(
            "pages_max",
            format!(
                "is {}, but the table {} describes {} pages",
                config.pages_max,
                base_path.display(),
                base.entries.len()
            ),
        ));
    }
    // A compaction creates the log of its generation before the base that
    // names it, and removes only older logs: a base of generation 1 or more
    // without its log lost the log (and every change in it), which a replay
    // of nothing would turn into pages failing, or accepting bytes they no
    // longer hold, with no word of why.
    if base.generation > 0 && !logs.contains_key(&base.generation) {
        return Err(Error::corrupt_file(
            &base_path,
            BASE_GENERATION_OFFSET,
            format!(
                "the base file continues generation {}, but its log {} is missing; restore the log from a backup, or move the table's files away and rebuild the table from pages you trust",
                base.generation,
                storage.path(&log_name(stem, base.generation)).display()
            ),
        ));
    }
    let mut replay = Replay::new(base.entries, config.pages_max);
    let mut next_seq = base.next_seq;
    let mut torn_bytes = 0;
    let mut replayed = 0usize;
    let mut clean = true;
    let mut current = true;
    let mut last: Option<(u64, String, u64)> = None;
    for (&generation, name) in logs.range(base.generation..) {
        let path = storage.path(name);
        let bytes = storage.read(name)?.ok_or_else(|| {
            Error::io(
                format!("reading {}", path.display()),
                io::Error::from(io::ErrorKind::NotFound),
            )
        })?;
        let log = decode_log(&path, &bytes, page_size)?;
        if log.header.generation != generation {
            return Err(Error::corrupt_file(
                &path,
                16,
                format!(
                    "the header says generation {}, the name {generation}",
                    log.header.generation
                ),
            ));
        }
        if log.header.first_seq < next_seq {
            return Err(Error::corrupt_file(
                &path,
                24,
                format!(
                    "the log starts at sequence number {}, before {next_seq} where what precedes it ends",
                    log.header.first_seq
                ),
            ));
        }
        for ((seq, record), offset) in log.records.iter().zip(&log.offsets) {
            replay.apply(&path, *offset, *seq, *record)?;
        }
        replay.end_file();
        if let LogEnd::Torn { offset, bytes } = log.end {
            tracing::info!(path = %path.display(), offset, bytes, "checksum log has a torn tail (a crash cut an append short)");
            torn_bytes += bytes;
            clean = false;
        }
        if !log.mended.is_empty() {
            // One copy of these frames was damaged (or a mirror torn); the
            // other was used. Compacting writes both copies again.
            tracing::warn!(path = %path.display(), frames = ?log.mended, "checksum log: frames read from their other copy (one copy damaged or torn)");
            clean = false;
        }
        // Records of this version are appended only to a log of this
        // version: an older one is compacted away.
        current = log.header.version == LOG_VERSION;
        next_seq = log.header.first_seq + log.slots;
        replayed += 1;
        last = Some((generation, name.clone(), bytes.len() as u64));
    }
    let appending = match last {
        Some((generation, name, len))
            if clean && current && replayed == 1 && generation == base.generation =>
        {
            Some((generation, name, len))
        }
        _ => None,
    };
    let (entries, unsettled) = replay.build()?;
    let max_generation = logs
        .keys()
        .next_back()
        .copied()
        .unwrap_or(0)
        .max(base.generation);
    let (name, generation, file_bytes) = match &appending {
        Some((g, name, len)) => (name.clone(), *g, *len),
        // Nothing is appended before the compaction below switches logs.
        None => (log_name(stem, base.generation), base.generation, 0),
    };
    let timing = ResumeTiming::new(config.clock.clone(), config.seed);
    let table = ChecksumTable {
        page_size,
        entries: RwLock::new(entries),
        durable: Some(Durable {
            storage: storage.clone(),
            stem: stem.to_string(),
            config,
            unsettled: Mutex::new(unsettled),
            log: Appender::new(LogState::new(
                name.clone(),
                generation,
                next_seq,
                file_bytes,
                timing,
            )),
            files: Mutex::new(Files {
                base_generation: base.generation,
                base_bytes: base_bytes.len() as u64,
                logs: logs.keys().copied().collect(),
                max_generation,
                settle_unflushed: false,
            }),
            sync_generation: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            torn_bytes_at_open: torn_bytes,
        }),
    };
    if appending.is_some() {
        // Bytes a dead process left in the page cache count as durable from
        // here on, since the next frame will say so.
        storage.sync(&name)?;
    } else {
        table.compact()?;
    }
    let stale: Vec<&String> = logs.range(..base.generation).map(|(_, n)| n).collect();
    for name in stale.iter().copied().chain(&leftovers) {
        storage.remove(name)?;
    }
    storage.sync_dir()?;
    Ok(table)
}

impl TableConfig {
    /// Opens (creating it if needed) the table whose base file is `path`;
    /// the logs live next to it. The table has one owner: it holds the lock
    /// file `<path>.lock` until it is dropped, and a second opener of the
    /// same path, in this process or another, is refused.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad setting or a path without a file
    /// name; [`Error::DirectoryLocked`] when the table is already open;
    /// [`Error::CorruptFile`], [`Error::UnsupportedVersion`] or
    /// [`Error::PageSizeMismatch`] for files that cannot be read as this
    /// table (see the module docs); [`Error::Io`].
    pub fn open(self, path: &Path) -> Result<ChecksumTable> {
        let stem = path
            .file_name()
            .and_then(|s| s.to_str())
            .ok_or_else(|| {
                Error::config(
                    "path",
                    format!("{} has no UTF-8 file name for the table", path.display()),
                )
            })?
            .to_string();
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        self.open_on(Arc::new(DirTableStorage::new(dir).owning(&stem)?), &stem)
    }

    /// Opens (creating it if needed) the table whose base file is named
    /// `stem` in `storage`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_on(self, storage: Arc<dyn TableStorage>, stem: &str) -> Result<ChecksumTable> {
        self.validate()?;
        if stem.is_empty() || stem.contains(['/', '\\']) || stem.ends_with(".tmp") {
            return Err(Error::config(
                "stem",
                format!("{stem:?} is not a plain file name"),
            ));
        }
        super::recovery::open(self, storage, stem)
    }
}

impl ChecksumTable {
    /// Opens (creating it if needed) the durable table whose base file is
    /// `path`, with the default [`TableConfig`]. Its log
    /// files live next to it (`<path>.log-<generation>`).
    ///
    /// # Errors
    /// As [`TableConfig::open`](super::TableConfig::open).
    pub fn open(path: &Path, page_size: usize) -> Result<Self> {
        super::TableConfig::new(page_size).open(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(page: u32, crc: u32) -> LogRecord {
        LogRecord::Intent { page, crc }
    }

    fn run(records: &[LogRecord]) -> Replay {
        let mut r = Replay::new(vec![PRESENT | 100, 0, PRESENT | 300], 1 << 20);
        for (i, rec) in records.iter().enumerate() {
            r.apply(Path::new("l"), 0, i as u64 + 1, *rec).unwrap();
        }
        r
    }

    #[test]
    fn intents_accumulate_and_a_settle_keeps_the_newest_not_excepted() {
        // seq: 1 batch, 2 intent(0,a), 3 intent(0,b), 4 intent(1,c), 5 except 3, 6 settle <4
        let r = run(&[
            LogRecord::Batch,
            intent(0, 1),
            intent(0, 2),
            intent(1, 3),
            LogRecord::Except { seq: 3 },
            LogRecord::Settle { below: 4 },
        ]);
        assert_eq!(
            r.accepted(0),
            vec![1, 2],
            "1 settled, 2 (excepted) still unsettled"
        );
        assert_eq!(r.accepted(1), vec![3], "above the bound: untouched");
        assert_eq!(r.accepted(2), vec![300]);
    }

    #[test]
    fn a_repeated_checksum_moves_to_the_end() {
        let r = run(&[
            LogRecord::Batch,
            intent(0, 1),
            intent(0, 2),
            intent(0, 1),
            LogRecord::Settle { below: 5 },
        ]);
        assert_eq!(r.accepted(0), vec![1], "the newest (seq 4) wins");
        let r = run(&[
            LogRecord::Batch,
            intent(0, 1),
            intent(0, 2),
            intent(0, 1),
            LogRecord::Settle { below: 3 },
        ]);
        assert_eq!(
            r.accepted(0),
            vec![100, 2, 1],
            "seq 2 was superseded by seq 4"
        );
    }

    #[test]
    fn retract_and_drop() {
        let r = run(&[
            LogRecord::Batch,
            intent(0, 1),
            intent(5, 2),
            LogRecord::Retract { seq: 2 },
            LogRecord::Drop {
                first: 2,
                last: u32::MAX,
            },
        ]);
        assert_eq!(r.accepted(0), vec![100]);
        assert!(r.accepted(2).is_empty());
        assert!(r.accepted(5).is_empty());
        assert!(r.page_of.is_empty());
    }

    #[test]
    fn free_marks_and_claims() {
        let free = |page| LogRecord::Free { page };
        let claim = |page, crc| LogRecord::Claim { page, crc };
        let mut r = run(&[
            LogRecord::Batch,
            intent(1, 5),
            free(1),
            claim(1, 6),
            claim(4, 7),
            claim(0, 8),
            intent(5, 9),
            claim(5, 10),
            free(2),
            intent(2, 11),
        ]);
        assert!(r.is_free(1) && r.accepted(1).is_empty(), "the intent went");
        assert_eq!(r.accepted(4), vec![7], "claimed past the base's end");
        assert_eq!(r.accepted(0), vec![100], "a checksum is never claimed over");
        assert_eq!(r.accepted(5), vec![9], "nor is an unsettled intent");
        assert!(r.is_free(2), "a free page written again keeps its mark");
        assert_eq!(r.accepted(2), vec![11]);
        assert!(r.page_of.len() == 2);
        let path = Path::new("l");
        r.apply(path, 0, 11, LogRecord::Settle { below: 11 })
            .unwrap();
        assert!(!r.is_free(2), "until the write settles");
        assert_eq!(r.accepted(2), vec![11]);
        r.apply(path, 0, 12, LogRecord::Drop { first: 1, last: 1 })
            .unwrap();
        assert!(!r.is_free(1), "a drop forgets the mark too");
        r.apply(path, 0, 13, free(9)).unwrap();
        let (entries, unsettled) = r.build().unwrap();
        let e = |p: usize| entries[p].load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!((e(1), e(9), e(4)), (0, FREE, PRESENT | 7));
        assert_eq!(unsettled.pages(), 0);
        assert!(matches!(
            Replay::new(Vec::new(), 10).apply(path, 36, 1, free(10)),
            Err(Error::CorruptFile { offset: 36, .. })
        ));
        assert!(matches!(
            Replay::new(Vec::new(), 10).apply(path, 36, 1, claim(10, 1)),
            Err(Error::CorruptFile { offset: 36, .. })
        ));
    }

    #[test]
    fn pages_past_the_limit_are_damage() {
        let mut r = Replay::new(Vec::new(), 10);
        assert!(matches!(
            r.apply(Path::new("l"), 36, 1, intent(10, 1)),
            Err(Error::CorruptFile { offset: 36, .. })
        ));
    }
}
