//! [`CrashFiles`]: an in-memory directory of named files with a live and a
//! durable image of every file and of the directory itself, for crash tests
//! of the durable checksum table (it implements
//! [`TableStorage`]).
//!
//! Each file's data becomes durable at its `sync`; each name change
//! (create, rename, remove) at `sync_dir`. [`CrashFiles::crash`] gives the
//! directory a restarted process would see: every durable byte and name,
//! and — chosen by a seed — some of the rest: a prefix of the unsynced name
//! changes (in the order they were made), and for each file some of its
//! unsynced bytes: a prefix of an append, torn at any byte, with whole
//! 512-byte sectors of it missing (zeros) in any order, as a disk that
//! reorders writes may leave them. Every mutating call can be made to fail
//! by a shared [`CrashSwitch`], so that a test can crash at every step.
//!
//! I/O errors that do not end the process can be injected too:
//! [`CrashFiles::fail_syncs_with`] (a failed fsync, optionally dropping the
//! unsynced bytes the way Linux may after a failed writeback),
//! [`CrashFiles::fail_appends`] (a short write, then an error) and
//! [`CrashFiles::set_no_space`] (a full disk: every write and append fails
//! with `ENOSPC`).

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

use super::crash::CrashSwitch;
use crate::checksum::TableStorage;
use crate::error::{Error, Result};

const SECTOR: usize = 512;

#[derive(Debug, Clone, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Byte ranges a failed sync dropped: readable, but written back as
    /// zeros by the next sync that succeeds.
    holes: Vec<(usize, usize)>,
}

/// `ENOSPC`.
const ENOSPC: i32 = 28;

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, usize),
    Rename(String, String),
    Unlink(String),
}

impl DirOp {
    fn apply(&self, dir: &mut BTreeMap<String, usize>) {
        match self {
            DirOp::Link(name, inode) => {
                dir.insert(name.clone(), *inode);
            }
            DirOp::Rename(from, to) => {
                if let Some(inode) = dir.remove(from) {
                    dir.insert(to.clone(), inode);
                }
            }
            DirOp::Unlink(name) => {
                dir.remove(name);
            }
        }
    }
}

#[derive(Debug, Default)]
struct FilesState {
    inodes: Vec<Inode>,
    live: BTreeMap<String, usize>,
    durable: BTreeMap<String, usize>,
    /// Name changes since the last `sync_dir`, oldest first.
    pending: Vec<DirOp>,
    failing_syncs: u32,
    sync_errno: i32,
    sync_drops: bool,
    failing_appends: u32,
    append_errno: i32,
    no_space: bool,
    injected: u64,
    syncs: u64,
}

/// An in-memory directory with durable and unsynced state (see the module
/// docs).
#[derive(Debug, Default)]
pub struct CrashFiles {
    state: Mutex<FilesState>,
    switch: Option<Arc<CrashSwitch>>,
}

fn not_found(name: &str) -> Error {
    Error::io(
        format!("file {name}"),
        io::Error::from(io::ErrorKind::NotFound),
    )
}

impl CrashFiles {
    /// An empty directory.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes mutating calls go through `switch`.
    #[must_use]
    pub fn with_switch(mut self, switch: Arc<CrashSwitch>) -> Self {
        self.switch = Some(switch);
        self
    }

    fn tick(&self, what: &str) -> Result<()> {
        self.switch.as_ref().map_or(Ok(()), |s| s.tick(what))
    }

    /// Makes the next `times` file syncs fail with `EIO` (nothing becomes
    /// durable).
    pub fn fail_syncs(&self, times: u32) {
        self.fail_syncs_with(times, 5, false);
    }

    /// Makes the next `times` file syncs fail with the OS error `errno`;
    /// nothing becomes durable. With `drop_unsynced`, each failure also
    /// does what Linux may do after a failed writeback: the file's unsynced
    /// bytes stay readable but are never written back — a later sync that
    /// succeeds leaves them as zeros on the simulated disk
    /// ([`crash`](Self::crash) shows that), unless the file is rewritten.
    pub fn fail_syncs_with(&self, times: u32, errno: i32, drop_unsynced: bool) {
        let mut st = self.state.lock();
        st.failing_syncs = times;
        st.sync_errno = errno;
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
    /// every append fails with `ENOSPC` after a short write of half its
    /// bytes, and every write of a file fails with `ENOSPC` leaving it
    /// empty (a new name is still created, as `open(O_CREAT)` does).
    pub fn set_no_space(&self, full: bool) {
        self.state.lock().no_space = full;
    }

    /// Writes, appends and syncs failed on purpose so far.
    #[must_use]
    pub fn injected_failures(&self) -> u64 {
        self.state.lock().injected
    }

    /// Successful file syncs so far.
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// The names present now, sorted.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.state.lock().live.keys().cloned().collect()
    }

