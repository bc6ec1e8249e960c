//! The one module with `unsafe`: a read-only memory map of a store file, used
//! to scan pages without copying them, and the lock that keeps every access
//! to the map inside the file.
//!
//! # Why this is sound, and the one assumption it rests on
//!
//! `memmap2::Mmap::map` is `unsafe` because the mapped file may change or
//! shrink underneath the mapping; touching a mapped byte past the end of the
//! file faults (SIGBUS).
//!
//! 1. **Shrinking is ordered against every access.** [`ScanMap`] owns the
//!    map and a read-write lock, its *gate*. The map is only read inside
//!    [`ScanMap::with_map`], which holds the gate shared from before it reads
//!    the mapped length (given by the store from its page count, read under
//!    the same hold) until the borrowed slice is gone: the slice is passed to
//!    a closure and cannot escape it. The owning
//!    [`FileStore`](super::FileStore) truncates its file only in `resize`,
//!    while holding the gate exclusively ([`ScanMap::resizing`]), which also
//!    drops the cached map, so a map longer than the file is never used
//!    again. Hence no mapped byte is read while the file is shorter than the
//!    map's slice. Growing (`grow`, `resize` up) takes the gate exclusively
//!    too, and a map is never longer than the length it was made for. A host
//!    that truncates the file from outside while the store is open breaks
//!    this contract; the store documents that, and the access would then
//!    fault.
//! 2. **Concurrent writes: an assumption, not a proof.** Other threads may
//!    `pwrite` into the same file while a page is visited, so the bytes
//!    behind the `&[u8]` handed to the visitor can change during the call.
//!    Rust's memory model gives no meaning to memory that changes behind a
//!    shared reference; like every reader of a shared file mapping, this
//!    module assumes that bytes written by the kernel into the page cache
//!    are simply observed, old or new, by plain loads. The reference never
//!    outlives one [`ScanMap::with_map`] call and is only read by the
//!    checksum. A page seen half-written is torn-page damage: it fails
//!    verification, and the scrubber re-reads a failing page through `pread`
//!    under the page's write lock before it reports it, so a torn view is
//!    never reported as corruption. A host that does not accept the
//!    assumption leaves the mmap scan off, which is the default.
//!
//! # Lock order and progress
//!
//! Each `pread` and `pwrite` of the store holds the gate shared too, so that
//! a write can never extend a file that a resize just shortened. They take
//! it with `read_recursive`, which does not queue behind a resizer that is
//! itself waiting: a host writer may hold one of the detector's page locks
//! while a scan's visitor (which holds the gate) waits for that lock, so a
//! writer queued behind a waiting resizer would deadlock. A scan batch that
//! is not nested in another scan on the same thread takes the gate fairly
//! (`read`): it waits for a waiting resizer, so scans running back to back
//! cannot starve a resize; it holds no page lock while it waits. A nested
//! one takes it recursively, since waiting for the resizer that waits for
//! this thread's outer batch would never end. A resize therefore waits for
//! the scan batches in flight and for a moment with no `pread`/`pwrite` in
//! flight.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::fs::File;
use std::sync::Arc;

use memmap2::{Advice, Mmap, MmapOptions};
use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{Error, Result};

thread_local! {
    /// How many `with_map` calls this thread is inside (of any store).
    static SCAN_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Leaves one level of `SCAN_DEPTH`, also when the visitor panics.
struct DepthGuard;

impl Drop for DepthGuard {
    fn drop(&mut self) {
        SCAN_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// A store file's scan map and the gate that orders accesses against resizes.
#[derive(Debug, Default)]
pub(crate) struct ScanMap {
    gate: RwLock<()>,
    cached: Mutex<Option<Arc<Mmap>>>,
}

impl ScanMap {
    /// A shared hold for one `pread`/`pwrite` (see the lock-order notes).
    pub(crate) fn io(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read_recursive()
    }

    /// The exclusive hold under which the file's length may change. Drops
    /// the cached map: the next scan maps the new length.
    pub(crate) fn resizing(&self) -> RwLockWriteGuard<'_, ()> {
        let g = self.gate.write();
        *self.cached.lock() = None;
        g
    }

    /// Holds the gate shared, asks `len` for the file's current length in
    /// bytes (the caller reads it under this hold), maps that much of `file`
    /// read-only (reusing the cached map when its length matches) and calls
    /// `f` with the mapped bytes. The borrow cannot escape `f`.
    ///
    /// # Errors
    /// [`Error::Io`] when the map cannot be made; an empty file has no map
    /// and gives `f` an empty slice.
    pub(crate) fn with_map<R>(
        &self,
        file: &File,
        context: &str,
        len: impl FnOnce() -> usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let _shared = if SCAN_DEPTH.with(Cell::get) == 0 {
            self.gate.read()
        } else {
            self.gate.read_recursive()
        };
        SCAN_DEPTH.with(|d| d.set(d.get() + 1));
        let _depth = DepthGuard;
        let len = len();
        if len == 0 {
            return Ok(f(&[]));
        }
        let map = {
            let mut slot = self.cached.lock();
            match slot.as_ref().filter(|m| m.len() == len) {
                Some(m) => m.clone(),
                None => {
                    // SAFETY: see the module docs: the gate is held shared
                    // until the slice handed to `f` is gone, the file is not
                    // shortened below `len` while it is held, and mapped
                    // bytes are only read.
                    let m = unsafe { MmapOptions::new().len(len).map(file) }
                        .map_err(|e| Error::io(format!("mapping {context}"), e))?;
                    // Advice is a hint; failing to give it changes nothing but speed.
                    let _ = m.advise(Advice::Sequential);
                    let m = Arc::new(m);
                    *slot = Some(m.clone());
                    m
                }
            }
        };
        debug_assert_eq!(map.len(), len);
        Ok(f(&map[..len]))
    }
}
