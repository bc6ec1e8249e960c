//! The `sqlite3_vfs` and the main database file's `sqlite3_io_methods`:
//! C callbacks that hand each call to [`Database`] (safe code) and every
//! other file (journals, WAL, shared memory, temporary files) to the
//! default VFS untouched. This file registers the VFS and opens its files;
//! `vfs/file.rs` holds the main database file's methods, and
//! `vfs/system.rs` the forwarders of the default VFS's methods that have
//! nothing to do with files.
//!
//! # Contract
//! - No panic crosses into SQLite: every callback runs its body under
//!   `catch_unwind` ([`guard`]) and answers `SQLITE_IOERR` (or the call's
//!   own I/O error code) when it panics.
//! - A name is registered with SQLite once, over a VFS that lives for the
//!   process, and the registered VFS is never freed; a name SQLite already
//!   knows is refused with a typed error.
//! - `xOpen` gives a main database file (opened with
//!   `SQLITE_OPEN_MAIN_DB` and a name) the [`Database`] its path is
//!   shared under, opened if no connection has it; every other file is the
//!   default VFS's, with the default VFS's methods. A database that cannot
//!   be opened answers `SQLITE_CANTOPEN`, with the error logged.

#![allow(unsafe_code)]

mod file;
mod system;

use std::ffi::{c_char, c_int, c_void, CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::ffi;

use super::config::Shared;
use super::database::{Database, Databases};
use super::raw::RootVfs;
use crate::error::{Error, Result};
use file::{close_inner, inner_methods, main_methods_for, methods_version, MainFile, HEADER_BYTES};
use system::{
    x_current_time, x_current_time_int64, x_dl_close, x_dl_error, x_dl_open, x_dl_sym,
    x_get_last_error, x_randomness, x_sleep,
};

/// What `pAppData` of the registered VFS points at.
pub(super) struct VfsState {
    root: RootVfs,
    shared: Arc<Shared>,
    dbs: Arc<Databases>,
}

/// Runs `f`, answering `on_panic` if it panics.
fn guard(on_panic: c_int, f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        tracing::error!(
            panic = %crate::worker::panic_message(payload.as_ref()),
            "a selfheal VFS callback panicked; SQLite is told of an I/O error"
        );
        on_panic
    })
}

/// Registers a VFS named `name` wrapping the default VFS; returns its state.
pub(super) fn register(name: &str, shared: Arc<Shared>, dbs: Arc<Databases>) -> Result<()> {
    let c_name = CString::new(name)
        .map_err(|_| Error::config("name", format!("{name:?} contains a NUL byte")))?;
    if name.is_empty() {
        return Err(Error::config(
            "name",
            "is empty; name the VFS, e.g. \"selfheal\"",
        ));
    }
    // SAFETY: `sqlite3_vfs_find` initialises SQLite if needed and returns a
    // registered VFS or NULL.
    let root = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
    if root.is_null() {
        return Err(Error::config("name", "SQLite has no default VFS to wrap"));
    }
    register_over(c_name, RootVfs(root), shared, dbs)
}

/// Registers a VFS named `c_name` wrapping `root`, a VFS that lives for the
/// process (the default VFS; a test's own).
fn register_over(
    c_name: CString,
    root: RootVfs,
    shared: Arc<Shared>,
    dbs: Arc<Databases>,
) -> Result<()> {
    let name = c_name.to_string_lossy().into_owned();
    // SAFETY: `sqlite3_vfs_find` initialises SQLite if needed and returns a
    // registered VFS or NULL; the name is NUL-terminated.
    let existing = unsafe { ffi::sqlite3_vfs_find(c_name.as_ptr()) };
    if !existing.is_null() {
        return Err(Error::config(
            "name",
            format!("a SQLite VFS named {name:?} is registered already; choose another name"),
        ));
    }
    let state = Box::new(VfsState { root, shared, dbs });
    // SAFETY: reading the immutable fields of a VFS that lives for the
    // process.
    let base = unsafe { &*root.0 };
    let vfs = Box::new(ffi::sqlite3_vfs {
        iVersion: base.iVersion.min(3),
        szOsFile: c_int::try_from(HEADER_BYTES + root.file_size())
            .map_err(|_| Error::config("name", "the default VFS's file is too large"))?,
        mxPathname: base.mxPathname,
        pNext: std::ptr::null_mut(),
        // Both leaked below: a registered VFS lives until the process ends.
        zName: c_name.into_raw(),
        pAppData: Box::into_raw(state).cast::<c_void>(),
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        // The rest are the default VFS's, each called through a forwarder
        // that hands it the default VFS's own pointer (SQLite passes ours),
        // and offered only when the default VFS has it.
        xDlOpen: base.xDlOpen.map(|_| x_dl_open as _),
        xDlError: base.xDlError.map(|_| x_dl_error as _),
        xDlSym: base.xDlSym.map(|_| x_dl_sym as _),
        xDlClose: base.xDlClose.map(|_| x_dl_close as _),
        xRandomness: base.xRandomness.map(|_| x_randomness as _),
        xSleep: base.xSleep.map(|_| x_sleep as _),
        xCurrentTime: base.xCurrentTime.map(|_| x_current_time as _),
        xGetLastError: base.xGetLastError.map(|_| x_get_last_error as _),
        // A version-1 struct ends before this field: it is read only from
        // a version 2 or later one.
        xCurrentTimeInt64: if base.iVersion >= 2 {
            base.xCurrentTimeInt64.map(|_| x_current_time_int64 as _)
        } else {
            None
        },
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    });
    let vfs = Box::into_raw(vfs);
    // SAFETY: `vfs` is a fully initialised struct that is never freed (SQLite
    // keeps the pointer for the life of the registration, which is the
    // process's); every method in it is ours and reaches the default VFS
    // only with the default VFS's own pointer. The caller serialises
    // registrations (see `super::register`).
    let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if rc != ffi::SQLITE_OK {
        return Err(Error::config(
            "name",
            format!("sqlite3_vfs_register answered result code {rc}"),
        ));
    }
    Ok(())
}

