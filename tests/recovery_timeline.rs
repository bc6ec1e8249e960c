//! Goal: an incident's timeline shows when it was queued, and each remedy
//! attempt runs in its own `tracing` span naming the remedy. Method: a
//! manager heals a damaged page found by a read (real sealed pages, both
//! checksum placements, heal on read off and on) under a minimal recording
//! `tracing` subscriber installed as this process's default; the closed
//! incident's timeline and the spans opened are checked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use selfheal::healer::{Outcome, Step};
use selfheal::testing::both_placements;
use selfheal::PageId;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

mod recovery_common;
use recovery_common::*;

/// Spans opened: (span name, its `name` field, its parent span's name).
type Spans = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

struct Rec {
    next: AtomicU64,
    names: Mutex<std::collections::HashMap<u64, String>>,
    stack: Mutex<std::collections::HashMap<std::thread::ThreadId, Vec<u64>>>,
    spans: Spans,
}

struct NameField(Option<String>);

impl Visit for NameField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "name" {
            self.0 = Some(value.to_string());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "name" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl Subscriber for Rec {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut v = NameField(None);
        span.record(&mut v);
        let parent = self
            .stack
            .lock()
            .get(&std::thread::current().id())
            .and_then(|s| s.last().copied())
            .and_then(|p| self.names.lock().get(&p).cloned());
        self.names
            .lock()
            .insert(id, span.metadata().name().to_string());
        self.spans
            .lock()
            .push((span.metadata().name().to_string(), v.0, parent));
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, span: &Id) {
        self.stack
            .lock()
            .entry(std::thread::current().id())
            .or_default()
            .push(span.into_u64());
    }
    fn exit(&self, _: &Id) {
        if let Some(s) = self.stack.lock().get_mut(&std::thread::current().id()) {
            s.pop();
        }
    }
}

fn spans() -> &'static Spans {
    static SPANS: OnceLock<Spans> = OnceLock::new();
    SPANS.get_or_init(|| {
        let spans = Spans::default();
        tracing::subscriber::set_global_default(Rec {
            next: AtomicU64::new(0),
            names: Mutex::new(Default::default()),
            stack: Mutex::new(Default::default()),
            spans: spans.clone(),
        })
        .expect("the only subscriber");
        spans
    })
}

#[test]
fn the_timeline_has_the_queued_step_and_each_attempt_its_remedy_span() {
    let spans = spans();
    for (_, placement) in both_placements(PS) {
        for on_read in [false, true] {
            spans.lock().clear();
            let dir = tempfile::tempdir().unwrap();
            let (raw, _mirror, m) = rig(placement.clone(), 8, dir.path(), |c| {
                c.heal_on_read(on_read)
            });
            m.start().unwrap();
            damage(&raw, 4);
            let mut b = vec![0u8; PS];
            let _ = m.detector().read_verified(PageId(4), &mut b);
            assert!(m.wait_idle(Duration::from_secs(20)));
            let incs = m.incidents();
            let inc = incs
                .iter()
                .find(|i| matches!(i.outcome, Outcome::Healed { .. }))
                .unwrap_or_else(|| panic!("{incs:#?}"));
            let steps: Vec<Step> = inc.timeline.iter().map(|e| e.step).collect();
            let q = steps.iter().position(|s| *s == Step::Queued);
            let s = steps.iter().position(|s| *s == Step::Started);
            assert!(
                matches!((q, s), (Some(q), Some(s)) if q + 1 == s),
                "queued just before started: {steps:?}"
            );
            assert!(inc.timeline.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
            let seen = spans.lock().clone();
            assert!(
                seen.iter().any(|(span, name, parent)| span == "remedy"
                    && name.as_deref() == Some("repair-from-replicas")
                    && matches!(parent.as_deref(), Some("incident" | "incidents"))),
                "{seen:#?}"
            );
            m.stop().unwrap();
        }
    }
}
