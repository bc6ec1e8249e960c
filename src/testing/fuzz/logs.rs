//! Targets for the crate's logs and multi-file stores: the checksum table
//! (base and log), the undo journal (one segment, and a whole journal
//! opened in each recovery mode), page trailers, snapshot files and a whole
//! snapshot directory, and the audit log.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{assert_typed, chunks};
use crate::audit::{AuditConfig, AuditEntry, AuditQuery, EntryKind};
use crate::checksum::{trailer, TableConfig};
use crate::rollback::journal::{
    decode_segment, JournalState, Record, SegmentEnd, SEGMENT_HEADER_LEN, STATE_MAGIC,
    STATE_VERSION,
};
use crate::rollback::{RawPages, RecoveryMode};
use crate::snapshot::{snapshot_file_name, SnapshotConfig};
use crate::testing::checksum_log::{decode_log, encode_record, Frame};
use crate::testing::{fixup, CrashDir, CrashFiles};
use crate::types::PageId;
use crate::{ChecksumTable, MemStore, RollbackConfig};

const TABLE_PAGE_SIZE: usize = 4096;

/// The sidecar checksum table's decoders — the base file, the log, and
/// opening a durable table from both (the SQLite sidecar is such a table) —
/// never panic, and what they accept is self-consistent: a decoded base
/// re-encodes to a file that decodes to the same table, a decoded log's
/// records re-encode to the bytes they came from, and an opened table can be
/// compacted and reopened with the same checksums and unallocated marks.
///
/// # Panics
/// When a decoder breaks one of those properties.
pub fn checksum_table(data: &[u8]) {
    let Some((fix, data)) = fixup::split_mode(data) else {
        return;
    };
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let base_of = |b: &[u8]| {
        if fix {
            fixup::framed(b, *b"SHCT", 2)
        } else {
            b.to_vec()
        }
    };
    let log_of = |b: &[u8]| {
        if fix {
            let mut b = b.to_vec();
            if b.len() >= 12 {
                b[8..12].copy_from_slice(&(TABLE_PAGE_SIZE as u32).to_le_bytes());
            }
            fixup::checksum_log(&b)
        } else {
            b.to_vec()
        }
    };
    match selector % 3 {
        0 => {
            let data = base_of(data);
            if let Ok(t) = ChecksumTable::decode(Path::new("fuzz"), &data, TABLE_PAGE_SIZE) {
                let again = ChecksumTable::decode(Path::new("fuzz"), &t.encode(), TABLE_PAGE_SIZE)
                    .expect("a re-encoded table decodes");
                assert_eq!(again.encode(), t.encode());
            }
        }
        1 => {
            let data = log_of(data);
            if let Ok(log) = decode_log(Path::new("fuzz"), &data, TABLE_PAGE_SIZE) {
                let mut out = log.header.encode().to_vec();
                for (i, (seq, _)) in log.records.iter().enumerate() {
                    assert_eq!(*seq, log.header.first_seq + i as u64);
                }
                if log.header.version <= 2 {
                    for (seq, record) in &log.records {
                        encode_record(&mut out, *seq, *record);
                    }
                } else {
                    // Re-encode each frame (the records sharing an offset);
                    // a frame with no record is skipped over in the input.
                    let mut i = 0;
                    while i < log.records.len() {
                        let at = log.offsets[i] as usize;
                        let mut f = Frame::new(log.records[i].0);
                        while i < log.records.len() && log.offsets[i] as usize == at {
                            f.push(log.records[i].1);
                            i += 1;
                        }
                        let bytes = f.finish();
                        assert_eq!(&data[at..at + bytes.len()], &bytes[..]);
                    }
                    out.clear();
                }
                assert_eq!(&data[..out.len()], &out[..]);
            }
        }
        _ => {
            // A base file and one log, split where the input says.
            let parts = chunks(data, 2);
            let (Some(base), Some(log)) = (parts.first(), parts.get(1)) else {
                return;
            };
            let (base, log) = (base_of(base), log_of(log));
            let generation = log
                .get(16..24)
                .map_or(0, |g| u64::from_le_bytes(g.try_into().expect("8 bytes")));
            let files = Arc::new(CrashFiles::new());
            files.set_file("t", base);
            files.set_file(&format!("t.log-{generation:016x}"), log);
            let open = || {
                TableConfig::new(TABLE_PAGE_SIZE)
                    .pages_max(1 << 16)
                    .open_on(files.clone(), "t")
            };
            let state = |t: &ChecksumTable| -> Vec<(Option<u32>, bool)> {
                (0..64)
                    .map(|p| (t.get(PageId(p)), t.is_free(PageId(p))))
                    .collect()
            };
            if let Ok(t) = open() {
                let before = state(&t);
                t.compact().expect("an opened table compacts");
                drop(t);
                let again = open().expect("a compacted table reopens");
                assert_eq!(state(&again), before, "a compaction changed the table");
            }
        }
    }
}

