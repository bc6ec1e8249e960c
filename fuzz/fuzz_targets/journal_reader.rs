//! Fuzzes the undo journal's segment decoder with untrusted bytes: it must
//! never panic, and whatever it accepts must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal::rollback::journal::{decode_segment, SegmentEnd};

fuzz_target!(|data: &[u8]| {
    if let Ok(scan) = decode_segment(data) {
        assert!(scan.valid_len as usize <= data.len());
        let mut expected = scan.header.first_lsn.0;
        for r in &scan.records {
            assert_eq!(r.lsn.0, expected);
            expected = expected.wrapping_add(1);
        }
        if scan.end == SegmentEnd::Clean {
            assert_eq!(scan.valid_len as usize, data.len());
        }
    }
});
