//! Goal: the selfheal VFS heals from every kind of source a SQLite user
//! has — a replica directory holding a copy of each database, and the
//! database's own incremental snapshots — and never from a copy older than
//! the page: a page written since the newest snapshot is not healed with its
//! older copy. Method: real SQLite (rusqlite, bundled) under both journal
//! modes; pages damaged with `std::fs` while no connection is open (so the
//! heal happens after a reopen); the model's rows, `integrity_check` and the
//! file's bytes (against the copy taken before the damage) are the judges.

use std::time::{Duration, Instant};

use selfheal::sqlite::SqliteConfig;
use selfheal::testing::sqlite as fmt;
use selfheal::PageId;

#[path = "sqlite_vfs_common/mod.rs"]
mod sqlite_vfs_common;
use sqlite_vfs_common::*;

/// Long enough that no periodic snapshot runs during a test that takes its
/// snapshots by hand.
const NEVER: Duration = Duration::from_secs(3_600);

fn a_replica_directory_heals_each_database_from_its_own_copy(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let copies = dir.path().join("copies");
    std::fs::create_dir(&copies).unwrap();
    let vfs = register(
        &format!("dir-{mode}"),
        SqliteConfig::new().replica_dir(&copies),
    );
    let mut models = Vec::new();
    for name in ["a.db", "b.db"] {
        let db = dir.path().join(name);
        let mut model = Model::new();
        build_plain(&db, mode, &mut model);
        let c = open(&db, &vfs);
        work(&c, mode, &mut model, 1);
        drop(c);
        std::fs::copy(&db, copies.join(name)).unwrap();
        models.push((db, model));
    }
    for (db, model) in &models {
        let leaves = table_leaves(db);
        let before = damage(db, &[PageId(0), leaves[3], leaves[10], leaves[20]]);
        let c = open(db, &vfs);
        check(&c, model).unwrap();
        drop(c);
        assert!(
            std::fs::read(db).unwrap() == before,
            "{} differs from its state before the damage",
            db.display()
        );
    }
    assert_eq!(vfs.stats().healed, 8, "{:?}", vfs.stats());
    assert_eq!(vfs.stats().unhealed, 0);
}

#[test]
fn a_replica_directory_heals_each_database_rollback_journal() {
    a_replica_directory_heals_each_database_from_its_own_copy("DELETE");
}

#[test]
fn a_replica_directory_heals_each_database_wal() {
    a_replica_directory_heals_each_database_from_its_own_copy("WAL");
}

