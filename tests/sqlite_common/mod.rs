//! The SQLite adoption scenario shared by `tests/sqlite_adopt.rs` and
//! `examples/sqlite_adopt.rs`: a real database file (SQLite compiled from
//! rusqlite's bundled sources) adopted — with a durable sidecar checksum
//! table, or with trailers written into 16 bytes SQLite reserves at the end
//! of every page — damaged behind the library's back, scrubbed, repaired from
//! a replica copy, and checked by SQLite itself. Every check returns an error
//! that says what failed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;
use selfheal::corruption::{AdoptOptions, AdoptReport};
use selfheal::testing::sqlite::{self, BtreeKind};
use selfheal::testing::Damage;
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, CorruptionDetector, DataRepairer,
    FileStore, PageId, PageStore, RepairConfig, ScrubConfig, StoreReplica, Target,
};

/// SQLite's page size in the scenario.
pub const PAGE: usize = 4096;

/// Where the adopted file's checksums go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A durable sidecar table next to the file; SQLite's format unchanged.
    DurableSidecar,
    /// A trailer in the 16 bytes SQLite reserves at the end of each page
    /// (header byte 20), set when the database is created.
    ReservedTrailer,
}

/// Bytes SQLite reserves at the end of each page for the trailer.
const RESERVED: u8 = 16;

/// What the scenario did and found.
#[derive(Debug)]
pub struct Outcome {
    /// Pages in the database file.
    pub pages: u64,
    /// The adoption report.
    pub adopt: AdoptReport,
    /// Freelist leaves (all zero under `secure_delete`) and trunks.
    pub free_leaves: usize,
    /// Freelist trunk pages.
    pub free_trunks: usize,
    /// Reports of a scrub right after adoption (must be none).
    pub false_alarms: usize,
    /// Pages damaged, by SQLite page number, with the kind of damage.
    pub damaged: BTreeMap<u64, String>,
    /// Pages the scrub reported (SQLite page numbers).
    pub reported: BTreeSet<u64>,
    /// Pages repaired (SQLite page numbers).
    pub repaired: BTreeSet<u64>,
    /// SQLite's `integrity_check` after repair.
    pub integrity: String,
}

type Check<T> = Result<T, String>;

fn sql(e: rusqlite::Error) -> String {
    format!("SQLite: {e}")
}

fn lib(e: selfheal::Error) -> String {
    format!("selfheal: {e}")
}

/// Builds the database: two tables, three indexes (enough rows that each
/// index b-tree has an interior root), `secure_delete` on, then updates and
/// a large delete so that the freelist holds zeroed pages. Returns the
/// root pages of the indexes. `old` receives a copy of the file from before
/// the updates (older versions of pages).
fn build_database(db: &Path, old: &Path, reserve: bool) -> Check<Vec<(String, u32)>> {
    if reserve {
        reserve_trailer_bytes(db)?;
    }
    let c = Connection::open(db).map_err(sql)?;
    c.execute_batch(&format!(
        "PRAGMA page_size = {PAGE};
         PRAGMA journal_mode = DELETE;
         PRAGMA secure_delete = ON;
         CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL,
                            category INTEGER NOT NULL, note TEXT);
         CREATE TABLE tags(item INTEGER NOT NULL, tag TEXT NOT NULL);
         CREATE INDEX items_name ON items(name);
         CREATE INDEX items_category ON items(category, name);
         CREATE INDEX tags_tag ON tags(tag, item);"
    ))
    .map_err(sql)?;
    c.execute_batch("BEGIN").map_err(sql)?;
    {
        let mut item = c
            .prepare("INSERT INTO items(id, name, category, note) VALUES (?1, ?2, ?3, ?4)")
            .map_err(sql)?;
        let mut tag = c
            .prepare("INSERT INTO tags(item, tag) VALUES (?1, ?2)")
            .map_err(sql)?;
        for i in 1..=24_000i64 {
            let name = format!("item-{:06}-{}", (i * 7_919) % 1_000_003, i % 97);
            item.execute(rusqlite::params![
                i,
                name,
                i % 37,
                format!("note {i} ").repeat(3)
            ])
            .map_err(sql)?;
            tag.execute(rusqlite::params![i, format!("tag-{}", i % 1_013)])
                .map_err(sql)?;
        }
    }
    c.execute_batch("COMMIT").map_err(sql)?;
    drop(c);
    std::fs::copy(db, old).map_err(|e| format!("copying the database: {e}"))?;
    let c = Connection::open(db).map_err(sql)?;
    c.execute_batch(
        "PRAGMA secure_delete = ON;
         UPDATE items SET note = 'updated ' || id WHERE id % 10 = 0;
         DELETE FROM tags WHERE item BETWEEN 4000 AND 14000;
         DELETE FROM items WHERE id BETWEEN 4000 AND 14000;",
    )
    .map_err(sql)?;
    let free: i64 = c
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .map_err(sql)?;
    if free == 0 {
        return Err("the deletes left no page on the freelist".into());
    }
    let quick: String = c
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(sql)?;
    if quick != "ok" {
        return Err(format!("quick_check before adoption says {quick}"));
    }
    let mut roots = Vec::new();
    let mut q = c
        .prepare("SELECT name, rootpage FROM sqlite_master WHERE type = 'index' ORDER BY name")
        .map_err(sql)?;
    let rows = q
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))
        .map_err(sql)?;
    for r in rows {
        roots.push(r.map_err(sql)?);
    }
    Ok(roots)
}

