//! Fuzzes the snapshot file decoder: any bytes must decode or give a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = selfheal::snapshot::decode_snapshot(data) {
        assert!(s.stored_pages <= s.page_count);
    }
});
