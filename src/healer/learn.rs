//! Its contract is documented on [`Learner`] (this module is private; its
//! items are re-exported by its parent).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Beta, Distribution};

use crate::error::{Error, Result};
use crate::fsutil;

/// Most (problem, remedy) records kept and accepted from a file.
pub const MAX_RECORDS: usize = 4_096;
/// Longest problem or remedy name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

const MAGIC: [u8; 4] = *b"SHLR";
const VERSION: u32 = 1;

/// A (problem, remedy) record's key, looked up by borrowed names, so that
/// ranking and recording a known pair allocate nothing.
trait Pair {
    fn pair(&self) -> (&str, &str);
}

impl Pair for (Arc<str>, Arc<str>) {
    fn pair(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl Pair for (&str, &str) {
    fn pair(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

// Ordered as the owned key is (by the names' bytes), so that a borrowed
// lookup finds what the owned one would.
impl<'a> Borrow<dyn Pair + 'a> for (Arc<str>, Arc<str>) {
    fn borrow(&self) -> &(dyn Pair + 'a) {
        self
    }
}

impl PartialEq for dyn Pair + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.pair() == other.pair()
    }
}

impl Eq for dyn Pair + '_ {}

impl PartialOrd for dyn Pair + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn Pair + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.pair().cmp(&other.pair())
    }
}

/// Successes and failures of one remedy on one problem.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally {
    /// Attempts whose result verified.
    pub successes: f64,
    /// Attempts that failed or did not verify.
    pub failures: f64,
}

impl Tally {
    /// Observations in all.
    #[must_use]
    pub fn total(&self) -> f64 {
        self.successes + self.failures
    }

    /// The posterior mean success rate, `(1 + s) / (2 + s + f)`.
    #[must_use]
    pub fn mean(&self) -> f64 {
        (1.0 + self.successes) / (2.0 + self.total())
    }
}

/// The learned records and the seeded sampler.
///
/// Which remedy works: a success record per (problem, remedy), and a choice
/// of the order in which to try remedies by Thompson sampling over the Beta
/// posterior of each record's success rate.
///
/// With no record for any candidate of a problem, the configured (cold-start)
/// order is used as it is, so a fresh healer is predictable. Once anything is
/// known, each candidate's success rate is drawn from `Beta(1 + successes,
/// 1 + failures)` and the candidates are tried in decreasing order of their
/// draws: a remedy that keeps failing sinks, one that works rises, and an
/// untried one still gets its chance in proportion to the uncertainty about
/// it. The random source is seeded, so a run replays exactly.
///
/// Records forget slowly: when a record holds more than `memory`
/// observations, both counts are halved, so a remedy that used to work and
/// stopped working is not trusted on old merit for long. Every record holds
/// at most `memory` observations: records loaded from a file saved under a
/// larger memory are halved (as often as needed) into it.
///
/// # File (`SHLR`, version 1)
///
/// The crate's framed file (`fsutil`: magic, version,
/// length, payload CRC, header CRC), replaced crash-safely with
/// `atomic_write`. Payload, little-endian:
///
/// | offset | size | field                                          |
/// |-------:|-----:|------------------------------------------------|
/// | 0      | 4    | record count `n` (at most [`MAX_RECORDS`])     |
/// | 4      | …    | `n` records:                                   |
/// |        | 2    | problem name length `p` (1 ..= [`MAX_NAME_LEN`]) |
/// |        | p    | problem name, UTF-8                            |
/// |        | 2    | remedy name length `r` (1 ..= [`MAX_NAME_LEN`]) |
/// |        | r    | remedy name, UTF-8                             |
/// |        | 8    | successes, f64 bits (finite, ≥ 0)              |
/// |        | 8    | failures, f64 bits (finite, ≥ 0)               |
///
/// A file that does not decode is never an error that stops recovery:
/// [`Learner::load`] falls back to an empty record (the cold-start order)
/// and hands back the reason, which the healer logs as a warning. A crash
/// while saving leaves the previous file (or none).
#[derive(Debug)]
pub struct Learner {
    records: BTreeMap<(Arc<str>, Arc<str>), Tally>,
    memory: f64,
    rng: StdRng,
}

