//! Goal: every page fault the detector exists for is caught on a verified read,
//! in both checksum placements (the sidecar with an in-memory and with a
//! durable table). Method: pages are sealed through the detector
//! over a `FaultyStore`, one fault is injected, and the verified read must give
//! the typed error, fence the page and report it exactly once.

use std::sync::Arc;

use selfheal::checksum::ChecksumTable;
use selfheal::corruption::{PageLsnFn, PageState};
use selfheal::testing::{every_placement, Damage, FaultyStore, ReadFault, WriteFault};
use selfheal::{
    ChecksumPlacement, CorruptionConfig, CorruptionDetector, Error, FileStore, Lsn, MemStore,
    PageId, PageStore,
};

const PS: usize = 4096;
const PAGES: u64 = 16;

/// Pages carry their LSN in their first 8 bytes, as most engines' headers do.
fn lsn_reader() -> PageLsnFn {
    Arc::new(|b: &[u8]| Some(Lsn(u64::from_le_bytes(b[..8].try_into().ok()?))))
}

fn page_bytes(page: u64, lsn: u64) -> Vec<u8> {
    let mut b = vec![(page as u8).wrapping_mul(7) | 1; PS];
    b[..8].copy_from_slice(&lsn.to_le_bytes());
    b
}

struct Rig {
    raw: Arc<FaultyStore>,
    det: CorruptionDetector,
}

fn rig(placement: ChecksumPlacement, inner: Arc<dyn PageStore>) -> Rig {
    let raw = Arc::new(FaultyStore::new(inner));
    let det = CorruptionConfig::new(placement)
        .page_lsn(lsn_reader())
        .build(raw.clone())
        .unwrap();
    for p in 0..PAGES {
        det.write_sealed(PageId(p), &mut page_bytes(p, 1)).unwrap();
    }
    Rig { raw, det }
}

fn mem() -> Arc<dyn PageStore> {
    Arc::new(MemStore::new(PS, PAGES).unwrap())
}

/// Reads `page`, expects a verification failure, a fence and one report.
fn expect_caught(r: &Rig, page: u64, what: &str) -> Error {
    let mut buf = vec![0u8; PS];
    let err = r
        .det
        .read_verified(PageId(page), &mut buf)
        .expect_err(&format!("{what}: read must fail"));
    assert_eq!(
        r.det.page_state(PageId(page)),
        Some(PageState::Suspect),
        "{what}"
    );
    assert!(matches!(
        r.det.read_verified(PageId(page), &mut buf),
        Err(Error::PageFenced { .. })
    ));
    let reports: Vec<_> = r.det.failures().try_iter().collect();
    assert_eq!(reports.len(), 1, "{what}: reported exactly once");
    assert_eq!(reports[0].target(), selfheal::Target::Page(PageId(page)));
    err
}

#[test]
fn damage_at_rest_is_caught() {
    for (name, placement) in every_placement(PS) {
        for (i, damage) in [
            Damage::BitFlip { byte: 1000, bit: 5 },
            Damage::BitFlip {
                byte: PS - 1,
                bit: 0,
            },
            Damage::Zero,
            Damage::Junk { seed: 7 },
        ]
        .into_iter()
        .enumerate()
        {
            let r = rig(placement.clone(), mem());
            r.raw.damage(PageId(i as u64), damage).unwrap();
            let err = expect_caught(&r, i as u64, &format!("{name} {damage:?}"));
            assert!(err.is_corruption(), "{name} {damage:?}: {err}");
            if damage == Damage::Zero {
                assert!(matches!(err, Error::ZeroedPage { .. }), "{name}: {err}");
            }
        }
    }
}

#[test]
fn torn_write_is_caught() {
    for (name, placement) in every_placement(PS) {
        let r = rig(placement, mem());
        r.raw
            .fail_next_write(Some(PageId(3)), WriteFault::Torn { new_bytes: 512 });
        r.det
            .write_sealed(PageId(3), &mut page_bytes(30, 2))
            .unwrap();
        let err = expect_caught(&r, 3, name);
        assert!(err.is_corruption(), "{name}: {err}");
    }
}

