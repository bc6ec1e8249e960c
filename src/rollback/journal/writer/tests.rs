//! Unit tests of the undo journal writer: the buffers it keeps for reuse stay bounded and never carry an older record into a newer segment; an undo append goes in only while the transaction's log is open, and lands in the log.

use super::super::reader::decode_segment;
use super::super::recovery::{scan, RecoveryMode};
use super::super::storage::DirStorage;
use super::*;

fn open(dir: &std::path::Path, buffer_bytes: usize) -> Journal {
    let storage: Arc<dyn JournalStorage> = Arc::new(DirStorage::open(dir).unwrap());
    let found = scan(storage.as_ref(), RecoveryMode::TolerateTornTail).unwrap();
    Journal::open(
        storage,
        JournalConfig {
            segment_size: 64 << 20,
            buffer_bytes,
            sync_wait_timeout: Duration::from_secs(30),
            idle_mark_delay: Duration::from_secs(3600),
            on_poison: None,
            on_stall: None,
        },
        &found,
    )
    .unwrap()
}

/// Written buffers are kept for reuse within their bounds (count and
/// size), a fresh one has room for a whole batch, and a reused one
/// carries nothing of what it held before: the segment reads back as
/// exactly the records appended, in LSN order. Method: many batches
/// written without an fsync (kept for a resume until one completes),
/// then a flush, twice, on real files; the buffers are inspected under
/// the append lock and the segment decoded.
#[test]
fn kept_buffers_stay_bounded_and_never_leak_old_records() {
    for buffer_bytes in [1usize, 4096, 256 << 10] {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), buffer_bytes);
        j.open_log(
            TxnId(7),
            UndoLog {
                open: true,
                ..UndoLog::default()
            },
        );
        let mut expected = Vec::new();
        for round in 0..2u8 {
            for i in 0..2_000u32 {
                let len = 1 + (i as usize * 7) % 300;
                let before = vec![round ^ (i as u8); len];
                let after = vec![!(round ^ (i as u8)); len];
                let page = PageId(u64::from(i) % 13);
                let (lsn, full) = j
                    .append_undo(TxnId(7), page, i, &before, &after, u64::MAX)
                    .unwrap()
                    .expect("the log is open");
                expected.push((lsn, page, i, before, after));
                if full {
                    j.write_if_full().unwrap();
                }
                let g = j.core.inner.lock();
                if let Some(c) = g.pending.last() {
                    assert!(
                        c.bytes.capacity() >= buffer_bytes.min(BUFFER_PRESIZE_MAX),
                        "a buffer has room for a whole batch"
                    );
                }
            }
            j.flush().unwrap();
            let g = j.core.inner.lock();
            assert!(g.unsynced.is_empty());
            assert!(!g.spare.is_empty(), "written buffers are kept");
            assert!(g.spare.len() <= SPARE_BUFFERS_MAX);
            for b in &g.spare {
                assert!(b.is_empty());
                assert!(b.capacity() <= 2 * buffer_bytes.max(BUFFER_SLACK));
            }
        }
        j.close().unwrap();
        j.release();
        drop(j);
        let storage = DirStorage::open(dir.path()).unwrap();
        let mut undo = Vec::new();
        for id in storage.list().unwrap() {
            let s = decode_segment(&storage.read(id).unwrap()).unwrap();
            assert_eq!(s.end, super::super::reader::SegmentEnd::Clean);
            for r in s.records {
                if let Record::Undo {
                    page,
                    offset,
                    before,
                    after,
                    ..
                } = r.record
                {
                    undo.push((r.lsn, page, offset, before, after));
                }
            }
        }
        assert_eq!(undo, expected, "buffer size {buffer_bytes}");
    }
}

/// An undo append goes into the journal and the transaction's log
/// together, and only while the log is open: nothing is appended for a
/// transaction without a log, past the undo limit, or after its commit
/// record (which closes the log). Method: appends around each of those,
/// with the journal's record count and the log's entries checked after
/// each.
#[test]
fn undo_goes_in_only_while_the_log_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), 4096);
    let (t, page) = (TxnId(9), PageId(2));
    let records = |j: &Journal| j.stats().records;
    let start = records(&j);
    assert!(j
        .append_undo(t, page, 0, &[1; 8], &[2; 8], u64::MAX)
        .unwrap()
        .is_none());
    assert_eq!(records(&j), start, "no log: nothing appended");
    j.open_log(
        t,
        UndoLog {
            open: true,
            ..UndoLog::default()
        },
    );
    let (lsn, _) = j
        .append_undo(t, page, 4, &[1; 8], &[2; 8], 16)
        .unwrap()
        .expect("the log is open");
    assert!(matches!(
        j.append_undo(t, page, 0, &[1; 9], &[2; 9], 16),
        Err(Error::RollbackLimit { .. })
    ));
    assert_eq!(records(&j), start + 1, "past the limit: nothing appended");
    {
        let log = j.log(t).expect("held");
        assert_eq!(log.entries.len(), 1);
        assert_eq!((log.entries[0].lsn, log.entries[0].offset), (lsn.0, 4));
        assert_eq!(log.entries[0].before(&log.arena), &[1; 8]);
        assert_eq!(log.entries[0].after(&log.arena), Some(&[2u8; 8][..]));
        assert_eq!((log.before_bytes, log.unfolded), (8, (1, 8, 16)));
    }
    j.append_commit(t).unwrap();
    assert!(j
        .append_undo(t, page, 0, &[1; 8], &[2; 8], u64::MAX)
        .unwrap()
        .is_none());
    assert_eq!(records(&j), start + 2, "after the commit: nothing appended");
    let log = j.take_log(t).expect("held");
    assert!(!log.open && log.entries.len() == 1);
    assert!(j.log(t).is_none());
    j.close().unwrap();
}

/// An undo append to a halted journal (poisoned or stalled) is refused
/// before anything is encoded: the transaction's log, its byte count and
/// what it has to fold stay as they were, and the journal holds no new
/// record. Method: one append, then the journal halted as a failed write
/// halts it, then a second append.
#[test]
fn a_halted_journal_refuses_undo_and_leaves_the_log_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), 4096);
    let (t, page) = (TxnId(3), PageId(1));
    j.open_log(
        t,
        UndoLog {
            open: true,
            ..UndoLog::default()
        },
    );
    j.append_undo(t, page, 0, &[1; 8], &[2; 8], u64::MAX)
        .unwrap()
        .expect("the log is open");
    let records = j.stats().records;
    j.core.poison("a write failed (test)".into());
    assert!(matches!(
        j.append_undo(t, page, 8, &[3; 8], &[4; 8], u64::MAX),
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(j.stats().records, records, "nothing appended");
    let log = j.log(t).expect("held");
    assert!(log.open);
    assert_eq!(log.entries.len(), 1);
    assert_eq!(log.arena.len(), 16);
    assert_eq!((log.before_bytes, log.unfolded), (8, (1, 8, 16)));
}
