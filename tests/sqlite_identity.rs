//! Goal: the SQLite VFS knows which file it protects and which of its pages
//! are in use: pages SQLite never wrote inside a grown file are free until
//! written, all-zero pages in use are sealed at adoption (and at the next
//! open of a file an earlier build adopted with them marked free), a changed page
//! size, a replaced file or a foreign sidecar is refused with a typed error
//! instead of being healed back from a replica, adoption refuses a file
//! that fails `PRAGMA quick_check` or pages that fail their checksums, and
//! page 1 damaged while the database is closed heals from its kept copy,
//! but after a crash (the files copied while a connection that committed is
//! open) that copy is older than page 1 and is not used: page 1 heals from a
//! replica or the read fails.
//! Method: real SQLite files built and damaged with rusqlite and plain file
//! writes, opened through a registered VFS; `PRAGMA integrity_check` and the
//! rows read back are the judges, the VFS's typed open error the verdict.

#[path = "sqlite_vfs_common/mod.rs"]
mod common;

use std::ffi::c_int;
use std::path::{Path, PathBuf};

use common::{open, page_bytes, register, write_page, PAGE};
use rusqlite::{ffi, Connection, OpenFlags};
use selfheal::sqlite::{sidecar_path, SqliteConfig, SqliteVfs};
use selfheal::testing::sqlite as fmt;
use selfheal::{Error, PageId, SqliteRefusal};

