//! Page fingerprints: the 64-bit value a snapshot keeps for every page of
//! the state it describes, which both checks a stored page when it is read
//! back and tells an incremental snapshot whether a page changed since its
//! parent.
//!
//! The fingerprint of `page` with contents `bytes` is XXH3-64
//! (`XXH3_64bits_withSeed`) of `bytes` with the page number as the seed.
//!
//! # Why not a CRC of the page
//!
//! A page sealed with the checksum trailer carries, in its last 4 bytes, the
//! CRC32 of everything before them (and of its page number). CRC is affine
//! over GF(2), so the CRC32 of such a whole page is one constant (the CRC
//! residue) whatever the contents: comparing whole-page CRCs finds no
//! changed page at all. A CRC32 under a second initial value differs from
//! the first only by a term fixed by the length, so it collapses the same
//! way, and the CRC32 of all but the last 4 bytes is a fixed function of
//! those 4 bytes: each carries at most 32 bits about the page. XXH3 is not
//! linear, so it does not collapse on pages that carry their own checksum,
//! sidecar- or trailer-sealed alike.
//!
//! # Contract
//!
//! - Deterministic across runs, builds and platforms (the value is stored in
//!   snapshot files, format 2).
//! - Different contents of one page get the same fingerprint with a
//!   probability of about 2⁻⁶⁴ per changed page; a changed page whose
//!   fingerprint happens to match is missed by comparison (the snapshot then
//!   holds the parent's copy of it).
//! - The page number is the seed, so bytes stored at the wrong page's slot
//!   fail the integrity check on read.

/// The fingerprint a snapshot keeps for page `page` holding `bytes`
/// (format 2): XXH3-64 of `bytes` seeded with `page`.
///
/// ```
/// use selfheal::snapshot::page_fingerprint;
/// let a = page_fingerprint(3, &[1u8; 4096]);
/// assert_ne!(a, page_fingerprint(3, &[2u8; 4096]));
/// assert_ne!(a, page_fingerprint(4, &[1u8; 4096]));
/// ```
#[must_use]
pub fn page_fingerprint(page: u64, bytes: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot_with_seed(page, bytes)
}

/// Below this many pages a batch is fingerprinted on the calling thread.
const PARALLEL_MIN_PAGES: usize = 64;

/// Fingerprints of the pages in `bytes` (page ids from `first`) into `out`,
/// on up to `threads` threads (named like the compression workers).
pub(crate) fn parallel_fingerprints(
    first: u64,
    bytes: &[u8],
    page_size: usize,
    out: &mut [u64],
    threads: usize,
) {
    let n = out.len();
    debug_assert_eq!(bytes.len(), n * page_size);
    let per = n.div_ceil(threads.max(1)).max(1);
    let work = |start: usize, out: &mut [u64]| {
        for (i, o) in out.iter_mut().enumerate() {
            let p = start + i;
            *o = page_fingerprint(first + p as u64, &bytes[p * page_size..(p + 1) * page_size]);
        }
    };
    if threads <= 1 || n < PARALLEL_MIN_PAGES {
        work(0, out);
        return;
    }
    let all_spawned = std::thread::scope(|s| {
        let mut parts = out.chunks_mut(per).enumerate();
        let (_, first_part) = parts.next().expect("n > 0");
        let mut ok = true;
        for (k, part) in parts {
            let work = &work;
            ok &= std::thread::Builder::new()
                .name(super::format::WORKER_NAME.into())
                .spawn_scoped(s, move || work(k * per, part))
                .is_ok();
        }
        work(0, first_part);
        ok
    });
    if !all_spawned {
        work(0, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{page_crc, trailer, ChecksumTable};
    use crate::types::PageId;
    use proptest::prelude::*;

    /// `payload` as page `page` would be stored under each placement.
    fn sealed_both(page: u64, payload: &[u8]) -> [Vec<u8>; 2] {
        let mut t = payload.to_vec();
        trailer::seal(PageId(page), &mut t).unwrap();
        let table = ChecksumTable::new(payload.len()).unwrap();
        let mut s = payload.to_vec();
        s[0] |= 1; // the table refuses to seal an all-zero page
        table.seal(PageId(page), &s).unwrap();
        table.verify(PageId(page), &s).unwrap();
        [t, s]
    }

    #[test]
    fn whole_page_crcs_of_trailer_sealed_pages_collapse_and_fingerprints_do_not() {
        let a = sealed_both(3, &[0x11; 256]);
        let b = sealed_both(3, &[0x22; 256]);
        // The flaw that fingerprints exist to avoid.
        assert_eq!(page_crc(PageId(3), &a[0]), page_crc(PageId(3), &b[0]));
        for k in 0..2 {
            assert_ne!(a[k], b[k]);
            assert_ne!(page_fingerprint(3, &a[k]), page_fingerprint(3, &b[k]));
        }
        // The page number is part of it.
        assert_ne!(page_fingerprint(3, &a[1]), page_fingerprint(4, &a[1]));
    }

    #[test]
    fn the_function_is_fixed() {
        // Stored in files: it must never change under a build.
        assert_eq!(page_fingerprint(0, b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(
            page_fingerprint(7, &[0u8; 4096]),
            page_fingerprint(7, &[0u8; 4096])
        );
    }

    #[test]
    fn parallel_matches_serial() {
        let ps = 128;
        let bytes: Vec<u8> = (0..ps * 300).map(|i| (i * 7 % 251) as u8).collect();
        let mut one = vec![0u64; 300];
        let mut many = vec![0u64; 300];
        parallel_fingerprints(10, &bytes, ps, &mut one, 1);
        parallel_fingerprints(10, &bytes, ps, &mut many, 4);
        assert_eq!(one, many);
        assert_eq!(one[5], page_fingerprint(15, &bytes[5 * ps..6 * ps]));
    }

    proptest! {
        /// Distinct contents of one sealed page (either placement) have
        /// distinct fingerprints.
        #[test]
        fn sealed_pages_that_differ_have_different_fingerprints(
            page in 0u64..1000,
            a in proptest::collection::vec(any::<u8>(), 128),
            flip in 0usize..(128 - crate::checksum::TRAILER_LEN) * 8,
        ) {
            let mut b = a.clone();
            b[flip / 8] ^= 1 << (flip % 8);
            let sa = sealed_both(page, &a);
            let sb = sealed_both(page, &b);
            for k in 0..2 {
                if sa[k] != sb[k] {
                    prop_assert_ne!(page_fingerprint(page, &sa[k]), page_fingerprint(page, &sb[k]));
                }
            }
        }
    }
}
