//! Where a durable table's files live: the [`TableStorage`] seam, and
//! [`DirTableStorage`], the real directory.
//!
//! The table does all its file I/O through this trait, one primitive step at
//! a time (write, append, fsync, rename, remove, fsync of the directory), so
//! that a crash simulator (`selfheal::testing::CrashFiles`, with the
//! `testing` feature) can keep a live and a durable image of every file and
//! of the directory, stop the process between any two steps, and tear what
//! was not synced.
//!
//! # What the table assumes of the media (and of an implementation)
//!
//! - `write` and `append` change the file's contents at once for readers in
//!   this process; they are durable once `sync` of that file returns. Until
//!   then a crash may keep any part of them: a prefix, sectors in any order,
//!   zeros where nothing reached the disk.
//! - A new name (`write` of an absent file, `rename`, `remove`) is durable
//!   once `sync_dir` returns; before that a crash keeps the directory as it
//!   was or with some of the changes, applied in the order they were made.
//!   `rename` replaces its target atomically: after a crash the name refers
//!   to the old file or to the new one.
//! - `sync` reports every failure to make data durable; after a failed sync
//!   the table never assumes the data is durable (it stalls, and a resume
//!   writes the bytes again; it never only fsyncs again).
//! - Durable bytes stay as written unless the media damages them; damage is
//!   found by the CRCs, never assumed away.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::dirlock::DirLock;
use crate::error::{Error, Result};
use crate::fsutil;

/// A directory of named files: the durable table's only I/O (contracts in the
/// module docs). Names are plain file names without separators.
pub trait TableStorage: Send + Sync + fmt::Debug {
    /// The names of the files present, in any order.
    ///
    /// # Errors
    /// [`Error::Io`].
    fn list(&self) -> Result<Vec<String>>;

    /// The whole contents of `name`, or `None` when it does not exist.
    ///
    /// # Errors
    /// [`Error::Io`] for any failure but absence.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// Creates `name` (or truncates it) holding exactly `bytes`; durable
    /// after [`sync`](Self::sync) and, for a new name, [`sync_dir`](Self::sync_dir).
    ///
    /// # Errors
    /// [`Error::Io`]; the file's contents are then unknown.
    fn write(&self, name: &str, bytes: &[u8]) -> Result<()>;

    /// Appends `bytes` to the existing file `name`; durable after `sync`.
    ///
    /// # Errors
    /// [`Error::Io`]; the file's tail is then unknown.
    fn append(&self, name: &str, bytes: &[u8]) -> Result<()>;

    /// Makes the contents of `name` durable (fsync).
    ///
    /// # Errors
    /// [`Error::Io`]: the data may not be durable, and may never be.
    fn sync(&self, name: &str) -> Result<()>;

    /// Renames `from` to `to`, replacing `to` atomically; durable after
    /// `sync_dir`.
    ///
    /// # Errors
    /// [`Error::Io`].
    fn rename(&self, from: &str, to: &str) -> Result<()>;

    /// Removes `name` (absent is not an error); durable after `sync_dir`.
    ///
    /// # Errors
    /// [`Error::Io`].
    fn remove(&self, name: &str) -> Result<()>;

    /// Makes the directory's names durable (fsync of the directory).
    ///
    /// # Errors
    /// [`Error::Io`].
    fn sync_dir(&self) -> Result<()>;

    /// Where `name` is, for messages.
    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(name)
    }
}

/// The temporary name used while `name` is being replaced.
pub(crate) fn tmp_name(name: &str) -> String {
    format!("{name}.tmp")
}

/// Replaces `name` with `bytes` crash-safely through `storage`: write
/// `name.tmp`, fsync it, rename it over `name`, fsync the directory — the
/// steps of [`fsutil::atomic_write`], one seam call each so that a crash can
/// fall between any two. A crash before the rename leaves the old file (and
/// maybe a temporary one, which readers ignore); after it, the new one.
///
/// # Errors
/// The failing step's [`Error::Io`]; the old file is untouched unless the
/// failure came after the rename.
pub(crate) fn replace(storage: &dyn TableStorage, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_name(name);
    storage.write(&tmp, bytes)?;
    storage.sync(&tmp)?;
    storage.rename(&tmp, name)?;
    storage.sync_dir()
}

/// Files in one directory, opened by name.
pub struct DirTableStorage {
    dir: PathBuf,
    appending: Mutex<HashMap<String, File>>,
    /// The one-owner lock of the table opened through it, held as long as
    /// the table (see [`ChecksumTable::open`](super::ChecksumTable::open)).
    _owner: Option<DirLock>,
}

