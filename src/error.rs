//! The one error type of the crate.
//!
//! Every fallible call returns [`Error`]. Variants carry named fields so that a
//! caller can act on them, and each message says what was wrong and what to do.
//! [`Error::is_retryable`] tells a caller whether the same call may succeed if
//! it is simply made again.

use std::io;
use std::path::PathBuf;

use crate::types::{PageId, ReplicaId, TxnId};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `selfheal`.
///
/// The enum is `#[non_exhaustive]`: later releases add variants, so match with
/// a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- configuration and arguments -------------------------------------
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The builder field that was wrong.
        field: &'static str,
        /// Why it was rejected and what would be accepted.
        reason: String,
    },

    /// A caller-supplied buffer does not have the length the call needs.
    #[error("buffer has {actual} bytes but {expected} are needed: pass a buffer of exactly the page size")]
    BufferSize {
        /// The length the call needs.
        expected: usize,
        /// The length that was passed.
        actual: usize,
    },

    /// A page id is at or past the end of the store.
    #[error("page {page} is out of range: the store has {page_count} pages (ids 0..{page_count}); use a page id below {page_count}, or grow the store (and tell the detector: `CorruptionDetector::resize`) first")]
    PageOutOfRange {
        /// The page that was asked for.
        page: PageId,
        /// How many pages the store has.
        page_count: u64,
    },

    /// Two parties disagree on the page size (a replica, a checksum table, a file).
    #[error("page size mismatch for {what}: expected {expected} bytes, found {actual}; every store, replica and table of one engine must use one page size")]
    PageSizeMismatch {
        /// What had the wrong page size.
        what: String,
        /// The page size of the local store.
        expected: usize,
        /// The page size that was found.
        actual: usize,
    },

    /// An argument other than a buffer, page id or configuration is invalid.
    #[error("invalid argument `{what}`: {reason}")]
    InvalidArgument {
        /// The argument.
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    // ---- page verification -------------------------------------------------
    /// The page's bytes do not match its checksum.
    #[error("page {page} is corrupt: checksum {actual:#010x} does not match the recorded {expected:#010x}; repair it from a replica or snapshot (`DataRepairer::repair_page`)")]
    ChecksumMismatch {
        /// The page that failed verification.
        page: PageId,
        /// The checksum recorded for the page (trailer or sidecar table).
        expected: u32,
        /// The checksum computed over the bytes that were read.
        actual: u32,
    },

    /// The page is all zeros where its checksum describes other contents: a
    /// lost or never-written page. (An all-zero page verifies only where the
    /// host itself wrote zeros through the detector, sidecar placement.)
    #[error("page {page} is all zeros: it was lost, trimmed or never written; repair it from a replica or snapshot")]
    ZeroedPage {
        /// The zeroed page.
        page: PageId,
    },

    /// The page carries a valid trailer for a different page: a misdirected write.
    #[error("page {page} holds the contents of page {found}: a write was misdirected; repair it from a replica")]
    MisplacedPage {
        /// Where the page was read from.
        page: PageId,
        /// The page number recorded in its trailer.
        found: PageId,
    },

    /// The page trailer is not one this crate writes (bad magic or version).
    #[error("page {page} has no valid checksum trailer ({reason}); the page is garbled or was never sealed: repair it from a replica or snapshot, or, for a page never sealed, adopt it after the host's own integrity check (`CorruptionDetector::adopt`)")]
    InvalidTrailer {
        /// The page.
        page: PageId,
        /// What was wrong with the trailer.
        reason: String,
    },

    /// The page verifies but does not carry the LSN last written to it (or
    /// is older than the host's floor): a lost write. An older LSN is a host
    /// write that never landed; a newer one is the version that a lost write
    /// of a rollback or a restore was to replace. Found only when the host
    /// gives a page-LSN reader. Under a sidecar table an older version fails
    /// its checksum as well (the table holds the newest write's checksum):
    /// a checksum mismatch whose page LSN is older than the last write is
    /// reported as this, not as [`Error::ChecksumMismatch`].
    #[error("page {page} is stale: it holds LSN {found} but LSN {expected} was written to it (a lost write); repair it from a replica")]
    StalePage {
        /// The page.
        page: PageId,
        /// The LSN in the page's bytes.
        found: crate::types::Lsn,
        /// The LSN last written to it through the detector.
        expected: crate::types::Lsn,
    },

    /// The sidecar checksum table has no checksum for the page.
    #[error("page {page} has no checksum in the sidecar table: it was written without going through the library (a file that existed before it, or a page written behind its back); adopt existing pages with `CorruptionDetector::adopt` after the host's own integrity check, or write the page through the detector")]
    MissingChecksum {
        /// The page.
        page: PageId,
    },

    /// The host says the page is unallocated (free), so it holds no sealed
    /// bytes to serve. Not corruption: nothing needs repair.
    #[error("page {page} is unallocated: the host marked it free, so its bytes are not protected and are not served as verified; write the page through the detector to use it again")]
    PageUnallocated {
        /// The page.
        page: PageId,
    },

    /// Bytes from a copy that was not read through a verifying store (a
    /// snapshot of the raw store) cannot be vouched for, so the store that
    /// was to write them refuses to seal them. Not corruption of the store:
    /// nothing was written.
    #[error("page {page} cannot be vouched for: {reason}; repair the page from a copy that verifies, or write it through the detector")]
    UnverifiedCopy {
        /// The page.
        page: PageId,
        /// Why it cannot be verified, and what to do instead.
        reason: String,
    },

    /// Adoption in the trailer placement found a page whose last 16 bytes
    /// hold data, so a trailer cannot be added without destroying it.
    #[error("page {page} cannot take a checksum trailer in place: its last {trailer_len} bytes are in use; reserve {trailer_len} bytes at the end of every page (SQLite: reserved bytes, header byte 20) or adopt with the sidecar placement")]
    TrailerInUse {
        /// The page.
        page: PageId,
        /// The bytes a trailer needs.
        trailer_len: usize,
    },

    /// The page is known to be corrupt and is fenced until it is repaired or rewritten.
    #[error(
        "page {page} is fenced ({state}): it failed verification and has not been repaired yet; `DataRepairer::repair_page` restores it from a verified replica copy, or a host write of the whole page through the detector replaces it"
    )]
    PageFenced {
        /// The page.
        page: PageId,
        /// Its state in the suspect registry.
        state: &'static str,
    },

    /// The suspect-page registry is full of unresolved pages.
    #[error("the suspect-page registry is full ({capacity} unresolved pages): repair or rewrite pages, or raise `suspect_capacity`")]
    RegistryFull {
        /// The configured capacity.
        capacity: usize,
    },

    // ---- host and replicas ---------------------------------------------------
    /// An I/O operation of the library or of a reference store failed.
    #[error("I/O error while {context}: {source}; check the device, its free space and the permissions, then retry (a transient kind may be retried as is)")]
    Io {
        /// What the library was doing, including the path where there is one.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A path where the library expects one of its regular files holds
    /// something else (a directory, a named pipe, a socket, a device). It is
    /// refused before it is opened for reading or writing, so that a named
    /// pipe never makes an open block.
    #[error("{path} is a {kind}, not a regular file; the library keeps only regular files there: move it away and retry")]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },

    /// A host trait method failed with a host-defined error.
    #[error("host error during {op}: {message}{}", if *retryable { " (transient: may be retried)" } else { " (permanent: fix the cause in the host before retrying)" })]
    Host {
        /// The operation that failed.
        op: &'static str,
        /// Whether the host says the same call may succeed later.
        retryable: bool,
        /// The host's description.
        message: String,
    },

    /// The host does not support an action the library asked for.
    #[error("the host does not support `{action}`: implement it in the host's action trait or choose another remedy")]
    Unsupported {
        /// The action.
        action: &'static str,
    },

    /// A replica cannot serve the request now.
    #[error("replica {replica} is unavailable: {reason}; other replicas and fallbacks are tried, and it may be used again: retry later")]
    ReplicaUnavailable {
        /// The replica.
        replica: ReplicaId,
        /// Why.
        reason: String,
    },

    /// A replica with this id is already registered.
    #[error("replica {replica} is already registered: replica ids must be unique; register it under another id, or remove the old one first")]
    DuplicateReplica {
        /// The replica.
        replica: ReplicaId,
    },

    /// No source had a copy of the page that verifies.
    #[error("page {page} is irreparable: {reason}; add a replica or fallback source that holds a good copy and repair again, restore a snapshot, or rewrite the page from the host's own records")]
    Irreparable {
        /// The page.
        page: PageId,
        /// What was tried and why each source failed.
        reason: String,
    },

    // ---- files owned by the library ------------------------------------------
    /// A file written by the library is damaged or is not what it claims to be.
    #[error("{} is corrupt at byte {offset}: {reason}; move the file aside (or restore it from a backup) and open again: the component that owns it rebuilds it or starts without it where it can, as its docs say", path.display())]
    CorruptFile {
        /// The file.
        path: PathBuf,
        /// Where decoding failed.
        offset: u64,
        /// What was wrong.
        reason: String,
    },

    /// A file was written by a newer format version than this build reads.
    #[error("{} has format version {found}, this build reads up to {supported}: upgrade selfheal", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },

    // ---- the SQLite VFS ----
    /// The SQLite VFS refused to open (or adopt) a database file: the file,
    /// its sidecar checksum table or the adoption's checks disagree about
    /// what the file is. Nothing was written to the file.
    #[error("{} cannot be opened through the selfheal VFS ({kind}; sidecar {}): {reason}", db.display(), sidecar.display())]
    SqliteRefused {
        /// Why, as a kind to match on.
        kind: SqliteRefusal,
        /// The database file.
        db: PathBuf,
        /// Its sidecar checksum table's base file.
        sidecar: PathBuf,
        /// What was found, then what to do.
        reason: String,
    },

    // ---- repair ----
    /// No replica with this id is registered.
    #[error("replica {replica} is not registered: add it with `add_replica` first")]
    UnknownReplica {
        /// The replica.
        replica: ReplicaId,
    },

    // ---- rollback ----
    /// A transaction id the rollback manager never handed out.
    #[error("transaction {txn} is unknown: it was never begun by this rollback manager; use an id returned by `begin`")]
    UnknownTransaction {
        /// The id that was passed.
        txn: TxnId,
    },

    /// The transaction exists but cannot take this call in its state.
    #[error("transaction {txn} is {state}: it takes no more changes, commits or rollbacks; begin a new transaction")]
    TransactionNotActive {
        /// The transaction.
        txn: TxnId,
        /// Its state ("committed", "rolled back", "committing", "rolling back", "finished").
        state: &'static str,
    },

    /// An undo entry (before-image) does not lie inside one page.
    #[error("undo entry for page {page} covers bytes {offset}..{end}, but pages have {page_size} bytes: a before-image must lie inside one page; split the change at the page boundary")]
    UndoOutOfPage {
        /// The page.
        page: PageId,
        /// First byte of the before-image.
        offset: u64,
        /// One past its last byte.
        end: u64,
        /// The page size.
        page_size: usize,
    },

    /// A configured bound of the rollback manager was reached.
    #[error(
        "{what} limit of {limit} reached: commit or roll back transactions, or raise `{field}`"
    )]
    RollbackLimit {
        /// What ran out.
        what: &'static str,
        /// The configuration field that sets the bound.
        field: &'static str,
        /// The bound.
        limit: u64,
    },

    /// A page restored by a rollback did not read back as written.
    #[error("page {page} did not read back as written during rollback: the store lost or changed the write; the transaction stays in flight and the rollback can be retried")]
    RollbackVerifyFailed {
        /// The page.
        page: PageId,
    },

    /// A rollback cannot restore a page because the page fails verification
    /// (it was not repaired). The transaction stays pending, with its undo:
    /// nothing was written to that page, no abort record was written.
    #[error("the rollback of transaction {txn} is blocked: page {page} fails verification ({reason}); the transaction stays pending with its undo: repair the page from a replica or snapshot, then roll the transaction back again")]
    RollbackBlocked {
        /// The transaction.
        txn: TxnId,
        /// The (first) page that failed.
        page: PageId,
        /// Why it failed.
        reason: String,
    },

    /// A call that needs no transaction in flight found some.
    #[error("{action} needs no transaction in flight, but {} are: {}; commit or roll them back (and repair the pages of blocked rollbacks) first", txns.len(), list_ids(txns))]
    TransactionsInFlight {
        /// What was refused.
        action: &'static str,
        /// The transactions in flight, sorted.
        txns: Vec<TxnId>,
    },

    /// A restore of the store is being prepared or is in progress.
    #[error("a restore of the store is in progress (a RestoreGuard of the rollback manager lives): begin transactions after the restore, once the guard is dropped")]
    RestoreInProgress,

    /// A counter of the undo journal (transaction ids, LSNs or segment
    /// numbers) has no room left to grow.
    #[error("the undo journal's {what} are exhausted (the next one would not fit in 64 bits): the journal holds values no real history reaches; move the journal directory aside and open a new one")]
    IdSpaceExhausted {
        /// "transaction ids", "LSNs" or "segment numbers".
        what: &'static str,
    },

    // ---- directories ----
    /// Another owner — in this process or another — holds the directory:
    /// every directory the library keeps files in (a run marker's data
    /// directory, a snapshot directory, an undo journal directory) has one
    /// owner at a time.
    #[error("{} is already owned by a {owner} ({}): {remedy}", path.display(), holder_text(*holder_pid))]
    DirectoryLocked {
        /// The directory.
        path: PathBuf,
        /// What kind of owner holds it: `"run marker"`, `"snapshot
        /// manager"` or `"undo journal"`.
        owner: &'static str,
        /// The pid of the process holding it, when its lock file says
        /// (this process's own pid when the owner is in this process).
        holder_pid: Option<u32>,
        /// What to do: stop or drop the other owner, or use another directory.
        remedy: String,
    },

    /// A component name or pid is already being watched.
    #[error(
        "{what} is already watched: names and pids must be unique; unregister the old one first"
    )]
    AlreadyWatched {
        /// What was registered twice ("component wal", "process 42").
        what: String,
    },

    /// The configured number of watched components or processes is reached.
    #[error("cannot watch more {what}: the limit of {capacity} is reached; unregister some or raise the limit")]
    WatchLimit {
        /// "components" or "processes".
        what: &'static str,
        /// The configured limit.
        capacity: usize,
    },

    // ---- snapshots ----
    /// A snapshot id that the manifest does not list.
    #[error("snapshot {id} does not exist: list the available ones with `StateSnapshotManager::snapshots`")]
    SnapshotNotFound {
        /// The id asked for.
        id: u64,
    },

    /// The snapshot directory cannot be created or written.
    #[error("snapshot directory {} is not usable: {reason}; give a writable directory", path.display())]
    SnapshotDirUnusable {
        /// The directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },

    /// No snapshot could be restored: each candidate failed verification.
    #[error("no snapshot can be restored: {reason}; take a snapshot of a good store first, or restore the data from another copy (a replica)")]
    NoUsableSnapshot {
        /// Each candidate tried and why it was refused.
        reason: String,
    },

    /// The requested snapshot cannot be restored because a file of its
    /// chain is damaged or unreadable; no other snapshot was restored instead.
    #[error("snapshot {requested} cannot be restored: snapshot {damaged} of its chain ({}) is damaged or unreadable: {reason}; {}; to restore the newest older snapshot that verifies instead, call `restore_with` with `RestoreOptions::new().fallback(Fallback::NewestOlderGood)`", path.display(), if *target_written { "pages of the target were already overwritten (with verified pages of it), so restore a snapshot before trusting the target" } else { "the target was not written" })]
    SnapshotDamaged {
        /// The snapshot asked for.
        requested: u64,
        /// The member of its chain that is damaged (`requested` or an ancestor).
        damaged: u64,
        /// That member's file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// Whether pages of the target were written before the damage was
        /// found (only without the restore pre-check).
        target_written: bool,
    },

    /// A restore into a store that seals what it writes (a
    /// [`CorruptionDetector`](crate::CorruptionDetector)) was refused: the
    /// snapshot's pages were not read through a verifying store, and one of
    /// them cannot be vouched for, so writing it would seal bytes nobody
    /// verified.
    #[error("snapshot {snapshot} cannot be restored into a store that seals its pages: it was taken from a store that does not verify its reads, and its page {page} cannot be vouched for: {reason}; {}", if *target_written { "pages of the target were already written (with pages of the snapshot that verified), so restore another snapshot before trusting the target" } else { "nothing was written" })]
    UnverifiedSnapshot {
        /// The snapshot (the member of the chain) holding the page.
        snapshot: u64,
        /// The page.
        page: PageId,
        /// Why it cannot be vouched for, and what to do instead.
        reason: String,
        /// Whether pages of the target were written before the refusal
        /// (only without the restore pre-check).
        target_written: bool,
    },

    /// A restore needs the target to have the snapshot's page count, and the
    /// target cannot be resized to it; nothing was written.
    #[error("restoring snapshot {snapshot} needs a store of {needed} pages, but the target has {actual} and cannot be resized ({reason}); nothing was written: resize the target first, or, for a larger target, keep its extra pages with `RestoreOptions::keep_extra_pages(true)`")]
    RestoreTargetSize {
        /// The snapshot being restored.
        snapshot: u64,
        /// Its page count.
        needed: u64,
        /// The target's page count.
        actual: u64,
        /// Why the target could not be resized.
        reason: String,
    },

    // ---- health ----
    /// A health probe could not produce a value (the resource is not there,
    /// the OS does not expose it, or the value is not a finite number).
    #[error("health probe `{probe}` failed: {reason}; fix the probe or remove it from the health configuration")]
    ProbeFailed {
        /// The probe's name.
        probe: String,
        /// What went wrong and, where it applies, what to check.
        reason: String,
    },

    // ---- lifecycle -------------------------------------------------------------
    /// A component was used after it was stopped, or its worker thread died.
    #[error("{component} is stopped: {reason}; build a new one to continue")]
    Stopped {
        /// The component.
        component: &'static str,
        /// Why it is stopped.
        reason: String,
    },

    /// A component hit a failure after which it must not continue (for
    /// example a failed fsync); every later call returns this error.
    #[error("{component} is poisoned and refuses further work: {reason}; drop it and build it again (its recovery runs then) to continue")]
    Poisoned {
        /// The component.
        component: &'static str,
        /// The failure that poisoned it.
        reason: String,
    },
    /// The undo journal is stalled after a retryable write or fsync failure
    /// (a full disk, `EIO`): it refuses new records until a resume
    /// ([`TransactionRollbackManager::resume`](crate::TransactionRollbackManager::resume),
    /// which the [`AutoRecoveryManager`](crate::AutoRecoveryManager) runs on
    /// its own) rewrites what it holds. Nothing it accepted was lost; a
    /// commit that returned this error is not acknowledged: call `commit`
    /// again after the resume. Retryable.
    #[error("undo journal stalled: {reason}; retrying; nothing accepted was lost (retry this call after TransactionRollbackManager::resume succeeds{})", if *no_space { "; free disk space" } else { "" })]
    JournalStalled {
        /// The failure that stalled it (the newest, after a failed resume).
        reason: String,
        /// Whether it was a lack of space (`ENOSPC`, `EDQUOT`).
        no_space: bool,
    },
    /// A writer other than the undo journal (the durable checksum table's
    /// log) is stalled after a retryable write or fsync failure (a full
    /// disk, `EIO`): it refuses new changes, keeps every byte it had not
    /// made durable, and writes them again when it resumes — on its own,
    /// after a backoff with jitter, or when its `resume` is called (the
    /// [`AutoRecoveryManager`](crate::AutoRecoveryManager) does). Nothing it
    /// accepted was lost; the call that returned this did not happen (no
    /// page was written). Retryable.
    #[error("{component} stalled: {reason}; nothing accepted was lost; retry this call after the {component} resumes (it retries on its own with backoff){}", if *no_space { "; free disk space" } else { "" })]
    Stalled {
        /// The component.
        component: &'static str,
        /// The failure that stalled it (the newest, after a failed resume).
        reason: String,
        /// Whether it was a lack of space (`ENOSPC`, `EDQUOT`).
        no_space: bool,
    },
}

