//! The `sqlite3_vfs` and the main database file's `sqlite3_io_methods`:
//! C callbacks that hand each call to [`Database`] (safe code) and every
//! other file (journals, WAL, shared memory, temporary files) to the
//! default VFS untouched.
//!
//! No panic crosses into SQLite: every callback runs its body under
//! `catch_unwind` and answers `SQLITE_IOERR` (or the call's own I/O error
//! code) when it panics.

#![allow(unsafe_code)]

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

/// What `pAppData` of the registered VFS points at.
pub(super) struct VfsState {
    root: RootVfs,
    shared: Arc<Shared>,
    dbs: Arc<Databases>,
}

/// The main database file: SQLite's `sqlite3_file` header, then the
/// default VFS's own file for locking, shared memory and file controls.
#[repr(C)]
struct MainFile {
    base: ffi::sqlite3_file,
    /// `Arc::into_raw` of the shared database; released by `xClose`.
    db: *const Database,
    /// The VFS's state (leaked at registration: lives for the process).
    state: *const VfsState,
    /// The default VFS's file, in the same allocation after this header.
    inner: *mut ffi::sqlite3_file,
}

/// Bytes before the inner file in a [`MainFile`] allocation (8-aligned).
const HEADER_BYTES: usize = std::mem::size_of::<MainFile>().div_ceil(8) * 8;

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

/// Closes the root's file `inner` if it is open.
///
/// # Safety
/// `inner` points at a root `sqlite3_file` that is closed at most once.
unsafe fn close_inner(inner: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the contract.
    unsafe {
        let m = (*inner).pMethods;
        if m.is_null() {
            return ffi::SQLITE_OK;
        }
        let rc = match (*m).xClose {
            Some(close) => close(inner),
            None => ffi::SQLITE_OK,
        };
        (*inner).pMethods = std::ptr::null();
        rc
    }
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

/// The default VFS that `vfs` (registered by [`register`]) wraps.
///
/// # Safety
/// `vfs` must be a VFS registered by [`register`].
unsafe fn root_of(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: per the contract.
    unsafe { state(vfs).root.0 }
}

// The forwarders of the default VFS's methods that have nothing to do with
// files. SQLite calls each with our `sqlite3_vfs`; the default VFS's method
// must be given its own (it may read its `pAppData` or other fields), so
// each looks the default VFS up and calls its method with it. None runs
// Rust code that can panic (no `guard`). Each is installed only when the
// default VFS has the method, so the `None` arms only keep a missing
// method from being called.

unsafe extern "C" fn x_dl_open(vfs: *mut ffi::sqlite3_vfs, name: *const c_char) -> *mut c_void {
    // SAFETY: SQLite calls this with our registered VFS; the default VFS's
    // method gets its own VFS and SQLite's arguments unchanged.
    unsafe {
        let root = root_of(vfs);
        match (*root).xDlOpen {
            Some(f) => f(root, name),
            None => std::ptr::null_mut(),
        }
    }
}

unsafe extern "C" fn x_dl_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) {
    // SAFETY: as for `x_dl_open`; with no method, `out` (valid for `n`
    // bytes when `n > 0`) gets an empty message.
    unsafe {
        let root = root_of(vfs);
        match (*root).xDlError {
            Some(f) => f(root, n, out),
            None if n > 0 && !out.is_null() => *out = 0,
            None => {}
        }
    }
}

/// What `xDlSym` answers: a symbol of a loaded library, as SQLite types it.
type DlSym = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char);

unsafe extern "C" fn x_dl_sym(
    vfs: *mut ffi::sqlite3_vfs,
    handle: *mut c_void,
    symbol: *const c_char,
) -> Option<DlSym> {
    // SAFETY: as for `x_dl_open`; `handle` came from the default VFS's
    // `xDlOpen` (through `x_dl_open`).
    unsafe {
        let root = root_of(vfs);
        match (*root).xDlSym {
            Some(f) => f(root, handle, symbol),
            None => None,
        }
    }
}

unsafe extern "C" fn x_dl_close(vfs: *mut ffi::sqlite3_vfs, handle: *mut c_void) {
    // SAFETY: as for `x_dl_sym`.
    unsafe {
        let root = root_of(vfs);
        if let Some(f) = (*root).xDlClose {
            f(root, handle);
        }
    }
}

unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    // SAFETY: as for `x_dl_open`; `out` is valid for `n` bytes. With no
    // method no byte is produced (SQLite zeroes the buffer beforehand).
    unsafe {
        let root = root_of(vfs);
        match (*root).xRandomness {
            Some(f) => f(root, n, out),
            None => 0,
        }
    }
}

unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: as for `x_dl_open`.
    unsafe {
        let root = root_of(vfs);
        match (*root).xSleep {
            Some(f) => f(root, micros),
            None => 0,
        }
    }
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: as for `x_dl_open`; `out` is a valid out-pointer.
    unsafe {
        let root = root_of(vfs);
        match (*root).xCurrentTime {
            Some(f) => f(root, out),
            None => ffi::SQLITE_ERROR,
        }
    }
}

unsafe extern "C" fn x_get_last_error(
    vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: as for `x_dl_open`; `out` is valid for `n` bytes.
    unsafe {
        let root = root_of(vfs);
        match (*root).xGetLastError {
            Some(f) => f(root, n, out),
            None => 0,
        }
    }
}

unsafe extern "C" fn x_current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    // SAFETY: as for `x_dl_open`; `out` is a valid out-pointer. The field
    // exists only in a version 2 or later struct, so it is read only then
    // (this forwarder is installed only then too).
    unsafe {
        let root = root_of(vfs);
        if (*root).iVersion < 2 {
            return ffi::SQLITE_ERROR;
        }
        match (*root).xCurrentTimeInt64 {
            Some(f) => f(root, out),
            None => ffi::SQLITE_ERROR,
        }
    }
}

/// The main database file's methods claiming `version` (1 to 3): the
/// version of the inner file's table, so that SQLite asks for shared
/// memory (version 2) or memory-mapped pages (version 3) only when the
/// inner file has them. The fields past a version are never read by
/// SQLite; they are filled all the same.
const fn main_methods(version: c_int) -> ffi::sqlite3_io_methods {
    ffi::sqlite3_io_methods {
        iVersion: version,
        ..MAIN_METHODS
    }
}

/// The main file's methods over an inner file of version 1 (no shared
/// memory, no fetch).
static MAIN_METHODS_V1: ffi::sqlite3_io_methods = main_methods(1);
/// The main file's methods over an inner file of version 2 (no fetch).
static MAIN_METHODS_V2: ffi::sqlite3_io_methods = main_methods(2);
/// The main file's methods over an inner file of version 3 or later.
static MAIN_METHODS_V3: ffi::sqlite3_io_methods = main_methods(3);

/// The main file's methods matching an inner file whose table is of
/// `version`.
fn main_methods_for(version: c_int) -> &'static ffi::sqlite3_io_methods {
    match version {
        ..=1 => &MAIN_METHODS_V1,
        2 => &MAIN_METHODS_V2,
        _ => &MAIN_METHODS_V3,
    }
}

/// Every method of the main database file (a version-3 table).
const MAIN_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(m_close),
    xRead: Some(m_read),
    xWrite: Some(m_write),
    xTruncate: Some(m_truncate),
    xSync: Some(m_sync),
    xFileSize: Some(m_file_size),
    xLock: Some(m_lock),
    xUnlock: Some(m_unlock),
    xCheckReservedLock: Some(m_check_reserved_lock),
    xFileControl: Some(m_file_control),
    xSectorSize: Some(m_sector_size),
    xDeviceCharacteristics: Some(m_device_characteristics),
    xShmMap: Some(m_shm_map),
    xShmLock: Some(m_shm_lock),
    xShmBarrier: Some(m_shm_barrier),
    xShmUnmap: Some(m_shm_unmap),
    xFetch: Some(m_fetch),
    xUnfetch: Some(m_unfetch),
};

/// The database and the inner file of an open main file.
///
/// # Safety
/// `file` must be a [`MainFile`] opened by `x_open` and not yet closed.
unsafe fn parts<'a>(file: *mut ffi::sqlite3_file) -> (&'a Database, *mut ffi::sqlite3_file) {
    // SAFETY: per the contract, `db` holds a live `Arc` and `inner` is open.
    unsafe {
        let m = file.cast::<MainFile>();
        (&*(*m).db, (*m).inner)
    }
}

/// The root's method table of an open inner file.
///
/// # Safety
/// `inner` must be open.
unsafe fn inner_methods(inner: *mut ffi::sqlite3_file) -> *const ffi::sqlite3_io_methods {
    // SAFETY: `inner` is open, so its `pMethods` is set (and points at a
    // static table, of the length its `iVersion` says). Only a pointer is
    // made here: a reference would claim a whole version-3 table.
    unsafe { (*inner).pMethods }
}

