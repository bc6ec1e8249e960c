//! The health half of an attempt's verification: health sampled before
//! and after a remedy runs (when the healer has a health monitor), and the
//! rule that says the remedy made things worse — the band worsened, or the
//! score fell by more than the configured tolerance.
//!
//! A sample that fails is noted in the incident's timeline and counts as
//! unknown: an unknown sample never makes a remedy count as worse.

use std::sync::Arc;

use crate::audit::EntryKind;
use crate::healer::incident::{Incident, Step};
use crate::healer::remedy::{Applied, Case, Remedy};
use crate::health::Band;

use super::{guarded, SelfHealer};

/// Health as sampled around an attempt.
#[derive(Clone, Copy, Debug)]
pub(super) struct Health {
    score: Option<f64>,
    band: Band,
}

impl SelfHealer {
    /// Samples health now, when a monitor is present (a failed sample is
    /// noted in the timeline and counts as unknown).
    pub(super) fn health(&self, inc: &mut Incident) -> Option<Health> {
        let monitor = self.ctx.health_ref()?;
        match monitor.sample_now() {
            Ok(s) => Some(Health {
                score: s.score,
                band: s.band,
            }),
            Err(e) => {
                let now = self.ctx.clock_ref().now_ns();
                inc.push(
                    now,
                    Step::Verified,
                    format!("health could not be sampled: {e}"),
                );
                None
            }
        }
    }

    /// Undoes `remedy`'s `applied` action because of `why`, recording the
    /// undo (or why it could not be done) in the incident and the audit
    /// log. Returns whether it was undone.
    pub(super) fn take_back(
        &self,
        inc: &mut Incident,
        case: &Case<'_>,
        remedy: &Arc<dyn Remedy>,
        applied: &Applied,
        why: &str,
        evidence: &mut Vec<String>,
    ) -> bool {
        let name = remedy.name();
        let (text, undone) = match guarded(|| remedy.undo(&self.ctx, case, applied)) {
            Ok(()) => (format!("{name} undone: {why}"), true),
            Err(e) => (format!("{name} could not be undone ({e}): {why}"), false),
        };
        if !undone {
            evidence.push(text.clone());
        }
        inc.push(self.ctx.clock_ref().now_ns(), Step::Undone, text.clone());
        self.audit(inc, EntryKind::Undone, text);
        undone
    }

    /// Why health after is worse than before, if it is.
    pub(super) fn worse(&self, before: Option<Health>, after: Option<Health>) -> Option<String> {
        let (b, a) = (before?, after?);
        if a.band > b.band {
            return Some(format!(
                "health went from {} to {}",
                b.band.as_str(),
                a.band.as_str()
            ));
        }
        match (b.score, a.score) {
            (Some(sb), Some(sa)) if sa < sb - self.tolerance => {
                Some(format!("the health score fell from {sb:.1} to {sa:.1}"))
            }
            _ => None,
        }
    }
}
