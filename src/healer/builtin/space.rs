//! Predictive remedies: act on a trend before its threshold is crossed.
//!
//! A disk filling up ([`Problem::DISK_FILLING`], or already full) is first
//! given room by trimming snapshot retention ([`TrimSnapshots`], over the
//! [`StateSnapshotManager`](crate::StateSnapshotManager)); the host's
//! [`FreeDiskSpace`](super::FreeDiskSpace) comes after it. Read errors
//! trending up ([`Problem::RISING_ERRORS`]) get an error-only scrub of the
//! pages that have failed before ([`TargetedScrub`]): a page bad again is
//! fenced and reported, and becomes its own incident.
//!
//! A prediction is made while the metric is still healthy, so "healthy"
//! alone proves nothing: a remedy that samples its metric before acting
//! ([`Applied::metric_before`]) is verified only when the metric is healthy
//! **and** lower than it was.

use crate::corruption::{Observer, PageState, Verdict};
use crate::error::{Error, Result};
use crate::healer::diagnose::Problem;
use crate::healer::remedy::{Applied, Case, Remedy, RemedyContext, Verified};
use crate::health::Band;
use crate::snapshot::Retention;
use crate::types::{PageId, Target};

/// The case's metric, sampled now (`None` without a monitor, a metric
/// target, or a value).
pub(super) fn metric_now(ctx: &RemedyContext, case: &Case<'_>) -> Option<f64> {
    let Target::Metric(m) = case.target() else {
        return None;
    };
    let sample = ctx.health_ref()?.sample_now().ok()?;
    sample.metric(m)?.value
}

/// Verified when the case's metric is healthy and, when it was sampled
/// before the action, lower than it was.
pub(super) fn relieved(
    ctx: &RemedyContext,
    case: &Case<'_>,
    applied: &Applied,
) -> Result<Verified> {
    let Some(monitor) = ctx.health_ref() else {
        return Ok(Verified::unchecked(
            "the action was taken; no health monitor to re-check",
        ));
    };
    let sample = monitor.sample_now()?;
    let Target::Metric(m) = case.target() else {
        return Ok(if sample.band == Band::Healthy {
            Verified::healed("overall health is healthy")
        } else {
            Verified::not_healed(format!("overall health is {}", sample.band.as_str()))
        });
    };
    let Some(status) = sample.metric(m) else {
        return Ok(Verified::not_healed(format!(
            "{m} is not a monitored metric"
        )));
    };
    let (band, after) = (status.band, status.value);
    Ok(match (band, applied.metric_before, after) {
        (Band::Healthy, Some(b), Some(a)) if a < b => {
            Verified::healed(format!("{m} fell from {b:.2} to {a:.2} and is healthy"))
        }
        (Band::Healthy, Some(b), Some(a)) => Verified::not_healed(format!(
            "{m} is {a:.2}, not lower than {b:.2} before the action"
        )),
        (Band::Healthy, None, _) => Verified::healed(format!("{m} is healthy")),
        (Band::Healthy, Some(_), None) => {
            Verified::not_healed(format!("{m} gave no value to re-check"))
        }
        (band, ..) => Verified::not_healed(format!("{m} is still {}", band.as_str())),
    })
}

/// Deletes snapshots beyond the newest `keep_last` now
/// ([`StateSnapshotManager::apply_retention_with`](crate::StateSnapshotManager::apply_retention_with)),
/// for a disk filling up or full. Never deletes the newest snapshot, the
/// head, or an ancestor of a kept one; fails (so the next remedy is tried)
/// when there is nothing to delete. Planned only with a snapshot manager.
#[derive(Debug, Clone, Copy)]
pub struct TrimSnapshots {
    keep_last: usize,
}

impl TrimSnapshots {
    /// Keeps the newest `keep_last` snapshots (at least 1).
    #[must_use]
    pub fn new(keep_last: usize) -> Self {
        TrimSnapshots {
            keep_last: keep_last.max(1),
        }
    }
}

impl Default for TrimSnapshots {
    /// Keeps the newest snapshot only.
    fn default() -> Self {
        TrimSnapshots::new(1)
    }
}

impl Remedy for TrimSnapshots {
    fn name(&self) -> &str {
        "trim-snapshots"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::DISK_FILLING || *problem == Problem::DISK_FULL
    }

