//! Goal: the decoders of untrusted bytes that have fuzz targets in `fuzz/` are
//! also exercised on stable CI. Method: a generated corpus — every truncation,
//! every single-bit flip in the frame, zeroed and junk files — is decoded; each
//! must give a typed error or (for the undamaged input) the original value,
//! never a panic.

use std::path::Path;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use selfheal::checksum::log::{decode_log, LogEnd, LOG_HEADER_LEN, RECORD_LEN};
use selfheal::checksum::{trailer, TableConfig};
use selfheal::testing::CrashFiles;
use selfheal::{ChecksumPlacement, ChecksumTable, DetectorConfig, Error, MemStore, PageId};

fn sample_table() -> Vec<u8> {
    let t = ChecksumTable::new(4096).unwrap();
    for p in [0u64, 3, 17, 40] {
        t.seal(PageId(p), &vec![p as u8 + 1; 4096]).unwrap();
    }
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

/// A durable table's files after some writes, syncs and a failed write:
/// (base, name of the log, log).
fn sample_durable_table() -> (Vec<u8>, String, Vec<u8>) {
    let files = Arc::new(CrashFiles::new());
    let table = Arc::new(TableConfig::new(4096).open_on(files.clone(), "t").unwrap());
    let store = Arc::new(MemStore::new(4096, 8).unwrap());
    let det = DetectorConfig::new(ChecksumPlacement::Sidecar(table.clone()))
        .build(store)
        .unwrap();
    for p in 0..8u8 {
        det.write_sealed(PageId(u64::from(p)), &mut vec![p + 1; 4096])
            .unwrap();
    }
    det.sync().unwrap();
    det.write_sealed(PageId(3), &mut vec![0x33; 4096]).unwrap();
    det.resize(6).unwrap();
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
    for cut in 0..good.len() {
        match decode_log(p, &good[..cut], 4096) {
            Ok(d) => {
                assert!(cut >= LOG_HEADER_LEN);
                assert_eq!(
                    d.records[..],
                    whole.records[..(cut - LOG_HEADER_LEN) / RECORD_LEN]
                );
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
                let n = d.records.len();
                assert!(n < whole.records.len(), "bit {bit} flipped was not noticed");
                assert_eq!(
                    d.records[..],
                    whole.records[..n],
                    "bit {bit}: a changed record was kept"
                );
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
    // bytes it was written with, or fails).
    let (base, log_name, good) = sample_durable_table();
    let written: Vec<Vec<u8>> = [1u8, 2, 3, 4, 5, 6, 7, 8, 0x33, 0x11]
        .iter()
        .map(|&f| vec![f; 4096])
        .collect();
    for bit in (0..good.len() * 8).step_by(3) {
        let mut b = good.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let files = Arc::new(CrashFiles::new());
        files.set_file("t", base.clone());
        files.set_file(&log_name, b);
        match TableConfig::new(4096).open_on(files, "t") {
            Ok(t) => {
                for p in 0..8 {
                    assert!(
                        t.verify(PageId(p), &[0xEE; 4096]).is_err(),
                        "bit {bit}: page {p} accepts bytes never written"
                    );
                }
                assert!(
                    written.iter().any(|w| t.verify(PageId(0), w).is_ok()),
                    "bit {bit}: page 0 lost"
                );
            }
            Err(e) => assert!(is_typed(&e), "bit {bit}: {e}"),
        }
    }
}
