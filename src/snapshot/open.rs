//! Opening a snapshot directory: creating it, checking that it can be
//! written, loading the manifest — or rebuilding it from the snapshot files
//! when it is damaged or missing — and clearing what a crash left behind
//! (the table is in the [`snapshot`](super) module docs).

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use super::dirty::DirtyPages;
use super::format::SnapshotReader;
use super::inner::{Head, Inner, State};
use super::manifest::{snapshot_file_name, Manifest, MANIFEST_NAME};
use super::progress::Progress;
use super::{SnapshotConfig, SnapshotInfo, StateSnapshotManager};
use crate::dirlock::DirLock;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::types::{FailureSink, DEFAULT_FAILURE_CAPACITY};

fn dir_unusable(dir: &Path, reason: impl fmt::Display) -> Error {
    Error::SnapshotDirUnusable {
        path: dir.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Appended to the name of a snapshot file that a manifest rebuild left out.
const ORPHAN_SUFFIX: &str = ".orphan";

/// Whether `name` is one of the library's snapshot file names.
fn is_snapshot_name(name: &str) -> bool {
    name.len() == 25
        && name.starts_with("snap-")
        && name.ends_with(".shs")
        && name[5..21].bytes().all(|b| b.is_ascii_hexdigit())
}

fn has_snapshot_files(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| is_snapshot_name(&e.file_name().to_string_lossy()))
    })
}

/// A manifest listing every snapshot file in `dir` whose header, footer and
/// index check and whose chain is complete. Files that do not check
/// ([`Error::CorruptFile`], [`Error::UnsupportedVersion`], or a name that
/// does not match the id inside) are left out (and renamed `….orphan` by
/// the caller).
///
/// # Errors
/// [`Error::PageSizeMismatch`] when a valid file has another page size
/// (the directory belongs to another store: nothing is deleted);
/// [`Error::SnapshotDirUnusable`] when the directory cannot be listed; any
/// other error opening a snapshot file (for example [`Error::Io`]), since a
/// file that cannot be read now may be intact.
fn rebuild_manifest(dir: &Path, page_size: usize) -> Result<Manifest> {
    let rd = fs::read_dir(dir).map_err(|e| dir_unusable(dir, format!("cannot list it: {e}")))?;
    let mut found: Vec<SnapshotInfo> = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_snapshot_name(&name) {
            continue;
        }
        let r = match SnapshotReader::open_file(&e.path()) {
            Ok(r) if snapshot_file_name(r.header.id) == name => r,
            Ok(_) => {
                tracing::warn!(file = %name, "snapshot file's name does not match its id; left out");
                continue;
            }
            Err(err @ (Error::CorruptFile { .. } | Error::UnsupportedVersion { .. })) => {
                tracing::warn!(file = %name, %err, "snapshot file does not check; left out");
                continue;
            }
            Err(err) => return Err(err),
        };
        if r.header.page_size != page_size {
            return Err(Error::PageSizeMismatch {
                what: format!(
                    "snapshot file {} (the directory's {MANIFEST_NAME} is being rebuilt; open the directory with the page size its snapshots were taken with, or give this store another directory)",
                    e.path().display()
                ),
                expected: page_size,
                actual: r.header.page_size,
            });
        }
        let file_bytes = e.metadata().map_or(0, |m| m.len());
        found.push(SnapshotInfo {
            id: r.header.id,
            parent: r.header.parent,
            lsn: r.header.lsn,
            created_unix_ms: r.header.created_unix_ms,
            page_count: r.header.page_count,
            stored_pages: r.index.stored_pages(r.header.page_count),
            file_bytes,
            file_name: name,
        });
    }
    found.sort_by_key(|e| e.id);
    let mut m = Manifest::new(page_size);
    for e in found {
        if e.parent.is_none_or(|p| m.get(p).is_some()) {
            m.next_id = e.id.checked_add(1).ok_or_else(|| {
                Error::corrupt_file(dir.join(&e.file_name), 8, "snapshot id is u64::MAX")
            })?;
            m.entries.push(e);
        }
    }
    // The restore point was in the damaged manifest: the store may have
    // been restored to any of these snapshots, or be mid-restore, so none
    // serves a page until the next snapshot or restore.
    m.head = m.entries.last().map(|e| e.id);
    m.head_unknown = true;
    Ok(m)
}

/// The lock file of a snapshot directory, held by its one manager (see the
/// [`snapshot`](super) module docs). It stays when the manager is dropped.
pub const LOCK_FILE: &str = "snapshots.lock";

