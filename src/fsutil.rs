//! Crash-safe small files: the one way the library writes a whole file, and the
//! one frame (magic, version, length, CRCs) every such file carries.
//!
//! # Framed file layout (all integers little-endian)
//!
//! | offset | size | field                                   |
//! |-------:|-----:|-----------------------------------------|
//! | 0      | 4    | magic (file kind, e.g. `SHCT`)          |
//! | 4      | 4    | format version                          |
//! | 8      | 8    | payload length in bytes                 |
//! | 16     | 4    | CRC32 of the payload                    |
//! | 20     | 4    | CRC32 of bytes 0..20                    |
//! | 24     | n    | payload                                 |
//!
//! A reader checks the header CRC before trusting the length, the length
//! against the file size before reading, and the payload CRC before decoding,
//! so a truncated, zeroed or garbled file is a typed error, never a panic.
//!
//! # Atomic replace
//!
//! [`atomic_write`] writes `name.tmp`, fsyncs it, renames it over `name` and
//! fsyncs the directory. A crash before the rename leaves the old file; after
//! it, the new one. Files are created owner-only (`0o600`) on Unix.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Length of the frame header.
pub(crate) const FRAME_HEADER_LEN: usize = 24;

/// Wraps `payload` in the frame described in the module docs.
pub(crate) fn encode_framed(magic: [u8; 4], version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&out[..20]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the frame of `bytes` (read from `path`) and returns its version and
/// payload.
///
/// # Errors
/// [`Error::CorruptFile`] for a wrong magic, a bad CRC or a length that does
/// not fit; [`Error::UnsupportedVersion`] for a version above `max_version`.
pub(crate) fn decode_framed<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: [u8; 4],
    max_version: u32,
) -> Result<(u32, &'a [u8])> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(Error::corrupt_file(
            path,
            0,
            format!(
                "file is {} bytes, shorter than its {FRAME_HEADER_LEN}-byte header",
                bytes.len()
            ),
        ));
    }
    let header_crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..20]) != header_crc {
        return Err(Error::corrupt_file(path, 20, "header checksum mismatch"));
    }
    if bytes[..4] != magic {
        return Err(Error::corrupt_file(
            path,
            0,
            format!("magic {:?} is not {:?}", &bytes[..4], magic),
        ));
    }
    let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if version == 0 || version > max_version {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: max_version,
        });
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let available = (bytes.len() - FRAME_HEADER_LEN) as u64;
    if len != available {
        return Err(Error::corrupt_file(
            path,
            8,
            format!("header says {len} payload bytes, file has {available}"),
        ));
    }
    let payload = &bytes[FRAME_HEADER_LEN..];
    let payload_crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    if crc32fast::hash(payload) != payload_crc {
        return Err(Error::corrupt_file(
            path,
            FRAME_HEADER_LEN as u64,
            "payload checksum mismatch",
        ));
    }
    Ok((version, payload))
}

/// Options for every file the library opens: owner-only when created, and
/// non-blocking on Unix, so that a named pipe put where one of its files
/// belongs fails the open (or is refused by [`check_regular`]) instead of
/// blocking it forever. On a regular file `O_NONBLOCK` changes nothing.
pub(crate) fn private_create_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600).custom_flags(libc::O_NONBLOCK);
    }
    o
}

/// What kind of file system object `meta` describes, for messages.
fn kind_of(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "named pipe";
        }
        if t.is_socket() {
            return "socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "device";
        }
    }
    if t.is_symlink() {
        return "symbolic link";
    }
    "special file"
}

/// Refuses a path that exists and is not a regular file (symbolic links are
/// followed). A path that does not exist passes: the open that follows says so.
///
/// # Errors
/// [`Error::NotRegularFile`].
pub(crate) fn check_regular(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(Error::NotRegularFile {
            path: path.to_path_buf(),
            kind: kind_of(&meta),
        }),
        _ => Ok(()),
    }
}

/// Opens `path` with `options` (which should come from
/// [`private_create_options`]), refusing anything but a regular file both
/// before the open and, for the race in between, after it on the handle.
///
/// # Errors
/// [`Error::NotRegularFile`]; [`Error::Io`] naming `what` and the path.
pub(crate) fn open_regular(options: &OpenOptions, path: &Path, what: &str) -> Result<File> {
    check_regular(path)?;
    let f = options
        .open(path)
        .map_err(|e| Error::io(format!("{what} {}", path.display()), e))?;
    let meta = f
        .metadata()
        .map_err(|e| Error::io(format!("{what} {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(Error::NotRegularFile {
            path: path.to_path_buf(),
            kind: kind_of(&meta),
        });
    }
    Ok(f)
}

