//! Fuzzes the snapshot manifest decoder: any bytes must decode or give a typed
//! error, and every entry of a decoded manifest names exactly the snapshot
//! file of its id, so never a file outside the directory or another file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = selfheal::testing::decode_manifest(data) {
        let mut last = 0;
        for s in list {
            assert_eq!(s.file_name, selfheal::snapshot::snapshot_file_name(s.id));
            assert!(s.id > last, "ids ascend, so none repeats");
            last = s.id;
        }
    }
});