#[test]
fn misdirected_write_is_caught_on_both_pages() {
    for (name, placement) in every_placement(PS) {
        let r = rig(placement, mem());
        r.raw
            .fail_next_write(Some(PageId(4)), WriteFault::Misdirected { to: PageId(9) });
        r.det
            .write_sealed(PageId(4), &mut page_bytes(4, 2))
            .unwrap();
        // Page 9 holds page 4's bytes.
        let err = expect_caught(&r, 9, name);
        if name == "trailer" {
            assert!(
                matches!(
                    err,
                    Error::MisplacedPage {
                        page: PageId(9),
                        found: PageId(4)
                    }
                ),
                "{err}"
            );
        } else {
            assert!(err.is_corruption(), "{err}");
        }
        // Page 4 kept its old bytes: stale by LSN (trailer) or by checksum (sidecar).
        let err = expect_caught(&r, 4, name);
        assert!(err.is_corruption(), "{name}: {err}");
    }
}

#[test]
fn lost_write_is_caught() {
    for (name, placement) in every_placement(PS) {
        let r = rig(placement, mem());
        r.raw.fail_next_write(Some(PageId(6)), WriteFault::Lost);
        r.det
            .write_sealed(PageId(6), &mut page_bytes(6, 5))
            .unwrap();
        let err = expect_caught(&r, 6, name);
        // Named stale under every placement: under a sidecar table the old
        // page fails its checksum too, and its LSN tells why.
        assert!(
            matches!(
                err,
                Error::StalePage {
                    found: Lsn(1),
                    expected: Lsn(5),
                    ..
                }
            ),
            "{name}: {err}"
        );
    }
}

#[test]
fn lost_write_in_trailer_mode_needs_a_page_lsn_reader() {
    // Without a page-LSN reader the old page is internally consistent: this is
    // the documented limit of a checksum trailer.
    let raw = Arc::new(FaultyStore::new(mem()));
    let det = CorruptionConfig::new(ChecksumPlacement::Trailer)
        .build(raw.clone())
        .unwrap();
    det.write_sealed(PageId(1), &mut page_bytes(1, 1)).unwrap();
    raw.fail_next_write(Some(PageId(1)), WriteFault::Lost);
    det.write_sealed(PageId(1), &mut page_bytes(1, 2)).unwrap();
    let mut buf = vec![0u8; PS];
    det.read_verified(PageId(1), &mut buf).unwrap();
    assert_eq!(&buf[..8], &1u64.to_le_bytes());
}

#[test]
fn read_errors_transient_and_persistent() {
    let r = rig(ChecksumPlacement::Trailer, mem());
    let mut buf = vec![0u8; PS];
    // One transient EIO or one flipped bit on the path: the retry clears it.
    r.raw.fail_reads(Some(PageId(2)), ReadFault::Eio, 1);
    r.det.read_verified(PageId(2), &mut buf).unwrap();
    r.raw
        .fail_reads(Some(PageId(2)), ReadFault::TransientBitFlip, 1);
    r.det.read_verified(PageId(2), &mut buf).unwrap();
    assert_eq!(buf, {
        let mut b = page_bytes(2, 1);
        selfheal::checksum::trailer::seal(PageId(2), &mut b).unwrap();
        b
    });
    assert_eq!(r.det.stats().transient, 2);
    assert!(
        r.det.failures().try_recv().is_err(),
        "transient faults are not reported"
    );
    // A persistent EIO is an unreadable page that needs repair.
    r.raw.fail_reads(Some(PageId(2)), ReadFault::Eio, 10);
    let err = expect_caught(&r, 2, "persistent EIO");
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn write_errors_are_typed_and_leave_the_old_page() {
    let r = rig(ChecksumPlacement::Trailer, mem());
    r.raw.fail_next_write(Some(PageId(5)), WriteFault::Eio);
    assert!(matches!(
        r.det.write_sealed(PageId(5), &mut page_bytes(5, 2)),
        Err(Error::Io { .. })
    ));
    r.raw.fail_next_write(Some(PageId(5)), WriteFault::NoSpace);
    let err = r
        .det
        .write_sealed(PageId(5), &mut page_bytes(5, 2))
        .unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    let mut buf = vec![0u8; PS];
    r.det.read_verified(PageId(5), &mut buf).unwrap();
    assert_eq!(&buf[..8], &1u64.to_le_bytes());
}

#[test]
fn file_store_faults_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let file: Arc<dyn PageStore> =
        Arc::new(FileStore::create(dir.path().join("data"), PS, PAGES).unwrap());
    let r = rig(ChecksumPlacement::Trailer, file);
    r.raw
        .damage(PageId(11), Damage::BitFlip { byte: 77, bit: 2 })
        .unwrap();
    assert!(expect_caught(&r, 11, "file bit flip").is_corruption());
}