/// With snapshots only (no replica): damage found after a reopen is healed
/// from the newest snapshot — after a full one, and after an incremental
/// one that holds only the pages written since.
fn snapshots_heal_after_a_reopen(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let snaps = dir.path().join("snaps");
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let heals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = heals.clone();
    let vfs = register(
        &format!("snap-{mode}"),
        SqliteConfig::new()
            .snapshots(&snaps, NEVER)
            .on_heal(move |e| h.lock().unwrap().push(e.clone())),
    );
    let c = open(&db, &vfs);
    let full = vfs.snapshot_now(&db).unwrap();
    assert_eq!(full.info.parent, None, "the first snapshot is full");
    let pre = std::fs::read(&db).unwrap();
    // A small change: one row's name, then an incremental snapshot.
    let id = *model.keys().nth(100).unwrap();
    c.execute("UPDATE items SET name = 'changed' WHERE id = ?1", [id])
        .unwrap();
    model.get_mut(&id).unwrap().0 = "changed".into();
    if mode == "WAL" {
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    let inc = vfs.snapshot_now(&db).unwrap();
    assert_eq!(inc.info.parent, Some(full.info.id), "{inc:?}");
    assert!(
        inc.info.stored_pages > 0 && inc.info.stored_pages * 10 < inc.info.page_count,
        "the incremental holds only the pages written since: {:?}",
        inc.info
    );
    drop(c);
    // Damage pages the update changed (their only good copy is in the
    // incremental) and pages it left alone (in the full snapshot).
    let post = std::fs::read(&db).unwrap();
    let changed: Vec<PageId> = (1..(post.len().min(pre.len()) / PAGE) as u64)
        .map(PageId)
        .filter(|p| page_bytes(&pre, *p) != page_bytes(&post, *p))
        .filter(|p| fmt::btree_kind(*p, &page_bytes(&post, *p)).is_some())
        .collect();
    assert!(!changed.is_empty(), "the update changed no b-tree page");
    let leaves: Vec<PageId> = table_leaves(&db)
        .into_iter()
        .filter(|p| !changed.contains(p))
        .collect();
    let mut hit = vec![PageId(0), changed[0], leaves[1], leaves[7]];
    hit.sort();
    hit.dedup();
    let before = damage(&db, &hit);
    let c = open(&db, &vfs);
    check(&c, &model).unwrap();
    drop(c);
    assert!(
        std::fs::read(&db).unwrap() == before,
        "the file differs from its state before the damage"
    );
    let heals = heals.lock().unwrap();
    assert_eq!(heals.len(), hit.len(), "{heals:?}");
    // Page 1 heals from the copy of it kept at the last clean close (a
    // replica, tried before the snapshots); every other page from a
    // snapshot.
    assert!(
        heals.iter().all(|e| e.healed
            && (e.detail.contains("snapshot") || (e.page == 1 && e.detail.contains("page1-copy")))),
        "{heals:?}"
    );
    assert_eq!(vfs.stats().unhealed, 0);
}

#[test]
fn snapshots_heal_after_a_reopen_rollback_journal() {
    snapshots_heal_after_a_reopen("DELETE");
}

#[test]
fn snapshots_heal_after_a_reopen_wal() {
    snapshots_heal_after_a_reopen("WAL");
}

/// A page written (and synced) since the newest snapshot has no good copy
/// there: damaged, it fails to read — never its older version's rows.
fn a_page_written_since_the_newest_snapshot_is_not_healed_with_its_older_copy(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let vfs = register(
        &format!("stale-{mode}"),
        SqliteConfig::new().snapshots(dir.path().join("snaps"), NEVER),
    );
    let c = open(&db, &vfs);
    vfs.snapshot_now(&db).unwrap();
    let pre = std::fs::read(&db).unwrap();
    c.execute("UPDATE items SET note = 'rewritten' WHERE id % 3 = 0", [])
        .unwrap();
    if mode == "WAL" {
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    drop(c);
    let post = std::fs::read(&db).unwrap();
    let changed: Vec<PageId> = table_leaves(&db)
        .into_iter()
        .filter(|p| page_bytes(&pre, *p) != page_bytes(&post, *p))
        .collect();
    assert!(!changed.is_empty());
    // The snapshot's older copy of the page, written back by hand: a lost
    // write. It must read as damage, and nothing may "heal" it with itself.
    write_page(&db, changed[0], &page_bytes(&pre, changed[0]));
    let c = open(&db, &vfs);
    let err = check(&c, &model).expect_err("a page with no good copy must fail the query");
    assert!(
        matches!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt)
        ),
        "{err}"
    );
    drop(c);
    assert!(vfs.stats().unhealed >= 1, "{:?}", vfs.stats());
    assert_eq!(vfs.stats().healed, 0, "{:?}", vfs.stats());
}

#[test]
fn a_page_written_since_the_newest_snapshot_is_not_healed_rollback_journal() {
    a_page_written_since_the_newest_snapshot_is_not_healed_with_its_older_copy("DELETE");
}

#[test]
fn a_page_written_since_the_newest_snapshot_is_not_healed_wal() {
    a_page_written_since_the_newest_snapshot_is_not_healed_with_its_older_copy("WAL");
}

