//! Numbered pages sealed through a detector: the store most tests of
//! rollback, healing and failure reporting start from.

use crate::corruption::CorruptionDetector;
use crate::error::Result;
use crate::types::PageId;

/// Seals pages `0..pages` of `det`'s store through `det`, in order, one
/// [`write_sealed`](CorruptionDetector::write_sealed) each: page `p` is
/// written full of the byte `p as u8 + 1`, wrapping (page 0 holds `0x01`,
/// page 1 `0x02`, …, page 254 `0xff`, page 255 zeros, page 256 `0x01`
/// again). Under [`ChecksumPlacement::Trailer`] the page's last
/// [`TRAILER_LEN`] bytes then hold the trailer instead; under a sidecar
/// table the whole page holds the byte. The buffers are the store's page
/// size. Nothing is synced.
///
/// [`ChecksumPlacement::Trailer`]: crate::ChecksumPlacement::Trailer
/// [`TRAILER_LEN`]: crate::checksum::TRAILER_LEN
///
/// # Errors
/// The first page's error from
/// [`write_sealed`](CorruptionDetector::write_sealed) (a page past the
/// store's end, a sealing, table or store error); the pages before it stay
/// written.
pub fn seal_numbered_pages(det: &CorruptionDetector, pages: u64) -> Result<()> {
    let mut buf = vec![0u8; det.store().page_size()];
    for p in 0..pages {
        // `p as u8` keeps the low byte on purpose: the numbering wraps.
        buf.fill((p as u8).wrapping_add(1));
        det.write_sealed(PageId(p), &mut buf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::checksum::{payload_len, ChecksumPlacement};
    use crate::corruption::CorruptionConfig;
    use crate::error::Error;
    use crate::host::PageStore;
    use crate::store::MemStore;
    use crate::testing::both_placements;

    const PS: usize = 512;

    #[test]
    fn every_page_reads_back_verified_full_of_its_number_plus_one() {
        for (name, placement) in both_placements(PS) {
            let host_len = match placement {
                ChecksumPlacement::Trailer => payload_len(PS),
                ChecksumPlacement::Sidecar(_) => PS,
            };
            let raw = Arc::new(MemStore::new(PS, 300).unwrap());
            let det = CorruptionConfig::new(placement).build(raw).unwrap();
            seal_numbered_pages(&det, 300).unwrap();
            let mut buf = vec![0u8; PS];
            for p in 0..300u64 {
                det.read_verified(PageId(p), &mut buf).unwrap();
                let want = match p % 256 {
                    255 => 0,
                    low => u8::try_from(low + 1).unwrap(),
                };
                assert!(
                    buf[..host_len].iter().all(|&b| b == want),
                    "{name}: page {p} should be full of {want:#04x}"
                );
            }
        }
    }

    #[test]
    fn fewer_pages_than_the_store_leaves_the_rest_unwritten() {
        for (name, placement) in both_placements(PS) {
            let raw = Arc::new(MemStore::new(PS, 4).unwrap());
            let det = CorruptionConfig::new(placement).build(raw.clone()).unwrap();
            seal_numbered_pages(&det, 2).unwrap();
            let mut buf = vec![0u8; PS];
            det.read_verified(PageId(1), &mut buf).unwrap();
            assert_eq!(buf[0], 2, "{name}");
            raw.read_page(PageId(2), &mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == 0), "{name}: page 2 untouched");
        }
    }

    #[test]
    fn a_page_past_the_store_is_the_detectors_error() {
        for (name, placement) in both_placements(PS) {
            let raw = Arc::new(MemStore::new(PS, 2).unwrap());
            let det = CorruptionConfig::new(placement).build(raw).unwrap();
            let err = seal_numbered_pages(&det, 3).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::PageOutOfRange {
                        page: PageId(2),
                        ..
                    }
                ),
                "{name}: {err:?}"
            );
            let mut buf = vec![0u8; PS];
            det.read_verified(PageId(1), &mut buf).unwrap();
            assert_eq!(buf[0], 2, "{name}: the pages before it stay written");
        }
    }
}
