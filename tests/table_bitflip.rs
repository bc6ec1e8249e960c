//! Goal: one bit flipped, after its fsync, in the newest block of a durable
//! checksum table's log — which no later append vouches for, so that it
//! looked like a torn tail — loses no checksum: the page's acknowledged
//! bytes still verify, and a damaged page is still healed from a replica;
//! while a tail a crash genuinely tore is still dropped quietly. Method: a
//! `CrashStore` and a `CrashFiles` image with real sealed pages and one
//! replica; write and sync, crash keeping durable bytes only (the sync's
//! lazily written settle record is lost, so the newest durable frame holds
//! the only checksum of the acknowledged write), flip one bit in either
//! copy of that frame, damage the local page, reopen and repair. The
//! trailer placement, which has no table, runs the same steps as the
//! reference (nothing to flip). The torn tail comes from a failed log fsync
//! and a crash keeping a random part of the unsynced append.

use std::sync::Arc;

use selfheal::checksum::TableConfig;
use selfheal::repair::{CopySource, RepairConfig, RepairOutcome};
use selfheal::testing::{CrashFiles, CrashStore};
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, CorruptionDetector, Error, MemStore,
    PageId, PageStore, ReplicaId, StoreReplica,
};

const PS: usize = 256;
const PAGES: u64 = 4;
const PAGE: PageId = PageId(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    Trailer,
    Sidecar,
}

/// Where the flipped bit goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flip {
    /// The newest frame itself (its records).
    Frame,
    /// The newest frame's header (its length and sequence number).
    FrameHeader,
    /// The newest frame's mirror.
    Mirror,
}

fn contents(version: u8) -> Vec<u8> {
    (0..PS)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(version))
        .collect()
}

fn start(
    placement: Placement,
    store: &Arc<CrashStore>,
    files: &Arc<CrashFiles>,
) -> Result<(Arc<CorruptionDetector>, Option<Arc<ChecksumTable>>), Error> {
    let (p, table) = match placement {
        Placement::Sidecar => {
            let t = Arc::new(TableConfig::new(PS).open_on(files.clone(), "sums")?);
            (ChecksumPlacement::Sidecar(t.clone()), Some(t))
        }
        Placement::Trailer => (ChecksumPlacement::Trailer, None),
    };
    let det = CorruptionConfig::new(p).build(store.clone())?;
    Ok((Arc::new(det), table))
}