fn integrity(c: &Connection) -> String {
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// A rollback-journal database of `rows` rows whose text depends on `seed`.
fn build(db: &Path, rows: i64, seed: &str) {
    let c = Connection::open(db).unwrap();
    c.execute_batch(&format!(
        "PRAGMA page_size = {PAGE}; PRAGMA journal_mode = DELETE;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);"
    ))
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for id in 1..=rows {
        tx.execute(
            "INSERT INTO t VALUES (?1, ?2)",
            rusqlite::params![id, format!("{seed}-{id}-").repeat(8)],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

fn try_open(path: &Path, vfs: &SqliteVfs) -> rusqlite::Result<Connection> {
    Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs.name())
}

/// The refusal the VFS kept for `db`, which must be of `kind` and name both
/// the file and its sidecar.
fn refusal(vfs: &SqliteVfs, db: &Path, kind: SqliteRefusal) -> String {
    let e = vfs
        .take_open_error(db)
        .expect("the VFS keeps why the open failed");
    let text = e.to_string();
    match e {
        Error::SqliteRefused {
            kind: k,
            db: d,
            sidecar,
            ..
        } => {
            assert_eq!(k, kind, "{text}");
            assert_eq!(d, db);
            assert_eq!(sidecar, sidecar_path(db));
        }
        other => panic!("not a refusal: {other}"),
    }
    assert!(text.contains(&db.display().to_string()), "{text}");
    assert!(
        text.contains(&sidecar_path(db).display().to_string()),
        "{text}"
    );
    text
}

/// Writes junk over `pages` (all-zero pages in use: the zeroblob's) while
/// the database is closed, opens it through `vfs` and checks that the blob
/// reads back as zeros — healed, never the junk. Returns the connection.
fn junk_then_read_the_zero_blob(
    db: &Path,
    vfs: &SqliteVfs,
    pages: &[PageId],
    what: &str,
) -> Connection {
    for p in pages {
        write_page(db, *p, &[0xa5; PAGE]);
    }
    let c = open(db, vfs);
    let blob: Vec<u8> = c
        .query_row("SELECT v FROM b WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(blob.len(), 40_000);
    assert!(
        blob.iter().all(|&b| b == 0),
        "{what}: damage to an all-zero page in use was served as data"
    );
    c
}

/// The sidecar files of `db` (`<db>-selfheal*`).
fn sidecar_files(db: &Path) -> Vec<PathBuf> {
    let prefix = sidecar_path(db).file_name().unwrap().to_owned();
    let prefix = prefix.to_str().unwrap();
    std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .collect()
}

fn delete_sidecar(db: &Path) {
    for f in sidecar_files(db) {
        std::fs::remove_file(f).unwrap();
    }
}

// ---- raw VFS calls on the main database file -------------------------------

fn file_pointer(c: &Connection) -> *mut ffi::sqlite3_file {
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: a valid connection; the control writes one pointer.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            c.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        )
    };
    assert_eq!(rc, ffi::SQLITE_OK);
    assert!(!file.is_null());
    file
}

fn x_write(file: *mut ffi::sqlite3_file, page: u64, bytes: &[u8]) -> c_int {
    // SAFETY: an open file of a live connection; the buffer outlives the call.
    unsafe {
        let write = (*(*file).pMethods).xWrite.unwrap();
        write(
            file,
            bytes.as_ptr().cast(),
            bytes.len() as c_int,
            (page * PAGE as u64) as i64,
        )
    }
}

fn x_read(file: *mut ffi::sqlite3_file, page: u64, bytes: &mut [u8]) -> c_int {
    // SAFETY: as for `x_write`.
    unsafe {
        let read = (*(*file).pMethods).xRead.unwrap();
        read(
            file,
            bytes.as_mut_ptr().cast(),
            bytes.len() as c_int,
            (page * PAGE as u64) as i64,
        )
    }
}

fn x_sync(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as for `x_write`.
    unsafe { ((*(*file).pMethods).xSync.unwrap())(file, ffi::SQLITE_SYNC_NORMAL) }
}

// ---- 1. pages inside a grown file ------------------------------------------

#[test]
fn pages_sqlite_never_wrote_inside_a_grown_file_are_free_until_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("grown.db");
    build(&db, 200, "g");
    let vfs = register("grown", SqliteConfig::new());
    let c = open(&db, &vfs);
    assert_eq!(integrity(&c), "ok");
    let f = file_pointer(&c);
    let n = std::fs::metadata(&db).unwrap().len() / PAGE as u64;
    // One page written three pages past the end: pages n..n+3 are never
    // written by anybody.
    assert_eq!(x_write(f, n + 3, &[0x5a; PAGE]), ffi::SQLITE_OK);
    assert_eq!(x_sync(f), ffi::SQLITE_OK);
    assert_eq!(std::fs::metadata(&db).unwrap().len(), (n + 4) * PAGE as u64);
    for gap in n..n + 3 {
        let mut buf = vec![1u8; PAGE];
        assert_eq!(
            x_read(f, gap, &mut buf),
            ffi::SQLITE_OK,
            "page {} inside the grown file reads as damage",
            gap + 1
        );
        assert!(buf.iter().all(|&b| b == 0));
    }
    // Written now: sealed, so damage to it is seen (no replica: CORRUPT).
    let bytes = vec![0x33u8; PAGE];
    assert_eq!(x_write(f, n + 1, &bytes), ffi::SQLITE_OK);
    assert_eq!(x_sync(f), ffi::SQLITE_OK);
    let mut buf = vec![0u8; PAGE];
    assert_eq!(x_read(f, n + 1, &mut buf), ffi::SQLITE_OK);
    assert_eq!(buf, bytes);
    write_page(&db, PageId(n + 1), &[0x44; PAGE]);
    assert_eq!(
        x_read(f, n + 1, &mut buf),
        ffi::SQLITE_CORRUPT,
        "a page written after the growth is sealed"
    );
    write_page(&db, PageId(n + 1), &bytes);
    assert_eq!(x_read(f, n + 1, &mut buf), ffi::SQLITE_OK);
    assert_eq!(integrity(&c), "ok");
    drop(c);
    let c = open(&db, &vfs);
    assert_eq!(integrity(&c), "ok");
    let rows: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 200);
}

// ---- 2. all-zero pages in use ----------------------------------------------

