//! Fuzzes the undo journal's state-file decoder: any bytes must decode or
//! give a typed error, and a decoded state is in range and encodes back to
//! the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal::testing::journal::{JournalState, MAX_HEADER_COUNTER};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = JournalState::decode(std::path::Path::new("state"), data) {
        assert!(s.oldest >= 1 && s.newest.saturating_add(1) >= s.oldest);
        assert!(s.txn_reserved_end <= MAX_HEADER_COUNTER);
        assert_eq!(s.encode(), data);
    }
});
