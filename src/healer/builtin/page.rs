//! Remedies for pages: repair from replicas, restore one page from the
//! snapshot head, and an error-only rescan.
//!
//! Each writes through the detector's repair path (a ticket, a verified
//! copy, a re-read), so none can overwrite a page the host rewrote while it
//! ran, and none writes bytes that do not verify. Each verifies by
//! re-reading the page through [`CorruptionDetector::recheck`], except a
//! page the repair from replicas wrote: the repair re-read it after its
//! sync and found exactly the verified copy it wrote, and that read is the
//! re-check (one read, not two).

use std::sync::Arc;

use crate::corruption::{CorruptionDetector, PageState, Verdict, REREAD_RUN_PAGES};
use crate::error::{Error, Result};
use crate::healer::diagnose::Problem;
use crate::healer::remedy::{Applied, Case, Remedy, RemedyContext, Verified};
use crate::host::PageSource;
use crate::repair::{RepairOutcome, RepairReport};
use crate::types::{PageId, Target};

/// The page a case is about.
pub(super) fn page_of(case: &Case<'_>) -> Result<PageId> {
    match case.target() {
        Target::Page(p) => Ok(*p),
        other => Err(Error::InvalidArgument {
            what: "target",
            reason: format!("{other} is not a page; this remedy treats pages"),
        }),
    }
}

/// Pages reported bad by someone the detector did not hear from (the
/// host, a health rule) are not fenced, and a repair leaves a page that is
/// not fenced alone (`NotNeeded`): for each, a verified read decides — one
/// that fails fences the page (and reports it; the report joins the
/// incident), one that verifies leaves nothing to repair. Pages already
/// fenced cost a registry look-up. Run before every repair from replicas
/// (one page, a batch, a page set), inside the remedy (the read hook is off).
pub(crate) fn fence_if_unheard(det: &CorruptionDetector, pages: &[PageId]) {
    let mut buf = Vec::new();
    // The registry is asked once for them all.
    for page in det.unfenced(pages) {
        buf.resize(det.store().page_size(), 0);
        // Its error is the point: the page is fenced when it fails.
        let _ = det.read_verified(page, &mut buf);
    }
}

/// Re-reads `page` and says whether it verifies now.
pub(super) fn recheck(det: &CorruptionDetector, page: PageId) -> Result<Verified> {
    Ok(verified(page, det.recheck(page)?))
}

/// [`recheck`] of each of `pages`, in their order: a run of consecutive
/// pages (up to the detector's re-read run) is re-read with one read, each
/// page verified on its own. What [`RepairFromReplicas::verify`] says of
/// each, for a page set repaired in one batch.
#[cfg(test)]
pub(crate) fn recheck_pages(det: &CorruptionDetector, pages: &[PageId]) -> Vec<Result<Verified>> {
    recheck_pages_quiet(det, pages)
        .into_iter()
        .zip(pages)
        .map(|(r, page)| r.map(|r| r.into_verified(*page)))
        .collect()
}

/// What the re-read of one page of a set found: the text of a page that
/// verifies is only made when asked (a set of thousands of healed pages
/// never shows it), that of a page still bad at once.
#[derive(Debug)]
pub(crate) enum Rechecked {
    /// It verifies ([`Verdict::Clean`] or [`Verdict::Transient`]).
    Verified,
    /// It is unallocated: nothing left to repair.
    Unallocated,
    /// It still fails verification (`healed` is false).
    Bad(Verified),
}

impl Rechecked {
    fn of(page: PageId, verdict: Verdict) -> Rechecked {
        match verdict {
            Verdict::Clean | Verdict::Transient => Rechecked::Verified,
            Verdict::Unallocated => Rechecked::Unallocated,
            bad @ Verdict::Corrupt { .. } => Rechecked::Bad(verified(page, bad)),
        }
    }

    /// Whether the page is healed: what [`Verified::healed`] says.
    pub(crate) fn healed(&self) -> bool {
        !matches!(self, Rechecked::Bad(_))
    }

    /// The evidence [`recheck`] gives for `page` (the page this was found
    /// for).
    pub(crate) fn evidence(&self, page: PageId) -> String {
        match self {
            Rechecked::Bad(v) => v.evidence.clone(),
            Rechecked::Verified => verified(page, Verdict::Clean).evidence,
            Rechecked::Unallocated => verified(page, Verdict::Unallocated).evidence,
        }
    }

