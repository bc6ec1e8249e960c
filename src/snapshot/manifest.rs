//! The manifest (the list of snapshots and their chains) and the pure
//! retention decision. The byte layout is in [`super::format`].

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::format::{Cursor, MAX_PAGE_SIZE};
use super::SnapshotInfo;
use crate::checksum::MIN_PAGE_SIZE;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::types::Lsn;

const MAGIC: [u8; 4] = *b"SHSM";
/// The manifest version this build writes (and the newest it reads).
const VERSION: u32 = 2;
/// The manifest version without the restore point (still read).
const VERSION_NO_HEAD: u32 = 1;
/// Bit 0 of the restore point's flags: the store's state descends from no
/// listed snapshot.
const HEAD_UNKNOWN: u8 = 1;
const MAX_ENTRIES: u64 = 1_000_000;
const ENTRY_FIXED_LEN: usize = 58;

/// The name of the manifest file in the snapshot directory.
pub(crate) const MANIFEST_NAME: &str = "MANIFEST";

/// The file name of snapshot `id` in its directory: `snap-` and the id as
/// 16 lowercase hex digits, then `.shs`.
pub fn snapshot_file_name(id: u64) -> String {
    format!("snap-{id:016x}.shs")
}

/// Whether `name` is a plain file name that stays inside its directory.
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !Path::new(name).is_absolute()
}

/// The list of snapshots, ascending by id, and the restore point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub page_size: usize,
    pub next_id: u64,
    pub entries: Vec<SnapshotInfo>,
    /// The snapshot the store's state descends from (the head): the newest
    /// one taken or the one last restored; `None` only with no entries.
    pub head: Option<u64>,
    /// Set from just before a restore first writes its target until it
    /// succeeds (and kept if it fails): the store's state then descends
    /// from no listed snapshot, and no snapshot serves a page.
    pub head_unknown: bool,
}

impl Manifest {
    pub fn new(page_size: usize) -> Self {
        Manifest {
            page_size,
            next_id: 1,
            entries: Vec::new(),
            head: None,
            head_unknown: false,
        }
    }

