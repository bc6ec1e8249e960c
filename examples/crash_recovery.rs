//! Kills a process in the middle of its transactions and shows that recovery
//! rolls back exactly what was in flight.
//!
//! Run with `cargo run --example crash_recovery`. The
//! example starts itself as a child (`crash_recovery child <dir>`), which
//! runs transactions on a file store with an undo journal; the parent kills
//! it with SIGKILL, reopens the journal — which rolls back the transactions
//! in flight — prints what was rolled back, and checks that every
//! acknowledged commit is present, nothing half-done is, and no transaction
//! id was handed out twice (ids jump at each restart: a restart skips the
//! rest of the block of ids the last run reserved). It exits with a
//! non-zero status if the check fails.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use selfheal::testing::{check_stamp_workload, run_stamp_workload};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "child" {
        return match run_stamp_workload(Path::new(&args[2]), 1_000_000) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot make a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let exe = std::env::current_exe().expect("own path");
    for round in 1..=3 {
        let mut child = Command::new(&exe)
            .arg("child")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the child");
        std::thread::sleep(Duration::from_millis(200 + 150 * round));
        child.kill().expect("SIGKILL the child");
        let _ = child.wait();
        match check_stamp_workload(dir.path()) {
            Ok(check) => {
                println!(
                    "round {round}: killed the child after {} acknowledged commits and {} rollbacks",
                    check.acked_commits, check.acked_rollbacks
                );
                if check.rolled_back.is_empty() {
                    println!("  recovery: nothing was in flight");
                } else {
                    let ids: Vec<String> =
                        check.rolled_back.iter().map(ToString::to_string).collect();
                    println!("  recovery rolled back transaction(s) {}", ids.join(", "));
                }
                if let Some((txn, survived)) = check.in_doubt {
                    println!(
                        "  transaction {txn} was unacknowledged at the kill; its changes {}",
                        if survived {
                            "survived (its commit record was durable)"
                        } else {
                            "are gone"
                        }
                    );
                }
                println!(
                    "  check passed: every acknowledged commit present, nothing half-done, no id handed out twice"
                );
            }
            Err(e) => {
                eprintln!("round {round}: CHECK FAILED: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
