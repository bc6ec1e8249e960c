//! Goal: every failure kind has a built-in diagnosis, a corrupt page is
//! named by its cause, sharper rules win, an unknown symptom is never
//! guessed, host rules match on evidence, target and band, bad rules are
//! typed errors, and a full disk or a stalled journal is told by its
//! evidence. Method: failures built for each `FailureKind`, with evidence
//! texts and metric bands, diagnosed by a `Diagnoser` with the built-in and
//! host rules.

use super::*;
use crate::types::{PageId, ReplicaId, Source, TxnId};

fn every_kind() -> Vec<FailureKind> {
    let m: Arc<str> = Arc::from("repl_lag_s");
    vec![
        FailureKind::CorruptPage { page: PageId(1) },
        FailureKind::IrreparablePage { page: PageId(1) },
        FailureKind::Deadlock { victim: TxnId(3) },
        FailureKind::InFlightAtCrash { count: 2 },
        FailureKind::ReplicaFailing {
            replica: ReplicaId::new("mirror"),
        },
        FailureKind::RollbackBlocked {
            txn: TxnId(4),
            page: PageId(2),
        },
        FailureKind::JournalPoisoned,
        FailureKind::UncleanShutdown,
        FailureKind::SnapshotFailed,
        FailureKind::ScrubCursorFailed,
        FailureKind::ComponentSuspect {
            component: m.clone(),
        },
        FailureKind::ComponentDead {
            component: m.clone(),
        },
        FailureKind::ProcessGone { pid: 9 },
        FailureKind::HealthDegraded { metric: m.clone() },
        FailureKind::HealthCritical { metric: m.clone() },
        FailureKind::PredictedFailure {
            metric: m.clone(),
            eta: std::time::Duration::from_secs(60),
        },
        FailureKind::Anomaly { metric: m.clone() },
        FailureKind::ProbeFailed { metric: m.clone() },
        FailureKind::WorkerDied { component: m },
        FailureKind::RunMarkerFailed,
        FailureKind::JournalStalled { no_space: false },
        FailureKind::ChecksumLogStalled { no_space: true },
    ]
}

fn diagnose(d: &Diagnoser, kind: FailureKind, evidence: &str) -> Diagnosis {
    let f = Failure::new(Source::Host, kind, evidence, 0);
    d.diagnose(&Symptom {
        failure: &f,
        band: None,
    })
}

/// A number per [`FailureKind`] variant, `0 .. KINDS`. The `match` has
/// no wildcard: a new variant does not compile until it is numbered
/// here (the next number, with `KINDS` — the count of these arms —
/// raised by one), and then the test below fails until it is also
/// listed in `every_kind`, and so diagnosed.
fn variant_index(kind: &FailureKind) -> usize {
    match kind {
        FailureKind::CorruptPage { .. } => 0,
        FailureKind::IrreparablePage { .. } => 1,
        FailureKind::Deadlock { .. } => 2,
        FailureKind::InFlightAtCrash { .. } => 3,
        FailureKind::ReplicaFailing { .. } => 4,
        FailureKind::RollbackBlocked { .. } => 5,
        FailureKind::JournalPoisoned => 6,
        FailureKind::UncleanShutdown => 7,
        FailureKind::SnapshotFailed => 8,
        FailureKind::ScrubCursorFailed => 9,
        FailureKind::ComponentSuspect { .. } => 10,
        FailureKind::ComponentDead { .. } => 11,
        FailureKind::ProcessGone { .. } => 12,
        FailureKind::HealthDegraded { .. } => 13,
        FailureKind::HealthCritical { .. } => 14,
        FailureKind::PredictedFailure { .. } => 15,
        FailureKind::Anomaly { .. } => 16,
        FailureKind::ProbeFailed { .. } => 17,
        FailureKind::WorkerDied { .. } => 18,
        FailureKind::RunMarkerFailed => 19,
        FailureKind::JournalStalled { .. } => 20,
        FailureKind::ChecksumLogStalled { .. } => 21,
    }
}

/// The arms of [`variant_index`].
const KINDS: usize = 22;

#[test]
fn every_failure_kind_has_a_builtin_diagnosis() {
    let d = Diagnoser::new(Vec::new()).unwrap();
    let mut listed: Vec<usize> = every_kind().iter().map(variant_index).collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        (0..KINDS).collect::<Vec<_>>(),
        "every_kind lists each FailureKind once"
    );
    for kind in every_kind() {
        let name = kind.name();
        let got = diagnose(&d, kind, "evidence");
        assert!(!got.is_unknown(), "{name} is not diagnosed");
        assert!(got.confidence > 0.0 && got.confidence <= 1.0);
    }
}

/// The detector's own error texts name the cause of a corrupt page.
#[test]
fn a_corrupt_page_is_named_by_the_detector_s_cause() {
    let d = Diagnoser::new(Vec::new()).unwrap();
    let page = PageId(4);
    let cases = [
        (
            Error::StalePage {
                page,
                found: crate::types::Lsn(3),
                expected: crate::types::Lsn(9),
            },
            "builtin.lost_write",
        ),
        (
            Error::ChecksumMismatch {
                page,
                expected: 0xdead_beef,
                actual: 0x0123_abcd,
            },
            "builtin.checksum_mismatch",
        ),
        (Error::ZeroedPage { page }, "builtin.corrupt_page"),
    ];
    for (e, rule) in cases {
        let got = diagnose(&d, FailureKind::CorruptPage { page }, &e.to_string());
        assert_eq!(got.problem, Problem::CORRUPT_PAGE, "{e}");
        assert_eq!(got.rule.as_deref(), Some(rule), "{e}");
    }
}

