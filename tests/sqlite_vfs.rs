//! Goal: SQLite opened through the selfheal VFS (`selfheal::sqlite`) never
//! sees a damaged page of its database file: a page damaged on disk behind
//! its back is healed from a replica before the read returns, so every
//! query answers what a model of the data says, `integrity_check` is `ok`
//! and the file ends byte-identical to the replica; with the replica damaged
//! too, the read fails (never wrong rows); a process killed mid-
//! transaction leaves a database that SQLite's recovery plus the sidecar
//! table bring back whole (every row of every acknowledged commit, the
//! table compared in full; kills are checked to land mid-transaction:
//! at least one of each run's leaves a hot journal, or a WAL ending in
//! frames of no commit);
//! truncation shrinks the sidecar table with
//! the file. Method: real SQLite (rusqlite, bundled) under
//! both journal modes (rollback `DELETE` and `WAL`); the database is built
//! by plain SQLite, adopted at the first open through the VFS, then worked
//! (inserts, updates, deletes, `VACUUM`, checkpoints) through it; damage is
//! written with `std::fs` while no connection is open; the crash is a
//! child (this test binary re-executed, its page cache smaller than a
//! transaction so pages spill before the commit) killed with SIGKILL.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OpenFlags};
use selfheal::sqlite::{self, HealEvent, SqliteConfig, SqliteVfs};
use selfheal::testing::sqlite as fmt;
use selfheal::testing::sqlite::BtreeKind;
use selfheal::testing::Damage;
use selfheal::{FailureKind, PageId};

#[path = "sqlite_vfs_common/mod.rs"]
mod sqlite_vfs_common;
use sqlite_vfs_common::*;

/// The damage plan: page 1 (bit flip), the index roots (interior pages:
/// zeroed, junk), a table leaf (misdirected: another page's bytes), and two
/// pages that changed since `old` (torn: new first half, old second half;
/// lost write: the old page).
fn plan(db: &Path, old: &[u8], roots: &[u32]) -> Vec<(PageId, &'static str, Vec<u8>)> {
    let now = std::fs::read(db).unwrap();
    let pages = (now.len() / PAGE) as u64;
    let mut plan = Vec::new();
    let mut p1 = page_bytes(&now, PageId(0));
    Damage::BitFlip {
        byte: 3_000,
        bit: 5,
    }
    .apply(&mut p1);
    plan.push((PageId(0), "bit flip", p1));
    let interior: Vec<PageId> = roots
        .iter()
        .map(|r| fmt::page_id(*r).unwrap())
        .filter(|p| fmt::btree_kind(*p, &page_bytes(&now, *p)) == Some(BtreeKind::InteriorIndex))
        .collect();
    assert!(
        interior.len() >= 2,
        "index roots {roots:?} are not interior"
    );
    plan.push((interior[0], "zeroed", vec![0u8; PAGE]));
    let mut junk = vec![0u8; PAGE];
    Damage::Junk { seed: 7 }.apply(&mut junk);
    plan.push((interior[1], "junk", junk));
    let used: BTreeSet<PageId> = plan.iter().map(|(p, _, _)| *p).collect();
    let leaves: Vec<PageId> = (1..pages)
        .map(PageId)
        .filter(|p| !used.contains(p))
        .filter(|p| fmt::btree_kind(*p, &page_bytes(&now, *p)) == Some(BtreeKind::LeafTable))
        .collect();
    plan.push((leaves[0], "misdirected", page_bytes(&now, leaves[1])));
    let changed: Vec<PageId> = (1..pages)
        .map(PageId)
        .filter(|p| !used.contains(p) && *p != leaves[0])
        .filter(|p| (p.0 as usize + 1) * PAGE <= old.len())
        .filter(|p| {
            let (a, b) = (page_bytes(&now, *p), page_bytes(old, *p));
            fmt::btree_kind(*p, &a).is_some()
                && a[..PAGE / 2] != b[..PAGE / 2]
                && a[PAGE / 2..] != b[PAGE / 2..]
        })
        .collect();
    assert!(
        changed.len() >= 2,
        "too few pages changed since the old copy"
    );
    let mut torn = page_bytes(&now, changed[0])[..PAGE / 2].to_vec();
    torn.extend_from_slice(&page_bytes(old, changed[0])[PAGE / 2..]);
    plan.push((changed[0], "torn", torn));
    plan.push((changed[1], "lost write", page_bytes(old, changed[1])));
    plan
}

