//! The model workload shared by the SQLite VFS tests: a table of items with
//! two indexes, built by plain SQLite, worked through a VFS (inserts,
//! updates, deletes, `VACUUM`, checkpoints) beside a model of its rows, and
//! checked by queries and `PRAGMA integrity_check`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{params, Connection, OpenFlags};
use selfheal::sqlite::{self, SqliteConfig, SqliteVfs};
use selfheal::testing::sqlite as fmt;
use selfheal::testing::sqlite::BtreeKind;
use selfheal::testing::Damage;
use selfheal::PageId;

pub const PAGE: usize = 4096;

/// A VFS with a name of its own (registrations last for the process).
pub fn register(tag: &str, config: SqliteConfig) -> SqliteVfs {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!("selfheal-{tag}-{}", N.fetch_add(1, Ordering::Relaxed));
    sqlite::register(&name, config).unwrap()
}

/// The heal events a VFS reported, in order.
pub type Heals = std::sync::Arc<std::sync::Mutex<Vec<sqlite::HealEvent>>>;

/// Registers a VFS configured with `config` whose heal events are kept.
pub fn register_recording(tag: &str, config: SqliteConfig) -> (SqliteVfs, Heals) {
    let heals = Heals::default();
    let h = heals.clone();
    let vfs = register(
        tag,
        config.on_heal(move |e: &sqlite::HealEvent| h.lock().unwrap().push(e.clone())),
    );
    (vfs, heals)
}

/// Opens `db` through `vfs` (the first open of the VFS adopts the file),
/// checks every row against `model`, then once more after a reopen; the
/// file was adopted once, and nothing was healed.
pub fn adopted_once_with_no_heal(db: &Path, vfs: &SqliteVfs, heals: &Heals, model: &Model) {
    let c = open(db, vfs);
    assert_eq!(vfs.adoptions().len(), 1, "the first open adopts the file");
    check(&c, model).unwrap();
    drop(c);
    let c = open(db, vfs);
    check(&c, model).unwrap();
    drop(c);
    assert_eq!(vfs.adoptions().len(), 1, "adopted once");
    assert!(
        heals.lock().unwrap().is_empty(),
        "{:?}",
        heals.lock().unwrap()
    );
}

pub fn open(path: &Path, vfs: &SqliteVfs) -> Connection {
    Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs.name()).unwrap()
}

/// The rows of `items`: id → (name, category).
pub type Model = BTreeMap<i64, (String, i64)>;

pub fn name_of(id: i64, round: i64) -> String {
    format!("item-{:07}-{round}", (id * 7_919) % 1_000_003)
}

/// Inserts `ids` into `items` (and the model), in one transaction.
pub fn insert(c: &Connection, model: &mut Model, ids: std::ops::RangeInclusive<i64>) {
    let tx = c.unchecked_transaction().unwrap();
    {
        let mut st = tx
            .prepare("INSERT INTO items(id, name, category, note) VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        for id in ids {
            let name = name_of(id, 0);
            st.execute(params![id, name, id % 37, format!("note {id} ").repeat(4)])
                .unwrap();
            model.insert(id, (name, id % 37));
        }
    }
    tx.commit().unwrap();
}

pub fn build_plain(db: &Path, mode: &str, model: &mut Model) {
    let c = Connection::open(db).unwrap();
    c.execute_batch(&format!(
        "PRAGMA page_size = {PAGE}; PRAGMA journal_mode = {mode};
         CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL,
                            category INTEGER NOT NULL, note TEXT);
         CREATE INDEX items_name ON items(name);
         CREATE INDEX items_category ON items(category, name);"
    ))
    .unwrap();
    insert(&c, model, 1..=6_000);
    c.execute_batch("DELETE FROM items WHERE id BETWEEN 2000 AND 3000")
        .unwrap();
    model.retain(|id, _| !(2000..=3000).contains(id));
    if mode == "WAL" {
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
}

/// Updates, deletes, inserts, VACUUM and a checkpoint, through `c`.
pub fn work(c: &Connection, mode: &str, model: &mut Model, round: i64) {
    c.execute(
        "UPDATE items SET name = 'u' || ?1 || '-' || id, note = 'updated' WHERE id % 7 = ?1 % 7",
        params![round],
    )
    .unwrap();
    for (id, row) in model.iter_mut() {
        if id % 7 == round % 7 {
            row.0 = format!("u{round}-{id}");
        }
    }
    c.execute("DELETE FROM items WHERE id % 11 = ?1", params![round % 11])
        .unwrap();
    model.retain(|id, _| id % 11 != round % 11);
    let base = 10_000 + round * 1_000;
    insert(c, model, base..=base + 700);
    c.execute_batch("VACUUM").unwrap();
    if mode == "WAL" {
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
}

/// Every query answers what the model says: a full scan in id order,
/// lookups through each index, a count per category, integrity_check ok.
/// Returns the rows checked.
pub fn check(c: &Connection, model: &Model) -> rusqlite::Result<usize> {
    let mut st = c.prepare("SELECT id, name, category FROM items ORDER BY id")?;
    let rows: Vec<(i64, String, i64)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let want: Vec<(i64, String, i64)> = model
        .iter()
        .map(|(id, (n, cat))| (*id, n.clone(), *cat))
        .collect();
    assert_eq!(rows.len(), want.len(), "row count");
    assert!(rows == want, "rows differ from the model");
    let mut by_name = c.prepare("SELECT id FROM items INDEXED BY items_name WHERE name = ?1")?;
    for (id, (name, _)) in model.iter().step_by(97) {
        let got: i64 = by_name.query_row([name], |r| r.get(0))?;
        assert_eq!(got, *id);
    }
    let mut by_cat =
        c.prepare("SELECT count(*) FROM items INDEXED BY items_category WHERE category = ?1")?;
    for cat in 0..37 {
        let got: i64 = by_cat.query_row([cat], |r| r.get(0))?;
        let want = model.values().filter(|(_, c)| *c == cat).count() as i64;
        assert_eq!(got, want, "category {cat}");
    }
    let integrity: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(integrity, "ok");
    Ok(rows.len())
}

pub fn page_bytes(file: &[u8], page: PageId) -> Vec<u8> {
    file[page.0 as usize * PAGE..(page.0 as usize + 1) * PAGE].to_vec()
}

pub fn write_page(path: &Path, page: PageId, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, page.0 * PAGE as u64).unwrap();
    f.sync_all().unwrap();
}

/// Table leaves of the file at `db` (page ids), in order.
pub fn table_leaves(db: &Path) -> Vec<PageId> {
    let bytes = std::fs::read(db).unwrap();
    (1..(bytes.len() / PAGE) as u64)
        .map(PageId)
        .filter(|p| fmt::btree_kind(*p, &page_bytes(&bytes, *p)) == Some(BtreeKind::LeafTable))
        .collect()
}

/// Damages `pages` of `db` four ways in turn (bit flip, zeroed, junk,
/// another page's bytes); returns the file as it was.
pub fn damage(db: &Path, pages: &[PageId]) -> Vec<u8> {
    let before = std::fs::read(db).unwrap();
    for (i, p) in pages.iter().enumerate() {
        let mut bytes = page_bytes(&before, *p);
        match i % 4 {
            0 => Damage::BitFlip {
                byte: 1_000,
                bit: 3,
            }
            .apply(&mut bytes),
            1 => bytes.fill(0),
            2 => Damage::Junk { seed: i as u64 }.apply(&mut bytes),
            _ => bytes = page_bytes(&before, PageId(p.0 + 1)),
        }
        write_page(db, *p, &bytes);
    }
    before
}
