//! Its contract is documented on [`Diagnoser`] (this module is private; its
//! items are re-exported by its parent).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use regex::Regex;

use crate::error::{Error, Result};
use crate::health::Band;
#[cfg(any(test, doc))]
use crate::types::FailureKind;
use crate::types::{Failure, Target};

/// What is wrong, as a name remedies are registered for. The built-in
/// problems are the associated constants; a host names its own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Problem(Cow<'static, str>);

impl Problem {
    /// A page fails verification.
    pub const CORRUPT_PAGE: Problem = Problem::fixed("corrupt-page");
    /// No replica had a good copy of a page.
    pub const IRREPARABLE_PAGE: Problem = Problem::fixed("irreparable-page");
    /// Transactions wait for each other in a cycle.
    pub const DEADLOCK: Problem = Problem::fixed("deadlock");
    /// Transactions were in flight when the process crashed.
    pub const CRASH_LOSERS: Problem = Problem::fixed("crash-losers");
    /// A replica keeps failing (down, hung, or serving bad copies).
    pub const REPLICA_FAILING: Problem = Problem::fixed("replica-failing");
    /// A rollback waits for a page that fails verification.
    pub const ROLLBACK_BLOCKED: Problem = Problem::fixed("rollback-blocked");
    /// The undo journal refused further work after a failure it cannot
    /// resume from.
    pub const JOURNAL_POISONED: Problem = Problem::fixed("journal-poisoned");
    /// The undo journal stalled after a retryable I/O error (not a lack of
    /// space): a resume rewrites what it holds.
    pub const JOURNAL_STALLED: Problem = Problem::fixed("journal-stalled");
    /// The undo journal stalled because the disk is full: room must be made
    /// before a resume.
    pub const JOURNAL_FULL: Problem = Problem::fixed("journal-full");
    /// The durable checksum table's log stalled after a retryable I/O
    /// error or a full disk: a resume (after making room) writes again what
    /// it holds.
    pub const CHECKSUM_LOG_STALLED: Problem = Problem::fixed("checksum-log-stalled");
    /// The previous run did not shut down cleanly.
    pub const UNCLEAN_SHUTDOWN: Problem = Problem::fixed("unclean-shutdown");
    /// A snapshot failed.
    pub const SNAPSHOT_FAILED: Problem = Problem::fixed("snapshot-failed");
    /// The scrub cursor could not be read or written.
    pub const SCRUB_CURSOR_FAILED: Problem = Problem::fixed("scrub-cursor-failed");
    /// The crash detector's run marker could not be refreshed.
    pub const RUN_MARKER_FAILED: Problem = Problem::fixed("run-marker-failed");
    /// A component's heartbeats are late.
    pub const COMPONENT_SLOW: Problem = Problem::fixed("component-slow");
    /// A component stopped beating.
    pub const COMPONENT_DEAD: Problem = Problem::fixed("component-dead");
    /// A watched process exited.
    pub const PROCESS_GONE: Problem = Problem::fixed("process-gone");
    /// A metric is degraded or critical (not disk, not memory).
    pub const RESOURCE_PRESSURE: Problem = Problem::fixed("resource-pressure");
    /// Memory is degraded or critical.
    pub const MEMORY_PRESSURE: Problem = Problem::fixed("memory-pressure");
    /// Disk space is degraded or critical, or a write failed for lack of it.
    pub const DISK_FULL: Problem = Problem::fixed("disk-full");
    /// A metric's trend will cross its critical threshold soon.
    pub const PREDICTED_EXHAUSTION: Problem = Problem::fixed("predicted-exhaustion");
    /// Disk use is trending to full.
    pub const DISK_FILLING: Problem = Problem::fixed("disk-filling");
    /// Errors are trending up (a metric named like errors).
    pub const RISING_ERRORS: Problem = Problem::fixed("rising-errors");
    /// A metric jumped far outside its recent range.
    pub const ANOMALY: Problem = Problem::fixed("anomaly");
    /// A health probe gives no value.
    pub const PROBE_FAILING: Problem = Problem::fixed("probe-failing");
    /// A component's background thread died.
    pub const WORKER_DIED: Problem = Problem::fixed("worker-died");
    /// No rule matched: escalate, never guess.
    pub const UNKNOWN: Problem = Problem::fixed("unknown");