fn index_roots(c: &Connection) -> Vec<u32> {
    let mut st = c
        .prepare("SELECT rootpage FROM sqlite_master WHERE type = 'index' ORDER BY name")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    db: PathBuf,
    replica: PathBuf,
    /// The file before the last round of work (older page versions).
    old: Vec<u8>,
    model: Model,
    roots: Vec<u32>,
    vfs: SqliteVfs,
    heals: Arc<Mutex<Vec<HealEvent>>>,
}

/// A database built by plain SQLite, adopted at its first open through the
/// VFS, worked through it, and copied to the replica.
fn setup(mode: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica.db");
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let heals = Arc::new(Mutex::new(Vec::new()));
    let h = heals.clone();
    let vfs = register(
        mode,
        SqliteConfig::new()
            .replica_file(&replica)
            .on_heal(move |e| h.lock().unwrap().push(e.clone())),
    );
    let opening = std::time::Instant::now();
    let c = open(&db, &vfs);
    let opened_in = opening.elapsed();
    let adoptions = vfs.adoptions();
    assert_eq!(adoptions.len(), 1, "the first open adopts the file");
    let a = &adoptions[0];
    assert_eq!(a.report.corrupt, 0);
    assert_eq!(a.report.sealed + a.report.unallocated, a.pages);
    assert_eq!(a.report.unallocated, a.freelist_leaves);
    assert!(a.freelist_leaves > 0, "the delete left free pages: {a:?}");
    assert_eq!(a.path, db);
    assert_eq!(a.page_size, PAGE);
    assert_eq!(a.pages, file_pages(&db));
    // Both phases were timed, and both ran inside the open that adopted.
    assert!(a.quick_check > std::time::Duration::ZERO, "{a:?}");
    assert!(a.adopt > std::time::Duration::ZERO, "{a:?}");
    assert!(
        a.quick_check + a.adopt <= opened_in,
        "quick_check {:?} + sealing {:?} exceed the open's {opened_in:?}",
        a.quick_check,
        a.adopt
    );
    eprintln!(
        "[{mode}] adopted {} pages ({} free) in {:?} + quick_check {:?}",
        a.pages, a.freelist_leaves, a.adopt, a.quick_check
    );
    work(&c, mode, &mut model, 1);
    check(&c, &model).unwrap();
    drop(c);
    let old = std::fs::read(&db).unwrap();
    let c = open(&db, &vfs);
    work(&c, mode, &mut model, 2);
    check(&c, &model).unwrap();
    let roots = index_roots(&c);
    drop(c);
    std::fs::copy(&db, &replica).unwrap();
    assert_eq!(
        vfs.adoptions().len(),
        1,
        "a sealed file is not adopted again"
    );
    assert_eq!(
        vfs.stats().healed + vfs.stats().unhealed,
        0,
        "no false alarm"
    );
    Setup {
        _dir: dir,
        db,
        replica,
        old,
        model,
        roots,
        vfs,
        heals,
    }
}

fn damage_is_healed_on_read(mode: &str) {
    let s = setup(mode);
    let plan = plan(&s.db, &s.old, &s.roots);
    for (page, _, bytes) in &plan {
        write_page(&s.db, *page, bytes);
    }
    let damaged: BTreeSet<u64> = plan.iter().map(|(p, _, _)| fmt::sqlite_page(*p)).collect();
    let c = open(&s.db, &s.vfs);
    let rows = check(&c, &s.model).unwrap();
    drop(c);
    let healed: BTreeSet<u64> = s
        .heals
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.healed)
        .map(|e| e.page)
        .collect();
    assert_eq!(
        healed,
        damaged,
        "plan {:?}",
        plan.iter()
            .map(|(p, w, _)| (p.0 + 1, *w))
            .collect::<Vec<_>>()
    );
    assert_eq!(s.vfs.stats().unhealed, 0);
    // Every page, page 1 too (which also has its kept copy), was healed
    // from the replica: the newest copy, not the copy kept at the last
    // close.
    let from_replica = format!("repaired from replica file:{}", s.replica.display());
    let events = s.heals.lock().unwrap().clone();
    let first = events
        .iter()
        .find(|e| e.page == 1)
        .expect("page 1 was healed");
    assert_eq!(first.detail, from_replica, "page 1: {first:?}");
    for e in &events {
        assert_eq!(e.detail, from_replica, "page {}: {e:?}", e.page);
        assert_eq!(e.path, s.db);
    }
    assert!(
        std::fs::read(&s.db).unwrap() == std::fs::read(&s.replica).unwrap(),
        "the healed file is byte-identical to the replica"
    );
    let reported: BTreeSet<u64> = s
        .vfs
        .failures()
        .try_iter()
        .filter_map(|f| match f.kind {
            FailureKind::CorruptPage { page } => Some(fmt::sqlite_page(page)),
            _ => None,
        })
        .collect();
    assert_eq!(reported, damaged, "each damaged page is reported");
    // Work goes on through the healed file.
    let mut model = s.model.clone();
    let c = open(&s.db, &s.vfs);
    work(&c, mode, &mut model, 3);
    check(&c, &model).unwrap();
    eprintln!(
        "[{mode}] damaged {:?}; healed {healed:?}; {rows} rows checked",
        plan.iter()
            .map(|(p, w, _)| (fmt::sqlite_page(*p), *w))
            .collect::<Vec<_>>()
    );
}

