//! [`CrashDir`]: an in-memory journal directory with durable and unsynced
//! bytes per segment, for tests that cut the journal at every byte, and
//! the in-memory journal storage of the benches.
//!
//! # Contract
//! - Appended bytes are durable once the segment is synced, and
//!   [`CrashDir::crash`] keeps the durable bytes plus any chosen prefix of
//!   the unsynced ones, so that a test can cut the journal at every byte;
//!   [`CrashDir::crash_keeping`] keeps any chosen subset of the unsynced
//!   bytes (a power loss writes dirty blocks back in any order, leaving
//!   holes before bytes that survived). The state file is replaced
//!   atomically and is durable when `write_state` returns.
//! - It also fails on purpose, as a full or failing disk does:
//!   [`CrashDir::fail_appends`] makes appends fail with an errno after a
//!   short write, [`CrashDir::set_no_space`] fails every append and create
//!   with `ENOSPC` until space returns, and [`CrashDir::fail_syncs_with`]
//!   fails fsyncs — optionally the way Linux can: the unsynced bytes stay
//!   readable but the failed writeback dropped them, and a later fsync
//!   that succeeds does not bring them back (a crash then shows them as
//!   zeros).
//! - With a [`CrashSwitch`], every mutating operation of the
//!   [`JournalStorage`] goes through it.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{tick, CrashSwitch};
use crate::error::{Error, Result};
use crate::rollback::journal::{segment_file_name, JournalStorage, STATE_FILE_NAME};

#[derive(Debug, Clone, Default)]
struct FileImage {
    data: Vec<u8>,
    durable_len: usize,
    /// Byte ranges a failed fsync dropped from the page cache's writeback:
    /// readable live, never durable (zeros after a crash) until rewritten.
    holes: Vec<(usize, usize)>,
}

impl FileImage {
    /// Forgets the holes at or past `len` (the bytes were cut or rewritten).
    fn clip_holes(&mut self, len: usize) {
        self.holes.retain(|&(from, _)| from < len);
        for h in &mut self.holes {
            h.1 = h.1.min(len);
        }
    }
}

#[derive(Debug, Default)]
struct DirState {
    files: BTreeMap<u64, FileImage>,
    state_file: Option<Vec<u8>>,
    failing_syncs: u32,
    /// The errno of an injected sync failure (default `EIO`).
    sync_errno: Option<i32>,
    /// Whether an injected sync failure drops the unsynced bytes.
    sync_drops: bool,
    failing_appends: u32,
    append_errno: i32,
    /// Every append and create fails with `ENOSPC`.
    no_space: bool,
    syncs: u64,
    injected: u64,
}

/// `ENOSPC`.
const ENOSPC: i32 = 28;

/// An in-memory journal directory with durable and unsynced bytes per
/// segment (see the module docs). Also the in-memory journal storage of the
/// benches.
#[derive(Debug, Default)]
pub struct CrashDir {
    state: Mutex<DirState>,
    switch: Option<Arc<CrashSwitch>>,
}

impl CrashDir {
    /// An empty directory.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes mutating operations go through `switch`.
    #[must_use]
    pub fn with_switch(mut self, switch: Arc<CrashSwitch>) -> Self {
        self.switch = Some(switch);
        self
    }

    /// Makes the next `times` syncs fail with `EIO` (nothing becomes durable).
    pub fn fail_syncs(&self, times: u32) {
        self.fail_syncs_with(times, 5, false);
    }

    /// Makes the next `times` syncs fail with the OS error `errno`; nothing
    /// becomes durable. With `drop_unsynced`, each failure also does what
    /// Linux may do after a failed writeback: the segment's unsynced bytes
    /// stay readable but are never written back — a later sync that succeeds
    /// leaves them as zeros on the simulated disk ([`crash`](Self::crash)
    /// shows that), unless they are truncated away and appended again.
    pub fn fail_syncs_with(&self, times: u32, errno: i32, drop_unsynced: bool) {
        let mut st = self.state.lock();
        st.failing_syncs = times;
        st.sync_errno = Some(errno);
        st.sync_drops = drop_unsynced;
    }

    /// Makes the next `times` appends fail with the OS error `errno` after
    /// a short write: the first half of the bytes is appended (unsynced),
    /// as a write that runs out of space part-way leaves them.
    pub fn fail_appends(&self, times: u32, errno: i32) {
        let mut st = self.state.lock();
        st.failing_appends = times;
        st.append_errno = errno;
    }