#[test]
fn all_zero_pages_in_use_are_sealed_at_adoption_and_healed_when_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("zeros.db");
    let replica = dir.path().join("replica.db");
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch(&format!(
            "PRAGMA page_size = {PAGE}; PRAGMA journal_mode = DELETE;
             CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB NOT NULL);
             INSERT INTO b VALUES (1, zeroblob(40000));
             CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             INSERT INTO t VALUES (1, 'x');"
        ))
        .unwrap();
    }
    let bytes = std::fs::read(&db).unwrap();
    let zero_pages: Vec<PageId> = (0..(bytes.len() / PAGE) as u64)
        .map(PageId)
        .filter(|p| page_bytes(&bytes, *p).iter().all(|&b| b == 0))
        .collect();
    assert!(
        !zero_pages.is_empty(),
        "the last overflow page of a zeroblob is all zeros"
    );
    std::fs::copy(&db, &replica).unwrap();
    let vfs = register("zeros", SqliteConfig::new().replica_file(&replica));
    drop(open(&db, &vfs));
    let c = junk_then_read_the_zero_blob(&db, &vfs, &zero_pages, "adopted");
    assert!(vfs.stats().healed >= zero_pages.len() as u64);
    assert_eq!(integrity(&c), "ok");
    drop(c);
    assert_eq!(std::fs::read(&db).unwrap(), bytes);
}

/// A file adopted by an earlier build of the crate, which took every
/// all-zero page for free, has its all-zero pages in use marked free in the
/// sidecar table (simulated here: adopted, then those pages marked free
/// with `ChecksumTable::mark_free`, as that adoption did). The next open,
/// which does not adopt, seals them after reading SQLite's freelist, so
/// damage to them is healed from the replica instead of being served.
fn zero_pages_marked_free_by_an_earlier_adoption_are_sealed_at_open(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("zeros-old.db");
    let replica = dir.path().join("replica.db");
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch(&format!(
            "PRAGMA page_size = {PAGE}; PRAGMA journal_mode = {mode};
             CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB NOT NULL);
             INSERT INTO b VALUES (1, zeroblob(40000)), (2, zeroblob(40000));
             CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             INSERT INTO t VALUES (1, 'x');
             DELETE FROM b WHERE id = 2;
             PRAGMA wal_checkpoint(TRUNCATE);"
        ))
        .unwrap();
    }
    let bytes = std::fs::read(&db).unwrap();
    let zero_pages: Vec<PageId> = (0..(bytes.len() / PAGE) as u64)
        .map(PageId)
        .filter(|p| page_bytes(&bytes, *p).iter().all(|&b| b == 0))
        .collect();
    std::fs::copy(&db, &replica).unwrap();
    let vfs = register("zeros-old", SqliteConfig::new().replica_file(&replica));
    drop(open(&db, &vfs));
    assert_eq!(vfs.adoptions().len(), 1);
    let freelist = vfs.adoptions()[0].freelist_leaves;
    assert!(freelist > 0, "the deleted blob left freelist leaves");
    let table = selfheal::ChecksumTable::open(&sidecar_path(&db), PAGE).unwrap();
    // The pages an earlier adoption left marked free: all-zero and not on
    // the freelist (sealed now); the freelist's leaves are marked already.
    let in_use: Vec<PageId> = zero_pages
        .iter()
        .copied()
        .filter(|p| table.get(*p).is_some())
        .collect();
    assert!(
        !in_use.is_empty(),
        "the last overflow page of a zeroblob is all zeros and in use"
    );
    let leaves: Vec<PageId> = (0..(bytes.len() / PAGE) as u64)
        .map(PageId)
        .filter(|p| table.is_free(*p))
        .collect();
    assert_eq!(leaves.len() as u64, freelist);
    for p in &in_use {
        table.mark_free(*p).unwrap();
    }
    drop(table);

    // The open that does not adopt seals them (the freelist's leaves stay
    // free).
    drop(open(&db, &vfs));
    assert_eq!(vfs.adoptions().len(), 1, "not adopted again");
    {
        let table = selfheal::ChecksumTable::open(&sidecar_path(&db), PAGE).unwrap();
        for p in &in_use {
            assert!(
                table.get(*p).is_some() && !table.is_free(*p),
                "{mode}: page {} in use is still unsealed",
                p.0 + 1
            );
        }
        for p in &leaves {
            assert!(
                table.is_free(*p),
                "{mode}: freelist leaf {} sealed",
                p.0 + 1
            );
        }
    }
    let c = junk_then_read_the_zero_blob(&db, &vfs, &in_use, mode);
    assert_eq!(vfs.stats().healed, in_use.len() as u64);
    assert_eq!(integrity(&c), "ok");
    drop(c);
    assert_eq!(std::fs::read(&db).unwrap(), bytes);
}

