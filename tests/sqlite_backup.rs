//! Goal: a replica kept in step by SQLite's online backup API heals every
//! damaged page of the database on read — page 1 included, although the
//! backup rewrites header fields of its page 1 — and a copy that is damaged
//! too, or behind the newest write, is never served (the read fails).
//! Method: real SQLite (rusqlite, bundled) under both journal modes of the
//! protected database; after each batch of committed writes the host runs
//! `rusqlite::backup::Backup` into a rollback-journal copy; pages of the
//! main file (after a checkpoint in WAL mode) are damaged with `std::fs`
//! behind SQLite's back; the model's rows, fresh connections' queries,
//! `PRAGMA integrity_check`, the heal reports and the file's bytes are the
//! judges.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags};
use selfheal::sqlite::{HealEvent, SqliteConfig, SqliteVfs};
use selfheal::testing::sqlite::{self as fmt, BtreeKind};
use selfheal::PageId;

#[path = "sqlite_vfs_common/mod.rs"]
mod sqlite_vfs_common;
use sqlite_vfs_common::*;

/// Header bytes of page 1 the backup API writes in its copy from the
/// copy's own state: bytes 18..20 (the file format versions: 2 for WAL,
/// 1 for a rollback journal), 24..28 (the file change counter), 40..44 (the
/// schema cookie) and 92..96 (the version-valid-for number).
const REWRITTEN: [std::ops::Range<usize>; 5] = [18..20, 24..28, 40..44, 92..96, 96..100];

/// Copies the database `src` has open into `replica` with the backup API,
/// then leaves the copy in rollback-journal mode (a WAL source's backup
/// makes its copy a WAL database), so every page is in its main file.
fn backup_to(src: &Connection, replica: &Path) {
    let mut dst = Connection::open(replica).unwrap();
    {
        let b = Backup::new(src, &mut dst).unwrap();
        b.run_to_completion(128, std::time::Duration::ZERO, None)
            .unwrap();
    }
    let mode: String = dst
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
    drop(dst);
    let mut wal = replica.as_os_str().to_owned();
    wal.push("-wal");
    assert!(!Path::new(&wal).exists(), "the copy has no WAL left");
}

/// Pages of `db` of the given b-tree kinds (page ids, page 1 excluded).
fn pages_of(db: &Path, kinds: &[BtreeKind]) -> Vec<PageId> {
    let bytes = std::fs::read(db).unwrap();
    (1..(bytes.len() / PAGE) as u64)
        .map(PageId)
        .filter(|p| {
            fmt::btree_kind(*p, &page_bytes(&bytes, *p)).is_some_and(|k| kinds.contains(&k))
        })
        .collect()
}

fn interior_pages(db: &Path) -> Vec<PageId> {
    pages_of(db, &[BtreeKind::InteriorTable, BtreeKind::InteriorIndex])
}

type Heals = Arc<Mutex<Vec<HealEvent>>>;

fn vfs_with(tag: &str, replica: &Path) -> (SqliteVfs, Heals) {
    let heals: Heals = Arc::default();
    let h = heals.clone();
    let vfs = register(
        tag,
        SqliteConfig::new()
            .replica_file(replica)
            .on_heal(move |e| h.lock().unwrap().push(e.clone())),
    );
    (vfs, heals)
}

/// Every page number a heal report names is SQLite's (from 1), the one in
/// `page`: in `damage` and in `detail`.
fn assert_numbered_like_sqlite(e: &HealEvent) {
    let re = regex::Regex::new(r"\bpage (\d+)\b").unwrap();
    for text in [&e.damage, &e.detail] {
        let named: Vec<u64> = re
            .captures_iter(text)
            .map(|c| c[1].parse().unwrap())
            .collect();
        assert!(
            named.iter().all(|n| *n == e.page),
            "page {} reported as {named:?}: {text}",
            e.page
        );
    }
    assert!(e.damage.contains(&format!("page {}", e.page)), "{e:?}");
}

