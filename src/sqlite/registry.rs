//! The open database files of one VFS by path: the connections of one file
//! share one [`Database`](super::database::Database), opened by the first
//! and closed by the last.
//!
//! # Contract
//! - One file, one open: a path is opened only while no open of it is
//!   live, so the connections of a file share its sidecar table.
//! - A close runs outside the map's lock: closing a file (writing its last
//!   pages, stopping its recovery manager, which may take up to its bounded
//!   stop) holds back no open of another file. An open of the same path
//!   waits until the close has finished, so it never finds the file's
//!   sidecar table or manager directory still held by the closing one.
//! - Opens run under the map's lock (one at a time), as do lookups.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};

use crate::error::Result;

/// Open files of type `T` by path.
pub(super) struct Registry<T> {
    state: Mutex<State<T>>,
    /// Signalled when a close has finished.
    closed: Condvar,
}

struct State<T> {
    /// Live opens by the path SQLite named.
    open: HashMap<PathBuf, Weak<T>>,
    /// Paths whose last hold is being dropped (outside the lock).
    closing: HashSet<PathBuf>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            state: Mutex::new(State {
                open: HashMap::new(),
                closing: HashSet::new(),
            }),
            closed: Condvar::new(),
        }
    }
}

impl<T> Registry<T> {
    /// The live open of `path`, or a new one made by `open` (after any
    /// close of `path` in progress has finished); `true` when it is new.
    ///
    /// # Errors
    /// `open`'s error.
    pub(super) fn get_or_open(
        &self,
        path: &Path,
        open: impl FnOnce() -> Result<T>,
    ) -> Result<(Arc<T>, bool)> {
        let mut st = self.state.lock();
        loop {
            if let Some(t) = st.open.get(path).and_then(Weak::upgrade) {
                return Ok((t, false));
            }
            if !st.closing.contains(path) {
                break;
            }
            self.closed.wait(&mut st);
        }
        st.open.retain(|_, w| w.strong_count() > 0);
        let t = Arc::new(open()?);
        st.open.insert(path.to_path_buf(), Arc::downgrade(&t));
        Ok((t, true))
    }

    /// The live open of `path` (as SQLite named it, or any path to the
    /// same file); none while it closes.
    pub(super) fn find(&self, path: &Path) -> Option<Arc<T>> {
        let st = self.state.lock();
        if let Some(t) = st.open.get(path).and_then(Weak::upgrade) {
            return Some(t);
        }
        let canonical = std::fs::canonicalize(path).ok()?;
        st.open
            .iter()
            .filter(|(p, _)| std::fs::canonicalize(p).ok().as_deref() == Some(&canonical))
            .find_map(|(_, w)| w.upgrade())
    }

    /// Drops a hold on `t`, the open of `path`. The last hold closes it
    /// (drops `t`) outside the lock, `path` marked closing meanwhile.
    pub(super) fn release(&self, path: &Path, t: Arc<T>) {
        let mut st = self.state.lock();
        // Holds are taken only under the lock, so a count of one here
        // cannot grow: this is the last hold.
        if Arc::strong_count(&t) > 1 {
            drop(t);
            return;
        }
        st.open.remove(path);
        st.open.retain(|_, w| w.strong_count() > 0);
        st.closing.insert(path.to_path_buf());
        drop(st);
        drop(t);
        let mut st = self.state.lock();
        st.closing.remove(path);
        drop(st);
        self.closed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::{bounded, Receiver, Sender};
    use std::time::Duration;

    /// An open whose close blocks until told to finish.
    struct SlowClose {
        started: Sender<()>,
        finish: Receiver<()>,
    }

    impl Drop for SlowClose {
        fn drop(&mut self) {
            let _ = self.started.send(());
            let _ = self.finish.recv_timeout(Duration::from_secs(30));
        }
    }

    #[test]
    fn a_slow_close_holds_back_only_opens_of_its_own_path() {
        let reg = Arc::new(Registry::<SlowClose>::default());
        let (started_tx, started) = bounded(4);
        let (finish, finish_rx) = bounded(4);
        let (a, new) = reg
            .get_or_open(Path::new("/db/a"), || {
                Ok(SlowClose {
                    started: started_tx.clone(),
                    finish: finish_rx.clone(),
                })
            })
            .unwrap();
        assert!(new);
        let (again, new) = reg
            .get_or_open(Path::new("/db/a"), || unreachable!("a is open"))
            .unwrap();
        assert!(!new);
        reg.release(Path::new("/db/a"), again);
        assert!(
            started.try_recv().is_err(),
            "a hold that was not the last closed"
        );

        let closer = {
            let reg = reg.clone();
            std::thread::spawn(move || reg.release(Path::new("/db/a"), a))
        };
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        // Another path opens while `a` closes.
        let (other_tx, other) = bounded(1);
        {
            let reg = reg.clone();
            let (s, f) = (started_tx.clone(), finish_rx.clone());
            std::thread::spawn(move || {
                let b = reg.get_or_open(Path::new("/db/b"), || {
                    Ok(SlowClose {
                        started: s,
                        finish: f,
                    })
                });
                let _ = other_tx.send(b.map(|(b, _)| std::mem::forget(b)).is_ok());
            });
        }
        assert_eq!(
            other.recv_timeout(Duration::from_secs(10)),
            Ok(true),
            "an open of another file waited for a close"
        );
        assert!(
            reg.find(Path::new("/db/a")).is_none(),
            "a closing file was found"
        );
        // The same path waits for the close.
        let (same_tx, same) = bounded(1);
        {
            let reg = reg.clone();
            let (s, f) = (started_tx.clone(), finish_rx.clone());
            std::thread::spawn(move || {
                let a = reg.get_or_open(Path::new("/db/a"), || {
                    Ok(SlowClose {
                        started: s,
                        finish: f,
                    })
                });
                let _ = same_tx.send(a.map(|(a, new)| {
                    std::mem::forget(a);
                    new
                }));
            });
        }
        assert!(
            same.recv_timeout(Duration::from_millis(200)).is_err(),
            "the same file opened while its close ran"
        );
        finish.send(()).unwrap();
        closer.join().unwrap();
        assert!(
            same.recv_timeout(Duration::from_secs(10)).unwrap().unwrap(),
            "reopened fresh after the close"
        );
    }
}
