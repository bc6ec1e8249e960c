//! The remedy for a stalled checksum table log: make room when the disk is
//! full, then resume the log.
//!
//! [`ResumeChecksumLog`] treats [`Problem::CHECKSUM_LOG_STALLED`] (the
//! durable sidecar table's log stalled after a retryable write or fsync
//! failure). When the table says the disk is full it first makes room as
//! [`ResumeJournal`](super::ResumeJournal) does (snapshot retention trimmed
//! to the newest, the host asked for space; best effort, recorded in the
//! evidence). Then it calls
//! [`ChecksumTable::resume`](crate::checksum::ChecksumTable::resume), which
//! writes again what the log had not made durable, and verifies that the
//! log is no longer stalled and that a flush of it succeeds. A resume that
//! fails because the disk is still full fails the attempt; the table
//! reports the stall again after its own backoff, and the next incident
//! tries again.

use std::sync::Arc;

use super::journal::make_room;
use crate::checksum::{ChecksumPlacement, ChecksumTable};
use crate::error::{Error, Result};
use crate::healer::diagnose::Problem;
use crate::healer::remedy::{Applied, Case, Remedy, RemedyContext, Verified};

/// Resumes the stalled log of the detector's durable sidecar table, making
/// room first when the disk is full. Planned only with a detector whose
/// checksums are in a durable sidecar table.
#[derive(Debug, Clone, Copy)]
pub struct ResumeChecksumLog {
    bytes_wanted: u64,
}

impl ResumeChecksumLog {
    /// Asks the host for at least `bytes_wanted` bytes when the disk is
    /// full.
    #[must_use]
    pub fn new(bytes_wanted: u64) -> Self {
        ResumeChecksumLog { bytes_wanted }
    }
}

impl Default for ResumeChecksumLog {
    /// Asks for 1 GiB when the disk is full.
    fn default() -> Self {
        ResumeChecksumLog::new(1 << 30)
    }
}

/// The detector's durable sidecar table.
fn table(ctx: &RemedyContext) -> Result<&Arc<ChecksumTable>> {
    match ctx.need_detector()?.placement() {
        ChecksumPlacement::Sidecar(t) if t.is_durable() => Ok(t),
        _ => Err(Error::config(
            "detector",
            "the remedy needs a detector whose checksums are in a durable sidecar table \
             (ChecksumTable::open); this one has none, so there is no checksum log to resume",
        )),
    }
}

impl Remedy for ResumeChecksumLog {
    fn name(&self) -> &str {
        "resume-checksum-log"
    }

    fn applies_to(&self, problem: &Problem) -> bool {
        *problem == Problem::CHECKSUM_LOG_STALLED
    }

    fn execute(&self, ctx: &RemedyContext, _: &Case<'_>) -> Result<Applied> {
        let t = table(ctx)?;
        let room = if t.log_stall().is_some_and(|s| s.no_space) {
            make_room(ctx, self.bytes_wanted)
        } else {
            Vec::new()
        };
        let prefix = if room.is_empty() {
            String::new()
        } else {
            format!("{}; ", room.join("; "))
        };
        match t.resume() {
            Ok(r) if r.was_stalled => Ok(Applied::new(format!(
                "{prefix}checksum log resumed: {} bytes written again after {} durable bytes, synced",
                r.bytes_rewritten, r.bytes_kept
            ))),
            // Nothing to do, unless room was made for it.
            Ok(_) => Ok(Applied {
                nothing_to_do: room.is_empty(),
                ..Applied::new(format!(
                    "{prefix}the checksum log was not stalled (resumed already)"
                ))
            }),
            Err(Error::Stalled {
                component,
                reason,
                no_space,
            }) => Err(Error::Stalled {
                component,
                reason: format!("{prefix}{reason}"),
                no_space,
            }),
            Err(e) => Err(e),
        }
    }

    fn verify(&self, ctx: &RemedyContext, _: &Case<'_>, _: &Applied) -> Result<Verified> {
        let t = table(ctx)?;
        if let Some(s) = t.log_stall() {
            return Ok(Verified::not_healed(format!(
                "the checksum log is still stalled: {}",
                s.reason
            )));
        }
        Ok(match t.flush() {
            Ok(()) => Verified::healed("the checksum log is not stalled and flushes"),
            Err(e) => Verified::not_healed(format!("the checksum log does not flush: {e}")),
        })
    }

    fn available(&self, ctx: &RemedyContext) -> bool {
        table(ctx).is_ok()
    }
}
