//! The run marker: an exclusive lock on a data directory, and a small file
//! that tells the next start whether this run ended cleanly.
//!
//! [`RunMarker::open`] takes the directory's exclusive lock through
//! `<dir>/selfheal.lock` (the crate's one directory lock: `flock`, released
//! on drop and by the OS when the process dies, however it dies), reads `<dir>/selfheal.run` to produce a [`RunVerdict`] about the
//! previous run, and then records "running" for this one.
//! [`refresh`](RunMarker::refresh) rewrites the last-seen time (the watchdog
//! of [`CrashDetector`](super::CrashDetector) does this periodically);
//! [`stop`](RunMarker::stop) records a clean stop. Dropping a marker
//! without `stop` records nothing, so the next start reports a crash: a
//! drop during a panic's unwinding is not a clean shutdown.
//!
//! The lock file is never replaced (a lock on a file that gets renamed over
//! would lock nothing), while the marker file is replaced on every write with
//! the crate's crash-safe `atomic_write` and framed with magic `SHRM`.
//!
//! # Marker payload (version 1, little-endian, inside the `fsutil` frame)
//!
//! | offset | size | field                                                 |
//! |-------:|-----:|-------------------------------------------------------|
//! | 0      | 1    | state: 1 = running, 2 = clean shutdown                |
//! | 1      | 8    | run number (1 for the first run, +1 per open)         |
//! | 9      | 8    | start time, ms since the Unix epoch                   |
//! | 17     | 8    | last-seen time (or shutdown time), ms since the epoch |
//! | 25     | 4    | pid of the process that wrote it                      |
//!
//! Times are wall-clock (`SystemTime`), because they must mean something to
//! a later process; they are informational and never used for decisions.
//!
//! # A crash at each step
//!
//! | step                                 | what the next open sees                           |
//! |--------------------------------------|---------------------------------------------------|
//! | before the lock is taken             | the previous run's marker: its verdict again      |
//! | while writing "running" (tmp file)   | the previous marker; the stray `.tmp` is removed  |
//! | after "running" is written           | `Crashed`, last seen at start                     |
//! | between refreshes                    | `Crashed`, last seen at the latest refresh        |
//! | while writing "clean" (tmp file)     | `Crashed` (the rename had not happened)           |
//! | after "clean" is written             | `Clean`                                           |
//! | marker damaged on disk               | `Unknown` with the decoding error (treat as crash)|
//! | marker deleted, other state left     | `Unknown`: the directory was used before          |
//!
//! Only a directory that holds nothing at all (no lock file, no other
//! entry) gives [`RunVerdict::FirstRun`]: the lock file is created by the
//! first open and never removed, so a marker that is missing beside it was
//! lost, not never written.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::dirlock::DirLock;
use crate::error::{Error, Result};
use crate::fsutil::{self, atomic_write, decode_framed, encode_framed};

const MAGIC: [u8; 4] = *b"SHRM";
const VERSION: u32 = 1;
const PAYLOAD_LEN: usize = 29;
const STATE_RUNNING: u8 = 1;
const STATE_CLEAN: u8 = 2;

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "selfheal.lock";
/// Name of the marker file inside the data directory.
pub const MARKER_FILE: &str = "selfheal.run";

/// What the marker says about the previous run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunVerdict {
    /// No marker and no other state: this directory was never opened
    /// before. A missing marker in a directory that holds anything else
    /// (the lock file of an earlier run, a journal, snapshots) is
    /// [`Unknown`](Self::Unknown), never this.
    FirstRun,
    /// The previous run shut down cleanly.
    Clean {
        /// Its run number.
        run: u64,
        /// When it started, ms since the Unix epoch.
        started_unix_ms: u64,
        /// When it shut down, ms since the Unix epoch.
        stopped_unix_ms: u64,
    },
    /// The previous run did not shut down cleanly.
    Crashed {
        /// Its run number.
        run: u64,
        /// Its pid.
        pid: u32,
        /// When it started, ms since the Unix epoch.
        started_unix_ms: u64,
        /// When it was last known alive, ms since the Unix epoch.
        last_seen_unix_ms: u64,
    },
    /// The marker is damaged, so nothing is known; treat it as a crash.
    Unknown {
        /// Why the marker could not be read.
        reason: String,
    },
}