/// A commit after the backup (one row's note; in rollback mode it bumps
/// page 1's change counter, so the copy's page 1 then differs from the
/// newest version in header fields only), then page 1 zeroed on disk, and
/// a table leaf the commit left alone damaged. Returns the file as it was.
fn late_commit_then_damage_page_1(
    keeper: &Connection,
    db: &Path,
    mode: &str,
    model: &Model,
) -> Vec<u8> {
    let id = *model.keys().nth(10).unwrap();
    let pre = std::fs::read(db).unwrap();
    keeper
        .execute("UPDATE items SET note = 'late' WHERE id = ?1", [id])
        .unwrap();
    if mode == "WAL" {
        keeper
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    let now = std::fs::read(db).unwrap();
    let written: Vec<PageId> = (1..(now.len() / PAGE) as u64)
        .map(PageId)
        .filter(|p| page_bytes(&pre, *p) != page_bytes(&now, *p))
        .collect();
    let leaves: Vec<PageId> = table_leaves(db)
        .into_iter()
        .filter(|p| !written.contains(p))
        .collect();
    write_page(db, PageId(0), &[0u8; PAGE]);
    let _ = damage(db, &[leaves[5]]);
    now
}

/// Fresh connection (empty page cache), every query checked.
fn check_fresh(db: &Path, vfs: &SqliteVfs, model: &Model) {
    let c = open(db, vfs);
    check(&c, model).unwrap();
}

/// Each batch of writes is followed by a backup; then interior and leaf
/// pages of the main file are damaged while the database stays open, and
/// fresh connections read them: every read is healed from the copy, page 1
/// included after a commit that changed only its header (its copy there is
/// the backup's, which differs in the rewritten fields).
fn a_backup_copy_heals_every_page(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("copy.db");
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let (vfs, heals) = vfs_with(&format!("bk-{mode}"), &replica);
    let keeper = open(&db, &vfs);
    for round in 1..=3 {
        work(&keeper, mode, &mut model, round);
        backup_to(&keeper, &replica);
        let interior = interior_pages(&db);
        let leaves = table_leaves(&db);
        let index_leaves = pages_of(&db, &[BtreeKind::LeafIndex]);
        assert!(interior.len() >= 2 && leaves.len() > 30 && index_leaves.len() > 10);
        let mut hit = vec![
            interior[round as usize % interior.len()],
            interior[0],
            leaves[3 * round as usize],
            leaves[leaves.len() - 1 - round as usize],
            index_leaves[round as usize],
        ];
        hit.sort();
        hit.dedup();
        let before = damage(&db, &hit);
        check_fresh(&db, &vfs, &model);
        assert!(
            std::fs::read(&db).unwrap() == before,
            "round {round}: the file differs from its state before the damage"
        );
    }
    // Page 1, read again from the file by a fresh connection after a
    // commit.
    let now = late_commit_then_damage_page_1(&keeper, &db, mode, &model);
    check_fresh(&db, &vfs, &model);
    // The commit's write of page 1 dropped the VFS's copy of it: it was
    // read again from the file, and healed.
    assert!(
        heals
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.page == 1 && e.healed),
        "{:?}",
        heals.lock().unwrap()
    );
    assert!(std::fs::read(&db).unwrap() == now, "page 1 restored");
    drop(keeper);
    let heals = heals.lock().unwrap();
    assert!(heals.iter().all(|e| e.healed), "{heals:?}");
    heals.iter().for_each(assert_numbered_like_sqlite);
    assert_eq!(vfs.stats().unhealed, 0);
    assert!(heals.len() >= 16, "{heals:?}");
}

#[test]
fn a_backup_copy_heals_every_page_rollback_journal() {
    a_backup_copy_heals_every_page("DELETE");
}

#[test]
fn a_backup_copy_heals_every_page_wal() {
    a_backup_copy_heals_every_page("WAL");
}

/// Under a recovery manager the same backup copy heals page 1 (its
/// rewritten header fields patched) and a leaf, as the manager's incidents.
fn a_backup_copy_heals_page_1_under_a_recovery_manager(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("copy.db");
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let vfs = register(
        &format!("bkm-{mode}"),
        SqliteConfig::new()
            .replica_file(&replica)
            .recovery(dir.path().join("recovery")),
    );
    let keeper = open(&db, &vfs);
    work(&keeper, mode, &mut model, 1);
    backup_to(&keeper, &replica);
    let now = late_commit_then_damage_page_1(&keeper, &db, mode, &model);
    check_fresh(&db, &vfs, &model);
    assert!(std::fs::read(&db).unwrap() == now, "the file is restored");
    let m = vfs.manager(&db).unwrap();
    let healed: Vec<PageId> = m
        .incidents()
        .iter()
        .filter(|i| matches!(i.outcome, selfheal::healer::Outcome::Healed { .. }))
        .flat_map(|i| match (i.pages.is_empty(), &i.target) {
            // A page-set incident heals every page it lists.
            (false, _) => i.pages.clone(),
            (true, selfheal::Target::Page(p)) => vec![*p],
            (true, _) => Vec::new(),
        })
        .collect();
    assert!(
        healed.contains(&PageId(0)),
        "page 1 healed by the manager: {healed:?}"
    );
    assert_eq!(vfs.stats().unhealed, 0);
    drop(m);
}