    pub fn get(&self, id: u64) -> Option<&SnapshotInfo> {
        self.entries
            .binary_search_by_key(&id, |e| e.id)
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The ids from the full snapshot at the base of `id`'s chain up to `id`.
    pub fn chain(&self, id: u64) -> Result<Vec<u64>> {
        let mut chain = Vec::new();
        let mut cur = Some(id);
        while let Some(c) = cur {
            let e = self.get(c).ok_or(Error::SnapshotNotFound { id: c })?;
            chain.push(c);
            cur = e.parent;
        }
        chain.reverse();
        Ok(chain)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(16 + self.entries.len() * 90);
        p.extend_from_slice(&(self.page_size as u32).to_le_bytes());
        p.extend_from_slice(&self.next_id.to_le_bytes());
        p.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            p.extend_from_slice(&e.id.to_le_bytes());
            p.extend_from_slice(&e.parent.unwrap_or(0).to_le_bytes());
            p.extend_from_slice(&e.lsn.0.to_le_bytes());
            p.extend_from_slice(&e.created_unix_ms.to_le_bytes());
            p.extend_from_slice(&e.page_count.to_le_bytes());
            p.extend_from_slice(&e.stored_pages.to_le_bytes());
            p.extend_from_slice(&e.file_bytes.to_le_bytes());
            p.extend_from_slice(&(e.file_name.len() as u16).to_le_bytes());
            p.extend_from_slice(e.file_name.as_bytes());
        }
        debug_assert!(self.head.is_none_or(|h| self.get(h).is_some()));
        p.push(if self.head_unknown { HEAD_UNKNOWN } else { 0 });
        p.extend_from_slice(&self.head.unwrap_or(0).to_le_bytes());
        fsutil::encode_framed(MAGIC, VERSION, &p)
    }

    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Manifest> {
        let (version, payload) = fsutil::decode_framed(path, bytes, MAGIC, VERSION)?;
        let mut c = Cursor::new(path, payload, fsutil::FRAME_HEADER_LEN as u64);
        let page_size = c.u32("page size")? as usize;
        // No configuration has another page size (`SnapshotConfig::build`
        // refuses it), so this is damage; a size in range that differs from
        // the configured one is the caller's to judge (`PageSizeMismatch`).
        if !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(c.err(format!(
                "page size {page_size} is outside {MIN_PAGE_SIZE}..={MAX_PAGE_SIZE}"
            )));
        }
        let next_id = c.u64("next id")?;
        if next_id == u64::MAX {
            return Err(c.err(format!("next snapshot id {next_id} is reserved")));
        }
        let n = u64::from(c.u32("entry count")?);
        if n > MAX_ENTRIES {
            return Err(c.err(format!("{n} entries exceed {MAX_ENTRIES}")));
        }
        let n = c.check_fits(n, ENTRY_FIXED_LEN, "entries")?;
        let mut entries: Vec<SnapshotInfo> = Vec::with_capacity(n);
        for _ in 0..n {
            let id = c.u64("id")?;
            let parent = c.u64("parent")?;
            let lsn = Lsn(c.u64("lsn")?);
            let created_unix_ms = c.u64("creation time")?;
            let page_count = c.u64("page count")?;
            let stored_pages = c.u64("stored pages")?;
            let file_bytes = c.u64("file length")?;
            let len = c.u16("name length")? as usize;
            let name = std::str::from_utf8(c.take(len, "file name")?)
                .map_err(|_| c.err("file name is not UTF-8"))?;
            if !is_plain_file_name(name) {
                return Err(c.err(format!(
                    "file name {name:?} is not a plain name inside the snapshot directory"
                )));
            }
            // Ascending ids also rule out a duplicate id.
            if id == 0 || id >= next_id || entries.last().is_some_and(|l| l.id >= id) {
                return Err(c.err(format!("snapshot id {id} is out of order")));
            }
            // The name is implied by the id, so an entry can never name the
            // manifest or another snapshot's file.
            if name != snapshot_file_name(id) {
                return Err(c.err(format!(
                    "snapshot {id} is listed as file {name:?}, not {:?}",
                    snapshot_file_name(id)
                )));
            }
            if parent != 0
                && entries
                    .binary_search_by_key(&parent, |e: &SnapshotInfo| e.id)
                    .is_err()
            {
                return Err(c.err(format!(
                    "snapshot {id} names parent {parent}, which is not listed before it"
                )));
            }
            if stored_pages > page_count {
                return Err(c.err(format!("snapshot {id} stores more pages than it has")));
            }
            entries.push(SnapshotInfo {
                id,
                parent: (parent != 0).then_some(parent),
                lsn,
                created_unix_ms,
                page_count,
                stored_pages,
                file_bytes,
                file_name: name.to_owned(),
            });
        }
        let (head, head_unknown) = if version == VERSION_NO_HEAD {
            // Written before the restore point was recorded: the head was
            // the newest snapshot after every open.
            (entries.last().map(|e| e.id), false)
        } else {
            let flags = c.u8("restore point flags")?;
            if flags & !HEAD_UNKNOWN != 0 {
                return Err(c.err(format!("restore point flags {flags:#04x} has unknown bits")));
            }
            let head = c.u64("restore point")?;
            let listed = entries.binary_search_by_key(&head, |e| e.id).is_ok();
            if (head == 0) != entries.is_empty() || (head != 0 && !listed) {
                return Err(c.err(format!("restore point {head} is not a listed snapshot")));
            }
            ((head != 0).then_some(head), flags & HEAD_UNKNOWN != 0)
        };
        if c.remaining() != 0 {
            return Err(c.err("unexpected bytes after the restore point"));
        }
        Ok(Manifest {
            page_size,
            next_id,
            entries,
            head,
            head_unknown,
        })
    }
}

