//! One remedy per [`HostAction`], and a snapshot taken on request.
//!
//! A host action is planned only when the host's
//! [`HostActions::supports`](crate::HostActions::supports) says yes. Those
//! that treat a metric (caches, load, disk space, pools) verify by sampling
//! the [`HealthMonitor`](crate::HealthMonitor) again: healed when the
//! metric left the degraded and critical bands. A restart verifies by the
//! component's heartbeats when the crash detector watches it. An action
//! nothing in the library can check (fail over, rebuild an index) verifies
//! on the host's word, and says so in its evidence.

use std::sync::Arc;

use crate::crash::ComponentState;
use crate::error::{Error, Result};
use crate::healer::diagnose::Problem;
use crate::healer::remedy::{Applied, Case, Remedy, RemedyContext, Verified};
use crate::health::Band;
use crate::host::HostAction;
use crate::types::{ReplicaId, Target};

/// Samples health now and says whether the case's metric is healthy.
fn metric_recovered(ctx: &RemedyContext, case: &Case<'_>) -> Result<Verified> {
    let Some(monitor) = ctx.health_ref() else {
        return Ok(Verified::unchecked(
            "the host acknowledged the action; no health monitor to re-check",
        ));
    };
    let sample = monitor.sample_now()?;
    let (name, band) = match case.target() {
        Target::Metric(m) => match sample.metric(m) {
            Some(s) => (m.to_string(), s.band),
            None => (m.to_string(), sample.band),
        },
        _ => ("overall health".to_string(), sample.band),
    };
    Ok(if band == Band::Healthy {
        Verified::healed(format!("{name} is healthy again"))
    } else {
        Verified::not_healed(format!("{name} is still {}", band.as_str()))
    })
}

fn component_of(case: &Case<'_>) -> Result<Arc<str>> {
    match case.target() {
        Target::Component(c) => Ok(c.clone()),
        other => Err(Error::InvalidArgument {
            what: "target",
            reason: format!("{other} is not a component"),
        }),
    }
}

/// Restarts the component through
/// [`HostActions::restart_component`](crate::HostActions::restart_component).
/// The healer allows at most the configured restarts per component in a
/// period (restart intensity) and escalates beyond it.
#[derive(Debug, Default, Clone, Copy)]
pub struct RestartComponent;

impl Remedy for RestartComponent {
    fn name(&self) -> &str {
        "restart-component"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::COMPONENT_DEAD || *problem == Problem::WORKER_DIED
    }

    fn execute(&self, ctx: &RemedyContext, case: &Case<'_>) -> Result<Applied> {
        let c = component_of(case)?;
        ctx.need_host()?.restart_component(&c)?;
        Ok(Applied::new(format!("the host restarted component {c}")))
    }

    fn verify(&self, ctx: &RemedyContext, case: &Case<'_>, _: &Applied) -> Result<Verified> {
        let c = component_of(case)?;
        let Some(crash) = ctx.crash_ref() else {
            return Ok(Verified::unchecked(format!(
                "the host acknowledged the restart of {c}; no crash detector to re-check"
            )));
        };
        crash.check_now()?;
        Ok(match crash.components().into_iter().find(|s| s.name == c) {
            Some(s) if s.state == ComponentState::Alive => {
                Verified::healed(format!("component {c} beats again"))
            }
            Some(s) => Verified::not_healed(format!("component {c} is {}", s.state)),
            None => Verified::unchecked(format!(
                "the host acknowledged the restart of {c}; it sends no heartbeats to re-check"
            )),
        })
    }

    fn host_action(&self) -> Option<HostAction> {
        Some(HostAction::RestartComponent)
    }
}

/// Drops the host's caches ([`HostActions::clear_caches`](crate::HostActions::clear_caches)).
#[derive(Debug, Default, Clone, Copy)]
pub struct ClearCaches;

impl Remedy for ClearCaches {
    fn name(&self) -> &str {
        "clear-caches"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::MEMORY_PRESSURE
    }

    fn execute(&self, ctx: &RemedyContext, _: &Case<'_>) -> Result<Applied> {
        ctx.need_host()?.clear_caches()?;
        Ok(Applied::new("the host cleared its caches"))
    }

    fn verify(&self, ctx: &RemedyContext, case: &Case<'_>, _: &Applied) -> Result<Verified> {
        metric_recovered(ctx, case)
    }

    fn host_action(&self) -> Option<HostAction> {
        Some(HostAction::ClearCaches)
    }
}