#[test]
fn a_backup_copy_heals_page_1_under_a_recovery_manager_rollback_journal() {
    a_backup_copy_heals_page_1_under_a_recovery_manager("DELETE");
}

#[test]
fn a_backup_copy_heals_page_1_under_a_recovery_manager_wal() {
    a_backup_copy_heals_page_1_under_a_recovery_manager("WAL");
}

/// The backup API's copy of page 1 differs from the database's exactly in
/// the [`REWRITTEN`] header fields, and every other page is byte-identical
/// (the rule the VFS's page-1 patch relies on).
fn the_backup_rewrites_only_known_fields_of_page_1(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("copy.db");
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let (vfs, _) = vfs_with(&format!("bkf-{mode}"), &replica);
    let c = open(&db, &vfs);
    let mut seen = std::collections::BTreeSet::new();
    for round in 1..=3 {
        work(&c, mode, &mut model, round);
        backup_to(&c, &replica);
        let a = std::fs::read(&db).unwrap();
        let b = std::fs::read(&replica).unwrap();
        assert_eq!(a.len(), b.len());
        for i in 0..PAGE {
            if a[i] != b[i] {
                assert!(
                    REWRITTEN.iter().any(|r| r.contains(&i)),
                    "round {round}: byte {i} of page 1 differs ({} vs {})",
                    a[i],
                    b[i]
                );
                seen.insert(i);
            }
        }
        assert!(a[PAGE..] == b[PAGE..], "round {round}: pages past 1 differ");
    }
    assert!(!seen.is_empty(), "the copy's page 1 never differed");
}

#[test]
fn the_backup_rewrites_only_known_fields_of_page_1_rollback_journal() {
    the_backup_rewrites_only_known_fields_of_page_1("DELETE");
}

#[test]
fn the_backup_rewrites_only_known_fields_of_page_1_wal() {
    the_backup_rewrites_only_known_fields_of_page_1("WAL");
}

/// Opened fresh, no verified page 1 is known in memory: page 1 damaged
/// where the rewritten fields survive heals (they are taken from the
/// damaged page's own bytes and the checksum accepts the result); page 1
/// damaged in those fields heals from the copy of page 1 kept at the last
/// clean close (`<db>-selfheal.page1`), and without that copy fails with
/// `SQLITE_CORRUPT` — never other bytes.
fn page_1_after_a_reopen(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("copy.db");
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let (vfs, heals) = vfs_with(&format!("bkr-{mode}"), &replica);
    let c = open(&db, &vfs);
    work(&c, mode, &mut model, 1);
    backup_to(&c, &replica);
    drop(c);
    let good = std::fs::read(&db).unwrap();
    let mut page = page_bytes(&good, PageId(0));
    page[1_000] ^= 0x10;
    page[3_000] = page[3_000].wrapping_add(1);
    write_page(&db, PageId(0), &page);
    check_fresh(&db, &vfs, &model);
    assert!(std::fs::read(&db).unwrap() == good, "page 1 restored");
    assert!(
        heals
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.page == 1 && e.healed),
        "{:?}",
        heals.lock().unwrap()
    );
    // The change counter and schema cookie are damaged too: the backup
    // copy cannot supply them, page 1's kept copy does.
    page[24..28].fill(0xee);
    page[40..44].fill(0xee);
    write_page(&db, PageId(0), &page);
    let healed = vfs.stats().healed;
    check_fresh(&db, &vfs, &model);
    assert!(
        std::fs::read(&db).unwrap() == good,
        "page 1 restored from its copy"
    );
    assert!(vfs.stats().healed > healed);
    // Without that copy (lost, or never written: no clean close since the
    // adoption) nothing known to be right supplies them.
    write_page(&db, PageId(0), &page);
    let mut copy = selfheal::sqlite::sidecar_path(&db).into_os_string();
    copy.push(".page1");
    std::fs::remove_file(&copy).unwrap();
    // Opening may read page 1 already (rusqlite prepares the connection).
    let err = Connection::open_with_flags_and_vfs(&db, OpenFlags::default(), vfs.name())
        .and_then(|c| c.query_row("SELECT count(*) FROM items", [], |r| r.get::<_, i64>(0)))
        .expect_err("page 1 has no good copy");
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt),
        "{err}"
    );
    assert!(vfs.stats().unhealed >= 1);
}

