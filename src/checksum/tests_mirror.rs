//! Damage to the durable table's log (version 4: every frame and its
//! mirror): one copy of a frame damaged loses nothing, the newest frame's
//! included; both copies damaged are typed before a later frame and a torn
//! tail at the end; an append cut short by a crash is dropped quietly or,
//! when one copy is whole, kept; a version-3 log still opens.

use std::sync::Arc;

use super::durable::log_name;
use super::log::{LogHeader, FRAME_OVERHEAD, LOG_HEADER_LEN};
use super::tests::{accepts, config, open, write};
use crate::error::Error;
use crate::testing::CrashFiles;

#[test]
fn damage_to_one_copy_of_a_frame_loses_nothing_to_both_is_typed_before_the_end() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    write(&t, 1, 1, true);
    write(&t, 2, 1, true);
    let name = log_name("t", t.stats().generation);
    drop(t);
    let good = files.file(&name).unwrap();
    // Frames, each followed by its mirror: the log's creation (no record) |
    // intent 0 | intent 1 | intent 2 (each intent: kind, page delta, CRC).
    let frame = |i: usize| LOG_HEADER_LEN + 2 * FRAME_OVERHEAD + (i - 1) * 2 * (FRAME_OVERHEAD + 6);
    let mirror = |i: usize| frame(i) + FRAME_OVERHEAD + 6;
    assert_eq!(good.len(), frame(4));
    let reopen = |bytes: Vec<u8>| {
        let copy = Arc::new(CrashFiles::new());
        for n in files.names() {
            copy.set_file(&n, files.file(&n).unwrap());
        }
        copy.set_file(&name, bytes);
        config().open_on(copy, "t")
    };
    assert_eq!(
        reopen(good.clone()).unwrap().stats().compactions,
        0,
        "an undamaged log is appended to"
    );
    for (what, at) in [
        ("a durable frame", vec![frame(1) + 30]),
        ("a durable frame's mirror", vec![mirror(1) + 30]),
        (
            "the newest frame (no later frame vouches for it)",
            vec![frame(3) + 30],
        ),
        ("the newest frame's header", vec![frame(3) + 3]),
        ("the newest frame's mirror", vec![mirror(3) + 30]),
    ] {
        let mut bad = good.clone();
        for i in at {
            bad[i] ^= 0x10;
        }
        let t = reopen(bad).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(t.stats().torn_bytes_at_open, 0, "{what}");
        for p in 0..3 {
            assert!(accepts(&t, p, 1), "{what}: page {p} keeps its checksum");
        }
        assert!(
            t.stats().compactions >= 1,
            "{what}: both copies written again"
        );
    }
    // Both copies of a frame damaged before a later frame: typed, with the offset.
    let mut bad = good.clone();
    bad[frame(1) + 30] ^= 0x10;
    bad[mirror(1) + 30] ^= 0x10;
    match reopen(bad) {
        Err(Error::CorruptFile { offset, .. }) => assert_eq!(offset, frame(1) as u64),
        other => panic!("expected CorruptFile, got {other:?}"),
    }
    // Both copies of the newest frame damaged: read as a torn tail (two
    // independent faults in one frame: the limit of this format).
    let mut bad = good.clone();
    bad[frame(3) + 30] ^= 0x10;
    bad[mirror(3) + 30] ^= 0x10;
    let t = reopen(bad).unwrap();
    assert_eq!(
        t.stats().torn_bytes_at_open,
        2 * (FRAME_OVERHEAD + 6) as u64
    );
    assert!(accepts(&t, 0, 1) && accepts(&t, 1, 1));
    assert!(
        !accepts(&t, 2, 1),
        "its intent was lost: the page fails, never passes"
    );
}

#[test]
fn a_torn_append_is_dropped_quietly_or_kept_whole() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    write(&t, 1, 1, true);
    let name = log_name("t", t.stats().generation);
    drop(t);
    let good = files.file(&name).unwrap();
    let last = LOG_HEADER_LEN + 2 * FRAME_OVERHEAD + 2 * (FRAME_OVERHEAD + 6);
    let len = FRAME_OVERHEAD + 6;
    assert_eq!(good.len(), last + 2 * len);
    let reopen = |bytes: Vec<u8>| {
        let copy = Arc::new(CrashFiles::new());
        for n in files.names() {
            copy.set_file(&n, files.file(&n).unwrap());
        }
        copy.set_file(&name, bytes);
        config().open_on(copy, "t").unwrap()
    };
    // Cut inside the frame, or with its sectors zero: dropped as torn.
    for cut in [last + 1, last + len - 1] {
        let t = reopen(good[..cut].to_vec());
        assert_eq!(
            t.stats().torn_bytes_at_open,
            (cut - last) as u64,
            "cut at {cut}"
        );
        assert!(accepts(&t, 0, 1) && !accepts(&t, 1, 1), "cut at {cut}");
    }
    let mut zeroed = good.clone();
    zeroed[last..].fill(0);
    let t = reopen(zeroed);
    assert_eq!(t.stats().torn_bytes_at_open, 2 * len as u64);
    assert!(accepts(&t, 0, 1) && !accepts(&t, 1, 1));
    drop(t);
    // The frame whole, its mirror cut short or zeroed: the frame is used
    // (the append wrote all of it, only its fsync may be missing).
    let t = reopen(good[..last + len + 3].to_vec());
    assert_eq!(t.stats().torn_bytes_at_open, 3);
    assert!(accepts(&t, 1, 1));
    drop(t);
    let mut zeroed = good.clone();
    zeroed[last + len..].fill(0);
    let t = reopen(zeroed);
    assert!(accepts(&t, 1, 1));
    drop(t);
    // The frame's sectors zero, its mirror whole: the mirror is used.
    let mut zeroed = good.clone();
    zeroed[last..last + len].fill(0);
    let t = reopen(zeroed);
    assert_eq!(t.stats().torn_bytes_at_open, 0);
    assert!(accepts(&t, 1, 1));
}

#[test]
fn a_version_3_log_still_opens_and_is_compacted_into_version_4() {
    let files = Arc::new(CrashFiles::new());
    let t = open(&files);
    write(&t, 0, 1, true);
    write(&t, 1, 1, true);
    write(&t, 1, 2, true);
    let name = log_name("t", t.stats().generation);
    drop(t);
    // The same log as version 3 wrote it: each frame once.
    let v4 = files.file(&name).unwrap();
    let mut v3 = LogHeader {
        version: 3,
        page_size: u32::from_le_bytes(v4[8..12].try_into().unwrap()),
        generation: u64::from_le_bytes(v4[16..24].try_into().unwrap()),
        first_seq: u64::from_le_bytes(v4[24..32].try_into().unwrap()),
    }
    .encode()
    .to_vec();
    let mut pos = LOG_HEADER_LEN;
    while pos < v4.len() {
        let len = u64::from_le_bytes(v4[pos..pos + 8].try_into().unwrap()) as usize;
        assert_eq!(v4[pos..pos + len], v4[pos + len..pos + 2 * len], "a mirror");
        v3.extend_from_slice(&v4[pos..pos + len]);
        pos += 2 * len;
    }
    assert_eq!(pos, v4.len());
    files.set_file(&name, v3);
    let t = open(&files);
    assert!(t.stats().compactions >= 1, "an older log is compacted away");
    assert!(accepts(&t, 0, 1) && accepts(&t, 1, 1) && accepts(&t, 1, 2));
    let name = log_name("t", t.stats().generation);
    let log = files.file(&name).unwrap();
    assert_eq!(u32::from_le_bytes(log[4..8].try_into().unwrap()), 4);
}
