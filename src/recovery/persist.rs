//! The open-incidents file (`dir/incidents`): what the manager resumes
//! after a restart.
//!
//! # Format
//! A framed file (see the crate's framed-file layout: magic `SHRI`,
//! version 2, payload length, payload CRC32, header CRC32) replaced
//! atomically (`incidents.tmp`, fsync, rename, fsync of the directory).
//! The payload, little-endian:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 4 | number of incidents `n` (at most 1 048 576) |
//! | 4 | … | `n` incidents, each: |
//! | +0 | 8 | incident id |
//! | +8 | 1 | source tag ([`Source`]'s declaration order, 0 … 8) |
//! | +9 | 1 | priority (0 = P0 … 3 = P3) |
//! | +10 | 8 | **age** in ns: from the first failure's detection to the save, on the saving run's clock |
//! | +18 | 1 | kind tag |
//! | +19 | … | the kind's fields: page and transaction ids 8 bytes, a pid 4, a count 8, an ETA in ns 8, a name as a 2-byte length and that many UTF-8 bytes |
//! | … | 4 | evidence length `e` (at most 4 096) |
//! | … | `e` | evidence, UTF-8 |
//!
//! Kind tags 0 to 19 follow [`FailureKind`]'s declaration order as it was
//! when they were assigned (`corrupt_page` = 0 … `worker_died` = 18,
//! `run_marker_failed` = 19); kinds added later take the next tags
//! (`journal_stalled` = 20, its `no_space` flag as one byte that is 0 or 1).
//!
//! **Times across a restart.** A clock's readings mean nothing to the
//! next process (the system clock counts from its own process's start), so
//! the file keeps each incident's age, and loading rebases it onto the
//! reading clock: detected at `now − age`. Time to heal, MTTR, RTO
//! compliance and the postmortem's offsets of a resumed incident then
//! count the time it was open under the previous run, not the downtime
//! between the runs (no clock the crate is given spans it). A clock that
//! reads less than the age (a system clock in a process that started
//! moments ago) puts the detection at its origin: the carried age is then
//! cut to the clock's reading.
//!
//! **Version 1** (still read) had the same layout with the detection time
//! itself at `+10`, a reading of the previous run's clock: an incident
//! read from it is taken as detected when it is resumed (age 0).
//!
//! # Crash analysis
//! A crash before the rename leaves the previous file: incidents opened
//! since are lost from it, but a corrupt page stays fenced and is found
//! again by a scrub, and startup recovery reports a crash again. After the
//! rename the new file stands. A damaged file (bad CRC, a length that does
//! not fit, an unknown tag) is a typed error that the manager turns into a
//! warning in its [`StartupReport`](super::StartupReport): it starts
//! without the saved incidents, never refuses to start. The file is
//! written at every start (when it is missing) and every stop, so a file
//! missing from a directory the run marker says was used before was
//! deleted or lost: that is a warning too
//! ([`incidents_warning`](super::StartupReport::incidents_warning), naming
//! the file), and the pages of the lost incidents get incidents again from
//! the suspect registry. (A previous run that was built but never started,
//! or a first start by a version that wrote the file only at stop, gives
//! the same warning, harmlessly.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fsutil::{atomic_write, decode_framed, encode_framed, read_optional};
use crate::types::{Failure, FailureKind, PageId, Priority, ReplicaId, Source, TxnId};

const MAGIC: [u8; 4] = *b"SHRI";
/// Written; version 1 is still read (see the module docs).
const VERSION: u32 = 2;
const MAX_INCIDENTS: u32 = 1 << 20;
const EVIDENCE_MAX: usize = 4_096;
/// The fewest bytes an encoded incident takes: id (8), source (1),
/// priority (1), detection time (8), kind (1), evidence length (4).
const MIN_INCIDENT_LEN: usize = 8 + 1 + 1 + 8 + 1 + 4;

