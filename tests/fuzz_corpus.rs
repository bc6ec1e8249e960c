//! Goal: every fuzz target's committed corpus (`fuzz/corpus/<target>/`) runs
//! through the target's body on stable Rust in the normal suite, and the
//! seed generator still writes inputs the targets take.
//! Method: each committed file is fed to `selfheal::testing::fuzz::run` (the
//! code the `fuzz/` binaries run, properties included: a property broken is
//! a panic, so a failing file names a bug); the seeds are regenerated and fed
//! the same way. `SELFHEAL_WRITE_FUZZ_SEEDS=1 cargo test --features testing
//! --test fuzz_corpus` rewrites the committed seeds (`seed-<n>` files).

use std::path::PathBuf;

use selfheal::testing::fuzz::{run, seeds, TARGETS};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target)
}

#[test]
fn every_committed_corpus_file_runs_through_its_target() {
    for (target, _) in TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("no corpus for {target} at {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "the corpus of {target} is empty");
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                bytes.len() <= 16 * 1024,
                "{} is {} bytes: keep the corpus small",
                f.display(),
                bytes.len()
            );
            assert!(run(target, &bytes), "no target {target}");
        }
    }
}

#[test]
fn seeds_cover_every_target_and_run_through_it() {
    let seeds = seeds().unwrap();
    let names: Vec<&str> = seeds.iter().map(|(n, _)| *n).collect();
    let targets: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, targets);
    let write = std::env::var_os("SELFHEAL_WRITE_FUZZ_SEEDS").is_some();
    for (target, inputs) in seeds {
        assert!(!inputs.is_empty(), "{target} has no seed");
        let dir = corpus_dir(target);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
        }
        for (i, input) in inputs.iter().enumerate() {
            assert!(run(target, input));
            if write {
                std::fs::write(dir.join(format!("seed-{i}")), input).unwrap();
            }
        }
    }
}
