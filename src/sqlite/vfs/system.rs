//! The forwarders of the default VFS's methods that have nothing to do
//! with files (dynamic loading, randomness, sleep, the clock, the last
//! error): SQLite calls each with our `sqlite3_vfs`, and the default VFS's
//! method must be given its own (it may read its `pAppData` or other
//! fields).
//!
//! # Contract
//! - Each looks the default VFS up and calls its method with the default
//!   VFS's own pointer and SQLite's arguments unchanged, and answers what
//!   it answers.
//! - Each is installed only when the default VFS has the method
//!   (`xCurrentTimeInt64` only over a version-2 or later VFS, whose struct
//!   has the field), so the `None` arms only keep a missing method from
//!   being called.
//! - None runs Rust code that can panic (no `guard`).

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void};

use rusqlite::ffi;

use super::state;

/// The default VFS that `vfs` (registered by
/// [`register`](super::register)) wraps.
///
/// # Safety
/// `vfs` must be a VFS registered by [`register`](super::register).
unsafe fn root_of(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: per the contract.
    unsafe { state(vfs).root.0 }
}

pub(super) unsafe extern "C" fn x_dl_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
) -> *mut c_void {
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

pub(super) unsafe extern "C" fn x_dl_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) {
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
pub(super) type DlSym = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char);

pub(super) unsafe extern "C" fn x_dl_sym(
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

pub(super) unsafe extern "C" fn x_dl_close(vfs: *mut ffi::sqlite3_vfs, handle: *mut c_void) {
    // SAFETY: as for `x_dl_sym`.
    unsafe {
        let root = root_of(vfs);
        if let Some(f) = (*root).xDlClose {
            f(root, handle);
        }
    }
}

pub(super) unsafe extern "C" fn x_randomness(
    vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
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

pub(super) unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: as for `x_dl_open`.
    unsafe {
        let root = root_of(vfs);
        match (*root).xSleep {
            Some(f) => f(root, micros),
            None => 0,
        }
    }
}

pub(super) unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: as for `x_dl_open`; `out` is a valid out-pointer.
    unsafe {
        let root = root_of(vfs);
        match (*root).xCurrentTime {
            Some(f) => f(root, out),
            None => ffi::SQLITE_ERROR,
        }
    }
}

pub(super) unsafe extern "C" fn x_get_last_error(
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

pub(super) unsafe extern "C" fn x_current_time_int64(
    vfs: *mut ffi::sqlite3_vfs,
    out: *mut i64,
) -> c_int {
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