impl Learner {
    /// An empty learner whose draws come from `seed`, keeping about
    /// `memory` observations per record (at least 2).
    #[must_use]
    pub fn new(seed: u64, memory: u32) -> Self {
        Learner {
            records: BTreeMap::new(),
            memory: f64::from(memory.max(2)),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The record of `remedy` on `problem`.
    #[must_use]
    pub fn tally(&self, problem: &str, remedy: &str) -> Tally {
        self.records
            .get(&(problem, remedy) as &dyn Pair)
            .copied()
            .unwrap_or_default()
    }

    /// Every record, sorted by problem then remedy.
    #[must_use]
    pub fn records(&self) -> Vec<(Arc<str>, Arc<str>, Tally)> {
        self.records
            .iter()
            .map(|((p, r), t)| (p.clone(), r.clone(), *t))
            .collect()
    }

    /// Records the outcome of trying `remedy` on `problem`. Returns `false`
    /// (and records nothing) when the learner is full of other records or a
    /// name is too long.
    pub fn record(&mut self, problem: &str, remedy: &str, succeeded: bool) -> bool {
        if problem.is_empty()
            || remedy.is_empty()
            || problem.len() > MAX_NAME_LEN
            || remedy.len() > MAX_NAME_LEN
        {
            return false;
        }
        // The names are copied only for a new record.
        let key: &dyn Pair = &(problem, remedy);
        if !self.records.contains_key(key) {
            if self.records.len() >= MAX_RECORDS {
                return false;
            }
            self.records
                .insert((Arc::from(problem), Arc::from(remedy)), Tally::default());
        }
        let t = self
            .records
            .get_mut(key)
            .expect("present or inserted above");
        if succeeded {
            t.successes += 1.0;
        } else {
            t.failures += 1.0;
        }
        forget(t, self.memory);
        debug_assert!(t.total() <= self.memory);
        true
    }

    /// The order in which to try `candidates` (given in cold-start order) on
    /// `problem`, as indices into `candidates`.
    pub fn rank(&mut self, problem: &str, candidates: &[&str]) -> Vec<usize> {
        if candidates
            .iter()
            .all(|c| self.tally(problem, c).total() == 0.0)
        {
            return (0..candidates.len()).collect();
        }
        let mut draws: Vec<(f64, usize)> = Vec::with_capacity(candidates.len());
        for (i, c) in candidates.iter().enumerate() {
            let t = self.tally(problem, c);
            let draw = Beta::new(1.0 + t.successes, 1.0 + t.failures)
                .map_or_else(|_| t.mean(), |beta| beta.sample(&mut self.rng));
            draws.push((draw, i));
        }
        // Highest draw first; equal draws keep the cold-start order.
        draws.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        draws.into_iter().map(|(_, i)| i).collect()
    }

    /// Encodes the records as the file described at [`Learner`].
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(4 + self.records.len() * 48);
        p.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
        for ((problem, remedy), t) in &self.records {
            for name in [problem, remedy] {
                p.extend_from_slice(&(name.len() as u16).to_le_bytes());
                p.extend_from_slice(name.as_bytes());
            }
            p.extend_from_slice(&t.successes.to_bits().to_le_bytes());
            p.extend_from_slice(&t.failures.to_bits().to_le_bytes());
        }
        fsutil::encode_framed(MAGIC, VERSION, &p)
    }

    /// Replaces the records with those decoded from `bytes` (read from
    /// `path`, named in errors).
    ///
    /// # Errors
    /// [`Error::CorruptFile`] naming the offset of the first thing wrong;
    /// [`Error::UnsupportedVersion`] for a newer file. Nothing is replaced then.
    pub fn decode_into(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        let (_, p) = fsutil::decode_framed(path, bytes, MAGIC, VERSION)?;
        let base = fsutil::FRAME_HEADER_LEN as u64;
        let mut r = Reader {
            p,
            at: 0,
            path,
            base,
        };
        let n = r.u32()? as usize;
        if n > MAX_RECORDS {
            return Err(r.bad(format!("{n} records, more than the {MAX_RECORDS} kept")));
        }
        let mut records = BTreeMap::new();
        for _ in 0..n {
            let problem = r.name()?;
            let remedy = r.name()?;
            let successes = r.count()?;
            let failures = r.count()?;
            if records
                .insert(
                    (problem, remedy),
                    Tally {
                        successes,
                        failures,
                    },
                )
                .is_some()
            {
                return Err(r.bad("a (problem, remedy) record appears twice".into()));
            }
        }
        if r.at != p.len() {
            return Err(r.bad(format!("{} bytes after the last record", p.len() - r.at)));
        }
        // A file saved under a larger memory holds more observations than
        // this learner keeps: halved into it, as they would have been.
        for t in records.values_mut() {
            forget(t, self.memory);
        }
        self.records = records;
        Ok(())
    }

    /// Loads the records saved at `path` into a new learner. A missing file
    /// gives an empty learner; a damaged one too, with the reason (never an
    /// error that stops recovery: the cold-start order is used until the
    /// healer learns again).
    #[must_use]
    pub fn load(path: &Path, seed: u64, memory: u32) -> (Learner, Option<Error>) {
        let mut learner = Learner::new(seed, memory);
        let problem = match fsutil::read_optional(path) {
            Ok(None) => None,
            Ok(Some(bytes)) => learner.decode_into(path, &bytes).err(),
            Err(e) => Some(e),
        };
        if let Some(e) = &problem {
            tracing::warn!(error = %e, "learned remedy records not loaded; using the cold-start order");
        }
        (learner, problem)
    }

    /// Saves the records to `path` crash-safely.
    ///
    /// # Errors
    /// [`Error::Io`] naming the step that failed; the previous file is intact.
    pub fn save(&self, path: &Path) -> Result<()> {
        fsutil::atomic_write(path, &self.encode())
    }
}

/// Halves both counts of `t` until it holds at most `memory` observations
/// (its success rate unchanged). Ends for any finite counts: each halving
/// at least halves the total, and `memory` is at least 2.
fn forget(t: &mut Tally, memory: f64) {
    while t.total() > memory {
        t.successes /= 2.0;
        t.failures /= 2.0;
    }
}

/// A bounds-checked reader over the payload.
struct Reader<'a> {
    p: &'a [u8],
    at: usize,
    path: &'a Path,
    base: u64,
}