/// Writes the open incidents `(id, first failure)` crash-safely, each with
/// its age at `now_ns` (the saving clock's reading).
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub(crate) fn save(path: &Path, incidents: &[(u64, Failure)], now_ns: u64) -> Result<()> {
    atomic_write(path, &encode_file(incidents, now_ns))
}

/// The file's bytes for the open incidents `(id, first failure)` (frame
/// included), each with its age at `now_ns`.
pub(crate) fn encode_file(incidents: &[(u64, Failure)], now_ns: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(incidents.len() as u32).to_le_bytes());
    for (id, f) in incidents {
        encode(&mut out, *id, f, now_ns.saturating_sub(f.detected_at_ns));
    }
    encode_framed(MAGIC, VERSION, &out)
}

/// Reads the open incidents, each detected its saved age before `now_ns`
/// (the reading clock's time; see the module docs); none when there is no
/// file.
///
/// # Errors
/// [`Error::CorruptFile`] / [`Error::UnsupportedVersion`] for a damaged
/// file; [`Error::Io`] when it cannot be read.
pub(crate) fn load(path: &Path, now_ns: u64) -> Result<Vec<(u64, Failure)>> {
    let Some(bytes) = read_optional(path)? else {
        return Ok(Vec::new());
    };
    decode_file(path, &bytes, now_ns)
}

