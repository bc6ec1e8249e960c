//! Reading the structure of a SQLite database file from its pages: the
//! header, the freelist and b-tree page kinds. Enough to tell a detector
//! which pages are unallocated and to find pages worth damaging in a test;
//! a SQLite VFS built on the library can answer its free-page question the
//! same way.
//!
//! SQLite numbers pages from 1; a [`PageStore`] over the database file
//! numbers them from 0, so SQLite page `n` is [`PageId`]`(n - 1)`
//! ([`page_id`], [`sqlite_page`]).
//!
//! Every byte is untrusted: a damaged header, a freelist that loops or
//! points past the end, or counts that disagree give a typed error, never a
//! panic or an unbounded walk.
//!
//! # The parts of the format read here (all integers big-endian)
//!
//! Database header, the first 100 bytes of page 1:
//!
//! | offset | size | field                                                    |
//! |-------:|-----:|----------------------------------------------------------|
//! | 0      | 16   | `"SQLite format 3\0"`                                    |
//! | 16     | 2    | page size (1 means 65 536)                               |
//! | 20     | 1    | bytes reserved at the end of each page                   |
//! | 24     | 4    | file change counter                                      |
//! | 28     | 4    | database size in pages (valid when offset 92 = offset 24)|
//! | 32     | 4    | first freelist trunk page (0: none)                      |
//! | 36     | 4    | total freelist pages (trunks and leaves)                 |
//! | 92     | 4    | version-valid-for number                                 |
//!
//! A freelist trunk page: next trunk page (4 bytes, 0 at the end), the
//! number of leaf pages `L` it lists (4 bytes), then `L` leaf page numbers.
//! Leaf pages hold nothing (zeros, with `secure_delete`); trunk pages are in
//! use.
//!
//! A b-tree page begins (at offset 100 on page 1, 0 elsewhere) with its
//! kind: 2 interior index, 5 interior table, 10 leaf index, 13 leaf table;
//! an interior page has its right-most child at header offset 8.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::host::PageStore;
use crate::types::PageId;

/// Length of the database header at the start of page 1.
pub const HEADER_LEN: usize = 100;
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

fn bad(reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        what: "SQLite database file",
        reason: reason.into(),
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The [`PageId`] of SQLite page `n` (1-based).
///
/// # Errors
/// [`Error::InvalidArgument`] for page 0, which SQLite never uses.
pub fn page_id(n: u32) -> Result<PageId> {
    n.checked_sub(1)
        .map(|i| PageId(u64::from(i)))
        .ok_or_else(|| bad("page number 0 does not exist (SQLite pages start at 1)"))
}

/// The SQLite page number (1-based) of `page`.
#[must_use]
pub fn sqlite_page(page: PageId) -> u64 {
    page.0 + 1
}

/// The fields of the database header that the library uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqliteHeader {
    /// Page size in bytes.
    pub page_size: usize,
    /// Bytes reserved at the end of each page (room for a trailer when ≥ 16).
    pub reserved_bytes: u8,
    /// Database size in pages, when the header's copy is valid.
    pub page_count: Option<u32>,
    /// First freelist trunk page (SQLite numbering), 0 when the list is empty.
    pub first_trunk: u32,
    /// Pages on the freelist, trunks and leaves.
    pub freelist_pages: u32,
}

/// Parses the header from the first bytes of page 1.
///
/// # Errors
/// [`Error::InvalidArgument`] for fewer than 100 bytes, a wrong magic or a
/// page size that is not a power of two from 512 to 65 536.
pub fn parse_header(page_one: &[u8]) -> Result<SqliteHeader> {
    if page_one.len() < HEADER_LEN {
        return Err(bad(format!(
            "page 1 has {} bytes, the header needs {HEADER_LEN}",
            page_one.len()
        )));
    }
    if &page_one[..16] != MAGIC {
        return Err(bad("page 1 does not start with \"SQLite format 3\""));
    }
    let raw = u16::from_be_bytes([page_one[16], page_one[17]]);
    let page_size = if raw == 1 { 65_536 } else { usize::from(raw) };
    if !(512..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(bad(format!(
            "page size {page_size} is not a power of two in 512..=65536"
        )));
    }
    let valid = be32(page_one, 92) == be32(page_one, 24);
    Ok(SqliteHeader {
        page_size,
        reserved_bytes: page_one[20],
        page_count: valid.then(|| be32(page_one, 28)),
        first_trunk: be32(page_one, 32),
        freelist_pages: be32(page_one, 36),
    })
}

