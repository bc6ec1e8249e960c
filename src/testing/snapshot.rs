//! Page contents, sealed stores and file damage for snapshot tests,
//! examples and benches.

use std::sync::Arc;

use rand::{Rng, SeedableRng};

use crate::checksum::{ChecksumPlacement, ChecksumTable, TableConfig};
use crate::corruption::{CorruptionConfig, CorruptionDetector};
use crate::error::Result;
use crate::host::PageStore;
use crate::snapshot::{
    Consistency, SnapshotKind, SnapshotReport, SnapshotRequest, StateSnapshotManager, WriteGate,
};
use crate::store::MemStore;
use crate::types::{Lsn, PageId};

use super::CrashFiles;

const WORDS: [&[u8]; 12] = [
    b"page ", b"row=", b"commit ", b"index ", b"value:", b"key ", b"lsn ", b"txn ", b"null ",
    b"ok ", b"user_", b"\n",
];

/// Takes a snapshot of `kind` of `store` at `lsn` with
/// [`Consistency::Paused`] behind a gate of its own: for a store no writer
/// touches while it runs (a test's), where the host's own gate would pause
/// its writers.
///
/// # Errors
/// As [`StateSnapshotManager::take_snapshot`].
pub fn take_paused(
    m: &StateSnapshotManager,
    store: &dyn PageStore,
    lsn: Lsn,
    kind: SnapshotKind,
) -> Result<SnapshotReport> {
    let gate = WriteGate::new();
    let pause = gate.pause();
    m.take_snapshot(
        Consistency::Paused {
            store,
            pause: &pause,
            lsn,
        },
        SnapshotRequest::new(kind),
    )
}

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

/// Both checksum placements, named, with a fresh sidecar table of
/// `page_size`: every snapshot test of sealed pages runs under each.
///
/// # Panics
/// When `page_size` is not a valid page size for a checksum table.
#[must_use]
pub fn both_placements(page_size: usize) -> Vec<(&'static str, ChecksumPlacement)> {
    vec![
        ("trailer", ChecksumPlacement::Trailer),
        (
            "sidecar",
            ChecksumPlacement::Sidecar(Arc::new(
                ChecksumTable::new(page_size).expect("a valid page size"),
            )),
        ),
    ]
}

/// Every placement a sealed page can have, named: the trailer, an in-memory
/// sidecar table, and a durable sidecar table (on in-memory [`CrashFiles`],
/// so its log and compactions really run). A test of a change detector or a
/// restore over sealed pages runs under each.
///
/// # Panics
/// When `page_size` is not a valid page size for a checksum table.
#[must_use]
pub fn every_placement(page_size: usize) -> Vec<(&'static str, ChecksumPlacement)> {
    let mut out = both_placements(page_size);
    out.push((
        "durable",
        ChecksumPlacement::Sidecar(Arc::new(
            TableConfig::new(page_size)
                .open_on(Arc::new(CrashFiles::new()), "sums")
                .expect("a fresh table on empty in-memory files opens"),
        )),
    ));
    out
}

/// The placements of [`every_placement`] that keep a page's checksums
/// outside the page — the in-memory and the durable sidecar table — so
/// that only a copy of the page's last write verifies (under the trailer
/// an older copy verifies by its own trailer): a test of what a repair may
/// put back runs under each.
///
/// # Panics
/// When `page_size` is not a valid page size for a checksum table.
#[must_use]
pub fn sidecar_placements(page_size: usize) -> Vec<(&'static str, ChecksumPlacement)> {
    every_placement(page_size)
        .into_iter()
        .filter(|(_, p)| matches!(p, ChecksumPlacement::Sidecar(_)))
        .collect()
}

/// An in-memory store whose every page is written through a
/// [`CorruptionDetector`], so that it is really sealed (trailer or sidecar):
/// the store snapshot tests take, change and restore. Page contents are
/// [`semi_compressible_page`] of a `version` seed.
#[derive(Debug)]
pub struct SealedStore {
    raw: Arc<MemStore>,
    det: CorruptionDetector,
}

impl SealedStore {
    /// `pages` pages of `page_size` bytes, each written (sealed) at `version`.
    ///
    /// # Errors
    /// A bad page size or count; the detector's configuration error.
    pub fn new(
        placement: ChecksumPlacement,
        page_size: usize,
        pages: u64,
        version: u64,
    ) -> Result<Self> {
        let raw = Arc::new(MemStore::new(page_size, pages)?);
        let det = CorruptionConfig::new(placement).build(raw.clone())?;
        let s = SealedStore { raw, det };
        for p in 0..pages {
            s.write(p, version)?;
        }
        Ok(s)
    }

    /// Rewrites `page` (sealed) with the contents of `version`.
    ///
    /// # Errors
    /// The detector's error (a page past the end, for example).
    pub fn write(&self, page: u64, version: u64) -> Result<()> {
        let mut buf = vec![0u8; self.raw.page_size()];
        semi_compressible_page(version, PageId(page), &mut buf);
        self.det.write_sealed(PageId(page), &mut buf)
    }

    /// Resizes the store through the detector to `pages`, and writes every
    /// page it gains (sealed) with the contents of `version`, as a host that
    /// grows its file writes the new pages.
    ///
    /// # Errors
    /// The resize's or a write's error.
    pub fn resize(&self, pages: u64, version: u64) -> Result<()> {
        let before = self.raw.page_count();
        self.det.resize(pages)?;
        for p in before..pages {
            self.write(p, version)?;
        }
        Ok(())
    }

    /// The raw store (what the detector wraps).
    #[must_use]
    pub fn raw(&self) -> &Arc<MemStore> {
        &self.raw
    }

    /// The detector every write goes through.
    #[must_use]
    pub fn detector(&self) -> &CorruptionDetector {
        &self.det
    }

    /// Every page's raw bytes, in order.
    #[must_use]
    pub fn bytes(&self) -> Vec<u8> {
        self.raw.to_bytes()
    }

    /// The raw bytes of `page`.
    ///
    /// # Errors
    /// The store's read error.
    pub fn page(&self, page: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.raw.page_size()];
        self.raw.read_page(PageId(page), &mut buf)?;
        Ok(buf)
    }
}
