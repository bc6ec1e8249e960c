//! Every file the library opens, replaced by a named pipe or a directory: the open is refused with a typed error naming the path, and never blocks (each case runs on a thread with a deadline, so a hang fails the test instead of stalling it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use selfheal::crash::RunMarker;
use selfheal::rollback::RawPages;
use selfheal::snapshot::{Consistency, SnapshotConfig, SnapshotKind, SnapshotRequest, WriteGate};
use selfheal::{
    ChecksumPlacement, ChecksumTable, CorruptionConfig, Error, FileStore, Lsn, MemStore, PageId,
    PageStore, RollbackConfig, ScrubConfig,
};

const PS: usize = 256;

/// What to put where a library file belongs.
#[derive(Clone, Copy, Debug)]
enum Intruder {
    Pipe,
    Directory,
}

impl Intruder {
    fn kind(self) -> &'static str {
        match self {
            Intruder::Pipe => "named pipe",
            Intruder::Directory => "directory",
        }
    }

    fn replace(self, path: &Path) {
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else if path.exists() {
            std::fs::remove_file(path).unwrap();
        }
        match self {
            Intruder::Pipe => {
                let ok = std::process::Command::new("mkfifo").arg(path).status();
                assert!(ok.unwrap().success(), "mkfifo (coreutils) is needed");
            }
            Intruder::Directory => std::fs::create_dir(path).unwrap(),
        }
    }
}

/// Runs `open` on its own thread and fails the test if it takes longer than
/// a few seconds (an open blocked on a named pipe never returns).
fn within_deadline<T: Send + 'static>(
    what: &str,
    open: impl FnOnce() -> selfheal::Result<T> + Send + 'static,
) -> selfheal::Result<T> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(open());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what}: the open blocked"))
}

fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    got: selfheal::Result<T>,
    path: &Path,
    who: Intruder,
) {
    match got {
        Err(Error::NotRegularFile { path: p, kind }) => {
            assert_eq!(kind, who.kind(), "{what}");
            assert_eq!(p, path, "{what}: the error names the file");
        }
        other => panic!(
            "{what} as a {}: expected NotRegularFile, got {other:?}",
            who.kind()
        ),
    }
}

fn each_intruder(mut case: impl FnMut(Intruder)) {
    for who in [Intruder::Pipe, Intruder::Directory] {
        case(who);
    }
}

#[test]
fn run_marker_and_lock_file() {
    each_intruder(|who| {
        let dir = tempfile::tempdir().unwrap();
        let (m, _) = RunMarker::open(dir.path()).unwrap();
        drop(m);
        for name in ["selfheal.run", "selfheal.lock"] {
            let d = dir.path().to_path_buf();
            let path = d.join(name);
            who.replace(&path);
            let got = within_deadline(name, move || RunMarker::open(&d).map(|(_, v)| v));
            assert_refused(name, got, &path, who);
            std::fs::remove_dir_all(&path)
                .or_else(|_| std::fs::remove_file(&path))
                .unwrap();
        }
    });
}

#[test]
fn undo_journal_segment_and_state_file() {
    each_intruder(|who| {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("journal");
        let store: Arc<dyn PageStore> = Arc::new(MemStore::new(PS, 4).unwrap());
        let mgr = RollbackConfig::new(&jdir)
            .build(RawPages::shared(store.clone()))
            .unwrap();
        let t = mgr.begin().unwrap();
        mgr.write(t, PageId(1), 0, &[7u8; 16]).unwrap();
        mgr.commit(t).unwrap();
        mgr.stop().unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&jdir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 2, "a segment and the state file: {files:?}");
        for path in files {
            let saved = std::fs::read(&path).unwrap();
            who.replace(&path);
            let (j, s) = (jdir.clone(), store.clone());
            let what = path.display().to_string();
            let got = within_deadline(&what, move || {
                RollbackConfig::new(&j)
                    .build(RawPages::shared(s))
                    .map(|_| ())
            });
            assert_refused(&what, got, &path, who);
            Intruder::replace_back(&path, &saved);
        }
    });
}

impl Intruder {
    /// Puts the original file back.
    fn replace_back(path: &Path, bytes: &[u8]) {
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }
}

