//! The bodies of the fuzz targets in `fuzz/`, one function per target, so
//! that the same code runs under libFuzzer (nightly, `fuzz/run.sh`) and over
//! the committed corpus in the normal test suite (`tests/fuzz_corpus.rs`).
//!
//! # Contract
//! - Every function takes any bytes. The first byte chooses the mode
//!   ([`fixup::split_mode`](super::fixup::split_mode)): raw bytes exercise the
//!   frame checks; fixed-up bytes (every length, sequence number and CRC of
//!   the frame rewritten) reach the decoder behind them.
//! - A function panics only when the code under test breaks a property: a
//!   decoder that panics, an error that is not typed, or an accepted input
//!   that does not round-trip or breaks a bound the format states. So a
//!   fuzzer's crash is a bug, never noise.
//! - [`TARGETS`] lists every target by the name of its `fuzz/` binary and
//!   corpus directory.

mod files;
mod logs;
mod seeds;

pub use files::{
    framed_file, incidents, journal_state, learned_remedy, manifest_reader, run_marker,
    scrub_cursor, suspects,
};
pub use logs::{
    audit_log, checksum_table, journal_open, journal_reader, page_trailer, snapshot_dir,
    snapshot_reader,
};
pub use seeds::{seeds, Seeds};

use crate::error::Error;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target: the name of its `fuzz/` binary (and of its corpus
/// directory, `fuzz/corpus/<name>`) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("audit_log", audit_log),
    ("checksum_table", checksum_table),
    ("framed_file", framed_file),
    ("incidents", incidents),
    ("journal_open", journal_open),
    ("journal_reader", journal_reader),
    ("journal_state", journal_state),
    ("learned_remedy", learned_remedy),
    ("manifest_reader", manifest_reader),
    ("page_trailer", page_trailer),
    ("run_marker", run_marker),
    ("scrub_cursor", scrub_cursor),
    ("snapshot_dir", snapshot_dir),
    ("snapshot_reader", snapshot_reader),
    ("suspects", suspects),
];

/// Runs the target named `name` on `data`; `false` when there is none.
pub fn run(name: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|(n, _)| *n == name) {
        Some((_, t)) => {
            t(data);
            true
        }
        None => false,
    }
}

/// Asserts that a decoder's error is one a damaged file gives.
///
/// # Panics
/// When it is not [`Error::CorruptFile`] or [`Error::UnsupportedVersion`].
fn assert_typed(e: &Error) {
    assert!(
        matches!(
            e,
            Error::CorruptFile { .. } | Error::UnsupportedVersion { .. }
        ),
        "untyped error for damaged bytes: {e:?}"
    );
}

/// Splits off chunks of the input, each preceded by a 2-byte length (cut to
/// what is left), at most `max` of them.
fn chunks(mut data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while out.len() < max && data.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
        out.push(&data[2..2 + n]);
        data = &data[2 + n..];
    }
    out
}
