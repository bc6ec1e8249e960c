//! The fault plan and the workload of one seed: both drawn up front from
//! the seed, from two separate random streams, so that dropping a fault
//! from the plan (shrinking) leaves the workload as it was.

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use selfheal::testing::{Damage, ReadFault, WriteFault};

/// Pages in the simulated store.
pub const PAGES: u64 = 16;
/// Bytes per page.
pub const PAGE_SIZE: usize = 512;
/// Replicas; replica 0 is the flaky one, replica 1 stays good unless the run
/// has no redundancy.
pub const REPLICAS: usize = 2;

/// The chance that a repair step of a durable-table run gets a
/// [`Fault::TableSyncInRepair`]: about 35 such faults per 1000 seeds.
pub const TABLE_SYNC_IN_REPAIR: f64 = 0.03;

/// Where the checksums live in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// In each page's trailer.
    Trailer,
    /// In an in-memory sidecar table (lost at a crash: such runs never crash).
    SidecarMem,
    /// In a durable sidecar table on a simulated directory.
    SidecarDurable,
}

/// What a transaction does after its writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnEnd {
    /// Sync the store, then commit.
    Commit,
    /// Roll back.
    Abort,
    /// Neither: the process crashes with it in flight.
    InFlight,
}

/// One step of the workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A host write of a whole page through the detector, then a sync.
    Write(u64),
    /// A verified read.
    Read(u64),
    /// A transaction over these pages.
    Txn(Vec<u64>, TxnEnd),
    /// This many scrubber steps.
    Scrub(u32),
    /// A repair of one page.
    Repair(u64),
    /// A repair of every fenced page.
    RepairPending,
    /// A snapshot: incremental or full, paused or from a copied view.
    Snapshot {
        /// Incremental on the head.
        incremental: bool,
        /// Paused consistency (else a point-in-time view).
        paused: bool,
    },
    /// A restore of the newest snapshot the model knows (`back` from the newest).
    Restore(usize),
    /// The clock moves on by this many milliseconds.
    Tick(u64),
    /// Replica 0 leaves (unregistered) and comes back caught up.
    Churn,
}

/// Which on-disk structure a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Structure {
    /// A data page of the store.
    Page,
    /// A replica's copy of a page.
    ReplicaCopy,
    /// The undo journal.
    Journal,
    /// The durable checksum table.
    ChecksumTable,
    /// A snapshot file.
    SnapshotFile,
    /// The snapshot manifest.
    Manifest,
    /// The scrub cursor file.
    ScrubCursor,
    /// The recovery manager's audit log (its segments and durable head).
    AuditLog,
}

impl Structure {
    /// Every structure, in table order.
    pub const ALL: [Structure; 8] = [
        Structure::Page,
        Structure::ReplicaCopy,
        Structure::Journal,
        Structure::ChecksumTable,
        Structure::SnapshotFile,
        Structure::Manifest,
        Structure::ScrubCursor,
        Structure::AuditLog,
    ];
}

/// One fault of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Damage to a page at rest.
    Rot(u64, Damage),
    /// The next write to a page goes wrong.
    Write(u64, WriteFault),
    /// The next `n` reads of a page go wrong.
    Read(u64, ReadFault, u32),
    /// The next store sync fails.
    StoreSync,
    /// The next journal segment sync fails.
    JournalSync,
    /// The next sync of a checksum-table file fails.
    TableSync,
    /// Armed at a step whose op repairs `page`: a host write of the page
    /// fails at the disk (EIO, its version left accepted in the table, of
    /// unknown fate), the page is damaged and fenced, and the next sync of
    /// a checksum-table file fails. The repair must write the page back,
    /// yet logs nothing to the table (it writes a copy the table already
    /// accepts and syncs the store only): it succeeds, and the failed sync
    /// falls on the next host write.
    TableSyncInRepair(u64, Damage),
    /// A replica is down for some steps.
    ReplicaDown(usize, u32),
    /// A replica stops applying writes for some steps (and says so).
    ReplicaLag(usize, u32),
    /// A replica's copy of a page is damaged.
    ReplicaCorrupt(usize, u64, Damage),
    /// The process dies `ops` mutating operations into this step (or at its
    /// end), with unsynced writes lost, reordered or torn as `seed` says.
    Crash {
        /// Mutating operations into the step.
        ops: u64,
        /// Chooses what of the unsynced state survives.
        seed: u64,
    },
    /// A crash, and while the process is down, `structure`'s file gets one
    /// bit flipped (chosen by `seed`).
    FileRot(Structure, u64),
}

