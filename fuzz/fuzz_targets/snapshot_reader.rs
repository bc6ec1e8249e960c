//! Fuzzes the snapshot file decoder (format 2, and format 1 which is still
//! read): any bytes must decode or give a typed error, never panic. Run it
//! with libFuzzer's `-malloc_limit_mb=64`: the decoder never allocates more
//! than about 256 times its input (lz4's largest ratio), so a bigger
//! allocation from a small input is a bug it reports.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match selfheal::testing::decode_snapshot(data) {
        Ok(s) => assert!(s.stored_pages <= s.page_count),
        Err(e) => assert!(
            matches!(
                e,
                selfheal::Error::CorruptFile { .. } | selfheal::Error::UnsupportedVersion { .. }
            ),
            "untyped error {e:?}"
        ),
    }
});