#[test]
fn damage_is_healed_on_read_rollback_journal() {
    damage_is_healed_on_read("DELETE");
}

#[test]
fn damage_is_healed_on_read_wal() {
    damage_is_healed_on_read("WAL");
}

fn replica_damaged_too_is_an_error_never_wrong_rows(mode: &str) {
    let s = setup(mode);
    let now = std::fs::read(&s.db).unwrap();
    let root = fmt::page_id(s.roots[0]).unwrap();
    let mut junk = vec![0u8; PAGE];
    Damage::Junk { seed: 9 }.apply(&mut junk);
    write_page(&s.db, root, &junk);
    // The replica holds an older version of the page: it verifies nowhere.
    write_page(&s.replica, root, &page_bytes(&s.old, root));
    let c = open(&s.db, &s.vfs);
    let by_index = c
        .prepare("SELECT id FROM items INDEXED BY items_category WHERE category = 3")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        });
    let err = by_index.expect_err("a damaged index with no good copy must not answer");
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt),
        "{err}"
    );
    // Queries that do not need the page still answer right.
    let count: i64 = c
        .query_row("SELECT count(*) FROM items NOT INDEXED", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count as usize, s.model.len());
    assert!(s.vfs.stats().unhealed >= 1);
    let kinds: Vec<FailureKind> = s.vfs.failures().try_iter().map(|f| f.kind).collect();
    assert!(
        kinds.contains(&FailureKind::CorruptPage { page: root }),
        "{kinds:?}"
    );
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, FailureKind::IrreparablePage { page } if *page == root)),
        "{kinds:?}"
    );
    // Once the replica has the page again, the next read heals it.
    write_page(&s.replica, root, &page_bytes(&now, root));
    drop(c);
    let c = open(&s.db, &s.vfs);
    check(&c, &s.model).unwrap();
    drop(c);
    assert!(std::fs::read(&s.db).unwrap() == now);
}

#[test]
fn replica_damaged_too_rollback_journal() {
    replica_damaged_too_is_an_error_never_wrong_rows("DELETE");
}

#[test]
fn replica_damaged_too_wal() {
    replica_damaged_too_is_an_error_never_wrong_rows("WAL");
}

/// Row 1 of table `t` written twice (`'first'`, then `'again'`), each
/// commit synced (and checkpointed in WAL mode), through a VFS whose
/// replica file is `<name>-replica.db` and whose heals are recorded; the
/// connection still open.
struct TwoVersions {
    dir: tempfile::TempDir,
    db: PathBuf,
    replica: PathBuf,
    vfs: SqliteVfs,
    heals: Arc<Mutex<Vec<u64>>>,
    conn: Connection,
    /// Page 2 (the table's root leaf) as the first commit left it.
    first: Vec<u8>,
}

