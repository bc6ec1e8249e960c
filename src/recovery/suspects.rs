//! The durable suspect registry (`dir/suspects`): the pages known bad,
//! kept across a restart as SQL Server keeps `msdb..suspect_pages`, so a
//! page known bad stays fenced from the moment the next manager is built
//! and is not re-discovered from scratch.
//!
//! The dispatcher saves the detector's fenced pages (`Suspect`,
//! `Repairing`, `Irreparable`) when the set changed — at most every
//! 100 ms, and, under a burst, waiting ten times as long as the last save
//! took, so saving takes at most a tenth of its time — and at stop.
//! [`RecoveryConfig::build`](super::RecoveryConfig::build)
//! reads it back and fences each page again (as `Suspect`: an irreparable
//! page is tried once more, a replica may have come back); `start` opens an
//! incident for each that no resumed incident covers.
//!
//! # Format
//! A framed file (magic `SHRS`, version 1, payload length, payload CRC32,
//! header CRC32; see `fsutil`) replaced crash-safely through a
//! [`TableStorage`] (`suspects.tmp`, fsync, rename, fsync of the
//! directory). The payload, little-endian:
//!
//! | size | field |
//! |-----:|-------|
//! | 4 | number of pages `n` (at most 2²⁴) |
//! | 17 × n | `n` records, by page |
//!
//! Each record: page id (8), state (1: 0 suspect, 1 repairing, 2
//! irreparable), first seen, clock ns (8). Records are fixed-size so that a
//! damaged file can still be read for its page ids.
//!
//! # Crash analysis
//! - Before the rename: the previous file stands (`suspects.tmp`, whole or
//!   torn, is ignored and replaced by the next save). Pages fenced since the
//!   last save are not in it: a scrub finds them again; pages repaired
//!   since are fenced again at start and re-checked by their repair (which
//!   finds them clean or repairs them).
//! - After the rename (before or after the directory fsync): the new file,
//!   or — if the rename was not durable — the previous one, as above.
//! - A damaged file (bad CRC, a length that does not fit, media rot) is
//!   never an error that stops recovery: the manager warns
//!   ([`StartupReport::suspects_warning`](super::StartupReport::suspects_warning)),
//!   reads whatever page ids the records still hold (bounded by the
//!   store's size), and re-checks each with an error-only read — a page
//!   that fails is fenced and reported, one that verifies is left alone.
//! - A missing file: the build writes the file (empty, or with the pages
//!   fenced by then) whenever it finds none, so after the first build of
//!   a manager over a directory the file always exists. When it is missing
//!   although the run marker says the directory was used before (any
//!   verdict but [`RunVerdict::FirstRun`](crate::crash::RunVerdict::FirstRun)),
//!   it was deleted or lost, and with it the pages known bad: a page known
//!   bad must not silently become trusted again, so the manager warns
//!   (`suspects_warning`, naming the file) and re-checks **every** page of
//!   the store with an error-only read (one read of the store, as a scrub
//!   pass; a page that fails is fenced, reported on the bus and gets an
//!   incident at start). The same warning follows, harmlessly, a previous
//!   build that failed before it wrote the file, and the first build of
//!   this version over a directory whose runs never fenced a page (older
//!   versions wrote the file only once a page was fenced).

use std::sync::Arc;
use std::time::Duration;

use crate::checksum::storage::replace;
use crate::checksum::TableStorage;
use crate::corruption::{CorruptionDetector, Observer, PageState, Verdict};
use crate::error::Result;
use crate::fsutil::{decode_framed, encode_framed, FRAME_HEADER_LEN};
use crate::types::PageId;

use super::persist::Reader;

/// The file's name in the manager's directory.
pub(super) const NAME: &str = "suspects";
/// How often the dispatcher compares the fenced pages with the file, at most.
pub(super) const SAVE_EVERY: Duration = Duration::from_millis(100);
/// Pages the file holds at most.
pub(crate) const MAX_PAGES: u32 = 1 << 24;

const MAGIC: [u8; 4] = *b"SHRS";
const VERSION: u32 = 1;
const RECORD_LEN: usize = 17;

/// One fenced page as saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Saved {
    pub(crate) page: PageId,
    pub(crate) state: PageState,
    pub(crate) first_seen_ns: u64,
}

fn state_tag(s: PageState) -> u8 {
    match s {
        PageState::Suspect => 0,
        PageState::Repairing => 1,
        // Repaired pages are not saved; the tag is never written for them.
        PageState::Irreparable | PageState::Repaired => 2,
    }
}

