//! Goal: the journal reader survives every kind of damage with the documented
//! outcome and never panics — the stable-CI corpus run of the
//! `journal_reader` and `journal_state` fuzz targets.
//! Method: a real segment written by the manager (and closed, so that a
//! synced-through mark covers every record) is damaged in every way (every
//! truncation, a flip of every bit position class at every byte, zeroed and
//! junk ranges at every record) and decoded with `decode_segment`, whose
//! result is compared with what the module docs promise; the same images are
//! then opened in each recovery mode next to the journal's state file; the
//! state file itself is truncated and flipped at every byte.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use selfheal::rollback::RawPages;
use selfheal::rollback::{JournalDamage, RecoveryMode};
use selfheal::testing::journal::{
    decode_segment, HeaderDamage, JournalState, SegmentEnd, SegmentScan, SEGMENT_HEADER_LEN,
};
use selfheal::testing::CrashDir;
use selfheal::{Error, MemStore, PageId, RollbackConfig};

const PS: usize = 256;

/// One segment with begin, undo, commit, abort and mark records of several
/// sizes, and the journal's state file.
fn sample() -> (Vec<u8>, Vec<u8>) {
    let dir = Arc::new(CrashDir::new());
    let mgr = RollbackConfig::with_storage(dir.clone())
        .build(RawPages::shared(Arc::new(MemStore::new(PS, 4).unwrap())))
        .unwrap();
    for i in 0..4u8 {
        let t = mgr.begin().unwrap();
        mgr.write(
            t,
            PageId(u64::from(i)),
            usize::from(i) * 10,
            &vec![i + 1; 1 + usize::from(i) * 20],
        )
        .unwrap();
        if i == 2 {
            mgr.rollback(t).unwrap();
        } else {
            mgr.commit(t).unwrap();
        }
    }
    let t = mgr.begin().unwrap();
    mgr.write(t, PageId(3), 100, &[7u8; 64]).unwrap();
    mgr.stop().unwrap();
    assert_eq!(dir.segment_ids(), vec![1]);
    (dir.segment(1).unwrap(), dir.state_file().unwrap())
}

fn sample_segment() -> Vec<u8> {
    sample().0
}

/// Record start offsets, and the end of the last record.
fn boundaries(seg: &[u8]) -> Vec<u64> {
    let s = decode_segment(seg).unwrap();
    assert_eq!(s.end, SegmentEnd::Clean);
    let mut b: Vec<u64> = s.records.iter().map(|r| r.offset).collect();
    b.push(seg.len() as u64);
    b
}

/// The record that contains byte `i` (its start), or `None` in the header.
fn record_start(bounds: &[u64], i: usize) -> Option<u64> {
    bounds
        .windows(2)
        .find(|w| (w[0]..w[1]).contains(&(i as u64)))
        .map(|w| w[0])
}

fn assert_torn_at(s: &SegmentScan, at: u64, ctx: &str) {
    match &s.end {
        SegmentEnd::TornTail { offset, .. } => assert_eq!(*offset, at, "{ctx}"),
        other => panic!("{ctx}: expected a torn tail at {at}, got {other:?}"),
    }
    assert_eq!(s.valid_len, at, "{ctx}");
}

fn assert_corrupt_at(s: &SegmentScan, at: u64, ctx: &str) {
    match &s.end {
        SegmentEnd::Corrupt {
            offset, next_valid, ..
        } => {
            assert_eq!(*offset, at, "{ctx}");
            assert!(*next_valid >= at, "{ctx}");
        }
        other => panic!("{ctx}: expected damage in the middle at {at}, got {other:?}"),
    }
}

fn open(dir: CrashDir, mode: RecoveryMode) -> selfheal::Result<Option<JournalDamage>> {
    RollbackConfig::with_storage(Arc::new(dir))
        .recovery_mode(mode)
        .build(RawPages::shared(Arc::new(MemStore::new(PS, 4).unwrap())))
        .map(|m| {
            let d = &m.recovery_report().damage;
            assert!(d.len() <= 1, "{d:?}");
            d.first().cloned()
        })
}

/// The segment `bytes`, with the state file of the sample journal.
fn dir_with(bytes: &[u8]) -> CrashDir {
    let d = CrashDir::new();
    d.set_segment(1, bytes.to_vec());
    d.set_state_file(Some(sample().1));
    d
}

