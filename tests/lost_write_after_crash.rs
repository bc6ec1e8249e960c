//! Goal: an acknowledged write that the disk silently lost, followed by a
//! crash, is repaired from a replica that holds it — under the durable
//! sidecar table as under the trailer — and a replica's stale copy never
//! wins. Found by the simulator (seed 1175: `Write(9, Lost)` then a crash)
//! and reduced here to the public API. Method: a `FaultyStore` loses the
//! write (and reports success), the host syncs (the write is acknowledged),
//! the process dies (`CrashFiles::crash`: the table keeps only what was
//! durable); the restarted detector knows the acknowledged LSN from the
//! host's expected-LSN hook; replicas hold the stale and the acknowledged
//! version.

use std::sync::Arc;

use selfheal::checksum::{payload_len, TableConfig};
use selfheal::prelude::*;
use selfheal::testing::{CrashFiles, FaultyStore, WriteFault};

const PS: usize = 512;
const PAGES: u64 = 8;
const PAGE: PageId = PageId(3);

/// A page whose first 8 bytes are its LSN (what the page-LSN reader reads).
fn page_at(lsn: u64, usable: usize) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    b[..8].copy_from_slice(&lsn.to_le_bytes());
    b[8..usable].fill(lsn as u8 | 1);
    b
}

fn lsn_of(b: &[u8]) -> Option<Lsn> {
    let l = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    (l > 0).then_some(Lsn(l))
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Trailer,
    DurableSidecar,
}

struct Host {
    disk: Arc<FaultyStore>,
    files: Option<Arc<CrashFiles>>,
    kind: Kind,
}

impl Host {
    fn usable(&self) -> usize {
        match self.kind {
            Kind::Trailer => payload_len(PS),
            Kind::DurableSidecar => PS,
        }
    }

    /// A process: the table opened from what its files hold, a detector
    /// whose expected-LSN hook answers the acknowledged LSNs.
    fn boot(&self, acked: fn(PageId) -> Option<Lsn>) -> Arc<CorruptionDetector> {
        let placement = match (&self.kind, &self.files) {
            (Kind::Trailer, _) => ChecksumPlacement::Trailer,
            (Kind::DurableSidecar, Some(files)) => ChecksumPlacement::Sidecar(Arc::new(
                TableConfig::new(PS)
                    .pages_max(PAGES)
                    .open_on(files.clone(), "sums")
                    .unwrap(),
            )),
            (Kind::DurableSidecar, None) => unreachable!("a durable table has files"),
        };
        Arc::new(
            CorruptionConfig::new(placement)
                .page_lsn(Arc::new(lsn_of))
                .expected_page_lsn(Arc::new(acked))
                .build(self.disk.clone())
                .unwrap(),
        )
    }

    /// The bytes a replica holds of version `lsn` of the page.
    fn replica_copy(&self, lsn: u64) -> Vec<u8> {
        let mut b = page_at(lsn, self.usable());
        if let Kind::Trailer = self.kind {
            ChecksumPlacement::Trailer.seal(PAGE, &mut b).unwrap();
        }
        b
    }
}

fn before_the_write(_: PageId) -> Option<Lsn> {
    Some(Lsn(10))
}

fn after_the_write(p: PageId) -> Option<Lsn> {
    Some(Lsn(match p {
        PAGE => 20,
        PageId(0) => 21,
        _ => 10,
    }))
}

/// Every page at LSN 10, then LSN 20 of `PAGE` written, lost by the disk,
/// synced and acknowledged; then a crash. Returns the host after the crash.
fn lose_an_acknowledged_write_and_crash(kind: Kind) -> Host {
    let mut host = Host {
        disk: Arc::new(FaultyStore::new(Arc::new(
            MemStore::new(PS, PAGES).unwrap(),
        ))),
        files: matches!(kind, Kind::DurableSidecar).then(|| Arc::new(CrashFiles::new())),
        kind,
    };
    let det = host.boot(before_the_write);
    for p in 0..PAGES {
        det.write_sealed(PageId(p), &mut page_at(10, host.usable()))
            .unwrap();
    }
    det.sync().unwrap();
    host.disk.fail_next_write(Some(PAGE), WriteFault::Lost);
    det.write_sealed(PAGE, &mut page_at(20, host.usable()))
        .unwrap();
    det.sync().unwrap();
    // The crash: the process and its memory go, the disk keeps what it has,
    // the table's files what was durable (taken before the table is dropped,
    // which would make its buffered records durable as a clean close does).
    host.files = host.files.map(|f| Arc::new(f.crash(None)));
    drop(det);
    host.disk.clear();
    host
}