impl fmt::Display for RunVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunVerdict::FirstRun => f.write_str("first run in this directory"),
            RunVerdict::Clean {
                run,
                stopped_unix_ms,
                ..
            } => write!(f, "run {run} stopped cleanly at {stopped_unix_ms} ms (Unix)"),
            RunVerdict::Crashed {
                run,
                pid,
                last_seen_unix_ms,
                ..
            } => write!(
                f,
                "run {run} (pid {pid}) did not stop cleanly; last seen alive at {last_seen_unix_ms} ms (Unix)"
            ),
            RunVerdict::Unknown { reason } => {
                write!(f, "the previous run cannot be told apart from a crash: {reason}")
            }
        }
    }
}

impl RunVerdict {
    /// Whether the previous run must be assumed to have crashed
    /// ([`Crashed`](Self::Crashed) or [`Unknown`](Self::Unknown)).
    #[must_use]
    pub fn is_crash(&self) -> bool {
        matches!(
            self,
            RunVerdict::Crashed { .. } | RunVerdict::Unknown { .. }
        )
    }
}

/// The marker file's contents (layout in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// 1 = running, 2 = stopped cleanly.
    pub state: u8,
    /// The run's number (1 for the first run in the directory).
    pub run: u64,
    /// When the run started, Unix milliseconds.
    pub started_unix_ms: u64,
    /// When the run was last seen alive, Unix milliseconds.
    pub last_seen_unix_ms: u64,
    /// The process id of the run.
    pub pid: u32,
}

impl Record {
    /// The marker file's bytes (frame included).
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(PAYLOAD_LEN);
        p.push(self.state);
        p.extend_from_slice(&self.run.to_le_bytes());
        p.extend_from_slice(&self.started_unix_ms.to_le_bytes());
        p.extend_from_slice(&self.last_seen_unix_ms.to_le_bytes());
        p.extend_from_slice(&self.pid.to_le_bytes());
        encode_framed(MAGIC, VERSION, &p)
    }

    /// Decodes a marker file's bytes read from `path` (named in errors).
    ///
    /// # Errors
    /// [`Error::CorruptFile`] or [`Error::UnsupportedVersion`] for anything
    /// but a well-formed marker.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Record> {
        let (_, p) = decode_framed(path, bytes, MAGIC, VERSION)?;
        let off = fsutil::FRAME_HEADER_LEN as u64;
        if p.len() != PAYLOAD_LEN {
            return Err(Error::corrupt_file(
                path,
                off,
                format!("payload is {} bytes, expected {PAYLOAD_LEN}", p.len()),
            ));
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&p[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let mut pid = [0u8; 4];
        pid.copy_from_slice(&p[25..29]);
        let r = Record {
            state: p[0],
            run: u64_at(1),
            started_unix_ms: u64_at(9),
            last_seen_unix_ms: u64_at(17),
            pid: u32::from_le_bytes(pid),
        };
        if r.state != STATE_RUNNING && r.state != STATE_CLEAN {
            return Err(Error::corrupt_file(
                path,
                off,
                format!(
                    "state byte {} is neither running (1) nor clean (2)",
                    r.state
                ),
            ));
        }
        Ok(r)
    }

    fn verdict(&self) -> RunVerdict {
        if self.state == STATE_CLEAN {
            RunVerdict::Clean {
                run: self.run,
                started_unix_ms: self.started_unix_ms,
                stopped_unix_ms: self.last_seen_unix_ms,
            }
        } else {
            RunVerdict::Crashed {
                run: self.run,
                pid: self.pid,
                started_unix_ms: self.started_unix_ms,
                last_seen_unix_ms: self.last_seen_unix_ms,
            }
        }
    }
}

