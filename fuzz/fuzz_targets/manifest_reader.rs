//! Fuzzes the snapshot manifest decoder: any bytes must decode or give a typed
//! error, and a decoded manifest never names a file outside its directory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = selfheal::snapshot::decode_manifest(data) {
        for s in list {
            assert!(!s.file_name.contains('/') && s.file_name != "..");
        }
    }
});
