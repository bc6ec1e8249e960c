//! The I/O steps of the snapshot write path at which an OS error can be
//! injected (the `testing` feature's `StateSnapshotManager::fail_io`); a
//! file of its own so that the manager's state (`inner.rs`) and the
//! injection (`crash.rs`) both name it without importing each other.

/// The I/O steps of the snapshot write path at which the `testing` feature
/// can inject an OS error (`StateSnapshotManager::fail_io`): the call fails
/// with it instead of being made, as a full disk or a failing device makes
/// it fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotIo {
    /// A write of the snapshot file (after at least one chunk reached it).
    FileWrite,
    /// The snapshot file's fsync.
    FileSync,
    /// The rename of the snapshot file into place.
    FileRename,
    /// The directory's fsync after that rename.
    DirSync,
    /// The write and fsync of the new manifest's temporary file.
    ManifestWrite,
    /// The directory's fsync after the manifest's rename (the new manifest
    /// is then in place but maybe not durable).
    ManifestDirSync,
}
