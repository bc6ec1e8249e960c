//! Anti-entropy: find and heal divergence with one replica by Merkle descent
//! over range digests (see the [module docs](super#anti-entropy)).

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{AntiEntropyReport, DataRepairer, DivergedPage, ReplicaEntry, ANTI_ENTROPY_TREE_PAGES};
use crate::corruption::{Observer, PageState, Verdict};
use crate::digest::{leaf_digest, RangeDigest};
use crate::error::{Error, Result};
use crate::types::{PageId, ReplicaId};

impl DataRepairer {
    /// Compares pages `pages` with replica `replica` by Merkle descent over
    /// range digests, fetching pages only in differing leaves of at most
    /// `leaf_pages` pages, and repairs differing pages whose local copy fails
    /// verification (through [`repair_page`](Self::repair_page), so all
    /// replicas vote on the copy). Differing pages whose local copy verifies
    /// are reported, or with [`RepairConfig::adopt_newer_copies`](super::RepairConfig::adopt_newer_copies) replaced by
    /// the replica's copy when that one verifies and is newer by page LSN.
    ///
    /// The local side's digests come from the store's raw bytes; the
    /// replica's from [`Replica::range_digest`](crate::Replica::range_digest).
    /// Each top-level tree covers at most [`ANTI_ENTROPY_TREE_PAGES`] pages.
    /// Every call into the replica — its status, each range digest, each
    /// page read — runs on its helper thread with the deadline of a repair's
    /// calls
    /// ([`RepairConfig::replica_read_timeout`](super::RepairConfig::replica_read_timeout)),
    /// so a digest of a whole tree (up to [`ANTI_ENTROPY_TREE_PAGES`] pages)
    /// must be answered within it too; a call that misses it ends the run
    /// and leaves the replica unavailable for its cool-off (and for as long
    /// as that call hangs).
    ///
    /// # Errors
    /// [`Error::UnknownReplica`]; [`Error::InvalidArgument`] for
    /// `leaf_pages == 0`; [`Error::PageOutOfRange`] for a range past the end;
    /// [`Error::ReplicaUnavailable`] when the replica is down, hung or cooling
    /// off, or a call into it misses its deadline or panics; the replica's or
    /// the store's error when a digest or read fails (pages repaired before
    /// that stay repaired).
    pub fn anti_entropy(
        &self,
        replica: &ReplicaId,
        pages: Range<u64>,
        leaf_pages: u64,
    ) -> Result<AntiEntropyReport> {
        let started = self.clock.now_ns();
        let entry = self
            .replicas
            .read()
            .iter()
            .find(|e| &e.id == replica)
            .cloned()
            .ok_or_else(|| Error::UnknownReplica {
                replica: replica.clone(),
            })?;
        if leaf_pages == 0 {
            return Err(Error::InvalidArgument {
                what: "leaf_pages",
                reason: "is 0; a leaf must hold at least one page".into(),
            });
        }
        let page_count = self.detector.store().page_count();
        if pages.end > page_count {
            return Err(Error::PageOutOfRange {
                page: PageId(pages.end - 1),
                page_count,
            });
        }
        let status = entry.reader.status_now().map_err(|f| {
            entry.count_failure(&f);
            f.error
        })?;
        if !status.available {
            let f = entry
                .reader
                .refused("its status says it cannot serve reads".into());
            entry.count_failure(&f);
            return Err(f.error);
        }
        let mut ae = AntiEntropy {
            repairer: self,
            entry: &entry,
            leaves: Vec::new(),
            base: 0,
            ps: self.detector.store().page_size(),
            report: AntiEntropyReport {
                replica: entry.id.clone(),
                pages: pages.clone(),
                pages_compared: 0,
                digests_requested: 0,
                pages_fetched: 0,
                bytes_fetched: 0,
                pages_repaired: Vec::new(),
                repairs: Vec::new(),
                adopted: Vec::new(),
                diverged: Vec::new(),
                duration: Duration::ZERO,
            },
        };
        let mut first = pages.start;
        while first < pages.end {
            let count = (pages.end - first).min(ANTI_ENTROPY_TREE_PAGES);
            ae.load_local(first, count)?;
            ae.descend(first, count, leaf_pages)?;
            ae.report.pages_compared += count;
            first += count;
        }
        self.stats
            .bytes_fetched
            .fetch_add(ae.report.bytes_fetched, Ordering::Relaxed);
        self.stats.anti_entropy_runs.fetch_add(1, Ordering::Relaxed);
        let mut report = ae.report;
        report.duration = self.elapsed(started);
        Ok(report)
    }
}