fn replica(name: &str, host: &Host, lsn: u64) -> Arc<StoreReplica> {
    let store = Arc::new(MemStore::new(PS, PAGES).unwrap());
    store.write_page(PAGE, &host.replica_copy(lsn)).unwrap();
    Arc::new(StoreReplica::new(name, store).call_inline(true))
}

fn the_replica_heals_an_acknowledged_lost_write_after_a_crash(kind: Kind) {
    let host = lose_an_acknowledged_write_and_crash(kind);
    let det = host.boot(after_the_write);
    // The host goes on: it writes another page and syncs, before anything
    // reads the page whose write was lost.
    det.write_sealed(PageId(0), &mut page_at(21, host.usable()))
        .unwrap();
    det.sync().unwrap();
    let mut buf = vec![0u8; PS];
    match det.read_verified(PAGE, &mut buf) {
        Ok(()) => panic!(
            "{kind:?}: the page holds LSN {:?}, older than its acknowledged write, and verified",
            lsn_of(&buf)
        ),
        Err(e) => assert!(
            e.is_corruption() || matches!(e, Error::StalePage { .. }),
            "{kind:?}: {e}"
        ),
    }
    let repairer = RepairConfig::new().build(det.clone()).unwrap();
    // The stale copy is offered first: it must lose.
    repairer.add_replica(replica("stale", &host, 10)).unwrap();
    repairer.add_replica(replica("current", &host, 20)).unwrap();
    let report = repairer.repair_page(PAGE).unwrap();
    assert!(report.is_repaired(), "{kind:?}: {:?}", report.outcome);
    det.read_verified(PAGE, &mut buf).unwrap();
    assert_eq!(lsn_of(&buf), Some(Lsn(20)), "{kind:?}");

    // And it stays healed across another restart (the repair settled).
    det.sync().unwrap();
    let files = host.files.as_ref().map(|f| Arc::new(f.crash(None)));
    drop(repairer);
    drop(det);
    let host = Host { files, ..host };
    let det = host.boot(after_the_write);
    det.read_verified(PAGE, &mut buf).unwrap();
    assert_eq!(
        lsn_of(&buf),
        Some(Lsn(20)),
        "{kind:?} after a second restart"
    );
}

fn a_stale_copy_alone_never_wins(kind: Kind) {
    let host = lose_an_acknowledged_write_and_crash(kind);
    let det = host.boot(after_the_write);
    det.sync().unwrap();
    let repairer = RepairConfig::new().build(det.clone()).unwrap();
    repairer.add_replica(replica("stale", &host, 10)).unwrap();
    let report = repairer.repair_page(PAGE).unwrap();
    assert!(!report.is_repaired(), "{kind:?}: {:?}", report.outcome);
    let mut buf = vec![0u8; PS];
    assert!(det.read_verified(PAGE, &mut buf).is_err(), "{kind:?}");
    host.disk.inner().read_page(PAGE, &mut buf).unwrap();
    assert_eq!(lsn_of(&buf), Some(Lsn(10)), "{kind:?}: nothing was written");
}

#[test]
fn durable_sidecar_the_replica_heals_an_acknowledged_lost_write_after_a_crash() {
    the_replica_heals_an_acknowledged_lost_write_after_a_crash(Kind::DurableSidecar);
}

#[test]
fn trailer_the_replica_heals_an_acknowledged_lost_write_after_a_crash() {
    the_replica_heals_an_acknowledged_lost_write_after_a_crash(Kind::Trailer);
}

#[test]
fn durable_sidecar_a_stale_copy_alone_never_wins() {
    a_stale_copy_alone_never_wins(Kind::DurableSidecar);
}

#[test]
fn trailer_a_stale_copy_alone_never_wins() {
    a_stale_copy_alone_never_wins(Kind::Trailer);
}
