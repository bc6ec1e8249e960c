//! Page contents and file damage for snapshot tests, examples and benches.

use rand::{Rng, SeedableRng};

use crate::error::Result;
use crate::host::PageStore;
use crate::types::PageId;

const WORDS: [&[u8]; 12] = [
    b"page ", b"row=", b"commit ", b"index ", b"value:", b"key ", b"lsn ", b"txn ", b"null ",
    b"ok ", b"user_", b"\n",
];

/// Fills `buf` with realistic, semi-compressible contents for `page`: the
/// first half seeded random bytes, the second half text-like repetitive
/// words. Never all zeros.
pub fn semi_compressible_page(seed: u64, page: PageId, buf: &mut [u8]) {
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ page.0.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let half = buf.len() / 2;
    rng.fill(&mut buf[..half]);
    let mut i = half;
    while i < buf.len() {
        let w = WORDS[rng.random_range(0..WORDS.len())];
        let n = w.len().min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&w[..n]);
        i += n;
    }
    buf[0] |= 1;
}

/// Writes [`semi_compressible_page`] contents to every page of `store`.
///
/// # Errors
/// The store's write error.
pub fn fill_store(store: &dyn PageStore, seed: u64) -> Result<()> {
    let mut buf = vec![0u8; store.page_size()];
    for p in 0..store.page_count() {
        semi_compressible_page(seed, PageId(p), &mut buf);
        store.write_page(PageId(p), &buf)?;
    }
    Ok(())
}

/// Damaged copies of a file's `bytes`, each with a label: a bit flip, a
/// zeroed window, a junk window at about `per_kind` positions spread over
/// the whole file (always including the first and last bytes), truncations
/// at as many lengths, an all-zero file and an empty file. Every copy
/// differs from `bytes`.
#[must_use]
pub fn damaged_copies(bytes: &[u8], per_kind: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let len = bytes.len();
    if len == 0 {
        return out;
    }
    let step = (len / per_kind.max(1)).max(1);
    let mut positions: Vec<usize> = (0..len).step_by(step).collect();
    positions.push(len - 1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for &i in &positions {
        let mut b = bytes.to_vec();
        b[i] ^= 1 << (i % 8);
        out.push((format!("bit flip at {i}"), b));
        let end = (i + 32).min(len);
        if bytes[i..end].iter().any(|&x| x != 0) {
            let mut z = bytes.to_vec();
            z[i..end].fill(0);
            out.push((format!("zeros at {i}..{end}"), z));
        }
        let mut j = bytes.to_vec();
        rng.fill(&mut j[i..end]);
        if j != bytes {
            out.push((format!("junk at {i}..{end}"), j));
        }
        out.push((format!("truncated to {i}"), bytes[..i].to_vec()));
    }
    if bytes.iter().any(|&x| x != 0) {
        out.push(("all zeros".into(), vec![0; len]));
    }
    out.push(("appended byte".into(), [bytes, &[0x55]].concat()));
    out
}