#[test]
fn sharper_rules_win_and_unknown_is_never_guessed() {
    let d = Diagnoser::new(Vec::new()).unwrap();
    let disk = diagnose(
        &d,
        FailureKind::PredictedFailure {
            metric: Arc::from("disk_used_pct"),
            eta: std::time::Duration::from_secs(600),
        },
        "trend",
    );
    assert_eq!(disk.problem, Problem::DISK_FILLING);
    let mem = diagnose(
        &d,
        FailureKind::HealthCritical {
            metric: Arc::from("process_rss_mb"),
        },
        "x",
    );
    assert_eq!(mem.problem, Problem::MEMORY_PRESSURE);

    let only_host = Diagnoser {
        rules: vec![Rule::new("host.x", Problem::new("x")).kind("deadlock")],
    };
    let unknown = diagnose(
        &only_host,
        FailureKind::CorruptPage { page: PageId(2) },
        "x",
    );
    assert!(unknown.is_unknown());
    assert_eq!(unknown.problem, Problem::UNKNOWN);
    assert_eq!(unknown.confidence, 0.0);
    assert_eq!(unknown.target, Target::Page(PageId(2)));
}

#[test]
fn host_rules_match_on_evidence_target_and_band_and_win_ties() {
    let rule = Rule::new("host.torn-index", Problem::new("index-damaged"))
        .kind("corrupt_page")
        .evidence(r"misplaced|checksum")
        .unwrap()
        .target(r"^page (1[0-9])$")
        .unwrap()
        .confidence(0.95);
    let d = Diagnoser::new(vec![rule]).unwrap();
    let hit = diagnose(
        &d,
        FailureKind::CorruptPage { page: PageId(12) },
        "checksum mismatch",
    );
    assert_eq!(hit.problem, Problem::new("index-damaged"));
    assert_eq!(hit.rule.as_deref(), Some("host.torn-index"));
    let miss = diagnose(
        &d,
        FailureKind::CorruptPage { page: PageId(30) },
        "checksum mismatch",
    );
    assert_eq!(miss.problem, Problem::CORRUPT_PAGE);

    let banded = Diagnoser::new(vec![Rule::new("host.hot", Problem::new("hot"))
        .kind("anomaly")
        .band(Band::Critical)])
    .unwrap();
    let f = Failure::new(
        Source::HealthMonitor,
        FailureKind::Anomaly {
            metric: Arc::from("m"),
        },
        "z",
        0,
    );
    let critical = banded.diagnose(&Symptom {
        failure: &f,
        band: Some(Band::Critical),
    });
    assert_eq!(critical.problem, Problem::new("hot"));
    let healthy = banded.diagnose(&Symptom {
        failure: &f,
        band: Some(Band::Healthy),
    });
    assert_eq!(healthy.problem, Problem::ANOMALY);
}

#[test]
fn bad_rules_are_typed_errors() {
    assert!(matches!(
        Rule::new("r", Problem::ANOMALY).evidence("(unclosed"),
        Err(Error::InvalidConfig {
            field: "rule.evidence",
            ..
        })
    ));
    for c in [0.0, 1.5, f64::NAN] {
        assert!(matches!(
            Diagnoser::new(vec![Rule::new("r", Problem::ANOMALY).confidence(c)]),
            Err(Error::InvalidConfig {
                field: "rule.confidence",
                ..
            })
        ));
    }
}

#[test]
fn no_space_evidence_is_disk_full_whatever_the_kind() {
    let d = Diagnoser::new(Vec::new()).unwrap();
    let got = diagnose(
        &d,
        FailureKind::WorkerDied {
            component: Arc::from("snapshots"),
        },
        "No space left on device (os error 28)",
    );
    assert_eq!(
        got.problem,
        Problem::WORKER_DIED,
        "a sharper kind rule still wins on confidence"
    );
    let got = diagnose(
        &d,
        FailureKind::Anomaly {
            metric: Arc::from("m"),
        },
        "write failed: ENOSPC",
    );
    assert_eq!(got.problem, Problem::DISK_FULL);
}

mod journal_tests {
    use super::super::*;
    use crate::types::Source;

    fn diagnose(kind: FailureKind, evidence: &str) -> Problem {
        let d = Diagnoser::new(Vec::new()).unwrap();
        let f = Failure::new(Source::TransactionRollbackManager, kind, evidence, 0);
        d.diagnose(&Symptom {
            failure: &f,
            band: None,
        })
        .problem
    }

    #[test]
    fn a_stalled_journal_is_full_or_stalled_by_its_evidence() {
        let full = "the undo journal is stalled by the disk is full (no space left): appending: No space left on device (os error 28)";
        assert_eq!(
            diagnose(FailureKind::JournalStalled { no_space: true }, full),
            Problem::JOURNAL_FULL
        );
        let eio = "the undo journal is stalled by a retryable I/O error: syncing: Input/output error (os error 5)";
        assert_eq!(
            diagnose(FailureKind::JournalStalled { no_space: false }, eio),
            Problem::JOURNAL_STALLED
        );
    }
}
