//! Reading a snapshot's state through its chain (the full snapshot at its
//! base and the incrementals up to it): opening and checking the chain,
//! finding the newest copy of a page, the state's page fingerprints,
//! verification, and merging a chain into one full snapshot.
//!
//! A chain is checked before it is used: each member's parent is the member
//! before it, the base is full, and every incremental holds every page from
//! its parent's page count to its own (see [`check_chain`]). That makes
//! "the newest member that stores page `p`" the copy of `p` in the top's
//! state, also across a shrink: a page dropped and grown back is stored
//! again, so no copy from before the shrink is ever read.

use std::sync::Arc;

use super::fingerprint::page_fingerprint;
use super::format::{self, Header, SnapshotReader};
use super::inner::{Head, Inner, State};
use super::take::NewHead;
use super::writer::SnapshotWriter;
use super::{Operation, SnapshotInfo, VerifyReport};
use crate::error::{Error, Result};
use crate::types::PageId;

/// Checks that `readers` (base first) form a chain whose pages can be
/// looked up newest first. On failure: the member at fault and the error.
pub(super) fn check_chain(
    readers: &[Arc<SnapshotReader>],
) -> std::result::Result<(), (u64, Error)> {
    let Some(base) = readers.first() else {
        return Ok(());
    };
    if base.header.parent.is_some() {
        return Err((
            base.header.id,
            Error::corrupt_file(
                base.path(),
                16,
                "the base of a chain must be a full snapshot",
            ),
        ));
    }
    for pair in readers.windows(2) {
        let (a, b) = (&pair[0].header, &pair[1].header);
        if b.parent != Some(a.id) {
            return Err((
                b.id,
                Error::corrupt_file(
                    pair[1].path(),
                    16,
                    format!(
                        "its parent is {:?}, but the chain has {} before it",
                        b.parent, a.id
                    ),
                ),
            ));
        }
        let from = a.page_count.min(b.page_count);
        let held = pair[1].index.stored_from(b.page_count, from);
        if held != b.page_count - from {
            return Err((
                b.id,
                Error::corrupt_file(
                    pair[1].path(),
                    0,
                    format!(
                        "it stores {held} of pages {from}..{} that its parent (snapshot {}) does not have",
                        b.page_count, a.id
                    ),
                ),
            ));
        }
    }
    Ok(())
}

/// The pages of a chain's top state, newest copy first, with one decoded
/// chunk cached per member (pages read in ascending order decode each
/// chunk once).
pub(super) struct ChainPages<'a> {
    readers: &'a [Arc<SnapshotReader>],
    cache: Vec<(Option<usize>, Vec<u8>)>,
    comp: Vec<u8>,
    page_size: usize,
}

impl<'a> ChainPages<'a> {
    /// Pages of `readers`, a chain that passed [`check_chain`].
    pub(super) fn new(readers: &'a [Arc<SnapshotReader>], page_size: usize) -> Self {
        ChainPages {
            readers,
            cache: vec![(None, Vec::new()); readers.len()],
            comp: Vec::new(),
            page_size,
        }
    }

    /// The bytes of `page` in the top's state, checked against their sum.
    /// `Ok(None)` for a page past the top's page count.
    ///
    /// # Errors
    /// [`Error::CorruptFile`] when the chunk holding it is damaged, or when
    /// no member holds it (only a chain that did not pass `check_chain`).
    pub(super) fn page(&mut self, page: u64) -> Result<Option<&[u8]>> {
        let Some(top) = self.readers.last() else {
            return Ok(None);
        };
        if page >= top.header.page_count {
            return Ok(None);
        }
        let (m, c, slot) = self
            .readers
            .iter()
            .enumerate()
            .rev()
            .find_map(|(m, r)| r.locate(page).map(|(c, s)| (m, c, s)))
            .ok_or_else(|| {
                Error::corrupt_file(
                    top.path(),
                    0,
                    format!("page {page} is in no snapshot of the chain, though the full snapshot must hold it"),
                )
            })?;
        if self.cache[m].0 != Some(c) {
            self.cache[m].0 = None;
            self.readers[m].read_chunk(c, &mut self.comp, &mut self.cache[m].1)?;
            self.cache[m].0 = Some(c);
        }
        let ps = self.page_size;
        Ok(Some(&self.cache[m].1[slot * ps..(slot + 1) * ps]))
    }
}

