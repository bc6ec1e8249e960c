//! A page engine that heals itself while faults hit it.
//!
//! Run with `cargo run --release --example self_healing` (options:
//! `--seconds N`, default 20; `--observe`). A small file-backed engine
//! (`self_healing/engine.rs`: a table of key → value slots in 64 pages of a
//! `FileStore`, sealed by the corruption detector, mirrored to a replica
//! file, written in transactions through the undo journal, with a
//! checkpointer thread that sends heartbeats) runs a workload thread under
//! the `AutoRecoveryManager`, while a fault injector hits it:
//!
//! 1. the process is SIGKILLed in the middle of a transaction (the example
//!    runs itself as a child, `self_healing child <dir>`), and the engine is
//!    opened again over the same directory: startup recovery rolls the
//!    loser back;
//! 2. bit rot in a page nobody reads (the scrubber finds it);
//! 3. a torn write of a committed transaction;
//! 4. a lost write of a committed transaction (the page-LSN check finds it);
//! 5. the checkpointer stops beating (hung);
//! 6. two transactions deadlock;
//! 7. the replica is down while a page is repaired (the snapshot serves it);
//! 8. the disk fills (a spill file grows on a simulated volume: its size is
//!    what the engine's files used at open plus 1 GiB, and the health
//!    probe reads the files' lengths).
//!
//! It prints a timeline (one line per fault and per incident event) and a
//! table of the incidents, then checks: every incident healed, every fault
//! found, and every committed write present (the engine's contents against
//! the example's own model). With `--observe` the manager only reports:
//! the check is then that the manager wrote nothing, that every damaged
//! page is byte-for-byte as the fault left it (and still fails
//! verification), that the hung worker still hangs and the spill file is
//! still there, and that the pages no fault touched match the model. It
//! exits non-zero when a check fails.
//!
//! The fault injector uses `selfheal::testing` (`FaultyStore`,
//! `FaultyReplica`, `Damage`, `WriteFault`), as a host's own demo or test
//! would, and the engine wraps its primary file and its replica in those
//! wrappers so that faults can be injected; everything else the engine does
//! goes through the public API a host has.

#[path = "self_healing/engine.rs"]
mod engine;
#[path = "self_healing/faults.rs"]
mod faults;
#[path = "self_healing/report.rs"]
mod report;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use selfheal::prelude::*;