#[test]
fn zero_pages_marked_free_by_an_earlier_adoption_rollback_journal() {
    zero_pages_marked_free_by_an_earlier_adoption_are_sealed_at_open("DELETE");
}

#[test]
fn zero_pages_marked_free_by_an_earlier_adoption_wal() {
    zero_pages_marked_free_by_an_earlier_adoption_are_sealed_at_open("WAL");
}

// ---- 3. page size ----------------------------------------------------------

#[test]
fn a_changed_page_size_is_refused_and_readopted_after_the_remedy() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("size.db");
    build(&db, 300, "s");
    let vfs = register("size", SqliteConfig::new());
    {
        let c = open(&db, &vfs);
        c.execute_batch("PRAGMA page_size = 1024; VACUUM;").unwrap();
        let ps: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        assert_eq!(ps, 1024);
        assert_eq!(integrity(&c), "ok");
    }
    assert!(
        try_open(&db, &vfs).is_err(),
        "opened at the wrong page size"
    );
    let text = refusal(&vfs, &db, SqliteRefusal::PageSizeChanged);
    assert!(text.contains("1024") && text.contains("4096"), "{text}");
    assert!(text.contains("delete"), "says what to do: {text}");
    // The remedy: the file checks out, so adopt it afresh.
    assert_eq!(integrity(&Connection::open(&db).unwrap()), "ok");
    delete_sidecar(&db);
    let c = open(&db, &vfs);
    assert_eq!(integrity(&c), "ok");
    assert_eq!(vfs.adoptions().last().unwrap().page_size, 1024);
    let rows: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 300);
}

// ---- 4. identity -----------------------------------------------------------

#[test]
fn a_file_replaced_behind_the_vfs_is_refused_not_healed_from_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let other = dir.path().join("b.db");
    let replica = dir.path().join("a-replica.db");
    build(&db, 400, "a");
    build(&other, 400, "b");
    std::fs::copy(&db, &replica).unwrap();
    let vfs = register("replaced", SqliteConfig::new().replica_file(&replica));
    drop(open(&db, &vfs));
    // Another database copied over the path (same inode), sidecar kept.
    std::fs::copy(&other, &db).unwrap();
    let replacement = std::fs::read(&db).unwrap();
    assert!(
        try_open(&db, &vfs).is_err(),
        "a replaced file was opened (and would be healed back to the replica)"
    );
    let text = refusal(&vfs, &db, SqliteRefusal::Replaced);
    assert!(text.contains("delete"), "{text}");
    assert_eq!(vfs.stats().healed, 0);
    assert_eq!(std::fs::read(&db).unwrap(), replacement, "nothing written");
    // Re-adopting as the message says keeps the new file's rows.
    delete_sidecar(&db);
    let c = open(&db, &vfs);
    assert_eq!(integrity(&c), "ok");
    let v: String = c
        .query_row("SELECT v FROM t WHERE id = 7", [], |r| r.get(0))
        .unwrap();
    assert!(v.starts_with("b-7-"), "{v}");
}

