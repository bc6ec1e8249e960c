//! A deterministic simulator of the library: one `u64` seed draws a workload
//! and a fault plan ([`plan`]), a [`world`](world::World) runs them against
//! the real components over simulated disks, replicas, directories and a
//! manual clock, and a [`model`] says after every step what every page must
//! and may hold. The components are owned by an `AutoRecoveryManager` in
//! Automatic mode, which heals what they report. The same seed replays the
//! same run byte for byte: everything is driven one call at a time from one
//! thread (the manager by its step mode, scrubs by `Scrubber::step`, repairs
//! and heals on read inline, snapshots on one thread, the journal's idle
//! mark thread kept idle by a 60 s delay no run reaches).
//!
//! Invariants, checked after every step and at the end:
//! - no acknowledged write or commit is lost, and no write that was never
//!   acknowledged (an in-flight transaction's, after recovery) is visible:
//!   every verified read returns the page's acknowledged version or one
//!   written since and not yet acknowledged;
//! - no read returns bytes that fail verification (the same check: such
//!   bytes are no version the model knows);
//! - every page a repair reports repaired reads back as the model's, and
//!   every page of an incident the manager closed reads back as the model
//!   allows;
//! - every incident ends healed or escalated (at the end, past every
//!   cooldown, none is open);
//! - a good copy is never overwritten by a bad one, and an older copy never
//!   replaces a newer acknowledged write (the same check, after repairs);
//! - with redundancy (replica 1 is never faulted), every page is readable
//!   at the end;
//! - every snapshot reads back as it was taken;
//! - no step panics (each runs under `catch_unwind`), and no run hangs (the
//!   runner gives each seed a wall-time budget).

pub mod model;
pub mod plan;
pub mod world;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

use plan::{Fault, Plan, Structure};
use world::{Component, End, World, COMPONENTS};

/// Steps per seed.
pub const STEPS: usize = 120;

/// What one run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// How it ended.
    pub end: End,
    /// Invariants that failed (a panic is one).
    pub violations: Vec<String>,
    /// SHA-256 of the trace and the final state.
    pub digest: Vec<u8>,
    /// The trace.
    pub trace: Vec<String>,
    /// Coverage: (fault kind, structure, component) → faults seen so.
    pub coverage: BTreeMap<(&'static str, Structure, Component), u64>,
    /// Faults armed, by kind and structure.
    pub armed: BTreeMap<(&'static str, Structure), u64>,
    /// Restarts (crashes) in the run.
    pub restarts: u64,
}

impl Outcome {
    /// Whether an invariant failed.
    pub fn failed(&self) -> bool {
        !self.violations.is_empty()
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs `plan` (the plan of its seed, possibly shrunk).
pub fn run_plan(plan: &Plan) -> Outcome {
    let mut by_step: BTreeMap<usize, Vec<Fault>> = BTreeMap::new();
    for (s, f) in &plan.faults {
        by_step.entry(*s).or_default().push(f.clone());
    }
    let mut violations = Vec::new();
    let built = catch_unwind(AssertUnwindSafe(|| World::new(plan.clone())));
    let mut w = match built {
        Ok(w) => w,
        Err(p) => {
            return Outcome {
                seed: plan.seed,
                end: End::Completed,
                violations: vec![format!("panic building the world: {}", panic_text(&*p))],
                digest: Vec::new(),
                trace: Vec::new(),
                coverage: BTreeMap::new(),
                armed: BTreeMap::new(),
                restarts: 0,
            };
        }
    };
    let mut open: Vec<(Fault, BTreeSet<Component>)> = Vec::new();
    let mut coverage = BTreeMap::new();
    let mut armed = BTreeMap::new();
    let mut end = End::Completed;
    let credit =
        |w: &World,
         open: &mut Vec<(Fault, BTreeSet<Component>)>,
         coverage: &mut BTreeMap<(&'static str, Structure, Component), u64>| {
            for (f, seen) in open.iter_mut() {
                for o in &w.observed {
                    let hit = match (f.page(), &*f) {
                        (
                            Some(p),
                            Fault::Write(_, selfheal::testing::WriteFault::Misdirected { to }),
                        ) => o.page == Some(p) || o.page == Some(to.0),
                        (Some(p), _) => o.page == Some(p) && o.structure != Structure::Journal,
                        (None, _) => o.structure == f.structure(),
                    };
                    if hit && seen.insert(o.component) {
                        *coverage
                            .entry((f.kind(), f.structure(), o.component))
                            .or_insert(0) += 1;
                    }
                }
            }
        };
    for i in 0..plan.ops.len() {
        let faults = by_step.get(&i).cloned().unwrap_or_default();
        for f in &faults {
            *armed.entry((f.kind(), f.structure())).or_insert(0) += 1;
            open.push((f.clone(), BTreeSet::new()));
        }
        match catch_unwind(AssertUnwindSafe(|| w.step(i, &faults))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                credit(&w, &mut open, &mut coverage);
                end = e;
                break;
            }
            Err(p) => {
                violations.push(format!("panic in step {i}: {}", panic_text(&*p)));
                break;
            }
        }
        credit(&w, &mut open, &mut coverage);
        if !w.violations.is_empty() {
            break;
        }
    }
    if violations.is_empty() && w.violations.is_empty() && end == End::Completed {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| w.finish())) {
            violations.push(format!("panic at the end: {}", panic_text(&*p)));
        }
        credit(&w, &mut open, &mut coverage);
    }
    violations.extend(w.violations.iter().cloned());
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for line in &w.trace {
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    h.update(w.state_digest());
    Outcome {
        seed: plan.seed,
        end,
        violations,
        digest: h.finalize().to_vec(),
        trace: w.trace.clone(),
        coverage,
        armed,
        restarts: w.restarts,
    }
}

/// Runs `seed` with [`STEPS`] steps.
pub fn run_seed(seed: u64) -> Outcome {
    run_plan(&Plan::new(seed, STEPS))
}

/// Runs `plan` on a thread of its own and gives up after `budget` (a hang
/// is a failure of the seed).
pub fn run_with_budget(plan: &Plan, budget: Duration) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let p = plan.clone();
    std::thread::Builder::new()
        .name(format!("sim-seed-{}", plan.seed))
        .spawn(move || {
            let _ = tx.send(run_plan(&p));
        })
        .expect("spawn");
    match rx.recv_timeout(budget) {
        Ok(o) => o,
        Err(_) => Outcome {
            seed: plan.seed,
            end: End::Completed,
            violations: vec![format!("hang: the run took more than {budget:?}")],
            digest: Vec::new(),
            trace: Vec::new(),
            coverage: BTreeMap::new(),
            armed: BTreeMap::new(),
            restarts: 0,
        },
    }
}

