//! The matrix's machinery: the faults, how one is applied to a file with
//! `std::fs`, how a reopen is run (on its own thread, under
//! `catch_unwind`, with a deadline) and how its outcome is classified and
//! rendered.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one reopen may take before it counts as a hang.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// One fault, applied to one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No fault: the control, which checks the row's model.
    None,
    TruncHeader,
    TruncRecord,
    TruncLastByte,
    FlipHeader,
    FlipBody,
    FlipChecksum,
    ZeroSector,
    Junk,
    Deleted,
    Directory,
    Unreadable,
}

impl Fault {
    /// Every fault, in column order.
    pub const ALL: [Fault; 12] = [
        Fault::None,
        Fault::TruncHeader,
        Fault::TruncRecord,
        Fault::TruncLastByte,
        Fault::FlipHeader,
        Fault::FlipBody,
        Fault::FlipChecksum,
        Fault::ZeroSector,
        Fault::Junk,
        Fault::Deleted,
        Fault::Directory,
        Fault::Unreadable,
    ];

    /// The column heading.
    pub fn heading(self) -> &'static str {
        match self {
            Fault::None => "no fault (control)",
            Fault::TruncHeader => "truncated in header",
            Fault::TruncRecord => "truncated mid-record",
            Fault::TruncLastByte => "last byte cut",
            Fault::FlipHeader => "bit flip: header",
            Fault::FlipBody => "bit flip: body",
            Fault::FlipChecksum => "bit flip: checksum",
            Fault::ZeroSector => "512-byte sector zeroed",
            Fault::Junk => "junk",
            Fault::Deleted => "deleted",
            Fault::Directory => "a directory",
            Fault::Unreadable => "unreadable",
        }
    }

    /// Whether the fault acts on the whole file (the same for every region
    /// of it) rather than at an offset inside one region.
    pub fn whole_file(self) -> bool {
        matches!(
            self,
            Fault::TruncLastByte
                | Fault::Junk
                | Fault::Deleted
                | Fault::Directory
                | Fault::Unreadable
        )
    }
}

/// Where, in the damaged file, each fault at an offset lands. Offsets are
/// from the start of the file, taken from the format's documented layout.
#[derive(Clone, Copy, Debug)]
pub struct Spots {
    /// Length to cut the file to, inside the structure's header.
    pub header_cut: u64,
    /// Length to cut the file to, in the middle of a record.
    pub record_cut: u64,
    /// A byte of the header that is not its checksum.
    pub header: u64,
    /// A byte of a record's body.
    pub body: u64,
    /// A byte of the checksum field that guards the region.
    pub checksum: u64,
    /// A byte inside the 512-byte sector to zero.
    pub sector: u64,
}

/// A built, closed state: the file to damage, where, and how to reopen.
pub struct Built {
    pub file: PathBuf,
    pub spots: Spots,
    /// Reopens through the public API and compares with the model.
    pub reopen: Box<dyn FnOnce() -> Outcome + Send>,
}

/// What a reopen reported, before classification.
pub enum Outcome {
    /// The state equals the model and nothing was reported.
    Recovered,
    /// A documented fallback was taken and reported (short description);
    /// the state is the one that fallback documents.
    Fallback(&'static str),
    /// The open failed with a typed error.
    Refused(selfheal::Error),
    /// The open succeeded, but the state differs from the model and no
    /// fallback was reported.
    Wrong(String),
}

/// Reads a whole file.
pub fn read(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    fs::File::open(path).unwrap().read_to_end(&mut v).unwrap();
    v
}

fn flip(path: &Path, at: u64) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x10;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

fn cut(path: &Path, len: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
    f.sync_all().unwrap();
}

/// Bytes from a fixed xorshift sequence: junk that is the same every run.
fn junk(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Whether this process reads files whose mode is 000 (it runs as root,
/// or with CAP_DAC_OVERRIDE): then `chmod 000` makes nothing unreadable.
fn chmod_ignored(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let saved = fs::metadata(path).unwrap().permissions();
    fs::set_permissions(path, fs::Permissions::from_mode(0o000)).unwrap();
    let readable = fs::File::open(path).is_ok();
    fs::set_permissions(path, saved).unwrap();
    readable
}

/// Applies `fault` to `path`. "Unreadable" is `chmod 000`, or — where that
/// stops no read (root) — a symbolic link to itself, whose open fails
/// with ELOOP.
pub fn apply(fault: Fault, path: &Path, at: &Spots) {
    let len = fs::metadata(path).unwrap().len();
    assert!(
        at.header_cut < len && at.record_cut < len,
        "{}: spots past the end",
        path.display()
    );
    for o in [at.header, at.body, at.checksum, at.sector] {
        assert!(o < len, "{}: spot {o} past the end ({len})", path.display());
    }
    match fault {
        Fault::None => {}
        Fault::TruncHeader => cut(path, at.header_cut),
        Fault::TruncRecord => cut(path, at.record_cut),
        Fault::TruncLastByte => cut(path, len - 1),
        Fault::FlipHeader => flip(path, at.header),
        Fault::FlipBody => flip(path, at.body),
        Fault::FlipChecksum => flip(path, at.checksum),
        Fault::ZeroSector => {
            let start = at.sector / 512 * 512;
            let end = (start + 512).min(len);
            let mut f = OpenOptions::new().write(true).open(path).unwrap();
            f.seek(SeekFrom::Start(start)).unwrap();
            f.write_all(&vec![0u8; (end - start) as usize]).unwrap();
            f.sync_all().unwrap();
        }
        Fault::Junk => fs::write(path, junk(len as usize)).unwrap(),
        Fault::Deleted => fs::remove_file(path).unwrap(),
        Fault::Directory => {
            fs::remove_file(path).unwrap();
            fs::create_dir(path).unwrap();
        }
        Fault::Unreadable => {
            if chmod_ignored(path) {
                fs::remove_file(path).unwrap();
                std::os::unix::fs::symlink(path, path).unwrap();
            } else {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(path, fs::Permissions::from_mode(0o000)).unwrap();
            }
        }
    }
}

/// Runs `reopen` on its own thread under `catch_unwind`, and classifies
/// what it did. `file` is the damaged file: a refusal must name it.
pub fn run(file: &Path, reopen: Box<dyn FnOnce() -> Outcome + Send>) -> String {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("fault-matrix-reopen".into())
        .spawn(move || {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(reopen)));
        })
        .unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    match rx.recv_timeout(DEADLINE) {
        Err(_) => "BUG: hang".into(),
        Ok(Err(_)) => "BUG: panic".into(),
        Ok(Ok(Outcome::Recovered)) => "recovered".into(),
        Ok(Ok(Outcome::Fallback(what))) => format!("fallback: {what}"),
        Ok(Ok(Outcome::Wrong(what))) => format!("BUG: wrong state ({what})"),
        Ok(Ok(Outcome::Refused(e))) => {
            let kind = error_kind(&e);
            let msg = e.to_string();
            if !msg.contains(&name) {
                format!("BUG: refused without naming the file ({kind}: {msg})")
            } else if matches!(e, selfheal::Error::CorruptFile { .. }) && !msg.contains(" at byte ")
            {
                format!("BUG: refused without an offset ({kind})")
            } else {
                format!("refused ({kind})")
            }
        }
    }
}

/// The error's variant name.
fn error_kind(e: &selfheal::Error) -> String {
    let d = format!("{e:?}");
    d.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_string()
}