    /// What [`recheck`] says of `page` (the page this was found for).
    #[cfg(test)]
    pub(crate) fn into_verified(self, page: PageId) -> Verified {
        match self {
            Rechecked::Verified => verified(page, Verdict::Clean),
            Rechecked::Unallocated => verified(page, Verdict::Unallocated),
            Rechecked::Bad(v) => v,
        }
    }
}

/// `recheck_pages` (test-only) with the texts of the pages that verify left unmade
/// (see [`Rechecked`]): the same reads, the same verdicts.
pub(crate) fn recheck_pages_quiet(
    det: &CorruptionDetector,
    pages: &[PageId],
) -> Vec<Result<Rechecked>> {
    let mut out = Vec::with_capacity(pages.len());
    let mut at = 0;
    while at < pages.len() {
        let first = pages[at];
        let mut len = 1;
        while at + len < pages.len()
            && len < REREAD_RUN_PAGES
            && first.0.checked_add(len as u64) == Some(pages[at + len].0)
        {
            len += 1;
        }
        let verdicts = det.recheck_run(first, len);
        debug_assert_eq!(verdicts.len(), len);
        for (page, v) in pages[at..at + len].iter().zip(verdicts) {
            out.push(v.map(|v| Rechecked::of(*page, v)));
        }
        at += len;
    }
    debug_assert_eq!(out.len(), pages.len());
    out
}

/// What a re-read's verdict says of `page`.
fn verified(page: PageId, verdict: Verdict) -> Verified {
    match verdict {
        Verdict::Clean | Verdict::Transient => {
            Verified::healed(format!("page {page} re-read and verified"))
        }
        Verdict::Unallocated => Verified::healed(format!(
            "page {page} is unallocated: nothing left to repair"
        )),
        Verdict::Corrupt { error, .. } => {
            Verified::not_healed(format!("page {page} still fails verification: {error}"))
        }
    }
}

/// Whether a page the context's repairer reports `Repaired` was re-read
/// and verified, after the repair's sync, by the context's own detector:
/// then that read is the page's re-check (see
/// [`Applied::verified`](Applied#structfield.verified)). With no detector,
/// or another one, the healer re-checks through its detector as for any
/// remedy.
pub(crate) fn repair_checks_for(ctx: &RemedyContext) -> bool {
    match (ctx.need_repairer(), ctx.detector_ref()) {
        (Ok(r), Some(d)) => Arc::ptr_eq(r.detector(), d),
        _ => false,
    }
}

/// The name of [`RepairFromReplicas`], by which a healer recognizes the
/// remedy it may run for many pages in one batch.
pub(crate) const REPAIR_FROM_REPLICAS: &str = "repair-from-replicas";

/// What a repair of `page` did, as [`RepairFromReplicas`] reports it: the
/// page written (or left to the host's newer write), or why not.
pub(crate) fn repaired(page: PageId, report: &RepairReport) -> Result<Applied> {
    match &report.outcome {
        RepairOutcome::Repaired { source } => Ok(Applied::new(format!(
            "page {page} written from {source} ({} bytes fetched)",
            report.bytes_fetched
        ))),
        // The host's write healed the page, not the repair: no credit.
        RepairOutcome::Superseded => Ok(Applied::overtaken(format!(
            "the host rewrote page {page} during the repair; its write stands, not the repair's copy"
        ))),
        RepairOutcome::NotNeeded => Ok(Applied::nothing_to_do(format!(
            "page {page} was not waiting for repair"
        ))),
        RepairOutcome::Irreparable { reason } => Err(Error::Irreparable {
            page,
            reason: reason.clone(),
        }),
        RepairOutcome::InProgress => {
            // Rendered only here: the only outcome whose text lists them.
            let tried = report
                .attempts
                .iter()
                .map(|a| format!("{:?}: {:?}", a.source, a.result))
                .collect::<Vec<_>>()
                .join("; ");
            Err(Error::InvalidArgument {
                what: "page",
                reason: format!("another repair of page {page} is under way; tried: {tried}"),
            })
        }
    }
}

/// Whether a repair of `page` wrote it (or left it to the host's newer
/// write, or found nothing to do): [`repaired`] without the text of its
/// success, which is made only when asked.
pub(crate) fn repair_written(page: PageId, report: &RepairReport) -> Result<()> {
    match &report.outcome {
        RepairOutcome::Repaired { .. } | RepairOutcome::Superseded | RepairOutcome::NotNeeded => {
            Ok(())
        }
        RepairOutcome::Irreparable { .. } | RepairOutcome::InProgress => {
            repaired(page, report).map(|_| ())
        }
    }
}