/// Creates an empty database whose pages reserve their last 16 bytes: the
/// header's reserved-bytes field (byte 20) set, and page 1's cell content
/// area moved to the new end of the usable space. SQLite then never writes
/// those bytes, and trailer adoption can seal every page in place.
fn reserve_trailer_bytes(db: &Path) -> Check<()> {
    let c = Connection::open(db).map_err(sql)?;
    c.execute_batch(&format!(
        "PRAGMA page_size = {PAGE}; PRAGMA user_version = 1;"
    ))
    .map_err(sql)?;
    drop(c);
    let mut b = std::fs::read(db).map_err(|e| e.to_string())?;
    if b.len() != PAGE || b[20] != 0 {
        return Err(format!(
            "unexpected empty database: {} bytes, reserve {}",
            b.len(),
            b[20]
        ));
    }
    b[20] = RESERVED;
    let usable = (PAGE - usize::from(RESERVED)) as u16;
    b[105..107].copy_from_slice(&usable.to_be_bytes());
    std::fs::write(db, &b).map_err(|e| e.to_string())
}

fn read(store: &dyn PageStore, page: PageId) -> Check<Vec<u8>> {
    let mut b = vec![0u8; PAGE];
    store.read_page(page, &mut b).map_err(lib)?;
    Ok(b)
}