/// The name of some entry of `dir` other than the marker's own temporary
/// file, if there is one: evidence that the directory was used before.
fn earlier_state(dir: &Path) -> Result<Option<String>> {
    let tmp = fsutil::tmp_path(&dir.join(MARKER_FILE));
    let tmp_name = tmp.file_name().unwrap_or_default();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("listing directory {}", dir.display()), e))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| Error::io(format!("listing directory {}", dir.display()), e))?;
        let name = entry.file_name();
        if name != tmp_name {
            return Ok(Some(format!("`{}`", name.to_string_lossy())));
        }
    }
    Ok(None)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An open run marker holding the data directory's lock. See the module docs.
///
/// ```
/// use selfheal::crash::{RunMarker, RunVerdict};
/// let dir = tempfile::tempdir()?;
/// let (marker, verdict) = RunMarker::open(dir.path())?;
/// assert_eq!(verdict, RunVerdict::FirstRun);
/// marker.stop()?;
/// let (marker, verdict) = RunMarker::open(dir.path())?;
/// assert!(matches!(verdict, RunVerdict::Clean { run: 1, .. }));
/// drop(marker); // no close: the next open reports a crash
/// let (_marker, verdict) = RunMarker::open(dir.path())?;
/// assert!(verdict.is_crash());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RunMarker {
    // Held for its lock; released on drop (and by the OS if the process dies).
    _lock: DirLock,
    path: PathBuf,
    record: Record,
    verdict: RunVerdict,
}