#[test]
fn bad_input_is_typed() {
    let r = rig(ChecksumPlacement::Trailer, mem());
    let mut short = vec![0u8; PS - 1];
    assert!(matches!(
        r.det.read_verified(PageId(0), &mut short),
        Err(Error::BufferSize { expected: PS, actual }) if actual == PS - 1
    ));
    let mut buf = vec![0u8; PS];
    assert!(matches!(
        r.det.read_verified(PageId(PAGES), &mut buf),
        Err(Error::PageOutOfRange {
            page_count: PAGES,
            ..
        })
    ));
    assert!(matches!(
        MemStore::new(PS, 0).map(|s| s.page_count()),
        Ok(0)
    ));
    let empty = Arc::new(MemStore::new(PS, 0).unwrap());
    let det = CorruptionConfig::new(ChecksumPlacement::Trailer)
        .build(empty)
        .unwrap();
    assert!(matches!(
        det.read_verified(PageId(0), &mut buf),
        Err(Error::PageOutOfRange { page_count: 0, .. })
    ));
}

/// A host that zeroes the pages it frees (SQLite with `secure_delete`)
/// writes all-zero pages through the detector: the write succeeds in both
/// placements and the zeros read back verified; damage to such a page, and
/// a page with other contents that comes back zeroed, are still caught.
#[test]
fn host_write_of_an_all_zero_page_is_sealed() {
    for (name, placement) in every_placement(PS) {
        // No page-LSN reader: an all-zero page carries no LSN.
        let raw = Arc::new(FaultyStore::new(mem()));
        let det = CorruptionConfig::new(placement).build(raw.clone()).unwrap();
        for p in 0..PAGES {
            det.write_sealed(PageId(p), &mut page_bytes(p, 1)).unwrap();
        }
        let r = Rig { raw, det };
        r.det
            .write_sealed(PageId(4), &mut vec![0u8; PS])
            .unwrap_or_else(|e| panic!("{name}: a zero page write must succeed: {e}"));
        let mut buf = vec![1u8; PS];
        r.det.read_verified(PageId(4), &mut buf).unwrap();
        assert!(
            buf[..selfheal::checksum::payload_len(PS)]
                .iter()
                .all(|&b| b == 0),
            "{name}: the zeros come back"
        );
        r.raw
            .damage(PageId(4), Damage::BitFlip { byte: 9, bit: 3 })
            .unwrap();
        assert!(expect_caught(&r, 4, name).is_corruption());
        r.raw.damage(PageId(6), Damage::Zero).unwrap();
        assert!(matches!(
            expect_caught(&r, 6, name),
            Error::ZeroedPage { .. }
        ));
    }
}

/// A page with no checksum names the way to adopt a file that existed
/// before the library.
#[test]
fn missing_checksum_message_points_at_adoption() {
    let table = Arc::new(ChecksumTable::new(PS).unwrap());
    let raw = Arc::new(MemStore::new(PS, 2).unwrap());
    raw.write_page(PageId(1), &page_bytes(1, 1)).unwrap();
    let det = CorruptionConfig::new(ChecksumPlacement::Sidecar(table))
        .build(raw)
        .unwrap();
    let mut buf = vec![0u8; PS];
    let err = det.read_verified(PageId(1), &mut buf).unwrap_err();
    assert!(matches!(err, Error::MissingChecksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("CorruptionDetector::adopt"), "{msg}");
    assert!(msg.contains("integrity check"), "{msg}");
}