    const fn fixed(name: &'static str) -> Problem {
        Problem(Cow::Borrowed(name))
    }

    /// A problem named `name` (a host's own).
    #[must_use]
    pub fn new(name: impl Into<String>) -> Problem {
        Problem(Cow::Owned(name.into()))
    }

    /// Its name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a rule looks at: the failure and, when it is about a metric, the
/// metric's current band.
#[derive(Clone, Copy, Debug)]
pub struct Symptom<'a> {
    /// The failure reported.
    pub failure: &'a Failure,
    /// The current band of the metric the failure is about, if known.
    pub band: Option<Band>,
}

/// One diagnosis rule. See [`Diagnoser`].
#[derive(Clone, Debug)]
#[must_use]
pub struct Rule {
    name: Arc<str>,
    problem: Problem,
    confidence: f64,
    kind: Option<Cow<'static, str>>,
    target: Option<Regex>,
    evidence: Option<Regex>,
    band: Option<Band>,
}

fn regex(field: &'static str, pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|e| {
        Error::config(
            field,
            format!("`{pattern}` is not a valid regular expression: {e}"),
        )
    })
}

impl Rule {
    /// A rule named `name` that diagnoses `problem` with confidence 0.9 and
    /// matches every symptom until narrowed.
    pub fn new(name: impl AsRef<str>, problem: Problem) -> Rule {
        Rule {
            name: Arc::from(name.as_ref()),
            problem,
            confidence: 0.9,
            kind: None,
            target: None,
            evidence: None,
            band: None,
        }
    }

    /// Matches only failures of this kind ([`FailureKind::name`]).
    pub fn kind(mut self, name: impl Into<Cow<'static, str>>) -> Rule {
        self.kind = Some(name.into());
        self
    }

    /// Matches only targets whose text (`page 7`, `component wal`) matches
    /// `pattern`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a pattern that does not compile.
    pub fn target(mut self, pattern: &str) -> Result<Rule> {
        self.target = Some(regex("rule.target", pattern)?);
        Ok(self)
    }

    /// Matches only failures whose evidence matches `pattern`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a pattern that does not compile.
    pub fn evidence(mut self, pattern: &str) -> Result<Rule> {
        self.evidence = Some(regex("rule.evidence", pattern)?);
        Ok(self)
    }

    /// Matches only when the metric is in `band`.
    pub fn band(mut self, band: Band) -> Rule {
        self.band = Some(band);
        self
    }

    /// The confidence of the diagnosis (default 0.9; in `(0, 1]`).
    pub fn confidence(mut self, confidence: f64) -> Rule {
        self.confidence = confidence;
        self
    }

    /// The rule's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn validate(&self) -> Result<()> {
        let c = self.confidence;
        if !(c > 0.0 && c <= 1.0) {
            return Err(Error::config(
                "rule.confidence",
                format!(
                    "rule `{}` has confidence {c}; it must be in (0, 1]",
                    self.name
                ),
            ));
        }
        if self.name.is_empty() {
            return Err(Error::config("rule.name", "is empty; name every rule"));
        }
        Ok(())
    }

    fn matches(&self, s: &Symptom<'_>) -> bool {
        self.kind
            .as_deref()
            .is_none_or(|k| k == s.failure.kind.name())
            && self
                .target
                .as_ref()
                .is_none_or(|r| r.is_match(&s.failure.target().to_string()))
            && self
                .evidence
                .as_ref()
                .is_none_or(|r| r.is_match(&s.failure.evidence))
            && self.band.is_none_or(|b| s.band == Some(b))
    }
}

/// The outcome of diagnosis.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnosis {
    /// What is wrong ([`Problem::UNKNOWN`] when no rule matched).
    pub problem: Problem,
    /// How sure the rule is, in `0 ..= 1` (0 for unknown).
    pub confidence: f64,
    /// The rule that decided, if any.
    pub rule: Option<Arc<str>>,
    /// What it is about.
    pub target: Target,
}

impl Diagnosis {
    /// Whether nothing matched: the healer escalates.
    #[must_use]
    pub fn is_unknown(&self) -> bool {
        self.rule.is_none()
    }
}

