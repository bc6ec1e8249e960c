//! Where segment files and the state file live: the [`JournalStorage`]
//! seam, and [`DirStorage`], the real directory implementation.
//!
//! The journal does all its I/O through this trait so that tests can put it
//! on a crash-simulating in-memory directory
//! (`selfheal::testing::CrashDir`, `testing` feature) and make an
//! fsync fail on purpose.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::dirlock::DirLock;
use crate::error::{Error, Result};
use crate::fsutil;

use super::state::STATE_FILE_NAME;

/// Storage for the journal's segment files, addressed by segment number.
///
/// Contracts the journal relies on (and that `DirStorage` keeps):
/// - `create` makes the segment exist durably with exactly `header` as its
///   contents before it returns (file written, fsynced, directory fsynced);
/// - `append` adds bytes at the end; they may be lost at a crash until
///   `sync` of that segment returns;
/// - `truncate` and `remove` are durable when they return;
/// - `write_state` replaces the state file atomically (a crash leaves the
///   old or the new contents, never a mix) and durably before it returns;
/// - an error from any method means the state of that segment (or of the
///   state file) is unknown.
pub trait JournalStorage: Send + Sync + fmt::Debug {
    /// The segments present, in any order.
    ///
    /// # Errors
    /// [`Error::Io`] when the listing fails.
    fn list(&self) -> Result<Vec<u64>>;

    /// The whole contents of a segment.
    ///
    /// # Errors
    /// [`Error::Io`].
    fn read(&self, segment: u64) -> Result<Vec<u8>>;

    /// Creates a segment holding `header`, durably.
    ///
    /// # Errors
    /// [`Error::Io`], also when the segment exists already.
    fn create(&self, segment: u64, header: &[u8]) -> Result<()>;

    /// Appends `bytes` to a segment.
    ///
    /// # Errors
    /// [`Error::Io`].
    fn append(&self, segment: u64, bytes: &[u8]) -> Result<()>;

    /// Makes every byte appended to the segment durable (fsync).
    ///
    /// # Errors
    /// [`Error::Io`]: appended bytes may be lost. The journal never merely
    /// retries a failed sync: it stalls (or poisons itself), and a resume
    /// truncates the segment after its last durable record and appends the
    /// lost records again from memory.
    fn sync(&self, segment: u64) -> Result<()>;

    /// Cuts a segment to `len` bytes, durably.
    ///
    /// # Errors
    /// [`Error::Io`].
    fn truncate(&self, segment: u64, len: u64) -> Result<()>;

    /// Deletes a segment, durably. A segment that is gone already is not
    /// an error: the journal retries a removal that failed after the file
    /// went (its directory sync failed).
    ///
    /// # Errors
    /// [`Error::Io`].
    fn remove(&self, segment: u64) -> Result<()>;

    /// The contents of the journal's state file (see
    /// `JournalState`), or `None` when there is none.
    ///
    /// # Errors
    /// [`Error::Io`] when it exists but cannot be read.
    fn read_state(&self) -> Result<Option<Vec<u8>>>;

    /// Replaces the state file with `bytes`, atomically and durably.
    ///
    /// # Errors
    /// [`Error::Io`]: the file then holds the old or the new contents.
    fn write_state(&self, bytes: &[u8]) -> Result<()>;

    /// Where the state file is, for messages.
    fn state_path(&self) -> PathBuf {
        PathBuf::from(STATE_FILE_NAME)
    }

    /// Where a segment is, for messages (a file path, or a name).
    fn segment_path(&self, segment: u64) -> PathBuf {
        PathBuf::from(segment_file_name(segment))
    }

    /// Checks that new segments can be written here (called at open).
    ///
    /// # Errors
    /// [`Error::Io`] when they cannot.
    fn check_writable(&self) -> Result<()> {
        Ok(())
    }

    /// Gives up ownership of the storage (a directory's lock), so that
    /// another manager may open it. Called once by
    /// [`TransactionRollbackManager::stop`](crate::TransactionRollbackManager::stop)
    /// after its last write; nothing is written after it. The default does
    /// nothing (a storage without an owner).
    fn release(&self) {}
}

/// Segment files in one directory, named `undo-<16 hex digits>.log`, and
/// the state file [`STATE_FILE_NAME`], replaced with the crate's atomic write
/// (temporary file, fsync, rename, directory fsync). Files with other names
/// are ignored.
///
/// A `DirStorage` owns its directory for as long as it lives: it holds the
/// directory's exclusive lock ([`LOCK_FILE`]), so a second one — a
/// second [`TransactionRollbackManager`](crate::TransactionRollbackManager)
/// on the same directory, in this process or another — is refused with
/// [`Error::DirectoryLocked`] until the first is stopped or dropped.
pub struct DirStorage {
    dir: PathBuf,
    open: Mutex<HashMap<u64, File>>,
    /// Taken by [`JournalStorage::release`].
    lock: Mutex<Option<DirLock>>,
}

/// The lock file of an undo journal directory (see [`DirStorage`]).
pub const LOCK_FILE: &str = "journal.lock";

