//! Every directory the library keeps files in has one owner: a second snapshot manager, rollback manager or durable checksum table on a directory (or table path) already owned — in this process, through a second open file description, or by a child process — is refused with `Error::DirectoryLocked` (naming the directory, the owner, its pid and what to do), and accepted once the first owner is gone. The child process is this test binary, run again on one helper test that holds a directory until its stdin closes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use selfheal::crash::RunMarker;
use selfheal::rollback::RawPages;
use selfheal::snapshot::{PeriodicConfig, SnapshotConfig, WriteGate};
use selfheal::{
    Error, Lsn, MemStore, PageSource, RollbackConfig, StateSnapshotManager,
    TransactionRollbackManager,
};

const PS: usize = 256;
const HOLD_DIR: &str = "SELFHEAL_TEST_HOLD_DIR";
const HOLD_KIND: &str = "SELFHEAL_TEST_HOLD_KIND";

fn snapshots(dir: &Path) -> selfheal::Result<StateSnapshotManager> {
    SnapshotConfig::new(dir, PS).build()
}

fn rollback(dir: &Path) -> selfheal::Result<TransactionRollbackManager> {
    RollbackConfig::new(dir).build(RawPages::shared(Arc::new(MemStore::new(PS, 4).unwrap())))
}

/// Asserts `r` is a refusal of `dir` by an owner of kind `owner`, held by `pid`.
fn refused<T: std::fmt::Debug>(r: selfheal::Result<T>, dir: &Path, owner: &str, pid: Option<u32>) {
    match r {
        Err(e @ Error::DirectoryLocked { .. }) => {
            let msg = e.to_string();
            let Error::DirectoryLocked {
                path,
                owner: o,
                holder_pid,
                remedy,
            } = e
            else {
                unreachable!()
            };
            assert_eq!(path, dir);
            assert_eq!(o, owner);
            assert_eq!(holder_pid, pid);
            assert!(!remedy.is_empty());
            assert!(msg.contains(&remedy) && msg.contains(owner), "{msg}");
        }
        other => panic!("expected DirectoryLocked by a {owner}, got {other:?}"),
    }
}

#[test]
fn two_snapshot_managers_on_one_directory() {
    let dir = tempfile::tempdir().unwrap();
    let me = Some(std::process::id());
    let first = snapshots(dir.path()).unwrap();
    refused(snapshots(dir.path()), dir.path(), "snapshot manager", me);
    // Its page source keeps using the directory: still owned.
    let source = first.page_source();
    drop(first);
    refused(snapshots(dir.path()), dir.path(), "snapshot manager", me);
    assert!(source.name().starts_with("snapshot"));
    drop(source);
    let second = snapshots(dir.path()).unwrap();
    // So does its periodic thread, until it is stopped.
    let periodic = PeriodicConfig::new(Duration::from_secs(3600))
        .build(
            &second,
            Arc::new(MemStore::new(PS, 4).unwrap()),
            Arc::new(WriteGate::new()),
            Arc::new(|| Lsn(0)),
        )
        .unwrap();
    periodic.start().unwrap();
    drop(second);
    refused(snapshots(dir.path()), dir.path(), "snapshot manager", me);
    periodic.stop().unwrap();
    drop(periodic);
    snapshots(dir.path()).unwrap();
}

#[test]
fn two_rollback_managers_on_one_directory() {
    let dir = tempfile::tempdir().unwrap();
    let me = Some(std::process::id());
    let first = rollback(dir.path()).unwrap();
    refused(rollback(dir.path()), dir.path(), "undo journal", me);
    first.stop().unwrap();
    let second = rollback(dir.path()).unwrap();
    drop(second); // dropped without close: released too
    rollback(dir.path()).unwrap();
}

#[test]
fn a_rollback_manager_shared_behind_an_arc_stops_and_frees_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = Arc::new(rollback(dir.path()).unwrap());
    let lingering = first.clone();
    let t = first.begin().unwrap();
    first.stop().unwrap();
    first.stop().unwrap();
    // Every handle sees the manager closed...
    assert!(matches!(lingering.begin(), Err(Error::Stopped { .. })));
    assert!(matches!(lingering.commit(t), Err(Error::Stopped { .. })));
    // ...and the directory is free while the handles live.
    let second = rollback(dir.path()).unwrap();
    assert_eq!(
        second.recovery_report().rolled_back.len(),
        1,
        "the transaction left in flight is rolled back by the next manager"
    );
    drop(lingering);
}