    /// A file's current contents.
    #[must_use]
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.state.lock();
        st.live.get(name).map(|&i| st.inodes[i].live.clone())
    }

    /// Replaces (or creates) a file, durably: damage at rest, or a crafted
    /// file.
    pub fn set_file(&self, name: &str, bytes: Vec<u8>) {
        let mut st = self.state.lock();
        let i = st.inodes.len();
        st.inodes.push(Inode {
            live: bytes.clone(),
            durable: bytes,
            holes: Vec::new(),
        });
        st.live.insert(name.to_string(), i);
        st.durable.insert(name.to_string(), i);
    }

    /// Removes a file, durably.
    pub fn delete_file(&self, name: &str) {
        let mut st = self.state.lock();
        st.live.remove(name);
        st.durable.remove(name);
    }

    /// The directory a restarted process sees (see the module docs): with
    /// `None`, only what is durable; with a seed, some of the rest too.
    #[must_use]
    pub fn crash(&self, seed: Option<u64>) -> CrashFiles {
        let st = self.state.lock();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed.unwrap_or(0));
        let mut dir = st.durable.clone();
        if seed.is_some() {
            let kept = rng.random_range(0..=st.pending.len());
            for op in &st.pending[..kept] {
                op.apply(&mut dir);
            }
        }
        let mut out = FilesState::default();
        for (name, &i) in &dir {
            let inode = &st.inodes[i];
            let bytes = match seed {
                Some(_) => crashed_contents(inode, &mut rng),
                None => inode.durable.clone(),
            };
            let j = out.inodes.len();
            out.inodes.push(Inode {
                live: bytes.clone(),
                durable: bytes,
                holes: Vec::new(),
            });
            out.live.insert(name.clone(), j);
            out.durable.insert(name.clone(), j);
        }
        CrashFiles {
            state: Mutex::new(out),
            switch: None,
        }
    }
}

/// What a crash leaves of a file: its durable bytes, plus (when it was only
/// appended to since its last sync) a torn prefix of the new bytes with
/// sectors missing, or (when it was rewritten) the old or the new contents.
fn crashed_contents(inode: &Inode, rng: &mut impl Rng) -> Vec<u8> {
    if inode.live == inode.durable {
        return inode.durable.clone();
    }
    if !inode.live.starts_with(&inode.durable) {
        return if rng.random_bool(0.5) {
            inode.durable.clone()
        } else {
            inode.live.clone()
        };
    }
    let start = inode.durable.len();
    let kept = rng.random_range(0..=inode.live.len() - start);
    let mut out = inode.live[..start + kept].to_vec();
    if rng.random_bool(0.5) {
        // The file grew, but some sectors never reached the disk.
        let mut s = start - start % SECTOR;
        while s < out.len() {
            let e = (s + SECTOR).min(out.len());
            if rng.random_bool(0.3) {
                out[s.max(start)..e].fill(0);
            }
            s = e;
        }
    }
    out
}