/// The state behind `vfs`.
///
/// # Safety
/// `vfs` must be a VFS registered by [`register`].
unsafe fn state<'a>(vfs: *mut ffi::sqlite3_vfs) -> &'a VfsState {
    // SAFETY: per the contract, `pAppData` is a leaked `Box<VfsState>`.
    unsafe { &*(*vfs).pAppData.cast::<VfsState>() }
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    guard(ffi::SQLITE_CANTOPEN, || {
        // SAFETY: SQLite calls this with our registered VFS.
        let st = unsafe { state(vfs) };
        let root = st.root.0;
        // SAFETY: the root VFS's xOpen is always set.
        let Some(open) = (unsafe { (*root).xOpen }) else {
            return ffi::SQLITE_CANTOPEN;
        };
        if flags & ffi::SQLITE_OPEN_MAIN_DB == 0 || name.is_null() {
            // SAFETY: `file` has `szOsFile` bytes, more than the root needs;
            // the root's own methods are installed and it owns the file.
            return unsafe { open(root, name, file, flags, out_flags) };
        }
        let main = file.cast::<MainFile>();
        // SAFETY: `file` has room for the header and the inner file.
        let inner = unsafe { file.cast::<u8>().add(HEADER_BYTES) }.cast::<ffi::sqlite3_file>();
        // SAFETY: writing our own header; SQLite calls xClose only if
        // `pMethods` is set, which happens below only on success.
        unsafe {
            (*main).base.pMethods = std::ptr::null();
            (*inner).pMethods = std::ptr::null();
        }
        // SAFETY: `inner` has `szOsFile` bytes of the root; `name` is valid
        // until the file is closed.
        let rc = unsafe { open(root, name, inner, flags, out_flags) };
        if rc != ffi::SQLITE_OK {
            // SAFETY: the root may have set `pMethods` although it failed.
            unsafe { close_inner(inner) };
            return rc;
        }
        // SAFETY: `name` is a NUL-terminated path. Its bytes are kept as
        // they are (never a lossy conversion), so the file the library
        // opens, keys and names its sidecar after is the file SQLite opened.
        let path = PathBuf::from(OsStr::from_bytes(
            unsafe { CStr::from_ptr(name) }.to_bytes(),
        ));
        match st.database(&path, flags) {
            Ok(db) => {
                // SAFETY: our header; the methods table is static.
                unsafe {
                    (*main).db = Arc::into_raw(db);
                    (*main).state = st;
                    (*main).inner = inner;
                    (*main).base.pMethods = main_methods_for(methods_version(inner_methods(inner)));
                }
                ffi::SQLITE_OK
            }
            Err(e) => {
                tracing::error!(db = %path.display(), error = %e, "selfheal VFS cannot open the database");
                // SAFETY: opened above, closed once.
                unsafe { close_inner(inner) };
                ffi::SQLITE_CANTOPEN
            }
        }
    })
}

impl VfsState {
    /// The shared database for `path`, opened if no connection has it.
    fn database(&self, path: &std::path::Path, flags: c_int) -> Result<Arc<Database>> {
        let (db, opened) = self.dbs.get_or_open(path, || {
            Database::open(self.root, path, flags, self.shared.clone())
        })?;
        if opened {
            self.shared.note_open();
        }
        Ok(db)
    }

    /// Drops a connection's hold on its database; the last one closes the
    /// database (writes its last pages, stops its recovery manager) outside
    /// the map's lock, while other files open freely and an open of the
    /// same file waits for the close (see `registry`).
    fn release(&self, db: Arc<Database>) {
        let path = db.path().to_path_buf();
        self.dbs.release(&path, db);
    }
}

unsafe extern "C" fn x_delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    guard(ffi::SQLITE_IOERR_DELETE, || {
        // SAFETY: our registered VFS; the root's method with its own VFS.
        unsafe {
            let root = state(vfs).root.0;
            match (*root).xDelete {
                Some(f) => f(root, name, sync_dir),
                None => ffi::SQLITE_IOERR_DELETE,
            }
        }
    })
}

unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    guard(ffi::SQLITE_IOERR_ACCESS, || {
        // SAFETY: our registered VFS; the root's method with its own VFS.
        unsafe {
            let root = state(vfs).root.0;
            match (*root).xAccess {
                Some(f) => f(root, name, flags, out),
                None => ffi::SQLITE_IOERR_ACCESS,
            }
        }
    })
}

unsafe extern "C" fn x_full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    out: *mut c_char,
) -> c_int {
    guard(ffi::SQLITE_CANTOPEN, || {
        // SAFETY: our registered VFS; the root's method with its own VFS.
        unsafe {
            let root = state(vfs).root.0;
            match (*root).xFullPathname {
                Some(f) => f(root, name, n_out, out),
                None => ffi::SQLITE_CANTOPEN,
            }
        }
    })
}

#[cfg(test)]
#[path = "vfs_tests.rs"]
mod tests;