    /// A full disk (`true`) or one with room again (`false`): while full,
    /// every append and segment creation fails with `ENOSPC` (an append
    /// after a short write of half its bytes; a create leaves no file).
    pub fn set_no_space(&self, full: bool) {
        self.state.lock().no_space = full;
    }

    /// Appends, creates and syncs failed on purpose so far.
    #[must_use]
    pub fn injected_failures(&self) -> u64 {
        self.state.lock().injected
    }

    /// Successful syncs so far.
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Bytes appended but not synced, over all segments.
    #[must_use]
    pub fn unsynced_len(&self) -> usize {
        self.state
            .lock()
            .files
            .values()
            .map(|f| f.data.len() - f.durable_len)
            .sum()
    }

    /// The segments present.
    #[must_use]
    pub fn segment_ids(&self) -> Vec<u64> {
        self.state.lock().files.keys().copied().collect()
    }

    /// A segment's current bytes.
    #[must_use]
    pub fn segment(&self, id: u64) -> Option<Vec<u8>> {
        self.state.lock().files.get(&id).map(|f| f.data.clone())
    }

    /// Replaces a segment's bytes, durably (damage at rest, or a crafted file).
    pub fn set_segment(&self, id: u64, bytes: Vec<u8>) {
        let len = bytes.len();
        self.state.lock().files.insert(
            id,
            FileImage {
                data: bytes,
                durable_len: len,
                holes: Vec::new(),
            },
        );
    }

    /// The state file's current contents.
    #[must_use]
    pub fn state_file(&self) -> Option<Vec<u8>> {
        self.state.lock().state_file.clone()
    }

    /// Replaces (or, with `None`, deletes) the state file, durably.
    pub fn set_state_file(&self, bytes: Option<Vec<u8>>) {
        self.state.lock().state_file = bytes;
    }

    /// Deletes a segment, durably, without going through the crash switch
    /// (an operator's mistake, or a lost file).
    pub fn delete_segment(&self, id: u64) {
        self.state.lock().files.remove(&id);
    }

    /// The directory a restarted process sees: every durable byte, plus the
    /// first `keep_unsynced` unsynced bytes (segments in order).
    #[must_use]
    pub fn crash(&self, keep_unsynced: usize) -> CrashDir {
        let mut budget = keep_unsynced;
        // Called once per unsynced byte, segments and offsets in order: the
        // first `keep_unsynced` are kept, so no hole arises.
        self.crash_keeping(|_, _| {
            let keep = budget > 0;
            budget = budget.saturating_sub(1);
            keep
        })
    }

    /// The directory a restarted process sees after a power loss: every
    /// durable byte, and of the unsynced bytes those for which
    /// `keep(segment, offset)` is true (it is called once per unsynced byte,
    /// segments and offsets in order). A lost byte before a kept one reads
    /// as zero (a hole); the file ends after its last durable or kept byte.
    #[must_use]
    pub fn crash_keeping(&self, mut keep: impl FnMut(u64, usize) -> bool) -> CrashDir {
        let st = self.state.lock();
        let files = st
            .files
            .iter()
            .map(|(id, f)| {
                let mut data = f.data[..f.durable_len].to_vec();
                for &(from, to) in &f.holes {
                    let to = to.min(data.len());
                    if from < to {
                        data[from..to].fill(0);
                    }
                }
                let mut end = f.durable_len;
                let mut tail = Vec::with_capacity(f.data.len() - f.durable_len);
                for (i, b) in f.data[f.durable_len..].iter().enumerate() {
                    let at = f.durable_len + i;
                    let dropped = f.holes.iter().any(|&(from, to)| (from..to).contains(&at));
                    if keep(*id, at) && !dropped {
                        tail.push(*b);
                        end = at + 1;
                    } else {
                        tail.push(0);
                    }
                }
                data.extend_from_slice(&tail[..end - f.durable_len]);
                let len = data.len();
                (
                    *id,
                    FileImage {
                        data,
                        durable_len: len,
                        holes: Vec::new(),
                    },
                )
            })
            .collect();
        CrashDir {
            state: Mutex::new(DirState {
                files,
                state_file: st.state_file.clone(),
                ..DirState::default()
            }),
            switch: None,
        }
    }

