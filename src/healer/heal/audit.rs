//! The audit records of an incident: what the healer saw, decided and did,
//! appended to the [`AuditLog`](crate::audit::AuditLog) when one is
//! configured. A record that cannot be written is logged and healing goes
//! on. Records are held back while this thread heals (an incident or a
//! batch) and appended in few appends: always before a remedy acts
//! (write-ahead), and when the incident or batch closes (see
//! `heal/batch.rs`).

use crate::audit::{AuditEntry, EntryKind};
use crate::healer::incident::Incident;

use super::{batch, SelfHealer};

/// Longest audit text written (the log's own limit is 64 KiB).
const AUDIT_TEXT_MAX: usize = 16 * 1_024;

impl SelfHealer {
    /// Appends one audit record of `inc` (its text cut to
    /// [`AUDIT_TEXT_MAX`] bytes at a character boundary), or holds it back
    /// while this thread heals a batch; an append that fails is logged.
    pub(super) fn audit(&self, inc: &Incident, kind: EntryKind, mut text: String) {
        let Some(log) = &self.audit else {
            return;
        };
        if text.len() > AUDIT_TEXT_MAX {
            let mut cut = AUDIT_TEXT_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        // An incident's records share its target: rendered once, at its
        // first record.
        let target = batch::held_target(inc.id).unwrap_or_else(|| inc.target.to_string());
        let entry = AuditEntry {
            incident: Some(inc.id),
            target,
            kind,
            text,
        };
        let Some(entry) = batch::hold(entry) else {
            return;
        };
        if let Err(e) = log.append(&[entry]) {
            tracing::warn!(error = %e, "audit record not written; healing goes on");
        }
    }
}