/// The detector's fenced pages and their states, by page: cheap to take
/// and compare (no entry is cloned).
pub(crate) fn fenced_keys(det: &CorruptionDetector) -> Vec<(PageId, u8)> {
    keys_of(&fenced(det))
}

fn keys_of(saved: &[Saved]) -> Vec<(PageId, u8)> {
    saved.iter().map(|s| (s.page, state_tag(s.state))).collect()
}

/// The detector's fenced pages, by page.
pub(crate) fn fenced(det: &CorruptionDetector) -> Vec<Saved> {
    det.fenced_pages()
        .into_iter()
        .map(|(page, state, first_seen_ns)| Saved {
            page,
            state,
            first_seen_ns,
        })
        .collect()
}

/// The file's bytes for `pages`.
pub(crate) fn encode(pages: &[Saved]) -> Vec<u8> {
    let n = pages.len().min(MAX_PAGES as usize);
    let mut out = Vec::with_capacity(4 + n * RECORD_LEN);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for s in &pages[..n] {
        out.extend_from_slice(&s.page.0.to_le_bytes());
        out.push(state_tag(s.state));
        out.extend_from_slice(&s.first_seen_ns.to_le_bytes());
    }
    encode_framed(MAGIC, VERSION, &out)
}

/// Replaces the file with `pages`, crash-safely.
///
/// # Errors
/// The failing step's [`Error::Io`](crate::Error::Io); the previous file
/// then stands.
pub(crate) fn save(storage: &dyn TableStorage, pages: &[Saved]) -> Result<()> {
    replace(storage, NAME, &encode(pages))
}

/// Decodes the file's bytes.
///
/// # Errors
/// [`Error::CorruptFile`](crate::Error::CorruptFile) /
/// [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion) for damage.
pub(crate) fn decode(storage: &dyn TableStorage, bytes: &[u8]) -> Result<Vec<Saved>> {
    let path = storage.path(NAME);
    let (_, payload) = decode_framed(&path, bytes, MAGIC, VERSION)?;
    let mut r = Reader {
        path: &path,
        buf: payload,
        at: 0,
    };
    let n = r.u32()?;
    if n > MAX_PAGES {
        return Err(r.bad(format!("{n} pages is more than {MAX_PAGES}")));
    }
    if payload.len() != 4 + n as usize * RECORD_LEN {
        return Err(r.bad(format!(
            "{n} records need {} payload bytes, the payload has {}",
            4 + n as usize * RECORD_LEN,
            payload.len()
        )));
    }
    let mut v = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let page = PageId(r.u64()?);
        let state = match r.u8()? {
            0 => PageState::Suspect,
            1 => PageState::Repairing,
            2 => PageState::Irreparable,
            t => return Err(r.bad(format!("unknown page state {t}"))),
        };
        let first_seen_ns = r.u64()?;
        v.push(Saved {
            page,
            state,
            first_seen_ns,
        });
    }
    Ok(v)
}

/// The page ids a damaged file's records still name: every whole record
/// after the frame header and the count, whatever its CRCs say. Untrusted:
/// the caller only re-checks them.
pub(crate) fn salvage(bytes: &[u8], page_count: u64) -> Vec<PageId> {
    let start = FRAME_HEADER_LEN + 4;
    if bytes.len() <= start {
        return Vec::new();
    }
    let mut pages: Vec<PageId> = bytes[start..]
        .chunks_exact(RECORD_LEN)
        .take(MAX_PAGES as usize)
        .map(|r| PageId(u64::from_le_bytes(r[..8].try_into().expect("8 bytes"))))
        .filter(|p| p.0 < page_count)
        .collect();
    pages.sort_unstable();
    pages.dedup();
    pages
}

/// What reading the file back at build did.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    /// Pages fenced again from the file.
    pub(crate) fenced: Vec<PageId>,
    /// Pages of a damaged file re-checked and found bad (fenced and
    /// reported by the detector).
    pub(crate) rechecked_bad: Vec<PageId>,
    /// Why the file could not be read as it was written.
    pub(crate) warning: Option<String>,
}

