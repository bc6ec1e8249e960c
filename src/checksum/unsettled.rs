//! The unsettled versions of a durable table's pages, in memory: one slot
//! per page that has some, found through the page's own entry, whose spare
//! bits hold the slot's index — so the write path hashes nothing, and a
//! settle walks the slots in order.
//!
//! Entry of a page (64 bits, all changed under the `unsettled` lock):
//!
//! | bits   | meaning                                                  |
//! |--------|----------------------------------------------------------|
//! | 0..32  | settled CRC32 (when bit 32 is set)                       |
//! | 32     | a settled checksum is present                            |
//! | 33     | the page is marked unallocated (never with bit 32)       |
//! | 34     | the page has unsettled versions                          |
//! | 35..64 | index of its slot (when bit 34 is set)                   |
//!
//! Only bits 0..34 are ever written to a file (a base file's entry is 0, a
//! checksum, or exactly bit 33). A page marked unallocated that is written
//! again keeps its mark, with bit 34, until a sync settles the write.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};

use super::entries::{PRESENT, SETTLED_BITS, UNSETTLED};

const SLOT_SHIFT: u32 = 35;
/// The most pages that can have unsettled versions at once (2²⁹).
pub(super) const SLOTS_MAX: usize = 1 << (64 - SLOT_SHIFT);

/// One unsettled version of a page.
#[derive(Clone, Copy, Debug)]
pub(super) struct Version {
    pub(super) crc: u32,
    pub(super) seq: u64,
    pub(super) state: State,
}

/// Where the write of a version stands (in memory only: every version read
/// back at open is `Unknown`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Announced as change `index` of batch `batch`; what became of its
    /// write is that batch's [`Outcome`] once it is recorded.
    InFlight { batch: u32, index: u32 },
    /// Its write failed, or it was read back at open: the page may or may
    /// not hold it. A sync never settles it; a read of the page that finds
    /// it does (`ChecksumTable::resolve`).
    Unknown,
    /// Its write returned (or the page was read holding it) in this sync
    /// generation: the store's sync after the next barrier makes it durable.
    Written(u64),
}

/// What became of a batch's writes: the first `written` returned in sync
/// generation `generation`, the rest failed or were never issued. Recorded
/// once per batch, so that finishing a batch costs O(1); its versions take
/// their state from it at the next settle.
#[derive(Clone, Copy, Debug)]
pub(super) struct Outcome {
    pub(super) written: u32,
    pub(super) generation: u64,
}

impl Version {
    /// The state, with a finished batch's outcome applied.
    pub(super) fn effective(&self, outcomes: &Outcomes) -> State {
        match self.state {
            State::InFlight { batch, index } => match outcomes.get(&batch) {
                Some(o) if index < o.written => State::Written(o.generation),
                Some(_) => State::Unknown,
                None => self.state,
            },
            s => s,
        }
    }
}

/// Hashes batch ids (consecutive numbers): a multiply-and-fold is enough
/// and keeps SipHash off the write path.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

/// Outcomes of finished batches, by batch id.
pub(super) type Outcomes = HashMap<u32, Outcome, BuildHasherDefault<IdHasher>>;

/// The unsettled versions of one page, oldest first (a slice through
/// `Deref`). Almost every page has one, which is kept inline: only a page
/// rewritten before a sync allocates.
#[derive(Clone, Debug, Default)]
pub(super) enum Versions {
    #[default]
    Empty,
    One(Version),
    Many(Vec<Version>),
}

impl Deref for Versions {
    type Target = [Version];

    fn deref(&self) -> &[Version] {
        match self {
            Versions::Empty => &[],
            Versions::One(v) => std::slice::from_ref(v),
            Versions::Many(vs) => vs,
        }
    }
}

impl DerefMut for Versions {
    fn deref_mut(&mut self) -> &mut [Version] {
        match self {
            Versions::Empty => &mut [],
            Versions::One(v) => std::slice::from_mut(v),
            Versions::Many(vs) => vs,
        }
    }
}

impl Versions {
    pub(super) fn push(&mut self, v: Version) {
        *self = match std::mem::take(self) {
            Versions::Empty => Versions::One(v),
            Versions::One(a) => Versions::Many(vec![a, v]),
            Versions::Many(mut vs) => {
                vs.push(v);
                Versions::Many(vs)
            }
        };
    }

    /// Removes and returns version `i`.
    pub(super) fn remove(&mut self, i: usize) -> Version {
        match self {
            Versions::Many(vs) => vs.remove(i),
            _ => {
                assert_eq!(i, 0, "index out of range");
                match std::mem::take(self) {
                    Versions::One(v) => v,
                    _ => unreachable!("an empty list has no version 0"),
                }
            }
        }
    }