    fn execute(&self, ctx: &RemedyContext, case: &Case<'_>) -> Result<Applied> {
        let snaps = ctx.need_snapshots()?;
        let before = metric_now(ctx, case);
        let listed: Vec<_> = snaps.snapshots();
        let deleted = snaps.apply_retention_with(Retention::KeepLast(self.keep_last))?;
        if deleted.is_empty() {
            return Err(Error::InvalidArgument {
                what: "snapshots",
                reason: format!(
                    "nothing to trim: {} snapshot(s), the newest {} and their ancestors are kept",
                    listed.len(),
                    self.keep_last
                ),
            });
        }
        let bytes: u64 = listed
            .iter()
            .filter(|s| deleted.contains(&s.id))
            .map(|s| s.file_bytes)
            .sum();
        Ok(Applied::new(format!(
            "deleted snapshots {deleted:?} ({bytes} bytes), keeping the newest {}",
            self.keep_last
        ))
        .metric_before(before))
    }

    fn verify(&self, ctx: &RemedyContext, case: &Case<'_>, applied: &Applied) -> Result<Verified> {
        relieved(ctx, case, applied)
    }

    fn available(&self, ctx: &RemedyContext) -> bool {
        ctx.snapshots_ref().is_some()
    }
}

/// Re-reads every page the detector has seen fail (suspect, irreparable,
/// or repaired and still remembered), verifying each: an error-only scrub
/// for read errors trending up. A page bad again is fenced and reported
/// (its own incident); verified only when, read again, no page the
/// detector holds fenced is still bad. Planned only with
/// a detector.
#[derive(Debug, Default, Clone, Copy)]
pub struct TargetedScrub;

impl Remedy for TargetedScrub {
    fn name(&self) -> &str {
        "targeted-scrub"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::RISING_ERRORS
    }

    fn execute(&self, ctx: &RemedyContext, _: &Case<'_>) -> Result<Applied> {
        let det = ctx.need_detector()?;
        let pages: Vec<PageId> = det
            .suspects()
            .into_iter()
            .filter(|(_, e)| e.state != PageState::Repairing)
            .map(|(p, _)| p)
            .collect();
        let (mut bad, mut unread) = (Vec::new(), 0usize);
        for &p in &pages {
            // A fenced page is re-checked (a transient fault lifts its
            // fence); one repaired before is read as a scrub reads it (bad
            // again, it is fenced and reported).
            let verdict = if det.page_state(p).is_some_and(PageState::is_fenced) {
                det.recheck(p)
            } else {
                det.check_page(p, Observer::Scrub)
            };
            match verdict {
                Ok(Verdict::Corrupt { .. }) => bad.push(p),
                Ok(_) => {}
                Err(_) => unread += 1,
            }
        }
        if unread > 0 {
            return Err(Error::InvalidArgument {
                what: "pages",
                reason: format!(
                    "{unread} of {} page(s) with an error history could not be read",
                    pages.len()
                ),
            });
        }
        Ok(Applied::new(format!(
            "re-read {} page(s) with an error history: {} bad ({bad:?}), each reported",
            pages.len(),
            bad.len()
        )))
    }

    /// Re-reads every page the detector still holds fenced (those the
    /// scrub found bad, and any fenced since): verified only when none is
    /// still bad.
    fn verify(&self, ctx: &RemedyContext, _: &Case<'_>, applied: &Applied) -> Result<Verified> {
        let det = ctx.need_detector()?;
        let mut bad = Vec::new();
        for (p, e) in det.suspects() {
            if !e.state.is_fenced() || e.state == PageState::Repairing {
                continue;
            }
            if let Verdict::Corrupt { .. } = det.recheck(p)? {
                bad.push(p);
            }
        }
        Ok(if bad.is_empty() {
            Verified::healed(format!(
                "no page with an error history is still bad ({})",
                applied.evidence
            ))
        } else {
            Verified::not_healed(format!(
                "{} page(s) still bad after the scrub: {bad:?}",
                bad.len()
            ))
        })
    }

    fn available(&self, ctx: &RemedyContext) -> bool {
        ctx.need_detector().is_ok()
    }
}