impl Inner {
    /// The readers of `id`'s chain, base first, checked with [`check_chain`].
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`]; an error opening a member; the chain
    /// check's [`Error::CorruptFile`].
    pub(super) fn chain_readers(&self, st: &State, id: u64) -> Result<Vec<Arc<SnapshotReader>>> {
        let chain = st.manifest.chain(id)?;
        let readers = chain
            .iter()
            .map(|&c| self.reader_by_id(st, c))
            .collect::<Result<Vec<_>>>()?;
        check_chain(&readers).map_err(|(_, e)| e)?;
        Ok(readers)
    }

    /// The fingerprint of every page of snapshot `id`'s state: from its
    /// index (format 2), or computed by decoding its chain (format 1, whose
    /// CRCs cannot tell changed pages apart). Cached for the head.
    ///
    /// # Errors
    /// As [`chain_readers`](Self::chain_readers); [`Error::CorruptFile`]
    /// when a format-1 chain does not decode.
    pub(super) fn fingerprints_of(&self, st: &mut State, id: u64) -> Result<Arc<Vec<u64>>> {
        if let Some((h, f)) = &st.head_fps {
            if *h == id {
                return Ok(f.clone());
            }
        }
        let readers = self.chain_readers(st, id)?;
        let top = readers.last().expect("a chain has a member");
        if let Some(f) = top.index.sums.fingerprints() {
            return Ok(f.clone());
        }
        tracing::info!(
            snapshot = id,
            "snapshot of format 1: computing its page fingerprints from its chain"
        );
        let page_count = top.header.page_count;
        let mut pages = ChainPages::new(&readers, self.page_size);
        let mut fps = Vec::with_capacity(usize::try_from(page_count).unwrap_or(0));
        for p in 0..page_count {
            let bytes = pages.page(p)?.expect("within the page count");
            fps.push(page_fingerprint(p, bytes));
        }
        let fps = Arc::new(fps);
        if self.head.read().as_ref().is_some_and(|h| h.id == id) {
            st.head_fps = Some((id, fps.clone()));
        }
        Ok(fps)
    }

    pub(super) fn verify(&self, id: u64) -> Result<VerifyReport> {
        self.check_alive()?;
        let st = self.lock_state()?;
        let chain = st.manifest.chain(id)?;
        let readers = self.chain_readers(&st, id)?;
        drop(st);
        let total: u64 = readers
            .iter()
            .map(|r| r.index.stored_pages(r.header.page_count) * self.page_size as u64)
            .sum();
        let _g = self.progress.start(Operation::Verify, total);
        let (mut chunks, mut pages) = (0, 0);
        for r in &readers {
            r.for_each_chunk(self.threads, true, &|_, raw| {
                self.progress.add(raw.len() as u64);
                Ok(())
            })?;
            chunks += r.index.chunks.len() as u64;
            pages += r.index.stored_pages(r.header.page_count);
        }
        Ok(VerifyReport {
            chain,
            chunks,
            pages,
        })
    }

    /// Reads `page` of the state at the top of `chain` into `buf`;
    /// `Ok(false)` past its page count, or when a member is no longer listed.
    pub(super) fn read_from_chain(
        &self,
        chain: &[u64],
        page: PageId,
        buf: &mut [u8],
    ) -> Result<bool> {
        if buf.len() != self.page_size {
            return Err(Error::BufferSize {
                expected: self.page_size,
                actual: buf.len(),
            });
        }
        // The state lock is held only to look the members up — but a
        // snapshot, a restore or a merge holds it while it runs, and a read
        // for a repair on another thread waits for that (bounded by the
        // repairer's deadline for a fallback; a snapshot's own thread is
        // refused by `lock_state` instead of waiting for itself).
        let infos: Option<Vec<SnapshotInfo>> = {
            let st = self.lock_state()?;
            chain.iter().map(|&c| st.manifest.get(c).cloned()).collect()
        };
        let Some(infos) = infos else {
            return Ok(false);
        };
        let readers = infos
            .iter()
            .map(|info| self.reader(info))
            .collect::<Result<Vec<_>>>()?;
        check_chain(&readers).map_err(|(_, e)| e)?;
        match ChainPages::new(&readers, self.page_size).page(page.0)? {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    pub(super) fn merge(&self, id: u64) -> Result<SnapshotInfo> {
        self.check_alive()?;
        let mut st = self.lock_state()?;
        let info = st
            .manifest
            .get(id)
            .cloned()
            .ok_or(Error::SnapshotNotFound { id })?;
        if info.parent.is_none() {
            return Ok(info);
        }
        let readers = self.chain_readers(&st, id)?;
        let top = readers.last().expect("chain").clone();
        let ps = self.page_size;
        let page_count = info.page_count;
        let _g = self
            .progress
            .start(Operation::Merge, page_count * ps as u64);
        let progress = &self.progress;
        let mut feed = |w: &mut SnapshotWriter,
                        crash_mid: &mut dyn FnMut(&SnapshotWriter) -> Result<()>|
         -> Result<()> {
            let mut pages = ChainPages::new(&readers, ps);
            for p in 0..page_count {
                let bytes = pages.page(p)?.expect("within the page count");
                w.push(p, bytes)?;
                progress.add(ps as u64);
                crash_mid(w)?;
            }
            Ok(())
        };
        let header = Header {
            version: format::VERSION,
            id: st.manifest.next_id,
            parent: None,
            lsn: info.lsn,
            created_unix_ms: self.now_unix_ms(),
            page_size: ps,
            chunk_pages: self.chunk_pages,
            page_count,
            // Every page of the merged file comes from a member: verified
            // only if every member's pages were.
            pages_verified: readers.iter().all(|r| r.header.pages_verified),
        };
        let metadata = top.index.metadata.clone();
        let is_head = self.head.read().as_ref().is_some_and(|h| h.id == id);
        let new_head = if is_head {
            NewHead::Merged
        } else {
            NewHead::No
        };
        let (new, fps) =
            self.commit_new(&mut st, header, Vec::new(), &mut feed, &metadata, new_head)?;
        let mut head = self.head.write();
        if is_head {
            *head = Some(Head {
                id: new.id,
                lsn: new.lsn,
                page_count,
                chain: vec![new.id],
            });
            st.head_fps = Some((new.id, Arc::new(fps)));
        }
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Lsn;
    use std::fs::File;

    /// A snapshot file `id` (parent `parent`) of `page_count` pages of 64
    /// bytes storing `pages`; `parent_fps` as the writer would get them.
    fn file(
        dir: &std::path::Path,
        id: u64,
        parent: Option<u64>,
        page_count: u64,
        pages: &[u64],
        parent_fps: Vec<u64>,
    ) -> Arc<SnapshotReader> {
        let path = dir.join(format!("s{id}"));
        let h = Header {
            version: format::VERSION,
            id,
            parent,
            lsn: Lsn(id),
            created_unix_ms: 0,
            page_size: 64,
            chunk_pages: 2,
            page_count,
            pages_verified: false,
        };
        let mut w =
            SnapshotWriter::new(File::create(&path).unwrap(), path.clone(), h, 1, parent_fps)
                .unwrap();
        for &p in pages {
            w.push(p, &[p as u8 + id as u8; 64]).unwrap();
        }
        w.finish(&[]).unwrap();
        Arc::new(SnapshotReader::open_file(&path).unwrap())
    }

    #[test]
    fn a_chain_must_store_every_page_past_its_parents_count() {
        let dir = tempfile::tempdir().unwrap();
        let base = file(dir.path(), 1, None, 4, &[0, 1, 2, 3], Vec::new());
        // Grown to 6: pages 4 and 5 must be stored.
        let good = file(dir.path(), 2, Some(1), 6, &[1, 4, 5], vec![0; 4]);
        check_chain(&[base.clone(), good.clone()]).unwrap();
        let chain = [base.clone(), good.clone()];
        let mut pages = ChainPages::new(&chain, 64);
        assert_eq!(pages.page(1).unwrap().unwrap()[0], 1 + 2);
        assert_eq!(pages.page(2).unwrap().unwrap()[0], 2 + 1);
        assert_eq!(pages.page(5).unwrap().unwrap()[0], 5 + 2);
        assert!(pages.page(6).unwrap().is_none());
        // A file that claims its parent had 6 pages stores neither.
        let bad = file(dir.path(), 3, Some(1), 6, &[1], vec![0; 6]);
        let (member, err) = check_chain(&[base.clone(), bad]).unwrap_err();
        assert_eq!(member, 3);
        assert!(err.to_string().contains("pages 4..6"), "{err}");
        // Shrunk to 3: nothing past the end is needed.
        let shrunk = file(dir.path(), 4, Some(1), 3, &[], vec![0; 4]);
        check_chain(&[base.clone(), shrunk]).unwrap();
        // The parent must be the member before; the base must be full.
        let (member, _) = check_chain(&[base.clone(), good.clone(), good.clone()]).unwrap_err();
        assert_eq!(member, 2);
        let (member, _) = check_chain(&[good]).unwrap_err();
        assert_eq!(member, 2);
    }
}
