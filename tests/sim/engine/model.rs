//! The model: what every page must hold (its last acknowledged contents and
//! their LSN), what it may hold besides (writes that were issued but never
//! acknowledged), what each snapshot holds, and what the host's records
//! answer its expected-LSN hook.

use std::collections::{BTreeMap, BTreeSet};

use selfheal::checksum::payload_len;
use selfheal::corruption::LsnExpectation;
use selfheal::{ChecksumPlacement, Lsn, PageId};

use super::plan::{Placement, PAGES, PAGE_SIZE};

/// One version of a page: its LSN and the full page as sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The LSN it carries in its first 8 bytes.
    pub lsn: u64,
    /// The whole page, sealed (with its trailer, under the trailer placement).
    pub page: Vec<u8>,
}

/// The host's bytes of a page: the whole page, or all but the trailer.
pub fn usable_len(placement: Placement) -> usize {
    match placement {
        Placement::Trailer => payload_len(PAGE_SIZE),
        _ => PAGE_SIZE,
    }
}

/// The page `page` holds at `lsn`: the LSN, the page number, and bytes that
/// depend on both; sealed under the trailer placement.
pub fn version(placement: Placement, page: u64, lsn: u64) -> Version {
    let mut buf = vec![0u8; PAGE_SIZE];
    let n = usable_len(placement);
    buf[..8].copy_from_slice(&lsn.to_le_bytes());
    buf[8..16].copy_from_slice(&page.to_le_bytes());
    let mut x = page.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ lsn.wrapping_mul(0xD1B5_4A32_D192_ED03);
    for b in &mut buf[16..n] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    if placement == Placement::Trailer {
        ChecksumPlacement::Trailer
            .seal(PageId(page), &mut buf)
            .expect("a page of the store's size seals");
    }
    Version { lsn, page: buf }
}

/// The page LSN the host reads from a page's first 8 bytes (untrusted bytes:
/// a short page has none).
pub fn page_lsn(bytes: &[u8]) -> Option<selfheal::Lsn> {
    let b: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let lsn = u64::from_le_bytes(b);
    (lsn > 0).then_some(selfheal::Lsn(lsn))
}

/// What the store must and may hold.
#[derive(Clone, Debug)]
pub struct Model {
    /// The checksum placement (what bytes of a page the host owns).
    pub placement: Placement,
    /// Per page, its last acknowledged version.
    pub acked: Vec<Version>,
    /// Per page, versions written but not acknowledged, that may be there.
    pub maybe: Vec<Vec<Version>>,
    /// Per snapshot id, the version of every page it holds.
    pub snapshots: BTreeMap<u64, Vec<Version>>,
    /// Pages a restore that failed twice may have left at a version of a
    /// snapshot's chain, not acknowledged since: no replica need hold it.
    pub half_restored: BTreeSet<u64>,
    /// Pages a transaction that has not finished (committed or rolled back)
    /// may have written: the host cannot name their exact version until
    /// the journal's recovery has run.
    pub in_txn: BTreeSet<u64>,
}

impl Model {
    /// A store whose page `p` holds its version at LSN `p + 1`.
    pub fn new(placement: Placement) -> Model {
        Model {
            placement,
            acked: (0..PAGES).map(|p| version(placement, p, p + 1)).collect(),
            maybe: vec![Vec::new(); PAGES as usize],
            snapshots: BTreeMap::new(),
            half_restored: BTreeSet::new(),
            in_txn: BTreeSet::new(),
        }
    }

    /// Whether `bytes` are what page `page` may hold: its acknowledged
    /// version or one written since and not acknowledged (host's bytes only).
    pub fn allows(&self, page: u64, bytes: &[u8]) -> bool {
        let n = usable_len(self.placement);
        let p = page as usize;
        self.acked[p].page[..n] == bytes[..n]
            || self.maybe[p].iter().any(|v| v.page[..n] == bytes[..n])
    }

    /// What page `page` must hold, for messages.
    pub fn describe(&self, page: u64, bytes: &[u8]) -> String {
        let p = page as usize;
        format!(
            "page {page} holds LSN {:?} (page number field {:?}); the model has LSN {} acknowledged{}",
            page_lsn(bytes).map(|l| l.0),
            bytes.get(8..16).map(|b| u64::from_le_bytes(b.try_into().unwrap())),
            self.acked[p].lsn,
            if self.maybe[p].is_empty() {
                String::new()
            } else {
                format!(
                    " and may hold LSN {:?}",
                    self.maybe[p].iter().map(|v| v.lsn).collect::<Vec<_>>()
                )
            }
        )
    }

    /// A write of `v` to `page` was acknowledged.
    pub fn ack(&mut self, page: u64, v: Version) {
        self.acked[page as usize] = v;
        self.maybe[page as usize].clear();
        self.half_restored.remove(&page);
    }

    /// What the host's durable records say page `page` must carry (its
    /// expected-LSN hook): exactly the acknowledged version when no other
    /// write of the page may have reached the disk (nothing written since
    /// and not acknowledged: a restore or a rollback acknowledged puts an
    /// older LSN back, and a lost write of it leaves the replaced, newer
    /// one) or when a restore was cut short; otherwise the oldest version
    /// the page may durably hold (an unacknowledged write, or a transaction
    /// the journal's recovery settles).
    pub fn expected_lsn(&self, page: u64) -> LsnExpectation {
        let p = page as usize;
        let Some(acked) = self.acked.get(p).map(|v| v.lsn) else {
            return LsnExpectation::Nothing;
        };
        let maybe = &self.maybe[p];
        if self.in_txn.contains(&page) {
            return LsnExpectation::AtLeast(Lsn(maybe.iter().map(|v| v.lsn).fold(acked, u64::min)));
        }
        // Every version the page may hold carries one LSN (nothing written
        // since, or a failed restore whose chain holds the acknowledged
        // version only): the host knows it exactly, and a floor would let
        // through the newer version a lost write of an earlier restore left
        // on the page (seed 101).
        if maybe.iter().all(|v| v.lsn == acked) {
            return LsnExpectation::Exact(Lsn(acked));
        }
        // A restore cut short (it failed twice, or a crash ended it) may
        // have left the page at any member of its chain, or at the newer
        // version one of its writes failed to replace (lost or misdirected
        // by the disk). The host does not keep that mix: its recovery
        // writes every such page back at its acknowledged version, so that
        // is the one version its records vouch for. The oldest version the
        // page may hold, as a floor, let the replaced newer one through
        // (seeds 4568, 5312): an older version or a newer one is refused
        // and repaired from a replica instead.
        if self.half_restored.contains(&page) {
            return LsnExpectation::Exact(Lsn(acked));
        }
        LsnExpectation::AtLeast(Lsn(maybe.iter().map(|v| v.lsn).fold(acked, u64::min)))
    }
}
