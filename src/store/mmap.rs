//! The one module with `unsafe`: a read-only memory map of a store file, used
//! to scan pages without copying them.
//!
//! # Why this is sound
//!
//! `memmap2::Mmap::map` is `unsafe` because the mapped file may change or
//! shrink underneath the mapping. The invariants that make our use sound:
//!
//! 1. **No shrinking.** The map is made by [`FileStore`](super::FileStore),
//!    which owns the file handle, never truncates the file and maps at most
//!    the length it had when the map was made. A host that truncates the file
//!    from outside while the store is open breaks this contract (as it would
//!    for any engine) — the store documents that.
//! 2. **No long-lived references into changing memory.** Other threads may
//!    `pwrite` into the same file, which changes the mapped bytes. We never
//!    hand out a `&[u8]` that outlives one [`MappedFile::visit`] call, and the
//!    bytes are only read by the checksum. A page written concurrently may be
//!    seen torn; that is exactly the damage the checksum catches, and the
//!    scrubber re-reads a failing page through `pread` before it reports it,
//!    so a torn view is never reported as corruption.

#![allow(unsafe_code)]

use std::fs::File;

use memmap2::{Advice, Mmap, MmapOptions};

use crate::error::{Error, Result};

/// A read-only, sequential-advice map of the first `len` bytes of a file.
#[derive(Debug)]
pub(crate) struct MappedFile {
    map: Mmap,
}

impl MappedFile {
    /// Maps `len` bytes of `file` read-only.
    ///
    /// # Errors
    /// [`Error::Io`] when the map cannot be made.
    pub(crate) fn map(file: &File, len: usize, context: &str) -> Result<Self> {
        // SAFETY: see the module docs: the owning FileStore never truncates
        // the file below `len`, and mapped bytes are only read transiently.
        let map = unsafe { MmapOptions::new().len(len).map(file) }
            .map_err(|e| Error::io(format!("mapping {context}"), e))?;
        // Advice is a hint; failing to give it changes nothing but speed.
        let _ = map.advise(Advice::Sequential);
        Ok(MappedFile { map })
    }

    /// The mapped length.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Calls `f` with the mapped bytes `range`. The borrow cannot escape `f`.
    pub(crate) fn visit<R>(&self, range: std::ops::Range<usize>, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.map[range])
    }
}