/// Repairs the page from the replicas' verified copies
/// ([`DataRepairer::repair_page`](crate::DataRepairer::repair_page); its
/// fallback sources too, if the host registered any).
#[derive(Debug, Default, Clone, Copy)]
pub struct RepairFromReplicas;

impl Remedy for RepairFromReplicas {
    fn name(&self) -> &str {
        REPAIR_FROM_REPLICAS
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::CORRUPT_PAGE || *problem == Problem::IRREPARABLE_PAGE
    }

    fn execute(&self, ctx: &RemedyContext, case: &Case<'_>) -> Result<Applied> {
        let page = page_of(case)?;
        if let Some(det) = ctx.detector_ref() {
            fence_if_unheard(det, &[page]);
        }
        let repairer = ctx.need_repairer()?;
        let report = repairer.repair_page(page)?;
        let applied = repaired(page, &report)?;
        Ok(match report.outcome {
            // The repair re-read the page after its sync and found exactly
            // the verified copy it wrote: that read is the re-check, when it
            // is the detector the healer checks with.
            RepairOutcome::Repaired { .. } if repair_checks_for(ctx) => {
                applied.verified(verified(page, Verdict::Clean))
            }
            _ => applied,
        })
    }

    /// The repair's own re-read of a page it wrote (see
    /// [`Applied::verified`](Applied#structfield.verified));
    /// for a page it did not write (the host's newer write stands, or there
    /// was nothing to repair), a re-read now.
    fn verify(&self, ctx: &RemedyContext, case: &Case<'_>, applied: &Applied) -> Result<Verified> {
        match &applied.verified {
            Some(found) => Ok(found.clone()),
            None => recheck(ctx.need_detector()?, page_of(case)?),
        }
    }
}

/// Restores one page from the snapshot head
/// ([`StateSnapshotManager::page_source`](crate::StateSnapshotManager::page_source)),
/// only when the head vouches that its copy is not stale (see
/// [the restore point](crate::snapshot#the-restore-point-and-single-page-reads)),
/// through the detector's repair path: the copy is verified before it is
/// written and re-read after.
#[derive(Debug, Default, Clone, Copy)]
pub struct RestorePageFromSnapshot;

impl Remedy for RestorePageFromSnapshot {
    fn name(&self) -> &str {
        "restore-page-from-snapshot"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::CORRUPT_PAGE || *problem == Problem::IRREPARABLE_PAGE
    }

    fn execute(&self, ctx: &RemedyContext, case: &Case<'_>) -> Result<Applied> {
        let page = page_of(case)?;
        let det = ctx.need_detector()?;
        let source = ctx.need_snapshots()?.page_source();
        let Some(ticket) = det.begin_repair(page) else {
            return match det.page_state(page) {
                Some(PageState::Repairing) => Err(Error::InvalidArgument {
                    what: "page",
                    reason: format!("another repair of page {page} is under way"),
                }),
                _ => Ok(Applied::nothing_to_do(format!(
                    "page {page} was not waiting for repair"
                ))),
            };
        };
        let mut buf = vec![0u8; det.store().page_size()];
        let floor = det.last_written_lsn(page);
        // A copy the head cannot vouch for, or one that does not verify, is
        // never written; the dropped ticket puts the page back to wait.
        if !source.read_page(page, floor, &mut buf)? {
            return Err(Error::Irreparable {
                page,
                reason: format!(
                    "{} holds no copy it can vouch for (needed LSN {floor:?})",
                    source.name()
                ),
            });
        }
        det.verify(page, &buf)?;
        match det.commit_repair(ticket, &buf) {
            Ok(commit) => Ok(Applied::new(format!(
                "page {page} restored from {} ({commit:?})",
                source.name()
            ))),
            Err((_ticket, e)) => Err(e),
        }
    }

    fn verify(&self, ctx: &RemedyContext, case: &Case<'_>, _: &Applied) -> Result<Verified> {
        recheck(ctx.need_detector()?, page_of(case)?)
    }
}

/// An error-only scrub of the target: re-reads the page (or, for any other
/// target, every page the detector knows to be bad) and lifts the fence of
/// what now verifies — a transient fault, or a page repaired behind the
/// detector's back. Writes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rescan;