/// The freelist of a database: its trunk pages (in use: they hold the
/// list) and its leaf pages (unallocated).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Freelist {
    /// Trunk pages, in list order.
    pub trunks: Vec<PageId>,
    /// Leaf pages, sorted.
    pub leaves: BTreeSet<PageId>,
}

impl Freelist {
    /// Whether `page` is a freelist leaf: unallocated.
    #[must_use]
    pub fn is_free(&self, page: PageId) -> bool {
        self.leaves.contains(&page)
    }
}

/// Reads the freelist of the database in `store` (raw reads: page 1 and the
/// trunk pages).
///
/// # Errors
/// [`Error::InvalidArgument`] for a damaged header or list: a page number
/// past the end of the store, a trunk visited twice, a leaf count that does
/// not fit its trunk, or totals that disagree with the header; the store's
/// read error.
pub fn read_freelist(store: &dyn PageStore) -> Result<Freelist> {
    let ps = store.page_size();
    let count = store.page_count();
    if count == 0 {
        return Err(bad("the store is empty: no page 1"));
    }
    let mut buf = vec![0u8; ps];
    store.read_page(PageId(0), &mut buf)?;
    let header = parse_header(&buf)?;
    if header.page_size != ps {
        return Err(Error::PageSizeMismatch {
            what: "SQLite database header".into(),
            expected: ps,
            actual: header.page_size,
        });
    }
    let usable = ps - usize::from(header.reserved_bytes);
    let max_leaves = (usable / 4).saturating_sub(2) as u64;
    let in_range = |n: u32, what: &str| -> Result<PageId> {
        let p = page_id(n)?;
        if p.0 >= count {
            return Err(bad(format!(
                "{what} page {n} is past the end of the file ({count} pages)"
            )));
        }
        Ok(p)
    };
    let mut list = Freelist::default();
    let mut seen = BTreeSet::new();
    let mut next = header.first_trunk;
    while next != 0 {
        let trunk = in_range(next, "freelist trunk")?;
        if !seen.insert(trunk) || seen.len() as u64 > count {
            return Err(bad(format!(
                "freelist trunk page {next} is visited twice: the list loops"
            )));
        }
        store.read_page(trunk, &mut buf)?;
        let leaves = u64::from(be32(&buf, 4));
        if leaves > max_leaves {
            return Err(bad(format!(
                "freelist trunk page {next} lists {leaves} leaves, at most {max_leaves} fit"
            )));
        }
        for i in 0..leaves as usize {
            let leaf = in_range(be32(&buf, 8 + 4 * i), "freelist leaf")?;
            if !seen.insert(leaf) || !list.leaves.insert(leaf) {
                return Err(bad(format!(
                    "freelist leaf page {} is listed twice",
                    sqlite_page(leaf)
                )));
            }
        }
        list.trunks.push(trunk);
        next = be32(&buf, 0);
    }
    let total = (list.trunks.len() + list.leaves.len()) as u64;
    if total != u64::from(header.freelist_pages) {
        return Err(bad(format!(
            "the header counts {} freelist pages, the list holds {total}",
            header.freelist_pages
        )));
    }
    Ok(list)
}

/// The kind of a b-tree page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BtreeKind {
    /// An interior page of an index b-tree.
    InteriorIndex,
    /// An interior page of a table b-tree.
    InteriorTable,
    /// A leaf page of an index b-tree.
    LeafIndex,
    /// A leaf page of a table b-tree.
    LeafTable,
}

fn btree_header_offset(page: PageId) -> usize {
    if page.0 == 0 {
        HEADER_LEN
    } else {
        0
    }
}

/// The b-tree kind of `bytes` as page `page`, or `None` when the first byte
/// of its b-tree header is no kind (a freelist, overflow or pointer-map
/// page, or garbage).
#[must_use]
pub fn btree_kind(page: PageId, bytes: &[u8]) -> Option<BtreeKind> {
    match bytes.get(btree_header_offset(page))? {
        2 => Some(BtreeKind::InteriorIndex),
        5 => Some(BtreeKind::InteriorTable),
        10 => Some(BtreeKind::LeafIndex),
        13 => Some(BtreeKind::LeafTable),
        _ => None,
    }
}

