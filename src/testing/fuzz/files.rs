//! Targets for the crate's framed small files: one decoder each, fed raw or
//! fixed-up bytes, and every accepted input re-encoded.

use std::path::Path;

use super::assert_typed;
use crate::healer::{Learner, MAX_NAME_LEN, MAX_RECORDS};
use crate::rollback::journal::{JournalState, MAX_HEADER_COUNTER, STATE_MAGIC, STATE_VERSION};
use crate::testing::decoders::{self, RunMarkerRecord};
use crate::testing::fixup;

/// The input of a framed-file target: raw, or framed with `magic` and a
/// version up to `max_version` (the payload being the fuzzer's bytes).
fn framed_input(data: &[u8], magic: [u8; 4], max_version: u32) -> Option<Vec<u8>> {
    let (fix, rest) = fixup::split_mode(data)?;
    Some(if fix {
        fixup::framed(rest, magic, max_version)
    } else {
        rest.to_vec()
    })
}

/// The shared framed-file decoder: an accepted file is exactly the frame of
/// its payload (the decoder accepts one encoding of each), and the version
/// is in range.
///
/// # Panics
/// When the decoder breaks that property or gives an untyped error.
pub fn framed_file(data: &[u8]) {
    const MAGIC: [u8; 4] = *b"SHFZ";
    let Some((&max, data)) = data.split_first() else {
        return;
    };
    let max = u32::from(max % 4) + 1;
    let Some(bytes) = framed_input(data, MAGIC, max) else {
        return;
    };
    match decoders::decode_framed(&bytes, MAGIC, max) {
        Ok((v, payload)) => {
            assert!((1..=max).contains(&v));
            assert_eq!(decoders::encode_framed(MAGIC, v, payload), bytes);
        }
        Err(e) => assert_typed(&e),
    }
}

/// The crash detector's run marker: an accepted marker re-encodes to its
/// bytes, and its state is running or clean.
///
/// # Panics
/// When the decoder breaks that property or gives an untyped error.
pub fn run_marker(data: &[u8]) {
    let Some(bytes) = framed_input(data, *b"SHRM", 1) else {
        return;
    };
    match decoders::decode_run_marker(&bytes) {
        Ok(r) => {
            assert!(r.state == 1 || r.state == 2, "{r:?}");
            assert_eq!(RunMarkerRecord::encode(&r), bytes);
        }
        Err(e) => assert_typed(&e),
    }
}

/// The scrubber's cursor: an accepted cursor is within its pass and
/// re-encodes to its bytes.
///
/// # Panics
/// When the decoder breaks that property or gives an untyped error.
pub fn scrub_cursor(data: &[u8]) {
    let Some(bytes) = framed_input(data, *b"SHSC", 1) else {
        return;
    };
    match decoders::decode_scrub_cursor(&bytes) {
        Ok(c) => {
            assert!(c.next <= c.total, "{c:?}");
            assert_eq!(decoders::encode_scrub_cursor(c), bytes);
        }
        Err(e) => assert_typed(&e),
    }
}

/// The undo journal's state file: a decoded state is in range and encodes
/// back to the same bytes.
///
/// # Panics
/// When the decoder breaks that property or gives an untyped error.
pub fn journal_state(data: &[u8]) {
    let Some(bytes) = framed_input(data, STATE_MAGIC, STATE_VERSION) else {
        return;
    };
    match JournalState::decode(Path::new("state"), &bytes) {
        Ok(s) => {
            assert!(s.oldest >= 1 && s.newest.saturating_add(1) >= s.oldest);
            assert!(s.txn_reserved_end <= MAX_HEADER_COUNTER);
            assert_eq!(s.encode(), bytes);
        }
        Err(e) => assert_typed(&e),
    }
}

/// The snapshot manifest: every entry of a decoded manifest names exactly
/// the snapshot file of its id (so never a file outside the directory or
/// another file), and ids ascend.
///
/// # Panics
/// When the decoder breaks that property or gives an untyped error.
pub fn manifest_reader(data: &[u8]) {
    let Some(bytes) = framed_input(data, *b"SHSM", 2) else {
        return;
    };
    match crate::testing::decode_manifest(&bytes) {
        Ok(list) => {
            let mut last = 0;
            for s in list {
                assert_eq!(s.file_name, crate::snapshot::snapshot_file_name(s.id));
                assert!(s.id > last, "ids ascend, so none repeats");
                last = s.id;
            }
        }
        Err(e) => assert_typed(&e),
    }
}

/// The healer's learned-remedy file: what is accepted is bounded (record
/// count, name lengths), and its re-encoding decodes to the same records.
///
/// # Panics
/// When the decoder breaks that property or gives an untyped error.
pub fn learned_remedy(data: &[u8]) {
    let Some(bytes) = framed_input(data, *b"SHLR", 1) else {
        return;
    };
    let mut l = Learner::new(1, 8);
    match l.decode_into(Path::new("learned"), &bytes) {
        Ok(()) => {
            let records = l.records();
            assert!(records.len() <= MAX_RECORDS);
            for (p, r, t) in &records {
                assert!(p.len() <= MAX_NAME_LEN && r.len() <= MAX_NAME_LEN);
                assert!(t.successes >= 0.0 && t.failures >= 0.0, "{t:?}");
            }
            let again = l.encode();
            let mut l2 = Learner::new(2, 8);
            l2.decode_into(Path::new("again"), &again)
                .expect("a re-encoded learner decodes");
            assert_eq!(l2.encode(), again);
            assert_eq!(l2.records().len(), records.len());
        }
        Err(e) => assert_typed(&e),
    }
}

/// The recovery manager's incidents file: an accepted file holds no more
/// incidents than its bytes can, and its re-encoding decodes and re-encodes
/// to the same bytes.
///
/// # Panics
/// When the decoder breaks that property or gives an untyped error.
pub fn incidents(data: &[u8]) {
    let Some(bytes) = framed_input(data, *b"SHRI", 1) else {
        return;
    };
    match decoders::decode_incidents(&bytes) {
        Ok(v) => {
            assert!(v.len() <= bytes.len());
            let again = decoders::encode_incidents(&v);
            let back = decoders::decode_incidents(&again).expect("a re-encoded file decodes");
            assert_eq!(back.len(), v.len());
            assert_eq!(decoders::encode_incidents(&back), again);
        }
        Err(e) => assert_typed(&e),
    }
}

/// The recovery manager's suspect registry: an accepted file re-encodes to
/// its bytes; and the salvage of any bytes names only pages in range,
/// sorted, each once.
///
/// # Panics
/// When the decoder breaks that property or gives an untyped error.
pub fn suspects(data: &[u8]) {
    let Some(bytes) = framed_input(data, *b"SHRS", 1) else {
        return;
    };
    match decoders::decode_suspects(&bytes) {
        Ok(v) => assert_eq!(decoders::encode_suspects(&v), bytes),
        Err(e) => assert_typed(&e),
    }
    let page_count = bytes.first().map_or(0, |&b| u64::from(b) << 4);
    let salvaged = decoders::salvage_suspects(&bytes, page_count);
    assert!(salvaged.windows(2).all(|w| w[0] < w[1]));
    assert!(salvaged.iter().all(|p| p.0 < page_count));
}
