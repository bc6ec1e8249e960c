//! The database file as the default VFS sees it: a second `sqlite3_file`
//! opened on the main database through SQLite's own default VFS, read and
//! written at byte offsets. Every page the library reads, seals, repairs or
//! truncates goes through this handle, so the file is never touched by a
//! descriptor SQLite does not know about (on Unix, closing any descriptor of
//! a file drops every POSIX lock the process holds on it; the default VFS
//! keeps its descriptors of one file together and defers such closes).
//!
//! This file, `vfs.rs` and `vfs/` are the only places of the `sqlite` feature with
//! `unsafe` code; each block says why it is sound.

#![allow(unsafe_code)]

use std::ffi::{c_int, c_void, CStr, CString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use parking_lot::Mutex;
use rusqlite::ffi;

/// A SQLite result code other than `SQLITE_OK`.
pub(super) type Rc = c_int;

/// The default VFS, as registered in SQLite's global list (never freed).
#[derive(Clone, Copy)]
pub(super) struct RootVfs(pub(super) *mut ffi::sqlite3_vfs);

// SAFETY: a registered `sqlite3_vfs` is immutable and process-global, and its
// methods may be called from any thread (SQLite's threading contract for VFSes).
unsafe impl Send for RootVfs {}
// SAFETY: as for `Send`: shared references only read the immutable struct.
unsafe impl Sync for RootVfs {}

impl RootVfs {
    /// The VFS's registered name.
    pub(super) fn name(&self) -> String {
        // SAFETY: `zName` of a registered VFS is a NUL-terminated string that
        // lives as long as the registration (the default VFS: the process).
        unsafe { CStr::from_ptr((*self.0).zName) }
            .to_string_lossy()
            .into_owned()
    }

    /// `szOsFile` of the default VFS: bytes its `sqlite3_file` needs.
    pub(super) fn file_size(&self) -> usize {
        // SAFETY: reading a field of the immutable registered struct.
        usize::try_from(unsafe { (*self.0).szOsFile }).unwrap_or(0)
    }
}

/// One `sqlite3_file` of the default VFS, opened by the library, with its
/// calls serialised (the library calls it from several threads).
pub(super) struct RawFile {
    inner: Mutex<Handle>,
}

struct Handle {
    /// The `sqlite3_file`, in a buffer of `szOsFile` bytes (8-byte aligned).
    file: Box<[u64]>,
    /// The filename SQLite's VFS keeps a pointer to until the file is closed.
    name: ffi::sqlite3_filename,
}

// SAFETY: the handle is only used under the mutex, and SQLite's default VFS
// allows a file to be used from any thread as long as calls do not overlap.
unsafe impl Send for Handle {}

impl fmt::Debug for RawFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawFile").finish_non_exhaustive()
    }
}

impl Handle {
    fn ptr(&mut self) -> *mut ffi::sqlite3_file {
        self.file.as_mut_ptr().cast()
    }

    /// The file's method table, as a pointer: a reference would claim a
    /// whole version-3 table, and the default VFS's may be shorter.
    fn methods(&mut self) -> *const ffi::sqlite3_io_methods {
        // SAFETY: the file was opened successfully (`RawFile::open` only
        // returns opened files), so `pMethods` points at the default VFS's
        // static method table.
        unsafe { (*self.ptr()).pMethods }
    }
}

/// Version-1 method `$m` of an open handle's table (every version has it),
/// read through a raw place.
macro_rules! v1_method {
    ($h:expr, $m:ident) => {{
        let methods = $h.methods();
        // SAFETY: an open file's table is at least a version-1 table, which
        // holds `$m`; only that field is read.
        unsafe { std::ptr::addr_of!((*methods).$m).read() }
    }};
}

fn rc_of(rc: c_int) -> Result<(), Rc> {
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rc)
    }
}

