//! The durable undo journal: append-only, segmented, CRC-framed, with a
//! small state file that says which segments must exist.
//!
//! # Files
//!
//! A journal is a sequence of segment files (`undo-<16 hex digits>.log` in
//! [`DirStorage`]) and one state file ([`STATE_FILE_NAME`]). Segments are
//! numbered upward; records never span segments. A new segment is started
//! when the current one would exceed the configured segment size; the old
//! one is fsynced before the new one is created, so only the newest segment
//! can ever have an unsynced tail. The state file names the oldest and the
//! newest segment that must exist, and the end of the transaction-id
//! reservation; its layout is on [`JournalState`].
//!
//! # Segment header (40 bytes, integers little-endian)
//!
//! | offset | size | field                                                    |
//! |-------:|-----:|----------------------------------------------------------|
//! | 0      | 4    | magic `SHUJ`                                             |
//! | 4      | 4    | format version: 2 (this build writes it), or 1 (read only) |
//! | 8      | 8    | segment number (must match the file name)                |
//! | 16     | 8    | first LSN: the LSN of the segment's first record; 1 or more, below [`MAX_HEADER_COUNTER`] |
//! | 24     | 8    | end of the transaction-id reservation when the segment was created (version 1: the next id); below [`MAX_HEADER_COUNTER`] |
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
//! | 16     | 1    | type (below)                                             |
//! | 17     | n    | payload                                                  |
//!
//! | type | name   | versions | payload                                                        |
//! |-----:|--------|----------|----------------------------------------------------------------|
//! | 1    | begin  | 1, 2     | transaction id (8)                                             |
//! | 2    | undo   | 1 only   | transaction id (8), page (8), byte offset in the page (4), before-image (`n - 20`) |
//! | 3    | commit | 1, 2     | transaction id (8)                                             |
//! | 4    | abort  | 1, 2     | transaction id (8)                                             |
//! | 5    | undo   | 2 only   | transaction id (8), page (8), byte offset (4), before-image (`(n - 20) / 2`), after-image (same length); `n - 20` is even |
//! | 6    | mark   | 2 only   | synced-through LSN (8), below the mark's own LSN               |
//!
//! A 64-byte change makes a 165-byte undo record (version 1: 101 bytes
//! without the after-image). A type that does not belong to the segment's
//! version is a bad record. Segments of version 1 are read — their undo
//! records have no after-image and are applied unconditionally, as that
//! version did — and never appended to: the first open by this build starts
//! a version-2 segment.
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
//! # Which segments must exist
//!
//! The state file lists segments `oldest..=newest`. Both ends must be
//! present, and consecutive segments must continue each other's LSNs; a
//! segment dropped whole at open (a torn tail, or damage cut by
//! `StopAtFirstBadRecord`) must have the segment numbered just below it
//! present, as that one becomes the newest (a segment missing there was
//! complete, so it may have held durable records); a missing segment is [`Error::CorruptFile`](crate::Error::CorruptFile) in
//! **every** recovery mode (restore it from a backup). Undo records of an
//! unfinished transaction whose begin record is in no live segment are
//! damage too, in every mode: checkpoints never retire the segment of an
//! active (or blocked) transaction's begin record, so such a journal lost a
//! segment. A segment below `oldest` is one whose retirement did not finish
//! (it is removed). Segment `newest + 1` holding no record is one whose
//! creation did not finish: a torn tail (removed and reported;
//! `AbsoluteConsistency` refuses it). A segment above `newest` that holds
//! records is the leftover of a cut by `StopAtFirstBadRecord` that a crash
//! interrupted — or the state file is older than the segments — so only
//! `StopAtFirstBadRecord` removes it (reported as
//! [`JournalDamage::Corrupt`]), and only if no synced-through mark covers
//! its records; otherwise every mode refuses. A journal of format
//! version 1 has no
//! state file: the first open derives one from the segments present. A
//! journal of version 2 without a (valid) state file is refused, except by
//! [`RecoveryMode::StopAtFirstBadRecord`], which rebuilds it from the
//! segments present and reports [`JournalDamage::StateRebuilt`] (a segment
//! missing at either end then goes unnoticed, and transaction ids resume
//! 2³² above the highest the journal shows).
//!
//! # Transaction ids
//!
//! Ids are handed out only below the reservation end recorded in the state
//! file. When they run out, the next block of [`TXN_ID_RESERVATION`] ids is
//! reserved by replacing the state file — durably — before the first id of
//! the block is handed out. An open starts at the reservation end (or above
//! the highest id any record or header shows) and reserves a new block, so
//! an id handed out before a crash is never handed out again, even if its
//! begin record never became durable. A restart skips what was left of the
//! block.
//!
//! # Power loss and the synced-through mark
//!
//! A process crash leaves every byte written so far; a power loss can also
//! leave holes in the bytes written after the last completed fsync of the
//! newest segment (the operating system writes dirty blocks back in any
//! order), with intact records after them. Nothing in those bytes was
//! acknowledged. Damage in bytes that an fsync covered is something else: a
//! bad medium, or a change from outside.
//!
//! A **mark** record names the LSN up to which an fsync had completed when
//! the mark was written; it never claims more. Every batch a group-commit
//! leader writes carries a mark for the previous completed fsync, for free;
//! when no batch follows an fsync within the idle delay
//! ([`RollbackConfig::idle_mark_delay`](crate::RollbackConfig::idle_mark_delay),
//! default 10 ms), the `selfheal-undo-mark` thread writes a mark and fsyncs
//! it; [`stop`](crate::TransactionRollbackManager::stop) does the same, and
//! an open covers what it read. Recovery takes `L`, the highest claim of any
//! valid mark in any segment — also one found after a hole, since a mark is
//! written only after the fsync it names — and at the first bad record,
//! whose LSN should have been `E`:
//!
//! - `E > L`, in the newest segment, the frame incomplete or failing its
//!   checksum (not a valid frame out of sequence), and the search after it
//!   complete: a **torn tail**, cut off whatever valid records follow it
//!   (they lie after every completed fsync: never acknowledged);
//! - otherwise: **damage**. `E ≤ L` means the bytes were durable; a bad
//!   record in an older segment was durable too (it was synced before the
//!   next segment was created).
//!
//! Guarantee: a crash or power loss never makes the default mode refuse to
//! open (except after one in the middle of a cut by `StopAtFirstBadRecord`,
//! which that mode then finishes), and never loses an acknowledged commit
//! (acknowledged records lie at or below the last completed fsync; a crash
//! leaves them intact and every hole above them). Residual window: media damage to an acknowledged
//! commit's own bytes is taken for a torn tail — and that commit rolled
//! back — only if the process also crashes before any mark covering it is
//! durable, that is within the idle delay plus one fsync of the
//! acknowledgment with no later batch written in between. Journals of format
//! version 1 have no marks; their newest segment keeps the old rule (a bad
//! record with a valid record after it is damage).
//!
//! In the newest segment the search for valid records after a bad one looks
//! for frames whose LSN could follow the last good record (within
//! [`LSN_SEARCH_WINDOW`] above it), decodes them in sequence and searches
//! again at each bad spot. Valid frames are read once each; the search
//! between them checksums at most [`MAX_SEARCH_HASH_BYTES`] in all, and if
//! bytes crafted to look like records exhaust that, the bad record counts as
//! damage (never as a torn tail to cut).
//!
//! | damage \ [`RecoveryMode`]           | `TolerateTornTail` (default)     | `AbsoluteConsistency` | `StopAtFirstBadRecord`                              |
//! |-------------------------------------|----------------------------------|-----------------------|-----------------------------------------------------|
//! | none                                | open                             | open                  | open                                                |
//! | torn tail: after the newest mark in the newest segment (truncation, zeros, junk, a flip, holes with valid records after them), or a segment whose creation did not finish | cut off, open, [`JournalDamage::TornTail`] reported | `Error::CorruptFile` | cut off, open, `TornTail` reported |
//! | damage at or below a mark (in any segment)  | `Error::CorruptFile` | `Error::CorruptFile` | `Error::CorruptFile`: it never drops what a mark covers (the message says what to do) |
//! | other damage after the newest mark (a bad record in a segment that is not the newest, a frame out of sequence, a bad header) | `Error::CorruptFile` | `Error::CorruptFile` | cut at the bad record, later segments removed, open, [`JournalDamage::Corrupt`] reported |
//! | a missing segment (either end, an LSN gap, or just below a segment dropped whole); undo of an unfinished transaction without its begin record | `Error::CorruptFile` | same | same |
//! | a segment above the newest listed one that holds records | `Error::CorruptFile` | `Error::CorruptFile` | removed, open, `Corrupt` reported — refused if a mark covers its records |
//! | missing or damaged state file (format version 2) | `Error::CorruptFile` | same | rebuilt from the segments, [`JournalDamage::StateRebuilt`] reported |
//! | newer format version                | `Error::UnsupportedVersion`      | same                  | same                                                |
//!
//! For journals of format version 1 (no marks, no state file) the rows read
//! as before: a torn tail is a bad record with nothing valid after it in the
//! newest segment, and `StopAtFirstBadRecord` cuts at any damage — which can
//! drop acknowledged commits after it, so choose it there only when the
//! damage came from a power loss or the host can redo those commits.
//!
//! # The write-ahead rule
//!
//! [`record_undo`](crate::rollback::TransactionRollbackManager::record_undo)
//! returns the record's LSN. The host must call
//! [`ensure_durable`](crate::rollback::TransactionRollbackManager::ensure_durable)
//! with that LSN (or a later one) **before it hands the changed page to its
//! page store** (`PageStore::write_page`), because the store may make a
//! write durable at any moment after that. Until then it may change the page
//! in its own memory, recording each change (the after-image of the record
//! must be what the page holds when it is written).
//! [`write`](crate::rollback::TransactionRollbackManager::write) does all
//! three steps in order.
//!
//! # What a crash at each step leaves
//!
//! - **During an append (buffered or written, not yet synced):** the records
//!   may be lost, or their tail torn (with holes, after a power loss). No
//!   page write depended on them (the write-ahead rule), and no commit was
//!   acknowledged, so recovery cuts the tail off at the first bad record and
//!   rolls back every transaction without a commit record.
//! - **After `ensure_durable` returned, before the page write:** the undo is
//!   there, the page is not changed: it holds the before-image, which the
//!   after-image check accepts; applying it is a no-op.
//! - **After the page write:** recovery applies the before-image (the page
//!   holds the after-image, or a torn mix of the two).
//! - **During commit, before the commit record is durable:** the transaction
//!   was not acknowledged and is rolled back. After it: committed, never
//!   undone.
//! - **During a rollback:** before-images are applied in reverse LSN order
//!   and the pages synced before the abort record is written. A crash before
//!   the abort record is durable leaves the transaction in flight, and
//!   recovery applies all of its before-images again. This is idempotent:
//!   each byte ends up with its oldest before-image whatever the partial
//!   state was, because no other transaction wrote those bytes meanwhile
//!   (the host holds its write locks until commit or rollback returns), and
//!   a partly restored page holds only before- and after-image bytes.
//! - **During recovery itself:** the same argument; the abort records are
//!   written only after the restored pages are synced (once, after the
//!   last batch of page ranges: a crash between batches leaves every
//!   transaction in flight, and the next recovery applies all of its undo
//!   again). A transaction blocked
//!   by a page that fails verification gets no abort record and is tried
//!   again at the next open.
//! - **During segment creation:** the previous segment was synced first; the
//!   new segment is created durably (header written, file and directory
//!   fsynced), and only then named the newest in the state file, and only
//!   then appended to. A crash before the state file names it leaves an
//!   unlisted segment (possibly with an incomplete or zeroed header) that
//!   holds nothing: it is removed as a torn tail.
//! - **During truncation (checkpoint, or `prepare_restore`):** the state file
//!   names the new oldest segment first; then segments are removed oldest
//!   first, each removal durable. A crash leaves segments below the oldest,
//!   which the next open removes.
//! - **During a cut by `StopAtFirstBadRecord`:** the damaged segment is
//!   truncated, the state file names it (or its predecessor) the newest,
//!   and the later segments are removed; a crash leaves unlisted segments
//!   that the next open removes.
//! - **During a reservation of transaction ids:** the state file is replaced
//!   atomically before any id of the new block is handed out: a crash leaves
//!   the old reservation, below which every handed-out id lies.
//!
//! # Assumptions about the medium
//!
//! fsync means what it says. A failed fsync is never simply retried: the
//! kernel may have dropped the dirty pages, and a second fsync would report
//! durability that does not exist. A retryable failure (`EIO`, a full disk)
//! stalls the journal ([`Error::JournalStalled`](crate::Error::JournalStalled)):
//! it keeps every record that is not durable in memory, and a resume
//! truncates the newest segment after its last durable record and writes
//! them again before it fsyncs (the contract is in `writer/resume.rs`);
//! any other failure poisons it ([`Error::Poisoned`](crate::Error::Poisoned)).
//! Reopening re-reads what actually reached the disk (and fsyncs the newest
//! segment before any mark claims its records). Bytes freed by a
//! truncation do not come back after a crash (no stale blocks exposed in a
//! file, as with ext4's default `data=ordered`).

mod marker;
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
pub use storage::{segment_file_name, DirStorage, JournalStorage, LOCK_FILE};
pub use writer::{JournalStats, TXN_ID_RESERVATION};

pub(crate) use record::UNDO_FIXED_LEN;
pub(crate) use recovery::SegMeta;
pub(crate) use writer::{Journal, JournalConfig, PoisonHook, StallHook};