/// Which snapshots to keep.
///
/// The newest snapshot and the current restore point are always kept, and so
/// is every ancestor of a kept snapshot (an incremental snapshot is useless
/// without its chain), so more snapshots than the policy names may remain;
/// [`merge`](super::StateSnapshotManager::merge) collapses a chain so that
/// its ancestors can go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retention {
    /// Keep every snapshot.
    KeepAll,
    /// Keep the newest `n` snapshots (`n` ≥ 1).
    KeepLast(usize),
    /// Keep the snapshots younger than this (must be nonzero).
    MaxAge(Duration),
}

impl Retention {
    pub(crate) fn validate(self) -> Result<()> {
        match self {
            Retention::KeepLast(0) => Err(Error::config(
                "retention",
                "KeepLast(0) would delete every snapshot; keep at least 1",
            )),
            Retention::MaxAge(d) if d.is_zero() => Err(Error::config(
                "retention",
                "MaxAge(0) would delete every snapshot; give a nonzero age",
            )),
            _ => Ok(()),
        }
    }
}

/// The ids `policy` deletes from `entries` at `now_unix_ms`, given the
/// current restore point `head`. Pure: the caller does the deleting.
pub(crate) fn plan_retention(
    entries: &[SnapshotInfo],
    policy: Retention,
    now_unix_ms: u64,
    head: Option<u64>,
) -> Vec<u64> {
    let mut keep: BTreeSet<u64> = BTreeSet::new();
    let n = entries.len();
    for (i, e) in entries.iter().enumerate() {
        let kept = match policy {
            Retention::KeepAll => true,
            Retention::KeepLast(k) => i + k >= n,
            Retention::MaxAge(age) => {
                now_unix_ms.saturating_sub(e.created_unix_ms) < age.as_millis() as u64
            }
        };
        if kept || i + 1 == n || Some(e.id) == head {
            keep.insert(e.id);
        }
    }
    // Ancestors of kept snapshots, newest first so one pass suffices.
    for e in entries.iter().rev() {
        if keep.contains(&e.id) {
            if let Some(p) = e.parent {
                keep.insert(p);
            }
        }
    }
    entries
        .iter()
        .map(|e| e.id)
        .filter(|id| !keep.contains(id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info(id: u64, parent: Option<u64>, t: u64) -> SnapshotInfo {
        SnapshotInfo {
            id,
            parent,
            lsn: Lsn(id * 10),
            created_unix_ms: t,
            page_count: 4,
            stored_pages: if parent.is_some() { 1 } else { 4 },
            file_bytes: 100,
            file_name: snapshot_file_name(id),
        }
    }

    #[test]
    fn names_outside_the_directory_are_refused() {
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "a\0"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
            let mut m = Manifest::new(64);
            m.next_id = 2;
            let mut e = info(1, None, 0);
            e.file_name = bad.to_owned();
            m.entries.push(e);
            assert!(
                Manifest::decode(Path::new("m"), &m.encode()).is_err(),
                "{bad:?}"
            );
        }
        assert!(is_plain_file_name(&snapshot_file_name(7)));
    }

    #[test]
    fn retention_keeps_ancestors_newest_and_head() {
        let es = vec![
            info(1, None, 0),
            info(2, Some(1), 10),
            info(3, None, 20),
            info(4, Some(3), 30),
            info(5, Some(4), 40),
        ];
        assert_eq!(
            plan_retention(&es, Retention::KeepLast(1), 0, None),
            vec![1, 2]
        );
        assert_eq!(
            plan_retention(&es, Retention::KeepLast(1), 0, Some(2)),
            Vec::<u64>::new()
        );
        assert_eq!(
            plan_retention(&es, Retention::MaxAge(Duration::from_millis(15)), 100, None),
            vec![1, 2]
        );
        assert!(plan_retention(&es, Retention::KeepAll, 0, None).is_empty());
        assert!(Retention::KeepLast(0).validate().is_err());
        assert!(Retention::MaxAge(Duration::ZERO).validate().is_err());
    }

    /// `m` in version 1 (no restore point).
    fn encode_v1(m: &Manifest) -> Vec<u8> {
        let v2 = m.encode();
        let (_, payload) = fsutil::decode_framed(Path::new("m"), &v2, MAGIC, VERSION).unwrap();
        fsutil::encode_framed(MAGIC, VERSION_NO_HEAD, &payload[..payload.len() - 9])
    }

    #[test]
    fn the_restore_point_is_checked_and_version_1_reads_as_the_newest() {
        let mut m = Manifest::new(64);
        m.entries = vec![info(1, None, 0), info(2, Some(1), 1), info(3, None, 2)];
        m.next_id = 4;
        m.head = Some(1);
        let back = Manifest::decode(Path::new("m"), &m.encode()).unwrap();
        assert_eq!(back.head, Some(1));
        assert!(!back.head_unknown);
        let v1 = Manifest::decode(Path::new("m"), &encode_v1(&m)).unwrap();
        assert_eq!((v1.head, v1.head_unknown), (Some(3), false));
        assert_eq!(v1.entries, m.entries);
        let empty = Manifest::new(64);
        let back = Manifest::decode(Path::new("m"), &encode_v1(&empty)).unwrap();
        assert_eq!(back, empty);

        // A restore point that is no listed snapshot, or unknown flag bits.
        let payload = |m: &Manifest| {
            let b = m.encode();
            fsutil::decode_framed(Path::new("m"), &b, MAGIC, VERSION)
                .unwrap()
                .1
                .to_vec()
        };
        let reframe = |p: &[u8]| fsutil::encode_framed(MAGIC, VERSION, p);
        let good = payload(&m);
        let n = good.len();
        for (flags, head) in [(0u8, 4u64), (0, 0), (2, 1), (0x81, 1)] {
            let mut p = good.clone();
            p[n - 9] = flags;
            p[n - 8..].copy_from_slice(&head.to_le_bytes());
            let e = Manifest::decode(Path::new("m"), &reframe(&p)).unwrap_err();
            assert!(
                matches!(e, Error::CorruptFile { .. }),
                "{flags} {head}: {e}"
            );
        }
        let mut p = good.clone();
        p.push(0);
        assert!(Manifest::decode(Path::new("m"), &reframe(&p)).is_err());
        assert!(Manifest::decode(Path::new("m"), &reframe(&p[..n - 1])).is_err());
        let mut empty_with_head = payload(&Manifest::new(64));
        let k = empty_with_head.len();
        empty_with_head[k - 8..].copy_from_slice(&1u64.to_le_bytes());
        assert!(Manifest::decode(Path::new("m"), &reframe(&empty_with_head)).is_err());
    }

    proptest! {
        #[test]
        fn manifest_round_trips(parents in proptest::collection::vec(any::<bool>(), 0..30), head_unknown in any::<bool>()) {
            let mut m = Manifest::new(4096);
            for (i, inc) in parents.iter().enumerate() {
                let id = i as u64 + 1;
                m.entries.push(info(id, (*inc && id > 1).then_some(id - 1), id));
            }
            m.next_id = parents.len() as u64 + 1;
            m.head = m.entries.last().map(|e| e.id);
            m.head_unknown = head_unknown;
            let back = Manifest::decode(Path::new("m"), &m.encode()).unwrap();
            prop_assert_eq!(back, m);
        }

        #[test]
        fn retention_never_orphans(parents in proptest::collection::vec(any::<bool>(), 1..30), k in 1usize..6, head in any::<proptest::sample::Index>()) {
            let es: Vec<_> = parents.iter().enumerate().map(|(i, inc)| {
                let id = i as u64 + 1;
                info(id, (*inc && id > 1).then_some(id - 1), id)
            }).collect();
            let head = es[head.index(es.len())].id;
            let del = plan_retention(&es, Retention::KeepLast(k), 0, Some(head));
            let kept: Vec<_> = es.iter().filter(|e| !del.contains(&e.id)).collect();
            prop_assert!(kept.len() >= k.min(es.len()));
            prop_assert!(!del.contains(&head));
            prop_assert!(!del.contains(&es.last().unwrap().id));
            for e in &kept {
                if let Some(p) = e.parent {
                    prop_assert!(!del.contains(&p));
                }
            }
        }
    }
}
