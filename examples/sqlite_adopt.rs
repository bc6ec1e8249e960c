//! Adopting a real SQLite database: build one (tables, indexes,
//! `secure_delete` and a large delete, so its freelist holds zeroed pages),
//! run SQLite's `quick_check`, adopt the file — once with a durable sidecar
//! checksum table, once with trailers in 16 bytes SQLite reserves at the end
//! of each page — damage
//! pages behind the library's back (page 1, interior index pages, a torn
//! page, a misdirected write, an older version of a page), scrub, repair from
//! a replica copy, and let SQLite's `integrity_check` judge the result.
//!
//! Run: `cargo run --example sqlite_adopt`. Exits non-zero if any check fails.

#[path = "../tests/sqlite_common/mod.rs"]
mod sqlite_common;

fn main() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot make a temporary directory: {e}");
            std::process::exit(2);
        }
    };
    for placement in [
        sqlite_common::Placement::DurableSidecar,
        sqlite_common::Placement::ReservedTrailer,
    ] {
        let sub = dir.path().join(format!("{placement:?}"));
        if let Err(e) = std::fs::create_dir(&sub) {
            eprintln!("cannot make {}: {e}", sub.display());
            std::process::exit(2);
        }
        match sqlite_common::run(&sub, placement, &mut |line| println!("{line}")) {
            Ok(outcome) => {
                println!("ok [{placement:?}]: {}", sqlite_common::describe(&outcome));
            }
            Err(e) => {
                eprintln!("FAILED [{placement:?}]: {e}");
                std::process::exit(1);
            }
        }
    }
}
