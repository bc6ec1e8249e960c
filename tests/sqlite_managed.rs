//! Goal: a SQLite database opened through the selfheal VFS with
//! `SqliteConfig::recovery` runs under an `AutoRecoveryManager`: damage a
//! query reads is healed on the reader's thread as an incident of the loop
//! (diagnosed, repaired, verified, audited, with a postmortem), damage no
//! query reads is found by the manager's scrub and healed with no read at
//! all, snapshots are a source under it too, and with no good copy the read
//! fails (never wrong rows) and the incident is escalated. Method: real
//! SQLite (rusqlite, bundled) under both journal modes; pages damaged with
//! `std::fs`; the model's rows, `integrity_check`, the manager's incidents
//! and the file's bytes against the replica are the judges.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use selfheal::healer::Outcome;
use selfheal::sqlite::{SqliteConfig, SqliteVfs};
use selfheal::{PageId, Target};

#[path = "sqlite_vfs_common/mod.rs"]
mod sqlite_vfs_common;
use sqlite_vfs_common::*;

const NEVER: Duration = Duration::from_secs(3_600);

/// A database built by plain SQLite, adopted and worked through `vfs`, and
/// copied into `copies` (when given) after the work.
fn prepare(dir: &Path, mode: &str, vfs: &SqliteVfs, copies: Option<&Path>) -> (PathBuf, Model) {
    let db = dir.join("app.db");
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let c = open(&db, vfs);
    work(&c, mode, &mut model, 1);
    drop(c);
    if let Some(copies) = copies {
        std::fs::copy(&db, copies.join("app.db")).unwrap();
    }
    (db, model)
}

/// The pages the manager of `db` healed (an incident about one page, or a
/// page-set incident's pages), in order, each once.
fn healed_pages(vfs: &SqliteVfs, db: &Path) -> Vec<PageId> {
    let m = vfs.manager(db).unwrap();
    let mut pages: Vec<PageId> = m
        .incidents()
        .iter()
        .filter(|i| matches!(i.outcome, Outcome::Healed { .. }))
        .flat_map(|i| match (i.pages.is_empty(), &i.target) {
            // A page-set incident heals every page it lists.
            (false, _) => i.pages.clone(),
            (true, Target::Page(p)) => vec![*p],
            (true, _) => Vec::new(),
        })
        .collect();
    pages.sort();
    pages.dedup();
    pages
}

fn damage_read_is_healed_by_the_manager(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let copies = dir.path().join("copies");
    std::fs::create_dir(&copies).unwrap();
    let vfs = register(
        &format!("managed-{mode}"),
        SqliteConfig::new()
            .replica_dir(&copies)
            .recovery(dir.path().join("recovery")),
    );
    let (db, model) = prepare(dir.path(), mode, &vfs, Some(&copies));
    let leaves = table_leaves(&db);
    let mut hit = vec![PageId(0), leaves[2], leaves[9], leaves[17]];
    hit.sort();
    let before = damage(&db, &hit);
    let c = open(&db, &vfs);
    check(&c, &model).unwrap();
    assert_eq!(healed_pages(&vfs, &db), hit, "every damaged page healed");
    let m = vfs.manager(&db).unwrap();
    let incident = m
        .incidents()
        .into_iter()
        .find(|i| matches!(i.outcome, Outcome::Healed { .. }))
        .unwrap();
    let postmortem = incident.postmortem_markdown(None);
    assert!(postmortem.contains("repair"), "{postmortem}");
    assert!(m.audit_log().is_some(), "the manager keeps an audit log");
    assert_eq!(vfs.stats().unhealed, 0);
    drop(m);
    drop(c);
    assert!(
        std::fs::read(&db).unwrap() == before,
        "the file differs from the replica"
    );
    // The manager stopped cleanly with the last connection: reopening
    // starts a new one on the same directory, with nothing to recover.
    let c = open(&db, &vfs);
    check(&c, &model).unwrap();
    let m = vfs.manager(&db).unwrap();
    let report = m.startup_report().unwrap();
    assert_eq!(report.incidents_resumed, 0, "{report:?}");
}