fn two_versions(mode: &str, name: &str) -> TwoVersions {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(format!("{name}.db"));
    let replica = dir.path().join(format!("{name}-replica.db"));
    let heals = Arc::new(Mutex::new(Vec::new()));
    let h = heals.clone();
    let vfs = register(
        name,
        SqliteConfig::new()
            .replica_file(&replica)
            .on_heal(move |e: &HealEvent| h.lock().unwrap().push(e.page)),
    );
    let conn = open(&db, &vfs);
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = {mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);"
    ))
    .unwrap();
    let commit = |sql: &str| {
        conn.execute(sql, []).unwrap();
        if mode == "WAL" {
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
        }
    };
    commit("INSERT INTO t(id, v) VALUES (1, 'first')");
    let first = page_bytes(&std::fs::read(&db).unwrap(), PageId(1));
    commit("UPDATE t SET v = 'again' WHERE id = 1");
    TwoVersions {
        dir,
        db,
        replica,
        vfs,
        heals,
        conn,
        first,
    }
}

/// Row 1's value read through `vfs` from the database at `db`.
fn row_one(db: &Path, vfs: &SqliteVfs) -> String {
    open(db, vfs)
        .query_row("SELECT v FROM t WHERE id = 1", [], |r| r.get(0))
        .unwrap()
}

/// A page written twice and synced, then put back to its first version on
/// disk (a lost write), is damage after the database is closed and opened
/// again: the sidecar table's settle of the second write was made durable
/// (with the next intents, by the file's settle thread, and at the close
/// at the latest), so the older version's checksum is no longer accepted.
fn older_version_after_reopen_is_damage(mode: &str) {
    let v = two_versions(mode, "versions");
    drop(v.conn);
    std::fs::copy(&v.db, &v.replica).unwrap();
    write_page(&v.db, PageId(1), &v.first);
    assert_eq!(row_one(&v.db, &v.vfs), "again", "never the older version");
    assert_eq!(*v.heals.lock().unwrap(), vec![2], "page 2 was healed");
    assert!(std::fs::read(&v.db).unwrap() == std::fs::read(&v.replica).unwrap());
}

#[test]
fn older_version_after_reopen_rollback_journal() {
    older_version_after_reopen_is_damage("DELETE");
}

#[test]
fn older_version_after_reopen_wal() {
    older_version_after_reopen_is_damage("WAL");
}

/// A commit's settle is durable without a close: the database's files
/// copied while its connection is still open — what a crash at that moment
/// leaves — refuse the page's older version once the settle is durable,
/// which happens within the settle delay (checked until a deadline). A
/// `xSync` that did not hand its settle to the settle thread would leave
/// it buffered until the close: the copy would then accept the older
/// version, and the query there would answer the older row.
fn a_commits_settle_is_durable_without_a_close(mode: &str) {
    let v = two_versions(mode, "settle");
    // The file holds the newest commit (flushed at its sync): the replica.
    std::fs::copy(&v.db, &v.replica).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut tries = 0;
    let answer = loop {
        tries += 1;
        let crash = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(v.dir.path()).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            if name.to_string_lossy().starts_with("settle.db") {
                std::fs::copy(e.path(), crash.path().join(&name)).unwrap();
            }
        }
        let copy = crash.path().join("settle.db");
        write_page(&copy, PageId(1), &v.first);
        let answer = row_one(&copy, &v.vfs);
        if answer == "again" || std::time::Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(
        answer, "again",
        "after {tries} copies the older version was still accepted"
    );
    assert_eq!(
        *v.heals.lock().unwrap(),
        vec![2],
        "page 2 healed in the copy"
    );
    drop(v.conn);
}

#[test]
fn a_commits_settle_is_durable_without_a_close_rollback_journal() {
    a_commits_settle_is_durable_without_a_close("DELETE");
}

#[test]
fn a_commits_settle_is_durable_without_a_close_wal() {
    a_commits_settle_is_durable_without_a_close("WAL");
}

/// With a scrub rate, damage that no query reads is found in the
/// background (reported on the failure bus, fenced), and the next read of
/// the page heals it.
fn the_background_scrub_finds_damage_no_query_reads(mode: &str) {
    let s = setup(mode);
    assert!(matches!(
        sqlite::register("scrub-zero", SqliteConfig::new().scrub_pages_per_s(0)),
        Err(selfheal::Error::InvalidConfig { .. })
    ));
    let vfs = register(
        "scrub",
        SqliteConfig::new()
            .replica_file(&s.replica)
            .scrub_pages_per_s(100_000),
    );
    let leaf = PageId(std::fs::metadata(&s.db).unwrap().len() / PAGE as u64 - 1);
    let mut junk = vec![0u8; PAGE];
    Damage::Junk { seed: 3 }.apply(&mut junk);
    write_page(&s.db, leaf, &junk);
    let c = open(&s.db, &vfs);
    let failures = vfs.failures();
    let found = failures
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the scrub reports the damaged page");
    assert_eq!(found.kind, FailureKind::CorruptPage { page: leaf });
    assert_eq!(vfs.stats().healed, 0, "found by the scrub, not by a read");
    check(&c, &s.model).unwrap();
    assert_eq!(vfs.stats().healed, 1);
    drop(c);
    assert!(std::fs::read(&s.db).unwrap() == std::fs::read(&s.replica).unwrap());
}

