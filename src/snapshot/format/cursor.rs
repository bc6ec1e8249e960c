//! A bounds-checked reader over untrusted bytes, shared by the snapshot
//! index and the manifest decoders.

use std::path::Path;

use crate::error::{Error, Result};

/// A bounds-checked reader over untrusted bytes that names the file offset
/// of whatever it finds wrong.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: u64,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(path: &'a Path, bytes: &'a [u8], base: u64) -> Self {
        Cursor {
            bytes,
            pos: 0,
            base,
            path,
        }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn err(&self, reason: impl Into<String>) -> Error {
        Error::corrupt_file(self.path, self.offset(), reason)
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(self.err(format!(
                "{what} needs {n} bytes but only {} remain",
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(le32(self.take(4, what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(le64(self.take(8, what)?))
    }

    /// Fails unless `count` items of `item_len` bytes fit in what remains, so
    /// that no count read from the file drives an allocation by itself.
    pub(crate) fn check_fits(&self, count: u64, item_len: usize, what: &str) -> Result<usize> {
        match count.checked_mul(item_len as u64) {
            Some(n) if n <= self.remaining() as u64 => Ok(count as usize),
            _ => Err(self.err(format!(
                "{count} {what} do not fit in the {} remaining bytes",
                self.remaining()
            ))),
        }
    }
}

pub(super) fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

pub(super) fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}