#[test]
fn page_1_after_a_reopen_rollback_journal() {
    page_1_after_a_reopen("DELETE");
}

#[test]
fn page_1_after_a_reopen_wal() {
    page_1_after_a_reopen("WAL");
}

/// A page damaged in the database and in the copy: the read fails with
/// `SQLITE_CORRUPT` and no query returns a row of it.
fn a_copy_damaged_on_the_same_page_is_an_error(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("copy.db");
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let (vfs, _) = vfs_with(&format!("bkd-{mode}"), &replica);
    let keeper = open(&db, &vfs);
    work(&keeper, mode, &mut model, 1);
    backup_to(&keeper, &replica);
    let leaf = table_leaves(&db)[7];
    let _ = damage(&db, &[leaf]);
    let _ = damage(&replica, &[leaf, PageId(leaf.0 + 1)]);
    let c = open(&db, &vfs);
    let scan = c
        .prepare("SELECT id, name FROM items NOT INDEXED ORDER BY id")
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        });
    let err = scan.expect_err("a damaged leaf with a damaged copy must not answer");
    assert!(
        matches!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::SystemIoFailure)
        ),
        "{err}"
    );
    assert!(vfs.stats().unhealed >= 1);
    // Rows on other pages still answer right through their index.
    let (id, (name, _)) = model.iter().next_back().unwrap();
    let got: i64 = c
        .query_row("SELECT id FROM items WHERE id = ?1", [id], |r| r.get(0))
        .unwrap();
    assert_eq!(got, *id, "{name}");
}

#[test]
fn a_copy_damaged_on_the_same_page_is_an_error_rollback_journal() {
    a_copy_damaged_on_the_same_page_is_an_error("DELETE");
}

#[test]
fn a_copy_damaged_on_the_same_page_is_an_error_wal() {
    a_copy_damaged_on_the_same_page_is_an_error("WAL");
}

/// A copy behind the newest commit (no backup since) never brings back the
/// page's older version, even with `synchronous = OFF`, under which the
/// sidecar table still accepts the older version (nothing was synced).
fn a_copy_behind_the_newest_write_is_never_served(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("copy.db");
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let (vfs, heals) = vfs_with(&format!("bks-{mode}"), &replica);
    let keeper = open(&db, &vfs);
    keeper.execute_batch("PRAGMA synchronous = OFF").unwrap();
    work(&keeper, mode, &mut model, 1);
    backup_to(&keeper, &replica);
    // A commit after the backup: one row renamed.
    let id = *model.keys().nth(500).unwrap();
    let pre = std::fs::read(&db).unwrap();
    keeper
        .execute("UPDATE items SET name = 'newest' WHERE id = ?1", [id])
        .unwrap();
    if mode == "WAL" {
        keeper
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    model.get_mut(&id).unwrap().0 = "newest".into();
    let post = std::fs::read(&db).unwrap();
    let changed: Vec<PageId> = (1..(post.len() / PAGE) as u64)
        .map(PageId)
        .filter(|p| page_bytes(&pre, *p) != page_bytes(&post, *p))
        .filter(|p| fmt::btree_kind(*p, &page_bytes(&post, *p)) == Some(BtreeKind::LeafTable))
        .collect();
    assert_eq!(changed.len(), 1, "the row's table leaf");
    let _ = damage(&db, &changed);
    let c = open(&db, &vfs);
    let got = c.query_row(
        "SELECT name FROM items NOT INDEXED WHERE id = ?1",
        [id],
        |r| r.get::<_, String>(0),
    );
    match got {
        Ok(name) => panic!("the damaged row answered {name:?}"),
        Err(e) => assert!(
            matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::SystemIoFailure)
            ),
            "{e}"
        ),
    }
    let heals = heals.lock().unwrap();
    let last = heals.last().expect("a heal attempt");
    assert!(
        !last.healed && last.page == fmt::sqlite_page(changed[0]),
        "{last:?}"
    );
    assert!(
        last.detail.contains("not the version SQLite wrote last"),
        "{last:?}"
    );
    assert_numbered_like_sqlite(last);
}

#[test]
fn a_copy_behind_the_newest_write_is_never_served_rollback_journal() {
    a_copy_behind_the_newest_write_is_never_served("DELETE");
}

#[test]
fn a_copy_behind_the_newest_write_is_never_served_wal() {
    a_copy_behind_the_newest_write_is_never_served("WAL");
}
