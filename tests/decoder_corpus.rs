//! Goal: the decoders of untrusted bytes that have fuzz targets in `fuzz/` are
//! also exercised on stable CI. Method: a generated corpus — every truncation,
//! every single-bit flip in the frame, zeroed and junk files — is decoded; each
//! must give a typed error or (for the undamaged input) the original value,
//! never a panic.

use std::path::Path;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use selfheal::checksum::{trailer, TableConfig};
use selfheal::corruption::AdoptOptions;
use selfheal::testing::checksum_log::{decode_log, LogEnd, LOG_HEADER_LEN};
use selfheal::testing::CrashFiles;
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, Error, MemStore, PageId, PageStore,
};

fn sample_table() -> Vec<u8> {
    let t = ChecksumTable::new(4096).unwrap();
    for p in [0u64, 3, 17, 40] {
        t.seal(PageId(p), &vec![p as u8 + 1; 4096]).unwrap();
    }
    // Unallocated marks: one over a checksum, one on a page never sealed.
    t.mark_free(PageId(3)).unwrap();
    t.mark_free(PageId(21)).unwrap();
    t.encode()
}

fn decode(bytes: &[u8]) -> Result<ChecksumTable, Error> {
    ChecksumTable::decode(Path::new("corpus"), bytes, 4096)
}

#[test]
fn checksum_table_corpus() {
    let good = sample_table();
    let t = decode(&good).unwrap();
    assert_eq!(t.encode(), good);
    assert!(t.is_free(PageId(3)) && t.is_free(PageId(21)) && !t.is_free(PageId(17)));
    for cut in 0..good.len() {
        let e = decode(&good[..cut]).expect_err("truncated table must fail");
        assert!(matches!(e, Error::CorruptFile { .. }), "cut {cut}: {e}");
    }
    for bit in 0..good.len() * 8 {
        let mut b = good.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(decode(&b).is_err(), "bit {bit} flipped was accepted");
    }
    assert!(decode(&vec![0u8; good.len()]).is_err());
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for _ in 0..2000 {
        let len = rng.random_range(0..200);
        let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        assert!(decode(&junk).is_err());
    }
}

#[test]
fn page_trailer_corpus() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7a11);
    for len in [0usize, 1, 15, 16, 63, 64, 65, 512, 4096] {
        for _ in 0..200 {
            let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Random bytes verify only with probability 2^-48 (magic + CRC).
            assert!(trailer::verify(PageId(rng.random_range(0..100)), &junk).is_err());
        }
        assert!(trailer::verify(PageId(0), &vec![0u8; len]).is_err());
    }
}

/// Pages of the sample durable table: 0..8 written through the detector,
/// 8..12 adopted (8 and 10 all zeros, so unallocated), 11 dropped by a
/// shrink.
const SAMPLE_PAGES: u64 = 11;

/// A durable table's files after writes, syncs, an adoption, a free mark
/// and a shrink — every kind of log record: (base, name of the log, log).
fn sample_durable_table() -> (Vec<u8>, String, Vec<u8>) {
    let files = Arc::new(CrashFiles::new());
    let table = Arc::new(TableConfig::new(4096).open_on(files.clone(), "t").unwrap());
    let store = Arc::new(MemStore::new(4096, 12).unwrap());
    for p in [9u64, 11] {
        store.write_page(PageId(p), &vec![p as u8; 4096]).unwrap();
    }
    let det = CorruptionConfig::new(ChecksumPlacement::Sidecar(table.clone()))
        .build(store)
        .unwrap();
    for p in 0..8u8 {
        det.write_sealed(PageId(u64::from(p)), &mut vec![p + 1; 4096])
            .unwrap();
    }
    det.sync().unwrap();
    det.write_sealed(PageId(3), &mut vec![0x33; 4096]).unwrap();
    let adopted = det.adopt(AdoptOptions::new().range(PageId(8), 4)).unwrap();
    assert_eq!((adopted.sealed, adopted.unallocated), (2, 2));
    det.forget(PageId(2)).unwrap();
    det.resize(SAMPLE_PAGES).unwrap();
    det.write_sealed(PageId(1), &mut vec![0x11; 4096]).unwrap();
    table.flush().unwrap();
    let names = files.names();
    let log = names
        .iter()
        .find(|n| n.starts_with("t.log-"))
        .unwrap()
        .clone();
    (
        files.file("t").unwrap(),
        log.clone(),
        files.file(&log).unwrap(),
    )
}

fn is_typed(e: &Error) -> bool {
    matches!(
        e,
        Error::CorruptFile { .. }
            | Error::UnsupportedVersion { .. }
            | Error::PageSizeMismatch { .. }
    )
}

