//! The `selfheal-undo-mark` thread: after an fsync that no further batch
//! follows within the idle delay, it writes and fsyncs a synced-through mark
//! so that the acknowledged records are covered by a durable mark (see the
//! [journal docs](super#power-loss-and-the-synced-through-mark)).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};

use super::writer::Core;

/// The running mark thread. Stopping it (or dropping the journal) closes
/// its stop channel and joins it.
pub(super) struct Marker {
    /// Dropping it stops the thread.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Marker {
    /// Starts the thread; `notices` receives one message per completed
    /// fsync (a bounded channel of one: notices merge).
    pub(super) fn start(core: Arc<Core>, notices: Receiver<()>, delay: Duration) -> Result<Marker> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("selfheal-undo-mark".into())
            .spawn(move || {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    mark_loop(&core, &notices, &stopped, delay);
                }));
                if run.is_err() {
                    let reason = "the undo journal's mark thread panicked".to_string();
                    tracing::error!(%reason);
                    core.poison(reason);
                }
            })
            .map_err(|e| Error::io("starting the selfheal-undo-mark thread", e))?;
        Ok(Marker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (for an fsync it is in).
    pub(super) fn stop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits for an fsync notice, then for `delay` without another one, then
/// writes the idle mark; ends when `stop` disconnects.
fn mark_loop(core: &Core, notices: &Receiver<()>, stop: &Receiver<()>, delay: Duration) {
    loop {
        crossbeam_channel::select! {
            recv(stop) -> _ => return,
            recv(notices) -> n => if n.is_err() { return },
        }
        loop {
            crossbeam_channel::select! {
                recv(stop) -> _ => return,
                recv(notices) -> n => if n.is_err() { return },
                recv(crossbeam_channel::after(delay)) -> _ => break,
            }
        }
        if let Err(e) = core.idle_mark() {
            tracing::warn!(error = %e, "undo journal: idle mark not written");
        }
    }
}