/// Runs the whole scenario in `dir`, telling `log` what it does.
pub fn run(dir: &Path, placement: Placement, log: &mut dyn FnMut(String)) -> Check<Outcome> {
    let db = dir.join("main.db");
    let old = dir.join("old.db");
    let replica_path = dir.join("replica.db");
    let roots = build_database(&db, &old, placement == Placement::ReservedTrailer)?;
    log(format!(
        "[{placement:?}] built {} ({} bytes); quick_check ok; index roots {roots:?}",
        db.display(),
        std::fs::metadata(&db).map_err(|e| e.to_string())?.len()
    ));

    let store = Arc::new(
        FileStore::open(&db, PAGE)
            .map_err(lib)?
            .with_mmap_scan(true),
    );
    let pages = store.page_count();
    let freelist = Arc::new(sqlite::read_freelist(store.as_ref()).map_err(lib)?);
    for leaf in &freelist.leaves {
        if read(store.as_ref(), *leaf)?.iter().any(|&b| b != 0) {
            return Err(format!(
                "freelist leaf {} is not zeroed although secure_delete is on",
                sqlite::sqlite_page(*leaf)
            ));
        }
    }
    log(format!(
        "{pages} pages; freelist: {} trunk(s), {} zeroed leaves",
        freelist.trunks.len(),
        freelist.leaves.len()
    ));

    let checksums = match placement {
        Placement::DurableSidecar => ChecksumPlacement::Sidecar(Arc::new(
            ChecksumTable::open(&dir.join("main.db.sums"), PAGE).map_err(lib)?,
        )),
        Placement::ReservedTrailer => ChecksumPlacement::Trailer,
    };
    let det = Arc::new(
        CorruptionConfig::new(checksums)
            .build(store.clone())
            .map_err(lib)?,
    );
    // The freelist as SQLite has it now: each free page is forgotten, and a
    // later write through the detector (SQLite reusing it) puts it back in use.
    for leaf in &freelist.leaves {
        det.forget(*leaf).map_err(lib)?;
    }
    let started = Instant::now();
    let adopt = det.adopt(AdoptOptions::new()).map_err(lib)?;
    let took = started.elapsed();
    det.sync().map_err(lib)?;
    // The replica: another copy of the adopted file, kept in step by the host.
    std::fs::copy(&db, &replica_path).map_err(|e| format!("copying the replica: {e}"))?;
    log(format!(
        "adopted in {took:?} ({:.0} MiB/s): {} sealed, {} unallocated, {} corrupt",
        adopt.bytes_per_s() / f64::from(1 << 20),
        adopt.sealed,
        adopt.unallocated,
        adopt.corrupt
    ));
    if adopt.corrupt != 0 || adopt.sealed + adopt.unallocated != pages {
        return Err(format!("adoption did not seal every page: {adopt:?}"));
    }
    if adopt.unallocated != freelist.leaves.len() as u64 {
        return Err(format!(
            "{} pages unallocated, the freelist has {} leaves",
            adopt.unallocated,
            freelist.leaves.len()
        ));
    }

    let scrub = |det: &Arc<CorruptionDetector>| -> Check<BTreeSet<u64>> {
        let s = ScrubConfig::new()
            .unlimited()
            .build(det.clone())
            .map_err(lib)?;
        s.scan_range(PageId(0), det.store().page_count())
            .map_err(lib)?;
        Ok(det
            .failures()
            .try_iter()
            .filter_map(|f| match f.target() {
                Target::Page(p) => Some(sqlite::sqlite_page(p)),
                _ => None,
            })
            .collect())
    };
    let false_alarms = scrub(&det)?.len();
    log(format!("scrub after adoption: {false_alarms} reports"));
    if false_alarms != 0 {
        return Err(format!("{false_alarms} false alarms after adoption"));
    }

    // Pages to damage: page 1, interior index pages (the index roots), a
    // leaf of an index, a leaf of a table, and a page SQLite rewrote since
    // the old copy was taken.
    let mut interior_index = Vec::new();
    let mut leaf_index = Vec::new();
    for (name, root) in &roots {
        let p = sqlite::page_id(*root).map_err(lib)?;
        let bytes = read(store.as_ref(), p)?;
        if sqlite::btree_kind(p, &bytes) != Some(BtreeKind::InteriorIndex) {
            return Err(format!("index {name}'s root page {root} is not interior"));
        }
        interior_index.push(p);
        if let Some(child) = sqlite::rightmost_child(p, &bytes) {
            leaf_index.push(child);
        }
    }
    let old_bytes = std::fs::read(&old).map_err(|e| e.to_string())?;
    let mut leaf_table = None;
    let mut changed: Vec<(PageId, Vec<u8>)> = Vec::new();
    for p in 1..pages {
        let page = PageId(p);
        if freelist.is_free(page) || interior_index.contains(&page) || leaf_index.contains(&page) {
            continue;
        }
        let now = read(store.as_ref(), page)?;
        let kind = sqlite::btree_kind(page, &now);
        let before = old_bytes.get(p as usize * PAGE..(p as usize + 1) * PAGE);
        match before {
            // Rewritten by SQLite since the old copy, in both halves.
            Some(b)
                if kind.is_some()
                    && changed.len() < 2
                    && b[..PAGE / 2] != now[..PAGE / 2]
                    && b[PAGE / 2..] != now[PAGE / 2..] =>
            {
                changed.push((page, b.to_vec()));
            }
            _ if leaf_table.is_none() && kind == Some(BtreeKind::LeafTable) => {
                leaf_table = Some(page);
            }
            _ => {}
        }
    }
    let leaf_table = leaf_table.ok_or("no table leaf page found")?;
    if interior_index.len() < 2 || leaf_index.is_empty() || changed.len() < 2 {
        return Err("too few pages of the kinds to damage".into());
    }
    let mut plan: Vec<(PageId, &str, Vec<u8>)> = Vec::new();
    let mut p1 = read(store.as_ref(), PageId(0))?;
    Damage::BitFlip {
        byte: 2_000,
        bit: 3,
    }
    .apply(&mut p1);
    plan.push((PageId(0), "bit flip", p1));
    plan.push((interior_index[0], "zeroed", vec![0u8; PAGE]));
    let mut junk = vec![0u8; PAGE];
    Damage::Junk { seed: 42 }.apply(&mut junk);
    plan.push((interior_index[1], "junk", junk));
    // Torn: the first half of what SQLite wrote last, the second half older.
    let (torn_page, older) = &changed[0];
    let mut torn = read(store.as_ref(), *torn_page)?[..PAGE / 2].to_vec();
    torn.extend_from_slice(&older[PAGE / 2..]);
    plan.push((*torn_page, "torn", torn));
    // Misdirected: the bytes of another page written here.
    plan.push((
        leaf_index[0],
        "misdirected",
        read(store.as_ref(), leaf_table)?,
    ));
    // An older version of the page: a lost write.
    let (stale_page, stale) = &changed[1];
    plan.push((*stale_page, "older version", stale.clone()));
    let mut damaged = BTreeMap::new();
    for (page, what, bytes) in &plan {
        // Behind the library's back: the raw store, not the detector.
        store.write_page(*page, bytes).map_err(lib)?;
        damaged.insert(sqlite::sqlite_page(*page), (*what).to_string());
    }
    store.sync().map_err(lib)?;
    log(format!("damaged behind the library's back: {damaged:?}"));

    let reported = scrub(&det)?;
    log(format!("scrub reported pages {reported:?}"));
    let expected: BTreeSet<u64> = damaged.keys().copied().collect();
    if reported != expected {
        return Err(format!("scrub reported {reported:?}, damaged {expected:?}"));
    }

    let replica = Arc::new(FileStore::open(&replica_path, PAGE).map_err(lib)?);
    let repairer: DataRepairer = RepairConfig::new().build(det.clone()).map_err(lib)?;
    repairer
        .add_replica(Arc::new(StoreReplica::new("replica", replica)))
        .map_err(lib)?;
    let started = Instant::now();
    let reports = repairer.repair_all();
    let mut repaired = BTreeSet::new();
    for r in &reports {
        if !r.is_repaired() {
            return Err(format!("page {} was not repaired: {:?}", r.page, r.outcome));
        }
        repaired.insert(sqlite::sqlite_page(r.page));
    }
    log(format!(
        "repaired {repaired:?} from the replica in {:?}",
        started.elapsed()
    ));
    if repaired != expected {
        return Err(format!("repaired {repaired:?}, damaged {expected:?}"));
    }
    if !scrub(&det)?.is_empty() {
        return Err("a scrub after repair still reports pages".into());
    }
    store.sync().map_err(lib)?;
    drop(repairer);
    drop(det);
    drop(store);

    let c = Connection::open(&db).map_err(sql)?;
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sql)?;
    let rows: i64 = c
        .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .map_err(sql)?;
    drop(c);
    log(format!(
        "SQLite integrity_check: {integrity}; {rows} rows in items"
    ));
    if integrity != "ok" {
        return Err(format!("integrity_check after repair says {integrity}"));
    }
    let a = std::fs::read(&db).map_err(|e| e.to_string())?;
    let b = std::fs::read(&replica_path).map_err(|e| e.to_string())?;
    if a != b {
        return Err("the repaired file differs from the replica".into());
    }
    log("the repaired file is byte-identical to the replica".into());
    Ok(Outcome {
        pages,
        adopt,
        free_leaves: freelist.leaves.len(),
        free_trunks: freelist.trunks.len(),
        false_alarms,
        damaged,
        reported,
        repaired,
        integrity,
    })
}

/// A one-paragraph summary of the outcome, for the example's output.
pub fn describe(o: &Outcome) -> String {
    format!(
        "{} pages ({} freelist leaves, {} trunks); adoption took {:?} ({:.0} MiB/s); \
         {} false alarms; damaged {:?}; reported {:?}; repaired {:?}; integrity_check {}",
        o.pages,
        o.free_leaves,
        o.free_trunks,
        o.adopt.duration,
        o.adopt.bytes_per_s() / f64::from(1 << 20),
        o.false_alarms,
        o.damaged,
        o.reported,
        o.repaired,
        o.integrity
    )
}