#[test]
fn every_truncation() {
    let seg = sample_segment();
    let bounds = boundaries(&seg);
    for len in 0..=seg.len() {
        let cut = &seg[..len];
        let ctx = format!("truncated to {len}");
        if len < SEGMENT_HEADER_LEN {
            assert_eq!(
                decode_segment(cut),
                Err(HeaderDamage::Short { len }),
                "{ctx}"
            );
            // The state file lists the segment, so its creation had
            // finished (durably): a short header is damage.
            assert!(
                matches!(
                    open(dir_with(cut), RecoveryMode::TolerateTornTail),
                    Err(Error::CorruptFile { offset: 0, .. })
                ),
                "{ctx}"
            );
            continue;
        }
        let s = decode_segment(cut).unwrap();
        if bounds.contains(&(len as u64)) || len == SEGMENT_HEADER_LEN {
            assert_eq!(s.end, SegmentEnd::Clean, "{ctx}");
            assert_eq!(
                open(dir_with(cut), RecoveryMode::AbsoluteConsistency).unwrap(),
                None
            );
        } else {
            let at = record_start(&bounds, len).unwrap();
            assert_torn_at(&s, at, &ctx);
            assert_eq!(
                s.records.len(),
                bounds.iter().position(|b| *b == at).unwrap()
            );
            assert!(matches!(
                open(dir_with(cut), RecoveryMode::AbsoluteConsistency),
                Err(Error::CorruptFile { .. })
            ));
            for mode in [
                RecoveryMode::TolerateTornTail,
                RecoveryMode::StopAtFirstBadRecord,
            ] {
                let d = open(dir_with(cut), mode).unwrap();
                assert!(
                    matches!(d, Some(JournalDamage::TornTail { offset, .. }) if offset == at),
                    "{ctx} {mode:?}: {d:?}"
                );
            }
        }
    }
}

