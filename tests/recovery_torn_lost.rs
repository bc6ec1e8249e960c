//! Goal: the recovery manager heals a torn write and a lost write of a
//! file-backed store — detects each on a verified read, names its cause
//! (a checksum mismatch for the torn write, a stale LSN for the lost one),
//! repairs it from the replica, and leaves the page equal to the model.
//! Method: a `FileStore` under the crate's `FaultyStore`, pages carrying
//! their LSN in their first 8 bytes (a page-LSN reader configured), a
//! mirror replica holding every acknowledged write (the model); one write
//! torn (half its bytes reach the file) or lost (none do, success
//! reported), then a host read; under both checksum placements.

use std::sync::Arc;
use std::time::Duration;

use selfheal::corruption::PageLsnFn;
use selfheal::healer::Outcome;
use selfheal::testing::{both_placements, FaultyStore, WriteFault};
use selfheal::{
    AutoRecoveryManager, ChecksumPlacement, CorruptionConfig, FileStore, Lsn, MemStore, PageId,
    PageStore, RecoveryConfig, StoreReplica, Target,
};

const PS: usize = 4096;
const PAGES: u64 = 16;
const IDLE: Duration = Duration::from_secs(20);

/// Pages carry their LSN in their first 8 bytes, as most engines' headers do.
fn lsn_reader() -> PageLsnFn {
    Arc::new(|b: &[u8]| Some(Lsn(u64::from_le_bytes(b[..8].try_into().ok()?))))
}

/// Page `p`'s contents at `lsn`.
fn contents(p: u64, lsn: u64) -> Vec<u8> {
    let mut b: Vec<u8> = (0..PS)
        .map(|i| (i as u64 * 31 + p * 7 + lsn * 13) as u8)
        .collect();
    b[..8].copy_from_slice(&lsn.to_le_bytes());
    b
}

fn bytes(store: &dyn PageStore, p: u64) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    store.read_page(PageId(p), &mut b).unwrap();
    b
}

struct Rig {
    _dir: tempfile::TempDir,
    faulty: Arc<FaultyStore>,
    mirror: Arc<MemStore>,
    m: AutoRecoveryManager,
}

impl Rig {
    /// Every page written at LSN 1 through the manager's detector, the
    /// mirror holding the same bytes.
    fn new(placement: ChecksumPlacement) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(FileStore::create(dir.path().join("pages"), PS, PAGES).unwrap());
        let faulty = Arc::new(FaultyStore::new(file));
        let mirror = Arc::new(MemStore::new(PS, PAGES).unwrap());
        let m = RecoveryConfig::new(faulty.clone(), dir.path().join("recovery"))
            .detector(CorruptionConfig::new(placement).page_lsn(lsn_reader()))
            .replica(Arc::new(StoreReplica::new("mirror", mirror.clone())))
            .without_scrub()
            // The failing read reports on the bus; a recovery thread heals.
            .heal_on_read(false)
            .build()
            .unwrap();
        m.start().unwrap();
        let rig = Rig {
            _dir: dir,
            faulty,
            mirror,
            m,
        };
        for p in 0..PAGES {
            rig.write(p, 1);
        }
        rig.faulty.sync().unwrap();
        rig
    }

    /// A host write of page `p` at `lsn` through the detector, shipped to
    /// the mirror as acknowledged (the model).
    fn write(&self, p: u64, lsn: u64) {
        let mut b = contents(p, lsn);
        self.m.detector().write_sealed(PageId(p), &mut b).unwrap();
        self.mirror.write_page(PageId(p), &b).unwrap();
    }

    /// A verified read of `p`: the error, or the bytes.
    fn read(&self, p: u64) -> selfheal::Result<Vec<u8>> {
        let mut b = vec![0u8; PS];
        self.m
            .detector()
            .read_verified(PageId(p), &mut b)
            .map(|()| b)
    }

    /// Reads `p`, expecting the failure; waits for the manager; checks the
    /// incident healed `p` from the replica under `rule` and that `p`
    /// equals the model again.
    fn healed(&self, what: &str, p: u64, cause: &str, rule: &str) {
        let e = self
            .read(p)
            .expect_err(&format!("{what}: the read must fail"));
        assert!(e.to_string().contains(cause), "{what}: {e}");
        assert!(self.m.wait_idle(IDLE), "{what}");
        let incs = self.m.incidents();
        let inc = incs
            .iter()
            .find(|i| i.target == Target::Page(PageId(p)))
            .unwrap_or_else(|| panic!("{what}: no incident of page {p}: {incs:#?}"));
        assert!(
            inc.failures[0].evidence.contains(cause),
            "{what}: {}",
            inc.failures[0].evidence
        );
        assert_eq!(inc.diagnosis.rule.as_deref(), Some(rule), "{what}");
        assert_eq!(
            inc.outcome,
            Outcome::Healed {
                remedy: "repair-from-replicas".into()
            },
            "{what}: {inc:#?}"
        );
        let model = bytes(self.mirror.as_ref(), p);
        assert_eq!(self.read(p).unwrap(), model, "{what}: a verified read");
        assert_eq!(
            bytes(self.faulty.inner().as_ref(), p),
            model,
            "{what}: the file's bytes"
        );
        // Untouched pages still verify.
        for q in (0..PAGES).filter(|&q| q != p) {
            assert_eq!(
                self.read(q).unwrap(),
                bytes(self.mirror.as_ref(), q),
                "{what}: page {q}"
            );
        }
        let s = self.m.stats();
        assert_eq!((s.recovered, s.escalated), (1, 0), "{what}: {s:?}");
    }
}

#[test]
fn a_torn_write_is_found_named_and_healed_from_the_replica() {
    for (name, placement) in both_placements(PS) {
        let rig = Rig::new(placement);
        // Half of the new page reaches the file; the write reports success.
        rig.faulty
            .fail_next_write(Some(PageId(5)), WriteFault::Torn { new_bytes: PS / 2 });
        rig.write(5, 2);
        rig.faulty.sync().unwrap();
        let on_file = bytes(rig.faulty.inner().as_ref(), 5);
        let model = contents(5, 2);
        assert_eq!(
            on_file[..PS / 2],
            model[..PS / 2],
            "{name}: torn, first half new"
        );
        assert_ne!(on_file, bytes(rig.mirror.as_ref(), 5), "{name}: torn");
        rig.healed(
            &format!("{name} torn"),
            5,
            "does not match the recorded",
            "builtin.checksum_mismatch",
        );
        rig.m.stop().unwrap();
    }
}

#[test]
fn a_lost_write_is_found_by_its_lsn_named_and_healed_from_the_replica() {
    for (name, placement) in both_placements(PS) {
        let rig = Rig::new(placement);
        let old = bytes(rig.faulty.inner().as_ref(), 9);
        // Nothing reaches the file; the write reports success.
        rig.faulty
            .fail_next_write(Some(PageId(9)), WriteFault::Lost);
        rig.write(9, 2);
        rig.faulty.sync().unwrap();
        assert_eq!(bytes(rig.faulty.inner().as_ref(), 9), old, "{name}: lost");
        rig.healed(
            &format!("{name} lost"),
            9,
            "is stale: it holds LSN 1 but LSN 2 was written",
            "builtin.lost_write",
        );
        assert_eq!(
            u64::from_le_bytes(rig.read(9).unwrap()[..8].try_into().unwrap()),
            2,
            "{name}: the healed page carries the acknowledged LSN"
        );
        rig.m.stop().unwrap();
    }
}
