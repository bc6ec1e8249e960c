//! Trailer verification of arbitrary page bytes never panics, and a page that
//! verifies stays valid when sealed again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal::checksum::trailer;
use selfheal::PageId;

fuzz_target!(|data: &[u8]| {
    let page = PageId(data.first().copied().unwrap_or(0).into());
    if trailer::verify(page, data).is_ok() {
        let mut again = data.to_vec();
        trailer::seal(page, &mut again).unwrap();
        assert_eq!(again, data);
    }
});