    /// Removes versions `0..=k`.
    pub(super) fn drain_through(&mut self, k: usize) {
        match self {
            Versions::Many(vs) => {
                vs.drain(..=k);
            }
            _ => {
                assert_eq!(k, 0, "index out of range");
                *self = Versions::Empty;
            }
        }
    }
}

impl FromIterator<Version> for Versions {
    fn from_iter<I: IntoIterator<Item = Version>>(iter: I) -> Self {
        let mut vs = Versions::Empty;
        for v in iter {
            vs.push(v);
        }
        vs
    }
}

/// A page's unsettled versions.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) page: u64,
    pub(super) versions: Versions,
}

/// Every page's unsettled versions (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Unsettled {
    slots: Vec<Slot>,
    /// Versions over all slots.
    pub(super) versions: usize,
    /// Outcomes of finished batches whose versions have not taken them yet.
    pub(super) outcomes: Outcomes,
    /// The id of the next batch (ids wrap; outcomes are cleared by every
    /// settle, and fewer batches than versions run between two).
    pub(super) next_batch: u32,
}

fn slot_of(e: u64) -> Option<usize> {
    (e & UNSETTLED != 0).then_some((e >> SLOT_SHIFT) as usize)
}

impl Unsettled {
    /// Pages with unsettled versions.
    pub(super) fn pages(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn slots(&self) -> &[Slot] {
        &self.slots
    }

    pub(super) fn slots_mut(&mut self) -> &mut [Slot] {
        &mut self.slots
    }

    /// The versions of `page`, whose entry is `e`.
    pub(super) fn get(&self, e: u64, page: u64) -> Option<&Versions> {
        let s = &self.slots[slot_of(e)?];
        debug_assert_eq!(s.page, page, "an entry names the slot of its page");
        Some(&s.versions)
    }

    /// The versions of `page`, whose entry is `e`, to change.
    pub(super) fn get_mut(&mut self, e: u64, page: u64) -> Option<&mut Versions> {
        let s = &mut self.slots[slot_of(e)?];
        debug_assert_eq!(s.page, page, "an entry names the slot of its page");
        Some(&mut s.versions)
    }

    /// Gives `page` (whose entry is `entry` and which has no slot) a slot
    /// holding `versions`, or hands the versions back when there are
    /// [`SLOTS_MAX`] slots already.
    pub(super) fn insert(
        &mut self,
        entry: &AtomicU64,
        page: u64,
        versions: Versions,
    ) -> std::result::Result<&mut Versions, Versions> {
        let e = entry.load(Ordering::Acquire);
        debug_assert!(slot_of(e).is_none(), "page {page} has a slot already");
        let idx = self.slots.len();
        if idx >= SLOTS_MAX {
            return Err(versions);
        }
        self.slots.push(Slot { page, versions });
        entry.store(
            (e & SETTLED_BITS) | UNSETTLED | ((idx as u64) << SLOT_SHIFT),
            Ordering::Release,
        );
        Ok(&mut self.slots[idx].versions)
    }

    /// Visits every slot in order with `f`, which may change its versions
    /// and return a checksum to settle the page with; slots left without
    /// versions go, and every entry is brought up to date (settled bits,
    /// flag, slot index). Pages past the end of `entries` lose their slot.
    pub(super) fn retain(
        &mut self,
        entries: &[AtomicU64],
        mut f: impl FnMut(&mut Slot) -> Option<u32>,
    ) {
        let mut kept = 0usize;
        let mut removed_versions = 0usize;
        self.slots.retain_mut(|slot| {
            let before = slot.versions.len();
            let settled = f(slot);
            let Some(entry) = entries.get(slot.page as usize) else {
                removed_versions += before;
                return false;
            };
            removed_versions += before - slot.versions.len();
            let e = entry.load(Ordering::Acquire);
            let settled_bits = settled.map_or(e & SETTLED_BITS, |crc| PRESENT | u64::from(crc));
            if slot.versions.is_empty() {
                entry.store(settled_bits, Ordering::Release);
                return false;
            }
            entry.store(
                settled_bits | UNSETTLED | ((kept as u64) << SLOT_SHIFT),
                Ordering::Release,
            );
            kept += 1;
            true
        });
        self.versions -= removed_versions;
    }

    /// Takes the slot of `page` away with its versions (a page marked
    /// unallocated, or whose writes were lost), leaving the settled bits of
    /// its entry in `entries`; the last slot moves into its place and its
    /// page's entry is re-pointed. O(1). Returns how many versions went.
    pub(super) fn remove(&mut self, entries: &[AtomicU64], page: u64) -> usize {
        let Some(entry) = usize::try_from(page).ok().and_then(|i| entries.get(i)) else {
            return 0;
        };
        let e = entry.load(Ordering::Acquire);
        let Some(idx) = slot_of(e) else {
            return 0;
        };
        let slot = self.slots.swap_remove(idx);
        debug_assert_eq!(slot.page, page, "an entry names the slot of its page");
        entry.store(e & SETTLED_BITS, Ordering::Release);
        if let Some(moved) = self.slots.get(idx) {
            let m = &entries[moved.page as usize];
            let me = m.load(Ordering::Acquire);
            debug_assert_eq!(slot_of(me), Some(self.slots.len()));
            m.store(
                (me & ((1 << SLOT_SHIFT) - 1)) | ((idx as u64) << SLOT_SHIFT),
                Ordering::Release,
            );
        }
        let n = slot.versions.len();
        self.versions -= n;
        n
    }

    /// Gives memory back after an unusually large batch.
    pub(super) fn shrink(&mut self, keep: usize) {
        if self.slots.capacity() > (4 * self.slots.len()).max(keep) {
            self.slots.shrink_to(2 * self.slots.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::entries::FREE;
    use super::*;

    fn version(crc: u32) -> Version {
        Version {
            crc,
            seq: u64::from(crc),
            state: State::Unknown,
        }
    }

    #[test]
    fn entries_name_their_slots_through_inserts_and_retains() {
        let entries: Vec<AtomicU64> = (0..10).map(|_| AtomicU64::new(PRESENT | 7)).collect();
        let mut un = Unsettled::default();
        for p in [3u64, 5, 8] {
            un.insert(&entries[p as usize], p, Versions::One(version(p as u32)))
                .unwrap();
            un.versions += 1;
        }
        let e = |p: usize| entries[p].load(Ordering::Acquire);
        assert_eq!(un.get(e(5), 5).unwrap()[0].crc, 5);
        assert!(un.get(e(4), 4).is_none());
        // Settle page 3, keep 5 and 8 (which move down a slot).
        un.retain(&entries, |s| {
            (s.page == 3).then(|| {
                s.versions = Versions::Empty;
                30
            })
        });
        assert_eq!(e(3), PRESENT | 30);
        assert_eq!(un.pages(), 2);
        assert_eq!(un.versions, 2);
        for p in [5usize, 8] {
            assert_eq!(e(p) & SETTLED_BITS, PRESENT | 7);
            assert_eq!(un.get(e(p), p as u64).unwrap()[0].crc, p as u32);
        }
        // A page past the end of the entries loses its slot.
        un.retain(&entries[..6], |_| None);
        assert_eq!(un.pages(), 1);
        assert_eq!(un.get(e(5), 5).unwrap()[0].crc, 5);
    }

    #[test]
    fn removing_a_slot_re_points_the_moved_one() {
        let entries: Vec<AtomicU64> = (0..6).map(|_| AtomicU64::new(FREE)).collect();
        let mut un = Unsettled::default();
        for p in [1u64, 2, 4] {
            un.insert(&entries[p as usize], p, Versions::One(version(p as u32)))
                .unwrap();
            un.versions += 1;
        }
        let e = |p: usize| entries[p].load(Ordering::Acquire);
        assert_eq!(un.remove(&entries, 1), 1);
        assert_eq!(e(1), FREE, "the settled bits stay");
        assert_eq!(un.remove(&entries, 1), 0, "nothing left to remove");
        assert_eq!(un.remove(&entries, 3), 0, "a page without a slot");
        assert_eq!((un.pages(), un.versions), (2, 2));
        for p in [2usize, 4] {
            assert_eq!(e(p) & SETTLED_BITS, FREE);
            assert_eq!(un.get(e(p), p as u64).unwrap()[0].crc, p as u32);
        }
        assert_eq!(un.remove(&entries, 4), 1);
        assert_eq!(un.get(e(2), 2).unwrap()[0].crc, 2);
    }

    #[test]
    fn versions_inline_and_spilled() {
        let mut vs = Versions::default();
        vs.push(version(1));
        assert!(matches!(vs, Versions::One(_)));
        vs.push(version(2));
        vs.push(version(3));
        assert_eq!(vs.remove(1).crc, 2);
        vs.drain_through(0);
        assert_eq!(vs.iter().map(|v| v.crc).collect::<Vec<_>>(), vec![3]);
        let mut one: Versions = std::iter::once(version(9)).collect();
        assert_eq!(one.remove(0).crc, 9);
        assert!(one.is_empty());
    }
}
