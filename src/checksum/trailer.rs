//! Trailer placement: seal and verify pages whose last 16 bytes are the
//! library's (layout in the [parent module](super)).

use crate::error::{Error, Result};
use crate::types::PageId;

use super::layout::{is_all_zero, MIN_PAGE_SIZE, TRAILER_LEN};
use crate::digest::page_crc;

const TRAILER_MAGIC: u16 = 0x4853;
const TRAILER_VERSION: u8 = 1;

/// Writes the trailer for `page` into the last [`TRAILER_LEN`] bytes of `buf`.
///
/// # Errors
/// [`Error::BufferSize`] when `buf` is shorter than [`MIN_PAGE_SIZE`].
pub fn seal(page: PageId, buf: &mut [u8]) -> Result<()> {
    if buf.len() < MIN_PAGE_SIZE {
        return Err(Error::BufferSize {
            expected: MIN_PAGE_SIZE,
            actual: buf.len(),
        });
    }
    let t = buf.len() - TRAILER_LEN;
    buf[t..t + 8].copy_from_slice(&page.0.to_le_bytes());
    buf[t + 8..t + 10].copy_from_slice(&TRAILER_MAGIC.to_le_bytes());
    buf[t + 10] = TRAILER_VERSION;
    buf[t + 11] = 0;
    let crc = page_crc(page, &buf[..buf.len() - 4]);
    let n = buf.len();
    buf[n - 4..].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Whether `buf` ends in a trailer header this crate writes (magic and
/// version), whatever its page number and CRC: the page was sealed once.
#[must_use]
pub fn has_magic(buf: &[u8]) -> bool {
    let n = buf.len();
    if n < MIN_PAGE_SIZE {
        return false;
    }
    let t = n - TRAILER_LEN;
    u16::from_le_bytes([buf[t + 8], buf[t + 9]]) == TRAILER_MAGIC && buf[t + 10] == TRAILER_VERSION
}

/// Verifies `buf` as the contents of `page`.
///
/// # Errors
/// [`Error::ZeroedPage`], [`Error::InvalidTrailer`], [`Error::MisplacedPage`]
/// or [`Error::ChecksumMismatch`], in that order of diagnosis; and
/// [`Error::BufferSize`] for a buffer shorter than [`MIN_PAGE_SIZE`].
pub fn verify(page: PageId, buf: &[u8]) -> Result<()> {
    let n = buf.len();
    if n < MIN_PAGE_SIZE {
        return Err(Error::BufferSize {
            expected: MIN_PAGE_SIZE,
            actual: n,
        });
    }
    let t = n - TRAILER_LEN;
    let stored_page = u64::from_le_bytes(buf[t..t + 8].try_into().expect("8 bytes"));
    let magic = u16::from_le_bytes(buf[t + 8..t + 10].try_into().expect("2 bytes"));
    let stored_crc = u32::from_le_bytes(buf[n - 4..].try_into().expect("4 bytes"));
    let reserved = buf[t + 11];
    if magic == TRAILER_MAGIC && buf[t + 10] == TRAILER_VERSION && reserved == 0 {
        let actual = page_crc(page, &buf[..n - 4]);
        if actual == stored_crc && stored_page == page.0 {
            return Ok(());
        }
        if stored_page != page.0 && page_crc(PageId(stored_page), &buf[..n - 4]) == stored_crc {
            return Err(Error::MisplacedPage {
                page,
                found: PageId(stored_page),
            });
        }
        return Err(Error::ChecksumMismatch {
            page,
            expected: stored_crc,
            actual,
        });
    }
    if is_all_zero(buf) {
        return Err(Error::ZeroedPage { page });
    }
    let reason = if magic != TRAILER_MAGIC {
        format!("magic {magic:#06x}, expected {TRAILER_MAGIC:#06x}")
    } else if buf[t + 10] != TRAILER_VERSION {
        format!("version {}, expected {TRAILER_VERSION}", buf[t + 10])
    } else {
        // Seal writes 0; a page that carries anything else was not sealed
        // by this version, whatever its CRC says.
        format!("reserved byte {reserved:#04x}, expected 0")
    };
    Err(Error::InvalidTrailer { page, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealed(page: u64, size: usize, fill: u8) -> Vec<u8> {
        let mut b = vec![fill; size];
        seal(PageId(page), &mut b).unwrap();
        b
    }

    #[test]
    fn zero_page_never_verifies() {
        for size in [64, 4096, 8192] {
            assert!(matches!(
                verify(PageId(0), &vec![0u8; size]),
                Err(Error::ZeroedPage { .. })
            ));
        }
    }

    #[test]
    fn a_non_zero_reserved_byte_fails_even_under_a_matching_crc() {
        for size in [MIN_PAGE_SIZE, 4096] {
            let mut b = sealed(3, size, 0x5A);
            let t = size - TRAILER_LEN;
            b[t + 11] = 0x80;
            let crc = page_crc(PageId(3), &b[..size - 4]);
            b[size - 4..].copy_from_slice(&crc.to_le_bytes());
            match verify(PageId(3), &b) {
                Err(Error::InvalidTrailer { page, reason }) => {
                    assert_eq!(page, PageId(3));
                    assert!(reason.contains("reserved byte 0x80"), "{reason}");
                }
                other => panic!("expected InvalidTrailer, got {other:?}"),
            }
        }
    }

    #[test]
    fn misdirected_write_is_named() {
        let b = sealed(7, 4096, 0xAB);
        assert!(verify(PageId(7), &b).is_ok());
        match verify(PageId(9), &b) {
            Err(Error::MisplacedPage { page, found }) => {
                assert_eq!((page, found), (PageId(9), PageId(7)));
            }
            other => panic!("expected MisplacedPage, got {other:?}"),
        }
    }

    proptest! {
        #[test]
        fn trailer_round_trip(page in any::<u64>(), data in proptest::collection::vec(any::<u8>(), MIN_PAGE_SIZE..1024)) {
            let mut b = data;
            seal(PageId(page), &mut b).unwrap();
            prop_assert!(verify(PageId(page), &b).is_ok());
        }

        #[test]
        fn any_single_bit_flip_is_caught(page in 0u64..1000, data in proptest::collection::vec(any::<u8>(), MIN_PAGE_SIZE..600), bit in any::<usize>()) {
            let mut b = data;
            seal(PageId(page), &mut b).unwrap();
            let i = (bit / 8) % b.len();
            b[i] ^= 1 << (bit % 8);
            let r = verify(PageId(page), &b);
            prop_assert!(r.as_ref().is_err_and(Error::is_corruption), "{:?}", r);
        }
    }
}
