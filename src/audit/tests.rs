//! Tests of the audit log: queries, rotation, crashes at every step, rot,
//! tampering and lost segments.

use std::sync::Arc;

use proptest::prelude::*;

use super::record::{decode_frame, encode_body, frame, parse_segment_name};
use super::*;
use crate::testing::{CrashFiles, CrashSwitch};

fn entry(i: u64) -> AuditEntry {
    AuditEntry {
        incident: Some(1 + i % 3),
        target: format!("page {}", i % 5),
        kind: EntryKind::Acted,
        text: format!("action {i}"),
    }
}

fn small() -> AuditConfig {
    AuditConfig::new().segment_bytes(4_096).max_bytes(16_384)
}

#[test]
fn queries_by_target_incident_and_last_n() {
    let files = Arc::new(CrashFiles::new());
    let log = small().open_on(files).unwrap();
    for i in 0..20 {
        log.append(&[entry(i)]).unwrap();
    }
    let by_target = log.query(&AuditQuery::all().target("page 2")).unwrap();
    assert_eq!(
        by_target
            .iter()
            .map(|r| r.entry.text.clone())
            .collect::<Vec<_>>(),
        ["action 2", "action 7", "action 12", "action 17"]
    );
    let by_incident = log.query(&AuditQuery::all().incident(1)).unwrap();
    assert!(by_incident.iter().all(|r| r.entry.incident == Some(1)));
    assert_eq!(by_incident.len(), 7);
    let last = log.query(&AuditQuery::all().last(3)).unwrap();
    assert_eq!(last.iter().map(|r| r.seq).collect::<Vec<_>>(), [18, 19, 20]);
    log.verify().unwrap();
    assert!(log.damage().is_empty());
}

#[test]
fn rotation_keeps_the_log_bounded_and_chained() {
    let files = Arc::new(CrashFiles::new());
    let log = small().open_on(files.clone()).unwrap();
    for i in 0..2_000 {
        log.append(&[entry(i)]).unwrap();
    }
    let total: usize = files
        .names()
        .iter()
        .filter_map(|n| files.file(n))
        .map(|b| b.len())
        .sum();
    assert!(total <= 16_384 + 4_096 + 200, "{total} bytes kept");
    let all = log.query(&AuditQuery::all()).unwrap();
    assert_eq!(all.last().unwrap().seq, 2_000);
    assert!(
        all.first().unwrap().seq > 1,
        "the oldest records were rotated away"
    );
    for w in all.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    log.verify().unwrap();
    drop(log);
    let again = small().open_on(files).unwrap();
    assert!(again.damage().is_empty(), "{:?}", again.damage());
    assert_eq!(again.next_seq(), 2_001);
}

