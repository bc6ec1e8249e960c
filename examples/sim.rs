//! The deterministic simulator from the command line: `--seed N` runs (and
//! on failure shrinks) one seed and prints its trace with `--trace`;
//! `--seed N --plan` prints its fault plan without running it;
//! `--seeds N [--from S]` runs many and prints the fault coverage table.
//! Exits non-zero when any seed breaks an invariant, and — in a run of 1000
//! seeds or more — when a coverage cell the plan can produce is zero.

#[allow(dead_code)]
#[path = "../tests/sim/engine/mod.rs"]
mod engine;

use std::time::{Duration, Instant};

use engine::plan::Plan;
use engine::{failure_report, run_with_budget, Coverage, STEPS};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Option<u64> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let trace = args.iter().any(|a| a == "--trace");
    let budget = Duration::from_secs(value("--budget-s").unwrap_or(120));
    if let Some(seed) = value("--seed") {
        let mut plan = Plan::new(seed, STEPS);
        if args.iter().any(|a| a == "--shrunk") {
            plan = engine::shrink(&plan);
        }
        if args.iter().any(|a| a == "--plan") {
            println!("seed {seed}: {:?} placement", plan.placement);
            for (step, f) in &plan.faults {
                println!("  step {step:>3} (op {:?}): {f}", plan.ops[*step]);
            }
            return;
        }
        let o = run_with_budget(&plan, budget);
        if trace {
            for l in &o.trace {
                println!("{l}");
            }
        }
        if o.failed() {
            eprintln!("{}", failure_report(&o));
            std::process::exit(1);
        }
        println!("seed {seed}: ok ({:?}, {} restarts)", o.end, o.restarts);
        return;
    }
    let n = value("--seeds").unwrap_or(100);
    let from = value("--from").unwrap_or(0);
    let started = Instant::now();
    let mut cov = Coverage::default();
    let mut failed = 0u64;
    let mut refused = 0u64;
    let mut restarts = 0u64;
    for seed in from..from + n {
        let o = run_with_budget(&Plan::new(seed, STEPS), budget);
        cov.add(&o);
        restarts += o.restarts;
        if o.end != engine::world::End::Completed {
            refused += 1;
            if args.iter().any(|a| a == "--why") {
                eprintln!("seed {seed}: {:?}", o.end);
            }
        }
        if o.failed() {
            failed += 1;
            eprintln!("{}", failure_report(&o));
        }
    }
    println!("{}", cov.table());
    println!(
        "{n} seeds ({from}..{}) in {:.1?}: {failed} failed, {refused} ended at a refused open, {restarts} restarts",
        from + n,
        started.elapsed()
    );
    // A long run (1000 seeds or more) fails on a zero cell the plan can produce.
    let missing = cov.missing();
    if n >= 1_000 && !missing.is_empty() {
        eprintln!(
            "{} cells the plan can produce were never hit: {missing:?}",
            missing.len()
        );
        std::process::exit(1);
    }
    if failed > 0 {
        std::process::exit(1);
    }
}