impl Rescan {
    fn pages(det: &Arc<CorruptionDetector>, case: &Case<'_>) -> Vec<PageId> {
        match case.target() {
            Target::Page(p) => vec![*p],
            _ => {
                let mut v = det.pages_in(PageState::Suspect);
                v.extend(det.pages_in(PageState::Irreparable));
                v.sort_unstable();
                v
            }
        }
    }
}

impl Remedy for Rescan {
    fn name(&self) -> &str {
        "rescan"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::CORRUPT_PAGE || *problem == Problem::IRREPARABLE_PAGE
    }

    fn execute(&self, ctx: &RemedyContext, case: &Case<'_>) -> Result<Applied> {
        let det = ctx.need_detector()?;
        let pages = Self::pages(det, case);
        let mut clean = 0usize;
        for &p in &pages {
            if matches!(
                det.recheck(p)?,
                Verdict::Clean | Verdict::Transient | Verdict::Unallocated
            ) {
                clean += 1;
            }
        }
        Ok(Applied::new(format!(
            "rescanned {} page(s); {clean} verified",
            pages.len()
        )))
    }

    fn verify(&self, ctx: &RemedyContext, case: &Case<'_>, _: &Applied) -> Result<Verified> {
        let det = ctx.need_detector()?;
        match case.target() {
            Target::Page(p) => recheck(det, *p),
            _ => {
                let bad = Self::pages(det, case);
                Ok(if bad.is_empty() {
                    Verified::healed("no page is known bad")
                } else {
                    Verified::not_healed(format!("{} page(s) still fail verification", bad.len()))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::testing::{both_placements, Damage};
    use crate::{ChecksumPlacement, CorruptionConfig, MemStore, PageStore};

    const PS: usize = 512;
    const PAGES: u64 = 80;

    /// A detector over sealed pages, `damaged` ones bit-flipped below it.
    fn sealed(placement: ChecksumPlacement, damaged: &[u64]) -> CorruptionDetector {
        let raw = Arc::new(MemStore::new(PS, PAGES).unwrap());
        let det = CorruptionConfig::new(placement).build(raw.clone()).unwrap();
        for p in 0..PAGES {
            det.write_sealed(PageId(p), &mut vec![p as u8 ^ 0x5A; PS])
                .unwrap();
        }
        let mut b = vec![0u8; PS];
        for &p in damaged {
            raw.read_page(PageId(p), &mut b).unwrap();
            Damage::BitFlip { byte: 7, bit: 2 }.apply(&mut b);
            raw.write_page(PageId(p), &b).unwrap();
        }
        det
    }

    /// Each placement's table is used by one detector: a second one gets a
    /// table of its own, as fresh.
    fn twin(placement: &ChecksumPlacement) -> ChecksumPlacement {
        match placement {
            ChecksumPlacement::Trailer => ChecksumPlacement::Trailer,
            ChecksumPlacement::Sidecar(_) => {
                ChecksumPlacement::Sidecar(Arc::new(crate::ChecksumTable::new(PS).unwrap()))
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// A page set's re-check says of every page, in its order, what a
        /// re-check of that page alone says (runs longer than one read,
        /// pages out of order and repeated included).
        #[test]
        fn rechecking_pages_together_says_what_each_recheck_says(
            pages in proptest::collection::vec(0..PAGES, 0..70),
            damaged in proptest::collection::btree_set(0..PAGES, 0..12),
            run_from in 0..PAGES - 40,
        ) {
            // A long run of consecutive pages as well as scattered ones.
            let damaged: Vec<u64> = damaged.into_iter().collect();
            let mut pages = pages;
            pages.extend(run_from..run_from + 40);
            let pages: Vec<PageId> = pages.into_iter().map(PageId).collect();
            for (name, placement) in both_placements(PS) {
                let together = sealed(twin(&placement), &damaged);
                let alone = sealed(placement, &damaged);
                let got = recheck_pages(&together, &pages);
                prop_assert_eq!(got.len(), pages.len());
                for (page, got) in pages.iter().zip(got) {
                    let want = recheck(&alone, *page).unwrap();
                    let got = got.unwrap();
                    prop_assert_eq!(got.healed, want.healed, "{} page {}", name, page);
                    prop_assert_eq!(&got.evidence, &want.evidence, "{} page {}", name, page);
                    prop_assert_eq!(got.healed, !damaged.contains(&page.0), "{} page {}", name, page);
                }
            }
        }
    }
}