impl Fault {
    /// The name of its kind, for the coverage table.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Rot(_, Damage::BitFlip { .. }) => "bit rot",
            Fault::Rot(_, Damage::Zero) => "zeroed",
            Fault::Rot(..) => "junk",
            Fault::Write(_, WriteFault::Torn { .. }) => "torn write",
            Fault::Write(_, WriteFault::Misdirected { .. }) => "misdirected write",
            Fault::Write(_, WriteFault::Lost) => "lost write",
            Fault::Write(_, WriteFault::Eio) => "write EIO",
            Fault::Write(..) => "ENOSPC",
            Fault::Read(_, ReadFault::Eio, _) => "read EIO",
            Fault::Read(..) => "transient flip",
            Fault::StoreSync
            | Fault::JournalSync
            | Fault::TableSync
            | Fault::TableSyncInRepair(..) => "fsync fails",
            Fault::ReplicaDown(..) => "replica down",
            Fault::ReplicaLag(..) => "replica lagging",
            Fault::ReplicaCorrupt(..) => "replica corrupt",
            Fault::Crash { .. } => "crash",
            Fault::FileRot(..) => "file rot",
        }
    }

    /// Every kind, in table order.
    pub const KINDS: [&'static str; 17] = [
        "bit rot",
        "zeroed",
        "junk",
        "torn write",
        "misdirected write",
        "lost write",
        "write EIO",
        "ENOSPC",
        "read EIO",
        "transient flip",
        "fsync fails",
        "replica down",
        "replica lagging",
        "replica corrupt",
        "crash",
        "file rot",
        "none",
    ];

    /// The structure it hits.
    pub fn structure(&self) -> Structure {
        match self {
            Fault::ReplicaDown(..) | Fault::ReplicaLag(..) | Fault::ReplicaCorrupt(..) => {
                Structure::ReplicaCopy
            }
            Fault::JournalSync => Structure::Journal,
            Fault::TableSync | Fault::TableSyncInRepair(..) => Structure::ChecksumTable,
            Fault::FileRot(s, _) => *s,
            _ => Structure::Page,
        }
    }

    /// The page it is about, if any.
    pub fn page(&self) -> Option<u64> {
        match self {
            Fault::Rot(p, _)
            | Fault::Write(p, _)
            | Fault::Read(p, _, _)
            | Fault::ReplicaCorrupt(_, p, _) => Some(*p),
            _ => None,
        }
    }

    /// Whether it kills the process.
    pub fn crashes(&self) -> bool {
        matches!(self, Fault::Crash { .. } | Fault::FileRot(..))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// What a seed runs: its settings, its workload and its fault plan.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The seed it was drawn from.
    pub seed: u64,
    /// The checksum placement.
    pub placement: Placement,
    /// No good copy is promised (faults may hit every replica).
    pub no_redundancy: bool,
    /// One op per step.
    pub ops: Vec<Op>,
    /// Faults, each armed at the start of its step, in step order.
    pub faults: Vec<(usize, Fault)>,
}

fn damage(rng: &mut StdRng) -> Damage {
    match rng.random_range(0..3u8) {
        0 => Damage::BitFlip {
            byte: rng.random_range(0..PAGE_SIZE),
            bit: rng.random_range(0..8),
        },
        1 => Damage::Zero,
        _ => Damage::Junk { seed: rng.random() },
    }
}

fn pages(rng: &mut StdRng) -> Vec<u64> {
    let n = rng.random_range(1..=3);
    let mut v: Vec<u64> = Vec::new();
    while v.len() < n {
        let p = rng.random_range(0..PAGES);
        if !v.contains(&p) {
            v.push(p);
        }
    }
    v
}

fn op(rng: &mut StdRng) -> Op {
    let page = rng.random_range(0..PAGES);
    match rng.random_range(0..100u32) {
        0..30 => Op::Write(page),
        30..45 => Op::Read(page),
        45..58 => Op::Txn(pages(rng), TxnEnd::Commit),
        58..64 => Op::Txn(pages(rng), TxnEnd::Abort),
        64..66 => Op::Txn(pages(rng), TxnEnd::InFlight),
        66..74 => Op::Scrub(rng.random_range(1..8)),
        74..78 => Op::Repair(page),
        78..81 => Op::RepairPending,
        81..88 => Op::Snapshot {
            incremental: rng.random_bool(0.6),
            paused: rng.random_bool(0.5),
        },
        88..91 => Op::Restore(rng.random_range(0..3)),
        91..97 => Op::Tick(rng.random_range(1..5_000)),
        _ => Op::Churn,
    }
}

