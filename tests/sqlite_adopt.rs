//! Goal: the library protects a real SQLite database that existed before it:
//! adoption — with a durable sidecar table, or with trailers in the bytes
//! SQLite reserves at the end of each page — raises no false alarm (not even for the
//! zeroed freelist pages `secure_delete` leaves), every kind of damage done
//! behind its back is found and repaired from a replica copy, and SQLite's
//! own `integrity_check` then says `ok` with the file byte-identical to the
//! replica. Method: the scenario in `tests/sqlite_common` (shared with
//! `examples/sqlite_adopt.rs`) over SQLite compiled from rusqlite's bundled
//! sources; the freelist is read from the file with `testing::sqlite`.

#[path = "sqlite_common/mod.rs"]
mod sqlite_common;

fn adopt_scrub_and_repair(placement: sqlite_common::Placement) {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    let outcome = sqlite_common::run(dir.path(), placement, &mut |l| lines.push(l))
        .unwrap_or_else(|e| panic!("{e}\n{}", lines.join("\n")));
    assert_eq!(outcome.false_alarms, 0);
    assert!(outcome.free_leaves > 10, "{outcome:?}");
    assert_eq!(outcome.adopt.unallocated as usize, outcome.free_leaves);
    assert_eq!(outcome.damaged.len(), 6, "{outcome:?}");
    assert!(
        outcome.damaged.contains_key(&1),
        "page 1 is among the damaged"
    );
    let damaged: std::collections::BTreeSet<u64> = outcome.damaged.keys().copied().collect();
    assert_eq!(outcome.reported, damaged);
    assert_eq!(outcome.repaired, damaged);
    assert_eq!(outcome.integrity, "ok");
    assert!(sqlite_common::describe(&outcome).contains("integrity_check ok"));
}

#[test]
fn a_sqlite_database_with_a_durable_sidecar_table() {
    adopt_scrub_and_repair(sqlite_common::Placement::DurableSidecar);
}

#[test]
fn a_sqlite_database_with_trailers_in_its_reserved_bytes() {
    adopt_scrub_and_repair(sqlite_common::Placement::ReservedTrailer);
}