/// Decodes the bytes of an incidents file read from `path` (named in
/// errors), each incident detected its saved age before `now_ns`.
///
/// # Errors
/// [`Error::CorruptFile`] / [`Error::UnsupportedVersion`] for anything but a
/// well-formed file.
pub(crate) fn decode_file(path: &Path, bytes: &[u8], now_ns: u64) -> Result<Vec<(u64, Failure)>> {
    let (version, payload) = decode_framed(path, bytes, MAGIC, VERSION)?;
    let mut r = Reader {
        path,
        buf: payload,
        at: 0,
    };
    let n = r.u32()?;
    if n > MAX_INCIDENTS {
        return Err(r.bad(format!("{n} incidents is more than {MAX_INCIDENTS}")));
    }
    // Every incident takes at least MIN_INCIDENT_LEN bytes: reserve no more
    // than the payload can hold, so a count the bytes do not back costs
    // nothing.
    let mut v = Vec::with_capacity((n as usize).min(payload.len() / MIN_INCIDENT_LEN));
    for _ in 0..n {
        let (id, mut f) = decode(&mut r)?;
        // Version 1 held a reading of another run's clock: age unknown.
        let age = if version == 1 { 0 } else { f.detected_at_ns };
        f.detected_at_ns = now_ns.saturating_sub(age);
        v.push((id, f));
    }
    if r.at != payload.len() {
        return Err(r.bad("bytes after the last incident".into()));
    }
    Ok(v)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn source_tag(s: Source) -> u8 {
    match s {
        Source::CorruptionDetector => 0,
        Source::Scrubber => 1,
        Source::DataRepairer => 2,
        Source::TransactionRollbackManager => 3,
        Source::CrashDetector => 4,
        Source::StateSnapshotManager => 5,
        Source::HealthMonitor => 6,
        Source::Host => 7,
        Source::RecoveryManager => 8,
    }
}

/// One incident `(id, first failure)` as the open-incidents file holds it,
/// with `age` at `+10` (shared with the escalated-incidents file).
pub(super) fn encode_incident(out: &mut Vec<u8>, id: u64, f: &Failure, age: u64) {
    encode(out, id, f, age);
}

/// One incident written by [`encode_incident`], its failure detected `age`
/// before `now_ns`.
///
/// # Errors
/// [`Error::CorruptFile`] for anything but a well-formed incident.
pub(super) fn decode_incident(r: &mut Reader<'_>, now_ns: u64) -> Result<(u64, Failure)> {
    let (id, mut f) = decode(r)?;
    f.detected_at_ns = now_ns.saturating_sub(f.detected_at_ns);
    Ok((id, f))
}

/// One incident; `time` goes at `+10` (the age in version 2).
fn encode(out: &mut Vec<u8>, id: u64, f: &Failure, time: u64) {
    out.extend_from_slice(&id.to_le_bytes());
    out.push(source_tag(f.source));
    out.push(f.priority as u8);
    out.extend_from_slice(&time.to_le_bytes());
    let u64s = |out: &mut Vec<u8>, xs: &[u64]| {
        for x in xs {
            out.extend_from_slice(&x.to_le_bytes());
        }
    };
    match &f.kind {
        FailureKind::CorruptPage { page } => {
            out.push(0);
            u64s(out, &[page.0]);
        }
        FailureKind::IrreparablePage { page } => {
            out.push(1);
            u64s(out, &[page.0]);
        }
        FailureKind::ReplicaFailing { replica } => {
            out.push(2);
            put_str(out, replica.as_str());
        }
        FailureKind::Deadlock { victim } => {
            out.push(3);
            u64s(out, &[victim.0]);
        }
        FailureKind::InFlightAtCrash { count } => {
            out.push(4);
            u64s(out, &[*count]);
        }
        FailureKind::RollbackBlocked { txn, page } => {
            out.push(5);
            u64s(out, &[txn.0, page.0]);
        }
        FailureKind::JournalPoisoned => out.push(6),
        FailureKind::ComponentSuspect { component } => {
            out.push(7);
            put_str(out, component);
        }
        FailureKind::ComponentDead { component } => {
            out.push(8);
            put_str(out, component);
        }
        FailureKind::ProcessGone { pid } => {
            out.push(9);
            out.extend_from_slice(&pid.to_le_bytes());
        }
        FailureKind::UncleanShutdown => out.push(10),
        FailureKind::SnapshotFailed => out.push(11),
        FailureKind::ScrubCursorFailed => out.push(12),
        FailureKind::HealthDegraded { metric } => {
            out.push(13);
            put_str(out, metric);
        }
        FailureKind::HealthCritical { metric } => {
            out.push(14);
            put_str(out, metric);
        }
        FailureKind::PredictedFailure { metric, eta } => {
            out.push(15);
            put_str(out, metric);
            u64s(out, &[u64::try_from(eta.as_nanos()).unwrap_or(u64::MAX)]);
        }
        FailureKind::Anomaly { metric } => {
            out.push(16);
            put_str(out, metric);
        }
        FailureKind::ProbeFailed { metric } => {
            out.push(17);
            put_str(out, metric);
        }
        FailureKind::WorkerDied { component } => {
            out.push(18);
            put_str(out, component);
        }
        FailureKind::RunMarkerFailed => out.push(19),
        FailureKind::JournalStalled { no_space } => {
            out.push(20);
            out.push(u8::from(*no_space));
        }
        FailureKind::ChecksumLogStalled { no_space } => {
            out.push(21);
            out.push(u8::from(*no_space));
        }
    }
    let mut end = f.evidence.len().min(EVIDENCE_MAX);
    while !f.evidence.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u32).to_le_bytes());
    out.extend_from_slice(&f.evidence.as_bytes()[..end]);
}

/// Reads a framed file's payload field by field; every shortfall is a
/// typed [`Error::CorruptFile`] naming the offset (shared by the manager's
/// files).
pub(super) struct Reader<'a> {
    pub(super) path: &'a Path,
    pub(super) buf: &'a [u8],
    pub(super) at: usize,
}

impl Reader<'_> {
    pub(super) fn bad(&self, why: String) -> Error {
        // The payload starts after the 24-byte frame header.
        Error::corrupt_file(self.path, self.at as u64 + 24, why)
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.buf.len() - self.at < n {
            return Err(self.bad(format!("{n} bytes expected, the payload ends")));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    pub(super) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    pub(super) fn text(&mut self, n: usize) -> Result<String> {
        let b = self.take(n)?.to_vec();
        String::from_utf8(b).map_err(|_| self.bad("text is not UTF-8".into()))
    }

    fn name(&mut self) -> Result<Arc<str>> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().expect("2")) as usize;
        Ok(Arc::from(self.text(n)?))
    }
}