#[test]
fn checksum_log_corpus() {
    let (_, _, good) = sample_durable_table();
    let p = Path::new("corpus");
    let whole = decode_log(p, &good, 4096).unwrap();
    assert_eq!(whole.end, LogEnd::Clean);
    assert!(whole.records.len() >= 12, "{} records", whole.records.len());
    for kind in ["Intent", "Settle", "Drop", "Free", "Claim"] {
        assert!(
            whole
                .records
                .iter()
                .any(|(_, r)| format!("{r:?}").starts_with(kind)),
            "the sample has no {kind} record"
        );
    }
    for cut in 0..good.len() {
        match decode_log(p, &good[..cut], 4096) {
            Ok(d) => {
                // The whole frames before the cut: a prefix of the records,
                // each kept from a frame that ends at or before the cut.
                assert!(cut >= LOG_HEADER_LEN);
                let n = d.records.len();
                assert_eq!(d.records[..], whole.records[..n]);
                let whole_frames = whole.offsets.iter().filter(|&&o| o < cut as u64);
                assert!(n <= whole_frames.count(), "cut {cut}");
                if n < whole.records.len() {
                    assert!(whole.offsets[n] >= d.offsets.last().copied().unwrap_or(0));
                }
            }
            Err(e) => assert!(
                cut < LOG_HEADER_LEN && matches!(e, Error::CorruptFile { .. }),
                "cut {cut}: {e}"
            ),
        }
    }
    for bit in 0..good.len() * 8 {
        let mut b = good.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        match decode_log(p, &b, 4096) {
            Ok(d) => {
                // Every frame is written twice: a bit flipped in one copy
                // is read from the other, and reported.
                assert!(bit >= LOG_HEADER_LEN * 8, "bit {bit} in the header");
                assert_eq!(d.records, whole.records, "bit {bit}: a record was lost");
                assert!(!d.mended.is_empty(), "bit {bit} flipped was not noticed");
            }
            Err(e) => assert!(is_typed(&e), "bit {bit}: {e}"),
        }
    }
    assert!(decode_log(p, &vec![0u8; good.len()], 4096).is_err());
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x106);
    for _ in 0..2000 {
        let len = rng.random_range(0..300);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if rng.random_bool(0.5) && junk.len() >= LOG_HEADER_LEN {
            // A valid header over junk records.
            junk[..LOG_HEADER_LEN].copy_from_slice(&good[..LOG_HEADER_LEN]);
        }
        if let Err(e) = decode_log(p, &junk, 4096) {
            assert!(is_typed(&e), "{e}");
        }
    }
}

#[test]
fn checksum_table_open_corpus() {
    // Opening a table whose log has one bit flipped: a typed error, or a
    // table that accepts nothing it was not told (each page verifies with
    // bytes it was written with, or fails), and that a compaction and a
    // reopen leave exactly as it was (checksums and unallocated marks).
    let (base, log_name, good) = sample_durable_table();
    let written: Vec<Vec<u8>> = [1u8, 2, 3, 4, 5, 6, 7, 8, 0x33, 0x11]
        .iter()
        .map(|&f| vec![f; 4096])
        .collect();
    let state = |t: &ChecksumTable| -> Vec<(Option<u32>, bool)> {
        (0..SAMPLE_PAGES + 1)
            .map(|p| (t.get(PageId(p)), t.is_free(PageId(p))))
            .collect()
    };
    for bit in (0..good.len() * 8).step_by(3).chain([usize::MAX]) {
        let mut b = good.clone();
        if bit != usize::MAX {
            b[bit / 8] ^= 1 << (bit % 8);
        }
        let files = Arc::new(CrashFiles::new());
        files.set_file("t", base.clone());
        files.set_file(&log_name, b);
        match TableConfig::new(4096).open_on(files.clone(), "t") {
            Ok(t) => {
                for p in 0..SAMPLE_PAGES + 1 {
                    assert!(
                        t.verify(PageId(p), &[0xEE; 4096]).is_err(),
                        "bit {bit}: page {p} accepts bytes never written"
                    );
                }
                assert!(
                    written.iter().any(|w| t.verify(PageId(0), w).is_ok()),
                    "bit {bit}: page 0 lost"
                );
                let before = state(&t);
                t.compact().unwrap();
                drop(t);
                let again = TableConfig::new(4096).open_on(files, "t").unwrap();
                assert_eq!(state(&again), before, "bit {bit}: changed by a compaction");
                if bit == usize::MAX {
                    assert!(before[2].1 && before[8].1 && before[10].1, "{before:?}");
                    assert!(before[9].0.is_some() && before[11] == (None, false));
                }
            }
            Err(e) => assert!(is_typed(&e), "bit {bit}: {e}"),
        }
    }
}