impl StateSnapshotManager {
    /// Opens the directory of a validated configuration (see the module docs).
    pub(super) fn open(cfg: SnapshotConfig) -> Result<Self> {
        let dir = cfg.dir;
        {
            let mut b = fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(&dir)
                .map_err(|e| dir_unusable(&dir, format!("cannot create it: {e}")))?;
        }
        // Before anything is read or cleaned up: another owner's files are
        // not leftovers.
        let lock = DirLock::acquire(
            &dir,
            LOCK_FILE,
            "snapshot manager",
            "drop the other StateSnapshotManager on this directory (with its page sources and periodic snapshots) or stop its process first, or use another directory",
        )
        .map_err(|e| match e {
            Error::Io { source, .. } => {
                dir_unusable(&dir, format!("cannot create its lock file: {source}"))
            }
            other => other,
        })?;
        let probe = dir.join(".selfheal-probe.tmp");
        fsutil::open_regular(
            fsutil::private_create_options()
                .write(true)
                .create(true)
                .truncate(true),
            &probe,
            "creating",
        )
        .map_err(|e| dir_unusable(&dir, format!("cannot create files in it: {e}")))?;
        let _ = fs::remove_file(&probe);
        let mpath = dir.join(MANIFEST_NAME);
        let mut rebuilt = None;
        let manifest = match fsutil::read_optional(&mpath)? {
            Some(bytes) => match Manifest::decode(&mpath, &bytes) {
                Ok(m) => m,
                Err(e @ Error::CorruptFile { .. }) => {
                    rebuilt = Some(e.to_string());
                    rebuild_manifest(&dir, cfg.page_size)?
                }
                Err(e) => return Err(e),
            },
            None if has_snapshot_files(&dir) => {
                rebuilt = Some("the manifest is missing".to_owned());
                rebuild_manifest(&dir, cfg.page_size)?
            }
            None => Manifest::new(cfg.page_size),
        };
        if let Some(why) = &rebuilt {
            tracing::warn!(reason = %why, snapshots = manifest.entries.len(), "rebuilt the snapshot manifest from the snapshot files");
            fsutil::atomic_write(&mpath, &manifest.encode())?;
        }
        if manifest.page_size != cfg.page_size {
            return Err(Error::PageSizeMismatch {
                what: format!(
                    "snapshot directory {} (its {MANIFEST_NAME} lists snapshots of {}-byte pages; open it with that page size, or give this store another directory)",
                    dir.display(),
                    manifest.page_size
                ),
                expected: cfg.page_size,
                actual: manifest.page_size,
            });
        }
        // Leftovers of a crash: temporary files and unlisted snapshot files.
        // A manifest rebuilt in this open may have left out a file by
        // mistake, so unlisted snapshot files are then kept, renamed.
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let stray_tmp = name == format!("{MANIFEST_NAME}.tmp")
                    || name.strip_suffix(".tmp").is_some_and(is_snapshot_name);
                let unlisted = is_snapshot_name(&name)
                    && !manifest.entries.iter().any(|m| m.file_name == name);
                if unlisted && rebuilt.is_some() {
                    let to = dir.join(format!("{name}{ORPHAN_SUFFIX}"));
                    tracing::warn!(file = %name, "snapshot file left out of the rebuilt manifest; renamed to {name}{ORPHAN_SUFFIX}");
                    if let Err(err) = fs::rename(e.path(), &to) {
                        tracing::warn!(file = %name, %err, "cannot rename an unlisted snapshot file; left as it is");
                    }
                } else if stray_tmp || unlisted {
                    tracing::info!(file = %name, "removing leftover of an interrupted snapshot");
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let head_unknown = manifest.head_unknown;
        let head = match manifest.head.and_then(|h| manifest.get(h)) {
            Some(e) => Some(Head {
                id: e.id,
                lsn: e.lsn,
                page_count: e.page_count,
                chain: manifest.chain(e.id)?,
            }),
            None => None,
        };
        let clock = cfg.clock;
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let inner = Inner {
            chunk_pages: (cfg.chunk_bytes / cfg.page_size).max(1),
            page_size: cfg.page_size,
            threads: cfg.threads,
            sync_timeout: cfg.sync_timeout,
            #[cfg(test)]
            early_sync: Mutex::new(None),
            max_chain_len: cfg.max_chain_len,
            retention: cfg.retention,
            precheck_restore: cfg.precheck_restore,
            listed: RwLock::new(manifest.entries.clone()),
            state: Mutex::new(State {
                manifest,
                head_fps: None,
            }),
            head: RwLock::new(head),
            dirty: DirtyPages::default(),
            head_unknown: AtomicBool::new(head_unknown),
            readers: Mutex::new(HashMap::new()),
            progress: Progress::new(clock.clone()),
            poisoned: Mutex::new(None),
            manifest_unsynced: AtomicBool::new(false),
            rebuilt,
            crash_at: AtomicU32::new(0),
            #[cfg(any(test, feature = "testing"))]
            fail_retention: AtomicBool::new(false),
            #[cfg(any(test, feature = "testing"))]
            io_fault: Mutex::new(None),
            wall_origin_unix_ms: wall_ms.saturating_sub(clock.now_ns() / 1_000_000),
            clock,
            sink: cfg
                .failure_sink
                .unwrap_or_else(|| FailureSink::new(DEFAULT_FAILURE_CAPACITY)),
            _lock: lock,
            dir,
        };
        Ok(StateSnapshotManager {
            inner: Arc::new(inner),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_recognised() {
        assert!(is_snapshot_name(&snapshot_file_name(42)));
        assert!(!is_snapshot_name("MANIFEST"));
        assert!(!is_snapshot_name("snap-zz.shs"));
        assert!(!is_snapshot_name(LOCK_FILE));
    }
}
