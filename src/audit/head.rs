//! The audit log's durable head: the sequence number and hash of the newest
//! record known durable, kept in a small framed file (`audit.head`) that
//! every [`sync`](super::AuditLog::sync) replaces once the segment's fsync
//! has returned. Segments cannot vouch for their own end — deleting the
//! newest segment, or cutting it at a record boundary, leaves a log that
//! reads as whole — so the open compares what it loaded against the head:
//! records the head says were durable and that are gone are damage (a typed
//! [`Error::CorruptFile`] naming the segments' directory and the missing
//! range), as is a record at the head's number whose hash differs.
//!
//! # Contract
//! - The head never runs ahead of the durable records: it is written after
//!   the fsync that made them durable, by an atomic replace (a crash leaves
//!   the old head or the new one, both at or below what is durable).
//! - A log without a head file (a new log, or one written before the head
//!   existed) is not checked; a head file that does not decode is damage.
//!
//! # Layout (inside the frame of `fsutil`, magic `SHAH`, version 1)
//!
//! | offset | size | field                               |
//! |-------:|-----:|-------------------------------------|
//! | 0      | 8    | sequence number of the newest durable record (LE) |
//! | 8      | 32   | its hash                            |

use crate::checksum::storage::{replace, TableStorage};
use crate::error::{Error, Result};
use crate::fsutil::{decode_framed, encode_framed};

use super::record::MAX_SEQ;

/// The head file's name in the log's directory.
pub(super) const HEAD_FILE: &str = "audit.head";
const HEAD_MAGIC: [u8; 4] = *b"SHAH";
const HEAD_VERSION: u32 = 1;
const PAYLOAD_LEN: usize = 8 + 32;

/// The newest durable record as the head file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) seq: u64,
    pub(super) hash: [u8; 32],
}

/// The head file's bytes for `head`.
pub(super) fn encode(head: Head) -> Vec<u8> {
    let mut p = Vec::with_capacity(PAYLOAD_LEN);
    p.extend_from_slice(&head.seq.to_le_bytes());
    p.extend_from_slice(&head.hash);
    encode_framed(HEAD_MAGIC, HEAD_VERSION, &p)
}

/// Replaces the head file with `head` (crash-safe: see the module docs).
///
/// # Errors
/// The failing step's [`Error::Io`].
pub(super) fn write(storage: &dyn TableStorage, head: Head) -> Result<()> {
    replace(storage, HEAD_FILE, &encode(head))
}

/// Reads the head file: `Ok(None)` when there is none.
///
/// # Errors
/// [`Error::CorruptFile`] (or [`Error::UnsupportedVersion`]) when it does
/// not decode; [`Error::Io`] when it cannot be read.
pub(super) fn read(storage: &dyn TableStorage) -> Result<Option<Head>> {
    let Some(bytes) = storage.read(HEAD_FILE)? else {
        return Ok(None);
    };
    let path = storage.path(HEAD_FILE);
    let (_, payload) = decode_framed(&path, &bytes, HEAD_MAGIC, HEAD_VERSION)?;
    if payload.len() != PAYLOAD_LEN {
        return Err(Error::corrupt_file(
            &path,
            24,
            format!("a head of {} bytes, not {PAYLOAD_LEN}", payload.len()),
        ));
    }
    let seq = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
    if seq == 0 || seq > MAX_SEQ {
        return Err(Error::corrupt_file(
            &path,
            24,
            format!("the head names record {seq}, outside 1..={MAX_SEQ}"),
        ));
    }
    let hash: [u8; 32] = payload[8..].try_into().expect("32 bytes");
    Ok(Some(Head { seq, hash }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::CrashFiles;
    use proptest::prelude::*;

    proptest! {
        /// Encode then read gives the head back; any one bit flipped is a
        /// typed error, never a different head.
        #[test]
        fn round_trip_and_flips(seq in 1..=MAX_SEQ, hash in any::<[u8; 32]>(), flip in any::<usize>()) {
            let files = CrashFiles::new();
            let head = Head { seq, hash };
            write(&files, head).unwrap();
            prop_assert_eq!(read(&files).unwrap(), Some(head));
            let mut bytes = encode(head);
            let i = flip % (bytes.len() * 8);
            bytes[i / 8] ^= 1 << (i % 8);
            files.set_file(HEAD_FILE, bytes);
            prop_assert!(read(&files).is_err());
        }
    }

    #[test]
    fn no_file_is_no_head_and_a_short_one_is_damage() {
        let files = CrashFiles::new();
        assert_eq!(read(&files).unwrap(), None);
        files.set_file(HEAD_FILE, vec![1, 2, 3]);
        assert!(matches!(read(&files), Err(Error::CorruptFile { .. })));
    }
}
