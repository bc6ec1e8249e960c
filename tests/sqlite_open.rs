//! Goal: opening an existing SQLite file through the selfheal VFS keeps
//! what SQLite committed and gives the file one owner: the adoption of a
//! WAL database whose `-wal` still holds committed transactions keeps them
//! (nothing checkpoints them into the file behind the VFS), the adoption of
//! a file with a hot journal seals the rolled-back pages, and a second
//! process is refused while one process owns the file (and opens it once
//! the first has closed it). Method: real SQLite (rusqlite, bundled); the
//! WAL is left full by a plain connection that does not checkpoint at its
//! close, the hot journal by copying a file and its journal mid-transaction;
//! every row is checked against a model, no page may be healed; the second
//! process is a child (this test binary re-executed).

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};
use selfheal::sqlite::SqliteConfig;

#[path = "sqlite_vfs_common/mod.rs"]
mod sqlite_vfs_common;
use sqlite_vfs_common::*;

/// A WAL database whose `-wal` still holds committed transactions (its
/// last connection did not checkpoint at close) is adopted at its first
/// open through the VFS without losing them: adoption seals the file's own
/// pages, nothing checkpoints the WAL into the file behind the VFS, and
/// SQLite reads the newer pages from the WAL and later checkpoints them
/// through the VFS (which seals them). Every row matches the model, no page
/// is healed (no stale copy served as verified), `integrity_check` is `ok`,
/// before and after a reopen and a checkpoint.
#[test]
fn adopting_a_wal_with_committed_frames_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("framed.db");
    let mut model = Model::new();
    build_plain(&db, "WAL", &mut model);
    {
        let c = Connection::open(&db).unwrap();
        c.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .unwrap();
        c.execute_batch("PRAGMA wal_autocheckpoint = 0").unwrap();
        work_in_wal(&c, &mut model);
    }
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let frames = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert!(
        frames > 64 * PAGE as u64,
        "the -wal holds committed frames: {frames} bytes"
    );
    let (vfs, heals) = register_recording("framed", SqliteConfig::new());
    adopted_once_with_no_heal(&db, &vfs, &heals, &model);
    let c = open(&db, &vfs);
    check(&c, &model).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    check(&c, &model).unwrap();
    drop(c);
    let c = open(&db, &vfs);
    check(&c, &model).unwrap();
    drop(c);
    assert_eq!(vfs.adoptions().len(), 1, "adopted once");
    assert!(
        heals.lock().unwrap().is_empty(),
        "{:?}",
        heals.lock().unwrap()
    );
    assert_eq!(vfs.stats().healed + vfs.stats().unhealed, 0);
}

/// Updates, deletes and inserts through `c` (a WAL connection that never
/// checkpoints), beside the model; the header's change counter and page
/// count in the WAL differ from the file's.
fn work_in_wal(c: &Connection, model: &mut Model) {
    c.execute(
        "UPDATE items SET name = 'w' || id, note = 'in the wal' WHERE id % 3 = 0",
        [],
    )
    .unwrap();
    for (id, row) in model.iter_mut() {
        if id % 3 == 0 {
            row.0 = format!("w{id}");
        }
    }
    c.execute("DELETE FROM items WHERE id % 13 = 1", [])
        .unwrap();
    model.retain(|id, _| id % 13 != 1);
    insert(c, model, 40_000..=42_000);
}

const SECOND_DB: &str = "SELFHEAL_SQLITE_SECOND_DB";
const SECOND_EXPECT: &str = "SELFHEAL_SQLITE_SECOND_EXPECT";

