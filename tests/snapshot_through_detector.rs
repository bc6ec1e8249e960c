//! Goal: snapshots and restores of a store protected by a detector meet its
//! rules — a snapshot through the detector stores free pages (as zeros) and
//! is marked verified; a restore never seals bytes nobody verified (a
//! snapshot of the raw store is checked page by page against its own
//! trailer, or refused in the sidecar placement, before anything is
//! written); the detector's write observer keeps dirty-page notices
//! complete across the writes the library makes itself (a rollback); a
//! restore writes a chunk at a time, one log fsync per chunk with a durable
//! table. Method: sealed pages under every placement (trailer, in-memory
//! sidecar, durable sidecar on `CrashFiles`); pages freed with `forget`,
//! rotted behind the detector; snapshots paused through the detector, and
//! views of the raw store; a rollback between two paused incrementals; a
//! restore target that counts its batch writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use selfheal::checksum::payload_len;
use selfheal::snapshot::{
    ChangeDetection, Consistency, Retention, SnapshotConfig, SnapshotKind, SnapshotReport,
    SnapshotRequest, StateSnapshotManager, WriteGate,
};
use selfheal::testing::{decode_snapshot, every_placement, Damage, FaultyStore};
use selfheal::{
    ChecksumPlacement, CorruptionConfig, CorruptionDetector, Error, Lsn, MemStore, PageId,
    PageStore, Result, RollbackConfig, ScrubConfig,
};

const PS: usize = 512;
const PAGES: u64 = 16;

/// A fresh placement of the kind named.
fn placement_like(name: &str) -> ChecksumPlacement {
    every_placement(PS)
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
}

fn contents(page: u64, version: u8) -> Vec<u8> {
    (0..PS)
        .map(|i| (page as usize * 13 + i * 7 + version as usize * 31) as u8 | 1)
        .collect()
}

struct Rig {
    raw: Arc<FaultyStore>,
    det: Arc<CorruptionDetector>,
}

fn rig(
    placement: ChecksumPlacement,
    cfg: impl FnOnce(CorruptionConfig) -> CorruptionConfig,
) -> Rig {
    let raw = Arc::new(FaultyStore::new(Arc::new(
        MemStore::new(PS, PAGES).unwrap(),
    )));
    let det = Arc::new(
        cfg(CorruptionConfig::new(placement))
            .build(raw.clone())
            .unwrap(),
    );
    for p in 0..PAGES {
        det.write_sealed(PageId(p), &mut contents(p, 1)).unwrap();
    }
    Rig { raw, det }
}

fn manager(dir: &std::path::Path) -> StateSnapshotManager {
    SnapshotConfig::new(dir, PS)
        .chunk_bytes(4 * PS)
        .retention(Retention::KeepAll)
        .build()
        .unwrap()
}

fn paused(
    m: &StateSnapshotManager,
    gate: &WriteGate,
    store: &dyn PageStore,
    lsn: u64,
    kind: SnapshotKind,
) -> Result<SnapshotReport> {
    let pause = gate.pause();
    m.take_snapshot(
        Consistency::Paused {
            store,
            pause: &pause,
            lsn: Lsn(lsn),
        },
        SnapshotRequest::new(kind),
    )
}

fn view(
    m: &StateSnapshotManager,
    store: &dyn PageStore,
    lsn: u64,
    kind: SnapshotKind,
) -> SnapshotReport {
    m.take_snapshot(
        Consistency::View {
            view: store,
            lsn: Lsn(lsn),
        },
        SnapshotRequest::new(kind),
    )
    .unwrap()
}

fn raw_bytes(store: &dyn PageStore) -> Vec<u8> {
    let mut all = vec![0u8; store.page_count() as usize * PS];
    store.read_pages(PageId(0), &mut all).unwrap();
    all
}

fn scrub_reports(det: &Arc<CorruptionDetector>) -> u64 {
    let s = ScrubConfig::new().unlimited().build(det.clone()).unwrap();
    s.scan_range(PageId(0), det.page_count())
        .unwrap()
        .newly_corrupt
}

