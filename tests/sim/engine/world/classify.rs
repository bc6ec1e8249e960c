//! Naming what a component reported, for the trace and the coverage table:
//! an error's variant, the page it names, a repair's outcome, the
//! structure a message is about, and the component a failure came from.
//!
//! These read the library's messages and `Debug` output only; a message
//! that names no structure counts as about a page.

use selfheal::Source;

use super::super::plan::Structure;
use super::Component;

pub(super) fn err_name(e: &selfheal::Error) -> String {
    let s = format!("{e:?}");
    s.split([' ', '{', '(']).next().unwrap_or("").to_string()
}

/// The page an error names, from its `page: PageId(n)` field.
pub(super) fn page_of(debug: &str) -> Option<u64> {
    let i = debug.find("page: PageId(")? + "page: PageId(".len();
    debug[i..].split(')').next()?.parse().ok()
}

pub(super) fn outcome_name(o: &selfheal::repair::RepairOutcome) -> &'static str {
    use selfheal::repair::RepairOutcome as R;
    match o {
        R::Repaired { .. } => "repaired",
        R::Superseded => "superseded",
        R::Irreparable { .. } => "irreparable",
        R::NotNeeded => "not needed",
        R::InProgress => "in progress",
        _ => "other",
    }
}

pub(super) fn structure_of_message(msg: &str) -> Option<Structure> {
    let m = msg.to_ascii_lowercase();
    if m.contains("audit") {
        Some(Structure::AuditLog)
    } else if m.contains("cursor") {
        Some(Structure::ScrubCursor)
    } else if m.contains("manifest") {
        Some(Structure::Manifest)
    } else if m.contains("snapshot") || m.contains(".snap") {
        Some(Structure::SnapshotFile)
    } else if m.contains("journal") || m.contains("segment") || m.contains("undo") {
        Some(Structure::Journal)
    } else if m.contains("sums") || m.contains("checksum table") || m.contains("table") {
        Some(Structure::ChecksumTable)
    } else {
        None
    }
}

pub(super) fn component_of(source: Source) -> Component {
    match source {
        Source::CorruptionDetector => "detector",
        Source::Scrubber => "scrubber",
        Source::DataRepairer => "repairer",
        Source::TransactionRollbackManager => "rollback",
        Source::StateSnapshotManager => "snapshots",
        _ => "detector",
    }
}