/// Trailer verification of arbitrary page bytes never panics, a page that
/// verifies stays the same when sealed again, and a sealed page verifies.
///
/// # Panics
/// When trailer verification breaks one of those properties.
pub fn page_trailer(data: &[u8]) {
    let Some((fix, data)) = fixup::split_mode(data) else {
        return;
    };
    let page = PageId(data.first().copied().unwrap_or(0).into());
    if fix {
        let mut sealed = data.to_vec();
        if trailer::seal(page, &mut sealed).is_ok() {
            trailer::verify(page, &sealed).expect("a sealed page verifies");
        }
    } else if trailer::verify(page, data).is_ok() {
        let mut again = data.to_vec();
        trailer::seal(page, &mut again).expect("a page that verifies can be sealed");
        assert_eq!(again, data);
    }
}

/// The undo journal's segment decoder: whatever it accepts is
/// self-consistent (consecutive LSNs, record types of the segment's version,
/// marks that claim only LSNs before their own).
///
/// # Panics
/// When the decoder breaks one of those properties.
pub fn journal_reader(data: &[u8]) {
    let Some((fix, data)) = fixup::split_mode(data) else {
        return;
    };
    let fixed;
    let data = if fix {
        fixed = fixup::journal_segment(data);
        &fixed[..]
    } else {
        data
    };
    if let Ok(scan) = decode_segment(data) {
        assert!(scan.valid_len as usize <= data.len());
        let mut expected = scan.header.first_lsn.0;
        let mut synced = None;
        for r in &scan.records {
            assert_eq!(r.lsn.0, expected);
            expected = expected.wrapping_add(1);
            match &r.record {
                Record::Mark { synced_through } => {
                    assert!(scan.header.version >= 2);
                    assert!(*synced_through < r.lsn);
                    synced = synced.max(Some(*synced_through));
                }
                Record::Undo { before, after, .. } => {
                    assert!(scan.header.version >= 2);
                    assert_eq!(before.len(), after.len());
                }
                Record::UndoV1 { .. } => assert_eq!(scan.header.version, 1),
                _ => {}
            }
        }
        assert!(scan.synced_through >= synced);
        assert_eq!(scan.next_lsn().0, expected);
        if scan.end == SegmentEnd::Clean {
            assert_eq!(scan.valid_len as usize, data.len());
            assert_eq!(scan.synced_through, synced);
            assert!(!scan.torn_possible);
        }
    }
}

const JOURNAL_PAGE_SIZE: usize = 256;
const JOURNAL_PAGES: u64 = 4;

fn open_journal(
    dir: &Arc<CrashDir>,
    mode: RecoveryMode,
) -> crate::Result<crate::TransactionRollbackManager> {
    let store = Arc::new(MemStore::new(JOURNAL_PAGE_SIZE, JOURNAL_PAGES).expect("a valid store"));
    RollbackConfig::with_storage(dir.clone())
        .recovery_mode(mode)
        .build(RawPages::shared(store))
}

