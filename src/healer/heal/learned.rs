//! The healer's learned records on disk: marked changed after each
//! incident, written crash-safely (`fsutil::atomic_write`) at the
//! configured path at most every
//! [`learned_save_interval`](crate::healer::HealerConfig::learned_save_interval)
//! on the healer's clock, and by [`SelfHealer::flush_learned`] or on drop.
//!
//! A write that fails is logged and retried by the next save: the records
//! stay in memory, healing goes on.

#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
#[cfg(doc)]
use crate::healer::HealerConfig;

use super::SelfHealer;

/// Whether the learned records changed since the last write, and when
/// that write was (held while writing, so writes never overtake each other).
#[derive(Debug, Default)]
pub(super) struct Saved {
    dirty: bool,
    at_ns: Option<u64>,
}

impl SelfHealer {
    /// After an incident: the learned records changed; written now when
    /// the last write is older than the save interval.
    pub(super) fn save_learned(&self) {
        if self.learned_path.is_none() {
            return;
        }
        self.learned_saved.lock().dirty = true;
        if !self.learned_on_timer {
            self.save_learned_if_due();
        }
    }

    /// Writes the learned records when they changed since the last write
    /// and that write is at least the
    /// [save interval](HealerConfig::learned_save_interval) old (on the
    /// healer's clock). An error is logged; the next call retries.
    pub fn save_learned_if_due(&self) {
        let mut saved = self.learned_saved.lock();
        let now = self.ctx.clock_ref().now_ns();
        let due = saved
            .at_ns
            .is_none_or(|t| now.saturating_sub(t) >= self.learned_save_ns);
        if saved.dirty && due {
            if let Err(e) = self.write_learned(&mut saved, now) {
                tracing::warn!(error = %e, "learned remedy records not saved; they are kept in memory");
            }
        }
    }

    /// Writes the learned records now if they changed since the last write
    /// (crash-safely, at the [learned path](HealerConfig::learned_path)).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written (the records stay in
    /// memory and are written by the next save).
    pub fn flush_learned(&self) -> Result<()> {
        let mut saved = self.learned_saved.lock();
        if !saved.dirty {
            return Ok(());
        }
        let now = self.ctx.clock_ref().now_ns();
        self.write_learned(&mut saved, now)
    }

    fn write_learned(&self, saved: &mut Saved, now: u64) -> Result<()> {
        let Some(path) = &self.learned_path else {
            return Ok(());
        };
        let bytes = self.state.lock().learner.encode();
        saved.at_ns = Some(now);
        crate::fsutil::atomic_write(path, &bytes)?;
        saved.dirty = false;
        Ok(())
    }
}

impl Drop for SelfHealer {
    /// Writes the learned records that changed since the last write (an
    /// error is logged).
    fn drop(&mut self) {
        if let Err(e) = self.flush_learned() {
            tracing::warn!(error = %e, "learned remedy records not saved as the healer is dropped");
        }
    }
}