/// Sheds `percent` of new work ([`HostActions::shed_load`](crate::HostActions::shed_load));
/// undone by `shed_load(0)`.
#[derive(Debug, Clone, Copy)]
pub struct ShedLoad {
    percent: u8,
}

impl ShedLoad {
    /// Sheds `percent` (clamped to 1..=100) of new work.
    #[must_use]
    pub fn new(percent: u8) -> Self {
        ShedLoad {
            percent: percent.clamp(1, 100),
        }
    }
}

impl Default for ShedLoad {
    /// Sheds 25 %.
    fn default() -> Self {
        ShedLoad::new(25)
    }
}

impl Remedy for ShedLoad {
    fn name(&self) -> &str {
        "shed-load"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::RESOURCE_PRESSURE
            || *problem == Problem::PREDICTED_EXHAUSTION
            || *problem == Problem::COMPONENT_SLOW
    }

    fn execute(&self, ctx: &RemedyContext, _: &Case<'_>) -> Result<Applied> {
        ctx.need_host()?.shed_load(self.percent)?;
        Ok(Applied::new(format!(
            "the host sheds {} % of new work",
            self.percent
        )))
    }

    fn verify(&self, ctx: &RemedyContext, case: &Case<'_>, _: &Applied) -> Result<Verified> {
        metric_recovered(ctx, case)
    }

    fn undo(&self, ctx: &RemedyContext, _: &Case<'_>, _: &Applied) -> Result<()> {
        ctx.need_host()?.shed_load(0)
    }

    fn host_action(&self) -> Option<HostAction> {
        Some(HostAction::ShedLoad)
    }
}

/// Asks the host to free disk space
/// ([`HostActions::free_disk_space`](crate::HostActions::free_disk_space)).
#[derive(Debug, Clone, Copy)]
pub struct FreeDiskSpace {
    bytes_wanted: u64,
}

impl FreeDiskSpace {
    /// Asks for at least `bytes_wanted` bytes.
    #[must_use]
    pub fn new(bytes_wanted: u64) -> Self {
        FreeDiskSpace { bytes_wanted }
    }
}

impl Default for FreeDiskSpace {
    /// Asks for 1 GiB.
    fn default() -> Self {
        FreeDiskSpace::new(1 << 30)
    }
}

impl Remedy for FreeDiskSpace {
    fn name(&self) -> &str {
        "free-disk-space"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::DISK_FULL || *problem == Problem::DISK_FILLING
    }

    fn execute(&self, ctx: &RemedyContext, case: &Case<'_>) -> Result<Applied> {
        let before = super::space::metric_now(ctx, case);
        let freed = ctx.need_host()?.free_disk_space(self.bytes_wanted)?;
        Ok(Applied::new(format!(
            "the host freed {freed} bytes (asked for {})",
            self.bytes_wanted
        ))
        .metric_before(before))
    }

    /// Healthy, and — when the disk was sampled before — fuller no more.
    fn verify(&self, ctx: &RemedyContext, case: &Case<'_>, applied: &Applied) -> Result<Verified> {
        super::space::relieved(ctx, case, applied)
    }

    fn host_action(&self) -> Option<HostAction> {
        Some(HostAction::FreeDiskSpace)
    }
}

/// Resizes the host's pool `pool` to `size` entries
/// ([`HostActions::resize_pool`](crate::HostActions::resize_pool)) for
/// resource pressure; undone by resizing back to `previous`. Not among the
/// defaults: only the host knows its pools.
#[derive(Debug, Clone)]
pub struct ResizePool {
    pool: String,
    size: usize,
    previous: usize,
}

impl ResizePool {
    /// Resizes `pool` from `previous` to `size` entries.
    #[must_use]
    pub fn new(pool: impl Into<String>, previous: usize, size: usize) -> Self {
        ResizePool {
            pool: pool.into(),
            size,
            previous,
        }
    }
}

impl Remedy for ResizePool {
    fn name(&self) -> &str {
        "resize-pool"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::RESOURCE_PRESSURE || *problem == Problem::COMPONENT_SLOW
    }

    fn execute(&self, ctx: &RemedyContext, _: &Case<'_>) -> Result<Applied> {
        ctx.need_host()?.resize_pool(&self.pool, self.size)?;
        Ok(Applied::new(format!(
            "pool {} resized from {} to {}",
            self.pool, self.previous, self.size
        )))
    }

    fn verify(&self, ctx: &RemedyContext, case: &Case<'_>, _: &Applied) -> Result<Verified> {
        metric_recovered(ctx, case)
    }