/// Opening a whole undo journal — up to four segments with ids, LSN
/// continuity and contents from the input, and a state file — in the
/// recovery mode the input chooses: segment-id checks, LSN continuity,
/// truncation in each mode and the range checks of undo records against
/// the page store. An open either fails with a typed error or recovers a
/// journal that then stops cleanly and opens again in the same mode.
///
/// # Panics
/// When an open breaks one of those properties.
pub fn journal_open(data: &[u8]) {
    let Some((fix, data)) = fixup::split_mode(data) else {
        return;
    };
    let [mode, flags, ref rest @ ..] = *data else {
        return;
    };
    let mode = match mode % 3 {
        0 => RecoveryMode::TolerateTornTail,
        1 => RecoveryMode::AbsoluteConsistency,
        _ => RecoveryMode::StopAtFirstBadRecord,
    };
    let dir = Arc::new(CrashDir::new());
    let mut ids = Vec::new();
    let mut next_lsn = None;
    for chunk in chunks(rest, 5) {
        let Some((&id, seg)) = chunk.split_first() else {
            continue;
        };
        let id = u64::from(id % 8);
        let seg = if fix {
            let mut s = seg.to_vec();
            if s.len() < SEGMENT_HEADER_LEN {
                s.resize(SEGMENT_HEADER_LEN, 0);
            }
            s[8..16].copy_from_slice(&id.to_le_bytes());
            if let Some(lsn) = next_lsn {
                s[16..24].copy_from_slice(&u64::to_le_bytes(lsn));
            }
            let s = fixup::journal_segment(&s);
            next_lsn = decode_segment(&s).ok().map(|scan| scan.next_lsn().0);
            s
        } else {
            seg.to_vec()
        };
        ids.push(id);
        dir.set_segment(id, seg);
    }
    // The state file: none, the fuzzer's bytes (framed when fixing up), or
    // the range of the segments written.
    match flags % 4 {
        0 => {}
        1 if fix && !ids.is_empty() => {
            let state = JournalState {
                oldest: *ids.iter().min().expect("not empty"),
                newest: *ids.iter().max().expect("not empty"),
                txn_reserved_end: u64::from(flags),
            };
            dir.set_state_file(Some(state.encode()));
        }
        _ => {
            let tail = rest.get(rest.len().saturating_sub(48)..).unwrap_or(&[]);
            let state = if fix {
                fixup::framed(tail, STATE_MAGIC, STATE_VERSION)
            } else {
                tail.to_vec()
            };
            dir.set_state_file(Some(state));
        }
    }
    match open_journal(&dir, mode) {
        Ok(m) => {
            m.stop().expect("a recovered journal stops");
            drop(m);
            let again = open_journal(&dir, mode)
                .unwrap_or_else(|e| panic!("a journal recovered in {mode:?} does not reopen: {e}"));
            again.stop().expect("a reopened journal stops");
        }
        Err(e) => assert!(
            matches!(
                e,
                crate::Error::CorruptFile { .. }
                    | crate::Error::UnsupportedVersion { .. }
                    | crate::Error::IdSpaceExhausted { .. }
                    | crate::Error::InvalidArgument { .. }
                    | crate::Error::PageOutOfRange { .. }
            ),
            "untyped error opening a damaged journal: {e:?}"
        ),
    }
}

/// The snapshot file decoder (format 2, and format 1 which is still read):
/// what it accepts stores no more pages than the store had. Run it with
/// libFuzzer's `-malloc_limit_mb`: the decoder never allocates more than
/// about 256 times its input (lz4's largest ratio).
///
/// # Panics
/// When the decoder breaks that property or gives an untyped error.
pub fn snapshot_reader(data: &[u8]) {
    let Some((fix, data)) = fixup::split_mode(data) else {
        return;
    };
    let fixed;
    let data = if fix {
        fixed = fixup::snapshot_file(data);
        &fixed[..]
    } else {
        data
    };
    match crate::testing::decode_snapshot(data) {
        Ok(s) => assert!(s.stored_pages <= s.page_count),
        Err(e) => assert_typed(&e),
    }
}

const SNAPSHOT_PAGE_SIZE: usize = 128;