#[test]
fn the_background_scrub_finds_damage_no_query_reads_rollback_journal() {
    the_background_scrub_finds_damage_no_query_reads("DELETE");
}

#[test]
fn the_background_scrub_finds_damage_no_query_reads_wal() {
    the_background_scrub_finds_damage_no_query_reads("WAL");
}

const CHILD_DB: &str = "SELFHEAL_SQLITE_CRASH_DB";
const CHILD_MODE: &str = "SELFHEAL_SQLITE_CRASH_MODE";
const CHILD_SYNC: &str = "SELFHEAL_SQLITE_CRASH_SYNC";
/// Row ids of the child's transaction `t`: `CHILD_BASE + t * 1000 + 0..500`.
const CHILD_BASE: i64 = 100_000;

/// The child of the crash test: commits transactions of 500 rows through
/// the VFS forever (with a page cache of 10 pages, so each transaction
/// spills pages before its commit), appending each committed transaction's number to
/// `<db>.committed` (synced) after its commit. Runs only when the crash
/// test starts it (the environment names the database).
#[test]
#[ignore = "run by the crash test in a child process"]
fn crash_child() {
    let db = PathBuf::from(std::env::var(CHILD_DB).expect("started by the crash test"));
    let mode = std::env::var(CHILD_MODE).unwrap();
    let sync = std::env::var(CHILD_SYNC).unwrap();
    assert!(sync == "FULL" || sync == "OFF", "synchronous = {sync}");
    let vfs = register("child", SqliteConfig::new());
    let c = open(&db, &vfs);
    // A page cache smaller than a transaction: SQLite spills dirty pages
    // mid-transaction (to the database file after syncing the journal's
    // header, or to the WAL as frames of no commit), so a kill at almost
    // any point in a transaction leaves its pages for recovery to undo.
    c.execute_batch(&format!(
        "PRAGMA journal_mode = {mode}; PRAGMA synchronous = {sync}; PRAGMA cache_size = 10"
    ))
    .unwrap();
    let applied: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
    assert_eq!(
        applied,
        if sync == "OFF" { 0 } else { 2 },
        "synchronous = {sync}"
    );
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(db.with_extension("committed"))
        .unwrap();
    let first: i64 = std::fs::read_to_string(db.with_extension("committed"))
        .unwrap_or_default()
        .lines()
        .last()
        .map_or(1, |l| l.parse::<i64>().unwrap() + 1);
    for txn in first.. {
        let tx = c.unchecked_transaction().unwrap();
        for i in 0..500 {
            let id = CHILD_BASE + txn * 1_000 + i;
            tx.execute(
                "INSERT INTO items(id, name, category, note) VALUES (?1, ?2, ?3, ?4)",
                params![id, name_of(id, 0), id % 37, "x".repeat(200)],
            )
            .unwrap();
        }
        tx.execute(
            "DELETE FROM items WHERE id < ?1 AND id % 5 = 0",
            params![CHILD_BASE + txn * 1_000 - 3_000],
        )
        .unwrap();
        tx.commit().unwrap();
        // One write per line: a kill never leaves half a number.
        use std::io::Write;
        log.write_all(format!("{txn}\n").as_bytes()).unwrap();
        log.sync_data().unwrap();
    }
}

/// A row of `items` as the crash test compares it: id, name, category,
/// note.
type Row = (i64, String, i64, String);