/// Reads the file back and fences its pages in `det` (see the module
/// docs). Never fails: damage is a warning and an error-only re-check of
/// the pages the file still names; a file missing although the manager's
/// directory was `used_before` is a warning and an error-only re-check of
/// every page. A missing file is written (with the pages fenced now) so
/// that the next build can tell a deletion from a first run.
pub(crate) fn restore(
    storage: &dyn TableStorage,
    det: &CorruptionDetector,
    used_before: bool,
) -> Restored {
    let mut out = Restored::default();
    let bytes = match storage.read(NAME) {
        Ok(Some(b)) => b,
        Ok(None) => {
            if used_before {
                let path = storage.path(NAME);
                let pages = det.store().page_count();
                tracing::warn!(path = %path.display(), pages, "the suspect registry is missing although the directory was used before; re-checking every page");
                let bad = recheck(det, 0..pages);
                out.warning = Some(format!(
                    "the suspect registry {} is missing although this directory was used \
                     before (deleted, or lost with its directory entry): the pages it named \
                     are unknown, so all {pages} page(s) were re-checked and {} found bad",
                    path.display(),
                    bad.len()
                ));
                out.rechecked_bad = bad;
            }
            if let Err(e) = save(storage, &fenced(det)) {
                tracing::warn!(error = %e, "the suspect registry could not be written at build; the next save tries again");
            }
            return out;
        }
        Err(e) => {
            tracing::warn!(error = %e, "the suspect registry cannot be read; a scrub finds the pages again");
            out.warning = Some(e.to_string());
            return out;
        }
    };
    match decode(storage, &bytes) {
        Ok(saved) => {
            for s in saved {
                let why = format!(
                    "recorded {} by the previous run's suspect registry (first seen at {} ns)",
                    s.state.as_str(),
                    s.first_seen_ns
                );
                if det.fence(s.page, &why) {
                    out.fenced.push(s.page);
                }
            }
        }
        Err(e) => {
            let pages = salvage(&bytes, det.store().page_count());
            tracing::warn!(error = %e, pages = pages.len(), "the suspect registry is damaged; re-checking the pages it still names");
            out.warning = Some(format!(
                "{e}; the {} page(s) it still names were re-checked",
                pages.len()
            ));
            out.rechecked_bad = recheck(det, pages.into_iter().map(|p| p.0));
        }
    }
    out
}

/// Error-only re-checks of `pages`: the ones found bad (fenced and
/// reported by the detector).
fn recheck(det: &CorruptionDetector, pages: impl Iterator<Item = u64>) -> Vec<PageId> {
    let mut bad = Vec::new();
    for p in pages.map(PageId) {
        match det.check_page(p, Observer::Scrub) {
            Ok(Verdict::Corrupt { .. }) => bad.push(p),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(page = %p, error = %e, "a page could not be re-checked for the suspect registry");
            }
        }
    }
    bad
}

/// Keeps the file in step with the detector's fenced pages.
pub(crate) struct SuspectFile {
    pub(crate) storage: Arc<dyn TableStorage>,
    /// The pages and states the file holds (as last written).
    pub(crate) last: parking_lot::Mutex<Vec<(PageId, u8)>>,
}

impl SuspectFile {
    /// Over `storage`, which holds `det`'s fenced pages now.
    pub(crate) fn new(storage: Arc<dyn TableStorage>, det: &CorruptionDetector) -> Self {
        SuspectFile {
            storage,
            last: parking_lot::Mutex::new(fenced_keys(det)),
        }
    }

    /// Writes the fenced pages when they differ from the file.
    ///
    /// # Errors
    /// The write's [`Error::Io`](crate::Error::Io) (the next call tries again).
    pub(crate) fn sync_with(&self, det: &CorruptionDetector) -> Result<()> {
        let mut last = self.last.lock();
        // One look at the registry: the pages compared are those saved.
        let now = fenced(det);
        let keys = keys_of(&now);
        if *last == keys {
            return Ok(());
        }
        save(self.storage.as_ref(), &now)?;
        *last = keys;
        Ok(())
    }
}

