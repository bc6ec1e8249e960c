//! The journal's state file: which segments must exist, and up to where
//! transaction ids are reserved. Segment creation and retirement are rare,
//! so the file is small and replaced whole, crash-safely, at each. The
//! layout is on [`JournalState`]; the crash analysis in the
//! [journal docs](super).

use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil;

use super::record::MAX_HEADER_COUNTER;

/// The magic of the journal state file.
pub const STATE_MAGIC: [u8; 4] = *b"SHJS";
/// The state file format version this build writes and reads.
pub const STATE_VERSION: u32 = 1;
/// The state file's name in a [`DirStorage`](super::DirStorage) directory.
pub const STATE_FILE_NAME: &str = "undo.state";
const PAYLOAD_LEN: usize = 24;

/// The contents of the journal state file.
///
/// # Layout
///
/// The crate's framed file (magic [`STATE_MAGIC`] `SHJS`, version
/// [`STATE_VERSION`] 1, payload length (8), payload CRC32 (4), CRC32 of the
/// 20 bytes before it (4)) around a 24-byte payload, integers
/// little-endian:
///
/// | offset | size | field                                                          |
/// |-------:|-----:|----------------------------------------------------------------|
/// | 0      | 8    | oldest segment that must exist (1 or more, below `u64::MAX`)   |
/// | 8      | 8    | newest segment that must exist (`oldest - 1`: none yet; below `u64::MAX`) |
/// | 16     | 8    | end of the transaction-id reservation: no id at or above it was handed out; at most [`MAX_HEADER_COUNTER`] |
///
/// Every segment numbered `oldest` and `newest` must be present, and the
/// ones present between them must continue each other's LSNs. A segment
/// below `oldest` is one whose retirement did not finish; one above
/// `newest` is one whose creation did not finish (or a leftover of a cut).
/// The file is replaced with the crate's atomic write (temporary file,
/// fsync, rename, directory fsync), so a crash leaves the old or the new
/// contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalState {
    /// The oldest segment that must exist.
    pub oldest: u64,
    /// The newest segment that must exist (`oldest - 1` when none does).
    pub newest: u64,
    /// No transaction id at or above this was handed out.
    pub txn_reserved_end: u64,
}

impl JournalState {
    /// Whether segment `id` must exist.
    #[must_use]
    pub fn lists(&self, id: u64) -> bool {
        (self.oldest..=self.newest).contains(&id)
    }

    /// The framed file bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(PAYLOAD_LEN);
        p.extend_from_slice(&self.oldest.to_le_bytes());
        p.extend_from_slice(&self.newest.to_le_bytes());
        p.extend_from_slice(&self.txn_reserved_end.to_le_bytes());
        fsutil::encode_framed(STATE_MAGIC, STATE_VERSION, &p)
    }

    /// Decodes untrusted state file bytes read from `path` (for messages).
    ///
    /// # Errors
    /// [`Error::CorruptFile`] for a bad frame, a payload of the wrong length
    /// or values out of range; [`Error::UnsupportedVersion`] for a newer
    /// version. Never panics.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<JournalState> {
        let (_, p) = fsutil::decode_framed(path, bytes, STATE_MAGIC, STATE_VERSION)?;
        if p.len() != PAYLOAD_LEN {
            return Err(Error::corrupt_file(
                path,
                fsutil::FRAME_HEADER_LEN as u64,
                format!("state payload is {} bytes, expected {PAYLOAD_LEN}", p.len()),
            ));
        }
        let at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&p[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let s = JournalState {
            oldest: at(0),
            newest: at(8),
            txn_reserved_end: at(16),
        };
        let bad = |offset: usize, reason: String| {
            Err(Error::corrupt_file(
                path,
                (fsutil::FRAME_HEADER_LEN + offset) as u64,
                reason,
            ))
        };
        if s.oldest == 0 || s.oldest == u64::MAX {
            return bad(0, format!("oldest segment {} is out of range", s.oldest));
        }
        if s.newest == u64::MAX || s.newest.saturating_add(1) < s.oldest {
            return bad(
                8,
                format!(
                    "newest segment {} is before the oldest {} - 1",
                    s.newest, s.oldest
                ),
            );
        }
        if s.txn_reserved_end > MAX_HEADER_COUNTER {
            return bad(
                16,
                format!(
                    "transaction-id reservation {} is above {MAX_HEADER_COUNTER}",
                    s.txn_reserved_end
                ),
            );
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(oldest in 1..u64::MAX - 1, span in 0u64..1000, reserved in 0..=MAX_HEADER_COUNTER) {
            let newest = oldest.saturating_add(span).min(u64::MAX - 1) - 1;
            let s = JournalState { oldest, newest, txn_reserved_end: reserved };
            prop_assert_eq!(JournalState::decode(Path::new("s"), &s.encode()).unwrap(), s);
        }

        #[test]
        fn values_out_of_range_are_corrupt(oldest in any::<u64>(), newest in any::<u64>(), reserved in any::<u64>()) {
            let s = JournalState { oldest, newest, txn_reserved_end: reserved };
            let ok = oldest != 0 && oldest != u64::MAX && newest != u64::MAX
                && newest.saturating_add(1) >= oldest && reserved <= MAX_HEADER_COUNTER;
            match JournalState::decode(Path::new("s"), &s.encode()) {
                Ok(back) => prop_assert!(ok && back == s),
                Err(Error::CorruptFile { .. }) => prop_assert!(!ok),
                Err(e) => prop_assert!(false, "{}", e),
            }
        }

        #[test]
        fn any_bit_flip_is_caught(bit in 0usize..(24 + PAYLOAD_LEN) * 8) {
            let mut b = JournalState { oldest: 3, newest: 9, txn_reserved_end: 70_000 }.encode();
            b[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(JournalState::decode(Path::new("s"), &b).is_err());
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = JournalState::decode(Path::new("s"), &bytes);
        }
    }
}