#[test]
fn two_scrubbers_on_one_cursor_file() {
    let dir = tempfile::tempdir().unwrap();
    let cursor = dir.path().join("scrub.cursor");
    let me = Some(std::process::id());
    let scrubber = |det: Arc<selfheal::CorruptionDetector>| {
        selfheal::ScrubConfig::new().cursor_path(&cursor).build(det)
    };
    for (_, placement) in selfheal::testing::every_placement(PS) {
        let store = Arc::new(MemStore::new(PS, 8).unwrap());
        let det = Arc::new(
            selfheal::CorruptionConfig::new(placement)
                .build(store)
                .unwrap(),
        );
        let first = scrubber(det.clone()).unwrap();
        refused(scrubber(det.clone()), dir.path(), "scrubber", me);
        // Started, it still owns the file; stopped, it gives it up.
        first.start().unwrap();
        refused(scrubber(det.clone()), dir.path(), "scrubber", me);
        first.stop().unwrap();
        drop(first);
        let second = scrubber(det.clone()).unwrap();
        drop(second); // dropped unstarted: released too
                      // Another cursor file in the same directory has its own owner.
        let other = selfheal::ScrubConfig::new()
            .cursor_path(dir.path().join("other.cursor"))
            .build(det.clone())
            .unwrap();
        let again = scrubber(det).unwrap();
        drop((other, again));
    }
}

#[test]
fn two_audit_logs_on_one_directory() {
    let dir = tempfile::tempdir().unwrap();
    let open = || selfheal::audit::AuditConfig::new().open(dir.path());
    let first = open().unwrap();
    refused(open(), dir.path(), "audit log", Some(std::process::id()));
    drop(first);
    let again = open().unwrap();
    drop(again);
}

#[test]
fn owners_of_different_kinds_may_share_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_marker, _) = RunMarker::open(dir.path()).unwrap();
    let _snaps = snapshots(dir.path()).unwrap();
    let _journal = rollback(dir.path()).unwrap();
    refused(
        RunMarker::open(dir.path()).map(|(m, _)| m),
        dir.path(),
        "run marker",
        Some(std::process::id()),
    );
}

#[test]
fn a_lock_taken_through_another_open_file_description_refuses() {
    let dir = tempfile::tempdir().unwrap();
    drop(snapshots(dir.path()).unwrap());
    let held = std::fs::File::open(dir.path().join(selfheal::snapshot::LOCK_FILE)).unwrap();
    held.lock().unwrap();
    match snapshots(dir.path()) {
        Err(Error::DirectoryLocked { owner, .. }) => assert_eq!(owner, "snapshot manager"),
        other => panic!("expected DirectoryLocked, got {other:?}"),
    }
    held.unlock().unwrap();
    snapshots(dir.path()).unwrap();
}

/// Spawns this test binary to hold `dir` as a `kind` owner; returns once it
/// holds it, with the rest of its output. Closing the child's stdin lets it go.
fn child_holding(
    dir: &Path,
    kind: &str,
) -> (
    std::process::Child,
    impl Iterator<Item = std::io::Result<String>>,
) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_helper_holds_a_directory",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLD_DIR, dir)
        .env(HOLD_KIND, kind)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in out.by_ref() {
        // The harness may print the test's name on the same line first.
        if line.unwrap().trim_end().ends_with("holding") {
            return (child, out);
        }
    }
    let status = child.wait();
    panic!(
        "the child process ended ({status:?}) before it held {}",
        dir.display()
    );
}

#[test]
fn a_directory_held_by_a_child_process_is_refused_until_it_exits() {
    for kind in ["snapshot", "journal"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, rest) = child_holding(dir.path(), kind);
        let pid = Some(child.id());
        match kind {
            "snapshot" => refused(snapshots(dir.path()), dir.path(), "snapshot manager", pid),
            _ => refused(rollback(dir.path()), dir.path(), "undo journal", pid),
        }
        drop(child.stdin.take());
        let rest: Vec<String> = rest.map(Result::unwrap).collect();
        assert!(child.wait().unwrap().success(), "{rest:?}");
        match kind {
            "snapshot" => drop(snapshots(dir.path()).unwrap()),
            _ => drop(rollback(dir.path()).unwrap()),
        }
    }
}

/// Not a test of its own: the body of the child process of
/// `a_directory_held_by_a_child_process_is_refused_until_it_exits`, run only
/// when that test sets the environment; otherwise it returns at once.
#[test]
fn child_process_helper_holds_a_directory() {
    let (Some(dir), Some(kind)) = (std::env::var_os(HOLD_DIR), std::env::var_os(HOLD_KIND)) else {
        return;
    };
    let dir = Path::new(&dir);
    let _held: Box<dyn std::any::Any> = match kind.to_str() {
        Some("snapshot") => Box::new(snapshots(dir).unwrap()),
        _ => Box::new(rollback(dir).unwrap()),
    };
    println!("holding");
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line).unwrap() > 0 {}
}

#[test]
fn two_durable_checksum_tables_on_one_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sums");
    let first = selfheal::ChecksumTable::open(&path, PS).unwrap();
    refused(
        selfheal::ChecksumTable::open(&path, PS),
        dir.path(),
        "checksum table",
        Some(std::process::id()),
    );
    // Another table in the same directory is another owner.
    let other = selfheal::ChecksumTable::open(&dir.path().join("other"), PS).unwrap();
    drop(first);
    let again = selfheal::ChecksumTable::open(&path, PS).unwrap();
    drop((again, other));
}