    fn undo(&self, ctx: &RemedyContext, _: &Case<'_>, _: &Applied) -> Result<()> {
        ctx.need_host()?.resize_pool(&self.pool, self.previous)
    }

    fn host_action(&self) -> Option<HostAction> {
        Some(HostAction::ResizePool)
    }
}

/// Fails over to the replica `to`
/// ([`HostActions::fail_over`](crate::HostActions::fail_over)) when a page
/// cannot be repaired or the undo journal is poisoned. Risky: a snapshot is
/// taken first when the context can take one. Not among the defaults: only
/// the host knows which replica can serve.
#[derive(Debug, Clone)]
pub struct FailOver {
    to: ReplicaId,
}

impl FailOver {
    /// Fails over to `to`.
    #[must_use]
    pub fn new(to: ReplicaId) -> Self {
        FailOver { to }
    }
}

impl Remedy for FailOver {
    fn name(&self) -> &str {
        "fail-over"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::IRREPARABLE_PAGE || *problem == Problem::JOURNAL_POISONED
    }

    fn execute(&self, ctx: &RemedyContext, _: &Case<'_>) -> Result<Applied> {
        ctx.need_host()?.fail_over(&self.to)?;
        Ok(Applied::new(format!("the host failed over to {}", self.to)))
    }

    fn verify(&self, _: &RemedyContext, _: &Case<'_>, _: &Applied) -> Result<Verified> {
        Ok(Verified::unchecked(format!(
            "the host serves from {}; nothing in the library can re-check a fail-over",
            self.to
        )))
    }

    fn risky(&self) -> bool {
        true
    }

    fn host_action(&self) -> Option<HostAction> {
        Some(HostAction::FailOver)
    }
}

/// Rebuilds the host's index `index`
/// ([`HostActions::rebuild_index`](crate::HostActions::rebuild_index)) for
/// the host's own `problem` (say, a diagnosis rule that maps corrupt pages
/// of an index's range to `index-damaged`). Not among the defaults.
#[derive(Debug, Clone)]
pub struct RebuildIndex {
    index: String,
    problem: Problem,
}

impl RebuildIndex {
    /// Rebuilds `index` when `problem` is diagnosed.
    #[must_use]
    pub fn new(index: impl Into<String>, problem: Problem) -> Self {
        RebuildIndex {
            index: index.into(),
            problem,
        }
    }
}

impl Remedy for RebuildIndex {
    fn name(&self) -> &str {
        "rebuild-index"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == self.problem
    }

    fn execute(&self, ctx: &RemedyContext, _: &Case<'_>) -> Result<Applied> {
        ctx.need_host()?.rebuild_index(&self.index)?;
        Ok(Applied::new(format!(
            "the host rebuilt index {}",
            self.index
        )))
    }

    fn verify(&self, ctx: &RemedyContext, case: &Case<'_>, _: &Applied) -> Result<Verified> {
        match (case.target(), ctx.detector_ref()) {
            (Target::Page(p), Some(det)) => super::page::recheck(det, *p),
            _ => Ok(Verified::unchecked(format!(
                "the host rebuilt index {}; nothing in the library can re-check it",
                self.index
            ))),
        }
    }

    fn host_action(&self) -> Option<HostAction> {
        Some(HostAction::RebuildIndex)
    }
}

/// Takes a snapshot now, with the context's
/// [`SnapshotTaker`](crate::healer::SnapshotTaker), after a snapshot failed;
/// verifies it by reading every chunk of the new head's chain back.
#[derive(Debug, Default, Clone, Copy)]
pub struct TakeSnapshot;

impl Remedy for TakeSnapshot {
    fn name(&self) -> &str {
        "take-snapshot"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::SNAPSHOT_FAILED
    }

    fn execute(&self, ctx: &RemedyContext, _: &Case<'_>) -> Result<Applied> {
        let report = ctx.take_snapshot().ok_or_else(|| {
            Error::config(
                "snapshot_taker",
                "taking a snapshot needs a snapshot manager and a snapshot taker in the RemedyContext",
            )
        })??;
        Ok(Applied::new(format!(
            "snapshot {} taken ({} pages stored)",
            report.info.id, report.info.stored_pages
        )))
    }

    fn verify(&self, ctx: &RemedyContext, _: &Case<'_>, _: &Applied) -> Result<Verified> {
        let snaps = ctx.need_snapshots()?;
        let Some(head) = snaps.head() else {
            return Ok(Verified::not_healed("no snapshot is the head"));
        };
        snaps.verify(head)?;
        Ok(Verified::healed(format!("snapshot {head} verifies")))
    }
}
