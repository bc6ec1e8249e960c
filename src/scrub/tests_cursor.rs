//! Unit tests of the scrub cursor's failures on the scrubber's bus: a
//! damaged cursor file reported once, and a cursor that cannot be written
//! reported once per episode, under both checksum placements.

use super::tests::{placements, run_until_pass, setup_in};
use super::*;
use crate::types::{Failure, FailureSink};

/// The scrubber's own failures (here: cursor failures) in `sink`, checked
/// to come from the scrubber.
fn cursor_failures(sink: &FailureSink) -> Vec<Failure> {
    let got: Vec<Failure> = sink.failures().try_iter().collect();
    for f in &got {
        assert_eq!(f.source, crate::types::Source::Scrubber, "{f}");
        assert_eq!(f.kind, crate::types::FailureKind::ScrubCursorFailed, "{f}");
    }
    got
}

#[test]
fn a_damaged_cursor_is_reported_once_on_the_scrubbers_bus() {
    for placement in placements() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        let (_raw, det, clock) = setup_in(placement, 20);
        let sink = FailureSink::new(16);
        let build = || {
            ScrubConfig::new()
                .cursor_path(&path)
                .failure_sink(sink.clone())
                .build(det.clone())
                .unwrap()
        };
        // No file: page 0, nothing to report.
        assert_eq!(build().progress().unwrap().position, 0);
        assert!(cursor_failures(&sink).is_empty());
        // A damaged file: page 0, reported at the (detector's) clock's time.
        clock.set_ns(7_000);
        std::fs::write(&path, b"not a cursor").unwrap();
        assert_eq!(build().progress().unwrap().position, 0);
        let got = cursor_failures(&sink);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].detected_at_ns, 7_000);
        assert!(got[0].evidence.contains("page 0"), "{}", got[0].evidence);
        assert!(
            det.failures().try_recv().is_err(),
            "not on the detector's bus"
        );
        // A huge file is refused after reading a cursor's worth of it.
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(1 << 30).unwrap();
        drop(f);
        assert!(matches!(
            cursor::load(&path),
            Err(Error::CorruptFile { .. })
        ));
        assert_eq!(build().progress().unwrap().position, 0);
        assert_eq!(cursor_failures(&sink).len(), 1);
    }
}

#[test]
fn a_cursor_that_cannot_be_written_is_reported_once_per_episode() {
    for placement in placements() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        let path = sub.join("cursor");
        let (_raw, det, clock) = setup_in(placement, 100);
        // By default the scrubber reports on the detector's bus. Its owner
        // lock is taken in the cursor's directory at build.
        std::fs::create_dir(&sub).unwrap();
        let mut s = ScrubConfig::new()
            .pages_per_s(100)
            .persist_every(Duration::from_millis(100))
            .cursor_path(&path)
            .build(det.clone())
            .unwrap();
        std::fs::remove_dir_all(&sub).unwrap();
        // The directory is missing: every write fails, one report.
        clock.set_ns(1_000);
        assert!(s.persist_cursor().is_err());
        run_until_pass(&mut s, &clock);
        assert!(s.persist_cursor().is_err());
        let got = cursor_failures(det.failure_sink());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].detected_at_ns, 1_000);
        assert!(
            got[0].evidence.contains("could not be written"),
            "{}",
            got[0].evidence
        );
        // A write succeeds: the episode ends, and the next failure is new.
        std::fs::create_dir(&sub).unwrap();
        s.step(clock.now_ns()).unwrap();
        s.persist_cursor().unwrap();
        assert!(cursor_failures(det.failure_sink()).is_empty());
        std::fs::remove_dir_all(&sub).unwrap();
        clock.advance(Duration::from_secs(1));
        s.step(clock.now_ns()).unwrap();
        assert!(s.persist_cursor().is_err());
        assert_eq!(cursor_failures(det.failure_sink()).len(), 1);
    }
}