/// One anti-entropy run over one replica.
struct AntiEntropy<'a> {
    repairer: &'a DataRepairer,
    entry: &'a ReplicaEntry,
    /// The leaf digest of each local page of the current tree, from `base`.
    leaves: Vec<u64>,
    base: u64,
    ps: usize,
    report: AntiEntropyReport,
}

impl AntiEntropy<'_> {
    fn load_local(&mut self, first: u64, count: u64) -> Result<()> {
        self.leaves.clear();
        self.base = first;
        let leaves = &mut self.leaves;
        self.repairer
            .detector
            .store()
            .scan_pages(PageId(first), count, &mut |p, b| {
                leaves.push(leaf_digest(p, b));
                Ok(())
            })
    }

    fn local_digest(&self, first: u64, count: u64) -> u64 {
        let start = (first - self.base) as usize;
        let mut d = RangeDigest::new();
        for &l in &self.leaves[start..start + count as usize] {
            d.push_leaf(l);
        }
        d.finish()
    }

    fn descend(&mut self, first: u64, count: u64, leaf_pages: u64) -> Result<()> {
        self.report.digests_requested += 1;
        let remote = self
            .entry
            .reader
            .range_digest(PageId(first), count)
            .map_err(|f| {
                self.entry.count_failure(&f);
                f.error
            })?;
        if remote == self.local_digest(first, count) {
            return Ok(());
        }
        if count > leaf_pages {
            let left = count / 2;
            self.descend(first, left, leaf_pages)?;
            return self.descend(first + left, count - left, leaf_pages);
        }
        for p in first..first + count {
            self.compare_page(PageId(p))?;
        }
        Ok(())
    }

    fn compare_page(&mut self, page: PageId) -> Result<()> {
        let det = &self.repairer.detector;
        let remote = self.entry.reader.read(page, self.ps).map_err(|f| {
            self.entry.count_failure(&f);
            f.error
        })?;
        self.entry.stats.fetched.fetch_add(1, Ordering::Relaxed);
        self.report.pages_fetched += 1;
        self.report.bytes_fetched += self.ps as u64;
        let mut local = vec![0u8; self.ps];
        det.store().read_page(page, &mut local)?;
        if local == remote {
            return Ok(());
        }
        let verified = det.verify(page, &remote);
        let remote_ok = verified.is_ok();
        match verified {
            Ok(()) => {
                self.entry.stats.verified.fetch_add(1, Ordering::Relaxed);
                self.entry.failing.served();
            }
            Err(e) => {
                self.entry.stats.rejected.fetch_add(1, Ordering::Relaxed);
                let needed = det.lsn_expectation(page).floor();
                self.repairer
                    .copy_rejected(self.entry, page, &remote, &e, needed);
            }
        }
        if det.verify(page, &local).is_ok() {
            let local_lsn = det.page_lsn_of(&local);
            let replica_lsn = det.page_lsn_of(&remote);
            let newer = matches!((local_lsn, replica_lsn), (Some(l), Some(r)) if r > l);
            if self.repairer.adopt_newer
                && remote_ok
                && newer
                && det.replace_if_unchanged(page, &local, &remote)?
            {
                self.entry.stats.used.fetch_add(1, Ordering::Relaxed);
                self.report.adopted.push(page);
                return Ok(());
            }
            self.report.diverged.push(DivergedPage {
                page,
                replica_copy_verifies: remote_ok,
                local_lsn,
                replica_lsn,
            });
            return Ok(());
        }
        // Fence it first (a page nobody has read yet is not in the registry);
        // the re-read inside also catches a host write that fixed it meanwhile.
        if !det.page_state(page).is_some_and(PageState::is_fenced) {
            match det.check_page(page, Observer::Scrub)? {
                Verdict::Clean | Verdict::Transient | Verdict::Unallocated => return Ok(()),
                Verdict::Corrupt { .. } => {}
            }
        }
        let r = self.repairer.repair_page(page)?;
        if r.is_repaired() {
            self.report.pages_repaired.push(page);
        }
        self.report.repairs.push(r);
        Ok(())
    }
}