/// The rule set: host rules first, then the built-ins.
///
/// Diagnosis: rules that turn a symptom (a [`Failure`], and the band of the
/// metric it is about) into a [`Problem`] with a confidence.
///
/// A [`Rule`] matches on any of: the failure's kind (by
/// [`FailureKind::name`]), its target (a regular expression over the
/// target's text, e.g. `page 7` or `component disk_used_pct`), its evidence
/// (a regular expression), and the current band of the metric. Every rule
/// that matches proposes its problem with its confidence; the highest
/// confidence wins, and on a tie the rule added first (host rules come
/// before the built-ins) wins.
///
/// # Contract
/// - Every [`FailureKind`] has a built-in rule, so a failure the library
///   itself reports is always diagnosed.
/// - A symptom no rule matches is diagnosed [`Problem::UNKNOWN`] with
///   confidence 0, and the healer escalates it: it never guesses.
/// - Confidences are in `0 < c ≤ 1`; a rule with another value is refused
///   when it is built.
#[derive(Clone, Debug)]
pub struct Diagnoser {
    rules: Vec<Rule>,
}

impl Diagnoser {
    /// The host's `rules` (tried first) followed by the built-in ones.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a rule with a bad confidence or no name.
    pub fn new(rules: Vec<Rule>) -> Result<Self> {
        Self::with_builtins(rules, true)
    }

    /// The host's `rules`, followed by the built-in ones only when
    /// `builtins`: a host that leaves them out has every symptom its rules
    /// do not match diagnosed unknown (and escalated).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_builtins(rules: Vec<Rule>, builtins: bool) -> Result<Self> {
        for r in &rules {
            r.validate()?;
        }
        let mut all = rules;
        if builtins {
            all.extend(builtin_rules());
        }
        Ok(Diagnoser { rules: all })
    }

    /// Diagnoses one symptom.
    #[must_use]
    pub fn diagnose(&self, symptom: &Symptom<'_>) -> Diagnosis {
        let mut best: Option<&Rule> = None;
        for r in &self.rules {
            // A rule no surer than the best match so far cannot replace it:
            // its patterns are not run.
            if best.is_none_or(|b| r.confidence > b.confidence) && r.matches(symptom) {
                best = Some(r);
            }
        }
        let target = symptom.failure.target();
        match best {
            Some(r) => Diagnosis {
                problem: r.problem.clone(),
                confidence: r.confidence,
                rule: Some(r.name.clone()),
                target,
            },
            None => Diagnosis {
                problem: Problem::UNKNOWN,
                confidence: 0.0,
                rule: None,
                target,
            },
        }
    }
}

