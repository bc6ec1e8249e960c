//! Adopting a real SQLite database: build one (tables, indexes,
//! `secure_delete` and a large delete, so its freelist holds zeroed pages),
//! run SQLite's `quick_check`, adopt the file with sidecar checksums, damage
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
    match sqlite_common::run(dir.path(), &mut |line| println!("{line}")) {
        Ok(outcome) => {
            println!("ok: {}", sqlite_common::describe(&outcome));
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            std::process::exit(1);
        }
    }
}