/// Why the SQLite VFS refused a database file ([`Error::SqliteRefused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SqliteRefusal {
    /// The file is not the one the sidecar table protects: another file was
    /// put at its path, or the sidecar belongs to another database.
    Replaced,
    /// The file's page size (its header) is not the sidecar table's.
    PageSizeChanged,
    /// `PRAGMA quick_check` did not answer `ok` before adoption.
    QuickCheckFailed,
    /// Adoption found pages that fail the checksums the sidecar already
    /// held for them.
    DamagedAtAdoption,
    /// SQLite's freelist could not be read at adoption.
    BadFreelist,
}

impl std::fmt::Display for SqliteRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SqliteRefusal::Replaced => "the file was replaced",
            SqliteRefusal::PageSizeChanged => "the page size changed",
            SqliteRefusal::QuickCheckFailed => "PRAGMA quick_check failed",
            SqliteRefusal::DamagedAtAdoption => "pages damaged at adoption",
            SqliteRefusal::BadFreelist => "the freelist is damaged",
        })
    }
}

/// Who holds a locked directory, for a message.
fn holder_text(pid: Option<u32>) -> String {
    match pid {
        Some(p) if p == std::process::id() => format!("in this process, pid {p}"),
        Some(p) => format!("process {p}"),
        None => "holder unknown".to_owned(),
    }
}