#[test]
fn snapshot_file_and_manifest() {
    each_intruder(|who| {
        let dir = tempfile::tempdir().unwrap();
        let sdir = dir.path().join("snaps");
        let store = MemStore::new(PS, 4).unwrap();
        for p in 0..4 {
            store.write_page(PageId(p), &[p as u8 + 1; PS]).unwrap();
        }
        let m = SnapshotConfig::new(&sdir, PS).build().unwrap();
        let gate = WriteGate::new();
        let pause = gate.pause();
        let id = m
            .take_snapshot(
                Consistency::Paused {
                    store: &store,
                    pause: &pause,
                    lsn: Lsn(1),
                },
                SnapshotRequest::new(SnapshotKind::Full),
            )
            .unwrap()
            .info
            .id;
        drop(pause);

        // The snapshot file: a restore reads it.
        let snap = sdir.join(selfheal::snapshot::snapshot_file_name(id));
        let saved = std::fs::read(&snap).unwrap();
        who.replace(&snap);
        let m = Arc::new(m);
        let (m2, target) = (m.clone(), Arc::new(MemStore::new(PS, 4).unwrap()));
        let got = within_deadline("snapshot file", move || {
            m2.restore(id, &*target).map(|_| ())
        });
        match got {
            Err(Error::NotRegularFile { .. }) => {}
            // A restore reports the damaged member and why.
            Err(Error::SnapshotDamaged { reason, .. }) => {
                assert!(reason.contains(who.kind()), "{reason}");
            }
            other => panic!("snapshot file as a {}: {other:?}", who.kind()),
        }
        Intruder::replace_back(&snap, &saved);
        drop(m);

        // The manifest: the next open reads it.
        let manifest = sdir.join("MANIFEST");
        assert!(manifest.exists());
        who.replace(&manifest);
        let d = sdir.clone();
        let got = within_deadline("manifest", move || {
            SnapshotConfig::new(&d, PS).build().map(|_| ())
        });
        assert_refused("manifest", got, &manifest, who);
    });
}

#[test]
fn scrub_cursor_and_checksum_table() {
    each_intruder(|who| {
        let dir = tempfile::tempdir().unwrap();
        let cursor = dir.path().join("scrub.cursor");
        who.replace(&cursor);
        let store: Arc<dyn PageStore> = Arc::new(MemStore::new(PS, 4).unwrap());
        let det = Arc::new(
            CorruptionConfig::new(ChecksumPlacement::Trailer)
                .build(store)
                .unwrap(),
        );
        // The cursor is never trusted: one that cannot be read means page 0
        // (without blocking), and writing it refuses to replace the intruder.
        let c = cursor.clone();
        let got = within_deadline("scrub cursor", move || {
            let s = ScrubConfig::new().cursor_path(&c).build(det)?;
            s.step(0)?;
            s.persist_cursor()
        });
        assert_refused("scrub cursor", got, &cursor, who);

        let table = dir.path().join("sums");
        who.replace(&table);
        let t = table.clone();
        let got = within_deadline("checksum table", move || {
            ChecksumTable::load_or_new(&t, PS).map(|_| ())
        });
        assert_refused("checksum table", got, &table, who);

        // A durable table: each of its files in turn.
        let tdir = dir.path().join("durable");
        std::fs::create_dir(&tdir).unwrap();
        let path = tdir.join("sums");
        drop(ChecksumTable::open(&path, PS).unwrap());
        let mut files: Vec<PathBuf> = std::fs::read_dir(&tdir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty());
        for file in files {
            let saved = std::fs::read(&file).unwrap();
            who.replace(&file);
            let p = path.clone();
            let what = file.display().to_string();
            let got = within_deadline(&what, move || ChecksumTable::open(&p, PS).map(|_| ()));
            assert_refused(&what, got, &file, who);
            Intruder::replace_back(&file, &saved);
        }
    });
}

#[test]
fn file_store() {
    each_intruder(|who| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        who.replace(&path);
        let p = path.clone();
        let got = within_deadline("store file", move || FileStore::open(&p, PS).map(|_| ()));
        assert_refused("store file", got, &path, who);
        let p = path.clone();
        let got = within_deadline("store file", move || {
            FileStore::create(&p, PS, 4).map(|_| ())
        });
        assert_refused("store file", got, &path, who);
    });
}
