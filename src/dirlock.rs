//! One owner per directory: the exclusive lock every component that keeps
//! files in a directory holds for as long as it uses it.
//!
//! [`DirLock::acquire`] opens (creating it if needed) a lock file inside the
//! directory and takes an exclusive `flock` on it without waiting. The lock
//! belongs to that open file description, so a second acquire fails whether
//! it comes from another process or from this one (a second manager on the
//! same directory opens the file again and gets its own description). It is
//! released when the [`DirLock`] is dropped, and by the OS when the process
//! dies, however it dies: a crash never leaves a directory locked.
//!
//! # Contract
//!
//! - At most one `DirLock` of a given lock-file name exists per directory at
//!   a time, across every process on the machine (for local file systems;
//!   `flock` over NFS depends on the server). A second acquire is refused
//!   with [`Error::DirectoryLocked`], which names the directory, the kind of
//!   owner, the holder's pid when it can be read, and what to do.
//! - The lock file is never replaced or removed (a lock on a file that gets
//!   renamed over would lock nothing). After taking the lock its holder
//!   writes its pid into it, as text, so that a refused opener can say who
//!   holds the directory; those bytes are only ever shown, never trusted.
//! - Drop releases the lock explicitly rather than by closing the
//!   descriptor: a child process forked by the host at that moment (before
//!   its `exec`) shares the descriptor and would otherwise keep the lock.
//!
//! Each owner kind has its own lock-file name, so one directory may hold,
//! say, a run marker and snapshots, each with one owner; two owners of one
//! kind never share a directory.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil;

/// Bytes of a lock file read to find its holder's pid.
const HOLDER_BYTES_MAX: u64 = 32;

/// An exclusive lock on a directory, held until dropped. See the module docs.
#[derive(Debug)]
pub(crate) struct DirLock {
    file: File,
}

impl DirLock {
    /// Takes the lock of `dir` (which must exist) through its lock file
    /// `name`, on behalf of an `owner` ("snapshot manager"); `remedy` says
    /// what a refused opener should do.
    ///
    /// # Errors
    /// [`Error::DirectoryLocked`] when another owner, in this process or
    /// another, holds it; [`Error::Io`] / [`Error::NotRegularFile`] when the
    /// lock file cannot be opened or locked.
    pub(crate) fn acquire(
        dir: &Path,
        name: &str,
        owner: &'static str,
        remedy: &str,
    ) -> Result<DirLock> {
        let path = dir.join(name);
        let mut file = fsutil::open_regular(
            fsutil::private_create_options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            &path,
            "opening",
        )?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::DirectoryLocked {
                    path: dir.to_path_buf(),
                    owner,
                    holder_pid: read_holder(&mut file),
                    remedy: remedy.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()), e));
            }
        }
        // Informational only: a failure to record the pid costs the next
        // refused opener the holder's name, nothing else.
        let pid = std::process::id();
        if let Err(e) = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{pid}"))
        {
            tracing::debug!(lock = %path.display(), error = %e, "cannot record the lock holder's pid");
        }
        Ok(DirLock { file })
    }
}

/// The pid a lock's holder wrote into the lock file, if it reads as one.
fn read_holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(HOLDER_BYTES_MAX).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(dir: &Path) -> Result<DirLock> {
        DirLock::acquire(dir, "test.lock", "test owner", "drop the other one")
    }

    #[test]
    fn a_second_owner_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        match lock(dir.path()) {
            Err(Error::DirectoryLocked {
                path,
                owner,
                holder_pid,
                remedy,
            }) => {
                assert_eq!(path, dir.path());
                assert_eq!(owner, "test owner");
                assert_eq!(holder_pid, Some(std::process::id()));
                assert_eq!(remedy, "drop the other one");
            }
            other => panic!("expected DirectoryLocked, got {other:?}"),
        }
        // Another name is another owner kind: not refused.
        let _other_kind = DirLock::acquire(dir.path(), "other.lock", "o", "r").unwrap();
        drop(first);
        lock(dir.path()).unwrap();
    }

    #[test]
    fn a_lock_held_through_another_open_file_description_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.lock");
        let held = File::create(&path).unwrap();
        held.lock().unwrap();
        let e = lock(dir.path()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::DirectoryLocked {
                    holder_pid: None,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("drop the other one"), "{e}");
        held.unlock().unwrap();
        lock(dir.path()).unwrap();
    }

    #[test]
    fn junk_in_the_lock_file_is_no_pid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test.lock"), [0xff; 100]).unwrap();
        let held = File::open(dir.path().join("test.lock")).unwrap();
        held.lock().unwrap();
        assert!(matches!(
            lock(dir.path()),
            Err(Error::DirectoryLocked {
                holder_pid: None,
                ..
            })
        ));
    }
}