#[test]
fn a_sidecar_belonging_to_another_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let other = dir.path().join("b.db");
    build(&db, 400, "a");
    build(&other, 400, "b");
    let vfs = register("foreign", SqliteConfig::new());
    drop(open(&db, &vfs));
    drop(open(&other, &vfs));
    // b's sidecar files under a's names.
    delete_sidecar(&db);
    let (from, to) = (
        sidecar_path(&other).display().to_string(),
        sidecar_path(&db).display().to_string(),
    );
    for f in sidecar_files(&other) {
        let name = f.display().to_string().replacen(&from, &to, 1);
        std::fs::copy(&f, name).unwrap();
    }
    assert!(
        try_open(&db, &vfs).is_err(),
        "opened with another file's sidecar"
    );
    refusal(&vfs, &db, SqliteRefusal::Replaced);
}

#[test]
fn one_damaged_page_is_no_replacement_and_heals() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("one.db");
    let replica = dir.path().join("one-replica.db");
    build(&db, 400, "o");
    std::fs::copy(&db, &replica).unwrap();
    let vfs = register("one", SqliteConfig::new().replica_file(&replica));
    drop(open(&db, &vfs));
    let leaf = common::table_leaves(&db)[0];
    common::damage(&db, &[leaf]);
    let c = open(&db, &vfs);
    assert_eq!(integrity(&c), "ok");
    assert!(vfs.stats().healed >= 1);
}

/// Offset of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("present")
}

#[test]
fn adoption_refuses_pages_that_fail_the_checksums_it_already_had() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("resume.db");
    build(&db, 400, "r");
    let vfs = register("resume", SqliteConfig::new());
    drop(open(&db, &vfs));
    // A changed value inside a record (quick_check cannot see it) ...
    let mut bytes = std::fs::read(&db).unwrap();
    let at = find(&bytes, b"r-123-r-123-");
    bytes[at] = b'q';
    std::fs::write(&db, &bytes).unwrap();
    // ... and a page nobody sealed past SQLite's pages, so the next open
    // adopts again.
    let mut f = std::fs::OpenOptions::new().append(true).open(&db).unwrap();
    std::io::Write::write_all(&mut f, &[7u8; PAGE]).unwrap();
    drop(f);
    assert_eq!(integrity(&Connection::open(&db).unwrap()), "ok");
    assert!(
        try_open(&db, &vfs).is_err(),
        "adoption vouched for a page that failed its checksum"
    );
    let text = refusal(&vfs, &db, SqliteRefusal::DamagedAtAdoption);
    assert!(text.contains("1 page"), "{text}");
}

// ---- 5. quick_check --------------------------------------------------------

#[test]
fn adoption_of_a_database_failing_quick_check_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bad.db");
    build(&db, 400, "q");
    // A b-tree leaf whose cell count is impossible.
    let leaf = common::table_leaves(&db)[1];
    let mut page = page_bytes(&std::fs::read(&db).unwrap(), leaf);
    assert_eq!(
        fmt::btree_kind(leaf, &page),
        Some(fmt::BtreeKind::LeafTable)
    );
    page[3] = 0xff;
    page[4] = 0xff;
    write_page(&db, leaf, &page);
    let vfs = register("quick", SqliteConfig::new());
    assert!(
        try_open(&db, &vfs).is_err(),
        "a database failing quick_check was adopted"
    );
    let text = refusal(&vfs, &db, SqliteRefusal::QuickCheckFailed);
    assert!(text.contains("quick_check"), "{text}");
    assert!(vfs.adoptions().is_empty());
    let mut copy = sidecar_path(&db).into_os_string();
    copy.push(".page1");
    assert!(
        !Path::new(&copy).exists(),
        "no page 1 of a refused file is kept"
    );
}

// ---- 6. page 1 after a reopen ----------------------------------------------

