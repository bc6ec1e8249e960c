//! Seed inputs for every fuzz target: valid encodings written by the
//! crate's own encoders and components, each in both modes (a raw seed
//! starts with byte 0, a fixed-up one with byte 1), so the fuzzer starts
//! from files the decoders accept.

use std::sync::Arc;

use crate::audit::{AuditConfig, AuditEntry, EntryKind};
use crate::checksum::{trailer, TableConfig};
use crate::corruption::PageState;
use crate::error::Result;
use crate::healer::Learner;
use crate::rollback::RawPages;
use crate::snapshot::{
    Consistency, Retention, SnapshotConfig, SnapshotKind, SnapshotRequest, WriteGate,
};
use crate::testing::decoders::{self, RunMarkerRecord, ScrubCursor};
use crate::testing::{fill_store, CrashDir, CrashFiles};
use crate::types::{Failure, FailureKind, Lsn, PageId, Source, TxnId};
use crate::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, MemStore, PageStore, RollbackConfig,
};

/// Both modes of one input: raw (first byte 0) and fixed-up (first byte 1).
fn both(body: &[u8]) -> [Vec<u8>; 2] {
    [0u8, 1].map(|m| {
        let mut v = vec![m];
        v.extend_from_slice(body);
        v
    })
}

/// `prefix` then each part with its 2-byte length (the targets' `chunks`).
fn with_chunks(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    for p in parts {
        v.extend_from_slice(&(p.len() as u16).to_le_bytes());
        v.extend_from_slice(p);
    }
    v
}

/// A journal over `CrashDir` with committed, rolled-back and unfinished
/// transactions, in two segments; returns the directory.
fn journal() -> Result<Arc<CrashDir>> {
    let dir = Arc::new(CrashDir::new());
    let store = Arc::new(MemStore::new(256, 4)?);
    let mgr = RollbackConfig::with_storage(dir.clone())
        .segment_size_bytes(700)
        .build(RawPages::shared(store))?;
    for i in 0..4u8 {
        let t = mgr.begin()?;
        mgr.write(t, PageId(u64::from(i)), usize::from(i) * 10, &[i + 1; 24])?;
        if i == 2 {
            mgr.rollback(t)?;
        } else {
            mgr.commit(t)?;
        }
    }
    let t = mgr.begin()?;
    mgr.write(t, PageId(3), 100, &[7u8; 16])?;
    mgr.stop()?;
    Ok(dir)
}

/// Snapshot files (a full one and an incremental one with metadata) and
/// their manifest, written by the manager in a scratch directory.
fn snapshots() -> Result<(Vec<Vec<u8>>, Vec<u8>)> {
    let dir = std::env::temp_dir().join(format!("selfheal-fuzz-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io("creating a scratch dir", e))?;
    let store = MemStore::new(128, 6)?;
    fill_store(&store, 77)?;
    let m = SnapshotConfig::new(&dir, 128)
        .chunk_bytes(128 * 2)
        .threads(1)
        .retention(Retention::KeepAll)
        .build()?;
    let gate = WriteGate::new();
    for (lsn, kind) in [(1u64, SnapshotKind::Full), (2, SnapshotKind::Incremental)] {
        store.write_page(PageId(lsn * 2), &[lsn as u8; 128])?;
        m.note_dirty(PageId(lsn * 2));
        let pause = gate.pause();
        m.take_snapshot(
            Consistency::Paused {
                store: &store,
                pause: &pause,
                lsn: Lsn(lsn),
            },
            SnapshotRequest::new(kind).metadata("config", b"k=v".to_vec()),
        )?;
    }
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| crate::Error::io("reading a seed", e))
    };
    let files = m
        .snapshots()
        .iter()
        .map(|s| read(&s.file_name))
        .collect::<Result<Vec<_>>>()?;
    let manifest = read("MANIFEST")?;
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((files, manifest))
}

/// A durable checksum table's base file and log.
fn checksum_files() -> Result<(Vec<u8>, Vec<u8>)> {
    let files = Arc::new(CrashFiles::new());
    let table = Arc::new(TableConfig::new(4096).open_on(files.clone(), "t")?);
    let store = Arc::new(MemStore::new(4096, 8)?);
    let det = CorruptionConfig::new(ChecksumPlacement::Sidecar(table.clone())).build(store)?;
    for p in 0..4u8 {
        det.write_sealed(PageId(u64::from(p)), &mut vec![p + 1; 4096])?;
    }
    det.sync()?;
    table.compact()?;
    det.write_sealed(PageId(5), &mut vec![9u8; 4096])?;
    det.forget(PageId(1))?;
    table.flush()?;
    let names = files.names();
    let log = names
        .iter()
        .find(|n| n.starts_with("t.log-"))
        .and_then(|n| files.file(n))
        .unwrap_or_default();
    Ok((files.file("t").unwrap_or_default(), log))
}

/// Audit-log segments with a few records.
fn audit_segments() -> Result<Vec<Vec<u8>>> {
    let files = Arc::new(CrashFiles::new());
    let log = AuditConfig::new().open_on(files.clone())?;
    for (i, kind) in [EntryKind::Detected, EntryKind::Acted, EntryKind::Closed]
        .into_iter()
        .enumerate()
    {
        log.append(&[AuditEntry {
            incident: Some(i as u64 + 1),
            target: format!("page {i}"),
            kind,
            text: "seed".repeat(i + 1),
        }])?;
    }
    log.sync()?;
    drop(log);
    let mut names = files.names();
    names.sort();
    Ok(names
        .iter()
        .filter(|n| n.starts_with("audit-"))
        .filter_map(|n| files.file(n))
        .collect())
}