/// A page the host freed has no bytes anybody vouches for: a snapshot
/// through the detector stores it as zeros (full, by fingerprints, by
/// notices), and a restore leaves it holding zeros, sealed, or free —
/// never an alarm.
#[test]
fn snapshots_through_the_detector_store_free_pages_as_zeros() {
    for (name, placement) in every_placement(PS) {
        let dir = tempfile::tempdir().unwrap();
        let r = rig(placement, |c| c);
        let m = manager(dir.path());
        let gate = WriteGate::new();
        r.raw.damage(PageId(3), Damage::Zero).unwrap();
        r.raw.damage(PageId(5), Damage::Junk { seed: 5 }).unwrap();
        r.det.forget(PageId(3)).unwrap();
        r.det.forget(PageId(5)).unwrap();
        let full = paused(&m, &gate, r.det.as_ref(), 1, SnapshotKind::Full)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(full.pages_verified, "{name}");
        let mut page = vec![0u8; PS];
        assert!(m.read_page_at(full.info.id, PageId(5), &mut page).unwrap());
        assert!(page.iter().all(|&b| b == 0), "{name}: stored as zeros");
        // By fingerprints (notices not trusted yet), another page freed.
        r.raw.damage(PageId(6), Damage::Junk { seed: 6 }).unwrap();
        r.det.forget(PageId(6)).unwrap();
        let inc = view(&m, r.det.as_ref(), 2, SnapshotKind::Incremental);
        assert_eq!(inc.detection, ChangeDetection::Fingerprints, "{name}");
        assert_eq!(inc.info.stored_pages, 1, "{name}: page 6, now zeros");
        // By notices: a noted page that is free.
        paused(&m, &gate, r.det.as_ref(), 3, SnapshotKind::Full).unwrap();
        r.raw.damage(PageId(7), Damage::Junk { seed: 7 }).unwrap();
        r.det.forget(PageId(7)).unwrap();
        m.note_dirty(PageId(7));
        let noted = paused(&m, &gate, r.det.as_ref(), 4, SnapshotKind::Incremental).unwrap();
        assert_eq!(noted.detection, ChangeDetection::DirtyNotices, "{name}");
        assert_eq!(noted.info.stored_pages, 1, "{name}");

        // Restored into the detector: every page verifies or is free.
        for p in 0..PAGES {
            r.det.write_sealed(PageId(p), &mut contents(p, 9)).unwrap();
        }
        m.restore(noted.info.id, r.det.as_ref())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for p in 0..PAGES {
            match r.det.read_verified(PageId(p), &mut page) {
                Ok(()) if [3, 5, 6, 7].contains(&p) => assert!(
                    page[..payload_len(PS)].iter().all(|&b| b == 0),
                    "{name}: page {p}"
                ),
                Ok(()) => assert_eq!(
                    page[..payload_len(PS)],
                    contents(p, 1)[..payload_len(PS)],
                    "{name}: page {p}"
                ),
                Err(Error::PageUnallocated { .. }) if [3, 5, 6, 7].contains(&p) => {}
                Err(e) => panic!("{name}: page {p}: {e}"),
            }
        }
        assert_eq!(scrub_reports(&r.det), 0, "{name}: no false alarm");
        // Into a raw store: zeros.
        let out = MemStore::new(PS, PAGES).unwrap();
        m.restore(noted.info.id, &out).unwrap();
        out.read_page(PageId(5), &mut page).unwrap();
        assert!(page.iter().all(|&b| b == 0), "{name}");
    }
}