/// Reads a whole regular file.
///
/// # Errors
/// [`Error::NotRegularFile`]; [`Error::Io`] (with kind `NotFound` when the
/// file does not exist).
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    let mut f = open_regular(private_create_options().read(true), path, "opening")?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut bytes)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(bytes)
}

/// The names of the entries of `dir` that are valid UTF-8 (others cannot be
/// the library's and are skipped).
///
/// # Errors
/// [`Error::Io`] when the directory cannot be listed.
pub(crate) fn list_names(dir: &Path) -> Result<Vec<String>> {
    let listing = |e| Error::io(format!("listing {}", dir.display()), e);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(listing)? {
        if let Some(name) = entry.map_err(listing)?.file_name().to_str() {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// Fsyncs a directory so that a rename or create inside it is durable.
///
/// # Errors
/// [`Error::Io`] when the directory cannot be opened or synced.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let d = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(dir)
            .map_err(|e| Error::io(format!("opening directory {}", dir.display()), e))?;
        d.sync_all()
            .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The temporary name used while `path` is being replaced.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` crash-safely (see the module docs).
///
/// # Errors
/// [`Error::Io`] naming the step that failed; the old file is then untouched.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    // The file being replaced must be a regular file too: renaming over a
    // directory or a pipe would fail late or replace something not ours.
    check_regular(path)?;
    let mut f = open_regular(
        private_create_options()
            .write(true)
            .create(true)
            .truncate(true),
        &tmp,
        "creating",
    )?;
    f.write_all(bytes)
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    f.sync_all()
        .map_err(|e| Error::io(format!("syncing {}", tmp.display()), e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| {
        Error::io(
            format!("renaming {} to {}", tmp.display(), path.display()),
            e,
        )
    })?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    sync_dir(dir.unwrap_or(Path::new(".")))
}

/// Reads a whole file; `Ok(None)` when it does not exist.
///
/// # Errors
/// [`Error::Io`] for any other failure.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match read_file(path) {
        Ok(b) => Ok(Some(b)),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAGIC: [u8; 4] = *b"TEST";

    #[test]
    fn atomic_write_replaces_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!tmp_path(&p).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "file must be owner-only");
        }
    }

    /// A named pipe or a directory where a library file belongs is refused
    /// with a typed error, and never makes a read or a replace block.
    #[cfg(unix)]
    #[test]
    fn non_regular_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo (coreutils) is needed");
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        for (path, kind) in [(&fifo, "named pipe"), (&sub, "directory")] {
            for r in [
                read_optional(path).map(|_| ()),
                read_file(path).map(|_| ()),
                atomic_write(path, b"x"),
            ] {
                match r {
                    Err(Error::NotRegularFile { kind: k, .. }) => assert_eq!(k, kind),
                    other => panic!("{kind}: {other:?}"),
                }
            }
        }
        // A pipe where the temporary file goes fails the replace, without blocking.
        let target = dir.path().join("target");
        let status = std::process::Command::new("mkfifo")
            .arg(tmp_path(&target))
            .status()
            .unwrap();
        assert!(status.success());
        assert!(matches!(
            atomic_write(&target, b"x"),
            Err(Error::NotRegularFile {
                kind: "named pipe",
                ..
            })
        ));
        assert_eq!(read_optional(&dir.path().join("missing")).unwrap(), None);
    }

    #[test]
    fn rejects_newer_version() {
        let b = encode_framed(MAGIC, 9, b"x");
        let e = decode_framed(Path::new("f"), &b, MAGIC, 1).unwrap_err();
        assert!(matches!(e, Error::UnsupportedVersion { found: 9, .. }));
    }

    proptest! {
        #[test]
        fn frame_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..512), version in 1u32..4) {
            let b = encode_framed(MAGIC, version, &payload);
            let (v, p) = decode_framed(Path::new("f"), &b, MAGIC, 4).unwrap();
            prop_assert_eq!(v, version);
            prop_assert_eq!(p, &payload[..]);
        }

        #[test]
        fn any_damage_is_a_typed_error(payload in proptest::collection::vec(any::<u8>(), 1..256),
                                        flip in any::<usize>(), cut in any::<usize>(), zero in any::<bool>()) {
            let mut b = encode_framed(MAGIC, 1, &payload);
            let i = flip % b.len();
            b[i] ^= 1 << (flip % 8);
            prop_assert!(decode_framed(Path::new("f"), &b, MAGIC, 1).is_err());
            let mut t = encode_framed(MAGIC, 1, &payload);
            t.truncate(cut % t.len());
            prop_assert!(decode_framed(Path::new("f"), &t, MAGIC, 1).is_err());
            if zero {
                let z = vec![0u8; b.len()];
                prop_assert!(decode_framed(Path::new("f"), &z, MAGIC, 1).is_err());
            }
        }
    }
}