impl TableStorage for CrashFiles {
    fn list(&self) -> Result<Vec<String>> {
        Ok(self.names())
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.file(name))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.tick("writing a file")?;
        let mut st = self.state.lock();
        let full = st.no_space;
        let contents = if full { Vec::new() } else { bytes.to_vec() };
        match st.live.get(name).copied() {
            Some(i) => {
                st.inodes[i].live = contents;
                st.inodes[i].holes.clear();
            }
            None => {
                let i = st.inodes.len();
                st.inodes.push(Inode {
                    live: contents,
                    durable: Vec::new(),
                    holes: Vec::new(),
                });
                st.live.insert(name.to_string(), i);
                st.pending.push(DirOp::Link(name.to_string(), i));
            }
        }
        if full {
            st.injected += 1;
            return Err(Error::io(
                format!("writing {name} (injected)"),
                io::Error::from_raw_os_error(ENOSPC),
            ));
        }
        Ok(())
    }

    fn append(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.tick("appending to a file")?;
        let mut st = self.state.lock();
        let i = *st.live.get(name).ok_or_else(|| not_found(name))?;
        let errno = if st.no_space {
            Some(ENOSPC)
        } else if st.failing_appends > 0 {
            st.failing_appends -= 1;
            Some(st.append_errno)
        } else {
            None
        };
        match errno {
            Some(errno) => {
                st.injected += 1;
                st.inodes[i]
                    .live
                    .extend_from_slice(&bytes[..bytes.len() / 2]);
                Err(Error::io(
                    format!("appending to {name} (injected)"),
                    io::Error::from_raw_os_error(errno),
                ))
            }
            None => {
                st.inodes[i].live.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn sync(&self, name: &str) -> Result<()> {
        self.tick("syncing a file")?;
        let mut st = self.state.lock();
        if st.failing_syncs > 0 {
            st.failing_syncs -= 1;
            st.injected += 1;
            let errno = if st.sync_errno == 0 { 5 } else { st.sync_errno };
            if st.sync_drops {
                if let Some(&i) = st.live.get(name) {
                    let f = &mut st.inodes[i];
                    let from = f.durable.len().min(f.live.len());
                    if f.live.len() > from {
                        let hole = (from, f.live.len());
                        f.holes.push(hole);
                    }
                }
            }
            return Err(Error::io(
                format!("syncing {name} (injected)"),
                io::Error::from_raw_os_error(errno),
            ));
        }
        let i = *st.live.get(name).ok_or_else(|| not_found(name))?;
        let f = &mut st.inodes[i];
        f.durable = f.live.clone();
        for &(a, b) in &f.holes {
            let b = b.min(f.durable.len());
            if a < b {
                f.durable[a..b].fill(0);
            }
        }
        f.holes.clear();
        st.syncs += 1;
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.tick("renaming a file")?;
        let mut st = self.state.lock();
        let i = st.live.remove(from).ok_or_else(|| not_found(from))?;
        st.live.insert(to.to_string(), i);
        st.pending
            .push(DirOp::Rename(from.to_string(), to.to_string()));
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.tick("removing a file")?;
        let mut st = self.state.lock();
        if st.live.remove(name).is_some() {
            st.pending.push(DirOp::Unlink(name.to_string()));
        }
        Ok(())
    }

    fn sync_dir(&self) -> Result<()> {
        self.tick("syncing the directory")?;
        let mut st = self.state.lock();
        st.durable = st.live.clone();
        st.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_synced_data_and_names_survive_without_a_seed() {
        let f = CrashFiles::new();
        f.write("a", b"one").unwrap();
        f.sync("a").unwrap();
        assert!(
            f.crash(None).names().is_empty(),
            "the name was never synced"
        );
        f.sync_dir().unwrap();
        f.append("a", b"two").unwrap();
        let c = f.crash(None);
        assert_eq!(c.file("a").unwrap(), b"one");
        f.rename("a", "b").unwrap();
        assert_eq!(f.crash(None).names(), vec!["a".to_string()]);
        f.sync_dir().unwrap();
        f.sync("b").unwrap();
        assert_eq!(f.crash(None).file("b").unwrap(), b"onetwo");
    }

    #[test]
    fn seeded_crashes_keep_durable_bytes_and_some_of_the_rest() {
        let f = CrashFiles::new();
        f.write("log", &[1u8; 700]).unwrap();
        f.sync("log").unwrap();
        f.sync_dir().unwrap();
        f.append("log", &[2u8; 2000]).unwrap();
        let mut lens = std::collections::BTreeSet::new();
        let mut holes = false;
        for seed in 0..200 {
            let c = f.crash(Some(seed)).file("log").unwrap();
            assert!(c.len() >= 700 && c.len() <= 2700);
            assert_eq!(&c[..700], &[1u8; 700][..], "durable bytes survive");
            assert!(c[700..].iter().all(|&b| b == 2 || b == 0));
            holes |= c[700..].contains(&0) && c.ends_with(&[2]);
            lens.insert(c.len());
        }
        assert!(lens.len() > 50, "torn at many lengths");
        assert!(holes, "sometimes a sector is missing before a kept one");
    }

    #[test]
    fn the_switch_stops_every_mutation() {
        let s = CrashSwitch::new();
        let f = CrashFiles::new().with_switch(s.clone());
        f.write("a", b"x").unwrap();
        s.arm_at(s.ops());
        assert!(f.append("a", b"y").is_err());
        assert!(f.sync("a").is_err());
        assert!(f.sync_dir().is_err());
        assert_eq!(f.file("a").unwrap(), b"x");
    }
}