/// A snapshot of the raw store (a view of it) may hold a page that had
/// rotted: a restore into the detector never seals it. In the trailer
/// placement each page is checked against its own trailer and the rotted
/// one is refused before anything is written; in the sidecar placement the
/// table cannot check old bytes and the restore is refused. A snapshot
/// through the detector is verified and restores; the raw store takes
/// either.
#[test]
fn a_restore_never_seals_pages_nobody_verified() {
    for (name, placement) in every_placement(PS) {
        let dir = tempfile::tempdir().unwrap();
        let r = rig(placement, |c| c);
        let m = manager(dir.path());
        let clean = view(&m, r.raw.as_ref(), 1, SnapshotKind::Full);
        assert!(!clean.pages_verified, "{name}");
        r.raw
            .damage(PageId(6), Damage::BitFlip { byte: 7, bit: 0 })
            .unwrap();
        let rotted = view(&m, r.raw.as_ref(), 2, SnapshotKind::Full);
        // The host rewrites page 6 (the rot is gone from the store).
        r.det.write_sealed(PageId(6), &mut contents(6, 2)).unwrap();
        let verified =
            paused(&m, &WriteGate::new(), r.det.as_ref(), 3, SnapshotKind::Full).unwrap();
        assert!(verified.pages_verified, "{name}");
        for p in 0..PAGES {
            r.det.write_sealed(PageId(p), &mut contents(p, 3)).unwrap();
        }
        let before = raw_bytes(r.raw.as_ref());

        let err = m.restore(rotted.info.id, r.det.as_ref()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnverifiedSnapshot {
                    snapshot,
                    page,
                    target_written: false,
                    ..
                } if snapshot == rotted.info.id && (name != "trailer" || page == PageId(6))
            ),
            "{name}: {err}"
        );
        assert!(
            raw_bytes(r.raw.as_ref()) == before,
            "{name}: nothing written"
        );
        // A clean snapshot of the raw store: checked and restored under a
        // trailer; still refused by a sidecar table.
        match m.restore(clean.info.id, r.det.as_ref()) {
            Ok(_) => assert_eq!(name, "trailer"),
            Err(Error::UnverifiedSnapshot { ref reason, .. }) if name != "trailer" => {
                assert!(
                    reason.contains("adopt"),
                    "{name}: says what to do: {reason}"
                )
            }
            Err(e) => panic!("{name}: {e}"),
        }
        // A target smaller than the snapshot is checked before it grows.
        if name == "trailer" {
            let small = Arc::new(MemStore::new(PS, PAGES / 2).unwrap());
            let det = CorruptionConfig::new(ChecksumPlacement::Trailer)
                .build(small.clone())
                .unwrap();
            m.restore(clean.info.id, &det)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(small.page_count(), PAGES);
        }
        // Verified: restores into the detector, every page verifies.
        m.restore(verified.info.id, r.det.as_ref())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut page = vec![0u8; PS];
        for p in 0..PAGES {
            r.det.read_verified(PageId(p), &mut page).unwrap();
        }
        // A merged chain (on the restored head) is verified only if every member was.
        let inc = view(&m, r.det.as_ref(), 4, SnapshotKind::Incremental);
        let merged = m.merge(inc.info.id).unwrap();
        let bytes = std::fs::read(dir.path().join(&merged.file_name)).unwrap();
        assert!(decode_snapshot(&bytes).unwrap().pages_verified, "{name}");
        let inc = view(&m, r.raw.as_ref(), 5, SnapshotKind::Incremental);
        let merged = m.merge(inc.info.id).unwrap();
        let bytes = std::fs::read(dir.path().join(&merged.file_name)).unwrap();
        assert!(!decode_snapshot(&bytes).unwrap().pages_verified, "{name}");
        // The raw store takes an unverified snapshot as it is.
        let out = MemStore::new(PS, PAGES).unwrap();
        m.restore(rotted.info.id, &out).unwrap();

        // Without the pre-check the refusal comes before the page's chunk
        // is written; earlier chunks were, and the error says so.
        if name == "trailer" {
            drop(m); // the directory has one owner at a time
            let one_pass = SnapshotConfig::new(dir.path(), PS)
                .chunk_bytes(4 * PS)
                .threads(1)
                .retention(Retention::KeepAll)
                .precheck_restore(false)
                .build()
                .unwrap();
            let err = one_pass
                .restore(rotted.info.id, r.det.as_ref())
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::UnverifiedSnapshot {
                        page: PageId(6),
                        target_written: true,
                        ..
                    }
                ),
                "{err}"
            );
            let mut page = vec![0u8; PS];
            // Page 6 keeps what the verified restore wrote.
            r.det.read_verified(PageId(6), &mut page).unwrap();
            assert_eq!(page[..payload_len(PS)], contents(6, 2)[..payload_len(PS)]);
            assert_eq!(scrub_reports(&r.det), 0);
        }
    }
}