use engine::{Engine, COLD_PAGES, HOT_PAGES, KEYS, SLOTS};
use faults::{commit, now_ns, Fault, FaultFn, Model};
use report::{describe, fault_of, print_table, Log};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() == 2 && args[0] == "child" {
        return child(Path::new(&args[1]));
    }
    let mut seconds = 20u64;
    let mut mode = Mode::Automatic;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--observe" => mode = Mode::Observe,
            "--seconds" => match it.next().and_then(|s| s.parse().ok()) {
                Some(n) if n >= 8 => seconds = n,
                _ => {
                    eprintln!("--seconds needs a whole number of seconds, at least 8");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!(
                    "unknown argument {other:?}; usage: self_healing [--seconds N] [--observe]"
                );
                return ExitCode::from(2);
            }
        }
    }
    match run(seconds, mode) {
        Ok(problems) if problems.is_empty() => {
            println!("\nall checks passed");
            ExitCode::SUCCESS
        }
        Ok(problems) => {
            for p in &problems {
                eprintln!("CHECK FAILED: {p}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The child: opens the engine, commits transactions (acknowledging each on
/// stdout), then begins one more, says so, and waits to be killed.
fn child(dir: &Path) -> ExitCode {
    let r = (|| -> Result<(), String> {
        let engine = Engine::open(dir, Mode::Automatic).map_err(|e| e.to_string())?;
        engine.start().map_err(|e| e.to_string())?;
        let mut rng = StdRng::seed_from_u64(7);
        let mut out = std::io::stdout().lock();
        for _ in 0..40 {
            let w = [
                (hot_key(&mut rng), rng.random()),
                (hot_key(&mut rng), rng.random()),
            ];
            engine.update(&w).map_err(|e| e.to_string())?;
            for (k, v) in w {
                writeln!(out, "ack {k} {v}").map_err(|e| e.to_string())?;
            }
            out.flush().map_err(|e| e.to_string())?;
        }
        let txn = engine.begin().map_err(|e| e.to_string())?;
        let keys = [hot_key(&mut rng), hot_key(&mut rng)];
        for k in keys {
            engine
                .put(txn, k, u64::MAX, Duration::from_secs(1))
                .map_err(|e| e.to_string())?;
        }
        writeln!(out, "in-flight {txn} {} {}", keys[0], keys[1]).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_secs(60));
        Err("the parent did not kill the child".into())
    })();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("child: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hot_key(rng: &mut StdRng) -> u64 {
    rng.random_range(HOT_PAGES.start * SLOTS..HOT_PAGES.end * SLOTS)
}

/// Phase 1: a child commits, is killed mid-transaction; its acknowledged
/// writes go into the model.
fn crash_child(dir: &Path, model: &Model, log: &Log) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("child")
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning the child: {e}"))?;
    let out = child.stdout.take().expect("piped");
    let mut acked = 0;
    let mut in_flight = None;
    for line in BufReader::new(out).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["ack", k, v] => {
                let (Ok(k), Ok(v)) = (k.parse(), v.parse()) else {
                    return Err(format!("unreadable line from the child: {line}"));
                };
                model.lock().insert(k, v);
                acked += 1;
            }
            ["in-flight", t, a, b] => {
                in_flight = Some(format!("transaction {t} (keys {a}, {b})"));
                break;
            }
            _ => return Err(format!("unexpected line from the child: {line}")),
        }
    }
    let Some(txn) = in_flight else {
        let _ = child.wait();
        return Err("the child ended before its last transaction".into());
    };
    child.kill().map_err(|e| e.to_string())?;
    let _ = child.wait();
    log.line(format!(
        "FAULT  process killed (SIGKILL) mid-transaction: child pid {} after {acked} acknowledged writes, {txn} in flight",
        child.id()
    ));
    Ok(())
}

fn run(seconds: u64, mode: Mode) -> Result<Vec<String>, String> {
    let log = Log(Instant::now());
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = tmp.path();
    let model: Model = Arc::default();
    let observe = mode == Mode::Observe;
    println!(
        "self_healing: {seconds} s of faults, {} mode, engine in {}\n",
        if observe { "Observe" } else { "Automatic" },
        dir.display()
    );
    crash_child(dir, &model, &log)?;
    let mut faults = vec![Fault {
        name: "process killed mid-transaction",
        at_ns: now_ns(),
        pages: Vec::new(),
    }];
    let engine = Engine::open(dir, mode).map_err(|e| e.to_string())?;
    let engine = Arc::new(engine);
    let events = engine.manager.subscribe(4_096).map_err(|e| e.to_string())?;
    let report = engine.start().map_err(|e| e.to_string())?;
    log.line(format!(
        "engine restarted over the same directory: previous run {}; startup recovery rolled back {} transaction(s), re-verified {} page(s)",
        report.verdict,
        report.rollback.rolled_back.len(),
        report.pages_verified
    ));
    let mut problems = Vec::new();
    // The child's last transaction was in flight at the kill. In Automatic
    // mode startup recovery rolls back exactly that one; in Observe mode it
    // only reports it (the journal opens report-only) and the host — this
    // example — rolls it back itself before its workload resumes.
    let (rolled, deferred) = (
        report.rollback.rolled_back.len(),
        report.rollback.deferred.len(),
    );
    let expected = if observe { (0, 1) } else { (1, 0) };
    if (rolled, deferred) != expected || !report.verdict.is_crash() {
        problems.push(format!(
            "startup recovery after the kill: verdict {}, {rolled} transaction(s) rolled back and {deferred} deferred (expected a crash, {} and {})",
            report.verdict, expected.0, expected.1
        ));
    }
    if observe {
        let rollback = engine
            .manager
            .rollback_manager()
            .ok_or("the manager has no rollback manager")?;
        for t in &report.rollback.deferred {
            rollback.rollback(t.txn).map_err(|e| e.to_string())?;
            log.line(format!(
                "Observe mode: the host rolled back transaction {} itself, as the startup report asked",
                t.txn
            ));
        }
    }
    let writes_at_start = engine.mirror.manager_writes();

    // The timeline: every incident event, as it comes.
    let printing = Arc::new(AtomicBool::new(true));
    let printer = {
        let (log, printing) = (log.clone(), printing.clone());
        std::thread::Builder::new()
            .name("timeline".into())
            .spawn(move || loop {
                match events.events().recv_timeout(Duration::from_millis(50)) {
                    Ok(e) => log.line(describe(&e)),
                    Err(_) if !printing.load(Ordering::SeqCst) => return,
                    Err(_) => {}
                }
            })
            .map_err(|e| e.to_string())?
    };

    // Cold pages get their keys written once, so that bit rot there has
    // something to lose.
    for p in COLD_PAGES {
        let w: Vec<(u64, u64)> = (0..4).map(|s| (p * SLOTS + s, p * 1_000 + s)).collect();
        commit(&engine, &model, &w)?;
    }

    // The workload: two keys per transaction, on the hot pages.
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let aborts = Arc::new(AtomicU64::new(0));
    let workload = {
        let (engine, model, stop) = (engine.clone(), model.clone(), stop.clone());
        let (commits, aborts) = (commits.clone(), aborts.clone());
        std::thread::Builder::new()
            .name("workload".into())
            .spawn(move || {
                let mut rng = StdRng::seed_from_u64(11);
                while !stop.load(Ordering::SeqCst) {
                    let w = [
                        (hot_key(&mut rng), rng.random()),
                        (hot_key(&mut rng), rng.random()),
                    ];
                    // The model is updated under its lock right after the
                    // commit, before any later writer of these keys.
                    let mut m = model.lock();
                    match engine.update(&w) {
                        Ok(_) => {
                            m.extend(w);
                            commits.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            aborts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    drop(m);
                    let _ = engine.get(hot_key(&mut rng));
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
            .map_err(|e| e.to_string())?
    };

    // The faults, spread over the run.
    let steps: [(&'static str, FaultFn); 7] = [
        ("bit rot", faults::bit_rot),
        ("torn write", faults::torn_write),
        ("lost write", faults::lost_write),
        ("worker stops beating", faults::hung_worker),
        ("deadlock", faults::deadlock),
        ("replica down during a repair", faults::replica_down),
        ("disk fills", faults::disk_fills),
    ];
    let begin = Instant::now();
    let gap = Duration::from_secs(seconds.saturating_sub(4)) / steps.len() as u32;
    for (i, (name, f)) in steps.iter().enumerate() {
        let due = begin + gap * i as u32 + Duration::from_millis(500);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let at_ns = now_ns();
        let pages = f(&engine, &model, &log, observe)?;
        faults.push(Fault { name, at_ns, pages });
    }
    std::thread::sleep(
        (begin + Duration::from_secs(seconds)).saturating_duration_since(Instant::now()),
    );
    stop.store(true, Ordering::SeqCst);
    workload.join().map_err(|_| "the workload panicked")?;
    let settle = if observe { 3 } else { 15 };
    let deadline = Instant::now() + Duration::from_secs(settle);
    while Instant::now() < deadline
        && !(engine.manager.is_idle() && engine.manager.stats().open == 0)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    printing.store(false, Ordering::SeqCst);
    printer
        .join()
        .map_err(|_| "the timeline printer panicked")?;

    // The account.
    let incidents = engine.manager.incidents();
    let stats = engine.manager.stats();
    println!();
    print_table(&engine, &incidents, &faults);
    println!(
        "\n{} incidents: {} healed, {} escalated, {} observed, {} open; MTTR {}; RTO met by {}; workload: {} commits, {} aborted",
        incidents.len(),
        stats.recovered,
        stats.escalated,
        stats.observed,
        stats.open,
        stats.mttr.map_or("-".into(), |d| format!("{d:.1?}")),
        stats
            .rto_compliance()
            .map_or("-".into(), |r| format!("{:.0} % of healed, escalated and overdue incidents", 100.0 * r)),
        commits.load(Ordering::Relaxed),
        aborts.load(Ordering::Relaxed),
    );

    for (i, f) in faults.iter().enumerate() {
        if !incidents.iter().any(|inc| fault_of(inc, &faults) == i) {
            problems.push(format!("the fault `{}` opened no incident", f.name));
        }
    }
    let damaged: Vec<PageId> = faults
        .iter()
        .flat_map(|f| f.pages.iter().map(|p| p.0))
        .collect();
    if observe {
        let writes = engine.mirror.manager_writes() - writes_at_start;
        if writes > 0 {
            problems.push(format!("Observe mode: the manager wrote {writes} page(s)"));
        }
        for inc in &incidents {
            if inc.outcome != Outcome::Observed {
                problems.push(format!(
                    "Observe mode: incident {} ended {}",
                    inc.id,
                    inc.outcome.as_str()
                ));
            }
        }
        for f in &faults {
            for (page, bytes) in &f.pages {
                let mut now = vec![0u8; engine::PAGE_SIZE];
                engine
                    .primary
                    .inner()
                    .read_page(*page, &mut now)
                    .map_err(|e| e.to_string())?;
                if &now != bytes {
                    problems.push(format!(
                        "Observe mode: page {page} ({}) changed after the fault",
                        f.name
                    ));
                }
                if engine
                    .manager
                    .detector()
                    .recheck(*page)
                    .is_ok_and(|v| matches!(v, Verdict::Clean))
                {
                    problems.push(format!(
                        "Observe mode: page {page} ({}) verifies again",
                        f.name
                    ));
                }
            }
        }
        if !engine.checkpointer_hangs() {
            problems.push("Observe mode: the hung checkpointer was restarted".into());
        }
        if engine::spill_files(dir).is_empty() {
            problems.push("Observe mode: the spill file was removed".into());
        }
    } else {
        if stats.open > 0 {
            problems.push(format!("{} incident(s) still open", stats.open));
        }
        for inc in &incidents {
            if !matches!(inc.outcome, Outcome::Healed { .. }) {
                problems.push(format!(
                    "incident {} on {} ended {}",
                    inc.id,
                    inc.target,
                    inc.outcome.as_str()
                ));
            }
        }
        if engine.checkpointer_hangs() {
            problems.push("the checkpointer still hangs".into());
        }
        if !engine::spill_files(dir).is_empty() {
            problems.push("the spill file is still there".into());
        }
    }
    // Every committed write, against the model.
    let model = model.lock();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for key in 0..KEYS {
        let (page, _) = engine::place(key);
        if observe && damaged.contains(&page) {
            continue;
        }
        checked += 1;
        match engine.get(key) {
            Ok(v) if v == model.get(&key).copied() => {}
            Ok(v) => wrong.push(format!(
                "key {key}: the engine holds {v:?}, the last committed write was {:?}",
                model.get(&key)
            )),
            Err(e) => wrong.push(format!("key {key}: {e}")),
        }
    }
    if !wrong.is_empty() {
        problems.push(format!(
            "{} key(s) do not hold their last committed write; the first: {}",
            wrong.len(),
            wrong[..wrong.len().min(3)].join("; ")
        ));
    }
    println!(
        "checked {checked} keys against the model ({} written by committed transactions)",
        model.len()
    );
    drop(model);
    let engine = Arc::into_inner(engine).ok_or("the engine is still shared")?;
    engine.close().map_err(|e| e.to_string())?;
    Ok(problems)
}