#[test]
fn page_one_damaged_in_its_header_while_closed_heals_from_its_kept_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("first.db");
    build(&db, 300, "p");
    let vfs = register("first", SqliteConfig::new());
    {
        let c = open(&db, &vfs);
        c.execute("INSERT INTO t VALUES (1000, 'after adoption')", [])
            .unwrap();
    }
    let good = std::fs::read(&db).unwrap();
    let mut page = page_bytes(&good, PageId(0));
    // The fields a backup-API copy rewrites, damaged: change counter,
    // version-valid-for and SQLite version number.
    for i in (24..28).chain(92..100) {
        page[i] ^= 0x5a;
    }
    write_page(&db, PageId(0), &page);
    let c = open(&db, &vfs);
    assert_eq!(integrity(&c), "ok");
    let v: String = c
        .query_row("SELECT v FROM t WHERE id = 1000", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, "after adoption");
    assert!(vfs.stats().healed >= 1, "{:?}", vfs.stats());
    drop(c);
    assert_eq!(
        page_bytes(&std::fs::read(&db).unwrap(), PageId(0)),
        page_bytes(&good, PageId(0))
    );
}

#[test]
fn the_lock_adoption_holds_is_released_when_it_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lock.db");
    build(&db, 100, "l");
    let vfs = register("lock", SqliteConfig::new());
    let c = open(&db, &vfs);
    assert_eq!(vfs.adoptions().len(), 1);
    // No waiting: a shared lock left behind would make the commit BUSY.
    c.busy_timeout(std::time::Duration::ZERO).unwrap();
    c.execute("INSERT INTO t VALUES (5000, 'right after adoption')", [])
        .unwrap();
    let other = Connection::open(&db).unwrap();
    other.busy_timeout(std::time::Duration::ZERO).unwrap();
    let n: i64 = other
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 101);
    assert_eq!(integrity(&c), "ok");
}

// ---- 7. page 1's copy after a crash ----------------------------------------