/// The host notes its own writes (under a ticket); the library's rollback
/// between two paused incrementals is noted by the detector's write
/// observer, so the restore of the newest snapshot does not bring the
/// rolled-back write back.
#[test]
fn the_write_observer_keeps_dirty_notices_complete() {
    for (name, _) in every_placement(PS) {
        let dir = tempfile::tempdir().unwrap();
        let jdir = tempfile::tempdir().unwrap();
        let m = Arc::new(manager(dir.path()));
        let noted = m.clone();
        let r = rig(placement_like(name), |c| {
            c.on_write(Arc::new(move |p: PageId| noted.note_dirty(p)))
        });
        let gate = WriteGate::new();
        paused(&m, &gate, r.det.as_ref(), 1, SnapshotKind::Full).unwrap();
        let rb = RollbackConfig::new(jdir.path())
            .build(r.det.clone())
            .unwrap();
        let t = rb.begin().unwrap();
        {
            let _ticket = gate.write();
            rb.write(t, PageId(2), 0, b"UNCOMMITTED").unwrap();
        }
        // Fuzzy: the transaction is in flight.
        let s2 = paused(&m, &gate, r.det.as_ref(), 2, SnapshotKind::Incremental).unwrap();
        assert_eq!(s2.detection, ChangeDetection::DirtyNotices, "{name}");
        {
            // Every writer through the detector holds a ticket, rollback too.
            let _ticket = gate.write();
            rb.rollback(t).unwrap();
        }
        let s3 = paused(&m, &gate, r.det.as_ref(), 3, SnapshotKind::Incremental).unwrap();
        assert_eq!(s3.detection, ChangeDetection::DirtyNotices, "{name}");
        assert_eq!(s3.info.stored_pages, 1, "{name}: the rollback's page");
        let out = MemStore::new(PS, PAGES).unwrap();
        m.restore(s3.info.id, &out).unwrap();
        assert!(
            out.to_bytes() == raw_bytes(r.raw.as_ref()),
            "{name}: the restore brought back a rolled-back write"
        );
        rb.stop().unwrap();
    }
}

/// Counts how a restore writes its target.
#[derive(Debug)]
struct Counting<'a> {
    inner: &'a CorruptionDetector,
    single: AtomicU64,
    batches: Mutex<Vec<usize>>,
}

impl PageStore for Counting<'_> {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn page_count(&self) -> u64 {
        self.inner.page_count()
    }
    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        PageStore::read_page(self.inner, page, buf)
    }
    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        self.single.fetch_add(1, Ordering::Relaxed);
        PageStore::write_page(self.inner, page, data)
    }
    fn write_pages(&self, pages: &mut [(PageId, &mut [u8])]) -> Result<()> {
        self.batches.lock().push(pages.len());
        self.inner.write_pages(pages)
    }
    fn verifies_reads(&self) -> bool {
        self.inner.verifies_reads()
    }
    fn check_unverified(&self, page: PageId, bytes: &[u8]) -> Result<()> {
        self.inner.check_unverified(page, bytes)
    }
    fn sync(&self) -> Result<()> {
        PageStore::sync(self.inner)
    }
}

/// A restore writes whole chunks with `write_pages`; into a detector with a
/// durable table that is one log fsync per chunk, not one per page.
#[test]
fn a_restore_writes_a_chunk_at_a_time() {
    for (name, placement) in every_placement(PS) {
        let dir = tempfile::tempdir().unwrap();
        let table = match &placement {
            ChecksumPlacement::Sidecar(t) => Some(t.clone()),
            _ => None,
        };
        let r = rig(placement, |c| c);
        let m = manager(dir.path());
        let snap = paused(&m, &WriteGate::new(), r.det.as_ref(), 1, SnapshotKind::Full).unwrap();
        for p in 0..PAGES {
            r.det.write_sealed(PageId(p), &mut contents(p, 2)).unwrap();
        }
        r.det.sync().unwrap();
        let syncs = table.as_ref().map(|t| t.stats().log_syncs);
        let target = Counting {
            inner: &r.det,
            single: AtomicU64::new(0),
            batches: Mutex::new(Vec::new()),
        };
        let report = m.restore(snap.info.id, &target).unwrap();
        assert_eq!(report.pages_written, PAGES, "{name}");
        assert_eq!(target.single.load(Ordering::Relaxed), 0, "{name}");
        let mut batches = target.batches.lock().clone();
        batches.sort_unstable();
        assert_eq!(
            batches,
            vec![4; PAGES as usize / 4],
            "{name}: a chunk a batch"
        );
        if let (Some(t), Some(before)) = (table, syncs) {
            if t.is_durable() {
                let chunks = PAGES / 4;
                let fsyncs = t.stats().log_syncs - before;
                // One intent fsync per chunk, and the restore's final sync.
                assert!(fsyncs <= chunks + 1, "{name}: {fsyncs} log fsyncs");
            }
        }
        let mut page = vec![0u8; PS];
        for p in 0..PAGES {
            r.det.read_verified(PageId(p), &mut page).unwrap();
            assert_eq!(page[..payload_len(PS)], contents(p, 1)[..payload_len(PS)]);
        }
    }
}