/// The version of the methods table `methods` (its first field, present in
/// every version).
///
/// # Safety
/// `methods` must point at a methods table.
unsafe fn methods_version(methods: *const ffi::sqlite3_io_methods) -> c_int {
    // SAFETY: `iVersion` is the first field of every version's table.
    unsafe { std::ptr::addr_of!((*methods).iVersion).read() }
}

unsafe extern "C" fn m_close(file: *mut ffi::sqlite3_file) -> c_int {
    guard(ffi::SQLITE_IOERR_CLOSE, || {
        // SAFETY: SQLite closes each opened main file once.
        unsafe {
            let m = file.cast::<MainFile>();
            let db = (*m).db;
            // A panic in the flush must not skip the close and the release
            // below: the inner file's descriptor and the `Database` would
            // stay held for the life of the process.
            let flushed = guard(ffi::SQLITE_IOERR_CLOSE, || match (*db).flush() {
                Ok(()) => ffi::SQLITE_OK,
                Err(f) => f.rc(),
            });
            let rc = close_inner((*m).inner);
            (*m).db = std::ptr::null();
            (*m).base.pMethods = std::ptr::null();
            (*(*m).state).release(Arc::from_raw(db));
            if flushed == ffi::SQLITE_OK {
                rc
            } else {
                flushed
            }
        }
    })
}

unsafe extern "C" fn m_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    off: i64,
) -> c_int {
    guard(ffi::SQLITE_IOERR_READ, || {
        let (Ok(len), Ok(off)) = (usize::try_from(amt), u64::try_from(off)) else {
            return ffi::SQLITE_IOERR_READ;
        };
        // SAFETY: an open main file; SQLite's buffer is valid for `amt` bytes
        // of writes and not used elsewhere during the call.
        let (db, buf) = unsafe {
            (
                parts(file).0,
                std::slice::from_raw_parts_mut(buf.cast::<u8>(), len),
            )
        };
        match db.read(buf, off) {
            Ok(()) => ffi::SQLITE_OK,
            Err(f) => f.rc(),
        }
    })
}

unsafe extern "C" fn m_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    off: i64,
) -> c_int {
    guard(ffi::SQLITE_IOERR_WRITE, || {
        let (Ok(len), Ok(off)) = (usize::try_from(amt), u64::try_from(off)) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        // SAFETY: an open main file; SQLite's buffer is valid for `amt` bytes.
        let (db, buf) = unsafe {
            (
                parts(file).0,
                std::slice::from_raw_parts(buf.cast::<u8>(), len),
            )
        };
        match db.write(buf, off) {
            Ok(()) => ffi::SQLITE_OK,
            Err(f) => f.rc(),
        }
    })
}

unsafe extern "C" fn m_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    guard(ffi::SQLITE_IOERR_TRUNCATE, || {
        let Ok(size) = u64::try_from(size) else {
            return ffi::SQLITE_IOERR_TRUNCATE;
        };
        // SAFETY: an open main file.
        let db = unsafe { parts(file).0 };
        match db.truncate(size) {
            Ok(()) => ffi::SQLITE_OK,
            Err(f) => f.rc(),
        }
    })
}

unsafe extern "C" fn m_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_FSYNC, || {
        // SAFETY: an open main file.
        let db = unsafe { parts(file).0 };
        match db.sync(flags) {
            Ok(()) => ffi::SQLITE_OK,
            Err(f) => f.rc(),
        }
    })
}

unsafe extern "C" fn m_file_size(file: *mut ffi::sqlite3_file, out: *mut i64) -> c_int {
    guard(ffi::SQLITE_IOERR_FSTAT, || {
        // SAFETY: an open main file.
        let db = unsafe { parts(file).0 };
        match db.file_size().map(i64::try_from) {
            Ok(Ok(size)) => {
                // SAFETY: SQLite passes a valid out-pointer.
                unsafe { *out = size };
                ffi::SQLITE_OK
            }
            Ok(Err(_)) => ffi::SQLITE_IOERR_FSTAT,
            Err(f) => f.rc(),
        }
    })
}