impl Reader<'_> {
    fn bad(&self, reason: String) -> Error {
        Error::corrupt_file(self.path, self.base + self.at as u64, reason)
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.p.len())
            .ok_or_else(|| self.bad(format!("needs {n} more bytes than the payload holds")))?;
        let s = &self.p[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn name(&mut self) -> Result<Arc<str>> {
        let b = self.take(2)?;
        let len = usize::from(u16::from_le_bytes([b[0], b[1]]));
        if len == 0 || len > MAX_NAME_LEN {
            return Err(self.bad(format!(
                "a name of {len} bytes; names are 1 to {MAX_NAME_LEN} bytes"
            )));
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(Arc::from)
            .map_err(|e| self.bad(format!("a name that is not UTF-8: {e}")))
    }

    fn count(&mut self) -> Result<f64> {
        let b = self.take(8)?;
        let v = f64::from_bits(u64::from_le_bytes(b.try_into().expect("8 bytes")));
        if !v.is_finite() || v < 0.0 {
            return Err(self.bad(format!(
                "a count of {v}; counts are finite and not negative"
            )));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cold_start_keeps_the_configured_order() {
        let mut l = Learner::new(1, 100);
        assert_eq!(l.rank("corrupt-page", &["a", "b", "c"]), [0, 1, 2]);
    }

    /// Over seeded runs, a remedy that keeps failing stops being chosen
    /// first, and one that keeps working is chosen first.
    #[test]
    fn a_remedy_that_keeps_failing_sinks_over_seeded_runs() {
        let mut first_is_good = 0;
        for seed in 0..200 {
            let mut l = Learner::new(seed, 100);
            for _ in 0..8 {
                l.record("p", "flaky", false);
                l.record("p", "works", true);
            }
            if l.rank("p", &["flaky", "works"])[0] == 1 {
                first_is_good += 1;
            }
        }
        assert!(first_is_good >= 195, "{first_is_good} of 200");
    }

    #[test]
    fn an_untried_remedy_still_gets_a_chance() {
        let mut tried_new = 0;
        for seed in 0..400 {
            let mut l = Learner::new(seed, 100);
            l.record("p", "old", false);
            l.record("p", "old", true);
            if l.rank("p", &["old", "new"])[0] == 1 {
                tried_new += 1;
            }
        }
        // Beta(1,1) beats Beta(2,2) half of the time.
        assert!((120..=280).contains(&tried_new), "{tried_new} of 400");
    }

    #[test]
    fn records_forget_slowly_and_are_bounded() {
        let mut l = Learner::new(0, 10);
        for _ in 0..25 {
            assert!(l.record("p", "r", true));
        }
        assert!(l.tally("p", "r").total() <= 10.0);
        assert!(!l.record("p", &"x".repeat(MAX_NAME_LEN + 1), true));
        assert!(!l.record("", "r", true));
    }

    #[test]
    fn file_round_trip_and_a_damaged_file_falls_back_to_cold_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("learned");
        let mut l = Learner::new(3, 100);
        l.record("corrupt-page", "repair-from-replica", true);
        l.record("corrupt-page", "restore-from-snapshot", false);
        l.save(&path).unwrap();
        let (back, problem) = Learner::load(&path, 3, 100);
        assert!(problem.is_none());
        assert_eq!(back.records(), l.records());

        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (mut back, problem) = Learner::load(&path, 3, 100);
        assert!(
            matches!(problem, Some(Error::CorruptFile { .. })),
            "{problem:?}"
        );
        assert!(back.records().is_empty());
        assert_eq!(back.rank("corrupt-page", &["a", "b"]), [0, 1]);

        let (back, problem) = Learner::load(&dir.path().join("missing"), 3, 100);
        assert!(problem.is_none() && back.records().is_empty());
    }

    fn arb_records() -> impl Strategy<Value = Vec<(String, String, u8, u8)>> {
        proptest::collection::vec(("[a-z-]{1,12}", "[a-z-]{1,12}", 0u8..50, 0u8..50), 0..20)
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(recs in arb_records()) {
            let mut l = Learner::new(0, 1000);
            for (p, r, s, f) in &recs {
                for _ in 0..*s { l.record(p, r, true); }
                for _ in 0..*f { l.record(p, r, false); }
            }
            let mut back = Learner::new(0, 1000);
            back.decode_into(Path::new("f"), &l.encode()).unwrap();
            prop_assert_eq!(back.records(), l.records());
        }

        /// A record looked up by borrowed names is the one kept under its
        /// owned names: every pair's tally counts exactly its own outcomes,
        /// and pairs that share a prefix or swap names stay apart.
        #[test]
        fn a_borrowed_lookup_finds_the_owned_record(recs in arb_records()) {
            use std::collections::HashMap;
            // Memory past any total here: nothing is halved.
            let mut l = Learner::new(0, 10_000);
            let mut want: HashMap<(String, String), (f64, f64)> = HashMap::new();
            for (p, r, s, f) in &recs {
                for _ in 0..*s { l.record(p, r, true); }
                for _ in 0..*f { l.record(p, r, false); }
                if s + f == 0 {
                    continue; // nothing recorded
                }
                let w = want.entry((p.clone(), r.clone())).or_default();
                w.0 += f64::from(*s);
                w.1 += f64::from(*f);
            }
            for ((p, r), (s, f)) in &want {
                let t = l.tally(p, r);
                prop_assert_eq!((t.successes, t.failures), (*s, *f), "{} / {}", p, r);
                if !want.contains_key(&(r.clone(), p.clone())) {
                    prop_assert_eq!(l.tally(r, p), Tally::default());
                }
                let longer = format!("{p}x");
                if !want.contains_key(&(longer.clone(), r.clone())) {
                    prop_assert_eq!(l.tally(&longer, r), Tally::default());
                }
            }
            prop_assert_eq!(l.records().len(), want.len());
        }

        #[test]
        fn any_damage_is_a_typed_error_never_a_panic(recs in arb_records(), flip in any::<usize>(), cut in any::<usize>()) {
            let mut l = Learner::new(0, 1000);
            for (p, r, s, _) in &recs {
                l.record(p, r, *s % 2 == 0);
            }
            let good = l.encode();
            let mut bad = good.clone();
            let i = flip % bad.len();
            bad[i] ^= 1 << (flip % 8);
            let mut back = Learner::new(0, 1000);
            prop_assert!(back.decode_into(Path::new("f"), &bad).is_err());
            let mut cut_bytes = good.clone();
            cut_bytes.truncate(cut % good.len());
            prop_assert!(back.decode_into(Path::new("f"), &cut_bytes).is_err());
        }

        #[test]
        fn garbage_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let framed = fsutil::encode_framed(MAGIC, VERSION, &payload);
            let mut back = Learner::new(0, 1000);
            let _ = back.decode_into(Path::new("f"), &framed);
        }

        /// A file saved with any finite counts — from a run with a larger
        /// `learner_memory`, say — loads under any memory without a panic,
        /// keeps every record within the memory (with its success rate),
        /// and stays within it as outcomes are recorded.
        #[test]
        fn loaded_counts_above_the_memory_are_halved_into_it(
            counts in proptest::collection::vec((0.0f64..=f64::MAX, 0.0f64..=f64::MAX), 1..8),
            memory in any::<u32>(),
            outcomes in proptest::collection::vec((0usize..8, any::<bool>()), 0..40),
        ) {
            let mut saved = Learner::new(0, u32::MAX);
            for (i, (s, f)) in counts.iter().enumerate() {
                saved.records.insert(
                    (Arc::from("p"), Arc::from(format!("r{i}").as_str())),
                    Tally { successes: *s, failures: *f },
                );
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("learned");
            saved.save(&path).unwrap();
            let (mut l, problem) = Learner::load(&path, 0, memory);
            prop_assert!(problem.is_none(), "{:?}", problem);
            let limit = f64::from(memory.max(2));
            for (i, (s, f)) in counts.iter().enumerate() {
                let t = l.tally("p", &format!("r{i}"));
                prop_assert!(t.total() <= limit, "{:?} over {}", t, limit);
                if s + f <= limit {
                    prop_assert_eq!(t, Tally { successes: *s, failures: *f });
                }
            }
            for (i, ok) in outcomes {
                let r = format!("r{}", i % counts.len());
                prop_assert!(l.record("p", &r, ok));
                prop_assert!(l.tally("p", &r).total() <= limit);
            }
        }

        #[test]
        fn rank_is_a_permutation(n in 1usize..8, seed in any::<u64>(), outcomes in proptest::collection::vec((0usize..8, any::<bool>()), 0..40)) {
            let names: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut l = Learner::new(seed, 100);
            for (i, ok) in outcomes {
                l.record("p", &names[i % n], ok);
            }
            let mut order = l.rank("p", &refs);
            order.sort_unstable();
            prop_assert_eq!(order, (0..n).collect::<Vec<_>>());
        }
    }
}