/// The second process of the one-owner test: opens the database named by
/// the environment through a selfheal VFS of its own and checks the
/// outcome the parent expects: `refused` (`SQLITE_CANTOPEN`, the VFS
/// keeping a `DirectoryLocked` error that names the sidecar table) or
/// `opens` (the rows read back). Runs only when that test starts it.
#[test]
#[ignore = "run by the one-owner test in a child process"]
fn second_process_child() {
    let db = PathBuf::from(std::env::var(SECOND_DB).expect("started by the one-owner test"));
    let expect = std::env::var(SECOND_EXPECT).unwrap();
    let vfs = register("second", SqliteConfig::new());
    let opened = Connection::open_with_flags_and_vfs(&db, OpenFlags::default(), vfs.name());
    match expect.as_str() {
        "refused" => {
            let err = opened.expect_err("a second process must not open the file");
            assert_eq!(
                err.sqlite_error_code(),
                Some(rusqlite::ErrorCode::CannotOpen),
                "{err}"
            );
            let why = vfs.take_open_error(&db).expect("the VFS keeps why");
            assert!(
                matches!(why, selfheal::Error::DirectoryLocked { .. }),
                "{why:?}"
            );
        }
        "opens" => {
            let c = opened.unwrap();
            let n: i64 = c
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 100);
            let integrity: String = c
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(integrity, "ok");
        }
        other => panic!("unknown expectation {other}"),
    }
}

/// Runs [`second_process_child`] on `db` expecting `expect`; panics with
/// its output when it fails.
fn second_process(db: &Path, expect: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "second_process_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SECOND_DB, db)
        .env(SECOND_EXPECT, expect)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "second process expecting {expect:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child test did not run"
    );
}

/// One process owns the sidecar table: while this process has the file
/// open through its VFS, a second process opening it through a selfheal
/// VFS of its own gets `SQLITE_CANTOPEN` (the first keeps working); once
/// the first has closed it, the second opens it and reads every row.
fn a_second_process_is_refused_while_one_owns_the_file(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("owned.db");
    let vfs = register("owner", SqliteConfig::new());
    let c = open(&db, &vfs);
    c.execute_batch(&format!(
        "PRAGMA journal_mode = {mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);"
    ))
    .unwrap();
    for id in 1..=100i64 {
        c.execute("INSERT INTO t VALUES (?1, ?2)", params![id, name_of(id, 0)])
            .unwrap();
    }
    second_process(&db, "refused");
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 100, "the owner works on");
    drop(c);
    second_process(&db, "opens");
}

#[test]
fn a_second_process_is_refused_rollback_journal() {
    a_second_process_is_refused_while_one_owns_the_file("DELETE");
}

#[test]
fn a_second_process_is_refused_wal() {
    a_second_process_is_refused_while_one_owns_the_file("WAL");
}

/// The rollback-journal side of [`adopting_a_wal_with_committed_frames_keeps_them`]:
/// a database left with a hot journal (a copy of the file and its journal
/// taken while a write transaction had spilled pages into the file, as a
/// crash leaves them) is adopted after the journal is rolled back, so the
/// pages sealed are the committed ones: every row matches the model as it
/// was before the transaction, no page is healed, `integrity_check` is
/// `ok`, before and after a reopen.
#[test]
fn adopting_with_a_hot_journal_seals_the_rolled_back_pages() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let crashed = dir.path().join("crashed.db");
    let mut model = Model::new();
    build_plain(&db, "DELETE", &mut model);
    let committed = std::fs::read(&db).unwrap();
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA cache_size = 8; BEGIN;
         UPDATE items SET name = 'lost' || id, note = hex(randomblob(300));
         DELETE FROM items WHERE id % 5 = 0;",
    )
    .unwrap();
    let journal = PathBuf::from(format!("{}-journal", db.display()));
    std::fs::copy(&db, &crashed).unwrap();
    std::fs::copy(&journal, format!("{}-journal", crashed.display())).unwrap();
    c.execute_batch("ROLLBACK").unwrap();
    drop(c);
    assert!(
        std::fs::read(&crashed).unwrap() != committed,
        "the transaction spilled pages into the file"
    );
    let (vfs, heals) = register_recording("hot-journal", SqliteConfig::new());
    adopted_once_with_no_heal(&crashed, &vfs, &heals, &model);
    assert_eq!(vfs.stats().healed + vfs.stats().unhealed, 0);
}
