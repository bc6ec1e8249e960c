//! The forwarders of the wrapped VFS's non-file methods: over a fake
//! wrapped VFS whose methods record the `sqlite3_vfs` they are called with,
//! each method of the registered VFS, called as SQLite calls it (with the
//! registered VFS's pointer), must reach the wrapped VFS's method with the
//! wrapped VFS's own pointer and return its answer; a method the wrapped
//! VFS lacks is not offered, nor `xCurrentTimeInt64` over a version-1 VFS.
//! And a main file's close whose flush panics (injected) still closes the
//! file and releases its database: the next open opens it afresh. Over a
//! wrapped VFS whose files have a version-1 methods table (its version-2
//! and -3 fields traps), the main file claims version 1 too and its
//! shared-memory methods never read past the inner table: SQLite runs
//! without shared memory and no trap is reached.

use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};

use super::file::{m_fetch, m_shm_barrier, m_shm_lock, m_shm_map, m_shm_unmap};
use super::system::DlSym;
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

/// Whether a version-2 or -3 method of a version-1 table was called.
static TRAPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

unsafe extern "C" fn trap_shm_map(
    _: *mut ffi::sqlite3_file,
    _: c_int,
    _: c_int,
    _: c_int,
    _: *mut *mut c_void,
) -> c_int {
    TRAPPED.store(true, Ordering::SeqCst);
    ffi::SQLITE_IOERR_SHMMAP
}

unsafe extern "C" fn trap_shm_lock(
    _: *mut ffi::sqlite3_file,
    _: c_int,
    _: c_int,
    _: c_int,
) -> c_int {
    TRAPPED.store(true, Ordering::SeqCst);
    ffi::SQLITE_IOERR_SHMLOCK
}

unsafe extern "C" fn trap_shm_barrier(_: *mut ffi::sqlite3_file) {
    TRAPPED.store(true, Ordering::SeqCst);
}

unsafe extern "C" fn trap_shm_unmap(_: *mut ffi::sqlite3_file, _: c_int) -> c_int {
    TRAPPED.store(true, Ordering::SeqCst);
    ffi::SQLITE_IOERR_SHMMAP
}

unsafe extern "C" fn trap_fetch(
    _: *mut ffi::sqlite3_file,
    _: i64,
    _: c_int,
    _: *mut *mut c_void,
) -> c_int {
    TRAPPED.store(true, Ordering::SeqCst);
    ffi::SQLITE_IOERR
}

unsafe extern "C" fn trap_unfetch(_: *mut ffi::sqlite3_file, _: i64, _: *mut c_void) -> c_int {
    TRAPPED.store(true, Ordering::SeqCst);
    ffi::SQLITE_IOERR
}

/// The default VFS, which the version-1 fake opens its files with.
static DEFAULT_VFS: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(null_mut());

/// The default VFS's file methods as a version-1 table: its version-1
/// methods, and traps where a version-2 or -3 table has more.
static V1_METHODS: std::sync::OnceLock<ffi::sqlite3_io_methods> = std::sync::OnceLock::new();

/// `xOpen` of the version-1 fake: the default VFS opens the file; a main
/// database file then gets [`V1_METHODS`] in place of the default VFS's
/// table.
unsafe extern "C" fn f_open_v1(
    _: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let default = DEFAULT_VFS.load(Ordering::SeqCst);
    // SAFETY: the default VFS is registered for the process; `file` has
    // its `szOsFile` bytes (the fake's size is the same).
    unsafe {
        let rc = ((*default).xOpen.unwrap())(default, name, file, flags, out_flags);
        let real = (*file).pMethods;
        // Main database files only: the default VFS gives other files
        // another table (no locking).
        if !real.is_null() && flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
            let real = &*real;
            let v1 = V1_METHODS.get_or_init(|| ffi::sqlite3_io_methods {
                iVersion: 1,
                xShmMap: Some(trap_shm_map),
                xShmLock: Some(trap_shm_lock),
                xShmBarrier: Some(trap_shm_barrier),
                xShmUnmap: Some(trap_shm_unmap),
                xFetch: Some(trap_fetch),
                xUnfetch: Some(trap_unfetch),
                ..*real
            });
            (*file).pMethods = v1;
        }
        rc
    }
}

