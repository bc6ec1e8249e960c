//! Goal: the selfheal VFS is a drop-in for SQLite users and leaves SQLite's
//! file format alone: a database opened by URI (`file:...?vfs=<name>`) is
//! protected (damage behind SQLite's back is healed on read); a file written
//! through the VFS opens with the default VFS and with the `sqlite3` CLI
//! (`integrity_check` ok, every row there) in rollback-journal and WAL
//! modes; `PRAGMA mmap_size` does not let SQLite read a page unverified
//! (damage is still healed with memory-mapped I/O asked for), and
//! `SQLITE_FCNTL_CHUNK_SIZE` / `SQLITE_FCNTL_SIZE_HINT` are refused so the
//! file never grows past the pages SQLite wrote; paths are
//! taken by their bytes (a non-UTF-8 directory works, a
//! non-UTF-8 file name is refused by its own name); a replica that is the
//! database itself is refused with a typed error; and registrations from
//! racing threads register a name once. Method: real SQLite (rusqlite,
//! bundled) and the installed CLI (its check is skipped, with a line
//! saying so, when it is not installed, unless `SELFHEAL_REQUIRE_SQLITE3`
//! is set); the model workload of
//! `sqlite_vfs_common`; damage written with `std::fs` while no connection
//! is open; SQLite's own VFS list read under its main mutex. (The VFS keeps
//! its checksums in a sidecar table only: the file format is SQLite's, so
//! there is no trailer placement to run.)

#![allow(unsafe_code)]

use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};

use rusqlite::{params, Connection, OpenFlags};
use selfheal::sqlite::{self, SqliteConfig, SqliteVfs};
use selfheal::PageId;

#[path = "sqlite_vfs_common/mod.rs"]
mod sqlite_vfs_common;
use sqlite_vfs_common::*;

/// `file:` URI of `db` opening it through the VFS `vfs` (`%`, `?` and `#`
/// escaped; the tests' paths have no other special bytes).
fn uri(db: &Path, vfs: &str) -> String {
    let mut path = String::new();
    for &b in db.as_os_str().as_bytes() {
        match b {
            b'%' | b'?' | b'#' => path.push_str(&format!("%{b:02X}")),
            _ => path.push(char::from(b)),
        }
    }
    format!("file:{path}?vfs={vfs}")
}