/// Drops faults one at a time while the run still fails, and returns the
/// smallest failing plan found.
pub fn shrink(plan: &Plan) -> Plan {
    let mut best = plan.clone();
    let mut i = 0;
    while i < best.faults.len() {
        let mut candidate = best.clone();
        candidate.faults.remove(i);
        if run_plan(&candidate).failed() {
            best = candidate;
        } else {
            i += 1;
        }
    }
    best
}

/// The report of a failing seed: the replay command, the invariants that
/// failed, and the shrunk fault plan.
pub fn failure_report(o: &Outcome) -> String {
    let plan = Plan::new(o.seed, STEPS);
    let small = shrink(&plan);
    let mut s = format!(
        "seed {} failed ({:?} placement{}):\n",
        o.seed,
        plan.placement,
        if plan.no_redundancy {
            ", no redundancy"
        } else {
            ""
        }
    );
    for v in &o.violations {
        s += &format!("  invariant: {v}\n");
    }
    s += &format!(
        "  replay: cargo run --example sim -- --seed {}\n  or:     SIM_SEED={} cargo test --test sim replay_one_seed -- --nocapture\n",
        o.seed, o.seed
    );
    s += &format!(
        "  shrunk fault plan ({} of {} faults):\n",
        small.faults.len(),
        plan.faults.len()
    );
    for (step, f) in &small.faults {
        s += &format!("    step {step:>3} (op {:?}): {f}\n", plan.ops[*step]);
    }
    s
}

