//! The one module with `unsafe`: a read-only memory map of a store file, used
//! to scan pages without copying them.
//!
//! # Why this is sound, and the one assumption it rests on
//!
//! `memmap2::Mmap::map` is `unsafe` because the mapped file may change or
//! shrink underneath the mapping.
//!
//! 1. **No shrinking.** The map is made by [`FileStore`](super::FileStore),
//!    which owns the file handle, never truncates the file (growing is
//!    checked against overflow, so it cannot wrap into a shrink) and maps at
//!    most the length it had when the map was made. A host that truncates
//!    the file from outside while the store is open breaks this contract; the
//!    store documents that, and the access would then fault (SIGBUS).
//! 2. **Concurrent writes: an assumption, not a proof.** Other threads may
//!    `pwrite` into the same file while a page is visited, so the bytes
//!    behind the `&[u8]` handed to the visitor can change during the call.
//!    Rust's memory model gives no meaning to memory that changes behind a
//!    shared reference; like every reader of a shared file mapping, this
//!    module assumes that bytes written by the kernel into the page cache
//!    are simply observed, old or new, by plain loads. The reference never
//!    outlives one [`MappedFile::visit`] call and is only read by the
//!    checksum. A page seen half-written is torn-page damage: it fails
//!    verification, and the scrubber re-reads a failing page through `pread`
//!    under the page's write lock before it reports it, so a torn view is
//!    never reported as corruption. A host that does not accept the
//!    assumption leaves the mmap scan off, which is the default.

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