fn open_uri(db: &Path, vfs: &SqliteVfs) -> Connection {
    Connection::open_with_flags(
        uri(db, vfs.name()),
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap()
}

/// Damages three table leaves of `db` (first, middle, last); returns them.
fn damage_leaves(db: &Path) -> Vec<PageId> {
    let leaves = table_leaves(db);
    assert!(leaves.len() >= 3, "too few table leaves: {leaves:?}");
    let pages = vec![
        leaves[0],
        leaves[leaves.len() / 2],
        leaves[leaves.len() - 1],
    ];
    damage(db, &pages);
    pages
}

/// The damaged `pages` of `db` now hold the replica's bytes.
fn assert_healed_from(db: &Path, replica: &Path, pages: &[PageId]) {
    let (now, copy) = (std::fs::read(db).unwrap(), std::fs::read(replica).unwrap());
    for p in pages {
        assert!(
            page_bytes(&now, *p) == page_bytes(&copy, *p),
            "page {p:?} was not healed on disk"
        );
    }
}

fn uri_open_is_protected(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (db, replica) = (dir.path().join("app.db"), dir.path().join("replica.db"));
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let vfs = register(
        &format!("uri-{mode}"),
        SqliteConfig::new().replica_file(&replica),
    );
    let c = open_uri(&db, &vfs);
    work(&c, mode, &mut model, 1);
    check(&c, &model).unwrap();
    drop(c);
    assert_eq!(vfs.stats().files_opened, 1, "the URI did not open the VFS");
    assert_eq!(vfs.adoptions().len(), 1, "the file was not adopted");
    assert!(sqlite::sidecar_path(&db).exists());
    std::fs::copy(&db, &replica).unwrap();

    let pages = damage_leaves(&db);
    let c = open_uri(&db, &vfs);
    check(&c, &model).unwrap();
    drop(c);
    let stats = vfs.stats();
    assert!(
        stats.healed >= pages.len() as u64,
        "{stats:?}: not every damaged page was healed"
    );
    assert_eq!(stats.unhealed, 0);
    assert_healed_from(&db, &replica, &pages);
}

#[test]
fn a_uri_open_is_protected_rollback_journal() {
    uri_open_is_protected("DELETE");
}

#[test]
fn a_uri_open_is_protected_wal() {
    uri_open_is_protected("WAL");
}

/// `PRAGMA mmap_size` cannot bypass verification: SQLite accepts the
/// setting and tries to read pages by mapping them (`xFetch`), but every
/// page still comes through `xRead`, verified: damaged pages are healed and
/// the rows are the model's.
fn mmap_cannot_bypass_verification(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (db, replica) = (dir.path().join("app.db"), dir.path().join("replica.db"));
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let vfs = register(
        &format!("mmap-{mode}"),
        SqliteConfig::new().replica_file(&replica),
    );
    let c = open(&db, &vfs);
    work(&c, mode, &mut model, 1);
    drop(c);
    std::fs::copy(&db, &replica).unwrap();

    // This SQLite maps files: with the default VFS the setting is taken.
    let other = Connection::open(dir.path().join("other.db")).unwrap();
    let mmap: i64 = other
        .query_row("PRAGMA mmap_size = 268435456", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mmap, 268_435_456, "this SQLite has no memory-mapped I/O");
    drop(other);

    let pages = damage_leaves(&db);
    let c = open(&db, &vfs);
    // SQLite sets the limit and uses xFetch whatever the VFS answers; the
    // VFS refuses the file control, so the pragma reports no size.
    let mut st = c.prepare("PRAGMA mmap_size = 268435456").unwrap();
    let answer = st.query([]).unwrap().next().unwrap().is_some();
    drop(st);
    check(&c, &model).unwrap();
    // Writes and reads go on with the setting in force.
    work(&c, mode, &mut model, 2);
    check(&c, &model).unwrap();
    drop(c);
    let stats = vfs.stats();
    assert_eq!(
        stats.healed,
        pages.len() as u64,
        "{mode}: {stats:?}: the damaged pages {pages:?} were read unverified"
    );
    assert_eq!(stats.unhealed, 0);
    assert!(!answer, "the VFS took the mmap setting");
    let plain = Connection::open(&db).unwrap();
    assert_eq!(check(&plain, &model).unwrap(), model.len());
}

#[test]
fn mmap_cannot_bypass_verification_rollback_journal() {
    mmap_cannot_bypass_verification("DELETE");
}

#[test]
fn mmap_cannot_bypass_verification_wal() {
    mmap_cannot_bypass_verification("WAL");
}

/// Asks the main database file of `c` for `op` with the 64-bit argument
/// `value` (as `sqlite3_file_control` does); returns SQLite's answer.
fn file_control_i64(c: &Connection, op: std::ffi::c_int, mut value: i64) -> std::ffi::c_int {
    // SAFETY: a live connection; both controls read one `sqlite3_int64`
    // (CHUNK_SIZE reads an int's worth of it) that outlives the call.
    unsafe {
        rusqlite::ffi::sqlite3_file_control(
            c.handle(),
            c"main".as_ptr(),
            op,
            (&raw mut value).cast(),
        )
    }
}

/// `SQLITE_FCNTL_CHUNK_SIZE` and `SQLITE_FCNTL_SIZE_HINT` on the main
/// database file are refused (`SQLITE_NOTFOUND`), so the file never grows
/// past the pages SQLite wrote: after asking for 1 MiB chunks and an 8 MiB
/// size hint and inserting rows, the file is exactly the header's page
/// count of whole pages (well under one chunk), and every page reads back
/// verified after a reopen with no replica.
fn chunk_size_and_size_hint_do_not_grow_the_file(mode: &str) {
    const CHUNK: i64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("grow.db");
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch(&format!(
            "PRAGMA page_size = {PAGE}; PRAGMA journal_mode = {mode};
             CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);"
        ))
        .unwrap();
    }
    let vfs = register(&format!("grow-{mode}"), SqliteConfig::new());
    let c = open(&db, &vfs);
    let before = std::fs::metadata(&db).unwrap().len();
    assert_eq!(
        file_control_i64(&c, rusqlite::ffi::SQLITE_FCNTL_CHUNK_SIZE, CHUNK),
        rusqlite::ffi::SQLITE_NOTFOUND,
        "{mode}: the VFS took the chunk size"
    );
    assert_eq!(
        file_control_i64(&c, rusqlite::ffi::SQLITE_FCNTL_SIZE_HINT, 8 * CHUNK),
        rusqlite::ffi::SQLITE_NOTFOUND,
        "{mode}: the VFS took the size hint"
    );
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        before,
        "{mode}: the size hint grew the file"
    );
    let rows = 600i64;
    for batch in 0..3 {
        let tx = c.unchecked_transaction().unwrap();
        for id in batch * rows / 3..(batch + 1) * rows / 3 {
            tx.execute(
                "INSERT INTO t VALUES (?1, ?2)",
                params![id, format!("row {id} ").repeat(30)],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    if mode == "WAL" {
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let bytes = std::fs::read(&db).unwrap();
    let in_header = u32::from_be_bytes(bytes[28..32].try_into().unwrap()) as usize;
    assert_eq!(
        bytes.len(),
        in_header * PAGE,
        "{mode}: the file is not the header's {in_header} pages"
    );
    assert!(
        bytes.len() < CHUNK as usize,
        "{mode}: {} bytes: grown to the chunk",
        bytes.len()
    );
    drop(c);
    assert_eq!(vfs.stats().unhealed, 0);

    // Every page read verified after a reopen with no replica: a page
    // nobody sealed would fail its read.
    let again = register(&format!("grow-again-{mode}"), SqliteConfig::new());
    let c = open(&db, &again);
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let (n, len): (i64, i64) = c
        .query_row("SELECT count(*), sum(length(v)) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(n, rows);
    let want: i64 = (0..rows)
        .map(|id| format!("row {id} ").repeat(30).len() as i64)
        .sum();
    assert_eq!(len, want);
    drop(c);
    let stats = again.stats();
    assert_eq!((stats.healed, stats.unhealed), (0, 0), "{mode}: {stats:?}");
    assert_eq!(
        std::fs::metadata(&db).unwrap().len() as usize,
        in_header * PAGE
    );
}

#[test]
fn chunk_size_and_size_hint_do_not_grow_the_file_rollback_journal() {
    chunk_size_and_size_hint_do_not_grow_the_file("DELETE");
}

#[test]
fn chunk_size_and_size_hint_do_not_grow_the_file_wal() {
    chunk_size_and_size_hint_do_not_grow_the_file("WAL");
}

/// `(count, sum of ids, sum of name lengths, sum of categories)` of the model.
fn summary(model: &Model) -> (i64, i64, i64, i64) {
    model
        .iter()
        .fold((0, 0, 0, 0), |(n, ids, len, cat), (id, (name, c))| {
            (n + 1, ids + id, len + name.len() as i64, cat + c)
        })
}

const SUMMARY: &str = "SELECT count(*), sum(id), sum(length(name)), sum(category) FROM items";

/// The `sqlite3` CLI's answer to `sql` on `db`, or `None` when the CLI is
/// not installed.
fn cli(db: &Path, sql: &str) -> Option<String> {
    let out = match Command::new("sqlite3")
        .arg("-batch")
        .arg(db)
        .arg(sql)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("running sqlite3: {e}"),
    };
    assert!(
        out.status.success(),
        "sqlite3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// A database created, filled and worked through the VFS (the rusqlite
/// open-flag form), then opened with the default VFS and the CLI.
fn others_read_what_the_vfs_wrote(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let vfs = register(&format!("interop-{mode}"), SqliteConfig::new());
    let mut model = Model::new();
    let c = open(&db, &vfs);
    c.execute_batch(&format!(
        "PRAGMA page_size = {PAGE}; PRAGMA journal_mode = {mode};
         CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL,
                            category INTEGER NOT NULL, note TEXT);
         CREATE INDEX items_name ON items(name);
         CREATE INDEX items_category ON items(category, name);"
    ))
    .unwrap();
    insert(&c, &mut model, 1..=4_000);
    work(&c, mode, &mut model, 1);
    if mode == "WAL" {
        // The last commit stays in the -wal file while the VFS's
        // connection is open: the default VFS reads it from there.
        c.execute_batch("PRAGMA wal_autocheckpoint = 0").unwrap();
        c.execute(
            "UPDATE items SET name = 'wal-' || id WHERE id % 5 = 0",
            params![],
        )
        .unwrap();
        for (id, row) in model.iter_mut() {
            if id % 5 == 0 {
                row.0 = format!("wal-{id}");
            }
        }
        assert!(
            std::fs::metadata(dir.path().join("app.db-wal"))
                .unwrap()
                .len()
                > 0,
            "the commit is not in the WAL"
        );
        let plain = Connection::open(&db).unwrap();
        check(&plain, &model).unwrap();
    }
    check(&c, &model).unwrap();
    drop(c);
    assert_eq!(vfs.stats().files_opened, 1);
    assert!(
        sqlite::sidecar_path(&db).exists(),
        "no sidecar: not the VFS"
    );

    let plain = Connection::open(&db).unwrap();
    let journal: String = plain
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, mode.to_lowercase());
    assert_eq!(check(&plain, &model).unwrap(), model.len());
    drop(plain);

    let (n, ids, len, cat) = summary(&model);
    match cli(&db, &format!("PRAGMA integrity_check; {SUMMARY};")) {
        Some(out) => assert_eq!(out, format!("ok\n{n}|{ids}|{len}|{cat}\n")),
        None => {
            assert!(
                std::env::var_os("SELFHEAL_REQUIRE_SQLITE3").is_none(),
                "SELFHEAL_REQUIRE_SQLITE3 is set but the sqlite3 CLI is not installed"
            );
            println!("sqlite3 CLI not installed: skipping its check of {mode} mode");
        }
    }
}

#[test]
fn the_default_vfs_and_the_cli_read_what_the_vfs_wrote_rollback_journal() {
    others_read_what_the_vfs_wrote("DELETE");
}

#[test]
fn the_default_vfs_and_the_cli_read_what_the_vfs_wrote_wal() {
    others_read_what_the_vfs_wrote("WAL");
}

/// Names of the entries of `dir`.
fn listing(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    names
}

#[test]
fn a_non_utf8_file_name_is_refused_by_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let name = OsStr::from_bytes(b"app-\xff\xfe.db");
    let db = dir.path().join(name);
    let c = Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
        .unwrap();
    drop(c);
    let before = std::fs::read(&db).unwrap();
    let vfs = register("non-utf8-name", SqliteConfig::new());

    match vfs.check_database(&db) {
        Err(selfheal::Error::InvalidConfig { field, reason }) => {
            assert_eq!(field, "path");
            assert!(reason.contains("UTF-8"), "{reason}");
            assert!(reason.contains(&db.display().to_string()), "{reason}");
        }
        other => panic!("a non-UTF-8 file name was accepted: {other:?}"),
    }
    assert!(
        Connection::open_with_flags_and_vfs(&db, OpenFlags::default(), vfs.name()).is_err(),
        "the open through the VFS was not refused"
    );
    // Nothing made under a lossy name, no sidecar, the file untouched.
    assert_eq!(listing(dir.path()), vec![name.as_bytes().to_vec()]);
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn a_non_utf8_directory_is_used_by_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let sub_name = OsStr::from_bytes(b"data-\xff");
    let sub = dir.path().join(sub_name);
    std::fs::create_dir(&sub).unwrap();
    let (db, replica) = (sub.join("app.db"), sub.join("replica.db"));
    let mut model = Model::new();
    build_plain(&db, "DELETE", &mut model);
    let vfs = register("non-utf8-dir", SqliteConfig::new().replica_file(&replica));
    vfs.check_database(&db).unwrap();
    let c = open(&db, &vfs);
    work(&c, "DELETE", &mut model, 1);
    drop(c);
    assert!(sqlite::sidecar_path(&db).exists());
    // No directory under a lossy name appeared beside the real one.
    assert_eq!(listing(dir.path()), vec![sub_name.as_bytes().to_vec()]);
    std::fs::copy(&db, &replica).unwrap();

    let pages = damage_leaves(&db);
    let c = open(&db, &vfs);
    check(&c, &model).unwrap();
    drop(c);
    assert!(vfs.stats().healed >= pages.len() as u64);
    assert_healed_from(&db, &replica, &pages);
}

#[test]
fn a_replica_that_is_the_database_itself_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("app.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
        .unwrap();
    drop(c);
    let before = std::fs::read(&db).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::os::unix::fs::symlink(&db, d.join("link.db")).unwrap();
    std::fs::hard_link(&db, d.join("hard.db")).unwrap();

    let cases = [
        (
            "same path",
            "replica_file",
            SqliteConfig::new().replica_file(&db),
        ),
        (
            "through ..",
            "replica_file",
            SqliteConfig::new().replica_file(d.join("sub/../app.db")),
        ),
        (
            "through a symlink",
            "replica_file",
            SqliteConfig::new().replica_file(d.join("link.db")),
        ),
        (
            "a hard link",
            "replica_file",
            SqliteConfig::new().replica_file(d.join("hard.db")),
        ),
        (
            "the database's own directory",
            "replica_dir",
            SqliteConfig::new().replica_dir(d.join("sub/..")),
        ),
    ];
    for (case, setting, config) in cases {
        let vfs = register("self-replica", config);
        match vfs.check_database(&db) {
            Err(selfheal::Error::InvalidConfig { field, reason }) => {
                assert_eq!(field, setting, "{case}");
                assert!(reason.contains("is the database file"), "{case}: {reason}");
                assert!(
                    reason.contains(&db.display().to_string()),
                    "{case}: {reason}"
                );
            }
            other => panic!("{case}: a replica that is the database was accepted: {other:?}"),
        }
        assert!(
            Connection::open_with_flags_and_vfs(&db, OpenFlags::default(), vfs.name()).is_err(),
            "{case}: the open through the VFS was not refused"
        );
        assert!(!sqlite::sidecar_path(&db).exists(), "{case}: adopted");
        assert_eq!(std::fs::read(&db).unwrap(), before, "{case}");
    }

    // A separate copy is a replica.
    std::fs::copy(&db, d.join("sub/app.db")).unwrap();
    let vfs = register(
        "real-replica",
        SqliteConfig::new().replica_dir(d.join("sub")),
    );
    vfs.check_database(&db).unwrap();
    let c = open(&db, &vfs);
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    drop(c);
    assert!(sqlite::sidecar_path(&db).exists());
}

/// How many VFSes named `name` SQLite has registered.
fn registered_count(name: &str) -> usize {
    use rusqlite::ffi;
    let mut n = 0;
    // SAFETY: `sqlite3_vfs_find(NULL)` is the list's head, the default VFS
    // (taken before the mutex: it enters the same, non-recursive mutex; the
    // head changes only when a VFS is made the default, which nothing here
    // does). SQLite's main mutex (static, never freed) is then held while
    // the list is read, as `sqlite3_vfs_register` holds it while changing
    // it. Every VFS in the list stays registered for the life of the
    // process (nothing unregisters here), its name NUL-terminated.
    unsafe {
        let mut vfs = ffi::sqlite3_vfs_find(std::ptr::null());
        let mutex = ffi::sqlite3_mutex_alloc(ffi::SQLITE_MUTEX_STATIC_MAIN);
        ffi::sqlite3_mutex_enter(mutex);
        while !vfs.is_null() {
            if CStr::from_ptr((*vfs).zName).to_bytes() == name.as_bytes() {
                n += 1;
            }
            vfs = (*vfs).pNext;
        }
        ffi::sqlite3_mutex_leave(mutex);
    }
    n
}

/// Registers `name` from `configs.len()` threads at once.
fn register_racing(
    name: &'static str,
    configs: Vec<SqliteConfig>,
) -> Vec<selfheal::Result<SqliteVfs>> {
    let barrier = Arc::new(Barrier::new(configs.len()));
    let threads: Vec<_> = configs
        .into_iter()
        .map(|config| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                sqlite::register(name, config)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn racing_registrations_of_one_config_register_the_name_once() {
    const NAME: &str = "interop-race-same";
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig::new()
        .replica_file(dir.path().join("replica.db"))
        .on_heal(|_| {});
    let vfses: Vec<SqliteVfs> = register_racing(NAME, vec![config.clone(); 8])
        .into_iter()
        .map(|r| r.expect("a registration of the same config failed"))
        .collect();
    assert_eq!(registered_count(NAME), 1, "registered more than once");

    // Every handle is the one VFS: an open through the name shows in all.
    let c =
        Connection::open_with_flags_and_vfs(dir.path().join("app.db"), OpenFlags::default(), NAME)
            .unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(c);
    for v in &vfses {
        assert_eq!(v.name(), NAME);
        assert_eq!(v.stats().files_opened, 1);
    }
    // Again, later: the same VFS.
    let again = sqlite::register(NAME, config).unwrap();
    assert_eq!(again.stats().files_opened, 1);
    // Another config under the name: a typed error, nothing registered.
    match sqlite::register(NAME, SqliteConfig::new().on_heal(|_| {})) {
        Err(selfheal::Error::InvalidConfig { field, reason }) => {
            assert_eq!(field, "name");
            assert!(reason.contains("another configuration"), "{reason}");
        }
        other => panic!("a conflicting registration was accepted: {other:?}"),
    }
    assert_eq!(registered_count(NAME), 1);
    // A name another VFS holds.
    assert!(matches!(
        sqlite::register("unix", SqliteConfig::new()),
        Err(selfheal::Error::InvalidConfig { .. })
    ));
    assert_eq!(registered_count("unix"), 1);
}

#[test]
fn racing_registrations_of_different_configs_register_one() {
    const NAME: &str = "interop-race-conflict";
    let configs: Vec<SqliteConfig> = (0..8)
        .map(|i| SqliteConfig::new().replica_file(format!("/nonexistent/replica-{i}.db")))
        .collect();
    let results = register_racing(NAME, configs);
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        match r {
            selfheal::Error::InvalidConfig { field, reason } => {
                assert_eq!(*field, "name");
                assert!(reason.contains("another configuration"), "{reason}");
            }
            other => panic!("not a config error: {other}"),
        }
    }
    assert_eq!(registered_count(NAME), 1);
}