/// The name of the table's one log file.
fn log_file(files: &CrashFiles) -> String {
    let logs: Vec<String> = files
        .names()
        .into_iter()
        .filter(|n| n.starts_with("sums.log-"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    logs[0].clone()
}

/// Offset and length of the newest frame of a log: the file ends with the
/// frame and its mirror, two equal copies whose first 8 bytes say their
/// length.
fn newest_frame(log: &[u8]) -> (usize, usize) {
    let n = log.len();
    (32..=n / 2)
        .find(|&len| {
            let at = n - 2 * len;
            log[at..n - len] == log[n - len..]
                && u64::from_le_bytes(log[at..at + 8].try_into().unwrap()) == len as u64
        })
        .map(|len| (n - 2 * len, len))
        .expect("the log ends with a frame and its mirror")
}

/// Writes every page, then the acknowledged version of `PAGE` (the replica
/// gets every page), syncs, and crashes keeping only durable bytes.
fn acknowledged_then_crash(
    placement: Placement,
) -> (Arc<CrashStore>, Arc<CrashFiles>, Arc<MemStore>, Vec<u8>) {
    let store = Arc::new(CrashStore::new(PS, PAGES).unwrap());
    let files = Arc::new(CrashFiles::new());
    let mirror = Arc::new(MemStore::new(PS, PAGES).unwrap());
    let (det, table) = start(placement, &store, &files).unwrap();
    for p in 0..PAGES {
        let mut b = contents(p as u8);
        det.write_sealed(PageId(p), &mut b).unwrap();
        mirror.write_page(PageId(p), &b).unwrap();
    }
    det.sync().unwrap();
    let mut acked = contents(10);
    det.write_sealed(PAGE, &mut acked).unwrap();
    mirror.write_page(PAGE, &acked).unwrap();
    det.sync().unwrap();
    // The image taken while the process lives: the sync's settle record was
    // only buffered, so the newest durable frame holds the only checksum of
    // the acknowledged bytes.
    let store = Arc::new(store.crash(None));
    let files = Arc::new(files.crash(None));
    drop((det, table));
    (store, files, mirror, acked)
}

fn a_flipped_bit_in_the_newest_frame_loses_no_checksum(placement: Placement, flip: Flip) {
    let (store, files, mirror, acked) = acknowledged_then_crash(placement);
    if placement == Placement::Sidecar {
        let name = log_file(&files);
        let mut log = files.file(&name).unwrap();
        let (at, len) = newest_frame(&log);
        let i = match flip {
            Flip::Frame => at + len - 6,
            Flip::FrameHeader => at + 2,
            Flip::Mirror => at + len + len - 6,
        };
        log[i] ^= 0x04;
        files.set_file(&name, log);
    }

    // The page's acknowledged bytes still verify.
    let (det, table) = start(placement, &store, &files)
        .unwrap_or_else(|e| panic!("{placement:?}/{flip:?}: open: {e}"));
    if let Some(t) = &table {
        assert_eq!(t.stats().torn_bytes_at_open, 0, "{flip:?}: not a torn tail");
    }
    let mut b = vec![0u8; PS];
    det.read_verified(PAGE, &mut b)
        .unwrap_or_else(|e| panic!("{placement:?}/{flip:?}: the acknowledged page fails: {e}"));
    assert_eq!(b, acked);
    drop((det, table));

    // The local page rots as well: the replica's copy heals it.
    let mut rotten = acked.clone();
    rotten[PS / 3] ^= 0x40;
    store.write_page(PAGE, &rotten).unwrap();
    store.sync().unwrap();
    let (det, _table) = start(placement, &store, &files).unwrap();
    let e = det.read_verified(PAGE, &mut b).unwrap_err();
    assert!(e.is_corruption(), "{placement:?}/{flip:?}: {e}");
    let rep = RepairConfig::new().build(det.clone()).unwrap();
    rep.add_replica(Arc::new(StoreReplica::new("m0", mirror.clone())))
        .unwrap();
    let report = rep.repair_page(PAGE).unwrap();
    assert_eq!(
        report.outcome,
        RepairOutcome::Repaired {
            source: CopySource::Replica(ReplicaId::new("m0"))
        },
        "{placement:?}/{flip:?}: {:?}",
        report.attempts
    );
    det.read_verified(PAGE, &mut b).unwrap();
    assert_eq!(b, acked, "{placement:?}/{flip:?}");
}

#[test]
fn sidecar_a_bit_flipped_in_the_newest_frame_loses_no_checksum() {
    for flip in [Flip::Frame, Flip::FrameHeader, Flip::Mirror] {
        a_flipped_bit_in_the_newest_frame_loses_no_checksum(Placement::Sidecar, flip);
    }
}

#[test]
fn trailer_reference_heals_the_same_page_from_the_replica() {
    a_flipped_bit_in_the_newest_frame_loses_no_checksum(Placement::Trailer, Flip::Frame);
}

/// Both copies of the newest frame damaged (two independent faults) cannot
/// be told from a torn tail: the frame is dropped and its page fails as
/// damage — never passes — and no replica copy of the lost version verifies.
#[test]
fn sidecar_both_copies_of_the_newest_frame_damaged_fail_closed() {
    let (store, files, mirror, acked) = acknowledged_then_crash(Placement::Sidecar);
    let name = log_file(&files);
    let mut log = files.file(&name).unwrap();
    let (at, len) = newest_frame(&log);
    log[at + len - 6] ^= 0x04;
    log[at + 2 * len - 6] ^= 0x04;
    files.set_file(&name, log);
    let (det, table) = start(Placement::Sidecar, &store, &files).unwrap();
    assert_eq!(table.unwrap().stats().torn_bytes_at_open, 2 * len as u64);
    let mut b = vec![0u8; PS];
    let e = det.read_verified(PAGE, &mut b).unwrap_err();
    assert!(e.is_corruption(), "{e}");
    assert!(det.verify(PAGE, &acked).is_err());
    let rep = RepairConfig::new().build(det.clone()).unwrap();
    rep.add_replica(Arc::new(StoreReplica::new("m0", mirror)))
        .unwrap();
    let report = rep.repair_page(PAGE).unwrap();
    assert!(
        matches!(report.outcome, RepairOutcome::Irreparable { .. }),
        "{:?}",
        report.outcome
    );
}

/// A log append whose fsync failed, then a crash keeping a random part of
/// it: the torn tail is dropped quietly (the open succeeds), the write it
/// announced was never issued, and every acknowledged page verifies.
#[test]
fn sidecar_a_torn_tail_is_still_dropped_quietly() {
    let mut torn_seen = 0;
    for seed in 0..64u64 {
        let store = Arc::new(CrashStore::new(PS, PAGES).unwrap());
        let files = Arc::new(CrashFiles::new());
        let (det, table) = start(Placement::Sidecar, &store, &files).unwrap();
        for p in 0..PAGES {
            det.write_sealed(PageId(p), &mut contents(p as u8)).unwrap();
        }
        det.sync().unwrap();
        // EIO on the next fsync, the appended bytes kept unsynced.
        files.fail_syncs_with(1, 5, false);
        let mut newer = contents(30);
        assert!(det.write_sealed(PAGE, &mut newer).is_err(), "seed {seed}");
        let store = Arc::new(store.crash(None));
        let files = Arc::new(files.crash(Some(seed)));
        drop((det, table));
        let (det, table) = start(Placement::Sidecar, &store, &files)
            .unwrap_or_else(|e| panic!("seed {seed}: a torn tail refused the open: {e}"));
        torn_seen += u64::from(table.unwrap().stats().torn_bytes_at_open > 0);
        let mut b = vec![0u8; PS];
        for p in 0..PAGES {
            det.read_verified(PageId(p), &mut b)
                .unwrap_or_else(|e| panic!("seed {seed}: page {p}: {e}"));
            assert_eq!(b, contents(p as u8), "seed {seed}: page {p}");
        }
    }
    assert!(
        torn_seen > 0,
        "no seed left a torn tail: the test tests nothing"
    );
}