fn fault(rng: &mut StdRng, placement: Placement, no_redundancy: bool) -> Fault {
    let page = rng.random_range(0..PAGES);
    let replica = if no_redundancy {
        rng.random_range(0..REPLICAS)
    } else {
        0
    };
    let crashes = placement != Placement::SidecarMem;
    loop {
        let f = match rng.random_range(0..100u32) {
            0..12 => Fault::Rot(page, damage(rng)),
            12..17 => Fault::Write(
                page,
                WriteFault::Torn {
                    new_bytes: rng.random_range(1..PAGE_SIZE),
                },
            ),
            17..21 => Fault::Write(
                page,
                WriteFault::Misdirected {
                    to: selfheal::PageId((page + rng.random_range(1..PAGES)) % PAGES),
                },
            ),
            21..26 => Fault::Write(page, WriteFault::Lost),
            26..30 => Fault::Write(page, WriteFault::Eio),
            30..33 => Fault::Write(page, WriteFault::NoSpace),
            33..37 => Fault::Read(page, ReadFault::Eio, rng.random_range(1..3)),
            37..41 => Fault::Read(page, ReadFault::TransientBitFlip, 1),
            41..45 => Fault::StoreSync,
            45..48 => Fault::JournalSync,
            48..51 if placement == Placement::SidecarDurable => Fault::TableSync,
            51..57 => Fault::ReplicaDown(replica, rng.random_range(1..20)),
            57..63 => Fault::ReplicaLag(replica, rng.random_range(1..20)),
            63..72 => Fault::ReplicaCorrupt(replica, page, damage(rng)),
            72..90 if crashes => Fault::Crash {
                ops: rng.random_range(0..12),
                seed: rng.random(),
            },
            // Damage to the journal or the table's files is refused at the
            // next open, which ends the run: rarer, so most runs go on.
            90 if crashes && rng.random_bool(0.3) => {
                Fault::FileRot(Structure::Journal, rng.random())
            }
            91 if crashes && placement == Placement::SidecarDurable && rng.random_bool(0.3) => {
                Fault::FileRot(Structure::ChecksumTable, rng.random())
            }
            92 if crashes => Fault::FileRot(Structure::AuditLog, rng.random()),
            93..96 if crashes => Fault::FileRot(Structure::SnapshotFile, rng.random()),
            96..98 if crashes => Fault::FileRot(Structure::Manifest, rng.random()),
            98..100 if crashes => Fault::FileRot(Structure::ScrubCursor, rng.random()),
            _ => continue,
        };
        // Sync failures of the store and the journal crash the host (it
        // cannot tell what reached the disk), so they need a durable world.
        if !crashes && matches!(f, Fault::StoreSync | Fault::JournalSync) {
            continue;
        }
        return f;
    }
}

impl Plan {
    /// The plan of `seed` with `steps` steps.
    pub fn new(seed: u64, steps: usize) -> Plan {
        let mut rng = StdRng::seed_from_u64(seed);
        let placement = match rng.random_range(0..4u8) {
            0 => Placement::Trailer,
            1 => Placement::SidecarMem,
            2 => Placement::SidecarDurable,
            _ => Placement::Trailer,
        };
        let no_redundancy = rng.random_bool(0.1);
        let ops: Vec<Op> = (0..steps)
            .map(|_| match op(&mut rng) {
                // An in-memory table does not survive a crash: such a run
                // never crashes on purpose.
                Op::Txn(p, TxnEnd::InFlight) if placement == Placement::SidecarMem => {
                    Op::Txn(p, TxnEnd::Abort)
                }
                o => o,
            })
            .collect();
        // The faults come from a stream of their own.
        let mut frng = StdRng::seed_from_u64(seed ^ 0x5EED_FA17_0000_0001);
        let mut faults = Vec::new();
        for step in 0..steps {
            if frng.random_bool(0.25) {
                faults.push((step, fault(&mut frng, placement, no_redundancy)));
            }
        }
        // A table sync failure armed just before a repair that must write,
        // from a third stream so that the two above are drawn as before
        // (`TableSync` fails the first table sync after it, almost always
        // the host's).
        if placement == Placement::SidecarDurable {
            let mut rrng = StdRng::seed_from_u64(seed ^ 0x5EED_FA17_0000_0002);
            for (step, op) in ops.iter().enumerate() {
                if let Op::Repair(p) = op {
                    if rrng.random_bool(TABLE_SYNC_IN_REPAIR) {
                        faults.push((step, Fault::TableSyncInRepair(*p, damage(&mut rrng))));
                    }
                }
            }
            // Stable: a step's faults keep their order.
            faults.sort_by_key(|(step, _)| *step);
        }
        Plan {
            seed,
            placement,
            no_redundancy,
            ops,
            faults,
        }
    }
}
