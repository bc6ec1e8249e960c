//! Goal: a process killed with SIGKILL at a random moment loses no committed
//! transaction, leaves no half-done one after recovery, and never gets a
//! transaction id that an earlier run already handed out.
//! Method: the test binary re-executes itself (`child_worker`, selected by an
//! environment variable) to run the stamp workload on real files, kills it
//! after a random delay, reopens the journal (which recovers) and checks the
//! pages against the acknowledged outcomes and the logged ids against each
//! other; several rounds on one directory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use selfheal::testing::{check_stamp_workload, run_stamp_workload};

const CHILD_ENV: &str = "SELFHEAL_ROLLBACK_KILL_CHILD_DIR";

/// The child's work. Without the environment variable (an ordinary test run)
/// there is no child to be, and it returns at once.
#[test]
fn child_worker() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    run_stamp_workload(Path::new(&dir), 1_000_000).expect("child workload");
}

#[test]
fn sigkill_at_a_random_moment_then_recover() {
    let seed: u64 = std::env::var("SELFHEAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (set SELFHEAL_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut commits = 0;
    for round in 0..4 {
        let mut child = Command::new(&exe)
            .args(["child_worker", "--exact", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(150..600)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let check = check_stamp_workload(dir.path())
            .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
        eprintln!("round {round}: {check:?}");
        commits = check.acked_commits;
    }
    assert!(
        commits > 0,
        "seed {seed}: the child never committed anything"
    );
}
