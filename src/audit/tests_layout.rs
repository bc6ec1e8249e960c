//! Tests of how an open reads segments that disagree with each other: a
//! header naming another record than its file name, a segment whose records
//! run past the next segment's first, a segment named for record 0.
//! Method: segments cut from the frames of a real log and renamed, checked
//! against the open's contract (what is kept ascends, sits below the next
//! number, and an append after the open is found by the next open).

use std::sync::Arc;

use proptest::prelude::*;

use super::record::{decode_frame, segment_header, segment_name};
use super::*;
use crate::testing::CrashFiles;

/// The frames of a log of `n` records (records 1..=n), one per element.
fn frames(n: u64) -> Vec<Vec<u8>> {
    let files = Arc::new(CrashFiles::new());
    let log = AuditConfig::new().open_on(files.clone()).unwrap();
    for i in 0..n {
        log.append(&[AuditEntry {
            incident: Some(i),
            target: format!("page {i}"),
            kind: EntryKind::Acted,
            text: "layout".into(),
        }])
        .unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let bytes = files.file(&segment_name(1)).unwrap();
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    while at < bytes.len() {
        let (_, len) = decode_frame(&bytes[at..]).unwrap();
        out.push(bytes[at..at + len].to_vec());
        at += len;
    }
    assert_eq!(out.len() as u64, n);
    out
}

/// A segment file named for `name`, its header naming `header`, holding
/// records `from..to` of `frames`.
fn put(files: &CrashFiles, frames: &[Vec<u8>], name: u64, header: u64, from: u64, to: u64) {
    let mut bytes = segment_header(header).to_vec();
    for f in &frames[(from - 1) as usize..(to - 1) as usize] {
        bytes.extend_from_slice(f);
    }
    files.set_file(&segment_name(name), bytes);
}

/// The open's contract over whatever `files` holds: never a panic; the
/// records kept ascend and sit below the next number; what `verify` says is
/// typed; an append is found again by the next open. Returns the open's
/// damage.
fn check_open(files: &Arc<CrashFiles>) -> Vec<Error> {
    let log = AuditConfig::new().open_on(files.clone()).unwrap();
    let next = log.next_seq();
    let records = log.query(&AuditQuery::all()).unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(seqs.iter().all(|&s| s < next), "{seqs:?}, next {next}");
    if let Err(e) = log.verify() {
        assert!(matches!(e, Error::CorruptFile { .. }), "{e:?}");
    }
    let damage = log.damage();
    let seq = log
        .append(&[AuditEntry {
            incident: None,
            target: "page 9".into(),
            kind: EntryKind::Note,
            text: "after".into(),
        }])
        .unwrap();
    assert_eq!(seq, next);
    log.sync().unwrap();
    drop(log);
    let again = AuditConfig::new().open_on(files.clone()).unwrap();
    let found = again.query(&AuditQuery::all()).unwrap();
    assert!(found
        .iter()
        .any(|r| r.seq == seq && r.entry.text == "after"));
    assert!(found.windows(2).all(|w| w[0].seq < w[1].seq));
    damage
}

/// The fuzz input that found the bug: a segment named (and headed) for
/// record 0 — which no log gives — whose frames the recovery scan read as
/// record 3 while the next number given was 3.
#[test]
fn a_segment_named_for_record_0_is_kept_aside() {
    let input = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/audit_log/regression-segment-named-record-0"
    ))
    .unwrap();
    crate::testing::fuzz::audit_log(&input);
    let f = frames(3);
    let files = Arc::new(CrashFiles::new());
    put(&files, &f, 0, 0, 3, 4);
    let damage = check_open(&files);
    assert!(
        damage.iter().any(
            |e| matches!(e, Error::CorruptFile { path, offset: 0, reason }
            if path.ends_with(segment_name(0)) && reason.contains("names record 0"))
        ),
        "{damage:?}"
    );
}

/// Records 1..=5 in the first segment and a second one named for record 3:
/// the first is read up to record 2, and the damage names it and the offset
/// of record 3's frame; nothing is read twice, no number is given again.
#[test]
fn records_past_the_next_segments_name_are_damage_at_their_offset() {
    let f = frames(5);
    let files = Arc::new(CrashFiles::new());
    put(&files, &f, 1, 1, 1, 6);
    put(&files, &f, 3, 3, 3, 5);
    let offset = (SEGMENT_HEADER_LEN + f[0].len() + f[1].len()) as u64;
    let log = AuditConfig::new().open_on(files.clone()).unwrap();
    let seqs: Vec<u64> = log
        .query(&AuditQuery::all())
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert!(log.next_seq() > 5, "{}", log.next_seq());
    let damage = log.damage();
    assert!(
        matches!(&damage[..], [Error::CorruptFile { path, offset: o, reason }]
            if path.ends_with(segment_name(1)) && *o == offset && reason.contains("next segment starts at record 3")),
        "{damage:?}"
    );
    assert!(matches!(log.verify(), Err(Error::CorruptFile { offset: o, .. }) if o == offset));
    drop(log);
    check_open(&files);
}

proptest! {
    /// Up to four segments, each a run of a real log's records starting at
    /// the record its name says or a little past it, headed with that name
    /// or one off, overlapping or leaving gaps: the open keeps its contract
    /// (see `check_open`).
    #[test]
    fn any_layout_of_segments_keeps_the_open_contract(
        n in 1u64..12,
        segs in proptest::collection::vec((0u64..14, 0u8..3, 0u64..3, 0u64..8), 0..4),
    ) {
        let f = frames(n);
        let files = Arc::new(CrashFiles::new());
        for (name, skew, shift, count) in segs {
            // Mostly the records the name says, or a record or two on.
            let from = (name + shift).clamp(1, n);
            let to = (from + count).min(n + 1);
            let header = match skew {
                0 => name,
                1 => name + 1,
                _ => name.saturating_sub(1),
            };
            put(&files, &f, name, header, from, to);
        }
        check_open(&files);
    }
}