/// The built-in rules: one per failure kind, and sharper ones for disk and
/// memory metrics and out-of-space evidence.
fn builtin_rules() -> Vec<Rule> {
    fn r(name: &'static str, kind: &'static str, problem: Problem, confidence: f64) -> Rule {
        Rule::new(name, problem).kind(kind).confidence(confidence)
    }
    // Patterns are constants; a typo is a bug caught by the tests.
    let sharp = |rule: Rule, target: &str| rule.target(target).expect("built-in pattern");
    let disk = r"(?i)disk|space|volume|fs_";
    let mem = r"(?i)mem|rss|heap";
    let errors = r"(?i)err|fail|eio";
    vec![
        r(
            "builtin.corrupt_page",
            "corrupt_page",
            Problem::CORRUPT_PAGE,
            0.95,
        ),
        // The same problem (the same remedies), named by its cause as the
        // detector's evidence gives it: a lost write (the page verifies but
        // carries an older LSN than was written: `Error::StalePage`) or
        // contents that do not match their checksum (a torn write, or rot:
        // `Error::ChecksumMismatch`).
        r(
            "builtin.lost_write",
            "corrupt_page",
            Problem::CORRUPT_PAGE,
            0.97,
        )
        .evidence(r"is stale: it holds LSN \d+ but LSN \d+ was written")
        .expect("built-in pattern"),
        r(
            "builtin.checksum_mismatch",
            "corrupt_page",
            Problem::CORRUPT_PAGE,
            0.96,
        )
        .evidence(r"is corrupt: checksum 0x[0-9a-f]+ does not match")
        .expect("built-in pattern"),
        r(
            "builtin.irreparable_page",
            "irreparable_page",
            Problem::IRREPARABLE_PAGE,
            0.95,
        ),
        r("builtin.deadlock", "deadlock", Problem::DEADLOCK, 0.95),
        r(
            "builtin.in_flight_at_crash",
            "in_flight_at_crash",
            Problem::CRASH_LOSERS,
            0.95,
        ),
        r(
            "builtin.replica_failing",
            "replica_failing",
            Problem::REPLICA_FAILING,
            0.9,
        ),
        r(
            "builtin.rollback_blocked",
            "rollback_blocked",
            Problem::ROLLBACK_BLOCKED,
            0.95,
        ),
        r(
            "builtin.journal_poisoned",
            "journal_poisoned",
            Problem::JOURNAL_POISONED,
            0.95,
        ),
        r(
            "builtin.journal_stalled",
            "journal_stalled",
            Problem::JOURNAL_STALLED,
            0.95,
        ),
        // Sharper than both `journal_stalled` and `no_space`: the journal's
        // own remedy makes room and resumes it.
        Rule::new("builtin.journal_full", Problem::JOURNAL_FULL)
            .kind("journal_stalled")
            .evidence(r"(?i)ENOSPC|no space left|os error 28|os error 122|disk is full")
            .expect("built-in pattern")
            .confidence(0.97),
        r(
            "builtin.unclean_shutdown",
            "unclean_shutdown",
            Problem::UNCLEAN_SHUTDOWN,
            0.9,
        ),
        r(
            "builtin.snapshot_failed",
            "snapshot_failed",
            Problem::SNAPSHOT_FAILED,
            0.8,
        ),
        r(
            "builtin.scrub_cursor_failed",
            "scrub_cursor_failed",
            Problem::SCRUB_CURSOR_FAILED,
            0.8,
        ),
        r(
            "builtin.run_marker_failed",
            "run_marker_failed",
            Problem::RUN_MARKER_FAILED,
            0.8,
        ),
        r(
            "builtin.component_suspect",
            "component_suspect",
            Problem::COMPONENT_SLOW,
            0.6,
        ),
        r(
            "builtin.component_dead",
            "component_dead",
            Problem::COMPONENT_DEAD,
            0.9,
        ),
        r(
            "builtin.process_gone",
            "process_gone",
            Problem::PROCESS_GONE,
            0.9,
        ),
        r(
            "builtin.health_degraded",
            "health_degraded",
            Problem::RESOURCE_PRESSURE,
            0.6,
        ),
        r(
            "builtin.health_critical",
            "health_critical",
            Problem::RESOURCE_PRESSURE,
            0.7,
        ),
        sharp(
            r(
                "builtin.disk_degraded",
                "health_degraded",
                Problem::DISK_FULL,
                0.75,
            ),
            disk,
        ),
        sharp(
            r(
                "builtin.disk_critical",
                "health_critical",
                Problem::DISK_FULL,
                0.85,
            ),
            disk,
        ),
        sharp(
            r(
                "builtin.memory_degraded",
                "health_degraded",
                Problem::MEMORY_PRESSURE,
                0.75,
            ),
            mem,
        ),
        sharp(
            r(
                "builtin.memory_critical",
                "health_critical",
                Problem::MEMORY_PRESSURE,
                0.85,
            ),
            mem,
        ),
        r(
            "builtin.predicted_failure",
            "predicted_failure",
            Problem::PREDICTED_EXHAUSTION,
            0.6,
        ),
        sharp(
            r(
                "builtin.disk_filling",
                "predicted_failure",
                Problem::DISK_FILLING,
                0.8,
            ),
            disk,
        ),
        sharp(
            r(
                "builtin.rising_errors",
                "predicted_failure",
                Problem::RISING_ERRORS,
                0.8,
            ),
            errors,
        ),
        r("builtin.anomaly", "anomaly", Problem::ANOMALY, 0.5),
        r(
            "builtin.probe_failed",
            "probe_failed",
            Problem::PROBE_FAILING,
            0.8,
        ),
        // Sharper than `no_space`: the table's own remedy makes room and
        // resumes it.
        r(
            "builtin.checksum_log_stalled",
            "checksum_log_stalled",
            Problem::CHECKSUM_LOG_STALLED,
            0.97,
        ),
        r(
            "builtin.worker_died",
            "worker_died",
            Problem::WORKER_DIED,
            0.95,
        ),
        Rule::new("builtin.no_space", Problem::DISK_FULL)
            .evidence(r"(?i)ENOSPC|no space left|os error 28")
            .expect("built-in pattern")
            .confidence(0.9),
    ]
}

#[cfg(test)]
mod tests;