/// A list of transaction ids for a message: the first few, then a count.
fn list_ids(ids: &[TxnId]) -> String {
    const SHOWN: usize = 16;
    let mut s = ids
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        s.push_str(&format!(" and {} more", ids.len() - SHOWN));
    }
    s
}

impl Error {
    /// Whether the same call may succeed if made again unchanged.
    ///
    /// True for transient I/O kinds (interrupted, timed out, would block), for
    /// host errors the host marked transient, for unavailable replicas, and
    /// for a stalled undo journal or checksum log (after its resume). Corruption, configuration and poisoned states are never retryable.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            Error::Host { retryable, .. } => *retryable,
            Error::ReplicaUnavailable { .. }
            | Error::JournalStalled { .. }
            | Error::Stalled { .. } => true,
            _ => false,
        }
    }

    /// Whether this error says that page bytes failed verification.
    #[must_use]
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::ChecksumMismatch { .. }
                | Error::ZeroedPage { .. }
                | Error::MisplacedPage { .. }
                | Error::InvalidTrailer { .. }
                | Error::MissingChecksum { .. }
                | Error::StalePage { .. }
        )
    }

    /// Builds an [`Error::Io`] with context.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Builds an [`Error::InvalidConfig`].
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::CorruptFile`].
    pub(crate) fn corrupt_file(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::CorruptFile {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        let transient = Error::io("reading", io::Error::from(io::ErrorKind::Interrupted));
        assert!(transient.is_retryable());
        let permanent = Error::io("reading", io::Error::from(io::ErrorKind::NotFound));
        assert!(!permanent.is_retryable());
        let corrupt = Error::ChecksumMismatch {
            page: PageId(3),
            expected: 1,
            actual: 2,
        };
        assert!(!corrupt.is_retryable());
        assert!(corrupt.is_corruption());
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = Error::PageOutOfRange {
            page: PageId(10),
            page_count: 4,
        };
        assert!(e
            .to_string()
            .starts_with("page 10 is out of range: the store has 4 pages (ids 0..4); "));
        let e = Error::Host {
            op: "read_page",
            retryable: true,
            message: "socket reset".into(),
        };
        assert!(e.to_string().ends_with("(transient: may be retried)"));
    }

    /// Every message says what to do next, not only what went wrong.
    #[test]
    fn every_message_names_a_next_step() {
        let io = || io::Error::from(io::ErrorKind::PermissionDenied);
        let cases = [
            (
                Error::PageOutOfRange {
                    page: PageId(10),
                    page_count: 4,
                },
                "use a page id below 4",
            ),
            (
                Error::io("writing /x", io()),
                "check the device, its free space and the permissions",
            ),
            (
                Error::Host {
                    op: "read_page",
                    retryable: false,
                    message: "bad".into(),
                },
                "fix the cause in the host",
            ),
            (
                Error::ReplicaUnavailable {
                    replica: ReplicaId::new("r"),
                    reason: "down".into(),
                },
                "retry later",
            ),
            (
                Error::DuplicateReplica {
                    replica: ReplicaId::new("r"),
                },
                "register it under another id",
            ),
            (
                Error::corrupt_file("/f", 3, "bad magic"),
                "move the file aside",
            ),
            (
                Error::UndoOutOfPage {
                    page: PageId(1),
                    offset: 10,
                    end: 200,
                    page_size: 128,
                },
                "split the change at the page boundary",
            ),
            (
                Error::NoUsableSnapshot {
                    reason: "none".into(),
                },
                "take a snapshot",
            ),
            (
                Error::UnverifiedCopy {
                    page: PageId(2),
                    reason: "raw copy".into(),
                },
                "repair the page from a copy that verifies",
            ),
        ];
        for (e, next) in cases {
            let m = e.to_string();
            assert!(m.contains(next), "{m:?} should say {next:?}");
        }
    }
}