impl std::fmt::Debug for SuspectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuspectFile")
            .field("pages", &self.last.lock().len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::testing::CrashFiles;
    use proptest::prelude::*;

    fn arb_saved() -> impl Strategy<Value = Vec<Saved>> {
        proptest::collection::vec((0u64..1_000_000, 0u8..3, any::<u64>()), 0..64).prop_map(|v| {
            let mut v: Vec<Saved> = v
                .into_iter()
                .map(|(p, s, t)| Saved {
                    page: PageId(p),
                    state: match s {
                        0 => PageState::Suspect,
                        1 => PageState::Repairing,
                        _ => PageState::Irreparable,
                    },
                    first_seen_ns: t,
                })
                .collect();
            v.sort_by_key(|s| s.page);
            v.dedup_by_key(|s| s.page);
            v
        })
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(pages in arb_saved()) {
            let files = CrashFiles::new();
            prop_assert_eq!(decode(&files, &encode(&pages)).unwrap(), pages);
        }

        #[test]
        fn any_flipped_byte_is_a_typed_error_and_salvage_stays_in_range(
            pages in arb_saved(),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let files = CrashFiles::new();
            let mut bytes = encode(&pages);
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let typed = matches!(
                decode(&files, &bytes),
                Err(Error::CorruptFile { .. } | Error::UnsupportedVersion { .. })
            );
            prop_assert!(typed, "a flipped bit must be a typed error");
            prop_assert!(salvage(&bytes, 1_000).iter().all(|p| p.0 < 1_000));
        }

        #[test]
        fn any_truncation_is_a_typed_error(pages in arb_saved(), cut in any::<prop::sample::Index>()) {
            let files = CrashFiles::new();
            let bytes = encode(&pages);
            let cut = cut.index(bytes.len());
            prop_assert!(decode(&files, &bytes[..cut]).is_err());
        }
    }

    /// A detector over 8 sealed pages (under `placement`) of which page 5
    /// is damaged, and the raw store.
    fn damaged_store(
        placement: crate::ChecksumPlacement,
    ) -> (CorruptionDetector, Arc<crate::MemStore>) {
        use crate::host::PageStore;
        let raw = Arc::new(crate::MemStore::new(4096, 8).unwrap());
        let det = crate::CorruptionConfig::new(placement)
            .build(raw.clone())
            .unwrap();
        for p in 0..8u64 {
            let mut b = vec![p as u8 + 1; 4096];
            det.write_sealed(PageId(p), &mut b).unwrap();
        }
        let mut b = vec![0u8; 4096];
        raw.read_page(PageId(5), &mut b).unwrap();
        b[100] ^= 1;
        raw.write_page(PageId(5), &b).unwrap();
        (det, raw)
    }

    fn placements() -> [crate::ChecksumPlacement; 2] {
        [
            crate::ChecksumPlacement::Trailer,
            crate::ChecksumPlacement::Sidecar(Arc::new(crate::ChecksumTable::new(4096).unwrap())),
        ]
    }

    #[test]
    fn a_registry_missing_from_a_used_directory_is_a_warning_and_every_page_is_rechecked() {
        for placement in placements() {
            let (det, _raw) = damaged_store(placement);
            let files = CrashFiles::new();
            let r = restore(&files, &det, true);
            let w = r.warning.expect("a missing registry must be noticed");
            assert!(w.contains("missing") && w.contains(NAME), "{w}");
            assert_eq!(r.rechecked_bad, vec![PageId(5)]);
            assert_eq!(det.pages_in(PageState::Suspect), vec![PageId(5)]);
            // The file now exists, naming the page found bad.
            let saved = decode(&files, &files.read(NAME).unwrap().unwrap()).unwrap();
            assert_eq!(
                saved.iter().map(|s| s.page).collect::<Vec<_>>(),
                [PageId(5)]
            );
        }
    }

    #[test]
    fn a_first_run_writes_an_empty_registry_and_checks_nothing() {
        for placement in placements() {
            let (det, _raw) = damaged_store(placement);
            let files = CrashFiles::new();
            let r = restore(&files, &det, false);
            assert!(r.warning.is_none() && r.rechecked_bad.is_empty());
            assert!(det.pages_in(PageState::Suspect).is_empty(), "no page read");
            assert!(decode(&files, &files.read(NAME).unwrap().unwrap())
                .unwrap()
                .is_empty());
            // So that the next build, finding it, says nothing either.
            let r = restore(&files, &det, true);
            assert!(r.warning.is_none() && r.fenced.is_empty());
        }
    }

    #[test]
    fn salvage_reads_the_page_ids_of_a_file_whose_crc_is_bad() {
        let pages: Vec<Saved> = [3u64, 9, 4_000]
            .iter()
            .map(|&p| Saved {
                page: PageId(p),
                state: PageState::Suspect,
                first_seen_ns: 1,
            })
            .collect();
        let mut bytes = encode(&pages);
        bytes[16] ^= 0xff; // the payload CRC
        let files = CrashFiles::new();
        assert!(decode(&files, &bytes).is_err());
        assert_eq!(salvage(&bytes, 100), vec![PageId(3), PageId(9)]);
    }
}
