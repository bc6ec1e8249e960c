//! Goal: the decoders of untrusted bytes that have fuzz targets in `fuzz/` are
//! also exercised on stable CI. Method: a generated corpus — every truncation,
//! every single-bit flip in the frame, zeroed and junk files — is decoded; each
//! must give a typed error or (for the undamaged input) the original value,
//! never a panic.

use std::path::Path;

use rand::{Rng, SeedableRng};
use selfheal::checksum::trailer;
use selfheal::{ChecksumTable, Error, PageId};

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