/// Copies every file of `db`'s directory whose name starts with `db`'s file
/// name (the database, its journal or WAL, its `-selfheal*` sidecar files)
/// into `to`, as a crash would leave them; returns the copy of `db`.
fn crash_image(db: &Path, to: &Path) -> PathBuf {
    let name = db.file_name().unwrap().to_str().unwrap();
    for e in std::fs::read_dir(db.parent().unwrap()).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_str().unwrap().starts_with(name) {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    to.join(name)
}

fn page_one_copy_path(db: &Path) -> PathBuf {
    let mut copy = sidecar_path(db).into_os_string();
    copy.push(".page1");
    PathBuf::from(copy)
}

/// Every row of `t`, in id order.
fn rows_of_t(c: &Connection) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut st = c.prepare("SELECT id, v FROM t ORDER BY id")?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// After a crash the copy of page 1 (saved at adoption and at clean
/// closes) is older than page 1 and is not used: the files are copied while
/// the connection that committed since adoption is still open (what a crash
/// leaves), page 1 of the copy is damaged outside its header, and
/// - with no replica the read fails, and the stale copy is not written
///   into the file;
/// - with a replica holding the current file, page 1 heals from the
///   replica and every row is there.
fn page_one_copy_is_not_used_after_a_crash(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stale.db");
    build(&db, 300, "s");
    if mode == "WAL" {
        let c = Connection::open(&db).unwrap();
        let m: String = c
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(m, "wal");
    }
    let vfs = register(&format!("stale-{mode}"), SqliteConfig::new());
    let c = open(&db, &vfs);
    assert_eq!(vfs.adoptions().len(), 1, "{mode}: the open adopts the file");
    let stale = std::fs::read(page_one_copy_path(&db)).expect("page 1's copy saved at adoption");
    assert!(stale == page_bytes(&std::fs::read(&db).unwrap(), PageId(0)));
    // Commits that grow the file change page 1 (its page count, and in
    // rollback-journal mode its change counter at every commit).
    for batch in 0..3i64 {
        let tx = c.unchecked_transaction().unwrap();
        for id in 1_000 + batch * 100..1_000 + (batch + 1) * 100 {
            tx.execute(
                "INSERT INTO t VALUES (?1, ?2)",
                rusqlite::params![id, format!("crash-{id}-").repeat(8)],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    if mode == "WAL" {
        // Page 1 of the file changes at a checkpoint only.
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    let want = rows_of_t(&c).unwrap();
    assert_eq!(want.len(), 600);
    // The last commit's settle made durable (the VFS's settle thread, about
    // 50 ms after it), so only the newest page 1 is accepted.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let current = page_bytes(&std::fs::read(&db).unwrap(), PageId(0));
    assert!(
        current != stale,
        "{mode}: page 1 did not change since adoption"
    );
    assert!(
        std::fs::read(page_one_copy_path(&db)).unwrap() == stale,
        "{mode}: the copy is saved at adoption and clean closes only"
    );
    let replica_dir = tempfile::tempdir().unwrap();
    let replica = replica_dir.path().join("replica.db");
    std::fs::copy(&db, &replica).unwrap();
    // The crash: the files as they are with the connection still open.
    let (lone, healed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let images = [
        crash_image(&db, lone.path()),
        crash_image(&db, healed.path()),
    ];
    let mut damaged = current.clone();
    damaged[2_000] ^= 0x10;
    for image in &images {
        assert!(std::fs::read(page_one_copy_path(image)).unwrap() == stale);
        write_page(image, PageId(0), &damaged);
    }

    // No replica: the stale copy is the only other source, and is refused.
    let (none, heals) =
        common::register_recording(&format!("stale-none-{mode}"), SqliteConfig::new());
    let read = try_open(&images[0], &none).and_then(|c| rows_of_t(&c));
    assert!(
        read.is_err(),
        "{mode}: rows served with page 1 damaged and only its stale copy to heal from"
    );
    let err = read.unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt),
        "{mode}: {err}"
    );
    assert!(none.stats().unhealed >= 1, "{mode}: {:?}", none.stats());
    assert_eq!(none.stats().healed, 0, "{mode}: {:?}", none.stats());
    assert!(
        heals
            .lock()
            .unwrap()
            .iter()
            .all(|e| !e.healed && e.page == 1),
        "{mode}: {:?}",
        heals.lock().unwrap()
    );
    // The copy was tried, and refused as not the newest page 1.
    let copy = format!("page1-copy:{}", page_one_copy_path(&images[0]).display());
    assert!(
        heals
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.detail.contains(&copy)
                && e.detail.contains("not the version SQLite wrote last")),
        "{mode}: {:?}",
        heals.lock().unwrap()
    );
    let on_disk = page_bytes(&std::fs::read(&images[0]).unwrap(), PageId(0));
    assert!(
        on_disk == damaged,
        "{mode}: page 1 of the file was rewritten (stale copy: {})",
        on_disk == stale
    );

    // A replica holding the current file: page 1 heals from it.
    let (with, heals) = common::register_recording(
        &format!("stale-replica-{mode}"),
        SqliteConfig::new().replica_file(&replica),
    );
    let c2 = try_open(&images[1], &with).unwrap();
    assert!(rows_of_t(&c2).unwrap() == want, "{mode}: rows differ");
    assert_eq!(integrity(&c2), "ok");
    drop(c2);
    let heals = heals.lock().unwrap().clone();
    assert_eq!(heals.len(), 1, "{mode}: {heals:?}");
    assert!(heals[0].healed && heals[0].page == 1, "{mode}: {heals:?}");
    assert!(
        heals[0].detail.contains(&replica.display().to_string()),
        "{mode}: healed from elsewhere: {}",
        heals[0].detail
    );
    assert!(page_bytes(&std::fs::read(&images[1]).unwrap(), PageId(0)) == current);
    drop(c);
}

#[test]
fn page_one_copy_is_not_used_after_a_crash_rollback_journal() {
    page_one_copy_is_not_used_after_a_crash("DELETE");
}

#[test]
fn page_one_copy_is_not_used_after_a_crash_wal() {
    page_one_copy_is_not_used_after_a_crash("WAL");
}