/// Every row of `items`, in id order.
fn rows_of(c: &Connection) -> Vec<Row> {
    let mut st = c
        .prepare("SELECT id, name, category, note FROM items ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// The rows of `items` after the plain build (`model`) and the child's
/// transactions `1..=newest`: each inserts its 500 rows, then deletes the
/// rows with `id % 5 = 0` below its own first id minus 3000.
fn child_expected(model: &Model, newest: i64) -> Vec<Row> {
    let deleted = |id: i64| newest >= 1 && id % 5 == 0 && id < CHILD_BASE + newest * 1_000 - 3_000;
    let plain = model.iter().map(|(id, (name, category))| {
        (
            *id,
            name.clone(),
            *category,
            format!("note {id} ").repeat(4),
        )
    });
    let child = (1..=newest).flat_map(|t| {
        (0..500).map(move |i| {
            let id = CHILD_BASE + t * 1_000 + i;
            (id, name_of(id, 0), id % 37, "x".repeat(200))
        })
    });
    plain.chain(child).filter(|r| !deleted(r.0)).collect()
}

/// `sync` is SQLite's `synchronous` setting in the child: with `OFF`
/// SQLite never syncs, and a killed process (not a lost machine) must still
/// leave every committed transaction, since its writes were in the file.
fn crash_mid_transaction(mode: &str, sync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let committed = db.with_extension("committed");
    let (mut recover, mut mid_transaction) = (0, 0);
    for round in 0..8u64 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB, &db)
            .env(CHILD_MODE, mode)
            .env(CHILD_SYNC, sync)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let goal = 3 + round * 4;
        let started = std::time::Instant::now();
        loop {
            let done = std::fs::read_to_string(&committed)
                .unwrap_or_default()
                .lines()
                .count() as u64;
            if done >= goal {
                break;
            }
            assert!(
                started.elapsed().as_secs() < 120,
                "the child made no progress"
            );
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the child exited: {status}");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Let it get into the next transaction, then SIGKILL.
        std::thread::sleep(std::time::Duration::from_millis(3 + round * 7));
        child.kill().unwrap();
        child.wait().unwrap();
        // What the kill left for SQLite's recovery: a hot journal (its
        // header written, so the file may hold the transaction's pages),
        // or a non-empty WAL.
        let (left, inside) = left_by_the_kill(&db, mode);
        recover += u32::from(left);
        mid_transaction += u32::from(inside);

        // No replica: any page the crash left unverifiable would fail the
        // reads below with SQLITE_CORRUPT.
        let vfs = register("after-crash", SqliteConfig::new());
        let c = open(&db, &vfs);
        let integrity: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok", "round {round}");
        let last: i64 = std::fs::read_to_string(&committed)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .parse()
            .unwrap();
        // The whole table is exactly what the logged commits leave, with
        // the transaction after them either whole (committed, killed before
        // logging it) or absent (killed before its commit).
        let table = rows_of(&c);
        let newest = if table == child_expected(&model, last) {
            last
        } else if table == child_expected(&model, last + 1) {
            last + 1
        } else {
            let want: BTreeSet<Row> = child_expected(&model, last).into_iter().collect();
            let have: BTreeSet<Row> = table.iter().cloned().collect();
            let missing: Vec<i64> = want
                .iter()
                .filter(|r| !have.contains(*r))
                .map(|r| r.0)
                .take(20)
                .collect();
            let extra: Vec<i64> = table
                .iter()
                .filter(|r| !want.contains(*r))
                .map(|r| r.0)
                .take(20)
                .collect();
            panic!(
                "round {round}: committed {last}; {} rows, want {} (or transaction {} whole too); missing {missing:?}; unexpected {extra:?}",
                table.len(),
                want.len(),
                last + 1
            );
        };
        let rows: i64 = c
            .query_row(
                "SELECT count(*) FROM items WHERE id >= ?1",
                [CHILD_BASE + newest * 1_000],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 500, "round {round}: the newest transaction is whole");
        assert_eq!(vfs.stats().unhealed, 0);
        eprintln!("[{mode}] round {round}: killed after {last} logged commits ({}); newest whole transaction {newest}; integrity_check ok", if inside { "inside a transaction" } else if left { "between transactions, WAL not empty" } else { "nothing to recover" });
        // The next round's child continues from this transaction number.
        drop(c);
        if newest > last {
            let mut log = std::fs::read_to_string(&committed).unwrap();
            log.push_str(&format!("{newest}\n"));
            std::fs::write(&committed, log).unwrap();
        }
    }
    assert!(
        recover >= 1,
        "{mode}, synchronous = {sync}: no kill left a hot journal or a non-empty WAL"
    );
    assert!(
        mid_transaction >= 1,
        "{mode}, synchronous = {sync}: no kill landed inside a transaction (a hot journal, or a WAL ending in frames of no commit)"
    );
    eprintln!("[{mode}] of 8 kills, {recover} left a hot journal or a non-empty WAL, {mid_transaction} inside a transaction");
}

/// What the files of `db` hold for SQLite's recovery after a kill:
/// whether there is a hot journal or a non-empty `-wal`, and whether that
/// shows the kill landed inside a transaction. In rollback-journal mode the
/// two are one: a hot journal (`-journal` starting with the journal magic:
/// its header is written, zeroed until then, before any page of the
/// transaction reaches the database file). In WAL mode the `-wal` is
/// non-empty after any commit; the kill was inside a transaction when the
/// WAL ends in frames after its last commit frame.
fn left_by_the_kill(db: &Path, mode: &str) -> (bool, bool) {
    const MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
    let side = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        std::fs::read(PathBuf::from(p)).unwrap_or_default()
    };
    if mode == "WAL" {
        let wal = side("-wal");
        (!wal.is_empty(), wal_ends_uncommitted(&wal))
    } else {
        let hot = side("-journal").starts_with(&MAGIC);
        (hot, hot)
    }
}