/// A VFS like the default one whose files have a version-1 methods
/// table, registered (not as the default) and leaked.
fn version_one_root() -> RootVfs {
    // SAFETY: the default VFS is registered for the process; only its
    // fields are copied. The copy is leaked and registered under its own
    // name; its methods other than `xOpen` are the default VFS's, which do
    // not depend on the VFS pointer they are given.
    unsafe {
        let default = ffi::sqlite3_vfs_find(std::ptr::null());
        assert!(!default.is_null());
        DEFAULT_VFS.store(default, Ordering::SeqCst);
        let fake = Box::leak(Box::new(ffi::sqlite3_vfs {
            zName: c"selfheal-fake-v1-files".as_ptr(),
            pNext: null_mut(),
            xOpen: Some(f_open_v1),
            ..*default
        }));
        assert_eq!(ffi::sqlite3_vfs_register(fake, 0), ffi::SQLITE_OK);
        RootVfs(fake)
    }
}

#[test]
fn over_version_one_files_no_method_past_version_one_is_read() {
    use rusqlite::{Connection, OpenFlags};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v1.db");
    register_over(
        c"selfheal-over-v1-files".to_owned(),
        version_one_root(),
        Arc::new(Shared::new(SqliteConfig::new())),
        Arc::new(Databases::default()),
    )
    .unwrap();
    let open = || {
        Connection::open_with_flags_and_vfs(&db, OpenFlags::default(), "selfheal-over-v1-files")
            .unwrap()
    };
    let c = open();
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);")
        .unwrap();
    let mut file: *mut ffi::sqlite3_file = null_mut();
    // SAFETY: the connection is open; the file control hands out the main
    // database file's pointer, valid while the connection is open. The
    // methods below are called as SQLite calls them, with valid pointers.
    unsafe {
        let rc = ffi::sqlite3_file_control(
            c.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        );
        assert_eq!(rc, ffi::SQLITE_OK);
        assert_eq!(
            (*(*file).pMethods).iVersion,
            1,
            "the main file claims only what its inner file has"
        );
        let mut out: *mut c_void = null_mut();
        assert_eq!(
            m_shm_map(file, 0, 32_768, 1, &mut out),
            ffi::SQLITE_IOERR_SHMMAP
        );
        assert!(out.is_null());
        assert_eq!(
            m_shm_lock(file, 0, 1, ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_SHARED),
            ffi::SQLITE_IOERR_SHMLOCK
        );
        m_shm_barrier(file);
        assert_eq!(m_shm_unmap(file, 0), ffi::SQLITE_OK);
        assert_eq!(m_fetch(file, 0, 4096, &mut out), ffi::SQLITE_OK);
        assert!(out.is_null());
    }
    assert!(!TRAPPED.load(Ordering::SeqCst), "a trap was reached");
    // No shared memory: WAL only in exclusive locking mode (its index on
    // the heap), and SQLite works on either way.
    let mode: String = c
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        mode, "delete",
        "WAL needs shared memory or exclusive locking"
    );
    c.execute("INSERT INTO t(v) VALUES ('rollback')", [])
        .unwrap();
    c.execute_batch("PRAGMA locking_mode = EXCLUSIVE").unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    for i in 0..200 {
        c.execute("INSERT INTO t(v) VALUES (?1)", [format!("wal-{i}")])
            .unwrap();
    }
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    drop(c);
    let c = open();
    c.execute_batch("PRAGMA locking_mode = EXCLUSIVE").unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 201);
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    drop(c);
    assert!(!TRAPPED.load(Ordering::SeqCst), "a trap was reached");
}