impl RunMarker {
    /// Locks `dir` (creating it if needed), reads the previous run's verdict
    /// and records this run as running.
    ///
    /// # Errors
    /// [`Error::DirectoryLocked`] when another opener (in this or another
    /// process) holds the directory; [`Error::Io`] when the directory, lock
    /// file or marker cannot be created, read or written. A damaged marker is
    /// not an error: it gives [`RunVerdict::Unknown`].
    pub fn open(dir: &Path) -> Result<(RunMarker, RunVerdict)> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating directory {}", dir.display()), e))?;
        // Read before the lock file is created: whether anything was here.
        let earlier_state = earlier_state(dir)?;
        let lock = DirLock::acquire(
            dir,
            LOCK_FILE,
            "run marker",
            "stop the other instance (or drop the other crash detector of this process) first, or use another data directory",
        )?;
        let path = dir.join(MARKER_FILE);
        // A crash during a previous write may have left its temporary file.
        let _ = std::fs::remove_file(fsutil::tmp_path(&path));
        let (verdict, last_run) = match fsutil::read_optional(&path)? {
            None => match earlier_state {
                None => (RunVerdict::FirstRun, 0),
                Some(found) => (
                    RunVerdict::Unknown {
                        reason: format!(
                            "the run marker {} is missing but the directory holds {found} from an earlier run; treat the previous run as crashed",
                            path.display()
                        ),
                    },
                    0,
                ),
            },
            Some(bytes) => match Record::decode(&path, &bytes) {
                Ok(r) => (r.verdict(), r.run),
                Err(e) => (
                    RunVerdict::Unknown {
                        reason: e.to_string(),
                    },
                    0,
                ),
            },
        };
        let now = unix_ms();
        let record = Record {
            state: STATE_RUNNING,
            run: last_run.wrapping_add(1).max(1),
            started_unix_ms: now,
            last_seen_unix_ms: now,
            pid: std::process::id(),
        };
        atomic_write(&path, &record.encode())?;
        if verdict.is_crash() {
            tracing::warn!(dir = %dir.display(), ?verdict, "previous run did not shut down cleanly");
        }
        let marker = RunMarker {
            _lock: lock,
            path,
            record,
            verdict: verdict.clone(),
        };
        Ok((marker, verdict))
    }

    /// This run's number (1 for the first run of the directory).
    #[must_use]
    pub fn run(&self) -> u64 {
        self.record.run
    }

    /// The path of the marker file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that this run is alive now (crash-safely replaces the marker).
    ///
    /// # Errors
    /// [`Error::Io`]; the previous marker is then intact.
    pub fn refresh(&mut self) -> Result<()> {
        let mut r = self.record;
        r.last_seen_unix_ms = unix_ms().max(r.last_seen_unix_ms);
        atomic_write(&self.path, &r.encode())?;
        self.record = r;
        Ok(())
    }

    /// The verdict on the previous run, as [`open`](Self::open) returned it.
    #[must_use]
    pub fn verdict(&self) -> &RunVerdict {
        &self.verdict
    }

    /// Records a clean stop and releases the lock.
    ///
    /// # Errors
    /// [`Error::Io`]; the marker then still says "running", so the next start
    /// reports a crash (the safe direction).
    pub fn stop(self) -> Result<()> {
        let mut r = self.record;
        r.state = STATE_CLEAN;
        r.last_seen_unix_ms = unix_ms().max(r.last_seen_unix_ms);
        atomic_write(&self.path, &r.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn record_round_trips() {
        let r = Record {
            state: STATE_RUNNING,
            run: 9,
            started_unix_ms: 1,
            last_seen_unix_ms: 2,
            pid: 77,
        };
        assert_eq!(Record::decode(Path::new("m"), &r.encode()).unwrap(), r);
    }

    #[test]
    fn bad_state_byte_is_corrupt() {
        let mut p = vec![3u8];
        p.extend_from_slice(&[0; 28]);
        let b = encode_framed(MAGIC, VERSION, &p);
        assert!(matches!(
            Record::decode(Path::new("m"), &b),
            Err(Error::CorruptFile { .. })
        ));
        let short = encode_framed(MAGIC, VERSION, &[1u8; 5]);
        assert!(matches!(
            Record::decode(Path::new("m"), &short),
            Err(Error::CorruptFile { .. })
        ));
    }

    #[test]
    fn refresh_moves_last_seen_and_survives_as_crash_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = RunMarker::open(dir.path()).unwrap();
        let before = m.record.last_seen_unix_ms;
        m.refresh().unwrap();
        let seen = m.record.last_seen_unix_ms;
        assert!(seen >= before);
        drop(m);
        let (_m, v) = RunMarker::open(dir.path()).unwrap();
        match v {
            RunVerdict::Crashed {
                last_seen_unix_ms,
                run,
                pid,
                ..
            } => {
                assert_eq!((last_seen_unix_ms, run, pid), (seen, 1, std::process::id()));
            }
            other => panic!("expected Crashed, got {other:?}"),
        }
    }

    #[test]
    fn a_deleted_marker_beside_earlier_state_is_unknown_never_first_run() {
        let dir = tempfile::tempdir().unwrap();
        let (m, v) = RunMarker::open(dir.path()).unwrap();
        assert_eq!(v, RunVerdict::FirstRun);
        drop(m); // a crash
        std::fs::remove_file(dir.path().join(MARKER_FILE)).unwrap();
        let (m, v) = RunMarker::open(dir.path()).unwrap();
        assert!(
            matches!(&v, RunVerdict::Unknown { reason } if reason.contains(LOCK_FILE)),
            "{v:?}"
        );
        assert!(v.is_crash());
        m.stop().unwrap();

        // Other state without a lock file (a journal left by a host that
        // used the directory before) counts too.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("undo-0001"), b"x").unwrap();
        let (_m, v) = RunMarker::open(other.path()).unwrap();
        assert!(v.is_crash(), "{v:?}");
    }

    proptest! {
        #[test]
        fn record_codec_round_trips(state in 1u8..=2, run in any::<u64>(), s in any::<u64>(), l in any::<u64>(), pid in any::<u32>()) {
            let r = Record { state, run, started_unix_ms: s, last_seen_unix_ms: l, pid };
            prop_assert_eq!(Record::decode(Path::new("m"), &r.encode()).unwrap(), r);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Record::decode(Path::new("m"), &bytes);
        }

        #[test]
        fn any_damage_is_detected(flip in 0usize..(fsutil::FRAME_HEADER_LEN + PAYLOAD_LEN) * 8) {
            let r = Record { state: 1, run: 3, started_unix_ms: 4, last_seen_unix_ms: 5, pid: 6 };
            let mut b = r.encode();
            b[flip / 8] ^= 1 << (flip % 8);
            prop_assert!(Record::decode(Path::new("m"), &b).is_err());
        }
    }
}