/// Whether `wal` (a `-wal` file's bytes) ends in frames after its last
/// commit frame: pages of a transaction written before its commit. Frames
/// are those of the header's salts, in order; a commit frame records the
/// database size after the commit (non-zero) in bytes 4..8 of its header.
fn wal_ends_uncommitted(wal: &[u8]) -> bool {
    if wal.len() < 32 {
        return false;
    }
    let page = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
    let frame = 24 + page;
    let (mut last, mut last_commit) = (None, None);
    let mut at = 32;
    while at + frame <= wal.len() && wal[at + 8..at + 16] == wal[16..24] {
        last = Some(at);
        if wal[at + 4..at + 8] != [0; 4] {
            last_commit = Some(at);
        }
        at += frame;
    }
    last.is_some() && last != last_commit
}

#[test]
fn crash_mid_transaction_rollback_journal() {
    crash_mid_transaction("DELETE", "FULL");
}

#[test]
fn crash_mid_transaction_wal() {
    crash_mid_transaction("WAL", "FULL");
}

#[test]
fn crash_mid_transaction_rollback_journal_synchronous_off() {
    crash_mid_transaction("DELETE", "OFF");
}

#[test]
fn crash_mid_transaction_wal_synchronous_off() {
    crash_mid_transaction("WAL", "OFF");
}

/// Connections of one file share one protected database whatever order
/// they open in: a read-only connection first, then one that writes.
fn a_read_only_connection_first_does_not_make_the_file_read_only(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ro.db");
    let vfs = register("ro", SqliteConfig::new());
    let c = open(&db, &vfs);
    c.execute_batch(&format!(
        "PRAGMA journal_mode = {mode}; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');"
    ))
    .unwrap();
    drop(c);
    let ro = Connection::open_with_flags_and_vfs(&db, OpenFlags::SQLITE_OPEN_READ_ONLY, vfs.name())
        .unwrap();
    let n: i64 = ro
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    let rw = open(&db, &vfs);
    rw.execute("INSERT INTO t VALUES (2, 'b')", []).unwrap();
    let n: i64 = ro
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(vfs.stats().files_opened, 2, "one database per open period");
}

#[test]
fn a_read_only_connection_first_does_not_make_the_file_read_only_rollback_journal() {
    a_read_only_connection_first_does_not_make_the_file_read_only("DELETE");
}

#[test]
fn a_read_only_connection_first_does_not_make_the_file_read_only_wal() {
    a_read_only_connection_first_does_not_make_the_file_read_only("WAL");
}

