//! The durable undo journal: append-only, segmented, CRC-framed.
//!
//! # Files
//!
//! A journal is a sequence of segment files (`undo-<16 hex digits>.log` in
//! [`DirStorage`]), numbered upward without gaps. Records never span
//! segments. A new segment is started when the current one would exceed the
//! configured segment size; the old one is fsynced before the new one is
//! created, so only the newest segment can ever have an unsynced tail.
//!
//! # Segment header (40 bytes, integers little-endian)
//!
//! | offset | size | field                                                    |
//! |-------:|-----:|----------------------------------------------------------|
//! | 0      | 4    | magic `SHUJ`                                             |
//! | 4      | 4    | format version (1)                                       |
//! | 8      | 8    | segment number (must match the file name)                |
//! | 16     | 8    | first LSN: the LSN of the segment's first record; 1 or more, below [`MAX_HEADER_COUNTER`] |
//! | 24     | 8    | next transaction id when the segment was created; below [`MAX_HEADER_COUNTER`] |
//! | 32     | 4    | reserved, zero                                           |
//! | 36     | 4    | CRC32 of bytes 0..36                                     |
//!
//! # Record frame (17-byte header + payload)
//!
//! | offset | size | field                                                    |
//! |-------:|-----:|----------------------------------------------------------|
//! | 0      | 4    | payload length `n` (at most 16 MiB)                      |
//! | 4      | 4    | CRC32 of bytes 0..4 followed by bytes 8..17+n            |
//! | 8      | 8    | LSN (consecutive: each record is the previous + 1)       |
//! | 16     | 1    | type: 1 begin, 2 undo, 3 commit, 4 abort                 |
//! | 17     | n    | payload                                                  |
//!
//! Payloads: begin, commit and abort carry the transaction id (8 bytes).
//! Undo carries transaction id (8), page (8), byte offset in the page (4)
//! and the before-image (`n - 20` bytes). A 64-byte before-image makes a
//! 101-byte record.
//!
//! A header whose counters are out of range, or a segment numbered
//! `u64::MAX`, is damage ([`Error::CorruptFile`](crate::Error::CorruptFile)):
//! the counters must have room to grow. A counter that still runs out while
//! the journal is used gives
//! [`Error::IdSpaceExhausted`](crate::Error::IdSpaceExhausted).
//!
//! Zeros never decode as a record (type 0 is invalid and the CRC of zeros is
//! not zero), and an LSN out of sequence is damage even if its frame checks.
//!
//! # Torn tail versus damage in the middle
//!
//! At a bad or incomplete record, the reader searches the rest of the segment
//! for any valid frame whose LSN could follow the last good record (within
//! [`LSN_SEARCH_WINDOW`] above it). None found, and no later segment: a **torn tail**,
//! which is what a crash during an append leaves. Something valid found (or
//! a later segment exists): **damage in the middle**, which is never skipped
//! silently. A bit flip inside the very last record cannot be told from a
//! torn write and counts as a torn tail. The search checksums at most
//! [`MAX_SEARCH_HASH_BYTES`]; if bytes crafted to look like records exhaust
//! that, the bad record counts as damage in the middle (never as a torn tail
//! to skip).
//!
//! | damage \ [`RecoveryMode`]           | `TolerateTornTail` (default)     | `AbsoluteConsistency` | `StopAtFirstBadRecord`                              |
//! |-------------------------------------|----------------------------------|-----------------------|-----------------------------------------------------|
//! | none                                | open                             | open                  | open                                                |
//! | torn tail (incl. truncation, zeros, junk or a flip in the last record, a half-created last segment) | cut off, open, [`JournalDamage::TornTail`] reported | `Error::CorruptFile` | cut off, open, `TornTail` reported |
//! | bad record with valid ones after it (flip, zeros, junk in the middle; LSN gap) | `Error::CorruptFile` | `Error::CorruptFile` | cut at the bad record, later segments removed, open, [`JournalDamage::Corrupt`] reported |
//! | bad header of a segment that is not the last, or a missing segment (LSN gap between segments) | `Error::CorruptFile` | `Error::CorruptFile` | that segment and all later ones removed, open, `Corrupt` reported |
//! | newer format version                | `Error::UnsupportedVersion`      | same                  | same                                                |
//!
//! # The write-ahead rule
//!
//! [`record_undo`](crate::rollback::TransactionRollbackManager::record_undo)
//! returns the record's LSN. The host must call
//! [`ensure_durable`](crate::rollback::TransactionRollbackManager::ensure_durable)
//! with that LSN (or a later one) **before it hands the changed page to its
//! page store** (`PageStore::write_page`), because the store may make a
//! write durable at any moment after that. Until then it may change the page
//! in its own memory freely.
//! [`write`](crate::rollback::TransactionRollbackManager::write) does all
//! three steps in order.
//!
//! # What a crash at each step leaves
//!
//! - **During an append (buffered or written, not yet synced):** the records
//!   may be lost, or their tail torn. No page write depended on them (the
//!   write-ahead rule), and no commit was acknowledged, so recovery cuts the
//!   tail off and rolls back every transaction without a commit record.
//! - **After `ensure_durable` returned, before the page write:** the undo is
//!   there, the page is not changed; applying the before-image is a no-op.
//! - **After the page write:** recovery applies the before-image.
//! - **During commit, before the commit record is durable:** the transaction
//!   was not acknowledged and is rolled back. After it: committed, never
//!   undone.
//! - **During a rollback:** before-images are applied in reverse LSN order
//!   and the pages synced before the abort record is written. A crash before
//!   the abort record is durable leaves the transaction in flight, and
//!   recovery applies all of its before-images again. This is idempotent:
//!   each byte ends up with its oldest before-image whatever the partial
//!   state was, because no other transaction wrote those bytes meanwhile
//!   (the host holds its write locks until commit or rollback returns).
//! - **During recovery itself:** the same argument; the abort records are
//!   written only after the restored pages are synced.
//! - **During segment creation:** a half-written header of the last segment
//!   is a torn tail; the previous segment was synced before.
//! - **During truncation:** segments are removed oldest first, each removal
//!   durable; a crash leaves a shorter but consistent prefix removed.
//! - **Power loss (not a process crash) with records written but not yet
//!   synced:** the operating system writes dirty file pages back in any
//!   order, so the unsynced tail of the newest segment can come back with a
//!   hole (zeros or stale bytes) followed by later records that are intact.
//!   By the rule above (a valid record after a bad one is damage in the
//!   middle) the default [`RecoveryMode::TolerateTornTail`] then refuses to
//!   open with [`Error::CorruptFile`](crate::Error::CorruptFile) naming the
//!   hole's offset. The host reopens in
//!   [`RecoveryMode::StopAtFirstBadRecord`]: it cuts the segment at the hole
//!   and keeps every record before it, and reports
//!   [`JournalDamage::Corrupt`]. Nothing acknowledged is lost that way: an
//!   acknowledged commit, and every undo record whose page change was
//!   written, were fsynced, and an fsync makes every byte before them
//!   durable, so they all lie before the hole. Records after it were never
//!   acknowledged and no page write depended on them; their transactions are
//!   rolled back with the before-images that remain. The same mode applied
//!   to damage of synced bytes (a bad disk rather than a power loss) drops
//!   acknowledged commits after the damage, so reopen in it only when the
//!   cause was a power loss, or when the host can redo those commits from
//!   its own log.
//!
//! # Assumptions about the medium
//!
//! fsync means what it says; a failed fsync poisons the journal
//! ([`Error::Poisoned`](crate::Error::Poisoned)) because the kernel may have
//! dropped the dirty pages, and retrying would report durability that does
//! not exist. Reopening re-reads what actually reached the disk.

mod reader;
mod record;
pub(crate) mod recovery;
mod state;
mod storage;
mod writer;

pub use reader::{
    decode_segment, ScannedRecord, SegmentEnd, SegmentScan, LSN_SEARCH_WINDOW,
    MAX_SEARCH_HASH_BYTES,
};
pub use record::{
    HeaderDamage, Record, SegmentHeader, MAX_HEADER_COUNTER, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN, SEGMENT_MAGIC, SEGMENT_VERSION,
};
pub use recovery::{JournalDamage, RecoveryMode};
pub use state::{JournalState, STATE_FILE_NAME, STATE_MAGIC, STATE_VERSION};
pub use storage::{segment_file_name, DirStorage, JournalStorage};
pub use writer::{JournalStats, TXN_ID_RESERVATION};

pub(crate) use record::UNDO_FIXED_LEN;
pub(crate) use writer::{Journal, JournalConfig};