/// With a sync on every append: a workload of appends (single and batched,
/// across rotations) crashed at every step: what a returned append wrote is there, in order and
/// chained, nothing is reported as damage, and the log appends on.
#[test]
fn a_crash_at_every_step_loses_only_what_was_not_appended() {
    let plan: Vec<usize> = vec![1, 3, 1, 2, 5, 1, 1, 4, 2, 1, 3, 1, 1, 2, 6, 1];
    let steps = {
        let switch = CrashSwitch::new();
        let files = Arc::new(CrashFiles::new().with_switch(switch.clone()));
        let log = AuditConfig::new()
            .segment_bytes(4_096)
            .max_bytes(8_192)
            .sync_every_append(true)
            .open_on(files)
            .unwrap();
        let mut i = 0;
        for n in &plan {
            let batch: Vec<_> = (0..*n as u64).map(|k| entry(i + k)).collect();
            log.append(&batch).unwrap();
            i += *n as u64;
        }
        switch.ops()
    };
    for crash_at in 0..steps {
        for seed in 0..3 {
            let switch = CrashSwitch::new();
            let files = Arc::new(CrashFiles::new().with_switch(switch.clone()));
            let log = AuditConfig::new()
                .segment_bytes(4_096)
                .max_bytes(8_192)
                .sync_every_append(true)
                .open_on(files.clone())
                .unwrap();
            switch.arm_at(crash_at);
            let mut acknowledged = 0u64;
            let mut i = 0;
            for n in &plan {
                let batch: Vec<_> = (0..*n as u64).map(|k| entry(i + k)).collect();
                if log.append(&batch).is_err() {
                    break;
                }
                i += *n as u64;
                acknowledged = i;
            }
            drop(log);
            let after = Arc::new(files.crash(Some(seed)));
            let log = AuditConfig::new()
                .segment_bytes(4_096)
                .max_bytes(8_192)
                .open_on(after)
                .unwrap();
            assert!(
                log.damage().is_empty(),
                "crash at {crash_at}, seed {seed}: {:?}",
                log.damage()
            );
            log.verify().unwrap();
            let seen = log.query(&AuditQuery::all()).unwrap();
            let newest = seen.last().map_or(0, |r| r.seq);
            assert!(
                newest >= acknowledged,
                "crash at {crash_at}, seed {seed}: record {acknowledged} was acknowledged, newest is {newest}"
            );
            for r in &seen {
                assert_eq!(r.entry, entry(r.seq - 1), "crash at {crash_at}");
            }
            let next = log.append(&[entry(9_999)]).unwrap();
            assert_eq!(next, newest + 1);
            log.verify().unwrap();
        }
    }
}

