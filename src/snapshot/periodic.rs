//! Periodic snapshots on a named thread (`selfheal-snapshot`).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, select, Receiver, Sender};
use parking_lot::Mutex;

use super::{
    Consistency, SnapshotKind, SnapshotReport, SnapshotRequest, StateSnapshotManager, WriteGate,
};
use crate::error::{Error, Result};
use crate::host::PageStore;
use crate::types::Lsn;

const COMPONENT: &str = "periodic snapshots";

/// Configuration of [`PeriodicSnapshots`].
#[derive(Clone, Copy, Debug)]
pub struct PeriodicConfig {
    interval: Duration,
    kind: SnapshotKind,
}

impl PeriodicConfig {
    /// A snapshot every `interval` (must be nonzero; checked by
    /// [`PeriodicSnapshots::start`]).
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        PeriodicConfig {
            interval,
            kind: SnapshotKind::Auto,
        }
    }

    /// Which kind of snapshot each tick takes. Default [`SnapshotKind::Auto`].
    #[must_use]
    pub fn kind(mut self, kind: SnapshotKind) -> Self {
        self.kind = kind;
        self
    }
}

/// Counters of the periodic thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeriodicStats {
    /// Snapshots taken.
    pub taken: u64,
    /// Snapshot attempts that failed.
    pub failed: u64,
    /// The last failure's message.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Shared {
    taken: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
    dead: AtomicBool,
}

enum Cmd {
    Now(Sender<Result<SnapshotReport>>),
    Stop(Sender<()>),
}

/// A thread that takes a snapshot at every tick of a configured interval,
/// pausing the host's writes through its [`WriteGate`] for the duration.
/// Retention is applied after each snapshot (by the manager).
///
/// Dropping it stops and joins the thread; [`stop`](Self::stop) does the
/// same and reports a worker that died.
pub struct PeriodicSnapshots {
    tx: Sender<Cmd>,
    /// Disconnects when the worker thread ends (its sender is dropped, also
    /// on unwinding). A reply is awaited together with this, because a
    /// command queued just as the worker ended is never answered: the queue
    /// keeps it (and its reply sender) alive while `tx` exists.
    worker_ended: Receiver<()>,
    handle: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PeriodicSnapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeriodicSnapshots")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PeriodicSnapshots {
    /// Starts the thread. Each snapshot pauses `gate`, reads the LSN from
    /// `lsn`, and snapshots `store`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero interval; [`Error::Io`] when the
    /// thread cannot be spawned.
    pub fn start(
        manager: &StateSnapshotManager,
        store: Arc<dyn PageStore>,
        gate: Arc<WriteGate>,
        lsn: Arc<dyn Fn() -> Lsn + Send + Sync>,
        config: PeriodicConfig,
    ) -> Result<Self> {
        if config.interval.is_zero() {
            return Err(Error::config(
                "interval",
                "is 0; give a nonzero snapshot interval",
            ));
        }
        let (tx, rx) = bounded(4);
        let shared = Arc::new(Shared::default());
        let worker = Worker {
            manager: manager.shared(),
            store,
            gate,
            lsn,
            kind: config.kind,
            shared: shared.clone(),
        };
        let interval = config.interval;
        let (alive, worker_ended) = bounded::<()>(0);
        let handle = std::thread::Builder::new()
            .name("selfheal-snapshot".into())
            .spawn(move || {
                let _alive = alive;
                worker.run(&rx, interval);
            })
            .map_err(|e| Error::io("spawning the selfheal-snapshot thread", e))?;
        Ok(PeriodicSnapshots {
            tx,
            worker_ended,
            handle: Mutex::new(Some(handle)),
            shared,
        })
    }

    /// The thread's counters.
    #[must_use]
    pub fn stats(&self) -> PeriodicStats {
        PeriodicStats {
            taken: self.shared.taken.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            last_error: self.shared.last_error.lock().clone(),
        }
    }

    /// Takes a snapshot now, on the thread, and returns its result.
    ///
    /// Do not call it while holding a [`WriteTicket`](super::WriteTicket) of
    /// the gate the thread pauses: the snapshot waits for the pause, which
    /// waits for every ticket to be dropped, so the call would never return.
    ///
    /// # Errors
    /// The snapshot's error; [`Error::Stopped`] when the thread is stopped or died.
    pub fn snapshot_now(&self) -> Result<SnapshotReport> {
        let dead = || Error::Stopped {
            component: COMPONENT,
            reason: "the selfheal-snapshot thread is not running".into(),
        };
        if self.shared.dead.load(Ordering::Acquire) {
            return Err(dead());
        }
        let (rtx, rrx) = bounded(1);
        self.tx.send(Cmd::Now(rtx)).map_err(|_| dead())?;
        select! {
            recv(rrx) -> r => r.map_err(|_| dead())?,
            recv(self.worker_ended) -> _ => Err(dead()),
        }
    }

    /// Stops the thread and joins it.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the worker had panicked.
    pub fn stop(&self) -> Result<()> {
        let Some(handle) = self.handle.lock().take() else {
            return Ok(());
        };
        let (rtx, rrx) = bounded(1);
        if self.tx.send(Cmd::Stop(rtx)).is_ok() {
            select! {
                recv(rrx) -> _ => {}
                recv(self.worker_ended) -> _ => {}
            }
        }
        let joined = handle.join();
        if joined.is_err() || self.shared.dead.load(Ordering::Acquire) {
            return Err(Error::Stopped {
                component: COMPONENT,
                reason: "the selfheal-snapshot thread panicked".into(),
            });
        }
        Ok(())
    }
}

impl Drop for PeriodicSnapshots {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "periodic snapshots ended badly");
        }
    }
}

struct Worker {
    manager: StateSnapshotManager,
    store: Arc<dyn PageStore>,
    gate: Arc<WriteGate>,
    lsn: Arc<dyn Fn() -> Lsn + Send + Sync>,
    kind: SnapshotKind,
    shared: Arc<Shared>,
}

impl Worker {
    fn run(&self, rx: &Receiver<Cmd>, interval: Duration) {
        let ticker = crossbeam_channel::tick(interval);
        loop {
            select! {
                recv(rx) -> cmd => match cmd {
                    Ok(Cmd::Now(reply)) => {
                        let Some(r) = self.once() else { return };
                        let _ = reply.send(r);
                    }
                    Ok(Cmd::Stop(reply)) => {
                        let _ = reply.send(());
                        return;
                    }
                    Err(_) => return,
                },
                recv(ticker) -> _ => {
                    if self.once().is_none() {
                        return;
                    }
                }
            }
        }
    }

    /// One snapshot; `None` when it panicked (the thread then ends and the
    /// component is marked dead).
    fn once(&self) -> Option<Result<SnapshotReport>> {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let pause = self.gate.pause();
            let lsn = (self.lsn)();
            self.manager.take_snapshot(
                Consistency::Paused {
                    store: &*self.store,
                    pause: &pause,
                    lsn,
                },
                SnapshotRequest::new(self.kind),
            )
        }));
        match r {
            Ok(Ok(report)) => {
                self.shared.taken.fetch_add(1, Ordering::Relaxed);
                Some(Ok(report))
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "periodic snapshot failed");
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
                *self.shared.last_error.lock() = Some(e.to_string());
                Some(Err(e))
            }
            Err(_) => {
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
                *self.shared.last_error.lock() = Some("the snapshot panicked".into());
                self.shared.dead.store(true, Ordering::Release);
                None
            }
        }
    }
}
