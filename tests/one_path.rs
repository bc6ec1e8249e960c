//! Goal: no item of the crate is reachable by two public paths through a
//! module and its own submodule (`healer::Problem` and
//! `healer::diagnose::Problem`). Method: read every source file; a module
//! that re-exports items of a child (`pub use child::…`, `pub use
//! super::child::…`, `pub use crate::…::child::…` naming a public module)
//! must have declared that child private (`mod child;`). The crate root's
//! own re-exports (the small root and the prelude) are the designed entry
//! points and are left out.

use std::fs;
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The names of the modules a file declares `pub mod name;`.
fn public_children(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .filter_map(|r| r.strip_suffix(';'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_module_re_exports_from_a_public_child() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut twice = Vec::new();
    for f in &files {
        if f == &root.join("lib.rs") {
            continue;
        }
        let text = fs::read_to_string(f).unwrap();
        for child in public_children(&text) {
            let reexports = text.lines().any(|l| {
                let l = l.trim();
                l.starts_with(&format!("pub use {child}::"))
                    || l.starts_with(&format!("pub use self::{child}::"))
            });
            if reexports {
                twice.push(format!(
                    "{}: `pub mod {child}` and `pub use {child}::…`",
                    f.display()
                ));
            }
        }
    }
    assert!(
        twice.is_empty(),
        "items with two public paths:\n{}",
        twice.join("\n")
    );
}

#[test]
fn the_page_crc_and_the_free_page_callback_have_one_path_each() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let checksum = fs::read_to_string(root.join("checksum/mod.rs")).unwrap();
    assert!(!checksum.contains("\npub use crate::digest::page_crc;"));
    let free = fs::read_to_string(root.join("corruption/free.rs")).unwrap();
    assert!(!free.contains("\npub use super::free_map::FreePageFn;"));
}
