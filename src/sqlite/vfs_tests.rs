//! The forwarders of the wrapped VFS's non-file methods: over a fake
//! wrapped VFS whose methods record the `sqlite3_vfs` they are called with,
//! each method of the registered VFS, called as SQLite calls it (with the
//! registered VFS's pointer), must reach the wrapped VFS's method with the
//! wrapped VFS's own pointer and return its answer; a method the wrapped
//! VFS lacks is not offered, nor `xCurrentTimeInt64` over a version-1 VFS.
//! And a main file's close whose flush panics (injected) still closes the
//! file and releases its database: the next open opens it afresh.

use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};

use super::*;
use crate::sqlite::SqliteConfig;

/// The VFS the last fake method was called with.
static CALLED_WITH: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(null_mut());

fn note(vfs: *mut ffi::sqlite3_vfs) {
    CALLED_WITH.store(vfs, Ordering::SeqCst);
}

/// What the fake `xDlOpen` answers.
const HANDLE: usize = 0x10;

unsafe extern "C" fn f_dl_open(vfs: *mut ffi::sqlite3_vfs, _: *const c_char) -> *mut c_void {
    note(vfs);
    HANDLE as *mut c_void
}

unsafe extern "C" fn f_dl_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) {
    note(vfs);
    let msg = c"fake";
    // SAFETY: the caller's buffer has `n` bytes, at least the message's.
    unsafe {
        assert!(n as usize > msg.to_bytes_with_nul().len());
        std::ptr::copy_nonoverlapping(msg.as_ptr(), out, msg.to_bytes_with_nul().len());
    }
}

unsafe extern "C" fn f_symbol(_: *mut ffi::sqlite3_vfs, _: *mut c_void, _: *const c_char) {}

unsafe extern "C" fn f_dl_sym(
    vfs: *mut ffi::sqlite3_vfs,
    handle: *mut c_void,
    _: *const c_char,
) -> Option<DlSym> {
    note(vfs);
    (handle as usize == HANDLE).then_some(f_symbol as DlSym)
}

unsafe extern "C" fn f_dl_close(vfs: *mut ffi::sqlite3_vfs, handle: *mut c_void) {
    assert_eq!(handle as usize, HANDLE);
    note(vfs);
}

unsafe extern "C" fn f_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    note(vfs);
    // SAFETY: the caller's buffer has `n` bytes.
    unsafe { std::ptr::write_bytes(out, 0xAB, n as usize) };
    n
}

unsafe extern "C" fn f_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    note(vfs);
    micros + 1
}

unsafe extern "C" fn f_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    note(vfs);
    // SAFETY: a valid out-pointer.
    unsafe { *out = 2_460_000.5 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn f_get_last_error(
    vfs: *mut ffi::sqlite3_vfs,
    _: c_int,
    _: *mut c_char,
) -> c_int {
    note(vfs);
    7
}

unsafe extern "C" fn f_current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    note(vfs);
    // SAFETY: a valid out-pointer.
    unsafe { *out = 212_000_000_000_000 };
    ffi::SQLITE_OK
}

/// A fake VFS with every non-file method, leaked (it must live for the
/// process, as a wrapped VFS does).
fn fake_root(version: c_int) -> &'static mut ffi::sqlite3_vfs {
    Box::leak(Box::new(ffi::sqlite3_vfs {
        iVersion: version,
        szOsFile: 8,
        mxPathname: 512,
        pNext: null_mut(),
        zName: c"selfheal-fake-root".as_ptr(),
        pAppData: null_mut(),
        xOpen: None,
        xDelete: None,
        xAccess: None,
        xFullPathname: None,
        xDlOpen: Some(f_dl_open),
        xDlError: Some(f_dl_error),
        xDlSym: Some(f_dl_sym),
        xDlClose: Some(f_dl_close),
        xRandomness: Some(f_randomness),
        xSleep: Some(f_sleep),
        xCurrentTime: Some(f_current_time),
        xGetLastError: Some(f_get_last_error),
        xCurrentTimeInt64: Some(f_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    }))
}

/// Registers a VFS named `name` over `root`; returns it as SQLite has it.
fn register_fake(name: &CStr, root: &'static mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    register_over(
        name.to_owned(),
        RootVfs(root),
        Arc::new(Shared::new(SqliteConfig::new())),
        Arc::new(Databases::default()),
    )
    .unwrap();
    // SAFETY: a NUL-terminated name.
    let ours = unsafe { ffi::sqlite3_vfs_find(name.as_ptr()) };
    assert!(!ours.is_null());
    ours
}

