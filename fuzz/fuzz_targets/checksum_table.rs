//! The sidecar checksum table decoder never panics and never accepts a table
//! whose re-encoding differs from its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal::ChecksumTable;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = ChecksumTable::decode(std::path::Path::new("fuzz"), data, 4096) {
        assert_eq!(t.encode(), data);
    }
});