/// One incident, with the field at `+10` (age or, in version 1, detection
/// time) in `detected_at_ns`, for [`load`] to rebase.
fn decode(r: &mut Reader<'_>) -> Result<(u64, Failure)> {
    let id = r.u64()?;
    let source = match r.u8()? {
        0 => Source::CorruptionDetector,
        1 => Source::Scrubber,
        2 => Source::DataRepairer,
        3 => Source::TransactionRollbackManager,
        4 => Source::CrashDetector,
        5 => Source::StateSnapshotManager,
        6 => Source::HealthMonitor,
        7 => Source::Host,
        8 => Source::RecoveryManager,
        t => return Err(r.bad(format!("unknown source tag {t}"))),
    };
    let priority = match r.u8()? {
        0 => Priority::P0,
        1 => Priority::P1,
        2 => Priority::P2,
        3 => Priority::P3,
        t => return Err(r.bad(format!("unknown priority {t}"))),
    };
    let detected_at_ns = r.u64()?;
    let kind = match r.u8()? {
        0 => FailureKind::CorruptPage {
            page: PageId(r.u64()?),
        },
        1 => FailureKind::IrreparablePage {
            page: PageId(r.u64()?),
        },
        2 => FailureKind::ReplicaFailing {
            replica: ReplicaId(r.name()?),
        },
        3 => FailureKind::Deadlock {
            victim: TxnId(r.u64()?),
        },
        4 => FailureKind::InFlightAtCrash { count: r.u64()? },
        5 => FailureKind::RollbackBlocked {
            txn: TxnId(r.u64()?),
            page: PageId(r.u64()?),
        },
        6 => FailureKind::JournalPoisoned,
        7 => FailureKind::ComponentSuspect {
            component: r.name()?,
        },
        8 => FailureKind::ComponentDead {
            component: r.name()?,
        },
        9 => FailureKind::ProcessGone { pid: r.u32()? },
        10 => FailureKind::UncleanShutdown,
        11 => FailureKind::SnapshotFailed,
        12 => FailureKind::ScrubCursorFailed,
        13 => FailureKind::HealthDegraded { metric: r.name()? },
        14 => FailureKind::HealthCritical { metric: r.name()? },
        15 => FailureKind::PredictedFailure {
            metric: r.name()?,
            eta: Duration::from_nanos(r.u64()?),
        },
        16 => FailureKind::Anomaly { metric: r.name()? },
        17 => FailureKind::ProbeFailed { metric: r.name()? },
        18 => FailureKind::WorkerDied {
            component: r.name()?,
        },
        19 => FailureKind::RunMarkerFailed,
        20 => FailureKind::JournalStalled {
            no_space: match r.u8()? {
                0 => false,
                1 => true,
                b => return Err(r.bad(format!("journal_stalled flag {b} is not 0 or 1"))),
            },
        },
        21 => FailureKind::ChecksumLogStalled {
            no_space: match r.u8()? {
                0 => false,
                1 => true,
                b => return Err(r.bad(format!("checksum_log_stalled flag {b} is not 0 or 1"))),
            },
        },
        t => return Err(r.bad(format!("unknown failure kind tag {t}"))),
    };
    let n = r.u32()? as usize;
    if n > EVIDENCE_MAX {
        return Err(r.bad(format!("evidence of {n} bytes is more than {EVIDENCE_MAX}")));
    }
    let evidence = r.text(n)?;
    let mut f = Failure::new(source, kind, evidence, detected_at_ns);
    f.priority = priority;
    Ok((id, f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kinds() -> Vec<FailureKind> {
        let m: Arc<str> = Arc::from("m");
        vec![
            FailureKind::CorruptPage { page: PageId(3) },
            FailureKind::IrreparablePage { page: PageId(4) },
            FailureKind::ReplicaFailing {
                replica: ReplicaId::new("r"),
            },
            FailureKind::Deadlock { victim: TxnId(5) },
            FailureKind::InFlightAtCrash { count: 2 },
            FailureKind::RollbackBlocked {
                txn: TxnId(6),
                page: PageId(7),
            },
            FailureKind::JournalPoisoned,
            FailureKind::ComponentSuspect {
                component: m.clone(),
            },
            FailureKind::ComponentDead {
                component: m.clone(),
            },
            FailureKind::ProcessGone { pid: 42 },
            FailureKind::UncleanShutdown,
            FailureKind::SnapshotFailed,
            FailureKind::ScrubCursorFailed,
            FailureKind::HealthDegraded { metric: m.clone() },
            FailureKind::HealthCritical { metric: m.clone() },
            FailureKind::PredictedFailure {
                metric: m.clone(),
                eta: Duration::from_secs(9),
            },
            FailureKind::Anomaly { metric: m.clone() },
            FailureKind::ProbeFailed { metric: m.clone() },
            FailureKind::WorkerDied { component: m },
            FailureKind::RunMarkerFailed,
            FailureKind::JournalStalled { no_space: true },
            FailureKind::JournalStalled { no_space: false },
            FailureKind::ChecksumLogStalled { no_space: true },
            FailureKind::ChecksumLogStalled { no_space: false },
        ]
    }

    proptest! {
        /// Every kind round-trips, and any damage to the file is a typed
        /// error or the same incidents (never a panic).
        #[test]
        fn round_trip_and_damage(
            ids in proptest::collection::vec(1u64..1_000, 0..30),
            evidence in "\\PC{0,40}",
            flip in any::<(usize, u8)>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("incidents");
            let ks = kinds();
            let v: Vec<(u64, Failure)> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let mut f = Failure::new(Source::Scrubber, ks[i % ks.len()].clone(), evidence.clone(), *id * 7);
                    f.priority = Priority::P3;
                    (*id, f)
                })
                .collect();
            // Saved and read at one clock time: the same incidents.
            save(&path, &v, 10_000).unwrap();
            prop_assert_eq!(load(&path, 10_000).unwrap(), v.clone());
            let mut bytes = std::fs::read(&path).unwrap();
            let at = flip.0 % bytes.len();
            bytes[at] ^= flip.1.max(1);
            std::fs::write(&path, &bytes).unwrap();
            match load(&path, 10_000) {
                Ok(got) => prop_assert_eq!(got, v),
                Err(e) => prop_assert!(matches!(e, Error::CorruptFile { .. } | Error::UnsupportedVersion { .. }), "{e:?}"),
            }
        }
    }

    #[test]
    fn no_file_is_no_incidents() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("incidents"), 0).unwrap().is_empty());
    }

    fn failure(detected_at_ns: u64) -> Failure {
        Failure::new(
            Source::Scrubber,
            FailureKind::CorruptPage { page: PageId(9) },
            "bad crc",
            detected_at_ns,
        )
    }

    #[test]
    fn an_incident_keeps_its_age_on_the_reading_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents");
        // Detected at 700 s of the first run's clock, saved at 1 000 s.
        const S: u64 = 1_000_000_000;
        save(&path, &[(4, failure(700 * S))], 1_000 * S).unwrap();
        // The next run's clock has another origin.
        let got = load(&path, 50 * S).unwrap();
        assert_eq!(got[0].0, 4);
        assert_eq!(got[0].1.detected_at_ns, 0, "cut to the clock's reading");
        let got = load(&path, 5_000 * S).unwrap();
        assert_eq!(got[0].1.detected_at_ns, 4_700 * S, "300 s old");
        assert_eq!(got[0].1.kind, failure(0).kind);
    }

    #[test]
    fn a_version_1_file_is_read_and_its_incidents_are_detected_at_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents");
        let mut payload = 1u32.to_le_bytes().to_vec();
        // Version 1: the detection time itself, on another run's clock.
        encode(&mut payload, 7, &failure(123_456), 123_456);
        std::fs::write(&path, encode_framed(MAGIC, 1, &payload)).unwrap();
        let got = load(&path, 42).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].1.detected_at_ns), (7, 42));
        assert_eq!(got[0].1.evidence, "bad crc");
    }
}