impl fmt::Debug for DirStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirStorage")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The file name of a segment.
#[must_use]
pub fn segment_file_name(segment: u64) -> String {
    format!("undo-{segment:016x}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("undo-")?.strip_suffix(".log")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

impl DirStorage {
    /// Uses (creating it if needed) the directory `dir`, and takes its lock.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be created or its lock file
    /// cannot be opened; [`Error::DirectoryLocked`] when another owner (in
    /// this process or another) holds the directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| {
            Error::io(
                format!("creating the undo journal directory {}", dir.display()),
                e,
            )
        })?;
        let lock = DirLock::acquire(
            &dir,
            LOCK_FILE,
            "undo journal",
            "stop or drop the other TransactionRollbackManager (or DirStorage) on this directory first, or use another directory",
        )?;
        Ok(DirStorage {
            dir,
            open: Mutex::new(HashMap::new()),
            lock: Mutex::new(Some(lock)),
        })
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn with_file<T>(
        &self,
        segment: u64,
        what: &str,
        f: impl FnOnce(&mut File) -> std::io::Result<T>,
    ) -> Result<T> {
        let mut open = self.open.lock();
        let path = self.segment_path(segment);
        let file = match open.entry(segment) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(fsutil::open_regular(
                fsutil::private_create_options().append(true),
                &path,
                "opening",
            )?),
        };
        f(file).map_err(|e| Error::io(format!("{what} {}", path.display()), e))
    }
}

impl JournalStorage for DirStorage {
    fn release(&self) {
        self.open.lock().clear();
        self.lock.lock().take();
    }

    fn segment_path(&self, segment: u64) -> PathBuf {
        self.dir.join(segment_file_name(segment))
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE_NAME)
    }

    fn read_state(&self) -> Result<Option<Vec<u8>>> {
        fsutil::read_optional(&self.state_path())
    }

    fn write_state(&self, bytes: &[u8]) -> Result<()> {
        fsutil::atomic_write(&self.state_path(), bytes)
    }

    fn list(&self) -> Result<Vec<u64>> {
        Ok(fsutil::list_names(&self.dir)?
            .iter()
            .filter_map(|name| parse_segment_name(name))
            .collect())
    }

    fn read(&self, segment: u64) -> Result<Vec<u8>> {
        fsutil::read_file(&self.segment_path(segment))
    }

    fn create(&self, segment: u64, header: &[u8]) -> Result<()> {
        let path = self.segment_path(segment);
        let mut file = fsutil::open_regular(
            fsutil::private_create_options()
                .append(true)
                .create_new(true),
            &path,
            "creating",
        )?;
        file.write_all(header)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(format!("writing the header of {}", path.display()), e))?;
        fsutil::sync_dir(&self.dir)?;
        self.open.lock().insert(segment, file);
        Ok(())
    }

    fn append(&self, segment: u64, bytes: &[u8]) -> Result<()> {
        self.with_file(segment, "appending to", |f| f.write_all(bytes))
    }

    fn sync(&self, segment: u64) -> Result<()> {
        self.with_file(segment, "syncing", |f| f.sync_data())
    }

    fn truncate(&self, segment: u64, len: u64) -> Result<()> {
        self.with_file(segment, "truncating", |f| {
            f.set_len(len)?;
            f.sync_all()
        })
    }

    fn remove(&self, segment: u64) -> Result<()> {
        self.open.lock().remove(&segment);
        let path = self.segment_path(segment);
        // Gone already is removed: a removal whose directory sync failed
        // is retried by the next retirement, which finds no file.
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
        fsutil::sync_dir(&self.dir)
    }

    fn check_writable(&self) -> Result<()> {
        let probe = self.dir.join(".undo-write-probe");
        fsutil::private_create_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&probe)
            .and_then(|mut f| f.write_all(b"probe"))
            .map_err(|e| {
                Error::io(
                    format!(
                        "writing in the undo journal directory {} (it must be writable)",
                        self.dir.display()
                    ),
                    e,
                )
            })?;
        let _ = fs::remove_file(&probe);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        assert_eq!(parse_segment_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_name("undo-zz.log"), None);
        assert_eq!(parse_segment_name("notes.txt"), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let s = DirStorage::open(dir.path()).unwrap();
        s.create(3, b"hdr").unwrap();
        s.append(3, b"abc").unwrap();
        s.sync(3).unwrap();
        assert_eq!(s.list().unwrap(), vec![3]);
        assert_eq!(s.read(3).unwrap(), b"hdrabc");
        s.truncate(3, 4).unwrap();
        assert_eq!(s.read(3).unwrap(), b"hdra");
        assert!(s.create(3, b"again").is_err());
        s.remove(3).unwrap();
        assert!(s.list().unwrap().is_empty());
        // Gone already is removed: a retirement retries a removal whose
        // directory sync failed.
        s.remove(3).unwrap();
        assert_eq!(s.read_state().unwrap(), None);
        s.write_state(b"one").unwrap();
        s.write_state(b"two").unwrap();
        assert_eq!(s.read_state().unwrap().as_deref(), Some(&b"two"[..]));
        assert!(
            s.list().unwrap().is_empty(),
            "the state file is not a segment"
        );
    }
}
