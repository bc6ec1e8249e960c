//! The scrubber's cursor file: the body (and the properties it asserts beyond "no panic") is
//! `selfheal::testing::fuzz::scrub_cursor`, which the normal test suite also runs
//! over this target's committed corpus. An odd first byte fixes the
//! input's checksums up so the decoder behind the frame is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| selfheal::testing::fuzz::scrub_cursor(data));