/// The periodic thread takes snapshots on its own, incremental after the
/// first, while SQLite writes (in WAL mode, checkpointed after each write,
/// so that the file the snapshots read changes).
fn snapshots_are_taken_periodically_while_sqlite_writes(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let vfs = register(
        &format!("periodic-{mode}"),
        SqliteConfig::new().snapshots(dir.path().join("snaps"), Duration::from_millis(100)),
    );
    let c = open(&db, &vfs);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 1;
    while vfs.snapshots(&db).unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", vfs.snapshots(&db));
        c.execute(
            "UPDATE items SET note = ?1 WHERE id % 50 = 0",
            [format!("round {round}")],
        )
        .unwrap();
        if mode == "WAL" {
            c.execute_batch("PRAGMA wal_checkpoint(PASSIVE)").unwrap();
        }
        round += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let snaps = vfs.snapshots(&db).unwrap();
    assert_eq!(snaps[0].parent, None);
    assert!(snaps[1..].iter().all(|s| s.parent.is_some()), "{snaps:?}");
    drop(c);
    let c = open(&db, &vfs);
    check(&c, &model).unwrap();
}

#[test]
fn snapshots_are_taken_periodically_while_sqlite_writes_rollback_journal() {
    snapshots_are_taken_periodically_while_sqlite_writes("DELETE");
}

#[test]
fn snapshots_are_taken_periodically_while_sqlite_writes_wal() {
    snapshots_are_taken_periodically_while_sqlite_writes("WAL");
}

#[test]
fn bad_snapshot_settings_and_calls_are_refused_with_a_reason() {
    let err = selfheal::sqlite::register(
        "snap-zero",
        SqliteConfig::new().snapshots("/tmp/never", Duration::ZERO),
    )
    .unwrap_err();
    assert!(err.to_string().contains("interval is 0"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let vfs = register("no-snaps", SqliteConfig::new());
    let err = vfs.snapshot_now(&db).unwrap_err();
    assert!(err.to_string().contains("open it first"), "{err}");
    let mut model = Model::new();
    build_plain(&db, "DELETE", &mut model);
    let _c = open(&db, &vfs);
    let err = vfs.snapshot_now(&db).unwrap_err();
    assert!(err.to_string().contains("SqliteConfig::snapshots"), "{err}");
    assert!(vfs.snapshots(&db).unwrap().is_empty());
}

/// A replica one transaction behind, with `synchronous = OFF` (SQLite never
/// syncs the database file, so the table still accepts the page's older
/// version too): the replica's older copy is never written back over the
/// page SQLite wrote last — the read fails instead of returning the old row.
fn a_replica_behind_an_unsynced_write_is_never_written_back(mode: &str) {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db");
    let replica = dir.path().join("r.db");
    let vfs = register(
        &format!("behind-{mode}"),
        SqliteConfig::new().replica_file(&replica),
    );
    let keep = open(&db, &vfs);
    keep.execute_batch(&format!(
        "PRAGMA page_size = {PAGE}; PRAGMA journal_mode = {mode};
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'old');
         PRAGMA synchronous = FULL; INSERT INTO t VALUES (2, 'x');"
    ))
    .unwrap();
    if mode == "WAL" {
        keep.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    std::fs::copy(&db, &replica).unwrap();
    keep.execute_batch("PRAGMA synchronous = OFF; UPDATE t SET v = 'new' WHERE id = 1;")
        .unwrap();
    if mode == "WAL" {
        keep.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    // Page 2 (the table's leaf) damaged on disk; `keep` holds the file open.
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.write_all_at(&[0xAB; PAGE], PAGE as u64).unwrap();
    drop(f);
    let c = open(&db, &vfs);
    let read: rusqlite::Result<String> =
        c.query_row("SELECT v FROM t WHERE id = 1", [], |r| r.get(0));
    assert!(
        !matches!(read.as_deref(), Ok("old")),
        "[{mode}] the replica's older copy was written back"
    );
    assert!(read.is_err(), "[{mode}] {read:?}");
    assert_eq!(vfs.stats().healed, 0, "{:?}", vfs.stats());
}

#[test]
fn a_replica_behind_an_unsynced_write_is_never_written_back_rollback_journal() {
    a_replica_behind_an_unsynced_write_is_never_written_back("DELETE");
}

#[test]
fn a_replica_behind_an_unsynced_write_is_never_written_back_wal() {
    a_replica_behind_an_unsynced_write_is_never_written_back("WAL");
}