/// Forwards a call to the inner file's method `$m`, or answers `$none`.
/// With `since $v`, the method is a field of version `$v` of the methods
/// table, read only when the inner file's table is of that version or
/// later (an older table ends before it).
macro_rules! forward {
    ($file:expr, $m:ident, $none:expr $(, $arg:expr)*) => {
        forward!(since 1, $file, $m, $none $(, $arg)*)
    };
    (since $v:expr, $file:expr, $m:ident, $none:expr $(, $arg:expr)*) => {{
        // SAFETY: an open main file; the inner file is open, its table has
        // the field (checked against its version), and its method takes
        // the same arguments SQLite gave us.
        unsafe {
            let inner = parts($file).1;
            let methods = inner_methods(inner);
            // The version first: a field past the table's end is never read.
            let method = if methods_version(methods) >= $v {
                std::ptr::addr_of!((*methods).$m).read()
            } else {
                None
            };
            match method {
                Some(f) => f(inner $(, $arg)*),
                None => $none,
            }
        }
    }};
}

unsafe extern "C" fn m_lock(file: *mut ffi::sqlite3_file, lock: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_LOCK, || {
        forward!(file, xLock, ffi::SQLITE_IOERR_LOCK, lock)
    })
}

unsafe extern "C" fn m_unlock(file: *mut ffi::sqlite3_file, lock: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_UNLOCK, || {
        forward!(file, xUnlock, ffi::SQLITE_IOERR_UNLOCK, lock)
    })
}

unsafe extern "C" fn m_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, || {
        forward!(
            file,
            xCheckReservedLock,
            ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
            out
        )
    })
}

unsafe extern "C" fn m_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    guard(ffi::SQLITE_IOERR, || match op {
        // Memory-mapped reads would bypass verification, and size hints or
        // chunked growth would add pages nobody wrote: refused (SQLite then
        // reads with xRead and grows the file page by page).
        ffi::SQLITE_FCNTL_MMAP_SIZE
        | ffi::SQLITE_FCNTL_SIZE_HINT
        | ffi::SQLITE_FCNTL_CHUNK_SIZE => ffi::SQLITE_NOTFOUND,
        // Before every sync of the database file (sent also when
        // `synchronous = OFF` omits the sync), and when a checkpoint has
        // copied its pages: the pages SQLite wrote must be in the file.
        ffi::SQLITE_FCNTL_SYNC | ffi::SQLITE_FCNTL_CKPT_DONE => {
            // SAFETY: an open main file.
            if let Err(f) = unsafe { parts(file).0 }.flush() {
                return f.rc();
            }
            forward!(file, xFileControl, ffi::SQLITE_NOTFOUND, op, arg)
        }
        _ => forward!(file, xFileControl, ffi::SQLITE_NOTFOUND, op, arg),
    })
}

unsafe extern "C" fn m_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    guard(4096, || forward!(file, xSectorSize, 4096))
}

unsafe extern "C" fn m_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // Batch-atomic writes would go to the inner file's descriptor, not
    // through the detector: not offered.
    guard(0, || {
        forward!(file, xDeviceCharacteristics, 0) & !ffi::SQLITE_IOCAP_BATCH_ATOMIC
    })
}

unsafe extern "C" fn m_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    guard(ffi::SQLITE_IOERR_SHMMAP, || {
        forward!(
            since 2,
            file,
            xShmMap,
            ffi::SQLITE_IOERR_SHMMAP,
            region,
            size,
            extend,
            out
        )
    })
}

unsafe extern "C" fn m_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    guard(ffi::SQLITE_IOERR_SHMLOCK, || {
        forward!(
            since 2,
            file,
            xShmLock,
            ffi::SQLITE_IOERR_SHMLOCK,
            offset,
            n,
            flags
        )
    })
}

unsafe extern "C" fn m_shm_barrier(file: *mut ffi::sqlite3_file) {
    guard(ffi::SQLITE_OK, || {
        forward!(since 2, file, xShmBarrier, ());
        ffi::SQLITE_OK
    });
}

unsafe extern "C" fn m_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    guard(
        ffi::SQLITE_IOERR_SHMMAP,
        || forward!(since 2, file, xShmUnmap, ffi::SQLITE_OK, delete),
    )
}

unsafe extern "C" fn m_fetch(
    _file: *mut ffi::sqlite3_file,
    _off: i64,
    _amt: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // No page is ever handed out unverified: SQLite falls back to xRead.
    // SAFETY: SQLite passes a valid out-pointer.
    unsafe { *out = std::ptr::null_mut() };
    ffi::SQLITE_OK
}

unsafe extern "C" fn m_unfetch(
    _file: *mut ffi::sqlite3_file,
    _off: i64,
    _page: *mut c_void,
) -> c_int {
    // Nothing was fetched, so nothing is mapped.
    ffi::SQLITE_OK
}

#[cfg(test)]
#[path = "vfs_tests.rs"]
mod tests;