/// A fresh, empty directory for this process's snapshot target runs.
fn scratch_dir() -> PathBuf {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    // One directory per thread (tests run targets on parallel threads),
    // alternating between two so a long fuzz run leaves at most two.
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    let dir = std::env::temp_dir().join(format!(
        "selfheal-fuzz-snapshots-{}-{thread}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed) % 2
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// A whole snapshot directory — up to three snapshot files (ids 1 to 3,
/// parents and contents from the input) and a manifest, or none — opened by
/// the snapshot manager: restore chains (each listed snapshot verified,
/// restored and read page by page through its chain) and the manifest
/// rebuild from the files when the manifest is missing or damaged. An open
/// either fails with a typed error or lists only snapshots whose file names
/// are their ids', with a listed head, and opens again with the same list.
///
/// # Panics
/// When an open breaks one of those properties.
pub fn snapshot_dir(data: &[u8]) {
    let Some((fix, data)) = fixup::split_mode(data) else {
        return;
    };
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch_dir();
    let parts = chunks(rest, 4);
    for (i, part) in parts.iter().enumerate().skip(1) {
        let id = i as u64;
        let bytes = if fix {
            let mut b = part.to_vec();
            if b.len() < 64 {
                b.resize(64, 0);
            }
            b[8..16].copy_from_slice(&id.to_le_bytes());
            let parent = if flags & (1 << i) != 0 { id - 1 } else { 0 };
            b[16..24].copy_from_slice(&parent.to_le_bytes());
            b[40..44].copy_from_slice(&(SNAPSHOT_PAGE_SIZE as u32).to_le_bytes());
            fixup::snapshot_file(&b)
        } else {
            part.to_vec()
        };
        std::fs::write(dir.join(snapshot_file_name(id)), bytes).expect("a scratch file");
    }
    if flags & 1 == 1 {
        if let Some(manifest) = parts.first() {
            let bytes = if fix {
                fixup::framed(manifest, *b"SHSM", 2)
            } else {
                manifest.to_vec()
            };
            std::fs::write(dir.join("MANIFEST"), bytes).expect("a scratch file");
        }
    }
    let open = || {
        SnapshotConfig::new(&dir, SNAPSHOT_PAGE_SIZE)
            .threads(1)
            .build()
    };
    match open() {
        Ok(m) => {
            let listed: Vec<u64> = m.snapshots().iter().map(|s| s.id).collect();
            for s in m.snapshots() {
                assert_eq!(s.file_name, snapshot_file_name(s.id));
            }
            if let Some(h) = m.head() {
                assert!(listed.contains(&h), "head {h} is not listed in {listed:?}");
            }
            let mut buf = vec![0u8; SNAPSHOT_PAGE_SIZE];
            for s in m.snapshots() {
                let verified = m.verify(s.id);
                let pages = s.page_count.min(16);
                for p in 0..pages {
                    let _ = m.read_page_at(s.id, PageId(p), &mut buf);
                }
                if let Ok(target) = MemStore::new(SNAPSHOT_PAGE_SIZE, pages.max(1)) {
                    if let Err(e) = m.restore(s.id, &target) {
                        assert!(
                            verified.is_err() || s.page_count > 16,
                            "snapshot {} verifies but does not restore: {e}",
                            s.id
                        );
                    }
                }
            }
            drop(m);
            // Reopened only when the directory's lock is free again (a
            // restore's workers may still hold the manager for a moment).
            match open() {
                Ok(again) => {
                    let relisted: Vec<u64> = again.snapshots().iter().map(|s| s.id).collect();
                    assert_eq!(relisted, listed, "a reopen changed the snapshots listed");
                }
                Err(crate::Error::DirectoryLocked { .. }) => {}
                Err(e) => panic!("an opened snapshot directory does not open again: {e}"),
            }
        }
        // A manifest (or, when it is rebuilt, a snapshot file) whose CRC
        // holds and which claims another page size in the range a
        // configuration may have is what a directory of another store looks
        // like: the files say nothing else that could tell it from damage
        // that kept its CRC. Refusing it as a mismatch that names the
        // directory or file, and deleting nothing, is right — treating it
        // as damage would let a rebuild set the other store's snapshots
        // aside. A page size no configuration can have is damage
        // (`CorruptFile`), so the mismatch is accepted only in range, and
        // only here: the other targets' decoders know no configured size.
        Err(crate::Error::PageSizeMismatch {
            what,
            expected,
            actual,
        }) => {
            assert_eq!(expected, SNAPSHOT_PAGE_SIZE, "{what}");
            assert_ne!(actual, expected, "{what}");
            assert!(
                (crate::checksum::MIN_PAGE_SIZE..=crate::snapshot::format::MAX_PAGE_SIZE)
                    .contains(&actual),
                "a page size of {actual} bytes, which no configuration has, was not refused as damage: {what}"
            );
            assert!(what.contains("another directory"), "{what}");
        }
        Err(e) => assert_typed(&e),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The audit log opened over up to four segment files from the input (their
/// names from their headers, or off by one when the input says): an open
/// never fails for damage; what it lists ascends; an append after it is
/// durable and found again by the next open.
///
/// # Panics
/// When an open breaks one of those properties.
pub fn audit_log(data: &[u8]) {
    let Some((fix, data)) = fixup::split_mode(data) else {
        return;
    };
    let files = Arc::new(CrashFiles::new());
    for (i, chunk) in chunks(data, 4).into_iter().enumerate() {
        let Some((&flag, seg)) = chunk.split_first() else {
            continue;
        };
        let seg = if fix {
            fixup::audit_segment(seg)
        } else {
            seg.to_vec()
        };
        let first = seg.get(8..16).map_or(i as u64, |b| {
            u64::from_le_bytes(b.try_into().expect("8 bytes"))
        });
        let first = if flag & 1 == 1 {
            first.wrapping_add(1)
        } else {
            first
        };
        files.set_file(&format!("audit-{first:016x}.log"), seg);
    }
    let open = || AuditConfig::new().open_on(files.clone());
    let log = match open() {
        Ok(log) => log,
        Err(e) => {
            assert_typed(&e);
            return;
        }
    };
    let before = log.next_seq();
    if let Ok(records) = log.query(&AuditQuery::all()) {
        assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
        assert!(records.iter().all(|r| r.seq < before));
    }
    let entry = AuditEntry {
        incident: Some(7),
        target: "page 3".into(),
        kind: EntryKind::Note,
        text: "fuzz".into(),
    };
    let Ok(seq) = log.append(&[entry]) else {
        return;
    };
    log.sync().expect("an append syncs");
    drop(log);
    let again = open().expect("a log that was appended to opens again");
    let found = again
        .query(&AuditQuery::all().last(1))
        .expect("a reopened log is queried");
    assert!(
        found.iter().any(|r| r.seq == seq && r.entry.text == "fuzz"),
        "record {seq}, appended and synced, is gone after a reopen: {found:?}"
    );
}