impl fmt::Debug for DirTableStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirTableStorage")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl DirTableStorage {
    /// The files of `dir` (which must exist).
    #[must_use]
    pub fn new(dir: impl AsRef<Path>) -> Self {
        DirTableStorage {
            dir: dir.as_ref().to_path_buf(),
            appending: Mutex::new(HashMap::new()),
            _owner: None,
        }
    }

    /// This storage, owning the table named `stem` in its directory: a second
    /// opener of the same table, in this process or another, is refused
    /// until this storage (and the table holding it) is dropped.
    ///
    /// # Errors
    /// [`Error::DirectoryLocked`] when the table is already open;
    /// [`Error::Io`] when its lock file (`<stem>.lock`) cannot be made.
    pub(crate) fn owning(mut self, stem: &str) -> Result<Self> {
        self._owner = Some(DirLock::acquire(
            &self.dir,
            &format!("{stem}.lock"),
            "checksum table",
            "drop the other ChecksumTable opened on this path (and the detector holding it), or stop its process first, or use another path",
        )?);
        Ok(self)
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, what: &str, name: &str, e: std::io::Error) -> Error {
        Error::io(format!("{what} {}", self.path(name).display()), e)
    }

    /// Runs `f` on the open append handle of `name`, opening it first.
    fn with_handle(
        &self,
        name: &str,
        what: &str,
        f: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<()> {
        let mut open = self.appending.lock();
        if !open.contains_key(name) {
            let file = fsutil::open_regular(
                fsutil::private_create_options().append(true),
                &self.path(name),
                "opening",
            )?;
            open.insert(name.to_string(), file);
        }
        let file = open.get_mut(name).expect("inserted above");
        f(file).map_err(|e| self.io(what, name, e))
    }

    fn forget_handle(&self, name: &str) {
        self.appending.lock().remove(name);
    }
}

impl TableStorage for DirTableStorage {
    fn list(&self) -> Result<Vec<String>> {
        fsutil::list_names(&self.dir)
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        fsutil::read_optional(&self.path(name))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.forget_handle(name);
        let mut f = fsutil::open_regular(
            fsutil::private_create_options()
                .write(true)
                .create(true)
                .truncate(true),
            &self.path(name),
            "creating",
        )?;
        f.write_all(bytes).map_err(|e| self.io("writing", name, e))
    }

    fn append(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.with_handle(name, "appending to", |f| f.write_all(bytes))
    }

    fn sync(&self, name: &str) -> Result<()> {
        // The fsync runs on a duplicate of the handle, with no lock held:
        // appends to this or another file go on meanwhile.
        let mut dup = None;
        self.with_handle(name, "syncing", |f| {
            dup = Some(f.try_clone()?);
            Ok(())
        })?;
        dup.expect("set by with_handle")
            .sync_data()
            .map_err(|e| self.io("syncing", name, e))
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.forget_handle(from);
        self.forget_handle(to);
        fs::rename(self.path(from), self.path(to)).map_err(|e| {
            Error::io(
                format!(
                    "renaming {} to {}",
                    self.path(from).display(),
                    self.path(to).display()
                ),
                e,
            )
        })
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.forget_handle(name);
        match fs::remove_file(self.path(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("removing", name, e)),
        }
    }

    fn sync_dir(&self) -> Result<()> {
        fsutil::sync_dir(&self.dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_storage_does_what_the_contract_says() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirTableStorage::new(dir.path());
        assert_eq!(s.read("a").unwrap(), None);
        s.write("a", b"one").unwrap();
        s.append("a", b"two").unwrap();
        s.sync("a").unwrap();
        assert_eq!(s.read("a").unwrap().unwrap(), b"onetwo");
        replace(&s, "a", b"three").unwrap();
        assert_eq!(s.read("a").unwrap().unwrap(), b"three");
        s.append("a", b"!").unwrap();
        assert_eq!(s.read("a").unwrap().unwrap(), b"three!");
        let mut names = s.list().unwrap();
        names.sort();
        assert_eq!(names, vec!["a".to_string()], "no temporary file is left");
        s.remove("a").unwrap();
        s.remove("a").unwrap();
        assert!(s.list().unwrap().is_empty());
        assert!(matches!(s.append("a", b"x"), Err(Error::Io { .. })));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            s.write("b", b"x").unwrap();
            let mode = fs::metadata(s.path("b")).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "files are owner-only");
        }
    }
}