impl RawFile {
    /// Opens `path` through `root` with `flags` (the type flag is forced to
    /// `SQLITE_OPEN_MAIN_DB`).
    /// The path is passed as its bytes, whatever they are.
    pub(super) fn open(root: RootVfs, path: &Path, flags: c_int) -> Result<RawFile, Rc> {
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| ffi::SQLITE_CANTOPEN)?;
        let empty = c"";
        // SAFETY: every argument is a valid NUL-terminated string and no
        // parameter list is passed; the result is freed in `Drop`.
        let name = unsafe {
            ffi::sqlite3_create_filename(
                c_path.as_ptr(),
                empty.as_ptr(),
                empty.as_ptr(),
                0,
                std::ptr::null_mut(),
            )
        };
        if name.is_null() {
            return Err(ffi::SQLITE_NOMEM);
        }
        let words = root.file_size().div_ceil(8).max(1);
        let mut handle = Handle {
            file: vec![0u64; words].into_boxed_slice(),
            name,
        };
        let keep = ffi::SQLITE_OPEN_READONLY | ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE;
        let flags = (flags & keep) | ffi::SQLITE_OPEN_MAIN_DB;
        let mut out = 0;
        // SAFETY: `root.0` is the registered default VFS; `name` was made by
        // `sqlite3_create_filename` and lives until `Drop`; the file buffer
        // has `szOsFile` bytes, zeroed (so `pMethods` is NULL unless the open
        // sets it), and is not moved while open (boxed).
        let rc = unsafe {
            let open = (*root.0).xOpen.ok_or(ffi::SQLITE_CANTOPEN)?;
            open(root.0, name, handle.ptr(), flags, &mut out)
        };
        let file = RawFile {
            inner: Mutex::new(handle),
        };
        // On failure `Drop` closes the file if the VFS set `pMethods`.
        rc_of(rc).map(|()| file)
    }

    /// Reads `buf.len()` bytes at `offset`. A read past the end fills the
    /// rest with zeros and answers `SQLITE_IOERR_SHORT_READ`.
    pub(super) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Rc> {
        let mut h = self.inner.lock();
        let f = h.ptr();
        let read = v1_method!(h, xRead).ok_or(ffi::SQLITE_IOERR_READ)?;
        let (amt, off) = args(buf.len(), offset)?;
        // SAFETY: `f` is open; `buf` is valid for `amt` bytes of writes.
        rc_of(unsafe { read(f, buf.as_mut_ptr().cast::<c_void>(), amt, off) })
    }

    /// Writes `buf` at `offset`.
    pub(super) fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), Rc> {
        let mut h = self.inner.lock();
        let f = h.ptr();
        let write = v1_method!(h, xWrite).ok_or(ffi::SQLITE_IOERR_WRITE)?;
        let (amt, off) = args(buf.len(), offset)?;
        // SAFETY: `f` is open; `buf` is valid for `amt` bytes of reads.
        rc_of(unsafe { write(f, buf.as_ptr().cast::<c_void>(), amt, off) })
    }

    /// Sets the file's size in bytes.
    pub(super) fn truncate(&self, size: u64) -> Result<(), Rc> {
        let mut h = self.inner.lock();
        let f = h.ptr();
        let truncate = v1_method!(h, xTruncate).ok_or(ffi::SQLITE_IOERR_TRUNCATE)?;
        let size = i64::try_from(size).map_err(|_| ffi::SQLITE_IOERR_TRUNCATE)?;
        // SAFETY: `f` is open.
        rc_of(unsafe { truncate(f, size) })
    }

    /// Makes completed writes durable (`flags`: `SQLITE_SYNC_*`).
    pub(super) fn sync(&self, flags: c_int) -> Result<(), Rc> {
        let mut h = self.inner.lock();
        let f = h.ptr();
        let sync = v1_method!(h, xSync).ok_or(ffi::SQLITE_IOERR_FSYNC)?;
        // SAFETY: `f` is open.
        rc_of(unsafe { sync(f, flags) })
    }

    /// The file's size in bytes.
    pub(super) fn size(&self) -> Result<u64, Rc> {
        let mut h = self.inner.lock();
        let f = h.ptr();
        let size = v1_method!(h, xFileSize).ok_or(ffi::SQLITE_IOERR_FSTAT)?;
        let mut bytes: ffi::sqlite3_int64 = 0;
        // SAFETY: `f` is open; `bytes` is a valid out-pointer.
        rc_of(unsafe { size(f, &mut bytes) })?;
        u64::try_from(bytes).map_err(|_| ffi::SQLITE_IOERR_FSTAT)
    }
}

/// `(iAmt, iOfst)` for a call of `len` bytes at `offset`.
fn args(len: usize, offset: u64) -> Result<(c_int, i64), Rc> {
    let amt = c_int::try_from(len).map_err(|_| ffi::SQLITE_IOERR)?;
    let off = i64::try_from(offset).map_err(|_| ffi::SQLITE_IOERR)?;
    Ok((amt, off))
}

impl Drop for Handle {
    fn drop(&mut self) {
        let f = self.ptr();
        // SAFETY: the buffer holds a `sqlite3_file` whose `pMethods` is NULL
        // (never opened) or the default VFS's table (opened, closed here once).
        unsafe {
            let methods = (*f).pMethods;
            if !methods.is_null() {
                if let Some(close) = (*methods).xClose {
                    close(f);
                }
            }
            // SAFETY: made by `sqlite3_create_filename`, freed once, after the
            // file that points at it is closed.
            ffi::sqlite3_free_filename(self.name);
        }
    }
}