/// A transaction of more pages than the VFS holds before writing them
/// (`PENDING_PAGES_MAX`, 1024) is written in batches and reads back whole.
#[test]
fn a_transaction_larger_than_the_write_batch() {
    for mode in ["DELETE", "WAL"] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("big.db");
        let vfs = register("big", SqliteConfig::new());
        let c = open(&db, &vfs);
        c.execute_batch(&format!(
            "PRAGMA journal_mode = {mode}; CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB NOT NULL);"
        ))
        .unwrap();
        let tx = c.unchecked_transaction().unwrap();
        for id in 0..3_000i64 {
            let v: Vec<u8> = (0..3_000).map(|i| (i as i64 * 31 + id) as u8).collect();
            tx.execute("INSERT INTO b(id, v) VALUES (?1, ?2)", params![id, v])
                .unwrap();
        }
        tx.commit().unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        drop(c);
        assert!(std::fs::metadata(&db).unwrap().len() > 2_500 * PAGE as u64);
        let c = open(&db, &vfs);
        let integrity: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok", "{mode}");
        let mut st = c.prepare("SELECT id, v FROM b ORDER BY id").unwrap();
        let mut n = 0i64;
        for row in st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .unwrap()
        {
            let (id, v) = row.unwrap();
            assert_eq!(id, n);
            assert!(v
                .iter()
                .enumerate()
                .all(|(i, b)| *b == (i as i64 * 31 + id) as u8));
            n += 1;
        }
        assert_eq!(n, 3_000, "{mode}");
        assert_eq!(vfs.stats().healed + vfs.stats().unhealed, 0, "{mode}");
    }
}

/// The pages of `db` the sidecar table tracks, from page 0 up to `upto`
/// (exclusive): sealed or marked free. Read from the table's files with no
/// connection open.
fn tracked(db: &Path, upto: u64) -> Vec<PageId> {
    let table = selfheal::ChecksumTable::open(&sqlite::sidecar_path(db), PAGE).unwrap();
    (0..upto)
        .map(PageId)
        .filter(|p| table.get(*p).is_some() || table.is_free(*p))
        .collect()
}

fn file_pages(db: &Path) -> u64 {
    std::fs::metadata(db).unwrap().len() / PAGE as u64
}

/// Truncation shrinks the checksum table with the file: after a delete and
/// `VACUUM` through the VFS, no page past the file's new end is tracked
/// (sealed or free), and growing the file again seals the new pages, which
/// verify and heal like any other.
fn truncation_shrinks_the_table(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shrink.db");
    let replica = dir.path().join("shrink-replica.db");
    let mut model = Model::new();
    build_plain(&db, mode, &mut model);
    let vfs = register("shrink", SqliteConfig::new().replica_file(&replica));
    let c = open(&db, &vfs);
    insert(&c, &mut model, 10_000..=16_000);
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    drop(c);
    let big = file_pages(&db);
    let all = tracked(&db, big + 16);
    assert_eq!(all.len() as u64, big, "every page of the file is tracked");
    assert_eq!(all.last(), Some(&PageId(big - 1)));

    let c = open(&db, &vfs);
    c.execute("DELETE FROM items WHERE id > 1500", []).unwrap();
    model.retain(|id, _| *id <= 1500);
    c.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    check(&c, &model).unwrap();
    drop(c);
    let small = file_pages(&db);
    assert!(small * 3 < big, "the file shrank: {big} -> {small} pages");
    let left = tracked(&db, big + 16);
    assert_eq!(
        left,
        (0..small).map(PageId).collect::<Vec<_>>(),
        "{mode}: the table tracks exactly the {small} pages left (it had {big})"
    );

    // Grown again, the new pages are sealed; damage to one of them heals.
    let c = open(&db, &vfs);
    insert(&c, &mut model, 20_000..=24_000);
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    check(&c, &model).unwrap();
    drop(c);
    let grown = file_pages(&db);
    assert!(grown > small, "{small} -> {grown} pages");
    assert_eq!(tracked(&db, grown + 16).len() as u64, grown);
    std::fs::copy(&db, &replica).unwrap();
    let leaf = *table_leaves(&db).last().unwrap();
    assert!(leaf.0 >= small, "the last leaf {leaf:?} is a new page");
    damage(&db, &[leaf]);
    let c = open(&db, &vfs);
    check(&c, &model).unwrap();
    drop(c);
    assert_eq!(vfs.stats().healed, 1);
    assert_eq!(vfs.stats().unhealed, 0);
    assert!(std::fs::read(&db).unwrap() == std::fs::read(&replica).unwrap());
}

#[test]
fn truncation_shrinks_the_table_rollback_journal() {
    truncation_shrinks_the_table("DELETE");
}

#[test]
fn truncation_shrinks_the_table_wal() {
    truncation_shrinks_the_table("WAL");
}