    /// Writes every segment, and the state file, into `dir` as real files
    /// (to test the file storage on a crafted image).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn export(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating the export dir", e))?;
        let st = self.state.lock();
        for (id, f) in &st.files {
            let p = dir.join(segment_file_name(*id));
            std::fs::write(&p, &f.data)
                .map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        }
        if let Some(b) = &st.state_file {
            let p = dir.join(STATE_FILE_NAME);
            std::fs::write(&p, b).map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        }
        Ok(())
    }
}

fn missing(segment: u64) -> Error {
    Error::io(
        format!("segment {segment}"),
        io::Error::from(io::ErrorKind::NotFound),
    )
}

impl JournalStorage for CrashDir {
    fn list(&self) -> Result<Vec<u64>> {
        Ok(self.segment_ids())
    }

    fn read_state(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.state_file())
    }

    /// Atomic and durable at once: a crash (the switch firing) before it
    /// leaves the old contents.
    fn write_state(&self, bytes: &[u8]) -> Result<()> {
        tick(self.switch.as_ref(), "replacing the state file")?;
        self.state.lock().state_file = Some(bytes.to_vec());
        Ok(())
    }

    fn read(&self, segment: u64) -> Result<Vec<u8>> {
        self.segment(segment).ok_or_else(|| missing(segment))
    }

    fn create(&self, segment: u64, header: &[u8]) -> Result<()> {
        tick(self.switch.as_ref(), "creating a segment")?;
        let mut st = self.state.lock();
        if st.files.contains_key(&segment) {
            return Err(Error::io(
                format!("creating segment {segment}"),
                io::Error::from(io::ErrorKind::AlreadyExists),
            ));
        }
        if st.no_space {
            st.injected += 1;
            return Err(Error::io(
                format!("creating segment {segment} (injected)"),
                io::Error::from_raw_os_error(ENOSPC),
            ));
        }
        st.files.insert(
            segment,
            FileImage {
                data: header.to_vec(),
                durable_len: header.len(),
                holes: Vec::new(),
            },
        );
        Ok(())
    }

    fn append(&self, segment: u64, bytes: &[u8]) -> Result<()> {
        tick(self.switch.as_ref(), "appending")?;
        let mut st = self.state.lock();
        let errno = if st.no_space {
            Some(ENOSPC)
        } else if st.failing_appends > 0 {
            st.failing_appends -= 1;
            Some(st.append_errno)
        } else {
            None
        };
        if errno.is_some() {
            st.injected += 1;
        }
        let f = st.files.get_mut(&segment).ok_or_else(|| missing(segment))?;
        match errno {
            Some(errno) => {
                f.data.extend_from_slice(&bytes[..bytes.len() / 2]);
                Err(Error::io(
                    format!("appending to segment {segment} (injected)"),
                    io::Error::from_raw_os_error(errno),
                ))
            }
            None => {
                f.data.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn sync(&self, segment: u64) -> Result<()> {
        tick(self.switch.as_ref(), "syncing a segment")?;
        let mut st = self.state.lock();
        if st.failing_syncs > 0 {
            st.failing_syncs -= 1;
            st.injected += 1;
            let errno = st.sync_errno.unwrap_or(5);
            if st.sync_drops {
                if let Some(f) = st.files.get_mut(&segment) {
                    if f.data.len() > f.durable_len {
                        let hole = (f.durable_len, f.data.len());
                        f.holes.push(hole);
                    }
                }
            }
            return Err(Error::io(
                format!("syncing segment {segment} (injected)"),
                io::Error::from_raw_os_error(errno),
            ));
        }
        let f = st.files.get_mut(&segment).ok_or_else(|| missing(segment))?;
        f.durable_len = f.data.len();
        st.syncs += 1;
        Ok(())
    }

    fn truncate(&self, segment: u64, len: u64) -> Result<()> {
        tick(self.switch.as_ref(), "truncating")?;
        let mut st = self.state.lock();
        let f = st.files.get_mut(&segment).ok_or_else(|| missing(segment))?;
        let len = (len as usize).min(f.data.len());
        f.data.truncate(len);
        f.durable_len = f.durable_len.min(len);
        f.clip_holes(len);
        Ok(())
    }

    fn remove(&self, segment: u64) -> Result<()> {
        tick(self.switch.as_ref(), "removing a segment")?;
        // Gone already is removed (see `JournalStorage::remove`).
        self.state.lock().files.remove(&segment);
        Ok(())
    }
}