#[test]
fn damage_read_is_healed_by_the_manager_rollback_journal() {
    damage_read_is_healed_by_the_manager("DELETE");
}

#[test]
fn damage_read_is_healed_by_the_manager_wal() {
    damage_read_is_healed_by_the_manager("WAL");
}

/// The manager's scrub finds damage no query reads and the manager heals
/// it from the replica on its own.
fn the_managers_scrub_heals_damage_no_query_reads(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let copies = dir.path().join("copies");
    std::fs::create_dir(&copies).unwrap();
    let vfs = register(
        &format!("managed-scrub-{mode}"),
        SqliteConfig::new()
            .replica_dir(&copies)
            .scrub_pages_per_s(20_000)
            .recovery(dir.path().join("recovery")),
    );
    let (db, model) = prepare(dir.path(), mode, &vfs, Some(&copies));
    let c = open(&db, &vfs);
    let leaves = table_leaves(&db);
    let before = damage(&db, &[leaves[4], leaves[11]]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read(&db).unwrap() != before {
        assert!(
            Instant::now() < deadline,
            "the scrub did not heal the damage: {:?}",
            vfs.manager(&db).unwrap().stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut want = vec![leaves[4], leaves[11]];
    want.sort();
    let m = vfs.manager(&db).unwrap();
    assert!(m.wait_idle(Duration::from_secs(10)));
    assert_eq!(healed_pages(&vfs, &db), want);
    drop(m);
    check(&c, &model).unwrap();
}

#[test]
fn the_managers_scrub_heals_damage_no_query_reads_rollback_journal() {
    the_managers_scrub_heals_damage_no_query_reads("DELETE");
}

#[test]
fn the_managers_scrub_heals_damage_no_query_reads_wal() {
    the_managers_scrub_heals_damage_no_query_reads("WAL");
}

/// Under a manager with snapshots only, damage found after a reopen is
/// healed from the newest snapshot; with no good copy anywhere, the read
/// fails and the incident is escalated.
fn snapshots_under_the_manager(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let vfs = register(
        &format!("managed-snap-{mode}"),
        SqliteConfig::new()
            .snapshots(dir.path().join("snaps"), NEVER)
            .recovery(dir.path().join("recovery")),
    );
    let (db, model) = prepare(dir.path(), mode, &vfs, None);
    let c = open(&db, &vfs);
    vfs.snapshot_now(&db).unwrap();
    drop(c);
    let leaves = table_leaves(&db);
    let before = damage(&db, &[leaves[3], leaves[8]]);
    let c = open(&db, &vfs);
    check(&c, &model).unwrap();
    assert_eq!(healed_pages(&vfs, &db).len(), 2);
    drop(c);
    assert!(std::fs::read(&db).unwrap() == before);

    // A page rewritten since the snapshot, then lost: no good copy.
    let c = open(&db, &vfs);
    let pre = std::fs::read(&db).unwrap();
    c.execute("UPDATE items SET note = 'again' WHERE id % 3 = 0", [])
        .unwrap();
    if mode == "WAL" {
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    drop(c);
    let post = std::fs::read(&db).unwrap();
    let changed = table_leaves(&db)
        .into_iter()
        .find(|p| page_bytes(&pre, *p) != page_bytes(&post, *p))
        .unwrap();
    write_page(&db, changed, &page_bytes(&pre, changed));
    let c = open(&db, &vfs);
    let err = check(&c, &model).expect_err("no good copy: the query must fail");
    assert!(
        matches!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt)
        ),
        "{err}"
    );
    assert!(vfs.stats().unhealed >= 1);
    let m = vfs.manager(&db).unwrap();
    let escalated = m
        .incidents()
        .into_iter()
        .find(|i| i.target == Target::Page(changed))
        .expect("the page's incident");
    assert!(
        !matches!(escalated.outcome, Outcome::Healed { .. }),
        "{escalated:?}"
    );
}

#[test]
fn snapshots_under_the_manager_rollback_journal() {
    snapshots_under_the_manager("DELETE");
}

#[test]
fn snapshots_under_the_manager_wal() {
    snapshots_under_the_manager("WAL");
}