#[test]
fn bit_flips_everywhere() {
    let seg = sample_segment();
    let bounds = boundaries(&seg);
    let last = bounds[bounds.len() - 2];
    for i in 0..seg.len() {
        for bit in [0u8, 3, 7] {
            let mut b = seg.clone();
            b[i] ^= 1 << bit;
            let ctx = format!("bit {bit} of byte {i} flipped");
            let Some(at) = record_start(&bounds, i) else {
                assert!(decode_segment(&b).is_err(), "{ctx}");
                assert!(
                    open(dir_with(&b), RecoveryMode::TolerateTornTail).is_err(),
                    "{ctx}"
                );
                continue;
            };
            let s = decode_segment(&b).unwrap();
            if at == last {
                // Indistinguishable from a torn write of the last record.
                assert_torn_at(&s, at, &ctx);
            } else {
                assert_corrupt_at(&s, at, &ctx);
                // The closing mark after it covers it: every mode refuses.
                for mode in [
                    RecoveryMode::TolerateTornTail,
                    RecoveryMode::StopAtFirstBadRecord,
                ] {
                    assert!(
                        matches!(
                            open(dir_with(&b), mode),
                            Err(Error::CorruptFile { offset, .. }) if offset == at
                        ),
                        "{ctx} {mode:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn zeros_and_junk_in_each_record_and_over_the_tail() {
    let seg = sample_segment();
    let bounds = boundaries(&seg);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for w in bounds.windows(2) {
        let (start, end) = (w[0] as usize, w[1] as usize);
        let is_last = end == seg.len();
        for junk in [false, true] {
            let mut b = seg.clone();
            if junk {
                rng.fill(&mut b[start..end]);
            } else {
                b[start..end].fill(0);
            }
            let ctx = format!("record at {start} {}", if junk { "junk" } else { "zeroed" });
            let s = decode_segment(&b).unwrap();
            if is_last {
                assert_torn_at(&s, start as u64, &ctx);
            } else {
                assert_corrupt_at(&s, start as u64, &ctx);
            }
            // Everything from here on gone the same way: always a torn tail.
            let mut t = seg[..start].to_vec();
            t.extend(std::iter::repeat_n(
                if junk { 0x5A } else { 0 },
                seg.len() - start,
            ));
            assert_torn_at(&decode_segment(&t).unwrap(), start as u64, &ctx);
        }
    }
}

#[test]
fn random_garbage_never_panics() {
    let seg = sample_segment();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..2000 {
        let mut b = if rng.random_bool(0.5) {
            seg.clone()
        } else {
            vec![0u8; rng.random_range(0..600)]
        };
        let n = rng.random_range(0..8);
        for _ in 0..n {
            if b.is_empty() {
                break;
            }
            let i = rng.random_range(0..b.len());
            b[i] = rng.random();
        }
        if rng.random_bool(0.3) && !b.is_empty() {
            let l = rng.random_range(0..b.len());
            b.truncate(l);
        }
        if let Ok(s) = decode_segment(&b) {
            assert!(s.valid_len as usize <= b.len());
        }
    }
}

#[test]
fn every_truncation_and_flip_of_the_state_file() {
    let (seg, state) = sample();
    let good = JournalState::decode(std::path::Path::new("s"), &state).unwrap();
    assert_eq!((good.oldest, good.newest), (1, 1));
    let with_state = |b: Vec<u8>| {
        let d = CrashDir::new();
        d.set_segment(1, seg.clone());
        d.set_state_file(Some(b));
        d
    };
    let mut images: Vec<(String, Vec<u8>)> = (0..state.len())
        .map(|n| (format!("truncated to {n}"), state[..n].to_vec()))
        .collect();
    for i in 0..state.len() {
        for bit in [0u8, 5] {
            let mut b = state.clone();
            b[i] ^= 1 << bit;
            images.push((format!("bit {bit} of byte {i} flipped"), b));
        }
    }
    for (ctx, b) in images {
        assert!(
            JournalState::decode(std::path::Path::new("s"), &b).is_err(),
            "{ctx}"
        );
        // A damaged state file is refused, except by StopAtFirstBadRecord,
        // which rebuilds it from the segments present.
        for mode in [
            RecoveryMode::TolerateTornTail,
            RecoveryMode::AbsoluteConsistency,
        ] {
            match open(with_state(b.clone()), mode) {
                Err(Error::CorruptFile { .. } | Error::UnsupportedVersion { .. }) => {}
                other => panic!("{ctx} {mode:?}: {other:?}"),
            }
        }
        match open(with_state(b.clone()), RecoveryMode::StopAtFirstBadRecord) {
            Ok(Some(JournalDamage::StateRebuilt { .. }))
            | Err(Error::UnsupportedVersion { .. }) => {}
            other => panic!("{ctx}: {other:?}"),
        }
    }
}

/// An in-flight transaction's undo record that verifies but covers bytes
/// past the store's pages (damage that kept its CRC, or the journal of a
/// store with larger pages) is refused in every recovery mode as damage
/// naming the segment and the record's offset, before any page is written;
/// opened with the store it was written for, the same journal recovers.
#[test]
fn in_flight_undo_past_the_page_is_refused_as_damage_in_every_mode() {
    use selfheal::rollback::JournalStorage;
    let dir = Arc::new(CrashDir::new());
    let mgr = RollbackConfig::with_storage(dir.clone())
        .build(RawPages::shared(Arc::new(MemStore::new(PS, 4).unwrap())))
        .unwrap();
    let t = mgr.begin().unwrap();
    let lsn = mgr.write(t, PageId(1), PS - 8, &[7u8; 8]).unwrap();
    mgr.ensure_durable(lsn).unwrap();
    drop(mgr);
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::StopAtFirstBadRecord,
    ] {
        let crashed = Arc::new(dir.crash(0));
        let small = Arc::new(MemStore::new(PS / 2, 4).unwrap());
        let e = RollbackConfig::with_storage(crashed.clone())
            .recovery_mode(mode)
            .build(RawPages::shared(small.clone()))
            .unwrap_err();
        match &e {
            Error::CorruptFile {
                path,
                offset,
                reason,
            } => {
                let segments = crashed.list().unwrap();
                assert!(
                    segments.iter().any(|&s| path == &crashed.segment_path(s)),
                    "{mode:?}: {e}"
                );
                assert!(*offset >= SEGMENT_HEADER_LEN as u64, "{mode:?}: {e}");
                assert!(reason.contains("in flight"), "{mode:?}: {e}");
                assert!(reason.contains("larger pages"), "{mode:?}: {e}");
            }
            other => panic!("{mode:?}: {other:?}"),
        }
        let mut page = vec![1u8; PS / 2];
        selfheal::PageStore::read_page(small.as_ref(), PageId(1), &mut page).unwrap();
        assert_eq!(page, vec![0u8; PS / 2], "{mode:?}: a page was written");
        // The journal itself was fine: the store it was written for
        // recovers from it.
        let right = RollbackConfig::with_storage(crashed)
            .recovery_mode(mode)
            .build(RawPages::shared(Arc::new(MemStore::new(PS, 4).unwrap())))
            .unwrap();
        assert_eq!(right.recovery_report().rolled_back.len(), 1, "{mode:?}");
        right.stop().unwrap();
    }
}