/// Coverage over many runs.
#[derive(Debug, Default)]
pub struct Coverage {
    /// (fault kind, structure, component) → faults seen so.
    pub cells: BTreeMap<(&'static str, Structure, Component), u64>,
    /// (fault kind, structure) → faults armed.
    pub armed: BTreeMap<(&'static str, Structure), u64>,
}

impl Coverage {
    /// Adds a run.
    pub fn add(&mut self, o: &Outcome) {
        for (k, v) in &o.coverage {
            *self.cells.entry(*k).or_insert(0) += v;
        }
        for (k, v) in &o.armed {
            *self.armed.entry(*k).or_insert(0) += v;
        }
    }

    /// The cells of armed rows that are zero although the plan can produce
    /// them (see [`by_construction`]): a long run fails on any.
    pub fn missing(&self) -> Vec<String> {
        let mut v = Vec::new();
        for &(kind, st) in self.armed.keys() {
            for c in COMPONENTS {
                let n = self.cells.get(&(kind, st, c)).copied().unwrap_or(0);
                if n == 0 && by_construction(kind, st, c).is_none() {
                    v.push(format!("{kind} × {st:?} × {c}"));
                }
            }
        }
        v
    }

    /// The table: one row per fault kind and structure the plan arms, a
    /// column per component; then the zero cells listed, those that
    /// cannot occur by construction with the reason.
    pub fn table(&self) -> String {
        let mut s = format!("{:<18} {:<14} {:>7}", "fault", "structure", "armed");
        for c in COMPONENTS {
            s += &format!(" {c:>9}");
        }
        s += "\n";
        let mut zeros = Vec::new();
        for (&(kind, st), armed) in &self.armed {
            s += &format!("{kind:<18} {:<14} {armed:>7}", format!("{st:?}"));
            for c in COMPONENTS {
                let n = self.cells.get(&(kind, st, c)).copied().unwrap_or(0);
                if n == 0 {
                    match by_construction(kind, st, c) {
                        Some(_) => s += &format!(" {:>9}", "-"),
                        None => {
                            s += &format!(" {n:>9}");
                            zeros.push(format!("{kind} × {st:?} × {c}"));
                        }
                    }
                } else {
                    s += &format!(" {n:>9}");
                }
            }
            s += "\n";
        }
        s += &format!("zero cells the plan can produce ({}):\n", zeros.len());
        for z in zeros {
            s += &format!("  {z}\n");
        }
        s += "cells that cannot occur by construction (shown as -):\n";
        for r in REASONS {
            s += &format!("  {r}\n");
        }
        s
    }
}

const TABLE_ONLY: &str = "table column, every structure but ChecksumTable: the table is credited only when the durable table refuses to open, about its own files";
const OWNER_ONLY: &str = "file rot of a file, every column but its owner's (Journal: rollback, SnapshotFile and Manifest: snapshots, ScrubCursor: scrubber, ChecksumTable: table, AuditLog: healer, the recovery manager's): no other component reads the file";
const JOURNAL_SYNC: &str =
    "fsync fails × Journal, every column but rollback: only the undo journal syncs its segments";
const TABLE_SYNC: &str = "fsync fails × ChecksumTable × scrubber, repairer, healer: the scrubber never writes; a repair writes a copy the table already accepts straight to the store and syncs the store only, never a table file (TableSyncInRepair arms the failure just before a repair that must write: the repair succeeds and the failure falls on the next host write); the healer is credited with the pages of its incidents only";
const REPLICA_STATE: &str = "replica down and replica lagging, every column but repairer: only the repairer talks to replicas (the healer is credited with its incidents' pages only)";
const REASONS: [&str; 5] = [
    TABLE_ONLY,
    OWNER_ONLY,
    JOURNAL_SYNC,
    TABLE_SYNC,
    REPLICA_STATE,
];

/// Why the cell (fault kind × structure × component) cannot be hit, if it
/// cannot by construction of the plan and of the world.
pub fn by_construction(kind: &str, st: Structure, c: Component) -> Option<&'static str> {
    if c == "table" {
        return (st != Structure::ChecksumTable).then_some(TABLE_ONLY);
    }
    match (kind, st) {
        ("file rot", _) => {
            let owner = match st {
                Structure::Journal => "rollback",
                Structure::SnapshotFile | Structure::Manifest => "snapshots",
                Structure::ScrubCursor => "scrubber",
                Structure::AuditLog => "healer",
                _ => "table",
            };
            (c != owner).then_some(OWNER_ONLY)
        }
        ("fsync fails", Structure::Journal) => (c != "rollback").then_some(JOURNAL_SYNC),
        ("fsync fails", Structure::ChecksumTable) => {
            matches!(c, "scrubber" | "repairer" | "healer").then_some(TABLE_SYNC)
        }
        ("replica down" | "replica lagging", _) => (c != "repairer").then_some(REPLICA_STATE),
        _ => None,
    }
}