/// Group commit: appends are written without an fsync, so a crash before
/// the next `sync` loses them — and only them: what `sync` covered is kept,
/// in order and chained, and the log appends on after the crash.
#[test]
fn group_commit_a_crash_loses_only_what_was_not_synced() {
    let files = Arc::new(CrashFiles::new());
    let log = small().open_on(files.clone()).unwrap();
    for i in 0..5 {
        log.append(&[entry(i)]).unwrap();
    }
    let syncs_before = files.syncs();
    log.sync().unwrap();
    // One fsync for the group, and one for the durable head's new file.
    assert_eq!(files.syncs(), syncs_before + 2, "one fsync for the group");
    assert_eq!(log.synced_through(), 5);
    assert!(!log.has_unsynced());
    for i in 5..12 {
        log.append(&[entry(i)]).unwrap();
    }
    assert!(log.has_unsynced());
    assert_eq!(
        files.syncs(),
        syncs_before + 2,
        "appends do not fsync by default"
    );
    // Only what is durable: records 1..=5.
    let after = small().open_on(Arc::new(files.crash(None))).unwrap();
    assert!(after.damage().is_empty(), "{:?}", after.damage());
    let seen = after.query(&AuditQuery::all()).unwrap();
    assert_eq!(
        seen.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    after.verify().unwrap();
    assert_eq!(after.append(&[entry(99)]).unwrap(), 6);
    after.verify().unwrap();
    // Some of the unsynced records too, torn or with holes: a prefix is kept.
    for seed in 0..20 {
        let after = small().open_on(Arc::new(files.crash(Some(seed)))).unwrap();
        assert!(
            after.damage().is_empty(),
            "seed {seed}: {:?}",
            after.damage()
        );
        after.verify().unwrap();
        let seen = after.query(&AuditQuery::all()).unwrap();
        assert!(seen.len() >= 5, "seed {seed}: synced records lost");
        for (k, r) in seen.iter().enumerate() {
            assert_eq!(r.seq, k as u64 + 1, "seed {seed}: a hole");
            assert_eq!(r.entry, entry(r.seq - 1));
        }
    }
}

/// Group commit crashed at every step of a workload that syncs now and
/// then, across rotations: every record a returned `sync` covered is there,
/// nothing is reported as damage, and the log appends on.
#[test]
fn group_commit_a_crash_at_every_step_keeps_what_was_synced() {
    let plan: Vec<usize> = vec![1, 3, 1, 2, 5, 1, 1, 4, 2, 1, 3, 1, 1, 2, 6, 1, 9, 9, 9];
    let open = |files: Arc<CrashFiles>| {
        AuditConfig::new()
            .segment_bytes(4_096)
            .max_bytes(8_192)
            .open_on(files)
            .unwrap()
    };
    let run = |log: &AuditLog| -> u64 {
        let mut synced = 0u64;
        let mut i = 0u64;
        for (k, n) in plan.iter().enumerate() {
            let batch: Vec<_> = (0..*n as u64).map(|j| entry(i + j)).collect();
            if log.append(&batch).is_err() {
                break;
            }
            i += *n as u64;
            if k % 3 == 2 {
                if log.sync().is_err() {
                    break;
                }
                synced = i;
            }
        }
        synced
    };
    let steps = {
        let switch = CrashSwitch::new();
        let files = Arc::new(CrashFiles::new().with_switch(switch.clone()));
        let log = open(files);
        run(&log);
        switch.ops()
    };
    for crash_at in 0..steps {
        for seed in 0..3 {
            let switch = CrashSwitch::new();
            let files = Arc::new(CrashFiles::new().with_switch(switch.clone()));
            let log = open(files.clone());
            switch.arm_at(crash_at);
            let synced = run(&log);
            let after = open(Arc::new(files.crash(Some(seed))));
            drop(log);
            assert!(
                after.damage().is_empty(),
                "crash at {crash_at}, seed {seed}: {:?}",
                after.damage()
            );
            after.verify().unwrap();
            let seen = after.query(&AuditQuery::all()).unwrap();
            let newest = seen.last().map_or(0, |r| r.seq);
            assert!(
                newest >= synced,
                "crash at {crash_at}, seed {seed}: record {synced} was synced, newest is {newest}"
            );
            for r in &seen {
                assert_eq!(r.entry, entry(r.seq - 1), "crash at {crash_at}");
            }
            assert_eq!(after.append(&[entry(9_999)]).unwrap(), newest + 1);
            after.verify().unwrap();
        }
    }
}

#[test]
fn a_flipped_bit_is_damage_and_older_records_stay_readable() {
    let files = Arc::new(CrashFiles::new());
    let log = small().open_on(files.clone()).unwrap();
    for i in 0..30 {
        log.append(&[entry(i)]).unwrap();
        // Each record synced: the ones after the damage say so.
        log.sync().unwrap();
    }
    drop(log);
    let name = segment_name(1);
    let mut bytes = files.file(&name).unwrap();
    // Record 5's text: well inside the segment, with synced records after it.
    let at = find(&bytes, b"action 4").unwrap();
    bytes[at + 3] ^= 0x10;
    files.set_file(&name, bytes);
    let log = small().open_on(files.clone()).unwrap();
    let damage = log.damage();
    assert_eq!(damage.len(), 1, "{damage:?}");
    match &damage[0] {
        Error::CorruptFile { path, offset, .. } => {
            assert!(path.to_string_lossy().contains(&name));
            assert!(*offset > 0 && (*offset as usize) < at);
        }
        other => panic!("{other:?}"),
    }
    assert!(log.verify().is_err());
    let early = log.query(&AuditQuery::all().last(100)).unwrap();
    assert!(
        early.iter().any(|r| r.seq == 4),
        "records before the damage stay readable"
    );
    assert!(early.iter().all(|r| r.seq != 5));
    // The log goes on, in a fresh segment.
    let seq = log.append(&[entry(100)]).unwrap();
    assert!(seq > 30);
    assert!(files.names().len() >= 2);
}

#[test]
fn an_edit_with_a_recomputed_crc_breaks_the_hash_chain() {
    let files = Arc::new(CrashFiles::new());
    let log = small().open_on(files.clone()).unwrap();
    for i in 0..10 {
        log.append(&[entry(i)]).unwrap();
    }
    drop(log);
    let name = segment_name(1);
    let bytes = files.file(&name).unwrap();
    // Re-encode record 3 with another text, and a valid frame.
    let mut out = bytes[..SEGMENT_HEADER_LEN].to_vec();
    let mut off = SEGMENT_HEADER_LEN;
    while off < bytes.len() {
        let (mut r, n) = decode_frame(&bytes[off..]).unwrap();
        if r.seq == 3 {
            r.entry.text = "nothing happened".into();
            let body = encode_body(
                r.seq,
                r.synced_through,
                r.at_ns,
                r.unix_ms,
                &r.prev_hash,
                &r.entry,
            );
            out.extend_from_slice(&frame(&body));
        } else {
            out.extend_from_slice(&bytes[off..off + n]);
        }
        off += n;
    }
    files.set_file(&name, out);
    let log = small().open_on(files).unwrap();
    let damage = log.damage();
    assert!(
        damage
            .iter()
            .any(|e| e.to_string().contains("hash chain breaks at record 4")),
        "{damage:?}"
    );
    assert!(log.verify().is_err());
}

#[test]
fn a_lost_segment_is_reported() {
    let files = Arc::new(CrashFiles::new());
    let log = AuditConfig::new()
        .segment_bytes(4_096)
        .max_bytes(1 << 20)
        .open_on(files.clone())
        .unwrap();
    for i in 0..300 {
        log.append(&[entry(i)]).unwrap();
    }
    drop(log);
    let mut segs: Vec<String> = files
        .names()
        .into_iter()
        .filter(|n| parse_segment_name(n).is_some())
        .collect();
    segs.sort();
    assert!(segs.len() >= 3);
    files.delete_file(&segs[1]);
    let log = AuditConfig::new()
        .segment_bytes(4_096)
        .max_bytes(1 << 20)
        .open_on(files)
        .unwrap();
    assert!(
        log.damage()
            .iter()
            .any(|e| e.to_string().contains("missing")),
        "{:?}",
        log.damage()
    );
}

#[test]
fn bad_config_is_typed() {
    for (cfg, field) in [
        (AuditConfig::new().segment_bytes(100), "segment_bytes"),
        (
            AuditConfig::new().segment_bytes(8_192).max_bytes(8_192),
            "max_bytes",
        ),
    ] {
        match cfg.open_on(Arc::new(CrashFiles::new())) {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

proptest! {
    /// Any single byte of damage anywhere in a log is either reported or
    /// harmless: never a panic, and a record that reads back is one that was
    /// written.
    #[test]
    fn damage_anywhere_never_panics_or_invents_records(n in 1usize..40, flip in any::<usize>()) {
        let files = Arc::new(CrashFiles::new());
        let log = small().open_on(files.clone()).unwrap();
        for i in 0..n as u64 {
            log.append(&[entry(i)]).unwrap();
        }
        drop(log);
        let mut names = files.names();
        names.sort();
        let name = &names[flip % names.len()];
        let mut bytes = files.file(name).unwrap();
        let i = (flip / 7) % bytes.len();
        bytes[i] ^= 1 << (flip % 8);
        files.set_file(name, bytes);
        let log = small().open_on(files).unwrap();
        for r in log.query(&AuditQuery::all()).unwrap() {
            prop_assert_eq!(&r.entry, &entry(r.seq - 1));
        }
    }
}

/// A newest segment that holds no record but whose first sequence number is
/// not the one the log appends next (a segment named for record 0, or one
/// below the numbers a damaged older segment may hold) must not take the
/// append: the next open would read its first frame as out of sequence and
/// cut it as a torn tail, losing a synced record.
#[test]
fn a_synced_append_survives_a_reopen_when_the_empty_newest_segment_starts_elsewhere() {
    for first in [0u64, 5] {
        let files = Arc::new(CrashFiles::new());
        files.set_file(&segment_name(first), segment_header(first).to_vec());
        if first == 5 {
            // A damaged older segment: records up to its length's bound may
            // be in it, so the next number is above 5.
            let mut old = segment_header(1).to_vec();
            old.extend_from_slice(&[0xA5; 400]);
            files.set_file(&segment_name(1), old);
        }
        let log = small().open_on(files.clone()).unwrap();
        let seq = log.append(&[entry(1)]).unwrap();
        log.sync().unwrap();
        drop(log);
        let again = small().open_on(files.clone()).unwrap();
        let found = again.query(&AuditQuery::all()).unwrap();
        assert!(
            found.iter().any(|r| r.seq == seq),
            "first {first}: record {seq} was synced and is gone: {found:?}"
        );
    }
}

/// A damaged segment named for a sequence number near the top of the range
/// bounds the next number without overflowing (an open never panics).
#[test]
fn a_damaged_segment_at_the_top_of_the_sequence_range_opens() {
    let files = Arc::new(CrashFiles::new());
    let first = u64::MAX - 1;
    let mut seg = segment_header(first).to_vec();
    seg.extend_from_slice(&[0xA5; 400]);
    files.set_file(&segment_name(first), seg);
    // A newer segment, so the damaged one is not a torn tail.
    let mut newer = segment_header(u64::MAX).to_vec();
    newer.extend_from_slice(&[0x5A; 40]);
    files.set_file(&segment_name(u64::MAX), newer);
    let log = small().open_on(files).unwrap();
    assert!(!log.damage().is_empty());
}

/// A log of `n` records in 4 KiB segments, every record synced.
fn synced_log(files: &Arc<CrashFiles>, n: u64) {
    let log = AuditConfig::new()
        .segment_bytes(4_096)
        .max_bytes(1 << 20)
        .open_on(files.clone())
        .unwrap();
    for i in 0..n {
        log.append(&[entry(i)]).unwrap();
        log.sync().unwrap();
    }
}

fn segments(files: &CrashFiles) -> Vec<String> {
    let mut segs: Vec<String> = files
        .names()
        .into_iter()
        .filter(|n| parse_segment_name(n).is_some())
        .collect();
    segs.sort();
    segs
}

fn reopen(files: &Arc<CrashFiles>) -> AuditLog {
    AuditConfig::new()
        .segment_bytes(4_096)
        .max_bytes(1 << 20)
        .open_on(files.clone())
        .unwrap()
}

/// Deleting the newest segment leaves a log that reads as whole; the durable
/// head says records are missing, as typed damage naming the range, and the
/// next record is numbered past the head (the gap stays visible).
#[test]
fn the_newest_segment_deleted_is_damage() {
    let files = Arc::new(CrashFiles::new());
    synced_log(&files, 60);
    let segs = segments(&files);
    assert!(segs.len() >= 2, "{segs:?}");
    let newest = segs.last().unwrap().clone();
    let first_lost = parse_segment_name(&newest).unwrap();
    files.delete_file(&newest);
    let log = reopen(&files);
    let damage = log.damage();
    let want = format!("records {first_lost}..=60 were synced");
    assert!(
        damage
            .iter()
            .any(|e| matches!(e, Error::CorruptFile { .. }) && e.to_string().contains(&want)),
        "{damage:?}"
    );
    assert_eq!(log.append(&[entry(60)]).unwrap(), 61);
    log.sync().unwrap();
    drop(log);
    // Still reported at the next open: a segment is missing below 61.
    let again = reopen(&files);
    assert!(
        again
            .damage()
            .iter()
            .any(|e| e.to_string().contains("missing")),
        "{:?}",
        again.damage()
    );
}

/// The newest segment cut at each record boundary of its synced records
/// (every cut leaves frames that decode): damage, every time.
#[test]
fn the_newest_segment_cut_at_a_record_boundary_is_damage() {
    let files = Arc::new(CrashFiles::new());
    synced_log(&files, 12);
    let name = segments(&files).pop().unwrap();
    let whole = files.file(&name).unwrap();
    let mut boundaries = Vec::new();
    let mut off = SEGMENT_HEADER_LEN;
    while off < whole.len() {
        let (_, n) = decode_frame(&whole[off..]).unwrap();
        boundaries.push(off);
        off += n;
    }
    assert_eq!(boundaries.len(), 12);
    let head_bytes = files.file(head::HEAD_FILE).unwrap();
    for (k, &cut) in boundaries.iter().enumerate() {
        let cut_files = Arc::new(CrashFiles::new());
        cut_files.set_file(&name, whole[..cut].to_vec());
        cut_files.set_file(head::HEAD_FILE, head_bytes.clone());
        let log = reopen(&cut_files);
        let want = format!("records {}..=12 were synced", k + 1);
        assert!(
            log.damage().iter().any(|e| e.to_string().contains(&want)),
            "cut at record {}: {:?}",
            k + 1,
            log.damage()
        );
    }
    // Uncut, nothing is reported.
    assert!(reopen(&files).damage().is_empty());
}

/// A record at the head's number that is not the one synced (the log
/// rewritten from that record on, chain and CRCs recomputed) is damage.
#[test]
fn a_rewritten_newest_record_is_damage() {
    let a = Arc::new(CrashFiles::new());
    synced_log(&a, 5);
    let b = Arc::new(CrashFiles::new());
    let log = reopen(&b);
    for i in 0..5 {
        log.append(&[entry(i + 100)]).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    // b's segments under a's head.
    b.set_file(head::HEAD_FILE, a.file(head::HEAD_FILE).unwrap());
    let log = reopen(&b);
    assert!(
        log.damage()
            .iter()
            .any(|e| e.to_string().contains("record 5 differs")),
        "{:?}",
        log.damage()
    );
}

/// A head file that does not decode is typed damage, and the log opens.
#[test]
fn a_damaged_head_file_is_damage() {
    let files = Arc::new(CrashFiles::new());
    synced_log(&files, 3);
    let mut bytes = files.file(head::HEAD_FILE).unwrap();
    bytes[30] ^= 4;
    files.set_file(head::HEAD_FILE, bytes);
    let log = reopen(&files);
    assert!(
        log.damage()
            .iter()
            .any(|e| matches!(e, Error::CorruptFile { path, .. } if path.ends_with("audit.head"))),
        "{:?}",
        log.damage()
    );
    assert_eq!(log.query(&AuditQuery::all()).unwrap().len(), 3);
}

/// The fuzz input `fuzz/corpus/audit_log/regression-append-seq-overflow`: a
/// segment named for a number near 2^64. Its open reports damage and an
/// append is a typed error, never an overflow.
#[test]
fn an_append_near_the_top_of_the_sequence_range_is_typed() {
    let input = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/audit_log/regression-append-seq-overflow"
    ))
    .unwrap();
    crate::testing::fuzz::audit_log(&input);
    for first in [u64::MAX, u64::MAX - 1, MAX_SEQ + 1, MAX_SEQ] {
        let files = Arc::new(CrashFiles::new());
        let mut seg = segment_header(first).to_vec();
        seg.extend_from_slice(&[0xA5; 100]);
        files.set_file(&segment_name(first), seg);
        let log = small().open_on(files).unwrap();
        // Past the bound the header is damage; at it, the junk is a torn
        // tail (cut), and the number is still too high for two records.
        assert_eq!(!log.damage().is_empty(), first > MAX_SEQ, "first {first}");
        match log.append(&[entry(1), entry(2)]) {
            Err(Error::CorruptFile { reason, .. }) => {
                assert!(reason.contains("do not fit"), "{reason}");
            }
            other => panic!("first {first}: {other:?}"),
        }
    }
}