/// Seed inputs by target name.
pub type Seeds = Vec<(&'static str, Vec<Vec<u8>>)>;

/// The seed inputs of every target in [`TARGETS`](super::TARGETS), by
/// target name: valid encodings from the crate's own writers, in both modes.
///
/// # Errors
/// An error of the components that write the seeds (none is expected).
pub fn seeds() -> Result<Seeds> {
    let mut out: Seeds = Vec::new();

    let marker = RunMarkerRecord {
        state: 1,
        run: 3,
        started_unix_ms: 1_700_000_000_000,
        last_seen_unix_ms: 1_700_000_005_000,
        pid: 4242,
    };
    out.push(("run_marker", both(&marker.encode()).into()));

    let cursor = decoders::encode_scrub_cursor(ScrubCursor {
        next: 17,
        total: 64,
        passes: 2,
    });
    out.push(("scrub_cursor", both(&cursor).into()));

    let mut framed = vec![2u8];
    framed.extend_from_slice(&decoders::encode_framed(*b"SHFZ", 2, b"payload"));
    out.push(("framed_file", both(&framed).into()));

    let mut learner = Learner::new(1, 8);
    for (p, r, ok) in [
        ("corrupt page", "repair", true),
        ("corrupt page", "restore", false),
    ] {
        learner.record(p, r, ok);
    }
    out.push(("learned_remedy", both(&learner.encode()).into()));

    let failures = vec![
        (
            1,
            Failure::new(
                Source::Scrubber,
                FailureKind::CorruptPage { page: PageId(9) },
                "crc mismatch",
                5,
            ),
        ),
        (
            2,
            Failure::new(
                Source::TransactionRollbackManager,
                FailureKind::RollbackBlocked {
                    txn: TxnId(4),
                    page: PageId(2),
                },
                "",
                9,
            ),
        ),
    ];
    out.push((
        "incidents",
        both(&decoders::encode_incidents(&failures)).into(),
    ));

    let suspects = decoders::encode_suspects(&[
        (PageId(3), PageState::Suspect, 10),
        (PageId(8), PageState::Irreparable, 20),
    ]);
    out.push(("suspects", both(&suspects).into()));

    let dir = journal()?;
    let ids = dir.segment_ids();
    let segments: Vec<Vec<u8>> = ids.iter().filter_map(|&i| dir.segment(i)).collect();
    let state = dir.state_file().unwrap_or_default();
    out.push((
        "journal_reader",
        segments.iter().flat_map(|s| both(s)).collect(),
    ));
    out.push(("journal_state", both(&state).into()));
    let mut open = Vec::new();
    for (mode, flags) in [(0u8, 1u8), (1, 1), (2, 2)] {
        let parts: Vec<Vec<u8>> = ids
            .iter()
            .zip(&segments)
            .map(|(&id, s)| {
                let mut p = vec![id as u8];
                p.extend_from_slice(s);
                p
            })
            .collect();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let mut body = with_chunks(&[mode, flags], &refs);
        if flags == 2 {
            // The raw state file, as the last bytes of the input.
            body.extend_from_slice(&state);
        }
        open.extend(both(&body));
    }
    out.push(("journal_open", open));

    let (base, log) = checksum_files()?;
    let table = ChecksumTable::new(4096)?;
    table.seal(PageId(2), &[3u8; 4096])?;
    let mut base_only = vec![0u8];
    base_only.extend_from_slice(&table.encode());
    let mut log_only = vec![1u8];
    log_only.extend_from_slice(&log);
    let both_files = with_chunks(&[2u8], &[&base, &log]);
    out.push((
        "checksum_table",
        [base_only, log_only, both_files]
            .iter()
            .flat_map(|b| both(b))
            .collect(),
    ));

    let mut page = vec![0x5Au8; 512];
    page[0] = 6;
    trailer::seal(PageId(6), &mut page)?;
    out.push(("page_trailer", both(&page).into()));

    let (snaps, manifest) = snapshots()?;
    out.push((
        "snapshot_reader",
        snaps.iter().flat_map(|s| both(s)).collect(),
    ));
    out.push(("manifest_reader", both(&manifest).into()));
    let mut parts: Vec<&[u8]> = vec![&manifest];
    parts.extend(snaps.iter().map(Vec::as_slice));
    // Flags: bit 0 writes the manifest, bit 2 makes snapshot 2 an
    // incremental on snapshot 1 (when fixed up).
    out.push((
        "snapshot_dir",
        [0b101u8, 0b100]
            .iter()
            .flat_map(|&f| both(&with_chunks(&[f], &parts)))
            .collect(),
    ));

    let segs = audit_segments()?;
    let parts: Vec<Vec<u8>> = segs
        .iter()
        .map(|s| {
            let mut p = vec![0u8];
            p.extend_from_slice(s);
            p
        })
        .collect();
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    out.push(("audit_log", both(&with_chunks(&[], &refs)).into()));

    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}