/// The wrapped VFS the last forwarded call reached.
fn reached() -> *mut ffi::sqlite3_vfs {
    CALLED_WITH.swap(null_mut(), Ordering::SeqCst)
}

#[test]
fn each_method_reaches_the_wrapped_vfs_with_its_own_pointer() {
    let root: *mut ffi::sqlite3_vfs = fake_root(3);
    // SAFETY: `root` is leaked, so it lives for the process.
    let ours = register_fake(c"selfheal-forward-v3", unsafe { &mut *root });
    assert_ne!(ours, root);
    // SAFETY: `ours` is registered for the process; each method is called
    // as SQLite calls it, with valid buffers of the sizes given.
    unsafe {
        let v = &*ours;
        assert_eq!(v.iVersion, 3);
        let handle = (v.xDlOpen.unwrap())(ours, c"libnothing.so".as_ptr());
        assert_eq!((handle as usize, reached()), (HANDLE, root), "xDlOpen");
        let mut msg = [0 as c_char; 16];
        (v.xDlError.unwrap())(ours, 16, msg.as_mut_ptr());
        assert_eq!(reached(), root, "xDlError");
        assert_eq!(CStr::from_ptr(msg.as_ptr()), c"fake");
        let sym = (v.xDlSym.unwrap())(ours, handle, c"symbol".as_ptr());
        assert_eq!((sym.is_some(), reached()), (true, root), "xDlSym");
        (v.xDlClose.unwrap())(ours, handle);
        assert_eq!(reached(), root, "xDlClose");
        let mut bytes = [0 as c_char; 8];
        let n = (v.xRandomness.unwrap())(ours, 8, bytes.as_mut_ptr());
        assert_eq!((n, reached()), (8, root), "xRandomness");
        assert!(bytes.iter().all(|&b| b as u8 == 0xAB));
        assert_eq!((v.xSleep.unwrap())(ours, 41), 42);
        assert_eq!(reached(), root, "xSleep");
        let mut now = 0.0;
        assert_eq!((v.xCurrentTime.unwrap())(ours, &mut now), ffi::SQLITE_OK);
        assert_eq!((now, reached()), (2_460_000.5, root), "xCurrentTime");
        assert_eq!((v.xGetLastError.unwrap())(ours, 0, null_mut()), 7);
        assert_eq!(reached(), root, "xGetLastError");
        let mut now = 0i64;
        assert_eq!(
            (v.xCurrentTimeInt64.unwrap())(ours, &mut now),
            ffi::SQLITE_OK
        );
        assert_eq!(
            (now, reached()),
            (212_000_000_000_000, root),
            "xCurrentTimeInt64"
        );
    }
}

#[test]
fn missing_methods_are_not_offered() {
    let v1 = register_fake(c"selfheal-forward-v1", fake_root(1));
    let bare = fake_root(3);
    bare.xDlOpen = None;
    bare.xSleep = None;
    bare.xCurrentTimeInt64 = None;
    let ours = register_fake(c"selfheal-forward-bare", bare);
    // SAFETY: both are registered for the process; only their fields are
    // read.
    unsafe {
        assert_eq!((*v1).iVersion, 1);
        assert!(
            (*v1).xCurrentTimeInt64.is_none(),
            "read past a version-1 VFS"
        );
        assert!((*v1).xCurrentTime.is_some());
        assert!((*ours).xDlOpen.is_none());
        assert!((*ours).xSleep.is_none());
        assert!((*ours).xCurrentTimeInt64.is_none());
        assert!((*ours).xDlSym.is_some());
    }
}

#[test]
fn a_panic_in_the_close_flush_still_releases_the_database() {
    use rusqlite::{Connection, OpenFlags};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("close-panic.db");
    let vfs = crate::sqlite::register("selfheal-close-panic", SqliteConfig::new()).unwrap();
    let open =
        || Connection::open_with_flags_and_vfs(&db, OpenFlags::default(), vfs.name()).unwrap();
    let c = open();
    c.execute_batch("CREATE TABLE t(v INTEGER); INSERT INTO t VALUES (1);")
        .unwrap();
    *crate::sqlite::database::tests::PANIC_IN_FLUSH
        .lock()
        .unwrap() = Some("close-panic.db");
    // rusqlite's close reports SQLite's answer; the close itself is done.
    let _ = c.close();
    assert!(
        crate::sqlite::database::tests::PANIC_IN_FLUSH
            .lock()
            .unwrap()
            .is_none(),
        "the close did not flush"
    );
    assert_eq!(vfs.stats().files_opened, 1);
    let c = open();
    let v: i64 = c.query_row("SELECT v FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 1);
    assert_eq!(
        vfs.stats().files_opened,
        2,
        "the database of the panicked close was never released"
    );
}