/// The right-most child of an interior b-tree page, or `None` for any other
/// page (or a child number of 0).
#[must_use]
pub fn rightmost_child(page: PageId, bytes: &[u8]) -> Option<PageId> {
    match btree_kind(page, bytes)? {
        BtreeKind::InteriorIndex | BtreeKind::InteriorTable => {
            let at = btree_header_offset(page) + 8;
            bytes.get(at..at + 4).and_then(|b| page_id(be32(b, 0)).ok())
        }
        BtreeKind::LeafIndex | BtreeKind::LeafTable => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use proptest::prelude::*;

    fn header(page_size: u16, first_trunk: u32, freelist: u32) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..16].copy_from_slice(MAGIC);
        b[16..18].copy_from_slice(&page_size.to_be_bytes());
        b[24..28].copy_from_slice(&7u32.to_be_bytes());
        b[28..32].copy_from_slice(&4u32.to_be_bytes());
        b[32..36].copy_from_slice(&first_trunk.to_be_bytes());
        b[36..40].copy_from_slice(&freelist.to_be_bytes());
        b[92..96].copy_from_slice(&7u32.to_be_bytes());
        b
    }

    fn trunk(next: u32, leaves: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..4].copy_from_slice(&next.to_be_bytes());
        b[4..8].copy_from_slice(&(leaves.len() as u32).to_be_bytes());
        for (i, l) in leaves.iter().enumerate() {
            b[8 + 4 * i..12 + 4 * i].copy_from_slice(&l.to_be_bytes());
        }
        b
    }

    #[test]
    fn freelist_is_read_and_checked() {
        let s = MemStore::new(512, 6).unwrap();
        s.write_page(PageId(0), &header(512, 2, 4)).unwrap();
        s.write_page(PageId(1), &trunk(4, &[3])).unwrap();
        s.write_page(PageId(3), &trunk(0, &[6])).unwrap();
        let f = read_freelist(&s).unwrap();
        assert_eq!(f.trunks, vec![PageId(1), PageId(3)]);
        assert!(f.is_free(PageId(2)) && f.is_free(PageId(5)));
        assert!(!f.is_free(PageId(1)));
        let h = parse_header(&header(512, 2, 4)).unwrap();
        assert_eq!((h.page_size, h.page_count), (512, Some(4)));

        // A loop, a leaf past the end, a count that disagrees.
        s.write_page(PageId(3), &trunk(2, &[6])).unwrap();
        assert!(read_freelist(&s).is_err());
        s.write_page(PageId(3), &trunk(0, &[9])).unwrap();
        assert!(read_freelist(&s).is_err());
        s.write_page(PageId(3), &trunk(0, &[6])).unwrap();
        s.write_page(PageId(0), &header(512, 2, 5)).unwrap();
        assert!(read_freelist(&s).is_err());
        s.write_page(PageId(0), &header(1024, 2, 4)).unwrap();
        assert!(matches!(
            read_freelist(&s),
            Err(Error::PageSizeMismatch { .. })
        ));
        assert!(page_id(0).is_err());
    }

    #[test]
    fn btree_kinds() {
        let mut p = vec![0u8; 512];
        p[0] = 2;
        p[8..12].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(btree_kind(PageId(4), &p), Some(BtreeKind::InteriorIndex));
        assert_eq!(rightmost_child(PageId(4), &p), Some(PageId(8)));
        assert_eq!(btree_kind(PageId(0), &p), None, "page 1's header is at 100");
        p[0] = 13;
        assert_eq!(rightmost_child(PageId(4), &p), None);
    }

    proptest! {
        /// Garbage never panics and never walks without bound.
        #[test]
        fn garbage_never_panics(pages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 512), 1..6), magic in any::<bool>()) {
            let s = MemStore::new(512, pages.len() as u64).unwrap();
            for (i, mut p) in pages.into_iter().enumerate() {
                if i == 0 && magic {
                    p[..16].copy_from_slice(MAGIC);
                    p[16..18].copy_from_slice(&512u16.to_be_bytes());
                }
                s.write_page(PageId(i as u64), &p).unwrap();
            }
            let _ = read_freelist(&s);
            let mut b = vec![0u8; 512];
            s.read_page(PageId(0), &mut b).unwrap();
            let _ = parse_header(&b);
            let _ = rightmost_child(PageId(0), &b);
        }
    }
}
