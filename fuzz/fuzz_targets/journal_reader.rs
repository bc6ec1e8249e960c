//! Fuzzes the undo journal's segment decoder with untrusted bytes: it must
//! never panic, and whatever it accepts must be self-consistent (consecutive
//! LSNs, record types of the segment's version, marks that claim only LSNs
//! before their own).
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal::testing::journal::{decode_segment, Record, SegmentEnd};

fuzz_target!(|data: &[u8]| {
    if let Ok(scan) = decode_segment(data) {
        assert!(scan.valid_len as usize <= data.len());
        let mut expected = scan.header.first_lsn.0;
        let mut synced = None;
        for r in &scan.records {
            assert_eq!(r.lsn.0, expected);
            expected = expected.wrapping_add(1);
            match &r.record {
                Record::Mark { synced_through } => {
                    assert!(scan.header.version >= 2);
                    assert!(*synced_through < r.lsn);
                    synced = synced.max(Some(*synced_through));
                }
                Record::Undo { before, after, .. } => {
                    assert!(scan.header.version >= 2);
                    assert_eq!(before.len(), after.len());
                }
                Record::UndoV1 { .. } => assert_eq!(scan.header.version, 1),
                _ => {}
            }
        }
        assert!(scan.synced_through >= synced);
        assert_eq!(scan.next_lsn().0, expected);
        if scan.end == SegmentEnd::Clean {
            assert_eq!(scan.valid_len as usize, data.len());
            assert_eq!(scan.synced_through, synced);
            assert!(!scan.torn_possible);
        }
    }
});
