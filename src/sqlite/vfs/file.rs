//! The main database file's `sqlite3_io_methods`: reads, writes,
//! truncation, syncs and the file's size go to its [`Database`]; locks,
//! file controls, shared memory and the rest are forwarded to the default
//! VFS's own file, kept after our header in the same allocation
//! ([`MainFile`]).
//!
//! # Contract
//! - The methods table claims the inner file's version (1 to 3), so that
//!   SQLite asks for shared memory (version 2) or memory-mapped pages
//!   (version 3) only when the inner file has them, and a forwarder reads
//!   a method of the inner table only when the table's version has it.
//! - No page is handed out unverified: memory-mapped reads, size hints,
//!   chunked growth and batch-atomic writes are not offered (SQLite then
//!   reads with `xRead` and grows the file page by page).
//! - Before every sync of the database file, and when a checkpoint has
//!   copied its pages, the pages SQLite wrote are flushed into the file.
//! - `xClose` closes the inner file and releases the database even when
//!   the flush fails or panics.

#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use rusqlite::ffi;

use super::{guard, VfsState};
use crate::sqlite::database::Database;

/// The main database file: SQLite's `sqlite3_file` header, then the
/// default VFS's own file for locking, shared memory and file controls.
#[repr(C)]
pub(super) struct MainFile {
    pub(super) base: ffi::sqlite3_file,
    /// `Arc::into_raw` of the shared database; released by `xClose`.
    pub(super) db: *const Database,
    /// The VFS's state (leaked at registration: lives for the process).
    pub(super) state: *const VfsState,
    /// The default VFS's file, in the same allocation after this header.
    pub(super) inner: *mut ffi::sqlite3_file,
}

/// Bytes before the inner file in a [`MainFile`] allocation (8-aligned).
pub(super) const HEADER_BYTES: usize = std::mem::size_of::<MainFile>().div_ceil(8) * 8;

/// Closes the root's file `inner` if it is open.
///
/// # Safety
/// `inner` points at a root `sqlite3_file` that is closed at most once.
pub(super) unsafe fn close_inner(inner: *mut ffi::sqlite3_file) -> c_int {
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
pub(super) fn main_methods_for(version: c_int) -> &'static ffi::sqlite3_io_methods {
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
pub(super) unsafe fn inner_methods(
    inner: *mut ffi::sqlite3_file,
) -> *const ffi::sqlite3_io_methods {
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
pub(super) unsafe fn methods_version(methods: *const ffi::sqlite3_io_methods) -> c_int {
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

pub(super) unsafe extern "C" fn m_shm_map(
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

pub(super) unsafe extern "C" fn m_shm_lock(
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

pub(super) unsafe extern "C" fn m_shm_barrier(file: *mut ffi::sqlite3_file) {
    guard(ffi::SQLITE_OK, || {
        forward!(since 2, file, xShmBarrier, ());
        ffi::SQLITE_OK
    });
}

pub(super) unsafe extern "C" fn m_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    guard(
        ffi::SQLITE_IOERR_SHMMAP,
        || forward!(since 2, file, xShmUnmap, ffi::SQLITE_OK, delete),
    )
}

pub(super) unsafe extern "C" fn m_fetch(
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
